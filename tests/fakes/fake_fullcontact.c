/* fake_fullcontact: FullContact person enrich v3 (`POST /v3/person.enrich`),
 * strict like the real API: Bearer key, JSON body {"email": ...}; a
 * deterministic outcome per e-mail (200 profile, 202 queued for the first K
 * calls then 200, 404 no match); 429 + Retry-After above --rate; injected
 * latency per connection thread. Counts billed calls (only 200 bills) per
 * e-mail and the peak number of concurrent requests at GET /_stats.
 * See tests/fakes/README.md. */
#include <ctype.h>
#include <pthread.h>
#include <stdint.h>

#include <jansson.h>

#include "fake_common.h"

#define PROG "fake_fullcontact"
#define USAGE                                                                                      \
    "--port N (0 = any free port) --api-key KEY [--port-file FILE]\n"                              \
    "       [--notfound-pct P] [--queued-pct P] [--queued-calls K] [--rate N]\n"                   \
    "       [--retry-after S] [--latency-ms N]"

enum route { R_ENRICH, R_STATS, R_RESET, R_EMAILS, R_NOTFOUND };
enum outcome { O_OK, O_QUEUED, O_NOTFOUND };

static struct {
    const char *api_key;
    long notfound_pct, queued_pct, queued_calls;
    long rate; /* requests per second, 0 = unlimited */
    long retry_after;
    long latency_ms;
} g_opt = {.notfound_pct = 10, .queued_pct = 10, .queued_calls = 1, .retry_after = 1};

/* One e-mail looked up: its calls and billed calls. Open addressing. */
typedef struct email_ent {
    char *email;
    unsigned long calls, billed;
} email_ent;

static struct {
    pthread_mutex_t mu;
    unsigned long requests, billed;
    unsigned long status[600];
    long inflight, peak;
    email_ent *tab;
    size_t cap, n;
    long window_start; /* second of the current rate window */
    long window_count;
    /* Timing of lookups, for benchmarks: service = first byte of a request
     * to its response handed back (includes --latency-ms); turnaround = a
     * connection's last response done to its next request's arrival (the
     * client's own delay between lookups on one keep-alive connection). */
    double service_s, turnaround_s;
    unsigned long serviced, turnarounds;
    unsigned long turn_hist[8];     /* turnarounds < 0.1, 0.3, 1, 3, 10, 30, 100 ms, more */
    double first_epoch, last_epoch; /* first lookup arrived, last answer done (wall clock) */
} g_st = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Thread per connection: the connection's last response completion. */
static _Thread_local double t_last_done;

static double epoch_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)tolower((unsigned char)*s);
        h *= 1099511628211ULL;
    }
    return h;
}

/* The outcome an e-mail always gets: decided by its hash, so a test can
 * compute it too (python: same FNV-1a over the lower-cased address). */
static enum outcome outcome_of(const char *email)
{
    long roll = (long)(fnv1a(email) % 100);
    if (roll < g_opt.notfound_pct) {
        return O_NOTFOUND;
    }
    if (roll < g_opt.notfound_pct + g_opt.queued_pct) {
        return O_QUEUED;
    }
    return O_OK;
}

/* Locked. The entry of email (created), or NULL when out of memory. */
static email_ent *email_get_locked(const char *email)
{
    if (g_st.n * 2 >= g_st.cap) {
        size_t ncap = g_st.cap ? g_st.cap * 2 : 1024;
        email_ent *nt = calloc(ncap, sizeof(*nt));
        if (!nt) {
            return NULL;
        }
        for (size_t i = 0; i < g_st.cap; i++) {
            if (g_st.tab[i].email) {
                size_t j = fnv1a(g_st.tab[i].email) & (ncap - 1);
                while (nt[j].email) {
                    j = (j + 1) & (ncap - 1);
                }
                nt[j] = g_st.tab[i];
            }
        }
        free(g_st.tab);
        g_st.tab = nt;
        g_st.cap = ncap;
    }
    size_t j = fnv1a(email) & (g_st.cap - 1);
    while (g_st.tab[j].email) {
        if (strcasecmp(g_st.tab[j].email, email) == 0) {
            return &g_st.tab[j];
        }
        j = (j + 1) & (g_st.cap - 1);
    }
    g_st.tab[j].email = strdup(email);
    if (!g_st.tab[j].email) {
        return NULL;
    }
    g_st.n++;
    return &g_st.tab[j];
}

