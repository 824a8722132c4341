/* Config module: YAML tree, interpolation, parse helpers, option validation
 * and accessors, and sl_config_load end to end (with the real registry). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "core/registry.h"
#include "sluice/log.h"

/* ------------------------------------------------------------- helpers */

static sl_node *parse(const char *text, sl_buf *errors)
{
    return sl_yaml_parse(text, strlen(text), "t.yml", errors);
}

static const sl_node *get(const sl_node *map, const char *key)
{
    for (size_t i = 0; map && map->kind == SL_NODE_MAP && i < map->n; i++) {
        if (strcmp(map->keys[i], key) == 0) {
            return map->kids[i];
        }
    }
    return NULL;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++) {
        n += *s == '\n';
    }
    return n;
}

#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        if (!strstr((hay), (needle))) {                                                            \
            fail_msg("expected to find [%s] in [%s]", (needle), (hay));                            \
        }                                                                                          \
    } while (0)
#define assert_not_contains(hay, needle)                                                           \
    do {                                                                                           \
        if (strstr((hay), (needle))) {                                                             \
            fail_msg("did not expect [%s] in [%s]", (needle), (hay));                              \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------- YAML */

static void test_yaml_positions(void **state)
{
    (void)state;
    sl_buf e = {0};
    const char *text = "# comment\n"
                       "top:\n"
                       "  name: hello\n"
                       "  list:\n"
                       "    - a\n"
                       "    - {k: v}\n"
                       "flow: [1, 2]\n";
    sl_node *root = parse(text, &e);
    assert_non_null(root);
    assert_int_equal(e.len, 0);
    assert_int_equal(root->kind, SL_NODE_MAP);
    assert_int_equal(root->n, 2);
    assert_string_equal(root->keys[0], "top");
    assert_int_equal(root->key_line[0], 2);
    assert_int_equal(root->key_col[0], 1);
    assert_string_equal(root->keys[1], "flow");
    assert_int_equal(root->key_line[1], 7);

    const sl_node *top = get(root, "top");
    assert_int_equal(top->kind, SL_NODE_MAP);
    assert_int_equal(top->key_line[0], 3);
    assert_int_equal(top->key_col[0], 3);
    const sl_node *name = get(top, "name");
    assert_string_equal(name->value, "hello");
    assert_int_equal(name->line, 3);
    assert_int_equal(name->col, 9);

    const sl_node *list = get(top, "list");
    assert_int_equal(list->kind, SL_NODE_SEQ);
    assert_int_equal(list->n, 2);
    assert_int_equal(list->kids[0]->line, 5);
    assert_int_equal(list->kids[0]->col, 7);
    assert_int_equal(list->kids[1]->kind, SL_NODE_MAP);
    assert_int_equal(list->kids[1]->key_line[0], 6);
    assert_int_equal(list->kids[1]->key_col[0], 8);
    assert_string_equal(get(list->kids[1], "k")->value, "v");

    const sl_node *flow = get(root, "flow");
    assert_int_equal(flow->n, 2);
    assert_string_equal(flow->kids[1]->value, "2");
    assert_int_equal(flow->kids[1]->col, 11);
    sl_node_free(root);
    sl_buf_free(&e);
}

static void test_yaml_duplicate_keys(void **state)
{
    (void)state;
    sl_buf e = {0};
    sl_node *root = parse("a:\n"
                          "  x: 1\n"
                          "  y: 2\n"
                          "  x: 3\n"
                          "b: 1\n"
                          "b: 2\n",
                          &e);
    assert_null(root);
    const char *s = sl_buf_cstr(&e);
    assert_contains(s, "t.yml:4:3: a.x: duplicate key, first defined at line 2");
    assert_contains(s, "t.yml:6:1: b: duplicate key, first defined at line 5");
    assert_int_equal(count_lines(s), 2);
    sl_buf_free(&e);
}

static void test_yaml_syntax_error(void **state)
{
    (void)state;
    sl_buf e = {0};
    sl_node *root = parse("a: 1\n"
                          "b: [1, 2\n"
                          "c: 3\n",
                          &e);
    assert_null(root);
    const char *s = sl_buf_cstr(&e);
    assert_contains(s, "t.yml:3:2: YAML syntax error: ");
    assert_contains(s, "(while parsing a flow sequence)");
    sl_buf_reset(&e);

    root = parse("a: 1\n  b: 2\n", &e);
    assert_null(root);
    assert_contains(sl_buf_cstr(&e),
                    "t.yml:2:4: YAML syntax error: mapping values are not allowed");
    sl_buf_reset(&e);

    root = parse("a:\n\t- x\n", &e);
    assert_null(root);
    assert_contains(sl_buf_cstr(&e), "t.yml:2:1: YAML syntax error: ");
    assert_contains(sl_buf_cstr(&e), "; indent with spaces, not tabs\n");
    sl_buf_reset(&e);

    /* invalid UTF-8 is reported with its position too */
    root = parse("a: 1\nb: \xff\n", &e);
    assert_null(root);
    assert_contains(sl_buf_cstr(&e), "t.yml:2:4: YAML syntax error: ");
    sl_buf_free(&e);
}

static void test_yaml_empty_and_multi(void **state)
{
    (void)state;
    sl_buf e = {0};
    assert_null(parse("", &e));
    assert_string_equal(sl_buf_cstr(&e),
                        "t.yml: empty configuration (expected a mapping with `pipelines:`)\n");
    sl_buf_reset(&e);
    assert_null(parse("# only a comment\n\n", &e));
    assert_contains(sl_buf_cstr(&e), "t.yml: empty configuration");
    sl_buf_reset(&e);
    assert_null(parse("a: 1\n---\nb: 2\n", &e));
    assert_contains(sl_buf_cstr(&e), "t.yml:2:1: second YAML document");
    sl_buf_free(&e);
}

static void test_yaml_alias_merge(void **state)
{
    (void)state;
    sl_buf e = {0};
    sl_node *root = parse("base: &b\n"
                          "  x: 1\n"
                          "  y: 2\n"
                          "c:\n"
                          "  <<: *b\n"
                          "  y: 3\n"
                          "d: *b\n",
                          &e);
    assert_non_null(root);
    const sl_node *c = get(root, "c");
    assert_int_equal(c->n, 2);
    assert_string_equal(get(c, "x")->value, "1");
    assert_string_equal(get(c, "y")->value, "3"); /* explicit key wins */
    assert_int_equal(get(c, "x")->line, 2);       /* position of the anchored text */
    const sl_node *d = get(root, "d");
    assert_int_equal(d->kind, SL_NODE_MAP);
    assert_string_equal(get(d, "y")->value, "2");
    /* copies, not shared nodes: freeing must not double free (ASan checks) */
    assert_ptr_not_equal(get(d, "x"), get(get(root, "base"), "x"));
    sl_node_free(root);

    /* exponential alias expansion is refused, not allocated */
    root = parse("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                 "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                 "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                 "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                 "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                 "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
                 &e);
    assert_null(root);
    assert_contains(sl_buf_cstr(&e), "document too large after expanding aliases");
    assert_int_equal(count_lines(sl_buf_cstr(&e)), 1);
    sl_buf_reset(&e);

    root = parse("a: *nope\n", &e);
    assert_null(root);
    assert_contains(sl_buf_cstr(&e), "t.yml:1:4: YAML syntax error: found undefined alias");
    sl_buf_free(&e);
}

/* ------------------------------------------------------------- interpolation */

static void test_interpolate(void **state)
{
    (void)state;
    setenv("SLT_A", "alpha", 1);
    setenv("SLT_EMPTY", "", 1);
    unsetenv("SLT_UNSET");
    char err[256];
    struct {
        const char *in, *out;
    } ok[] = {
        {"plain", "plain"},
        {"${SLT_A}", "alpha"},
        {"x-${SLT_A}-y", "x-alpha-y"},
        {"${SLT_UNSET:-def}", "def"},
        {"${SLT_EMPTY:-def}", "def"},
        {"${SLT_EMPTY-def}", ""},
        {"${SLT_UNSET-def}", "def"},
        {"${SLT_A:-def}", "alpha"},
        {"${SLT_EMPTY}", ""},
        {"$$", "$"},
        {"$${SLT_A}", "${SLT_A}"},
        {"costs $5", "costs $5"},
        {"${SLT_UNSET:-${SLT_A}}", "alpha"},
        {"${SLT_A:-${SLT_UNSET}}", "alpha"}, /* unused default: no error */
        {"${SLT_UNSET:-}", ""},
        {"${SLT_UNSET:-a}${SLT_A}", "aalpha"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char *v = sl_interpolate(ok[i].in, err, sizeof(err));
        if (!v) {
            fail_msg("%s: %s", ok[i].in, err);
        }
        assert_string_equal(v, ok[i].out);
        free(v);
    }

    setenv("SLT_SECRETISH", "hunter2hunter2", 1);
    char *v = sl_interpolate("a${SLT_SECRETISH}${SLT_UNSET}", err, sizeof(err));
    assert_null(v);
    assert_string_equal(err, "environment variable SLT_UNSET is not set");

    const char *bad[] = {"${SLT_A", "${}", "${1X}", "${SLT_A:-x", "${SLT_A:x}", "${SLT A}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        v = sl_interpolate(bad[i], err, sizeof(err));
        if (v) {
            fail_msg("%s was accepted as '%s'", bad[i], v);
        }
        assert_true(strstr(err, "expected ${NAME}") != NULL);
        assert_not_contains(err, "alpha");
    }
}

/* ------------------------------------------------------------- parse helpers */

static void test_parse_duration(void **state)
{
    (void)state;
    struct {
        const char *s;
        int64_t ms;
    } ok[] = {{"250ms", 250},   {"3s", 3000}, {"90m", 5400000}, {"6h", 21600000},
              {"1d", 86400000}, {"5", 5000},  {"1.5", 1500},    {"0", 0},
              {"1.5s", 1500},   {"2MS", 2},   {"10 s", 10000},  {"2min", 120000}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t v = -1;
        if (sl_parse_duration_ms(ok[i].s, &v) != 0) {
            fail_msg("'%s' rejected", ok[i].s);
        }
        assert_int_equal(v, ok[i].ms);
    }
    const char *bad[] = {"", "s", "-1s", "3x", "1e3", "abc", "3s5", "1.2.3s", "99999999999d"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v;
        if (sl_parse_duration_ms(bad[i], &v) == 0) {
            fail_msg("'%s' accepted", bad[i]);
        }
    }
}

static void test_parse_size(void **state)
{
    (void)state;
    struct {
        const char *s;
        int64_t b;
    } ok[] = {{"512", 512},
              {"64KB", 65536},
              {"64K", 65536},
              {"64KiB", 65536},
              {"64kb", 65536},
              {"4MB", 4194304},
              {"1GB", 1073741824},
              {"1gib", 1073741824},
              {"1.5KB", 1536},
              {"10B", 10},
              {"0", 0},
              {"2 MB", 2097152}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t v = -1;
        if (sl_parse_size(ok[i].s, &v) != 0) {
            fail_msg("'%s' rejected", ok[i].s);
        }
        assert_int_equal(v, ok[i].b);
    }
    const char *bad[] = {"", "KB", "-1", "1XB", "1e3", "12 34", "9999999999TB"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v;
        if (sl_parse_size(bad[i], &v) == 0) {
            fail_msg("'%s' accepted", bad[i]);
        }
    }
}

static void test_parse_bool(void **state)
{
    (void)state;
    const char *yes[] = {"true", "TRUE", "yes", "Yes", "on", "1"};
    const char *no[] = {"false", "False", "no", "NO", "off", "0"};
    for (size_t i = 0; i < 6; i++) {
        int b = -1;
        assert_int_equal(sl_parse_bool(yes[i], &b), 0);
        assert_int_equal(b, 1);
        assert_int_equal(sl_parse_bool(no[i], &b), 0);
        assert_int_equal(b, 0);
    }
    const char *bad[] = {"", "y", "2", "truee", "nope"};
    for (size_t i = 0; i < 5; i++) {
        int b;
        assert_int_equal(sl_parse_bool(bad[i], &b), -1);
    }
}

static void test_parse_rate(void **state)
{
    (void)state;
    struct {
        const char *s;
        double per_sec, burst;
    } ok[] = {
        {"3000/3s", 1000, 3000}, {"10/s", 10, 10}, {"90/m", 1.5, 90},   {"5/1m", 5.0 / 60, 5},
        {"20", 20, 20},          {"0.5", 0.5, 1},  {"100/2", 50, 100},  {"10 / s", 10, 10},
        {"7200/h", 2, 7200},     {"0", 0, 0},      {"unlimited", 0, 0}, {"50/500ms", 100, 50}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        double r = -1, b = -1;
        if (sl_parse_rate(ok[i].s, &r, &b) != 0) {
            fail_msg("'%s' rejected", ok[i].s);
        }
        assert_float_equal(r, ok[i].per_sec, 1e-9);
        assert_float_equal(b, ok[i].burst, 1e-9);
    }
    const char *bad[] = {"", "/s", "10/", "10/0s", "10/x", "-5/s", "ten/s", "0/s", "5/s/s"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        double r, b;
        if (sl_parse_rate(bad[i], &r, &b) == 0) {
            fail_msg("'%s' accepted", bad[i]);
        }
    }
}

/* ------------------------------------------------------------- options */

static const sl_option test_table[] = {
    {"api_key", SL_OPT_STRING, NULL, SL_OPT_REQUIRED | SL_OPT_SECRET, NULL, "key"},
    {"url", SL_OPT_STRING, "https://example.test", 0, NULL, "endpoint"},
    {"count", SL_OPT_INT, "7", 0, NULL, "n"},
    {"ratio", SL_OPT_FLOAT, NULL, 0, NULL, "r"},
    {"flag", SL_OPT_BOOL, "off", 0, NULL, "f"},
    {"wait", SL_OPT_DURATION, "2s", 0, NULL, "w"},
    {"max_body", SL_OPT_SIZE, "4MB", 0, NULL, "m"},
    {"mode", SL_OPT_ENUM, "append", 0, "append|replace|upsert", "m"},
    {"columns", SL_OPT_LIST, NULL, 0, NULL, "c"},
    {"types", SL_OPT_MAP, NULL, 0, "string|integer|float|boolean", "t"},
    {"headers", SL_OPT_MAP, NULL, 0, NULL, "h"},
    {"tags", SL_OPT_LIST, "[x, y]", 0, NULL, "t"},
    SL_OPTIONS_END,
};
static const char *const ignore_type[] = {"type", NULL};

static sl_opts *opts_from_text(const char *text, sl_buf *errors)
{
    sl_buf perr = {0};
    sl_node *root = parse(text, &perr);
    assert_non_null(root);
    sl_buf_free(&perr);
    sl_opts *o =
        sl_opts_from_node(test_table, root, "t.yml", "pipelines.p.sink", ignore_type, errors);
    sl_node_free(root);
    return o;
}

static void test_opts_values_and_defaults(void **state)
{
    (void)state;
    sl_buf e = {0};
    sl_opts *o = opts_from_text("type: x\n"
                                "api_key: k-123456\n"
                                "count: 42\n"
                                "ratio: 0.25\n"
                                "wait: 250ms\n"
                                "columns: email\n"
                                "types: {zip: string, age: integer}\n"
                                "headers:\n"
                                "  X-A: one\n",
                                &e);
    if (!o) {
        fail_msg("%s", sl_buf_cstr(&e));
    }
    assert_string_equal(sl_opt_str(o, "api_key"), "k-123456");
    assert_int_equal(sl_opt_int(o, "count"), 42);
    assert_true(sl_opt_isset(o, "count"));
    assert_float_equal(sl_opt_float(o, "ratio"), 0.25, 1e-12);
    assert_int_equal(sl_opt_duration_ms(o, "wait"), 250);
    /* defaults, parsed like config values */
    assert_false(sl_opt_isset(o, "url"));
    assert_string_equal(sl_opt_str(o, "url"), "https://example.test");
    assert_int_equal(sl_opt_bool(o, "flag"), 0);
    assert_int_equal(sl_opt_size(o, "max_body"), 4 * 1024 * 1024);
    assert_string_equal(sl_opt_str(o, "mode"), "append");
    assert_int_equal(sl_opt_count(o, "tags"), 2);
    assert_string_equal(sl_opt_item(o, "tags", 1), "y");
    /* a scalar is a list of one */
    assert_int_equal(sl_opt_count(o, "columns"), 1);
    assert_string_equal(sl_opt_item(o, "columns", 0), "email");
    assert_null(sl_opt_item(o, "columns", 1));
    assert_int_equal(sl_opt_count(o, "types"), 2);
    assert_string_equal(sl_opt_key(o, "types", 1), "age");
    assert_string_equal(sl_opt_item(o, "types", 1), "integer");
    assert_string_equal(sl_opt_key(o, "headers", 0), "X-A");
    assert_int_equal(sl_opt_count(o, "headers"), 1);
    /* positions */
    assert_string_equal(sl_opt_where(o, "count"), "t.yml:3:8");
    assert_string_equal(sl_opt_where(o, "url"), "t.yml:1:1"); /* unset: the block */
    sl_opts_free(o);
    sl_opts_free(NULL);
    sl_buf_free(&e);
}

static void test_opts_errors(void **state)
{
    (void)state;
    sl_buf e = {0};
    sl_opts *o = opts_from_text("type: x\n"
                                "api_kye: abc\n"
                                "count: many\n"
                                "mode: upsrt\n"
                                "columns: {a: b}\n"
                                "types: {zip: text}\n"
                                "wait: 3 fortnights\n"
                                "flag: maybe\n"
                                "bogus: 1\n",
                                &e);
    assert_null(o);
    const char *s = sl_buf_cstr(&e);
    assert_contains(s, "t.yml:2:1: pipelines.p.sink.api_kye: unknown key, did you mean "
                       "'api_key'? (expected one of: type, api_key, url, count,");
    assert_contains(s, "t.yml:3:8: pipelines.p.sink.count: invalid integer 'many' "
                       "(expected an integer)\n");
    assert_contains(s, "t.yml:4:7: pipelines.p.sink.mode: invalid choice 'upsrt' "
                       "(expected one of: append, replace, upsert)\n");
    assert_contains(s, "t.yml:5:10: pipelines.p.sink.columns: found a mapping "
                       "(expected a list of values, or one value)\n");
    assert_contains(s, "t.yml:6:14: pipelines.p.sink.types.zip: invalid value 'text' "
                       "(expected a mapping of name: value, values one of: string, integer, "
                       "float, boolean)\n");
    assert_contains(s, "t.yml:7:7: pipelines.p.sink.wait: invalid duration '3 fortnights'");
    assert_contains(s, "t.yml:8:7: pipelines.p.sink.flag: invalid boolean 'maybe' "
                       "(expected true or false)\n");
    assert_contains(s, "t.yml:9:1: pipelines.p.sink.bogus: unknown key (expected one of:");
    assert_contains(s, "t.yml:1:1: pipelines.p.sink: missing required key 'api_key' "
                       "(expected a string)\n");
    assert_int_equal(count_lines(s), 9);
    sl_buf_free(&e);
}

static void test_opts_secret(void **state)
{
    (void)state;
    sl_secrets_clear();
    sl_buf e = {0};
    sl_opts *o = opts_from_text("api_key: s3cr3t-value-xyz\n", &e);
    assert_non_null(o);
    char line[128] = "sending with s3cr3t-value-xyz now";
    sl_redact(line, sizeof(line));
    assert_string_equal(line, "sending with [redacted] now");
    sl_opts_free(o);

    /* a secret with a bad value is called invalid, never echoed */
    static const sl_option secret_int[] = {
        {"pin", SL_OPT_INT, NULL, SL_OPT_SECRET, NULL, "p"},
        SL_OPTIONS_END,
    };
    sl_buf perr = {0};
    sl_node *root = parse("pin: abcd-9876\n", &perr);
    o = sl_opts_from_node(secret_int, root, "t.yml", "x", NULL, &e);
    assert_null(o);
    assert_string_equal(sl_buf_cstr(&e), "t.yml:1:6: x.pin: invalid value (expected an integer)\n");
    sl_node_free(root);
    sl_buf_reset(&e);

    /* empty required secret (e.g. ${KEY:-} with KEY unset) */
    o = opts_from_text("api_key: ''\n", &e);
    assert_null(o);
    assert_contains(sl_buf_cstr(&e), "pipelines.p.sink.api_key: empty value for a required option");
    sl_buf_free(&perr);
    sl_buf_free(&e);
    sl_secrets_clear();
}

static void test_opts_pairs(void **state)
{
    (void)state;
    sl_buf e = {0};
    const char *pairs[] = {"api_key=abcdef", "count=3", "columns=[a, b, c]", "count=4",
                           "types={zip: string}"};
    sl_opts *o = sl_opts_from_pairs(test_table, pairs, 5, &e);
    if (!o) {
        fail_msg("%s", sl_buf_cstr(&e));
    }
    assert_int_equal(sl_opt_int(o, "count"), 4); /* the last one wins */
    assert_int_equal(sl_opt_count(o, "columns"), 3);
    assert_string_equal(sl_opt_item(o, "columns", 2), "c");
    assert_string_equal(sl_opt_item(o, "types", 0), "string");
    assert_string_equal(sl_opt_where(o, "count"), "option count");
    sl_opts_free(o);

    const char *bad[] = {"count=x", "nokey", "colums=a"};
    o = sl_opts_from_pairs(test_table, bad, 3, &e);
    assert_null(o);
    assert_contains(sl_buf_cstr(&e), "option 'nokey' is not name=value");
    sl_buf_reset(&e);
    o = sl_opts_from_pairs(test_table, bad, 1, &e);
    assert_null(o);
    assert_contains(sl_buf_cstr(&e), "count: invalid integer 'x' (expected an integer)\n");
    assert_contains(sl_buf_cstr(&e), "missing required key 'api_key'");
    sl_buf_free(&e);
}

static void test_opts_bad_default(void **state)
{
    (void)state;
    static const sl_option bad_def[] = {
        {"wait", SL_OPT_DURATION, "soon", 0, NULL, "w"},
        SL_OPTIONS_END,
    };
    sl_buf e = {0};
    sl_opts *o = sl_opts_from_pairs(bad_def, NULL, 0, &e);
    assert_null(o);
    assert_contains(sl_buf_cstr(&e), "wait: invalid default 'soon' in the plugin's option table");
    sl_buf_free(&e);
}

/* Run fn in a child; it must die of SIGABRT. */
static void expect_abort(void (*fn)(const sl_opts *), const sl_opts *o)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* keep the deliberate crash report out of the test log */
        if (!freopen("/dev/null", "w", stderr)) {
            _exit(3);
        }
        fn(o);
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) != 0));
    if (WIFSIGNALED(st)) {
        assert_int_equal(WTERMSIG(st), SIGABRT);
    }
}

