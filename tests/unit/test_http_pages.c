/* http_pages source: the pure parts (window, times, offsets, positions, the
 * failed-page ledger, URLs, rates, option checks), then whole runs against a
 * small in-process Mailchimp-like server: full pull, incremental pull, a page
 * failing (cursor kept, ledger fetched next run), members changing during the
 * walk (nothing lost), a wrong key, 403 overload answers, resume from a
 * checkpoint, and the concurrency cap. Commit hooks are called here the way
 * the engine calls them: in a state transaction, with the ctx writable. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../plugins/sources/http_pages/http_pages.h"
#include "config/config.h"
#include "core/ctx.h"
#include "sluice/plugin.h"
#include "state/state.h"

extern const sl_source_plugin sl_source_http_pages;

/* ------------------------------------------------------------ pure parts */

static void t_window(void **state)
{
    (void)state;
    hp_window w = hp_window_for(-1, 1000.7, 1000);
    assert_true(w.since < 0);
    assert_true(w.before == 1000.0);
    w = hp_window_for(900.2, 1000.7, 1000);
    assert_true(w.since == 899.0);
    assert_true(w.before == 1000.0);
    w = hp_window_for(900, 1000, 1500); /* overlap rounds up to whole seconds */
    assert_true(w.since == 898.0);
    w = hp_window_for(900, 1000, 0);
    assert_true(w.since == 900.0);
}

static void t_times(void **state)
{
    (void)state;
    char b[40];
    assert_int_equal(hp_format_time(1714557600.9, b, sizeof(b)), 0);
    assert_string_equal(b, "2024-05-01T10:00:00+00:00");
    double t;
    assert_int_equal(hp_parse_time("2024-05-01T10:00:00+00:00", &t), 0);
    assert_true(t == 1714557600.0);
    assert_int_equal(hp_parse_time("2024-05-01T10:00:00Z", &t), 0);
    assert_true(t == 1714557600.0);
    assert_int_equal(hp_parse_time("2024-05-01T12:00:00+02:00", &t), 0);
    assert_true(t == 1714557600.0);
    assert_int_equal(hp_parse_time("2024-05-01T10:00:00.123+00:00", &t), 0);
    assert_true(t == 1714557600.0);
    assert_int_equal(hp_parse_time("2024-05-01 10:00:00", &t), -1);
    assert_int_equal(hp_parse_time("2024-13-01T10:00:00Z", &t), -1);
    assert_int_equal(hp_parse_time("", &t), -1);
    assert_int_equal(hp_parse_time("2024-05-01T10:00:00+0000", &t), -1);
}

static void t_offsets(void **state)
{
    (void)state;
    assert_int_equal(hp_page_count(0, 1000), 0);
    assert_int_equal(hp_page_count(1, 1000), 1);
    assert_int_equal(hp_page_count(1000, 1000), 1);
    assert_int_equal(hp_page_count(1001, 1000), 2);
    assert_int_equal(hp_page_count(25000, 1000), 25);
    /* offsets are k * count, never the page number (the original's bug) */
    assert_int_equal(hp_page_offset(0, 1000), 0);
    assert_int_equal(hp_page_offset(7, 1000), 7000);
    assert_int_equal(hp_page_offset(24, 1000), 24000);
}

static void t_pos(void **state)
{
    (void)state;
    uint64_t prev = 0;
    int first = 1;
    /* monotonic in (pass, page, index), and a round trip */
    for (unsigned pass = 0; pass <= 3; pass++) {
        for (uint64_t page = 0; page < 40; page += 13) {
            for (uint64_t idx = 0; idx < 1000; idx += 333) {
                uint64_t p = hp_pos_encode(pass, page, idx);
                if (!first) {
                    assert_true(p > prev);
                }
                first = 0;
                prev = p;
                unsigned a;
                uint64_t b, c;
                hp_pos_decode(p, &a, &b, &c);
                assert_int_equal(a, pass);
                assert_int_equal(b, page);
                assert_int_equal(c, idx);
            }
        }
    }
    unsigned a;
    uint64_t b, c;
    hp_pos_decode(hp_pos_encode(HP_MAX_PASS, HP_MAX_PAGE, HP_MAX_INDEX), &a, &b, &c);
    assert_int_equal(a, HP_MAX_PASS);
    assert_true(b == HP_MAX_PAGE);
    assert_true(c == HP_MAX_INDEX);
}