static void count_status(unsigned status)
{
    pthread_mutex_lock(&g_st.mu);
    if (status < 600) {
        g_st.status[status]++;
    }
    pthread_mutex_unlock(&g_st.mu);
}

/* FullContact's error shape: {"status":N,"message":"..."}; counted, logged. */
static enum MHD_Result refuse(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
    SL_PRINTF(3, 4);
static enum MHD_Result refuse(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    count_status(status);
    if (status != 404) {
        fprintf(stderr, PROG ": %u %s\n", status, msg);
    }
    sl_buf b;
    sl_buf_init(&b, 64 * 1024);
    enum MHD_Result rc = MHD_NO;
    if (sl_buf_printf(&b, "{\"status\":%u,\"message\":\"", status) == 0 &&
        sl_json_escape(&b, msg, strlen(msg)) == 0 && sl_buf_puts(&b, "\"}") == 0) {
        rc = fk_respond(c, status, "application/json", b.data, b.len);
    }
    sl_buf_free(&b);
    return rc;
}

static void stats_json(sl_buf *b)
{
    static const unsigned always[] = {200, 202, 404, 429};
    pthread_mutex_lock(&g_st.mu);
    unsigned long billed_emails = 0, billed_twice = 0, max_calls = 0;
    for (size_t i = 0; i < g_st.cap; i++) {
        const email_ent *e = &g_st.tab[i];
        if (!e->email) {
            continue;
        }
        billed_emails += e->billed > 0;
        billed_twice += e->billed > 1;
        max_calls = e->calls > max_calls ? e->calls : max_calls;
    }
    sl_buf_printf(b,
                  "{\"requests\":%lu,\"billed\":%lu,\"emails\":%zu,\"billed_emails\":%lu,"
                  "\"billed_twice\":%lu,\"max_calls_per_email\":%lu,\"peak_concurrency\":%ld,"
                  "\"in_flight\":%ld,\"service_ms_mean\":%.3f,\"turnaround_ms_mean\":%.3f,"
                  "\"turnaround_hist\":[%lu,%lu,%lu,%lu,%lu,%lu,%lu,%lu],"
                  "\"first_lookup_epoch\":%.6f,\"last_answer_epoch\":%.6f,\"status\":",
                  g_st.requests, g_st.billed, g_st.n, billed_emails, billed_twice, max_calls,
                  g_st.peak, g_st.inflight,
                  g_st.serviced ? 1e3 * g_st.service_s / (double)g_st.serviced : 0.0,
                  g_st.turnarounds ? 1e3 * g_st.turnaround_s / (double)g_st.turnarounds : 0.0,
                  g_st.turn_hist[0], g_st.turn_hist[1], g_st.turn_hist[2], g_st.turn_hist[3],
                  g_st.turn_hist[4], g_st.turn_hist[5], g_st.turn_hist[6], g_st.turn_hist[7],
                  g_st.first_epoch, g_st.last_epoch);
    fk_status_json(b, g_st.status, 600, always, sizeof(always) / sizeof(always[0]));
    sl_buf_putc(b, '}');
    pthread_mutex_unlock(&g_st.mu);
}

/* {"a@b.org":{"calls":2,"billed":1,"outcome":"queued"},...} */
static void emails_json(sl_buf *b)
{
    static const char *const names[] = {"ok", "queued", "notfound"};
    pthread_mutex_lock(&g_st.mu);
    int first = 1;
    sl_buf_putc(b, '{');
    for (size_t i = 0; i < g_st.cap; i++) {
        const email_ent *e = &g_st.tab[i];
        if (!e->email) {
            continue;
        }
        sl_buf_puts(b, first ? "\"" : ",\"");
        sl_json_escape(b, e->email, strlen(e->email));
        sl_buf_printf(b, "\":{\"calls\":%lu,\"billed\":%lu,\"outcome\":\"%s\"}", e->calls,
                      e->billed, names[outcome_of(e->email)]);
        first = 0;
    }
    sl_buf_putc(b, '}');
    pthread_mutex_unlock(&g_st.mu);
}

/* What FullContact accepts as an address: one '@', a local part, a dotted
 * domain, no spaces or control characters. */
static int valid_email(const char *s)
{
    const char *at = strchr(s, '@');
    if (!at || at == s || strchr(at + 1, '@') || !strchr(at + 1, '.') || at[1] == '.' ||
        s[strlen(s) - 1] == '.') {
        return 0;
    }
    for (const char *p = s; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            return 0;
        }
    }
    return 1;
}

