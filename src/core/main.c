/* sluice command line. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "config/config.h"
#include "core/registry.h"
#include "engine/run.h"
#include "core/serve.h"
#include "net/server.h"
#include "sluice/kafka.h"
#include "sluice/log.h"
#include "state/state.h"
#include "util/metrics.h"
#include "util/schedule.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    if (g_stop) {
        /* second signal: stop now, like any tool would */
        signal(sig, SIG_DFL);
        raise(sig);
    }
    g_stop = 1;
}

typedef struct cmd_help {
    const char *name;
    const char *usage;
    const char *text;
} cmd_help;

static const cmd_help commands[] = {
    {"run", "sluice run [-c FILE] [PIPELINE...] [--dry-run] [--from-start] [--again]",
     "Run pipelines once (all of them when none is named). An interrupted run\n"
     "resumes from its checkpoint unless --from-start is given. An input that an\n"
     "earlier run delivered completely is not sent again unless --again is given.\n"
     "--dry-run reads and transforms everything and prints counts and sample\n"
     "payloads without calling the sink or writing state.\n"
     "One run of a pipeline at a time: a second one is refused while the first\n"
     "holds the pipeline's lease; a dead run's lease is taken over.\n"
     "Exit codes: 0 all delivered; 1 failed; 2 finished, some records dead-lettered\n"
     "(or, for a paged source, a page recorded for the next run); 64 usage error;\n"
     "75 another run of the pipeline holds its lease; 78 config error."},
    {"serve", "sluice serve [-c FILE] [--listen ADDR:PORT]",
     "Serve the webhook routes of every pipeline with a `trigger:`, run their jobs,\n"
     "run every pipeline with a `schedule:` at its slots, and expose GET /healthz\n"
     "and GET /metrics (Prometheus). A webhook is answered 2xx only once its job is\n"
     "stored durably; jobs survive restarts. A scheduled run still going when the\n"
     "next slot comes is not stacked (the slot is skipped); slots missed while no\n"
     "server ran are run once at start. SIGTERM stops accepting, hands running jobs\n"
     "back to the queue, lets scheduled runs save their progress, and exits 0.\n"
     "--listen overrides serve.listen (default 127.0.0.1:8080)."},
    {"check", "sluice check [-c FILE]",
     "Validate the configuration: every error is printed with file:line:column.\n"
     "Exit 0 when valid, 78 otherwise."},
    {"status", "sluice status [-c FILE] [PIPELINE] [--json]",
     "Show recent runs with counts, the checkpoint an interrupted run will resume\n"
     "from, dead letters, jobs, and when `sluice serve` runs a scheduled pipeline\n"
     "next. --json prints the same as one JSON document."},
    {"retry", "sluice retry [-c FILE] PIPELINE",
     "Re-send the pipeline's dead letters through the steps after the one that\n"
     "rejected them, and the sink. Delivered ones are removed; the others stay\n"
     "with their attempt count raised. Rows the source rejected (malformed input)\n"
     "cannot be retried: fix the input and run again. For a pipeline with a\n"
     "trigger, failed jobs are queued again and run now."},
    {"fanout", "sluice fanout [-c FILE] [PIPELINE] [--from-start] [--again]",
     "Distributed mode, step one: read the pipeline's source and produce every\n"
     "record to its Kafka topic (`distributed:` in the pipeline), keyed by the\n"
     "`key` field so one person always lands in one partition. Every delivery\n"
     "report is checked; the source's checkpoint moves only past records Kafka\n"
     "confirmed, so a fanout killed mid-way resumes where it stopped. The steps\n"
     "and the sink run in the workers. Holds the pipeline's lease, like run.\n"
     "PIPELINE may be left out when one pipeline of the file is distributed."},
    {"worker", "sluice worker [-c FILE] [PIPELINE] [--listen ADDR:PORT]",
     "Distributed mode, step two, on as many machines as the topic has\n"
     "partitions: join the pipeline's consumer group and run its steps and sink\n"
     "on the records of the partitions this worker is given, with the usual\n"
     "batching, limits and dead letters. A partition's offset is committed only\n"
     "once every record before it was acknowledged or dead-lettered. SIGTERM\n"
     "stops reading, delivers what was read, commits, leaves the group, exit 0.\n"
     "Per-API-key rate limits are divided by `distributed.workers`. The state\n"
     "store must be one every worker reaches (state: postgres://...).\n"
     "--listen serves GET /metrics (the run's counts, each partition's lag) and\n"
     "GET /healthz while the worker runs."},
    {NULL, NULL, NULL},
};

static void usage(FILE *f)
{
    fprintf(f,
            "sluice %s: move people data between files, warehouses and APIs, correctly.\n\n"
            "Usage:\n",
            SLUICE_VERSION);
    for (const cmd_help *c = commands; c->name; c++) {
        fprintf(f, "  %s\n", c->usage);
    }
    fprintf(f, "  sluice --help | --version | help COMMAND | help PLUGIN\n\n"
               "Options:\n"
               "  -c, --config FILE   configuration (default ./sluice.yml)\n"
               "  -v, --verbose       debug logging;  -q, --quiet  errors only\n"
               "      --log-format json|text\n\n"
               "Plugins (sluice help NAME shows the options):\n");
    fprintf(f, "  sources:");
    for (size_t i = 0; sl_sources[i]; i++) {
        fprintf(f, " %s", sl_sources[i]->name);
    }
    fprintf(f, "\n  steps:  ");
    for (size_t i = 0; sl_steps[i]; i++) {
        fprintf(f, " %s", sl_steps[i]->name);
    }
    fprintf(f, "\n  sinks:  ");
    for (size_t i = 0; sl_sinks[i]; i++) {
        fprintf(f, " %s", sl_sinks[i]->name);
    }
    fprintf(f, "\n  triggers:");
    for (size_t i = 0; sl_triggers[i]; i++) {
        fprintf(f, " %s", sl_triggers[i]->name);
    }
    fprintf(f, "\n");
}

