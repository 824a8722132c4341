/* map: reshape records. `fields` builds each output record from expressions
 * (a projection: exactly those fields, in that order); otherwise `rename`,
 * `drop` and `set` edit the record in place, in that order.
 *
 * An expression is `source | fn | fn(args) ...`: the source is a field name,
 * a dotted path into a JSON-valued field (merge_fields.FNAME) or a quoted
 * constant 'text'. Expressions are compiled once (init, and the validate hook
 * that `sluice check` calls); evaluating one costs a scan of the record's
 * fields per source and allocates nothing in steady state: values are read
 * in place, functions write into two scratch buffers that alternate, and the
 * projected record is built in a scratch record whose storage is then
 * swapped with the input record's. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/plugin.h"
#include "sluice/values.h"

/* Limits that keep expressions and messages sane. */
#define MAP_EXPR_MAX 4096 /* bytes in one expression */
#define MAP_ARGS_MAX 16   /* arguments of one function */
#define MAP_PAD_MAX 64    /* zeropad width */
#define MAP_KEY_MAX 256   /* longest JSON key compared along a path */
#define MAP_SCRATCH_MAX ((size_t)64 * 1024 * 1024)

enum fn_id {
    FN_TRIM,
    FN_LOWERCASE,
    FN_UPPERCASE,
    FN_NULL_IF_EMPTY,
    FN_ZEROPAD,
    FN_REMOVE,
    FN_SPLIT,
    FN_COALESCE,
    FN_DEFAULT,
};

/* What each argument must be. */
enum arg_kind { A_INT, A_TEXT, A_SOURCE };

typedef struct fn_def {
    const char *name;
    const char *sig; /* as shown in messages */
    int min, max;    /* arity */
    enum arg_kind kinds[2];
} fn_def;

static const fn_def fn_defs[] = {
    [FN_TRIM] = {"trim", "trim", 0, 0, {A_TEXT, A_TEXT}},
    [FN_LOWERCASE] = {"lowercase", "lowercase", 0, 0, {A_TEXT, A_TEXT}},
    [FN_UPPERCASE] = {"uppercase", "uppercase", 0, 0, {A_TEXT, A_TEXT}},
    [FN_NULL_IF_EMPTY] = {"null_if_empty", "null_if_empty", 0, 0, {A_TEXT, A_TEXT}},
    [FN_ZEROPAD] = {"zeropad", "zeropad(N)", 1, 1, {A_INT, A_INT}},
    [FN_REMOVE] = {"remove", "remove('chars')", 1, 1, {A_TEXT, A_TEXT}},
    [FN_SPLIT] = {"split", "split('sep', index)", 2, 2, {A_TEXT, A_INT}},
    [FN_COALESCE] = {"coalesce", "coalesce(field, ...)", 1, MAP_ARGS_MAX, {A_SOURCE, A_SOURCE}},
    [FN_DEFAULT] = {"default", "default('text')", 1, 1, {A_TEXT, A_TEXT}},
};
#define NFN (sizeof(fn_defs) / sizeof(fn_defs[0]))
#define FN_LIST                                                                                    \
    "trim, lowercase, uppercase, null_if_empty, zeropad(N), remove('chars'), split('sep', "        \
    "index), coalesce(field, ...), default('text')"

/* A value's source: a field (or a path into a JSON field) or a constant. */
typedef struct msrc {
    int is_const;
    char *text; /* field name / path, or the constant (unquoted) */
    size_t len;
    size_t *dots; /* offsets of '.' in text, ascending */
    size_t ndots;
} msrc;

typedef struct mfn {
    enum fn_id id;
    int64_t n; /* zeropad width, split index */
    char *s;   /* remove's characters, split's separator, default's text */
    size_t slen;
    msrc *args; /* coalesce */
    size_t nargs;
} mfn;

typedef struct mexpr {
    char *out; /* output field name (records borrow it) */
    uint32_t out_len;
    msrc src;
    mfn *fns;
    size_t nfns;
} mexpr;

typedef struct mname {
    char *name;
    uint32_t len;
    char *to; /* rename: new name; set: constant */
    uint32_t to_len;
} mname;

typedef struct map_step {
    sl_ctx *ctx; /* borrowed */
    mexpr *exprs;
    size_t nexprs;
    mname *renames, *drops, *sets;
    size_t nrenames, ndrops, nsets;
    /* scratch, reused for every record */
    sl_record out;
    sl_buf scratch[2];
    uint8_t *marks;
    size_t nmarks;
    const char **cols_out; /* output_columns */
} map_step;

static const sl_option map_options[] = {
    {"fields", SL_OPT_MAP, NULL, 0, NULL,
     "output field -> expression (source | fn | fn(args)); the output is exactly these fields"},
    {"rename", SL_OPT_MAP, NULL, 0, NULL, "field -> new name"},
    {"drop", SL_OPT_LIST, NULL, 0, NULL, "fields to remove"},
    {"set", SL_OPT_MAP, NULL, 0, NULL, "field -> constant text (added, or replacing the value)"},
    SL_OPTIONS_END,
};

/* ------------------------------------------------------------ compiling */

static void src_free(msrc *s)
{
    free(s->text);
    free(s->dots);
}

static void expr_free(mexpr *e)
{
    free(e->out);
    src_free(&e->src);
    for (size_t i = 0; i < e->nfns; i++) {
        free(e->fns[i].s);
        for (size_t k = 0; k < e->fns[i].nargs; k++) {
            src_free(&e->fns[i].args[k]);
        }
        free(e->fns[i].args);
    }
    free(e->fns);
}

/* Parser state of one expression. On the first problem, msg is set and
 * parsing stops: one clear message per bad expression. */
typedef struct parser {
    const char *s;
    size_t len, i;
    char msg[512];
    size_t col; /* 1-based column of the problem */
    int nomem;
} parser;

static int is_ws(char c)
{
    return c == ' ' || c == '\t';
}

static void skip_ws(parser *p)
{
    while (p->i < p->len && is_ws(p->s[p->i])) {
        p->i++;
    }
}

static int perr(parser *p, size_t at, const char *fmt, ...) SL_PRINTF(3, 4);
static int perr(parser *p, size_t at, const char *fmt, ...)
{
    if (p->msg[0]) {
        return -1;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->msg, sizeof(p->msg), fmt, ap);
    va_end(ap);
    p->col = at + 1;
    return -1;
}

static int oom(parser *p)
{
    p->nomem = 1;
    snprintf(p->msg, sizeof(p->msg), "out of memory");
    return -1;
}

