/* sql_table: load records into a Postgres table (libpq COPY) or a SQLite table
 * (prepared INSERTs), as one transaction per load.
 *
 * Modes: replace (a full export: the table is swapped atomically), append
 * (incremental: rows added) and upsert (rows with the same key replaced).
 * Columns are matched by header name; a header column the table lacks is
 * added (text), refused or ignored. Every value is checked before it is sent
 * (valid UTF-8, no NUL byte; key columns not NULL): a bad value fails only its
 * record, with its line and column.
 *
 * This file holds what both backends share: options, the column plan, value
 * checks and the load's life cycle. pg.c and sqlite.c do the SQL. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sluice/plugin.h"
#include "sluice/values.h"
#include "sqlt.h"

#define SCHEMA_FILE_MAX ((size_t)4 << 20)
#define LABEL_MAX 320

typedef enum newcols { NEW_ADD = 0, NEW_ERROR, NEW_IGNORE } newcols;

typedef enum load_state {
    LOAD_IDLE = 0, /* nothing begun */
    LOAD_OPEN,     /* transaction open, staging ready */
    LOAD_DONE,     /* committed or rolled back */
    LOAD_BROKEN,   /* setup failed: every write is fatal */
} load_state;

struct sqlt_sink {
    sl_ctx *ctx;         /* borrowed */
    const sl_opts *opts; /* borrowed: lives for the run (for sl_opt_where) */
    const sqlt_backend *be;
    void *bs;
    sqlt_cfg cfg;
    char *table;
    char *schema;
    char *schema_file;
    char *schema_sql; /* the file's text, read at init */
    char **key;
    size_t nkey;
    int create;
    int empty_as_null;
    int raw_ok; /* records' raw CSV lines may be sent as they are (see record.h) */
    newcols newcols;
    sqlt_cols cols;
    size_t *keycol; /* index in cols of each key column */
    load_state state;
    char label[LABEL_MAX];
    sl_error broken; /* why the load could not start */
};

static const sl_option sqlt_options[] = {
    {"url", SL_OPT_STRING, NULL, SL_OPT_REQUIRED | SL_OPT_SECRET, NULL,
     "postgres://user:pass@host/db (or a libpq key=value string), "
     "redshift://user:pass@cluster:5439/db, or a SQLite file path (sqlite:PATH)"},
    {"table", SL_OPT_STRING, NULL, SL_OPT_REQUIRED, NULL,
     "target table name (one identifier, used exactly as written)"},
    {"schema", SL_OPT_STRING, NULL, 0, NULL,
     "Postgres schema of the table (default: where the search_path finds it)"},
    {"mode", SL_OPT_ENUM, "append", 0, "replace|append|upsert",
     "replace: swap in the whole input atomically; append: add rows; upsert: replace rows "
     "with the same key"},
    {"key", SL_OPT_LIST, NULL, 0, NULL, "key column(s) for mode upsert"},
    {"create", SL_OPT_BOOL, "true", 0, NULL,
     "create a missing table (from schema_file, else every header column as text)"},
    {"schema_file", SL_OPT_STRING, NULL, 0, NULL,
     "SQL file run when the table is missing (CREATE TABLE IF NOT EXISTS ...)"},
    {"on_bad_row", SL_OPT_ENUM, "dead_letter", 0, "dead_letter|fail",
     "a row the database refuses: dead_letter (each batch in its own COPY and savepoint, so "
     "the row fails alone) or fail (Postgres: one COPY streamed for the whole load, fastest; "
     "the load fails naming the row)"},
    {"new_columns", SL_OPT_ENUM, "add", 0, "add|error|ignore",
     "a header column the table lacks: add it (text), fail the load, or drop it with a warning"},
    {"s3_staging", SL_OPT_STRING, "", 0, NULL,
     "Redshift: s3://bucket/prefix/ where rows are staged as gzip CSV for COPY (empty: "
     "multi-row INSERTs, for small tables)"},
    {"iam_role", SL_OPT_STRING, "", 0, NULL,
     "Redshift: ARN of the IAM role COPY uses to read s3_staging"},
    {"region", SL_OPT_STRING, "", 0, NULL,
     "Redshift: AWS region of the s3_staging bucket (default: AWS_REGION)"},
    {"empty_as_null", SL_OPT_BOOL, "true", 0, NULL,
     "load an empty value as NULL (like psql \\copy csv); false keeps ''"},
    SL_OPTIONS_END,
};

