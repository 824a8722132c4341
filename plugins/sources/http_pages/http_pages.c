/* http_pages source: a paginated JSON API (Mailchimp list members, or any API
 * paged by offset/count, cursor tokens or next links) -> one record per item.
 * See docs/sources/http_pages.md for the options and why the walk is safe on
 * a list that changes while it is read.
 *
 * Shape of a run (offset paging):
 *   window  [cursor - overlap, run start): every page carries the same filter;
 *   probe   the first page, fetched alone: its failure stops the run;
 *   ledger  pages the previous run could not fetch, each with its own window;
 *   pass    pages 0..n-1 of the window, up to `concurrency` requests in flight
 *           (sl_http holds the cap, retries included), emitted in page order
 *           through a ring of 2 x concurrency pages;
 *   check   every page reports total_items: if one differs from the pass's
 *           first page, a member left the window mid-walk and offsets moved,
 *           so another pass runs (keys already emitted are skipped).
 * The source's durable progress (the cursor, the ledger) is written only in
 * commit, inside the engine's closing transaction. */
#include <jansson.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http_pages.h"
#include "sluice/plugin.h"

#define HP_MAX_PAGE_SIZE 100000
#define HP_MAX_CONCURRENCY 64
#define HP_KH 64
#define HP_PUMP_EVERY 256 /* records emitted between non-blocking drives of the client */
#define HP_STATE_CURSOR "cursor"
#define HP_STATE_LEDGER "failed_pages"

static const sl_option hp_options[] = {
    {"url", SL_OPT_STRING, NULL, SL_OPT_REQUIRED, NULL,
     "collection URL, e.g. ${MAILCHIMP_API_URL}/3.0/lists/${MAILCHIMP_LIST_ID}/members"},
    {"preset", SL_OPT_ENUM, "none", 0, "none|mailchimp",
     "mailchimp: Basic auth, since_last_changed/before_last_changed, 403 without JSON retried"},
    {"records", SL_OPT_STRING, "members", 0, NULL,
     "dotted JSON path of the records array in a page (\"\" = the page is the array)"},
    {"total", SL_OPT_STRING, "total_items", 0, NULL,
     "dotted JSON path of the total record count (offset paging)"},
    {"paging", SL_OPT_ENUM, "offset", 0, "offset|cursor|next_link",
     "offset: offset/count by the total; cursor: token from each page; next_link: URL from "
     "each page"},
    {"page_size", SL_OPT_INT, "1000", 0, NULL, "records per page (the count parameter)"},
    {"offset_param", SL_OPT_STRING, "offset", 0, NULL, "query parameter of the offset"},
    {"count_param", SL_OPT_STRING, "count", 0, NULL, "query parameter of the page size"},
    {"cursor_param", SL_OPT_STRING, NULL, 0, NULL, "paging cursor: query parameter of the token"},
    {"cursor_path", SL_OPT_STRING, NULL, 0, NULL,
     "paging cursor: dotted JSON path of the next token in a page"},
    {"next_path", SL_OPT_STRING, NULL, 0, NULL,
     "paging next_link: dotted JSON path of the next page's URL"},
    {"params", SL_OPT_MAP, NULL, 0, NULL, "query parameters added to every request"},
    {"fields", SL_OPT_LIST, NULL, 0, NULL,
     "the API's field selection (fields=a,b); the total and the key are added when missing"},
    {"auth", SL_OPT_ENUM, "none", 0, "none|basic|bearer",
     "basic: username + api_key as password; bearer: api_key as token"},
    {"username", SL_OPT_STRING, "sluice", 0, NULL, "Basic auth user (Mailchimp accepts any)"},
    {"api_key", SL_OPT_STRING, NULL, SL_OPT_SECRET, NULL, "API key (Basic password or token)"},
    {"headers", SL_OPT_MAP, NULL, SL_OPT_SECRET, NULL,
     "request headers added to every request (values are secrets)"},
    {"concurrency", SL_OPT_INT, "10", 0, NULL,
     "simultaneous requests, retries included; never exceeded"},
    {"rate_limit", SL_OPT_STRING, NULL, 0, NULL,
     "requests per time, e.g. 10/s or 600/m (default unlimited)"},
    {"timeout", SL_OPT_DURATION, "120s", 0, NULL, "whole-request timeout"},
    {"retries", SL_OPT_INT, "7", 0, NULL,
     "retries of a page on transport errors, 408, 429, 5xx (Retry-After honoured)"},
    {"backoff", SL_OPT_DURATION, "500ms", 0, NULL, "first retry delay (doubling, full jitter)"},
    {"max_backoff", SL_OPT_DURATION, "60s", 0, NULL, "longest retry delay"},
    {"since_param", SL_OPT_STRING, NULL, 0, NULL,
     "query parameter of the window's start (incremental runs), e.g. since_last_changed"},
    {"before_param", SL_OPT_STRING, NULL, 0, NULL,
     "query parameter of the window's end (the run's start), e.g. before_last_changed"},
    {"overlap", SL_OPT_DURATION, "1s", 0, NULL, "the window starts this long before the cursor"},
    {"key", SL_OPT_STRING, "id", 0, NULL, "record field that identifies a record (de-duplication)"},
    {"max_passes", SL_OPT_INT, "4", 0, NULL,
     "walks over the window while its total keeps changing (offset paging)"},
    {"max_page_bytes", SL_OPT_SIZE, "64MB", 0, NULL, "largest page accepted"},
    SL_OPTIONS_END,
};

/* Defaults the mailchimp preset brings for options the config leaves out. */
static const struct {
    const char *name, *value;
} hp_mailchimp[] = {
    {"auth", "basic"},
    {"since_param", "since_last_changed"},
    {"before_param", "before_last_changed"},
    {NULL, NULL},
};

/* Option value with the preset applied. */
static const char *eff_str(const sl_opts *o, const char *name)
{
    if (!sl_opt_isset(o, name)) {
        const char *p = sl_opt_str(o, "preset");
        if (p && strcmp(p, "mailchimp") == 0) {
            for (size_t i = 0; hp_mailchimp[i].name; i++) {
                if (strcmp(hp_mailchimp[i].name, name) == 0) {
                    return hp_mailchimp[i].value;
                }
            }
        }
    }
    return sl_opt_str(o, name);
}

static int empty(const char *s)
{
    return !s || !*s;
}

/* ================================================================ pure parts */

hp_window hp_window_for(double cursor, double run_started, int64_t overlap_ms)
{
    hp_window w;
    w.before = run_started >= 0 ? floor(run_started) : -1;
    w.since = -1;
    if (cursor >= 0) {
        double s = floor(cursor) - (double)((overlap_ms + 999) / 1000);
        w.since = s < 0 ? 0 : s;
    }
    return w;
}

int hp_format_time(double t, char *out, size_t cap)
{
    time_t tt = (time_t)floor(t);
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || strftime(out, cap, "%Y-%m-%dT%H:%M:%S+00:00", &tm) == 0) {
        return -1;
    }
    return 0;
}

int hp_parse_time(const char *s, double *out)
{
    int y, mo, d, h, mi, se, n = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &se, &n) != 6 ||
        n != 19) {
        return -1;
    }
    const char *p = s + n;
    if (*p == '.') { /* fractions are dropped: windows are whole seconds */
        p++;
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    }
    long off = 0;
    if (*p == 'Z' && p[1] == '\0') {
        off = 0;
    } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
        int oh, om;
        if (sscanf(p + 1, "%2d:%2d", &oh, &om) != 2 || oh > 23 || om > 59) {
            return -1;
        }
        off = (oh * 3600L + om * 60L) * (*p == '-' ? -1 : 1);
    } else {
        return -1;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) {
        return -1;
    }
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    time_t t = timegm(&tm);
    if (t == (time_t)-1 && !(y == 1969 && mo == 12 && d == 31)) {
        return -1;
    }
    *out = (double)t - (double)off;
    return 0;
}

uint64_t hp_page_count(int64_t total, int64_t page_size)
{
    if (total <= 0 || page_size <= 0) {
        return 0;
    }
    return (uint64_t)((total + page_size - 1) / page_size);
}

int64_t hp_page_offset(uint64_t page, int64_t page_size)
{
    return (int64_t)page * page_size;
}

uint64_t hp_pos_encode(unsigned pass, uint64_t page, uint64_t index)
{
    if (pass > HP_MAX_PASS) {
        pass = HP_MAX_PASS;
    }
    if (page > HP_MAX_PAGE) {
        page = HP_MAX_PAGE;
    }
    if (index > HP_MAX_INDEX) {
        index = HP_MAX_INDEX;
    }
    return ((uint64_t)pass << (HP_POS_PAGE_BITS + HP_POS_INDEX_BITS)) |
           (page << HP_POS_INDEX_BITS) | index;
}

void hp_pos_decode(uint64_t pos, unsigned *pass, uint64_t *page, uint64_t *index)
{
    *pass = (unsigned)(pos >> (HP_POS_PAGE_BITS + HP_POS_INDEX_BITS));
    *page = (pos >> HP_POS_INDEX_BITS) & HP_MAX_PAGE;
    *index = pos & HP_MAX_INDEX;
}

void hp_ledger_free(hp_ledger *l)
{
    if (!l) {
        return;
    }
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].error);
    }
    free(l->v);
    memset(l, 0, sizeof(*l));
}

