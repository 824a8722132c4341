/* fake_actionnetwork: a strict stand-in for Action Network's OSDI person
 * signup helper (`POST /api/v2/people/`), for tests, the demo and
 * benchmarks. It checks the OSDI-API-Token header and the person's shape,
 * rejects what Action Network rejects (see /work/shared/contracts.md and
 * tests/fakes/README.md), keeps people deduplicated by e-mail address
 * (case-insensitive) so a repeated signup updates the same person, enforces
 * a requests-per-second limit with 429 + Retry-After, injects faults on
 * demand, and shows its people at GET /_people and its counters at
 * GET /_stats.
 *
 * Bodies are small (one person), so jansson parses each one; the people live
 * in one jansson array indexed by a jansson object (e-mail -> index), all
 * under one mutex. */
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/time.h>

#include <jansson.h>

#include "fake_common.h"

#define PROG "fake_actionnetwork"
#define USAGE                                                                                      \
    "--port N (0 = any free port) [--port-file FILE] --api-key KEY [--record FILE.jsonl]\n"        \
    "       [--rate N (requests/s, default 4, 0 = unlimited)] [--retry-after S]\n"                 \
    "       [--latency-ms N] [--fault-rate P] [--faults 500,429,html502,drop] [--seed N]\n"        \
    "       [--fail-first N[:STATUS]] [--reject-email SUBSTR]"

#define LOG_REJECTIONS_MAX 50
/* The rate limiter's window holds at most this many admissions. */
#define RATE_MAX 100000

enum route { R_PEOPLE, R_PEOPLE_DUMP, R_STATS, R_RESET, R_NOTFOUND };
enum fault { F_500, F_429, F_HTML502, F_DROP };

static const char *const fault_names[] = {"500", "429", "html502", "drop"};

static struct {
    const char *api_key;
    long rate; /* admitted requests per second, 0 = unlimited */
    long retry_after;
    long latency_ms;
    double fault_rate;
    int faults[8]; /* enum fault */
    size_t n_faults;
    long fail_first; /* the first N people requests get fail_status */
    long fail_status;
    const char *reject_email;
    int record_fd;
} g_opt = {.rate = 4, .retry_after = -1, .fail_status = 500, .record_fd = -1};

static struct {
    pthread_mutex_t mu;
    unsigned long requests, people_requests, created, updated, rejected, drops;
    unsigned long rate_limited, ignored_keys, rejections_logged, fail_first_used;
    unsigned long status[600];
    long inflight, peak;
    uint64_t rng;
    json_t *people; /* array of person objects */
    json_t *by_key; /* "e:<lower-case email>" or "p:<phone>" -> index in people */
    unsigned long next_id;
    double *admitted; /* ring of admission times of the last `rate` requests */
    size_t adm_head, adm_n;
} g_st = {.mu = PTHREAD_MUTEX_INITIALIZER};

