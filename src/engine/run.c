/* The pipeline runner.
 *
 * Two threads and a bounded queue:
 *
 *   reader thread:  source.next -> steps -> batches  --queue-->
 *   sink thread:    deliver batches (up to `window` at once), then in batch
 *                   order: dead-letter what failed and move the checkpoint,
 *                   both in one state-store transaction.
 *
 * Delivery may complete out of order (concurrent HTTP requests), but batches
 * are *finalized* strictly in order, so the checkpoint only ever moves past
 * records that were acknowledged or dead-lettered. A crash therefore re-sends
 * at most the batches in the window: window = 2 x concurrency batches.
 *
 * All state-store writes happen on the sink thread. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "core/ctx.h"
#include "engine/run.h"
#include "sluice/json.h"
#include "sluice/log.h"

#define CHECKPOINT_KEY "checkpoint"
/* Stop the run when this many batches in a row were refused outright: the
 * destination is rejecting everything and dead-lettering the whole input
 * would only bury the real problem. */
#define MAX_CONSECUTIVE_FAILED_BATCHES 20
/* Retry mode loads at most this many dead letters per invocation. */
#define RETRY_MAX_LOAD 100000
#define RESPONSE_EXCERPT 4096

typedef struct slot {
    sl_batch b;
    uint64_t nread;    /* records the source produced into this batch */
    uint64_t nskipped; /* of which dropped on purpose by a step */
    sl_http_req req;
    int submitted;
    int done;
    sl_verdict verdict;
    sl_error err;
    sl_buf response; /* excerpt of the final response body */
    int attempts;
    struct runner *r;
} slot;

typedef struct retry_item {
    int64_t id;
    int stage;
    uint64_t line;
    int attempts;
    char *record;
} retry_item;

typedef struct runner {
    const sl_pipeline_cfg *p;
    sl_state *st;
    const sl_run_opts *o;
    volatile sig_atomic_t *stop; /* user asked to stop */
    atomic_int halt;             /* internal: stop reading (fatal error downstream) */

    const sl_source_plugin *srcp;
    void *src;
    void **steps;
    void *sink;
    sl_ctx *src_ctx, **step_ctx, *sink_ctx;

    int batch_records;
    int max_batch_n;
    int64_t batch_bytes;
    int concurrency;
    size_t window;

    /* reader -> sink queue and free list, guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cv_work; /* sink waits: queue non-empty or reader done */
    pthread_cond_t cv_free; /* reader waits: a free slot */
    slot *slots;
    size_t nslots;
    slot **q;
    size_t qhead, qlen;
    slot **freel;
    size_t nfree;
    int reader_done;
    int reader_rc;
    sl_error reader_err;

    /* progress, published by the reader */
    atomic_int_fast64_t prog_done, prog_total, prog_read;

    /* sink thread only */
    slot **win; /* ring of slots in seq order */
    size_t whead, wlen;
    uint64_t next_seq;
    sl_http *http;
    sl_counts counts;
    int fatal;
    sl_error fatal_err;
    int consecutive_fail;
    int64_t run_id;
    sl_buf tmp;  /* scratch for dead-letter JSON */
    sl_buf ckpt; /* scratch for the checkpoint text */
    int have_ckpt;
    uint64_t ck_pos, ck_line;
    int samples_shown;
    uint64_t actions_n[8];
    const char *actions[8];

    /* retry mode */
    retry_item *items;
    size_t nitems, next_item;
    char **names; /* interned field names of retried records */
    size_t nnames;
    uint64_t not_retryable;
} runner;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int stopping(const runner *r)
{
    return (r->stop && *r->stop) || atomic_load(&r->halt);
}

/* ------------------------------------------------------------ retry source */

/* In retry mode the "source" is the pipeline's dead-letter store. A record's
 * pos carries its dead-letter id; its stage says where to resume processing. */
static int retry_load_cb(void *ud, const sl_dead_letter *d)
{
    runner *r = ud;
    if (d->stage == SL_STAGE_SOURCE) {
        r->not_retryable++;
        return 0;
    }
    if (r->nitems >= RETRY_MAX_LOAD) {
        return 1;
    }
    retry_item *it = &r->items[r->nitems];
    it->record = strdup(d->record);
    if (!it->record) {
        return 1;
    }
    it->id = d->id;
    it->stage = d->stage;
    it->line = d->line;
    it->attempts = d->attempts;
    r->nitems++;
    return 0;
}

static const char *intern_name(void *ud, const char *name)
{
    runner *r = ud;
    for (size_t i = 0; i < r->nnames; i++) {
        if (strcmp(r->names[i], name) == 0) {
            return r->names[i];
        }
    }
    char **n = realloc(r->names, (r->nnames + 1) * sizeof(*n));
    if (!n) {
        return NULL;
    }
    r->names = n;
    if (!(r->names[r->nnames] = strdup(name))) {
        return NULL;
    }
    return r->names[r->nnames++];
}

