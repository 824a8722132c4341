/* sql_table, Amazon Redshift dialect (redshift://user:pw@host:5439/db).
 *
 * Redshift speaks the Postgres wire protocol (the session comes from
 * sluice/pg.h), but its SQL is a subset: no COPY ... FROM STDIN, no
 * INSERT ... ON CONFLICT, no SAVEPOINT, no ON COMMIT DROP, no to_regclass /
 * aclexplode / format(), no SERIAL, arrays or json/jsonb columns. Every
 * statement here is one Redshift documents, and all of them also run on
 * Postgres, which is how the tests run them (restricted mode, below).
 *
 * One load is one transaction, as on Postgres:
 *   BEGIN
 *   CREATE TEMP TABLE sluice_stage (<load columns, the table's own types>
 *                                   [, _sluice_seq BIGINT for upsert])
 *   rows -> sluice_stage: multi-row INSERT ... VALUES ($1,...),(...) with
 *           bound parameters, each statement under Redshift's 16 MB limit
 *           (the INSERT path), or gzip CSV objects on S3 and one
 *           COPY ... FROM '<manifest>' MANIFEST at commit (the COPY path,
 *           copy.c when s3_staging is set)
 *   at commit: ALTER TABLE ... ADD COLUMN for new columns, then
 *     replace: DELETE FROM t; INSERT INTO t (cols) SELECT cols FROM stage
 *     append:  INSERT INTO t (cols) SELECT cols FROM stage
 *     upsert:  DELETE FROM stage WHERE _sluice_seq NOT IN (SELECT MAX(..)
 *              GROUP BY key) (last row per key wins);
 *              DELETE FROM t USING stage WHERE t.k = stage.k;
 *              INSERT INTO t (cols) SELECT cols FROM stage
 *   DROP TABLE sluice_stage; COMMIT
 *
 * replace refills the table in place instead of swapping a new table in
 * (the Postgres path's fast route): the table keeps its owner, grants,
 * dist/sort keys and every view on it (late-binding or not), and readers
 * see the old rows until COMMIT. Copying grants to a new table would need
 * aclexplode(), which Redshift lacks; TRUNCATE would commit the transaction
 * on Redshift, hence DELETE (its space is reclaimed by auto VACUUM DELETE).
 *
 * Without savepoints a statement the server refuses aborts the whole
 * transaction, so a row Redshift refuses fails the load (the error names
 * what the server said). What sluice can check itself is checked before a
 * row is sent and fails that row alone: UTF-8 and NUL, NULL keys, and the
 * byte length of VARCHAR/CHAR columns (Redshift counts bytes).
 *
 * Restricted mode (tests): SLUICE_REDSHIFT_TRACE=FILE appends every
 * statement sent (text only, never parameter values) to FILE, one per
 * line. SLUICE_REDSHIFT_EMULATE=postgres lets a redshift:// URL that
 * reaches a Postgres server (not Redshift: checked with version()) stand in
 * for a cluster where the two differ: the COPY from S3 is recorded in the
 * trace but not run, and the same rows go to the staging table through the
 * INSERT path (see copy.c). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "rs.h"
#include "sluice/log.h"
#include "sluice/pg.h"
#include "sluice/plugin.h"
#include "sqlt.h"

#define SQL_MAX ((size_t)16 * 1024 * 1024)

/* ---------------------------------------------------------------- helpers */

static int nomem(sl_error *err)
{
    return sl_error_set(err, SL_ERR_NOMEM, "sql_table: out of memory");
}

void rs_trace(rsb *p, const char *sql, int nparams)
{
    if (!p->trace) {
        return;
    }
    /* one statement per line: line ends inside (a schema_file) become spaces */
    for (const char *c = sql; *c; c++) {
        fputc(*c == '\n' || *c == '\r' ? ' ' : *c, p->trace);
    }
    if (nparams) {
        fprintf(p->trace, "  -- %d parameters", nparams);
    }
    fputc('\n', p->trace);
    fflush(p->trace);
}

