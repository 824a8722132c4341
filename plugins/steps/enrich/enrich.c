/* enrich: one HTTP lookup per record (FullContact person enrich, or any JSON
 * API), many in flight at once through the step's own sl_http (its own
 * concurrency, rate limit and retries with Retry-After), merged into the
 * record under chosen fields.
 *
 * Billing ledger: every 200 goes to a ledger in the state store
 * (sl_ctx_ledger_put, written by a thread of its own as the answers arrive,
 * so lookups never wait for the store; all of them durable before the batch
 * goes on to the sink), and each batch's keys are looked
 * up there first: a key with a 200 inside `fresh_for` is never looked up
 * again: its kept profile is merged instead, so a run that crashed after
 * paying for a lookup and before the sink acknowledged delivers the profile
 * on the next run without paying twice. The ledger is shared by every
 * pipeline and every process using the store (`sluice worker`s on many
 * machines). See docs/steps/enrich.md. */
#include <errno.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "enrich_tpl.h"

enum preset { P_GENERIC, P_FULLCONTACT };

static const char *const fc_fields[][2] = {
    {"full_name", "fullName"},
    {"age_range", "ageRange"},
    {"gender", "gender"},
    {"location", "location"},
    {"title", "title"},
    {"organization", "organization"},
    {"twitter", "twitter"},
    {"linkedin", "linkedin"},
    {"photos", "details.photos"},
    {"organizations", "details.employment"},
    {"social_profiles", "details.profiles"},
};
#define FC_NFIELDS (sizeof(fc_fields) / sizeof(fc_fields[0]))

/* One key this run knows about. */
enum ent_state { E_PENDING, E_OK, E_NOTFOUND };

typedef struct ent {
    struct ent *next; /* hash chain */
    char *key;
    int state;
    double at;    /* E_OK: when the 200 arrived (unix s) */
    char *fields; /* E_OK: the mapped fields as a JSON object */
    size_t job;   /* E_PENDING: the job looking it up in the current batch */
} ent;

typedef struct job {
    sl_http_req req;
    struct enrich *e;
    ent *ent;
    size_t first; /* first record of the chain (records with this key) */
    int polls;    /* 202 answers so far */
    int delayed;  /* waiting in the client for a re-poll */
    double requested_at;
} job;

typedef struct enrich {
    sl_ctx *ctx; /* borrowed */
    const char *name;
    int preset;
    char *key_field;
    char *key_as; /* copy of the normalised key under this name, or NULL */
    int key_email;
    char *url_text;
    sl_tpl url, body;
    int has_body;
    char method[8];
    char *auth; /* "Bearer <token>" or NULL; the token is registered as a secret */
    char **hdr_names, **hdr_values;
    size_t nhdr;
    char **out_names, **out_paths;
    size_t nout;
    const char *const *out_cols;
    size_t nout_cols;
    int64_t fresh_ms;
    int max_polls;
    int64_t poll_wait_ms;
    int concurrency;
    sl_http *http;
    /* ledger */
    ent **buckets;
    size_t nbuckets, nents;
    char *ledger; /* scope in the state store, or NULL: no ledger */
    /* paid answers not yet in the ledger, written by the ledger thread so
     * the lookups never wait for the state store; guarded by lmu */
    char **pend_keys, **pend_vals;
    size_t npend, pend_cap;
    pthread_t lthread;
    int lthread_on, lstop, lbusy;
    pthread_mutex_t lmu;
    pthread_cond_t lwork, ldone;
    sl_error lerr;      /* lerr.code != 0: a write failed */
    const char **fetch; /* keys of the batch this run has not seen yet */
    size_t *koff;       /* each record's key in keys (SIZE_MAX: none) */
    size_t kcap;
    sl_buf keys;
    /* the current batch */
    job *jobs;
    size_t njobs, jobs_cap;
    size_t *chain;
    size_t chain_cap;
    sl_batch *b;
    int stage;
    size_t active, delayed;
    int accepted; /* the API took the key: it answered 200, 202 or 404 */
    int fatal;
    sl_error ferr;
    /* counters */
    uint64_t lookups, ok, queued, notfound, reused, parked, rejected, ledger_hits;
} enrich;

static const sl_option enrich_options[] = {
    {"preset", SL_OPT_ENUM, "generic", 0, "generic|fullcontact",
     "fullcontact: FullContact person enrich v3 defaults for url, body, key, token and fields"},
    {"url", SL_OPT_STRING, NULL, 0, NULL,
     "request URL, {field} substituted (URL-encoded); fullcontact: "
     "https://api.fullcontact.com/v3/person.enrich"},
    {"method", SL_OPT_ENUM, "POST", 0, "GET|POST|PUT", "request method"},
    {"body", SL_OPT_STRING, NULL, 0, NULL,
     "request body template, {field} substituted JSON-escaped; fullcontact: "
     "{\"email\":\"{email}\"}"},
    {"key", SL_OPT_STRING, NULL, 0, NULL,
     "field identifying the lookup (ledger key, deduplication); fullcontact: email"},
    {"key_format", SL_OPT_ENUM, NULL, 0, "any|email",
     "email: trimmed, lower-cased, and a record whose key is not an address is rejected "
     "(fullcontact default); any: trimmed only"},
    {"key_as", SL_OPT_STRING, NULL, 0, NULL,
     "also store the normalised key under this field; fullcontact: email_address"},
    {"token", SL_OPT_STRING, NULL, SL_OPT_SECRET, NULL, "sent as Authorization: Bearer <token>"},
    {"headers", SL_OPT_MAP, NULL, 0, NULL, "extra request headers (name -> value)"},
    {"fields", SL_OPT_MAP, NULL, 0, NULL,
     "output field -> dotted JSON path in the 200 answer (details.photos, emails.0.value)"},
    {"concurrency", SL_OPT_INT, "20", 0, NULL, "lookups in flight at once"},
    {"rate_limit", SL_OPT_FLOAT, "0", 0, NULL, "request starts per second (0 = unlimited)"},
    {"max_attempts", SL_OPT_INT, "8", 0, NULL, "attempts per request on 429/5xx/transport errors"},
    {"timeout", SL_OPT_DURATION, "30s", 0, NULL, "one request, all attempts included"},
    {"queued_polls", SL_OPT_INT, "6", 0, NULL,
     "202 (queued) answers re-polled within the run before the record is parked"},
    {"queued_wait", SL_OPT_DURATION, "1s", 0, NULL,
     "wait before the first re-poll of a 202; doubles each time, at most 60s"},
    {"fresh_for", SL_OPT_DURATION, "90d", 0, NULL,
     "a key with a 200 this recent is not looked up again (its kept profile is used)"},
    {"ledger", SL_OPT_STRING, NULL, 0, NULL,
     "billing ledger in the state store: a name shared by every pipeline that pays the same "
     "account; default with preset fullcontact: fullcontact; empty: none"},
    SL_OPTIONS_END,
};