/* ---------------------------------------------------------------- helpers */

int sqlt_names_add(sqlt_names *l, const char *s, size_t len)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **v = realloc(l->v, cap * sizeof(*v));
        if (!v) {
            return SL_ERR_NOMEM;
        }
        l->v = v;
        l->cap = cap;
    }
    char *c = malloc(len + 1);
    if (!c) {
        return SL_ERR_NOMEM;
    }
    memcpy(c, s, len);
    c[len] = '\0';
    l->v[l->n++] = c;
    return 0;
}

void sqlt_names_free(sqlt_names *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i]);
    }
    free(l->v);
    memset(l, 0, sizeof(*l));
}

int sqlt_names_has(const sqlt_names *l, const char *s, int nocase)
{
    for (size_t i = 0; i < l->n; i++) {
        if ((nocase ? strcasecmp(l->v[i], s) : strcmp(l->v[i], s)) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Unicode 15, table 3-7 (well-formed UTF-8), plus NUL, which no SQL text
 * column can hold. Words of pure ASCII without a zero byte are skipped 8
 * bytes at a time: CSV exports are mostly ASCII. */
size_t sqlt_utf8_check(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        while (len - i >= 8) {
            uint64_t w;
            memcpy(&w, u + i, 8);
            uint64_t high = w & 0x8080808080808080ULL;
            uint64_t zero = (w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL;
            if (high | zero) {
                break;
            }
            i += 8;
        }
        if (i >= len) {
            break;
        }
        unsigned c = u[i];
        if (c == 0) {
            return i;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t more;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            more = 1;
        } else if (c == 0xE0) {
            more = 2;
            lo = 0xA0;
        } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
            more = 2;
        } else if (c == 0xED) {
            more = 2;
            hi = 0x9F; /* no UTF-16 surrogates */
        } else if (c == 0xF0) {
            more = 3;
            lo = 0x90;
        } else if (c >= 0xF1 && c <= 0xF3) {
            more = 3;
        } else if (c == 0xF4) {
            more = 3;
            hi = 0x8F; /* nothing above U+10FFFF */
        } else {
            return i;
        }
        if (len - i - 1 < more || u[i + 1] < lo || u[i + 1] > hi) {
            return i;
        }
        for (size_t k = 2; k <= more; k++) {
            if ((u[i + k] & 0xC0) != 0x80) {
                return i;
            }
        }
        i += more + 1;
    }
    return (size_t)-1;
}

static int name_eq(const sl_field *f, const sqlt_cols *c, size_t j)
{
    return f->name == c->hname[j] ||
           (f->name_len == c->len[j] && memcmp(f->name, c->name[j], c->len[j]) == 0);
}

/* The record's field for load column j: where the header had it (the usual
 * case, one comparison), else by name anywhere (steps may reorder). */
static const sl_field *find_field(const sqlt_sink *s, const sl_record *r, size_t j)
{
    const sqlt_cols *c = &s->cols;
    uint32_t h = c->hint[j];
    if (h < r->nfields && name_eq(&r->fields[h], c, j)) {
        return &r->fields[h];
    }
    for (uint32_t i = 0; i < r->nfields; i++) {
        if (name_eq(&r->fields[i], c, j)) {
            return &r->fields[i];
        }
    }
    return NULL;
}

int sqlt_cell(const sqlt_sink *s, const sl_record *r, size_t j, char num[SQLT_NUM_MAX],
              const char **p, size_t *len)
{
    const sl_field *f = find_field(s, r, j);
    if (!f || (f->flags & SL_FIELD_OMIT)) {
        return 0;
    }
    switch ((sl_type)f->type) {
    case SL_T_NULL:
        return 0;
    case SL_T_STRING:
    case SL_T_JSON:
        if (f->v.s.len == 0 && s->empty_as_null) {
            return 0;
        }
        *p = sl_field_str(r, f);
        *len = f->v.s.len;
        return SQLT_TEXT;
    case SL_T_INT:
    case SL_T_FLOAT:
        if (f->flags & SL_FIELD_NUMTEXT) {
            *p = r->data.data + f->toff;
            *len = f->tlen;
        } else if (f->type == SL_T_INT) {
            *len = (size_t)snprintf(num, SQLT_NUM_MAX, "%" PRId64, f->v.i);
            *p = num;
        } else {
            *len = sl_format_double(num, SQLT_NUM_MAX, f->v.f);
            *p = num;
        }
        return SQLT_TEXT_SAFE;
    case SL_T_BOOL:
        *p = f->v.b ? "true" : "false";
        *len = f->v.b ? 4 : 5;
        return SQLT_TEXT_SAFE;
    }
    return 0;
}

int sqlt_value_ok(const sqlt_sink *s, sl_record *r, size_t j, const char *v, size_t len,
                  size_t from)
{
    size_t bad = sqlt_utf8_check(v + from, len - from);
    if (bad == (size_t)-1) {
        return 1;
    }
    bad += from;
    sl_record_fail(r, "line %" PRIu64 ": column '%s': %s at byte %zu", r->line, s->cols.name[j],
                   v[bad] ? "invalid UTF-8" : "NUL byte", bad + 1);
    return 0;
}

int sqlt_raw_ok(const sqlt_sink *s)
{
    return s->raw_ok;
}

const sqlt_cols *sqlt_sink_cols(const sqlt_sink *s)
{
    return &s->cols;
}

static void cols_free(sqlt_cols *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->name[i]);
    }
    free(c->name);
    free(c->len);
    free(c->hname);
    free(c->hint);
    memset(c, 0, sizeof(*c));
}

