/* Value parsing shared by steps and sinks: see include/sluice/values.h. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "sluice/json.h"
#include "sluice/values.h"

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static void trim(const char **s, size_t *len)
{
    const char *p = *s;
    size_t n = *len;
    while (n && is_space(p[0])) {
        p++;
        n--;
    }
    while (n && is_space(p[n - 1])) {
        n--;
    }
    *s = p;
    *len = n;
}

/* Accumulate the digits s[0..len) into *out with the sign applied. All bytes
 * must be digits (checked by the callers). -1 when out of int64 range. */
static int digits_to_int64(const char *s, size_t len, int neg, int64_t *out)
{
    const uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t u = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (u > (limit - d) / 10) {
            return -1;
        }
        u = u * 10 + d;
    }
    if (neg) {
        /* -(2^63) is representable; write it without overflowing */
        *out = u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)u;
    } else {
        *out = (int64_t)u;
    }
    return 0;
}

/* strtod needs a NUL-terminated copy; decimals are short, so a stack buffer
 * serves nearly always. */
static int to_double(const char *s, size_t len, double *out)
{
    char stack[256];
    char *tmp = stack;
    int rc = -1;
    if (len >= sizeof(stack)) {
        tmp = malloc(len + 1);
        if (!tmp) {
            return -1;
        }
    }
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    char *end = NULL;
    errno = 0;
    double v = strtod(tmp, &end);
    if (end != tmp + len || !isfinite(v)) {
        goto done;
    }
    *out = v;
    rc = 0;
done:
    if (tmp != stack) {
        free(tmp);
    }
    return rc;
}

/* The original importer's numbers (Python int()/float() on the stripped
 * text, guarded by its leading-zero rule): -?digits, -?digits.digits, and
 * also the decimal forms Python accepts without a digit on one side of the
 * point (".5", "5.", "-.5"). No sign but '-', no exponent, no '_'. */
static sl_type classify_number(const char *s, size_t len, sl_value *out)
{
    size_t i = 0;
    int neg = 0;
    if (s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i >= len || (!is_digit(s[i]) && s[i] != '.')) {
        return SL_T_STRING;
    }
    size_t int_start = i;
    if (s[i] == '0') {
        i++;
        if (i < len && is_digit(s[i])) {
            return SL_T_STRING; /* leading zero: an id, a zip code, a phone number */
        }
    } else {
        while (i < len && is_digit(s[i])) {
            i++;
        }
    }
    size_t int_digits = i - int_start;
    if (i == len) {
        if (digits_to_int64(s + int_start, len - int_start, neg, &out->i) != 0) {
            return SL_T_STRING; /* too big for int64: keep every digit */
        }
        return SL_T_INT;
    }
    if (s[i] != '.') {
        return SL_T_STRING;
    }
    size_t frac_start = ++i;
    while (i < len && is_digit(s[i])) {
        i++;
    }
    if ((int_digits == 0 && i == frac_start) || i != len || len > SL_INFER_MAX_DECIMAL) {
        return SL_T_STRING;
    }
    if (to_double(s, len, &out->f) != 0) {
        return SL_T_STRING;
    }
    return SL_T_FLOAT;
}

/* Re-serialize a parsed JSON value with the hot-path writer, so numbers are
 * written the same way everywhere (shortest round-trip text). */
static void write_json(sl_jw *w, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *item;
        sl_jw_obj_open(w);
        json_object_foreach((json_t *)v, k, item)
        {
            sl_jw_key(w, k, strlen(k));
            write_json(w, item);
        }
        sl_jw_obj_close(w);
        break;
    }
    case JSON_ARRAY: {
        size_t idx;
        json_t *item;
        sl_jw_arr_open(w);
        json_array_foreach(v, idx, item)
        {
            write_json(w, item);
        }
        sl_jw_arr_close(w);
        break;
    }
    case JSON_STRING:
        sl_jw_str(w, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        sl_jw_int(w, (int64_t)json_integer_value(v));
        break;
    case JSON_REAL:
        sl_jw_double(w, json_real_value(v));
        break;
    case JSON_TRUE:
        sl_jw_bool(w, 1);
        break;
    case JSON_FALSE:
        sl_jw_bool(w, 0);
        break;
    case JSON_NULL:
        sl_jw_null(w);
        break;
    }
}