static pthread_mutex_t g_rec_mu = PTHREAD_MUTEX_INITIALIZER;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rng_next_locked(void)
{
    uint64_t z = (g_st.rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void count_status(unsigned status)
{
    pthread_mutex_lock(&g_st.mu);
    if (status < 600) {
        g_st.status[status]++;
    }
    pthread_mutex_unlock(&g_st.mu);
}

/* Action Network's error bodies are {"error":"..."}. */
static enum MHD_Result respond_error(struct MHD_Connection *c, unsigned status, const char *msg)
{
    sl_buf b;
    sl_buf_init(&b, 64 * 1024);
    enum MHD_Result rc = MHD_NO;
    if (sl_buf_puts(&b, "{\"error\":\"") == 0 && sl_json_escape(&b, msg, strlen(msg)) == 0 &&
        sl_buf_puts(&b, "\"}") == 0) {
        rc = fk_respond(c, status, "application/json", b.data, b.len);
    }
    sl_buf_free(&b);
    return rc;
}

static enum MHD_Result reject(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
    SL_PRINTF(3, 4);
static enum MHD_Result reject(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g_st.mu);
    g_st.status[status]++;
    if (status == 400) {
        g_st.rejected++;
    }
    unsigned long logged = g_st.rejections_logged++;
    pthread_mutex_unlock(&g_st.mu);
    if (logged < LOG_REJECTIONS_MAX) {
        fprintf(stderr, PROG ": %u %s%s\n", status, msg,
                logged + 1 == LOG_REJECTIONS_MAX ? " (further rejections not logged)" : "");
    }
    return respond_error(c, status, msg);
}

static enum MHD_Result respond_429(struct MHD_Connection *c, long retry_after, const char *why)
{
    sl_buf b;
    sl_buf_init(&b, 4096);
    sl_buf_printf(&b, "{\"error\":\"%s\"}", why);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_COPY);
    sl_buf_free(&b);
    if (!resp) {
        return MHD_NO;
    }
    char ra[32];
    snprintf(ra, sizeof(ra), "%ld", retry_after);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    enum MHD_Result rc = MHD_queue_response(c, 429, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result method_not_allowed(struct MHD_Connection *c, const char *method,
                                          const char *url, const char *allow)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "method %.20s not allowed on %.200s: use %s", method, url, allow);
    sl_buf b;
    sl_buf_init(&b, 4096);
    sl_buf_puts(&b, "{\"error\":\"");
    sl_json_escape(&b, msg, strlen(msg));
    sl_buf_puts(&b, "\"}");
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_COPY);
    sl_buf_free(&b);
    if (!resp) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result rc = MHD_queue_response(c, 405, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result answer_fault(struct MHD_Connection *c, enum fault f)
{
    static const char html[] =
        "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
        "<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n";
    if (f == F_DROP) {
        pthread_mutex_lock(&g_st.mu);
        g_st.drops++;
        pthread_mutex_unlock(&g_st.mu);
        return MHD_NO;
    }
    if (f == F_HTML502) {
        count_status(502);
        return fk_respond(c, 502, "text/html", html, sizeof(html) - 1);
    }
    if (f == F_429) {
        count_status(429);
        return respond_429(c, g_opt.retry_after >= 0 ? g_opt.retry_after : 1,
                           "Too Many Requests (fake_actionnetwork injected fault)");
    }
    count_status(500);
    return respond_error(c, 500, "Internal Server Error (fake_actionnetwork injected fault)");
}

/* ---- rate limit ----------------------------------------------------------- */

/* Admit one request now, or say how many whole seconds to wait (>= 1):
 * at most g_opt.rate admissions in any one-second window. */
static long rate_admit_locked(double t)
{
    if (g_opt.rate <= 0) {
        return 0;
    }
    size_t cap = (size_t)g_opt.rate;
    if (g_st.adm_n == cap) {
        double oldest = g_st.admitted[g_st.adm_head];
        if (t - oldest < 1.0) {
            long wait = (long)ceil(1.0 - (t - oldest));
            return wait < 1 ? 1 : wait;
        }
        g_st.adm_head = (g_st.adm_head + 1) % cap;
        g_st.adm_n--;
    }
    g_st.admitted[(g_st.adm_head + g_st.adm_n) % cap] = t;
    g_st.adm_n++;
    return 0;
}

/* ---- stats and dumps ---------------------------------------------------- */

static void stats_json(sl_buf *b)
{
    static const unsigned always[] = {200, 400, 401, 429, 500};
    pthread_mutex_lock(&g_st.mu);
    sl_buf_printf(b,
                  "{\"requests\":%lu,\"people_requests\":%lu,\"created\":%lu,\"updated\":%lu,"
                  "\"rejected\":%lu,\"rate_limited\":%lu,\"ignored_keys\":%lu,\"status\":",
                  g_st.requests, g_st.people_requests, g_st.created, g_st.updated, g_st.rejected,
                  g_st.rate_limited, g_st.ignored_keys);
    fk_status_json(b, g_st.status, 600, always, sizeof(always) / sizeof(always[0]));
    sl_buf_printf(b, ",\"drops\":%lu,\"peak_concurrency\":%ld,\"in_flight\":%ld,\"people\":%zu}",
                  g_st.drops, g_st.peak, g_st.inflight, json_array_size(g_st.people));
    pthread_mutex_unlock(&g_st.mu);
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

static enum MHD_Result answer_people_dump(struct MHD_Connection *c)
{
    pthread_mutex_lock(&g_st.mu);
    char *s = json_dumps(g_st.people, JSON_COMPACT | JSON_PRESERVE_ORDER);
    pthread_mutex_unlock(&g_st.mu);
    if (!s) {
        return MHD_NO;
    }
    enum MHD_Result rc = fk_respond(c, 200, "application/json", s, strlen(s));
    free(s);
    return rc;
}

/* Counters and people go; the rate limiter's memory and peaks restart. */
static enum MHD_Result answer_reset(struct MHD_Connection *c)
{
    static const char ok[] = "{\"message\":\"reset\"}";
    pthread_mutex_lock(&g_st.mu);
    g_st.requests = g_st.people_requests = g_st.created = g_st.updated = 0;
    g_st.rejected = g_st.drops = g_st.rate_limited = g_st.ignored_keys = 0;
    g_st.rejections_logged = 0;
    memset(g_st.status, 0, sizeof(g_st.status));
    g_st.peak = g_st.inflight;
    json_array_clear(g_st.people);
    json_object_clear(g_st.by_key);
    g_st.adm_head = g_st.adm_n = 0;
    pthread_mutex_unlock(&g_st.mu);
    return fk_respond(c, 200, "application/json", ok, sizeof(ok) - 1);
}

/* ---- the person -------------------------------------------------------------- */

/* Checks of an e-mail address: one '@', a local part, a domain with a dot
 * between non-empty labels, no whitespace or control characters, at most
 * 254 bytes. What Action Network refuses as "not a valid email address". */
static int email_valid(const char *s)
{
    size_t n = strlen(s);
    const char *at = strchr(s, '@');
    if (n == 0 || n > 254 || !at || at == s || strchr(at + 1, '@')) {
        return 0;
    }
    for (const char *p = s; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch <= 0x20 || ch == 0x7f || ch == ',' || ch == ';' || ch == '<' || ch == '>' ||
            ch == '"' || ch == '(' || ch == ')') {
            return 0;
        }
    }
    const char *dom = at + 1;
    const char *dot = strrchr(dom, '.');
    if (!*dom || !dot || dot == dom || !dot[1] || strstr(dom, "..") || dom[0] == '.' ||
        dom[strlen(dom) - 1] == '.') {
        return 0;
    }
    return 1;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* Validate the signup helper body. 0 ok, else msg filled. Sets *email (the
 * first address, borrowed from root) and *phone (first number) when present,
 * and counts keys it does not know in *ignored. */
static int validate_body(json_t *root, char *msg, size_t cap, const char **email,
                         const char **phone, unsigned long *ignored)
{
    static const char *const top_keys[] = {"person", "add_tags", "remove_tags", "triggers", NULL};
    static const char *const person_keys[] = {"identifiers",
                                              "given_name",
                                              "family_name",
                                              "email_addresses",
                                              "phone_numbers",
                                              "postal_addresses",
                                              "custom_fields",
                                              "languages_spoken",
                                              "status",
                                              "mobile_status",
                                              NULL};
    *email = *phone = NULL;
    if (!json_is_object(root)) {
        snprintf(msg, cap, "the body must be a JSON object, got %s", type_name(root));
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v)
    {
        int known = 0;
        for (size_t i = 0; top_keys[i] && !known; i++) {
            known = strcmp(k, top_keys[i]) == 0;
        }
        *ignored += !known;
    }
    json_t *person = json_object_get(root, "person");
    if (!person) {
        snprintf(msg, cap,
                 "'person' is required (the person signup helper takes {\"person\":{...}})");
        return -1;
    }
    if (!json_is_object(person)) {
        snprintf(msg, cap, "'person' must be an object, got %s", type_name(person));
        return -1;
    }
    json_object_foreach(person, k, v)
    {
        int known = 0;
        for (size_t i = 0; person_keys[i] && !known; i++) {
            known = strcmp(k, person_keys[i]) == 0;
        }
        *ignored += !known;
    }
    const char *names[] = {"given_name", "family_name"};
    for (size_t i = 0; i < 2; i++) {
        json_t *n = json_object_get(person, names[i]);
        if (n && !json_is_string(n) && !json_is_null(n)) {
            snprintf(msg, cap, "person.%s must be a string, got %s", names[i], type_name(n));
            return -1;
        }
    }
    json_t *emails = json_object_get(person, "email_addresses");
    if (emails) {
        if (!json_is_array(emails)) {
            snprintf(msg, cap, "person.email_addresses must be an array, got %s",
                     type_name(emails));
            return -1;
        }
        size_t i;
        json_array_foreach(emails, i, v)
        {
            json_t *addr = json_object_get(v, "address");
            if (!json_is_object(v) || !json_is_string(addr)) {
                snprintf(msg, cap,
                         "person.email_addresses[%zu] must be an object with an "
                         "'address' string",
                         i);
                return -1;
            }
            if (!email_valid(json_string_value(addr))) {
                snprintf(msg, cap,
                         "person.email_addresses[%zu].address '%.200s' is not a valid "
                         "email address",
                         i, json_string_value(addr));
                return -1;
            }
            if (!*email) {
                *email = json_string_value(addr);
            }
        }
    }
    json_t *phones = json_object_get(person, "phone_numbers");
    if (phones) {
        if (!json_is_array(phones)) {
            snprintf(msg, cap, "person.phone_numbers must be an array, got %s", type_name(phones));
            return -1;
        }
        size_t i;
        json_array_foreach(phones, i, v)
        {
            json_t *num = json_object_get(v, "number");
            if (!json_is_object(v) || !json_is_string(num) || !json_string_value(num)[0]) {
                snprintf(msg, cap,
                         "person.phone_numbers[%zu] must be an object with a non-empty 'number' "
                         "string",
                         i);
                return -1;
            }
            const char *s = json_string_value(num);
            int digits = 0;
            for (const char *p = s; *p; p++) {
                if (isdigit((unsigned char)*p)) {
                    digits++;
                } else if (!strchr("+()-. ", *p)) {
                    snprintf(msg, cap,
                             "person.phone_numbers[%zu].number '%.100s' is not a phone "
                             "number",
                             i, s);
                    return -1;
                }
            }
            if (digits < 7 || digits > 15) {
                snprintf(msg, cap,
                         "person.phone_numbers[%zu].number '%.100s' is not a phone number "
                         "(7 to 15 digits)",
                         i, s);
                return -1;
            }
            if (!*phone) {
                *phone = s;
            }
        }
    }
    if (!*email && !*phone) {
        snprintf(msg, cap,
                 "a person needs an email address or a phone number "
                 "(person.email_addresses or person.phone_numbers)");
        return -1;
    }
    json_t *addrs = json_object_get(person, "postal_addresses");
    if (addrs) {
        if (!json_is_array(addrs)) {
            snprintf(msg, cap, "person.postal_addresses must be an array, got %s",
                     type_name(addrs));
            return -1;
        }
        size_t i;
        json_array_foreach(addrs, i, v)
        {
            if (!json_is_object(v)) {
                snprintf(msg, cap, "person.postal_addresses[%zu] must be an object", i);
                return -1;
            }
            json_t *lines = json_object_get(v, "address_lines");
            if (lines) {
                size_t j;
                json_t *l;
                if (!json_is_array(lines)) {
                    snprintf(msg, cap,
                             "person.postal_addresses[%zu].address_lines must be an "
                             "array of strings",
                             i);
                    return -1;
                }
                json_array_foreach(lines, j, l)
                {
                    if (!json_is_string(l)) {
                        snprintf(msg, cap,
                                 "person.postal_addresses[%zu].address_lines[%zu] must "
                                 "be a string, got %s",
                                 i, j, type_name(l));
                        return -1;
                    }
                }
            }
            const char *fields[] = {"locality", "region", "postal_code", "country"};
            for (size_t f = 0; f < 4; f++) {
                json_t *x = json_object_get(v, fields[f]);
                if (x && !json_is_string(x)) {
                    snprintf(msg, cap, "person.postal_addresses[%zu].%s must be a string, got %s",
                             i, fields[f], type_name(x));
                    return -1;
                }
            }
        }
    }
    json_t *cf = json_object_get(person, "custom_fields");
    if (cf) {
        if (!json_is_object(cf)) {
            snprintf(msg, cap, "person.custom_fields must be an object, got %s", type_name(cf));
            return -1;
        }
        json_object_foreach(cf, k, v)
        {
            if (!json_is_string(v)) {
                /* custom field values are text; booleans travel as "True"/"False" */
                snprintf(msg, cap, "person.custom_fields.%.100s must be a string, got %s", k,
                         type_name(v));
                return -1;
            }
        }
    }
    const char *tagkeys[] = {"add_tags", "remove_tags"};
    for (size_t t = 0; t < 2; t++) {
        json_t *tags = json_object_get(root, tagkeys[t]);
        if (!tags) {
            continue;
        }
        size_t i;
        int ok = json_is_array(tags);
        json_array_foreach(tags, i, v)
        {
            ok &= json_is_string(v);
        }
        if (!ok) {
            snprintf(msg, cap, "'%s' must be an array of strings", tagkeys[t]);
            return -1;
        }
    }
    return 0;
}

static void lower_key(char *dst, size_t cap, char kind, const char *s)
{
    size_t n = 0;
    dst[n++] = kind;
    dst[n++] = ':';
    for (; *s && n + 1 < cap; s++) {
        if (kind == 'p') {
            if (isdigit((unsigned char)*s)) {
                dst[n++] = *s;
            }
        } else {
            dst[n++] = (char)tolower((unsigned char)*s);
        }
    }
    dst[n] = '\0';
}

static void iso_now(char *dst, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(dst, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Create or update the stored person. Called with g_st.mu held; returns a
 * new reference to the person as stored. */
static json_t *upsert_locked(json_t *root, const char *email, const char *phone, int *created)
{
    json_t *in = json_object_get(root, "person");
    char ekey[300] = "", pkey[64] = "";
    json_t *idx = NULL;
    if (email) {
        lower_key(ekey, sizeof(ekey), 'e', email);
        idx = json_object_get(g_st.by_key, ekey);
    }
    if (!idx && phone) {
        lower_key(pkey, sizeof(pkey), 'p', phone);
        idx = json_object_get(g_st.by_key, pkey);
    }
    char now[32];
    iso_now(now, sizeof(now));
    json_t *p;
    if (idx) {
        p = json_array_get(g_st.people, (size_t)json_integer_value(idx));
        *created = 0;
        json_object_set_new(p, "signups",
                            json_integer(json_integer_value(json_object_get(p, "signups")) + 1));
    } else {
        char id[64];
        snprintf(id, sizeof(id), "action_network:fa4e0000-0000-4000-8000-%012lx", ++g_st.next_id);
        p = json_object();
        json_object_set_new(p, "identifiers", json_pack("[s]", id));
        json_object_set_new(p, "created_date", json_string(now));
        json_object_set_new(p, "email_addresses", json_array());
        json_object_set_new(p, "phone_numbers", json_array());
        json_object_set_new(p, "postal_addresses", json_array());
        json_object_set_new(p, "custom_fields", json_object());
        json_object_set_new(p, "tags", json_array());
        json_object_set_new(p, "signups", json_integer(1));
        json_array_append_new(g_st.people, p);
        *created = 1;
    }
    size_t at = idx ? (size_t)json_integer_value(idx) : json_array_size(g_st.people) - 1;
    json_object_set_new(p, "modified_date", json_string(now));
    const char *names[] = {"given_name", "family_name"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(in, names[i]);
        if (json_is_string(v)) {
            json_object_set(p, names[i], v);
        }
    }
    /* the stored address keeps its case; matching ignores it */
    if (email) {
        json_t *list = json_object_get(p, "email_addresses");
        if (json_array_size(list) == 0) {
            json_array_append_new(list, json_pack("{s:b,s:s,s:s}", "primary", 1, "address", email,
                                                  "status", "subscribed"));
        }
        json_object_set_new(g_st.by_key, ekey, json_integer((json_int_t)at));
    }
    if (phone) {
        json_t *list = json_object_get(p, "phone_numbers");
        json_array_clear(list);
        json_array_append_new(list, json_pack("{s:b,s:s}", "primary", 1, "number", phone));
        if (!pkey[0]) {
            lower_key(pkey, sizeof(pkey), 'p', phone);
        }
        json_object_set_new(g_st.by_key, pkey, json_integer((json_int_t)at));
    }
    json_t *addrs = json_object_get(in, "postal_addresses");
    if (json_array_size(addrs) > 0) {
        json_t *a = json_deep_copy(json_array_get(addrs, 0));
        json_object_set_new(a, "primary", json_true());
        json_t *list = json_object_get(p, "postal_addresses");
        json_array_clear(list);
        json_array_append_new(list, a);
    }
    json_t *cf = json_object_get(in, "custom_fields");
    if (cf) {
        json_object_update(json_object_get(p, "custom_fields"), cf);
    }
    json_t *tags = json_object_get(root, "add_tags"), *t;
    json_t *have = json_object_get(p, "tags");
    size_t i;
    json_array_foreach(tags, i, t)
    {
        int found = 0;
        for (size_t k = 0; k < json_array_size(have) && !found; k++) {
            found = json_equal(json_array_get(have, k), t);
        }
        if (!found) {
            json_array_append(have, t);
        }
    }
    json_t *rm = json_object_get(root, "remove_tags");
    json_array_foreach(rm, i, t)
    {
        for (size_t k = 0; k < json_array_size(have); k++) {
            if (json_equal(json_array_get(have, k), t)) {
                json_array_remove(have, k);
                break;
            }
        }
    }
    json_incref(p);
    return p;
}

static enum MHD_Result answer_people(struct MHD_Connection *c, struct fk_req *r)
{
    if (r->too_big) {
        return reject(c, 413, "request body over %zu bytes", FK_BODY_MAX);
    }
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!fk_is_json_ctype(ct)) {
        return reject(c, 400, "Content-Type must be application/json, got '%.100s'",
                      ct ? ct : "(none)");
    }
    json_error_t jerr;
    json_t *root =
        json_loadb(r->body.data ? r->body.data : "", r->body.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        return reject(c, 400, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                      jerr.text);
    }
    char msg[768];
    const char *email, *phone;
    unsigned long ignored = 0;
    int bad = validate_body(root, msg, sizeof(msg), &email, &phone, &ignored);
    if (!bad && g_opt.reject_email && email && strstr(email, g_opt.reject_email)) {
        snprintf(msg, sizeof(msg),
                 "person.email_addresses[0].address '%.200s' was refused "
                 "(fake_actionnetwork --reject-email)",
                 email);
        bad = 1;
    }
    if (bad) {
        json_decref(root);
        return reject(c, 400, "%s", msg);
    }
    if (g_opt.record_fd >= 0) {
        sl_buf line;
        sl_buf_init(&line, FK_BODY_MAX + 2);
        if (fk_append_compact(&line, r->body.data, r->body.data + r->body.len) == 0 &&
            sl_buf_putc(&line, '\n') == 0) {
            pthread_mutex_lock(&g_rec_mu);
            if (fk_write_all(g_opt.record_fd, line.data, line.len) != 0) {
                fprintf(stderr, PROG ": writing the --record file failed: %s\n", strerror(errno));
            }
            pthread_mutex_unlock(&g_rec_mu);
        }
        sl_buf_free(&line);
    }
    int created = 0;
    pthread_mutex_lock(&g_st.mu);
    g_st.ignored_keys += ignored;
    json_t *p = upsert_locked(root, email, phone, &created);
    if (created) {
        g_st.created++;
    } else {
        g_st.updated++;
    }
    g_st.status[200]++;
    char *out = json_dumps(p, JSON_COMPACT | JSON_PRESERVE_ORDER);
    pthread_mutex_unlock(&g_st.mu);
    json_decref(p);
    json_decref(root);
    if (!out) {
        return MHD_NO;
    }
    enum MHD_Result rc = fk_respond(c, 200, "application/hal+json", out, strlen(out));
    free(out);
    return rc;
}

/* ---- MHD callbacks ----------------------------------------------------------- */

static enum route route_of(const char *url)
{
    if (strcmp(url, "/api/v2/people") == 0 || strcmp(url, "/api/v2/people/") == 0) {
        return R_PEOPLE;
    }
    if (strcmp(url, "/_people") == 0) {
        return R_PEOPLE_DUMP;
    }
    if (strcmp(url, "/_stats") == 0) {
        return R_STATS;
    }
    if (strcmp(url, "/_reset") == 0) {
        return R_RESET;
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
        if (r->route == R_PEOPLE || r->route == R_NOTFOUND) {
            r->counted = 1;
            pthread_mutex_lock(&g_st.mu);
            if (++g_st.inflight > g_st.peak) {
                g_st.peak = g_st.inflight;
            }
            pthread_mutex_unlock(&g_st.mu);
        }
        return MHD_YES;
    }
    if (*upload_size != 0) {
        fk_req_take(r, upload, *upload_size, r->route == R_PEOPLE);
        *upload_size = 0;
        return MHD_YES;
    }
    switch (r->route) {
    case R_STATS:
        return strcmp(method, "GET") == 0 ? answer_stats(c)
                                          : method_not_allowed(c, method, url, "GET");
    case R_PEOPLE_DUMP:
        return strcmp(method, "GET") == 0 ? answer_people_dump(c)
                                          : method_not_allowed(c, method, url, "GET");
    case R_RESET:
        return strcmp(method, "POST") == 0 ? answer_reset(c)
                                           : method_not_allowed(c, method, url, "POST");
    default:
        break;
    }

    /* an API request: counted, latency, auth, rate limit, faults, then the work */
    pthread_mutex_lock(&g_st.mu);
    g_st.requests++;
    pthread_mutex_unlock(&g_st.mu);
    if (g_opt.latency_ms > 0) {
        fk_sleep_ms(g_opt.latency_ms);
    }
    const char *token = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "OSDI-API-Token");
    if (!token || strcmp(token, g_opt.api_key) != 0) {
        /* the presented key is never echoed */
        return reject(c, 401,
                      token ? "API Key invalid or not present (OSDI-API-Token does not match)"
                            : "API Key invalid or not present (no OSDI-API-Token header)");
    }
    if (r->route == R_NOTFOUND) {
        return reject(c, 404,
                      "no route %.20s %.200s: fake_actionnetwork serves POST "
                      "/api/v2/people/",
                      method, url);
    }
    if (strcmp(method, "POST") != 0) {
        count_status(405);
        return method_not_allowed(c, method, url, "POST");
    }
    long wait = 0;
    int faulted = 0, fail_first = 0;
    enum fault f = F_500;
    pthread_mutex_lock(&g_st.mu);
    g_st.people_requests++;
    wait = rate_admit_locked(now_s());
    if (wait) {
        g_st.rate_limited++;
        g_st.status[429]++;
    } else if (g_st.fail_first_used < (unsigned long)g_opt.fail_first) {
        g_st.fail_first_used++;
        fail_first = 1;
    } else if (g_opt.fault_rate > 0) {
        double roll = (double)(rng_next_locked() >> 11) * 0x1.0p-53;
        if (roll < g_opt.fault_rate) {
            faulted = 1;
            f = g_opt.faults[rng_next_locked() % g_opt.n_faults];
        }
    }
    pthread_mutex_unlock(&g_st.mu);
    if (wait) {
        return respond_429(c, g_opt.retry_after >= 0 ? g_opt.retry_after : wait,
                           "Too Many Requests: at most the configured requests per second");
    }
    if (fail_first) {
        if (g_opt.fail_status == 429) {
            count_status(429);
            return respond_429(c, g_opt.retry_after >= 0 ? g_opt.retry_after : 1,
                               "Too Many Requests (fake_actionnetwork --fail-first)");
        }
        return reject(c, (unsigned)g_opt.fail_status, "injected failure (--fail-first)");
    }
    if (faulted) {
        return answer_fault(c, f);
    }
    return answer_people(c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct fk_req *r = *con_cls;
    if (!r) {
        return;
    }
    if (r->counted) {
        pthread_mutex_lock(&g_st.mu);
        g_st.inflight--;
        pthread_mutex_unlock(&g_st.mu);
    }
    fk_req_free(r);
    *con_cls = NULL;
}

/* ---- main ----------------------------------------------------------------------- */

static void stop_nothing(void)
{
}

int main(int argc, char **argv)
{
    long port = 0, seed = 1;
    const char *port_file = NULL, *record = NULL;
    int rc = 1;
    for (size_t k = 0; k < 4; k++) {
        g_opt.faults[k] = (int)k;
    }
    g_opt.n_faults = 4;
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
        } else if (strcmp(a, "--api-key") == 0) {
            g_opt.api_key = v;
        } else if (strcmp(a, "--record") == 0) {
            record = v;
        } else if (strcmp(a, "--rate") == 0) {
            if (fk_parse_long(v, 0, RATE_MAX, &g_opt.rate) != 0) {
                fk_die_usage(PROG, USAGE, "--rate: expected 0..%d requests/s, got '%s'", RATE_MAX,
                             v);
            }
        } else if (strcmp(a, "--retry-after") == 0) {
            if (fk_parse_long(v, 0, 86400, &g_opt.retry_after) != 0) {
                fk_die_usage(PROG, USAGE, "--retry-after: expected 0..86400 seconds, got '%s'", v);
            }
        } else if (strcmp(a, "--latency-ms") == 0) {
            if (fk_parse_long(v, 0, 600000, &g_opt.latency_ms) != 0) {
                fk_die_usage(PROG, USAGE, "--latency-ms: expected 0..600000, got '%s'", v);
            }
        } else if (strcmp(a, "--fault-rate") == 0) {
            char *end = NULL;
            g_opt.fault_rate = strtod(v, &end);
            if (end == v || *end != '\0' || !(g_opt.fault_rate >= 0 && g_opt.fault_rate <= 1)) {
                fk_die_usage(PROG, USAGE, "--fault-rate: expected a number in [0, 1], got '%s'", v);
            }
        } else if (strcmp(a, "--faults") == 0) {
            g_opt.n_faults = fk_parse_faults(PROG, USAGE, v, fault_names, 4, g_opt.faults, 8);
        } else if (strcmp(a, "--fail-first") == 0) {
            char buf[64];
            snprintf(buf, sizeof(buf), "%s", v);
            char *colon = strchr(buf, ':');
            if (colon) {
                *colon = '\0';
            }
            if (fk_parse_long(buf, 0, LONG_MAX, &g_opt.fail_first) != 0 ||
                (colon && (fk_parse_long(colon + 1, 400, 599, &g_opt.fail_status) != 0 ||
                           g_opt.fail_status == 413))) {
                fk_die_usage(PROG, USAGE,
                             "--fail-first: expected N or N:STATUS (STATUS 400..599), got '%s'", v);
            }
        } else if (strcmp(a, "--reject-email") == 0) {
            if (!*v) {
                fk_die_usage(PROG, USAGE, "--reject-email: expected a non-empty substring");
            }
            g_opt.reject_email = v;
        } else if (strcmp(a, "--seed") == 0) {
            if (fk_parse_long(v, 0, LONG_MAX, &seed) != 0) {
                fk_die_usage(PROG, USAGE, "--seed: expected a non-negative integer, got '%s'", v);
            }
        } else {
            fk_die_usage(PROG, USAGE, "unknown option %s", a);
        }
    }
    if (!g_opt.api_key || !*g_opt.api_key) {
        fk_die_usage(PROG, USAGE, "--api-key is required");
    }
    g_st.rng = (uint64_t)seed;
    g_st.people = json_array();
    g_st.by_key = json_object();
    if (g_opt.rate > 0) {
        g_st.admitted = calloc((size_t)g_opt.rate, sizeof(*g_st.admitted));
    }
    if (!g_st.people || !g_st.by_key || (g_opt.rate > 0 && !g_st.admitted)) {
        fprintf(stderr, PROG ": out of memory\n");
        goto fail;
    }
    if (record) {
        g_opt.record_fd = fk_open_record(PROG, record);
        if (g_opt.record_fd < 0) {
            goto fail;
        }
    }
    rc = fk_serve(PROG, port, port_file, on_request, on_completed, stop_nothing, stats_json);
fail:
    if (g_opt.record_fd >= 0 && close(g_opt.record_fd) != 0) {
        fprintf(stderr, PROG ": closing the --record file failed: %s\n", strerror(errno));
        rc = 1;
    }
    json_decref(g_st.people);
    json_decref(g_st.by_key);
    free(g_st.admitted);
    return rc;
}