/* ---------------------------------------------------------------- life cycle */

static void sqlt_destroy(void *self)
{
    sqlt_sink *s = self;
    if (!s) {
        return;
    }
    if (s->bs) {
        if (s->state == LOAD_OPEN) {
            s->be->rollback(s->bs);
        }
        s->be->close(s->bs);
    }
    for (size_t i = 0; i < s->nkey; i++) {
        free(s->key[i]);
    }
    free(s->key);
    free(s->keycol);
    free(s->table);
    free(s->schema);
    free(s->schema_file);
    free(s->schema_sql);
    cols_free(&s->cols);
    free(s);
}

static int read_schema_file(sqlt_sink *s, sl_error *err)
{
    int rc = 0;
    sl_buf b;
    sl_buf_init(&b, SCHEMA_FILE_MAX);
    FILE *f = fopen(s->schema_file, "rb");
    if (!f) {
        rc = sl_error_set(err, SL_ERR_CONFIG, "%s: schema_file: cannot open '%s': %m",
                          sl_opt_where(s->opts, "schema_file"), s->schema_file);
        goto done;
    }
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (sl_buf_append(&b, chunk, n) < 0) {
            rc = sl_error_set(err, SL_ERR_LIMIT, "%s: schema_file: '%s' is larger than %zu MB",
                              sl_opt_where(s->opts, "schema_file"), s->schema_file,
                              SCHEMA_FILE_MAX >> 20);
            goto done;
        }
    }
    if (ferror(f)) {
        rc = sl_error_set(err, SL_ERR_IO, "%s: schema_file: cannot read '%s'",
                          sl_opt_where(s->opts, "schema_file"), s->schema_file);
        goto done;
    }
    if (sqlt_utf8_check(b.data ? b.data : "", b.len) != (size_t)-1) {
        rc = sl_error_set(err, SL_ERR_CONFIG, "%s: schema_file: '%s' is not valid UTF-8 text",
                          sl_opt_where(s->opts, "schema_file"), s->schema_file);
        goto done;
    }
    s->schema_sql = sl_buf_steal(&b);
    if (!s->schema_sql) {
        s->schema_sql = strdup("");
        if (!s->schema_sql) {
            rc = SL_ERR_NOMEM;
        }
    }
done:
    if (f) {
        fclose(f);
    }
    sl_buf_free(&b);
    return rc;
}

