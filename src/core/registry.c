/* The compile-time plugin registry: every plugin sluice ships. */
#include <string.h>

#include "core/registry.h"

extern const sl_source_plugin sl_source_csv;
extern const sl_source_plugin sl_source_http_pages;
extern const sl_source_plugin sl_source_email;
extern const sl_source_plugin sl_source_sql;
extern const sl_source_plugin sl_source_kafka;
extern const sl_step_plugin sl_step_infer;
extern const sl_step_plugin sl_step_cast;
extern const sl_step_plugin sl_step_map;
extern const sl_step_plugin sl_step_diff;
extern const sl_step_plugin sl_step_enrich;
extern const sl_sink_plugin sl_sink_actionnetwork;
extern const sl_sink_plugin sl_sink_braze;
extern const sl_sink_plugin sl_sink_http;
extern const sl_sink_plugin sl_sink_sql_table;
extern const sl_sink_plugin sl_sink_stitch;
extern const sl_sink_plugin sl_sink_kafka;
extern const sl_trigger_plugin sl_trigger_controlshift;

const sl_source_plugin *const sl_sources[] = {&sl_source_csv,   &sl_source_http_pages,
                                              &sl_source_email, &sl_source_sql,
                                              &sl_source_kafka, NULL};
const sl_step_plugin *const sl_steps[] = {&sl_step_infer, &sl_step_cast,   &sl_step_map,
                                          &sl_step_diff,  &sl_step_enrich, NULL};
const sl_sink_plugin *const sl_sinks[] = {
    &sl_sink_actionnetwork, &sl_sink_braze, &sl_sink_http, &sl_sink_sql_table,
    &sl_sink_stitch,        &sl_sink_kafka, NULL};
const sl_trigger_plugin *const sl_triggers[] = {&sl_trigger_controlshift, NULL};

const sl_catalog sl_builtin_plugins = {
    .sources = sl_sources, .steps = sl_steps, .sinks = sl_sinks, .triggers = sl_triggers};

#define FIND(list, name)                                                                           \
    for (size_t i = 0; list[i]; i++) {                                                             \
        if (strcmp(list[i]->name, name) == 0) {                                                    \
            return list[i];                                                                        \
        }                                                                                          \
    }                                                                                              \
    return NULL

const sl_source_plugin *sl_find_source(const char *name)
{
    FIND(sl_sources, name);
}

const sl_step_plugin *sl_find_step(const char *name)
{
    FIND(sl_steps, name);
}

const sl_sink_plugin *sl_find_sink(const char *name)
{
    FIND(sl_sinks, name);
}

const sl_trigger_plugin *sl_find_trigger(const char *name)
{
    FIND(sl_triggers, name);
}
