/* The delivery core against a scripted source, scripted steps and a
 * scripted synchronous sink, with an in-memory state store: the finalization
 * rules (in-order acknowledgement, where the checkpoint moves, the re-send
 * bound on resume), dead letters, max_failed, batch steps, end-of-input
 * drains, the commit hooks and the run lease. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/run.h"
#include "sluice/plugin.h"

/* ---------------------------------------------------------------- scripts */

/* What the scripted plugins do, and what they saw. One run at a time. */
static struct script {
    /* source */
    uint64_t nrecords;   /* records 0..n-1, field id = i */
    uint64_t resumed_at; /* position given to resume (UINT64_MAX: none) */
    int commit_calls, commit_complete;
    double commit_started_at;
    int set_outside_commit_rc;
    /* sink: verdict per batch (by order of write calls); OK when beyond */
    sl_verdict verdicts[64];
    int nverdicts;
    int writes;
    uint64_t sent_ids[4096]; /* ids of records acknowledged, in order of writes */
    size_t nsent;
    int fail_id; /* the sink refuses this record alone (-1 none) */
    /* steps */
    int reject_every; /* record step rejects ids divisible by this (0 none) */
    int batch_calls;  /* process_batch calls */
    size_t batch_sizes[256];
    int drain_emit; /* records the drain step emits at end of input */
    int drained;
    int step_commit_complete;
    int64_t steal_at;  /* record step: another run takes the lease here (-1 never) */
    int retrying;      /* the source's retry hook was called */
    int tag_action;    /* the record step marks records "changed" */
    char action25[16]; /* the action record 25 reached the sink with */
    uint64_t refetch;  /* in a retry, the source yields ids 5001.. this many */
    sl_state *st;
    /* the waiting source (worker mode) */
    volatile sig_atomic_t stop;
    uint64_t acked[64]; /* positions given to acked, in order */
    int nacked;
    int workers_seen, run_lease_seen; /* leases held while the source ran */
    int columns_calls;                /* the sink's columns hook */
    uint64_t idled_at;                /* the burst the source last said idle after */
    size_t columns_n;
} S;

static void script_reset(void)
{
    memset(&S, 0, sizeof(S));
    S.resumed_at = UINT64_MAX;
    S.fail_id = -1;
    S.commit_complete = -1;
    S.step_commit_complete = -1;
    S.steal_at = -1;
}

typedef struct src {
    uint64_t next;
    sl_ctx *ctx;
} src;

static int src_init(void **self, const sl_opts *o, sl_ctx *ctx, sl_error *err)
{
    src *s = calloc(1, sizeof(*s));
    s->ctx = ctx;
    *self = s;
    /* plugin state may not be written outside the commit hook */
    S.set_outside_commit_rc = sl_ctx_state_set(ctx, "cursor", "x", 1, err);
    return 0;
}

static int src_resume(void *self, const char *cp, sl_error *err)
{
    src *s = self;
    s->next = strtoull(cp, NULL, 10);
    S.resumed_at = s->next;
    return 0;
}

static int src_retry(void *self, sl_error *err)
{
    S.retrying = 1;
    return 0;
}

static int src_next(void *self, sl_record *rec, uint64_t *next_pos, sl_error *err)
{
    src *s = self;
    if (S.retrying) {
        if (s->next >= S.refetch) {
            return 0;
        }
        rec->pos = s->next;
        rec->line = s->next + 1;
        sl_record_add_int(rec, "id", 2, (int64_t)(5001 + s->next++));
        *next_pos = s->next;
        return 1;
    }
    if (s->next >= S.nrecords) {
        return 0;
    }
    rec->pos = s->next;
    rec->line = s->next + 1;
    sl_record_add_int(rec, "id", 2, (int64_t)s->next);
    s->next++;
    *next_pos = s->next;
    return 1;
}

static int src_checkpoint(void *self, uint64_t pos, uint64_t line, sl_buf *out, sl_error *err)
{
    sl_buf_printf(out, "%llu", (unsigned long long)pos);
    return 0;
}