static int sqlt_init(void **self, const sl_opts *opts, sl_ctx *ctx, sl_error *err)
{
    int rc = SL_ERR_NOMEM;
    sqlt_sink *s = calloc(1, sizeof(*s));
    if (!s) {
        goto fail;
    }
    s->ctx = ctx;
    s->opts = opts;
    const char *url = sl_opt_str(opts, "url");
    const char *table = sl_opt_str(opts, "table");
    const char *schema = sl_opt_str(opts, "schema");
    const char *mode = sl_opt_str(opts, "mode");
    const char *nc = sl_opt_str(opts, "new_columns");
    if (!url || !url[0]) {
        rc = sl_error_set(err, SL_ERR_CONFIG, "%s: url: must not be empty",
                          sl_opt_where(opts, "url"));
        goto fail;
    }
    s->be = sl_pg_is_redshift_url(url) ? &sqlt_redshift
            : sl_pg_is_url(url)        ? &sqlt_pg
                                       : &sqlt_sqlite;
    int pglike = s->be != &sqlt_sqlite;
    /* (region is ignored elsewhere: AWS_REGION is often set for other reasons) */
    const char *const rs_only[] = {"s3_staging", "iam_role", NULL};
    for (int i = 0; rs_only[i]; i++) {
        const char *v = sl_opt_str(opts, rs_only[i]);
        if (v && v[0] && s->be != &sqlt_redshift) {
            rc = sl_error_set(err, SL_ERR_CONFIG,
                              "%s: %s: only for Redshift (url is not redshift://...)",
                              sl_opt_where(opts, rs_only[i]), rs_only[i]);
            goto fail;
        }
    }
    if (!table || !table[0]) {
        rc = sl_error_set(err, SL_ERR_CONFIG, "%s: table: must not be empty",
                          sl_opt_where(opts, "table"));
        goto fail;
    }
    if (pglike && strlen(table) > SQLT_PG_IDENT_MAX) {
        rc = sl_error_set(err, SL_ERR_CONFIG,
                          "%s: table: '%s' is longer than %d bytes (the %s limit)",
                          sl_opt_where(opts, "table"), table, SQLT_PG_IDENT_MAX,
                          s->be == &sqlt_pg ? "Postgres" : "Redshift");
        goto fail;
    }
    if (schema && schema[0] && !pglike) {
        rc = sl_error_set(err, SL_ERR_CONFIG,
                          "%s: schema: only for Postgres and Redshift (url is a SQLite database)",
                          sl_opt_where(opts, "schema"));
        goto fail;
    }
    s->cfg.mode = strcmp(mode, "replace") == 0  ? SQLT_REPLACE
                  : strcmp(mode, "upsert") == 0 ? SQLT_UPSERT
                                                : SQLT_APPEND;
    s->newcols = strcmp(nc, "error") == 0    ? NEW_ERROR
                 : strcmp(nc, "ignore") == 0 ? NEW_IGNORE
                                             : NEW_ADD;
    s->nkey = sl_opt_count(opts, "key");
    if (s->cfg.mode == SQLT_UPSERT && s->nkey == 0) {
        rc = sl_error_set(err, SL_ERR_CONFIG,
                          "%s: key: mode upsert needs the key column(s) that identify a row",
                          sl_opt_where(opts, "mode"));
        goto fail;
    }
    if (s->cfg.mode != SQLT_UPSERT && s->nkey > 0) {
        /* not worth a warning: a templated `mode: "{{mode}}"` config sets
         * key for its upsert jobs and shares it with replace jobs */
        sl_debug(sl_ctx_name(ctx), "%s: key is only used by mode upsert; ignored in mode %s",
                 sl_opt_where(opts, "key"), mode);
        s->nkey = 0;
    }
    if (s->nkey) {
        s->key = calloc(s->nkey, sizeof(*s->key));
        s->keycol = calloc(s->nkey, sizeof(*s->keycol));
        if (!s->key || !s->keycol) {
            goto fail;
        }
    }
    for (size_t i = 0; i < s->nkey; i++) {
        const char *k = sl_opt_item(opts, "key", i);
        if (!k || !k[0]) {
            rc = sl_error_set(err, SL_ERR_CONFIG, "%s: key: entry %zu is empty",
                              sl_opt_where(opts, "key"), i + 1);
            goto fail;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(s->key[j], k) == 0) {
                rc = sl_error_set(err, SL_ERR_CONFIG, "%s: key: column '%s' is listed twice",
                                  sl_opt_where(opts, "key"), k);
                goto fail;
            }
        }
        if (!(s->key[i] = strdup(k))) {
            goto fail;
        }
    }
    s->table = strdup(table);
    s->schema = schema && schema[0] ? strdup(schema) : NULL;
    if (!s->table || (schema && schema[0] && !s->schema)) {
        goto fail;
    }
    s->create = sl_opt_bool(opts, "create");
    s->empty_as_null = sl_opt_bool(opts, "empty_as_null");
    const char *sf = sl_opt_str(opts, "schema_file");
    if (sf && sf[0]) {
        if (!(s->schema_file = strdup(sf))) {
            goto fail;
        }
        if ((rc = read_schema_file(s, err)) != 0) {
            goto fail;
        }
    }
    snprintf(s->label, sizeof(s->label), "%s table \"%s%s%s\"", s->be->name,
             s->schema ? s->schema : "", s->schema ? "." : "", s->table);
    s->cfg.sink = s;
    s->cfg.table = s->table;
    s->cfg.fail_load = strcmp(sl_opt_str(opts, "on_bad_row"), "fail") == 0;
    s->cfg.schema = s->schema;
    s->cfg.key = s->key;
    s->cfg.nkey = s->nkey;
    s->cfg.prefix = sl_ctx_name(ctx);
    s->cfg.label = s->label;
    s->cfg.dry_run = sl_ctx_dry_run(ctx);
    if (s->be == &sqlt_redshift) {
        const char *v = sl_opt_str(opts, "s3_staging");
        s->cfg.s3_staging = v && v[0] ? v : NULL;
        v = sl_opt_str(opts, "iam_role");
        s->cfg.iam_role = v && v[0] ? v : NULL;
        v = sl_opt_str(opts, "region");
        s->cfg.region = v && v[0] ? v : NULL;
    }
    if ((rc = s->be->open(&s->bs, url, &s->cfg, err)) != 0) {
        goto fail;
    }
    *self = s;
    return 0;
