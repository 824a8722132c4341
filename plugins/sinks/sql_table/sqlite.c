/* sql_table, SQLite backend: one write transaction (BEGIN IMMEDIATE) per
 * load, one prepared INSERT reused for every row, a savepoint per batch.
 *
 * SQLite makes the whole transaction visible at once (or not at all), so no
 * staging table is needed for replace or append:
 *   replace: DELETE FROM the table, then INSERT every row (the table keeps
 *     its exact schema, indexes and triggers; readers of a WAL database see
 *     the old rows until COMMIT; with a rollback journal they may wait for it);
 *   append: INSERT into the table;
 *   upsert: INSERT into a TEMP staging table; at commit keep the last row per
 *     key, delete the table's rows whose key is staged
 *     (`WHERE (k) IN (SELECT k FROM staging)`), INSERT ... SELECT.
 * The database's own journal mode and `synchronous` setting are left alone.
 * Column names match ignoring ASCII case, as SQLite resolves them. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "sluice/plugin.h"
#include "sqlt.h"

#define SQL_MAX ((size_t)16 * 1024 * 1024)
#define STAGE "temp.sluice_stage"
#define BUSY_TIMEOUT_MS 30000

typedef struct slb {
    sqlite3 *db;
    const sqlt_cfg *cfg;
    sl_buf qtarget; /* main."table" */
    sl_buf collist;
    sl_buf sql;
    sqlite3_stmt *ins;
    int in_tx;
    long long rows; /* rows inserted by released batches */
} slb;

static int nomem(sl_error *err)
{
    return sl_error_set(err, SL_ERR_NOMEM, "sql_table: out of memory");
}

/* Append "name" with embedded quotes doubled. */
static int qident(sl_buf *out, const char *name, sl_error *err)
{
    if (sl_buf_putc(out, '"') < 0) {
        return nomem(err);
    }
    for (const char *c = name; *c; c++) {
        if ((*c == '"' && sl_buf_putc(out, '"') < 0) || sl_buf_putc(out, *c) < 0) {
            return nomem(err);
        }
    }
    return sl_buf_putc(out, '"') < 0 ? nomem(err) : 0;
}

static int exec_sql(slb *s, const char *sql, const char *what, sl_error *err)
{
    char *msg = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        char m[512];
        sl_error_set(err, SL_ERR_IO, "%s: %s: %s", s->cfg->label, what,
                     sqlt_first_line(m, sizeof(m), msg ? msg : sqlite3_errmsg(s->db)));
        sqlite3_free(msg);
        return SL_ERR_IO;
    }
    return 0;
}

static void lite_close(void *be)
{
    slb *s = be;
    if (!s) {
        return;
    }
    sqlite3_finalize(s->ins);
    if (s->db) {
        sqlite3_close_v2(s->db);
    }
    sl_buf_free(&s->qtarget);
    sl_buf_free(&s->collist);
    sl_buf_free(&s->sql);
    free(s);
}

