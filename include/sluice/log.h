/* Logging: one line per event, level-checked, with a component prefix such as
 * "sink:braze:users". Every line passes through the secret redactor. */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdarg.h>

#include "sluice/error.h"

enum sl_log_level { SL_LOG_ERROR = 0, SL_LOG_WARN, SL_LOG_INFO, SL_LOG_DEBUG };

extern int sl_log_level;

void sl_log_set_json(int on);
void sl_log_write(int level, const char *prefix, const char *fmt, ...) SL_PRINTF(3, 4);
void sl_log_vwrite(int level, const char *prefix, const char *fmt, va_list ap);

#define sl_log(level, prefix, ...)                                                                 \
    do {                                                                                           \
        if ((level) <= sl_log_level) {                                                             \
            sl_log_write((level), (prefix), __VA_ARGS__);                                          \
        }                                                                                          \
    } while (0)
#define sl_error_log(prefix, ...) sl_log(SL_LOG_ERROR, prefix, __VA_ARGS__)
#define sl_warn(prefix, ...) sl_log(SL_LOG_WARN, prefix, __VA_ARGS__)
#define sl_info(prefix, ...) sl_log(SL_LOG_INFO, prefix, __VA_ARGS__)
#define sl_debug(prefix, ...) sl_log(SL_LOG_DEBUG, prefix, __VA_ARGS__)

/* Secrets: every value registered here is replaced by "[redacted]" in log
 * lines, error messages, dead letters and status output, and so are the
 * forms a server may echo it in: percent-encoded (upper/lower hex, '+' for
 * space), JSON-escaped (with or without "\/", with non-ASCII as \uXXXX), and
 * base64 (standard and URL-safe, at any alignment inside a longer base64
 * text, e.g. a "Basic user:secret" credential; fragments shorter than 6
 * characters are not used). Redaction replaces the longest match first, so a
 * secret containing another is masked whole.
 * Values shorter than 4 bytes are refused (-1; they would redact ordinary
 * text): such a value cannot be redacted, so it must never be written into
 * any message in the first place. Returns 0 when registered (or already
 * known). Thread-safe. */
int sl_secret_register(const char *value);
/* Redact in place (s holds at most cap bytes with its NUL; the text is cut
 * when the marks make it longer); returns s. */
char *sl_redact(char *s, size_t cap);
void sl_secrets_clear(void);

#endif
