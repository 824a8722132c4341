#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/buf.h"

void sl_buf_init(sl_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void sl_buf_free(sl_buf *b)
{
    if (!b) {
        return;
    }
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int sl_buf_reserve(sl_buf *b, size_t extra)
{
    size_t max = b->max ? b->max : SL_BUF_DEFAULT_MAX;
    if (extra > max || b->len > max - extra) {
        return SL_ERR_LIMIT;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap) {
        return 0;
    }
    size_t ncap = b->cap ? b->cap : 64;
    while (ncap < need) {
        ncap *= 2;
    }
    char *p = realloc(b->data, ncap);
    if (!p) {
        return SL_ERR_NOMEM;
    }
    b->data = p;
    b->cap = ncap;
    return 0;
}

int sl_buf_append(sl_buf *b, const void *p, size_t n)
{
    int rc = sl_buf_reserve(b, n);
    if (rc) {
        return rc;
    }
    if (n) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int sl_buf_puts(sl_buf *b, const char *s)
{
    return sl_buf_append(b, s, strlen(s));
}

int sl_buf_putc(sl_buf *b, char c)
{
    size_t max = b->max ? b->max : SL_BUF_DEFAULT_MAX;
    if (b->len + 1 < b->cap && b->len < max) {
        b->data[b->len++] = c;
        b->data[b->len] = '\0';
        return 0;
    }
    return sl_buf_append(b, &c, 1);
}

int sl_buf_put_xml(sl_buf *b, const char *s)
{
    for (; *s; s++) {
        const char *ent = *s == '&'   ? "&amp;"
                          : *s == '<' ? "&lt;"
                          : *s == '>' ? "&gt;"
                          : *s == '"' ? "&quot;"
                                      : NULL;
        int rc = ent ? sl_buf_puts(b, ent) : sl_buf_putc(b, *s);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

int sl_buf_vprintf(sl_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        return SL_ERR;
    }
    if ((size_t)n < sizeof(tmp)) {
        return sl_buf_append(b, tmp, (size_t)n);
    }
    int rc = sl_buf_reserve(b, (size_t)n);
    if (rc) {
        return rc;
    }
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int sl_buf_printf(sl_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = sl_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

const char *sl_buf_cstr(const sl_buf *b)
{
    return b->data ? b->data : "";
}

char *sl_buf_steal(sl_buf *b)
{
    char *p = b->data;
    if (!p) {
        p = calloc(1, 1);
    }
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}
