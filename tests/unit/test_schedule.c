/* Schedules (src/util/schedule.c): parsing, next fire times in UTC and in
 * time zones across DST changes, error messages, threads. The oracle test
 * (tests/integration/test_schedule_oracle.sh) compares hundreds more cases
 * with croniter + zoneinfo. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/schedule.h"

/* "YYYY-MM-DD HH:MM[:SS]" in UTC -> unix seconds */
static int64_t utc(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int n = sscanf(s, "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                   &tm.tm_min, &tm.tm_sec);
    assert_true(n >= 5);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm);
}

static void fmt_utc(int64_t t, char *out, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, n, "%Y-%m-%d %H:%M:%S", &tm);
}

typedef struct next_case {
    const char *expr;
    const char *from; /* UTC */
    const char *want; /* UTC, successive fire times, "|"-separated */
} next_case;

static const next_case next_cases[] = {
    /* fields, UTC */
    {"*/15 * * * *", "2024-01-01 00:00:00", "2024-01-01 00:15|2024-01-01 00:30"},
    {"*/15 * * * *", "2024-01-01 00:07:30", "2024-01-01 00:15"},
    {"* * * * *", "2024-01-01 00:00:59", "2024-01-01 00:01"},
    {"5/20 * * * *", "2024-01-01 00:46", "2024-01-01 01:05|2024-01-01 01:25|2024-01-01 01:45"},
    {"10-50/20 * * * *", "2024-01-01 00:00", "2024-01-01 00:10|2024-01-01 00:30|2024-01-01 00:50"},
    {"0 6 * * mon-fri", "2024-06-07 06:00", "2024-06-10 06:00|2024-06-11 06:00"},
    {"0 0 * * 7", "2024-06-03 00:00", "2024-06-09 00:00"},
    {"0 0 * * 0", "2024-06-03 00:00", "2024-06-09 00:00"},
    {"0 0 * * SUN", "2024-06-03 00:00", "2024-06-09 00:00"},
    {"0 22 * * fri-sun", "2024-06-09 22:00", "2024-06-14 22:00|2024-06-15 22:00|2024-06-16 22:00"},
    /* day-of-month and day-of-week both restricted: either matches */
    {"0 12 13 * 5", "2024-09-01 00:00", "2024-09-06 12:00|2024-09-13 12:00|2024-09-20 12:00"},
    {"0 12 13 * 5", "2024-10-01 00:00", "2024-10-04 12:00|2024-10-11 12:00|2024-10-13 12:00"},
    {"0 12 */2 * 5", "2024-09-01 12:00", "2024-09-03 12:00|2024-09-05 12:00|2024-09-06 12:00"},
    /* only one restricted: that one decides */
    {"0 12 * * 5", "2024-09-01 00:00", "2024-09-06 12:00"},
    {"0 12 1-31 * 5", "2024-09-01 00:00", "2024-09-06 12:00"},
    {"0 12 13 * *", "2024-09-01 00:00", "2024-09-13 12:00"},
    {"0 12 13 * 0-7", "2024-09-01 00:00", "2024-09-13 12:00"},
    /* calendars */
    {"0 0 29 2 *", "2024-03-01 00:00", "2028-02-29 00:00|2032-02-29 00:00"},
    {"0 0 31 * *", "2024-04-01 00:00", "2024-05-31 00:00|2024-07-31 00:00"},
    {"0 0 1 jan,JUL *", "2024-02-01 00:00", "2024-07-01 00:00|2025-01-01 00:00"},
    {"59 23 31 12 *", "2024-12-31 23:59", "2025-12-31 23:59"},
    {"@hourly", "2024-01-01 00:00", "2024-01-01 01:00"},
    {"@daily", "2024-01-01 00:00", "2024-01-02 00:00"},
    {"@weekly", "2024-06-03 00:00", "2024-06-09 00:00"},
    {"@monthly", "2024-06-03 00:00", "2024-07-01 00:00"},
    {"@yearly", "2024-06-03 00:00", "2025-01-01 00:00"},
    {"  0   6 * *   *  ", "2024-01-01 00:00", "2024-01-01 06:00"},
    /* every: slots at multiples of the interval since the epoch */
    {"every 90m", "2024-01-01 00:00:00", "2024-01-01 01:30|2024-01-01 03:00"},
    {"every 90m", "2024-01-01 00:00:01", "2024-01-01 01:30"},
    {"every 1h30m", "2024-01-01 01:29:59", "2024-01-01 01:30"},
    {"EVERY 1d", "2024-01-01 00:00:00", "2024-01-02 00:00"},
    {"every 2s", "2024-01-01 00:00:01", "2024-01-01 00:00:02|2024-01-01 00:00:04"},
    /* time zones */
    {"0 6 * * * Europe/London", "2024-01-15 00:00", "2024-01-15 06:00"},
    {"0 6 * * * Europe/London", "2024-07-01 00:00", "2024-07-01 05:00"},
    {"TZ=Europe/London 0 6 * * *", "2024-07-01 00:00", "2024-07-01 05:00"},
    {"CRON_TZ=America/New_York 0 6 * * *", "2024-07-01 00:00", "2024-07-01 10:00"},
    {"0 6 * * * UTC", "2024-07-01 00:00", "2024-07-01 06:00"},
    {"0 6 * * * Etc/UTC", "2024-07-01 00:00", "2024-07-01 06:00"},
    {"@daily Europe/London", "2024-07-01 00:00", "2024-07-01 23:00"},
    {"0 9 * * mon Asia/Kolkata", "2024-07-01 00:00", "2024-07-01 03:30|2024-07-08 03:30"},
    /* London spring forward (2024-03-31 01:00 UTC: 01:00 GMT -> 02:00 BST):
     * a fixed time in the gap fires at the change, once */
    {"30 1 * * * Europe/London", "2024-03-30 12:00",
     "2024-03-31 01:00|2024-04-01 00:30|2024-04-02 00:30"},
    {"0 1 * * * Europe/London", "2024-03-30 12:00", "2024-03-31 01:00|2024-04-01 00:00"},
    {"0 2 * * * Europe/London", "2024-03-30 12:00", "2024-03-31 01:00|2024-04-01 01:00"},
    {"0,30 1 * * * Europe/London", "2024-03-30 12:00", "2024-03-31 01:00|2024-04-01 00:00"},
    /* ... a wildcard one keeps real time and skips what does not exist */
    {"30 * * * * Europe/London", "2024-03-31 00:00", "2024-03-31 00:30|2024-03-31 01:30"},
    {"*/20 1 * * * Europe/London", "2024-03-30 12:00",
     "2024-04-01 00:00|2024-04-01 00:20|2024-04-01 00:40"},
    /* London fall back (2024-10-27 01:00 UTC: 02:00 BST -> 01:00 GMT) */
    {"30 1 * * * Europe/London", "2024-10-27 00:00", "2024-10-27 00:30|2024-10-28 01:30"},
    {"0 2 * * * Europe/London", "2024-10-26 12:00", "2024-10-27 02:00|2024-10-28 02:00"},
    {"30 * * * * Europe/London", "2024-10-27 00:00",
     "2024-10-27 00:30|2024-10-27 01:30|2024-10-27 02:30"},
    {"*/30 1 * * * Europe/London", "2024-10-26 23:59",
     "2024-10-27 00:00|2024-10-27 00:30|2024-10-27 01:00|2024-10-27 01:30|2024-10-28 01:00"},
    /* New York: spring 2024-03-10 07:00 UTC (02:00 EST -> 03:00 EDT), fall
     * 2024-11-03 06:00 UTC (02:00 EDT -> 01:00 EST) */
    {"30 2 * * * America/New_York", "2024-03-10 00:00", "2024-03-10 07:00|2024-03-11 06:30"},
    {"30 1 * * * America/New_York", "2024-11-03 04:00", "2024-11-03 05:30|2024-11-04 06:30"},
    {"0 * * * * America/New_York", "2024-11-03 04:30",
     "2024-11-03 05:00|2024-11-03 06:00|2024-11-03 07:00"},
    /* Lord Howe: 30-minute changes. Spring 2024-10-05 15:30 UTC (02:00 ->
     * 02:30 local), fall 2024-04-06 15:00 UTC (02:00 -> 01:30 local) */
    {"15 2 * * * Australia/Lord_Howe", "2024-10-05 00:00", "2024-10-05 15:30|2024-10-06 15:15"},
    {"45 1 * * * Australia/Lord_Howe", "2024-04-06 14:00", "2024-04-06 14:45|2024-04-07 15:15"},
    {"45 * * * * Australia/Lord_Howe", "2024-04-06 14:00",
     "2024-04-06 14:45|2024-04-06 15:15|2024-04-06 16:15"},
    /* beyond the zone file's table: the POSIX rule at its end */
    {"0 6 * * * Europe/London", "2100-07-01 00:00", "2100-07-01 05:00"},
    {"0 6 * * * Europe/London", "2100-01-15 00:00", "2100-01-15 06:00"},
    {"30 1 * * * Europe/London", "2100-03-27 12:00", "2100-03-28 01:00"},
    {"30 2 * * * America/New_York", "2100-03-14 00:00", "2100-03-14 07:00"},
    {NULL, NULL, NULL},
};

