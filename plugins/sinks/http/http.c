/* http: records as JSON to any HTTP API. One request per batch: a JSON array
 * of record objects (format: array), the same array inside an object
 * ({"records": [...]}, format: object), or one object per line (ndjson).
 * Records become objects by the sl_record_to_json rules: fields in order,
 * omitted fields left out; `fields` picks and orders them instead.
 *
 * The instance holds no per-batch state, so several batches may be in
 * flight at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "sluice/plugin.h"
#include "sluice/url.h"
#include "sluice/values.h"

#define HTTP_URL_MAX 2048

enum http_format { FMT_ARRAY, FMT_OBJECT, FMT_NDJSON };

typedef struct http_sink {
    sl_ctx *ctx; /* borrowed */
    char *url;
    char url_shown[HTTP_URL_MAX]; /* without query or credentials, for messages */
    char method[8];
    char **hnames; /* configured headers, plus Authorization when asked for */
    char **hvalues;
    size_t nheaders;
    int has_content_type;
    enum http_format format;
    char *wrap;
    long expect_status; /* 0: any 2xx */
    char **fields;      /* NULL: every field */
    size_t *field_lens;
    size_t nfields;
} http_sink;

static const sl_option http_options[] = {
    {"url", SL_OPT_STRING, NULL, SL_OPT_REQUIRED, NULL, "endpoint URL (http or https)"},
    {"method", SL_OPT_ENUM, "POST", 0, "POST|PUT|PATCH", "request method"},
    {"headers", SL_OPT_MAP, NULL, SL_OPT_SECRET, NULL,
     "extra request headers, name -> value (values are treated as secrets)"},
    {"bearer_token", SL_OPT_STRING, NULL, SL_OPT_SECRET, NULL,
     "sent as Authorization: Bearer <token>"},
    {"basic_user", SL_OPT_STRING, NULL, 0, NULL, "HTTP basic authentication user"},
    {"basic_password", SL_OPT_STRING, NULL, SL_OPT_SECRET, NULL,
     "HTTP basic authentication password"},
    {"format", SL_OPT_ENUM, "array", 0, "array|object|ndjson",
     "body: a JSON array of records, {\"<wrap>\": [...]}, or one JSON object per line"},
    {"wrap", SL_OPT_STRING, "records", 0, NULL, "key of the array when format is object"},
    {"expect_status", SL_OPT_INT, NULL, 0, NULL,
     "the only success status (e.g. 201); any other 2xx fails the batch"},
    {"fields", SL_OPT_LIST, NULL, 0, NULL, "send only these fields, in this order"},
    SL_OPTIONS_END,
};

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        free(v[i]);
    }
    free(v);
}

static void http_destroy(void *self)
{
    http_sink *h = self;
    if (!h) {
        return;
    }
    free(h->url);
    strv_free(h->hnames, h->nheaders);
    strv_free(h->hvalues, h->nheaders);
    free(h->wrap);
    strv_free(h->fields, h->nfields);
    free(h->field_lens);
    free(h);
}

/* RFC 7230 token characters */
static int valid_header_name(const char *s)
{
    if (!s || !s[0]) {
        return 0;
    }
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", c)) {
            return 0;
        }
    }
    return 1;
}

static int add_header(http_sink *h, const char *name, const char *value)
{
    h->hnames[h->nheaders] = strdup(name);
    h->hvalues[h->nheaders] = strdup(value);
    h->nheaders++; /* counted even when half failed, so destroy frees it */
    return h->hnames[h->nheaders - 1] && h->hvalues[h->nheaders - 1] ? 0 : SL_ERR_NOMEM;
}

/* "Basic base64(user:password)"; the result is a secret too. */
static int basic_auth(const char *user, const char *pass, char **out)
{
    int rc = SL_ERR_NOMEM;
    size_t ul = strlen(user), pl = strlen(pass);
    char *plain = malloc(ul + pl + 2);
    char *value = malloc(6 + 4 * ((ul + pl + 1 + 2) / 3) + 1);
    if (!plain || !value) {
        goto done;
    }
    memcpy(plain, user, ul);
    plain[ul] = ':';
    memcpy(plain + ul + 1, pass, pl + 1);
    memcpy(value, "Basic ", 6);
    EVP_EncodeBlock((unsigned char *)value + 6, (const unsigned char *)plain, (int)(ul + pl + 1));
    sl_secret_register(value + 6);
    *out = value;
    value = NULL;
    rc = 0;
done:
    if (plain) {
        memset(plain, 0, ul + pl + 1);
    }
    free(plain);
    free(value);
    return rc;
}

