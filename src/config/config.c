/* sl_config_load: the configuration file -> validated pipeline definitions.
 *
 * The engine's own keys (top level, pipeline, batch, retry, notify) are
 * described by option tables like a plugin's, so they get the same
 * validation, messages and did-you-mean suggestions. Interpolation runs per
 * selected pipeline, so `sluice run a` needs only the variables of `a`. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/internal.h"
#include "sluice/log.h"
#include "sluice/url.h"
#include "util/schedule.h"

/* Largest configuration file read. */
#define CONFIG_MAX_BYTES ((size_t)16 * 1024 * 1024)
/* Longest pipeline name (it becomes part of log prefixes and state keys). */
#define PIPELINE_NAME_MAX 100

#define DEFAULT_STATE ".sluice/state.db"
#define DEFAULT_LISTEN "127.0.0.1:8080"

static const sl_option top_options[] = {
    {"version", SL_OPT_INT, NULL, 0, NULL, "configuration format version (1)"},
    {"state", SL_OPT_STRING, DEFAULT_STATE, 0, NULL,
     "state store: a SQLite file path or a postgres:// URL"},
    SL_OPTIONS_END,
};
static const char *const top_handled[] = {"pipelines", "serve", NULL};

static const sl_option serve_options[] = {
    {"listen", SL_OPT_STRING, DEFAULT_LISTEN, 0, NULL,
     "address of the webhook/health/metrics server: ADDR:PORT (`sluice serve --listen` wins)"},
    {"threads", SL_OPT_INT, "4", 0, NULL, "HTTP server threads (1..64)"},
    SL_OPTIONS_END,
};

static const sl_option pipeline_options[] = {
    {"concurrency", SL_OPT_INT, NULL, 0, NULL, "simultaneous sink requests (1..1024)"},
    {"rate_limit", SL_OPT_STRING, NULL, 0, NULL,
     "sink requests allowed: \"3000/3s\", \"10/s\", \"90/m\" or a number per second"},
    {"max_failed", SL_OPT_INT, "-1", 0, NULL,
     "dead-lettered records allowed before the run fails (-1: no limit)"},
    {"workers", SL_OPT_INT, "2", 0, NULL, "with a trigger: jobs that may run at once (1..64)"},
    {"job_backoff", SL_OPT_DURATION, "15s", 0, NULL,
     "with a trigger: wait before retrying a failed job, doubled each attempt"},
    {"job_max_backoff", SL_OPT_DURATION, "30m", 0, NULL,
     "with a trigger: longest wait between job attempts"},
    {"schedule", SL_OPT_STRING, NULL, 0, NULL,
     "serve mode: \"every 90m\", or a cron line with an optional time zone such as "
     "\"0 6 * * mon-fri Europe/London\""},
    {"description", SL_OPT_STRING, NULL, 0, NULL, "free text"},
    SL_OPTIONS_END,
};
static const char *const pipeline_handled[] = {
    "source", "steps", "sink", "trigger", "batch", "retry", "notify", "distributed", NULL};

static const sl_option batch_options[] = {
    {"records", SL_OPT_INT, NULL, 0, NULL, "records per sink batch (>= 1)"},
    {"bytes", SL_OPT_SIZE, NULL, 0, NULL, "payload bytes per sink batch"},
    SL_OPTIONS_END,
};

static const sl_option retry_options[] = {
    {"max_attempts", SL_OPT_INT, "8", 0, NULL, "attempts per batch, first one included (1..100)"},
    {"backoff", SL_OPT_DURATION, "500ms", 0, NULL, "first retry delay (doubles each attempt)"},
    {"max_backoff", SL_OPT_DURATION, "60s", 0, NULL, "longest retry delay"},
    {"timeout", SL_OPT_DURATION, "120s", 0, NULL, "per request"},
    SL_OPTIONS_END,
};

static const sl_option notify_options[] = {
    /* required, but checked by hand: an empty URL turns the notification off */
    {"url", SL_OPT_STRING, NULL, SL_OPT_SECRET, NULL,
     "Slack incoming webhook or any http(s) URL; empty: no notification"},
    {"format", SL_OPT_ENUM, NULL, 0, "slack|json",
     "message shape; default slack for hooks.slack.com, else json"},
    {"on", SL_OPT_ENUM, "always", 0, "success|failure|always", "when to send"},
    SL_OPTIONS_END,
};

/* ------------------------------------------------------------- helpers */

static const sl_node *map_get(const sl_node *map, const char *key, int *kline, int *kcol)
{
    long i = cfg_map_find(map, key);
    if (i < 0) {
        return NULL;
    }
    if (kline) {
        *kline = map->key_line[i];
        *kcol = map->key_col[i];
    }
    return map->kids[i];
}

/* A scalar left empty (`steps:`) counts as absent. A NULL value (failed
 * interpolation, already reported) counts as absent too. */
static int is_empty(const sl_node *n)
{
    return !n || (n->kind == SL_NODE_SCALAR && (!n->value || !*n->value));
}

/* The i-th plugin of a kind in the catalog: its name, options and validate
 * hook (NULL name past the end). */
typedef struct plugin_ref {
    const void *plugin;
    const char *name;
    const sl_option *options;
    sl_validate_fn validate;
} plugin_ref;

static plugin_ref catalog_at(const sl_catalog *cat, const char *kind, size_t i)
{
    plugin_ref r = {0};
#define REF(list)                                                                                  \
    do {                                                                                           \
        if (cat->list && cat->list[i]) {                                                           \
            r.plugin = cat->list[i];                                                               \
            r.name = cat->list[i]->name;                                                           \
            r.options = cat->list[i]->options;                                                     \
            r.validate = cat->list[i]->validate;                                                   \
        }                                                                                          \
    } while (0)
    if (strcmp(kind, "source") == 0) {
        REF(sources);
    } else if (strcmp(kind, "step") == 0) {
        REF(steps);
    } else if (strcmp(kind, "trigger") == 0) {
        REF(triggers);
    } else {
        REF(sinks);
    }
#undef REF
    return r;
}

static plugin_ref catalog_find(const sl_catalog *cat, const char *kind, const char *name)
{
    for (size_t i = 0;; i++) {
        plugin_ref r = catalog_at(cat, kind, i);
        if (!r.name || strcmp(r.name, name) == 0) {
            return r;
        }
    }
}

static void names_list(const sl_catalog *cat, char *out, size_t cap, const char *kind)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0;; i++) {
        const char *name = catalog_at(cat, kind, i).name;
        if (!name) {
            break;
        }
        int w = snprintf(out + o, cap - o, "%s%s", o ? ", " : "", name);
        if (w < 0 || (size_t)w >= cap - o) {
            break;
        }
        o += (size_t)w;
    }
}

