/* Jobs in the state store: idempotent add, claim order, order-key
 * serialization, retry times, finishing, recovery after a killed process,
 * re-queueing failed jobs, concurrent claimers (threads, and 8 processes),
 * listing, counts, redaction, and the SQLite schema migration from version 1.
 * SQLite by default; against Postgres with SLUICE_TEST_STATE_URL set (see
 * state_backend.h). */
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
#include <sys/mman.h>
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
    char db[PATH_MAX]; /* a file path, or the test database's Postgres URL */
    char pgdb[64];     /* the test's Postgres database, "" with SQLite */
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
    snprintf(f->dir, sizeof(f->dir), "/tmp/sluice-test-jobs-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof(f->db), "%s/state.db", f->dir);
    if (tb_is_pg()) {
        tb_pg_create(f->pgdb, sizeof(f->pgdb), f->db, sizeof(f->db));
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

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A second, raw connection to look at what is really stored. */
#define raw_int tb_raw_int
#define raw_exec tb_raw_exec

static int64_t add_ok(sl_state *s, const char *pipeline, const char *idem, const char *order)
{
    sl_error err = {0};
    int64_t id = 0;
    int rc = sl_state_job_add(s, pipeline, "full", idem, order, "{\"n\":1}", 0, &id, &err);
    if (rc != 1) {
        fail_msg("job_add %s/%s: rc %d: %s", pipeline, idem ? idem : "-", rc, err.msg);
    }
    assert_true(id > 0);
    return id;
}

/* Claim and return the id, or 0 when nothing is runnable. */
static int64_t claim_id(sl_state *s, const char *pipeline, double now)
{
    sl_error err = {0};
    sl_job j;
    int rc = sl_state_job_claim(s, pipeline, now, &j, &err);
    if (rc < 0) {
        fail_msg("claim: %s", err.msg);
    }
    if (rc == 0) {
        assert_null(j.vars);
        return 0;
    }
    assert_string_equal(j.status, "running");
    int64_t id = j.id;
    sl_job_clear(&j);
    assert_null(j.vars);
    return id;
}

static void finish_ok(sl_state *s, int64_t id, const char *status, double not_before, int64_t rows,
                      const char *error)
{
    sl_error err = {0};
    if (sl_state_job_finish(s, id, status, not_before, rows, error, &err) != 0) {
        fail_msg("finish %lld %s: %s", (long long)id, status, err.msg);
    }
}

/* A copy of one job, looked up through the listing API. */
typedef struct find_ud {
    int64_t id;
    int found;
    sl_job job;
    char vars[256];
} find_ud;

static int find_cb(void *ud, const sl_job *j)
{
    find_ud *u = ud;
    if (j->id != u->id) {
        return 0;
    }
    u->found = 1;
    u->job = *j;
    snprintf(u->vars, sizeof(u->vars), "%s", j->vars ? j->vars : "(null)");
    u->job.vars = NULL; /* borrowed, valid during the call only */
    return 1;
}

static sl_job find_job(sl_state *s, int64_t id)
{
    sl_error err = {0};
    find_ud u = {.id = id};
    assert_int_equal(sl_state_jobs(s, NULL, 0, find_cb, &u, &err), 0);
    if (!u.found) {
        fail_msg("job %lld not listed", (long long)id);
    }
    return u.job;
}

static void counts_eq(sl_state *s, const char *pipeline, int64_t queued, int64_t running,
                      int64_t retry, int64_t done, int64_t failed)
{
    sl_error err = {0};
    int64_t c[5] = {-1, -1, -1, -1, -1};
    assert_int_equal(sl_state_job_counts(s, pipeline, c, &err), 0);
    const int64_t want[5] = {queued, running, retry, done, failed};
    for (int i = 0; i < 5; i++) {
        if (c[i] != want[i]) {
            fail_msg("%s counts: got %lld %lld %lld %lld %lld, want %lld %lld %lld %lld %lld",
                     pipeline ? pipeline : "*", (long long)c[0], (long long)c[1], (long long)c[2],
                     (long long)c[3], (long long)c[4], (long long)want[0], (long long)want[1],
                     (long long)want[2], (long long)want[3], (long long)want[4]);
        }
    }
}

/* ---- add ------------------------------------------------------------------- */

static void test_add_and_duplicates(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *s = open_ok(f->db);
    int64_t id1 = 0, id2 = 0;

    double t0 = now_s();
    assert_int_equal(
        sl_state_job_add(s, "cs", "full", "evt-1", "petitions", "{\"a\":1}", t0 + 3600, &id1, &err),
        1);
    assert_true(id1 > 0);
    /* a redelivered webhook: same key, stored once, the first job's id */
    assert_int_equal(
        sl_state_job_add(s, "cs", "incremental", "evt-1", "other", "{\"a\":2}", 0, &id2, &err), 0);
    assert_int_equal(id2, id1);
    /* the same key in another pipeline is another job */
    int64_t other = 0;
    assert_int_equal(sl_state_job_add(s, "mc", "full", "evt-1", "", "{}", 0, &other, &err), 1);
    assert_true(other != id1);
    /* no key: always stored, as NULL so UNIQUE never collides */
    int64_t n1 = add_ok(s, "cs", "", "");
    int64_t n2 = add_ok(s, "cs", NULL, NULL);
    assert_true(n1 != n2);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM jobs WHERE idem_key IS NULL"), 2);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM jobs WHERE order_key IS NULL"), 3);

    sl_job j = find_job(s, id1);
    assert_string_equal(j.pipeline, "cs");
    assert_string_equal(j.kind, "full");
    assert_string_equal(j.idem_key, "evt-1");
    assert_string_equal(j.order_key, "petitions");
    assert_string_equal(j.status, "queued");
    assert_int_equal(j.attempts, 0);
    assert_true(j.created_at >= t0 - 1 && j.created_at <= now_s() + 1);
    assert_true(j.expires_at > t0 + 3599 && j.expires_at < t0 + 3601);
    assert_true(j.not_before == 0 && j.started_at == 0 && j.finished_at == 0);
    counts_eq(s, "cs", 3, 0, 0, 0, 0);
    counts_eq(s, NULL, 4, 0, 0, 0, 0);

    /* a NULL vars is stored as an empty object */
    int64_t e = 0;
    assert_int_equal(sl_state_job_add(s, "empty", "full", "", "", NULL, 0, &e, &err), 1);
    sl_job c;
    assert_int_equal(sl_state_job_claim(s, "empty", now_s(), &c, &err), 1);
    assert_string_equal(c.vars, "{}");
    sl_job_clear(&c);
    sl_job_clear(NULL); /* no-op */

    /* bad arguments name the pipeline and the limit */
    char longkey[300];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    assert_int_equal(sl_state_job_add(s, "cs", "full", longkey, "", "{}", 0, &e, &err),
                     SL_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "pipeline 'cs'"));
    assert_non_null(strstr(err.msg, "idempotency key"));
    assert_non_null(strstr(err.msg, "255 bytes"));
    assert_non_null(strstr(err.msg, tb_where(f->db)));
    assert_int_equal(sl_state_job_add(s, "cs", "a-kind-name-that-is-far-too-long-to-keep", "", "",
                                      "{}", 0, &e, &err),
                     SL_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "kind"));
    assert_int_equal(sl_state_job_add(s, "", "full", "", "", "{}", 0, &e, &err), SL_ERR_USAGE);
    assert_non_null(strstr(err.msg, "no pipeline name"));
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM jobs"), 5);
    sl_state_close(s);
}

