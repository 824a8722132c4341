/* The reader thread: where a source row becomes a record in a batch.
 *
 * For each batch: take a free slot, fill it with records from the source (or
 * from the dead letters being replayed), each run through the per-record
 * steps; when the batch is full, run the batch steps (steps that do I/O for
 * a whole batch at once) and the per-record steps after them; hand the
 * batch to the sink thread.
 *
 * Rule: every record of one batch entered the steps at the same stage, so a
 * batch step sees each record once. (Replayed dead letters are ordered by
 * stage and a batch closes where the stage changes.)
 *
 * A source waiting for input (SL_SOURCE_IDLE) closes the batch early, so
 * what was read is delivered without waiting for more.
 *
 * At end of input each step's drain is called in step order, after every
 * earlier record went through every step; what it emits goes through the
 * later steps to the sink like any record, in batches of its own. */
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

static slot *take_free(runner *r)
{
    pthread_mutex_lock(&r->mu);
    while (r->nfree == 0 && !sl_engine_stopping(r)) {
        pthread_cond_wait(&r->cv_free, &r->mu);
    }
    slot *s = r->nfree ? r->freel[--r->nfree] : NULL;
    pthread_mutex_unlock(&r->mu);
    return s;
}

static void enqueue(runner *r, slot *s)
{
    pthread_mutex_lock(&r->mu);
    r->q[(r->qhead + r->qlen) % r->nslots] = s;
    r->qlen++;
    pthread_cond_signal(&r->cv_work);
    pthread_mutex_unlock(&r->mu);
}

/* The first batch step at or after `from`, or nsteps. */
static size_t segment_end(const runner *r, size_t from)
{
    for (size_t i = from; i < r->p->nsteps; i++) {
        if (r->p->step_plugins[i]->process_batch) {
            return i;
        }
    }
    return r->p->nsteps;
}

static int step_failed(runner *r, size_t i, sl_error *err)
{
    return sl_error_prefix(err, "step %zu (%s)", i + 1, r->p->step_plugins[i]->name);
}

