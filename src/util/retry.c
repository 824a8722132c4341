/* The one retry policy (see retry.h). */
#include <time.h>
#include <unistd.h>

#include "util/retry.h"

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t sl_retry_seed(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)getpid() << 16;
    s ^= (uint64_t)(uintptr_t)&s;
    return splitmix(&s);
}

int64_t sl_retry_delay_ms(const sl_retry_policy *p, int attempt, int64_t retry_after_ms,
                          uint64_t *rng)
{
    int64_t cap = p->max_ms > 0 ? p->max_ms : 60000;
    if (retry_after_ms >= 0) {
        return retry_after_ms < cap ? retry_after_ms : cap;
    }
    int shift = attempt < 1 ? 0 : attempt - 1 > 30 ? 30 : attempt - 1;
    int64_t ceiling = p->base_ms > 0 ? p->base_ms : 500;
    ceiling = ceiling > (cap >> shift) ? cap : ceiling << shift;
    if (ceiling > cap) {
        ceiling = cap;
    }
    /* full jitter: uniform in [0, ceiling] */
    return ceiling > 0 ? (int64_t)(splitmix(rng) % (uint64_t)(ceiling + 1)) : 0;
}
