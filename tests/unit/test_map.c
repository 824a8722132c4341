/* map: every value function, paths into JSON-valued fields, the projection's
 * order and exactness, missing sources, rename/drop/set, and the messages
 * for bad expressions (validate hook and init). Records are compared through
 * sl_record_to_json, the same rules the JSON sinks use. */
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

extern const sl_step_plugin sl_step_map;

typedef struct step {
    void *self;
    sl_ctx *ctx;
    sl_opts *opts;
} step;

static sl_opts *opts_of(const char *const *pairs, size_t n)
{
    sl_buf errs;
    sl_buf_init(&errs, 0);
    sl_opts *o = sl_opts_from_pairs(sl_step_map.options, pairs, n, &errs);
    if (!o) {
        fail_msg("options rejected: %s", sl_buf_cstr(&errs));
    }
    sl_buf_free(&errs);
    return o;
}

static void open_step(step *s, const char *const *pairs, size_t n)
{
    s->opts = opts_of(pairs, n);
    s->ctx = sl_ctx_new("test", "step", "map", NULL, 0, NULL);
    assert_non_null(s->ctx);
    sl_error err = {0};
    if (sl_step_map.init(&s->self, s->opts, s->ctx, &err) != 0) {
        fail_msg("init failed: %s", err.msg);
    }
}

static void close_step(step *s)
{
    sl_step_map.destroy(s->self);
    sl_ctx_free(s->ctx);
    sl_opts_free(s->opts);
}

static void add(sl_record *r, const char *name, const char *v)
{
    assert_int_equal(sl_record_add_str(r, name, (uint32_t)strlen(name), v, strlen(v)), 0);
}

static void add_json(sl_record *r, const char *name, const char *js)
{
    assert_int_equal(sl_record_add_json(r, name, (uint32_t)strlen(name), js, strlen(js)), 0);
}

static void run(step *s, sl_record *r)
{
    sl_error err = {0};
    int rc = sl_step_map.process(s->self, r, 0, &err);
    if (rc != 0) {
        fail_msg("process returned %d: %s", rc, err.msg);
    }
}

/* The record as JSON, for comparison. */
static const char *json_of(const sl_record *r)
{
    static sl_buf b;
    sl_buf_free(&b);
    sl_buf_init(&b, 0);
    assert_int_equal(sl_record_to_json(r, &b), 0);
    return sl_buf_cstr(&b);
}

/* One expression over one record: the output field as JSON text. */
static void expect_expr(const char *expr, sl_record *in, const char *want)
{
    char pair[512];
    snprintf(pair, sizeof(pair), "fields={out: \"%s\"}", expr);
    const char *pairs[] = {pair};
    step s;
    open_step(&s, pairs, 1);
    sl_record r;
    sl_record_init(&r);
    assert_int_equal(sl_record_copy(&r, in), 0);
    run(&s, &r);
    const char *got = json_of(&r);
    char w[512];
    snprintf(w, sizeof(w), "{\"out\":%s}", want);
    if (strcmp(got, w) != 0) {
        fail_msg("%s: got %s, expected %s", expr, got, w);
    }
    sl_record_free(&r);
    close_step(&s);
}

