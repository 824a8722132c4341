/* HTTP client on libcurl's multi interface (see include/sluice/http.h and
 * docs/http.md).
 *
 * Shape: a submitted request becomes an `xfer` that lives until its callback
 * has run. An xfer is in exactly one place: the ready FIFO (may start now),
 * the timer heap (backing off until not_before), or a `slot` (running, or
 * answered and waiting for its callback). At most `concurrency` transfers
 * run at once, and there are twice as many slots: when answers arrive, their
 * transfers leave the multi handle, the waiting requests start on the freed
 * connections and go on the wire, and only then do the callbacks run (see
 * drain_done), so a connection never idles while the caller digests the
 * answer it just gave. Each slot keeps its easy handle and response buffer
 * for the client's lifetime, so steady-state traffic allocates only what
 * libcurl allocates per transfer plus the request's header list. The
 * connection cache lives in the multi handle, so keep-alive connections are
 * reused by whichever slot runs next.
 *
 * Everything is single-threaded: callbacks run from sl_http_run(), which
 * sleeps in curl_multi_poll() until socket activity, the earliest backoff
 * deadline or the next rate-limit token. Nothing busy-waits. */
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sluice/guard.h"
#include "sluice/http.h"
#include "sluice/log.h"
#include "sluice/url.h"
#include "util/retry.h"

#ifndef SLUICE_VERSION
#define SLUICE_VERSION "dev"
#endif

#define HTTP_MAX_CONCURRENCY 1024
/* attempts one rate-limit window may hold (8 bytes each) */
#define HTTP_RATE_WINDOW_MAX 1000000
#define REQ_URL_MAX ((size_t)16 * 1024)
#define REQ_HEADERS_MAX ((size_t)64 * 1024)
#define REQ_BODY_MAX ((size_t)64 * 1024 * 1024)
/* A slot whose response buffer grew beyond this gives the memory back after
 * the callback, so one big answer does not pin memory per slot forever. */
#define SLOT_KEEP_CAP ((size_t)256 * 1024)
#define STREAM_BUF ((size_t)256 * 1024)
#define STREAM_BUF_MAX ((size_t)4 * 1024 * 1024)
#define ERR_BODY_SNIPPET 200
#define URL_LOG_MAX 512

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* curl_global_init is not reference-counted safely across threads on every
 * libcurl build, so do it exactly once per process and never clean up. */
static int http_global_init(sl_error *err)
{
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK) {
        return sl_error_set(err, SL_ERR, "http: libcurl initialisation failed: %s",
                            curl_easy_strerror(curl_init_rc));
    }
    return 0;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fmt_wait(char *out, size_t cap, double s)
{
    if (s >= 1.0) {
        snprintf(out, cap, "%.1fs", s);
    } else {
        snprintf(out, cap, "%.2fs", s);
    }
}

/* Transport failures that another attempt cannot fix (bad URL, scheme not
 * allowed, TLS verification): reported at once instead of after minutes of
 * backoff. */
static int curl_permanent(CURLcode rc)
{
    switch (rc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_FILESIZE_EXCEEDED:
    case CURLE_LOGIN_DENIED:
    case CURLE_OUT_OF_MEMORY:
        return 1;
    default:
        return 0;
    }
}

static int url_scheme_ok(const char *url)
{
    return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

/* "Name: value\n" lines -> curl list. Lines carrying a bare CR (header
 * injection) are refused. *out is NULL for no headers. */
static int headers_to_slist(const char *h, size_t len, int no_expect, struct curl_slist **out,
                            sl_error *err)
{
    struct curl_slist *l = NULL;
    char line[1024];
    char *big = NULL;
    size_t i = 0;
    *out = NULL;
    while (i < len) {
        const char *nl = memchr(h + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - h) : len;
        size_t ll = e - i;
        if (ll && h[i + ll - 1] == '\r') {
            ll--;
        }
        if (ll) {
            char *dst = line;
            if (ll >= sizeof(line)) {
                free(big);
                big = malloc(ll + 1);
                if (!big) {
                    sl_error_set(err, SL_ERR_NOMEM, "http: out of memory building headers");
                    goto fail;
                }
                dst = big;
            }
            memcpy(dst, h + i, ll);
            dst[ll] = '\0';
            if (strchr(dst, '\r') || strlen(dst) != ll) {
                sl_error_set(err, SL_ERR_INPUT,
                             "http: request header line %zu contains a CR or NUL byte", ll);
                goto fail;
            }
            struct curl_slist *n = curl_slist_append(l, dst);
            if (!n) {
                sl_error_set(err, SL_ERR_NOMEM, "http: out of memory building headers");
                goto fail;
            }
            l = n;
        }
        i = e + 1;
    }
    if (no_expect) {
        /* libcurl would send "Expect: 100-continue" for larger bodies and wait
         * up to a second for servers that never answer it */
        struct curl_slist *n = curl_slist_append(l, "Expect:");
        if (!n) {
            sl_error_set(err, SL_ERR_NOMEM, "http: out of memory building headers");
            goto fail;
        }
        l = n;
    }
    free(big);
    *out = l;
    return 0;
fail:
    free(big);
    curl_slist_free_all(l);
    return err ? err->code : SL_ERR;
}

/* ------------------------------------------------------------------------ */
/* Options                                                                   */

void sl_http_opts_default(sl_http_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->concurrency = 8;
    o->rate_per_sec = 0;
    o->rate_burst = 0;
    o->connect_timeout_ms = 10000;
    o->timeout_ms = 120000;
    o->max_attempts = 8;
    o->backoff_base_ms = 500;
    o->backoff_max_ms = 60000;
    o->max_response = (size_t)1024 * 1024;
}

/* Normalised copy of sl_http_opts; owns its strings so callers may free the
 * configuration they built opts from. */
typedef struct http_conf {
    sl_http_opts o;
    char *ca_file;
    char prefix[192];
} http_conf;

static void conf_free(http_conf *c)
{
    free(c->ca_file);
    c->ca_file = NULL;
}

static int conf_init(http_conf *c, const sl_http_opts *in, sl_error *err)
{
    sl_http_opts d;
    sl_http_opts_default(&d);
    memset(c, 0, sizeof(*c));
    c->o = in ? *in : d;
    sl_http_opts *o = &c->o;
    snprintf(c->prefix, sizeof(c->prefix), "%s",
             o->log_prefix && *o->log_prefix ? o->log_prefix : "http");
    o->log_prefix = c->prefix;
    /* zero means "default" so a zeroed struct is usable */
    if (o->concurrency <= 0) {
        o->concurrency = d.concurrency;
    }
    if (o->connect_timeout_ms <= 0) {
        o->connect_timeout_ms = d.connect_timeout_ms;
    }
    if (o->timeout_ms <= 0) {
        o->timeout_ms = d.timeout_ms;
    }
    if (o->max_attempts <= 0) {
        o->max_attempts = d.max_attempts;
    }
    if (o->backoff_base_ms < 0) {
        o->backoff_base_ms = d.backoff_base_ms;
    }
    if (o->backoff_max_ms <= 0) {
        o->backoff_max_ms = d.backoff_max_ms;
    }
    if (o->max_response == 0) {
        o->max_response = d.max_response;
    }
    if (o->concurrency > HTTP_MAX_CONCURRENCY) {
        return sl_error_set(err, SL_ERR_CONFIG, "[%s] http concurrency %d is out of range (1..%d)",
                            c->prefix, o->concurrency, HTTP_MAX_CONCURRENCY);
    }
    if (!(o->rate_per_sec >= 0) || !isfinite(o->rate_per_sec)) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "[%s] http rate_per_sec must be a number >= 0 (0 = unlimited)",
                            c->prefix);
    }
    if (!(o->rate_burst >= 0) || !isfinite(o->rate_burst)) {
        return sl_error_set(err, SL_ERR_CONFIG, "[%s] http rate_burst must be a number >= 0",
                            c->prefix);
    }
    if (o->rate_burst < 1) {
        o->rate_burst = o->rate_per_sec > 1 ? o->rate_per_sec : 1;
    }
    if (o->ca_file && *o->ca_file) {
        if (access(o->ca_file, R_OK) != 0) {
            return sl_error_set(err, SL_ERR_CONFIG, "[%s] http ca_file '%s': %s", c->prefix,
                                o->ca_file, strerror(errno));
        }
        c->ca_file = strdup(o->ca_file);
        if (!c->ca_file) {
            return sl_error_set(err, SL_ERR_NOMEM, "http: out of memory");
        }
    }
    o->ca_file = c->ca_file;
    return 0;
}