static const char *opt_type_name(sl_opt_type t)
{
    switch (t) {
    case SL_OPT_STRING:
        return "string";
    case SL_OPT_INT:
        return "integer";
    case SL_OPT_FLOAT:
        return "number";
    case SL_OPT_BOOL:
        return "boolean";
    case SL_OPT_DURATION:
        return "duration";
    case SL_OPT_SIZE:
        return "size";
    case SL_OPT_ENUM:
        return "enum";
    case SL_OPT_LIST:
        return "list";
    case SL_OPT_MAP:
        return "map";
    }
    return "?";
}

static void print_options(const char *kind, const char *name, const char *summary,
                          const sl_option *opts)
{
    printf("%s %s: %s\n\nOptions:\n", kind, name, summary ? summary : "");
    for (const sl_option *o = opts; o && o->name; o++) {
        printf("  %-16s %-8s", o->name, opt_type_name(o->type));
        if (o->flags & SL_OPT_REQUIRED) {
            printf(" required");
        }
        if (o->def) {
            printf(" default %s", o->def);
        }
        if (o->flags & SL_OPT_SECRET) {
            printf(" (secret)");
        }
        if (o->type == SL_OPT_ENUM && o->choices) {
            printf(" [%s]", o->choices);
        }
        printf("\n      %s\n", o->help ? o->help : "");
    }
}

static int cmd_help_topic(const char *topic)
{
    for (const cmd_help *c = commands; c->name; c++) {
        if (strcmp(c->name, topic) == 0) {
            printf("Usage: %s\n\n%s\n", c->usage, c->text);
            return 0;
        }
    }
    const sl_source_plugin *so = sl_find_source(topic);
    if (so) {
        print_options("source", so->name, so->summary, so->options);
        return 0;
    }
    const sl_step_plugin *st = sl_find_step(topic);
    if (st) {
        print_options("step", st->name, st->summary, st->options);
        return 0;
    }
    const sl_trigger_plugin *tr = sl_find_trigger(topic);
    if (tr) {
        print_options("trigger", tr->name, tr->summary, tr->options);
        return 0;
    }
    const sl_sink_plugin *si = sl_find_sink(topic);
    if (si) {
        print_options("sink", si->name, si->summary, si->options);
        printf("\nDefaults: batch %d records, concurrency %d", si->defaults.batch_records,
               si->defaults.concurrency);
        if (si->defaults.rate_per_sec > 0) {
            printf(", rate %.0f requests/s (burst %.0f)", si->defaults.rate_per_sec,
                   si->defaults.rate_burst);
        }
        printf("\n");
        return 0;
    }
    fprintf(stderr,
            "sluice: no help for '%s' (expected a command or a plugin name; see "
            "sluice --help)\n",
            topic);
    return SL_EXIT_USAGE;
}

typedef struct cli {
    const char *config;
    int dry_run, from_start, again, json;
    const char *listen;
    const char *names[64];
    size_t nnames;
} cli;

static sl_config *load_config_mode(const cli *c, sl_cfg_mode mode, int *exit_code)
{
    sl_buf errors = {0};
    sl_config *cfg =
        sl_config_load_mode(&sl_builtin_plugins, c->config, c->names, c->nnames, mode, &errors);
    if (!cfg) {
        fprintf(stderr, "%s", sl_buf_cstr(&errors));
        if (errors.len && errors.data[errors.len - 1] != '\n') {
            fputc('\n', stderr);
        }
        *exit_code = SL_EXIT_CONFIG;
    }
    sl_buf_free(&errors);
    return cfg;
}

static sl_config *load_config(const cli *c, int *exit_code)
{
    return load_config_mode(c, SL_CFG_FULL, exit_code);
}

static sl_state *open_state(const sl_config *cfg, int *exit_code)
{
    sl_error err = {0};
    sl_state *st = sl_state_open(cfg->state_url, &err);
    if (!st) {
        fprintf(stderr, "sluice: %s\n", err.msg);
        *exit_code = SL_EXIT_FAILED;
    }
    return st;
}