static void t_ledger(void **state)
{
    (void)state;
    hp_ledger l = {0};
    hp_window w1 = {-1, 1714557600};
    hp_window w2 = {1714550000, 1714557600};
    assert_int_equal(hp_ledger_add(&l, w1, 7000, 1000, "GET x (page 7): HTTP 503 \"quoted\"", 3),
                     0);
    assert_int_equal(hp_ledger_add(&l, w2, 0, 1000, "not JSON", 1), 0);
    assert_int_equal(hp_ledger_add(&l, w1, 7000, 1000, "again", 2), 0); /* same page: merged */
    assert_int_equal(l.n, 2);
    assert_int_equal(l.v[0].attempts, 5);
    assert_string_equal(l.v[0].error, "again");
    sl_buf b;
    sl_buf_init(&b, 0);
    assert_int_equal(hp_ledger_to_json(&l, &b), 0);
    hp_ledger r = {0};
    sl_error err = {0};
    assert_int_equal(hp_ledger_from_json(&r, sl_buf_cstr(&b), &err), 0);
    assert_int_equal(r.n, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_true(r.v[i].w.since == l.v[i].w.since);
        assert_true(r.v[i].w.before == l.v[i].w.before);
        assert_int_equal(r.v[i].offset, l.v[i].offset);
        assert_int_equal(r.v[i].count, l.v[i].count);
        assert_int_equal(r.v[i].attempts, l.v[i].attempts);
        assert_string_equal(r.v[i].error, l.v[i].error);
    }
    json_t *j = json_loads(sl_buf_cstr(&b), 0, NULL);
    assert_true(json_is_null(json_object_get(json_array_get(j, 0), "since")));
    assert_string_equal(json_string_value(json_object_get(json_array_get(j, 1), "since")),
                        "2024-05-01T07:53:20+00:00");
    json_decref(j);
    hp_ledger bad = {0};
    assert_true(hp_ledger_from_json(&bad, "{}", &err) < 0);
    assert_true(hp_ledger_from_json(&bad, "[{\"offset\":-1,\"count\":5}]", &err) < 0);
    assert_non_null(strstr(err.msg, "entry 1"));
    assert_true(hp_ledger_from_json(&bad, "nope", &err) < 0);
    hp_ledger_free(&bad);
    hp_ledger_free(&r);
    hp_ledger_free(&l);
    sl_buf_free(&b);
}

static void t_url_rate(void **state)
{
    (void)state;
    sl_buf u;
    sl_buf_init(&u, 0);
    sl_buf_puts(&u, "https://x/3.0/lists/a/members");
    assert_int_equal(hp_url_param(&u, "since_last_changed", "2024-05-01T10:00:00+00:00"), 0);
    assert_int_equal(hp_url_param(&u, "fields", "members.id,total_items"), 0);
    assert_string_equal(sl_buf_cstr(&u), "https://x/3.0/lists/a/members?since_last_changed=2024-"
                                         "05-01T10%3A00%3A00%2B00%3A00&fields=members.id%2Ctotal_"
                                         "items");
    sl_buf_free(&u);
    double r;
    assert_int_equal(hp_parse_rate("10/s", &r), 0);
    assert_true(r == 10);
    assert_int_equal(hp_parse_rate("90/m", &r), 0);
    assert_true(r == 1.5);
    assert_int_equal(hp_parse_rate("3000/3s", &r), 0);
    assert_true(r == 1000);
    assert_int_equal(hp_parse_rate("4", &r), 0);
    assert_true(r == 4);
    assert_int_equal(hp_parse_rate("", &r), 0);
    assert_true(r == 0);
    assert_int_equal(hp_parse_rate("banana", &r), -1);
    assert_int_equal(hp_parse_rate("10/fortnight", &r), -1);
    assert_int_equal(hp_parse_rate("-3/s", &r), -1);
}

typedef struct reports {
    char text[4096];
    int n;
} reports;

static void collect(void *ud, const char *option, const char *fmt, ...)
{
    reports *r = ud;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t len = strlen(r->text);
    snprintf(r->text + len, sizeof(r->text) - len, "%s: %s\n", option, msg);
    r->n++;
}

static int validate(const char *const *pairs, size_t n, reports *r)
{
    sl_buf errs;
    sl_buf_init(&errs, 0);
    sl_opts *o = sl_opts_from_pairs(sl_source_http_pages.options, pairs, n, &errs);
    if (!o) {
        fail_msg("options: %s", sl_buf_cstr(&errs));
    }
    sl_buf_free(&errs);
    memset(r, 0, sizeof(*r));
    int k = sl_source_http_pages.validate(o, collect, r);
    sl_opts_free(o);
    assert_int_equal(k, r->n);
    return k;
}

static void t_validate(void **state)
{
    (void)state;
    reports r;
    const char *ok[] = {"url=https://us9.api.mailchimp.com/3.0/lists/x/members", "preset=mailchimp",
                        "api_key=abcd-us9"};
    assert_int_equal(validate(ok, 3, &r), 0);

    const char *cursor[] = {"url=https://api.example.org/people", "paging=cursor"};
    assert_int_equal(validate(cursor, 2, &r), 2);
    assert_non_null(strstr(r.text, "cursor_param: paging cursor needs"));
    assert_non_null(strstr(r.text, "cursor_path: paging cursor needs"));

    const char *next[] = {"url=https://api.example.org/people", "paging=next_link"};
    assert_int_equal(validate(next, 2, &r), 1);
    assert_non_null(strstr(r.text, "next_path"));

    const char *bad[] = {"url=ftp://x/y",   "preset=mailchimp", "page_size=5000", "concurrency=11",
                         "rate_limit=lots", "max_passes=0",     "before_param=b4"};
    /* mailchimp preset without api_key, and before_param alone is fine with the
     * preset's since_param */
    assert_int_equal(validate(bad, 7, &r), 6);
    assert_non_null(strstr(r.text, "url: expected an http"));
    assert_non_null(strstr(r.text, "page_size: Mailchimp returns at most 1000"));
    assert_non_null(strstr(r.text, "concurrency: Mailchimp allows 10"));
    assert_non_null(strstr(r.text, "rate_limit: expected a rate"));
    assert_non_null(strstr(r.text, "max_passes: expected 1..15"));
    assert_non_null(strstr(r.text, "api_key: auth basic needs api_key"));

    const char *lone[] = {"url=https://x/y", "before_param=b4"};
    assert_int_equal(validate(lone, 2, &r), 1);
    assert_non_null(strstr(r.text, "before_param without since_param"));

    const char *keynone[] = {"url=https://x/y", "api_key=abcdef"};
    assert_int_equal(validate(keynone, 2, &r), 1);
    assert_non_null(strstr(r.text, "auth: api_key is set but auth is none"));
}

