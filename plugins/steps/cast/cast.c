/* cast: per-column forced types. A converted value is flagged SL_FIELD_FIXED
 * so a later infer leaves it alone ("02134" forced to string stays text,
 * "007" forced to integer becomes 7). Empty cells and the null literal are
 * left as they are: what they mean (omit, null) is infer's decision. A value
 * that cannot be converted rejects the record (dead-lettered, not sent). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/plugin.h"
#include "sluice/values.h"

enum cast_to { CAST_STRING, CAST_INTEGER, CAST_FLOAT, CAST_BOOLEAN };

static const char *const cast_names[] = {"string", "integer", "float", "boolean"};

typedef struct cast_col {
    char *name;
    size_t len;
    enum cast_to to;
} cast_col;

typedef struct cast {
    sl_ctx *ctx; /* borrowed */
    cast_col *cols;
    size_t ncols;
    char *null_literal; /* "" disables */
} cast;

static const sl_option cast_options[] = {
    {"types", SL_OPT_MAP, NULL, SL_OPT_REQUIRED, "string|integer|float|boolean",
     "column -> string|integer|float|boolean"},
    {"null_literal", SL_OPT_STRING, "null", 0, NULL,
     "cell text (any case, trimmed) left for infer to turn into null; \"\" disables"},
    SL_OPTIONS_END,
};

static void cast_destroy(void *self)
{
    cast *c = self;
    if (!c) {
        return;
    }
    for (size_t i = 0; i < c->ncols; i++) {
        free(c->cols[i].name);
    }
    free(c->cols);
    free(c->null_literal);
    free(c);
}

static int cast_init(void **self, const sl_opts *opts, sl_ctx *ctx, sl_error *err)
{
    int rc = SL_ERR_NOMEM;
    cast *c = calloc(1, sizeof(*c));
    if (!c) {
        goto fail;
    }
    c->ctx = ctx;
    size_t n = sl_opt_count(opts, "types");
    if (n == 0) {
        rc = sl_error_set(err, SL_ERR_CONFIG,
                          "%s: types: expected at least one 'column: string|integer|float|boolean'",
                          sl_opt_where(opts, "types"));
        goto fail;
    }
    c->cols = calloc(n, sizeof(*c->cols));
    if (!c->cols) {
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        const char *col = sl_opt_key(opts, "types", i);
        const char *to = sl_opt_item(opts, "types", i);
        cast_col *cc = &c->cols[i];
        size_t t = 0;
        while (t < 4 && !(to && strcmp(to, cast_names[t]) == 0)) {
            t++;
        }
        if (t == 4) {
            rc = sl_error_set(err, SL_ERR_CONFIG,
                              "%s: types: column '%s': '%s' is not one of "
                              "string|integer|float|boolean",
                              sl_opt_where(opts, "types"), col ? col : "", to ? to : "");
            goto fail;
        }
        cc->name = strdup(col ? col : "");
        if (!cc->name) {
            goto fail;
        }
        cc->len = strlen(cc->name);
        cc->to = (enum cast_to)t;
        c->ncols = i + 1;
    }
    const char *lit = sl_opt_str(opts, "null_literal");
    c->null_literal = strdup(lit ? lit : "");
    if (!c->null_literal) {
        goto fail;
    }
    *self = c;
    return 0;
fail:
    cast_destroy(c);
    if (rc == SL_ERR_NOMEM) {
        sl_error_set(err, rc, "cast: out of memory");
    }
    return rc;
}

/* A typed column the input does not have is probably a typo: say so, but run
 * (the input may legitimately lack an optional column). */
static int cast_columns(void *self, const char *const *cols, size_t n, sl_error *err)
{
    cast *c = self;
    for (size_t i = 0; i < c->ncols; i++) {
        int found = 0;
        for (size_t k = 0; k < n && !found; k++) {
            found = strcmp(cols[k], c->cols[i].name) == 0;
        }
        if (!found) {
            sl_plog(c->ctx, SL_LOG_WARN, "types: column '%s' is not in the input header",
                    c->cols[i].name);
        }
    }
    return 0;
}

/* Reject with "line N: column 'age': cannot cast 'abc' to integer"; the value
 * is cut to keep the message one readable line. */
static void reject(sl_record *rec, int stage, const cast_col *cc, const char *s, size_t len)
{
    char shown[96];
    sl_excerpt(shown, sizeof(shown), s, len, 80);
    if (rec->line) {
        sl_record_reject(rec, stage, "line %llu: column '%s': cannot cast '%s' to %s",
                         (unsigned long long)rec->line, cc->name, shown, cast_names[cc->to]);
    } else {
        sl_record_reject(rec, stage, "column '%s': cannot cast '%s' to %s", cc->name, shown,
                         cast_names[cc->to]);
    }
}

