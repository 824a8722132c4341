/* Job variables: `{{name}}` in the options of pipelines with a trigger.
 *
 * At load (cfg_prepare_pipeline) a value written with `{{name}}` becomes a
 * template (node->tmpl): the literal text around the references is
 * interpolated for ${ENV} piece by piece, so the environment cannot add a
 * reference, and `{{{{` is a literal `{{`. For each job (cfg_subst_block)
 * the references are replaced by the job's variables in a private copy of
 * the plugin block, which is then validated like any configuration. The
 * variables' text is never interpolated: a webhook payload cannot read the
 * environment. Nothing here writes to shared state except the redactor
 * (thread-safe), so jobs may instantiate concurrently. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config/internal.h"
#include "sluice/log.h"

/* Longest value after substitution (as after interpolation). */
#define TMPL_VALUE_MAX ((size_t)1024 * 1024)
/* Longest variable name. */
#define TMPL_NAME_MAX 128
/* References in one value. */
#define TMPL_REFS_MAX 64
#define TMPL_PARTS_MAX (2 * TMPL_REFS_MAX + 1)
/* Largest JSON object of variables accepted. */
#define VARS_JSON_MAX ((size_t)1024 * 1024)
/* Longest "available: a, b, c" list in a message. */
#define VARS_AVAIL_MAX 512

/* ------------------------------------------------------------- load time */

/* Where a value sits in the pipeline body decides whether it may use job
 * variables: only options of source, steps and sink may. */
enum zone { Z_BODY, Z_OTHER, Z_STEPS, Z_BLOCK, Z_TYPE, Z_OPTION };

typedef struct prep {
    const char *file;
    int has_trigger;
    int templated;
    sl_buf *errors;
} prep;

static int name_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int name_char(char c)
{
    return name_start(c) || (c >= '0' && c <= '9');
}

/* Length of the variable name at s (0: none). */
static size_t name_len(const char *s)
{
    if (!name_start(s[0])) {
        return 0;
    }
    size_t n = 1;
    while (name_char(s[n])) {
        n++;
    }
    return n;
}

/* Interpolate the raw text seg[0..len) and append it to lit. 0 ok, -1 with
 * msg set. */
static int flush_segment(const char *seg, size_t len, sl_buf *lit, char *msg, size_t cap)
{
    if (len == 0) {
        return 0;
    }
    int rc;
    if (!memchr(seg, '$', len)) {
        rc = sl_buf_append(lit, seg, len);
    } else {
        char *raw = strndup(seg, len);
        if (!raw) {
            snprintf(msg, cap, "out of memory");
            return -1;
        }
        char *v = sl_interpolate(raw, msg, cap);
        free(raw);
        if (!v) {
            return -1;
        }
        rc = sl_buf_puts(lit, v);
        free(v);
    }
    if (rc != 0) {
        snprintf(msg, cap, "value too long (expected at most 1 MB)");
        return -1;
    }
    return 0;
}

/* Why a valid reference is not allowed at this place, or NULL. */
static const char *misplaced(const prep *pp, int zone)
{
    if (zone == Z_OPTION) {
        return pp->has_trigger ? NULL : "available only in pipelines with a trigger";
    }
    if (zone == Z_TYPE) {
        return "not allowed in `type:` (expected a plugin name)";
    }
    return pp->has_trigger
               ? "available only in source, steps and sink options"
               : "available only in source, steps and sink options of pipelines with a trigger";
}

/* Text of the template for messages and `sluice check`: "s3://{{bucket}}". */
static char *display_text(char **parts, size_t n)
{
    sl_buf d;
    sl_buf_init(&d, 2 * TMPL_VALUE_MAX);
    for (size_t i = 0; i < n; i++) {
        int rc = i % 2 ? sl_buf_printf(&d, "{{%s}}", parts[i]) : sl_buf_puts(&d, parts[i]);
        if (rc != 0) {
            sl_buf_free(&d);
            return NULL;
        }
    }
    return d.data ? sl_buf_steal(&d) : strdup("");
}

