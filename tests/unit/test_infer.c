/* infer: the classification rules (table-driven, every example of the Braze
 * section of contracts.md) and the step around them (empty cells, the null
 * literal, except/only, switching each rule off, fixed fields). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "core/ctx.h"
#include "sluice/plugin.h"
#include "sluice/values.h"

extern const sl_step_plugin sl_step_infer;

/* ------------------------------------------------------------ classify */

typedef struct classify_case {
    const char *in;
    sl_type type;
    int64_t i;
    double f;
    const char *json; /* SL_T_JSON: expected compact text */
} classify_case;

/* clang-format off */
#define STR(s) {s, SL_T_STRING, 0, 0, NULL}
#define INT(s, v) {s, SL_T_INT, v, 0, NULL}
#define FLT(s, v) {s, SL_T_FLOAT, 0, v, NULL}
#define BOOL(s, v) {s, SL_T_BOOL, v, 0, NULL}
#define ARR(s, j) {s, SL_T_JSON, 0, 0, j}
/* clang-format on */

static const classify_case cases[] = {
    /* contracts.md: leading zeros stay strings, 0.5 is a number */
    STR("0123"),
    STR("02134"),
    STR("-012"),
    STR("00"),
    STR("00.5"),
    FLT("0.5", 0.5),
    FLT("-0.5", -0.5),
    INT("0", 0),
    INT("-0", 0),
    INT("7", 7),
    INT("-7", -7),
    INT("1234567890", 1234567890),
    FLT("3.14", 3.14),
    FLT("10.0", 10.0),
    FLT("0.000", 0.0),
    FLT("-0.0", -0.0),
    /* contracts.md: these stay strings */
    STR("1e5"),
    STR("1E5"),
    STR("1.5e3"),
    STR("+7"),
    STR("1,000"),
    STR("NaN"),
    STR("nan"),
    STR("inf"),
    STR("-inf"),
    STR("Infinity"),
    STR("972-000-0000"),
    STR("11/11/2011"),
    STR("2011-11-11"),
    /* the original (Python float()) reads these as numbers too */
    FLT(".5", 0.5),
    FLT("5.", 5.0),
    FLT("-.5", -0.5),
    FLT("0.", 0.0),
    STR("."),
    STR("-."),
    STR("-012.5"),
    STR("1.2.3"),
    STR("0x10"),
    STR("12abc"),
    STR("-"),
    STR("--5"),
    /* the original strips surrounding whitespace before deciding */
    INT(" 12", 12),
    INT("12 ", 12),
    INT("  5", 5),
    INT("\t5\r\n", 5),
    FLT(" 0.5 ", 0.5),
    STR(" 012"),
    STR("1 2"),
    STR(""),
    STR("   "),
    /* int64 edges */
    INT("9223372036854775807", INT64_MAX),
    INT("-9223372036854775808", INT64_MIN),
    STR("9223372036854775808"),
    STR("-9223372036854775809"),
    STR("99999999999999999999999"),
    /* booleans, any case */
    BOOL("true", 1),
    BOOL("TRUE", 1),
    BOOL("True", 1),
    BOOL("false", 0),
    BOOL("False", 0),
    BOOL("fALSE", 0),
    STR("yes"),
    STR("t"),
    STR("truee"),
    BOOL(" true", 1),
    BOOL("FALSE\t", 0),
    STR("tr ue"),
    STR("1true"),
    /* arrays */
    ARR("[1,2]", "[1,2]"),
    ARR("[\"a\"]", "[\"a\"]"),
    ARR("[]", "[]"),
    ARR("[ 1 , \"b\" , true , null , 0.5 , {\"k\" : [2]} ]", "[1,\"b\",true,null,0.5,{\"k\":[2]}]"),
    ARR("[3.0, 0.1]", "[3.0,0.1]"),
    ARR("[\"caf\\u00e9\"]", "[\"caf\xC3\xA9\"]"),
    STR("[bad"),
    STR("[bad]"),
    STR("[1,2"),
    ARR("[1,]", "[1]"), /* a trailing comma is fine in Python */
    STR("[1] [2]"),
    STR("{\"a\":1}"),
    ARR(" [1] ", "[1]"),
    STR("["),
    STR("]"),
    /* Python list literals, as the original's README and tests write them */
    ARR("['a', 'b']", "[\"a\",\"b\"]"),
    ARR("[True, False, None]", "[true,false,null]"),
    ARR("['Value1', 'Value2']", "[\"Value1\",\"Value2\"]"),
    ARR("[ 'x' , ]", "[\"x\"]"),
    ARR("[\"it's\", 'say \"hi\"', 'it\\'s']", "[\"it's\",\"say \\\"hi\\\"\",\"it's\"]"),
    ARR("['caf\\xe9', u'\\u00e9', '\\U0001F600', 'a\\nb', '\\101', 'c:\\d']",
        "[\"caf\xC3\xA9\",\"\xC3\xA9\",\"\xF0\x9F\x98\x80\",\"a\\nb\",\"A\",\"c:\\\\d\"]"),
    ARR("['caf\xC3\xA9']", "[\"caf\xC3\xA9\"]"),
    ARR("[1, -2, 3.5, -.5, 5., 1e3, +4, - 6, 00]", "[1,-2,3.5,-0.5,5.0,1000.0,4,-6,0]"),
    ARR("[[1, 'a'], [], [[None]]]", "[[1,\"a\"],[],[[null]]]"),
    ARR("['a\\x00']", "[\"a\\u0000\"]"),
    ARR("[\n  'multi',\n  'line'\n]", "[\"multi\",\"line\"]"),
    STR("['a' 'b']"),
    STR("[(1, 2)]"),
    STR("[{'a': 1}]"),
    STR("[{1, 2}]"),
    STR("[b'x']"),
    STR("[r'x']"),
    STR("['''x''']"),
    STR("[0x10]"),
    STR("[1_000]"),
    STR("[007]"),
    STR("[1j]"),
    STR("[1e400]"),
    STR("[99999999999999999999]"),
    STR("['a]"),
    STR("['a\nb']"),
    STR("['\\N{DASH}']"),
    STR("['\\ud800']"),
    STR("['\\x4']"),
    STR("[true, 'a']"),
    STR("[nan]"),
    STR("[Truee]"),
    STR("[none]"),
    STR("[1,,2]"),
    STR("[,]"),
    STR("['a'] + ['b']"),
    STR("['\xFF']"),
    /* the null literal is the step's business, not classification's */
    STR("null"),
    STR("NULL"),
};

