/* State store: schema, runs, key/value, dead letters, transactions,
 * redaction, error messages, durability across killed processes, lease
 * races, and a throughput figure for the engine's checkpoint pattern.
 * SQLite by default; against Postgres with SLUICE_TEST_STATE_URL set (see
 * state_backend.h), where the SQLite-only cases are skipped with a reason. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "sluice/log.h"
#include "state/state.h"
#include "state_backend.h"

/* ---- helpers ------------------------------------------------------------ */

typedef struct fixture {
    char dir[256];
    char db[PATH_MAX]; /* DIR/sub/state.db */
    char url[PATH_MAX + 16];
    char pgdb[64]; /* the test's Postgres database, "" with SQLite */
} fixture;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/sluice-test-state-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof(f->db), "%s/sub/dir/state.db", f->dir);
    snprintf(f->url, sizeof(f->url), "sqlite:%s", f->db);
    if (tb_is_pg()) {
        tb_pg_create(f->pgdb, sizeof(f->pgdb), f->url, sizeof(f->url));
        memcpy(f->db, f->url, sizeof(f->db) - 1); /* tb_pg_create wrote far less */
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    tb_pg_drop(f->pgdb);
    free(f);
    sl_secrets_clear();
    return 0;
}

static sl_state *open_ok(const char *url)
{
    sl_error err = {0};
    sl_state *s = sl_state_open(url, &err);
    if (!s) {
        fail_msg("open %s: %s", url, err.msg);
    }
    return s;
}

/* A second, raw connection to look at what is really stored. */
#define raw_int tb_raw_int
#define raw_exec tb_raw_exec

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* ---- open ----------------------------------------------------------------- */

static void test_open_creates_dir_and_schema(void **state)
{
    fixture *f = *state;
    sl_state *s = open_ok(f->url);
    if (tb_is_pg()) {
        assert_int_equal(raw_int(f->db, "SELECT max(version) FROM schema_version"), 1);
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM pg_tables WHERE schemaname = "
                                        "'sluice' AND tablename IN ('runs','kv','dead_letters',"
                                        "'jobs','leases','schema_version')"),
                         6);
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM pg_indexes WHERE schemaname = "
                                        "'sluice' AND indexname = 'dead_letters_pipeline_id'"),
                         1);
        sl_state_close(s);
        /* opening again does not migrate again */
        sl_state_close(open_ok(f->url));
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM schema_version"), 1);
        print_message("SKIP on Postgres: directory and file modes, WAL (SQLite files)\n");
        return;
    }

    char sub[PATH_MAX + 8];
    struct stat sb;
    snprintf(sub, sizeof(sub), "%s/sub", f->dir);
    assert_int_equal(stat(sub, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0700);
    assert_int_equal(stat(f->db, &sb), 0);
    /* dead letters hold personal data: not world-readable */
    assert_int_equal(sb.st_mode & 0077, 0);

    assert_int_equal(raw_int(f->db, "PRAGMA user_version"), 4);
    assert_int_equal(raw_int(f->db, "PRAGMA application_id"), 0x534C5549);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                                    "name IN ('runs','kv','dead_letters','jobs','leases')"),
                     5);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                                    "name = 'dead_letters_pipeline_id'"),
                     1);
    /* WAL mode is persistent in the file */
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);

    sl_state_close(s);
    sl_state_close(NULL); /* no-op */

    /* a plain path works too, and opening twice does not migrate twice */
    s = open_ok(f->db);
    sl_state_close(s);
    assert_int_equal(raw_int(f->db, "PRAGMA user_version"), 4);
}

static void test_reopen_keeps_data(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *s = open_ok(f->url);
    int64_t run = 0;
    assert_int_equal(sl_state_run_begin(s, "p", "users.csv", &run, &err), 0);
    assert_int_equal(sl_state_kv_set(s, "p", "checkpoint", "offset=42", 9, &err), 0);
    sl_dead_letter d = {.pipeline = "p",
                        .run_id = run,
                        .record = "{\"a\":1}",
                        .error = "bad",
                        .response = "",
                        .stage = 0,
                        .line = 7};
    assert_int_equal(sl_state_dl_add(s, &d, &err), 0);
    sl_state_close(s);

    s = open_ok(f->url);
    sl_buf b = {0};
    assert_int_equal(sl_state_kv_get(s, "p", "checkpoint", &b, &err), 1);
    assert_string_equal(sl_buf_cstr(&b), "offset=42");
    assert_int_equal(sl_state_dl_count(s, "p", &err), 1);
    sl_run_info r;
    assert_int_equal(sl_state_run_last(s, "p", &r, &err), 1);
    assert_int_equal(r.id, run);
    assert_string_equal(r.input, "users.csv");
    sl_buf_free(&b);
    sl_state_close(s);
}

static void test_not_a_database(void **state)
{
    TB_SKIP_ON_PG("a non-database file in .sluice/ is an SQLite case (Postgres: see "
                  "test_foreign_and_newer_databases)");
    fixture *f = *state;
    char old[PATH_MAX];
    assert_non_null(getcwd(old, sizeof(old)));
    assert_int_equal(chdir(f->dir), 0);
    assert_int_equal(mkdir(".sluice", 0700), 0);
    char junk[8192];
    memset(junk, 'x', sizeof(junk) - 1);
    junk[sizeof(junk) - 1] = '\0';
    memcpy(junk, "external_id,name\n", 17);
    write_file(".sluice/state.db", junk);

    sl_error err = {0};
    sl_state *s = sl_state_open(".sluice/state.db", &err);
    assert_null(s);
    assert_string_equal(err.msg, "state: .sluice/state.db is not a sluice state database "
                                 "(file is not a database)");
    /* the file was not touched */
    struct stat sb;
    assert_int_equal(stat(".sluice/state.db", &sb), 0);
    assert_int_equal(sb.st_size, (off_t)sizeof(junk) - 1);
    assert_int_equal(chdir(old), 0);
}

