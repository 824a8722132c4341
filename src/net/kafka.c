/* Kafka through librdkafka: the option table the kafka source, the kafka
 * sink and `distributed:` share, client configurations built from it (with
 * librdkafka's logs in sluice's log), and a consumer group's progress for
 * `sluice status`.
 *
 * librdkafka's log and error callbacks only get the client handle, while the
 * handle's opaque belongs to the plugin that made it. So the log prefix
 * travels with the configuration as an interceptor's opaque: the on_new
 * interceptor files (handle -> prefix) in a small table the callbacks read,
 * on_destroy takes it out again. */
#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/kafka.h"
#include "sluice/log.h"

#define KAFKA_LOG_DEFAULT "kafka"
#define KAFKA_PREFIX_MAX 160
#define KAFKA_MAX_CLIENTS 64

const sl_option sl_kafka_options[] = {
    {"brokers", SL_OPT_STRING, NULL, SL_OPT_REQUIRED, NULL,
     "bootstrap servers, \"host:port,host:port\" (e.g. ${KAFKA_BROKERS})"},
    {"topic", SL_OPT_STRING, NULL, 0, NULL, "topic name (default \"sluice.<pipeline>\")"},
    {"key", SL_OPT_STRING, NULL, 0, NULL,
     "the field whose value keys a record and so picks its partition (the sink requires it)"},
    {"group", SL_OPT_STRING, NULL, 0, NULL, "consumer group (default \"sluice.<pipeline>\")"},
    {"partitions", SL_OPT_INT, "4", 0, NULL,
     "partitions of the topic when the sink creates it (1..10000): the most workers that can "
     "share the work"},
    {"replication", SL_OPT_INT, "-1", 0, NULL,
     "replication factor of a topic the sink creates (-1: the brokers' default)"},
    {"properties", SL_OPT_MAP, NULL, 0, NULL,
     "librdkafka settings passed through (session.timeout.ms, security.protocol, "
     "sasl.password, ...); values of passwords, secrets and keys are never logged"},
    {"workers", SL_OPT_INT, "1", 0, NULL,
     "worker processes expected (1..1024): per-API-key rate limits are divided among them"},
    {"until", SL_OPT_ENUM, "stopped", 0, "stopped|end",
     "source: \"stopped\" reads until asked to stop (SIGINT/SIGTERM); \"end\" stops once every "
     "assigned partition reached its end (a one-shot drain)"},
    SL_OPTIONS_END,
};

/* Settings sluice makes itself: the plugins' delivery guarantees rest on them. */
static const char *const reserved_props[] = {
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "enable.partition.eof",
    NULL,
};

/* Values that must never reach a log line or message. */
static int sl_kafka_prop_sensitive(const char *name)
{
    return strstr(name, "password") || strstr(name, "secret") || strstr(name, "jaas") ||
           strcmp(name, "ssl.key.pem") == 0 || strcmp(name, "ssl_key") == 0 ||
           strcmp(name, "sasl.oauthbearer.config") == 0;
}

/* One "host:port" of a broker list; 0 when well formed. */
static int check_broker(const char *s, size_t n, char *why, size_t cap)
{
    const char *colon = NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ':') {
            colon = s + i;
        }
    }
    if (!colon || colon == s) {
        snprintf(why, cap, "'%.*s' is not host:port", (int)n, s);
        return -1;
    }
    const char *p = colon + 1;
    size_t plen = n - (size_t)(p - s);
    long port = 0;
    if (plen == 0 || plen > 5) {
        snprintf(why, cap, "'%.*s' has no port number", (int)n, s);
        return -1;
    }
    for (size_t i = 0; i < plen; i++) {
        if (!isdigit((unsigned char)p[i])) {
            snprintf(why, cap, "'%.*s': port '%.*s' is not a number", (int)n, s, (int)plen, p);
            return -1;
        }
        port = port * 10 + (p[i] - '0');
    }
    if (port < 1 || port > 65535) {
        snprintf(why, cap, "'%.*s': port %ld is out of range 1..65535", (int)n, s, port);
        return -1;
    }
    return 0;
}

