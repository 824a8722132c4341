/* The SQLite backend of the state store: one file (default .sluice/state.db),
 * WAL journal, schema migrated at open, every statement prepared once per
 * connection and reused with bound parameters.
 *
 * Durability: with synchronous=NORMAL in WAL mode a commit is in the WAL file
 * (the OS page cache) when COMMIT returns, so it survives the process dying
 * in any way (kill -9, crash); the last commits before a power loss or kernel
 * crash may be lost, never corrupted. "?sync=full" fsyncs every commit. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/log.h"
#include "state/state_impl.h"

/* PRAGMA application_id of a sluice state database ("SLUI"). */
#define SQ_APP_ID 0x534C5549

/* Schema migrations: migrations[i] takes user_version i to i + 1. Append
 * only; never edit a released step. DDL only, so no parameters to bind. */
static const char *const migrations[] = {
    /* 1: initial schema */
    "CREATE TABLE runs("
    "  id INTEGER PRIMARY KEY,"
    "  pipeline TEXT NOT NULL,"
    "  input TEXT NOT NULL DEFAULT '',"
    "  status TEXT NOT NULL"
    "    CHECK (status IN ('running','ok','partial','failed','interrupted')),"
    "  started_at REAL NOT NULL,"
    "  finished_at REAL,"
    "  read INTEGER NOT NULL DEFAULT 0,"
    "  sent INTEGER NOT NULL DEFAULT 0,"
    "  failed INTEGER NOT NULL DEFAULT 0,"
    "  skipped INTEGER NOT NULL DEFAULT 0,"
    "  requests INTEGER NOT NULL DEFAULT 0,"
    "  retries INTEGER NOT NULL DEFAULT 0,"
    "  error TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX runs_pipeline_id ON runs(pipeline, id);"
    "CREATE TABLE kv("
    "  pipeline TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  value TEXT NOT NULL,"
    "  updated_at REAL NOT NULL,"
    "  PRIMARY KEY (pipeline, key));"
    "CREATE TABLE dead_letters("
    "  id INTEGER PRIMARY KEY,"
    "  pipeline TEXT NOT NULL,"
    "  run_id INTEGER,"
    "  stage INTEGER NOT NULL,"
    "  line INTEGER NOT NULL DEFAULT 0,"
    "  record TEXT NOT NULL,"
    "  error TEXT NOT NULL,"
    "  response TEXT NOT NULL DEFAULT '',"
    "  attempts INTEGER NOT NULL DEFAULT 1,"
    "  created_at REAL NOT NULL,"
    "  updated_at REAL NOT NULL);"
    "CREATE INDEX dead_letters_pipeline_id ON dead_letters(pipeline, id);"
    "CREATE TABLE jobs("
    "  id INTEGER PRIMARY KEY,"
    "  pipeline TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  idem_key TEXT,"
    "  payload TEXT,"
    "  status TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  not_before REAL,"
    "  created_at REAL NOT NULL,"
    "  started_at REAL,"
    "  finished_at REAL,"
    "  rows INTEGER,"
    "  error TEXT,"
    "  UNIQUE (pipeline, idem_key));",
    /* 2: jobs get an order key (same key: one at a time, in arrival order)
     * and the time after which retrying is pointless. The indexes keep a
     * claim independent of how many finished jobs are kept: the partial
     * ones list only runnable jobs in id order (a claim stops at the first
     * one in line), the order-key one answers "is an older job of this key
     * unfinished, or one running?" with a few seeks. */
    "ALTER TABLE jobs ADD COLUMN order_key TEXT;"
    "ALTER TABLE jobs ADD COLUMN expires_at REAL;"
    "CREATE INDEX jobs_pipeline_status_id ON jobs(pipeline, status, id);"
    "CREATE INDEX jobs_pipeline_order_key_status_id ON jobs(pipeline, order_key, status, id);"
    "CREATE INDEX jobs_runnable_pipeline_id ON jobs(pipeline, id) "
    "  WHERE status IN ('queued', 'retry');"
    "CREATE INDEX jobs_runnable_id ON jobs(id) WHERE status IN ('queued', 'retry');",
    /* 3: run leases (one run of a pipeline at a time, across processes) */
    "CREATE TABLE leases("
    "  name TEXT PRIMARY KEY,"
    "  owner TEXT NOT NULL,"
    "  host TEXT NOT NULL,"
    "  pid INTEGER NOT NULL,"
    "  acquired_at REAL NOT NULL,"
    "  heartbeat_at REAL NOT NULL,"
    "  expires_at REAL NOT NULL);",
    /* 4: a run can be "skipped" (its input was already delivered: nothing
     * to do). SQLite cannot change a CHECK: the table is rebuilt. */
    "CREATE TABLE runs_v4("
    "  id INTEGER PRIMARY KEY,"
    "  pipeline TEXT NOT NULL,"
    "  input TEXT NOT NULL DEFAULT '',"
    "  status TEXT NOT NULL"
    "    CHECK (status IN ('running','ok','partial','failed','interrupted','skipped')),"
    "  started_at REAL NOT NULL,"
    "  finished_at REAL,"
    "  read INTEGER NOT NULL DEFAULT 0,"
    "  sent INTEGER NOT NULL DEFAULT 0,"
    "  failed INTEGER NOT NULL DEFAULT 0,"
    "  skipped INTEGER NOT NULL DEFAULT 0,"
    "  requests INTEGER NOT NULL DEFAULT 0,"
    "  retries INTEGER NOT NULL DEFAULT 0,"
    "  error TEXT NOT NULL DEFAULT '');"
    "INSERT INTO runs_v4 SELECT id, pipeline, input, status, started_at, finished_at, read, sent, "
    "  failed, skipped, requests, retries, error FROM runs;"
    "DROP TABLE runs;"
    "ALTER TABLE runs_v4 RENAME TO runs;"
    "CREATE INDEX runs_pipeline_id ON runs(pipeline, id);"
    /* and a dead letter keeps the action its record carried (a diff step's
     * "lapsed"), so `sluice retry` sends it as what it was */
    "ALTER TABLE dead_letters ADD COLUMN action TEXT;",
};
#define SQ_SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

#define RUN_COLS                                                                                   \
    "id, pipeline, input, status, started_at, finished_at, read, sent, failed, skipped, "          \
    "requests, retries, error"

#define JOB_COLS                                                                                   \
    "j.id, j.pipeline, j.kind, j.idem_key, j.order_key, j.payload, j.status, j.attempts, "         \
    "j.created_at, j.started_at, j.finished_at, j.not_before, j.expires_at, j.rows, j.error"

/* Runnable: queued, or retry whose time has come. The IN term is written
 * as in the partial indexes' WHERE, so the planner can use them. */
#define JOB_RUNNABLE                                                                               \
    "j.status IN ('queued', 'retry') AND (j.status = 'queued' OR j.not_before <= ?2)"
/* ...and first in line for its order key: no older unfinished job and no
 * running job (a newer one may run when an older failed job was re-queued)
 * of the same pipeline and key. */
#define JOB_FIRST_IN_LINE                                                                          \
    "(coalesce(j.order_key, '') = '' OR ("                                                         \
    "NOT EXISTS (SELECT 1 FROM jobs AS o WHERE o.pipeline = j.pipeline AND "                       \
    "o.order_key = j.order_key AND o.status IN ('queued', 'retry') AND o.id < j.id) AND "          \
    "NOT EXISTS (SELECT 1 FROM jobs AS o WHERE o.pipeline = j.pipeline AND "                       \
    "o.order_key = j.order_key AND o.status = 'running')))"