int hp_ledger_add(hp_ledger *l, hp_window w, int64_t offset, int64_t count, const char *error,
                  int attempts)
{
    for (size_t i = 0; i < l->n; i++) {
        hp_failed *f = &l->v[i];
        if (f->w.since == w.since && f->w.before == w.before && f->offset == offset &&
            f->count == count) {
            char *e = strdup(error ? error : "");
            if (!e) {
                return SL_ERR_NOMEM;
            }
            free(f->error);
            f->error = e;
            f->attempts += attempts;
            return 0;
        }
    }
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 8;
        hp_failed *nv = realloc(l->v, nc * sizeof(*nv));
        if (!nv) {
            return SL_ERR_NOMEM;
        }
        l->v = nv;
        l->cap = nc;
    }
    hp_failed *f = &l->v[l->n];
    f->w = w;
    f->offset = offset;
    f->count = count;
    f->attempts = attempts;
    f->error = strdup(error ? error : "");
    if (!f->error) {
        return SL_ERR_NOMEM;
    }
    l->n++;
    return 0;
}

static void jw_time(sl_jw *w, double t)
{
    char ts[40];
    if (t < 0 || hp_format_time(t, ts, sizeof(ts)) != 0) {
        sl_jw_null(w);
    } else {
        sl_jw_str(w, ts, strlen(ts));
    }
}

int hp_ledger_to_json(const hp_ledger *l, sl_buf *out)
{
    sl_jw w;
    sl_jw_init(&w, out);
    sl_jw_arr_open(&w);
    for (size_t i = 0; i < l->n; i++) {
        const hp_failed *f = &l->v[i];
        sl_jw_obj_open(&w);
        sl_jw_keyz(&w, "since");
        jw_time(&w, f->w.since);
        sl_jw_keyz(&w, "before");
        jw_time(&w, f->w.before);
        sl_jw_keyz(&w, "offset");
        sl_jw_int(&w, f->offset);
        sl_jw_keyz(&w, "count");
        sl_jw_int(&w, f->count);
        sl_jw_keyz(&w, "error");
        sl_jw_str(&w, f->error, strlen(f->error));
        sl_jw_keyz(&w, "attempts");
        sl_jw_int(&w, f->attempts);
        sl_jw_obj_close(&w);
    }
    sl_jw_arr_close(&w);
    return w.err;
}

static int json_time(json_t *j, double *out)
{
    if (!j || json_is_null(j)) {
        *out = -1;
        return 0;
    }
    return json_is_string(j) ? hp_parse_time(json_string_value(j), out) : -1;
}

static int ledger_from_jarray(hp_ledger *l, json_t *arr, const char *what, sl_error *err)
{
    if (!json_is_array(arr)) {
        return sl_error_set(err, SL_ERR_INPUT, "%s: expected a JSON array of failed pages", what);
    }
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        hp_window w;
        json_t *off = json_object_get(e, "offset");
        json_t *cnt = json_object_get(e, "count");
        json_t *er = json_object_get(e, "error");
        json_t *at = json_object_get(e, "attempts");
        if (!json_is_object(e) || json_time(json_object_get(e, "since"), &w.since) != 0 ||
            json_time(json_object_get(e, "before"), &w.before) != 0 || !json_is_integer(off) ||
            json_integer_value(off) < 0 || !json_is_integer(cnt) || json_integer_value(cnt) <= 0) {
            return sl_error_set(err, SL_ERR_INPUT,
                                "%s: entry %zu is not {since, before (ISO 8601 or null), offset "
                                ">= 0, count > 0, error, attempts}",
                                what, i + 1);
        }
        if (hp_ledger_add(l, w, json_integer_value(off), json_integer_value(cnt),
                          json_is_string(er) ? json_string_value(er) : "",
                          json_is_integer(at) ? (int)json_integer_value(at) : 0) != 0) {
            return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
        }
    }
    return 0;
}

int hp_ledger_from_json(hp_ledger *l, const char *json, sl_error *err)
{
    json_error_t je;
    json_t *j = json_loads(json ? json : "", 0, &je);
    if (!j) {
        return sl_error_set(err, SL_ERR_INPUT, "saved failed pages are not JSON (%s)", je.text);
    }
    int rc = ledger_from_jarray(l, j, "saved failed pages", err);
    json_decref(j);
    return rc;
}

static int pct_append(sl_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int rc;
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            rc = sl_buf_putc(b, (char)*p);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            rc = sl_buf_append(b, e, 3);
        }
        if (rc) {
            return rc;
        }
    }
    return 0;
}

int hp_url_param(sl_buf *url, const char *name, const char *value)
{
    int rc = sl_buf_putc(url, strchr(sl_buf_cstr(url), '?') ? '&' : '?');
    if (!rc) {
        rc = pct_append(url, name);
    }
    if (!rc) {
        rc = sl_buf_putc(url, '=');
    }
    if (!rc) {
        rc = pct_append(url, value ? value : "");
    }
    return rc;
}

int hp_parse_rate(const char *s, double *per_sec)
{
    if (!s || !*s || strcasecmp(s, "unlimited") == 0) {
        *per_sec = 0;
        return 0;
    }
    char *end;
    double n = strtod(s, &end);
    if (end == s || !(n > 0) || !isfinite(n)) {
        return -1;
    }
    while (*end == ' ') {
        end++;
    }
    if (*end == '\0') {
        *per_sec = n;
        return 0;
    }
    if (*end != '/') {
        return -1;
    }
    end++;
    double k = 1;
    if (*end >= '0' && *end <= '9') {
        char *e2;
        k = strtod(end, &e2);
        if (!(k > 0)) {
            return -1;
        }
        end = e2;
    }
    double unit;
    if (strcmp(end, "s") == 0) {
        unit = 1;
    } else if (strcmp(end, "m") == 0) {
        unit = 60;
    } else if (strcmp(end, "h") == 0) {
        unit = 3600;
    } else {
        return -1;
    }
    *per_sec = n / (k * unit);
    return 0;
}

/* ================================================================ the source */

enum { PG_EMPTY = 0, PG_SUBMITTED, PG_BACKOFF, PG_DONE, PG_FAILED };
enum { PAGING_OFFSET = 0, PAGING_CURSOR, PAGING_NEXT };

typedef struct hp_src hp_src;

typedef struct hp_page {
    hp_src *s;
    int state;
    int probe;         /* the run's first request: a failure stops the run */
    unsigned pass;     /* 0: a ledger entry */
    uint64_t page;     /* page in the pass, or ledger index */
    hp_window w;       /* the filter this page carries */
    int64_t offset;    /* offset paging */
    int64_t count;     /* page size asked */
    char *token;       /* cursor / next link of this page (cursor modes), owned */
    sl_http_req req;   /* live while submitted */
    int attempts;      /* HTTP attempts over every submission */
    int resubmits;     /* our own retries (Mailchimp's 403 without JSON) */
    double not_before; /* PG_BACKOFF: monotonic time of the next submission */
    hp_page_doc d;     /* PG_DONE: the parsed page (buffers kept across uses) */
    size_t nrec;
    int64_t total; /* -1 when the page carries none */
    char *next;    /* cursor modes: the next page's token / URL, owned */
    char *error;   /* PG_FAILED: why, owned */
} hp_page;

/* Keys emitted this run: open addressing over 64-bit hashes (0 = empty). */
typedef struct hp_keys {
    uint64_t *v;
    size_t n, cap;
} hp_keys;

struct hp_src {
    sl_ctx *ctx;
    sl_http *http;
    sl_http_opts hopts;
    char *url;
    char *url_log; /* scheme://host/path, no credentials or query */
    char *headers; /* "Name: value\n" lines (secrets) */
    char *fields;  /* comma-joined fields= value, or NULL */
    char **pnames, **pvalues;
    size_t nparams;
    const char *records_path, *total_path, *key;
    const char *offset_param, *count_param, *cursor_param, *cursor_path, *next_path;
    const char *since_param, *before_param;
    int paging;
    int mailchimp;
    int64_t page_size;
    int64_t overlap_ms;
    int retries;
    long backoff_ms, max_backoff_ms;
    unsigned max_passes;
    size_t ring_cap;

    /* the run */
    int started;
    int resumed;
    hp_window win;
    hp_ledger old;         /* failed pages of the previous run, fetched first */
    size_t old_base;       /* ledger index of old.v[0] (resume) */
    unsigned char *old_ok; /* per old entry: fetched this run */
    hp_ledger failed;      /* pages that failed this run */
    hp_page probe;
    int probe_used;
    int retry_only; /* `sluice retry`: only the pages earlier runs could not fetch */
    unsigned start_pass;
    uint64_t start_page;

    hp_page *ring;
    uint64_t head, tail; /* unit sequence numbers: ring[seq % ring_cap] */
    size_t emit_idx;
    /* key hashes of the next HP_KH items, their table slots prefetched: the
     * table of a million keys lives outside the caches */
    uint64_t kh[HP_KH];
    const hp_page *kh_page;
    size_t kh_base;

    /* planner */
    unsigned plan_pass;
    uint64_t plan_page;
    int plan_end;
    int64_t pass_total; /* total of the pass's first page; -1 unknown */
    uint64_t pass_npages;
    uint64_t pass_completed;
    int pass_inconsistent;
    int pass_aborted; /* a later pass's first page failed */
    unsigned passes_run;
    int consistent; /* the final pass saw one total throughout */

    char fatal[SL_ERRMSG_MAX];
    int fatal_code;
    hp_names names;
    hp_paths paths;
    hp_keys keys;
    uint64_t emitted, skipped_dups, since_pump;
    int64_t ck_total;     /* probe total from the checkpoint (resume), -1 none */
    uint64_t pass_failed; /* pages of the current pass that failed */
    /* cursor / next_link paging: one page at a time */
    int seq_waiting; /* the last planned page has not completed */
    char *seq_next;  /* its next token / URL, NULL at the end */
    int ck_inconsistent;
};

/* ---------------------------------------------------------------- helpers */

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t hash64(const char *p, size_t n)
{
    /* FNV-1a then a final mix: keys are short strings (ids, e-mail hashes) */
    uint64_t h = UINT64_C(1469598103934665603);
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= UINT64_C(1099511628211);
    }
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    return h ? h : 1;
}