/* The client's retry rule, in the one shared form (util/retry.h). */
static void conf_policy(const http_conf *c, sl_retry_policy *p)
{
    sl_retry_policy_default(p);
    p->max_attempts = c->o.max_attempts;
    p->base_ms = c->o.backoff_base_ms;
    p->max_ms = c->o.backoff_max_ms;
}

/* Retry-After of the answer on e, in ms; -1 when absent or not understood. */
static int64_t easy_retry_after_ms(CURL *e)
{
    struct curl_header *hh = NULL;
    if (curl_easy_header(e, "Retry-After", 0, CURLH_HEADER, -1, &hh) == CURLHE_OK && hh) {
        return sl_retry_after_ms(hh->value, time(NULL));
    }
    return -1;
}

/* Options every handle gets (client slots, streams). */
static int easy_common(CURL *e, const http_conf *c, char *errbuf, sl_error *err)
{
    CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (rc == CURLE_OK) {                                                                      \
            rc = curl_easy_setopt(e, opt, val);                                                    \
        }                                                                                          \
    } while (0)
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TCP_NODELAY, 1L);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_CONNECTTIMEOUT_MS, c->o.connect_timeout_ms);
#if LIBCURL_VERSION_NUM >= 0x075500
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    SET(CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_SSL_VERIFYPEER, c->o.insecure ? 0L : 1L);
    SET(CURLOPT_SSL_VERIFYHOST, c->o.insecure ? 0L : 2L);
    if (c->ca_file) {
        SET(CURLOPT_CAINFO, c->ca_file);
    }
    SET(CURLOPT_USERAGENT, "sluice/" SLUICE_VERSION);
    SET(CURLOPT_ERRORBUFFER, errbuf);
#undef SET
    if (rc != CURLE_OK) {
        return sl_error_set(err, SL_ERR, "[%s] http: cannot configure libcurl: %s", c->prefix,
                            curl_easy_strerror(rc));
    }
    return 0;
}

/* Peer check of one easy handle when a guard is set: the target of the
 * transfer running on it, and why the last refused address was refused
 * (empty when none was). */
typedef struct guard_conn {
    int active;
    sl_guard_target tgt;
    char why[256];
} guard_conn;

/* Every socket libcurl opens goes through here, after name resolution and
 * for every address it tries, so the check sees the address actually
 * connected to: a name that resolves to 127.0.0.1 is caught, whatever DNS
 * said when the URL was checked. Refusing makes libcurl try the next address
 * or fail with CURLE_COULDNT_CONNECT. */
static curl_socket_t guard_opensocket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    guard_conn *gc = ud;
    (void)purpose;
    if (gc->active) {
        char why[sizeof(gc->why)];
        if (sl_guard_check_peer(&gc->tgt, &a->addr, (size_t)a->addrlen, why, sizeof(why)) != 0) {
            if (!gc->why[0]) {
                memcpy(gc->why, why, sizeof(why));
            }
            return CURL_SOCKET_BAD;
        }
    }
    return socket(a->family, a->socktype, a->protocol);
}

/* Install the peer check on a handle when the client has a guard. A proxy
 * would connect on our behalf to an address we never see: none is used. */
static int guard_setup(CURL *e, const http_conf *c, guard_conn *gc, sl_error *err)
{
    memset(gc, 0, sizeof(*gc));
    if (!c->o.guard) {
        return 0;
    }
    CURLcode rc = curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, guard_opensocket);
    if (rc == CURLE_OK) {
        rc = curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, gc);
    }
    if (rc == CURLE_OK) {
        rc = curl_easy_setopt(e, CURLOPT_PROXY, "");
    }
    if (rc != CURLE_OK) {
        return sl_error_set(err, SL_ERR, "[%s] http: cannot configure libcurl: %s", c->prefix,
                            curl_easy_strerror(rc));
    }
    return 0;
}

/* A transfer that failed to connect because the guard refused every address. */
static int guard_refused(const guard_conn *gc, CURLcode rc)
{
    return gc->active && gc->why[0] && rc == CURLE_COULDNT_CONNECT;
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */

void sl_http_req_init(sl_http_req *r)
{
    memset(r, 0, sizeof(*r));
    memcpy(r->method, "GET", 4);
    sl_buf_init(&r->url, REQ_URL_MAX);
    sl_buf_init(&r->headers, REQ_HEADERS_MAX);
    sl_buf_init(&r->body, REQ_BODY_MAX);
}

void sl_http_req_free(sl_http_req *r)
{
    if (!r) {
        return;
    }
    sl_buf_free(&r->url);
    sl_buf_free(&r->headers);
    sl_buf_free(&r->body);
}

void sl_http_req_reset(sl_http_req *r)
{
    memset(r->method, 0, sizeof(r->method));
    memcpy(r->method, "GET", 4);
    sl_buf_reset(&r->url);
    sl_buf_reset(&r->headers);
    sl_buf_reset(&r->body);
}

int sl_http_req_header(sl_http_req *r, const char *name, const char *fmt, ...)
{
    if (!r || !name || !*name || !fmt) {
        return SL_ERR_USAGE;
    }
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == ':') {
            return SL_ERR_INPUT;
        }
    }
    size_t mark = r->headers.len;
    int rc = sl_buf_printf(&r->headers, "%s: ", name);
    size_t vstart = r->headers.len;
    if (rc == 0) {
        va_list ap;
        va_start(ap, fmt);
        rc = sl_buf_vprintf(&r->headers, fmt, ap);
        va_end(ap);
    }
    if (rc == 0) {
        /* a CR, LF or NUL inside the value would inject headers */
        if (memchr(r->headers.data + vstart, '\r', r->headers.len - vstart) ||
            memchr(r->headers.data + vstart, '\n', r->headers.len - vstart) ||
            memchr(r->headers.data + vstart, '\0', r->headers.len - vstart)) {
            rc = SL_ERR_INPUT;
        }
    }
    if (rc == 0) {
        rc = sl_buf_putc(&r->headers, '\n');
    }
    if (rc != 0 && r->headers.data) {
        r->headers.len = mark;
        r->headers.data[mark] = '\0';
    }
    return rc;
}

sl_http_class sl_http_classify(long status)
{
    if (status >= 200 && status <= 299) {
        return SL_HTTP_OK;
    }
    if (status == 0 || status == 408 || status == 429 || (status >= 500 && status <= 599)) {
        return SL_HTTP_RETRY;
    }
    return SL_HTTP_CLIENT;
}

