/* Private helpers of the HTTP client, exposed for unit tests and for other
 * net/ modules that print URLs. Not part of the plugin API. */
#ifndef SLUICE_NET_HTTP_INTERNAL_H
#define SLUICE_NET_HTTP_INTERNAL_H

#include <stddef.h>
#include <time.h>

/* Write a loggable form of url into out (cap bytes, always NUL-terminated
 * when cap > 0): scheme://host[:port]/path. Userinfo (user:password@), the
 * query string and the fragment are dropped because they commonly carry
 * credentials; control characters become '?'. A URL whose authority is not
 * host[:digits] is printed as "scheme://[malformed URL]". Returns strlen(out). */
size_t sl_http_url_for_log(const char *url, char *out, size_t cap);

/* Parse a Retry-After value: delay-seconds ("120", "1.5") or an HTTP-date,
 * relative to the wall-clock time now. Returns seconds to wait (>= 0; a date in
 * the past gives 0) or -1 when v is NULL, empty or not understood. */
double sl_http_parse_retry_after(const char *v, time_t now);

/* Wait before attempt number attempt + 1, in seconds, after attempt number
 * attempt (1-based) failed: full jitter, u01 * min(max_ms, base_ms *
 * 2^(attempt-1)), with u01 in [0, 1]; when retry_after_s >= 0 the wait is at
 * least min(retry_after_s, max_ms). */
double sl_http_backoff_s(long base_ms, long max_ms, int attempt, double u01, double retry_after_s);

#endif
