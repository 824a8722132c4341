/* kafka.h: the shared option checks, and a consumer group's progress read
 * from an in-process mock cluster (committed offsets, watermarks, lag). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>

/* needs rdkafka.h first */
#include <librdkafka/rdkafka_mock.h>

#include "config/config.h"
#include "sluice/kafka.h"

static sl_opts *opts_of(const char *const *pairs, size_t n)
{
    sl_buf errs;
    sl_buf_init(&errs, 0);
    sl_opts *o = sl_opts_from_pairs(sl_kafka_options, pairs, n, &errs);
    if (!o) {
        fail_msg("options rejected: %s", sl_buf_cstr(&errs));
    }
    sl_buf_free(&errs);
    return o;
}

static char reported[4096];

static void report(void *ud, const char *option, const char *fmt, ...)
{
    (void)ud;
    size_t l = strlen(reported);
    snprintf(reported + l, sizeof(reported) - l, "%s: ", option ? option : "-");
    l = strlen(reported);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reported + l, sizeof(reported) - l, fmt, ap);
    va_end(ap);
    l = strlen(reported);
    snprintf(reported + l, sizeof(reported) - l, "\n");
}

static void test_validate(void **state)
{
    (void)state;
    const char *good[] = {"brokers=k1:9092, k2:9093"};
    sl_opts *o = opts_of(good, 1);
    reported[0] = '\0';
    assert_int_equal(sl_kafka_validate(o, report, NULL), 0);
    sl_opts_free(o);

    const char *bad[] = {"brokers=k1,k2:99999", "partitions=0", "workers=2000"};
    o = opts_of(bad, 3);
    reported[0] = '\0';
    assert_int_equal(sl_kafka_validate(o, report, NULL), 4);
    assert_non_null(strstr(reported, "'k1' is not host:port"));
    assert_non_null(strstr(reported, "port 99999 is out of range"));
    assert_non_null(strstr(reported, "partitions: is 0; expected 1..10000"));
    assert_non_null(strstr(reported, "workers: is 2000; expected 1..1024"));
    sl_opts_free(o);

    char buf[64];
    const char *named[] = {"brokers=k:1", "topic=people"};
    o = opts_of(named, 2);
    assert_string_equal(sl_kafka_topic(o, "pipe", buf, sizeof(buf)), "people");
    assert_string_equal(sl_kafka_group(o, "pipe", buf, sizeof(buf)), "sluice.pipe");
    sl_opts_free(o);
}

static void test_group_progress(void **state)
{
    (void)state;
    char es[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "0", es, sizeof(es));
    rd_kafka_t *host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof(es));
    assert_non_null(host);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(host, 1);
    assert_non_null(mc);
    assert_int_equal(rd_kafka_mock_topic_create(mc, "people", 3, 1), 0);
    const char *boot = rd_kafka_mock_cluster_bootstraps(mc);

    /* 10 messages on partition 1 */
    conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", boot, es, sizeof(es));
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof(es));
    assert_non_null(p);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(rd_kafka_producev(p, RD_KAFKA_V_TOPIC("people"), RD_KAFKA_V_PARTITION(1),
                                           RD_KAFKA_V_VALUE("{}", 2),
                                           RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                           RD_KAFKA_V_END),
                         0);
    }
    assert_int_equal(rd_kafka_flush(p, 10000), 0);
    rd_kafka_destroy(p);

    /* the group committed offset 4 of partition 1 */
    conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", boot, es, sizeof(es));
    rd_kafka_conf_set(conf, "group.id", "g", es, sizeof(es));
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, es, sizeof(es));
    assert_non_null(c);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, "people", 1)->offset = 4;
    assert_int_equal(rd_kafka_commit(c, l, 0), 0);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(c);

    char bp[600];
    snprintf(bp, sizeof(bp), "brokers=%s", boot);
    const char *pairs[] = {bp, "topic=people", "group=g"};
    sl_opts *o = opts_of(pairs, 3);
    sl_kafka_partition *parts = NULL;
    size_t n = 0;
    sl_error err = {0};
    if (sl_kafka_group_progress(o, "pipe", 10000, &parts, &n, &err) != 0) {
        fail_msg("group progress: %s", err.msg);
    }
    assert_int_equal(n, 3);
    assert_int_equal(parts[1].partition, 1);
    assert_int_equal(parts[1].committed, 4);
    assert_int_equal(parts[1].high, 10);
    assert_int_equal(parts[1].lag, 6);
    assert_int_equal(parts[0].committed, -1);
    assert_int_equal(parts[0].lag, 0);
    free(parts);

    /* a topic that does not exist is named */
    const char *missing[] = {bp, "topic=nope"};
    sl_opts *o2 = opts_of(missing, 2);
    assert_true(sl_kafka_group_progress(o2, "pipe", 5000, &parts, &n, &err) < 0);
    assert_non_null(strstr(err.msg, "kafka topic nope does not exist"));
    sl_opts_free(o2);
    sl_opts_free(o);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(host);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_group_progress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
