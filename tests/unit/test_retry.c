/* The one retry policy (src/util/retry.c): bounds of the jittered wait,
 * Retry-After precedence and cap, HTTP-date parsing, the PRNG and the
 * interruptible sleep. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "util/retry.h"

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_defaults(void **state)
{
    (void)state;
    sl_retry_policy p;
    sl_retry_policy_default(&p);
    assert_int_equal(p.max_attempts, 8);
    assert_int_equal(p.base_ms, 500);
    assert_int_equal(p.max_ms, 60000);
    assert_true(p.jitter == 1.0);
    assert_true(sl_retry_more(&p, 7));
    assert_false(sl_retry_more(&p, 8));
    p.max_attempts = 0; /* nonsense counts as one attempt, never as "forever" */
    assert_false(sl_retry_more(&p, 1));
}

/* Full jitter: every wait within [0, min(max, base*2^(n-1))], the upper part
 * of the range actually reached, and the mean near half the cap. */
static void test_full_jitter_bounds(void **state)
{
    (void)state;
    sl_retry_policy p = {.max_attempts = 100, .base_ms = 100, .max_ms = 5000, .jitter = 1.0};
    uint64_t rng = 12345;
    for (int attempt = 1; attempt <= 12; attempt++) {
        int64_t cap = 100LL << (attempt - 1);
        if (cap > 5000) {
            cap = 5000;
        }
        int64_t lo = cap, hi = 0;
        double sum = 0;
        enum { N = 4000 };
        for (int i = 0; i < N; i++) {
            int64_t d = sl_retry_delay_ms(&p, attempt, -1, &rng);
            assert_true(d >= 0 && d <= cap);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
            sum += (double)d;
        }
        assert_true(lo <= cap / 20);
        assert_true(hi >= cap - cap / 20);
        double mean = sum / N;
        assert_true(mean > 0.4 * (double)cap && mean < 0.6 * (double)cap);
    }
    /* huge attempt numbers stay at the cap, no overflow */
    for (int i = 0; i < 100; i++) {
        int64_t d = sl_retry_delay_ms(&p, 1000000, -1, &rng);
        assert_true(d >= 0 && d <= 5000);
    }
    /* attempt < 1 counts as 1 */
    for (int i = 0; i < 100; i++) {
        assert_true(sl_retry_delay_ms(&p, -3, -1, &rng) <= 100);
    }
}

static void test_partial_and_no_jitter(void **state)
{
    (void)state;
    sl_retry_policy p = {.max_attempts = 10, .base_ms = 1000, .max_ms = 30000, .jitter = 0};
    assert_int_equal(sl_retry_delay_ms(&p, 1, -1, NULL), 1000);
    assert_int_equal(sl_retry_delay_ms(&p, 3, -1, NULL), 4000);
    assert_int_equal(sl_retry_delay_ms(&p, 6, -1, NULL), 30000);
    p.jitter = 0.5;
    uint64_t rng = 7;
    for (int i = 0; i < 1000; i++) {
        int64_t d = sl_retry_delay_ms(&p, 3, -1, &rng);
        assert_true(d >= 2000 && d <= 4000);
    }
    /* out-of-range jitter is clamped, negative caps mean 0 */
    p.jitter = 7;
    for (int i = 0; i < 100; i++) {
        assert_true(sl_retry_delay_ms(&p, 1, -1, &rng) <= 1000);
    }
    sl_retry_policy z = {.max_attempts = 3, .base_ms = -5, .max_ms = -1, .jitter = 1};
    assert_int_equal(sl_retry_delay_ms(&z, 2, 4000, &rng), 0);
}

/* Retry-After is a floor over the jittered wait, and max_ms caps it. */
static void test_retry_after_precedence(void **state)
{
    (void)state;
    sl_retry_policy p = {.max_attempts = 10, .base_ms = 10, .max_ms = 2000, .jitter = 1.0};
    uint64_t rng = 99;
    for (int i = 0; i < 200; i++) {
        /* server asks 1 s, backoff would be <= 10 ms: 1 s */
        assert_int_equal(sl_retry_delay_ms(&p, 1, 1000, &rng), 1000);
        /* server asks 100 s: capped at max_ms */
        assert_int_equal(sl_retry_delay_ms(&p, 1, 100000, &rng), 2000);
        /* Retry-After: 0 means "now": the jittered wait still applies */
        assert_true(sl_retry_delay_ms(&p, 1, 0, &rng) <= 10);
    }
    /* a backoff longer than Retry-After wins */
    sl_retry_policy q = {.max_attempts = 10, .base_ms = 1000, .max_ms = 60000, .jitter = 0};
    assert_int_equal(sl_retry_delay_ms(&q, 5, 2000, NULL), 16000);
}

