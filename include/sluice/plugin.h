/* The plugin API: what a source, step or sink implements, and all it may use.
 * Plugins include only this header (and the headers it includes); the engine
 * never knows a plugin's internals.
 *
 * A plugin is one const struct with designated initializers, listed in the
 * compile-time registry (src/core/registry.c). Its options table drives config
 * validation, `sluice help`, docs and secret redaction. */
#ifndef SLUICE_PLUGIN_H
#define SLUICE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/buf.h"
#include "sluice/error.h"
#include "sluice/http.h"
#include "sluice/json.h"
#include "sluice/log.h"
#include "sluice/record.h"

/* ---------------------------------------------------------------- options */

typedef enum sl_opt_type {
    SL_OPT_STRING = 0,
    SL_OPT_INT, /* 64-bit integer */
    SL_OPT_FLOAT,
    SL_OPT_BOOL,     /* true/false/yes/no/on/off */
    SL_OPT_DURATION, /* "250ms", "3s", "90m", "6h", "1d" or a bare number of seconds */
    SL_OPT_SIZE,     /* "64KB", "4MB", "1GB" (1024-based) or bytes */
    SL_OPT_ENUM,     /* one of `choices` */
    SL_OPT_LIST,     /* sequence of scalars, or one scalar (a list of one) */
    SL_OPT_MAP,      /* mapping of name -> scalar */
} sl_opt_type;

#define SL_OPT_REQUIRED 0x01
#define SL_OPT_SECRET 0x02 /* value is registered with the redactor, never logged */

typedef struct sl_option {
    const char *name;
    sl_opt_type type;
    const char *def; /* default, as config text; NULL = none */
    unsigned flags;
    const char *choices; /* SL_OPT_ENUM: "a|b|c"; SL_OPT_MAP: allowed values or NULL */
    const char *help;    /* one line, shown by `sluice help` and docs */
} sl_option;

#define SL_OPTIONS_END                                                                             \
    {                                                                                              \
        NULL, 0, NULL, 0, NULL, NULL                                                               \
    }

/* Validated option values of one plugin instance. Accessors return the
 * configured value, else the table default, else 0/NULL. They may only be
 * asked for names in the plugin's own table (asking for another is a bug and
 * aborts, so typos in plugins are caught by any test). */
typedef struct sl_opts sl_opts;

int sl_opt_isset(const sl_opts *o, const char *name); /* set in config (not default) */
const char *sl_opt_str(const sl_opts *o, const char *name);
int64_t sl_opt_int(const sl_opts *o, const char *name);
double sl_opt_float(const sl_opts *o, const char *name);
int sl_opt_bool(const sl_opts *o, const char *name);
int64_t sl_opt_duration_ms(const sl_opts *o, const char *name);
int64_t sl_opt_size(const sl_opts *o, const char *name);
size_t sl_opt_count(const sl_opts *o, const char *name);               /* LIST/MAP entries */
const char *sl_opt_item(const sl_opts *o, const char *name, size_t i); /* LIST item / MAP value */
const char *sl_opt_key(const sl_opts *o, const char *name, size_t i);  /* MAP key */
/* "file:line:col" of the option (or of the plugin block when unset), for messages. */
const char *sl_opt_where(const sl_opts *o, const char *name);

/* Validate option values beyond their types. Report every problem found
 * (not only the first) by calling report(ud, option_name, message) with a
 * sentence that says what was found and what is expected; the caller adds
 * file:line:col and the key path. Return the number of problems. */
typedef void (*sl_report_fn)(void *ud, const char *option, const char *fmt, ...) SL_PRINTF(3, 4);
typedef int (*sl_validate_fn)(const sl_opts *opts, sl_report_fn report, void *ud);
/* Run a validate hook and make what it reports one error (SL_ERR_CONFIG):
 * "file:line:col: option: message; ...". For init, so an instance created
 * without configuration loading (a test) refuses what `sluice check` does.
 * Returns the number of problems (0: valid). */
int sl_opts_validate(const sl_opts *o, sl_validate_fn fn, sl_error *err);

/* ---------------------------------------------------------------- context */

/* What the engine offers a plugin instance. */
typedef struct sl_ctx sl_ctx;

