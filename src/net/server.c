/* HTTP server for `sluice serve`, on libmicrohttpd's internal thread pool.
 *
 * Request life cycle (MHD calls the access handler several times per request):
 *   1. first call, headers only: pick the route. Unknown path (404), wrong
 *      method (405) and a Content-Length over the route's cap (413) are
 *      answered right there, so MHD never reads the body and closes the
 *      connection after the answer;
 *   2. body calls: bytes are appended to an sl_buf capped at the route's
 *      max_body. A chunked body that goes over the cap is discarded from then
 *      on (MHD cannot answer in the middle of an upload) and answered 413 at
 *      its end; a sender that keeps streaming far past the cap is cut off;
 *   3. last call: the route's handler runs on the pool thread (it may block,
 *      e.g. on a durable SQLite commit) and its answer is queued.
 * MHD's completion callback frees the request state and ends its "in flight"
 * count, which is what sl_server_stop waits for: a request counts until its
 * answer has been written, not just until the handler returned.
 *
 * Slow clients (slowloris): MHD's own timeout is on inactivity, so a client
 * sending one header byte every 2 s would hold a connection forever, and 256
 * of them took the server offline, /healthz included. So:
 *   - each client address may hold at most PER_IP_LIMIT connections;
 *   - a watchdog thread gives every request a deadline: its head (request
 *     line and headers) must arrive within HEAD_TIMEOUT_MS of the connection
 *     opening (or of the previous answer on a kept-alive connection), its
 *     body within BODY_TIMEOUT_MS after the head. A connection past its
 *     deadline is shut down (MHD then closes it). While the handler runs
 *     there is no deadline. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "util/metrics.h"
#include "net/server.h"
#include "sluice/json.h"
#include "sluice/log.h"

#define LOG_PREFIX "serve"
#define DEFAULT_THREADS 4
#define MAX_THREADS 64
#define MAX_ROUTES 64
#define CONNECTION_LIMIT 256
#define CONNECTION_TIMEOUT_S 30
#define PER_IP_LIMIT 32
#define HEAD_TIMEOUT_MS 10000
#define BODY_TIMEOUT_MS 60000
#define WATCHDOG_TICK_MS 200
/* Bytes of an over-cap chunked body we read (and drop) before closing the
 * connection instead of answering 413. */
#define DISCARD_MAX ((size_t)1024 * 1024)
/* Hard maximum of a handler's answer body. */
#define RESP_BODY_MAX ((size_t)64 * 1024 * 1024)
/* How long sl_server_stop waits for in-flight requests to be answered. */
#define DRAIN_MS 30000
/* Client-controlled text quoted in answers and logs is cut to this length. */
#define QUOTE_MAX 200

#define M_REQUESTS "sluice_http_requests_total"
#define M_BYTES "sluice_http_request_bytes_total"

typedef struct route {
    char method[16];
    char *path;
    size_t max_body;
    sl_route_fn fn;
    void *ud;
} route;

struct sl_server {
    char listen[128]; /* as configured, for messages */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int threads;
    route routes[MAX_ROUTES];
    size_t nroutes;
    sl_health_fn health;
    void *health_ud;

    struct MHD_Daemon *d;
    int lfd;  /* our listening socket, -1 when not started */
    int port; /* bound port after start */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inflight; /* requests seen by the access handler and not yet completed */
    int stopping;

    /* Slow-client watchdog (see the file comment). Connections are tracked
     * from MHD's connection notifications; cmu guards the list, and MHD
     * closes a socket only after its CLOSED notification took it off the
     * list, so the watchdog never shuts down a reused descriptor. */
    pthread_mutex_t cmu;
    pthread_cond_t ccv;
    struct conn_track *conns;
    pthread_t watchdog;
    int watchdog_live, watchdog_stop;
    unsigned per_ip;
    int head_ms, body_ms;
};

typedef struct conn_track {
    int fd;
    double deadline; /* monotonic seconds; 0 = none (the handler is running) */
    const char *phase;
    struct conn_track *prev, *next;
} conn_track;

