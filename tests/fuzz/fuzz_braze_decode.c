/* libFuzzer harness: the braze sink's decode() on arbitrary response bodies.
 *
 * The bytes are the body of a 201 answer to a batch of 5 OK records. The
 * verdict must be SL_SEND_OK (the users landed whatever the body says), and
 * exactly the records named by an in-range integer errors[].index are
 * FAILED (computed here with jansson); every other index is ignored. The API
 * key never appears in a record's reason. The same body is then decoded as
 * a 400 and a 500 answer (verdicts FAIL and RETRY, message without the key). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config/config.h"
#include "core/ctx.h"
#include "core/registry.h"
#include "sluice/plugin.h"

#define NREC 5
#define API_KEY "fuzz-braze-api-key-0123"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_braze_decode: invariant failed: %s (%s:%d)\n", #cond, __FILE__,  \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const sl_sink_plugin *braze;
static sl_opts *opts;
static sl_ctx *ctx;
static void *self;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* decode warns about out-of-range indexes: keep the run quiet */
    sl_log_level = SL_LOG_ERROR;
    braze = sl_find_sink("braze");
    CHECK(braze != NULL && braze->decode != NULL);
    /* one instance for the campaign (reachable until exit, not a leak) */
    const char *pairs[] = {"url=http://127.0.0.1:9", ("api_key=" API_KEY)};
    sl_buf errs;
    sl_buf_init(&errs, 0);
    opts = sl_opts_from_pairs(braze->options, pairs, 2, &errs);
    CHECK(opts != NULL);
    sl_buf_free(&errs);
    ctx = sl_ctx_new("fuzz", "sink", "braze", NULL, 0, NULL);
    CHECK(ctx != NULL);
    sl_error err;
    sl_error_clear(&err);
    CHECK(braze->init(&self, opts, ctx, &err) == 0);
    return 0;
}

static void fill_batch(sl_batch *b)
{
    sl_batch_reset(b);
    for (int i = 0; i < NREC; i++) {
        sl_record *r = sl_batch_push(b);
        CHECK(r != NULL);
        char id[16];
        int n = snprintf(id, sizeof(id), "u%d", i);
        r->pos = (uint64_t)i * 10;
        r->line = (uint64_t)i + 2;
        CHECK(sl_record_add_str(r, "external_id", 11, id, (size_t)n) == 0);
        CHECK(sl_record_add_str(r, "email", 5, "a@example.com", 13) == 0);
    }
}

static sl_http_resp response(long status, const char *body, size_t len)
{
    sl_http_resp r;
    memset(&r, 0, sizeof(r));
    r.status = status;
    r.body = body;
    r.body_len = len;
    r.content_type = "application/json";
    r.retry_after_s = -1;
    r.attempts = 1;
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* sl_http_resp bodies are NUL-terminated */
    char *body = malloc(size + 1);
    CHECK(body != NULL);
    if (size) {
        memcpy(body, data, size);
    }
    body[size] = '\0';

    /* which records Braze's answer names, by jansson's reading of it */
    int want[NREC] = {0};
    json_t *root = json_loadb(body, size, 0, NULL);
    json_t *errors = json_object_get(root, "errors");
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e)
    {
        json_t *idx = json_object_get(e, "index");
        if (json_is_integer(idx) && json_integer_value(idx) >= 0 &&
            json_integer_value(idx) < NREC) {
            want[json_integer_value(idx)] = 1;
        }
    }
    json_decref(root);

    sl_batch b;
    sl_batch_init(&b);
    fill_batch(&b);
    sl_error err;
    sl_error_clear(&err);
    sl_http_resp r = response(201, body, size);
    CHECK(braze->decode(self, &b, &r, &err) == SL_SEND_OK);
    CHECK(b.n == NREC);
    for (int k = 0; k < NREC; k++) {
        const sl_record *rec = &b.recs[k];
        CHECK(rec->status == (want[k] ? SL_REC_FAILED : SL_REC_OK));
        if (want[k]) {
            CHECK(rec->stage == SL_STAGE_SINK);
            CHECK(rec->reason.len > 0);
            CHECK(strstr(sl_buf_cstr(&rec->reason), API_KEY) == NULL);
        }
        /* decode does not touch the record's data */
        CHECK(rec->nfields == 2);
    }

    /* the same body as an error answer */
    fill_batch(&b);
    sl_error_clear(&err);
    r = response(400, body, size);
    CHECK(braze->decode(self, &b, &r, &err) == SL_SEND_FAIL);
    CHECK(err.msg[0] != '\0' && strstr(err.msg, API_KEY) == NULL);
    sl_error_clear(&err);
    r = response(500, body, size);
    r.gave_up = 1;
    r.attempts = 8;
    CHECK(braze->decode(self, &b, &r, &err) == SL_SEND_FATAL);
    CHECK(err.msg[0] != '\0' && strstr(err.msg, API_KEY) == NULL);

    sl_batch_free(&b);
    free(body);
    return 0;
}