/* ---- Python list literals (the original importer's ast.literal_eval) ----
 *
 * The subset its users write in CSV cells: lists (nested), strings in '...'
 * or "..." (optionally u-prefixed) with Python's escapes, ints, floats,
 * True, False, None, unary minus/plus on numbers, trailing commas. Anything
 * else (tuples, dicts, sets, bytes, raw or triple-quoted strings, implicit
 * concatenation, hex/octal/binary, '_' in numbers, complex, ints beyond 64
 * bits) makes the whole cell stay text. */

#define PY_MAX_DEPTH 32

typedef struct py_parser {
    const char *p, *end;
    sl_jw *w;
    sl_buf str; /* one decoded string at a time */
} py_parser;

static int is_ident(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static void py_ws(py_parser *ps)
{
    while (ps->p < ps->end && is_space(*ps->p)) {
        ps->p++;
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

/* Append code point cp as UTF-8; -1 for surrogates and beyond U+10FFFF. */
static int put_utf8(sl_buf *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp >= 0xD800 && cp <= 0xDFFF) {
        return -1;
    }
    if (cp < 0x80) {
        u[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12)), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    } else if (cp <= 0x10FFFF) {
        u[0] = (char)(0xF0 | (cp >> 18)), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    } else {
        return -1;
    }
    return sl_buf_append(b, u, n) == 0 ? 0 : -1;
}

static int py_string(py_parser *ps)
{
    if (*ps->p == 'u' || *ps->p == 'U') {
        ps->p++;
    }
    if (ps->p >= ps->end || (*ps->p != '\'' && *ps->p != '"')) {
        return -1;
    }
    char q = *ps->p++;
    if (ps->end - ps->p >= 2 && ps->p[0] == q && ps->p[1] == q) {
        return -1; /* triple-quoted */
    }
    sl_buf_reset(&ps->str);
    for (;;) {
        if (ps->p >= ps->end || *ps->p == '\n' || *ps->p == '\r') {
            return -1; /* unterminated */
        }
        char c = *ps->p++;
        if (c == q) {
            break;
        }
        if (c != '\\') {
            if (sl_buf_append(&ps->str, &c, 1) != 0) {
                return -1;
            }
            continue;
        }
        if (ps->p >= ps->end) {
            return -1;
        }
        char e = *ps->p++;
        uint32_t cp = 0;
        int digits = 0;
        switch (e) {
        case '\n':
            continue; /* line continuation */
        case '\\':
        case '\'':
        case '"':
            cp = (unsigned char)e;
            break;
        case 'a':
            cp = 7;
            break;
        case 'b':
            cp = 8;
            break;
        case 'f':
            cp = 12;
            break;
        case 'n':
            cp = 10;
            break;
        case 'r':
            cp = 13;
            break;
        case 't':
            cp = 9;
            break;
        case 'v':
            cp = 11;
            break;
        case 'x':
            digits = 2;
            break;
        case 'u':
            digits = 4;
            break;
        case 'U':
            digits = 8;
            break;
        default:
            if (e >= '0' && e <= '7') {
                cp = (uint32_t)(e - '0');
                for (int k = 0; k < 2 && ps->p < ps->end && *ps->p >= '0' && *ps->p <= '7'; k++) {
                    cp = cp * 8 + (uint32_t)(*ps->p++ - '0');
                }
                break;
            }
            if (e == 'N') {
                return -1; /* \N{name}: not supported */
            }
            /* Python keeps an unknown escape as written */
            if (sl_buf_append(&ps->str, "\\", 1) != 0 || sl_buf_append(&ps->str, &e, 1) != 0) {
                return -1;
            }
            continue;
        }
        for (int k = 0; k < digits; k++) {
            int h = ps->p < ps->end ? hexval(*ps->p) : -1;
            if (h < 0) {
                return -1;
            }
            cp = cp * 16 + (uint32_t)h;
            ps->p++;
        }
        if (put_utf8(&ps->str, cp) != 0) {
            return -1;
        }
    }
    if (!sl_utf8_valid(ps->str.data ? ps->str.data : "", ps->str.len, NULL)) {
        return -1;
    }
    sl_jw_str(ps->w, ps->str.data ? ps->str.data : "", ps->str.len);
    return 0;
}

/* [+-]* then a decimal int or float literal. */
static int py_number(py_parser *ps)
{
    int neg = 0;
    while (ps->p < ps->end && (*ps->p == '-' || *ps->p == '+')) {
        neg ^= *ps->p == '-';
        ps->p++;
        py_ws(ps);
    }
    const char *b = ps->p;
    while (ps->p < ps->end && is_digit(*ps->p)) {
        ps->p++;
    }
    size_t int_digits = (size_t)(ps->p - b);
    int is_float = 0;
    if (ps->p < ps->end && *ps->p == '.') {
        is_float = 1;
        ps->p++;
        const char *f = ps->p;
        while (ps->p < ps->end && is_digit(*ps->p)) {
            ps->p++;
        }
        if (int_digits == 0 && ps->p == f) {
            return -1;
        }
    } else if (int_digits == 0) {
        return -1;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        is_float = 1;
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '-' || *ps->p == '+')) {
            ps->p++;
        }
        const char *x = ps->p;
        while (ps->p < ps->end && is_digit(*ps->p)) {
            ps->p++;
        }
        if (ps->p == x) {
            return -1;
        }
    }
    /* no identifier or other number syntax glued on (0x10, 1_000, 1j) */
    if (ps->p < ps->end && (is_ident(*ps->p) || *ps->p == '.')) {
        return -1;
    }
    size_t len = (size_t)(ps->p - b);
    if (is_float) {
        double v;
        if (len > SL_INFER_MAX_DECIMAL || to_double(b, len, &v) != 0) {
            return -1;
        }
        sl_jw_double(ps->w, neg ? -v : v);
        return 0;
    }
    /* Python 3 refuses leading zeros in a nonzero int ("007") */
    if (len > 1 && b[0] == '0') {
        for (size_t i = 0; i < len; i++) {
            if (b[i] != '0') {
                return -1;
            }
        }
    }
    int64_t v;
    if (digits_to_int64(b, len, neg, &v) != 0) {
        return -1;
    }
    sl_jw_int(ps->w, v);
    return 0;
}

