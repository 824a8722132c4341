/* stitch: records to the Stitch Import API, `POST {url}/v2/import/batch`.
 *
 * Body: {"table_name":"t","key_names":["k"],"schema":{JSON schema},
 *        "messages":[{"action":"upsert","sequence":N,"data":{...}}, ...]}
 * One table per request, the body under 4 MB, at most 10,000 messages.
 *
 * The schema describes the request's own records: a column's type comes from
 * the `schema` option when declared there, else from the types its values
 * have in this request (integers and decimals together make "number"). Key
 * columns are required and never null. A record without a key value is
 * dead-lettered before sending; so is one whose message alone would not fit
 * in a request. Stitch validates every record against the schema and refuses
 * the whole batch (400) for one record that does not conform: decode answers
 * SL_SEND_SPLIT and the engine sends the batch in halves until that record is
 * alone, and dead-letters it with Stitch's reason.
 *
 * Sequence: Stitch keeps, per key, the version with the highest `sequence`,
 * so sequences must grow across batches, runs and machines' restarts. Each
 * batch takes a block of b->n consecutive values starting at
 * max(now in ms × 1000, last value + 1); its records take base + index. The
 * halves the engine sends while isolating a refused record (same b->seq)
 * reuse their batch's block, so a record re-sent late never outranks a newer
 * version of the same key delivered meanwhile. Values stay below 2^53 (exact
 * in every JSON parser) until the year 2255; a later run starts above an
 * earlier one as long as a run averages under 1,000 records per millisecond
 * and the clock does not step back. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "sluice/plugin.h"
#include "sluice/url.h"
#include "sluice/values.h"

#define STITCH_PATH "/v2/import/batch"
#define STITCH_URL_MAX 2048
#define STITCH_MAX_MESSAGES 10000
#define STITCH_KEYS_MAX 16
#define STITCH_RING 1024 /* batch blocks remembered: far more than the engine's window */

/* JSON schema type bits */
enum {
    T_NULL = 1 << 0,
    T_STRING = 1 << 1,
    T_INTEGER = 1 << 2,
    T_NUMBER = 1 << 3,
    T_BOOLEAN = 1 << 4,
    T_OBJECT = 1 << 5,
    T_ARRAY = 1 << 6,
    T_DATETIME = 1 << 7, /* declared only: a string with format date-time */
};

typedef struct declared {
    const char *name;
    unsigned type;
} declared;

typedef struct col {
    const char *name; /* borrowed from a record (names outlive the run) */
    uint32_t len;
    unsigned mask;
} col;

typedef struct stitch {
    sl_ctx *ctx;                    /* borrowed */
    char *url;                      /* base + /v2/import/batch */
    char url_shown[STITCH_URL_MAX]; /* without credentials, for messages */
    char *token;
    char *table;
    const char *keys[STITCH_KEYS_MAX]; /* borrowed from opts */
    size_t nkeys;
    declared *decl; /* names borrowed from opts */
    size_t ndecl;
    size_t limit; /* a request body must be smaller than this */
    pthread_mutex_t mu;
    int64_t last; /* last sequence value handed out */
    struct {
        uint64_t seq;
        int64_t base;
        int used;
    } ring[STITCH_RING];
} stitch;

static const sl_option stitch_options[] = {
    {"url", SL_OPT_STRING, "https://api.stitchdata.com", 0, NULL,
     "Import API base, e.g. https://api.stitchdata.com (/v2/import/batch is appended)"},
    {"token", SL_OPT_STRING, NULL, SL_OPT_REQUIRED | SL_OPT_SECRET, NULL,
     "Import API access token (sent as Authorization: Bearer)"},
    {"table", SL_OPT_STRING, NULL, SL_OPT_REQUIRED, NULL, "destination table_name"},
    {"key_names", SL_OPT_LIST, NULL, SL_OPT_REQUIRED, NULL,
     "primary key column(s): required in every record, never null"},
    {"schema", SL_OPT_MAP, NULL, 0, "string|integer|number|boolean|date-time|object|array",
     "declared column types; other columns take the type their values have"},
    {"max_request_bytes", SL_OPT_SIZE, "4MB", 0, NULL,
     "a request body stays under this size (Stitch: 4 MB)"},
    SL_OPTIONS_END,
};

