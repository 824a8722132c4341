/* Finalization: where a delivered batch becomes durable progress.
 *
 * Completed batches are finalized strictly in window order, each in the
 * same state transaction as the others completed with it:
 *   - counts; records refused by the sink or rejected by a step go to the
 *     dead-letter store with their reason (and the response excerpt);
 *   - the checkpoint moves just past the batch (never past a batch that is
 *     not acknowledged: a FATAL verdict stops finalization there);
 *   - the run's lease is renewed, so a run that lost its lease can never
 *     move a checkpoint (fencing).
 * The rules a crash relies on: the checkpoint only covers acknowledged or
 * dead-lettered records; a resume re-sends at most the window.
 *
 * sl_finalize_run closes the run: the source's and steps' commit hooks
 * (an incremental watermark, a snapshot made current) and the removal of a
 * complete run's checkpoint, in one transaction. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "engine/engine.h"

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
    d.action = rec->action;
    if (s->replayed) {
        return sl_state_dl_bump(r->st, (int64_t)rec->pos, d.error, d.response, err);
    }
    return sl_state_dl_add(r->st, &d, err);
}

/* Count a finalized record under its action. */
static void count_action(runner *r, const sl_record *rec, int sent)
{
    const char *a = rec->action ? rec->action : "send";
    size_t k = 0;
    while (k < r->nactions && strcmp(r->actions[k].name, a) != 0) {
        k++;
    }
    if (k == r->nactions) {
        if (r->nactions == SL_RUN_ACTIONS_MAX) {
            return; /* more kinds than a summary shows */
        }
        snprintf(r->actions[k].name, sizeof(r->actions[k].name), "%s", a);
        r->nactions++;
    }
    if (sent) {
        r->actions[k].sent++;
    } else {
        r->actions[k].failed++;
    }
}

/* A batch refused as a whole: every record still OK failed with it. */
static void batch_refused(runner *r, slot *s)
{
    for (size_t i = 0; i < s->b.n; i++) {
        sl_record *rec = &s->b.recs[i];
        if (rec->status == SL_REC_OK) {
            sl_record_fail(rec, "%s", s->err.msg);
        }
    }
    r->consecutive_fail++;
    sl_warn(sl_ctx_name(r->sink_ctx),
            "batch of %zu records (lines %" PRIu64 "-%" PRIu64 ") dead-lettered: %s", s->b.nsend,
            s->b.start_line, s->b.end_line ? s->b.end_line - 1 : 0, s->err.msg);
    if (r->consecutive_fail >= MAX_CONSECUTIVE_FAILED_BATCHES) {
        sl_error e;
        sl_error_set(&e, SL_ERR_IO,
                     "stopping: %d batches in a row were refused by the sink; last error: %s",
                     r->consecutive_fail, s->err.msg);
        sl_engine_set_fatal(r, &e);
    }
}

static void check_max_failed(runner *r, const slot *s)
{
    if (r->p->max_failed < 0 || r->counts.failed <= (uint64_t)r->p->max_failed || r->fatal) {
        return;
    }
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
    sl_engine_set_fatal(r, &e);
}

/* Finalize the oldest slot. Called inside a state transaction (or in a dry
 * run, without one). */
