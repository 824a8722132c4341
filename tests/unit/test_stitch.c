/* stitch sink: request bodies parsed back with jansson (table, keys, schema
 * built from declared and seen types, messages), sequences strictly
 * increasing across batches and reused by a split's halves, records dead-
 * lettered before sending (no key, over the size limit), and the verdict of
 * each answer. The token never appears in a message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "config/config.h"
#include "core/ctx.h"
#include "sluice/plugin.h"

extern const sl_sink_plugin sl_sink_stitch;

#define TOKEN "st-SECRET-token-0042"

typedef struct sink {
    void *self;
    sl_ctx *ctx;
    sl_opts *opts;
} sink;

static void sink_open(sink *s, const char *const *pairs, size_t n)
{
    sl_buf errs;
    sl_buf_init(&errs, 0);
    s->opts = sl_opts_from_pairs(sl_sink_stitch.options, pairs, n, &errs);
    if (!s->opts) {
        fail_msg("options rejected: %s", sl_buf_cstr(&errs));
    }
    sl_buf_free(&errs);
    s->ctx = sl_ctx_new("people", "sink", "stitch", NULL, 0, NULL);
    sl_error err = {0};
    if (sl_sink_stitch.init(&s->self, s->opts, s->ctx, &err) != 0) {
        fail_msg("init failed: %s", err.msg);
    }
    sl_secrets_clear();
}

static void sink_close(sink *s)
{
    sl_sink_stitch.destroy(s->self);
    sl_ctx_free(s->ctx);
    sl_opts_free(s->opts);
}

static const char *const base_pairs[] = {"url=https://api.example.com/", "token=" TOKEN,
                                         "table=people", "key_names=[email]",
                                         "schema={joined: date-time, age: integer}"};

static sl_record *push(sl_batch *b, const char *email)
{
    sl_record *r = sl_batch_push(b);
    assert_non_null(r);
    r->line = b->n + 1;
    if (email) {
        assert_int_equal(sl_record_add_str(r, "email", 5, email, strlen(email)), 0);
    }
    b->nsend++;
    return r;
}

static json_t *encode(sink *s, sl_batch *b, sl_http_req *req)
{
    sl_error err = {0};
    assert_int_equal(sl_sink_stitch.encode(s->self, b, req, &err), 0);
    if (req->body.len == 0) {
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(req->body.data, req->body.len, 0, &je);
    if (!root) {
        fail_msg("body is not JSON: %s", je.text);
    }
    return root;
}

static void test_encode_shape(void **state)
{
    (void)state;
    sink s;
    sink_open(&s, base_pairs, 5);
    sl_batch b;
    sl_batch_init(&b);
    sl_record *r = push(&b, "ann@example.org");
    sl_record_add_int(r, "age", 3, 41);
    sl_record_add_float(r, "score", 5, 1.5);
    sl_record_add_null(r, "nick", 4);
    r = push(&b, "bob@example.org");
    sl_record_add_str(r, "age", 3, "forty", 5); /* sent as is: Stitch decides */
    sl_record_add_int(r, "score", 5, 2);
    sl_record_add_json(r, "tags", 4, "[\"a\"]", 5);
    sl_http_req req;
    sl_http_req_init(&req);
    json_t *root = encode(&s, &b, &req);
    assert_string_equal(req.method, "POST");
    assert_string_equal(sl_buf_cstr(&req.url), "https://api.example.com/v2/import/batch");
    assert_non_null(strstr(sl_buf_cstr(&req.headers), "Authorization: Bearer " TOKEN));
    assert_string_equal(json_string_value(json_object_get(root, "table_name")), "people");
    assert_string_equal(json_string_value(json_array_get(json_object_get(root, "key_names"), 0)),
                        "email");
    json_t *props = json_object_get(json_object_get(root, "schema"), "properties");
    char *p = json_dumps(props, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(p, "{\"age\":{\"type\":[\"null\",\"integer\"]},"
                           "\"email\":{\"type\":\"string\"},"
                           "\"nick\":{\"type\":[\"null\",\"string\"]},"
                           "\"score\":{\"type\":\"number\"},"
                           "\"tags\":{\"type\":\"array\"}}");
    free(p);
    json_t *msgs = json_object_get(root, "messages");
    assert_int_equal(json_array_size(msgs), 2);
    json_t *m0 = json_array_get(msgs, 0);
    assert_string_equal(json_string_value(json_object_get(m0, "action")), "upsert");
    assert_true(json_is_integer(json_object_get(m0, "sequence")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(m0, "data"), "age")), 41);
    assert_true(json_is_null(json_object_get(json_object_get(m0, "data"), "nick")));
    json_decref(root);
    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

static int64_t seq_of(json_t *root, size_t i)
{
    return json_integer_value(
        json_object_get(json_array_get(json_object_get(root, "messages"), i), "sequence"));
}

