/* Amazon S3 client: see include/sluice/s3.h for the contract.
 *
 * Signing is libcurl's (CURLOPT_AWS_SIGV4). libcurl 7.88 takes the canonical
 * query string and path exactly as they appear in the URL, so every URL built
 * here is already canonical: the key URI-encoded the AWS way ('/' kept), query
 * parameters sorted by name, every value encoded, a bare flag written
 * "uploads=". The payload hash is ours (OpenSSL SHA-256 of the body, sent as
 * x-amz-content-sha256, which curl signs and uses as the payload hash), and
 * every body goes with a Content-Length (CURLOPT_POSTFIELDS), never chunked. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <zlib.h>

#include "sluice/buf.h"
#include "sluice/error.h"
#include "sluice/log.h"
#include "sluice/s3.h"
#include "util/retry.h"

#define S3_RESP_MAX ((size_t)8 << 20) /* an answer's body kept (a list page is ~300 KB) */
#define S3_CRED_RESP_MAX ((size_t)64 << 10)
#define S3_DEFAULT_PART ((size_t)8 << 20)
#define S3_MAX_PART ((size_t)5 << 30)
#define S3_KEY_MAX 1024
#define S3_CRED_REFRESH_S 300 /* refresh temporary credentials this long before they expire */
#define LOGP "s3"

/* ------------------------------------------------------------------------ */
/* Global init (once per process, never cleaned up; see net/http.c)          */

static pthread_once_t s3_curl_once = PTHREAD_ONCE_INIT;
static CURLcode s3_curl_rc = CURLE_OK;

static void s3_curl_init(void)
{
    s3_curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ------------------------------------------------------------------------ */
/* Encoding helpers                                                          */

static int aws_unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~';
}

/* AWS SigV4 URI encoding of n bytes: unreserved kept, '/' kept when keep_slash,
 * everything else %XX (upper-case hex). */
static int aws_encode(sl_buf *b, const char *s, size_t n, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (aws_unreserved(c) || (keep_slash && c == '/')) {
            if (sl_buf_putc(b, (char)c) != 0) {
                return -1;
            }
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            if (sl_buf_append(b, e, 3) != 0) {
                return -1;
            }
        }
    }
    return 0;
}

static void hex_of(const unsigned char *d, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[2 * n] = '\0';
}

static int sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
        return -1;
    }
    hex_of(md, 32, out);
    return 0;
}

/* XML character data -> text: the five named entities and &#N; / &#xH;
 * (as UTF-8). Returns a malloc'd string or NULL (bad entity, no memory). */
static char *xml_decode(const char *p, size_t n)
{
    char *out = malloc(n + 1);
    if (!out) {
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (p[i] != '&') {
            out[o++] = p[i++];
            continue;
        }
        const char *semi = memchr(p + i, ';', n - i);
        if (!semi) {
            goto bad;
        }
        size_t el = (size_t)(semi - (p + i)) + 1; /* "&...;" */
        const char *e = p + i + 1;
        size_t en = el - 2;
        unsigned long cp = 0;
        if (en == 3 && !memcmp(e, "amp", 3)) {
            out[o++] = '&';
        } else if (en == 2 && !memcmp(e, "lt", 2)) {
            out[o++] = '<';
        } else if (en == 2 && !memcmp(e, "gt", 2)) {
            out[o++] = '>';
        } else if (en == 4 && !memcmp(e, "quot", 4)) {
            out[o++] = '"';
        } else if (en == 4 && !memcmp(e, "apos", 4)) {
            out[o++] = '\'';
        } else if (en >= 2 && e[0] == '#') {
            int base = (e[1] == 'x' || e[1] == 'X') ? 16 : 10;
            size_t k = base == 16 ? 2 : 1;
            if (k >= en) {
                goto bad;
            }
            for (; k < en; k++) {
                int d = isdigit((unsigned char)e[k]) ? e[k] - '0'
                        : base == 16 && isxdigit((unsigned char)e[k])
                            ? (tolower((unsigned char)e[k]) - 'a' + 10)
                            : -1;
                if (d < 0 || cp > 0x10FFFF) {
                    goto bad;
                }
                cp = cp * (unsigned long)base + (unsigned long)d;
            }
            if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
                goto bad;
            }
            /* UTF-8 is never longer than the entity text (>= 4 bytes "&#N;"). */
            if (cp < 0x80) {
                out[o++] = (char)cp;
            } else if (cp < 0x800) {
                out[o++] = (char)(0xC0 | (cp >> 6));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out[o++] = (char)(0xE0 | (cp >> 12));
                out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            } else {
                out[o++] = (char)(0xF0 | (cp >> 18));
                out[o++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            }
        } else {
            goto bad;
        }
        i += el;
    }
    out[o] = '\0';
    return out;
bad:
    free(out);
    return NULL;
}

/* Find the first element <tag> (or <tag attr...>) in [p, end); *vs and *ve bound
 * its content. An empty element <tag/> gives an empty content. Character
 * data never holds a raw '<', so a plain search cannot match inside a
 * value. Returns 1 when found. */
static int xml_find(const char *p, const char *end, const char *tag, const char **vs,
                    const char **ve)
{
    size_t tl = strlen(tag);
    while (p < end) {
        const char *lt = memchr(p, '<', (size_t)(end - p));
        if (!lt || (size_t)(end - lt) < tl + 2) {
            return 0;
        }
        if (!memcmp(lt + 1, tag, tl)) {
            const char *q = lt + 1 + tl;
            if (*q == '>' || *q == ' ' || *q == '/' || *q == '\t' || *q == '\r' || *q == '\n') {
                const char *gt = memchr(q, '>', (size_t)(end - q));
                if (!gt) {
                    return 0;
                }
                if (gt[-1] == '/') {
                    *vs = *ve = gt + 1;
                    return 1;
                }
                const char *c = gt + 1;
                for (const char *s = c; s < end;) {
                    const char *l2 = memchr(s, '<', (size_t)(end - s));
                    if (!l2 || (size_t)(end - l2) < tl + 3) {
                        return 0;
                    }
                    if (l2[1] == '/' && !memcmp(l2 + 2, tag, tl) && l2[2 + tl] == '>') {
                        *vs = c;
                        *ve = l2;
                        return 1;
                    }
                    s = l2 + 1;
                }
                return 0;
            }
        }
        p = lt + 1;
    }
    return 0;
}

/* Decoded text of the first <tag> in [p, end), malloc'd; NULL when absent. */
static char *xml_text(const char *p, const char *end, const char *tag)
{
    const char *vs, *ve;
    if (!xml_find(p, end, tag, &vs, &ve)) {
        return NULL;
    }
    return xml_decode(vs, (size_t)(ve - vs));
}

