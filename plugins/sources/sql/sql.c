/* sql source: the rows of a query, table or view on Postgres or SQLite.
 *
 * Postgres: one READ ONLY, REPEATABLE READ transaction; the query runs as a
 * server-side cursor (DECLARE ... NO SCROLL CURSOR) read with FETCH FORWARD
 * batch_rows, so memory stays at one fetch whatever the result's size.
 * SQLite: one prepared statement stepped row by row (read-only handle).
 *
 * Resuming: with order_key the query is wrapped as
 *   SELECT * FROM (<query>) AS sluice_q [WHERE "<key>" > $1] ORDER BY "<key>"
 * and the checkpoint holds the last key value whose row was acknowledged
 * (the engine asks for the checkpoint of a position; the positions of the
 * rows in flight are mapped to their keys by a queue, see keyq). The key
 * value is always a bound parameter, never pasted into the SQL. Without
 * order_key a run cannot resume: an interrupted run starts over. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <sqlite3.h>

#include "sluice/pg.h"
#include "sluice/plugin.h"
#include "sluice/url.h"
#include "sqlv.h"

#define QUERY_EXCERPT 200
#define KEY_MAX ((size_t)4096)   /* longest order_key value */
#define KEYQ_MAX ((size_t)65536) /* entries of the in-flight key queue */
#define BATCH_ROWS_MAX 1000000
#define SQL_MAX ((size_t)1024 * 1024)
#define CURSOR "sluice_cursor"
#define REDSHIFT_FETCH_MAX 1000

static const sl_option sql_options[] = {
    {"url", SL_OPT_STRING, NULL, SL_OPT_REQUIRED | SL_OPT_SECRET, NULL,
     "postgres://user:pass@host/db (or a libpq key=value string), or a SQLite file path "
     "(sqlite:PATH)"},
    {"query", SL_OPT_STRING, NULL, 0, NULL,
     "a SELECT (or WITH / VALUES / TABLE) whose rows are the records; no trailing ';' needed"},
    {"table", SL_OPT_STRING, NULL, 0, NULL, "read a whole table (\"name\" or \"schema.name\")"},
    {"view", SL_OPT_STRING, NULL, 0, NULL, "read a whole view (\"name\" or \"schema.name\")"},
    {"order_key", SL_OPT_STRING, NULL, 0, NULL,
     "a column of the result with unique, non-NULL values: rows are read in its order and an "
     "interrupted run resumes after the last row delivered"},
    {"batch_rows", SL_OPT_INT, "5000", 0, NULL,
     "rows fetched from the server at a time (memory holds one fetch)"},
    SL_OPTIONS_END,
};

typedef enum ktype { K_TEXT = 0, K_INT, K_FLOAT } ktype;

/* One row in flight: its position and order_key value. */
typedef struct kent {
    uint64_t pos;
    char *k; /* owned, reused */
    size_t len, cap;
    ktype t;
} kent;

typedef struct sql_src {
    sl_ctx *ctx;
    const char *prefix;
    int pg;       /* 1 Postgres (or Redshift), 0 SQLite */
    int redshift; /* a redshift:// URL: Redshift's cursor and FETCH rules */
    char url_log[512];
    char label[640]; /* "sql source (postgres://host:5432/db)" */
    char where[SL_PG_WHERE_MAX];
    char excerpt[QUERY_EXCERPT + 8];
    char *base;      /* the user's query (or SELECT * FROM table), owned */
    const char *key; /* order_key or NULL */
    int64_t batch_rows;
    char hash[17]; /* of base and key: a checkpoint belongs to one query */

    /* resume point (set by resume) */
    int have_after;
    char *after; /* owned */
    size_t after_len;
    ktype after_t;
    uint64_t base_line; /* rows delivered before this run */

    PGconn *conn;
    PGresult *res;
    int row, nrows;
    int done;
    sqlite3 *db;
    sqlite3_stmt *st;
    int started;

    char **names; /* owned column names */
    uint32_t *nlen;
    unsigned *oids;
    const char **decl; /* SQLite declared types (owned by st) */
    int ncols;
    int keycol;
    uint64_t rows; /* produced by this run */
    char fbuf[40]; /* a REAL order_key as text */

    /* key queue: the reader pushes, the checkpoint (sink thread) pops */
    pthread_mutex_t mu;
    kent *q;
    size_t qcap, qhead, qn;
    uint64_t stride; /* only every stride-th row is queued (thinned when no
                        checkpoint is asked for: a dry run, a transactional sink) */
    sl_buf ck;       /* last acknowledged key (sink thread) */
    ktype ck_t;
    int have_ck;
    uint64_t ck_line;
} sql_src;