fail:
    sqlt_destroy(s);
    if (rc == SL_ERR_NOMEM) {
        sl_error_set(err, rc, "sql_table: out of memory");
    }
    return rc;
}

/* ---------------------------------------------------------------- the column plan */

static int cols_add(sqlt_cols *c, const char *name, uint32_t len, uint32_t hint)
{
    /* capacity: grown one by one; headers are short and this runs once */
    char **nm = realloc(c->name, (c->n + 1) * sizeof(*nm));
    if (!nm) {
        return SL_ERR_NOMEM;
    }
    c->name = nm;
    uint32_t *ln = realloc(c->len, (c->n + 1) * sizeof(*ln));
    if (!ln) {
        return SL_ERR_NOMEM;
    }
    c->len = ln;
    const char **hn = realloc(c->hname, (c->n + 1) * sizeof(*hn));
    if (!hn) {
        return SL_ERR_NOMEM;
    }
    c->hname = hn;
    uint32_t *hi = realloc(c->hint, (c->n + 1) * sizeof(*hi));
    if (!hi) {
        return SL_ERR_NOMEM;
    }
    c->hint = hi;
    char *copy = malloc((size_t)len + 1);
    if (!copy) {
        return SL_ERR_NOMEM;
    }
    memcpy(copy, name, len);
    copy[len] = '\0';
    c->name[c->n] = copy;
    c->len[c->n] = len;
    c->hname[c->n] = name;
    c->hint[c->n] = hint;
    c->n++;
    return 0;
}

/* Append "'a', 'b'" to out. */
static void list_names(sl_buf *out, const sqlt_names *l)
{
    for (size_t i = 0; i < l->n; i++) {
        sl_buf_printf(out, "%s'%s'", i ? ", " : "", l->v[i]);
    }
}

/* Check the header itself: names usable as identifiers, no duplicates, the
 * key columns present. */
static int check_header(sqlt_sink *s, const char *const *cols, size_t n, sl_error *err)
{
    if (n == 0) {
        return sl_error_set(err, SL_ERR_INPUT, "%s: the input has no columns", s->label);
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(cols[i]);
        if (len == 0) {
            return sl_error_set(err, SL_ERR_INPUT,
                                "%s: input column %zu has an empty name (expected a column name)",
                                s->label, i + 1);
        }
        if (sqlt_utf8_check(cols[i], len) != (size_t)-1) {
            return sl_error_set(err, SL_ERR_INPUT, "%s: input column %zu: name is not valid UTF-8",
                                s->label, i + 1);
        }
        if (s->be != &sqlt_sqlite && len > SQLT_PG_IDENT_MAX) {
            return sl_error_set(err, SL_ERR_INPUT,
                                "%s: input column '%s' is longer than %d bytes (the Postgres "
                                "limit for names)",
                                s->label, cols[i], SQLT_PG_IDENT_MAX);
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cols[i], cols[j]) == 0) {
                return sl_error_set(err, SL_ERR_INPUT,
                                    "%s: input column '%s' appears twice (columns %zu and %zu)",
                                    s->label, cols[i], j + 1, i + 1);
            }
        }
    }
    for (size_t k = 0; k < s->nkey; k++) {
        size_t i = 0;
        while (i < n && strcmp(cols[i], s->key[k]) != 0) {
            i++;
        }
        if (i == n) {
            return sl_error_set(err, SL_ERR_INPUT,
                                "%s: the input has no key column '%s' (key at %s)", s->label,
                                s->key[k], sl_opt_where(s->opts, "key"));
        }
    }
    return 0;
}

