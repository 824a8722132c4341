/* http sink, format: record and expect_status lists: one request per record
 * with {field} in the url (percent-encoded) and headers, records that cannot
 * fill the template dead-lettered alone, a batch of more than one refused
 * with the fix named, success statuses as a list, and the validate hook
 * reporting every bad option. (Array/object/ndjson bodies: test_braze.c.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "core/ctx.h"
#include "sluice/plugin.h"

extern const sl_sink_plugin sl_sink_http;

#define BASE "https://crm.example.org"

typedef struct sink {
    void *self;
    sl_ctx *ctx;
    sl_opts *opts;
} sink;

static sl_opts *opts_of(const char *const *pairs, size_t n)
{
    sl_buf errs;
    sl_buf_init(&errs, 0);
    sl_opts *o = sl_opts_from_pairs(sl_sink_http.options, pairs, n, &errs);
    if (!o) {
        fail_msg("options rejected: %s", sl_buf_cstr(&errs));
    }
    sl_buf_free(&errs);
    return o;
}

static void sink_open(sink *s, const char *const *pairs, size_t n)
{
    s->opts = opts_of(pairs, n);
    s->ctx = sl_ctx_new("members", "sink", "http", NULL, 0, NULL);
    assert_non_null(s->ctx);
    sl_error err = {0};
    if (sl_sink_http.init(&s->self, s->opts, s->ctx, &err) != 0) {
        fail_msg("init failed: %s", err.msg);
    }
}

static void sink_close(sink *s)
{
    sl_sink_http.destroy(s->self);
    sl_ctx_free(s->ctx);
    sl_opts_free(s->opts);
}

static sl_record *member(sl_batch *b, uint64_t line, const char *id, const char *email)
{
    sl_record *r = sl_batch_push(b);
    assert_non_null(r);
    r->line = line;
    if (id) {
        assert_int_equal(sl_record_add_str(r, "id", 2, id, strlen(id)), 0);
    }
    assert_int_equal(sl_record_add_str(r, "email", 5, email, strlen(email)), 0);
    return r;
}

static const char *const record_pairs[] = {
    "url=" BASE "/lists/{list}/members/{id}?email={email}", "format=record", "method=PUT",
    "bearer_token=tok-SECRET-77", "headers={X-Member: \"m-{id}\", X-Idem: \"{email}/{n}\"}"};

static void test_record_mode_request(void **state)
{
    (void)state;
    sink s;
    sink_open(&s, record_pairs, 5);
    sl_batch b;
    sl_batch_init(&b);
    sl_record *r = member(&b, 4, "a/b c", "Ann+x@Example.org");
    assert_int_equal(sl_record_add_str(r, "list", 4, "L1", 2), 0);
    assert_int_equal(sl_record_add_int(r, "n", 1, 42), 0);
    sl_http_req req;
    sl_http_req_init(&req);
    sl_error err = {0};
    assert_int_equal(sl_sink_http.encode(s.self, &b, &req, &err), 0);
    assert_string_equal(req.method, "PUT");
    assert_string_equal(sl_buf_cstr(&req.url),
                        BASE "/lists/L1/members/a%2Fb%20c?email=Ann%2Bx%40Example.org");
    assert_string_equal(sl_buf_cstr(&req.body),
                        "{\"id\":\"a/b c\",\"email\":\"Ann+x@Example.org\",\"list\":\"L1\","
                        "\"n\":42}");
    const char *hd = sl_buf_cstr(&req.headers);
    assert_non_null(strstr(hd, "X-Member: m-a/b c\n"));
    assert_non_null(strstr(hd, "X-Idem: Ann+x@Example.org/42\n"));
    assert_non_null(strstr(hd, "Authorization: Bearer tok-SECRET-77\n"));
    assert_non_null(strstr(hd, "Content-Type: application/json\n"));
    assert_int_equal(r->status, SL_REC_OK);

    /* the request object is reused for the next batch */
    sl_batch_reset(&b);
    r = member(&b, 5, "id2", "b@x.org");
    assert_int_equal(sl_record_add_str(r, "list", 4, "L2", 2), 0);
    assert_int_equal(sl_record_add_float(r, "n", 1, 2.5), 0);
    assert_int_equal(sl_sink_http.encode(s.self, &b, &req, &err), 0);
    assert_string_equal(sl_buf_cstr(&req.url), BASE "/lists/L2/members/id2?email=b%40x.org");
    assert_non_null(strstr(sl_buf_cstr(&req.headers), "X-Idem: b@x.org/2.5\n"));
    assert_null(strstr(sl_buf_cstr(&req.headers), "m-a/b c"));
    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