static void print_result(const sl_pipeline_cfg *p, const sl_run_result *res, int dry)
{
    if (dry) {
        return;
    }
    double rate = res->duration_s > 0 ? (double)res->counts.read / res->duration_s : 0;
    printf("%s: %s (%s)\n", p->name, res->status, res->input);
    if (strcmp(res->status, "skipped") == 0) {
        printf("  %s\n", res->error);
        fflush(stdout);
        return;
    }
    printf("  read %" PRIu64 "  sent %" PRIu64 "  dead-lettered %" PRIu64 "  skipped %" PRIu64 "\n",
           res->counts.read, res->counts.sent, res->counts.failed, res->counts.skipped);
    printf("  requests %" PRIu64 "  retries %" PRIu64 "  %.2fs  %.0f records/s\n",
           res->counts.requests, res->counts.retries, res->duration_s, rate);
    if (res->nactions > 1 || (res->nactions == 1 && strcmp(res->actions[0].name, "send") != 0)) {
        printf("  ");
        for (size_t k = 0; k < res->nactions; k++) {
            printf("%s%s %" PRIu64, k ? "  " : "", res->actions[k].name, res->actions[k].sent);
            if (res->actions[k].failed) {
                printf(" (+%" PRIu64 " dead-lettered)", res->actions[k].failed);
            }
        }
        printf("\n");
    }
    if (res->error[0]) {
        printf("  error: %s\n", res->error);
    }
    if (res->counts.failed) {
        printf("  dead letters: sluice status %s; re-send: sluice retry %s\n", p->name, p->name);
    }
    fflush(stdout);
}

static int retry_jobs(sl_config *cfg, sl_pipeline_cfg *p, sl_state *st);
static int cmd_distributed(const cli *c, sl_dist_role role);

static int worse(int a, int b)
{
    /* failed (1) beats partial (2) beats ok (0) */
    if (a == SL_EXIT_FAILED || b == SL_EXIT_FAILED) {
        return SL_EXIT_FAILED;
    }
    return a > b ? a : b;
}

static int cmd_run(const cli *c, sl_run_mode mode)
{
    int code = 0;
    sl_config *cfg = load_config(c, &code);
    if (!cfg) {
        return code;
    }
    sl_state *st = NULL;
    /* a dry run reads an existing store (a cursor, a snapshot to diff
     * against) but never creates one, and writes nothing to it */
    if (!c->dry_run || mode == SL_RUN_RETRY || sl_state_exists(cfg->state_url) == 1) {
        st = open_state(cfg, &code);
        if (!st) {
            sl_config_free(cfg);
            return code;
        }
    }
    sl_run_opts o = {0};
    o.mode = mode;
    o.dry_run = c->dry_run;
    o.from_start = c->from_start;
    o.again = c->again;
    o.progress = isatty(STDERR_FILENO) && sl_log_level >= SL_LOG_INFO;
    o.samples = 3;
    o.stop = &g_stop;
    int result = SL_EXIT_OK;
    for (size_t i = 0; i < cfg->npipelines && !g_stop; i++) {
        sl_pipeline_cfg *p = &cfg->pipelines[i];
        if (c->nnames) {
            int wanted = 0;
            for (size_t k = 0; k < c->nnames; k++) {
                wanted |= strcmp(c->names[k], p->name) == 0;
            }
            if (!wanted) {
                continue;
            }
        }
        if (mode == SL_RUN_RETRY && p->trigger_plugin) {
            /* a triggered pipeline's loads are jobs: re-run the failed ones */
            result = worse(result, retry_jobs(cfg, p, st));
            continue;
        }
        if (p->trigger_plugin && mode == SL_RUN_NORMAL) {
            fprintf(stderr,
                    "sluice: %s has a trigger: its jobs run under `sluice serve` "
                    "(or `sluice retry %s` for failed ones)\n",
                    p->name, p->name);
            result = worse(result, SL_EXIT_USAGE);
            continue;
        }
        sl_run_result res;
        int rc = sl_run_pipeline(cfg, p, st, &o, &res);
        if ((rc == SL_EXIT_FAILED || rc == SL_EXIT_LOCKED) && res.error[0]) {
            fprintf(stderr, "sluice: %s: %s\n", p->name, res.error);
        }
        if (rc != SL_EXIT_LOCKED) {
            print_result(p, &res, c->dry_run);
        }
        result = worse(result, rc);
    }
    sl_state_close(st);
    sl_config_free(cfg);
    return result;
}

static int cmd_check(const cli *c)
{
    int code = 0;
    sl_config *cfg = load_config(c, &code);
    if (!cfg) {
        return code;
    }
    printf("%s: OK, %zu pipeline%s:", c->config, cfg->npipelines, cfg->npipelines == 1 ? "" : "s");
    for (size_t i = 0; i < cfg->npipelines; i++) {
        printf(" %s", cfg->pipelines[i].name);
    }
    printf("\n");
    sl_config_free(cfg);
    return 0;
}

static void fmt_time(double t, char *out, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;
    localtime_r(&tt, &tm);
    strftime(out, n, "%Y-%m-%d %H:%M:%S", &tm);
}

static int print_run(void *ud, const sl_run_info *r)
{
    (void)ud;
    char when[32];
    fmt_time(r->started_at, when, sizeof(when));
    double dur = r->finished_at > 0 ? r->finished_at - r->started_at : 0;
    printf("    #%-5" PRId64 " %-11s %s  %6.1fs  read %" PRIu64 "  sent %" PRIu64
           "  dead-lettered %" PRIu64 "  skipped %" PRIu64 "  %s\n",
           r->id, r->status, when, dur, r->counts.read, r->counts.sent, r->counts.failed,
           r->counts.skipped, r->input);
    if (r->error[0]) {
        printf("           error: %s\n", r->error);
    }
    return 0;
}

static int print_dl(void *ud, const sl_dead_letter *d)
{
    (void)ud;
    char rec[161];
    snprintf(rec, sizeof(rec), "%s", d->record);
    printf("    #%-5" PRId64 " line %-8" PRIu64 " attempts %d  %s\n             %s\n", d->id,
           d->line, d->attempts, d->error, rec);
    return 0;
}