/* 1 when h was already there, 0 added, <0 out of memory. */
static int keys_add(hp_keys *k, uint64_t h)
{
    if ((k->n + 1) * 2 > k->cap) {
        size_t nc = k->cap ? k->cap * 2 : 1024;
        uint64_t *nv = calloc(nc, sizeof(*nv));
        if (!nv) {
            return SL_ERR_NOMEM;
        }
        for (size_t i = 0; i < k->cap; i++) {
            if (k->v[i]) {
                size_t j = (size_t)(k->v[i] & (nc - 1));
                while (nv[j]) {
                    j = (j + 1) & (nc - 1);
                }
                nv[j] = k->v[i];
            }
        }
        free(k->v);
        k->v = nv;
        k->cap = nc;
    }
    size_t j = (size_t)(h & (k->cap - 1));
    while (k->v[j]) {
        if (k->v[j] == h) {
            return 1;
        }
        j = (j + 1) & (k->cap - 1);
    }
    k->v[j] = h;
    k->n++;
    return 0;
}

/* Empty the unit for reuse; the parsed page's buffers are kept. */
static void page_clear(hp_page *p)
{
    sl_http_req_free(&p->req);
    free(p->token);
    free(p->next);
    free(p->error);
    hp_src *s = p->s;
    hp_page_doc d = p->d;
    hp_page_doc_reset(&d);
    memset(p, 0, sizeof(*p));
    p->s = s;
    p->d = d;
    p->total = -1;
}

static void page_free(hp_page *p)
{
    page_clear(p);
    hp_page_doc_free(&p->d);
}

/* Move a finished page (the probe) into a ring slot (their buffers swap). */
static void page_move(hp_page *dst, hp_page *src)
{
    page_clear(dst);
    hp_page_doc spare = dst->d;
    *dst = *src;
    memset(src, 0, sizeof(*src));
    src->s = dst->s;
    src->d = spare;
    src->total = -1;
    sl_http_req_init(&src->req);
}

static void set_fatal(hp_src *s, int code, const char *fmt, ...) SL_PRINTF(3, 4);
static void set_fatal(hp_src *s, int code, const char *fmt, ...)
{
    if (s->fatal_code) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->fatal, sizeof(s->fatal), fmt, ap);
    va_end(ap);
    s->fatal_code = code;
}

/* "scheme://host/path" of a URL: no user info, no query (it may carry a key). */
static char *url_for_log(const char *url)
{
    const char *p = strstr(url, "://");
    const char *host = p ? p + 3 : url;
    const char *end = host + strcspn(host, "/?#");
    const char *at = memchr(host, '@', (size_t)(end - host));
    if (at) {
        host = at + 1;
    }
    const char *pend = end + strcspn(end, "?#");
    sl_buf b;
    sl_buf_init(&b, 0);
    if (p) {
        sl_buf_append(&b, url, (size_t)(p - url) + 3);
    }
    sl_buf_append(&b, host, (size_t)(pend - host));
    char *r = sl_buf_steal(&b);
    return r ? r : strdup("?");
}

static void describe_page(const hp_page *p, char *out, size_t cap)
{
    if (p->pass == 0) {
        snprintf(out, cap, "failed page of an earlier run, offset %lld", (long long)p->offset);
    } else if (p->s->paging == PAGING_OFFSET) {
        snprintf(out, cap, "page %llu, offset %lld", (unsigned long long)p->page,
                 (long long)p->offset);
    } else {
        snprintf(out, cap, "page %llu", (unsigned long long)p->page);
    }
}

/* What an API error body says: problem JSON title/detail, message, or text. */
static void api_said(const char *body, size_t len, char *out, size_t cap)
{
    out[0] = '\0';
    json_t *j = json_loadb(body, len, 0, NULL);
    if (json_is_object(j)) {
        const char *t = json_string_value(json_object_get(j, "title"));
        const char *d = json_string_value(json_object_get(j, "detail"));
        const char *m = json_string_value(json_object_get(j, "message"));
        if (!m) {
            m = json_string_value(json_object_get(j, "error"));
        }
        if (t || d) {
            snprintf(out, cap, "%s%s%s", t ? t : "", t && d ? ": " : "", d ? d : "");
        } else if (m) {
            snprintf(out, cap, "%s", m);
        }
    }
    json_decref(j);
    if (!out[0] && len) {
        size_t n = len < 160 ? len : 160;
        snprintf(out, cap, "body: %.*s%s", (int)n, body, len > n ? "..." : "");
        for (char *c = out; *c; c++) {
            if (*c == '\n' || *c == '\r' || *c == '\t') {
                *c = ' ';
            }
        }
    }
}

/* ---------------------------------------------------------------- requests */

static int build_request(hp_src *s, hp_page *p, sl_error *err)
{
    sl_http_req_reset(&p->req);
    snprintf(p->req.method, sizeof(p->req.method), "GET");
    int rc = 0;
    char ts[40];
    if (s->paging == PAGING_NEXT && p->token) {
        rc = sl_buf_puts(&p->req.url, p->token); /* the API's own link carries every parameter */
    } else {
        rc = sl_buf_puts(&p->req.url, s->url);
        for (size_t i = 0; !rc && i < s->nparams; i++) {
            rc = hp_url_param(&p->req.url, s->pnames[i], s->pvalues[i]);
        }
        if (!rc && s->fields) {
            rc = hp_url_param(&p->req.url, "fields", s->fields);
        }
        if (!rc && !empty(s->since_param) && p->w.since >= 0) {
            hp_format_time(p->w.since, ts, sizeof(ts));
            rc = hp_url_param(&p->req.url, s->since_param, ts);
        }
        if (!rc && !empty(s->before_param) && p->w.before >= 0) {
            hp_format_time(p->w.before, ts, sizeof(ts));
            rc = hp_url_param(&p->req.url, s->before_param, ts);
        }
        char num[32];
        if (!rc) {
            snprintf(num, sizeof(num), "%lld", (long long)p->count);
            rc = hp_url_param(&p->req.url, s->count_param, num);
        }
        if (!rc && s->paging == PAGING_OFFSET) {
            snprintf(num, sizeof(num), "%lld", (long long)p->offset);
            rc = hp_url_param(&p->req.url, s->offset_param, num);
        }
        if (!rc && s->paging == PAGING_CURSOR && p->token) {
            rc = hp_url_param(&p->req.url, s->cursor_param, p->token);
        }
    }
    if (!rc && s->headers) {
        rc = sl_buf_puts(&p->req.headers, s->headers);
    }
    if (rc) {
        return sl_error_set(err, rc, "%s: cannot build the request URL (too long?)", s->url_log);
    }
    return 0;
}

static void on_done(void *ud, sl_http_req *req, const sl_http_resp *resp);

static int submit(hp_src *s, hp_page *p, sl_error *err)
{
    int rc = build_request(s, p, err);
    if (rc) {
        return rc;
    }
    p->state = PG_SUBMITTED;
    rc = sl_http_submit(s->http, &p->req, on_done, p, err);
    if (rc) {
        p->state = PG_EMPTY;
        return rc;
    }
    return 0;
}

