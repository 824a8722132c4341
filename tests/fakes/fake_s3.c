/* fake_s3: a strict stand-in for Amazon S3 (path-style), as much as staging
 * a bulk load uses: PutObject, GetObject, DeleteObject, ListObjectsV2 and the
 * multipart upload calls, each request's AWS Signature V4 verified with a
 * known key. Objects are files under --dir. See tests/fakes/README.md. */
#include <dirent.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "fake_common.h"
#include "sluice/url.h"

#define PROG "fake_s3"
#define USAGE                                                                                      \
    "--port N [--port-file FILE] --dir DIR --bucket NAME [--bucket NAME...]\n"                     \
    "       [--access-key AK] [--secret-key SK] [--region R] [--session-token T]\n"                \
    "       [--creds-auth TOKEN] [--min-part BYTES] [--fail-part N] [--fail-complete-200-error N]"
#define XML_BODY_MAX ((size_t)1 << 20)
#define SKEW_MAX_S (15 * 60)
#define NAME_MAX_ENC 240

static struct {
    const char *dir;
    const char *ak, *sk, *region, *token, *creds_auth;
    long min_part;
    long fail_part;     /* the Nth UploadPart answers 500 once (0 = never) */
    long fail_complete; /* the first N completes answer 200 + <Error> */
} cfg = {
    .ak = "AKIAFAKEFAKEFAKE", .sk = "fake-secret-key", .region = "us-east-1", .min_part = 5L << 20};

enum kind { K_CREATE, K_PART, K_COMPLETE, K_ABORT, K_PUT, K_GET, K_DELETE, K_LIST, K_OTHER, K_N };
static const char *kind_names[K_N] = {"create", "part",   "complete", "abort", "put",
                                      "get",    "delete", "list",     "other"};

struct part {
    int have;
    uint64_t size;
    char md5[33];
};

struct upload {
    char id[128];
    char *bucket, *key;
    struct part *parts; /* indexed by part number, 1..10000 */
    struct upload *next;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct upload *uploads;
static unsigned long n_kind[K_N], n_status[600], n_refusals, n_parts_failed, n_completes_failed,
    n_completed, n_aborted, n_part_requests, n_complete_requests, n_upload_seq;
static uint64_t bytes_received;

/* Per request, from the URI log callback to the completion callback. */
struct s3r {
    char *raw; /* the request target as sent */
    int started;
    enum kind kind;
    char bucket[64];
    char *key; /* decoded */
    /* Query, decoded. */
    char *q_upload_id, *q_part, *q_prefix, *q_token, *q_max_keys, *q_start_after, *q_list_type;
    int q_uploads;
    /* An early refusal, answered once the body has been read. */
    unsigned status;
    char code[64];
    char msg[1024];
    char *extra_xml; /* more elements for the <Error> document */
    char payload_hash[80];
    EVP_MD_CTX *sha, *md5;
    uint64_t seen;
    int fd;
    char tmp[PATH_MAX];
    sl_buf mem;
    int keep_mem;
};

static void refuse(struct s3r *r, unsigned status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void refuse(struct s3r *r, unsigned status, const char *code, const char *fmt, ...)
{
    if (r->status) {
        return;
    }
    r->status = status;
    snprintf(r->code, sizeof(r->code), "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* Encoding                                                                  */

static int unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

static void uri_encode(sl_buf *b, const char *s, size_t n, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            sl_buf_putc(b, (char)c);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            sl_buf_append(b, e, 3);
        }
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Percent-decode n bytes into a malloc'd string; NULL on a bad escape. A raw
 * NUL in the result is refused too. */
static char *pct_decode(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    long k = o ? sl_url_decode(s, n, o, n + 1) : -1;
    if (k < 0 || strlen(o) != (size_t)k) {
        free(o);
        return NULL;
    }
    return o;
}

static void hexs(const unsigned char *d, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Object file name: the key with every byte but [A-Za-z0-9_-] as %XX, so any
 * key is one flat file name ('/' included) and "." / ".." cannot occur. */
static int obj_path(const char *bucket, const char *key, char *out, size_t cap)
{
    sl_buf b;
    sl_buf_init(&b, 8192);
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '_' || *p == '-') {
            sl_buf_putc(&b, (char)*p);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            sl_buf_append(&b, e, 3);
        }
    }
    int ok = b.len > 0 && b.len <= NAME_MAX_ENC;
    if (ok) {
        ok = (size_t)snprintf(out, cap, "%s/%s/%s", cfg.dir, bucket, sl_buf_cstr(&b)) < cap;
    }
    sl_buf_free(&b);
    return ok ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* Answers                                                                   */

static unsigned long request_id;

static enum MHD_Result answer(struct MHD_Connection *c, struct s3r *r, unsigned status,
                              const char *body, size_t len, const char *etag)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp) {
        return MHD_NO;
    }
    if (len > 0) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/xml");
    }
    if (etag) {
        MHD_add_response_header(resp, "ETag", etag);
    }
    char rid[32];
    pthread_mutex_lock(&mu);
    snprintf(rid, sizeof(rid), "FAKE%08lu", ++request_id);
    if (status < 600) {
        n_status[status]++;
    }
    pthread_mutex_unlock(&mu);
    MHD_add_response_header(resp, "x-amz-request-id", rid);
    MHD_add_response_header(resp, "Server", "fake_s3");
    enum MHD_Result rc = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    (void)r;
    return rc;
}

static enum MHD_Result answer_error(struct MHD_Connection *c, struct s3r *r, unsigned status,
                                    const char *code, const char *msg)
{
    sl_buf b;
    sl_buf_init(&b, 1 << 20);
    sl_buf_puts(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>");
    sl_buf_put_xml(&b, code);
    sl_buf_puts(&b, "</Code><Message>");
    sl_buf_put_xml(&b, msg);
    sl_buf_puts(&b, "</Message>");
    if (r && r->extra_xml) {
        sl_buf_puts(&b, r->extra_xml);
    }
    sl_buf_puts(&b, "<Resource>");
    sl_buf_put_xml(&b, r && r->raw ? r->raw : "/");
    sl_buf_puts(&b, "</Resource></Error>");
    if (status >= 400) {
        pthread_mutex_lock(&mu);
        n_refusals++;
        pthread_mutex_unlock(&mu);
        fprintf(stderr, PROG ": %u %s: %s (%s)\n", status, code, msg, r && r->raw ? r->raw : "");
    }
    enum MHD_Result rc = answer(c, r, status, b.data, b.len, NULL);
    sl_buf_free(&b);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* SigV4                                                                     */

struct hdr_collect {
    const char *name;
    sl_buf *out;
    int n;
};

static enum MHD_Result hdr_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                              const char *value)
{
    struct hdr_collect *h = cls;
    (void)kind;
    if (strcasecmp(key, h->name) != 0) {
        return MHD_YES;
    }
    if (h->n++ > 0) {
        sl_buf_putc(h->out, ',');
    }
    /* Trim, and collapse runs of spaces into one (SigV4 canonical form). */
    const char *v = value ? value : "";
    while (*v == ' ' || *v == '\t') {
        v++;
    }
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t')) {
        n--;
    }
    int sp = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] == ' ' || v[i] == '\t') {
            if (!sp) {
                sl_buf_putc(h->out, ' ');
            }
            sp = 1;
        } else {
            sl_buf_putc(h->out, v[i]);
            sp = 0;
        }
    }
    return MHD_YES;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The canonical query: decoded and re-encoded pairs, sorted. -1 on a bad escape. */
