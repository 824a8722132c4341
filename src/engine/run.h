/* The pipeline runner: source -> steps -> sink, with a bounded queue between
 * a reader thread (source + steps + batching) and the sink thread (delivery,
 * dead letters, checkpoints). */
#ifndef SLUICE_ENGINE_RUN_H
#define SLUICE_ENGINE_RUN_H

#include <signal.h>
#include <stdint.h>

#include "config/config.h"
#include "state/state.h"

/* Exit codes (product.md). */
enum {
    SL_EXIT_OK = 0,
    SL_EXIT_FAILED = 1,
    SL_EXIT_PARTIAL = 2,
    SL_EXIT_USAGE = 64,
    SL_EXIT_LOCKED = 75, /* another run of the pipeline holds its lease: try later */
    SL_EXIT_CONFIG = 78,
};

typedef enum sl_run_mode {
    SL_RUN_NORMAL = 0, /* read the configured source */
    SL_RUN_RETRY,      /* re-deliver the pipeline's dead letters */
    SL_RUN_JOB,        /* one job of a triggered pipeline: no checkpoint, the
                          sink's finish() makes the load atomic instead */
    SL_RUN_WORKER,     /* one of many processes sharing the input (`sluice
                          worker`): a lease of its own instead of the
                          pipeline's; the source keeps its position itself
                          (acked) and ends when asked to stop, after which
                          everything read is delivered */
} sl_run_mode;

typedef struct sl_run_opts {
    sl_run_mode mode;
    int dry_run;
    int from_start;
    int again;    /* deliver an input already delivered completely */
    int progress; /* 1: a \r progress line on stderr (a TTY); 0: periodic log lines */
    int samples;  /* --dry-run: payloads to print (default 3) */
    volatile sig_atomic_t *stop; /* set by signal handlers; may be NULL */
    /* This process's share of per-API-key rate limits (sl_ctx_rate_share):
     * 1/N for one of N workers; 0 means 1. */
    double rate_share;
} sl_run_opts;

/* Records of one action ("new", "changed", "lapsed"; "send" when a record
 * carries none): delivered (or, in a dry run, that would be) and
 * dead-lettered. */
#define SL_RUN_ACTIONS_MAX 8
typedef struct sl_action_count {
    char name[24];
    uint64_t sent, failed;
} sl_action_count;

typedef struct sl_run_result {
    int64_t run_id;
    char status[16]; /* ok, partial, failed, interrupted, skipped, locked */
    char input[512];
    sl_counts counts;
    sl_action_count actions[SL_RUN_ACTIONS_MAX]; /* in order of first appearance */
    size_t nactions;
    double duration_s;
    int peak_inflight;
    char error[SL_ERRMSG_MAX];
    int error_code; /* SL_ERR_* of error: INPUT/CONFIG/LIMIT are not worth retrying */
} sl_run_result;

/* Run one pipeline to completion. state may be NULL only for dry runs.
 * Returns an SL_EXIT_* code; res is filled in any case. */
int sl_run_pipeline(const sl_config *cfg, const sl_pipeline_cfg *p, sl_state *state,
                    const sl_run_opts *opts, sl_run_result *res);

/* Send the run summary to every matching `notify:` target. Failures are
 * logged, never fatal. summary_json is the object built by the runner. */
void sl_notify_run(const sl_pipeline_cfg *p, const sl_run_result *res, const char *summary_json);

#endif
