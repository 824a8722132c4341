/* The Redshift dialect's pure parts: the redshift:// URL handed to libpq,
 * the COPY statement, the load-error message built from STL_LOAD_ERRORS
 * rows, VARCHAR byte limits. (The SQL itself runs in
 * tests/integration/test_redshift_pg.sh and test_redshift_copy.sh.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../plugins/sinks/sql_table/rs.h"
#include "sluice/pg.h"

static void test_url(void **state)
{
    (void)state;
    assert_true(sl_pg_is_redshift_url("redshift://u:p@h:5439/db"));
    assert_false(sl_pg_is_url("redshift://u:p@h/db?sslmode=require"));
    assert_true(sl_pg_is_url("postgres://u@h/db"));
    struct {
        const char *in, *out;
    } c[] = {
        {"redshift://u:p@c.abc.us-east-1.redshift.amazonaws.com/cs",
         "postgres://u:p@c.abc.us-east-1.redshift.amazonaws.com:5439/cs"},
        {"redshift://u:p@h:5440/db?sslmode=require", "postgres://u:p@h:5440/db?sslmode=require"},
        {"redshift://u:p@h?sslmode=require", "postgres://u:p@h:5439?sslmode=require"},
        {"redshift://u:p%40x@[::1]/db", "postgres://u:p%40x@[::1]:5439/db"},
        {"redshift://u:p@[::1]:6000/db", "postgres://u:p@[::1]:6000/db"},
        {"redshift:///db", "postgres:///db"},
    };
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        char *got = sl_pg_redshift_conninfo(c[i].in);
        assert_non_null(got);
        assert_string_equal(got, c[i].out);
        free(got);
    }
    assert_null(sl_pg_redshift_conninfo("postgres://h/db"));
}

static void test_copy_sql(void **state)
{
    (void)state;
    sl_buf b;
    sl_buf_init(&b, 1 << 20);
    rs_copy_sql(&b, "\"id\",\"end\"", 1, "bkt", "p/t/run-1/manifest.json",
                "arn:aws:iam::123456789012:role/load", "eu-west-1");
    assert_string_equal(sl_buf_cstr(&b),
                        "COPY sluice_stage (\"id\",\"end\",_sluice_seq) FROM "
                        "'s3://bkt/p/t/run-1/manifest.json' IAM_ROLE "
                        "'arn:aws:iam::123456789012:role/load' MANIFEST FORMAT AS CSV GZIP "
                        "TIMEFORMAT 'auto' DATEFORMAT 'auto' MAXERROR 0 COMPUPDATE OFF "
                        "STATUPDATE OFF REGION 'eu-west-1'");
    sl_buf_reset(&b);
    rs_copy_sql(&b, "\"id\"", 0, "bkt", "m.json", "arn:x", NULL);
    assert_null(strstr(sl_buf_cstr(&b), "REGION"));
    assert_null(strstr(sl_buf_cstr(&b), "_sluice_seq"));
    sl_buf_free(&b);
}

static void test_load_error_text(void **state)
{
    (void)state;
    sl_buf b;
    sl_buf_init(&b, 1 << 20);
    rs_load_error e[2] = {
        {"s3://bkt/p/t/run-1/part-00002.csv.gz", 17, "signed_at", "timestamp", "", "yesterday",
         1206, "Invalid timestamp format or value [YYYY-MM-DD HH24:MI:SS]"},
        {"s3://bkt/p/t/run-1/part-00002.csv.gz", 40, "email", "varchar", "20", NULL, 1204,
         "String length exceeds DDL length"},
    };
    rs_load_error_text(&b, e, 2, 5);
    assert_string_equal(sl_buf_cstr(&b),
                        "part-00002.csv.gz line 17, column 'signed_at' (timestamp): Invalid "
                        "timestamp format or value [YYYY-MM-DD HH24:MI:SS] (error 1206); value "
                        "'yesterday'; part-00002.csv.gz line 40, column 'email' (varchar(20)): "
                        "String length exceeds DDL length (error 1204); and 5 more");
    /* a long value is cut on a UTF-8 boundary; missing parts are left out */
    char v[200];
    memset(v, 'a', sizeof(v));
    memcpy(v + 79, "\xc3\xa9", 2);
    v[199] = '\0';
    rs_load_error l = {NULL, 3, NULL, NULL, NULL, v, 0, NULL};
    sl_buf_reset(&b);
    rs_load_error_text(&b, &l, 1, 0);
    const char *s = sl_buf_cstr(&b);
    assert_true(strncmp(s, "line 3: refused; value 'aaa", 27) == 0);
    assert_non_null(strstr(s, "a'..."));
    assert_null(strstr(s, "\xc3'"));
    sl_buf_free(&b);
}

static void test_type_bytes(void **state)
{
    (void)state;
    assert_int_equal(rs_type_bytes("character varying(256)"), 256);
    assert_int_equal(rs_type_bytes("character(2)"), 2);
    assert_int_equal(rs_type_bytes("character varying"), 0);
    assert_int_equal(rs_type_bytes("integer"), 0);
    assert_int_equal(rs_type_bytes("timestamp without time zone"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url),
        cmocka_unit_test(test_copy_sql),
        cmocka_unit_test(test_load_error_text),
        cmocka_unit_test(test_type_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
