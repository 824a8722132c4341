/* actionnetwork sink: the OSDI person built from flat columns (zip padding,
 * phone priority and clean-up, custom-field booleans, is_member from the
 * record's action or its own column, lapsed records as a custom-field
 * update), the request's headers, the verdict of every kind of answer,
 * option checks. Bodies are parsed back with jansson. The API key must never
 * appear in a message. */
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

extern const sl_sink_plugin sl_sink_actionnetwork;

#define KEY "an-test-SECRET-0123456789"
#define BASE "https://actionnetwork.example/api/v2"

typedef struct sink {
    void *self;
    sl_ctx *ctx;
    sl_opts *opts;
} sink;

static int sink_try(sink *s, const char *const *pairs, size_t n, sl_error *err)
{
    sl_buf errs;
    sl_buf_init(&errs, 0);
    s->self = NULL;
    s->opts = sl_opts_from_pairs(sl_sink_actionnetwork.options, pairs, n, &errs);
    if (!s->opts) {
        fail_msg("options rejected: %s", sl_buf_cstr(&errs));
    }
    sl_buf_free(&errs);
    s->ctx = sl_ctx_new("people", "sink", "actionnetwork", NULL, 0, NULL);
    assert_non_null(s->ctx);
    int rc = sl_sink_actionnetwork.init(&s->self, s->opts, s->ctx, err);
    sl_secrets_clear();
    return rc;
}

static void sink_open(sink *s, const char *const *pairs, size_t n)
{
    sl_error err = {0};
    if (sink_try(s, pairs, n, &err) != 0) {
        fail_msg("init failed: %s", err.msg);
    }
}

static void sink_close(sink *s)
{
    sl_sink_actionnetwork.destroy(s->self);
    sl_ctx_free(s->ctx);
    sl_opts_free(s->opts);
}

static const char *const base_pairs[] = {"url=" BASE, "api_key=" KEY};

static void add_str(sl_record *r, const char *name, const char *v)
{
    assert_int_equal(sl_record_add_str(r, name, (uint32_t)strlen(name), v, strlen(v)), 0);
}

static void add_omitted(sl_record *r, const char *name)
{
    add_str(r, name, "");
    r->fields[r->nfields - 1].flags |= SL_FIELD_OMIT;
}

static void assert_no_key(const char *msg)
{
    if (strstr(msg, KEY) || strstr(msg, "SECRET")) {
        fail_msg("message leaks the API key: %s", msg);
    }
}

/* Encode a batch holding rec only; returns the parsed body (NULL when the
 * sink sent nothing). */
static json_t *encode_one(sink *s, sl_batch *b, sl_http_req *req)
{
    sl_error err = {0};
    sl_http_req_init(req);
    assert_int_equal(sl_sink_actionnetwork.encode(s->self, b, req, &err), 0);
    if (req->body.len == 0) {
        /* nothing to send: the engine acknowledges it only when the method
         * is not GET */
        assert_string_not_equal(req->method, "GET");
        return NULL;
    }
    json_error_t e;
    json_t *root = json_loadb(req->body.data, req->body.len, JSON_REJECT_DUPLICATES, &e);
    if (!root) {
        fail_msg("body is not JSON (%s): %.*s", e.text, (int)req->body.len, req->body.data);
    }
    return root;
}

static const char *jstr(json_t *root, const char *path)
{
    json_t *v = root;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    char *save = NULL;
    for (char *t = strtok_r(buf, ".", &save); t && v; t = strtok_r(NULL, ".", &save)) {
        if (t[0] >= '0' && t[0] <= '9') {
            v = json_array_get(v, (size_t)atoi(t));
        } else {
            v = json_object_get(v, t);
        }
    }
    return json_string_value(v);
}

/* ------------------------------------------------------------ person shape */

