/* fake_controlshift: ControlShift bulk-data exports for tests of `sluice serve`.
 * One binary, four modes (see tests/fakes/README.md):
 *   serve   - the S3 side: export files under GET /exports/NAME with Range,
 *             expired presigned URLs, truncated and slow downloads;
 *   send    - the ControlShift side: POSTs a signed bulk-data webhook;
 *   gen     - writes a ControlShift-like CSV export (optionally bzip2);
 *   receive - records whole requests (method, headers, body), so a test can
 *             check what `send` puts on the wire. */
#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>

#include <bzlib.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "fake_common.h"
#include "util/retry.h"

#define PROG "fake_controlshift"
#define USAGE                                                                                      \
    "serve --dir DIR [--port N] [--port-file FILE] [--record-requests FILE.jsonl]\n"               \
    "   or: " PROG " send --to URL --secret S --type TYPE --table NAME --url FILE_URL\n"           \
    "           [--jid J] [--compression bzip2|none] [--bad-signature | --no-signature]\n"         \
    "           [--raw-body FILE] [--redeliver N] [--retries N] [--timeout-s N]\n"                 \
    "           [--print-status]\n"                                                                \
    "   or: " PROG " gen --table NAME --rows N --out FILE [--cols C] [--bz2] [--seed S]\n"         \
    "           [--start-id K]\n"                                                                  \
    "   or: " PROG " receive [--port N] [--port-file FILE] [--record FILE.jsonl] [--status CODE]"

/* Body bytes between two pauses of ?slow_ms (and the reader's block size). */
#define CHUNK ((uint64_t)64 * 1024)
/* Files whose ?drop_times budget is tracked (a test touches a handful). */
#define MAX_DROP_KEYS 1024
/* Hard maxima: webhook bodies we send, answers we keep, a generated row. */
#define SEND_BODY_MAX ((size_t)64 * 1024 * 1024)
#define ANSWER_MAX ((size_t)1024 * 1024)
#define ROW_MAX ((size_t)16 * 1024 * 1024)

static atomic_int g_stopping;

/* ======================================================================
 * serve: the S3 bucket the presigned URLs point at
 * ====================================================================== */

enum route { R_EXPORT, R_STATS, R_RESET, R_NOTFOUND, R_ANY };

static struct {
    int dirfd;
    int record_fd; /* -1 when not recording */
    long status;   /* receive mode: the status every request gets */
} g_opt = {.dirfd = -1, .record_fd = -1, .status = 200};

static struct {
    pthread_mutex_t mu;
    unsigned long requests, downloads, completed, drops;
    unsigned long long bytes;
    unsigned long status[600];
    struct {
        char *name;
        long used;
    } dropped[MAX_DROP_KEYS];
    size_t n_dropped;
} g_st = {.mu = PTHREAD_MUTEX_INITIALIZER};

static pthread_mutex_t g_rec_mu = PTHREAD_MUTEX_INITIALIZER;

/* One response body being streamed from a file. */
struct dl {
    int fd;
    uint64_t start;     /* file offset of the first body byte */
    uint64_t len;       /* body length (the Content-Length) */
    long long drop_at;  /* close the connection at this body offset; -1: never */
    long slow_ms;       /* pause before every 64 KB boundary of the body */
    uint64_t paused_at; /* body offset of the last pause (one pause per boundary) */
    char name[256];     /* for log lines */
};

static void stat_add(unsigned long *field, unsigned long n)
{
    pthread_mutex_lock(&g_st.mu);
    *field += n;
    pthread_mutex_unlock(&g_st.mu);
}

/* Sleep in 10 ms slices so SIGTERM does not wait behind a slow download. */
static void nap_ms(long ms)
{
    while (ms > 0 && !atomic_load(&g_stopping)) {
        long step = ms < 10 ? ms : 10;
        fk_sleep_ms(step);
        ms -= step;
    }
}

static ssize_t dl_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct dl *d = cls;
    if (atomic_load(&g_stopping)) {
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    if (d->drop_at >= 0 && pos >= (uint64_t)d->drop_at) {
        fprintf(stderr, PROG ": drop_after: closing %s after %llu of %llu body bytes\n", d->name,
                (unsigned long long)pos, (unsigned long long)d->len);
        stat_add(&g_st.drops, 1);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    uint64_t want = d->len - pos;
    if (want > max) {
        want = max;
    }
    if (d->slow_ms > 0) {
        if (pos > 0 && pos % CHUNK == 0 && pos != d->paused_at) {
            nap_ms(d->slow_ms);
            d->paused_at = pos;
        }
        uint64_t to_boundary = CHUNK - pos % CHUNK;
        if (want > to_boundary) {
            want = to_boundary;
        }
    }
    if (d->drop_at >= 0 && want > (uint64_t)d->drop_at - pos) {
        want = (uint64_t)d->drop_at - pos;
    }
    ssize_t n;
    do {
        n = pread(d->fd, buf, (size_t)want, (off_t)(d->start + pos));
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        /* The file shrank or vanished under us: the client must see a short body. */
        fprintf(stderr, PROG ": reading %s at offset %llu failed: %s\n", d->name,
                (unsigned long long)(d->start + pos), n < 0 ? strerror(errno) : "end of file");
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    pthread_mutex_lock(&g_st.mu);
    g_st.bytes += (unsigned long long)n;
    if (pos + (uint64_t)n == d->len) {
        g_st.completed++;
    }
    pthread_mutex_unlock(&g_st.mu);
    return n;
}

static void dl_free(void *cls)
{
    struct dl *d = cls;
    if (d) {
        close(d->fd);
        free(d);
    }
}

static void count_status(unsigned status)
{
    pthread_mutex_lock(&g_st.mu);
    if (status < 600) {
        g_st.status[status]++;
    }
    pthread_mutex_unlock(&g_st.mu);
}

static enum MHD_Result add_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *value)
{
    sl_jw *w = cls;
    sl_jw_key(w, key, strlen(key));
    if (value) {
        sl_jw_str(w, value, strlen(value));
    } else {
        sl_jw_null(w);
    }
    return MHD_YES;
}

/* One line per answered request in --record-requests, written before the
 * answer is queued: {"method","path","args":{decoded query},"range","status"}.
 * The query is recorded so tests can assert the presigned credentials did
 * reach the server (and were then kept out of sluice's own logs). */
static void record_request(struct MHD_Connection *c, const char *method, const char *url,
                           unsigned status)
{
    count_status(status);
    if (g_opt.record_fd < 0) {
        return;
    }
    sl_buf b;
    sl_buf_init(&b, 1024 * 1024);
    sl_jw w;
    sl_jw_init(&w, &b);
    const char *range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range");
    sl_jw_obj_open(&w);
    sl_jw_keyz(&w, "method");
    sl_jw_str(&w, method, strlen(method));
    sl_jw_keyz(&w, "path");
    sl_jw_str(&w, url, strlen(url));
    sl_jw_keyz(&w, "args");
    sl_jw_obj_open(&w);
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, add_arg, &w);
    sl_jw_obj_close(&w);
    sl_jw_keyz(&w, "range");
    if (range) {
        sl_jw_str(&w, range, strlen(range));
    } else {
        sl_jw_null(&w);
    }
    sl_jw_keyz(&w, "status");
    sl_jw_int(&w, status);
    sl_jw_obj_close(&w);
    if (w.err || sl_buf_putc(&b, '\n') != 0) {
        fprintf(stderr, PROG ": request record too large for %s, not recorded\n", url);
    } else {
        pthread_mutex_lock(&g_rec_mu);
        int bad = fk_write_all(g_opt.record_fd, b.data, b.len);
        pthread_mutex_unlock(&g_rec_mu);
        if (bad) {
            fprintf(stderr, PROG ": writing --record-requests failed: %s\n", strerror(errno));
        }
    }
    sl_buf_free(&b);
}

static void iso8601(char *out, size_t n, time_t t)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* An S3-style XML error: <Error><Code/><Message/>[extra]<RequestId/></Error>.
 * extra is trusted XML; resource (may be NULL) is escaped into <Key>. */
