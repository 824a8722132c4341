/* sql_table, Postgres backend: one transaction per load, rows sent with
 * COPY ... FROM STDIN (FORMAT csv), one COPY per batch inside a savepoint.
 *
 * replace: a regular (logged: it becomes the table) staging table
 *   "sluice_stage_<table>" is created LIKE the target INCLUDING ALL; at
 *   commit the target's grants are copied to it, sequences owned by the
 *   target's columns are handed over, the target is dropped and the staging
 *   table renamed (its indexes too); then COMMIT. Readers see the old rows
 *   until that commit and the new ones after. A table that views or foreign
 *   keys depend on cannot be dropped (2BP01): then the swap is undone and
 *   the rows are replaced in place (DELETE, INSERT ... SELECT from staging).
 * append / upsert: a TEMP staging table with the load columns (the target's
 *   types, NOT NULL and CHECK constraints, so COPY checks rows batch by
 *   batch; unique and foreign keys only at the merge); at commit, in the same
 *   transaction: ALTER TABLE ADD COLUMN for new columns, for upsert the
 *   staging table is deduplicated (last row per key wins) and target rows
 *   with a staged key deleted, then INSERT ... SELECT.
 *
 * A row the server refuses (a typed column, a constraint: SQLSTATE class 22,
 * 23 or 54) is found by halving the batch, each part in its own savepoint:
 * that record fails with the server's message, the rest loads. The error's
 * CONTEXT line would name the row, but in the server's language
 * (lc_messages), so it is not parsed for that. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "sluice/pg.h"
#include "sluice/plugin.h"
#include "sqlt.h"

#define COPY_CHUNK ((size_t)64 * 1024)
#define COPY_BUF_MAX ((size_t)512 * 1024 * 1024)
#define SQL_MAX ((size_t)16 * 1024 * 1024)
#define STAGE_PREFIX "sluice_stage_"
#define TEMP_STAGE "pg_temp.sluice_stage"
#define SEQ_COL "_sluice_seq"

typedef struct pgb {
    PGconn *conn;
    const sqlt_cfg *cfg;
    char where[SL_PG_WHERE_MAX]; /* "database postgres on 127.0.0.1:5432", for connection errors */
    char *schema;                /* resolved schema name (raw) */
    char stage[SQLT_PG_IDENT_MAX + 1]; /* replace: staging table name (raw) */
    sl_buf qtarget;                    /* "schema"."table" */
    sl_buf qstage;                     /* "schema"."sluice_stage_table" or pg_temp.sluice_stage */
    sl_buf collist;                    /* "a","b",... */
    sl_buf copy_sql;
    sl_buf sql;
    sl_buf data; /* COPY data being built */
    sqlt_names added;
    size_t *sent; /* batch index of each row of the current COPY */
    size_t sent_cap;
    int in_tx;
    int sp_open;        /* the last batch's savepoint is still to be released */
    int copy_open;      /* on_bad_row fail: the load's one COPY is streaming */
    long long streamed; /* rows sent into that COPY */
    long long copied;   /* rows committed by this load's COPYs so far */
} pgb;

/* ---------------------------------------------------------------- helpers */

static int nomem(sl_error *err)
{
    return sl_error_set(err, SL_ERR_NOMEM, "sql_table: out of memory");
}

int sqlt_pg_qident(PGconn *conn, const sqlt_cfg *cfg, sl_buf *out, const char *name, sl_error *err)
{
    char *q = PQescapeIdentifier(conn, name, strlen(name));
    if (!q) {
        char m[256];
        return sl_error_set(err, SL_ERR_INPUT, "%s: bad name '%s': %s", cfg->label, name,
                            sqlt_first_line(m, sizeof(m), PQerrorMessage(conn)));
    }
    int rc = sl_buf_puts(out, q);
    PQfreemem(q);
    return rc < 0 ? nomem(err) : 0;
}

int sqlt_pg_fail(PGconn *conn, const PGresult *res, const sqlt_cfg *cfg, const char *where,
                 const char *what, sl_error *err)
{
    char m[1024];
    sl_pg_describe(m, sizeof(m), res, conn);
    if (PQstatus(conn) == CONNECTION_BAD) {
        return sl_error_set(err, SL_ERR_IO, "%s: %s: connection lost (%s): %s", cfg->label, what,
                            where, m);
    }
    return sl_error_set(err, sl_pg_code(res, conn), "%s: %s: %s", cfg->label, what, m);
}

static int qident(pgb *p, sl_buf *out, const char *name, sl_error *err)
{
    return sqlt_pg_qident(p->conn, p->cfg, out, name, err);
}

/* Run one statement that returns no rows (or rows to ignore). */
static int exec_sql(pgb *p, const char *sql, const char *what, sl_error *err)
{
    PGresult *res = PQexec(p->conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        rc = sqlt_pg_fail(p->conn, res, p->cfg, p->where, what, err);
    }
    PQclear(res);
    return rc;
}

/* Run a query with text parameters whose rows are SQL statements (built
 * server-side with format()), and run each of them. */
static int exec_generated(pgb *p, const char *query, int nparams, const char *const *params,
                          const char *what, sl_error *err)
{
    PGresult *res = PQexecParams(p->conn, query, nparams, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char m[1024];
        sl_pg_describe(m, sizeof(m), res, p->conn);
        rc = sl_error_set(err, sl_pg_code(res, p->conn), "%s: %s: %s", p->cfg->label, what, m);
        goto done;
    }
    for (int i = 0; i < PQntuples(res) && rc == 0; i++) {
        rc = exec_sql(p, PQgetvalue(res, i, 0), what, err);
    }
done:
    PQclear(res);
    return rc;
}

/* ---------------------------------------------------------------- open / close */

static void pg_close(void *be)
{
    pgb *p = be;
    if (!p) {
        return;
    }
    if (p->conn) {
        PQfinish(p->conn);
    }
    free(p->schema);
    sl_buf_free(&p->qtarget);
    sl_buf_free(&p->qstage);
    sl_buf_free(&p->collist);
    sl_buf_free(&p->copy_sql);
    sl_buf_free(&p->sql);
    sl_buf_free(&p->data);
    sqlt_names_free(&p->added);
    free(p->sent);
    free(p);
}