static int py_word(py_parser *ps, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) {
        return -1;
    }
    ps->p += n;
    if (ps->p < ps->end && is_ident(*ps->p)) {
        return -1;
    }
    return 0;
}

static int py_value(py_parser *ps, int depth);

static int py_list(py_parser *ps, int depth)
{
    if (depth > PY_MAX_DEPTH) {
        return -1;
    }
    ps->p++; /* '[' */
    sl_jw_arr_open(ps->w);
    py_ws(ps);
    while (ps->p < ps->end && *ps->p != ']') {
        if (py_value(ps, depth + 1) != 0) {
            return -1;
        }
        py_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            py_ws(ps);
        } else if (ps->p >= ps->end || *ps->p != ']') {
            return -1;
        }
    }
    if (ps->p >= ps->end) {
        return -1;
    }
    ps->p++; /* ']' */
    sl_jw_arr_close(ps->w);
    return 0;
}

static int py_value(py_parser *ps, int depth)
{
    py_ws(ps);
    if (ps->p >= ps->end) {
        return -1;
    }
    char c = *ps->p;
    if (c == '[') {
        return py_list(ps, depth);
    }
    if (c == '\'' || c == '"' ||
        ((c == 'u' || c == 'U') && ps->end - ps->p > 1 && (ps->p[1] == '\'' || ps->p[1] == '"'))) {
        return py_string(ps);
    }
    if (is_digit(c) || c == '-' || c == '+' || c == '.') {
        return py_number(ps);
    }
    if (py_word(ps, "True") == 0) {
        sl_jw_bool(ps->w, 1);
        return 0;
    }
    if (py_word(ps, "False") == 0) {
        sl_jw_bool(ps->w, 0);
        return 0;
    }
    if (py_word(ps, "None") == 0) {
        sl_jw_null(ps->w);
        return 0;
    }
    return -1;
}

