/* Logging and secret redaction. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/buf.h"
#include "sluice/json.h"
#include "sluice/log.h"

int sl_log_level = SL_LOG_INFO;
static int log_json;

/* A long-running `serve` may register secrets per job; redaction is linear
 * in their count, so crossing this many is reported once. */
#define MAX_SECRETS 4096
/* Shortest secret worth redacting: shorter ones would redact ordinary text. */
#define SECRET_MIN 4
/* Shortest base64 fragment registered for a secret inside a longer base64
 * text: shorter fragments are common in ordinary words. */
#define B64_FRAGMENT_MIN 6

/* Every form a secret may be printed in (as given, percent-encoded,
 * JSON-escaped, base64 at each alignment) is one entry; the list is kept
 * longest first, so a secret that contains another is masked whole. */
typedef struct secret {
    char *s;
    size_t len;
} secret;

static pthread_mutex_t secrets_mu = PTHREAD_MUTEX_INITIALIZER;
static secret *secrets;
static size_t nsecrets, nbase;
static unsigned char first_byte[256]; /* 1 when some secret starts with it */

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void sl_log_set_json(int on)
{
    log_json = on;
}

/* Insert one form (len >= 1), keeping the list sorted by length, longest
 * first; duplicates are dropped. Caller holds the lock. */
static void add_form(const char *v, size_t len)
{
    if (len == 0) {
        return;
    }
    size_t at = 0;
    while (at < nsecrets && secrets[at].len > len) {
        at++;
    }
    for (size_t i = at; i < nsecrets && secrets[i].len == len; i++) {
        if (memcmp(secrets[i].s, v, len) == 0) {
            return;
        }
    }
    secret *n = realloc(secrets, (nsecrets + 1) * sizeof(*n));
    if (!n) {
        return;
    }
    secrets = n;
    char *copy = malloc(len + 1);
    if (!copy) {
        return;
    }
    memcpy(copy, v, len);
    copy[len] = '\0';
    memmove(secrets + at + 1, secrets + at, (nsecrets - at) * sizeof(*secrets));
    secrets[at].s = copy;
    secrets[at].len = len;
    nsecrets++;
    first_byte[(unsigned char)v[0]] = 1;
}

static int unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Percent-encoded as a URL component: hex upper or lower case, and the form
 * encoding's '+' for a space. */
static void add_percent(const char *v, size_t len, int lower, int plus)
{
    static const char up[] = "0123456789ABCDEF", lo[] = "0123456789abcdef";
    const char *hex = lower ? lo : up;
    sl_buf b = {0};
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if (unreserved(c)) {
            sl_buf_putc(&b, (char)c);
        } else if (plus && c == ' ') {
            sl_buf_putc(&b, '+');
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            sl_buf_append(&b, e, 3);
        }
    }
    if (b.data) {
        add_form(b.data, b.len);
    }
    sl_buf_free(&b);
}

/* Decode one UTF-8 sequence at v[i]; returns its length (0 if invalid). */
static size_t utf8_cp(const unsigned char *v, size_t n, size_t i, unsigned *cp)
{
    unsigned c = v[i];
    size_t k = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
    if (k == 0 || i + k > n) {
        return 0;
    }
    unsigned x = c & (0x3f >> (k - 1));
    for (size_t j = 1; j < k; j++) {
        if ((v[i + j] & 0xc0) != 0x80) {
            return 0;
        }
        x = (x << 6) | (v[i + j] & 0x3f);
    }
    *cp = x;
    return k;
}

/* JSON-escaped, as servers echo it: '"', '\\' and control characters
 * escaped; optionally '/' as "\/" (PHP, some Java) and non-ASCII as \uXXXX
 * (Python's ensure_ascii; lower or upper case hex). */