static int retry_next(runner *r, sl_record *rec, uint64_t *next_pos, sl_error *err)
{
    if (r->next_item >= r->nitems) {
        return 0;
    }
    retry_item *it = &r->items[r->next_item++];
    if (sl_record_from_json(rec, it->record, intern_name, r, err) < 0) {
        sl_record_reject(rec, it->stage, "stored record cannot be rebuilt: %s", err->msg);
    }
    rec->pos = (uint64_t)it->id;
    rec->line = it->line;
    rec->stage = (int8_t)it->stage;
    *next_pos = (uint64_t)it->id + 1;
    return 1;
}

/* ------------------------------------------------------------ reader thread */

static slot *take_free(runner *r)
{
    pthread_mutex_lock(&r->mu);
    while (r->nfree == 0 && !stopping(r)) {
        pthread_cond_wait(&r->cv_free, &r->mu);
    }
    slot *s = r->nfree ? r->freel[--r->nfree] : NULL;
    pthread_mutex_unlock(&r->mu);
    return s;
}

static void give_free(runner *r, slot *s)
{
    pthread_mutex_lock(&r->mu);
    r->freel[r->nfree++] = s;
    pthread_cond_signal(&r->cv_free);
    pthread_mutex_unlock(&r->mu);
}

static void enqueue(runner *r, slot *s)
{
    pthread_mutex_lock(&r->mu);
    r->q[(r->qhead + r->qlen) % r->nslots] = s;
    r->qlen++;
    pthread_cond_signal(&r->cv_work);
    pthread_mutex_unlock(&r->mu);
}

/* Run rec through the steps, starting at step `from`. Returns <0 on a fatal
 * step error. */
static int run_steps(runner *r, sl_record *rec, int from, sl_error *err)
{
    for (size_t i = (size_t)from; i < r->p->nsteps; i++) {
        if (rec->status != SL_REC_OK) {
            break;
        }
        int rc = r->p->step_plugins[i]->process(r->steps[i], rec, (int)i, err);
        if (rc < 0) {
            return sl_error_prefix(err, "step %zu (%s)", i + 1, r->p->step_plugins[i]->name);
        }
        if (rc == 1) {
            rec->status = SL_REC_SKIP;
        }
    }
    return 0;
}

static size_t approx_bytes(const sl_record *rec)
{
    size_t n = rec->data.len + 2;
    for (uint32_t i = 0; i < rec->nfields; i++) {
        n += rec->fields[i].name_len + 8;
    }
    return n;
}