/* s[0..len) is "[...]": 0 and the compact JSON array in *json (reset first)
 * when it is a Python list literal of the subset above, else -1. */
static int python_list(const char *s, size_t len, sl_buf *json)
{
    sl_buf scratch;
    sl_buf_init(&scratch, json ? json->max : 0);
    sl_buf *out = json ? json : &scratch;
    sl_buf_reset(out);
    sl_jw w;
    sl_jw_init(&w, out);
    py_parser ps = {s, s + len, &w, {0}};
    sl_buf_init(&ps.str, len + 16);
    int rc = py_list(&ps, 0);
    py_ws(&ps);
    if (rc == 0 && (ps.p != ps.end || w.err)) {
        rc = -1;
    }
    sl_buf_free(&ps.str);
    sl_buf_free(&scratch);
    return rc;
}

static sl_type classify_array(const char *s, size_t len, sl_buf *json)
{
    sl_type t = SL_T_STRING;
    json_error_t jerr;
    /* Without JSON_DECODE_ANY jansson accepts only an array or object on top;
     * the brackets were checked by the caller, so this is an array. */
    json_t *root = json_loadb(s, len, 0, &jerr);
    if (!root || !json_is_array(root)) {
        /* not JSON: the original read cells with Python's literal_eval */
        if (python_list(s, len, json) == 0) {
            t = SL_T_JSON;
        }
        goto done;
    }
    if (json) {
        sl_buf_reset(json);
        sl_jw w;
        sl_jw_init(&w, json);
        write_json(&w, root);
        if (w.err) {
            goto done; /* deeper than the writer allows: leave the text alone */
        }
    }
    t = SL_T_JSON;
done:
    json_decref(root);
    return t;
}

sl_type sl_infer_classify(const char *s, size_t len, unsigned rules, sl_value *out, sl_buf *json)
{
    /* the original strips surrounding whitespace before deciding the type */
    trim(&s, &len);
    if (len == 0) {
        return SL_T_STRING;
    }
    char c = s[0];
    if ((rules & SL_INFER_NUMBERS) && (c == '-' || c == '.' || is_digit(c))) {
        sl_type t = classify_number(s, len, out);
        if (t != SL_T_STRING) {
            return t;
        }
    }
    if ((rules & SL_INFER_BOOLEANS) && (c == 't' || c == 'T' || c == 'f' || c == 'F')) {
        if (len == 4 && strncasecmp(s, "true", 4) == 0) {
            out->b = 1;
            return SL_T_BOOL;
        }
        if (len == 5 && strncasecmp(s, "false", 5) == 0) {
            out->b = 0;
            return SL_T_BOOL;
        }
    }
    if ((rules & SL_INFER_ARRAYS) && c == '[' && len >= 2 && s[len - 1] == ']') {
        return classify_array(s, len, json);
    }
    return SL_T_STRING;
}

int sl_is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!is_space(s[i])) {
            return 0;
        }
    }
    return 1;
}

int sl_is_null_literal(const char *s, size_t len, const char *lit)
{
    if (!lit || !lit[0]) {
        return 0;
    }
    trim(&s, &len);
    return strlen(lit) == len && strncasecmp(s, lit, len) == 0;
}

int sl_utf8_valid(const char *str, size_t len, size_t *bad_at)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        uint32_t min;
        if ((c & 0xE0) == 0xC0) {
            n = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            n = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            n = 4, cp = c & 0x07, min = 0x10000;
        } else {
            goto bad;
        }
        if (n > len - i) {
            goto bad;
        }
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) {
                goto bad;
            }
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            goto bad;
        }
        i += n;
    }
    return 1;