/* ---------------------------------------------------------------- options */

/* First keyword of a query, skipping white space, comments and '('. */
static void first_word(const char *q, char *w, size_t cap)
{
    const char *p = q;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '(') {
            p++;
        }
        if (p[0] == '-' && p[1] == '-') {
            p += strcspn(p, "\n");
        } else if (p[0] == '/' && p[1] == '*') {
            const char *e = strstr(p + 2, "*/");
            p = e ? e + 2 : p + strlen(p);
        } else {
            break;
        }
    }
    size_t n = 0;
    while (n + 1 < cap && ((p[n] >= 'a' && p[n] <= 'z') || (p[n] >= 'A' && p[n] <= 'Z'))) {
        w[n] = p[n];
        n++;
    }
    w[n] = '\0';
}

static int is_sqlite_url(const char *url)
{
    return !sl_pg_is_url(url) && !sl_pg_is_redshift_url(url);
}

static const char *sqlite_path(const char *url)
{
    if (strncmp(url, "sqlite://", 9) == 0) {
        return url + 9;
    }
    if (strncmp(url, "sqlite:", 7) == 0) {
        return url + 7;
    }
    return url;
}

/* Check the option combination; each problem reported. */
static int check_options(const sl_opts *o, sl_report_fn report, void *ud)
{
    int bad = 0;
    int nq = sl_opt_isset(o, "query") + sl_opt_isset(o, "table") + sl_opt_isset(o, "view");
    if (nq != 1) {
        report(ud, NULL,
               "%s: give exactly one of query, table or view (found %d); e.g. query: \"SELECT "
               "email FROM people\" or view: needs_enrichment",
               nq ? "too many" : "nothing to read", nq);
        bad++;
    }
    const char *url = sl_opt_str(o, "url");
    if (url && is_sqlite_url(url) && !sqlite_path(url)[0]) {
        report(ud, "url", "no SQLite file path after 'sqlite:' (expected sqlite:PATH)");
        bad++;
    } else if (url && !sl_pg_is_url(url) && !sl_pg_is_redshift_url(url) &&
               sl_url_scheme_len(url) > 0 && strncmp(url, "sqlite:", 7) != 0) {
        report(ud, "url",
               "unknown database scheme (expected postgres://…, postgresql://…, "
               "redshift://…, a libpq key=value string, or a SQLite file path / sqlite:PATH)");
        bad++;
    }
    const char *q = sl_opt_str(o, "query");
    if (sl_opt_isset(o, "query")) {
        char w[16];
        first_word(q ? q : "", w, sizeof(w));
        if (strcasecmp(w, "select") != 0 && strcasecmp(w, "with") != 0 &&
            strcasecmp(w, "values") != 0 && strcasecmp(w, "table") != 0) {
            report(ud, "query", "'%s' is not a query: expected a SELECT (or WITH / VALUES / TABLE)",
                   w[0] ? w : "(empty)");
            bad++;
        }
    }
    for (const char *const *n = (const char *const[]){"table", "view", NULL}; *n; n++) {
        const char *t = sl_opt_isset(o, *n) ? sl_opt_str(o, *n) : NULL;
        if (t && (!t[0] || t[0] == '.' || t[strlen(t) - 1] == '.' || strchr(t, '"') ||
                  strchr(strchr(t, '.') ? strchr(t, '.') + 1 : t, '.'))) {
            report(ud, *n, "'%s' is not a name: expected \"name\" or \"schema.name\"", t);
            bad++;
        }
    }
    if (sl_opt_isset(o, "order_key") && !sl_opt_str(o, "order_key")[0]) {
        report(ud, "order_key", "empty: expected the name of a column of the result");
        bad++;
    }
    int64_t br = sl_opt_int(o, "batch_rows");
    if (br < 1 || br > BATCH_ROWS_MAX) {
        report(ud, "batch_rows", "%" PRId64 " is out of range: expected 1 to %d", br,
               BATCH_ROWS_MAX);
        bad++;
    }
    return bad;
}