/* 'text' with '' for a quote; p->i at the opening quote. *out is malloc'd. */
static int parse_quoted(parser *p, char **out, size_t *olen)
{
    size_t start = p->i++;
    char *t = malloc(p->len - start + 1);
    size_t n = 0;
    if (!t) {
        return oom(p);
    }
    for (;;) {
        if (p->i >= p->len) {
            free(t);
            return perr(p, start, "unterminated quote (expected a closing ')");
        }
        char c = p->s[p->i++];
        if (c == '\'') {
            if (p->i < p->len && p->s[p->i] == '\'') {
                t[n++] = '\'';
                p->i++;
                continue;
            }
            break;
        }
        t[n++] = c;
    }
    t[n] = '\0';
    *out = t;
    *olen = n;
    return 0;
}

/* Fill s->dots for a field name / path. */
static int src_dots(parser *p, msrc *s)
{
    for (size_t i = 0; i < s->len; i++) {
        s->ndots += s->text[i] == '.';
    }
    if (s->ndots == 0) {
        return 0;
    }
    s->dots = malloc(s->ndots * sizeof(*s->dots));
    if (!s->dots) {
        return oom(p);
    }
    size_t k = 0;
    for (size_t i = 0; i < s->len; i++) {
        if (s->text[i] == '.') {
            s->dots[k++] = i;
        }
    }
    return 0;
}

/* A source: a quoted constant, or a field name / path running up to one of
 * `stops` (trimmed). A name may not hold quotes or parentheses: `lowercase(x)`
 * written as a source is a mistake worth naming. */
static int parse_source(parser *p, msrc *s, const char *stops, const char *ctx)
{
    skip_ws(p);
    size_t start = p->i;
    if (p->i < p->len && p->s[p->i] == '\'') {
        s->is_const = 1;
        return parse_quoted(p, &s->text, &s->len);
    }
    while (p->i < p->len && !strchr(stops, p->s[p->i])) {
        char c = p->s[p->i];
        if (c == '\'' || c == '(' || c == ')' || c == ',') {
            if (c == '(' && strcmp(ctx, "source") == 0) {
                return perr(p, p->i,
                            "'(' in the field name (functions follow the source: `field | fn`)");
            }
            return perr(p, p->i, "unexpected '%c' in the %s (expected a field name or 'text')", c,
                        ctx);
        }
        p->i++;
    }
    size_t end = p->i;
    while (end > start && is_ws(p->s[end - 1])) {
        end--;
    }
    if (end == start) {
        return perr(p, start, "missing %s (expected a field name, a.path or 'text')", ctx);
    }
    s->len = end - start;
    s->text = strndup(p->s + start, s->len);
    if (!s->text) {
        return oom(p);
    }
    if (s->text[0] == '.' || s->text[s->len - 1] == '.' || strstr(s->text, "..")) {
        return perr(p, start, "'%s' is not a field name or path (expected name or a.b.c)", s->text);
    }
    return src_dots(p, s);
}

static int parse_int_arg(parser *p, int64_t *v)
{
    size_t start = p->i;
    size_t i = p->i;
    if (i < p->len && p->s[i] == '-') {
        i++;
    }
    size_t d0 = i;
    while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9') {
        i++;
    }
    if (i == d0 || i - d0 > 9) {
        return perr(p, start, "expected a whole number");
    }
    char tmp[16];
    snprintf(tmp, sizeof(tmp), "%.*s", (int)(i - start), p->s + start);
    *v = strtoll(tmp, NULL, 10);
    p->i = i;
    return 0;
}

/* One argument of f (the k-th), p->i at its first character. */
static int parse_arg(parser *p, mfn *f, size_t k, size_t at)
{
    const fn_def *d = &fn_defs[f->id];
    enum arg_kind kind = d->kinds[k < 2 ? k : 1];
    if (kind == A_SOURCE) {
        msrc *a = &f->args[f->nargs];
        int rc = parse_source(p, a, ",)|", "argument");
        f->nargs++; /* counted even when it failed, so expr_free frees it */
        return rc;
    }
    char c = p->i < p->len ? p->s[p->i] : '\0';
    if (kind == A_INT) {
        int64_t v = 0;
        if (c == '\'' || parse_int_arg(p, &v) < 0) {
            p->msg[0] = '\0';
            return perr(p, at, "%s: argument %zu must be a whole number (expected %s)", d->name,
                        k + 1, d->sig);
        }
        if (f->id == FN_ZEROPAD && (v < 1 || v > MAP_PAD_MAX)) {
            return perr(p, at, "zeropad: width %lld is out of range (expected 1 to %d)",
                        (long long)v, MAP_PAD_MAX);
        }
        f->n = v;
        return 0;
    }
    if (c != '\'') {
        return perr(p, at, "%s: argument %zu must be quoted text (expected %s)", d->name, k + 1,
                    d->sig);
    }
    if (parse_quoted(p, &f->s, &f->slen) < 0) {
        return -1;
    }
    if (f->slen == 0 && (f->id == FN_REMOVE || f->id == FN_SPLIT)) {
        return perr(p, at, "%s: argument %zu must not be empty (expected %s)", d->name, k + 1,
                    d->sig);
    }
    return 0;
}

