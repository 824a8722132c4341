/* The one retry policy: how long to wait before the next attempt of anything
 * sluice retries (HTTP attempts, streaming downloads, serve jobs, the fakes'
 * own clients). Lower layer: no dependency on core or net.
 *
 * Rule: after attempt number `attempt` (1-based) failed, wait
 *     u * min(max_ms, base_ms * 2^(attempt-1))          ("full jitter")
 * with u uniform in [0, 1) from a per-caller seeded PRNG (never rand() or
 * random(), which are global, unseeded and not thread-safe). A `jitter`
 * below 1 keeps that fraction random and the rest fixed:
 *     cap * (1 - jitter) + cap * jitter * u.
 * When the server said how long to wait (Retry-After) the wait is at least
 * that, but never more than max_ms: a server asking for an hour does not
 * stall a run for an hour (the attempt is made, and fails again, after
 * max_ms). Attempt numbers beyond max_attempts are the caller's business:
 * sl_retry_more() says whether one more is allowed. */
#ifndef SLUICE_UTIL_RETRY_H
#define SLUICE_UTIL_RETRY_H

#include <signal.h>
#include <stdint.h>
#include <time.h>

typedef struct sl_retry_policy {
    int max_attempts; /* attempts in all, the first included; >= 1 */
    int64_t base_ms;  /* cap of the first wait; doubles per attempt */
    int64_t max_ms;   /* cap of any wait, an honoured Retry-After included */
    double jitter;    /* random fraction of the wait, 0..1; 1 = full jitter */
} sl_retry_policy;

/* max_attempts 8, base 500 ms, max 60 s, full jitter (the HTTP client's). */
void sl_retry_policy_default(sl_retry_policy *p);

/* A seed for the PRNG, different per call (time, pid, salt address, a
 * counter); never 0. */
uint64_t sl_retry_seed(const void *salt);
/* Next value of the xorshift64* generator; *state must not be 0 (a 0 state
 * is replaced by a fixed odd constant). Deterministic for a given seed, so
 * tests can fix it. */
uint64_t sl_retry_rand(uint64_t *state);
/* Uniform in [0, 1). */
double sl_retry_u01(uint64_t *state);

/* Wait in milliseconds before the attempt after `attempt` (1-based) failed.
 * retry_after_ms < 0 means the server did not say. rng may be NULL only when
 * p->jitter is 0. Always in [0, p->max_ms]; an attempt < 1 counts as 1. */
int64_t sl_retry_delay_ms(const sl_retry_policy *p, int attempt, int64_t retry_after_ms,
                          uint64_t *rng);

/* 1 when another attempt may follow attempt number `attempt`. */
int sl_retry_more(const sl_retry_policy *p, int attempt);

/* Parse a Retry-After header value (RFC 9110 10.2.3): delay-seconds ("120";
 * "1.5" is accepted too) or an HTTP-date (IMF-fixdate, the obsolete RFC 850
 * and asctime forms), relative to the wall-clock time now. Milliseconds to
 * wait (>= 0; a date in the past gives 0), or -1 when v is NULL, empty or not
 * understood. */
int64_t sl_retry_after_ms(const char *v, time_t now);

/* Sleep ms milliseconds in slices of at most 100 ms, returning early (1) as
 * soon as *stop becomes non-zero; 0 after the full wait. stop may be NULL.
 * EINTR (a signal) does not end the wait by itself: the handler sets stop. */
int sl_retry_sleep_ms(int64_t ms, const volatile sig_atomic_t *stop);

#endif