int sl_kafka_validate(const sl_opts *o, sl_report_fn report, void *ud)
{
    int bad = 0;
    const char *b = sl_opt_str(o, "brokers");
    if (!b || !*b) {
        report(ud, "brokers", "is empty; expected a list of host:port, e.g. \"kafka1:9092\"");
        bad++;
    } else {
        const char *p = b;
        int n = 0;
        while (*p) {
            while (*p == ' ' || *p == ',') {
                p++;
            }
            if (!*p) {
                break;
            }
            size_t len = strcspn(p, ", ");
            char why[256];
            if (check_broker(p, len, why, sizeof(why)) < 0) {
                report(ud, "brokers", "%s; expected \"host:port,host:port\"", why);
                bad++;
            }
            n++;
            p += len;
        }
        if (n == 0) {
            report(ud, "brokers", "names no broker; expected \"host:port,host:port\"");
            bad++;
        }
    }
    int64_t parts = sl_opt_int(o, "partitions");
    if (parts < 1 || parts > 10000) {
        report(ud, "partitions", "is %" PRId64 "; expected 1..10000", parts);
        bad++;
    }
    int64_t repl = sl_opt_int(o, "replication");
    if (repl != -1 && (repl < 1 || repl > 1000)) {
        report(ud, "replication", "is %" PRId64 "; expected -1 (the brokers' default) or 1..1000",
               repl);
        bad++;
    }
    int64_t workers = sl_opt_int(o, "workers");
    if (workers < 1 || workers > 1024) {
        report(ud, "workers", "is %" PRId64 "; expected 1..1024", workers);
        bad++;
    }
    const char *until = sl_opt_str(o, "until");
    if (until && strcmp(until, "stopped") != 0 && strcmp(until, "end") != 0) {
        report(ud, "until", "is '%s'; expected stopped or end", until);
        bad++;
    }
    const char *topic = sl_opt_str(o, "topic");
    if (topic && (!*topic || strlen(topic) > 249 ||
                  strspn(topic, "abcdefghijklmnopqrstuvwxyz"
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "0123456789._-") != strlen(topic))) {
        report(ud, "topic",
               "'%s' is not a Kafka topic name; expected 1..249 of letters, digits, '.', '_', "
               "'-'",
               topic);
        bad++;
    }
    size_t np = sl_opt_count(o, "properties");
    for (size_t i = 0; i < np; i++) {
        const char *k = sl_opt_key(o, "properties", i);
        const char *v = sl_opt_item(o, "properties", i);
        if (!v) {
            report(ud, "properties", "'%s' must be a scalar (a string or number)", k ? k : "?");
            bad++;
            continue;
        }
        for (size_t j = 0; k && reserved_props[j]; j++) {
            if (strcmp(k, reserved_props[j]) == 0) {
                report(ud, "properties",
                       "'%s' is set by sluice (brokers, group and delivery guarantees come from "
                       "the kafka options); remove it",
                       k);
                bad++;
            }
        }
    }
    return bad;
}

/* ---------------------------------------------------------------- logging */

typedef struct log_slot {
    const rd_kafka_t *rk;
    char prefix[KAFKA_PREFIX_MAX];
} log_slot;

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static log_slot log_slots[KAFKA_MAX_CLIENTS];

