/* fake_braze: a strict stand-in for Braze's POST /users/track, for tests, the
 * demo and benchmarks. It rejects what Braze rejects (see
 * /work/shared/contracts.md and tests/fakes/README.md), records every accepted
 * attribute object as one JSON line, injects faults on demand and counts
 * everything at GET /_stats.
 *
 * Speed matters (the benchmark pushes thousands of 75-object requests per
 * second through it on a shared 2-core machine): one pass of an
 * allocation-free validating scanner per request (jansson only for the rare
 * bodies the scanner hands over), one write() per request to the record file,
 * one short mutex section for the counters. */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>

#include <jansson.h>

#include "fake_common.h"

#define PROG "fake_braze"
#define USAGE                                                                                      \
    "--port N (0 = any free port) [--port-file FILE] --api-key KEY [--record FILE.jsonl]\n"        \
    "       [--latency-ms N] [--fault-rate P] [--faults 500,429,html502,drop] [--retry-after S]\n" \
    "       [--reject-id SUBSTR] [--seed N] [--require-bulk | --no-require-bulk]\n"                \
    "       [--cross-check] [--garble-201 html|huge]"

/* Braze's documented limit of attribute objects per /users/track request. */
#define BRAZE_MAX_ATTRIBUTES 75
/* Rejections logged to stderr before going quiet (a broken client would flood it). */
#define LOG_REJECTIONS_MAX 50

enum route { R_TRACK, R_STATS, R_RESET, R_NOTFOUND };
enum fault { F_500, F_429, F_HTML502, F_DROP };

static const char *const fault_names[] = {"500", "429", "html502", "drop"};

/* --garble-201: accepted requests are processed (recorded, counted) as usual,
 * but the 201 carries a body the client cannot read: an HTML page (a proxy in
 * the way), or the JSON answer padded past 2 MiB (over a client's response
 * cap; the errors list comes first, so a cut body loses its end). */
enum garble { G_NONE = 0, G_HTML, G_HUGE };
#define GARBLE_HUGE_BYTES ((size_t)2 * 1024 * 1024)

static struct {
    const char *api_key;
    long latency_ms;
    double fault_rate;
    int faults[8]; /* enum fault */
    size_t n_faults;
    long retry_after;
    const char *reject_id;
    size_t reject_len;
    int require_bulk;
    int cross_check; /* run jansson too and fail on any disagreement */
    int record_fd;   /* -1 when not recording */
    int garble;      /* --garble-201: G_* */
} g_opt = {.retry_after = 1, .require_bulk = 1, .record_fd = -1};

/* All counters, the PRNG and the seen-id set live under one mutex: each request
 * takes it for a few hundred nanoseconds. */
static struct {
    pthread_mutex_t mu;
    unsigned long requests, accepted_requests, accepted_records, rejected_records;
    unsigned long drops, duplicates, rejections_logged;
    unsigned long status[600];
    long inflight, peak;
    uint64_t rng;
    /* Open-addressing set of 64-bit external_id hashes (0 = empty slot):
     * 8 bytes a slot, 5M ids fit in a 64 MB table. */
    uint64_t *seen;
    size_t seen_cap, seen_n;
    int seen_oom_logged;
} g_st = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Keeps each request's lines contiguous and in answer order in the record file. */
static pthread_mutex_t g_rec_mu = PTHREAD_MUTEX_INITIALIZER;

/* ---- helpers under g_st.mu ---------------------------------------------- */

static uint64_t rng_next_locked(void)
{
    /* splitmix64: tiny, seedable, good enough to pick faults. */
    uint64_t z = (g_st.rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t id_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, then a murmur3 finaliser */
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h ? h : 1;
}

static void seen_put_slot(uint64_t *tab, size_t cap, uint64_t h)
{
    size_t i = (size_t)h & (cap - 1);
    while (tab[i] != 0) {
        i = (i + 1) & (cap - 1);
    }
    tab[i] = h;
}

/* 1 when h was already in the set (a duplicate), 0 when it was added. */
static int seen_insert_locked(uint64_t h)
{
    if ((g_st.seen_n + 1) * 10 > g_st.seen_cap * 7) {
        size_t cap = g_st.seen_cap ? g_st.seen_cap * 2 : (size_t)1 << 16;
        uint64_t *tab = calloc(cap, sizeof(*tab));
        if (!tab) {
            if (!g_st.seen_oom_logged) {
                fprintf(stderr,
                        PROG ": out of memory growing the seen-id set to %zu slots; "
                             "'duplicates' is no longer exact\n",
                        cap);
                g_st.seen_oom_logged = 1;
            }
            return 0;
        }
        for (size_t i = 0; i < g_st.seen_cap; i++) {
            if (g_st.seen[i]) {
                seen_put_slot(tab, cap, g_st.seen[i]);
            }
        }
        free(g_st.seen);
        g_st.seen = tab;
        g_st.seen_cap = cap;
    }
    size_t i = (size_t)h & (g_st.seen_cap - 1);
    while (g_st.seen[i] != 0) {
        if (g_st.seen[i] == h) {
            return 1;
        }
        i = (i + 1) & (g_st.seen_cap - 1);
    }
    g_st.seen[i] = h;
    g_st.seen_n++;
    return 0;
}

static void count_status(unsigned status)
{
    pthread_mutex_lock(&g_st.mu);
    if (status < 600) {
        g_st.status[status]++;
    }
    pthread_mutex_unlock(&g_st.mu);
}

/* ---- answers --------------------------------------------------------------- */

static enum MHD_Result reject(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
    SL_PRINTF(3, 4);

/* A 4xx for a request Braze would refuse: counted, logged (bounded) and
 * answered {"message":"..."}. */
static enum MHD_Result reject(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g_st.mu);
    g_st.status[status]++;
    unsigned long logged = g_st.rejections_logged++;
    pthread_mutex_unlock(&g_st.mu);
    if (logged < LOG_REJECTIONS_MAX) {
        fprintf(stderr, PROG ": %u %s%s\n", status, msg,
                logged + 1 == LOG_REJECTIONS_MAX ? " (further rejections not logged)" : "");
    }
    return fk_respond_message(c, status, msg);
}

static enum MHD_Result method_not_allowed(struct MHD_Connection *c, const char *method,
                                          const char *url, const char *allow, int counted)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "method %.20s not allowed on %.200s: use %s", method, url, allow);
    if (counted) {
        count_status(405);
    }
    struct MHD_Response *resp = NULL;
    sl_buf b;
    sl_buf_init(&b, 4096);
    enum MHD_Result rc = MHD_NO;
    if (sl_buf_puts(&b, "{\"message\":\"") != 0 || sl_json_escape(&b, msg, strlen(msg)) != 0 ||
        sl_buf_puts(&b, "\"}") != 0) {
        goto fail;
    }
    resp = MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_COPY);
    if (!resp) {
        goto fail;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    rc = MHD_queue_response(c, 405, resp);
fail:
    if (resp) {
        MHD_destroy_response(resp);
    }
    sl_buf_free(&b);
    return rc;
}

