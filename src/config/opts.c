/* Plugin options: validation against a plugin's table, and the accessors.
 *
 * Every value (configured or table default) is parsed once, when the sl_opts
 * is built, so the accessors cannot fail; asking for a name that is not in
 * the table, or reading an option as a type it cannot be, is a plugin bug
 * and aborts (tests catch it at once). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/internal.h"
#include "sluice/log.h"

typedef struct opt_val {
    const sl_option *opt;
    int set;    /* given in the config (not the default) */
    int has;    /* set, or a default applies */
    int bad;    /* given but invalid (reported): treated as unset */
    char *text; /* scalar text (LIST/MAP: NULL) */
    int64_t i;  /* INT, BOOL, DURATION (ms), SIZE (bytes) */
    double f;   /* FLOAT (and INT as double) */
    size_t n;   /* LIST/MAP entries */
    char **items;
    char **keys; /* MAP only */
    char where[CFG_WHERE_MAX];
} opt_val;

struct sl_opts {
    size_t n;
    opt_val *v;
    char where[CFG_WHERE_MAX]; /* the block, for options left unset */
};

/* ------------------------------------------------------------- messages */

const char *cfg_type_expect(const sl_option *opt, char *buf, size_t cap)
{
    switch (opt->type) {
    case SL_OPT_STRING:
        return "a string";
    case SL_OPT_INT:
        return "an integer";
    case SL_OPT_FLOAT:
        return "a number";
    case SL_OPT_BOOL:
        return "true or false";
    case SL_OPT_DURATION:
        return "a duration such as 250ms, 3s, 90m, 6h, 1d, or a number of seconds";
    case SL_OPT_SIZE:
        return "a size such as 512, 64KB, 4MB, 1GB";
    case SL_OPT_ENUM: {
        snprintf(buf, cap, "one of: ");
        size_t o = strlen(buf);
        for (const char *c = opt->choices ? opt->choices : ""; *c && o + 3 < cap; c++) {
            if (*c == '|') {
                buf[o++] = ',';
                buf[o++] = ' ';
            } else {
                buf[o++] = *c;
            }
        }
        buf[o] = '\0';
        return buf;
    }
    case SL_OPT_LIST:
        return "a list of values, or one value";
    case SL_OPT_MAP:
        if (opt->choices) {
            snprintf(buf, cap, "a mapping of name: value, values one of: ");
            size_t o = strlen(buf);
            for (const char *c = opt->choices; *c && o + 3 < cap; c++) {
                if (*c == '|') {
                    buf[o++] = ',';
                    buf[o++] = ' ';
                } else {
                    buf[o++] = *c;
                }
            }
            buf[o] = '\0';
            return buf;
        }
        return "a mapping of name: value";
    }
    return "a value";
}

static const char *kind_name(const sl_node *n)
{
    return n->kind == SL_NODE_MAP ? "a mapping" : n->kind == SL_NODE_SEQ ? "a list" : "a value";
}

static int choice_ok(const char *choices, const char *v)
{
    size_t vl = strlen(v);
    const char *c = choices;
    while (c && *c) {
        const char *bar = strchr(c, '|');
        size_t cl = bar ? (size_t)(bar - c) : strlen(c);
        if (cl == vl && strncmp(c, v, vl) == 0) {
            return 1;
        }
        c = bar ? bar + 1 : NULL;
    }
    return 0;
}

/* ------------------------------------------------------------- building */

static void val_clear(opt_val *v)
{
    free(v->text);
    for (size_t i = 0; i < v->n; i++) {
        free(v->items[i]);
        if (v->keys) {
            free(v->keys[i]);
        }
    }
    free(v->items);
    free(v->keys);
    v->text = NULL;
    v->items = v->keys = NULL;
    v->n = 0;
    v->set = v->has = v->bad = 0;
}

void sl_opts_free(sl_opts *o)
{
    if (!o) {
        return;
    }
    for (size_t i = 0; i < o->n; i++) {
        val_clear(&o->v[i]);
    }
    free(o->v);
    free(o);
}

/* Where a problem is reported and how it is named. */
typedef struct site {
    const char *file;
    int line, col;
    const char *path; /* "pipelines.x.sink.url" */
    sl_buf *errors;
    const char *note; /* appended to a value's message: "" or " (value from job variable...)" */
    cfg_tmpl_mode mode;
} site;