static void ask_unknown(const sl_opts *o)
{
    sl_opt_str(o, "no_such_option");
}

static void ask_wrong_type(const sl_opts *o)
{
    sl_opt_duration_ms(o, "mode");
}

static void test_opts_accessor_bugs_abort(void **state)
{
    (void)state;
    sl_buf e = {0};
    sl_opts *o = opts_from_text("api_key: abcdef\n", &e);
    assert_non_null(o);
    expect_abort(ask_unknown, o);
    expect_abort(ask_wrong_type, o);
    sl_opts_free(o);
    sl_buf_free(&e);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Hostile sizes are refused before libyaml builds a document: 100,000 flow
 * brackets took 19 s (libyaml's scanner is quadratic in flow nesting) and an
 * 11 MB file peaked at 307 MB. */
static void test_yaml_limits(void **state)
{
    (void)state;
    size_t n = 100000;
    char *deep = malloc(n + 1);
    assert_non_null(deep);
    memset(deep, '[', n);
    deep[n] = '\0';
    sl_buf errors;
    sl_buf_init(&errors, 0);
    double t0 = now_s();
    assert_null(sl_yaml_parse(deep, n, "deep.yml", &errors));
    double took = now_s() - t0;
    assert_string_equal(sl_buf_cstr(&errors), "deep.yml:1:65: nested too deeply (expected at most "
                                              "64 levels of mappings and sequences)\n");
    /* generous even under sanitizers: the depth check stops at level 65 */
    assert_true(took < 2.0);
    free(deep);

    /* block nesting too, with the line of the offending key */
    sl_buf_reset(&errors);
    sl_buf y;
    sl_buf_init(&y, 0);
    for (int i = 0; i < 70; i++) {
        sl_buf_printf(&y, "%*sk%d:\n", i, "", i);
    }
    sl_buf_printf(&y, "%*sleaf: 1\n", 70, "");
    assert_null(sl_yaml_parse(sl_buf_cstr(&y), y.len, "block.yml", &errors));
    assert_non_null(strstr(sl_buf_cstr(&errors), "block.yml:65:65: nested too deeply"));
    assert_non_null(strstr(sl_buf_cstr(&errors), "nested too deeply"));
    sl_buf_free(&y);

    /* 64 levels are fine */
    sl_buf_reset(&errors);
    char ok[200];
    memset(ok, '[', 63);
    memset(ok + 63, ']', 63);
    ok[126] = '\0';
    sl_node *root = sl_yaml_parse(ok, strlen(ok), "ok.yml", &errors);
    assert_non_null(root);
    sl_node_free(root);

    /* size */
    size_t big = 2 * 1024 * 1024;
    char *text = malloc(big);
    assert_non_null(text);
    for (size_t i = 0; i < big; i += 16) {
        memcpy(text + i, "# padding ......\n", 16);
    }
    sl_buf_reset(&errors);
    assert_null(sl_yaml_parse(text, big, "big.yml", &errors));
    assert_string_equal(sl_buf_cstr(&errors),
                        "big.yml: configuration is 2097152 bytes (expected at most 1048576: 1 MB; "
                        "is this the right file?)\n");
    free(text);
    sl_buf_free(&errors);
}

/* ------------------------------------------------------------- sl_config_load */

static char tmpdir[64];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sluice-config-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *write_config(const char *name, const char *text)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* YAML lines "<indent>name: value" giving a valid value to every required
 * option of a plugin table, whatever the plugin authors put in it. */
static void required_options(sl_buf *y, const sl_option *t, const char *indent)
{
    for (size_t i = 0; t && t[i].name; i++) {
        if (!(t[i].flags & SL_OPT_REQUIRED)) {
            continue;
        }
        char first[64] = "x";
        if (t[i].choices) {
            snprintf(first, sizeof(first), "%.*s", (int)strcspn(t[i].choices, "|"), t[i].choices);
        }
        const char *v = "value-1234567890ab";
        char buf[96];
        switch (t[i].type) {
        case SL_OPT_INT:
            v = "1";
            break;
        case SL_OPT_FLOAT:
            v = "1.5";
            break;
        case SL_OPT_BOOL:
            v = "true";
            break;
        case SL_OPT_DURATION:
            v = "1s";
            break;
        case SL_OPT_SIZE:
            v = "1KB";
            break;
        case SL_OPT_ENUM:
            v = first;
            break;
        case SL_OPT_LIST:
            v = "[a]";
            break;
        case SL_OPT_MAP:
            snprintf(buf, sizeof(buf), "{a: %s}", t[i].choices ? first : "b");
            v = buf;
            break;
        default:
            if (strstr(t[i].name, "url")) {
                v = "http://127.0.0.1:9/x";
            }
            break;
        }
        sl_buf_printf(y, "%s%s: %s\n", indent, t[i].name, v);
    }
}

static void sink_list(char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; sl_sinks[i]; i++) {
        o += (size_t)snprintf(out + o, cap - o, "%s%s", o ? ", " : "", sl_sinks[i]->name);
    }
}

/* A valid two-pipeline config built from the real plugins' tables. */
static void valid_config(sl_buf *y)
{
    const sl_source_plugin *csv = sl_find_source("csv");
    const sl_sink_plugin *http = sl_find_sink("http");
    const sl_step_plugin *infer = sl_find_step("infer");
    assert_non_null(csv);
    assert_non_null(http);
    assert_non_null(infer);
    sl_buf_puts(y, "version: 1\n"
                   "state: ${SLT_STATE:-/tmp/x/state.db}\n"
                   "pipelines:\n"
                   "  first:\n"
                   "    description: test\n"
                   "    source:\n"
                   "      type: csv\n");
    required_options(y, csv->options, "      ");
    sl_buf_puts(y, "    steps:\n"
                   "      - type: infer\n");
    required_options(y, infer->options, "        ");
    sl_buf_puts(y, "    sink:\n"
                   "      type: http\n");
    required_options(y, http->options, "      ");
    sl_buf_puts(y, "    concurrency: 3\n"
                   "    rate_limit: 3000/3s\n"
                   "    batch: {records: 50, bytes: 1MB}\n"
                   "    retry:\n"
                   "      max_attempts: 5\n"
                   "      backoff: 1s\n"
                   "    schedule: every 90m\n"
                   "    notify:\n"
                   "      - url: https://hooks.slack.com/services/T0/B0/${SLT_HOOK}\n"
                   "        on: failure\n"
                   "      - url: http://127.0.0.1:9/notify\n"
                   "        format: slack\n"
                   "  second:\n"
                   "    source:\n"
                   "      type: csv\n");
    required_options(y, csv->options, "      ");
    sl_buf_puts(y, "    sink:\n"
                   "      type: http\n");
    required_options(y, http->options, "      ");
    sl_buf_puts(y, "    notify: {url: 'https://example.test/${SLT_ONLY_SECOND}'}\n");
}

static void test_config_load_valid(void **state)
{
    (void)state;
    sl_buf y = {0}, e = {0};
    valid_config(&y);
    setenv("SLT_HOOK", "XXXXsecrethookpart", 1);
    setenv("SLT_ONLY_SECOND", "abc", 1);
    unsetenv("SLT_STATE");
    const char *path = write_config("valid.yml", sl_buf_cstr(&y));
    sl_config *c = sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e);
    if (!c) {
        fail_msg("%s\n---\n%s", sl_buf_cstr(&e), sl_buf_cstr(&y));
    }
    assert_string_equal(c->state_url, "/tmp/x/state.db");
    assert_int_equal(c->npipelines, 2);
    sl_pipeline_cfg *p = sl_config_pipeline(c, "first");
    assert_non_null(p);
    assert_string_equal(p->name, "first");
    assert_ptr_equal(p->source_plugin, sl_find_source("csv"));
    assert_ptr_equal(p->sink_plugin, sl_find_sink("http"));
    assert_int_equal(p->nsteps, 1);
    assert_ptr_equal(p->step_plugins[0], sl_find_step("infer"));
    assert_string_equal(p->steps[0].type, "infer");
    assert_non_null(p->sink.opts);
    assert_int_equal(p->concurrency, 3);
    assert_float_equal(p->rate_per_sec, 1000, 1e-9);
    assert_float_equal(p->rate_burst, 3000, 1e-9);
    assert_int_equal(p->batch_records, 50);
    assert_int_equal(p->batch_bytes, 1024 * 1024);
    assert_int_equal(p->max_attempts, 5);
    assert_int_equal(p->backoff_base_ms, 1000);
    assert_int_equal(p->backoff_max_ms, 60000);
    assert_int_equal(p->timeout_ms, 120000);
    assert_string_equal(p->schedule, "every 90m");
    assert_int_equal(p->nnotify, 2);
    assert_string_equal(p->notify[0].url,
                        "https://hooks.slack.com/services/T0/B0/XXXXsecrethookpart");
    assert_int_equal(p->notify[0].format, SL_NOTIFY_SLACK);
    assert_int_equal(p->notify[0].on_success, 0);
    assert_int_equal(p->notify[0].on_failure, 1);
    assert_int_equal(p->notify[1].format, SL_NOTIFY_SLACK); /* explicit */
    assert_int_equal(p->notify[1].on_success, 1);
    assert_int_equal(p->notify[1].on_failure, 1);
    assert_string_equal(p->where + strlen(p->where) - 4, ":4:3");

    /* the notify URL is a secret */
    char line[160];
    snprintf(line, sizeof(line), "posting to %s", p->notify[0].url);
    sl_redact(line, sizeof(line));
    assert_string_equal(line, "posting to [redacted]");

    p = sl_config_pipeline(c, "second");
    assert_non_null(p);
    assert_int_equal(p->concurrency, -1);
    assert_float_equal(p->rate_per_sec, -1, 0);
    assert_int_equal(p->batch_records, -1);
    assert_int_equal(p->batch_bytes, -1);
    assert_int_equal(p->max_attempts, 8);
    assert_int_equal(p->backoff_base_ms, 500);
    assert_null(p->schedule);
    assert_int_equal(p->nsteps, 0);
    assert_int_equal(p->nnotify, 1);
    assert_int_equal(p->notify[0].format, SL_NOTIFY_JSON);
    assert_null(sl_config_pipeline(c, "third"));
    sl_config_free(c);
    sl_config_free(NULL);

    /* `only` limits the environment needed: first does not use SLT_ONLY_SECOND */
    unsetenv("SLT_ONLY_SECOND");
    const char *only[] = {"first"};
    c = sl_config_load(&sl_builtin_plugins, path, only, 1, &e);
    if (!c) {
        fail_msg("%s", sl_buf_cstr(&e));
    }
    assert_int_equal(c->npipelines, 1);
    assert_string_equal(c->pipelines[0].name, "first");
    sl_config_free(c);

    c = sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e);
    assert_null(c);
    assert_contains(sl_buf_cstr(&e), ": pipelines.second.notify.url: environment variable "
                                     "SLT_ONLY_SECOND is not set\n");
    assert_int_equal(count_lines(sl_buf_cstr(&e)), 1);
    sl_buf_reset(&e);

    const char *missing[] = {"frist"};
    c = sl_config_load(&sl_builtin_plugins, path, missing, 1, &e);
    assert_null(c);
    snprintf(line, sizeof(line),
             "%s: pipeline 'frist' not found, did you mean 'first'? "
             "(expected one of: first, second)\n",
             path);
    assert_string_equal(sl_buf_cstr(&e), line);

    sl_buf_free(&y);
    sl_buf_free(&e);
    sl_secrets_clear();
}