static int src_validate(const sl_opts *o, sl_report_fn report, void *ud)
{
    return check_options(o, report, ud);
}

/* ---------------------------------------------------------------- helpers */

static int nomem(sl_error *err)
{
    return sl_error_set(err, SL_ERR_NOMEM, "sql source: out of memory");
}

/* FNV-1a, as hex: identifies the query a checkpoint belongs to. */
static void hash_query(sql_src *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = s->base; *p; p++) {
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    }
    h = (h ^ 0xff) * 1099511628211ULL;
    for (const char *p = s->key ? s->key : ""; *p; p++) {
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    }
    snprintf(s->hash, sizeof(s->hash), "%016" PRIx64, h);
}

/* Quote a name ("schema.name" -> "schema"."name"), doubling '"'. */
static int put_ident(sl_buf *b, const char *name)
{
    int rc = sl_buf_putc(b, '"');
    for (const char *p = name; *p && rc == 0; p++) {
        if (*p == '.') {
            rc = sl_buf_puts(b, "\".\"");
        } else if (*p == '"') {
            rc = sl_buf_puts(b, "\"\"");
        } else {
            rc = sl_buf_putc(b, *p);
        }
    }
    return rc == 0 ? sl_buf_putc(b, '"') : rc;
}

/* Quote one name (a '.' is part of it), doubling '"'. */
static int put_name(sl_buf *b, const char *name)
{
    int rc = sl_buf_putc(b, '"');
    for (const char *p = name; *p && rc == 0; p++) {
        rc = *p == '"' ? sl_buf_puts(b, "\"\"") : sl_buf_putc(b, *p);
    }
    return rc == 0 ? sl_buf_putc(b, '"') : rc;
}

/* The statement to run: the base query, wrapped for order_key. */
static int build_sql(sql_src *s, sl_buf *b)
{
    if (!s->key) {
        return sl_buf_puts(b, s->base);
    }
    int rc = sl_buf_printf(b, "SELECT * FROM (%s\n) AS sluice_q", s->base);
    if (rc == 0 && s->have_after) {
        rc = sl_buf_puts(b, " WHERE sluice_q.");
        rc = rc ? rc : put_name(b, s->key);
        rc = rc ? rc : sl_buf_puts(b, s->pg ? " > $1" : " > ?1");
    }
    rc = rc ? rc : sl_buf_puts(b, " ORDER BY sluice_q.");
    return rc ? rc : put_name(b, s->key);
}

static int query_error(sql_src *s, int code, const char *what, const char *msg, sl_error *err)
{
    return sl_error_set(err, code, "%s: %s: %s (query: %s)", s->label, what, msg, s->excerpt);
}

/* ---------------------------------------------------------------- key queue */

static int keyq_push(sql_src *s, uint64_t pos, const char *k, size_t len, ktype t, sl_error *err)
{
    if (len > KEY_MAX) {
        return sl_error_set(err, SL_ERR_LIMIT,
                            "%s: order_key '%s' of row %" PRIu64 " is %zu bytes long (at most %zu)",
                            s->label, s->key, s->base_line + pos, len, KEY_MAX);
    }
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    if (pos % s->stride != 0) {
        goto out;
    }
    if (s->qn == KEYQ_MAX) {
        /* nobody asks for checkpoints (a dry run, a transactional sink):
         * keep every second entry, so memory stays bounded; the
         * checkpoint, if ever asked, is then at most stride rows behind */
        size_t keep = 0;
        for (size_t i = 0; i < s->qn; i += 2) {
            kent *from = &s->q[(s->qhead + i) % s->qcap];
            kent *to = &s->q[(s->qhead + keep) % s->qcap];
            if (from != to) {
                kent tmp = *to;
                *to = *from;
                *from = tmp;
            }
            keep++;
        }
        s->qn = keep;
        s->stride *= 2;
        if (pos % s->stride != 0) {
            goto out;
        }
    }
    if (s->qn == s->qcap) {
        size_t ncap = s->qcap ? s->qcap * 2 : 1024;
        kent *nq = calloc(ncap, sizeof(*nq));
        if (!nq) {
            rc = nomem(err);
            goto out;
        }
        for (size_t i = 0; i < s->qcap; i++) {
            nq[i] = s->q[(s->qhead + i) % s->qcap];
        }
        free(s->q);
        s->q = nq;
        s->qhead = 0;
        s->qcap = ncap;
    }
    kent *e = &s->q[(s->qhead + s->qn) % s->qcap];
    if (e->cap < len + 1) {
        char *nk = realloc(e->k, len + 1);
        if (!nk) {
            rc = nomem(err);
            goto out;
        }
        e->k = nk;
        e->cap = len + 1;
    }
    memcpy(e->k, k, len);
    e->k[len] = '\0';
    e->len = len;
    e->t = t;
    e->pos = pos;
    s->qn++;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---------------------------------------------------------------- Postgres */

static int pg_exec(sql_src *s, const char *sql, const char *what, sl_error *err)
{
    PGresult *r = PQexec(s->conn, sql);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        char m[1024];
        sl_pg_describe(m, sizeof(m), r, s->conn);
        rc = sl_error_set(err, sl_pg_code(r, s->conn), "%s: %s (%s): %s", s->label, what, s->where,
                          m);
    }
    PQclear(r);
    return rc;
}

