/* The one URL parser and redactor (src/util/url.c), with hostile spellings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sluice/log.h"
#include "sluice/url.h"

static void parse_ok(const char *in, sl_url *u)
{
    sl_error err;
    sl_error_clear(&err);
    if (sl_url_parse(in, u, &err) != 0) {
        fail_msg("'%s' refused: %s", in, err.msg);
    }
}

static void parse_bad(const char *in, const char *why_part)
{
    sl_error err;
    sl_error_clear(&err);
    sl_url u;
    int rc = sl_url_parse(in, &u, &err);
    if (rc == 0) {
        fail_msg("'%s' accepted (host '%s')", in, u.host);
    }
    assert_int_equal(rc, SL_ERR_INPUT);
    assert_non_null(u.why);
    if (why_part && !strstr(err.msg, why_part)) {
        fail_msg("'%s': message '%s' lacks '%s'", in, err.msg, why_part);
    }
    sl_url_free(&u);
}

static void test_parse_parts(void **state)
{
    (void)state;
    sl_url u;
    parse_ok("HTTPS://User:S3cret@API.Example.com:8443/v2/X?api_key=abc&page=2#frag", &u);
    assert_string_equal(u.scheme, "https");
    assert_string_equal(u.user, "User");
    assert_string_equal(u.password, "S3cret");
    assert_string_equal(u.host, "api.example.com");
    assert_int_equal(u.port, 8443);
    assert_string_equal(u.path, "/v2/X");
    assert_string_equal(u.query, "api_key=abc&page=2");
    assert_string_equal(u.fragment, "frag");
    assert_int_equal(u.ipv6, 0);
    sl_url_free(&u);

    /* the userinfo ends at the LAST '@' */
    parse_ok("https://user:pa@ss@host/", &u);
    assert_string_equal(u.user, "user");
    assert_string_equal(u.password, "pa@ss");
    assert_string_equal(u.host, "host");
    assert_int_equal(u.port, -1);
    sl_url_free(&u);

    /* %40 stays encoded in the parts; decoding is explicit */
    parse_ok("postgres://app:p%40ss%2Fw@db.internal:5432/warehouse?sslmode=require", &u);
    assert_string_equal(u.password, "p%40ss%2Fw");
    char dec[64];
    assert_int_equal(sl_url_decode(u.password, strlen(u.password), dec, sizeof(dec)), 6);
    assert_string_equal(dec, "p@ss/w");
    assert_string_equal(u.host, "db.internal");
    assert_int_equal(u.port, 5432);
    assert_string_equal(u.path, "/warehouse");
    sl_url_free(&u);

    parse_ok("postgres://[::1]:5432/db", &u);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.ipv6, 1);
    assert_int_equal(u.port, 5432);
    assert_null(u.user);
    assert_null(u.password);
    sl_url_free(&u);

    parse_ok("http://[2001:DB8::a]/", &u);
    assert_string_equal(u.host, "2001:db8::a");
    sl_url_free(&u);

    parse_ok("postgres://host/db?password=x", &u);
    assert_string_equal(u.query, "password=x");
    assert_null(u.password);
    sl_url_free(&u);

    /* user without password, empty password, no path, empty host */
    parse_ok("https://tok@host", &u);
    assert_string_equal(u.user, "tok");
    assert_null(u.password);
    assert_string_equal(u.path, "");
    assert_null(u.query);
    sl_url_free(&u);
    parse_ok("https://u:@host:/x", &u);
    assert_string_equal(u.password, "");
    assert_int_equal(u.port, -1);
    sl_url_free(&u);
    parse_ok("file:///etc/passwd", &u);
    assert_string_equal(u.host, "");
    assert_string_equal(u.path, "/etc/passwd");
    sl_url_free(&u);
    parse_ok("http://h:0/", &u);
    assert_int_equal(u.port, 0);
    sl_url_free(&u);
    parse_ok("http://h:65535", &u);
    assert_int_equal(u.port, 65535);
    sl_url_free(&u);
}

