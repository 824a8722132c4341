/* cast: each target type, failures reject the record with a message naming
 * line, column, value and type, empty/null cells are left for infer, and the
 * FIXED flag keeps infer away (csv -> cast -> infer, as in the Braze example). */
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

extern const sl_step_plugin sl_step_cast;
extern const sl_step_plugin sl_step_infer;

typedef struct step {
    const sl_step_plugin *p;
    void *self;
    sl_ctx *ctx;
    sl_opts *opts;
} step;

static void step_open(step *s, const sl_step_plugin *p, const char *const *pairs, size_t n)
{
    sl_buf errs;
    sl_buf_init(&errs, 0);
    s->p = p;
    s->opts = sl_opts_from_pairs(p->options, pairs, n, &errs);
    if (!s->opts) {
        fail_msg("options rejected: %s", sl_buf_cstr(&errs));
    }
    sl_buf_free(&errs);
    s->ctx = sl_ctx_new("test", "step", p->name, NULL, 0, NULL);
    assert_non_null(s->ctx);
    sl_error err = {0};
    if (p->init(&s->self, s->opts, s->ctx, &err) != 0) {
        fail_msg("init failed: %s", err.msg);
    }
}

static void step_close(step *s)
{
    s->p->destroy(s->self);
    sl_ctx_free(s->ctx);
    sl_opts_free(s->opts);
}

static void fill(sl_record *r, uint64_t line, const char *const *nv, size_t n)
{
    sl_record_reset(r);
    r->line = line;
    for (size_t i = 0; i + 1 < n; i += 2) {
        assert_int_equal(
            sl_record_add_str(r, nv[i], (uint32_t)strlen(nv[i]), nv[i + 1], strlen(nv[i + 1])), 0);
    }
}

static void run(step *s, sl_record *r, int stage)
{
    sl_error err = {0};
    int rc = s->p->process(s->self, r, stage, &err);
    if (rc != 0) {
        fail_msg("process returned %d: %s", rc, err.msg);
    }
}

static const sl_field *get(const sl_record *r, const char *name)
{
    const sl_field *f = sl_record_get(r, name);
    if (!f) {
        fail_msg("field '%s' is gone", name);
    }
    return f;
}

static const char *const all_types[] = {
    "types={zip: string, age: integer, score: float, vip: boolean}"};

static void test_each_target(void **state)
{
    step s;
    step_open(&s, &sl_step_cast, all_types, 1);
    sl_record r;
    sl_record_init(&r);
    const char *nv[] = {"zip", "02134", "age", "007", "score", "1e3", "vip", "Yes", "other", "12"};
    fill(&r, 5, nv, 10);
    run(&s, &r, 0);
    assert_int_equal(r.status, SL_REC_OK);
    const sl_field *zip = get(&r, "zip");
    assert_int_equal(zip->type, SL_T_STRING);
    assert_string_equal(sl_field_str(&r, zip), "02134");
    assert_true(zip->flags & SL_FIELD_FIXED);
    const sl_field *age = get(&r, "age");
    assert_int_equal(age->type, SL_T_INT);
    assert_int_equal(age->v.i, 7);
    assert_true(age->flags & SL_FIELD_FIXED);
    const sl_field *score = get(&r, "score");
    assert_int_equal(score->type, SL_T_FLOAT);
    assert_true(score->v.f == 1000.0);
    const sl_field *vip = get(&r, "vip");
    assert_int_equal(vip->type, SL_T_BOOL);
    assert_int_equal(vip->v.b, 1);
    /* unlisted columns are not cast's business */
    const sl_field *other = get(&r, "other");
    assert_int_equal(other->type, SL_T_STRING);
    assert_false(other->flags & SL_FIELD_FIXED);
    sl_record_free(&r);
    step_close(&s);
}

typedef struct cast_case {
    const char *col;
    const char *in;
    int ok;
    sl_type type;
    int64_t i;
    double f;
} cast_case;

