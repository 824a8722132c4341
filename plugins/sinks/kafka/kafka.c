/* kafka sink: each record becomes one message on a topic, keyed by a field.
 *
 * The message value is the record as sl_record_to_json writes it (the one
 * JSON encoding of a record; the kafka source reads it back with
 * sl_record_from_json). Headers: "sluice-action" (the record's action, when
 * it has one) and "sluice-columns" (a JSON array of the columns records
 * carry, when the pipeline knows them).
 *
 * `write` is synchronous: it produces the batch and polls until the
 * delivery report of every message arrived (bounded by librdkafka's
 * message.timeout.ms). A message whose delivery failed is produced again,
 * up to KSINK_ATTEMPTS times in all; then the batch is FATAL with
 * librdkafka's error, so the source's checkpoint stays before it and a
 * later run sends it again. Nothing is dropped without a word: a record is
 * either confirmed by its delivery report, dead-lettered (no key), or the
 * run stops. The producer is idempotent (enable.idempotence, acks=all), so
 * librdkafka's own retries do not duplicate; a message produced again after
 * a failed report, or a batch sent again by a later run, may be. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/kafka.h"
#include "sluice/plugin.h"

#define KSINK_ATTEMPTS 3
#define KSINK_CONNECT_MS 10000
#define KSINK_CREATE_MS 30000
#define KSINK_VALUE_MAX ((size_t)64 * 1024 * 1024)

enum { DEL_NONE = 0, DEL_PENDING, DEL_OK, DEL_FAILED };

typedef struct kdel {
    int state;
    rd_kafka_resp_err_t err;
} kdel;

typedef struct ksink {
    sl_ctx *ctx;
    rd_kafka_t *rk;
    char topic[256];
    char brokers[1024];
    const char *key;
    char *columns; /* JSON array, or NULL */
    sl_buf val;
    kdel *del;
    size_t del_cap;
    size_t pending;
    uint64_t delivered, redelivered;
} ksink;

static int ksink_validate(const sl_opts *o, sl_report_fn report, void *ud)
{
    int bad = sl_kafka_validate(o, report, ud);
    const char *k = sl_opt_str(o, "key");
    if (!k || !*k) {
        report(ud, "key",
               "is required: the field whose value keys each message (it picks the partition)");
        bad++;
    }
    return bad;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    ksink *s = opaque;
    size_t i = (size_t)(uintptr_t)m->_private;
    if (i >= s->del_cap || s->del[i].state != DEL_PENDING) {
        return; /* cannot happen: write waits for every report it caused */
    }
    s->del[i].state = m->err ? DEL_FAILED : DEL_OK;
    s->del[i].err = m->err;
    s->pending--;
}

/* The key field's value as text into out; NULL when the record has none. */
static const char *key_text(const sl_record *r, const sl_field *f, char *num, size_t cap,
                            size_t *len)
{
    if (!f || (f->flags & SL_FIELD_OMIT)) {
        return NULL;
    }
    switch (f->type) {
    case SL_T_STRING:
    case SL_T_JSON:
        *len = f->v.s.len;
        return sl_field_str(r, f);
    case SL_T_INT:
        *len = (size_t)snprintf(num, cap, "%" PRId64, f->v.i);
        return num;
    case SL_T_FLOAT:
        if (f->flags & SL_FIELD_NUMTEXT) {
            *len = f->tlen;
            return r->data.data + f->toff;
        }
        *len = (size_t)snprintf(num, cap, "%.17g", f->v.f);
        return num;
    case SL_T_BOOL:
        *len = f->v.b ? 4 : 5;
        return f->v.b ? "true" : "false";
    default:
        return NULL;
    }
}

/* Produce record i of b. 0 queued (pending), 1 dead-lettered (no key), <0
 * fatal (err set). */