enum {
    ST_BEGIN,
    ST_READ_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SP_BEGIN,
    ST_SP_RELEASE,
    ST_SP_ROLLBACK,
    ST_RUN_INTERRUPT,
    ST_RUN_INSERT,
    ST_RUN_UPDATE,
    ST_RUN_END,
    ST_RUN_LAST,
    ST_RUNS,
    ST_RUNS_ALL,
    ST_KV_GET,
    ST_KV_SET,
    ST_KV_DEL,
    ST_KV_EACH,
    ST_DL_ADD,
    ST_DL_EACH,
    ST_DL_DELETE,
    ST_DL_BUMP,
    ST_DL_COUNT,
    ST_DL_COUNT_ALL,
    ST_JOB_SP_BEGIN,
    ST_JOB_SP_RELEASE,
    ST_JOB_SP_ROLLBACK,
    ST_JOB_ADD,
    ST_JOB_FIND_IDEM,
    ST_JOB_PICK,
    ST_JOB_PICK_ALL,
    ST_JOB_START,
    ST_JOB_FINISH,
    ST_JOB_STATUS,
    ST_JOB_REQUEUE_RUNNING,
    ST_JOB_REQUEUE_FAILED,
    ST_JOB_REQUEUE_FAILED_ALL,
    ST_JOBS,
    ST_JOBS_ALL,
    ST_JOB_COUNTS,
    ST_JOB_COUNTS_ALL,
    ST_LEASE_TAKE,
    ST_LEASE_RENEW,
    ST_LEASE_RELEASE,
    ST_LEASE_GET,
    ST_N
};

static const char *const sql_text[ST_N] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    /* a read transaction: one snapshot and one lock for many reads */
    [ST_READ_BEGIN] = "BEGIN DEFERRED",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    /* A savepoint works both inside a caller's transaction and outside one. */
    [ST_SP_BEGIN] = "SAVEPOINT sl_run_begin",
    [ST_SP_RELEASE] = "RELEASE sl_run_begin",
    [ST_SP_ROLLBACK] = "ROLLBACK TO sl_run_begin",
    [ST_RUN_INTERRUPT] = "UPDATE runs SET status = 'interrupted', finished_at = ?2 "
                         "WHERE pipeline = ?1 AND status = 'running'",
    [ST_RUN_INSERT] = "INSERT INTO runs(pipeline, input, status, started_at) "
                      "VALUES (?1, ?2, 'running', ?3)",
    [ST_RUN_UPDATE] = "UPDATE runs SET read = ?2, sent = ?3, failed = ?4, skipped = ?5, "
                      "requests = ?6, retries = ?7 WHERE id = ?1",
    [ST_RUN_END] = "UPDATE runs SET status = ?2, finished_at = ?3, read = coalesce(?4, read), "
                   "sent = coalesce(?5, sent), failed = coalesce(?6, failed), "
                   "skipped = coalesce(?7, skipped), requests = coalesce(?8, requests), "
                   "retries = coalesce(?9, retries), error = ?10 WHERE id = ?1",
    [ST_RUN_LAST] = "SELECT " RUN_COLS " FROM runs WHERE pipeline = ?1 ORDER BY id DESC LIMIT 1",
    [ST_RUNS] = "SELECT " RUN_COLS " FROM runs WHERE pipeline = ?1 ORDER BY id DESC LIMIT ?2",
    [ST_RUNS_ALL] = "SELECT " RUN_COLS " FROM runs ORDER BY id DESC LIMIT ?1",
    [ST_KV_GET] = "SELECT value FROM kv WHERE pipeline = ?1 AND key = ?2",
    [ST_KV_SET] = "INSERT INTO kv(pipeline, key, value, updated_at) VALUES (?1, ?2, ?3, ?4) "
                  "ON CONFLICT(pipeline, key) DO UPDATE SET value = excluded.value, "
                  "updated_at = excluded.updated_at",
    [ST_KV_DEL] = "DELETE FROM kv WHERE pipeline = ?1 AND key = ?2",
    [ST_KV_EACH] = "SELECT key, value, updated_at FROM kv WHERE pipeline = ?1 ORDER BY key",
    [ST_DL_ADD] = "INSERT INTO dead_letters(pipeline, run_id, stage, line, record, error, "
                  "response, attempts, created_at, updated_at, action) "
                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    [ST_DL_EACH] = "SELECT id, run_id, pipeline, stage, line, record, error, response, attempts, "
                   "created_at, action FROM dead_letters WHERE pipeline = ?1 ORDER BY id LIMIT ?2",
    [ST_DL_DELETE] = "DELETE FROM dead_letters WHERE id = ?1",
    [ST_DL_BUMP] = "UPDATE dead_letters SET attempts = attempts + 1, error = ?2, "
                   "response = coalesce(?3, response), updated_at = ?4 WHERE id = ?1",
    [ST_DL_COUNT] = "SELECT count(*) FROM dead_letters WHERE pipeline = ?1",
    [ST_DL_COUNT_ALL] = "SELECT count(*) FROM dead_letters",
    [ST_JOB_SP_BEGIN] = "SAVEPOINT sl_job_claim",
    [ST_JOB_SP_RELEASE] = "RELEASE sl_job_claim",
    [ST_JOB_SP_ROLLBACK] = "ROLLBACK TO sl_job_claim",
    [ST_JOB_ADD] = "INSERT INTO jobs(pipeline, kind, idem_key, order_key, payload, status, "
                   "attempts, not_before, created_at, expires_at) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, 'queued', 0, 0, ?6, ?7) "
                   "ON CONFLICT(pipeline, idem_key) DO NOTHING",
    [ST_JOB_FIND_IDEM] = "SELECT id FROM jobs WHERE pipeline = ?1 AND idem_key = ?2",
    [ST_JOB_PICK] = "SELECT " JOB_COLS " FROM jobs AS j WHERE j.pipeline = ?1 AND " JOB_RUNNABLE
                    " AND " JOB_FIRST_IN_LINE " ORDER BY j.id LIMIT 1",
    [ST_JOB_PICK_ALL] = "SELECT " JOB_COLS " FROM jobs AS j WHERE " JOB_RUNNABLE
                        " AND " JOB_FIRST_IN_LINE " ORDER BY j.id LIMIT 1",
    [ST_JOB_START] = "UPDATE jobs SET status = 'running', attempts = attempts + 1, "
                     "started_at = ?2, finished_at = NULL WHERE id = ?1",
    /* queued = handed back unstarted: the attempt does not count, and the
     * previous attempt's error stays unless a new one is given. */
    [ST_JOB_FINISH] = "UPDATE jobs SET status = ?2, not_before = ?3, rows = coalesce(?4, rows), "
                      "error = CASE WHEN ?2 = 'queued' THEN coalesce(?5, error) ELSE ?5 END, "
                      "finished_at = CASE WHEN ?2 IN ('done', 'failed') THEN ?6 END, "
                      "attempts = CASE WHEN ?2 = 'queued' THEN max(attempts - 1, 0) "
                      "ELSE attempts END "
                      "WHERE id = ?1 AND status = 'running'",
    [ST_JOB_STATUS] = "SELECT status FROM jobs WHERE id = ?1",
    [ST_JOB_REQUEUE_RUNNING] = "UPDATE jobs SET status = 'queued', "
                               "error = 'interrupted (process stopped while running)' "
                               "WHERE status = 'running'",
    [ST_JOB_REQUEUE_FAILED] = "UPDATE jobs SET status = 'queued', attempts = 0, error = NULL, "
                              "not_before = 0, finished_at = NULL "
                              "WHERE pipeline = ?1 AND status = 'failed'",
    [ST_JOB_REQUEUE_FAILED_ALL] = "UPDATE jobs SET status = 'queued', attempts = 0, error = NULL, "
                                  "not_before = 0, finished_at = NULL WHERE status = 'failed'",
    [ST_JOBS] = "SELECT " JOB_COLS " FROM jobs AS j WHERE j.pipeline = ?1 "
                "ORDER BY j.id DESC LIMIT ?2",
    [ST_JOBS_ALL] = "SELECT " JOB_COLS " FROM jobs AS j ORDER BY j.id DESC LIMIT ?1",
    [ST_JOB_COUNTS] = "SELECT status, count(*) FROM jobs WHERE pipeline = ?1 GROUP BY status",
    [ST_JOB_COUNTS_ALL] = "SELECT status, count(*) FROM jobs GROUP BY status",
    /* One statement, so taking is atomic against every other connection:
     * the row is written only when the lease is free, expired, already
     * ours, or held by the owner the caller proved dead (?8). */
    [ST_LEASE_TAKE] = "INSERT INTO leases(name, owner, host, pid, acquired_at, heartbeat_at, "
                      "expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6) "
                      "ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, "
                      "host = excluded.host, pid = excluded.pid, "
                      "acquired_at = CASE WHEN leases.owner = excluded.owner "
                      "THEN leases.acquired_at ELSE excluded.acquired_at END, "
                      "heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at "
                      "WHERE leases.owner = excluded.owner OR leases.expires_at < ?7 "
                      "OR leases.owner = ?8",
    [ST_LEASE_RENEW] = "UPDATE leases SET heartbeat_at = ?3, expires_at = ?4 "
                       "WHERE name = ?1 AND owner = ?2",
    [ST_LEASE_RELEASE] = "DELETE FROM leases WHERE name = ?1 AND owner = ?2",
    [ST_LEASE_GET] = "SELECT name, owner, host, pid, acquired_at, heartbeat_at, expires_at "
                     "FROM leases WHERE name = ?1",
};

