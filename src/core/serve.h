/* `sluice serve` and the job runner. */
#ifndef SLUICE_SERVE_H
#define SLUICE_SERVE_H

#include <signal.h>
#include <stdint.h>

#include "config/config.h"
#include "state/state.h"

/* Serve every triggered pipeline's routes and run its jobs until *stop.
 * listen overrides the config's serve.listen when not NULL. Returns an
 * SL_EXIT_* code. */
int sl_serve(sl_config *cfg, sl_state *st, const char *listen, volatile sig_atomic_t *stop);

/* Run every runnable job of p on the calling thread, then return
 * (`sluice retry` of a triggered pipeline). */
int sl_jobs_run_pending(sl_config *cfg, sl_pipeline_cfg *p, sl_state *st,
                        volatile sig_atomic_t *stop);

/* A scheduled pipeline's next run as `sluice serve` sees it (status). */
typedef struct sl_schedule_info {
    int64_t last_slot; /* last slot serve ran (unix seconds), -1: none yet */
    int64_t next_run;  /* unix seconds; -1: the schedule has no further slot */
    int catch_up;      /* 1: a slot was missed while no server ran: serve runs it at
                          start (next_run is then `now`) */
    char zone[128];
    char next_local[64]; /* next_run in the schedule's zone */
} sl_schedule_info;

/* Fill out for p (which has a schedule) at now. st may be NULL (no history).
 * 0, or <0 with err set. */
int sl_schedule_info_get(const sl_pipeline_cfg *p, sl_state *st, int64_t now, sl_schedule_info *out,
                         sl_error *err);

#endif