/* ------------------------------------------------------------ page parser */

/* The page parser against jansson on the same bytes: both accept or both
 * refuse (except integers beyond 64 bits, which the parser keeps as text),
 * and what the parser lists for each item is what jansson reads. */
static const hp_paths PATHS = {"members", "total_items", NULL, -1};
static int n_accepted, n_refused, n_records;

static void same_as_jansson(const char *body, size_t len, hp_names *names, hp_page_doc *d)
{
    char why[160];
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    int rc = hp_page_parse(d, body, len, &PATHS, names, why, sizeof(why));
    if (!j) {
        int big = strstr(je.text, "too big") || strstr(je.text, "overflow");
        if (rc == 0 && !big) {
            fail_msg("parser accepts what jansson refuses (%s): %.*s", je.text, (int)len, body);
        }
        n_refused++;
        return;
    }
    if (rc != 0) {
        fail_msg("parser refuses (%s) what jansson accepts: %.*s", why, (int)len, body);
    }
    n_accepted++;
    json_t *recs = json_is_object(j) ? json_object_get(j, "members") : NULL;
    n_records += (int)d->nitems;
    assert_int_equal(d->has_records, json_is_array(recs));
    json_t *tot = json_is_object(j) ? json_object_get(j, "total_items") : NULL;
    int tot_ok = json_is_integer(tot) && json_integer_value(tot) >= 0;
    assert_int_equal(d->has_total, tot_ok);
    if (tot_ok) {
        assert_int_equal(d->total, json_integer_value(tot));
    }
    if (!json_is_array(recs)) {
        json_decref(j);
        return;
    }
    assert_int_equal(d->nitems, json_array_size(recs));
    for (size_t i = 0; i < d->nitems; i++) {
        json_t *m = json_array_get(recs, i);
        const hp_item *it = &d->items[i];
        assert_int_equal(it->object, json_is_object(m));
        if (!it->object) {
            continue;
        }
        assert_int_equal(it->n, json_object_size(m));
        const char *k;
        json_t *v;
        uint32_t x = 0;
        json_object_foreach(m, k, v)
        {
            const hp_val *hv = &d->vals[it->first + x++];
            assert_string_equal(names->v[hv->name], k);
            const char *txt = d->buf + hv->off;
            switch (json_typeof(v)) {
            case JSON_STRING:
                assert_int_equal(hv->type, HP_V_STR);
                assert_int_equal(hv->len, json_string_length(v));
                assert_memory_equal(txt, json_string_value(v), hv->len);
                break;
            case JSON_INTEGER:
                assert_int_equal(hv->type, HP_V_INT);
                assert_true(hv->n.i == json_integer_value(v));
                break;
            case JSON_REAL:
                assert_int_equal(hv->type, HP_V_REAL);
                assert_true(hv->n.f == json_real_value(v));
                break;
            case JSON_TRUE:
                assert_int_equal(hv->type, HP_V_TRUE);
                break;
            case JSON_FALSE:
                assert_int_equal(hv->type, HP_V_FALSE);
                break;
            case JSON_NULL:
                assert_int_equal(hv->type, HP_V_NULL);
                break;
            default: {
                assert_int_equal(hv->type, HP_V_JSON);
                for (uint32_t b = 0; b < hv->len; b++) {
                    /* compact: no whitespace outside strings, one line */
                    assert_true(txt[b] != '\n' && txt[b] != '\r');
                }
                json_t *raw = json_loadb(txt, hv->len, 0, NULL);
                assert_non_null(raw);
                assert_true(json_equal(raw, v));
                json_decref(raw);
            }
            }
        }
    }
    json_decref(j);
}