/* Decide which header columns load, which are added and which are ignored,
 * given the table's columns. Fills s->cols and added. */
static int plan(sqlt_sink *s, const char *const *cols, size_t n, const sqlt_names *table,
                sqlt_names *added, sl_error *err)
{
    int rc = 0;
    sqlt_names missing = {0};
    sl_buf msg;
    sl_buf_init(&msg, 64 * 1024);
    cols_free(&s->cols);
    for (size_t i = 0; i < n; i++) {
        int has = sqlt_names_has(table, cols[i], s->be->nocase);
        if (!has && (rc = sqlt_names_add(&missing, cols[i], strlen(cols[i]))) != 0) {
            goto done;
        }
        if (has || s->newcols == NEW_ADD) {
            if ((rc = cols_add(&s->cols, cols[i], (uint32_t)strlen(cols[i]), (uint32_t)i)) != 0) {
                goto done;
            }
        }
    }
    if (missing.n && s->newcols == NEW_ERROR) {
        sl_buf_printf(&msg, "%s has no column%s ", s->label, missing.n > 1 ? "s" : "");
        list_names(&msg, &missing);
        sl_buf_printf(&msg,
                      " of the input (new_columns: error at %s; add them to the table, or "
                      "set new_columns: add or ignore)",
                      sl_opt_where(s->opts, "new_columns"));
        rc = sl_error_set(err, SL_ERR_INPUT, "%s", sl_buf_cstr(&msg));
        goto done;
    }
    if (missing.n && s->newcols == NEW_IGNORE) {
        sl_buf_printf(&msg, "input column%s ", missing.n > 1 ? "s" : "");
        list_names(&msg, &missing);
        sl_buf_printf(&msg, " not in %s: ignored (new_columns: ignore)", s->label);
        sl_warn(sl_ctx_name(s->ctx), "%s", sl_buf_cstr(&msg));
    }
    if (s->newcols == NEW_ADD) {
        for (size_t i = 0; i < missing.n; i++) {
            if ((rc = sqlt_names_add(added, missing.v[i], strlen(missing.v[i]))) != 0) {
                goto done;
            }
        }
    }
    for (size_t k = 0; k < s->nkey; k++) {
        size_t j = 0;
        while (j < s->cols.n && strcmp(s->cols.name[j], s->key[k]) != 0) {
            j++;
        }
        if (j == s->cols.n) {
            rc = sl_error_set(err, SL_ERR_INPUT,
                              "%s has no key column '%s' (new_columns: ignore drops it)", s->label,
                              s->key[k]);
            goto done;
        }
        s->keycol[k] = j;
    }
    if (s->cols.n == 0) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s has none of the input's columns: nothing to load "
                          "(new_columns: ignore)",
                          s->label);
        goto done;
    }
done:
    if (rc == SL_ERR_NOMEM) {
        sl_error_set(err, rc, "sql_table: out of memory");
    }
    sqlt_names_free(&missing);
    sl_buf_free(&msg);
    return rc;
}

static void log_dry_run(sqlt_sink *s, int exists, const sqlt_names *added)
{
    sl_buf m;
    sl_buf_init(&m, 64 * 1024);
    sl_buf_printf(&m, "dry run: %s %s", s->label,
                  exists          ? "exists"
                  : s->schema_sql ? "is missing: would run schema_file"
                                  : "is missing: would create it (text columns)");
    if (added->n) {
        sl_buf_printf(&m, "; would add column%s ", added->n > 1 ? "s" : "");
        list_names(&m, added);
    }
    sl_buf_printf(&m, "; mode %s",
                  s->cfg.mode == SQLT_REPLACE  ? "replace"
                  : s->cfg.mode == SQLT_UPSERT ? "upsert"
                                               : "append");
    sl_info(sl_ctx_name(s->ctx), "%s", sl_buf_cstr(&m));
    sl_buf_free(&m);
}

