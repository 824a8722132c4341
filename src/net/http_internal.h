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

#endif