/* ------------------------------------------------------------------ ledger */

static uint64_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static ent *ledger_find(enrich *e, const char *key)
{
    if (!e->nbuckets) {
        return NULL;
    }
    for (ent *x = e->buckets[hash_key(key) & (e->nbuckets - 1)]; x; x = x->next) {
        if (strcmp(x->key, key) == 0) {
            return x;
        }
    }
    return NULL;
}

/* The entry of key, created (state E_PENDING) when absent; NULL on OOM. */
static ent *ledger_get(enrich *e, const char *key)
{
    ent *x = ledger_find(e, key);
    if (x) {
        return x;
    }
    if (e->nents >= e->nbuckets) {
        size_t nb = e->nbuckets ? e->nbuckets * 2 : 4096;
        ent **nbk = calloc(nb, sizeof(*nbk));
        if (!nbk) {
            return NULL;
        }
        for (size_t i = 0; i < e->nbuckets; i++) {
            for (ent *y = e->buckets[i], *nx; y; y = nx) {
                nx = y->next;
                size_t j = hash_key(y->key) & (nb - 1);
                y->next = nbk[j];
                nbk[j] = y;
            }
        }
        free(e->buckets);
        e->buckets = nbk;
        e->nbuckets = nb;
    }
    x = calloc(1, sizeof(*x));
    if (!x || !(x->key = strdup(key))) {
        free(x);
        return NULL;
    }
    size_t j = hash_key(key) & (e->nbuckets - 1);
    x->next = e->buckets[j];
    e->buckets[j] = x;
    e->nents++;
    return x;
}

