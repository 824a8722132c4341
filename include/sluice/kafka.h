/* Kafka through librdkafka: what the `kafka` source and sink share, and what
 * `sluice status` asks a consumer group. Distributed mode is built from these
 * two plugins: `sluice fanout` runs a pipeline's source into the `kafka`
 * sink, `sluice worker` runs the `kafka` source into the pipeline's steps
 * and sink; both take their options from the pipeline's `distributed:`
 * block, which is validated against sl_kafka_options. */
#ifndef SLUICE_KAFKA_H
#define SLUICE_KAFKA_H

#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "sluice/plugin.h"

/* One option table for the source, the sink and `distributed:`:
 *   brokers      bootstrap servers "host:port,host:port" (required)
 *   topic        default "sluice.<pipeline>"
 *   key          the field whose value keys a record (its partition); the sink requires it
 *   group        consumer group, default "sluice.<pipeline>"
 *   partitions   when the sink creates a missing topic (default 4)
 *   replication  replication factor of a created topic (default -1: the broker's)
 *   properties   librdkafka settings passed through (session.timeout.ms, security.protocol, ...)
 *   workers      worker processes expected: per-API-key rate limits are divided among them
 *   until        source: "stopped" (run until asked to stop) or "end" (stop once every
 *                assigned partition reached its end: a one-shot drain) */
extern const sl_option sl_kafka_options[];
int sl_kafka_validate(const sl_opts *o, sl_report_fn report, void *ud);

/* A client configuration from those options: brokers, the properties, and
 * librdkafka's log and error callbacks routed to sluice's log under
 * log_prefix (secrets such as sasl.password redacted). NULL with err set
 * when librdkafka refuses a property (the message names it). */
rd_kafka_conf_t *sl_kafka_conf(const sl_opts *o, const char *log_prefix, sl_error *err);

/* The topic and group names after defaults, for a pipeline. */
const char *sl_kafka_topic(const sl_opts *o, const char *pipeline, char *buf, size_t cap);
const char *sl_kafka_group(const sl_opts *o, const char *pipeline, char *buf, size_t cap);

/* A consumer group's progress on its topic, for `sluice status`. */
typedef struct sl_kafka_partition {
    int32_t partition;
    int64_t committed; /* next offset the group will read; -1 none committed */
    int64_t low, high; /* watermarks */
    int64_t lag;       /* high - committed (high - low when none committed) */
} sl_kafka_partition;

/* Fills *out (malloc'd, caller frees) with one entry per partition of the
 * topic, in partition order. timeout_ms bounds the whole query. */
int sl_kafka_group_progress(const sl_opts *o, const char *pipeline, int timeout_ms,
                            sl_kafka_partition **out, size_t *n, sl_error *err);

#endif
