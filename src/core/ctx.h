/* Engine side of sl_ctx: what a plugin instance may reach. */
#ifndef SLUICE_CTX_H
#define SLUICE_CTX_H

#include <signal.h>

#include "sluice/plugin.h"
#include "state/state.h"

struct sl_ctx {
    char name[192]; /* "sink:braze:users" */
    char pipeline[128];
    char ns[96]; /* state key namespace of this instance: "source.csv", "step.2.diff" */
    int dry_run;
    int writable;                /* set by the engine around commit hooks */
    int again;                   /* --again: deliver an input already delivered */
    char partial[256];           /* sl_ctx_set_partial: why the run is partial */
    char skip[512];              /* sl_ctx_skip_run: why the run has nothing to do */
    double run_started;          /* unix seconds, set by the engine */
    sl_state *state;             /* borrowed; may be NULL (tests, dry runs) */
    volatile sig_atomic_t *stop; /* borrowed; may be NULL */
    double rate_share;           /* sl_ctx_rate_share; 0 = 1 */
};

/* kind: "source", "step", "sink". state may be NULL: then the state_get/set
 * calls fail with a clear error. Returns NULL on OOM. */
sl_ctx *sl_ctx_new(const char *pipeline, const char *kind, const char *plugin, sl_state *state,
                   int dry_run, volatile sig_atomic_t *stop);
void sl_ctx_free(sl_ctx *c);
/* Steps: "step.<index>.<plugin>" so two steps of one type keep apart. */
void sl_ctx_set_index(sl_ctx *c, int index);

#endif
