/* fake_hook: a Slack incoming webhook (--slack, strict like Slack) or a
 * generic JSON receiver, for tests of notifications and HTTP sinks. Records
 * every accepted POST body as one compact JSON line; counts at GET /_stats.
 * See tests/fakes/README.md. */
#include <pthread.h>
#include <stdint.h>

#include <jansson.h>

#include "fake_common.h"

#define PROG "fake_hook"
#define USAGE                                                                                      \
    "--port N (0 = any free port) [--port-file FILE] [--record FILE.jsonl] [--path /hook]\n"       \
    "       [--status CODE] [--slack] [--reject TEXT]"

enum route { R_HOOK, R_STATS, R_RESET, R_NOTFOUND };

static struct {
    const char *path;
    const char *reject; /* a body containing this text gets a 400, like a target
                           refusing one member */
    long status;
    int slack;
    int record_fd; /* -1 when not recording */
} g_opt = {.path = "/hook", .status = 200, .record_fd = -1};

static struct {
    pthread_mutex_t mu;
    unsigned long requests, recorded;
    unsigned long status[600];
} g_st = {.mu = PTHREAD_MUTEX_INITIALIZER};

static pthread_mutex_t g_rec_mu = PTHREAD_MUTEX_INITIALIZER;

static void count_status(unsigned status)
{
    pthread_mutex_lock(&g_st.mu);
    if (status < 600) {
        g_st.status[status]++;
    }
    pthread_mutex_unlock(&g_st.mu);
}

/* A refusal: counted, explained on stderr (Slack's own bodies are terse
 * codes, so the reason a test failed would otherwise be invisible). */
static enum MHD_Result refuse(struct MHD_Connection *c, unsigned status, const char *ctype,
                              const char *body, const char *why)
{
    count_status(status);
    fprintf(stderr, PROG ": %u %s: %s\n", status, body, why);
    return fk_respond(c, status, ctype, body, strlen(body));
}

static void stats_json(sl_buf *b)
{
    static const unsigned always[] = {200, 400};
    pthread_mutex_lock(&g_st.mu);
    sl_buf_printf(b, "{\"requests\":%lu,\"recorded\":%lu,\"status\":", g_st.requests,
                  g_st.recorded);
    fk_status_json(b, g_st.status, 600, always, sizeof(always) / sizeof(always[0]));
    sl_buf_putc(b, '}');
    pthread_mutex_unlock(&g_st.mu);
}

/* Slack's rule: a non-empty "text" string, or a non-empty "blocks" array. */
static int slack_has_content(json_t *root)
{
    json_t *text = json_object_get(root, "text");
    json_t *blocks = json_object_get(root, "blocks");
    return (json_is_string(text) && json_string_length(text) > 0) ||
           (json_is_array(blocks) && json_array_size(blocks) > 0);
}

static enum MHD_Result answer_hook(struct MHD_Connection *c, struct fk_req *r)
{
    json_t *root = NULL;
    json_error_t jerr;
    sl_buf line;
    sl_buf_init(&line, FK_BODY_MAX + 2);
    enum MHD_Result rc = MHD_NO;
    const char *bad_ctype = g_opt.slack ? "text/plain" : "application/json";
    const char *bad_body = g_opt.slack ? "invalid_payload" : "{\"ok\":false}";
    char why[512];

    if (r->too_big) {
        snprintf(why, sizeof(why), "body is %zu bytes, the limit is %zu", r->seen, FK_BODY_MAX);
        rc = refuse(c, 413, bad_ctype, bad_body, why);
        goto done;
    }
    if (g_opt.slack) {
        const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
        if (!fk_is_json_ctype(ct)) {
            snprintf(why, sizeof(why), "Content-Type must be application/json, got '%.100s'",
                     ct ? ct : "(none)");
            rc = refuse(c, 400, bad_ctype, bad_body, why);
            goto done;
        }
    }
    root = json_loadb(r->body.data ? r->body.data : "", r->body.len,
                      JSON_REJECT_DUPLICATES | (g_opt.slack ? 0 : JSON_DECODE_ANY), &jerr);
    if (!root) {
        snprintf(why, sizeof(why), "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        rc = refuse(c, 400, bad_ctype, bad_body, why);
        goto done;
    }
    if (g_opt.slack && !json_is_object(root)) {
        rc = refuse(c, 400, bad_ctype, "invalid_payload", "body must be a JSON object");
        goto done;
    }
    if (g_opt.slack && !slack_has_content(root)) {
        rc = refuse(c, 400, bad_ctype, "no_text",
                    "body has no non-empty \"text\" string or \"blocks\" array");
        goto done;
    }

    if (g_opt.reject && r->body.data && strstr(r->body.data, g_opt.reject)) {
        snprintf(why, sizeof(why), "the body contains '%.100s' (--reject)", g_opt.reject);
        rc = refuse(c, 400, "application/json", "{\"error\":\"member rejected\"}", why);
        goto done;
    }
    if (g_opt.record_fd >= 0) {
        const char *b = r->body.data ? r->body.data : "";
        if (fk_append_compact(&line, b, b + r->body.len) != 0 || sl_buf_putc(&line, '\n') != 0) {
            rc = refuse(c, 500, bad_ctype, bad_body, "out of memory recording the body");
            goto done;
        }
        pthread_mutex_lock(&g_rec_mu);
        int bad = fk_write_all(g_opt.record_fd, line.data, line.len);
        pthread_mutex_unlock(&g_rec_mu);
        if (bad) {
            fprintf(stderr, PROG ": writing the --record file failed: %s\n", strerror(errno));
        }
    }
    pthread_mutex_lock(&g_st.mu);
    g_st.recorded++;
    pthread_mutex_unlock(&g_st.mu);
    count_status((unsigned)g_opt.status);
    if (g_opt.slack) {
        rc = fk_respond(c, (unsigned)g_opt.status, "text/plain", "ok", 2);
    } else {
        rc = fk_respond(c, (unsigned)g_opt.status, "application/json", "{\"ok\":true}", 11);
    }
done:
    json_decref(root);
    sl_buf_free(&line);
    return rc;
}

static enum route route_of(const char *url)
{
    if (strcmp(url, g_opt.path) == 0) {
        return R_HOOK;
    }
    if (strcmp(url, "/_stats") == 0) {
        return R_STATS;
    }
    if (strcmp(url, "/_reset") == 0) {
        return R_RESET;
    }
    return R_NOTFOUND;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct fk_req *r = *con_cls;
    if (!r) {
        r = fk_req_new(route_of(url));
        if (!r) {
            return MHD_NO;
        }
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size != 0) {
        fk_req_take(r, upload, *upload_size, r->route == R_HOOK);
        *upload_size = 0;
        return MHD_YES;
    }