/* A record that cannot fill the template is dead-lettered alone, with a
 * reason naming the field; no request is made for it. */
static void expect_unbuildable(sl_record *(*make)(sl_batch *), const char *want)
{
    sink s;
    sink_open(&s, record_pairs, 5);
    sl_batch b;
    sl_batch_init(&b);
    sl_record *r = make(&b);
    sl_http_req req;
    sl_http_req_init(&req);
    sl_error err = {0};
    assert_int_equal(sl_sink_http.encode(s.self, &b, &req, &err), 0);
    assert_int_equal(req.body.len, 0);
    assert_int_equal(r->status, SL_REC_FAILED);
    if (!strstr(sl_buf_cstr(&r->reason), want)) {
        fail_msg("reason '%s' lacks '%s'", sl_buf_cstr(&r->reason), want);
    }
    assert_null(strstr(sl_buf_cstr(&r->reason), "SECRET"));
    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

static sl_record *no_id(sl_batch *b)
{
    sl_record *r = member(b, 9, NULL, "a@x.org");
    sl_record_add_str(r, "list", 4, "L", 1);
    sl_record_add_int(r, "n", 1, 1);
    return r;
}

static sl_record *null_list(sl_batch *b)
{
    sl_record *r = member(b, 9, "i", "a@x.org");
    sl_record_add_null(r, "list", 4);
    sl_record_add_int(r, "n", 1, 1);
    return r;
}

static sl_record *newline_in_header(sl_batch *b)
{
    sl_record *r = member(b, 9, "i\r\nX-Evil: 1", "a@x.org");
    sl_record_add_str(r, "list", 4, "L", 1);
    sl_record_add_int(r, "n", 1, 1);
    return r;
}

static sl_record *json_id(sl_batch *b)
{
    sl_record *r = sl_batch_push(b);
    r->line = 9;
    sl_record_add_json(r, "id", 2, "{\"a\":1}", 7);
    sl_record_add_str(r, "email", 5, "a@x.org", 7);
    sl_record_add_str(r, "list", 4, "L", 1);
    sl_record_add_int(r, "n", 1, 1);
    return r;
}

static void test_record_mode_unbuildable(void **state)
{
    (void)state;
    expect_unbuildable(no_id, "line 9: cannot build the request to " BASE
                              "/lists/{list}/members/{id}: field 'id' is missing");
    expect_unbuildable(null_list, "field 'list' is null");
    /* in the URL it would be percent-encoded; a header cannot carry it */
    expect_unbuildable(newline_in_header, "field 'id' holds a control character");
    expect_unbuildable(json_id, "field 'id' is an object or array");
}

static void test_record_mode_needs_batch_of_one(void **state)
{
    (void)state;
    sink s;
    sink_open(&s, record_pairs, 5);
    sl_batch b;
    sl_batch_init(&b);
    b.seq = 3;
    member(&b, 1, "a", "a@x.org");
    sl_record *rej = member(&b, 2, "b", "b@x.org");
    sl_record_reject(rej, 0, "no");
    sl_http_req req;
    sl_http_req_init(&req);
    sl_error err = {0};
    /* one OK record next to a rejected one is fine */
    sl_record_add_str(&b.recs[0], "list", 4, "L", 1);
    sl_record_add_int(&b.recs[0], "n", 1, 1);
    assert_int_equal(sl_sink_http.encode(s.self, &b, &req, &err), 0);
    assert_true(req.body.len > 0);
    member(&b, 3, "c", "c@x.org");
    assert_true(sl_sink_http.encode(s.self, &b, &req, &err) < 0);
    assert_string_equal(err.msg, "http: format: record sends one record per request, but batch 3 "
                                 "holds 2 (an engine bug)");
    /* which the engine never builds: the instance asks for batches of one */
    assert_int_equal(sl_sink_http.max_batch_records(s.self), 1);
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
    r.content_type = "application/json";
    r.retry_after_s = -1;
    r.attempts = 1;
    return r;
}

static void test_expect_status_list(void **state)
{
    (void)state;
    const char *pairs[] = {"url=" BASE "/members", "expect_status=[201, 202]"};
    sink s;
    sink_open(&s, pairs, 2);
    sl_batch b;
    sl_batch_init(&b);
    member(&b, 1, "a", "a@x.org");
    sl_error err = {0};
    sl_http_resp r = resp(201, "");
    assert_int_equal(sl_sink_http.decode(s.self, &b, &r, &err), SL_SEND_OK);
    r = resp(202, "");
    assert_int_equal(sl_sink_http.decode(s.self, &b, &r, &err), SL_SEND_OK);
    r = resp(200, "{\"queued\":false}");
    assert_int_equal(sl_sink_http.decode(s.self, &b, &r, &err), SL_SEND_FAIL);
    assert_string_equal(err.msg, "expected HTTP 201 or 202 from " BASE
                                 "/members, got 200: {\"queued\":false}");
    /* a member the target refuses: the batch is dead-lettered with the body */
    r = resp(400, "{\"errors\":[{\"email\":\"invalid\"}]}");
    assert_int_equal(sl_sink_http.decode(s.self, &b, &r, &err), SL_SEND_FAIL);
    assert_non_null(strstr(err.msg, "HTTP 400 from " BASE "/members: {\"errors\""));
    sl_batch_free(&b);
    sink_close(&s);

    /* a single status is a list of one; none: any 2xx */
    const char *one[] = {"url=" BASE "/members", "expect_status=201"};
    sink_open(&s, one, 2);
    sl_batch_init(&b);
    r = resp(204, "");
    assert_int_equal(sl_sink_http.decode(s.self, &b, &r, &err), SL_SEND_FAIL);
    assert_non_null(strstr(err.msg, "expected HTTP 201 from"));
    sink_close(&s);
    const char *any[] = {"url=" BASE "/members"};
    sink_open(&s, any, 1);
    assert_int_equal(sl_sink_http.decode(s.self, &b, &r, &err), SL_SEND_OK);
    sl_batch_free(&b);
    sink_close(&s);
}

/* ------------------------------------------------------------ validation */

typedef struct reports {
    char text[4096];
    int n;
} reports;

static void capture(void *ud, const char *option, const char *fmt, ...)
{
    reports *r = ud;
    size_t len = strlen(r->text);
    len += (size_t)snprintf(r->text + len, sizeof(r->text) - len, "%s: ", option);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->text + len, sizeof(r->text) - len, fmt, ap);
    va_end(ap);
    len = strlen(r->text);
    snprintf(r->text + len, sizeof(r->text) - len, "\n");
    r->n++;
}

