/* The `sluice serve` HTTP server (src/net/server.c), driven over loopback with
 * libcurl: routing, body caps, built-in /healthz and /metrics, concurrency and
 * draining on stop. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "util/metrics.h"
#include "net/server.h"

#define CAP 1024

/* ------------------------------------------------------------ handlers */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    int bad_ud, no_nul;
    int slow_entered;
    char body[4096];
    size_t body_len;
    char sig[256];
    int sig_found;
    char method[16];
    char path[256];
    char remote[64];
} H = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static int calls(void)
{
    pthread_mutex_lock(&H.mu);
    int n = H.calls;
    pthread_mutex_unlock(&H.mu);
    return n;
}

/* Records what it saw and answers 202 with a JSON body. */
static void hook(void *ud, const sl_webhook_req *req, sl_server_resp *resp)
{
    /* No cmocka asserts here: this runs on a server thread. */
    pthread_mutex_lock(&H.mu);
    H.calls++;
    H.bad_ud += ud != &H;
    H.body_len = req->body_len < sizeof(H.body) - 1 ? req->body_len : sizeof(H.body) - 1;
    memcpy(H.body, req->body, H.body_len);
    H.body[H.body_len] = '\0';
    /* The server promises a NUL after the body. */
    H.no_nul += req->body[req->body_len] != '\0';
    const char *sig = req->header(req, "x-ControlShift-WEBHOOK-signature");
    H.sig_found = sig != NULL;
    snprintf(H.sig, sizeof(H.sig), "%s", sig ? sig : "");
    snprintf(H.method, sizeof(H.method), "%s", req->method);
    snprintf(H.path, sizeof(H.path), "%s", req->path);
    snprintf(H.remote, sizeof(H.remote), "%s", req->remote);
    pthread_mutex_unlock(&H.mu);
    resp->status = 202;
    snprintf(resp->content_type, sizeof(resp->content_type), "application/json");
    sl_buf_printf(&resp->body, "{\"stored\":%zu}", req->body_len);
}

static void slow(void *ud, const sl_webhook_req *req, sl_server_resp *resp)
{
    pthread_mutex_lock(&H.mu);
    H.calls++;
    H.slow_entered = 1;
    pthread_cond_broadcast(&H.cv);
    pthread_mutex_unlock(&H.mu);
    usleep(300 * 1000);
    sl_buf_puts(&resp->body, "done");
}

static int health_ok;

static int health(void *ud, sl_buf *detail)
{
    if (health_ok) {
        return 1;
    }
    sl_buf_puts(detail, "state store \"jobs.db\" unreachable");
    return 0;
}

/* ------------------------------------------------------------ client */

typedef struct reply {
    long status; /* 0: no answer */
    CURLcode code;
    char body[65536];
    size_t len;
    char ctype[128];
    char allow[128];
} reply;

typedef struct upload {
    const char *data;
    size_t len, off;
} upload;

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    reply *r = ud;
    size_t k = sz * n;
    if (r->len + k >= sizeof(r->body)) {
        return 0;
    }
    memcpy(r->body + r->len, p, k);
    r->len += k;
    r->body[r->len] = '\0';
    return k;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    reply *r = ud;
    size_t k = sz * n;
    if (k > 6 && strncasecmp(p, "Allow:", 6) == 0) {
        size_t v = k - 6;
        const char *s = p + 6;
        while (v && (*s == ' ')) {
            s++;
            v--;
        }
        while (v && (s[v - 1] == '\r' || s[v - 1] == '\n')) {
            v--;
        }
        snprintf(r->allow, sizeof(r->allow), "%.*s", (int)v, s);
    }
    return k;
}

static size_t on_read(char *buf, size_t sz, size_t n, void *ud)
{
    upload *u = ud;
    size_t k = sz * n;
    if (k > 4096) {
        k = 4096; /* many small chunks */
    }
    if (k > u->len - u->off) {
        k = u->len - u->off;
    }
    memcpy(buf, u->data + u->off, k);
    u->off += k;
    return k;
}