static void page_fail(hp_src *s, hp_page *p, long status, const char *fmt, ...) SL_PRINTF(4, 5);
static void page_fail(hp_src *s, hp_page *p, long status, const char *fmt, ...)
{
    char why[600], where[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    describe_page(p, where, sizeof(where));
    char msg[900];
    snprintf(msg, sizeof(msg), "GET %s (%s): %s", s->url_log, where, why);
    free(p->error);
    p->error = strdup(msg);
    p->state = PG_FAILED;
    if (p->probe) {
        const char *hint = status == 401   ? " (is the API key right?)"
                           : status == 404 ? " (does the list / collection exist?)"
                           : status == 403 ? " (does the key have access?)"
                                           : "";
        set_fatal(s, SL_ERR_IO, "%s%s; the first page probes the API, so the run stops", msg, hint);
        return;
    }
    sl_plog(s->ctx, SL_LOG_WARN, "%s; recorded as a failed page, the next run fetches it again",
            msg);
    if (hp_ledger_add(&s->failed, p->w, p->offset, p->count, msg, p->attempts) != 0) {
        set_fatal(s, SL_ERR_NOMEM, "out of memory recording a failed page");
    }
}

/* A finished window page feeds the pass's consistency check. */
static void account_pass(hp_src *s, hp_page *p)
{
    if (p->pass == 0) {
        return;
    }
    if (p->state == PG_FAILED) {
        s->pass_failed++;
    }
    if (s->paging != PAGING_OFFSET) {
        s->seq_waiting = 0;
        free(s->seq_next);
        s->seq_next = p->state == PG_DONE && p->next ? strdup(p->next) : NULL;
        return;
    }
    if (p->page == 0 && p->pass > 1 && p->state == PG_FAILED) {
        s->pass_aborted = 1; /* cannot learn the pass's total: stop passing */
        s->pass_total = 0;
        s->pass_npages = 1;
    }
    if (p->state == PG_DONE) {
        if (s->pass_total < 0) {
            s->pass_total = p->total;
            s->pass_npages = hp_page_count(p->total, s->page_size);
            if (s->pass_npages == 0) {
                s->pass_npages = 1; /* the probe itself */
            }
        } else if (p->total != s->pass_total) {
            if (!s->pass_inconsistent) {
                sl_plog(s->ctx, SL_LOG_INFO,
                        "pass %u: page %llu reports %lld records, the pass began with %lld: the "
                        "list changed under the walk, offsets may have moved",
                        p->pass, (unsigned long long)p->page, (long long)p->total,
                        (long long)s->pass_total);
            }
            s->pass_inconsistent = 1;
        }
        if (p->page + 1 < s->pass_npages && (int64_t)p->nrec != p->count) {
            s->pass_inconsistent = 1; /* a short page in the middle: offsets moved */
        }
    }
    s->pass_completed++;
}

static int body_is_json(const sl_http_resp *r)
{
    size_t i = 0;
    while (i < r->body_len &&
           (r->body[i] == ' ' || r->body[i] == '\n' || r->body[i] == '\r' || r->body[i] == '\t')) {
        i++;
    }
    return i < r->body_len && (r->body[i] == '{' || r->body[i] == '[');
}

static void on_done(void *ud, sl_http_req *req, const sl_http_resp *resp)
{
    (void)req;
    hp_page *p = ud;
    hp_src *s = p->s;
    p->attempts += resp->attempts;
    long st = resp->status;
    if (st < 200 || st > 299) {
        /* Mailchimp under load answers 403 with no JSON body: overload, not a
         * refusal. Retried here, after the client's own attempts. */
        if (s->mailchimp && st == 403 && !body_is_json(resp) && p->resubmits < s->retries) {
            double d = (double)s->backoff_ms * pow(2.0, p->resubmits);
            if (d > (double)s->max_backoff_ms) {
                d = (double)s->max_backoff_ms;
            }
            d = d * ((double)rand() / RAND_MAX);
            p->resubmits++;
            p->state = PG_BACKOFF;
            p->not_before = mono_now() + d / 1000.0;
            sl_plog(s->ctx, SL_LOG_INFO, "403 without a JSON body (overload), retry in %.1fs",
                    d / 1000.0);
            return;
        }
        char said[400];
        if (st == 0) {
            page_fail(s, p, 0, "%s after %d attempt%s", resp->error, p->attempts,
                      p->attempts == 1 ? "" : "s");
        } else {
            api_said(resp->body, resp->body_len, said, sizeof(said));
            page_fail(s, p, st, "HTTP %ld%s%s%s after %d attempt%s", st, said[0] ? " (" : "", said,
                      said[0] ? ")" : "", p->attempts, p->attempts == 1 ? "" : "s");
        }
        account_pass(s, p);
        return;
    }
    if (resp->body_len >= s->hopts.max_response) {
        page_fail(s, p, st, "the page is larger than max_page_bytes (%zu bytes)",
                  s->hopts.max_response);
        account_pass(s, p);
        return;
    }
    char why[160];
    int prc =
        hp_page_parse(&p->d, resp->body, resp->body_len, &s->paths, &s->names, why, sizeof(why));
    if (prc == HP_PARSE_NAMES) {
        set_fatal(s, SL_ERR_LIMIT, "GET %s: more than %d distinct field names in the records",
                  s->url_log, HP_MAX_NAMES);
        page_fail(s, p, st, "more than %d distinct field names", HP_MAX_NAMES);
        account_pass(s, p);
        return;
    }
    if (prc == SL_ERR_NOMEM) {
        set_fatal(s, SL_ERR_NOMEM, "GET %s: out of memory parsing a page", s->url_log);
        page_fail(s, p, st, "out of memory");
        account_pass(s, p);
        return;
    }
    if (prc != 0) {
        char said[200];
        api_said(resp->body, resp->body_len, said, sizeof(said));
        page_fail(s, p, st, "HTTP %ld but the body is not JSON (%s; %s)", st, why, said);
        account_pass(s, p);
        return;
    }
    if (!p->d.has_records) {
        hp_page_doc_reset(&p->d);
        page_fail(s, p, st, "HTTP %ld but the page has no array at '%s' (expected the records)", st,
                  s->records_path);
        account_pass(s, p);
        return;
    }
    int64_t total = -1;
    if (s->paging == PAGING_OFFSET) {
        if (!p->d.has_total) {
            hp_page_doc_reset(&p->d);
            page_fail(s, p, st,
                      "HTTP %ld but the page has no count at '%s' (expected a non-negative "
                      "integer: the total, which offset paging needs)",
                      st, s->total_path);
            account_pass(s, p);
            return;
        }
        total = p->d.total;
    } else if (p->d.has_next) {
        p->next = strdup(p->d.buf + p->d.next_off);
    }
    p->nrec = p->d.nitems;
    p->total = total;
    if ((uint64_t)p->nrec > HP_MAX_INDEX) {
        p->nrec = (size_t)HP_MAX_INDEX;
    }
    p->state = PG_DONE;
    if (p->pass == 0 && s->old_ok && p->page >= s->old_base && p->page - s->old_base < s->old.n) {
        s->old_ok[p->page - s->old_base] = 1;
    }
    account_pass(s, p);
}

/* ---------------------------------------------------------------- planner */

/* Pages of this run's window that failed in an earlier pass are covered by a
 * later pass that read the whole window consistently. */
static void drop_window_failures(hp_src *s)
{
    size_t k = 0;
    for (size_t i = 0; i < s->failed.n; i++) {
        hp_failed *f = &s->failed.v[i];
        if (f->w.since == s->win.since && f->w.before == s->win.before) {
            free(f->error);
        } else {
            s->failed.v[k++] = *f;
        }
    }
    s->failed.n = k;
}

/* Fill unit p with the next thing to fetch. 1 planned, 0 nothing yet (wait
 * for pages in flight), -1 nothing more this run. */
static int plan_next(hp_src *s, hp_page *p)
{
    for (;;) {
        if (s->plan_end) {
            return -1;
        }
        if (s->plan_pass == 0) {
            size_t i = (size_t)s->plan_page;
            if (i >= s->old_base && i - s->old_base < s->old.n) {
                const hp_failed *f = &s->old.v[i - s->old_base];
                page_clear(p);
                p->pass = 0;
                p->page = i;
                p->w = f->w;
                p->offset = f->offset;
                p->count = f->count;
                s->plan_page++;
                return 1;
            }
            if (s->retry_only) {
                s->plan_end = 1; /* a retry fetches the ledger and nothing else */
                return -1;
            }
            s->plan_pass = s->start_pass;
            s->plan_page = s->start_page;
            continue;
        }
        if (s->plan_pass == s->start_pass && s->plan_page == s->start_page && !s->probe_used) {
            page_move(p, &s->probe); /* fetched before anything else */
            s->probe_used = 1;
            s->plan_page++;
            return 1;
        }
        if (s->paging != PAGING_OFFSET) {
            /* sequential: the next token comes from the page before */
            if (s->seq_waiting) {
                return 0;
            }
            if (!s->seq_next) {
                s->plan_end = 1;
                s->consistent = 1;
                continue;
            }
            page_clear(p);
            p->pass = s->plan_pass;
            p->page = s->plan_page++;
            p->w = s->win;
            p->count = s->page_size;
            p->token = s->seq_next;
            s->seq_next = NULL;
            s->seq_waiting = 1;
            return 1;
        }
        if (s->pass_total < 0) {
            if (s->plan_page == 0) {
                page_clear(p);
                p->pass = s->plan_pass;
                p->page = s->plan_page++;
                p->w = s->win;
                p->offset = 0;
                p->count = s->page_size;
                return 1;
            }
            return 0; /* the pass's first page tells how many follow */
        }
        if (s->plan_page < s->pass_npages) {
            page_clear(p);
            p->pass = s->plan_pass;
            p->page = s->plan_page++;
            p->w = s->win;
            p->offset = hp_page_offset(p->page, s->page_size);
            p->count = s->page_size;
            return 1;
        }
        if (s->pass_completed < s->pass_npages) {
            return 0;
        }
        /* the pass is over */
        s->passes_run++;
        if (!s->pass_inconsistent && !s->pass_aborted) {
            s->consistent = 1;
            s->plan_end = 1;
            if (s->plan_pass > 1 && s->pass_failed == 0) {
                drop_window_failures(s); /* this pass read the whole window */
            }
            continue;
        }
        if (s->pass_aborted || s->plan_pass >= s->max_passes) {
            sl_plog(s->ctx, SL_LOG_WARN,
                    "the list kept changing through %u pass%s over the window: what was read "
                    "is delivered and the cursor stays, so the next run reads the window again",
                    s->passes_run, s->passes_run == 1 ? "" : "es");
            s->consistent = 0;
            s->plan_end = 1;
            continue;
        }
        sl_plog(s->ctx, SL_LOG_INFO,
                "pass %u was not consistent: walking the window again (records already read are "
                "skipped)",
                s->plan_pass);
        s->plan_pass++;
        s->plan_page = 0;
        s->pass_total = -1;
        s->pass_npages = 0;
        s->pass_completed = 0;
        s->pass_inconsistent = 0;
        s->pass_failed = 0;
    }
}

/* Plan and submit while the ring has room. */
static int fill(hp_src *s, int *ended, sl_error *err)
{
    *ended = 0;
    while (s->tail - s->head < s->ring_cap) {
        hp_page *p = &s->ring[s->tail % s->ring_cap];
        int r = plan_next(s, p);
        if (r < 0) {
            *ended = 1;
            return 0;
        }
        if (r == 0) {
            return 0;
        }
        s->tail++;
        if (p->state == PG_EMPTY) {
            int rc = submit(s, p, err);
            if (rc) {
                return rc;
            }
        }
    }
    return 0;
}

/* Resubmit pages whose own backoff is over; returns ms until the next one, or -1. */
static int resubmit_due(hp_src *s, hp_page *only, sl_error *err, int *rc)
{
    double now = mono_now(), next = -1;
    *rc = 0;
    for (uint64_t q = s->head; q <= s->tail; q++) {
        hp_page *p = q < s->tail ? &s->ring[q % s->ring_cap] : only;
        if (!p || p->state != PG_BACKOFF) {
            continue;
        }
        if (p->not_before <= now) {
            if ((*rc = submit(s, p, err)) != 0) {
                return -1;
            }
        } else if (next < 0 || p->not_before < next) {
            next = p->not_before;
        }
    }
    return next < 0 ? -1 : (int)ceil((next - now) * 1000.0);
}

/* Drive the client once: blocking up to a moment when block, else not at all. */
static int pump(hp_src *s, hp_page *only, int block, sl_error *err)
{
    int rc;
    int due = resubmit_due(s, only, err, &rc);
    if (rc) {
        return rc;
    }
    if (!block) {
        sl_http_run(s->http, 0);
        return 0;
    }
    int wait = due >= 0 && due < 1000 ? due : 1000;
    if (sl_http_pending(s->http) > 0) {
        sl_http_run(s->http, wait);
    } else if (due >= 0) {
        struct timespec ts = {wait / 1000, (long)(wait % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (sl_ctx_stopping(s->ctx)) {
        return sl_error_set(err, SL_ERR_INTERRUPTED, "%s: stopped", s->url_log);
    }
    return 0;
}

/* ---------------------------------------------------------------- run start */

static int load_cursor(hp_src *s, double *cursor, sl_error *err)
{
    *cursor = -1;
    if (empty(s->since_param)) {
        return 0;
    }
    sl_buf b;
    sl_buf_init(&b, 1024);
    int rc = sl_ctx_state_get(s->ctx, HP_STATE_CURSOR, &b, err);
    if (rc < 0 && sl_ctx_dry_run(s->ctx)) {
        /* a dry run may have no state store: it reads as a first run would */
        sl_plog(s->ctx, SL_LOG_INFO, "dry run without the saved cursor: %s", err->msg);
        sl_error_clear(err);
        rc = 0;
    }
    if (rc == 1) {
        rc = 0;
        if (hp_parse_time(sl_buf_cstr(&b), cursor) != 0) {
            rc = sl_error_set(err, SL_ERR_INPUT,
                              "%s: the saved cursor '%.60s' is not an ISO 8601 time", s->url_log,
                              sl_buf_cstr(&b));
        }
    }
    sl_buf_free(&b);
    return rc < 0 ? rc : 0;
}

static int load_old_ledger(hp_src *s, sl_error *err)
{
    sl_buf b;
    sl_buf_init(&b, 0);
    int rc = sl_ctx_state_get(s->ctx, HP_STATE_LEDGER, &b, err);
    if (rc < 0 && sl_ctx_dry_run(s->ctx)) {
        sl_error_clear(err);
        rc = 0;
    }
    if (rc == 1) {
        rc = hp_ledger_from_json(&s->old, sl_buf_cstr(&b), err);
        if (rc) {
            sl_error_prefix(err, "%s", sl_ctx_name(s->ctx));
        }
    }
    sl_buf_free(&b);
    return rc < 0 ? rc : 0;
}

static int start_run(hp_src *s, sl_error *err)
{
    s->started = 1;
    int rc;
    if (s->retry_only) {
        /* `sluice retry`: the pages earlier runs recorded as failed, each
         * with its own window; the cursor is neither read nor moved */
        if ((rc = load_old_ledger(s, err)) != 0) {
            return rc;
        }
        s->consistent = 1;
        s->plan_pass = 0;
        s->plan_page = s->old_base;
        if (s->old.n) {
            s->old_ok = calloc(s->old.n, 1);
            if (!s->old_ok) {
                return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
            }
        }
        sl_plog(s->ctx, SL_LOG_INFO, "retry: fetching %zu page%s that failed in an earlier run",
                s->old.n, s->old.n == 1 ? "" : "s");
        return 0;
    }
    if (!s->resumed) {
        double cursor;
        if ((rc = load_cursor(s, &cursor, err)) != 0 || (rc = load_old_ledger(s, err)) != 0) {
            return rc;
        }
        double started = sl_ctx_run_started(s->ctx);
        if (!(started > 0)) {
            started = (double)time(NULL);
        }
        s->win = hp_window_for(cursor, started, s->overlap_ms);
        s->start_pass = 1;
        s->start_page = 0;
        if (s->paging != PAGING_OFFSET) {
            hp_ledger_free(&s->old); /* the kept cursor covers them (see docs) */
        }
    }
    if (s->old.n) {
        s->old_ok = calloc(s->old.n, 1);
        if (!s->old_ok) {
            return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
        }
        sl_plog(s->ctx, SL_LOG_INFO, "fetching %zu page%s that failed in an earlier run first",
                s->old.n, s->old.n == 1 ? "" : "s");
    }
    char a[40] = "the beginning", b[40] = "now";
    if (s->win.since >= 0) {
        hp_format_time(s->win.since, a, sizeof(a));
    }
    if (s->win.before >= 0) {
        hp_format_time(s->win.before, b, sizeof(b));
    }
    sl_plog(s->ctx, SL_LOG_INFO, "%s: records changed from %s to %s%s", s->url_log, a, b,
            s->resumed ? " (resuming an interrupted run)" : "");

    /* the probe: the first window page, alone */
    hp_page *p = &s->probe;
    page_clear(p);
    p->probe = 1;
    p->pass = s->start_pass;
    p->page = s->start_page;
    p->w = s->win;
    p->count = s->page_size;
    p->offset = hp_page_offset(p->page, s->page_size);
    s->plan_pass = 0;
    s->plan_page = s->old_base;
    s->pass_total = s->ck_total;
    s->pass_npages = s->ck_total >= 0 ? hp_page_count(s->ck_total, s->page_size) : 0;
    s->pass_completed = s->start_page;
    s->pass_inconsistent = s->ck_inconsistent;
    if ((rc = submit(s, p, err)) != 0) {
        return rc;
    }
    while (p->state == PG_SUBMITTED || p->state == PG_BACKOFF) {
        if ((rc = pump(s, p, 1, err)) != 0) {
            return rc;
        }
    }
    if (s->fatal_code) {
        return sl_error_set(err, s->fatal_code, "%s", s->fatal);
    }
    if (s->paging == PAGING_OFFSET && s->pass_npages == 1 && s->pass_total == 0) {
        sl_plog(s->ctx, SL_LOG_INFO, "no records in the window");
    }
    return 0;
}

/* ---------------------------------------------------------------- records */

/* Hash the keys of items [from, from + HP_KH) into s->kh (0: no usable
 * key) and prefetch their slots in the key table. An integer key hashes as
 * its text, as written. */
static void key_hashes(hp_src *s, const hp_page *p, size_t from)
{
    const hp_page_doc *d = &p->d;
    s->kh_page = p;
    s->kh_base = from;
    for (size_t j = 0; j < HP_KH; j++) {
        uint64_t h = 0;
        if (from + j < p->nrec) {
            const hp_item *it = &d->items[from + j];
            if (it->object && it->key >= 0) {
                const hp_val *k = &d->vals[it->key];
                if (k->type == HP_V_STR || k->type == HP_V_INT) {
                    h = hash64(d->buf + k->off, k->len);
                    if (s->keys.cap) {
                        __builtin_prefetch(&s->keys.v[h & (s->keys.cap - 1)]);
                    }
                }
            }
        }
        s->kh[j] = h;
    }
}

static int emit(hp_src *s, hp_page *p, size_t i, sl_record *rec, int *dup, sl_error *err)
{
    const hp_page_doc *d = &p->d;
    const hp_item *it = &d->items[i];
    *dup = 0;
    rec->pos = hp_pos_encode(p->pass, p->page, i);
    rec->line = (uint64_t)(p->offset >= 0 ? p->offset : 0) + i + 1;
    if (!it->object) {
        sl_record_reject(rec, SL_STAGE_SOURCE, "GET %s (page %llu): item %zu is not a JSON object",
                         s->url_log, (unsigned long long)p->page, i);
        return 0;
    }
    if (s->kh_page != p || i < s->kh_base || i >= s->kh_base + HP_KH) {
        key_hashes(s, p, i);
    }
    uint64_t h = s->kh[i - s->kh_base];
    if (h) {
        int r = keys_add(&s->keys, h);
        if (r < 0) {
            return sl_error_set(err, SL_ERR_NOMEM, "out of memory (keys of this run)");
        }
        if (r == 1) {
            *dup = 1;
            return 0;
        }
    }
    for (uint32_t j = 0; j < it->n; j++) {
        const hp_val *v = &d->vals[it->first + j];
        const char *nm = s->names.v[v->name];
        uint32_t nl = s->names.len[v->name];
        int rc;
        switch (v->type) {
        case HP_V_STR:
            rc = sl_record_add_str(rec, nm, nl, d->buf + v->off, v->len);
            break;
        case HP_V_INT:
            rc = sl_record_add_int(rec, nm, nl, v->n.i);
            break;
        case HP_V_REAL:
            rc = sl_record_add_float(rec, nm, nl, v->n.f);
            break;
        case HP_V_TRUE:
        case HP_V_FALSE:
            rc = sl_record_add_bool(rec, nm, nl, v->type == HP_V_TRUE);
            break;
        case HP_V_NULL:
            rc = sl_record_add_null(rec, nm, nl);
            break;
        default:
            rc = sl_record_add_json(rec, nm, nl, d->buf + v->off, v->len);
        }
        if (rc) {
            return sl_error_set(err, rc, "GET %s: record at offset %llu is too large", s->url_log,
                                (unsigned long long)rec->line - 1);
        }
    }
    return 0;
}

static int src_next(void *self, sl_record *rec, uint64_t *next_pos, sl_error *err)
{
    hp_src *s = self;
    int rc;
    if (!s->started && (rc = start_run(s, err)) != 0) {
        return rc;
    }
    for (;;) {
        if (s->fatal_code) {
            return sl_error_set(err, s->fatal_code, "%s", s->fatal);
        }
        if (s->head < s->tail) {
            hp_page *p = &s->ring[s->head % s->ring_cap];
            if (p->state == PG_DONE && s->emit_idx < p->nrec) {
                size_t i = s->emit_idx++;
                int dup;
                sl_record_reset(rec);
                if ((rc = emit(s, p, i, rec, &dup, err)) != 0) {
                    return rc;
                }
                if (dup) {
                    s->skipped_dups++;
                    continue;
                }
                *next_pos = rec->pos + 1;
                s->emitted++;
                if (++s->since_pump >= HP_PUMP_EVERY) {
                    s->since_pump = 0;
                    int ended;
                    if ((rc = fill(s, &ended, err)) != 0 || (rc = pump(s, NULL, 0, err)) != 0) {
                        return rc;
                    }
                }
                return 1;
            }
            if (p->state == PG_DONE || p->state == PG_FAILED) {
                page_clear(p);
                s->head++;
                s->emit_idx = 0;
                s->kh_page = NULL; /* the slot is reused by a later page */
                continue;
            }
        }
        int ended;
        if ((rc = fill(s, &ended, err)) != 0) {
            return rc;
        }
        if (s->head == s->tail && ended) {
            if (s->skipped_dups) {
                sl_plog(s->ctx, SL_LOG_INFO, "%llu records read twice were sent once",
                        (unsigned long long)s->skipped_dups);
            }
            return 0;
        }
        if (s->head < s->tail) {
            hp_page *p = &s->ring[s->head % s->ring_cap];
            if (p->state == PG_DONE || p->state == PG_FAILED) {
                continue;
            }
        }
        if ((rc = pump(s, NULL, 1, err)) != 0) {
            return rc;
        }
    }
}

/* ---------------------------------------------------------------- checkpoint */

static int src_checkpoint(void *self, uint64_t pos, uint64_t line, sl_buf *out, sl_error *err)
{
    hp_src *s = self;
    unsigned pass;
    uint64_t page, index;
    hp_pos_decode(pos, &pass, &page, &index);
    sl_jw w;
    sl_jw_init(&w, out);
    sl_jw_obj_open(&w);
    sl_jw_keyz(&w, "url");
    sl_jw_str(&w, s->url_log, strlen(s->url_log));
    sl_jw_keyz(&w, "since");
    jw_time(&w, s->win.since);
    sl_jw_keyz(&w, "before");
    jw_time(&w, s->win.before);
    sl_jw_keyz(&w, "pass");
    sl_jw_int(&w, pass);
    sl_jw_keyz(&w, "page");
    sl_jw_int(&w, (int64_t)page);
    sl_jw_keyz(&w, "index");
    sl_jw_int(&w, (int64_t)index);
    sl_jw_keyz(&w, "line"); /* the record's 1-based offset in the window, for messages */
    sl_jw_int(&w, (int64_t)line);
    /* the pass's total, when the checkpoint is in the pass being walked */
    int64_t total = pass == s->plan_pass ? s->pass_total : -1;
    sl_jw_keyz(&w, "probe_total");
    sl_jw_int(&w, total);
    sl_jw_keyz(&w, "inconsistent");
    sl_jw_bool(&w, pass == s->plan_pass && s->pass_inconsistent);
    /* failed pages of the previous run still to fetch (from the checkpoint's
     * ledger entry on), and pages that failed in this run so far */
    sl_jw_keyz(&w, "todo_base");
    sl_jw_int(&w, (int64_t)page);
    sl_jw_keyz(&w, "todo");
    hp_ledger todo = {0};
    if (pass == 0) {
        for (size_t i = 0; i < s->old.n; i++) {
            if (s->old_base + i >= page) {
                hp_failed *f = &s->old.v[i];
                if (hp_ledger_add(&todo, f->w, f->offset, f->count, f->error, f->attempts)) {
                    hp_ledger_free(&todo);
                    return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
                }
            }
        }
    }
    sl_buf tmp;
    sl_buf_init(&tmp, 0);
    int rc = hp_ledger_to_json(&todo, &tmp);
    if (!rc) {
        sl_jw_raw(&w, sl_buf_cstr(&tmp), tmp.len);
        sl_buf_reset(&tmp);
        rc = hp_ledger_to_json(&s->failed, &tmp);
    }
    if (!rc) {
        sl_jw_keyz(&w, "failed");
        sl_jw_raw(&w, sl_buf_cstr(&tmp), tmp.len);
    }
    sl_jw_obj_close(&w);
    sl_buf_free(&tmp);
    hp_ledger_free(&todo);
    if (rc || w.err) {
        return sl_error_set(err, rc ? rc : w.err, "%s: cannot write the checkpoint", s->url_log);
    }
    return 0;
}

static int src_resume(void *self, const char *checkpoint, sl_error *err)
{
    hp_src *s = self;
    json_error_t je;
    json_t *j = json_loads(checkpoint ? checkpoint : "", 0, &je);
    int rc = 0;
    json_t *jp = json_object_get(j, "pass");
    json_t *jg = json_object_get(j, "page");
    json_t *jt = json_object_get(j, "probe_total");
    json_t *ju = json_object_get(j, "url");
    json_t *jb = json_object_get(j, "todo_base");
    hp_window w;
    if (!json_is_object(j) || !json_is_integer(jp) || json_integer_value(jp) < 0 ||
        json_integer_value(jp) > (json_int_t)s->max_passes || !json_is_integer(jg) ||
        json_integer_value(jg) < 0 || !json_is_integer(jt) || !json_is_integer(jb) ||
        json_time(json_object_get(j, "since"), &w.since) != 0 ||
        json_time(json_object_get(j, "before"), &w.before) != 0) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s: the saved checkpoint is not one this source wrote (%s); use "
                          "--from-start",
                          s->url_log, j ? "missing or invalid fields" : je.text);
        goto done;
    }
    if (json_is_string(ju) && strcmp(json_string_value(ju), s->url_log) != 0) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s: the interrupted run was reading '%s', not this URL; use "
                          "--from-start",
                          s->url_log, json_string_value(ju));
        goto done;
    }
    if ((rc = ledger_from_jarray(&s->failed, json_object_get(j, "failed"), "checkpoint", err)) !=
            0 ||
        (rc = ledger_from_jarray(&s->old, json_object_get(j, "todo"), "checkpoint", err)) != 0) {
        goto done;
    }
    s->win = w;
    s->resumed = 1;
    unsigned pass = (unsigned)json_integer_value(jp);
    uint64_t page = (uint64_t)json_integer_value(jg);
    s->old_base = (size_t)json_integer_value(jb);
    if (pass == 0) {
        s->start_pass = 1; /* ledger from its entry, then the window from its start */
        s->start_page = 0;
    } else {
        hp_ledger_free(&s->old);
        s->old_base = 0;
        s->start_pass = pass;
        s->start_page = page;
        s->ck_total = json_integer_value(jt);
        s->ck_inconsistent = json_is_true(json_object_get(j, "inconsistent"));
        if (s->ck_total < 0 || s->paging != PAGING_OFFSET) {
            s->start_page = 0; /* no total or no offsets: the pass starts over */
            s->ck_total = -1;
            s->ck_inconsistent = 0;
        } else {
            uint64_t n = hp_page_count(s->ck_total, s->page_size);
            if (s->start_page >= n) {
                s->start_page = n ? n - 1 : 0;
            }
        }
    }
    sl_plog(s->ctx, SL_LOG_INFO, "resuming at pass %u, page %llu (the page is read again)",
            s->start_pass, (unsigned long long)s->start_page);
done:
    json_decref(j);
    return rc;
}