static int pg_open(sql_src *s, const char *url, sl_error *err)
{
    s->conn = sl_pg_connect(url, s->label, s->prefix, s->where, err);
    if (!s->conn) {
        return err->code ? err->code : SL_ERR_IO;
    }
    /* text output that maps without guessing: ISO dates in UTC, floats
     * exact; a snapshot, so a long read sees one consistent state */
    if (s->redshift) {
        /* Redshift has no IntervalStyle; its transactions are serializable
         * (a snapshot) whatever level is asked for */
        int rc = pg_exec(s,
                         "SET DateStyle TO ISO, YMD; SET TimeZone TO 'UTC'; "
                         "SET extra_float_digits TO 3",
                         "cannot set up the session", err);
        return rc ? rc : pg_exec(s, "BEGIN READ ONLY", "cannot start the read transaction", err);
    }
    int rc = pg_exec(s,
                     "SET DateStyle TO ISO, YMD; SET TimeZone TO 'UTC'; "
                     "SET IntervalStyle TO iso_8601; SET extra_float_digits TO 3",
                     "cannot set up the session", err);
    return rc ? rc
              : pg_exec(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                        "cannot start the read transaction", err);
}

static int pg_start(sql_src *s, sl_error *err)
{
    sl_buf q;
    sl_buf_init(&q, SQL_MAX);
    /* Redshift's DECLARE has no NO SCROLL (its cursors only go forward) */
    int rc = sl_buf_puts(&q, s->redshift ? "DECLARE " CURSOR " CURSOR FOR "
                                         : "DECLARE " CURSOR " NO SCROLL CURSOR FOR ");
    rc = rc ? rc : build_sql(s, &q);
    if (rc) {
        sl_buf_free(&q);
        return sl_error_set(err, SL_ERR_LIMIT, "%s: the query is too long (at most %zu bytes)",
                            s->label, SQL_MAX);
    }
    const char *params[1] = {s->after};
    PGresult *r =
        PQexecParams(s->conn, sl_buf_cstr(&q), s->have_after ? 1 : 0, NULL, params, NULL, NULL, 0);
    sl_buf_free(&q);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        char m[1024];
        sl_pg_describe(m, sizeof(m), r, s->conn);
        rc = query_error(s, sl_pg_code(r, s->conn), "the query failed", m, err);
    }
    PQclear(r);
    return rc;
}

/* Next FETCH; 0 with s->nrows rows (0 at the end), <0 error. */
static int pg_fetch(sql_src *s, sl_error *err)
{
    PQclear(s->res);
    s->res = NULL;
    char q[96];
    /* Redshift: at most 1000 rows per FETCH on a single-node cluster (and
     * the leader node materializes the result on the first FETCH) */
    int64_t n =
        s->redshift && s->batch_rows > REDSHIFT_FETCH_MAX ? REDSHIFT_FETCH_MAX : s->batch_rows;
    snprintf(q, sizeof(q), "FETCH FORWARD %" PRId64 " FROM " CURSOR, n);
    s->res = PQexec(s->conn, q);
    if (PQresultStatus(s->res) != PGRES_TUPLES_OK) {
        char m[1024];
        sl_pg_describe(m, sizeof(m), s->res, s->conn);
        return query_error(s, sl_pg_code(s->res, s->conn),
                           s->rows ? "reading the result failed" : "the query failed", m, err);
    }
    s->row = 0;
    s->nrows = PQntuples(s->res);
    return 0;
}

