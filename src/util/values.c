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

static sl_type classify_number(const char *s, size_t len, sl_value *out)
{
    size_t i = 0;
    int neg = 0;
    if (s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i >= len || !is_digit(s[i])) {
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
    if (i == frac_start || i != len || len > SL_INFER_MAX_DECIMAL) {
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

static sl_type classify_array(const char *s, size_t len, sl_buf *json)
{
    sl_type t = SL_T_STRING;
    json_error_t jerr;
    /* Without JSON_DECODE_ANY jansson accepts only an array or object on top;
     * the brackets were checked by the caller, so this is an array. */
    json_t *root = json_loadb(s, len, 0, &jerr);
    if (!root || !json_is_array(root)) {
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
    if (len == 0) {
        return SL_T_STRING;
    }
    char c = s[0];
    if ((rules & SL_INFER_NUMBERS) && (c == '-' || is_digit(c))) {
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