/* " (value from job variable {{a}})" when n's text came from job variables,
 * so a problem in a webhook's data is not mistaken for a config typo. */
static const char *tmpl_note(const sl_node *n, char *buf, size_t cap)
{
    if (!n->tmpl || n->ntmpl < 3) {
        return "";
    }
    size_t nvars = n->ntmpl / 2;
    snprintf(buf, cap, " (value from job variable%s ", nvars > 1 ? "s" : "");
    size_t o = strlen(buf);
    for (size_t i = 1; i < n->ntmpl && o + 8 < cap; i += 2) {
        int w = snprintf(buf + o, cap - o, "%s{{%s}}", i > 1 ? ", " : "", n->tmpl[i]);
        if (w < 0 || (size_t)w >= cap - o) {
            break;
        }
        o += (size_t)w;
    }
    if (o + 2 <= cap) {
        buf[o++] = ')';
        buf[o] = '\0';
    }
    return buf;
}

/* A secret written as a template: its literal parts (e.g. a token from the
 * environment before "{{suffix}}") are secrets on their own. */
static void register_tmpl_literals(const sl_node *n)
{
    for (size_t i = 0; n->tmpl && i < n->ntmpl; i += 2) {
        sl_secret_register(n->tmpl[i]);
    }
}

/* Parse scalar text s for v's type into v. 0 ok, -1 reported. */
static int parse_scalar(opt_val *v, const char *s, const site *st, int is_default)
{
    const sl_option *opt = v->opt;
    int secret = (opt->flags & SL_OPT_SECRET) != 0;
    char exp[512], q[64];
    int ok = 0;
    const char *what = "value";
    switch (opt->type) {
    case SL_OPT_STRING:
        ok = 1;
        break;
    case SL_OPT_INT:
        what = "integer";
        ok = cfg_parse_int(s, &v->i) == 0;
        v->f = (double)v->i;
        break;
    case SL_OPT_FLOAT:
        what = "number";
        ok = cfg_parse_float(s, &v->f) == 0;
        break;
    case SL_OPT_BOOL: {
        what = "boolean";
        int b = 0;
        ok = sl_parse_bool(s, &b) == 0;
        v->i = b;
        break;
    }
    case SL_OPT_DURATION:
        what = "duration";
        ok = sl_parse_duration_ms(s, &v->i) == 0;
        break;
    case SL_OPT_SIZE:
        what = "size";
        ok = sl_parse_size(s, &v->i) == 0;
        break;
    case SL_OPT_ENUM:
        what = "choice";
        ok = opt->choices && choice_ok(opt->choices, s);
        break;
    default:
        break;
    }
    if (ok) {
        return 0;
    }
    const char *expect = cfg_type_expect(opt, exp, sizeof(exp));
    const char *note = st->note ? st->note : "";
    if (is_default) {
        cfg_err(st->errors, st->file, st->line, st->col, st->path,
                "invalid default %s in the plugin's option table, a plugin bug (expected %s)",
                secret ? "value" : cfg_quote(s, q, sizeof(q)), expect);
    } else if (secret) {
        /* never echo a secret, even a malformed one */
        cfg_err(st->errors, st->file, st->line, st->col, st->path, "invalid value (expected %s)%s",
                expect, note);
    } else {
        cfg_err(st->errors, st->file, st->line, st->col, st->path, "invalid %s %s (expected %s)%s",
                what, cfg_quote(s, q, sizeof(q)), expect, note);
    }
    return -1;
}

static int push_item(opt_val *v, const char *key, const char *item, size_t cap)
{
    if (!v->items) {
        v->items = calloc(cap ? cap : 1, sizeof(*v->items));
        if (v->opt->type == SL_OPT_MAP) {
            v->keys = calloc(cap ? cap : 1, sizeof(*v->keys));
        }
        if (!v->items || (v->opt->type == SL_OPT_MAP && !v->keys)) {
            return -1;
        }
    }
    v->items[v->n] = strdup(item);
    if (!v->items[v->n]) {
        return -1;
    }
    if (key) {
        v->keys[v->n] = strdup(key);
        if (!v->keys[v->n]) {
            free(v->items[v->n]);
            return -1;
        }
    }
    v->n++;
    return 0;
}

/* Fill v from node n. Returns 0 ok, -1 problem reported (or silently skipped
 * for a value whose interpolation already failed). */