static int src_commit(void *self, const sl_run_end *e, sl_error *err)
{
    src *s = self;
    S.commit_calls++;
    S.commit_complete = e->complete;
    S.commit_started_at = e->started_at;
    if (e->complete) {
        char v[32];
        snprintf(v, sizeof(v), "%.0f", e->started_at);
        return sl_ctx_state_set(s->ctx, "cursor", v, strlen(v), err);
    }
    return 0;
}

static void src_destroy(void *self)
{
    free(self);
}

static const sl_source_plugin test_source = {
    .name = "script",
    .init = src_init,
    .resume = src_resume,
    .retry = src_retry,
    .next = src_next,
    .checkpoint = src_checkpoint,
    .commit = src_commit,
    .destroy = src_destroy,
};

static int64_t rec_id(const sl_record *rec)
{
    sl_field *f = sl_record_get(rec, "id");
    return f ? f->v.i : -1;
}

static int sink_init(void **self, const sl_opts *o, sl_ctx *ctx, sl_error *err)
{
    *self = &S;
    return 0;
}

static sl_verdict sink_write(void *self, sl_batch *b, sl_error *err)
{
    int k = S.writes++;
    sl_verdict v = k < S.nverdicts ? S.verdicts[k] : SL_SEND_OK;
    if (v != SL_SEND_OK) {
        sl_error_set(err, SL_ERR_IO, "scripted verdict %d for write %d", (int)v, k);
        return v;
    }
    for (size_t i = 0; i < b->n; i++) {
        sl_record *rec = &b->recs[i];
        if (rec->status != SL_REC_OK) {
            continue;
        }
        if (rec_id(rec) == 25) {
            snprintf(S.action25, sizeof(S.action25), "%s", rec->action ? rec->action : "");
        }
        if (rec_id(rec) == S.fail_id) {
            sl_record_reject(rec, SL_STAGE_SINK, "refused by the sink");
            rec->status = SL_REC_FAILED;
            continue;
        }
        if (S.nsent < 4096) {
            S.sent_ids[S.nsent++] = (uint64_t)rec_id(rec);
        }
    }
    return SL_SEND_OK;
}

static void sink_destroy(void *self)
{
}

static const sl_sink_plugin test_sink = {
    .name = "script",
    .defaults = {.batch_records = 10, .concurrency = 1},
    .init = sink_init,
    .write = sink_write,
    .destroy = sink_destroy,
};

static int step_init(void **self, const sl_opts *o, sl_ctx *ctx, sl_error *err)
{
    *self = ctx;
    return 0;
}

static void step_destroy(void *self)
{
}

static int rec_step(void *self, sl_record *rec, int stage, sl_error *err)
{
    int64_t id = rec_id(rec);
    if (id == S.steal_at) {
        /* another process proved this run dead and took over */
        sl_lease h, l;
        sl_error e = {0};
        memset(&l, 0, sizeof(l));
        if (sl_state_lease_get(S.st, "run:t", &h, &e) != 1) {
            return sl_error_set(err, SL_ERR, "no lease to steal");
        }
        snprintf(l.name, sizeof(l.name), "run:t");
        snprintf(l.owner, sizeof(l.owner), "thief:1:x");
        l.expires_at = (double)time(NULL) + 60;
        if (sl_state_lease_take(S.st, &l, h.owner, NULL, &e) != 1) {
            return sl_error_set(err, SL_ERR, "cannot steal: %s", e.msg);
        }
    }
    if (S.tag_action) {
        rec->action = "changed";
    }
    if (S.reject_every && id >= 0 && id % S.reject_every == 0) {
        sl_record_reject(rec, stage, "id %lld is not wanted", (long long)id);
    }
    return 0;
}

static const sl_step_plugin record_step = {
    .name = "rec",
    .init = step_init,
    .process = rec_step,
    .destroy = step_destroy,
};