/* ------------------------------------------------------------------------ */
/* URL parsing                                                               */

static int bucket_valid(const char *b, size_t n)
{
    if (n < 3 || n > 63) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        if (!(islower(c) || isdigit(c) || c == '-' || c == '.')) {
            return 0;
        }
        if (c == '.' && i + 1 < n && b[i + 1] == '.') {
            return 0;
        }
    }
    return isalnum((unsigned char)b[0]) && isalnum((unsigned char)b[n - 1]);
}

int sl_s3_url_parse(const char *url, char *bucket, size_t bucket_cap, char *key, size_t key_cap,
                    sl_error *err)
{
    if (!url || strncasecmp(url, "s3://", 5) != 0) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "S3 URL '%.200s': expected s3://bucket/prefix/ (scheme s3://)",
                            url ? url : "(null)");
    }
    for (const char *c = url; *c; c++) {
        if ((unsigned char)*c < 0x20 || *c == 0x7f) {
            return sl_error_set(err, SL_ERR_CONFIG,
                                "S3 URL '%.200s': control character at offset %zu", url,
                                (size_t)(c - url));
        }
    }
    const char *b = url + 5;
    const char *slash = strchr(b, '/');
    size_t bn = slash ? (size_t)(slash - b) : strlen(b);
    if (bn == 0) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "S3 URL '%.200s': no bucket name (expected s3://bucket/prefix/)", url);
    }
    if (!bucket_valid(b, bn)) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "S3 URL '%.200s': invalid bucket name '%.*s' (expected 3-63 "
                            "characters: lower-case letters, digits, '-' and '.', starting "
                            "and ending with a letter or digit)",
                            url, (int)(bn > 80 ? 80 : bn), b);
    }
    const char *k = slash ? slash + 1 : "";
    size_t kn = strlen(k);
    if (kn > S3_KEY_MAX) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "S3 URL '%.200s': key prefix of %zu bytes (S3 keys are at most %d)",
                            url, kn, S3_KEY_MAX);
    }
    if (bn + 1 > bucket_cap || kn + 1 > key_cap) {
        return sl_error_set(err, SL_ERR_LIMIT, "S3 URL '%.200s': bucket or key too long", url);
    }
    memcpy(bucket, b, bn);
    bucket[bn] = '\0';
    memcpy(key, k, kn + 1);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The client                                                                */

enum cred_source { CRED_ENV, CRED_CONTAINER, CRED_IMDS };

struct sl_s3 {
    char region[64];
    char endpoint[512]; /* SLUICE_S3_ENDPOINT without a trailing '/', or "" */
    sl_retry_policy rp;
    long connect_timeout_ms;
    long timeout_ms;
    pthread_mutex_t mu; /* guards the credentials (a gzip stream's thread reads them too) */
    enum cred_source src;
    char *akid, *secret, *token;
    time_t expires; /* 0 = do not expire */
    CURL *e;        /* handle for calls made on the caller's thread */
    uint64_t rng;
};

static void cred_clear(sl_s3 *s)
{
    free(s->akid);
    free(s->secret);
    free(s->token);
    s->akid = s->secret = s->token = NULL;
}

static int cred_set(sl_s3 *s, const char *akid, const char *secret, const char *token)
{
    cred_clear(s);
    s->akid = strdup(akid);
    s->secret = strdup(secret);
    s->token = token && *token ? strdup(token) : NULL;
    if (!s->akid || !s->secret || (token && *token && !s->token)) {
        cred_clear(s);
        return -1;
    }
    /* A value under 4 bytes cannot be registered; it is never printed anyway. */
    sl_secret_register(secret);
    if (token && *token) {
        sl_secret_register(token);
    }
    return 0;
}

static size_t buf_write(char *p, size_t sz, size_t n, void *ud)
{
    sl_buf *b = ud;
    size_t len = sz * n;
    if (b->len + len > b->max) { /* keep what fits; the rest is not needed */
        size_t room = b->max - b->len;
        if (room > 0) {
            sl_buf_append(b, p, room);
        }
        return len;
    }
    return sl_buf_append(b, p, len) == 0 ? len : 0;
}

/* One plain GET/PUT for the credential endpoints: status and body. */
static int cred_http(const char *method, const char *url, struct curl_slist *hdrs, long timeout_ms,
                     sl_buf *body, long *status, char *why, size_t why_cap)
{
    CURL *e = curl_easy_init();
    if (!e) {
        snprintf(why, why_cap, "cannot create a libcurl handle");
        return -1;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    sl_buf_reset(body);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms * 2);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, buf_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "sluice/" SLUICE_VERSION);
    if (!strcmp(method, "PUT")) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    }
    CURLcode rc = curl_easy_perform(e);
    *status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(e);
    if (rc != CURLE_OK) {
        snprintf(why, why_cap, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
        return -1;
    }
    return 0;
}

/* "2024-01-02T03:04:05Z" -> time_t; 0 when absent or not understood. */
static time_t parse_iso8601(const char *v)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!v || sscanf(v, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6) {
        return 0;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return timegm(&tm);
}

/* The credentials JSON of both the container endpoint and IMDS. */
static int cred_from_json(sl_s3 *s, const sl_buf *body, const char *where, sl_error *err)
{
    json_error_t je;
    json_t *j = json_loadb(body->data ? body->data : "", body->len, 0, &je);
    const char *ak = j ? json_string_value(json_object_get(j, "AccessKeyId")) : NULL;
    const char *sk = j ? json_string_value(json_object_get(j, "SecretAccessKey")) : NULL;
    const char *tk = j ? json_string_value(json_object_get(j, "Token")) : NULL;
    const char *ex = j ? json_string_value(json_object_get(j, "Expiration")) : NULL;
    int rc = 0;
    if (!ak || !sk || !*ak || !*sk) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "S3 credentials from %s: expected a JSON object with AccessKeyId and "
                          "SecretAccessKey (got %s)",
                          where, j ? "an object without them" : "no JSON");
    } else if (cred_set(s, ak, sk, tk) != 0) {
        rc = sl_error_set(err, SL_ERR_NOMEM, "S3 credentials: out of memory");
    } else {
        s->expires = parse_iso8601(ex);
    }
    json_decref(j);
    return rc;
}

