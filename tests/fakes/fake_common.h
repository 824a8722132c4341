/* Helpers shared by the fake APIs in tests/fakes (header-only: every .c file in
 * this folder becomes its own executable, so shared code cannot live in a .c).
 *
 * Contract of a fake: binds 127.0.0.1 only, prints "<name> listening on
 * 127.0.0.1:PORT" once it accepts connections, writes PORT to --port-file
 * atomically (tmp + rename), stops cleanly on SIGTERM/SIGINT. */
#ifndef SLUICE_FAKE_COMMON_H
#define SLUICE_FAKE_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "sluice/buf.h"
#include "sluice/json.h"

/* Hard maximum of a request body we keep in memory (Braze's own limit). */
#define FK_BODY_MAX ((size_t)4 * 1024 * 1024)

/* Per-request state kept in MHD's con_cls from the first callback of a request
 * to its completion callback. */
struct fk_req {
    int route;      /* fake-specific route id, decided on the first callback */
    int counted;    /* 1 when the request counts in the in-flight gauge */
    int too_big;    /* body exceeded FK_BODY_MAX; the rest was discarded */
    size_t seen;    /* bytes received (including discarded ones) */
    sl_buf body;    /* received body, max FK_BODY_MAX */
    double started; /* CLOCK_MONOTONIC seconds at the first callback, if timed */
};

static inline struct fk_req *fk_req_new(int route)
{
    struct fk_req *r = calloc(1, sizeof(*r));
    if (r) {
        r->route = route;
        sl_buf_init(&r->body, FK_BODY_MAX);
    }
    return r;
}

static inline void fk_req_free(struct fk_req *r)
{
    if (!r) {
        return;
    }
    sl_buf_free(&r->body);
    free(r);
}

/* Append an upload chunk; keep = 0 discards it (routes that ignore bodies).
 * Beyond FK_BODY_MAX the body is dropped and too_big set, so the request can
 * still be answered with 413 after MHD has read it. */
static inline void fk_req_take(struct fk_req *r, const char *data, size_t n, int keep)
{
    r->seen += n;
    if (!keep || r->too_big) {
        return;
    }
    if (sl_buf_append(&r->body, data, n) != 0) {
        r->too_big = 1;
        sl_buf_free(&r->body);
        sl_buf_init(&r->body, FK_BODY_MAX);
    }
}

static inline void fk_die_usage(const char *prog, const char *usage, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: %s %s\n", prog, usage);
    exit(2);
}

/* Parse a whole decimal integer in [lo, hi]; -1 when it is not one. */
static inline int fk_parse_long(const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        return -1;
    }
    *out = v;
    return 0;
}

static inline void fk_sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* --faults a,b,c: each name's index in names[] into out (at most max),
 * in order; exits with a usage error on an unknown name, too many or none.
 * Returns how many. */
static inline size_t fk_parse_faults(const char *prog, const char *usage, const char *list,
                                     const char *const *names, size_t nnames, int *out, size_t max)
{
    char buf[256];
    if (strlen(list) >= sizeof(buf)) {
        fk_die_usage(prog, usage, "--faults list too long: %s", list);
    }
    strcpy(buf, list);
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        size_t k = 0;
        while (k < nnames && strcmp(t, names[k]) != 0) {
            k++;
        }
        if (k == nnames) {
            char known[200] = "";
            for (size_t i = 0; i < nnames; i++) {
                snprintf(known + strlen(known), sizeof(known) - strlen(known), "%s%s",
                         i ? (i + 1 == nnames ? " or " : ", ") : "", names[i]);
            }
            fk_die_usage(prog, usage, "--faults: unknown kind '%s' (expected %s)", t, known);
        }
        if (n == max) {
            fk_die_usage(prog, usage, "--faults: at most %zu kinds", max);
        }
        out[n++] = (int)k;
    }
    if (n == 0) {
        fk_die_usage(prog, usage, "--faults: empty list");
    }
    return n;
}

/* Write "PORT\n" to path via path.tmp.PID + rename, so a reader polling for
 * the file never sees it half written. 0 or -1 (message on stderr). */
static inline int fk_write_port_file(const char *prog, const char *path, unsigned port)
{
    char tmp[4096];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        fprintf(stderr, "%s: --port-file path too long: %s\n", prog, path);
        return -1;
    }
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "%s: cannot write port file %s: %s\n", prog, tmp, strerror(errno));
        return -1;
    }
    int bad = fprintf(f, "%u\n", port) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        fprintf(stderr, "%s: cannot write port file %s: %s\n", prog, path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Open the record file for appending (O_APPEND: one write() per request keeps
 * each request's lines contiguous). -1 on error, message on stderr. */
static inline int fk_open_record(const char *prog, const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "%s: cannot open --record file %s: %s\n", prog, path, strerror(errno));
    }
    return fd;
}