static int lite_open(void **be, const char *url, const sqlt_cfg *cfg, sl_error *err)
{
    int rc;
    slb *s = calloc(1, sizeof(*s));
    if (!s) {
        return nomem(err);
    }
    s->cfg = cfg;
    sl_buf_init(&s->qtarget, 1024);
    sl_buf_init(&s->collist, SQL_MAX);
    sl_buf_init(&s->sql, SQL_MAX);
    const char *path = url;
    if (strncmp(path, "sqlite://", 9) == 0) {
        path += 9;
    } else if (strncmp(path, "sqlite:", 7) == 0) {
        path += 7;
    }
    if (!path[0]) {
        rc = sl_error_set(err, SL_ERR_CONFIG, "%s: url: no SQLite file path after 'sqlite:'",
                          cfg->label);
        goto fail;
    }
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        rc = sl_error_set(err, SL_ERR_IO, "%s: cannot open the SQLite database '%s': %s",
                          cfg->label, path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(s->db, 1);
    if ((rc = qident(&s->qtarget, "main", err)) != 0 || sl_buf_putc(&s->qtarget, '.') < 0 ||
        (rc = qident(&s->qtarget, cfg->table, err)) != 0) {
        rc = rc ? rc : nomem(err);
        goto fail;
    }
    *be = s;
    return 0;
fail:
    lite_close(s);
    return rc;
}

static int lite_begin(void *be, sl_error *err)
{
    slb *s = be;
    /* IMMEDIATE: take the write lock now (waiting up to the busy timeout),
     * not halfway through the load */
    int rc = exec_sql(s, "BEGIN IMMEDIATE", "cannot start the load's transaction", err);
    s->in_tx = rc == 0;
    return rc;
}

static void lite_rollback(void *be)
{
    slb *s = be;
    if (!s->in_tx) {
        return;
    }
    s->in_tx = 0;
    sqlite3_reset(s->ins);
    if (!sqlite3_get_autocommit(s->db)) {
        sl_error e;
        if (exec_sql(s, "ROLLBACK", "rollback", &e) != 0) {
            sl_warn(s->cfg->prefix, "%s", e.msg);
        }
    }
}

static int lite_columns(void *be, sqlt_names *out, sl_error *err)
{
    slb *s = be;
    sqlite3_stmt *st = NULL;
    int rc = 0;
    int step;
    /* sqlite_master's name compare is case-sensitive; SQLite's names are not */
    if (sqlite3_prepare_v2(s->db,
                           "SELECT type FROM main.sqlite_master WHERE name = ?1 COLLATE NOCASE"
                           " AND type IN ('table', 'view')",
                           -1, &st, NULL) != SQLITE_OK) {
        goto dberr;
    }
    sqlite3_bind_text(st, 1, s->cfg->table, -1, SQLITE_STATIC);
    step = sqlite3_step(st);
    if (step == SQLITE_DONE) {
        goto done; /* missing */
    }
    if (step != SQLITE_ROW) {
        goto dberr;
    }
    if (strcmp((const char *)sqlite3_column_text(st, 0), "table") != 0) {
        rc = sl_error_set(err, SL_ERR_INPUT, "%s is a view, not a table", s->cfg->label);
        goto done;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT name FROM pragma_table_info(?1, 'main')", -1, &st,
                           NULL) != SQLITE_OK) {
        goto dberr;
    }
    sqlite3_bind_text(st, 1, s->cfg->table, -1, SQLITE_STATIC);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *n = (const char *)sqlite3_column_text(st, 0);
        if (n && sqlt_names_add(out, n, strlen(n)) != 0) {
            rc = nomem(err);
            goto done;
        }
    }
    if (step != SQLITE_DONE) {
        goto dberr;
    }
    rc = 1;
    goto done;
dberr:
    rc = sl_error_set(err, SL_ERR_IO, "%s: cannot read its columns: %s", s->cfg->label,
                      sqlite3_errmsg(s->db));
done:
    sqlite3_finalize(st);
    return rc;
}

static int lite_exec_file(void *be, const char *sql, sl_error *err)
{
    slb *s = be;
    int rc = exec_sql(s, sql, "running it", err);
    if (rc == 0 && sqlite3_get_autocommit(s->db)) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s: the file ended the load's transaction (it must not contain "
                          "BEGIN, COMMIT or ROLLBACK)",
                          s->cfg->label);
    }
    return rc;
}

static int lite_create(void *be, const sqlt_cols *cols, sl_error *err)
{
    slb *s = be;
    sl_buf *q = &s->sql;
    sl_buf_reset(q);
    int rc = sl_buf_printf(q, "CREATE TABLE %s (", sl_buf_cstr(&s->qtarget)) < 0 ? nomem(err) : 0;
    for (size_t j = 0; j < cols->n && rc == 0; j++) {
        if ((j && sl_buf_putc(q, ',') < 0)) {
            return nomem(err);
        }
        if ((rc = qident(q, cols->name[j], err)) == 0 && sl_buf_puts(q, " TEXT") < 0) {
            rc = nomem(err);
        }
    }
    if (rc == 0 && sl_buf_putc(q, ')') < 0) {
        rc = nomem(err);
    }
    return rc ? rc : exec_sql(s, sl_buf_cstr(q), "cannot create it", err);
}