static void test_functions(void **state)
{
    (void)state;
    sl_record in;
    sl_record_init(&in);
    add(&in, "email", "  Bob.Smith@Example.ORG \t");
    add(&in, "empty", "");
    add(&in, "zip", "2134");
    add(&in, "long_zip", "123456");
    add(&in, "zip_plus", "2134-1");
    add(&in, "phone", "555-123 4567, 555 999");
    add(&in, "accents", "Ézé-é");
    assert_int_equal(sl_record_add_int(&in, "zipn", 4, 501), 0);
    assert_int_equal(sl_record_add_null(&in, "nothing", 7), 0);
    assert_int_equal(sl_record_add_bool(&in, "flag", 4, 1), 0);

    expect_expr("email", &in, "\"  Bob.Smith@Example.ORG \\t\"");
    expect_expr("email | trim", &in, "\"Bob.Smith@Example.ORG\"");
    expect_expr("email | trim | lowercase", &in, "\"bob.smith@example.org\"");
    expect_expr("email|trim|uppercase", &in, "\"BOB.SMITH@EXAMPLE.ORG\"");
    expect_expr("accents | lowercase", &in, "\"Ézé-é\""); /* ASCII letters only */
    expect_expr("accents | uppercase", &in, "\"ÉZé-é\"");
    expect_expr("empty | null_if_empty", &in, "null");
    expect_expr("email | null_if_empty | trim", &in, "\"Bob.Smith@Example.ORG\"");
    expect_expr("zip | zeropad(5)", &in, "\"02134\"");
    expect_expr("zipn | zeropad(5)", &in, "\"00501\""); /* a number becomes text */
    expect_expr("long_zip | zeropad(5)", &in, "\"123456\"");
    expect_expr("zip_plus | zeropad(5)", &in, "\"2134-1\""); /* not all digits: as is */
    expect_expr("nothing | zeropad(5)", &in, "null");
    expect_expr("phone | split(',', 0) | remove('- ')", &in, "\"5551234567\"");
    expect_expr("phone | split(', ', 1)", &in, "\"555 999\"");
    expect_expr("phone | split(',', -1) | trim", &in, "\"555 999\"");
    expect_expr("phone | split(',', 2)", &in, "null");
    expect_expr("phone | split(',', -3)", &in, "null");
    expect_expr("zip | split('x', 0)", &in, "\"2134\"");
    expect_expr("accents | remove('é')", &in, "\"Éz-\""); /* a UTF-8 character, not bytes */
    expect_expr("zipn | remove('0')", &in, "\"51\"");
    expect_expr("flag | remove('t')", &in, "true"); /* booleans have no text to edit */
    expect_expr("flag | trim | uppercase", &in, "true");
    expect_expr("zipn | trim", &in, "501");
    expect_expr("nothing | coalesce(missing, empty)", &in, "\"\"");
    expect_expr("nothing | coalesce(missing, 'x', email)", &in, "\"x\"");
    expect_expr("zip | coalesce(email)", &in, "\"2134\"");
    expect_expr("nothing | coalesce(missing)", &in, "null");
    expect_expr("missing | default('n/a')", &in, "\"n/a\"");
    expect_expr("empty | null_if_empty | default('it''s empty')", &in, "\"it's empty\"");
    expect_expr("zip | default('n/a')", &in, "\"2134\"");
    expect_expr("'lit | not a pipe' | uppercase", &in, "\"LIT | NOT A PIPE\"");
    expect_expr("'' | null_if_empty | default('d')", &in, "\"d\"");
    sl_record_free(&in);
}

/* An empty cell left out by infer (OMIT) stays left out through text
 * functions, and counts as missing for coalesce/default. */
static void test_omitted_values(void **state)
{
    (void)state;
    sl_record in;
    sl_record_init(&in);
    add(&in, "name", "");
    in.fields[0].flags |= SL_FIELD_OMIT;
    add(&in, "alt", "Al");
    const char *pairs[] = {"fields={a: \"name | trim\", b: \"name | coalesce(alt)\", "
                           "c: \"name | default('x')\", d: \"name | null_if_empty\"}"};
    step s;
    open_step(&s, pairs, 1);
    run(&s, &in);
    assert_string_equal(json_of(&in), "{\"b\":\"Al\",\"c\":\"x\",\"d\":null}");
    sl_record_free(&in);
    close_step(&s);
}