static int fill_from_node(opt_val *v, const sl_node *n, const site *st)
{
    const sl_option *opt = v->opt;
    char exp[512];
    int secret = (opt->flags & SL_OPT_SECRET) != 0;

    if (opt->type == SL_OPT_LIST) {
        if (n->kind == SL_NODE_SCALAR) {
            if (!n->value) {
                return -1;
            }
            if (secret && st->mode == CFG_TMPL_DEFER) {
                register_tmpl_literals(n);
            }
            /* `key:` with nothing after it is an empty list */
            if (*n->value && push_item(v, NULL, n->value, 1) < 0) {
                goto oom;
            }
            return 0;
        }
        if (n->kind != SL_NODE_SEQ) {
            cfg_err(st->errors, st->file, n->line, n->col, st->path, "found %s (expected %s)",
                    kind_name(n), cfg_type_expect(opt, exp, sizeof(exp)));
            return -1;
        }
        int rc = 0;
        for (size_t i = 0; i < n->n; i++) {
            const sl_node *it = n->kids[i];
            if (it->kind != SL_NODE_SCALAR) {
                char ipath[CFG_PATH_MAX];
                cfg_path_index(ipath, sizeof(ipath), st->path, i);
                cfg_err(st->errors, st->file, it->line, it->col, ipath,
                        "found %s in the list (expected a single value)", kind_name(it));
                rc = -1;
                continue;
            }
            if (!it->value) {
                rc = -1;
                continue;
            }
            if (secret && st->mode == CFG_TMPL_DEFER) {
                register_tmpl_literals(it);
            }
            if (push_item(v, NULL, it->value, n->n) < 0) {
                goto oom;
            }
        }
        return rc;
    }

    if (opt->type == SL_OPT_MAP) {
        if (n->kind == SL_NODE_SCALAR && n->value && !*n->value) {
            return 0; /* `key:` alone: an empty mapping */
        }
        if (n->kind == SL_NODE_SCALAR && !n->value) {
            return -1;
        }
        if (n->kind != SL_NODE_MAP) {
            cfg_err(st->errors, st->file, n->line, n->col, st->path, "found %s (expected %s)",
                    kind_name(n), cfg_type_expect(opt, exp, sizeof(exp)));
            return -1;
        }
        int rc = 0;
        for (size_t i = 0; i < n->n; i++) {
            const sl_node *it = n->kids[i];
            char ipath[CFG_PATH_MAX];
            cfg_path_key(ipath, sizeof(ipath), st->path, n->keys[i]);
            if (it->kind != SL_NODE_SCALAR) {
                cfg_err(st->errors, st->file, it->line, it->col, ipath,
                        "found %s (expected a single value)", kind_name(it));
                rc = -1;
                continue;
            }
            if (!it->value) {
                rc = -1;
                continue;
            }
            int deferred = it->tmpl && st->mode == CFG_TMPL_DEFER;
            if (deferred && secret) {
                register_tmpl_literals(it);
            }
            if (opt->choices && !deferred && !choice_ok(opt->choices, it->value)) {
                char q[64], nb[256];
                const char *note = tmpl_note(it, nb, sizeof(nb));
                if (secret) {
                    cfg_err(st->errors, st->file, it->line, it->col, ipath,
                            "invalid value (expected %s)%s", cfg_type_expect(opt, exp, sizeof(exp)),
                            note);
                } else {
                    cfg_err(st->errors, st->file, it->line, it->col, ipath,
                            "invalid value %s (expected %s)%s", cfg_quote(it->value, q, sizeof(q)),
                            cfg_type_expect(opt, exp, sizeof(exp)), note);
                }
                rc = -1;
                continue;
            }
            if (push_item(v, n->keys[i], it->value, n->n) < 0) {
                goto oom;
            }
        }
        return rc;
    }

    /* scalar types */
    if (n->kind != SL_NODE_SCALAR) {
        cfg_err(st->errors, st->file, n->line, n->col, st->path, "found %s (expected %s)",
                kind_name(n), cfg_type_expect(opt, exp, sizeof(exp)));
        return -1;
    }
    if (!n->value) {
        return -1;
    }
    if (n->tmpl && st->mode == CFG_TMPL_DEFER) {
        /* checked once each job's variables are substituted; present now */
        if (secret) {
            register_tmpl_literals(n);
        }
        v->text = strdup(n->value);
        if (!v->text) {
            goto oom;
        }
        return 0;
    }
    char nb[256];
    site vst = *st;
    vst.note = tmpl_note(n, nb, sizeof(nb));
    if ((opt->flags & SL_OPT_REQUIRED) && !*n->value) {
        cfg_err(st->errors, st->file, n->line, n->col, st->path,
                "empty value for a required option (expected %s)%s",
                cfg_type_expect(opt, exp, sizeof(exp)), vst.note);
        return -1;
    }
    if (opt->type == SL_OPT_STRING || *n->value) {
        if (parse_scalar(v, n->value, &vst, 0) < 0) {
            return -1;
        }
    } else {
        /* an empty non-string value (`timeout:` alone) means "use the default" */
        return 1;
    }
    v->text = strdup(n->value);
    if (!v->text) {
        goto oom;
    }
    return 0;

oom:
    cfg_err(st->errors, st->file, 0, 0, NULL, "out of memory");
    return -1;
}