static int parse_call(parser *p, mfn *f)
{
    skip_ws(p);
    size_t start = p->i;
    while (p->i < p->len &&
           ((p->s[p->i] >= 'a' && p->s[p->i] <= 'z') || (p->s[p->i] >= 'A' && p->s[p->i] <= 'Z') ||
            (p->s[p->i] >= '0' && p->s[p->i] <= '9') || p->s[p->i] == '_')) {
        p->i++;
    }
    size_t nl = p->i - start;
    if (nl == 0) {
        if (p->i >= p->len) {
            return perr(p, start, "missing function after '|' (expected one of " FN_LIST ")");
        }
        return perr(p, start, "unexpected '%c' (expected a function: one of " FN_LIST ")",
                    p->s[p->i]);
    }
    size_t id = 0;
    while (id < NFN &&
           !(strlen(fn_defs[id].name) == nl && memcmp(fn_defs[id].name, p->s + start, nl) == 0)) {
        id++;
    }
    if (id == NFN) {
        return perr(p, start, "unknown function '%.*s' (expected one of " FN_LIST ")", (int)nl,
                    p->s + start);
    }
    f->id = (enum fn_id)id;
    const fn_def *d = &fn_defs[id];
    skip_ws(p);
    size_t nargs = 0;
    if (p->i < p->len && p->s[p->i] == '(') {
        size_t open = p->i++;
        if (d->kinds[0] == A_SOURCE) {
            f->args = calloc(MAP_ARGS_MAX, sizeof(*f->args));
            if (!f->args) {
                return oom(p);
            }
        }
        skip_ws(p);
        if (p->i < p->len && p->s[p->i] == ')') {
            p->i++;
        } else {
            for (;;) {
                skip_ws(p);
                size_t at = p->i;
                if (nargs >= (size_t)d->max) {
                    return perr(p, at, "%s takes %d argument%s, found more (expected %s)", d->name,
                                d->max, d->max == 1 ? "" : "s", d->sig);
                }
                if (p->i >= p->len) {
                    return perr(p, open, "unclosed '(' (expected ')')");
                }
                if (parse_arg(p, f, nargs, at) < 0) {
                    return -1;
                }
                nargs++;
                skip_ws(p);
                if (p->i >= p->len) {
                    return perr(p, open, "unclosed '(' (expected ')')");
                }
                if (p->s[p->i] == ')') {
                    p->i++;
                    break;
                }
                if (p->s[p->i] != ',') {
                    return perr(p, p->i, "unexpected '%c' in %s(...) (expected ',' or ')')",
                                p->s[p->i], d->name);
                }
                p->i++;
            }
        }
    }
    if (nargs < (size_t)d->min || nargs > (size_t)d->max) {
        if (d->min == d->max) {
            return perr(p, start, "%s takes %d argument%s, found %zu (expected %s)", d->name,
                        d->min, d->min == 1 ? "" : "s", nargs, d->sig);
        }
        return perr(p, start, "%s takes at least %d argument%s, found %zu (expected %s)", d->name,
                    d->min, d->min == 1 ? "" : "s", nargs, d->sig);
    }
    return 0;
}

/* Compile text into e (e->out already set). 0 ok; -1 with p->msg. */
static int parse_expr(parser *p, mexpr *e)
{
    if (p->len > MAP_EXPR_MAX) {
        return perr(p, MAP_EXPR_MAX, "expression longer than %d bytes", MAP_EXPR_MAX);
    }
    if (parse_source(p, &e->src, "|", "source") < 0) {
        return -1;
    }
    skip_ws(p);
    size_t ncalls = 0;
    for (size_t i = p->i; i < p->len; i++) {
        ncalls += p->s[i] == '|'; /* an upper bound: quotes may hold '|' */
    }
    if (ncalls) {
        e->fns = calloc(ncalls, sizeof(*e->fns));
        if (!e->fns) {
            return oom(p);
        }
    }
    while (p->i < p->len) {
        if (p->s[p->i] != '|') {
            return perr(p, p->i, "unexpected '%c' (expected '|' and a function)", p->s[p->i]);
        }
        p->i++;
        if (e->nfns >= ncalls) {
            return perr(p, p->i, "too many functions");
        }
        mfn *f = &e->fns[e->nfns++];
        if (parse_call(p, f) < 0) {
            return -1;
        }
        skip_ws(p);
    }
    return 0;
}

/* Report sink of compile(): validate's report, or init's collector. */
typedef struct reporter {
    sl_report_fn report;
    void *ud;
    int n;
} reporter;

#define REPORT(rp, opt, ...)                                                                       \
    do {                                                                                           \
        (rp)->report((rp)->ud, (opt), __VA_ARGS__);                                                \
        (rp)->n++;                                                                                 \
    } while (0)

static int dup_name(const char *s, char **out, uint32_t *len)
{
    *out = strdup(s ? s : "");
    if (!*out) {
        return SL_ERR_NOMEM;
    }
    *len = (uint32_t)strlen(*out);
    return 0;
}

static int load_names(const sl_opts *opts, const char *opt, int is_map, mname **out, size_t *nout)
{
    size_t n = sl_opt_count(opts, opt);
    if (n == 0) {
        return 0;
    }
    *out = calloc(n, sizeof(**out));
    if (!*out) {
        return SL_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        mname *m = &(*out)[i];
        *nout = i + 1;
        if (dup_name(is_map ? sl_opt_key(opts, opt, i) : sl_opt_item(opts, opt, i), &m->name,
                     &m->len) ||
            (is_map && dup_name(sl_opt_item(opts, opt, i), &m->to, &m->to_len))) {
            return SL_ERR_NOMEM;
        }
    }
    return 0;
}

static void map_free_parts(map_step *m)
{
    for (size_t i = 0; i < m->nexprs; i++) {
        expr_free(&m->exprs[i]);
    }
    free(m->exprs);
    mname *lists[] = {m->renames, m->drops, m->sets};
    size_t counts[] = {m->nrenames, m->ndrops, m->nsets};
    for (size_t l = 0; l < 3; l++) {
        for (size_t i = 0; i < counts[l]; i++) {
            free(lists[l][i].name);
            free(lists[l][i].to);
        }
        free(lists[l]);
    }
}

/* Compile the options into m, reporting every problem through rp. Returns
 * 0, or SL_ERR_NOMEM (problems are counted in rp->n). */
