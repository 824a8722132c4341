/* `sluice serve`: webhook routes -> durable jobs -> job workers, and
 * scheduled runs.
 *
 * A webhook is answered 2xx only after its job row is committed to the state
 * store; the work happens afterwards on worker threads. Jobs survive
 * restarts: at start every job left `running` by a dead process goes back to
 * the queue. A failed attempt is retried with backoff until the job's
 * download URL would have expired; data errors (rows the load refused) fail
 * the job at once, since retrying cannot fix them.
 *
 * A pipeline with a `schedule:` gets a scheduler thread that runs it (the
 * same sl_run_pipeline call as `sluice run`) at each slot. The thread runs
 * one run at a time, so runs never stack: slots that pass while a run is
 * still going are skipped and logged. The last slot run is kept in the
 * state store (kv "schedule.last_slot"), so slots missed while no server
 * was running are run once at start, not once per slot. */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/ctx.h"
#include "util/metrics.h"
#include "engine/run.h"
#include "core/serve.h"
#include "net/server.h"
#include "sluice/log.h"
#include "util/retry.h"
#include "util/schedule.h"

typedef struct route_ctx {
    sl_pipeline_cfg *p;
    sl_state *st;
    void *trigger;
    sl_ctx *ctx;
    pthread_mutex_t *wake_mu;
    pthread_cond_t *wake_cv;
} route_ctx;

typedef struct worker {
    pthread_t th;
    sl_config *cfg;
    sl_pipeline_cfg *p;
    sl_state *st;
    volatile sig_atomic_t *stop;
    pthread_mutex_t *wake_mu;
    pthread_cond_t *wake_cv;
    int once;     /* run what is runnable, then return (sluice retry) */
    uint64_t rng; /* retry jitter, seeded per worker */
} worker;

