/* ControlShift bulk-data webhooks -> jobs.
 *
 * ControlShift POSTs {"type": "data.full_table_exported" |
 * "data.incremental_table_exported", "data": {"url", "table",
 * "compression_format"}, "jid"} signed with
 * `x-controlshift-webhook-signature: sha256:<hex HMAC-SHA256(secret, body)>`.
 * The signature is checked over the raw body before anything is parsed. A
 * full export becomes a job with mode `full_mode` (replace), an incremental
 * one `incremental_mode` (upsert); jobs are keyed by jid (redeliveries are
 * stored once) and ordered per table. Other event types are answered 200
 * and skipped, so ControlShift never disables the endpoint over them. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "sluice/plugin.h"

#define SIG_HEADER "x-controlshift-webhook-signature"

static const sl_option cs_options[] = {
    {"secret", SL_OPT_STRING, NULL, SL_OPT_REQUIRED | SL_OPT_SECRET, NULL,
     "the webhook secret shared with ControlShift (signs every request)"},
    {"route", SL_OPT_STRING, "/webhooks/controlshift", 0, NULL, "path the webhook is served on"},
    {"max_body", SL_OPT_SIZE, "1MB", 0, NULL, "larger request bodies are refused with 413"},
    {"full_mode", SL_OPT_ENUM, "replace", 0, "replace|append|upsert",
     "job variable {{mode}} for data.full_table_exported"},
    {"incremental_mode", SL_OPT_ENUM, "upsert", 0, "replace|append|upsert",
     "job variable {{mode}} for data.incremental_table_exported"},
    {"url_lifetime", SL_OPT_DURATION, "6h", 0, NULL,
     "download URLs expire after this long: a failing job is retried until then"},
    SL_OPTIONS_END,
};

typedef struct cs_trigger {
    char *secret;
    size_t secret_len;
    char route[256];
    size_t max_body;
    char full_mode[16], incr_mode[16];
    double lifetime_s;
    char prefix[128]; /* log prefix */
} cs_trigger;

/* A webhook secret shorter than this is guessable or a placeholder
 * ("x", "changeme"); ControlShift generates long random ones. */
#define CS_SECRET_MIN 16

/* What `sluice check` refuses (configuration loading calls this for every
 * trigger, so `serve` refuses the same). */
static int cs_validate(const sl_opts *o, sl_report_fn report, void *ud)
{
    int bad = 0;
    const char *secret = sl_opt_str(o, "secret");
    size_t n = secret ? strlen(secret) : 0;
    if (n < CS_SECRET_MIN) {
        /* never the value itself: it is a secret */
        report(ud, "secret",
               "%zu characters is too short for a webhook secret (expected at least %d: the "
               "secret from ControlShift's webhook settings)",
               n, CS_SECRET_MIN);
        bad++;
    }
    const char *route = sl_opt_str(o, "route");
    if (!route || route[0] != '/' || strpbrk(route, "?# \t\r\n")) {
        report(ud, "route", "'%s' is not a path (expected e.g. /webhooks/controlshift)",
               route ? route : "");
        bad++;
    }
    if (sl_opt_size(o, "max_body") < 1024) {
        report(ud, "max_body", "%lld bytes is too small for a webhook (expected at least 1KB)",
               (long long)sl_opt_size(o, "max_body"));
        bad++;
    }
    if (sl_opt_duration_ms(o, "url_lifetime") <= 0) {
        report(ud, "url_lifetime", "must be more than 0 (expected e.g. 6h)");
        bad++;
    }
    return bad;
}

