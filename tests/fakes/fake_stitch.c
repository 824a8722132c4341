/* fake_stitch: a strict stand-in for the Stitch Import API
 * `POST /v2/import/batch` (see /work/shared/contracts.md and
 * tests/fakes/README.md). It refuses what Stitch refuses (auth, size, count,
 * a record that does not conform to the request's schema), keeps what it
 * accepted per table (GET /_tables, GET /_tables/NAME: the latest version of
 * each key by sequence, as Stitch loads it), records every accepted message
 * as one JSON line, injects faults and counts everything at GET /_stats. */
#include <ctype.h>
#include <pthread.h>
#include <stdint.h>

#include <jansson.h>

#include "fake_common.h"

#define PROG "fake_stitch"
#define USAGE                                                                                      \
    "--port N (0 = any free port) [--port-file FILE] --token TOKEN [--record FILE.jsonl]\n"        \
    "       [--latency-ms N] [--fail-first N:STATUS] [--retry-after S]"

#define STITCH_MAX_BODY ((size_t)4 * 1024 * 1024) /* a body must be smaller */
#define STITCH_MAX_MESSAGES 10000
#define REASONS_MAX 20

enum route { R_BATCH, R_STATS, R_RESET, R_TABLES, R_TABLE, R_NOTFOUND };

static struct {
    const char *token;
    long latency_ms;
    long fail_n;
    long fail_status;
    long retry_after;
    int record_fd;
} g_opt = {.record_fd = -1, .retry_after = 1};