/* Per-request state, MHD's con_cls. */
typedef struct srv_req {
    const route *rt; /* matched route, NULL for 404 */
    int answered;    /* a response has been queued */
    int too_big;     /* body went over rt->max_body; the rest is dropped */
    size_t seen;     /* body bytes received, including dropped ones */
    sl_buf body;
    char remote[INET6_ADDRSTRLEN];
} srv_req;

/* --------------------------------------------------------------- watchdog */

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    sl_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn_track *t = calloc(1, sizeof(*t));
        if (!t || !ci) {
            free(t);
            return; /* untracked: MHD's inactivity timeout still applies */
        }
        t->fd = ci->connect_fd;
        t->deadline = mono_s() + s->head_ms / 1000.0;
        t->phase = "request head";
        pthread_mutex_lock(&s->cmu);
        t->next = s->conns;
        if (s->conns) {
            s->conns->prev = t;
        }
        s->conns = t;
        pthread_mutex_unlock(&s->cmu);
        *socket_context = t;
        return;
    }
    conn_track *t = *socket_context;
    if (!t) {
        return;
    }
    pthread_mutex_lock(&s->cmu);
    if (t->prev) {
        t->prev->next = t->next;
    } else {
        s->conns = t->next;
    }
    if (t->next) {
        t->next->prev = t->prev;
    }
    pthread_mutex_unlock(&s->cmu);
    *socket_context = NULL;
    free(t);
}

/* Set the deadline of c's connection: ms from now, or none (ms < 0). */
static void conn_deadline(sl_server *s, struct MHD_Connection *c, int ms, const char *phase)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn_track *t = ci ? ci->socket_context : NULL;
    if (!t) {
        return;
    }
    pthread_mutex_lock(&s->cmu);
    t->deadline = ms < 0 ? 0 : mono_s() + ms / 1000.0;
    t->phase = phase;
    pthread_mutex_unlock(&s->cmu);
}

static void *watchdog_main(void *arg)
{
    sl_server *s = arg;
    pthread_mutex_lock(&s->cmu);
    while (!s->watchdog_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += WATCHDOG_TICK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->ccv, &s->cmu, &ts);
        double now = mono_s();
        int cut = 0;
        const char *phase = NULL;
        for (conn_track *t = s->conns; t; t = t->next) {
            if (t->deadline > 0 && now > t->deadline) {
                shutdown(t->fd, SHUT_RDWR);
                t->deadline = 0;
                phase = t->phase;
                cut++;
            }
        }
        if (cut) {
            /* one line per sweep, not per connection: an attack would flood the log */
            sl_warn(LOG_PREFIX, "closed %d slow connection(s) (the %s did not arrive in time)", cut,
                    phase);
            sl_metric_add("sluice_http_slow_connections_closed_total", NULL, (double)cut);
        }
    }
    pthread_mutex_unlock(&s->cmu);
    return NULL;
}

void sl_server_set_limits(sl_server *s, unsigned per_ip, int head_ms, int body_ms)
{
    s->per_ip = per_ip;
    s->head_ms = head_ms;
    s->body_ms = body_ms;
}

/* ------------------------------------------------------------------ setup */

/* Parse "ADDR:PORT" into s->addr. IPv4 literal, "[IPv6]", "localhost" (IPv4
 * loopback) or empty (all IPv4 interfaces). */
static int parse_listen(sl_server *s, const char *listen, sl_error *err)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon = NULL;
    const char *p = listen;
    size_t hlen;

    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':') {
            goto bad;
        }
        p = listen + 1;
        hlen = (size_t)(close - p);
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon) {
            goto bad;
        }
        hlen = (size_t)(colon - listen);
    }
    if (hlen >= sizeof(host)) {
        goto bad;
    }
    memcpy(host, p, hlen);
    host[hlen] = '\0';

    const char *ps = colon + 1;
    long port = 0;
    if (!*ps || strlen(ps) > 5) {
        goto bad;
    }
    for (const char *q = ps; *q; q++) {
        if (*q < '0' || *q > '9') {
            goto bad;
        }
        port = port * 10 + (*q - '0');
    }
    if (port > 65535) {
        goto bad;
    }

    memset(&s->addr, 0, sizeof(s->addr));
    if (listen[0] == '[') {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&s->addr;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1) {
            goto bad;
        }
        s->addrlen = sizeof(*a6);
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&s->addr;
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        if (host[0] == '\0') {
            a4->sin_addr.s_addr = htonl(INADDR_ANY);
        } else if (strcmp(host, "localhost") == 0) {
            a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        } else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1) {
            goto bad;
        }
        s->addrlen = sizeof(*a4);
    }
    return 0;
