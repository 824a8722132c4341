/* The email source's header checks: Authentication-Results (RFC 8601),
 * the sender allow-list and the subject match. See email.h. */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "email.h"

#define AR_MAX_PAIRS 32

int em_auth_parse_mode(const char *s)
{
    static const char *const names[] = {"none", "dkim", "spf", "any"};
    for (int i = 0; i < 4; i++) {
        if (s && strcasecmp(s, names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

/* The value unfolded, comments removed and separators (';') turned into
 * \x01, outside quoted strings, as a new string the caller frees. */
static char *ar_clean(const char *v)
{
    size_t n = strlen(v);
    char *out = malloc(n + 1);
    if (!out) {
        return NULL;
    }
    size_t k = 0;
    int depth = 0, quoted = 0;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (c == '\r' || c == '\n' || c == '\t') {
            c = ' ';
        }
        if (c == '\\' && (quoted || depth) && i + 1 < n) {
            if (quoted) {
                out[k++] = v[++i];
            } else {
                i++;
            }
            continue;
        }
        if (depth) {
            depth += c == '(' ? 1 : c == ')' ? -1 : 0;
            if (!depth) {
                out[k++] = ' ';
            }
            continue;
        }
        if (c == '"') {
            quoted = !quoted;
            out[k++] = c;
            continue;
        }
        if (!quoted && c == '(') {
            depth = 1;
            continue;
        }
        if (!quoted && c == ';') {
            c = '\x01'; /* a separator, told from a ';' inside a quoted value */
        }
        out[k++] = c;
    }
    out[k] = '\0';
    return out;
}

typedef struct ar_pair {
    char *key, *val;
} ar_pair;

/* Split one resinfo ("dkim=pass header.d=example.com ...") into key=value
 * pairs, in place. Returns the number of pairs. */
static size_t ar_pairs(char *p, ar_pair *pairs, size_t max)
{
    size_t n = 0;
    while (*p && n < max) {
        while (*p == ' ') {
            p++;
        }
        if (!*p) {
            break;
        }
        char *key = p;
        while (*p && *p != ' ' && *p != '=') {
            p++;
        }
        char *kend = p;
        while (*p == ' ') {
            p++;
        }
        char *val = kend; /* empty */
        if (*p == '=') {
            p++;
            while (*p == ' ') {
                p++;
            }
            if (*p == '"') {
                val = ++p;
                while (*p && *p != '"') {
                    p++;
                }
            } else {
                val = p;
                while (*p && *p != ' ') {
                    p++;
                }
            }
            if (*p) {
                *p++ = '\0';
            }
        }
        *kend = '\0';
        pairs[n].key = key;
        pairs[n].val = val;
        n++;
    }
    return n;
}

/* The domain of "user@domain", "@domain" or "domain". */
static const char *domain_of(const char *s)
{
    const char *at = strrchr(s, '@');
    return at ? at + 1 : s;
}

static void add_seen(char *seen, size_t len, const char *method, const char *result,
                     const char *what, const char *dom)
{
    size_t k = strlen(seen);
    if (k + 1 >= len) {
        return;
    }
    snprintf(seen + k, len - k, "%s%s=%s%s%s%s", k ? ", " : "", method, result, dom ? " " : "",
             dom ? what : "", dom ? dom : "");
}

int em_auth_check(const char *const *values, size_t n, const char *authserv_id, em_auth_mode mode,
                  const char *from_domain, char *why, size_t whylen)
{
    if (mode == EM_AUTH_NONE) {
        return 1;
    }
    char others[256] = "";
    for (size_t i = 0; i < n; i++) {
        char *v = ar_clean(values[i] ? values[i] : "");
        if (!v) {
            snprintf(why, whylen, "out of memory reading Authentication-Results");
            return 0;
        }
        char *save = NULL;
        char *seg = strtok_r(v, "\x01", &save);
        char id[256] = "";
        if (seg) {
            sscanf(seg, " %255s", id);
        }
        if (strcasecmp(id, authserv_id) != 0) {
            size_t k = strlen(others);
            /* a cut list is fine: it is only shown */
            if (k + 4 < sizeof(others) &&
                snprintf(others + k, sizeof(others) - k, "%s'%s'", k ? ", " : "", id) < 0) {
                others[k] = '\0';
            }
            free(v);
            continue;
        }
        /* the topmost header from our server: the only one we trust */
        char seen[512] = "";
        int pass = 0;
        while (!pass && (seg = strtok_r(NULL, "\x01", &save)) != NULL) {
            ar_pair pairs[AR_MAX_PAIRS];
            size_t np = ar_pairs(seg, pairs, AR_MAX_PAIRS);
            if (np == 0) {
                continue;
            }
            char *slash = strchr(pairs[0].key, '/');
            if (slash) {
                *slash = '\0'; /* method/version */
            }
            const char *method = pairs[0].key;
            const char *result = pairs[0].val;
            int is_dkim = strcasecmp(method, "dkim") == 0;
            int is_spf = strcasecmp(method, "spf") == 0;
            if (!(is_dkim && (mode == EM_AUTH_DKIM || mode == EM_AUTH_ANY)) &&
                !(is_spf && (mode == EM_AUTH_SPF || mode == EM_AUTH_ANY))) {
                continue;
            }
            const char *want = is_dkim ? "header.d" : "smtp.mailfrom";
            const char *dom = NULL;
            const char *what = want;
            for (size_t k = 1; k < np; k++) {
                if (strcasecmp(pairs[k].key, want) == 0) {
                    dom = domain_of(pairs[k].val);
                    what = pairs[k].key;
                    break;
                }
            }
            if (!dom && is_dkim) {
                for (size_t k = 1; k < np; k++) {
                    if (strcasecmp(pairs[k].key, "header.i") == 0) {
                        dom = domain_of(pairs[k].val);
                        what = pairs[k].key;
                        break;
                    }
                }
            }
            char whatq[32];
            snprintf(whatq, sizeof(whatq), "%s=", what);
            add_seen(seen, sizeof(seen), method, result, whatq, dom);
            if (strcasecmp(result, "pass") == 0 && dom && strcasecmp(dom, from_domain) == 0) {
                pass = 1;
            }
        }
        free(v);
        if (pass) {
            return 1;
        }
        const char *need = mode == EM_AUTH_DKIM  ? "dkim=pass header.d="
                           : mode == EM_AUTH_SPF ? "spf=pass smtp.mailfrom="
                                                 : "dkim=pass header.d= or spf=pass smtp.mailfrom=";
        snprintf(why, whylen,
                 "authentication failed: the Authentication-Results of %s hold no %s%s (found: "
                 "%s)",
                 authserv_id, need, from_domain, seen[0] ? seen : "no dkim or spf result");
        return 0;
    }
    if (others[0]) {
        snprintf(why, whylen,
                 "authentication failed: no Authentication-Results header from authserv_id %s "
                 "(only from %s, which are not trusted)",
                 authserv_id, others);
    } else {
        snprintf(why, whylen,
                 "authentication failed: no Authentication-Results header (expected one from "
                 "%s)",
                 authserv_id);
    }
    return 0;
}

int em_sender_allowed(const char *addr, const char *const *allow, size_t n)
{
    const char *at = strrchr(addr, '@');
    if (!at || at == addr || !at[1]) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        const char *a = allow[i];
        if (!a || !*a) {
            continue;
        }
        if (a[0] == '@' ? strcasecmp(a + 1, at + 1) == 0 : strcasecmp(a, addr) == 0) {
            return 1;
        }
    }
    return 0;
}

int em_subject_matches(const char *subject, const char *pattern)
{
    if (!pattern || !*pattern) {
        return 1;
    }
    if (!subject) {
        subject = "";
    }
    if (strpbrk(pattern, "*?[")) {
        return fnmatch(pattern, subject, FNM_CASEFOLD) == 0;
    }
    return strcasestr(subject, pattern) != NULL;
}