static int print_job(void *ud, const sl_job *j)
{
    (void)ud;
    char when[32];
    fmt_time(j->created_at, when, sizeof(when));
    double dur = j->finished_at > 0 && j->started_at > 0 ? j->finished_at - j->started_at : 0;
    printf("    #%-5" PRId64 " %-8s %-12s %-11s %s  attempts %d  rows %" PRId64 "  %.1fs\n", j->id,
           j->status, j->order_key, j->kind, when, j->attempts, j->rows, dur);
    if (j->error[0]) {
        printf("           error: %s\n", j->error);
    }
    return 0;
}

/* Plugin state ("source.http_pages/cursor"): shown as stored, shortened. */
static int print_plugin_kv(void *ud, const char *key, const char *value, double updated_at)
{
    (void)ud;
    if (strncmp(key, "source.", 7) != 0 && strncmp(key, "step.", 5) != 0) {
        return 0;
    }
    char when[32];
    fmt_time(updated_at, when, sizeof(when));
    size_t n = strlen(value);
    printf("  %s = %.*s%s  (%s)\n", key, n > 200 ? 200 : (int)n, value, n > 200 ? " ..." : "",
           when);
    return 0;
}

static void print_lease(sl_state *st, const sl_pipeline_cfg *p)
{
    char name[160];
    sl_lease l;
    sl_error err = {0};
    snprintf(name, sizeof(name), "run:%s", p->name);
    if (sl_state_lease_get(st, name, &l, &err) != 1) {
        return;
    }
    double now = (double)time(NULL);
    char since[32];
    fmt_time(l.acquired_at, since, sizeof(since));
    if (l.expires_at < now) {
        printf("  lease: expired %.0fs ago (process %lld on %s stopped renewing; the next run "
               "takes over)\n",
               now - l.expires_at, (long long)l.pid, l.host);
    } else {
        printf("  running now: process %lld on %s since %s (heartbeat %.0fs ago)\n",
               (long long)l.pid, l.host, since, now - l.heartbeat_at);
    }
}

static int print_worker(void *ud, const sl_lease *l)
{
    double now = *(const double *)ud;
    char since[32];
    fmt_time(l->acquired_at, since, sizeof(since));
    if (l->expires_at < now) {
        printf("    process %lld on %s: gone (no heartbeat for %.0fs; its partitions moved to "
               "the others)\n",
               (long long)l->pid, l->host, now - l->heartbeat_at);
    } else {
        printf("    process %lld on %s: alive since %s (heartbeat %.0fs ago)\n", (long long)l->pid,
               l->host, since, now - l->heartbeat_at);
    }
    return 0;
}

static int count_worker(void *ud, const sl_lease *l)
{
    int *n = ud;
    n[l->expires_at >= (double)time(NULL) ? 0 : 1]++;
    return 0;
}

/* Each partition of a distributed pipeline's topic: what the worker group
 * committed, the end, the lag. Needs the pipeline's `distributed:` block in
 * full (status loads only an outline, whose environment may be unset). */
static void print_partitions(const cli *c, const sl_pipeline_cfg *p)
{
    const char *only[1] = {p->name};
    sl_buf errors = {0};
    sl_config *full = sl_config_load(&sl_builtin_plugins, c->config, only, 1, &errors);
    sl_pipeline_cfg *fp = full ? sl_config_pipeline(full, p->name) : NULL;
    if (!fp || !fp->distributed.opts) {
        printf("  partitions: not asked (reaching Kafka needs the pipeline's whole environment; "
               "sluice check says what is missing)\n");
        sl_buf_free(&errors);
        sl_config_free(full);
        return;
    }
    sl_buf_free(&errors);
    sl_kafka_partition *parts = NULL;
    size_t n = 0;
    sl_error err = {0};
    char topic[256];
    sl_kafka_topic(fp->distributed.opts, p->name, topic, sizeof(topic));
    if (sl_kafka_group_progress(fp->distributed.opts, p->name, 10000, &parts, &n, &err) < 0) {
        printf("  partitions of %s: %s\n", topic, err.msg);
    } else {
        int64_t lag = 0;
        for (size_t i = 0; i < n; i++) {
            lag += parts[i].lag;
        }
        printf("  topic %s: %zu partitions, %" PRId64 " records not yet done by the workers\n",
               topic, n, lag);
        for (size_t i = 0; i < n; i++) {
            char committed[32];
            if (parts[i].committed < 0) {
                snprintf(committed, sizeof(committed), "none");
            } else {
                snprintf(committed, sizeof(committed), "%" PRId64, parts[i].committed);
            }
            printf("    partition %d: committed %s, end %" PRId64 ", lag %" PRId64 "\n",
                   (int)parts[i].partition, committed, parts[i].high, parts[i].lag);
        }
    }
    free(parts);
    sl_config_free(full);
}

/* `sluice worker` processes of a distributed pipeline, from their leases. */
static void print_workers(sl_state *st, const sl_pipeline_cfg *p)
{
    char prefix[192];
    snprintf(prefix, sizeof(prefix), "worker:%s:", p->name);
    int n[2] = {0, 0};
    sl_error err = {0};
    if (sl_state_lease_each(st, prefix, count_worker, n, &err) < 0) {
        printf("  workers: %s\n", err.msg);
        return;
    }
    printf("  workers: %d alive, %d gone\n", n[0], n[1]);
    double now = (double)time(NULL);
    sl_state_lease_each(st, prefix, print_worker, &now, &err);
}