/* ---- claim ---------------------------------------------------------------- */

static void test_claim_order_and_fields(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *s = open_ok(f->db);
    /* The vars hold a presigned URL whose signature is also a registered
     * secret: the job needs it verbatim, so it is not redacted. */
    const char *vars = "{\"url\":\"https://b.s3.example/x.csv?X-Amz-Signature=sig0123456789\"}";
    sl_secret_register("sig0123456789");
    int64_t a1 = 0;
    assert_int_equal(sl_state_job_add(s, "A", "full", "k1", "", vars, 12345.5, &a1, &err), 1);
    int64_t b1 = add_ok(s, "B", "k1", "");
    int64_t a2 = add_ok(s, "A", "k2", "");
    int64_t a3 = add_ok(s, "A", "k3", "");

    double t0 = now_s();
    sl_job j;
    assert_int_equal(sl_state_job_claim(s, "A", t0, &j, &err), 1);
    assert_int_equal(j.id, a1);
    assert_string_equal(j.pipeline, "A");
    assert_string_equal(j.kind, "full");
    assert_string_equal(j.idem_key, "k1");
    assert_string_equal(j.status, "running");
    assert_int_equal(j.attempts, 1);
    assert_string_equal(j.vars, vars);
    assert_true(j.expires_at == 12345.5);
    assert_true(j.started_at >= t0 - 1 && j.started_at <= now_s() + 1);
    sl_job_clear(&j);
    assert_int_equal(raw_int(f->db, "SELECT attempts FROM jobs WHERE status = 'running'"), 1);

    /* pipeline filter: B's job is older than a2 but not A's */
    assert_int_equal(claim_id(s, "A", t0), a2);
    /* any pipeline: lowest id first */
    assert_int_equal(claim_id(s, NULL, t0), b1);
    assert_int_equal(claim_id(s, NULL, t0), a3);
    assert_int_equal(claim_id(s, NULL, t0), 0);
    assert_int_equal(claim_id(s, "A", t0), 0);
    counts_eq(s, "A", 0, 3, 0, 0, 0);
    counts_eq(s, "B", 0, 1, 0, 0, 0);

    assert_int_equal(sl_state_job_claim(s, "A", t0, NULL, &err), SL_ERR_USAGE);
    sl_state_close(s);
}