static double now_unix(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_webhook(void *ud, const sl_webhook_req *req, sl_server_resp *resp)
{
    route_ctx *rc = ud;
    sl_job_spec job;
    memset(&job, 0, sizeof(job));
    sl_buf_init(&job.vars, 1 << 20);
    sl_buf answer = {0};
    int status = rc->p->trigger_plugin->receive(rc->trigger, req, &job, &answer);
    char labels[300];
    const char *result = "rejected";
    if (job.accept && status >= 200 && status < 300) {
        int64_t id = 0;
        sl_error err = {0};
        int rc_add = sl_state_job_add(rc->st, rc->p->name, job.kind, job.idem_key, job.order_key,
                                      sl_buf_cstr(&job.vars), job.expires_at, &id, &err);
        sl_buf_reset(&answer);
        if (rc_add < 0) {
            /* not durable: the sender must retry later */
            sl_error_log(sl_ctx_name(rc->ctx), "webhook from %s not stored: %s", req->remote,
                         err.msg);
            status = 503;
            sl_buf_puts(&answer, "{\"status\":\"error\",\"reason\":\"the job could not be stored; "
                                 "retry later\"}");
            result = "error";
        } else if (rc_add == 0) {
            status = 200;
            sl_buf_printf(&answer, "{\"status\":\"duplicate\",\"job\":%" PRId64 "}", id);
            sl_info(sl_ctx_name(rc->ctx),
                    "webhook %s for %s redelivered: job %" PRId64 " already stored", job.idem_key,
                    job.order_key, id);
            result = "duplicate";
        } else {
            sl_buf_printf(&answer, "{\"status\":\"queued\",\"job\":%" PRId64 "}", id);
            sl_info(sl_ctx_name(rc->ctx), "job %" PRId64 " queued: %s export of %s (jid %s)", id,
                    job.kind, job.order_key, job.idem_key);
            result = "queued";
            pthread_mutex_lock(rc->wake_mu);
            pthread_cond_broadcast(rc->wake_cv);
            pthread_mutex_unlock(rc->wake_mu);
        }
    } else if (status >= 200 && status < 300) {
        result = "skipped";
    } else {
        sl_warn(sl_ctx_name(rc->ctx), "webhook from %s refused with %d: %s", req->remote, status,
                sl_buf_cstr(&answer));
    }
    snprintf(labels, sizeof(labels), "pipeline=\"%s\",result=\"%s\"", rc->p->name, result);
    sl_metric_add("sluice_webhooks_total", labels, 1);
    resp->status = status;
    snprintf(resp->content_type, sizeof(resp->content_type), "application/json");
    sl_buf_append(&resp->body, sl_buf_cstr(&answer), answer.len);
    sl_buf_free(&answer);
    sl_buf_free(&job.vars);
}

/* Outcomes the workers could not write to the state store (a full disk):
 * while any is pending, /healthz answers 503 with the reason. */
static pthread_mutex_t unrecorded_mu = PTHREAD_MUTEX_INITIALIZER;
static int unrecorded;
static char unrecorded_why[SL_ERRMSG_MAX + 256];

/* Bounded retries of one job-status write: 5 tries, 0.1 s doubling. */
#define RECORD_TRIES 5
#define RECORD_BACKOFF_US 100000

static int record_try(worker *w, int64_t id, const char *status, double not_before, int64_t rows,
                      const char *error, sl_error *e)
{
    useconds_t wait = RECORD_BACKOFF_US;
    for (int i = 0; i < RECORD_TRIES; i++) {
        if (sl_state_job_finish(w->st, id, status, not_before, rows, error, e) >= 0) {
            return 0;
        }
        if (i + 1 < RECORD_TRIES && !(w->stop && *w->stop)) {
            usleep(wait);
            wait *= 2;
        }
    }
    return -1;
}

/* Record a job's outcome. A write that still fails after the retries leaves
 * the job `running` in the store, which would hold its table's queue until
 * a restart: the worker then keeps the job and, before it takes another,
 * hands it back to the queue (status queued) once the store accepts
 * writes again; meanwhile /healthz reports it. */
static void record(worker *w, sl_job *job, const char *status, double not_before, int64_t rows,
                   const char *error)
{
    sl_error e = {0};
    if (record_try(w, job->id, status, not_before, rows, error, &e) == 0) {
        return;
    }
    sl_error_log(w->p->name,
                 "job %" PRId64 ": cannot record its outcome (%s) after %d tries: %s; it goes "
                 "back to the queue once the state store accepts writes",
                 job->id, status, RECORD_TRIES, e.msg);
    pthread_mutex_lock(&unrecorded_mu);
    unrecorded++;
    snprintf(unrecorded_why, sizeof(unrecorded_why),
             "job worker of %s cannot record job outcomes: %s", w->p->name, e.msg);
    pthread_mutex_unlock(&unrecorded_mu);
    /* hand it back; a done load runs again (loads are idempotent per job:
     * replace, or upsert on the key) */
    while (!(w->stop && *w->stop)) {
        if (record_try(w, job->id, "queued", 0, -1, "its outcome could not be recorded", &e) == 0) {
            sl_warn(w->p->name, "job %" PRId64 " handed back to the queue", job->id);
            break;
        }
        sleep(1);
    }
    pthread_mutex_lock(&unrecorded_mu);
    unrecorded--;
    pthread_mutex_unlock(&unrecorded_mu);
}

/* Run one claimed job to its end and record the outcome. */
static void run_job(worker *w, sl_job *job)
{
    const char *pn = w->p->name;
    char labels[300];
    sl_buf errors = {0};
    sl_pipeline_cfg *inst = sl_config_instantiate(w->cfg, w->p, job->vars, &errors);
    if (!inst) {
        /* the job's variables do not fit the config: no retry can fix that */
        sl_error_log(pn, "job %" PRId64 " failed: %s", job->id, sl_buf_cstr(&errors));
        record(w, job, "failed", 0, 0, sl_buf_cstr(&errors));
        snprintf(labels, sizeof(labels), "pipeline=\"%s\",result=\"failed\"", pn);
        sl_metric_add("sluice_jobs_finished_total", labels, 1);
        sl_buf_free(&errors);
        return;
    }
    sl_buf_free(&errors);
    sl_info(pn, "job %" PRId64 " started: %s export of %s (attempt %d)", job->id, job->kind,
            job->order_key, job->attempts);

    sl_run_opts o = {0};
    o.mode = SL_RUN_JOB;
    /* A job is a delivery its sender asked for (its own idempotency key
     * decides duplicates), and one pipeline's jobs write to different
     * destinations ({{table}}): content delivered by an earlier job is not a
     * reason to skip this one. */
    o.again = 1;
    o.stop = w->stop;
    sl_run_result res;
    int rc = sl_run_pipeline(w->cfg, inst, w->st, &o, &res);
    sl_pipeline_cfg_free(inst);

    const char *outcome;
    if (rc == SL_EXIT_OK || rc == SL_EXIT_PARTIAL) {
        outcome = "done";
        record(w, job, "done", 0, (int64_t)res.counts.sent,
               rc == SL_EXIT_PARTIAL ? "some records were dead-lettered" : NULL);
        sl_info(pn, "job %" PRId64 " done: %" PRIu64 " rows into %s in %.2fs", job->id,
                res.counts.sent, job->order_key, res.duration_s);
        snprintf(labels, sizeof(labels), "pipeline=\"%s\"", pn);
        sl_metric_add("sluice_rows_loaded_total", labels, (double)res.counts.sent);
    } else if (w->stop && *w->stop) {
        outcome = "requeued";
        record(w, job, "queued", 0, 0, "interrupted by shutdown");
        sl_info(pn, "job %" PRId64 " handed back to the queue (shutting down)", job->id);
    } else {
        double now = now_unix();
        /* the shared retry rule with half the wait random: workers that
         * failed together do not retry together, and a job never comes back
         * sooner than half its backoff (full jitter could retry a 15 s
         * backoff after a few milliseconds) */
        sl_retry_policy rp = {.max_attempts = INT32_MAX,
                              .base_ms = w->p->job_backoff_ms,
                              .max_ms = w->p->job_max_backoff_ms,
                              .jitter = 0.5};
        double wait = (double)sl_retry_delay_ms(&rp, job->attempts, -1, &w->rng) / 1000.0;
        /* bad data, a refused URL or a config problem: retrying cannot help */
        int data_error = res.counts.failed > 0 || res.error_code == SL_ERR_INPUT ||
                         res.error_code == SL_ERR_CONFIG || res.error_code == SL_ERR_LIMIT;
        if (data_error || (job->expires_at > 0 && now + wait >= job->expires_at)) {
            outcome = "failed";
            record(w, job, "failed", 0, 0, res.error);
            sl_error_log(pn, "job %" PRId64 " failed%s: %s", job->id,
                         data_error ? " (not retried: retrying cannot fix it)"
                                    : " (its URL has expired)",
                         res.error);
        } else {
            outcome = "retry";
            record(w, job, "retry", now + wait, 0, res.error);
            sl_warn(pn, "job %" PRId64 " attempt %d failed, retry in %.1fs: %s", job->id,
                    job->attempts, wait, res.error);
        }
    }
    snprintf(labels, sizeof(labels), "pipeline=\"%s\",result=\"%s\"", pn, outcome);
    sl_metric_add("sluice_jobs_finished_total", labels, 1);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    if (!w->rng) {
        w->rng = sl_retry_seed(w);
    }
    while (!(w->stop && *w->stop)) {
        sl_job job;
        memset(&job, 0, sizeof(job));
        sl_error err = {0};
        int got = sl_state_job_claim(w->st, w->p->name, now_unix(), &job, &err);
        if (got < 0) {
            sl_error_log(w->p->name, "cannot claim a job: %s", err.msg);
        }
        if (got == 1) {
            run_job(w, &job);
            sl_job_clear(&job);
            continue;
        }
        if (w->once) {
            break;
        }
        /* nothing runnable: sleep until a webhook arrives or a retry is due */
        pthread_mutex_lock(w->wake_mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 500 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(w->wake_cv, w->wake_mu, &ts);
        pthread_mutex_unlock(w->wake_mu);
    }
    return NULL;
}

static const char *const job_states[5] = {"queued", "running", "retry", "done", "failed"};

static void collect_jobs(void *ud)
{
    sl_state *st = ud;
    int64_t c[5];
    sl_error err;
    if (sl_state_job_counts(st, NULL, c, &err) < 0) {
        return;
    }
    for (int i = 0; i < 5; i++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "state=\"%s\"", job_states[i]);
        sl_metric_set("sluice_jobs", labels, (double)c[i]);
    }
}

static int health(void *ud, sl_buf *detail)
{
    sl_state *st = ud;
    pthread_mutex_lock(&unrecorded_mu);
    int bad = unrecorded > 0;
    if (bad) {
        sl_buf_puts(detail, unrecorded_why);
    }
    pthread_mutex_unlock(&unrecorded_mu);
    if (bad) {
        return 0;
    }
    int64_t c[5];
    sl_error err;
    if (sl_state_job_counts(st, NULL, c, &err) < 0) {
        sl_buf_printf(detail, "state store: %s", err.msg);
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------ schedules */

#define LAST_SLOT_KEY "schedule.last_slot"

typedef struct scheduled {
    pthread_t th;
    sl_config *cfg;
    sl_pipeline_cfg *p;
    sl_state *st;
    sl_schedule *sched;
    volatile sig_atomic_t *stop;
    pthread_mutex_t *wake_mu;
    pthread_cond_t *wake_cv;
} scheduled;

/* 1 found (*slot set), 0 none, <0 error. */
static int last_slot_get(sl_state *st, const char *pipeline, int64_t *slot, sl_error *err)
{
    sl_buf v = {0};
    int rc = sl_state_kv_get(st, pipeline, LAST_SLOT_KEY, &v, err);
    if (rc == 1) {
        long long n = 0;
        if (sscanf(sl_buf_cstr(&v), "{\"slot\":%lld}", &n) == 1) {
            *slot = (int64_t)n;
        } else {
            rc = 0; /* unreadable: as if never run */
        }
    }
    sl_buf_free(&v);
    return rc;
}

static int last_slot_set(sl_state *st, const char *pipeline, int64_t slot, sl_error *err)
{
    char v[64];
    int n = snprintf(v, sizeof(v), "{\"slot\":%" PRId64 "}", slot);
    return sl_state_kv_set(st, pipeline, LAST_SLOT_KEY, v, (size_t)n, err);
}

int sl_schedule_info_get(const sl_pipeline_cfg *p, sl_state *st, int64_t now, sl_schedule_info *out,
                         sl_error *err)
{
    memset(out, 0, sizeof(*out));
    out->last_slot = -1;
    out->next_run = -1;
    sl_schedule *s = sl_schedule_parse(p->schedule, err);
    if (!s) {
        return SL_ERR_CONFIG;
    }
    snprintf(out->zone, sizeof(out->zone), "%s", sl_schedule_zone(s));
    int rc = st ? last_slot_get(st, p->name, &out->last_slot, err) : 0;
    if (rc >= 0) {
        if (rc == 1 && sl_schedule_next_after(s, out->last_slot) <= now &&
            sl_schedule_next_after(s, out->last_slot) >= 0) {
            out->catch_up = 1;
            out->next_run = now;
        } else {
            out->next_run = sl_schedule_next_after(s, now);
        }
        if (out->next_run >= 0) {
            sl_schedule_format(s, out->next_run, out->next_local, sizeof(out->next_local));
        }
        rc = 0;
    }
    sl_schedule_free(s);
    return rc;
}

static void set_next_gauge(const sl_pipeline_cfg *p, int64_t next)
{
    char labels[160];
    snprintf(labels, sizeof(labels), "pipeline=\"%s\"", p->name);
    sl_metric_set("sluice_schedule_next_run_timestamp_seconds", labels, (double)next);
}

/* Sleep until `until` (unix seconds) or a stop. 1: time reached, 0: stopping. */
static int sleep_until(scheduled *sc, int64_t until)
{
    while (!*sc->stop) {
        double now = now_unix();
        if (now >= (double)until) {
            return 1;
        }
        /* short waits: a change of the wall clock is noticed within a second */
        double wait = (double)until - now;
        if (wait > 1.0) {
            wait = 1.0;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long ns = ts.tv_nsec + (long)(wait * 1e9);
        ts.tv_sec += ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        pthread_mutex_lock(sc->wake_mu);
        if (!*sc->stop) {
            pthread_cond_timedwait(sc->wake_cv, sc->wake_mu, &ts);
        }
        pthread_mutex_unlock(sc->wake_mu);
    }
    return 0;
}

/* One scheduled run. slot: the slot it stands for (recorded as the last
 * slot run unless the run was interrupted by shutdown, so that a restart
 * resumes it). */
static void run_slot(scheduled *sc, int64_t slot, const char *reason)
{
    const char *pn = sc->p->name;
    char when[64], labels[300];
    sl_schedule_format(sc->sched, slot, when, sizeof(when));
    sl_info(pn, "scheduled run (%s %s) started", reason, when);
    sl_run_opts o = {0};
    o.mode = SL_RUN_NORMAL;
    o.stop = sc->stop;
    sl_run_result res;
    memset(&res, 0, sizeof(res));
    int rc = sl_run_pipeline(sc->cfg, sc->p, sc->st, &o, &res);
    const char *result;
    int record = 1;
    if (rc == SL_EXIT_LOCKED) {
        result = "locked";
        sl_warn(pn,
                "scheduled run (%s %s) skipped: another run of the pipeline holds its lease: %s",
                reason, when, res.error);
    } else if (rc == SL_EXIT_OK && strcmp(res.status, "skipped") == 0) {
        result = "skipped"; /* nothing to do: the input was already delivered */
        sl_info(pn, "scheduled run (%s %s) had nothing to do: %s", reason, when, res.error);
    } else if (rc == SL_EXIT_OK || rc == SL_EXIT_PARTIAL) {
        result = rc == SL_EXIT_OK ? "ok" : "partial";
        sl_info(pn,
                "scheduled run (%s %s) %s: %" PRIu64 " read, %" PRIu64 " sent, %" PRIu64
                " dead-lettered in %.2fs",
                reason, when, result, res.counts.read, res.counts.sent, res.counts.failed,
                res.duration_s);
    } else if (*sc->stop) {
        result = "interrupted";
        record = 0;
        sl_info(pn,
                "scheduled run (%s %s) interrupted by shutdown; progress is saved and the "
                "next start resumes it",
                reason, when);
    } else {
        result = "failed";
        sl_error_log(pn, "scheduled run (%s %s) failed: %s", reason, when, res.error);
    }
    if (record) {
        sl_error err = {0};
        if (last_slot_set(sc->st, pn, slot, &err) < 0) {
            sl_error_log(pn, "cannot record the scheduled slot %s: %s", when, err.msg);
        }
    }
    snprintf(labels, sizeof(labels), "pipeline=\"%s\",reason=\"%s\",result=\"%s\"", pn, reason,
             result);
    sl_metric_add("sluice_scheduled_runs_total", labels, 1);
}

static void *scheduler_main(void *arg)
{
    scheduled *sc = arg;
    const char *pn = sc->p->name;
    char when[64], labels[200];
    snprintf(labels, sizeof(labels), "pipeline=\"%s\"", pn);
    sl_metric_add("sluice_schedule_slots_skipped_total", labels, 0);

    int64_t now = (int64_t)now_unix(), last = 0;
    sl_error err = {0};
    int have = last_slot_get(sc->st, pn, &last, &err);
    if (have < 0) {
        sl_error_log(pn, "cannot read the last scheduled slot (missed runs are not caught up): %s",
                     err.msg);
    }
    int64_t first_missed = have == 1 ? sl_schedule_next_after(sc->sched, last) : -1;
    if (first_missed >= 0 && first_missed <= now && !*sc->stop) {
        int64_t n = 0;
        for (int64_t t = first_missed; t >= 0 && t <= now && n < 100000;
             t = sl_schedule_next_after(sc->sched, t)) {
            n++;
        }
        sl_schedule_format(sc->sched, first_missed, when, sizeof(when));
        sl_warn(pn,
                "%s%" PRId64 " scheduled slot(s) missed while no server was running (first %s): "
                "running once now",
                n >= 100000 ? "over " : "", n, when);
        set_next_gauge(sc->p, now);
        run_slot(sc, now, "catch-up");
    }
    int64_t next = sl_schedule_next_after(sc->sched, (int64_t)now_unix());
    while (!*sc->stop && next >= 0) {
        set_next_gauge(sc->p, next);
        sl_schedule_format(sc->sched, next, when, sizeof(when));
        sl_debug(pn, "next scheduled run at %s", when);
        if (!sleep_until(sc, next)) {
            break;
        }
        set_next_gauge(sc->p, sl_schedule_next_after(sc->sched, next));
        run_slot(sc, next, "slot");
        /* slots that came due while the run was going are skipped, not stacked */
        int64_t done = (int64_t)now_unix(), skipped = 0;
        int64_t t = sl_schedule_next_after(sc->sched, next);
        for (; t >= 0 && t <= done; t = sl_schedule_next_after(sc->sched, t)) {
            if (++skipped >= 100000) {
                break;
            }
        }
        if (skipped > 0 && !*sc->stop) {
            sl_warn(pn, "%" PRId64 " scheduled slot(s) skipped: the previous run was still going",
                    skipped);
            sl_metric_add("sluice_schedule_slots_skipped_total", labels, (double)skipped);
        }
        next = t >= 0 && t > done ? t : sl_schedule_next_after(sc->sched, done);
    }
    if (next < 0 && !*sc->stop) {
        sl_warn(pn, "schedule '%s' has no further slots", sc->p->schedule);
    }
    return NULL;
}

int sl_jobs_run_pending(sl_config *cfg, sl_pipeline_cfg *p, sl_state *st,
                        volatile sig_atomic_t *stop)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    worker w = {0};
    w.cfg = cfg;
    w.p = p;
    w.st = st;
    w.stop = stop;
    w.wake_mu = &mu;
    w.wake_cv = &cv;
    w.once = 1;
    worker_main(&w);
    return 0;
}

int sl_serve(sl_config *cfg, sl_state *st, const char *listen, volatile sig_atomic_t *stop)
{
    int code = SL_EXIT_FAILED;
    sl_error err = {0};
    pthread_mutex_t wake_mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t wake_cv = PTHREAD_COND_INITIALIZER;
    route_ctx *routes = calloc(cfg->npipelines + 1, sizeof(*routes));
    worker *workers = NULL;
    scheduled *scheds = calloc(cfg->npipelines + 1, sizeof(*scheds));
    size_t nworkers = 0, nroutes = 0, nscheds = 0, nsched_threads = 0;
    sl_server *srv = NULL;

    sl_metric_declare("sluice_webhooks_total", SL_METRIC_COUNTER,
                      "Webhook requests by pipeline and result (queued, duplicate, skipped, "
                      "rejected, error).");
    sl_metric_declare("sluice_jobs", SL_METRIC_GAUGE, "Jobs in the state store by state.");
    sl_metric_declare("sluice_jobs_finished_total", SL_METRIC_COUNTER,
                      "Job attempts by pipeline and outcome.");
    sl_metric_declare("sluice_rows_loaded_total", SL_METRIC_COUNTER,
                      "Records delivered by jobs, by pipeline.");
    sl_metric_declare(
        "sluice_scheduled_runs_total", SL_METRIC_COUNTER,
        "Scheduled runs by pipeline, reason (slot, catch-up) and result (ok, partial, "
        "failed, locked, interrupted).");
    sl_metric_declare("sluice_schedule_slots_skipped_total", SL_METRIC_COUNTER,
                      "Scheduled slots skipped because the previous run was still going.");
    sl_metric_declare("sluice_schedule_next_run_timestamp_seconds", SL_METRIC_GAUGE,
                      "When the next scheduled run of a pipeline is due (unix seconds).");
    sl_metrics_add_collector(collect_jobs, st);

    const char *addr = listen ? listen : cfg->serve_listen;
    srv = sl_server_new(addr, cfg->serve_threads, &err);
    if (!routes || !scheds || !srv) {
        if (!err.msg[0]) {
            sl_error_set(&err, SL_ERR_NOMEM, "out of memory");
        }
        goto out;
    }
    sl_server_set_health(srv, health, st);

    size_t total_workers = 0;
    for (size_t i = 0; i < cfg->npipelines; i++) {
        sl_pipeline_cfg *p = &cfg->pipelines[i];
        if (!p->trigger_plugin) {
            continue;
        }
        route_ctx *rc = &routes[nroutes];
        rc->p = p;
        rc->st = st;
        rc->wake_mu = &wake_mu;
        rc->wake_cv = &wake_cv;
        rc->ctx = sl_ctx_new(p->name, "trigger", p->trigger.type, st, 0, stop);
        if (!rc->ctx || p->trigger_plugin->init(&rc->trigger, p->trigger.opts, rc->ctx, &err) < 0) {
            sl_error_prefix(&err, "%s", rc->ctx ? sl_ctx_name(rc->ctx) : p->name);
            goto out;
        }
        nroutes++;
        char method[16] = "POST";
        const char *route = p->trigger_plugin->route(rc->trigger);
        const char *sp = strchr(route, ' ');
        const char *path = route;
        if (sp) {
            snprintf(method, sizeof(method), "%.*s", (int)(sp - route), route);
            path = sp + 1;
        }
        if (sl_server_add_route(srv, method, path, p->trigger_plugin->max_body(rc->trigger),
                                on_webhook, rc, &err) < 0) {
            goto out;
        }
        sl_info("serve", "%s: %s %s -> jobs (%d workers)", p->name, method, path, p->workers);
        total_workers += (size_t)p->workers;
    }
    for (size_t i = 0; i < cfg->npipelines; i++) {
        sl_pipeline_cfg *p = &cfg->pipelines[i];
        if (!p->schedule || p->trigger_plugin) {
            continue;
        }
        scheduled *sc = &scheds[nscheds];
        sc->cfg = cfg;
        sc->p = p;
        sc->st = st;
        sc->stop = stop;
        sc->wake_mu = &wake_mu;
        sc->wake_cv = &wake_cv;
        sc->sched = sl_schedule_parse(p->schedule, &err);
        if (!sc->sched) {
            sl_error_prefix(&err, "%s: schedule '%s'", p->name, p->schedule);
            code = SL_EXIT_CONFIG;
            goto out;
        }
        nscheds++;
        char when[64];
        int64_t next = sl_schedule_next_after(sc->sched, (int64_t)now_unix());
        sl_info("serve", "%s: scheduled '%s' (%s); next slot %s", p->name, p->schedule,
                sl_schedule_zone(sc->sched),
                next >= 0 ? sl_schedule_format(sc->sched, next, when, sizeof(when)) : "none");
    }
    if (nroutes == 0 && nscheds == 0) {
        sl_error_set(&err, SL_ERR_CONFIG,
                     "%s: no pipeline has a `trigger:` or a `schedule:`, so there is nothing to "
                     "serve",
                     cfg->path);
        code = SL_EXIT_CONFIG;
        goto out;
    }

    int n = sl_state_job_requeue_running(st, &err);
    if (n < 0) {
        goto out;
    }
    if (n > 0) {
        sl_warn("serve", "%d job(s) were running when the last process stopped: queued again", n);
    }

    if (sl_server_start(srv, &err) < 0) {
        goto out;
    }
    sl_info("serve", "listening on %s (port %d); GET /healthz, GET /metrics", addr,
            sl_server_port(srv));

    workers = calloc(total_workers + 1, sizeof(*workers));
    if (!workers) {
        sl_error_set(&err, SL_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t r = 0; r < nroutes; r++) {
        for (int k = 0; k < routes[r].p->workers; k++) {
            worker *w = &workers[nworkers];
            w->cfg = cfg;
            w->p = routes[r].p;
            w->st = st;
            w->stop = stop;
            w->wake_mu = &wake_mu;
            w->wake_cv = &wake_cv;
            if (pthread_create(&w->th, NULL, worker_main, w) != 0) {
                sl_error_set(&err, SL_ERR, "cannot start a job worker");
                goto out;
            }
            nworkers++;
        }
    }

    for (size_t i = 0; i < nscheds; i++) {
        if (pthread_create(&scheds[i].th, NULL, scheduler_main, &scheds[i]) != 0) {
            sl_error_set(&err, SL_ERR, "cannot start the scheduler of %s", scheds[i].p->name);
            goto out;
        }
        nsched_threads++;
    }

    while (!*stop) {
        usleep(100 * 1000);
    }
    sl_info("serve", "shutting down: no new webhooks; running jobs are handed back; running "
                     "scheduled runs save their progress");
    code = SL_EXIT_OK;

out:
    if (srv) {
        sl_server_stop(srv);
    }
    if (nworkers || nsched_threads) {
        *stop = 1;
        pthread_mutex_lock(&wake_mu);
        pthread_cond_broadcast(&wake_cv);
        pthread_mutex_unlock(&wake_mu);
        for (size_t i = 0; i < nworkers; i++) {
            pthread_join(workers[i].th, NULL);
        }
        for (size_t i = 0; i < nsched_threads; i++) {
            pthread_join(scheds[i].th, NULL);
        }
    }
    for (size_t i = 0; scheds && i < nscheds; i++) {
        sl_schedule_free(scheds[i].sched);
    }
    free(scheds);
    if (code != SL_EXIT_OK && err.msg[0]) {
        fprintf(stderr, "sluice: serve: %s\n", err.msg);
    }
    sl_server_free(srv);
    for (size_t r = 0; r < nroutes; r++) {
        routes[r].p->trigger_plugin->destroy(routes[r].trigger);
    }
    for (size_t r = 0; routes && r <= nroutes && r < cfg->npipelines + 1; r++) {
        sl_ctx_free(routes[r].ctx);
    }
    free(routes);
    free(workers);
    return code;
}