static int method_ok(const char *m)
{
    size_t n = strnlen(m, 8);
    if (n == 0 || n >= 8) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (m[i] < 'A' || m[i] > 'Z') {
            return 0;
        }
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* The multi client                                                          */

typedef struct xfer {
    struct xfer *next; /* ready FIFO / free list */
    sl_http_req *req;  /* borrowed until the callback ran */
    sl_http_done_fn done;
    void *ud;
    struct curl_slist *hdrs; /* owned; built once, reused by every attempt */
    sl_guard_target tgt;     /* when the client has a guard */
    double t_submit;
    double not_before;
    int attempts;
} xfer;

typedef struct slot {
    CURL *easy;
    xfer *x; /* running transfer or NULL */
    struct slot *next_free;
    sl_buf body; /* max = max_response */
    CURLcode rc; /* the finished transfer's result, until its callback ran */
    guard_conn gc;
    char errbuf[CURL_ERROR_SIZE];
} slot;

struct sl_http {
    http_conf conf;
    CURLM *multi;
    CURLSH *share;
    char cancel_why[200]; /* set: sl_http_cancel_waiting() is pending */
    slot *slots;          /* 2 x concurrency, see the top of the file */
    int nslots;
    slot *free_slots;
    xfer *free_xfers;
    xfer *ready_head, *ready_tail;
    xfer **heap; /* min-heap on not_before */
    size_t heap_len, heap_cap;
    size_t pending;
    int running, peak;
    /* rate limit: start times (monotonic) of the last win_n attempts, a ring */
    double *win;
    size_t win_n, win_head, win_len;
    double win_s, rate_next;
    uint64_t rng;
    int in_run;
    sl_http_stats stats;
};

static size_t slot_write(char *p, size_t sz, size_t nm, void *ud)
{
    slot *s = ud;
    size_t len = sz * nm;
    size_t room = s->body.max > s->body.len ? s->body.max - s->body.len : 0;
    size_t take = len < room ? len : room;
    /* beyond max_response the bytes are read and dropped: not an error. An
     * allocation failure also just truncates the kept body. */
    if (take) {
        (void)sl_buf_append(&s->body, p, take);
    }
    return len;
}

static int heap_push(sl_http *h, xfer *x)
{
    if (h->heap_len == h->heap_cap) {
        size_t ncap = h->heap_cap ? h->heap_cap * 2 : 16;
        xfer **n = realloc(h->heap, ncap * sizeof(*n));
        if (!n) {
            return SL_ERR_NOMEM;
        }
        h->heap = n;
        h->heap_cap = ncap;
    }
    size_t i = h->heap_len++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->heap[p]->not_before <= x->not_before) {
            break;
        }
        h->heap[i] = h->heap[p];
        i = p;
    }
    h->heap[i] = x;
    return 0;
}

static xfer *heap_pop(sl_http *h)
{
    if (!h->heap_len) {
        return NULL;
    }
    xfer *top = h->heap[0];
    xfer *last = h->heap[--h->heap_len];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->heap_len) {
            break;
        }
        if (c + 1 < h->heap_len && h->heap[c + 1]->not_before < h->heap[c]->not_before) {
            c++;
        }
        if (last->not_before <= h->heap[c]->not_before) {
            break;
        }
        h->heap[i] = h->heap[c];
        i = c;
    }
    if (h->heap_len) {
        h->heap[i] = last;
    }
    return top;
}

static void ready_push_back(sl_http *h, xfer *x)
{
    x->next = NULL;
    if (h->ready_tail) {
        h->ready_tail->next = x;
    } else {
        h->ready_head = x;
    }
    h->ready_tail = x;
}

static void ready_push_front(sl_http *h, xfer *x)
{
    x->next = h->ready_head;
    h->ready_head = x;
    if (!h->ready_tail) {
        h->ready_tail = x;
    }
}

static xfer *ready_pop(sl_http *h)
{
    xfer *x = h->ready_head;
    if (x) {
        h->ready_head = x->next;
        if (!h->ready_head) {
            h->ready_tail = NULL;
        }
        x->next = NULL;
    }
    return x;
}

static void xfer_release(sl_http *h, xfer *x)
{
    curl_slist_free_all(x->hdrs);
    x->hdrs = NULL;
    x->req = NULL;
    x->next = h->free_xfers;
    h->free_xfers = x;
}

static void slot_release(sl_http *h, slot *s)
{
    s->x = NULL;
    if (s->body.cap > SLOT_KEEP_CAP) {
        size_t max = s->body.max;
        sl_buf_free(&s->body);
        sl_buf_init(&s->body, max);
    }
    s->next_free = h->free_slots;
    h->free_slots = s;
}

/* The rate limit is a sliding window: at most win_n attempt starts in any
 * window of win_s seconds, from the very first attempt on (no initial burst
 * on top of the window's count) and retries included. The ring holds the
 * start times of the last win_n attempts; a new one may start once the
 * oldest of them is win_s old. The clock is read here, not taken from the
 * caller, so the recorded time is never earlier than the real start. On
 * refusal sets h->rate_next to when the next start is allowed. */
static int take_token(sl_http *h)
{
    if (!h->win_n) {
        return 1;
    }
    double now = mono_now();
    if (h->win_len < h->win_n) {
        h->win[(h->win_head + h->win_len) % h->win_n] = now;
        h->win_len++;
        return 1;
    }
    double oldest = h->win[h->win_head];
    if (now - oldest >= h->win_s) {
        h->win[h->win_head] = now;
        h->win_head = (h->win_head + 1) % h->win_n;
        return 1;
    }
    h->rate_next = oldest + h->win_s;
    return 0;
}

/* Size the window from rate_per_sec and rate_burst (see sl_http_opts). A
 * server counts requests when they reach it, a little later than we start
 * them and not always in the same order: the window is kept slightly longer
 * than stated (2%, at most 50 ms) so its count holds at the server too. */
static int rate_init(sl_http *h, sl_error *err)
{
    const sl_http_opts *o = &h->conf.o;
    if (o->rate_per_sec <= 0) {
        return 0;
    }
    double count = floor(o->rate_burst);
    if (count < 1) {
        count = 1;
    }
    if (count > HTTP_RATE_WINDOW_MAX) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "[%s] http rate limit of %.0f requests per window is more than %d: "
                            "give it per shorter window (e.g. per second)",
                            h->conf.prefix, count, HTTP_RATE_WINDOW_MAX);
    }
    double w = count / o->rate_per_sec;
    double margin = w * 0.02;
    h->win_s = w + (margin > 0.05 ? 0.05 : margin);
    h->win_n = (size_t)count;
    h->win = calloc(h->win_n, sizeof(*h->win));
    if (!h->win) {
        return sl_error_set(err, SL_ERR_NOMEM, "http: out of memory");
    }
    return 0;
}

static int slot_easy(sl_http *h, slot *s, sl_error *err)
{
    if (s->easy) {
        return 0;
    }
    CURL *e = curl_easy_init();
    if (!e) {
        return sl_error_set(err, SL_ERR_NOMEM, "http: curl_easy_init failed");
    }
    int rc = easy_common(e, &h->conf, s->errbuf, err);
    if (rc == 0) {
        rc = guard_setup(e, &h->conf, &s->gc, err);
    }
    CURLcode cc = CURLE_OK;
    if (rc == 0) {
        cc = curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, h->conf.o.timeout_ms);
        /* API answers are small: compression costs nothing and saves bytes */
        if (cc == CURLE_OK) {
            cc = curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
        }
        if (cc == CURLE_OK) {
            cc = curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, slot_write);
        }
        if (cc == CURLE_OK) {
            cc = curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
        }
        if (cc == CURLE_OK) {
            cc = curl_easy_setopt(e, CURLOPT_PRIVATE, s);
        }
        if (cc == CURLE_OK && h->share) {
            cc = curl_easy_setopt(e, CURLOPT_SHARE, h->share);
        }
        if (cc != CURLE_OK) {
            rc = sl_error_set(err, SL_ERR, "[%s] http: cannot configure libcurl: %s",
                              h->conf.prefix, curl_easy_strerror(cc));
        }
    }
    if (rc != 0) {
        curl_easy_cleanup(e);
        return rc;
    }
    s->easy = e;
    return 0;
}