static void test_order_key_serialization(void **state)
{
    fixture *f = *state;
    sl_state *s = open_ok(f->db);
    double t = 1000;
    int64_t a1 = add_ok(s, "cs", "1", "table_a");
    int64_t a2 = add_ok(s, "cs", "2", "table_a");
    int64_t b1 = add_ok(s, "cs", "3", "table_b");
    int64_t n1 = add_ok(s, "cs", "4", "");
    int64_t x1 = add_ok(s, "other", "5", "table_a"); /* same key, other pipeline */

    assert_int_equal(claim_id(s, "cs", t), a1);
    /* a2 waits for a1; table_b and unordered jobs run meanwhile */
    assert_int_equal(claim_id(s, "cs", t), b1);
    assert_int_equal(claim_id(s, "cs", t), n1);
    assert_int_equal(claim_id(s, "cs", t), 0);
    /* order keys are per pipeline */
    assert_int_equal(claim_id(s, NULL, t), x1);

    /* a1 waits for a retry: a2 still may not overtake it */
    finish_ok(s, a1, "retry", t + 100, 0, "HTTP 503 from the download URL");
    assert_int_equal(claim_id(s, "cs", t), 0);
    assert_int_equal(claim_id(s, "cs", t + 99.9), 0);
    assert_int_equal(claim_id(s, "cs", t + 100), a1);
    assert_int_equal(claim_id(s, "cs", t + 100), 0);
    finish_ok(s, a1, "done", 0, 10, NULL);
    assert_int_equal(claim_id(s, "cs", t), a2);

    /* a failed job does not hold its key; re-queued, it waits for the newer
     * job of its key that is running, then runs */
    int64_t a3 = add_ok(s, "cs", "6", "table_a");
    finish_ok(s, a2, "failed", 0, 0, "bad CSV header");
    assert_int_equal(claim_id(s, "cs", t), a3);
    sl_error err = {0};
    assert_int_equal(sl_state_job_requeue_failed(s, "cs", &err), 1);
    assert_int_equal(claim_id(s, "cs", t), 0);
    finish_ok(s, a3, "done", 0, 1, NULL);
    assert_int_equal(claim_id(s, "cs", t), a2);
    sl_state_close(s);
}

static void test_retry_not_before(void **state)
{
    fixture *f = *state;
    sl_state *s = open_ok(f->db);
    int64_t id = add_ok(s, "p", "x", "");
    assert_int_equal(claim_id(s, "p", 10), id);
    finish_ok(s, id, "retry", 5000, -1, "timeout");
    sl_job j = find_job(s, id);
    assert_string_equal(j.status, "retry");
    assert_true(j.not_before == 5000);
    assert_true(j.finished_at == 0);
    assert_string_equal(j.error, "timeout");
    counts_eq(s, "p", 0, 0, 1, 0, 0);

    assert_int_equal(claim_id(s, "p", 4999.9), 0);
    assert_int_equal(claim_id(s, NULL, 4999.9), 0);
    sl_error err = {0};
    sl_job c;
    assert_int_equal(sl_state_job_claim(s, NULL, 5000, &c, &err), 1);
    assert_int_equal(c.id, id);
    assert_int_equal(c.attempts, 2);
    assert_true(c.not_before == 5000);
    sl_job_clear(&c);
    sl_state_close(s);
}

/* ---- finish --------------------------------------------------------------- */

