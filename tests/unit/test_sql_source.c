/* sql source: the mapping of database values to record fields (sqlv.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../plugins/sources/sql/sqlv.h"
#include "sluice/record.h"

/* The record as JSON, the way sinks see it. */
static const char *as_json(sl_record *r, sl_buf *b)
{
    sl_buf_reset(b);
    assert_int_equal(sl_record_to_json(r, b), 0);
    return sl_buf_cstr(b);
}

static void pg_one(const char *json_expected, unsigned oid, const char *val, int isnull)
{
    sl_record r;
    sl_buf b = {0};
    sl_record_init(&r);
    assert_int_equal(sqlv_pg_add(&r, "v", 1, oid, val, val ? strlen(val) : 0, isnull), 0);
    assert_string_equal(as_json(&r, &b), json_expected);
    sl_record_free(&r);
    sl_buf_free(&b);
}

static void test_pg_numbers(void **state)
{
    (void)state;
    pg_one("{\"v\":42}", SQLV_INT4OID, "42", 0);
    pg_one("{\"v\":-32768}", SQLV_INT2OID, "-32768", 0);
    pg_one("{\"v\":-9223372036854775808}", SQLV_INT8OID, "-9223372036854775808", 0);
    pg_one("{\"v\":9223372036854775807}", SQLV_INT8OID, "9223372036854775807", 0);
    /* numeric: exact text, even past a double's precision */
    pg_one("{\"v\":12.50}", SQLV_NUMERICOID, "12.50", 0);
    pg_one("{\"v\":123456789012345678901234567890}", SQLV_NUMERICOID,
           "123456789012345678901234567890", 0);
    pg_one("{\"v\":\"NaN\"}", SQLV_NUMERICOID, "NaN", 0);
    pg_one("{\"v\":0.1}", SQLV_FLOAT8OID, "0.1", 0);
    pg_one("{\"v\":1e+20}", SQLV_FLOAT8OID, "1e+20", 0);
    pg_one("{\"v\":\"-Infinity\"}", SQLV_FLOAT4OID, "-Infinity", 0);

    sl_record r;
    sl_record_init(&r);
    assert_int_equal(sqlv_pg_add(&r, "n", 1, SQLV_NUMERICOID, "2.25", 4, 0), 0);
    assert_int_equal(r.fields[0].type, SL_T_FLOAT);
    assert_true(r.fields[0].v.f == 2.25);
    assert_int_equal(sqlv_pg_add(&r, "i", 1, SQLV_NUMERICOID, "7", 1, 0), 0);
    assert_int_equal(r.fields[1].type, SL_T_INT);
    assert_int_equal(r.fields[1].v.i, 7);
    sl_record_free(&r);
}

static void test_pg_other(void **state)
{
    (void)state;
    pg_one("{\"v\":true}", SQLV_BOOLOID, "t", 0);
    pg_one("{\"v\":false}", SQLV_BOOLOID, "f", 0);
    pg_one("{\"v\":null}", SQLV_INT4OID, "", 1);
    pg_one("{\"v\":null}", SQLV_JSONBOID, "", 1);
    pg_one("{\"v\":\"2024-01-02T03:04:05.123456Z\"}", SQLV_TIMESTAMPTZOID,
           "2024-01-02 03:04:05.123456+00", 0);
    pg_one("{\"v\":\"2024-01-02T03:04:05+05:30\"}", SQLV_TIMESTAMPTZOID,
           "2024-01-02 03:04:05+05:30", 0);
    pg_one("{\"v\":\"2024-01-02T03:04:05-07:00\"}", SQLV_TIMESTAMPTZOID, "2024-01-02 03:04:05-07",
           0);
    pg_one("{\"v\":\"2024-01-02T03:04:05\"}", SQLV_TIMESTAMPOID, "2024-01-02 03:04:05", 0);
    pg_one("{\"v\":\"infinity\"}", SQLV_TIMESTAMPOID, "infinity", 0);
    pg_one("{\"v\":\"0044-03-15 12:00:00+00 BC\"}", SQLV_TIMESTAMPTZOID,
           "0044-03-15 12:00:00+00 BC", 0);
    pg_one("{\"v\":{\"a\": [1, 2]}}", SQLV_JSONBOID, "{\"a\": [1, 2]}", 0);
    pg_one("{\"v\":[]}", SQLV_JSONOID, "[]", 0);
    pg_one("{\"v\":\"x\\\"y\"}", SQLV_JSONOID, "\"x\\\"y\"", 0);
    pg_one("{\"v\":3}", SQLV_JSONBOID, "3", 0);
    pg_one("{\"v\":2.5}", SQLV_JSONBOID, "2.5", 0);
    pg_one("{\"v\":true}", SQLV_JSONBOID, "true", 0);
    pg_one("{\"v\":null}", SQLV_JSONBOID, "null", 0);
    pg_one("{\"v\":\"h\\\"é\"}", 25 /* text */, "h\"é", 0);
    pg_one("{\"v\":\"\"}", 25, "", 0);
}

static void test_helpers(void **state)
{
    (void)state;
    assert_true(sqlv_json_number("0", 1));
    assert_true(sqlv_json_number("-1.5e-3", 7));
    assert_false(sqlv_json_number("01", 2));
    assert_false(sqlv_json_number("1.", 2));
    assert_false(sqlv_json_number("+1", 2));
    assert_false(sqlv_json_number("", 0));
    char out[64];
    assert_int_equal(sqlv_iso_timestamp("2024-01-02 03:04", 16, out, sizeof(out)), 0);
    assert_int_equal(sqlv_iso_timestamp("2024-01-02 03:04:05.", 20, out, sizeof(out)), 0);
    assert_int_equal(sqlv_iso_timestamp("2024-01-02 03:04:05+00", 22, out, sizeof(out)), 20);
    assert_string_equal(out, "2024-01-02T03:04:05Z");
}

static void test_sqlite(void **state)
{
    (void)state;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "CREATE TABLE t (i INTEGER, r REAL, b BOOLEAN, j JSON, s TEXT, x BLOB, n, "
                     "bj JSON, bt BOOL);"
                     "INSERT INTO t VALUES (-5, 0.25, 0, '[1,{\"a\":2}]', 'é', x'00ff', NULL, "
                     "'{not json', 'true')",
                     NULL, NULL, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT * FROM t", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    sl_record r;
    sl_buf b = {0};
    sl_record_init(&r);
    for (int i = 0; i < sqlite3_column_count(st); i++) {
        const char *nm = sqlite3_column_name(st, i);
        assert_int_equal(
            sqlv_sqlite_add(&r, nm, (uint32_t)strlen(nm), st, i, sqlite3_column_decltype(st, i)),
            0);
    }
    assert_string_equal(as_json(&r, &b),
                        "{\"i\":-5,\"r\":0.25,\"b\":false,\"j\":[1,{\"a\":2}],\"s\":\"é\","
                        "\"x\":\"\\\\x00ff\",\"n\":null,\"bj\":\"{not json\",\"bt\":true}");
    sl_record_free(&r);
    sl_buf_free(&b);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pg_numbers),
        cmocka_unit_test(test_pg_other),
        cmocka_unit_test(test_helpers),
        cmocka_unit_test(test_sqlite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
