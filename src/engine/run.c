/* sl_run_pipeline: set up a run, start the reader thread, run the sink
 * loop, close the run. The parts are described in engine.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "engine/engine.h"

double sl_engine_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int sl_engine_stopping(const runner *r)
{
    return (r->stop && *r->stop) || atomic_load(&r->halt);
}

void sl_engine_set_fatal(runner *r, const sl_error *e)
{
    if (!r->fatal) {
        r->fatal = 1;
        r->fatal_err = *e;
    }
    atomic_store(&r->halt, 1);
    pthread_mutex_lock(&r->mu);
    pthread_cond_broadcast(&r->cv_free);
    pthread_mutex_unlock(&r->mu);
}

void sl_engine_give_free(runner *r, slot *s)
{
    pthread_mutex_lock(&r->mu);
    r->freel[r->nfree++] = s;
    pthread_cond_signal(&r->cv_free);
    pthread_mutex_unlock(&r->mu);
}

int sl_engine_transactional(const runner *r)
{
    return (r->p->sink_plugin->flags & SL_SINK_TRANSACTIONAL) != 0;
}

static int init_plugins(runner *r, sl_error *err)
{
    const sl_pipeline_cfg *p = r->p;
    r->srcp = p->source_plugin;
    r->src_ctx = sl_ctx_new(p->name, "source", p->source.type, r->st, r->o->dry_run, r->o->stop);
    r->sink_ctx = sl_ctx_new(p->name, "sink", p->sink.type, r->st, r->o->dry_run, r->o->stop);
    r->steps = calloc(p->nsteps + 1, sizeof(void *));
    r->step_ctx = calloc(p->nsteps + 1, sizeof(sl_ctx *));
    if (!r->src_ctx || !r->sink_ctx || !r->steps || !r->step_ctx) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    r->src_ctx->run_started = r->started_at;
    r->sink_ctx->run_started = r->started_at;
    r->src_ctx->rate_share = r->sink_ctx->rate_share = r->o->rate_share;
    r->src_ctx->again = r->o->again;
    if (r->o->mode != SL_RUN_RETRY || r->srcp->retry) {
        if (r->srcp->init(&r->src, p->source.opts, r->src_ctx, err) < 0) {
            return sl_error_prefix(err, "%s", sl_ctx_name(r->src_ctx));
        }
        if (r->o->mode == SL_RUN_RETRY && r->srcp->retry(r->src, err) < 0) {
            return sl_error_prefix(err, "%s: retry", sl_ctx_name(r->src_ctx));
        }
    }
    for (size_t i = 0; i < p->nsteps; i++) {
        r->step_ctx[i] =
            sl_ctx_new(p->name, "step", p->steps[i].type, r->st, r->o->dry_run, r->o->stop);
        if (!r->step_ctx[i]) {
            return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
        }
        sl_ctx_set_index(r->step_ctx[i], (int)i);
        r->step_ctx[i]->run_started = r->started_at;
        r->step_ctx[i]->rate_share = r->o->rate_share;
        if (p->step_plugins[i]->init(&r->steps[i], p->steps[i].opts, r->step_ctx[i], err) < 0) {
            return sl_error_prefix(err, "%s", sl_ctx_name(r->step_ctx[i]));
        }
    }
    if (p->sink_plugin->init(&r->sink, p->sink.opts, r->sink_ctx, err) < 0) {
        return sl_error_prefix(err, "%s", sl_ctx_name(r->sink_ctx));
    }
    return 0;
}

/* The source's columns (when it knows them) through every step to the
 * sink: each checks what reaches it; a step that changes them says how. A
 * source that learns them from its input (a Kafka message's header) is
 * asked again by the reader before its first batch goes to the sink. */
int sl_engine_check_columns(runner *r, sl_error *err)
{
    r->columns_pending = 0;
    if (r->o->mode == SL_RUN_RETRY || !r->srcp->columns) {
        return 0;
    }
    size_t n = 0;
    const char *const *cols = r->srcp->columns(r->src, &n);
    if (!cols) {
        r->columns_pending = 1;
        return 0;
    }
    for (size_t i = 0; i < r->p->nsteps; i++) {
        const sl_step_plugin *sp = r->p->step_plugins[i];
        if (sp->columns && sp->columns(r->steps[i], cols, n, err) < 0) {
            return sl_error_prefix(err, "%s", sl_ctx_name(r->step_ctx[i]));
        }
        if (sp->output_columns) {
            size_t nout = 0;
            const char *const *out = sp->output_columns(r->steps[i], cols, n, &nout);
            if (out) {
                cols = out;
                n = nout;
            }
        }
    }
    if (r->p->sink_plugin->columns && r->p->sink_plugin->columns(r->sink, cols, n, err) < 0) {
        return sl_error_prefix(err, "%s", sl_ctx_name(r->sink_ctx));
    }
    return 0;
}