static void t_page_parse(void **state)
{
    (void)state;
    hp_names names = {0};
    hp_page_doc d = {0};
    static const char *const docs[] = {
        "{\"total_items\":2,\"members\":[{\"id\":\"a\",\"n\":1},{\"id\":\"b\",\"n\":-2}]}",
        " {\"members\" : [ {\"id\" : \"a\\\"b\\\\c\\/\\n\\u00e9\\ud83d\\ude00\" , \"x\" : [ 1 , "
        "{ \"y\" : \"z w\" } ] } ] , \"total_items\" : 1 }\n",
        "{\"members\":[{\"merge_fields\":{\"FNAME\":\"Zo\\u00eb\",\"LNAME\":\"M\xc3\xbcller\"},"
        "\"r\":0.10,\"e\":1e3,\"t\":true,\"f\":false,\"z\":null,\"big\":123456789012345678901}],"
        "\"total_items\":1}",
        "{\"members\":[1,\"two\",[3],null,{}],\"total_items\":5}",
        "{\"members\":[{\"id\":\"a\",\"id\":\"b\",\"k\":1}],\"total_items\":1}", /* repeated key */
        "{\"members\":[{\"id\":1}],\"members\":{\"no\":1},\"total_items\":1}",   /* last wins */
        "{\"members\":[],\"total_items\":-1}",
        "{\"members\":[],\"total_items\":1.0}",
        "{\"members\":[],\"total_items\":\"3\"}",
        "{\"x\":{\"members\":[{\"id\":1}]},\"total_items\":0}",
        "[{\"id\":1}]",
        "{\"members\":[{\"id\":\"\\ud800\"}]}",
        "{\"members\":[{\"id\":\"\\u0000\"}]}",
        "{\"members\":[{\"id\":\"\xc0\xaf\"}]}",
        "{\"members\":[{\"id\":\"\xed\xa0\x80\"}]}",
        "{\"members\":[{\"id\":\"a\tb\"}]}",
        "{\"members\":[{\"id\":01}]}",
        "{\"members\":[{\"id\":1.}]}",
        "{\"members\":[{\"id\":-}]}",
        "{\"members\":[{\"id\":tru}]}",
        "{\"members\":[{\"id\":1,}]}",
        "{\"members\":[{\"id\":1}],}",
        "{\"members\":[{\"id\":1}]} x",
        "{\"members\":[{\"id\":1}]",
        "",
        "<html>502 Bad Gateway</html>",
        "{\"members\":[{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]}]}",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        same_as_jansson(docs[i], strlen(docs[i]), &names, &d);
    }
    /* the big integer is kept as its text */
    assert_int_equal(hp_page_parse(&d, docs[2], strlen(docs[2]), &PATHS, &names, NULL, 0), 0);
    const hp_val *big = &d.vals[d.items[0].first + 6];
    assert_int_equal(big->type, HP_V_JSON);
    assert_memory_equal(d.buf + big->off, "123456789012345678901", big->len);
    /* a syntax error names what and where */
    char why[160];
    const char *bad = "{\"members\":[{\"id\":tru}]}";
    assert_int_equal(hp_page_parse(&d, bad, strlen(bad), &PATHS, &names, why, sizeof(why)),
                     HP_PARSE_SYNTAX);
    assert_string_equal(why, "invalid literal at byte 18");
    assert_int_equal(d.nitems, 0);
    /* the key field is found, repeated keys included */
    hp_paths kp = PATHS;
    kp.key_name = hp_names_intern(&names, "id", 2, 0);
    assert_int_equal(hp_page_parse(&d, docs[4], strlen(docs[4]), &kp, &names, NULL, 0), 0);
    assert_int_equal(d.items[0].key, 0);
    assert_memory_equal(d.buf + d.vals[0].off, "b", 1);

    /* random documents, then random damage to them */
    unsigned seed = 12345;
    sl_buf b;
    sl_buf_init(&b, 0);
    static const char *const atoms[] = {
        "\"s\"",
        "\"\\u00e9\\n\"",
        "\"\xc3\xa9\"",
        "0",
        "-12",
        "3.25",
        "1e-3",
        "true",
        "false",
        "null",
        "{}",
        "[]",
        "[1,\"x\"]",
        "{\"a\":{\"b\":[null]}}",
        "9223372036854775807",
        "-9223372036854775808",
    };
    static const char damage[] = "\"\\{}[],:0e.-u \x80\xff\n";
    for (int round = 0; round < 4000; round++) {
        sl_buf_reset(&b);
        sl_buf_puts(&b, "{\"total_items\":");
        sl_buf_printf(&b, "%d,\"members\":[", rand_r(&seed) % 5000);
        int items = rand_r(&seed) % 6;
        for (int it = 0; it < items; it++) {
            sl_buf_puts(&b, it ? ", {" : "{");
            int fields = rand_r(&seed) % 5;
            for (int f = 0; f < fields; f++) {
                sl_buf_printf(&b, "%s\"k%d\" :%s", f ? "," : "", rand_r(&seed) % 6,
                              rand_r(&seed) % 3 ? "" : " ");
                sl_buf_puts(&b, atoms[rand_r(&seed) % (sizeof(atoms) / sizeof(atoms[0]))]);
            }
            sl_buf_puts(&b, "}");
        }
        sl_buf_puts(&b, "]}");
        char *doc = b.data;
        size_t len = b.len;
        same_as_jansson(doc, len, &names, &d);
        for (int k = rand_r(&seed) % 3; k >= 0; k--) {
            size_t at = (size_t)rand_r(&seed) % len;
            doc[at] = damage[rand_r(&seed) % (sizeof(damage) - 1)];
        }
        same_as_jansson(doc, (size_t)rand_r(&seed) % 4 ? len : len / 2, &names, &d);
    }
    /* both sides of the comparison were exercised */
    assert_true(n_accepted > 2000);
    assert_true(n_refused > 2000);
    assert_true(n_records > 5000);
    sl_buf_free(&b);
    hp_page_doc_free(&d);
    hp_names_free(&names);
}

/* ------------------------------------------------------------ fake server */

#define T0 1714557600.0 /* fake clock: member times are around here */

typedef struct member {
    char id[32];
    double lc; /* last_changed */
} member;

