/* The one URL parser and redactor (see include/sluice/url.h). */
#include "sluice/url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sluice/log.h"

#define MASK "[redacted]"
#define URL_SHOW_MAX 512

static int scheme_char(char c, int first)
{
    int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    return first ? alpha : alpha || (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.';
}

size_t sl_url_scheme_len(const char *s)
{
    size_t n = 0;
    while (s[n] && scheme_char(s[n], n == 0)) {
        n++;
    }
    return n > 0 && strncmp(s + n, "://", 3) == 0 ? n : 0;
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

long sl_url_decode(const char *in, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    if (!out || cap == 0) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= n) {
                out[0] = '\0';
                return -1;
            }
            int h = hexval(in[i + 1]), l = hexval(in[i + 2]);
            if (h < 0 || l < 0) {
                out[0] = '\0';
                return -1;
            }
            c = (char)(h * 16 + l);
            i += 2;
        }
        if (o + 1 >= cap) {
            out[0] = '\0';
            return -1;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return (long)o;
}

static int ends_with_ci(const char *s, size_t n, const char *suf)
{
    size_t m = strlen(suf);
    return n >= m && strncasecmp(s + n - m, suf, m) == 0;
}

int sl_url_secret_param(const char *name, size_t n)
{
    static const char *const exact[] = {"token",
                                        "key",
                                        "api_key",
                                        "apikey",
                                        "secret",
                                        "client_secret",
                                        "signature",
                                        "sig",
                                        "password",
                                        "passwd",
                                        "pwd",
                                        "pass",
                                        "access_token",
                                        "refresh_token",
                                        "auth",
                                        "authorization",
                                        "credential",
                                        "session",
                                        "x-amz-signature",
                                        "x-amz-credential",
                                        "x-amz-security-token",
                                        "x-goog-signature",
                                        "x-goog-credential"};
    static const char *const suffix[] = {"_token",  "-token",  "_key",      "-key",
                                         "_secret", "-secret", "signature", "password"};
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
        if (strlen(exact[i]) == n && strncasecmp(name, exact[i], n) == 0) {
            return 1;
        }
    }
    for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
        if (ends_with_ci(name, n, suffix[i])) {
            return 1;
        }
    }
    return 0;
}

/* ---- parse ------------------------------------------------------------- */

static int reg_name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("-._~!$&'()*+,;=%", c) != NULL;
}

void sl_url_free(sl_url *u)
{
    if (u) {
        free(u->buf);
        memset(u, 0, sizeof(*u));
        u->port = -1;
    }
}

static int bad(sl_url *u, sl_error *err, const char *s, const char *why)
{
    char shown[URL_SHOW_MAX];
    u->why = why;
    sl_url_redact(s, shown, sizeof(shown), 0);
    return sl_error_set(err, SL_ERR_INPUT, "URL %s: %s", shown, why);
}

int sl_url_parse(const char *s, sl_url *u, sl_error *err)
{
    memset(u, 0, sizeof(*u));
    u->port = -1;
    if (!s) {
        s = "";
    }
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p <= 0x20 || *p == 0x7f) {
            return bad(u, err, s, "contains a space or control character");
        }
    }
    size_t sl = sl_url_scheme_len(s);
    if (!sl) {
        return bad(u, err, s, "not a URL (expected scheme://host/path)");
    }
    size_t len = strlen(s);
    /* every part is a copy of a piece of s plus a NUL: 8 parts at most */
    u->buf = malloc(len + 16);
    if (!u->buf) {
        u->why = "out of memory";
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory parsing a URL");
    }
    char *w = u->buf;