static void test_next_after(void **state)
{
    (void)state;
    int failures = 0;
    for (const next_case *c = next_cases; c->expr; c++) {
        sl_error err = {0};
        sl_schedule *s = sl_schedule_parse(c->expr, &err);
        if (!s) {
            print_error("%s: parse failed: %s\n", c->expr, err.msg);
            failures++;
            continue;
        }
        int64_t t = utc(c->from);
        char want[256];
        snprintf(want, sizeof(want), "%s", c->want);
        char *save = NULL;
        for (char *w = strtok_r(want, "|", &save); w; w = strtok_r(NULL, "|", &save)) {
            int64_t n = sl_schedule_next_after(s, t);
            if (n != utc(w)) {
                char got[32];
                fmt_utc(n, got, sizeof(got));
                print_error("%s after %s: expected %s UTC, got %s UTC (%lld)\n", c->expr, c->from,
                            w, n < 0 ? "none" : got, (long long)n);
                failures++;
                break;
            }
            t = n;
        }
        sl_schedule_free(s);
    }
    assert_int_equal(failures, 0);
}

static void test_limits(void **state)
{
    (void)state;
    sl_error err = {0};
    sl_schedule *s = sl_schedule_parse("every 1d", &err);
    assert_non_null(s);
    assert_int_equal(sl_schedule_next_after(s, INT64_C(253402300000)), -1);
    assert_int_equal(sl_schedule_next_after(s, -5), -1);
    sl_schedule_free(s);
    s = sl_schedule_parse("0 0 29 2 * Europe/London", &err);
    assert_non_null(s);
    assert_int_equal(sl_schedule_next_after(s, utc("9996-03-01 00:00")), -1);
    assert_int_equal(sl_schedule_next_after(s, utc("2096-03-01 00:00")),
                     utc("2104-02-29 00:00")); /* 2100 is not a leap year */
    sl_schedule_free(s);
    sl_schedule_free(NULL);
}