static int canon_query(const char *q, sl_buf *out)
{
    if (!q || !*q) {
        return 0;
    }
    size_t cap = 16, n = 0;
    char **pairs = malloc(cap * sizeof(*pairs));
    int rc = 0;
    const char *p = q;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > 0) {
            const char *eq = memchr(p, '=', len);
            size_t kl = eq ? (size_t)(eq - p) : len;
            char *k = pct_decode(p, kl);
            char *v = eq ? pct_decode(eq + 1, len - kl - 1) : strdup("");
            if (!k || !v) {
                free(k);
                free(v);
                rc = -1;
                break;
            }
            sl_buf b;
            sl_buf_init(&b, 1 << 16);
            uri_encode(&b, k, strlen(k), 0);
            sl_buf_putc(&b, '=');
            uri_encode(&b, v, strlen(v), 0);
            free(k);
            free(v);
            if (n == cap) {
                cap *= 2;
                pairs = realloc(pairs, cap * sizeof(*pairs));
            }
            pairs[n++] = sl_buf_steal(&b);
            sl_buf_free(&b);
        }
        p += len;
        if (*p == '&') {
            p++;
        }
    }
    if (rc == 0) {
        /* Sorting "k=v" strings orders by key then value, as '=' sorts
         * below every unreserved character except '-' and '.'... so compare
         * the key part first, properly. */
        for (size_t i = 1; i < n; i++) {
            for (size_t j = i; j > 0; j--) {
                const char *a = pairs[j - 1], *b = pairs[j];
                size_t al = strcspn(a, "="), bl = strcspn(b, "=");
                int c = strncmp(a, b, al < bl ? al : bl);
                if (c == 0) {
                    c = al < bl ? -1 : al > bl ? 1 : strcmp(a + al, b + bl);
                }
                if (c <= 0) {
                    break;
                }
                char *t = pairs[j - 1];
                pairs[j - 1] = pairs[j];
                pairs[j] = t;
            }
        }
        for (size_t i = 0; i < n; i++) {
            if (i) {
                sl_buf_putc(out, '&');
            }
            sl_buf_puts(out, pairs[i]);
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(pairs[i]);
    }
    free(pairs);
    return rc;
}

static void hmac(const void *key, size_t kl, const char *msg, unsigned char out[32])
{
    unsigned int ol = 32;
    HMAC(EVP_sha256(), key, (int)kl, (const unsigned char *)msg, strlen(msg), out, &ol);
}

static int is_hex64(const char *s)
{
    if (strlen(s) != 64) {
        return 0;
    }
    for (; *s; s++) {
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f'))) {
            return 0;
        }
    }
    return 1;
}

/* Verify the Authorization header of request r (method m) as S3 does,
 * before the body is read (the payload hash is compared after). On a
 * failure, r is marked refused. */