/* One request. body NULL: no body. chunked: send the body with
 * Transfer-Encoding: chunked (no Content-Length). expect: send
 * "Expect: 100-continue" (so an early answer arrives before the body). */
static void request(int port, const char *method, const char *path, const char *body, size_t len,
                    int chunked, int expect, const char *extra_header, reply *r)
{
    CURL *c = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    upload u = {body, len, 0};
    char url[512];

    memset(r, 0, sizeof(*r));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    }
    if (body) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        if (chunked) {
            curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
            curl_easy_setopt(c, CURLOPT_READDATA, &u);
            hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
        } else {
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        }
        hdrs = curl_slist_append(hdrs, expect ? "Expect: 100-continue" : "Expect:");
        curl_easy_setopt(c, CURLOPT_EXPECT_100_TIMEOUT_MS, 5000L);
    }
    if (extra_header) {
        hdrs = curl_slist_append(hdrs, extra_header);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    r->code = curl_easy_perform(c);
    if (r->code == CURLE_OK) {
        char *ct = NULL;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
        snprintf(r->ctype, sizeof(r->ctype), "%s", ct ? ct : "");
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
}

static void get(int port, const char *path, reply *r)
{
    request(port, "GET", path, NULL, 0, 0, 0, NULL, r);
}

/* ------------------------------------------------------------ fixture */

static sl_server *start(void)
{
    sl_error err = {0};
    sl_server *s = sl_server_new("127.0.0.1:0", 4, &err);
    assert_non_null(s);
    assert_int_equal(sl_server_add_route(s, "POST", "/hook", CAP, hook, &H, &err), 0);
    assert_int_equal(sl_server_add_route(s, "POST", "/slow", CAP, slow, &H, &err), 0);
    assert_int_equal(sl_server_add_route(s, "POST", "/empty", 0, hook, &H, &err), 0);
    assert_int_equal(sl_server_start(s, &err), 0);
    return s;
}

static int teardown(void **state)
{
    (void)state;
    /* Every handler call saw its ud and a NUL-terminated body. */
    return H.bad_ud + H.no_nul;
}

static int setup(void **state)
{
    (void)state;
    sl_metrics_reset();
    pthread_mutex_lock(&H.mu);
    H.calls = 0;
    H.bad_ud = H.no_nul = 0;
    H.slow_entered = 0;
    H.body[0] = '\0';
    H.sig[0] = '\0';
    pthread_mutex_unlock(&H.mu);
    health_ok = 1;
    return 0;
}

/* ------------------------------------------------------------ tests */

static void test_port_zero_binds_a_real_port(void **state)
{
    sl_server *s = start();
    int port = sl_server_port(s);
    assert_true(port > 0 && port < 65536);
    /* The port is really ours: binding it again fails. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_not_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    close(fd);
    reply r;
    get(port, "/healthz", &r);
    assert_int_equal(r.status, 200);
    sl_server_free(s);
    /* Stopped: nothing listens any more. */
    get(port, "/healthz", &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.code, CURLE_COULDNT_CONNECT);
}

static void test_healthz(void **state)
{
    sl_server *s = start();
    int port = sl_server_port(s);
    reply r;
    get(port, "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    assert_string_equal(r.ctype, "application/json");

    sl_server_set_health(s, health, NULL);
    health_ok = 0;
    get(port, "/healthz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body,
                        "{\"status\":\"unhealthy\",\"detail\":\"state store \\\"jobs.db\\\" "
                        "unreachable\"}");
    health_ok = 1;
    get(port, "/healthz?verbose=1", &r);
    assert_int_equal(r.status, 200);

    /* HEAD works on GET routes (health checkers like it). */
    request(port, "HEAD", "/healthz", NULL, 0, 0, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 0);
    sl_server_free(s);
}

static void test_route_gets_exact_body_and_headers(void **state)
{
    sl_server *s = start();
    int port = sl_server_port(s);
    /* Binary body with a NUL inside: body_len, not strlen, is the truth. */
    static const char body[] = "{\"a\":1}\0tail\xff";
    size_t len = sizeof(body) - 1;
    reply r;
    request(port, "POST", "/hook?token=abc", body, len, 0, 0,
            "X-Controlshift-Webhook-Signature: sha256:00ff", &r);
    assert_int_equal(r.code, CURLE_OK);
    assert_int_equal(r.status, 202);
    assert_string_equal(r.ctype, "application/json");
    char want[64];
    snprintf(want, sizeof(want), "{\"stored\":%zu}", len);
    assert_string_equal(r.body, want);
    assert_int_equal(calls(), 1);
    assert_int_equal(H.body_len, len);
    assert_memory_equal(H.body, body, len);
    assert_true(H.sig_found);
    assert_string_equal(H.sig, "sha256:00ff");
    assert_string_equal(H.method, "POST");
    assert_string_equal(H.path, "/hook");
    assert_string_equal(H.remote, "127.0.0.1");

    /* Absent header: NULL. Body exactly at the cap is accepted. */
    char *full = malloc(CAP);
    memset(full, 'x', CAP);
    request(port, "POST", "/hook", full, CAP, 0, 0, NULL, &r);
    assert_int_equal(r.status, 202);
    assert_false(H.sig_found);
    assert_int_equal(H.body_len, CAP);
    /* ... also when chunked. */
    request(port, "POST", "/hook", full, CAP, 1, 0, NULL, &r);
    assert_int_equal(r.status, 202);
    assert_int_equal(H.body_len, CAP);
    assert_int_equal(calls(), 3);
    free(full);

    /* Default content type of a handler's answer. */
    request(port, "POST", "/slow", "x", 1, 0, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "done");
    assert_string_equal(r.ctype, "text/plain; charset=utf-8");
    sl_server_free(s);
}

static void test_404_405(void **state)
{
    sl_server *s = start();
    int port = sl_server_port(s);
    reply r;
    get(port, "/nope?x=1", &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.body, "{\"error\":\"no route for GET /nope\"}");
    assert_string_equal(r.ctype, "application/json");

    /* A path that is only a prefix of a route is not that route. */
    request(port, "POST", "/hook/x", "a", 1, 0, 0, NULL, &r);
    assert_int_equal(r.status, 404);

    get(port, "/hook", &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "POST");
    assert_string_equal(r.body, "{\"error\":\"method GET not allowed for /hook (allowed: POST)\"}");

    request(port, "POST", "/metrics", "a", 1, 0, 0, NULL, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "GET, HEAD");
    assert_int_equal(calls(), 0);
    sl_server_free(s);
}

static void test_content_length_over_cap(void **state)
{
    sl_server *s = start();
    int port = sl_server_port(s);
    size_t len = 4 * 1024 * 1024;
    char *big = malloc(len);
    memset(big, 'y', len);
    reply r;
    /* With Expect: 100-continue the answer comes before any body byte. */
    request(port, "POST", "/hook", big, len, 0, 1, NULL, &r);
    assert_int_equal(r.code, CURLE_OK);
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(r.body, "over the 1024-byte limit of POST /hook"));
    assert_non_null(strstr(r.body, "4194304"));
    /* One byte over. */
    request(port, "POST", "/hook", big, CAP + 1, 0, 1, NULL, &r);
    assert_int_equal(r.status, 413);
    /* A route with max_body 0 takes no body at all, but an empty one. */
    request(port, "POST", "/empty", big, 1, 0, 1, NULL, &r);
    assert_int_equal(r.status, 413);
    request(port, "POST", "/empty", "", 0, 0, 0, NULL, &r);
    assert_int_equal(r.status, 202);
    assert_int_equal(calls(), 1);

    /* The body was never read: no byte counted for /hook. */
    sl_buf m;
    sl_buf_init(&m, 1 << 20);
    assert_int_equal(sl_metrics_render(&m), 0);
    assert_non_null(strstr(m.data, "sluice_http_request_bytes_total{route=\"/hook\"} 0\n"));
    assert_non_null(
        strstr(m.data, "sluice_http_requests_total{route=\"/hook\",status=\"413\"} 2\n"));
    sl_buf_free(&m);
    free(big);
    sl_server_free(s);
}

static void test_chunked_over_cap(void **state)
{
    sl_server *s = start();
    int port = sl_server_port(s);
    size_t len = 64 * 1024;
    char *big = malloc(len);
    memset(big, 'z', len);
    reply r;
    request(port, "POST", "/hook", big, len, 1, 0, NULL, &r);
    assert_int_equal(r.code, CURLE_OK);
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(r.body, "over the 1024-byte limit of POST /hook"));
    request(port, "POST", "/hook", big, CAP + 1, 1, 0, NULL, &r);
    assert_int_equal(r.status, 413);
    assert_int_equal(calls(), 0);
    free(big);

    /* A sender that keeps streaming far past the cap is cut off (no answer)
     * instead of being read forever. */
    len = 8 * 1024 * 1024;
    big = malloc(len);
    memset(big, 'z', len);
    request(port, "POST", "/hook", big, len, 1, 0, NULL, &r);
    assert_int_not_equal(r.code, CURLE_OK);
    assert_int_equal(calls(), 0);
    free(big);

    /* The server is still fine. */
    request(port, "POST", "/hook", "ok", 2, 1, 0, NULL, &r);
    assert_int_equal(r.status, 202);
    assert_string_equal(H.body, "ok");
    sl_server_free(s);
}