static void test_json_paths(void **state)
{
    (void)state;
    sl_record in;
    sl_record_init(&in);
    add(&in, "id", "m1");
    add_json(&in, "merge_fields",
             "{\"FNAME\": \"Ann\\u00e9 \\\"A\\\"\", \"LNAME\":\"Lee\", \"AGE\": 42, "
             "\"SCORE\": 0.10, \"VIP\": true, \"NONE\": null, "
             "\"ADDR\": {\"city\": \"Oslo\", \"lines\": [\"1 Main\", \"Apt 2\"]}, "
             "\"we\\u0069rd\": \"escaped key\", \"EMOJI\": \"\\ud83d\\ude00\"}");
    add(&in, "merge_fields.LNAME", "literal wins");
    add_json(&in, "tags", "[{\"name\":\"a\"},{\"name\":\"b\"}]");
    add(&in, "plain", "{\"x\": 1}"); /* a string, not a JSON value: no path into it */

    expect_expr("merge_fields.FNAME", &in, "\"Ann\xc3\xa9 \\\"A\\\"\"");
    expect_expr("merge_fields.LNAME", &in, "\"literal wins\"");
    expect_expr("merge_fields.AGE", &in, "42");
    expect_expr("merge_fields.SCORE", &in, "0.10"); /* the number as written */
    expect_expr("merge_fields.VIP", &in, "true");
    expect_expr("merge_fields.NONE", &in, "null");
    expect_expr("merge_fields.ABSENT", &in, "null");
    expect_expr("merge_fields.ADDR.city | uppercase", &in, "\"OSLO\"");
    expect_expr("merge_fields.ADDR.lines.1", &in, "\"Apt 2\"");
    expect_expr("merge_fields.ADDR.lines.2", &in, "null");
    expect_expr("merge_fields.ADDR.lines", &in, "[\"1 Main\", \"Apt 2\"]");
    expect_expr("merge_fields.ADDR.city.deeper", &in, "null");
    expect_expr("merge_fields.weird", &in, "\"escaped key\"");
    expect_expr("merge_fields.EMOJI", &in, "\"\xf0\x9f\x98\x80\"");
    expect_expr("merge_fields.AGE | zeropad(4)", &in, "\"0042\"");
    expect_expr("tags.1.name", &in, "\"b\"");
    expect_expr("plain.x", &in, "null");
    expect_expr("nosuch.x | default('d')", &in, "\"d\"");
    sl_record_free(&in);
}

/* The Mailchimp member shape: the example's projection. */
static void test_projection(void **state)
{
    (void)state;
    const char *pairs[] = {
        "fields={id: id, firstname: \"merge_fields.FNAME | trim\", lastname: merge_fields.LNAME, "
        "email: \"email_address | lowercase\", status: status, source: \"'mailchimp'\", "
        "missing: nosuch}"};
    step s;
    open_step(&s, pairs, 1);
    sl_record r;
    sl_record_init(&r);
    for (int round = 0; round < 3; round++) { /* the scratch storage is reused */
        sl_record_reset(&r);
        r.line = 7;
        add(&r, "status", "subscribed");
        add(&r, "email_address", "Ann@X.org");
        add_json(&r, "merge_fields", "{\"FNAME\":\" Ann \",\"LNAME\":\"Lee\"}");
        add(&r, "id", round == 1 ? "b2" : "a1");
        add(&r, "last_changed", "2024-01-01T00:00:00+00:00");
        run(&s, &r);
        assert_int_equal(r.status, SL_REC_OK);
        assert_int_equal(r.line, 7);
        char want[256];
        snprintf(want, sizeof(want),
                 "{\"id\":\"%s\",\"firstname\":\"Ann\",\"lastname\":\"Lee\","
                 "\"email\":\"ann@x.org\",\"status\":\"subscribed\",\"source\":\"mailchimp\","
                 "\"missing\":null}",
                 round == 1 ? "b2" : "a1");
        assert_string_equal(json_of(&r), want);
        assert_int_equal(r.nfields, 7);
        const char *in[] = {"status", "email_address"};
        size_t nout = 0;
        const char *const *out = sl_step_map.output_columns(s.self, in, 2, &nout);
        assert_int_equal(nout, 7); /* a projection: its own fields, in order */
        assert_string_equal(out[0], "id");
        assert_string_equal(out[6], "missing");
        /* constants and values taken out of JSON are typed: infer leaves them */
        assert_true(sl_record_get(&r, "source")->flags & SL_FIELD_FIXED);
        assert_true(sl_record_get(&r, "lastname")->flags & SL_FIELD_FIXED);
        assert_false(sl_record_get(&r, "status")->flags & SL_FIELD_FIXED);
    }
    /* a rejected record keeps its fields for its dead letter */
    sl_record_reset(&r);
    add(&r, "id", "x");
    sl_record_reject(&r, 0, "bad");
    run(&s, &r);
    assert_string_equal(json_of(&r), "{\"id\":\"x\"}");
    sl_record_free(&r);
    close_step(&s);
}

