/* braze sink (and the generic http sink, which shares its encoding rules):
 * request bodies parsed back with jansson and checked for exact JSON types,
 * headers, skipping, per-record error mapping and the verdict of every kind
 * of answer. The API key must never appear in a message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "config/config.h"
#include "core/ctx.h"
#include "sluice/plugin.h"

extern const sl_sink_plugin sl_sink_braze;
extern const sl_sink_plugin sl_sink_http;

#define KEY "sk-test-SECRET-0123456789"
#define BASE "https://rest.example.com"

typedef struct sink {
    const sl_sink_plugin *p;
    void *self;
    sl_ctx *ctx;
    sl_opts *opts;
} sink;

static void sink_open(sink *s, const sl_sink_plugin *p, const char *const *pairs, size_t n)
{
    sl_buf errs;
    sl_buf_init(&errs, 0);
    s->p = p;
    s->opts = sl_opts_from_pairs(p->options, pairs, n, &errs);
    if (!s->opts) {
        fail_msg("options rejected: %s", sl_buf_cstr(&errs));
    }
    sl_buf_free(&errs);
    s->ctx = sl_ctx_new("users", "sink", p->name, NULL, 0, NULL);
    assert_non_null(s->ctx);
    sl_error err = {0};
    if (p->init(&s->self, s->opts, s->ctx, &err) != 0) {
        fail_msg("init failed: %s", err.msg);
    }
    /* Without the redactor's help: messages must not contain the key at all. */
    sl_secrets_clear();
}

static void sink_close(sink *s)
{
    s->p->destroy(s->self);
    sl_ctx_free(s->ctx);
    sl_opts_free(s->opts);
}

static const char *const braze_pairs[] = {"url=" BASE "/", "api_key=" KEY};

static sl_record *push(sl_batch *b, uint64_t line, const char *external_id)
{
    sl_record *r = sl_batch_push(b);
    assert_non_null(r);
    r->line = line;
    if (external_id) {
        assert_int_equal(sl_record_add_str(r, "external_id", 11, external_id, strlen(external_id)),
                         0);
    }
    return r;
}

static void add_str(sl_record *r, const char *name, const char *v)
{
    assert_int_equal(sl_record_add_str(r, name, (uint32_t)strlen(name), v, strlen(v)), 0);
}

static void add_omitted(sl_record *r, const char *name)
{
    add_str(r, name, "");
    r->fields[r->nfields - 1].flags |= SL_FIELD_OMIT;
}

static json_t *body_json(const sl_http_req *req)
{
    json_error_t e;
    json_t *root = json_loadb(req->body.data, req->body.len, 0, &e);
    if (!root) {
        fail_msg("body is not JSON (%s): %.*s", e.text, (int)req->body.len, req->body.data);
    }
    return root;
}

static void assert_no_key(const char *msg)
{
    if (strstr(msg, KEY) || strstr(msg, "SECRET")) {
        fail_msg("message leaks the API key: %s", msg);
    }
}

/* ------------------------------------------------------------ encode */