static int http_init(void **self, const sl_opts *opts, sl_ctx *ctx, sl_error *err)
{
    int rc = SL_ERR_NOMEM;
    char *basic = NULL;
    http_sink *h = calloc(1, sizeof(*h));
    if (!h) {
        goto fail;
    }
    h->ctx = ctx;
    const char *url = sl_opt_str(opts, "url");
    sl_url pu;
    int url_ok = url && sl_url_parse(url, &pu, NULL) == 0 &&
                 (strcmp(pu.scheme, "https") == 0 || strcmp(pu.scheme, "http") == 0) && *pu.host;
    sl_url_free(&pu);
    if (!url_ok) {
        char shown[256];
        sl_url_redact(url, shown, sizeof(shown), 0);
        rc = sl_error_set(err, SL_ERR_CONFIG, "%s: url: '%s' is not an http(s) URL",
                          sl_opt_where(opts, "url"), shown);
        goto fail;
    }
    if (strlen(url) >= HTTP_URL_MAX) {
        rc = sl_error_set(err, SL_ERR_CONFIG, "%s: url: longer than %d bytes",
                          sl_opt_where(opts, "url"), HTTP_URL_MAX - 1);
        goto fail;
    }
    h->url = strdup(url);
    if (!h->url) {
        goto fail;
    }
    sl_url_redact(url, h->url_shown, sizeof(h->url_shown), 0);

    const char *method = sl_opt_str(opts, "method");
    if (!method || (strcmp(method, "POST") && strcmp(method, "PUT") && strcmp(method, "PATCH"))) {
        rc = sl_error_set(err, SL_ERR_CONFIG, "%s: method: '%s' is not one of POST|PUT|PATCH",
                          sl_opt_where(opts, "method"), method ? method : "");
        goto fail;
    }
    snprintf(h->method, sizeof(h->method), "%s", method);

    const char *fmt = sl_opt_str(opts, "format");
    if (!fmt || strcmp(fmt, "array") == 0) {
        h->format = FMT_ARRAY;
    } else if (strcmp(fmt, "object") == 0) {
        h->format = FMT_OBJECT;
    } else if (strcmp(fmt, "ndjson") == 0) {
        h->format = FMT_NDJSON;
    } else {
        rc = sl_error_set(err, SL_ERR_CONFIG, "%s: format: '%s' is not one of array|object|ndjson",
                          sl_opt_where(opts, "format"), fmt);
        goto fail;
    }
    const char *wrap = sl_opt_str(opts, "wrap");
    if (h->format == FMT_OBJECT && (!wrap || !wrap[0])) {
        rc = sl_error_set(err, SL_ERR_CONFIG, "%s: wrap: must not be empty with format: object",
                          sl_opt_where(opts, "wrap"));
        goto fail;
    }
    h->wrap = strdup(wrap ? wrap : "records");
    if (!h->wrap) {
        goto fail;
    }

    h->expect_status =
        sl_opt_isset(opts, "expect_status") ? (long)sl_opt_int(opts, "expect_status") : 0;
    if (sl_opt_isset(opts, "expect_status") && (h->expect_status < 200 || h->expect_status > 299)) {
        rc = sl_error_set(err, SL_ERR_CONFIG, "%s: expect_status: %ld is not a 2xx status",
                          sl_opt_where(opts, "expect_status"), h->expect_status);
        goto fail;
    }

    /* Authorization */
    const char *bearer = sl_opt_str(opts, "bearer_token");
    const char *buser = sl_opt_str(opts, "basic_user");
    const char *bpass = sl_opt_str(opts, "basic_password");
    int has_bearer = bearer && bearer[0];
    int has_basic = (buser && buser[0]) || (bpass && bpass[0]);
    if (has_bearer && has_basic) {
        rc = sl_error_set(err, SL_ERR_CONFIG,
                          "%s: bearer_token and basic_user/basic_password are exclusive "
                          "(expected one way to authenticate)",
                          sl_opt_where(opts, "bearer_token"));
        goto fail;
    }
    if (has_basic && !(buser && buser[0])) {
        rc = sl_error_set(err, SL_ERR_CONFIG, "%s: basic_password is set but basic_user is not",
                          sl_opt_where(opts, "basic_password"));
        goto fail;
    }
    size_t nh = sl_opt_count(opts, "headers");
    h->hnames = calloc(nh + 1, sizeof(*h->hnames));
    h->hvalues = calloc(nh + 1, sizeof(*h->hvalues));
    if (!h->hnames || !h->hvalues) {
        goto fail;
    }
    for (size_t i = 0; i < nh; i++) {
        const char *name = sl_opt_key(opts, "headers", i);
        const char *value = sl_opt_item(opts, "headers", i);
        if (!valid_header_name(name)) {
            rc = sl_error_set(err, SL_ERR_CONFIG,
                              "%s: headers: '%s' is not a valid header name (expected letters, "
                              "digits and -)",
                              sl_opt_where(opts, "headers"), name ? name : "");
            goto fail;
        }
        if (!value || strpbrk(value, "\r\n")) {
            rc = sl_error_set(err, SL_ERR_CONFIG,
                              "%s: headers: '%s': value must be one line of text",
                              sl_opt_where(opts, "headers"), name);
            goto fail;
        }
        if ((has_bearer || has_basic) && strcasecmp(name, "Authorization") == 0) {
            rc = sl_error_set(err, SL_ERR_CONFIG,
                              "%s: headers: Authorization is also set by bearer_token/basic_user "
                              "(expected one of them)",
                              sl_opt_where(opts, "headers"));
            goto fail;
        }
        if (strcasecmp(name, "Content-Type") == 0) {
            h->has_content_type = 1;
        }
        sl_secret_register(value);
        if (add_header(h, name, value)) {
            goto fail;
        }
    }
    if (has_bearer) {
        sl_secret_register(bearer);
        size_t n = strlen(bearer) + 8;
        char *v = malloc(n);
        if (!v) {
            goto fail;
        }
        snprintf(v, n, "Bearer %s", bearer);
        rc = add_header(h, "Authorization", v);
        free(v);
        if (rc) {
            goto fail;
        }
        rc = SL_ERR_NOMEM;
    } else if (has_basic) {
        sl_secret_register(bpass);
        if (basic_auth(buser, bpass ? bpass : "", &basic) ||
            add_header(h, "Authorization", basic)) {
            goto fail;
        }
    }

    size_t nf = sl_opt_count(opts, "fields");
    if (nf) {
        h->fields = calloc(nf, sizeof(*h->fields));
        h->field_lens = calloc(nf, sizeof(*h->field_lens));
        if (!h->fields || !h->field_lens) {
            goto fail;
        }
        for (size_t i = 0; i < nf; i++) {
            const char *f = sl_opt_item(opts, "fields", i);
            h->fields[i] = strdup(f ? f : "");
            h->nfields = i + 1;
            if (!h->fields[i]) {
                goto fail;
            }
            h->field_lens[i] = strlen(h->fields[i]);
        }
    }
    free(basic);
    *self = h;
    return 0;
fail:
    free(basic);
    http_destroy(h);
    if (rc == SL_ERR_NOMEM) {
        sl_error_set(err, rc, "http: out of memory");
    }
    return rc;
}