static inline int fk_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Content-Type is application/json, optionally followed by parameters
 * ("application/json; charset=utf-8"). Case-insensitive like HTTP. */
static inline int fk_is_json_ctype(const char *ct)
{
    static const char want[] = "application/json";
    if (!ct) {
        return 0;
    }
    while (*ct == ' ' || *ct == '\t') {
        ct++;
    }
    if (strncasecmp(ct, want, sizeof(want) - 1) != 0) {
        return 0;
    }
    ct += sizeof(want) - 1;
    while (*ct == ' ' || *ct == '\t') {
        ct++;
    }
    return *ct == '\0' || *ct == ';';
}

/* --- Raw JSON scanning ---------------------------------------------------
 * These run only on text jansson has already accepted, so they only need to
 * find boundaries; they still bounds-check and return NULL on surprises so
 * callers can fall back to re-serialising with jansson. Working on the raw
 * bytes lets the fakes record values exactly as the client sent them (jansson
 * would rewrite 0.1 as 0.10000000000000001). */

static inline const char *fk_skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
        p++;
    }
    return p;
}

/* p at the opening quote; returns the byte after the closing quote. */
static inline const char *fk_skip_string(const char *p, const char *end)
{
    if (p >= end || *p != '"') {
        return NULL;
    }
    for (p++; p < end; p++) {
        if (*p == '\\') {
            p++;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

/* p at the first byte of a value; returns the byte after it. */
static inline const char *fk_skip_value(const char *p, const char *end)
{
    if (p >= end) {
        return NULL;
    }
    if (*p == '"') {
        return fk_skip_string(p, end);
    }
    if (*p == '{' || *p == '[') {
        size_t depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = fk_skip_string(p, end);
                if (!p) {
                    return NULL;
                }
                continue;
            }
            if (*p == '{' || *p == '[') {
                depth++;
            } else if (*p == '}' || *p == ']') {
                if (--depth == 0) {
                    return p + 1;
                }
            }
            p++;
        }
        return NULL;
    }
    while (p < end && !strchr(",]} \t\r\n", *p)) {
        p++;
    }
    return p;
}

/* Append the JSON text [p, end) to out with the whitespace outside strings
 * removed: one compact line, tokens byte-identical to the input. */
static inline int fk_append_compact(sl_buf *out, const char *p, const char *end)
{
    if (sl_buf_reserve(out, (size_t)(end - p)) != 0) {
        return -1;
    }
    char *o = out->data + out->len;
    int in_str = 0;
    for (; p < end; p++) {
        char c = *p;
        if (in_str) {
            *o++ = c;
            if (c == '\\' && p + 1 < end) {
                *o++ = *++p;
            } else if (c == '"') {
                in_str = 0;
            }
        } else if (c == '"') {
            in_str = 1;
            *o++ = c;
        } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            *o++ = c;
        }
    }
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
    return 0;
}

/* --- Responses ------------------------------------------------------------ */

static inline enum MHD_Result fk_respond(struct MHD_Connection *c, unsigned status,
                                         const char *ctype, const char *body, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    enum MHD_Result rc = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* Answer {"message":"<msg>"} with msg JSON-escaped (it may quote client input). */
static inline enum MHD_Result fk_respond_message(struct MHD_Connection *c, unsigned status,
                                                 const char *msg)
{
    sl_buf b;
    sl_buf_init(&b, 64 * 1024);
    enum MHD_Result rc = MHD_NO;
    if (sl_buf_puts(&b, "{\"message\":\"") != 0 || sl_json_escape(&b, msg, strlen(msg)) != 0 ||
        sl_buf_puts(&b, "\"}") != 0) {
        goto fail;
    }
    rc = fk_respond(c, status, "application/json", b.data, b.len);
fail:
    sl_buf_free(&b);
    return rc;
}

/* Status codes worth a key in /_stats even when zero; others appear once seen. */
static inline void fk_status_json(sl_buf *b, const unsigned long *status, size_t n,
                                  const unsigned *always, size_t n_always)
{
    int first = 1;
    sl_buf_putc(b, '{');
    for (size_t code = 100; code < n; code++) {
        int show = status[code] != 0;
        for (size_t i = 0; i < n_always && !show; i++) {
            show = always[i] == code;
        }
        if (show) {
            sl_buf_printf(b, "%s\"%zu\":%lu", first ? "" : ",", code, status[code]);
            first = 0;
        }
    }
    sl_buf_putc(b, '}');
}

/* Start an MHD daemon on 127.0.0.1:port with one thread per connection: a
 * handler may sleep (--latency-ms) without stalling other connections.
 * notify (may be NULL) is told when each TCP connection opens and closes. */
/* uri_log (may be NULL) sees each request's raw URI (before MHD decodes the
 * path and the query) and its return value becomes the request's initial
 * *con_cls: fake_s3 needs the bytes the client signed. */
typedef void *(*fk_uri_log_fn)(void *cls, const char *uri, struct MHD_Connection *c);

static inline struct MHD_Daemon *fk_start_uri(uint16_t port, MHD_AccessHandlerCallback handler,
                                              MHD_RequestCompletedCallback done,
                                              MHD_NotifyConnectionCallback notify,
                                              fk_uri_log_fn uri_log)
{
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, port, NULL,
        NULL, handler, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_NOTIFY_COMPLETED, done, NULL, MHD_OPTION_NOTIFY_CONNECTION, notify, NULL,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)2000, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)(1024 * 1024), MHD_OPTION_URI_LOG_CALLBACK, uri_log,
        NULL, MHD_OPTION_END);
}

