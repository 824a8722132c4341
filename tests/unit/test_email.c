/* Email source header checks: Authentication-Results (which header is
 * trusted, DKIM/SPF pass for the From domain, comments and quoting), the
 * sender allow-list and the subject match. The whole source is exercised by
 * tests/integration/test_email.sh. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "../../plugins/sources/email/email.h"

static char why[640];

static int check1(const char *v, em_auth_mode mode, const char *dom)
{
    const char *vals[] = {v};
    why[0] = '\0';
    return em_auth_check(vals, 1, "mx.org.example", mode, dom, why, sizeof(why));
}

static void test_dkim_pass(void **state)
{
    (void)state;
    assert_int_equal(check1("mx.org.example; dkim=pass header.d=actionkit.example header.s=s1",
                            EM_AUTH_DKIM, "actionkit.example"),
                     1);
    /* case, a version, comments, CFWS around '=', folded lines */
    assert_int_equal(check1("MX.Org.Example 1;\r\n\tdkim = pass (2048-bit key; secure) "
                            "header.d=ActionKit.Example",
                            EM_AUTH_DKIM, "actionkit.example"),
                     1);
    /* several signatures: one aligned pass is enough */
    assert_int_equal(check1("mx.org.example; dkim=pass header.d=mailer.example; dkim=pass "
                            "header.d=actionkit.example",
                            EM_AUTH_DKIM, "actionkit.example"),
                     1);
    /* header.i when header.d is absent */
    assert_int_equal(check1("mx.org.example; dkim=pass header.i=@actionkit.example", EM_AUTH_DKIM,
                            "actionkit.example"),
                     1);
}

static void test_dkim_fail(void **state)
{
    (void)state;
    assert_int_equal(check1("mx.org.example; dkim=fail header.d=actionkit.example", EM_AUTH_DKIM,
                            "actionkit.example"),
                     0);
    assert_non_null(strstr(why, "dkim=fail header.d=actionkit.example"));
    /* a pass for another domain (the mailing provider's own) is not the sender's */
    assert_int_equal(check1("mx.org.example; dkim=pass header.d=sendgrid.example", EM_AUTH_DKIM,
                            "actionkit.example"),
                     0);
    /* a subdomain of the From domain, or a parent, is not equal */
    assert_int_equal(
        check1("mx.org.example; dkim=pass header.d=example", EM_AUTH_DKIM, "actionkit.example"), 0);
    /* a pass hidden in a comment or a quoted value is no result */
    assert_int_equal(check1("mx.org.example; dkim=fail (dkim=pass header.d=actionkit.example) "
                            "header.d=actionkit.example",
                            EM_AUTH_DKIM, "actionkit.example"),
                     0);
    assert_int_equal(check1("mx.org.example; dkim=fail header.b=\"; dkim=pass "
                            "header.d=actionkit.example\"",
                            EM_AUTH_DKIM, "actionkit.example"),
                     0);
    /* spf pass does not satisfy dkim */
    assert_int_equal(check1("mx.org.example; spf=pass smtp.mailfrom=actionkit.example",
                            EM_AUTH_DKIM, "actionkit.example"),
                     0);
    assert_non_null(strstr(why, "no dkim or spf result"));
}

static void test_spf_and_any(void **state)
{
    (void)state;
    assert_int_equal(check1("mx.org.example; spf=pass smtp.mailfrom=bounce@actionkit.example",
                            EM_AUTH_SPF, "actionkit.example"),
                     1);
    assert_int_equal(check1("mx.org.example; spf=pass smtp.mailfrom=actionkit.example", EM_AUTH_SPF,
                            "actionkit.example"),
                     1);
    assert_int_equal(check1("mx.org.example; spf=softfail smtp.mailfrom=actionkit.example",
                            EM_AUTH_SPF, "actionkit.example"),
                     0);
    assert_int_equal(check1("mx.org.example; dkim=fail header.d=actionkit.example; spf=pass "
                            "smtp.mailfrom=actionkit.example",
                            EM_AUTH_ANY, "actionkit.example"),
                     1);
    assert_int_equal(check1("mx.org.example; dkim=pass header.d=actionkit.example", EM_AUTH_SPF,
                            "actionkit.example"),
                     0);
    assert_int_equal(check1("anything", EM_AUTH_NONE, "actionkit.example"), 1);
}