PGresult *rs_query(rsb *p, const char *sql, int nparams, const char *const *params)
{
    rs_trace(p, sql, nparams);
    if (nparams == 0) {
        return PQexec(p->conn, sql);
    }
    return PQexecParams(p->conn, sql, nparams, NULL, params, NULL, NULL, 0);
}

int rs_fail(rsb *p, PGresult *res, const char *what, sl_error *err)
{
    return sqlt_pg_fail(p->conn, res, p->cfg, p->where, what, err);
}

int rs_exec(rsb *p, const char *sql, const char *what, long long *rows, sl_error *err)
{
    PGresult *res = rs_query(p, sql, 0, NULL);
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        rc = rs_fail(p, res, what, err);
    } else if (rows) {
        *rows = strtoll(PQcmdTuples(res), NULL, 10);
    }
    PQclear(res);
    return rc;
}

int rs_qident(rsb *p, sl_buf *out, const char *name, sl_error *err)
{
    return sqlt_pg_qident(p->conn, p->cfg, out, name, err);
}

size_t rs_type_bytes(const char *type)
{
    /* format_type() spells VARCHAR(n) / CHAR(n) like this on both servers */
    const char *pre[] = {"character varying(", "character(", NULL};
    for (int i = 0; pre[i]; i++) {
        size_t l = strlen(pre[i]);
        if (strncmp(type, pre[i], l) == 0) {
            char *end;
            unsigned long long n = strtoull(type + l, &end, 10);
            return *end == ')' ? (size_t)n : 0;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- open / close */

static void rs_close(void *be)
{
    rsb *p = be;
    if (!p) {
        return;
    }
    rs_copy_free(p);
    if (p->conn) {
        PQfinish(p->conn);
    }
    if (p->trace) {
        fclose(p->trace);
    }
    free(p->schema);
    sl_buf_free(&p->qtarget);
    sl_buf_free(&p->collist);
    sl_buf_free(&p->sql);
    sl_buf_free(&p->vals);
    free(p->voff);
    free(p->ptrs);
    sqlt_names_free(&p->added);
    sqlt_names_free(&p->tcols);
    sqlt_names_free(&p->ttypes);
    free(p->maxlen);
    free(p);
}

static int rs_open(void **be, const char *url, const sqlt_cfg *cfg, sl_error *err)
{
    int rc = 0;
    rsb *p = calloc(1, sizeof(*p));
    if (!p) {
        return nomem(err);
    }
    p->cfg = cfg;
    sl_buf_init(&p->qtarget, 1024);
    sl_buf_init(&p->collist, SQL_MAX);
    sl_buf_init(&p->sql, SQL_MAX);
    sl_buf_init(&p->vals, RS_STMT_MAX);
    if (strcmp(cfg->table, RS_STAGE) == 0) {
        rc = sl_error_set(err, SL_ERR_CONFIG,
                          "%s: the name '%s' is the Redshift dialect's staging table; load into "
                          "another table name",
                          cfg->label, RS_STAGE);
        goto fail;
    }
    const char *tf = getenv("SLUICE_REDSHIFT_TRACE");
    if (tf && tf[0] && !(p->trace = fopen(tf, "a"))) {
        rc = sl_error_set(err, SL_ERR_CONFIG, "%s: SLUICE_REDSHIFT_TRACE: cannot open '%s': %m",
                          cfg->label, tf);
        goto fail;
    }
    if ((rc = rs_copy_init(p, err)) != 0) {
        goto fail;
    }
    p->conn = sl_pg_connect(url, cfg->label, cfg->prefix, p->where, err);
    if (!p->conn) {
        rc = err->code ? err->code : SL_ERR_IO;
        goto fail;
    }
    /* Is it Redshift? ("PostgreSQL 8.0.2 on i686-pc-linux-gnu, ..., Redshift 1.0.x") */
    PGresult *res = rs_query(p, "SELECT version()", 0, NULL);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rc = rs_fail(p, res, "cannot ask the server's version", err);
        PQclear(res);
        goto fail;
    }
    p->is_redshift = strstr(PQgetvalue(res, 0, 0), "Redshift") != NULL;
    PQclear(res);
    const char *em = getenv("SLUICE_REDSHIFT_EMULATE");
    p->emulate = !p->is_redshift && em && strcmp(em, "postgres") == 0;
    if (!p->is_redshift && !p->emulate) {
        sl_warn(cfg->prefix,
                "%s: %s is not Amazon Redshift: the Redshift dialect's SQL runs on it, but a COPY "
                "from S3 will not",
                cfg->label, p->where);
    }
    *be = p;
    return 0;
fail:
    rs_close(p);
    return rc;
}

/* ---------------------------------------------------------------- load */

static int rs_begin(void *be, sl_error *err)
{
    rsb *p = be;
    int rc = rs_exec(p, "BEGIN", "cannot start the load's transaction", NULL, err);
    p->in_tx = rc == 0;
    p->aborted = 0;
    p->staged = 0;
    p->seq = 0;
    return rc;
}

static void rs_rollback(void *be)
{
    rsb *p = be;
    if (p->in_tx) {
        p->in_tx = 0;
        sl_error e;
        if (PQstatus(p->conn) == CONNECTION_OK &&
            rs_exec(p, "ROLLBACK", "rollback", NULL, &e) != 0) {
            sl_warn(p->cfg->prefix, "%s", e.msg);
        }
    }
    rs_copy_abort(p);
}

static int set_target(rsb *p, const char *schema, sl_error *err)
{
    free(p->schema);
    if (!(p->schema = strdup(schema))) {
        return nomem(err);
    }
    sl_buf_reset(&p->qtarget);
    int rc = rs_qident(p, &p->qtarget, p->schema, err);
    if (rc == 0 && sl_buf_putc(&p->qtarget, '.') < 0) {
        return nomem(err);
    }
    return rc ? rc : rs_qident(p, &p->qtarget, p->cfg->table, err);
}

/* The table's columns and types, from pg_catalog tables and functions that
 * Redshift's leader node has (pg_class, pg_namespace, pg_attribute,
 * format_type, pg_table_is_visible, current_schema): no to_regclass. */
static int rs_columns(void *be, sqlt_names *out, sl_error *err)
{
    rsb *p = be;
    int rc = 0;
    char *schema = NULL;
    const char *params[2] = {p->cfg->table, p->cfg->schema};
    PGresult *res = rs_query(
        p,
        p->cfg->schema
            ? "SELECT n.nspname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod)"
              " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
              " LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0"
              " AND NOT a.attisdropped WHERE c.relname = $1 AND n.nspname = $2 ORDER BY a.attnum"
            : "SELECT n.nspname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod)"
              " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
              " LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0"
              " AND NOT a.attisdropped WHERE c.relname = $1"
              " AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY a.attnum",
        p->cfg->schema ? 2 : 1, params);
    sqlt_names_free(&p->tcols);
    sqlt_names_free(&p->ttypes);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = rs_fail(p, res, "cannot read its columns", err);
        goto done;
    }
    rc = sqlt_pg_table(p->conn, res, p->cfg, &p->tcols, &p->ttypes, &schema, err);
    if (rc >= 0) {
        int r = set_target(p, schema, err);
        rc = r ? r : rc;
    }
    for (size_t i = 0; rc == 1 && i < p->tcols.n; i++) {
        if (sqlt_names_add(out, p->tcols.v[i], strlen(p->tcols.v[i])) != 0) {
            rc = nomem(err);
        }
    }
done:
    free(schema);
    PQclear(res);
    return rc;
}

static int rs_exec_file(void *be, const char *sql, sl_error *err)
{
    rsb *p = be;
    int rc = rs_exec(p, sql, "running it", NULL, err);
    if (rc == 0 && PQtransactionStatus(p->conn) != PQTRANS_INTRANS) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s: the file ended the load's transaction (it must not contain "
                          "BEGIN, COMMIT or ROLLBACK)",
                          p->cfg->label);
    }
    return rc;
}

