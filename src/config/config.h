/* Configuration: YAML file -> validated pipeline definitions.
 *
 * Loading parses the YAML (libyaml) into a node tree that remembers file,
 * line and column; interpolates ${VAR} and ${VAR:-default} in scalars;
 * validates every key against the engine's and each plugin's option tables;
 * and registers secret option values with the redactor. Every problem found
 * is reported, one per line, as "FILE:LINE:COL: KEY: what is wrong (expected
 * ...)". Unknown keys are errors. */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/plugin.h"

typedef enum sl_node_kind { SL_NODE_SCALAR, SL_NODE_MAP, SL_NODE_SEQ } sl_node_kind;

typedef struct sl_node {
    sl_node_kind kind;
    char *value; /* SCALAR: text after interpolation */
    int line, col;
    size_t n;              /* MAP/SEQ: number of children */
    struct sl_node **kids; /* MAP values / SEQ items */
    char **keys;           /* MAP keys */
    int *key_line, *key_col;
    /* SCALAR using job variables (`{{name}}` in a pipeline with a trigger):
     * ntmpl = 2k+1 parts, literal text (already interpolated, `{{{{`
     * unescaped) and variable names alternating, literal first and last;
     * value is then the template for display ("{{url}}"). NULL otherwise. */
    char **tmpl;
    size_t ntmpl;
} sl_node;

/* One plugin instance as configured. */
typedef struct sl_plugin_cfg {
    char *type;    /* plugin name */
    sl_opts *opts; /* validated options */
    char where[160];
} sl_plugin_cfg;

typedef enum sl_notify_format { SL_NOTIFY_JSON = 0, SL_NOTIFY_SLACK } sl_notify_format;

typedef struct sl_notify_cfg {
    char *url;               /* secret: registered with the redactor */
    sl_notify_format format; /* "slack" (default when the URL is a Slack hook) or "json" */
    int on_success, on_failure;
    char where[160];
} sl_notify_cfg;

typedef struct sl_pipeline_cfg {
    char *name;
    char where[160];

    sl_plugin_cfg source;
    const sl_source_plugin *source_plugin;
    sl_plugin_cfg *steps;
    const sl_step_plugin **step_plugins;
    size_t nsteps;
    sl_plugin_cfg sink;
    const sl_sink_plugin *sink_plugin;
    /* `trigger:` (trigger.type NULL when absent). A triggered pipeline runs
     * as jobs: its source/steps/sink options may hold `{{name}}` templates
     * (their opts then hold the template text, unchecked); run an
     * sl_config_instantiate copy, never these opts directly. */
    sl_plugin_cfg trigger;
    const sl_trigger_plugin *trigger_plugin;
    int templated; /* some source/steps/sink option uses a job variable */

    /* Engine settings; a value < 0 means "not set: use the sink's default". */
    int concurrency;
    double rate_per_sec; /* from rate_limit: "3000/3s", "10/s", or a number per second */
    double rate_burst;
    int batch_records;
    int64_t batch_bytes;
    int max_attempts;        /* retry.max_attempts, default 8 */
    int64_t backoff_base_ms; /* retry.backoff, default 500ms */
    int64_t backoff_max_ms;  /* retry.max_backoff, default 60s */
    int64_t timeout_ms;      /* retry.timeout (per request), default 120s */
    char *schedule;          /* "every 90m" or cron, or NULL */
    int max_failed;          /* dead-lettered records allowed before the run fails; -1 unlimited */
    int workers;             /* jobs of this (triggered) pipeline run at once, 1..64, default 2 */
    int64_t job_backoff_ms;  /* first wait before a failed job is retried (15s) */
    int64_t job_max_backoff_ms; /* cap of that wait, doubled per attempt (30m) */

    sl_notify_cfg *notify;
    size_t nnotify;

    /* `distributed:` (type "kafka" when present, NULL otherwise): the
     * options of the kafka source and sink that `sluice fanout` and `sluice
     * worker` put in place of the pipeline's sink and source. */
    sl_plugin_cfg distributed;
    const sl_source_plugin *dist_source_plugin;
    const sl_sink_plugin *dist_sink_plugin;
} sl_pipeline_cfg;

/* The two halves of a distributed pipeline. */
typedef enum sl_dist_role {
    SL_DIST_FANOUT, /* the source -> the kafka sink (no steps; the kafka sink's own batching) */
    SL_DIST_WORKER, /* the kafka source -> the steps -> the sink */
} sl_dist_role;

/* The pipeline one half runs, as a shallow copy of p into *out (it borrows
 * p's names, options and plugins: free nothing, keep p alive). The name
 * stays p's: dead letters, run history and plugin state are the pipeline's
 * own. *rate_share: the share of per-API-key rate limits one worker may use
 * (1 / `distributed.workers`; 1 for fanout). <0 with err set when p has no
 * `distributed:` block or uses a step that needs the whole input in one
 * process (one that emits at end of input, like diff). */