/* Text of a non-string scalar, for casts from typed sources. */
static size_t scalar_text(const sl_field *f, char *dst, size_t cap)
{
    switch ((sl_type)f->type) {
    case SL_T_INT:
        return (size_t)snprintf(dst, cap, "%lld", (long long)f->v.i);
    case SL_T_FLOAT:
        return sl_format_double(dst, cap, f->v.f);
    case SL_T_BOOL:
        return (size_t)snprintf(dst, cap, "%s", f->v.b ? "true" : "false");
    default:
        dst[0] = '\0';
        return 0;
    }
}

/* 0 converted (or nothing to do), 1 rejected, <0 fatal. */
static int cast_field(cast *c, sl_record *rec, sl_field *f, const cast_col *cc, int stage)
{
    char tmp[48];
    const char *s;
    size_t len;
    if (f->type == SL_T_NULL || f->type == SL_T_JSON) {
        if (f->type == SL_T_JSON && cc->to != CAST_STRING) {
            reject(rec, stage, cc, sl_field_str(rec, f), f->v.s.len);
            return 1;
        }
        if (f->type == SL_T_JSON) {
            f->type = SL_T_STRING; /* the JSON text itself, sent as a string */
            f->flags |= SL_FIELD_FIXED;
        }
        return 0;
    }
    if (f->type == SL_T_STRING) {
        s = sl_field_str(rec, f);
        len = f->v.s.len;
        if (sl_is_blank(s, len) || sl_is_null_literal(s, len, c->null_literal)) {
            return 0;
        }
    } else {
        len = scalar_text(f, tmp, sizeof(tmp));
        s = tmp;
    }
    switch (cc->to) {
    case CAST_STRING:
        if (f->type != SL_T_STRING) {
            int rc = sl_field_set_str(rec, f, s, len);
            if (rc) {
                return rc;
            }
        }
        break;
    case CAST_INTEGER: {
        int64_t v;
        if (f->type == SL_T_FLOAT && f->v.f >= -9.2e18 && f->v.f <= 9.2e18 &&
            f->v.f == (double)(int64_t)f->v.f) {
            v = (int64_t)f->v.f; /* a typed 12.0 from a database is the integer 12 */
        } else if (f->type == SL_T_BOOL || sl_parse_int_strict(s, len, &v) != 0) {
            reject(rec, stage, cc, s, len);
            return 1;
        }
        f->type = SL_T_INT;
        f->v.i = v;
        break;
    }
    case CAST_FLOAT: {
        double v;
        if (f->type == SL_T_BOOL || sl_parse_float_strict(s, len, &v) != 0) {
            reject(rec, stage, cc, s, len);
            return 1;
        }
        f->type = SL_T_FLOAT;
        f->flags &= (uint8_t)~SL_FIELD_NUMTEXT;
        f->v.f = v;
        break;
    }
    case CAST_BOOLEAN: {
        int v;
        if (f->type == SL_T_FLOAT || sl_parse_bool_word(s, len, &v) != 0) {
            reject(rec, stage, cc, s, len);
            return 1;
        }
        f->type = SL_T_BOOL;
        f->v.b = v;
        break;
    }
    }
    f->flags |= SL_FIELD_FIXED;
    return 0;
}

static int cast_process(void *self, sl_record *rec, int stage, sl_error *err)
{
    cast *c = self;
    if (rec->status != SL_REC_OK) {
        return 0; /* keep the first reason */
    }
    for (size_t i = 0; i < c->ncols; i++) {
        const cast_col *cc = &c->cols[i];
        for (uint32_t k = 0; k < rec->nfields; k++) {
            sl_field *f = &rec->fields[k];
            if (f->name_len != cc->len || memcmp(f->name, cc->name, cc->len) != 0) {
                continue;
            }
            int rc = cast_field(c, rec, f, cc, stage);
            if (rc < 0) {
                return sl_error_set(err, rc, "cast: column '%s': out of memory", cc->name);
            }
            if (rc > 0) {
                return 0; /* one reason per record is enough */
            }
        }
    }
    return 0;
}

const sl_step_plugin sl_step_cast = {
    .name = "cast",
    .summary = "force column types (string|integer|float|boolean); uncastable rows are rejected",
    .options = cast_options,
    .init = cast_init,
    .columns = cast_columns,
    .process = cast_process,
    .destroy = cast_destroy,
};
