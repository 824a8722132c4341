/* Run summaries to Slack incoming webhooks or any HTTP URL (`notify:`). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "engine/run.h"
#include "sluice/http.h"
#include "sluice/json.h"
#include "sluice/log.h"

static void slack_text(const sl_pipeline_cfg *p, const sl_run_result *res, sl_buf *out)
{
    int ok = strcmp(res->status, "ok") == 0;
    sl_buf text = {0};
    sl_buf_printf(&text,
                  "sluice: %s %s (%s): %" PRIu64 " read, %" PRIu64 " sent, %" PRIu64
                  " failed, %" PRIu64 " skipped in %.1fs",
                  p->name, ok ? "succeeded" : res->status, res->input, res->counts.read,
                  res->counts.sent, res->counts.failed, res->counts.skipped, res->duration_s);
    for (size_t k = 0; k < res->nactions; k++) {
        if (res->nactions == 1 && strcmp(res->actions[0].name, "send") == 0) {
            break; /* no actions: the counts above say it all */
        }
        sl_buf_printf(&text, "%s%s %" PRIu64, k ? ", " : "\n", res->actions[k].name,
                      res->actions[k].sent);
        if (res->actions[k].failed) {
            sl_buf_printf(&text, " (%" PRIu64 " failed)", res->actions[k].failed);
        }
    }
    if (res->error[0]) {
        sl_buf_printf(&text, "\nerror: %s", res->error);
    }
    if (res->counts.failed) {
        sl_buf_printf(&text, "\ndead letters: `sluice status %s`, re-send with `sluice retry %s`",
                      p->name, p->name);
    }
    sl_jw w;
    sl_jw_init(&w, out);
    sl_jw_obj_open(&w);
    sl_jw_keyz(&w, "text");
    sl_jw_str(&w, text.data ? text.data : "", text.len);
    sl_jw_obj_close(&w);
    sl_buf_free(&text);
}

void sl_notify_run(const sl_pipeline_cfg *p, const sl_run_result *res, const char *summary_json)
{
    int ok = strcmp(res->status, "ok") == 0 || strcmp(res->status, "partial") == 0;
    for (size_t i = 0; i < p->nnotify; i++) {
        const sl_notify_cfg *n = &p->notify[i];
        if ((ok && !n->on_success) || (!ok && !n->on_failure)) {
            continue;
        }
        sl_http_req req;
        sl_http_req_init(&req);
        snprintf(req.method, sizeof(req.method), "POST");
        sl_buf_puts(&req.url, n->url);
        sl_http_req_header(&req, "Content-Type", "application/json");
        if (n->format == SL_NOTIFY_SLACK) {
            slack_text(p, res, &req.body);
        } else {
            sl_buf_puts(&req.body, summary_json);
        }
        sl_http_opts o;
        sl_http_opts_default(&o);
        o.concurrency = 1;
        o.max_attempts = 3;
        o.backoff_base_ms = 500;
        o.timeout_ms = 15000;
        o.log_prefix = "notify";
        sl_http_resp resp;
        sl_buf store = {0};
        sl_error err = {0};
        if (sl_http_do(&o, &req, &resp, &store, &err) < 0) {
            sl_warn("notify", "summary of %s not delivered: %s", p->name, err.msg);
        } else if (resp.status < 200 || resp.status >= 300) {
            sl_warn("notify", "summary of %s not delivered: HTTP %ld: %.200s", p->name, resp.status,
                    resp.body);
        } else {
            sl_debug("notify", "summary of %s delivered (HTTP %ld)", p->name, resp.status);
        }
        sl_buf_free(&store);
        sl_http_req_free(&req);
    }
}