static void test_encode_types_and_headers(void **state)
{
    sink s;
    sink_open(&s, &sl_sink_braze, braze_pairs, 2);
    sl_batch b;
    sl_batch_init(&b);

    /* 0: key inferred as an integer, attributes of every type */
    sl_record *r = push(&b, 2, NULL);
    assert_int_equal(sl_record_add_int(r, "external_id", 11, 123), 0);
    assert_int_equal(sl_record_add_int(r, "age", 3, 42), 0);
    assert_int_equal(sl_record_add_float(r, "score", 5, 0.5), 0);
    assert_int_equal(sl_record_add_bool(r, "vip", 3, 1), 0);
    assert_int_equal(sl_record_add_null(r, "gone", 4), 0);
    assert_int_equal(sl_record_add_json(r, "tags", 4, "[1,\"a\"]", 7), 0);
    add_str(r, "zip", "02134");
    add_omitted(r, "nick");
    /* 1: plain string key, one attribute */
    r = push(&b, 3, "123");
    add_str(r, "first_name", "Zo\xC3\xAB \"Z\"");
    /* 2: nothing besides the key: skipped */
    r = push(&b, 4, "u3");
    add_omitted(r, "a");
    add_omitted(r, "b");
    /* 3: rejected by a step: not sent, not touched */
    r = push(&b, 5, "u4");
    add_str(r, "age", "x");
    sl_record_reject(r, 0, "line 5: column 'age': cannot cast 'x' to integer");
    /* 4, 5, 6: unusable keys */
    r = push(&b, 6, "  ");
    add_str(r, "a", "1");
    r = push(&b, 7, NULL);
    assert_int_equal(sl_record_add_null(r, "external_id", 11), 0);
    add_str(r, "a", "1");
    r = push(&b, 8, "");
    r->fields[0].flags |= SL_FIELD_OMIT;
    add_str(r, "a", "1");
    /* 7: float and boolean keys become their text */
    r = push(&b, 9, NULL);
    assert_int_equal(sl_record_add_float(r, "external_id", 11, 1.5), 0);
    add_str(r, "a", "1");
    r = push(&b, 10, NULL);
    assert_int_equal(sl_record_add_bool(r, "external_id", 11, 1), 0);
    add_str(r, "a", "1");

    sl_http_req req;
    sl_http_req_init(&req);
    sl_error err = {0};
    assert_int_equal(sl_sink_braze.encode(s.self, &b, &req, &err), 0);

    assert_string_equal(req.method, "POST");
    assert_string_equal(sl_buf_cstr(&req.url), BASE "/users/track");
    const char *h = sl_buf_cstr(&req.headers);
    assert_non_null(strstr(h, "Authorization: Bearer " KEY "\n"));
    assert_non_null(strstr(h, "Content-Type: application/json\n"));
    assert_non_null(strstr(h, "X-Braze-Bulk: true\n"));

    json_t *root = body_json(&req);
    assert_int_equal(json_object_size(root), 1);
    json_t *attrs = json_object_get(root, "attributes");
    assert_true(json_is_array(attrs));
    assert_int_equal(json_array_size(attrs), 4);

    json_t *o = json_array_get(attrs, 0);
    assert_true(json_is_string(json_object_get(o, "external_id")));
    assert_string_equal(json_string_value(json_object_get(o, "external_id")), "123");
    assert_true(json_is_integer(json_object_get(o, "age")));
    assert_int_equal(json_integer_value(json_object_get(o, "age")), 42);
    assert_true(json_is_real(json_object_get(o, "score")));
    assert_true(json_real_value(json_object_get(o, "score")) == 0.5);
    assert_true(json_is_true(json_object_get(o, "vip")));
    assert_true(json_is_null(json_object_get(o, "gone")));
    json_t *tags = json_object_get(o, "tags");
    assert_true(json_is_array(tags));
    assert_int_equal(json_integer_value(json_array_get(tags, 0)), 1);
    assert_string_equal(json_string_value(json_array_get(tags, 1)), "a");
    assert_string_equal(json_string_value(json_object_get(o, "zip")), "02134");
    assert_null(json_object_get(o, "nick"));
    assert_int_equal(json_object_size(o), 7);
    /* the key comes first in each object */
    assert_int_equal(strncmp(req.body.data, "{\"attributes\":[{\"external_id\":\"123\",", 36), 0);

    o = json_array_get(attrs, 1);
    assert_string_equal(json_string_value(json_object_get(o, "external_id")), "123");
    assert_string_equal(json_string_value(json_object_get(o, "first_name")), "Zo\xC3\xAB \"Z\"");
    o = json_array_get(attrs, 2);
    assert_string_equal(json_string_value(json_object_get(o, "external_id")), "1.5");
    o = json_array_get(attrs, 3);
    assert_string_equal(json_string_value(json_object_get(o, "external_id")), "true");
    json_decref(root);

    assert_int_equal(b.recs[0].status, SL_REC_OK);
    assert_int_equal(b.recs[1].status, SL_REC_OK);
    assert_int_equal(b.recs[2].status, SL_REC_SKIP);
    assert_int_equal(b.recs[3].status, SL_REC_REJECTED);
    assert_string_equal(sl_buf_cstr(&b.recs[3].reason),
                        "line 5: column 'age': cannot cast 'x' to integer");
    for (int i = 4; i <= 6; i++) {
        assert_int_equal(b.recs[i].status, SL_REC_FAILED);
        assert_int_equal(b.recs[i].stage, SL_STAGE_SINK);
        assert_string_equal(sl_buf_cstr(&b.recs[i].reason),
                            i == 5 ? "external_id is null: not sent (Braze would merge every such "
                                     "row into one user)"
                                   : "empty external_id");
    }
    assert_int_equal(b.recs[7].status, SL_REC_OK);
    assert_int_equal(b.recs[8].status, SL_REC_OK);

    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

/* A key is sent as the exact text of its cell or not at all: bytes that are
 * not UTF-8 would be repaired to U+FFFD (two ids, one user) and the text
 * null would make every such row one user named "null". */
static void test_encode_unfaithful_keys(void **state)
{
    static const struct {
        const char *id;
        const char *reason; /* NULL: sent as is */
    } cases[] = {
        {"ab\xFF", "external_id is not valid UTF-8 (byte 0xFF at offset 2)"},
        {"ab\xFE", "external_id is not valid UTF-8 (byte 0xFE at offset 2)"},
        {"\xC0\x80x", "external_id is not valid UTF-8 (byte 0xC0 at offset 0)"},     /* overlong */
        {"a\xED\xA0\x80", "external_id is not valid UTF-8 (byte 0xED at offset 1)"}, /* surrogate */
        {"Zo\xC3", "external_id is not valid UTF-8 (byte 0xC3 at offset 2)"},        /* cut short */
        {"null", "external_id is the text 'null'"},
        {"NULL", "external_id is the text 'NULL'"},
        {" Null ", "external_id is the text ' Null '"},
        {"Zo\xC3\xAB", NULL},
        {"nullable", NULL},
        {" 12 ", NULL}, /* exact text, spaces included */
        {"\xF0\x9F\x98\x80", NULL},
    };
    const size_t n = sizeof(cases) / sizeof(cases[0]);
    sink s;
    sink_open(&s, &sl_sink_braze, braze_pairs, 2);
    sl_batch b;
    sl_batch_init(&b);
    for (size_t i = 0; i < n; i++) {
        sl_record *r = push(&b, 2 + i, cases[i].id);
        add_str(r, "a", "1");
    }
    sl_http_req req;
    sl_http_req_init(&req);
    sl_error err = {0};
    assert_int_equal(sl_sink_braze.encode(s.self, &b, &req, &err), 0);
    json_t *root = body_json(&req);
    json_t *attrs = json_object_get(root, "attributes");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (cases[i].reason) {
            assert_int_equal(b.recs[i].status, SL_REC_FAILED);
            const char *why = sl_buf_cstr(&b.recs[i].reason);
            if (strncmp(why, cases[i].reason, strlen(cases[i].reason)) != 0) {
                fail_msg("case %zu: reason '%s', expected it to start with '%s'", i, why,
                         cases[i].reason);
            }
            continue;
        }
        assert_int_equal(b.recs[i].status, SL_REC_OK);
        json_t *o = json_array_get(attrs, k++);
        assert_string_equal(json_string_value(json_object_get(o, "external_id")), cases[i].id);
    }
    assert_int_equal(json_array_size(attrs), k);
    /* nothing was repaired into the body */
    assert_null(strstr(req.body.data, "\xEF\xBF\xBD"));
    json_decref(root);

    /* a decimal key keeps the text it had in the cell */
    sl_batch_reset(&b);
    sl_record *r = push(&b, 20, NULL);
    assert_int_equal(sl_record_add_str(r, "external_id", 11, "1.50", 4), 0);
    r->fields[0].toff = r->fields[0].v.s.off;
    r->fields[0].tlen = 4;
    r->fields[0].type = SL_T_FLOAT;
    r->fields[0].v.f = 1.5;
    r->fields[0].flags |= SL_FIELD_NUMTEXT;
    add_str(r, "a", "1");
    assert_int_equal(sl_sink_braze.encode(s.self, &b, &req, &err), 0);
    assert_non_null(strstr(req.body.data, "{\"external_id\":\"1.50\","));

    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

/* Braze refuses a whole request holding \u0000: a record with a NUL in any
 * value it would send fails alone, before the request; the rest is sent. */
static void test_encode_nul_fails_one_record(void **state)
{
    sink s;
    sink_open(&s, &sl_sink_braze, braze_pairs, 2);
    sl_batch b;
    sl_batch_init(&b);
    sl_record *r = push(&b, 2, "u1");
    assert_int_equal(sl_record_add_str(r, "nick", 4, "a\0b", 3), 0);
    r = push(&b, 3, "u2");
    assert_int_equal(sl_record_add_json(r, "tags", 4, "[\"x\\u0000\"]", 11), 0);
    r = push(&b, 4, NULL);
    assert_int_equal(sl_record_add_str(r, "external_id", 11, "k\0", 2), 0);
    add_str(r, "a", "1");
    r = push(&b, 5, "u4"); /* an escaped backslash before u0000 is no NUL */
    assert_int_equal(sl_record_add_json(r, "tags", 4, "[\"\\\\u0000\"]", 11), 0);
    r = push(&b, 6, "u5");
    add_str(r, "nick", "ok");
    r = push(&b, 7, "u6"); /* an omitted cell is not sent, so its NUL does not matter */
    assert_int_equal(sl_record_add_str(r, "gone", 4, "\0", 1), 0);
    r->fields[r->nfields - 1].flags |= SL_FIELD_OMIT;
    add_str(r, "nick", "ok");

    sl_http_req req;
    sl_http_req_init(&req);
    sl_error err = {0};
    assert_int_equal(sl_sink_braze.encode(s.self, &b, &req, &err), 0);
    assert_int_equal(b.recs[0].status, SL_REC_FAILED);
    assert_string_equal(sl_buf_cstr(&b.recs[0].reason),
                        "column 'nick' holds a NUL character at offset 1: not sent (Braze refuses "
                        "a request holding \\u0000, so it would fail its whole batch)");
    assert_int_equal(b.recs[1].status, SL_REC_FAILED);
    assert_non_null(strstr(sl_buf_cstr(&b.recs[1].reason), "column 'tags' holds a NUL"));
    assert_int_equal(b.recs[2].status, SL_REC_FAILED);
    assert_non_null(strstr(sl_buf_cstr(&b.recs[2].reason), "column 'external_id' holds a NUL"));
    assert_int_equal(b.recs[3].status, SL_REC_OK);
    assert_int_equal(b.recs[4].status, SL_REC_OK);
    assert_int_equal(b.recs[5].status, SL_REC_OK);
    assert_null(strstr(req.body.data, "a\\u0000b"));
    assert_null(strstr(req.body.data, "x\\u0000"));
    json_t *root = body_json(&req);
    json_t *attrs = json_object_get(root, "attributes");
    assert_int_equal(json_array_size(attrs), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(attrs, 0), "external_id")),
                        "u4");
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(json_array_get(attrs, 0), "tags"), 0)),
        "\\u0000");
    json_decref(root);
    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