static void test_value_table(void **state)
{
    static const cast_case cases[] = {
        {"age", "42", 1, SL_T_INT, 42, 0},
        {"age", "-42", 1, SL_T_INT, -42, 0},
        {"age", "+42", 1, SL_T_INT, 42, 0},
        {"age", "0042", 1, SL_T_INT, 42, 0},
        {"age", " 42 ", 1, SL_T_INT, 42, 0},
        {"age", "9223372036854775807", 1, SL_T_INT, INT64_MAX, 0},
        {"age", "-9223372036854775808", 1, SL_T_INT, INT64_MIN, 0},
        {"age", "9223372036854775808", 0, 0, 0, 0},
        {"age", "12.0", 0, 0, 0, 0},
        {"age", "1e3", 0, 0, 0, 0},
        {"age", "abc", 0, 0, 0, 0},
        {"age", "4 2", 0, 0, 0, 0},
        {"age", "-", 0, 0, 0, 0},
        {"age", "0x1A", 0, 0, 0, 0},
        {"score", "0.5", 1, SL_T_FLOAT, 0, 0.5},
        {"score", "-.5", 1, SL_T_FLOAT, 0, -0.5},
        {"score", "5.", 1, SL_T_FLOAT, 0, 5.0},
        {"score", "7", 1, SL_T_FLOAT, 0, 7.0},
        {"score", "007.50", 1, SL_T_FLOAT, 0, 7.5},
        {"score", "2.5E-3", 1, SL_T_FLOAT, 0, 0.0025},
        {"score", "nan", 0, 0, 0, 0},
        {"score", "inf", 0, 0, 0, 0},
        {"score", "1e999", 0, 0, 0, 0},
        {"score", "0x10", 0, 0, 0, 0},
        {"score", "1,5", 0, 0, 0, 0},
        {"score", "1e", 0, 0, 0, 0},
        {"score", ".", 0, 0, 0, 0},
        {"vip", "true", 1, SL_T_BOOL, 1, 0},
        {"vip", "FALSE", 1, SL_T_BOOL, 0, 0},
        {"vip", "no", 1, SL_T_BOOL, 0, 0},
        {"vip", "YES", 1, SL_T_BOOL, 1, 0},
        {"vip", "1", 1, SL_T_BOOL, 1, 0},
        {"vip", "0", 1, SL_T_BOOL, 0, 0},
        {"vip", "2", 0, 0, 0, 0},
        {"vip", "y", 0, 0, 0, 0},
        {"vip", "truthy", 0, 0, 0, 0},
        {"zip", "anything at all", 1, SL_T_STRING, 0, 0},
    };
    step s;
    step_open(&s, &sl_step_cast, all_types, 1);
    sl_record r;
    sl_record_init(&r);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const cast_case *c = &cases[i];
        const char *nv[] = {c->col, c->in};
        fill(&r, 9, nv, 2);
        run(&s, &r, 1);
        if (!c->ok) {
            if (r.status != SL_REC_REJECTED) {
                fail_msg("%s '%s' should have been rejected", c->col, c->in);
            }
            continue;
        }
        if (r.status != SL_REC_OK) {
            fail_msg("%s '%s' rejected: %s", c->col, c->in, sl_buf_cstr(&r.reason));
        }
        const sl_field *f = get(&r, c->col);
        assert_int_equal(f->type, c->type);
        assert_true(f->flags & SL_FIELD_FIXED);
        if (c->type == SL_T_INT) {
            assert_true(f->v.i == c->i);
        } else if (c->type == SL_T_FLOAT) {
            assert_true(f->v.f == c->f);
        } else if (c->type == SL_T_BOOL) {
            assert_int_equal(f->v.b, (int)c->i);
        }
    }
    sl_record_free(&r);
    step_close(&s);
}