/* Injected fault instead of processing. Returns MHD_NO for "drop", which makes
 * MHD close the connection without an answer. */
static enum MHD_Result answer_fault(struct MHD_Connection *c, enum fault f)
{
    static const char html[] =
        "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
        "<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n";
    static const char j500[] =
        "{\"message\":\"Internal Server Error (fake_braze injected fault)\"}";
    static const char j429[] = "{\"message\":\"Too Many Requests (fake_braze injected fault)\"}";
    if (f == F_DROP) {
        pthread_mutex_lock(&g_st.mu);
        g_st.drops++;
        pthread_mutex_unlock(&g_st.mu);
        return MHD_NO;
    }
    if (f == F_500) {
        count_status(500);
        return fk_respond(c, 500, "application/json", j500, sizeof(j500) - 1);
    }
    if (f == F_HTML502) {
        count_status(502);
        return fk_respond(c, 502, "text/html", html, sizeof(html) - 1);
    }
    count_status(429);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(sizeof(j429) - 1, (void *)j429, MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        return MHD_NO;
    }
    char retry[32], reset[32];
    snprintf(retry, sizeof(retry), "%ld", g_opt.retry_after);
    snprintf(reset, sizeof(reset), "%lld", (long long)time(NULL) + g_opt.retry_after);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, retry);
    MHD_add_response_header(resp, "X-RateLimit-Limit", "3000");
    MHD_add_response_header(resp, "X-RateLimit-Remaining", "0");
    MHD_add_response_header(resp, "X-RateLimit-Reset", reset);
    enum MHD_Result rc = MHD_queue_response(c, 429, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* ---- stats ------------------------------------------------------------------ */

static void stats_json(sl_buf *b)
{
    static const unsigned always[] = {201, 400, 401, 429, 500, 502};
    pthread_mutex_lock(&g_st.mu);
    sl_buf_printf(b,
                  "{\"requests\":%lu,\"accepted_requests\":%lu,\"accepted_records\":%lu,"
                  "\"rejected_records\":%lu,\"status\":",
                  g_st.requests, g_st.accepted_requests, g_st.accepted_records,
                  g_st.rejected_records);
    fk_status_json(b, g_st.status, 600, always, sizeof(always) / sizeof(always[0]));
    sl_buf_printf(b,
                  ",\"drops\":%lu,\"peak_concurrency\":%ld,\"duplicates\":%lu,"
                  "\"unique_ids\":%zu,\"in_flight\":%ld}",
                  g_st.drops, g_st.peak, g_st.duplicates, g_st.seen_n, g_st.inflight);
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

static enum MHD_Result answer_reset(struct MHD_Connection *c)
{
    static const char ok[] = "{\"message\":\"reset\"}";
    pthread_mutex_lock(&g_st.mu);
    g_st.requests = g_st.accepted_requests = g_st.accepted_records = 0;
    g_st.rejected_records = g_st.drops = g_st.duplicates = g_st.rejections_logged = 0;
    memset(g_st.status, 0, sizeof(g_st.status));
    g_st.peak = g_st.inflight;
    free(g_st.seen);
    g_st.seen = NULL;
    g_st.seen_cap = g_st.seen_n = 0;
    pthread_mutex_unlock(&g_st.mu);
    return fk_respond(c, 200, "application/json", ok, sizeof(ok) - 1);
}

/* ---- /users/track: what validation needs from a body ------------------------
 * Both parsers below fill a struct doc; validate_doc() turns it into the
 * answer, so the two parsers cannot drift apart in what they accept. */

enum jtype { T_NONE = 0, T_OBJECT, T_ARRAY, T_STRING, T_NUMBER, T_BOOL, T_NULL };

static const char *jtype_name(int t)
{
    static const char *const names[] = {"nothing",  "an object", "an array", "a string",
                                        "a number", "a boolean", "null"};
    return t >= T_NONE && t <= T_NULL ? names[t] : "an unknown value";
}

struct item {
    int type;       /* T_* of attributes[i] */
    int id_type;    /* T_* of its "external_id", T_NONE when absent */
    const char *id; /* decoded external_id (not NUL-terminated) */
    size_t id_len;
    const char *beg, *end; /* raw text of attributes[i]; beg NULL when unknown */
};

struct doc {
    int attrs_type; /* T_* of the top-level "attributes", T_NONE when absent */
    size_t n;       /* elements in "attributes" (may exceed the 75 stored) */
    struct item items[BRAZE_MAX_ATTRIBUTES];
};

struct verdict {
    unsigned status; /* 201, or 400 with msg */
    char msg[768];
    size_t n, n_ok;
    unsigned char accepted[BRAZE_MAX_ATTRIBUTES];
};

/* ---- fast path: an allocation-free validating scanner -------------------------
 * jansson spends ~200 us on a 9 KB body (a tree, a hash table per object, a
 * malloc per string); at benchmark rates that is most of a core. This scanner
 * accepts exactly what json_loadb(JSON_REJECT_DUPLICATES) accepts (RFC 8259,
 * valid UTF-8, no \u0000, paired surrogates, 64-bit integers, finite reals,
 * no duplicate keys) and gives up ("fallback") on what it does not handle
 * cheaply: escaped keys, escaped external_ids, deep nesting, huge objects.
 * --cross-check runs both parsers on every request and fails loudly when
 * they disagree. */

#define SCAN_MAX_DEPTH 64
#define SCAN_MAX_KEYS 1024

enum role { ROLE_OTHER, ROLE_TOP, ROLE_ATTRS, ROLE_ITEM };

struct scan {
    const char *start, *p, *end;
    const char *err; /* reason of the first syntax error, static text */
    const char *err_at;
    int fallback; /* hand this body to jansson */
    int depth;
    int last_escaped; /* the last string scanned had a backslash escape */
    size_t cur_item;  /* index of the attributes element being scanned */
    size_t nkeys;
    struct {
        const char *s;
        size_t n;
    } keys[SCAN_MAX_KEYS]; /* keys of the objects being scanned, innermost last */
    struct doc *doc;
};

static int sc_fail(struct scan *s, const char *at, const char *why)
{
    if (!s->err && !s->fallback) {
        s->err = why;
        s->err_at = at;
    }
    return 0;
}

static int sc_fallback(struct scan *s)
{
    s->fallback = 1;
    return 0;
}

static void sc_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')) {
        s->p++;
    }
}