static void ledger_remove(enrich *e, ent *x)
{
    ent **pp = &e->buckets[hash_key(x->key) & (e->nbuckets - 1)];
    while (*pp != x) {
        pp = &(*pp)->next;
    }
    *pp = x->next;
    free(x->key);
    free(x->fields);
    free(x);
    e->nents--;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A ledger entry: {"t":unix_s,"f":{mapped fields}} under the key, queued
 * for the ledger thread. */
static int ledger_push(enrich *e, const char *key, double at, const char *fields)
{
    sl_buf v;
    sl_buf_init(&v, 0);
    if (sl_buf_printf(&v, "{\"t\":%.3f,\"f\":%s}", at, fields) != 0) {
        sl_buf_free(&v);
        return SL_ERR_NOMEM;
    }
    char *k = strdup(key);
    if (!k) {
        sl_buf_free(&v);
        return SL_ERR_NOMEM;
    }
    pthread_mutex_lock(&e->lmu);
    if (e->npend == e->pend_cap) {
        size_t nc = e->pend_cap ? e->pend_cap * 2 : 64;
        char **nk = realloc(e->pend_keys, nc * sizeof(*nk));
        if (nk) {
            e->pend_keys = nk;
        }
        char **nv = nk ? realloc(e->pend_vals, nc * sizeof(*nv)) : NULL;
        if (!nv) {
            pthread_mutex_unlock(&e->lmu);
            free(k);
            sl_buf_free(&v);
            return SL_ERR_NOMEM;
        }
        e->pend_vals = nv;
        e->pend_cap = nc;
    }
    e->pend_keys[e->npend] = k;
    e->pend_vals[e->npend] = sl_buf_steal(&v);
    e->npend++;
    pthread_cond_signal(&e->lwork);
    pthread_mutex_unlock(&e->lmu);
    return 0;
}

/* The ledger thread: whatever answers have queued up go in together, one
 * transaction, as soon as the previous one committed. */
static void *ledger_main(void *arg)
{
    enrich *e = arg;
    pthread_mutex_lock(&e->lmu);
    for (;;) {
        while (e->npend == 0 && !e->lstop) {
            pthread_cond_wait(&e->lwork, &e->lmu);
        }
        if (e->npend == 0) {
            break;
        }
        char **keys = e->pend_keys, **vals = e->pend_vals;
        size_t n = e->npend;
        e->pend_keys = e->pend_vals = NULL;
        e->npend = e->pend_cap = 0;
        e->lbusy = 1;
        pthread_mutex_unlock(&e->lmu);
        sl_error err = {0};
        int rc = e->lerr.code ? 0 /* stopped writing: the run is failing */
                              : sl_ctx_ledger_put(e->ctx, e->ledger, (const char *const *)keys,
                                                  (const char *const *)vals, n, &err);
        for (size_t i = 0; i < n; i++) {
            free(keys[i]);
            free(vals[i]);
        }
        free(keys);
        free(vals);
        pthread_mutex_lock(&e->lmu);
        if (rc < 0 && !e->lerr.code) {
            e->lerr = err;
            sl_error_prefix(&e->lerr,
                            "cannot record paid lookups in the ledger '%s' (stopping so nothing "
                            "is paid twice)",
                            e->ledger);
        }
        e->lbusy = 0;
        pthread_cond_broadcast(&e->ldone);
    }
    pthread_mutex_unlock(&e->lmu);
    return NULL;
}

/* 0 while the ledger thread keeps up; its error otherwise. wait: block
 * until everything queued is committed (before a batch goes on). */
static int ledger_sync(enrich *e, int wait, sl_error *err)
{
    if (!e->lthread_on) {
        return 0;
    }
    pthread_mutex_lock(&e->lmu);
    while (wait && (e->npend > 0 || e->lbusy) && !e->lerr.code) {
        pthread_cond_wait(&e->ldone, &e->lmu);
    }
    int rc = e->lerr.code ? sl_error_set(err, e->lerr.code, "%s", e->lerr.msg) : 0;
    pthread_mutex_unlock(&e->lmu);
    return rc;
}

typedef struct fetch_ctx {
    enrich *e;
    double now;
    int oom;
} fetch_ctx;

/* A ledger entry of a key this run had not seen: kept when fresh. */
static int ledger_found(void *ud, size_t i, const char *value, size_t len)
{
    fetch_ctx *fc = ud;
    enrich *e = fc->e;
    json_t *o = json_loadb(value, len, 0, NULL);
    json_t *t = json_object_get(o, "t"), *fl = json_object_get(o, "f");
    if (!json_is_number(t) || !json_is_object(fl)) {
        sl_plog(e->ctx, SL_LOG_WARN,
                "ledger '%s': the entry of %s is not {\"t\":..,\"f\":{..}}; "
                "looking it up again",
                e->ledger, e->fetch[i]);
        json_decref(o);
        return 0;
    }
    double at = json_number_value(t);
    if ((fc->now - at) * 1000.0 < (double)e->fresh_ms && !ledger_find(e, e->fetch[i])) {
        ent *x = ledger_get(e, e->fetch[i]);
        char *txt = json_dumps(fl, JSON_COMPACT);
        if (!x || !txt) {
            free(txt);
            json_decref(o);
            fc->oom = 1;
            return 1;
        }
        x->fields = txt;
        x->state = E_OK;
        x->at = at;
        e->ledger_hits++;
    }
    json_decref(o);
    return 0;
}

/* ------------------------------------------------------------------ records */

static void iso_time(double t, char out[32])
{
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int set_time(sl_record *rec, const char *name, double t)
{
    if (t <= 0) {
        return sl_rec_set_json_value(rec, name, NULL);
    }
    char ts[32];
    iso_time(t, ts);
    json_t *s = json_string(ts);
    int rc = s ? sl_rec_set_json_value(rec, name, s) : SL_ERR_NOMEM;
    json_decref(s);
    return rc;
}

/* Merge the mapped fields (a JSON object, or NULL for "no profile") and the
 * stamps into rec. */
static int merge(enrich *e, sl_record *rec, const char *key, json_t *fields, double requested,
                 double success, double unavailable)
{
    int rc = 0;
    if (e->key_as) {
        json_t *k = json_string(key);
        rc |= k ? sl_rec_set_json_value(rec, e->key_as, k) : SL_ERR_NOMEM;
        json_decref(k);
    }
    for (size_t i = 0; i < e->nout; i++) {
        rc |= sl_rec_set_json_value(rec, e->out_names[i],
                                    fields ? json_object_get(fields, e->out_names[i]) : NULL);
    }
    rc |= set_time(rec, "requested_at", requested);
    rc |= set_time(rec, "success_at", success);
    rc |= set_time(rec, "unavailable_at", unavailable);
    return rc ? SL_ERR_NOMEM : 0;
}

static int merge_text(enrich *e, sl_record *rec, const char *key, const char *fields, double at)
{
    json_t *o = json_loads(fields, 0, NULL);
    if (!o) {
        return SL_ERR_NOMEM;
    }
    int rc = merge(e, rec, key, o, at, at, 0);
    json_decref(o);
    return rc;
}

static void set_fatal(enrich *e, int code, const char *fmt, ...) SL_PRINTF(3, 4);
static void set_fatal(enrich *e, int code, const char *fmt, ...)
{
    if (e->fatal) {
        return;
    }
    e->fatal = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->ferr.msg, sizeof(e->ferr.msg), fmt, ap);
    va_end(ap);
    e->ferr.code = code;
    /* lookups queued behind the running ones are not sent (nor paid) */
    sl_http_cancel_waiting(e->http, "not sent: the lookups stopped");
}

/* The API's own explanation, for messages: "message" of a JSON answer, else
 * the start of the body. */
static void answer_text(const sl_http_resp *resp, char *out, size_t cap)
{
    json_t *o = json_loadb(resp->body, resp->body_len, 0, NULL);
    json_t *m = json_object_get(o, "message");
    if (json_is_string(m)) {
        snprintf(out, cap, "%s", json_string_value(m));
    } else {
        snprintf(out, cap, "%.200s", resp->body);
    }
    json_decref(o);
}

static void job_done(void *ud, sl_http_req *req, const sl_http_resp *resp);

static void for_chain(enrich *e, job *j, json_t *fields, double req, double ok, double na)
{
    for (size_t i = j->first; i != SIZE_MAX; i = e->chain[i]) {
        if (merge(e, &e->b->recs[i], j->ent->key, fields, req, ok, na) != 0) {
            set_fatal(e, SL_ERR_NOMEM, "out of memory merging a profile into a record");
        }
    }
}

static void on_ok(enrich *e, job *j, const sl_http_resp *resp)
{
    json_error_t jerr;
    json_t *root = json_loadb(resp->body, resp->body_len, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        set_fatal(e, SL_ERR_INPUT,
                  "%s answered %ld with a body that is not a JSON object (%s); expected the "
                  "profile",
                  e->url_text, resp->status, root ? "not an object" : jerr.text);
        return;
    }
    json_t *fields = json_object();
    for (size_t i = 0; fields && i < e->nout; i++) {
        json_t *v = sl_json_path(root, e->out_paths[i]);
        json_object_set(fields, e->out_names[i], v ? v : json_null());
    }
    char *txt = fields ? json_dumps(fields, JSON_COMPACT) : NULL;
    double at = now_s();
    if (!txt) {
        set_fatal(e, SL_ERR_NOMEM, "out of memory keeping a profile");
    } else if (e->ledger && ledger_push(e, j->ent->key, at, txt) != 0) {
        set_fatal(e, SL_ERR_NOMEM, "out of memory keeping a paid lookup for the ledger");
    }
    if (txt) {
        j->ent->state = E_OK;
        j->ent->at = at;
        free(j->ent->fields);
        j->ent->fields = txt;
        for_chain(e, j, fields, j->requested_at, at, 0);
    }
    e->ok++;
    json_decref(fields);
    json_decref(root);
}

static void job_done(void *ud, sl_http_req *req, const sl_http_resp *resp)
{
    (void)req;
    job *j = ud;
    enrich *e = j->e;
    if (j->delayed) {
        j->delayed = 0;
        e->delayed--;
    }
    if (resp->cancelled) {
        e->active--; /* never sent: its key stays pending and is forgotten */
        return;
    }
    e->lookups++;
    long st = resp->status;
    char why[256];
    if (st == 200 || st == 201 || st == 202 || st == 203 || st == 404) {
        e->accepted = 1;
    }
    if (st == 200 || st == 201 || st == 203) {
        on_ok(e, j, resp);
    } else if (st == 202) {
        e->queued++;
        j->polls++;
        if (j->polls <= e->max_polls && !e->fatal) {
            int64_t wait = e->poll_wait_ms << (j->polls - 1 < 6 ? j->polls - 1 : 6);
            if (wait > 60000) {
                wait = 60000;
            }
            sl_error err = {0};
            if (sl_http_submit_after(e->http, &j->req, wait, job_done, j, &err) == 0) {
                j->delayed = 1;
                e->delayed++;
                return; /* still active */
            }
            set_fatal(e, err.code ? err.code : SL_ERR, "%s", err.msg);
        } else {
            /* parked: dead-lettered at this stage, so `sluice retry` asks again */
            for (size_t i = j->first; i != SIZE_MAX; i = e->chain[i]) {
                sl_record_reject(&e->b->recs[i], e->stage,
                                 "queued: %s still answered 202 (queued) after %d polls; "
                                 "`sluice retry` looks it up again",
                                 e->url_text, j->polls);
                e->parked++;
            }
            ledger_remove(e, j->ent);
            j->ent = NULL;
        }
    } else if (st == 404) {
        e->notfound++;
        j->ent->state = E_NOTFOUND;
        for_chain(e, j, NULL, j->requested_at, 0, now_s());
    } else if (resp->gave_up || st == 0) {
        set_fatal(e, SL_ERR_IO,
                  "%s: %s after %d attempts; stopping (records not looked up stay "
                  "for the next run)",
                  e->url_text, st == 0 ? resp->error : "still failing", resp->attempts);
        if (st != 0) {
            snprintf(e->ferr.msg + strlen(e->ferr.msg), sizeof(e->ferr.msg) - strlen(e->ferr.msg),
                     " (last status %ld)", st);
        }
    } else {
        answer_text(resp, why, sizeof(why));
        if (st == 401 || st == 403) {
            set_fatal(e, SL_ERR_CONFIG,
                      "%s refused the API key: %ld %s; check the token option (the key is not "
                      "shown); stopping, nothing more is looked up",
                      e->url_text, st, why);
        } else {
            set_fatal(e, SL_ERR_INPUT,
                      "%s answered %ld %s to the lookup of %s '%s'; expected 200, 202 or 404; "
                      "stopping",
                      e->url_text, st, why, e->key_field, j->ent ? j->ent->key : "?");
        }
    }
    e->active--;
}

static int build_request(enrich *e, job *j, sl_error *err)
{
    sl_http_req *r = &j->req;
    sl_http_req_reset(r);
    snprintf(r->method, sizeof(r->method), "%s", e->method);
    const sl_record *rec = &e->b->recs[j->first];
    int rc = sl_tpl_render(&e->url, rec, e->key_field, j->ent->key, SL_TPL_URL, &r->url, err);
    if (rc == 0 && e->has_body) {
        rc = sl_tpl_render(&e->body, rec, e->key_field, j->ent->key, SL_TPL_JSON, &r->body, err);
        if (rc == 0) {
            rc = sl_http_req_header(r, "Content-Type", "application/json");
        }
    }
    if (rc == 0) {
        rc = sl_http_req_header(r, "Accept", "application/json");
    }
    if (rc == 0 && e->auth) {
        rc = sl_http_req_header(r, "Authorization", "%s", e->auth);
    }
    for (size_t i = 0; rc == 0 && i < e->nhdr; i++) {
        rc = sl_http_req_header(r, e->hdr_names[i], "%s", e->hdr_values[i]);
    }
    return rc;
}

/* The normalised key of rec into out; 0, or 1 when the record was rejected. */
static int record_key(enrich *e, sl_record *rec, int stage, sl_buf *out)
{
    const sl_field *f = sl_record_get(rec, e->key_field);
    if (!f || f->type == SL_T_NULL || (f->flags & SL_FIELD_OMIT) ||
        (f->type != SL_T_STRING && f->type != SL_T_INT)) {
        sl_record_reject(rec, stage, "%s is %s: nothing to look up", e->key_field,
                         !f                                                   ? "missing"
                         : f->type == SL_T_NULL || (f->flags & SL_FIELD_OMIT) ? "empty"
                                                                              : "not text");
        return 1;
    }
    sl_buf_reset(out);
    if (f->type == SL_T_INT) {
        sl_buf_printf(out, "%lld", (long long)f->v.i);
    } else {
        const char *s = sl_field_str(rec, f);
        size_t n = f->v.s.len;
        while (n && (*s == ' ' || *s == '\t')) {
            s++;
            n--;
        }
        while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) {
            n--;
        }
        if (sl_buf_append(out, s, n) != 0) {
            return -1;
        }
        if (e->key_email) {
            for (size_t i = 0; i < out->len; i++) {
                if (out->data[i] >= 'A' && out->data[i] <= 'Z') {
                    out->data[i] = (char)(out->data[i] - 'A' + 'a');
                }
            }
        }
    }
    if (out->len == 0) {
        sl_record_reject(rec, stage, "%s is empty: nothing to look up", e->key_field);
        return 1;
    }
    if (e->key_email && !sl_email_valid(out->data, out->len)) {
        sl_record_reject(rec, stage, "%s '%.200s' is not an e-mail address; not looked up",
                         e->key_field, out->data);
        return 1;
    }
    return 0;
}

