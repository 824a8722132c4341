/* The streaming JSON writer (src/util/json_writer.c): everything it writes is
 * parsed back with jansson and compared with what was meant. Random inputs
 * come from a fixed-seed generator, so failures reproduce. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "sluice/json.h"

/* ------------------------------------------------------------ helpers */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
    /* xorshift64*: deterministic across platforms, unlike rand() */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static unsigned rnd_below(unsigned n)
{
    return (unsigned)(rnd() % n);
}

/* Append the UTF-8 encoding of cp. */
static size_t put_utf8(unsigned char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A random byte string mixing ASCII, control characters, quotes, valid
 * multi-byte UTF-8 and invalid bytes (stray continuations, overlongs,
 * surrogates, truncated sequences, 0xF8-0xFF). */
static size_t random_bytes(unsigned char *o, size_t max_chars, int allow_nul)
{
    size_t n = 0;
    size_t chars = rnd_below((unsigned)max_chars + 1);
    for (size_t i = 0; i < chars; i++) {
        switch (rnd_below(10)) {
        case 0:
            o[n++] = (unsigned char)rnd_below(0x20);
            break; /* control */
        case 1:
            o[n++] = "\"\\/'"[rnd_below(4)];
            break; /* specials */
        case 2:
            n += put_utf8(o + n, 0x80 + rnd_below(0x800 - 0x80));
            break;
        case 3: {
            uint32_t cp = 0x800 + rnd_below(0x10000 - 0x800);
            if (cp >= 0xD800 && cp <= 0xDFFF) {
                cp -= 0x800;
            }
            n += put_utf8(o + n, cp);
            break;
        }
        case 4:
            n += put_utf8(o + n, 0x10000 + rnd_below(0x110000 - 0x10000));
            break;
        case 5:
            o[n++] = (unsigned char)(0x80 + rnd_below(0x80));
            break; /* any high byte */
        case 6: {
            /* classic invalid forms */
            static const char *const bad[] = {
                "\xC0\xAF",     "\xE0\x80\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80",     "\xE2\x82",
                "\xF0\x9F\x98", "\xFF",         "\xFE",         "\xF8\x88\x80\x80\x80", "\xC3"};
            const char *b = bad[rnd_below(10)];
            memcpy(o + n, b, strlen(b));
            n += strlen(b);
            break;
        }
        case 7:
            o[n++] = 0x7F;
            break;
        default:
            o[n++] = (unsigned char)(0x20 + rnd_below(0x5F));
            break;
        }
    }
    if (!allow_nul) {
        for (size_t i = 0; i < n; i++) {
            if (o[i] == 0) {
                o[i] = 'z';
            }
        }
    }
    return n;
}

/* Reference for the writer's repair rule, written from Unicode table 3-7
 * (well-formed byte sequences) rather than from the writer's code: a
 * well-formed sequence is kept; otherwise its first byte becomes U+FFFD and
 * scanning resumes at the next byte. */
static size_t ref_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
#define IN(i, lo, hi) ((i) < n && s[i] >= (lo) && s[i] <= (hi))
    if (c <= 0x7F) {
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        return IN(1, 0x80, 0xBF) ? 2 : 0;
    }
    if (c == 0xE0) {
        return IN(1, 0xA0, 0xBF) && IN(2, 0x80, 0xBF) ? 3 : 0;
    }
    if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
        return IN(1, 0x80, 0xBF) && IN(2, 0x80, 0xBF) ? 3 : 0;
    }
    if (c == 0xED) {
        return IN(1, 0x80, 0x9F) && IN(2, 0x80, 0xBF) ? 3 : 0;
    }
    if (c == 0xF0) {
        return IN(1, 0x90, 0xBF) && IN(2, 0x80, 0xBF) && IN(3, 0x80, 0xBF) ? 4 : 0;
    }
    if (c >= 0xF1 && c <= 0xF3) {
        return IN(1, 0x80, 0xBF) && IN(2, 0x80, 0xBF) && IN(3, 0x80, 0xBF) ? 4 : 0;
    }
    if (c == 0xF4) {
        return IN(1, 0x80, 0x8F) && IN(2, 0x80, 0xBF) && IN(3, 0x80, 0xBF) ? 4 : 0;
    }
#undef IN
    return 0;
}

static size_t ref_repair(const unsigned char *s, size_t n, unsigned char *o)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t l = ref_seq_len(s + i, n - i);
        if (l == 0) {
            memcpy(o + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        } else {
            memcpy(o + k, s + i, l);
            k += l;
            i += l;
        }
    }
    return k;
}

static json_t *parse(const sl_buf *b)
{
    json_error_t e;
    json_t *root = json_loadb(b->data, b->len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &e);
    if (!root) {
        fail_msg("writer output is not JSON (%s at %d): %.*s", e.text, e.position, (int)b->len,
                 b->data);
    }
    return root;
}