static void test_failure_message(void **state)
{
    step s;
    step_open(&s, &sl_step_cast, all_types, 1);
    sl_record r;
    sl_record_init(&r);
    const char *nv[] = {"zip", "02134", "age", "abc", "score", "x"};
    fill(&r, 17, nv, 6);
    run(&s, &r, 2);
    assert_int_equal(r.status, SL_REC_REJECTED);
    assert_int_equal(r.stage, 2);
    /* the first problem is the reason */
    assert_string_equal(sl_buf_cstr(&r.reason),
                        "line 17: column 'age': cannot cast 'abc' to integer");

    const char *nv2[] = {"vip", "maybe"};
    fill(&r, 3, nv2, 2);
    run(&s, &r, 0);
    assert_string_equal(sl_buf_cstr(&r.reason),
                        "line 3: column 'vip': cannot cast 'maybe' to boolean");

    /* a long or multi-line value is cut to one readable line */
    char big[400];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    big[5] = '\n';
    const char *nv3[] = {"score", big};
    fill(&r, 4, nv3, 2);
    run(&s, &r, 0);
    const char *why = sl_buf_cstr(&r.reason);
    assert_non_null(strstr(why, "line 4: column 'score': cannot cast 'zzzzz zzz"));
    assert_non_null(strstr(why, "...' to float"));
    assert_null(strchr(why, '\n'));
    assert_true(strlen(why) < 200);

    /* an already rejected record keeps its first reason */
    fill(&r, 5, nv, 6);
    sl_record_reject(&r, SL_STAGE_SOURCE, "line 5: row has 4 columns, header has 3");
    run(&s, &r, 0);
    assert_string_equal(sl_buf_cstr(&r.reason), "line 5: row has 4 columns, header has 3");
    sl_record_free(&r);
    step_close(&s);
}

static void test_empty_and_null_left_for_infer(void **state)
{
    step s;
    step_open(&s, &sl_step_cast, all_types, 1);
    sl_record r;
    sl_record_init(&r);
    const char *nv[] = {"age", "", "score", "   ", "vip", "NULL", "zip", "null"};
    fill(&r, 2, nv, 8);
    run(&s, &r, 0);
    assert_int_equal(r.status, SL_REC_OK);
    for (uint32_t i = 0; i < r.nfields; i++) {
        assert_int_equal(r.fields[i].type, SL_T_STRING);
        assert_false(r.fields[i].flags & SL_FIELD_FIXED);
    }
    step_close(&s);

    /* with the null literal switched off, "null" is a value like any other */
    const char *pairs[] = {"types={age: integer, zip: string}", "null_literal="};
    step_open(&s, &sl_step_cast, pairs, 2);
    const char *nv2[] = {"age", "null", "zip", "null"};
    fill(&r, 2, nv2, 4);
    run(&s, &r, 0);
    assert_int_equal(r.status, SL_REC_REJECTED);
    fill(&r, 2, nv2 + 2, 2);
    run(&s, &r, 0);
    assert_true(get(&r, "zip")->flags & SL_FIELD_FIXED);
    sl_record_free(&r);
    step_close(&s);
}

/* csv -> cast -> infer: forced strings survive inference; empty and null
 * cells in cast columns get infer's treatment. */
static void test_fixed_stops_infer(void **state)
{
    step c, in;
    const char *pairs[] = {"types={zip: string, phone: string, age: integer}"};
    step_open(&c, &sl_step_cast, pairs, 1);
    step_open(&in, &sl_step_infer, NULL, 0);
    sl_record r;
    sl_record_init(&r);
    const char *nv[] = {"zip",   "12345", "phone", "5551234", "age", "0042",
                        "count", "12345", "email", "",        "tag", "null"};
    fill(&r, 2, nv, 12);
    run(&c, &r, 0);
    run(&in, &r, 1);
    assert_int_equal(r.status, SL_REC_OK);
    sl_buf out;
    sl_buf_init(&out, 0);
    assert_int_equal(sl_record_to_json(&r, &out), 0);
    assert_string_equal(out.data, "{\"zip\":\"12345\",\"phone\":\"5551234\",\"age\":42,"
                                  "\"count\":12345,\"tag\":null}");

    const char *nv2[] = {"zip", "", "phone", "NULL", "age", "true"};
    fill(&r, 3, nv2, 6);
    run(&c, &r, 0);
    assert_int_equal(r.status, SL_REC_REJECTED);
    assert_string_equal(sl_buf_cstr(&r.reason),
                        "line 3: column 'age': cannot cast 'true' to integer");
    fill(&r, 3, nv2, 4);
    run(&c, &r, 0);
    run(&in, &r, 1);
    sl_buf_reset(&out);
    assert_int_equal(sl_record_to_json(&r, &out), 0);
    assert_string_equal(out.data, "{\"phone\":null}");
    sl_buf_free(&out);
    sl_record_free(&r);
    step_close(&c);
    step_close(&in);
}