static unsigned type_bit(const char *s)
{
    static const struct {
        const char *name;
        unsigned bit;
    } t[] = {{"string", T_STRING},   {"integer", T_INTEGER},    {"number", T_NUMBER},
             {"boolean", T_BOOLEAN}, {"date-time", T_DATETIME}, {"object", T_OBJECT},
             {"array", T_ARRAY}};
    for (size_t i = 0; s && i < sizeof(t) / sizeof(t[0]); i++) {
        if (strcmp(s, t[i].name) == 0) {
            return t[i].bit;
        }
    }
    return 0;
}

/* Every check of option values, shared by validate (`sluice check`) and init. */
static int stitch_check(const sl_opts *opts, sl_report_fn report, void *ud)
{
    int bad = 0;
    const char *url = sl_opt_str(opts, "url");
    sl_url pu = {0};
    int url_ok = url && sl_url_parse(url, &pu, NULL) == 0 &&
                 (strcmp(pu.scheme, "https") == 0 || strcmp(pu.scheme, "http") == 0) && *pu.host;
    sl_url_free(&pu);
    if (!url_ok) {
        char shown[256];
        sl_url_redact(url ? url : "", shown, sizeof(shown), 0);
        report(ud, "url", "'%s' is not an http(s) URL (expected e.g. https://api.stitchdata.com)",
               shown);
        bad++;
    } else if (strchr(url, '?') || strchr(url, '#')) {
        report(ud, "url", "expected the API base without a query, e.g. https://api.stitchdata.com");
        bad++;
    } else if (strlen(url) + strlen(STITCH_PATH) >= STITCH_URL_MAX) {
        report(ud, "url", "longer than %d bytes", STITCH_URL_MAX - 40);
        bad++;
    }
    const char *tok = sl_opt_str(opts, "token");
    if (!tok || !tok[0]) {
        report(ud, "token", "must not be empty");
        bad++;
    }
    const char *table = sl_opt_str(opts, "table");
    if (!table || !table[0]) {
        report(ud, "table", "must not be empty");
        bad++;
    }
    size_t nk = sl_opt_count(opts, "key_names");
    if (nk == 0 || nk > STITCH_KEYS_MAX) {
        report(ud, "key_names", "%zu columns (expected 1 to %d)", nk, STITCH_KEYS_MAX);
        bad++;
    }
    for (size_t i = 0; i < nk; i++) {
        const char *k = sl_opt_item(opts, "key_names", i);
        if (!k || !k[0]) {
            report(ud, "key_names", "item %zu is empty (expected a column name)", i + 1);
            bad++;
        }
        for (size_t j = 0; k && j < i; j++) {
            if (strcmp(k, sl_opt_item(opts, "key_names", j)) == 0) {
                report(ud, "key_names", "'%s' is listed twice", k);
                bad++;
            }
        }
    }
    for (size_t i = 0; i < sl_opt_count(opts, "schema"); i++) {
        const char *k = sl_opt_key(opts, "schema", i);
        const char *t = sl_opt_item(opts, "schema", i);
        unsigned bit = type_bit(t);
        for (size_t j = 0; j < nk && bit; j++) {
            if (strcmp(k, sl_opt_item(opts, "key_names", j)) == 0 && (bit & (T_OBJECT | T_ARRAY))) {
                report(ud, "schema", "key column '%s' is declared %s (a key must be a scalar)", k,
                       t);
                bad++;
            }
        }
    }
    int64_t lim = sl_opt_size(opts, "max_request_bytes");
    if (lim < 64 * 1024 || lim > 4 * 1024 * 1024) {
        report(ud, "max_request_bytes", "%lld bytes (expected 64KB to 4MB: Stitch's limit is 4 MB)",
               (long long)lim);
        bad++;
    }
    return bad;
}