static void verify_sigv4(struct MHD_Connection *c, struct s3r *r, const char *m)
{
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!auth) {
        refuse(r, 403, "AccessDenied", "Access Denied (no Authorization header)");
        return;
    }
    static const char alg[] = "AWS4-HMAC-SHA256 ";
    if (strncmp(auth, alg, sizeof(alg) - 1) != 0) {
        refuse(r, 400, "InvalidArgument",
               "Unsupported Authorization Type (only AWS4-HMAC-SHA256 is accepted)");
        return;
    }
    char cred[512] = "", signed_h[1024] = "", sig[128] = "";
    const char *p = auth + sizeof(alg) - 1;
    while (*p) {
        while (*p == ' ' || *p == ',') {
            p++;
        }
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char *dst = NULL;
        size_t cap = 0, skip = 0;
        if (!strncmp(p, "Credential=", 11)) {
            dst = cred, cap = sizeof(cred), skip = 11;
        } else if (!strncmp(p, "SignedHeaders=", 14)) {
            dst = signed_h, cap = sizeof(signed_h), skip = 14;
        } else if (!strncmp(p, "Signature=", 10)) {
            dst = sig, cap = sizeof(sig), skip = 10;
        }
        if (dst && len - skip < cap) {
            memcpy(dst, p + skip, len - skip);
            dst[len - skip] = '\0';
            while (len - skip > 0 && dst[strlen(dst) - 1] == ' ') {
                dst[strlen(dst) - 1] = '\0';
            }
        }
        p += len;
    }
    if (!cred[0] || !signed_h[0] || !sig[0]) {
        refuse(r, 400, "AuthorizationHeaderMalformed",
               "The authorization header is malformed; it needs Credential, SignedHeaders and "
               "Signature");
        return;
    }
    /* Credential=AK/date/region/service/aws4_request */
    char *parts[5] = {0};
    char credc[512];
    snprintf(credc, sizeof(credc), "%s", cred);
    int np = 0;
    for (char *s = credc, *save = NULL, *t; np < 5 && (t = strtok_r(s, "/", &save)); s = NULL) {
        parts[np++] = t;
    }
    if (np != 5) {
        refuse(r, 400, "AuthorizationHeaderMalformed",
               "The authorization header is malformed; the Credential is mal-formed; expecting "
               "\"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".");
        return;
    }
    if (strcmp(parts[0], cfg.ak) != 0) {
        refuse(r, 403, "InvalidAccessKeyId",
               "The AWS Access Key Id you provided does not exist in our records.");
        return;
    }
    if (strcmp(parts[2], cfg.region) != 0) {
        refuse(r, 400, "AuthorizationHeaderMalformed",
               "The authorization header is malformed; the region '%s' is wrong; expecting '%s'",
               parts[2], cfg.region);
        return;
    }
    if (strcmp(parts[3], "s3") != 0 || strcmp(parts[4], "aws4_request") != 0) {
        refuse(r, 400, "AuthorizationHeaderMalformed",
               "The authorization header is malformed; incorrect service \"%s\" or terminator "
               "\"%s\"; expecting \"s3\" and \"aws4_request\"",
               parts[3], parts[4]);
        return;
    }
    const char *amzdate = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-amz-date");
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!amzdate || strlen(amzdate) != 16 ||
        sscanf(amzdate, "%4d%2d%2dT%2d%2d%2dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec) != 6) {
        refuse(r, 403, "AccessDenied",
               "AWS authentication requires a valid Date or x-amz-date header (YYYYMMDDTHHMMSSZ)");
        return;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    time_t now = time(NULL);
    if (t < now - SKEW_MAX_S || t > now + SKEW_MAX_S) {
        refuse(r, 403, "RequestTimeTooSkewed",
               "The difference between the request time and the current time is too large.");
        return;
    }
    if (strncmp(parts[1], amzdate, 8) != 0 || strlen(parts[1]) != 8) {
        refuse(r, 403, "SignatureDoesNotMatch",
               "The credential scope date %s is not the date of x-amz-date %s", parts[1], amzdate);
        return;
    }
    const char *ph = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-amz-content-sha256");
    if (!ph) {
        refuse(r, 400, "InvalidRequest",
               "Missing required header for this request: x-amz-content-sha256");
        return;
    }
    if (strcmp(ph, "UNSIGNED-PAYLOAD") != 0 && !is_hex64(ph)) {
        refuse(r, 400, "InvalidArgument",
               "x-amz-content-sha256 must be UNSIGNED-PAYLOAD or a SHA-256 hex digest (this fake "
               "does not take streaming payloads)");
        return;
    }
    snprintf(r->payload_hash, sizeof(r->payload_hash), "%s", ph);
    const char *tok = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-amz-security-token");
    if ((tok != NULL) != (cfg.token != NULL) || (tok && strcmp(tok, cfg.token) != 0)) {
        refuse(r, 403, "InvalidToken", "The provided token is malformed or otherwise invalid.");
        return;
    }
    /* SignedHeaders: lower case, sorted, unique; host and every x-amz-* header present. */
    char shc[1024];
    snprintf(shc, sizeof(shc), "%s", signed_h);
    char *names[64];
    int nn = 0;
    for (char *s = shc, *save = NULL, *tkn; (tkn = strtok_r(s, ";", &save)); s = NULL) {
        if (nn == 64) {
            break;
        }
        for (char *q = tkn; *q; q++) {
            if (*q >= 'A' && *q <= 'Z') {
                refuse(r, 403, "SignatureDoesNotMatch", "SignedHeaders must be lower case");
                return;
            }
        }
        if (nn > 0 && strcmp(names[nn - 1], tkn) >= 0) {
            refuse(r, 403, "SignatureDoesNotMatch", "SignedHeaders must be sorted and unique");
            return;
        }
        names[nn++] = tkn;
    }
    const char *must[] = {"host", "x-amz-content-sha256", "x-amz-date",
                          tok ? "x-amz-security-token" : NULL};
    for (size_t i = 0; i < sizeof(must) / sizeof(must[0]); i++) {
        int found = 0;
        for (int k = 0; must[i] && k < nn; k++) {
            found |= !strcmp(names[k], must[i]);
        }
        if (must[i] && !found) {
            refuse(r, 403, "AccessDenied", "Header %s must be signed (SignedHeaders=%s)", must[i],
                   signed_h);
            return;
        }
    }

    /* The canonical request. */
    sl_buf cr;
    sl_buf_init(&cr, 1 << 20);
    sl_buf_printf(&cr, "%s\n", m);
    const char *qm = strchr(r->raw, '?');
    size_t pl = qm ? (size_t)(qm - r->raw) : strlen(r->raw);
    char *path = pct_decode(r->raw, pl);
    if (!path) {
        sl_buf_free(&cr);
        refuse(r, 400, "InvalidURI", "Couldn't parse the specified URI.");
        return;
    }
    uri_encode(&cr, path, strlen(path), 1);
    free(path);
    sl_buf_putc(&cr, '\n');
    if (canon_query(qm ? qm + 1 : NULL, &cr) != 0) {
        sl_buf_free(&cr);
        refuse(r, 400, "InvalidURI", "Couldn't parse the specified URI (query).");
        return;
    }
    sl_buf_putc(&cr, '\n');
    for (int k = 0; k < nn; k++) {
        sl_buf_printf(&cr, "%s:", names[k]);
        struct hdr_collect hc = {.name = names[k], .out = &cr};
        MHD_get_connection_values(c, MHD_HEADER_KIND, hdr_cb, &hc);
        if (hc.n == 0) {
            sl_buf_free(&cr);
            refuse(r, 403, "SignatureDoesNotMatch", "Signed header '%s' is not in the request",
                   names[k]);
            return;
        }
        sl_buf_putc(&cr, '\n');
    }
    sl_buf_printf(&cr, "\n%s\n%s", signed_h, ph);

    unsigned char md[32];
    char crhash[65];
    unsigned int mdl = 32;
    EVP_Digest(cr.data, cr.len, md, &mdl, EVP_sha256(), NULL);
    hexs(md, 32, crhash);
    char scope[128];
    snprintf(scope, sizeof(scope), "%s/%s/s3/aws4_request", parts[1], cfg.region);
    char sts[512];
    snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s\n%s", amzdate, scope, crhash);
    char k0[256];
    snprintf(k0, sizeof(k0), "AWS4%s", cfg.sk);
    unsigned char k1[32], k2[32], k3[32], k4[32], s32[32];
    hmac(k0, strlen(k0), parts[1], k1);
    hmac(k1, 32, cfg.region, k2);
    hmac(k2, 32, "s3", k3);
    hmac(k3, 32, "aws4_request", k4);
    hmac(k4, 32, sts, s32);
    char want[65];
    hexs(s32, 32, want);
    if (strcmp(want, sig) != 0) {
        refuse(r, 403, "SignatureDoesNotMatch",
               "The request signature we calculated does not match the signature you provided. "
               "Check your key and signing method.");
        sl_buf x;
        sl_buf_init(&x, 1 << 20);
        sl_buf_puts(&x, "<AWSAccessKeyId>");
        sl_buf_put_xml(&x, parts[0]);
        sl_buf_puts(&x, "</AWSAccessKeyId><StringToSign>");
        sl_buf_put_xml(&x, sts);
        sl_buf_puts(&x, "</StringToSign><CanonicalRequest>");
        sl_buf_put_xml(&x, sl_buf_cstr(&cr));
        sl_buf_puts(&x, "</CanonicalRequest>");
        r->extra_xml = sl_buf_steal(&x);
        sl_buf_free(&x);
        fprintf(stderr, PROG ": canonical request was:\n%s\n", sl_buf_cstr(&cr));
    }
    sl_buf_free(&cr);
}

/* ------------------------------------------------------------------------ */
/* Routing                                                                   */

static void *uri_log(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)cls;
    (void)c;
    struct s3r *r = calloc(1, sizeof(*r));
    if (r) {
        r->raw = strdup(uri ? uri : "");
        r->fd = -1;
        sl_buf_init(&r->mem, XML_BODY_MAX);
    }
    return r;
}

static void s3r_free(struct s3r *r)
{
    if (!r) {
        return;
    }
    if (r->fd >= 0) {
        close(r->fd);
    }
    if (r->tmp[0]) {
        unlink(r->tmp);
    }
    EVP_MD_CTX_free(r->sha);
    EVP_MD_CTX_free(r->md5);
    sl_buf_free(&r->mem);
    free(r->raw);
    free(r->key);
    free(r->q_upload_id);
    free(r->q_part);
    free(r->q_prefix);
    free(r->q_token);
    free(r->q_max_keys);
    free(r->q_start_after);
    free(r->q_list_type);
    free(r->extra_xml);
    free(r);
}

static void parse_query(struct s3r *r, const char *q)
{
    while (q && *q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', len);
        size_t kl = eq ? (size_t)(eq - q) : len;
        char *k = pct_decode(q, kl);
        char *v = eq ? pct_decode(eq + 1, len - kl - 1) : strdup("");
        char **dst = NULL;
        if (k && v) {
            if (!strcmp(k, "uploads")) {
                r->q_uploads = 1;
            } else if (!strcmp(k, "uploadId")) {
                dst = &r->q_upload_id;
            } else if (!strcmp(k, "partNumber")) {
                dst = &r->q_part;
            } else if (!strcmp(k, "prefix")) {
                dst = &r->q_prefix;
            } else if (!strcmp(k, "continuation-token")) {
                dst = &r->q_token;
            } else if (!strcmp(k, "max-keys")) {
                dst = &r->q_max_keys;
            } else if (!strcmp(k, "start-after")) {
                dst = &r->q_start_after;
            } else if (!strcmp(k, "list-type")) {
                dst = &r->q_list_type;
            }
        }
        if (dst && !*dst) {
            *dst = v;
            v = NULL;
        }
        free(k);
        free(v);
        q += len;
        if (*q == '&') {
            q++;
        }
    }
}