const char *sl_ctx_pipeline(const sl_ctx *c);
/* "source:csv:braze-import", used as the log prefix of this instance. */
const char *sl_ctx_name(const sl_ctx *c);
int sl_ctx_dry_run(const sl_ctx *c);
/* Durable key/value state of this plugin instance (a cursor, a ledger,
 * snapshot metadata). Keys are namespaced per instance ("source.http_pages",
 * "step.2.diff", ...), so they never clash with the engine's own keys or
 * another plugin's. get: 1 found (value in out), 0 not found, <0 error; it
 * may be called at any time. set and del are allowed only inside a commit
 * hook, where they join the transaction that closes the run (elsewhere they
 * fail with a clear error): progress never lands ahead of the
 * acknowledgements it depends on. */
int sl_ctx_state_get(sl_ctx *c, const char *key, sl_buf *out, sl_error *err);
int sl_ctx_state_set(sl_ctx *c, const char *key, const char *value, size_t len, sl_error *err);
int sl_ctx_state_del(sl_ctx *c, const char *key, sl_error *err);
/* A directory for files this plugin instance keeps beside the state store
 * (a snapshot too large for a key/value row), created on first use (mode
 * 0700); its path goes into out. Files written there become part of the
 * pipeline's durable state only when the commit hook records them. <0 when
 * the state store keeps no files. */
int sl_ctx_files_dir(sl_ctx *c, sl_buf *out, sl_error *err);
/* A ledger: facts that hold whether or not the run completes (a lookup
 * that was paid for), kept in the state store under a scope name, so every
 * run and every process sharing the store (two pipelines enriching from
 * one account, `sluice worker`s on many machines) sees them. Unlike
 * sl_ctx_state_set, written at any time, from any thread: put writes n
 * entries (distinct keys, text values) atomically and they are durable when
 * it returns. get calls found(ud, i, value, len) for each keys[i] present
 * (nonzero stops). One round trip each on Postgres. <0 on errors; a dry run
 * reads but cannot put. */
typedef int (*sl_ledger_found_fn)(void *ud, size_t i, const char *value, size_t len);
int sl_ctx_ledger_get(sl_ctx *c, const char *scope, const char *const *keys, size_t n,
                      sl_ledger_found_fn found, void *ud, sl_error *err);
int sl_ctx_ledger_put(sl_ctx *c, const char *scope, const char *const *keys,
                      const char *const *values, size_t n, sl_error *err);
/* Unix time (UTC) when this run began (the same value commit hooks get). */
double sl_ctx_run_started(const sl_ctx *c);
/* The user asked for `--again`: deliver an input that an earlier run
 * already delivered completely (a source that recognises such an input
 * refuses it otherwise). */
int sl_ctx_again(const sl_ctx *c);
/* The run cannot be called complete for a reason the engine does not see (a
 * page that could not be fetched and was recorded for the next run): it ends
 * "partial" (exit 2) with this sentence in its summary and notification,
 * even when every record read was delivered. The last call wins. */
void sl_ctx_set_partial(sl_ctx *c, const char *fmt, ...) SL_PRINTF(2, 3);
/* Called from init: this run has nothing to do (the input was already
 * delivered completely): it ends at once as "skipped", exit 0, nothing read
 * or sent, no notification; the sentence is shown and kept in the run's
 * history. */
void sl_ctx_skip_run(sl_ctx *c, const char *fmt, ...) SL_PRINTF(2, 3);
/* Set by the engine when the user asked to stop (SIGINT/SIGTERM). */
int sl_ctx_stopping(const sl_ctx *c);
/* The share of a per-API-key rate limit this process may use: 1 normally;
 * 1/N for each of N `sluice worker` processes sharing one key (the
 * pipeline's `distributed.workers`). A plugin with its own rate limit (the
 * enrich step) multiplies it by this. */
double sl_ctx_rate_share(const sl_ctx *c);

#define sl_plog(ctx, level, ...) sl_log((level), sl_ctx_name(ctx), __VA_ARGS__)

/* ---------------------------------------------------------------- run lifecycle */