static void test_metrics_endpoint(void **state)
{
    sl_server *s = start();
    int port = sl_server_port(s);
    reply r;
    request(port, "POST", "/hook", "12345", 5, 0, 0, NULL, &r);
    request(port, "POST", "/hook", "123", 3, 1, 0, NULL, &r);
    get(port, "/no/such/path", &r);
    get(port, "/other", &r);
    get(port, "/hook", &r);
    get(port, "/healthz", &r);
    get(port, "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "text/plain; version=0.0.4; charset=utf-8");
    assert_non_null(strstr(r.body, "# TYPE sluice_http_requests_total counter\n"));
    assert_non_null(strstr(r.body, "# HELP sluice_http_requests_total "));
    assert_non_null(
        strstr(r.body, "\nsluice_http_requests_total{route=\"/hook\",status=\"202\"} 2\n"));
    assert_non_null(
        strstr(r.body, "\nsluice_http_requests_total{route=\"/hook\",status=\"405\"} 1\n"));
    /* 404s share one label value, never the raw path. */
    assert_non_null(
        strstr(r.body, "\nsluice_http_requests_total{route=\"other\",status=\"404\"} 2\n"));
    assert_null(strstr(r.body, "no/such"));
    assert_non_null(
        strstr(r.body, "\nsluice_http_requests_total{route=\"/healthz\",status=\"200\"} 1\n"));
    assert_non_null(strstr(r.body, "\nsluice_http_request_bytes_total{route=\"/hook\"} 8\n"));
    /* This request itself is counted once answered. */
    assert_null(strstr(r.body, "route=\"/metrics\""));
    get(port, "/metrics", &r);
    assert_non_null(
        strstr(r.body, "\nsluice_http_requests_total{route=\"/metrics\",status=\"200\"} 1\n"));
    sl_server_free(s);
}

#define CLIENTS 5
#define PER_CLIENT 10

typedef struct client {
    int port, id, ok;
} client;

static void *client_main(void *arg)
{
    client *c = arg;
    for (int i = 0; i < PER_CLIENT; i++) {
        char body[64];
        char want[64];
        reply *r = malloc(sizeof(*r));
        int n = snprintf(body, sizeof(body), "client %d request %d", c->id, i);
        request(c->port, "POST", "/hook", body, (size_t)n, i % 2, 0, NULL, r);
        snprintf(want, sizeof(want), "{\"stored\":%d}", n);
        if (r->status == 202 && strcmp(r->body, want) == 0) {
            c->ok++;
        }
        free(r);
    }
    return NULL;
}

static void test_concurrent_requests(void **state)
{
    sl_server *s = start();
    client cl[CLIENTS];
    pthread_t th[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        cl[i] = (client){.port = sl_server_port(s), .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &cl[i]), 0);
    }
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(cl[i].ok, PER_CLIENT);
    }
    assert_int_equal(calls(), CLIENTS * PER_CLIENT);
    sl_buf m;
    sl_buf_init(&m, 1 << 20);
    assert_int_equal(sl_metrics_render(&m), 0);
    assert_non_null(
        strstr(m.data, "sluice_http_requests_total{route=\"/hook\",status=\"202\"} 50\n"));
    sl_buf_free(&m);
    sl_server_free(s);
}