static void test_finish_statuses(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *s = open_ok(f->db);
    int64_t d = add_ok(s, "p", "d", "");
    int64_t x = add_ok(s, "p", "x", "");
    int64_t q = add_ok(s, "p", "q", "");

    double t0 = now_s();
    assert_int_equal(claim_id(s, "p", t0), d);
    finish_ok(s, d, "done", 999, 1234, "");
    sl_job j = find_job(s, d);
    assert_string_equal(j.status, "done");
    assert_int_equal(j.rows, 1234);
    assert_int_equal(j.attempts, 1);
    assert_true(j.finished_at >= j.started_at && j.finished_at <= now_s() + 1);
    assert_true(j.not_before == 0); /* only retry keeps a time */
    assert_string_equal(j.error, "");
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM jobs WHERE error IS NULL"), 3);

    assert_int_equal(claim_id(s, "p", t0), x);
    finish_ok(s, x, "retry", t0 - 1, 7, "HTTP 502");
    assert_int_equal(claim_id(s, "p", t0), x);
    finish_ok(s, x, "failed", 0, -1, "the download URL expired");
    j = find_job(s, x);
    assert_string_equal(j.status, "failed");
    assert_int_equal(j.attempts, 2);
    assert_int_equal(j.rows, 7); /* rows < 0 kept the count */
    assert_true(j.finished_at > 0);
    assert_string_equal(j.error, "the download URL expired");

    /* handed back on shutdown: the attempt does not count, the last error stays */
    assert_int_equal(claim_id(s, "p", t0), q);
    finish_ok(s, q, "retry", t0 - 1, 0, "HTTP 429");
    assert_int_equal(claim_id(s, "p", t0), q);
    finish_ok(s, q, "queued", 0, -1, NULL);
    j = find_job(s, q);
    assert_string_equal(j.status, "queued");
    assert_int_equal(j.attempts, 1);
    assert_string_equal(j.error, "HTTP 429");
    assert_true(j.finished_at == 0);
    counts_eq(s, "p", 1, 0, 0, 1, 1);

    /* only a running job can be finished */
    assert_int_equal(sl_state_job_finish(s, d, "done", 0, 1, NULL, &err), SL_ERR_INPUT);
    assert_non_null(strstr(err.msg, "job"));
    assert_non_null(strstr(err.msg, "it is done, not running"));
    assert_int_equal(sl_state_job_finish(s, q, "failed", 0, 1, NULL, &err), SL_ERR_INPUT);
    assert_non_null(strstr(err.msg, "it is queued, not running"));
    assert_int_equal(sl_state_job_finish(s, 99999, "done", 0, 1, NULL, &err), SL_ERR_INPUT);
    assert_non_null(strstr(err.msg, "job 99999"));
    assert_non_null(strstr(err.msg, "no such job"));
    assert_non_null(strstr(err.msg, tb_where(f->db)));
    assert_int_equal(sl_state_job_finish(s, q, "running", 0, 1, NULL, &err), SL_ERR_USAGE);
    assert_non_null(strstr(err.msg, "expected done, retry, failed or queued"));
    assert_int_equal(sl_state_job_finish(s, q, NULL, 0, 1, NULL, &err), SL_ERR_USAGE);
    counts_eq(s, "p", 1, 0, 0, 1, 1);
    sl_state_close(s);
}

static void test_error_redacted_and_bounded(void **state)
{
    fixture *f = *state;
    sl_state *s = open_ok(f->db);
    sl_secret_register("hunter2-api-key");
    int64_t id = add_ok(s, "p", "r", "");
    assert_int_equal(claim_id(s, "p", 0), id);
    finish_ok(s, id, "retry", 0, 0,
              "GET https://api.example/x?key=hunter2-api-key: 401 (key hunter2-api-key)");
    sl_job j = find_job(s, id);
    assert_null(strstr(j.error, "hunter2"));
    assert_string_equal(j.error, "GET https://api.example/x?key=[redacted]: 401 (key [redacted])");
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM jobs WHERE error LIKE '%hunter2%'"), 0);

    /* a huge error is cut to 4 KB in the store, 511 bytes in sl_job */
    size_t n = 20000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'e', n);
    big[n] = '\0';
    assert_int_equal(claim_id(s, "p", 0), id);
    finish_ok(s, id, "failed", 0, 0, big);
    free(big);
    assert_int_equal(raw_int(f->db, "SELECT length(error) FROM jobs"), 4096);
    j = find_job(s, id);
    assert_int_equal(strlen(j.error), sizeof(j.error) - 1);
    sl_state_close(s);
}

/* ---- crash recovery ----------------------------------------------------------- */

/* The child opens its own store (never the parent's connection), adds a
 * job, claims it and dies. */
static void child_claims_and_dies(const char *db, const char *pipeline, int how)
{
    sl_error err = {0};
    sl_state *s = sl_state_open(db, &err);
    if (!s) {
        _exit(10);
    }
    int64_t id = 0;
    if (sl_state_job_add(s, pipeline, "full", "first", "t", "{}", 0, &id, &err) != 1) {
        _exit(11);
    }
    sl_job j;
    if (sl_state_job_claim(s, pipeline, now_s(), &j, &err) != 1 || j.id != id) {
        _exit(12);
    }
    if (how == SIGKILL) {
        raise(SIGKILL);
    }
    _exit(0); /* no close: the handle dies with the process */
}