/* ---------------------------------------------------------------- commit */

/* Why a run that delivered what it read is still not complete, for the
 * engine's summary and notification (the run ends "partial", exit 2). */
static void set_partial(hp_src *s, const hp_ledger *owe)
{
    if (owe->n) {
        char offs[160] = "";
        size_t len = 0, shown = 0;
        for (size_t i = 0; i < owe->n && len + 24 < sizeof(offs); i++, shown++) {
            len += (size_t)snprintf(offs + len, sizeof(offs) - len, "%s%lld", i ? ", " : "",
                                    (long long)owe->v[i].offset);
        }
        const char *why = owe->v[0].error;
        const char *colon = strstr(why, "): ");
        sl_ctx_set_partial(s->ctx,
                           "%zu page%s could not be fetched (offset%s %s%s; %.120s); kept for the "
                           "next run, which fetches %s first; the cursor did not move",
                           owe->n, owe->n == 1 ? "" : "s", owe->n == 1 ? "" : "s", offs,
                           shown < owe->n ? ", ..." : "", colon ? colon + 3 : why,
                           owe->n == 1 ? "it" : "them");
    } else if (!empty(s->since_param)) {
        sl_ctx_set_partial(s->ctx,
                           "the list kept changing through %u pass%s over the window, so a member "
                           "may have been skipped; the cursor did not move and the next run reads "
                           "the window again",
                           s->passes_run, s->passes_run == 1 ? "" : "es");
    } else {
        sl_ctx_set_partial(s->ctx,
                           "the list kept changing through %u pass%s, so a member may have "
                           "been skipped; run again to read it all",
                           s->passes_run, s->passes_run == 1 ? "" : "es");
    }
}

