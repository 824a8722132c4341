/* The sink thread: where a batch becomes a request (or a database write).
 *
 * Batches enter a window of `window` slots in order; each is dispatched at
 * once: HTTP sinks' requests go out concurrently through sl_http (its
 * connection cap, rate limit and retries), synchronous sinks write in place,
 * retried with the one retry policy. Completed batches are finalized in
 * window order (finalize.c). The loop also keeps the run's lease alive. */
#include <inttypes.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "sluice/json.h"

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

/* ---- isolating refused records (SL_SEND_SPLIT) -------------------------------
 * A destination refused a batch because of some records without saying which.
 * The batch's OK records are sent again in halves, each half as its own
 * request (`sub`, copies of the records), recursively, until each refused
 * record is alone: it is marked FAILED with the answer, the others were
 * acknowledged by their half's request. At most SPLIT_MAX_REQUESTS requests
 * per batch: a batch refused almost entirely (a wrong schema, not one bad
 * member) is dead-lettered as it stands instead of costing 2n requests. */
#define SPLIT_MAX_REQUESTS 64

static void http_done(void *ud, sl_http_req *req, const sl_http_resp *resp);

/* The sink left nothing to send (every record skipped or refused while
 * encoding): no URL, or no body for a method that needs one. */
static int nothing_to_send(const sl_http_req *req)
{
    return req->url.len == 0 || (req->body.len == 0 && strcmp(req->method, "GET") != 0);
}

static int push_range(slot *s, size_t lo, size_t hi)
{
    if (s->nranges + 2 > s->cap_ranges) {
        size_t cap = s->cap_ranges ? s->cap_ranges * 2 : 64;
        size_t *n = realloc(s->ranges, cap * sizeof(*n));
        if (!n) {
            return SL_ERR_NOMEM;
        }
        s->ranges = n;
        s->cap_ranges = cap;
    }
    s->ranges[s->nranges++] = lo;
    s->ranges[s->nranges++] = hi;
    return 0;
}

static size_t ok_in(const slot *s, size_t lo, size_t hi)
{
    size_t n = 0;
    for (size_t i = lo; i < hi; i++) {
        n += s->b.recs[i].status == SL_REC_OK;
    }
    return n;
}

static void fail_range(slot *s, size_t lo, size_t hi, const char *why)
{
    for (size_t i = lo; i < hi; i++) {
        if (s->b.recs[i].status == SL_REC_OK) {
            sl_record_fail(&s->b.recs[i], "%s", why);
        }
    }
    if (s->fail_response.len == 0) {
        sl_buf_append(&s->fail_response, s->response.data ? s->response.data : "", s->response.len);
    }
}

/* The outcome of the current sub-request, back onto the batch's records. */
static void copy_back(slot *s)
{
    for (size_t j = 0; j < s->sub.n; j++) {
        sl_record *from = &s->sub.recs[j], *to = &s->b.recs[s->sub_map[j]];
        if (from->status == SL_REC_FAILED || from->status == SL_REC_REJECTED) {
            to->status = from->status;
            to->stage = from->stage;
            sl_buf_reset(&to->reason);
            sl_buf_append(&to->reason, from->reason.data ? from->reason.data : "",
                          from->reason.len);
            if (s->fail_response.len == 0) {
                sl_buf_append(&s->fail_response, s->response.data ? s->response.data : "",
                              s->response.len);
            }
        }
    }
}

/* Send the next range that still has records to send. 1 submitted, 0 none
 * left (the batch is done), <0 error (err set). */
