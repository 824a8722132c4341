/* Streaming JSON writer: see include/sluice/json.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/json.h"

void sl_jw_init(sl_jw *w, sl_buf *out)
{
    w->out = out;
    w->depth = 0;
    w->err = 0;
    w->after_key = 0;
    w->first[0] = 1;
}

static void put(sl_jw *w, const char *s, size_t n)
{
    if (!w->err) {
        int rc = sl_buf_append(w->out, s, n);
        if (rc) {
            w->err = rc;
        }
    }
}

/* Comma handling before any value or key. */
static void sep(sl_jw *w)
{
    if (w->after_key) {
        w->after_key = 0;
        return;
    }
    if (!w->first[w->depth]) {
        put(w, ",", 1);
    }
    w->first[w->depth] = 0;
}

static void open_c(sl_jw *w, char c)
{
    sep(w);
    put(w, &c, 1);
    if (w->depth + 1 >= SL_JW_MAX_DEPTH) {
        w->err = SL_ERR_LIMIT;
        return;
    }
    w->first[++w->depth] = 1;
}

static void close_c(sl_jw *w, char c)
{
    if (w->depth > 0) {
        w->depth--;
    }
    put(w, &c, 1);
}

void sl_jw_obj_open(sl_jw *w)
{
    open_c(w, '{');
}
void sl_jw_obj_close(sl_jw *w)
{
    close_c(w, '}');
}
void sl_jw_arr_open(sl_jw *w)
{
    open_c(w, '[');
}
void sl_jw_arr_close(sl_jw *w)
{
    close_c(w, ']');
}

static const char hexd[] = "0123456789abcdef";

/* Length of a valid UTF-8 sequence starting at s (1..4), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        return 1;
    }
    size_t len;
    unsigned min;
    unsigned cp;
    if ((c & 0xE0) == 0xC0) {
        len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        return 0;
    }
    return len;
}

int sl_json_escape(sl_buf *b, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    /* worst case every byte becomes \u00XX (6 bytes) */
    int rc = sl_buf_reserve(b, len + 16);
    if (rc) {
        return rc;
    }
    size_t i = 0;
    while (i < len) {
        /* copy a run of plain bytes at once */
        size_t j = i;
        while (j < len && s[j] >= 0x20 && s[j] < 0x80 && s[j] != '"' && s[j] != '\\') {
            j++;
        }
        if (j > i) {
            if ((rc = sl_buf_append(b, s + i, j - i))) {
                return rc;
            }
            i = j;
            if (i >= len) {
                break;
            }
        }
        unsigned char c = s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            rc = sl_buf_append(b, esc, 2);
            i++;
        } else if (c < 0x20) {
            const char *short_esc = NULL;
            switch (c) {
            case '\n':
                short_esc = "\\n";
                break;
            case '\r':
                short_esc = "\\r";
                break;
            case '\t':
                short_esc = "\\t";
                break;
            case '\b':
                short_esc = "\\b";
                break;
            case '\f':
                short_esc = "\\f";
                break;
            default:
                break;
            }
            if (short_esc) {
                rc = sl_buf_append(b, short_esc, 2);
            } else {
                memcpy(esc, "\\u00", 4);
                esc[4] = hexd[c >> 4];
                esc[5] = hexd[c & 15];
                rc = sl_buf_append(b, esc, 6);
            }
            i++;
        } else {
            size_t ul = utf8_len(s + i, len - i);
            if (ul == 0) {
                rc = sl_buf_append(b, "\xEF\xBF\xBD", 3); /* U+FFFD */
                i++;
            } else {
                rc = sl_buf_append(b, s + i, ul);
                i += ul;
            }
        }
        if (rc) {
            return rc;
        }
    }
    return 0;
}

void sl_jw_key(sl_jw *w, const char *k, size_t len)
{
    sep(w);
    put(w, "\"", 1);
    if (!w->err) {
        int rc = sl_json_escape(w->out, k, len);
        if (rc) {
            w->err = rc;
        }
    }
    put(w, "\":", 2);
    w->after_key = 1;
}

void sl_jw_str(sl_jw *w, const char *s, size_t len)
{
    sep(w);
    put(w, "\"", 1);
    if (!w->err) {
        int rc = sl_json_escape(w->out, s, len);
        if (rc) {
            w->err = rc;
        }
    }
    put(w, "\"", 1);
}

void sl_jw_int(sl_jw *w, int64_t v)
{
    char tmp[24];
    char *p = tmp + sizeof(tmp);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) {
        *--p = '-';
    }
    sep(w);
    put(w, p, (size_t)(tmp + sizeof(tmp) - p));
}

void sl_jw_double(sl_jw *w, double v)
{
    if (!isfinite(v)) {
        sl_jw_null(w);
        return;
    }
    char tmp[40];
    /* %.17g round-trips; try shorter first so 0.5 stays 0.5 */
    int n = snprintf(tmp, sizeof(tmp), "%.15g", v);
    if (strtod(tmp, NULL) != v) {
        n = snprintf(tmp, sizeof(tmp), "%.17g", v);
    }
    /* keep it a JSON number that reads back as a float: 3 -> 3.0 */
    if (!strpbrk(tmp, ".eEn")) {
        tmp[n++] = '.';
        tmp[n++] = '0';
        tmp[n] = '\0';
    }
    sep(w);
    put(w, tmp, (size_t)n);
}

void sl_jw_bool(sl_jw *w, int v)
{
    sep(w);
    if (v) {
        put(w, "true", 4);
    } else {
        put(w, "false", 5);
    }
}

void sl_jw_null(sl_jw *w)
{
    sep(w);
    put(w, "null", 4);
}

void sl_jw_raw(sl_jw *w, const char *json, size_t len)
{
    sep(w);
    put(w, json, len);
}
