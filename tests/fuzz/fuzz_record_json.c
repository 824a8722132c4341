/* libFuzzer harness: dead-letter records, JSON -> sl_record -> JSON.
 *
 * The bytes go to sl_record_from_json (as a stored dead letter is read back
 * by `sluice retry`), names interned into a per-input arena. When the record
 * is rebuilt, sl_record_to_json must write JSON that parses and that equals
 * the object read (every jansson value round-trips: strings are valid UTF-8,
 * numbers are written to read back exactly, nested values verbatim). A
 * refusal must come with a message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sluice/record.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_record_json: invariant failed: %s (%s:%d)\n", #cond, __FILE__,   \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The intern arena: every name handed out lives until the input is done. */
typedef struct names {
    char **v;
    size_t n, cap;
} names;

static const char *intern(void *ud, const char *name)
{
    names *a = ud;
    if (a->n == a->cap) {
        size_t ncap = a->cap ? a->cap * 2 : 16;
        char **nv = realloc(a->v, ncap * sizeof(*nv));
        if (!nv) {
            return NULL;
        }
        a->v = nv;
        a->cap = ncap;
    }
    char *copy = strdup(name);
    if (!copy) {
        return NULL;
    }
    a->v[a->n++] = copy;
    return copy;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* stored records are C strings */
    char *text = malloc(size + 1);
    CHECK(text != NULL);
    if (size) {
        memcpy(text, data, size);
    }
    text[size] = '\0';

    names arena = {0};
    sl_record rec;
    sl_record_init(&rec);
    sl_buf out;
    sl_buf_init(&out, 0);
    sl_error err;
    sl_error_clear(&err);

    int rc = sl_record_from_json(&rec, text, intern, &arena, &err);
    if (rc != 0) {
        CHECK(rc < 0 && err.msg[0] != '\0');
        goto done;
    }
    CHECK(sl_record_to_json(&rec, &out) == 0);
    json_error_t jerr;
    json_t *got = json_loadb(out.data, out.len, 0, &jerr);
    if (!got) {
        fprintf(stderr, "fuzz_record_json: output does not parse (%s):\n%s\n", jerr.text,
                sl_buf_cstr(&out));
        abort();
    }
    /* what from_json read: the text up to its first NUL */
    json_t *in = json_loads(text, 0, NULL);
    CHECK(json_is_object(in));
    if (!json_equal(in, got)) {
        fprintf(stderr, "fuzz_record_json: round trip changed the record:\n in: %s\nout: %s\n",
                text, sl_buf_cstr(&out));
        abort();
    }
    json_decref(in);
    json_decref(got);

done:
    sl_record_free(&rec);
    sl_buf_free(&out);
    for (size_t i = 0; i < arena.n; i++) {
        free(arena.v[i]);
    }
    free(arena.v);
    free(text);
    return 0;
}