bad:
    return sl_error_set(err, SL_ERR_CONFIG,
                        "serve: listen address \"%s\" is not ADDR:PORT (expected an IPv4 "
                        "address, [IPv6 address] or localhost, then a port 0-65535, e.g. "
                        "\"0.0.0.0:8080\" or \"[::1]:8080\")",
                        listen);
}

static void route_health(void *ud, const sl_webhook_req *req, sl_server_resp *resp);
static void route_metrics(void *ud, const sl_webhook_req *req, sl_server_resp *resp);

static int add_route(sl_server *s, const char *method, const char *path, size_t max_body,
                     sl_route_fn fn, void *ud, sl_error *err)
{
    if (s->nroutes >= MAX_ROUTES) {
        return sl_error_set(err, SL_ERR_LIMIT, "serve: route %s %s: more than %d routes", method,
                            path, MAX_ROUTES);
    }
    route *r = &s->routes[s->nroutes];
    r->path = strdup(path);
    if (!r->path) {
        return sl_error_set(err, SL_ERR_NOMEM, "serve: out of memory adding route %s %s", method,
                            path);
    }
    snprintf(r->method, sizeof(r->method), "%s", method);
    r->max_body = max_body;
    r->fn = fn;
    r->ud = ud;
    s->nroutes++;
    return 0;
}

sl_server *sl_server_new(const char *listen, int threads, sl_error *err)
{
    sl_server *s = calloc(1, sizeof(*s));
    if (!s) {
        sl_error_set(err, SL_ERR_NOMEM, "serve: out of memory");
        return NULL;
    }
    s->lfd = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_cond_init(&s->ccv, &ca);
    pthread_mutex_init(&s->cmu, NULL);
    s->per_ip = PER_IP_LIMIT;
    s->head_ms = HEAD_TIMEOUT_MS;
    s->body_ms = BODY_TIMEOUT_MS;
    pthread_condattr_destroy(&ca);

    if (!listen || strlen(listen) >= sizeof(s->listen)) {
        sl_error_set(err, SL_ERR_CONFIG, "serve: listen address is %s (expected ADDR:PORT)",
                     listen ? "too long" : "missing");
        goto fail;
    }
    snprintf(s->listen, sizeof(s->listen), "%s", listen);
    if (parse_listen(s, listen, err) != 0) {
        goto fail;
    }
    if (threads <= 0) {
        threads = DEFAULT_THREADS;
    }
    if (threads > MAX_THREADS) {
        sl_error_set(err, SL_ERR_CONFIG, "serve: %d server threads requested, at most %d", threads,
                     MAX_THREADS);
        goto fail;
    }
    s->threads = threads;
    if (add_route(s, "GET", "/healthz", 0, route_health, s, err) != 0 ||
        add_route(s, "GET", "/metrics", 0, route_metrics, s, err) != 0) {
        goto fail;
    }
    sl_metric_declare(M_REQUESTS, SL_METRIC_COUNTER,
                      "HTTP requests answered by sluice serve, by route and status");
    sl_metric_declare(M_BYTES, SL_METRIC_COUNTER,
                      "HTTP request body bytes received by sluice serve, by route");
    return s;
fail:
    sl_server_free(s);
    return NULL;
}

static int is_token(const char *m)
{
    if (!*m) {
        return 0;
    }
    for (; *m; m++) {
        if (*m < 'A' || *m > 'Z') {
            return 0;
        }
    }
    return 1;
}