static void print_schedule(const sl_pipeline_cfg *p, sl_state *st)
{
    sl_schedule_info si;
    sl_error err = {0};
    if (sl_schedule_info_get(p, st, (int64_t)time(NULL), &si, &err) < 0) {
        printf("  schedule: %s: %s\n", p->schedule, err.msg);
        return;
    }
    printf("  schedule: %s (%s)\n", p->schedule, si.zone);
    if (si.last_slot >= 0) {
        char when[32];
        fmt_time((double)si.last_slot, when, sizeof(when));
        printf("    last scheduled run: slot %s\n", when);
    }
    if (si.next_run < 0) {
        printf("    next run: none (the schedule has no further slot)\n");
    } else if (si.catch_up) {
        printf("    next run: as soon as sluice serve runs (a slot was missed)\n");
    } else {
        printf("    next run: %s (%" PRId64 ") under sluice serve\n", si.next_local, si.next_run);
    }
}

static int json_run(void *ud, const sl_run_info *r)
{
    json_array_append_new(
        ud, json_pack("{sI ss ss sf sf s{sI sI sI sI sI sI} ss}", "id", (json_int_t)r->id, "status",
                      r->status, "input", r->input, "started_at", r->started_at, "finished_at",
                      r->finished_at, "counts", "read", (json_int_t)r->counts.read, "sent",
                      (json_int_t)r->counts.sent, "failed", (json_int_t)r->counts.failed, "skipped",
                      (json_int_t)r->counts.skipped, "requests", (json_int_t)r->counts.requests,
                      "retries", (json_int_t)r->counts.retries, "error", r->error));
    return 0;
}

static int json_worker(void *ud, const sl_lease *l)
{
    json_array_append_new(ud,
                          json_pack("{ss sI sf sf sb}", "host", l->host, "pid", (json_int_t)l->pid,
                                    "since", l->acquired_at, "heartbeat", l->heartbeat_at, "alive",
                                    l->expires_at >= (double)time(NULL)));
    return 0;
}

/* sluice status --json: one document with every (or the named) pipeline. */
static int status_json(const cli *c, sl_config *cfg, sl_state *st)
{
    int code = 0, found = 0;
    json_t *doc = json_object(), *arr = json_array();
    json_object_set_new(doc, "pipelines", arr);
    for (size_t i = 0; i < cfg->npipelines; i++) {
        sl_pipeline_cfg *p = &cfg->pipelines[i];
        if (c->nnames && strcmp(c->names[0], p->name) != 0) {
            continue;
        }
        found = 1;
        sl_error err = {0};
        json_t *o = json_pack("{ss ss ss}", "name", p->name, "source", p->source.type, "sink",
                              p->sink.type);
        json_t *runs = json_array();
        if (sl_state_runs(st, p->name, 5, json_run, runs, &err) < 0) {
            fprintf(stderr, "sluice: %s\n", err.msg);
            code = SL_EXIT_FAILED;
        }
        json_object_set_new(o, "runs", runs);
        sl_buf cp = {0};
        json_t *cpj = NULL;
        if (sl_state_kv_get(st, p->name, "checkpoint", &cp, &err) == 1) {
            cpj = json_loads(sl_buf_cstr(&cp), 0, NULL);
        }
        sl_buf_free(&cp);
        json_object_set_new(o, "checkpoint", cpj ? cpj : json_null());
        int64_t n = sl_state_dl_count(st, p->name, &err);
        json_object_set_new(o, "dead_letters", json_integer(n < 0 ? 0 : n));
        if (p->trigger_plugin) {
            int64_t jc[5] = {0};
            sl_state_job_counts(st, p->name, jc, &err);
            json_object_set_new(o, "jobs",
                                json_pack("{sI sI sI sI sI}", "queued", (json_int_t)jc[0],
                                          "running", (json_int_t)jc[1], "retry", (json_int_t)jc[2],
                                          "done", (json_int_t)jc[3], "failed", (json_int_t)jc[4]));
        }
        json_t *sj = json_null();
        sl_schedule_info si;
        if (p->schedule && sl_schedule_info_get(p, st, (int64_t)time(NULL), &si, &err) == 0) {
            sj = json_pack(
                "{ss ss so so sb so}", "expression", p->schedule, "zone", si.zone, "last_slot",
                si.last_slot >= 0 ? json_integer(si.last_slot) : json_null(), "next_run",
                si.next_run >= 0 ? json_integer(si.next_run) : json_null(), "catch_up", si.catch_up,
                "next_run_local", si.next_run >= 0 ? json_string(si.next_local) : json_null());
        }
        json_object_set_new(o, "schedule", sj);
        if (p->distributed.type) {
            char prefix[192];
            snprintf(prefix, sizeof(prefix), "worker:%s:", p->name);
            json_t *ws = json_array();
            sl_state_lease_each(st, prefix, json_worker, ws, &err);
            json_object_set_new(o, "workers", ws);
        }
        json_array_append_new(arr, o);
    }
    if (!found) {
        fprintf(stderr, "sluice: no pipeline named '%s' in %s\n", c->names[0], c->config);
        code = SL_EXIT_USAGE;
    } else {
        char *text = json_dumps(doc, JSON_INDENT(2));
        printf("%s\n", text ? text : "{}");
        free(text);
    }
    json_decref(doc);
    return code;
}