static int cs_init(void **self, const sl_opts *o, sl_ctx *ctx, sl_error *err)
{
    cs_trigger *t = calloc(1, sizeof(*t));
    if (!t) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    const char *secret = sl_opt_str(o, "secret");
    if (!secret || !*secret) {
        free(t);
        return sl_error_set(err, SL_ERR_CONFIG,
                            "%s: secret is empty (expected the webhook "
                            "secret from ControlShift's settings)",
                            sl_opt_where(o, "secret"));
    }
    t->secret = strdup(secret);
    t->secret_len = strlen(secret);
    snprintf(t->route, sizeof(t->route), "POST %s", sl_opt_str(o, "route"));
    t->max_body = (size_t)sl_opt_size(o, "max_body");
    snprintf(t->full_mode, sizeof(t->full_mode), "%s", sl_opt_str(o, "full_mode"));
    snprintf(t->incr_mode, sizeof(t->incr_mode), "%s", sl_opt_str(o, "incremental_mode"));
    t->lifetime_s = (double)sl_opt_duration_ms(o, "url_lifetime") / 1000.0;
    snprintf(t->prefix, sizeof(t->prefix), "%s", sl_ctx_name(ctx));
    if (!t->secret) {
        free(t);
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    *self = t;
    return 0;
}

static void cs_destroy(void *self)
{
    cs_trigger *t = self;
    if (!t) {
        return;
    }
    if (t->secret) {
        OPENSSL_cleanse(t->secret, t->secret_len);
        free(t->secret);
    }
    free(t);
}

static const char *cs_route(void *self)
{
    return ((cs_trigger *)self)->route;
}

static size_t cs_max_body(void *self)
{
    return ((cs_trigger *)self)->max_body;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* 1 when header is "sha256:<hex>" (or "sha256=<hex>") of HMAC(secret, body). */
static int signature_ok(const cs_trigger *t, const char *header, const char *body, size_t len)
{
    if (!header || strncmp(header, "sha256", 6) != 0 || (header[6] != ':' && header[6] != '=')) {
        return 0;
    }
    const char *hex = header + 7;
    unsigned char given[32];
    if (strlen(hex) != 64) {
        return 0;
    }
    for (int i = 0; i < 32; i++) {
        int hi = hexval((unsigned char)hex[2 * i]), lo = hexval((unsigned char)hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return 0;
        }
        given[i] = (unsigned char)(hi << 4 | lo);
    }
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (!HMAC(EVP_sha256(), t->secret, (int)t->secret_len, (const unsigned char *)body, len, mac,
              &maclen) ||
        maclen != 32) {
        return 0;
    }
    return CRYPTO_memcmp(given, mac, 32) == 0;
}

static int answer(sl_buf *out, int status, const char *state, const char *reason)
{
    sl_jw w;
    sl_jw_init(&w, out);
    sl_jw_obj_open(&w);
    sl_jw_keyz(&w, "status");
    sl_jw_str(&w, state, strlen(state));
    if (reason) {
        sl_jw_keyz(&w, "reason");
        sl_jw_str(&w, reason, strlen(reason));
    }
    sl_jw_obj_close(&w);
    return status;
}

static void var(sl_jw *w, const char *k, const char *v)
{
    sl_jw_keyz(w, k);
    sl_jw_str(w, v, strlen(v));
}

static int cs_receive(void *self, const sl_webhook_req *req, sl_job_spec *job, sl_buf *out)
{
    cs_trigger *t = self;
    char reason[512];
    job->accept = 0;

    const char *sig = req->header(req, SIG_HEADER);
    if (!sig) {
        return answer(out, 401, "unauthorized", "missing " SIG_HEADER " header");
    }
    if (!signature_ok(t, sig, req->body, req->body_len)) {
        return answer(out, 401, "unauthorized",
                      SIG_HEADER " does not match the body (expected sha256:<hex HMAC-SHA256>)");
    }

    json_error_t jerr;
    json_t *root = json_loadb(req->body, req->body_len, 0, &jerr);
    if (!root || !json_is_object(root)) {
        if (root) {
            snprintf(reason, sizeof(reason), "body is not a JSON object");
        } else {
            snprintf(reason, sizeof(reason), "body is not valid JSON: %s (line %d, column %d)",
                     jerr.text, jerr.line, jerr.column);
        }
        json_decref(root);
        return answer(out, 400, "invalid", reason);
    }
    int status = 400;
    const char *type = json_string_value(json_object_get(root, "type"));
    json_t *data = json_object_get(root, "data");
    json_t *jid_j = json_object_get(root, "jid");
    if (!type) {
        status = answer(out, 400, "invalid", "missing \"type\" (expected a string)");
        goto done;
    }
    const char *kind;
    const char *mode;
    if (strcmp(type, "data.full_table_exported") == 0) {
        kind = "full";
        mode = t->full_mode;
    } else if (strcmp(type, "data.incremental_table_exported") == 0) {
        kind = "incremental";
        mode = t->incr_mode;
    } else {
        snprintf(reason, sizeof(reason), "event type %.200s is not a bulk-data export", type);
        status = answer(out, 200, "skipped", reason);
        goto done;
    }
    const char *url = json_string_value(json_object_get(data, "url"));
    const char *table = json_string_value(json_object_get(data, "table"));
    const char *comp = json_string_value(json_object_get(data, "compression_format"));
    char jid[200];
    if (json_is_string(jid_j)) {
        snprintf(jid, sizeof(jid), "%s", json_string_value(jid_j));
    } else if (json_is_integer(jid_j)) {
        snprintf(jid, sizeof(jid), "%" JSON_INTEGER_FORMAT, json_integer_value(jid_j));
    } else {
        jid[0] = '\0';
    }
    if (!json_is_object(data)) {
        status = answer(out, 400, "invalid", "missing \"data\" (expected an object)");
        goto done;
    }
    if (!url || !*url) {
        status = answer(out, 400, "invalid", "missing data.url (expected the export's URL)");
        goto done;
    }
    if (!table || !*table || strlen(table) > 200) {
        status = answer(out, 400, "invalid",
                        "missing data.table (expected a table name of 1 to 200 bytes)");
        goto done;
    }
    if (!jid[0]) {
        status = answer(out, 400, "invalid", "missing \"jid\" (expected the job id)");
        goto done;
    }
    /* What the body says about compression is a hint, not a contract: real
     * deliveries omit it for .csv.bz2 exports, and the schema endpoint spells
     * it "BZIP2". The loader detects the compression from the content's
     * magic bytes and the URL's path (compression: auto), so no spelling is
     * refused (ControlShift disables an endpoint after 9 failed deliveries);
     * an announced gzip or bzip2 is passed on (any case). */
    const char *cvar = "auto";
    if (comp && strcasecmp(comp, "bzip2") == 0) {
        cvar = "bzip2";
    } else if (comp && strcasecmp(comp, "gzip") == 0) {
        cvar = "gzip";
    } else if (comp && *comp && strcasecmp(comp, "none") != 0) {
        sl_warn(t->prefix,
                "jid %s: data.compression_format '%.100s' is not one sluice knows: "
                "detecting the compression from the download",
                jid, comp);
    }

    job->accept = 1;
    snprintf(job->idem_key, sizeof(job->idem_key), "%s", jid);
    snprintf(job->order_key, sizeof(job->order_key), "%s", table);
    snprintf(job->kind, sizeof(job->kind), "%s", kind);
    job->expires_at = (double)time(NULL) + t->lifetime_s;
    sl_buf_reset(&job->vars);
    sl_jw w;
    sl_jw_init(&w, &job->vars);
    sl_jw_obj_open(&w);
    var(&w, "url", url);
    var(&w, "table", table);
    var(&w, "kind", kind);
    var(&w, "mode", mode);
    var(&w, "compression", cvar);
    var(&w, "jid", jid);
    sl_jw_obj_close(&w);
    status = answer(out, 202, "queued", NULL);
done:
    json_decref(root);
    return status;
}

const sl_trigger_plugin sl_trigger_controlshift = {
    .name = "controlshift",
    .summary = "ControlShift bulk-data webhooks (full and incremental table exports) as jobs",
    .options = cs_options,
    .validate = cs_validate,
    .init = cs_init,
    .route = cs_route,
    .max_body = cs_max_body,
    .receive = cs_receive,
    .destroy = cs_destroy,
};