static int lite_stage(void *be, const sqlt_cols *cols, const sqlt_names *added,
                      const sqlt_names *existing, sl_error *err)
{
    (void)existing;
    slb *s = be;
    sl_buf *q = &s->sql;
    int rc = 0;
    for (size_t i = 0; i < added->n && rc == 0; i++) {
        sl_buf_reset(q);
        sl_buf_printf(q, "ALTER TABLE %s ADD COLUMN ", sl_buf_cstr(&s->qtarget));
        if ((rc = qident(q, added->v[i], err)) == 0 && sl_buf_puts(q, " TEXT") < 0) {
            rc = nomem(err);
        }
        if (rc == 0) {
            rc = exec_sql(s, sl_buf_cstr(q), "cannot add a column", err);
        }
    }
    sl_buf_reset(&s->collist);
    for (size_t j = 0; j < cols->n && rc == 0; j++) {
        if (j && sl_buf_putc(&s->collist, ',') < 0) {
            return nomem(err);
        }
        rc = qident(&s->collist, cols->name[j], err);
    }
    if (rc != 0) {
        return rc;
    }
    const char *into = sl_buf_cstr(&s->qtarget);
    sl_buf_reset(q);
    if (s->cfg->mode == SQLT_REPLACE) {
        sl_buf_printf(q, "DELETE FROM %s", into);
        if ((rc = exec_sql(s, sl_buf_cstr(q), "cannot empty it for the new rows", err)) != 0) {
            return rc;
        }
    } else if (s->cfg->mode == SQLT_UPSERT) {
        sl_buf_printf(q,
                      "DROP TABLE IF EXISTS " STAGE "; CREATE TABLE " STAGE
                      " AS SELECT %s FROM %s WHERE 0",
                      sl_buf_cstr(&s->collist), into);
        if ((rc = exec_sql(s, sl_buf_cstr(q), "cannot create the staging table", err)) != 0) {
            return rc;
        }
        into = STAGE;
    }
    sl_buf_reset(q);
    sl_buf_printf(q, "INSERT INTO %s (%s) VALUES (", into, sl_buf_cstr(&s->collist));
    for (size_t j = 0; j < cols->n; j++) {
        sl_buf_puts(q, j ? ",?" : "?");
    }
    if (sl_buf_putc(q, ')') < 0) {
        return nomem(err);
    }
    sqlite3_finalize(s->ins);
    s->ins = NULL;
    if (sqlite3_prepare_v2(s->db, sl_buf_cstr(q), -1, &s->ins, NULL) != SQLITE_OK) {
        return sl_error_set(err, SL_ERR_IO, "%s: cannot prepare the INSERT: %s", s->cfg->label,
                            sqlite3_errmsg(s->db));
    }
    return 0;
}

/* A row-level refusal (the row fails, the batch goes on)? */
static int row_error(int rc)
{
    int prim = rc & 0xff;
    return prim == SQLITE_CONSTRAINT || prim == SQLITE_MISMATCH || prim == SQLITE_TOOBIG ||
           prim == SQLITE_RANGE;
}

static sl_verdict lite_write(void *be, sl_batch *b, sl_error *err)
{
    slb *s = be;
    const sqlt_cols *cols = sqlt_sink_cols(s->cfg->sink);
    char num[SQLT_NUM_MAX];
    long long rows = 0;
    if (exec_sql(s, "SAVEPOINT sluice_batch", "cannot start the batch", err) != 0) {
        return SL_SEND_FATAL;
    }
    for (size_t i = 0; i < b->n; i++) {
        sl_record *r = &b->recs[i];
        if (r->status != SL_REC_OK) {
            continue;
        }
        int bad = 0;
        for (size_t j = 0; j < cols->n && !bad; j++) {
            const char *v;
            size_t len;
            int c = sqlt_cell(s->cfg->sink, r, j, num, &v, &len);
            if (c == SQLT_TEXT && !sqlt_value_ok(s->cfg->sink, r, j, v, len, 0)) {
                bad = 1; /* the record is marked failed */
            } else if (c) {
                /* num is reused by the next column: copy it */
                sqlite3_bind_text(s->ins, (int)j + 1, v, (int)len,
                                  v == num ? SQLITE_TRANSIENT : SQLITE_STATIC);
            } else {
                sqlite3_bind_null(s->ins, (int)j + 1);
            }
        }
        if (bad) {
            continue;
        }
        int rc = sqlite3_step(s->ins);
        sqlite3_reset(s->ins);
        if (rc == SQLITE_DONE) {
            rows++;
            continue;
        }
        char m[512];
        sqlt_first_line(m, sizeof(m), sqlite3_errmsg(s->db));
        if (row_error(rc)) {
            sl_record_fail(r, "line %" PRIu64 ": %s refused the row: %s", r->line, s->cfg->label,
                           m);
            continue;
        }
        sl_error_set(err, SL_ERR_IO, "%s: INSERT failed: %s", s->cfg->label, m);
        int prim = rc & 0xff;
        if (sqlite3_get_autocommit(s->db)) {
            /* SQLite rolled the whole transaction back (disk full, I/O error) */
            s->in_tx = 0;
            return SL_SEND_FATAL;
        }
        sl_error e2;
        if (exec_sql(s, "ROLLBACK TO sluice_batch; RELEASE sluice_batch", "cannot undo the batch",
                     &e2) != 0) {
            return SL_SEND_FATAL;
        }
        if (prim == SQLITE_BUSY || prim == SQLITE_LOCKED) {
            return SL_SEND_RETRY;
        }
        if (prim == SQLITE_FULL || prim == SQLITE_IOERR || prim == SQLITE_CORRUPT ||
            prim == SQLITE_NOMEM || prim == SQLITE_READONLY || prim == SQLITE_CANTOPEN) {
            return SL_SEND_FATAL;
        }
        return SL_SEND_FAIL;
    }
    if (exec_sql(s, "RELEASE sluice_batch", "cannot end the batch", err) != 0) {
        return SL_SEND_FATAL;
    }
    s->rows += rows;
    return SL_SEND_OK;
}