static int cmd_status(const cli *c)
{
    int code = 0;
    cli c2 = *c;
    c2.nnames = 0; /* the name is checked below, against every pipeline */
    /* status runs nothing: the pipelines' environment (URLs, keys) may be unset */
    sl_config *cfg = load_config_mode(&c2, SL_CFG_OUTLINE, &code);
    if (!cfg) {
        return code;
    }
    sl_state *st = open_state(cfg, &code);
    if (!st) {
        sl_config_free(cfg);
        return code;
    }
    if (c->json) {
        code = status_json(c, cfg, st);
        sl_state_close(st);
        sl_config_free(cfg);
        return code;
    }
    int found = 0;
    for (size_t i = 0; i < cfg->npipelines; i++) {
        sl_pipeline_cfg *p = &cfg->pipelines[i];
        if (c->nnames && strcmp(c->names[0], p->name) != 0) {
            continue;
        }
        found = 1;
        sl_error err = {0};
        printf("%s  (%s -> %s)\n", p->name, p->source.type ? p->source.type : "?",
               p->sink.type ? p->sink.type : "?");
        print_lease(st, p);
        if (p->distributed.type) {
            print_workers(st, p);
            print_partitions(c, p);
        }
        printf("  runs (newest first):\n");
        if (sl_state_runs(st, p->name, 5, print_run, NULL, &err) < 0) {
            fprintf(stderr, "sluice: %s\n", err.msg);
            code = SL_EXIT_FAILED;
        }
        sl_buf cp = {0};
        if (sl_state_kv_get(st, p->name, "checkpoint", &cp, &err) == 1) {
            json_t *j = json_loads(sl_buf_cstr(&cp), 0, NULL);
            printf("  checkpoint: line %" JSON_INTEGER_FORMAT ", byte %" JSON_INTEGER_FORMAT
                   " of %s (the next run resumes here)\n",
                   json_integer_value(json_object_get(j, "line")),
                   json_integer_value(json_object_get(j, "offset")),
                   json_string_value(json_object_get(j, "input"))
                       ? json_string_value(json_object_get(j, "input"))
                       : "input");
            json_decref(j);
        }
        sl_buf_free(&cp);
        sl_state_kv_each(st, p->name, print_plugin_kv, NULL, &err);
        if (p->trigger_plugin) {
            int64_t jc[5] = {0};
            sl_state_job_counts(st, p->name, jc, &err);
            printf("  jobs: %" PRId64 " queued, %" PRId64 " running, %" PRId64 " retrying, %" PRId64
                   " done, %" PRId64 " failed (newest first):\n",
                   jc[0], jc[1], jc[2], jc[3], jc[4]);
            printf("    id     status   table        kind        received             \n");
            sl_state_jobs(st, p->name, 20, print_job, NULL, &err);
        }
        if (p->schedule) {
            print_schedule(p, st);
        }
        int64_t n = sl_state_dl_count(st, p->name, &err);
        printf("  dead letters: %" PRId64 "%s\n", n < 0 ? 0 : n,
               n > 0 ? " (oldest first; re-send with sluice retry)" : "");
        if (n > 0) {
            sl_state_dl_each(st, p->name, 10, print_dl, NULL, &err);
            if (n > 10) {
                printf("    ... %" PRId64 " more\n", n - 10);
            }
        }
    }
    if (!found) {
        fprintf(stderr, "sluice: no pipeline named '%s' in %s\n", c->names[0], c->config);
        code = SL_EXIT_USAGE;
    }
    sl_state_close(st);
    sl_config_free(cfg);
    return code;
}

static int cmd_serve(const cli *c)
{
    int code = 0;
    sl_config *cfg = load_config(c, &code);
    if (!cfg) {
        return code;
    }
    sl_state *st = open_state(cfg, &code);
    if (st) {
        code = sl_serve(cfg, st, c->listen, &g_stop);
    }
    sl_state_close(st);
    sl_config_free(cfg);
    return code;
}

/* A worker's /metrics: its group's progress on each partition of the
 * topic, asked of the brokers at each scrape. */
typedef struct lag_ctx {
    const sl_pipeline_cfg *p;
} lag_ctx;

static void collect_partitions(void *ud)
{
    const lag_ctx *lc = ud;
    sl_kafka_partition *parts = NULL;
    size_t n = 0;
    sl_error err = {0};
    char topic[256];
    sl_kafka_topic(lc->p->distributed.opts, lc->p->name, topic, sizeof(topic));
    if (sl_kafka_group_progress(lc->p->distributed.opts, lc->p->name, 5000, &parts, &n, &err) < 0) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        sl_buf l;
        sl_buf_init(&l, 0);
        sl_buf_puts(&l, "topic=\"");
        sl_metric_label_escape(&l, topic);
        sl_buf_printf(&l, "\",partition=\"%d\"", (int)parts[i].partition);
        sl_metric_set("sluice_kafka_partition_lag", sl_buf_cstr(&l), (double)parts[i].lag);
        sl_metric_set("sluice_kafka_partition_committed_offset", sl_buf_cstr(&l),
                      (double)parts[i].committed);
        sl_metric_set("sluice_kafka_partition_end_offset", sl_buf_cstr(&l), (double)parts[i].high);
        sl_buf_free(&l);
    }
    free(parts);
}