static int pg_open(void **be, const char *url, const sqlt_cfg *cfg, sl_error *err)
{
    int rc = 0;
    pgb *p = calloc(1, sizeof(*p));
    if (!p) {
        return nomem(err);
    }
    p->cfg = cfg;
    sl_buf_init(&p->qtarget, 1024);
    sl_buf_init(&p->qstage, 1024);
    sl_buf_init(&p->collist, SQL_MAX);
    sl_buf_init(&p->copy_sql, SQL_MAX);
    sl_buf_init(&p->sql, SQL_MAX);
    sl_buf_init(&p->data, COPY_BUF_MAX);
    p->conn = sl_pg_connect(url, cfg->label, cfg->prefix, p->where, err);
    if (!p->conn) {
        rc = err->code ? err->code : SL_ERR_IO;
        goto fail;
    }
    *be = p;
    return 0;
fail:
    pg_close(p);
    return rc;
}

/* ---------------------------------------------------------------- load */

static int pg_begin(void *be, sl_error *err)
{
    pgb *p = be;
    int rc = exec_sql(p, "BEGIN", "cannot start the load's transaction", err);
    p->in_tx = rc == 0;
    p->sp_open = 0;
    return rc;
}

static void pg_rollback(void *be)
{
    pgb *p = be;
    if (!p->in_tx) {
        return;
    }
    p->in_tx = 0;
    p->copy_open = 0;
    if (PQtransactionStatus(p->conn) == PQTRANS_ACTIVE) {
        /* a COPY still open (an error mid-batch): end it first */
        PQputCopyEnd(p->conn, "load abandoned");
        PGresult *r;
        while ((r = PQgetResult(p->conn))) {
            PQclear(r);
        }
    }
    sl_error e;
    if (PQstatus(p->conn) == CONNECTION_OK && exec_sql(p, "ROLLBACK", "rollback", &e) != 0) {
        sl_warn(p->cfg->prefix, "%s", e.msg);
    }
}

/* Set schema, qtarget and the staging names, from the table's actual
 * schema when it exists (so staging lands beside it). */
static int resolve_names(pgb *p, const char *schema, sl_error *err)
{
    free(p->schema);
    p->schema = strdup(schema);
    if (!p->schema) {
        return nomem(err);
    }
    sl_buf_reset(&p->qtarget);
    sl_buf_reset(&p->qstage);
    int rc = qident(p, &p->qtarget, p->schema, err);
    if (rc == 0 && (rc = sl_buf_putc(&p->qtarget, '.')) < 0) {
        return nomem(err);
    }
    if (rc == 0) {
        rc = qident(p, &p->qtarget, p->cfg->table, err);
    }
    if (rc != 0) {
        return rc;
    }
    if (p->cfg->mode != SQLT_REPLACE) {
        return sl_buf_puts(&p->qstage, TEMP_STAGE) < 0 ? nomem(err) : 0;
    }
    /* "sluice_stage_<table>", within the identifier limit: a long name is
     * cut (on a UTF-8 boundary) and made unique with a hash of the whole. */
    const char *t = p->cfg->table;
    size_t tl = strlen(t), room = SQLT_PG_IDENT_MAX - strlen(STAGE_PREFIX);
    if (tl <= room) {
        snprintf(p->stage, sizeof(p->stage), STAGE_PREFIX "%s", t);
    } else {
        uint32_t h = 2166136261u; /* FNV-1a */
        for (size_t i = 0; i < tl; i++) {
            h = (h ^ (unsigned char)t[i]) * 16777619u;
        }
        size_t keep = room - 9;
        while (keep > 0 && ((unsigned char)t[keep] & 0xC0) == 0x80) {
            keep--;
        }
        snprintf(p->stage, sizeof(p->stage), STAGE_PREFIX "%.*s_%08x", (int)keep, t, h);
    }
    rc = qident(p, &p->qstage, p->schema, err);
    if (rc == 0 && sl_buf_putc(&p->qstage, '.') < 0) {
        return nomem(err);
    }
    return rc == 0 ? qident(p, &p->qstage, p->stage, err) : rc;
}

int sqlt_pg_table(PGconn *conn, const PGresult *res, const sqlt_cfg *cfg, sqlt_names *names,
                  sqlt_names *types, char **schema, sl_error *err)
{
    *schema = NULL;
    if (PQntuples(res) == 0) {
        /* missing: it will be created in the configured or current schema */
        if (cfg->schema) {
            return (*schema = strdup(cfg->schema)) ? 0 : nomem(err);
        }
        PGresult *cs = PQexec(conn, "SELECT current_schema()");
        if (PQresultStatus(cs) != PGRES_TUPLES_OK || PQntuples(cs) != 1 || PQgetisnull(cs, 0, 0)) {
            PQclear(cs);
            return sl_error_set(err, SL_ERR_INPUT,
                                "%s does not exist and there is no current schema to create it "
                                "in (set the schema option)",
                                cfg->label);
        }
        *schema = strdup(PQgetvalue(cs, 0, 0));
        PQclear(cs);
        return *schema ? 0 : nomem(err);
    }
    const char *kind = PQgetvalue(res, 0, 1);
    if (kind[0] != 'r' && kind[0] != 'p') {
        return sl_error_set(err, SL_ERR_INPUT, "%s is not a table (pg_class.relkind '%s')",
                            cfg->label, kind);
    }
    for (int i = 0; i < PQntuples(res); i++) {
        if (PQgetisnull(res, i, 2)) {
            continue;
        }
        if (sqlt_names_add(names, PQgetvalue(res, i, 2), (size_t)PQgetlength(res, i, 2)) != 0 ||
            (types &&
             sqlt_names_add(types, PQgetvalue(res, i, 3), (size_t)PQgetlength(res, i, 3)) != 0)) {
            return nomem(err);
        }
    }
    return (*schema = strdup(PQgetvalue(res, 0, 0))) ? 1 : nomem(err);
}

