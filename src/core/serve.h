/* `sluice serve` and the job runner. */
#ifndef SLUICE_SERVE_H
#define SLUICE_SERVE_H

#include <signal.h>

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

#endif