#define COPY(dst, from, n)                                                                         \
    do {                                                                                           \
        memcpy(w, (from), (n));                                                                    \
        w[(n)] = '\0';                                                                             \
        (dst) = w;                                                                                 \
        w += (n) + 1;                                                                              \
    } while (0)
    COPY(u->scheme, s, sl);
    for (char *c = (char *)u->scheme; *c; c++) {
        if (*c >= 'A' && *c <= 'Z') {
            *c = (char)(*c - 'A' + 'a');
        }
    }
    const char *auth = s + sl + 3;
    size_t alen = strcspn(auth, "/?#");
    const char *at = NULL;
    for (size_t i = 0; i < alen; i++) {
        if (auth[i] == '@') {
            at = auth + i;
        }
    }
    const char *hp = auth;
    if (at) {
        for (const char *c = auth; c < at; c++) {
            /* RFC 3986 userinfo, plus '@' (the last one ends it): a backslash or
             * '"' here is read differently by other parsers */
            if (!reg_name_char((unsigned char)*c) && *c != ':' && *c != '@') {
                return bad(u, err, s, "invalid character in the user name or password");
            }
        }
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        if (colon) {
            COPY(u->user, auth, (size_t)(colon - auth));
            COPY(u->password, colon + 1, (size_t)(at - colon - 1));
        } else {
            COPY(u->user, auth, (size_t)(at - auth));
        }
        hp = at + 1;
    }
    const char *aend = auth + alen;
    const char *host_end = aend;
    const char *port = NULL;
    if (hp < aend && *hp == '[') {
        const char *rb = memchr(hp, ']', (size_t)(aend - hp));
        if (!rb) {
            return bad(u, err, s, "IPv6 address without its closing ']'");
        }
        for (const char *c = hp + 1; c < rb; c++) {
            if (*c == '%') {
                /* zone id: "%25" then unreserved characters */
                if (rb - c < 4 || strncmp(c, "%25", 3) != 0) {
                    return bad(u, err, s, "malformed IPv6 zone id (expected %25zone)");
                }
                break;
            }
            if (hexval(*c) < 0 && *c != ':' && *c != '.') {
                return bad(u, err, s, "invalid character in the IPv6 address");
            }
        }
        if (rb == hp + 1) {
            return bad(u, err, s, "empty IPv6 address");
        }
        if (rb + 1 < aend) {
            if (rb[1] != ':') {
                return bad(u, err, s, "unexpected text after the IPv6 address");
            }
            port = rb + 2;
        }
        COPY(u->host, hp + 1, (size_t)(rb - hp - 1));
        u->ipv6 = 1;
    } else {
        const char *colon = NULL;
        for (const char *c = hp; c < aend && !colon; c++) {
            colon = *c == ':' ? c : NULL;
        }
        if (colon) {
            host_end = colon;
            port = colon + 1;
            if (port < aend && memchr(port, ':', (size_t)(aend - port))) {
                return bad(u, err, s, "more than one ':' in the host (IPv6 addresses go in [])");
            }
        }
        for (const char *c = hp; c < host_end; c++) {
            if (!reg_name_char((unsigned char)*c)) {
                return bad(u, err, s,
                           *c == '@' ? "unexpected '@' in the host"
                                     : "invalid character in the host name");
            }
            if (*c == '%' && (host_end - c < 3 || hexval(c[1]) < 0 || hexval(c[2]) < 0)) {
                return bad(u, err, s, "malformed percent-escape in the host");
            }
        }
        COPY(u->host, hp, (size_t)(host_end - hp));
    }
    for (char *c = (char *)u->host; *c; c++) {
        if (*c >= 'A' && *c <= 'Z') {
            *c = (char)(*c - 'A' + 'a');
        }
    }
    if (port && port < aend) {
        long v = 0;
        for (const char *c = port; c < aend; c++) {
            if (*c < '0' || *c > '9' || v > 65535) {
                return bad(u, err, s, "the port must be a number from 0 to 65535");
            }
            v = v * 10 + (*c - '0');
        }
        if (v > 65535) {
            return bad(u, err, s, "the port must be a number from 0 to 65535");
        }
        u->port = (int)v;
    }
    const char *rest = aend;
    size_t plen = strcspn(rest, "?#");
    COPY(u->path, rest, plen);
    rest += plen;
    if (*rest == '?') {
        size_t qlen = strcspn(rest + 1, "#");
        COPY(u->query, rest + 1, qlen);
        rest += 1 + qlen;
    }
    if (*rest == '#') {
        COPY(u->fragment, rest + 1, strlen(rest + 1));
    }
#undef COPY
    return 0;
}

/* ---- redact ------------------------------------------------------------ */

typedef struct out {
    char *p;
    size_t cap, n;
} out;

static void put(out *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n && o->n + 1 < o->cap; i++) {
        unsigned char c = (unsigned char)s[i];
        o->p[o->n++] = (char)(c < 0x20 || c == 0x7f ? '?' : c);
    }
}

static void puts_(out *o, const char *s)
{
    put(o, s, strlen(s));
}

