/* The delivery core, inside: what the engine's parts share.
 *
 *   replay.c    dead letters as a source (`sluice retry`)
 *   reader.c    reader thread: source (or replay) -> steps -> batches;
 *               at end of input, the steps' drain; batch steps
 *   deliver.c   sink thread: dispatch batches (HTTP concurrently, or a
 *               synchronous write with the one retry policy), drive I/O
 *   finalize.c  in batch order: count, dead-letter, move the checkpoint,
 *               renew the lease, all in one state transaction; and the
 *               transaction that closes the run (the plugins' commit hooks)
 *   lease.c     one run of a pipeline at a time
 *   report.c    progress lines and the run summary
 *   run.c       setup and teardown: sl_run_pipeline
 *
 * Two threads and a bounded queue:
 *
 *   reader thread:  source.next -> steps -> batches  --queue-->
 *   sink thread:    deliver batches (up to `window` at once), then in batch
 *                   order finalize them.
 *
 * Delivery may complete out of order (concurrent HTTP requests), but batches
 * are finalized strictly in order, so the checkpoint only ever moves past
 * records that were acknowledged or dead-lettered. A crash therefore re-sends
 * at most the batches in the window: window = 2 x concurrency batches.
 *
 * All state-store writes happen on the sink thread (or, before and after
 * it runs, on the calling thread). */
#ifndef SLUICE_ENGINE_H
#define SLUICE_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/ctx.h"
#include "engine/run.h"
#include "util/retry.h"

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
    int replayed;      /* records are dead letters being replayed (pos = id) */
    sl_http_req req;
    int submitted;
    int done;
    sl_verdict verdict;
    sl_error err;
    sl_buf response; /* excerpt of the final response body */
    int attempts;
    /* isolating the records a destination refused (SL_SEND_SPLIT): ranges
     * [lo, hi) of b.recs still to send, the current one sent as `sub` */
    int splitting;
    sl_batch sub;
    size_t *sub_map; /* sub.recs[j] is b.recs[sub_map[j]] */
    size_t *ranges;  /* stack of lo, hi pairs */
    size_t nranges, cap_ranges;
    size_t cur_lo, cur_hi;
    int sub_requests;
    sl_buf fail_response; /* the answer that refused an isolated record */
    struct runner *r;
} slot;

typedef struct replay_item {
    int64_t id;
    int stage;
    uint64_t line;
    int attempts;
    char *record;
    const char *action; /* interned */
} replay_item;

typedef struct sl_run_lease {
    int held;
    char name[448]; /* "run:<pipeline>" or "worker:<pipeline>:<host>:<pid>" */
    char owner[192];
    double ttl_s;
    double renewed_at; /* monotonic seconds of the last renewal */
} sl_run_lease;

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
    sl_retry_policy retry; /* synchronous sinks */
    uint64_t rng;

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
    int reader_eof; /* the source and every drain reached their end */
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
    double started_at; /* unix seconds */
    sl_buf tmp;        /* scratch for dead-letter JSON */
    sl_buf ckpt;       /* scratch for the checkpoint text */
    int have_ckpt;
    uint64_t ck_pos, ck_line;
    int samples_shown;
    int columns_pending; /* the source did not know its columns at setup */
    sl_action_count actions[SL_RUN_ACTIONS_MAX];
    size_t nactions;
    sl_run_lease lease;

    /* retry mode: the dead letters being replayed */
    replay_item *items;
    size_t nitems, next_item;
    char **names; /* interned field names of replayed records */
    size_t nnames;
    uint64_t not_retryable;
} runner;

double sl_engine_now(void);      /* monotonic seconds */
double sl_engine_wall_now(void); /* unix seconds (UTC) */
int sl_engine_stopping(const runner *r);
void sl_engine_set_fatal(runner *r, const sl_error *e);
void sl_engine_give_free(runner *r, slot *s);
int sl_engine_transactional(const runner *r);

/* run.c: the columns through the steps to the sink (see there) */
int sl_engine_check_columns(runner *r, sl_error *err);

/* replay.c */
int sl_replay_load(runner *r, sl_error *err);
int sl_replay_next(runner *r, sl_record *rec, uint64_t *next_pos, sl_error *err);
void sl_replay_free(runner *r);

/* reader.c */
void *sl_reader_main(void *arg);

/* deliver.c */
void sl_deliver_loop(runner *r);

/* finalize.c */
int sl_finalize_completed(runner *r);
/* The transaction that closes a run: commit hooks of the source and the
 * steps (complete or not), the checkpoint removed when complete. */
int sl_finalize_run(runner *r, int complete, sl_error *err);

/* lease.c: 1 taken, 0 refused (err says by whom), <0 error */
int sl_lease_acquire(runner *r, sl_error *err);
/* Renew when due (force: now); inside a transaction it commits with it.
 * <0 with err set when the lease was lost or cannot be written. */
int sl_lease_renew(runner *r, int force, sl_error *err);
void sl_lease_release(runner *r);

/* report.c */
void sl_report_metrics(runner *r);
void sl_report_progress(runner *r, double t0, int final);
void sl_report_summary(const runner *r, const sl_run_result *res, sl_buf *out);

#endif