static int rs_create(void *be, const sqlt_cols *cols, sl_error *err)
{
    rsb *p = be;
    sl_buf *q = &p->sql;
    sl_buf_reset(q);
    int rc = sl_buf_printf(q, "CREATE TABLE %s (", sl_buf_cstr(&p->qtarget)) < 0 ? nomem(err) : 0;
    for (size_t j = 0; j < cols->n && rc == 0; j++) {
        if (j && sl_buf_putc(q, ',') < 0) {
            return nomem(err);
        }
        if ((rc = rs_qident(p, q, cols->name[j], err)) == 0 &&
            sl_buf_puts(q, " " RS_TEXT_TYPE) < 0) {
            rc = nomem(err);
        }
    }
    if (rc == 0 && sl_buf_putc(q, ')') < 0) {
        rc = nomem(err);
    }
    return rc ? rc : rs_exec(p, sl_buf_cstr(q), "cannot create it", NULL, err);
}

/* ALTER TABLE rel ADD COLUMN "x" VARCHAR(65535), for each name. */
static int add_columns(rsb *p, const char *rel, const sqlt_names *names, sl_error *err)
{
    int rc = 0;
    for (size_t i = 0; i < names->n && rc == 0; i++) {
        sl_buf_reset(&p->sql);
        if (sl_buf_printf(&p->sql, "ALTER TABLE %s ADD COLUMN ", rel) < 0) {
            return nomem(err);
        }
        if ((rc = rs_qident(p, &p->sql, names->v[i], err)) != 0) {
            break;
        }
        if (sl_buf_puts(&p->sql, " " RS_TEXT_TYPE) < 0) {
            return nomem(err);
        }
        rc = rs_exec(p, sl_buf_cstr(&p->sql), "cannot add a column", NULL, err);
    }
    return rc;
}

