/* libFuzzer harness: the streaming JSON writer (sl_jw).
 *
 * The bytes are a small program: each op byte picks a call (open/close an
 * object or array, a key, a string, a number, true/false/null, a double) and
 * strings are length-prefixed slices of the input, so every byte value
 * (quotes, controls, NUL, broken UTF-8) reaches the escaper. The harness
 * keeps the calls balanced, as the writer's contract requires, builds the
 * expected value with jansson alongside, and then checks the output: it must
 * parse, and equal the expected value. Strings that are not valid UTF-8 are
 * expected with every byte that does not start a valid sequence replaced by
 * U+FFFD (json.h); validity is judged by jansson, not by the writer's code. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sluice/json.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_json_writer: invariant failed: %s (%s:%d)\n", #cond, __FILE__,   \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Deeper than SL_JW_MAX_DEPTH, so the depth limit is reached too. */
#define MAX_NEST 80
/* Output cap: small enough that SL_ERR_LIMIT is reached by some inputs. */
#define OUT_MAX ((size_t)16 * 1024)

typedef struct input {
    const uint8_t *p;
    size_t n;
} input;

static int take(input *in, void *dst, size_t len)
{
    if (in->n < len) {
        return -1;
    }
    memcpy(dst, in->p, len);
    in->p += len;
    in->n -= len;
    return 0;
}

/* A string: one length byte, then that many bytes (fewer at the end). */
static void take_str(input *in, const char **s, size_t *len)
{
    uint8_t l = 0;
    if (take(in, &l, 1) != 0) {
        l = 0;
    }
    *len = l < in->n ? l : in->n;
    *s = (const char *)in->p;
    in->p += *len;
    in->n -= *len;
}

/* Length of the sequence the lead byte s[0] announces (1..4), 0 if it can
 * start none. */
static size_t lead_len(unsigned char c)
{
    if (c < 0x80) {
        return 1;
    }
    if (c >= 0xC0 && c <= 0xDF) {
        return 2;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF7) {
        return 4;
    }
    return 0;
}

/* The string the writer promises for s: valid sequences kept, each other
 * byte replaced by U+FFFD. jansson decides what a valid sequence is. */