/* A batch step: marks every record it sees; sees each one once. */
static int batch_step(void *self, sl_batch *b, int stage, sl_error *err)
{
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++) {
        sl_record *rec = &b->recs[i];
        if (rec->status != SL_REC_OK) {
            continue;
        }
        if (sl_record_get(rec, "enriched")) {
            return sl_error_set(err, SL_ERR, "record %lld enriched twice", (long long)rec_id(rec));
        }
        sl_record_add_bool(rec, "enriched", 8, 1);
        n++;
    }
    if (S.batch_calls < 256) {
        S.batch_sizes[S.batch_calls] = n;
    }
    S.batch_calls++;
    return 0;
}

static const sl_step_plugin batching_step = {
    .name = "batch",
    .init = step_init,
    .process_batch = batch_step,
    .destroy = step_destroy,
};

/* Emits drain_emit records (ids 10000+) at end of input. */
static int drain_step_drain(void *self, sl_record *rec, int stage, sl_error *err)
{
    if (S.drained >= S.drain_emit) {
        return 0;
    }
    sl_record_add_int(rec, "id", 2, 10000 + S.drained++);
    rec->action = "lapsed";
    return 1;
}

static int pass(void *self, sl_record *rec, int stage, sl_error *err)
{
    return 0;
}

static int drain_commit(void *self, const sl_run_end *e, sl_error *err)
{
    S.step_commit_complete = e->complete;
    return sl_ctx_state_set(self, "snapshot", e->complete ? "new" : "old", 3, err);
}

static const sl_step_plugin draining_step = {
    .name = "drain",
    .init = step_init,
    .process = pass,
    .drain = drain_step_drain,
    .commit = drain_commit,
    .destroy = step_destroy,
};

/* A source that waits for input, as a Kafka consumer does: bursts of 3
 * records, each followed by SL_SOURCE_IDLE; after record 23 the user asks
 * to stop, and it ends. Its columns are known only once it read one. */
static int count_lease(void *ud, const sl_lease *l)
{
    (*(int *)ud)++;
    return 0;
}

static int idle_next(void *self, sl_record *rec, uint64_t *next_pos, sl_error *err)
{
    src *s = self;
    if (sl_ctx_stopping(s->ctx)) {
        return 0;
    }
    if (s->next > 0 && s->next % 3 == 0 && S.idled_at != s->next) {
        S.idled_at = s->next;
        if (s->next == 3) {
            sl_error e = {0};
            sl_state_lease_each(S.st, "worker:t:", count_lease, &S.workers_seen, &e);
            sl_state_lease_each(S.st, "run:t", count_lease, &S.run_lease_seen, &e);
        }
        return SL_SOURCE_IDLE;
    }
    rec->pos = s->next;
    rec->line = s->next + 1;
    sl_record_add_int(rec, "id", 2, (int64_t)s->next);
    s->next++;
    *next_pos = s->next;
    if (s->next == 23) {
        S.stop = 1; /* as SIGTERM would */
    }
    return 1;
}

static int idle_acked(void *self, uint64_t pos, uint64_t line, sl_error *err)
{
    if (S.nacked < 64) {
        S.acked[S.nacked++] = pos;
    }
    return 0;
}

static const char *const id_cols[] = {"id"};

static const char *const *idle_columns(void *self, size_t *n)
{
    src *s = self;
    *n = 1;
    return s->next > 0 ? id_cols : NULL;
}

static const sl_source_plugin idle_source = {
    .name = "waiting",
    .init = src_init,
    .next = idle_next,
    .acked = idle_acked,
    .columns = idle_columns,
    .commit = src_commit,
    .destroy = src_destroy,
};

static int sink_columns(void *self, const char *const *cols, size_t n, sl_error *err)
{
    S.columns_calls++;
    S.columns_n = n;
    return 0;
}

static const sl_sink_plugin columns_sink = {
    .name = "script",
    .defaults = {.batch_records = 10, .concurrency = 1},
    .init = sink_init,
    .columns = sink_columns,
    .write = sink_write,
    .destroy = sink_destroy,
};

/* ---------------------------------------------------------------- harness */

