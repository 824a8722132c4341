/* HTTP server for `sluice serve` (libmicrohttpd): declared routes, body caps,
 * /healthz and /metrics. Handlers run on the server's threads. */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

#include <stddef.h>

#include "sluice/plugin.h"

typedef struct sl_server sl_server;

typedef struct sl_server_resp {
    int status;            /* default 200 */
    char content_type[64]; /* default "text/plain; charset=utf-8" */
    sl_buf body;
} sl_server_resp;

/* Called once per request whose method and path match, with the whole body
 * (already capped). Fill resp. Must be thread-safe. */
typedef void (*sl_route_fn)(void *ud, const sl_webhook_req *req, sl_server_resp *resp);

/* listen: "ADDR:PORT" ("0.0.0.0:8080", "127.0.0.1:0" = any free port, "[::1]:8080"). */
sl_server *sl_server_new(const char *listen, int threads, sl_error *err);
/* max_body: a larger body is answered 413 without calling fn (Content-Length
 * checked up front; chunked bodies counted as they arrive). */
int sl_server_add_route(sl_server *s, const char *method, const char *path, size_t max_body,
                        sl_route_fn fn, void *ud, sl_error *err);
/* Built-in: GET /healthz (200 "ok" while healthy; health_fn may say otherwise)
 * and GET /metrics (Prometheus text from src/util/metrics.h). */
typedef int (*sl_health_fn)(void *ud, sl_buf *detail); /* 1 healthy */
void sl_server_set_health(sl_server *s, sl_health_fn fn, void *ud);
/* Slow-client limits, before start: connections per client address
 * (default 32), and how long a request's head and then its body may take to
 * arrive (defaults 10 s and 60 s) before the connection is closed. */
void sl_server_set_limits(sl_server *s, unsigned per_ip, int head_ms, int body_ms);
int sl_server_start(sl_server *s, sl_error *err);
int sl_server_port(const sl_server *s); /* actual port after start */
/* Stop accepting and wait for running handlers. */
void sl_server_stop(sl_server *s);
void sl_server_free(sl_server *s);

#endif