/* Defaults for LIST/MAP options are YAML flow text ("[a, b]", "{k: v}") or
 * one plain value; scalar defaults are used as they are. */
static int fill_default(opt_val *v, const site *st)
{
    const sl_option *opt = v->opt;
    if (!opt->def) {
        return 0;
    }
    if ((opt->type == SL_OPT_LIST || opt->type == SL_OPT_MAP) && !*opt->def) {
        v->has = 1; /* an empty list / mapping */
        return 0;
    }
    if (opt->type == SL_OPT_LIST || opt->type == SL_OPT_MAP) {
        sl_buf perr = {0};
        sl_node *n = sl_yaml_parse(opt->def, strlen(opt->def), "<default>", &perr);
        sl_buf_free(&perr);
        int rc;
        if (!n) {
            cfg_err(st->errors, st->file, st->line, st->col, st->path,
                    "invalid default in the plugin's option table, a plugin bug "
                    "(expected YAML flow text)");
            rc = -1;
        } else {
            rc = fill_from_node(v, n, st) < 0 ? -1 : 0;
        }
        sl_node_free(n);
        v->has = rc == 0;
        return rc;
    }
    if (parse_scalar(v, opt->def, st, 1) < 0) {
        return -1;
    }
    v->text = strdup(opt->def);
    if (!v->text) {
        return -1;
    }
    v->has = 1;
    return 0;
}

static void register_secret(const opt_val *v)
{
    if (!(v->opt->flags & SL_OPT_SECRET) || !v->set) {
        return;
    }
    if (v->text) {
        sl_secret_register(v->text);
    }
    for (size_t i = 0; i < v->n; i++) {
        sl_secret_register(v->items[i]);
    }
}

static int is_ignored(const char *const *ignore, const char *key)
{
    for (size_t i = 0; ignore && ignore[i]; i++) {
        if (strcmp(ignore[i], key) == 0) {
            return 1;
        }
    }
    return 0;
}

static void report_unknown(const sl_option *table, const char *const *ignore, const char *key,
                           const site *st)
{
    char valid[1024] = "";
    size_t o = 0;
    const char *best = NULL;
    int bestd = 3;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0;; i++) {
            const char *name =
                pass == 0 ? (ignore ? ignore[i] : NULL) : (table ? table[i].name : NULL);
            if (!name) {
                break;
            }
            int w = snprintf(valid + o, sizeof(valid) - o, "%s%s", o ? ", " : "", name);
            if (w > 0 && (size_t)w < sizeof(valid) - o) {
                o += (size_t)w;
            }
            int d = cfg_edit_distance(key, name, 2);
            if (d < bestd && d < (int)strlen(key)) {
                bestd = d;
                best = name;
            }
        }
    }
    if (best) {
        cfg_err(st->errors, st->file, st->line, st->col, st->path,
                "unknown key, did you mean '%s'? (expected one of: %s)", best, valid);
    } else {
        cfg_err(st->errors, st->file, st->line, st->col, st->path,
                "unknown key (expected one of: %s)", valid);
    }
}

static sl_opts *opts_new(const sl_option *table)
{
    sl_opts *o = calloc(1, sizeof(*o));
    if (!o) {
        return NULL;
    }
    while (table && table[o->n].name) {
        o->n++;
    }
    o->v = calloc(o->n ? o->n : 1, sizeof(*o->v));
    if (!o->v) {
        free(o);
        return NULL;
    }
    for (size_t i = 0; i < o->n; i++) {
        o->v[i].opt = &table[i];
    }
    return o;
}