typedef struct pipe_def {
    sl_pipeline_cfg p;
    sl_plugin_cfg steps[4];
    const sl_step_plugin *step_plugins[4];
} pipe_def;

static void pipe_init(pipe_def *d, const sl_step_plugin *const *steps, size_t nsteps)
{
    memset(d, 0, sizeof(*d));
    d->p.name = "t";
    d->p.source.type = "script";
    d->p.source_plugin = &test_source;
    d->p.sink.type = "script";
    d->p.sink_plugin = &test_sink;
    for (size_t i = 0; i < nsteps; i++) {
        d->steps[i].type = (char *)steps[i]->name;
        d->step_plugins[i] = steps[i];
    }
    d->p.steps = d->steps;
    d->p.step_plugins = d->step_plugins;
    d->p.nsteps = nsteps;
    d->p.concurrency = 1;
    d->p.rate_per_sec = -1;
    d->p.batch_records = 10;
    d->p.batch_bytes = -1;
    d->p.max_attempts = 3;
    d->p.backoff_base_ms = 1;
    d->p.backoff_max_ms = 2;
    d->p.timeout_ms = 1000;
    d->p.max_failed = -1;
}

static sl_state *mem_state(void)
{
    sl_error err = {0};
    sl_state *s = sl_state_open("sqlite::memory:", &err);
    if (!s) {
        fail_msg("state: %s", err.msg);
    }
    return s;
}

static int run(pipe_def *d, sl_state *st, sl_run_mode mode, sl_run_result *res)
{
    sl_run_opts o = {.mode = mode};
    return sl_run_pipeline(NULL, &d->p, st, &o, res);
}

static int kv(sl_state *st, const char *key, char *out, size_t cap)
{
    sl_error err = {0};
    sl_buf b = {0};
    int rc = sl_state_kv_get(st, "t", key, &b, &err);
    if (rc == 1) {
        snprintf(out, cap, "%s", sl_buf_cstr(&b));
    }
    sl_buf_free(&b);
    return rc;
}

/* ---------------------------------------------------------------- tests */

static void test_complete_run_commits(void **state)
{
    script_reset();
    S.nrecords = 95;
    pipe_def d;
    pipe_init(&d, NULL, 0);
    sl_state *st = mem_state();
    sl_run_result res;
    assert_int_equal(run(&d, st, SL_RUN_NORMAL, &res), SL_EXIT_OK);
    assert_int_equal(res.counts.read, 95);
    assert_int_equal(res.counts.sent, 95);
    assert_int_equal(S.nsent, 95);
    for (size_t i = 0; i < S.nsent; i++) {
        assert_int_equal(S.sent_ids[i], i); /* in order, each once */
    }
    assert_int_equal(S.writes, 10);
    /* plugin state is refused outside the commit hook, kept inside it */
    assert_true(S.set_outside_commit_rc < 0);
    assert_int_equal(S.commit_calls, 1);
    assert_int_equal(S.commit_complete, 1);
    char v[64];
    assert_int_equal(kv(st, "source.script/cursor", v, sizeof(v)), 1);
    assert_true(S.commit_started_at > 1.7e9);
    assert_int_equal(strtoll(v, NULL, 10), (long long)(S.commit_started_at + 0.5));
    /* a complete run leaves no checkpoint, and no lease */
    assert_int_equal(kv(st, "checkpoint", v, sizeof(v)), 0);
    sl_error err = {0};
    sl_lease l;
    assert_int_equal(sl_state_lease_get(st, "run:t", &l, &err), 0);
    sl_state_close(st);
}

/* A fatal verdict on the 4th batch: the checkpoint stays after the 3rd,
 * the source keeps its old progress, and the next run resumes there and
 * re-sends nothing that was acknowledged. */