typedef struct sq {
    sqlite3 *db;
    char where[SL_STATE_WHERE_MAX];
    sqlite3_stmt *st[ST_N];
} sq;

static int sl_code(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_NOMEM:
        return SL_ERR_NOMEM;
    case SQLITE_TOOBIG:
        return SL_ERR_LIMIT;
    default:
        return SL_ERR_IO;
    }
}

/* "state WHERE: <what>: <sqlite's message>" */
static int sq_fail(sq *q, sl_error *err, int rc, const char *fmt, ...) SL_PRINTF(4, 5);
static int sq_fail(sq *q, sl_error *err, int rc, const char *fmt, ...)
{
    char what[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    const char *why = q->db ? sqlite3_errmsg(q->db) : sqlite3_errstr(rc);
    return sl_error_set(err, sl_code(rc), "state %s: %s: %s", q->where, what, why);
}

/* A cached statement, or a fresh one when the cached one is in use by an
 * iteration further up the stack (a callback calling back into the store).
 * Pair with sq_put. NULL with *rc set when preparing fails. */
static sqlite3_stmt *sq_get(sq *q, int i, int *rc)
{
    *rc = SQLITE_OK;
    if (!sqlite3_stmt_busy(q->st[i])) {
        return q->st[i];
    }
    sqlite3_stmt *st = NULL;
    *rc = sqlite3_prepare_v2(q->db, sql_text[i], -1, &st, NULL);
    return *rc == SQLITE_OK ? st : NULL;
}

static void sq_put(sq *q, int i, sqlite3_stmt *st)
{
    if (!st) {
        return;
    }
    if (st == q->st[i]) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    } else {
        sqlite3_finalize(st);
    }
}

/* Run a statement that returns no rows. */
static int sq_exec(sq *q, int i)
{
    int rc;
    sqlite3_stmt *st = sq_get(q, i, &rc);
    if (!st) {
        return rc;
    }
    rc = sqlite3_step(st);
    sq_put(q, i, st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int bind_text(sqlite3_stmt *st, int col, const char *s)
{
    return sqlite3_bind_text(st, col, s ? s : "", -1, SQLITE_STATIC);
}

static const char *col_text(sqlite3_stmt *st, int col)
{
    const char *s = (const char *)sqlite3_column_text(st, col);
    return s ? s : "";
}

/* ---- open: files, pragmas, identity, migrations -------------------------- */

/* mkdir -p of the directory part of path, new directories 0700 (the
 * database holds dead-lettered records: personal data). */
static int make_parent_dirs(sq *q, const char *path, sl_error *err)
{
    int rc = 0;
    char *dir = strdup(path);
    if (!dir) {
        return sl_error_set(err, SL_ERR_NOMEM, "state %s: out of memory", q->where);
    }
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) {
        goto out; /* current directory or "/" */
    }
    *slash = '\0';
    for (char *p = dir + 1;; p++) {
        if (*p != '/' && *p != '\0') {
            continue;
        }
        char c = *p;
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            rc = sl_error_set(err, SL_ERR_IO, "state %s: cannot create directory '%s': %s",
                              q->where, dir, strerror(errno));
            goto out;
        }
        *p = c;
        if (c == '\0') {
            break;
        }
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        rc = sl_error_set(err, SL_ERR_IO, "state %s: '%s' exists and is not a directory", q->where,
                          dir);
    }
out:
    free(dir);
    return rc;
}

/* URL options: "sync=normal|full" and "busy_timeout=MS" (how long to wait
 * for another process's write lock; default 10 s), joined with '&'. */
static int parse_options(sq *q, const char *options, int *sync_full, int *busy_ms, sl_error *err)
{
    *sync_full = 0;
    *busy_ms = 10000;
    const char *p = options ? options : "";
    while (*p) {
        size_t n = strcspn(p, "&");
        char opt[80];
        snprintf(opt, sizeof(opt), "%.*s", (int)(n < sizeof(opt) - 1 ? n : sizeof(opt) - 1), p);
        char *end = NULL;
        long ms = -1;
        if (strncmp(opt, "busy_timeout=", 13) == 0 && opt[13] >= '0' && opt[13] <= '9') {
            errno = 0;
            ms = strtol(opt + 13, &end, 10);
            if (errno != 0 || *end != '\0' || ms > 3600000) {
                ms = -1;
            }
        }
        if (strcmp(opt, "sync=full") == 0) {
            *sync_full = 1;
        } else if (strcmp(opt, "sync=normal") == 0) {
            *sync_full = 0;
        } else if (ms >= 0) {
            *busy_ms = (int)ms;
        } else if (n > 0) {
            return sl_error_set(err, SL_ERR_CONFIG,
                                "state %s: unknown or invalid option '%s' in the state URL "
                                "(expected sync=normal, sync=full or busy_timeout=MS)",
                                q->where, opt);
        }
        p += n;
        if (*p == '&') {
            p++;
        }
    }
    return 0;
}

/* One integer from a pragma or query with no parameters. */
static int query_int(sq *q, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(q->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* Is this file ours? Sets *version to its schema version (0 = new, empty). */
static int check_identity(sq *q, int *version, sl_error *err)
{
    int64_t app = 0, ver = 0, tables = 0;
    int rc = query_int(q, "PRAGMA application_id", &app);
    if (rc == SQLITE_OK) {
        rc = query_int(q, "PRAGMA user_version", &ver);
    }
    if (rc == SQLITE_OK) {
        rc = query_int(q, "SELECT count(*) FROM sqlite_master", &tables);
    }
    if ((rc & 0xff) == SQLITE_NOTADB) {
        return sl_error_set(err, SL_ERR_IO, "state: %s is not a sluice state database (%s)",
                            q->where, sqlite3_errmsg(q->db));
    }
    if (rc != SQLITE_OK) {
        return sq_fail(q, err, rc, "cannot read the database header");
    }
    if (app != 0 && app != SQ_APP_ID) {
        return sl_error_set(err, SL_ERR_IO,
                            "state: %s is not a sluice state database (application id 0x%08llx "
                            "belongs to another program)",
                            q->where, (unsigned long long)app);
    }
    if (app == 0 && (ver != 0 || tables != 0)) {
        return sl_error_set(err, SL_ERR_IO,
                            "state: %s is not a sluice state database (an SQLite database of "
                            "another program: it has %lld tables and no sluice marker)",
                            q->where, (long long)tables);
    }
    if (ver > SQ_SCHEMA_VERSION) {
        return sl_error_set(err, SL_ERR_IO,
                            "state %s: schema version %lld was written by a newer sluice (this "
                            "build knows versions up to %d); upgrade sluice",
                            q->where, (long long)ver, SQ_SCHEMA_VERSION);
    }
    *version = (int)ver;
    return 0;
}

static int migrate(sq *q, sl_error *err)
{
    int version = 0;
    char sql[96];
    /* IMMEDIATE: two processes opening a new file at once must not both
     * create the tables; the second waits and then sees version N. */
    int rc = sqlite3_exec(q->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        return sq_fail(q, err, rc, "cannot start the schema migration");
    }
    int ret = check_identity(q, &version, err);
    if (ret < 0) {
        goto fail;
    }
    for (int v = version; v < SQ_SCHEMA_VERSION; v++) {
        rc = sqlite3_exec(q->db, migrations[v], NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            ret = sq_fail(q, err, rc, "cannot migrate the schema from version %d to %d", v, v + 1);
            goto fail;
        }
    }
    if (version < SQ_SCHEMA_VERSION) {
        snprintf(sql, sizeof(sql), "PRAGMA application_id = %d; PRAGMA user_version = %d",
                 SQ_APP_ID, SQ_SCHEMA_VERSION);
        rc = sqlite3_exec(q->db, sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            ret = sq_fail(q, err, rc, "cannot record schema version %d", SQ_SCHEMA_VERSION);
            goto fail;
        }
    }
    rc = sqlite3_exec(q->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        ret = sq_fail(q, err, rc, "cannot commit the schema migration");
        goto fail;
    }
    return 0;

fail:
    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    return ret;
}

/* Open the directory holding path and take an exclusive flock on it.
 * Returns the descriptor (close it to release) or <0 with err set. */
static int lock_parent_dir(sq *q, const char *path, sl_error *err)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(dir, sizeof(dir), ".");
    } else if (slash == path) {
        snprintf(dir, sizeof(dir), "/");
    } else {
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return sl_error_set(err, SL_ERR_IO, "state %s: cannot open its directory %s: %s", q->where,
                            dir, strerror(errno));
    }
    while (flock(fd, LOCK_EX) < 0) {
        if (errno != EINTR) {
            int e = errno;
            close(fd);
            return sl_error_set(err, SL_ERR_IO, "state %s: cannot lock its directory %s: %s",
                                q->where, dir, strerror(e));
        }
    }
    return fd;
}