static int rs_stage(void *be, const sqlt_cols *cols, const sqlt_names *added,
                    const sqlt_names *existing, sl_error *err)
{
    rsb *p = be;
    int rc;
    (void)existing;
    sqlt_names_free(&p->added);
    for (size_t i = 0; i < added->n; i++) {
        if (sqlt_names_add(&p->added, added->v[i], strlen(added->v[i])) != 0) {
            return nomem(err);
        }
    }
    free(p->maxlen);
    if (!(p->maxlen = calloc(cols->n ? cols->n : 1, sizeof(*p->maxlen)))) {
        return nomem(err);
    }
    p->ncols = cols->n;
    sl_buf_reset(&p->collist);
    sl_buf *q = &p->sql;
    sl_buf_reset(q);
    if (sl_buf_puts(q, "CREATE TEMP TABLE " RS_STAGE " (") < 0) {
        return nomem(err);
    }
    for (size_t j = 0; j < cols->n; j++) {
        /* the table's own type, so values are checked as the table would */
        const char *type = RS_TEXT_TYPE;
        for (size_t i = 0; i < p->tcols.n; i++) {
            if (strcmp(p->tcols.v[i], cols->name[j]) == 0) {
                type = p->ttypes.v[i];
                break;
            }
        }
        p->maxlen[j] = rs_type_bytes(type);
        if (!p->maxlen[j] && strcmp(type, RS_TEXT_TYPE) == 0) {
            p->maxlen[j] = RS_TEXT_BYTES;
        }
        if (j && (sl_buf_putc(q, ',') < 0 || sl_buf_putc(&p->collist, ',') < 0)) {
            return nomem(err);
        }
        if ((rc = rs_qident(p, q, cols->name[j], err)) != 0 ||
            (rc = rs_qident(p, &p->collist, cols->name[j], err)) != 0) {
            return rc;
        }
        if (sl_buf_printf(q, " %s", type) < 0) {
            return nomem(err);
        }
    }
    if (p->cfg->mode == SQLT_UPSERT && sl_buf_puts(q, ", " RS_SEQ " BIGINT") < 0) {
        return nomem(err);
    }
    if (sl_buf_putc(q, ')') < 0) {
        return nomem(err);
    }
    if ((rc = rs_exec(p, sl_buf_cstr(q), "cannot create the staging table", NULL, err)) != 0) {
        return rc;
    }
    return rs_copy_stage(p, err);
}