static struct fake {
    pthread_mutex_t mu;
    member *m;
    size_t n;
    int inflight, peak, requests;
    int missing_before;         /* window requests without before_last_changed */
    int bad_offset;             /* offsets not a multiple of count */
    long fail_offset;           /* answer 503 for this offset ... */
    int fail_left;              /* ... this many times (-1: always) */
    int http403_left;           /* answer 403 with an HTML body this many times */
    int churn_at;               /* at the churn_at-th request (1-based) ... */
    size_t churn_from, churn_n; /* ... move these members out of the window */
    double churn_to;
    int latency_ms;
    char auth[256]; /* expected Authorization header */
} F;

static void fake_reset(size_t n)
{
    free(F.m);
    pthread_mutex_t mu = F.mu;
    memset(&F, 0, sizeof(F));
    F.mu = mu;
    F.fail_offset = -1;
    F.m = calloc(n, sizeof(*F.m));
    F.n = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(F.m[i].id, sizeof(F.m[i].id), "m%05zu", i);
        F.m[i].lc = T0 - 86400 + (double)i; /* all before T0 */
    }
    /* Basic base64("sluice:key-us9") */
    snprintf(F.auth, sizeof(F.auth), "Basic c2x1aWNlOmtleS11czk=");
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *ctype,
                             const char *body)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", ctype);
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result serve(void *cls, struct MHD_Connection *c, const char *url,
                             const char *method, const char *version, const char *upload,
                             size_t *upload_size, void **con_cls)
{
    (void)cls, (void)url, (void)method, (void)version, (void)upload, (void)upload_size;
    if (*con_cls == NULL) {
        *con_cls = (void *)1;
        return MHD_YES;
    }
    pthread_mutex_lock(&F.mu);
    F.requests++;
    int reqno = F.requests;
    if (++F.inflight > F.peak) {
        F.peak = F.inflight;
    }
    pthread_mutex_unlock(&F.mu);
    if (F.latency_ms) {
        usleep((useconds_t)F.latency_ms * 1000);
    }
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    const char *so = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "offset");
    const char *sc = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "count");
    const char *ss = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "since_last_changed");
    const char *sb = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "before_last_changed");
    long off = so ? atol(so) : 0, cnt = sc ? atol(sc) : 10;
    double since = -1, before = -1;
    if (ss) {
        hp_parse_time(ss, &since);
    }
    if (sb) {
        hp_parse_time(sb, &before);
    }
    enum MHD_Result ret;
    pthread_mutex_lock(&F.mu);
    if (!auth || strcmp(auth, F.auth) != 0) {
        pthread_mutex_unlock(&F.mu);
        ret = reply(c, 401, "application/problem+json",
                    "{\"type\":\"x\",\"title\":\"API Key Invalid\",\"status\":401,\"detail\":"
                    "\"Your API key may be invalid, or you've attempted to access the wrong "
                    "datacenter.\"}");
        goto out;
    }
    if (!sb) {
        F.missing_before++;
    }
    if (cnt <= 0 || cnt > 1000 || off % cnt != 0) {
        F.bad_offset++;
    }
    if (F.http403_left > 0) {
        F.http403_left--;
        pthread_mutex_unlock(&F.mu);
        ret = reply(c, 403, "text/html", "<html><body>Forbidden</body></html>");
        goto out;
    }
    if (off == F.fail_offset && F.fail_left != 0) {
        if (F.fail_left > 0) {
            F.fail_left--;
        }
        pthread_mutex_unlock(&F.mu);
        ret = reply(c, 503, "text/html", "<html>Service Unavailable</html>");
        goto out;
    }
    if (reqno == F.churn_at) {
        for (size_t i = F.churn_from; i < F.churn_from + F.churn_n && i < F.n; i++) {
            F.m[i].lc = F.churn_to;
        }
    }
    sl_buf b;
    sl_buf_init(&b, 0);
    long total = 0;
    sl_buf_puts(&b, "{\"members\":[");
    int first = 1;
    for (size_t i = 0; i < F.n; i++) {
        if ((since >= 0 && F.m[i].lc < since) || (before >= 0 && F.m[i].lc >= before)) {
            continue;
        }
        if (total >= off && total < off + cnt) {
            char ts[40];
            hp_format_time(F.m[i].lc, ts, sizeof(ts));
            sl_buf_printf(&b,
                          "%s{\"id\":\"%s\",\"email_address\":\"%s@example.org\",\"status\":"
                          "\"subscribed\",\"merge_fields\":{\"FNAME\":\"F%s\",\"LNAME\":\"L\"},"
                          "\"vip\":false,\"rating\":%zu,\"last_changed\":\"%s\"}",
                          first ? "" : ",", F.m[i].id, F.m[i].id, F.m[i].id, i % 5, ts);
            first = 0;
        }
        total++;
    }
    pthread_mutex_unlock(&F.mu);
    sl_buf_printf(&b, "],\"list_id\":\"L\",\"total_items\":%ld}", total);
    ret = reply(c, 200, "application/json", sl_buf_cstr(&b));
    sl_buf_free(&b);
out:
    pthread_mutex_lock(&F.mu);
    F.inflight--;
    pthread_mutex_unlock(&F.mu);
    return ret;
}

static struct MHD_Daemon *daemon_;
static unsigned port_;
static char dir_[64];

static int setup(void **state)
{
    (void)state;
    pthread_mutex_init(&F.mu, NULL);
    daemon_ = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                               NULL, NULL, serve, NULL, MHD_OPTION_END);
    if (!daemon_) {
        return -1;
    }
    port_ = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT)->port;
    snprintf(dir_, sizeof(dir_), "/tmp/sl_hp_XXXXXX");
    return mkdtemp(dir_) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    MHD_stop_daemon(daemon_);
    free(F.m);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir_);
    return system(cmd) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------ runs */