static void test_fatal_keeps_checkpoint_and_resume_is_exact(void **state)
{
    script_reset();
    S.nrecords = 100;
    S.verdicts[3] = SL_SEND_FATAL;
    S.nverdicts = 4;
    pipe_def d;
    pipe_init(&d, NULL, 0);
    sl_state *st = mem_state();
    sl_run_result res;
    assert_int_equal(run(&d, st, SL_RUN_NORMAL, &res), SL_EXIT_FAILED);
    assert_string_equal(res.status, "failed");
    assert_non_null(strstr(res.error, "scripted verdict"));
    assert_int_equal(res.counts.sent, 30);
    assert_true(res.counts.read >= 40); /* what was read, not only what was finalized */
    assert_int_equal(S.commit_calls, 1);
    assert_int_equal(S.commit_complete, 0);
    char v[64];
    assert_int_equal(kv(st, "checkpoint", v, sizeof(v)), 1);
    assert_string_equal(v, "30");
    assert_int_equal(kv(st, "source.script/cursor", v, sizeof(v)), 0);

    /* resume */
    size_t first = S.nsent;
    uint64_t ids[4096];
    memcpy(ids, S.sent_ids, sizeof(ids));
    script_reset();
    S.nrecords = 100;
    assert_int_equal(run(&d, st, SL_RUN_NORMAL, &res), SL_EXIT_OK);
    assert_int_equal(S.resumed_at, 30);
    assert_int_equal(first + S.nsent, 100);
    for (size_t i = 0; i < S.nsent; i++) {
        assert_int_equal(S.sent_ids[i], 30 + i);
    }
    (void)ids;
    assert_int_equal(S.commit_complete, 1);
    sl_state_close(st);
}

/* Records refused by the sink (alone or as a batch) and rejected by a step
 * are dead-lettered with their reason; the run is "partial" but complete. */
static void test_refused_batch_and_records_are_dead_lettered(void **state)
{
    script_reset();
    S.nrecords = 50;
    S.verdicts[1] = SL_SEND_FAIL; /* the second batch refused as a whole */
    S.nverdicts = 2;
    S.fail_id = 33;     /* one record refused alone */
    S.reject_every = 7; /* 0, 7, 14, ... rejected by the step */
    const sl_step_plugin *steps[] = {&record_step};
    pipe_def d;
    pipe_init(&d, steps, 1);
    sl_state *st = mem_state();
    sl_run_result res;
    assert_int_equal(run(&d, st, SL_RUN_NORMAL, &res), SL_EXIT_PARTIAL);
    /* rejected by the step: 0,7,14,21,28,35,42,49 = 8; a batch holds 10
     * sendable records, so the second is 12..23 less 14 and 21 = 10;
     * record 33 = 1 */
    assert_int_equal(res.counts.failed, 19);
    assert_int_equal(res.counts.sent, 31);
    sl_error err = {0};
    assert_int_equal(sl_state_dl_count(st, "t", &err), 19);
    assert_int_equal(S.commit_complete, 1); /* dead-lettered counts as handled */

    /* max_failed stops a run that dead-letters too much */
    script_reset();
    S.nrecords = 50;
    S.reject_every = 2;
    d.p.max_failed = 5;
    sl_state *st2 = mem_state();
    assert_int_equal(run(&d, st2, SL_RUN_NORMAL, &res), SL_EXIT_FAILED);
    assert_non_null(strstr(res.error, "max_failed (5)"));
    assert_int_equal(S.commit_complete, 0);
    sl_state_close(st);
    sl_state_close(st2);
}

static void test_retry_then_ok_counts_retries(void **state)
{
    script_reset();
    S.nrecords = 20;
    S.verdicts[0] = SL_SEND_RETRY;
    S.verdicts[1] = SL_SEND_RETRY;
    S.nverdicts = 2;
    pipe_def d;
    pipe_init(&d, NULL, 0);
    sl_state *st = mem_state();
    sl_run_result res;
    assert_int_equal(run(&d, st, SL_RUN_NORMAL, &res), SL_EXIT_OK);
    assert_int_equal(res.counts.sent, 20);
    assert_int_equal(res.counts.retries, 2);
    /* attempts run out: fatal, nothing past it acknowledged */
    script_reset();
    S.nrecords = 20;
    for (int i = 0; i < 10; i++) {
        S.verdicts[i] = SL_SEND_RETRY;
    }
    S.nverdicts = 10;
    sl_state *st2 = mem_state();
    assert_int_equal(run(&d, st2, SL_RUN_NORMAL, &res), SL_EXIT_FAILED);
    assert_non_null(strstr(res.error, "gave up after 3 attempts"));
    assert_int_equal(S.writes, 3);
    assert_int_equal(res.counts.sent, 0);
    sl_state_close(st);
    sl_state_close(st2);
}

