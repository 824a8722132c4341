/* http_pages: one page of a JSON API parsed in a single pass over its bytes.
 *
 * A page is mostly its records array; building a jansson tree of it and then
 * copying every value into records cost ~20 us per member on the reader
 * thread. Here the page is copied once into the page's own buffer and
 * scanned once: the scan validates the whole document (RFC 8259, UTF-8, as
 * strictly as jansson: a page that is not JSON fails whole, nothing of it
 * is emitted), finds the records array, the total and the next token by
 * their dotted paths, and for every item of the array lists its top-level
 * members as typed spans. Strings are unescaped in place (an unescaped
 * string is never longer than its escaped form) and nested objects and
 * arrays are kept as their compact JSON text. Emitting a record is then a
 * copy of those spans into the record; nothing is allocated per value.
 *
 * Differences from jansson's reading, on purpose: an integer beyond 64 bits
 * (or a real beyond double) is kept as its JSON text instead of failing the
 * page; nested values keep their escapes as sent (\u00e9 stays \u00e9). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_pages.h"

#define HP_MAX_DEPTH 512

/* ---------------------------------------------------------------- names */

void hp_names_free(hp_names *n)
{
    if (!n) {
        return;
    }
    for (size_t i = 0; i < n->n; i++) {
        free(n->v[i]);
    }
    free(n->v);
    free(n->len);
    memset(n, 0, sizeof(*n));
}

long hp_names_intern(hp_names *n, const char *name, size_t len, size_t hint)
{
    /* items of one API share their keys in one order: try the hint first */
    if (hint < n->n && n->len[hint] == len && memcmp(n->v[hint], name, len) == 0) {
        return (long)hint;
    }
    for (size_t i = 0; i < n->n; i++) {
        if (n->len[i] == len && memcmp(n->v[i], name, len) == 0) {
            return (long)i;
        }
    }
    if (n->n >= HP_MAX_NAMES || len > UINT32_MAX) {
        return -1;
    }
    if (n->n == n->cap) {
        size_t nc = n->cap ? n->cap * 2 : 32;
        char **nv = realloc(n->v, nc * sizeof(*nv));
        if (!nv) {
            return -1;
        }
        n->v = nv;
        uint32_t *nl = realloc(n->len, nc * sizeof(*nl));
        if (!nl) {
            return -1;
        }
        n->len = nl;
        n->cap = nc;
    }
    char *c = malloc(len + 1);
    if (!c) {
        return -1;
    }
    memcpy(c, name, len);
    c[len] = '\0';
    n->v[n->n] = c;
    n->len[n->n] = (uint32_t)len;
    return (long)n->n++;
}

/* ---------------------------------------------------------------- scanner */

typedef struct scan {
    char *base, *p, *end;
    hp_page_doc *d;
    hp_names *names;
    const hp_paths *paths;
    const char *err; /* static text */
    const char *err_at;
    int rc; /* a non-syntax failure: HP_PARSE_NAMES, SL_ERR_NOMEM */
} scan;

static int fail(scan *c, const char *at, const char *what)
{
    if (!c->err && !c->rc) {
        c->err = what;
        c->err_at = at;
    }
    return -1;
}

static inline void skip_ws(scan *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t')) {
        c->p++;
    }
}

/* 1 for bytes a string may hold as they are (ASCII, no quote, backslash or
 * control character); 0 for the rest. */
static const unsigned char plain[256] = {
#define R16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
    R16(0), R16(0), /* 0x00..0x1f */
    1,      1,      0,      1,      1,      1,      1,      1,
    1,      1,      1,      1,      1,      1,      1,      1, /* 0x20..0x2f: '"' */
    R16(1), R16(1),                                            /* 0x30..0x4f */
    1,      1,      1,      1,      1,      1,      1,      1,
    1,      1,      1,      1,      0,      1,      1,      1, /* 0x50..0x5f: '\\' */
    R16(1), R16(1),                                            /* 0x60..0x7f */
    R16(0), R16(0), R16(0), R16(0), R16(0), R16(0), R16(0), R16(0),
#undef R16
};

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    if (ch >= 'A' && ch <= 'F') {
        return ch - 'A' + 10;
    }
    return -1;
}