static void test_retry_after_parse(void **state)
{
    (void)state;
    time_t now = 1445412470; /* Wed, 21 Oct 2015 07:27:50 GMT */
    assert_int_equal(sl_retry_after_ms("1", now), 1000);
    assert_int_equal(sl_retry_after_ms(" 120 ", now), 120000);
    assert_int_equal(sl_retry_after_ms("1.5", now), 1500);
    assert_int_equal(sl_retry_after_ms("0", now), 0);
    assert_int_equal(sl_retry_after_ms("99999999999", now), 31536000000LL);
    /* IMF-fixdate, RFC 850, asctime */
    assert_int_equal(sl_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", now), 10000);
    assert_int_equal(sl_retry_after_ms("Wednesday, 21-Oct-15 07:28:00 GMT", now), 10000);
    assert_int_equal(sl_retry_after_ms("Wed Oct 21 07:28:00 2015", now), 10000);
    assert_int_equal(sl_retry_after_ms("Sun Nov  6 08:49:37 1994", now), 0);
    assert_int_equal(sl_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784111777 - 60), 60000);
    assert_int_equal(sl_retry_after_ms("Sunday, 06-Nov-94 08:49:37 GMT", 784111777 - 1), 1000);
    /* in the past: 0 */
    assert_int_equal(sl_retry_after_ms("Wed, 21 Oct 2015 07:27:00 GMT", now), 0);
    /* not understood */
    const char *bad[] = {"soon",
                         "-5",
                         "5s",
                         "",
                         "   ",
                         "1e",
                         "Wed, 21 Oct 2015 07:28:00",     /* no GMT */
                         "Wed, 21 Oct 2015 07:28:00 PST", /* not GMT */
                         "Wed, 21 Foo 2015 07:28:00 GMT",
                         "Wed, 32 Oct 2015 07:28:00 GMT",
                         "Wed, 21 Oct 2015 25:28:00 GMT",
                         "Wed, 21 Oct 15 07:28:00 GMT",
                         "Xyz, 21 Oct 2015 07:28:00 GMT",
                         "Wed, 21 Oct 2015 07:28:00 GMT junk",
                         "Wednesday, 21 Oct 2015 07:28:00 GMT",
                         "nan",
                         "inf"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (sl_retry_after_ms(bad[i], now) != -1) {
            fail_msg("'%s' was accepted", bad[i]);
        }
    }
    assert_int_equal(sl_retry_after_ms(NULL, now), -1);
}

static void test_prng(void **state)
{
    (void)state;
    /* deterministic for a seed; a 0 state does not get stuck at 0 */
    uint64_t a = 42, b = 42, z = 0;
    for (int i = 0; i < 100; i++) {
        assert_true(sl_retry_rand(&a) == sl_retry_rand(&b));
        assert_true(sl_retry_rand(&z) != 0 || z != 0);
    }
    assert_true(z != 0);
    for (int i = 0; i < 10000; i++) {
        double u = sl_retry_u01(&a);
        assert_true(u >= 0.0 && u < 1.0);
    }
    /* seeds differ call to call, even for the same salt in the same instant */
    uint64_t s1 = sl_retry_seed(&a), s2 = sl_retry_seed(&a);
    assert_true(s1 != 0 && s2 != 0 && s1 != s2);
}

static void test_sleep_interruptible(void **state)
{
    (void)state;
    double t0 = mono();
    assert_int_equal(sl_retry_sleep_ms(30, NULL), 0);
    assert_true(mono() - t0 >= 0.029);
    volatile sig_atomic_t stop = 1;
    t0 = mono();
    assert_int_equal(sl_retry_sleep_ms(60000, &stop), 1);
    assert_true(mono() - t0 < 1.0);
    assert_int_equal(sl_retry_sleep_ms(-5, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full_jitter_bounds),
        cmocka_unit_test(test_partial_and_no_jitter),
        cmocka_unit_test(test_retry_after_precedence),
        cmocka_unit_test(test_retry_after_parse),
        cmocka_unit_test(test_prng),
        cmocka_unit_test(test_sleep_interruptible),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