static int src_retry(void *self, sl_error *err)
{
    hp_src *s = self;
    (void)err;
    s->retry_only = 1;
    return 0;
}

static int src_commit(void *self, const sl_run_end *e, sl_error *err)
{
    hp_src *s = self;
    if (e->dry_run || sl_ctx_dry_run(s->ctx)) {
        return 0; /* nothing was delivered: nothing moves */
    }
    /* what is still owed: pages that failed now, and earlier ones not fetched */
    hp_ledger owe = {0};
    int rc = 0;
    for (size_t i = 0; i < s->failed.n; i++) {
        hp_failed *f = &s->failed.v[i];
        if ((rc = hp_ledger_add(&owe, f->w, f->offset, f->count, f->error, f->attempts)) != 0) {
            goto done;
        }
    }
    for (size_t i = 0; i < s->old.n; i++) {
        if (!s->old_ok || !s->old_ok[i]) {
            hp_failed *f = &s->old.v[i];
            if ((rc = hp_ledger_add(&owe, f->w, f->offset, f->count, f->error, f->attempts)) != 0) {
                goto done;
            }
        }
    }
    int advance = e->complete && s->started && !s->fatal_code && owe.n == 0 && s->consistent &&
                  !empty(s->since_param) && s->win.before >= 0 && !s->retry_only;
    if (advance) {
        char ts[40];
        hp_format_time(s->win.before, ts, sizeof(ts));
        if ((rc = sl_ctx_state_set(s->ctx, HP_STATE_CURSOR, ts, strlen(ts), err)) != 0) {
            goto done;
        }
        sl_plog(s->ctx, SL_LOG_INFO, "cursor moves to %s", ts);
    } else if (s->started && !empty(s->since_param) && !s->retry_only) {
        sl_plog(s->ctx, SL_LOG_WARN, "cursor unchanged: %s",
                !e->complete ? "the run did not deliver everything"
                : owe.n      ? "some pages could not be fetched"
                             : "the list kept changing during the run");
    }
    if (e->complete && s->started && (owe.n || !s->consistent)) {
        /* everything read was delivered, but not everything was read */
        set_partial(s, &owe);
    }
    if (owe.n) {
        sl_buf b;
        sl_buf_init(&b, 0);
        rc = hp_ledger_to_json(&owe, &b);
        if (!rc) {
            rc = sl_ctx_state_set(s->ctx, HP_STATE_LEDGER, sl_buf_cstr(&b), b.len, err);
        }
        sl_buf_free(&b);
        if (!rc) {
            sl_plog(s->ctx, SL_LOG_WARN, "%zu failed page%s kept for the next run", owe.n,
                    owe.n == 1 ? "" : "s");
        }
    } else if (s->started) {
        sl_buf b;
        sl_buf_init(&b, 0);
        int got = sl_ctx_state_get(s->ctx, HP_STATE_LEDGER, &b, err);
        sl_buf_free(&b);
        rc = got == 1 ? sl_ctx_state_del(s->ctx, HP_STATE_LEDGER, err) : got < 0 ? got : 0;
    }
done:
    hp_ledger_free(&owe);
    if (rc && err && !err->msg[0]) {
        sl_error_set(err, rc, "%s: cannot save the cursor or failed pages", s->url_log);
    }
    return rc;
}

