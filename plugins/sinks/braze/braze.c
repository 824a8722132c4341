/* braze: user attributes to Braze `POST /users/track`, 75 per request.
 *
 * Body: {"attributes":[{"external_id":"...", "<attr>": value, ...}, ...]}.
 * The key is always sent as a JSON string (the original importer sent "123"
 * as the number 123). Omitted fields (empty cells) are not sent; a record
 * with nothing but its key is skipped. Braze answers 201 with an `errors`
 * array whose `index` counts the objects of the request: decode maps it back
 * to the records that were actually sent (records rejected upstream, skipped
 * or failed in encode are not in the request).
 *
 * The instance holds no per-batch state, so several batches may be in
 * flight at once. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sluice/plugin.h"
#include "sluice/url.h"
#include "sluice/values.h"

#define BRAZE_PATH "/users/track"
#define BRAZE_URL_MAX 2048

typedef struct braze {
    sl_ctx *ctx;                   /* borrowed */
    char *url;                     /* base + /users/track */
    char url_shown[BRAZE_URL_MAX]; /* without query or credentials, for messages */
    char *api_key;
    char *key;
    size_t key_len;
    int key_first;
    int bulk;
    int skip_empty;
    /* 2xx answers whose body could not be read, and the users they carried */
    atomic_ullong unread_answers, unread_users;
} braze;

static const sl_option braze_options[] = {
    {"url", SL_OPT_STRING, NULL, SL_OPT_REQUIRED, NULL,
     "REST endpoint base, e.g. https://rest.iad-01.braze.com (/users/track is appended)"},
    {"api_key", SL_OPT_STRING, NULL, SL_OPT_REQUIRED | SL_OPT_SECRET, NULL,
     "REST API key with the users.track permission"},
    {"key", SL_OPT_STRING, "external_id", 0, NULL, "column holding the user id, sent as a string"},
    {"key_first", SL_OPT_BOOL, "true", 0, NULL, "the key must be the first input column"},
    {"bulk", SL_OPT_BOOL, "true", 0, NULL, "send X-Braze-Bulk: true (bulk imports)"},
    {"skip_empty", SL_OPT_BOOL, "true", 0, NULL,
     "do not send a record that has no attribute besides the key"},
    SL_OPTIONS_END,
};

static void braze_destroy(void *self)
{
    braze *bz = self;
    if (!bz) {
        return;
    }
    free(bz->url);
    free(bz->api_key);
    free(bz->key);
    free(bz);
}

static int braze_init(void **self, const sl_opts *opts, sl_ctx *ctx, sl_error *err)
{
    int rc = SL_ERR_NOMEM;
    braze *bz = calloc(1, sizeof(*bz));
    if (!bz) {
        goto fail;
    }
    bz->ctx = ctx;
    const char *url = sl_opt_str(opts, "url");
    const char *key = sl_opt_str(opts, "api_key");
    const char *col = sl_opt_str(opts, "key");
    sl_url pu;
    int url_ok = url && sl_url_parse(url, &pu, NULL) == 0 &&
                 (strcmp(pu.scheme, "https") == 0 || strcmp(pu.scheme, "http") == 0) && *pu.host;
    sl_url_free(&pu);
    if (!url_ok) {
        char shown[256];
        sl_url_redact(url, shown, sizeof(shown), 0);
        rc = sl_error_set(err, SL_ERR_CONFIG,
                          "%s: url: '%s' is not an http(s) URL (expected the REST endpoint, "
                          "e.g. https://rest.iad-01.braze.com)",
                          sl_opt_where(opts, "url"), shown);
        goto fail;
    }
    if (strchr(url, '?') || strchr(url, '#')) {
        rc = sl_error_set(err, SL_ERR_CONFIG,
                          "%s: url: expected the REST endpoint base without a query, "
                          "e.g. https://rest.iad-01.braze.com",
                          sl_opt_where(opts, "url"));
        goto fail;
    }
    if (!key || !key[0]) {
        rc = sl_error_set(err, SL_ERR_CONFIG, "%s: api_key: must not be empty",
                          sl_opt_where(opts, "api_key"));
        goto fail;
    }
    if (!col || !col[0]) {
        rc = sl_error_set(err, SL_ERR_CONFIG, "%s: key: must not be empty",
                          sl_opt_where(opts, "key"));
        goto fail;
    }
    /* Tolerate a trailing slash and a URL that already names the endpoint. */
    size_t ul = strlen(url);
    while (ul > 0 && url[ul - 1] == '/') {
        ul--;
    }
    size_t pl = strlen(BRAZE_PATH);
    if (ul >= pl && memcmp(url + ul - pl, BRAZE_PATH, pl) == 0) {
        ul -= pl;
    }
    if (ul + pl + 1 > BRAZE_URL_MAX) {
        rc = sl_error_set(err, SL_ERR_CONFIG, "%s: url: longer than %d bytes",
                          sl_opt_where(opts, "url"), BRAZE_URL_MAX);
        goto fail;
    }
    bz->url = malloc(ul + pl + 1);
    if (!bz->url) {
        goto fail;
    }
    memcpy(bz->url, url, ul);
    memcpy(bz->url + ul, BRAZE_PATH, pl + 1);
    sl_url_redact(bz->url, bz->url_shown, sizeof(bz->url_shown), 0);
    sl_secret_register(key);
    bz->api_key = strdup(key);
    bz->key = strdup(col);
    if (!bz->api_key || !bz->key) {
        goto fail;
    }
    bz->key_len = strlen(col);
    bz->key_first = sl_opt_bool(opts, "key_first");
    bz->bulk = sl_opt_bool(opts, "bulk");
    bz->skip_empty = sl_opt_bool(opts, "skip_empty");
    *self = bz;
    return 0;
fail:
    braze_destroy(bz);
    if (rc == SL_ERR_NOMEM) {
        sl_error_set(err, rc, "braze: out of memory");
    }
    return rc;
}