static int bucket_exists(const char *b)
{
    char p[PATH_MAX];
    struct stat st;
    snprintf(p, sizeof(p), "%s/%s", cfg.dir, b);
    return b[0] && b[0] != '.' && !strchr(b, '/') && stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* First callback of an S3 request: route, authenticate, prepare the body sink. */
static void s3_begin(struct MHD_Connection *c, struct s3r *r, const char *m)
{
    const char *qm = strchr(r->raw, '?');
    size_t pl = qm ? (size_t)(qm - r->raw) : strlen(r->raw);
    char *path = pct_decode(r->raw, pl);
    parse_query(r, qm ? qm + 1 : NULL);
    r->kind = K_OTHER;
    if (!path || path[0] != '/') {
        free(path);
        refuse(r, 400, "InvalidURI", "Couldn't parse the specified URI.");
        return;
    }
    const char *b = path + 1;
    const char *sl = strchr(b, '/');
    size_t bl = sl ? (size_t)(sl - b) : strlen(b);
    if (bl == 0 || bl >= sizeof(r->bucket)) {
        free(path);
        refuse(r, 400, "InvalidBucketName", "The specified bucket is not valid.");
        return;
    }
    memcpy(r->bucket, b, bl);
    r->bucket[bl] = '\0';
    r->key = strdup(sl ? sl + 1 : "");
    free(path);
    int has_key = r->key[0] != '\0';
    if (!strcmp(m, "POST") && has_key && r->q_uploads) {
        r->kind = K_CREATE;
    } else if (!strcmp(m, "POST") && has_key && r->q_upload_id) {
        r->kind = K_COMPLETE;
    } else if (!strcmp(m, "PUT") && has_key && r->q_upload_id && r->q_part) {
        r->kind = K_PART;
    } else if (!strcmp(m, "PUT") && has_key && !qm) {
        r->kind = K_PUT;
    } else if (!strcmp(m, "GET") && !has_key) {
        r->kind = K_LIST;
    } else if (!strcmp(m, "GET") && has_key) {
        r->kind = K_GET;
    } else if (!strcmp(m, "DELETE") && has_key && r->q_upload_id) {
        r->kind = K_ABORT;
    } else if (!strcmp(m, "DELETE") && has_key) {
        r->kind = K_DELETE;
    }
    pthread_mutex_lock(&mu);
    n_kind[r->kind]++;
    pthread_mutex_unlock(&mu);

    /* Bodies: a Content-Length, never chunked (S3 refuses a PUT without one). */
    const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Transfer-Encoding");
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if ((!strcmp(m, "PUT") || !strcmp(m, "POST")) && (te || !cl)) {
        refuse(r, 411, "MissingContentLength", "You must provide the Content-Length HTTP header.");
    }
    verify_sigv4(c, r, m);
    if (!r->status && r->kind == K_OTHER) {
        refuse(r, 501, "NotImplemented",
               "A header or query you provided implies functionality that is not implemented "
               "(this fake: %s %s)",
               m, r->raw);
    }
    if (!r->status && !bucket_exists(r->bucket)) {
        refuse(r, 404, "NoSuchBucket", "The specified bucket does not exist");
    }
    r->sha = EVP_MD_CTX_new();
    r->md5 = EVP_MD_CTX_new();
    EVP_DigestInit_ex(r->sha, EVP_sha256(), NULL);
    EVP_DigestInit_ex(r->md5, EVP_md5(), NULL);
    if (!r->status && (r->kind == K_PUT || r->kind == K_PART)) {
        snprintf(r->tmp, sizeof(r->tmp), "%s/.tmp/body.XXXXXX", cfg.dir);
        r->fd = mkstemp(r->tmp);
        if (r->fd < 0) {
            r->tmp[0] = '\0';
            refuse(r, 500, "InternalError", "fake_s3 cannot create a temporary file: %s",
                   strerror(errno));
        }
    }
    r->keep_mem = r->kind == K_COMPLETE;
}

/* ------------------------------------------------------------------------ */
/* Operations                                                                */

static struct upload *find_upload(const char *id)
{
    for (struct upload *u = uploads; u; u = u->next) {
        if (!strcmp(u->id, id)) {
            return u;
        }
    }
    return NULL;
}

static void upload_dir(const char *id, char *out, size_t cap)
{
    /* Upload ids hold '/', '+', '=' and '&': name the folder by a hex form. */
    char h[300];
    hexs((const unsigned char *)id, strlen(id) > 140 ? 140 : strlen(id), h);
    snprintf(out, cap, "%s/.uploads/%s", cfg.dir, h);
}

static void remove_upload(struct upload *u)
{
    char d[PATH_MAX], f[PATH_MAX + 16];
    upload_dir(u->id, d, sizeof(d));
    for (int i = 1; i <= 10000; i++) {
        if (u->parts[i].have) {
            snprintf(f, sizeof(f), "%s/%d", d, i);
            unlink(f);
        }
    }
    rmdir(d);
    for (struct upload **pp = &uploads; *pp; pp = &(*pp)->next) {
        if (*pp == u) {
            *pp = u->next;
            break;
        }
    }
    free(u->bucket);
    free(u->key);
    free(u->parts);
    free(u);
}

static int upload_matches(struct upload *u, struct s3r *r)
{
    return !strcmp(u->bucket, r->bucket) && !strcmp(u->key, r->key);
}

static enum MHD_Result op_create(struct MHD_Connection *c, struct s3r *r)
{
    struct upload *u = calloc(1, sizeof(*u));
    u->parts = calloc(10001, sizeof(*u->parts));
    u->bucket = strdup(r->bucket);
    u->key = strdup(r->key);
    unsigned char rnd[8];
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(rnd, 1, sizeof(rnd), f) != sizeof(rnd)) {
        memset(rnd, 7, sizeof(rnd));
    }
    if (f) {
        fclose(f);
    }
    char h[17];
    hexs(rnd, 8, h);
    pthread_mutex_lock(&mu);
    /* Characters a client must encode in a query and decode from XML. */
    snprintf(u->id, sizeof(u->id), "%s.%lu~a+b/c=d&e", h, ++n_upload_seq);
    char d[PATH_MAX];
    upload_dir(u->id, d, sizeof(d));
    mkdir(d, 0755);
    u->next = uploads;
    uploads = u;
    pthread_mutex_unlock(&mu);
    sl_buf b;
    sl_buf_init(&b, 1 << 20);
    sl_buf_puts(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUploadResult "
                    "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>");
    sl_buf_put_xml(&b, r->bucket);
    sl_buf_puts(&b, "</Bucket><Key>");
    sl_buf_put_xml(&b, r->key);
    sl_buf_puts(&b, "</Key><UploadId>");
    sl_buf_put_xml(&b, u->id);
    sl_buf_puts(&b, "</UploadId></InitiateMultipartUploadResult>");
    enum MHD_Result rc = answer(c, r, 200, b.data, b.len, NULL);
    sl_buf_free(&b);
    return rc;
}