static char *read_file(const char *path, size_t *len, sl_buf *errors)
{
    char *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        cfg_err(errors, path, 0, 0, NULL, "cannot open the configuration file: %s",
                strerror(errno));
        return NULL;
    }
    sl_buf b;
    sl_buf_init(&b, CONFIG_MAX_BYTES);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        int rc = sl_buf_append(&b, chunk, n);
        if (rc == SL_ERR_LIMIT) {
            cfg_err(errors, path, 0, 0, NULL,
                    "configuration file too large (expected at most 16 MB)");
            goto fail;
        }
        if (rc) {
            cfg_err(errors, path, 0, 0, NULL, "out of memory");
            goto fail;
        }
    }
    if (ferror(f)) {
        cfg_err(errors, path, 0, 0, NULL, "cannot read the configuration file: %s",
                strerror(errno));
        goto fail;
    }
    *len = b.len;
    data = b.data ? sl_buf_steal(&b) : strdup("");
    fclose(f);
    return data;

fail:
    sl_buf_free(&b);
    fclose(f);
    return NULL;
}

static int valid_pipeline_name(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-')) {
            return 0;
        }
    }
    return n > 0 && n <= PIPELINE_NAME_MAX;
}

/* Host of a URL equals host (case-insensitive)? */
static int url_host_is(const char *url, const char *host)
{
    sl_url u;
    int is = sl_url_parse(url, &u, NULL) == 0 && strcasecmp(u.host, host) == 0;
    sl_url_free(&u);
    return is;
}

/* A database URL may carry a password ("postgres://u:pw@host/db" or
 * "...?password=pw"), and a libpq key=value string one too ("host=h
 * password=pw"): register it so it is redacted wherever the text goes. */
static void register_url_password(const char *url)
{
    if (sl_url_scheme_len(url)) {
        sl_url_register_secrets(url);
        return;
    }
    for (const char *q = strstr(url, "password="); q; q = strstr(q + 1, "password=")) {
        const char *v = q + 9;
        size_t n = strcspn(v, " ");
        if (n) {
            char *pw = strndup(v, n);
            sl_secret_register(pw);
            free(pw);
        }
    }
}

/* ------------------------------------------------------------- plugins */

static void plugin_cfg_free(sl_plugin_cfg *pc)
{
    free(pc->type);
    sl_opts_free(pc->opts);
    pc->type = NULL;
    pc->opts = NULL;
}

/* Does any scalar of the block hold a job-variable template ({{name}})? */
static int has_template(const sl_node *n)
{
    if (!n) {
        return 0;
    }
    if (n->kind == SL_NODE_SCALAR) {
        return n->tmpl != NULL;
    }
    for (size_t i = 0; i < n->n; i++) {
        if (has_template(n->kids[i])) {
            return 1;
        }
    }
    return 0;
}

/* A plugin's validate hook reports through this: each problem becomes one
 * message with the option's file:line:col and key path, like every other
 * configuration error, so `check` and `run` refuse the same things. */
typedef struct validate_ctx {
    const sl_opts *opts;
    const char *file;
    const char *path;
    sl_buf *errors;
    int n;
} validate_ctx;

static void validate_report(void *ud, const char *option, const char *fmt, ...)
{
    validate_ctx *v = ud;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char kpath[CFG_PATH_MAX];
    size_t fl = v->file ? strlen(v->file) : 0;
    if (!option && fl && strncmp(msg, v->file, fl) == 0 && msg[fl] == ':') {
        /* a plugin's own message that already names file:line:col and the
         * option (a check shared with its init) */
        cfg_errw(v->errors, "", NULL, "%s", msg);
    } else {
        if (option) {
            cfg_path_key(kpath, sizeof(kpath), v->path, option);
        } else {
            snprintf(kpath, sizeof(kpath), "%s", v->path);
        }
        cfg_errw(v->errors, option ? sl_opt_where(v->opts, option) : NULL, kpath, "%s", msg);
    }
    v->n++;
}

static int run_validate(sl_validate_fn fn, const sl_opts *opts, const char *file, const char *path,
                        sl_buf *errors)
{
    if (!fn) {
        return 0;
    }
    validate_ctx v = {.opts = opts, .file = file, .path = path, .errors = errors};
    int n = fn(opts, validate_report, &v);
    return n > 0 || v.n > 0;
}

/* Validate one plugin block. kind: "source", "step", "sink", "trigger".
 * Returns the plugin found (or NULL, problems reported). Values that are
 * job-variable templates are only checked per job (sl_config_instantiate). */
static const void *load_plugin(const sl_catalog *cat, const char *file, const char *kind,
                               const sl_node *block, int kline, int kcol, const char *path,
                               sl_plugin_cfg *pc, sl_buf *errors)
{
    static const char *const handled[] = {"type", NULL};
    char names[512];
    names_list(cat, names, sizeof(names), kind);

    if (!block || (block->kind == SL_NODE_SCALAR && !block->value)) {
        return NULL;
    }
    cfg_where(pc->where, sizeof(pc->where), file, block->line, block->col);
    if (block->kind != SL_NODE_MAP) {
        cfg_err(errors, file, block->line, block->col, path,
                "found %s (expected a mapping with `type:` and the %s's options)",
                block->kind == SL_NODE_SEQ ? "a list" : "a value", kind);
        return NULL;
    }
    int tl = 0, tc = 0;
    const sl_node *type = map_get(block, "type", &tl, &tc);
    if (!type) {
        cfg_err(errors, file, kline, kcol, path,
                "missing required key 'type' (expected one of: %s)", names);
        return NULL;
    }
    char tpath[CFG_PATH_MAX];
    cfg_path_key(tpath, sizeof(tpath), path, "type");
    if (type->kind != SL_NODE_SCALAR) {
        cfg_err(errors, file, type->line, type->col, tpath, "found %s (expected one of: %s)",
                type->kind == SL_NODE_SEQ ? "a list" : "a mapping", names);
        return NULL;
    }
    if (!type->value) {
        return NULL;
    }
    plugin_ref ref = catalog_find(cat, kind, type->value);
    const void *plugin = ref.plugin;
    const sl_option *table = ref.options;
    if (!plugin) {
        char q[64];
        cfg_err(errors, file, type->line, type->col, tpath, "unknown %s %s (expected one of: %s)",
                kind, cfg_quote(type->value, q, sizeof(q)), names);
        return NULL;
    }
    pc->type = strdup(type->value);
    if (!pc->type) {
        cfg_err(errors, file, 0, 0, NULL, "out of memory");
        return NULL;
    }
    int bad = 0;
    pc->opts = cfg_opts_build(table, block, file, path, handled, errors, &bad, CFG_TMPL_DEFER);
    if (!bad && pc->opts && !has_template(block)) {
        /* values that are job templates are checked per job, filled in */
        bad = run_validate(ref.validate, pc->opts, file, path, errors);
    }
    if (bad) {
        sl_opts_free(pc->opts);
        pc->opts = NULL;
    }
    return pc->opts ? plugin : NULL;
}

