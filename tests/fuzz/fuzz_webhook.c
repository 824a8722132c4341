/* libFuzzer harness: the controlshift trigger's webhook handling.
 *
 * The bytes are the request body. It is sent three times: correctly signed
 * (HMAC-SHA256 computed here with OpenSSL, so the JSON parsing behind the
 * signature check is reached), with a wrong signature and without one (both
 * must be 401 before any parsing). Checked: the status is one the trigger
 * contract allows, the answer is a JSON object, and an accepted job's
 * variables are a JSON object carrying exactly the body's data.url and
 * data.table. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "config/config.h"
#include "core/ctx.h"
#include "core/registry.h"
#include "sluice/plugin.h"

#define SECRET "fuzz-webhook-secret"
#define SIG_HEADER "x-controlshift-webhook-signature"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_webhook: invariant failed: %s (%s:%d)\n", #cond, __FILE__,       \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const sl_trigger_plugin *trig;
static sl_opts *opts;
static sl_ctx *ctx;
static void *self;

/* What header() answers for the signature; NULL = absent. */
typedef struct req_impl {
    const char *sig;
} req_impl;

static const char *get_header(const sl_webhook_req *req, const char *name)
{
    const req_impl *impl = req->impl;
    if (strcasecmp(name, SIG_HEADER) == 0) {
        return impl->sig;
    }
    if (strcasecmp(name, "content-type") == 0) {
        return "application/json";
    }
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    sl_log_level = SL_LOG_ERROR;
    trig = sl_find_trigger("controlshift");
    CHECK(trig != NULL);
    /* One instance for the whole campaign, as `serve` keeps one (it is
     * reachable until exit, so not a leak). */
    const char *pairs[] = {("secret=" SECRET), "full_mode=replace", "incremental_mode=upsert"};
    sl_buf errs;
    sl_buf_init(&errs, 0);
    opts = sl_opts_from_pairs(trig->options, pairs, 3, &errs);
    CHECK(opts != NULL);
    sl_buf_free(&errs);
    ctx = sl_ctx_new("fuzz", "trigger", "controlshift", NULL, 0, NULL);
    CHECK(ctx != NULL);
    sl_error err;
    sl_error_clear(&err);
    CHECK(trig->init(&self, opts, ctx, &err) == 0);
    return 0;
}

/* The answer body is JSON: {"status": "...", ...}. */
static void check_answer(const sl_buf *answer)
{
    json_t *a = json_loadb(answer->data ? answer->data : "", answer->len, 0, NULL);
    CHECK(json_is_object(a));
    CHECK(json_is_string(json_object_get(a, "status")));
    json_decref(a);
}

static int receive(const char *body, size_t len, const char *sig, sl_job_spec *job, sl_buf *answer)
{
    req_impl impl = {sig};
    sl_webhook_req req;
    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.path = "/webhooks/controlshift";
    req.body = body;
    req.body_len = len;
    req.remote = "127.0.0.1";
    req.header = get_header;
    req.impl = &impl;
    memset(job, 0, sizeof(*job));
    sl_buf_init(&job->vars, 64 * 1024);
    sl_buf_reset(answer);
    int st = trig->receive(self, &req, job, answer);
    check_answer(answer);
    return st;
}

/* The job must carry the body's data.url and data.table unchanged (the body
 * parsed by jansson, as the trigger does: strings are then valid UTF-8, so
 * the JSON writer must reproduce them exactly). */
static void check_job(const char *body, size_t len, const sl_job_spec *job)
{
    json_t *in = json_loadb(body, len, 0, NULL);
    json_t *vars = json_loadb(job->vars.data ? job->vars.data : "", job->vars.len, 0, NULL);
    CHECK(json_is_object(in));
    CHECK(json_is_object(vars));
    json_t *data = json_object_get(in, "data");
    CHECK(json_equal(json_object_get(vars, "url"), json_object_get(data, "url")));
    CHECK(json_equal(json_object_get(vars, "table"), json_object_get(data, "table")));
    CHECK(json_is_string(json_object_get(vars, "mode")));
    CHECK(json_is_string(json_object_get(vars, "kind")));
    CHECK(job->idem_key[0] != '\0');
    CHECK(strcmp(job->order_key, json_string_value(json_object_get(data, "table"))) == 0);
    json_decref(vars);
    json_decref(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the server hands bodies NUL-terminated */
    char *body = malloc(size + 1);
    CHECK(body != NULL);
    if (size) {
        memcpy(body, data, size);
    }
    body[size] = '\0';

    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    CHECK(HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)body, size, mac,
               &maclen) != NULL);
    CHECK(maclen == 32);
    char sig[8 + 64 + 1] = "sha256:";
    for (unsigned i = 0; i < maclen; i++) {
        snprintf(sig + 7 + 2 * i, 3, "%02x", mac[i]);
    }

    sl_job_spec job;
    sl_buf answer;
    sl_buf_init(&answer, 64 * 1024);

    int st = receive(body, size, sig, &job, &answer);
    CHECK(st == 200 || st == 202 || st == 400);
    CHECK(!job.accept || st == 200 || st == 202);
    CHECK(job.accept || st != 202);
    if (job.accept) {
        check_job(body, size, &job);
    }
    sl_buf_free(&job.vars);

    /* the same signature as "sha256=<HEX>" is the same signature */
    char alt[sizeof(sig)];
    memcpy(alt, sig, sizeof(sig));
    alt[6] = '=';
    for (char *c = alt + 7; *c; c++) {
        *c = (char)toupper((unsigned char)*c);
    }
    CHECK(receive(body, size, alt, &job, &answer) == st);
    sl_buf_free(&job.vars);

    /* one flipped hex digit: refused before parsing */
    sig[7] = sig[7] == '0' ? '1' : '0';
    st = receive(body, size, sig, &job, &answer);
    CHECK(st == 401 && !job.accept);
    sl_buf_free(&job.vars);

    st = receive(body, size, NULL, &job, &answer);
    CHECK(st == 401 && !job.accept);
    sl_buf_free(&job.vars);

    sl_buf_free(&answer);
    free(body);
    return 0;
}