static void test_classify_table(void **state)
{
    sl_buf json;
    sl_buf_init(&json, 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const classify_case *c = &cases[i];
        sl_value v = {0, 0, 0};
        sl_type t = sl_infer_classify(c->in, strlen(c->in), SL_INFER_ALL, &v, &json);
        if (t != c->type) {
            fail_msg("'%s': classified %s, expected %s", c->in, sl_type_name(t),
                     sl_type_name(c->type));
        }
        switch (c->type) {
        case SL_T_INT:
            if (v.i != c->i) {
                fail_msg("'%s': %lld, expected %lld", c->in, (long long)v.i, (long long)c->i);
            }
            break;
        case SL_T_FLOAT:
            if (v.f != c->f || signbit(v.f) != signbit(c->f)) {
                fail_msg("'%s': %.17g, expected %.17g", c->in, v.f, c->f);
            }
            break;
        case SL_T_BOOL:
            if (v.b != (int)c->i) {
                fail_msg("'%s': %d, expected %d", c->in, v.b, (int)c->i);
            }
            break;
        case SL_T_JSON:
            if (strcmp(sl_buf_cstr(&json), c->json) != 0) {
                fail_msg("'%s': %s, expected %s", c->in, sl_buf_cstr(&json), c->json);
            }
            break;
        default:
            break;
        }
    }
    sl_buf_free(&json);
}

