/* The one URL parser and redactor (src/util/url.c). Every place that takes a
 * URL apart or prints one goes through here: the download guard, the HTTP
 * client's messages, the reader, config and the sinks.
 *
 * Syntax: scheme "://" [userinfo "@"] host [":" port] [path] ["?" query]
 * ["#" fragment] (RFC 3986). The userinfo ends at the LAST '@' of the
 * authority, as browsers (WHATWG) split it, so "https://u:p@ss@host/" is user
 * "u", password "p@ss", host "host". The authority ends at the first '/',
 * '?' or '#': a password holding one of those raw (not percent-encoded)
 * makes the URL malformed rather than leaking half of it as a host. */
#ifndef SLUICE_URL_H
#define SLUICE_URL_H

#include <stddef.h>

#include "sluice/error.h"

typedef struct sl_url {
    char *buf;            /* owns every string below */
    const char *scheme;   /* lower case, e.g. "https" */
    const char *user;     /* as written (percent-encoded); NULL when absent */
    const char *password; /* as written; NULL when absent (even "u:@h" gives "") */
    const char *host;     /* lower case; an IPv6 literal without its brackets;
                             may be "" (file:///x) */
    int ipv6;             /* host was a [literal] */
    int port;             /* 0..65535, or -1 when not given */
    const char *path;     /* "" when absent; as written */
    const char *query;    /* without '?'; NULL when absent */
    const char *fragment; /* without '#'; NULL when absent */
    const char *why;      /* after a failed parse: what is wrong (static text) */
} sl_url;

/* Length of the scheme when s starts with "scheme://" (a letter, then
 * letters, digits, '+', '-', '.'), else 0. */
size_t sl_url_scheme_len(const char *s);

/* Parse s into u (u->buf allocated; sl_url_free it, also after a failure).
 * SL_ERR_INPUT with a message naming the redacted URL and what is wrong:
 * no "scheme://", a bad character in the host, an unclosed '[', a port that
 * is not 0..65535, control characters or spaces anywhere. */
int sl_url_parse(const char *s, sl_url *u, sl_error *err);
void sl_url_free(sl_url *u);

/* Percent-decode n bytes of in into out (cap bytes, NUL-terminated).
 * Returns the decoded length, or -1 on a malformed escape ("%4", "%zz") or
 * when out is too small. '+' is left alone. */
long sl_url_decode(const char *in, size_t n, char *out, size_t cap);

/* 1 when a query parameter of this name (n bytes, any case, percent-encoding
 * not decoded) usually carries a credential: token, key, api_key, apikey,
 * secret, client_secret, signature, sig, password, passwd, pwd, pass,
 * access_token, refresh_token, auth, authorization, credential, session,
 * X-Amz-Signature, X-Amz-Credential, X-Amz-Security-Token,
 * X-Goog-Signature, and any name ending in "_token", "-token", "_key",
 * "-key", "_secret", "-secret", "signature" or "password". */
int sl_url_secret_param(const char *name, size_t n);

/* Flags of sl_url_redact. */
#define SL_URL_SHOW_QUERY 0x01 /* keep the query, secret-looking values masked */
#define SL_URL_SHOW_USER 0x02  /* keep the user name (the password is masked) */

/* A form of url fit for any output, into out (cap bytes, always
 * NUL-terminated when cap > 0); returns strlen(out).
 * Default (flags 0): scheme://host[:port]/path, no userinfo, query or
 * fragment. SL_URL_SHOW_USER: "user:[redacted]@" (or "user@"). SL_URL_SHOW_QUERY:
 * "?page=2&token=[redacted]" (the fragment is always dropped). Control bytes
 * become '?'. A URL whose authority is not host[:digits] (IPv6 in brackets)
 * prints as "scheme://[malformed URL]": a raw '/' in a password cannot
 * leak through as a host. Text without "scheme://" is treated as an
 * authority and path ("user:pw@host/x" prints "host/x"). */
size_t sl_url_redact(const char *url, char *out, size_t cap, int flags);

/* Register with the secret redactor (sluice/log.h) the password of url's
 * userinfo and the values of its secret-looking query parameters, as written
 * and percent-decoded. Works on a URL whose host part is malformed too
 * (a multi-host postgres URL), since only the userinfo and query are read. */
void sl_url_register_secrets(const char *url);

#endif
