/* The S3 client's pure parts (src/net/s3.c): s3:// URL parsing, the checks
 * sl_s3_open makes before any request (region, endpoint, credentials from
 * the environment) and the registration of the secrets with the redactor.
 * Requests are tested against fake_s3 in tests/integration/test_s3.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sluice/log.h"
#include "sluice/s3.h"

static int parse(const char *url, char *b, char *k, sl_error *err)
{
    sl_error_clear(err);
    return sl_s3_url_parse(url, b, 64, k, 1025, err);
}

static void test_url_ok(void **state)
{
    (void)state;
    char b[64], k[1025];
    sl_error err;
    assert_int_equal(parse("s3://my-bucket/sluice-staging/", b, k, &err), 0);
    assert_string_equal(b, "my-bucket");
    assert_string_equal(k, "sluice-staging/");
    assert_int_equal(parse("s3://my.bucket.1", b, k, &err), 0);
    assert_string_equal(b, "my.bucket.1");
    assert_string_equal(k, "");
    assert_int_equal(parse("S3://abc/", b, k, &err), 0);
    assert_string_equal(k, "");
    /* A key is taken literally: '?', '#', spaces and '%' are key bytes. */
    assert_int_equal(parse("s3://abc/a b/c?d#e%20", b, k, &err), 0);
    assert_string_equal(k, "a b/c?d#e%20");
}

static void test_url_bad(void **state)
{
    (void)state;
    char b[64], k[1025];
    sl_error err;
    struct {
        const char *url;
        const char *says;
    } cases[] = {
        {"https://bucket/x", "expected s3://bucket/prefix/"},
        {"s3://", "no bucket name"},
        {"s3:///key", "no bucket name"},
        {"s3://ab/key", "invalid bucket name 'ab'"},
        {"s3://Bucket/key", "invalid bucket name 'Bucket'"},
        {"s3://my_bucket/key", "invalid bucket name"},
        {"s3://-abc/key", "invalid bucket name"},
        {"s3://abc-/key", "invalid bucket name"},
        {"s3://a..b/key", "invalid bucket name"},
        {"s3://abc/k\x01", "control character"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_not_equal(parse(cases[i].url, b, k, &err), 0);
        if (!strstr(err.msg, cases[i].says)) {
            fail_msg("%s: message '%s' lacks '%s'", cases[i].url, err.msg, cases[i].says);
        }
    }
    assert_int_not_equal(sl_s3_url_parse(NULL, b, 64, k, 1025, &err), 0);
    /* A key longer than S3's 1024 bytes. */
    char big[1200] = "s3://abc/";
    memset(big + 9, 'k', 1100);
    big[1109] = '\0';
    assert_int_not_equal(parse(big, b, k, &err), 0);
    assert_non_null(strstr(err.msg, "at most 1024"));
    /* Too small a buffer is an error, not a truncation. */
    assert_int_not_equal(sl_s3_url_parse("s3://abcdef/key", b, 4, k, 1025, &err), 0);
}

static void clear_env(void)
{
    const char *vars[] = {"AWS_ACCESS_KEY_ID",
                          "AWS_SECRET_ACCESS_KEY",
                          "AWS_SESSION_TOKEN",
                          "AWS_REGION",
                          "AWS_DEFAULT_REGION",
                          "SLUICE_S3_ENDPOINT",
                          "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                          "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                          "AWS_EC2_METADATA_DISABLED"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        unsetenv(vars[i]);
    }
}

static void test_open_checks(void **state)
{
    (void)state;
    sl_s3 *s = NULL;
    sl_error err;
    clear_env();
    setenv("AWS_ACCESS_KEY_ID", "AKIDUNITTEST0001", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "unit-SECRET-access-key", 1);
    assert_int_not_equal(sl_s3_open(&s, NULL, &err), 0);
    assert_null(s);
    assert_non_null(strstr(err.msg, "no region"));
    assert_int_not_equal(sl_s3_open(&s, "US East", &err), 0);
    assert_non_null(strstr(err.msg, "not a region name"));
    setenv("SLUICE_S3_ENDPOINT", "ftp://x", 1);
    assert_int_not_equal(sl_s3_open(&s, "us-east-1", &err), 0);
    assert_non_null(strstr(err.msg, "SLUICE_S3_ENDPOINT"));
    setenv("SLUICE_S3_ENDPOINT", "http://127.0.0.1:9/", 1);
    unsetenv("AWS_SECRET_ACCESS_KEY");
    assert_int_not_equal(sl_s3_open(&s, "us-east-1", &err), 0);
    assert_non_null(strstr(err.msg, "AWS_SECRET_ACCESS_KEY is not"));
    unsetenv("AWS_ACCESS_KEY_ID");
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    assert_int_not_equal(sl_s3_open(&s, "us-east-1", &err), 0);
    assert_non_null(strstr(err.msg, "no AWS credentials"));
    clear_env();
}

static void test_open_registers_secrets(void **state)
{
    (void)state;
    sl_s3 *s = NULL;
    sl_error err;
    clear_env();
    setenv("AWS_ACCESS_KEY_ID", "AKIDUNITTEST0001", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "unit-SECRET-access-key-2", 1);
    setenv("AWS_SESSION_TOKEN", "unit-SESSION-token-2", 1);
    setenv("AWS_DEFAULT_REGION", "eu-central-1", 1);
    setenv("SLUICE_S3_ENDPOINT", "http://127.0.0.1:9", 1);
    assert_int_equal(sl_s3_open(&s, NULL, &err), 0);
    assert_non_null(s);
    char line[256] = "key unit-SECRET-access-key-2 token unit-SESSION-token-2";
    sl_redact(line, sizeof(line));
    assert_null(strstr(line, "unit-SECRET"));
    assert_null(strstr(line, "unit-SESSION"));
    /* A request to a closed port fails with the method and s3:// URL, after
     * the retries (one attempt here). */
    setenv("SLUICE_S3_MAX_ATTEMPTS", "1", 1);
    sl_s3_close(s);
    assert_int_equal(sl_s3_open(&s, NULL, &err), 0);
    assert_int_not_equal(sl_s3_delete(s, "bkt", "a/b", &err), 0);
    assert_non_null(strstr(err.msg, "S3 DELETE s3://bkt/a/b: "));
    assert_int_not_equal(sl_s3_delete(s, "BAD_bucket", "a", &err), 0);
    assert_non_null(strstr(err.msg, "invalid bucket name"));
    sl_s3_close(s);
    sl_s3_close(NULL);
    unsetenv("SLUICE_S3_MAX_ATTEMPTS");
    clear_env();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_ok),
        cmocka_unit_test(test_url_bad),
        cmocka_unit_test(test_open_checks),
        cmocka_unit_test(test_open_registers_secrets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
