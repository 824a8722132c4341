/* kafka source: the records a kafka sink (or `sluice fanout`) put on a
 * topic, read as a member of a consumer group.
 *
 * Positions: each message read gets a run-wide sequence number as its
 * position (rec->pos = seq, line = seq + 1). A FIFO remembers (seq,
 * partition, offset) of every message handed to the engine; when the engine
 * says every record before position P is acknowledged (or dead-lettered)
 * and durable (`acked`, on the sink thread), the entries below P are popped
 * and, per partition, the highest popped offset + 1 is committed to the
 * group (asynchronously; synchronously on revoke and at close). Offsets are
 * never committed ahead of the sink.
 *
 * Rebalances: the assignment strategy is eager ("range" unless the
 * pipeline's properties choose another; "cooperative-sticky" is honoured
 * too). On revoke, what is acknowledged for the revoked partitions is
 * committed synchronously and their FIFO entries are forgotten: records of
 * them still in flight in this process are delivered here and may be read
 * again by the partition's next owner. That is the duplicate bound: at most
 * the records read but not yet acknowledged when the partitions were
 * revoked (the engine's window of batches plus the batch being filled).
 *
 * A message that is not a JSON record (poison) becomes a rejected record
 * naming its topic, partition and offset: it is dead-lettered, its offset
 * is committed like any other, the partition moves on. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "sluice/kafka.h"
#include "sluice/plugin.h"

#define KSRC_POLL_MS 100
#define KSRC_CONNECT_MS 10000
#define KSRC_NAMES_MAX 100000 /* distinct field names kept (poison could bring any) */
#define KSRC_TEXT_MAX ((size_t)64 * 1024 * 1024)
#define KSRC_WARN_EVERY_S 10
#define KSRC_CLOSE_S 10 /* leaving the group, at most */

typedef struct kent {
    uint64_t seq;
    int32_t part; /* -1: forgotten (the partition was revoked) */
    int64_t off;
} kent;

typedef struct kpart {
    int assigned;
    int eof;
    int64_t ack_next; /* offset to commit (acknowledged up to here), -1 none */
    int64_t sent;     /* ack_next last committed, -1 none */
    int64_t next;     /* the offset the next message should have, -1 unknown */
} kpart;

typedef struct ksrc {
    sl_ctx *ctx;
    rd_kafka_t *rk;
    char topic[256], group[256], brokers[1024];
    char input_name[600];
    int until_end;
    int cooperative;
    int closing; /* ksrc_destroy is leaving the group: librdkafka calls get deadlines */
    int stuck;   /* a librdkafka call of the close did not return in time */

    pthread_mutex_t mu; /* guards the FIFO and parts: acked runs on the sink thread */
    kent *q;
    size_t qhead, qlen, qcap;
    kpart *parts;
    size_t nparts;

    uint64_t seq;
    int nassigned;

    /* field names, action names and columns, interned: they outlive records */
    char **names;
    size_t nnames, names_cap;
    const char **cols;
    size_t ncols;
    char *cols_json; /* the sluice-columns header the columns came from */

    sl_buf text;
    rd_kafka_message_t *held; /* read, to be produced after the gap before it */
    double last_warn;
    rd_kafka_resp_err_t last_warn_err;
} ksrc;

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *intern(void *ud, const char *name)
{
    ksrc *s = ud;
    for (size_t i = s->nnames; i-- > 0;) {
        if (strcmp(s->names[i], name) == 0) {
            return s->names[i];
        }
    }
    if (s->nnames >= KSRC_NAMES_MAX) {
        return NULL;
    }
    if (s->nnames == s->names_cap) {
        size_t cap = s->names_cap ? s->names_cap * 2 : 64;
        char **n = realloc(s->names, cap * sizeof(*n));
        if (!n) {
            return NULL;
        }
        s->names = n;
        s->names_cap = cap;
    }
    char *c = strdup(name);
    if (c) {
        s->names[s->nnames++] = c;
    }
    return c;
}

