/* sql_table sink: what the generic part (sql_table.c) shares with its two
 * backends (pg.c: libpq COPY, sqlite.c: prepared INSERTs). Private to the
 * plugin.
 *
 * The generic part parses options, reconciles the input header with the
 * table's columns (create / add / error / ignore), checks every value
 * (UTF-8, no NUL, non-NULL keys) and drives the load. A backend provides the
 * primitives below and owns its transaction: one load is one transaction,
 * from `begin` to `commit` or `rollback`. */
#ifndef SLUICE_SQLT_H
#define SLUICE_SQLT_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/pg.h"
#include "sluice/plugin.h"

typedef enum sqlt_mode { SQLT_APPEND = 0, SQLT_REPLACE, SQLT_UPSERT } sqlt_mode;

/* Longest Postgres identifier (NAMEDATALEN - 1); longer names would be
 * truncated silently by the server, so they are refused. */
#define SQLT_PG_IDENT_MAX 63
/* Scratch space for formatting one number. */
#define SQLT_NUM_MAX 64
/* Rows of one batch that may fail one by one before the batch as a whole is
 * given up (each failure costs a re-send of the rest of the batch on Postgres). */
#define SQLT_MAX_ROW_FAILURES 100

/* The columns one load writes, in input-header order, and where the records
 * are expected to carry them. */
typedef struct sqlt_cols {
    char **name; /* owned copies */
    uint32_t *len;
    const char **hname; /* the header's own name pointers (borrowed; for a fast match) */
    uint32_t *hint;     /* field index the column had in the input header */
    size_t n;
} sqlt_cols;

typedef struct sqlt_sink sqlt_sink;

/* What a backend is told about the load. Strings are borrowed from the sink
 * and live as long as the backend. */
typedef struct sqlt_cfg {
    const sqlt_sink *sink; /* for sqlt_cell / sqlt_sink_cols */
    const char *table;
    const char *schema; /* Postgres only; NULL = the table's schema on the search_path */
    sqlt_mode mode;
    char **key; /* upsert key columns */
    size_t nkey;
    const char *prefix; /* log prefix ("sink:sql_table:users") */
    const char *label;  /* 'postgres table "petitions"', for messages */
    int dry_run;
    int fail_load; /* on_bad_row: fail: one streamed COPY, no per-row isolation (Postgres) */
    /* Redshift only (NULL otherwise): the COPY path's S3 staging prefix
     * ("s3://bucket/prefix/"), the IAM role COPY assumes, the bucket's region */
    const char *s3_staging;
    const char *iam_role;
    const char *region;
} sqlt_cfg;

/* A list of names (owned). */
typedef struct sqlt_names {
    char **v;
    size_t n, cap;
} sqlt_names;

int sqlt_names_add(sqlt_names *l, const char *s, size_t len);
void sqlt_names_free(sqlt_names *l);
/* 1 if s is in l; nocase: ignoring ASCII case. */
int sqlt_names_has(const sqlt_names *l, const char *s, int nocase);

/* Both Postgres dialects (pg.c, redshift.c) read a table from the catalog
 * the same way, one row per column: nspname, relkind, attname (NULL for a
 * table without columns) and, when types is not NULL, the column's type.
 * Returns 1 when the table exists: *schema is its schema, its columns are
 * added to names (their types to types). 0 when it does not: *schema is
 * where it will be created, the configured schema or else the session's
 * current one. *schema is malloc'd. < 0: an error (not a table, no schema
 * to create it in, out of memory). */
int sqlt_pg_table(PGconn *conn, const PGresult *res, const sqlt_cfg *cfg, sqlt_names *names,
                  sqlt_names *types, char **schema, sl_error *err);