static int stitch_validate(const sl_opts *opts, sl_report_fn report, void *ud)
{
    return stitch_check(opts, report, ud);
}

typedef struct first_problem {
    char msg[512];
    int n;
} first_problem;

static void SL_PRINTF(3, 4) keep_first(void *ud, const char *option, const char *fmt, ...)
{
    first_problem *fp = ud;
    if (fp->n++ == 0) {
        int k = snprintf(fp->msg, sizeof(fp->msg), "%s: ", option);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(fp->msg + k, sizeof(fp->msg) - (size_t)k, fmt, ap);
        va_end(ap);
    }
}

static void stitch_destroy(void *self)
{
    stitch *st = self;
    if (!st) {
        return;
    }
    pthread_mutex_destroy(&st->mu);
    free(st->url);
    free(st->token);
    free(st->table);
    free(st->decl);
    free(st);
}

static int stitch_init(void **self, const sl_opts *opts, sl_ctx *ctx, sl_error *err)
{
    first_problem fp = {{0}, 0};
    if (stitch_check(opts, keep_first, &fp) > 0) {
        return sl_error_set(err, SL_ERR_CONFIG, "%s: %s", sl_opt_where(opts, "url"), fp.msg);
    }
    stitch *st = calloc(1, sizeof(*st));
    if (!st) {
        return sl_error_set(err, SL_ERR_NOMEM, "stitch: out of memory");
    }
    pthread_mutex_init(&st->mu, NULL);
    st->ctx = ctx;
    const char *url = sl_opt_str(opts, "url");
    size_t ul = strlen(url);
    while (ul > 0 && url[ul - 1] == '/') {
        ul--;
    }
    size_t pl = strlen(STITCH_PATH);
    if (ul >= pl && memcmp(url + ul - pl, STITCH_PATH, pl) == 0) {
        ul -= pl; /* the URL already names the endpoint */
    }
    st->url = malloc(ul + pl + 1);
    st->ndecl = sl_opt_count(opts, "schema");
    st->decl = calloc(st->ndecl ? st->ndecl : 1, sizeof(*st->decl));
    const char *tok = sl_opt_str(opts, "token");
    sl_secret_register(tok);
    st->token = strdup(tok);
    st->table = strdup(sl_opt_str(opts, "table"));
    if (!st->url || !st->decl || !st->token || !st->table) {
        stitch_destroy(st);
        return sl_error_set(err, SL_ERR_NOMEM, "stitch: out of memory");
    }
    memcpy(st->url, url, ul);
    memcpy(st->url + ul, STITCH_PATH, pl + 1);
    sl_url_redact(st->url, st->url_shown, sizeof(st->url_shown), 0);
    st->nkeys = sl_opt_count(opts, "key_names");
    for (size_t i = 0; i < st->nkeys; i++) {
        st->keys[i] = sl_opt_item(opts, "key_names", i);
    }
    for (size_t i = 0; i < st->ndecl; i++) {
        st->decl[i].name = sl_opt_key(opts, "schema", i);
        st->decl[i].type = type_bit(sl_opt_item(opts, "schema", i));
    }
    st->limit = (size_t)sl_opt_size(opts, "max_request_bytes");
    *self = st;
    return 0;
}