static void *reader_main(void *arg)
{
    runner *r = arg;
    sl_error err = {0};
    int rc = 0;
    int eof = 0;

    while (!eof && rc == 0 && !stopping(r)) {
        slot *s = take_free(r);
        if (!s) {
            break;
        }
        sl_batch_reset(&s->b);
        s->nread = s->nskipped = 0;
        int first = 1;
        while (s->b.nsend < (size_t)r->batch_records && s->b.n < (size_t)r->max_batch_n &&
               (int64_t)s->b.bytes < r->batch_bytes) {
            if (stopping(r)) {
                break;
            }
            sl_record *rec = sl_batch_push(&s->b);
            if (!rec) {
                rc = sl_error_set(&err, SL_ERR_NOMEM, "out of memory building a batch");
                break;
            }
            uint64_t next_pos = 0;
            int n = r->o->mode == SL_RUN_RETRY ? retry_next(r, rec, &next_pos, &err)
                                               : r->srcp->next(r->src, rec, &next_pos, &err);
            if (n <= 0) {
                sl_batch_pop(&s->b);
                if (n == 0) {
                    eof = 1;
                } else {
                    rc = n;
                }
                break;
            }
            s->nread++;
            if (r->p->nsteps > 0) {
                rec->raw_len = 0; /* steps may change the fields: the raw line is stale */
            }
            if (first) {
                s->b.start_pos = rec->pos;
                s->b.start_line = rec->line;
                first = 0;
            }
            s->b.end_pos = next_pos;
            s->b.end_line = rec->next_line ? rec->next_line : rec->line + 1;
            if (rec->status == SL_REC_OK) {
                int from = r->o->mode == SL_RUN_RETRY ? rec->stage : 0;
                if (from >= 0 && from != SL_STAGE_SINK && run_steps(r, rec, from, &err) < 0) {
                    rc = SL_ERR;
                    sl_batch_pop(&s->b);
                    break;
                }
            }
            if (rec->status == SL_REC_SKIP) {
                s->nskipped++;
                sl_batch_pop(&s->b); /* nothing to keep; the slot is reused */
                continue;
            }
            if (rec->status == SL_REC_OK) {
                s->b.nsend++;
                s->b.bytes += approx_bytes(rec);
            }
        }
        if (r->srcp && r->srcp->progress && r->o->mode != SL_RUN_RETRY) {
            int64_t done = 0, total = -1;
            r->srcp->progress(r->src, &done, &total);
            atomic_store(&r->prog_done, done);
            atomic_store(&r->prog_total, total);
        }
        atomic_fetch_add(&r->prog_read, (int_fast64_t)s->nread);
        if (s->nread > 0) {
            enqueue(r, s);
        } else {
            give_free(r, s);
        }
    }

    pthread_mutex_lock(&r->mu);
    r->reader_done = 1;
    r->reader_rc = rc;
    if (rc) {
        r->reader_err = err;
    }
    pthread_cond_signal(&r->cv_work);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ------------------------------------------------------------ sink side */

static void set_fatal(runner *r, const sl_error *e)
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

static void keep_response(slot *s, const sl_http_resp *resp)
{
    sl_buf_reset(&s->response);
    if (resp && resp->body_len) {
        size_t n = resp->body_len < RESPONSE_EXCERPT ? resp->body_len : RESPONSE_EXCERPT;
        sl_buf_append(&s->response, resp->body, n);
    }
}

static sl_verdict default_decode(const sl_http_resp *resp, sl_error *err)
{
    if (resp->status >= 200 && resp->status < 300) {
        return SL_SEND_OK;
    }
    if (resp->gave_up || resp->status == 0) {
        /* status 0 without gave_up: a transport error that retrying cannot
         * fix (bad URL, TLS verification): as fatal as running out */
        if (resp->status == 0) {
            sl_error_set(err, SL_ERR_IO, "gave up after %d attempts: %s", resp->attempts,
                         resp->error);
        } else {
            sl_error_set(err, SL_ERR_IO, "gave up after %d attempts: HTTP %ld", resp->attempts,
                         resp->status);
        }
        return SL_SEND_FATAL;
    }
    sl_error_set(err, SL_ERR_IO, "HTTP %ld: %.200s", resp->status, resp->body);
    if (resp->status == 401 || resp->status == 403) {
        return SL_SEND_FATAL;
    }
    return SL_SEND_FAIL;
}

static void http_done(void *ud, sl_http_req *req, const sl_http_resp *resp)
{
    (void)req;
    slot *s = ud;
    runner *r = s->r;
    s->attempts += resp->attempts;
    keep_response(s, resp);
    sl_error_clear(&s->err);
    sl_verdict v = r->p->sink_plugin->decode
                       ? r->p->sink_plugin->decode(r->sink, &s->b, resp, &s->err)
                       : default_decode(resp, &s->err);
    if (v == SL_SEND_RETRY && s->attempts < r->p->max_attempts) {
        sl_error e;
        if (sl_http_submit(r->http, &s->req, http_done, s, &e) == 0) {
            return;
        }
        s->err = e;
        v = SL_SEND_FATAL;
    } else if (v == SL_SEND_RETRY) {
        sl_error_prefix(&s->err, "gave up after %d attempts", s->attempts);
        v = SL_SEND_FATAL;
    }
    if (v == SL_SEND_FATAL) {
        /* stop reading and dispatching now; the batch is finalized (as not
         * acknowledged) when it reaches the head of the window */
        atomic_store(&r->halt, 1);
    }
    s->verdict = v;
    s->done = 1;
}

static void dry_run_show(runner *r, slot *s)
{
    for (size_t i = 0; i < s->b.n; i++) {
        sl_record *rec = &s->b.recs[i];
        if (rec->status == SL_REC_OK) {
            const char *a = rec->action ? rec->action : "send";
            for (size_t k = 0; k < 8; k++) {
                if (!r->actions[k] || strcmp(r->actions[k], a) == 0) {
                    r->actions[k] = a;
                    r->actions_n[k]++;
                    break;
                }
            }
        }
    }
    if (r->samples_shown >= r->o->samples || s->b.nsend == 0) {
        return;
    }
    sl_buf body = {0};
    if (r->p->sink_plugin->encode) {
        sl_error e = {0};
        sl_http_req_reset(&s->req);
        if (r->p->sink_plugin->encode(r->sink, &s->b, &s->req, &e) == 0) {
            sl_buf_printf(&body, "%s %s\n%s", s->req.method, sl_buf_cstr(&s->req.url),
                          sl_buf_cstr(&s->req.body));
        } else {
            sl_buf_printf(&body, "(cannot encode: %s)", e.msg);
        }
    } else {
        for (size_t i = 0; i < s->b.n && i < 5; i++) {
            sl_record_to_json(&s->b.recs[i], &body);
            sl_buf_putc(&body, '\n');
        }
    }
    if (body.len > 2000) {
        body.len = 2000;
        body.data[body.len] = '\0';
        sl_buf_puts(&body, " ...");
    }
    if (body.data) {
        sl_redact(body.data, body.cap);
    }
    printf("--- sample payload %d (batch of %zu records)\n%s\n", r->samples_shown + 1, s->b.nsend,
           sl_buf_cstr(&body));
    r->samples_shown++;
    sl_buf_free(&body);
}

/* Start delivering slot s (already in the window). */
static void dispatch(runner *r, slot *s)
{
    s->done = 0;
    s->submitted = 0;
    s->attempts = 0;
    s->verdict = SL_SEND_OK;
    sl_error_clear(&s->err);
    sl_buf_reset(&s->response);
    if (s->b.nsend == 0) {
        s->done = 1;
        return;
    }
    if (r->o->dry_run) {
        dry_run_show(r, s);
        s->done = 1;
        return;
    }
    const sl_sink_plugin *sk = r->p->sink_plugin;
    if (sk->encode) {
        sl_http_req_reset(&s->req);
        if (sk->encode(r->sink, &s->b, &s->req, &s->err) < 0) {
            s->verdict = SL_SEND_FAIL;
            s->done = 1;
            return;
        }
        if (s->req.body.len == 0 && strcmp(s->req.method, "GET") != 0) {
            s->done = 1; /* every record was skipped by the sink */
            return;
        }
        sl_error e;
        if (sl_http_submit(r->http, &s->req, http_done, s, &e) < 0) {
            s->err = e;
            s->verdict = SL_SEND_FATAL;
            s->done = 1;
            return;
        }
        s->submitted = 1;
        r->counts.requests++;
        return;
    }
    /* Synchronous sinks: retry transient failures here with backoff. */
    for (;;) {
        s->attempts++;
        sl_error_clear(&s->err);
        s->verdict = sk->write(r->sink, &s->b, &s->err);
        if (s->verdict != SL_SEND_RETRY) {
            break;
        }
        if (s->attempts >= r->p->max_attempts || stopping(r)) {
            sl_error_prefix(&s->err, "gave up after %d attempts", s->attempts);
            s->verdict = SL_SEND_FATAL;
            break;
        }
        long cap = (long)r->p->backoff_base_ms << (s->attempts < 16 ? s->attempts : 16);
        if (cap > r->p->backoff_max_ms) {
            cap = (long)r->p->backoff_max_ms;
        }
        long wait = cap > 0 ? random() % cap : 0;
        sl_warn(sl_ctx_name(r->sink_ctx), "%s; retry %d/%d in %.1fs", s->err.msg, s->attempts,
                r->p->max_attempts, (double)wait / 1000.0);
        usleep((useconds_t)wait * 1000);
    }
    r->counts.requests++;
    if (s->verdict == SL_SEND_FATAL) {
        atomic_store(&r->halt, 1);
    }
    s->done = 1;
}

static int dead_letter(runner *r, const sl_record *rec, const slot *s, sl_error *err)
{
    sl_buf_reset(&r->tmp);
    sl_record_to_json(rec, &r->tmp);
    sl_dead_letter d = {0};
    d.run_id = r->run_id;
    d.pipeline = r->p->name;
    d.record = sl_buf_cstr(&r->tmp);
    d.error = rec->reason.len ? sl_buf_cstr(&rec->reason) : "rejected";
    d.response = rec->status == SL_REC_FAILED ? sl_buf_cstr(&s->response) : "";
    d.stage = rec->stage;
    d.attempts = rec->status == SL_REC_FAILED ? (s->attempts ? s->attempts : 1) : 0;
    d.line = rec->line;
    if (r->o->mode == SL_RUN_RETRY) {
        return sl_state_dl_bump(r->st, (int64_t)rec->pos, d.error, d.response, err);
    }
    return sl_state_dl_add(r->st, &d, err);
}

/* Finalize the oldest slot: account, dead-letter, move the checkpoint.
 * Called inside a state transaction. */
static int finalize(runner *r, slot *s, sl_error *err)
{
    r->counts.read += s->nread;
    r->counts.skipped += s->nskipped;

    if (s->verdict == SL_SEND_FAIL) {
        /* the whole batch was refused: every record still OK failed with it */
        for (size_t i = 0; i < s->b.n; i++) {
            sl_record *rec = &s->b.recs[i];
            if (rec->status == SL_REC_OK) {
                sl_record_fail(rec, "%s", s->err.msg);
            }
        }
        r->consecutive_fail++;
        sl_warn(sl_ctx_name(r->sink_ctx),
                "batch of %zu records (lines %" PRIu64 "-%" PRIu64 ") dead-lettered: %s",
                s->b.nsend, s->b.start_line, s->b.end_line - 1, s->err.msg);
        if (r->consecutive_fail >= MAX_CONSECUTIVE_FAILED_BATCHES) {
            sl_error e;
            sl_error_set(&e, SL_ERR_IO,
                         "stopping: %d batches in a row were refused by the sink; last error: %s",
                         r->consecutive_fail, s->err.msg);
            set_fatal(r, &e);
        }
    } else if (s->b.nsend > 0) {
        r->consecutive_fail = 0;
    }

    for (size_t i = 0; i < s->b.n; i++) {
        sl_record *rec = &s->b.recs[i];
        switch ((sl_rec_status)rec->status) {
        case SL_REC_OK:
            r->counts.sent++;
            if (r->o->mode == SL_RUN_RETRY && !r->o->dry_run &&
                sl_state_dl_delete(r->st, (int64_t)rec->pos, err) < 0) {
                return SL_ERR;
            }
            break;
        case SL_REC_SKIP:
            r->counts.skipped++;
            break;
        case SL_REC_REJECTED:
        case SL_REC_FAILED:
            r->counts.failed++;
            if (r->o->dry_run) {
                if (r->counts.failed <= 5) {
                    printf("--- would dead-letter line %" PRIu64 ": %s\n", rec->line,
                           sl_buf_cstr(&rec->reason));
                }
                break;
            }
            if (dead_letter(r, rec, s, err) < 0) {
                return SL_ERR;
            }
            break;
        }
    }
    r->counts.retries += s->attempts > 1 ? (uint64_t)(s->attempts - 1) : 0;
    if (r->p->max_failed >= 0 && r->counts.failed > (uint64_t)r->p->max_failed && !r->fatal) {
        const char *why = "";
        for (size_t i = 0; i < s->b.n; i++) {
            if (s->b.recs[i].status == SL_REC_REJECTED || s->b.recs[i].status == SL_REC_FAILED) {
                why = sl_buf_cstr(&s->b.recs[i].reason);
                break;
            }
        }
        sl_error e;
        sl_error_set(&e, SL_ERR_INPUT,
                     "%" PRIu64 " record(s) dead-lettered, more than max_failed (%d); %s",
                     r->counts.failed, r->p->max_failed, why);
        set_fatal(r, &e);
    }
    /* The first record not yet acknowledged is the one just past this batch. */
    r->ck_pos = s->b.end_pos;
    r->ck_line = s->b.end_line;
    r->have_ckpt = 1;
    return 0;
}

static int transactional(const runner *r)
{
    return (r->p->sink_plugin->flags & SL_SINK_TRANSACTIONAL) != 0;
}

static int write_checkpoint(runner *r, sl_error *err)
{
    if (r->o->mode != SL_RUN_NORMAL || !r->srcp->checkpoint || !r->have_ckpt || transactional(r)) {
        return 0;
    }
    sl_buf_reset(&r->ckpt);
    if (r->srcp->checkpoint(r->src, r->ck_pos, r->ck_line, &r->ckpt, err) < 0) {
        return SL_ERR;
    }
    return sl_state_kv_set(r->st, r->p->name, CHECKPOINT_KEY, sl_buf_cstr(&r->ckpt), r->ckpt.len,
                           err);
}

/* Finalize every leading completed slot of the window, in one transaction. */
static int drain_completed(runner *r)
{
    if (r->wlen == 0 || !r->win[r->whead]->done) {
        return 0;
    }
    sl_error err = {0};
    int in_txn = 0;
    if (!r->o->dry_run) {
        if (sl_state_begin(r->st, &err) < 0) {
            goto fail;
        }
        in_txn = 1;
    }
    while (r->wlen > 0 && r->win[r->whead]->done) {
        slot *s = r->win[r->whead];
        if (s->verdict == SL_SEND_FATAL) {
            /* Nothing from here on is acknowledged: the checkpoint stays
             * before this batch and a later run re-sends it. */
            set_fatal(r, &s->err);
            break;
        }
        if (finalize(r, s, &err) < 0) {
            goto fail;
        }
        r->whead = (r->whead + 1) % r->window;
        r->wlen--;
        give_free(r, s);
    }
    if (in_txn) {
        if (write_checkpoint(r, &err) < 0 || sl_state_commit(r->st, &err) < 0) {
            goto fail;
        }
    }
    return 0;
fail:
    if (in_txn) {
        sl_state_rollback(r->st);
    }
    set_fatal(r, &err);
    return SL_ERR;
}

static void show_progress(runner *r, double t0, int final)
{
    double el = now_s() - t0;
    int64_t nread = atomic_load(&r->prog_read);
    int64_t done = atomic_load(&r->prog_done), total = atomic_load(&r->prog_total);
    double rate = el > 0 ? (double)nread / el : 0;
    char eta[48] = "";
    if (total > 0 && done > 0 && done < total && el > 1) {
        double left = el * (double)(total - done) / (double)done;
        snprintf(eta, sizeof(eta), ", %.0f%%, ETA %.0fs", 100.0 * (double)done / (double)total,
                 left);
    }
    if (r->o->progress) {
        fprintf(stderr,
                "\r%s: %" PRId64 " read, %" PRIu64 " sent, %" PRIu64
                " failed, %.0f rec/s%s\033[K%s",
                r->p->name, nread, r->counts.sent, r->counts.failed, rate, eta, final ? "\n" : "");
        fflush(stderr);
    } else if (!final) {
        sl_info(sl_ctx_name(r->src_ctx),
                "progress: %" PRId64 " read, %" PRIu64 " sent, %" PRIu64 " failed, %.0f rec/s%s",
                nread, r->counts.sent, r->counts.failed, rate, eta);
    }
}

/* The sink thread's loop: fill the window, drive I/O, finalize in order. */
static void sink_loop(runner *r)
{
    double t0 = now_s();
    double last_progress = t0;
    double last_update = t0;
    double progress_every = r->o->progress ? 0.25 : 10.0;

    for (;;) {
        /* fill the window from the queue */
        while (!r->fatal && !stopping(r) && r->wlen < r->window) {
            pthread_mutex_lock(&r->mu);
            int can_wait = r->wlen == 0 && (!r->http || sl_http_pending(r->http) == 0);
            if (r->qlen == 0 && !r->reader_done && can_wait) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 200 * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&r->cv_work, &r->mu, &ts);
            }
            slot *s = NULL;
            if (r->qlen) {
                s = r->q[r->qhead];
                r->qhead = (r->qhead + 1) % r->nslots;
                r->qlen--;
            }
            pthread_mutex_unlock(&r->mu);
            if (!s) {
                break;
            }
            s->b.seq = r->next_seq++;
            r->win[(r->whead + r->wlen) % r->window] = s;
            r->wlen++;
            dispatch(r, s);
        }

        if (r->http && sl_http_pending(r->http) > 0) {
            sl_http_run(r->http, r->wlen < r->window && !r->reader_done ? 5 : 100);
        }
        drain_completed(r);

        double t = now_s();
        if (t - last_progress >= progress_every) {
            show_progress(r, t0, 0);
            last_progress = t;
        }
        if (!r->o->dry_run && r->o->mode == SL_RUN_NORMAL && t - last_update >= 5.0) {
            sl_error e;
            sl_state_run_update(r->st, r->run_id, &r->counts, &e);
            last_update = t;
        }

        pthread_mutex_lock(&r->mu);
        int reader_done = r->reader_done;
        size_t qlen = r->qlen;
        pthread_mutex_unlock(&r->mu);
        int inflight = r->http ? (int)sl_http_pending(r->http) : 0;
        if (r->fatal) {
            /* Let requests already on the wire finish (their outcome is
             * not recorded as acknowledged past the fatal batch anyway). */
            if (inflight == 0) {
                break;
            }
        } else if (reader_done && qlen == 0 && r->wlen == 0) {
            break;
        }
        if (stopping(r) && r->wlen == 0 && inflight == 0) {
            break;
        }
    }
    if (r->o->progress) {
        show_progress(r, t0, 1);
    }
}

