/* The public state API: picks a backend from the URL, checks arguments,
 * redacts and bounds what is stored, owns the lock and the transaction, and
 * dispatches to the backend (state_impl.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "sluice/log.h"
#include "sluice/url.h"
#include "state/state_impl.h"

/* sl_run_info.pipeline is char[128]: a longer name could not be read back. */
#define PIPELINE_MAX 127
#define KEY_MAX 1024
/* Checkpoints and cursors are small; diff snapshots may be large. */
#define KV_VALUE_MAX ((size_t)256 * 1024 * 1024)
/* A dead-lettered record is stored whole (it is what `retry` re-sends). */
#define DL_RECORD_MAX ((size_t)16 * 1024 * 1024)
#define DL_TEXT_MAX 4096  /* error sentence and response excerpt */
#define RUN_INPUT_MAX 511 /* sl_run_info.input */
#define RUN_ERROR_MAX 4096
/* Only this much of a response is redacted and then cut to DL_TEXT_MAX, so a
 * secret straddling the cut is still found, without copying a huge body. */
#define REDACT_WINDOW ((size_t)64 * 1024)
/* Scratch buffers larger than this are released after use. */
#define SCRATCH_KEEP ((size_t)1024 * 1024)

enum { SCRATCH_RECORD, SCRATCH_ERROR, SCRATCH_RESPONSE };

double sl_state_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *sl_state_key_noun(const char *key, char *buf, size_t cap)
{
    if (strcmp(key, "checkpoint") == 0) {
        return "checkpoint";
    }
    snprintf(buf, cap, "key '%.200s'", key);
    return buf;
}

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The SQLite file of a state URL ("sqlite:PATH", "sqlite://PATH[?opts]"
 * or a plain path): a copy of the path (free it), and *options pointing
 * into url after the last '?' of a sqlite: URL (a plain path takes none:
 * '?' may be part of a file name). NULL for other backends or out of
 * memory. The one reading of a state URL's file: opening a
 * store and asking whether one exists agree. */
static char *sqlite_path(const char *url, const char **options)
{
    *options = NULL;
    if (!url || !*url || starts_with(url, "postgres://") || starts_with(url, "postgresql://")) {
        return NULL;
    }
    if (starts_with(url, "sqlite:")) {
        const char *p = url + strlen("sqlite:");
        /* sqlite:///abs/path and sqlite://rel/path, as other tools write them */
        if (starts_with(p, "//")) {
            p += 2;
        }
        const char *q = strrchr(p, '?');
        if (q) {
            *options = q + 1;
            return strndup(p, (size_t)(q - p));
        }
        return strdup(p);
    }
    if (sl_url_scheme_len(url) > 0) {
        return NULL;
    }
    return strdup(url);
}

int sl_state_exists(const char *url)
{
    const char *options;
    char *path = sqlite_path(url, &options);
    if (!path) {
        return -1;
    }
    int found = strcmp(path, ":memory:") != 0 && access(path, F_OK) == 0;
    free(path);
    return found;
}

int sl_state_files_dir(sl_state *s, char *out, size_t cap, sl_error *err)
{
    if (strcmp(s->ops->name, "sqlite") != 0 || strcmp(s->where, ":memory:") == 0) {
        return sl_error_set(err, SL_ERR_USAGE,
                            "state %s keeps no files (plugins that keep files, such as the "
                            "diff step's snapshots, need an SQLite state file)",
                            s->where);
    }
    if ((size_t)snprintf(out, cap, "%s.files", s->where) >= cap) {
        return sl_error_set(err, SL_ERR_LIMIT, "state %s: path too long", s->where);
    }
    return 0;
}