static int hex4(const unsigned char *p, const unsigned char *end, unsigned *out)
{
    unsigned v = 0;
    if (end - p < 4) {
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= c - '0';
        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            v |= (c | 0x20) - 'a' + 10;
        } else {
            return -1;
        }
    }
    *out = v;
    return 0;
}

/* Length of the valid UTF-8 sequence at p, 0 when invalid (overlong forms,
 * surrogates and code points above U+10FFFF are invalid, as in jansson). */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0], cp;
    size_t n;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n) {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
        return 0;
    }
    return n;
}

/* s->p at the opening quote; leaves s->p after the closing one. */
static int sc_string(struct scan *s)
{
    const unsigned char *p = (const unsigned char *)s->p + 1;
    const unsigned char *end = (const unsigned char *)s->end;
    s->last_escaped = 0;
    for (;;) {
        if (p >= end) {
            return sc_fail(s, s->p, "unterminated string");
        }
        unsigned c = *p;
        if (c == '"') {
            break;
        }
        if (c >= 0x20 && c < 0x80 && c != '\\') {
            p++;
            continue;
        }
        if (c < 0x20) {
            return sc_fail(s, (const char *)p, "control character in a string (must be escaped)");
        }
        if (c >= 0x80) {
            size_t n = utf8_seq(p, end);
            if (n == 0) {
                return sc_fail(s, (const char *)p, "invalid UTF-8 in a string");
            }
            p += n;
            continue;
        }
        s->last_escaped = 1;
        if (p + 1 >= end) {
            return sc_fail(s, s->p, "unterminated string");
        }
        c = p[1];
        if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
            c == 't') {
            p += 2;
            continue;
        }
        unsigned u, lo;
        if (c != 'u' || hex4(p + 2, end, &u) != 0) {
            return sc_fail(s, (const char *)p, "invalid escape in a string");
        }
        if (u == 0) {
            return sc_fail(s, (const char *)p, "\\u0000 is not allowed in a string");
        }
        if (u >= 0xDC00 && u <= 0xDFFF) {
            return sc_fail(s, (const char *)p, "lone low surrogate \\u escape");
        }
        if (u >= 0xD800 && u <= 0xDBFF) {
            if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || hex4(p + 8, end, &lo) != 0 ||
                lo < 0xDC00 || lo > 0xDFFF) {
                return sc_fail(s, (const char *)p,
                               "high surrogate \\u escape not followed by a low surrogate");
            }
            p += 6;
        }
        p += 6;
    }
    s->p = (const char *)p + 1;
    return T_STRING;
}