static int enrich_batch(void *self, sl_batch *b, int stage, sl_error *err)
{
    enrich *e = self;
    int rc = 0;
    sl_buf key;
    sl_buf_init(&key, 4096);
    e->b = b;
    e->stage = stage;
    e->njobs = 0;
    e->fatal = 0;
    if (b->n > e->chain_cap) {
        size_t *nc = realloc(e->chain, b->n * sizeof(*nc));
        job *nj = nc ? realloc(e->jobs, b->n * sizeof(*nj)) : NULL;
        if (nc) {
            e->chain = nc;
        }
        if (!nj) {
            rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory for a batch of %zu lookups", b->n);
            goto done;
        }
        e->jobs = nj;
        for (size_t i = e->jobs_cap; i < b->n; i++) {
            sl_http_req_init(&e->jobs[i].req);
        }
        e->jobs_cap = e->chain_cap = b->n;
    }
    if (b->n > e->kcap) {
        size_t *nk = realloc(e->koff, b->n * sizeof(*nk));
        const char **nf = nk ? realloc(e->fetch, b->n * sizeof(*nf)) : NULL;
        if (nk) {
            e->koff = nk;
        }
        if (!nf) {
            rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory for a batch of %zu keys", b->n);
            goto done;
        }
        e->fetch = nf;
        e->kcap = b->n;
    }
    /* each record's key; those this run has not seen yet are asked of the
     * ledger at once (another run, another worker may have paid for them) */
    sl_buf_reset(&e->keys);
    size_t nfetch = 0;
    for (size_t i = 0; i < b->n; i++) {
        sl_record *rec = &b->recs[i];
        e->chain[i] = SIZE_MAX;
        e->koff[i] = SIZE_MAX;
        if (rec->status != SL_REC_OK) {
            continue;
        }
        int k = record_key(e, rec, stage, &key);
        if (k < 0) {
            rc = sl_error_set(err, SL_ERR_LIMIT, "%s is longer than 4 KB", e->key_field);
            goto done;
        }
        if (k == 1) {
            e->rejected++;
            continue;
        }
        e->koff[i] = e->keys.len;
        if (sl_buf_append(&e->keys, key.data, key.len + 1) != 0) {
            rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory for a batch of keys");
            goto done;
        }
    }
    for (size_t i = 0; i < b->n; i++) {
        if (e->koff[i] != SIZE_MAX && !ledger_find(e, e->keys.data + e->koff[i])) {
            e->fetch[nfetch++] = e->keys.data + e->koff[i];
        }
    }
    double now = now_s();
    if (e->ledger && nfetch > 0 && !sl_ctx_dry_run(e->ctx)) {
        fetch_ctx fc = {.e = e, .now = now};
        if (sl_ctx_ledger_get(e->ctx, e->ledger, e->fetch, nfetch, ledger_found, &fc, err) < 0) {
            rc = sl_error_prefix(err, "cannot read the ledger '%s'", e->ledger);
            goto done;
        }
        if (fc.oom) {
            rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory reading the ledger");
            goto done;
        }
    }
    for (size_t i = 0; i < b->n; i++) {
        sl_record *rec = &b->recs[i];
        if (e->koff[i] == SIZE_MAX) {
            continue;
        }
        sl_buf_reset(&key);
        sl_buf_puts(&key, e->keys.data + e->koff[i]);
        if (sl_ctx_dry_run(e->ctx)) {
            continue; /* nothing is looked up (or paid) in a dry run */
        }
        ent *x = ledger_find(e, key.data);
        if (x && x->state == E_OK && (now - x->at) * 1000.0 < (double)e->fresh_ms) {
            if (merge_text(e, rec, x->key, x->fields, x->at) != 0) {
                rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory merging a kept profile");
                goto done;
            }
            e->reused++;
            continue;
        }
        if (x && x->state == E_NOTFOUND) {
            if (merge(e, rec, x->key, NULL, now, 0, now) != 0) {
                rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory");
                goto done;
            }
            continue;
        }
        if (x && x->state == E_PENDING) {
            /* the same key twice in one batch: one lookup, both records */
            size_t t = e->jobs[x->job].first;
            while (e->chain[t] != SIZE_MAX) {
                t = e->chain[t];
            }
            e->chain[t] = i;
            continue;
        }
        if (!x) {
            x = ledger_get(e, key.data);
            if (!x) {
                rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory for the ledger");
                goto done;
            }
        }
        x->state = E_PENDING;
        x->job = e->njobs;
        job *j = &e->jobs[e->njobs++];
        j->e = e;
        j->ent = x;
        j->first = i;
        j->polls = 0;
        j->delayed = 0;
    }

    /* `concurrency` lookups on the wire and as many again ready in the
     * client, which starts one the moment a connection frees (before the
     * answer that freed it is parsed); those waiting for a re-poll come on
     * top. A fatal answer cancels the ones not sent (set_fatal). Until the
     * API has accepted the key once, only one window goes out: a refused
     * key is asked no more than `concurrency` times. */
    size_t next = 0;
    e->active = e->delayed = 0;
    while ((next < e->njobs && !e->fatal) || e->active > 0) {
        size_t window = (e->accepted ? 2 : 1) * (size_t)e->concurrency;
        while (!e->fatal && next < e->njobs && e->active - e->delayed < window) {
            job *j = &e->jobs[next++];
            if (build_request(e, j, err) != 0) {
                for (size_t r = j->first; r != SIZE_MAX; r = e->chain[r]) {
                    sl_record_reject(&b->recs[r], stage, "%s", err->msg);
                }
                ledger_remove(e, j->ent);
                j->ent = NULL;
                continue;
            }
            j->requested_at = now_s();
            if (sl_http_submit(e->http, &j->req, job_done, j, err) != 0) {
                set_fatal(e, err->code ? err->code : SL_ERR, "%s", err->msg);
                break;
            }
            e->active++;
        }
        if (e->active == 0) {
            continue;
        }
        sl_http_run(e->http, 200);
        /* the ledger thread writes the answers as they arrive; stop asking
         * as soon as it cannot */
        if (!e->fatal && ledger_sync(e, 0, err) < 0) {
            set_fatal(e, err->code ? err->code : SL_ERR_IO, "%s", err->msg);
        }
        if (sl_ctx_stopping(e->ctx) && !e->fatal) {
            set_fatal(e, SL_ERR_INTERRUPTED, "stopped while looking up (%zu of %zu sent)", next,
                      e->njobs);
        }
    }
    /* a job never sent (fatal) leaves its key pending: forget it */
    for (size_t i = 0; i < e->njobs; i++) {
        if (e->jobs[i].ent && e->jobs[i].ent->state == E_PENDING) {
            ledger_remove(e, e->jobs[i].ent);
            e->jobs[i].ent = NULL;
        }
    }
    /* before the records go on: a profile the sink may see is in the ledger */
    if (ledger_sync(e, 1, err) < 0 && !e->fatal) {
        set_fatal(e, err->code ? err->code : SL_ERR_IO, "%s", err->msg);
    }
    if (e->fatal) {
        rc = sl_error_set(err, e->ferr.code, "%s", e->ferr.msg);
    }
done:
    sl_buf_free(&key);
    e->b = NULL;
    return rc;
}