sl_state *sl_state_open(const char *url, sl_error *err)
{
    sl_state *s = NULL;
    char *target = NULL;
    const char *options = NULL;
    int mu_ok = 0;

    if (!url || !*url) {
        sl_error_set(err, SL_ERR_CONFIG,
                     "state: no database given (expected a path or \"sqlite:PATH\")");
        goto fail;
    }
    const struct sl_state_ops *ops = &sl_state_sqlite_ops;
    /* Never echo a postgres URL: it usually carries a password. The whole
     * URL goes to libpq (its query holds libpq's options: sslmode, ...). */
    if (starts_with(url, "postgres://") || starts_with(url, "postgresql://")) {
        ops = &sl_state_postgres_ops;
        target = strdup(url);
    } else if (starts_with(url, "sqlite:") || sl_url_scheme_len(url) == 0) {
        target = sqlite_path(url, &options);
    } else {
        /* Show only the scheme: the rest may hold credentials. */
        size_t sl = sl_url_scheme_len(url);
        sl_error_set(err, SL_ERR_CONFIG,
                     "state: unsupported URL scheme '%.*s' (expected a path, \"sqlite:PATH\" "
                     "or \"postgres://...\")",
                     (int)(sl > 32 ? 32 : sl), url);
        goto fail;
    }
    if (!target) {
        sl_error_set(err, SL_ERR_NOMEM, "state: out of memory opening the state store");
        goto fail;
    }

    s = calloc(1, sizeof(*s));
    if (!s) {
        sl_error_set(err, SL_ERR_NOMEM, "state: out of memory opening the state store");
        goto fail;
    }
    for (size_t i = 0; i < sizeof(s->scratch) / sizeof(s->scratch[0]); i++) {
        sl_buf_init(&s->scratch[i], 0);
    }
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    mu_ok = pthread_mutex_init(&s->mu, &attr) == 0;
    pthread_mutexattr_destroy(&attr);
    if (!mu_ok) {
        sl_error_set(err, SL_ERR, "state: cannot create a mutex");
        goto fail;
    }

    s->ops = ops;
    s->impl = s->ops->open(target, options, s->where, sizeof(s->where), err);
    if (!s->impl) {
        goto fail;
    }
    free(target);
    return s;

fail:
    if (s && mu_ok) {
        pthread_mutex_destroy(&s->mu);
    }
    free(s);
    free(target);
    return NULL;
}