static int resume_source(runner *r, sl_error *err)
{
    if (r->o->mode != SL_RUN_NORMAL || !r->st) {
        return 0;
    }
    int drains = 0;
    for (size_t i = 0; i < r->p->nsteps; i++) {
        drains |= r->p->step_plugins[i]->drain != NULL;
    }
    if (r->o->from_start || sl_engine_transactional(r) || drains) {
        /* a transactional sink rolled back whatever an interrupted run had
         * loaded: there is nothing to resume from; a step that emits at end
         * of input (a diff) must see the whole input again */
        if (!r->o->dry_run) {
            return sl_state_kv_del(r->st, r->p->name, CHECKPOINT_KEY, err);
        }
        return 0;
    }
    sl_buf cp = {0};
    int found = sl_state_kv_get(r->st, r->p->name, CHECKPOINT_KEY, &cp, err);
    int rc = found < 0 ? found : 0;
    if (found == 1) {
        if (!r->srcp->resume) {
            sl_warn(sl_ctx_name(r->src_ctx),
                    "an interrupted run left a checkpoint, but this source cannot resume; "
                    "starting from the beginning");
        } else {
            rc = r->srcp->resume(r->src, sl_buf_cstr(&cp), err);
            if (rc < 0) {
                sl_error_prefix(err, "%s: cannot resume", sl_ctx_name(r->src_ctx));
            } else {
                json_t *j = json_loads(sl_buf_cstr(&cp), 0, NULL);
                json_t *line = j ? json_object_get(j, "line") : NULL;
                json_t *off = j ? json_object_get(j, "offset") : NULL;
                char at[96] = "from its checkpoint";
                if (json_is_integer(line) && json_is_integer(off)) {
                    snprintf(at, sizeof(at),
                             "at line %" JSON_INTEGER_FORMAT " (byte %" JSON_INTEGER_FORMAT ")",
                             json_integer_value(line), json_integer_value(off));
                } else if (json_is_integer(line)) {
                    snprintf(at, sizeof(at), "at record %" JSON_INTEGER_FORMAT,
                             json_integer_value(line));
                }
                sl_info(sl_ctx_name(r->src_ctx),
                        "resuming an interrupted run %s; --from-start starts over", at);
                json_decref(j);
            }
        }
    }
    sl_buf_free(&cp);
    return rc;
}

static void runner_free(runner *r)
{
    if (r->http) {
        sl_http_free(r->http);
    }
    const sl_pipeline_cfg *p = r->p;
    if (r->sink) {
        p->sink_plugin->destroy(r->sink);
    }
    for (size_t i = 0; r->steps && i < p->nsteps; i++) {
        if (r->steps[i]) {
            p->step_plugins[i]->destroy(r->steps[i]);
        }
        sl_ctx_free(r->step_ctx[i]);
    }
    if (r->src) {
        r->srcp->destroy(r->src);
    }
    free(r->steps);
    free(r->step_ctx);
    sl_ctx_free(r->src_ctx);
    sl_ctx_free(r->sink_ctx);
    for (size_t i = 0; i < r->nslots; i++) {
        sl_batch_free(&r->slots[i].b);
        sl_batch_free(&r->slots[i].sub);
        free(r->slots[i].sub_map);
        free(r->slots[i].ranges);
        sl_buf_free(&r->slots[i].fail_response);
        sl_http_req_free(&r->slots[i].req);
        sl_buf_free(&r->slots[i].response);
    }
    free(r->slots);
    free(r->q);
    free(r->freel);
    free(r->win);
    sl_replay_free(r);
    sl_buf_free(&r->tmp);
    sl_buf_free(&r->ckpt);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv_work);
    pthread_cond_destroy(&r->cv_free);
}