static void test_config_load_errors(void **state)
{
    (void)state;
    char sinks[256], want[512];
    sink_list(sinks, sizeof(sinks));
    sl_buf e = {0};
    const char *path = write_config("bad.yml", "colour: blue\n"
                                               "pipelines:\n"
                                               "  p1:\n"
                                               "    source: {type: csv}\n"
                                               "    sink:\n"
                                               "      type: brze\n"
                                               "    concurrency: 5000\n"
                                               "    rate_limit: lots\n"
                                               "    retry: {max_attempts: 0}\n"
                                               "    sikn: {}\n"
                                               "  bad name:\n"
                                               "    source: {type: csv}\n"
                                               "    sink: {type: http}\n"
                                               "  p3:\n"
                                               "    sink: {type: http}\n"
                                               "    steps: [{type: nope}]\n"
                                               "    notify: {url: 'ftp://x/${SLT_NOPE}', on: "
                                               "sometimes}\n");
    sl_config *c = sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e);
    assert_null(c);
    const char *s = sl_buf_cstr(&e);

    snprintf(want, sizeof(want),
             "%s:1:1: colour: unknown key (expected one of: pipelines, serve, "
             "version, state)\n",
             path);
    assert_contains(s, want);
    snprintf(want, sizeof(want),
             "%s:6:13: pipelines.p1.sink.type: unknown sink 'brze' (expected one of: %s)\n", path,
             sinks);
    assert_contains(s, want);
    snprintf(want, sizeof(want),
             "%s:7:18: pipelines.p1.concurrency: 5000 is out of range "
             "(expected an integer from 1 to 1024)\n",
             path);
    assert_contains(s, want);
    snprintf(want, sizeof(want), "%s:8:17: pipelines.p1.rate_limit: invalid rate 'lots'", path);
    assert_contains(s, want);
    snprintf(want, sizeof(want),
             "%s:9:27: pipelines.p1.retry.max_attempts: 0 is out of range "
             "(expected an integer from 1 to 100)\n",
             path);
    assert_contains(s, want);
    snprintf(want, sizeof(want),
             "%s:10:5: pipelines.p1.sikn: unknown key, did you mean 'sink'? "
             "(expected one of: source, steps, sink, trigger, batch, retry, notify, "
             "distributed, concurrency, rate_limit, max_failed, workers, job_backoff, job_max_backoff, "
             "schedule, description)\n",
             path);
    assert_contains(s, want);
    snprintf(want, sizeof(want), "%s:11:3: pipelines: invalid pipeline name 'bad name'", path);
    assert_contains(s, want);
    snprintf(want, sizeof(want), "%s:14:3: pipelines.p3: missing required key 'source'", path);
    assert_contains(s, want);
    assert_contains(s, "pipelines.p3.steps[0].type: unknown step 'nope' (expected one of: ");
    assert_contains(s, "pipelines.p3.notify.url: environment variable SLT_NOPE is not set\n");
    assert_contains(s, "pipelines.p3.notify.on: invalid choice 'sometimes' (expected one of: "
                       "success, failure, always)\n");
    /* the unset variable gives one message, not a second "not a URL" one */
    assert_not_contains(s, "not an http(s) URL");
    sl_buf_free(&e);
}