static int finalize(runner *r, slot *s, sl_error *err)
{
    r->counts.read += s->nread;
    r->counts.skipped += s->nskipped;
    if (s->verdict == SL_SEND_FAIL) {
        batch_refused(r, s);
    } else if (s->b.nsend > 0) {
        r->consecutive_fail = 0;
    }
    for (size_t i = 0; i < s->b.n; i++) {
        sl_record *rec = &s->b.recs[i];
        switch ((sl_rec_status)rec->status) {
        case SL_REC_OK:
            r->counts.sent++;
            count_action(r, rec, 1);
            if (s->replayed && !r->o->dry_run &&
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
            count_action(r, rec, 0);
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
    check_max_failed(r, s);
    /* The first record not yet acknowledged is the one just past this batch. */
    r->ck_pos = s->b.end_pos;
    r->ck_line = s->b.end_line;
    r->have_ckpt = 1;
    return 0;
}

static int write_checkpoint(runner *r, sl_error *err)
{
    if (r->o->mode != SL_RUN_NORMAL || !r->srcp->checkpoint || !r->have_ckpt ||
        sl_engine_transactional(r)) {
        return 0;
    }
    sl_buf_reset(&r->ckpt);
    if (r->srcp->checkpoint(r->src, r->ck_pos, r->ck_line, &r->ckpt, err) < 0) {
        return SL_ERR;
    }
    return sl_state_kv_set(r->st, r->p->name, CHECKPOINT_KEY, sl_buf_cstr(&r->ckpt), r->ckpt.len,
                           err);
}

int sl_finalize_completed(runner *r)
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
            sl_engine_set_fatal(r, &s->err);
            break;
        }
        if (finalize(r, s, &err) < 0) {
            goto fail;
        }
        r->whead = (r->whead + 1) % r->window;
        r->wlen--;
        sl_engine_give_free(r, s);
    }
    if (in_txn) {
        if (write_checkpoint(r, &err) < 0 || sl_lease_renew(r, 1, &err) < 0 ||
            sl_state_commit(r->st, &err) < 0) {
            goto fail;
        }
    }
    /* durable now: a source keeping its position elsewhere may move it */
    if (r->have_ckpt && r->src && r->srcp->acked && !r->o->dry_run && r->o->mode != SL_RUN_RETRY &&
        !sl_engine_transactional(r) && r->srcp->acked(r->src, r->ck_pos, r->ck_line, &err) < 0) {
        sl_error_prefix(&err, "%s", sl_ctx_name(r->src_ctx));
        sl_engine_set_fatal(r, &err);
        return SL_ERR;
    }
    return 0;
fail:
    if (in_txn) {
        sl_state_rollback(r->st);
    }
    sl_engine_set_fatal(r, &err);
    return SL_ERR;
}

static void set_writable(runner *r, int on)
{
    if (r->src_ctx) {
        r->src_ctx->writable = on;
    }
    for (size_t i = 0; r->step_ctx && i < r->p->nsteps; i++) {
        if (r->step_ctx[i]) {
            r->step_ctx[i]->writable = on;
        }
    }
}

static int call_hooks(runner *r, const sl_run_end *e, sl_error *err)
{
    if (r->src && r->srcp->commit && r->srcp->commit(r->src, e, err) < 0) {
        return sl_error_prefix(err, "%s: commit", sl_ctx_name(r->src_ctx));
    }
    /* a retry is not a run over the input: the steps keep what they have
     * (a diff step's snapshot) */
    for (size_t i = 0; r->steps && r->o->mode != SL_RUN_RETRY && i < r->p->nsteps; i++) {
        const sl_step_plugin *sp = r->p->step_plugins[i];
        if (r->steps[i] && sp->commit && sp->commit(r->steps[i], e, err) < 0) {
            return sl_error_prefix(err, "%s: commit", sl_ctx_name(r->step_ctx[i]));
        }
    }
    return 0;
}

int sl_finalize_run(runner *r, int complete, sl_error *err)
{
    if (r->o->mode == SL_RUN_RETRY && !r->src) {
        return 0; /* dead letters only: nothing of the source's to commit */
    }
    sl_run_end e = {
        .complete = complete,
        .dry_run = r->o->dry_run,
        .started_at = r->started_at,
        .read = r->counts.read,
        .sent = r->counts.sent,
        .failed = r->counts.failed,
        .skipped = r->counts.skipped,
    };
    if (r->o->dry_run || !r->st) {
        /* hooks may report what they would make current; they cannot write */
        return call_hooks(r, &e, err);
    }
    if (sl_state_begin(r->st, err) < 0) {
        return SL_ERR;
    }
    set_writable(r, 1);
    int rc = call_hooks(r, &e, err);
    set_writable(r, 0);
    if (rc == 0 && complete && r->o->mode == SL_RUN_NORMAL) {
        rc = sl_state_kv_del(r->st, r->p->name, CHECKPOINT_KEY, err);
    }
    if (rc == 0) {
        rc = sl_lease_renew(r, 1, err);
    }
    if (rc == 0) {
        rc = sl_state_commit(r->st, err);
    }
    if (rc < 0) {
        sl_state_rollback(r->st);
    }
    return rc;
}