static enum MHD_Result op_part(struct MHD_Connection *c, struct s3r *r, const char *md5hex)
{
    long n = 0;
    if (fk_parse_long(r->q_part, 1, 10000, &n) != 0) {
        return answer_error(c, r, 400, "InvalidArgument",
                            "Part number must be an integer between 1 and 10000, inclusive");
    }
    pthread_mutex_lock(&mu);
    unsigned long seq = ++n_part_requests;
    struct upload *u = find_upload(r->q_upload_id);
    if (!u || !upload_matches(u, r)) {
        pthread_mutex_unlock(&mu);
        return answer_error(c, r, 404, "NoSuchUpload",
                            "The specified upload does not exist. The upload ID may be invalid, or "
                            "the upload may have been aborted or completed.");
    }
    if (cfg.fail_part > 0 && seq == (unsigned long)cfg.fail_part) {
        n_parts_failed++;
        pthread_mutex_unlock(&mu);
        return answer_error(c, r, 500, "InternalError",
                            "We encountered an internal error. Please try again. (fake_s3 "
                            "--fail-part)");
    }
    char d[PATH_MAX], f[PATH_MAX + 16];
    upload_dir(u->id, d, sizeof(d));
    snprintf(f, sizeof(f), "%s/%ld", d, n);
    if (rename(r->tmp, f) != 0) {
        pthread_mutex_unlock(&mu);
        return answer_error(c, r, 500, "InternalError", "fake_s3 cannot store the part");
    }
    r->tmp[0] = '\0';
    u->parts[n].have = 1;
    u->parts[n].size = r->seen;
    snprintf(u->parts[n].md5, sizeof(u->parts[n].md5), "%s", md5hex);
    pthread_mutex_unlock(&mu);
    char etag[40];
    snprintf(etag, sizeof(etag), "\"%s\"", md5hex);
    return answer(c, r, 200, "", 0, etag);
}

static int copy_file(int out, const char *path, EVP_MD_CTX *md5)
{
    int in = open(path, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        return -1;
    }
    char buf[1 << 16];
    ssize_t n;
    int rc = 0;
    while ((n = read(in, buf, sizeof(buf))) > 0) {
        if (fk_write_all(out, buf, (size_t)n) != 0) {
            rc = -1;
            break;
        }
        if (md5) {
            EVP_DigestUpdate(md5, buf, (size_t)n);
        }
    }
    if (n < 0) {
        rc = -1;
    }
    close(in);
    return rc;
}

/* Text of <tag>…</tag> starting the search at *p (bounded by end); advances *p. */
static char *xml_next(const char **p, const char *end, const char *tag)
{
    char open_t[64], close_t[64];
    snprintf(open_t, sizeof(open_t), "<%s>", tag);
    snprintf(close_t, sizeof(close_t), "</%s>", tag);
    const char *s = memmem(*p, (size_t)(end - *p), open_t, strlen(open_t));
    if (!s) {
        return NULL;
    }
    s += strlen(open_t);
    const char *e = memmem(s, (size_t)(end - s), close_t, strlen(close_t));
    if (!e) {
        return NULL;
    }
    *p = e + strlen(close_t);
    /* Decode the entities a client may use (&quot; around ETags). */
    sl_buf b;
    sl_buf_init(&b, 1 << 16);
    for (const char *q = s; q < e; q++) {
        if (*q == '&') {
            static const struct {
                const char *ent;
                char ch;
            } ents[] = {{"&quot;", '"'}, {"&amp;", '&'},   {"&lt;", '<'},
                        {"&gt;", '>'},   {"&apos;", '\''}, {"&#34;", '"'}};
            int done = 0;
            for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]) && !done; i++) {
                size_t l = strlen(ents[i].ent);
                if ((size_t)(e - q) >= l && !memcmp(q, ents[i].ent, l)) {
                    sl_buf_putc(&b, ents[i].ch);
                    q += l - 1;
                    done = 1;
                }
            }
            if (!done) {
                sl_buf_free(&b);
                return NULL;
            }
        } else {
            sl_buf_putc(&b, *q);
        }
    }
    char *out = sl_buf_steal(&b);
    sl_buf_free(&b);
    return out ? out : strdup("");
}