static int stitch_columns(void *self, const char *const *cols, size_t n, sl_error *err)
{
    stitch *st = self;
    for (size_t k = 0; k < st->nkeys; k++) {
        size_t i = 0;
        while (i < n && strcmp(cols[i], st->keys[k]) != 0) {
            i++;
        }
        if (i == n) {
            return sl_error_set(err, SL_ERR_INPUT,
                                "input has no '%s' column (listed in key_names of table '%s')",
                                st->keys[k], st->table);
        }
    }
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* First sequence value of batch seq's block of n values (see the top). */
static int64_t block_base(stitch *st, uint64_t seq, size_t n)
{
    pthread_mutex_lock(&st->mu);
    size_t slot = (size_t)(seq % STITCH_RING);
    int64_t base;
    if (st->ring[slot].used && st->ring[slot].seq == seq) {
        base = st->ring[slot].base;
    } else {
        base = now_ms() * 1000;
        if (base <= st->last) {
            base = st->last + 1;
        }
        st->last = base + (int64_t)(n ? n : 1) - 1;
        st->ring[slot].used = 1;
        st->ring[slot].seq = seq;
        st->ring[slot].base = base;
    }
    pthread_mutex_unlock(&st->mu);
    return base;
}

static int is_key(const stitch *st, const sl_field *f)
{
    for (size_t k = 0; k < st->nkeys; k++) {
        if (strlen(st->keys[k]) == f->name_len && memcmp(st->keys[k], f->name, f->name_len) == 0) {
            return 1;
        }
    }
    return 0;
}

static unsigned field_bit(const sl_record *rec, const sl_field *f)
{
    switch ((sl_type)f->type) {
    case SL_T_NULL:
        return T_NULL;
    case SL_T_STRING:
        return T_STRING;
    case SL_T_INT:
        return T_INTEGER;
    case SL_T_FLOAT:
        return T_NUMBER;
    case SL_T_BOOL:
        return T_BOOLEAN;
    case SL_T_JSON: {
        const char *s = sl_field_str(rec, f);
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') {
            s++;
        }
        return *s == '[' ? T_ARRAY : *s == '{' ? T_OBJECT : T_STRING;
    }
    }
    return T_STRING;
}

/* Why a record cannot be sent for its keys, or NULL. */
static const char *key_problem(const stitch *st, const sl_record *rec, char *why, size_t cap)
{
    for (size_t k = 0; k < st->nkeys; k++) {
        const sl_field *f = sl_record_get(rec, st->keys[k]);
        if (!f || (f->flags & SL_FIELD_OMIT) || f->type == SL_T_NULL) {
            snprintf(why, cap,
                     "key column '%s' is %s: Stitch requires every key_names column in every "
                     "record of table '%s'",
                     st->keys[k], !f ? "missing" : "empty", st->table);
            return why;
        }
        unsigned b = field_bit(rec, f);
        if (b & (T_OBJECT | T_ARRAY)) {
            snprintf(why, cap, "key column '%s' holds a JSON %s (a key must be a scalar)",
                     st->keys[k], b == T_OBJECT ? "object" : "array");
            return why;
        }
    }
    return NULL;
}

static col *col_find(col **cols, size_t *n, size_t *cap, size_t hint, const sl_field *f)
{
    if (hint < *n && (*cols)[hint].len == f->name_len &&
        memcmp((*cols)[hint].name, f->name, f->name_len) == 0) {
        return &(*cols)[hint];
    }
    for (size_t i = 0; i < *n; i++) {
        if ((*cols)[i].len == f->name_len && memcmp((*cols)[i].name, f->name, f->name_len) == 0) {
            return &(*cols)[i];
        }
    }
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 32;
        col *p = realloc(*cols, nc * sizeof(*p));
        if (!p) {
            return NULL;
        }
        *cols = p;
        *cap = nc;
    }
    col *c = &(*cols)[(*n)++];
    c->name = f->name;
    c->len = f->name_len;
    c->mask = 0;
    return c;
}

static const declared *declared_type(const stitch *st, const char *name, size_t len)
{
    for (size_t i = 0; i < st->ndecl; i++) {
        if (strlen(st->decl[i].name) == len && memcmp(st->decl[i].name, name, len) == 0) {
            return &st->decl[i];
        }
    }
    return NULL;
}

/* One property of the schema. mask: the types seen (or declared); key: not
 * nullable. */