int sl_server_add_route(sl_server *s, const char *method, const char *path, size_t max_body,
                        sl_route_fn fn, void *ud, sl_error *err)
{
    if (s->d) {
        return sl_error_set(err, SL_ERR_USAGE, "serve: route %s %s added after the server started",
                            method, path);
    }
    if (!is_token(method) || strlen(method) >= sizeof(s->routes[0].method)) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "serve: route method \"%s\" for %s is not an upper-case HTTP method "
                            "such as POST",
                            method, path);
    }
    if (path[0] != '/' || strpbrk(path, "?# \t\r\n")) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "serve: route path \"%s\" must start with / and contain no query, "
                            "fragment or whitespace",
                            path);
    }
    if (!fn) {
        return sl_error_set(err, SL_ERR_USAGE, "serve: route %s %s has no handler", method, path);
    }
    for (size_t i = 0; i < s->nroutes; i++) {
        const route *r = &s->routes[i];
        int builtin = r->fn == route_health || r->fn == route_metrics;
        if (strcmp(r->path, path) == 0 && (builtin || strcmp(r->method, method) == 0)) {
            return sl_error_set(err, SL_ERR_CONFIG, "serve: route %s %s is declared twice%s",
                                method, path, builtin ? " (it is built in)" : "");
        }
    }
    return add_route(s, method, path, max_body, fn, ud, err);
}

void sl_server_set_health(sl_server *s, sl_health_fn fn, void *ud)
{
    s->health = fn;
    s->health_ud = ud;
}

/* ------------------------------------------------------------- built-ins */

static void route_health(void *ud, const sl_webhook_req *req, sl_server_resp *resp)
{
    sl_server *s = ud;
    sl_buf detail;
    sl_jw w;
    int healthy = 1;

    sl_buf_init(&detail, 4096);
    if (s->health) {
        healthy = s->health(s->health_ud, &detail) == 1;
    }
    snprintf(resp->content_type, sizeof(resp->content_type), "application/json");
    resp->status = healthy ? 200 : 503;
    sl_jw_init(&w, &resp->body);
    sl_jw_obj_open(&w);
    sl_jw_keyz(&w, "status");
    sl_jw_str(&w, healthy ? "ok" : "unhealthy", healthy ? 2 : 9);
    if (!healthy && detail.len) {
        sl_jw_keyz(&w, "detail");
        sl_jw_str(&w, detail.data, detail.len);
    }
    sl_jw_obj_close(&w);
    sl_buf_free(&detail);
}

static void route_metrics(void *ud, const sl_webhook_req *req, sl_server_resp *resp)
{
    if (sl_metrics_render(&resp->body) != 0) {
        sl_warn(LOG_PREFIX, "GET /metrics: rendering failed (output over %zu bytes?)",
                RESP_BODY_MAX);
        sl_buf_reset(&resp->body);
        resp->status = 500;
        sl_buf_puts(&resp->body, "metrics rendering failed\n");
        return;
    }
    snprintf(resp->content_type, sizeof(resp->content_type),
             "text/plain; version=0.0.4; charset=utf-8");
}

/* --------------------------------------------------------------- requests */

static void count_request(const srv_req *r, int status)
{
    sl_buf labels;
    sl_buf_init(&labels, 4096);
    int rc = sl_buf_puts(&labels, "route=\"");
    rc = rc ? rc : sl_metric_label_escape(&labels, r->rt ? r->rt->path : "other");
    rc = rc ? rc : sl_buf_printf(&labels, "\",status=\"%d\"", status);
    if (rc == 0) {
        sl_metric_add(M_REQUESTS, labels.data, 1);
    }
    sl_buf_free(&labels);
}

static void count_bytes(const srv_req *r)
{
    sl_buf labels;
    sl_buf_init(&labels, 4096);
    int rc = sl_buf_puts(&labels, "route=\"");
    rc = rc ? rc : sl_metric_label_escape(&labels, r->rt ? r->rt->path : "other");
    rc = rc ? rc : sl_buf_append(&labels, "\"", 1);
    if (rc == 0) {
        sl_metric_add(M_BYTES, labels.data, (double)r->seen);
    }
    sl_buf_free(&labels);
}