static void test_format(void **state)
{
    (void)state;
    sl_error err = {0};
    char out[64];
    sl_schedule *s = sl_schedule_parse("0 6 * * * Australia/Lord_Howe", &err);
    assert_non_null(s);
    assert_string_equal(sl_schedule_zone(s), "Australia/Lord_Howe");
    assert_string_equal(sl_schedule_format(s, utc("2024-04-06 15:15"), out, sizeof(out)),
                        "2024-04-07 01:45:00 +10:30");
    assert_int_equal(sl_schedule_utc_offset(s, utc("2024-04-06 14:45")), 11 * 3600);
    sl_schedule_free(s);
    s = sl_schedule_parse("every 90m", &err);
    assert_non_null(s);
    assert_string_equal(sl_schedule_zone(s), "UTC");
    assert_string_equal(sl_schedule_format(s, utc("2024-04-06 15:15"), out, sizeof(out)),
                        "2024-04-06 15:15:00 +00:00");
    sl_schedule_free(s);
    s = sl_schedule_parse("0 6 * * * America/New_York", &err);
    assert_non_null(s);
    assert_string_equal(sl_schedule_format(s, utc("2024-01-01 03:00"), out, sizeof(out)),
                        "2023-12-31 22:00:00 -05:00");
    sl_schedule_free(s);
}