static int braze_columns(void *self, const char *const *cols, size_t n, sl_error *err)
{
    braze *bz = self;
    size_t at = n;
    for (size_t i = 0; i < n && at == n; i++) {
        if (strcmp(cols[i], bz->key) == 0) {
            at = i;
        }
    }
    if (at == n) {
        return sl_error_set(err, SL_ERR_INPUT, "input has no '%s' column", bz->key);
    }
    if (bz->key_first && at != 0) {
        return sl_error_set(err, SL_ERR_INPUT,
                            "input header: first column must be '%s' (found '%s')", bz->key,
                            cols[0]);
    }
    return 0;
}

static int is_key(const braze *bz, const sl_field *f)
{
    return f->name_len == bz->key_len && memcmp(f->name, bz->key, bz->key_len) == 0;
}

/* Write the key as a JSON string whatever a step made of it (key_check()
 * passed first). */
static void write_key(sl_jw *w, const sl_record *rec, const sl_field *f)
{
    char tmp[48] = "";
    size_t n = 0;
    switch ((sl_type)f->type) {
    case SL_T_STRING:
    case SL_T_JSON:
        sl_jw_str(w, sl_field_str(rec, f), f->v.s.len);
        return;
    case SL_T_INT:
        n = (size_t)snprintf(tmp, sizeof(tmp), "%lld", (long long)f->v.i);
        break;
    case SL_T_FLOAT:
        if (f->flags & SL_FIELD_NUMTEXT) {
            /* the decimal as written in the cell ("1.50", not "1.5") */
            sl_jw_str(w, rec->data.data + f->toff, f->tlen);
            return;
        }
        n = sl_format_double(tmp, sizeof(tmp), f->v.f);
        break;
    case SL_T_BOOL:
        n = (size_t)snprintf(tmp, sizeof(tmp), "%s", f->v.b ? "true" : "false");
        break;
    case SL_T_NULL:
        break;
    }
    sl_jw_str(w, tmp, n);
}

/* Whether the key can be sent as the exact text of its cell, decided before
 * anything of the record is written. 0 when it can; else -1 with the reason
 * in why. Every refusal is one where sending something would be worse than
 * not sending: a repaired key (U+FFFD for bad bytes, the text "null") is a
 * different user, and distinct keys repaired the same way become one user. */
