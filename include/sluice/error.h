/* Errors carried across module boundaries: a code and one human sentence that
 * names the thing, the place and what was expected. */
#ifndef SLUICE_ERROR_H
#define SLUICE_ERROR_H

#include <stddef.h>

enum sl_errcode {
    SL_OK = 0,
    SL_ERR = -1,        /* generic failure */
    SL_ERR_CONFIG = -2, /* configuration is invalid */
    SL_ERR_IO = -3,     /* file / network / database I/O */
    SL_ERR_INPUT = -4,  /* input data is not what was expected */
    SL_ERR_LIMIT = -5,  /* a hard size limit was hit */
    SL_ERR_NOMEM = -6,
    SL_ERR_USAGE = -7,
    SL_ERR_INTERRUPTED = -8,
    SL_ERR_LOCKED = -9, /* held by another process (a run lease): try later */
};

#define SL_ERRMSG_MAX 1024

typedef struct sl_error {
    int code;
    char msg[SL_ERRMSG_MAX];
} sl_error;

#if defined(__GNUC__)
#define SL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SL_PRINTF(a, b)
#endif

/* Set err (if not NULL) and return code, so callers can write
 * `return sl_error_set(err, SL_ERR_IO, "...")`. */
int sl_error_set(sl_error *err, int code, const char *fmt, ...) SL_PRINTF(3, 4);
/* Prefix an existing message: "ctx: old message". */
int sl_error_prefix(sl_error *err, const char *fmt, ...) SL_PRINTF(2, 3);
void sl_error_clear(sl_error *err);

#endif
