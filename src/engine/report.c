/* What a run tells its user: progress lines while it runs, the summary
 * object (notifications, --json) when it ends. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/engine.h"
#include "sluice/json.h"
#include "util/metrics.h"

void sl_report_progress(runner *r, double t0, int final)
{
    double el = sl_engine_now() - t0;
    int64_t nread = atomic_load(&r->prog_read);
    int64_t done = atomic_load(&r->prog_done), total = atomic_load(&r->prog_total);
    double rate = el > 0 ? (double)nread / el : 0;
    char eta[48] = "";
    if (total > 0 && done > 0 && done < total && el > 1) {
        double left = el * (double)(total - done) / (double)done;
        snprintf(eta, sizeof(eta), ", %.0f%%, ETA %.0fs", 100.0 * (double)done / (double)total,
                 left);
    }
    if (r->o->progress) {
        fprintf(stderr,
                "\r%s: %" PRId64 " read, %" PRIu64 " sent, %" PRIu64
                " failed, %.0f rec/s%s\033[K%s",
                r->p->name, nread, r->counts.sent, r->counts.failed, rate, eta, final ? "\n" : "");
        fflush(stderr);
    } else if (!final) {
        sl_info(sl_ctx_name(r->src_ctx),
                "progress: %" PRId64 " read, %" PRIu64 " sent, %" PRIu64 " failed, %.0f rec/s%s",
                nread, r->counts.sent, r->counts.failed, rate, eta);
    }
}

/* The run's counts as Prometheus gauges, for a process that serves
 * /metrics while it runs (serve, a worker with --listen). */
void sl_report_metrics(runner *r)
{
    static const char *const outcome[] = {"read",    "sent",     "dead_lettered",
                                          "skipped", "requests", "retries"};
    uint64_t v[6] = {(uint64_t)atomic_load(&r->prog_read),
                     r->counts.sent,
                     r->counts.failed,
                     r->counts.skipped,
                     r->counts.requests,
                     r->counts.retries};
    sl_metric_declare("sluice_run_records", SL_METRIC_GAUGE,
                      "Records of the run in progress (or the last one) of a pipeline, by "
                      "outcome; requests and retries are the sink's.");
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        sl_buf labels;
        sl_buf_init(&labels, 0);
        sl_buf_puts(&labels, "pipeline=\"");
        sl_metric_label_escape(&labels, r->p->name);
        sl_buf_printf(&labels, "\",outcome=\"%s\"", outcome[i]);
        sl_metric_set("sluice_run_records", sl_buf_cstr(&labels), (double)v[i]);
        sl_buf_free(&labels);
    }
}

static void count(sl_jw *w, const char *key, uint64_t v)
{
    sl_jw_keyz(w, key);
    sl_jw_int(w, (int64_t)v);
}

static void str(sl_jw *w, const char *key, const char *v)
{
    sl_jw_keyz(w, key);
    sl_jw_str(w, v, strlen(v));
}

void sl_report_summary(const runner *r, const sl_run_result *res, sl_buf *out)
{
    sl_jw w;
    sl_jw_init(&w, out);
    sl_jw_obj_open(&w);
    str(&w, "pipeline", r->p->name);
    str(&w, "input", res->input);
    str(&w, "fileName", res->input);
    int success = strcmp(res->status, "ok") == 0;
    sl_jw_keyz(&w, "success");
    sl_jw_bool(&w, success);
    str(&w, "status", res->status);
    sl_jw_keyz(&w, "records");
    sl_jw_obj_open(&w);
    count(&w, "read", res->counts.read);
    count(&w, "sent", res->counts.sent);
    count(&w, "failed", res->counts.failed);
    count(&w, "skipped", res->counts.skipped);
    sl_jw_obj_close(&w);
    if (res->nactions > 1 || (res->nactions == 1 && strcmp(res->actions[0].name, "send") != 0)) {
        /* per action (a diff's new / changed / lapsed) */
        sl_jw_keyz(&w, "actions");
        sl_jw_obj_open(&w);
        for (size_t k = 0; k < res->nactions; k++) {
            sl_jw_keyz(&w, res->actions[k].name);
            sl_jw_obj_open(&w);
            count(&w, "sent", res->actions[k].sent);
            count(&w, "failed", res->actions[k].failed);
            sl_jw_obj_close(&w);
        }
        sl_jw_obj_close(&w);
    }
    count(&w, "requests", res->counts.requests);
    count(&w, "retries", res->counts.retries);
    sl_jw_keyz(&w, "duration_s");
    sl_jw_double(&w, floor(res->duration_s * 1000.0) / 1000.0);
    if (res->error[0]) {
        str(&w, "error", res->error);
    }
    if (r->sink && r->p->sink_plugin->summarize) {
        r->p->sink_plugin->summarize(r->sink, &w, res->counts.sent, res->counts.failed, success);
    }
    sl_jw_obj_close(&w);
}