static void test_sequence(void **state)
{
    (void)state;
    sink s;
    sink_open(&s, base_pairs, 5);
    sl_http_req req;
    sl_http_req_init(&req);
    int64_t prev = 0, first_b1 = 0;
    for (uint64_t k = 1; k <= 50; k++) {
        sl_batch b;
        sl_batch_init(&b);
        b.seq = k;
        push(&b, "a@example.org");
        push(&b, "b@example.org");
        json_t *root = encode(&s, &b, &req);
        int64_t s0 = seq_of(root, 0), s1 = seq_of(root, 1);
        assert_true(s0 > prev);
        assert_true(s1 > s0);
        assert_true(s1 < ((int64_t)1 << 53));
        if (k == 1) {
            first_b1 = s0;
        }
        prev = s1;
        json_decref(root);
        sl_batch_free(&b);
    }
    /* a half of batch 1 sent again later (isolating a refused record) keeps
     * batch 1's block: below every later batch */
    sl_batch h;
    sl_batch_init(&h);
    h.seq = 1;
    push(&h, "b@example.org");
    json_t *root = encode(&s, &h, &req);
    assert_int_equal(seq_of(root, 0), first_b1);
    json_decref(root);
    sl_batch_free(&h);
    sl_http_req_free(&req);
    sink_close(&s);
}

static void test_records_refused_before_sending(void **state)
{
    (void)state;
    static const char *const pairs[] = {"token=" TOKEN, "table=people", "key_names=[email]",
                                        "max_request_bytes=64KB"};
    sink s;
    sink_open(&s, pairs, 4);
    sl_batch b;
    sl_batch_init(&b);
    push(&b, NULL); /* no key */
    sl_record *big = push(&b, "big@example.org");
    char *pad = malloc(70000);
    memset(pad, 'x', 70000);
    sl_record_add_str(big, "bio", 3, pad, 70000);
    free(pad);
    push(&b, "ok@example.org");
    sl_record *nul = push(&b, "n@example.org");
    sl_record_add_null(nul, "email", 5);
    nul->fields[0].type = SL_T_NULL; /* key present but null */
    sl_http_req req;
    sl_http_req_init(&req);
    json_t *root = encode(&s, &b, &req);
    assert_int_equal(json_array_size(json_object_get(root, "messages")), 1);
    assert_int_equal(b.recs[0].status, SL_REC_FAILED);
    assert_non_null(strstr(sl_buf_cstr(&b.recs[0].reason), "key column 'email' is missing"));
    assert_int_equal(b.recs[1].status, SL_REC_FAILED);
    assert_non_null(strstr(sl_buf_cstr(&b.recs[1].reason), "must stay under 65536 bytes"));
    assert_int_equal(b.recs[2].status, SL_REC_OK);
    assert_int_equal(b.recs[3].status, SL_REC_FAILED);
    assert_true(req.body.len < 65536);
    json_decref(root);
    /* nothing left: no request */
    sl_batch_reset(&b);
    push(&b, NULL);
    assert_null(encode(&s, &b, &req));
    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

static sl_http_resp resp(long status, const char *body)
{
    sl_http_resp r;
    memset(&r, 0, sizeof(r));
    r.status = status;
    r.body = body;
    r.body_len = strlen(body);
    r.retry_after_s = -1;
    r.attempts = 1;
    return r;
}

static void test_decode(void **state)
{
    (void)state;
    sink s;
    sink_open(&s, base_pairs, 5);
    sl_batch b;
    sl_batch_init(&b);
    sl_error err = {0};
    sl_http_resp r = resp(201, "{\"status\":\"OK\"}");
    assert_int_equal(sl_sink_stitch.decode(s.self, &b, &r, &err), SL_SEND_OK);
    r = resp(400, "{\"error\":\"Record 3 for table people did not conform to schema: #/age: "
                  "expected type: integer, found: string\"}");
    assert_int_equal(sl_sink_stitch.decode(s.self, &b, &r, &err), SL_SEND_SPLIT);
    assert_non_null(strstr(err.msg, "#/age: expected type: integer, found: string"));
    r = resp(413, "too big");
    assert_int_equal(sl_sink_stitch.decode(s.self, &b, &r, &err), SL_SEND_SPLIT);
    r = resp(401, "{\"error\":\"Not Authorized\"}");
    assert_int_equal(sl_sink_stitch.decode(s.self, &b, &r, &err), SL_SEND_FATAL);
    assert_null(strstr(err.msg, TOKEN));
    r = resp(403, "");
    assert_int_equal(sl_sink_stitch.decode(s.self, &b, &r, &err), SL_SEND_FATAL);
    r = resp(503, "<html>");
    assert_int_equal(sl_sink_stitch.decode(s.self, &b, &r, &err), SL_SEND_RETRY);
    r.gave_up = 1;
    assert_int_equal(sl_sink_stitch.decode(s.self, &b, &r, &err), SL_SEND_FATAL);
    sl_batch_free(&b);
    sink_close(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_shape),
        cmocka_unit_test(test_sequence),
        cmocka_unit_test(test_records_refused_before_sending),
        cmocka_unit_test(test_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