/* ------------------------------------------------------------------ setup */

static void enrich_destroy(void *self)
{
    enrich *e = self;
    if (!e) {
        return;
    }
    if (e->lookups || e->reused || e->rejected) {
        sl_plog(e->ctx, SL_LOG_INFO,
                "%llu lookups: %llu profiles (billed), %llu queued answers, %llu not found, "
                "%llu parked; %llu kept profiles reused, %llu records rejected",
                (unsigned long long)e->lookups, (unsigned long long)e->ok,
                (unsigned long long)e->queued, (unsigned long long)e->notfound,
                (unsigned long long)e->parked, (unsigned long long)e->reused,
                (unsigned long long)e->rejected);
    }
    sl_http_free(e->http);
    for (size_t i = 0; i < e->jobs_cap; i++) {
        sl_http_req_free(&e->jobs[i].req);
    }
    free(e->jobs);
    free(e->chain);
    for (size_t i = 0; i < e->nbuckets; i++) {
        for (ent *x = e->buckets[i], *nx; x; x = nx) {
            nx = x->next;
            free(x->key);
            free(x->fields);
            free(x);
        }
    }
    free(e->buckets);
    if (e->lthread_on) {
        /* what is queued is written before the thread ends */
        pthread_mutex_lock(&e->lmu);
        e->lstop = 1;
        pthread_cond_signal(&e->lwork);
        pthread_mutex_unlock(&e->lmu);
        pthread_join(e->lthread, NULL);
    }
    pthread_mutex_destroy(&e->lmu);
    pthread_cond_destroy(&e->lwork);
    pthread_cond_destroy(&e->ldone);
    for (size_t i = 0; i < e->npend; i++) {
        free(e->pend_keys[i]);
        free(e->pend_vals[i]);
    }
    free(e->pend_keys);
    free(e->pend_vals);
    free(e->fetch);
    free(e->koff);
    sl_buf_free(&e->keys);
    free(e->ledger);
    sl_tpl_free(&e->url);
    sl_tpl_free(&e->body);
    free(e->url_text);
    free(e->key_field);
    free(e->key_as);
    free(e->auth);
    for (size_t i = 0; i < e->nhdr; i++) {
        free(e->hdr_names[i]);
        free(e->hdr_values[i]);
    }
    free(e->hdr_names);
    free(e->hdr_values);
    for (size_t i = 0; i < e->nout; i++) {
        free(e->out_names[i]);
        free(e->out_paths[i]);
    }
    free(e->out_names);
    free(e->out_paths);
    free((void *)e->out_cols);
    free(e);
}