static void test_number_text_survives(void **state)
{
    (void)state;
    const char *pairs[] = {"fields={n: n, m: \"n | trim\"}"};
    step s;
    open_step(&s, pairs, 1);
    sl_record r;
    sl_record_init(&r);
    add(&r, "pad", "xxxxxxxx");
    sl_field *f = sl_record_add(&r, "n", 1);
    f->type = SL_T_FLOAT;
    f->v.f = 1.5;
    f->flags = SL_FIELD_NUMTEXT;
    f->toff = r.fields[0].v.s.off; /* reuse the arena: text "1.50" */
    memcpy(r.data.data + f->toff, "1.50", 4);
    f->tlen = 4;
    run(&s, &r);
    assert_string_equal(json_of(&r), "{\"n\":1.50,\"m\":1.50}");
    sl_record_free(&r);
    close_step(&s);
}

static void test_rename_drop_set(void **state)
{
    (void)state;
    const char *pairs[] = {"rename={a: b, b: a, email_address: email}", "drop=[secret, gone]",
                           "set={is_member: \"True\", c: fixed}"};
    step s;
    open_step(&s, pairs, 3);
    sl_record r;
    sl_record_init(&r);
    add(&r, "a", "1");
    add(&r, "secret", "s");
    add(&r, "b", "2");
    add(&r, "email", "old");
    add(&r, "email_address", "new@x.org");
    add(&r, "c", "3");
    add(&r, "secret", "s2");
    run(&s, &r);
    /* a and b swap; the renamed email wins over the old one; set replaces c in
     * place and appends is_member */
    assert_string_equal(json_of(&r),
                        "{\"b\":\"1\",\"a\":\"2\",\"email\":\"new@x.org\",\"c\":\"fixed\","
                        "\"is_member\":\"True\"}");
    assert_true(sl_record_get(&r, "is_member")->flags & SL_FIELD_FIXED);
    /* and what it tells later steps and the sink about the columns */
    const char *in[] = {"a", "secret", "b", "email", "email_address", "c", "secret"};
    size_t nout = 0;
    const char *const *out = sl_step_map.output_columns(s.self, in, 7, &nout);
    assert_int_equal(nout, 5);
    assert_string_equal(out[0], "b");
    assert_string_equal(out[1], "a");
    assert_string_equal(out[2], "email");
    assert_string_equal(out[3], "c");
    assert_string_equal(out[4], "is_member");
    /* no source field: rename does nothing, the existing name stays */
    sl_record_reset(&r);
    add(&r, "email", "kept");
    run(&s, &r);
    assert_string_equal(json_of(&r), "{\"email\":\"kept\",\"is_member\":\"True\",\"c\":\"fixed\"}");
    sl_record_free(&r);
    close_step(&s);
}

/* ------------------------------------------------------------ bad config */

typedef struct reports {
    char text[4096];
    int n;
} reports;

static void capture(void *ud, const char *option, const char *fmt, ...)
{
    reports *r = ud;
    size_t len = strlen(r->text);
    len += (size_t)snprintf(r->text + len, sizeof(r->text) - len, "%s: ", option);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->text + len, sizeof(r->text) - len, fmt, ap);
    va_end(ap);
    len = strlen(r->text);
    snprintf(r->text + len, sizeof(r->text) - len, "\n");
    r->n++;
}

static int validate(const char *const *pairs, size_t n, reports *r)
{
    memset(r, 0, sizeof(*r));
    sl_opts *o = opts_of(pairs, n);
    int bad = sl_step_map.validate(o, capture, r);
    sl_opts_free(o);
    assert_int_equal(bad, r->n);
    return bad;
}

static void expect_error(const char *expr, const char *want)
{
    char pair[512];
    snprintf(pair, sizeof(pair), "fields={f: \"%s\"}", expr);
    const char *pairs[] = {pair};
    reports r;
    if (validate(pairs, 1, &r) != 1 || !strstr(r.text, want)) {
        fail_msg("%s: expected one problem with '%s', got %d:\n%s", expr, want, r.n, r.text);
    }
}