static int pg_columns(void *be, sqlt_names *out, sl_error *err)
{
    pgb *p = be;
    int rc = 0;
    PGresult *res = NULL;
    char *schema = NULL;
    sl_buf name;
    sl_buf_init(&name, 1024);
    if (p->cfg->schema) {
        if ((rc = qident(p, &name, p->cfg->schema, err)) != 0 || sl_buf_putc(&name, '.') < 0) {
            rc = rc ? rc : nomem(err);
            goto done;
        }
    }
    if ((rc = qident(p, &name, p->cfg->table, err)) != 0) {
        goto done;
    }
    const char *params[1] = {sl_buf_cstr(&name)};
    res = PQexecParams(p->conn,
                       "SELECT n.nspname, c.relkind, a.attname"
                       " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                       " LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0"
                       "  AND NOT a.attisdropped"
                       " WHERE c.oid = to_regclass($1) ORDER BY a.attnum",
                       1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char m[1024];
        sl_pg_describe(m, sizeof(m), res, p->conn);
        rc = sl_error_set(err, sl_pg_code(res, p->conn), "%s: cannot read its columns (%s): %s",
                          p->cfg->label, p->where, m);
        goto done;
    }
    rc = sqlt_pg_table(p->conn, res, p->cfg, out, NULL, &schema, err);
    if (rc >= 0) {
        int r = resolve_names(p, schema, err);
        rc = r ? r : rc;
    }
done:
    free(schema);
    PQclear(res);
    sl_buf_free(&name);
    return rc;
}

static int pg_exec_file(void *be, const char *sql, sl_error *err)
{
    pgb *p = be;
    int rc = exec_sql(p, sql, "running it", err);
    if (rc == 0 && PQtransactionStatus(p->conn) != PQTRANS_INTRANS) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s: the file ended the load's transaction (it must not contain "
                          "BEGIN, COMMIT or ROLLBACK)",
                          p->cfg->label);
    }
    return rc;
}