/* Send the rows gathered so far as one INSERT. */
static int flush_insert(rsb *p, sl_error *err)
{
    if (p->nrows == 0) {
        return 0;
    }
    size_t per = p->ncols + (p->cfg->mode == SQLT_UPSERT);
    size_t n = p->nrows * per;
    sl_buf *q = &p->sql;
    sl_buf_reset(q);
    sl_buf_printf(q, "INSERT INTO " RS_STAGE " (%s%s) VALUES ", sl_buf_cstr(&p->collist),
                  p->cfg->mode == SQLT_UPSERT ? "," RS_SEQ : "");
    size_t k = 0;
    for (size_t r = 0; r < p->nrows; r++) {
        sl_buf_puts(q, r ? ",(" : "(");
        for (size_t j = 0; j < per; j++) {
            if (sl_buf_printf(q, j ? ",$%zu" : "$%zu", ++k) < 0) {
                return nomem(err);
            }
        }
        if (sl_buf_putc(q, ')') < 0) {
            return nomem(err);
        }
    }
    for (size_t i = 0; i < n; i++) {
        p->ptrs[i] = p->voff[i] == RS_NULL_OFF ? NULL : p->vals.data + p->voff[i];
    }
    PGresult *res = rs_query(p, sl_buf_cstr(q), (int)n, p->ptrs);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = rs_fail(p, res, "the server refused rows of the load", err);
    } else {
        p->staged += strtoll(PQcmdTuples(res), NULL, 10);
    }
    PQclear(res);
    p->nrows = 0;
    p->nvals = 0;
    sl_buf_reset(&p->vals);
    return rc;
}

int rs_put_param(rsb *p, const char *v, size_t len)
{
    if (p->nvals == p->vcap) {
        size_t cap = p->vcap ? p->vcap * 2 : 4096;
        size_t *o = realloc(p->voff, cap * sizeof(*o));
        if (!o) {
            return -1;
        }
        p->voff = o;
        const char **pt = realloc(p->ptrs, cap * sizeof(*pt));
        if (!pt) {
            return -1;
        }
        p->ptrs = pt;
        p->vcap = cap;
    }
    if (!v) {
        p->voff[p->nvals++] = RS_NULL_OFF;
        return 0;
    }
    size_t off = p->vals.len;
    if (sl_buf_append(&p->vals, v, len) < 0 || sl_buf_putc(&p->vals, '\0') < 0) {
        return -1;
    }
    p->voff[p->nvals++] = off;
    return 0;
}

int rs_row_check(rsb *p, sl_record *r)
{
    char num[SQLT_NUM_MAX];
    for (size_t j = 0; j < p->ncols; j++) {
        const char *v;
        size_t len;
        int c = sqlt_cell(p->cfg->sink, r, j, num, &v, &len);
        if (c == SQLT_TEXT && !sqlt_value_ok(p->cfg->sink, r, j, v, len, 0)) {
            return 0;
        }
        if (c && p->maxlen[j] && len > p->maxlen[j]) {
            sl_record_fail(r,
                           "line %" PRIu64 ": column '%s': %zu bytes, longer than the column's "
                           "%zu (Redshift counts VARCHAR lengths in bytes)",
                           r->line, sqlt_sink_cols(p->cfg->sink)->name[j], len, p->maxlen[j]);
            return 0;
        }
    }
    return 1;
}

/* The INSERT path: the batch's OK rows as multi-row INSERTs, each under
 * RS_STMT_MAX bytes (statement text and values) and RS_PARAMS_MAX
 * parameters. */
