/* Process-wide metrics registry rendered in Prometheus text format 0.0.4.
 *
 * One mutex guards everything: updates are a hash compare plus a short linear
 * scan, far cheaper than the work they count (a batch, a request). Families
 * and series keep declaration / insertion order so /metrics output is stable,
 * which makes it diffable and testable. Both have hard maxima: a bug that
 * puts unbounded values into labels must not eat the process's memory. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/metrics.h"
#include "sluice/log.h"

#define MAX_FAMILIES 256
#define MAX_SERIES 2048 /* per family */
#define MAX_COLLECTORS 64

typedef struct series {
    char *labels;
    uint32_t hash;
    double value;
} series;

typedef struct family {
    char *name;
    char *help; /* NULL when implicitly declared by add/set */
    uint32_t hash;
    sl_metric_type type;
    series *s;
    size_t n, cap;
    int warned_full;
} family;

typedef struct collector {
    sl_metrics_collect_fn fn;
    void *ud;
} collector;

static struct {
    pthread_mutex_t mu;
    family *fam[MAX_FAMILIES];
    size_t nfam;
    int warned_full;
    collector col[MAX_COLLECTORS];
    size_t ncol;
} R = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

/* Caller holds R.mu. */
static family *find_family(const char *name, uint32_t h)
{
    for (size_t i = 0; i < R.nfam; i++) {
        if (R.fam[i]->hash == h && strcmp(R.fam[i]->name, name) == 0) {
            return R.fam[i];
        }
    }
    return NULL;
}

/* Caller holds R.mu. help may be NULL. Returns NULL when full or out of memory
 * (logged once: losing a metric must not stop a pipeline). */
static family *add_family(const char *name, uint32_t h, sl_metric_type type, const char *help)
{
    family *f = NULL;
    if (R.nfam >= MAX_FAMILIES) {
        if (!R.warned_full) {
            R.warned_full = 1;
            sl_warn("metrics", "more than %d metric families; \"%s\" and later ones are dropped",
                    MAX_FAMILIES, name);
        }
        return NULL;
    }
    f = calloc(1, sizeof(*f));
    if (!f) {
        goto fail;
    }
    f->name = strdup(name);
    f->help = help ? strdup(help) : NULL;
    if (!f->name || (help && !f->help)) {
        goto fail;
    }
    f->hash = h;
    f->type = type;
    R.fam[R.nfam++] = f;
    return f;
fail:
    if (f) {
        free(f->name);
        free(f->help);
        free(f);
    }
    return NULL;
}

/* Caller holds R.mu. Returns the series for labels, creating it at 0. */
static series *get_series(family *f, const char *labels)
{
    uint32_t h = fnv1a(labels);
    for (size_t i = 0; i < f->n; i++) {
        if (f->s[i].hash == h && strcmp(f->s[i].labels, labels) == 0) {
            return &f->s[i];
        }
    }
    if (f->n >= MAX_SERIES) {
        if (!f->warned_full) {
            f->warned_full = 1;
            sl_warn("metrics",
                    "metric %s has more than %d label sets; new ones are dropped "
                    "(a label probably carries an unbounded value)",
                    f->name, MAX_SERIES);
        }
        return NULL;
    }
    if (f->n == f->cap) {
        size_t ncap = f->cap ? f->cap * 2 : 8;
        series *p = realloc(f->s, ncap * sizeof(*p));
        if (!p) {
            return NULL;
        }
        f->s = p;
        f->cap = ncap;
    }
    char *copy = strdup(labels);
    if (!copy) {
        return NULL;
    }
    series *s = &f->s[f->n++];
    s->labels = copy;
    s->hash = h;
    s->value = 0;
    return s;
}

void sl_metric_declare(const char *name, sl_metric_type type, const char *help)
{
    uint32_t h = fnv1a(name);
    pthread_mutex_lock(&R.mu);
    family *f = find_family(name, h);
    if (!f) {
        add_family(name, h, type, help ? help : "");
    } else if (!f->help && help) {
        /* Used before it was declared: the declaration still provides the
         * type and help line. */
        f->help = strdup(help);
        f->type = type;
    }
    pthread_mutex_unlock(&R.mu);
}

/* set = 1: assign, else add. An undeclared name is declared on the fly
 * (counter for add, gauge for set) without a HELP line. */
static void update(const char *name, const char *labels, double v, int set)
{
    uint32_t h = fnv1a(name);
    pthread_mutex_lock(&R.mu);
    family *f = find_family(name, h);
    if (!f) {
        f = add_family(name, h, set ? SL_METRIC_GAUGE : SL_METRIC_COUNTER, NULL);
    }
    if (f) {
        series *s = get_series(f, labels ? labels : "");
        if (s) {
            s->value = set ? v : s->value + v;
        }
    }
    pthread_mutex_unlock(&R.mu);
}