/* The text need not be NUL-terminated: only len bytes are looked at. */
static void test_classify_respects_len(void **state)
{
    sl_value v;
    assert_int_equal(sl_infer_classify("12345", 2, SL_INFER_ALL, &v, NULL), SL_T_INT);
    assert_int_equal(v.i, 12);
    assert_int_equal(sl_infer_classify("0.5xyz", 3, SL_INFER_ALL, &v, NULL), SL_T_FLOAT);
    assert_true(v.f == 0.5);
    assert_int_equal(sl_infer_classify("truex", 4, SL_INFER_ALL, &v, NULL), SL_T_BOOL);
    assert_int_equal(sl_infer_classify("[1]]", 3, SL_INFER_ALL, &v, NULL), SL_T_JSON);
    assert_int_equal(sl_infer_classify("0123", 1, SL_INFER_ALL, &v, NULL), SL_T_INT);
    assert_int_equal(v.i, 0);
}

static void test_classify_rules_off(void **state)
{
    sl_value v;
    sl_buf json;
    sl_buf_init(&json, 0);
    unsigned no_num = SL_INFER_ALL & ~SL_INFER_NUMBERS;
    unsigned no_bool = SL_INFER_ALL & ~SL_INFER_BOOLEANS;
    unsigned no_arr = SL_INFER_ALL & ~SL_INFER_ARRAYS;
    assert_int_equal(sl_infer_classify("12", 2, no_num, &v, &json), SL_T_STRING);
    assert_int_equal(sl_infer_classify("0.5", 3, no_num, &v, &json), SL_T_STRING);
    assert_int_equal(sl_infer_classify("true", 4, no_num, &v, &json), SL_T_BOOL);
    assert_int_equal(sl_infer_classify("true", 4, no_bool, &v, &json), SL_T_STRING);
    assert_int_equal(sl_infer_classify("12", 2, no_bool, &v, &json), SL_T_INT);
    assert_int_equal(sl_infer_classify("[1]", 3, no_arr, &v, &json), SL_T_STRING);
    assert_int_equal(sl_infer_classify("[1]", 3, no_bool, &v, &json), SL_T_JSON);
    assert_int_equal(sl_infer_classify("12", 2, 0, &v, &json), SL_T_STRING);
    sl_buf_free(&json);
}

static void test_blank_and_null_literal(void **state)
{
    assert_true(sl_is_blank("", 0));
    assert_true(sl_is_blank("   ", 3));
    assert_true(sl_is_blank(" \t\r\n", 4));
    assert_false(sl_is_blank(" x ", 3));
    assert_true(sl_is_null_literal("null", 4, "null"));
    assert_true(sl_is_null_literal("NULL", 4, "null"));
    assert_true(sl_is_null_literal("Null", 4, "null"));
    assert_true(sl_is_null_literal("  nUlL \t", 8, "null"));
    assert_false(sl_is_null_literal("nul", 3, "null"));
    assert_false(sl_is_null_literal("nullx", 5, "null"));
    assert_false(sl_is_null_literal("", 0, "null"));
    assert_false(sl_is_null_literal("null", 4, ""));
    assert_false(sl_is_null_literal("", 0, ""));
    assert_true(sl_is_null_literal("N/A", 3, "n/a"));
}

/* ------------------------------------------------------------ the step */

typedef struct step {
    void *self;
    sl_ctx *ctx;
    sl_opts *opts;
} step;

static void step_open(step *s, const char *const *pairs, size_t n)
{
    sl_buf errs;
    sl_buf_init(&errs, 0);
    s->opts = sl_opts_from_pairs(sl_step_infer.options, pairs, n, &errs);
    if (!s->opts) {
        fail_msg("options rejected: %s", sl_buf_cstr(&errs));
    }
    sl_buf_free(&errs);
    s->ctx = sl_ctx_new("test", "step", "infer", NULL, 0, NULL);
    assert_non_null(s->ctx);
    sl_error err = {0};
    if (sl_step_infer.init(&s->self, s->opts, s->ctx, &err) != 0) {
        fail_msg("init failed: %s", err.msg);
    }
}

static void step_close(step *s)
{
    sl_step_infer.destroy(s->self);
    sl_ctx_free(s->ctx);
    sl_opts_free(s->opts);
}

/* One record from name/value pairs, all text as a CSV source makes it. */
static void fill(sl_record *r, const char *const *nv, size_t n)
{
    sl_record_reset(r);
    r->line = 2;
    for (size_t i = 0; i + 1 < n; i += 2) {
        assert_int_equal(
            sl_record_add_str(r, nv[i], (uint32_t)strlen(nv[i]), nv[i + 1], strlen(nv[i + 1])), 0);
    }
}