static int hex4(const char *p, const char *end, unsigned *out)
{
    if (end - p < 4) {
        return -1;
    }
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval((unsigned char)p[i]);
        if (h < 0) {
            return -1;
        }
        v = v << 4 | (unsigned)h;
    }
    *out = v;
    return 0;
}

/* Length of the valid UTF-8 sequence at p (lead byte >= 0x80), or 0. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t n;
    unsigned cp;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n) {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    return n;
}

static char *put_utf8(char *w, unsigned cp)
{
    if (cp < 0x80) {
        *w++ = (char)cp;
    } else if (cp < 0x800) {
        *w++ = (char)(0xc0 | cp >> 6);
        *w++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *w++ = (char)(0xe0 | cp >> 12);
        *w++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *w++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *w++ = (char)(0xf0 | cp >> 18);
        *w++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *w++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *w++ = (char)(0x80 | (cp & 0x3f));
    }
    return w;
}

/* A string at c->p ('"'). Validates it; with unescape, writes its value in
 * place from the byte after the opening quote and returns it in *s, *n
 * (without unescape nothing is written: w stays r). c->p ends past the
 * closing quote. */
static int scan_string(scan *c, int unescape, char **s, size_t *n)
{
    char *start = ++c->p;
    char *r = start, *w = start;
    const char *end = c->end;
    for (;;) {
        if (w == r) {
            while (r < end && plain[(unsigned char)*r]) {
                r++;
            }
            w = r;
        } else {
            while (r < end && plain[(unsigned char)*r]) {
                *w++ = *r++;
            }
        }
        if (r >= end) {
            return fail(c, start - 1, "unterminated string");
        }
        unsigned char ch = (unsigned char)*r;
        if (ch == '"') {
            break;
        }
        if (ch >= 0x80) {
            size_t k = utf8_seq((const unsigned char *)r, (const unsigned char *)end);
            if (!k) {
                return fail(c, r, "invalid UTF-8 in a string");
            }
            if (w != r) {
                memmove(w, r, k);
            }
            w += k;
            r += k;
            continue;
        }
        if (ch != '\\') {
            return fail(c, r, "control character in a string");
        }
        if (end - r < 2) {
            return fail(c, start - 1, "unterminated string");
        }
        char *esc = r;
        char e = r[1];
        char out[4];
        size_t k = 1;
        r += 2;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            out[0] = e;
            break;
        case 'b':
            out[0] = '\b';
            break;
        case 'f':
            out[0] = '\f';
            break;
        case 'n':
            out[0] = '\n';
            break;
        case 'r':
            out[0] = '\r';
            break;
        case 't':
            out[0] = '\t';
            break;
        case 'u': {
            unsigned cp, lo;
            if (hex4(r, end, &cp) != 0) {
                return fail(c, esc, "invalid \\u escape");
            }
            r += 4;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (end - r < 6 || r[0] != '\\' || r[1] != 'u' || hex4(r + 2, end, &lo) != 0 ||
                    lo < 0xdc00 || lo > 0xdfff) {
                    return fail(c, esc, "lone UTF-16 surrogate in a \\u escape");
                }
                r += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                return fail(c, esc, "lone UTF-16 surrogate in a \\u escape");
            } else if (cp == 0) {
                return fail(c, esc, "\\u0000 in a string");
            }
            k = (size_t)(put_utf8(out, cp) - out);
            break;
        }
        default:
            return fail(c, esc, "invalid escape in a string");
        }
        if (unescape) {
            memcpy(w, out, k); /* k <= the escape's length: w stays behind r */
            w += k;
        } else {
            w = r;
        }
    }
    c->p = r + 1;
    if (unescape) {
        *s = start;
        *n = (size_t)(w - start);
    }
    return 0;
}