/* ------------------------------------------------------------ strings */

static void test_random_strings_roundtrip(void **state)
{
    (void)state;
    unsigned char in[64 * 10], want[64 * 10 * 3];
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = random_bytes(in, 64, 1);
        size_t wn = ref_repair(in, n, want);
        sl_buf b;
        sl_buf_init(&b, 0);
        sl_jw w;
        sl_jw_init(&w, &b);
        sl_jw_arr_open(&w);
        sl_jw_str(&w, (const char *)in, n);
        sl_jw_arr_close(&w);
        assert_int_equal(w.err, 0);
        /* raw control characters are never emitted */
        for (size_t i = 0; i < b.len; i++) {
            assert_true((unsigned char)b.data[i] >= 0x20);
        }
        json_t *root = parse(&b);
        json_t *s = json_array_get(root, 0);
        assert_true(json_is_string(s));
        if (json_string_length(s) != wn || memcmp(json_string_value(s), want, wn) != 0) {
            fail_msg("iteration %d: string did not round-trip; writer wrote %s", iter, b.data);
        }
        json_decref(root);
        sl_buf_free(&b);
    }
}

static void test_every_control_char(void **state)
{
    (void)state;
    for (int c = 0; c < 0x20; c++) {
        char in[3] = {'a', (char)c, 'b'};
        sl_buf b;
        sl_buf_init(&b, 0);
        sl_jw w;
        sl_jw_init(&w, &b);
        sl_jw_str(&w, in, 3);
        assert_int_equal(w.err, 0);
        json_t *s = parse(&b);
        assert_int_equal(json_string_length(s), 3);
        assert_memory_equal(json_string_value(s), in, 3);
        json_decref(s);
        sl_buf_free(&b);
    }
}

static void test_escape_exact(void **state)
{
    (void)state;
    sl_buf b;
    sl_buf_init(&b, 0);
    const char in[] = "\"\\/\b\f\n\r\t\x01\x1f\x7f"
                      "caf\xC3\xA9";
    assert_int_equal(sl_json_escape(&b, in, sizeof(in) - 1), 0);
    assert_string_equal(b.data, "\\\"\\\\/\\b\\f\\n\\r\\t\\u0001\\u001f\x7f"
                                "caf\xC3\xA9");
    sl_buf_reset(&b);
    /* invalid bytes: one U+FFFD per bad byte, valid neighbours kept */
    assert_int_equal(sl_json_escape(&b,
                                    "a\xFF"
                                    "b\xC3",
                                    4),
                     0);
    assert_string_equal(b.data, "a\xEF\xBF\xBD"
                                "b\xEF\xBF\xBD");
    sl_buf_reset(&b);
    /* overlong '/' and a UTF-16 surrogate are not passed through */
    assert_int_equal(sl_json_escape(&b, "\xC0\xAF\xED\xA0\x80", 5), 0);
    assert_null(strstr(b.data, "\xC0"));
    assert_null(strstr(b.data, "\xED\xA0"));
    sl_buf_free(&b);
}

/* ------------------------------------------------------------ structure */

static void test_exact_layout(void **state)
{
    (void)state;
    sl_buf b;
    sl_buf_init(&b, 0);
    sl_jw w;
    sl_jw_init(&w, &b);
    sl_jw_obj_open(&w);
    sl_jw_keyz(&w, "a");
    sl_jw_int(&w, 1);
    sl_jw_keyz(&w, "b");
    sl_jw_arr_open(&w);
    sl_jw_bool(&w, 1);
    sl_jw_bool(&w, 0);
    sl_jw_null(&w);
    sl_jw_raw(&w, "[1,{\"x\":2}]", 11);
    sl_jw_arr_close(&w);
    sl_jw_keyz(&w, "c");
    sl_jw_obj_open(&w);
    sl_jw_obj_close(&w);
    sl_jw_keyz(&w, "d");
    sl_jw_arr_open(&w);
    sl_jw_arr_close(&w);
    sl_jw_keyz(&w, "e\"");
    sl_jw_double(&w, 0.5);
    sl_jw_obj_close(&w);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.depth, 0);
    assert_string_equal(b.data, "{\"a\":1,\"b\":[true,false,null,[1,{\"x\":2}]],\"c\":{},\"d\":[],"
                                "\"e\\\"\":0.5}");
    sl_buf_free(&b);
}