/* A deterministic v3 profile for email. */
static int profile_json(sl_buf *b, const char *email)
{
    const char *at = strchr(email, '@');
    size_t llen = (size_t)(at - email);
    uint64_t h = fnv1a(email);
    static const char *const ages[] = {"20-29", "30-39", "40-49", "50-59"};
    static const char *const genders[] = {"Female", "Male", "Other"};
    int rc = 0;
    rc |= sl_buf_puts(b, "{\"fullName\":\"");
    rc |= sl_json_escape(b, email, llen);
    rc |= sl_buf_printf(b,
                        " Example\",\"ageRange\":\"%s\",\"gender\":\"%s\","
                        "\"location\":\"Portland, Oregon, United States\","
                        "\"title\":\"Organizer\",\"organization\":\"Example Org %u\",",
                        ages[h % 4], genders[(h >> 8) % 3], (unsigned)((h >> 16) % 1000));
    rc |= sl_buf_puts(b, "\"twitter\":\"https://twitter.com/");
    rc |= sl_json_escape(b, email, llen);
    rc |= sl_buf_puts(b, "\",\"linkedin\":null,\"bio\":\"Example profile.\",\"avatar\":"
                         "\"https://img.example/a.png\",\"website\":null,\"details\":{"
                         "\"name\":{\"given\":\"");
    rc |= sl_json_escape(b, email, llen);
    rc |= sl_buf_puts(b, "\",\"family\":\"Example\"},\"age\":{\"range\":{\"start\":30,\"end\":"
                         "39}},\"emails\":[{\"label\":\"personal\",\"value\":\"");
    rc |= sl_json_escape(b, email, strlen(email));
    rc |= sl_buf_puts(b, "\"}],\"photos\":[{\"label\":\"avatar\",\"value\":"
                         "\"https://img.example/a.png\"}],\"employment\":[{\"name\":\"Example "
                         "Org\",\"current\":true,\"title\":\"Organizer\"}],\"profiles\":{"
                         "\"twitter\":{\"username\":\"");
    rc |= sl_json_escape(b, email, llen);
    rc |= sl_buf_puts(b, "\",\"service\":\"twitter\"}}},\"updated\":\"2024-01-15\"}");
    return rc ? -1 : 0;
}

