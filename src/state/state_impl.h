/* Private to src/state: the backend vtable behind the public functions of
 * state.h. state.c does everything that is the same for every backend
 * (argument checks, redaction, size limits, transaction ownership and the
 * lock); a backend only stores and loads.
 *
 * Contract for every op: called with the store's lock held; `impl` is what
 * open returned; arguments are already validated (pipeline/key non-empty,
 * status valid, texts redacted and within limits); on failure set err with
 * a sentence that starts with "state <where>: " and names the operation. */
#ifndef SLUICE_STATE_IMPL_H
#define SLUICE_STATE_IMPL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "state/state.h"

#define SL_STATE_WHERE_MAX 512

struct sl_state_ops {
    const char *name; /* "sqlite", "postgres" */
    /* target: what the backend connects to (SQLite: the file path); options:
     * the URL's query string without '?' ("sync=full"), or NULL. Fills where
     * (the database as it may appear in messages: a path, never a password).
     * Returns the backend's handle, or NULL with err set. */
    void *(*open)(const char *target, const char *options, char *where, size_t where_cap,
                  sl_error *err);
    void (*close)(void *impl); /* NULL is a no-op */

    int (*begin)(void *impl, sl_error *err);
    int (*commit)(void *impl, sl_error *err);
    int (*rollback)(void *impl, sl_error *err);

    /* Marks earlier "running" runs of the pipeline "interrupted" and inserts
     * a new "running" one, atomically. */
    int (*run_begin)(void *impl, const char *pipeline, const char *input, double now,
                     int64_t *run_id, sl_error *err);
    int (*run_update)(void *impl, int64_t run_id, const sl_counts *c, sl_error *err);
    /* c NULL keeps the stored counts. */
    int (*run_end)(void *impl, int64_t run_id, const char *status, const sl_counts *c,
                   const char *error, double now, sl_error *err);
    int (*run_last)(void *impl, const char *pipeline, sl_run_info *out, sl_error *err);
    /* pipeline NULL = every pipeline; limit <= 0 = all. */
    int (*runs)(void *impl, const char *pipeline, int limit, sl_run_cb cb, void *ud, sl_error *err);

    int (*kv_get)(void *impl, const char *pipeline, const char *key, sl_buf *out, sl_error *err);
    int (*kv_set)(void *impl, const char *pipeline, const char *key, const char *value, size_t len,
                  double now, sl_error *err);
    int (*kv_del)(void *impl, const char *pipeline, const char *key, sl_error *err);
    int (*kv_each)(void *impl, const char *pipeline, sl_kv_cb cb, void *ud, sl_error *err);
    /* Optional (NULL: state.c loops over kv_get / kv_set): one round trip
     * for many keys. set_many runs inside a transaction state.c opened. */
    int (*kv_get_many)(void *impl, const char *pipeline, const char *const *keys, size_t n,
                       sl_kv_found_cb found, void *ud, sl_error *err);
    int (*kv_set_many)(void *impl, const char *pipeline, const char *const *keys,
                       const char *const *values, size_t n, double now, sl_error *err);

    /* d's texts are already redacted and truncated; d->created_at is set. */
    int (*dl_add)(void *impl, const sl_dead_letter *d, double now, sl_error *err);
    int (*dl_each)(void *impl, const char *pipeline, int limit, sl_dl_cb cb, void *ud,
                   sl_error *err);
    int (*dl_delete)(void *impl, int64_t id, sl_error *err);
    /* response NULL keeps the stored one. */
    int (*dl_bump)(void *impl, int64_t id, const char *error, const char *response, double now,
                   sl_error *err);
    /* pipeline NULL = every pipeline. */
    int64_t (*dl_count)(void *impl, const char *pipeline, sl_error *err);

    /* Jobs. idem_key "" = no idempotency key (stored as NULL); order_key ""
     * = no ordering; expires_at <= 0 = never. 1 stored (*id set), 0 a job
     * with the same (pipeline, idem_key) exists (*id set to it). */
    int (*job_add)(void *impl, const char *pipeline, const char *kind, const char *idem_key,
                   const char *order_key, const char *vars, double expires_at, double now,
                   int64_t *id, sl_error *err);
    /* Atomic against every other connection to the same database, whether or
     * not a transaction is open. now: compared with not_before; wall: the
     * started_at stored. out->vars is malloc'd. 1 claimed, 0 none. */
    int (*job_claim)(void *impl, const char *pipeline, double now, double wall, sl_job *out,
                     sl_error *err);
    /* Only a running job can be finished. rows < 0 keeps the stored count;
     * error "" stores NULL. */
    int (*job_finish)(void *impl, int64_t id, const char *status, double not_before, int64_t rows,
                      const char *error, double now, sl_error *err);
    /* Return how many jobs changed, <0 error. pipeline NULL = every pipeline. */
    int (*job_requeue_running)(void *impl, sl_error *err);
    int (*job_requeue_failed)(void *impl, const char *pipeline, sl_error *err);
    /* The sl_job given to cb (vars included) is valid during the call only. */
    int (*jobs)(void *impl, const char *pipeline, int limit, sl_job_cb cb, void *ud, sl_error *err);
    int (*job_counts)(void *impl, const char *pipeline, int64_t counts[5], sl_error *err);

    /* Leases. take: one atomic statement; 1 taken (want written), 0 held by
     * someone else (holder filled, or zeroed when it vanished meanwhile). */
    int (*lease_take)(void *impl, const sl_lease *want, double now, const char *steal,
                      sl_lease *holder, sl_error *err);
    /* 1 renewed, 0 not ours any more. */
    int (*lease_renew)(void *impl, const char *name, const char *owner, double now,
                       double expires_at, sl_error *err);
    int (*lease_release)(void *impl, const char *name, const char *owner, sl_error *err);
    /* 1 found, 0 none. */
    int (*lease_get)(void *impl, const char *name, sl_lease *out, sl_error *err);
    int (*lease_each)(void *impl, const char *prefix, sl_lease_cb cb, void *ud, sl_error *err);
};

struct sl_state {
    const struct sl_state_ops *ops;
    void *impl;
    /* Recursive: a thread that called begin() keeps it until commit() or
     * rollback(), so another thread's writes never land inside its
     * transaction; the same thread may call every other function meanwhile
     * (including from inside an iteration callback). */
    pthread_mutex_t mu;
    int in_tx;
    char where[SL_STATE_WHERE_MAX];
    /* Redacted copies of texts on their way in; used under the lock only. */
    sl_buf scratch[3];
};

extern const struct sl_state_ops sl_state_sqlite_ops;
extern const struct sl_state_ops sl_state_postgres_ops;

/* Wall-clock time in unix seconds (sub-second precision). */
double sl_state_now(void);

/* "checkpoint" for the key the engine uses, else "key 'KEY'": the noun used
 * in error messages ("cannot write checkpoint for pipeline 'x'"). */
const char *sl_state_key_noun(const char *key, char *buf, size_t cap);

#endif