static void test_config_load_secret_url(void **state)
{
    (void)state;
    sl_buf e = {0};
    setenv("SLT_BADHOOK", "gopher://secret-token-123", 1);
    char yaml[512];
    snprintf(yaml, sizeof(yaml),
             "pipelines:\n"
             "  p:\n"
             "    source: {type: csv}\n"
             "    sink: {type: http}\n"
             "    notify: {url: '${SLT_BADHOOK}'}\n");
    const char *path = write_config("hook.yml", yaml);
    sl_config *c = sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e);
    assert_null(c);
    const char *s = sl_buf_cstr(&e);
    assert_contains(s, "pipelines.p.notify.url: not an http(s) URL");
    assert_not_contains(s, "secret-token-123");
    sl_buf_free(&e);
    sl_secrets_clear();
}

static void test_config_load_file_problems(void **state)
{
    (void)state;
    sl_buf e = {0};
    char want[256];
    snprintf(want, sizeof(want), "%s/none.yml", tmpdir);
    assert_null(sl_config_load(&sl_builtin_plugins, want, NULL, 0, &e));
    assert_contains(sl_buf_cstr(&e), "none.yml: cannot open the configuration file: ");
    sl_buf_reset(&e);

    const char *path = write_config("empty.yml", "");
    assert_null(sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e));
    snprintf(want, sizeof(want),
             "%s: empty configuration (expected a mapping with "
             "`pipelines:`)\n",
             path);
    assert_string_equal(sl_buf_cstr(&e), want);
    sl_buf_reset(&e);

    path = write_config("list.yml", "- a\n- b\n");
    assert_null(sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e));
    assert_contains(sl_buf_cstr(&e), ":1:1: found a list at the top level");
    sl_buf_reset(&e);

    path = write_config("nopipes.yml", "state: x.db\nversion: 2\n");
    assert_null(sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e));
    assert_contains(sl_buf_cstr(&e), ":2:10: version: 2 is not supported (expected 1)\n");
    assert_contains(sl_buf_cstr(&e), "missing required key 'pipelines'");
    sl_buf_free(&e);
}