/* Encoding into a reused request replaces what was there. */
static void test_encode_reuses_request(void **state)
{
    sink s;
    sink_open(&s, &sl_sink_braze, braze_pairs, 2);
    sl_batch b;
    sl_batch_init(&b);
    sl_http_req req;
    sl_http_req_init(&req);
    sl_error err = {0};
    for (int round = 0; round < 3; round++) {
        sl_batch_reset(&b);
        for (int i = 0; i < 75; i++) {
            char id[16];
            snprintf(id, sizeof(id), "r%d-%d", round, i);
            sl_record *r = push(&b, (uint64_t)i + 2, id);
            add_str(r, "n", id);
        }
        assert_int_equal(sl_sink_braze.encode(s.self, &b, &req, &err), 0);
        json_t *root = body_json(&req);
        json_t *attrs = json_object_get(root, "attributes");
        assert_int_equal(json_array_size(attrs), 75);
        char want[16];
        snprintf(want, sizeof(want), "r%d-74", round);
        assert_string_equal(json_string_value(json_object_get(json_array_get(attrs, 74), "n")),
                            want);
        json_decref(root);
        /* one set of headers, not one per round */
        const char *h = sl_buf_cstr(&req.headers);
        const char *auth = strstr(h, "Authorization");
        assert_non_null(auth);
        assert_null(strstr(auth + 1, "Authorization"));
        assert_string_equal(sl_buf_cstr(&req.url), BASE "/users/track");
    }
    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

static void test_encode_nothing_to_send(void **state)
{
    sink s;
    sink_open(&s, &sl_sink_braze, braze_pairs, 2);
    sl_batch b;
    sl_batch_init(&b);
    sl_record *r = push(&b, 2, "u1");
    add_omitted(r, "a");
    r = push(&b, 3, "u2");
    sl_record_reject(r, SL_STAGE_SOURCE, "line 3: bad row");
    sl_http_req req;
    sl_http_req_init(&req);
    sl_buf_puts(&req.body, "stale");
    sl_error err = {0};
    assert_int_equal(sl_sink_braze.encode(s.self, &b, &req, &err), 0);
    assert_int_equal(req.body.len, 0);
    assert_int_equal(b.recs[0].status, SL_REC_SKIP);
    assert_int_equal(b.recs[1].status, SL_REC_REJECTED);
    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

static void test_encode_options(void **state)
{
    sink s;
    const char *pairs[] = {"url=http://127.0.0.1:9/users/track", ("api_key=" KEY), "bulk=false",
                           "skip_empty=false", "key=user_id"};
    sink_open(&s, &sl_sink_braze, pairs, 5);
    sl_batch b;
    sl_batch_init(&b);
    sl_record *r = push(&b, 2, NULL);
    add_str(r, "user_id", "42");
    sl_http_req req;
    sl_http_req_init(&req);
    sl_error err = {0};
    assert_int_equal(sl_sink_braze.encode(s.self, &b, &req, &err), 0);
    /* the endpoint is not appended twice */
    assert_string_equal(sl_buf_cstr(&req.url), "http://127.0.0.1:9/users/track");
    assert_null(strstr(sl_buf_cstr(&req.headers), "X-Braze-Bulk"));
    assert_string_equal(req.body.data, "{\"attributes\":[{\"user_id\":\"42\"}]}");
    assert_int_equal(b.recs[0].status, SL_REC_OK);
    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

/* ------------------------------------------------------------ decode */

static sl_http_resp resp(long status, const char *body)
{
    sl_http_resp r;
    memset(&r, 0, sizeof(r));
    r.status = status;
    r.body = body;
    r.body_len = strlen(body);
    r.content_type = "application/json";
    r.retry_after_s = -1;
    r.attempts = 1;
    return r;
}

/* Sent: u0, u2, u4 (u1 rejected upstream, u3 skipped in encode). Braze's
 * index 1 is u2, index 2 is u4. */
static void test_decode_error_index_mapping(void **state)
{
    sink s;
    sink_open(&s, &sl_sink_braze, braze_pairs, 2);
    sl_batch b;
    sl_batch_init(&b);
    for (int i = 0; i < 5; i++) {
        char id[8];
        snprintf(id, sizeof(id), "u%d", i);
        sl_record *r = push(&b, (uint64_t)i + 2, id);
        if (i == 3) {
            add_omitted(r, "a");
        } else {
            add_str(r, "a", "1");
        }
    }
    sl_record_reject(&b.recs[1], 0, "line 3: rejected upstream");
    sl_http_req req;
    sl_http_req_init(&req);
    sl_error err = {0};
    assert_int_equal(sl_sink_braze.encode(s.self, &b, &req, &err), 0);
    assert_int_equal(b.recs[3].status, SL_REC_SKIP);

    sl_http_resp rs = resp(201, "{\"message\":\"success\",\"errors\":["
                                "{\"type\":\"'email' is invalid\",\"input_array\":\"attributes\","
                                "\"index\":1},"
                                "{\"type\":\"out of range\",\"input_array\":\"attributes\","
                                "\"index\":7},"
                                "{\"type\":\"no index\"}]}");
    assert_int_equal(sl_sink_braze.decode(s.self, &b, &rs, &err), SL_SEND_OK);
    assert_int_equal(b.recs[0].status, SL_REC_OK);
    assert_int_equal(b.recs[1].status, SL_REC_REJECTED);
    assert_string_equal(sl_buf_cstr(&b.recs[1].reason), "line 3: rejected upstream");
    assert_int_equal(b.recs[2].status, SL_REC_FAILED);
    assert_int_equal(b.recs[2].stage, SL_STAGE_SINK);
    assert_string_equal(sl_buf_cstr(&b.recs[2].reason),
                        "Braze rejected the attributes: 'email' is invalid");
    assert_int_equal(b.recs[3].status, SL_REC_SKIP);
    assert_int_equal(b.recs[4].status, SL_REC_OK);

    /* several errors in one answer, mapped against the same request */
    sl_record_reset(&b.recs[2]);
    b.recs[2].status = SL_REC_OK;
    sl_http_resp rs2 = resp(201, "{\"errors\":[{\"type\":\"a\",\"index\":2},"
                                 "{\"type\":\"b\",\"index\":0}]}");
    assert_int_equal(sl_sink_braze.decode(s.self, &b, &rs2, &err), SL_SEND_OK);
    assert_int_equal(b.recs[0].status, SL_REC_FAILED);
    assert_string_equal(sl_buf_cstr(&b.recs[0].reason), "Braze rejected the attributes: b");
    assert_int_equal(b.recs[2].status, SL_REC_OK);
    assert_int_equal(b.recs[4].status, SL_REC_FAILED);
    assert_string_equal(sl_buf_cstr(&b.recs[4].reason), "Braze rejected the attributes: a");

    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

static void test_decode_success_bodies(void **state)
{
    sink s;
    sink_open(&s, &sl_sink_braze, braze_pairs, 2);
    sl_batch b;
    sl_batch_init(&b);
    add_str(push(&b, 2, "u0"), "a", "1");
    const char *bodies[] = {"{\"message\":\"success\"}",
                            "<html>ok</html>",
                            "",
                            "[1,2]",
                            "{\"errors\":\"not an array\"}",
                            "{\"errors\":[{\"index\":\"0\"}]}"};
    /* 1..4 cannot be read: their per-record errors are unknown, and the run
     * says so (partial) while the users count as delivered */
    const int unread_after[] = {0, 1, 2, 3, 4, 4};
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        sl_http_resp rs = resp(i % 2 ? 200 : 201, bodies[i]);
        sl_error err = {0};
        assert_int_equal(sl_sink_braze.decode(s.self, &b, &rs, &err), SL_SEND_OK);
        assert_int_equal(b.recs[0].status, SL_REC_OK);
        char want[256] = "";
        if (unread_after[i]) {
            snprintf(want, sizeof(want),
                     "Braze accepted %d request%s (%d users) with an answer that could not be "
                     "read: their per-record errors, if any, are unknown",
                     unread_after[i], unread_after[i] == 1 ? "" : "s", unread_after[i]);
        }
        assert_string_equal(s.ctx->partial, want);
    }
    /* a body cut at the response cap: the errors it names are lost, not guessed */
    add_str(push(&b, 3, "u1"), "a", "1");
    sl_http_resp rs = resp(201, "{\"message\":\"success\",\"errors\":[{\"type\":\"bad\","
                                "\"input_array\":\"attributes\",\"index\":1}");
    sl_error err = {0};
    assert_int_equal(sl_sink_braze.decode(s.self, &b, &rs, &err), SL_SEND_OK);
    assert_int_equal(b.recs[0].status, SL_REC_OK);
    assert_int_equal(b.recs[1].status, SL_REC_OK);
    assert_non_null(strstr(s.ctx->partial, "5 requests (6 users)"));
    sl_batch_free(&b);
    sink_close(&s);
}

static void test_decode_verdicts(void **state)
{
    sink s;
    sink_open(&s, &sl_sink_braze, braze_pairs, 2);
    sl_batch b;
    sl_batch_init(&b);
    add_str(push(&b, 2, "u0"), "a", "1");
    sl_error err = {0};

    sl_http_resp rs = resp(400, "{\"message\":\"Valid data must be provided in the "
                                "'attributes' field.\",\"errors\":[]}");
    assert_int_equal(sl_sink_braze.decode(s.self, &b, &rs, &err), SL_SEND_FAIL);
    assert_string_equal(err.msg,
                        "Braze answered 400: Valid data must be provided in the 'attributes' "
                        "field.");

    char html[600];
    snprintf(html, sizeof(html), "<html>\n<body>%0500d</body></html>", 0);
    rs = resp(400, html);
    assert_int_equal(sl_sink_braze.decode(s.self, &b, &rs, &err), SL_SEND_FAIL);
    assert_non_null(strstr(err.msg, "Braze answered 400: <html> <body>000"));
    assert_true(strlen(err.msg) < 260);

    rs = resp(401, "{\"message\":\"Invalid API Key: " KEY "\"}");
    assert_int_equal(sl_sink_braze.decode(s.self, &b, &rs, &err), SL_SEND_FATAL);
    assert_string_equal(err.msg, "Braze rejected the API key (HTTP 401) at " BASE "/users/track");
    assert_no_key(err.msg);

    rs = resp(403, "");
    assert_int_equal(sl_sink_braze.decode(s.self, &b, &rs, &err), SL_SEND_FATAL);
    assert_non_null(strstr(err.msg, "(HTTP 403)"));

    rs = resp(404, "Not Found");
    assert_int_equal(sl_sink_braze.decode(s.self, &b, &rs, &err), SL_SEND_FATAL);
    assert_non_null(strstr(err.msg, "HTTP 404 at " BASE "/users/track"));
    assert_non_null(strstr(err.msg, "url"));
    rs = resp(405, "");
    assert_int_equal(sl_sink_braze.decode(s.self, &b, &rs, &err), SL_SEND_FATAL);

    rs = resp(502, "<html><head><title>502 Bad Gateway</title></head></html>");
    rs.gave_up = 1;
    rs.attempts = 8;
    assert_int_equal(sl_sink_braze.decode(s.self, &b, &rs, &err), SL_SEND_FATAL);
    assert_non_null(strstr(err.msg, "gave up after 8 attempts: HTTP 502"));
    assert_non_null(strstr(err.msg, "502 Bad Gateway"));

    rs = resp(429, "{\"message\":\"rate limited\"}");
    rs.gave_up = 1;
    rs.attempts = 8;
    assert_int_equal(sl_sink_braze.decode(s.self, &b, &rs, &err), SL_SEND_FATAL);
    assert_non_null(strstr(err.msg, "HTTP 429"));

    rs = resp(0, "");
    rs.gave_up = 1;
    rs.attempts = 8;
    snprintf(rs.error, sizeof(rs.error), "Connection refused");
    assert_int_equal(sl_sink_braze.decode(s.self, &b, &rs, &err), SL_SEND_FATAL);
    assert_non_null(strstr(err.msg, "Connection refused"));
    assert_non_null(strstr(err.msg, "8 attempts"));

    rs = resp(422, "{\"message\":\"unprocessable\"}");
    assert_int_equal(sl_sink_braze.decode(s.self, &b, &rs, &err), SL_SEND_FAIL);
    assert_non_null(strstr(err.msg, "422"));
    assert_non_null(strstr(err.msg, "unprocessable"));

    /* no verdict marked the record itself: the engine dead-letters the batch */
    assert_int_equal(b.recs[0].status, SL_REC_OK);
    sl_batch_free(&b);
    sink_close(&s);
}

/* ------------------------------------------------------------ the rest */

static void test_columns(void **state)
{
    sink s;
    sink_open(&s, &sl_sink_braze, braze_pairs, 2);
    sl_error err = {0};
    const char *good[] = {"external_id", "email"};
    assert_int_equal(sl_sink_braze.columns(s.self, good, 2, &err), 0);
    const char *second[] = {"email", "external_id"};
    assert_true(sl_sink_braze.columns(s.self, second, 2, &err) < 0);
    assert_string_equal(err.msg,
                        "input header: first column must be 'external_id' (found 'email')");
    const char *none[] = {"email", "name"};
    assert_true(sl_sink_braze.columns(s.self, none, 2, &err) < 0);
    assert_string_equal(err.msg, "input has no 'external_id' column");
    sink_close(&s);

    const char *pairs[] = {"url=" BASE, "api_key=" KEY, "key_first=false"};
    sink_open(&s, &sl_sink_braze, pairs, 3);
    assert_int_equal(sl_sink_braze.columns(s.self, second, 2, &err), 0);
    assert_true(sl_sink_braze.columns(s.self, none, 2, &err) < 0);
    assert_string_equal(err.msg, "input has no 'external_id' column");
    sink_close(&s);
}

static void test_summarize_and_defaults(void **state)
{
    sink s;
    sink_open(&s, &sl_sink_braze, braze_pairs, 2);
    sl_buf out;
    sl_buf_init(&out, 0);
    sl_jw w;
    sl_jw_init(&w, &out);
    sl_jw_obj_open(&w);
    sl_sink_braze.summarize(s.self, &w, 1234, 5, 1);
    sl_jw_obj_close(&w);
    assert_string_equal(out.data, "{\"usersProcessed\":1234}");
    sl_buf_free(&out);
    sink_close(&s);

    const sl_sink_defaults *d = &sl_sink_braze.defaults;
    assert_int_equal(d->batch_records, 75);
    assert_int_equal(d->max_batch_records, 75);
    assert_int_equal(d->batch_bytes, 4 * 1024 * 1024);
    assert_int_equal(d->concurrency, 8);
    assert_true(d->rate_per_sec == 1000.0 && d->rate_burst == 3000.0);
}

static void test_init_errors(void **state)
{
    const char *cases[][2] = {
        {"url=rest.example.com", "not an http(s) URL"},
        {"url=ftp://rest.example.com", "not an http(s) URL"},
        {"url=" BASE "?api_key=" KEY, "without a query"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *pairs[] = {cases[i][0], "api_key=" KEY};
        sl_buf errs;
        sl_buf_init(&errs, 0);
        sl_opts *o = sl_opts_from_pairs(sl_sink_braze.options, pairs, 2, &errs);
        assert_non_null(o);
        sl_secrets_clear();
        void *self = NULL;
        sl_error err = {0};
        assert_true(sl_sink_braze.init(&self, o, NULL, &err) < 0);
        assert_null(self);
        if (!strstr(err.msg, cases[i][1])) {
            fail_msg("'%s': unexpected message: %s", cases[i][0], err.msg);
        }
        assert_no_key(err.msg);
        sl_opts_free(o);
        sl_buf_free(&errs);
    }
    /* both required */
    const char *missing[] = {"url=" BASE};
    sl_buf errs;
    sl_buf_init(&errs, 0);
    assert_null(sl_opts_from_pairs(sl_sink_braze.options, missing, 1, &errs));
    assert_non_null(strstr(sl_buf_cstr(&errs), "api_key"));
    sl_buf_free(&errs);
}

/* ------------------------------------------------------------ http sink */

static sl_batch *http_batch(sl_batch *b)
{
    sl_batch_init(b);
    sl_record *r = push(b, 2, "a1");
    assert_int_equal(sl_record_add_int(r, "n", 1, 5), 0);
    add_omitted(r, "skip");
    assert_int_equal(sl_record_add_json(r, "arr", 3, "[true]", 6), 0);
    r = push(b, 3, "a2");
    sl_record_reject(r, 0, "line 3: no");
    r = push(b, 4, "a3");
    assert_int_equal(sl_record_add_null(r, "n", 1), 0);
    return b;
}

static void http_encode_with(const char *const *pairs, size_t n, const char *want_body,
                             const char *want_header)
{
    sink s;
    sink_open(&s, &sl_sink_http, pairs, n);
    sl_batch b;
    http_batch(&b);
    sl_http_req req;
    sl_http_req_init(&req);
    sl_error err = {0};
    assert_int_equal(sl_sink_http.encode(s.self, &b, &req, &err), 0);
    assert_string_equal(sl_buf_cstr(&req.body), want_body);
    if (want_header && !strstr(sl_buf_cstr(&req.headers), want_header)) {
        fail_msg("header '%s' missing from:\n%s", want_header, sl_buf_cstr(&req.headers));
    }
    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

static void test_http_formats(void **state)
{
    const char *arr[] = {"url=" BASE "/in", "bearer_token=tok-SECRET-1"};
    http_encode_with(arr, 2,
                     "[{\"external_id\":\"a1\",\"n\":5,\"arr\":[true]},"
                     "{\"external_id\":\"a3\",\"n\":null}]",
                     "Authorization: Bearer tok-SECRET-1\n");
    const char *obj[] = {"url=" BASE "/in", "format=object", "wrap=people", "method=PUT"};
    http_encode_with(obj, 4,
                     "{\"people\":[{\"external_id\":\"a1\",\"n\":5,\"arr\":[true]},"
                     "{\"external_id\":\"a3\",\"n\":null}]}",
                     "Content-Type: application/json\n");
    const char *nd[] = {"url=" BASE "/in", "format=ndjson", "fields=[n, external_id, missing]"};
    http_encode_with(nd, 3,
                     "{\"n\":5,\"external_id\":\"a1\"}\n{\"n\":null,\"external_id\":\"a3\"}\n",
                     "Content-Type: application/x-ndjson\n");
    /* basic auth: base64("user:pa:ss") */
    const char *basic[] = {"url=" BASE "/in", "basic_user=user", "basic_password=pa:ss",
                           "headers={X-Team: blue, Content-Type: application/vnd.x+json}"};
    http_encode_with(basic, 4,
                     "[{\"external_id\":\"a1\",\"n\":5,\"arr\":[true]},"
                     "{\"external_id\":\"a3\",\"n\":null}]",
                     "Authorization: Basic dXNlcjpwYTpzcw==\n");
    http_encode_with(basic, 4,
                     "[{\"external_id\":\"a1\",\"n\":5,\"arr\":[true]},"
                     "{\"external_id\":\"a3\",\"n\":null}]",
                     "X-Team: blue\n");
}

static void test_http_decode(void **state)
{
    sink s;
    const char *pairs[] = {"url=https://user:pw-SECRET@api.example.com/v1/in?token=SECRET9",
                           "expect_status=201"};
    sink_open(&s, &sl_sink_http, pairs, 2);
    sl_batch b;
    http_batch(&b);
    sl_error err = {0};
    sl_http_resp rs = resp(201, "");
    assert_int_equal(sl_sink_http.decode(s.self, &b, &rs, &err), SL_SEND_OK);
    rs = resp(200, "{\"ok\":true}");
    assert_int_equal(sl_sink_http.decode(s.self, &b, &rs, &err), SL_SEND_FAIL);
    assert_string_equal(err.msg, "expected HTTP 201 from https://api.example.com/v1/in, got 200: "
                                 "{\"ok\":true}");
    rs = resp(401, "nope");
    assert_int_equal(sl_sink_http.decode(s.self, &b, &rs, &err), SL_SEND_FATAL);
    assert_null(strstr(err.msg, "SECRET"));
    rs = resp(422, "{\"error\":\"email is required\"}");
    assert_int_equal(sl_sink_http.decode(s.self, &b, &rs, &err), SL_SEND_FAIL);
    assert_non_null(strstr(err.msg, "email is required"));
    rs = resp(503, "down");
    rs.gave_up = 1;
    rs.attempts = 3;
    assert_int_equal(sl_sink_http.decode(s.self, &b, &rs, &err), SL_SEND_FATAL);
    assert_non_null(strstr(err.msg, "gave up after 3 attempts: HTTP 503"));
    assert_null(strstr(err.msg, "SECRET"));
    sl_batch_free(&b);
    sink_close(&s);

    const char *both[] = {("url=" BASE), "bearer_token=abcdef", "basic_user=u"};
    sl_buf errs;
    sl_buf_init(&errs, 0);
    sl_opts *o = sl_opts_from_pairs(sl_sink_http.options, both, 3, &errs);
    assert_non_null(o);
    void *self = NULL;
    assert_true(sl_sink_http.init(&self, o, NULL, &err) < 0);
    assert_non_null(strstr(err.msg, "exclusive"));
    sl_opts_free(o);
    sl_buf_free(&errs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_types_and_headers),
        cmocka_unit_test(test_encode_unfaithful_keys),
        cmocka_unit_test(test_encode_nul_fails_one_record),
        cmocka_unit_test(test_encode_reuses_request),
        cmocka_unit_test(test_encode_nothing_to_send),
        cmocka_unit_test(test_encode_options),
        cmocka_unit_test(test_decode_error_index_mapping),
        cmocka_unit_test(test_decode_success_bodies),
        cmocka_unit_test(test_decode_verdicts),
        cmocka_unit_test(test_columns),
        cmocka_unit_test(test_summarize_and_defaults),
        cmocka_unit_test(test_init_errors),
        cmocka_unit_test(test_http_formats),
        cmocka_unit_test(test_http_decode),
    };
    sl_log_level = SL_LOG_ERROR; /* index warnings are expected */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