static enum MHD_Result op_complete(struct MHD_Connection *c, struct s3r *r)
{
    const char *p = sl_buf_cstr(&r->mem);
    const char *end = p + r->mem.len;
    if (!strstr(p, "<CompleteMultipartUpload")) {
        return answer_error(c, r, 400, "MalformedXML",
                            "The XML you provided was not well-formed or did not validate against "
                            "our published schema");
    }
    int nums[10001];
    char etags[10001][40];
    int n = 0;
    for (;;) {
        const char *ps = memmem(p, (size_t)(end - p), "<Part>", 6);
        if (!ps) {
            break;
        }
        const char *pe = memmem(ps, (size_t)(end - ps), "</Part>", 7);
        if (!pe || n == 10000) {
            return answer_error(c, r, 400, "MalformedXML",
                                "The XML you provided was not "
                                "well-formed");
        }
        const char *q = ps;
        char *num = xml_next(&q, pe, "PartNumber");
        q = ps;
        char *etag = xml_next(&q, pe, "ETag");
        long v = 0;
        if (!num || !etag || fk_parse_long(num, 1, 10000, &v) != 0) {
            free(num);
            free(etag);
            return answer_error(c, r, 400, "MalformedXML",
                                "Each Part needs a PartNumber (1..10000) and an ETag");
        }
        nums[n] = (int)v;
        const char *ev = etag;
        size_t el = strlen(ev);
        if (el >= 2 && ev[0] == '"' && ev[el - 1] == '"') {
            ev++;
            el -= 2;
        }
        snprintf(etags[n], sizeof(etags[n]), "%.*s", (int)(el > 38 ? 38 : el), ev);
        free(num);
        free(etag);
        n++;
        p = pe + 7;
    }
    if (n == 0) {
        return answer_error(c, r, 400, "MalformedXML",
                            "The XML you provided was not well-formed (no Part)");
    }
    pthread_mutex_lock(&mu);
    n_complete_requests++;
    struct upload *u = find_upload(r->q_upload_id);
    if (!u || !upload_matches(u, r)) {
        pthread_mutex_unlock(&mu);
        return answer_error(c, r, 404, "NoSuchUpload",
                            "The specified upload does not exist. The upload ID may be invalid, or "
                            "the upload may have been aborted or completed.");
    }
    for (int i = 0; i < n; i++) {
        if (i > 0 && nums[i] <= nums[i - 1]) {
            pthread_mutex_unlock(&mu);
            return answer_error(c, r, 400, "InvalidPartOrder",
                                "The list of parts was not in ascending order. The parts list "
                                "must be specified in order by part number.");
        }
        struct part *pt = &u->parts[nums[i]];
        if (!pt->have || strcmp(pt->md5, etags[i]) != 0) {
            pthread_mutex_unlock(&mu);
            char m[256];
            snprintf(m, sizeof(m),
                     "One or more of the specified parts could not be found. The part may not "
                     "have been uploaded, or the specified entity tag may not match the part's "
                     "entity tag. (part %d)",
                     nums[i]);
            return answer_error(c, r, 400, "InvalidPart", m);
        }
        if (i + 1 < n && pt->size < (uint64_t)cfg.min_part) {
            pthread_mutex_unlock(&mu);
            char m[256];
            snprintf(m, sizeof(m),
                     "Your proposed upload is smaller than the minimum allowed size (part %d is "
                     "%llu bytes, minimum %ld)",
                     nums[i], (unsigned long long)pt->size, cfg.min_part);
            return answer_error(c, r, 400, "EntityTooSmall", m);
        }
    }
    if (cfg.fail_complete > 0 && n_completes_failed < (unsigned long)cfg.fail_complete) {
        n_completes_failed++;
        pthread_mutex_unlock(&mu);
        static const char doc[] =
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\n<Error><Code>InternalError</Code>"
            "<Message>We encountered an internal error. Please try again. (fake_s3 "
            "--fail-complete-200-error)</Message></Error>";
        fprintf(stderr, PROG ": 200 carrying InternalError for complete %s\n", r->raw);
        return answer(c, r, 200, doc, sizeof(doc) - 1, NULL);
    }
    char obj[PATH_MAX], tmp[PATH_MAX + 32], d[PATH_MAX], f[PATH_MAX + 16];
    if (obj_path(r->bucket, r->key, obj, sizeof(obj)) != 0) {
        pthread_mutex_unlock(&mu);
        return answer_error(c, r, 400, "KeyTooLongError", "Your key is too long (fake_s3 limit)");
    }
    snprintf(tmp, sizeof(tmp), "%s/.tmp/complete.%ld.%lu", cfg.dir, (long)getpid(), request_id);
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    upload_dir(u->id, d, sizeof(d));
    EVP_MD_CTX *all = EVP_MD_CTX_new();
    EVP_DigestInit_ex(all, EVP_md5(), NULL);
    int bad = out < 0;
    for (int i = 0; i < n && !bad; i++) {
        snprintf(f, sizeof(f), "%s/%d", d, nums[i]);
        bad = copy_file(out, f, NULL) != 0;
        unsigned char raw[16];
        for (int k = 0; k < 16; k++) {
            raw[k] = (unsigned char)(hexval(etags[i][2 * k]) * 16 + hexval(etags[i][2 * k + 1]));
        }
        EVP_DigestUpdate(all, raw, 16);
    }
    if (out >= 0 && close(out) != 0) {
        bad = 1;
    }
    if (bad || rename(tmp, obj) != 0) {
        unlink(tmp);
        EVP_MD_CTX_free(all);
        pthread_mutex_unlock(&mu);
        return answer_error(c, r, 500, "InternalError", "fake_s3 cannot write the object");
    }
    unsigned char md[16];
    unsigned int ml = 16;
    EVP_DigestFinal_ex(all, md, &ml);
    EVP_MD_CTX_free(all);
    char etag[64], mh[33];
    hexs(md, 16, mh);
    snprintf(etag, sizeof(etag), "\"%s-%d\"", mh, n);
    remove_upload(u);
    n_completed++;
    pthread_mutex_unlock(&mu);
    sl_buf b;
    sl_buf_init(&b, 1 << 20);
    sl_buf_puts(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult "
                    "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>");
    sl_buf_put_xml(&b, r->bucket);
    sl_buf_puts(&b, "</Bucket><Key>");
    sl_buf_put_xml(&b, r->key);
    sl_buf_puts(&b, "</Key><ETag>");
    sl_buf_put_xml(&b, etag);
    sl_buf_puts(&b, "</ETag></CompleteMultipartUploadResult>");
    enum MHD_Result rc = answer(c, r, 200, b.data, b.len, NULL);
    sl_buf_free(&b);
    return rc;
}

static enum MHD_Result op_abort(struct MHD_Connection *c, struct s3r *r)
{
    pthread_mutex_lock(&mu);
    struct upload *u = find_upload(r->q_upload_id);
    if (!u || !upload_matches(u, r)) {
        pthread_mutex_unlock(&mu);
        return answer_error(c, r, 404, "NoSuchUpload",
                            "The specified upload does not exist. The upload ID may be invalid, or "
                            "the upload may have been aborted or completed.");
    }
    remove_upload(u);
    n_aborted++;
    pthread_mutex_unlock(&mu);
    return answer(c, r, 204, "", 0, NULL);
}

static enum MHD_Result op_put(struct MHD_Connection *c, struct s3r *r, const char *md5hex)
{
    char obj[PATH_MAX];
    if (obj_path(r->bucket, r->key, obj, sizeof(obj)) != 0) {
        return answer_error(c, r, 400, "KeyTooLongError", "Your key is too long (fake_s3 limit)");
    }
    if (rename(r->tmp, obj) != 0) {
        return answer_error(c, r, 500, "InternalError", "fake_s3 cannot store the object");
    }
    r->tmp[0] = '\0';
    char etag[40];
    snprintf(etag, sizeof(etag), "\"%s\"", md5hex);
    return answer(c, r, 200, "", 0, etag);
}

static enum MHD_Result op_get(struct MHD_Connection *c, struct s3r *r)
{
    char obj[PATH_MAX];
    int fd =
        obj_path(r->bucket, r->key, obj, sizeof(obj)) == 0 ? open(obj, O_RDONLY | O_CLOEXEC) : -1;
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return answer_error(c, r, 404, "NoSuchKey", "The specified key does not exist.");
    }
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
    pthread_mutex_lock(&mu);
    n_status[200]++;
    pthread_mutex_unlock(&mu);
    enum MHD_Result rc = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result op_delete(struct MHD_Connection *c, struct s3r *r)
{
    char obj[PATH_MAX];
    if (obj_path(r->bucket, r->key, obj, sizeof(obj)) == 0) {
        unlink(obj);
    }
    return answer(c, r, 204, "", 0, NULL);
}

static char *name_decode(const char *n)
{
    return pct_decode(n, strlen(n));
}