typedef struct slow_client {
    int port;
    reply r;
} slow_client;

static void *slow_main(void *arg)
{
    slow_client *c = arg;
    request(c->port, "POST", "/slow", "x", 1, 0, 0, NULL, &c->r);
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_stop_waits_for_in_flight(void **state)
{
    sl_server *s = start();
    int port = sl_server_port(s);
    slow_client *c = calloc(1, sizeof(*c));
    pthread_t th;
    c->port = port;
    assert_int_equal(pthread_create(&th, NULL, slow_main, c), 0);
    pthread_mutex_lock(&H.mu);
    while (!H.slow_entered) {
        pthread_cond_wait(&H.cv, &H.mu);
    }
    pthread_mutex_unlock(&H.mu);

    double t0 = now_s();
    sl_server_stop(s);
    double waited = now_s() - t0;
    pthread_join(th, NULL);
    assert_int_equal(c->r.code, CURLE_OK);
    assert_int_equal(c->r.status, 200);
    assert_string_equal(c->r.body, "done");
    /* stop really waited for the handler (it had ~300 ms left). */
    assert_true(waited > 0.1);
    /* No longer accepting. */
    reply r;
    get(port, "/healthz", &r);
    assert_int_equal(r.status, 0);
    sl_server_stop(s); /* twice is fine */
    sl_server_free(s);
    free(c);
}

/* A client that opens a connection from 127.0.0.2 and sends the first byte
 * of a request head. */
static int slow_conn(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(0x7f000002);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    struct sockaddr_in d = {0};
    d.sin_family = AF_INET;
    d.sin_port = htons((uint16_t)port);
    d.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&d, sizeof(d)), 0);
    send(fd, "P", 1, MSG_NOSIGNAL);
    return fd;
}