static void test_parse_refuses(void **state)
{
    (void)state;
    parse_bad("", "not a URL");
    parse_bad("/etc/passwd", "not a URL");
    parse_bad("host/x", "not a URL");
    parse_bad("1http://host/", "not a URL");
    parse_bad("://host/", "not a URL");
    parse_bad("http:/host/", "not a URL");
    /* a raw '/' in the password: the authority is "user:pa" */
    parse_bad("https://user:pa/ss@host/path", "port");
    parse_bad("http://h:65536/", "port");
    parse_bad("http://h:99999999999999999999/", "port");
    parse_bad("http://h:-1/", "port");
    parse_bad("http://h:8o/", "port");
    parse_bad("http://::1/", "IPv6");
    parse_bad("http://[::1/", "closing");
    parse_bad("http://[::1]x/", "after the IPv6");
    parse_bad("http://[]/", "empty IPv6");
    parse_bad("http://[::g]/", "IPv6");
    parse_bad("http://[fe80::1%eth0]/", "zone");
    parse_bad("http://ho st/", "space");
    parse_bad("http://host/a\r\nX-Evil: 1", "control");
    parse_bad("http://ho\"st/", "host name");
    parse_bad("http://ho%zzst/", "percent");
    parse_bad("http://host\\@evil/", "user name");
    parse_bad("http://a\"b:c@evil/", "user name");
    /* the secret is never in the message */
    sl_error err;
    sl_url u;
    assert_int_not_equal(sl_url_parse("https://u:Zq9SECRET@h:99999/?token=Zq9TOKEN", &u, &err), 0);
    assert_null(strstr(err.msg, "Zq9SECRET"));
    assert_null(strstr(err.msg, "Zq9TOKEN"));
    sl_url_free(&u);
    sl_url_free(NULL);
}

static void check_redact(const char *in, int flags, const char *want)
{
    char out[256];
    size_t n = sl_url_redact(in, out, sizeof(out), flags);
    if (strcmp(out, want) != 0) {
        fail_msg("redact('%s', %d) = '%s', want '%s'", in, flags, out, want);
    }
    assert_int_equal(n, strlen(want));
}

static void test_redact(void **state)
{
    (void)state;
    check_redact("https://api.example.com/users/track", 0, "https://api.example.com/users/track");
    check_redact("https://user:s3cret@api.example.com:8443/v2/x?api_key=abc#frag", 0,
                 "https://api.example.com:8443/v2/x");
    check_redact("http://tok@host", 0, "http://host");
    check_redact("http://host?token=abc", 0, "http://host");
    check_redact("http://[::1]:8080/p?q", 0, "http://[::1]:8080/p");
    check_redact("https://u:p@ss@host/path", 0, "https://host/path");
    check_redact("https://user:pa/ss@host/path", 0, "https://[malformed URL]");
    check_redact("https://user:pa/ss@host/path", SL_URL_SHOW_QUERY | SL_URL_SHOW_USER,
                 "https://[malformed URL]");
    check_redact("http://host/a\r\nX-Evil: 1", 0, "http://host/a??X-Evil: 1");
    check_redact("", 0, "");
    check_redact(NULL, 0, "");
    /* no scheme: still an authority, the userinfo still goes */
    check_redact("user:pw@host/x", 0, "host/x");
    check_redact("bucket.s3.amazonaws.com/x.csv", 0, "bucket.s3.amazonaws.com/x.csv");
    /* user shown, password masked */
    check_redact("https://u:p@ss@host/path", SL_URL_SHOW_USER, "https://u:[redacted]@host/path");
    check_redact("https://tok@host/", SL_URL_SHOW_USER, "https://tok@host/");
    check_redact("postgres://app:p%40ss@[::1]:5432/db", SL_URL_SHOW_USER,
                 "postgres://app:[redacted]@[::1]:5432/db");
    /* query shown, secrets masked, whatever their case; fragment dropped */
    check_redact("postgres://host/db?password=x&sslmode=require", SL_URL_SHOW_QUERY,
                 "postgres://host/db?password=[redacted]&sslmode=require");
    check_redact("https://b.s3.amazonaws.com/e.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256&"
                 "X-Amz-Credential=AKIA%2F2024&X-Amz-Expires=21600&X-Amz-Signature=abcdef#x",
                 SL_URL_SHOW_QUERY,
                 "https://b.s3.amazonaws.com/e.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256&"
                 "X-Amz-Credential=[redacted]&X-Amz-Expires=21600&X-Amz-Signature=[redacted]");
    check_redact("http://h/?TOKEN=1&Api_Key=2&sig=3&monkey=4&page=5&flag&access_token=6;key=7",
                 SL_URL_SHOW_QUERY,
                 "http://h/?TOKEN=[redacted]&Api_Key=[redacted]&sig=[redacted]&monkey=4&page=5&"
                 "flag&access_token=[redacted];key=[redacted]");
    /* output bounded, NUL-terminated */
    char small[8];
    assert_int_equal(sl_url_redact("https://example.com/", small, sizeof(small), 0), 7);
    assert_string_equal(small, "https:/");
    char big[700];
    memset(big, 'a', sizeof(big) - 4);
    memcpy(big + sizeof(big) - 4, "://", 4);
    char out[512];
    assert_int_equal(sl_url_redact(big, out, sizeof(out), 0), 511);
    assert_int_equal(sl_url_redact(big, small, sizeof(small), 0), 7);
    assert_int_equal(sl_url_redact("x", small, 0, 0), 0);
}

