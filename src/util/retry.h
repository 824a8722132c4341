/* The one retry policy: exponential backoff with full jitter, capped,
 * honouring a server's Retry-After. Every retry loop in sluice asks it how
 * long to wait. */
#ifndef SLUICE_RETRY_H
#define SLUICE_RETRY_H

#include <stdint.h>

typedef struct sl_retry_policy {
    int max_attempts; /* attempts in all, including the first */
    int64_t base_ms;  /* first backoff ceiling */
    int64_t max_ms;   /* cap of any wait, Retry-After included */
} sl_retry_policy;

/* Seed for a per-caller PRNG state (time, pid and address mixed). */
uint64_t sl_retry_seed(void);
/* Wait before attempt `attempt + 1`, after `attempt` attempts failed
 * (attempt >= 1). retry_after_ms >= 0: the server's Retry-After, which wins
 * over the backoff (capped by max_ms); < 0: none. */
int64_t sl_retry_delay_ms(const sl_retry_policy *p, int attempt, int64_t retry_after_ms,
                          uint64_t *rng);

#endif