static void check_crash(fixture *f, int how)
{
    const char *p = how == SIGKILL ? "killed" : "exited";
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        child_claims_and_dies(f->db, p, how);
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
    sl_state *s = open_ok(f->db);
    counts_eq(s, p, 0, 1, 0, 0, 0);
    /* the running job holds its order key until it is re-queued */
    int64_t later = add_ok(s, p, "later", "t");
    assert_int_equal(claim_id(s, p, now_s()), 0);

    assert_int_equal(sl_state_job_requeue_running(s, &err), 1);
    assert_int_equal(sl_state_job_requeue_running(s, &err), 0);
    counts_eq(s, p, 2, 0, 0, 0, 0);
    sl_job j;
    assert_int_equal(sl_state_job_claim(s, p, now_s(), &j, &err), 1);
    assert_string_equal(j.idem_key, "first");
    assert_int_equal(j.attempts, 2);
    assert_string_equal(j.error, "interrupted (process stopped while running)");
    int64_t id = j.id;
    sl_job_clear(&j);
    finish_ok(s, id, "done", 0, 0, NULL);
    assert_int_equal(claim_id(s, p, now_s()), later);
    finish_ok(s, later, "done", 0, 0, NULL);
    counts_eq(s, p, 0, 0, 0, 2, 0);
    sl_state_close(s);
}

static void test_requeue_running_after_crash(void **state)
{
    check_crash(*state, SIGKILL);
    check_crash(*state, 0);
}

static void test_requeue_failed(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *s = open_ok(f->db);
    int64_t a1 = add_ok(s, "A", "1", "");
    int64_t a2 = add_ok(s, "A", "2", "");
    int64_t a3 = add_ok(s, "A", "3", "");
    int64_t b1 = add_ok(s, "B", "1", "");
    for (int i = 0; i < 4; i++) {
        int64_t id = claim_id(s, NULL, 0);
        finish_ok(s, id, id == a3 ? "done" : "failed", 0, 5, "HTTP 403: link expired");
    }
    counts_eq(s, NULL, 0, 0, 0, 1, 3);

    assert_int_equal(sl_state_job_requeue_failed(s, "A", &err), 2);
    sl_job j = find_job(s, a1);
    assert_string_equal(j.status, "queued");
    assert_int_equal(j.attempts, 0);
    assert_string_equal(j.error, "");
    assert_true(j.not_before == 0 && j.finished_at == 0);
    assert_string_equal(find_job(s, a3).status, "done");
    assert_string_equal(find_job(s, b1).status, "failed");
    assert_int_equal(sl_state_job_requeue_failed(s, "A", &err), 0);
    assert_int_equal(sl_state_job_requeue_failed(s, NULL, &err), 1);
    counts_eq(s, NULL, 3, 0, 0, 1, 0);

    assert_int_equal(claim_id(s, NULL, 0), a1);
    assert_int_equal(claim_id(s, NULL, 0), a2);
    assert_int_equal(claim_id(s, NULL, 0), b1);
    sl_state_close(s);
}

/* ---- transactions ------------------------------------------------------------- */

static void test_claim_inside_transaction(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *s = open_ok(f->db);
    int64_t id = add_ok(s, "p", "1", "");

    assert_int_equal(sl_state_begin(s, &err), 0);
    assert_int_equal(claim_id(s, "p", 0), id);
    assert_int_equal(sl_state_rollback(s), 0);
    counts_eq(s, "p", 1, 0, 0, 0, 0);

    assert_int_equal(sl_state_begin(s, &err), 0);
    assert_int_equal(claim_id(s, "p", 0), id);
    finish_ok(s, id, "done", 0, 3, NULL);
    assert_int_equal(sl_state_commit(s, &err), 0);
    counts_eq(s, "p", 0, 0, 0, 1, 0);
    sl_state_close(s);
}

/* ---- concurrency ----------------------------------------------------------------- */

#define CONC_JOBS 200
#define CONC_KEYS 5
#define CONC_SLOTS (2 * CONC_KEYS) /* order keys are per pipeline: A and B */

typedef struct conc {
    const char *db;
    atomic_int claimed[CONC_JOBS + 1];
    atomic_int in_flight[CONC_SLOTS];
    atomic_llong last_id[CONC_SLOTS];
    atomic_int finished;
    atomic_int violations; /* two same-key jobs at once, or out of order */
    atomic_int errors;
    char error[SL_ERRMSG_MAX];
} conc;

static int key_slot(const sl_job *j)
{
    if (j->order_key[0] != 't') {
        return -1;
    }
    return atoi(j->order_key + 1) * 2 + (strcmp(j->pipeline, "B") == 0);
}

