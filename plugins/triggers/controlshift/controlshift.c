/* Placeholder: the ControlShift trigger is being written. */
#include "sluice/plugin.h"

static const sl_option opts[] = {SL_OPTIONS_END};

static int init(void **self, const sl_opts *o, sl_ctx *ctx, sl_error *err)
{
    return sl_error_set(err, SL_ERR_CONFIG, "controlshift: not available yet");
}

static void destroy(void *self)
{
}

const sl_trigger_plugin sl_trigger_controlshift = {
    .name = "controlshift",
    .summary = "ControlShift bulk-data webhooks",
    .options = opts,
    .init = init,
    .destroy = destroy,
};