static enum MHD_Result s3_error(struct MHD_Connection *c, const char *method, const char *url,
                                unsigned status, const char *code, const char *message,
                                const char *extra, const char *content_range)
{
    static atomic_ulong request_id;
    sl_buf b;
    sl_buf_init(&b, 64 * 1024);
    enum MHD_Result rc = MHD_NO;
    sl_buf_puts(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>");
    sl_buf_puts(&b, code);
    sl_buf_puts(&b, "</Code><Message>");
    sl_buf_put_xml(&b, message);
    sl_buf_puts(&b, "</Message>");
    sl_buf_puts(&b, extra ? extra : "");
    sl_buf_printf(&b, "<RequestId>FAKE%012lX</RequestId><HostId>fake-controlshift</HostId></Error>",
                  atomic_fetch_add(&request_id, 1) + 1);
    fprintf(stderr, PROG ": %u %s %s: %s\n", status, method, url, message);
    record_request(c, method, url, status);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_COPY);
    if (!resp) {
        goto fail;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/xml");
    if (content_range) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_RANGE, content_range);
    }
    rc = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
fail:
    sl_buf_free(&b);
    return rc;
}

/* Export names are one path segment of plain characters: no '/', no "..",
 * no hidden files, so a URL can never reach outside --dir. */
static int valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 200 || name[0] == '.') {
        return 0;
    }
    for (const char *p = name; *p; p++) {
        if (!isalnum((unsigned char)*p) && !strchr("._-+=@,", *p)) {
            return 0;
        }
    }
    return 1;
}

/* RFC 9110 single byte range against a body of size bytes.
 * 1: satisfiable, [*first, *last] set; 0: absent or not understood (serve the
 * whole file, as a server may ignore Range); -1: unsatisfiable (416). Several
 * ranges are not understood: S3 does not serve multipart/byteranges either. */
static int parse_range(const char *h, uint64_t size, uint64_t *first, uint64_t *last)
{
    if (!h) {
        return 0;
    }
    while (*h == ' ') {
        h++;
    }
    if (strncasecmp(h, "bytes=", 6) != 0 || strchr(h, ',')) {
        return 0;
    }
    h += 6;
    char *end = NULL;
    errno = 0;
    if (*h == '-') {
        if (!isdigit((unsigned char)h[1])) {
            return 0;
        }
        unsigned long long suffix = strtoull(h + 1, &end, 10);
        if (errno || *end != '\0') {
            return 0;
        }
        if (suffix == 0 || size == 0) {
            return -1;
        }
        *first = suffix >= size ? 0 : size - suffix;
        *last = size - 1;
        return 1;
    }
    if (!isdigit((unsigned char)*h)) {
        return 0;
    }
    unsigned long long a = strtoull(h, &end, 10);
    if (errno || *end != '-') {
        return 0;
    }
    const char *b = end + 1;
    unsigned long long z = UINT64_MAX;
    if (*b != '\0') {
        if (!isdigit((unsigned char)*b)) {
            return 0;
        }
        z = strtoull(b, &end, 10);
        if (errno || *end != '\0' || z < a) {
            return 0;
        }
    }
    if (a >= size) {
        return -1;
    }
    *first = a;
    *last = z >= size ? size - 1 : z;
    return 1;
}

/* ?NAME=integer in [lo, hi]: 0 absent, 1 present (*out set), -1 malformed. */
static int query_long(struct MHD_Connection *c, const char *name, long lo, long hi, long *out)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
    if (!v) {
        return 0;
    }
    return fk_parse_long(v, lo, hi, out) == 0 ? 1 : -1;
}

/* ?drop_times=K: only the first K requests of NAME that carry drop_after are
 * cut; returns 1 when this one is. Counted when the request arrives. */
static int drop_budget_take(const char *name, long times)
{
    int take = 0;
    pthread_mutex_lock(&g_st.mu);
    size_t i;
    for (i = 0; i < g_st.n_dropped; i++) {
        if (strcmp(g_st.dropped[i].name, name) == 0) {
            break;
        }
    }
    if (i == g_st.n_dropped && i < MAX_DROP_KEYS) {
        g_st.dropped[i].name = strdup(name);
        g_st.dropped[i].used = 0;
        if (g_st.dropped[i].name) {
            g_st.n_dropped++;
        }
    }
    if (i < g_st.n_dropped && g_st.dropped[i].used < times) {
        g_st.dropped[i].used++;
        take = 1;
    }
    pthread_mutex_unlock(&g_st.mu);
    return take;
}

static const char *content_type_of(const char *name)
{
    size_t n = strlen(name);
    if (n >= 4 && strcmp(name + n - 4, ".bz2") == 0) {
        return "application/x-bzip2";
    }
    if (n >= 4 && strcmp(name + n - 4, ".csv") == 0) {
        return "text/csv";
    }
    return "application/octet-stream";
}

static enum MHD_Result answer_export(struct MHD_Connection *c, const char *method, const char *url)
{
    const char *name = url + strlen("/exports/");
    struct dl *d = NULL;
    struct MHD_Response *resp = NULL;
    enum MHD_Result rc = MHD_NO;
    char extra[512], hdr[256];
    int is_head = strcmp(method, "HEAD") == 0;

    if (!is_head && strcmp(method, "GET") != 0) {
        snprintf(hdr, sizeof(hdr),
                 "The specified method is not allowed against this resource: "
                 "%.20s (use GET or HEAD)",
                 method);
        return s3_error(c, method, url, 405, "MethodNotAllowed", hdr, NULL, NULL);
    }
    const char *expired = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "expired");
    if (expired && strcmp(expired, "0") != 0) {
        /* What S3 says for a presigned URL past its X-Amz-Expires (6 h for ControlShift). */
        char exp[32], now[32];
        time_t t = time(NULL);
        iso8601(exp, sizeof(exp), t - 3600);
        iso8601(now, sizeof(now), t);
        snprintf(extra, sizeof(extra),
                 "<X-Amz-Expires>21600</X-Amz-Expires><Expires>%s</Expires>"
                 "<ServerTime>%s</ServerTime>",
                 exp, now);
        return s3_error(c, method, url, 403, "AccessDenied", "Request has expired", extra, NULL);
    }
    long drop_after = -1, slow_ms = 0, drop_times = -1;
    const char *bad_arg = NULL;
    if (query_long(c, "drop_after", 0, 1L << 50, &drop_after) < 0) {
        bad_arg = "drop_after must be an integer >= 0 (body bytes to send before closing)";
    } else if (query_long(c, "slow_ms", 0, 600000, &slow_ms) < 0) {
        bad_arg = "slow_ms must be an integer 0..600000 (pause between 64 KB chunks)";
    } else if (query_long(c, "drop_times", 1, 1000000000, &drop_times) < 0) {
        bad_arg = "drop_times must be an integer >= 1 (requests of this file to cut)";
    }
    if (bad_arg) {
        return s3_error(c, method, url, 400, "InvalidArgument", bad_arg, NULL, NULL);
    }

    int fd = -1;
    if (valid_name(name)) {
        fd = openat(g_opt.dirfd, name, O_RDONLY | O_CLOEXEC);
    }
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        sl_buf k;
        sl_buf_init(&k, 4096);
        sl_buf_puts(&k, "<Key>exports/");
        sl_buf_put_xml(&k, name);
        sl_buf_puts(&k, "</Key>");
        rc = s3_error(c, method, url, 404, "NoSuchKey", "The specified key does not exist.",
                      sl_buf_cstr(&k), NULL);
        sl_buf_free(&k);
        return rc;
    }
    uint64_t size = (uint64_t)st.st_size, first = 0, last = size ? size - 1 : 0;
    const char *range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range");
    int ranged = parse_range(range, size, &first, &last);
    if (ranged < 0) {
        close(fd);
        sl_buf x;
        sl_buf_init(&x, 64 * 1024);
        sl_buf_puts(&x, "<RangeRequested>");
        sl_buf_put_xml(&x, range);
        sl_buf_printf(&x, "</RangeRequested><ActualObjectSize>%llu</ActualObjectSize>",
                      (unsigned long long)size);
        snprintf(hdr, sizeof(hdr), "bytes */%llu", (unsigned long long)size);
        rc = s3_error(c, method, url, 416, "InvalidRange", "The requested range is not satisfiable",
                      sl_buf_cstr(&x), hdr);
        sl_buf_free(&x);
        return rc;
    }

    d = calloc(1, sizeof(*d));
    if (!d) {
        close(fd);
        return MHD_NO;
    }
    d->fd = fd;
    d->start = ranged ? first : 0;
    d->len = size == 0 ? 0 : (ranged ? last - first + 1 : size);
    d->drop_at = -1;
    d->slow_ms = slow_ms;
    snprintf(d->name, sizeof(d->name), "%s", name);
    if (!is_head && drop_after >= 0 && (drop_times < 0 || drop_budget_take(name, drop_times))) {
        d->drop_at = drop_after;
    }
    /* From here MHD owns d: dl_free runs when the response is destroyed. */
    resp = MHD_create_response_from_callback(d->len, (size_t)CHUNK, dl_read, d, dl_free);
    if (!resp) {
        dl_free(d);
        goto fail;
    }
    unsigned status = ranged ? 206 : 200;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type_of(name));
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
    snprintf(hdr, sizeof(hdr), "\"%llx-%llx\"", (unsigned long long)size,
             (unsigned long long)st.st_mtime);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, hdr);
    struct tm tm;
    gmtime_r(&st.st_mtime, &tm);
    strftime(hdr, sizeof(hdr), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_LAST_MODIFIED, hdr);
    if (ranged) {
        snprintf(hdr, sizeof(hdr), "bytes %llu-%llu/%llu", (unsigned long long)first,
                 (unsigned long long)last, (unsigned long long)size);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_RANGE, hdr);
    }
    if (!is_head) {
        stat_add(&g_st.downloads, 1);
    }
    record_request(c, method, url, status);
    rc = MHD_queue_response(c, status, resp);
