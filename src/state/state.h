/* The state store: one place for run history, checkpoints, cursors,
 * snapshots, dead letters and webhook jobs. A small vtable so SQLite (the
 * embedded default) and Postgres (distributed mode) implement the same thing.
 *
 * All functions return 0 on success and <0 with err set on failure, unless
 * noted. Writes made between begin() and commit() are atomic: the engine
 * writes a batch's dead letters and the checkpoint move in one transaction. */
#ifndef SLUICE_STATE_H
#define SLUICE_STATE_H

#include <stdint.h>

#include "sluice/buf.h"
#include "sluice/error.h"

typedef struct sl_counts {
    uint64_t read;    /* records produced by the source */
    uint64_t sent;    /* records the sink acknowledged */
    uint64_t failed;  /* records dead-lettered (rejected or refused) */
    uint64_t skipped; /* records dropped on purpose by a step */
    uint64_t requests;
    uint64_t retries;
} sl_counts;

typedef struct sl_run_info {
    int64_t id;
    char pipeline[128];
    char input[512];
    char status[16];                /* running, ok, partial, failed, interrupted, skipped */
    double started_at, finished_at; /* unix seconds */
    sl_counts counts;
    char error[512];
} sl_run_info;

typedef struct sl_dead_letter {
    int64_t id;
    int64_t run_id;
    const char *pipeline;
    const char *record;   /* JSON object */
    const char *error;    /* human sentence */
    const char *response; /* response body excerpt, or "" */
    int stage;            /* SL_STAGE_* or step index */
    int attempts;
    uint64_t line; /* input line, 0 if none */
    double created_at;
    const char *action; /* the record's action ("lapsed"), or NULL */
} sl_dead_letter;

typedef struct sl_state sl_state;

/* url: a path (SQLite, created with its directory), "sqlite:PATH", or
 * "postgres://..." / "postgresql://..." (a libpq connection URI; the tables
 * live in the schema "sluice", created on first use). */
sl_state *sl_state_open(const char *url, sl_error *err);
/* 1 when the store at url exists already (a dry run reads it but never
 * creates one), 0 when not, <0 when the URL is not understood. */
int sl_state_exists(const char *url);
/* The directory beside the store for files plugins keep (a diff step's
 * snapshots): "<database>.files". <0 with err when the store keeps no
 * files (in memory). */
int sl_state_files_dir(sl_state *s, char *out, size_t cap, sl_error *err);
void sl_state_close(sl_state *s);

int sl_state_begin(sl_state *s, sl_error *err);
int sl_state_commit(sl_state *s, sl_error *err);
int sl_state_rollback(sl_state *s);

/* Runs */
int sl_state_run_begin(sl_state *s, const char *pipeline, const char *input, int64_t *run_id,
                       sl_error *err);
int sl_state_run_update(sl_state *s, int64_t run_id, const sl_counts *c, sl_error *err);
int sl_state_run_end(sl_state *s, int64_t run_id, const char *status, const sl_counts *c,
                     const char *error, sl_error *err);
/* Most recent run of a pipeline: 1 found, 0 none, <0 error. */
int sl_state_run_last(sl_state *s, const char *pipeline, sl_run_info *out, sl_error *err);
typedef int (*sl_run_cb)(void *ud, const sl_run_info *r);
int sl_state_runs(sl_state *s, const char *pipeline, int limit, sl_run_cb cb, void *ud,
                  sl_error *err);

/* Key/value per pipeline: checkpoints ("checkpoint"), cursors, ...
 * get: 1 found (value in out), 0 not found, <0 error. */
int sl_state_kv_get(sl_state *s, const char *pipeline, const char *key, sl_buf *out, sl_error *err);
int sl_state_kv_set(sl_state *s, const char *pipeline, const char *key, const char *value,
                    size_t len, sl_error *err);
int sl_state_kv_del(sl_state *s, const char *pipeline, const char *key, sl_error *err);
typedef int (*sl_kv_cb)(void *ud, const char *key, const char *value, double updated_at);
int sl_state_kv_each(sl_state *s, const char *pipeline, sl_kv_cb cb, void *ud, sl_error *err);
/* Many keys at once (a ledger consulted per batch): found(ud, i, value,
 * len) for each keys[i] present, in no particular order; nonzero from found
 * stops. One round trip on Postgres. */
typedef int (*sl_kv_found_cb)(void *ud, size_t i, const char *value, size_t len);
int sl_state_kv_get_many(sl_state *s, const char *pipeline, const char *const *keys, size_t n,
                         sl_kv_found_cb found, void *ud, sl_error *err);
/* Write many text values at once, atomically: in the caller's transaction
 * when one is open on this thread, else in one of their own. Keys must be
 * distinct. */
int sl_state_kv_set_many(sl_state *s, const char *pipeline, const char *const *keys,
                         const char *const *values, size_t n, sl_error *err);