static int key_check(const braze *bz, const sl_record *rec, const sl_field *f, char *why,
                     size_t cap)
{
    if (!f || (f->flags & SL_FIELD_OMIT)) {
        snprintf(why, cap, "empty %s", bz->key);
        return -1;
    }
    if (f->type == SL_T_NULL) {
        snprintf(why, cap, "%s is null: not sent (Braze would merge every such row into one user)",
                 bz->key);
        return -1;
    }
    if (f->type != SL_T_STRING && f->type != SL_T_JSON) {
        return 0;
    }
    const char *s = sl_field_str(rec, f);
    size_t len = f->v.s.len;
    size_t at = 0;
    if (sl_is_blank(s, len)) {
        snprintf(why, cap, "empty %s", bz->key);
        return -1;
    }
    if (sl_is_null_literal(s, len, "null")) {
        snprintf(why, cap,
                 "%s is the text '%.*s': not sent (it means no id; Braze would merge every such "
                 "row into one user)",
                 bz->key, (int)(len < 16 ? len : 16), s);
        return -1;
    }
    if (!sl_utf8_valid(s, len, &at)) {
        snprintf(why, cap,
                 "%s is not valid UTF-8 (byte 0x%02X at offset %zu): not sent, since repairing "
                 "it could merge different users",
                 bz->key, (unsigned)(unsigned char)s[at], at);
        return -1;
    }
    return 0;
}

/* Offset of a NUL character in a field's value, or -1. Braze refuses a
 * request holding \u0000 as a whole, so such a record must not join one. A
 * JSON value (an array from infer) holds it as the escape \u0000. */
static long nul_at(const sl_record *rec, const sl_field *f)
{
    if (f->type != SL_T_STRING && f->type != SL_T_JSON) {
        return -1;
    }
    const char *s = sl_field_str(rec, f);
    size_t len = f->v.s.len;
    if (f->type == SL_T_STRING) {
        const char *p = memchr(s, '\0', len);
        return p ? (long)(p - s) : -1;
    }
    for (size_t i = 0; i + 1 < len; i++) {
        if (s[i] == '\\') {
            if (s[i + 1] == 'u' && i + 6 <= len && memcmp(s + i + 2, "0000", 4) == 0) {
                return (long)i;
            }
            i++; /* skip the escaped character */
        }
    }
    return -1;
}

static int braze_encode(void *self, sl_batch *b, sl_http_req *req, sl_error *err)
{
    braze *bz = self;
    sl_http_req_reset(req);
    sl_jw w;
    sl_jw_init(&w, &req->body);
    size_t nsent = 0;
    for (size_t r = 0; r < b->n; r++) {
        sl_record *rec = &b->recs[r];
        if (rec->status != SL_REC_OK) {
            continue;
        }
        const sl_field *key = NULL;
        const sl_field *nul = NULL;
        long nul_off = -1;
        size_t nattr = 0;
        for (uint32_t i = 0; i < rec->nfields; i++) {
            const sl_field *f = &rec->fields[i];
            if (is_key(bz, f)) {
                key = key ? key : f;
            } else if (!(f->flags & SL_FIELD_OMIT)) {
                nattr++;
            } else {
                continue;
            }
            if (!nul && (nul_off = nul_at(rec, f)) >= 0) {
                nul = f;
            }
        }
        char why[256];
        if (key_check(bz, rec, key, why, sizeof(why)) != 0) {
            sl_record_fail(rec, "%s", why);
            continue;
        }
        if (nul) {
            sl_record_fail(rec,
                           "column '%.*s' holds a NUL character at offset %ld: not sent (Braze "
                           "refuses a request holding \\u0000, so it would fail its whole batch)",
                           (int)nul->name_len, nul->name, nul_off);
            continue;
        }
        if (nattr == 0 && bz->skip_empty) {
            rec->status = SL_REC_SKIP;
            continue;
        }
        if (nsent == 0) {
            sl_jw_obj_open(&w);
            sl_jw_keyz(&w, "attributes");
            sl_jw_arr_open(&w);
        }
        sl_jw_obj_open(&w);
        sl_jw_key(&w, bz->key, bz->key_len);
        write_key(&w, rec, key);
        for (uint32_t i = 0; i < rec->nfields; i++) {
            const sl_field *f = &rec->fields[i];
            if ((f->flags & SL_FIELD_OMIT) || is_key(bz, f)) {
                continue;
            }
            sl_jw_key(&w, f->name, f->name_len);
            sl_jw_field(&w, rec, f);
        }
        sl_jw_obj_close(&w);
        nsent++;
    }
    if (nsent == 0) {
        /* nothing to send: the engine acknowledges the batch without a request */
        sl_buf_reset(&req->body);
        return 0;
    }
    sl_jw_arr_close(&w);
    sl_jw_obj_close(&w);
    if (w.err) {
        return sl_error_set(err, w.err,
                            "braze: request body of batch %llu (lines %llu-%llu) exceeds %zu "
                            "bytes",
                            (unsigned long long)b->seq, (unsigned long long)b->start_line,
                            (unsigned long long)b->end_line, req->body.max);
    }
    memcpy(req->method, "POST", 5);
    int rc = sl_buf_puts(&req->url, bz->url);
    if (!rc) {
        rc = sl_http_req_header(req, "Authorization", "Bearer %s", bz->api_key);
    }
    if (!rc) {
        rc = sl_http_req_header(req, "Content-Type", "application/json");
    }
    if (!rc && bz->bulk) {
        rc = sl_http_req_header(req, "X-Braze-Bulk", "true");
    }
    if (rc) {
        return sl_error_set(err, rc, "braze: out of memory building the request");
    }
    return 0;
}