static void resolve_settings(runner *r)
{
    const sl_pipeline_cfg *p = r->p;
    const sl_sink_defaults *d = &p->sink_plugin->defaults;
    r->batch_records = p->batch_records > 0   ? p->batch_records
                       : d->batch_records > 0 ? d->batch_records
                                              : 500;
    int max = d->max_batch_records;
    int inst = p->sink_plugin->max_batch_records && r->sink
                   ? p->sink_plugin->max_batch_records(r->sink)
                   : 0;
    if (inst > 0 && (max <= 0 || inst < max)) {
        max = inst;
    }
    if (max > 0 && r->batch_records > max) {
        if (p->batch_records > 0) { /* asked for explicitly: say why it is not honoured */
            sl_warn(sl_ctx_name(r->sink_ctx), "batch.records %d exceeds what %s accepts; using %d",
                    r->batch_records, p->sink_plugin->name, max);
        }
        r->batch_records = max;
    }
    r->max_batch_n = r->batch_records * 2 + 64;
    r->batch_bytes = p->batch_bytes > 0   ? p->batch_bytes
                     : d->batch_bytes > 0 ? d->batch_bytes
                                          : (int64_t)4 << 20;
    r->concurrency = p->concurrency > 0 ? p->concurrency : d->concurrency > 0 ? d->concurrency : 4;
    r->window = (size_t)r->concurrency * 2;
    r->retry.max_attempts = p->max_attempts;
    r->retry.base_ms = p->backoff_base_ms;
    r->retry.max_ms = p->backoff_max_ms;
    r->retry.jitter = 1.0;
    r->rng = sl_retry_seed(r);
}

static int start_http(runner *r, sl_error *err)
{
    const sl_pipeline_cfg *p = r->p;
    sl_http_opts ho;
    sl_http_opts_default(&ho);
    ho.concurrency = r->concurrency;
    double rate = p->rate_per_sec >= 0 ? p->rate_per_sec : p->sink_plugin->defaults.rate_per_sec;
    double burst = p->rate_per_sec >= 0 ? p->rate_burst : p->sink_plugin->defaults.rate_burst;
    double share = r->o->rate_share > 0 && r->o->rate_share < 1 ? r->o->rate_share : 1.0;
    ho.rate_per_sec = rate > 0 ? rate * share : 0;
    ho.rate_burst = burst > 0 ? burst : 0;
    ho.max_attempts = p->max_attempts;
    ho.backoff_base_ms = (long)p->backoff_base_ms;
    ho.backoff_max_ms = (long)p->backoff_max_ms;
    ho.timeout_ms = (long)p->timeout_ms;
    ho.log_prefix = sl_ctx_name(r->sink_ctx);
    ho.stop = r->stop;
    r->http = sl_http_new(&ho, err);
    return r->http ? 0 : SL_ERR;
}

/* slots: the window plus a queue of the same depth */
static int make_slots(runner *r, sl_error *err)
{
    r->nslots = r->window * 2;
    r->slots = calloc(r->nslots, sizeof(*r->slots));
    r->q = calloc(r->nslots, sizeof(*r->q));
    r->freel = calloc(r->nslots, sizeof(*r->freel));
    r->win = calloc(r->window, sizeof(*r->win));
    if (!r->slots || !r->q || !r->freel || !r->win) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < r->nslots; i++) {
        sl_batch_init(&r->slots[i].b);
        sl_batch_init(&r->slots[i].sub);
        sl_buf_init(&r->slots[i].fail_response, RESPONSE_EXCERPT + 1);
        sl_http_req_init(&r->slots[i].req);
        sl_buf_init(&r->slots[i].response, RESPONSE_EXCERPT + 1);
        r->slots[i].r = r;
        r->freel[r->nfree++] = &r->slots[i];
    }
    return 0;
}

static void halt_reader(runner *r, pthread_t reader)
{
    atomic_store(&r->halt, 1);
    pthread_mutex_lock(&r->mu);
    pthread_cond_broadcast(&r->cv_free);
    pthread_mutex_unlock(&r->mu);
    pthread_join(reader, NULL);
}

