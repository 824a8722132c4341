/* Process-wide metrics in Prometheus text format (version 0.0.4).
 * Thread-safe. Names follow Prometheus conventions: sluice_..._total for
 * counters. Labels are given pre-formatted: `route="/x",status="200"`. */
#ifndef SLUICE_UTIL_METRICS_H
#define SLUICE_UTIL_METRICS_H

#include "sluice/buf.h"

typedef enum { SL_METRIC_COUNTER, SL_METRIC_GAUGE } sl_metric_type;

/* Declare a metric family once (type and help line). Re-declaring is a no-op. */
void sl_metric_declare(const char *name, sl_metric_type type, const char *help);
void sl_metric_add(const char *name, const char *labels, double v);
void sl_metric_set(const char *name, const char *labels, double v);
/* Collectors run before each render (e.g. to set gauges from the state store). */
typedef void (*sl_metrics_collect_fn)(void *ud);
void sl_metrics_add_collector(sl_metrics_collect_fn fn, void *ud);
/* Append the Prometheus text of every family to out (caller owns out):
 * collectors first, then families in declaration order, series in insertion
 * order. 0, or SL_ERR_LIMIT / SL_ERR_NOMEM from out. */
int sl_metrics_render(sl_buf *out);
/* Append s escaped for use inside a label value's quotes (backslash, double
 * quote, newline), e.g. to build `route="<escaped>"`. 0 or the sl_buf error. */
int sl_metric_label_escape(sl_buf *b, const char *s);
void sl_metrics_reset(void); /* forget everything (tests) */

#endif