/* Dead letters. Texts are redacted before they are stored. */
int sl_state_dl_add(sl_state *s, const sl_dead_letter *d, sl_error *err);
typedef int (*sl_dl_cb)(void *ud, const sl_dead_letter *d);
/* Oldest first; limit <= 0 = all. The callback returning nonzero stops. */
int sl_state_dl_each(sl_state *s, const char *pipeline, int limit, sl_dl_cb cb, void *ud,
                     sl_error *err);
int sl_state_dl_delete(sl_state *s, int64_t id, sl_error *err);
int sl_state_dl_bump(sl_state *s, int64_t id, const char *error, const char *response,
                     sl_error *err); /* attempts + 1, new error */
int64_t sl_state_dl_count(sl_state *s, const char *pipeline, sl_error *err);

/* Jobs: durable units of work from triggers (webhooks). Statuses: queued,
 * running, retry (waiting for not_before), done, failed. */
typedef struct sl_job {
    int64_t id;
    char pipeline[128];
    char kind[32];
    char idem_key[256];
    char order_key[256];
    char *vars; /* JSON object, owned (sl_job_clear frees it) */
    char status[16];
    int attempts;
    double created_at, started_at, finished_at, not_before, expires_at;
    int64_t rows;
    char error[512];
} sl_job;

void sl_job_clear(sl_job *j);

/* Store a job; durable when this returns. 1 stored (id set), 0 a job with the
 * same (pipeline, idem_key) already exists (id set to it), <0 error. */
int sl_state_job_add(sl_state *s, const char *pipeline, const char *kind, const char *idem_key,
                     const char *order_key, const char *vars, double expires_at, int64_t *id,
                     sl_error *err);
/* Atomically take the oldest runnable job (status queued, or retry with
 * not_before <= now) of pipeline (NULL = any) whose order_key has no older
 * unfinished job (queued, retry or running): same-key jobs run one at a time
 * in arrival order. Marks it running, attempts + 1. 1 claimed (out filled),
 * 0 nothing runnable, <0 error. */
int sl_state_job_claim(sl_state *s, const char *pipeline, double now, sl_job *out, sl_error *err);
/* End an attempt: status done / retry (with not_before) / failed / queued
 * (handed back, e.g. on shutdown; attempts - 1). */
int sl_state_job_finish(sl_state *s, int64_t id, const char *status, double not_before,
                        int64_t rows, const char *error, sl_error *err);
/* After a crash: every running job goes back to queued. Returns how many, <0 error. */
int sl_state_job_requeue_running(sl_state *s, sl_error *err);
/* sluice retry: failed jobs of pipeline go back to queued (attempts reset).
 * Returns how many, <0 error. */
int sl_state_job_requeue_failed(sl_state *s, const char *pipeline, sl_error *err);
typedef int (*sl_job_cb)(void *ud, const sl_job *j);
/* Newest first; pipeline NULL = all; limit <= 0 = all. */
int sl_state_jobs(sl_state *s, const char *pipeline, int limit, sl_job_cb cb, void *ud,
                  sl_error *err);
/* Count jobs of pipeline (NULL = all) by status: queued, running, retry, done, failed. */
int sl_state_job_counts(sl_state *s, const char *pipeline, int64_t counts[5], sl_error *err);

/* Leases: one run of a pipeline at a time, on one machine or many. A lease
 * is a row (name, owner, host, pid, heartbeat, expiry); the holder renews it
 * while it works (and inside every progress transaction, so a run that lost
 * its lease can never move a checkpoint); a lease whose holder stopped
 * renewing expires and can be taken over. */
typedef struct sl_lease {
    char name[448];  /* "run:<pipeline>", "worker:<pipeline>:<host>:<pid>" */
    char owner[192]; /* "host:pid:nonce": unique per process lifetime */
    char host[128];
    int64_t pid;
    double acquired_at, heartbeat_at, expires_at; /* unix seconds */
} sl_lease;

/* Take the lease `want->name` for want->owner until want->expires_at. Taken
 * when free, expired, already ours, or held by `steal` (an owner the caller
 * proved dead, e.g. a pid on this host that no longer exists; NULL = none).
 * 1 taken, 0 refused (holder filled: who has it), <0 error. Atomic across
 * processes. */
int sl_state_lease_take(sl_state *s, const sl_lease *want, const char *steal, sl_lease *holder,
                        sl_error *err);
/* Extend our lease to expires_at. 1 still ours, 0 lost (taken over), <0 error.
 * May be called inside a transaction (it then commits or rolls back with it). */
int sl_state_lease_renew(sl_state *s, const char *name, const char *owner, double expires_at,
                         sl_error *err);
int sl_state_lease_release(sl_state *s, const char *name, const char *owner, sl_error *err);
/* 1 found (out filled), 0 none, <0 error. */
int sl_state_lease_get(sl_state *s, const char *name, sl_lease *out, sl_error *err);
/* Every lease whose name starts with prefix (expired ones included: compare
 * expires_at with the clock), in name order; cb returning nonzero stops. */
typedef int (*sl_lease_cb)(void *ud, const sl_lease *l);
int sl_state_lease_each(sl_state *s, const char *prefix, sl_lease_cb cb, void *ud, sl_error *err);

#endif
