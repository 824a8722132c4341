/* Download guard: which URLs sluice may fetch when the URL came from outside
 * (a webhook names a presigned export URL). See docs/net/guard.md.
 *
 * A guard is an allow-list of hosts. Entries are
 *   *.example.com      any subdomain of example.com (not example.com itself):
 *                      https only, and only public peer addresses
 *   files.example.org  exactly this host (case-insensitive, a trailing dot
 *   127.0.0.1, [::1]   ignored): http or https, any peer address
 * each optionally with ":port" (then only that port; without, any port).
 *
 * Two checks, both needed: sl_guard_check_url() before a request (scheme and
 * host), and sl_guard_check_peer() on the address actually connected to, so a
 * public name that resolves to 127.0.0.1 or 169.254.169.254 (DNS rebinding)
 * cannot reach inside. The HTTP client runs both when sl_http_opts.guard is
 * set (and then never uses a proxy and never follows redirects).
 *
 * A guard is immutable once built: share it freely between threads. */
#ifndef SLUICE_GUARD_H
#define SLUICE_GUARD_H

#include <stddef.h>

#include "sluice/error.h"

struct sockaddr;

/* Hard limits: entries per guard, bytes of one host name. */
#define SL_GUARD_MAX_ENTRIES 256
#define SL_GUARD_HOST_MAX 256

typedef struct sl_guard sl_guard;

/* New empty guard (refuses everything). label names the list in messages,
 * e.g. "allow_hosts" (NULL = "allow_hosts"); copied. NULL when out of memory. */
sl_guard *sl_guard_new(const char *label);
void sl_guard_free(sl_guard *g);

/* Add the entries of list: separated by commas and/or white space, so both a
 * YAML list item and one environment variable ("*.amazonaws.com, [::1]")
 * work. An empty list adds nothing (not an error: the caller decides whether
 * an empty guard is a mistake). A malformed entry is SL_ERR_CONFIG naming it
 * ("allow_hosts entry 'https://x.org' is not a host: ..."); entries before it
 * stay added. */
int sl_guard_add(sl_guard *g, const char *list, sl_error *err);
size_t sl_guard_count(const sl_guard *g);
/* The entries as given, normalised, joined by ", " (for messages and docs).
 * Valid until the guard is freed. */
const char *sl_guard_describe(const sl_guard *g);

/* What the URL check learned, kept for the peer check of its connections. */
typedef struct sl_guard_target {
    char host[SL_GUARD_HOST_MAX]; /* normalised: lower case, no trailing dot, [v6] */
    int port;                     /* effective port (443 for https by default) */
    int exact;                    /* matched an exact entry: any peer allowed */
} sl_guard_target;

/* Match a host (as in a URL: name, IPv4 or [IPv6]; any case, trailing dot
 * ignored) and port against the entries: 2 an exact entry matches, 1 only a
 * wildcard entry, 0 none (also for a host that is not a valid name). */
int sl_guard_match(const sl_guard *g, const char *host, int port);

/* Check url before any request. 0 allowed (t filled when not NULL), else
 * SL_ERR_INPUT with a message naming the URL without userinfo or query:
 *   download refused: file:///etc/passwd: only https URLs are allowed
 *   download refused: http://x.amazonaws.com/a.csv: plain http is only allowed
 *     for hosts listed exactly
 *   download refused: https://evil.example/x.csv: host evil.example is not in
 *     allow_hosts (*.amazonaws.com)
 * A g of NULL refuses everything but still checks the syntax. */
int sl_guard_check_url(const sl_guard *g, const char *url, sl_guard_target *t, sl_error *err);

typedef enum sl_addr_class {
    SL_ADDR_PUBLIC = 0,
    SL_ADDR_LOOPBACK,    /* 127/8, ::1 */
    SL_ADDR_PRIVATE,     /* 10/8, 172.16/12, 192.168/16, fc00::/7, fec0::/10 */
    SL_ADDR_LINK_LOCAL,  /* 169.254/16 (cloud metadata), fe80::/10 */
    SL_ADDR_UNSPECIFIED, /* 0/8 ("this network"), :: */
    SL_ADDR_SHARED,      /* 100.64/10, carrier-grade NAT */
    SL_ADDR_MULTICAST,   /* 224/4, ff00::/8 */
    SL_ADDR_BROADCAST,   /* 255.255.255.255 */
    SL_ADDR_RESERVED,    /* documentation, benchmarking, 240/4, Teredo, other families... */
} sl_addr_class;

/* Classify a socket address (AF_INET or AF_INET6; anything else is
 * RESERVED). IPv6 forms that carry an IPv4 address (mapped ::ffff:a.b.c.d,
 * compatible ::a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16) are judged by
 * that IPv4 address. */
sl_addr_class sl_addr_classify(const struct sockaddr *sa, size_t len);
/* "public", "loopback", "private", "link-local", ... */
const char *sl_addr_class_name(sl_addr_class c);

/* Check the peer a connection for t is about to use. 0 allowed; else
 * SL_ERR_INPUT and why (cap bytes, may be NULL) holds e.g. "refused to connect
 * to 127.0.0.1 (loopback) for host evil.example: not an allowed address (only
 * hosts listed exactly may use private addresses)". Public addresses are
 * allowed; any address is allowed when t->exact. */
int sl_guard_check_peer(const sl_guard_target *t, const struct sockaddr *sa, size_t len, char *why,
                        size_t cap);

#endif