/* ---------------------------------------------------------------- columns */

static int set_columns(sql_src *s, int n, sl_error *err)
{
    s->ncols = n;
    s->names = calloc((size_t)n + 1, sizeof(*s->names));
    s->nlen = calloc((size_t)n + 1, sizeof(*s->nlen));
    s->oids = calloc((size_t)n + 1, sizeof(*s->oids));
    s->decl = calloc((size_t)n + 1, sizeof(*s->decl));
    if (!s->names || !s->nlen || !s->oids || !s->decl) {
        return nomem(err);
    }
    s->keycol = -1;
    for (int i = 0; i < n; i++) {
        const char *nm = s->pg ? PQfname(s->res, i) : sqlite3_column_name(s->st, i);
        s->names[i] = strdup(nm ? nm : "?");
        if (!s->names[i]) {
            return nomem(err);
        }
        s->nlen[i] = (uint32_t)strlen(s->names[i]);
        if (s->pg) {
            s->oids[i] = (unsigned)PQftype(s->res, i);
        } else {
            s->decl[i] = sqlite3_column_decltype(s->st, i);
        }
        if (s->key && s->keycol < 0 && strcmp(s->names[i], s->key) == 0) {
            s->keycol = i;
        }
    }
    if (s->key && s->keycol < 0) {
        return query_error(s, SL_ERR_CONFIG, "order_key", "not a column of the result", err);
    }
    return 0;
}

/* ---------------------------------------------------------------- SQLite */

static int lite_error(sql_src *s, const char *what, sl_error *err)
{
    char m[600];
    snprintf(m, sizeof(m), "%s [SQLite error %d]", sqlite3_errmsg(s->db),
             sqlite3_extended_errcode(s->db));
    return query_error(s, SL_ERR_CONFIG, what, m, err);
}

static int lite_open(sql_src *s, const char *url, sl_error *err)
{
    const char *path = sqlite_path(url);
    snprintf(s->where, sizeof(s->where), "%.290s", s->url_log);
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        return sl_error_set(err, SL_ERR_IO, "%s: cannot open %s: %s", s->label, s->where,
                            s->db ? sqlite3_errmsg(s->db) : "out of memory");
    }
    sqlite3_busy_timeout(s->db, 15000);
    return 0;
}

static int lite_start(sql_src *s, sl_error *err)
{
    sl_buf q;
    sl_buf_init(&q, SQL_MAX);
    if (build_sql(s, &q) != 0) {
        sl_buf_free(&q);
        return sl_error_set(err, SL_ERR_LIMIT, "%s: the query is too long (at most %zu bytes)",
                            s->label, SQL_MAX);
    }
    int rc = sqlite3_prepare_v2(s->db, sl_buf_cstr(&q), (int)q.len, &s->st, NULL);
    sl_buf_free(&q);
    if (rc != SQLITE_OK) {
        return lite_error(s, "the query failed", err);
    }
    if (!sqlite3_stmt_readonly(s->st)) {
        return query_error(s, SL_ERR_CONFIG, "the query failed", "it would change the database",
                           err);
    }
    if (s->have_after) {
        if (s->after_t == K_INT) {
            rc = sqlite3_bind_int64(s->st, 1, strtoll(s->after, NULL, 10));
        } else if (s->after_t == K_FLOAT) {
            rc = sqlite3_bind_double(s->st, 1, strtod(s->after, NULL));
        } else {
            rc = sqlite3_bind_text(s->st, 1, s->after, (int)s->after_len, SQLITE_STATIC);
        }
        if (rc != SQLITE_OK) {
            return lite_error(s, "cannot bind the resume key", err);
        }
    }
    return set_columns(s, sqlite3_column_count(s->st), err);
}

/* ---------------------------------------------------------------- lifecycle */

