/* sql_table, Redshift dialect: what redshift.c (the session, the INSERT
 * path, the merge) shares with copy.c (the COPY path through S3). Private
 * to the plugin. */
#ifndef SLUICE_SQLT_RS_H
#define SLUICE_SQLT_RS_H

#include <stdio.h>

#include "sluice/buf.h"
#include "sluice/pg.h"
#include "sqlt.h"

/* Redshift's TEXT is VARCHAR(256); sluice creates and adds text columns as
 * the widest VARCHAR instead (65535 bytes). */
#define RS_TEXT_TYPE "VARCHAR(65535)"
#define RS_TEXT_BYTES ((size_t)65535)
/* A statement (text and values) stays under Redshift's 16 MB limit. */
#define RS_STMT_MAX ((size_t)15 << 20)
/* Bound parameters per statement (Postgres allows 65535; kept well below). */
#define RS_PARAMS_MAX ((size_t)32767)
#define RS_STAGE "sluice_stage"
#define RS_SEQ "_sluice_seq"
#define RS_NULL_OFF ((size_t)-1)

typedef struct rs_copy rs_copy;

typedef struct rsb {
    PGconn *conn;
    const sqlt_cfg *cfg;
    char where[SL_PG_WHERE_MAX];
    char *schema;   /* resolved schema of the table (raw) */
    sl_buf qtarget; /* "schema"."table" */
    sl_buf collist; /* "a","b",... (the load columns) */
    sl_buf sql;     /* scratch statement */
    sqlt_names added;
    sqlt_names tcols, ttypes; /* the table's columns and format_type() types */
    size_t *maxlen;           /* per load column: byte limit of a VARCHAR/CHAR type, 0 none */
    size_t ncols;
    /* the INSERT being built: values NUL-terminated in vals, by offset */
    sl_buf vals;
    size_t *voff;
    const char **ptrs;
    size_t nvals, vcap, nrows;
    long long staged; /* rows in the staging table */
    long long seq;    /* upsert: the last _sluice_seq given */
    int in_tx;
    int aborted;     /* a statement failed: the transaction is dead */
    int is_redshift; /* version() says Redshift */
    int emulate;     /* SLUICE_REDSHIFT_EMULATE=postgres on a Postgres server */
    FILE *trace;     /* SLUICE_REDSHIFT_TRACE */
    rs_copy *copy;   /* the COPY path's state (s3_staging set), else NULL */
} rsb;

/* Write a line to the statement trace (SLUICE_REDSHIFT_TRACE), if any. */
void rs_trace(rsb *p, const char *sql, int nparams);
/* Run sql (traced). The caller clears the result. */
PGresult *rs_query(rsb *p, const char *sql, int nparams, const char *const *params);
/* Run a statement; rows (may be NULL) gets its row count. */
int rs_exec(rsb *p, const char *sql, const char *what, long long *rows, sl_error *err);
/* err from a failed result: "<label>: <what>: <server message> [SQLSTATE]". */
int rs_fail(rsb *p, PGresult *res, const char *what, sl_error *err);
int rs_qident(rsb *p, sl_buf *out, const char *name, sl_error *err);
/* Byte limit of a format_type() type: "character varying(40)" -> 40; 0 none. */
size_t rs_type_bytes(const char *type);
/* 1 when every value of r can be sent (else r is marked failed). */
int rs_row_check(rsb *p, sl_record *r);
/* The INSERT path for one batch. */
sl_verdict rs_insert_batch(rsb *p, sl_batch *b, sl_error *err);

/* The COPY path (copy.c). init: at open, from cfg (p->copy stays NULL
 * without s3_staging); stage: the load's S3 run prefix, leftovers of
 * earlier runs removed; batch: rows into the gzip CSV objects; load: at
 * commit, the manifest and COPY into the staging table; done: after COMMIT,
 * the staged objects removed; abort: the same after a rollback (idempotent);
 * free: at close. */
int rs_copy_init(rsb *p, sl_error *err);
int rs_copy_stage(rsb *p, sl_error *err);
sl_verdict rs_copy_batch(rsb *p, sl_batch *b, sl_error *err);
int rs_copy_load(rsb *p, sl_error *err);
void rs_copy_done(rsb *p);
void rs_copy_abort(rsb *p);
void rs_copy_free(rsb *p);

/* What Redshift recorded about a row COPY refused (STL_LOAD_ERRORS /
 * SYS_LOAD_ERROR_DETAIL); strings borrowed, may be NULL or empty. */
typedef struct rs_load_error {
    const char *file;   /* s3://bucket/.../part-00002.csv.gz */
    long long line;     /* line in that file */
    const char *column; /* colname */
    const char *type;   /* the column's type ("int4", "varchar") */
    const char *length; /* its length where it has one ("20") */
    const char *value;  /* raw_field_value */
    int code;           /* err_code */
    const char *reason; /* err_reason */
} rs_load_error;

/* Append e[0..n) to out as one line: "part-00002.csv.gz line 17, column
 * 'age' (int4): Invalid digit, Value 'x', Pos 0, Type: Integer (error 1207);
 * value 'x'" joined by "; ", then "; and N more" when more > 0. */
void rs_load_error_text(sl_buf *out, const rs_load_error *e, size_t n, long long more);
/* The COPY statement for a manifest (appended to q). region may be NULL. */
void rs_copy_sql(sl_buf *q, const char *collist, int upsert, const char *bucket,
                 const char *manifest_key, const char *iam_role, const char *region);

#endif
