/* Engine side of sl_ctx: what a plugin instance may reach. */
#ifndef SLUICE_CTX_H
#define SLUICE_CTX_H

#include <signal.h>

#include "sluice/plugin.h"
#include "state/state.h"

struct sl_ctx {
    char name[192]; /* "sink:braze:users" */
    char pipeline[128];
    int dry_run;
    sl_state *state;             /* borrowed; may be NULL (tests, dry runs) */
    volatile sig_atomic_t *stop; /* borrowed; may be NULL */
};

/* kind: "source", "step", "sink". state may be NULL: then the state_get/set
 * calls fail with a clear error. Returns NULL on OOM. */
sl_ctx *sl_ctx_new(const char *pipeline, const char *kind, const char *plugin, sl_state *state,
                   int dry_run, volatile sig_atomic_t *stop);
void sl_ctx_free(sl_ctx *c);

#endif