static int is_digit(const char *p, const char *end)
{
    return p < end && *p >= '0' && *p <= '9';
}

static int sc_number(struct scan *s)
{
    const char *b = s->p, *p = s->p, *end = s->end;
    int is_real = 0, has_exp = 0;
    if (*p == '-') {
        p++;
    }
    if (!is_digit(p, end)) {
        return sc_fail(s, b, "invalid number");
    }
    if (*p == '0') {
        p++;
        if (is_digit(p, end)) {
            return sc_fail(s, b, "number with a leading zero");
        }
    } else {
        while (is_digit(p, end)) {
            p++;
        }
    }
    if (p < end && *p == '.') {
        p++;
        is_real = 1;
        if (!is_digit(p, end)) {
            return sc_fail(s, b, "invalid number (digit expected after '.')");
        }
        while (is_digit(p, end)) {
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        is_real = has_exp = 1;
        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }
        if (!is_digit(p, end)) {
            return sc_fail(s, b, "invalid number (digit expected in the exponent)");
        }
        while (is_digit(p, end)) {
            p++;
        }
    }
    /* The body is NUL-terminated (sl_buf) and the number is followed by a
     * non-number byte, so strtoll/strtod stop exactly at p. Only numbers that
     * can overflow are converted. */
    if (!is_real && p - b >= 19) {
        errno = 0;
        (void)strtoll(b, NULL, 10);
        if (errno == ERANGE) {
            return sc_fail(s, b, "integer does not fit in 64 bits");
        }
    }
    if (is_real && (has_exp || p - b > 300)) {
        errno = 0;
        double v = strtod(b, NULL);
        if ((v == HUGE_VAL || v == -HUGE_VAL) && errno == ERANGE) {
            return sc_fail(s, b, "real number overflow");
        }
    }
    s->p = p;
    return T_NUMBER;
}

static int sc_literal(struct scan *s, const char *word, size_t n, int type)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0) {
        return sc_fail(s, s->p, "invalid token");
    }
    s->p += n;
    return type;
}

static int sc_value(struct scan *s, enum role role);

static int sc_object(struct scan *s, enum role role)
{
    if (++s->depth > SCAN_MAX_DEPTH) {
        return sc_fallback(s);
    }
    size_t base = s->nkeys;
    s->p++;
    sc_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        goto done;
    }
    for (;;) {
        if (s->p >= s->end || *s->p != '"') {
            return sc_fail(s, s->p, "string key or '}' expected");
        }
        const char *k = s->p + 1;
        if (!sc_string(s)) {
            return 0;
        }
        size_t kn = (size_t)(s->p - 1 - k);
        if (s->last_escaped) {
            return sc_fallback(s); /* "a" and "\u0061" are the same key */
        }
        for (size_t i = base; i < s->nkeys; i++) {
            if (s->keys[i].n == kn && memcmp(s->keys[i].s, k, kn) == 0) {
                return sc_fail(s, k - 1, "duplicate key in one object");
            }
        }
        if (s->nkeys == SCAN_MAX_KEYS) {
            return sc_fallback(s);
        }
        s->keys[s->nkeys].s = k;
        s->keys[s->nkeys++].n = kn;
        sc_ws(s);
        if (s->p >= s->end || *s->p != ':') {
            return sc_fail(s, s->p, "':' expected after a key");
        }
        s->p++;
        sc_ws(s);
        const char *v = s->p;
        int t;
        if (role == ROLE_TOP && kn == 10 && memcmp(k, "attributes", 10) == 0) {
            t = sc_value(s, ROLE_ATTRS);
            s->doc->attrs_type = t;
        } else if (role == ROLE_ITEM && kn == 11 && memcmp(k, "external_id", 11) == 0) {
            t = sc_value(s, ROLE_OTHER);
            if (t == T_STRING && s->last_escaped) {
                return sc_fallback(s); /* needs decoding: let jansson do it */
            }
            struct item *it = &s->doc->items[s->cur_item];
            it->id_type = t;
            it->id = v + 1;
            it->id_len = t == T_STRING ? (size_t)(s->p - v - 2) : 0;
        } else {
            t = sc_value(s, ROLE_OTHER);
        }
        if (!t) {
            return 0;
        }
        sc_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            sc_ws(s);
            continue;
        }
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            break;
        }
        return sc_fail(s, s->p, "',' or '}' expected");
    }
done:
    s->nkeys = base;
    s->depth--;
    return T_OBJECT;
}

static int sc_array(struct scan *s, enum role role)
{
    if (++s->depth > SCAN_MAX_DEPTH) {
        return sc_fallback(s);
    }
    s->p++;
    sc_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        goto done;
    }
    for (;;) {
        const char *b = s->p;
        int t;
        if (role == ROLE_ATTRS && s->doc->n < BRAZE_MAX_ATTRIBUTES) {
            struct item *it = &s->doc->items[s->doc->n];
            it->id_type = T_NONE;
            it->id = NULL;
            it->id_len = 0;
            s->cur_item = s->doc->n;
            t = sc_value(s, ROLE_ITEM);
            it->type = t;
            it->beg = b;
            it->end = s->p;
        } else {
            t = sc_value(s, ROLE_OTHER);
        }
        if (!t) {
            return 0;
        }
        if (role == ROLE_ATTRS) {
            s->doc->n++;
        }
        sc_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            sc_ws(s);
            continue;
        }
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            break;
        }
        return sc_fail(s, s->p, "',' or ']' expected");
    }
