/* Placeholder: the sql_table sink is being written. */
#include "sluice/plugin.h"

static const sl_option opts[] = {SL_OPTIONS_END};

static int init(void **self, const sl_opts *o, sl_ctx *ctx, sl_error *err)
{
    return sl_error_set(err, SL_ERR_CONFIG, "sql_table: not available yet");
}

static void destroy(void *self)
{
}

const sl_sink_plugin sl_sink_sql_table = {
    .name = "sql_table",
    .summary = "load records into a Postgres or SQLite table",
    .options = opts,
    .init = init,
    .destroy = destroy,
};