/* Log unread 2xx answers one by one up to this many, then only count them. */
#define UNREAD_LOG_MAX 10

/* A 2xx whose body is not the JSON object Braze sends (an HTML page from a
 * proxy, a body cut at the client's response cap): Braze's 201 means the
 * request was accepted and its users landed, except those its `errors` list
 * names, and that list is what was lost. Re-sending cannot recover it (a body
 * over the cap is cut the same way every time) and Braze bills every data
 * point again, so the users count as delivered; the loss is logged and the
 * run is reported partial, so nobody takes it for a clean import. */
static void unread_answer(braze *bz, sl_batch *b, const sl_http_resp *resp, const char *what)
{
    size_t nsent = 0;
    uint64_t first = 0, last = 0;
    for (size_t r = 0; r < b->n; r++) {
        if (b->recs[r].status == SL_REC_OK) {
            first = nsent++ ? first : b->recs[r].line;
            last = b->recs[r].line;
        }
    }
    unsigned long long k = atomic_fetch_add(&bz->unread_answers, 1) + 1;
    unsigned long long users = atomic_fetch_add(&bz->unread_users, nsent) + nsent;
    if (k <= UNREAD_LOG_MAX) {
        char shown[128];
        sl_excerpt(shown, sizeof(shown), resp->body, resp->body_len, 100);
        sl_plog(bz->ctx, SL_LOG_WARN,
                "Braze answered HTTP %ld at %s for lines %llu-%llu but %s (%zu bytes: '%s'): "
                "its %zu users count as delivered; per-record errors, if any, are unknown%s",
                resp->status, bz->url_shown, (unsigned long long)first, (unsigned long long)last,
                what, resp->body_len, shown, nsent,
                k == UNREAD_LOG_MAX ? " (further such answers are only counted)" : "");
    }
    sl_ctx_set_partial(bz->ctx,
                       "Braze accepted %llu request%s (%llu users) with an answer that could not "
                       "be read: their per-record errors, if any, are unknown",
                       k, k == 1 ? "" : "s", users);
}

/* Map the `errors` of a 2xx answer to the records of the request. */
static void mark_errors(braze *bz, sl_batch *b, const sl_http_resp *resp)
{
    json_error_t jerr;
    json_t *root = json_loadb(resp->body, resp->body_len, 0, &jerr);
    json_t *errors = root ? json_object_get(root, "errors") : NULL;
    sl_record **sent = NULL;
    if (!json_is_object(root)) {
        char what[200];
        if (root) {
            snprintf(what, sizeof(what), "its body is not a JSON object");
        } else if (resp->body_len == 0) {
            snprintf(what, sizeof(what), "its body is empty");
        } else {
            snprintf(what, sizeof(what), "its body is not JSON (%s at byte %d)", jerr.text,
                     jerr.position);
        }
        unread_answer(bz, b, resp, what);
        goto done;
    }
    if (errors && !json_is_array(errors)) {
        unread_answer(bz, b, resp, "its `errors` is not an array");
        goto done;
    }
    if (json_array_size(errors) == 0) {
        goto done;
    }
    /* The request held, in order, the records still OK after encode. */
    sent = malloc((b->n ? b->n : 1) * sizeof(*sent));
    if (!sent) {
        sl_plog(bz->ctx, SL_LOG_ERROR, "out of memory mapping %zu Braze errors",
                json_array_size(errors));
        goto done;
    }
    size_t nsent = 0;
    for (size_t r = 0; r < b->n; r++) {
        if (b->recs[r].status == SL_REC_OK) {
            sent[nsent++] = &b->recs[r];
        }
    }
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e)
    {
        json_t *idx = json_object_get(e, "index");
        const char *type = json_string_value(json_object_get(e, "type"));
        char shown[256];
        sl_excerpt(shown, sizeof(shown), type ? type : "unknown error",
                   strlen(type ? type : "unknown error"), 200);
        if (!json_is_integer(idx) || json_integer_value(idx) < 0 ||
            (size_t)json_integer_value(idx) >= nsent) {
            sl_plog(bz->ctx, SL_LOG_WARN,
                    "Braze reported an error for no record of the request (index %s of %zu): %s",
                    json_is_integer(idx) ? "out of range" : "missing", nsent, shown);
            continue;
        }
        sl_record_fail(sent[json_integer_value(idx)], "Braze rejected the attributes: %s", shown);
    }