static inline struct MHD_Daemon *fk_start(uint16_t port, MHD_AccessHandlerCallback handler,
                                          MHD_RequestCompletedCallback done,
                                          MHD_NotifyConnectionCallback notify)
{
    return fk_start_uri(port, handler, done, notify, NULL);
}

/* Block SIGTERM/SIGINT (before starting threads, so they inherit the mask) and
 * ignore SIGPIPE; fk_wait_signal() then returns the signal that arrived. */
static inline void fk_block_signals(sigset_t *set)
{
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    pthread_sigmask(SIG_BLOCK, set, NULL);
}

static inline int fk_wait_signal(const sigset_t *set)
{
    int sig = 0;
    while (sigwait(set, &sig) != 0) {
    }
    return sig;
}

/* The life of every fake's server: listen on 127.0.0.1:port (0 = any free
 * port), write the bound port to port_file (if given), announce it on
 * stdout, wait for SIGTERM/SIGINT, call on_stop (may be NULL), stop the
 * daemon, then print the final stats that stats_fn writes. notify (may be
 * NULL) sees every TCP connection open and close. Returns 0, or 1 when the
 * server could not start. */
static inline int fk_serve_uri(const char *prog, long port, const char *port_file,
                               MHD_AccessHandlerCallback handler, MHD_RequestCompletedCallback done,
                               MHD_NotifyConnectionCallback notify, fk_uri_log_fn uri_log,
                               void (*on_stop)(void), void (*stats_fn)(sl_buf *))
{
    sigset_t sigs;
    fk_block_signals(&sigs);
    struct MHD_Daemon *d = fk_start_uri((uint16_t)port, handler, done, notify, uri_log);
    if (!d) {
        fprintf(stderr, "%s: cannot listen on 127.0.0.1:%ld: %s\n", prog, port, strerror(errno));
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    unsigned bound = info ? info->port : (unsigned)port;
    if (bound == 0) {
        fprintf(stderr, "%s: cannot tell which port the daemon bound\n", prog);
        MHD_stop_daemon(d);
        return 1;
    }
    if (port_file && fk_write_port_file(prog, port_file, bound) != 0) {
        MHD_stop_daemon(d);
        return 1;
    }
    printf("%s listening on 127.0.0.1:%u\n", prog, bound);
    fflush(stdout);

    fk_wait_signal(&sigs);
    if (on_stop) {
        on_stop();
    }
    MHD_stop_daemon(d);
    sl_buf b;
    sl_buf_init(&b, 64 * 1024);
    stats_fn(&b);
    printf("%s\n", sl_buf_cstr(&b));
    fflush(stdout);
    sl_buf_free(&b);
    return 0;
}

static inline int fk_serve_notify(const char *prog, long port, const char *port_file,
                                  MHD_AccessHandlerCallback handler,
                                  MHD_RequestCompletedCallback done,
                                  MHD_NotifyConnectionCallback notify, void (*on_stop)(void),
                                  void (*stats_fn)(sl_buf *))
{
    return fk_serve_uri(prog, port, port_file, handler, done, notify, NULL, on_stop, stats_fn);
}

static inline int fk_serve(const char *prog, long port, const char *port_file,
                           MHD_AccessHandlerCallback handler, MHD_RequestCompletedCallback done,
                           void (*on_stop)(void), void (*stats_fn)(sl_buf *))
{
    return fk_serve_notify(prog, port, port_file, handler, done, NULL, on_stop, stats_fn);
}

#endif