/* parts[p], growing the table; NULL on OOM. Called with mu held. */
static kpart *part_at(ksrc *s, int32_t p)
{
    if (p < 0) {
        return NULL;
    }
    if ((size_t)p >= s->nparts) {
        size_t n = (size_t)p + 1;
        kpart *np = realloc(s->parts, n * sizeof(*np));
        if (!np) {
            return NULL;
        }
        for (size_t i = s->nparts; i < n; i++) {
            np[i] = (kpart){.ack_next = -1, .sent = -1};
        }
        s->parts = np;
        s->nparts = n;
    }
    return &s->parts[p];
}

static int fifo_push(ksrc *s, uint64_t seq, int32_t part, int64_t off)
{
    if (s->qlen == s->qcap) {
        size_t cap = s->qcap ? s->qcap * 2 : 1024;
        kent *n = malloc(cap * sizeof(*n));
        if (!n) {
            return -1;
        }
        for (size_t i = 0; i < s->qlen; i++) {
            n[i] = s->q[(s->qhead + i) % s->qcap];
        }
        free(s->q);
        s->q = n;
        s->qhead = 0;
        s->qcap = cap;
    }
    s->q[(s->qhead + s->qlen) % s->qcap] = (kent){.seq = seq, .part = part, .off = off};
    s->qlen++;
    return 0;
}

/* The offsets acknowledged for partitions (all when only_unassigned is 0
 * and filter NULL; else those in filter) as a list to commit; NULL when
 * there are none. Called with mu held. */
static rd_kafka_topic_partition_list_t *
ack_list(ksrc *s, const rd_kafka_topic_partition_list_t *filter, int only_new)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    for (size_t p = 0; p < s->nparts; p++) {
        kpart *k = &s->parts[p];
        if (k->ack_next < 0 || (only_new && k->ack_next <= k->sent)) {
            continue;
        }
        if (filter && !rd_kafka_topic_partition_list_find(filter, s->topic, (int32_t)p)) {
            continue;
        }
        if (!l) {
            l = rd_kafka_topic_partition_list_new(4);
        }
        rd_kafka_topic_partition_list_add(l, s->topic, (int32_t)p)->offset = k->ack_next;
        k->sent = k->ack_next;
    }
    return l;
}

static void commit_sync(ksrc *s, rd_kafka_topic_partition_list_t *l, const char *why)
{
    if (!l) {
        return;
    }
    rd_kafka_resp_err_t e = rd_kafka_commit(s->rk, l, 0);
    if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        sl_plog(s->ctx, SL_LOG_WARN,
                "committing offsets of topic %s (%s) failed: %s; their records may be read "
                "again",
                s->topic, why, rd_kafka_err2str(e));
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* The librdkafka calls of leaving the group, on a thread of their own so
 * that leaving has a deadline. librdkafka 2.0.2 was seen (about 1 run in
 * 20 of bench/distributed) to block for good in rd_kafka_assign(NULL) while
 * serving the revoke of a close mid-rebalance, and the worker never exited.
 * The job owns what the call needs; whoever of the two threads finishes last
 * frees it. */
enum kop_kind { KOP_UNASSIGN, KOP_INCR_UNASSIGN, KOP_DESTROY, KOP_DESTROY_NO_CLOSE };

typedef struct kop {
    enum kop_kind kind;
    rd_kafka_t *rk;
    rd_kafka_topic_partition_list_t *parts; /* a copy, KOP_INCR_UNASSIGN */
    int done, abandoned;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} kop;

static void kop_free(kop *o)
{
    if (o->parts) {
        rd_kafka_topic_partition_list_destroy(o->parts);
    }
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cv);
    free(o);
}