static void test_config_batch_over_sink_max(void **state)
{
    (void)state;
    const sl_sink_plugin *sink = NULL;
    for (size_t i = 0; sl_sinks[i]; i++) {
        if (sl_sinks[i]->defaults.max_batch_records > 0) {
            sink = sl_sinks[i];
        }
    }
    if (!sink) {
        skip();
    }
    sl_buf y = {0}, e = {0};
    sl_buf_puts(&y, "pipelines:\n  p:\n    source:\n      type: csv\n");
    required_options(&y, sl_find_source("csv")->options, "      ");
    sl_buf_printf(&y, "    sink:\n      type: %s\n", sink->name);
    required_options(&y, sink->options, "      ");
    sl_buf_printf(&y, "    batch: {records: %d}\n", sink->defaults.max_batch_records + 1);
    const char *path = write_config("batch.yml", sl_buf_cstr(&y));
    sl_config *c = sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e);
    assert_null(c);
    char want[256];
    snprintf(want, sizeof(want),
             "pipelines.p.batch.records: %d is more than the %s sink accepts "
             "per request (expected at most %d)\n",
             sink->defaults.max_batch_records + 1, sink->name, sink->defaults.max_batch_records);
    assert_contains(sl_buf_cstr(&e), want);
    assert_int_equal(count_lines(sl_buf_cstr(&e)), 1);
    sl_buf_free(&y);
    sl_buf_free(&e);
}

static void test_config_notify_off_and_state_password(void **state)
{
    (void)state;
    sl_secrets_clear();
    sl_buf y = {0}, e = {0};
    unsetenv("SLT_HOOK_OFF");
    sl_buf_puts(&y, "state: postgres://sluice:pw-9f8e7d@db.local/sluice\n"
                    "pipelines:\n"
                    "  p:\n"
                    "    source:\n"
                    "      type: csv\n");
    required_options(&y, sl_find_source("csv")->options, "      ");
    sl_buf_puts(&y, "    sink:\n"
                    "      type: http\n");
    required_options(&y, sl_find_sink("http")->options, "      ");
    sl_buf_puts(&y, "    notify:\n"
                    "      - url: ${SLT_HOOK_OFF:-}\n"
                    "        on: success\n"
                    "      - url: https://example.test/hook\n");
    const char *path = write_config("notify.yml", sl_buf_cstr(&y));
    sl_config *c = sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e);
    if (!c) {
        fail_msg("%s", sl_buf_cstr(&e));
    }
    /* the empty URL turned the first notification off */
    assert_int_equal(c->pipelines[0].nnotify, 1);
    assert_string_equal(c->pipelines[0].notify[0].url, "https://example.test/hook");
    assert_int_equal(c->pipelines[0].notify[0].format, SL_NOTIFY_JSON);
    /* the state store's password is redacted wherever the URL is printed */
    char line[160];
    snprintf(line, sizeof(line), "state: %s", c->state_url);
    sl_redact(line, sizeof(line));
    assert_string_equal(line, "state: postgres://sluice:[redacted]@db.local/sluice");
    sl_config_free(c);

    /* without any url key it is an error, not a silent no-op */
    sl_buf_reset(&y);
    sl_buf_puts(&y, "pipelines:\n"
                    "  p:\n"
                    "    source:\n"
                    "      type: csv\n");
    required_options(&y, sl_find_source("csv")->options, "      ");
    sl_buf_puts(&y, "    sink:\n"
                    "      type: http\n");
    required_options(&y, sl_find_sink("http")->options, "      ");
    sl_buf_puts(&y, "    notify: {on: failure}\n");
    path = write_config("notify2.yml", sl_buf_cstr(&y));
    c = sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e);
    assert_null(c);
    assert_contains(sl_buf_cstr(&e), "pipelines.p.notify: missing required key 'url'");
    assert_int_equal(count_lines(sl_buf_cstr(&e)), 1);
    sl_buf_free(&y);
    sl_buf_free(&e);
    sl_secrets_clear();
}

/* ------------------------------------------------------------- triggers and jobs */

/* "  trigger:\n    type: controlshift\n" plus whatever the trigger requires,
 * at the end of a pipeline so the lines above keep their numbers. */
static void trigger_block(sl_buf *y, const char *indent)
{
    const sl_trigger_plugin *t = sl_find_trigger("controlshift");
    assert_non_null(t);
    sl_buf_printf(y, "%strigger:\n%s  type: controlshift\n", indent, indent);
    char sub[32];
    snprintf(sub, sizeof(sub), "%s  ", indent);
    required_options(y, t->options, sub);
}

static sl_config *load_ok(const char *name, const char *text)
{
    sl_buf e = {0};
    const char *path = write_config(name, text);
    sl_config *c = sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e);
    if (!c) {
        fail_msg("%s\n---\n%s", sl_buf_cstr(&e), text);
    }
    sl_buf_free(&e);
    return c;
}

static void trigger_list(char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; sl_triggers[i]; i++) {
        o += (size_t)snprintf(out + o, cap - o, "%s%s", o ? ", " : "", sl_triggers[i]->name);
    }
}

static void test_config_trigger_and_serve_keys(void **state)
{
    (void)state;
    sl_buf y = {0}, e = {0};
    sl_buf_puts(&y, "serve:\n"
                    "  listen: 0.0.0.0:9090\n"
                    "  threads: 8\n"
                    "pipelines:\n"
                    "  jobs:\n"
                    "    source: {type: csv, path: /tmp/in.csv}\n"
                    "    sink: {type: http, url: 'http://127.0.0.1:9/x'}\n"
                    "    max_failed: 0\n"
                    "    workers: 5\n");
    trigger_block(&y, "    ");
    sl_buf_puts(&y, "  plain:\n"
                    "    source: {type: csv, path: /tmp/in.csv}\n"
                    "    sink: {type: http, url: 'http://127.0.0.1:9/x'}\n");
    sl_config *c = load_ok("trigger.yml", sl_buf_cstr(&y));
    assert_string_equal(c->serve_listen, "0.0.0.0:9090");
    assert_int_equal(c->serve_threads, 8);
    sl_pipeline_cfg *p = sl_config_pipeline(c, "jobs");
    assert_string_equal(p->trigger.type, "controlshift");
    assert_ptr_equal(p->trigger_plugin, sl_find_trigger("controlshift"));
    assert_non_null(p->trigger.opts);
    assert_int_equal(p->max_failed, 0);
    assert_int_equal(p->workers, 5);
    assert_int_equal(p->templated, 0);
    p = sl_config_pipeline(c, "plain");
    assert_null(p->trigger.type);
    assert_null(p->trigger_plugin);
    assert_int_equal(p->max_failed, -1);
    assert_int_equal(p->workers, 2);
    sl_config_free(c);

    /* defaults without `serve:` */
    c = load_ok("noserve.yml", "pipelines:\n"
                               "  plain:\n"
                               "    source: {type: csv, path: /tmp/in.csv}\n"
                               "    sink: {type: http, url: 'http://127.0.0.1:9/x'}\n");
    assert_string_equal(c->serve_listen, "127.0.0.1:8080");
    assert_int_equal(c->serve_threads, 4);
    sl_config_free(c);

    /* every problem at once */
    char want[1024], triggers[256];
    trigger_list(triggers, sizeof(triggers));
    const char *path =
        write_config("trigger-bad.yml", "serve:\n"
                                        "  listen: nowhere\n"
                                        "  threads: 65\n"
                                        "  port: 80\n"
                                        "pipelines:\n"
                                        "  p:\n"
                                        "    source: {type: csv, path: /tmp/in.csv}\n"
                                        "    sink: {type: http, url: 'http://127.0.0.1:9/x'}\n"
                                        "    trigger: {type: controlshfit}\n"
                                        "    max_failed: -2\n"
                                        "    workers: 0\n"
                                        "  q:\n"
                                        "    source: {type: csv, path: /tmp/in.csv}\n"
                                        "    sink: {type: http, url: 'http://127.0.0.1:9/x'}\n"
                                        "    trigger: {secret: x}\n"
                                        "    workers: 65\n");
    assert_null(sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e));
    const char *s = sl_buf_cstr(&e);
    snprintf(want, sizeof(want),
             "%s:2:11: serve.listen: invalid address 'nowhere' (expected ADDR:PORT such as "
             "127.0.0.1:8080, 0.0.0.0:80 or [::1]:8080)\n",
             path);
    assert_contains(s, want);
    snprintf(want, sizeof(want),
             "%s:3:12: serve.threads: 65 is out of range (expected an integer from 1 to 64)\n",
             path);
    assert_contains(s, want);
    snprintf(want, sizeof(want),
             "%s:4:3: serve.port: unknown key (expected one of: listen, threads)\n", path);
    assert_contains(s, want);
    snprintf(want, sizeof(want),
             "%s:9:21: pipelines.p.trigger.type: unknown trigger 'controlshfit' (expected one of: "
             "%s)\n",
             path, triggers);
    assert_contains(s, want);
    snprintf(want, sizeof(want),
             "%s:10:17: pipelines.p.max_failed: -2 is out of range (expected -1 for no limit, or "
             "a number of records from 0 to 2000000000)\n",
             path);
    assert_contains(s, want);
    snprintf(want, sizeof(want),
             "%s:11:14: pipelines.p.workers: 0 is out of range (expected an integer from 1 to "
             "64)\n",
             path);
    assert_contains(s, want);
    snprintf(want, sizeof(want),
             "%s:15:5: pipelines.q.trigger: missing required key 'type' (expected one of: %s)\n",
             path, triggers);
    assert_contains(s, want);
    assert_contains(s, "pipelines.q.workers: 65 is out of range");
    assert_int_equal(count_lines(s), 8);
    sl_buf_free(&y);
    sl_buf_free(&e);
    sl_secrets_clear();
}