/* A number at c->p. kind: 0 integer, 1 real. */
static int scan_number(scan *c, int *kind)
{
    char *p = c->p;
    const char *end = c->end;
    *kind = 0;
    if (p < end && *p == '-') {
        p++;
    }
    if (p >= end || *p < '0' || *p > '9') {
        return fail(c, c->p, "invalid number");
    }
    if (*p == '0') {
        p++;
    } else {
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    if (p < end && *p == '.') {
        *kind = 1;
        p++;
        if (p >= end || *p < '0' || *p > '9') {
            return fail(c, p, "invalid number");
        }
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *kind = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }
        if (p >= end || *p < '0' || *p > '9') {
            return fail(c, p, "invalid number");
        }
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    c->p = p;
    return 0;
}

static int scan_literal(scan *c, const char *lit, size_t n)
{
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0) {
        return fail(c, c->p, "invalid literal");
    }
    c->p += n;
    return 0;
}

/* Skip (and validate) any value; *ws is set when whitespace was seen
 * between tokens inside it. */
static int skip_value(scan *c, int depth, int *ws);

static int skip_container(scan *c, int depth, int *ws)
{
    char close = *c->p == '{' ? '}' : ']';
    int obj = close == '}';
    if (depth >= HP_MAX_DEPTH) {
        return fail(c, c->p, "nesting too deep");
    }
    c->p++;
    char *q = c->p;
    skip_ws(c);
    *ws |= q != c->p;
    if (c->p < c->end && *c->p == close) {
        c->p++;
        return 0;
    }
    for (;;) {
        if (obj) {
            if (c->p >= c->end || *c->p != '"') {
                return fail(c, c->p, "expected a string as the object key");
            }
            if (scan_string(c, 0, NULL, NULL) != 0) {
                return -1;
            }
            q = c->p;
            skip_ws(c);
            *ws |= q != c->p;
            if (c->p >= c->end || *c->p != ':') {
                return fail(c, c->p, "expected ':'");
            }
            c->p++;
            q = c->p;
            skip_ws(c);
            *ws |= q != c->p;
        }
        if (skip_value(c, depth + 1, ws) != 0) {
            return -1;
        }
        q = c->p;
        skip_ws(c);
        *ws |= q != c->p;
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            q = c->p;
            skip_ws(c);
            *ws |= q != c->p;
            continue;
        }
        if (c->p < c->end && *c->p == close) {
            c->p++;
            return 0;
        }
        return fail(c, c->p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int skip_value(scan *c, int depth, int *ws)
{
    if (c->p >= c->end) {
        return fail(c, c->p, "unexpected end of input");
    }
    int kind;
    switch (*c->p) {
    case '{':
    case '[':
        return skip_container(c, depth, ws);
    case '"':
        return scan_string(c, 0, NULL, NULL);
    case 't':
        return scan_literal(c, "true", 4);
    case 'f':
        return scan_literal(c, "false", 5);
    case 'n':
        return scan_literal(c, "null", 4);
    default:
        return scan_number(c, &kind);
    }
}

/* Remove whitespace outside strings from [s, s+n) in place; new length. */
static size_t compact(char *s, size_t n)
{
    char *w = s;
    int in = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (in) {
            *w++ = ch;
            if (ch == '\\') {
                *w++ = s[++i];
            } else if (ch == '"') {
                in = 0;
            }
        } else if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t') {
            continue;
        } else {
            *w++ = ch;
            in = ch == '"';
        }
    }
    return (size_t)(w - s);
}

static int grow(void **v, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) {
        return 0;
    }
    size_t nc = *cap ? *cap : 64;
    while (nc < need) {
        nc *= 2;
    }
    void *nv = realloc(*v, nc * size);
    if (!nv) {
        return SL_ERR_NOMEM;
    }
    *v = nv;
    *cap = nc;
    return 0;
}

/* Integer text [s, e) (validated) into *v; -1 when it does not fit. */
static int int_of(const char *s, const char *e, int64_t *v)
{
    int neg = *s == '-';
    if (neg) {
        s++;
    }
    uint64_t acc = 0;
    for (; s < e; s++) {
        unsigned dg = (unsigned)(*s - '0');
        if (acc > (UINT64_MAX - dg) / 10) {
            return -1;
        }
        acc = acc * 10 + dg;
    }
    if (neg) {
        if (acc > (uint64_t)INT64_MAX + 1) {
            return -1;
        }
        *v = acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc;
    } else {
        if (acc > (uint64_t)INT64_MAX) {
            return -1;
        }
        *v = (int64_t)acc;
    }
    return 0;
}