static void test_person_from_actionkit_columns(void **state)
{
    (void)state;
    sink s;
    sink_open(&s, base_pairs, 2);
    sl_batch b;
    sl_batch_init(&b);
    sl_record *r = sl_batch_push(&b);
    r->line = 2;
    add_str(r, "email", "  Ann@Example.org ");
    add_str(r, "first_name", "Zo\xC3\xAB \"Z\"");
    add_str(r, "last_name", "Lee");
    add_str(r, "address1", "1 Main St");
    add_str(r, "address2", "Apt 2");
    add_str(r, "city", "Boston");
    add_str(r, "state", "MA");
    add_str(r, "zip", "2134");
    add_str(r, "country", "US");
    add_str(r, "unmapped", "not sent");
    sl_http_req req;
    json_t *root = encode_one(&s, &b, &req);
    assert_non_null(root);

    assert_string_equal(req.method, "POST");
    assert_string_equal(sl_buf_cstr(&req.url), BASE "/people/");
    const char *h = sl_buf_cstr(&req.headers);
    assert_non_null(strstr(h, "OSDI-API-Token: " KEY "\n"));
    assert_non_null(strstr(h, "Content-Type: application/json\n"));

    assert_int_equal(json_object_size(root), 1); /* no add_tags configured */
    json_t *p = json_object_get(root, "person");
    assert_string_equal(jstr(p, "given_name"), "Zo\xC3\xAB \"Z\"");
    assert_string_equal(jstr(p, "family_name"), "Lee");
    /* trimmed, case kept: Action Network matches case-insensitively */
    assert_string_equal(jstr(p, "email_addresses.0.address"), "Ann@Example.org");
    assert_int_equal(json_array_size(json_object_get(p, "email_addresses")), 1);
    json_t *a = json_array_get(json_object_get(p, "postal_addresses"), 0);
    assert_string_equal(jstr(a, "address_lines.0"), "1 Main St");
    assert_string_equal(jstr(a, "address_lines.1"), "Apt 2");
    assert_string_equal(jstr(a, "locality"), "Boston");
    assert_string_equal(jstr(a, "region"), "MA");
    assert_string_equal(jstr(a, "postal_code"), "02134");
    assert_string_equal(jstr(a, "country"), "US");
    assert_null(json_object_get(p, "phone_numbers"));
    assert_null(json_object_get(p, "unmapped"));
    /* no action, no is_member column: a member */
    assert_string_equal(jstr(p, "custom_fields.is_member"), "True");
    assert_int_equal(json_object_size(json_object_get(p, "custom_fields")), 1);
    json_decref(root);
    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

static void test_zip_padding(void **state)
{
    (void)state;
    struct {
        const char *in;
        const char *want; /* NULL: no postal_code */
    } cases[] = {
        {"2134", "02134"},
        {"501", "00501"},
        {"02134", "02134"},
        {"1", "00001"},
        {"123456", "123456"},
        {"02134-1234", "02134-1234"},
        {"SW1A 1AA", "SW1A 1AA"},
        {" 2134 ", "02134"},
        {"", NULL},
        {"   ", NULL},
        {"A12", "A12"},
    };
    sink s;
    sink_open(&s, base_pairs, 2);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sl_batch b;
        sl_batch_init(&b);
        sl_record *r = sl_batch_push(&b);
        add_str(r, "email", "a@example.org");
        add_str(r, "zip", cases[i].in);
        sl_http_req req;
        json_t *root = encode_one(&s, &b, &req);
        const char *got = jstr(root, "person.postal_addresses.0.postal_code");
        if (cases[i].want) {
            if (!got || strcmp(got, cases[i].want) != 0) {
                fail_msg("zip '%s': expected '%s', got '%s'", cases[i].in, cases[i].want,
                         got ? got : "(none)");
            }
        } else {
            assert_null(json_object_get(json_object_get(root, "person"), "postal_addresses"));
        }
        json_decref(root);
        sl_http_req_free(&req);
        sl_batch_free(&b);
    }
    /* a zip a step typed as a number */
    sl_batch b;
    sl_batch_init(&b);
    sl_record *r = sl_batch_push(&b);
    add_str(r, "email", "a@example.org");
    assert_int_equal(sl_record_add_int(r, "zip", 3, 501), 0);
    sl_http_req req;
    json_t *root = encode_one(&s, &b, &req);
    assert_string_equal(jstr(root, "person.postal_addresses.0.postal_code"), "00501");
    json_decref(root);
    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

static void test_phone_priority_and_cleanup(void **state)
{
    (void)state;
    struct {
        const char *best, *mobile, *home, *work, *phone;
        const char *want; /* NULL: no phone_numbers */
    } cases[] = {
        /* priority: best, mobile, home, work, phone */
        {"617-555-0100", "617-555-0101", "617-555-0102", "617-555-0103", "1", "6175550100"},
        {"", "617 555 0101", "617-555-0102", "", "", "6175550101"},
        {"", "", "", "617-555-0103", "", "6175550103"},
        {"", "", "", "", "(617) 555-0104", "(617)5550104"},
        /* first comma-separated value */
        {"617-555-0100, 617-555-0199", "", "", "", "", "6175550100"},
        /* a cell with nothing but separators falls through to the next */
        {" - , 555", "", "617-555-0102", "", "", "6175550102"},
        {"", "", "", "", "", NULL},
    };
    sink s;
    sink_open(&s, base_pairs, 2);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sl_batch b;
        sl_batch_init(&b);
        sl_record *r = sl_batch_push(&b);
        add_str(r, "email", "a@example.org");
        /* input order differs from the priority order */
        add_str(r, "phone", cases[i].phone);
        add_str(r, "work_phone", cases[i].work);
        add_str(r, "home_phone", cases[i].home);
        add_str(r, "mobile_phone", cases[i].mobile);
        add_str(r, "best_phone", cases[i].best);
        sl_http_req req;
        json_t *root = encode_one(&s, &b, &req);
        json_t *nums = json_object_get(json_object_get(root, "person"), "phone_numbers");
        if (cases[i].want) {
            assert_int_equal(json_array_size(nums), 1);
            const char *got = jstr(nums, "0.number");
            if (!got || strcmp(got, cases[i].want) != 0) {
                fail_msg("case %zu: expected '%s', got '%s'", i, cases[i].want,
                         got ? got : "(none)");
            }
        } else {
            assert_null(nums);
        }
        json_decref(root);
        sl_http_req_free(&req);
        sl_batch_free(&b);
    }
    /* a phone typed as a number; an omitted best_phone is skipped */
    sl_batch b;
    sl_batch_init(&b);
    sl_record *r = sl_batch_push(&b);
    add_str(r, "email", "a@example.org");
    add_omitted(r, "best_phone");
    assert_int_equal(sl_record_add_int(r, "mobile_phone", 12, 6175550101), 0);
    sl_http_req req;
    json_t *root = encode_one(&s, &b, &req);
    assert_string_equal(jstr(root, "person.phone_numbers.0.number"), "6175550101");
    json_decref(root);
    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

static void test_custom_fields_booleans_and_tags(void **state)
{
    (void)state;
    const char *pairs[] = {"url=" BASE "/people/", "api_key=" KEY,
                           "custom_fields={ak_id: id, vip: vip, donor: donor, score: score, "
                           "note: note, gone: gone}",
                           "add_tags=[ak-sync, \"member 2026\"]"};
    sink s;
    sink_open(&s, pairs, 4);
    sl_batch b;
    sl_batch_init(&b);
    sl_record *r = sl_batch_push(&b);
    add_str(r, "email", "a@example.org");
    assert_int_equal(sl_record_add_int(r, "id", 2, 42), 0);
    assert_int_equal(sl_record_add_bool(r, "vip", 3, 1), 0);
    add_str(r, "donor", "FALSE");
    assert_int_equal(sl_record_add_float(r, "score", 5, 0.5), 0);
    add_str(r, "note", "truely");
    assert_int_equal(sl_record_add_null(r, "gone", 4), 0);
    sl_http_req req;
    json_t *root = encode_one(&s, &b, &req);
    /* a URL already naming /people/ is not doubled */
    assert_string_equal(sl_buf_cstr(&req.url), BASE "/people/");
    json_t *cf = json_object_get(json_object_get(root, "person"), "custom_fields");
    assert_string_equal(jstr(cf, "ak_id"), "42");
    assert_string_equal(jstr(cf, "vip"), "True");
    assert_string_equal(jstr(cf, "donor"), "False");
    assert_string_equal(jstr(cf, "score"), "0.5");
    assert_string_equal(jstr(cf, "note"), "truely");
    assert_null(json_object_get(cf, "gone"));
    assert_string_equal(jstr(cf, "is_member"), "True");
    /* every custom field value is a string */
    const char *k;
    json_t *v;
    json_object_foreach(cf, k, v)
    {
        assert_true(json_is_string(v));
    }
    json_t *tags = json_object_get(root, "add_tags");
    assert_int_equal(json_array_size(tags), 2);
    assert_string_equal(jstr(tags, "0"), "ak-sync");
    assert_string_equal(jstr(tags, "1"), "member 2026");
    json_decref(root);
    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

static void test_member_from_action_and_column(void **state)
{
    (void)state;
    struct {
        const char *action;
        const char *column; /* is_member cell, NULL = no column */
        const char *want;
    } cases[] = {
        {"new", NULL, "True"},       {"changed", NULL, "True"}, {"lapsed", NULL, "False"},
        {NULL, NULL, "True"},        {NULL, "false", "False"},  {NULL, "no", "False"},
        {NULL, "TRUE", "True"},      {NULL, "", "True"},        {"new", "false", "True"},
        {"lapsed", "true", "False"}, {"upsert", NULL, "True"},
    };
    sink s;
    sink_open(&s, base_pairs, 2);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sl_batch b;
        sl_batch_init(&b);
        sl_record *r = sl_batch_push(&b);
        r->action = cases[i].action;
        add_str(r, "email", "a@example.org");
        if (cases[i].column) {
            add_str(r, "is_member", cases[i].column);
        }
        sl_http_req req;
        json_t *root = encode_one(&s, &b, &req);
        const char *got = jstr(root, "person.custom_fields.is_member");
        if (!got || strcmp(got, cases[i].want) != 0) {
            fail_msg("case %zu (action %s, column %s): expected %s, got %s", i,
                     cases[i].action ? cases[i].action : "none",
                     cases[i].column ? cases[i].column : "none", cases[i].want,
                     got ? got : "(none)");
        }
        json_decref(root);
        sl_http_req_free(&req);
        sl_batch_free(&b);
    }
    sink_close(&s);
}

static void test_lapsed_is_custom_field_update(void **state)
{
    (void)state;
    const char *pairs[] = {"url=" BASE, "api_key=" KEY, "custom_fields={ak_id: id}",
                           "add_tags=[ak-sync]"};
    sink s;
    sink_open(&s, pairs, 4);
    sl_batch b;
    sl_batch_init(&b);
    sl_record *r = sl_batch_push(&b);
    r->action = "lapsed";
    add_str(r, "email", "gone@example.org");
    add_str(r, "first_name", "Old");
    add_str(r, "zip", "2134");
    add_str(r, "best_phone", "617-555-0100");
    add_str(r, "id", "7");
    sl_http_req req;
    json_t *root = encode_one(&s, &b, &req);
    /* exactly {"person":{"email_addresses":[...],"custom_fields":{"is_member":"False"}}} */
    assert_int_equal(json_object_size(root), 1);
    json_t *p = json_object_get(root, "person");
    assert_int_equal(json_object_size(p), 2);
    assert_string_equal(jstr(p, "email_addresses.0.address"), "gone@example.org");
    json_t *cf = json_object_get(p, "custom_fields");
    assert_int_equal(json_object_size(cf), 1);
    assert_string_equal(jstr(cf, "is_member"), "False");
    json_decref(root);
    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);

    /* member_field "" and a lapsed record: nothing it could update */
    const char *none[] = {"url=" BASE, "api_key=" KEY, "member_field="};
    sink_open(&s, none, 3);
    sl_batch_init(&b);
    r = sl_batch_push(&b);
    r->action = "lapsed";
    add_str(r, "email", "gone@example.org");
    root = encode_one(&s, &b, &req);
    assert_null(root);
    assert_int_equal(b.recs[0].status, SL_REC_FAILED);
    assert_non_null(strstr(sl_buf_cstr(&b.recs[0].reason), "member_field"));
    sl_http_req_free(&req);
    sl_batch_reset(&b);
    /* ...while a new one is sent without custom_fields */
    r = sl_batch_push(&b);
    r->action = "new";
    add_str(r, "email", "new@example.org");
    root = encode_one(&s, &b, &req);
    assert_null(json_object_get(json_object_get(root, "person"), "custom_fields"));
    json_decref(root);
    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

static void test_unusable_email_and_nothing_to_send(void **state)
{
    (void)state;
    sink s;
    sink_open(&s, base_pairs, 2);
    const char *blanks[] = {"", "   "};
    for (int i = 0; i < 4; i++) {
        sl_batch b;
        sl_batch_init(&b);
        sl_record *r = sl_batch_push(&b);
        r->line = 9;
        if (i < 2) {
            add_str(r, "email", blanks[i]);
        } else if (i == 2) {
            assert_int_equal(sl_record_add_null(r, "email", 5), 0);
        } else {
            add_omitted(r, "email");
        }
        add_str(r, "first_name", "Ann");
        sl_http_req req;
        assert_null(encode_one(&s, &b, &req));
        assert_int_equal(b.recs[0].status, SL_REC_FAILED);
        assert_non_null(strstr(sl_buf_cstr(&b.recs[0].reason), "empty email"));
        sl_http_req_free(&req);
        sl_batch_free(&b);
    }
    /* a batch with no OK record: no request */
    sl_batch b;
    sl_batch_init(&b);
    sl_record *r = sl_batch_push(&b);
    add_str(r, "email", "a@example.org");
    sl_record_reject(r, 0, "rejected upstream");
    sl_http_req req;
    assert_null(encode_one(&s, &b, &req));
    assert_int_equal(b.recs[0].status, SL_REC_REJECTED);
    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

static void test_renamed_columns(void **state)
{
    (void)state;
    const char *pairs[] = {"url=" BASE,          "api_key=" KEY,    "email=Email",
                           "given_name=First",   "family_name=",    "postal_code=postal",
                           "phone=[cell, land]", "address_lines=[]"};
    sink s;
    sink_open(&s, pairs, 8);
    sl_batch b;
    sl_batch_init(&b);
    sl_record *r = sl_batch_push(&b);
    add_str(r, "Email", "a@example.org");
    add_str(r, "First", "Ann");
    add_str(r, "last_name", "Lee"); /* not mapped any more */
    add_str(r, "address1", "1 Main St");
    add_str(r, "postal", "2134");
    add_str(r, "land", "555-0100");
    sl_http_req req;
    json_t *root = encode_one(&s, &b, &req);
    json_t *p = json_object_get(root, "person");
    assert_string_equal(jstr(p, "given_name"), "Ann");
    assert_null(json_object_get(p, "family_name"));
    assert_string_equal(jstr(p, "postal_addresses.0.postal_code"), "02134");
    assert_null(json_object_get(json_array_get(json_object_get(p, "postal_addresses"), 0),
                                "address_lines"));
    assert_string_equal(jstr(p, "phone_numbers.0.number"), "5550100");
    json_decref(root);
    sl_http_req_free(&req);
    sl_batch_free(&b);
    sink_close(&s);
}

/* ------------------------------------------------------------ answers */

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

static void test_decode_verdicts(void **state)
{
    (void)state;
    sink s;
    sink_open(&s, base_pairs, 2);
    sl_batch b;
    sl_batch_init(&b);
    sl_record *r = sl_batch_push(&b);
    add_str(r, "email", "a@example.org");
    b.nsend = 1;
    struct {
        long status;
        const char *body;
        int gave_up;
        sl_verdict want;
        const char *msg; /* expected in the error, NULL = no check */
    } cases[] = {
        {200, "{\"identifiers\":[\"action_network:1\"]}", 0, SL_SEND_OK, NULL},
        {201, "", 0, SL_SEND_OK, NULL},
        {400, "{\"error\":\"Email address is invalid\"}", 0, SL_SEND_FAIL,
         "refused the person (HTTP 400): Email address is invalid"},
        {422, "<html>unprocessable</html>", 0, SL_SEND_FAIL, "HTTP 422): <html>unprocessable"},
        {401, "{\"error\":\"API Key invalid or not present\"}", 0, SL_SEND_FATAL,
         "rejected the API key (HTTP 401)"},
        {403, "", 0, SL_SEND_FATAL, "rejected the API key (HTTP 403)"},
        {404, "", 0, SL_SEND_FATAL, "check `url`"},
        {429, "{\"error\":\"slow down\"}", 1, SL_SEND_FATAL, "gave up after 1 attempts: HTTP 429"},
        {503, "", 0, SL_SEND_RETRY, NULL},
        {0, "", 1, SL_SEND_FATAL, "could not reach Action Network"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sl_http_resp rs = resp(cases[i].status, cases[i].body);
        rs.gave_up = cases[i].gave_up;
        sl_error err = {0};
        sl_verdict v = sl_sink_actionnetwork.decode(s.self, &b, &rs, &err);
        if (v != cases[i].want) {
            fail_msg("HTTP %ld: verdict %d, expected %d (%s)", cases[i].status, v, cases[i].want,
                     err.msg);
        }
        if (cases[i].msg && !strstr(err.msg, cases[i].msg)) {
            fail_msg("HTTP %ld: '%s' not in '%s'", cases[i].status, cases[i].msg, err.msg);
        }
        assert_no_key(err.msg);
    }
    sl_batch_free(&b);
    sink_close(&s);
}

/* ------------------------------------------------------------ options, columns */

static void test_options_and_columns(void **state)
{
    (void)state;
    const struct {
        const char *pairs[4];
        size_t n;
        const char *want;
    } bad[] = {
        {{"url=ftp://x/api/v2", "api_key=" KEY}, 2, "url"},
        {{"url=" BASE "?x=1", "api_key=" KEY}, 2, "without a query"},
        {{"url=" BASE, "api_key=" KEY "\r\nX-Evil: 1"}, 2, "api_key: holds a line break"},
        {{"url=" BASE, "api_key=" KEY, "email="}, 3, "email: must name a column"},
        {{"url=" BASE, "api_key=" KEY, "custom_fields={is_member: member}"},
         3,
         "also member_field"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sink s;
        sl_error err = {0};
        if (sink_try(&s, bad[i].pairs, bad[i].n, &err) == 0) {
            fail_msg("case %zu accepted", i);
        }
        if (!strstr(err.msg, bad[i].want)) {
            fail_msg("case %zu: '%s' not in '%s'", i, bad[i].want, err.msg);
        }
        assert_no_key(err.msg);
        sl_ctx_free(s.ctx);
        sl_opts_free(s.opts);
    }

    sink s;
    sink_open(&s, base_pairs, 2);
    sl_error err = {0};
    const char *ok[] = {"first_name", "email", "zip"};
    assert_int_equal(sl_sink_actionnetwork.columns(s.self, ok, 3, &err), 0);
    const char *no_email[] = {"first_name", "Email_Address"};
    assert_int_not_equal(sl_sink_actionnetwork.columns(s.self, no_email, 2, &err), 0);
    assert_non_null(strstr(err.msg, "input has no 'email' column"));
    sink_close(&s);

    /* one person per request, 4 requests a second */
    assert_int_equal(sl_sink_actionnetwork.defaults.max_batch_records, 1);
    assert_int_equal(sl_sink_actionnetwork.defaults.batch_records, 1);
    assert_true(sl_sink_actionnetwork.defaults.rate_per_sec == 4.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_person_from_actionkit_columns),
        cmocka_unit_test(test_zip_padding),
        cmocka_unit_test(test_phone_priority_and_cleanup),
        cmocka_unit_test(test_custom_fields_booleans_and_tags),
        cmocka_unit_test(test_member_from_action_and_column),
        cmocka_unit_test(test_lapsed_is_custom_field_update),
        cmocka_unit_test(test_unusable_email_and_nothing_to_send),
        cmocka_unit_test(test_renamed_columns),
        cmocka_unit_test(test_decode_verdicts),
        cmocka_unit_test(test_options_and_columns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