static long opt_index(const sl_opts *o, const char *name)
{
    for (size_t i = 0; i < o->n; i++) {
        if (strcmp(o->v[i].opt->name, name) == 0) {
            return (long)i;
        }
    }
    return -1;
}

sl_opts *cfg_opts_build(const sl_option *table, const sl_node *map, const char *file,
                        const char *ctx_name, const char *const *ignore, sl_buf *errors, int *nbad,
                        cfg_tmpl_mode mode)
{
    sl_buf local = {0};
    sl_buf *errs = errors ? errors : &local;
    size_t start = errs->len;
    int bad = 0;
    sl_opts *o = opts_new(table);
    if (!o) {
        cfg_err(errs, file, 0, 0, ctx_name, "out of memory");
        goto fail;
    }
    int bline = map ? map->line : 0, bcol = map ? map->col : 0;
    if (map && bline > 0) {
        cfg_where(o->where, sizeof(o->where), file, bline, bcol);
    } else {
        snprintf(o->where, sizeof(o->where), "%s", file ? file : "options");
    }

    if (map && map->kind == SL_NODE_SCALAR && !map->value) {
        bad = 1; /* its interpolation failed and was reported */
        goto fail;
    }
    if (map && map->kind != SL_NODE_MAP && !(map->kind == SL_NODE_SCALAR && !*map->value)) {
        cfg_err(errs, file, bline, bcol, ctx_name, "found %s (expected a mapping of options)",
                kind_name(map));
        bad = 1;
        goto fail;
    }

    for (size_t k = 0; map && map->kind == SL_NODE_MAP && k < map->n; k++) {
        const char *key = map->keys[k];
        char kpath[CFG_PATH_MAX];
        cfg_path_key(kpath, sizeof(kpath), ctx_name, key);
        if (is_ignored(ignore, key)) {
            continue;
        }
        long idx = opt_index(o, key);
        if (idx < 0) {
            site st = {file, map->key_line[k], map->key_col[k], kpath, errs, "", mode};
            report_unknown(table, ignore, key, &st);
            bad = 1;
            continue;
        }
        opt_val *v = &o->v[idx];
        /* sl_opts_from_pairs may give a name twice: the last one wins */
        val_clear(v);
        const sl_node *n = map->kids[k];
        site st = {file, n->line, n->col, kpath, errs, "", mode};
        int rc = fill_from_node(v, n, &st);
        if (rc < 0) {
            val_clear(v);
            v->bad = 1; /* reported: do not also call it missing */
            bad = 1;
            continue;
        }
        if (rc == 0) {
            v->set = v->has = 1;
            if (n->line > 0) {
                cfg_where(v->where, sizeof(v->where), file, n->line, n->col);
            } else {
                snprintf(v->where, sizeof(v->where), "option %s", key);
            }
        }
        /* rc == 1: empty value, the default applies below */
    }

    for (size_t i = 0; i < o->n; i++) {
        opt_val *v = &o->v[i];
        char kpath[CFG_PATH_MAX];
        cfg_path_key(kpath, sizeof(kpath), ctx_name, v->opt->name);
        site st = {file, bline, bcol, kpath, errs, "", mode};
        if (v->set) {
            /* even when the block has problems: redaction must know it */
            register_secret(v);
            continue;
        }
        if ((v->opt->flags & SL_OPT_REQUIRED) && !v->bad) {
            char exp[512];
            cfg_err(errs, file, bline, bcol, ctx_name, "missing required key '%s' (expected %s)",
                    v->opt->name, cfg_type_expect(v->opt, exp, sizeof(exp)));
            bad = 1;
            continue;
        }
        if (fill_default(v, &st) < 0) {
            bad = 1;
        }
        snprintf(v->where, sizeof(v->where), "%s", o->where);
    }
    if (bad) {
        /* a secret registered by an earlier block could appear in a quoted value */
        cfg_redact_tail(errs, start);
    }
    *nbad = bad;
    sl_buf_free(&local);
    return o;

fail:
    cfg_redact_tail(errs, start);
    *nbad = 1;
    sl_buf_free(&local);
    sl_opts_free(o);
    return NULL;
}