/* One member value of a record item into v. */
static int item_value(scan *c, hp_val *v, int depth)
{
    char *s = c->p;
    size_t n;
    int kind, ws = 0;
    if (s >= c->end) {
        return fail(c, s, "unexpected end of input");
    }
    switch (*s) {
    case '"':
        if (scan_string(c, 1, &s, &n) != 0) {
            return -1;
        }
        v->type = HP_V_STR;
        v->off = (uint32_t)(s - c->base);
        v->len = (uint32_t)n;
        return 0;
    case '{':
    case '[':
        if (skip_container(c, depth, &ws) != 0) {
            return -1;
        }
        n = (size_t)(c->p - s);
        v->type = HP_V_JSON;
        v->off = (uint32_t)(s - c->base);
        v->len = (uint32_t)(ws ? compact(s, n) : n);
        return 0;
    case 't':
        v->type = HP_V_TRUE;
        return scan_literal(c, "true", 4);
    case 'f':
        v->type = HP_V_FALSE;
        return scan_literal(c, "false", 5);
    case 'n':
        v->type = HP_V_NULL;
        return scan_literal(c, "null", 4);
    default:
        if (scan_number(c, &kind) != 0) {
            return -1;
        }
        v->off = (uint32_t)(s - c->base);
        v->len = (uint32_t)(c->p - s);
        if (kind == 0 && int_of(s, c->p, &v->n.i) == 0) {
            v->type = HP_V_INT;
            return 0;
        }
        if (kind == 1) {
            char save = *c->p; /* strtod needs an end: the next byte is a delimiter */
            *c->p = '\0';
            errno = 0;
            v->n.f = strtod(s, NULL);
            *c->p = save;
            if (isfinite(v->n.f)) {
                v->type = HP_V_REAL;
                return 0;
            }
        }
        v->type = HP_V_JSON; /* beyond int64 / double: its text travels as written */
        return 0;
    }
}

/* One item of the records array: an object becomes a record's fields. */
static int scan_item(scan *c, int depth)
{
    hp_page_doc *d = c->d;
    if (grow((void **)&d->items, &d->icap, d->nitems + 1, sizeof(*d->items)) != 0) {
        c->rc = SL_ERR_NOMEM;
        return -1;
    }
    hp_item *it = &d->items[d->nitems];
    it->first = (uint32_t)d->nvals;
    it->n = 0;
    it->key = -1;
    it->object = 0;
    if (c->p >= c->end || *c->p != '{') {
        int ws = 0;
        if (skip_value(c, depth, &ws) != 0) {
            return -1;
        }
        d->nitems++;
        return 0;
    }
    if (depth >= HP_MAX_DEPTH) {
        return fail(c, c->p, "nesting too deep");
    }
    it->object = 1;
    if (++d->gen == 0) { /* wrapped: forget every stamp */
        memset(d->stamp, 0, d->scap * sizeof(*d->stamp));
        d->gen = 1;
    }
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        d->nitems++;
        return 0;
    }
    size_t ord = 0;
    for (;;) {
        char *k;
        size_t kn;
        if (c->p >= c->end || *c->p != '"') {
            return fail(c, c->p, "expected a string as the object key");
        }
        if (scan_string(c, 1, &k, &kn) != 0) {
            return -1;
        }
        long ni = hp_names_intern(c->names, k, kn, ord++);
        if (ni < 0) {
            c->rc = HP_PARSE_NAMES;
            return -1;
        }
        skip_ws(c);
        if (c->p >= c->end || *c->p != ':') {
            return fail(c, c->p, "expected ':'");
        }
        c->p++;
        skip_ws(c);
        if (grow((void **)&d->stamp, &d->scap, (size_t)ni + 1, sizeof(*d->stamp)) != 0 ||
            grow((void **)&d->slot, &d->slcap, (size_t)ni + 1, sizeof(*d->slot)) != 0 ||
            grow((void **)&d->vals, &d->vcap, d->nvals + 1, sizeof(*d->vals)) != 0) {
            c->rc = SL_ERR_NOMEM;
            return -1;
        }
        if (d->scap > d->stamp_init) { /* new stamps start clear */
            memset(d->stamp + d->stamp_init, 0, (d->scap - d->stamp_init) * sizeof(*d->stamp));
            d->stamp_init = d->scap;
        }
        hp_val *v;
        if (d->stamp[ni] == d->gen) {
            v = &d->vals[d->slot[ni]]; /* a repeated key: the last value wins, in the first place */
        } else {
            d->stamp[ni] = d->gen;
            d->slot[ni] = (uint32_t)d->nvals;
            v = &d->vals[d->nvals++];
            v->name = (uint32_t)ni;
            it->n++;
        }
        if (item_value(c, v, depth + 1) != 0) {
            return -1;
        }
        if ((long)c->paths->key_name == ni) {
            it->key = (int32_t)(v - d->vals);
        }
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            skip_ws(c);
            continue;
        }
        if (c->p < c->end && *c->p == '}') {
            c->p++;
            break;
        }
        return fail(c, c->p, "expected ',' or '}'");
    }
    d->nitems++;
    return 0;
}

