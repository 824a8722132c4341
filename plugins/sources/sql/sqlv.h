/* sql source: how database values become typed record fields. Private to
 * the plugin (and its unit test, tests/unit/test_sql_source.c).
 *
 * Postgres values arrive as text in the server's output format (the session
 * is set to DateStyle ISO, TimeZone UTC), typed by the column's type OID:
 *   int2/int4/int8/oid            -> int
 *   float4/float8/numeric         -> float, the server's text kept for
 *                                    writers (SL_FIELD_NUMTEXT, exact);
 *                                    an integral numeric that fits -> int;
 *                                    NaN / Infinity -> the string
 *   bool                          -> bool
 *   timestamp / timestamptz       -> ISO 8601 text ("2024-01-02T03:04:05Z",
 *                                    no zone for timestamp without one)
 *   date, time, interval, ...     -> the server's (ISO) text
 *   json / jsonb                  -> object/array: a JSON field; a scalar:
 *                                    the matching type (string, number,
 *                                    bool, null)
 *   NULL                          -> null; anything else -> string.
 * SQLite values are typed by their storage class (INTEGER -> int, REAL ->
 * float, TEXT -> string, BLOB -> "\x" hex text, NULL -> null), refined by the
 * column's declared type: BOOL/BOOLEAN 0/1 -> bool, JSON text holding an
 * object/array -> a JSON field. */
#ifndef SLUICE_SQLV_H
#define SLUICE_SQLV_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "sluice/record.h"

/* Postgres type OIDs (pg_type.h is a server header). */
#define SQLV_BOOLOID 16
#define SQLV_INT8OID 20
#define SQLV_INT2OID 21
#define SQLV_INT4OID 23
#define SQLV_OIDOID 26
#define SQLV_JSONOID 114
#define SQLV_FLOAT4OID 700
#define SQLV_FLOAT8OID 701
#define SQLV_TIMESTAMPOID 1114
#define SQLV_TIMESTAMPTZOID 1184
#define SQLV_NUMERICOID 1700
#define SQLV_JSONBOID 3802

/* 1 when s (len bytes) is a JSON number (RFC 8259). */
int sqlv_json_number(const char *s, size_t len);

/* Server timestamp text ("2024-01-02 03:04:05.5+00", "... BC", "infinity")
 * as ISO 8601 into out (cap bytes): the space becomes 'T', a zero offset
 * "Z", "+05" "+05:00". Returns the length, or 0 when in is not such a
 * timestamp (the caller keeps the text as it is). */
size_t sqlv_iso_timestamp(const char *in, size_t len, char *out, size_t cap);

/* Add one Postgres value (text format) as field name of r. <0 out of memory. */
int sqlv_pg_add(sl_record *r, const char *name, uint32_t nlen, unsigned oid, const char *val,
                size_t len, int isnull);

/* Add column col of the current row of st as field name of r; decl is the
 * column's declared type (NULL when none). <0 out of memory. */
int sqlv_sqlite_add(sl_record *r, const char *name, uint32_t nlen, sqlite3_stmt *st, int col,
                    const char *decl);

#endif