static void add_json(const char *v, size_t len, int slash, int ascii, int upper)
{
    sl_buf b = {0};
    const unsigned char *u = (const unsigned char *)v;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = u[i];
        char e[16];
        unsigned cp;
        size_t k;
        if (c == '"' || c == '\\') {
            e[0] = '\\';
            e[1] = (char)c;
            sl_buf_append(&b, e, 2);
        } else if (c == '/' && slash) {
            sl_buf_append(&b, "\\/", 2);
        } else if (c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f') {
            e[0] = '\\';
            e[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : c == '\b' ? 'b' : 'f';
            sl_buf_append(&b, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(e, sizeof(e), upper ? "\\u%04X" : "\\u%04x", c);
            sl_buf_append(&b, e, 6);
        } else if (c >= 0x80 && ascii && (k = utf8_cp(u, len, i, &cp)) > 0) {
            if (cp >= 0x10000) {
                cp -= 0x10000;
                snprintf(e, sizeof(e), upper ? "\\u%04X\\u%04X" : "\\u%04x\\u%04x",
                         0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
                sl_buf_append(&b, e, 12);
            } else {
                snprintf(e, sizeof(e), upper ? "\\u%04X" : "\\u%04x", cp);
                sl_buf_append(&b, e, 6);
            }
            i += k - 1;
        } else {
            sl_buf_putc(&b, (char)c);
        }
    }
    if (b.data) {
        add_form(b.data, b.len);
    }
    sl_buf_free(&b);
}

/* The secret inside any base64 text: it may start at any of the three byte
 * positions of a base64 group, so encode it after 0, 1 and 2 filler bytes and
 * keep only the characters made of its own bits alone. Standard and URL-safe
 * alphabets. */
static void add_base64(const char *v, size_t len)
{
    static const char std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char *in = malloc(len + 2);
    char *out = malloc(4 * ((len + 2 + 2) / 3) + 1);
    if (!in || !out) {
        goto done;
    }
    for (size_t o = 0; o < 3; o++) {
        memset(in, 0, o);
        memcpy(in + o, v, len);
        size_t n = o + len, k = 0;
        for (size_t i = 0; i < n; i += 3) {
            unsigned x = (unsigned)in[i] << 16;
            x |= i + 1 < n ? (unsigned)in[i + 1] << 8 : 0;
            x |= i + 2 < n ? (unsigned)in[i + 2] : 0;
            for (int j = 0; j < 4; j++) {
                out[k++] = std[(x >> (18 - 6 * j)) & 63];
            }
        }
        /* char i holds bits [6i, 6i + 6); the secret's are [8o, 8(o + len)) */
        size_t from = (8 * o + 5) / 6, to = 8 * (o + len) / 6;
        if (to > from && to - from >= B64_FRAGMENT_MIN) {
            add_form(out + from, to - from);
            int urlsafe = 0;
            for (size_t i = from; i < to; i++) {
                if (out[i] == '+' || out[i] == '/') {
                    out[i] = out[i] == '+' ? '-' : '_';
                    urlsafe = 1;
                }
            }
            if (urlsafe) {
                add_form(out + from, to - from);
            }
        }
    }
done:
    free(in);
    free(out);
}

int sl_secret_register(const char *value)
{
    if (!value) {
        return -1;
    }
    size_t len = strlen(value);
    if (len < SECRET_MIN) {
        return -1;
    }
    pthread_mutex_lock(&secrets_mu);
    size_t before = nsecrets;
    add_form(value, len);
    if (nsecrets != before) {
        if (++nbase == MAX_SECRETS + 1) {
            /* still registered (redaction never stops), but worth knowing:
             * every log line pays for each one */
            fprintf(stderr, "sluice: more than %d distinct secret values registered\n",
                    MAX_SECRETS);
        }
        add_percent(value, len, 0, 0);
        add_percent(value, len, 1, 0);
        add_percent(value, len, 0, 1);
        add_json(value, len, 0, 0, 0);
        add_json(value, len, 1, 0, 0);
        add_json(value, len, 0, 1, 0);
        add_json(value, len, 1, 1, 0);
        add_json(value, len, 0, 1, 1);
        add_base64(value, len);
    }
    pthread_mutex_unlock(&secrets_mu);
    return 0;
}

void sl_secrets_clear(void)
{
    pthread_mutex_lock(&secrets_mu);
    for (size_t i = 0; i < nsecrets; i++) {
        free(secrets[i].s);
    }
    free(secrets);
    secrets = NULL;
    nsecrets = nbase = 0;
    memset(first_byte, 0, sizeof(first_byte));
    pthread_mutex_unlock(&secrets_mu);
}

/* One pass, left to right: at each position the longest form that matches
 * is replaced, so a secret containing another is masked whole and the mark
 * itself is never matched again. */
char *sl_redact(char *s, size_t cap)
{
    static const char mark[] = "[redacted]";
    const size_t mlen = sizeof(mark) - 1;
    if (!s || cap == 0) {
        return s;
    }
    pthread_mutex_lock(&secrets_mu);
    if (nsecrets == 0) {
        pthread_mutex_unlock(&secrets_mu);
        return s;
    }
    size_t n = strnlen(s, cap - 1);
    s[n] = '\0';
    char *out = NULL;
    size_t o = 0;
    size_t last = 0; /* bytes of s before i already copied to out */
    for (size_t i = 0; i < n;) {
        size_t hit = 0;
        if (first_byte[(unsigned char)s[i]]) {
            for (size_t k = 0; k < nsecrets; k++) {
                if (secrets[k].len <= n - i && s[i] == secrets[k].s[0] &&
                    memcmp(s + i, secrets[k].s, secrets[k].len) == 0) {
                    hit = secrets[k].len;
                    break;
                }
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        if (!out) {
            out = malloc(cap);
            if (!out) {
                /* cannot rewrite: cut the text before the secret */
                s[i] = '\0';
                break;
            }
        }
        size_t chunk = i - last;
        if (o + chunk > cap - 1) {
            chunk = cap - 1 - o;
        }
        memcpy(out + o, s + last, chunk);
        o += chunk;
        size_t m = o + mlen > cap - 1 ? cap - 1 - o : mlen;
        memcpy(out + o, mark, m);
        o += m;
        i += hit;
        last = i;
    }
    if (out) {
        size_t chunk = n - last;
        if (o + chunk > cap - 1) {
            chunk = cap - 1 - o;
        }
        memcpy(out + o, s + last, chunk);
        o += chunk;
        memcpy(s, out, o);
        s[o] = '\0';
        free(out);
    }
    pthread_mutex_unlock(&secrets_mu);
    return s;
}

void sl_log_vwrite(int level, const char *prefix, const char *fmt, va_list ap)
{
    char msg[2048];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    sl_redact(msg, sizeof(msg));

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(ts.tv_nsec / 1000000) % 1000);
    const char *lv = level_names[level < 0 ? 0 : level > 3 ? 3 : level];

    if (log_json) {
        sl_buf b = {0};
        sl_jw w;
        sl_jw_init(&w, &b);
        sl_jw_obj_open(&w);
        sl_jw_keyz(&w, "ts");
        sl_jw_str(&w, when, strlen(when));
        sl_jw_keyz(&w, "level");
        sl_jw_str(&w, lv, strlen(lv));
        if (prefix) {
            sl_jw_keyz(&w, "component");
            sl_jw_str(&w, prefix, strlen(prefix));
        }
        sl_jw_keyz(&w, "msg");
        sl_jw_str(&w, msg, strlen(msg));
        sl_jw_obj_close(&w);
        sl_buf_putc(&b, '\n');
        fputs(sl_buf_cstr(&b), stderr);
        sl_buf_free(&b);
    } else if (prefix) {
        fprintf(stderr, "%s %-5s [%s] %s\n", when, lv, prefix, msg);
    } else {
        fprintf(stderr, "%s %-5s %s\n", when, lv, msg);
    }
}

void sl_log_write(int level, const char *prefix, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sl_log_vwrite(level, prefix, fmt, ap);
    va_end(ap);
}