/* Build the same random tree with jansson and with the writer. */
static json_t *gen_tree(sl_jw *w, int depth)
{
    unsigned kind = depth >= 6 ? 2 + rnd_below(5) : rnd_below(7);
    unsigned char s[64 * 10], fixed[64 * 10 * 3];
    switch (kind) {
    case 0: {
        json_t *o = json_object();
        sl_jw_obj_open(w);
        unsigned n = rnd_below(5);
        for (unsigned i = 0; i < n; i++) {
            /* unique prefix: repaired keys can never collide */
            int p = snprintf((char *)s, sizeof(s), "%u:", i);
            size_t len = (size_t)p + random_bytes(s + p, 8, 0);
            size_t fl = ref_repair(s, len, fixed);
            fixed[fl] = '\0';
            sl_jw_key(w, (const char *)s, len);
            json_object_set_new(o, (const char *)fixed, gen_tree(w, depth + 1));
        }
        sl_jw_obj_close(w);
        return o;
    }
    case 1: {
        json_t *a = json_array();
        sl_jw_arr_open(w);
        unsigned n = rnd_below(5);
        for (unsigned i = 0; i < n; i++) {
            json_array_append_new(a, gen_tree(w, depth + 1));
        }
        sl_jw_arr_close(w);
        return a;
    }
    case 2: {
        size_t len = random_bytes(s, 16, 1);
        size_t fl = ref_repair(s, len, fixed);
        sl_jw_str(w, (const char *)s, len);
        return json_stringn((const char *)fixed, fl);
    }
    case 3: {
        int64_t v = (int64_t)rnd();
        sl_jw_int(w, v);
        return json_integer(v);
    }
    case 4: {
        double d = (double)(int64_t)rnd() / (double)(1 + rnd_below(1000));
        sl_jw_double(w, d);
        return json_real(d);
    }
    case 5: {
        int v = (int)rnd_below(2);
        sl_jw_bool(w, v);
        return json_boolean(v);
    }
    default:
        sl_jw_null(w);
        return json_null();
    }
}

static void test_random_trees(void **state)
{
    (void)state;
    for (int iter = 0; iter < 500; iter++) {
        sl_buf b;
        sl_buf_init(&b, 0);
        sl_jw w;
        sl_jw_init(&w, &b);
        json_t *want = gen_tree(&w, 0);
        assert_int_equal(w.err, 0);
        assert_int_equal(w.depth, 0);
        json_t *got = parse(&b);
        if (!json_equal(want, got)) {
            char *ws = json_dumps(want, JSON_ENCODE_ANY);
            fail_msg("iteration %d: tree differs\nwrote: %s\nwant:  %s", iter, b.data, ws);
        }
        json_decref(want);
        json_decref(got);
        sl_buf_free(&b);
    }
}

static void test_max_depth(void **state)
{
    (void)state;
    sl_buf b;
    sl_buf_init(&b, 0);
    sl_jw w;
    sl_jw_init(&w, &b);
    const int ok_depth = SL_JW_MAX_DEPTH - 1;
    for (int i = 0; i < ok_depth; i++) {
        sl_jw_arr_open(&w);
    }
    sl_jw_int(&w, 7);
    for (int i = 0; i < ok_depth; i++) {
        sl_jw_arr_close(&w);
    }
    assert_int_equal(w.err, 0);
    json_t *root = parse(&b);
    json_t *v = root;
    for (int i = 0; i < ok_depth; i++) {
        assert_true(json_is_array(v));
        v = json_array_get(v, 0);
    }
    assert_int_equal(json_integer_value(v), 7);
    json_decref(root);

    /* one level more is refused, and the error sticks */
    sl_buf_reset(&b);
    sl_jw_init(&w, &b);
    for (int i = 0; i < SL_JW_MAX_DEPTH; i++) {
        sl_jw_obj_open(&w);
        if (i < SL_JW_MAX_DEPTH - 1) {
            sl_jw_keyz(&w, "k");
        }
    }
    assert_int_equal(w.err, SL_ERR_LIMIT);
    sl_jw_int(&w, 1);
    assert_int_equal(w.err, SL_ERR_LIMIT);
    sl_buf_free(&b);
}

/* XML character data: the four characters that matter in text and in a
 * double-quoted attribute become entities, the rest (UTF-8 too) stays. */
static void test_buf_put_xml(void **state)
{
    (void)state;
    sl_buf b;
    sl_buf_init(&b, 0);
    assert_int_equal(sl_buf_put_xml(&b, "a&b <c> \"d\" 'e' \xc3\xa9"), 0);
    assert_string_equal(sl_buf_cstr(&b), "a&amp;b &lt;c&gt; &quot;d&quot; 'e' \xc3\xa9");
    sl_buf_free(&b);
    sl_buf_init(&b, 8); /* the limit is reported, not overrun */
    assert_int_not_equal(sl_buf_put_xml(&b, "&&&&&&"), 0);
    assert_true(b.len <= 8);
    sl_buf_free(&b);
}