void sl_state_close(sl_state *s)
{
    if (!s) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    if (s->in_tx) {
        sl_error e = {0};
        if (s->ops->rollback(s->impl, &e) < 0) {
            sl_warn("state", "%s", e.msg);
        }
        s->in_tx = 0;
    }
    s->ops->close(s->impl);
    s->impl = NULL;
    for (size_t i = 0; i < sizeof(s->scratch) / sizeof(s->scratch[0]); i++) {
        sl_buf_free(&s->scratch[i]);
    }
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- transactions ---------------------------------------------------- */

int sl_state_begin(sl_state *s, sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    /* Holding the (recursive) lock while in_tx is set means this very thread
     * opened it: another thread's transaction would have kept us waiting. */
    if (s->in_tx) {
        pthread_mutex_unlock(&s->mu);
        return sl_error_set(err, SL_ERR_USAGE,
                            "state %s: cannot begin a transaction: one is already open "
                            "(nested begin)",
                            s->where);
    }
    int rc = s->ops->begin(s->impl, err);
    if (rc < 0) {
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    s->in_tx = 1;
    /* The lock stays held until commit() or rollback(). */
    return 0;
}

int sl_state_commit(sl_state *s, sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    if (!s->in_tx) {
        pthread_mutex_unlock(&s->mu);
        return sl_error_set(err, SL_ERR_USAGE, "state %s: cannot commit: no transaction is open",
                            s->where);
    }
    int rc = s->ops->commit(s->impl, err);
    if (rc < 0) {
        /* Leave no half-open transaction behind: the caller would otherwise
         * have to remember to roll back, and the lock would stay held. */
        sl_error e = {0};
        s->ops->rollback(s->impl, &e);
        if (err) {
            size_t n = strlen(err->msg);
            snprintf(err->msg + n, sizeof(err->msg) - n, " (the transaction was rolled back)");
        }
    }
    s->in_tx = 0;
    pthread_mutex_unlock(&s->mu); /* this call's lock */
    pthread_mutex_unlock(&s->mu); /* begin()'s lock */
    return rc;
}

int sl_state_rollback(sl_state *s)
{
    pthread_mutex_lock(&s->mu);
    if (!s->in_tx) {
        /* Nothing to undo: rollback on an error path must always be safe. */
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    sl_error e = {0};
    int rc = s->ops->rollback(s->impl, &e);
    if (rc < 0) {
        sl_warn("state", "%s", e.msg);
    }
    s->in_tx = 0;
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- argument checks and redaction ----------------------------------- */

static int check_pipeline(sl_state *s, const char *pipeline, const char *op, sl_error *err)
{
    if (!pipeline || !*pipeline) {
        return sl_error_set(err, SL_ERR_USAGE, "state %s: cannot %s: no pipeline name given",
                            s->where, op);
    }
    if (strlen(pipeline) > PIPELINE_MAX) {
        return sl_error_set(err, SL_ERR_LIMIT,
                            "state %s: cannot %s: pipeline name '%.40s...' is longer than %d "
                            "bytes",
                            s->where, op, pipeline, PIPELINE_MAX);
    }
    return 0;
}

static int check_key(sl_state *s, const char *pipeline, const char *key, const char *op,
                     sl_error *err)
{
    int rc = check_pipeline(s, pipeline, op, err);
    if (rc < 0) {
        return rc;
    }
    if (!key || !*key) {
        return sl_error_set(err, SL_ERR_USAGE,
                            "state %s: cannot %s for pipeline '%s': no key given", s->where, op,
                            pipeline);
    }
    if (strlen(key) > KEY_MAX) {
        return sl_error_set(err, SL_ERR_LIMIT,
                            "state %s: cannot %s for pipeline '%s': key '%.40s...' is longer "
                            "than %d bytes",
                            s->where, op, pipeline, key, KEY_MAX);
    }
    return 0;
}

/* Cut n back so that s[0..n) does not end inside a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t n)
{
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) {
        n--;
    }
    return n;
}

/* Copy text (NULL = "") into b, redact registered secrets in the copy, and
 * cut the result to at most max bytes. Only the first `window` bytes of the
 * input are considered. The caller's memory is never modified. Returns 0 or
 * SL_ERR_NOMEM. */
static int redact_into(sl_buf *b, const char *text, size_t window, size_t max)
{
    size_t n = text ? strnlen(text, window) : 0;
    if (n == window && text[n] != '\0') {
        n = utf8_cut(text, n);
    }
    /* Each secret is >= 4 bytes and "[redacted]" is 10: the text can grow to
     * 2.5x; sl_redact truncates rather than overflow if several secrets nest. */
    size_t cap = n * 3 + 64;
    sl_buf_reset(b);
    b->max = cap + 1;
    if (sl_buf_reserve(b, cap) < 0) {
        return SL_ERR_NOMEM;
    }
    if (n) {
        memcpy(b->data, text, n);
    }
    b->data[n] = '\0';
    sl_redact(b->data, b->cap);
    b->len = strlen(b->data);
    if (b->len > max) {
        b->len = utf8_cut(b->data, max);
        b->data[b->len] = '\0';
    }
    return 0;
}

static void scratch_trim(sl_state *s)
{
    for (size_t i = 0; i < sizeof(s->scratch) / sizeof(s->scratch[0]); i++) {
        if (s->scratch[i].cap > SCRATCH_KEEP) {
            sl_buf_free(&s->scratch[i]);
        }
    }
}

static int valid_status(const char *status)
{
    static const char *const ok[] = {"running", "ok",          "partial",
                                     "failed",  "interrupted", "skipped"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (status && strcmp(status, ok[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* ---- runs -------------------------------------------------------------- */

int sl_state_run_begin(sl_state *s, const char *pipeline, const char *input, int64_t *run_id,
                       sl_error *err)
{
    int rc;
    pthread_mutex_lock(&s->mu);
    rc = check_pipeline(s, pipeline, "start a run", err);
    if (rc < 0) {
        goto out;
    }
    sl_buf *in = &s->scratch[SCRATCH_ERROR];
    /* The input name may be a URL with a token in its query string. */
    if (redact_into(in, input, REDACT_WINDOW, RUN_INPUT_MAX) < 0) {
        rc = sl_error_set(err, SL_ERR_NOMEM,
                          "state %s: cannot start a run of pipeline '%s': out of memory", s->where,
                          pipeline);
        goto out;
    }
    int64_t id = 0;
    rc = s->ops->run_begin(s->impl, pipeline, sl_buf_cstr(in), sl_state_now(), &id, err);
    if (rc == 0 && run_id) {
        *run_id = id;
    }
out:
    scratch_trim(s);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_run_update(sl_state *s, int64_t run_id, const sl_counts *c, sl_error *err)
{
    if (!c) {
        return sl_error_set(err, SL_ERR_USAGE, "state %s: cannot update run %lld: no counts given",
                            s->where, (long long)run_id);
    }
    pthread_mutex_lock(&s->mu);
    int rc = s->ops->run_update(s->impl, run_id, c, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_run_end(sl_state *s, int64_t run_id, const char *status, const sl_counts *c,
                     const char *error, sl_error *err)
{
    if (!valid_status(status) || strcmp(status, "running") == 0) {
        return sl_error_set(err, SL_ERR_USAGE,
                            "state %s: cannot end run %lld with status '%s' (expected ok, "
                            "partial, failed, interrupted or skipped)",
                            s->where, (long long)run_id, status ? status : "(null)");
    }
    int rc;
    pthread_mutex_lock(&s->mu);
    sl_buf *e = &s->scratch[SCRATCH_ERROR];
    if (redact_into(e, error, REDACT_WINDOW, RUN_ERROR_MAX) < 0) {
        rc = sl_error_set(err, SL_ERR_NOMEM, "state %s: cannot end run %lld: out of memory",
                          s->where, (long long)run_id);
        goto out;
    }
    rc = s->ops->run_end(s->impl, run_id, status, c, sl_buf_cstr(e), sl_state_now(), err);
out:
    scratch_trim(s);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_run_last(sl_state *s, const char *pipeline, sl_run_info *out, sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = check_pipeline(s, pipeline, "read the last run", err);
    if (rc == 0) {
        rc = s->ops->run_last(s->impl, pipeline, out, err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_runs(sl_state *s, const char *pipeline, int limit, sl_run_cb cb, void *ud,
                  sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = pipeline ? check_pipeline(s, pipeline, "list runs", err) : 0;
    if (rc == 0) {
        rc = s->ops->runs(s->impl, pipeline, limit, cb, ud, err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- key/value ----------------------------------------------------------- */

int sl_state_kv_get(sl_state *s, const char *pipeline, const char *key, sl_buf *out, sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = check_key(s, pipeline, key, "read state", err);
    if (rc == 0) {
        sl_buf_reset(out);
        rc = s->ops->kv_get(s->impl, pipeline, key, out, err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_kv_set(sl_state *s, const char *pipeline, const char *key, const char *value,
                    size_t len, sl_error *err)
{
    char noun[256];
    pthread_mutex_lock(&s->mu);
    int rc = check_key(s, pipeline, key, "write state", err);
    if (rc < 0) {
        goto out;
    }
    if (!value && len > 0) {
        rc = sl_error_set(err, SL_ERR_USAGE,
                          "state %s: cannot write %s for pipeline '%s': no value given", s->where,
                          sl_state_key_noun(key, noun, sizeof(noun)), pipeline);
        goto out;
    }
    if (len > KV_VALUE_MAX) {
        rc = sl_error_set(err, SL_ERR_LIMIT,
                          "state %s: cannot write %s for pipeline '%s': value of %zu bytes is "
                          "larger than the %zu-byte limit",
                          s->where, sl_state_key_noun(key, noun, sizeof(noun)), pipeline, len,
                          KV_VALUE_MAX);
        goto out;
    }
    rc = s->ops->kv_set(s->impl, pipeline, key, value ? value : "", len, sl_state_now(), err);
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_kv_del(sl_state *s, const char *pipeline, const char *key, sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = check_key(s, pipeline, key, "delete state", err);
    if (rc == 0) {
        rc = s->ops->kv_del(s->impl, pipeline, key, err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_kv_get_many(sl_state *s, const char *pipeline, const char *const *keys, size_t n,
                         sl_kv_found_cb found, void *ud, sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = check_pipeline(s, pipeline, "read state", err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = check_key(s, pipeline, keys[i], "read state", err);
    }
    if (rc == 0 && n > 0 && s->ops->kv_get_many) {
        rc = s->ops->kv_get_many(s->impl, pipeline, keys, n, found, ud, err);
    } else if (rc == 0) {
        sl_buf v;
        sl_buf_init(&v, KV_VALUE_MAX + 1);
        for (size_t i = 0; i < n && rc == 0; i++) {
            sl_buf_reset(&v);
            int got = s->ops->kv_get(s->impl, pipeline, keys[i], &v, err);
            if (got < 0) {
                rc = got;
            } else if (got == 1 && found(ud, i, v.data ? v.data : "", v.len)) {
                break;
            }
        }
        sl_buf_free(&v);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_kv_set_many(sl_state *s, const char *pipeline, const char *const *keys,
                         const char *const *values, size_t n, sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = check_pipeline(s, pipeline, "write state", err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = check_key(s, pipeline, keys[i], "write state", err);
        if (rc == 0 && strlen(values[i]) > KV_VALUE_MAX) {
            rc = sl_error_set(err, SL_ERR_LIMIT,
                              "state %s: cannot write '%s' for '%s': value larger than the "
                              "%zu-byte limit",
                              s->where, keys[i], pipeline, KV_VALUE_MAX);
        }
    }
    int own = !s->in_tx; /* the lock is recursive: in_tx here means this thread's */
    if (rc == 0 && n > 0 && own) {
        rc = s->ops->begin(s->impl, err);
    }
    if (rc == 0 && n > 0) {
        double now = sl_state_now();
        if (s->ops->kv_set_many) {
            rc = s->ops->kv_set_many(s->impl, pipeline, keys, values, n, now, err);
        } else {
            for (size_t i = 0; i < n && rc == 0; i++) {
                rc = s->ops->kv_set(s->impl, pipeline, keys[i], values[i], strlen(values[i]), now,
                                    err);
            }
        }
        if (own) {
            if (rc == 0) {
                rc = s->ops->commit(s->impl, err);
            } else {
                sl_error e2;
                s->ops->rollback(s->impl, &e2);
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_kv_each(sl_state *s, const char *pipeline, sl_kv_cb cb, void *ud, sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = check_pipeline(s, pipeline, "list state", err);
    if (rc == 0) {
        rc = s->ops->kv_each(s->impl, pipeline, cb, ud, err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- dead letters --------------------------------------------------------- */

int sl_state_dl_add(sl_state *s, const sl_dead_letter *d, sl_error *err)
{
    int rc;
    pthread_mutex_lock(&s->mu);
    rc = check_pipeline(s, d ? d->pipeline : NULL, "store a dead letter", err);
    if (rc < 0) {
        goto out;
    }
    size_t rlen = d->record ? strnlen(d->record, DL_RECORD_MAX + 1) : 0;
    if (rlen > DL_RECORD_MAX) {
        rc = sl_error_set(err, SL_ERR_LIMIT,
                          "state %s: cannot store a dead letter for pipeline '%s' (line %llu): "
                          "record is larger than %zu bytes",
                          s->where, d->pipeline, (unsigned long long)d->line, DL_RECORD_MAX);
        goto out;
    }
    if (redact_into(&s->scratch[SCRATCH_RECORD], d->record, DL_RECORD_MAX + 1, DL_RECORD_MAX) < 0 ||
        redact_into(&s->scratch[SCRATCH_ERROR], d->error, REDACT_WINDOW, DL_TEXT_MAX) < 0 ||
        redact_into(&s->scratch[SCRATCH_RESPONSE], d->response, REDACT_WINDOW, DL_TEXT_MAX) < 0) {
        rc = sl_error_set(err, SL_ERR_NOMEM,
                          "state %s: cannot store a dead letter for pipeline '%s': out of memory",
                          s->where, d->pipeline);
        goto out;
    }
    sl_dead_letter copy = *d;
    double now = sl_state_now();
    copy.record = sl_buf_cstr(&s->scratch[SCRATCH_RECORD]);
    copy.error = sl_buf_cstr(&s->scratch[SCRATCH_ERROR]);
    copy.response = sl_buf_cstr(&s->scratch[SCRATCH_RESPONSE]);
    if (copy.created_at <= 0) {
        copy.created_at = now;
    }
    if (copy.attempts < 1) {
        copy.attempts = 1;
    }
    rc = s->ops->dl_add(s->impl, &copy, now, err);
out:
    scratch_trim(s);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_dl_each(sl_state *s, const char *pipeline, int limit, sl_dl_cb cb, void *ud,
                     sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = check_pipeline(s, pipeline, "list dead letters", err);
    if (rc == 0) {
        rc = s->ops->dl_each(s->impl, pipeline, limit, cb, ud, err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_dl_delete(sl_state *s, int64_t id, sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = s->ops->dl_delete(s->impl, id, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_dl_bump(sl_state *s, int64_t id, const char *error, const char *response,
                     sl_error *err)
{
    int rc;
    pthread_mutex_lock(&s->mu);
    if (redact_into(&s->scratch[SCRATCH_ERROR], error, REDACT_WINDOW, DL_TEXT_MAX) < 0 ||
        redact_into(&s->scratch[SCRATCH_RESPONSE], response, REDACT_WINDOW, DL_TEXT_MAX) < 0) {
        rc = sl_error_set(err, SL_ERR_NOMEM,
                          "state %s: cannot update dead letter %lld: out of memory", s->where,
                          (long long)id);
        goto out;
    }
    rc = s->ops->dl_bump(s->impl, id, sl_buf_cstr(&s->scratch[SCRATCH_ERROR]),
                         response ? sl_buf_cstr(&s->scratch[SCRATCH_RESPONSE]) : NULL,
                         sl_state_now(), err);
out:
    scratch_trim(s);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int64_t sl_state_dl_count(sl_state *s, const char *pipeline, sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int64_t rc = pipeline ? check_pipeline(s, pipeline, "count dead letters", err) : 0;
    if (rc == 0) {
        rc = s->ops->dl_count(s->impl, pipeline, err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- jobs ----------------------------------------------------------------- */

/* sl_job.kind is char[32], idem_key and order_key char[256]: longer texts
 * could not be read back whole, and a cut key would break deduplication. */
#define JOB_KIND_MAX 31
#define JOB_KEY_MAX 255
/* A trigger's variables: a few ids and a URL or two. */
#define JOB_VARS_MAX ((size_t)1024 * 1024)
#define JOB_ERROR_MAX 4096

void sl_job_clear(sl_job *j)
{
    if (!j) {
        return;
    }
    free(j->vars);
    memset(j, 0, sizeof(*j));
}

static int job_text_check(sl_state *s, const char *pipeline, const char *what, const char *text,
                          size_t max, sl_error *err)
{
    if (text && strlen(text) > max) {
        return sl_error_set(err, SL_ERR_LIMIT,
                            "state %s: cannot store a job for pipeline '%s': %s '%.40s...' is "
                            "longer than %zu bytes",
                            s->where, pipeline, what, text, max);
    }
    return 0;
}

int sl_state_job_add(sl_state *s, const char *pipeline, const char *kind, const char *idem_key,
                     const char *order_key, const char *vars, double expires_at, int64_t *id,
                     sl_error *err)
{
    int rc;
    pthread_mutex_lock(&s->mu);
    rc = check_pipeline(s, pipeline, "store a job", err);
    if (rc < 0) {
        goto out;
    }
    rc = job_text_check(s, pipeline, "kind", kind, JOB_KIND_MAX, err);
    if (rc == 0) {
        rc = job_text_check(s, pipeline, "idempotency key", idem_key, JOB_KEY_MAX, err);
    }
    if (rc == 0) {
        rc = job_text_check(s, pipeline, "order key", order_key, JOB_KEY_MAX, err);
    }
    if (rc < 0) {
        goto out;
    }
    size_t vlen = vars ? strnlen(vars, JOB_VARS_MAX + 1) : 0;
    if (vlen > JOB_VARS_MAX) {
        rc = sl_error_set(err, SL_ERR_LIMIT,
                          "state %s: cannot store a job for pipeline '%s': its variables are "
                          "larger than %zu bytes",
                          s->where, pipeline, JOB_VARS_MAX);
        goto out;
    }
    /* vars are stored as given, not redacted: they may hold a presigned
     * download URL the job needs. Listings must not print them. */
    int64_t jid = 0;
    rc = s->ops->job_add(s->impl, pipeline, kind ? kind : "", idem_key ? idem_key : "",
                         order_key ? order_key : "", vlen ? vars : "{}", expires_at, sl_state_now(),
                         &jid, err);
    if (rc >= 0 && id) {
        *id = jid;
    }
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_job_claim(sl_state *s, const char *pipeline, double now, sl_job *out, sl_error *err)
{
    if (!out) {
        return sl_error_set(err, SL_ERR_USAGE, "state %s: cannot claim a job: no output given",
                            s->where);
    }
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&s->mu);
    int rc = pipeline ? check_pipeline(s, pipeline, "claim a job", err) : 0;
    if (rc == 0) {
        rc = s->ops->job_claim(s->impl, pipeline, now, sl_state_now(), out, err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* Test hook, for tests only: SLUICE_FAULT=job_finish_fail:N makes the first N
 * sl_state_job_finish calls of the process fail as a full disk would, so
 * the job worker's handling of an outcome it cannot record is testable
 * without a full file system. Read once; unset in production. */
static int fault_job_finish(void)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static int init, left;
    int hit = 0;
    pthread_mutex_lock(&mu);
    if (!init) {
        init = 1;
        const char *f = getenv("SLUICE_FAULT");
        if (f && strncmp(f, "job_finish_fail:", 16) == 0) {
            left = atoi(f + 16);
        }
    }
    if (left > 0) {
        left--;
        hit = 1;
    }
    pthread_mutex_unlock(&mu);
    return hit;
}

int sl_state_job_finish(sl_state *s, int64_t id, const char *status, double not_before,
                        int64_t rows, const char *error, sl_error *err)
{
    if (fault_job_finish()) {
        return sl_error_set(err, SL_ERR_IO,
                            "state %s: cannot finish job %lld: database or disk is full "
                            "(injected by SLUICE_FAULT)",
                            s->where, (long long)id);
    }
    if (!status || (strcmp(status, "done") != 0 && strcmp(status, "retry") != 0 &&
                    strcmp(status, "failed") != 0 && strcmp(status, "queued") != 0)) {
        return sl_error_set(err, SL_ERR_USAGE,
                            "state %s: cannot finish job %lld with status '%s' (expected done, "
                            "retry, failed or queued)",
                            s->where, (long long)id, status ? status : "(null)");
    }
    int rc;
    pthread_mutex_lock(&s->mu);
    sl_buf *e = &s->scratch[SCRATCH_ERROR];
    if (redact_into(e, error, REDACT_WINDOW, JOB_ERROR_MAX) < 0) {
        rc = sl_error_set(err, SL_ERR_NOMEM, "state %s: cannot finish job %lld: out of memory",
                          s->where, (long long)id);
        goto out;
    }
    rc = s->ops->job_finish(s->impl, id, status, not_before, rows, sl_buf_cstr(e), sl_state_now(),
                            err);
out:
    scratch_trim(s);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_job_requeue_running(sl_state *s, sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = s->ops->job_requeue_running(s->impl, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_job_requeue_failed(sl_state *s, const char *pipeline, sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = pipeline ? check_pipeline(s, pipeline, "re-queue failed jobs", err) : 0;
    if (rc == 0) {
        rc = s->ops->job_requeue_failed(s->impl, pipeline, err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_jobs(sl_state *s, const char *pipeline, int limit, sl_job_cb cb, void *ud,
                  sl_error *err)
{
    if (!cb) {
        return sl_error_set(err, SL_ERR_USAGE, "state %s: cannot list jobs: no callback given",
                            s->where);
    }
    pthread_mutex_lock(&s->mu);
    int rc = pipeline ? check_pipeline(s, pipeline, "list jobs", err) : 0;
    if (rc == 0) {
        rc = s->ops->jobs(s->impl, pipeline, limit, cb, ud, err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_job_counts(sl_state *s, const char *pipeline, int64_t counts[5], sl_error *err)
{
    for (int i = 0; i < 5; i++) {
        counts[i] = 0;
    }
    pthread_mutex_lock(&s->mu);
    int rc = pipeline ? check_pipeline(s, pipeline, "count jobs", err) : 0;
    if (rc == 0) {
        rc = s->ops->job_counts(s->impl, pipeline, counts, err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- leases ---------------------------------------------------------------- */

static int check_lease_name(sl_state *s, const char *name, const char *owner, sl_error *err)
{
    if (!name || !*name || strlen(name) >= sizeof(((sl_lease *)0)->name)) {
        return sl_error_set(err, SL_ERR_USAGE, "state %s: lease name empty or too long", s->where);
    }
    if (owner && (!*owner || strlen(owner) >= sizeof(((sl_lease *)0)->owner))) {
        return sl_error_set(err, SL_ERR_USAGE, "state %s: lease owner empty or too long", s->where);
    }
    return 0;
}

int sl_state_lease_take(sl_state *s, const sl_lease *want, const char *steal, sl_lease *holder,
                        sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = check_lease_name(s, want->name, want->owner, err);
    if (rc == 0) {
        sl_lease h;
        memset(&h, 0, sizeof(h));
        rc = s->ops->lease_take(s->impl, want, sl_state_now(), steal, &h, err);
        if (rc == 0 && holder) {
            *holder = h;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_lease_renew(sl_state *s, const char *name, const char *owner, double expires_at,
                         sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = check_lease_name(s, name, owner, err);
    if (rc == 0) {
        rc = s->ops->lease_renew(s->impl, name, owner, sl_state_now(), expires_at, err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_lease_release(sl_state *s, const char *name, const char *owner, sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = check_lease_name(s, name, owner, err);
    if (rc == 0) {
        rc = s->ops->lease_release(s->impl, name, owner, err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_lease_each(sl_state *s, const char *prefix, sl_lease_cb cb, void *ud, sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = s->ops->lease_each(s->impl, prefix ? prefix : "", cb, ud, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sl_state_lease_get(sl_state *s, const char *name, sl_lease *out, sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = check_lease_name(s, name, NULL, err);
    if (rc == 0) {
        rc = s->ops->lease_get(s->impl, name, out, err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}