static void test_validate(void **state)
{
    (void)state;
    const char *pairs[] = {
        "url=https://{host}/x",      "format=record", "expect_status=[201, 302, abc]",
        "bearer_token=tok-SECRET-1", "basic_user=u",  "headers={X-Id: \"{id}\", Bad Name: v}"};
    sl_opts *o = opts_of(pairs, 6);
    reports r = {"", 0};
    int n = sl_sink_http.validate(o, capture, &r);
    assert_int_equal(n, r.n);
    assert_int_equal(n, 5);
    assert_non_null(strstr(r.text, "url: {host} is in the scheme or host (expected {field} only in "
                                   "the path or query)"));
    assert_non_null(strstr(r.text, "expect_status: '302' is not a 2xx status"));
    assert_non_null(strstr(r.text, "expect_status: 'abc' is not a 2xx status"));
    assert_non_null(strstr(r.text, "are exclusive"));
    assert_non_null(strstr(r.text, "headers: 'Bad Name' is not a valid header name"));
    assert_null(strstr(r.text, "SECRET"));

    /* init refuses the same, naming every problem */
    void *self = NULL;
    sl_error err = {0};
    assert_int_equal(sl_sink_http.init(&self, o, NULL, &err), SL_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "is in the scheme or host"));
    assert_non_null(strstr(err.msg, "'abc' is not a 2xx status"));
    sl_opts_free(o);

    /* templates need one record per request */
    const char *arr[] = {"url=" BASE "/m/{id}", "headers={X-Id: \"{id}\", X-Json: '{\"a\": 1}'}"};
    o = opts_of(arr, 2);
    memset(&r, 0, sizeof(r));
    assert_int_equal(sl_sink_http.validate(o, capture, &r), 2);
    assert_non_null(strstr(r.text, "url: {id} takes a value from the record, which needs format: "
                                   "record (one record per request)"));
    assert_non_null(strstr(r.text, "headers: 'X-Id': {id} takes a value from the record"));
    sl_opts_free(o);

    const char *good[] = {"url=" BASE "/m/{id}?at={merge.x-y}", "format=record",
                          "headers={X-Json: '{\"a\": 1}'}", "expect_status=201"};
    o = opts_of(good, 4);
    memset(&r, 0, sizeof(r));
    assert_int_equal(sl_sink_http.validate(o, capture, &r), 0);
    sl_opts_free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_mode_request),
        cmocka_unit_test(test_record_mode_unbuildable),
        cmocka_unit_test(test_record_mode_needs_batch_of_one),
        cmocka_unit_test(test_expect_status_list),
        cmocka_unit_test(test_validate),
    };
    sl_log_level = SL_LOG_ERROR;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