static char *dup_or(const sl_opts *o, const char *name, const char *def)
{
    const char *v = sl_opt_isset(o, name) ? sl_opt_str(o, name) : def;
    return v ? strdup(v) : NULL;
}

static int enrich_validate(const sl_opts *o, sl_report_fn report, void *ud)
{
    int n = 0;
    int fc = strcmp(sl_opt_str(o, "preset"), "fullcontact") == 0;
    if (!fc && !sl_opt_isset(o, "url")) {
        report(ud, "url", "expected the lookup URL (required unless preset: fullcontact)");
        n++;
    }
    if (!fc && !sl_opt_isset(o, "key")) {
        report(ud, "key",
               "expected the field that identifies a lookup (required unless preset: "
               "fullcontact)");
        n++;
    }
    if (!fc && sl_opt_count(o, "fields") == 0) {
        report(ud, "fields",
               "expected at least one 'output_field: json.path' (required unless "
               "preset: fullcontact)");
        n++;
    }
    if (sl_opt_int(o, "concurrency") < 1 || sl_opt_int(o, "concurrency") > 1000) {
        report(ud, "concurrency", "expected 1..1000, got %lld",
               (long long)sl_opt_int(o, "concurrency"));
        n++;
    }
    if (sl_opt_int(o, "max_attempts") < 1 || sl_opt_int(o, "max_attempts") > 100) {
        report(ud, "max_attempts", "expected 1..100");
        n++;
    }
    if (sl_opt_int(o, "queued_polls") < 0 || sl_opt_int(o, "queued_polls") > 100) {
        report(ud, "queued_polls", "expected 0..100");
        n++;
    }
    if (!(sl_opt_float(o, "rate_limit") >= 0)) {
        report(ud, "rate_limit", "expected a number of requests per second >= 0");
        n++;
    }
    return n;
}