/* Values a typed source already decided are converted too. */
static void test_typed_input(void **state)
{
    step s;
    const char *pairs[] = {"types={a: string, b: integer, c: float, d: boolean}"};
    step_open(&s, &sl_step_cast, pairs, 1);
    sl_record r;
    sl_record_init(&r);
    assert_int_equal(sl_record_add_int(&r, "a", 1, 2134), 0);
    assert_int_equal(sl_record_add_float(&r, "b", 1, 12.0), 0);
    assert_int_equal(sl_record_add_int(&r, "c", 1, 3), 0);
    assert_int_equal(sl_record_add_int(&r, "d", 1, 0), 0);
    run(&s, &r, 0);
    assert_int_equal(r.status, SL_REC_OK);
    const sl_field *a = get(&r, "a");
    assert_int_equal(a->type, SL_T_STRING);
    assert_string_equal(sl_field_str(&r, a), "2134");
    assert_int_equal(get(&r, "b")->type, SL_T_INT);
    assert_int_equal(get(&r, "b")->v.i, 12);
    assert_int_equal(get(&r, "c")->type, SL_T_FLOAT);
    assert_true(get(&r, "c")->v.f == 3.0);
    assert_int_equal(get(&r, "d")->type, SL_T_BOOL);
    assert_int_equal(get(&r, "d")->v.b, 0);

    sl_record_reset(&r);
    r.line = 8;
    assert_int_equal(sl_record_add_float(&r, "b", 1, 12.5), 0);
    run(&s, &r, 0);
    assert_int_equal(r.status, SL_REC_REJECTED);
    assert_string_equal(sl_buf_cstr(&r.reason),
                        "line 8: column 'b': cannot cast '12.5' to integer");
    sl_record_free(&r);
    step_close(&s);
}

static void test_options(void **state)
{
    sl_buf errs;
    sl_buf_init(&errs, 0);
    /* types is required, and its values are checked */
    assert_null(sl_opts_from_pairs(sl_step_cast.options, NULL, 0, &errs));
    assert_non_null(strstr(sl_buf_cstr(&errs), "types"));
    sl_buf_reset(&errs);
    const char *bad[] = {"types={age: int}"};
    assert_null(sl_opts_from_pairs(sl_step_cast.options, bad, 1, &errs));
    assert_non_null(strstr(sl_buf_cstr(&errs), "age"));
    sl_buf_free(&errs);

    /* a typed column missing from the header is a warning, not an error */
    step s;
    step_open(&s, &sl_step_cast, all_types, 1);
    const char *cols[] = {"external_id", "zip", "age"};
    sl_error err = {0};
    assert_int_equal(sl_step_cast.columns(s.self, cols, 3, &err), 0);
    step_close(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_target),
        cmocka_unit_test(test_value_table),
        cmocka_unit_test(test_failure_message),
        cmocka_unit_test(test_empty_and_null_left_for_infer),
        cmocka_unit_test(test_fixed_stops_infer),
        cmocka_unit_test(test_typed_input),
        cmocka_unit_test(test_options),
    };
    sl_log_level = SL_LOG_ERROR; /* the columns test warns on purpose */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