done:
    s->depth--;
    return T_ARRAY;
}

/* s->p at the first byte of a value. Returns its T_* or 0 (error/fallback). */
static int sc_value(struct scan *s, enum role role)
{
    if (s->p >= s->end) {
        return sc_fail(s, s->p, "unexpected end of input");
    }
    switch (*s->p) {
    case '{':
        return sc_object(s, role);
    case '[':
        return sc_array(s, role);
    case '"':
        return sc_string(s);
    case 't':
        return sc_literal(s, "true", 4, T_BOOL);
    case 'f':
        return sc_literal(s, "false", 5, T_BOOL);
    case 'n':
        return sc_literal(s, "null", 4, T_NULL);
    default:
        if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9')) {
            return sc_number(s);
        }
        return sc_fail(s, s->p, "invalid token");
    }
}

/* Fill doc from body. 0 parsed; 1 hand it to jansson; -1 invalid JSON with
 * the reason in v (status 400). body must be NUL-terminated at len. */
static int parse_fast(const char *body, size_t len, struct doc *doc, struct verdict *v)
{
    struct scan s;
    s.start = s.p = body;
    s.end = body + len;
    s.err = s.err_at = NULL;
    s.fallback = s.depth = s.last_escaped = 0;
    s.cur_item = s.nkeys = 0;
    s.doc = doc;
    doc->attrs_type = T_NONE;
    doc->n = 0;

    sc_ws(&s);
    int t = 0;
    if (s.p < s.end && *s.p != '{' && *s.p != '[') {
        sc_fail(&s, s.p, "'[' or '{' expected");
    } else {
        t = sc_value(&s, ROLE_TOP);
    }
    if (t) {
        sc_ws(&s);
        if (s.p != s.end) {
            t = sc_fail(&s, s.p, "end of input expected after the JSON value");
        }
    }
    if (s.fallback) {
        return 1;
    }
    if (!t) {
        size_t line = 1, col = 1;
        for (const char *q = body; q < s.err_at; q++) {
            if (*q == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        v->status = 400;
        snprintf(v->msg, sizeof(v->msg), "invalid JSON at line %zu column %zu (byte %zu): %s", line,
                 col, (size_t)(s.err_at - body), s.err);
        return -1;
    }
    if (t != T_OBJECT) {
        v->status = 400;
        snprintf(v->msg, sizeof(v->msg),
                 "body must be a JSON object with an 'attributes' array, got %s", jtype_name(t));
        return -1;
    }
    return 0;
}

/* ---- slow path: jansson ----------------------------------------------------- */

static int jansson_type(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return T_OBJECT;
    case JSON_ARRAY:
        return T_ARRAY;
    case JSON_STRING:
        return T_STRING;
    case JSON_INTEGER:
    case JSON_REAL:
        return T_NUMBER;
    case JSON_TRUE:
    case JSON_FALSE:
        return T_BOOL;
    case JSON_NULL:
        return T_NULL;
    }
    return T_NONE;
}

/* Raw text of each element of the top-level "attributes" array of a body
 * jansson accepted. 0 when exactly n spans were found; -1 otherwise (e.g. the
 * key was written with escapes), and the caller re-serialises instead. */
static int attribute_spans(const char *body, size_t len, struct doc *doc)
{
    const char *p = body, *e = body + len;
    size_t n = doc->n < BRAZE_MAX_ATTRIBUTES ? doc->n : BRAZE_MAX_ATTRIBUTES;
    p = fk_skip_ws(p, e);
    if (p >= e || *p != '{') {
        return -1;
    }
    p++;
    for (;;) {
        p = fk_skip_ws(p, e);
        if (p >= e || *p != '"') {
            return -1;
        }
        const char *key = p + 1;
        p = fk_skip_string(p, e);
        if (!p) {
            return -1;
        }
        int is_attrs = (size_t)(p - 1 - key) == 10 && memcmp(key, "attributes", 10) == 0;
        p = fk_skip_ws(p, e);
        if (p >= e || *p != ':') {
            return -1;
        }
        p = fk_skip_ws(p + 1, e);
        if (is_attrs && p < e && *p == '[') {
            size_t i = 0;
            p = fk_skip_ws(p + 1, e);
            while (p < e && *p != ']' && i < n) {
                doc->items[i].beg = p;
                p = fk_skip_value(p, e);
                if (!p) {
                    return -1;
                }
                doc->items[i++].end = p;
                p = fk_skip_ws(p, e);
                if (p < e && *p == ',') {
                    p = fk_skip_ws(p + 1, e);
                }
            }
            return i == n ? 0 : -1;
        }
        p = fk_skip_value(p, e);
        if (!p) {
            return -1;
        }
        p = fk_skip_ws(p, e);
        if (p >= e || *p != ',') {
            return -1;
        }
        p++;
    }
}

/* Fill doc with jansson. 0 parsed (*root owns the strings doc points to;
 * json_decref it after use); -1 invalid with the reason in v. */
static int parse_jansson(const char *body, size_t len, struct doc *doc, struct verdict *v,
                         json_t **root)
{
    json_error_t jerr;
    doc->attrs_type = T_NONE;
    doc->n = 0;
    *root = NULL;
    /* jansson skips a NUL byte that follows a number; JSON (and Braze) do not. */
    const char *nul = memchr(body, '\0', len);
    if (nul) {
        v->status = 400;
        snprintf(v->msg, sizeof(v->msg), "invalid JSON: NUL byte at byte %zu",
                 (size_t)(nul - body));
        return -1;
    }
    *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!*root) {
        v->status = 400;
        snprintf(v->msg, sizeof(v->msg), "invalid JSON at line %d column %d: %s", jerr.line,
                 jerr.column, jerr.text);
        return -1;
    }
    if (!json_is_object(*root)) {
        v->status = 400;
        snprintf(v->msg, sizeof(v->msg),
                 "body must be a JSON object with an 'attributes' array, got %s",
                 jtype_name(jansson_type(*root)));
        return -1;
    }
    json_t *attrs = json_object_get(*root, "attributes");
    if (!attrs) {
        return 0;
    }
    doc->attrs_type = jansson_type(attrs);
    if (!json_is_array(attrs)) {
        return 0;
    }
    doc->n = json_array_size(attrs);
    for (size_t i = 0; i < doc->n && i < BRAZE_MAX_ATTRIBUTES; i++) {
        json_t *o = json_array_get(attrs, i);
        json_t *id = json_object_get(o, "external_id"); /* NULL for non-objects */
        struct item *it = &doc->items[i];
        it->type = jansson_type(o);
        it->id_type = id ? jansson_type(id) : T_NONE;
        it->id = json_is_string(id) ? json_string_value(id) : NULL;
        it->id_len = json_is_string(id) ? json_string_length(id) : 0;
        it->beg = it->end = NULL;
    }
    if (attribute_spans(body, len, doc) != 0) {
        for (size_t i = 0; i < doc->n && i < BRAZE_MAX_ATTRIBUTES; i++) {
            doc->items[i].beg = doc->items[i].end = NULL;
        }
    }
    return 0;
}

