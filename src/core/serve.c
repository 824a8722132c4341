/* `sluice serve`: webhook routes -> durable jobs -> job workers.
 *
 * A webhook is answered 2xx only after its job row is committed to the state
 * store; the work happens afterwards on worker threads. Jobs survive
 * restarts: at start every job left `running` by a dead process goes back to
 * the queue. A failed attempt is retried with backoff until the job's
 * download URL would have expired; data errors (rows the load refused) fail
 * the job at once, since retrying cannot fix them. */
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
        sl_error e;
        sl_state_job_finish(w->st, job->id, "failed", 0, 0, sl_buf_cstr(&errors), &e);
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

    sl_error e = {0};
    const char *outcome;
    if (rc == SL_EXIT_OK || rc == SL_EXIT_PARTIAL) {
        outcome = "done";
        sl_state_job_finish(w->st, job->id, "done", 0, (int64_t)res.counts.sent,
                            rc == SL_EXIT_PARTIAL ? "some records were dead-lettered" : NULL, &e);
        sl_info(pn, "job %" PRId64 " done: %" PRIu64 " rows into %s in %.2fs", job->id,
                res.counts.sent, job->order_key, res.duration_s);
        snprintf(labels, sizeof(labels), "pipeline=\"%s\"", pn);
        sl_metric_add("sluice_rows_loaded_total", labels, (double)res.counts.sent);
    } else if (w->stop && *w->stop) {
        outcome = "requeued";
        sl_state_job_finish(w->st, job->id, "queued", 0, 0, "interrupted by shutdown", &e);
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
            sl_state_job_finish(w->st, job->id, "failed", 0, 0, res.error, &e);
            sl_error_log(pn, "job %" PRId64 " failed%s: %s", job->id,
                         data_error ? " (not retried: retrying cannot fix it)"
                                    : " (its URL has expired)",
                         res.error);
        } else {
            outcome = "retry";
            sl_state_job_finish(w->st, job->id, "retry", now + wait, 0, res.error, &e);
            sl_warn(pn, "job %" PRId64 " attempt %d failed, retry in %.1fs: %s", job->id,
                    job->attempts, wait, res.error);
        }
    }
    if (e.msg[0]) {
        sl_error_log(pn, "job %" PRId64 ": %s", job->id, e.msg);
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
    int64_t c[5];
    sl_error err;
    if (sl_state_job_counts(st, NULL, c, &err) < 0) {
        sl_buf_printf(detail, "state store: %s", err.msg);
        return 0;
    }
    return 1;
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
    size_t nworkers = 0, nroutes = 0;
    sl_server *srv = NULL;

    sl_metric_declare("sluice_webhooks_total", SL_METRIC_COUNTER,
                      "Webhook requests by pipeline and result (queued, duplicate, skipped, "
                      "rejected, error).");
    sl_metric_declare("sluice_jobs", SL_METRIC_GAUGE, "Jobs in the state store by state.");
    sl_metric_declare("sluice_jobs_finished_total", SL_METRIC_COUNTER,
                      "Job attempts by pipeline and outcome.");
    sl_metric_declare("sluice_rows_loaded_total", SL_METRIC_COUNTER,
                      "Records delivered by jobs, by pipeline.");
    sl_metrics_add_collector(collect_jobs, st);

    const char *addr = listen ? listen : cfg->serve_listen;
    srv = sl_server_new(addr, cfg->serve_threads, &err);
    if (!routes || !srv) {
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
    if (nroutes == 0) {
        sl_error_set(&err, SL_ERR_CONFIG,
                     "%s: no pipeline has a `trigger:`, so there is nothing to serve", cfg->path);
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

    while (!*stop) {
        usleep(100 * 1000);
    }
    sl_info("serve", "shutting down: no new webhooks; running jobs are handed back");
    code = SL_EXIT_OK;

out:
    if (srv) {
        sl_server_stop(srv);
    }
    if (nworkers) {
        *stop = 1;
        pthread_mutex_lock(&wake_mu);
        pthread_cond_broadcast(&wake_cv);
        pthread_mutex_unlock(&wake_mu);
        for (size_t i = 0; i < nworkers; i++) {
            pthread_join(workers[i].th, NULL);
        }
    }
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