static int merge(slb *s, long long *deleted, long long *inserted, sl_error *err)
{
    sl_buf *q = &s->sql;
    sl_buf keys;
    sl_buf_init(&keys, SQL_MAX);
    int rc = 0;
    for (size_t k = 0; k < s->cfg->nkey && rc == 0; k++) {
        if (k && sl_buf_putc(&keys, ',') < 0) {
            rc = nomem(err);
            break;
        }
        rc = qident(&keys, s->cfg->key[k], err);
    }
    if (rc != 0) {
        goto done;
    }
    /* last row per key wins */
    sl_buf_reset(q);
    sl_buf_printf(q,
                  "DELETE FROM " STAGE " WHERE rowid NOT IN (SELECT max(rowid) FROM " STAGE
                  " GROUP BY %s)",
                  sl_buf_cstr(&keys));
    if ((rc = exec_sql(s, sl_buf_cstr(q), "cannot deduplicate the staged rows", err)) != 0) {
        goto done;
    }
    sl_buf_reset(q);
    sl_buf_printf(q, "DELETE FROM %s WHERE (%s) IN (SELECT %s FROM " STAGE ")",
                  sl_buf_cstr(&s->qtarget), sl_buf_cstr(&keys), sl_buf_cstr(&keys));
    if ((rc = exec_sql(s, sl_buf_cstr(q), "cannot delete the rows being replaced", err)) != 0) {
        goto done;
    }
    *deleted = sqlite3_changes(s->db);
    sl_buf_reset(q);
    if (sl_buf_printf(q, "INSERT INTO %s (%s) SELECT %s FROM " STAGE, sl_buf_cstr(&s->qtarget),
                      sl_buf_cstr(&s->collist), sl_buf_cstr(&s->collist)) < 0) {
        rc = nomem(err);
        goto done;
    }
    if ((rc = exec_sql(s, sl_buf_cstr(q), "cannot insert the staged rows", err)) != 0) {
        goto done;
    }
    *inserted = sqlite3_changes(s->db);
    rc = exec_sql(s, "DROP TABLE " STAGE, "cannot drop the staging table", err);
done:
    sl_buf_free(&keys);
    return rc;
}

static int lite_commit(void *be, sl_error *err)
{
    slb *s = be;
    long long deleted = 0, rows = s->rows;
    int rc = 0;
    sqlite3_reset(s->ins);
    if (s->cfg->mode == SQLT_UPSERT) {
        rc = merge(s, &deleted, &rows, err);
    }
    if (rc == 0) {
        rc = exec_sql(s, "COMMIT", "cannot commit the load", err);
    }
    if (rc != 0) {
        lite_rollback(s);
        size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof(err->msg) - n,
                 "; the load was rolled back, the table is unchanged");
        return rc;
    }
    s->in_tx = 0;
    if (s->cfg->mode == SQLT_REPLACE) {
        sl_info(s->cfg->prefix, "replaced %s: %lld rows", s->cfg->label, rows);
    } else if (s->cfg->mode == SQLT_UPSERT) {
        sl_info(s->cfg->prefix, "upserted into %s: %lld rows (%lld replaced)", s->cfg->label, rows,
                deleted);
    } else {
        sl_info(s->cfg->prefix, "appended to %s: %lld rows", s->cfg->label, rows);
    }
    return 0;
}

const sqlt_backend sqlt_sqlite = {
    .name = "sqlite",
    .nocase = 1,
    .open = lite_open,
    .begin = lite_begin,
    .columns = lite_columns,
    .exec_file = lite_exec_file,
    .create = lite_create,
    .stage = lite_stage,
    .write = lite_write,
    .commit = lite_commit,
    .rollback = lite_rollback,
    .close = lite_close,
};
