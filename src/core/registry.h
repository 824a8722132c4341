/* The compile-time plugin registry. */
#ifndef SLUICE_REGISTRY_H
#define SLUICE_REGISTRY_H

#include "config/config.h"
#include "sluice/plugin.h"

extern const sl_source_plugin *const sl_sources[]; /* NULL-terminated */
extern const sl_step_plugin *const sl_steps[];
extern const sl_sink_plugin *const sl_sinks[];
extern const sl_trigger_plugin *const sl_triggers[];

/* The same lists, as the configuration loader takes them. */
extern const sl_catalog sl_builtin_plugins;

const sl_source_plugin *sl_find_source(const char *name);
const sl_step_plugin *sl_find_step(const char *name);
const sl_sink_plugin *sl_find_sink(const char *name);
const sl_trigger_plugin *sl_find_trigger(const char *name);

#endif
