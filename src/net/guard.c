/* Download guard: see include/sluice/guard.h and docs/net/guard.md.
 *
 * URLs are parsed with libcurl's own URL parser (curl_url), the one the
 * transfer uses, so the host checked here is the host libcurl connects to:
 * no second parser for an attacker to play against the first. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "sluice/guard.h"
#include "sluice/url.h"

#define URL_LOG_MAX 512 /* bytes of a URL shown in a message */
/* The entry list shown in a refusal is cut here ("..."): messages stay one line. */
#define DESC_SHOW_MAX 300

typedef struct guard_entry {
    char host[SL_GUARD_HOST_MAX]; /* normalised; for a wildcard the part after "*." */
    int wildcard;
    int port; /* 0 = any */
} guard_entry;

struct sl_guard {
    char label[64];
    guard_entry *e;
    size_t n, cap;
    char *desc; /* "*.amazonaws.com, 127.0.0.1", rebuilt by every add */
};

sl_guard *sl_guard_new(const char *label)
{
    sl_guard *g = calloc(1, sizeof(*g));
    if (!g) {
        return NULL;
    }
    snprintf(g->label, sizeof(g->label), "%s", label && *label ? label : "allow_hosts");
    g->desc = strdup("");
    if (!g->desc) {
        free(g);
        return NULL;
    }
    return g;
}

void sl_guard_free(sl_guard *g)
{
    if (!g) {
        return;
    }
    free(g->e);
    free(g->desc);
    free(g);
}

size_t sl_guard_count(const sl_guard *g)
{
    return g ? g->n : 0;
}

const char *sl_guard_describe(const sl_guard *g)
{
    return g && g->desc ? g->desc : "";
}

/* ------------------------------------------------------------ host names */

/* Normalise a host as written in a URL or an entry (no port): IPv6 in
 * brackets -> canonical "[...]" text; dotted IPv4 -> canonical; names -> lower
 * case without one trailing dot. 0 ok, else -1 with *why set. */
static int norm_host(const char *in, size_t len, char *out, size_t cap, const char **why)
{
    if (len == 0) {
        *why = "the host is empty";
        return -1;
    }
    if (len >= cap || len >= SL_GUARD_HOST_MAX) {
        *why = "the host name is too long";
        return -1;
    }
    if (in[0] == '[') {
        char tmp[SL_GUARD_HOST_MAX];
        struct in6_addr a6;
        if (len < 3 || in[len - 1] != ']') {
            *why = "an IPv6 address needs both brackets, e.g. [::1]";
            return -1;
        }
        memcpy(tmp, in + 1, len - 2);
        tmp[len - 2] = '\0';
        if (inet_pton(AF_INET6, tmp, &a6) != 1) {
            *why = "not a valid IPv6 address (zone ids are not accepted)";
            return -1;
        }
        char txt[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &a6, txt, sizeof(txt));
        snprintf(out, cap, "[%s]", txt);
        return 0;
    }
    size_t n = len;
    if (in[n - 1] == '.') {
        n--; /* "example.com." is the same name as "example.com" */
    }
    if (n == 0) {
        *why = "the host is empty";
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_' || c == '.' || c >= 0x80;
        if (c == ':') {
            *why = "IPv6 addresses go in brackets, e.g. [::1]";
            return -1;
        }
        if (!ok) {
            *why = "a host name holds only letters, digits, '-', '_' and '.'";
            return -1;
        }
        if (c == '.' && (i == 0 || in[i - 1] == '.')) {
            *why = "the host name has an empty label (\"..\" or a leading dot)";
            return -1;
        }
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    out[n] = '\0';
    struct in_addr a4;
    if (inet_pton(AF_INET, out, &a4) == 1) {
        inet_ntop(AF_INET, &a4, out, (socklen_t)cap);
    }
    return 0;
}

static int entry_matches(const guard_entry *e, const char *host, int port)
{
    if (e->port && e->port != port) {
        return 0;
    }
    if (!e->wildcard) {
        return strcmp(e->host, host) == 0;
    }
    /* "*.example.com" matches a.example.com and a.b.example.com, never
     * example.com, and never an IP literal */
    size_t hl = strlen(host), sl = strlen(e->host);
    return host[0] != '[' && hl > sl + 1 && host[hl - sl - 1] == '.' &&
           strcmp(host + hl - sl, e->host) == 0;
}

/* Best match of an already normalised host: 2 exact, 1 wildcard, 0 none. */
static int match_norm(const sl_guard *g, const char *host, int port)
{
    int best = 0;
    for (size_t i = 0; g && i < g->n; i++) {
        if (entry_matches(&g->e[i], host, port)) {
            if (!g->e[i].wildcard) {
                return 2;
            }
            best = 1;
        }
    }
    return best;
}

int sl_guard_match(const sl_guard *g, const char *host, int port)
{
    char norm[SL_GUARD_HOST_MAX];
    const char *why = NULL;
    if (!host || norm_host(host, strlen(host), norm, sizeof(norm), &why) != 0) {
        return 0;
    }
    return match_norm(g, norm, port);
}

/* ------------------------------------------------------------ entries */

static int parse_port(const char *p, size_t n, int *port)
{
    if (n == 0 || n > 5) {
        return -1;
    }
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }
        v = v * 10 + (p[i] - '0');
    }
    if (v < 1 || v > 65535) {
        return -1;
    }
    *port = v;
    return 0;
}