static void test_foreign_and_newer_databases(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    char path[PATH_MAX + 16];

    if (tb_is_pg()) {
        /* someone else's schema called "sluice" */
        raw_exec(f->db, "CREATE SCHEMA sluice; CREATE TABLE sluice.customers(id integer)");
        assert_null(sl_state_open(f->url, &err));
        assert_non_null(strstr(err.msg, "is not a sluice state database"));
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM pg_tables WHERE "
                                        "schemaname = 'sluice'"),
                         1);
        raw_exec(f->db, "DROP SCHEMA sluice CASCADE");
        /* a sluice database from the future */
        sl_state_close(open_ok(f->url));
        raw_exec(f->db, "UPDATE schema_version SET version = 99");
        assert_null(sl_state_open(f->url, &err));
        assert_non_null(strstr(err.msg, "schema version 99"));
        assert_non_null(strstr(err.msg, "newer sluice"));
        return;
    }

    /* someone else's SQLite database */
    snprintf(path, sizeof(path), "%s/other.db", f->dir);
    raw_exec(path, "CREATE TABLE customers(id INTEGER)");
    assert_null(sl_state_open(path, &err));
    assert_non_null(strstr(err.msg, "is not a sluice state database"));
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(raw_int(path, "SELECT count(*) FROM sqlite_master"), 1);

    /* a sluice database from the future */
    sl_state_close(open_ok(f->url));
    raw_exec(f->db, "PRAGMA user_version = 99");
    assert_null(sl_state_open(f->url, &err));
    assert_non_null(strstr(err.msg, "schema version 99"));
    assert_non_null(strstr(err.msg, "newer sluice"));
}

static void test_urls(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    /* SQLite URLs, whichever backend the other tests use */
    struct {
        char db[512], url[600];
    } lite, *sq = &lite;
    snprintf(sq->db, sizeof(sq->db), "%s/sub/dir/state.db", f->dir);
    snprintf(sq->url, sizeof(sq->url), "sqlite:%.511s", sq->db);
    /* nothing listens on port 1: the error names the server, never the password */
    assert_null(sl_state_open("postgres://sluice:hunter2@127.0.0.1:1/sluice", &err));
    assert_non_null(strstr(err.msg, "state postgres://127.0.0.1:1/sluice: cannot connect: "));
    assert_null(strstr(err.msg, "hunter2"));
    assert_int_equal(err.code, SL_ERR_IO);
    assert_null(sl_state_open("postgresql://u:hunter2@127.0.0.1:1/db?connect_timeout=2", &err));
    assert_non_null(strstr(err.msg, "state postgresql://127.0.0.1:1/db: cannot connect"));
    assert_null(strstr(err.msg, "hunter2"));
    /* and the password is registered with the redactor for anything else */
    char line[128] = "password hunter2 in a log line";
    sl_redact(line, sizeof(line));
    assert_null(strstr(line, "hunter2"));

    assert_null(sl_state_open("mysql://root:hunter2@h/db", &err));
    assert_non_null(strstr(err.msg, "'mysql'"));
    assert_null(strstr(err.msg, "hunter2"));

    char url[PATH_MAX + 64];
    snprintf(url, sizeof(url), "%s?sync=fast", sq->url);
    assert_null(sl_state_open(url, &err));
    assert_non_null(strstr(err.msg, "'sync=fast'"));

    snprintf(url, sizeof(url), "%s?sync=full&busy_timeout=250", sq->url);
    sl_state *s = open_ok(url);
    assert_int_equal(sl_state_kv_set(s, "p", "k", "v", 1, &err), 0);
    sl_state_close(s);
    /* the query is not part of the file name */
    assert_int_equal(access(sq->db, F_OK), 0);

    /* sqlite:///abs/path */
    snprintf(url, sizeof(url), "sqlite://%s", sq->db);
    s = open_ok(url);
    sl_buf b = {0};
    assert_int_equal(sl_state_kv_get(s, "p", "k", &b, &err), 1);
    sl_buf_free(&b);
    sl_state_close(s);

    s = open_ok("sqlite::memory:");
    assert_int_equal(sl_state_kv_set(s, "p", "k", "v", 1, &err), 0);
    sl_state_close(s);

    assert_null(sl_state_open("", &err));
    assert_null(sl_state_open(NULL, &err));
}

/* ---- runs ------------------------------------------------------------------ */

typedef struct run_list {
    int n;
    int64_t ids[16];
    char status[16][16];
} run_list;

static int collect_run(void *ud, const sl_run_info *r)
{
    run_list *l = ud;
    if (l->n < 16) {
        l->ids[l->n] = r->id;
        snprintf(l->status[l->n], sizeof(l->status[0]), "%s", r->status);
    }
    l->n++;
    return 0;
}

static void test_run_lifecycle(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *s = open_ok(f->url);
    sl_run_info r;

    assert_int_equal(sl_state_run_last(s, "braze", &r, &err), 0);

    int64_t r1 = 0, r2 = 0, r3 = 0, other = 0;
    assert_int_equal(sl_state_run_begin(s, "braze", "users.csv", &r1, &err), 0);
    assert_int_equal(sl_state_run_begin(s, "mailchimp", "list", &other, &err), 0);
    assert_int_equal(sl_state_run_last(s, "braze", &r, &err), 1);
    assert_int_equal(r.id, r1);
    assert_string_equal(r.status, "running");
    assert_string_equal(r.pipeline, "braze");
    assert_true(r.started_at > 1.6e9);
    assert_true(r.finished_at == 0);

    sl_counts c = {.read = 100, .sent = 90, .failed = 10, .requests = 2, .retries = 1};
    assert_int_equal(sl_state_run_update(s, r1, &c, &err), 0);
    /* r1's process "crashes": the next run marks it interrupted, keeps counts */
    assert_int_equal(sl_state_run_begin(s, "braze", "users2.csv", &r2, &err), 0);
    assert_true(r2 > r1);

    run_list l = {0};
    assert_int_equal(sl_state_runs(s, "braze", 10, collect_run, &l, &err), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.ids[0], r2); /* newest first */
    assert_string_equal(l.status[0], "running");
    assert_int_equal(l.ids[1], r1);
    assert_string_equal(l.status[1], "interrupted");
    assert_int_equal(raw_int(f->db, "SELECT read FROM runs WHERE status = 'interrupted'"), 100);
    assert_int_equal(raw_int(f->db, "SELECT finished_at > started_at FROM runs "
                                    "WHERE status = 'interrupted'"),
                     1);
    /* other pipelines are not touched */
    assert_int_equal(sl_state_run_last(s, "mailchimp", &r, &err), 1);
    assert_string_equal(r.status, "running");

    /* "running" is not an end status; neither is nonsense */
    assert_true(sl_state_run_end(s, r2, "running", &c, NULL, &err) < 0);
    assert_non_null(strstr(err.msg, "'running'"));
    assert_true(sl_state_run_end(s, r2, "done", &c, NULL, &err) < 0);
    assert_non_null(strstr(err.msg, "'done'"));
    assert_true(sl_state_run_end(s, r2, NULL, &c, NULL, &err) < 0);

    sl_counts c2 = {.read = 5, .sent = 3, .failed = 1, .skipped = 1, .requests = 1};
    assert_int_equal(sl_state_run_end(s, r2, "partial", &c2, "1 record dead-lettered", &err), 0);
    assert_int_equal(sl_state_run_last(s, "braze", &r, &err), 1);
    assert_int_equal(r.id, r2);
    assert_string_equal(r.status, "partial");
    assert_int_equal(r.counts.read, 5);
    assert_int_equal(r.counts.sent, 3);
    assert_int_equal(r.counts.failed, 1);
    assert_int_equal(r.counts.skipped, 1);
    assert_int_equal(r.counts.requests, 1);
    assert_string_equal(r.error, "1 record dead-lettered");
    assert_true(r.finished_at >= r.started_at);

    /* an ended run is not marked interrupted by the next one */
    assert_int_equal(sl_state_run_begin(s, "braze", "users3.csv", &r3, &err), 0);
    /* NULL counts keep what run_update stored */
    sl_counts c3 = {.read = 7, .sent = 7};
    assert_int_equal(sl_state_run_update(s, r3, &c3, &err), 0);
    assert_int_equal(sl_state_run_end(s, r3, "ok", NULL, NULL, &err), 0);
    assert_int_equal(sl_state_run_last(s, "braze", &r, &err), 1);
    assert_string_equal(r.status, "ok");
    assert_int_equal(r.counts.read, 7);
    assert_int_equal(r.counts.sent, 7);

    memset(&l, 0, sizeof(l));
    assert_int_equal(sl_state_runs(s, "braze", 2, collect_run, &l, &err), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.ids[0], r3);
    assert_int_equal(l.ids[1], r2);
    memset(&l, 0, sizeof(l));
    assert_int_equal(sl_state_runs(s, NULL, 0, collect_run, &l, &err), 0);
    assert_int_equal(l.n, 4);
    assert_string_equal(l.status[3], "interrupted"); /* r1, oldest */

    /* unknown run ids are errors, not silent no-ops */
    assert_true(sl_state_run_update(s, 9999, &c, &err) < 0);
    assert_non_null(strstr(err.msg, "run 9999"));
    assert_true(sl_state_run_end(s, 9999, "ok", &c, NULL, &err) < 0);
    assert_non_null(strstr(err.msg, "no such run"));
    assert_true(sl_state_run_begin(s, "", "x", &r3, &err) < 0);
    sl_state_close(s);
}