/* ---- the rules --------------------------------------------------------------- */

/* Braze's rules on a parsed body; fills v (201 with per-object acceptance, or
 * 400 with a message naming the offending index). */
static void validate_doc(const struct doc *doc, struct verdict *v)
{
    v->status = 400;
    v->n = doc->n;
    v->n_ok = 0;
    if (doc->attrs_type != T_ARRAY) {
        snprintf(v->msg, sizeof(v->msg),
                 "body must have an 'attributes' array of 1..%d objects, "
                 "got %s",
                 BRAZE_MAX_ATTRIBUTES, jtype_name(doc->attrs_type));
        return;
    }
    if (doc->n == 0) {
        snprintf(v->msg, sizeof(v->msg), "'attributes' is empty: send 1..%d objects",
                 BRAZE_MAX_ATTRIBUTES);
        return;
    }
    if (doc->n > BRAZE_MAX_ATTRIBUTES) {
        snprintf(v->msg, sizeof(v->msg),
                 "'attributes' has %zu objects: Braze accepts no more than %d per request", doc->n,
                 BRAZE_MAX_ATTRIBUTES);
        return;
    }
    for (size_t i = 0; i < doc->n; i++) {
        const struct item *it = &doc->items[i];
        if (it->type != T_OBJECT) {
            snprintf(v->msg, sizeof(v->msg), "attributes[%zu] must be an object, got %s", i,
                     jtype_name(it->type));
            return;
        }
        if (it->id_type == T_NONE) {
            snprintf(v->msg, sizeof(v->msg), "attributes[%zu] has no 'external_id'", i);
            return;
        }
        if (it->id_type != T_STRING) {
            snprintf(v->msg, sizeof(v->msg),
                     "attributes[%zu].external_id must be a non-empty string, got %s "
                     "(external_ids are strings: send \"123\", not 123)",
                     i, jtype_name(it->id_type));
            return;
        }
        if (it->id_len == 0) {
            snprintf(v->msg, sizeof(v->msg),
                     "attributes[%zu].external_id must be a non-empty string, got \"\"", i);
            return;
        }
        v->accepted[i] =
            !(g_opt.reject_id && memmem(it->id, it->id_len, g_opt.reject_id, g_opt.reject_len));
        v->n_ok += v->accepted[i];
    }
    v->status = 201;
}

/* --cross-check: both parsers must reach the same answer. NULL when they
 * agree, else a description of the first difference. */
static const char *compare_docs(const struct doc *a, const struct verdict *va, const struct doc *b,
                                const struct verdict *vb)
{
    if (va->status != vb->status) {
        return "different status";
    }
    if (va->status != 201) {
        return NULL;
    }
    if (va->n != vb->n || va->n_ok != vb->n_ok) {
        return "different number of attribute objects";
    }
    for (size_t i = 0; i < va->n; i++) {
        if (va->accepted[i] != vb->accepted[i]) {
            return "different per-object acceptance";
        }
        if (a->items[i].id_len != b->items[i].id_len ||
            memcmp(a->items[i].id, b->items[i].id, a->items[i].id_len) != 0) {
            return "different external_id";
        }
        if (b->items[i].beg &&
            (a->items[i].beg != b->items[i].beg || a->items[i].end != b->items[i].end)) {
            return "different raw span of an attribute object";
        }
    }
    return NULL;
}

/* Append one record line per accepted object: its raw text with whitespace
 * outside strings removed, or jansson's serialisation when the raw text is
 * unknown. 0 or -1 (out of memory). */