static int compile(const sl_opts *opts, map_step *m, reporter *rp)
{
    size_t nf = sl_opt_count(opts, "fields");
    if (nf == 0 && !sl_opt_count(opts, "rename") && !sl_opt_count(opts, "drop") &&
        !sl_opt_count(opts, "set")) {
        REPORT(rp, "fields",
               "map does nothing (expected at least one of fields, rename, drop, set)");
    }
    if (nf) {
        const char *others[] = {"rename", "drop", "set"};
        for (size_t i = 0; i < 3; i++) {
            if (sl_opt_count(opts, others[i])) {
                REPORT(rp, others[i],
                       "cannot be combined with fields, which lists the whole output record "
                       "(expected the output name in fields%s)",
                       i == 2 ? ", with the constant written as 'text'" : "");
            }
        }
        m->exprs = calloc(nf, sizeof(*m->exprs));
        if (!m->exprs) {
            return SL_ERR_NOMEM;
        }
    }
    for (size_t i = 0; i < nf; i++) {
        mexpr *e = &m->exprs[i];
        m->nexprs = i + 1;
        const char *text = sl_opt_item(opts, "fields", i);
        if (dup_name(sl_opt_key(opts, "fields", i), &e->out, &e->out_len)) {
            return SL_ERR_NOMEM;
        }
        if (e->out_len == 0) {
            REPORT(rp, "fields", "an output field has an empty name (expected a name)");
            continue;
        }
        parser p = {.s = text ? text : "", .len = text ? strlen(text) : 0};
        if (parse_expr(&p, e) < 0) {
            if (p.nomem) {
                return SL_ERR_NOMEM;
            }
            char shown[120];
            sl_excerpt(shown, sizeof(shown), p.s, p.len, 100);
            REPORT(rp, "fields", "'%s': column %zu of `%s`: %s", e->out, p.col, shown, p.msg);
        }
    }
    if (load_names(opts, "rename", 1, &m->renames, &m->nrenames) ||
        load_names(opts, "drop", 0, &m->drops, &m->ndrops) ||
        load_names(opts, "set", 1, &m->sets, &m->nsets)) {
        return SL_ERR_NOMEM;
    }
    for (size_t i = 0; i < m->nrenames; i++) {
        if (m->renames[i].to_len == 0) {
            REPORT(rp, "rename", "'%s': the new name is empty (expected a field name)",
                   m->renames[i].name);
        }
        for (size_t k = 0; k < i; k++) {
            if (strcmp(m->renames[k].to, m->renames[i].to) == 0 && m->renames[i].to_len) {
                REPORT(rp, "rename",
                       "'%s' and '%s' are both renamed to '%s' (expected distinct new names)",
                       m->renames[k].name, m->renames[i].name, m->renames[i].to);
            }
        }
    }
    for (size_t i = 0; i < m->ndrops; i++) {
        if (m->drops[i].len == 0) {
            REPORT(rp, "drop", "an empty field name (expected the names of fields to remove)");
        }
    }
    for (size_t i = 0; i < m->nsets; i++) {
        for (size_t k = 0; k < m->ndrops; k++) {
            if (strcmp(m->sets[i].name, m->drops[k].name) == 0) {
                REPORT(rp, "set",
                       "'%s' is also dropped (drop runs before set: expected one of them)",
                       m->sets[i].name);
            }
        }
    }
    return 0;
}

static int map_validate(const sl_opts *opts, sl_report_fn report, void *ud)
{
    map_step m;
    memset(&m, 0, sizeof(m));
    reporter rp = {report, ud, 0};
    if (compile(opts, &m, &rp) == SL_ERR_NOMEM) {
        report(ud, "fields", "out of memory compiling the expressions");
        rp.n++;
    }
    map_free_parts(&m);
    return rp.n;
}

/* ------------------------------------------------------------ lifecycle */

static void map_destroy(void *self)
{
    map_step *m = self;
    if (!m) {
        return;
    }
    map_free_parts(m);
    sl_record_free(&m->out);
    sl_buf_free(&m->scratch[0]);
    sl_buf_free(&m->scratch[1]);
    free(m->marks);
    free(m->cols_out);
    free(m);
}

/* init's report function: every problem, joined into one message. */
typedef struct collector {
    const sl_opts *opts;
    sl_buf msg;
} collector;

static void collect(void *ud, const char *option, const char *fmt, ...) SL_PRINTF(3, 4);
static void collect(void *ud, const char *option, const char *fmt, ...)
{
    collector *c = ud;
    if (c->msg.len) {
        sl_buf_puts(&c->msg, "; ");
    }
    sl_buf_printf(&c->msg, "%s: %s: ", sl_opt_where(c->opts, option), option);
    va_list ap;
    va_start(ap, fmt);
    sl_buf_vprintf(&c->msg, fmt, ap);
    va_end(ap);
}

static int map_init(void **self, const sl_opts *opts, sl_ctx *ctx, sl_error *err)
{
    int rc = SL_ERR_NOMEM;
    collector c = {opts, {0}};
    sl_buf_init(&c.msg, SL_ERRMSG_MAX * 4);
    map_step *m = calloc(1, sizeof(*m));
    if (!m) {
        goto fail;
    }
    m->ctx = ctx;
    sl_record_init(&m->out);
    sl_buf_init(&m->scratch[0], MAP_SCRATCH_MAX);
    sl_buf_init(&m->scratch[1], MAP_SCRATCH_MAX);
    reporter rp = {collect, &c, 0};
    if (compile(opts, m, &rp) == SL_ERR_NOMEM) {
        goto fail;
    }
    if (rp.n) {
        rc = sl_error_set(err, SL_ERR_CONFIG, "map: %s", sl_buf_cstr(&c.msg));
        goto fail;
    }
    sl_buf_free(&c.msg);
    *self = m;
    return 0;
fail:
    sl_buf_free(&c.msg);
    map_destroy(m);
    if (rc == SL_ERR_NOMEM) {
        sl_error_set(err, rc, "map: out of memory");
    }
    return rc;
}

static int has_column(const char *const *cols, size_t n, const char *name, size_t len)
{
    for (size_t k = 0; k < n; k++) {
        if (strlen(cols[k]) == len && memcmp(cols[k], name, len) == 0) {
            return 1;
        }
    }
    return 0;
}

static void check_source(map_step *m, const msrc *s, const char *const *cols, size_t n,
                         const char *out)
{
    if (s->is_const || has_column(cols, n, s->text, s->len)) {
        return;
    }
    for (size_t d = 0; d < s->ndots; d++) {
        if (has_column(cols, n, s->text, s->dots[d])) {
            return;
        }
    }
    sl_plog(m->ctx, SL_LOG_WARN, "fields: '%s': source '%s' is not in the input (it will be null)",
            out, s->text);
}

/* Names the input lacks are probably typos: say so, but run (an optional
 * column may be absent from one export and present in the next). */
static int map_columns(void *self, const char *const *cols, size_t n, sl_error *err)
{
    (void)err;
    map_step *m = self;
    for (size_t i = 0; i < m->nexprs; i++) {
        check_source(m, &m->exprs[i].src, cols, n, m->exprs[i].out);
        for (size_t f = 0; f < m->exprs[i].nfns; f++) {
            for (size_t a = 0; a < m->exprs[i].fns[f].nargs; a++) {
                check_source(m, &m->exprs[i].fns[f].args[a], cols, n, m->exprs[i].out);
            }
        }
    }
    for (size_t i = 0; i < m->nrenames; i++) {
        if (!has_column(cols, n, m->renames[i].name, m->renames[i].len)) {
            sl_plog(m->ctx, SL_LOG_WARN, "rename: '%s' is not in the input", m->renames[i].name);
        }
    }
    for (size_t i = 0; i < m->ndrops; i++) {
        if (!has_column(cols, n, m->drops[i].name, m->drops[i].len)) {
            sl_plog(m->ctx, SL_LOG_WARN, "drop: '%s' is not in the input", m->drops[i].name);
        }
    }
    return 0;
}