static void fill_resp(slot *s, xfer *x, long status, CURLcode rc, int gave_up, double retry_after,
                      sl_http_resp *r)
{
    memset(r, 0, sizeof(*r));
    r->status = status;
    r->attempts = x->attempts;
    r->gave_up = gave_up;
    r->retry_after_s = retry_after;
    r->elapsed_s = mono_now() - x->t_submit;
    r->content_type = "";
    r->body = "";
    if (status > 0) {
        r->body = sl_buf_cstr(&s->body);
        r->body_len = s->body.len;
        char *ct = NULL;
        if (curl_easy_getinfo(s->easy, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct) {
            r->content_type = ct;
        }
    } else {
        const char *msg = s->errbuf[0] ? s->errbuf : curl_easy_strerror(rc);
        snprintf(r->error, sizeof(r->error), "%s", msg);
        sl_redact(r->error, sizeof(r->error));
    }
}

static void complete(sl_http *h, slot *s, xfer *x, sl_http_resp *r)
{
    h->pending--;
    sl_http_req *req = x->req;
    sl_http_done_fn done = x->done;
    void *ud = x->ud;
    /* release the xfer first so the callback may resubmit (even the same
     * req); the slot and its body stay ours until the callback returned */
    xfer_release(h, x);
    done(ud, req, r);
    if (s) {
        slot_release(h, s);
    }
}

/* Complete an xfer that never got an answer: starting it failed, or it was
 * cancelled before it was sent. */
static void complete_unsent(sl_http *h, xfer *x, const char *msg, int cancelled)
{
    sl_http_resp r;
    memset(&r, 0, sizeof(r));
    r.body = "";
    r.content_type = "";
    r.retry_after_s = -1;
    r.attempts = x->attempts;
    r.elapsed_s = mono_now() - x->t_submit;
    r.cancelled = cancelled;
    snprintf(r.error, sizeof(r.error), "%s", msg);
    if (!cancelled) {
        h->stats.client_errors++;
    }
    complete(h, NULL, x, &r);
}

static void fail_local(sl_http *h, xfer *x, const char *msg)
{
    complete_unsent(h, x, msg, 0);
}

static void attempt_done(sl_http *h, slot *s, CURLcode rc)
{
    const sl_http_opts *o = &h->conf.o;
    xfer *x = s->x;
    CURL *e = s->easy; /* already out of the multi handle (drain_done) */

    long status = 0;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    }
    /* a cut-off answer is not an answer: report it as a transport error; a
     * refused address stays refused, so it is not retried */
    int refused = guard_refused(&s->gc, rc);
    if (refused) {
        snprintf(s->errbuf, sizeof(s->errbuf), "%s", s->gc.why);
    }
    sl_http_class cls = rc != CURLE_OK
                            ? (refused || curl_permanent(rc) ? SL_HTTP_CLIENT : SL_HTTP_RETRY)
                            : sl_http_classify(status);
    int64_t retry_after_ms = status > 0 ? easy_retry_after_ms(e) : -1;
    double retry_after = retry_after_ms >= 0 ? (double)retry_after_ms / 1000.0 : -1;
    char u[URL_LOG_MAX];
    char what[CURL_ERROR_SIZE + 32];
    if (cls != SL_HTTP_OK) {
        sl_url_redact(sl_buf_cstr(&x->req->url), u, sizeof(u), 0);
        if (status > 0) {
            snprintf(what, sizeof(what), "%ld", status);
        } else {
            snprintf(what, sizeof(what), "%s", s->errbuf[0] ? s->errbuf : curl_easy_strerror(rc));
        }
    }

    sl_retry_policy rp;
    conf_policy(&h->conf, &rp);
    if (cls == SL_HTTP_RETRY && sl_retry_more(&rp, x->attempts)) {
        double wait = (double)sl_retry_delay_ms(&rp, x->attempts, retry_after_ms, &h->rng) / 1000.0;
        char ws[32];
        fmt_wait(ws, sizeof(ws), wait);
        sl_warn(h->conf.prefix, "%s %s: %s, retry %d/%d in %s", x->req->method, u, what,
                x->attempts + 1, o->max_attempts, ws);
        h->stats.retries++;
        x->not_before = mono_now() + wait;
        slot_release(h, s);
        if (heap_push(h, x) != 0) {
            /* cannot schedule the retry: give the caller the failure now */
            fail_local(h, x, "out of memory scheduling a retry");
        }
        return;
    }

    int gave_up = cls == SL_HTTP_RETRY;
    if (cls == SL_HTTP_OK) {
        h->stats.ok++;
    } else if (gave_up) {
        h->stats.gave_up++;
        if (x->attempts > 1) {
            sl_warn(h->conf.prefix, "%s %s: %s, giving up after %d attempts", x->req->method, u,
                    what, x->attempts);
        }
    } else {
        h->stats.client_errors++;
        if (status == 0) {
            sl_warn(h->conf.prefix, "%s %s: %s (not retried)", x->req->method, u, what);
        }
    }
    sl_http_resp r;
    fill_resp(s, x, status, rc, gave_up, retry_after, &r);
    complete(h, s, x, &r);
}

static int attempt_start(sl_http *h, slot *s, xfer *x)
{
    CURL *e = s->easy;
    sl_http_req *r = x->req;
    const char *m = r->method;
    const char *body = r->body.data ? r->body.data : "";
    int head = strcmp(m, "HEAD") == 0;
    int has_body = !head && (r->body.len > 0 || strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 ||
                             strcmp(m, "PATCH") == 0);
    CURLcode cc = curl_easy_setopt(e, CURLOPT_URL, sl_buf_cstr(&r->url));
    if (cc == CURLE_OK) {
        cc = curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
    }
    if (cc == CURLE_OK) {
        if (head) {
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
            curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
            cc = curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        } else if (has_body) {
            curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body.len);
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
            cc = curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, strcmp(m, "POST") ? m : NULL);
        } else {
            curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
            curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
            cc = curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, strcmp(m, "GET") ? m : NULL);
        }
    }
    if (cc != CURLE_OK) {
        return SL_ERR;
    }
    sl_buf_reset(&s->body);
    s->errbuf[0] = '\0';
    s->gc.active = h->conf.o.guard != NULL;
    s->gc.tgt = x->tgt;
    s->gc.why[0] = '\0';
    s->x = x;
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        s->x = NULL;
        return SL_ERR;
    }
    x->attempts++;
    h->stats.attempts++;
    h->running++;
    if (h->running > h->peak) {
        h->peak = h->running;
    }
    return 0;
}

static void promote_due(sl_http *h, double now)
{
    /* due retries go to the front: they are the oldest work and the engine's
     * checkpoint waits for them */
    xfer *due[64];
    size_t n = 0;
    while (h->heap_len && h->heap[0]->not_before <= now && n < 64) {
        due[n++] = heap_pop(h);
    }
    while (n > 0) {
        ready_push_front(h, due[--n]);
    }
}

static int start_ready(sl_http *h)
{
    int started = 0;
    while (h->ready_head && h->free_slots && h->running < h->conf.o.concurrency &&
           !h->cancel_why[0]) {
        if (!take_token(h)) {
            break;
        }
        xfer *x = ready_pop(h);
        slot *s = h->free_slots;
        h->free_slots = s->next_free;
        s->next_free = NULL;
        sl_error e;
        sl_error_clear(&e);
        if (slot_easy(h, s, &e) != 0 || attempt_start(h, s, x) != 0) {
            s->next_free = h->free_slots;
            h->free_slots = s;
            fail_local(h, x, e.msg[0] ? e.msg : "cannot start the transfer (libcurl refused it)");
        } else {
            started++;
        }
    }
    return started;
}

/* Take the finished transfers out of the multi handle (their connections go
 * back to its cache) and chain their slots at *tail. Returns how many. */