/* A plugin's reason why the run is only partial, or NULL. */
static const char *partial_reason(const runner *r)
{
    if (r->src_ctx && r->src_ctx->partial[0]) {
        return r->src_ctx->partial;
    }
    for (size_t i = 0; r->step_ctx && i < r->p->nsteps; i++) {
        if (r->step_ctx[i] && r->step_ctx[i]->partial[0]) {
            return r->step_ctx[i]->partial;
        }
    }
    if (r->sink_ctx && r->sink_ctx->partial[0]) {
        return r->sink_ctx->partial;
    }
    return NULL;
}

double sl_engine_wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int sl_run_pipeline(const sl_config *cfg, const sl_pipeline_cfg *p, sl_state *state,
                    const sl_run_opts *o, sl_run_result *res)
{
    (void)cfg;
    runner rr;
    runner *r = &rr;
    memset(r, 0, sizeof(*r));
    memset(res, 0, sizeof(*res));
    r->p = p;
    r->st = state;
    r->o = o;
    /* A worker stops by its source ending (the plugins see o->stop): what
     * was read is delivered and its position kept before the process
     * leaves; any other run stops reading and dispatching at once. */
    r->stop = o->mode == SL_RUN_WORKER ? NULL : o->stop;
    r->started_at = sl_engine_wall_now();
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv_work, NULL);
    pthread_cond_init(&r->cv_free, NULL);
    atomic_init(&r->halt, 0);
    atomic_init(&r->prog_done, 0);
    atomic_init(&r->prog_total, -1);
    atomic_init(&r->prog_read, 0);
    sl_buf_init(&r->tmp, 16 << 20);
    sl_buf_init(&r->ckpt, 1 << 20);
    snprintf(res->status, sizeof(res->status), "failed");

    double t0 = sl_engine_now();
    sl_error err = {0};
    int exit_code = SL_EXIT_FAILED;
    int run_started = 0;
    int complete = 0;
    pthread_t reader;
    int reader_started = 0;

    /* One run of a pipeline at a time (triggered jobs are serialized by
     * their queue instead). */
    if (!o->dry_run && state && o->mode != SL_RUN_JOB) {
        int got = sl_lease_acquire(r, &err);
        if (got <= 0) {
            if (got == 0) {
                exit_code = SL_EXIT_LOCKED;
                snprintf(res->status, sizeof(res->status), "locked");
            }
            snprintf(res->error, sizeof(res->error), "%s", err.msg);
            res->error_code = err.code;
            runner_free(r);
            return exit_code;
        }
    }

    if (init_plugins(r, &err) < 0) {
        goto out;
    }
    if (r->src_ctx->skip[0]) {
        /* the source says there is nothing to do (an input already delivered) */
        sl_info(sl_ctx_name(r->src_ctx), "%s", r->src_ctx->skip);
        exit_code = SL_EXIT_OK;
        snprintf(res->status, sizeof(res->status), "skipped");
        snprintf(res->error, sizeof(res->error), "%s", r->src_ctx->skip);
        const char *in = r->srcp->input_name ? r->srcp->input_name(r->src) : NULL;
        snprintf(res->input, sizeof(res->input), "%s", in ? in : p->source.type);
        if (!o->dry_run && state &&
            (sl_state_run_begin(state, p->name, res->input, &r->run_id, &err) < 0 ||
             sl_state_run_end(state, r->run_id, res->status, &res->counts, res->error, &err) < 0)) {
            sl_error_log(p->name, "cannot record the skipped run: %s", err.msg);
        }
        res->run_id = r->run_id;
        sl_lease_release(r);
        runner_free(r);
        return exit_code;
    }
    resolve_settings(r);

    if (o->mode == SL_RUN_RETRY) {
        if (sl_replay_load(r, &err) < 0) {
            goto out;
        }
        snprintf(res->input, sizeof(res->input), "dead letters of %s", p->name);
    } else {
        const char *in = r->srcp->input_name ? r->srcp->input_name(r->src) : NULL;
        snprintf(res->input, sizeof(res->input), "%s", in ? in : p->source.type);
    }
    if (resume_source(r, &err) < 0 || sl_engine_check_columns(r, &err) < 0) {
        goto out;
    }
    if (!o->dry_run && p->sink_plugin->encode && start_http(r, &err) < 0) {
        goto out;
    }
    if (!o->dry_run) {
        if (sl_state_run_begin(state, p->name, res->input, &r->run_id, &err) < 0) {
            goto out;
        }
        run_started = 1;
        res->run_id = r->run_id;
    }
    if (make_slots(r, &err) < 0) {
        goto out;
    }
    if (pthread_create(&reader, NULL, sl_reader_main, r) != 0) {
        sl_error_set(&err, SL_ERR, "cannot start the reader thread");
        goto out;
    }
    reader_started = 1;
    sl_deliver_loop(r);
    halt_reader(r, reader);
    reader_started = 0;

    if (r->http) {
        res->peak_inflight = sl_http_peak(r->http);
    }
    int interrupted = r->stop && *r->stop;
    if (r->fatal) {
        err = r->fatal_err;
    } else if (r->reader_rc) {
        err = r->reader_err;
    } else if (interrupted || !r->reader_eof) {
        sl_error_set(&err, SL_ERR_INTERRUPTED,
                     "interrupted; progress is saved, run again to resume");
    } else {
        /* end of input and everything finalized: let the sink commit */
        if (p->sink_plugin->finish && !o->dry_run && p->sink_plugin->finish(r->sink, 1, &err) < 0) {
            goto out;
        }
        complete = 1;
        if (sl_finalize_run(r, 1, &err) < 0) {
            goto out;
        }
        /* a transactional sink's acknowledgements hold only from its finish */
        if (sl_engine_transactional(r) && r->have_ckpt && r->srcp->acked && !o->dry_run &&
            r->srcp->acked(r->src, r->ck_pos, r->ck_line, &err) < 0) {
            sl_error_prefix(&err, "%s", sl_ctx_name(r->src_ctx));
            goto out;
        }
        const char *why = partial_reason(r);
        exit_code = r->counts.failed || why ? SL_EXIT_PARTIAL : SL_EXIT_OK;
        snprintf(res->status, sizeof(res->status), "%s", exit_code ? "partial" : "ok");
        if (why) {
            snprintf(res->error, sizeof(res->error), "%s", why);
        }
    }
    if (exit_code == SL_EXIT_FAILED && interrupted && !r->fatal && !r->reader_rc) {
        snprintf(res->status, sizeof(res->status), "interrupted");
    }