static int prep_scalar(prep *pp, sl_node *n, const char *path, int zone)
{
    if (!n->value || !strstr(n->value, "{{")) {
        return cfg_interpolate_tree(n, pp->file, path, pp->errors);
    }
    int rc = 1;
    char msg[512] = "";
    sl_buf lit;
    sl_buf_init(&lit, TMPL_VALUE_MAX);
    char **parts = NULL;
    size_t nparts = 0;

    const char *raw = n->value, *seg = raw, *p = raw;
    while (*p) {
        if (p[0] != '{' || p[1] != '{') {
            p++;
            continue;
        }
        if (flush_segment(seg, (size_t)(p - seg), &lit, msg, sizeof(msg)) < 0) {
            goto report;
        }
        if (p[2] == '{' && p[3] == '{') {
            if (sl_buf_append(&lit, "{{", 2) != 0) {
                snprintf(msg, sizeof(msg), "value too long (expected at most 1 MB)");
                goto report;
            }
            p += 4;
            seg = p;
            continue;
        }
        size_t nl = name_len(p + 2);
        if (nl == 0 || nl > TMPL_NAME_MAX || p[2 + nl] != '}' || p[3 + nl] != '}') {
            const char *end = strstr(p + 2, "}}");
            size_t fl = end ? (size_t)(end + 2 - p) : strlen(p);
            char frag[80], q[64];
            snprintf(frag, sizeof(frag), "%.*s", (int)(fl < 60 ? fl : 60), p);
            snprintf(msg, sizeof(msg),
                     "invalid job variable reference %s (expected {{name}}: a letter or _, then "
                     "letters, digits or _; or {{{{ for a literal {{)",
                     cfg_quote(frag, q, sizeof(q)));
            goto report;
        }
        const char *why = misplaced(pp, zone);
        if (why) {
            snprintf(msg, sizeof(msg), "{{%.*s}} is a job variable, %s", (int)nl, p + 2, why);
            goto report;
        }
        if (!parts) {
            parts = calloc(TMPL_PARTS_MAX, sizeof(*parts));
            if (!parts) {
                snprintf(msg, sizeof(msg), "out of memory");
                goto report;
            }
        }
        if (nparts + 3 > TMPL_PARTS_MAX) {
            snprintf(msg, sizeof(msg), "too many job variables in one value (expected at most %d)",
                     TMPL_REFS_MAX);
            goto report;
        }
        parts[nparts] = lit.data ? sl_buf_steal(&lit) : strdup("");
        parts[nparts + 1] = strndup(p + 2, nl);
        nparts += 2;
        if (!parts[nparts - 2] || !parts[nparts - 1]) {
            snprintf(msg, sizeof(msg), "out of memory");
            goto report;
        }
        sl_buf_init(&lit, TMPL_VALUE_MAX);
        p += 4 + nl;
        seg = p;
    }
    if (flush_segment(seg, (size_t)(p - seg), &lit, msg, sizeof(msg)) < 0) {
        goto report;
    }
    char *text = lit.data ? sl_buf_steal(&lit) : strdup("");
    if (!text) {
        snprintf(msg, sizeof(msg), "out of memory");
        goto report;
    }
    if (nparts == 0) {
        /* only `{{{{` escapes: plain text */
        free(n->value);
        n->value = text;
        rc = 0;
        goto done;
    }
    parts[nparts++] = text;
    char *shown = display_text(parts, nparts);
    if (!shown) {
        snprintf(msg, sizeof(msg), "value too long (expected at most 1 MB)");
        goto report;
    }
    free(n->value);
    n->value = shown;
    n->tmpl = parts;
    n->ntmpl = nparts;
    parts = NULL;
    nparts = 0;
    pp->templated = 1;
    rc = 0;
    goto done;

report:
    cfg_err(pp->errors, pp->file, n->line, n->col, path, "%s", msg);
    /* reported once: later validation skips a NULL value silently */
    free(n->value);
    n->value = NULL;

done:
    for (size_t i = 0; i < nparts; i++) {
        free(parts[i]);
    }
    free(parts);
    sl_buf_free(&lit);
    return rc;
}