static int put_collist(pgb *p, sl_buf *out, const sqlt_cols *cols, sl_error *err)
{
    for (size_t j = 0; j < cols->n; j++) {
        if (j && sl_buf_putc(out, ',') < 0) {
            return nomem(err);
        }
        int rc = qident(p, out, cols->name[j], err);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static int pg_create(void *be, const sqlt_cols *cols, sl_error *err)
{
    pgb *p = be;
    sl_buf *q = &p->sql;
    sl_buf_reset(q);
    int rc = sl_buf_printf(q, "CREATE TABLE %s (", sl_buf_cstr(&p->qtarget)) < 0 ? nomem(err) : 0;
    for (size_t j = 0; j < cols->n && rc == 0; j++) {
        if (j && sl_buf_putc(q, ',') < 0) {
            return nomem(err);
        }
        if ((rc = qident(p, q, cols->name[j], err)) == 0 && sl_buf_puts(q, " text") < 0) {
            rc = nomem(err);
        }
    }
    if (rc == 0 && sl_buf_putc(q, ')') < 0) {
        rc = nomem(err);
    }
    return rc ? rc : exec_sql(p, sl_buf_cstr(q), "cannot create it", err);
}

/* ALTER TABLE rel ADD COLUMN "x" text, for each name. */
static int add_columns(pgb *p, const char *rel, const sqlt_names *names, sl_error *err)
{
    int rc = 0;
    for (size_t i = 0; i < names->n && rc == 0; i++) {
        sl_buf_reset(&p->sql);
        if (sl_buf_printf(&p->sql, "ALTER TABLE %s ADD COLUMN ", rel) < 0) {
            return nomem(err);
        }
        if ((rc = qident(p, &p->sql, names->v[i], err)) != 0) {
            break;
        }
        if (sl_buf_puts(&p->sql, " text") < 0) {
            return nomem(err);
        }
        rc = exec_sql(p, sl_buf_cstr(&p->sql), "cannot add a column", err);
    }
    return rc;
}

static int copy_statement(pgb *p, sl_error *err)
{
    sl_buf_reset(&p->copy_sql);
    if (sl_buf_printf(&p->copy_sql, "COPY %s (%s) FROM STDIN (FORMAT csv)", sl_buf_cstr(&p->qstage),
                      sl_buf_cstr(&p->collist)) < 0) {
        return nomem(err);
    }
    return 0;
}

static int pg_stage(void *be, const sqlt_cols *cols, const sqlt_names *added,
                    const sqlt_names *existing, sl_error *err)
{
    pgb *p = be;
    int rc;
    const char *qs = sl_buf_cstr(&p->qstage);
    sl_buf_reset(&p->collist);
    if ((rc = put_collist(p, &p->collist, cols, err)) != 0) {
        return rc;
    }
    for (size_t i = 0; i < added->n; i++) {
        if (sqlt_names_add(&p->added, added->v[i], strlen(added->v[i])) != 0) {
            return nomem(err);
        }
    }
    sl_buf *q = &p->sql;
    sl_buf_reset(q);
    if (p->cfg->mode == SQLT_REPLACE) {
        /* a leftover of a load that died between steps outside a transaction
         * (cannot happen with one transaction, but a manual copy might) */
        sl_buf_printf(q, "DROP TABLE IF EXISTS %s", qs);
        if ((rc = exec_sql(p, sl_buf_cstr(q), "cannot drop an old staging table", err)) != 0) {
            return rc;
        }
        sl_buf_reset(q);
        sl_buf_printf(q, "CREATE TABLE %s (LIKE %s INCLUDING ALL)", qs, sl_buf_cstr(&p->qtarget));
        if ((rc = exec_sql(p, sl_buf_cstr(q), "cannot create the staging table", err)) != 0) {
            return rc;
        }
        if ((rc = add_columns(p, qs, added, err)) != 0) {
            return rc;
        }
        return copy_statement(p, err);
    }
    /* The target's types, NOT NULL and CHECK constraints, so COPY refuses a
     * bad row batch by batch with its line (unique keys and foreign keys
     * are only checked by the final INSERT). Columns the input does not
     * carry are dropped: the target's defaults fill them at the merge. */
    sl_buf_printf(q,
                  "CREATE TEMP TABLE sluice_stage (LIKE %s INCLUDING CONSTRAINTS) ON COMMIT DROP",
                  sl_buf_cstr(&p->qtarget));
    if ((rc = exec_sql(p, sl_buf_cstr(q), "cannot create the staging table", err)) != 0) {
        return rc;
    }
    for (size_t i = 0; i < existing->n; i++) {
        size_t j = 0;
        while (j < cols->n && strcmp(cols->name[j], existing->v[i]) != 0) {
            j++;
        }
        if (j < cols->n) {
            continue;
        }
        sl_buf_reset(q);
        sl_buf_puts(q, "ALTER TABLE " TEMP_STAGE " DROP COLUMN ");
        if ((rc = qident(p, q, existing->v[i], err)) != 0 ||
            (rc = exec_sql(p, sl_buf_cstr(q), "cannot create the staging table", err)) != 0) {
            return rc;
        }
    }
    if ((rc = add_columns(p, TEMP_STAGE, added, err)) != 0) {
        return rc;
    }
    if (p->cfg->mode == SQLT_UPSERT &&
        (rc = exec_sql(p, "ALTER TABLE " TEMP_STAGE " ADD COLUMN " SEQ_COL " bigserial",
                       "cannot create the staging table", err)) != 0) {
        return rc;
    }
    return copy_statement(p, err);
}

/* Byte classes for one pass over a value: 1 = CSV-quote it (delimiter,
 * quote, line ends), 2 = not plain ASCII (NUL, or >= 0x80: check UTF-8). */
static const unsigned char byte_class[256] = {
    2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};

/* Write v CSV-quoted where COPY (FORMAT csv) needs it at o (room for
 * 2 * len + 2 bytes); returns the end. Quoted too: the empty string
 * (unquoted empty is NULL) and the end marker \. */
static char *put_value(char *o, const char *v, size_t len, int special)
{
    if (!special && len > 0 && !(len == 2 && v[0] == '\\' && v[1] == '.')) {
        memcpy(o, v, len);
        return o + len;
    }
    *o++ = '"';
    for (size_t i = 0; i < len; i++) {
        if (v[i] == '"') {
            *o++ = '"';
        }
        *o++ = v[i];
    }
    *o++ = '"';
    return o;
}

enum { ROW_OK = 0, ROW_BAD = 1, ROW_TOO_BIG = 2 };

/* Append one CSV line for r. ROW_BAD: a value cannot be stored (the record
 * is marked failed); ROW_TOO_BIG: the buffer's limit. Either way the
 * caller cuts the buffer back. */
static int put_row(pgb *p, sl_record *r, size_t ncols)
{
    sl_buf *d = &p->data;
    if (r->raw_len && sqlt_raw_ok(p->cfg->sink) &&
        !(r->raw_len == 2 && r->data.data[r->raw_off] == '\\' &&
          r->data.data[r->raw_off + 1] == '.')) {
        /* The line as read is already COPY (FORMAT csv) input: the server
         * parses and validates it (a bad row is isolated from its error's
         * line number like any other). "\." alone would end the COPY. */
        if (sl_buf_reserve(d, (size_t)r->raw_len + 1) < 0) {
            return ROW_TOO_BIG;
        }
        memcpy(d->data + d->len, r->data.data + r->raw_off, r->raw_len);
        d->len += r->raw_len;
        d->data[d->len++] = '\n';
        d->data[d->len] = '\0';
        return ROW_OK;
    }
    char num[SQLT_NUM_MAX];
    for (size_t j = 0; j < ncols; j++) {
        const char *v = NULL;
        size_t len = 0;
        int c = sqlt_cell(p->cfg->sink, r, j, num, &v, &len);
        int special = 0;
        if (c == SQLT_TEXT) {
            /* one pass: quoting needed? anything but plain ASCII? */
            const unsigned char *u = (const unsigned char *)v;
            for (size_t i = 0; i < len; i++) {
                unsigned char k = byte_class[u[i]];
                if (k == 2) {
                    if (!sqlt_value_ok(p->cfg->sink, r, j, v, len, i)) {
                        return ROW_BAD;
                    }
                    special |= memchr(v + i, '"', len - i) || memchr(v + i, ',', len - i) ||
                               memchr(v + i, '\n', len - i) || memchr(v + i, '\r', len - i);
                    break;
                }
                special |= k;
            }
        } else if (c == SQLT_TEXT_SAFE) {
            special = memchr(v, ',', len) != NULL; /* none expected in a number */
        }
        size_t need = (c ? 2 * len + 4 : 2) + 1;
        if (d->cap - d->len < need && sl_buf_reserve(d, need) < 0) {
            return ROW_TOO_BIG;
        }
        char *o = d->data + d->len;
        if (j) {
            *o++ = ',';
        }
        if (c) {
            o = put_value(o, v, len, special);
        }
        d->len = (size_t)(o - d->data);
    }
    if (sl_buf_putc(d, '\n') < 0) {
        return ROW_TOO_BIG;
    }
    return ROW_OK;
}

static int flush_data(pgb *p)
{
    if (p->data.len == 0) {
        return 0;
    }
    int rc = PQputCopyData(p->conn, p->data.data, (int)p->data.len);
    sl_buf_reset(&p->data);
    return rc == 1 ? 0 : -1;
}

/* "COPY sluice_stage, line 3, column age: ..." -> 3 and "column age", when
 * the server speaks English (lc_messages); 0 otherwise. Only used to word
 * the error of a streamed load (on_bad_row: fail), never to pick a row. */
static uint64_t copy_line(const PGresult *res, char *col, size_t cap)
{
    col[0] = '\0';
    const char *ctx = res ? PQresultErrorField(res, PG_DIAG_CONTEXT) : NULL;
    const char *at = ctx ? strstr(ctx, "COPY ") : NULL;
    at = at ? strstr(at, ", line ") : NULL;
    if (!at) {
        return 0;
    }
    char *end;
    unsigned long long n = strtoull(at + 7, &end, 10);
    if (strncmp(end, ", column ", 9) == 0) {
        size_t l = strcspn(end + 2, ":\n");
        snprintf(col, cap, "%.*s", (int)(l < cap ? l : cap - 1), end + 2);
    }
    return n;
}

typedef enum copy_rc { COPY_OK, COPY_ERR, COPY_START } copy_rc;

/* Send the records idx[0..n) of b (those still OK) in one COPY, after the
 * statements in prefix (savepoint handling, sent in the same round trip).
 * On an error *resp holds the result (caller clears; NULL when libpq gave
 * none). */
static copy_rc copy_rows(pgb *p, sl_batch *b, const char *prefix, const size_t *idx, size_t n,
                         PGresult **resp)
{
    const sqlt_cols *cols = sqlt_sink_cols(p->cfg->sink);
    *resp = NULL;
    sl_buf_reset(&p->sql);
    if (sl_buf_printf(&p->sql, "%s%s", prefix, sl_buf_cstr(&p->copy_sql)) < 0) {
        return COPY_START;
    }
    PGresult *res = PQexec(p->conn, sl_buf_cstr(&p->sql));
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        *resp = res;
        return COPY_START;
    }
    PQclear(res);
    sl_buf_reset(&p->data);
    int sendfail = 0;
    for (size_t k = 0; k < n && !sendfail; k++) {
        sl_record *r = &b->recs[idx[k]];
        if (r->status != SL_REC_OK) {
            continue;
        }
        size_t mark = p->data.len;
        int rr = put_row(p, r, cols->n);
        if (rr != ROW_OK) {
            p->data.len = mark;
            if (rr == ROW_TOO_BIG) {
                sl_record_fail(r, "line %" PRIu64 ": row larger than %zu MB", r->line,
                               COPY_BUF_MAX >> 20);
            }
            continue;
        }
        if (p->data.len >= COPY_CHUNK) {
            sendfail = flush_data(p) < 0;
        }
    }
    if (!sendfail) {
        sendfail = flush_data(p) < 0;
    }
    if (PQputCopyEnd(p->conn, NULL) != 1) {
        sendfail = 1;
    }
    copy_rc out = COPY_OK;
    long long rows = 0;
    while ((res = PQgetResult(p->conn))) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            if (!*resp) {
                *resp = res;
            } else {
                PQclear(res);
            }
            out = COPY_ERR;
            continue;
        }
        rows += strtoll(PQcmdTuples(res), NULL, 10);
        PQclear(res);
    }
    if (sendfail && out == COPY_OK) {
        out = COPY_ERR;
    }
    if (out == COPY_OK) {
        p->copied += rows;
    }
    return out;
}