/* sluice fanout / sluice worker: one half of a distributed pipeline, run
 * by the same engine as `run` with the kafka sink or source in place. */
static int cmd_distributed(const cli *c, sl_dist_role role)
{
    const char *cmd = role == SL_DIST_FANOUT ? "fanout" : "worker";
    int code = 0;
    sl_config *cfg = load_config(c, &code);
    if (!cfg) {
        return code;
    }
    sl_pipeline_cfg *p = NULL;
    size_t ndist = 0;
    for (size_t i = 0; i < cfg->npipelines; i++) {
        sl_pipeline_cfg *q = &cfg->pipelines[i];
        if (c->nnames ? strcmp(q->name, c->names[0]) == 0 : q->distributed.type != NULL) {
            p = q;
            ndist++;
        }
    }
    if (!c->nnames && ndist != 1) {
        fprintf(stderr,
                "sluice: %s: %s has %zu distributed pipelines (expected the name of the one "
                "to run: sluice %s -c %s PIPELINE)\n",
                cmd, c->config, ndist, cmd, c->config);
        sl_config_free(cfg);
        return SL_EXIT_USAGE;
    }
    sl_pipeline_cfg half;
    double share = 1;
    sl_error err = {0};
    if (sl_pipeline_role(p, role, &half, &share, &err) < 0) {
        fprintf(stderr, "sluice: %s: %s\n", cmd, err.msg);
        sl_config_free(cfg);
        return SL_EXIT_CONFIG;
    }
    if (role == SL_DIST_WORKER && !c->dry_run && strncmp(cfg->state_url, "postgres", 8) != 0) {
        sl_warn(p->name,
                "the state store %s is a local file: workers on other machines cannot share "
                "it (dead letters, run history); use state: postgres://... across machines",
                cfg->state_url);
    }
    sl_state *st = NULL;
    if (!c->dry_run || sl_state_exists(cfg->state_url) == 1) {
        st = open_state(cfg, &code);
        if (!st) {
            sl_config_free(cfg);
            return code;
        }
    }
    sl_run_opts o = {0};
    o.mode = role == SL_DIST_WORKER ? SL_RUN_WORKER : SL_RUN_NORMAL;
    o.dry_run = c->dry_run;
    o.from_start = c->from_start;
    o.again = c->again;
    o.progress = role == SL_DIST_FANOUT && isatty(STDERR_FILENO) && sl_log_level >= SL_LOG_INFO;
    o.samples = 3;
    o.stop = &g_stop;
    o.rate_share = share;
    /* --listen: GET /metrics (the run's counts, each partition's lag) and
     * GET /healthz while the worker runs */
    sl_server *srv = NULL;
    lag_ctx lc = {.p = p};
    if (c->listen) {
        sl_metric_declare("sluice_kafka_partition_lag", SL_METRIC_GAUGE,
                          "Records of the partition the worker group has not finished.");
        sl_metric_declare("sluice_kafka_partition_committed_offset", SL_METRIC_GAUGE,
                          "The group's committed offset (-1: none).");
        sl_metric_declare("sluice_kafka_partition_end_offset", SL_METRIC_GAUGE,
                          "The partition's end (high watermark).");
        if (role == SL_DIST_WORKER) {
            sl_metrics_add_collector(collect_partitions, &lc);
        }
        srv = sl_server_new(c->listen, 2, &err);
        if (!srv || sl_server_start(srv, &err) < 0) {
            fprintf(stderr, "sluice: %s: --listen %s: %s\n", cmd, c->listen, err.msg);
            sl_server_free(srv);
            sl_state_close(st);
            sl_config_free(cfg);
            return SL_EXIT_USAGE;
        }
        sl_info(p->name, "listening on %s (port %d): GET /metrics, GET /healthz", c->listen,
                sl_server_port(srv));
    }
    sl_run_result res;
    int rc = sl_run_pipeline(cfg, &half, st, &o, &res);
    if (srv) {
        sl_server_stop(srv);
        sl_server_free(srv);
    }
    if ((rc == SL_EXIT_FAILED || rc == SL_EXIT_LOCKED) && res.error[0]) {
        fprintf(stderr, "sluice: %s: %s\n", p->name, res.error);
    }
    if (rc != SL_EXIT_LOCKED) {
        print_result(p, &res, c->dry_run);
    }
    sl_state_close(st);
    sl_config_free(cfg);
    return rc;
}

/* sluice retry on a triggered pipeline: failed jobs run again, now. */
static int retry_jobs(sl_config *cfg, sl_pipeline_cfg *p, sl_state *st)
{
    sl_error err = {0};
    int n = sl_state_job_requeue_failed(st, p->name, &err);
    if (n < 0) {
        fprintf(stderr, "sluice: %s\n", err.msg);
        return SL_EXIT_FAILED;
    }
    printf("%s: %d failed job(s) queued again\n", p->name, n);
    sl_jobs_run_pending(cfg, p, st, &g_stop);
    int64_t jc[5] = {0};
    sl_state_job_counts(st, p->name, jc, &err);
    printf("%s: %" PRId64 " job(s) still failed, %" PRId64 " waiting to retry\n", p->name, jc[4],
           jc[2]);
    return jc[4] || jc[2] ? SL_EXIT_FAILED : SL_EXIT_OK;
}