bad:
    if (bad_at) {
        *bad_at = i;
    }
    return 0;
}

int sl_parse_int_strict(const char *s, size_t len, int64_t *out)
{
    trim(&s, &len);
    int neg = 0;
    if (len && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        s++;
        len--;
    }
    if (len == 0) {
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i])) {
            return -1;
        }
    }
    return digits_to_int64(s, len, neg, out);
}

int sl_parse_float_strict(const char *s, size_t len, double *out)
{
    trim(&s, &len);
    /* Check the grammar first: strtod would also take hex, inf and nan. */
    size_t i = 0;
    if (i < len && (s[i] == '-' || s[i] == '+')) {
        i++;
    }
    size_t digits = 0;
    while (i < len && is_digit(s[i])) {
        i++;
        digits++;
    }
    if (i < len && s[i] == '.') {
        i++;
        while (i < len && is_digit(s[i])) {
            i++;
            digits++;
        }
    }
    if (digits == 0) {
        return -1;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '-' || s[i] == '+')) {
            i++;
        }
        size_t exp_digits = 0;
        while (i < len && is_digit(s[i])) {
            i++;
            exp_digits++;
        }
        if (exp_digits == 0) {
            return -1;
        }
    }
    if (i != len) {
        return -1;
    }
    return to_double(s, len, out);
}

int sl_parse_bool_word(const char *s, size_t len, int *out)
{
    static const struct {
        const char *word;
        int value;
    } words[] = {{"true", 1}, {"false", 0}, {"yes", 1}, {"no", 0}, {"1", 1}, {"0", 0}};
    trim(&s, &len);
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (strlen(words[i].word) == len && strncasecmp(s, words[i].word, len) == 0) {
            *out = words[i].value;
            return 0;
        }
    }
    return -1;
}

size_t sl_format_double(char *dst, size_t cap, double v)
{
    /* %.15g is exact for most values people type; fall back to %.17g, which
     * always round-trips. */
    int n = snprintf(dst, cap, "%.15g", v);
    if (n > 0 && strtod(dst, NULL) != v) {
        n = snprintf(dst, cap, "%.17g", v);
    }
    if (n < 0) {
        n = 0;
        if (cap) {
            dst[0] = '\0';
        }
    }
    return (size_t)n < cap ? (size_t)n : (cap ? cap - 1 : 0);
}

char *sl_excerpt(char *dst, size_t cap, const char *s, size_t len, size_t max)
{
    if (cap == 0) {
        return dst;
    }
    size_t room = cap - 1;
    size_t limit = max < room ? max : room;
    int cut = 0;
    size_t o = 0;
    int space = 0;
    size_t i = 0;
    /* leading whitespace says nothing */
    while (i < len && ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)) {
        i++;
    }
    for (; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f) {
            space = 1;
            continue;
        }
        size_t need = space ? 2 : 1;
        if (o + need > limit) {
            cut = 1;
            break;
        }
        if (space) {
            dst[o++] = ' ';
            space = 0;
        }
        dst[o++] = (char)c;
    }
    if (cut) {
        /* do not end inside a UTF-8 sequence */
        size_t start = o;
        while (start > 0 && o - start < 4 && ((unsigned char)dst[start - 1] & 0xC0) == 0x80) {
            start--;
        }
        if (start > 0 && ((unsigned char)dst[start - 1] & 0xC0) == 0xC0) {
            unsigned char lead = (unsigned char)dst[start - 1];
            size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
            if (o - (start - 1) < want) {
                o = start - 1;
            }
        }
        if (o + 3 > room) {
            o = room >= 3 ? room - 3 : 0;
        }
        if (room >= 3) {
            memcpy(dst + o, "...", 3);
            o += 3;
        }
    }
    dst[o] = '\0';
    return dst;
}