/* Is the error about the rows sent (a value, a constraint, a row too large
 * for an index), so that the batch without the offending row would load?
 * Decided by SQLSTATE class alone: the message text depends on the server's
 * lc_messages. */
static int row_error(const PGresult *res)
{
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return st &&
           (strncmp(st, "22", 2) == 0 || strncmp(st, "23", 2) == 0 || strncmp(st, "54", 2) == 0);
}

/* Why a load of rows stopped for a reason that is not one row's fault. */
typedef struct stop_why {
    sl_verdict v;
    int lost; /* the connection is gone */
} stop_why;

/* Load rows idx[0..n) of b inside the batch's savepoint, finding the rows
 * the server refuses by halving: a part that fails is rolled back (its own
 * savepoint) and its halves are tried in turn, down to single rows, which
 * fail alone with the server's message. Rows that load stay loaded, so the
 * outcome is the same as inserting the rows one by one in order (a
 * duplicate key fails the later row). This needs no part of the error's
 * text: the CONTEXT line names the row in the server's language
 * (lc_messages), so it cannot be parsed portably.
 * Returns 0, or -1 with err set and *why filled (give up the batch). */
static int load_parts(pgb *p, sl_batch *b, const size_t *idx, size_t n, int *failures,
                      stop_why *why, sl_error *err)
{
    size_t live = 0;
    for (size_t k = 0; k < n; k++) {
        live += b->recs[idx[k]].status == SL_REC_OK;
    }
    if (live == 0) {
        return 0;
    }
    PGresult *res = NULL;
    copy_rc c = copy_rows(p, b, "SAVEPOINT sluice_part; ", idx, n, &res);
    if (c == COPY_OK) {
        PQclear(res);
        return exec_sql(p, "RELEASE SAVEPOINT sluice_part", "cannot keep the rows", err) == 0
                   ? 0
                   : (why->v = SL_SEND_FATAL, -1);
    }
    char m[1024];
    sl_pg_describe(m, sizeof(m), res, p->conn);
    int rowerr = c == COPY_ERR && row_error(res);
    why->lost = sl_pg_conn_failure(res, p->conn);
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    int transient = st && (strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0);
    int code = sl_pg_code(res, p->conn);
    PQclear(res);
    if (why->lost) {
        sl_error_set(err, SL_ERR_IO, "%s: COPY failed, connection lost (%s): %s", p->cfg->label,
                     p->where, m);
        why->v = SL_SEND_FATAL;
        return -1;
    }
    if (c == COPY_START) {
        sl_error_set(err, code, "%s: cannot start COPY: %s", p->cfg->label, m);
        why->v = SL_SEND_FATAL;
        return -1;
    }
    sl_error e2;
    if (exec_sql(p, "ROLLBACK TO SAVEPOINT sluice_part; RELEASE SAVEPOINT sluice_part",
                 "cannot undo the batch", &e2) != 0) {
        *err = e2;
        why->v = SL_SEND_FATAL;
        return -1;
    }
    if (!rowerr) {
        sl_error_set(err, code, "%s: COPY failed: %s", p->cfg->label, m);
        why->v = transient ? SL_SEND_RETRY : SL_SEND_FAIL;
        return -1;
    }
    if (live == 1) {
        size_t k = 0;
        while (b->recs[idx[k]].status != SL_REC_OK) {
            k++;
        }
        sl_record *r = &b->recs[idx[k]];
        if (++*failures > SQLT_MAX_ROW_FAILURES) {
            sl_error_set(err, SL_ERR_INPUT,
                         "%s: COPY failed: %s (and more than %d rows of this batch were refused)",
                         p->cfg->label, m, SQLT_MAX_ROW_FAILURES);
            why->v = SL_SEND_FAIL;
            return -1;
        }
        sl_record_fail(r, "line %" PRIu64 ": %s refused the row: %s", r->line, p->cfg->label, m);
        return 0;
    }
    size_t half = n / 2;
    if (load_parts(p, b, idx, half, failures, why, err) != 0) {
        return -1;
    }
    return load_parts(p, b, idx + half, n - half, failures, why, err);
}