static int rebuild_desc(sl_guard *g)
{
    size_t need = 1;
    for (size_t i = 0; i < g->n; i++) {
        need += strlen(g->e[i].host) + 2 + 2 + 6;
    }
    char *d = malloc(need);
    if (!d) {
        return SL_ERR_NOMEM;
    }
    size_t o = 0;
    for (size_t i = 0; i < g->n; i++) {
        const guard_entry *e = &g->e[i];
        char port[8] = "";
        if (e->port) {
            snprintf(port, sizeof(port), ":%d", e->port);
        }
        o += (size_t)snprintf(d + o, need - o, "%s%s%s%s", i ? ", " : "", e->wildcard ? "*." : "",
                              e->host, port);
    }
    d[o] = '\0';
    free(g->desc);
    g->desc = d;
    return 0;
}

static int add_one(sl_guard *g, const char *p, size_t n, sl_error *err)
{
    guard_entry e;
    memset(&e, 0, sizeof(e));
    const char *why = NULL;
    char shown[SL_GUARD_HOST_MAX + 8];
    snprintf(shown, sizeof(shown), "%.*s%s", n > SL_GUARD_HOST_MAX ? SL_GUARD_HOST_MAX : (int)n, p,
             n > SL_GUARD_HOST_MAX ? "..." : "");
    for (char *c = shown; *c; c++) {
        if ((unsigned char)*c < 0x20 || *c == 0x7f) {
            *c = '?';
        }
    }
    const char *host = p;
    size_t hlen = n;
    if (memmem(p, n, "://", 3) || memchr(p, '/', n) || memchr(p, '@', n) || memchr(p, '?', n) ||
        memchr(p, '#', n)) {
        why = "write the host name only, without scheme, user or path (e.g. files.example.org)";
        goto bad;
    }
    if (n == 1 && p[0] == '*') {
        why = "'*' would allow every host: list the domains instead (e.g. *.amazonaws.com)";
        goto bad;
    }
    if (n >= 2 && p[0] == '*' && p[1] == '.') {
        e.wildcard = 1;
        host += 2;
        hlen -= 2;
    }
    if (memchr(host, '*', hlen)) {
        why = "'*' is only allowed as a whole first label, as in *.example.com";
        goto bad;
    }
    /* optional :port, after the closing bracket of an IPv6 address */
    const char *colon = NULL;
    if (hlen && host[0] == '[') {
        const char *rb = memchr(host, ']', hlen);
        if (rb && rb + 1 < host + hlen) {
            colon = rb + 1;
            if (*colon != ':') {
                why = "unexpected text after the IPv6 address (expected [addr] or [addr]:port)";
                goto bad;
            }
        }
    } else {
        colon = memchr(host, ':', hlen);
        if (colon && memchr(colon + 1, ':', (size_t)(host + hlen - colon - 1))) {
            why = "IPv6 addresses go in brackets, e.g. [::1]";
            goto bad;
        }
    }
    if (colon) {
        if (parse_port(colon + 1, (size_t)(host + hlen - colon - 1), &e.port) != 0) {
            why = "the port must be a number from 1 to 65535";
            goto bad;
        }
        hlen = (size_t)(colon - host);
    }
    if (e.wildcard && hlen && host[0] == '[') {
        why = "a wildcard applies to names, not to IP addresses";
        goto bad;
    }
    if (norm_host(host, hlen, e.host, sizeof(e.host), &why) != 0) {
        goto bad;
    }
    if (g->n == SL_GUARD_MAX_ENTRIES) {
        return sl_error_set(err, SL_ERR_LIMIT, "%s: more than %d entries", g->label,
                            SL_GUARD_MAX_ENTRIES);
    }
    if (g->n == g->cap) {
        size_t ncap = g->cap ? g->cap * 2 : 8;
        guard_entry *ne = realloc(g->e, ncap * sizeof(*ne));
        if (!ne) {
            return sl_error_set(err, SL_ERR_NOMEM, "%s: out of memory", g->label);
        }
        g->e = ne;
        g->cap = ncap;
    }
    g->e[g->n++] = e;
    return 0;
bad:
    return sl_error_set(err, SL_ERR_CONFIG, "%s entry '%s' is not a host: %s", g->label, shown,
                        why);
}