static int cred_container(sl_s3 *s, sl_error *err)
{
    const char *full = getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    const char *rel = getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    char url[1024];
    if (full && *full) {
        snprintf(url, sizeof(url), "%s", full);
    } else {
        snprintf(url, sizeof(url), "http://169.254.170.2%s", rel);
    }
    struct curl_slist *h = NULL;
    char auth[4096] = "";
    const char *tok = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN");
    const char *tokfile = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    if (tokfile && *tokfile) {
        FILE *f = fopen(tokfile, "r");
        if (f) {
            size_t n = fread(auth + 15, 1, sizeof(auth) - 16, f);
            fclose(f);
            auth[15 + n] = '\0';
            memcpy(auth, "Authorization: ", 15);
            auth[strcspn(auth, "\r\n")] = '\0';
        }
    } else if (tok && *tok) {
        snprintf(auth, sizeof(auth), "Authorization: %s", tok);
    }
    if (auth[0]) {
        sl_secret_register(auth + 15);
        h = curl_slist_append(h, auth);
    }
    sl_buf body;
    sl_buf_init(&body, S3_CRED_RESP_MAX);
    long status = 0;
    char why[CURL_ERROR_SIZE + 64];
    int rc = 0;
    for (int attempt = 1;; attempt++) {
        if (cred_http("GET", url, h, 2000, &body, &status, why, sizeof(why)) == 0 &&
            status == 200) {
            rc = cred_from_json(s, &body, "the container credentials endpoint", err);
            break;
        }
        if (status != 0 && status < 500 && status != 429) {
            snprintf(why, sizeof(why), "HTTP %ld", status);
        }
        if ((status == 0 || status >= 500 || status == 429) && attempt < 3) {
            sl_retry_sleep_ms(sl_retry_delay_ms(&s->rp, attempt, -1, &s->rng), NULL);
            continue;
        }
        rc = sl_error_set(err, SL_ERR_IO,
                          "S3 credentials: the container credentials endpoint "
                          "(AWS_CONTAINER_CREDENTIALS_%s_URI) failed: %s",
                          full && *full ? "FULL" : "RELATIVE", why);
        break;
    }
    curl_slist_free_all(h);
    sl_buf_free(&body);
    return rc;
}

static int cred_imds(sl_s3 *s, sl_error *err)
{
    const char *ep = getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    char base[512];
    snprintf(base, sizeof(base), "%s", ep && *ep ? ep : "http://169.254.169.254");
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/') {
        base[--bl] = '\0';
    }
    char url[1024], why[CURL_ERROR_SIZE + 64] = "", hdr[256];
    sl_buf body;
    sl_buf_init(&body, S3_CRED_RESP_MAX);
    struct curl_slist *h = NULL;
    long status = 0;
    int rc = 0;
    char *token = NULL, *role = NULL;

    snprintf(url, sizeof(url), "%s/latest/api/token", base);
    h = curl_slist_append(NULL, "X-aws-ec2-metadata-token-ttl-seconds: 21600");
    if (cred_http("PUT", url, h, 1000, &body, &status, why, sizeof(why)) != 0 || status != 200 ||
        body.len == 0 || body.len > 200) {
        if (!why[0]) {
            snprintf(why, sizeof(why), "token request answered HTTP %ld", status);
        }
        goto fail;
    }
    token = strdup(body.data);
    curl_slist_free_all(h);
    snprintf(hdr, sizeof(hdr), "X-aws-ec2-metadata-token: %s", token ? token : "");
    h = curl_slist_append(NULL, hdr);
    snprintf(url, sizeof(url), "%s/latest/meta-data/iam/security-credentials/", base);
    if (cred_http("GET", url, h, 1000, &body, &status, why, sizeof(why)) != 0 || status != 200 ||
        body.len == 0) {
        if (!why[0]) {
            snprintf(why, sizeof(why), "role list answered HTTP %ld (no instance role?)", status);
        }
        goto fail;
    }
    body.data[strcspn(body.data, "\r\n")] = '\0';
    role = strdup(body.data);
    sl_buf bu;
    sl_buf_init(&bu, 1024);
    sl_buf_printf(&bu, "%s/latest/meta-data/iam/security-credentials/", base);
    aws_encode(&bu, role ? role : "", role ? strlen(role) : 0, 0);
    int hr = cred_http("GET", sl_buf_cstr(&bu), h, 1000, &body, &status, why, sizeof(why));
    sl_buf_free(&bu);
    if (hr != 0 || status != 200) {
        if (!why[0]) {
            snprintf(why, sizeof(why), "role credentials answered HTTP %ld", status);
        }
        goto fail;
    }
    rc = cred_from_json(s, &body, "the instance metadata service (IMDSv2)", err);
    goto done;
fail:
    rc = sl_error_set(err, SL_ERR_IO,
                      "S3: no AWS credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not "
                      "set, no container credentials URI is set, and the instance metadata "
                      "service at %s gave none (%s)",
                      base, why);
done:
    free(token);
    free(role);
    curl_slist_free_all(h);
    sl_buf_free(&body);
    return rc;
}

/* Load or refresh the credentials (s->mu held). */
static int cred_load(sl_s3 *s, sl_error *err)
{
    const char *ak = getenv("AWS_ACCESS_KEY_ID");
    const char *sk = getenv("AWS_SECRET_ACCESS_KEY");
    if (ak && *ak && sk && *sk) {
        s->src = CRED_ENV;
        s->expires = 0;
        if (cred_set(s, ak, sk, getenv("AWS_SESSION_TOKEN")) != 0) {
            return sl_error_set(err, SL_ERR_NOMEM, "S3 credentials: out of memory");
        }
        return 0;
    }
    if ((ak && *ak) != (sk && *sk)) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "S3 credentials: %s is set but %s is not (set both, or neither to "
                            "use a container or instance role)",
                            ak && *ak ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                            ak && *ak ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
    }
    const char *full = getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    const char *rel = getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    if ((full && *full) || (rel && *rel)) {
        s->src = CRED_CONTAINER;
        return cred_container(s, err);
    }
    const char *off = getenv("AWS_EC2_METADATA_DISABLED");
    if (off && !strcasecmp(off, "true")) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "S3: no AWS credentials: set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, or AWS_CONTAINER_CREDENTIALS_FULL_URI "
                            "(the instance metadata service is disabled by "
                            "AWS_EC2_METADATA_DISABLED)");
    }
    s->src = CRED_IMDS;
    return cred_imds(s, err);
}

