/* The one retry policy (see retry.h). */
#include "util/retry.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define RNG_FALLBACK 0x9E3779B97F4A7C15ULL

void sl_retry_policy_default(sl_retry_policy *p)
{
    p->max_attempts = 8;
    p->base_ms = 500;
    p->max_ms = 60000;
    p->jitter = 1.0;
}

static atomic_uint_fast64_t seed_counter;

uint64_t sl_retry_seed(const void *salt)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t n = (uint64_t)atomic_fetch_add(&seed_counter, 1);
    /* splitmix64 of the mixed inputs: nearby seeds give unrelated streams */
    uint64_t z = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)(uintptr_t)salt ^
                 ((uint64_t)getpid() << 40) ^ (n * RNG_FALLBACK);
    z += RNG_FALLBACK;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z ? z : RNG_FALLBACK;
}

uint64_t sl_retry_rand(uint64_t *state)
{
    uint64_t x = *state ? *state : RNG_FALLBACK;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

double sl_retry_u01(uint64_t *state)
{
    return (double)(sl_retry_rand(state) >> 11) * 0x1.0p-53;
}

int64_t sl_retry_delay_ms(const sl_retry_policy *p, int attempt, int64_t retry_after_ms,
                          uint64_t *rng)
{
    int64_t base = p->base_ms > 0 ? p->base_ms : 0;
    int64_t max = p->max_ms > 0 ? p->max_ms : 0;
    double jitter = p->jitter;
    if (!(jitter >= 0)) {
        jitter = 0;
    } else if (jitter > 1) {
        jitter = 1;
    }
    if (attempt < 1) {
        attempt = 1;
    }
    /* 2^62 ms already exceeds any cap: keep the exponent finite */
    double cap = (double)base * ldexp(1.0, attempt - 1 > 62 ? 62 : attempt - 1);
    if (cap > (double)max) {
        cap = (double)max;
    }
    double u = jitter > 0 && rng ? sl_retry_u01(rng) : 0.0;
    double w = cap * (1.0 - jitter) + cap * jitter * u;
    if (retry_after_ms >= 0) {
        double ra = (double)retry_after_ms > (double)max ? (double)max : (double)retry_after_ms;
        if (ra > w) {
            w = ra;
        }
    }
    int64_t ms = (int64_t)llround(w);
    return ms < 0 ? 0 : ms > max ? max : ms;
}

int sl_retry_more(const sl_retry_policy *p, int attempt)
{
    return attempt < (p->max_attempts > 0 ? p->max_attempts : 1);
}

/* ---- HTTP-date --------------------------------------------------------- */

static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static const char *const wkdays[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
static const char *const weekdays[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                       "Friday", "Saturday", "Sunday"};

/* Exactly n digits at *p (leading spaces allowed when sp); advances. */
static int digits(const char **p, int n, int sp, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (sp && c == ' ' && v == 0 && i < n - 1) {
            continue;
        }
        if (c < '0' || c > '9') {
            return -1;
        }
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static int lit(const char **p, const char *s)
{
    size_t n = strlen(s);
    if (strncmp(*p, s, n) != 0) {
        return -1;
    }
    *p += n;
    return 0;
}

static int month(const char **p, int *m)
{
    for (int i = 0; i < 12; i++) {
        if (strncmp(*p, months[i], 3) == 0) {
            *p += 3;
            *m = i;
            return 0;
        }
    }
    return -1;
}

static int hms(const char **p, struct tm *tm)
{
    return digits(p, 2, 0, &tm->tm_hour) || lit(p, ":") || digits(p, 2, 0, &tm->tm_min) ||
                   lit(p, ":") || digits(p, 2, 0, &tm->tm_sec)
               ? -1
               : 0;
}

/* IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", RFC 850 "Sunday, 06-Nov-94
 * 08:49:37 GMT", asctime "Sun Nov  6 08:49:37 1994". -1 when not one. */
static time_t http_date(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *p = s;
    int day = -1;
    for (int i = 0; i < 7 && day < 0; i++) {
        if (strncmp(p, weekdays[i], strlen(weekdays[i])) == 0) {
            p += strlen(weekdays[i]);
            day = i;
            /* RFC 850 */
            int yy;
            if (lit(&p, ", ") || digits(&p, 2, 0, &tm.tm_mday) || lit(&p, "-") ||
                month(&p, &tm.tm_mon) || lit(&p, "-") || digits(&p, 2, 0, &yy) || lit(&p, " ") ||
                hms(&p, &tm) || lit(&p, " GMT")) {
                return -1;
            }
            /* RFC 9110: a two-digit year more than 50 years ahead is in the past century */
            tm.tm_year = yy < 70 ? yy + 100 : yy;
        }
    }
    for (int i = 0; i < 7 && day < 0; i++) {
        if (strncmp(p, wkdays[i], 3) == 0) {
            p += 3;
            day = i;
            if (*p == ',') {
                int y;
                if (lit(&p, ", ") || digits(&p, 2, 0, &tm.tm_mday) || lit(&p, " ") ||
                    month(&p, &tm.tm_mon) || lit(&p, " ") || digits(&p, 4, 0, &y) || lit(&p, " ") ||
                    hms(&p, &tm) || lit(&p, " GMT")) {
                    return -1;
                }
                tm.tm_year = y - 1900;
            } else {
                int y;
                if (lit(&p, " ") || month(&p, &tm.tm_mon) || lit(&p, " ") ||
                    digits(&p, 2, 1, &tm.tm_mday) || lit(&p, " ") || hms(&p, &tm) || lit(&p, " ") ||
                    digits(&p, 4, 0, &y)) {
                    return -1;
                }
                tm.tm_year = y - 1900;
            }
        }
    }
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
        p++;
    }
    if (day < 0 || *p || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
        tm.tm_sec > 60) {
        return -1;
    }
    return timegm(&tm);
}

int64_t sl_retry_after_ms(const char *v, time_t now)
{
    if (!v) {
        return -1;
    }
    while (*v == ' ' || *v == '\t') {
        v++;
    }
    if (!*v) {
        return -1;
    }
    if (*v >= '0' && *v <= '9') {
        char *end = NULL;
        errno = 0;
        double d = strtod(v, &end);
        if (errno || !end || end == v || !isfinite(d) || d < 0) {
            return -1;
        }
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n') {
            end++;
        }
        if (*end) {
            return -1;
        }
        /* a year is plenty; beyond that the number is nonsense, and the
         * caller caps it anyway */
        return d > 31536000.0 ? (int64_t)31536000000 : (int64_t)llround(d * 1000.0);
    }
    time_t t = http_date(v);
    if (t == (time_t)-1) {
        return -1;
    }
    double d = difftime(t, now);
    return d > 0 ? (int64_t)llround(d * 1000.0) : 0;
}

int sl_retry_sleep_ms(int64_t ms, const volatile sig_atomic_t *stop)
{
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    if (ms < 0) {
        ms = 0;
    }
    end.tv_sec += (time_t)(ms / 1000);
    end.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    for (;;) {
        if (stop && *stop) {
            return 1;
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t left = (int64_t)(end.tv_sec - now.tv_sec) * 1000 +
                       (int64_t)(end.tv_nsec - now.tv_nsec) / 1000000;
        if (left <= 0) {
            return 0;
        }
        int64_t slice = left > 100 ? 100 : left;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)slice * 1000000L};
        nanosleep(&ts, NULL);
    }
}
