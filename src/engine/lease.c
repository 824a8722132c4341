/* One run of a pipeline at a time.
 *
 * A run holds the lease "run:<pipeline>" in the state store: owner
 * host:pid:nonce, renewed every few seconds by the sink thread and inside
 * every finalize transaction, expiring LEASE_TTL_S after the last renewal.
 * A second run is refused (exit 75) with the holder's host, pid and age. A
 * lease whose holder is gone is taken over: at once when the holder was a
 * process on this host that no longer exists, else when it expires. A run
 * that finds its lease taken (it stalled past the expiry and another run
 * took over) stops before it can move a checkpoint.
 *
 * `sluice worker` processes share one input (a Kafka consumer group divides
 * it): each holds a lease "worker:<pipeline>:<host>:<pid>" instead, renewed
 * the same way, so status can tell the live workers from the dead. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"

#define LEASE_TTL_S 60.0
#define LEASE_RENEW_EVERY_S 5.0

static void host_name(char *out, size_t cap)
{
    if (gethostname(out, cap) != 0 || !out[0]) {
        snprintf(out, cap, "localhost");
    }
    out[cap - 1] = '\0';
}

/* Is the holder a process on this host that no longer exists? */
static int holder_dead(const sl_lease *h)
{
    char host[128];
    host_name(host, sizeof(host));
    if (strcmp(h->host, host) != 0 || h->pid <= 0) {
        return 0;
    }
    return kill((pid_t)h->pid, 0) < 0 && errno == ESRCH;
}

int sl_lease_acquire(runner *r, sl_error *err)
{
    sl_run_lease *l = &r->lease;
    sl_lease want, holder;
    memset(&want, 0, sizeof(want));
    memset(&holder, 0, sizeof(holder));
    host_name(want.host, sizeof(want.host));
    want.pid = getpid();
    if (r->o->mode == SL_RUN_WORKER) {
        /* workers share the input: each holds one of its own, which is how
         * `sluice status` counts the live ones */
        snprintf(l->name, sizeof(l->name), "worker:%s:%s:%ld", r->p->name, want.host,
                 (long)want.pid);
    } else {
        snprintf(l->name, sizeof(l->name), "run:%s", r->p->name);
    }
    snprintf(l->owner, sizeof(l->owner), "%s:%ld:%016llx", want.host, (long)want.pid,
             (unsigned long long)sl_retry_seed(l));
    l->ttl_s = LEASE_TTL_S;
    snprintf(want.name, sizeof(want.name), "%s", l->name);
    snprintf(want.owner, sizeof(want.owner), "%s", l->owner);
    want.expires_at = sl_engine_wall_now() + l->ttl_s;

    int rc = sl_state_lease_take(r->st, &want, NULL, &holder, err);
    if (rc == 0 && holder_dead(&holder)) {
        sl_warn(r->p->name, "taking over the lease of run %s (process %lld on this host is gone)",
                holder.owner, (long long)holder.pid);
        char steal[sizeof(holder.owner)];
        snprintf(steal, sizeof(steal), "%s", holder.owner);
        rc = sl_state_lease_take(r->st, &want, steal, &holder, err);
    }
    if (rc < 0) {
        return rc;
    }
    if (rc == 0) {
        double now = sl_engine_wall_now();
        sl_error_set(err, SL_ERR_LOCKED,
                     "pipeline %s is already running: process %lld on %s holds its lease "
                     "(since %.0fs ago, last heartbeat %.0fs ago; it expires in %.0fs if that "
                     "run died); try again later",
                     r->p->name, (long long)holder.pid, holder.host, now - holder.acquired_at,
                     now - holder.heartbeat_at, holder.expires_at - now);
        return 0;
    }
    l->held = 1;
    l->renewed_at = sl_engine_now();
    return 1;
}

int sl_lease_renew(runner *r, int force, sl_error *err)
{
    sl_run_lease *l = &r->lease;
    if (!l->held) {
        return 0;
    }
    double t = sl_engine_now();
    if (!force && t - l->renewed_at < LEASE_RENEW_EVERY_S) {
        return 0;
    }
    int rc = sl_state_lease_renew(r->st, l->name, l->owner, sl_engine_wall_now() + l->ttl_s, err);
    if (rc < 0) {
        return rc;
    }
    if (rc == 0) {
        l->held = 0;
        return sl_error_set(err, SL_ERR_LOCKED,
                            "pipeline %s: this run lost its lease (it stalled for more than %.0fs "
                            "and another run took over); stopping without recording progress",
                            r->p->name, l->ttl_s);
    }
    l->renewed_at = t;
    return 0;
}

void sl_lease_release(runner *r)
{
    sl_run_lease *l = &r->lease;
    if (!l->held) {
        return;
    }
    sl_error err;
    if (sl_state_lease_release(r->st, l->name, l->owner, &err) < 0) {
        sl_warn(r->p->name, "cannot release the run lease: %s (it expires by itself)", err.msg);
    }
    l->held = 0;
}