/* ---- key/value -------------------------------------------------------------- */

typedef struct kv_list {
    int n;
    char keys[8][32];
    char values[8][128];
} kv_list;

static int collect_kv(void *ud, const char *key, const char *value, double updated_at)
{
    kv_list *l = ud;
    assert_true(updated_at > 1.6e9);
    if (l->n < 8) {
        snprintf(l->keys[l->n], sizeof(l->keys[0]), "%s", key);
        snprintf(l->values[l->n], sizeof(l->values[0]), "%s", value);
    }
    l->n++;
    return 0;
}

typedef struct found_log {
    char seen[8][64];
    int count;
} found_log;

static int found_one(void *ud, size_t i, const char *value, size_t len)
{
    found_log *l = ud;
    if (i < 8) {
        snprintf(l->seen[i], sizeof(l->seen[i]), "%.*s", (int)len, value);
    }
    l->count++;
    return 0;
}

/* Many keys at once, as a ledger uses them: one atomic write, one read of
 * a batch of keys, tricky text in both, others' namespaces untouched. */
static void test_kv_many(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *s = open_ok(f->url);
    const char *keys[] = {"a@example.org", "b\"q\\uote@example.org", "{c},NULL", "d"};
    const char *vals[] = {"{\"t\":1}", "it's \"x\"\\", "", "caf\xc3\xa9"};
    assert_int_equal(sl_state_kv_set_many(s, "ledger:x", keys, vals, 3, &err), 0);
    assert_int_equal(sl_state_kv_set(s, "other", "d", "no", 2, &err), 0);
    found_log l;
    memset(&l, 0, sizeof(l));
    assert_int_equal(sl_state_kv_get_many(s, "ledger:x", keys, 4, found_one, &l, &err), 0);
    assert_int_equal(l.count, 3);
    assert_string_equal(l.seen[0], vals[0]);
    assert_string_equal(l.seen[1], vals[1]);
    assert_string_equal(l.seen[2], "");
    assert_string_equal(l.seen[3], ""); /* "d" is another scope's */
    /* overwrite inside the caller's transaction: rolled back with it */
    assert_int_equal(sl_state_begin(s, &err), 0);
    const char *v2[] = {"changed"};
    assert_int_equal(sl_state_kv_set_many(s, "ledger:x", keys, v2, 1, &err), 0);
    sl_state_rollback(s);
    memset(&l, 0, sizeof(l));
    assert_int_equal(sl_state_kv_get_many(s, "ledger:x", keys, 1, found_one, &l, &err), 0);
    assert_string_equal(l.seen[0], vals[0]);
    /* and on its own it commits */
    assert_int_equal(sl_state_kv_set_many(s, "ledger:x", keys, v2, 1, &err), 0);
    memset(&l, 0, sizeof(l));
    assert_int_equal(sl_state_kv_get_many(s, "ledger:x", keys, 1, found_one, &l, &err), 0);
    assert_string_equal(l.seen[0], "changed");
    sl_state_close(s);
}