/* How a run ended, as the engine tells plugins in their commit hooks. */
typedef struct sl_run_end {
    /* 1: the source reached its end, every end-of-input record was emitted,
     * and every record was acknowledged by the sink or dead-lettered.
     * 0: the run failed or was interrupted: keep old progress (a watermark,
     * a snapshot), record what failed. */
    int complete;
    int dry_run;       /* nothing was sent and nothing may be made current */
    double started_at; /* unix seconds (UTC) when the run began: an incremental
                          source's next watermark */
    uint64_t read, sent, failed, skipped;
} sl_run_end;

/* ---------------------------------------------------------------- sources */

/* `next`: nothing to read right now; call again (see sl_source_plugin). */
#define SL_SOURCE_IDLE 2

typedef struct sl_source_plugin {
    const char *name;
    const char *summary;
    const sl_option *options;
    /* Check option values beyond their declared types (a host list, a
     * delimiter of one character, an expression). Called by configuration
     * validation, so `sluice check` refuses exactly what `run` and `serve`
     * would; not called for values that are {{job}} templates until the job
     * fills them in. Optional; see sl_validate_fn. */
    sl_validate_fn validate;
    /* Create the instance (open files, read headers). *self receives it. */
    int (*init)(void **self, const sl_opts *opts, sl_ctx *ctx, sl_error *err);
    /* Continue from a checkpoint produced by `checkpoint`. Optional. Called
     * right after init, before the first `next`. */
    int (*resume)(void *self, const char *checkpoint, sl_error *err);
    /* `sluice retry`: from now on `next` yields only what earlier runs
     * recorded as failed and the source can fetch again (the pages of a
     * paged API that could not be fetched), after the pipeline's dead
     * letters are replayed; its commit hook then records what is still
     * failed and leaves its other progress (a watermark) as it was. Called
     * right after init, instead of resume. Optional: without it a retry
     * replays dead letters only and the source is not opened. */
    int (*retry)(void *self, sl_error *err);
    /* Produce the next record into rec (already reset). Returns 1 when a
     * record was produced, 0 at end of input, <0 on a fatal error (err set).
     * A bad row is not fatal: produce it with sl_record_reject(rec,
     * SL_STAGE_SOURCE, ...) and it is dead-lettered with its line number.
     * rec->pos/line must be set; *next_pos is set to the position just past it.
     * A source that waits for input (a Kafka consumer) returns SL_SOURCE_IDLE
     * after waiting a short while (~100 ms) with nothing to read: the engine
     * sends what it has batched so far and calls next again. Such a source
     * ends (returns 0) when sl_ctx_stopping() says the user asked to stop:
     * the engine then delivers everything read before it and closes the run
     * normally. */
    int (*next)(void *self, sl_record *rec, uint64_t *next_pos, sl_error *err);
    /* Serialize a resume point: the record starting at (pos, line) is the first
     * one not yet acknowledged. The text is stored as-is and given to resume. */
    int (*checkpoint)(void *self, uint64_t pos, uint64_t line, sl_buf *out, sl_error *err);
    /* Every record before the one at (pos, line) has been acknowledged by
     * the sink or dead-lettered, and that is durable in the state store:
     * for a source whose position lives outside the state store (a Kafka
     * consumer group's committed offsets). Called on the engine's sink
     * thread, while next runs on the reader thread: the source guards what
     * both touch. <0 fails the run. Optional. */
    int (*acked)(void *self, uint64_t pos, uint64_t line, sl_error *err);
    /* Column names when known up front (CSV header), else NULL. */
    const char *const *(*columns)(void *self, size_t *n);
    /* Input name for summaries ("users.csv"). Optional. */
    const char *(*input_name)(void *self);
    /* Progress: bytes consumed so far and total (-1 unknown). Optional. */
    void (*progress)(void *self, int64_t *done, int64_t *total);
    /* End of the run, on the engine's state thread, inside the state-store
     * transaction that closes the run (and, when e->complete, removes the
     * checkpoint). Durable progress that is not a position (an incremental
     * watermark, a ledger of failed pages) is written here with
     * sl_ctx_state_set, so it lands atomically with the acknowledgements it
     * depends on, and only then. <0 rolls the transaction back and fails the
     * run. Optional. */
    int (*commit)(void *self, const sl_run_end *e, sl_error *err);
    void (*destroy)(void *self);
} sl_source_plugin;

/* ---------------------------------------------------------------- steps */