int sl_guard_add(sl_guard *g, const char *list, sl_error *err)
{
    if (!g) {
        return sl_error_set(err, SL_ERR_USAGE, "guard: add needs a guard");
    }
    int rc = 0;
    const char *p = list ? list : "";
    while (*p && rc == 0) {
        p += strspn(p, ", \t\r\n");
        size_t n = strcspn(p, ", \t\r\n");
        if (n) {
            rc = add_one(g, p, n, err);
        }
        p += n;
    }
    int drc = rebuild_desc(g);
    if (rc == 0 && drc != 0) {
        rc = sl_error_set(err, drc, "%s: out of memory", g->label);
    }
    return rc;
}

/* ------------------------------------------------------------ URLs */

int sl_guard_check_url(const sl_guard *g, const char *url, sl_guard_target *t, sl_error *err)
{
    char shown[URL_LOG_MAX];
    char *host = NULL, *port = NULL, *zone = NULL;
    int rc = SL_ERR_INPUT;
    CURLU *u = NULL;
    sl_url pu = {.port = -1};
    sl_guard_target tmp;
    if (!t) {
        t = &tmp;
    }
    memset(t, 0, sizeof(*t));
    if (!url) {
        url = "";
    }
    sl_url_redact(url, shown, sizeof(shown), 0);
    size_t slen = sl_url_scheme_len(url);
    if (!slen) {
        sl_error_set(err, SL_ERR_INPUT,
                     "download refused: %s: not a URL (expected https://host/path)", shown);
        goto done;
    }
    int https = slen == 5 && strncasecmp(url, "https", 5) == 0;
    int http = slen == 4 && strncasecmp(url, "http", 4) == 0;
    if (!https && !http) {
        sl_error_set(err, SL_ERR_INPUT, "download refused: %s: only https URLs are allowed", shown);
        goto done;
    }
    /* sluice's own parser first (the one every message and config check
     * uses), then libcurl's (the one that connects): both must accept the
     * URL and agree on host and port, so no spelling can mean one host to
     * the check and another to the connection */
    if (sl_url_parse(url, &pu, NULL) != 0) {
        sl_error_set(err, SL_ERR_INPUT, "download refused: %s: malformed URL (%s)", shown,
                     pu.why ? pu.why : "out of memory");
        goto done;
    }
    u = curl_url();
    if (!u) {
        rc = sl_error_set(err, SL_ERR_NOMEM, "download refused: %s: out of memory", shown);
        goto done;
    }
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc == CURLUE_OK) {
        uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
    }
    if (uc == CURLUE_OK) {
        uc = curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
    }
    if (uc != CURLUE_OK) {
        sl_error_set(err, SL_ERR_INPUT, "download refused: %s: malformed URL (%s)", shown,
                     curl_url_strerror(uc));
        goto done;
    }
    if (curl_url_get(u, CURLUPART_ZONEID, &zone, 0) == CURLUE_OK && zone) {
        sl_error_set(err, SL_ERR_INPUT,
                     "download refused: %s: IPv6 zone ids are not allowed in download URLs", shown);
        goto done;
    }
    const char *why = NULL;
    if (norm_host(host, strlen(host), t->host, sizeof(t->host), &why) != 0) {
        sl_error_set(err, SL_ERR_INPUT, "download refused: %s: invalid host (%s)", shown, why);
        goto done;
    }
    t->port = atoi(port);
    {
        char mine[SL_GUARD_HOST_MAX + 2];
        size_t ml = strlen(pu.host);
        if (ml && pu.host[ml - 1] == '.' && !pu.ipv6) {
            ml--;
        }
        snprintf(mine, sizeof(mine), pu.ipv6 ? "[%.*s]" : "%.*s", (int)ml, pu.host);
        int mport = pu.port >= 0 ? pu.port : https ? 443 : 80;
        if (strcasecmp(mine, t->host) != 0 || mport != t->port) {
            sl_error_set(err, SL_ERR_INPUT,
                         "download refused: %s: ambiguous URL (the host reads as %s to one parser "
                         "and %s to another; write it plainly)",
                         shown, t->host, mine);
            goto done;
        }
    }
    int m = match_norm(g, t->host, t->port);
    if (m == 0) {
        const char *d = sl_guard_describe(g);
        char list[DESC_SHOW_MAX + 8];
        if (!*d) {
            snprintf(list, sizeof(list), "no host is listed");
        } else {
            snprintf(list, sizeof(list), "%.*s%s", DESC_SHOW_MAX, d,
                     strlen(d) > DESC_SHOW_MAX ? "..." : "");
        }
        sl_error_set(err, SL_ERR_INPUT, "download refused: %s: host %s is not in %s (%s)", shown,
                     t->host, g ? g->label : "allow_hosts", list);
        goto done;
    }
    if (http && m != 2) {
        sl_error_set(err, SL_ERR_INPUT,
                     "download refused: %s: plain http is only allowed for hosts listed exactly "
                     "in %s (%s matches only a wildcard entry; use https)",
                     shown, g->label, t->host);
        goto done;
    }
    t->exact = m == 2;
    rc = 0;