sl_opts *sl_opts_from_node(const sl_option *table, const sl_node *map, const char *file,
                           const char *ctx_name, const char *const *ignore, sl_buf *errors)
{
    int bad = 0;
    sl_opts *o = cfg_opts_build(table, map, file, ctx_name, ignore, errors, &bad, CFG_TMPL_CHECK);
    if (bad) {
        sl_opts_free(o);
        return NULL;
    }
    return o;
}

sl_opts *sl_opts_from_pairs(const sl_option *table, const char *const *pairs, size_t n,
                            sl_buf *errors)
{
    sl_opts *o = NULL;
    sl_node *map = calloc(1, sizeof(*map));
    int bad = 0;
    if (!map) {
        goto fail;
    }
    map->kind = SL_NODE_MAP;
    map->kids = calloc(n ? n : 1, sizeof(*map->kids));
    map->keys = calloc(n ? n : 1, sizeof(*map->keys));
    map->key_line = calloc(n ? n : 1, sizeof(*map->key_line));
    map->key_col = calloc(n ? n : 1, sizeof(*map->key_col));
    if (!map->kids || !map->keys || !map->key_line || !map->key_col) {
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        const char *eq = pairs[i] ? strchr(pairs[i], '=') : NULL;
        if (!eq || eq == pairs[i]) {
            char q[64];
            cfg_err(errors, NULL, 0, 0, NULL, "option %s is not name=value",
                    cfg_quote(pairs[i] ? pairs[i] : "", q, sizeof(q)));
            bad = 1;
            continue;
        }
        const char *name = pairs[i];
        size_t nl = (size_t)(eq - name);
        const sl_option *opt = NULL;
        for (size_t t = 0; table && table[t].name; t++) {
            if (strlen(table[t].name) == nl && strncmp(table[t].name, name, nl) == 0) {
                opt = &table[t];
            }
        }
        sl_node *val = NULL;
        if (opt && (opt->type == SL_OPT_LIST || opt->type == SL_OPT_MAP) &&
            (eq[1] == '[' || eq[1] == '{')) {
            /* "cols=[a, b]", "types={zip: string}" */
            char label[96];
            snprintf(label, sizeof(label), "option %.*s", (int)(nl > 64 ? 64 : nl), name);
            val = sl_yaml_parse(eq + 1, strlen(eq + 1), label, errors);
            if (!val) {
                bad = 1;
                continue;
            }
        } else {
            val = calloc(1, sizeof(*val));
            if (!val || !(val->value = strdup(eq + 1))) {
                free(val);
                goto fail;
            }
            val->kind = SL_NODE_SCALAR;
        }
        map->keys[map->n] = strndup(name, nl);
        if (!map->keys[map->n]) {
            sl_node_free(val);
            goto fail;
        }
        /* positions: none (messages then read "name: problem") */
        map->kids[map->n++] = val;
    }
    if (bad) {
        goto fail;
    }
    o = sl_opts_from_node(table, map, NULL, NULL, NULL, errors);
    sl_node_free(map);
    return o;

fail:
    if (!bad) {
        cfg_err(errors, NULL, 0, 0, NULL, "out of memory");
    }
    sl_node_free(map);
    return NULL;
}

/* ------------------------------------------------------------- accessors */

static const opt_val *lookup(const sl_opts *o, const char *name, const char *fn)
{
    long i = (o && name) ? opt_index(o, name) : -1;
    if (i < 0) {
        fprintf(stderr, "sluice: plugin bug: %s(\"%s\"): no such option in the plugin's table\n",
                fn, name ? name : "(null)");
        abort();
    }
    return &o->v[i];
}

static void wrong_type(const opt_val *v, const char *fn)
{
    fprintf(stderr, "sluice: plugin bug: %s(\"%s\"): the option's type does not allow it\n", fn,
            v->opt->name);
    abort();
}

int sl_opt_isset(const sl_opts *o, const char *name)
{
    return lookup(o, name, __func__)->set;
}

const char *sl_opt_str(const sl_opts *o, const char *name)
{
    const opt_val *v = lookup(o, name, __func__);
    if (v->opt->type == SL_OPT_MAP) {
        wrong_type(v, __func__);
    }
    if (v->opt->type == SL_OPT_LIST) {
        /* a list read as a string: its first item */
        return v->has && v->n ? v->items[0] : NULL;
    }
    return v->has ? v->text : NULL;
}