static void run(step *s, sl_record *r)
{
    sl_error err = {0};
    int rc = sl_step_infer.process(s->self, r, 1, &err);
    if (rc != 0) {
        fail_msg("process returned %d: %s", rc, err.msg);
    }
    assert_int_equal(r->status, SL_REC_OK);
}

static const sl_field *get(const sl_record *r, const char *name)
{
    const sl_field *f = sl_record_get(r, name);
    if (!f) {
        fail_msg("field '%s' is gone", name);
    }
    return f;
}

static void assert_text(const sl_record *r, const char *name, const char *want)
{
    const sl_field *f = get(r, name);
    if (f->type != SL_T_STRING || strcmp(sl_field_str(r, f), want) != 0) {
        fail_msg("'%s': expected the string '%s', got %s '%s'", name, want,
                 sl_type_name((sl_type)f->type), f->type == SL_T_STRING ? sl_field_str(r, f) : "");
    }
    assert_false(f->flags & SL_FIELD_OMIT);
}

static void test_step_defaults(void **state)
{
    step s;
    step_open(&s, NULL, 0);
    sl_record r;
    sl_record_init(&r);
    const char *nv[] = {"external_id", "123",   "age",    "42",   "zip",   "02134",
                        "score",       "0.5",   "big",    "1e5",  "sub",   "TRUE",
                        "tags",        "[1,2]", "bad",    "[bad", "nick",  "",
                        "blank",       "   ",   "gone",   "NULL", "phone", "972-000-0000",
                        "neg",         "-12",   "spaced", " 12",  "date",  "11/11/2011",
                        "pad",         " x ",   "half",   " .5 ", "py",    "['a', True]"};
    fill(&r, nv, sizeof(nv) / sizeof(nv[0]));
    run(&s, &r);
    /* no except: the key is inferred too (the braze sink writes it as a string) */
    assert_int_equal(get(&r, "external_id")->type, SL_T_INT);
    assert_int_equal(get(&r, "age")->type, SL_T_INT);
    assert_int_equal(get(&r, "age")->v.i, 42);
    assert_text(&r, "zip", "02134");
    assert_int_equal(get(&r, "score")->type, SL_T_FLOAT);
    assert_true(get(&r, "score")->v.f == 0.5);
    assert_text(&r, "big", "1e5");
    assert_int_equal(get(&r, "sub")->type, SL_T_BOOL);
    assert_int_equal(get(&r, "sub")->v.b, 1);
    const sl_field *tags = get(&r, "tags");
    assert_int_equal(tags->type, SL_T_JSON);
    assert_string_equal(sl_field_str(&r, tags), "[1,2]");
    assert_text(&r, "bad", "[bad");
    assert_true(get(&r, "nick")->flags & SL_FIELD_OMIT);
    assert_true(get(&r, "blank")->flags & SL_FIELD_OMIT);
    assert_int_equal(get(&r, "gone")->type, SL_T_NULL);
    assert_false(get(&r, "gone")->flags & SL_FIELD_OMIT);
    assert_text(&r, "phone", "972-000-0000");
    assert_int_equal(get(&r, "neg")->v.i, -12);
    assert_int_equal(get(&r, "spaced")->type, SL_T_INT);
    assert_int_equal(get(&r, "spaced")->v.i, 12);
    assert_text(&r, "date", "11/11/2011");
    assert_text(&r, "pad", " x "); /* text is sent as written, spaces included */
    assert_int_equal(get(&r, "half")->type, SL_T_FLOAT);
    assert_string_equal(sl_field_str(&r, get(&r, "py")), "[\"a\",true]");

    /* what a sink sends */
    sl_buf out;
    sl_buf_init(&out, 0);
    assert_int_equal(sl_record_to_json(&r, &out), 0);
    assert_string_equal(out.data, "{\"external_id\":123,\"age\":42,\"zip\":\"02134\",\"score\":0.5,"
                                  "\"big\":\"1e5\",\"sub\":true,\"tags\":[1,2],\"bad\":\"[bad\","
                                  "\"gone\":null,\"phone\":\"972-000-0000\",\"neg\":-12,"
                                  "\"spaced\":12,\"date\":\"11/11/2011\",\"pad\":\" x \","
                                  "\"half\":0.5,\"py\":[\"a\",true]}");
    sl_buf_free(&out);
    sl_record_free(&r);
    step_close(&s);
}