/* Copy the current credentials (refreshed when they expire within 5 min). */
static int cred_get(sl_s3 *s, char **ak, char **sk, char **tk, sl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (!s->akid || (s->expires && time(NULL) + S3_CRED_REFRESH_S >= s->expires)) {
        rc = cred_load(s, err);
    }
    if (rc == 0) {
        *ak = strdup(s->akid);
        *sk = strdup(s->secret);
        *tk = s->token ? strdup(s->token) : NULL;
        if (!*ak || !*sk || (s->token && !*tk)) {
            rc = sl_error_set(err, SL_ERR_NOMEM, "S3 credentials: out of memory");
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static long env_long(const char *name, long dflt, long lo, long hi)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        return dflt;
    }
    char *end = NULL;
    long x = strtol(v, &end, 10);
    return (end && *end == '\0' && x >= lo && x <= hi) ? x : dflt;
}

int sl_s3_open(sl_s3 **out, const char *region, sl_error *err)
{
    *out = NULL;
    pthread_once(&s3_curl_once, s3_curl_init);
    if (s3_curl_rc != CURLE_OK) {
        return sl_error_set(err, SL_ERR, "S3: libcurl initialisation failed: %s",
                            curl_easy_strerror(s3_curl_rc));
    }
    curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
    if (!vi || vi->version_num < 0x074B00) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "S3: libcurl %s has no AWS SigV4 signing (7.75 or later needed)",
                            vi ? vi->version : "?");
    }
    if (!region || !*region) {
        region = getenv("AWS_REGION");
    }
    if (!region || !*region) {
        region = getenv("AWS_DEFAULT_REGION");
    }
    if (!region || !*region) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "S3: no region: give one, or set AWS_REGION (or AWS_DEFAULT_REGION)");
    }
    for (const char *c = region; *c; c++) {
        if (!(islower((unsigned char)*c) || isdigit((unsigned char)*c) || *c == '-')) {
            return sl_error_set(err, SL_ERR_CONFIG,
                                "S3: region '%.64s' is not a region name (e.g. us-east-1)", region);
        }
    }
    sl_s3 *s = calloc(1, sizeof(*s));
    if (!s || strlen(region) >= sizeof(s->region)) {
        free(s);
        return sl_error_set(err, s ? SL_ERR_CONFIG : SL_ERR_NOMEM, "S3: region too long");
    }
    snprintf(s->region, sizeof(s->region), "%s", region);
    const char *ep = getenv("SLUICE_S3_ENDPOINT");
    if (ep && *ep) {
        if (strncmp(ep, "http://", 7) != 0 && strncmp(ep, "https://", 8) != 0) {
            free(s);
            return sl_error_set(err, SL_ERR_CONFIG,
                                "S3: SLUICE_S3_ENDPOINT '%.200s' is not an http:// or https:// URL",
                                ep);
        }
        if (strlen(ep) >= sizeof(s->endpoint)) {
            free(s);
            return sl_error_set(err, SL_ERR_CONFIG, "S3: SLUICE_S3_ENDPOINT too long");
        }
        snprintf(s->endpoint, sizeof(s->endpoint), "%s", ep);
        size_t n = strlen(s->endpoint);
        while (n > 0 && s->endpoint[n - 1] == '/') {
            s->endpoint[--n] = '\0';
        }
    }
    sl_retry_policy_default(&s->rp);
    /* Test knobs (documented in docs/net/s3.md): fewer and shorter retries. */
    s->rp.max_attempts = (int)env_long("SLUICE_S3_MAX_ATTEMPTS", s->rp.max_attempts, 1, 100);
    s->rp.base_ms = env_long("SLUICE_S3_BACKOFF_MS", (long)s->rp.base_ms, 1, 600000);
    s->connect_timeout_ms = 10000;
    s->timeout_ms = 600000;
    s->rng = sl_retry_seed(s);
    pthread_mutex_init(&s->mu, NULL);
    s->e = curl_easy_init();
    if (!s->e) {
        sl_s3_close(s);
        return sl_error_set(err, SL_ERR_NOMEM, "S3: cannot create a libcurl handle");
    }
    pthread_mutex_lock(&s->mu);
    int rc = cred_load(s, err);
    pthread_mutex_unlock(&s->mu);
    if (rc != 0) {
        sl_s3_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void sl_s3_close(sl_s3 *s)
{
    if (!s) {
        return;
    }
    if (s->e) {
        curl_easy_cleanup(s->e);
    }
    cred_clear(s);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ------------------------------------------------------------------------ */
/* One request, with retries                                                 */

typedef struct s3_req {
    const char *method; /* GET PUT POST DELETE */
    const char *bucket;
    const char *key;   /* "" or NULL: the bucket itself */
    const char *query; /* canonical (sorted, encoded) or NULL */
    const void *body;
    size_t len;
    const char *content_type;
    int error_in_200; /* a 200 may carry an <Error> (CompleteMultipartUpload) */
    int ok_404;       /* 404 is an answer, not an error (DeleteObject is 204 anyway) */
    int part;         /* part number for messages, or 0 */
} s3_req;

typedef struct s3_resp {
    long status;
    sl_buf body;
    char etag[128];
} s3_resp;

static size_t hdr_cb(char *p, size_t sz, size_t n, void *ud)
{
    s3_resp *r = ud;
    size_t len = sz * n;
    if (len > 5 && !strncasecmp(p, "ETag:", 5)) {
        const char *v = p + 5;
        const char *end = p + len;
        while (v < end && (*v == ' ' || *v == '\t')) {
            v++;
        }
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) {
            end--;
        }
        size_t vl = (size_t)(end - v);
        if (vl < sizeof(r->etag)) {
            memcpy(r->etag, v, vl);
            r->etag[vl] = '\0';
        }
    }
    return len;
}

static int s3_url(const sl_s3 *s, const s3_req *rq, sl_buf *u)
{
    const char *key = rq->key ? rq->key : "";
    int rc = 0;
    if (s->endpoint[0]) {
        rc |= sl_buf_printf(u, "%s/%s/", s->endpoint, rq->bucket);
    } else if (strchr(rq->bucket, '.')) { /* dotted names break virtual-host TLS */
        rc |= sl_buf_printf(u, "https://s3.%s.amazonaws.com/%s/", s->region, rq->bucket);
    } else {
        rc |= sl_buf_printf(u, "https://%s.s3.%s.amazonaws.com/", rq->bucket, s->region);
    }
    rc |= aws_encode(u, key, strlen(key), 1);
    if (rq->query && *rq->query) {
        rc |= sl_buf_putc(u, '?');
        rc |= sl_buf_puts(u, rq->query);
    }
    return rc ? -1 : 0;
}

/* Does the body hold an <Error> document? Fill code/message when so. */
static int s3_error_doc(const sl_buf *b, char *code, size_t code_cap, char *msg, size_t msg_cap)
{
    const char *p = b->data ? b->data : "";
    const char *end = p + b->len;
    const char *vs, *ve;
    code[0] = msg[0] = '\0';
    /* The root element: skip the XML declaration and whitespace. */
    const char *root = p;
    while (root < end) {
        const char *lt = memchr(root, '<', (size_t)(end - root));
        if (!lt || lt + 1 >= end) {
            return 0;
        }
        if (lt[1] == '?' || lt[1] == '!') {
            root = lt + 1;
            continue;
        }
        root = lt;
        break;
    }
    if (root >= end || !xml_find(root, end, "Error", &vs, &ve) || vs - root > 64) {
        return 0;
    }
    char *c = xml_text(vs, ve, "Code");
    char *m = xml_text(vs, ve, "Message");
    snprintf(code, code_cap, "%s", c ? c : "");
    snprintf(msg, msg_cap, "%s", m ? m : "");
    free(c);
    free(m);
    return 1;
}

static int retryable_code(const char *code)
{
    return !strcmp(code, "InternalError") || !strcmp(code, "SlowDown") ||
           !strcmp(code, "ServiceUnavailable") || !strcmp(code, "RequestTimeout") ||
           !strcmp(code, "RequestTimeTooSkewed");
}

static int s3_do(sl_s3 *s, CURL *e, uint64_t *rng, const s3_req *rq, s3_resp *rs, sl_error *err)
{
    char sha[65];
    char where[S3_KEY_MAX + 128];
    int wl = snprintf(where, sizeof(where), "S3 %s s3://%s/%.*s", rq->method, rq->bucket,
                      S3_KEY_MAX, rq->key ? rq->key : "");
    if (rq->part > 0 && wl > 0 && (size_t)wl < sizeof(where)) {
        snprintf(where + wl, sizeof(where) - (size_t)wl, " (part %d)", rq->part);
    }
    if (sha256_hex(rq->body ? rq->body : "", rq->len, sha) != 0) {
        return sl_error_set(err, SL_ERR, "%s: SHA-256 failed", where);
    }
    sl_buf url;
    sl_buf_init(&url, 8192);
    if (s3_url(s, rq, &url) != 0) {
        sl_buf_free(&url);
        return sl_error_set(err, SL_ERR_LIMIT, "%s: URL too long", where);
    }
    char sigv4[128];
    snprintf(sigv4, sizeof(sigv4), "aws:amz:%s:s3", s->region);
    int rc = 0;
    for (int attempt = 1;; attempt++) {
        char *ak = NULL, *sk = NULL, *tk = NULL;
        struct curl_slist *h = NULL;
        char line[4096], errbuf[CURL_ERROR_SIZE] = "";
        if ((rc = cred_get(s, &ak, &sk, &tk, err)) != 0) {
            sl_error_prefix(err, "%s", where);
            break;
        }
        snprintf(line, sizeof(line), "x-amz-content-sha256: %s", sha);
        h = curl_slist_append(h, line);
        if (tk) {
            snprintf(line, sizeof(line), "x-amz-security-token: %s", tk);
            h = curl_slist_append(h, line);
        }
        if (rq->body) {
            snprintf(line, sizeof(line), "Content-Type: %s",
                     rq->content_type ? rq->content_type : "application/octet-stream");
            h = curl_slist_append(h, line);
        }
        /* No "Expect:" line to turn 100-continue off: libcurl 7.88 signs that
         * empty header without sending it, and S3 refuses the signature. */
        curl_easy_reset(e);
        sl_buf_reset(&rs->body);
        rs->etag[0] = '\0';
        rs->status = 0;
        curl_easy_setopt(e, CURLOPT_URL, sl_buf_cstr(&url));
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, s->timeout_ms);
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(e, CURLOPT_USERAGENT, "sluice/" SLUICE_VERSION);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(e, CURLOPT_AWS_SIGV4, sigv4);
        curl_easy_setopt(e, CURLOPT_USERNAME, ak);
        curl_easy_setopt(e, CURLOPT_PASSWORD, sk);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, buf_write);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &rs->body);
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, hdr_cb);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, rs);
        if (rq->body) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->len);
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, rq->body);
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST,
                             strcmp(rq->method, "POST") ? rq->method : NULL);
        } else if (strcmp(rq->method, "GET") != 0) {
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, rq->method);
        }
        CURLcode cc = curl_easy_perform(e);
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &rs->status);
        int64_t retry_after = -1;
        struct curl_header *hh = NULL;
        if (cc == CURLE_OK &&
            curl_easy_header(e, "Retry-After", 0, CURLH_HEADER, -1, &hh) == CURLHE_OK && hh) {
            retry_after = sl_retry_after_ms(hh->value, time(NULL));
        }
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
        curl_easy_setopt(e, CURLOPT_USERNAME, NULL);
        curl_easy_setopt(e, CURLOPT_PASSWORD, NULL);
        curl_slist_free_all(h);
        if (sk) {
            OPENSSL_cleanse(sk, strlen(sk));
        }
        free(ak);
        free(sk);
        free(tk);

        int retry = 0;
        char code[128], msg[512];
        if (cc != CURLE_OK) {
            rc = sl_error_set(err, SL_ERR_IO, "%s: %s", where,
                              errbuf[0] ? errbuf : curl_easy_strerror(cc));
            retry = 1;
        } else if (rs->status >= 200 && rs->status < 300) {
            if (rq->error_in_200 && s3_error_doc(&rs->body, code, sizeof(code), msg, sizeof(msg))) {
                rc = sl_error_set(err, SL_ERR_IO, "%s: HTTP %ld carrying an error: %s: %s", where,
                                  rs->status, code, msg);
                retry = retryable_code(code);
            } else {
                rc = 0;
                break;
            }
        } else if (rq->ok_404 && rs->status == 404) {
            rc = 0;
            break;
        } else {
            int doc = s3_error_doc(&rs->body, code, sizeof(code), msg, sizeof(msg));
            if (!doc || !code[0]) {
                snprintf(code, sizeof(code), "(no S3 error document)");
            }
            rc = sl_error_set(err, rs->status == 404 ? SL_ERR_INPUT : SL_ERR_IO,
                              "%s: HTTP %ld %s%s%s", where, rs->status, code, msg[0] ? ": " : "",
                              doc ? msg : "");
            retry = rs->status == 429 || rs->status >= 500 || rs->status == 408 ||
                    (doc && retryable_code(code));
        }
        if (!retry || !sl_retry_more(&s->rp, attempt)) {
            if (retry && attempt > 1) {
                sl_error_prefix(err, "after %d attempts", attempt);
            }
            break;
        }
        int64_t wait = sl_retry_delay_ms(&s->rp, attempt, retry_after, rng);
        sl_warn(LOGP, "%s (attempt %d), retry in %.1fs", err ? err->msg : where, attempt,
                (double)wait / 1000.0);
        sl_retry_sleep_ms(wait, NULL);
    }
    sl_buf_free(&url);
    return rc;
}

