/* Streaming JSON writer for the hot path: appends to an sl_buf, no per-value
 * allocation. Output is always valid JSON when calls are balanced; strings are
 * escaped (control characters, quotes, backslash; invalid UTF-8 bytes are
 * replaced with U+FFFD so the output stays valid). */
#ifndef SLUICE_JSON_H
#define SLUICE_JSON_H

#include <stdint.h>

#include "sluice/buf.h"

#define SL_JW_MAX_DEPTH 64

typedef struct sl_jw {
    sl_buf *out;
    int depth;
    int err;                        /* first error (SL_ERR_LIMIT...), sticky */
    int after_key;                  /* next value follows a key: no comma */
    uint8_t first[SL_JW_MAX_DEPTH]; /* 1 while the container at depth is empty */
} sl_jw;

void sl_jw_init(sl_jw *w, sl_buf *out);
void sl_jw_obj_open(sl_jw *w);
void sl_jw_obj_close(sl_jw *w);
void sl_jw_arr_open(sl_jw *w);
void sl_jw_arr_close(sl_jw *w);
void sl_jw_key(sl_jw *w, const char *k, size_t len);
void sl_jw_str(sl_jw *w, const char *s, size_t len);
void sl_jw_int(sl_jw *w, int64_t v);
void sl_jw_double(sl_jw *w, double v); /* non-finite values are written as null */
void sl_jw_bool(sl_jw *w, int v);
void sl_jw_null(sl_jw *w);
/* Insert already-valid JSON text as one value (caller guarantees validity). */
void sl_jw_raw(sl_jw *w, const char *json, size_t len);
/* Append a JSON-escaped string body (no quotes) to b. */
int sl_json_escape(sl_buf *b, const char *s, size_t len);

/* Convenience for keys given as C strings. */
static inline void sl_jw_keyz(sl_jw *w, const char *k)
{
    size_t n = 0;
    while (k[n]) {
        n++;
    }
    sl_jw_key(w, k, n);
}

#endif
