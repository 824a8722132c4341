/* infer: give text cells their JSON type, with the Braze importer's rules as
 * defaults (numbers without leading zeros, true/false, [arrays] in JSON or
 * Python list syntax, decided on the text stripped of surrounding spaces;
 * empty cells omitted; the literal null unsets). Only untyped text is touched: fields a
 * source typed itself or a cast fixed (SL_FIELD_FIXED) are left alone. */
#include <stdlib.h>
#include <string.h>

#include "sluice/plugin.h"
#include "sluice/values.h"

enum empty_mode { EMPTY_OMIT, EMPTY_NULL, EMPTY_STRING };

/* Arrays parse into a scratch buffer; a cell larger than this stays text. */
#define INFER_MAX_ARRAY_JSON ((size_t)16 * 1024 * 1024)

typedef struct name_list {
    char **names;
    size_t *lens;
    size_t n;
} name_list;

typedef struct infer {
    sl_ctx *ctx; /* borrowed */
    name_list except;
    name_list only; /* n == 0: every column */
    int empty;
    char *null_literal; /* "" disables */
    unsigned rules;
} infer;

static const sl_option infer_options[] = {
    {"except", SL_OPT_LIST, NULL, 0, NULL, "columns never touched (e.g. external_id)"},
    {"only", SL_OPT_LIST, NULL, 0, NULL, "if set, only these columns are inferred"},
    {"empty", SL_OPT_ENUM, "omit", 0, "omit|null|string",
     "an empty or whitespace-only cell: omit the attribute, send null, or send the text"},
    {"null_literal", SL_OPT_STRING, "null", 0, NULL,
     "cell text (any case, trimmed) that sends JSON null; \"\" disables"},
    {"numbers", SL_OPT_BOOL, "true", 0, NULL,
     "integers and decimals without leading zeros become numbers"},
    {"booleans", SL_OPT_BOOL, "true", 0, NULL, "true/false (any case) become booleans"},
    {"arrays", SL_OPT_BOOL, "true", 0, NULL,
     "[...] that parses as JSON or as a Python list literal becomes an array"},
    SL_OPTIONS_END,
};

static void name_list_free(name_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->names[i]);
    }
    free(l->names);
    free(l->lens);
    memset(l, 0, sizeof(*l));
}

/* Copy an option list (the instance does not depend on opts after init). */
static int name_list_load(name_list *l, const sl_opts *opts, const char *opt)
{
    size_t n = sl_opt_count(opts, opt);
    if (n == 0) {
        return 0;
    }
    l->names = calloc(n, sizeof(*l->names));
    l->lens = calloc(n, sizeof(*l->lens));
    if (!l->names || !l->lens) {
        return SL_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const char *s = sl_opt_item(opts, opt, i);
        l->names[i] = strdup(s ? s : "");
        if (!l->names[i]) {
            return SL_ERR_NOMEM;
        }
        l->lens[i] = strlen(l->names[i]);
        l->n = i + 1;
    }
    return 0;
}

static int name_list_has(const name_list *l, const char *name, size_t len)
{
    for (size_t i = 0; i < l->n; i++) {
        if (l->lens[i] == len && memcmp(l->names[i], name, len) == 0) {
            return 1;
        }
    }
    return 0;
}

static void infer_destroy(void *self)
{
    infer *in = self;
    if (!in) {
        return;
    }
    name_list_free(&in->except);
    name_list_free(&in->only);
    free(in->null_literal);
    free(in);
}

static int infer_init(void **self, const sl_opts *opts, sl_ctx *ctx, sl_error *err)
{
    infer *in = calloc(1, sizeof(*in));
    if (!in) {
        goto nomem;
    }
    in->ctx = ctx;
    if (name_list_load(&in->except, opts, "except") || name_list_load(&in->only, opts, "only")) {
        goto nomem;
    }
    const char *empty = sl_opt_str(opts, "empty");
    if (!empty || strcmp(empty, "omit") == 0) {
        in->empty = EMPTY_OMIT;
    } else if (strcmp(empty, "null") == 0) {
        in->empty = EMPTY_NULL;
    } else if (strcmp(empty, "string") == 0) {
        in->empty = EMPTY_STRING;
    } else {
        infer_destroy(in);
        return sl_error_set(err, SL_ERR_CONFIG, "%s: empty: '%s' is not one of omit|null|string",
                            sl_opt_where(opts, "empty"), empty);
    }
    const char *lit = sl_opt_str(opts, "null_literal");
    in->null_literal = strdup(lit ? lit : "");
    if (!in->null_literal) {
        goto nomem;
    }
    in->rules = (sl_opt_bool(opts, "numbers") ? SL_INFER_NUMBERS : 0) |
                (sl_opt_bool(opts, "booleans") ? SL_INFER_BOOLEANS : 0) |
                (sl_opt_bool(opts, "arrays") ? SL_INFER_ARRAYS : 0);
    *self = in;
    return 0;
nomem:
    infer_destroy(in);
    return sl_error_set(err, SL_ERR_NOMEM, "infer: out of memory");
}