static void test_kv(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *s = open_ok(f->url);
    sl_buf b = {0};

    assert_int_equal(sl_state_kv_get(s, "p", "checkpoint", &b, &err), 0);
    assert_int_equal(sl_state_kv_set(s, "p", "checkpoint", "100", 3, &err), 0);
    assert_int_equal(sl_state_kv_get(s, "p", "checkpoint", &b, &err), 1);
    assert_string_equal(sl_buf_cstr(&b), "100");
    /* overwrite; out is reset, not appended to */
    assert_int_equal(sl_state_kv_set(s, "p", "checkpoint", "20", 2, &err), 0);
    assert_int_equal(sl_state_kv_get(s, "p", "checkpoint", &b, &err), 1);
    assert_string_equal(sl_buf_cstr(&b), "20");
    assert_int_equal(b.len, 2);

    /* quotes, SQL, backslashes, newlines, UTF-8 and an embedded NUL */
    static const char tricky[] = "it's \"quoted\"'); DROP TABLE kv; --\\n\n\xc3\xa9\0tail";
    assert_int_equal(sl_state_kv_set(s, "p", "cursor", tricky, sizeof(tricky) - 1, &err), 0);
    assert_int_equal(sl_state_kv_get(s, "p", "cursor", &b, &err), 1);
    assert_int_equal(b.len, sizeof(tricky) - 1);
    assert_memory_equal(b.data, tricky, sizeof(tricky) - 1);
    /* the key itself may be tricky too */
    assert_int_equal(sl_state_kv_set(s, "p", "k'\"", "", 0, &err), 0);
    assert_int_equal(sl_state_kv_get(s, "p", "k'\"", &b, &err), 1);
    assert_int_equal(b.len, 0);

    /* pipelines are separate namespaces */
    assert_int_equal(sl_state_kv_get(s, "q", "checkpoint", &b, &err), 0);
    assert_int_equal(sl_state_kv_set(s, "q", "checkpoint", "q1", 2, &err), 0);

    kv_list l = {0};
    assert_int_equal(sl_state_kv_each(s, "p", collect_kv, &l, &err), 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.keys[0], "checkpoint");
    assert_string_equal(l.values[0], "20");
    assert_string_equal(l.keys[1], "cursor");
    assert_string_equal(l.keys[2], "k'\"");

    assert_int_equal(sl_state_kv_del(s, "p", "checkpoint", &err), 0);
    assert_int_equal(sl_state_kv_get(s, "p", "checkpoint", &b, &err), 0);
    assert_int_equal(sl_state_kv_del(s, "p", "checkpoint", &err), 0); /* idempotent */
    assert_int_equal(sl_state_kv_get(s, "q", "checkpoint", &b, &err), 1);
    assert_string_equal(sl_buf_cstr(&b), "q1");

    /* the caller's buffer limit is honoured with a clear error */
    sl_buf small;
    sl_buf_init(&small, 4);
    assert_int_equal(sl_state_kv_set(s, "p", "big", "0123456789", 10, &err), 0);
    assert_int_equal(sl_state_kv_get(s, "p", "big", &small, &err), SL_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "key 'big'"));
    sl_buf_free(&small);

    assert_true(sl_state_kv_set(s, "p", "", "x", 1, &err) < 0);
    assert_true(sl_state_kv_set(s, NULL, "k", "x", 1, &err) < 0);
    char longname[200];
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(sl_state_kv_set(s, longname, "k", "x", 1, &err), SL_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "pipeline name"));

    sl_buf_free(&b);
    sl_state_close(s);
}

/* ---- dead letters ------------------------------------------------------------ */

typedef struct dl_list {
    int n;
    int stop_after;
    int64_t ids[8];
    char records[8][64];
    char errors[8][64];
    char responses[8][64];
    int attempts[8];
    int stages[8];
    uint64_t lines[8];
} dl_list;

static int collect_dl(void *ud, const sl_dead_letter *d)
{
    dl_list *l = ud;
    if (l->n < 8) {
        l->ids[l->n] = d->id;
        snprintf(l->records[l->n], sizeof(l->records[0]), "%s", d->record);
        snprintf(l->errors[l->n], sizeof(l->errors[0]), "%s", d->error);
        snprintf(l->responses[l->n], sizeof(l->responses[0]), "%s", d->response);
        l->attempts[l->n] = d->attempts;
        l->stages[l->n] = d->stage;
        l->lines[l->n] = d->line;
    }
    assert_string_equal(d->pipeline, "braze");
    assert_true(d->created_at > 1.6e9);
    l->n++;
    return l->stop_after && l->n >= l->stop_after;
}

static void test_dead_letters(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *s = open_ok(f->url);

    assert_int_equal(sl_state_dl_count(s, "braze", &err), 0);
    for (int i = 0; i < 3; i++) {
        char rec[32], why[32];
        snprintf(rec, sizeof(rec), "{\"external_id\":\"%d\"}", i);
        snprintf(why, sizeof(why), "error %d", i);
        sl_dead_letter d = {.pipeline = "braze",
                            .run_id = 1,
                            .record = rec,
                            .error = why,
                            .response = i == 1 ? "{\"message\":\"bad\"}" : NULL,
                            .stage = i == 2 ? 127 : -1,
                            .line = (uint64_t)(10 + i)};
        assert_int_equal(sl_state_dl_add(s, &d, &err), 0);
    }
    sl_dead_letter other = {.pipeline = "mailchimp", .record = "{}", .error = "x"};
    assert_int_equal(sl_state_dl_add(s, &other, &err), 0);
    assert_int_equal(sl_state_dl_count(s, "braze", &err), 3);
    assert_int_equal(sl_state_dl_count(s, NULL, &err), 4);

    dl_list l = {0};
    assert_int_equal(sl_state_dl_each(s, "braze", 0, collect_dl, &l, &err), 0);
    assert_int_equal(l.n, 3);
    assert_true(l.ids[0] < l.ids[1] && l.ids[1] < l.ids[2]); /* oldest first */
    assert_string_equal(l.records[0], "{\"external_id\":\"0\"}");
    assert_string_equal(l.errors[2], "error 2");
    assert_string_equal(l.responses[0], "");
    assert_string_equal(l.responses[1], "{\"message\":\"bad\"}");
    assert_int_equal(l.attempts[0], 1);
    assert_int_equal(l.stages[0], -1);
    assert_int_equal(l.stages[2], 127);
    assert_int_equal(l.lines[1], 11);

    /* limit, and a callback that stops early */
    memset(&l, 0, sizeof(l));
    assert_int_equal(sl_state_dl_each(s, "braze", 2, collect_dl, &l, &err), 0);
    assert_int_equal(l.n, 2);
    memset(&l, 0, sizeof(l));
    l.stop_after = 1;
    assert_int_equal(sl_state_dl_each(s, "braze", 0, collect_dl, &l, &err), 0);
    assert_int_equal(l.n, 1);

    /* bump: attempts + 1, new error; NULL response keeps the stored one */
    int64_t id1 = l.ids[0];
    memset(&l, 0, sizeof(l));
    assert_int_equal(sl_state_dl_each(s, "braze", 0, collect_dl, &l, &err), 0);
    int64_t id_resp = l.ids[1];
    assert_int_equal(sl_state_dl_bump(s, id_resp, "429 again", NULL, &err), 0);
    assert_int_equal(sl_state_dl_bump(s, id_resp, "500 now", "<html>502</html>", &err), 0);
    assert_int_equal(sl_state_dl_bump(s, id1, "still bad", NULL, &err), 0);
    memset(&l, 0, sizeof(l));
    assert_int_equal(sl_state_dl_each(s, "braze", 0, collect_dl, &l, &err), 0);
    assert_int_equal(l.attempts[0], 2);
    assert_string_equal(l.errors[0], "still bad");
    assert_string_equal(l.responses[0], "");
    assert_int_equal(l.attempts[1], 3);
    assert_string_equal(l.errors[1], "500 now");
    assert_string_equal(l.responses[1], "<html>502</html>");
    assert_true(raw_int(f->db, "SELECT count(*) FROM dead_letters WHERE updated_at > created_at") >=
                2);

    assert_int_equal(sl_state_dl_delete(s, id1, &err), 0);
    assert_int_equal(sl_state_dl_count(s, "braze", &err), 2);
    assert_int_equal(sl_state_dl_delete(s, id1, &err), SL_ERR_INPUT);
    assert_non_null(strstr(err.msg, "no such dead letter"));
    assert_int_equal(sl_state_dl_bump(s, 424242, "x", NULL, &err), SL_ERR_INPUT);
    assert_non_null(strstr(err.msg, "424242"));

    memset(&l, 0, sizeof(l));
    assert_int_equal(sl_state_dl_each(s, "braze", 0, collect_dl, &l, &err), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.ids[0], id_resp);
    sl_state_close(s);
}