static void test_batch_step_sees_each_record_once(void **state)
{
    script_reset();
    S.nrecords = 45;
    S.reject_every = 5;
    const sl_step_plugin *steps[] = {&record_step, &batching_step};
    pipe_def d;
    pipe_init(&d, steps, 2);
    sl_state *st = mem_state();
    sl_run_result res;
    assert_int_equal(run(&d, st, SL_RUN_NORMAL, &res), SL_EXIT_PARTIAL);
    size_t seen = 0;
    for (int i = 0; i < S.batch_calls; i++) {
        seen += S.batch_sizes[i];
    }
    assert_int_equal(seen, 45 - 9); /* every record the first step kept, once */
    assert_int_equal(res.counts.sent, 36);
    assert_int_equal(res.counts.failed, 9);
    sl_state_close(st);
}

static void test_drain_emits_after_input_and_commits(void **state)
{
    script_reset();
    S.nrecords = 25;
    S.drain_emit = 13;
    const sl_step_plugin *steps[] = {&draining_step, &batching_step};
    pipe_def d;
    pipe_init(&d, steps, 2);
    sl_state *st = mem_state();
    sl_run_result res;
    assert_int_equal(run(&d, st, SL_RUN_NORMAL, &res), SL_EXIT_OK);
    assert_int_equal(res.counts.read, 25);
    assert_int_equal(res.counts.sent, 38);
    /* drained records come after every input record and go through the
     * later (batch) step too */
    for (size_t i = 0; i < 25; i++) {
        assert_int_equal(S.sent_ids[i], i);
    }
    for (size_t i = 25; i < 38; i++) {
        assert_int_equal(S.sent_ids[i], 10000 + (i - 25));
    }
    size_t seen = 0;
    for (int i = 0; i < S.batch_calls; i++) {
        seen += S.batch_sizes[i];
    }
    assert_int_equal(seen, 38);
    assert_int_equal(S.step_commit_complete, 1);
    char v[64];
    assert_int_equal(kv(st, "step.0.drain/snapshot", v, sizeof(v)), 1);
    assert_string_equal(v, "new");

    /* a failed run: the drain never runs, the step keeps its old state */
    script_reset();
    S.nrecords = 25;
    S.drain_emit = 13;
    S.verdicts[1] = SL_SEND_FATAL;
    S.nverdicts = 2;
    sl_state *st2 = mem_state();
    assert_int_equal(run(&d, st2, SL_RUN_NORMAL, &res), SL_EXIT_FAILED);
    assert_int_equal(S.step_commit_complete, 0);
    for (size_t i = 0; i < S.nsent; i++) {
        assert_true(S.sent_ids[i] < 10000);
    }
    assert_int_equal(kv(st2, "step.0.drain/snapshot", v, sizeof(v)), 1);
    assert_string_equal(v, "old");
    sl_state_close(st);
    sl_state_close(st2);
}

