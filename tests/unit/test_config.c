/* Config module: YAML tree, interpolation, parse helpers, option validation
 * and accessors, and sl_config_load end to end (with the real registry). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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
        const char *v = "value-1234";
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
    sl_config *c = sl_config_load(path, NULL, 0, &e);
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
    c = sl_config_load(path, only, 1, &e);
    if (!c) {
        fail_msg("%s", sl_buf_cstr(&e));
    }
    assert_int_equal(c->npipelines, 1);
    assert_string_equal(c->pipelines[0].name, "first");
    sl_config_free(c);

    c = sl_config_load(path, NULL, 0, &e);
    assert_null(c);
    assert_contains(sl_buf_cstr(&e), ": pipelines.second.notify.url: environment variable "
                                     "SLT_ONLY_SECOND is not set\n");
    assert_int_equal(count_lines(sl_buf_cstr(&e)), 1);
    sl_buf_reset(&e);

    const char *missing[] = {"frist"};
    c = sl_config_load(path, missing, 1, &e);
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
    sl_config *c = sl_config_load(path, NULL, 0, &e);
    assert_null(c);
    const char *s = sl_buf_cstr(&e);

    snprintf(want, sizeof(want),
             "%s:1:1: colour: unknown key (expected one of: pipelines, "
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
             "(expected one of: source, steps, sink, batch, retry, notify, "
             "concurrency, rate_limit, schedule, description)\n",
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
    sl_config *c = sl_config_load(path, NULL, 0, &e);
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
    assert_null(sl_config_load(want, NULL, 0, &e));
    assert_contains(sl_buf_cstr(&e), "none.yml: cannot open the configuration file: ");
    sl_buf_reset(&e);

    const char *path = write_config("empty.yml", "");
    assert_null(sl_config_load(path, NULL, 0, &e));
    snprintf(want, sizeof(want),
             "%s: empty configuration (expected a mapping with "
             "`pipelines:`)\n",
             path);
    assert_string_equal(sl_buf_cstr(&e), want);
    sl_buf_reset(&e);

    path = write_config("list.yml", "- a\n- b\n");
    assert_null(sl_config_load(path, NULL, 0, &e));
    assert_contains(sl_buf_cstr(&e), ":1:1: found a list at the top level");
    sl_buf_reset(&e);

    path = write_config("nopipes.yml", "state: x.db\nversion: 2\n");
    assert_null(sl_config_load(path, NULL, 0, &e));
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
    sl_config *c = sl_config_load(path, NULL, 0, &e);
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
    sl_config *c = sl_config_load(path, NULL, 0, &e);
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
    c = sl_config_load(path, NULL, 0, &e);
    assert_null(c);
    assert_contains(sl_buf_cstr(&e), "pipelines.p.notify: missing required key 'url'");
    assert_int_equal(count_lines(sl_buf_cstr(&e)), 1);
    sl_buf_free(&y);
    sl_buf_free(&e);
    sl_secrets_clear();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_yaml_positions),
        cmocka_unit_test(test_yaml_duplicate_keys),
        cmocka_unit_test(test_yaml_syntax_error),
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
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