fail:
    if (resp) {
        MHD_destroy_response(resp);
    }
    return rc;
}

static void serve_stats_json(sl_buf *b)
{
    static const unsigned always[] = {200, 206, 403, 404, 416};
    pthread_mutex_lock(&g_st.mu);
    sl_buf_printf(b,
                  "{\"requests\":%lu,\"downloads\":%lu,\"completed\":%lu,\"drops\":%lu,"
                  "\"bytes\":%llu,\"status\":",
                  g_st.requests, g_st.downloads, g_st.completed, g_st.drops, g_st.bytes);
    fk_status_json(b, g_st.status, 600, always, sizeof(always) / sizeof(always[0]));
    sl_buf_putc(b, '}');
    pthread_mutex_unlock(&g_st.mu);
}

static void receive_stats_json(sl_buf *b)
{
    static const unsigned always[] = {200};
    pthread_mutex_lock(&g_st.mu);
    sl_buf_printf(b, "{\"requests\":%lu,\"status\":", g_st.requests);
    fk_status_json(b, g_st.status, 600, always, sizeof(always) / sizeof(always[0]));
    sl_buf_putc(b, '}');
    pthread_mutex_unlock(&g_st.mu);
}

static void reset_stats(void)
{
    pthread_mutex_lock(&g_st.mu);
    g_st.requests = g_st.downloads = g_st.completed = g_st.drops = 0;
    g_st.bytes = 0;
    memset(g_st.status, 0, sizeof(g_st.status));
    for (size_t i = 0; i < g_st.n_dropped; i++) {
        free(g_st.dropped[i].name);
        g_st.dropped[i].name = NULL;
    }
    g_st.n_dropped = 0;
    pthread_mutex_unlock(&g_st.mu);
}

static enum MHD_Result answer_control(struct MHD_Connection *c, int route, int receive_mode)
{
    sl_buf b;
    sl_buf_init(&b, 64 * 1024);
    if (route == R_RESET) {
        reset_stats();
    }
    if (receive_mode) {
        receive_stats_json(&b);
    } else {
        serve_stats_json(&b);
    }
    enum MHD_Result rc = fk_respond(c, 200, "application/json", sl_buf_cstr(&b), b.len);
    sl_buf_free(&b);
    return rc;
}

static enum MHD_Result serve_request(void *cls, struct MHD_Connection *c, const char *url,
                                     const char *method, const char *version, const char *upload,
                                     size_t *upload_size, void **con_cls)
{
    struct fk_req *r = *con_cls;
    if (!r) {
        int route = R_NOTFOUND;
        if (strncmp(url, "/exports/", 9) == 0) {
            route = R_EXPORT;
        } else if (strcmp(url, "/_stats") == 0) {
            route = R_STATS;
        } else if (strcmp(url, "/_reset") == 0) {
            route = R_RESET;
        }
        r = fk_req_new(route);
        if (!r) {
            return MHD_NO;
        }
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size != 0) {
        fk_req_take(r, upload, *upload_size, 0);
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->route == R_STATS || r->route == R_RESET) {
        return answer_control(c, r->route, 0);
    }
    stat_add(&g_st.requests, 1);
    if (r->route == R_NOTFOUND) {
        return s3_error(c, method, url, 404, "NoSuchKey",
                        "The specified key does not exist (fake_controlshift serves "
                        "GET /exports/NAME)",
                        NULL, NULL);
    }
    return answer_export(c, method, url);
}

/* ======================================================================
 * receive: record whole requests
 * ====================================================================== */

static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    sl_jw *w = cls;
    char low[256];
    size_t n = strlen(key);
    if (n >= sizeof(low)) {
        n = sizeof(low) - 1;
    }
    for (size_t i = 0; i < n; i++) {
        low[i] = (char)tolower((unsigned char)key[i]);
    }
    sl_jw_key(w, low, n);
    sl_jw_str(w, value ? value : "", value ? strlen(value) : 0);
    return MHD_YES;
}

static enum MHD_Result receive_request(void *cls, struct MHD_Connection *c, const char *url,
                                       const char *method, const char *version, const char *upload,
                                       size_t *upload_size, void **con_cls)
{
    struct fk_req *r = *con_cls;
    if (!r) {
        int route = R_ANY;
        if (strcmp(url, "/_stats") == 0) {
            route = R_STATS;
        } else if (strcmp(url, "/_reset") == 0) {
            route = R_RESET;
        }
        r = fk_req_new(route);
        if (!r) {
            return MHD_NO;
        }
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size != 0) {
        fk_req_take(r, upload, *upload_size, r->route == R_ANY);
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->route == R_STATS || r->route == R_RESET) {
        return answer_control(c, r->route, 1);
    }
    stat_add(&g_st.requests, 1);
    if (r->too_big) {
        fprintf(stderr, PROG ": 413 %s %s: body is %zu bytes, the limit is %zu\n", method, url,
                r->seen, FK_BODY_MAX);
        count_status(413);
        return fk_respond(c, 413, "application/json", "{\"ok\":false}", 12);
    }
    if (g_opt.record_fd >= 0) {
        sl_buf b;
        sl_buf_init(&b, FK_BODY_MAX * 6 + 64 * 1024);
        sl_jw w;
        sl_jw_init(&w, &b);
        sl_jw_obj_open(&w);
        sl_jw_keyz(&w, "method");
        sl_jw_str(&w, method, strlen(method));
        sl_jw_keyz(&w, "path");
        sl_jw_str(&w, url, strlen(url));
        sl_jw_keyz(&w, "headers");
        sl_jw_obj_open(&w);
        MHD_get_connection_values(c, MHD_HEADER_KIND, add_header, &w);
        sl_jw_obj_close(&w);
        sl_jw_keyz(&w, "body_bytes");
        sl_jw_int(&w, (int64_t)r->body.len);
        sl_jw_keyz(&w, "body");
        sl_jw_str(&w, sl_buf_cstr(&r->body), r->body.len);
        sl_jw_obj_close(&w);
        if (w.err || sl_buf_putc(&b, '\n') != 0) {
            fprintf(stderr, PROG ": out of memory recording %s %s\n", method, url);
        } else {
            pthread_mutex_lock(&g_rec_mu);
            int bad = fk_write_all(g_opt.record_fd, b.data, b.len);
            pthread_mutex_unlock(&g_rec_mu);
            if (bad) {
                fprintf(stderr, PROG ": writing the --record file failed: %s\n", strerror(errno));
            }
        }
        sl_buf_free(&b);
    }
    count_status((unsigned)g_opt.status);
    return fk_respond(c, (unsigned)g_opt.status, "application/json", "{\"ok\":true}", 11);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    fk_req_free(*con_cls);
    *con_cls = NULL;
}