/* ---------------------------------------------------------------- setup */

static int basic_auth(const char *user, const char *pass, sl_buf *out)
{
    size_t ul = strlen(user), pl = strlen(pass);
    char *plain = malloc(ul + pl + 2);
    char *enc = malloc(4 * ((ul + pl + 1 + 2) / 3) + 1);
    int rc = SL_ERR_NOMEM;
    if (plain && enc) {
        memcpy(plain, user, ul);
        plain[ul] = ':';
        memcpy(plain + ul + 1, pass, pl + 1);
        EVP_EncodeBlock((unsigned char *)enc, (const unsigned char *)plain, (int)(ul + pl + 1));
        sl_secret_register(enc);
        rc = sl_buf_printf(out, "Authorization: Basic %s\n", enc);
        memset(plain, 0, ul + pl + 1);
        memset(enc, 0, strlen(enc));
    }
    free(plain);
    free(enc);
    return rc;
}

static int build_headers(hp_src *s, const sl_opts *o, sl_error *err)
{
    sl_buf b;
    sl_buf_init(&b, 64 * 1024);
    int rc = sl_buf_puts(&b, "Accept: application/json\n");
    const char *auth = eff_str(o, "auth");
    const char *key = sl_opt_str(o, "api_key");
    if (!rc && auth && strcmp(auth, "basic") == 0) {
        const char *user = sl_opt_str(o, "username");
        rc = basic_auth(user ? user : "", key ? key : "", &b);
    } else if (!rc && auth && strcmp(auth, "bearer") == 0) {
        rc = sl_buf_printf(&b, "Authorization: Bearer %s\n", key ? key : "");
    }
    size_t n = sl_opt_count(o, "headers");
    for (size_t i = 0; !rc && i < n; i++) {
        const char *k = sl_opt_key(o, "headers", i);
        const char *v = sl_opt_item(o, "headers", i);
        if (!k || !*k || strpbrk(k, ":\r\n \t") || (v && strpbrk(v, "\r\n"))) {
            sl_buf_free(&b);
            return sl_error_set(err, SL_ERR_CONFIG,
                                "%s: headers: header '%s' has an invalid name or a line break in "
                                "its value",
                                sl_opt_where(o, "headers"), k ? k : "");
        }
        rc = sl_buf_printf(&b, "%s: %s\n", k, v ? v : "");
    }
    if (rc) {
        sl_buf_free(&b);
        return sl_error_set(err, rc, "%s: headers: too large", sl_opt_where(o, "headers"));
    }
    s->headers = sl_buf_steal(&b);
    return 0;
}

/* fields=…, with the total and the key added: the consistency check and the
 * de-duplication need them. */
static int build_fields(hp_src *s, const sl_opts *o)
{
    size_t n = sl_opt_count(o, "fields");
    if (n == 0) {
        return 0;
    }
    sl_buf b;
    sl_buf_init(&b, 64 * 1024);
    int has_total = s->paging != PAGING_OFFSET || empty(s->total_path), has_key = 0;
    char keyf[512];
    snprintf(keyf, sizeof(keyf), "%s%s%s", s->records_path, *s->records_path ? "." : "", s->key);
    for (size_t i = 0; i < n; i++) {
        const char *f = sl_opt_item(o, "fields", i);
        if (i) {
            sl_buf_putc(&b, ',');
        }
        sl_buf_puts(&b, f);
        has_total |= strcmp(f, s->total_path) == 0;
        has_key |= strcmp(f, keyf) == 0 || strcmp(f, s->records_path) == 0;
    }
    if (!has_total) {
        sl_buf_putc(&b, ',');
        sl_buf_puts(&b, s->total_path);
    }
    if (!has_key) {
        sl_buf_putc(&b, ',');
        sl_buf_puts(&b, keyf);
    }
    if (s->paging == PAGING_CURSOR && !empty(s->cursor_path)) {
        sl_buf_putc(&b, ',');
        sl_buf_puts(&b, s->cursor_path);
    } else if (s->paging == PAGING_NEXT && !empty(s->next_path)) {
        sl_buf_putc(&b, ',');
        sl_buf_puts(&b, s->next_path);
    }
    s->fields = sl_buf_steal(&b);
    return s->fields ? 0 : SL_ERR_NOMEM;
}

static void src_destroy(void *self)
{
    hp_src *s = self;
    if (!s) {
        return;
    }
    sl_http_free(s->http); /* first: requests in flight borrow the pages */
    if (s->ring) {
        for (size_t i = 0; i < s->ring_cap; i++) {
            page_free(&s->ring[i]);
        }
    }
    free(s->ring);
    page_free(&s->probe);
    free(s->seq_next);
    hp_ledger_free(&s->old);
    hp_ledger_free(&s->failed);
    free(s->old_ok);
    hp_names_free(&s->names);
    free(s->keys.v);
    for (size_t i = 0; i < s->nparams; i++) {
        free(s->pnames[i]);
        free(s->pvalues[i]);
    }
    free(s->pnames);
    free(s->pvalues);
    free(s->url);
    free(s->url_log);
    if (s->headers) {
        memset(s->headers, 0, strlen(s->headers));
    }
    free(s->headers);
    free(s->fields);
    free(s);
}

static int hp_validate(const sl_opts *o, sl_report_fn report, void *ud);

