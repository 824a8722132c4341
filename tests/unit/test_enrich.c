/* enrich: request templates ({field} substitution escaped for URL and JSON
 * body), dotted JSON paths, response values into record fields, e-mail check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../plugins/steps/enrich/enrich_tpl.h"

static void render(const char *tpl, const sl_record *r, const char *kf, const char *kv,
                   enum sl_tpl_escape esc, const char *want)
{
    sl_tpl t;
    sl_error err = {0};
    assert_int_equal(sl_tpl_compile(&t, tpl, &err), 0);
    sl_buf out;
    sl_buf_init(&out, 0);
    assert_int_equal(sl_tpl_render(&t, r, kf, kv, esc, &out, &err), 0);
    assert_string_equal(sl_buf_cstr(&out), want);
    sl_buf_free(&out);
    sl_tpl_free(&t);
}

static void test_template(void **state)
{
    (void)state;
    sl_record r;
    sl_record_init(&r);
    assert_int_equal(sl_record_add_str(&r, "email", 5, " A\"b@x.org", 10), 0);
    assert_int_equal(sl_record_add_str(&r, "q", 1, "a/b c&d", 7), 0);
    assert_int_equal(sl_record_add_int(&r, "n", 1, 42), 0);
    assert_int_equal(sl_record_add_null(&r, "z", 1), 0);
    /* JSON braces are literal; {email} is replaced by the normalised key */
    render("{\"email\":\"{email}\"}", &r, "email", "a\"b@x.org", SL_TPL_JSON,
           "{\"email\":\"a\\\"b@x.org\"}");
    /* without a key override the field's own value, escaped */
    render("{\"e\":\"{email}\",\"n\":{n},\"z\":\"{z}\"}", &r, NULL, NULL, SL_TPL_JSON,
           "{\"e\":\" A\\\"b@x.org\",\"n\":42,\"z\":\"\"}");
    render("https://h/p/{q}?n={n}&x={1}", &r, NULL, NULL, SL_TPL_URL,
           "https://h/p/a%2Fb%20c%26d?n=42&x={1}");
    render("{", &r, NULL, NULL, SL_TPL_RAW, "{");
    render("{unterminated", &r, NULL, NULL, SL_TPL_RAW, "{unterminated");

    sl_tpl t;
    sl_error err = {0};
    assert_int_equal(sl_tpl_compile(&t, "{missing}", &err), 0);
    sl_buf out;
    sl_buf_init(&out, 0);
    assert_true(sl_tpl_render(&t, &r, NULL, NULL, SL_TPL_JSON, &out, &err) < 0);
    assert_non_null(strstr(err.msg, "'missing'"));
    sl_buf_free(&out);
    sl_tpl_free(&t);
    sl_record_free(&r);
}

static void test_mapping(void **state)
{
    (void)state;
    json_t *root = json_loads("{\"fullName\":\"Ann\",\"age\":41,\"score\":0.5,\"vip\":true,"
                              "\"linkedin\":null,\"details\":{\"emails\":[{\"value\":\"a@x.org\"}],"
                              "\"photos\":[{\"label\":\"avatar\"}]}}",
                              0, NULL);
    assert_non_null(root);
    assert_string_equal(json_string_value(sl_json_path(root, "details.emails.0.value")), "a@x.org");
    assert_null(sl_json_path(root, "details.emails.1.value"));
    assert_null(sl_json_path(root, "details.nope"));
    assert_null(sl_json_path(root, "fullName.x"));
    assert_null(sl_json_path(root, "details..emails"));

    sl_record r;
    sl_record_init(&r);
    /* an input field of the same name is replaced, not duplicated */
    assert_int_equal(sl_record_add_str(&r, "full_name", 9, "old", 3), 0);
    assert_int_equal(sl_rec_set_json_value(&r, "full_name", sl_json_path(root, "fullName")), 0);
    assert_int_equal(sl_rec_set_json_value(&r, "age", sl_json_path(root, "age")), 0);
    assert_int_equal(sl_rec_set_json_value(&r, "score", sl_json_path(root, "score")), 0);
    assert_int_equal(sl_rec_set_json_value(&r, "vip", sl_json_path(root, "vip")), 0);
    assert_int_equal(sl_rec_set_json_value(&r, "linkedin", sl_json_path(root, "linkedin")), 0);
    assert_int_equal(sl_rec_set_json_value(&r, "absent", sl_json_path(root, "nope")), 0);
    assert_int_equal(sl_rec_set_json_value(&r, "photos", sl_json_path(root, "details.photos")), 0);
    assert_int_equal(r.nfields, 7);
    sl_buf out;
    sl_buf_init(&out, 0);
    assert_int_equal(sl_record_to_json(&r, &out), 0);
    assert_string_equal(sl_buf_cstr(&out),
                        "{\"full_name\":\"Ann\",\"age\":41,\"score\":0.5,\"vip\":true,"
                        "\"linkedin\":null,\"absent\":null,\"photos\":[{\"label\":\"avatar\"}]}");
    sl_buf_free(&out);
    sl_record_free(&r);
    json_decref(root);
}

static void test_email(void **state)
{
    (void)state;
    const char *good[] = {"a@x.org", "first.last+tag@sub.example.co.uk"};
    const char *bad[] = {"",       "a",    "@x.org",    "a@",        "a@x",
                         "a@.org", "a@x.", "a@b@x.org", "a b@x.org", "a@x.org\n"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_true(sl_email_valid(good[i], strlen(good[i])));
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (sl_email_valid(bad[i], strlen(bad[i]))) {
            fail_msg("'%s' accepted", bad[i]);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_template),
        cmocka_unit_test(test_mapping),
        cmocka_unit_test(test_email),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