/* `distributed:`: the options of the kafka source and sink (one table),
 * validated like a plugin block of that type, with no `type:` key. */
static void load_distributed(const sl_catalog *cat, const char *file, const sl_node *block,
                             const char *path, sl_pipeline_cfg *p, sl_buf *errors)
{
    plugin_ref src = catalog_find(cat, "source", "kafka");
    plugin_ref sink = catalog_find(cat, "sink", "kafka");
    if (!src.plugin || !sink.plugin) {
        cfg_err(errors, file, block->line, block->col, path,
                "distributed mode needs the kafka source and sink, and this build has none "
                "(expected a build with librdkafka)");
        return;
    }
    if (p->trigger.type) {
        cfg_err(errors, file, block->line, block->col, path,
                "a triggered pipeline runs as jobs and cannot be distributed (expected "
                "`distributed:` only on a pipeline with a source of its own)");
        return;
    }
    /* `brokers: ${KAFKA_BROKERS:-}` left empty: distributed mode is off, so
     * one file serves both ways and `run` never needs a broker */
    const sl_node *brokers =
        block->kind == SL_NODE_MAP ? map_get(block, "brokers", NULL, NULL) : NULL;
    if (brokers && brokers->kind == SL_NODE_SCALAR && brokers->value && !*brokers->value) {
        return;
    }
    cfg_where(p->distributed.where, sizeof(p->distributed.where), file, block->line, block->col);
    if (block->kind != SL_NODE_MAP) {
        cfg_err(errors, file, block->line, block->col, path,
                "found %s (expected a mapping of Kafka settings: brokers, topic, key, ...)",
                block->kind == SL_NODE_SEQ ? "a list" : "a value");
        return;
    }
    p->distributed.type = strdup("kafka");
    if (!p->distributed.type) {
        cfg_err(errors, file, 0, 0, NULL, "out of memory");
        return;
    }
    int bad = 0;
    p->distributed.opts =
        cfg_opts_build(src.options, block, file, path, NULL, errors, &bad, CFG_TMPL_CHECK);
    if (!bad && p->distributed.opts) {
        bad = run_validate(src.validate, p->distributed.opts, file, path, errors);
    }
    if (bad) {
        sl_opts_free(p->distributed.opts);
        p->distributed.opts = NULL;
        return;
    }
    p->dist_source_plugin = src.plugin;
    p->dist_sink_plugin = sink.plugin;
}

int sl_pipeline_role(const sl_pipeline_cfg *p, sl_dist_role role, sl_pipeline_cfg *out,
                     double *rate_share, sl_error *err)
{
    if (!p->distributed.opts || !p->dist_source_plugin || !p->dist_sink_plugin) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "%s: pipeline %s has no `distributed:` block, or its brokers are "
                            "empty (expected brokers, topic and key there to run it with "
                            "fanout and worker)",
                            p->where, p->name);
    }
    *out = *p;
    *rate_share = 1.0;
    if (role == SL_DIST_FANOUT) {
        out->steps = NULL;
        out->step_plugins = NULL;
        out->nsteps = 0;
        out->sink = p->distributed;
        out->sink_plugin = p->dist_sink_plugin;
        /* the pipeline's delivery settings are for its own sink */
        out->concurrency = -1;
        out->rate_per_sec = out->rate_burst = -1;
        out->batch_records = -1;
        out->batch_bytes = -1;
        return 0;
    }
    for (size_t i = 0; i < p->nsteps; i++) {
        if (p->step_plugins[i]->drain) {
            return sl_error_set(err, SL_ERR_CONFIG,
                                "%s: step %zu (%s) needs the whole input in one process (it "
                                "emits at the end of it), so pipeline %s cannot be split among "
                                "workers (expected steps that work record by record)",
                                p->steps[i].where, i + 1, p->steps[i].type, p->name);
        }
    }
    out->source = p->distributed;
    out->source_plugin = p->dist_source_plugin;
    int64_t workers = sl_opt_int(p->distributed.opts, "workers");
    *rate_share = workers > 1 ? 1.0 / (double)workers : 1.0;
    return 0;
}

/* ------------------------------------------------------------- engine keys */

static void report_range(sl_buf *errors, const sl_opts *o, const char *path, const char *name,
                         int64_t v, const char *expected)
{
    char kpath[CFG_PATH_MAX];
    cfg_path_key(kpath, sizeof(kpath), path, name);
    cfg_errw(errors, sl_opt_where(o, name), kpath, "%lld is out of range (expected %s)",
             (long long)v, expected);
}

static void load_batch(const char *file, const sl_node *n, const char *path, sl_pipeline_cfg *p,
                       sl_buf *errors)
{
    int bad = 0;
    sl_opts *o = cfg_opts_build(batch_options, n, file, path, NULL, errors, &bad, CFG_TMPL_CHECK);
    if (!o) {
        return;
    }
    if (sl_opt_isset(o, "records")) {
        int64_t r = sl_opt_int(o, "records");
        if (r < 1 || r > 10000000) {
            report_range(errors, o, path, "records", r, "an integer from 1 to 10000000");
        } else {
            p->batch_records = (int)r;
        }
    }
    if (sl_opt_isset(o, "bytes")) {
        int64_t b = sl_opt_size(o, "bytes");
        if (b < 1) {
            report_range(errors, o, path, "bytes", b, "a size of at least 1 byte");
        } else {
            p->batch_bytes = b;
        }
    }
    /* a destination's own per-request maximum (Braze: 75) cannot be exceeded */
    if (p->sink_plugin && p->batch_records > 0 && p->sink_plugin->defaults.max_batch_records > 0 &&
        p->batch_records > p->sink_plugin->defaults.max_batch_records) {
        char kpath[CFG_PATH_MAX];
        cfg_path_key(kpath, sizeof(kpath), path, "records");
        cfg_errw(errors, sl_opt_where(o, "records"), kpath,
                 "%d is more than the %s sink accepts per request (expected at most %d)",
                 p->batch_records, p->sink_plugin->name,
                 p->sink_plugin->defaults.max_batch_records);
    }
    sl_opts_free(o);
}