int64_t sl_opt_int(const sl_opts *o, const char *name)
{
    const opt_val *v = lookup(o, name, __func__);
    switch (v->opt->type) {
    case SL_OPT_INT:
    case SL_OPT_BOOL:
    case SL_OPT_DURATION:
    case SL_OPT_SIZE:
        return v->has ? v->i : 0;
    case SL_OPT_FLOAT:
        return v->has ? (int64_t)v->f : 0;
    default:
        wrong_type(v, __func__);
    }
    return 0;
}

double sl_opt_float(const sl_opts *o, const char *name)
{
    const opt_val *v = lookup(o, name, __func__);
    switch (v->opt->type) {
    case SL_OPT_FLOAT:
    case SL_OPT_INT:
        return v->has ? v->f : 0.0;
    case SL_OPT_DURATION:
    case SL_OPT_SIZE:
        return v->has ? (double)v->i : 0.0;
    default:
        wrong_type(v, __func__);
    }
    return 0.0;
}

int sl_opt_bool(const sl_opts *o, const char *name)
{
    const opt_val *v = lookup(o, name, __func__);
    if (v->opt->type != SL_OPT_BOOL && v->opt->type != SL_OPT_INT) {
        wrong_type(v, __func__);
    }
    return v->has ? v->i != 0 : 0;
}

int64_t sl_opt_duration_ms(const sl_opts *o, const char *name)
{
    const opt_val *v = lookup(o, name, __func__);
    if (v->opt->type != SL_OPT_DURATION) {
        wrong_type(v, __func__);
    }
    return v->has ? v->i : 0;
}

int64_t sl_opt_size(const sl_opts *o, const char *name)
{
    const opt_val *v = lookup(o, name, __func__);
    if (v->opt->type != SL_OPT_SIZE && v->opt->type != SL_OPT_INT) {
        wrong_type(v, __func__);
    }
    return v->has ? v->i : 0;
}

size_t sl_opt_count(const sl_opts *o, const char *name)
{
    const opt_val *v = lookup(o, name, __func__);
    if (v->opt->type != SL_OPT_LIST && v->opt->type != SL_OPT_MAP) {
        wrong_type(v, __func__);
    }
    return v->has ? v->n : 0;
}

const char *sl_opt_item(const sl_opts *o, const char *name, size_t i)
{
    const opt_val *v = lookup(o, name, __func__);
    if (v->opt->type != SL_OPT_LIST && v->opt->type != SL_OPT_MAP) {
        wrong_type(v, __func__);
    }
    return v->has && i < v->n ? v->items[i] : NULL;
}

const char *sl_opt_key(const sl_opts *o, const char *name, size_t i)
{
    const opt_val *v = lookup(o, name, __func__);
    if (v->opt->type != SL_OPT_MAP) {
        wrong_type(v, __func__);
    }
    return v->has && i < v->n ? v->keys[i] : NULL;
}

const char *sl_opt_where(const sl_opts *o, const char *name)
{
    const opt_val *v = lookup(o, name, __func__);
    return v->where[0] ? v->where : o->where;
}

/* ---- sl_opts_validate: a validate hook's reports as one error ---------------- */

typedef struct joined {
    const sl_opts *opts;
    sl_buf msg;
    int n;
} joined;

static void join_report(void *ud, const char *option, const char *fmt, ...) SL_PRINTF(3, 4);
static void join_report(void *ud, const char *option, const char *fmt, ...)
{
    joined *j = ud;
    j->n++;
    if (j->msg.len) {
        sl_buf_puts(&j->msg, "; ");
    }
    if (option) {
        sl_buf_printf(&j->msg, "%s: %s: ", sl_opt_where(j->opts, option), option);
    }
    va_list ap;
    va_start(ap, fmt);
    sl_buf_vprintf(&j->msg, fmt, ap);
    va_end(ap);
}

int sl_opts_validate(const sl_opts *o, sl_validate_fn fn, sl_error *err)
{
    joined j = {.opts = o};
    sl_buf_init(&j.msg, SL_ERRMSG_MAX);
    int n = fn(o, join_report, &j);
    if (n < j.n) {
        n = j.n;
    }
    if (n > 0) {
        sl_error_set(err, SL_ERR_CONFIG, "%s", j.msg.len ? sl_buf_cstr(&j.msg) : "invalid options");
    }
    sl_buf_free(&j.msg);
    return n;
}
