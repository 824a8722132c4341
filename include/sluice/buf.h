/* Growable byte buffer with a hard maximum (curl dynbuf, Redis sds).
 * Always NUL-terminated after any successful append when cap > 0. */
#ifndef SLUICE_BUF_H
#define SLUICE_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "sluice/error.h"

typedef struct sl_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max; /* hard maximum of len; appends beyond it fail with SL_ERR_LIMIT */
} sl_buf;

#define SL_BUF_DEFAULT_MAX ((size_t)256 * 1024 * 1024)

/* A zeroed sl_buf is valid and uses SL_BUF_DEFAULT_MAX. */
void sl_buf_init(sl_buf *b, size_t max);
void sl_buf_free(sl_buf *b);
static inline void sl_buf_reset(sl_buf *b)
{
    b->len = 0;
    if (b->data) {
        b->data[0] = '\0';
    }
}
/* Ensure room for extra more bytes plus a NUL. 0 or SL_ERR_LIMIT / SL_ERR_NOMEM. */
int sl_buf_reserve(sl_buf *b, size_t extra);
int sl_buf_append(sl_buf *b, const void *p, size_t n);
int sl_buf_puts(sl_buf *b, const char *s);
int sl_buf_putc(sl_buf *b, char c);
int sl_buf_printf(sl_buf *b, const char *fmt, ...) SL_PRINTF(2, 3);
int sl_buf_vprintf(sl_buf *b, const char *fmt, va_list ap);
/* Append s as XML character data: & < > " become entities (enough for text
 * and double-quoted attributes). 0 or the append's error. */
int sl_buf_put_xml(sl_buf *b, const char *s);
/* Returns data, never NULL ("" for an empty buffer). */
const char *sl_buf_cstr(const sl_buf *b);
/* Hand the storage to the caller (free() it); the buffer is left empty. */
char *sl_buf_steal(sl_buf *b);

#endif