/* A `fields` entry the input does not have is probably a typo: warn. */
static int http_columns(void *self, const char *const *cols, size_t n, sl_error *err)
{
    http_sink *h = self;
    for (size_t i = 0; i < h->nfields; i++) {
        int found = 0;
        for (size_t k = 0; k < n && !found; k++) {
            found = strcmp(cols[k], h->fields[i]) == 0;
        }
        if (!found) {
            sl_plog(h->ctx, SL_LOG_WARN, "fields: '%s' is not among the input columns",
                    h->fields[i]);
        }
    }
    return 0;
}

static void write_value(sl_jw *w, const sl_record *rec, const sl_field *f)
{
    sl_jw_key(w, f->name, f->name_len);
    sl_jw_field(w, rec, f);
}

static void write_record(const http_sink *h, sl_jw *w, const sl_record *rec)
{
    sl_jw_obj_open(w);
    if (h->nfields) {
        for (size_t i = 0; i < h->nfields; i++) {
            for (uint32_t k = 0; k < rec->nfields; k++) {
                const sl_field *f = &rec->fields[k];
                if (f->name_len == h->field_lens[i] &&
                    memcmp(f->name, h->fields[i], f->name_len) == 0) {
                    if (!(f->flags & SL_FIELD_OMIT)) {
                        write_value(w, rec, f);
                    }
                    break;
                }
            }
        }
    } else {
        for (uint32_t k = 0; k < rec->nfields; k++) {
            const sl_field *f = &rec->fields[k];
            if (!(f->flags & SL_FIELD_OMIT)) {
                write_value(w, rec, f);
            }
        }
    }
    sl_jw_obj_close(w);
}