/* Start the load for these header columns: transaction, table, staging. */
static int load_begin(sqlt_sink *s, const char *const *cols, size_t n, sl_error *err)
{
    int rc;
    sqlt_names table = {0};
    sqlt_names added = {0};
    if ((rc = check_header(s, cols, n, err)) != 0) {
        goto done;
    }
    int exists = s->be->columns(s->bs, &table, err);
    if (exists < 0) {
        rc = exists;
        goto done;
    }
    if (!exists && !s->create) {
        rc = sl_error_set(err, SL_ERR_INPUT, "%s does not exist (create: false at %s)", s->label,
                          sl_opt_where(s->opts, "create"));
        goto done;
    }
    if (s->cfg.dry_run) {
        if (exists && (rc = plan(s, cols, n, &table, &added, err)) != 0) {
            goto done;
        }
        log_dry_run(s, exists, &added);
        goto done;
    }
    if ((rc = s->be->begin(s->bs, err)) != 0) {
        goto done;
    }
    s->state = LOAD_OPEN;
    if (!exists) {
        if (s->schema_sql) {
            if ((rc = s->be->exec_file(s->bs, s->schema_sql, err)) != 0) {
                sl_error_prefix(err, "schema_file '%s'", s->schema_file);
                goto done;
            }
        } else {
            sqlt_cols all = {0};
            for (size_t i = 0; i < n && rc == 0; i++) {
                rc = cols_add(&all, cols[i], (uint32_t)strlen(cols[i]), (uint32_t)i);
            }
            if (rc == 0) {
                rc = s->be->create(s->bs, &all, err);
            } else {
                sl_error_set(err, rc, "sql_table: out of memory");
            }
            cols_free(&all);
            if (rc != 0) {
                goto done;
            }
        }
        sqlt_names_free(&table);
        exists = s->be->columns(s->bs, &table, err);
        if (exists < 0) {
            rc = exists;
            goto done;
        }
        if (!exists) {
            rc = sl_error_set(err, SL_ERR_INPUT,
                              "schema_file '%s' ran but did not create %s (expected a CREATE "
                              "TABLE for it)",
                              s->schema_file, s->label);
            goto done;
        }
        sl_info(sl_ctx_name(s->ctx), "created %s%s%s", s->label,
                s->schema_sql ? " from schema_file " : "", s->schema_sql ? s->schema_file : "");
    }
    if ((rc = plan(s, cols, n, &table, &added, err)) != 0) {
        goto done;
    }
    if ((rc = s->be->stage(s->bs, &s->cols, &added, &table, err)) != 0) {
        goto done;
    }
    if (added.n) {
        sl_buf m;
        sl_buf_init(&m, 64 * 1024);
        sl_buf_printf(&m, "adding column%s ", added.n > 1 ? "s" : "");
        list_names(&m, &added);
        sl_buf_printf(&m, " to %s (text)", s->label);
        sl_info(sl_ctx_name(s->ctx), "%s", sl_buf_cstr(&m));
        sl_buf_free(&m);
    }
done:
    if (rc != 0 && s->state == LOAD_OPEN) {
        s->be->rollback(s->bs);
        s->state = LOAD_IDLE;
    }
    sqlt_names_free(&table);
    sqlt_names_free(&added);
    return rc;
}

static int sqlt_columns(void *self, const char *const *cols, size_t n, sl_error *err)
{
    sqlt_sink *s = self;
    if (s->state != LOAD_IDLE) {
        return sl_error_set(err, SL_ERR, "%s: columns given twice", s->label);
    }
    int rc = load_begin(s, cols, n, err);
    /* Raw lines carry every header column in header order, with an empty
     * unquoted cell as NULL: usable when the load takes exactly those
     * columns in that order and keeps "" as an empty string. */
    s->raw_ok = !s->empty_as_null && s->cols.n == n;
    for (size_t j = 0; s->raw_ok && j < s->cols.n; j++) {
        s->raw_ok = s->cols.hint[j] == j;
    }
    if (rc == 0 && !s->cfg.dry_run) {
        return 0;
    }
    if (rc != 0) {
        s->broken = *err;
        s->state = LOAD_BROKEN;
    }
    return rc;
}