typedef struct run_out {
    int rc;         /* of the last next(): 0 end, <0 error */
    char err[1024]; /* its message */
    char **ids;     /* emitted ids, in order */
    uint64_t *pos;  /* their positions */
    size_t n, cap;
    char ckpt[8192];   /* checkpoint taken at stop_after, when set */
    char partial[256]; /* what sl_ctx_set_partial said in commit, or "" */
} run_out;

static void out_free(run_out *o)
{
    for (size_t i = 0; i < o->n; i++) {
        free(o->ids[i]);
    }
    free(o->ids);
    free(o->pos);
    memset(o, 0, sizeof(*o));
}

static int count_id(const run_out *o, const char *id)
{
    int k = 0;
    for (size_t i = 0; i < o->n; i++) {
        k += strcmp(o->ids[i], id) == 0;
    }
    return k;
}

static sl_state *open_state(const char *name)
{
    char p[160];
    snprintf(p, sizeof(p), "%s/%s.db", dir_, name);
    sl_error err = {0};
    sl_state *st = sl_state_open(p, &err);
    if (!st) {
        fail_msg("state: %s", err.msg);
    }
    return st;
}

static char *kv(sl_state *st, const char *key)
{
    sl_buf b;
    sl_buf_init(&b, 0);
    sl_error err = {0};
    char k[128];
    snprintf(k, sizeof(k), "source.http_pages/%s", key);
    int rc = sl_state_kv_get(st, "p", k, &b, &err);
    assert_true(rc >= 0);
    char *r = rc == 1 ? strdup(sl_buf_cstr(&b)) : NULL;
    sl_buf_free(&b);
    return r;
}

/* One run: init (resume from `resume` when given), read everything (or stop
 * after stop_after records, taking a checkpoint at that record), commit as the
 * engine would (complete when the source ended cleanly and did not stop). */
static void run_source(sl_state *st, double started, const char *const *extra, size_t nextra,
                       const char *resume, size_t stop_after, run_out *o)
{
    memset(o, 0, sizeof(*o));
    char url[200];
    snprintf(url, sizeof(url), "url=http://127.0.0.1:%u/3.0/lists/L/members", port_);
    const char *pairs[32] = {
        url,         "preset=mailchimp", "api_key=key-us9", "page_size=100", "concurrency=4",
        "retries=2", "backoff=1ms",      "max_backoff=5ms"};
    size_t n = 8;
    for (size_t i = 0; i < nextra; i++) {
        pairs[n++] = extra[i];
    }
    sl_buf errs;
    sl_buf_init(&errs, 0);
    sl_opts *opts = sl_opts_from_pairs(sl_source_http_pages.options, pairs, n, &errs);
    if (!opts) {
        fail_msg("options: %s", sl_buf_cstr(&errs));
    }
    sl_buf_free(&errs);
    sl_ctx *ctx = sl_ctx_new("p", "source", "http_pages", st, 0, NULL);
    ctx->run_started = started;
    void *self = NULL;
    sl_error err = {0};
    if (sl_source_http_pages.init(&self, opts, ctx, &err) != 0) {
        fail_msg("init: %s", err.msg);
    }
    if (resume && sl_source_http_pages.resume(self, resume, &err) != 0) {
        fail_msg("resume: %s", err.msg);
    }
    sl_record rec;
    sl_record_init(&rec);
    int stopped = 0;
    for (;;) {
        sl_record_reset(&rec);
        uint64_t next = 0;
        int rc = sl_source_http_pages.next(self, &rec, &next, &err);
        if (rc <= 0) {
            o->rc = rc;
            snprintf(o->err, sizeof(o->err), "%s", rc < 0 ? err.msg : "");
            break;
        }
        assert_int_equal(rec.status, SL_REC_OK);
        assert_true(next > rec.pos);
        if (o->n) {
            assert_true(rec.pos > o->pos[o->n - 1]); /* positions only grow */
        }
        sl_field *f = sl_record_get(&rec, "id");
        assert_non_null(f);
        assert_int_equal(f->type, SL_T_STRING);
        sl_field *mf = sl_record_get(&rec, "merge_fields");
        assert_non_null(mf);
        assert_int_equal(mf->type, SL_T_JSON); /* nested objects stay JSON */
        assert_int_equal(sl_record_get(&rec, "vip")->type, SL_T_BOOL);
        assert_int_equal(sl_record_get(&rec, "rating")->type, SL_T_INT);
        if (o->n == o->cap) {
            o->cap = o->cap ? o->cap * 2 : 1024;
            o->ids = realloc(o->ids, o->cap * sizeof(*o->ids));
            o->pos = realloc(o->pos, o->cap * sizeof(*o->pos));
        }
        o->ids[o->n] = strdup(sl_field_str(&rec, f));
        o->pos[o->n] = rec.pos;
        o->n++;
        if (stop_after && o->n == stop_after) {
            sl_buf ck;
            sl_buf_init(&ck, 0);
            assert_int_equal(sl_source_http_pages.checkpoint(self, rec.pos, rec.line, &ck, &err),
                             0);
            snprintf(o->ckpt, sizeof(o->ckpt), "%s", sl_buf_cstr(&ck));
            sl_buf_free(&ck);
            stopped = 1;
            break;
        }
    }
    sl_record_free(&rec);
    sl_run_end e = {0};
    e.complete = o->rc == 0 && !stopped;
    e.started_at = started;
    e.read = e.sent = o->n;
    assert_int_equal(sl_state_begin(st, &err), 0);
    ctx->writable = 1;
    int crc = sl_source_http_pages.commit(self, &e, &err);
    ctx->writable = 0;
    if (crc != 0) {
        fail_msg("commit: %s", err.msg);
    }
    assert_int_equal(sl_state_commit(st, &err), 0);
    snprintf(o->partial, sizeof(o->partial), "%s", ctx->partial);
    sl_source_http_pages.destroy(self);
    sl_ctx_free(ctx);
    sl_opts_free(opts);
}