/* ------------------------------------------------------------ setup */

static void summary_json(const runner *r, const sl_run_result *res, sl_buf *out)
{
    sl_jw w;
    sl_jw_init(&w, out);
    sl_jw_obj_open(&w);
    sl_jw_keyz(&w, "pipeline");
    sl_jw_str(&w, r->p->name, strlen(r->p->name));
    sl_jw_keyz(&w, "input");
    sl_jw_str(&w, res->input, strlen(res->input));
    sl_jw_keyz(&w, "fileName");
    sl_jw_str(&w, res->input, strlen(res->input));
    int success = strcmp(res->status, "ok") == 0;
    sl_jw_keyz(&w, "success");
    sl_jw_bool(&w, success);
    sl_jw_keyz(&w, "status");
    sl_jw_str(&w, res->status, strlen(res->status));
    sl_jw_keyz(&w, "records");
    sl_jw_obj_open(&w);
    sl_jw_keyz(&w, "read");
    sl_jw_int(&w, (int64_t)res->counts.read);
    sl_jw_keyz(&w, "sent");
    sl_jw_int(&w, (int64_t)res->counts.sent);
    sl_jw_keyz(&w, "failed");
    sl_jw_int(&w, (int64_t)res->counts.failed);
    sl_jw_keyz(&w, "skipped");
    sl_jw_int(&w, (int64_t)res->counts.skipped);
    sl_jw_obj_close(&w);
    sl_jw_keyz(&w, "requests");
    sl_jw_int(&w, (int64_t)res->counts.requests);
    sl_jw_keyz(&w, "retries");
    sl_jw_int(&w, (int64_t)res->counts.retries);
    sl_jw_keyz(&w, "duration_s");
    sl_jw_double(&w, floor(res->duration_s * 1000.0) / 1000.0);
    if (res->error[0]) {
        sl_jw_keyz(&w, "error");
        sl_jw_str(&w, res->error, strlen(res->error));
    }
    if (r->sink && r->p->sink_plugin->summarize) {
        r->p->sink_plugin->summarize(r->sink, &w, res->counts.sent, res->counts.failed, success);
    }
    sl_jw_obj_close(&w);
}

