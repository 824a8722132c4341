#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sluice/error.h"
#include "sluice/log.h"

int sl_error_set(sl_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        err->code = code;
        sl_redact(err->msg, sizeof(err->msg));
    }
    return code;
}

int sl_error_prefix(sl_error *err, const char *fmt, ...)
{
    if (!err) {
        return SL_ERR;
    }
    char pre[SL_ERRMSG_MAX];
    char old[SL_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof(pre), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    size_t n = strlen(pre);
    if (n > sizeof(err->msg) - 3) {
        n = sizeof(err->msg) - 3;
    }
    memcpy(err->msg, pre, n);
    memcpy(err->msg + n, ": ", 2);
    size_t room = sizeof(err->msg) - n - 3;
    size_t ol = strnlen(old, room);
    memcpy(err->msg + n + 2, old, ol);
    err->msg[n + 2 + ol] = '\0';
    sl_redact(err->msg, sizeof(err->msg));
    return err->code ? err->code : SL_ERR;
}

void sl_error_clear(sl_error *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}