static enum MHD_Result answer_enrich(struct MHD_Connection *c, struct fk_req *r)
{
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!auth || strncmp(auth, "Bearer ", 7) != 0 || strcmp(auth + 7, g_opt.api_key) != 0) {
        /* the key a client sent is never echoed */
        return refuse(c, 401, auth ? "Invalid API key" : "Missing Authorization: Bearer <key>");
    }
    if (g_opt.rate > 0) {
        long now = (long)time(NULL);
        int over;
        pthread_mutex_lock(&g_st.mu);
        if (now != g_st.window_start) {
            g_st.window_start = now;
            g_st.window_count = 0;
        }
        over = ++g_st.window_count > g_opt.rate;
        pthread_mutex_unlock(&g_st.mu);
        if (over) {
            count_status(429);
            struct MHD_Response *resp = MHD_create_response_from_buffer(
                strlen("{\"status\":429,\"message\":\"Rate limit exceeded\"}"),
                (void *)"{\"status\":429,\"message\":\"Rate limit exceeded\"}",
                MHD_RESPMEM_PERSISTENT);
            if (!resp) {
                return MHD_NO;
            }
            char ra[32], lim[32];
            snprintf(ra, sizeof(ra), "%ld", g_opt.retry_after);
            snprintf(lim, sizeof(lim), "%ld", g_opt.rate);
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
            MHD_add_response_header(resp, "Retry-After", ra);
            MHD_add_response_header(resp, "X-Rate-Limit-Limit", lim);
            MHD_add_response_header(resp, "X-Rate-Limit-Remaining", "0");
            enum MHD_Result rc = MHD_queue_response(c, 429, resp);
            MHD_destroy_response(resp);
            return rc;
        }
    }
    if (r->too_big) {
        return refuse(c, 413, "body is %zu bytes, the limit is %zu", r->seen, FK_BODY_MAX);
    }
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!fk_is_json_ctype(ct)) {
        return refuse(c, 400, "Content-Type must be application/json, got '%.100s'",
                      ct ? ct : "(none)");
    }
    json_error_t jerr;
    json_t *root =
        json_loadb(r->body.data ? r->body.data : "", r->body.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return refuse(c, 400, "body must be a JSON object: %s", root ? "not an object" : jerr.text);
    }
    json_t *je = json_object_get(root, "email");
    if (!json_is_string(je)) {
        json_decref(root);
        return refuse(c, 400, "\"email\" must be a string (this fake supports email lookups only)");
    }
    const char *email = json_string_value(je);
    if (strlen(email) > 320 || !valid_email(email)) {
        enum MHD_Result rc = refuse(c, 400, "Invalid email: '%.100s'", email);
        json_decref(root);
        return rc;
    }

    enum outcome o = outcome_of(email);
    unsigned long calls;
    pthread_mutex_lock(&g_st.mu);
    email_ent *e = email_get_locked(email);
    int found = e != NULL;
    if (e) {
        calls = ++e->calls;
    }
    e = NULL; /* not valid once the lock is released */
    pthread_mutex_unlock(&g_st.mu);
    if (!found) {
        json_decref(root);
        return refuse(c, 500, "out of memory");
    }
    enum MHD_Result rc;
    if (o == O_NOTFOUND) {
        rc = refuse(c, 404, "Profile not found");
    } else if (o == O_QUEUED && calls <= (unsigned long)g_opt.queued_calls) {
        count_status(202);
        static const char q[] = "{\"status\":202,\"message\":\"Queued for search. Please retry "
                                "your query within about 5 minutes.\"}";
        rc = fk_respond(c, 202, "application/json", q, sizeof(q) - 1);
    } else {
        sl_buf b;
        sl_buf_init(&b, 64 * 1024);
        if (profile_json(&b, email) != 0) {
            sl_buf_free(&b);
            json_decref(root);
            return refuse(c, 500, "out of memory");
        }
        pthread_mutex_lock(&g_st.mu);
        /* looked up again: another request may have grown the table since */
        email_ent *be = email_get_locked(email);
        if (be) {
            be->billed++;
        }
        g_st.billed++;
        g_st.status[200]++;
        pthread_mutex_unlock(&g_st.mu);
        rc = fk_respond(c, 200, "application/json", b.data, b.len);
        sl_buf_free(&b);
    }
    json_decref(root);
    return rc;
}

static enum route route_of(const char *url)
{
    if (strcmp(url, "/v3/person.enrich") == 0) {
        return R_ENRICH;
    }
    if (strcmp(url, "/_stats") == 0) {
        return R_STATS;
    }
    if (strcmp(url, "/_reset") == 0) {
        return R_RESET;
    }
    if (strcmp(url, "/_emails") == 0) {
        return R_EMAILS;
    }
    return R_NOTFOUND;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct fk_req *r = *con_cls;
    if (!r) {
        r = fk_req_new(route_of(url));
        if (!r) {
            return MHD_NO;
        }
        *con_cls = r;
        if (r->route == R_ENRICH || r->route == R_NOTFOUND) {
            r->counted = 1;
            r->started = now_s();
            pthread_mutex_lock(&g_st.mu);
            if (++g_st.inflight > g_st.peak) {
                g_st.peak = g_st.inflight;
            }
            if (g_st.first_epoch == 0) {
                g_st.first_epoch = epoch_s();
            }
            if (t_last_done > 0) {
                double ms = 1e3 * (r->started - t_last_done);
                static const double edge[] = {0.1, 0.3, 1, 3, 10, 30, 100};
                size_t k = 0;
                while (k < 7 && ms >= edge[k]) {
                    k++;
                }
                g_st.turn_hist[k]++;
                g_st.turnaround_s += r->started - t_last_done;
                g_st.turnarounds++;
            }
            pthread_mutex_unlock(&g_st.mu);
        }
        return MHD_YES;
    }
    if (*upload_size != 0) {
        fk_req_take(r, upload, *upload_size, r->route == R_ENRICH);
        *upload_size = 0;
        return MHD_YES;
    }

