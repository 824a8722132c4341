#include <errno.h>
#include <sys/stat.h>
#include <stdarg.h>
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
    snprintf(c->ns, sizeof(c->ns), "%s.%s", kind, plugin);
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

double sl_ctx_rate_share(const sl_ctx *c)
{
    return c->rate_share > 0 && c->rate_share < 1 ? c->rate_share : 1.0;
}

int sl_ctx_stopping(const sl_ctx *c)
{
    return c->stop && *c->stop;
}

void sl_ctx_set_index(sl_ctx *c, int index)
{
    char plugin[sizeof(c->ns)];
    const char *dot = strchr(c->ns, '.');
    snprintf(plugin, sizeof(plugin), "%s", dot ? dot + 1 : c->ns);
    snprintf(c->ns, sizeof(c->ns), "step.%d.%.60s", index, plugin);
}

int sl_ctx_again(const sl_ctx *c)
{
    return c->again;
}

void sl_ctx_set_partial(sl_ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->partial, sizeof(c->partial), fmt, ap);
    va_end(ap);
}

void sl_ctx_skip_run(sl_ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->skip, sizeof(c->skip), fmt, ap);
    va_end(ap);
}

static int mkdir_p(char *path, sl_error *err)
{
    for (char *p = path + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            int rc = mkdir(path, 0700);
            *p = '/';
            if (rc != 0 && errno != EEXIST) {
                return sl_error_set(err, SL_ERR_IO, "cannot create the directory %s: %s", path,
                                    strerror(errno));
            }
        }
    }
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        return sl_error_set(err, SL_ERR_IO, "cannot create the directory %s: %s", path,
                            strerror(errno));
    }
    return 0;
}

int sl_ctx_files_dir(sl_ctx *c, sl_buf *out, sl_error *err)
{
    char base[4096];
    if (!c->state) {
        return sl_error_set(err, SL_ERR, "no state store for this plugin's files");
    }
    if (sl_state_files_dir(c->state, base, sizeof(base), err) < 0) {
        return SL_ERR;
    }
    sl_buf_reset(out);
    if (sl_buf_printf(out, "%s/%s/%s", base, c->pipeline, c->ns) != 0) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    return mkdir_p(out->data, err) < 0 ? SL_ERR : 0;
}

double sl_ctx_run_started(const sl_ctx *c)
{
    return c->run_started;
}

/* "<namespace>/<key>": plugin keys never clash with the engine's own
 * ("checkpoint", "lease"), which have no '/'. */
static int ns_key(const sl_ctx *c, const char *key, char *out, size_t n, sl_error *err)
{
    if (!key || !*key) {
        return sl_error_set(err, SL_ERR, "%s: empty state key", c->name);
    }
    if ((size_t)snprintf(out, n, "%s/%s", c->ns, key) >= n) {
        return sl_error_set(err, SL_ERR, "%s: state key '%.60s...' is too long", c->name, key);
    }
    return 0;
}

static int check_store(const sl_ctx *c, const char *key, int write, sl_error *err)
{
    if (!c->state) {
        return sl_error_set(err, SL_ERR, "%s: no state store available for key '%s'", c->name, key);
    }
    if (write && !c->writable) {
        return sl_error_set(err, SL_ERR,
                            "%s: state key '%s' written outside a commit hook (plugin state is "
                            "written only when the run commits)",
                            c->name, key);
    }
    return 0;
}

int sl_ctx_state_get(sl_ctx *c, const char *key, sl_buf *out, sl_error *err)
{
    char k[256];
    if (check_store(c, key, 0, err) < 0 || ns_key(c, key, k, sizeof(k), err) < 0) {
        return SL_ERR;
    }
    return sl_state_kv_get(c->state, c->pipeline, k, out, err);
}

int sl_ctx_state_set(sl_ctx *c, const char *key, const char *value, size_t len, sl_error *err)
{
    char k[256];
    if (check_store(c, key, 1, err) < 0 || ns_key(c, key, k, sizeof(k), err) < 0) {
        return SL_ERR;
    }
    return sl_state_kv_set(c->state, c->pipeline, k, value, len, err);
}

int sl_ctx_state_del(sl_ctx *c, const char *key, sl_error *err)
{
    char k[256];
    if (check_store(c, key, 1, err) < 0 || ns_key(c, key, k, sizeof(k), err) < 0) {
        return SL_ERR;
    }
    return sl_state_kv_del(c->state, c->pipeline, k, err);
}

/* A ledger lives in the key/value store under "ledger:<scope>" in place of
 * a pipeline name: shared by every pipeline naming the scope, and out of
 * the way of `sluice status`, which lists a pipeline's own keys. */
static int ledger_scope(const sl_ctx *c, const char *scope, char *out, size_t cap, sl_error *err)
{
    if (!c->state) {
        return sl_error_set(err, SL_ERR, "%s: no state store available for the ledger '%s'",
                            c->name, scope ? scope : "");
    }
    if (!scope || !*scope || snprintf(out, cap, "ledger:%s", scope) >= (int)cap) {
        return sl_error_set(err, SL_ERR_USAGE, "%s: ledger scope empty or longer than %zu bytes",
                            c->name, cap - 8);
    }
    return 0;
}

int sl_ctx_ledger_get(sl_ctx *c, const char *scope, const char *const *keys, size_t n,
                      sl_ledger_found_fn found, void *ud, sl_error *err)
{
    char sc[128];
    if (ledger_scope(c, scope, sc, sizeof(sc), err) < 0) {
        return SL_ERR;
    }
    return sl_state_kv_get_many(c->state, sc, keys, n, found, ud, err);
}

int sl_ctx_ledger_put(sl_ctx *c, const char *scope, const char *const *keys,
                      const char *const *values, size_t n, sl_error *err)
{
    char sc[128];
    if (ledger_scope(c, scope, sc, sizeof(sc), err) < 0) {
        return SL_ERR;
    }
    if (c->dry_run) {
        return sl_error_set(err, SL_ERR_USAGE, "%s: a dry run writes nothing to the ledger '%s'",
                            c->name, scope);
    }
    return sl_state_kv_set_many(c->state, sc, keys, values, n, err);
}