static int in_names(const mname *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].name, name) == 0) {
            return (int)i + 1;
        }
    }
    return 0;
}

/* What map_process makes of records with these columns: the projection's
 * names, or the input renamed, less the dropped, plus the set. */
static const char *const *map_output_columns(void *self, const char *const *in, size_t n,
                                             size_t *nout)
{
    map_step *m = self;
    free(m->cols_out);
    m->cols_out = calloc(n + m->nexprs + m->nsets + 1, sizeof(*m->cols_out));
    if (!m->cols_out) {
        return NULL;
    }
    size_t k = 0;
    if (m->nexprs) {
        for (size_t i = 0; i < m->nexprs; i++) {
            m->cols_out[k++] = m->exprs[i].out;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            int ri = in_names(m->renames, m->nrenames, in[i]);
            const char *name = ri ? m->renames[ri - 1].to : in[i];
            int dup = 0;
            for (size_t j = 0; j < k && !dup; j++) {
                dup = strcmp(m->cols_out[j], name) == 0;
            }
            if (!dup && !in_names(m->drops, m->ndrops, name)) {
                m->cols_out[k++] = name;
            }
        }
        for (size_t i = 0; i < m->nsets; i++) {
            int have = 0;
            for (size_t j = 0; j < k && !have; j++) {
                have = strcmp(m->cols_out[j], m->sets[i].name) == 0;
            }
            if (!have) {
                m->cols_out[k++] = m->sets[i].name;
            }
        }
    }
    *nout = k;
    return m->cols_out;
}

/* ------------------------------------------------------------ JSON paths */

/* The JSON text of an SL_T_JSON field was validated when it was stored, so
 * these scanners only need to find their way, not to check. They still stop
 * at the end of the text, never past it. */

static const char *js_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
        p++;
    }
    return p;
}

/* p at '"': past the closing quote. */
static const char *js_skip_string(const char *p, const char *e)
{
    for (p++; p < e; p++) {
        if (*p == '\\') {
            p++;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return e;
}

/* Past one value at p. */
static const char *js_skip(const char *p, const char *e)
{
    if (p >= e) {
        return e;
    }
    if (*p == '"') {
        return js_skip_string(p, e);
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < e) {
            if (*p == '"') {
                p = js_skip_string(p, e);
                continue;
            }
            if (*p == '{' || *p == '[') {
                depth++;
            } else if (*p == '}' || *p == ']') {
                if (--depth == 0) {
                    return p + 1;
                }
            }
            p++;
        }
        return e;
    }
    while (p < e && !strchr(",}] \t\r\n", *p)) {
        p++;
    }
    return p;
}

static unsigned hex4(const char *p)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v = v * 16 + (unsigned)(c >= '0' && c <= '9'   ? c - '0'
                                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                       : c - 'A' + 10);
    }
    return v;
}

/* Unescape the JSON string body s[0..e) into out (room for e - s bytes: the
 * decoded text is never longer). Returns the decoded length. */