static void load_retry(const char *file, const sl_node *n, const char *path, sl_pipeline_cfg *p,
                       sl_buf *errors)
{
    int bad = 0;
    sl_opts *o = cfg_opts_build(retry_options, n, file, path, NULL, errors, &bad, CFG_TMPL_CHECK);
    if (!o) {
        return;
    }
    int64_t a = sl_opt_int(o, "max_attempts");
    if (a < 1 || a > 100) {
        report_range(errors, o, path, "max_attempts", a, "an integer from 1 to 100");
    } else {
        p->max_attempts = (int)a;
    }
    p->backoff_base_ms = sl_opt_duration_ms(o, "backoff");
    p->backoff_max_ms = sl_opt_duration_ms(o, "max_backoff");
    p->timeout_ms = sl_opt_duration_ms(o, "timeout");
    if (p->backoff_max_ms < p->backoff_base_ms) {
        char kpath[CFG_PATH_MAX];
        cfg_path_key(kpath, sizeof(kpath), path, "max_backoff");
        cfg_errw(errors, sl_opt_where(o, "max_backoff"), kpath,
                 "shorter than retry.backoff (expected at least %lldms)",
                 (long long)p->backoff_base_ms);
    }
    if (p->timeout_ms < 1) {
        char kpath[CFG_PATH_MAX];
        cfg_path_key(kpath, sizeof(kpath), path, "timeout");
        cfg_errw(errors, sl_opt_where(o, "timeout"), kpath,
                 "must be longer than 0 (expected a duration such as 30s)");
    }
    sl_opts_free(o);
}

/* 0: nc filled; 1: notification turned off by an empty URL; -1: problems
 * reported. */
static int load_one_notify(const char *file, const sl_node *n, const char *path, sl_notify_cfg *nc,
                           sl_buf *errors)
{
    sl_opts *o = sl_opts_from_node(notify_options, n, file, path, NULL, errors);
    if (!o) {
        return -1;
    }
    int rc = -1;
    const char *url = sl_opt_str(o, "url");
    snprintf(nc->where, sizeof(nc->where), "%s", sl_opt_where(o, "url"));
    if (!url) {
        cfg_err(errors, file, n->line, n->col, path,
                "missing required key 'url' (expected a Slack incoming webhook or another "
                "http(s) URL)");
        goto done;
    }
    if (!*url) {
        /* `url: ${SLACK_WEBHOOK_URL:-}`: one file serves with and without a webhook */
        rc = 1;
        goto done;
    }
    if (strncasecmp(url, "https://", 8) != 0 && strncasecmp(url, "http://", 7) != 0) {
        char kpath[CFG_PATH_MAX];
        cfg_path_key(kpath, sizeof(kpath), path, "url");
        /* the URL is a credential: do not echo it */
        cfg_errw(errors, sl_opt_where(o, "url"), kpath,
                 "not an http(s) URL (expected https://hooks.slack.com/... or another "
                 "http(s) URL)");
        goto done;
    }
    nc->url = strdup(url);
    if (!nc->url) {
        goto done;
    }
    if (sl_opt_isset(o, "format")) {
        nc->format =
            strcmp(sl_opt_str(o, "format"), "slack") == 0 ? SL_NOTIFY_SLACK : SL_NOTIFY_JSON;
    } else {
        nc->format = url_host_is(url, "hooks.slack.com") ? SL_NOTIFY_SLACK : SL_NOTIFY_JSON;
    }
    const char *on = sl_opt_str(o, "on");
    nc->on_success = strcmp(on, "failure") != 0;
    nc->on_failure = strcmp(on, "success") != 0;
    rc = 0;

done:
    sl_opts_free(o);
    return rc;
}

static void load_notify(const char *file, const sl_node *n, const char *path, sl_pipeline_cfg *p,
                        sl_buf *errors)
{
    size_t count = n->kind == SL_NODE_SEQ ? n->n : 1;
    if (n->kind == SL_NODE_SCALAR) {
        cfg_err(errors, file, n->line, n->col, path,
                "found a value (expected a mapping with `url:`, or a list of them)");
        return;
    }
    p->notify = calloc(count, sizeof(*p->notify));
    if (!p->notify) {
        cfg_err(errors, file, 0, 0, NULL, "out of memory");
        return;
    }
    for (size_t i = 0; i < count; i++) {
        const sl_node *item = n->kind == SL_NODE_SEQ ? n->kids[i] : n;
        char ipath[CFG_PATH_MAX];
        if (n->kind == SL_NODE_SEQ) {
            cfg_path_index(ipath, sizeof(ipath), path, i);
        } else {
            snprintf(ipath, sizeof(ipath), "%s", path);
        }
        if (item->kind != SL_NODE_MAP) {
            if (!(item->kind == SL_NODE_SCALAR && !item->value)) {
                cfg_err(errors, file, item->line, item->col, ipath,
                        "found %s (expected a mapping with `url:`)",
                        item->kind == SL_NODE_SEQ ? "a list" : "a value");
            }
            continue;
        }
        int rc = load_one_notify(file, item, ipath, &p->notify[p->nnotify], errors);
        if (rc == 0) {
            p->nnotify++;
        } else {
            free(p->notify[p->nnotify].url);
            memset(&p->notify[p->nnotify], 0, sizeof(p->notify[p->nnotify]));
        }
    }
}

/* ------------------------------------------------------------- pipelines */

static void pipeline_free(sl_pipeline_cfg *p)
{
    free(p->name);
    plugin_cfg_free(&p->source);
    for (size_t i = 0; i < p->nsteps; i++) {
        plugin_cfg_free(&p->steps[i]);
    }
    free(p->steps);
    free(p->step_plugins);
    plugin_cfg_free(&p->sink);
    plugin_cfg_free(&p->trigger);
    plugin_cfg_free(&p->distributed);
    free(p->schedule);
    for (size_t i = 0; i < p->nnotify; i++) {
        free(p->notify[i].url);
    }
    free(p->notify);
}