/* Without a header (a source that does not know its columns, or `sluice
 * retry`), the first record's fields are the columns. Replacing a table from
 * such input could swap in a handful of re-sent rows, so replace refuses. */
static int start_from_record(sqlt_sink *s, const sl_record *r, sl_error *err)
{
    if (s->cfg.mode == SQLT_REPLACE) {
        return sl_error_set(err, SL_ERR_INPUT,
                            "%s: mode replace needs the input's columns up front (a CSV header); "
                            "it cannot load dead letters with `sluice retry` (run the whole "
                            "export again instead)",
                            s->label);
    }
    const char **names = calloc(r->nfields ? r->nfields : 1, sizeof(*names));
    if (!names) {
        return sl_error_set(err, SL_ERR_NOMEM, "sql_table: out of memory");
    }
    size_t n = 0;
    for (uint32_t i = 0; i < r->nfields; i++) {
        const char *nm = r->fields[i].name;
        size_t j = 0;
        while (j < n && strcmp(names[j], nm) != 0) {
            j++;
        }
        if (j == n) {
            names[n++] = nm;
        }
    }
    int rc = load_begin(s, names, n, err);
    free(names);
    return rc;
}

/* Key columns must not be NULL: NULL never matches in the upsert's
 * DELETE, so the row would be duplicated by every redelivery. (Values are
 * checked as they are encoded, see sqlt_cell.) */
static void check_keys(sqlt_sink *s, sl_record *r)
{
    char num[SQLT_NUM_MAX];
    for (size_t k = 0; k < s->nkey; k++) {
        const char *p;
        size_t len;
        if (!sqlt_cell(s, r, s->keycol[k], num, &p, &len)) {
            sl_record_fail(r, "line %" PRIu64 ": key column '%s' is empty (NULL)", r->line,
                           s->key[k]);
            return;
        }
    }
}

static sl_verdict sqlt_write(void *self, sl_batch *b, sl_error *err)
{
    sqlt_sink *s = self;
    if (s->state == LOAD_BROKEN) {
        *err = s->broken;
        return SL_SEND_FATAL;
    }
    if (s->state == LOAD_DONE) {
        sl_error_set(err, SL_ERR, "%s: the load is already finished", s->label);
        return SL_SEND_FATAL;
    }
    size_t ok = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (b->recs[i].status != SL_REC_OK) {
            continue;
        }
        if (s->state == LOAD_IDLE && start_from_record(s, &b->recs[i], err) != 0) {
            s->broken = *err;
            s->state = LOAD_BROKEN;
            return SL_SEND_FATAL;
        }
        check_keys(s, &b->recs[i]);
        ok += b->recs[i].status == SL_REC_OK;
    }
    if (ok == 0) {
        return SL_SEND_OK;
    }
    return s->be->write(s->bs, b, err);
}

static int sqlt_finish(void *self, int success, sl_error *err)
{
    sqlt_sink *s = self;
    if (s->state != LOAD_OPEN) {
        /* nothing begun (no input at all), broken, or finished already:
         * the engine calls finish(0) after a failed finish(1) */
        if (s->state == LOAD_IDLE && success) {
            sl_info(sl_ctx_name(s->ctx), "no input columns and no records: %s left as it was",
                    s->label);
        }
        s->state = s->state == LOAD_BROKEN ? LOAD_BROKEN : LOAD_DONE;
        return 0;
    }
    s->state = LOAD_DONE;
    if (!success) {
        s->be->rollback(s->bs);
        sl_info(sl_ctx_name(s->ctx), "load rolled back: %s is unchanged", s->label);
        return 0;
    }
    return s->be->commit(s->bs, err);
}

const sl_sink_plugin sl_sink_sql_table = {
    .name = "sql_table",
    .summary = "load records into a Postgres (COPY) or SQLite table: replace, append or upsert, "
               "one transaction per load",
    .options = sqlt_options,
    .flags = SL_SINK_TRANSACTIONAL,
    .defaults =
        {
            .batch_records = 5000,
            .batch_bytes = (int64_t)8 << 20,
            .concurrency = 1,
        },
    .init = sqlt_init,
    .columns = sqlt_columns,
    .write = sqlt_write,
    .finish = sqlt_finish,
    .destroy = sqlt_destroy,
};