static int enrich_init(void **self, const sl_opts *o, sl_ctx *ctx, sl_error *err)
{
    if (sl_opts_validate(o, enrich_validate, err) > 0) {
        return SL_ERR_CONFIG;
    }
    int rc = SL_ERR_NOMEM;
    enrich *e = calloc(1, sizeof(*e));
    if (!e) {
        return sl_error_set(err, rc, "out of memory");
    }
    e->ctx = ctx;
    sl_buf_init(&e->keys, 0);
    pthread_mutex_init(&e->lmu, NULL);
    pthread_cond_init(&e->lwork, NULL);
    pthread_cond_init(&e->ldone, NULL);
    e->preset = strcmp(sl_opt_str(o, "preset"), "fullcontact") == 0 ? P_FULLCONTACT : P_GENERIC;
    int fc = e->preset == P_FULLCONTACT;
    e->key_field = dup_or(o, "key", "email");
    e->url_text = dup_or(o, "url", "https://api.fullcontact.com/v3/person.enrich");
    char *body = dup_or(o, "body", fc ? "{\"email\":\"{email}\"}" : NULL);
    e->key_as = dup_or(o, "key_as", fc ? "email_address" : NULL);
    const char *kf =
        sl_opt_isset(o, "key_format") ? sl_opt_str(o, "key_format") : (fc ? "email" : "any");
    e->key_email = strcmp(kf, "email") == 0;
    snprintf(e->method, sizeof(e->method), "%s", sl_opt_str(o, "method"));
    e->fresh_ms = sl_opt_duration_ms(o, "fresh_for");
    e->max_polls = (int)sl_opt_int(o, "queued_polls");
    e->poll_wait_ms = sl_opt_duration_ms(o, "queued_wait");
    e->concurrency = (int)sl_opt_int(o, "concurrency");
    if (!e->key_field || !e->url_text || (fc && (!body || !e->key_as))) {
        free(body);
        goto fail;
    }
    e->has_body = body != NULL;
    if (sl_tpl_compile(&e->url, e->url_text, err) != 0 ||
        (body && sl_tpl_compile(&e->body, body, err) != 0)) {
        free(body);
        rc = err->code;
        goto fail_msg;
    }
    free(body);
    const char *token = sl_opt_str(o, "token");
    if (token && token[0]) {
        size_t n = strlen(token) + 8;
        e->auth = malloc(n);
        if (!e->auth) {
            goto fail;
        }
        snprintf(e->auth, n, "Bearer %s", token);
        sl_secret_register(token);
    }
    e->nhdr = sl_opt_count(o, "headers");
    e->hdr_names = calloc(e->nhdr + 1, sizeof(char *));
    e->hdr_values = calloc(e->nhdr + 1, sizeof(char *));
    if (!e->hdr_names || !e->hdr_values) {
        goto fail;
    }
    for (size_t i = 0; i < e->nhdr; i++) {
        e->hdr_names[i] = strdup(sl_opt_key(o, "headers", i));
        e->hdr_values[i] = strdup(sl_opt_item(o, "headers", i));
        if (!e->hdr_names[i] || !e->hdr_values[i]) {
            goto fail;
        }
    }
    size_t nf = sl_opt_count(o, "fields");
    e->nout = nf ? nf : (fc ? FC_NFIELDS : 0);
    e->out_names = calloc(e->nout + 1, sizeof(char *));
    e->out_paths = calloc(e->nout + 1, sizeof(char *));
    if (!e->out_names || !e->out_paths) {
        goto fail;
    }
    for (size_t i = 0; i < e->nout; i++) {
        e->out_names[i] = strdup(nf ? sl_opt_key(o, "fields", i) : fc_fields[i][0]);
        e->out_paths[i] = strdup(nf ? sl_opt_item(o, "fields", i) : fc_fields[i][1]);
        if (!e->out_names[i] || !e->out_paths[i]) {
            goto fail;
        }
    }

    sl_http_opts ho;
    sl_http_opts_default(&ho);
    ho.concurrency = e->concurrency;
    /* a per-key limit shared by `sluice worker`s: this process's part */
    ho.rate_per_sec = sl_opt_float(o, "rate_limit") * sl_ctx_rate_share(ctx);
    ho.max_attempts = (int)sl_opt_int(o, "max_attempts");
    ho.timeout_ms = (long)sl_opt_duration_ms(o, "timeout");
    ho.log_prefix = sl_ctx_name(ctx);
    e->http = sl_http_new(&ho, err);
    if (!e->http) {
        rc = err->code;
        goto fail_msg;
    }
    const char *scope = sl_opt_isset(o, "ledger") ? sl_opt_str(o, "ledger")
                        : fc                      ? "fullcontact"
                                                  : NULL;
    if (scope && *scope) {
        e->ledger = strdup(scope);
        if (!e->ledger) {
            goto fail;
        }
        /* a state store must be there to keep it: say so now, not mid-run */
        if (!sl_ctx_dry_run(ctx) &&
            sl_ctx_ledger_get(ctx, e->ledger, NULL, 0, NULL, NULL, err) < 0) {
            rc = err->code;
            goto fail_msg;
        }
        if (!sl_ctx_dry_run(ctx)) {
            if (pthread_create(&e->lthread, NULL, ledger_main, e) != 0) {
                rc = sl_error_set(err, SL_ERR, "cannot start the ledger thread");
                goto fail_msg;
            }
            e->lthread_on = 1;
        }
    }
    *self = e;
    return 0;
fail:
    sl_error_set(err, SL_ERR_NOMEM, "out of memory setting up the enrich step");
fail_msg:
    enrich_destroy(e);
    return rc ? rc : SL_ERR;
}