static int scan_records(scan *c, int depth)
{
    hp_page_doc *d = c->d;
    d->nitems = 0; /* a repeated key: the last array wins */
    d->nvals = 0;
    d->has_records = 1;
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == ']') {
        c->p++;
        return 0;
    }
    for (;;) {
        if (scan_item(c, depth + 1) != 0) {
            return -1;
        }
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            skip_ws(c);
            continue;
        }
        if (c->p < c->end && *c->p == ']') {
            c->p++;
            return 0;
        }
        return fail(c, c->p, "expected ',' or ']'");
    }
}

/* Does segment `seg` of dotted path (0-based) equal [k, k+n)? */
static int seg_is(const char *path, int seg, const char *k, size_t n, int *last)
{
    const char *p = path;
    for (int i = 0; i < seg; i++) {
        p = strchr(p, '.');
        if (!p) {
            return 0;
        }
        p++;
    }
    const char *dot = strchr(p, '.');
    size_t len = dot ? (size_t)(dot - p) : strlen(p);
    *last = dot == NULL;
    return len == n && memcmp(p, k, n) == 0;
}

enum { T_RECORDS = 1, T_TOTAL = 2, T_NEXT = 4 };

static const char *target_path(const scan *c, unsigned t)
{
    return t == T_RECORDS ? c->paths->records : t == T_TOTAL ? c->paths->total : c->paths->next;
}

/* The value a target path ends at, at c->p. */
static int scan_hit(scan *c, unsigned fin, unsigned deeper, int seg, int depth);

/* An object at c->p some target paths go through (mask), their segment
 * `seg` naming one of its keys. Every other value is skipped (validated). */
static int walk_object(scan *c, unsigned mask, int seg, int depth)
{
    if (depth >= HP_MAX_DEPTH) {
        return fail(c, c->p, "nesting too deep");
    }
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        return 0;
    }
    for (;;) {
        char *k;
        size_t kn;
        if (c->p >= c->end || *c->p != '"') {
            return fail(c, c->p, "expected a string as the object key");
        }
        if (scan_string(c, 1, &k, &kn) != 0) {
            return -1;
        }
        unsigned fin = 0, deeper = 0;
        for (unsigned t = T_RECORDS; t <= T_NEXT; t <<= 1) {
            int last;
            if ((mask & t) && seg_is(target_path(c, t), seg, k, kn, &last)) {
                if (last) {
                    fin |= t;
                } else {
                    deeper |= t;
                }
            }
        }
        skip_ws(c);
        if (c->p >= c->end || *c->p != ':') {
            return fail(c, c->p, "expected ':'");
        }
        c->p++;
        skip_ws(c);
        if (scan_hit(c, fin, deeper, seg, depth + 1) != 0) {
            return -1;
        }
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            skip_ws(c);
            continue;
        }
        if (c->p < c->end && *c->p == '}') {
            c->p++;
            return 0;
        }
        return fail(c, c->p, "expected ',' or '}'");
    }
}