static void load_pipeline(const sl_catalog *cat, const char *file, const char *name, int nline,
                          int ncol, sl_node *body, sl_pipeline_cfg *p, sl_buf *errors)
{
    char path[CFG_PATH_MAX];
    cfg_path_key(path, sizeof(path), "pipelines", name);

    p->concurrency = -1;
    p->rate_per_sec = -1;
    p->rate_burst = -1;
    p->batch_records = -1;
    p->batch_bytes = -1;
    p->max_attempts = 8;
    p->backoff_base_ms = 500;
    p->backoff_max_ms = 60000;
    p->timeout_ms = 120000;
    p->max_failed = -1;
    p->workers = 2;
    p->job_backoff_ms = 15000;
    p->job_max_backoff_ms = 1800000;
    cfg_where(p->where, sizeof(p->where), file, nline, ncol);
    p->name = strdup(name);
    if (!p->name) {
        cfg_err(errors, file, 0, 0, NULL, "out of memory");
        return;
    }

    /* Job variables are allowed when a trigger block is written, even an
     * invalid one (reported below): otherwise one typo there would also flag
     * every `{{name}}` of the pipeline. Decided before interpolation, so only
     * a mapping counts (`trigger: ${X:-}` could turn out empty). */
    long ti = cfg_map_find(body, "trigger");
    int has_trigger = ti >= 0 && body->kids[ti]->kind == SL_NODE_MAP;
    /* only now: the environment of pipelines not selected is not needed */
    cfg_prepare_pipeline(body, file, path, has_trigger, &p->templated, errors);

    if (body->kind == SL_NODE_SCALAR && !body->value) {
        return;
    }
    if (body->kind != SL_NODE_MAP) {
        cfg_err(errors, file, nline, ncol, path,
                "found %s (expected a mapping with `source:` and `sink:`)",
                body->kind == SL_NODE_SEQ ? "a list" : "a value");
        return;
    }

    int pbad = 0;
    sl_opts *po = cfg_opts_build(pipeline_options, body, file, path, pipeline_handled, errors,
                                 &pbad, CFG_TMPL_CHECK);
    if (po) {
        int64_t mf = sl_opt_int(po, "max_failed");
        if (mf < -1 || mf > 2000000000) {
            report_range(errors, po, path, "max_failed", mf,
                         "-1 for no limit, or a number of records from 0 to 2000000000");
        } else {
            p->max_failed = (int)mf;
        }
        p->job_backoff_ms = sl_opt_duration_ms(po, "job_backoff");
        p->job_max_backoff_ms = sl_opt_duration_ms(po, "job_max_backoff");
        int64_t w = sl_opt_int(po, "workers");
        if (w < 1 || w > 64) {
            report_range(errors, po, path, "workers", w, "an integer from 1 to 64");
        } else {
            p->workers = (int)w;
        }
        if (sl_opt_isset(po, "concurrency")) {
            int64_t c = sl_opt_int(po, "concurrency");
            if (c < 1 || c > 1024) {
                report_range(errors, po, path, "concurrency", c, "an integer from 1 to 1024");
            } else {
                p->concurrency = (int)c;
            }
        }
        if (sl_opt_isset(po, "rate_limit")) {
            const char *r = sl_opt_str(po, "rate_limit");
            if (sl_parse_rate(r, &p->rate_per_sec, &p->rate_burst) < 0) {
                char kpath[CFG_PATH_MAX], q[64];
                cfg_path_key(kpath, sizeof(kpath), path, "rate_limit");
                cfg_errw(errors, sl_opt_where(po, "rate_limit"), kpath,
                         "invalid rate %s (expected a rate such as 3000/3s, 10/s, 90/m, or a "
                         "number per second)",
                         cfg_quote(r, q, sizeof(q)));
                p->rate_per_sec = p->rate_burst = -1;
            }
        }
        const char *sched = sl_opt_str(po, "schedule");
        if (sched && *sched) {
            sl_error serr = {0};
            sl_schedule *parsed = sl_schedule_parse(sched, &serr);
            if (!parsed) {
                char skpath[CFG_PATH_MAX], q[160];
                cfg_path_key(skpath, sizeof(skpath), path, "schedule");
                cfg_errw(errors, sl_opt_where(po, "schedule"), skpath, "invalid schedule %s: %s",
                         cfg_quote(sched, q, sizeof(q)), serr.msg);
            }
            sl_schedule_free(parsed);
            p->schedule = strdup(sched);
        }
        sl_opts_free(po);
    }

    int kl = nline, kc = ncol;
    char kpath[CFG_PATH_MAX];

    const sl_node *src = map_get(body, "source", &kl, &kc);
    cfg_path_key(kpath, sizeof(kpath), path, "source");
    if (is_empty(src)) {
        if (!src || src->value) {
            cfg_err(errors, file, src ? kl : nline, src ? kc : ncol, path,
                    "missing required key 'source' (expected a mapping with `type:` and the "
                    "source's options)");
        }
    } else {
        p->source_plugin = load_plugin(cat, file, "source", src, kl, kc, kpath, &p->source, errors);
    }

    const sl_node *steps = map_get(body, "steps", &kl, &kc);
    cfg_path_key(kpath, sizeof(kpath), path, "steps");
    if (!is_empty(steps)) {
        if (steps->kind != SL_NODE_SEQ) {
            cfg_err(errors, file, steps->line, steps->col, kpath,
                    "found %s (expected a list of steps, each `- type: ...`)",
                    steps->kind == SL_NODE_MAP ? "a mapping" : "a value");
        } else if (steps->n) {
            p->steps = calloc(steps->n, sizeof(*p->steps));
            p->step_plugins = calloc(steps->n, sizeof(*p->step_plugins));
            if (!p->steps || !p->step_plugins) {
                cfg_err(errors, file, 0, 0, NULL, "out of memory");
            } else {
                p->nsteps = steps->n;
                for (size_t i = 0; i < steps->n; i++) {
                    char spath[CFG_PATH_MAX];
                    cfg_path_index(spath, sizeof(spath), kpath, i);
                    const sl_node *s = steps->kids[i];
                    p->step_plugins[i] = load_plugin(cat, file, "step", s, s->line, s->col, spath,
                                                     &p->steps[i], errors);
                }
            }
        }
    }

    const sl_node *sink = map_get(body, "sink", &kl, &kc);
    cfg_path_key(kpath, sizeof(kpath), path, "sink");
    if (is_empty(sink)) {
        if (!sink || sink->value) {
            cfg_err(errors, file, sink ? kl : nline, sink ? kc : ncol, path,
                    "missing required key 'sink' (expected a mapping with `type:` and the "
                    "sink's options)");
        }
    } else {
        p->sink_plugin = load_plugin(cat, file, "sink", sink, kl, kc, kpath, &p->sink, errors);
    }

    const sl_node *trig = map_get(body, "trigger", &kl, &kc);
    cfg_path_key(kpath, sizeof(kpath), path, "trigger");
    if (!is_empty(trig)) {
        p->trigger_plugin =
            load_plugin(cat, file, "trigger", trig, kl, kc, kpath, &p->trigger, errors);
        if (p->schedule) {
            cfg_err(errors, file, kl, kc, kpath,
                    "a pipeline has either a `trigger:` (runs on webhooks) or a `schedule:`, not "
                    "both (expected one of them; put the scheduled run in its own pipeline)");
        }
    }

    const sl_node *batch = map_get(body, "batch", NULL, NULL);
    if (batch) {
        cfg_path_key(kpath, sizeof(kpath), path, "batch");
        load_batch(file, batch, kpath, p, errors);
    }
    const sl_node *retry = map_get(body, "retry", NULL, NULL);
    if (retry) {
        cfg_path_key(kpath, sizeof(kpath), path, "retry");
        load_retry(file, retry, kpath, p, errors);
    }
    const sl_node *notify = map_get(body, "notify", NULL, NULL);
    if (!is_empty(notify)) {
        cfg_path_key(kpath, sizeof(kpath), path, "notify");
        load_notify(file, notify, kpath, p, errors);
    }
    const sl_node *dist = map_get(body, "distributed", &kl, &kc);
    if (!is_empty(dist)) {
        cfg_path_key(kpath, sizeof(kpath), path, "distributed");
        load_distributed(cat, file, dist, kpath, p, errors);
    }
}

/* ------------------------------------------------------------- serve */