/* Queue an answer (body copied). allow: value of an Allow header or NULL. */
static enum MHD_Result answer(sl_server *s, srv_req *r, struct MHD_Connection *c, int status,
                              const char *ctype, const char *body, size_t len, const char *allow)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ret = MHD_NO;
    int stopping;

    if (!resp) {
        sl_warn(LOG_PREFIX, "out of memory answering a request from %s", r->remote);
        return MHD_NO;
    }
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) != MHD_YES) {
        sl_warn(LOG_PREFIX, "%s: invalid Content-Type \"%.*s\" from the handler; sent without it",
                r->rt ? r->rt->path : "?", QUOTE_MAX, ctype);
    }
    if (allow) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    }
    pthread_mutex_lock(&s->mu);
    stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    if (stopping) {
        /* Draining: do not keep the connection for another request. */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    }
    ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    if (ret == MHD_YES) {
        r->answered = 1;
        count_request(r, status);
    } else {
        sl_warn(LOG_PREFIX, "could not queue the %d answer to %s; closing the connection", status,
                r->remote);
    }
    return ret;
}

/* Answer with {"error": msg}. */
static enum MHD_Result answer_error(sl_server *s, srv_req *r, struct MHD_Connection *c, int status,
                                    const char *allow, const char *fmt, ...) SL_PRINTF(6, 7);
static enum MHD_Result answer_error(sl_server *s, srv_req *r, struct MHD_Connection *c, int status,
                                    const char *allow, const char *fmt, ...)
{
    sl_buf msg, out;
    sl_jw w;
    va_list ap;
    enum MHD_Result ret = MHD_NO;

    sl_buf_init(&msg, 4096);
    sl_buf_init(&out, 8192);
    va_start(ap, fmt);
    sl_buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    sl_jw_init(&w, &out);
    sl_jw_obj_open(&w);
    sl_jw_keyz(&w, "error");
    sl_jw_str(&w, sl_buf_cstr(&msg), msg.len);
    sl_jw_obj_close(&w);
    if (w.err == 0) {
        ret = answer(s, r, c, status, "application/json", out.data, out.len, allow);
    }
    sl_buf_free(&msg);
    sl_buf_free(&out);
    return ret;
}

static const char *req_header(const sl_webhook_req *req, const char *name)
{
    /* MHD compares header names case-insensitively. */
    return MHD_lookup_connection_value((struct MHD_Connection *)req->impl, MHD_HEADER_KIND, name);
}

static void peer_text(struct MHD_Connection *c, char *out, size_t cap)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, cap, "?");
    if (!ci || !ci->client_addr) {
        return;
    }
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  (socklen_t)cap);
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  (socklen_t)cap);
    }
}

/* A GET route also answers HEAD (MHD sends the headers only). */
static int method_matches(const route *rt, const char *method)
{
    return strcmp(rt->method, method) == 0 ||
           (strcmp(method, "HEAD") == 0 && strcmp(rt->method, "GET") == 0);
}

/* First call of a request: route it, or answer 404/405/413 right away. */
static enum MHD_Result on_headers(sl_server *s, srv_req *r, struct MHD_Connection *c,
                                  const char *url, const char *method)
{
    int path_known = 0;
    for (size_t i = 0; i < s->nroutes; i++) {
        const route *rt = &s->routes[i];
        if (strcmp(rt->path, url) != 0) {
            continue;
        }
        path_known = 1;
        if (method_matches(rt, method)) {
            r->rt = rt;
            break;
        }
    }
    if (!r->rt && !path_known) {
        return answer_error(s, r, c, 404, NULL, "no route for %.*s %.*s", QUOTE_MAX, method,
                            QUOTE_MAX, url);
    }
    if (!r->rt) {
        /* Label the 405 with the declared path (bounded), not "other". */
        char allow[256] = "";
        size_t used = 0;
        for (size_t i = 0; i < s->nroutes; i++) {
            const route *rt = &s->routes[i];
            if (strcmp(rt->path, url) != 0) {
                continue;
            }
            if (!r->rt) {
                r->rt = rt;
            }
            int n = snprintf(allow + used, sizeof(allow) - used, "%s%s%s", used ? ", " : "",
                             rt->method, strcmp(rt->method, "GET") == 0 ? ", HEAD" : "");
            if (n < 0 || (size_t)n >= sizeof(allow) - used) {
                break;
            }
            used += (size_t)n;
        }
        return answer_error(s, r, c, 405, allow, "method %.*s not allowed for %s (allowed: %s)",
                            QUOTE_MAX, method, r->rt->path, allow);
    }

    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end = NULL;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        int overflow = errno == ERANGE;
        if (end != cl && (overflow || n > r->rt->max_body)) {
            return answer_error(s, r, c, 413, NULL,
                                "request body of %s%.*s bytes is over the %zu-byte limit of %s %s",
                                overflow ? "over " : "", QUOTE_MAX, cl, r->rt->max_body,
                                r->rt->method, r->rt->path);
        }
    }
    sl_buf_init(&r->body, r->rt->max_body ? r->rt->max_body : 1);
    return MHD_YES;
}

