/* HTTP client on the libcurl multi interface, shared by sinks (via the
 * engine), paginated sources, downloads and notifications.
 *
 * One sl_http drives many concurrent requests from a single thread. It owns
 * retries: transport errors, 408, 429 and 5xx (including non-JSON bodies such
 * as an HTML 502) are retried by the shared policy (src/util/retry.h: capped
 * exponential backoff, full jitter, Retry-After honoured up to the cap), up to
 * max_attempts; every attempt first needs room in
 * the rate limit's window. The completion callback sees the final answer only. */
#ifndef SLUICE_HTTP_H
#define SLUICE_HTTP_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/buf.h"
#include "sluice/error.h"

typedef struct sl_http_opts {
    int concurrency; /* max simultaneous requests (connections); default 8 */
    /* Rate limit, a sliding window: at most rate_burst attempt starts (retries
     * included) in any window of rate_burst / rate_per_sec seconds, from the
     * first request on. "3000/3s" is rate_per_sec 1000, rate_burst 3000: never
     * more than 3,000 in any 3 s. rate_per_sec 0 = unlimited; rate_burst 0 =
     * max(1, rate_per_sec) (a per-second window). */
    double rate_per_sec;
    double rate_burst;
    long connect_timeout_ms; /* default 10000 */
    long timeout_ms;         /* whole request; default 120000 */
    int max_attempts;        /* default 8; 1 = no retry */
    long backoff_base_ms;    /* default 500 */
    long backoff_max_ms;     /* default 60000; also caps an honoured Retry-After */
    size_t max_response;     /* response bytes kept; default 1 MiB (rest discarded, not an error) */
    int insecure;            /* 1 = do not verify TLS (never default; explicit option only) */
    const char *ca_file;     /* optional CA bundle */
    const char *log_prefix;  /* e.g. "sink:braze:users" */
    /* Optional download guard (sluice/guard.h), borrowed: it must outlive the
     * clients and streams made with these options. When set, every URL must
     * pass sl_guard_check_url (refused at submit/open) and every connection
     * sl_guard_check_peer on the address actually connected to (refused,
     * never retried); proxies are not used. NULL = no restriction. */
    const struct sl_guard *guard;
    /* Streams only: the largest resource accepted, in bytes as transferred
     * (compressed). A larger Content-Length fails the open, more bytes fail
     * the read (SL_ERR_LIMIT); 0 = unlimited. */
    uint64_t max_download;
    /* Optional stop flag (set by a signal handler), borrowed. A stream open
     * waiting to retry gives up as soon as it is set (SL_ERR_IO). */
    const volatile sig_atomic_t *stop;
} sl_http_opts;

/* Fill opts with the defaults above. */
void sl_http_opts_default(sl_http_opts *o);

typedef struct sl_http_req {
    char method[8]; /* "GET", "POST", "PUT" ... */
    sl_buf url;
    sl_buf headers; /* "Name: value\n" lines */
    sl_buf body;
} sl_http_req;

void sl_http_req_init(sl_http_req *r);
void sl_http_req_free(sl_http_req *r);
/* Clear method/url/headers/body for reuse (keeps capacity). */
void sl_http_req_reset(sl_http_req *r);
int sl_http_req_header(sl_http_req *r, const char *name, const char *fmt, ...) SL_PRINTF(3, 4);

typedef enum sl_http_class {
    SL_HTTP_OK = 0, /* 2xx */
    SL_HTTP_RETRY,  /* transport error, 408, 429, 5xx */
    SL_HTTP_CLIENT, /* other 4xx (and 1xx/3xx left over): do not retry */
} sl_http_class;

sl_http_class sl_http_classify(long status);