static int prep_node(prep *pp, sl_node *n, const char *path, int zone)
{
    if (!n) {
        return 0;
    }
    if (n->kind == SL_NODE_SCALAR) {
        return prep_scalar(pp, n, path, zone == Z_TYPE || zone == Z_OPTION ? zone : Z_OTHER);
    }
    int bad = 0;
    for (size_t i = 0; i < n->n; i++) {
        char kpath[CFG_PATH_MAX];
        int kz = Z_OTHER;
        if (n->kind == SL_NODE_MAP) {
            const char *key = n->keys[i];
            cfg_path_key(kpath, sizeof(kpath), path, key);
            if (zone == Z_BODY) {
                kz = strcmp(key, "source") == 0 || strcmp(key, "sink") == 0 ? Z_BLOCK
                     : strcmp(key, "steps") == 0                            ? Z_STEPS
                                                                            : Z_OTHER;
            } else if (zone == Z_BLOCK) {
                kz = strcmp(key, "type") == 0 ? Z_TYPE : Z_OPTION;
            } else if (zone == Z_OPTION) {
                kz = Z_OPTION;
            }
        } else {
            cfg_path_index(kpath, sizeof(kpath), path, i);
            kz = zone == Z_STEPS ? Z_BLOCK : zone == Z_OPTION ? Z_OPTION : Z_OTHER;
        }
        bad += prep_node(pp, n->kids[i], kpath, kz);
    }
    return bad;
}

int cfg_prepare_pipeline(sl_node *body, const char *file, const char *path, int has_trigger,
                         int *templated, sl_buf *errors)
{
    prep pp = {file, has_trigger, 0, errors};
    int bad = prep_node(&pp, body, path, Z_BODY);
    if (templated) {
        *templated = pp.templated;
    }
    return bad;
}

/* ------------------------------------------------------------- variables */

typedef struct var {
    char *name;
    char *text;       /* the value as substituted; NULL for an object or array */
    const char *kind; /* "an object" / "a list" when text is NULL */
} var;

struct cfg_vars {
    size_t n;
    var *v; /* sorted by name */
    char avail[VARS_AVAIL_MAX];
};

void cfg_vars_free(cfg_vars *vs)
{
    if (!vs) {
        return;
    }
    for (size_t i = 0; i < vs->n; i++) {
        free(vs->v[i].name);
        free(vs->v[i].text);
    }
    free(vs->v);
    free(vs);
}

/* Shortest text that reads back as d: 0.1 stays "0.1", not
 * "0.10000000000000001", and a whole number has no exponent (1e3: "1000"). */
static char *real_text(double d)
{
    char buf[40];
    if (d > -1e15 && d < 1e15 && d == (double)(int64_t)d) {
        snprintf(buf, sizeof(buf), "%" PRId64, (int64_t)d);
        return strdup(buf);
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, d);
        if (strtod(buf, NULL) == d) {
            break;
        }
    }
    return strdup(buf);
}

static int var_cmp(const void *a, const void *b)
{
    return strcmp(((const var *)a)->name, ((const var *)b)->name);
}