done:
    curl_free(host);
    curl_free(port);
    curl_free(zone);
    curl_url_cleanup(u);
    sl_url_free(&pu);
    if (rc != 0) {
        memset(t, 0, sizeof(*t));
    }
    return rc;
}

/* ------------------------------------------------------------ addresses */

static sl_addr_class class_v4(const unsigned char *b)
{
    if (b[0] == 255 && b[1] == 255 && b[2] == 255 && b[3] == 255) {
        return SL_ADDR_BROADCAST;
    }
    if (b[0] == 0) {
        return SL_ADDR_UNSPECIFIED;
    }
    if (b[0] == 10 || (b[0] == 172 && (b[1] & 0xf0) == 16) || (b[0] == 192 && b[1] == 168)) {
        return SL_ADDR_PRIVATE;
    }
    if (b[0] == 100 && (b[1] & 0xc0) == 64) {
        return SL_ADDR_SHARED;
    }
    if (b[0] == 127) {
        return SL_ADDR_LOOPBACK;
    }
    if (b[0] == 169 && b[1] == 254) {
        return SL_ADDR_LINK_LOCAL;
    }
    if ((b[0] & 0xf0) == 224) {
        return SL_ADDR_MULTICAST;
    }
    /* IETF assignments, 6to4 relays, benchmarking, documentation, class E */
    if ((b[0] == 192 && b[1] == 0 && (b[2] == 0 || b[2] == 2)) ||
        (b[0] == 192 && b[1] == 88 && b[2] == 99) || (b[0] == 198 && (b[1] & 0xfe) == 18) ||
        (b[0] == 198 && b[1] == 51 && b[2] == 100) || (b[0] == 203 && b[1] == 0 && b[2] == 113) ||
        (b[0] & 0xf0) == 240) {
        return SL_ADDR_RESERVED;
    }
    return SL_ADDR_PUBLIC;
}

static int all_zero(const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (b[i]) {
            return 0;
        }
    }
    return 1;
}