static int take_finished(sl_http *h, slot ***tail)
{
    int n = 0;
    int left = 0;
    CURLMsg *m;
    while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE) {
            continue;
        }
        CURL *e = m->easy_handle;
        slot *s = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&s);
        if (s && s->x) {
            curl_multi_remove_handle(h->multi, e);
            h->running--;
            s->rc = m->data.result;
            s->next_free = NULL; /* answered: chained until its callback ran */
            **tail = s;
            *tail = &s->next_free;
            n++;
        }
    }
    return n;
}

/* Start what waits on the freed connections and put it on the wire. */
static void send_ready(sl_http *h)
{
    if (start_ready(h) > 0) {
        int still = 0;
        curl_multi_perform(h->multi, &still);
    }
}

/* Finished transfers: out of the multi handle, the waiting requests started
 * on the freed connections and sent, and only then the callbacks, so no
 * connection waits while the caller digests the answers. The answered slots
 * stay ours until their callback returned, which is why there are twice
 * `concurrency` slots. (Looking for more answers between two callbacks was
 * tried: no measurable gain with 20 connections, and a poll of every
 * connection per callback.) */
static int drain_done(sl_http *h)
{
    slot *head = NULL, **tail = &head;
    int n = take_finished(h, &tail);
    if (n > 0) {
        send_ready(h);
    }
    while (head) {
        slot *s = head;
        head = s->next_free;
        attempt_done(h, s, s->rc);
    }
    return n;
}

sl_http *sl_http_new(const sl_http_opts *opts, sl_error *err)
{
    if (http_global_init(err) != 0) {
        return NULL;
    }
    sl_http *h = calloc(1, sizeof(*h));
    if (!h) {
        sl_error_set(err, SL_ERR_NOMEM, "http: out of memory");
        return NULL;
    }
    if (conf_init(&h->conf, opts, err) != 0) {
        goto fail;
    }
    const sl_http_opts *o = &h->conf.o;
    h->multi = curl_multi_init();
    if (!h->multi) {
        sl_error_set(err, SL_ERR_NOMEM, "http: curl_multi_init failed");
        goto fail;
    }
    curl_multi_setopt(h->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)o->concurrency);
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)o->concurrency);
    /* TLS session resumption across the client's connections; single-threaded
     * use, so no lock callbacks are needed */
    h->share = curl_share_init();
    if (h->share) {
        curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    }
    h->nslots = 2 * o->concurrency;
    h->slots = calloc((size_t)h->nslots, sizeof(*h->slots));
    if (!h->slots) {
        sl_error_set(err, SL_ERR_NOMEM, "http: out of memory");
        goto fail;
    }
    for (int i = h->nslots - 1; i >= 0; i--) {
        slot *s = &h->slots[i];
        sl_buf_init(&s->body, o->max_response);
        s->next_free = h->free_slots;
        h->free_slots = s;
    }
    if (rate_init(h, err) != 0) {
        goto fail;
    }
    h->rng = sl_retry_seed(h);
    return h;
fail:
    sl_http_free(h);
    return NULL;
}

static void xfer_list_free(xfer *x)
{
    while (x) {
        xfer *n = x->next;
        curl_slist_free_all(x->hdrs);
        free(x);
        x = n;
    }
}

void sl_http_free(sl_http *h)
{
    if (!h) {
        return;
    }
    /* requests still pending are abandoned: their callbacks never run */
    if (h->slots) {
        for (int i = 0; i < h->nslots; i++) {
            slot *s = &h->slots[i];
            if (s->x) {
                curl_multi_remove_handle(h->multi, s->easy);
                s->x->next = NULL;
                xfer_list_free(s->x);
                s->x = NULL;
            }
            if (s->easy) {
                curl_easy_cleanup(s->easy);
            }
            sl_buf_free(&s->body);
        }
    }
    for (size_t i = 0; i < h->heap_len; i++) {
        h->heap[i]->next = NULL;
        xfer_list_free(h->heap[i]);
    }
    xfer_list_free(h->ready_head);
    xfer_list_free(h->free_xfers);
    if (h->multi) {
        curl_multi_cleanup(h->multi);
    }
    if (h->share) {
        curl_share_cleanup(h->share);
    }
    free(h->heap);
    free(h->win);
    free(h->slots);
    conf_free(&h->conf);
    free(h);
}

int sl_http_submit(sl_http *h, sl_http_req *req, sl_http_done_fn done, void *ud, sl_error *err)
{
    return sl_http_submit_after(h, req, 0, done, ud, err);
}

int sl_http_submit_after(sl_http *h, sl_http_req *req, int64_t delay_ms, sl_http_done_fn done,
                         void *ud, sl_error *err)
{
    if (!h || !req || !done) {
        return sl_error_set(err, SL_ERR_USAGE, "http: submit needs a client, request and callback");
    }
    const char *url = sl_buf_cstr(&req->url);
    char u[URL_LOG_MAX];
    if (!method_ok(req->method)) {
        sl_url_redact(url, u, sizeof(u), 0);
        return sl_error_set(err, SL_ERR_USAGE,
                            "[%s] http: request to %s has an invalid method (expected e.g. GET, "
                            "POST, PUT)",
                            h->conf.prefix, u);
    }
    sl_guard_target tgt;
    memset(&tgt, 0, sizeof(tgt));
    if (h->conf.o.guard && sl_guard_check_url(h->conf.o.guard, url, &tgt, err) != 0) {
        return err ? err->code : SL_ERR_INPUT;
    }
    if (!url_scheme_ok(url)) {
        sl_url_redact(url, u, sizeof(u), 0);
        return sl_error_set(err, SL_ERR_INPUT,
                            "[%s] http: %s %s: only http:// and https:// URLs are allowed",
                            h->conf.prefix, req->method, u);
    }
    xfer *x = h->free_xfers;
    if (x) {
        h->free_xfers = x->next;
    } else {
        x = malloc(sizeof(*x));
        if (!x) {
            return sl_error_set(err, SL_ERR_NOMEM, "http: out of memory");
        }
    }
    memset(x, 0, sizeof(*x));
    int has_body = req->body.len > 0 || strcmp(req->method, "POST") == 0 ||
                   strcmp(req->method, "PUT") == 0 || strcmp(req->method, "PATCH") == 0;
    if (headers_to_slist(sl_buf_cstr(&req->headers), req->headers.len, has_body, &x->hdrs, err) !=
        0) {
        sl_url_redact(url, u, sizeof(u), 0);
        sl_error_prefix(err, "[%s] %s %s", h->conf.prefix, req->method, u);
        x->next = h->free_xfers;
        h->free_xfers = x;
        return err ? err->code : SL_ERR;
    }
    x->req = req;
    x->tgt = tgt;
    x->done = done;
    x->ud = ud;
    x->t_submit = mono_now();
    if (delay_ms > 0) {
        x->not_before = x->t_submit + (double)delay_ms / 1000.0;
        if (heap_push(h, x) != 0) {
            curl_slist_free_all(x->hdrs);
            x->next = h->free_xfers;
            h->free_xfers = x;
            return sl_error_set(err, SL_ERR_NOMEM, "http: out of memory scheduling a request");
        }
    } else {
        ready_push_back(h, x);
    }
    h->pending++;
    h->stats.requests++;
    return 0;
}

/* Complete every request not on the wire (waiting to start or to retry) as
 * cancelled; the ones running finish normally. */