static void write_property(sl_jw *w, unsigned mask, int key)
{
    static const struct {
        unsigned bit;
        const char *name;
    } order[] = {{T_STRING, "string"},   {T_INTEGER, "integer"}, {T_NUMBER, "number"},
                 {T_BOOLEAN, "boolean"}, {T_OBJECT, "object"},   {T_ARRAY, "array"}};
    int datetime = (mask & T_DATETIME) != 0;
    if (datetime) {
        mask = (mask & ~T_DATETIME) | T_STRING;
    }
    if ((mask & T_NUMBER) && (mask & T_INTEGER)) {
        mask &= ~T_INTEGER; /* JSON schema: every integer is a number */
    }
    if (key) {
        mask &= ~T_NULL;
    }
    if ((mask & ~T_NULL) == 0) {
        mask |= T_STRING; /* only nulls seen: a nullable string column */
    }
    size_t ntypes = 0;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        ntypes += (mask & order[i].bit) != 0;
    }
    ntypes += (mask & T_NULL) != 0;
    sl_jw_obj_open(w);
    sl_jw_keyz(w, "type");
    if (ntypes > 1) {
        sl_jw_arr_open(w);
    }
    if (mask & T_NULL) {
        sl_jw_str(w, "null", 4);
    }
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        if (mask & order[i].bit) {
            sl_jw_str(w, order[i].name, strlen(order[i].name));
        }
    }
    if (ntypes > 1) {
        sl_jw_arr_close(w);
    }
    if (datetime) {
        sl_jw_keyz(w, "format");
        sl_jw_str(w, "date-time", 9);
    }
    sl_jw_obj_close(w);
}

