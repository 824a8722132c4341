/* http: records as JSON to any HTTP API. One request per batch: a JSON array
 * of record objects (format: array), the same array inside an object
 * ({"records": [...]}, format: object), or one object per line (ndjson);
 * or one request per record whose body is that record's object (format:
 * record), where the url and header values may name the record's fields as
 * {field}. Records become objects by the sl_record_to_json rules: fields in
 * order, omitted fields left out; `fields` picks and orders them instead.
 *
 * The instance holds no per-batch state, so several batches may be in
 * flight at once. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "sluice/plugin.h"
#include "sluice/url.h"
#include "sluice/values.h"

#define HTTP_URL_MAX 2048
#define HTTP_EXPECT_MAX 16
/* A header value after {field} substitution. */
#define HTTP_HEADER_MAX 8192

enum http_format { FMT_ARRAY, FMT_OBJECT, FMT_NDJSON, FMT_RECORD };

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
    long expect[HTTP_EXPECT_MAX]; /* the success statuses; none: any 2xx */
    size_t nexpect;
    int templated; /* url or a header value names record fields (format: record) */
    char **fields; /* NULL: every field */
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
    {"format", SL_OPT_ENUM, "array", 0, "array|object|ndjson|record",
     "body: a JSON array of records, {\"<wrap>\": [...]}, one JSON object per line, or one "
     "record's object per request (url and headers may then use {field})"},
    {"wrap", SL_OPT_STRING, "records", 0, NULL, "key of the array when format is object"},
    {"expect_status", SL_OPT_LIST, NULL, 0, NULL,
     "the success statuses (e.g. 201 or [200, 201]); any other 2xx fails the batch"},
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

/* ------------------------------------------------------------ {field} templates */

static int ref_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int ref_char(char c)
{
    return ref_start(c) || (c >= '0' && c <= '9') || c == '.' || c == '-';
}

/* The next {field} reference in s: returns its '{' (name at +1, *nl bytes)
 * or NULL. A '{' that does not open a reference is literal text. */