static void test_lease_refuses_second_run_and_takes_over_dead_one(void **state)
{
    script_reset();
    S.nrecords = 5;
    pipe_def d;
    pipe_init(&d, NULL, 0);
    sl_state *st = mem_state();
    sl_error err = {0};
    char host[128];
    gethostname(host, sizeof(host));

    /* held by a live process (this one's parent) */
    sl_lease l;
    memset(&l, 0, sizeof(l));
    snprintf(l.name, sizeof(l.name), "run:t");
    snprintf(l.owner, sizeof(l.owner), "%s:%d:live", host, (int)getppid());
    snprintf(l.host, sizeof(l.host), "%s", host);
    l.pid = getppid();
    l.expires_at = (double)time(NULL) + 60;
    assert_int_equal(sl_state_lease_take(st, &l, NULL, NULL, &err), 1);
    sl_run_result res;
    assert_int_equal(run(&d, st, SL_RUN_NORMAL, &res), SL_EXIT_LOCKED);
    assert_non_null(strstr(res.error, "already running"));
    assert_non_null(strstr(res.error, host));
    assert_int_equal(S.writes, 0);
    assert_int_equal(sl_state_lease_release(st, "run:t", l.owner, &err), 0);

    /* held by a process of this host that is gone: taken over */
    pid_t kid = fork();
    if (kid == 0) {
        _exit(0);
    }
    waitpid(kid, NULL, 0);
    snprintf(l.owner, sizeof(l.owner), "%s:%d:dead", host, (int)kid);
    l.pid = kid;
    assert_int_equal(sl_state_lease_take(st, &l, NULL, NULL, &err), 1);
    assert_int_equal(run(&d, st, SL_RUN_NORMAL, &res), SL_EXIT_OK);
    assert_int_equal(res.counts.sent, 5);
    assert_int_equal(sl_state_lease_get(st, "run:t", &l, &err), 0); /* released */

    /* held by another host: refused until it expires */
    snprintf(l.owner, sizeof(l.owner), "elsewhere:1:x");
    snprintf(l.host, sizeof(l.host), "elsewhere");
    l.pid = 1;
    l.expires_at = (double)time(NULL) + 60;
    assert_int_equal(sl_state_lease_take(st, &l, NULL, NULL, &err), 1);
    assert_int_equal(run(&d, st, SL_RUN_NORMAL, &res), SL_EXIT_LOCKED);
    assert_int_equal(sl_state_lease_renew(st, "run:t", l.owner, (double)time(NULL) - 1, &err), 1);
    assert_int_equal(run(&d, st, SL_RUN_NORMAL, &res), SL_EXIT_OK);
    sl_state_close(st);
}

/* A run that lost its lease (it stalled, another took over) stops at its
 * next finalization without moving the checkpoint past what it had. */
static void test_lost_lease_stops_before_progress(void **state)
{
    script_reset();
    S.nrecords = 100;
    S.steal_at = 35;
    const sl_step_plugin *steps[] = {&record_step};
    pipe_def d;
    pipe_init(&d, steps, 1);
    sl_state *st = mem_state();
    S.st = st;
    sl_run_result res;
    assert_int_equal(run(&d, st, SL_RUN_NORMAL, &res), SL_EXIT_FAILED);
    assert_non_null(strstr(res.error, "lost its lease"));
    char v[64];
    int found = kv(st, "checkpoint", v, sizeof(v));
    /* the reader may be ahead of finalization, but no checkpoint written
     * after the theft: at most the batches finalized before record 35 was
     * even read */
    assert_true(found == 0 || strtoull(v, NULL, 10) <= 35);
    assert_int_equal(S.commit_complete, 0);
    sl_error err = {0};
    sl_lease l;
    assert_int_equal(sl_state_lease_get(st, "run:t", &l, &err), 1);
    assert_string_equal(l.owner, "thief:1:x"); /* not released by the loser */
    sl_state_close(st);
}

/* `sluice retry`: dead letters replayed from the stage that rejected them,
 * deleted once delivered; the source is not committed. */
/* A worker: a waiting source's partial batches go out at once (not when
 * 10 records have gathered); acked hears every position in order, the
 * engine keeps no checkpoint of its own; the worker holds a lease of its
 * own, not the pipeline's; stopping delivers everything read and ends the
 * run "ok"; columns learnt from the input reach the sink before any batch. */