void sl_metric_add(const char *name, const char *labels, double v)
{
    update(name, labels, v, 0);
}

void sl_metric_set(const char *name, const char *labels, double v)
{
    update(name, labels, v, 1);
}

void sl_metrics_add_collector(sl_metrics_collect_fn fn, void *ud)
{
    pthread_mutex_lock(&R.mu);
    if (R.ncol < MAX_COLLECTORS) {
        R.col[R.ncol].fn = fn;
        R.col[R.ncol].ud = ud;
        R.ncol++;
    } else {
        sl_warn("metrics", "more than %d metric collectors; one is ignored", MAX_COLLECTORS);
    }
    pthread_mutex_unlock(&R.mu);
}

/* Append s with the bytes in `special` replaced by their escapes (`\\`,
 * `\"`, `\n`). Plain runs are appended whole. (sl_buf_append, unlike
 * sl_buf_putc, always enforces the buffer's maximum.) */
static int escape(sl_buf *b, const char *s, const char *special)
{
    int rc = 0;
    while (*s && rc == 0) {
        size_t run = strcspn(s, special);
        rc = sl_buf_append(b, s, run);
        s += run;
        if (*s && rc == 0) {
            rc = sl_buf_append(b, *s == '\n' ? "\\n" : *s == '"' ? "\\\"" : "\\\\", 2);
            s++;
        }
    }
    return rc;
}

int sl_metric_label_escape(sl_buf *b, const char *s)
{
    return escape(b, s, "\\\"\n");
}

/* HELP text escapes only backslash and newline (format 0.0.4). */
static int help_escape(sl_buf *b, const char *s)
{
    return escape(b, s, "\\\n");
}

/* Whole numbers print as integers (no exponent, no ".0"); others with the
 * fewest digits that read back to the same double. */
static int put_value(sl_buf *b, double v)
{
    if (isnan(v)) {
        return sl_buf_puts(b, "NaN");
    }
    if (isinf(v)) {
        return sl_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
    }
    if (v == floor(v) && fabs(v) < 1e18) {
        return sl_buf_printf(b, "%lld", (long long)v);
    }
    char tmp[64];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) {
            break;
        }
    }
    return sl_buf_puts(b, tmp);
}

int sl_metrics_render(sl_buf *out)
{
    collector col[MAX_COLLECTORS];
    size_t ncol;
    int rc = 0;

    /* Collectors call sl_metric_set, which takes the lock: run them on a
     * snapshot of the list, outside it. */
    pthread_mutex_lock(&R.mu);
    ncol = R.ncol;
    memcpy(col, R.col, ncol * sizeof(col[0]));
    pthread_mutex_unlock(&R.mu);
    for (size_t i = 0; i < ncol; i++) {
        col[i].fn(col[i].ud);
    }

    pthread_mutex_lock(&R.mu);
    for (size_t i = 0; i < R.nfam && rc == 0; i++) {
        const family *f = R.fam[i];
        if (f->help && f->help[0]) {
            rc = sl_buf_printf(out, "# HELP %s ", f->name);
            rc = rc ? rc : help_escape(out, f->help);
            rc = rc ? rc : sl_buf_append(out, "\n", 1);
        }
        rc = rc ? rc
                : sl_buf_printf(out, "# TYPE %s %s\n", f->name,
                                f->type == SL_METRIC_GAUGE ? "gauge" : "counter");
        for (size_t j = 0; j < f->n && rc == 0; j++) {
            const series *s = &f->s[j];
            if (s->labels[0]) {
                rc = sl_buf_printf(out, "%s{%s} ", f->name, s->labels);
            } else {
                rc = sl_buf_printf(out, "%s ", f->name);
            }
            rc = rc ? rc : put_value(out, s->value);
            rc = rc ? rc : sl_buf_append(out, "\n", 1);
        }
    }
    pthread_mutex_unlock(&R.mu);
    return rc;
}

void sl_metrics_reset(void)
{
    pthread_mutex_lock(&R.mu);
    for (size_t i = 0; i < R.nfam; i++) {
        family *f = R.fam[i];
        for (size_t j = 0; j < f->n; j++) {
            free(f->s[j].labels);
        }
        free(f->s);
        free(f->name);
        free(f->help);
        free(f);
        R.fam[i] = NULL;
    }
    R.nfam = 0;
    R.ncol = 0;
    R.warned_full = 0;
    pthread_mutex_unlock(&R.mu);
}