/* A triggered pipeline whose csv source, cast step and http sink take
 * their values from job variables (line numbers are asserted below). */
static const char *jobs_config(sl_buf *y)
{
    sl_buf_puts(y, "pipelines:\n"                                                        /* 1 */
                   "  p:\n"                                                              /* 2 */
                   "    source:\n"                                                       /* 3 */
                   "      type: csv\n"                                                   /* 4 */
                   "      path: \"{{url}}\"\n"                                           /* 5 */
                   "      compression: \"{{compression}}\"\n"                            /* 6 */
                   "      max_row_bytes: \"{{size}}\"\n"                                 /* 7 */
                   "      columns: [\"{{col}}\", email]\n"                               /* 8 */
                   "    steps:\n"                                                        /* 9 */
                   "      - type: cast\n"                                                /* 10 */
                   "        types: {zip: \"{{ztype}}\"}\n"                               /* 11 */
                   "    sink:\n"                                                         /* 12 */
                   "      type: http\n"                                                  /* 13 */
                   "      url: \"http://127.0.0.1:9/{{table}}?kind={{kind}}&x={{{{y\"\n" /* 14 */
                   "      method: \"{{method}}\"\n"                                      /* 15 */
                   "      bearer_token: \"${SLT_TOKEN}-{{tok}}\"\n"                      /* 16 */
                   "    max_failed: 0\n"                                                 /* 17 */
                   "    workers: 3\n"                                                    /* 18 */
                   "    concurrency: 2\n"                                                /* 19 */
                   "    notify: {url: 'http://127.0.0.1:9/hook'}\n");                    /* 20 */
    trigger_block(y, "    ");
    return sl_buf_cstr(y);
}

#define GOOD_VARS                                                                                  \
    "{\"url\": \"/data/${HOME}/{{x}}.csv\", \"compression\": \"gzip\", \"size\": \"2MB\", "        \
    "\"col\": \"id\", \"ztype\": \"integer\", \"table\": \"users\", \"kind\": \"full\", "          \
    "\"method\": \"PUT\", \"tok\": \"tok-5551234\", \"unused\": [1]}"

static void test_config_job_variables(void **state)
{
    (void)state;
    sl_secrets_clear();
    setenv("SLT_TOKEN", "envtok-XYZ1", 1);
    sl_buf y = {0}, e = {0};
    sl_config *c = load_ok("jobs.yml", jobs_config(&y));
    sl_pipeline_cfg *p = sl_config_pipeline(c, "p");
    assert_int_equal(p->templated, 1);
    /* at load a template is present but unchecked: a required option counts */
    assert_string_equal(sl_opt_str(p->source.opts, "path"), "{{url}}");
    assert_true(sl_opt_isset(p->source.opts, "compression"));
    assert_string_equal(sl_opt_str(p->sink.opts, "url"),
                        "http://127.0.0.1:9/{{table}}?kind={{kind}}&x={{y");

    sl_pipeline_cfg *j = sl_config_instantiate(c, p, GOOD_VARS, &e);
    if (!j) {
        fail_msg("%s", sl_buf_cstr(&e));
    }
    assert_int_equal(e.len, 0);
    /* substituted text is taken as it is: no ${ENV}, no second {{...}} pass */
    assert_string_equal(sl_opt_str(j->source.opts, "path"), "/data/${HOME}/{{x}}.csv");
    assert_string_equal(sl_opt_str(j->source.opts, "compression"), "gzip");
    assert_int_equal(sl_opt_size(j->source.opts, "max_row_bytes"), 2 * 1024 * 1024);
    assert_int_equal(sl_opt_count(j->source.opts, "columns"), 2);
    assert_string_equal(sl_opt_item(j->source.opts, "columns", 0), "id");
    assert_string_equal(sl_opt_item(j->source.opts, "columns", 1), "email");
    assert_string_equal(sl_opt_key(j->steps[0].opts, "types", 0), "zip");
    assert_string_equal(sl_opt_item(j->steps[0].opts, "types", 0), "integer");
    assert_string_equal(sl_opt_str(j->sink.opts, "url"),
                        "http://127.0.0.1:9/users?kind=full&x={{y");
    assert_string_equal(sl_opt_str(j->sink.opts, "method"), "PUT");
    assert_string_equal(sl_opt_str(j->sink.opts, "bearer_token"), "envtok-XYZ1-tok-5551234");
    assert_string_equal(sl_opt_where(j->sink.opts, "method"), sl_opt_where(p->sink.opts, "method"));
    /* every setting copied, everything owned anew */
    assert_string_equal(j->name, "p");
    assert_ptr_not_equal(j->name, p->name);
    assert_ptr_equal(j->source_plugin, p->source_plugin);
    assert_ptr_equal(j->sink_plugin, p->sink_plugin);
    assert_ptr_equal(j->step_plugins[0], sl_find_step("cast"));
    assert_ptr_equal(j->trigger_plugin, p->trigger_plugin);
    assert_string_equal(j->trigger.type, "controlshift");
    assert_non_null(j->trigger.opts);
    assert_ptr_not_equal(j->trigger.opts, p->trigger.opts);
    assert_int_equal(j->nsteps, 1);
    assert_int_equal(j->max_failed, 0);
    assert_int_equal(j->workers, 3);
    assert_int_equal(j->concurrency, 2);
    assert_int_equal(j->nnotify, 1);
    assert_string_equal(j->notify[0].url, "http://127.0.0.1:9/hook");
    assert_ptr_not_equal(j->notify[0].url, p->notify[0].url);
    assert_string_equal(j->where, p->where);
    assert_string_equal(j->sink.where, p->sink.where);
    /* the config's own options are untouched */
    assert_string_equal(sl_opt_str(p->source.opts, "path"), "{{url}}");

    /* a secret option's result, and the variable alone, are redacted */
    char line[200];
    snprintf(line, sizeof(line), "a=%s b=tok-5551234 c=envtok-XYZ1- d=users",
             sl_opt_str(j->sink.opts, "bearer_token"));
    sl_redact(line, sizeof(line));
    assert_not_contains(line, "XYZ1");
    assert_not_contains(line, "5551234");
    assert_contains(line, " b=[redacted] c=[redacted] d=users");

    /* an instantiated copy instantiates again (e.g. a retried job) */
    sl_pipeline_cfg *j2 = sl_config_instantiate(c, j, GOOD_VARS, &e);
    assert_non_null(j2);
    assert_string_equal(sl_opt_str(j2->sink.opts, "method"), "PUT");
    sl_pipeline_cfg_free(j2);
    sl_pipeline_cfg_free(j);
    sl_pipeline_cfg_free(NULL);

    /* numbers and booleans as their JSON text; null: the option's default */
    j = sl_config_instantiate(c, p,
                              "{\"url\": 0.1, \"compression\": null, \"size\": 2048, \"col\": "
                              "true, \"ztype\": \"string\", \"table\": -7, \"kind\": 1e3, "
                              "\"method\": \"POST\", \"tok\": \"t-000001\"}",
                              &e);
    if (!j) {
        fail_msg("%s", sl_buf_cstr(&e));
    }
    assert_string_equal(sl_opt_str(j->source.opts, "path"), "0.1");
    assert_false(sl_opt_isset(j->source.opts, "compression"));
    assert_string_equal(sl_opt_str(j->source.opts, "compression"), "auto");
    assert_int_equal(sl_opt_size(j->source.opts, "max_row_bytes"), 2048);
    assert_string_equal(sl_opt_item(j->source.opts, "columns", 0), "true");
    assert_string_equal(sl_opt_str(j->sink.opts, "url"), "http://127.0.0.1:9/-7?kind=1000&x={{y");
    sl_pipeline_cfg_free(j);

    sl_config_free(c);
    sl_buf_free(&y);
    sl_buf_free(&e);
    sl_secrets_clear();
}