static void test_buffer_limit_is_sticky(void **state)
{
    (void)state;
    sl_buf b;
    sl_buf_init(&b, 32);
    sl_jw w;
    sl_jw_init(&w, &b);
    sl_jw_arr_open(&w);
    sl_jw_str(&w, "0123456789", 10);
    assert_int_equal(w.err, 0);
    size_t before = b.len;
    sl_jw_str(&w, "0123456789012345678901234567890123456789", 40);
    assert_int_equal(w.err, SL_ERR_LIMIT);
    sl_jw_int(&w, 5);
    sl_jw_arr_close(&w);
    assert_int_equal(w.err, SL_ERR_LIMIT);
    assert_true(b.len <= 32);
    assert_true(b.len >= before);
    sl_buf_free(&b);
}

/* ------------------------------------------------------------ numbers */

static void check_double(double d)
{
    sl_buf b;
    sl_buf_init(&b, 0);
    sl_jw w;
    sl_jw_init(&w, &b);
    sl_jw_double(&w, d);
    assert_int_equal(w.err, 0);
    json_t *v = parse(&b);
    if (!json_is_real(v)) {
        fail_msg("%.17g was written as %s, which does not read back as a float", d, b.data);
    }
    double back = json_real_value(v);
    if (memcmp(&back, &d, sizeof(d)) != 0) {
        fail_msg("%.17g was written as %s and read back as %.17g", d, b.data, back);
    }
    json_decref(v);
    sl_buf_free(&b);
}

static void test_doubles_roundtrip(void **state)
{
    (void)state;
    const double fixed[] = {0.0,
                            -0.0,
                            0.5,
                            -0.5,
                            0.1,
                            1.0 / 3.0,
                            3.0,
                            -3.0,
                            1e22,
                            1e21,
                            1e-7,
                            123456789012345678.0,
                            DBL_MAX,
                            -DBL_MAX,
                            DBL_MIN,
                            4.9406564584124654e-324,
                            2.2250738585072009e-308,
                            9007199254740993.0,
                            0.30000000000000004};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        check_double(fixed[i]);
    }
    for (int i = 0; i < 20000; i++) {
        uint64_t bits = rnd();
        double d;
        memcpy(&d, &bits, sizeof(d));
        if (!isfinite(d)) {
            continue;
        }
        check_double(d);
    }
    /* short decimals keep their short form */
    sl_buf b;
    sl_buf_init(&b, 0);
    sl_jw w;
    sl_jw_init(&w, &b);
    sl_jw_arr_open(&w);
    sl_jw_double(&w, 0.1);
    sl_jw_double(&w, 3.0);
    sl_jw_double(&w, -2.5);
    sl_jw_arr_close(&w);
    assert_string_equal(b.data, "[0.1,3.0,-2.5]");
    sl_buf_free(&b);
}

static void test_non_finite_is_null(void **state)
{
    (void)state;
    sl_buf b;
    sl_buf_init(&b, 0);
    sl_jw w;
    sl_jw_init(&w, &b);
    sl_jw_arr_open(&w);
    sl_jw_double(&w, NAN);
    sl_jw_double(&w, INFINITY);
    sl_jw_double(&w, -INFINITY);
    sl_jw_arr_close(&w);
    assert_string_equal(b.data, "[null,null,null]");
    sl_buf_free(&b);
}

static void test_ints(void **state)
{
    (void)state;
    int64_t vals[200] = {INT64_MIN,
                         INT64_MAX,
                         0,
                         -1,
                         1,
                         INT64_MIN + 1,
                         INT64_MAX - 1,
                         1000000000000000000ll,
                         -999999999999999999ll};
    size_t n = 9;
    while (n < 200) {
        vals[n++] = (int64_t)(rnd() >> rnd_below(64));
    }
    sl_buf b;
    sl_buf_init(&b, 0);
    sl_jw w;
    sl_jw_init(&w, &b);
    sl_jw_arr_open(&w);
    for (size_t i = 0; i < n; i++) {
        sl_jw_int(&w, vals[i]);
    }
    sl_jw_arr_close(&w);
    assert_int_equal(w.err, 0);
    assert_non_null(strstr(b.data, "[-9223372036854775808,9223372036854775807,0,-1,1,"));
    json_t *root = parse(&b);
    assert_int_equal(json_array_size(root), n);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(root, i);
        assert_true(json_is_integer(v));
        assert_true(json_integer_value(v) == vals[i]);
    }
    json_decref(root);
    sl_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_strings_roundtrip),
        cmocka_unit_test(test_every_control_char),
        cmocka_unit_test(test_escape_exact),
        cmocka_unit_test(test_exact_layout),
        cmocka_unit_test(test_random_trees),
        cmocka_unit_test(test_max_depth),
        cmocka_unit_test(test_buffer_limit_is_sticky),
        cmocka_unit_test(test_buf_put_xml),
        cmocka_unit_test(test_doubles_roundtrip),
        cmocka_unit_test(test_non_finite_is_null),
        cmocka_unit_test(test_ints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