static int init_plugins(runner *r, sl_error *err)
{
    const sl_pipeline_cfg *p = r->p;
    r->srcp = p->source_plugin;
    r->src_ctx = sl_ctx_new(p->name, "source", p->source.type, r->st, r->o->dry_run, r->stop);
    r->sink_ctx = sl_ctx_new(p->name, "sink", p->sink.type, r->st, r->o->dry_run, r->stop);
    r->steps = calloc(p->nsteps + 1, sizeof(void *));
    r->step_ctx = calloc(p->nsteps + 1, sizeof(sl_ctx *));
    if (!r->src_ctx || !r->sink_ctx || !r->steps || !r->step_ctx) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    if (r->o->mode != SL_RUN_RETRY) {
        if (r->srcp->init(&r->src, p->source.opts, r->src_ctx, err) < 0) {
            return sl_error_prefix(err, "%s", sl_ctx_name(r->src_ctx));
        }
    }
    for (size_t i = 0; i < p->nsteps; i++) {
        r->step_ctx[i] =
            sl_ctx_new(p->name, "step", p->steps[i].type, r->st, r->o->dry_run, r->stop);
        if (!r->step_ctx[i]) {
            return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
        }
        if (p->step_plugins[i]->init(&r->steps[i], p->steps[i].opts, r->step_ctx[i], err) < 0) {
            return sl_error_prefix(err, "%s", sl_ctx_name(r->step_ctx[i]));
        }
    }
    if (p->sink_plugin->init(&r->sink, p->sink.opts, r->sink_ctx, err) < 0) {
        return sl_error_prefix(err, "%s", sl_ctx_name(r->sink_ctx));
    }
    return 0;
}