/* Run rec through the per-record steps [from, to). <0 fatal. */
static int record_steps(runner *r, sl_record *rec, size_t from, size_t to, sl_error *err)
{
    for (size_t i = from; i < to && rec->status == SL_REC_OK; i++) {
        int rc = r->p->step_plugins[i]->process(r->steps[i], rec, (int)i, err);
        if (rc < 0) {
            return step_failed(r, i, err);
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

/* The batch is full (or input ended): run the batch steps from `from` on
 * over the records [first, n) not through them yet, each followed by the
 * per-record steps up to the next batch step; the records they dropped
 * leave the batch (counted as skipped, as a per-record step's are); then
 * recount what is left to send (kept_*: what [0, first) holds). */
static int finish_batch(runner *r, slot *s, size_t from, size_t first, size_t kept_send,
                        size_t kept_bytes, sl_error *err)
{
    size_t k = segment_end(r, from);
    if (k >= r->p->nsteps || s->b.n <= first) {
        return 0;
    }
    sl_batch part = s->b; /* the records not through the batch steps yet */
    part.recs += first;
    part.n -= first;
    part.cap -= first;
    while (k < r->p->nsteps) {
        if (r->p->step_plugins[k]->process_batch(r->steps[k], &part, (int)k, err) < 0) {
            return step_failed(r, k, err);
        }
        size_t next = segment_end(r, k + 1);
        for (size_t i = 0; i < part.n; i++) {
            if (record_steps(r, &part.recs[i], k + 1, next, err) < 0) {
                return SL_ERR;
            }
        }
        k = next;
    }
    size_t keep = first;
    for (size_t i = first; i < s->b.n; i++) {
        if (s->b.recs[i].status == SL_REC_SKIP) {
            s->nskipped++;
            continue; /* its slot is reused, like a popped one */
        }
        if (i != keep) {
            sl_record t = s->b.recs[keep];
            s->b.recs[keep] = s->b.recs[i];
            s->b.recs[i] = t;
        }
        keep++;
    }
    s->b.n = keep;
    s->b.nsend = kept_send; /* what [0, first) holds to send */
    s->b.bytes = kept_bytes;
    for (size_t i = first; i < s->b.n; i++) {
        if (s->b.recs[i].status == SL_REC_OK) {
            s->b.nsend++;
            s->b.bytes += approx_bytes(&s->b.recs[i]);
        }
    }
    return 0;
}

/* After the batch steps: whether to read more into this batch. A batch
 * they mostly dropped (the diff step keeps a few records in a hundred) is
 * topped up, so the sink still gets full batches; TOP_UP records at a
 * time, which are still in the cache when the batch steps see them. */
#define TOP_UP 512

static int top_up(const runner *r, const slot *s, size_t from)
{
    return segment_end(r, from) < r->p->nsteps && !sl_engine_stopping(r) &&
           s->b.nsend * 2 < (size_t)r->batch_records && s->b.n * 2 < (size_t)r->max_batch_n &&
           (int64_t)s->b.bytes * 2 < r->batch_bytes;
}

/* Where the reader is: what produces the next record. In order: the dead
 * letters being replayed (`sluice retry`), the source (in a retry, only if
 * it can re-fetch what it recorded as failed), then each step's drain (not
 * in a retry: a retry is not the end of an input). */
typedef enum feed_kind { FEED_REPLAY, FEED_SOURCE, FEED_DRAIN } feed_kind;

typedef struct feed {
    feed_kind kind;
    size_t drain_step;          /* FEED_DRAIN: the step being drained */
    uint64_t end_pos, end_line; /* just past the last source record */
} feed;

static feed first_feed(const runner *r)
{
    feed f = {.kind = r->o->mode == SL_RUN_RETRY ? FEED_REPLAY : FEED_SOURCE};
    return f;
}

/* Next record into rec: 1 produced (*from = the stage it enters the steps
 * at), 0 this feed is exhausted, <0 fatal. */
static int produce(runner *r, feed *f, sl_record *rec, size_t *from, uint64_t *next_pos,
                   sl_error *err)
{
    if (f->kind == FEED_REPLAY) {
        int n = sl_replay_next(r, rec, next_pos, err);
        if (n == 1) {
            *from =
                rec->stage >= 0 && rec->stage != SL_STAGE_SINK ? (size_t)rec->stage : r->p->nsteps;
        }
        return n;
    }
    if (f->kind == FEED_SOURCE) {
        *from = 0;
        return r->srcp->next(r->src, rec, next_pos, err);
    }
    size_t i = f->drain_step;
    int n = r->p->step_plugins[i]->drain(r->steps[i], rec, (int)i, err);
    if (n < 0) {
        return step_failed(r, i, err);
    }
    if (n == 1) {
        *from = i + 1;
        /* not a position in the input: the checkpoint stays at its end */
        rec->pos = f->end_pos;
        rec->line = 0;
        *next_pos = f->end_pos;
    }
    return n;
}

/* Move to the feed after the current one ran dry. 0 when there is none. */
static int next_feed(runner *r, feed *f)
{
    if (f->kind == FEED_REPLAY) {
        if (!r->src) {
            return 0;
        }
        f->kind = FEED_SOURCE;
        return 1;
    }
    if (r->o->mode == SL_RUN_RETRY) {
        return 0;
    }
    size_t from = f->kind == FEED_DRAIN ? f->drain_step + 1 : 0;
    for (size_t i = from; i < r->p->nsteps; i++) {
        if (r->p->step_plugins[i]->drain) {
            f->kind = FEED_DRAIN;
            f->drain_step = i;
            return 1;
        }
    }
    return 0;
}

/* The stage the next replayed record enters at, or -1. */
static long replay_peek_from(const runner *r, const feed *f)
{
    if (f->kind != FEED_REPLAY || r->next_item >= r->nitems) {
        return -1;
    }
    int st = r->items[r->next_item].stage;
    return st >= 0 && st != SL_STAGE_SINK ? st : (long)r->p->nsteps;
}

void *sl_reader_main(void *arg)
{
    runner *r = arg;
    sl_error err = {0};
    int rc = 0;
    int done = 0;
    feed f = first_feed(r);

    while (!done && rc == 0 && !sl_engine_stopping(r)) {
        slot *s = take_free(r);
        if (!s) {
            break;
        }
        sl_batch_reset(&s->b);
        s->nread = s->nskipped = 0;
        s->replayed = f.kind == FEED_REPLAY;
        size_t batch_from = 0;
        int first = 1;
        int feed_dry = 0;
        int stage_end = 0;
        int idle = 0;         /* the source waits for input: no topping up either */
        int topping = 0;      /* reading on into a batch its batch steps mostly dropped */
        size_t done_upto = 0; /* records [0, done_upto) went through the batch steps */
        size_t kept_send = 0, kept_bytes = 0;
    fill:
        while (s->b.nsend < (size_t)r->batch_records && s->b.n < (size_t)r->max_batch_n &&
               (int64_t)s->b.bytes < r->batch_bytes && !sl_engine_stopping(r) &&
               (!topping || s->b.n - done_upto < TOP_UP)) {
            long peek = replay_peek_from(r, &f);
            if (!first && peek >= 0 && (size_t)peek != batch_from) {
                stage_end = 1;
                break; /* one entry stage per batch */
            }
            sl_record *rec = sl_batch_push(&s->b);
            if (!rec) {
                rc = sl_error_set(&err, SL_ERR_NOMEM, "out of memory building a batch");
                break;
            }
            uint64_t next_pos = 0;
            size_t from = 0;
            int n = produce(r, &f, rec, &from, &next_pos, &err);
            if (n == SL_SOURCE_IDLE && f.kind == FEED_SOURCE) {
                /* nothing to read for now: send what this batch holds */
                sl_batch_pop(&s->b);
                idle = 1;
                break;
            }
            if (n <= 0) {
                sl_batch_pop(&s->b);
                if (n < 0) {
                    rc = n;
                } else {
                    feed_dry = 1;
                }
                break;
            }
            if (f.kind != FEED_DRAIN) {
                s->nread++;
                f.end_pos = next_pos;
                f.end_line = rec->next_line ? rec->next_line : rec->line + 1;
            }
            if (r->p->nsteps > 0) {
                rec->raw_len = 0; /* steps may change the fields: the raw line is stale */
            }
            if (first) {
                s->b.start_pos = rec->pos;
                s->b.start_line = rec->line ? rec->line : f.end_line;
                batch_from = from;
                first = 0;
            }
            s->b.end_pos = next_pos;
            s->b.end_line = f.end_line;
            if (rec->status == SL_REC_OK &&
                record_steps(r, rec, from, segment_end(r, from), &err) < 0) {
                rc = SL_ERR;
                sl_batch_pop(&s->b);
                break;
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
        if (rc == 0 && !first &&
            finish_batch(r, s, batch_from, done_upto, kept_send, kept_bytes, &err) < 0) {
            rc = SL_ERR;
        }
        if (rc == 0 && !first && !feed_dry && !stage_end && !idle && top_up(r, s, batch_from)) {
            done_upto = s->b.n;
            kept_send = s->b.nsend;
            kept_bytes = s->b.bytes;
            topping = 1;
            goto fill;
        }
        if (r->src && r->srcp->progress && f.kind == FEED_SOURCE) {
            int64_t pd = 0, total = -1;
            r->srcp->progress(r->src, &pd, &total);
            atomic_store(&r->prog_done, pd);
            atomic_store(&r->prog_total, total);
        }
        atomic_fetch_add(&r->prog_read, (int_fast64_t)s->nread);
        if (rc == 0 && s->b.n > 0 && r->columns_pending && f.kind == FEED_SOURCE) {
            /* learnt from the input: checked before the sink sees any */
            if (sl_engine_check_columns(r, &err) < 0) {
                rc = SL_ERR;
            }
            r->columns_pending = 0; /* asked once more, not per batch */
        }
        if (rc == 0 && (s->b.n > 0 || s->nread > 0)) {
            enqueue(r, s);
        } else {
            sl_engine_give_free(r, s);
        }
        if (feed_dry && rc == 0) {
            /* Drains run only once the input ended; a batch in flight
             * already went through every step (finish_batch above). */
            if (!next_feed(r, &f)) {
                done = 1;
            }
        }
    }

    pthread_mutex_lock(&r->mu);
    r->reader_done = 1;
    r->reader_rc = rc;
    r->reader_eof = done && rc == 0;
    if (rc) {
        r->reader_err = err;
    }
    pthread_cond_signal(&r->cv_work);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}