static void kop_call(kop *o)
{
    switch (o->kind) {
    case KOP_UNASSIGN:
        rd_kafka_assign(o->rk, NULL);
        break;
    case KOP_INCR_UNASSIGN: {
        rd_kafka_error_t *ce = rd_kafka_incremental_unassign(o->rk, o->parts);
        if (ce) {
            rd_kafka_error_destroy(ce);
        }
        break;
    }
    case KOP_DESTROY:
        rd_kafka_destroy(o->rk);
        break;
    case KOP_DESTROY_NO_CLOSE:
        rd_kafka_destroy_flags(o->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        break;
    }
}

static void *kop_main(void *arg)
{
    kop *o = arg;
    kop_call(o);
    pthread_mutex_lock(&o->mu);
    o->done = 1;
    int abandoned = o->abandoned;
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
    if (abandoned) {
        kop_free(o);
    }
    return NULL;
}

/* 1 when the call returned within `seconds`; 0 when it did not (it may
 * still be running: the handle must then be left alone, and everything its
 * callbacks use kept). */
static int kop_within(enum kop_kind kind, rd_kafka_t *rk,
                      const rd_kafka_topic_partition_list_t *parts, int seconds)
{
    kop *o = calloc(1, sizeof(*o));
    if (!o) {
        return 0; /* not even started: treated as stuck, the handle is left */
    }
    o->kind = kind;
    o->rk = rk;
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    pthread_attr_t a;
    pthread_t t;
    int started = 0;
    if ((!parts || (o->parts = rd_kafka_topic_partition_list_copy(parts)) != NULL) &&
        pthread_attr_init(&a) == 0) {
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        started = pthread_create(&t, &a, kop_main, o) == 0;
        pthread_attr_destroy(&a);
    }
    if (!started) {
        kop_call(o); /* no thread to spare: call it here, without a deadline */
        kop_free(o);
        return 1;
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += seconds;
    pthread_mutex_lock(&o->mu);
    while (!o->done && pthread_cond_timedwait(&o->cv, &o->mu, &until) == 0) {
    }
    int done = o->done;
    o->abandoned = !done;
    pthread_mutex_unlock(&o->mu);
    if (done) {
        kop_free(o);
    }
    return done;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    ksrc *s = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS && parts->cnt == 0 && !s->cooperative) {
        sl_plog(s->ctx, SL_LOG_WARN,
                "group %s gave this worker no partition of topic %s: it has more members than "
                "the topic has partitions; this one stays idle until a rebalance gives it one",
                s->group, s->topic);
    }
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < parts->cnt; i++) {
            kpart *k = part_at(s, parts->elems[i].partition);
            if (k) {
                if (!k->assigned) {
                    s->nassigned++;
                }
                *k = (kpart){.assigned = 1, .ack_next = -1, .sent = -1, .next = -1};
            }
        }
        pthread_mutex_unlock(&s->mu);
        /* where the group stands: a later message past that offset means
         * the records between were deleted before anyone read them */
        rd_kafka_topic_partition_list_t *cl = rd_kafka_topic_partition_list_copy(parts);
        if (cl && rd_kafka_committed(rk, cl, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            pthread_mutex_lock(&s->mu);
            for (int i = 0; i < cl->cnt; i++) {
                kpart *k = part_at(s, cl->elems[i].partition);
                if (k && cl->elems[i].err == 0 && cl->elems[i].offset >= 0) {
                    k->next = cl->elems[i].offset;
                }
            }
            pthread_mutex_unlock(&s->mu);
        }
        if (cl) {
            rd_kafka_topic_partition_list_destroy(cl);
        }
        sl_plog(s->ctx, SL_LOG_INFO, "assigned %d partition(s) of topic %s", parts->cnt, s->topic);
        rd_kafka_error_t *ce = NULL;
        rd_kafka_resp_err_t e = 0;
        if (s->cooperative) {
            ce = rd_kafka_incremental_assign(rk, parts);
        } else {
            e = rd_kafka_assign(rk, parts);
        }
        if (ce || e) {
            sl_plog(s->ctx, SL_LOG_ERROR, "taking the assignment failed: %s",
                    ce ? rd_kafka_error_string(ce) : rd_kafka_err2str(e));
            if (ce) {
                rd_kafka_error_destroy(ce);
            }
        }
        return;
    }
    /* revoked (or lost): keep what is acknowledged, forget what is in flight */
    int lost = rd_kafka_assignment_lost(rk);
    size_t forgotten = 0;
    pthread_mutex_lock(&s->mu);
    rd_kafka_topic_partition_list_t *l = lost ? NULL : ack_list(s, parts, 0);
    for (size_t i = 0; i < s->qlen; i++) {
        kent *q = &s->q[(s->qhead + i) % s->qcap];
        if (q->part >= 0 && rd_kafka_topic_partition_list_find(parts, s->topic, q->part)) {
            q->part = -1;
            forgotten++;
        }
    }
    for (int i = 0; i < parts->cnt; i++) {
        kpart *k = part_at(s, parts->elems[i].partition);
        if (k) {
            if (k->assigned) {
                s->nassigned--;
            }
            *k = (kpart){.ack_next = -1, .sent = -1, .next = -1};
        }
    }
    pthread_mutex_unlock(&s->mu);
    commit_sync(s, l, "partitions revoked");
    sl_plog(s->ctx, forgotten ? SL_LOG_WARN : SL_LOG_INFO,
            "%s %d partition(s) of topic %s; %zu record(s) of them in flight here may be read "
            "again by their next owner",
            lost ? "lost" : "revoked", parts->cnt, s->topic, forgotten);
    if (s->closing) {
        if (!kop_within(s->cooperative ? KOP_INCR_UNASSIGN : KOP_UNASSIGN, rk,
                        s->cooperative ? parts : NULL, KSRC_CLOSE_S)) {
            s->stuck = 1;
        }
    } else if (s->cooperative) {
        rd_kafka_error_t *ce = rd_kafka_incremental_unassign(rk, parts);
        if (ce) {
            rd_kafka_error_destroy(ce);
        }
    } else {
        rd_kafka_assign(rk, NULL);
    }
}