/* Both Postgres dialects: name appended to out as a quoted identifier. */
int sqlt_pg_qident(PGconn *conn, const sqlt_cfg *cfg, sl_buf *out, const char *name, sl_error *err);
/* Both Postgres dialects: err from a failed statement, "<label>: <what>:
 * <server message> [SQLSTATE]"; SL_ERR_IO naming `where` when the
 * connection is gone. Returns the error code. */
int sqlt_pg_fail(PGconn *conn, const PGresult *res, const sqlt_cfg *cfg, const char *where,
                 const char *what, sl_error *err);

typedef struct sqlt_backend {
    const char *name; /* "postgres" / "sqlite" / "redshift" */
    int nocase;       /* column names match ignoring ASCII case (SQLite) */
    /* Connect. url is the option's text (secret: never in a message). */
    int (*open)(void **be, const char *url, const sqlt_cfg *cfg, sl_error *err);
    /* Start the load's transaction. */
    int (*begin)(void *be, sl_error *err);
    /* The target table's columns into out (reset by the caller). 1 exists,
     * 0 missing, <0 error. */
    int (*columns)(void *be, sqlt_names *out, sl_error *err);
    /* Run a schema file's SQL (when the table is missing). */
    int (*exec_file)(void *be, const char *sql, sl_error *err);
    /* Create the missing table with these columns, all text. */
    int (*create)(void *be, const sqlt_cols *cols, sl_error *err);
    /* Create the staging table and prepare loading the columns `cols`, of
     * which `added` (a subset) do not exist in the table yet: they are added
     * as text columns within the load's transaction (on Postgres only at
     * commit for append/upsert, so readers are not locked out during the
     * load). `existing` lists the table's columns. */
    int (*stage)(void *be, const sqlt_cols *cols, const sqlt_names *added,
                 const sqlt_names *existing, sl_error *err);
    /* Load the batch's OK records. May mark single records failed. */
    sl_verdict (*write)(void *be, sl_batch *b, sl_error *err);
    /* Swap / merge and commit. On error the transaction is rolled back. */
    int (*commit)(void *be, sl_error *err);
    /* Undo everything since begin (idempotent). */
    void (*rollback)(void *be);
    void (*close)(void *be);
} sqlt_backend;

extern const sqlt_backend sqlt_pg;
extern const sqlt_backend sqlt_sqlite;
extern const sqlt_backend sqlt_redshift;

/* The text of load column j of rec. Returns 0 when the value is NULL
 * (absent, omitted, SL_T_NULL, or an empty string with empty_as_null);
 * otherwise *p and *len are set (*p may point into num, which the caller
 * provides) and the result is SQLT_TEXT_SAFE (formatted by us: ASCII) or
 * SQLT_TEXT (input text: must pass sqlt_value_ok before it is sent). */
#define SQLT_TEXT_SAFE 1
#define SQLT_TEXT 2
int sqlt_cell(const sqlt_sink *s, const sl_record *r, size_t j, char num[SQLT_NUM_MAX],
              const char **p, size_t *len);
/* Check text v of load column j from byte `from` on (the bytes before it are
 * known to be ASCII and not NUL). Returns 1 when it can be stored; 0 when it
 * cannot (invalid UTF-8, a NUL byte): the record is then marked failed,
 * naming its line and the column. */
int sqlt_value_ok(const sqlt_sink *s, sl_record *r, size_t j, const char *v, size_t len,
                  size_t from);
/* The load columns (valid from the call of stage on). */
const sqlt_cols *sqlt_sink_cols(const sqlt_sink *s);
/* 1 when records' raw CSV lines (sl_record.raw_*) can be sent unchanged. */
int sqlt_raw_ok(const sqlt_sink *s);

/* First line of a (library) message, trimmed, into dst (shared with the sql
 * source through sluice/pg.h). Returns dst. */
#define sqlt_first_line sl_pg_first_line

/* Byte offset of the first invalid UTF-8 sequence or NUL byte in s, or
 * (size_t)-1 when s is valid. */
size_t sqlt_utf8_check(const char *s, size_t len);

#endif