/* "ADDR:PORT" as the HTTP server takes it: "0.0.0.0:8080", "[::1]:0". */
static int valid_listen(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s) {
        return 0;
    }
    if (s[0] == '[' && colon[-1] != ']') {
        return 0;
    }
    if (s[0] != '[' && memchr(s, ':', (size_t)(colon - s))) {
        return 0; /* a bare IPv6 address: the port would be ambiguous */
    }
    int64_t port;
    if (cfg_parse_int(colon + 1, &port) < 0 || port < 0 || port > 65535 || colon[1] == '+' ||
        colon[1] == '-') {
        return 0;
    }
    for (const char *q = s; q < colon; q++) {
        if ((unsigned char)*q <= ' ' || *q == '/') {
            return 0;
        }
    }
    return 1;
}

/* `serve:`. c->serve_listen is always set (the default when invalid) unless
 * out of memory. */
static void load_serve(const char *file, const sl_node *n, sl_config *c, sl_buf *errors)
{
    c->serve_threads = 4;
    int bad = 0;
    sl_opts *o =
        n ? cfg_opts_build(serve_options, n, file, "serve", NULL, errors, &bad, CFG_TMPL_CHECK)
          : NULL;
    const char *listen = o ? sl_opt_str(o, "listen") : DEFAULT_LISTEN;
    if (o && !valid_listen(listen)) {
        char q[64];
        cfg_errw(errors, sl_opt_where(o, "listen"), "serve.listen",
                 "invalid address %s (expected ADDR:PORT such as 127.0.0.1:8080, 0.0.0.0:80 or "
                 "[::1]:8080)",
                 cfg_quote(listen, q, sizeof(q)));
        listen = DEFAULT_LISTEN;
    }
    if (o) {
        int64_t t = sl_opt_int(o, "threads");
        if (t < 1 || t > 64) {
            report_range(errors, o, "serve", "threads", t, "an integer from 1 to 64");
        } else {
            c->serve_threads = (int)t;
        }
    }
    c->serve_listen = strdup(listen);
    sl_opts_free(o);
}

/* ------------------------------------------------------------- jobs */

void sl_pipeline_cfg_free(sl_pipeline_cfg *p)
{
    if (!p) {
        return;
    }
    pipeline_free(p);
    free(p);
}

/* Rebuild one plugin block of an instantiated copy from its node. */
static int instantiate_plugin(const char *file, const sl_node *block, const sl_option *table,
                              sl_validate_fn validate, const cfg_vars *vars, const char *path,
                              const sl_plugin_cfg *from, sl_plugin_cfg *to, sl_buf *errors)
{
    static const char *const handled[] = {"type", NULL};
    int bad = 0, obad = 0;
    if (!block || !from->type) {
        cfg_err(errors, file, 0, 0, path, "not a loaded pipeline of this configuration");
        return -1;
    }
    memcpy(to->where, from->where, sizeof(to->where));
    to->type = strdup(from->type);
    if (!to->type) {
        cfg_err(errors, file, 0, 0, path, "out of memory");
        return -1;
    }
    sl_node *copy = cfg_subst_block(block, table, vars, file, path, errors, &bad);
    if (!copy) {
        return -1;
    }
    to->opts = cfg_opts_build(table, copy, file, path, handled, errors, &obad, CFG_TMPL_CHECK);
    sl_node_free(copy);
    if (!bad && !obad && to->opts && has_template(block)) {
        obad = run_validate(validate, to->opts, file, path, errors);
    }
    if (bad || obad) {
        sl_opts_free(to->opts);
        to->opts = NULL;
        return -1;
    }
    return 0;
}

sl_pipeline_cfg *sl_config_instantiate(const sl_config *c, const sl_pipeline_cfg *p,
                                       const char *vars_json, sl_buf *errors)
{
    sl_buf local = {0};
    sl_buf *errs = errors ? errors : &local;
    size_t start = errs->len;
    sl_pipeline_cfg *q = NULL;
    cfg_vars *vars = NULL;
    const char *file = c && c->path ? c->path : "";
    char path[CFG_PATH_MAX], kpath[CFG_PATH_MAX];

    if (!c || !p || !p->name) {
        cfg_err(errs, NULL, 0, 0, NULL, "no pipeline to instantiate");
        goto fail;
    }
    cfg_path_key(path, sizeof(path), "pipelines", p->name);
    /* the pipeline's nodes, as sl_config_load prepared them (read only) */
    const sl_node *pl = map_get(c->root, "pipelines", NULL, NULL);
    long bi = pl ? cfg_map_find(pl, p->name) : -1;
    const sl_node *body = bi >= 0 ? pl->kids[bi] : NULL;
    if (!body || body->kind != SL_NODE_MAP || !p->source_plugin || !p->sink_plugin) {
        cfg_err(errs, file, 0, 0, path, "not a loaded pipeline of this configuration");
        goto fail;
    }
    vars = cfg_vars_parse(vars_json, errs);
    if (!vars) {
        goto fail;
    }
    q = calloc(1, sizeof(*q));
    if (!q) {
        cfg_err(errs, file, 0, 0, path, "out of memory");
        goto fail;
    }
    /* Every scalar setting and the plugin pointers; what p owns is copied
     * below (a pointer added to sl_pipeline_cfg must be added there). */
    *q = *p;
    q->name = NULL;
    memset(&q->source, 0, sizeof(q->source));
    q->steps = NULL;
    q->step_plugins = NULL;
    q->nsteps = 0;
    memset(&q->sink, 0, sizeof(q->sink));
    memset(&q->trigger, 0, sizeof(q->trigger));
    memset(&q->distributed, 0, sizeof(q->distributed)); /* a job is never distributed */
    q->dist_source_plugin = NULL;
    q->dist_sink_plugin = NULL;
    q->schedule = NULL;
    q->notify = NULL;
    q->nnotify = 0;

    q->name = strdup(p->name);
    if (!q->name || (p->schedule && !(q->schedule = strdup(p->schedule)))) {
        cfg_err(errs, file, 0, 0, path, "out of memory");
        goto fail;
    }
    if (p->nnotify) {
        q->notify = calloc(p->nnotify, sizeof(*q->notify));
        if (!q->notify) {
            cfg_err(errs, file, 0, 0, path, "out of memory");
            goto fail;
        }
        for (; q->nnotify < p->nnotify; q->nnotify++) {
            q->notify[q->nnotify] = p->notify[q->nnotify];
            q->notify[q->nnotify].url = strdup(p->notify[q->nnotify].url);
            if (!q->notify[q->nnotify].url) {
                cfg_err(errs, file, 0, 0, path, "out of memory");
                goto fail;
            }
        }
    }

    /* every block is built, so one job reports all its problems at once */
    int bad = 0;
    cfg_path_key(kpath, sizeof(kpath), path, "source");
    bad |= instantiate_plugin(file, map_get(body, "source", NULL, NULL), p->source_plugin->options,
                              p->source_plugin->validate, vars, kpath, &p->source, &q->source,
                              errs) < 0;
    const sl_node *steps = map_get(body, "steps", NULL, NULL);
    if (p->nsteps) {
        q->steps = calloc(p->nsteps, sizeof(*q->steps));
        q->step_plugins = calloc(p->nsteps, sizeof(*q->step_plugins));
        if (!q->steps || !q->step_plugins) {
            cfg_err(errs, file, 0, 0, path, "out of memory");
            goto fail;
        }
        if (!steps || steps->kind != SL_NODE_SEQ || steps->n != p->nsteps) {
            cfg_err(errs, file, 0, 0, path, "not a loaded pipeline of this configuration");
            goto fail;
        }
        q->nsteps = p->nsteps;
        char spath[CFG_PATH_MAX];
        cfg_path_key(kpath, sizeof(kpath), path, "steps");
        for (size_t i = 0; i < p->nsteps; i++) {
            q->step_plugins[i] = p->step_plugins[i];
            cfg_path_index(spath, sizeof(spath), kpath, i);
            bad |= instantiate_plugin(file, steps->kids[i], p->step_plugins[i]->options,
                                      p->step_plugins[i]->validate, vars, spath, &p->steps[i],
                                      &q->steps[i], errs) < 0;
        }
    }
    cfg_path_key(kpath, sizeof(kpath), path, "sink");
    bad |= instantiate_plugin(file, map_get(body, "sink", NULL, NULL), p->sink_plugin->options,
                              p->sink_plugin->validate, vars, kpath, &p->sink, &q->sink, errs) < 0;
    if (p->trigger_plugin) {
        cfg_path_key(kpath, sizeof(kpath), path, "trigger");
        bad |= instantiate_plugin(file, map_get(body, "trigger", NULL, NULL),
                                  p->trigger_plugin->options, p->trigger_plugin->validate, vars,
                                  kpath, &p->trigger, &q->trigger, errs) < 0;
    }
    if (bad || errs->len > start) {
        goto fail;
    }
    cfg_vars_free(vars);
    sl_buf_free(&local);
    return q;

fail:
    cfg_redact_tail(errs, start);
    cfg_sort_tail(errs, start, file);
    if (errs->len == start) {
        cfg_err(errs, file, 0, 0, path, "invalid job");
    }
    cfg_vars_free(vars);
    sl_pipeline_cfg_free(q);
    sl_buf_free(&local);
    return NULL;
}