static int send_next_range(runner *r, slot *s)
{
    while (s->nranges > 0) {
        s->cur_hi = s->ranges[--s->nranges];
        s->cur_lo = s->ranges[--s->nranges];
        if (ok_in(s, s->cur_lo, s->cur_hi) == 0) {
            continue;
        }
        if (s->sub_requests >= SPLIT_MAX_REQUESTS) {
            char why[SL_ERRMSG_MAX + 96];
            snprintf(why, sizeof(why), "%s (not isolated: more than %d requests for one batch)",
                     s->err.msg, SPLIT_MAX_REQUESTS);
            fail_range(s, s->cur_lo, s->cur_hi, why);
            continue;
        }
        sl_batch_reset(&s->sub);
        size_t *map = realloc(s->sub_map, (s->cur_hi - s->cur_lo) * sizeof(*map));
        if (!map) {
            return sl_error_set(&s->err, SL_ERR_NOMEM, "out of memory isolating refused records");
        }
        s->sub_map = map;
        for (size_t i = s->cur_lo; i < s->cur_hi; i++) {
            if (s->b.recs[i].status != SL_REC_OK) {
                continue;
            }
            sl_record *rec = sl_batch_push(&s->sub);
            if (!rec || sl_record_copy(rec, &s->b.recs[i]) < 0) {
                return sl_error_set(&s->err, SL_ERR_NOMEM,
                                    "out of memory isolating refused records");
            }
            s->sub_map[s->sub.n - 1] = i;
            s->sub.nsend++;
        }
        s->sub.seq = s->b.seq;
        sl_http_req_reset(&s->req);
        if (r->p->sink_plugin->encode(r->sink, &s->sub, &s->req, &s->err) < 0) {
            fail_range(s, s->cur_lo, s->cur_hi, s->err.msg);
            continue;
        }
        if (nothing_to_send(&s->req)) {
            copy_back(s); /* nothing left to send in this range */
            continue;
        }
        s->attempts = 0;
        s->sub_requests++;
        r->counts.requests++;
        sl_error e;
        if (sl_http_submit(r->http, &s->req, http_done, s, &e) < 0) {
            s->err = e;
            return SL_ERR;
        }
        return 1;
    }
    return 0;
}

/* A sub-request (or the whole batch's request) of a batch being split got
 * verdict v. 1 when another request went out; else the batch's final verdict
 * is in *out. */
static int split_continue(runner *r, slot *s, sl_verdict v, sl_verdict *out)
{
    if (!s->splitting) {
        s->splitting = 1;
        s->nranges = 0;
        s->sub_requests = 0;
        sl_buf_reset(&s->fail_response);
        s->cur_lo = 0;
        s->cur_hi = s->b.n;
        sl_warn(sl_ctx_name(r->sink_ctx),
                "batch of %zu records refused (%s); sending it in halves to find the records "
                "refused",
                s->b.nsend, s->err.msg);
    } else if (v == SL_SEND_OK || v == SL_SEND_FAIL || v == SL_SEND_SPLIT) {
        copy_back(s);
    }
    if (v == SL_SEND_FATAL) {
        s->splitting = 0;
        *out = SL_SEND_FATAL;
        return 0;
    }
    size_t n = ok_in(s, s->cur_lo, s->cur_hi);
    if (v == SL_SEND_FAIL || (v == SL_SEND_SPLIT && n <= 1)) {
        fail_range(s, s->cur_lo, s->cur_hi, s->err.msg);
    } else if (v == SL_SEND_SPLIT) {
        /* halves by OK records, the first half sent first */
        size_t half = n / 2, seen = 0, mid = s->cur_lo;
        while (mid < s->cur_hi && seen < half) {
            seen += s->b.recs[mid++].status == SL_REC_OK;
        }
        if (push_range(s, mid, s->cur_hi) < 0 || push_range(s, s->cur_lo, mid) < 0) {
            sl_error_set(&s->err, SL_ERR_NOMEM, "out of memory isolating refused records");
            s->splitting = 0;
            *out = SL_SEND_FATAL;
            return 0;
        }
    }
    int rc = send_next_range(r, s);
    if (rc == 1) {
        return 1;
    }
    s->splitting = 0;
    /* what the dead letters show: the answer that refused them */
    sl_buf_reset(&s->response);
    sl_buf_append(&s->response, s->fail_response.data ? s->fail_response.data : "",
                  s->fail_response.len);
    *out = rc < 0 ? SL_SEND_FATAL : SL_SEND_OK;
    return 0;
}