/* Returns how many it completed. */
static int deliver_cancelled(sl_http *h)
{
    if (!h->cancel_why[0]) {
        return 0;
    }
    char why[sizeof(h->cancel_why)];
    memcpy(why, h->cancel_why, sizeof(why));
    xfer *list = NULL, **tail = &list;
    while (h->ready_head) {
        xfer *x = ready_pop(h);
        x->next = NULL;
        *tail = x;
        tail = &x->next;
    }
    while (h->heap_len) {
        xfer *x = heap_pop(h);
        x->next = NULL;
        *tail = x;
        tail = &x->next;
    }
    /* what the callbacks submit from here on runs normally */
    h->cancel_why[0] = '\0';
    int n = 0;
    while (list) {
        xfer *x = list;
        list = x->next;
        complete_unsent(h, x, why, 1);
        n++;
    }
    return n;
}

void sl_http_cancel_waiting(sl_http *h, const char *why)
{
    if (!h) {
        return;
    }
    snprintf(h->cancel_why, sizeof(h->cancel_why), "%s",
             why && why[0] ? why : "cancelled before it was sent");
    if (!h->in_run) {
        h->in_run = 1;
        deliver_cancelled(h);
        h->in_run = 0;
    }
}

int sl_http_run(sl_http *h, int timeout_ms)
{
    if (!h) {
        return 0;
    }
    if (h->in_run) {
        /* called from a completion callback: not supported, do nothing */
        return (int)h->pending;
    }
    h->in_run = 1;
    double now = mono_now();
    double deadline = timeout_ms < 0 ? INFINITY : now + timeout_ms / 1000.0;
    for (;;) {
        promote_due(h, now);
        start_ready(h);
        int still = 0;
        curl_multi_perform(h->multi, &still);
        /* a callback may have cancelled what waits: those complete now */
        int finished = drain_done(h) + deliver_cancelled(h);
        now = mono_now();
        if (h->pending == 0 || now >= deadline) {
            break;
        }
        if (finished > 0) {
            /* return to the caller as soon as something completed: the
             * engine refills its window between calls, and waiting out the
             * timeout here would leave connections idle */
            start_ready(h);
            break;
        }
        double until = deadline;
        if (h->heap_len && h->heap[0]->not_before < until) {
            until = h->heap[0]->not_before;
        }
        if (h->ready_head && h->free_slots && h->win_n && h->rate_next < until) {
            until = h->rate_next;
        }
        double ms = ceil((until - now) * 1000.0);
        int wait_ms = ms < 0 ? 0 : ms > 60000 ? 60000 : (int)ms;
        if (wait_ms > 0 || h->running > 0) {
            curl_multi_poll(h->multi, NULL, 0, wait_ms, NULL);
        }
        now = mono_now();
    }
    h->in_run = 0;
    return (int)h->pending;
}

size_t sl_http_pending(const sl_http *h)
{
    return h ? h->pending : 0;
}

int sl_http_peak(const sl_http *h)
{
    return h ? h->peak : 0;
}

void sl_http_get_stats(const sl_http *h, sl_http_stats *s)
{
    if (!s) {
        return;
    }
    if (!h) {
        memset(s, 0, sizeof(*s));
        return;
    }
    *s = h->stats;
}

/* ------------------------------------------------------------------------ */
/* Synchronous wrapper                                                       */

typedef struct do_ctx {
    sl_http_resp *resp;
    sl_buf *store;
    int done;
    int store_rc;
} do_ctx;

static void do_done(void *ud, sl_http_req *req, const sl_http_resp *r)
{
    do_ctx *c = ud;
    (void)req;
    *c->resp = *r;
    sl_buf_reset(c->store);
    size_t ct_len = strlen(r->content_type);
    /* body NUL content_type NUL; pointers are set once the buffer stopped moving */
    int rc = sl_buf_reserve(c->store, r->body_len + ct_len + 2);
    if (rc == 0) {
        memcpy(c->store->data, r->body, r->body_len);
        c->store->data[r->body_len] = '\0';
        memcpy(c->store->data + r->body_len + 1, r->content_type, ct_len + 1);
        c->store->len = r->body_len + ct_len + 1;
        c->resp->body = c->store->data;
        c->resp->content_type = c->store->data + r->body_len + 1;
    } else {
        c->resp->body = "";
        c->resp->body_len = 0;
        c->resp->content_type = "";
    }
    c->store_rc = rc;
    c->done = 1;
}

int sl_http_do(const sl_http_opts *opts, sl_http_req *req, sl_http_resp *resp, sl_buf *store,
               sl_error *err)
{
    if (!req || !resp || !store) {
        return sl_error_set(err, SL_ERR_USAGE,
                            "http: sl_http_do needs a request, response and store");
    }
    memset(resp, 0, sizeof(*resp));
    resp->body = "";
    resp->content_type = "";
    resp->retry_after_s = -1;
    do_ctx c = {.resp = resp, .store = store};
    int rc = SL_ERR;
    sl_http *h = sl_http_new(opts, err);
    if (!h) {
        return err ? err->code : SL_ERR;
    }
    rc = sl_http_submit(h, req, do_done, &c, err);
    if (rc != 0) {
        goto done;
    }
    while (!c.done) {
        sl_http_run(h, -1);
    }
    char u[URL_LOG_MAX];
    sl_url_redact(sl_buf_cstr(&req->url), u, sizeof(u), 0);
    if (c.store_rc != 0) {
        rc =
            sl_error_set(err, c.store_rc,
                         "[%s] %s %s: HTTP %ld answer of %zu bytes does not fit the response store",
                         h->conf.prefix, req->method, u, resp->status, resp->body_len);
    } else if (resp->status == 0) {
        rc = sl_error_set(err, SL_ERR_IO, "[%s] %s %s: %s (after %d attempt%s)", h->conf.prefix,
                          req->method, u, resp->error, resp->attempts,
                          resp->attempts == 1 ? "" : "s");
    } else {
        rc = 0;
    }
done:
    sl_http_free(h);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Streaming GET                                                             */

struct sl_http_stream {
    http_conf conf;
    CURLM *multi;
    CURL *easy;
    struct curl_slist *hdrs;
    char *buf; /* unread bytes are buf[off, off + len) */
    size_t cap, off, len;
    int paused, done, hdr_done;
    long hdr_code;
    CURLcode result;
    long status;
    int64_t size;
    int ranged;
    uint64_t range_from, received;
    int too_big;    /* more than max_download arrived: the transfer was aborted */
    double last_rx; /* monotonic time of the last header or body byte */
    char etag[256]; /* validators of the final answer ("" when absent) */
    char last_modified[64];
    guard_conn gc;
    sl_guard_target tgt;
    char url_log[URL_LOG_MAX];
    char errbuf[CURL_ERROR_SIZE];
};

static size_t stream_write(char *p, size_t sz, size_t nm, void *ud)
{
    sl_http_stream *s = ud;
    size_t n = sz * nm;
    uint64_t max = s->conf.o.max_download;
    /* position in the whole resource: a 206 answer starts at range_from */
    uint64_t at = (s->hdr_code == 206 ? s->range_from : 0) + s->received;
    if (max && at + n > max) {
        s->too_big = 1;
        return 0; /* aborts the transfer (CURLE_WRITE_ERROR) */
    }
    if (s->off + s->len + n > s->cap) {
        if (s->off) {
            memmove(s->buf, s->buf + s->off, s->len);
            s->off = 0;
        }
        if (s->len + n > s->cap) {
            if (s->len > 0) {
                /* full: libcurl keeps this chunk and hands it over again
                 * after curl_easy_pause(CURLPAUSE_CONT) */
                s->paused = 1;
                return CURL_WRITEFUNC_PAUSE;
            }
            /* a single chunk larger than the buffer (not expected from
             * libcurl, which writes at most CURLOPT_BUFFERSIZE): grow, capped */
            if (n > STREAM_BUF_MAX) {
                return 0;
            }
            char *nb = realloc(s->buf, n);
            if (!nb) {
                return 0;
            }
            s->buf = nb;
            s->cap = n;
        }
    }
    memcpy(s->buf + s->off + s->len, p, n);
    s->last_rx = mono_now();
    s->hdr_done = 1;
    s->len += n;
    s->received += n;
    return n;
}

/* When line (a raw header line) is "name: value", copy the trimmed value into
 * out (cut to n - 1 bytes) and return 1. */
static int header_value(const char *line, size_t len, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0) {
        return 0;
    }
    const char *v = line + nl + 1;
    const char *e = line + len;
    while (v < e && (*v == ' ' || *v == '\t')) {
        v++;
    }
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t')) {
        e--;
    }
    size_t k = (size_t)(e - v) < n - 1 ? (size_t)(e - v) : n - 1;
    memcpy(out, v, k);
    out[k] = '\0';
    return 1;
}