static int build_record_lines(sl_buf *lines, const struct doc *doc, const struct verdict *v,
                              json_t *root)
{
    json_t *attrs = root ? json_object_get(root, "attributes") : NULL;
    for (size_t i = 0; i < v->n; i++) {
        const struct item *it = &doc->items[i];
        if (!v->accepted[i]) {
            continue;
        }
        if (it->beg) {
            if (fk_append_compact(lines, it->beg, it->end) != 0) {
                return -1;
            }
        } else {
            char *s = json_dumps(json_array_get(attrs, i), JSON_COMPACT | JSON_PRESERVE_ORDER);
            int bad = !s || sl_buf_puts(lines, s) != 0;
            free(s);
            if (bad) {
                return -1;
            }
        }
        if (sl_buf_putc(lines, '\n') != 0) {
            return -1;
        }
    }
    return 0;
}

static enum MHD_Result answer_track(struct MHD_Connection *c, struct fk_req *r)
{
    json_t *root = NULL, *root2 = NULL;
    sl_buf lines, out;
    sl_buf_init(&lines, 2 * FK_BODY_MAX);
    sl_buf_init(&out, 64 * 1024 + GARBLE_HUGE_BYTES);
    enum MHD_Result rc = MHD_NO;
    struct doc doc, doc2;
    struct verdict v, v2;
    uint64_t hashes[BRAZE_MAX_ATTRIBUTES];
    size_t n_hashes = 0;

    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!auth) {
        rc = reject(c, 401, "Invalid API key: no 'Authorization: Bearer <key>' header");
        goto done;
    }
    if (strncmp(auth, "Bearer ", 7) != 0) {
        rc = reject(c, 401, "Invalid API key: the Authorization header must be 'Bearer <key>'");
        goto done;
    }
    /* Never echo the presented key: it may be a real secret sent to the wrong place. */
    if (strcmp(auth + 7, g_opt.api_key) != 0) {
        rc = reject(c, 401, "Invalid API key: the bearer key does not match this workspace");
        goto done;
    }
    if (r->too_big) {
        rc = reject(c, 413, "request body is %zu bytes; /users/track accepts at most %zu bytes",
                    r->seen, FK_BODY_MAX);
        goto done;
    }
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!fk_is_json_ctype(ct)) {
        rc = reject(c, 400, "Content-Type must be application/json, got '%.100s'",
                    ct ? ct : "(none)");
        goto done;
    }
    if (g_opt.require_bulk) {
        const char *bulk = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Braze-Bulk");
        if (!bulk || strcasecmp(bulk, "true") != 0) {
            rc = reject(c, 400,
                        "header 'X-Braze-Bulk: true' is required for bulk imports, got '%.40s' "
                        "(fake_braze runs with --require-bulk)",
                        bulk ? bulk : "(none)");
            goto done;
        }
    }
    if (r->body.len == 0) {
        rc = reject(c, 400, "empty body: expected a JSON object with an 'attributes' array");
        goto done;
    }

    const char *body = r->body.data;
    int parsed = parse_fast(body, r->body.len, &doc, &v);
    if (parsed == 1) {
        parsed = parse_jansson(body, r->body.len, &doc, &v, &root);
    }
    if (parsed == 0) {
        validate_doc(&doc, &v);
    }
    if (g_opt.cross_check) {
        int parsed2 = parse_jansson(body, r->body.len, &doc2, &v2, &root2);
        if (parsed2 == 0) {
            validate_doc(&doc2, &v2);
        }
        const char *diff = compare_docs(&doc, &v, &doc2, &v2);
        if (diff) {
            rc = reject(c, 500,
                        "fake_braze self-check failed: fast parser and jansson disagree (%s): "
                        "fast said %u '%s', jansson said %u '%s'",
                        diff, v.status, v.status == 201 ? "" : v.msg, v2.status,
                        v2.status == 201 ? "" : v2.msg);
            goto done;
        }
    }
    if (v.status != 201) {
        rc = reject(c, v.status, "%s", v.msg);
        goto done;
    }
    for (size_t i = 0; i < v.n; i++) {
        if (v.accepted[i]) {
            hashes[n_hashes++] = id_hash(doc.items[i].id, doc.items[i].id_len);
        }
    }

    if (g_opt.record_fd >= 0 && v.n_ok > 0) {
        if (sl_buf_reserve(&lines, r->body.len + v.n) != 0 ||
            build_record_lines(&lines, &doc, &v, root) != 0) {
            rc = reject(c, 500, "fake_braze ran out of memory recording %zu objects", v.n_ok);
            goto done;
        }
        pthread_mutex_lock(&g_rec_mu);
        int bad = fk_write_all(g_opt.record_fd, lines.data, lines.len);
        pthread_mutex_unlock(&g_rec_mu);
        if (bad) {
            fprintf(stderr, PROG ": writing the --record file failed: %s\n", strerror(errno));
        }
    }

    pthread_mutex_lock(&g_st.mu);
    g_st.accepted_requests++;
    g_st.accepted_records += v.n_ok;
    g_st.rejected_records += v.n - v.n_ok;
    for (size_t i = 0; i < n_hashes; i++) {
        g_st.duplicates += (unsigned long)seen_insert_locked(hashes[i]);
    }
    g_st.status[201]++;
    pthread_mutex_unlock(&g_st.mu);

    sl_buf_printf(&out, "{\"message\":\"success\",\"attributes_processed\":%zu", v.n_ok);
    if (v.n_ok < v.n) {
        sl_buf_puts(&out, ",\"errors\":[");
        for (size_t i = 0, k = 0; i < v.n; i++) {
            if (!v.accepted[i]) {
                sl_buf_printf(&out,
                              "%s{\"type\":\"'external_id' is invalid\","
                              "\"input_array\":\"attributes\",\"index\":%zu}",
                              k++ ? "," : "", i);
            }
        }
        sl_buf_putc(&out, ']');
    }
    if (g_opt.garble == G_HTML) {
        static const char html[] = "<html><body><h1>201 Created</h1></body></html>\r\n";
        rc = fk_respond(c, 201, "text/html", html, sizeof(html) - 1);
        goto done;
    }
    if (g_opt.garble == G_HUGE) {
        sl_buf_puts(&out, ",\"padding\":\"");
        if (sl_buf_reserve(&out, GARBLE_HUGE_BYTES + 4) == 0) {
            memset(out.data + out.len, 'x', GARBLE_HUGE_BYTES);
            out.len += GARBLE_HUGE_BYTES;
            out.data[out.len] = '\0';
        }
        sl_buf_putc(&out, '"');
    }
    sl_buf_putc(&out, '}');
    rc = fk_respond(c, 201, "application/json", sl_buf_cstr(&out), out.len);