out:
    if (reader_started) {
        halt_reader(r, reader);
    }
    /* records the source produced, whether or not their batches were
     * finalized before the run stopped */
    if ((uint64_t)atomic_load(&r->prog_read) > r->counts.read) {
        r->counts.read = (uint64_t)atomic_load(&r->prog_read);
    }
    if (exit_code == SL_EXIT_FAILED) {
        snprintf(res->error, sizeof(res->error), "%s", err.msg);
        res->error_code = err.code;
        if (r->sink && p->sink_plugin->finish && !o->dry_run) {
            sl_error e2;
            p->sink_plugin->finish(r->sink, 0, &e2);
        }
        if (!complete && (r->src || r->steps)) {
            /* the plugins record what failed and keep their old progress */
            sl_error e2 = {0};
            if (sl_finalize_run(r, 0, &e2) < 0) {
                sl_error_log(p->name, "%s", e2.msg);
            }
        }
    }
    res->counts = r->counts;
    memcpy(res->actions, r->actions, sizeof(res->actions));
    res->nactions = r->nactions;
    res->duration_s = sl_engine_now() - t0;
    if (run_started) {
        sl_error e2;
        if (sl_state_run_end(state, r->run_id, res->status, &res->counts,
                             res->error[0] ? res->error : NULL, &e2) < 0) {
            sl_error_log(p->name, "%s", e2.msg);
        }
    }
    if (o->dry_run) {
        printf("--- dry run of %s: %" PRIu64 " read, %" PRIu64 " would be sent, %" PRIu64
               " would be dead-lettered, %" PRIu64 " skipped\n",
               p->name, r->counts.read, r->counts.sent, r->counts.failed, r->counts.skipped);
        for (size_t k = 0; k < r->nactions; k++) {
            printf("    %s: %" PRIu64 "\n", r->actions[k].name, r->actions[k].sent);
        }
    } else if (o->mode != SL_RUN_RETRY) {
        sl_buf sj = {0};
        sl_report_summary(r, res, &sj);
        /* out before the plugins shut down: a client that hangs there and
         * is killed must not take the run's summary with it */
        fflush(stdout);
        sl_notify_run(p, res, sl_buf_cstr(&sj));
        sl_buf_free(&sj);
    }
    sl_lease_release(r);
    runner_free(r);
    return exit_code;
}
