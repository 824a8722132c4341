/* The metrics registry (src/core/metrics.c): exact Prometheus text, label
 * escaping, collectors, and exact totals under concurrent updates. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/metrics.h"

static int reset(void **state)
{
    (void)state;
    sl_metrics_reset();
    return 0;
}

/* Render into a fresh string; the caller frees it. */
static char *render(void)
{
    sl_buf b;
    sl_buf_init(&b, 1 << 20);
    assert_int_equal(sl_metrics_render(&b), 0);
    char *s = strdup(sl_buf_cstr(&b));
    sl_buf_free(&b);
    return s;
}

static void test_exact_text(void **state)
{
    (void)state;
    sl_metric_declare("sluice_jobs_total", SL_METRIC_COUNTER, "Jobs finished, by result");
    sl_metric_declare("sluice_queue_depth", SL_METRIC_GAUGE, "Jobs waiting");
    /* Re-declaring changes nothing (type and help stay, order stays). */
    sl_metric_declare("sluice_jobs_total", SL_METRIC_GAUGE, "other help");

    sl_metric_add("sluice_jobs_total", "result=\"ok\"", 1);
    sl_metric_add("sluice_jobs_total", "result=\"failed\"", 2);
    sl_metric_add("sluice_jobs_total", "result=\"ok\"", 4);
    sl_metric_set("sluice_queue_depth", "", 7);
    sl_metric_set("sluice_queue_depth", "", 3);
    sl_metric_set("sluice_queue_depth", NULL, 5); /* NULL = no labels, same series */

    char *s = render();
    assert_string_equal(s, "# HELP sluice_jobs_total Jobs finished, by result\n"
                           "# TYPE sluice_jobs_total counter\n"
                           "sluice_jobs_total{result=\"ok\"} 5\n"
                           "sluice_jobs_total{result=\"failed\"} 2\n"
                           "# HELP sluice_queue_depth Jobs waiting\n"
                           "# TYPE sluice_queue_depth gauge\n"
                           "sluice_queue_depth 5\n");
    free(s);
}

static void test_number_format(void **state)
{
    (void)state;
    sl_metric_declare("m", SL_METRIC_GAUGE, "h");
    sl_metric_set("m", "k=\"big\"", 1e15);
    sl_metric_set("m", "k=\"frac\"", 0.1);
    sl_metric_set("m", "k=\"neg\"", -2.5);
    sl_metric_set("m", "k=\"third\"", 1.0 / 3.0);
    sl_metric_set("m", "k=\"huge\"", 1e300);
    char *s = render();
    assert_string_equal(s, "# HELP m h\n"
                           "# TYPE m gauge\n"
                           "m{k=\"big\"} 1000000000000000\n"
                           "m{k=\"frac\"} 0.1\n"
                           "m{k=\"neg\"} -2.5\n"
                           "m{k=\"third\"} 0.3333333333333333\n"
                           "m{k=\"huge\"} 1e+300\n");
    free(s);
}

static void test_undeclared_and_late_declare(void **state)
{
    (void)state;
    sl_metric_add("c_total", "", 2);
    sl_metric_set("g", "", 1.5);
    char *s = render();
    /* No HELP line for a family nobody declared; type from the first use. */
    assert_string_equal(s, "# TYPE c_total counter\nc_total 2\n# TYPE g gauge\ng 1.5\n");
    free(s);
    sl_metric_declare("g", SL_METRIC_GAUGE, "late help");
    s = render();
    assert_non_null(strstr(s, "# HELP g late help\n# TYPE g gauge\ng 1.5\n"));
    free(s);
}

static void test_label_escape(void **state)
{
    (void)state;
    sl_buf b;
    sl_buf_init(&b, 1024);
    assert_int_equal(sl_buf_puts(&b, "route=\""), 0);
    assert_int_equal(sl_metric_label_escape(&b, "a\\b\"c\nd/é"), 0);
    assert_int_equal(sl_buf_putc(&b, '"'), 0);
    assert_string_equal(sl_buf_cstr(&b), "route=\"a\\\\b\\\"c\\nd/é\"");

    sl_metric_add("x_total", b.data, 1);
    char *s = render();
    assert_string_equal(s, "# TYPE x_total counter\nx_total{route=\"a\\\\b\\\"c\\nd/é\"} 1\n");
    free(s);

    /* The buffer's hard maximum is respected. */
    sl_buf small;
    sl_buf_init(&small, 4);
    assert_int_equal(sl_metric_label_escape(&small, "ab\"c"), SL_ERR_LIMIT);
    sl_buf_free(&small);
    sl_buf_free(&b);
}