int sl_pipeline_role(const sl_pipeline_cfg *p, sl_dist_role role, sl_pipeline_cfg *out,
                     double *rate_share, sl_error *err);

typedef struct sl_config {
    char *path;
    char *state_url; /* top-level `state:`; default ".sluice/state.db" */
    sl_pipeline_cfg *pipelines;
    size_t npipelines;
    sl_node *root;
    char *serve_listen; /* serve.listen, default "127.0.0.1:8080" */
    int serve_threads;  /* serve.threads (HTTP server threads), 1..64, default 4 */
} sl_config;

/* Load and validate path. `only`/`nonly` restrict validation (and environment
 * lookups) to the named pipelines; nonly == 0 means all, and naming one that
 * does not exist is an error. On any problem returns NULL with every message
 * appended to errors, one per line. */
/* The plugins a configuration may name (NULL-terminated lists). The caller
 * gives it (core's built-in registry, a test's own), so this layer never
 * reaches up to find them. */
typedef struct sl_catalog {
    const sl_source_plugin *const *sources;
    const sl_step_plugin *const *steps;
    const sl_sink_plugin *const *sinks;
    const sl_trigger_plugin *const *triggers;
} sl_catalog;

sl_config *sl_config_load(const sl_catalog *plugins, const char *path, const char *const *only,
                          size_t nonly, sl_buf *errors);
typedef enum sl_cfg_mode {
    SL_CFG_FULL = 0, /* sl_config_load: everything interpolated and validated */
    /* For `sluice status`, which runs nothing: the top level (`state:`) is
     * interpolated and validated as usual, but each pipeline is only an
     * outline: its name, and source/sink/trigger `type` (with the plugin
     * pointers when known). Its options are neither interpolated nor
     * validated, so a ${VAR} they use may be unset; the other fields keep
     * zero values. Never run a pipeline loaded this way. */
    SL_CFG_OUTLINE,
} sl_cfg_mode;
sl_config *sl_config_load_mode(const sl_catalog *plugins, const char *path, const char *const *only,
                               size_t nonly, sl_cfg_mode mode, sl_buf *errors);
void sl_config_free(sl_config *c);
sl_pipeline_cfg *sl_config_pipeline(sl_config *c, const char *name);

/* One job's copy of pipeline p (a pipeline of c, or a copy from here): a
 * new heap sl_pipeline_cfg with every setting and plugin pointer copied and
 * its own source/steps/sink options rebuilt from c's nodes with `{{name}}`
 * replaced by vars_json[name] (a JSON object; strings as they are, numbers
 * and booleans as their JSON text, null as empty; NULL or "" = no
 * variables), then validated like a loaded config. Substituted text is not
 * interpolated for ${ENV}; in a secret option the result (and each
 * variable's value) is registered with the redactor. On a problem (an
 * unknown variable, a value invalid for the option) every message is
 * appended to errors, one per line, and NULL is returned. Only reads c:
 * threads may instantiate from the same config at once (not while it is
 * freed). The caller owns the result: sl_pipeline_cfg_free. */
sl_pipeline_cfg *sl_config_instantiate(const sl_config *c, const sl_pipeline_cfg *p,
                                       const char *vars_json, sl_buf *errors);
/* Free a copy from sl_config_instantiate (never one inside an sl_config).
 * NULL is a no-op. */
void sl_pipeline_cfg_free(sl_pipeline_cfg *p);

/* Parse YAML text into a node tree (no validation). Used by tests and fuzzers. */
sl_node *sl_yaml_parse(const char *text, size_t len, const char *file, sl_buf *errors);
void sl_node_free(sl_node *n);

/* Interpolate ${VAR} / ${VAR:-default} / $$ in s. Returns a malloc'd string, or
 * NULL with a message naming the variable ("environment variable X is not set"). */
char *sl_interpolate(const char *s, char *errmsg, size_t errcap);

/* Parse helpers shared with the option accessors; 0 ok, -1 invalid. */
int sl_parse_duration_ms(const char *s, int64_t *out);
int sl_parse_size(const char *s, int64_t *out);
int sl_parse_bool(const char *s, int *out);
int sl_parse_rate(const char *s, double *per_sec, double *burst);

/* Build an sl_opts for a plugin table from a MAP node (used by config and by
 * tests that construct plugins directly). Problems are appended to errors;
 * returns NULL if there were any. `ignore` lists keys handled by the caller
 * (e.g. "type"). */
sl_opts *sl_opts_from_node(const sl_option *table, const sl_node *map, const char *file,
                           const char *ctx_name, const char *const *ignore, sl_buf *errors);
/* Build from "name=value" strings (tests, CLI overrides). */
sl_opts *sl_opts_from_pairs(const sl_option *table, const char *const *pairs, size_t n,
                            sl_buf *errors);
void sl_opts_free(sl_opts *o);

#endif