static void test_config_job_variable_errors(void **state)
{
    (void)state;
    sl_buf y = {0}, e = {0};
    char want[1024];
    sl_buf_puts(&y, "pipelines:\n"
                    "  cs:\n"
                    "    source:\n"
                    "      type: csv\n"
                    "      path: \"{{url}}\"\n"
                    "      compression: \"{{compression}}\"\n"
                    "    sink:\n"
                    "      type: http\n"
                    "      url: \"http://127.0.0.1:9/{{tabel}}\"\n"
                    "      expect_status: \"2{{kind}}\"\n");
    trigger_block(&y, "    ");
    sl_config *c = load_ok("job-errors.yml", sl_buf_cstr(&y));
    const char *path = c->path;
    sl_pipeline_cfg *p = sl_config_pipeline(c, "cs");

    /* the example's variables: {{tabel}} is a typo */
    const char *vars = "{\"url\": \"https://x.test/a.csv\", \"compression\": \"none\", "
                       "\"kind\": \"01\", \"table\": \"t\"}";
    assert_null(sl_config_instantiate(c, p, vars, &e));
    snprintf(want, sizeof(want),
             "%s:9:12: pipelines.cs.sink.url: {{tabel}}: no such job variable (available: "
             "compression, kind, table, url)\n",
             path);
    assert_string_equal(sl_buf_cstr(&e), want);
    sl_buf_reset(&e);

    /* a value invalid for its option names the variable; all problems at once */
    vars = "{\"url\": \"u\", \"compression\": \"zip\", \"kind\": \"x1\", \"tabel\": \"t\"}";
    assert_null(sl_config_instantiate(c, p, vars, &e));
    /* the choices as the csv source lists them today */
    char choices[256] = "";
    for (const sl_option *o = sl_find_source("csv")->options; o->name; o++) {
        if (strcmp(o->name, "compression") == 0) {
            for (const char *ch = o->choices; *ch; ch++) {
                size_t l = strlen(choices);
                snprintf(choices + l, sizeof(choices) - l, "%s", *ch == '|' ? ", " : "");
                if (*ch != '|') {
                    choices[l] = *ch;
                    choices[l + 1] = '\0';
                }
            }
        }
    }
    assert_non_null(strstr(choices, "gzip"));
    snprintf(want, sizeof(want),
             "%s:6:20: pipelines.cs.source.compression: invalid choice 'zip' (expected one of: "
             "%s) (value from job variable {{compression}})\n"
             "%s:10:22: pipelines.cs.sink.expect_status: '2x1' is not a 2xx status (expected "
             "e.g. 201 or [200, 201])\n",
             path, choices, path);
    assert_string_equal(sl_buf_cstr(&e), want);
    sl_buf_reset(&e);

    /* a required option substituted to nothing */
    vars = "{\"url\": \"\", \"compression\": \"none\", \"kind\": \"01\", \"tabel\": \"t\"}";
    assert_null(sl_config_instantiate(c, p, vars, &e));
    assert_contains(sl_buf_cstr(&e),
                    ":5:13: pipelines.cs.source.path: empty value for a required "
                    "option (expected a string) (value from job variable {{url}})\n");
    sl_buf_reset(&e);

    /* variables that cannot be text, and JSON that is not an object */
    vars = "{\"url\": {\"a\": 1}, \"compression\": [], \"kind\": \"01\", \"tabel\": \"t\"}";
    assert_null(sl_config_instantiate(c, p, vars, &e));
    assert_contains(sl_buf_cstr(&e), ":5:13: pipelines.cs.source.path: {{url}}: the job variable "
                                     "is an object (expected a string, number, boolean or null)\n");
    assert_contains(sl_buf_cstr(&e), "{{compression}}: the job variable is a list");
    assert_int_equal(count_lines(sl_buf_cstr(&e)), 2);
    sl_buf_reset(&e);
    assert_null(sl_config_instantiate(c, p, "[1, 2]", &e));
    assert_string_equal(sl_buf_cstr(&e), "job variables: found a list (expected a JSON object)\n");
    sl_buf_reset(&e);
    assert_null(sl_config_instantiate(c, p, "{\"url\": \"secret-in-json", &e));
    assert_contains(sl_buf_cstr(&e), "job variables: invalid JSON at character ");
    assert_not_contains(sl_buf_cstr(&e), "secret-in-json");
    sl_buf_reset(&e);
    assert_null(sl_config_instantiate(c, p, NULL, &e));
    assert_contains(sl_buf_cstr(&e), "{{url}}: no such job variable (available: none)\n");
    sl_buf_reset(&e);

    sl_config_free(c);
    sl_buf_free(&y);
    sl_buf_free(&e);
    sl_secrets_clear();
}

static void test_config_job_variables_misplaced(void **state)
{
    (void)state;
    sl_buf y = {0}, e = {0};
    char want[1024];
    /* no trigger: a job variable has no value to come from */
    const char *path =
        write_config("notrigger.yml", "pipelines:\n"
                                      "  p:\n"
                                      "    source:\n"
                                      "      type: csv\n"
                                      "      path: \"{{url}}\"\n"
                                      "    sink:\n"
                                      "      type: http\n"
                                      "      url: \"http://127.0.0.1:9/{{{{x}}\"\n"
                                      "      wrap: \"{{ table }}\"\n"
                                      "    notify: {url: \"http://127.0.0.1:9/{{hook}}\"}\n");
    assert_null(sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e));
    snprintf(want, sizeof(want),
             "%s:5:13: pipelines.p.source.path: {{url}} is a job variable, available only in "
             "pipelines with a trigger\n"
             "%s:9:13: pipelines.p.sink.wrap: invalid job variable reference '{{ table }}' "
             "(expected {{name}}: a letter or _, then letters, digits or _; or {{{{ for a "
             "literal {{)\n"
             "%s:10:19: pipelines.p.notify.url: {{hook}} is a job variable, available only in "
             "source, steps and sink options of pipelines with a trigger\n",
             path, path, path);
    /* one message per value: the required path is not also "missing" */
    assert_string_equal(sl_buf_cstr(&e), want);
    sl_buf_reset(&e);

    /* with a trigger: still not in engine keys, notify or a plugin's type */
    sl_buf_puts(&y, "pipelines:\n"
                    "  p:\n"
                    "    source:\n"
                    "      type: csv\n"
                    "      path: \"{{url}}\"\n"
                    "    sink:\n"
                    "      type: \"{{sink}}\"\n"
                    "    rate_limit: \"{{rate}}/s\"\n"
                    "    notify: {url: \"http://127.0.0.1:9/{{hook}}\"}\n"
                    "    retry: {timeout: \"{{t}}\"}\n"
                    "    extra: \"{{url\"\n");
    trigger_block(&y, "    ");
    path = write_config("trigger-misplaced.yml", sl_buf_cstr(&y));
    assert_null(sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e));
    const char *s = sl_buf_cstr(&e);
    snprintf(want, sizeof(want),
             "%s:7:13: pipelines.p.sink.type: {{sink}} is a job variable, not allowed in `type:` "
             "(expected a plugin name)\n",
             path);
    assert_contains(s, want);
    snprintf(want, sizeof(want),
             "%s:8:17: pipelines.p.rate_limit: {{rate}} is a job variable, available only in "
             "source, steps and sink options\n",
             path);
    assert_contains(s, want);
    assert_contains(s, ":9:19: pipelines.p.notify.url: {{hook}} is a job variable, available "
                       "only in source, steps and sink options\n");
    assert_contains(s, ":10:22: pipelines.p.retry.timeout: {{t}} is a job variable");
    assert_contains(s, ":11:12: pipelines.p.extra: invalid job variable reference '{{url'");
    assert_contains(s, ":11:5: pipelines.p.extra: unknown key");
    assert_int_equal(count_lines(s), 6);
    sl_buf_free(&y);
    sl_buf_free(&e);
}

static void test_config_job_variable_escape(void **state)
{
    (void)state;
    sl_buf e = {0};
    /* `{{{{` is a literal `{{`; `{{` from the environment is plain text */
    setenv("SLT_BRACES", "{{url}}", 1);
    sl_config *c = load_ok("escape.yml", "pipelines:\n"
                                         "  p:\n"
                                         "    source:\n"
                                         "      type: csv\n"
                                         "      path: \"/in/{{{{a}}-$${X}{{{{{{{{\"\n"
                                         "    sink:\n"
                                         "      type: http\n"
                                         "      url: http://127.0.0.1:9/x\n"
                                         "      wrap: ${SLT_BRACES}\n");
    sl_pipeline_cfg *p = &c->pipelines[0];
    assert_int_equal(p->templated, 0);
    assert_string_equal(sl_opt_str(p->source.opts, "path"), "/in/{{a}}-${X}{{{{");
    assert_string_equal(sl_opt_str(p->sink.opts, "wrap"), "{{url}}");
    /* a pipeline without a trigger instantiates as a plain copy */
    sl_pipeline_cfg *j = sl_config_instantiate(c, p, NULL, &e);
    if (!j) {
        fail_msg("%s", sl_buf_cstr(&e));
    }
    assert_string_equal(sl_opt_str(j->source.opts, "path"), "/in/{{a}}-${X}{{{{");
    assert_string_equal(sl_opt_str(j->sink.opts, "wrap"), "{{url}}");
    assert_null(j->trigger.type);
    sl_pipeline_cfg_free(j);
    sl_config_free(c);

    /* with a trigger: escapes next to references */
    sl_buf y = {0};
    sl_buf_puts(&y, "pipelines:\n"
                    "  p:\n"
                    "    source:\n"
                    "      type: csv\n"
                    "      path: \"{{{{{{url}}}}-{{url}}$$\"\n"
                    "    sink:\n"
                    "      type: http\n"
                    "      url: http://127.0.0.1:9/x\n"
                    "      wrap: ${SLT_BRACES}{{url}}\n");
    trigger_block(&y, "    ");
    c = load_ok("escape2.yml", sl_buf_cstr(&y));
    j = sl_config_instantiate(c, &c->pipelines[0], "{\"url\": \"U\"}", &e);
    if (!j) {
        fail_msg("%s", sl_buf_cstr(&e));
    }
    assert_string_equal(sl_opt_str(j->source.opts, "path"), "{{U}}-U$");
    assert_string_equal(sl_opt_str(j->sink.opts, "wrap"), "{{url}}U");
    sl_pipeline_cfg_free(j);
    sl_config_free(c);
    sl_buf_free(&y);
    sl_buf_free(&e);
}

typedef struct inst_arg {
    sl_config *c;
    int id;
    int failures;
} inst_arg;