/* Last call: the whole body is here. */
static enum MHD_Result on_complete(sl_server *s, srv_req *r, struct MHD_Connection *c,
                                   const char *url, const char *method)
{
    const route *rt = r->rt;
    sl_server_resp resp;
    enum MHD_Result ret;

    if (r->too_big) {
        return answer_error(s, r, c, 413, NULL, "request body is over the %zu-byte limit of %s %s",
                            rt->max_body, rt->method, rt->path);
    }
    sl_webhook_req req = {
        .method = method,
        .path = url,
        .body = sl_buf_cstr(&r->body),
        .body_len = r->body.len,
        .remote = r->remote,
        .header = req_header,
        .impl = c,
    };
    resp.status = 200;
    snprintf(resp.content_type, sizeof(resp.content_type), "text/plain; charset=utf-8");
    sl_buf_init(&resp.body, RESP_BODY_MAX);

    rt->fn(rt->ud, &req, &resp);

    if (resp.status < 100 || resp.status > 599) {
        sl_warn(LOG_PREFIX, "%s %s: handler returned HTTP status %d; answering 500 instead",
                rt->method, rt->path, resp.status);
        resp.status = 500;
    }
    resp.content_type[sizeof(resp.content_type) - 1] = '\0';
    ret = answer(s, r, c, resp.status, resp.content_type, sl_buf_cstr(&resp.body), resp.body.len,
                 NULL);
    sl_debug(LOG_PREFIX, "%s %s from %s: %d (%zu bytes in, %zu out)", method, rt->path, r->remote,
             resp.status, r->seen, resp.body.len);
    sl_buf_free(&resp.body);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    sl_server *s = cls;
    srv_req *r = *con_cls;

    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r) {
            sl_warn(LOG_PREFIX, "out of memory accepting a request; closing the connection");
            return MHD_NO;
        }
        sl_buf_init(&r->body, 1);
        peer_text(c, r->remote, sizeof(r->remote));
        *con_cls = r;
        pthread_mutex_lock(&s->mu);
        s->inflight++;
        pthread_mutex_unlock(&s->mu);
        conn_deadline(s, c, s->body_ms, "request body");
        return on_headers(s, r, c, url, method);
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        r->seen += n;
        if (r->answered) {
            return MHD_YES;
        }
        if (!r->too_big &&
            (r->seen > r->rt->max_body || sl_buf_append(&r->body, upload_data, n) != 0)) {
            r->too_big = 1;
            sl_buf_free(&r->body);
        }
        if (r->too_big && r->seen > r->rt->max_body && r->seen - r->rt->max_body > DISCARD_MAX) {
            /* Not counted in requests_total: nothing was answered. */
            sl_warn(LOG_PREFIX,
                    "%s %s from %s: body still streaming %zu bytes past the %zu-byte limit; "
                    "closing the connection without an answer",
                    r->rt->method, r->rt->path, r->remote, DISCARD_MAX, r->rt->max_body);
            return MHD_NO;
        }
        return MHD_YES;
    }
    if (r->answered) {
        return MHD_YES;
    }
    conn_deadline(s, c, -1, NULL); /* the handler may block (a durable commit) */
    return on_complete(s, r, c, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    sl_server *s = cls;
    srv_req *r = *con_cls;
    if (!r) {
        return;
    }
    *con_cls = NULL;
    /* a kept-alive connection: the next request's head is due in time too */
    conn_deadline(s, c, s->head_ms, "request head");
    if (r->rt) {
        count_bytes(r);
    }
    sl_buf_free(&r->body);
    free(r);
    pthread_mutex_lock(&s->mu);
    s->inflight--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) {
        line[--n] = '\0';
    }
    sl_warn(LOG_PREFIX, "%s", line);
}

/* -------------------------------------------------------------- lifecycle */