static void t_full_then_incremental(void **state)
{
    (void)state;
    fake_reset(2500);
    sl_state *st = open_state("inc");
    run_out o;
    run_source(st, T0 + 0.4, NULL, 0, NULL, 0, &o);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.n, 2500);
    assert_string_equal(o.partial, "");
    for (size_t i = 0; i < 2500; i++) {
        char id[32];
        snprintf(id, sizeof(id), "m%05zu", i);
        assert_string_equal(o.ids[i], id); /* page order, each once */
    }
    assert_int_equal(F.missing_before, 0);
    assert_int_equal(F.bad_offset, 0);
    assert_true(F.peak <= 4);
    assert_int_equal(F.requests, 25);
    char *c = kv(st, "cursor");
    assert_non_null(c);
    assert_string_equal(c, "2024-05-01T10:00:00+00:00"); /* the run's start, not its end */
    free(c);
    assert_null(kv(st, "failed_pages"));
    out_free(&o);

    /* 30 members change after the first run's start; the second run gets
     * exactly those */
    for (size_t i = 100; i < 130; i++) {
        F.m[i].lc = T0 + 5;
    }
    F.m[2000].lc = T0 + 200; /* changed after the second run began: next time */
    run_source(st, T0 + 100, NULL, 0, NULL, 0, &o);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.n, 30);
    for (size_t i = 100; i < 130; i++) {
        assert_int_equal(count_id(&o, F.m[i].id), 1);
    }
    c = kv(st, "cursor");
    assert_string_equal(c, "2024-05-01T10:01:40+00:00");
    free(c);
    out_free(&o);
    run_source(st, T0 + 300, NULL, 0, NULL, 0, &o);
    assert_int_equal(o.n, 1);
    assert_string_equal(o.ids[0], "m02000");
    out_free(&o);
    sl_state_close(st);
}

static void t_failed_page(void **state)
{
    (void)state;
    fake_reset(1000);
    F.fail_offset = 700;
    F.fail_left = -1;
    sl_state *st = open_state("fail");
    run_out o;
    run_source(st, T0, NULL, 0, NULL, 0, &o);
    assert_int_equal(o.rc, 0); /* the run goes on */
    assert_int_equal(o.n, 900);
    /* ... and ends partial, naming the page and why */
    assert_non_null(strstr(o.partial, "1 page could not be fetched (offset 700; HTTP 503"));
    assert_non_null(strstr(o.partial, "the cursor did not move"));
    assert_int_equal(count_id(&o, "m00700"), 0);
    assert_null(kv(st, "cursor")); /* never moved */
    char *l = kv(st, "failed_pages");
    assert_non_null(l);
    assert_non_null(strstr(l, "\"offset\":700"));
    assert_non_null(strstr(l, "HTTP 503"));
    assert_non_null(strstr(l, "\"attempts\":3"));
    assert_null(strstr(l, "key-us9"));
    free(l);
    out_free(&o);

    /* next run: the ledger's page first, then the window; the cursor moves */
    F.fail_offset = -1;
    F.requests = 0;
    run_source(st, T0 + 60, NULL, 0, NULL, 0, &o);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.n, 1000);
    for (size_t i = 0; i < 100; i++) {
        char id[32];
        snprintf(id, sizeof(id), "m%05zu", 700 + i);
        assert_string_equal(o.ids[i], id); /* the failed page came first */
    }
    for (size_t i = 0; i < 1000; i++) {
        assert_int_equal(count_id(&o, F.m[i].id), 1);
    }
    char *c = kv(st, "cursor");
    assert_string_equal(c, "2024-05-01T10:01:00+00:00");
    free(c);
    assert_null(kv(st, "failed_pages"));
    assert_string_equal(o.partial, ""); /* complete */
    out_free(&o);
    sl_state_close(st);
}