/* on_bad_row: fail. All batches go into one COPY that stays open until the
 * load commits, so the server never waits for a round trip between
 * batches; a row it refuses fails the whole load at commit, named by its
 * position in the load. */
static sl_verdict stream_batch(pgb *p, sl_batch *b, sl_error *err)
{
    if (!p->copy_open) {
        PGresult *res = PQexec(p->conn, sl_buf_cstr(&p->copy_sql));
        if (PQresultStatus(res) != PGRES_COPY_IN) {
            char m[1024];
            sl_pg_describe(m, sizeof(m), res, p->conn);
            PQclear(res);
            sl_error_set(err, SL_ERR_IO, "%s: cannot start COPY: %s", p->cfg->label, m);
            return SL_SEND_FATAL;
        }
        PQclear(res);
        p->copy_open = 1;
    }
    const sqlt_cols *cols = sqlt_sink_cols(p->cfg->sink);
    sl_buf_reset(&p->data);
    for (size_t i = 0; i < b->n; i++) {
        sl_record *r = &b->recs[i];
        if (r->status != SL_REC_OK) {
            continue;
        }
        size_t mark = p->data.len;
        int rr = put_row(p, r, cols->n);
        if (rr != ROW_OK) {
            p->data.len = mark;
            if (rr == ROW_TOO_BIG) {
                sl_record_fail(r, "line %" PRIu64 ": row larger than %zu MB", r->line,
                               COPY_BUF_MAX >> 20);
            }
            continue;
        }
        p->streamed++;
        if (p->data.len >= COPY_CHUNK && flush_data(p) < 0) {
            break;
        }
    }
    if (flush_data(p) < 0) {
        sl_error_set(err, SL_ERR_IO, "%s: COPY failed, connection lost (%s): %s", p->cfg->label,
                     p->where, PQerrorMessage(p->conn));
        return SL_SEND_FATAL;
    }
    return SL_SEND_OK;
}

/* End the streamed COPY: 0, or the server's verdict on the whole load. */
static int end_stream(pgb *p, sl_error *err)
{
    if (!p->copy_open) {
        return 0;
    }
    p->copy_open = 0;
    int rc = 0;
    if (PQputCopyEnd(p->conn, NULL) != 1) {
        rc = sl_error_set(err, SL_ERR_IO, "%s: COPY failed, connection lost (%s): %s",
                          p->cfg->label, p->where, PQerrorMessage(p->conn));
    }
    PGresult *res;
    while ((res = PQgetResult(p->conn))) {
        if (PQresultStatus(res) == PGRES_COMMAND_OK) {
            p->copied += strtoll(PQcmdTuples(res), NULL, 10);
        } else if (rc == 0) {
            char m[1024], col[128];
            sl_pg_describe(m, sizeof(m), res, p->conn);
            uint64_t line = copy_line(res, col, sizeof(col));
            if (line) {
                rc = sl_error_set(err, SL_ERR_INPUT,
                                  "%s refused row %" PRIu64 " of the load%s%s: %s", p->cfg->label,
                                  line, col[0] ? ", " : "", col, m);
            } else {
                /* the CONTEXT line in the server's language still names the row */
                const char *cx = PQresultErrorField(res, PG_DIAG_CONTEXT);
                char cl[256];
                rc = sl_error_set(err, sl_pg_code(res, p->conn), "%s: COPY failed: %s%s%s%s",
                                  p->cfg->label, m, cx ? " (" : "",
                                  cx ? sqlt_first_line(cl, sizeof(cl), cx) : "", cx ? ")" : "");
            }
        }
        PQclear(res);
    }
    return rc;
}

static sl_verdict pg_write(void *be, sl_batch *b, sl_error *err)
{
    pgb *p = be;
    if (p->cfg->fail_load) {
        return stream_batch(p, b, err);
    }
    if (b->n > p->sent_cap) {
        size_t *s = realloc(p->sent, b->n * sizeof(*s));
        if (!s) {
            nomem(err);
            return SL_SEND_FATAL;
        }
        p->sent = s;
        p->sent_cap = b->n;
    }
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (b->recs[i].status == SL_REC_OK) {
            p->sent[n++] = i;
        }
    }
    /* the whole batch at once (release the previous batch's savepoint and
     * set this one's in the same round trip) */
    PGresult *res = NULL;
    copy_rc c = copy_rows(p, b,
                          p->sp_open ? "RELEASE SAVEPOINT sluice_batch; SAVEPOINT sluice_batch; "
                                     : "SAVEPOINT sluice_batch; ",
                          p->sent, n, &res);
    if (c != COPY_START) {
        p->sp_open = 1;
    }
    if (c == COPY_OK) {
        PQclear(res);
        return SL_SEND_OK;
    }
    char m[1024];
    sl_pg_describe(m, sizeof(m), res, p->conn);
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    int lost = sl_pg_conn_failure(res, p->conn);
    int transient = st && (strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0);
    int rowerr = c == COPY_ERR && row_error(res);
    int code = sl_pg_code(res, p->conn);
    PQclear(res);
    if (lost) {
        sl_error_set(err, SL_ERR_IO, "%s: COPY failed, connection lost (%s): %s", p->cfg->label,
                     p->where, m);
        return SL_SEND_FATAL;
    }
    if (c == COPY_START) {
        /* not about a row (permissions, the staging table gone): the
         * load cannot go on */
        sl_error_set(err, code, "%s: cannot start COPY: %s", p->cfg->label, m);
        return SL_SEND_FATAL;
    }
    sl_error e2;
    if (exec_sql(p, "ROLLBACK TO SAVEPOINT sluice_batch", "cannot undo the batch", &e2) != 0) {
        *err = e2;
        return SL_SEND_FATAL;
    }
    if (!rowerr) {
        sl_error_set(err, code, "%s: COPY failed: %s", p->cfg->label, m);
        return transient ? SL_SEND_RETRY : SL_SEND_FAIL;
    }
    /* some row was refused: find it (them) by halving the batch */
    int failures = 0;
    stop_why why = {SL_SEND_FAIL, 0};
    if (load_parts(p, b, p->sent, n, &failures, &why, err) != 0) {
        if (!why.lost &&
            exec_sql(p, "ROLLBACK TO SAVEPOINT sluice_batch", "cannot undo the batch", &e2) != 0) {
            *err = e2;
            return SL_SEND_FATAL;
        }
        return why.v;
    }
    return SL_SEND_OK;
}