static int check_columns(runner *r, sl_error *err)
{
    if (r->o->mode == SL_RUN_RETRY || !r->srcp->columns) {
        return 0;
    }
    size_t n = 0;
    const char *const *cols = r->srcp->columns(r->src, &n);
    if (!cols) {
        return 0;
    }
    for (size_t i = 0; i < r->p->nsteps; i++) {
        const sl_step_plugin *sp = r->p->step_plugins[i];
        if (sp->columns && sp->columns(r->steps[i], cols, n, err) < 0) {
            return sl_error_prefix(err, "%s", sl_ctx_name(r->step_ctx[i]));
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
    if (r->o->from_start || transactional(r)) {
        /* a transactional sink rolled back whatever an interrupted run had
         * loaded: there is nothing to resume from */
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
                sl_info(sl_ctx_name(r->src_ctx),
                        "resuming an interrupted run at line %" JSON_INTEGER_FORMAT
                        " (byte %" JSON_INTEGER_FORMAT "); --from-start starts over",
                        json_integer_value(line), json_integer_value(off));
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
        sl_http_req_free(&r->slots[i].req);
        sl_buf_free(&r->slots[i].response);
    }
    free(r->slots);
    free(r->q);
    free(r->freel);
    free(r->win);
    for (size_t i = 0; i < r->nitems; i++) {
        free(r->items[i].record);
    }
    free(r->items);
    for (size_t i = 0; i < r->nnames; i++) {
        free(r->names[i]);
    }
    free(r->names);
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
    if (d->max_batch_records > 0 && r->batch_records > d->max_batch_records) {
        sl_warn(sl_ctx_name(r->sink_ctx), "batch.records %d exceeds what %s accepts; using %d",
                r->batch_records, p->sink_plugin->name, d->max_batch_records);
        r->batch_records = d->max_batch_records;
    }
    r->max_batch_n = r->batch_records * 2 + 64;
    r->batch_bytes = p->batch_bytes > 0   ? p->batch_bytes
                     : d->batch_bytes > 0 ? d->batch_bytes
                                          : (int64_t)4 << 20;
    r->concurrency = p->concurrency > 0 ? p->concurrency : d->concurrency > 0 ? d->concurrency : 4;
    r->window = (size_t)r->concurrency * 2;
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
    r->stop = o->stop;
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

    double t0 = now_s();
    sl_error err = {0};
    int exit_code = SL_EXIT_FAILED;
    int run_started = 0;
    pthread_t reader;
    int reader_started = 0;

    if (init_plugins(r, &err) < 0) {
        goto out;
    }
    resolve_settings(r);

    if (o->mode == SL_RUN_RETRY) {
        r->items = calloc(RETRY_MAX_LOAD, sizeof(*r->items));
        if (!r->items) {
            sl_error_set(&err, SL_ERR_NOMEM, "out of memory");
            goto out;
        }
        if (sl_state_dl_each(state, p->name, 0, retry_load_cb, r, &err) < 0) {
            goto out;
        }
        snprintf(res->input, sizeof(res->input), "dead letters of %s", p->name);
        if (r->not_retryable) {
            sl_warn(sl_ctx_name(r->src_ctx),
                    "%" PRIu64 " dead letters were rejected by the source (bad input rows) and "
                    "cannot be retried: fix the input and run again",
                    r->not_retryable);
        }
    } else {
        const char *in = r->srcp->input_name ? r->srcp->input_name(r->src) : NULL;
        snprintf(res->input, sizeof(res->input), "%s", in ? in : p->source.type);
    }

    if (resume_source(r, &err) < 0 || check_columns(r, &err) < 0) {
        goto out;
    }

    if (!o->dry_run && p->sink_plugin->encode) {
        sl_http_opts ho;
        sl_http_opts_default(&ho);
        ho.concurrency = r->concurrency;
        double rate =
            p->rate_per_sec >= 0 ? p->rate_per_sec : p->sink_plugin->defaults.rate_per_sec;
        double burst = p->rate_per_sec >= 0 ? p->rate_burst : p->sink_plugin->defaults.rate_burst;
        ho.rate_per_sec = rate > 0 ? rate : 0;
        ho.rate_burst = burst > 0 ? burst : 0;
        ho.max_attempts = p->max_attempts;
        ho.backoff_base_ms = (long)p->backoff_base_ms;
        ho.backoff_max_ms = (long)p->backoff_max_ms;
        ho.timeout_ms = (long)p->timeout_ms;
        ho.log_prefix = sl_ctx_name(r->sink_ctx);
        r->http = sl_http_new(&ho, &err);
        if (!r->http) {
            goto out;
        }
    }

    if (!o->dry_run) {
        if (sl_state_run_begin(state, p->name, res->input, &r->run_id, &err) < 0) {
            goto out;
        }
        run_started = 1;
        res->run_id = r->run_id;
    }

    /* slots: the window plus a queue of the same depth */
    r->nslots = r->window * 2;
    r->slots = calloc(r->nslots, sizeof(*r->slots));
    r->q = calloc(r->nslots, sizeof(*r->q));
    r->freel = calloc(r->nslots, sizeof(*r->freel));
    r->win = calloc(r->window, sizeof(*r->win));
    if (!r->slots || !r->q || !r->freel || !r->win) {
        sl_error_set(&err, SL_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < r->nslots; i++) {
        sl_batch_init(&r->slots[i].b);
        sl_http_req_init(&r->slots[i].req);
        sl_buf_init(&r->slots[i].response, RESPONSE_EXCERPT + 1);
        r->slots[i].r = r;
        r->freel[r->nfree++] = &r->slots[i];
    }

    if (pthread_create(&reader, NULL, reader_main, r) != 0) {
        sl_error_set(&err, SL_ERR, "cannot start the reader thread");
        goto out;
    }
    reader_started = 1;
    sink_loop(r);
    atomic_store(&r->halt, 1);
    pthread_mutex_lock(&r->mu);
    pthread_cond_broadcast(&r->cv_free);
    pthread_mutex_unlock(&r->mu);
    pthread_join(reader, NULL);
    reader_started = 0;

    if (r->http) {
        res->peak_inflight = sl_http_peak(r->http);
    }
    int interrupted = r->stop && *r->stop;
    if (r->fatal) {
        err = r->fatal_err;
    } else if (r->reader_rc) {
        err = r->reader_err;
    } else if (interrupted) {
        sl_error_set(&err, SL_ERR_INTERRUPTED,
                     "interrupted; progress is saved, run again to resume");
    } else {
        /* end of input and everything finalized: let the sink commit */
        if (p->sink_plugin->finish && !o->dry_run && p->sink_plugin->finish(r->sink, 1, &err) < 0) {
            goto out;
        }
        exit_code = r->counts.failed ? SL_EXIT_PARTIAL : SL_EXIT_OK;
        snprintf(res->status, sizeof(res->status), "%s", r->counts.failed ? "partial" : "ok");
        if (!o->dry_run && o->mode == SL_RUN_NORMAL &&
            sl_state_kv_del(state, p->name, CHECKPOINT_KEY, &err) < 0) {
            exit_code = SL_EXIT_FAILED;
            snprintf(res->status, sizeof(res->status), "failed");
        }
    }
    if (exit_code == SL_EXIT_FAILED && interrupted && !r->fatal && !r->reader_rc) {
        snprintf(res->status, sizeof(res->status), "interrupted");
    }

out:
    if (reader_started) {
        atomic_store(&r->halt, 1);
        pthread_mutex_lock(&r->mu);
        pthread_cond_broadcast(&r->cv_free);
        pthread_mutex_unlock(&r->mu);
        pthread_join(reader, NULL);
    }
    if (exit_code == SL_EXIT_FAILED) {
        snprintf(res->error, sizeof(res->error), "%s", err.msg);
        res->error_code = err.code;
        if (r->sink && p->sink_plugin->finish && !o->dry_run) {
            sl_error e2;
            p->sink_plugin->finish(r->sink, 0, &e2);
        }
    }
    res->counts = r->counts;
    res->duration_s = now_s() - t0;
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
        for (size_t k = 0; k < 8 && r->actions[k]; k++) {
            printf("    %s: %" PRIu64 "\n", r->actions[k], r->actions_n[k]);
        }
    } else if (o->mode != SL_RUN_RETRY) {
        sl_buf sj = {0};
        summary_json(r, res, &sj);
        sl_notify_run(p, res, sl_buf_cstr(&sj));
        sl_buf_free(&sj);
    }
    runner_free(r);
    return exit_code;
}
