/* actionnetwork: people to Action Network through the OSDI person signup
 * helper, `POST {url}/people/`, one person per request (the helper takes
 * one person). Action Network matches the person by e-mail address and
 * updates instead of creating, so a re-sent request is harmless.
 *
 * Records are flat (the columns of an ActionKit export, or whatever a `map`
 * step made); the sink builds the OSDI person from the columns its options
 * name, with the ActionKit sync's clean-ups, which are part of the contract
 * (see docs/sinks/actionnetwork.md):
 *   {"person":{"given_name","family_name","email_addresses":[{"address"}],
 *              "postal_addresses":[{"address_lines","locality","region",
 *              "postal_code","country"}],"phone_numbers":[{"number"}],
 *              "custom_fields":{...}},"add_tags":[...]}
 * - postal_code: all digits and shorter than 5 -> zero-padded to 5;
 * - phone: the first of the phone columns (priority order) that has a value,
 *   its first comma-separated part, '-' and spaces removed;
 * - custom field booleans are the strings "True"/"False";
 * - is_member (member_field): "False" for a record whose action is "lapsed"
 *   (the diff step's), "True" for any other action; without an action the
 *   record's own member_field column decides, else "True". A lapsed record
 *   sends only its e-mail address and the member field: a custom-field
 *   update of the person the helper finds by e-mail.
 *
 * The instance holds no per-batch state, so several requests may be in
 * flight at once. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "sluice/plugin.h"
#include "sluice/url.h"
#include "sluice/values.h"

#define AN_PATH "/people/"
#define AN_URL_MAX 2048
/* The longest text value the sink formats for one field (numbers, a zip). */
#define AN_TMP 64

typedef struct strv {
    char **v;
    size_t n;
} strv;

typedef struct an_sink {
    sl_ctx *ctx; /* borrowed */
    char *url;   /* base + /people/ */
    char url_shown[AN_URL_MAX];
    char *api_key;
    /* input column of each OSDI field; NULL = not mapped */
    char *email, *given, *family, *locality, *region, *postal, *country;
    strv lines, phones, tags;
    strv cf_names, cf_cols; /* custom_fields: name -> column */
    char *member;           /* custom field for is_member; NULL = not sent */
} an_sink;

static const sl_option an_options[] = {
    {"url", SL_OPT_STRING, NULL, SL_OPT_REQUIRED, NULL,
     "API base, e.g. https://actionnetwork.org/api/v2 (/people/ is appended)"},
    {"api_key", SL_OPT_STRING, NULL, SL_OPT_REQUIRED | SL_OPT_SECRET, NULL,
     "API key, sent as OSDI-API-Token"},
    {"email", SL_OPT_STRING, "email", 0, NULL,
     "column of the e-mail address (Action Network matches people by it)"},
    {"given_name", SL_OPT_STRING, "first_name", 0, NULL, "column of the given name (\"\" = none)"},
    {"family_name", SL_OPT_STRING, "last_name", 0, NULL, "column of the family name (\"\" = none)"},
    {"address_lines", SL_OPT_LIST, "[address1, address2]", 0, NULL,
     "columns of the street address lines, in order"},
    {"locality", SL_OPT_STRING, "city", 0, NULL, "column of the city (\"\" = none)"},
    {"region", SL_OPT_STRING, "state", 0, NULL, "column of the state or region (\"\" = none)"},
    {"postal_code", SL_OPT_STRING, "zip", 0, NULL,
     "column of the zip code; all digits and shorter than 5 is zero-padded (\"\" = none)"},
    {"country", SL_OPT_STRING, "country", 0, NULL, "column of the country code (\"\" = none)"},
    {"phone", SL_OPT_LIST, "[best_phone, mobile_phone, home_phone, work_phone, phone]", 0, NULL,
     "phone columns by priority: the first with a value is sent, its first comma-separated "
     "part, without '-' and spaces"},
    {"custom_fields", SL_OPT_MAP, NULL, 0, NULL,
     "custom field name -> column; booleans are sent as \"True\"/\"False\""},
    {"member_field", SL_OPT_STRING, "is_member", 0, NULL,
     "custom field set to \"True\" (new, changed) or \"False\" (lapsed) (\"\" = not sent)"},
    {"add_tags", SL_OPT_LIST, NULL, 0, NULL,
     "tags added to every person sent (not to lapsed ones)"},
    SL_OPTIONS_END,
};