static int src_init(void **self, const sl_opts *o, sl_ctx *ctx, sl_error *err)
{
    int rc;
    hp_src *s = calloc(1, sizeof(*s));
    if (!s) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    s->ctx = ctx;
    s->ck_total = -1;
    s->probe.s = s;
    s->probe.total = -1;
    sl_http_req_init(&s->probe.req);
    const char *paging = sl_opt_str(o, "paging");
    s->paging = strcmp(paging, "cursor") == 0      ? PAGING_CURSOR
                : strcmp(paging, "next_link") == 0 ? PAGING_NEXT
                                                   : PAGING_OFFSET;
    const char *preset = sl_opt_str(o, "preset");
    s->mailchimp = preset && strcmp(preset, "mailchimp") == 0;
    s->records_path = sl_opt_str(o, "records");
    s->total_path = sl_opt_str(o, "total");
    s->key = sl_opt_str(o, "key");
    s->offset_param = sl_opt_str(o, "offset_param");
    s->count_param = sl_opt_str(o, "count_param");
    s->cursor_param = sl_opt_str(o, "cursor_param");
    s->cursor_path = sl_opt_str(o, "cursor_path");
    s->next_path = sl_opt_str(o, "next_path");
    s->since_param = eff_str(o, "since_param");
    s->before_param = eff_str(o, "before_param");
    if (!s->records_path) {
        s->records_path = "";
    }
    s->paths.records = s->records_path;
    s->paths.total = s->paging == PAGING_OFFSET ? s->total_path : NULL;
    s->paths.next = s->paging == PAGING_CURSOR ? s->cursor_path
                    : s->paging == PAGING_NEXT ? s->next_path
                                               : NULL;
    s->paths.key_name = -1;
    if (s->key && *s->key) {
        s->paths.key_name = hp_names_intern(&s->names, s->key, strlen(s->key), 0);
    }
    s->page_size = sl_opt_int(o, "page_size");
    s->overlap_ms = sl_opt_duration_ms(o, "overlap");
    s->retries = (int)sl_opt_int(o, "retries");
    s->backoff_ms = (long)sl_opt_duration_ms(o, "backoff");
    s->max_backoff_ms = (long)sl_opt_duration_ms(o, "max_backoff");
    s->max_passes = (unsigned)sl_opt_int(o, "max_passes");

    /* the same checks `sluice check` makes, for callers that skip it (tests) */
    if (sl_opts_validate(o, hp_validate, err) > 0) {
        rc = SL_ERR_CONFIG;
        goto fail;
    }

    const char *url = sl_opt_str(o, "url");
    s->url = strdup(url);
    s->url_log = url_for_log(url);
    if (!s->url || !s->url_log) {
        rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = build_headers(s, o, err)) != 0) {
        goto fail;
    }
    if (build_fields(s, o) != 0) {
        rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    s->nparams = sl_opt_count(o, "params");
    if (s->nparams) {
        s->pnames = calloc(s->nparams, sizeof(char *));
        s->pvalues = calloc(s->nparams, sizeof(char *));
        if (!s->pnames || !s->pvalues) {
            s->nparams = 0;
            rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < s->nparams; i++) {
            const char *v = sl_opt_item(o, "params", i);
            s->pnames[i] = strdup(sl_opt_key(o, "params", i));
            s->pvalues[i] = strdup(v ? v : "");
            if (!s->pnames[i] || !s->pvalues[i]) {
                rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory");
                goto fail;
            }
        }
    }

    sl_http_opts_default(&s->hopts);
    s->hopts.concurrency = (int)sl_opt_int(o, "concurrency");
    double rate = 0;
    hp_parse_rate(sl_opt_str(o, "rate_limit"), &rate);
    s->hopts.rate_per_sec = rate;
    s->hopts.timeout_ms = (long)sl_opt_duration_ms(o, "timeout");
    s->hopts.max_attempts = s->retries + 1;
    s->hopts.backoff_base_ms = s->backoff_ms;
    s->hopts.backoff_max_ms = s->max_backoff_ms;
    s->hopts.max_response = (size_t)sl_opt_size(o, "max_page_bytes");
    s->hopts.log_prefix = sl_ctx_name(ctx);
    s->http = sl_http_new(&s->hopts, err);
    if (!s->http) {
        rc = err && err->code ? err->code : SL_ERR;
        goto fail;
    }
    /* pages in the ring: the in-flight ones and as many finished ones waiting
     * to be emitted in order */
    s->ring_cap = (size_t)s->hopts.concurrency * 2;
    if (s->paging != PAGING_OFFSET) {
        s->ring_cap = 2; /* one page at a time: each names the next */
    }
    s->ring = calloc(s->ring_cap, sizeof(*s->ring));
    if (!s->ring) {
        rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < s->ring_cap; i++) {
        s->ring[i].s = s;
        s->ring[i].total = -1;
        sl_http_req_init(&s->ring[i].req);
    }
    *self = s;
    return 0;
fail:
    src_destroy(s);
    return rc ? rc : SL_ERR;
}

static const char *src_input_name(void *self)
{
    hp_src *s = self;
    return s->url_log;
}

static void src_progress(void *self, int64_t *done, int64_t *total)
{
    hp_src *s = self;
    *done = (int64_t)s->emitted;
    *total = s->paging == PAGING_OFFSET && s->plan_pass == 1 ? s->pass_total : -1;
}

/* ---------------------------------------------------------------- validate */

/* Reports through report() when given, else into the sl_error passed as ud. */
typedef struct vctx {
    sl_report_fn report;
    void *ud;
    const sl_opts *o;
    int n;
} vctx;

static void vbad(vctx *v, const char *opt, const char *fmt, ...) SL_PRINTF(3, 4);
static void vbad(vctx *v, const char *opt, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    v->report(v->ud, opt, "%s", msg);
    v->n++;
}

static int hp_validate(const sl_opts *o, sl_report_fn report, void *ud)
{
    vctx v = {report, ud, o, 0};
    const char *url = sl_opt_str(o, "url");
    if (url && strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0 &&
        strstr(url, "{{") == NULL) {
        vbad(&v, "url", "expected an http:// or https:// URL, got '%.80s'", url);
    }
    const char *paging = sl_opt_str(o, "paging");
    int64_t ps = sl_opt_int(o, "page_size");
    const char *preset = sl_opt_str(o, "preset");
    int mc = preset && strcmp(preset, "mailchimp") == 0;
    if (ps < 1 || ps > HP_MAX_PAGE_SIZE) {
        vbad(&v, "page_size", "expected 1..%d, got %lld", HP_MAX_PAGE_SIZE, (long long)ps);
    } else if (mc && ps > 1000) {
        vbad(&v, "page_size", "Mailchimp returns at most 1000 records per page, got %lld",
             (long long)ps);
    }
    if (strcmp(paging, "offset") == 0) {
        if (empty(sl_opt_str(o, "total"))) {
            vbad(&v, "total",
                 "paging offset needs the JSON path of the total count (e.g. total_items)");
        }
        if (empty(sl_opt_str(o, "offset_param")) || empty(sl_opt_str(o, "count_param"))) {
            vbad(&v, "offset_param", "paging offset needs offset_param and count_param");
        }
    } else if (strcmp(paging, "cursor") == 0) {
        if (empty(sl_opt_str(o, "cursor_param"))) {
            vbad(&v, "cursor_param",
                 "paging cursor needs the query parameter that carries the token");
        }
        if (empty(sl_opt_str(o, "cursor_path"))) {
            vbad(&v, "cursor_path", "paging cursor needs the JSON path of the next token");
        }
    } else if (strcmp(paging, "next_link") == 0) {
        if (empty(sl_opt_str(o, "next_path"))) {
            vbad(&v, "next_path", "paging next_link needs the JSON path of the next page's URL");
        }
    }
    if (strcmp(paging, "offset") != 0 && mc) {
        vbad(&v, "paging", "the mailchimp preset pages by offset");
    }
    if (strcmp(paging, "offset") != 0 &&
        (sl_opt_isset(o, "cursor_param") == 0 && sl_opt_isset(o, "next_path") == 0)) {
        /* reported above */
    }
    const char *auth = eff_str(o, "auth");
    const char *key = sl_opt_str(o, "api_key");
    if (auth && strcmp(auth, "none") != 0 && empty(key)) {
        vbad(&v, "api_key", "auth %s needs api_key (is the environment variable empty?)", auth);
    }
    if (auth && strcmp(auth, "none") == 0 && !empty(key)) {
        vbad(&v, "auth", "api_key is set but auth is none (expected basic or bearer)");
    }
    int64_t c = sl_opt_int(o, "concurrency");
    if (c < 1 || c > HP_MAX_CONCURRENCY) {
        vbad(&v, "concurrency", "expected 1..%d simultaneous requests, got %lld",
             HP_MAX_CONCURRENCY, (long long)c);
    } else if (mc && c > 10) {
        vbad(&v, "concurrency",
             "Mailchimp allows 10 simultaneous connections per key, got %lld (the 11th is "
             "refused)",
             (long long)c);
    }
    double rate;
    if (hp_parse_rate(sl_opt_str(o, "rate_limit"), &rate) != 0) {
        vbad(&v, "rate_limit", "expected a rate such as 10/s, 600/m or 3000/3s, got '%.40s'",
             sl_opt_str(o, "rate_limit"));
    }
    int64_t r = sl_opt_int(o, "retries");
    if (r < 0 || r > 50) {
        vbad(&v, "retries", "expected 0..50, got %lld", (long long)r);
    }
    int64_t mp = sl_opt_int(o, "max_passes");
    if (mp < 1 || mp > (int64_t)HP_MAX_PASS) {
        vbad(&v, "max_passes", "expected 1..%u, got %lld", HP_MAX_PASS, (long long)mp);
    }
    if (sl_opt_duration_ms(o, "timeout") < 100) {
        vbad(&v, "timeout", "expected at least 100ms");
    }
    if (sl_opt_duration_ms(o, "overlap") < 0) {
        vbad(&v, "overlap", "expected a duration of 0 or more");
    }
    if (sl_opt_duration_ms(o, "backoff") < 1 ||
        sl_opt_duration_ms(o, "max_backoff") < sl_opt_duration_ms(o, "backoff")) {
        vbad(&v, "backoff", "expected backoff >= 1ms and max_backoff >= backoff");
    }
    int64_t mpb = sl_opt_size(o, "max_page_bytes");
    if (mpb < 1024 || mpb > (int64_t)1024 * 1024 * 1024) {
        vbad(&v, "max_page_bytes", "expected 1KB..1GB");
    }
    if (empty(sl_opt_str(o, "key"))) {
        vbad(&v, "key", "expected the name of the field that identifies a record (e.g. id)");
    }
    const char *since = eff_str(o, "since_param");
    const char *before = eff_str(o, "before_param");
    if (!empty(before) && empty(since)) {
        vbad(&v, "before_param",
             "before_param without since_param: the window is only used by incremental runs");
    }
    return v.n;
}

const sl_source_plugin sl_source_http_pages = {
    .name = "http_pages",
    .summary = "records of a paginated JSON API (offset, cursor or next-link paging), "
               "incremental by a time window, safe on a changing list",
    .options = hp_options,
    .validate = hp_validate,
    .init = src_init,
    .resume = src_resume,
    .retry = src_retry,
    .next = src_next,
    .checkpoint = src_checkpoint,
    .input_name = src_input_name,
    .progress = src_progress,
    .commit = src_commit,
    .destroy = src_destroy,
};