static void resp_init(s3_resp *r)
{
    memset(r, 0, sizeof(*r));
    sl_buf_init(&r->body, S3_RESP_MAX);
}

static int key_check(const char *bucket, const char *key, sl_error *err)
{
    if (!bucket || !bucket_valid(bucket, strlen(bucket))) {
        return sl_error_set(err, SL_ERR_USAGE, "S3: invalid bucket name '%.80s'",
                            bucket ? bucket : "(null)");
    }
    if (key && strlen(key) > S3_KEY_MAX) {
        return sl_error_set(err, SL_ERR_USAGE, "S3 s3://%s/%.100s...: key longer than %d bytes",
                            bucket, key, S3_KEY_MAX);
    }
    return 0;
}

int sl_s3_put(sl_s3 *s, const char *bucket, const char *key, const void *data, size_t len,
              const char *content_type, sl_error *err)
{
    if (key_check(bucket, key, err) != 0) {
        return err ? err->code : SL_ERR_USAGE;
    }
    s3_req rq = {.method = "PUT",
                 .bucket = bucket,
                 .key = key,
                 .body = data ? data : "",
                 .len = len,
                 .content_type = content_type};
    s3_resp rs;
    resp_init(&rs);
    int rc = s3_do(s, s->e, &s->rng, &rq, &rs, err);
    sl_buf_free(&rs.body);
    return rc;
}