/* No cmocka asserts here: they cannot jump out of another thread. */
static void *claimer(void *arg)
{
    conc *c = arg;
    sl_error err = {0};
    sl_state *s = sl_state_open(c->db, &err);
    if (!s) {
        goto fail;
    }
    double deadline = now_s() + 60;
    while (atomic_load(&c->finished) < CONC_JOBS) {
        if (now_s() > deadline) {
            snprintf(err.msg, sizeof(err.msg), "timed out with %d jobs finished",
                     atomic_load(&c->finished));
            goto fail;
        }
        sl_job j;
        int rc = sl_state_job_claim(s, NULL, now_s(), &j, &err);
        if (rc < 0) {
            goto fail;
        }
        if (rc == 0) {
            usleep(200);
            continue;
        }
        if (j.id < 1 || j.id > CONC_JOBS) {
            snprintf(err.msg, sizeof(err.msg), "unexpected job id %lld", (long long)j.id);
            sl_job_clear(&j);
            goto fail;
        }
        atomic_fetch_add(&c->claimed[j.id], 1);
        int k = key_slot(&j);
        if (k >= 0) {
            if (atomic_exchange(&c->in_flight[k], 1) != 0 ||
                atomic_exchange(&c->last_id[k], j.id) > j.id) {
                atomic_fetch_add(&c->violations, 1);
            }
            usleep(50); /* give the other claimer a chance to overlap */
            atomic_store(&c->in_flight[k], 0);
        }
        int64_t id = j.id;
        sl_job_clear(&j);
        if (sl_state_job_finish(s, id, "done", 0, 1, NULL, &err) < 0) {
            goto fail;
        }
        atomic_fetch_add(&c->finished, 1);
    }
    sl_state_close(s);
    return NULL;

fail:
    if (atomic_fetch_add(&c->errors, 1) == 0) {
        snprintf(c->error, sizeof(c->error), "%s", err.msg);
    }
    /* let the other thread stop too */
    atomic_store(&c->finished, CONC_JOBS);
    sl_state_close(s);
    return NULL;
}

static void test_concurrent_claims(void **state)
{
    fixture *f = *state;
    sl_state *s = open_ok(f->db);
    conc *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->db = f->db;
    /* Half the jobs are unordered, half spread over five order keys. */
    for (int i = 1; i <= CONC_JOBS; i++) {
        char idem[32], key[16] = "";
        snprintf(idem, sizeof(idem), "evt-%d", i);
        if (i % 2 == 0) {
            snprintf(key, sizeof(key), "t%d", i % (2 * CONC_KEYS) / 2);
        }
        assert_int_equal(add_ok(s, i % 3 ? "A" : "B", idem, key), i);
    }
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, claimer, c), 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    if (atomic_load(&c->errors) != 0) {
        fail_msg("claimer failed: %s", c->error);
    }
    for (int i = 1; i <= CONC_JOBS; i++) {
        if (atomic_load(&c->claimed[i]) != 1) {
            fail_msg("job %d was claimed %d times", i, atomic_load(&c->claimed[i]));
        }
    }
    assert_int_equal(atomic_load(&c->violations), 0);
    counts_eq(s, NULL, 0, 0, 0, CONC_JOBS, 0);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM jobs WHERE attempts <> 1"), 0);
    free(c);
    sl_state_close(s);
}

/* Eight processes on eight connections (as on eight machines) claim from one
 * store at once: every job is claimed exactly once, no two jobs of one order
 * key run at the same time, and same-key jobs run in arrival order. The
 * bookkeeping lives in shared memory, so it sees every process. */
#define PROC_N 8
#define PROC_JOBS 400

typedef struct proc_conc {
    atomic_int claimed[PROC_JOBS + 1];
    atomic_int in_flight[CONC_SLOTS];
    atomic_llong last_id[CONC_SLOTS];
    atomic_int finished;
    atomic_int violations;
    atomic_int errors;
    atomic_int per_proc[PROC_N];
    char error[SL_ERRMSG_MAX + 32];
} proc_conc;

static int proc_claimer(const char *db, proc_conc *c, int me, int go)
{
    sl_error err = {0};
    char ch;
    sl_state *s = sl_state_open(db, &err);
    if (!s || read(go, &ch, 1) < 0) { /* all start together */
        goto fail;
    }
    double deadline = now_s() + 120;
    while (atomic_load(&c->finished) < PROC_JOBS) {
        if (now_s() > deadline) {
            snprintf(err.msg, sizeof(err.msg), "timed out with %d jobs finished",
                     atomic_load(&c->finished));
            goto fail;
        }
        sl_job j;
        int rc = sl_state_job_claim(s, NULL, now_s(), &j, &err);
        if (rc < 0) {
            goto fail;
        }
        if (rc == 0) {
            usleep(500);
            continue;
        }
        if (j.id < 1 || j.id > PROC_JOBS) {
            snprintf(err.msg, sizeof(err.msg), "unexpected job id %lld", (long long)j.id);
            sl_job_clear(&j);
            goto fail;
        }
        atomic_fetch_add(&c->claimed[j.id], 1);
        atomic_fetch_add(&c->per_proc[me], 1);
        int k = key_slot(&j);
        if (k >= 0) {
            if (atomic_exchange(&c->in_flight[k], 1) != 0 ||
                atomic_exchange(&c->last_id[k], j.id) > j.id) {
                atomic_fetch_add(&c->violations, 1);
            }
            usleep(100); /* give the others a chance to overlap */
            atomic_store(&c->in_flight[k], 0);
        }
        int64_t id = j.id;
        sl_job_clear(&j);
        if (sl_state_job_finish(s, id, "done", 0, 1, NULL, &err) < 0) {
            goto fail;
        }
        atomic_fetch_add(&c->finished, 1);
    }
    sl_state_close(s);
    return 0;

fail:
    if (atomic_fetch_add(&c->errors, 1) == 0) {
        snprintf(c->error, sizeof(c->error), "process %d: %s", me, err.msg);
    }
    atomic_store(&c->finished, PROC_JOBS);
    sl_state_close(s);
    return 1;
}