static struct {
    pthread_mutex_t mu;
    unsigned long requests, accepted_requests, rejected_requests, accepted_messages;
    unsigned long faults_left_used;
    unsigned long sequence_regressions; /* a key sent again with a sequence not above */
    unsigned long max_messages, max_body;
    unsigned long status[600];
    json_t *tables; /* name -> {"rows": {keytext: {"sequence":N,"data":{}}}, "messages": N} */
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void count_status_locked(unsigned st)
{
    if (st < 600) {
        g.status[st]++;
    }
}

static enum MHD_Result answer_json(struct MHD_Connection *c, unsigned st, json_t *body,
                                   int retry_after)
{
    char *s = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    if (!s) {
        return MHD_NO;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(s);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (retry_after) {
        char ra[32];
        snprintf(ra, sizeof(ra), "%ld", g_opt.retry_after);
        MHD_add_response_header(resp, "Retry-After", ra);
    }
    enum MHD_Result rc = MHD_queue_response(c, st, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* Refuse a batch request: {"error":"<first reason>","errors":[reasons]}. */
static enum MHD_Result refuse(struct MHD_Connection *c, unsigned st, json_t *reasons)
{
    json_t *body = json_object();
    const char *first = json_string_value(json_array_get(reasons, 0));
    json_object_set_new(body, "error", json_string(first ? first : "refused"));
    json_object_set_new(body, "errors", reasons);
    fprintf(stderr, PROG ": %u %s\n", st, first ? first : "refused");
    pthread_mutex_lock(&g.mu);
    g.rejected_requests++;
    count_status_locked(st);
    pthread_mutex_unlock(&g.mu);
    return answer_json(c, st, body, st == 429 || st == 503);
}

static enum MHD_Result SL_PRINTF(3, 4)
    refuse1(struct MHD_Connection *c, unsigned st, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *a = json_array();
    json_array_append_new(a, json_string(msg));
    return refuse(c, st, a);
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

static int type_ok(const char *t, const json_t *v)
{
    if (strcmp(t, "null") == 0) {
        return json_is_null(v);
    }
    if (strcmp(t, "string") == 0) {
        return json_is_string(v);
    }
    if (strcmp(t, "integer") == 0) {
        return json_is_integer(v);
    }
    if (strcmp(t, "number") == 0) {
        return json_is_number(v);
    }
    if (strcmp(t, "boolean") == 0) {
        return json_is_boolean(v);
    }
    if (strcmp(t, "object") == 0) {
        return json_is_object(v);
    }
    if (strcmp(t, "array") == 0) {
        return json_is_array(v);
    }
    return 0;
}

static int known_type(const char *t)
{
    static const char *const k[] = {"null",    "string", "integer", "number",
                                    "boolean", "object", "array"};
    for (size_t i = 0; t && i < sizeof(k) / sizeof(k[0]); i++) {
        if (strcmp(t, k[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM). */
static int is_datetime(const char *s)
{
    const char *pat = "dddd-dd-ddTdd:dd:dd";
    for (size_t i = 0; pat[i]; i++) {
        if (pat[i] == 'd' ? !isdigit((unsigned char)s[i])
                          : (pat[i] == 'T' ? (s[i] != 'T' && s[i] != 't') : s[i] != pat[i])) {
            return 0;
        }
    }
    s += 19;
    if (*s == '.') {
        s++;
        if (!isdigit((unsigned char)*s)) {
            return 0;
        }
        while (isdigit((unsigned char)*s)) {
            s++;
        }
    }
    if ((*s == 'Z' || *s == 'z') && s[1] == '\0') {
        return 1;
    }
    return (*s == '+' || *s == '-') && isdigit((unsigned char)s[1]) &&
           isdigit((unsigned char)s[2]) && s[3] == ':' && isdigit((unsigned char)s[4]) &&
           isdigit((unsigned char)s[5]) && s[6] == '\0';
}

/* Check one value against its property schema; NULL or the problem. */
static const char *check_value(const json_t *prop, const json_t *v, char *why, size_t cap)
{
    const json_t *type = json_object_get(prop, "type");
    int ok = 0;
    char expected[128] = "";
    if (json_is_string(type)) {
        ok = type_ok(json_string_value(type), v);
        snprintf(expected, sizeof(expected), "%s", json_string_value(type));
    } else {
        size_t i;
        json_t *t;
        json_array_foreach(type, i, t)
        {
            ok |= type_ok(json_string_value(t), v);
            size_t l = strlen(expected);
            snprintf(expected + l, sizeof(expected) - l, "%s%s", i ? "|" : "",
                     json_string_value(t));
        }
    }
    if (!ok) {
        snprintf(why, cap, "expected type: %s, found: %s", expected, json_kind(v));
        return why;
    }
    const char *fmt = json_string_value(json_object_get(prop, "format"));
    if (fmt && strcmp(fmt, "date-time") == 0 && json_is_string(v) &&
        !is_datetime(json_string_value(v))) {
        snprintf(why, cap, "string '%.40s' is not a valid date-time", json_string_value(v));
        return why;
    }
    return NULL;
}

/* Check the schema document itself; NULL or the problem. */
static const char *check_schema(const json_t *schema, char *why, size_t cap)
{
    const json_t *props = json_object_get(schema, "properties");
    if (!json_is_object(schema) || !json_is_object(props)) {
        snprintf(why, cap, "'schema' must be a JSON schema object with 'properties'");
        return why;
    }
    const char *name;
    json_t *p;
    json_object_foreach((json_t *)props, name, p)
    {
        const json_t *type = json_object_get(p, "type");
        int ok = json_is_string(type) ? known_type(json_string_value(type))
                                      : json_is_array(type) && json_array_size(type) > 0;
        size_t i;
        json_t *t;
        json_array_foreach(type, i, t)
        {
            ok &= known_type(json_string_value(t));
        }
        if (!ok) {
            snprintf(why, cap, "schema property '%s' has no valid 'type'", name);
            return why;
        }
    }
    return NULL;
}

static void append_reason(json_t *reasons, const char *fmt, ...) SL_PRINTF(2, 3);
static void append_reason(json_t *reasons, const char *fmt, ...)
{
    if (json_array_size(reasons) >= REASONS_MAX) {
        return;
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_array_append_new(reasons, json_string(msg));
}

/* The key of a message's data as text ("a|b" for compound keys). */
static void key_text(const json_t *keys, const json_t *data, sl_buf *out)
{
    size_t i;
    json_t *k;
    sl_buf_reset(out);
    json_array_foreach(keys, i, k)
    {
        char *s =
            json_dumps(json_object_get(data, json_string_value(k)), JSON_COMPACT | JSON_ENCODE_ANY);
        if (i) {
            sl_buf_putc(out, '|');
        }
        sl_buf_puts(out, s ? s : "");
        free(s);
    }
}

static enum MHD_Result answer_batch(struct MHD_Connection *c, struct fk_req *r)
{
    char why[512];
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!auth || strncmp(auth, "Bearer ", 7) != 0 || strcmp(auth + 7, g_opt.token) != 0) {
        /* the presented token is never echoed */
        return refuse1(c, 401, "Not Authorized: %s",
                       !auth                              ? "no 'Authorization: Bearer' header"
                       : strncmp(auth, "Bearer ", 7) != 0 ? "not a Bearer token"
                                                          : "unknown token");
    }
    if (r->too_big || r->seen >= STITCH_MAX_BODY) {
        return refuse1(c, 413, "request body is %zu bytes; the Import API accepts less than %zu",
                       r->seen, STITCH_MAX_BODY);
    }
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!fk_is_json_ctype(ct)) {
        return refuse1(c, 415, "Content-Type must be application/json, got '%.100s'",
                       ct ? ct : "(none)");
    }
    json_error_t jerr;
    json_t *root =
        json_loadb(r->body.data ? r->body.data : "", r->body.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        return refuse1(c, 400, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                       jerr.text);
    }
    enum MHD_Result rc;
    json_t *reasons = json_array();
    sl_buf kt;
    sl_buf_init(&kt, 1024 * 1024);
    const json_t *table = json_object_get(root, "table_name");
    const json_t *schema = json_object_get(root, "schema");
    const json_t *keys = json_object_get(root, "key_names");
    const json_t *msgs = json_object_get(root, "messages");
    if (!json_is_object(root)) {
        append_reason(reasons, "the body must be a JSON object");
    } else if (!json_is_string(table) || json_string_length(table) == 0) {
        append_reason(reasons, "'table_name' is required (a non-empty string)");
    } else if (check_schema(schema, why, sizeof(why))) {
        append_reason(reasons, "%s", why);
    } else if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        append_reason(reasons, "'messages' must be a non-empty array");
    } else if (json_array_size(msgs) > STITCH_MAX_MESSAGES) {
        append_reason(reasons, "'messages' has %zu items: at most %d per request",
                      json_array_size(msgs), STITCH_MAX_MESSAGES);
    } else if (keys && (!json_is_array(keys) || json_array_size(keys) == 0)) {
        append_reason(reasons, "'key_names' must be a non-empty array of column names");
    }
    const json_t *props = json_object_get(schema, "properties");
    size_t i;
    json_t *k;
    json_array_foreach(json_array_size(reasons) ? NULL : keys, i, k)
    {
        if (!json_is_string(k) || !json_object_get(props, json_string_value(k))) {
            append_reason(reasons, "key_names[%zu] is not a property of the schema", i);
        }
    }
    json_t *m;
    json_array_foreach(json_array_size(reasons) ? NULL : msgs, i, m)
    {
        const json_t *data = json_object_get(m, "data");
        const char *action = json_string_value(json_object_get(m, "action"));
        if (!json_is_object(m) || !action || strcmp(action, "upsert") != 0) {
            append_reason(reasons, "Record %zu: 'action' must be \"upsert\"", i);
            continue;
        }
        if (!json_is_integer(json_object_get(m, "sequence"))) {
            append_reason(reasons, "Record %zu: 'sequence' must be an integer, found: %s", i,
                          json_kind(json_object_get(m, "sequence") ? json_object_get(m, "sequence")
                                                                   : json_null()));
            continue;
        }
        if (!json_is_object(data)) {
            append_reason(reasons, "Record %zu: 'data' must be an object", i);
            continue;
        }
        size_t j;
        json_t *kn;
        json_array_foreach(keys, j, kn)
        {
            const json_t *kv = json_object_get(data, json_string_value(kn));
            if (!kv || json_is_null(kv)) {
                append_reason(reasons,
                              "Record %zu for table %s did not conform to schema: #: required "
                              "key [%s] not found",
                              i, json_string_value(table), json_string_value(kn));
            }
        }
        const char *name;
        json_t *v;
        json_object_foreach((json_t *)data, name, v)
        {
            const json_t *prop = json_object_get(props, name);
            if (!prop) {
                append_reason(reasons,
                              "Record %zu for table %s did not conform to schema: #/%s: not "
                              "described by the schema",
                              i, json_string_value(table), name);
            } else if (check_value(prop, v, why, sizeof(why))) {
                append_reason(reasons,
                              "Record %zu for table %s did not conform to schema: #/%s: %s", i,
                              json_string_value(table), name, why);
            }
        }
    }
    if (json_array_size(reasons)) {
        rc = refuse(c, 400, reasons);
        reasons = NULL;
        goto done;
    }

    /* accepted: record and keep per table */
    sl_buf lines;
    sl_buf_init(&lines, 64 * 1024 * 1024);
    pthread_mutex_lock(&g.mu);
    const char *tname = json_string_value(table);
    json_t *t = json_object_get(g.tables, tname);
    if (!t) {
        t = json_pack("{s:o,s:i,s:i}", "rows", json_object(), "messages", 0, "requests", 0);
        json_object_set_new(g.tables, tname, t);
    }
    json_t *rows = json_object_get(t, "rows");
    json_array_foreach(msgs, i, m)
    {
        json_t *data = json_object_get(m, "data");
        json_int_t seq = json_integer_value(json_object_get(m, "sequence"));
        key_text(keys, data, &kt);
        json_t *prev = json_object_get(rows, sl_buf_cstr(&kt));
        json_int_t pseq = prev ? json_integer_value(json_object_get(prev, "sequence")) : 0;
        if (prev && seq <= pseq) {
            g.sequence_regressions++;
        } else {
            json_object_set_new(rows, sl_buf_cstr(&kt),
                                json_pack("{s:I,s:O}", "sequence", seq, "data", data));
        }
        char *s = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
        sl_buf_printf(&lines, "{\"table_name\":");
        char *tn = json_dumps(table, JSON_COMPACT | JSON_ENCODE_ANY);
        sl_buf_printf(&lines, "%s,\"message\":%s}\n", tn ? tn : "\"\"", s ? s : "null");
        free(tn);
        free(s);
    }
    json_object_set_new(t, "messages",
                        json_integer(json_integer_value(json_object_get(t, "messages")) +
                                     (json_int_t)json_array_size(msgs)));
    json_object_set_new(t, "requests",
                        json_integer(json_integer_value(json_object_get(t, "requests")) + 1));
    g.accepted_requests++;
    g.accepted_messages += json_array_size(msgs);
    if (json_array_size(msgs) > g.max_messages) {
        g.max_messages = json_array_size(msgs);
    }
    if (r->body.len > g.max_body) {
        g.max_body = r->body.len;
    }
    count_status_locked(201);
    if (g_opt.record_fd >= 0 && fk_write_all(g_opt.record_fd, lines.data, lines.len) != 0) {
        fprintf(stderr, PROG ": writing the --record file failed: %s\n", strerror(errno));
    }
    pthread_mutex_unlock(&g.mu);
    sl_buf_free(&lines);
    rc =
        answer_json(c, 201, json_pack("{s:s,s:s}", "status", "OK", "message", "Batch accepted"), 0);
done:
    json_decref(reasons);
    json_decref(root);
    sl_buf_free(&kt);
    return rc;
}

static void stats_json(sl_buf *b)
{
    static const unsigned always[] = {201, 400, 401, 413};
    pthread_mutex_lock(&g.mu);
    sl_buf_printf(b,
                  "{\"requests\":%lu,\"accepted_requests\":%lu,\"rejected_requests\":%lu,"
                  "\"accepted_messages\":%lu,\"max_messages_per_request\":%lu,"
                  "\"max_body_bytes\":%lu,\"sequence_regressions\":%lu,\"tables\":%zu,"
                  "\"status\":",
                  g.requests, g.accepted_requests, g.rejected_requests, g.accepted_messages,
                  g.max_messages, g.max_body, g.sequence_regressions, json_object_size(g.tables));
    fk_status_json(b, g.status, 600, always, sizeof(always) / sizeof(always[0]));
    sl_buf_putc(b, '}');
    pthread_mutex_unlock(&g.mu);
}

static enum MHD_Result answer_stats(struct MHD_Connection *c)
{
    sl_buf b;
    sl_buf_init(&b, 64 * 1024);
    stats_json(&b);
    enum MHD_Result rc = fk_respond(c, 200, "application/json", sl_buf_cstr(&b), b.len);
    sl_buf_free(&b);
    return rc;
}

/* GET /_tables: {"name": {"messages": N, "requests": R, "rows": K}}; GET
 * /_tables/NAME: the rows, latest version per key, sorted by key. */
static enum MHD_Result answer_tables(struct MHD_Connection *c, const char *name)
{
    json_t *out;
    pthread_mutex_lock(&g.mu);
    if (!name) {
        out = json_object();
        const char *tn;
        json_t *t;
        json_object_foreach(g.tables, tn, t)
        {
            json_object_set_new(
                out, tn,
                json_pack("{s:O,s:O,s:I}", "messages", json_object_get(t, "messages"), "requests",
                          json_object_get(t, "requests"), "rows",
                          (json_int_t)json_object_size(json_object_get(t, "rows"))));
        }
    } else {
        json_t *t = json_object_get(g.tables, name);
        out = json_array();
        const char *key;
        json_t *row;
        json_object_foreach(json_object_get(t, "rows"), key, row)
        {
            json_array_append(out, row);
        }
    }
    pthread_mutex_unlock(&g.mu);
    return answer_json(c, 200, out, 0);
}

static enum route route_of(const char *url)
{
    if (strcmp(url, "/v2/import/batch") == 0) {
        return R_BATCH;
    }
    if (strcmp(url, "/_stats") == 0) {
        return R_STATS;
    }
    if (strcmp(url, "/_reset") == 0) {
        return R_RESET;
    }
    if (strcmp(url, "/_tables") == 0) {
        return R_TABLES;
    }
    if (strncmp(url, "/_tables/", 9) == 0 && url[9]) {
        return R_TABLE;
    }
    return R_NOTFOUND;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    struct fk_req *r = *con_cls;
    if (!r) {
        r = fk_req_new(route_of(url));
        if (!r) {
            return MHD_NO;
        }
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size != 0) {
        fk_req_take(r, upload, *upload_size, r->route == R_BATCH);
        *upload_size = 0;
        return MHD_YES;
    }
    switch (r->route) {
    case R_STATS:
        return answer_stats(c);
    case R_TABLES:
        return answer_tables(c, NULL);
    case R_TABLE:
        return answer_tables(c, url + 9);
    case R_RESET:
        pthread_mutex_lock(&g.mu);
        g.requests = g.accepted_requests = g.rejected_requests = g.accepted_messages = 0;
        g.sequence_regressions = g.max_messages = g.max_body = 0;
        memset(g.status, 0, sizeof(g.status));
        json_object_clear(g.tables);
        pthread_mutex_unlock(&g.mu);
        return fk_respond(c, 200, "application/json", "{}", 2);
    case R_NOTFOUND:
        pthread_mutex_lock(&g.mu);
        g.requests++;
        pthread_mutex_unlock(&g.mu);
        return refuse1(c, 404, "no route %.20s %.200s: fake_stitch serves POST /v2/import/batch",
                       method, url);
    default:
        break;
    }
    pthread_mutex_lock(&g.mu);
    g.requests++;
    int fault = g.faults_left_used < (unsigned long)g_opt.fail_n && strcmp(method, "POST") == 0;
    if (fault) {
        g.faults_left_used++;
    }
    pthread_mutex_unlock(&g.mu);
    if (g_opt.latency_ms > 0) {
        fk_sleep_ms(g_opt.latency_ms);
    }
    if (strcmp(method, "POST") != 0) {
        return refuse1(c, 405, "method %.20s not allowed on %s (expected POST)", method, url);
    }
    if (fault) {
        return refuse1(c, (unsigned)g_opt.fail_status, "injected fault (--fail-first)");
    }
    return answer_batch(c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    fk_req_free(*con_cls);
    *con_cls = NULL;
}

int main(int argc, char **argv)
{
    long port = 0;
    const char *port_file = NULL, *record = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("usage: %s %s\n", PROG, USAGE);
            return 0;
        }
        if (i + 1 >= argc) {
            fk_die_usage(PROG, USAGE, "%s needs a value (or is unknown)", a);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--port") == 0) {
            if (fk_parse_long(v, 0, 65535, &port) != 0) {
                fk_die_usage(PROG, USAGE, "--port: expected 0..65535, got '%s'", v);
            }
        } else if (strcmp(a, "--port-file") == 0) {
            port_file = v;
        } else if (strcmp(a, "--token") == 0) {
            g_opt.token = v;
        } else if (strcmp(a, "--record") == 0) {
            record = v;
        } else if (strcmp(a, "--latency-ms") == 0) {
            if (fk_parse_long(v, 0, 600000, &g_opt.latency_ms) != 0) {
                fk_die_usage(PROG, USAGE, "--latency-ms: expected 0..600000, got '%s'", v);
            }
        } else if (strcmp(a, "--retry-after") == 0) {
            if (fk_parse_long(v, 0, 86400, &g_opt.retry_after) != 0) {
                fk_die_usage(PROG, USAGE, "--retry-after: expected 0..86400 seconds, got '%s'", v);
            }
        } else if (strcmp(a, "--fail-first") == 0) {
            char n[32];
            const char *colon = strchr(v, ':');
            if (!colon || (size_t)(colon - v) >= sizeof(n)) {
                fk_die_usage(PROG, USAGE, "--fail-first: expected N:STATUS, got '%s'", v);
            }
            memcpy(n, v, (size_t)(colon - v));
            n[colon - v] = '\0';
            if (fk_parse_long(n, 0, 1000000, &g_opt.fail_n) != 0 ||
                fk_parse_long(colon + 1, 400, 599, &g_opt.fail_status) != 0) {
                fk_die_usage(PROG, USAGE,
                             "--fail-first: expected N:STATUS with STATUS 400..599, got '%s'", v);
            }
        } else {
            fk_die_usage(PROG, USAGE, "unknown option %s", a);
        }
    }
    if (!g_opt.token || !*g_opt.token) {
        fk_die_usage(PROG, USAGE, "--token is required");
    }
    g.tables = json_object();
    int rc = 1;
    if (record) {
        g_opt.record_fd = fk_open_record(PROG, record);
        if (g_opt.record_fd < 0) {
            goto fail;
        }
    }
    rc = fk_serve(PROG, port, port_file, on_request, on_completed, NULL, stats_json);
fail:
    if (g_opt.record_fd >= 0 && close(g_opt.record_fd) != 0) {
        fprintf(stderr, PROG ": closing the --record file failed: %s\n", strerror(errno));
        rc = 1;
    }
    json_decref(g.tables);
    return rc;
}