static sl_addr_class class_v6(const unsigned char *b)
{
    static const unsigned char nat64[4] = {0x00, 0x64, 0xff, 0x9b};
    if (all_zero(b, 10) && b[10] == 0xff && b[11] == 0xff) {
        return class_v4(b + 12); /* ::ffff:a.b.c.d, IPv4-mapped */
    }
    if (all_zero(b, 12)) {
        if (all_zero(b + 12, 3) && b[15] <= 1) {
            return b[15] ? SL_ADDR_LOOPBACK : SL_ADDR_UNSPECIFIED; /* ::1, :: */
        }
        return class_v4(b + 12); /* ::a.b.c.d, deprecated IPv4-compatible */
    }
    if (memcmp(b, nat64, 4) == 0 && all_zero(b + 4, 8)) {
        return class_v4(b + 12); /* 64:ff9b::a.b.c.d, NAT64 */
    }
    if (b[0] == 0x20 && b[1] == 0x02) {
        return class_v4(b + 2); /* 2002:aabb:ccdd::, 6to4 */
    }
    if ((b[0] & 0xfe) == 0xfc) {
        return SL_ADDR_PRIVATE; /* fc00::/7 unique local */
    }
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) {
        return SL_ADDR_LINK_LOCAL;
    }
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) {
        return SL_ADDR_PRIVATE; /* fec0::/10, deprecated site-local */
    }
    if (b[0] == 0xff) {
        return SL_ADDR_MULTICAST;
    }
    /* Teredo 2001::/32 (hides an IPv4 address), documentation 2001:db8::/32 */
    if (b[0] == 0x20 && b[1] == 0x01 &&
        ((b[2] == 0 && b[3] == 0) || (b[2] == 0x0d && b[3] == 0xb8))) {
        return SL_ADDR_RESERVED;
    }
    /* global unicast is 2000::/3; the rest (discard prefix, NAT64 local use,
     * unassigned space) is nothing a download should reach */
    if ((b[0] & 0xe0) != 0x20) {
        return SL_ADDR_RESERVED;
    }
    return SL_ADDR_PUBLIC;
}

sl_addr_class sl_addr_classify(const struct sockaddr *sa, size_t len)
{
    if (sa && sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return class_v4((const unsigned char *)&in->sin_addr);
    }
    if (sa && sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        return class_v6(in6->sin6_addr.s6_addr);
    }
    return SL_ADDR_RESERVED;
}

const char *sl_addr_class_name(sl_addr_class c)
{
    switch (c) {
    case SL_ADDR_PUBLIC:
        return "public";
    case SL_ADDR_LOOPBACK:
        return "loopback";
    case SL_ADDR_PRIVATE:
        return "private";
    case SL_ADDR_LINK_LOCAL:
        return "link-local";
    case SL_ADDR_UNSPECIFIED:
        return "unspecified";
    case SL_ADDR_SHARED:
        return "shared address space";
    case SL_ADDR_MULTICAST:
        return "multicast";
    case SL_ADDR_BROADCAST:
        return "broadcast";
    case SL_ADDR_RESERVED:
        return "reserved";
    }
    return "?";
}

int sl_guard_check_peer(const sl_guard_target *t, const struct sockaddr *sa, size_t len, char *why,
                        size_t cap)
{
    sl_addr_class c = sl_addr_classify(sa, len);
    if (why && cap) {
        why[0] = '\0';
    }
    if (c == SL_ADDR_PUBLIC || (t && t->exact)) {
        return 0;
    }
    if (why && cap) {
        char ip[INET6_ADDRSTRLEN] = "?";
        const char *note = "";
        if (sa && sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
            inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
            if (ntohl(in->sin_addr.s_addr) == 0xa9fea9feu) {
                note = ", the cloud metadata service";
            }
        } else if (sa && sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
            inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        } else {
            snprintf(ip, sizeof(ip), "an address of family %d", sa ? (int)sa->sa_family : -1);
        }
        snprintf(why, cap,
                 "refused to connect to %s (%s%s) for host %s: not an allowed address (only "
                 "hosts listed exactly may use non-public addresses)",
                 ip, sl_addr_class_name(c), note, t && t->host[0] ? t->host : "?");
    }
    return SL_ERR_INPUT;
}