static void mark_stopping(void)
{
    atomic_store(&g_stopping, 1);
}

/* Shared life of the two server modes (fk_serve), then closing their files.
 * Returns the exit status. */
static int run_server(long port, const char *port_file, MHD_AccessHandlerCallback handler,
                      int receive_mode)
{
    int rc = fk_serve(PROG, port, port_file, handler, on_completed, mark_stopping,
                      receive_mode ? receive_stats_json : serve_stats_json);
    if (g_opt.record_fd >= 0 && close(g_opt.record_fd) != 0) {
        fprintf(stderr, PROG ": closing the record file failed: %s\n", strerror(errno));
        rc = 1;
    }
    if (g_opt.dirfd >= 0) {
        close(g_opt.dirfd);
    }
    reset_stats();
    return rc;
}

static int main_server(int argc, char **argv, int receive_mode)
{
    long port = 0;
    const char *port_file = NULL, *record = NULL, *dir = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("usage: %s %s\n", PROG, USAGE);
            return 0;
        }
        if (i + 1 >= argc) {
            fk_die_usage(PROG, USAGE, "%s: %s needs a value (or is unknown)", argv[1], a);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--port") == 0) {
            if (fk_parse_long(v, 0, 65535, &port) != 0) {
                fk_die_usage(PROG, USAGE, "--port: expected 0..65535, got '%s'", v);
            }
        } else if (strcmp(a, "--port-file") == 0) {
            port_file = v;
        } else if (!receive_mode && strcmp(a, "--dir") == 0) {
            dir = v;
        } else if (!receive_mode && strcmp(a, "--record-requests") == 0) {
            record = v;
        } else if (receive_mode && strcmp(a, "--record") == 0) {
            record = v;
        } else if (receive_mode && strcmp(a, "--status") == 0) {
            if (fk_parse_long(v, 100, 599, &g_opt.status) != 0) {
                fk_die_usage(PROG, USAGE, "--status: expected an HTTP status 100..599, got '%s'",
                             v);
            }
        } else {
            fk_die_usage(PROG, USAGE, "%s: unknown option %s", argv[1], a);
        }
    }
    if (!receive_mode) {
        if (!dir) {
            fk_die_usage(PROG, USAGE, "serve: --dir DIR (the folder of export files) is required");
        }
        g_opt.dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (g_opt.dirfd < 0) {
            fprintf(stderr, PROG ": --dir %s: cannot open the folder: %s\n", dir, strerror(errno));
            return 1;
        }
    }
    if (record) {
        g_opt.record_fd = fk_open_record(PROG, record);
        if (g_opt.record_fd < 0) {
            if (g_opt.dirfd >= 0) {
                close(g_opt.dirfd);
            }
            return 1;
        }
    }
    return run_server(port, port_file, receive_mode ? receive_request : serve_request,
                      receive_mode);
}

/* ======================================================================
 * send: a ControlShift bulk-data webhook
 * ====================================================================== */

static size_t keep_answer(char *p, size_t size, size_t n, void *cls)
{
    sl_buf *b = cls;
    size_t len = size * n;
    /* Beyond ANSWER_MAX the rest is dropped; the status is what tests assert. */
    if (b->len < b->max) {
        size_t room = b->max - b->len;
        sl_buf_append(b, p, len < room ? len : room);
    }
    return len;
}

static int read_file(const char *path, sl_buf *out)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, PROG ": --raw-body %s: cannot open: %s\n", path, strerror(errno));
        return -1;
    }
    char tmp[65536];
    size_t n;
    int rc = 0;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0) {
        if (sl_buf_append(out, tmp, n) != 0) {
            fprintf(stderr, PROG ": --raw-body %s: larger than %zu bytes\n", path, out->max);
            rc = -1;
            break;
        }
    }
    if (ferror(f)) {
        fprintf(stderr, PROG ": --raw-body %s: read error: %s\n", path, strerror(errno));
        rc = -1;
    }
    fclose(f);
    return rc;
}

/* S3 key of the export: "exports/" + the URL's last path segment. */
static void s3_key(sl_buf *key, const char *url, const char *table)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *path = strchr(p, '/');
    size_t end = path ? strcspn(path, "?#") : 0;
    const char *seg = NULL;
    size_t seg_len = 0;
    for (size_t i = 0; path && i < end; i++) {
        if (path[i] == '/') {
            seg = path + i + 1;
            seg_len = end - i - 1;
        }
    }
    sl_buf_puts(key, "exports/");
    if (seg && seg_len > 0) {
        sl_buf_append(key, seg, seg_len);
    } else {
        sl_buf_printf(key, "%s.csv", table);
    }
}

static int url_is_bz2(const char *url)
{
    size_t n = strcspn(url, "?#");
    return n >= 4 && strncmp(url + n - 4, ".bz2", 4) == 0;
}