static void test_bad_expressions(void **state)
{
    (void)state;
    expect_error("email | lowercse",
                 "fields: 'f': column 9 of `email | lowercse`: unknown function 'lowercse' "
                 "(expected one of trim, lowercase, uppercase, null_if_empty, zeropad(N), "
                 "remove('chars'), split('sep', index), coalesce(field, ...), default('text'))");
    expect_error("'abc", "column 1 of `'abc`: unterminated quote (expected a closing ')");
    expect_error("x | default('abc)", "column 13 of `x | default('abc)`: unterminated quote");
    expect_error("x | zeropad", "column 5 of `x | zeropad`: zeropad takes 1 argument, found 0 "
                                "(expected zeropad(N))");
    expect_error("x | zeropad(5, 6)", "column 16 of `x | zeropad(5, 6)`: zeropad takes 1 "
                                      "argument, found more (expected zeropad(N))");
    expect_error("x | zeropad('5')", "zeropad: argument 1 must be a whole number");
    expect_error("x | zeropad(0)", "zeropad: width 0 is out of range (expected 1 to 64)");
    expect_error("x | zeropad(5", "column 12 of `x | zeropad(5`: unclosed '(' (expected ')')");
    expect_error("x | trim('a')", "trim takes 0 arguments, found more (expected trim)");
    expect_error("x | split(',')",
                 "split takes 2 arguments, found 1 (expected split('sep', index))");
    expect_error("x | split(',', 'a')", "split: argument 2 must be a whole number");
    expect_error("x | split('', 0)", "split: argument 1 must not be empty");
    expect_error("x | remove(abc)", "remove: argument 1 must be quoted text (expected "
                                    "remove('chars'))");
    expect_error("x | default(anon)", "column 13 of `x | default(anon)`: default: argument 1 "
                                      "must be quoted text (expected default('text'))");
    expect_error("x | coalesce()", "coalesce takes at least 1 argument, found 0");
    expect_error("x | coalesce(a b, c(d))", "unexpected '(' in the argument");
    expect_error("x |", "column 4 of `x |`: missing function after '|'");
    expect_error("x | | trim", "unexpected '|' (expected a function");
    expect_error("", "column 1 of ``: missing source (expected a field name, a.path or 'text')");
    expect_error("lowercase(email)", "column 10 of `lowercase(email)`: '(' in the field name "
                                     "(functions follow the source: `field | fn`)");
    expect_error("'a' 'b'", "column 5 of `'a' 'b'`: unexpected ''' (expected '|' and a function)");
    expect_error("a..b", "'a..b' is not a field name or path");
    expect_error("x | trim lowercase", "unexpected 'l' (expected '|' and a function)");
}

static void test_every_problem_reported(void **state)
{
    (void)state;
    const char *pairs[] = {"fields={a: \"x | nope\", b: ok, c: \"'open\"}", "drop=[z]",
                           "set={k: v}"};
    reports r;
    assert_int_equal(validate(pairs, 3, &r), 4);
    assert_non_null(strstr(r.text, "'a': column 5 of `x | nope`: unknown function 'nope'"));
    assert_non_null(strstr(r.text, "'c': column 1 of `'open`: unterminated quote"));
    assert_non_null(strstr(r.text, "drop: cannot be combined with fields"));
    assert_non_null(strstr(r.text, "set: cannot be combined with fields"));

    const char *renames[] = {"rename={a: x, b: x}", "drop=[k]", "set={k: 1}"};
    assert_int_equal(validate(renames, 3, &r), 2);
    assert_non_null(strstr(r.text, "'a' and 'b' are both renamed to 'x'"));
    assert_non_null(strstr(r.text, "set: 'k' is also dropped"));

    const char *nothing[] = {"fields={}"};
    assert_int_equal(validate(nothing, 1, &r), 1);
    assert_non_null(strstr(r.text, "map does nothing"));

    const char *good[] = {"fields={a: \"x | trim | coalesce(y, 'z') | split('|', -1)\"}"};
    assert_int_equal(validate(good, 1, &r), 0);

    /* init refuses the same, naming every problem */
    sl_opts *o = opts_of(pairs, 3);
    void *self = NULL;
    sl_error err = {0};
    assert_int_equal(sl_step_map.init(&self, o, NULL, &err), SL_ERR_CONFIG);
    assert_null(self);
    assert_non_null(strstr(err.msg, "unknown function 'nope'"));
    assert_non_null(strstr(err.msg, "unterminated quote"));
    assert_non_null(strstr(err.msg, "set: cannot be combined"));
    sl_opts_free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_functions),
        cmocka_unit_test(test_omitted_values),
        cmocka_unit_test(test_json_paths),
        cmocka_unit_test(test_projection),
        cmocka_unit_test(test_number_text_survives),
        cmocka_unit_test(test_rename_drop_set),
        cmocka_unit_test(test_bad_expressions),
        cmocka_unit_test(test_every_problem_reported),
    };
    sl_log_level = SL_LOG_ERROR;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