cfg_vars *cfg_vars_parse(const char *json, sl_buf *errors)
{
    json_t *root = NULL;
    cfg_vars *vs = calloc(1, sizeof(*vs));
    if (!vs) {
        cfg_err(errors, NULL, 0, 0, "job variables", "out of memory");
        return NULL;
    }
    snprintf(vs->avail, sizeof(vs->avail), "none");
    if (!json || !*json) {
        return vs;
    }
    if (strlen(json) > VARS_JSON_MAX) {
        cfg_err(errors, NULL, 0, 0, "job variables", "too large (expected at most 1 MB of JSON)");
        goto fail;
    }
    json_error_t je;
    root = json_loads(json, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        /* the position only: the text may hold a secret */
        cfg_err(errors, NULL, 0, 0, "job variables",
                "invalid JSON at character %d (expected a JSON object)", je.position);
        goto fail;
    }
    if (!json_is_object(root)) {
        cfg_err(errors, NULL, 0, 0, "job variables", "found %s (expected a JSON object)",
                json_is_array(root) ? "a list" : "a single value");
        goto fail;
    }
    size_t cap = json_object_size(root);
    vs->v = calloc(cap ? cap : 1, sizeof(*vs->v));
    if (!vs->v) {
        goto oom;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        var *v = &vs->v[vs->n++];
        v->name = strdup(key);
        if (!v->name) {
            goto oom;
        }
        char num[32];
        switch (json_typeof(val)) {
        case JSON_STRING:
            v->text = strndup(json_string_value(val), json_string_length(val));
            break;
        case JSON_INTEGER:
            snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(val));
            v->text = strdup(num);
            break;
        case JSON_REAL:
            v->text = real_text(json_real_value(val));
            break;
        case JSON_TRUE:
            v->text = strdup("true");
            break;
        case JSON_FALSE:
            v->text = strdup("false");
            break;
        case JSON_NULL:
            v->text = strdup("");
            break;
        case JSON_OBJECT:
            v->kind = "an object";
            break;
        case JSON_ARRAY:
            v->kind = "a list";
            break;
        }
        if (!v->text && !v->kind) {
            goto oom;
        }
    }
    qsort(vs->v, vs->n, sizeof(*vs->v), var_cmp);
    size_t o = 0;
    for (size_t i = 0; i < vs->n; i++) {
        int w =
            snprintf(vs->avail + o, sizeof(vs->avail) - o, "%s%s", i ? ", " : "", vs->v[i].name);
        if (w < 0 || (size_t)w >= sizeof(vs->avail) - o - 5) {
            snprintf(vs->avail + o, sizeof(vs->avail) - o, ", ...");
            break;
        }
        o += (size_t)w;
    }
    json_decref(root);
    return vs;

oom:
    cfg_err(errors, NULL, 0, 0, "job variables", "out of memory");
fail:
    json_decref(root);
    cfg_vars_free(vs);
    return NULL;
}

static const var *vars_find(const cfg_vars *vs, const char *name)
{
    var key = {(char *)name, NULL, NULL};
    return vs && vs->n ? bsearch(&key, vs->v, vs->n, sizeof(*vs->v), var_cmp) : NULL;
}

/* ------------------------------------------------------------- per job */

typedef struct subst {
    const cfg_vars *vars;
    const char *file;
    sl_buf *errors;
    int bad;
    int oom;
} subst;

/* The substituted text of template node n, or NULL: a problem reported
 * (sb->bad counts it) or out of memory (*oom set, not reported). */
static char *substitute(subst *sb, const sl_node *n, int secret, const char *path, int *oom)
{
    sl_buf out;
    sl_buf_init(&out, TMPL_VALUE_MAX);
    int bad = 0, full = 0;
    for (size_t i = 0; i < n->ntmpl; i++) {
        if (i % 2 == 0) {
            full |= sl_buf_puts(&out, n->tmpl[i]) != 0;
            continue;
        }
        const var *v = vars_find(sb->vars, n->tmpl[i]);
        if (!v) {
            cfg_err(sb->errors, sb->file, n->line, n->col, path,
                    "{{%s}}: no such job variable (available: %s)", n->tmpl[i],
                    sb->vars ? sb->vars->avail : "none");
            bad = 1;
            continue;
        }
        if (!v->text) {
            cfg_err(sb->errors, sb->file, n->line, n->col, path,
                    "{{%s}}: the job variable is %s (expected a string, number, boolean or null)",
                    n->tmpl[i], v->kind);
            bad = 1;
            continue;
        }
        if (secret) {
            /* the variable alone is as secret as the whole value */
            sl_secret_register(v->text);
        }
        full |= sl_buf_puts(&out, v->text) != 0;
    }
    if (full && !bad) {
        cfg_err(sb->errors, sb->file, n->line, n->col, path,
                "value too long after substituting job variables (expected at most 1 MB)");
        bad = 1;
    }
    if (bad) {
        sb->bad++;
        sl_buf_free(&out);
        return NULL;
    }
    char *s = out.data ? sl_buf_steal(&out) : strdup("");
    *oom = s == NULL;
    return s;
}

