#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ctx.h"

sl_ctx *sl_ctx_new(const char *pipeline, const char *kind, const char *plugin, sl_state *state,
                   int dry_run, volatile sig_atomic_t *stop)
{
    sl_ctx *c = calloc(1, sizeof(*c));
    if (!c) {
        return NULL;
    }
    snprintf(c->pipeline, sizeof(c->pipeline), "%s", pipeline ? pipeline : "");
    snprintf(c->name, sizeof(c->name), "%s:%s:%s", kind, plugin, c->pipeline);
    c->state = state;
    c->dry_run = dry_run;
    c->stop = stop;
    return c;
}

void sl_ctx_free(sl_ctx *c)
{
    free(c);
}

const char *sl_ctx_pipeline(const sl_ctx *c)
{
    return c->pipeline;
}

const char *sl_ctx_name(const sl_ctx *c)
{
    return c ? c->name : "sluice";
}

int sl_ctx_dry_run(const sl_ctx *c)
{
    return c->dry_run;
}

int sl_ctx_stopping(const sl_ctx *c)
{
    return c->stop && *c->stop;
}

int sl_ctx_state_get(sl_ctx *c, const char *key, sl_buf *out, sl_error *err)
{
    if (!c->state) {
        return sl_error_set(err, SL_ERR, "%s: no state store available for key '%s'", c->name, key);
    }
    return sl_state_kv_get(c->state, c->pipeline, key, out, err);
}

int sl_ctx_state_set(sl_ctx *c, const char *key, const char *value, size_t len, sl_error *err)
{
    if (!c->state) {
        return sl_error_set(err, SL_ERR, "%s: no state store available for key '%s'", c->name, key);
    }
    return sl_state_kv_set(c->state, c->pipeline, key, value, len, err);
}