static void test_step_except_only(void **state)
{
    sl_record r;
    sl_record_init(&r);
    const char *nv[] = {"external_id", "123", "a", "1", "b", "2", "c", ""};

    step s;
    const char *except[] = {"except=[external_id, c]"};
    step_open(&s, except, 1);
    fill(&r, nv, 8);
    run(&s, &r);
    assert_text(&r, "external_id", "123");
    assert_int_equal(get(&r, "a")->type, SL_T_INT);
    assert_int_equal(get(&r, "b")->type, SL_T_INT);
    assert_text(&r, "c", ""); /* untouched: not even omitted */
    step_close(&s);

    const char *only[] = {"only=[b]"};
    step_open(&s, only, 1);
    fill(&r, nv, 8);
    run(&s, &r);
    assert_text(&r, "external_id", "123");
    assert_text(&r, "a", "1");
    assert_int_equal(get(&r, "b")->type, SL_T_INT);
    assert_int_equal(get(&r, "b")->v.i, 2);
    assert_text(&r, "c", "");
    step_close(&s);

    /* a single scalar is a list of one */
    const char *one[] = {"except=a"};
    step_open(&s, one, 1);
    fill(&r, nv, 8);
    run(&s, &r);
    assert_text(&r, "a", "1");
    assert_int_equal(get(&r, "b")->type, SL_T_INT);
    step_close(&s);
    sl_record_free(&r);
}

static void test_step_empty_modes(void **state)
{
    sl_record r;
    sl_record_init(&r);
    const char *nv[] = {"a", "", "b", " \t "};
    step s;

    const char *null_mode[] = {"empty=null"};
    step_open(&s, null_mode, 1);
    fill(&r, nv, 4);
    run(&s, &r);
    assert_int_equal(get(&r, "a")->type, SL_T_NULL);
    assert_int_equal(get(&r, "b")->type, SL_T_NULL);
    assert_false(get(&r, "a")->flags & SL_FIELD_OMIT);
    step_close(&s);

    const char *string_mode[] = {"empty=string"};
    step_open(&s, string_mode, 1);
    fill(&r, nv, 4);
    run(&s, &r);
    assert_text(&r, "a", "");
    assert_text(&r, "b", " \t ");
    step_close(&s);

    const char *bad_mode[] = {"empty=drop"};
    sl_buf errs;
    sl_buf_init(&errs, 0);
    assert_null(sl_opts_from_pairs(sl_step_infer.options, bad_mode, 1, &errs));
    assert_non_null(strstr(sl_buf_cstr(&errs), "empty"));
    sl_buf_free(&errs);
    sl_record_free(&r);
}

static void test_step_null_literal(void **state)
{
    sl_record r;
    sl_record_init(&r);
    const char *nv[] = {"a", "null", "b", " NULL ", "c", "N/A", "d", "n/a"};
    step s;

    const char *custom[] = {"null_literal=n/a"};
    step_open(&s, custom, 1);
    fill(&r, nv, 8);
    run(&s, &r);
    assert_text(&r, "a", "null");
    assert_text(&r, "b", " NULL ");
    assert_int_equal(get(&r, "c")->type, SL_T_NULL);
    assert_int_equal(get(&r, "d")->type, SL_T_NULL);
    step_close(&s);

    const char *off[] = {"null_literal="};
    step_open(&s, off, 1);
    fill(&r, nv, 8);
    run(&s, &r);
    assert_text(&r, "a", "null");
    assert_text(&r, "c", "N/A");
    step_close(&s);

    step_open(&s, NULL, 0);
    fill(&r, nv, 8);
    run(&s, &r);
    assert_int_equal(get(&r, "a")->type, SL_T_NULL);
    assert_int_equal(get(&r, "b")->type, SL_T_NULL);
    assert_text(&r, "c", "N/A");
    step_close(&s);
    sl_record_free(&r);
}