/* Deep copy of n with templates substituted. table: the plugin's options
 * when n is the block itself (decides which keys are secret). NULL only
 * when out of memory. */
static sl_node *copy_node(subst *sb, const sl_node *n, const sl_option *table, int secret,
                          const char *path)
{
    sl_node *c = calloc(1, sizeof(*c));
    if (!c) {
        goto oom;
    }
    c->kind = n->kind;
    c->line = n->line;
    c->col = n->col;
    if (n->kind == SL_NODE_SCALAR) {
        if (n->tmpl) {
            c->tmpl = calloc(n->ntmpl, sizeof(*c->tmpl));
            if (!c->tmpl) {
                goto oom;
            }
            /* kept so messages about the value can name its variables */
            for (; c->ntmpl < n->ntmpl; c->ntmpl++) {
                c->tmpl[c->ntmpl] = strdup(n->tmpl[c->ntmpl]);
                if (!c->tmpl[c->ntmpl]) {
                    goto oom;
                }
            }
            int oom = 0;
            c->value = substitute(sb, n, secret, path, &oom);
            if (oom) {
                goto oom;
            }
        } else if (n->value) {
            c->value = strdup(n->value);
            if (!c->value) {
                goto oom;
            }
        }
        return c;
    }
    if (n->n) {
        c->kids = calloc(n->n, sizeof(*c->kids));
        if (!c->kids) {
            goto oom;
        }
        if (n->kind == SL_NODE_MAP) {
            c->keys = calloc(n->n, sizeof(*c->keys));
            c->key_line = calloc(n->n, sizeof(*c->key_line));
            c->key_col = calloc(n->n, sizeof(*c->key_col));
            if (!c->keys || !c->key_line || !c->key_col) {
                goto oom;
            }
        }
    }
    for (size_t i = 0; i < n->n; i++) {
        char kpath[CFG_PATH_MAX];
        int ksecret = secret;
        char *key = NULL;
        if (n->kind == SL_NODE_MAP) {
            cfg_path_key(kpath, sizeof(kpath), path, n->keys[i]);
            for (size_t t = 0; table && table[t].name; t++) {
                if (strcmp(table[t].name, n->keys[i]) == 0) {
                    ksecret = (table[t].flags & SL_OPT_SECRET) != 0;
                }
            }
            key = strdup(n->keys[i]);
            if (!key) {
                goto oom;
            }
        } else {
            cfg_path_index(kpath, sizeof(kpath), path, i);
        }
        sl_node *kid = copy_node(sb, n->kids[i], NULL, ksecret, kpath);
        if (!kid) {
            free(key);
            sl_node_free(c);
            return NULL; /* already reported */
        }
        if (key) {
            c->keys[c->n] = key;
            c->key_line[c->n] = n->key_line[i];
            c->key_col[c->n] = n->key_col[i];
        }
        c->kids[c->n++] = kid;
    }
    return c;

oom:
    /* reported once, at the innermost failure; callers just unwind */
    if (!sb->oom) {
        cfg_err(sb->errors, sb->file, 0, 0, path, "out of memory");
    }
    sb->oom = 1;
    sl_node_free(c);
    return NULL;
}

sl_node *cfg_subst_block(const sl_node *block, const sl_option *table, const cfg_vars *vars,
                         const char *file, const char *path, sl_buf *errors, int *nbad)
{
    subst sb = {vars, file, errors, 0, 0};
    sl_node *c = copy_node(&sb, block, table, 0, path);
    *nbad = sb.bad + (c ? 0 : 1);
    return c;
}