static void prefix_of(const rd_kafka_t *rk, char *out, size_t cap)
{
    snprintf(out, cap, "%s", KAFKA_LOG_DEFAULT);
    pthread_mutex_lock(&log_mu);
    for (size_t i = 0; i < KAFKA_MAX_CLIENTS; i++) {
        if (log_slots[i].rk && log_slots[i].rk == rk) {
            snprintf(out, cap, "%s", log_slots[i].prefix);
            break;
        }
    }
    pthread_mutex_unlock(&log_mu);
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* syslog levels: 0..3 error, 4 warning, 5..6 info, 7 debug */
    int lv = level <= 3   ? SL_LOG_ERROR
             : level == 4 ? SL_LOG_WARN
             : level <= 6 ? SL_LOG_INFO
                          : SL_LOG_DEBUG;
    /* `properties` serve the producer and the consumer alike: the one
     * saying a consumer setting means nothing to a producer is noise */
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "will be ignored by this")) {
        lv = SL_LOG_DEBUG;
    }
    if (lv > sl_log_level) {
        return;
    }
    char prefix[KAFKA_PREFIX_MAX];
    prefix_of(rk, prefix, sizeof(prefix));
    sl_log_write(lv, prefix, "librdkafka %s: %s", fac, buf);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    char prefix[KAFKA_PREFIX_MAX];
    prefix_of(rk, prefix, sizeof(prefix));
    /* Most errors are transient and librdkafka retries them (a broker
     * going away); fatal ones end the plugin's work, which says so. */
    int fatal = err == RD_KAFKA_RESP_ERR__FATAL;
    sl_log(fatal ? SL_LOG_ERROR : SL_LOG_WARN, prefix, "kafka: %s: %s",
           rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static rd_kafka_resp_err_t ic_on_destroy(rd_kafka_t *rk, void *ic_opaque)
{
    (void)ic_opaque;
    pthread_mutex_lock(&log_mu);
    for (size_t i = 0; i < KAFKA_MAX_CLIENTS; i++) {
        if (log_slots[i].rk == rk) {
            log_slots[i].rk = NULL;
        }
    }
    pthread_mutex_unlock(&log_mu);
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static rd_kafka_resp_err_t ic_on_new(rd_kafka_t *rk, const rd_kafka_conf_t *conf, void *ic_opaque,
                                     char *errstr, size_t errstr_size)
{
    (void)conf;
    (void)errstr;
    (void)errstr_size;
    pthread_mutex_lock(&log_mu);
    for (size_t i = 0; i < KAFKA_MAX_CLIENTS; i++) {
        if (!log_slots[i].rk) {
            log_slots[i].rk = rk;
            snprintf(log_slots[i].prefix, sizeof(log_slots[i].prefix), "%s",
                     (const char *)ic_opaque);
            break;
        }
    }
    pthread_mutex_unlock(&log_mu);
    return rd_kafka_interceptor_add_on_destroy(rk, "sluice-log", ic_on_destroy, ic_opaque);
}

static rd_kafka_resp_err_t ic_on_conf_destroy(void *ic_opaque)
{
    free(ic_opaque);
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static rd_kafka_resp_err_t ic_on_conf_dup(rd_kafka_conf_t *new_conf,
                                          const rd_kafka_conf_t *old_conf, size_t filter_cnt,
                                          const char **filter, void *ic_opaque);

static int add_interceptors(rd_kafka_conf_t *conf, const char *prefix)
{
    char *copy = strdup(prefix ? prefix : KAFKA_LOG_DEFAULT);
    if (!copy) {
        return -1;
    }
    if (rd_kafka_conf_interceptor_add_on_new(conf, "sluice-log", ic_on_new, copy) ||
        rd_kafka_conf_interceptor_add_on_conf_destroy(conf, "sluice-log", ic_on_conf_destroy,
                                                      copy) ||
        rd_kafka_conf_interceptor_add_on_conf_dup(conf, "sluice-log", ic_on_conf_dup, copy)) {
        free(copy);
        return -1;
    }
    return 0;
}

/* A duplicated configuration (librdkafka copies it into the handle) gets
 * interceptors of its own, with its own copy of the prefix. */
static rd_kafka_resp_err_t ic_on_conf_dup(rd_kafka_conf_t *new_conf,
                                          const rd_kafka_conf_t *old_conf, size_t filter_cnt,
                                          const char **filter, void *ic_opaque)
{
    (void)old_conf;
    (void)filter_cnt;
    (void)filter;
    return add_interceptors(new_conf, ic_opaque) == 0 ? RD_KAFKA_RESP_ERR_NO_ERROR
                                                      : RD_KAFKA_RESP_ERR__FAIL;
}

/* ---------------------------------------------------------------- configuration */

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, const char *where,
                    sl_error *err)
{
    char es[512];
    if (rd_kafka_conf_set(conf, k, v, es, sizeof(es)) == RD_KAFKA_CONF_OK) {
        return 0;
    }
    if (sl_kafka_prop_sensitive(k)) {
        /* librdkafka's message may quote the value */
        return sl_error_set(err, SL_ERR_CONFIG,
                            "%s: kafka property '%s': librdkafka refused the value (not shown)",
                            where, k);
    }
    return sl_error_set(err, SL_ERR_CONFIG, "%s: kafka property '%s': %s", where, k, es);
}

rd_kafka_conf_t *sl_kafka_conf(const sl_opts *o, const char *log_prefix, sl_error *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf) {
        sl_error_set(err, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    size_t np = sl_opt_count(o, "properties");
    for (size_t i = 0; i < np; i++) {
        const char *k = sl_opt_key(o, "properties", i);
        const char *v = sl_opt_item(o, "properties", i);
        if (k && v && sl_kafka_prop_sensitive(k) && strlen(v) >= 4) {
            sl_secret_register(v);
        }
    }
    const char *brokers = sl_opt_str(o, "brokers");
    if (!brokers || !*brokers) {
        sl_error_set(err, SL_ERR_CONFIG, "%s: kafka: brokers is empty; expected host:port,...",
                     sl_opt_where(o, "brokers"));
        goto fail;
    }
    if (conf_set(conf, "bootstrap.servers", brokers, sl_opt_where(o, "brokers"), err) < 0) {
        goto fail;
    }
    for (size_t i = 0; i < np; i++) {
        const char *k = sl_opt_key(o, "properties", i);
        const char *v = sl_opt_item(o, "properties", i);
        if (!k || !v) {
            sl_error_set(err, SL_ERR_CONFIG, "%s: kafka property %s must be a scalar",
                         sl_opt_where(o, "properties"), k ? k : "?");
            goto fail;
        }
        if (conf_set(conf, k, v, sl_opt_where(o, "properties"), err) < 0) {
            goto fail;
        }
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    if (add_interceptors(conf, log_prefix) < 0) {
        sl_error_set(err, SL_ERR_NOMEM, "kafka: could not set up the client's logging");
        goto fail;
    }
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

const char *sl_kafka_topic(const sl_opts *o, const char *pipeline, char *buf, size_t cap)
{
    const char *t = sl_opt_str(o, "topic");
    if (t && *t) {
        snprintf(buf, cap, "%s", t);
    } else {
        snprintf(buf, cap, "sluice.%s", pipeline ? pipeline : "default");
    }
    return buf;
}

const char *sl_kafka_group(const sl_opts *o, const char *pipeline, char *buf, size_t cap)
{
    const char *g = sl_opt_str(o, "group");
    if (g && *g) {
        snprintf(buf, cap, "%s", g);
    } else {
        snprintf(buf, cap, "sluice.%s", pipeline ? pipeline : "default");
    }
    return buf;
}

/* ---------------------------------------------------------------- group progress */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int left_ms(int64_t deadline)
{
    int64_t l = deadline - now_ms();
    return l > 0 ? (int)l : 1;
}

int sl_kafka_group_progress(const sl_opts *o, const char *pipeline, int timeout_ms,
                            sl_kafka_partition **out, size_t *n, sl_error *err)
{
    *out = NULL;
    *n = 0;
    char topic[256], group[256], es[512];
    sl_kafka_topic(o, pipeline, topic, sizeof(topic));
    sl_kafka_group(o, pipeline, group, sizeof(group));
    const char *brokers = sl_opt_str(o, "brokers");
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 10000);
    rd_kafka_t *rk = NULL;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_partition_list_t *parts = NULL;
    sl_kafka_partition *res = NULL;
    int rc = SL_ERR_IO;

    rd_kafka_conf_t *conf = sl_kafka_conf(o, "status:kafka", err);
    if (!conf) {
        return err ? err->code : SL_ERR_CONFIG;
    }
    /* group.id only for the offset fetch: this handle never subscribes, so
     * it does not join the group and cannot cause a rebalance */
    if (rd_kafka_conf_set(conf, "group.id", group, es, sizeof(es)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", es, sizeof(es)) !=
            RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return sl_error_set(err, SL_ERR_CONFIG, "kafka: %s", es);
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, es, sizeof(es));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return sl_error_set(err, SL_ERR_CONFIG, "kafka: cannot create a client: %s", es);
    }
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, left_ms(deadline));
    if (e) {
        sl_error_set(err, SL_ERR_IO, "kafka brokers %s: no answer to a metadata request: %s",
                     brokers, rd_kafka_err2str(e));
        goto out;
    }
    const rd_kafka_metadata_topic_t *mt = NULL;
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strcmp(md->topics[i].topic, topic) == 0) {
            mt = &md->topics[i];
        }
    }
    if (!mt || mt->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || mt->partition_cnt == 0) {
        rc = sl_error_set(err, SL_ERR_INPUT, "kafka topic %s does not exist on %s", topic, brokers);
        goto out;
    }
    size_t np = (size_t)mt->partition_cnt;
    res = calloc(np, sizeof(*res));
    parts = rd_kafka_topic_partition_list_new((int)np);
    if (!res || !parts) {
        rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < np; i++) {
        rd_kafka_topic_partition_list_add(parts, topic, (int32_t)i);
    }
    e = rd_kafka_committed(rk, parts, left_ms(deadline));
    if (e) {
        sl_error_set(err, SL_ERR_IO, "kafka group %s on %s: committed offsets unavailable: %s",
                     group, brokers, rd_kafka_err2str(e));
        goto out;
    }
    for (size_t i = 0; i < np; i++) {
        sl_kafka_partition *p = &res[i];
        p->partition = (int32_t)i;
        int64_t c = parts->elems[i].offset;
        p->committed = c >= 0 ? c : -1;
        e = rd_kafka_query_watermark_offsets(rk, topic, (int32_t)i, &p->low, &p->high,
                                             left_ms(deadline));
        if (e) {
            sl_error_set(err, SL_ERR_IO, "kafka topic %s partition %zu: watermarks unavailable: %s",
                         topic, i, rd_kafka_err2str(e));
            goto out;
        }
        p->lag = p->committed >= 0 ? p->high - p->committed : p->high - p->low;
        if (p->lag < 0) {
            p->lag = 0;
        }
    }
    *out = res;
    *n = np;
    res = NULL;
    rc = 0;
out:
    free(res);
    if (parts) {
        rd_kafka_topic_partition_list_destroy(parts);
    }
    if (md) {
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_destroy(rk);
    return rc;
}