static int stitch_encode(void *self, sl_batch *b, sl_http_req *req, sl_error *err)
{
    stitch *st = self;
    int rc = 0;
    col *cols = NULL;
    size_t ncols = 0, capcols = 0;
    sl_buf msgs;
    sl_buf_init(&msgs, (size_t)64 * 1024 * 1024);
    sl_http_req_reset(req);
    sl_jw w;
    int64_t base = block_base(st, b->seq, b->n);
    size_t nsent = 0;
    /* the envelope without schema and messages, for the one-record limit */
    size_t envelope = 96 + strlen(st->table) * 2;
    for (size_t k = 0; k < st->nkeys; k++) {
        envelope += strlen(st->keys[k]) * 2 + 8;
    }
    for (size_t r = 0; r < b->n; r++) {
        sl_record *rec = &b->recs[r];
        if (rec->status != SL_REC_OK) {
            continue;
        }
        char why[512];
        if (key_problem(st, rec, why, sizeof(why))) {
            sl_record_fail(rec, "%s", why);
            continue;
        }
        if (nsent == STITCH_MAX_MESSAGES) {
            /* the engine's batch is bounded by max_batch_records: a bug if seen */
            rc = sl_error_set(err, SL_ERR_LIMIT,
                              "stitch: batch %llu holds more than %d records (Stitch's limit per "
                              "request)",
                              (unsigned long long)b->seq, STITCH_MAX_MESSAGES);
            goto done;
        }
        size_t before = msgs.len;
        size_t schema_est = 0;
        sl_jw_init(&w, &msgs);
        if (nsent > 0) {
            sl_buf_putc(&msgs, ',');
        }
        sl_jw_obj_open(&w);
        sl_jw_keyz(&w, "action");
        sl_jw_str(&w, "upsert", 6);
        sl_jw_keyz(&w, "sequence");
        sl_jw_int(&w, base + (int64_t)r);
        sl_jw_keyz(&w, "data");
        sl_jw_obj_open(&w);
        for (uint32_t i = 0; i < rec->nfields; i++) {
            const sl_field *f = &rec->fields[i];
            if (f->flags & SL_FIELD_OMIT) {
                continue;
            }
            sl_jw_key(&w, f->name, f->name_len);
            sl_jw_field(&w, rec, f);
            schema_est += f->name_len * 2 + 80;
        }
        sl_jw_obj_close(&w);
        sl_jw_obj_close(&w);
        if (w.err) {
            rc = sl_error_set(err, w.err, "stitch: out of memory encoding batch %llu",
                              (unsigned long long)b->seq);
            goto done;
        }
        size_t mlen = msgs.len - before - (nsent > 0);
        if (mlen + schema_est + envelope >= st->limit) {
            msgs.len = before;
            msgs.data[before] = '\0';
            sl_record_fail(rec,
                           "record is %zu bytes as a Stitch message: a request to table '%s' "
                           "must stay under %zu bytes, so it cannot be sent even alone",
                           mlen, st->table, st->limit);
            continue;
        }
        /* the types of what was written */
        for (uint32_t i = 0; i < rec->nfields; i++) {
            const sl_field *f = &rec->fields[i];
            if (f->flags & SL_FIELD_OMIT) {
                continue;
            }
            col *c = col_find(&cols, &ncols, &capcols, i, f);
            if (!c) {
                rc = sl_error_set(err, SL_ERR_NOMEM, "stitch: out of memory building a schema");
                goto done;
            }
            c->mask |= field_bit(rec, f);
        }
        nsent++;
    }
    if (nsent == 0) {
        goto done; /* nothing to send: the engine acknowledges without a request */
    }
    sl_jw_init(&w, &req->body);
    sl_jw_obj_open(&w);
    sl_jw_keyz(&w, "table_name");
    sl_jw_str(&w, st->table, strlen(st->table));
    sl_jw_keyz(&w, "key_names");
    sl_jw_arr_open(&w);
    for (size_t k = 0; k < st->nkeys; k++) {
        sl_jw_str(&w, st->keys[k], strlen(st->keys[k]));
    }
    sl_jw_arr_close(&w);
    sl_jw_keyz(&w, "schema");
    sl_jw_obj_open(&w);
    sl_jw_keyz(&w, "properties");
    sl_jw_obj_open(&w);
    for (size_t i = 0; i < ncols; i++) {
        const col *c = &cols[i];
        const declared *d = declared_type(st, c->name, c->len);
        int key = is_key(st, &(sl_field){.name = c->name, .name_len = c->len});
        sl_jw_key(&w, c->name, c->len);
        write_property(&w, d ? d->type | T_NULL : c->mask, key);
    }
    sl_jw_obj_close(&w);
    sl_jw_obj_close(&w);
    sl_jw_keyz(&w, "messages");
    sl_jw_arr_open(&w);
    sl_jw_raw(&w, msgs.data, msgs.len);
    sl_jw_arr_close(&w);
    sl_jw_obj_close(&w);
    if (w.err) {
        rc = sl_error_set(err, w.err, "stitch: request body of batch %llu exceeds %zu bytes",
                          (unsigned long long)b->seq, req->body.max);
        goto done;
    }
    /* A body at or over the limit (a batch closed just past batch.bytes by a
     * large record) is still sent: Stitch answers 413 and decode has the
     * engine send it in halves. */
    memcpy(req->method, "POST", 5);
    rc = sl_buf_puts(&req->url, st->url);
    if (!rc) {
        rc = sl_http_req_header(req, "Authorization", "Bearer %s", st->token);
    }
    if (!rc) {
        rc = sl_http_req_header(req, "Content-Type", "application/json");
    }
    if (rc) {
        rc = sl_error_set(err, rc, "stitch: out of memory building the request");
    }
done:
    if (rc || nsent == 0) {
        sl_buf_reset(&req->body);
    }
    free(cols);
    sl_buf_free(&msgs);
    return rc;
}

/* Stitch's reason: `error` (and the messages of `errors`), else `message`,
 * else the start of the body. */