static void test_worker_waiting_source(void **state)
{
    script_reset();
    pipe_def d;
    pipe_init(&d, NULL, 0);
    d.p.source_plugin = &idle_source;
    d.p.sink_plugin = &columns_sink;
    sl_state *st = mem_state();
    S.st = st;
    sl_run_opts o = {.mode = SL_RUN_WORKER, .stop = &S.stop};
    sl_run_result res;
    assert_int_equal(sl_run_pipeline(NULL, &d.p, st, &o, &res), SL_EXIT_OK);
    assert_string_equal(res.status, "ok");
    assert_int_equal(res.counts.read, 23);
    assert_int_equal(S.nsent, 23);
    for (size_t i = 0; i < S.nsent; i++) {
        assert_int_equal(S.sent_ids[i], i);
    }
    /* bursts of 3 were sent as they came: batches of 3 (the last of 2) */
    assert_int_equal(S.writes, 8);
    assert_int_equal(S.columns_calls, 1);
    assert_int_equal(S.columns_n, 1);
    assert_true(S.nacked >= 1);
    for (int i = 1; i < S.nacked; i++) {
        assert_true(S.acked[i] > S.acked[i - 1]);
    }
    assert_int_equal(S.acked[S.nacked - 1], 23);
    assert_int_equal(S.workers_seen, 1);
    assert_int_equal(S.run_lease_seen, 0);
    char v[64];
    assert_int_equal(kv(st, "checkpoint", v, sizeof(v)), 0);
    int left = 0;
    sl_error err = {0};
    sl_state_lease_each(st, "worker:", count_lease, &left, &err);
    assert_int_equal(left, 0); /* released */
    sl_state_close(st);
}

static void test_replay_from_dead_letters(void **state)
{
    script_reset();
    S.nrecords = 30;
    S.reject_every = 10; /* 0, 10, 20 */
    S.fail_id = 25;
    S.tag_action = 1;
    const sl_step_plugin *steps[] = {&record_step};
    pipe_def d;
    pipe_init(&d, steps, 1);
    sl_state *st = mem_state();
    sl_run_result res;
    assert_int_equal(run(&d, st, SL_RUN_NORMAL, &res), SL_EXIT_PARTIAL);
    sl_error err = {0};
    assert_int_equal(sl_state_dl_count(st, "t", &err), 4);
    script_reset();
    S.nrecords = 30;
    S.refetch = 6;
    S.reject_every = 10; /* still refused by the step; 25 is now accepted by the sink */
    assert_int_equal(run(&d, st, SL_RUN_RETRY, &res), SL_EXIT_PARTIAL);
    /* the 4 dead letters (3 rejected by the step again: 0,10,20 still fail
     * it; 25 now accepted) first, then what the source re-fetched */
    assert_int_equal(S.retrying, 1);
    assert_int_equal(res.counts.sent, 1 + 6);
    assert_int_equal(S.sent_ids[0], 25);
    /* it skipped the steps (the sink refused it) and still carries the
     * action it had: a dead letter keeps it */
    assert_string_equal(S.action25, "changed");
    for (int i = 0; i < 6; i++) {
        assert_int_equal(S.sent_ids[1 + i], 5001 + i);
    }
    /* the source's commit hook ran (it records what is still failed) */
    assert_int_equal(S.commit_calls, 1);
    assert_int_equal(S.commit_complete, 1);
    /* the replayed dead letters the step still rejects stay, with their
     * attempts raised; nothing new was added for them */
    assert_int_equal(sl_state_dl_count(st, "t", &err), 3);
    sl_state_close(st);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    sl_log_level = SL_LOG_ERROR;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_complete_run_commits),
        cmocka_unit_test(test_fatal_keeps_checkpoint_and_resume_is_exact),
        cmocka_unit_test(test_refused_batch_and_records_are_dead_lettered),
        cmocka_unit_test(test_retry_then_ok_counts_retries),
        cmocka_unit_test(test_batch_step_sees_each_record_once),
        cmocka_unit_test(test_drain_emits_after_input_and_commits),
        cmocka_unit_test(test_lease_refuses_second_run_and_takes_over_dead_one),
        cmocka_unit_test(test_replay_from_dead_letters),
        cmocka_unit_test(test_worker_waiting_source),
        cmocka_unit_test(test_lost_lease_stops_before_progress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