static int main_send(int argc, char **argv)
{
    const char *to = NULL, *secret = NULL, *type = NULL, *table = NULL, *url = NULL;
    const char *jid = NULL, *compression = NULL, *raw_body = NULL;
    int bad_sig = 0, no_sig = 0, rc = 2, failures = 0;
    long redeliver = 1, timeout_s = 30, retries = 0;
    char jid_hex[25], sig_hdr[128];
    sl_buf body, answer, key;
    sl_buf_init(&body, SEND_BODY_MAX);
    sl_buf_init(&answer, ANSWER_MAX);
    sl_buf_init(&key, 64 * 1024);
    CURL *curl = NULL;
    struct curl_slist *hdrs = NULL;

    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--bad-signature") == 0) {
            bad_sig = 1;
            continue;
        }
        if (strcmp(a, "--no-signature") == 0) {
            no_sig = 1;
            continue;
        }
        if (strcmp(a, "--print-status") == 0) {
            continue; /* the status is always printed; accepted for scripts that ask */
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("usage: %s %s\n", PROG, USAGE);
            return 0;
        }
        if (i + 1 >= argc) {
            fk_die_usage(PROG, USAGE, "send: %s needs a value (or is unknown)", a);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--to") == 0) {
            to = v;
        } else if (strcmp(a, "--secret") == 0) {
            secret = v;
        } else if (strcmp(a, "--type") == 0) {
            type = v;
        } else if (strcmp(a, "--table") == 0) {
            table = v;
        } else if (strcmp(a, "--url") == 0) {
            url = v;
        } else if (strcmp(a, "--jid") == 0) {
            jid = v;
        } else if (strcmp(a, "--compression") == 0) {
            if (strcmp(v, "bzip2") != 0 && strcmp(v, "none") != 0) {
                fk_die_usage(PROG, USAGE, "--compression: expected bzip2 or none, got '%s'", v);
            }
            compression = v;
        } else if (strcmp(a, "--raw-body") == 0) {
            raw_body = v;
        } else if (strcmp(a, "--redeliver") == 0) {
            if (fk_parse_long(v, 1, 1000, &redeliver) != 0) {
                fk_die_usage(PROG, USAGE, "--redeliver: expected 1..1000 deliveries, got '%s'", v);
            }
        } else if (strcmp(a, "--retries") == 0) {
            if (fk_parse_long(v, 0, 20, &retries) != 0) {
                fk_die_usage(PROG, USAGE, "--retries: expected 0..20, got '%s'", v);
            }
        } else if (strcmp(a, "--timeout-s") == 0) {
            if (fk_parse_long(v, 1, 3600, &timeout_s) != 0) {
                fk_die_usage(PROG, USAGE, "--timeout-s: expected 1..3600, got '%s'", v);
            }
        } else {
            fk_die_usage(PROG, USAGE, "send: unknown option %s", a);
        }
    }
    if (!to) {
        fk_die_usage(PROG, USAGE, "send: --to URL (the webhook receiver) is required");
    }
    if (bad_sig && no_sig) {
        fk_die_usage(PROG, USAGE, "send: --bad-signature and --no-signature exclude each other");
    }
    if (!secret && !no_sig) {
        fk_die_usage(PROG, USAGE, "send: --secret is required (or --no-signature)");
    }
    if (!raw_body && (!type || !table || !url)) {
        fk_die_usage(PROG, USAGE, "send: --type, --table and --url are required (or --raw-body)");
    }

    if (raw_body) {
        if (read_file(raw_body, &body) != 0) {
            goto fail;
        }
    } else {
        if (!jid) {
            /* Sidekiq job ids, which ControlShift's jid is, are 12 random bytes in hex. */
            unsigned char rnd[12];
            if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
                fprintf(stderr, PROG ": send: no random bytes for a jid\n");
                goto fail;
            }
            for (size_t i = 0; i < sizeof(rnd); i++) {
                snprintf(jid_hex + 2 * i, 3, "%02x", rnd[i]);
            }
            jid = jid_hex;
        }
        if (!compression) {
            compression = url_is_bz2(url) ? "bzip2" : "none";
        }
        s3_key(&key, url, table);
        sl_jw w;
        sl_jw_init(&w, &body);
        sl_jw_obj_open(&w);
        sl_jw_keyz(&w, "type");
        sl_jw_str(&w, type, strlen(type));
        sl_jw_keyz(&w, "data");
        sl_jw_obj_open(&w);
        sl_jw_keyz(&w, "url");
        sl_jw_str(&w, url, strlen(url));
        sl_jw_keyz(&w, "table");
        sl_jw_str(&w, table, strlen(table));
        sl_jw_keyz(&w, "s3");
        sl_jw_obj_open(&w);
        sl_jw_keyz(&w, "bucket");
        sl_jw_str(&w, "fake-bucket", 11);
        sl_jw_keyz(&w, "key");
        sl_jw_str(&w, key.data, key.len);
        sl_jw_obj_close(&w);
        sl_jw_keyz(&w, "compression_format");
        sl_jw_str(&w, compression, strlen(compression));
        sl_jw_obj_close(&w);
        sl_jw_keyz(&w, "jid");
        sl_jw_str(&w, jid, strlen(jid));
        sl_jw_obj_close(&w);
        if (w.err) {
            fprintf(stderr, PROG ": send: webhook body larger than %zu bytes\n", SEND_BODY_MAX);
            goto fail;
        }
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(curl = curl_easy_init())) {
        fprintf(stderr, PROG ": send: cannot initialise libcurl\n");
        goto fail;
    }
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Expect:"); /* ControlShift does not wait for 100-continue */
    if (!no_sig) {
        /* --bad-signature keeps the format and signs with another secret, so
         * only the HMAC comparison can catch it. */
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned mac_len = 0;
        sl_buf k;
        sl_buf_init(&k, 64 * 1024);
        sl_buf_puts(&k, secret);
        if (bad_sig) {
            sl_buf_puts(&k, "-wrong");
        }
        int ok = HMAC(EVP_sha256(), k.data, (int)k.len, (const unsigned char *)sl_buf_cstr(&body),
                      body.len, mac, &mac_len) != NULL;
        sl_buf_free(&k);
        if (!ok) {
            fprintf(stderr, PROG ": send: HMAC-SHA256 failed\n");
            goto fail;
        }
        int n = snprintf(sig_hdr, sizeof(sig_hdr), "x-controlshift-webhook-signature: sha256:");
        for (unsigned i = 0; i < mac_len; i++) {
            n += snprintf(sig_hdr + n, sizeof(sig_hdr) - (size_t)n, "%02x", mac[i]);
        }
        hdrs = curl_slist_append(hdrs, sig_hdr);
    }
    if (!hdrs) {
        fprintf(stderr, PROG ": send: out of memory\n");
        goto fail;
    }
    curl_easy_setopt(curl, CURLOPT_URL, to);
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, sl_buf_cstr(&body));
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body.len);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "fake_controlshift (ControlShift bulk-data webhook)");
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, keep_answer);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer);

    /* ControlShift re-sends a delivery that got no answer, a 429 or a 5xx;
     * the waits follow sluice's own retry rule (short, for tests) */
    sl_retry_policy rp = {
        .max_attempts = (int)retries + 1, .base_ms = 200, .max_ms = 5000, .jitter = 1.0};
    uint64_t rng = sl_retry_seed(&rp);
    for (long i = 0; i < redeliver; i++) {
        for (int attempt = 1;; attempt++) {
            sl_buf_reset(&answer);
            CURLcode cc = curl_easy_perform(curl);
            long status = 0;
            if (cc == CURLE_OK) {
                curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
            }
            if (cc != CURLE_OK || status == 0) {
                printf("000\n");
                fprintf(stderr, PROG ": send: POST %s got no HTTP answer: %s\n", to,
                        curl_easy_strerror(cc));
            } else {
                printf("%ld\n", status);
                fprintf(stderr, "%s\n", sl_buf_cstr(&answer));
            }
            fflush(stdout);
            int again = status == 0 || status == 429 || status >= 500;
            if (!again || !sl_retry_more(&rp, attempt)) {
                failures += status == 0;
                break;
            }
            int64_t ra = -1;
            struct curl_header *hh = NULL;
            if (status > 0 &&
                curl_easy_header(curl, "Retry-After", 0, CURLH_HEADER, -1, &hh) == CURLHE_OK &&
                hh) {
                ra = sl_retry_after_ms(hh->value, time(NULL));
            }
            sl_retry_sleep_ms(sl_retry_delay_ms(&rp, attempt, ra, &rng), NULL);
        }
    }
    rc = failures ? 1 : 0;
fail:
    curl_slist_free_all(hdrs);
    if (curl) {
        curl_easy_cleanup(curl);
        curl_global_cleanup();
    }
    sl_buf_free(&body);
    sl_buf_free(&answer);
    sl_buf_free(&key);
    return rc;
}

/* ======================================================================
 * gen: a ControlShift-like CSV export
 * ====================================================================== */

/* Column names per table, loosely after ControlShift's bulk-data schema. */
static const struct {
    const char *table;
    const char *cols[24];
} k_tables[] = {
    {"petitions",
     {"created_at",
      "updated_at",
      "title",
      "slug",
      "who",
      "what",
      "why",
      "user_id",
      "admin_status",
      "launched",
      "campaigner_contactable",
      "goal",
      "locale",
      "external_id",
      "target_id",
      "category_names",
      "image_url",
      "delivery_details",
      "hidden",
      "organisation_id",
      "source",
      "redirect_to",
      NULL}},
    {"signatures",
     {"petition_id",
      "email",
      "first_name",
      "last_name",
      "created_at",
      "updated_at",
      "phone_number",
      "postcode",
      "join_organisation",
      "deleted_at",
      "confirmed_at",
      "member_id",
      "locale",
      "source",
      "user_ip",
      "additional_fields",
      "eu_data_processing_consent",
      "external_constituent_id",
      "utm_source",
      "utm_campaign",
      NULL}},
    {"members",
     {"email", "first_name", "last_name", "created_at", "updated_at", "phone_number", "postcode",
      "country", "locale", "external_id", "email_opt_in_type_id", "deleted_at", "source", NULL}},
    {"users",
     {"email", "first_name", "last_name", "created_at", "updated_at", "phone_number", "postcode",
      "country", "locale", "admin", "confirmed_at", "last_sign_in_at", "sign_in_count", "member_id",
      NULL}},
    {"events",
     {"title", "slug", "description", "start_at", "end_at", "created_at", "updated_at", "user_id",
      "location_id", "max_attendees_count", "attendees_count", "admin_status", "hidden", "ticketed",
      "locale", "external_id", "calendar_id", NULL}},
    {"attendees",
     {"event_id", "email", "first_name", "last_name", "created_at", "updated_at", "phone_number",
      "postcode", "member_id", "status", "join_organisation", "deleted_at", "additional_fields",
      "source", NULL}},
    {"comments",
     {"commentable_id", "commentable_type", "text", "created_at", "updated_at", "user_id",
      "approved", "flagged_at", "up_count", "member_id", NULL}},
    {"unsubscribes",
     {"email", "member_id", "created_at", "updated_at", "reason", "source", "petition_id", NULL}},
    {"blast_emails",
     {"subject", "body", "from_name", "from_address", "created_at", "updated_at", "sent_at",
      "petition_id", "recipient_count", "delivery_status", "user_id", NULL}},
    {"local_chapters",
     {"name", "slug", "description", "created_at", "updated_at", "location_id", "hidden",
      "member_count", "contact_email", "external_id", NULL}},
    {"local_chapter_members",
     {"local_chapter_id", "member_id", "created_at", "updated_at", "role", "approved", NULL}},
    {"locations",
     {"query", "latitude", "longitude", "street", "locality", "region", "postal_code", "country",
      "created_at", "updated_at", "venue", NULL}},
};