done:
    json_decref(root);
    json_decref(root2);
    sl_buf_free(&lines);
    sl_buf_free(&out);
    return rc;
}

/* ---- MHD callbacks ----------------------------------------------------------- */

static enum route route_of(const char *url)
{
    if (strcmp(url, "/users/track") == 0) {
        return R_TRACK;
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
    struct fk_req *r = *con_cls;
    if (!r) {
        /* First callback: headers only. Control endpoints do not count as load. */
        r = fk_req_new(route_of(url));
        if (!r) {
            return MHD_NO;
        }
        *con_cls = r;
        if (r->route == R_TRACK) {
            /* Size the body once instead of growing it chunk by chunk. */
            const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
            long n = 0;
            if (cl && fk_parse_long(cl, 1, (long)FK_BODY_MAX, &n) == 0) {
                (void)sl_buf_reserve(&r->body, (size_t)n);
            }
        }
        if (r->route == R_TRACK || r->route == R_NOTFOUND) {
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
        fk_req_take(r, upload, *upload_size, r->route == R_TRACK);
        *upload_size = 0;
        return MHD_YES;
    }

    switch (r->route) {
    case R_STATS:
        if (strcmp(method, "GET") != 0) {
            return method_not_allowed(c, method, url, "GET", 0);
        }
        return answer_stats(c);
    case R_RESET:
        if (strcmp(method, "POST") != 0) {
            return method_not_allowed(c, method, url, "POST", 0);
        }
        return answer_reset(c);
    case R_NOTFOUND:
        pthread_mutex_lock(&g_st.mu);
        g_st.requests++;
        pthread_mutex_unlock(&g_st.mu);
        return reject(c, 404, "no route %.20s %.200s: fake_braze serves POST /users/track", method,
                      url);
    default:
        break;
    }

    int faulted = 0;
    enum fault f = F_500;
    pthread_mutex_lock(&g_st.mu);
    g_st.requests++;
    if (g_opt.fault_rate > 0 && strcmp(method, "POST") == 0) {
        double roll = (double)(rng_next_locked() >> 11) * 0x1.0p-53;
        if (roll < g_opt.fault_rate) {
            faulted = 1;
            f = g_opt.faults[rng_next_locked() % g_opt.n_faults];
        }
    }
    pthread_mutex_unlock(&g_st.mu);

    if (g_opt.latency_ms > 0) {
        fk_sleep_ms(g_opt.latency_ms);
    }
    if (strcmp(method, "POST") != 0) {
        return method_not_allowed(c, method, url, "POST", 1);
    }
    if (faulted) {
        return answer_fault(c, f);
    }
    return answer_track(c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
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
        if (strcmp(a, "--require-bulk") == 0) {
            g_opt.require_bulk = 1;
            continue;
        }
        if (strcmp(a, "--no-require-bulk") == 0) {
            g_opt.require_bulk = 0;
            continue;
        }
        if (strcmp(a, "--cross-check") == 0) {
            g_opt.cross_check = 1;
            continue;
        }
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
        } else if (strcmp(a, "--retry-after") == 0) {
            if (fk_parse_long(v, 0, 86400, &g_opt.retry_after) != 0) {
                fk_die_usage(PROG, USAGE, "--retry-after: expected 0..86400 seconds, got '%s'", v);
            }
        } else if (strcmp(a, "--reject-id") == 0) {
            if (*v == '\0') {
                fk_die_usage(PROG, USAGE, "--reject-id: expected a non-empty substring");
            }
            g_opt.reject_id = v;
            g_opt.reject_len = strlen(v);
        } else if (strcmp(a, "--garble-201") == 0) {
            if (strcmp(v, "html") == 0) {
                g_opt.garble = G_HTML;
            } else if (strcmp(v, "huge") == 0) {
                g_opt.garble = G_HUGE;
            } else {
                fk_die_usage(PROG, USAGE, "--garble-201: expected html or huge, got '%s'", v);
            }
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
    free(g_st.seen);
    return rc;
}