static void body_reason(const sl_http_resp *resp, char *dst, size_t cap)
{
    json_t *root = json_loadb(resp->body, resp->body_len, 0, NULL);
    const char *msg = json_string_value(json_object_get(root, "error"));
    if (!msg) {
        msg = json_string_value(json_object_get(root, "message"));
    }
    json_t *errors = json_object_get(root, "errors");
    if (!msg && json_is_array(errors)) {
        json_t *e0 = json_array_get(errors, 0);
        msg = json_is_string(e0) ? json_string_value(e0)
                                 : json_string_value(json_object_get(e0, "error"));
    }
    if (msg && msg[0]) {
        sl_excerpt(dst, cap, msg, strlen(msg), 400);
    } else if (resp->body_len) {
        sl_excerpt(dst, cap, resp->body, resp->body_len, 300);
    } else {
        snprintf(dst, cap, "(empty body)");
    }
    json_decref(root);
}

static sl_verdict stitch_decode(void *self, sl_batch *b, const sl_http_resp *resp, sl_error *err)
{
    (void)b;
    stitch *st = self;
    long s = resp->status;
    char msg[512];
    if (s == 0) {
        sl_error_set(err, SL_ERR_IO, "could not reach Stitch at %s (gave up after %d attempts): %s",
                     st->url_shown, resp->attempts, resp->error);
        return SL_SEND_FATAL;
    }
    if (s >= 200 && s < 300) {
        return SL_SEND_OK;
    }
    body_reason(resp, msg, sizeof(msg));
    if (resp->gave_up) {
        sl_error_set(err, SL_ERR_IO, "gave up after %d attempts: HTTP %ld from Stitch at %s: %s",
                     resp->attempts, s, st->url_shown, msg);
        return SL_SEND_FATAL;
    }
    if (s == 401 || s == 403) {
        sl_error_set(err, SL_ERR_CONFIG,
                     "Stitch refused the token (HTTP %ld) at %s: %s (check `token`: an Import "
                     "API access token of this Stitch client)",
                     s, st->url_shown, msg);
        return SL_SEND_FATAL;
    }
    if (s == 404 || s == 405) {
        sl_error_set(err, SL_ERR_CONFIG,
                     "Stitch answered HTTP %ld at %s: check `url` (expected the API base, e.g. "
                     "https://api.stitchdata.com)",
                     s, st->url_shown);
        return SL_SEND_FATAL;
    }
    if (sl_http_classify(s) == SL_HTTP_RETRY) {
        /* the client retries these itself; seen here only if it did not */
        sl_error_set(err, SL_ERR_IO, "HTTP %ld from Stitch at %s: %s", s, st->url_shown, msg);
        return SL_SEND_RETRY;
    }
    if (s == 400 || s == 413 || s == 422) {
        /* refused for some of its records (or its size): halves isolate them */
        sl_error_set(err, SL_ERR_INPUT, "Stitch refused the batch for table '%s' (HTTP %ld): %s",
                     st->table, s, msg);
        return SL_SEND_SPLIT;
    }
    sl_error_set(err, SL_ERR_INPUT, "Stitch answered HTTP %ld at %s for table '%s': %s", s,
                 st->url_shown, st->table, msg);
    return SL_SEND_FAIL;
}

const sl_sink_plugin sl_sink_stitch = {
    .name = "stitch",
    .summary = "Stitch Import API /v2/import/batch: one table, JSON schema, upserts by key",
    .options = stitch_options,
    .validate = stitch_validate,
    .defaults =
        {
            .batch_records = 5000,
            .max_batch_records = STITCH_MAX_MESSAGES,
            /* approximate payload; the JSON envelope of each message (action,
             * sequence, quotes) adds to it, and a batch closes just past it */
            .batch_bytes = (int64_t)2 * 1024 * 1024,
            .concurrency = 4,
            .rate_per_sec = 0,
            .rate_burst = 0,
        },
    .init = stitch_init,
    .columns = stitch_columns,
    .encode = stitch_encode,
    .decode = stitch_decode,
    .destroy = stitch_destroy,
};