/* Filler for unknown tables and for --cols beyond a table's own list. */
static const char *const k_generic[] = {"created_at",
                                        "updated_at",
                                        "name",
                                        "title",
                                        "description",
                                        "email",
                                        "status",
                                        "external_id",
                                        "member_id",
                                        "count",
                                        "locale",
                                        "country",
                                        "postcode",
                                        "notes",
                                        "source",
                                        "deleted_at",
                                        "additional_fields",
                                        "latitude",
                                        "longitude",
                                        "phone_number",
                                        "slug",
                                        "hidden",
                                        NULL};

enum kind {
    K_ID,
    K_CREATED,
    K_UPDATED,
    K_TIME,
    K_TIME_OPT,
    K_REF,
    K_EXTID,
    K_EMAIL,
    K_FIRST,
    K_LAST,
    K_TEXT,
    K_TITLE,
    K_BOOL,
    K_POSTCODE,
    K_PHONE,
    K_LOCALE,
    K_COUNTRY,
    K_COORD,
    K_SLUG,
    K_ENUM,
    K_INT,
    K_JSON,
    K_IP,
    K_URL,
    K_LIST,
    K_PLACE,
    K_WORD
};

static int name_in(const char *name, const char *const *list)
{
    for (; *list; list++) {
        if (strcmp(name, *list) == 0) {
            return 1;
        }
    }
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static enum kind kind_of(const char *name)
{
    static const char *const texts[] = {
        "what",   "why",   "text",  "body",  "description", "delivery_details",
        "reason", "notes", "query", "venue", "street",      NULL};
    static const char *const titles[] = {"title", "subject", "name", "who", NULL};
    static const char *const bools[] = {"launched", "campaigner_contactable",
                                        "hidden",   "join_organisation",
                                        "admin",    "approved",
                                        "ticketed", "eu_data_processing_consent",
                                        NULL};
    static const char *const enums[] = {"status",     "admin_status",     "delivery_status",
                                        "role",       "commentable_type", "source",
                                        "utm_source", "utm_campaign",     NULL};
    if (strcmp(name, "id") == 0) {
        return K_ID;
    }
    if (strcmp(name, "created_at") == 0) {
        return K_CREATED;
    }
    if (strcmp(name, "updated_at") == 0) {
        return K_UPDATED;
    }
    if (strcmp(name, "start_at") == 0 || strcmp(name, "end_at") == 0) {
        return K_TIME;
    }
    if (ends_with(name, "_at")) {
        return K_TIME_OPT;
    }
    if (strcmp(name, "external_id") == 0 || strcmp(name, "external_constituent_id") == 0) {
        return K_EXTID;
    }
    if (ends_with(name, "_id")) {
        return K_REF;
    }
    if (strstr(name, "email") || strcmp(name, "from_address") == 0) {
        return K_EMAIL;
    }
    if (strcmp(name, "first_name") == 0 || strcmp(name, "from_name") == 0) {
        return K_FIRST;
    }
    if (strcmp(name, "last_name") == 0) {
        return K_LAST;
    }
    if (name_in(name, texts)) {
        return K_TEXT;
    }
    if (name_in(name, titles)) {
        return K_TITLE;
    }
    if (name_in(name, bools)) {
        return K_BOOL;
    }
    if (strcmp(name, "postcode") == 0 || strcmp(name, "postal_code") == 0) {
        return K_POSTCODE;
    }
    if (strcmp(name, "phone_number") == 0) {
        return K_PHONE;
    }
    if (strcmp(name, "locale") == 0) {
        return K_LOCALE;
    }
    if (strcmp(name, "country") == 0) {
        return K_COUNTRY;
    }
    if (strcmp(name, "latitude") == 0 || strcmp(name, "longitude") == 0) {
        return K_COORD;
    }
    if (strcmp(name, "slug") == 0) {
        return K_SLUG;
    }
    if (name_in(name, enums)) {
        return K_ENUM;
    }
    if (strcmp(name, "goal") == 0 || strcmp(name, "count") == 0 || ends_with(name, "_count")) {
        return K_INT;
    }
    if (strcmp(name, "additional_fields") == 0) {
        return K_JSON;
    }
    if (strcmp(name, "user_ip") == 0) {
        return K_IP;
    }
    if (ends_with(name, "_url") || strcmp(name, "redirect_to") == 0) {
        return K_URL;
    }
    if (strcmp(name, "category_names") == 0) {
        return K_LIST;
    }
    if (strcmp(name, "locality") == 0 || strcmp(name, "region") == 0) {
        return K_PLACE;
    }
    return K_WORD;
}

/* splitmix64: a row's values depend only on (seed, id), so rows 1..150 in one
 * export equal rows 1..100 plus rows 101..150 of two exports. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t rng_below(uint64_t *s, uint64_t n)
{
    return rng_next(s) % n;
}

#define PICK(s, arr) ((arr)[rng_below((s), sizeof(arr) / sizeof((arr)[0]))])

static const char *const k_words[] = {
    "save",    "the",    "library", "park",    "river", "school",    "clean",  "air",
    "fair",    "pay",    "stop",    "closure", "of",    "our",       "local",  "hospital",
    "protect", "bees",   "more",    "buses",   "now",   "community", "garden", "housing",
    "rent",    "freeze", "safe",    "streets", "for",   "everyone"};
/* Each is a trap for a CSV or JSON path: delimiter, quote, newline (LF and
 * CRLF), multi-byte UTF-8 (2, 3 and 4 bytes), backslash, markup. */
static const char *const k_spice[] = {", now",
                                      " \"urgent\"",
                                      "\nsecond line",
                                      " café",
                                      " Zürich",
                                      " 東京",
                                      " 🙂",
                                      " naïve",
                                      "; and more",
                                      " 'quoted'",
                                      "\r\nwindows line",
                                      " — dash",
                                      " 50%",
                                      " <b>bold</b>",
                                      " C:\\path",
                                      " \"\"",
                                      ",,",
                                      " \\N"};
static const char *const k_first[] = {
    "Ana",   "José",  "Zoë", "Li", "Siobhán",      "Mohammed",    "Émilie", "Björn",
    "Ngozi", "Chloé", "Kai", "李", "Marie-Claire", "Jean \"JJ\"", "Sam"};
static const char *const k_last[] = {"Smith",    "O'Brien",    "García",       "Müller",
                                     "Nguyễn",   "Smith, Jr.", "van der Berg", "Øster",
                                     "Kowalski", "Đặng",       "王",           "Lee"};
static const char *const k_domains[] = {"example.org", "example.com", "mail.example.net"};
static const char *const k_postcodes[] = {"02134", "SW1A 1AA", "10115", "75001",
                                          "00501", "H0H 0H0",  "2000",  "EC1A 1BB"};
static const char *const k_locales[] = {"en", "en-GB", "fr", "es-MX", "de", "pt-BR"};
static const char *const k_countries[] = {"US", "GB", "FR", "DE", "BR", "CA", "AU", "NZ"};
static const char *const k_enums[] = {"approved", "pending",      "rejected", "awaiting_moderation",
                                      "good",     "inappropriate"};
static const char *const k_places[] = {"Zürich", "São Paulo", "Montréal", "Köln",
                                       "Kraków", "Reykjavík", "New York", "Ōsaka"};
static const char *const k_cats[] = {"Environment", "Health", "Education", "Transport", "Housing"};

struct gen {
    int bz2;
    FILE *f;
    BZFILE *bz;
    sl_buf out; /* rows waiting to be written, flushed at 1 MB */
    sl_buf val; /* the value being built */
    unsigned long long raw_bytes;
};

static int gen_flush(struct gen *g)
{
    if (g->out.len == 0) {
        return 0;
    }
    g->raw_bytes += g->out.len;
    if (g->bz2) {
        int err = BZ_OK;
        BZ2_bzWrite(&err, g->bz, g->out.data, (int)g->out.len);
        if (err != BZ_OK) {
            fprintf(stderr, PROG ": gen: bzip2 write failed (error %d)\n", err);
            return -1;
        }
    } else if (fwrite(g->out.data, 1, g->out.len, g->f) != g->out.len) {
        fprintf(stderr, PROG ": gen: write failed: %s\n", strerror(errno));
        return -1;
    }
    sl_buf_reset(&g->out);
    return 0;
}

/* Append one field the way PostgreSQL's COPY ... CSV does: NULL is an empty
 * unquoted field, an empty string is "", and a value with a delimiter, quote,
 * CR/LF or edge spaces is quoted with quotes doubled. */
static void csv_field(sl_buf *out, const char *s, size_t n, int is_null)
{
    if (is_null) {
        return;
    }
    int quote = n == 0 || s[0] == ' ' || s[n - 1] == ' ';
    for (size_t i = 0; i < n && !quote; i++) {
        quote = s[i] == ',' || s[i] == '"' || s[i] == '\n' || s[i] == '\r';
    }
    if (!quote) {
        sl_buf_append(out, s, n);
        return;
    }
    sl_buf_putc(out, '"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"') {
            sl_buf_putc(out, '"');
        }
        sl_buf_putc(out, s[i]);
    }
    sl_buf_putc(out, '"');
}