/* replace when the table cannot be dropped (views, rules or other tables'
 * foreign keys depend on it): the table stays, with its grants, owner,
 * triggers and dependents; its rows are deleted and the staged ones
 * inserted, in the load's transaction. Columns the input added go to the
 * table first. */
static int refill(pgb *p, sl_error *err)
{
    int rc;
    const char *qs = sl_buf_cstr(&p->qstage);
    if ((rc = add_columns(p, sl_buf_cstr(&p->qtarget), &p->added, err)) != 0) {
        return rc;
    }
    sl_buf_reset(&p->sql);
    sl_buf_printf(&p->sql, "DELETE FROM %s", sl_buf_cstr(&p->qtarget));
    if ((rc = exec_sql(p, sl_buf_cstr(&p->sql), "cannot delete the old rows", err)) != 0) {
        return rc;
    }
    /* every stored column of the staging table (LIKE the table, plus the
     * added ones), so defaults already applied there are kept */
    const char *params[2] = {sl_buf_cstr(&p->qtarget), qs};
    rc = exec_generated(
        p,
        "SELECT format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s',"
        " $1::text, l, l, $2::text) FROM (SELECT string_agg(quote_ident(attname),"
        " ',' ORDER BY attnum) AS l FROM pg_attribute WHERE attrelid ="
        " to_regclass($2) AND attnum > 0 AND NOT attisdropped"
        " AND attgenerated = '') x",
        2, params, "cannot insert the new rows", err);
    if (rc != 0) {
        return rc;
    }
    sl_buf_reset(&p->sql);
    sl_buf_printf(&p->sql, "DROP TABLE %s", qs);
    return exec_sql(p, sl_buf_cstr(&p->sql), "cannot drop the staging table", err);
}

/* The fast replace: the staging table takes the table's place. When the
 * table has dependents, DROP TABLE fails (SQLSTATE 2BP01): everything since
 * the savepoint is undone and the rows are replaced in place (refill).
 * *in_place tells which happened. */
static int commit_replace(pgb *p, int *in_place, sl_error *err)
{
    int rc;
    const char *qs = sl_buf_cstr(&p->qstage);
    const char *params[3] = {sl_buf_cstr(&p->qtarget), qs, NULL};
    *in_place = 0;
    if ((rc = exec_sql(p, "SAVEPOINT sluice_swap", "cannot start the swap", err)) != 0) {
        return rc;
    }
    /* who could read the old table can read the new one */
    rc = exec_generated(
        p,
        "SELECT format('GRANT %s ON TABLE %s TO %s%s', a.privilege_type, $2::text,"
        " CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,"
        " CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)"
        " FROM pg_class c, aclexplode(c.relacl) a"
        " WHERE c.oid = to_regclass($1) AND a.grantee <> c.relowner",
        2, params, "cannot copy the table's grants", err);
    if (rc != 0) {
        return rc;
    }
    /* serial columns: the staging table's defaults use the target's
     * sequences, which DROP TABLE would take along */
    rc = exec_generated(p,
                        "SELECT format('ALTER SEQUENCE %s OWNED BY %s.%I', d.objid::regclass,"
                        " $2::text, a.attname)"
                        " FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'"
                        " JOIN pg_attribute a ON a.attrelid = d.refobjid"
                        "  AND a.attnum = d.refobjsubid"
                        " WHERE d.classid = 'pg_class'::regclass"
                        "  AND d.refclassid = 'pg_class'::regclass"
                        "  AND d.refobjid = to_regclass($1) AND d.deptype = 'a'",
                        2, params, "cannot hand over the table's sequences", err);
    if (rc != 0) {
        return rc;
    }
    sl_buf_reset(&p->sql);
    sl_buf_printf(&p->sql, "DROP TABLE %s", sl_buf_cstr(&p->qtarget));
    PGresult *res = PQexec(p->conn, sl_buf_cstr(&p->sql));
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        int dependents = st && strcmp(st, "2BP01") == 0;
        char m[1024];
        sl_pg_describe(m, sizeof(m), res, p->conn);
        rc = sl_error_set(err, sl_pg_code(res, p->conn), "%s: cannot replace it: %s", p->cfg->label,
                          m);
        PQclear(res);
        if (!dependents) {
            return rc;
        }
        if ((rc = exec_sql(p, "ROLLBACK TO SAVEPOINT sluice_swap", "cannot undo the swap", err)) !=
            0) {
            return rc;
        }
        sl_debug(p->cfg->prefix, "%s has dependent objects: replacing its rows in place",
                 p->cfg->label);
        *in_place = 1;
        return refill(p, err);
    }
    PQclear(res);
    sl_buf_reset(&p->sql);
    sl_buf_printf(&p->sql, "ALTER TABLE %s RENAME TO ", qs);
    if ((rc = qident(p, &p->sql, p->cfg->table, err)) != 0 ||
        (rc = exec_sql(p, sl_buf_cstr(&p->sql), "cannot rename the staging table", err)) != 0) {
        return rc;
    }
    /* index names follow the table: sluice_stage_t_pkey -> t_pkey */
    params[1] = p->stage;
    params[2] = p->cfg->table;
    return exec_generated(p,
                          "SELECT format('ALTER INDEX %I.%I RENAME TO %I', n.nspname, i.relname,"
                          " $3 || substr(i.relname, length($2) + 1))"
                          " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
                          " JOIN pg_namespace n ON n.oid = i.relnamespace"
                          " WHERE x.indrelid = to_regclass($1) AND left(i.relname, length($2)) = $2"
                          "  AND length($3 || substr(i.relname, length($2) + 1)) <= 63"
                          "  AND to_regclass(format('%I.%I', n.nspname,"
                          "   $3 || substr(i.relname, length($2) + 1))) IS NULL",
                          3, params, "cannot rename the new table's indexes", err);
}