/* ------------------------------------------------------------- loading */

void sl_config_free(sl_config *c)
{
    if (!c) {
        return;
    }
    for (size_t i = 0; i < c->npipelines; i++) {
        pipeline_free(&c->pipelines[i]);
    }
    free(c->pipelines);
    free(c->path);
    free(c->state_url);
    free(c->serve_listen);
    sl_node_free(c->root);
    free(c);
}

sl_pipeline_cfg *sl_config_pipeline(sl_config *c, const char *name)
{
    for (size_t i = 0; c && name && i < c->npipelines; i++) {
        if (strcmp(c->pipelines[i].name, name) == 0) {
            return &c->pipelines[i];
        }
    }
    return NULL;
}

/* Index of the pipeline called name in the pipelines mapping, reporting an
 * unknown one with the valid names (and a suggestion). */
static long find_selected(const char *file, const sl_node *pl, const char *name, sl_buf *errors)
{
    long i = cfg_map_find(pl, name);
    if (i >= 0) {
        return i;
    }
    char valid[1024] = "";
    size_t o = 0;
    const char *best = NULL;
    int bestd = 3;
    for (size_t k = 0; k < pl->n; k++) {
        int w = snprintf(valid + o, sizeof(valid) - o, "%s%s", o ? ", " : "", pl->keys[k]);
        if (w > 0 && (size_t)w < sizeof(valid) - o) {
            o += (size_t)w;
        }
        int d = cfg_edit_distance(name, pl->keys[k], 2);
        if (d < bestd && d < (int)strlen(name)) {
            bestd = d;
            best = pl->keys[k];
        }
    }
    char q[64];
    if (best) {
        cfg_err(errors, file, 0, 0, NULL,
                "pipeline %s not found, did you mean '%s'? (expected one of: %s)",
                cfg_quote(name, q, sizeof(q)), best, valid);
    } else {
        cfg_err(errors, file, 0, 0, NULL, "pipeline %s not found (expected one of: %s)",
                cfg_quote(name, q, sizeof(q)), valid);
    }
    return -1;
}

/* `type:` of a plugin block for an outline: interpolated when it can be
 * (a missing variable leaves the text as written). NULL when absent. */
static char *outline_type(const sl_node *body, const char *key)
{
    const sl_node *block = map_get(body, key, NULL, NULL);
    const sl_node *type =
        block && block->kind == SL_NODE_MAP ? map_get(block, "type", NULL, NULL) : NULL;
    if (!type || type->kind != SL_NODE_SCALAR || !type->value) {
        return NULL;
    }
    char msg[64];
    char *v = strchr(type->value, '$') ? sl_interpolate(type->value, msg, sizeof(msg)) : NULL;
    return v ? v : strdup(type->value);
}

/* An outline of pipeline `name` for `sluice status`: its name and the types
 * of its source, sink and trigger, read as written. Options are neither
 * interpolated nor validated, so the environment the pipeline's run needs
 * (URLs, keys) may be absent. Never reports an error. */
static void load_outline(const sl_catalog *cat, const char *file, const char *name, int nline,
                         int ncol, const sl_node *body, sl_pipeline_cfg *p, sl_buf *errors)
{
    cfg_where(p->where, sizeof(p->where), file, nline, ncol);
    p->name = strdup(name);
    if (!p->name) {
        cfg_err(errors, file, 0, 0, NULL, "out of memory");
        return;
    }
    if (!body || body->kind != SL_NODE_MAP) {
        return;
    }
    /* the schedule too, when it can be read: status shows the next run */
    const sl_node *sched = map_get(body, "schedule", NULL, NULL);
    if (sched && sched->kind == SL_NODE_SCALAR && sched->value && *sched->value) {
        sl_error serr = {0};
        sl_schedule *parsed = sl_schedule_parse(sched->value, &serr);
        if (parsed) {
            p->schedule = strdup(sched->value);
        }
        sl_schedule_free(parsed);
    }
    p->source.type = outline_type(body, "source");
    p->sink.type = outline_type(body, "sink");
    p->trigger.type = outline_type(body, "trigger");
    const sl_node *dist = map_get(body, "distributed", NULL, NULL);
    const sl_node *brokers =
        dist && dist->kind == SL_NODE_MAP ? map_get(dist, "brokers", NULL, NULL) : NULL;
    if (brokers && brokers->kind == SL_NODE_SCALAR && brokers->value) {
        /* on when its brokers are set (status then asks the group) */
        char msg[64];
        char *v = sl_interpolate(brokers->value, msg, sizeof(msg));
        if (v && *v) {
            p->distributed.type = strdup("kafka");
        }
        free(v);
    }
    if (p->source.type) {
        p->source_plugin = catalog_find(cat, "source", p->source.type).plugin;
    }
    if (p->sink.type) {
        p->sink_plugin = catalog_find(cat, "sink", p->sink.type).plugin;
    }
    if (p->trigger.type) {
        p->trigger_plugin = catalog_find(cat, "trigger", p->trigger.type).plugin;
    }
}