static void put_time(sl_buf *v, long long t, uint64_t *s)
{
    time_t tt = (time_t)t;
    struct tm tm;
    char tmp[40];
    gmtime_r(&tt, &tm);
    strftime(tmp, sizeof(tmp), "%Y-%m-%d %H:%M:%S", &tm);
    sl_buf_printf(v, "%s.%06u", tmp, (unsigned)rng_below(s, 1000000));
}

static void put_words(sl_buf *v, uint64_t *s, int min, int max, int capital)
{
    int n = min + (int)rng_below(s, (uint64_t)(max - min + 1));
    for (int i = 0; i < n; i++) {
        const char *w = PICK(s, k_words);
        if (i > 0) {
            sl_buf_putc(v, ' ');
        }
        if (i == 0 && capital) {
            sl_buf_putc(v, (char)toupper((unsigned char)w[0]));
            sl_buf_puts(v, w + 1);
        } else {
            sl_buf_puts(v, w);
        }
    }
}

/* One value of kind k for row id into g->val; returns 1 for NULL. */
static int gen_value(struct gen *g, enum kind k, unsigned long long id, uint64_t *s,
                     long long created)
{
    sl_buf *v = &g->val;
    uint64_t r = rng_below(s, 100);
    switch (k) {
    case K_ID:
        sl_buf_printf(v, "%llu", id);
        return 0;
    case K_CREATED:
        put_time(v, created, s);
        return 0;
    case K_UPDATED:
        put_time(v, created + (long long)rng_below(s, 86400 * 30), s);
        return 0;
    case K_TIME:
        put_time(v, created + (long long)rng_below(s, 86400 * 90), s);
        return 0;
    case K_TIME_OPT:
        if (r < 70) {
            return 1;
        }
        put_time(v, created + (long long)rng_below(s, 86400 * 10), s);
        return 0;
    case K_REF:
        if (r < 10) {
            return 1;
        }
        sl_buf_printf(v, "%llu", (unsigned long long)(1 + rng_below(s, 100000)));
        return 0;
    case K_EXTID:
        if (r < 20) {
            return 1;
        }
        sl_buf_printf(v, "ext-%06llu", (unsigned long long)rng_below(s, 1000000));
        return 0;
    case K_EMAIL: {
        if (r < 3) {
            return 1;
        }
        const char *d = PICK(s, k_domains);
        if (r < 13) {
            sl_buf_printf(v, "User.%llu+Tag@%c%s", id, toupper((unsigned char)d[0]), d + 1);
        } else {
            sl_buf_printf(v, "user.%llu@%s", id, d);
        }
        return 0;
    }
    case K_FIRST:
        if (r < 3) {
            return 1;
        }
        sl_buf_puts(v, PICK(s, k_first));
        return 0;
    case K_LAST:
        if (r < 3) {
            return 1;
        }
        sl_buf_puts(v, PICK(s, k_last));
        return 0;
    case K_TEXT:
    case K_TITLE:
        if (r < 5) {
            return 1;
        }
        if (r < 8) {
            return 0; /* an empty string, which CSV must keep apart from NULL */
        }
        put_words(v, s, k == K_TITLE ? 2 : 4, k == K_TITLE ? 6 : 14, 1);
        if (r < 60) {
            sl_buf_puts(v, PICK(s, k_spice));
            if (r < 20) {
                sl_buf_putc(v, ' ');
                put_words(v, s, 1, 4, 0);
            }
        }
        if (r >= 95) {
            sl_buf_putc(v, ' '); /* trailing space: quoted by PostgreSQL, kept by parsers */
        }
        return 0;
    case K_BOOL:
        if (r < 5) {
            return 1;
        }
        sl_buf_puts(v, r < 50 ? "t" : "f");
        return 0;
    case K_POSTCODE:
        if (r < 10) {
            return 1;
        }
        if (r < 50) {
            sl_buf_printf(v, "%05u", (unsigned)rng_below(s, 100000));
        } else {
            sl_buf_puts(v, PICK(s, k_postcodes));
        }
        return 0;
    case K_PHONE:
        if (r < 20) {
            return 1;
        }
        if (r < 50) {
            sl_buf_printf(v, "+1 555-01%02u", (unsigned)rng_below(s, 100));
        } else if (r < 75) {
            sl_buf_printf(v, "(555) 010-%04u", (unsigned)rng_below(s, 10000));
        } else {
            sl_buf_printf(v, "+44 20 7946 0%03u", (unsigned)rng_below(s, 1000));
        }
        return 0;
    case K_LOCALE:
        sl_buf_puts(v, PICK(s, k_locales));
        return 0;
    case K_COUNTRY:
        if (r < 5) {
            return 1;
        }
        sl_buf_puts(v, PICK(s, k_countries));
        return 0;
    case K_COORD:
        if (r < 10) {
            return 1;
        }
        sl_buf_printf(v, "%.6f", (double)rng_below(s, 180000000) / 1e6 - 90.0);
        return 0;
    case K_SLUG:
        put_words(v, s, 2, 5, 0);
        for (size_t i = 0; i < v->len; i++) {
            if (v->data[i] == ' ') {
                v->data[i] = '-';
            }
        }
        sl_buf_printf(v, "-%llu", id);
        return 0;
    case K_ENUM:
        if (r < 5) {
            return 1;
        }
        sl_buf_puts(v, PICK(s, k_enums));
        return 0;
    case K_INT:
        sl_buf_printf(v, "%u", (unsigned)rng_below(s, 100000));
        return 0;
    case K_JSON:
        if (r < 30) {
            return 1;
        }
        sl_buf_printf(v, "{\"why\":\"because, \\\"really\\\"\",\"n\":%u,\"city\":\"%s\"}",
                      (unsigned)rng_below(s, 1000), PICK(s, k_places));
        return 0;
    case K_IP:
        if (r < 10) {
            return 1;
        }
        if (r < 70) {
            sl_buf_printf(v, "192.0.2.%u", (unsigned)rng_below(s, 256));
        } else {
            sl_buf_printf(v, "2001:db8::%x", (unsigned)rng_below(s, 65536));
        }
        return 0;
    case K_URL:
        if (r < 30) {
            return 1;
        }
        sl_buf_printf(v, "https://example.org/images/%llu.png?size=large&v=2", id);
        return 0;
    case K_LIST:
        sl_buf_puts(v, PICK(s, k_cats));
        if (r < 50) {
            sl_buf_putc(v, ',');
            sl_buf_puts(v, PICK(s, k_cats));
        }
        return 0;
    case K_PLACE:
        if (r < 5) {
            return 1;
        }
        sl_buf_puts(v, PICK(s, k_places));
        return 0;
    case K_WORD:
        if (r < 10) {
            return 1;
        }
        put_words(v, s, 1, 2, 0);
        return 0;
    }
    return 1;
}