static int closed_by_peer(int fd)
{
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* Slowloris: 300 connections from one address, each sending its request
 * head a byte at a time, neither fill the server (a cap per client
 * address) nor hold it (a deadline for the head), and /healthz and a
 * webhook from another address are answered meanwhile. */
static void test_slow_clients(void **state)
{
    (void)state;
    sl_error err = {0};
    sl_server *s = sl_server_new("127.0.0.1:0", 4, &err);
    assert_non_null(s);
    assert_int_equal(sl_server_add_route(s, "POST", "/hook", CAP, hook, &H, &err), 0);
    sl_server_set_limits(s, 8, 1000, 2000);
    assert_int_equal(sl_server_start(s, &err), 0);
    int port = sl_server_port(s);
    enum { N = 300 };
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = slow_conn(port);
    }
    reply r;
    get(port, "/healthz", &r);
    assert_int_equal(r.code, CURLE_OK);
    assert_int_equal(r.status, 200);
    request(port, "POST", "/hook", "{}", 2, 0, 0, NULL, &r);
    assert_int_equal(r.status, 202);

    /* keep dripping; activity does not extend the head's deadline */
    const char *head =
        "OST /hook HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    double t0 = now_s();
    int open = N;
    for (size_t tick = 0; open > 0 && now_s() - t0 < 6.0; tick++) {
        open = 0;
        for (int i = 0; i < N; i++) {
            if (fds[i] < 0) {
                continue;
            }
            if (closed_by_peer(fds[i])) {
                close(fds[i]);
                fds[i] = -1;
                continue;
            }
            send(fds[i], head + tick % strlen(head), 1, MSG_NOSIGNAL);
            open++;
        }
        if (tick == 2) {
            get(port, "/healthz", &r); /* during the attack, not only before it */
            assert_int_equal(r.status, 200);
        }
        usleep(200 * 1000);
    }
    assert_int_equal(open, 0);
    get(port, "/healthz", &r);
    assert_int_equal(r.status, 200);
    for (int i = 0; i < N; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    sl_server_free(s);
}

static void test_new_and_route_errors(void **state)
{
    sl_error err = {0};
    static const char *bad[] = {"nonsense",   "1.2.3.4:99999", "[::1]8080", "example.com:80",
                                "127.0.0.1:", "127.0.0.1:8o",  "[::1:80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sl_error_clear(&err);
        assert_null(sl_server_new(bad[i], 4, &err));
        assert_int_equal(err.code, SL_ERR_CONFIG);
        assert_non_null(strstr(err.msg, bad[i]));
    }
    sl_server_free(NULL);

    sl_server *s = sl_server_new("localhost:0", 0, &err);
    assert_non_null(s);
    assert_int_equal(sl_server_add_route(s, "POST", "/a", 10, hook, &H, &err), 0);
    assert_int_equal(sl_server_add_route(s, "POST", "/a", 10, hook, &H, &err), SL_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "POST /a is declared twice"));
    assert_int_equal(sl_server_add_route(s, "GET", "/a", 10, hook, &H, &err), 0);
    assert_int_equal(sl_server_add_route(s, "POST", "/healthz", 10, hook, &H, &err), SL_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "built in"));
    assert_int_equal(sl_server_add_route(s, "POST", "a", 10, hook, &H, &err), SL_ERR_CONFIG);
    assert_int_equal(sl_server_add_route(s, "post", "/b", 10, hook, &H, &err), SL_ERR_CONFIG);
    assert_int_equal(sl_server_add_route(s, "POST", "/b?x", 10, hook, &H, &err), SL_ERR_CONFIG);

    /* Two methods on one path: the 405 lists both. */
    assert_int_equal(sl_server_start(s, &err), 0);
    int port = sl_server_port(s);
    assert_true(port > 0);
    reply r;
    request(port, "PUT", "/a", "x", 1, 0, 0, NULL, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "POST, GET, HEAD");
    assert_int_equal(sl_server_add_route(s, "POST", "/late", 10, hook, &H, &err), SL_ERR_USAGE);

    /* A second server on the same port fails with the reason. */
    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    sl_server *s2 = sl_server_new(listen, 1, &err);
    assert_non_null(s2);
    assert_int_equal(sl_server_start(s2, &err), SL_ERR_IO);
    assert_non_null(strstr(err.msg, listen));
    assert_non_null(strstr(err.msg, "in use"));
    sl_server_free(s2);
    sl_server_free(s);
}

static void test_ipv6_loopback(void **state)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0) {
        skip();
    }
    close(fd);
    sl_error err = {0};
    sl_server *s = sl_server_new("[::1]:0", 2, &err);
    assert_non_null(s);
    if (sl_server_start(s, &err) != 0) {
        /* No IPv6 loopback in this sandbox. */
        sl_server_free(s);
        skip();
    }
    char url[64];
    snprintf(url, sizeof(url), "http://[::1]:%d/healthz", sl_server_port(s));
    CURL *c = curl_easy_init();
    reply r = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_cleanup(c);
    assert_int_equal(r.status, 200);
    sl_server_free(s);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_port_zero_binds_a_real_port, setup, teardown),
        cmocka_unit_test_setup_teardown(test_healthz, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_clients, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_gets_exact_body_and_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_404_405, setup, teardown),
        cmocka_unit_test_setup_teardown(test_content_length_over_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_over_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_waits_for_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_and_route_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ipv6_loopback, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    sl_metrics_reset();
    curl_global_cleanup();
    return rc;
}