static void sq_close(void *impl)
{
    sq *q = impl;
    if (!q) {
        return;
    }
    for (int i = 0; i < ST_N; i++) {
        sqlite3_finalize(q->st[i]);
    }
    if (q->db && sqlite3_close(q->db) != SQLITE_OK) {
        sl_warn("state", "state %s: cannot close the database: %s", q->where,
                sqlite3_errmsg(q->db));
    }
    free(q);
}

static void *sq_open(const char *path, const char *options, char *where, size_t where_cap,
                     sl_error *err)
{
    int sync_full = 0;
    int busy_ms = 0;
    int rc;
    int dir_fd = -1;
    int memory = strcmp(path, ":memory:") == 0;
    sq *q = calloc(1, sizeof(*q));
    if (!q) {
        sl_error_set(err, SL_ERR_NOMEM, "state %s: out of memory", path);
        goto fail;
    }
    snprintf(q->where, sizeof(q->where), "%s", path);
    snprintf(where, where_cap, "%s", path);
    if (!*path) {
        sl_error_set(err, SL_ERR_CONFIG, "state: empty database path (expected \"sqlite:PATH\")");
        goto fail;
    }
    if (parse_options(q, options, &sync_full, &busy_ms, err) < 0) {
        goto fail;
    }
    if (!memory) {
        if (make_parent_dirs(q, path, err) < 0) {
            goto fail;
        }
        /* Processes opening one new file at once would race to switch it to
         * WAL and create the schema (SQLite answers the loser "database is
         * locked" or even an I/O error, not a busy wait). Setting up is
         * short: do it one process at a time, under an advisory lock on the
         * directory (flock on a directory never meets SQLite's own POSIX
         * locks on the database file). */
        if ((dir_fd = lock_parent_dir(q, path, err)) < 0) {
            goto fail;
        }
        /* Create the file ourselves so it is 0600; SQLite gives its -wal and
         * -shm files the database file's mode. */
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            sl_error_set(err, SL_ERR_IO, "state %s: cannot open the database file: %s", path,
                         strerror(errno));
            goto fail;
        }
        close(fd);
    }

    rc = sqlite3_open_v2(path, &q->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc != SQLITE_OK) {
        sq_fail(q, err, rc, "cannot open the database");
        goto fail;
    }
    sqlite3_extended_result_codes(q->db, 1);
    sqlite3_busy_timeout(q->db, busy_ms);

    /* Refuse a foreign file before changing anything in it (WAL mode is
     * persistent). migrate() checks again under the write lock. */
    int version = 0;
    if (check_identity(q, &version, err) < 0) {
        goto fail;
    }
    if (!memory) {
        sqlite3_stmt *st = NULL;
        rc = sqlite3_prepare_v2(q->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(st);
        }
        if (rc == SQLITE_ROW && strcmp(col_text(st, 0), "wal") != 0) {
            /* e.g. a file system without shared memory: still correct, slower */
            sl_warn("state", "state %s: WAL journal not available, using '%s'", q->where,
                    col_text(st, 0));
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            sq_fail(q, err, rc, "cannot switch to the WAL journal");
            goto fail;
        }
    }
    rc = sqlite3_exec(q->db,
                      sync_full ? "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON"
                                : "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON",
                      NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        sq_fail(q, err, rc, "cannot configure the connection");
        goto fail;
    }
    if (migrate(q, err) < 0) {
        goto fail;
    }
    for (int i = 0; i < ST_N; i++) {
        rc = sqlite3_prepare_v3(q->db, sql_text[i], -1, SQLITE_PREPARE_PERSISTENT, &q->st[i], NULL);
        if (rc != SQLITE_OK) {
            sq_fail(q, err, rc, "cannot prepare statement %d", i);
            goto fail;
        }
    }
    if (dir_fd >= 0) {
        close(dir_fd); /* releases the flock */
    }
    return q;

fail:
    if (dir_fd >= 0) {
        close(dir_fd);
    }
    sq_close(q);
    return NULL;
}

/* ---- transactions ---------------------------------------------------------- */

static int sq_begin(void *impl, sl_error *err)
{
    sq *q = impl;
    int rc = sq_exec(q, ST_BEGIN);
    return rc == SQLITE_OK ? 0 : sq_fail(q, err, rc, "cannot begin a transaction");
}

static int sq_commit(void *impl, sl_error *err)
{
    sq *q = impl;
    if (sqlite3_get_autocommit(q->db)) {
        /* SQLite already rolled back after an I/O error, a full disk, ... */
        return sl_error_set(err, SL_ERR_IO,
                            "state %s: cannot commit: the transaction was aborted by an earlier "
                            "error",
                            q->where);
    }
    int rc = sq_exec(q, ST_COMMIT);
    return rc == SQLITE_OK ? 0 : sq_fail(q, err, rc, "cannot commit");
}

static int sq_rollback(void *impl, sl_error *err)
{
    sq *q = impl;
    if (sqlite3_get_autocommit(q->db)) {
        return 0; /* nothing open any more */
    }
    int rc = sq_exec(q, ST_ROLLBACK);
    return rc == SQLITE_OK ? 0 : sq_fail(q, err, rc, "cannot roll back");
}

/* ---- runs -------------------------------------------------------------------- */

static int sq_run_begin(void *impl, const char *pipeline, const char *input, double now,
                        int64_t *run_id, sl_error *err)
{
    sq *q = impl;
    sqlite3_stmt *st = NULL;
    int i = ST_RUN_INTERRUPT;
    int rc = sq_exec(q, ST_SP_BEGIN);
    if (rc != SQLITE_OK) {
        return sq_fail(q, err, rc, "cannot start a run of pipeline '%s'", pipeline);
    }
    st = sq_get(q, i, &rc);
    if (!st) {
        goto fail;
    }
    /* A run still "running" belongs to a process that died without ending it
     * (the engine allows one live run per pipeline): keep its counts. */
    sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, now);
    rc = sqlite3_step(st);
    sq_put(q, i, st);
    if (rc != SQLITE_DONE) {
        goto fail;
    }
    i = ST_RUN_INSERT;
    st = sq_get(q, i, &rc);
    if (!st) {
        goto fail;
    }
    sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
    bind_text(st, 2, input);
    sqlite3_bind_double(st, 3, now);
    rc = sqlite3_step(st);
    sq_put(q, i, st);
    if (rc != SQLITE_DONE) {
        goto fail;
    }
    *run_id = sqlite3_last_insert_rowid(q->db);
    rc = sq_exec(q, ST_SP_RELEASE);
    if (rc != SQLITE_OK) {
        goto fail;
    }
    return 0;

fail:;
    int ret = sq_fail(q, err, rc, "cannot start a run of pipeline '%s'", pipeline);
    sq_exec(q, ST_SP_ROLLBACK);
    sq_exec(q, ST_SP_RELEASE);
    return ret;
}

static void bind_counts(sqlite3_stmt *st, int first, const sl_counts *c)
{
    const uint64_t v[6] = {c->read, c->sent, c->failed, c->skipped, c->requests, c->retries};
    for (int k = 0; k < 6; k++) {
        sqlite3_bind_int64(st, first + k, (sqlite3_int64)v[k]);
    }
}