static void test_step_rules_off(void **state)
{
    sl_record r;
    sl_record_init(&r);
    const char *nv[] = {"n", "12", "f", "0.5", "b", "true", "a", "[1]", "z", "", "x", "null"};
    step s;

    const char *off[] = {"numbers=false", "booleans=false", "arrays=false"};
    step_open(&s, off, 3);
    fill(&r, nv, 12);
    run(&s, &r);
    assert_text(&r, "n", "12");
    assert_text(&r, "f", "0.5");
    assert_text(&r, "b", "true");
    assert_text(&r, "a", "[1]");
    /* empty and null handling are not rules: they still apply */
    assert_true(get(&r, "z")->flags & SL_FIELD_OMIT);
    assert_int_equal(get(&r, "x")->type, SL_T_NULL);
    step_close(&s);

    const char *no_bool[] = {"booleans=no"};
    step_open(&s, no_bool, 1);
    fill(&r, nv, 12);
    run(&s, &r);
    assert_int_equal(get(&r, "n")->type, SL_T_INT);
    assert_text(&r, "b", "true");
    assert_int_equal(get(&r, "a")->type, SL_T_JSON);
    step_close(&s);
    sl_record_free(&r);
}

/* Only untyped text is inferred: fixed (cast) fields and fields a source
 * typed itself are left alone. */
static void test_step_leaves_typed_fields(void **state)
{
    step s;
    step_open(&s, NULL, 0);
    sl_record r;
    sl_record_init(&r);
    const char *nv[] = {"zip", "12345", "blank", "", "free", "12345"};
    fill(&r, nv, 6);
    r.fields[0].flags |= SL_FIELD_FIXED;
    r.fields[1].flags |= SL_FIELD_FIXED;
    assert_int_equal(sl_record_add_float(&r, "ratio", 5, 2.0), 0);
    run(&s, &r);
    assert_text(&r, "zip", "12345");
    assert_true(get(&r, "zip")->flags & SL_FIELD_FIXED);
    assert_text(&r, "blank", "");
    assert_int_equal(get(&r, "free")->type, SL_T_INT);
    assert_int_equal(get(&r, "ratio")->type, SL_T_FLOAT);
    sl_record_free(&r);
    step_close(&s);
}

/* A record's arena may move while an array is stored; later fields must
 * still read correctly. */
static void test_step_many_arrays(void **state)
{
    step s;
    step_open(&s, NULL, 0);
    sl_record r;
    sl_record_init(&r);
    static char names[40][8];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof(names[i]), "c%d", i);
        char v[64];
        int n = snprintf(v, sizeof(v), "[%d, \"x%d\",   %d.5]", i, i, i);
        assert_int_equal(sl_record_add_str(&r, names[i], (uint32_t)strlen(names[i]), v, (size_t)n),
                         0);
    }
    run(&s, &r);
    for (int i = 0; i < 40; i++) {
        char want[64];
        snprintf(want, sizeof(want), "[%d,\"x%d\",%d.5]", i, i, i);
        const sl_field *f = get(&r, names[i]);
        assert_int_equal(f->type, SL_T_JSON);
        assert_string_equal(sl_field_str(&r, f), want);
    }
    sl_record_free(&r);
    step_close(&s);
}

static void test_step_columns_warns_only(void **state)
{
    step s;
    const char *pairs[] = {"except=[external_id, typo]"};
    step_open(&s, pairs, 1);
    const char *cols[] = {"external_id", "a"};
    sl_error err = {0};
    assert_int_equal(sl_step_infer.columns(s.self, cols, 2, &err), 0);
    step_close(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify_table),     cmocka_unit_test(test_classify_respects_len),
        cmocka_unit_test(test_classify_rules_off), cmocka_unit_test(test_blank_and_null_literal),
        cmocka_unit_test(test_step_defaults),      cmocka_unit_test(test_step_except_only),
        cmocka_unit_test(test_step_empty_modes),   cmocka_unit_test(test_step_null_literal),
        cmocka_unit_test(test_step_rules_off),     cmocka_unit_test(test_step_leaves_typed_fields),
        cmocka_unit_test(test_step_many_arrays),   cmocka_unit_test(test_step_columns_warns_only),
    };
    sl_log_level = SL_LOG_ERROR; /* the columns test warns on purpose */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