sl_verdict rs_insert_batch(rsb *p, sl_batch *b, sl_error *err)
{
    size_t per = p->ncols + (p->cfg->mode == SQLT_UPSERT);
    /* the statement text: "($1,$2,...)," about 8 bytes a value */
    size_t row_text = per * 8 + 4;
    char num[SQLT_NUM_MAX];
    for (size_t i = 0; i < b->n; i++) {
        sl_record *r = &b->recs[i];
        if (r->status != SL_REC_OK || !rs_row_check(p, r)) {
            continue;
        }
        size_t bytes = row_text;
        for (size_t j = 0; j < p->ncols; j++) {
            const char *v;
            size_t len;
            if (sqlt_cell(p->cfg->sink, r, j, num, &v, &len)) {
                bytes += len + 1;
            }
        }
        if (bytes + p->collist.len + 1024 > RS_STMT_MAX) {
            sl_record_fail(r,
                           "line %" PRIu64 ": row of %zu bytes: larger than Redshift's statement "
                           "limit (16 MB) allows",
                           r->line, bytes);
            continue;
        }
        if (p->nrows &&
            (p->vals.len + p->nrows * row_text + bytes + p->collist.len + 1024 > RS_STMT_MAX ||
             p->nvals + per > RS_PARAMS_MAX)) {
            if (flush_insert(p, err) != 0) {
                p->aborted = 1;
                return SL_SEND_FATAL;
            }
        }
        for (size_t j = 0; j < p->ncols; j++) {
            const char *v = NULL;
            size_t len = 0;
            if (!sqlt_cell(p->cfg->sink, r, j, num, &v, &len)) {
                v = NULL;
            }
            if (rs_put_param(p, v, len) < 0) {
                nomem(err);
                return SL_SEND_FATAL;
            }
        }
        if (p->cfg->mode == SQLT_UPSERT) {
            int l = snprintf(num, sizeof(num), "%lld", ++p->seq);
            if (rs_put_param(p, num, (size_t)l) < 0) {
                nomem(err);
                return SL_SEND_FATAL;
            }
        }
        p->nrows++;
    }
    if (flush_insert(p, err) != 0) {
        p->aborted = 1;
        return SL_SEND_FATAL;
    }
    return SL_SEND_OK;
}

static sl_verdict rs_write(void *be, sl_batch *b, sl_error *err)
{
    rsb *p = be;
    if (p->aborted) {
        sl_error_set(err, SL_ERR, "%s: the load's transaction failed earlier", p->cfg->label);
        return SL_SEND_FATAL;
    }
    if (p->copy) {
        return rs_copy_batch(p, b, err);
    }
    return rs_insert_batch(p, b, err);
}

static int merge(rsb *p, long long *deleted, long long *inserted, sl_error *err)
{
    int rc;
    const char *qt = sl_buf_cstr(&p->qtarget);
    sl_buf *q = &p->sql;
    if ((rc = add_columns(p, qt, &p->added, err)) != 0) {
        return rc;
    }
    if (p->cfg->mode == SQLT_REPLACE) {
        sl_buf_reset(q);
        sl_buf_printf(q, "DELETE FROM %s", qt);
        if ((rc = rs_exec(p, sl_buf_cstr(q), "cannot delete the old rows", deleted, err)) != 0) {
            return rc;
        }
    } else if (p->cfg->mode == SQLT_UPSERT) {
        /* last row per key wins: keep the highest sequence number */
        sl_buf_reset(q);
        sl_buf_puts(q, "DELETE FROM " RS_STAGE " WHERE " RS_SEQ " NOT IN (SELECT MAX(" RS_SEQ
                       ") FROM " RS_STAGE " GROUP BY ");
        for (size_t k = 0; k < p->cfg->nkey; k++) {
            sl_buf_puts(q, k ? "," : "");
            if ((rc = rs_qident(p, q, p->cfg->key[k], err)) != 0) {
                return rc;
            }
        }
        if (sl_buf_putc(q, ')') < 0) {
            return nomem(err);
        }
        if ((rc = rs_exec(p, sl_buf_cstr(q), "cannot deduplicate the staged rows", NULL, err)) !=
            0) {
            return rc;
        }
        /* the target rows those keys replace: DELETE ... USING (no unique
         * constraint needed; Redshift does not enforce them anyway) */
        sl_buf_reset(q);
        sl_buf_printf(q, "DELETE FROM %s USING " RS_STAGE " WHERE ", qt);
        for (size_t k = 0; k < p->cfg->nkey; k++) {
            sl_buf_puts(q, k ? " AND " : "");
            if ((rc = rs_qident(p, q, p->cfg->table, err)) != 0) {
                return rc;
            }
            sl_buf_putc(q, '.');
            if ((rc = rs_qident(p, q, p->cfg->key[k], err)) != 0) {
                return rc;
            }
            sl_buf_puts(q, " = " RS_STAGE ".");
            if ((rc = rs_qident(p, q, p->cfg->key[k], err)) != 0) {
                return rc;
            }
        }
        if ((rc = rs_exec(p, sl_buf_cstr(q), "cannot delete the rows being replaced", deleted,
                          err)) != 0) {
            return rc;
        }
    }
    sl_buf_reset(q);
    if (sl_buf_printf(q, "INSERT INTO %s (%s) SELECT %s FROM " RS_STAGE, qt,
                      sl_buf_cstr(&p->collist), sl_buf_cstr(&p->collist)) < 0) {
        return nomem(err);
    }
    if ((rc = rs_exec(p, sl_buf_cstr(q), "cannot insert the staged rows", inserted, err)) != 0) {
        return rc;
    }
    return rs_exec(p, "DROP TABLE " RS_STAGE, "cannot drop the staging table", NULL, err);
}