static int sq_run_update(void *impl, int64_t run_id, const sl_counts *c, sl_error *err)
{
    sq *q = impl;
    int rc;
    sqlite3_stmt *st = sq_get(q, ST_RUN_UPDATE, &rc);
    if (!st) {
        return sq_fail(q, err, rc, "cannot update run %lld", (long long)run_id);
    }
    sqlite3_bind_int64(st, 1, run_id);
    bind_counts(st, 2, c);
    rc = sqlite3_step(st);
    sq_put(q, ST_RUN_UPDATE, st);
    if (rc != SQLITE_DONE) {
        return sq_fail(q, err, rc, "cannot update run %lld", (long long)run_id);
    }
    if (sqlite3_changes(q->db) == 0) {
        return sl_error_set(err, SL_ERR_INPUT, "state %s: cannot update run %lld: no such run",
                            q->where, (long long)run_id);
    }
    return 0;
}

static int sq_run_end(void *impl, int64_t run_id, const char *status, const sl_counts *c,
                      const char *error, double now, sl_error *err)
{
    sq *q = impl;
    int rc;
    sqlite3_stmt *st = sq_get(q, ST_RUN_END, &rc);
    if (!st) {
        return sq_fail(q, err, rc, "cannot end run %lld", (long long)run_id);
    }
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 3, now);
    if (c) {
        bind_counts(st, 4, c); /* else NULL: coalesce keeps the stored counts */
    }
    bind_text(st, 10, error);
    rc = sqlite3_step(st);
    sq_put(q, ST_RUN_END, st);
    if (rc != SQLITE_DONE) {
        return sq_fail(q, err, rc, "cannot end run %lld", (long long)run_id);
    }
    if (sqlite3_changes(q->db) == 0) {
        return sl_error_set(err, SL_ERR_INPUT, "state %s: cannot end run %lld: no such run",
                            q->where, (long long)run_id);
    }
    return 0;
}

static void read_run(sqlite3_stmt *st, sl_run_info *r)
{
    memset(r, 0, sizeof(*r));
    r->id = sqlite3_column_int64(st, 0);
    snprintf(r->pipeline, sizeof(r->pipeline), "%s", col_text(st, 1));
    snprintf(r->input, sizeof(r->input), "%s", col_text(st, 2));
    snprintf(r->status, sizeof(r->status), "%s", col_text(st, 3));
    r->started_at = sqlite3_column_double(st, 4);
    r->finished_at = sqlite3_column_double(st, 5); /* NULL reads as 0 */
    r->counts.read = (uint64_t)sqlite3_column_int64(st, 6);
    r->counts.sent = (uint64_t)sqlite3_column_int64(st, 7);
    r->counts.failed = (uint64_t)sqlite3_column_int64(st, 8);
    r->counts.skipped = (uint64_t)sqlite3_column_int64(st, 9);
    r->counts.requests = (uint64_t)sqlite3_column_int64(st, 10);
    r->counts.retries = (uint64_t)sqlite3_column_int64(st, 11);
    snprintf(r->error, sizeof(r->error), "%s", col_text(st, 12));
}

static int sq_run_last(void *impl, const char *pipeline, sl_run_info *out, sl_error *err)
{
    sq *q = impl;
    int rc;
    sqlite3_stmt *st = sq_get(q, ST_RUN_LAST, &rc);
    if (!st) {
        return sq_fail(q, err, rc, "cannot read the last run of pipeline '%s'", pipeline);
    }
    sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    int ret = 0;
    if (rc == SQLITE_ROW) {
        read_run(st, out);
        ret = 1;
    } else if (rc != SQLITE_DONE) {
        ret = sq_fail(q, err, rc, "cannot read the last run of pipeline '%s'", pipeline);
    }
    sq_put(q, ST_RUN_LAST, st);
    return ret;
}

static int sq_runs(void *impl, const char *pipeline, int limit, sl_run_cb cb, void *ud,
                   sl_error *err)
{
    sq *q = impl;
    int i = pipeline ? ST_RUNS : ST_RUNS_ALL;
    int rc;
    int ret = 0;
    sqlite3_stmt *st = sq_get(q, i, &rc);
    if (!st) {
        return sq_fail(q, err, rc, "cannot list runs of pipeline '%s'", pipeline ? pipeline : "*");
    }
    if (pipeline) {
        sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
    }
    sqlite3_bind_int(st, pipeline ? 2 : 1, limit > 0 ? limit : -1);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        sl_run_info r;
        read_run(st, &r);
        int c = cb(ud, &r);
        if (c != 0) {
            ret = c < 0 ? c : 0;
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE) {
        ret = sq_fail(q, err, rc, "cannot list runs of pipeline '%s'", pipeline ? pipeline : "*");
    }
    sq_put(q, i, st);
    return ret;
}

/* ---- key/value ---------------------------------------------------------------- */

static int sq_kv_get(void *impl, const char *pipeline, const char *key, sl_buf *out, sl_error *err)
{
    sq *q = impl;
    char noun[256];
    int rc;
    int ret = 0;
    sqlite3_stmt *st = sq_get(q, ST_KV_GET, &rc);
    if (!st) {
        return sq_fail(q, err, rc, "cannot read %s for pipeline '%s'",
                       sl_state_key_noun(key, noun, sizeof(noun)), pipeline);
    }
    sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const void *v = sqlite3_column_text(st, 0);
        int n = sqlite3_column_bytes(st, 0);
        ret = sl_buf_append(out, v ? v : "", v ? (size_t)n : 0);
        if (ret < 0) {
            ret = sl_error_set(err, ret,
                               "state %s: cannot read %s for pipeline '%s': value of %d bytes "
                               "does not fit the buffer (max %zu)",
                               q->where, sl_state_key_noun(key, noun, sizeof(noun)), pipeline, n,
                               out->max ? out->max : SL_BUF_DEFAULT_MAX);
        } else {
            ret = 1;
        }
    } else if (rc != SQLITE_DONE) {
        ret = sq_fail(q, err, rc, "cannot read %s for pipeline '%s'",
                      sl_state_key_noun(key, noun, sizeof(noun)), pipeline);
    }
    sq_put(q, ST_KV_GET, st);
    return ret;
}

/* Many keys in one read transaction: outside one, every SELECT would take
 * and drop the database's locks on its own (a ledger asks for thousands). */
static int sq_kv_get_many(void *impl, const char *pipeline, const char *const *keys, size_t n,
                          sl_kv_found_cb found, void *ud, sl_error *err)
{
    sq *q = impl;
    char noun[256];
    int rc = SQLITE_OK;
    int own = sqlite3_get_autocommit(q->db);
    if (own && (rc = sq_exec(q, ST_READ_BEGIN)) != SQLITE_OK) {
        return sq_fail(q, err, rc, "cannot begin reading state for pipeline '%s'", pipeline);
    }
    int ret = 0;
    sqlite3_stmt *st = sq_get(q, ST_KV_GET, &rc);
    if (!st) {
        ret = sq_fail(q, err, rc, "cannot read state for pipeline '%s'", pipeline);
    }
    for (size_t i = 0; st && ret == 0 && i < n; i++) {
        sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, keys[i], -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            const char *v = (const char *)sqlite3_column_text(st, 0);
            int len = sqlite3_column_bytes(st, 0);
            if (found(ud, i, v ? v : "", v ? (size_t)len : 0)) {
                break;
            }
        } else if (rc != SQLITE_DONE) {
            ret = sq_fail(q, err, rc, "cannot read %s for pipeline '%s'",
                          sl_state_key_noun(keys[i], noun, sizeof(noun)), pipeline);
        }
        sqlite3_reset(st);
    }
    if (st) {
        sq_put(q, ST_KV_GET, st);
    }
    if (own && !sqlite3_get_autocommit(q->db)) {
        rc = sq_exec(q, ST_COMMIT);
        if (rc != SQLITE_OK && ret == 0) {
            ret = sq_fail(q, err, rc, "cannot end reading state for pipeline '%s'", pipeline);
        }
    }
    return ret;
}