typedef struct sl_step_plugin {
    const char *name;
    const char *summary;
    const sl_option *options;
    sl_validate_fn validate; /* see sl_source_plugin */
    int (*init)(void **self, const sl_opts *opts, sl_ctx *ctx, sl_error *err);
    /* Check the upstream columns when the source knows them. Optional. */
    int (*columns)(void *self, const char *const *cols, size_t n, sl_error *err);
    /* The columns records carry after this step, given those before it
     * (called right after `columns`), for a step that changes them (a
     * projection, a rename): later steps and the sink check these. NULL =
     * unchanged. The array belongs to the instance. Optional. */
    const char *const *(*output_columns)(void *self, const char *const *in, size_t n, size_t *nout);
    /* A step implements process (one record at a time, on the reader thread)
     * or process_batch (a whole batch at once), not both. */

    /* Transform rec in place. The step's index is `stage` (for rejects).
     * Return 0 to keep (possibly now rejected via sl_record_reject), 1 to drop
     * on purpose (counted as skipped), <0 fatal. */
    int (*process)(void *self, sl_record *rec, int stage, sl_error *err);
    /* Steps that do I/O (a lookup per record) work on a batch, so that many
     * requests are in flight at once through the step's own sl_http (its
     * own concurrency, rate limit and retries). Records with status OK are
     * to be processed; set a record's status to SL_REC_SKIP to drop it, or
     * reject it with sl_record_reject(rec, stage, ...). <0 fatal. */
    int (*process_batch)(void *self, sl_batch *b, int stage, sl_error *err);

    /* End of input: called (in step order) once the source is exhausted,
     * repeatedly, with a reset record; fill it and return 1 to emit it
     * (it continues through the later steps and to the sink, like a record
     * read from the source), 0 when there is nothing more, <0 fatal. The
     * diff step emits "lapsed" records here. Not called when the run stops
     * early. Optional. */
    int (*drain)(void *self, sl_record *rec, int stage, sl_error *err);
    /* End of the run: like the source's commit, inside the state-store
     * transaction that closes the run. A step that keeps state (the diff
     * step's snapshot) makes it current here only when e->complete. Optional. */
    int (*commit)(void *self, const sl_run_end *e, sl_error *err);
    void (*destroy)(void *self);
} sl_step_plugin;

/* ---------------------------------------------------------------- sinks */

typedef enum sl_verdict {
    SL_SEND_OK = 0, /* delivered; records individually marked FAILED are dead-lettered */
    SL_SEND_RETRY,  /* transient: the engine retries the batch later */
    SL_SEND_FAIL,   /* the batch cannot be delivered: all its records are dead-lettered */
    SL_SEND_FATAL,  /* the run cannot go on (bad credentials, ...): stop, keep checkpoint */
    /* The batch was refused because of some of its records, without saying
     * which (a 400 for a JSON array): the engine sends it again in halves
     * until the refused records are alone and dead-letters just those, with
     * the answer. For a batch of one record it means FAIL. */
    SL_SEND_SPLIT,
} sl_verdict;

/* Defaults a sink brings (its preset), overridable by pipeline config. */
typedef struct sl_sink_defaults {
    int batch_records;     /* records per batch (default 500) */
    int max_batch_records; /* hard upper bound the destination accepts (0 = none) */
    int64_t batch_bytes;   /* payload bytes per batch (default 4 MB) */
    int concurrency;       /* simultaneous requests (default 4) */
    double rate_per_sec;   /* requests per second (0 = unlimited) */
    double rate_burst;
} sl_sink_defaults;

/* Sink flags */
/* Acknowledgements are provisional until finish() commits the whole load
 * (one database transaction): the engine keeps no checkpoint for such a
 * sink, and an interrupted run starts over instead of resuming. */
#define SL_SINK_TRANSACTIONAL 0x01