    if (r->route == R_STATS || r->route == R_RESET) {
        sl_buf b;
        sl_buf_init(&b, 64 * 1024);
        if (r->route == R_RESET) {
            pthread_mutex_lock(&g_st.mu);
            g_st.requests = g_st.recorded = 0;
            memset(g_st.status, 0, sizeof(g_st.status));
            pthread_mutex_unlock(&g_st.mu);
        }
        stats_json(&b);
        enum MHD_Result rc = fk_respond(c, 200, "application/json", sl_buf_cstr(&b), b.len);
        sl_buf_free(&b);
        return rc;
    }

    pthread_mutex_lock(&g_st.mu);
    g_st.requests++;
    pthread_mutex_unlock(&g_st.mu);
    char msg[512];
    if (r->route == R_NOTFOUND) {
        snprintf(msg, sizeof(msg), "no route %.20s %.200s: fake_hook serves POST %.200s", method,
                 url, g_opt.path);
        count_status(404);
        fprintf(stderr, PROG ": 404 %s\n", msg);
        return fk_respond_message(c, 404, msg);
    }
    if (strcmp(method, "POST") != 0) {
        snprintf(msg, sizeof(msg), "method %.20s not allowed on %.200s: use POST", method, url);
        count_status(405);
        fprintf(stderr, PROG ": 405 %s\n", msg);
        return fk_respond_message(c, 405, msg);
    }
    return answer_hook(c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    fk_req_free(*con_cls);
    *con_cls = NULL;
}

int main(int argc, char **argv)
{
    long port = 0;
    const char *port_file = NULL, *record = NULL;
    int rc = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--slack") == 0) {
            g_opt.slack = 1;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("usage: %s %s\n", PROG, USAGE);
            return 0;
        }
        if (i + 1 >= argc) {
            fk_die_usage(PROG, USAGE, "%s needs a value (or is unknown)", a);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--port") == 0) {
            if (fk_parse_long(v, 0, 65535, &port) != 0) {
                fk_die_usage(PROG, USAGE, "--port: expected 0..65535, got '%s'", v);
            }
        } else if (strcmp(a, "--port-file") == 0) {
            port_file = v;
        } else if (strcmp(a, "--record") == 0) {
            record = v;
        } else if (strcmp(a, "--path") == 0) {
            if (v[0] != '/') {
                fk_die_usage(PROG, USAGE, "--path must start with '/', got '%s'", v);
            }
            g_opt.path = v;
        } else if (strcmp(a, "--reject") == 0) {
            if (!v[0]) {
                fk_die_usage(PROG, USAGE, "--reject: expected a non-empty text");
            }
            g_opt.reject = v;
        } else if (strcmp(a, "--status") == 0) {
            if (fk_parse_long(v, 100, 599, &g_opt.status) != 0) {
                fk_die_usage(PROG, USAGE, "--status: expected an HTTP status 100..599, got '%s'",
                             v);
            }
        } else {
            fk_die_usage(PROG, USAGE, "unknown option %s", a);
        }
    }
    if (record) {
        g_opt.record_fd = fk_open_record(PROG, record);
        if (g_opt.record_fd < 0) {
            goto fail;
        }
    }

    rc = fk_serve(PROG, port, port_file, on_request, on_completed, NULL, stats_json);
fail:
    if (g_opt.record_fd >= 0 && close(g_opt.record_fd) != 0) {
        fprintf(stderr, PROG ": closing the --record file failed: %s\n", strerror(errno));
        rc = 1;
    }
    return rc;
}