static int sq_kv_set(void *impl, const char *pipeline, const char *key, const char *value,
                     size_t len, double now, sl_error *err)
{
    sq *q = impl;
    char noun[256];
    int rc;
    sqlite3_stmt *st = sq_get(q, ST_KV_SET, &rc);
    if (st) {
        sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
        /* explicit length: the value may contain NUL bytes */
        sqlite3_bind_text64(st, 3, value, (sqlite3_uint64)len, SQLITE_STATIC, SQLITE_UTF8);
        sqlite3_bind_double(st, 4, now);
        rc = sqlite3_step(st);
        sq_put(q, ST_KV_SET, st);
    }
    if (rc != SQLITE_DONE) {
        return sq_fail(q, err, rc, "cannot write %s for pipeline '%s'",
                       sl_state_key_noun(key, noun, sizeof(noun)), pipeline);
    }
    return 0;
}

static int sq_kv_del(void *impl, const char *pipeline, const char *key, sl_error *err)
{
    sq *q = impl;
    char noun[256];
    int rc;
    sqlite3_stmt *st = sq_get(q, ST_KV_DEL, &rc);
    if (st) {
        sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sq_put(q, ST_KV_DEL, st);
    }
    if (rc != SQLITE_DONE) {
        return sq_fail(q, err, rc, "cannot delete %s for pipeline '%s'",
                       sl_state_key_noun(key, noun, sizeof(noun)), pipeline);
    }
    return 0;
}

static int sq_kv_each(void *impl, const char *pipeline, sl_kv_cb cb, void *ud, sl_error *err)
{
    sq *q = impl;
    int rc;
    int ret = 0;
    sqlite3_stmt *st = sq_get(q, ST_KV_EACH, &rc);
    if (!st) {
        return sq_fail(q, err, rc, "cannot list state of pipeline '%s'", pipeline);
    }
    sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int c = cb(ud, col_text(st, 0), col_text(st, 1), sqlite3_column_double(st, 2));
        if (c != 0) {
            ret = c < 0 ? c : 0;
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE) {
        ret = sq_fail(q, err, rc, "cannot list state of pipeline '%s'", pipeline);
    }
    sq_put(q, ST_KV_EACH, st);
    return ret;
}

/* ---- dead letters --------------------------------------------------------------- */

static int sq_dl_add(void *impl, const sl_dead_letter *d, double now, sl_error *err)
{
    sq *q = impl;
    int rc;
    sqlite3_stmt *st = sq_get(q, ST_DL_ADD, &rc);
    if (st) {
        sqlite3_bind_text(st, 1, d->pipeline, -1, SQLITE_STATIC);
        if (d->run_id > 0) {
            sqlite3_bind_int64(st, 2, d->run_id); /* else NULL: not tied to a run */
        }
        sqlite3_bind_int(st, 3, d->stage);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)d->line);
        bind_text(st, 5, d->record);
        bind_text(st, 6, d->error);
        bind_text(st, 7, d->response);
        sqlite3_bind_int(st, 8, d->attempts);
        sqlite3_bind_double(st, 9, d->created_at);
        sqlite3_bind_double(st, 10, now);
        if (d->action && *d->action) {
            bind_text(st, 11, d->action); /* else NULL */
        }
        rc = sqlite3_step(st);
        sq_put(q, ST_DL_ADD, st);
    }
    if (rc != SQLITE_DONE) {
        return sq_fail(q, err, rc, "cannot store a dead letter for pipeline '%s' (line %llu)",
                       d->pipeline, (unsigned long long)d->line);
    }
    return 0;
}

static int sq_dl_each(void *impl, const char *pipeline, int limit, sl_dl_cb cb, void *ud,
                      sl_error *err)
{
    sq *q = impl;
    int rc;
    int ret = 0;
    sqlite3_stmt *st = sq_get(q, ST_DL_EACH, &rc);
    if (!st) {
        return sq_fail(q, err, rc, "cannot list dead letters of pipeline '%s'", pipeline);
    }
    sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, limit > 0 ? limit : -1);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        sl_dead_letter d = {
            .id = sqlite3_column_int64(st, 0),
            .run_id = sqlite3_column_int64(st, 1),
            .pipeline = col_text(st, 2),
            .stage = sqlite3_column_int(st, 3),
            .line = (uint64_t)sqlite3_column_int64(st, 4),
            .record = col_text(st, 5),
            .error = col_text(st, 6),
            .response = col_text(st, 7),
            .attempts = sqlite3_column_int(st, 8),
            .created_at = sqlite3_column_double(st, 9),
            .action = sqlite3_column_type(st, 10) == SQLITE_NULL ? NULL : col_text(st, 10),
        };
        int c = cb(ud, &d);
        if (c != 0) {
            ret = c < 0 ? c : 0;
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE) {
        ret = sq_fail(q, err, rc, "cannot list dead letters of pipeline '%s'", pipeline);
    }
    sq_put(q, ST_DL_EACH, st);
    return ret;
}

static int sq_dl_delete(void *impl, int64_t id, sl_error *err)
{
    sq *q = impl;
    int rc;
    sqlite3_stmt *st = sq_get(q, ST_DL_DELETE, &rc);
    if (st) {
        sqlite3_bind_int64(st, 1, id);
        rc = sqlite3_step(st);
        sq_put(q, ST_DL_DELETE, st);
    }
    if (rc != SQLITE_DONE) {
        return sq_fail(q, err, rc, "cannot delete dead letter %lld", (long long)id);
    }
    if (sqlite3_changes(q->db) == 0) {
        return sl_error_set(err, SL_ERR_INPUT,
                            "state %s: cannot delete dead letter %lld: no such dead letter",
                            q->where, (long long)id);
    }
    return 0;
}

static int sq_dl_bump(void *impl, int64_t id, const char *error, const char *response, double now,
                      sl_error *err)
{
    sq *q = impl;
    int rc;
    sqlite3_stmt *st = sq_get(q, ST_DL_BUMP, &rc);
    if (st) {
        sqlite3_bind_int64(st, 1, id);
        bind_text(st, 2, error);
        if (response) {
            sqlite3_bind_text(st, 3, response, -1, SQLITE_STATIC);
        }
        sqlite3_bind_double(st, 4, now);
        rc = sqlite3_step(st);
        sq_put(q, ST_DL_BUMP, st);
    }
    if (rc != SQLITE_DONE) {
        return sq_fail(q, err, rc, "cannot update dead letter %lld", (long long)id);
    }
    if (sqlite3_changes(q->db) == 0) {
        return sl_error_set(err, SL_ERR_INPUT,
                            "state %s: cannot update dead letter %lld: no such dead letter",
                            q->where, (long long)id);
    }
    return 0;
}

static int64_t sq_dl_count(void *impl, const char *pipeline, sl_error *err)
{
    sq *q = impl;
    int i = pipeline ? ST_DL_COUNT : ST_DL_COUNT_ALL;
    int rc;
    int64_t ret = 0;
    sqlite3_stmt *st = sq_get(q, i, &rc);
    if (st) {
        if (pipeline) {
            sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
        }
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            ret = sqlite3_column_int64(st, 0);
        }
        sq_put(q, i, st);
    }
    if (rc != SQLITE_ROW) {
        ret = sq_fail(q, err, rc, "cannot count dead letters of pipeline '%s'",
                      pipeline ? pipeline : "*");
    }
    return ret;
}

/* ---- jobs ------------------------------------------------------------------------ */

/* Copy src into dst[cap], cut at a UTF-8 boundary when it does not fit. */
static void copy_text(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80) {
            n--;
        }
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* One row of JOB_COLS into j. dup_vars: j->vars is a malloc'd copy (NULL
 * and SL_ERR_NOMEM when that fails); else it points into the statement's
 * row, valid until the next step. */