/* `sluice retry` walks the dead letters and deletes or bumps each one from
 * inside the callback, and may list again: the store must allow that. */
typedef struct reenter {
    sl_state *s;
    int seen;
    int64_t inner_count;
} reenter;

static int count_cb(void *ud, const sl_dead_letter *d)
{
    (void)d;
    (*(int *)ud)++;
    return 0;
}

static int retry_cb(void *ud, const sl_dead_letter *d)
{
    reenter *r = ud;
    sl_error err = {0};
    int inner = 0;
    r->seen++;
    assert_int_equal(sl_state_dl_each(r->s, "p", 0, count_cb, &inner, &err), 0);
    assert_true(inner >= 1);
    if (d->line % 2 == 0) {
        assert_int_equal(sl_state_dl_delete(r->s, d->id, &err), 0);
    } else {
        assert_int_equal(sl_state_dl_bump(r->s, d->id, "retried", NULL, &err), 0);
    }
    r->inner_count = sl_state_dl_count(r->s, "p", &err);
    return 0;
}

static void test_dead_letters_reentrant(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *s = open_ok(f->url);
    for (int i = 0; i < 6; i++) {
        sl_dead_letter d = {.pipeline = "p", .record = "{}", .error = "e", .line = (uint64_t)i};
        assert_int_equal(sl_state_dl_add(s, &d, &err), 0);
    }
    reenter r = {.s = s};
    assert_int_equal(sl_state_dl_each(s, "p", 0, retry_cb, &r, &err), 0);
    assert_int_equal(r.seen, 6);
    assert_int_equal(sl_state_dl_count(s, "p", &err), 3);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM dead_letters WHERE attempts = 2 AND "
                                    "error = 'retried'"),
                     3);
    sl_state_close(s);
}

static int find_text_cb(void *ud, const sl_dead_letter *d)
{
    const char **texts = ud;
    texts[0] = strdup(d->record);
    texts[1] = strdup(d->error);
    texts[2] = strdup(d->response);
    return 1;
}

static void test_dead_letter_redaction(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *s = open_ok(f->url);
    const char *secret = "sk-live-0123456789abcdef";
    sl_secret_register(secret);

    char record[128], error[128];
    snprintf(record, sizeof(record), "{\"email\":\"a@b.c\",\"token\":\"%s\"}", secret);
    snprintf(error, sizeof(error), "401 for key %s", secret);
    /* a long response with the secret near the start and far past 4 KB */
    size_t rlen = 10000;
    char *response = malloc(rlen + 1);
    assert_non_null(response);
    memset(response, 'r', rlen);
    response[rlen] = '\0';
    memcpy(response + 10, secret, strlen(secret));
    memcpy(response + 8000, secret, strlen(secret));
    char *response_copy = strdup(response);

    sl_dead_letter d = {.pipeline = "p",
                        .record = record,
                        .error = error,
                        .response = response,
                        .stage = 127,
                        .line = 3};
    assert_int_equal(sl_state_dl_add(s, &d, &err), 0);
    /* the caller's memory is untouched */
    assert_non_null(strstr(record, secret));
    assert_non_null(strstr(error, secret));
    assert_string_equal(response, response_copy);

    const char *texts[3] = {0};
    assert_int_equal(sl_state_dl_each(s, "p", 0, find_text_cb, texts, &err), 0);
    assert_string_equal(texts[0], "{\"email\":\"a@b.c\",\"token\":\"[redacted]\"}");
    assert_string_equal(texts[1], "401 for key [redacted]");
    assert_null(strstr(texts[2], secret));
    assert_non_null(strstr(texts[2], "[redacted]"));
    assert_int_equal(strlen(texts[2]), 4096);
    for (int i = 0; i < 3; i++) {
        free((void *)texts[i]);
    }

    /* bump redacts too */
    assert_int_equal(sl_state_dl_bump(s, 1, error, record, &err), 0);
    assert_int_equal(sl_state_dl_each(s, "p", 0, find_text_cb, texts, &err), 0);
    assert_string_equal(texts[1], "401 for key [redacted]");
    assert_null(strstr(texts[2], secret));
    for (int i = 0; i < 3; i++) {
        free((void *)texts[i]);
    }
    sl_state_close(s);

    if (tb_is_pg()) {
        /* and the secret is nowhere in the stored rows */
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM dead_letters WHERE record LIKE "
                                        "'%sk-live%' OR error LIKE '%sk-live%' OR response LIKE "
                                        "'%sk-live%'"),
                         0);
        free(response);
        free(response_copy);
        return;
    }
    /* and the secret is nowhere in the files (db + WAL) */
    char cmd[PATH_MAX * 2 + 64];
    snprintf(cmd, sizeof(cmd), "grep -rqa -- '%s' '%s'", secret, f->dir);
    assert_int_not_equal(system(cmd), 0);
    free(response);
    free(response_copy);
}

/* ---- transactions --------------------------------------------------------------- */