static size_t stream_header(char *p, size_t sz, size_t nm, void *ud)
{
    sl_http_stream *s = ud;
    size_t n = sz * nm;
    s->last_rx = mono_now();
    /* CURLINFO_RESPONSE_CODE is not reliable before the header block ended,
     * so read the status from the status line: "HTTP/1.1 206 Partial Content" */
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        s->hdr_done = 0;
        s->hdr_code = 0;
        const char *sp = memchr(p, ' ', n);
        for (sp = sp ? sp + 1 : NULL; sp && sp < p + n && *sp >= '0' && *sp <= '9'; sp++) {
            s->hdr_code = s->hdr_code * 10 + (*sp - '0');
        }
        s->etag[0] = s->last_modified[0] = '\0';
    } else if (header_value(p, n, "etag", s->etag, sizeof(s->etag)) ||
               header_value(p, n, "last-modified", s->last_modified, sizeof(s->last_modified))) {
        /* kept */
    } else if ((n == 2 && p[0] == '\r' && p[1] == '\n') || (n == 1 && p[0] == '\n')) {
        /* 1xx interim answers are followed by the real one */
        if (s->hdr_code >= 200) {
            s->hdr_done = 1;
        }
    }
    return n;
}

/* One round of I/O: perform, collect completion, and when nothing arrived
 * wait for the socket. Called only while the caller waits for bytes, since
 * `waiting_since`. A download may take longer than any fixed limit, so the
 * limit is on silence: no byte for timeout_ms while we were waiting fails the
 * transfer. (libcurl's LOW_SPEED_* averages over several seconds, too coarse
 * for short limits.) A reader that is busy elsewhere never counts. */
static void stream_step(sl_http_stream *s, double waiting_since)
{
    int still = 0;
    curl_multi_perform(s->multi, &still);
    int left = 0;
    CURLMsg *m;
    while ((m = curl_multi_info_read(s->multi, &left)) != NULL) {
        if (m->msg == CURLMSG_DONE) {
            s->done = 1;
            s->result = m->data.result;
        }
    }
    /* sleep only when this round brought nothing: with bytes buffered the
     * caller has work, and a paused transfer's socket is not watched at all */
    if (!s->done && s->len == 0 && !s->paused) {
        double stall = (double)s->conf.o.timeout_ms / 1000.0;
        double from = s->last_rx > waiting_since ? s->last_rx : waiting_since;
        double remain = from + stall - mono_now();
        if (remain <= 0) {
            s->done = 1;
            s->result = CURLE_OPERATION_TIMEDOUT;
            snprintf(s->errbuf, sizeof(s->errbuf), "no data received for %.1fs", stall);
            return;
        }
        double ms = ceil(remain * 1000.0);
        curl_multi_poll(s->multi, NULL, 0, ms > 1000 ? 1000 : (int)ms, NULL);
    }
}

static int stream_attempt_setup(sl_http_stream *s, const char *url, sl_error *err)
{
    if (s->easy) {
        curl_multi_remove_handle(s->multi, s->easy);
        curl_easy_cleanup(s->easy);
        s->easy = NULL;
    }
    s->off = s->len = 0;
    s->paused = s->done = s->hdr_done = 0;
    s->hdr_code = 0;
    s->result = CURLE_OK;
    s->received = 0;
    s->too_big = 0;
    s->last_rx = 0;
    s->errbuf[0] = '\0';
    CURL *e = curl_easy_init();
    if (!e) {
        return sl_error_set(err, SL_ERR_NOMEM, "http: curl_easy_init failed");
    }
    s->easy = e;
    if (easy_common(e, &s->conf, s->errbuf, err) != 0 ||
        guard_setup(e, &s->conf, &s->gc, err) != 0) {
        return err ? err->code : SL_ERR;
    }
    s->gc.active = s->conf.o.guard != NULL;
    s->gc.tgt = s->tgt;
    CURLcode cc = curl_easy_setopt(e, CURLOPT_URL, url);
    if (cc == CURLE_OK) {
        cc = curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, stream_write);
    }
    if (cc == CURLE_OK) {
        cc = curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
    }
    if (cc == CURLE_OK) {
        cc = curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, stream_header);
    }
    if (cc == CURLE_OK) {
        cc = curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
    }
    if (cc == CURLE_OK && s->hdrs) {
        cc = curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->hdrs);
    }
    if (cc == CURLE_OK && s->range_from > 0) {
        char range[32];
        snprintf(range, sizeof(range), "%llu-", (unsigned long long)s->range_from);
        cc = curl_easy_setopt(e, CURLOPT_RANGE, range);
    }
    if (cc != CURLE_OK) {
        return sl_error_set(err, SL_ERR, "[%s] GET %s: cannot configure libcurl: %s",
                            s->conf.prefix, s->url_log, curl_easy_strerror(cc));
    }
    if (curl_multi_add_handle(s->multi, e) != CURLM_OK) {
        return sl_error_set(err, SL_ERR, "[%s] GET %s: libcurl refused the transfer",
                            s->conf.prefix, s->url_log);
    }
    return 0;
}

/* Total size from "Content-Range: bytes a-b/total"; -1 if unknown. */
static int64_t content_range_total(CURL *e)
{
    struct curl_header *hh = NULL;
    if (curl_easy_header(e, "Content-Range", 0, CURLH_HEADER, -1, &hh) != CURLHE_OK || !hh) {
        return -1;
    }
    const char *slash = strrchr(hh->value, '/');
    if (!slash || slash[1] < '0' || slash[1] > '9') {
        return -1;
    }
    char *end = NULL;
    errno = 0;
    long long v = strtoll(slash + 1, &end, 10);
    return errno || v < 0 ? -1 : (int64_t)v;
}

static void snippet(char *out, size_t cap, const char *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++) {
        unsigned char c = (unsigned char)p[i];
        out[k++] = (char)(c < 0x20 || c == 0x7f ? ' ' : c);
    }
    /* trim trailing blanks (a body usually ends with a newline) */
    while (k > 0 && out[k - 1] == ' ') {
        k--;
    }
    out[k] = '\0';
}