/* Hidden: `sluice schedule-next EXPR UNIX_TIME [COUNT]` prints the next COUNT
 * fire times (unix seconds, then local time) of a schedule. Used by the
 * schedule oracle test; handy for checking a cron line. */
static int cmd_schedule_next(int argc, char **argv)
{
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: sluice schedule-next 'SCHEDULE' UNIX_TIME [COUNT]\n");
        return SL_EXIT_USAGE;
    }
    char *end;
    long long t = strtoll(argv[3], &end, 10);
    long count = argc == 5 ? strtol(argv[4], NULL, 10) : 1;
    if (*end || count < 1 || count > 100000) {
        fprintf(stderr, "sluice: schedule-next: expected a unix time and a count 1..100000\n");
        return SL_EXIT_USAGE;
    }
    sl_error err = {0};
    sl_schedule *s = sl_schedule_parse(argv[2], &err);
    if (!s) {
        fprintf(stderr, "sluice: schedule \"%s\": %s\n", argv[2], err.msg);
        return SL_EXIT_CONFIG;
    }
    for (long i = 0; i < count; i++) {
        int64_t n = sl_schedule_next_after(s, (int64_t)t);
        if (n < 0) {
            printf("none\n");
            break;
        }
        char when[64];
        printf("%lld %s\n", (long long)n, sl_schedule_format(s, n, when, sizeof(when)));
        t = n;
    }
    sl_schedule_free(s);
    return 0;
}

int main(int argc, char **argv)
{
    cli c = {0};
    c.config = "sluice.yml";
    const char *cmd = NULL;
    if (argc > 1 && strcmp(argv[1], "schedule-next") == 0) {
        return cmd_schedule_next(argc, argv);
    }

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (++i >= argc) {
                fprintf(stderr, "sluice: %s needs a file name\n", a);
                return SL_EXIT_USAGE;
            }
            c.config = argv[i];
        } else if (strncmp(a, "--config=", 9) == 0) {
            c.config = a + 9;
        } else if (strcmp(a, "--json") == 0) {
            c.json = 1;
        } else if (strcmp(a, "--dry-run") == 0) {
            c.dry_run = 1;
        } else if (strcmp(a, "--from-start") == 0) {
            c.from_start = 1;
        } else if (strcmp(a, "--again") == 0) {
            c.again = 1;
        } else if (strcmp(a, "--listen") == 0) {
            if (++i >= argc) {
                fprintf(stderr, "sluice: --listen needs ADDR:PORT\n");
                return SL_EXIT_USAGE;
            }
            c.listen = argv[i];
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            sl_log_level = SL_LOG_DEBUG;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            sl_log_level = SL_LOG_ERROR;
        } else if (strcmp(a, "--log-format") == 0 && i + 1 < argc) {
            sl_log_set_json(strcmp(argv[++i], "json") == 0);
        } else if (strcmp(a, "--log-format=json") == 0) {
            sl_log_set_json(1);
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("sluice %s\n", SLUICE_VERSION);
            return 0;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "sluice: unknown option '%s' (see sluice --help)\n", a);
            return SL_EXIT_USAGE;
        } else if (!cmd) {
            cmd = a;
        } else if (c.nnames < sizeof(c.names) / sizeof(c.names[0])) {
            c.names[c.nnames++] = a;
        } else {
            fprintf(stderr, "sluice: too many arguments\n");
            return SL_EXIT_USAGE;
        }
    }
    if (!cmd) {
        usage(stderr);
        return SL_EXIT_USAGE;
    }
    if (strcmp(cmd, "help") == 0) {
        if (c.nnames == 0) {
            usage(stdout);
            return 0;
        }
        return cmd_help_topic(c.names[0]);
    }

    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());

    int rc;
    if (strcmp(cmd, "run") == 0) {
        rc = cmd_run(&c, SL_RUN_NORMAL);
    } else if (strcmp(cmd, "check") == 0) {
        rc = cmd_check(&c);
    } else if (strcmp(cmd, "status") == 0) {
        rc = c.nnames > 1
                 ? (fprintf(stderr, "sluice: status takes at most one pipeline\n"), SL_EXIT_USAGE)
                 : cmd_status(&c);
    } else if (strcmp(cmd, "retry") == 0) {
        if (c.nnames != 1) {
            fprintf(stderr, "sluice: retry needs exactly one PIPELINE (usage: %s)\n",
                    commands[4].usage);
            rc = SL_EXIT_USAGE;
        } else {
            rc = cmd_run(&c, SL_RUN_RETRY);
        }
    } else if (strcmp(cmd, "serve") == 0) {
        rc = cmd_serve(&c);
    } else if (strcmp(cmd, "fanout") == 0 || strcmp(cmd, "worker") == 0) {
        rc = c.nnames > 1
                 ? (fprintf(stderr, "sluice: %s takes at most one pipeline\n", cmd), SL_EXIT_USAGE)
                 : cmd_distributed(&c, cmd[0] == 'f' ? SL_DIST_FANOUT : SL_DIST_WORKER);
    } else {
        fprintf(stderr,
                "sluice: unknown command '%s' (expected run, serve, check, status, "
                "retry, fanout, worker or help)\n",
                cmd);
        rc = SL_EXIT_USAGE;
    }
    sl_secrets_clear();
    curl_global_cleanup();
    return rc;
}