static int scan_hit(scan *c, unsigned fin, unsigned deeper, int seg, int depth)
{
    hp_page_doc *d = c->d;
    char *s = c->p;
    int ws = 0;
    if (s >= c->end) {
        return fail(c, s, "unexpected end of input");
    }
    /* a key met again replaces what the earlier one said (the last wins) */
    if (fin & T_RECORDS) {
        d->has_records = 0;
        d->nitems = d->nvals = 0;
    }
    if (fin & T_TOTAL) {
        d->has_total = 0;
    }
    if (fin & T_NEXT) {
        d->has_next = 0;
    }
    if ((fin & T_RECORDS) && *s == '[') {
        return scan_records(c, depth);
    }
    if (deeper && *s == '{') {
        return walk_object(c, deeper, seg + 1, depth);
    }
    if ((fin & T_NEXT) && *s == '"') {
        size_t n;
        if (scan_string(c, 1, &s, &n) != 0) {
            return -1;
        }
        d->has_next = n > 0;
        d->next_off = (uint32_t)(s - c->base);
        d->next_len = (uint32_t)n;
        s[n] = '\0'; /* the closing quote or earlier: already read */
        return 0;
    }
    if ((fin & T_TOTAL) && (*s == '-' || (*s >= '0' && *s <= '9'))) {
        int kind;
        if (scan_number(c, &kind) != 0) {
            return -1;
        }
        int64_t v;
        if (kind == 0 && int_of(s, c->p, &v) == 0 && v >= 0) {
            d->has_total = 1;
            d->total = v;
        }
        return 0;
    }
    return skip_value(c, depth, &ws);
}

void hp_page_doc_free(hp_page_doc *d)
{
    if (!d) {
        return;
    }
    free(d->buf);
    free(d->vals);
    free(d->items);
    free(d->stamp);
    free(d->slot);
    memset(d, 0, sizeof(*d));
}

void hp_page_doc_reset(hp_page_doc *d)
{
    d->len = 0;
    d->nvals = d->nitems = 0;
    d->has_records = d->has_total = d->has_next = 0;
    d->total = -1;
}

int hp_page_parse(hp_page_doc *d, const char *body, size_t len, const hp_paths *paths,
                  hp_names *names, char *why, size_t whycap)
{
    hp_page_doc_reset(d);
    if (why && whycap) {
        why[0] = '\0';
    }
    if (len >= UINT32_MAX) {
        snprintf(why, whycap, "page of %zu bytes: at most 4 GB", len);
        return HP_PARSE_SYNTAX;
    }
    if (len + 1 > d->cap) {
        char *nb = realloc(d->buf, len + 1);
        if (!nb) {
            return SL_ERR_NOMEM;
        }
        d->buf = nb;
        d->cap = len + 1;
    }
    memcpy(d->buf, body, len);
    d->buf[len] = '\0';
    d->len = len;
    scan c = {d->buf, d->buf, d->buf + len, d, names, paths, NULL, NULL, 0};
    skip_ws(&c);
    unsigned mask = 0;
    for (unsigned t = T_RECORDS; t <= T_NEXT; t <<= 1) {
        const char *tp = target_path(&c, t);
        if (tp && *tp) {
            mask |= t;
        }
    }
    int rc;
    if (c.p >= c.end) {
        rc = fail(&c, c.p, "empty document");
    } else if (paths->records && !*paths->records && *c.p == '[') {
        rc = scan_records(&c, 0);
    } else if (mask && *c.p == '{') {
        rc = walk_object(&c, mask, 0, 0);
    } else {
        int ws = 0;
        rc = skip_value(&c, 0, &ws);
    }
    if (rc == 0) {
        skip_ws(&c);
        if (c.p != c.end) {
            rc = fail(&c, c.p, "text after the JSON value");
        }
    }
    if (rc == 0) {
        return 0;
    }
    if (c.rc) {
        return c.rc;
    }
    if (why && whycap) {
        snprintf(why, whycap, "%s at byte %zu", c.err ? c.err : "invalid JSON",
                 (size_t)(c.err_at - c.base));
    }
    hp_page_doc_reset(d);
    return HP_PARSE_SYNTAX;
}