static void err_append(sl_error *err, const char *s)
{
    size_t n = strlen(err->msg);
    snprintf(err->msg + n, sizeof(err->msg) - n, "%s", s);
}

static int rs_commit(void *be, sl_error *err)
{
    rsb *p = be;
    int rc = 0;
    long long rows = 0, deleted = 0;
    if (p->aborted) {
        rc = sl_error_set(err, SL_ERR, "%s: the load's transaction failed earlier", p->cfg->label);
    }
    if (rc == 0 && p->copy) {
        rc = rs_copy_load(p, err);
    }
    if (rc == 0) {
        rc = merge(p, &deleted, &rows, err);
    }
    if (rc != 0) {
        rs_rollback(p);
        err_append(err, "; the load was rolled back, the table is unchanged");
        return rc;
    }
    p->in_tx = 0;
    PGresult *res = rs_query(p, "COMMIT", 0, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK || strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        char m[1024];
        sl_pg_describe(m, sizeof(m), res, p->conn);
        rc = sl_error_set(
            err, sl_pg_code(res, p->conn), "%s: cannot commit the load: %s", p->cfg->label,
            PQresultStatus(res) == PGRES_COMMAND_OK ? "the transaction had failed" : m);
    }
    PQclear(res);
    if (rc != 0) {
        rs_copy_abort(p);
        err_append(err, PQstatus(p->conn) == CONNECTION_BAD
                            ? "; whether the load was committed is unknown"
                            : "; the load was rolled back, the table is unchanged");
        return rc;
    }
    rs_copy_done(p);
    if (p->cfg->mode == SQLT_REPLACE) {
        sl_info(p->cfg->prefix, "replaced %s: %lld rows (in place, %lld old rows deleted)",
                p->cfg->label, rows, deleted);
    } else if (p->cfg->mode == SQLT_UPSERT) {
        sl_info(p->cfg->prefix, "upserted into %s: %lld rows (%lld replaced)", p->cfg->label, rows,
                deleted);
    } else {
        sl_info(p->cfg->prefix, "appended to %s: %lld rows", p->cfg->label, rows);
    }
    return 0;
}

const sqlt_backend sqlt_redshift = {
    .name = "redshift",
    .open = rs_open,
    .begin = rs_begin,
    .columns = rs_columns,
    .exec_file = rs_exec_file,
    .create = rs_create,
    .stage = rs_stage,
    .write = rs_write,
    .commit = rs_commit,
    .rollback = rs_rollback,
    .close = rs_close,
};