static int http_encode(void *self, sl_batch *b, sl_http_req *req, sl_error *err)
{
    http_sink *h = self;
    sl_http_req_reset(req);
    size_t nsend = 0;
    for (size_t r = 0; r < b->n; r++) {
        nsend += b->recs[r].status == SL_REC_OK;
    }
    if (nsend == 0) {
        return 0; /* empty body: acknowledged without a request */
    }
    sl_jw w;
    sl_jw_init(&w, &req->body);
    int werr = 0;
    if (h->format == FMT_OBJECT) {
        sl_jw_obj_open(&w);
        sl_jw_keyz(&w, h->wrap);
    }
    if (h->format != FMT_NDJSON) {
        sl_jw_arr_open(&w);
    }
    for (size_t r = 0; r < b->n && !werr; r++) {
        const sl_record *rec = &b->recs[r];
        if (rec->status != SL_REC_OK) {
            continue;
        }
        if (h->format == FMT_NDJSON) {
            sl_jw_init(&w, &req->body); /* one top-level value per line */
            write_record(h, &w, rec);
            werr = w.err ? w.err : sl_buf_putc(&req->body, '\n');
        } else {
            write_record(h, &w, rec);
            werr = w.err;
        }
    }
    if (h->format != FMT_NDJSON) {
        sl_jw_arr_close(&w);
    }
    if (h->format == FMT_OBJECT) {
        sl_jw_obj_close(&w);
    }
    werr = werr ? werr : w.err;
    if (werr) {
        return sl_error_set(err, werr,
                            "http: request body of batch %llu (lines %llu-%llu) exceeds %zu bytes",
                            (unsigned long long)b->seq, (unsigned long long)b->start_line,
                            (unsigned long long)b->end_line, req->body.max);
    }
    memcpy(req->method, h->method, sizeof(req->method));
    int rc = sl_buf_puts(&req->url, h->url);
    if (!rc && !h->has_content_type) {
        rc = sl_http_req_header(req, "Content-Type", "%s",
                                h->format == FMT_NDJSON ? "application/x-ndjson"
                                                        : "application/json");
    }
    for (size_t i = 0; !rc && i < h->nheaders; i++) {
        rc = sl_http_req_header(req, h->hnames[i], "%s", h->hvalues[i]);
    }
    if (rc) {
        return sl_error_set(err, rc, "http: out of memory building the request");
    }
    return 0;
}

static sl_verdict http_decode(void *self, sl_batch *b, const sl_http_resp *resp, sl_error *err)
{
    http_sink *h = self;
    long st = resp->status;
    char body[256];
    sl_excerpt(body, sizeof(body), resp->body, resp->body_len, 200);
    if (st == 0) {
        sl_error_set(err, SL_ERR_IO, "could not reach %s (gave up after %d attempts): %s",
                     h->url_shown, resp->attempts, resp->error);
        return SL_SEND_FATAL;
    }
    if (resp->gave_up) {
        sl_error_set(err, SL_ERR_IO, "gave up after %d attempts: HTTP %ld from %s: %s",
                     resp->attempts, st, h->url_shown, body);
        return SL_SEND_FATAL;
    }
    if (st >= 200 && st < 300) {
        if (h->expect_status && st != h->expect_status) {
            sl_error_set(err, SL_ERR_INPUT, "expected HTTP %ld from %s, got %ld: %s",
                         h->expect_status, h->url_shown, st, body);
            return SL_SEND_FAIL;
        }
        return SL_SEND_OK;
    }
    if (st == 401 || st == 403) {
        sl_error_set(err, SL_ERR_CONFIG, "%s rejected the credentials (HTTP %ld): %s", h->url_shown,
                     st, body);
        return SL_SEND_FATAL;
    }
    if (sl_http_classify(st) == SL_HTTP_RETRY) {
        sl_error_set(err, SL_ERR_IO, "HTTP %ld from %s", st, h->url_shown);
        return SL_SEND_RETRY;
    }
    sl_error_set(err, SL_ERR_INPUT, "HTTP %ld from %s: %s", st, h->url_shown, body);
    return SL_SEND_FAIL;
}

const sl_sink_plugin sl_sink_http = {
    .name = "http",
    .summary = "any JSON HTTP API: a batch of records per request",
    .options = http_options,
    .defaults =
        {
            .batch_records = 100,
            .max_batch_records = 0,
            .batch_bytes = (int64_t)4 * 1024 * 1024,
            .concurrency = 4,
            .rate_per_sec = 0,
            .rate_burst = 0,
        },
    .init = http_init,
    .columns = http_columns,
    .encode = http_encode,
    .decode = http_decode,
    .destroy = http_destroy,
};