typedef struct sl_http_resp {
    long status;      /* 0 when no HTTP answer (transport error) */
    const char *body; /* NUL-terminated, at most max_response bytes; never NULL */
    size_t body_len;
    const char *content_type; /* or "" */
    double retry_after_s;     /* < 0 when absent */
    int attempts;             /* attempts made */
    int gave_up;              /* 1 when the last answer was retryable but attempts ran out */
    double elapsed_s;         /* over all attempts */
    char error[256];          /* transport error text when status == 0 */
    int cancelled;            /* 1: never sent, sl_http_cancel_waiting() took it */
} sl_http_resp;

typedef struct sl_http sl_http;

/* Completion callback: called from sl_http_run(), once per submitted request.
 * resp and its strings are valid only during the call. */
typedef void (*sl_http_done_fn)(void *ud, sl_http_req *req, const sl_http_resp *resp);

sl_http *sl_http_new(const sl_http_opts *opts, sl_error *err);
void sl_http_free(sl_http *h);
/* Queue a request. req is borrowed until its callback has run. Never blocks;
 * requests beyond `concurrency` wait inside the client. */
int sl_http_submit(sl_http *h, sl_http_req *req, sl_http_done_fn done, void *ud, sl_error *err);
/* The same, started no earlier than delay_ms from now (a retry the caller
 * decided on, after the retry policy's wait). */
int sl_http_submit_after(sl_http *h, sl_http_req *req, int64_t delay_ms, sl_http_done_fn done,
                         void *ud, sl_error *err);
/* Drive transfers and timers for up to timeout_ms, invoking callbacks;
 * returns early once at least one request completed (so the caller can
 * queue more work).
 * Returns the number of requests not yet completed (running + waiting). */
int sl_http_run(sl_http *h, int timeout_ms);
/* Stop what has not gone out: every request waiting to start or to retry
 * completes with status 0, `cancelled` 1 and `why` as its error; those on
 * the wire finish normally. Safe from a callback (the cancelled ones then
 * complete before sl_http_run returns). Requests submitted afterwards run
 * normally. Submitting more than `concurrency` requests keeps the next ones
 * ready to start the moment a connection frees, before the answer that
 * freed it is handed to its callback; this is how a caller stops them, e.g.
 * after an answer that says no more should be sent. */
void sl_http_cancel_waiting(sl_http *h, const char *why);
/* Requests submitted and not yet completed. */
size_t sl_http_pending(const sl_http *h);
/* Peak number of simultaneously running transfers seen. */
int sl_http_peak(const sl_http *h);
/* Counters for metrics. */
typedef struct sl_http_stats {
    uint64_t requests, attempts, retries, ok, client_errors, gave_up;
} sl_http_stats;
void sl_http_get_stats(const sl_http *h, sl_http_stats *s);

/* Synchronous one-shot request with the same retry rules (notifications,
 * small API calls). resp strings stay valid until `store` is freed/reused. */
int sl_http_do(const sl_http_opts *opts, sl_http_req *req, sl_http_resp *resp, sl_buf *store,
               sl_error *err);

/* Streaming GET for large downloads (CSV over http(s)): data is pulled by the
 * caller, so memory stays bounded. Non-2xx answers fail the open with the
 * status and the start of the body. Transport errors mid-stream fail the read. */
typedef struct sl_http_stream sl_http_stream;
sl_http_stream *sl_http_stream_open(const char *url, const char *headers, const sl_http_opts *opts,
                                    uint64_t range_from, sl_error *err);
/* Returns bytes read (>0), 0 at end, -1 on error (err set). */
long sl_http_stream_read(sl_http_stream *s, void *buf, size_t n, sl_error *err);
/* Content-Length of the whole resource when known, else -1. */
int64_t sl_http_stream_size(const sl_http_stream *s);
/* The answer's ETag and Last-Modified values as sent (an ETag keeps its
 * quotes and any W/ prefix), or NULL when absent. Valid until close. */
const char *sl_http_stream_etag(const sl_http_stream *s);
const char *sl_http_stream_last_modified(const sl_http_stream *s);
/* 1 if the server honoured range_from with 206. */
int sl_http_stream_ranged(const sl_http_stream *s);
void sl_http_stream_close(sl_http_stream *s);

#endif