static void http_done(void *ud, sl_http_req *req, const sl_http_resp *resp)
{
    (void)req;
    slot *s = ud;
    runner *r = s->r;
    s->attempts += resp->attempts;
    keep_response(s, resp);
    sl_error_clear(&s->err);
    sl_batch *b = s->splitting ? &s->sub : &s->b;
    sl_verdict v = r->p->sink_plugin->decode ? r->p->sink_plugin->decode(r->sink, b, resp, &s->err)
                                             : default_decode(resp, &s->err);
    if (v == SL_SEND_RETRY && s->attempts < r->p->max_attempts) {
        /* the sink asked for another try (a 2xx whose body says "later"):
         * after the retry policy's wait, like any retry */
        int64_t ra = resp->retry_after_s >= 0 ? (int64_t)(resp->retry_after_s * 1000.0) : -1;
        int64_t wait = sl_retry_delay_ms(&r->retry, s->attempts, ra, &r->rng);
        sl_error e;
        if (sl_http_submit_after(r->http, &s->req, wait, http_done, s, &e) == 0) {
            return;
        }
        s->err = e;
        v = SL_SEND_FATAL;
    } else if (v == SL_SEND_RETRY) {
        sl_error_prefix(&s->err, "gave up after %d attempts", s->attempts);
        v = SL_SEND_FATAL;
    }
    if (v == SL_SEND_SPLIT && !s->splitting && s->b.nsend <= 1) {
        v = SL_SEND_FAIL;
    }
    if ((v == SL_SEND_SPLIT || s->splitting) && split_continue(r, s, v, &v)) {
        return; /* the next part is on its way */
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
        /* the records that would be sent: a batch step (diff) leaves the
         * ones it drops in the batch, marked skipped */
        for (size_t i = 0, shown = 0; i < s->b.n && shown < 5; i++) {
            if (s->b.recs[i].status != SL_REC_OK) {
                continue;
            }
            sl_record_to_json(&s->b.recs[i], &body);
            sl_buf_putc(&body, '\n');
            shown++;
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

/* Synchronous sinks: write in place, retrying transient failures with the
 * one retry policy. */
static void write_sync(runner *r, slot *s)
{
    const sl_sink_plugin *sk = r->p->sink_plugin;
    for (;;) {
        s->attempts++;
        sl_error_clear(&s->err);
        s->verdict = sk->write(r->sink, &s->b, &s->err);
        if (s->verdict == SL_SEND_SPLIT) {
            s->verdict = SL_SEND_FAIL; /* a synchronous sink isolates records itself */
        }
        if (s->verdict != SL_SEND_RETRY) {
            break;
        }
        if (s->attempts >= r->retry.max_attempts || sl_engine_stopping(r)) {
            sl_error_prefix(&s->err, "gave up after %d attempts", s->attempts);
            s->verdict = SL_SEND_FATAL;
            break;
        }
        int64_t wait = sl_retry_delay_ms(&r->retry, s->attempts, -1, &r->rng);
        sl_warn(sl_ctx_name(r->sink_ctx), "%s; retry %d/%d in %.1fs", s->err.msg, s->attempts,
                r->retry.max_attempts, (double)wait / 1000.0);
        /* sleep in short steps: keep the lease and notice a stop */
        for (int64_t left = wait; left > 0 && !sl_engine_stopping(r); left -= 200) {
            usleep((useconds_t)(left < 200 ? left : 200) * 1000);
            sl_error le;
            if (sl_lease_renew(r, 0, &le) < 0) {
                sl_engine_set_fatal(r, &le);
            }
        }
    }
    r->counts.requests++;
    if (s->verdict == SL_SEND_FATAL) {
        atomic_store(&r->halt, 1);
    }
    s->done = 1;
}

/* Start delivering slot s (already in the window). */
static void dispatch(runner *r, slot *s)
{
    s->done = 0;
    s->submitted = 0;
    s->attempts = 0;
    s->splitting = 0;
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
    if (!sk->encode) {
        write_sync(r, s);
        return;
    }
    sl_http_req_reset(&s->req);
    if (sk->encode(r->sink, &s->b, &s->req, &s->err) < 0) {
        s->verdict = SL_SEND_FAIL;
        s->done = 1;
        return;
    }
    if (nothing_to_send(&s->req)) {
        s->done = 1; /* every record was skipped or refused by the sink */
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
}

/* Next queued batch, waiting a little when there is nothing else to do. */
static slot *dequeue(runner *r)
{
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
    return s;
}

void sl_deliver_loop(runner *r)
{
    double t0 = sl_engine_now();
    double last_progress = t0;
    double last_update = t0;
    double last_metrics = t0;
    double progress_every = r->o->progress ? 0.25 : 10.0;

    for (;;) {
        while (!r->fatal && !sl_engine_stopping(r) && r->wlen < r->window) {
            slot *s = dequeue(r);
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
        sl_finalize_completed(r);
        sl_error le;
        if (!r->fatal && sl_lease_renew(r, 0, &le) < 0) {
            sl_engine_set_fatal(r, &le);
        }

        double t = sl_engine_now();
        if (t - last_progress >= progress_every) {
            sl_report_progress(r, t0, 0);
            last_progress = t;
        }
        if (t - last_metrics >= 1.0) {
            sl_report_metrics(r);
            last_metrics = t;
        }
        if (!r->o->dry_run && (r->o->mode == SL_RUN_NORMAL || r->o->mode == SL_RUN_WORKER) &&
            t - last_update >= 5.0) {
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
        if (sl_engine_stopping(r) && r->wlen == 0 && inflight == 0) {
            break;
        }
    }
    if (r->o->progress) {
        sl_report_progress(r, t0, 1);
    }
    sl_report_metrics(r);
}