static void commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    (void)rk;
    (void)offsets;
    ksrc *s = opaque;
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        sl_plog(s->ctx, SL_LOG_WARN,
                "committing offsets of topic %s failed: %s (retried with "
                "the next acknowledgement)",
                s->topic, rd_kafka_err2str(err));
        pthread_mutex_lock(&s->mu);
        for (size_t p = 0; p < s->nparts; p++) {
            s->parts[p].sent = -1;
        }
        pthread_mutex_unlock(&s->mu);
    }
}

static int ksrc_acked(void *self, uint64_t pos, uint64_t line, sl_error *err)
{
    (void)line;
    (void)err;
    ksrc *s = self;
    pthread_mutex_lock(&s->mu);
    while (s->qlen > 0 && s->q[s->qhead].seq < pos) {
        kent *q = &s->q[s->qhead];
        if (q->part >= 0 && (size_t)q->part < s->nparts && s->parts[q->part].assigned &&
            q->off + 1 > s->parts[q->part].ack_next) {
            s->parts[q->part].ack_next = q->off + 1;
        }
        s->qhead = (s->qhead + 1) % s->qcap;
        s->qlen--;
    }
    rd_kafka_topic_partition_list_t *l = ack_list(s, NULL, 1);
    if (l) {
        /* under the lock: a revoke cannot slip between choosing and sending */
        rd_kafka_commit(s->rk, l, 1);
        rd_kafka_topic_partition_list_destroy(l);
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* Decide the columns from a sluice-columns header (first one seen). 0 ok, 1
 * the header differs from the columns decided before, <0 bad header. */
static int take_columns(ksrc *s, const char *v, size_t len, sl_buf *why)
{
    if (s->cols_json) {
        if (strlen(s->cols_json) == len && memcmp(s->cols_json, v, len) == 0) {
            return 0;
        }
        sl_buf_printf(why,
                      "its columns %.*s differ from those of the first message read %s; a "
                      "topic carries records of one shape",
                      (int)(len > 300 ? 300 : len), v, s->cols_json);
        return 1;
    }
    json_error_t je;
    json_t *a = json_loadb(v, len, 0, &je);
    if (!a || !json_is_array(a)) {
        json_decref(a);
        sl_buf_printf(why, "header sluice-columns is not a JSON array of names");
        return -1;
    }
    size_t n = json_array_size(a);
    const char **cols = calloc(n + 1, sizeof(*cols));
    int rc = cols ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        json_t *e = json_array_get(a, i);
        if (!json_is_string(e) || !(cols[i] = intern(s, json_string_value(e)))) {
            sl_buf_printf(why, "header sluice-columns is not a JSON array of names");
            rc = -1;
        }
    }
    json_decref(a);
    char *copy = rc == 0 ? strndup(v, len) : NULL;
    if (rc < 0 || !copy) {
        free(cols);
        free(copy);
        return -1;
    }
    s->cols = cols;
    s->ncols = n;
    s->cols_json = copy;
    return 0;
}

/* Fill rec from message m. Bad input makes a rejected record, not an error. */
static int decode(ksrc *s, const rd_kafka_message_t *m, sl_record *rec, sl_error *err)
{
    sl_buf why;
    sl_buf_init(&why, 4096);
    rd_kafka_headers_t *h = NULL;
    const void *hv = NULL;
    size_t hlen = 0;
    int rc = 0;
    if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (rd_kafka_header_get_last(h, "sluice-columns", &hv, &hlen) == 0 && hv &&
            take_columns(s, hv, hlen, &why) != 0) {
            goto reject;
        }
        if (rd_kafka_header_get_last(h, "sluice-action", &hv, &hlen) == 0 && hv && hlen > 0 &&
            hlen < 256) {
            char a[256];
            memcpy(a, hv, hlen);
            a[hlen] = '\0';
            rec->action = intern(s, a);
        }
    }
    if (!m->payload || m->len == 0) {
        sl_buf_printf(&why, "the message has no value; expected a JSON record");
        goto reject;
    }
    if (memchr(m->payload, '\0', m->len)) {
        sl_buf_printf(&why, "the message holds a NUL byte; expected a JSON record");
        goto reject;
    }
    sl_buf_reset(&s->text);
    if (sl_buf_append(&s->text, m->payload, m->len) < 0) {
        sl_buf_printf(&why, "the message is larger than %zu MB", KSRC_TEXT_MAX >> 20);
        goto reject;
    }
    sl_error e = {0};
    if (sl_record_from_json(rec, sl_buf_cstr(&s->text), intern, s, &e) < 0) {
        if (e.code == SL_ERR_NOMEM && s->nnames < KSRC_NAMES_MAX) {
            rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory");
            goto out;
        }
        sl_buf_printf(&why, "the message is not a JSON record (%s)",
                      strncmp(e.msg, "stored record ", 14) == 0 ? e.msg + 14 : e.msg);
        goto reject;
    }
    goto out;
reject : {
    uint64_t pos = rec->pos, line = rec->line;
    const char *action = rec->action;
    sl_record_reset(rec);
    rec->pos = pos;
    rec->line = line;
    rec->action = action;
    /* what the message held, so the dead letter shows it */
    if (m->key) {
        sl_record_add_str(rec, "kafka_key", 9, m->key, m->key_len);
    }
    sl_record_add_str(rec, "kafka_value", 11, m->payload ? (const char *)m->payload : "",
                      m->payload ? (m->len > 65536 ? 65536 : m->len) : 0);
    sl_record_reject(rec, SL_STAGE_SOURCE, "topic %s partition %" PRId32 " offset %" PRId64 ": %s",
                     s->topic, m->partition, m->offset, sl_buf_cstr(&why));
}
out:
    sl_buf_free(&why);
    return rc;
}