static void test_transactions(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *s = open_ok(f->url);
    sl_buf b = {0};

    assert_int_equal(sl_state_kv_set(s, "p", "checkpoint", "1", 1, &err), 0);
    assert_int_equal(sl_state_begin(s, &err), 0);
    assert_int_equal(sl_state_kv_set(s, "p", "checkpoint", "2", 1, &err), 0);
    sl_dead_letter d = {.pipeline = "p", .record = "{}", .error = "e"};
    assert_int_equal(sl_state_dl_add(s, &d, &err), 0);
    int64_t run = 0;
    assert_int_equal(sl_state_run_begin(s, "p", "in", &run, &err), 0);
    /* nested begin is a usage error and leaves the open transaction alone */
    assert_int_equal(sl_state_begin(s, &err), SL_ERR_USAGE);
    assert_non_null(strstr(err.msg, "nested begin"));
    assert_int_equal(sl_state_kv_get(s, "p", "checkpoint", &b, &err), 1);
    assert_string_equal(sl_buf_cstr(&b), "2"); /* visible inside */
    assert_int_equal(sl_state_rollback(s), 0);

    assert_int_equal(sl_state_kv_get(s, "p", "checkpoint", &b, &err), 1);
    assert_string_equal(sl_buf_cstr(&b), "1");
    assert_int_equal(sl_state_dl_count(s, "p", &err), 0);
    sl_run_info r;
    assert_int_equal(sl_state_run_last(s, "p", &r, &err), 0);

    /* commit keeps everything */
    assert_int_equal(sl_state_begin(s, &err), 0);
    assert_int_equal(sl_state_kv_set(s, "p", "checkpoint", "3", 1, &err), 0);
    assert_int_equal(sl_state_dl_add(s, &d, &err), 0);
    assert_int_equal(sl_state_commit(s, &err), 0);
    assert_int_equal(raw_int(f->db, TB_KV_VALUE("key = 'checkpoint'")), 3);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM dead_letters"), 1);

    /* commit without begin; rollback without begin is harmless */
    assert_int_equal(sl_state_commit(s, &err), SL_ERR_USAGE);
    assert_non_null(strstr(err.msg, "no transaction is open"));
    assert_int_equal(sl_state_rollback(s), 0);

    /* close with an open transaction rolls it back */
    assert_int_equal(sl_state_begin(s, &err), 0);
    assert_int_equal(sl_state_kv_set(s, "p", "checkpoint", "4", 1, &err), 0);
    sl_state_close(s);
    assert_int_equal(raw_int(f->db, TB_KV_VALUE("key = 'checkpoint'")), 3);
    sl_buf_free(&b);
}

/* Another thread's write waits for the open transaction instead of landing
 * inside it (and being rolled back with it). */
typedef struct thread_arg {
    sl_state *s;
    _Atomic int rc;
} thread_arg;

static void *other_writer(void *p)
{
    thread_arg *a = p;
    sl_error err = {0};
    a->rc = sl_state_kv_set(a->s, "p", "other", "x", 1, &err);
    return NULL;
}

static void test_transaction_belongs_to_its_thread(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *s = open_ok(f->url);
    assert_int_equal(sl_state_begin(s, &err), 0);
    assert_int_equal(sl_state_kv_set(s, "p", "mine", "1", 1, &err), 0);
    thread_arg a = {.s = s, .rc = 1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, other_writer, &a), 0);
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    assert_int_equal(a.rc, 1); /* still waiting */
    assert_int_equal(sl_state_rollback(s), 0);
    pthread_join(t, NULL);
    assert_int_equal(a.rc, 0);
    sl_buf b = {0};
    assert_int_equal(sl_state_kv_get(s, "p", "other", &b, &err), 1);
    assert_int_equal(sl_state_kv_get(s, "p", "mine", &b, &err), 0);
    sl_buf_free(&b);
    sl_state_close(s);
}

static void test_locked_error_names_file_and_operation(void **state)
{
    TB_SKIP_ON_PG("SQLite's 'database is locked' after busy_timeout; Postgres row locks make "
                  "the second writer wait instead");
    fixture *f = *state;
    sl_error err = {0};
    char url[PATH_MAX + 64];
    snprintf(url, sizeof(url), "%s?busy_timeout=50", f->url);
    sl_state *a = open_ok(f->url);
    sl_state *b = open_ok(url);
    assert_int_equal(sl_state_begin(a, &err), 0);
    assert_int_equal(sl_state_kv_set(a, "x", "checkpoint", "1", 1, &err), 0);

    assert_true(sl_state_kv_set(b, "x", "checkpoint", "2", 1, &err) < 0);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof(want),
             "state %s: cannot write checkpoint for pipeline 'x': database is locked", f->db);
    assert_string_equal(err.msg, want);
    assert_int_equal(err.code, SL_ERR_IO);
    assert_true(sl_state_begin(b, &err) < 0);
    assert_non_null(strstr(err.msg, "cannot begin a transaction: database is locked"));

    assert_int_equal(sl_state_commit(a, &err), 0);
    /* b recovers once the lock is gone, and its transaction state is clean */
    assert_int_equal(sl_state_begin(b, &err), 0);
    assert_int_equal(sl_state_kv_set(b, "x", "checkpoint", "2", 1, &err), 0);
    assert_int_equal(sl_state_commit(b, &err), 0);
    sl_state_close(a);
    sl_state_close(b);
    assert_int_equal(raw_int(f->db, TB_KV_VALUE("true")), 2);
}

/* ---- durability ------------------------------------------------------------------- */

/* Child: open, commit "checkpoint" = n and a dead letter, then end as told. */
static void child_commit_and_die(const char *url, int how)
{
    sl_error err = {0};
    sl_state *s = sl_state_open(url, &err);
    if (!s) {
        _exit(10);
    }
    if (sl_state_begin(s, &err) < 0 || sl_state_kv_set(s, "p", "checkpoint", "4711", 4, &err) < 0) {
        _exit(11);
    }
    sl_dead_letter d = {.pipeline = "p", .record = "{\"id\":1}", .error = "e"};
    if (sl_state_dl_add(s, &d, &err) < 0 || sl_state_commit(s, &err) < 0) {
        _exit(12);
    }
    if (how == SIGKILL) {
        raise(SIGKILL);
    }
    _exit(0); /* no close, no atexit: like a crash after commit */
}

static void check_child_commit(fixture *f, int how)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        child_commit_and_die(f->url, how);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (how == SIGKILL) {
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), SIGKILL);
    } else {
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    sl_error err = {0};
    sl_state *s = open_ok(f->url);
    sl_buf b = {0};
    assert_int_equal(sl_state_kv_get(s, "p", "checkpoint", &b, &err), 1);
    assert_string_equal(sl_buf_cstr(&b), "4711");
    assert_int_equal(sl_state_dl_count(s, "p", &err), 1);
    sl_buf_free(&b);
    sl_state_close(s);
}

/* ---- leases ----------------------------------------------------------------- */