static void warn_missing(const infer *in, const name_list *l, const char *opt,
                         const char *const *cols, size_t n)
{
    for (size_t i = 0; i < l->n; i++) {
        int found = 0;
        for (size_t c = 0; c < n && !found; c++) {
            found = strcmp(cols[c], l->names[i]) == 0;
        }
        if (!found) {
            sl_plog(in->ctx, SL_LOG_WARN, "%s: column '%s' is not in the input", opt, l->names[i]);
        }
    }
}

/* Unknown names in except/only are probably typos: say so, but run. */
static int infer_columns(void *self, const char *const *cols, size_t n, sl_error *err)
{
    infer *in = self;
    warn_missing(in, &in->except, "except", cols, n);
    warn_missing(in, &in->only, "only", cols, n);
    return 0;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static int infer_process(void *self, sl_record *rec, int stage, sl_error *err)
{
    infer *in = self;
    sl_buf json;
    sl_buf_init(&json, INFER_MAX_ARRAY_JSON);
    int rc = 0;
    for (uint32_t i = 0; i < rec->nfields; i++) {
        sl_field *f = &rec->fields[i];
        if (f->type != SL_T_STRING || (f->flags & SL_FIELD_FIXED)) {
            continue;
        }
        if (name_list_has(&in->except, f->name, f->name_len) ||
            (in->only.n && !name_list_has(&in->only, f->name, f->name_len))) {
            continue;
        }
        const char *s = sl_field_str(rec, f);
        size_t len = f->v.s.len;
        if (sl_is_blank(s, len)) {
            if (in->empty == EMPTY_OMIT) {
                f->flags |= SL_FIELD_OMIT;
            } else if (in->empty == EMPTY_NULL) {
                f->type = SL_T_NULL;
                f->v.i = 0;
            }
            continue;
        }
        if (sl_is_null_literal(s, len, in->null_literal)) {
            f->type = SL_T_NULL;
            f->v.i = 0;
            continue;
        }
        sl_value v;
        switch (sl_infer_classify(s, len, in->rules, &v, &json)) {
        case SL_T_INT:
            f->type = SL_T_INT;
            f->v.i = v.i;
            break;
        case SL_T_FLOAT: {
            /* the decimal as written (spaces around it aside) is a JSON number
             * unless a side of the point has no digit (".5", "5."): keep it,
             * so writers copy "3.14" instead of formatting a double */
            size_t lead = 0, n = len;
            while (lead < n && is_ws(s[lead])) {
                lead++;
            }
            while (n > lead && is_ws(s[n - 1])) {
                n--;
            }
            const char *t = s + lead;
            size_t tl = n - lead;
            size_t sign = t[0] == '-';
            if (t[sign] != '.' && t[tl - 1] != '.') {
                f->toff = f->v.s.off + (uint32_t)lead;
                f->tlen = (uint32_t)tl;
                f->flags |= SL_FIELD_NUMTEXT;
            }
            f->type = SL_T_FLOAT;
            f->v.f = v.f;
            break;
        }
        case SL_T_BOOL:
            f->type = SL_T_BOOL;
            f->v.b = v.b;
            break;
        case SL_T_JSON:
            /* json is a separate buffer: the arena may move while storing */
            rc = sl_field_set_json(rec, f, json.data, json.len);
            if (rc == SL_ERR_LIMIT) {
                sl_record_reject(rec, stage, "line %llu: column '%.*s': record too large",
                                 (unsigned long long)rec->line, (int)f->name_len, f->name);
                rc = 0;
                goto done;
            }
            if (rc) {
                sl_error_set(err, rc, "infer: out of memory");
                goto done;
            }
            break;
        default:
            break;
        }
    }
done:
    sl_buf_free(&json);
    return rc;
}

const sl_step_plugin sl_step_infer = {
    .name = "infer",
    .summary = "type text cells: numbers, booleans, arrays, null; omit empty cells",
    .options = infer_options,
    .init = infer_init,
    .columns = infer_columns,
    .process = infer_process,
    .destroy = infer_destroy,
};