static json_t *expected_str(const char *s, size_t len)
{
    char *tmp = malloc(len * 3 + 1);
    CHECK(tmp != NULL);
    size_t o = 0, i = 0;
    while (i < len) {
        size_t l = lead_len((unsigned char)s[i]);
        json_t *one = NULL;
        if (l == 1) {
            tmp[o++] = s[i++];
            continue;
        }
        if (l > 1 && l <= len - i) {
            one = json_stringn(s + i, l);
        }
        if (one) {
            memcpy(tmp + o, s + i, l);
            o += l;
            i += l;
            json_decref(one);
        } else {
            memcpy(tmp + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    json_t *v = json_stringn(tmp, o);
    free(tmp);
    CHECK(v != NULL);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in = {data, size};
    sl_buf out;
    sl_buf_init(&out, OUT_MAX);
    sl_jw w;
    sl_jw_init(&w, &out);

    /* stack of open containers, the expected value of each, and for an
     * object the key waiting for its value (NULL = a key comes next) */
    json_t *stack[MAX_NEST + 1];
    char *pending[MAX_NEST + 1];
    int depth = 0;
    /* top level: one array holding everything (sl_jw writes one value) */
    sl_jw_arr_open(&w);
    stack[0] = json_array();
    pending[0] = NULL;
    CHECK(stack[0] != NULL);

    while (in.n > 0) {
        uint8_t op = 0;
        take(&in, &op, 1);
        json_t *top = stack[depth];
        int in_obj = json_is_object(top);
        /* in an object a key must come before each value */
        if (in_obj && !pending[depth] && (op % 10) != 1) {
            const char *k;
            size_t kl;
            take_str(&in, &k, &kl);
            /* jansson refuses object keys with NUL, so none are written */
            const char *nul = memchr(k, '\0', kl);
            if (nul) {
                kl = (size_t)(nul - k);
            }
            sl_jw_key(&w, k, kl);
            json_t *ek = expected_str(k, kl);
            pending[depth] = strdup(json_string_value(ek));
            json_decref(ek);
            CHECK(pending[depth] != NULL);
        }
        json_t *v = NULL;
        switch (op % 10) {
        case 0: /* open an object or an array */
        case 9:
            if (depth < MAX_NEST) {
                json_t *c = (op % 10) == 0 ? json_object() : json_array();
                CHECK(c != NULL);
                if ((op % 10) == 0) {
                    sl_jw_obj_open(&w);
                } else {
                    sl_jw_arr_open(&w);
                }
                /* attach now; filled in place */
                if (in_obj) {
                    CHECK(json_object_set(top, pending[depth], c) == 0);
                    free(pending[depth]);
                    pending[depth] = NULL;
                } else {
                    CHECK(json_array_append(top, c) == 0);
                }
                stack[++depth] = c;
                pending[depth] = NULL;
                json_decref(c);
            }
            continue;
        case 1: /* close the innermost container */
            if (depth > 0 && !pending[depth]) {
                if (in_obj) {
                    sl_jw_obj_close(&w);
                } else {
                    sl_jw_arr_close(&w);
                }
                depth--;
            }
            continue;
        case 2:
        case 3: {
            const char *s;
            size_t l;
            take_str(&in, &s, &l);
            sl_jw_str(&w, s, l);
            v = expected_str(s, l);
            break;
        }
        case 4: {
            int64_t i = 0;
            take(&in, &i, sizeof(i));
            sl_jw_int(&w, i);
            v = json_integer((json_int_t)i);
            break;
        }
        case 5: {
            double d = 0;
            take(&in, &d, sizeof(d));
            sl_jw_double(&w, d);
            v = isfinite(d) ? json_real(d) : json_null();
            break;
        }
        case 6:
            sl_jw_bool(&w, 1);
            v = json_true();
            break;
        case 7:
            sl_jw_bool(&w, 0);
            v = json_false();
            break;
        default:
            sl_jw_null(&w);
            v = json_null();
            break;
        }
        CHECK(v != NULL);
        if (in_obj) {
            CHECK(json_object_set_new(top, pending[depth], v) == 0);
            free(pending[depth]);
            pending[depth] = NULL;
        } else {
            CHECK(json_array_append_new(top, v) == 0);
        }
    }
    /* close what is still open; a dangling key gets null */
    while (depth >= 0) {
        if (pending[depth]) {
            sl_jw_null(&w);
            CHECK(json_object_set_new(stack[depth], pending[depth], json_null()) == 0);
            free(pending[depth]);
            pending[depth] = NULL;
        }
        if (json_is_object(stack[depth])) {
            sl_jw_obj_close(&w);
        } else {
            sl_jw_arr_close(&w);
        }
        depth--;
    }

    if (w.err == 0) {
        json_error_t jerr;
        json_t *got = json_loadb(out.data, out.len, JSON_ALLOW_NUL, &jerr);
        if (!got) {
            fprintf(stderr, "fuzz_json_writer: output does not parse: %s at %d\n%.*s\n", jerr.text,
                    jerr.position, (int)out.len, out.data);
            abort();
        }
        if (!json_equal(got, stack[0])) {
            char *want = json_dumps(stack[0], JSON_ENCODE_ANY | JSON_COMPACT);
            fprintf(stderr, "fuzz_json_writer: output differs\n got: %.*s\nwant: %s\n",
                    (int)out.len, out.data, want ? want : "?");
            free(want);
            abort();
        }
        json_decref(got);
    } else {
        /* only the limits may fail it: depth or the output cap */
        CHECK(w.err == SL_ERR_LIMIT);
    }
    json_decref(stack[0]);
    sl_buf_free(&out);
    return 0;
}