static int main_gen(int argc, char **argv)
{
    const char *table = NULL, *out_path = NULL;
    long rows = -1, cols = 10, seed = 1, start_id = 1;
    int bz2 = 0, rc = 1;
    const char *names[1000];
    enum kind kinds[1000];
    char extra_names[1000][32];
    char tmp_path[4096];
    struct gen g = {0};
    sl_buf_init(&g.out, 2 * 1024 * 1024 + ROW_MAX);
    sl_buf_init(&g.val, ROW_MAX);
    tmp_path[0] = '\0';

    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--bz2") == 0) {
            bz2 = 1;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("usage: %s %s\n", PROG, USAGE);
            return 0;
        }
        if (i + 1 >= argc) {
            fk_die_usage(PROG, USAGE, "gen: %s needs a value (or is unknown)", a);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--table") == 0) {
            table = v;
        } else if (strcmp(a, "--out") == 0) {
            out_path = v;
        } else if (strcmp(a, "--rows") == 0) {
            if (fk_parse_long(v, 0, 1000000000L, &rows) != 0) {
                fk_die_usage(PROG, USAGE, "--rows: expected 0..1000000000, got '%s'", v);
            }
        } else if (strcmp(a, "--cols") == 0) {
            if (fk_parse_long(v, 1, 1000, &cols) != 0) {
                fk_die_usage(PROG, USAGE, "--cols: expected 1..1000 (id included), got '%s'", v);
            }
        } else if (strcmp(a, "--seed") == 0) {
            if (fk_parse_long(v, 0, INT64_MAX, &seed) != 0) {
                fk_die_usage(PROG, USAGE, "--seed: expected an integer >= 0, got '%s'", v);
            }
        } else if (strcmp(a, "--start-id") == 0) {
            if (fk_parse_long(v, 1, 1000000000000000L, &start_id) != 0) {
                fk_die_usage(PROG, USAGE, "--start-id: expected an integer >= 1, got '%s'", v);
            }
        } else {
            fk_die_usage(PROG, USAGE, "gen: unknown option %s", a);
        }
    }
    if (!table || !out_path || rows < 0) {
        fk_die_usage(PROG, USAGE, "gen: --table, --rows and --out are required");
    }

    /* Columns: id, the table's own names, the generic names it lacks, extra_N. */
    const char *const *own = NULL;
    for (size_t t = 0; t < sizeof(k_tables) / sizeof(k_tables[0]); t++) {
        if (strcmp(k_tables[t].table, table) == 0) {
            own = k_tables[t].cols;
        }
    }
    long nc = 0;
    names[nc++] = "id";
    for (size_t i = 0; own && own[i] && nc < cols; i++) {
        names[nc++] = own[i];
    }
    for (size_t i = 0; k_generic[i] && nc < cols; i++) {
        if (!own || !name_in(k_generic[i], own)) {
            names[nc++] = k_generic[i];
        }
    }
    for (long x = 1; nc < cols; x++) {
        snprintf(extra_names[nc], sizeof(extra_names[nc]), "extra_%ld", x);
        names[nc] = extra_names[nc];
        nc++;
    }
    for (long i = 0; i < nc; i++) {
        kinds[i] = kind_of(names[i]);
    }

    int n = snprintf(tmp_path, sizeof(tmp_path), "%s.tmp.%ld", out_path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof(tmp_path)) {
        fprintf(stderr, PROG ": gen: --out path too long: %s\n", out_path);
        tmp_path[0] = '\0';
        goto fail;
    }
    g.bz2 = bz2;
    g.f = fopen(tmp_path, "wb");
    if (!g.f) {
        fprintf(stderr, PROG ": gen: cannot write %s: %s\n", tmp_path, strerror(errno));
        tmp_path[0] = '\0';
        goto fail;
    }
    if (bz2) {
        int err = BZ_OK;
        g.bz = BZ2_bzWriteOpen(&err, g.f, 9, 0, 0);
        if (err != BZ_OK) {
            fprintf(stderr, PROG ": gen: bzip2 cannot start (error %d)\n", err);
            g.bz = NULL;
            goto fail;
        }
    }

    for (long i = 0; i < nc; i++) {
        if (i > 0) {
            sl_buf_putc(&g.out, ',');
        }
        csv_field(&g.out, names[i], strlen(names[i]), 0);
    }
    sl_buf_putc(&g.out, '\n');
    for (long row = 0; row < rows; row++) {
        unsigned long long id = (unsigned long long)start_id + (unsigned long long)row;
        uint64_t s = ((uint64_t)seed * 0xD1B54A32D192ED03ULL) ^ (id * 0x9E3779B97F4A7C15ULL);
        rng_next(&s);
        long long created = 1577836800LL + (long long)(id * 97) + (long long)rng_below(&s, 60);
        for (long i = 0; i < nc; i++) {
            sl_buf_reset(&g.val);
            int is_null = gen_value(&g, kinds[i], id, &s, created);
            if (i > 0) {
                sl_buf_putc(&g.out, ',');
            }
            csv_field(&g.out, sl_buf_cstr(&g.val), g.val.len, is_null);
        }
        if (sl_buf_putc(&g.out, '\n') != 0) {
            fprintf(stderr, PROG ": gen: row %llu is larger than %zu bytes\n", id, ROW_MAX);
            goto fail;
        }
        if (g.out.len >= 1024 * 1024 && gen_flush(&g) != 0) {
            goto fail;
        }
    }
    if (gen_flush(&g) != 0) {
        goto fail;
    }
    if (g.bz) {
        int err = BZ_OK;
        BZ2_bzWriteClose(&err, g.bz, 0, NULL, NULL);
        g.bz = NULL;
        if (err != BZ_OK) {
            fprintf(stderr, PROG ": gen: bzip2 could not finish (error %d)\n", err);
            goto fail;
        }
    }
    int bad = fflush(g.f) != 0;
    long long file_bytes = ftell(g.f);
    bad |= fclose(g.f) != 0;
    g.f = NULL;
    if (bad || rename(tmp_path, out_path) != 0) {
        fprintf(stderr, PROG ": gen: cannot write %s: %s\n", out_path, strerror(errno));
        goto fail;
    }
    tmp_path[0] = '\0';
    printf(PROG " gen: wrote %s: table %s, %ld rows (ids %ld..%ld), %ld columns, %llu CSV "
                "bytes, %lld file bytes\n",
           out_path, table, rows, start_id, start_id + rows - 1, nc, g.raw_bytes, file_bytes);
    rc = 0;
fail:
    if (g.bz) {
        int err = BZ_OK;
        BZ2_bzWriteClose(&err, g.bz, 1, NULL, NULL);
    }
    if (g.f) {
        fclose(g.f);
    }
    if (tmp_path[0]) {
        unlink(tmp_path);
    }
    sl_buf_free(&g.out);
    sl_buf_free(&g.val);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fk_die_usage(PROG, USAGE, "a mode is required: serve, send, gen or receive");
    }
    const char *mode = argv[1];
    if (strcmp(mode, "serve") == 0) {
        return main_server(argc, argv, 0);
    }
    if (strcmp(mode, "receive") == 0) {
        return main_server(argc, argv, 1);
    }
    if (strcmp(mode, "send") == 0) {
        return main_send(argc, argv);
    }
    if (strcmp(mode, "gen") == 0) {
        return main_gen(argc, argv);
    }
    if (strcmp(mode, "--help") == 0 || strcmp(mode, "-h") == 0) {
        printf("usage: %s %s\n", PROG, USAGE);
        return 0;
    }
    fk_die_usage(PROG, USAGE, "unknown mode '%s': expected serve, send, gen or receive", mode);
    return 2;
}