typedef struct err_case {
    const char *expr;
    const char *want[3]; /* substrings of the message */
} err_case;

static const err_case err_cases[] = {
    {"banana", {"found 1 word", "expected `every <duration>`", "0 6 * * mon-fri Europe/London"}},
    {"", {"empty schedule", "every 90m"}},
    {"every", {"`every` needs a duration", "90m"}},
    {"every 90", {"found \"90\"", "unit s, m, h or d"}},
    {"every 90x", {"unit s, m, h or d"}},
    {"every m", {"found \"m\""}},
    {"every 0s", {"at least 1s"}},
    {"every 400d", {"longer than 366d"}},
    {"every 99999999999999999999d", {"longer than 366d"}},
    {"every 90m Europe/London", {"no time zone", "0 6 * * * Europe/London"}},
    {"TZ=Europe/London every 90m", {"no time zone"}},
    {"0 25 * * *", {"hour field: found \"25\"", "out of range", "expected an hour 0-23"}},
    {"61 * * * *", {"minute field: found \"61\"", "a minute 0-59"}},
    {"* * 0 * *", {"day-of-month field: found \"0\"", "a day 1-31"}},
    {"* * * 13 *", {"month field: found \"13\"", "jan-dec"}},
    {"* * * foo *", {"month field", "cannot read \"foo\""}},
    {"* * * * 8", {"day-of-week field: found \"8\"", "0 and 7 are Sunday"}},
    {"* * * * mon-", {"day-of-week field", "cannot read the range \"mon-\""}},
    {"* * * * monday", {"day-of-week field", "cannot read \"monday\""}},
    {"5-1 * * * *", {"minute field", "\"5-1\" runs backwards"}},
    {"*/0 * * * *", {"minute field", "step out of range"}},
    {"*/x * * * *", {"minute field", "bad step"}},
    {"1,,2 * * * *", {"minute field", "empty list item"}},
    {"-1 * * * *", {"minute field", "cannot read"}},
    {"0 0 L * *", {"day-of-month field", "cannot read \"L\""}},
    {"0 0 * * 1#2", {"day-of-week field"}},
    {"0 0 30 2 *", {"never fires", "\"30\"", "\"2\""}},
    {"0 0 31 apr,jun *", {"never fires"}},
    {"0 6 * * * Europe/Londn", {"\"Europe/Londn\"", "not a zone in", "Europe/London"}},
    {"0 6 * * * ../../etc/passwd", {"time zone: found \"../../etc/passwd\""}},
    {"0 6 * * * Europe", {"time zone \"Europe\""}},
    {"0 0 * * * *", {"6th word \"*\"", "seconds"}},
    {"@fortnightly", {"expected one of @yearly"}},
    {"@daily UTC UTC", {"at most a time zone"}},
    {"0 6 * *", {"found 4 words"}},
    {"TZ=UTC 0 6 * * * Europe/London", {"found 6 words"}},
    {"1 2 3 4 5 6 7 8 9", {"more than 8 words"}},
    {NULL, {NULL}},
};

static void test_errors(void **state)
{
    (void)state;
    int failures = 0;
    for (const err_case *c = err_cases; c->expr; c++) {
        sl_error err = {0};
        sl_schedule *s = sl_schedule_parse(c->expr, &err);
        if (s) {
            print_error("\"%s\": accepted, expected an error\n", c->expr);
            failures++;
            sl_schedule_free(s);
            continue;
        }
        assert_int_equal(err.code, SL_ERR_CONFIG);
        for (int i = 0; i < 3 && c->want[i]; i++) {
            if (!strstr(err.msg, c->want[i])) {
                print_error("\"%s\": message \"%s\" lacks \"%s\"\n", c->expr, err.msg, c->want[i]);
                failures++;
            }
        }
    }
    assert_int_equal(failures, 0);
    sl_error err = {0};
    assert_null(sl_schedule_parse(NULL, &err));
}