done:
    free(sent);
    json_decref(root);
}

/* The `message` of a Braze error body, else the start of the body. */
static void body_message(const sl_http_resp *resp, char *dst, size_t cap)
{
    json_t *root = json_loadb(resp->body, resp->body_len, 0, NULL);
    const char *msg = json_string_value(json_object_get(root, "message"));
    if (msg && msg[0]) {
        sl_excerpt(dst, cap, msg, strlen(msg), 200);
    } else if (resp->body_len) {
        sl_excerpt(dst, cap, resp->body, resp->body_len, 200);
    } else {
        snprintf(dst, cap, "(empty body)");
    }
    json_decref(root);
}

static sl_verdict braze_decode(void *self, sl_batch *b, const sl_http_resp *resp, sl_error *err)
{
    braze *bz = self;
    long st = resp->status;
    char msg[256];
    if (st == 0) {
        sl_error_set(err, SL_ERR_IO, "could not reach Braze at %s (gave up after %d attempts): %s",
                     bz->url_shown, resp->attempts, resp->error);
        return SL_SEND_FATAL;
    }
    if (resp->gave_up) {
        body_message(resp, msg, sizeof(msg));
        sl_error_set(err, SL_ERR_IO, "gave up after %d attempts: HTTP %ld from Braze at %s: %s",
                     resp->attempts, st, bz->url_shown, msg);
        return SL_SEND_FATAL;
    }
    if (st >= 200 && st < 300) {
        mark_errors(bz, b, resp);
        return SL_SEND_OK;
    }
    if (st == 401 || st == 403) {
        sl_error_set(err, SL_ERR_CONFIG, "Braze rejected the API key (HTTP %ld) at %s", st,
                     bz->url_shown);
        return SL_SEND_FATAL;
    }
    if (st == 404 || st == 405) {
        sl_error_set(err, SL_ERR_CONFIG,
                     "Braze answered HTTP %ld at %s: check `url` (expected the REST endpoint "
                     "base, e.g. https://rest.iad-01.braze.com)",
                     st, bz->url_shown);
        return SL_SEND_FATAL;
    }
    if (sl_http_classify(st) == SL_HTTP_RETRY) {
        /* the client retries these itself; seen here only if it did not */
        sl_error_set(err, SL_ERR_IO, "HTTP %ld from Braze at %s", st, bz->url_shown);
        return SL_SEND_RETRY;
    }
    body_message(resp, msg, sizeof(msg));
    if (st == 400) {
        sl_error_set(err, SL_ERR_INPUT, "Braze answered 400: %s", msg);
    } else {
        sl_error_set(err, SL_ERR_INPUT, "Braze answered HTTP %ld at %s: %s", st, bz->url_shown,
                     msg);
    }
    return SL_SEND_FAIL;
}

static void braze_summarize(void *self, sl_jw *w, uint64_t sent, uint64_t failed, int success)
{
    /* the original importer's completion notice field */
    sl_jw_keyz(w, "usersProcessed");
    sl_jw_int(w, (int64_t)sent);
}

const sl_sink_plugin sl_sink_braze = {
    .name = "braze",
    .summary = "Braze /users/track: user attributes, 75 per request, external_id as string",
    .options = braze_options,
    .defaults =
        {
            .batch_records = 75,
            .max_batch_records = 75,
            .batch_bytes = (int64_t)4 * 1024 * 1024,
            .concurrency = 8,
            .rate_per_sec = 1000.0,
            .rate_burst = 3000.0,
        },
    .init = braze_init,
    .columns = braze_columns,
    .encode = braze_encode,
    .decode = braze_decode,
    .summarize = braze_summarize,
    .destroy = braze_destroy,
};