static void test_which_header(void **state)
{
    (void)state;
    /* no header at all: a forged From has nothing to show */
    assert_int_equal(em_auth_check(NULL, 0, "mx.org.example", EM_AUTH_DKIM, "actionkit.example",
                                   why, sizeof(why)),
                     0);
    assert_non_null(strstr(why, "no Authentication-Results header"));
    /* a pass written by another server (or by the sender) is not trusted */
    const char *other[] = {"mx.evil.example; dkim=pass header.d=actionkit.example"};
    assert_int_equal(em_auth_check(other, 1, "mx.org.example", EM_AUTH_DKIM, "actionkit.example",
                                   why, sizeof(why)),
                     0);
    assert_non_null(strstr(why, "'mx.evil.example'"));
    /* ours on top says fail; a forged one below claiming our name says pass */
    const char *forged[] = {"mx.org.example; dkim=fail header.d=actionkit.example",
                            "mx.org.example; dkim=pass header.d=actionkit.example"};
    assert_int_equal(em_auth_check(forged, 2, "mx.org.example", EM_AUTH_DKIM, "actionkit.example",
                                   why, sizeof(why)),
                     0);
    /* a later hop's header on top (a spam filter) does not hide ours */
    const char *hops[] = {"filter.org.example; spam=no",
                          "mx.org.example; dkim=pass header.d=actionkit.example"};
    assert_int_equal(em_auth_check(hops, 2, "mx.org.example", EM_AUTH_DKIM, "actionkit.example",
                                   why, sizeof(why)),
                     1);
    /* an authserv-id that only starts like ours is another one */
    const char *prefix[] = {"mx.org.example.evil; dkim=pass header.d=actionkit.example"};
    assert_int_equal(em_auth_check(prefix, 1, "mx.org.example", EM_AUTH_DKIM, "actionkit.example",
                                   why, sizeof(why)),
                     0);
}

static void test_sender(void **state)
{
    (void)state;
    const char *allow[] = {"exports@actionkit.example", "@org.example"};
    assert_true(em_sender_allowed("exports@actionkit.example", allow, 2));
    assert_true(em_sender_allowed("Exports@ActionKit.Example", allow, 2));
    assert_true(em_sender_allowed("anyone@org.example", allow, 2));
    assert_false(em_sender_allowed("other@actionkit.example", allow, 2));
    assert_false(em_sender_allowed("anyone@sub.org.example", allow, 2));
    assert_false(em_sender_allowed("anyone@evilorg.example", allow, 2));
    assert_false(em_sender_allowed("org.example", allow, 2));
    assert_false(em_sender_allowed("@org.example", allow, 2));
    assert_false(em_sender_allowed("x@", allow, 2));
}

static void test_subject(void **state)
{
    (void)state;
    assert_true(em_subject_matches("Your ActionKit export: members", "actionkit export"));
    assert_false(em_subject_matches("Re: something else", "actionkit export"));
    assert_true(
        em_subject_matches("ActionKit export 2024-06-01", "ActionKit export 20[0-9][0-9]-*"));
    assert_false(em_subject_matches("Fwd: ActionKit export 2024-06-01", "ActionKit export *"));
    assert_true(em_subject_matches("anything", NULL));
    assert_true(em_subject_matches("anything", ""));
    assert_false(em_subject_matches(NULL, "export"));
}

static void test_modes(void **state)
{
    (void)state;
    assert_int_equal(em_auth_parse_mode("none"), EM_AUTH_NONE);
    assert_int_equal(em_auth_parse_mode("dkim"), EM_AUTH_DKIM);
    assert_int_equal(em_auth_parse_mode("spf"), EM_AUTH_SPF);
    assert_int_equal(em_auth_parse_mode("any"), EM_AUTH_ANY);
    assert_int_equal(em_auth_parse_mode("dmarc"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dkim_pass),   cmocka_unit_test(test_dkim_fail),
        cmocka_unit_test(test_spf_and_any), cmocka_unit_test(test_which_header),
        cmocka_unit_test(test_sender),      cmocka_unit_test(test_subject),
        cmocka_unit_test(test_modes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