static int commit_merge(pgb *p, long long *deleted, long long *inserted, sl_error *err)
{
    int rc;
    if ((rc = add_columns(p, sl_buf_cstr(&p->qtarget), &p->added, err)) != 0) {
        return rc;
    }
    sl_buf *q = &p->sql;
    if (p->cfg->mode == SQLT_UPSERT) {
        if ((rc = exec_sql(p, "ANALYZE " TEMP_STAGE, "cannot analyze the staging table", err))) {
            return rc;
        }
        /* last row per key wins: keep the highest sequence number */
        sl_buf_reset(q);
        sl_buf_puts(q, "DELETE FROM " TEMP_STAGE " s USING (SELECT ");
        for (size_t k = 0; k < p->cfg->nkey; k++) {
            qident(p, q, p->cfg->key[k], err);
            sl_buf_puts(q, ",");
        }
        sl_buf_puts(q, "max(" SEQ_COL ") AS m FROM " TEMP_STAGE " GROUP BY ");
        for (size_t k = 0; k < p->cfg->nkey; k++) {
            sl_buf_puts(q, k ? "," : "");
            qident(p, q, p->cfg->key[k], err);
        }
        sl_buf_puts(q, " HAVING count(*) > 1) d WHERE s." SEQ_COL " < d.m");
        for (size_t k = 0; k < p->cfg->nkey; k++) {
            sl_buf_puts(q, " AND s.");
            qident(p, q, p->cfg->key[k], err);
            sl_buf_puts(q, " = d.");
            if ((rc = qident(p, q, p->cfg->key[k], err)) != 0) {
                return rc;
            }
        }
        if ((rc = exec_sql(p, sl_buf_cstr(q), "cannot deduplicate the staged rows", err)) != 0) {
            return rc;
        }
        /* then the target rows those keys replace; no unique constraint needed */
        sl_buf_reset(q);
        sl_buf_printf(q, "DELETE FROM %s t USING " TEMP_STAGE " s WHERE ",
                      sl_buf_cstr(&p->qtarget));
        for (size_t k = 0; k < p->cfg->nkey; k++) {
            sl_buf_puts(q, k ? " AND t." : "t.");
            qident(p, q, p->cfg->key[k], err);
            sl_buf_puts(q, " = s.");
            if ((rc = qident(p, q, p->cfg->key[k], err)) != 0) {
                return rc;
            }
        }
        PGresult *res = PQexec(p->conn, sl_buf_cstr(q));
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            char m[1024];
            sl_pg_describe(m, sizeof(m), res, p->conn);
            int code = sl_pg_code(res, p->conn);
            PQclear(res);
            return sl_error_set(err, code, "%s: cannot delete the rows being replaced: %s",
                                p->cfg->label, m);
        }
        *deleted = strtoll(PQcmdTuples(res), NULL, 10);
        PQclear(res);
    }
    sl_buf_reset(q);
    if (sl_buf_printf(q, "INSERT INTO %s (%s) SELECT %s FROM " TEMP_STAGE, sl_buf_cstr(&p->qtarget),
                      sl_buf_cstr(&p->collist), sl_buf_cstr(&p->collist)) < 0) {
        return nomem(err);
    }
    PGresult *res = PQexec(p->conn, sl_buf_cstr(q));
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        char m[1024];
        sl_pg_describe(m, sizeof(m), res, p->conn);
        int code = sl_pg_code(res, p->conn);
        PQclear(res);
        return sl_error_set(err, code, "%s: cannot insert the staged rows: %s", p->cfg->label, m);
    }
    *inserted = strtoll(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    return 0;
}

/* Add to err's message (an error already set). */
static void err_append(sl_error *err, const char *s)
{
    size_t n = strlen(err->msg);
    snprintf(err->msg + n, sizeof(err->msg) - n, "%s", s);
}

static int pg_commit(void *be, sl_error *err)
{
    pgb *p = be;
    int rc;
    long long rows = 0, deleted = 0;
    if ((rc = end_stream(p, err)) != 0) {
        pg_rollback(p);
        err_append(err, "; the load was rolled back, the table is unchanged");
        return rc;
    }
    int in_place = 0;
    if (p->cfg->mode == SQLT_REPLACE) {
        rows = p->copied;
        rc = commit_replace(p, &in_place, err);
    } else {
        rc = commit_merge(p, &deleted, &rows, err);
    }
    if (rc != 0) {
        pg_rollback(p);
        err_append(err, "; the load was rolled back, the table is unchanged");
        return rc;
    }
    /* COMMIT ends the transaction whatever happens; a lost connection leaves
     * its outcome unknown */
    p->in_tx = 0;
    PGresult *res = PQexec(p->conn, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK || strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        char m[1024];
        sl_pg_describe(m, sizeof(m), res, p->conn);
        rc = sl_error_set(
            err, sl_pg_code(res, p->conn), "%s: cannot commit the load: %s", p->cfg->label,
            PQresultStatus(res) == PGRES_COMMAND_OK ? "the transaction had failed" : m);
    }
    PQclear(res);
    if (rc != 0) {
        err_append(err, PQstatus(p->conn) == CONNECTION_BAD
                            ? "; whether the load was committed is unknown"
                            : "; the load was rolled back, the table is unchanged");
        return rc;
    }
    if (p->cfg->mode == SQLT_REPLACE) {
        sl_info(p->cfg->prefix, "replaced %s: %lld rows%s", p->cfg->label, rows,
                in_place ? " (in place: views or foreign keys depend on it)" : "");
    } else if (p->cfg->mode == SQLT_UPSERT) {
        sl_info(p->cfg->prefix, "upserted into %s: %lld rows (%lld replaced)", p->cfg->label, rows,
                deleted);
    } else {
        sl_info(p->cfg->prefix, "appended to %s: %lld rows", p->cfg->label, rows);
    }
    return 0;
}

const sqlt_backend sqlt_pg = {
    .name = "postgres",
    .open = pg_open,
    .begin = pg_begin,
    .columns = pg_columns,
    .exec_file = pg_exec_file,
    .create = pg_create,
    .stage = pg_stage,
    .write = pg_write,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .close = pg_close,
};