static void test_secret_params(void **state)
{
    (void)state;
    const char *yes[] = {"token",
                         "key",
                         "api_key",
                         "APIKEY",
                         "secret",
                         "signature",
                         "sig",
                         "password",
                         "access_token",
                         "X-Amz-Signature",
                         "x-amz-security-token",
                         "client_secret",
                         "stripe_key",
                         "session_token",
                         "db-password"};
    const char *no[] = {"page",    "monkey",        "keys", "sigma",
                        "expires", "X-Amz-Expires", "",     "tokens"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (!sl_url_secret_param(yes[i], strlen(yes[i]))) {
            fail_msg("'%s' not seen as secret", yes[i]);
        }
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        if (sl_url_secret_param(no[i], strlen(no[i]))) {
            fail_msg("'%s' seen as secret", no[i]);
        }
    }
}

static void test_decode(void **state)
{
    (void)state;
    char out[16];
    assert_int_equal(sl_url_decode("a%20b+c", 7, out, sizeof(out)), 5);
    assert_string_equal(out, "a b+c");
    assert_int_equal(sl_url_decode("%4", 2, out, sizeof(out)), -1);
    assert_int_equal(sl_url_decode("%", 1, out, sizeof(out)), -1);
    assert_int_equal(sl_url_decode("%zz", 3, out, sizeof(out)), -1);
    assert_int_equal(sl_url_decode("abcdefgh", 8, out, 4), -1);
    assert_int_equal(sl_url_decode("", 0, out, sizeof(out)), 0);
}

static void test_register_secrets(void **state)
{
    (void)state;
    sl_secrets_clear();
    sl_url_register_secrets("postgres://app:p%40ssword@h1:5432,h2:5433/db?password=qwerty1&"
                            "sslmode=require&api_key=K%2Bey99");
    char msg[512];
    snprintf(msg, sizeof(msg),
             "raw p%%40ssword dec p@ssword q qwerty1 k K%%2Bey99 kd K+ey99 mode require");
    sl_redact(msg, sizeof(msg));
    assert_string_equal(msg, "raw [redacted] dec [redacted] q [redacted] k [redacted] kd "
                             "[redacted] mode require");
    sl_secrets_clear();
    /* nothing for a URL without secrets, or not a URL */
    sl_url_register_secrets("https://host/x?page=2");
    sl_url_register_secrets("host=x password=y");
    sl_url_register_secrets(NULL);
    snprintf(msg, sizeof(msg), "page 2 host x");
    sl_redact(msg, sizeof(msg));
    assert_string_equal(msg, "page 2 host x");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_parts), cmocka_unit_test(test_parse_refuses),
        cmocka_unit_test(test_redact),      cmocka_unit_test(test_secret_params),
        cmocka_unit_test(test_decode),      cmocka_unit_test(test_register_secrets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