static int until_reached(ksrc *s)
{
    if (!s->until_end) {
        return 0;
    }
    pthread_mutex_lock(&s->mu);
    int all = s->nassigned > 0;
    for (size_t p = 0; all && p < s->nparts; p++) {
        if (s->parts[p].assigned && !s->parts[p].eof) {
            all = 0;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return all;
}

static int ksrc_next(void *self, sl_record *rec, uint64_t *next_pos, sl_error *err)
{
    ksrc *s = self;
    for (;;) {
        if (sl_ctx_stopping(s->ctx) || until_reached(s)) {
            return 0;
        }
        rd_kafka_message_t *m = s->held;
        s->held = NULL;
        if (!m) {
            m = rd_kafka_consumer_poll(s->rk, KSRC_POLL_MS);
        }
        if (!m) {
            return SL_SOURCE_IDLE;
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            pthread_mutex_lock(&s->mu);
            kpart *k = part_at(s, m->partition);
            if (k && k->assigned) {
                k->eof = 1;
            }
            pthread_mutex_unlock(&s->mu);
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->err) {
            rd_kafka_resp_err_t e = m->err;
            char what[512];
            snprintf(what, sizeof(what), "%s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            if (e == RD_KAFKA_RESP_ERR__FATAL) {
                char fw[512];
                rd_kafka_fatal_error(s->rk, fw, sizeof(fw));
                return sl_error_set(err, SL_ERR_IO, "kafka topic %s (group %s): %s", s->topic,
                                    s->group, fw);
            }
            double t = mono_now();
            if (e != s->last_warn_err || t - s->last_warn >= KSRC_WARN_EVERY_S) {
                sl_plog(s->ctx, SL_LOG_WARN, "kafka topic %s: %s (%s)", s->topic, what,
                        rd_kafka_err2name(e));
                s->last_warn = t;
                s->last_warn_err = e;
            }
            return SL_SOURCE_IDLE;
        }
        pthread_mutex_lock(&s->mu);
        kpart *k = part_at(s, m->partition);
        int64_t gap_from = k && k->next >= 0 && m->offset > k->next ? k->next : -1;
        int pushed = !k ? -1
                     : gap_from >= 0
                         /* the gap's record moves no offset: it is not a message */
                         ? fifo_push(s, s->seq, -1, -1)
                         : fifo_push(s, s->seq, m->partition, m->offset);
        if (k) {
            k->eof = 0;
            k->next = m->offset + 1;
        }
        pthread_mutex_unlock(&s->mu);
        if (pushed >= 0 && gap_from >= 0) {
            /* records deleted (the topic's retention) before this group read
             * them: not silently skipped, a dead letter says which */
            rec->pos = s->seq;
            rec->line = s->seq + 1;
            *next_pos = s->seq + 1;
            s->seq++;
            s->held = m;
            sl_record_add_int(rec, "kafka_partition", 15, m->partition);
            sl_record_add_int(rec, "kafka_offset_from", 17, gap_from);
            sl_record_add_int(rec, "kafka_offset_to", 15, m->offset - 1);
            sl_record_reject(rec, SL_STAGE_SOURCE,
                             "topic %s partition %" PRId32 ": the %" PRId64 " records at offsets "
                             "%" PRId64 " to %" PRId64 " were deleted from the topic (its "
                             "retention) before group %s read them; they cannot be delivered "
                             "from Kafka: produce the input again (sluice fanout --again)",
                             s->topic, m->partition, m->offset - gap_from, gap_from, m->offset - 1,
                             s->group);
            pthread_mutex_lock(&s->mu);
            k->next = m->offset; /* the held message is checked again, and passes */
            pthread_mutex_unlock(&s->mu);
            return 1;
        }
        if (pushed < 0) {
            rd_kafka_message_destroy(m);
            return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
        }
        rec->pos = s->seq;
        rec->line = s->seq + 1;
        *next_pos = s->seq + 1;
        s->seq++;
        int rc = decode(s, m, rec, err);
        rd_kafka_message_destroy(m);
        return rc < 0 ? rc : 1;
    }
}

static const char *const *ksrc_columns(void *self, size_t *n)
{
    ksrc *s = self;
    *n = s->ncols;
    return s->cols;
}

static const char *ksrc_input_name(void *self)
{
    ksrc *s = self;
    return s->input_name;
}

static void ksrc_destroy(void *self)
{
    ksrc *s = self;
    if (!s) {
        return;
    }
    if (s->held) {
        rd_kafka_message_destroy(s->held); /* read, not delivered: not committed either */
        s->held = NULL;
    }
    if (s->rk) {
        pthread_mutex_lock(&s->mu);
        rd_kafka_topic_partition_list_t *l = ack_list(s, NULL, 0);
        pthread_mutex_unlock(&s->mu);
        commit_sync(s, l, "closing");
        /* leave the group (its partitions go to the other members at once),
         * serving the rebalance it causes, with a deadline: librdkafka
         * 2.0.2's blocking close was seen to hang when a rebalance was under
         * way. Past the deadline the group notices in session.timeout.ms. */
        int closed = 0;
        s->closing = 1;
        rd_kafka_queue_t *cq = rd_kafka_queue_new(s->rk);
        rd_kafka_error_t *ce = cq ? rd_kafka_consumer_close_queue(s->rk, cq) : NULL;
        if (ce) {
            sl_plog(s->ctx, SL_LOG_WARN, "leaving group %s: %s", s->group,
                    rd_kafka_error_string(ce));
            rd_kafka_error_destroy(ce);
        } else if (cq) {
            double deadline = mono_now() + KSRC_CLOSE_S;
            while (!s->stuck && !(closed = rd_kafka_consumer_closed(s->rk)) &&
                   mono_now() < deadline) {
                rd_kafka_event_t *ev = rd_kafka_queue_poll(cq, 100);
                if (ev && rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE) {
                    rebalance_cb(s->rk, rd_kafka_event_error(ev),
                                 rd_kafka_event_topic_partition_list(ev), s);
                }
                if (ev) {
                    rd_kafka_event_destroy(ev);
                }
            }
            if (!closed && !s->stuck) {
                sl_plog(s->ctx, SL_LOG_WARN,
                        "leaving group %s took more than %ds; the group will notice this "
                        "worker is gone after its session timeout",
                        s->group, KSRC_CLOSE_S);
            }
        }
        if (cq && !s->stuck) {
            rd_kafka_queue_destroy(cq);
        }
        if (s->stuck ||
            !kop_within(closed ? KOP_DESTROY : KOP_DESTROY_NO_CLOSE, s->rk, NULL, KSRC_CLOSE_S)) {
            /* a librdkafka call did not return: the handle, its queue and
             * s (its callbacks' opaque) are left to it; the process goes on */
            sl_plog(s->ctx, SL_LOG_WARN,
                    "the Kafka client of group %s did not shut down within %ds; going on "
                    "without it (the group hands its partitions on after the session "
                    "timeout at the latest)",
                    s->group, KSRC_CLOSE_S);
            return;
        }
    }
    for (size_t i = 0; i < s->nnames; i++) {
        free(s->names[i]);
    }
    free(s->names);
    free(s->cols);
    free(s->cols_json);
    free(s->q);
    free(s->parts);
    sl_buf_free(&s->text);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static int user_set(const sl_opts *o, const char *prop)
{
    size_t n = sl_opt_count(o, "properties");
    for (size_t i = 0; i < n; i++) {
        const char *k = sl_opt_key(o, "properties", i);
        if (k && strcmp(k, prop) == 0) {
            return 1;
        }
    }
    return 0;
}

static const char *user_value(const sl_opts *o, const char *prop)
{
    size_t n = sl_opt_count(o, "properties");
    for (size_t i = 0; i < n; i++) {
        const char *k = sl_opt_key(o, "properties", i);
        if (k && strcmp(k, prop) == 0) {
            return sl_opt_item(o, "properties", i);
        }
    }
    return NULL;
}

static int check_topic(ksrc *s, sl_error *err)
{
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(s->rk, 1, NULL, &md, KSRC_CONNECT_MS);
    if (e) {
        return sl_error_set(err, SL_ERR_IO,
                            "kafka brokers %s: no answer within %d s (%s); are they running "
                            "and reachable?",
                            s->brokers, KSRC_CONNECT_MS / 1000, rd_kafka_err2str(e));
    }
    int found = 0;
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strcmp(md->topics[i].topic, s->topic) == 0 && !md->topics[i].err) {
            found = md->topics[i].partition_cnt;
        }
    }
    rd_kafka_metadata_destroy(md);
    if (!found && s->until_end) {
        return sl_error_set(err, SL_ERR_INPUT,
                            "kafka topic %s does not exist on %s (until: end has nothing to "
                            "drain)",
                            s->topic, s->brokers);
    }
    if (!found) {
        sl_plog(s->ctx, SL_LOG_WARN, "topic %s does not exist on %s yet; waiting for it", s->topic,
                s->brokers);
    }
    return 0;
}

static int ksrc_init(void **self, const sl_opts *o, sl_ctx *ctx, sl_error *err)
{
    if (sl_opts_validate(o, sl_kafka_validate, err)) {
        return SL_ERR_CONFIG;
    }
    ksrc *s = calloc(1, sizeof(*s));
    if (!s) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&s->mu, NULL);
    int rc = SL_ERR_CONFIG;
    char es[512];
    s->ctx = ctx;
    sl_buf_init(&s->text, KSRC_TEXT_MAX);
    sl_kafka_topic(o, sl_ctx_pipeline(ctx), s->topic, sizeof(s->topic));
    sl_kafka_group(o, sl_ctx_pipeline(ctx), s->group, sizeof(s->group));
    snprintf(s->brokers, sizeof(s->brokers), "%s", sl_opt_str(o, "brokers"));
    snprintf(s->input_name, sizeof(s->input_name), "kafka topic %s (group %s)", s->topic, s->group);
    s->until_end = strcmp(sl_opt_str(o, "until"), "end") == 0;
    const char *strategy = user_value(o, "partition.assignment.strategy");
    s->cooperative = strategy && strstr(strategy, "cooperative") != NULL;

    rd_kafka_conf_t *conf = sl_kafka_conf(o, sl_ctx_name(ctx), err);
    if (!conf) {
        goto fail;
    }
    /* offsets move only through acked; EOF events drive until: end */
    struct {
        const char *k, *v;
        int overridable;
    } set[] = {
        {"group.id", s->group, 0},
        {"enable.auto.commit", "false", 0},
        {"enable.auto.offset.store", "false", 0},
        {"enable.partition.eof", "true", 0},
        {"auto.offset.reset", "earliest", 1},
        {"partition.assignment.strategy", "range", 1},
    };
    for (size_t i = 0; i < sizeof(set) / sizeof(set[0]); i++) {
        if (set[i].overridable && user_set(o, set[i].k)) {
            continue;
        }
        if (rd_kafka_conf_set(conf, set[i].k, set[i].v, es, sizeof(es)) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            rc = sl_error_set(err, SL_ERR_CONFIG, "kafka: %s", es);
            goto fail;
        }
    }
    rd_kafka_conf_set_opaque(conf, s);
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(conf, commit_cb);
    s->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, es, sizeof(es));
    if (!s->rk) {
        rd_kafka_conf_destroy(conf);
        rc = sl_error_set(err, SL_ERR_CONFIG, "kafka: cannot create a consumer: %s", es);
        goto fail;
    }
    rd_kafka_poll_set_consumer(s->rk);
    if ((rc = check_topic(s, err)) < 0) {
        goto fail;
    }
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, s->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(s->rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (e) {
        rc = sl_error_set(err, SL_ERR_IO, "kafka topic %s: subscribing as group %s failed: %s",
                          s->topic, s->group, rd_kafka_err2str(e));
        goto fail;
    }
    sl_plog(ctx, SL_LOG_INFO, "joining group %s on topic %s (%s)", s->group, s->topic,
            s->until_end ? "until every partition is drained" : "until stopped");
    *self = s;
    return 0;
fail:
    ksrc_destroy(s);
    return rc < 0 ? rc : SL_ERR;
}

const sl_source_plugin sl_source_kafka = {
    .name = "kafka",
    .summary = "records from a Kafka topic as a member of a consumer group; offsets committed "
               "only after the sink acknowledged",
    .options = sl_kafka_options,
    .validate = sl_kafka_validate,
    .init = ksrc_init,
    .next = ksrc_next,
    .acked = ksrc_acked,
    .columns = ksrc_columns,
    .input_name = ksrc_input_name,
    .destroy = ksrc_destroy,
};
