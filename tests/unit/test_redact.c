/* The secret redactor (src/util/log.c): encoded forms a server may echo,
 * longest first, hostile secrets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "sluice/log.h"

static int reset(void **state)
{
    (void)state;
    sl_secrets_clear();
    return 0;
}

static void check(const char *in, const char *want)
{
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", in);
    sl_redact(buf, sizeof(buf));
    if (strcmp(buf, want) != 0) {
        fail_msg("redact('%s') = '%s', want '%s'", in, buf, want);
    }
}

/* issue 7 item 10: "tok-1234" registered before "tok-1234-longer" left
 * "-longer" printed */
static void test_longest_first(void **state)
{
    (void)state;
    assert_int_equal(sl_secret_register("tok-1234"), 0);
    assert_int_equal(sl_secret_register("tok-1234-longer"), 0);
    check("a tok-1234-longer b tok-1234 c", "a [redacted] b [redacted] c");
    sl_secrets_clear();
    sl_secret_register("tok-1234-longer");
    sl_secret_register("tok-1234");
    check("tok-1234-longertok-1234", "[redacted][redacted]");
    /* a secret that is a piece of the mark is not matched inside marks */
    sl_secret_register("dacted]");
    check("x tok-1234 dacted] y", "x [redacted] [redacted] y");
}

static void test_percent_and_json(void **state)
{
    (void)state;
    const char *key = "s3cr\"t/+ k%y\\é";
    sl_secret_register(key);
    check("raw s3cr\"t/+ k%y\\é end", "raw [redacted] end");
    check("url s3cr%22t%2F%2B%20k%25y%5C%C3%A9 end", "url [redacted] end");
    check("url s3cr%22t%2f%2b%20k%25y%5c%c3%a9 end", "url [redacted] end");
    check("form s3cr%22t%2F%2B+k%25y%5C%C3%A9 end", "form [redacted] end");
    check("{\"echo\":\"s3cr\\\"t/+ k%y\\\\é\"}", "{\"echo\":\"[redacted]\"}");
    check("{\"echo\":\"s3cr\\\"t\\/+ k%y\\\\é\"}", "{\"echo\":\"[redacted]\"}");
    check("{\"echo\":\"s3cr\\\"t/+ k%y\\\\\\u00e9\"}", "{\"echo\":\"[redacted]\"}");
    check("{\"echo\":\"s3cr\\\"t/+ k%y\\\\\\u00E9\"}", "{\"echo\":\"[redacted]\"}");
    /* regex and printf metacharacters are just bytes */
    sl_secret_register("a.*b[0-9]+$^%s%n");
    check("x a.*b[0-9]+$^%s%n y aXXb0 z", "x [redacted] y aXXb0 z");
    /* control characters in a secret, JSON-escaped by the echoing server */
    sl_secret_register("line1\nline2\t\x01");
    check("{\"m\":\"line1\\nline2\\t\\u0001\"}", "{\"m\":\"[redacted]\"}");
}

static void b64(const char *plain, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)plain, (int)strlen(plain));
}

/* A Bearer token or a Basic credential echoed base64-encoded: found at any
 * alignment inside a longer base64 text. */
static void test_base64(void **state)
{
    (void)state;
    const char *tok = "sk-live-0123456789abcdef";
    sl_secret_register(tok);
    char enc[256], line[512], got[512];
    const char *prefixes[] = {"", "u", "us", "user:", "Bearer ", "ab"};
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        char plain[128];
        snprintf(plain, sizeof(plain), "%s%s!", prefixes[i], tok);
        b64(plain, enc);
        snprintf(line, sizeof(line), "echo: %s", enc);
        snprintf(got, sizeof(got), "%s", line);
        sl_redact(got, sizeof(got));
        if (!strstr(got, "[redacted]")) {
            fail_msg("base64 of '%s' (%s) not redacted", plain, enc);
        }
        /* what is left cannot decode back to the secret: at most 2 chars of
         * a group around each edge survive */
        assert_null(strstr(got, "0123456789"));
    }
    /* URL-safe alphabet */
    sl_secret_register("\xfb\xff\xbf~~\xfb\xff\xbf~~");
    b64("\xfb\xff\xbf~~\xfb\xff\xbf~~", enc);
    for (char *c = enc; *c; c++) {
        *c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
    }
    snprintf(line, sizeof(line), "%s", enc);
    sl_redact(line, sizeof(line));
    assert_non_null(strstr(line, "[redacted]"));
    /* the whole Basic credential, as the http sink registers it */
    sl_secrets_clear();
    b64("api:hunter2hunter2", enc);
    sl_secret_register(enc);
    snprintf(line, sizeof(line), "Authorization: Basic %s", enc);
    sl_redact(line, sizeof(line));
    assert_string_equal(line, "Authorization: Basic [redacted]");
}

static void test_short_and_empty(void **state)
{
    (void)state;
    assert_int_equal(sl_secret_register(NULL), -1);
    assert_int_equal(sl_secret_register(""), -1);
    assert_int_equal(sl_secret_register("abc"), -1);
    check("abc abcd", "abc abcd");
    assert_int_equal(sl_secret_register("abcd"), 0);
    assert_int_equal(sl_secret_register("abcd"), 0); /* again: known */
    check("abc abcd", "abc [redacted]");
    /* a 4-byte secret's base64 fragment (5 chars) is not registered: too
     * common in ordinary text */
    check("YWJjZA", "YWJjZA");
}

static void test_bounds(void **state)
{
    (void)state;
    sl_secret_register("abcd");
    /* the mark is longer than the secret: the text is cut, never overflows */
    char small[12] = "abcdabcdab";
    sl_redact(small, sizeof(small));
    assert_string_equal(small, "[redacted]["); /* 11 bytes + NUL */
    char tiny[4] = "abc";
    sl_redact(tiny, sizeof(tiny));
    assert_string_equal(tiny, "abc");
    char one[1] = "";
    sl_redact(one, sizeof(one));
    assert_null(sl_redact(NULL, 10));
    /* unterminated within cap: treated as cap - 1 bytes */
    char raw[8];
    memcpy(raw, "xxabcdxx", 8);
    sl_redact(raw, sizeof(raw));
    assert_string_equal(raw, "xx[reda");
    /* no secrets: untouched */
    sl_secrets_clear();
    char t[16] = "abcd";
    sl_redact(t, sizeof(t));
    assert_string_equal(t, "abcd");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_longest_first, reset),
        cmocka_unit_test_setup(test_percent_and_json, reset),
        cmocka_unit_test_setup(test_base64, reset),
        cmocka_unit_test_setup(test_short_and_empty, reset),
        cmocka_unit_test_setup(test_bounds, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