static void strv_free(strv *s)
{
    for (size_t i = 0; s->v && i < s->n; i++) {
        free(s->v[i]);
    }
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

static void an_destroy(void *self)
{
    an_sink *a = self;
    if (!a) {
        return;
    }
    free(a->url);
    free(a->api_key);
    free(a->email);
    free(a->given);
    free(a->family);
    free(a->locality);
    free(a->region);
    free(a->postal);
    free(a->country);
    strv_free(&a->lines);
    strv_free(&a->phones);
    strv_free(&a->tags);
    strv_free(&a->cf_names);
    strv_free(&a->cf_cols);
    free(a->member);
    free(a);
}

/* ---------------------------------------------------------------- options */

static int check_url(const char *url)
{
    sl_url pu;
    int ok = url && sl_url_parse(url, &pu, NULL) == 0 &&
             (strcmp(pu.scheme, "https") == 0 || strcmp(pu.scheme, "http") == 0) && *pu.host;
    sl_url_free(&pu);
    return ok && !strchr(url, '?') && !strchr(url, '#');
}

static int an_validate(const sl_opts *opts, sl_report_fn report, void *ud)
{
    int bad = 0;
    const char *url = sl_opt_str(opts, "url");
    if (!check_url(url)) {
        char shown[256];
        sl_url_redact(url ? url : "", shown, sizeof(shown), 0);
        report(ud, "url",
               "'%s' is not an http(s) URL without a query (expected the API base, e.g. "
               "https://actionnetwork.org/api/v2)",
               shown);
        bad++;
    } else if (strlen(url) + strlen(AN_PATH) >= AN_URL_MAX) {
        report(ud, "url", "longer than %d bytes", (int)(AN_URL_MAX - strlen(AN_PATH) - 1));
        bad++;
    }
    const char *key = sl_opt_str(opts, "api_key");
    if (!key || !key[0]) {
        report(ud, "api_key", "must not be empty (expected the group's API key)");
        bad++;
    } else if (strpbrk(key, "\r\n")) {
        report(ud, "api_key", "holds a line break (expected one line of text)");
        bad++;
    }
    const char *email = sl_opt_str(opts, "email");
    if (!email || !email[0]) {
        report(ud, "email", "must name a column (Action Network matches people by e-mail address)");
        bad++;
    }
    size_t n = sl_opt_count(opts, "custom_fields");
    for (size_t i = 0; i < n; i++) {
        const char *name = sl_opt_key(opts, "custom_fields", i);
        const char *col = sl_opt_item(opts, "custom_fields", i);
        if (!name || !name[0] || !col || !col[0]) {
            report(ud, "custom_fields", "'%s': expected a custom field name and a column",
                   name ? name : "");
            bad++;
        }
        const char *member = sl_opt_str(opts, "member_field");
        if (name && member && strcmp(name, member) == 0) {
            report(ud, "custom_fields",
                   "'%s' is also member_field, which the sink sets itself (expected one of "
                   "them)",
                   name);
            bad++;
        }
    }
    return bad;
}

/* A column option: NULL when unset or "" (not mapped). 0, or -1 out of memory. */
static int dup_col(const sl_opts *opts, const char *name, char **out)
{
    const char *v = sl_opt_str(opts, name);
    *out = NULL;
    if (!v || !v[0]) {
        return 0;
    }
    *out = strdup(v);
    return *out ? 0 : -1;
}

static int dup_list(const sl_opts *opts, const char *name, int keys, strv *out)
{
    size_t n = sl_opt_count(opts, name);
    out->v = calloc(n ? n : 1, sizeof(*out->v));
    if (!out->v) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *v = keys ? sl_opt_key(opts, name, i) : sl_opt_item(opts, name, i);
        if (!v || !v[0]) {
            continue; /* an empty entry maps nothing */
        }
        out->v[out->n] = strdup(v);
        if (!out->v[out->n]) {
            return -1;
        }
        out->n++;
    }
    return 0;
}