/* TZDIR is honoured; a file that is not TZif is refused clearly. */
static void test_tzdir(void **state)
{
    (void)state;
    char dir[] = "/tmp/sluice-tz.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[300];
    snprintf(path, sizeof(path), "%s/Bad", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("TZif2 not really\n", f);
    fclose(f);
    /* a copy of London under another name */
    snprintf(path, sizeof(path), "%s/Home", dir);
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "cp /usr/share/zoneinfo/Europe/London %s", path);
    assert_int_equal(system(cmd), 0);

    setenv("TZDIR", dir, 1);
    sl_error err = {0};
    sl_schedule *s = sl_schedule_parse("0 6 * * * Bad", &err);
    assert_null(s);
    assert_non_null(strstr(err.msg, "is not a valid TZif time zone file"));
    s = sl_schedule_parse("0 6 * * * Home", &err);
    assert_non_null(s);
    assert_int_equal(sl_schedule_next_after(s, utc("2024-07-01 00:00")), utc("2024-07-01 05:00"));
    sl_schedule_free(s);
    s = sl_schedule_parse("0 6 * * * Europe/London", &err);
    assert_null(s); /* not in this TZDIR */
    assert_non_null(strstr(err.msg, dir));
    unsetenv("TZDIR");

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* Schedules in different zones used from several threads at once give the
 * same answers as on one thread (no shared time-zone state). */
#define NTHREADS 4
#define NSTEPS 3000

static const char *const thread_exprs[NTHREADS] = {
    "*/7 * * * * Europe/London", "30 1 * * * America/New_York", "*/5 1-3 * * * Australia/Lord_Howe",
    "0 9 * * mon-fri Asia/Tokyo"};

typedef struct thread_arg {
    const sl_schedule *s;
    int64_t out[NSTEPS];
} thread_arg;

static void *thread_main(void *p)
{
    thread_arg *a = p;
    int64_t t = 1700000000;
    for (int i = 0; i < NSTEPS; i++) {
        t = a->out[i] = sl_schedule_next_after(a->s, t);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    sl_schedule *s[NTHREADS];
    static thread_arg one[NTHREADS], many[NTHREADS];
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        sl_error err = {0};
        s[i] = sl_schedule_parse(thread_exprs[i], &err);
        assert_non_null(s[i]);
        one[i].s = many[i].s = s[i];
        thread_main(&one[i]);
    }
    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, thread_main, &many[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        assert_memory_equal(one[i].out, many[i].out, sizeof(one[i].out));
        assert_true(one[i].out[NSTEPS - 1] > 1700000000);
        sl_schedule_free(s[i]);
    }
}

/* Every answer is > t and matches the next answer's own search: walking
 * minute by minute never finds an earlier fire time (UTC, brute force). */
static void test_brute_force_utc(void **state)
{
    (void)state;
    static const char *const exprs[] = {"*/13 */5 * * *", "0 0 13 * 5", "15 3 */3 feb-apr sun",
                                        "7 7 7 7 *", NULL};
    for (size_t k = 0; exprs[k]; k++) {
        sl_error err = {0};
        sl_schedule *s = sl_schedule_parse(exprs[k], &err);
        assert_non_null(s);
        int64_t t = utc("2023-12-30 00:00");
        for (int i = 0; i < 20; i++) {
            int64_t n = sl_schedule_next_after(s, t);
            assert_true(n > t);
            /* no minute in (t, n) fires: next_after(m) == n for m = n - 60 */
            assert_int_equal(sl_schedule_next_after(s, n - 1), n);
            if (n - t > 60) {
                assert_int_equal(sl_schedule_next_after(s, t + (n - t) / 2), n);
            }
            t = n;
        }
        sl_schedule_free(s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_next_after),      cmocka_unit_test(test_limits),
        cmocka_unit_test(test_format),          cmocka_unit_test(test_errors),
        cmocka_unit_test(test_tzdir),           cmocka_unit_test(test_threads),
        cmocka_unit_test(test_brute_force_utc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