static void t_churn(void **state)
{
    (void)state;
    /* 40 members near the front change while the walk is at its 5th request:
     * everything after them shifts left by 40, so a plain walk skips 40
     * members that never changed */
    fake_reset(2000);
    F.churn_at = 5;
    F.churn_from = 10;
    F.churn_n = 40;
    F.churn_to = T0 + 30; /* during the run: outside its window */
    F.latency_ms = 5;
    sl_state *st = open_state("churn");
    run_out o;
    const char *one[] = {"concurrency=1"}; /* strictly sequential: the shift hits later pages */
    run_source(st, T0, one, 1, NULL, 0, &o);
    assert_int_equal(o.rc, 0);
    for (size_t i = 0; i < 2000; i++) {
        int k = count_id(&o, F.m[i].id);
        if (i >= 10 && i < 50) {
            assert_true(k <= 1);
        } else {
            assert_int_equal(k, 1); /* every unchanged member, exactly once */
        }
    }
    char *c = kv(st, "cursor");
    assert_string_equal(c, "2024-05-01T10:00:00+00:00"); /* pass 2 was consistent */
    free(c);
    out_free(&o);
    /* the changed ones come with the next run */
    run_source(st, T0 + 60, NULL, 0, NULL, 0, &o);
    assert_int_equal(o.n, 40);
    assert_int_equal(count_id(&o, "m00010"), 1);
    assert_int_equal(count_id(&o, "m00049"), 1);
    out_free(&o);
    sl_state_close(st);
}

static void t_churn_every_pass(void **state)
{
    (void)state;
    /* the list changes in every pass: after max_passes the run delivers what
     * it read and keeps the cursor */
    fake_reset(500);
    F.churn_at = 3;
    F.churn_from = 0;
    F.churn_n = 5;
    F.churn_to = T0 + 30;
    sl_state *st = open_state("churn2");
    run_out o;
    const char *x[] = {"concurrency=1", "max_passes=1"};
    run_source(st, T0, x, 2, NULL, 0, &o);
    assert_int_equal(o.rc, 0);
    assert_null(kv(st, "cursor"));
    assert_non_null(strstr(o.partial, "the list kept changing through 1 pass over the window"));
    out_free(&o);
    sl_state_close(st);
}

static void t_wrong_key(void **state)
{
    (void)state;
    fake_reset(10);
    sl_state *st = open_state("key");
    run_out o;
    const char *x[] = {"api_key=wrong-us9"};
    run_source(st, T0, x, 1, NULL, 0, &o);
    assert_true(o.rc < 0);
    assert_non_null(strstr(o.err, "/3.0/lists/L/members"));
    assert_non_null(strstr(o.err, "HTTP 401"));
    assert_non_null(strstr(o.err, "API Key Invalid"));
    assert_non_null(strstr(o.err, "the run stops"));
    assert_null(strstr(o.err, "wrong-us9"));
    assert_int_equal(F.requests, 1); /* nothing after the probe */
    assert_null(kv(st, "cursor"));
    out_free(&o);
    sl_state_close(st);
}

static void t_overload_403(void **state)
{
    (void)state;
    fake_reset(300);
    F.http403_left = 2;
    sl_state *st = open_state("403");
    run_out o;
    run_source(st, T0, NULL, 0, NULL, 0, &o);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.n, 300);
    out_free(&o);
    /* without the preset a 403 is a refusal */
    fake_reset(300);
    F.http403_left = 1;
    const char *x[] = {"preset=none", "auth=basic", "since_param=since_last_changed",
                       "before_param=before_last_changed"};
    run_source(st, T0, x, 4, NULL, 0, &o);
    assert_true(o.rc < 0);
    assert_non_null(strstr(o.err, "HTTP 403"));
    out_free(&o);
    sl_state_close(st);
}

static void t_resume(void **state)
{
    (void)state;
    fake_reset(1000);
    sl_state *st = open_state("resume");
    run_out a, b;
    run_source(st, T0, NULL, 0, NULL, 450, &a); /* stops in page 4 */
    assert_int_equal(a.n, 450);
    assert_non_null(strstr(a.ckpt, "\"page\":4"));
    assert_null(kv(st, "cursor"));
    run_source(st, T0 + 500, NULL, 0, a.ckpt, 0, &b);
    assert_int_equal(b.rc, 0);
    assert_int_equal(b.n, 600); /* page 4 again, then 5..9 */
    assert_string_equal(b.ids[0], "m00400");
    assert_string_equal(b.ids[599], "m00999");
    char *c = kv(st, "cursor");
    assert_string_equal(c, "2024-05-01T10:00:00+00:00"); /* the interrupted run's window */
    free(c);
    out_free(&a);
    out_free(&b);
    sl_state_close(st);
}

static void t_concurrency_cap(void **state)
{
    (void)state;
    fake_reset(3000);
    F.latency_ms = 20;
    F.fail_offset = 1500; /* retries must stay inside the cap too */
    F.fail_left = 2;
    sl_state *st = open_state("cap");
    run_out o;
    const char *x[] = {"concurrency=3"};
    run_source(st, T0, x, 1, NULL, 0, &o);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.n, 3000);
    assert_true(F.peak <= 3);
    assert_true(F.peak >= 2);
    out_free(&o);
    sl_state_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_window),           cmocka_unit_test(t_times),
        cmocka_unit_test(t_offsets),          cmocka_unit_test(t_pos),
        cmocka_unit_test(t_ledger),           cmocka_unit_test(t_url_rate),
        cmocka_unit_test(t_validate),         cmocka_unit_test(t_full_then_incremental),
        cmocka_unit_test(t_failed_page),      cmocka_unit_test(t_churn),
        cmocka_unit_test(t_churn_every_pass), cmocka_unit_test(t_wrong_key),
        cmocka_unit_test(t_overload_403),     cmocka_unit_test(t_resume),
        cmocka_unit_test(t_concurrency_cap),  cmocka_unit_test(t_page_parse),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