static void test_help_escape(void **state)
{
    (void)state;
    sl_metric_declare("h", SL_METRIC_COUNTER, "line1\nback\\slash \"quoted\"");
    sl_metric_add("h", "", 1);
    char *s = render();
    assert_string_equal(s, "# HELP h line1\\nback\\\\slash \"quoted\"\n# TYPE h counter\nh 1\n");
    free(s);
}

static int collect_calls;

static void collector(void *ud)
{
    /* Runs outside the registry lock: updating metrics from here is the
     * whole point and must not deadlock. */
    collect_calls++;
    sl_metric_set("sluice_jobs_pending", "", *(double *)ud);
}

static void test_collector(void **state)
{
    (void)state;
    double pending = 12;
    collect_calls = 0;
    sl_metric_declare("sluice_jobs_pending", SL_METRIC_GAUGE, "Jobs not yet run");
    sl_metrics_add_collector(collector, &pending);
    char *s = render();
    assert_int_equal(collect_calls, 1);
    assert_non_null(strstr(s, "\nsluice_jobs_pending 12\n"));
    free(s);
    pending = 3;
    s = render();
    assert_int_equal(collect_calls, 2);
    assert_non_null(strstr(s, "\nsluice_jobs_pending 3\n"));
    free(s);
    /* reset forgets collectors too */
    sl_metrics_reset();
    s = render();
    assert_int_equal(collect_calls, 2);
    assert_string_equal(s, "");
    free(s);
}

static void test_render_limit(void **state)
{
    (void)state;
    sl_metric_declare("long_family_name_total", SL_METRIC_COUNTER, "help text");
    sl_metric_add("long_family_name_total", "", 1);
    sl_buf b;
    sl_buf_init(&b, 16);
    assert_int_equal(sl_metrics_render(&b), SL_ERR_LIMIT);
    sl_buf_free(&b);
}

#define THREADS 4
#define ADDS 10000

static void *adder(void *arg)
{
    const char *labels = arg;
    for (int i = 0; i < ADDS; i++) {
        sl_metric_add("conc_total", labels, 1);
        sl_metric_add("conc_total", "shared=\"1\"", 0.5);
    }
    return NULL;
}

static void test_concurrency(void **state)
{
    (void)state;
    static const char *labels[THREADS] = {"t=\"0\"", "t=\"1\"", "t=\"2\"", "t=\"3\""};
    pthread_t th[THREADS];
    sl_metric_declare("conc_total", SL_METRIC_COUNTER, "c");
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, adder, (void *)labels[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
    }
    char *s = render();
    for (int i = 0; i < THREADS; i++) {
        char want[64];
        snprintf(want, sizeof(want), "conc_total{%s} %d\n", labels[i], ADDS);
        assert_non_null(strstr(s, want));
    }
    char want[64];
    snprintf(want, sizeof(want), "conc_total{shared=\"1\"} %d\n", THREADS * ADDS / 2);
    assert_non_null(strstr(s, want));
    free(s);
}

static void test_series_cap(void **state)
{
    (void)state;
    char labels[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(labels, sizeof(labels), "id=\"%d\"", i);
        sl_metric_add("card_total", labels, 1);
    }
    char *s = render();
    /* The first 2048 label sets are kept; later ones are dropped. */
    assert_non_null(strstr(s, "card_total{id=\"2047\"} 1\n"));
    assert_null(strstr(s, "card_total{id=\"2048\"}"));
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_exact_text, reset),
        cmocka_unit_test_setup(test_number_format, reset),
        cmocka_unit_test_setup(test_undeclared_and_late_declare, reset),
        cmocka_unit_test_setup(test_label_escape, reset),
        cmocka_unit_test_setup(test_help_escape, reset),
        cmocka_unit_test_setup(test_collector, reset),
        cmocka_unit_test_setup(test_render_limit, reset),
        cmocka_unit_test_setup(test_concurrency, reset),
        cmocka_unit_test_setup(test_series_cap, reset),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    sl_metrics_reset();
    return rc;
}