static void test_concurrent_claims_processes(void **state)
{
    fixture *f = *state;
    sl_state *s = open_ok(f->db);
    proc_conc *c =
        mmap(NULL, sizeof(*c), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(c != MAP_FAILED);
    memset(c, 0, sizeof(*c));
    /* Half the jobs unordered, half spread over five order keys per pipeline. */
    assert_int_equal(sl_state_begin(s, &(sl_error){0}), 0);
    for (int i = 1; i <= PROC_JOBS; i++) {
        char idem[32], key[16] = "";
        snprintf(idem, sizeof(idem), "evt-%d", i);
        if (i % 2 == 0) {
            snprintf(key, sizeof(key), "t%d", i % (2 * CONC_KEYS) / 2);
        }
        assert_int_equal(add_ok(s, i % 3 ? "A" : "B", idem, key), i);
    }
    assert_int_equal(sl_state_commit(s, &(sl_error){0}), 0);
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t kids[PROC_N];
    for (int i = 0; i < PROC_N; i++) {
        kids[i] = fork();
        assert_true(kids[i] >= 0);
        if (kids[i] == 0) {
            close(go[1]);
            _exit(proc_claimer(f->db, c, i, go[0]));
        }
    }
    close(go[0]);
    double t0 = now_s();
    close(go[1]); /* EOF starts every process */
    for (int i = 0; i < PROC_N; i++) {
        int status = 0;
        assert_int_equal(waitpid(kids[i], &status, 0), kids[i]);
        assert_true(WIFEXITED(status));
    }
    double t1 = now_s();
    if (atomic_load(&c->errors) != 0) {
        fail_msg("claimer failed: %s", c->error);
    }
    for (int i = 1; i <= PROC_JOBS; i++) {
        if (atomic_load(&c->claimed[i]) != 1) {
            fail_msg("job %d was claimed %d times", i, atomic_load(&c->claimed[i]));
        }
    }
    assert_int_equal(atomic_load(&c->violations), 0);
    counts_eq(s, NULL, 0, 0, 0, PROC_JOBS, 0);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM jobs WHERE attempts <> 1"), 0);
    char per[128] = "";
    for (int i = 0; i < PROC_N; i++) {
        size_t n = strlen(per);
        snprintf(per + n, sizeof(per) - n, "%s%d", i ? " " : "", atomic_load(&c->per_proc[i]));
    }
    print_message("jobs: %d processes claimed and finished %d jobs in %.2f s (%.0f/s); per "
                  "process: %s\n",
                  PROC_N, PROC_JOBS, t1 - t0, PROC_JOBS / (t1 - t0), per);
    munmap(c, sizeof(*c));
    sl_state_close(s);
}

/* ---- listing -------------------------------------------------------------------- */

typedef struct list_ud {
    int64_t ids[16];
    int n;
    int stop_after;
} list_ud;

static int list_cb(void *ud, const sl_job *j)
{
    list_ud *u = ud;
    u->ids[u->n++] = j->id;
    return u->stop_after && u->n >= u->stop_after ? 1 : 0;
}

static void test_listing_and_counts(void **state)
{
    fixture *f = *state;
    sl_error err = {0};
    sl_state *s = open_ok(f->db);
    int64_t a1 = add_ok(s, "A", "1", "");
    int64_t b1 = add_ok(s, "B", "1", "");
    int64_t a2 = add_ok(s, "A", "2", "");
    int64_t a3 = add_ok(s, "A", "3", "");

    list_ud u = {0};
    assert_int_equal(sl_state_jobs(s, NULL, 0, list_cb, &u, &err), 0);
    assert_int_equal(u.n, 4);
    assert_int_equal(u.ids[0], a3); /* newest first */
    assert_int_equal(u.ids[3], a1);
    memset(&u, 0, sizeof(u));
    assert_int_equal(sl_state_jobs(s, "A", 2, list_cb, &u, &err), 0);
    assert_int_equal(u.n, 2);
    assert_int_equal(u.ids[0], a3);
    assert_int_equal(u.ids[1], a2);
    memset(&u, 0, sizeof(u));
    u.stop_after = 1;
    assert_int_equal(sl_state_jobs(s, "B", 0, list_cb, &u, &err), 0);
    assert_int_equal(u.n, 1);
    assert_int_equal(u.ids[0], b1);
    assert_int_equal(sl_state_jobs(s, "", 0, list_cb, &u, &err), SL_ERR_USAGE);

    assert_int_equal(claim_id(s, "A", 0), a1);
    assert_int_equal(claim_id(s, "A", 0), a2);
    assert_int_equal(claim_id(s, "A", 0), a3);
    finish_ok(s, a1, "done", 0, 1, NULL);
    finish_ok(s, a2, "retry", 1e12, 1, "later");
    counts_eq(s, "A", 0, 1, 1, 1, 0);
    counts_eq(s, "B", 1, 0, 0, 0, 0);
    counts_eq(s, "nobody", 0, 0, 0, 0, 0);
    counts_eq(s, NULL, 1, 1, 1, 1, 0);
    sl_state_close(s);
}

/* ---- migration ------------------------------------------------------------------ */

/* Schema version 1 exactly as the first release wrote it. */
static const char *const schema_v1 =
    "PRAGMA application_id = 1397511497; PRAGMA user_version = 1;"
    "CREATE TABLE runs(id INTEGER PRIMARY KEY, pipeline TEXT NOT NULL,"
    "  input TEXT NOT NULL DEFAULT '', status TEXT NOT NULL"
    "    CHECK (status IN ('running','ok','partial','failed','interrupted')),"
    "  started_at REAL NOT NULL, finished_at REAL, read INTEGER NOT NULL DEFAULT 0,"
    "  sent INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,"
    "  skipped INTEGER NOT NULL DEFAULT 0, requests INTEGER NOT NULL DEFAULT 0,"
    "  retries INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX runs_pipeline_id ON runs(pipeline, id);"
    "CREATE TABLE kv(pipeline TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
    "  updated_at REAL NOT NULL, PRIMARY KEY (pipeline, key));"
    "CREATE TABLE dead_letters(id INTEGER PRIMARY KEY, pipeline TEXT NOT NULL, run_id INTEGER,"
    "  stage INTEGER NOT NULL, line INTEGER NOT NULL DEFAULT 0, record TEXT NOT NULL,"
    "  error TEXT NOT NULL, response TEXT NOT NULL DEFAULT '',"
    "  attempts INTEGER NOT NULL DEFAULT 1, created_at REAL NOT NULL,"
    "  updated_at REAL NOT NULL);"
    "CREATE INDEX dead_letters_pipeline_id ON dead_letters(pipeline, id);"
    "CREATE TABLE jobs(id INTEGER PRIMARY KEY, pipeline TEXT NOT NULL, kind TEXT NOT NULL,"
    "  idem_key TEXT, payload TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
    "  not_before REAL, created_at REAL NOT NULL, started_at REAL, finished_at REAL,"
    "  rows INTEGER, error TEXT, UNIQUE (pipeline, idem_key));"
    "INSERT INTO jobs(pipeline, kind, idem_key, payload, status, created_at)"
    "  VALUES ('cs', 'full', 'old-1', '{\"v\":1}', 'queued', 100);";

static void test_migration_from_v1(void **state)
{
    TB_SKIP_ON_PG("an SQLite file of schema version 1; the Postgres schema starts at the "
                  "current layout");
    fixture *f = *state;
    sl_error err = {0};
    raw_exec(f->db, schema_v1);
    assert_int_equal(0x534C5549, 1397511497);

    sl_state *s = open_ok(f->db);
    assert_int_equal(raw_int(f->db, "PRAGMA user_version"), 4); /* migrated through every version */
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                                    "name IN ('jobs_pipeline_status_id', "
                                    "'jobs_pipeline_order_key_status_id', "
                                    "'jobs_runnable_pipeline_id', 'jobs_runnable_id')"),
                     4);
    /* the old job survives and runs */
    int64_t dup = 0;
    assert_int_equal(sl_state_job_add(s, "cs", "full", "old-1", "", "{}", 0, &dup, &err), 0);
    sl_job j;
    assert_int_equal(sl_state_job_claim(s, "cs", 0, &j, &err), 1);
    assert_int_equal(j.id, dup);
    assert_string_equal(j.vars, "{\"v\":1}");
    assert_string_equal(j.order_key, "");
    assert_true(j.expires_at == 0);
    sl_job_clear(&j);
    sl_state_close(s);
}

int main(void)
{
    tb_announce("test_jobs");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_and_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_order_and_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order_key_serialization, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_not_before, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finish_statuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_redacted_and_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requeue_running_after_crash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requeue_failed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_inside_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_claims, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_claims_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listing_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_from_v1, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