static int produce_one(ksink *s, sl_batch *b, size_t i, sl_error *err)
{
    sl_record *rec = &b->recs[i];
    char num[64];
    size_t klen = 0;
    const char *key = key_text(rec, sl_record_get(rec, s->key), num, sizeof(num), &klen);
    if (!key || klen == 0) {
        sl_record_fail(rec, "field '%s' (the kafka key) is %s; every message needs a key", s->key,
                       key ? "empty" : "missing or null");
        s->del[i].state = DEL_NONE;
        return 1;
    }
    sl_buf_reset(&s->val);
    if (sl_record_to_json(rec, &s->val) < 0) {
        return sl_error_set(err, SL_ERR_LIMIT,
                            "kafka topic %s: record at line %" PRIu64
                            " could not be encoded as JSON (larger than the 64 MB limit?)",
                            s->topic, rec->line);
    }
    for (;;) {
        rd_kafka_headers_t *h = rd_kafka_headers_new(2);
        if (rec->action) {
            rd_kafka_header_add(h, "sluice-action", -1, rec->action, -1);
        }
        if (s->columns) {
            rd_kafka_header_add(h, "sluice-columns", -1, s->columns, -1);
        }
        s->del[i].state = DEL_PENDING;
        s->pending++;
        rd_kafka_resp_err_t e = rd_kafka_producev(
            s->rk, RD_KAFKA_V_TOPIC(s->topic), RD_KAFKA_V_KEY(key, klen),
            RD_KAFKA_V_VALUE(s->val.data, s->val.len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE((void *)(uintptr_t)i), RD_KAFKA_V_END);
        if (!e) {
            return 0;
        }
        rd_kafka_headers_destroy(h);
        s->del[i].state = DEL_NONE;
        s->pending--;
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(s->rk, 100); /* let delivery reports make room */
            continue;
        }
        if (e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) {
            sl_record_fail(rec,
                           "kafka topic %s refuses the message: %zu bytes is larger than "
                           "message.max.bytes",
                           s->topic, s->val.len);
            return 1;
        }
        return sl_error_set(err, SL_ERR_IO, "kafka topic %s: produce failed: %s", s->topic,
                            rd_kafka_err2str(e));
    }
}

static int fatal_check(ksink *s, sl_error *err)
{
    char why[512];
    rd_kafka_resp_err_t e = rd_kafka_fatal_error(s->rk, why, sizeof(why));
    if (e) {
        return sl_error_set(err, SL_ERR_IO, "kafka topic %s: the producer failed for good: %s",
                            s->topic, why);
    }
    return 0;
}

static sl_verdict ksink_write(void *self, sl_batch *b, sl_error *err)
{
    ksink *s = self;
    if (b->n > s->del_cap) {
        kdel *d = realloc(s->del, b->n * sizeof(*d));
        if (!d) {
            sl_error_set(err, SL_ERR_NOMEM, "out of memory");
            return SL_SEND_FATAL;
        }
        s->del = d;
        s->del_cap = b->n;
    }
    memset(s->del, 0, b->n * sizeof(*s->del));
    s->pending = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (b->recs[i].status == SL_REC_OK && produce_one(s, b, i, err) < 0) {
            goto fatal;
        }
    }
    for (int attempt = 1;; attempt++) {
        while (s->pending > 0) {
            rd_kafka_poll(s->rk, 100);
            if (fatal_check(s, err) < 0) {
                goto fatal;
            }
        }
        size_t failed = 0, first = 0;
        for (size_t i = 0; i < b->n; i++) {
            if (s->del[i].state == DEL_FAILED) {
                if (failed++ == 0) {
                    first = i;
                }
            }
        }
        if (failed == 0) {
            break;
        }
        if (attempt >= KSINK_ATTEMPTS) {
            sl_error_set(err, SL_ERR_IO,
                         "kafka topic %s on %s: %zu message(s) of this batch not delivered after "
                         "%d attempts (line %" PRIu64 ": %s); stopping so they are sent again",
                         s->topic, s->brokers, failed, attempt, b->recs[first].line,
                         rd_kafka_err2str(s->del[first].err));
            goto fatal;
        }
        sl_plog(s->ctx, SL_LOG_WARN,
                "%zu message(s) not delivered (line %" PRIu64 ": %s); producing them again "
                "(attempt %d of %d)",
                failed, b->recs[first].line, rd_kafka_err2str(s->del[first].err), attempt + 1,
                KSINK_ATTEMPTS);
        for (size_t i = 0; i < b->n; i++) {
            if (s->del[i].state == DEL_FAILED) {
                s->redelivered++;
                if (produce_one(s, b, i, err) < 0) {
                    goto fatal;
                }
            }
        }
    }
    for (size_t i = 0; i < b->n; i++) {
        s->delivered += s->del[i].state == DEL_OK;
    }
    return SL_SEND_OK;