sl_config *sl_config_load(const sl_catalog *plugins, const char *path, const char *const *only,
                          size_t nonly, sl_buf *errors)
{
    return sl_config_load_mode(plugins, path, only, nonly, SL_CFG_FULL, errors);
}

sl_config *sl_config_load_mode(const sl_catalog *plugins, const char *path, const char *const *only,
                               size_t nonly, sl_cfg_mode mode, sl_buf *errors)
{
    sl_buf local = {0};
    sl_buf *errs = errors ? errors : &local;
    size_t start = errs->len;
    sl_config *c = NULL;
    sl_opts *top = NULL;
    size_t len = 0;
    if (!path) {
        cfg_err(errs, NULL, 0, 0, NULL, "no configuration file given");
        goto fail;
    }
    char *text = read_file(path, &len, errs);
    if (!text) {
        goto fail;
    }
    sl_node *root = sl_yaml_parse(text, len, path, errs);
    free(text);
    if (!root) {
        goto fail;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        sl_node_free(root);
        cfg_err(errs, path, 0, 0, NULL, "out of memory");
        goto fail;
    }
    c->root = root;
    c->path = strdup(path);
    if (!c->path) {
        cfg_err(errs, path, 0, 0, NULL, "out of memory");
        goto fail;
    }
    if (root->kind == SL_NODE_SCALAR && !*root->value) {
        cfg_err(errs, path, 0, 0, NULL,
                "empty configuration (expected a mapping with `pipelines:`)");
        goto fail;
    }
    if (root->kind != SL_NODE_MAP) {
        cfg_err(errs, path, root->line, root->col, NULL,
                "found %s at the top level (expected a mapping with `pipelines:`)",
                root->kind == SL_NODE_SEQ ? "a list" : "a value");
        goto fail;
    }

    /* top level: `state:` is always needed, so always interpolated */
    for (size_t i = 0; i < root->n; i++) {
        if (strcmp(root->keys[i], "state") == 0 || strcmp(root->keys[i], "version") == 0 ||
            strcmp(root->keys[i], "serve") == 0) {
            cfg_interpolate_tree(root->kids[i], path, root->keys[i], errs);
        }
    }
    int topbad = 0;
    top = cfg_opts_build(top_options, root, path, "", top_handled, errs, &topbad, CFG_TMPL_CHECK);
    if (top) {
        if (sl_opt_isset(top, "version") && sl_opt_int(top, "version") != 1) {
            cfg_errw(errs, sl_opt_where(top, "version"), "version",
                     "%lld is not supported (expected 1)", (long long)sl_opt_int(top, "version"));
        }
        const char *st = sl_opt_str(top, "state");
        if (!*st) {
            cfg_errw(errs, sl_opt_where(top, "state"), "state",
                     "empty (expected a SQLite file path or a postgres:// URL)");
        }
        c->state_url = strdup(*st ? st : DEFAULT_STATE);
        register_url_password(st);
    }
    load_serve(path, map_get(root, "serve", NULL, NULL), c, errs);
    if (!c->serve_listen) {
        cfg_err(errs, path, 0, 0, NULL, "out of memory");
        goto fail;
    }

    int pl_line = 0, pl_col = 0;
    sl_node *pl = (sl_node *)map_get(root, "pipelines", &pl_line, &pl_col);
    if (!pl) {
        cfg_err(errs, path, root->line, root->col, NULL,
                "missing required key 'pipelines' (expected a mapping of pipeline names to "
                "pipelines)");
        goto fail;
    }
    if (pl->kind != SL_NODE_MAP || pl->n == 0) {
        cfg_err(errs, path, pl_line, pl_col, "pipelines",
                "%s (expected a mapping of pipeline names to pipelines)",
                pl->kind == SL_NODE_SEQ ? "found a list" : "no pipelines defined");
        goto fail;
    }
    for (size_t i = 0; i < pl->n; i++) {
        if (!valid_pipeline_name(pl->keys[i])) {
            char q[64];
            cfg_err(errs, path, pl->key_line[i], pl->key_col[i], "pipelines",
                    "invalid pipeline name %s (expected 1 to %d letters, digits, '_', '.', '-')",
                    cfg_quote(pl->keys[i], q, sizeof(q)), PIPELINE_NAME_MAX);
        }
    }

    /* which pipelines, in which order: those named, else all in file order */
    size_t nsel = 0;
    long *sel = calloc(pl->n, sizeof(*sel));
    if (!sel) {
        cfg_err(errs, path, 0, 0, NULL, "out of memory");
        goto fail;
    }
    if (nonly == 0) {
        for (size_t i = 0; i < pl->n; i++) {
            sel[nsel++] = (long)i;
        }
    } else {
        for (size_t k = 0; k < nonly; k++) {
            long i = find_selected(path, pl, only[k], errs);
            int dup = 0;
            for (size_t j = 0; j < nsel; j++) {
                dup |= sel[j] == i;
            }
            if (i >= 0 && !dup) {
                sel[nsel++] = i;
            }
        }
    }
    c->pipelines = calloc(nsel ? nsel : 1, sizeof(*c->pipelines));
    if (!c->pipelines) {
        free(sel);
        cfg_err(errs, path, 0, 0, NULL, "out of memory");
        goto fail;
    }
    for (size_t k = 0; k < nsel; k++) {
        size_t i = (size_t)sel[k];
        if (mode == SL_CFG_OUTLINE) {
            load_outline(plugins, path, pl->keys[i], pl->key_line[i], pl->key_col[i], pl->kids[i],
                         &c->pipelines[c->npipelines++], errs);
            continue;
        }
        load_pipeline(plugins, path, pl->keys[i], pl->key_line[i], pl->key_col[i], pl->kids[i],
                      &c->pipelines[c->npipelines++], errs);
    }
    free(sel);

    if (errs->len > start) {
        goto fail;
    }
    sl_opts_free(top);
    sl_buf_free(&local);
    return c;

fail:
    /* every secret is registered by now: hide any that a message quoted */
    cfg_redact_tail(errs, start);
    cfg_sort_tail(errs, start, path);
    if (errs->len == start) {
        cfg_err(errs, path, 0, 0, NULL, "invalid configuration");
    }
    sl_opts_free(top);
    sl_config_free(c);
    sl_buf_free(&local);
    return NULL;
}