static void src_destroy(void *self)
{
    sql_src *s = self;
    if (!s) {
        return;
    }
    PQclear(s->res);
    if (s->conn) {
        PQfinish(s->conn);
    }
    sqlite3_finalize(s->st);
    sqlite3_close(s->db);
    for (int i = 0; s->names && i < s->ncols; i++) {
        free(s->names[i]);
    }
    free(s->names);
    free(s->nlen);
    free(s->oids);
    free(s->decl);
    for (size_t i = 0; i < s->qcap; i++) {
        free(s->q[i].k);
    }
    free(s->q);
    sl_buf_free(&s->ck);
    free(s->after);
    free(s->base);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static int src_init(void **self, const sl_opts *o, sl_ctx *ctx, sl_error *err)
{
    if (sl_opts_validate(o, check_options, err) > 0) {
        return SL_ERR_CONFIG;
    }
    sql_src *s = calloc(1, sizeof(*s));
    if (!s) {
        return nomem(err);
    }
    pthread_mutex_init(&s->mu, NULL);
    sl_buf_init(&s->ck, KEY_MAX + 1);
    s->ctx = ctx;
    s->prefix = sl_ctx_name(ctx);
    s->stride = 1;
    s->batch_rows = sl_opt_int(o, "batch_rows");
    s->key = sl_opt_isset(o, "order_key") ? sl_opt_str(o, "order_key") : NULL;
    const char *url = sl_opt_str(o, "url");
    s->redshift = sl_pg_is_redshift_url(url);
    s->pg = sl_pg_is_url(url) || s->redshift;
    int rc = 0;
    if (s->pg) {
        sl_url_register_secrets(url);
        if (sl_url_scheme_len(url) > 0) {
            sl_url_redact(url, s->url_log, sizeof(s->url_log), 0);
        } else {
            snprintf(s->url_log, sizeof(s->url_log), "postgres (key=value connection string)");
        }
    } else {
        /* the option as a whole is a secret (the redactor masks its exact
         * text): the path alone is shown */
        snprintf(s->url_log, sizeof(s->url_log), "SQLite database %s", sqlite_path(url));
    }
    snprintf(s->label, sizeof(s->label), "sql source (%s)", s->url_log);

    sl_buf b;
    sl_buf_init(&b, SQL_MAX);
    if (sl_opt_isset(o, "query")) {
        rc = sl_buf_puts(&b, sl_opt_str(o, "query"));
        /* a trailing ';' would end the wrapped query early */
        while (rc == 0 && b.len > 0 && strchr(" \t\r\n;", b.data[b.len - 1]) != NULL) {
            b.data[--b.len] = '\0';
        }
    } else {
        const char *t = sl_opt_isset(o, "table") ? sl_opt_str(o, "table") : sl_opt_str(o, "view");
        rc = sl_buf_puts(&b, "SELECT * FROM ");
        rc = rc ? rc : put_ident(&b, t);
    }
    if (rc != 0) {
        sl_buf_free(&b);
        src_destroy(s);
        return sl_error_set(err, SL_ERR_LIMIT,
                            "sql source: the query is too long (at most %zu "
                            "bytes)",
                            SQL_MAX);
    }
    s->base = sl_buf_steal(&b);
    if (!s->base) {
        src_destroy(s);
        return nomem(err);
    }
    /* the query's start for messages, on one line */
    size_t n = 0;
    for (const char *p = s->base; *p && n < QUERY_EXCERPT; p++) {
        s->excerpt[n++] = (*p == '\n' || *p == '\r' || *p == '\t') ? ' ' : *p;
    }
    if (strlen(s->base) > QUERY_EXCERPT) {
        memcpy(s->excerpt + n, "...", 4);
    } else {
        s->excerpt[n] = '\0';
    }
    hash_query(s);
    rc = s->pg ? pg_open(s, url, err) : lite_open(s, url, err);
    if (rc != 0) {
        src_destroy(s);
        return rc;
    }
    *self = s;
    return 0;
}

static int src_resume(void *self, const char *checkpoint, sl_error *err)
{
    sql_src *s = self;
    json_error_t je;
    json_t *j = json_loads(checkpoint ? checkpoint : "", 0, &je);
    int rc = 0;
    if (!j || !json_is_object(j)) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s: the saved checkpoint is not one this source wrote; --from-start "
                          "starts over",
                          s->label);
        goto done;
    }
    json_t *key = json_object_get(j, "key");
    const char *h = json_string_value(json_object_get(j, "query"));
    if (!s->key) {
        sl_warn(s->prefix,
                "an interrupted run stopped after %" JSON_INTEGER_FORMAT
                " rows, but without order_key this source cannot resume: reading from the "
                "beginning (rows already delivered are sent again)",
                json_integer_value(json_object_get(j, "line")));
        goto done;
    }
    if (!h || strcmp(h, s->hash) != 0) {
        rc = sl_error_set(err, SL_ERR_CONFIG,
                          "%s: the checkpoint of the interrupted run belongs to another query or "
                          "order_key; --from-start starts over",
                          s->label);
        goto done;
    }
    s->base_line = (uint64_t)json_integer_value(json_object_get(j, "line"));
    if (json_is_string(key)) {
        const char *t = json_string_value(json_object_get(j, "type"));
        s->after_len = json_string_length(key);
        s->after = strndup(json_string_value(key), s->after_len);
        if (!s->after) {
            rc = nomem(err);
            goto done;
        }
        s->after_t = t && strcmp(t, "int") == 0     ? K_INT
                     : t && strcmp(t, "float") == 0 ? K_FLOAT
                                                    : K_TEXT;
        s->have_after = 1;
        /* the checkpoint stays here until rows of this run are acknowledged */
        sl_buf_reset(&s->ck);
        if (sl_buf_append(&s->ck, s->after, s->after_len) < 0) {
            rc = nomem(err);
            goto done;
        }
        s->ck_t = s->after_t;
        s->have_ck = 1;
        sl_info(s->prefix, "resuming after %s = %s (%" PRIu64 " rows delivered before)", s->key,
                s->after, s->base_line);
    }
    s->ck_line = s->base_line;