fatal:
    /* wait out the reports already asked for: none may land in a later batch */
    while (s->pending > 0) {
        rd_kafka_poll(s->rk, 100);
        if (rd_kafka_fatal_error(s->rk, NULL, 0)) {
            rd_kafka_purge(s->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            rd_kafka_poll(s->rk, 100);
        }
    }
    return SL_SEND_FATAL;
}

static int ksink_columns(void *self, const char *const *cols, size_t n, sl_error *err)
{
    ksink *s = self;
    sl_buf out;
    sl_buf_init(&out, 1024 * 1024);
    sl_jw w;
    sl_jw_init(&w, &out);
    sl_jw_arr_open(&w);
    for (size_t i = 0; i < n; i++) {
        sl_jw_str(&w, cols[i], strlen(cols[i]));
    }
    sl_jw_arr_close(&w);
    free(s->columns);
    s->columns = sl_buf_steal(&out);
    sl_buf_free(&out);
    if (!s->columns) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    return 0;
}

/* The topic exists afterwards (or a clear error says why not). */
static int ensure_topic(ksink *s, const sl_opts *o, sl_error *err)
{
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(s->rk, 1, NULL, &md, KSINK_CONNECT_MS);
    if (e) {
        return sl_error_set(err, SL_ERR_IO,
                            "kafka brokers %s: no answer within %d s (%s); are they running "
                            "and reachable?",
                            s->brokers, KSINK_CONNECT_MS / 1000, rd_kafka_err2str(e));
    }
    int found = 0;
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strcmp(md->topics[i].topic, s->topic) == 0 && !md->topics[i].err) {
            found = md->topics[i].partition_cnt;
        }
    }
    rd_kafka_metadata_destroy(md);
    if (found) {
        sl_plog(s->ctx, SL_LOG_DEBUG, "topic %s has %d partitions", s->topic, found);
        return 0;
    }
    int parts = (int)sl_opt_int(o, "partitions");
    int repl = (int)sl_opt_int(o, "replication");
    if (sl_ctx_dry_run(s->ctx)) {
        sl_plog(s->ctx, SL_LOG_INFO, "dry run: would create topic %s with %d partitions", s->topic,
                parts);
        return 0;
    }
    char es[512];
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(s->topic, parts, repl, es, sizeof(es));
    if (!nt) {
        return sl_error_set(err, SL_ERR_CONFIG, "kafka topic %s: %s", s->topic, es);
    }
    rd_kafka_AdminOptions_t *ao = rd_kafka_AdminOptions_new(s->rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(ao, KSINK_CREATE_MS, es, sizeof(es));
    rd_kafka_AdminOptions_set_request_timeout(ao, KSINK_CREATE_MS, es, sizeof(es));
    rd_kafka_queue_t *q = rd_kafka_queue_new(s->rk);
    rd_kafka_CreateTopics(s->rk, &nt, 1, ao, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, KSINK_CREATE_MS + 5000);
    int rc = 0;
    if (!ev) {
        rc = sl_error_set(err, SL_ERR_IO, "kafka topic %s: no answer to creating it within %d s",
                          s->topic, KSINK_CREATE_MS / 1000 + 5);
    } else if (rd_kafka_event_error(ev)) {
        rc = sl_error_set(err, SL_ERR_IO,
                          "kafka topic %s does not exist and could not be created on %s: %s",
                          s->topic, s->brokers, rd_kafka_event_error_string(ev));
    } else {
        size_t cnt = 0;
        const rd_kafka_topic_result_t **tr =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
        rd_kafka_resp_err_t te = cnt ? rd_kafka_topic_result_error(tr[0]) : 0;
        if (te && te != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            const char *m = rd_kafka_topic_result_error_string(tr[0]);
            rc = sl_error_set(err, SL_ERR_IO,
                              "kafka topic %s does not exist and could not be created on %s: %s",
                              s->topic, s->brokers, m ? m : rd_kafka_err2str(te));
        } else if (!te) {
            sl_plog(s->ctx, SL_LOG_INFO, "created topic %s with %d partitions", s->topic, parts);
        }
    }
    if (ev) {
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_NewTopic_destroy(nt);
    return rc;
}

static void ksink_destroy(void *self)
{
    ksink *s = self;
    if (!s) {
        return;
    }
    if (s->rk) {
        /* write waited for every report: nothing is outstanding here */
        rd_kafka_purge(s->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(s->rk, 0);
        rd_kafka_destroy(s->rk);
    }
    free(s->columns);
    free(s->del);
    sl_buf_free(&s->val);
    free(s);
}

static int ksink_init(void **self, const sl_opts *o, sl_ctx *ctx, sl_error *err)
{
    if (sl_opts_validate(o, ksink_validate, err)) {
        return SL_ERR_CONFIG;
    }
    ksink *s = calloc(1, sizeof(*s));
    if (!s) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    int rc = SL_ERR_CONFIG;
    char es[512];
    s->ctx = ctx;
    sl_buf_init(&s->val, KSINK_VALUE_MAX);
    s->key = sl_opt_str(o, "key");
    sl_kafka_topic(o, sl_ctx_pipeline(ctx), s->topic, sizeof(s->topic));
    snprintf(s->brokers, sizeof(s->brokers), "%s", sl_opt_str(o, "brokers"));
    rd_kafka_conf_t *conf = sl_kafka_conf(o, sl_ctx_name(ctx), err);
    if (!conf) {
        goto fail;
    }
    /* acks=all with idempotence: librdkafka's retries neither lose nor
     * duplicate; topics are created by ensure_topic with `partitions`, not
     * by the broker's defaults */
    if (rd_kafka_conf_set(conf, "enable.idempotence", "true", es, sizeof(es)) ||
        rd_kafka_conf_set(conf, "acks", "all", es, sizeof(es)) ||
        rd_kafka_conf_set(conf, "allow.auto.create.topics", "false", es, sizeof(es))) {
        rd_kafka_conf_destroy(conf);
        rc = sl_error_set(err, SL_ERR_CONFIG, "kafka: %s", es);
        goto fail;
    }
    /* records of one pipeline repeat their field names and columns header:
     * lz4 shrinks a batch several times over (a broker's retention and
     * network go further), unless the user chose otherwise */
    char cur[64];
    size_t cur_len = sizeof(cur);
    if (rd_kafka_conf_get(conf, "compression.type", cur, &cur_len) == RD_KAFKA_CONF_OK &&
        strcmp(cur, "none") == 0 &&
        rd_kafka_conf_set(conf, "compression.type", "lz4", es, sizeof(es)) != RD_KAFKA_CONF_OK) {
        sl_plog(ctx, SL_LOG_DEBUG, "kafka: no lz4 compression: %s", es);
    }
    rd_kafka_conf_set_opaque(conf, s);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    s->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof(es));
    if (!s->rk) {
        rd_kafka_conf_destroy(conf);
        rc = sl_error_set(err, SL_ERR_CONFIG, "kafka: cannot create a producer: %s", es);
        goto fail;
    }
    if ((rc = ensure_topic(s, o, err)) < 0) {
        goto fail;
    }
    *self = s;
    return 0;
fail:
    ksink_destroy(s);
    return rc < 0 ? rc : SL_ERR;
}

static int ksink_finish(void *self, int success, sl_error *err)
{
    (void)success;
    ksink *s = self;
    rd_kafka_resp_err_t e = rd_kafka_flush(s->rk, 30000);
    if (e) {
        return sl_error_set(err, SL_ERR_IO, "kafka topic %s: messages still undelivered: %s",
                            s->topic, rd_kafka_err2str(e));
    }
    if (s->redelivered) {
        sl_plog(s->ctx, SL_LOG_INFO,
                "%" PRIu64 " message(s) were produced again after a failed "
                "delivery report (possible duplicates)",
                s->redelivered);
    }
    return 0;
}

const sl_sink_plugin sl_sink_kafka = {
    .name = "kafka",
    .summary = "messages on a Kafka topic keyed by a field, every delivery confirmed",
    .options = sl_kafka_options,
    .validate = ksink_validate,
    .defaults =
        {
            .batch_records = 10000,
            .batch_bytes = (int64_t)16 * 1024 * 1024,
            .concurrency = 1,
        },
    .init = ksink_init,
    .columns = ksink_columns,
    .write = ksink_write,
    .finish = ksink_finish,
    .destroy = ksink_destroy,
};