size_t sl_url_redact(const char *url, char *outbuf, size_t cap, int flags)
{
    if (!outbuf || cap == 0) {
        return 0;
    }
    out o = {outbuf, cap, 0};
    const char *p = url ? url : "";
    size_t sl = sl_url_scheme_len(p);
    const char *auth = p;
    if (sl) {
        put(&o, p, sl + 3);
        auth = p + sl + 3;
    }
    size_t alen = strcspn(auth, "/?#");
    const char *aend = auth + alen;
    const char *host = auth;
    for (const char *q = auth; q < aend; q++) {
        if (*q == '@') {
            host = q + 1;
        }
    }
    /* host must be a name, IPv4 or [IPv6], optionally ":digits"; anything
     * else (a password with a raw '/') would leak through: refuse it */
    int ok = 1;
    const char *colon = NULL;
    if (host < aend && *host == '[') {
        const char *rb = memchr(host, ']', (size_t)(aend - host));
        if (!rb) {
            ok = 0;
        } else if (rb + 1 < aend) {
            colon = rb + 1;
            ok = *colon == ':';
        }
    } else {
        colon = memchr(host, ':', (size_t)(aend - host));
    }
    for (const char *q = colon ? colon + 1 : aend; ok && q < aend; q++) {
        ok = *q >= '0' && *q <= '9';
    }
    if (!ok) {
        puts_(&o, "[malformed URL]");
        o.p[o.n] = '\0';
        return o.n;
    }
    if ((flags & SL_URL_SHOW_USER) && host > auth) {
        const char *ui_end = host - 1;
        const char *c = memchr(auth, ':', (size_t)(ui_end - auth));
        put(&o, auth, (size_t)((c ? c : ui_end) - auth));
        if (c) {
            puts_(&o, ":" MASK);
        }
        puts_(&o, "@");
    }
    put(&o, host, (size_t)(aend - host));
    size_t plen = strcspn(aend, "?#");
    put(&o, aend, plen);
    const char *q = aend + plen;
    if ((flags & SL_URL_SHOW_QUERY) && *q == '?') {
        q++;
        size_t qlen = strcspn(q, "#");
        const char *qe = q + qlen;
        puts_(&o, "?");
        while (q < qe) {
            size_t pl = strcspn(q, "&;");
            if (q + pl > qe) {
                pl = (size_t)(qe - q);
            }
            const char *eq = memchr(q, '=', pl);
            size_t nl = eq ? (size_t)(eq - q) : pl;
            if (eq && sl_url_secret_param(q, nl)) {
                put(&o, q, nl + 1);
                puts_(&o, MASK);
            } else {
                put(&o, q, pl);
            }
            q += pl;
            if (q < qe) {
                put(&o, q, 1);
                q++;
            }
        }
    }
    o.p[o.n] = '\0';
    return o.n;
}

/* ---- secrets ----------------------------------------------------------- */

static void register_both(const char *s, size_t n)
{
    char *raw = malloc(n + 1);
    char *dec = malloc(n + 1);
    if (raw && dec) {
        memcpy(raw, s, n);
        raw[n] = '\0';
        sl_secret_register(raw);
        if (sl_url_decode(s, n, dec, n + 1) > 0) {
            sl_secret_register(dec);
        }
    }
    free(raw);
    free(dec);
}

void sl_url_register_secrets(const char *url)
{
    if (!url) {
        return;
    }
    size_t sl = sl_url_scheme_len(url);
    if (!sl) {
        return;
    }
    const char *auth = url + sl + 3;
    size_t alen = strcspn(auth, "/?#");
    const char *at = NULL;
    for (size_t i = 0; i < alen; i++) {
        if (auth[i] == '@') {
            at = auth + i;
        }
    }
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        if (colon && at > colon + 1) {
            register_both(colon + 1, (size_t)(at - colon - 1));
        }
    }
    const char *q = strchr(auth + alen, '?');
    if (!q || (strchr(auth + alen, '#') && strchr(auth + alen, '#') < q)) {
        return;
    }
    q++;
    const char *qe = q + strcspn(q, "#");
    while (q < qe) {
        size_t pl = strcspn(q, "&;");
        if (q + pl > qe) {
            pl = (size_t)(qe - q);
        }
        const char *eq = memchr(q, '=', pl);
        if (eq && sl_url_secret_param(q, (size_t)(eq - q)) && q + pl > eq + 1) {
            register_both(eq + 1, (size_t)(q + pl - eq - 1));
        }
        q += pl + (q + pl < qe ? 1 : 0);
    }
}