int sl_s3_delete(sl_s3 *s, const char *bucket, const char *key, sl_error *err)
{
    if (key_check(bucket, key, err) != 0) {
        return err ? err->code : SL_ERR_USAGE;
    }
    s3_req rq = {.method = "DELETE", .bucket = bucket, .key = key, .ok_404 = 1};
    s3_resp rs;
    resp_init(&rs);
    int rc = s3_do(s, s->e, &s->rng, &rq, &rs, err);
    sl_buf_free(&rs.body);
    return rc;
}

int sl_s3_list(sl_s3 *s, const char *bucket, const char *prefix,
               int (*fn)(void *ud, const char *key, int64_t size), void *ud, sl_error *err)
{
    if (key_check(bucket, prefix, err) != 0) {
        return err ? err->code : SL_ERR_USAGE;
    }
    char *token = NULL;
    sl_buf q;
    sl_buf_init(&q, 8192);
    s3_resp rs;
    resp_init(&rs);
    int rc = 0;
    for (;;) {
        sl_buf_reset(&q);
        /* Sorted by name: continuation-token, list-type, prefix. */
        if (token) {
            sl_buf_puts(&q, "continuation-token=");
            aws_encode(&q, token, strlen(token), 0);
            sl_buf_putc(&q, '&');
        }
        sl_buf_puts(&q, "list-type=2&prefix=");
        if (aws_encode(&q, prefix ? prefix : "", prefix ? strlen(prefix) : 0, 0) != 0) {
            rc = sl_error_set(err, SL_ERR_LIMIT, "S3 list s3://%s/: query too long", bucket);
            break;
        }
        s3_req rq = {.method = "GET", .bucket = bucket, .key = "", .query = sl_buf_cstr(&q)};
        if ((rc = s3_do(s, s->e, &s->rng, &rq, &rs, err)) != 0) {
            break;
        }
        const char *p = rs.body.data ? rs.body.data : "";
        const char *end = p + rs.body.len;
        const char *vs, *ve;
        if (!xml_find(p, end, "ListBucketResult", &vs, &ve)) {
            rc = sl_error_set(err, SL_ERR_INPUT,
                              "S3 GET s3://%s/%s: expected a ListBucketResult document", bucket,
                              prefix ? prefix : "");
            break;
        }
        const char *cur = vs;
        int stop = 0;
        const char *cs, *ce;
        while (!stop && xml_find(cur, ve, "Contents", &cs, &ce)) {
            char *k = xml_text(cs, ce, "Key");
            char *sz = xml_text(cs, ce, "Size");
            char *endp = NULL;
            long long size = sz ? strtoll(sz, &endp, 10) : -1;
            if (!k || !sz || !endp || *endp != '\0' || size < 0) {
                free(k);
                free(sz);
                rc = sl_error_set(err, SL_ERR_INPUT,
                                  "S3 GET s3://%s/%s: a Contents entry without a valid Key and "
                                  "Size",
                                  bucket, prefix ? prefix : "");
                stop = 1;
                break;
            }
            stop = fn(ud, k, (int64_t)size) != 0;
            free(k);
            free(sz);
            cur = ce;
        }
        if (rc != 0 || stop) {
            break;
        }
        /* The top-level fields follow the last Contents (or there are none). */
        char *trunc = xml_text(cur, ve, "IsTruncated");
        int more = trunc && !strcmp(trunc, "true");
        free(trunc);
        free(token);
        token = NULL;
        if (!more) {
            break;
        }
        token = xml_text(vs, ve, "NextContinuationToken");
        if (!token || !*token) {
            rc = sl_error_set(err, SL_ERR_INPUT,
                              "S3 GET s3://%s/%s: IsTruncated without a NextContinuationToken",
                              bucket, prefix ? prefix : "");
            break;
        }
    }
    free(token);
    sl_buf_free(&q);
    sl_buf_free(&rs.body);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Multipart upload                                                          */

struct sl_s3_upload {
    sl_s3 *s;
    char *bucket, *key, *id;
    char *qid; /* the upload id, URI-encoded for the query */
    int nparts;
    char (*etags)[80]; /* one per part, as S3 answered (quoted) */
    int etag_cap;
    CURL *e; /* the thread uploading parts owns it */
    uint64_t rng;
};

static void upload_free(sl_s3_upload *u)
{
    if (!u) {
        return;
    }
    if (u->e) {
        curl_easy_cleanup(u->e);
    }
    free(u->bucket);
    free(u->key);
    free(u->id);
    free(u->qid);
    free(u->etags);
    free(u);
}

int sl_s3_upload_begin(sl_s3 *s, const char *bucket, const char *key, sl_s3_upload **out,
                       sl_error *err)
{
    *out = NULL;
    if (key_check(bucket, key, err) != 0) {
        return err ? err->code : SL_ERR_USAGE;
    }
    if (!key || !*key) {
        return sl_error_set(err, SL_ERR_USAGE, "S3 upload to s3://%s/: empty key", bucket);
    }
    sl_s3_upload *u = calloc(1, sizeof(*u));
    if (!u || !(u->bucket = strdup(bucket)) || !(u->key = strdup(key)) ||
        !(u->e = curl_easy_init())) {
        upload_free(u);
        return sl_error_set(err, SL_ERR_NOMEM, "S3 upload: out of memory");
    }
    u->s = s;
    u->rng = sl_retry_seed(u);
    s3_req rq = {.method = "POST",
                 .bucket = bucket,
                 .key = key,
                 .query = "uploads=",
                 .body = "",
                 .len = 0,
                 .content_type = "application/octet-stream"};
    s3_resp rs;
    resp_init(&rs);
    int rc = s3_do(s, u->e, &u->rng, &rq, &rs, err);
    if (rc == 0) {
        const char *p = rs.body.data ? rs.body.data : "";
        u->id = xml_text(p, p + rs.body.len, "UploadId");
        if (!u->id || !*u->id) {
            rc = sl_error_set(err, SL_ERR_INPUT,
                              "S3 POST s3://%s/%s?uploads: expected an "
                              "InitiateMultipartUploadResult with an UploadId",
                              bucket, key);
        }
    }
    if (rc == 0) {
        sl_buf q;
        sl_buf_init(&q, 4096);
        if (aws_encode(&q, u->id, strlen(u->id), 0) != 0) {
            rc = sl_error_set(err, SL_ERR_LIMIT, "S3 upload s3://%s/%s: upload id too long", bucket,
                              key);
        }
        u->qid = sl_buf_steal(&q);
        sl_buf_free(&q);
    }
    sl_buf_free(&rs.body);
    if (rc != 0) {
        upload_free(u);
        return rc;
    }
    *out = u;
    return 0;
}

int sl_s3_upload_part(sl_s3_upload *u, const void *data, size_t len, sl_error *err)
{
    if (u->nparts >= SL_S3_MAX_PARTS) {
        return sl_error_set(err, SL_ERR_LIMIT,
                            "S3 upload s3://%s/%s: more than %d parts (make the parts larger)",
                            u->bucket, u->key, SL_S3_MAX_PARTS);
    }
    if (len > S3_MAX_PART) {
        return sl_error_set(err, SL_ERR_LIMIT,
                            "S3 upload s3://%s/%s: part of %zu bytes (max 5 GiB)", u->bucket,
                            u->key, len);
    }
    if (u->nparts == u->etag_cap) {
        int nc = u->etag_cap ? u->etag_cap * 2 : 64;
        void *ne = realloc(u->etags, (size_t)nc * sizeof(*u->etags));
        if (!ne) {
            return sl_error_set(err, SL_ERR_NOMEM, "S3 upload: out of memory");
        }
        u->etags = ne;
        u->etag_cap = nc;
    }
    int n = u->nparts + 1;
    char qbuf[4096];
    if ((size_t)snprintf(qbuf, sizeof(qbuf), "partNumber=%d&uploadId=%s", n, u->qid) >=
        sizeof(qbuf)) {
        return sl_error_set(err, SL_ERR_LIMIT, "S3 upload: upload id too long");
    }
    s3_req rq = {.method = "PUT",
                 .bucket = u->bucket,
                 .key = u->key,
                 .query = qbuf,
                 .body = data ? data : "",
                 .len = len,
                 .content_type = "application/octet-stream",
                 .part = n};
    s3_resp rs;
    resp_init(&rs);
    int rc = s3_do(u->s, u->e, &u->rng, &rq, &rs, err);
    if (rc == 0 && (!rs.etag[0] || strlen(rs.etag) >= sizeof(u->etags[0]))) {
        rc = sl_error_set(err, SL_ERR_INPUT, "S3 PUT s3://%s/%s (part %d): answer without an ETag",
                          u->bucket, u->key, n);
    }
    if (rc == 0) {
        memcpy(u->etags[u->nparts], rs.etag, strlen(rs.etag) + 1); /* length checked above */
        u->nparts = n;
    }
    sl_buf_free(&rs.body);
    return rc;
}

int sl_s3_upload_complete(sl_s3_upload *u, sl_error *err)
{
    if (u->nparts == 0) {
        int rc = sl_error_set(err, SL_ERR_USAGE, "S3 upload s3://%s/%s: complete without any part",
                              u->bucket, u->key);
        sl_s3_upload_abort(u);
        return rc;
    }
    sl_buf b;
    sl_buf_init(&b, (size_t)u->nparts * 160 + 256);
    int brc = sl_buf_puts(&b, "<CompleteMultipartUpload "
                              "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (int i = 0; i < u->nparts; i++) {
        brc |= sl_buf_printf(&b, "<Part><PartNumber>%d</PartNumber><ETag>", i + 1);
        brc |= sl_buf_put_xml(&b, u->etags[i]);
        brc |= sl_buf_puts(&b, "</ETag></Part>");
    }
    brc |= sl_buf_puts(&b, "</CompleteMultipartUpload>");
    char qbuf[4096];
    snprintf(qbuf, sizeof(qbuf), "uploadId=%s", u->qid);
    int rc;
    if (brc != 0) {
        rc = sl_error_set(err, SL_ERR_NOMEM, "S3 upload: out of memory");
    } else {
        s3_req rq = {.method = "POST",
                     .bucket = u->bucket,
                     .key = u->key,
                     .query = qbuf,
                     .body = b.data,
                     .len = b.len,
                     .content_type = "application/xml",
                     .error_in_200 = 1};
        s3_resp rs;
        resp_init(&rs);
        rc = s3_do(u->s, u->e, &u->rng, &rq, &rs, err);
        sl_buf_free(&rs.body);
    }
    sl_buf_free(&b);
    if (rc != 0) {
        sl_s3_upload_abort(u); /* the parts would otherwise be kept (and billed) */
        return rc;
    }
    upload_free(u);
    return 0;
}

void sl_s3_upload_abort(sl_s3_upload *u)
{
    if (!u) {
        return;
    }
    char qbuf[4096];
    snprintf(qbuf, sizeof(qbuf), "uploadId=%s", u->qid);
    s3_req rq = {
        .method = "DELETE", .bucket = u->bucket, .key = u->key, .query = qbuf, .ok_404 = 1};
    s3_resp rs;
    resp_init(&rs);
    sl_error e2;
    sl_error_clear(&e2);
    if (s3_do(u->s, u->e, &u->rng, &rq, &rs, &e2) != 0) {
        sl_warn(LOGP, "abort: %s (the parts stay until a bucket lifecycle rule removes them)",
                e2.msg);
    }
    sl_buf_free(&rs.body);
    upload_free(u);
}

/* ------------------------------------------------------------------------ */
/* Gzip stream                                                               */

/* Two buffers of part_size: the caller's thread compresses into one while a
 * worker thread uploads the other, so compression and network overlap;
 * memory stays 2 x part_size. */
struct sl_s3_gzip {
    sl_s3_upload *u;
    z_stream z;
    int z_ok;
    size_t part_size;
    unsigned char *buf[2];
    int cur; /* buffer being filled */
    uint64_t raw, gz;

    pthread_t th;
    int th_ok;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int busy;       /* the worker holds a part */
    size_t job_len; /* its length */
    int job_buf;    /* which buffer */
    int quit;
    int failed; /* a part failed: err2 says why */
    sl_error err2;
};

static void *gz_worker(void *arg)
{
    sl_s3_gzip *g = arg;
    pthread_mutex_lock(&g->mu);
    for (;;) {
        while (!g->busy && !g->quit) {
            pthread_cond_wait(&g->cv, &g->mu);
        }
        if (!g->busy && g->quit) {
            break;
        }
        int b = g->job_buf;
        size_t len = g->job_len;
        pthread_mutex_unlock(&g->mu);
        sl_error e;
        sl_error_clear(&e);
        int rc = sl_s3_upload_part(g->u, g->buf[b], len, &e);
        pthread_mutex_lock(&g->mu);
        if (rc != 0 && !g->failed) {
            g->failed = 1;
            g->err2 = e;
        }
        g->busy = 0;
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

/* Wait until the worker is idle; its failure, if any, into err. */
static int gz_wait(sl_s3_gzip *g, sl_error *err)
{
    pthread_mutex_lock(&g->mu);
    while (g->busy) {
        pthread_cond_wait(&g->cv, &g->mu);
    }
    int failed = g->failed;
    if (failed && err) {
        *err = g->err2;
    }
    pthread_mutex_unlock(&g->mu);
    return failed ? (err && err->code ? err->code : SL_ERR_IO) : 0;
}

/* Hand the current buffer (len bytes) to the worker and switch buffers. */
static int gz_ship(sl_s3_gzip *g, size_t len, sl_error *err)
{
    int rc = gz_wait(g, err);
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&g->mu);
    g->job_buf = g->cur;
    g->job_len = len;
    g->busy = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    g->cur ^= 1;
    g->z.next_out = g->buf[g->cur];
    g->z.avail_out = (uInt)g->part_size;
    return 0;
}

static void gz_free(sl_s3_gzip *g)
{
    if (!g) {
        return;
    }
    if (g->th_ok) {
        pthread_mutex_lock(&g->mu);
        g->quit = 1;
        pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
        pthread_join(g->th, NULL);
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv);
    }
    if (g->z_ok) {
        deflateEnd(&g->z);
    }
    free(g->buf[0]);
    free(g->buf[1]);
    free(g);
}

int sl_s3_gzip_open(sl_s3 *s, const char *bucket, const char *key, size_t part_size,
                    sl_s3_gzip **out, sl_error *err)
{
    *out = NULL;
    if (part_size == 0) {
        part_size = S3_DEFAULT_PART;
    }
    if (part_size > ((size_t)1 << 30)) {
        return sl_error_set(err, SL_ERR_USAGE, "S3 gzip stream: part size %zu over 1 GiB",
                            part_size);
    }
    sl_s3_gzip *g = calloc(1, sizeof(*g));
    if (!g) {
        return sl_error_set(err, SL_ERR_NOMEM, "S3 gzip stream: out of memory");
    }
    g->part_size = part_size;
    g->buf[0] = malloc(part_size);
    g->buf[1] = malloc(part_size);
    if (!g->buf[0] || !g->buf[1]) {
        gz_free(g);
        return sl_error_set(err, SL_ERR_NOMEM, "S3 gzip stream: cannot allocate 2 x %zu bytes",
                            part_size);
    }
    if (deflateInit2(&g->z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        gz_free(g);
        return sl_error_set(err, SL_ERR_NOMEM, "S3 gzip stream: deflateInit2 failed");
    }
    g->z_ok = 1;
    g->z.next_out = g->buf[0];
    g->z.avail_out = (uInt)part_size;
    int rc = sl_s3_upload_begin(s, bucket, key, &g->u, err);
    if (rc != 0) {
        gz_free(g);
        return rc;
    }
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    if (pthread_create(&g->th, NULL, gz_worker, g) != 0) {
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv);
        sl_s3_upload_abort(g->u);
        gz_free(g);
        return sl_error_set(err, SL_ERR, "S3 gzip stream: cannot start the upload thread: %s",
                            strerror(errno));
    }
    g->th_ok = 1;
    *out = g;
    return 0;
}

/* Run deflate with flush over the pending input, shipping full buffers. */
static int gz_pump(sl_s3_gzip *g, int flush, sl_error *err)
{
    for (;;) {
        int zr = deflate(&g->z, flush);
        if (zr == Z_STREAM_ERROR) {
            return sl_error_set(err, SL_ERR, "S3 gzip stream s3://%s/%s: deflate failed",
                                g->u->bucket, g->u->key);
        }
        if (g->z.avail_out == 0) {
            int rc = gz_ship(g, g->part_size, err);
            if (rc != 0) {
                return rc;
            }
            g->gz += g->part_size;
            continue;
        }
        if (flush == Z_FINISH ? zr == Z_STREAM_END : g->z.avail_in == 0) {
            return 0;
        }
    }
}

int sl_s3_gzip_write(sl_s3_gzip *g, const void *data, size_t len, sl_error *err)
{
    const unsigned char *p = data;
    while (len > 0) {
        uInt chunk = len > (1u << 30) ? (1u << 30) : (uInt)len;
        g->z.next_in = (unsigned char *)p;
        g->z.avail_in = chunk;
        int rc = gz_pump(g, Z_NO_FLUSH, err);
        if (rc != 0) {
            return rc;
        }
        g->raw += chunk;
        p += chunk;
        len -= chunk;
    }
    return 0;
}

int sl_s3_gzip_finish(sl_s3_gzip *g, uint64_t *raw_bytes, uint64_t *gz_bytes, sl_error *err)
{
    g->z.next_in = NULL;
    g->z.avail_in = 0;
    int rc = gz_pump(g, Z_FINISH, err);
    if (rc == 0) {
        size_t tail = g->part_size - g->z.avail_out;
        if (tail > 0) {
            rc = gz_ship(g, tail, err);
            g->gz += tail;
        }
    }
    if (rc == 0) {
        rc = gz_wait(g, err);
    }
    if (rc != 0) {
        gz_wait(g, NULL);
        sl_s3_upload_abort(g->u);
        gz_free(g);
        return rc;
    }
    rc = sl_s3_upload_complete(g->u, err);
    if (rc == 0) {
        if (raw_bytes) {
            *raw_bytes = g->raw;
        }
        if (gz_bytes) {
            *gz_bytes = g->gz;
        }
    }
    gz_free(g);
    return rc;
}

void sl_s3_gzip_abort(sl_s3_gzip *g)
{
    if (!g) {
        return;
    }
    gz_wait(g, NULL);
    sl_s3_upload_abort(g->u);
    gz_free(g);
}