sl_http_stream *sl_http_stream_open(const char *url, const char *headers, const sl_http_opts *opts,
                                    uint64_t range_from, sl_error *err)
{
    if (!url) {
        sl_error_set(err, SL_ERR_USAGE, "http: stream open needs a URL");
        return NULL;
    }
    if (http_global_init(err) != 0) {
        return NULL;
    }
    sl_http_stream *s = calloc(1, sizeof(*s));
    if (!s) {
        sl_error_set(err, SL_ERR_NOMEM, "http: out of memory");
        return NULL;
    }
    if (conf_init(&s->conf, opts, err) != 0) {
        goto fail;
    }
    const sl_http_opts *o = &s->conf.o;
    sl_url_redact(url, s->url_log, sizeof(s->url_log), 0);
    s->range_from = range_from;
    s->size = -1;
    if (o->guard && sl_guard_check_url(o->guard, url, &s->tgt, err) != 0) {
        goto fail;
    }
    if (!url_scheme_ok(url)) {
        sl_error_set(err, SL_ERR_INPUT, "[%s] GET %s: only http:// and https:// URLs are allowed",
                     s->conf.prefix, s->url_log);
        goto fail;
    }
    if (headers && headers_to_slist(headers, strlen(headers), 0, &s->hdrs, err) != 0) {
        sl_error_prefix(err, "[%s] GET %s", s->conf.prefix, s->url_log);
        goto fail;
    }
    s->cap = STREAM_BUF;
    s->buf = malloc(s->cap);
    s->multi = curl_multi_init();
    if (!s->buf || !s->multi) {
        sl_error_set(err, SL_ERR_NOMEM, "http: out of memory");
        goto fail;
    }
    uint64_t rng = sl_retry_seed(s);
    sl_retry_policy rp;
    conf_policy(&s->conf, &rp);
    for (int attempt = 1;; attempt++) {
        if (stream_attempt_setup(s, url, err) != 0) {
            goto fail;
        }
        double since = mono_now();
        while (!s->done && !s->hdr_done && !s->paused) {
            stream_step(s, since);
        }
        /* once the header block arrived we have an answer, even if the
         * connection already failed: that error surfaces on read */
        long status = 0;
        sl_http_class cls;
        if (s->hdr_done) {
            status = s->hdr_code;
            cls = sl_http_classify(status);
        } else if (s->result != CURLE_OK) {
            cls = curl_permanent(s->result) ? SL_HTTP_CLIENT : SL_HTTP_RETRY;
        } else {
            /* finished without any header block (cannot happen with HTTP) */
            curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
            cls = sl_http_classify(status);
        }
        if (!s->hdr_done && s->result != CURLE_OK && guard_refused(&s->gc, s->result)) {
            sl_error_set(err, SL_ERR_INPUT, "download refused: %s: %s", s->url_log, s->gc.why);
            goto fail;
        }
        if (cls == SL_HTTP_OK) {
            s->status = status;
            s->ranged = status == 206;
            if (status == 206) {
                s->size = content_range_total(s->easy);
            } else {
                curl_off_t cl = -1;
                if (curl_easy_getinfo(s->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) ==
                        CURLE_OK &&
                    cl >= 0) {
                    s->size = (int64_t)cl;
                }
            }
            if (o->max_download && s->size >= 0 && (uint64_t)s->size > o->max_download) {
                sl_error_set(err, SL_ERR_LIMIT,
                             "download of %s exceeded max_download (%llu bytes): the server "
                             "announced %lld bytes",
                             s->url_log, (unsigned long long)o->max_download, (long long)s->size);
                goto fail;
            }
            return s;
        }
        char what[CURL_ERROR_SIZE + ERR_BODY_SNIPPET + 32];
        if (status > 0) {
            /* read the start of the error body for the message */
            while (!s->done && s->len < ERR_BODY_SNIPPET && !s->paused) {
                stream_step(s, since);
            }
            char body[ERR_BODY_SNIPPET + 1];
            snippet(body, sizeof(body), s->buf + s->off,
                    s->len < ERR_BODY_SNIPPET ? s->len : ERR_BODY_SNIPPET);
            snprintf(what, sizeof(what), "HTTP %ld (%s)", status, body);
        } else {
            snprintf(what, sizeof(what), "%s",
                     s->errbuf[0] ? s->errbuf : curl_easy_strerror(s->result));
        }
        if (cls == SL_HTTP_RETRY && sl_retry_more(&rp, attempt)) {
            int64_t ra = status > 0 ? easy_retry_after_ms(s->easy) : -1;
            int64_t wait_ms = sl_retry_delay_ms(&rp, attempt, ra, &rng);
            char ws[32];
            fmt_wait(ws, sizeof(ws), (double)wait_ms / 1000.0);
            char code[32];
            snprintf(code, sizeof(code), "%ld", status);
            sl_warn(s->conf.prefix, "GET %s: %s, retry %d/%d in %s", s->url_log,
                    status > 0 ? code : what, attempt + 1, o->max_attempts, ws);
            if (sl_retry_sleep_ms(wait_ms, o->stop)) {
                sl_error_set(err, SL_ERR_IO, "[%s] GET %s: %s (stopped while waiting to retry)",
                             s->conf.prefix, s->url_log, what);
                goto fail;
            }
            continue;
        }
        if (cls == SL_HTTP_RETRY && attempt > 1) {
            sl_error_set(err, SL_ERR_IO, "[%s] GET %s: %s (after %d attempts)", s->conf.prefix,
                         s->url_log, what, attempt);
        } else {
            sl_error_set(err, status > 0 ? SL_ERR_INPUT : SL_ERR_IO, "[%s] GET %s: %s",
                         s->conf.prefix, s->url_log, what);
        }
        goto fail;
    }
fail:
    sl_http_stream_close(s);
    return NULL;
}

long sl_http_stream_read(sl_http_stream *s, void *buf, size_t n, sl_error *err)
{
    if (!s || !buf) {
        sl_error_set(err, SL_ERR_USAGE, "http: stream read needs a stream and a buffer");
        return -1;
    }
    if (n == 0) {
        return 0;
    }
    if (n > LONG_MAX) {
        n = LONG_MAX;
    }
    double since = mono_now();
    for (;;) {
        if (s->len > 0) {
            size_t take = n < s->len ? n : s->len;
            memcpy(buf, s->buf + s->off, take);
            s->off += take;
            s->len -= take;
            if (s->len == 0) {
                s->off = 0;
            }
            if (s->paused && s->cap - s->len >= s->cap / 2) {
                if (s->off) {
                    memmove(s->buf, s->buf + s->off, s->len);
                    s->off = 0;
                }
                /* may call stream_write right away, which may pause again */
                s->paused = 0;
                curl_easy_pause(s->easy, CURLPAUSE_CONT);
            }
            return (long)take;
        }
        if (s->paused) {
            s->paused = 0;
            curl_easy_pause(s->easy, CURLPAUSE_CONT);
            continue;
        }
        if (s->done) {
            if (s->result == CURLE_OK) {
                return 0;
            }
            if (s->too_big) {
                sl_error_set(err, SL_ERR_LIMIT, "download of %s exceeded max_download (%llu bytes)",
                             s->url_log, (unsigned long long)s->conf.o.max_download);
                return -1;
            }
            const char *why = s->errbuf[0] ? s->errbuf : curl_easy_strerror(s->result);
            /* position in the whole resource, so the caller can resume */
            unsigned long long at = (s->ranged ? s->range_from : 0) + s->received;
            char of[48] = "";
            if (s->size >= 0) {
                snprintf(of, sizeof(of), " of %lld", (long long)s->size);
            }
            sl_error_set(err, SL_ERR_IO, "[%s] GET %s: connection lost after %llu%s bytes (%s)",
                         s->conf.prefix, s->url_log, at, of, why);
            return -1;
        }
        stream_step(s, since);
    }
}

int64_t sl_http_stream_size(const sl_http_stream *s)
{
    return s ? s->size : -1;
}

const char *sl_http_stream_etag(const sl_http_stream *s)
{
    return s && s->etag[0] ? s->etag : NULL;
}

const char *sl_http_stream_last_modified(const sl_http_stream *s)
{
    return s && s->last_modified[0] ? s->last_modified : NULL;
}

int sl_http_stream_ranged(const sl_http_stream *s)
{
    return s ? s->ranged : 0;
}

void sl_http_stream_close(sl_http_stream *s)
{
    if (!s) {
        return;
    }
    if (s->easy) {
        if (s->multi) {
            curl_multi_remove_handle(s->multi, s->easy);
        }
        curl_easy_cleanup(s->easy);
    }
    if (s->multi) {
        curl_multi_cleanup(s->multi);
    }
    curl_slist_free_all(s->hdrs);
    free(s->buf);
    conf_free(&s->conf);
    free(s);
}