static size_t js_unescape(const char *s, const char *e, char *out)
{
    size_t n = 0;
    while (s < e) {
        if (*s != '\\' || s + 1 >= e) {
            out[n++] = *s++;
            continue;
        }
        char c = s[1];
        s += 2;
        switch (c) {
        case 'b':
            out[n++] = '\b';
            break;
        case 'f':
            out[n++] = '\f';
            break;
        case 'n':
            out[n++] = '\n';
            break;
        case 'r':
            out[n++] = '\r';
            break;
        case 't':
            out[n++] = '\t';
            break;
        case 'u': {
            if (e - s < 4) {
                return n;
            }
            unsigned cp = hex4(s);
            s += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && e - s >= 6 && s[0] == '\\' && s[1] == 'u') {
                unsigned lo = hex4(s + 2);
                if (lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    s += 6;
                }
            }
            if (cp >= 0xD800 && cp < 0xE000) {
                cp = 0xFFFD; /* a lone surrogate */
            }
            if (cp < 0x80) {
                out[n++] = (char)cp;
            } else if (cp < 0x800) {
                out[n++] = (char)(0xC0 | (cp >> 6));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out[n++] = (char)(0xE0 | (cp >> 12));
                out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            } else {
                out[n++] = (char)(0xF0 | (cp >> 18));
                out[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: /* " \ / */
            out[n++] = c;
            break;
        }
    }
    return n;
}

/* Does the raw key k[0..e) (between quotes) equal seg? */
static int js_key_eq(const char *k, const char *e, const char *seg, size_t slen)
{
    if (!memchr(k, '\\', (size_t)(e - k))) {
        return (size_t)(e - k) == slen && memcmp(k, seg, slen) == 0;
    }
    char tmp[MAP_KEY_MAX];
    if ((size_t)(e - k) > sizeof(tmp)) {
        return 0;
    }
    size_t n = js_unescape(k, e, tmp);
    return n == slen && memcmp(tmp, seg, slen) == 0;
}

/* Walk path (segments separated by '.'; a number indexes an array) from the
 * value at p. On success [*vs, *ve) is the value found. */
static int js_walk(const char *p, const char *e, const char *path, size_t plen, const char **vs,
                   const char **ve)
{
    const char *seg = path, *pend = path + plen;
    while (seg <= pend) {
        const char *dot = memchr(seg, '.', (size_t)(pend - seg));
        size_t slen = dot ? (size_t)(dot - seg) : (size_t)(pend - seg);
        p = js_ws(p, e);
        if (p >= e) {
            return 0;
        }
        if (*p == '{') {
            p = js_ws(p + 1, e);
            int found = 0;
            while (p < e && *p == '"') {
                const char *ks = p + 1;
                const char *kend = js_skip_string(p, e);
                p = js_ws(kend, e);
                if (p >= e || *p != ':') {
                    return 0;
                }
                p = js_ws(p + 1, e);
                if (js_key_eq(ks, kend - 1, seg, slen)) {
                    found = 1;
                    break;
                }
                p = js_ws(js_skip(p, e), e);
                if (p < e && *p == ',') {
                    p = js_ws(p + 1, e);
                }
            }
            if (!found) {
                return 0;
            }
        } else if (*p == '[') {
            size_t idx = 0;
            if (slen == 0 || slen > 9) {
                return 0;
            }
            for (size_t i = 0; i < slen; i++) {
                if (seg[i] < '0' || seg[i] > '9') {
                    return 0;
                }
                idx = idx * 10 + (size_t)(seg[i] - '0');
            }
            p = js_ws(p + 1, e);
            for (size_t i = 0; i < idx; i++) {
                if (p >= e || *p == ']') {
                    return 0;
                }
                p = js_ws(js_skip(p, e), e);
                if (p < e && *p == ',') {
                    p = js_ws(p + 1, e);
                }
            }
            if (p >= e || *p == ']') {
                return 0;
            }
        } else {
            return 0;
        }
        if (!dot) {
            break;
        }
        seg = dot + 1;
    }
    *vs = p;
    *ve = js_skip(p, e);
    return 1;
}

/* ------------------------------------------------------------ evaluation */

/* A value being computed. s points into the input record, a scratch buffer
 * or the compiled expression: never into the record being built. */
typedef struct val {
    uint8_t type;  /* sl_type */
    uint8_t flags; /* SL_FIELD_* carried to the output */
    int in;        /* scratch buffer holding s, or -1 */
    const char *s; /* STRING / JSON text */
    size_t len;
    int64_t i;
    double f;
    int b;
    const char *num; /* SL_FIELD_NUMTEXT: the number as written */
    uint32_t numlen;
} val;

static void val_null(val *v)
{
    memset(v, 0, sizeof(*v));
    v->type = SL_T_NULL;
    v->in = -1;
}

static const sl_field *find_field(const sl_record *r, const char *name, size_t len)
{
    for (uint32_t i = 0; i < r->nfields; i++) {
        const sl_field *f = &r->fields[i];
        if (f->name_len == len && memcmp(f->name, name, len) == 0) {
            return f;
        }
    }
    return NULL;
}

static void val_from_field(val *v, const sl_record *r, const sl_field *f)
{
    val_null(v);
    v->type = f->type;
    v->flags = f->flags;
    switch ((sl_type)f->type) {
    case SL_T_STRING:
    case SL_T_JSON:
        v->s = sl_field_str(r, f);
        v->len = f->v.s.len;
        break;
    case SL_T_INT:
        v->i = f->v.i;
        break;
    case SL_T_FLOAT:
        v->f = f->v.f;
        break;
    case SL_T_BOOL:
        v->b = f->v.b;
        break;
    case SL_T_NULL:
        break;
    }
    if ((f->flags & SL_FIELD_NUMTEXT) && f->tlen) {
        v->num = r->data.data + f->toff;
        v->numlen = f->tlen;
    } else {
        v->flags &= (uint8_t)~SL_FIELD_NUMTEXT;
    }
}

/* A JSON value [p, e) found along a path. Strings are unescaped into scratch
 * buffer `into`. */
static int val_from_json(map_step *m, val *v, const char *p, const char *e, int into)
{
    val_null(v);
    v->flags = SL_FIELD_FIXED; /* typed by the JSON itself */
    if (p >= e) {
        return 0;
    }
    if (*p == '"') {
        const char *end = e - 1; /* the closing quote */
        sl_buf *b = &m->scratch[into];
        sl_buf_reset(b);
        size_t raw = end > p + 1 ? (size_t)(end - p - 1) : 0;
        int rc = sl_buf_reserve(b, raw + 1);
        if (rc) {
            return rc;
        }
        b->len = js_unescape(p + 1, p + 1 + raw, b->data);
        b->data[b->len] = '\0';
        v->type = SL_T_STRING;
        v->s = b->data;
        v->len = b->len;
        v->in = into;
        return 0;
    }
    if (*p == '{' || *p == '[') {
        v->type = SL_T_JSON;
        v->s = p;
        v->len = (size_t)(e - p);
        return 0;
    }
    if (*p == 't' || *p == 'f') {
        v->type = SL_T_BOOL;
        v->b = *p == 't';
        return 0;
    }
    if (*p == 'n') {
        v->flags = 0;
        return 0;
    }
    /* a number: an integer when it is one and fits, else a float; the text
     * as written travels along (NUMTEXT) so 0.10 stays 0.10 */
    char tmp[64];
    size_t n = (size_t)(e - p);
    if (n >= sizeof(tmp)) {
        n = sizeof(tmp) - 1;
    }
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    if (!strpbrk(tmp, ".eE") && sl_parse_int_strict(tmp, n, &v->i) == 0) {
        v->type = SL_T_INT;
    } else {
        v->type = SL_T_FLOAT;
        v->f = strtod(tmp, NULL);
    }
    v->num = p;
    v->numlen = (uint32_t)(e - p);
    v->flags |= SL_FIELD_NUMTEXT;
    return 0;
}

/* Resolve a source against rec. A field literally named like the path wins;
 * else the longest prefix that names a JSON field is walked. Missing: null. */
static int resolve(map_step *m, const sl_record *rec, const msrc *s, val *v, int into)
{
    val_null(v);
    if (s->is_const) {
        v->type = SL_T_STRING;
        v->flags = SL_FIELD_FIXED;
        v->s = s->text;
        v->len = s->len;
        return 0;
    }
    const sl_field *f = find_field(rec, s->text, s->len);
    if (f) {
        val_from_field(v, rec, f);
        return 0;
    }
    for (size_t d = s->ndots; d-- > 0;) {
        size_t at = s->dots[d];
        f = find_field(rec, s->text, at);
        if (!f || f->type != SL_T_JSON) {
            continue;
        }
        const char *js = sl_field_str(rec, f);
        const char *vs, *ve;
        if (js_walk(js, js + f->v.s.len, s->text + at + 1, s->len - at - 1, &vs, &ve)) {
            return val_from_json(m, v, vs, ve, into);
        }
        return 0; /* the path is absent: null */
    }
    return 0;
}

/* The text of a scalar that text functions may edit: strings as they are,
 * numbers as written. 0 when the value has no text (null, boolean, JSON). */
static int val_text(const val *v, char *tmp, size_t cap, const char **s, size_t *len)
{
    if (v->type == SL_T_STRING) {
        *s = v->s;
        *len = v->len;
        return 1;
    }
    if ((v->type == SL_T_INT || v->type == SL_T_FLOAT) && v->num) {
        *s = v->num;
        *len = v->numlen;
        return 1;
    }
    if (v->type == SL_T_INT) {
        *len = (size_t)snprintf(tmp, cap, "%lld", (long long)v->i);
    } else if (v->type == SL_T_FLOAT) {
        *len = sl_format_double(tmp, cap, v->f);
    } else {
        return 0;
    }
    *s = tmp;
    return 1;
}

/* Make v the string out[0..n) of scratch buffer k. */
static void val_set_scratch(map_step *m, val *v, int k, uint8_t flags)
{
    v->type = SL_T_STRING;
    v->s = m->scratch[k].data ? m->scratch[k].data : "";
    v->len = m->scratch[k].len;
    v->in = k;
    v->flags = flags;
    v->num = NULL;
}

static int is_missing(const val *v)
{
    return v->type == SL_T_NULL || (v->flags & SL_FIELD_OMIT);
}

static int apply(map_step *m, const sl_record *rec, const mfn *fn, val *v)
{
    char tmp[48];
    const char *s;
    size_t len;
    int k = v->in == 0 ? 1 : 0; /* the scratch buffer v does not live in */
    sl_buf *o = &m->scratch[k];
    uint8_t keep = v->flags & (SL_FIELD_OMIT | SL_FIELD_FIXED);
    int rc = 0;

    switch (fn->id) {
    case FN_TRIM:
        if (v->type == SL_T_STRING) {
            while (v->len && strchr(" \t\r\n\v\f", v->s[0])) {
                v->s++;
                v->len--;
            }
            while (v->len && strchr(" \t\r\n\v\f", v->s[v->len - 1])) {
                v->len--;
            }
        }
        return 0;
    case FN_LOWERCASE:
    case FN_UPPERCASE:
        if (v->type != SL_T_STRING) {
            return 0;
        }
        sl_buf_reset(o);
        if ((rc = sl_buf_append(o, v->s, v->len)) != 0) {
            return rc;
        }
        for (size_t i = 0; i < o->len; i++) {
            char c = o->data[i];
            if (fn->id == FN_LOWERCASE && c >= 'A' && c <= 'Z') {
                o->data[i] = (char)(c + 32);
            } else if (fn->id == FN_UPPERCASE && c >= 'a' && c <= 'z') {
                o->data[i] = (char)(c - 32);
            }
        }
        val_set_scratch(m, v, k, keep);
        return 0;
    case FN_NULL_IF_EMPTY:
        if (v->type == SL_T_STRING && v->len == 0) {
            val_null(v);
        }
        return 0;
    case FN_ZEROPAD: {
        if (v->type != SL_T_STRING && v->type != SL_T_INT) {
            return 0;
        }
        if (!val_text(v, tmp, sizeof(tmp), &s, &len)) {
            return 0;
        }
        size_t digits = 0;
        while (digits < len && s[digits] >= '0' && s[digits] <= '9') {
            digits++;
        }
        sl_buf_reset(o);
        if (digits == len && len > 0 && len < (size_t)fn->n) {
            for (size_t i = len; i < (size_t)fn->n; i++) {
                rc = rc ? rc : sl_buf_putc(o, '0');
            }
        }
        rc = rc ? rc : sl_buf_append(o, s, len);
        if (rc) {
            return rc;
        }
        /* a zip code is text: 02134, and 12345 next to it is text too */
        val_set_scratch(m, v, k, (uint8_t)(keep | SL_FIELD_FIXED));
        return 0;
    }
    case FN_REMOVE: {
        if (!val_text(v, tmp, sizeof(tmp), &s, &len)) {
            return 0;
        }
        sl_buf_reset(o);
        if ((rc = sl_buf_reserve(o, len + 1)) != 0) {
            return rc;
        }
        size_t n = 0;
        for (size_t i = 0; i < len;) {
            /* one UTF-8 character at a time, so remove('é') removes é only */
            unsigned char c = (unsigned char)s[i];
            size_t cl = c < 0x80         ? 1
                        : (c >> 5) == 6  ? 2
                        : (c >> 4) == 14 ? 3
                        : (c >> 3) == 30 ? 4
                                         : 1;
            if (i + cl > len) {
                cl = len - i;
            }
            int hit = 0;
            for (size_t j = 0; j + cl <= fn->slen && !hit; j++) {
                hit = memcmp(fn->s + j, s + i, cl) == 0;
            }
            if (!hit) {
                memcpy(o->data + n, s + i, cl);
                n += cl;
            }
            i += cl;
        }
        o->len = n;
        o->data[n] = '\0';
        val_set_scratch(m, v, k, keep);
        return 0;
    }
    case FN_SPLIT: {
        if (!val_text(v, tmp, sizeof(tmp), &s, &len)) {
            return 0;
        }
        /* pieces: count them only when indexing from the end */
        size_t count = 1;
        if (fn->n < 0) {
            for (size_t i = 0; i + fn->slen <= len;) {
                if (memcmp(s + i, fn->s, fn->slen) == 0) {
                    count++;
                    i += fn->slen;
                } else {
                    i++;
                }
            }
        }
        int64_t want = fn->n < 0 ? (int64_t)count + fn->n : fn->n;
        if (want < 0) {
            val_null(v);
            return 0;
        }
        size_t start = 0, piece = 0, i = 0;
        for (;;) {
            if (i + fn->slen > len) {
                i = len;
                break;
            }
            if (memcmp(s + i, fn->s, fn->slen) == 0) {
                if ((int64_t)piece == want) {
                    break;
                }
                piece++;
                i += fn->slen;
                start = i;
                continue;
            }
            i++;
        }
        if ((int64_t)piece != want) {
            val_null(v);
            return 0;
        }
        sl_buf_reset(o);
        if ((rc = sl_buf_append(o, s + start, i - start)) != 0) {
            return rc;
        }
        val_set_scratch(m, v, k, keep);
        return 0;
    }
    case FN_COALESCE:
        for (size_t a = 0; a < fn->nargs && is_missing(v); a++) {
            if ((rc = resolve(m, rec, &fn->args[a], v, k)) != 0) {
                return rc;
            }
        }
        return 0;
    case FN_DEFAULT:
        if (is_missing(v)) {
            val_null(v);
            v->type = SL_T_STRING;
            v->flags = SL_FIELD_FIXED;
            v->s = fn->s;
            v->len = fn->slen;
        }
        return 0;
    }
    return 0;
}

static int store_val(sl_record *out, const char *name, uint32_t name_len, const val *v)
{
    sl_field *f = sl_record_add(out, name, name_len);
    if (!f) {
        return SL_ERR_NOMEM;
    }
    int rc = 0;
    switch ((sl_type)v->type) {
    case SL_T_STRING:
        rc = sl_field_set_str(out, f, v->s ? v->s : "", v->len);
        break;
    case SL_T_JSON:
        rc = sl_field_set_json(out, f, v->s, v->len);
        break;
    case SL_T_INT:
        f->type = SL_T_INT;
        f->v.i = v->i;
        break;
    case SL_T_FLOAT:
        f->type = SL_T_FLOAT;
        f->v.f = v->f;
        break;
    case SL_T_BOOL:
        f->type = SL_T_BOOL;
        f->v.b = v->b;
        break;
    case SL_T_NULL:
        break;
    }
    if (rc) {
        return rc;
    }
    f->flags = v->flags & (SL_FIELD_OMIT | SL_FIELD_FIXED);
    if ((v->type == SL_T_INT || v->type == SL_T_FLOAT) && v->num && (v->flags & SL_FIELD_NUMTEXT)) {
        size_t off = out->data.len;
        if ((rc = sl_buf_append(&out->data, v->num, v->numlen)) != 0 ||
            (rc = sl_buf_putc(&out->data, '\0')) != 0) {
            return rc;
        }
        f->toff = (uint32_t)off;
        f->tlen = v->numlen;
        f->flags |= SL_FIELD_NUMTEXT;
    }
    return 0;
}

static void swap_storage(sl_record *a, sl_record *b)
{
    sl_field *fields = a->fields;
    uint32_t nfields = a->nfields, fcap = a->fcap;
    sl_buf data = a->data;
    a->fields = b->fields;
    a->nfields = b->nfields;
    a->fcap = b->fcap;
    a->data = b->data;
    b->fields = fields;
    b->nfields = nfields;
    b->fcap = fcap;
    b->data = data;
}

static int project(map_step *m, sl_record *rec)
{
    sl_record *out = &m->out;
    out->nfields = 0;
    sl_buf_reset(&out->data);
    for (size_t i = 0; i < m->nexprs; i++) {
        const mexpr *e = &m->exprs[i];
        val v;
        int rc = resolve(m, rec, &e->src, &v, 0);
        for (size_t f = 0; !rc && f < e->nfns; f++) {
            rc = apply(m, rec, &e->fns[f], &v);
        }
        if (!rc) {
            rc = store_val(out, e->out, e->out_len, &v);
        }
        if (rc) {
            return rc;
        }
    }
    swap_storage(rec, out);
    rec->raw_off = rec->raw_len = 0;
    return 0;
}

static void remove_field(sl_record *rec, uint32_t k)
{
    memmove(&rec->fields[k], &rec->fields[k + 1], (rec->nfields - k - 1) * sizeof(*rec->fields));
    rec->nfields--;
}

static const mname *find_name(const mname *list, size_t n, const char *name, uint32_t len)
{
    for (size_t i = 0; i < n; i++) {
        if (list[i].len == len && memcmp(list[i].name, name, len) == 0) {
            return &list[i];
        }
    }
    return NULL;
}

/* rename (all at once: a -> b, b -> a swaps), drop, set. */
static int edit(map_step *m, sl_record *rec)
{
    if (m->nrenames) {
        if (m->nmarks < rec->nfields) {
            uint8_t *mk = realloc(m->marks, rec->nfields);
            if (!mk) {
                return SL_ERR_NOMEM;
            }
            m->marks = mk;
            m->nmarks = rec->nfields;
        }
        /* mark 1: renamed; 2: replaced by a renamed field of the same name */
        for (uint32_t k = 0; k < rec->nfields; k++) {
            m->marks[k] = find_name(m->renames, m->nrenames, rec->fields[k].name,
                                    rec->fields[k].name_len) != NULL;
        }
        for (uint32_t k = 0; k < rec->nfields; k++) {
            if (m->marks[k] != 1) {
                continue;
            }
            const mname *r =
                find_name(m->renames, m->nrenames, rec->fields[k].name, rec->fields[k].name_len);
            for (uint32_t j = 0; j < rec->nfields; j++) {
                if (m->marks[j] == 0 && rec->fields[j].name_len == r->to_len &&
                    memcmp(rec->fields[j].name, r->to, r->to_len) == 0) {
                    m->marks[j] = 2;
                }
            }
        }
        uint32_t w = 0;
        for (uint32_t k = 0; k < rec->nfields; k++) {
            sl_field f = rec->fields[k];
            if (m->marks[k] == 2) {
                continue;
            }
            if (m->marks[k] == 1) {
                const mname *r = find_name(m->renames, m->nrenames, f.name, f.name_len);
                f.name = r->to;
                f.name_len = r->to_len;
            }
            rec->fields[w++] = f;
        }
        rec->nfields = w;
    }
    for (uint32_t k = 0; k < rec->nfields;) {
        if (find_name(m->drops, m->ndrops, rec->fields[k].name, rec->fields[k].name_len)) {
            remove_field(rec, k);
        } else {
            k++;
        }
    }
    for (size_t i = 0; i < m->nsets; i++) {
        const mname *s = &m->sets[i];
        sl_field *f = (sl_field *)find_field(rec, s->name, s->len);
        if (!f && !(f = sl_record_add(rec, s->name, s->len))) {
            return SL_ERR_NOMEM;
        }
        int rc = sl_field_set_str(rec, f, s->to, s->to_len);
        if (rc) {
            return rc;
        }
        f->flags = SL_FIELD_FIXED;
    }
    return 0;
}

static int map_process(void *self, sl_record *rec, int stage, sl_error *err)
{
    map_step *m = self;
    if (rec->status != SL_REC_OK) {
        return 0; /* keep it as read, for its dead letter */
    }
    int rc = m->nexprs ? project(m, rec) : edit(m, rec);
    if (rc == SL_ERR_LIMIT) {
        if (rec->line) {
            sl_record_reject(rec, stage, "line %llu: the mapped record exceeds the size limit",
                             (unsigned long long)rec->line);
        } else {
            sl_record_reject(rec, stage, "the mapped record exceeds the size limit");
        }
        return 0;
    }
    if (rc) {
        return sl_error_set(err, rc, "map: out of memory");
    }
    return 0;
}

const sl_step_plugin sl_step_map = {
    .name = "map",
    .summary = "rename, flatten, drop and set fields; value functions (trim, lowercase, ...)",
    .options = map_options,
    .validate = map_validate,
    .init = map_init,
    .columns = map_columns,
    .output_columns = map_output_columns,
    .process = map_process,
    .destroy = map_destroy,
};