done:
    json_decref(j);
    return rc;
}

static int start(sql_src *s, sl_error *err)
{
    s->started = 1;
    if (!s->pg) {
        return lite_start(s, err);
    }
    int rc = pg_start(s, err);
    rc = rc ? rc : pg_fetch(s, err);
    return rc ? rc : set_columns(s, PQnfields(s->res), err);
}

static ktype pg_ktype(unsigned oid)
{
    switch (oid) {
    case SQLV_INT2OID:
    case SQLV_INT4OID:
    case SQLV_INT8OID:
    case SQLV_OIDOID:
        return K_INT;
    case SQLV_FLOAT4OID:
    case SQLV_FLOAT8OID:
    case SQLV_NUMERICOID:
        return K_FLOAT;
    default:
        return K_TEXT;
    }
}

static int src_next(void *self, sl_record *rec, uint64_t *next_pos, sl_error *err)
{
    sql_src *s = self;
    int rc;
    if (s->done) {
        return 0;
    }
    if (!s->started && (rc = start(s, err)) != 0) {
        return rc;
    }
    uint64_t pos = s->rows + 1;
    const char *kv = NULL;
    size_t klen = 0;
    ktype kt = K_TEXT;
    int knull = 0;
    if (s->pg) {
        if (s->row >= s->nrows) {
            if ((rc = pg_fetch(s, err)) != 0) {
                return rc;
            }
            if (s->nrows == 0) {
                s->done = 1;
                pg_exec(s, "COMMIT", "cannot end the read transaction", err);
                return 0;
            }
        }
        for (int i = 0; i < s->ncols; i++) {
            int isnull = PQgetisnull(s->res, s->row, i);
            const char *v = PQgetvalue(s->res, s->row, i);
            size_t len = (size_t)PQgetlength(s->res, s->row, i);
            if (sqlv_pg_add(rec, s->names[i], s->nlen[i], s->oids[i], v, len, isnull) < 0) {
                return nomem(err);
            }
            if (i == s->keycol) {
                kv = v;
                klen = len;
                kt = pg_ktype(s->oids[i]);
                knull = isnull;
            }
        }
        s->row++;
    } else {
        rc = sqlite3_step(s->st);
        if (rc == SQLITE_DONE) {
            s->done = 1;
            return 0;
        }
        if (rc != SQLITE_ROW) {
            return lite_error(s, s->rows ? "reading the result failed" : "the query failed", err);
        }
        for (int i = 0; i < s->ncols; i++) {
            if (sqlv_sqlite_add(rec, s->names[i], s->nlen[i], s->st, i, s->decl[i]) < 0) {
                return nomem(err);
            }
        }
        if (s->keycol >= 0) {
            int t = sqlite3_column_type(s->st, s->keycol);
            knull = t == SQLITE_NULL;
            kt = t == SQLITE_INTEGER ? K_INT : t == SQLITE_FLOAT ? K_FLOAT : K_TEXT;
            kv = (const char *)sqlite3_column_text(s->st, s->keycol);
            klen = (size_t)sqlite3_column_bytes(s->st, s->keycol);
            if (t == SQLITE_FLOAT) {
                /* the text SQLite makes of a double may round: keep all digits */
                snprintf(s->fbuf, sizeof(s->fbuf), "%.17g",
                         sqlite3_column_double(s->st, s->keycol));
                kv = s->fbuf;
                klen = strlen(s->fbuf);
            }
        }
    }
    if (s->key) {
        if (knull) {
            return sl_error_set(err, SL_ERR_INPUT,
                                "%s: order_key '%s' is NULL in row %" PRIu64
                                ": resuming needs a non-NULL, unique key (add WHERE %s IS NOT "
                                "NULL to the query, or choose another order_key) (query: %s)",
                                s->label, s->key, s->base_line + pos, s->key, s->excerpt);
        }
        if ((rc = keyq_push(s, pos, kv ? kv : "", klen, kt, err)) != 0) {
            return rc;
        }
    }
    s->rows = pos;
    rec->pos = pos;
    rec->line = s->base_line + pos;
    *next_pos = pos + 1;
    return 1;
}