static void *instantiate_loop(void *arg)
{
    inst_arg *a = arg;
    sl_buf e = {0};
    for (int i = 0; i < 1000; i++) {
        char vars[512], want[64];
        snprintf(want, sizeof(want), "/in/%d/%d.csv", a->id, i);
        snprintf(vars, sizeof(vars),
                 "{\"url\": \"%s\", \"compression\": \"%s\", \"size\": \"%dKB\", \"col\": \"c%d\", "
                 "\"ztype\": \"float\", \"table\": \"t%d\", \"kind\": \"k\", \"method\": "
                 "\"PATCH\", \"tok\": \"tok-%d-%d\"}",
                 want, i % 2 ? "gzip" : "none", i + 1, i, a->id, a->id, i);
        sl_pipeline_cfg *j = sl_config_instantiate(a->c, &a->c->pipelines[0], vars, &e);
        if (!j || strcmp(sl_opt_str(j->source.opts, "path"), want) != 0 ||
            sl_opt_size(j->source.opts, "max_row_bytes") != (int64_t)(i + 1) * 1024 ||
            strcmp(sl_opt_str(j->sink.opts, "method"), "PATCH") != 0) {
            a->failures++;
        }
        sl_pipeline_cfg_free(j);
    }
    sl_buf_free(&e);
    return NULL;
}

static void test_config_instantiate_threads(void **state)
{
    (void)state;
    setenv("SLT_TOKEN", "envtok-XYZ1", 1);
    sl_buf y = {0};
    sl_config *c = load_ok("threads.yml", jobs_config(&y));
    pthread_t th[4];
    inst_arg args[4];
    for (int t = 0; t < 4; t++) {
        args[t] = (inst_arg){c, t, 0};
        assert_int_equal(pthread_create(&th[t], NULL, instantiate_loop, &args[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        assert_int_equal(pthread_join(th[t], NULL), 0);
        assert_int_equal(args[t].failures, 0);
    }
    /* the shared tree is as it was */
    assert_string_equal(sl_opt_str(c->pipelines[0].source.opts, "path"), "{{url}}");
    sl_config_free(c);
    sl_buf_free(&y);
    sl_secrets_clear();
}

/* `schedule:` is parsed by check: the schedule parser's message at the key's
 * position; a schedule and a trigger do not go together. */
/* A plugin's validate hook runs when the configuration is loaded, so
 * `check` refuses what `serve` would: a webhook secret of one character. */
static void test_config_plugin_validate(void **state)
{
    (void)state;
    sl_buf e = {0};
    const char *path = write_config("weak.yml", "pipelines:\n"
                                                "  hook:\n"
                                                "    trigger:\n"
                                                "      type: controlshift\n"
                                                "      secret: s3\n"
                                                "      route: no-slash\n"
                                                "    source: {type: csv, path: \"{{url}}\"}\n"
                                                "    sink: {type: http, url: 'http://x/'}\n");
    sl_config *c = sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e);
    assert_null(c);
    char want[1024];
    snprintf(want, sizeof(want),
             "%s:5:15: pipelines.hook.trigger.secret: 2 characters is too short for a webhook "
             "secret (expected at least 16: the secret from ControlShift's webhook settings)\n"
             "%s:6:14: pipelines.hook.trigger.route: 'no-slash' is not a path (expected e.g. "
             "/webhooks/controlshift)\n",
             path, path);
    assert_string_equal(sl_buf_cstr(&e), want);
    assert_null(strstr(sl_buf_cstr(&e), "s3\n")); /* never the secret */
    sl_buf_free(&e);
    sl_secrets_clear();
}

/* Issue 7 #12: what `run` and `serve` refuse, `check` refuses (the csv
 * source's own checks, shared with its init). */
static void test_config_csv_checked_at_load(void **state)
{
    (void)state;
    sl_buf e = {0};
    const char *path = write_config(
        "csvbad.yml", "pipelines:\n"
                      "  a:\n"
                      "    source: {type: csv, path: in.csv, delimiter: \";;\"}\n"
                      "    sink: {type: http, url: 'http://x/'}\n"
                      "  b:\n"
                      "    source: {type: csv, path: 'https://h/x.csv', allow_hosts: '*'}\n"
                      "    sink: {type: http, url: 'http://x/'}\n"
                      "  c:\n"
                      "    source: {type: csv, path: in.csv, quote: ''}\n"
                      "    sink: {type: http, url: 'http://x/'}\n"
                      "  d:\n"
                      "    source: {type: csv, path: in.csv, max_row_bytes: 1TB}\n"
                      "    sink: {type: http, url: 'http://x/'}\n"
                      "  e:\n"
                      "    source: {type: csv, path: in.csv, allow_hosts: 'ex@mple..org'}\n"
                      "    sink: {type: http, url: 'http://x/'}\n");
    assert_null(sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e));
    const char *t = sl_buf_cstr(&e);
    char want[512];
    snprintf(want, sizeof(want), "%s:3:50: delimiter: must be one byte", path);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof(want), "%s:6:63: allow_hosts entry '*' is not a host", path);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof(want), "%s:9:46: quote: must be one byte", path);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof(want), "%s:12:54: max_row_bytes: must be between 64 bytes and 32MB",
             path);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof(want), "%s:15:52: allow_hosts entry 'ex@mple..org' is not a host", path);
    assert_non_null(strstr(t, want));
    sl_buf_free(&e);
}

static void test_config_schedule(void **state)
{
    (void)state;
    char want[512];
    sl_buf e = {0};
    const char *path = write_config("sched.yml", "pipelines:\n"
                                                 "  a:\n"
                                                 "    schedule: banana\n"
                                                 "    source: {type: csv, path: in.csv}\n"
                                                 "    sink: {type: http, url: 'http://x/'}\n"
                                                 "  b:\n"
                                                 "    source: {type: csv, path: in.csv}\n"
                                                 "    sink: {type: http, url: 'http://x/'}\n"
                                                 "    schedule: '0 6 * * mon-fry Europe/London'\n"
                                                 "  c:\n"
                                                 "    source: {type: csv, path: in.csv}\n"
                                                 "    sink: {type: http, url: 'http://x/'}\n"
                                                 "    schedule: 0 6 * * * Mars/Olympus\n"
                                                 "  ok:\n"
                                                 "    source: {type: csv, path: in.csv}\n"
                                                 "    sink: {type: http, url: 'http://x/'}\n"
                                                 "    schedule: 30 1 * * * Europe/London\n");
    sl_config *c = sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e);
    assert_null(c);
    const char *s = sl_buf_cstr(&e);
    snprintf(want, sizeof(want),
             "%s:3:15: pipelines.a.schedule: invalid schedule 'banana': found 1 word (expected "
             "`every <duration>`",
             path);
    assert_contains(s, want);
    snprintf(want, sizeof(want),
             "%s:9:15: pipelines.b.schedule: invalid schedule '0 6 * * mon-fry Europe/London': "
             "day-of-week field: found \"mon-fry\": cannot read the range \"mon-fry\"",
             path);
    assert_contains(s, want);
    snprintf(want, sizeof(want), "%s:13:15: pipelines.c.schedule: invalid schedule", path);
    assert_contains(s, want);
    assert_contains(s, "\"Mars/Olympus\", which is not a zone in");
    assert_not_contains(s, "pipelines.ok");
    sl_buf_free(&e);

    path = write_config("sched2.yml",
                        "pipelines:\n"
                        "  hook:\n"
                        "    schedule: every 90m\n"
                        "    trigger: {type: controlshift, secret: 0123456789abcdef0123}\n"
                        "    source: {type: csv, path: in.csv}\n"
                        "    sink: {type: http, url: 'http://x/'}\n");
    c = sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e);
    assert_null(c);
    snprintf(want, sizeof(want), "%s:4:5: pipelines.hook.trigger: a pipeline has either", path);
    assert_contains(sl_buf_cstr(&e), want);
    sl_buf_free(&e);

    path = write_config("sched3.yml", "pipelines:\n"
                                      "  fine:\n"
                                      "    schedule: TZ=America/New_York 0 6 * * 1-5\n"
                                      "    source: {type: csv, path: in.csv}\n"
                                      "    sink: {type: http, url: 'http://x/'}\n");
    c = sl_config_load(&sl_builtin_plugins, path, NULL, 0, &e);
    assert_non_null(c);
    assert_string_equal(c->pipelines[0].schedule, "TZ=America/New_York 0 6 * * 1-5");
    sl_config_free(c);
    sl_buf_free(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_yaml_positions),
        cmocka_unit_test(test_yaml_duplicate_keys),
        cmocka_unit_test(test_yaml_syntax_error),
        cmocka_unit_test(test_yaml_limits),
        cmocka_unit_test(test_yaml_empty_and_multi),
        cmocka_unit_test(test_yaml_alias_merge),
        cmocka_unit_test(test_interpolate),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_bool),
        cmocka_unit_test(test_parse_rate),
        cmocka_unit_test(test_opts_values_and_defaults),
        cmocka_unit_test(test_opts_errors),
        cmocka_unit_test(test_opts_secret),
        cmocka_unit_test(test_opts_pairs),
        cmocka_unit_test(test_opts_bad_default),
        cmocka_unit_test(test_opts_accessor_bugs_abort),
        cmocka_unit_test(test_config_load_valid),
        cmocka_unit_test(test_config_load_errors),
        cmocka_unit_test(test_config_load_secret_url),
        cmocka_unit_test(test_config_load_file_problems),
        cmocka_unit_test(test_config_batch_over_sink_max),
        cmocka_unit_test(test_config_notify_off_and_state_password),
        cmocka_unit_test(test_config_trigger_and_serve_keys),
        cmocka_unit_test(test_config_job_variables),
        cmocka_unit_test(test_config_job_variable_errors),
        cmocka_unit_test(test_config_job_variables_misplaced),
        cmocka_unit_test(test_config_job_variable_escape),
        cmocka_unit_test(test_config_instantiate_threads),
        cmocka_unit_test(test_config_schedule),
        cmocka_unit_test(test_config_plugin_validate),
        cmocka_unit_test(test_config_csv_checked_at_load),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