static enum MHD_Result op_list(struct MHD_Connection *c, struct s3r *r)
{
    if (!r->q_list_type || strcmp(r->q_list_type, "2") != 0) {
        return answer_error(c, r, 501, "NotImplemented",
                            "this fake implements ListObjectsV2 only (list-type=2)");
    }
    long max_keys = 1000;
    if (r->q_max_keys && fk_parse_long(r->q_max_keys, 0, LONG_MAX, &max_keys) != 0) {
        return answer_error(c, r, 400, "InvalidArgument",
                            "Provided max-keys not an integer or "
                            "within integer range");
    }
    if (max_keys > 1000) {
        max_keys = 1000;
    }
    char *after = NULL;
    if (r->q_token) {
        size_t tl = strlen(r->q_token);
        after = malloc(tl / 2 + 1);
        int ok = tl % 2 == 0 && tl > 0;
        for (size_t i = 0; ok && i < tl / 2; i++) {
            int h = hexval(r->q_token[2 * i]), l = hexval(r->q_token[2 * i + 1]);
            ok = h >= 0 && l >= 0;
            after[i] = (char)(h * 16 + l);
        }
        if (!ok) {
            free(after);
            return answer_error(c, r, 400, "InvalidArgument",
                                "The continuation token provided is incorrect");
        }
        after[tl / 2] = '\0';
    } else if (r->q_start_after) {
        after = strdup(r->q_start_after);
    }
    const char *prefix = r->q_prefix ? r->q_prefix : "";
    char d[PATH_MAX];
    snprintf(d, sizeof(d), "%s/%s", cfg.dir, r->bucket);
    DIR *dir = opendir(d);
    size_t cap = 256, n = 0;
    char **keys = malloc(cap * sizeof(*keys));
    struct dirent *de;
    while (dir && (de = readdir(dir))) {
        if (de->d_name[0] == '.') {
            continue;
        }
        char *k = name_decode(de->d_name);
        if (!k || strncmp(k, prefix, strlen(prefix)) != 0 || (after && strcmp(k, after) <= 0)) {
            free(k);
            continue;
        }
        if (n == cap) {
            cap *= 2;
            keys = realloc(keys, cap * sizeof(*keys));
        }
        keys[n++] = k;
    }
    if (dir) {
        closedir(dir);
    }
    qsort(keys, n, sizeof(*keys), cmp_str);
    size_t shown = n < (size_t)max_keys ? n : (size_t)max_keys;
    int truncated = shown < n;
    sl_buf b;
    sl_buf_init(&b, 64 << 20);
    sl_buf_puts(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult "
                    "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>");
    sl_buf_put_xml(&b, r->bucket);
    sl_buf_puts(&b, "</Name><Prefix>");
    sl_buf_put_xml(&b, prefix);
    sl_buf_printf(&b, "</Prefix><KeyCount>%zu</KeyCount><MaxKeys>%ld</MaxKeys>", shown, max_keys);
    for (size_t i = 0; i < shown; i++) {
        char obj[PATH_MAX];
        struct stat st;
        long long size = 0;
        if (obj_path(r->bucket, keys[i], obj, sizeof(obj)) == 0 && stat(obj, &st) == 0) {
            size = (long long)st.st_size;
        }
        sl_buf_puts(&b, "<Contents><Key>");
        sl_buf_put_xml(&b, keys[i]);
        sl_buf_printf(&b,
                      "</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
                      "<ETag>&quot;fake&quot;</ETag><Size>%lld</Size>"
                      "<StorageClass>STANDARD</StorageClass></Contents>",
                      size);
    }
    sl_buf_printf(&b, "<IsTruncated>%s</IsTruncated>", truncated ? "true" : "false");
    if (r->q_token) {
        sl_buf_puts(&b, "<ContinuationToken>");
        sl_buf_put_xml(&b, r->q_token);
        sl_buf_puts(&b, "</ContinuationToken>");
    }
    if (truncated && shown > 0) {
        char *hx = malloc(strlen(keys[shown - 1]) * 2 + 1);
        hexs((const unsigned char *)keys[shown - 1], strlen(keys[shown - 1]), hx);
        sl_buf_printf(&b, "<NextContinuationToken>%s</NextContinuationToken>", hx);
        free(hx);
    }
    sl_buf_puts(&b, "</ListBucketResult>");
    for (size_t i = 0; i < n; i++) {
        free(keys[i]);
    }
    free(keys);
    free(after);
    enum MHD_Result rc = answer(c, r, 200, b.data, b.len, NULL);
    sl_buf_free(&b);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Control endpoints: stats, credentials (container URL and IMDSv2)          */

static void count_objects(unsigned long *objects, unsigned long long *bytes)
{
    *objects = 0;
    *bytes = 0;
    DIR *top = opendir(cfg.dir);
    struct dirent *de;
    while (top && (de = readdir(top))) {
        if (de->d_name[0] == '.') {
            continue;
        }
        char d[PATH_MAX];
        snprintf(d, sizeof(d), "%s/%s", cfg.dir, de->d_name);
        DIR *bd = opendir(d);
        struct dirent *oe;
        while (bd && (oe = readdir(bd))) {
            if (oe->d_name[0] == '.') {
                continue;
            }
            char f[PATH_MAX * 2];
            struct stat st;
            snprintf(f, sizeof(f), "%s/%s", d, oe->d_name);
            if (stat(f, &st) == 0 && S_ISREG(st.st_mode)) {
                (*objects)++;
                *bytes += (unsigned long long)st.st_size;
            }
        }
        if (bd) {
            closedir(bd);
        }
    }
    if (top) {
        closedir(top);
    }
}

static void stats_json(sl_buf *b)
{
    unsigned long objects;
    unsigned long long bytes;
    count_objects(&objects, &bytes);
    pthread_mutex_lock(&mu);
    unsigned long inprog = 0;
    for (struct upload *u = uploads; u; u = u->next) {
        inprog++;
    }
    sl_buf_puts(b, "{\"requests\":{");
    for (int k = 0; k < K_N; k++) {
        sl_buf_printf(b, "%s\"%s\":%lu", k ? "," : "", kind_names[k], n_kind[k]);
    }
    sl_buf_puts(b, "},\"status\":");
    static const unsigned always[] = {200, 204, 403, 500};
    fk_status_json(b, n_status, 600, always, 4);
    sl_buf_printf(b,
                  ",\"objects\":%lu,\"bytes\":%llu,\"uploads_in_progress\":%lu,"
                  "\"refusals\":%lu,\"bytes_received\":%llu,\"completed_uploads\":%lu,"
                  "\"aborted_uploads\":%lu,\"injected_part_failures\":%lu,"
                  "\"injected_complete_errors\":%lu}",
                  objects, bytes, inprog, n_refusals, (unsigned long long)bytes_received,
                  n_completed, n_aborted, n_parts_failed, n_completes_failed);
    pthread_mutex_unlock(&mu);
}

static void creds_json(sl_buf *b)
{
    time_t exp = time(NULL) + 3600;
    struct tm tm;
    gmtime_r(&exp, &tm);
    char ts[32];
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    sl_buf_puts(b, "{\"Code\":\"Success\",\"AccessKeyId\":\"");
    sl_json_escape(b, cfg.ak, strlen(cfg.ak));
    sl_buf_puts(b, "\",\"SecretAccessKey\":\"");
    sl_json_escape(b, cfg.sk, strlen(cfg.sk));
    sl_buf_puts(b, "\"");
    if (cfg.token) {
        sl_buf_puts(b, ",\"Token\":\"");
        sl_json_escape(b, cfg.token, strlen(cfg.token));
        sl_buf_puts(b, "\"");
    }
    sl_buf_printf(b, ",\"Expiration\":\"%s\"}", ts);
}

#define IMDS_TOKEN "fake-imds-token-0123456789"
#define IMDS_ROLE "fake-role"

static enum MHD_Result control(struct MHD_Connection *c, struct s3r *r, const char *m, int *done)
{
    const char *path = r->raw;
    *done = 1;
    sl_buf b;
    sl_buf_init(&b, 1 << 20);
    enum MHD_Result rc;
    if (!strcmp(path, "/_stats") && !strcmp(m, "GET")) {
        stats_json(&b);
        rc = fk_respond(c, 200, "application/json", b.data, b.len);
    } else if (!strcmp(path, "/_creds") && !strcmp(m, "GET")) {
        const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        if (cfg.creds_auth && (!a || strcmp(a, cfg.creds_auth) != 0)) {
            rc = fk_respond(c, 401, "text/plain", "unauthorized\n", 13);
        } else {
            creds_json(&b);
            rc = fk_respond(c, 200, "application/json", b.data, b.len);
        }
    } else if (!strcmp(path, "/latest/api/token") && !strcmp(m, "PUT")) {
        const char *ttl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-aws-ec2-metadata-token-ttl-seconds");
        rc = ttl ? fk_respond(c, 200, "text/plain", IMDS_TOKEN, strlen(IMDS_TOKEN))
                 : fk_respond(c, 400, "text/plain", "missing ttl\n", 12);
    } else if (!strncmp(path, "/latest/meta-data/iam/security-credentials/", 43) &&
               !strcmp(m, "GET")) {
        const char *t = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-aws-ec2-metadata-token");
        if (!t || strcmp(t, IMDS_TOKEN) != 0) {
            rc = fk_respond(c, 401, "text/plain", "", 0);
        } else if (path[43] == '\0') {
            rc = fk_respond(c, 200, "text/plain", IMDS_ROLE, strlen(IMDS_ROLE));
        } else if (!strcmp(path + 43, IMDS_ROLE)) {
            creds_json(&b);
            rc = fk_respond(c, 200, "application/json", b.data, b.len);
        } else {
            rc = fk_respond(c, 404, "text/plain", "", 0);
        }
    } else {
        *done = 0;
        rc = MHD_YES;
    }
    sl_buf_free(&b);
    return rc;
}

/* ------------------------------------------------------------------------ */

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)url;
    (void)version;
    struct s3r *r = *con_cls;
    if (!r) {
        return MHD_NO;
    }
    if (!r->started) {
        r->started = 1;
        if (!strncmp(r->raw, "/_", 2) || !strncmp(r->raw, "/latest/", 8)) {
            r->kind = K_N; /* a control request: answered once the body is read */
            return MHD_YES;
        }
        s3_begin(c, r, method);
        return MHD_YES;
    }
    if (*upload_size > 0) {
        size_t n = *upload_size;
        r->seen += n;
        if (r->kind != K_N) {
            EVP_DigestUpdate(r->sha, upload, n);
            if (r->fd >= 0) {
                EVP_DigestUpdate(r->md5, upload, n);
                if (fk_write_all(r->fd, upload, n) != 0) {
                    refuse(r, 500, "InternalError", "fake_s3 cannot write: %s", strerror(errno));
                }
            }
            if (r->keep_mem && sl_buf_append(&r->mem, upload, n) != 0) {
                refuse(r, 400, "MalformedXML", "The XML you provided is too large");
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->kind == K_N) {
        int done = 0;
        enum MHD_Result rc = control(c, r, method, &done);
        if (done) {
            return rc;
        }
        return fk_respond(c, 404, "text/plain", "no such control endpoint\n", 25);
    }
    pthread_mutex_lock(&mu);
    bytes_received += r->seen;
    pthread_mutex_unlock(&mu);
    if (r->status) {
        return answer_error(c, r, r->status, r->code, r->msg);
    }
    unsigned char md[32];
    unsigned int ml = 32;
    char sha[65], md5hex[33];
    EVP_DigestFinal_ex(r->sha, md, &ml);
    hexs(md, 32, sha);
    ml = 16;
    EVP_DigestFinal_ex(r->md5, md, &ml);
    hexs(md, 16, md5hex);
    if (strcmp(r->payload_hash, "UNSIGNED-PAYLOAD") != 0 && strcmp(r->payload_hash, sha) != 0) {
        char m[300];
        snprintf(m, sizeof(m),
                 "The provided 'x-amz-content-sha256' header does not match what was computed "
                 "(client %s, computed %s)",
                 r->payload_hash, sha);
        return answer_error(c, r, 400, "XAmzContentSHA256Mismatch", m);
    }
    if (r->fd >= 0) {
        int bad = close(r->fd) != 0;
        r->fd = -1;
        if (bad) {
            return answer_error(c, r, 500, "InternalError", "fake_s3 cannot close a body file");
        }
    }
    switch (r->kind) {
    case K_CREATE:
        return op_create(c, r);
    case K_PART:
        return op_part(c, r, md5hex);
    case K_COMPLETE:
        return op_complete(c, r);
    case K_ABORT:
        return op_abort(c, r);
    case K_PUT:
        return op_put(c, r, md5hex);
    case K_GET:
        return op_get(c, r);
    case K_DELETE:
        return op_delete(c, r);
    case K_LIST:
        return op_list(c, r);
    default:
        return answer_error(c, r, 501, "NotImplemented", "not implemented");
    }
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    s3r_free(*con_cls);
    *con_cls = NULL;
}

static int mkdir_p(const char *p)
{
    return mkdir(p, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

int main(int argc, char **argv)
{
    long port = -1;
    const char *port_file = NULL;
    const char *buckets[64];
    int nb = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && (i++, 1))
        if (ARG("--port")) {
            if (fk_parse_long(v, 0, 65535, &port) != 0) {
                fk_die_usage(PROG, USAGE, "--port: not a port: %s", v);
            }
        } else if (ARG("--port-file")) {
            port_file = v;
        } else if (ARG("--dir")) {
            cfg.dir = v;
        } else if (ARG("--bucket")) {
            if (nb == 64 || !*v || strchr(v, '/') || v[0] == '.') {
                fk_die_usage(PROG, USAGE, "--bucket: bad or too many: %s", v);
            }
            buckets[nb++] = v;
        } else if (ARG("--access-key")) {
            cfg.ak = v;
        } else if (ARG("--secret-key")) {
            cfg.sk = v;
        } else if (ARG("--region")) {
            cfg.region = v;
        } else if (ARG("--session-token")) {
            cfg.token = v;
        } else if (ARG("--creds-auth")) {
            cfg.creds_auth = v;
        } else if (ARG("--min-part")) {
            if (fk_parse_long(v, 0, LONG_MAX, &cfg.min_part) != 0) {
                fk_die_usage(PROG, USAGE, "--min-part: not a size in bytes: %s", v);
            }
        } else if (ARG("--fail-part")) {
            if (fk_parse_long(v, 1, LONG_MAX, &cfg.fail_part) != 0) {
                fk_die_usage(PROG, USAGE, "--fail-part: not a positive number: %s", v);
            }
        } else if (ARG("--fail-complete-200-error")) {
            if (fk_parse_long(v, 1, LONG_MAX, &cfg.fail_complete) != 0) {
                fk_die_usage(PROG, USAGE, "--fail-complete-200-error: not a positive number: %s",
                             v);
            }
        } else {
            fk_die_usage(PROG, USAGE, "unknown or incomplete option: %s", a);
        }
#undef ARG
    }
    if (port < 0 || !cfg.dir || nb == 0) {
        fk_die_usage(PROG, USAGE, "--port, --dir and at least one --bucket are required");
    }
    char p[PATH_MAX];
    int bad = mkdir_p(cfg.dir);
    snprintf(p, sizeof(p), "%s/.tmp", cfg.dir);
    bad |= mkdir_p(p);
    snprintf(p, sizeof(p), "%s/.uploads", cfg.dir);
    bad |= mkdir_p(p);
    for (int i = 0; i < nb; i++) {
        snprintf(p, sizeof(p), "%s/%s", cfg.dir, buckets[i]);
        bad |= mkdir_p(p);
    }
    if (bad) {
        fprintf(stderr, PROG ": cannot create folders under %s: %s\n", cfg.dir, strerror(errno));
        return 1;
    }
    return fk_serve_uri(PROG, port, port_file, handler, completed, NULL, uri_log, NULL, stats_json);
}