static const char *next_ref(const char *s, size_t *nl)
{
    for (const char *p = strchr(s, '{'); p; p = strchr(p + 1, '{')) {
        size_t n = 0;
        if (!ref_start(p[1])) {
            continue;
        }
        while (ref_char(p[1 + n])) {
            n++;
        }
        if (p[1 + n] == '}') {
            *nl = n;
            return p;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------ options */

static long parse_status(const char *s)
{
    char *end = NULL;
    long v = s && *s ? strtol(s, &end, 10) : -1;
    return end && *end == '\0' ? v : -1;
}

/* Every check of option values, shared by the validate hook (`sluice check`)
 * and init. Returns the number of problems reported. */
static int http_check(const sl_opts *opts, sl_report_fn report, void *ud)
{
    int bad = 0;
    char shown[256];
    const char *url = sl_opt_str(opts, "url");
    const char *fmt = sl_opt_str(opts, "format");
    int record = fmt && strcmp(fmt, "record") == 0;
    sl_url pu = {0};
    int url_ok = url && sl_url_parse(url, &pu, NULL) == 0 &&
                 (strcmp(pu.scheme, "https") == 0 || strcmp(pu.scheme, "http") == 0) && *pu.host;
    sl_url_free(&pu);
    size_t hl = 0;
    const char *sep = url ? strstr(url, "://") : NULL;
    const char *href = sep ? next_ref(sep + 3, &hl) : NULL;
    const char *hend = sep ? strchr(sep + 3, '/') : NULL;
    if (!url_ok && href && (!hend || href < hend)) {
        /* record data never picks the host a request goes to */
        report(ud, "url",
               "{%.*s} is in the scheme or host (expected {field} only in the path or query)",
               (int)hl, href + 1);
        bad++;
    } else if (!url_ok) {
        sl_url_redact(url ? url : "", shown, sizeof(shown), 0);
        report(ud, "url", "'%s' is not an http(s) URL", shown);
        bad++;
    } else if (strlen(url) >= HTTP_URL_MAX) {
        report(ud, "url", "longer than %d bytes", HTTP_URL_MAX - 1);
        bad++;
    } else {
        size_t nl;
        const char *ref = next_ref(url, &nl);
        const char *path = strchr(strstr(url, "://") + 3, '/');
        if (ref && !record) {
            report(ud, "url",
                   "{%.*s} takes a value from the record, which needs format: record (one "
                   "record per request)",
                   (int)nl, ref + 1);
            bad++;
        } else if (ref && (!path || ref < path)) {
            /* record data never picks the host a request goes to */
            report(ud, "url",
                   "{%.*s} is in the scheme or host (expected {field} only in the path or query)",
                   (int)nl, ref + 1);
            bad++;
        }
    }
    const char *wrap = sl_opt_str(opts, "wrap");
    if (fmt && strcmp(fmt, "object") == 0 && (!wrap || !wrap[0])) {
        report(ud, "wrap", "must not be empty with format: object");
        bad++;
    }
    size_t ne = sl_opt_count(opts, "expect_status");
    if (ne > HTTP_EXPECT_MAX) {
        report(ud, "expect_status", "%zu statuses (expected at most %d)", ne, HTTP_EXPECT_MAX);
        bad++;
    }
    for (size_t i = 0; i < ne; i++) {
        const char *item = sl_opt_item(opts, "expect_status", i);
        long st = parse_status(item);
        if (st < 200 || st > 299) {
            report(ud, "expect_status",
                   "'%s' is not a 2xx status (expected e.g. 201 or [200, 201])", item ? item : "");
            bad++;
        }
    }
    const char *bearer = sl_opt_str(opts, "bearer_token");
    const char *buser = sl_opt_str(opts, "basic_user");
    const char *bpass = sl_opt_str(opts, "basic_password");
    int has_bearer = bearer && bearer[0];
    int has_basic = (buser && buser[0]) || (bpass && bpass[0]);
    if (has_bearer && has_basic) {
        report(ud, "bearer_token",
               "bearer_token and basic_user/basic_password are exclusive (expected one way to "
               "authenticate)");
        bad++;
    }
    if (has_basic && !(buser && buser[0])) {
        report(ud, "basic_password", "basic_password is set but basic_user is not");
        bad++;
    }
    size_t nh = sl_opt_count(opts, "headers");
    for (size_t i = 0; i < nh; i++) {
        const char *name = sl_opt_key(opts, "headers", i);
        const char *value = sl_opt_item(opts, "headers", i);
        size_t nl;
        const char *ref = value ? next_ref(value, &nl) : NULL;
        if (!valid_header_name(name)) {
            report(ud, "headers",
                   "'%s' is not a valid header name (expected letters, digits and -)",
                   name ? name : "");
            bad++;
        } else if (!value || strpbrk(value, "\r\n")) {
            report(ud, "headers", "'%s': value must be one line of text", name);
            bad++;
        } else if ((has_bearer || has_basic) && strcasecmp(name, "Authorization") == 0) {
            report(ud, "headers",
                   "Authorization is also set by bearer_token/basic_user (expected one of them)");
            bad++;
        } else if (ref && !record) {
            report(ud, "headers",
                   "'%s': {%.*s} takes a value from the record, which needs format: record (one "
                   "record per request)",
                   name, (int)nl, ref + 1);
            bad++;
        }
    }
    return bad;
}

static int http_validate(const sl_opts *opts, sl_report_fn report, void *ud)
{
    return http_check(opts, report, ud);
}

static int http_init(void **self, const sl_opts *opts, sl_ctx *ctx, sl_error *err)
{
    int rc = SL_ERR_NOMEM;
    char *basic = NULL;
    http_sink *h = NULL;
    if (sl_opts_validate(opts, http_check, err) > 0) {
        return SL_ERR_CONFIG;
    }
    h = calloc(1, sizeof(*h));
    if (!h) {
        goto fail;
    }
    h->ctx = ctx;
    const char *url = sl_opt_str(opts, "url");
    h->url = strdup(url);
    if (!h->url) {
        goto fail;
    }
    size_t nl;
    h->templated = next_ref(url, &nl) != NULL;
    sl_url_redact(url, h->url_shown, sizeof(h->url_shown), 0);

    const char *method = sl_opt_str(opts, "method");
    snprintf(h->method, sizeof(h->method), "%s", method ? method : "POST");

    const char *fmt = sl_opt_str(opts, "format");
    h->format = !fmt || strcmp(fmt, "array") == 0 ? FMT_ARRAY
                : strcmp(fmt, "object") == 0      ? FMT_OBJECT
                : strcmp(fmt, "ndjson") == 0      ? FMT_NDJSON
                                                  : FMT_RECORD;
    const char *wrap = sl_opt_str(opts, "wrap");
    h->wrap = strdup(wrap ? wrap : "records");
    if (!h->wrap) {
        goto fail;
    }
    h->nexpect = sl_opt_count(opts, "expect_status");
    for (size_t i = 0; i < h->nexpect; i++) {
        h->expect[i] = parse_status(sl_opt_item(opts, "expect_status", i));
    }

    /* Authorization */
    const char *bearer = sl_opt_str(opts, "bearer_token");
    const char *buser = sl_opt_str(opts, "basic_user");
    const char *bpass = sl_opt_str(opts, "basic_password");
    int has_bearer = bearer && bearer[0];
    int has_basic = (buser && buser[0]) || (bpass && bpass[0]);
    size_t nh = sl_opt_count(opts, "headers");
    h->hnames = calloc(nh + 1, sizeof(*h->hnames));
    h->hvalues = calloc(nh + 1, sizeof(*h->hvalues));
    if (!h->hnames || !h->hvalues) {
        goto fail;
    }
    for (size_t i = 0; i < nh; i++) {
        const char *name = sl_opt_key(opts, "headers", i);
        const char *value = sl_opt_item(opts, "headers", i);
        if (strcasecmp(name, "Content-Type") == 0) {
            h->has_content_type = 1;
        }
        h->templated |= next_ref(value, &nl) != NULL;
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

/* Append the text of rec's field `name` to out: percent-encoded for a URL
 * (RFC 3986 unreserved characters kept), as is for a header value (which
 * must not break the header's line). 0 ok, 1 the record cannot fill it (why
 * set), <0 out of memory or too long. */
static int subst_field(const sl_record *rec, const char *name, size_t nl, int url, sl_buf *out,
                       char *why, size_t cap)
{
    const sl_field *f = NULL;
    for (uint32_t k = 0; k < rec->nfields && !f; k++) {
        if (rec->fields[k].name_len == nl && memcmp(rec->fields[k].name, name, nl) == 0) {
            f = &rec->fields[k];
        }
    }
    char tmp[48];
    const char *s = tmp;
    size_t len = 0;
    if (!f || (f->flags & SL_FIELD_OMIT) || f->type == SL_T_NULL) {
        snprintf(why, cap, "field '%.*s' is %s", (int)nl, name,
                 !f                     ? "missing"
                 : f->type == SL_T_NULL ? "null"
                                        : "empty");
        return 1;
    }
    switch ((sl_type)f->type) {
    case SL_T_STRING:
        s = sl_field_str(rec, f);
        len = f->v.s.len;
        break;
    case SL_T_INT:
        len = (size_t)snprintf(tmp, sizeof(tmp), "%lld", (long long)f->v.i);
        break;
    case SL_T_FLOAT:
        if ((f->flags & SL_FIELD_NUMTEXT) && f->tlen) {
            s = rec->data.data + f->toff;
            len = f->tlen;
        } else {
            len = sl_format_double(tmp, sizeof(tmp), f->v.f);
        }
        break;
    case SL_T_BOOL:
        len = (size_t)snprintf(tmp, sizeof(tmp), "%s", f->v.b ? "true" : "false");
        break;
    default:
        snprintf(why, cap, "field '%.*s' is an object or array (expected text or a number)",
                 (int)nl, name);
        return 1;
    }
    if (len == 0) {
        snprintf(why, cap, "field '%.*s' is empty", (int)nl, name);
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; i < len && !rc; i++) {
        unsigned char c = (unsigned char)s[i];
        if (url) {
            if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                c == '-' || c == '.' || c == '_' || c == '~') {
                rc = sl_buf_putc(out, (char)c);
            } else {
                rc = sl_buf_printf(out, "%%%02X", c);
            }
        } else {
            if ((c < 0x20 && c != '\t') || c == 0x7f) {
                snprintf(why, cap,
                         "field '%.*s' holds a control character (a line break?), which "
                         "cannot go in a header",
                         (int)nl, name);
                return 1;
            }
            rc = sl_buf_putc(out, (char)c);
        }
    }
    return rc;
}

/* Expand the {field} references of tmpl with rec's values into out. */
static int expand(const char *tmpl, const sl_record *rec, int url, sl_buf *out, char *why,
                  size_t cap)
{
    const char *p = tmpl;
    size_t nl;
    int rc = 0;
    for (const char *ref = next_ref(p, &nl); ref && !rc; ref = next_ref(p, &nl)) {
        rc = sl_buf_append(out, p, (size_t)(ref - p));
        if (!rc) {
            rc = subst_field(rec, ref + 1, nl, url, out, why, cap);
        }
        p = ref + nl + 2;
    }
    return rc ? rc : sl_buf_puts(out, p);
}

/* format: record: one request for the batch's one record. */
static int encode_record(http_sink *h, sl_batch *b, sl_http_req *req, sl_error *err)
{
    sl_record *rec = NULL;
    size_t nsend = 0;
    for (size_t r = 0; r < b->n; r++) {
        if (b->recs[r].status == SL_REC_OK) {
            rec = rec ? rec : &b->recs[r];
            nsend++;
        }
    }
    if (nsend == 0) {
        return 0; /* empty body: acknowledged without a request */
    }
    if (nsend > 1) {
        /* http_max_batch makes the engine build batches of one */
        return sl_error_set(err, SL_ERR,
                            "http: format: record sends one record per request, "
                            "but batch %llu holds %zu (an engine bug)",
                            (unsigned long long)b->seq, nsend);
    }
    char why[256] = "";
    int rc = expand(h->url, rec, 1, &req->url, why, sizeof(why));
    if (rc == 0 && req->url.len >= HTTP_URL_MAX) {
        snprintf(why, sizeof(why), "the URL is longer than %d bytes", HTTP_URL_MAX - 1);
        rc = 1;
    }
    for (size_t i = 0; rc == 0 && i < h->nheaders; i++) {
        sl_buf v;
        sl_buf_init(&v, HTTP_HEADER_MAX);
        rc = expand(h->hvalues[i], rec, 0, &v, why, sizeof(why));
        if (rc == SL_ERR_LIMIT) {
            snprintf(why, sizeof(why), "header %s is longer than %d bytes", h->hnames[i],
                     HTTP_HEADER_MAX);
            rc = 1;
        }
        if (rc == 0) {
            rc = sl_http_req_header(req, h->hnames[i], "%s", sl_buf_cstr(&v));
        }
        sl_buf_free(&v);
    }
    if (rc == 1) {
        /* this record cannot make a request: dead-letter it, send nothing */
        if (rec->line) {
            sl_record_fail(rec, "line %llu: cannot build the request to %s: %s",
                           (unsigned long long)rec->line, h->url_shown, why);
        } else {
            sl_record_fail(rec, "cannot build the request to %s: %s", h->url_shown, why);
        }
        sl_http_req_reset(req);
        return 0;
    }
    if (rc == 0) {
        sl_jw w;
        sl_jw_init(&w, &req->body);
        write_record(h, &w, rec);
        rc = w.err;
    }
    if (rc == 0 && !h->has_content_type) {
        rc = sl_http_req_header(req, "Content-Type", "application/json");
    }
    if (rc) {
        return sl_error_set(err, rc, "http: request for line %llu exceeds a size limit",
                            (unsigned long long)rec->line);
    }
    memcpy(req->method, h->method, sizeof(req->method));
    return 0;
}

static int http_encode(void *self, sl_batch *b, sl_http_req *req, sl_error *err)
{
    http_sink *h = self;
    sl_http_req_reset(req);
    if (h->format == FMT_RECORD) {
        return encode_record(h, b, req, err);
    }
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
        int ok = h->nexpect == 0;
        for (size_t i = 0; i < h->nexpect && !ok; i++) {
            ok = st == h->expect[i];
        }
        if (!ok) {
            char want[HTTP_EXPECT_MAX * 6 + 8] = "";
            for (size_t i = 0; i < h->nexpect; i++) {
                size_t l = strlen(want);
                snprintf(want + l, sizeof(want) - l, "%s%ld",
                         i == 0                ? ""
                         : i + 1 == h->nexpect ? " or "
                                               : ", ",
                         h->expect[i]);
            }
            sl_error_set(err, SL_ERR_INPUT, "expected HTTP %s from %s, got %ld: %s", want,
                         h->url_shown, st, body);
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
    /* a 400/422 for several records says nothing of which: let the engine
     * isolate the refused ones */
    return (st == 400 || st == 422) && b->nsend > 1 ? SL_SEND_SPLIT : SL_SEND_FAIL;
}

static int http_max_batch(void *self)
{
    const http_sink *h = self;
    return h->format == FMT_RECORD ? 1 : 0;
}

const sl_sink_plugin sl_sink_http = {
    .name = "http",
    .summary = "any JSON HTTP API: a batch of records per request",
    .options = http_options,
    .validate = http_validate,
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
    .max_batch_records = http_max_batch,
    .columns = http_columns,
    .encode = http_encode,
    .decode = http_decode,
    .destroy = http_destroy,
};