static int src_checkpoint(void *self, uint64_t pos, uint64_t line, sl_buf *out, sl_error *err)
{
    sql_src *s = self;
    int rc = 0;
    /* the rows before pos are acknowledged: the last of them queued is where
     * a resumed run continues after */
    pthread_mutex_lock(&s->mu);
    while (s->qn > 0 && s->q[s->qhead].pos < pos) {
        kent *e = &s->q[s->qhead];
        sl_buf_reset(&s->ck);
        if (sl_buf_append(&s->ck, e->k, e->len) < 0) {
            rc = nomem(err);
            break;
        }
        s->ck_t = e->t;
        s->have_ck = 1;
        s->ck_line = s->base_line + e->pos;
        s->qhead = (s->qhead + 1) % s->qcap;
        s->qn--;
    }
    if (s->qn == 0) {
        s->stride = 1;
    }
    pthread_mutex_unlock(&s->mu);
    if (rc) {
        return rc;
    }
    if (!s->key) {
        s->ck_line = s->base_line + (pos ? pos - 1 : 0);
    }
    sl_jw w;
    sl_jw_init(&w, out);
    sl_jw_obj_open(&w);
    sl_jw_keyz(&w, "query");
    sl_jw_str(&w, s->hash, strlen(s->hash));
    sl_jw_keyz(&w, "line");
    sl_jw_int(&w, (int64_t)s->ck_line);
    if (s->key && s->have_ck) {
        sl_jw_keyz(&w, "order_key");
        sl_jw_str(&w, s->key, strlen(s->key));
        sl_jw_keyz(&w, "key");
        sl_jw_str(&w, s->ck.data, s->ck.len);
        sl_jw_keyz(&w, "type");
        const char *t = s->ck_t == K_INT ? "int" : s->ck_t == K_FLOAT ? "float" : "text";
        sl_jw_str(&w, t, strlen(t));
    }
    sl_jw_obj_close(&w);
    (void)line;
    return 0;
}

static const char *src_input_name(void *self)
{
    sql_src *s = self;
    return s->url_log;
}

static void src_progress(void *self, int64_t *done, int64_t *total)
{
    sql_src *s = self;
    *done = (int64_t)s->rows;
    *total = -1;
}

const sl_source_plugin sl_source_sql = {
    .name = "sql",
    .summary = "rows of a query, table or view on Postgres (server-side cursor) or SQLite, "
               "typed, resumable with an order_key",
    .options = sql_options,
    .validate = src_validate,
    .init = src_init,
    .resume = src_resume,
    .next = src_next,
    .checkpoint = src_checkpoint,
    .input_name = src_input_name,
    .progress = src_progress,
    .destroy = src_destroy,
};