static int an_init(void **self, const sl_opts *opts, sl_ctx *ctx, sl_error *err)
{
    if (sl_opts_validate(opts, an_validate, err) > 0) {
        return SL_ERR_CONFIG;
    }
    an_sink *a = calloc(1, sizeof(*a));
    if (!a) {
        goto fail;
    }
    a->ctx = ctx;
    const char *url = sl_opt_str(opts, "url");
    const char *key = sl_opt_str(opts, "api_key");
    /* Tolerate a trailing slash and a URL that already names /people. */
    size_t ul = strlen(url);
    while (ul > 0 && url[ul - 1] == '/') {
        ul--;
    }
    if (ul >= 7 && memcmp(url + ul - 7, "/people", 7) == 0) {
        ul -= 7;
    }
    a->url = malloc(ul + sizeof(AN_PATH));
    if (!a->url) {
        goto fail;
    }
    memcpy(a->url, url, ul);
    memcpy(a->url + ul, AN_PATH, sizeof(AN_PATH));
    sl_url_redact(a->url, a->url_shown, sizeof(a->url_shown), 0);
    sl_secret_register(key);
    a->api_key = strdup(key);
    if (!a->api_key || dup_col(opts, "email", &a->email) ||
        dup_col(opts, "given_name", &a->given) || dup_col(opts, "family_name", &a->family) ||
        dup_col(opts, "locality", &a->locality) || dup_col(opts, "region", &a->region) ||
        dup_col(opts, "postal_code", &a->postal) || dup_col(opts, "country", &a->country) ||
        dup_col(opts, "member_field", &a->member) ||
        dup_list(opts, "address_lines", 0, &a->lines) || dup_list(opts, "phone", 0, &a->phones) ||
        dup_list(opts, "add_tags", 0, &a->tags) ||
        dup_list(opts, "custom_fields", 1, &a->cf_names) ||
        dup_list(opts, "custom_fields", 0, &a->cf_cols)) {
        goto fail;
    }
    *self = a;
    return 0;
fail:
    an_destroy(a);
    return sl_error_set(err, SL_ERR_NOMEM, "actionnetwork: out of memory");
}

/* The e-mail column must be there; a column named in config that the input
 * lacks is probably a typo (the defaults are ActionKit's names, which an
 * export need not all have, so only a changed option is worth a warning). */