static int read_job(sqlite3_stmt *st, sl_job *j, int dup_vars)
{
    memset(j, 0, sizeof(*j));
    j->id = sqlite3_column_int64(st, 0);
    copy_text(j->pipeline, sizeof(j->pipeline), col_text(st, 1));
    copy_text(j->kind, sizeof(j->kind), col_text(st, 2));
    copy_text(j->idem_key, sizeof(j->idem_key), col_text(st, 3));
    copy_text(j->order_key, sizeof(j->order_key), col_text(st, 4));
    copy_text(j->status, sizeof(j->status), col_text(st, 6));
    j->attempts = sqlite3_column_int(st, 7);
    /* NULL times read as 0 */
    j->created_at = sqlite3_column_double(st, 8);
    j->started_at = sqlite3_column_double(st, 9);
    j->finished_at = sqlite3_column_double(st, 10);
    j->not_before = sqlite3_column_double(st, 11);
    j->expires_at = sqlite3_column_double(st, 12);
    j->rows = sqlite3_column_int64(st, 13);
    copy_text(j->error, sizeof(j->error), col_text(st, 14));
    const char *vars = sqlite3_column_type(st, 5) == SQLITE_NULL ? "{}" : col_text(st, 5);
    if (!dup_vars) {
        j->vars = (char *)vars;
        return 0;
    }
    j->vars = strdup(vars);
    return j->vars ? 0 : SL_ERR_NOMEM;
}

static int sq_job_add(void *impl, const char *pipeline, const char *kind, const char *idem_key,
                      const char *order_key, const char *vars, double expires_at, double now,
                      int64_t *id, sl_error *err)
{
    sq *q = impl;
    int rc;
    int ret = 1;
    sqlite3_stmt *st = sq_get(q, ST_JOB_ADD, &rc);
    if (st) {
        sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
        /* No key: NULL, which UNIQUE never matches, so every such job is stored. */
        if (*idem_key) {
            sqlite3_bind_text(st, 3, idem_key, -1, SQLITE_STATIC);
        }
        if (*order_key) {
            sqlite3_bind_text(st, 4, order_key, -1, SQLITE_STATIC);
        }
        sqlite3_bind_text(st, 5, vars, -1, SQLITE_STATIC);
        sqlite3_bind_double(st, 6, now);
        if (expires_at > 0) {
            sqlite3_bind_double(st, 7, expires_at);
        }
        rc = sqlite3_step(st);
        sq_put(q, ST_JOB_ADD, st);
    }
    if (rc != SQLITE_DONE) {
        return sq_fail(q, err, rc, "cannot store a job for pipeline '%s'", pipeline);
    }
    if (sqlite3_changes(q->db) > 0) {
        *id = sqlite3_last_insert_rowid(q->db);
        return 1;
    }
    /* The UNIQUE (pipeline, idem_key) conflict: a redelivery. Jobs are never
     * deleted by sluice, so the first one is still there. */
    st = sq_get(q, ST_JOB_FIND_IDEM, &rc);
    if (st) {
        sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, idem_key, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *id = sqlite3_column_int64(st, 0);
            ret = 0;
        }
        sq_put(q, ST_JOB_FIND_IDEM, st);
    }
    if (rc == SQLITE_DONE) {
        return sl_error_set(err, SL_ERR_IO,
                            "state %s: cannot store a job for pipeline '%s': idempotency key "
                            "'%.60s' conflicts with a job that cannot be found",
                            q->where, pipeline, idem_key);
    }
    if (rc != SQLITE_ROW) {
        return sq_fail(q, err, rc,
                       "cannot look up the job with idempotency key '%.60s' of "
                       "pipeline '%s'",
                       idem_key, pipeline);
    }
    return ret;
}

static int sq_job_claim(void *impl, const char *pipeline, double now, double wall, sl_job *out,
                        sl_error *err)
{
    sq *q = impl;
    int rc;
    int ret = 0;
    int i = pipeline ? ST_JOB_PICK : ST_JOB_PICK_ALL;
    const char *what = pipeline ? pipeline : "*";
    sqlite3_stmt *st = NULL;
    /* The choice and the status change must be one write transaction, taken
     * before reading (IMMEDIATE): otherwise two connections could read the
     * same queued job and both take it. Inside the caller's transaction
     * (always BEGIN IMMEDIATE) a savepoint suffices: the lock is held. */
    int own = sqlite3_get_autocommit(q->db);
    rc = sq_exec(q, own ? ST_BEGIN : ST_JOB_SP_BEGIN);
    if (rc != SQLITE_OK) {
        return sq_fail(q, err, rc, "cannot claim a job of pipeline '%s'", what);
    }
    st = sq_get(q, i, &rc);
    if (!st) {
        goto fail;
    }
    if (pipeline) {
        sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
    }
    sqlite3_bind_double(st, 2, now);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (read_job(st, out, 1) < 0) {
            sq_put(q, i, st);
            ret = sl_error_set(err, SL_ERR_NOMEM,
                               "state %s: cannot claim a job of pipeline '%s': out of memory",
                               q->where, what);
            goto undo;
        }
        ret = 1;
    } else if (rc != SQLITE_DONE) {
        sq_put(q, i, st);
        goto fail;
    }
    sq_put(q, i, st);
    if (ret == 1) {
        st = sq_get(q, ST_JOB_START, &rc);
        if (!st) {
            goto fail;
        }
        sqlite3_bind_int64(st, 1, out->id);
        sqlite3_bind_double(st, 2, wall);
        rc = sqlite3_step(st);
        sq_put(q, ST_JOB_START, st);
        if (rc != SQLITE_DONE) {
            goto fail;
        }
        snprintf(out->status, sizeof(out->status), "running");
        out->attempts++;
        out->started_at = wall;
        out->finished_at = 0;
    }
    rc = sq_exec(q, own ? ST_COMMIT : ST_JOB_SP_RELEASE);
    if (rc != SQLITE_OK) {
        goto fail;
    }
    return ret;

fail:
    ret = sq_fail(q, err, rc, "cannot claim a job of pipeline '%s'", what);
undo:
    if (own) {
        if (!sqlite3_get_autocommit(q->db)) {
            sq_exec(q, ST_ROLLBACK);
        }
    } else {
        sq_exec(q, ST_JOB_SP_ROLLBACK);
        sq_exec(q, ST_JOB_SP_RELEASE);
    }
    free(out->vars);
    memset(out, 0, sizeof(*out));
    return ret;
}

static int sq_job_finish(void *impl, int64_t id, const char *status, double not_before,
                         int64_t rows, const char *error, double now, sl_error *err)
{
    sq *q = impl;
    int rc;
    sqlite3_stmt *st = sq_get(q, ST_JOB_FINISH, &rc);
    if (st) {
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
        sqlite3_bind_double(st, 3, strcmp(status, "retry") == 0 ? not_before : 0);
        if (rows >= 0) {
            sqlite3_bind_int64(st, 4, rows); /* else NULL: coalesce keeps the count */
        }
        if (error && *error) {
            sqlite3_bind_text(st, 5, error, -1, SQLITE_STATIC);
        }
        sqlite3_bind_double(st, 6, now);
        rc = sqlite3_step(st);
        sq_put(q, ST_JOB_FINISH, st);
    }
    if (rc != SQLITE_DONE) {
        return sq_fail(q, err, rc, "cannot finish job %lld as %s", (long long)id, status);
    }
    if (sqlite3_changes(q->db) > 0) {
        return 0;
    }
    /* Say why: a job that is not running was not claimed by this caller (or
     * was re-queued under it), and finishing it would undo someone's work. */
    char cur[16] = "";
    st = sq_get(q, ST_JOB_STATUS, &rc);
    if (st) {
        sqlite3_bind_int64(st, 1, id);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            copy_text(cur, sizeof(cur), col_text(st, 0));
        }
        sq_put(q, ST_JOB_STATUS, st);
    }
    if (rc == SQLITE_ROW) {
        return sl_error_set(err, SL_ERR_INPUT,
                            "state %s: cannot finish job %lld as %s: it is %s, not running",
                            q->where, (long long)id, status, cur);
    }
    if (rc == SQLITE_DONE) {
        return sl_error_set(err, SL_ERR_INPUT,
                            "state %s: cannot finish job %lld as %s: no such job", q->where,
                            (long long)id, status);
    }
    return sq_fail(q, err, rc, "cannot finish job %lld as %s", (long long)id, status);
}

static int sq_job_requeue_running(void *impl, sl_error *err)
{
    sq *q = impl;
    int rc = sq_exec(q, ST_JOB_REQUEUE_RUNNING);
    if (rc != SQLITE_OK) {
        return sq_fail(q, err, rc, "cannot re-queue interrupted jobs");
    }
    return sqlite3_changes(q->db);
}