typedef struct sl_sink_plugin {
    const char *name;
    const char *summary;
    const sl_option *options;
    sl_validate_fn validate; /* see sl_source_plugin */
    unsigned flags;          /* SL_SINK_* */
    sl_sink_defaults defaults;
    int (*init)(void **self, const sl_opts *opts, sl_ctx *ctx, sl_error *err);
    /* The most records one batch of this instance may hold, when its options
     * decide it (the http sink's one record per request): lowers
     * defaults.max_batch_records; 0 = no further limit. Optional. */
    int (*max_batch_records)(void *self);
    /* Check the columns records will carry (after steps). Optional. */
    int (*columns)(void *self, const char *const *cols, size_t n, sl_error *err);

    /* HTTP sinks implement encode (+ decode); the engine owns the connection
     * pool, rate limit and retries. encode fills req from the batch's OK
     * records; it may set a record's status to SL_REC_SKIP (nothing to send
     * for it) and, when no record is left, leave req->body empty: the batch
     * is then acknowledged without a request. decode sees the final answer (2xx or a non-retryable
     * status, or a retryable one whose attempts ran out, resp->gave_up) and returns the verdict,
     * marking individual records with sl_record_reject(rec, SL_STAGE_SINK, ...) + status FAILED for
     * per-record errors. Without decode: 2xx OK, 401/403 FATAL, gave_up FATAL, other statuses FAIL.
     */
    int (*encode)(void *self, sl_batch *b, sl_http_req *req, sl_error *err);
    sl_verdict (*decode)(void *self, sl_batch *b, const sl_http_resp *resp, sl_error *err);

    /* Non-HTTP sinks implement write instead (called from the sink thread). */
    sl_verdict (*write)(void *self, sl_batch *b, sl_error *err);

    /* End of input: commit (swap staging tables, flush files). success is 0
     * when the run is failing. Optional. */
    int (*finish)(void *self, int success, sl_error *err);
    /* Add preset-specific facts to the run summary object (e.g. Braze's
     * usersProcessed), via summarize. Optional. */
    void (*summarize)(void *self, sl_jw *w, uint64_t sent, uint64_t failed, int success);
    void (*destroy)(void *self);
} sl_sink_plugin;

/* ---------------------------------------------------------------- triggers */

/* A trigger turns outside events (a webhook POST) into durable jobs. Each
 * job runs the pipeline once, with the job's variables substituted for
 * `{{name}}` in the source/steps/sink options (e.g. path: "{{url}}",
 * table: "{{table}}"). `sluice serve` hosts the routes and runs the jobs. */

/* An incoming HTTP request, as the server hands it to a trigger. */
typedef struct sl_webhook_req {
    const char *method;
    const char *path;
    const char *body; /* raw bytes, NUL-terminated, at most the route's max_body */
    size_t body_len;
    const char *remote; /* peer address, for logs */
    /* Header lookup, case-insensitive; NULL when absent. */
    const char *(*header)(const struct sl_webhook_req *req, const char *name);
    void *impl;
} sl_webhook_req;

/* What a trigger decided about one request. */
typedef struct sl_job_spec {
    int accept;          /* 1: store a job (the engine answers 2xx only once it is durable) */
    char idem_key[256];  /* jobs with the same key are stored once (webhook redelivery) */
    char order_key[256]; /* jobs with the same order key run one at a time, in arrival order */
    char kind[32];       /* short label for status ("full", "incremental") */
    sl_buf vars;         /* JSON object of variables for {{name}} substitution */
    double expires_at;   /* unix time after which retrying is pointless (0 = never) */
} sl_job_spec;

typedef struct sl_trigger_plugin {
    const char *name;
    const char *summary;
    const sl_option *options;
    sl_validate_fn validate; /* see sl_source_plugin */
    int (*init)(void **self, const sl_opts *opts, sl_ctx *ctx, sl_error *err);
    /* Route(s) to serve: "POST /webhooks/controlshift". */
    const char *(*route)(void *self);
    size_t (*max_body)(void *self);
    /* Check and parse one request. Fill answer (text/plain or JSON body) and
     * return the HTTP status: 401 bad signature (before any parsing), 400
     * malformed, 200 with job->accept = 0 for events to skip, 202 (or 200)
     * with job->accept = 1 for a job. Called from server threads: must be
     * thread-safe. */
    int (*receive)(void *self, const sl_webhook_req *req, sl_job_spec *job, sl_buf *answer);
    void (*destroy)(void *self);
} sl_trigger_plugin;

/* Mark a record FAILED by the sink with a reason (dead-lettered). */
void sl_record_fail(sl_record *r, const char *fmt, ...) SL_PRINTF(2, 3);

#endif