static int enrich_columns(void *self, const char *const *cols, size_t n, sl_error *err)
{
    enrich *e = self;
    const sl_tpl *tpls[2] = {&e->url, &e->body};
    int has_key = 0;
    for (size_t i = 0; i < n; i++) {
        has_key |= strcmp(cols[i], e->key_field) == 0;
    }
    if (!has_key) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "key field '%s' is not among the input columns; the lookups need it",
                            e->key_field);
    }
    for (int t = 0; t < 2; t++) {
        for (size_t p = 0; p < tpls[t]->n; p++) {
            if (!tpls[t]->parts[p].ref) {
                continue;
            }
            size_t i = 0;
            while (i < n && strcmp(cols[i], tpls[t]->parts[p].text) != 0) {
                i++;
            }
            if (i == n) {
                return sl_error_set(err, SL_ERR_CONFIG,
                                    "the %s template uses {%s}, which is not an input column",
                                    t == 0 ? "url" : "body", tpls[t]->parts[p].text);
            }
        }
    }
    return 0;
}

static const char *const *enrich_output_columns(void *self, const char *const *in, size_t n,
                                                size_t *nout)
{
    enrich *e = self;
    static const char *const stamps[] = {"requested_at", "success_at", "unavailable_at"};
    size_t cap = n + e->nout + 4;
    const char **cols = calloc(cap, sizeof(*cols));
    if (!cols) {
        *nout = n;
        return in;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        cols[k++] = in[i];
    }
    const char *add[64 + 4];
    size_t na = 0;
    if (e->key_as) {
        add[na++] = e->key_as;
    }
    for (size_t i = 0; i < e->nout && na < 64; i++) {
        add[na++] = e->out_names[i];
    }
    for (size_t i = 0; i < 3; i++) {
        add[na++] = stamps[i];
    }
    for (size_t a = 0; a < na; a++) {
        size_t i = 0;
        while (i < k && strcmp(cols[i], add[a]) != 0) {
            i++;
        }
        if (i == k) {
            cols[k++] = add[a];
        }
    }
    free((void *)e->out_cols);
    e->out_cols = cols;
    e->nout_cols = k;
    *nout = k;
    return cols;
}

const sl_step_plugin sl_step_enrich = {
    .name = "enrich",
    .summary = "HTTP lookup per record (FullContact person enrich preset), many in flight; "
               "a billing ledger never pays twice for a key",
    .options = enrich_options,
    .validate = enrich_validate,
    .init = enrich_init,
    .columns = enrich_columns,
    .output_columns = enrich_output_columns,
    .process_batch = enrich_batch,
    .destroy = enrich_destroy,
};