static int sq_job_requeue_failed(void *impl, const char *pipeline, sl_error *err)
{
    sq *q = impl;
    int i = pipeline ? ST_JOB_REQUEUE_FAILED : ST_JOB_REQUEUE_FAILED_ALL;
    int rc;
    sqlite3_stmt *st = sq_get(q, i, &rc);
    if (st) {
        if (pipeline) {
            sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
        }
        rc = sqlite3_step(st);
        sq_put(q, i, st);
    }
    if (rc != SQLITE_DONE) {
        return sq_fail(q, err, rc, "cannot re-queue failed jobs of pipeline '%s'",
                       pipeline ? pipeline : "*");
    }
    return sqlite3_changes(q->db);
}

static int sq_jobs(void *impl, const char *pipeline, int limit, sl_job_cb cb, void *ud,
                   sl_error *err)
{
    sq *q = impl;
    int i = pipeline ? ST_JOBS : ST_JOBS_ALL;
    int rc;
    int ret = 0;
    sqlite3_stmt *st = sq_get(q, i, &rc);
    if (!st) {
        return sq_fail(q, err, rc, "cannot list jobs of pipeline '%s'", pipeline ? pipeline : "*");
    }
    if (pipeline) {
        sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
    }
    sqlite3_bind_int(st, pipeline ? 2 : 1, limit > 0 ? limit : -1);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        sl_job j;
        read_job(st, &j, 0);
        int c = cb(ud, &j);
        if (c != 0) {
            ret = c < 0 ? c : 0;
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE) {
        ret = sq_fail(q, err, rc, "cannot list jobs of pipeline '%s'", pipeline ? pipeline : "*");
    }
    sq_put(q, i, st);
    return ret;
}

static int sq_job_counts(void *impl, const char *pipeline, int64_t counts[5], sl_error *err)
{
    static const char *const names[5] = {"queued", "running", "retry", "done", "failed"};
    sq *q = impl;
    int i = pipeline ? ST_JOB_COUNTS : ST_JOB_COUNTS_ALL;
    int rc;
    sqlite3_stmt *st = sq_get(q, i, &rc);
    if (st) {
        if (pipeline) {
            sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
        }
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char *status = col_text(st, 0);
            for (int k = 0; k < 5; k++) {
                if (strcmp(status, names[k]) == 0) {
                    counts[k] = sqlite3_column_int64(st, 1);
                }
            }
        }
        sq_put(q, i, st);
    }
    if (rc != SQLITE_DONE) {
        return sq_fail(q, err, rc, "cannot count jobs of pipeline '%s'", pipeline ? pipeline : "*");
    }
    return 0;
}

/* ---- leases ------------------------------------------------------------------ */

static int sq_lease_get(void *impl, const char *name, sl_lease *out, sl_error *err)
{
    sq *q = impl;
    int rc;
    sqlite3_stmt *st = sq_get(q, ST_LEASE_GET, &rc);
    int found = 0;
    if (st) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            found = 1;
            memset(out, 0, sizeof(*out));
            snprintf(out->name, sizeof(out->name), "%s", col_text(st, 0));
            snprintf(out->owner, sizeof(out->owner), "%s", col_text(st, 1));
            snprintf(out->host, sizeof(out->host), "%s", col_text(st, 2));
            out->pid = sqlite3_column_int64(st, 3);
            out->acquired_at = sqlite3_column_double(st, 4);
            out->heartbeat_at = sqlite3_column_double(st, 5);
            out->expires_at = sqlite3_column_double(st, 6);
            rc = SQLITE_DONE;
        }
        sq_put(q, ST_LEASE_GET, st);
    }
    if (rc != SQLITE_DONE) {
        return sq_fail(q, err, rc, "cannot read the lease '%s'", name);
    }
    return found;
}

static int sq_lease_each(void *impl, const char *prefix, sl_lease_cb cb, void *ud, sl_error *err)
{
    sq *q = impl;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(q->db,
                                "SELECT name, owner, host, pid, acquired_at, heartbeat_at, "
                                "expires_at FROM leases WHERE substr(name, 1, length(?1)) = ?1 "
                                "ORDER BY name",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            sl_lease l;
            memset(&l, 0, sizeof(l));
            snprintf(l.name, sizeof(l.name), "%s", col_text(st, 0));
            snprintf(l.owner, sizeof(l.owner), "%s", col_text(st, 1));
            snprintf(l.host, sizeof(l.host), "%s", col_text(st, 2));
            l.pid = sqlite3_column_int64(st, 3);
            l.acquired_at = sqlite3_column_double(st, 4);
            l.heartbeat_at = sqlite3_column_double(st, 5);
            l.expires_at = sqlite3_column_double(st, 6);
            if (cb(ud, &l)) {
                rc = SQLITE_DONE;
                break;
            }
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        return sq_fail(q, err, rc, "cannot list the leases '%s*'", prefix);
    }
    return 0;
}

static int sq_lease_take(void *impl, const sl_lease *want, double now, const char *steal,
                         sl_lease *holder, sl_error *err)
{
    sq *q = impl;
    int rc;
    sqlite3_stmt *st = sq_get(q, ST_LEASE_TAKE, &rc);
    if (st) {
        sqlite3_bind_text(st, 1, want->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, want->owner, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, want->host, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, want->pid);
        sqlite3_bind_double(st, 5, now);
        sqlite3_bind_double(st, 6, want->expires_at);
        sqlite3_bind_double(st, 7, now);
        sqlite3_bind_text(st, 8, steal ? steal : "", -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sq_put(q, ST_LEASE_TAKE, st);
    }
    if (rc != SQLITE_DONE) {
        return sq_fail(q, err, rc, "cannot take the lease '%s'", want->name);
    }
    if (sqlite3_changes(q->db) == 1) {
        return 1;
    }
    int found = sq_lease_get(impl, want->name, holder, err);
    if (found < 0) {
        return found;
    }
    if (found == 0) {
        /* released between the two statements: the caller may try again */
        memset(holder, 0, sizeof(*holder));
    }
    return 0;
}

static int sq_lease_renew(void *impl, const char *name, const char *owner, double now,
                          double expires_at, sl_error *err)
{
    sq *q = impl;
    int rc;
    sqlite3_stmt *st = sq_get(q, ST_LEASE_RENEW, &rc);
    if (st) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, owner, -1, SQLITE_STATIC);
        sqlite3_bind_double(st, 3, now);
        sqlite3_bind_double(st, 4, expires_at);
        rc = sqlite3_step(st);
        sq_put(q, ST_LEASE_RENEW, st);
    }
    if (rc != SQLITE_DONE) {
        return sq_fail(q, err, rc, "cannot renew the lease '%s'", name);
    }
    return sqlite3_changes(q->db) == 1;
}

static int sq_lease_release(void *impl, const char *name, const char *owner, sl_error *err)
{
    sq *q = impl;
    int rc;
    sqlite3_stmt *st = sq_get(q, ST_LEASE_RELEASE, &rc);
    if (st) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, owner, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sq_put(q, ST_LEASE_RELEASE, st);
    }
    if (rc != SQLITE_DONE) {
        return sq_fail(q, err, rc, "cannot release the lease '%s'", name);
    }
    return 0;
}

const struct sl_state_ops sl_state_sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .run_begin = sq_run_begin,
    .run_update = sq_run_update,
    .run_end = sq_run_end,
    .run_last = sq_run_last,
    .runs = sq_runs,
    .kv_get = sq_kv_get,
    .kv_get_many = sq_kv_get_many,
    .kv_set = sq_kv_set,
    .kv_del = sq_kv_del,
    .kv_each = sq_kv_each,
    .dl_add = sq_dl_add,
    .dl_each = sq_dl_each,
    .dl_delete = sq_dl_delete,
    .dl_bump = sq_dl_bump,
    .dl_count = sq_dl_count,
    .job_add = sq_job_add,
    .job_claim = sq_job_claim,
    .job_finish = sq_job_finish,
    .job_requeue_running = sq_job_requeue_running,
    .job_requeue_failed = sq_job_requeue_failed,
    .jobs = sq_jobs,
    .job_counts = sq_job_counts,
    .lease_take = sq_lease_take,
    .lease_renew = sq_lease_renew,
    .lease_release = sq_lease_release,
    .lease_get = sq_lease_get,
    .lease_each = sq_lease_each,
};