static int has_col(const char *const *cols, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(cols[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

static int an_columns(void *self, const char *const *cols, size_t n, sl_error *err)
{
    an_sink *a = self;
    if (!has_col(cols, n, a->email)) {
        return sl_error_set(err, SL_ERR_INPUT,
                            "input has no '%s' column (the e-mail address Action Network matches "
                            "people by; set the sink's `email` option to the column that holds it)",
                            a->email);
    }
    for (size_t i = 0; i < a->cf_cols.n; i++) {
        if (!has_col(cols, n, a->cf_cols.v[i])) {
            sl_plog(a->ctx, SL_LOG_WARN,
                    "custom_fields: %s: column '%s' is not among the input columns",
                    a->cf_names.v[i], a->cf_cols.v[i]);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- mapping */

static const sl_field *find(const sl_record *rec, const char *name)
{
    if (!name) {
        return NULL;
    }
    size_t nl = strlen(name);
    for (uint32_t i = 0; i < rec->nfields; i++) {
        const sl_field *f = &rec->fields[i];
        if (f->name_len == nl && memcmp(f->name, name, nl) == 0) {
            return f;
        }
    }
    return NULL;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* The value of f as text for the person, trimmed; booleans as "True" /
 * "False" (Action Network's custom field convention). 1 when there is a
 * non-empty value ((*s, *len), numbers formatted into tmp), else 0. */
static int text_of(const sl_record *rec, const sl_field *f, char tmp[AN_TMP], const char **s,
                   size_t *len)
{
    if (!f || (f->flags & SL_FIELD_OMIT)) {
        return 0;
    }
    *s = tmp;
    switch ((sl_type)f->type) {
    case SL_T_NULL:
        return 0;
    case SL_T_STRING:
    case SL_T_JSON:
        *s = sl_field_str(rec, f);
        *len = f->v.s.len;
        break;
    case SL_T_INT:
        *len = (size_t)snprintf(tmp, AN_TMP, "%lld", (long long)f->v.i);
        break;
    case SL_T_FLOAT:
        if ((f->flags & SL_FIELD_NUMTEXT) && f->tlen) {
            *s = rec->data.data + f->toff;
            *len = f->tlen;
        } else {
            *len = sl_format_double(tmp, AN_TMP, f->v.f);
        }
        break;
    case SL_T_BOOL:
        *len = (size_t)snprintf(tmp, AN_TMP, "%s", f->v.b ? "True" : "False");
        break;
    }
    while (*len > 0 && is_space((*s)[0])) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && is_space((*s)[*len - 1])) {
        (*len)--;
    }
    return *len > 0;
}

/* Custom field text: a boolean, typed or written true/false in any case,
 * becomes "True"/"False". */
static void custom_text(const char **s, size_t *len)
{
    if (*len == 4 && strncasecmp(*s, "true", 4) == 0) {
        *s = "True";
    } else if (*len == 5 && strncasecmp(*s, "false", 5) == 0) {
        *s = "False";
    }
}

/* Zip codes: all digits and shorter than 5 -> zero-padded to 5 (a spreadsheet
 * or a number type ate the leading zeros of 02134); anything else as is. */
static size_t an_zip(const char *s, size_t len, char *out, size_t cap)
{
    int digits = len > 0;
    for (size_t i = 0; i < len && digits; i++) {
        digits = s[i] >= '0' && s[i] <= '9';
    }
    size_t pad = digits && len < 5 ? 5 - len : 0;
    if (pad + len + 1 > cap) {
        return 0;
    }
    memset(out, '0', pad);
    memcpy(out + pad, s, len);
    out[pad + len] = '\0';
    return pad + len;
}

/* A phone cell: its first comma-separated part, without '-' and spaces
 * (and other ASCII whitespace). Returns the length written to out (0: no
 * number in it). */
static size_t an_phone(const char *s, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < len && s[i] != ','; i++) {
        if (s[i] == '-' || is_space(s[i])) {
            continue;
        }
        if (n + 1 >= cap) {
            return 0;
        }
        out[n++] = s[i];
    }
    out[n] = '\0';
    return n;
}

/* The is_member value: 0 "False", 1 "True". */
static int member_value(const an_sink *a, const sl_record *rec)
{
    if (rec->action) {
        return strcmp(rec->action, "lapsed") != 0;
    }
    char tmp[AN_TMP];
    const char *s;
    size_t len;
    const sl_field *f = find(rec, a->member);
    if (text_of(rec, f, tmp, &s, &len)) {
        int b = 1;
        if (sl_parse_bool_word(s, len, &b) == 0) {
            return b;
        }
    }
    return 1;
}

static void put_str(sl_jw *w, const char *key, const char *s, size_t len)
{
    sl_jw_keyz(w, key);
    sl_jw_str(w, s, len);
}

/* Optional text field key: column's value, when it has one. */
static void put_col(sl_jw *w, const char *key, const sl_record *rec, const char *col)
{
    char tmp[AN_TMP];
    const char *s;
    size_t len;
    if (text_of(rec, find(rec, col), tmp, &s, &len)) {
        put_str(w, key, s, len);
    }
}

static int is_lapsed(const sl_record *rec)
{
    return rec->action && strcmp(rec->action, "lapsed") == 0;
}

static void write_address(const an_sink *a, sl_jw *w, const sl_record *rec)
{
    char tmp[AN_TMP], zip[AN_TMP + 8];
    const char *s;
    size_t len;
    int open = 0;
#define OPEN_ADDR()                                                                                \
    do {                                                                                           \
        if (!open) {                                                                               \
            sl_jw_keyz(w, "postal_addresses");                                                     \
            sl_jw_arr_open(w);                                                                     \
            sl_jw_obj_open(w);                                                                     \
            open = 1;                                                                              \
        }                                                                                          \
    } while (0)
    int lines = 0;
    for (size_t i = 0; i < a->lines.n; i++) {
        if (text_of(rec, find(rec, a->lines.v[i]), tmp, &s, &len)) {
            OPEN_ADDR();
            if (!lines++) {
                sl_jw_keyz(w, "address_lines");
                sl_jw_arr_open(w);
            }
            sl_jw_str(w, s, len);
        }
    }
    if (lines) {
        sl_jw_arr_close(w);
    }
    const char *cols[] = {a->locality, a->region, a->country};
    const char *keys[] = {"locality", "region", "country"};
    for (size_t i = 0; i < 3; i++) {
        if (text_of(rec, find(rec, cols[i]), tmp, &s, &len)) {
            OPEN_ADDR();
            put_str(w, keys[i], s, len);
        }
    }
    if (text_of(rec, find(rec, a->postal), tmp, &s, &len)) {
        size_t zl = an_zip(s, len, zip, sizeof(zip));
        OPEN_ADDR();
        if (zl) {
            put_str(w, "postal_code", zip, zl);
        } else {
            put_str(w, "postal_code", s, len);
        }
    }
#undef OPEN_ADDR
    if (open) {
        sl_jw_obj_close(w);
        sl_jw_arr_close(w);
    }
}

static void write_phone(const an_sink *a, sl_jw *w, const sl_record *rec)
{
    char tmp[AN_TMP];
    const char *s;
    size_t len;
    for (size_t i = 0; i < a->phones.n; i++) {
        if (!text_of(rec, find(rec, a->phones.v[i]), tmp, &s, &len)) {
            continue;
        }
        char num[256];
        size_t n = an_phone(s, len, num, sizeof(num));
        if (n == 0) {
            continue;
        }
        sl_jw_keyz(w, "phone_numbers");
        sl_jw_arr_open(w);
        sl_jw_obj_open(w);
        put_str(w, "number", num, n);
        sl_jw_obj_close(w);
        sl_jw_arr_close(w);
        return;
    }
}

/* Write the signup helper body for rec. The e-mail address was checked. */
static void write_person(const an_sink *a, sl_jw *w, const sl_record *rec, const char *email,
                         size_t email_len)
{
    int lapsed = is_lapsed(rec);
    sl_jw_obj_open(w);
    sl_jw_keyz(w, "person");
    sl_jw_obj_open(w);
    if (!lapsed) {
        put_col(w, "given_name", rec, a->given);
        put_col(w, "family_name", rec, a->family);
    }
    sl_jw_keyz(w, "email_addresses");
    sl_jw_arr_open(w);
    sl_jw_obj_open(w);
    put_str(w, "address", email, email_len);
    sl_jw_obj_close(w);
    sl_jw_arr_close(w);
    if (!lapsed) {
        write_address(a, w, rec);
        write_phone(a, w, rec);
    }
    int cf = 0;
    if (!lapsed) {
        for (size_t i = 0; i < a->cf_names.n; i++) {
            char tmp[AN_TMP];
            const char *s;
            size_t len;
            if (!text_of(rec, find(rec, a->cf_cols.v[i]), tmp, &s, &len)) {
                continue;
            }
            custom_text(&s, &len);
            if (!cf++) {
                sl_jw_keyz(w, "custom_fields");
                sl_jw_obj_open(w);
            }
            put_str(w, a->cf_names.v[i], s, len);
        }
    }
    if (a->member) {
        if (!cf++) {
            sl_jw_keyz(w, "custom_fields");
            sl_jw_obj_open(w);
        }
        if (member_value(a, rec)) {
            put_str(w, a->member, "True", 4);
        } else {
            put_str(w, a->member, "False", 5);
        }
    }
    if (cf) {
        sl_jw_obj_close(w);
    }
    sl_jw_obj_close(w);
    if (!lapsed && a->tags.n) {
        sl_jw_keyz(w, "add_tags");
        sl_jw_arr_open(w);
        for (size_t i = 0; i < a->tags.n; i++) {
            sl_jw_str(w, a->tags.v[i], strlen(a->tags.v[i]));
        }
        sl_jw_arr_close(w);
    }
    sl_jw_obj_close(w);
}

static int an_encode(void *self, sl_batch *b, sl_http_req *req, sl_error *err)
{
    an_sink *a = self;
    sl_http_req_reset(req);
    /* An empty body with a method other than GET is what tells the engine
     * there is nothing to send (the reset leaves GET). */
    memcpy(req->method, "POST", 5);
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
        /* defaults.max_batch_records makes the engine build batches of one */
        return sl_error_set(err, SL_ERR,
                            "actionnetwork: the signup helper takes one person per request, but "
                            "batch %llu holds %zu (an engine bug)",
                            (unsigned long long)b->seq, nsend);
    }
    char tmp[AN_TMP], why[256];
    const char *email;
    size_t email_len;
    if (!text_of(rec, find(rec, a->email), tmp, &email, &email_len)) {
        snprintf(why, sizeof(why),
                 "empty %s: Action Network matches people by e-mail address, nothing to send",
                 a->email);
        sl_record_fail(rec, "%s", why);
        return 0;
    }
    if (is_lapsed(rec) && !a->member) {
        snprintf(why, sizeof(why),
                 "a lapsed person, but member_field is \"\": there is no custom field to "
                 "update");
        sl_record_fail(rec, "%s", why);
        return 0;
    }
    sl_jw w;
    sl_jw_init(&w, &req->body);
    write_person(a, &w, rec, email, email_len);
    if (w.err) {
        return sl_error_set(err, w.err, "actionnetwork: the person of line %llu exceeds %zu bytes",
                            (unsigned long long)rec->line, req->body.max);
    }
    int rc = sl_buf_puts(&req->url, a->url);
    if (!rc) {
        rc = sl_http_req_header(req, "OSDI-API-Token", "%s", a->api_key);
    }
    if (!rc) {
        rc = sl_http_req_header(req, "Content-Type", "application/json");
    }
    if (rc) {
        return sl_error_set(err, rc, "actionnetwork: out of memory building the request");
    }
    return 0;
}

/* The `error` (Action Network's) or `message` of an error body, else the
 * start of the body. */
static void body_message(const sl_http_resp *resp, char *dst, size_t cap)
{
    json_t *root = json_loadb(resp->body, resp->body_len, 0, NULL);
    const char *msg = json_string_value(json_object_get(root, "error"));
    if (!msg) {
        msg = json_string_value(json_object_get(root, "message"));
    }
    if (msg && msg[0]) {
        sl_excerpt(dst, cap, msg, strlen(msg), 300);
    } else if (resp->body_len) {
        sl_excerpt(dst, cap, resp->body, resp->body_len, 300);
    } else {
        snprintf(dst, cap, "(empty body)");
    }
    json_decref(root);
}

static sl_verdict an_decode(void *self, sl_batch *b, const sl_http_resp *resp, sl_error *err)
{
    an_sink *a = self;
    long st = resp->status;
    char msg[512];
    (void)b;
    if (st == 0) {
        sl_error_set(err, SL_ERR_IO,
                     "could not reach Action Network at %s (gave up after %d attempts): %s",
                     a->url_shown, resp->attempts, resp->error);
        return SL_SEND_FATAL;
    }
    if (resp->gave_up) {
        body_message(resp, msg, sizeof(msg));
        sl_error_set(err, SL_ERR_IO,
                     "gave up after %d attempts: HTTP %ld from Action Network at %s: %s",
                     resp->attempts, st, a->url_shown, msg);
        return SL_SEND_FATAL;
    }
    if (st >= 200 && st < 300) {
        return SL_SEND_OK;
    }
    if (st == 401 || st == 403) {
        sl_error_set(err, SL_ERR_CONFIG,
                     "Action Network rejected the API key (HTTP %ld) at %s: check api_key (the "
                     "group's key from the API & Sync page)",
                     st, a->url_shown);
        return SL_SEND_FATAL;
    }
    if (st == 404 || st == 405) {
        sl_error_set(err, SL_ERR_CONFIG,
                     "Action Network answered HTTP %ld at %s: check `url` (expected the API "
                     "base, e.g. https://actionnetwork.org/api/v2)",
                     st, a->url_shown);
        return SL_SEND_FATAL;
    }
    if (sl_http_classify(st) == SL_HTTP_RETRY) {
        /* the client retries these itself; seen here only if it did not */
        sl_error_set(err, SL_ERR_IO, "HTTP %ld from Action Network at %s", st, a->url_shown);
        return SL_SEND_RETRY;
    }
    /* one person per request: a refusal is this person's */
    body_message(resp, msg, sizeof(msg));
    sl_error_set(err, SL_ERR_INPUT, "Action Network refused the person (HTTP %ld): %s", st, msg);
    return SL_SEND_FAIL;
}

const sl_sink_plugin sl_sink_actionnetwork = {
    .name = "actionnetwork",
    .summary = "Action Network people (OSDI person signup helper), one person per request, "
               "4 requests/s",
    .options = an_options,
    .validate = an_validate,
    .defaults =
        {
            .batch_records = 1,
            .max_batch_records = 1,
            .batch_bytes = (int64_t)64 * 1024,
            .concurrency = 4,
            /* Action Network's documented limit: 4 requests a second */
            .rate_per_sec = 4.0,
            .rate_burst = 4.0,
        },
    .init = an_init,
    .columns = an_columns,
    .encode = an_encode,
    .decode = an_decode,
    .destroy = an_destroy,
};