static sl_lease lease_of(const char *name, const char *owner, double expires_at)
{
    sl_lease l;
    memset(&l, 0, sizeof(l));
    snprintf(l.name, sizeof(l.name), "%s", name);
    snprintf(l.owner, sizeof(l.owner), "%s", owner);
    snprintf(l.host, sizeof(l.host), "h1");
    l.pid = 42;
    l.expires_at = expires_at;
    return l;
}

static void test_leases(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *a = open_ok(f->url);
    sl_state *b = open_ok(f->url); /* another process's connection */
    double now = (double)time(NULL);
    sl_lease mine = lease_of("p", "h1:42:aa", now + 60),
             theirs = lease_of("p", "h2:7:bb", now + 60);
    sl_lease holder;

    assert_int_equal(sl_state_lease_get(a, "p", &holder, &err), 0);
    assert_int_equal(sl_state_lease_take(a, &mine, NULL, &holder, &err), 1);
    /* the second owner is refused and told who holds it */
    memset(&holder, 0, sizeof(holder));
    assert_int_equal(sl_state_lease_take(b, &theirs, NULL, &holder, &err), 0);
    assert_string_equal(holder.owner, "h1:42:aa");
    assert_string_equal(holder.host, "h1");
    assert_int_equal(holder.pid, 42);
    assert_true(holder.expires_at >= now + 59);
    /* taking it again as its owner renews it; another name is independent */
    assert_int_equal(sl_state_lease_take(a, &mine, NULL, NULL, &err), 1);
    sl_lease other = lease_of("q", "h2:7:bb", now + 60);
    assert_int_equal(sl_state_lease_take(b, &other, NULL, NULL, &err), 1);
    /* a steal names the exact owner proved dead; any other name does nothing */
    assert_int_equal(sl_state_lease_take(b, &theirs, "h1:42:zz", &holder, &err), 0);
    assert_int_equal(sl_state_lease_take(b, &theirs, "h1:42:aa", &holder, &err), 1);
    /* the old owner finds out at its next renewal (fencing) */
    assert_int_equal(sl_state_lease_renew(a, "p", "h1:42:aa", now + 120, &err), 0);
    assert_int_equal(sl_state_lease_renew(b, "p", "h2:7:bb", now + 120, &err), 1);
    /* an expired lease is free for anyone */
    assert_int_equal(sl_state_lease_renew(b, "p", "h2:7:bb", now - 1, &err), 1);
    assert_int_equal(sl_state_lease_take(a, &mine, NULL, &holder, &err), 1);
    /* release by a non-owner does nothing; by the owner frees it */
    assert_int_equal(sl_state_lease_release(b, "p", "h2:7:bb", &err), 0);
    assert_int_equal(sl_state_lease_get(b, "p", &holder, &err), 1);
    assert_string_equal(holder.owner, "h1:42:aa");
    assert_int_equal(sl_state_lease_release(a, "p", "h1:42:aa", &err), 0);
    assert_int_equal(sl_state_lease_get(b, "p", &holder, &err), 0);
    /* a renewal inside a rolled-back transaction is undone with it */
    assert_int_equal(sl_state_lease_take(a, &mine, NULL, NULL, &err), 1);
    assert_int_equal(sl_state_begin(a, &err), 0);
    assert_int_equal(sl_state_lease_renew(a, "p", "h1:42:aa", now + 999, &err), 1);
    sl_state_rollback(a);
    assert_int_equal(sl_state_lease_get(a, "p", &holder, &err), 1);
    assert_true(holder.expires_at < now + 900);
    sl_state_close(a);
    sl_state_close(b);
}

/* Many processes opening one new state file at once: every one of them
 * gets a working store (none sees a half-made file as foreign). */
static void test_new_file_open_race(void **state)
{
    fixture *f = *state;
    for (int round = 0; round < 5; round++) {
        char url[PATH_MAX + 32], pgdb[64] = "";
        snprintf(url, sizeof(url), "sqlite:%s/race%d.db", f->dir, round);
        if (tb_is_pg()) {
            /* a new database: the first processes race to create the schema */
            tb_pg_create(pgdb, sizeof(pgdb), url, sizeof(url));
        }
        enum { N = 12 };
        pid_t kids[N];
        int go[2];
        assert_int_equal(pipe(go), 0);
        for (int i = 0; i < N; i++) {
            kids[i] = fork();
            assert_true(kids[i] >= 0);
            if (kids[i] == 0) {
                char c;
                close(go[1]);
                if (read(go[0], &c, 1) < 0) { /* all start together */
                    _exit(9);
                }
                sl_error err = {0};
                sl_state *s = sl_state_open(url, &err);
                if (!s) {
                    fprintf(stderr, "child %d: %s\n", i, err.msg);
                    _exit(10);
                }
                sl_lease l = lease_of("p", "x", (double)time(NULL) + 60);
                snprintf(l.owner, sizeof(l.owner), "h:%d", i);
                int rc = sl_state_lease_take(s, &l, NULL, NULL, &err);
                sl_state_close(s);
                _exit(rc == 1 ? 1 : rc == 0 ? 0 : 11);
            }
        }
        close(go[0]);
        close(go[1]); /* EOF releases every child at once */
        int taken = 0;
        for (int i = 0; i < N; i++) {
            int status = 0;
            assert_int_equal(waitpid(kids[i], &status, 0), kids[i]);
            assert_true(WIFEXITED(status));
            int code = WEXITSTATUS(status);
            assert_true(code == 0 || code == 1);
            taken += code;
        }
        assert_int_equal(taken, 1); /* exactly one process got the lease */
        tb_pg_drop(pgdb);
    }
}

/* Eight processes, each with its own connection, race to take over one
 * expired lease (its holder stopped renewing), released all at once: every
 * round exactly one of them wins, and the row names that winner. */