int sl_server_start(sl_server *s, sl_error *err)
{
    int fd = -1;
    int one = 1;
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);

    if (s->d) {
        return sl_error_set(err, SL_ERR_USAGE, "serve: server on %s is already started", s->listen);
    }
    fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        sl_error_set(err, SL_ERR_IO, "serve: cannot create a socket for %s: %s", s->listen,
                     strerror(errno));
        goto fail;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (s->addr.ss_family == AF_INET6) {
        /* "[::]:port" also accepts IPv4, like most servers. */
        int zero = 0;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    }
    if (bind(fd, (const struct sockaddr *)&s->addr, s->addrlen) != 0) {
        sl_error_set(err, SL_ERR_IO, "serve: cannot listen on %s: %s", s->listen, strerror(errno));
        goto fail;
    }
    if (listen(fd, 128) != 0 || getsockname(fd, (struct sockaddr *)&bound, &blen) != 0) {
        sl_error_set(err, SL_ERR_IO, "serve: cannot listen on %s: %s", s->listen, strerror(errno));
        goto fail;
    }
    s->port = ntohs(bound.ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((const struct sockaddr_in *)&bound)->sin_port);

    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (s->addr.ss_family == AF_INET6) {
        flags |= MHD_USE_IPv6;
    }
    s->stopping = 0;
    /* The logger goes first so MHD never writes to stderr itself. */
    s->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->threads,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)CONNECTION_LIMIT, MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->per_ip,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
        s, MHD_OPTION_END);
    if (!s->d) {
        sl_error_set(err, SL_ERR_IO,
                     "serve: cannot start the HTTP server on %s with %d threads (see the "
                     "warnings above)",
                     s->listen, s->threads);
        goto fail;
    }
    s->lfd = fd;
    s->watchdog_stop = 0;
    if (pthread_create(&s->watchdog, NULL, watchdog_main, s) != 0) {
        sl_error_set(err, SL_ERR, "serve: cannot start the slow-connection watchdog thread");
        MHD_stop_daemon(s->d);
        s->d = NULL;
        s->lfd = -1;
        s->port = 0;
        return SL_ERR; /* MHD closed the listening socket */
    }
    s->watchdog_live = 1;
    sl_info(LOG_PREFIX, "listening on %s (port %d, %d threads)", s->listen, s->port, s->threads);
    return 0;
fail:
    if (fd >= 0) {
        close(fd);
    }
    s->port = 0;
    return err ? err->code : SL_ERR_IO;
}

int sl_server_port(const sl_server *s)
{
    return s->d ? s->port : 0;
}

void sl_server_stop(sl_server *s)
{
    if (!s || !s->d) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_mutex_unlock(&s->mu);

    /* Quiesced, MHD hands the listening socket back: no new connections are
     * accepted, existing ones go on. */
    MHD_socket qfd = MHD_quiesce_daemon(s->d);

    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += DRAIN_MS / 1000;
    pthread_mutex_lock(&s->mu);
    while (s->inflight > 0) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &deadline) == ETIMEDOUT) {
            sl_warn(LOG_PREFIX, "stopping with %d request(s) still unanswered after %d s",
                    s->inflight, DRAIN_MS / 1000);
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);

    /* Joins the pool threads, so no handler runs after this. */
    MHD_stop_daemon(s->d);
    s->d = NULL;
    if (s->watchdog_live) {
        pthread_mutex_lock(&s->cmu);
        s->watchdog_stop = 1;
        pthread_cond_signal(&s->ccv);
        pthread_mutex_unlock(&s->cmu);
        pthread_join(s->watchdog, NULL);
        s->watchdog_live = 0;
    }
    if (qfd != MHD_INVALID_SOCKET) {
        close(qfd);
    }
    /* Without a successful quiesce MHD closed the socket itself. */
    s->lfd = -1;
    sl_info(LOG_PREFIX, "stopped listening on %s", s->listen);
}

void sl_server_free(sl_server *s)
{
    if (!s) {
        return;
    }
    sl_server_stop(s);
    for (size_t i = 0; i < s->nroutes; i++) {
        free(s->routes[i].path);
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->ccv);
    pthread_mutex_destroy(&s->cmu);
    free(s);
}