    if (r->route == R_STATS || r->route == R_RESET || r->route == R_EMAILS) {
        sl_buf b;
        sl_buf_init(&b, (size_t)1 << 30);
        if (r->route == R_RESET) {
            pthread_mutex_lock(&g_st.mu);
            g_st.requests = g_st.billed = 0;
            g_st.service_s = g_st.turnaround_s = 0;
            g_st.serviced = g_st.turnarounds = 0;
            memset(g_st.turn_hist, 0, sizeof(g_st.turn_hist));
            g_st.first_epoch = g_st.last_epoch = 0;
            g_st.peak = g_st.inflight;
            memset(g_st.status, 0, sizeof(g_st.status));
            for (size_t i = 0; i < g_st.cap; i++) {
                free(g_st.tab[i].email);
            }
            memset(g_st.tab, 0, g_st.cap * sizeof(*g_st.tab));
            g_st.n = 0;
            pthread_mutex_unlock(&g_st.mu);
        }
        if (r->route == R_EMAILS) {
            emails_json(&b);
        } else {
            stats_json(&b);
        }
        enum MHD_Result rc = fk_respond(c, 200, "application/json", sl_buf_cstr(&b), b.len);
        sl_buf_free(&b);
        return rc;
    }

    pthread_mutex_lock(&g_st.mu);
    g_st.requests++;
    pthread_mutex_unlock(&g_st.mu);
    if (g_opt.latency_ms > 0) {
        fk_sleep_ms(g_opt.latency_ms); /* this connection's thread only */
    }
    if (r->route == R_NOTFOUND) {
        return refuse(c, 404, "no route %.20s %.200s: " PROG " serves POST /v3/person.enrich",
                      method, url);
    }
    if (strcmp(method, "POST") != 0) {
        return refuse(c, 405, "method %.20s not allowed on %.200s: use POST", method, url);
    }
    return answer_enrich(c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct fk_req *r = *con_cls;
    if (!r) {
        return;
    }
    if (r->counted) {
        t_last_done = now_s();
        pthread_mutex_lock(&g_st.mu);
        g_st.inflight--;
        g_st.service_s += t_last_done - r->started;
        g_st.serviced++;
        g_st.last_epoch = epoch_s();
        pthread_mutex_unlock(&g_st.mu);
    }
    fk_req_free(r);
    *con_cls = NULL;
}

static void opt_long(const char *name, const char *v, long lo, long hi, long *out)
{
    if (fk_parse_long(v, lo, hi, out) != 0) {
        fk_die_usage(PROG, USAGE, "%s: expected %ld..%ld, got '%s'", name, lo, hi, v);
    }
}

int main(int argc, char **argv)
{
    long port = 0;
    const char *port_file = NULL;

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
            opt_long(a, v, 0, 65535, &port);
        } else if (strcmp(a, "--port-file") == 0) {
            port_file = v;
        } else if (strcmp(a, "--api-key") == 0) {
            if (!v[0]) {
                fk_die_usage(PROG, USAGE, "--api-key: expected a non-empty key");
            }
            g_opt.api_key = v;
        } else if (strcmp(a, "--notfound-pct") == 0) {
            opt_long(a, v, 0, 100, &g_opt.notfound_pct);
        } else if (strcmp(a, "--queued-pct") == 0) {
            opt_long(a, v, 0, 100, &g_opt.queued_pct);
        } else if (strcmp(a, "--queued-calls") == 0) {
            opt_long(a, v, 0, 1000000, &g_opt.queued_calls);
        } else if (strcmp(a, "--rate") == 0) {
            opt_long(a, v, 0, 10000000, &g_opt.rate);
        } else if (strcmp(a, "--retry-after") == 0) {
            opt_long(a, v, 0, 3600, &g_opt.retry_after);
        } else if (strcmp(a, "--latency-ms") == 0) {
            opt_long(a, v, 0, 600000, &g_opt.latency_ms);
        } else {
            fk_die_usage(PROG, USAGE, "unknown option %s", a);
        }
    }
    if (!g_opt.api_key) {
        fk_die_usage(PROG, USAGE, "--api-key is required");
    }
    if (g_opt.notfound_pct + g_opt.queued_pct > 100) {
        fk_die_usage(PROG, USAGE, "--notfound-pct + --queued-pct must be at most 100");
    }
    return fk_serve(PROG, port, port_file, on_request, on_completed, NULL, stats_json);
}