static void test_lease_takeover_race(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *s = open_ok(f->url);
    for (int round = 0; round < 10; round++) {
        double now = (double)time(NULL);
        sl_lease dead = lease_of("p", "h0:1:dead", now + 60);
        char stale[32];
        snprintf(stale, sizeof(stale), "h0:1:r%d", round);
        snprintf(dead.owner, sizeof(dead.owner), "%s", stale);
        /* the holder (last round's winner) is taken over by a "dead" owner
         * whose lease then runs out */
        sl_lease cur;
        int has = sl_state_lease_get(s, "p", &cur, &err);
        assert_true(has >= 0);
        assert_int_equal(sl_state_lease_take(s, &dead, has ? cur.owner : NULL, NULL, &err), 1);
        assert_int_equal(sl_state_lease_renew(s, "p", stale, now - 1, &err), 1);

        enum { N = 8 };
        pid_t kids[N];
        int go[2];
        assert_int_equal(pipe(go), 0);
        for (int i = 0; i < N; i++) {
            kids[i] = fork();
            assert_true(kids[i] >= 0);
            if (kids[i] == 0) {
                char c;
                close(go[1]);
                sl_error e = {0};
                sl_state *k = sl_state_open(f->url, &e); /* connected before the start */
                if (!k || read(go[0], &c, 1) < 0) {
                    _exit(10);
                }
                sl_lease l = lease_of("p", "x", (double)time(NULL) + 60);
                snprintf(l.owner, sizeof(l.owner), "h%d:%d:w", i + 1, (int)getpid());
                int rc = sl_state_lease_take(k, &l, NULL, NULL, &e);
                sl_state_close(k);
                _exit(rc == 1 ? 1 : rc == 0 ? 0 : 11);
            }
        }
        close(go[0]);
        close(go[1]); /* EOF releases every child at once */
        int taken = 0;
        pid_t winner = 0;
        for (int i = 0; i < N; i++) {
            int status = 0;
            assert_int_equal(waitpid(kids[i], &status, 0), kids[i]);
            assert_true(WIFEXITED(status));
            int code = WEXITSTATUS(status);
            assert_true(code == 0 || code == 1);
            if (code == 1) {
                winner = kids[i];
            }
            taken += code;
        }
        assert_int_equal(taken, 1);
        assert_int_equal(sl_state_lease_get(s, "p", &cur, &err), 1);
        char want[32];
        snprintf(want, sizeof(want), ":%d:w", (int)winner);
        assert_non_null(strstr(cur.owner, want));
    }
    sl_state_close(s);
}

static void test_durable_after_exit(void **state)
{
    check_child_commit(*state, 0);
}

static void test_durable_after_sigkill(void **state)
{
    check_child_commit(*state, SIGKILL);
}

/* Child commits checkpoint = 1, 2, 3, ... and reports each one on a pipe
 * after commit returned; the parent SIGKILLs it mid-stream. Every reported
 * commit must be there; at most the one in flight may be beyond it. */
static void test_durable_under_kill_at_random_point(void **state)
{
    fixture *f = *state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        sl_error err = {0};
        sl_state *s = sl_state_open(f->url, &err);
        if (!s) {
            _exit(10);
        }
        for (uint32_t i = 1;; i++) {
            char v[16];
            int n = snprintf(v, sizeof(v), "%u", i);
            if (sl_state_begin(s, &err) < 0 ||
                sl_state_kv_set(s, "p", "checkpoint", v, (size_t)n, &err) < 0 ||
                sl_state_commit(s, &err) < 0) {
                _exit(11);
            }
            if (write(fds[1], &i, sizeof(i)) != sizeof(i)) {
                _exit(12);
            }
        }
    }
    close(fds[1]);
    uint32_t last = 0, v;
    /* let it make a few hundred commits, then kill it wherever it is */
    while (last < 300 && read(fds[0], &v, sizeof(v)) == sizeof(v)) {
        last = v;
    }
    kill(pid, SIGKILL);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    while (read(fds[0], &v, sizeof(v)) == sizeof(v)) {
        last = v;
    }
    close(fds[0]);
    assert_true(last >= 300);

    sl_error err = {0};
    sl_state *s = open_ok(f->url);
    sl_buf b = {0};
    assert_int_equal(sl_state_kv_get(s, "p", "checkpoint", &b, &err), 1);
    unsigned long got = strtoul(sl_buf_cstr(&b), NULL, 10);
    if (got < last || got > (unsigned long)last + 1) {
        fail_msg("after kill -9: checkpoint %lu, last acknowledged commit %u", got, last);
    }
    sl_buf_free(&b);
    sl_state_close(s);
}

/* ---- speed --------------------------------------------------------------------------- */

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_checkpoint_rate(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *s = open_ok(f->url);
    const int n = 10000;
    char v[64];

    double t0 = mono();
    for (int i = 0; i < n; i++) {
        int len = snprintf(v, sizeof(v), "{\"pos\":%d,\"line\":%d}", i * 100, i);
        assert_int_equal(sl_state_begin(s, &err), 0);
        assert_int_equal(sl_state_kv_set(s, "p", "checkpoint", v, (size_t)len, &err), 0);
        assert_int_equal(sl_state_commit(s, &err), 0);
    }
    double t1 = mono();
    for (int i = 0; i < n; i++) {
        int len = snprintf(v, sizeof(v), "{\"pos\":%d,\"line\":%d}", i * 100, i);
        assert_int_equal(sl_state_begin(s, &err), 0);
        for (int k = 0; k < 3; k++) {
            sl_dead_letter d = {.pipeline = "p",
                                .run_id = 1,
                                .record = "{\"external_id\":\"x\"}",
                                .error = "400 Bad Request",
                                .response = "{\"errors\":[]}",
                                .stage = 127,
                                .line = (uint64_t)i};
            assert_int_equal(sl_state_dl_add(s, &d, &err), 0);
        }
        assert_int_equal(sl_state_kv_set(s, "p", "checkpoint", v, (size_t)len, &err), 0);
        assert_int_equal(sl_state_commit(s, &err), 0);
    }
    double t2 = mono();
    print_message("state: %d begin/kv_set/commit cycles in %.3f s = %.0f/s "
                  "(engine needs ~1,000/s)\n",
                  n, t1 - t0, n / (t1 - t0));
    print_message("state: %d begin/3x dl_add/kv_set/commit cycles in %.3f s = %.0f/s\n", n, t2 - t1,
                  n / (t2 - t1));
    sl_buf b = {0};
    assert_int_equal(sl_state_kv_get(s, "p", "checkpoint", &b, &err), 1);
    snprintf(v, sizeof(v), "{\"pos\":%d,\"line\":%d}", (n - 1) * 100, n - 1);
    assert_string_equal(sl_buf_cstr(&b), v);
    assert_int_equal(sl_state_dl_count(s, "p", &err), 3 * n);
    sl_buf_free(&b);
    sl_state_close(s);
}

int main(void)
{
    tb_announce("test_state");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_creates_dir_and_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_a_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_and_newer_databases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_urls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letters_reentrant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_redaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transaction_belongs_to_its_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_locked_error_names_file_and_operation, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_durable_after_exit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durable_after_sigkill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durable_under_kill_at_random_point, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_rate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_file_open_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_takeover_race, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
