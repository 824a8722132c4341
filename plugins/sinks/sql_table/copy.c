/* sql_table, Redshift dialect: the COPY path (s3_staging set).
 *
 * Rows are written as CSV (RFC 4180; NULL is the unquoted \N, COPY's
 * default null string; an empty string is "") into gzip objects under a
 * run-specific prefix,
 *   <s3_staging><table>/run-<UTC time>-<pid>-<n>/part-00001.csv.gz ...
 * each streamed as a multipart upload (sluice/s3.h) and rotated every
 * RS_OBJECT_RAW bytes so a big load is split for Redshift's slices. At
 * commit a manifest listing exactly those objects is put beside them and
 *   COPY sluice_stage (cols) FROM 's3://.../manifest.json' IAM_ROLE '...'
 *   MANIFEST FORMAT AS CSV GZIP TIMEFORMAT 'auto' DATEFORMAT 'auto'
 *   MAXERROR 0 COMPUPDATE OFF STATUPDATE OFF [REGION '...']
 * fills the staging table; the merge and COMMIT follow (redshift.c). After
 * the COMMIT (or a rollback) the run's objects are deleted. A crash leaves
 * at most one run prefix behind: the next load of the same table lists
 * <s3_staging><table>/ and deletes every object that is not its own.
 *
 * When COPY fails, the transaction is rolled back and the reason is read
 * from STL_LOAD_ERRORS (provisioned clusters; the rows of this session's
 * last COPY, pg_last_copy_id()) or, where STL tables are missing
 * (Serverless), SYS_LOAD_ERROR_DETAIL: file, line, column, value, reason.
 * The rows were acknowledged batch by batch before the COPY ran, so a
 * refused row fails the load (nothing is committed) rather than being
 * dead-lettered alone; what sluice checks itself (UTF-8, NUL, NULL keys,
 * VARCHAR byte lengths) is dead-lettered before staging, as on the INSERT
 * path.
 *
 * Restricted mode (SLUICE_REDSHIFT_EMULATE=postgres on a Postgres server):
 * everything is staged and the manifest written exactly as for Redshift,
 * and the COPY statement is written to the trace, but Postgres cannot COPY
 * from S3: the same rows go into the staging table through the INSERT path
 * instead, so the merge runs end to end. There (only),
 * SLUICE_REDSHIFT_KEEP_STAGED=1 leaves the run's objects in place after the
 * commit, as a crash would, for a test to read; the next load removes them. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rs.h"
#include "sluice/log.h"
#include "sluice/s3.h"

#define RS_OBJECT_RAW ((uint64_t)256 << 20)
#define RS_KEY_MAX 1024
#define RS_BUCKET_MAX 256
#define RS_LINE_MAX ((size_t)64 << 20)
#define RS_LOAD_ERRORS_SHOWN 3

struct rs_copy {
    sl_s3 *s3;
    char bucket[RS_BUCKET_MAX];
    char prefix[RS_KEY_MAX / 2]; /* of s3_staging, "" or ending in '/' */
    char tabdir[800];            /* prefix + the table's part + '/' */
    char run[RS_KEY_MAX];        /* tabdir + "run-.../" */
    sl_s3_gzip *gz;              /* the object being written */
    sqlt_names keys;             /* finished objects */
    uint64_t *gzbytes;           /* their compressed sizes */
    size_t gzcap;
    uint64_t obj_raw; /* bytes written into gz */
    long long seq;    /* upsert: the _sluice_seq of the last row written */
    long long rows;   /* rows staged */
    int dirty;        /* objects of this run may exist */
    sl_buf line;      /* a batch's CSV */
    sl_buf stmt;      /* manifest, COPY */
};

/* ---------------------------------------------------------------- helpers */

static int nomem(sl_error *err)
{
    return sl_error_set(err, SL_ERR_NOMEM, "sql_table: out of memory");
}

/* A quoted SQL literal may hold these (no quote, no backslash). */
static int literal_ok(const char *s)
{
    for (; *s; s++) {
        if (*s == '\'' || *s == '\\' || (unsigned char)*s < 0x20) {
            return 0;
        }
    }
    return 1;
}

/* The table's name as a key segment: [A-Za-z0-9_.-] kept, anything else
 * '_' and then a hash of the whole name, so two tables never share one. */
static void key_segment(char *out, size_t cap, const char *t)
{
    size_t n = 0;
    int changed = 0;
    uint32_t h = 2166136261u;
    for (const char *c = t; *c; c++) {
        h = (h ^ (unsigned char)*c) * 16777619u;
    }
    for (const char *c = t; *c && n + 10 < cap; c++) {
        int keep = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                   (*c >= '0' && *c <= '9') || *c == '_' || *c == '-' || (*c == '.' && c != t);
        out[n++] = keep ? *c : '_';
        changed |= !keep;
    }
    out[n] = '\0';
    if (changed || n == 0) {
        snprintf(out + n, cap - n, "-%08x", h);
    }
}

/* ---------------------------------------------------------------- the load error */

void rs_load_error_text(sl_buf *out, const rs_load_error *e, size_t n, long long more)
{
    for (size_t i = 0; i < n; i++) {
        const rs_load_error *x = &e[i];
        const char *file = strrchr(x->file ? x->file : "", '/');
        file = file ? file + 1 : (x->file ? x->file : "");
        sl_buf_printf(out, "%s%s%sline %lld", i ? "; " : "", file, file[0] ? " " : "", x->line);
        if (x->column && x->column[0]) {
            sl_buf_printf(out, ", column '%s'", x->column);
            if (x->type && x->type[0]) {
                sl_buf_printf(out, " (%s%s%s%s)", x->type, x->length && x->length[0] ? "(" : "",
                              x->length && x->length[0] ? x->length : "",
                              x->length && x->length[0] ? ")" : "");
            }
        }
        sl_buf_printf(out, ": %s", x->reason && x->reason[0] ? x->reason : "refused");
        if (x->code) {
            sl_buf_printf(out, " (error %d)", x->code);
        }
        if (x->value && x->value[0]) {
            /* the value as COPY saw it, cut on a UTF-8 boundary */
            size_t l = strlen(x->value), keep = l > 80 ? 80 : l;
            while (keep < l && keep > 0 && ((unsigned char)x->value[keep] & 0xC0) == 0x80) {
                keep--;
            }
            sl_buf_printf(out, "; value '%.*s'%s", (int)keep, x->value, keep < l ? "..." : "");
        }
    }
    if (more > 0) {
        sl_buf_printf(out, "; and %lld more", more);
    }
}

/* After a failed COPY (its transaction rolled back): what Redshift recorded
 * about it, appended to msg. 0 when something was found. */
static int read_load_errors(rsb *p, sl_buf *msg)
{
    static const char *const queries[] = {
        /* provisioned clusters: this session's last COPY */
        "SELECT TRIM(filename), line_number, TRIM(colname), TRIM(type), TRIM(col_length),"
        " TRIM(raw_field_value), err_code, TRIM(err_reason)"
        " FROM stl_load_errors WHERE query = pg_last_copy_id() ORDER BY line_number",
        /* Serverless (no STL tables): this session's latest load */
        "SELECT TRIM(file_name), line_number, TRIM(column_name), TRIM(column_type),"
        " TRIM(column_length), NULL, error_code, TRIM(error_message)"
        " FROM sys_load_error_detail WHERE session_id = pg_backend_pid()"
        " AND query_id = (SELECT MAX(query_id) FROM sys_load_error_detail"
        " WHERE session_id = pg_backend_pid()) ORDER BY line_number",
        NULL};
    for (int q = 0; queries[q]; q++) {
        PGresult *res = rs_query(p, queries[q], 0, NULL);
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0) {
            rs_load_error e[RS_LOAD_ERRORS_SHOWN];
            int n = PQntuples(res) < RS_LOAD_ERRORS_SHOWN ? PQntuples(res) : RS_LOAD_ERRORS_SHOWN;
            for (int i = 0; i < n; i++) {
                e[i].file = PQgetvalue(res, i, 0);
                e[i].line = strtoll(PQgetvalue(res, i, 1), NULL, 10);
                e[i].column = PQgetvalue(res, i, 2);
                e[i].type = PQgetvalue(res, i, 3);
                e[i].length = PQgetvalue(res, i, 4);
                e[i].value = PQgetvalue(res, i, 5);
                e[i].code = atoi(PQgetvalue(res, i, 6));
                e[i].reason = PQgetvalue(res, i, 7);
            }
            rs_load_error_text(msg, e, (size_t)n, (long long)PQntuples(res) - n);
            PQclear(res);
            return 0;
        }
        PQclear(res);
        /* a failed query aborts nothing here (no transaction is open) */
    }
    return -1;
}

/* ---------------------------------------------------------------- life cycle */

int rs_copy_init(rsb *p, sl_error *err)
{
    const sqlt_cfg *cfg = p->cfg;
    p->copy = NULL;
    if (!cfg->s3_staging) {
        return 0;
    }
    if (!cfg->iam_role) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "%s: s3_staging is set but iam_role is not: COPY needs the ARN of an "
                            "IAM role that can read the bucket (arn:aws:iam::123456789012:role/x)",
                            cfg->label);
    }
    if (strncmp(cfg->iam_role, "arn:", 4) != 0 || !literal_ok(cfg->iam_role)) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "%s: iam_role: expected an IAM role ARN "
                            "(arn:aws:iam::123456789012:role/name), without quotes or backslashes",
                            cfg->label);
    }
    if (cfg->region) {
        for (const char *c = cfg->region; *c; c++) {
            if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-')) {
                return sl_error_set(err, SL_ERR_CONFIG,
                                    "%s: region: '%s' is not an AWS region name (e.g. us-east-1)",
                                    cfg->label, cfg->region);
            }
        }
    }
    rs_copy *c = calloc(1, sizeof(*c));
    if (!c) {
        return nomem(err);
    }
    p->copy = c;
    sl_buf_init(&c->line, RS_LINE_MAX);
    sl_buf_init(&c->stmt, RS_LINE_MAX);
    int rc = sl_s3_url_parse(cfg->s3_staging, c->bucket, sizeof(c->bucket), c->prefix,
                             sizeof(c->prefix) - 1, err);
    if (rc != 0) {
        sl_error_prefix(err, "%s: s3_staging", cfg->label);
        return rc;
    }
    if (!literal_ok(c->bucket) || !literal_ok(c->prefix)) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "%s: s3_staging: no quotes or backslashes in the bucket or prefix",
                            cfg->label);
    }
    size_t pl = strlen(c->prefix);
    if (pl && c->prefix[pl - 1] != '/') {
        c->prefix[pl] = '/';
        c->prefix[pl + 1] = '\0';
    }
    if ((rc = sl_s3_open(&c->s3, cfg->region, err)) != 0) {
        sl_error_prefix(err, "%s: s3_staging", cfg->label);
        return rc;
    }
    return 0;
}

typedef struct sweep {
    const char *skip; /* keys under this prefix are kept (NULL: none) */
    sqlt_names keys;
} sweep;

static int collect(void *ud, const char *key, int64_t size)
{
    (void)size;
    sweep *s = ud;
    if (s->skip && strncmp(key, s->skip, strlen(s->skip)) == 0) {
        return 0;
    }
    return sqlt_names_add(&s->keys, key, strlen(key)) != 0;
}

/* Delete every object under prefix but those under skip (may be NULL).
 * Returns the number deleted, <0 on error. */
static long delete_under(rsb *p, const char *prefix, const char *skip, sl_error *err)
{
    rs_copy *c = p->copy;
    sweep s = {skip, {0}};
    int rc = sl_s3_list(c->s3, c->bucket, prefix, collect, &s, err);
    long n = 0;
    for (size_t i = 0; rc == 0 && i < s.keys.n; i++) {
        if ((rc = sl_s3_delete(c->s3, c->bucket, s.keys.v[i], err)) == 0) {
            n++;
        }
    }
    sqlt_names_free(&s.keys);
    return rc ? -1 : n;
}

int rs_copy_stage(rsb *p, sl_error *err)
{
    rs_copy *c = p->copy;
    if (!c) {
        return 0;
    }
    static unsigned counter;
    char seg[200];
    key_segment(seg, sizeof(seg), p->cfg->table);
    snprintf(c->tabdir, sizeof(c->tabdir), "%s%s/", c->prefix, seg);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char ts[32];
    strftime(ts, sizeof(ts), "%Y%m%dT%H%M%SZ", &tm);
    snprintf(c->run, sizeof(c->run), "%srun-%s-%ld-%u/", c->tabdir, ts, (long)getpid(), ++counter);
    /* what crashed loads of this table left */
    long gone = delete_under(p, c->tabdir, c->run, err);
    if (gone < 0) {
        sl_error_prefix(err, "%s: cannot clean up s3://%s/%s", p->cfg->label, c->bucket, c->tabdir);
        return err->code ? err->code : SL_ERR_IO;
    }
    if (gone > 0) {
        sl_info(p->cfg->prefix,
                "removed %ld staged object%s left by an earlier load under s3://%s/%s", gone,
                gone == 1 ? "" : "s", c->bucket, c->tabdir);
    }
    sqlt_names_free(&c->keys);
    c->seq = 0;
    c->rows = 0;
    c->dirty = 1;
    return 0;
}

static int finish_object(rsb *p, sl_error *err)
{
    rs_copy *c = p->copy;
    if (!c->gz) {
        return 0;
    }
    uint64_t raw = 0, gzb = 0;
    sl_s3_gzip *g = c->gz;
    c->gz = NULL;
    int rc = sl_s3_gzip_finish(g, &raw, &gzb, err);
    if (rc != 0) {
        sl_error_prefix(err, "%s: staging to S3", p->cfg->label);
        return rc;
    }
    if (c->keys.n == c->gzcap) {
        size_t cap = c->gzcap ? c->gzcap * 2 : 16;
        uint64_t *g2 = realloc(c->gzbytes, cap * sizeof(*g2));
        if (!g2) {
            return nomem(err);
        }
        c->gzbytes = g2;
        c->gzcap = cap;
    }
    char key[RS_KEY_MAX + 32];
    snprintf(key, sizeof(key), "%spart-%05zu.csv.gz", c->run, c->keys.n + 1);
    c->gzbytes[c->keys.n] = gzb;
    if (sqlt_names_add(&c->keys, key, strlen(key)) != 0) {
        return nomem(err);
    }
    c->obj_raw = 0;
    return 0;
}

/* One CSV value for COPY ... CSV: quoted when it holds a delimiter, quote or
 * line end, is empty (unquoted empty would be an empty field) or is
 * literally \N (the null string). */
static int put_csv(sl_buf *b, const char *v, size_t len)
{
    int q = len == 0 || (len == 2 && v[0] == '\\' && v[1] == 'N');
    for (size_t i = 0; i < len && !q; i++) {
        q = v[i] == ',' || v[i] == '"' || v[i] == '\n' || v[i] == '\r';
    }
    if (!q) {
        return sl_buf_append(b, v, len);
    }
    if (sl_buf_putc(b, '"') < 0) {
        return -1;
    }
    const char *s = v, *e = v + len;
    while (s < e) {
        const char *d = memchr(s, '"', (size_t)(e - s));
        size_t n = d ? (size_t)(d - s) + 1 : (size_t)(e - s);
        if (sl_buf_append(b, s, n) < 0 || (d && sl_buf_putc(b, '"') < 0)) {
            return -1;
        }
        s += n;
    }
    return sl_buf_putc(b, '"');
}

sl_verdict rs_copy_batch(rsb *p, sl_batch *b, sl_error *err)
{
    rs_copy *c = p->copy;
    char num[SQLT_NUM_MAX];
    sl_buf_reset(&c->line);
    for (size_t i = 0; i < b->n; i++) {
        sl_record *r = &b->recs[i];
        if (r->status != SL_REC_OK || !rs_row_check(p, r)) {
            continue;
        }
        size_t mark = c->line.len;
        int bad = 0;
        for (size_t j = 0; j < p->ncols && !bad; j++) {
            const char *v;
            size_t len;
            if (j && sl_buf_putc(&c->line, ',') < 0) {
                bad = 1;
            } else if (sqlt_cell(p->cfg->sink, r, j, num, &v, &len)) {
                bad = put_csv(&c->line, v, len) < 0;
            } else {
                bad = sl_buf_puts(&c->line, "\\N") < 0;
            }
        }
        if (!bad && p->cfg->mode == SQLT_UPSERT) {
            bad = sl_buf_printf(&c->line, ",%lld", c->seq + 1) < 0;
        }
        if (bad || sl_buf_putc(&c->line, '\n') < 0) {
            c->line.len = mark;
            sl_record_fail(r, "line %" PRIu64 ": row larger than %zu MB", r->line,
                           RS_LINE_MAX >> 20);
            continue;
        }
        c->seq++;
        c->rows++;
    }
    if (c->line.len) {
        if (!c->gz) {
            char key[RS_KEY_MAX + 32];
            snprintf(key, sizeof(key), "%spart-%05zu.csv.gz", c->run, c->keys.n + 1);
            if (sl_s3_gzip_open(c->s3, c->bucket, key, 0, &c->gz, err) != 0) {
                sl_error_prefix(err, "%s: staging to S3", p->cfg->label);
                return SL_SEND_FATAL;
            }
        }
        if (sl_s3_gzip_write(c->gz, c->line.data, c->line.len, err) != 0) {
            sl_error_prefix(err, "%s: staging to S3", p->cfg->label);
            return SL_SEND_FATAL;
        }
        c->obj_raw += c->line.len;
        if (c->obj_raw >= RS_OBJECT_RAW && finish_object(p, err) != 0) {
            return SL_SEND_FATAL;
        }
    }
    if (p->emulate) {
        /* Postgres cannot COPY from S3: the same rows through INSERTs */
        return rs_insert_batch(p, b, err);
    }
    return SL_SEND_OK;
}

void rs_copy_sql(sl_buf *q, const char *collist, int upsert, const char *bucket,
                 const char *manifest_key, const char *iam_role, const char *region)
{
    sl_buf_printf(q,
                  "COPY " RS_STAGE " (%s%s) FROM 's3://%s/%s' IAM_ROLE '%s' MANIFEST FORMAT AS "
                  "CSV GZIP TIMEFORMAT 'auto' DATEFORMAT 'auto' MAXERROR 0 COMPUPDATE OFF "
                  "STATUPDATE OFF",
                  collist, upsert ? "," RS_SEQ : "", bucket, manifest_key, iam_role);
    if (region) {
        sl_buf_printf(q, " REGION '%s'", region);
    }
}

int rs_copy_load(rsb *p, sl_error *err)
{
    rs_copy *c = p->copy;
    int rc;
    if ((rc = finish_object(p, err)) != 0) {
        return rc;
    }
    if (c->keys.n == 0) {
        return 0; /* no rows: nothing to COPY */
    }
    sl_buf *m = &c->stmt;
    sl_buf_reset(m);
    sl_buf_puts(m, "{\"entries\":[");
    for (size_t i = 0; i < c->keys.n; i++) {
        sl_buf_printf(m,
                      "%s{\"url\":\"s3://%s/%s\",\"mandatory\":true,"
                      "\"meta\":{\"content_length\":%" PRIu64 "}}",
                      i ? "," : "", c->bucket, c->keys.v[i], c->gzbytes[i]);
    }
    if (sl_buf_puts(m, "]}\n") < 0) {
        return nomem(err);
    }
    char mkey[RS_KEY_MAX + 32];
    snprintf(mkey, sizeof(mkey), "%smanifest.json", c->run);
    if ((rc = sl_s3_put(c->s3, c->bucket, mkey, m->data, m->len, "application/json", err)) != 0) {
        sl_error_prefix(err, "%s: staging the manifest", p->cfg->label);
        return rc;
    }
    sl_buf_reset(m);
    rs_copy_sql(m, sl_buf_cstr(&p->collist), p->cfg->mode == SQLT_UPSERT, c->bucket, mkey,
                p->cfg->iam_role, p->cfg->region);
    if (p->emulate) {
        /* recorded, not run: the rows are in the staging table already */
        sl_buf q;
        sl_buf_init(&q, RS_LINE_MAX);
        sl_buf_printf(&q, "-- not run (SLUICE_REDSHIFT_EMULATE): %s", sl_buf_cstr(m));
        rs_trace(p, sl_buf_cstr(&q), 0);
        sl_buf_free(&q);
        sl_info(p->cfg->prefix,
                "restricted mode: staged %lld rows in %zu object%s under s3://%s/%s; COPY not run "
                "(Postgres), rows inserted instead",
                c->rows, c->keys.n, c->keys.n == 1 ? "" : "s", c->bucket, c->run);
        return 0;
    }
    PGresult *res = rs_query(p, sl_buf_cstr(m), 0, NULL);
    if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        sl_info(p->cfg->prefix, "COPY loaded %s rows from %zu staged object%s", PQcmdTuples(res),
                c->keys.n, c->keys.n == 1 ? "" : "s");
        PQclear(res);
        return 0;
    }
    char sm[1024];
    sl_pg_describe(sm, sizeof(sm), res, p->conn);
    int code = sl_pg_code(res, p->conn);
    int lost = PQstatus(p->conn) == CONNECTION_BAD;
    PQclear(res);
    if (lost) {
        return sl_error_set(err, SL_ERR_IO, "%s: COPY failed, connection lost (%s): %s",
                            p->cfg->label, p->where, sm);
    }
    /* the transaction is aborted: end it, then ask what COPY recorded */
    sl_error e2;
    p->in_tx = 0;
    if (rs_exec(p, "ROLLBACK", "rollback", NULL, &e2) != 0) {
        sl_warn(p->cfg->prefix, "%s", e2.msg);
    }
    sl_buf why;
    sl_buf_init(&why, 8192);
    if (read_load_errors(p, &why) == 0) {
        /* a row COPY refused is about the data: the job fails for good */
        rc = sl_error_set(err, SL_ERR_INPUT, "%s: COPY refused the load: %s", p->cfg->label,
                          sl_buf_cstr(&why));
    } else {
        rc = sl_error_set(err, code, "%s: COPY failed: %s", p->cfg->label, sm);
    }
    sl_buf_free(&why);
    return rc;
}

void rs_copy_done(rsb *p)
{
    rs_copy *c = p->copy;
    if (!c || !c->dirty) {
        return;
    }
    sl_error e;
    c->dirty = 0;
    const char *keep = getenv("SLUICE_REDSHIFT_KEEP_STAGED");
    if (p->emulate && keep && keep[0] == '1') {
        /* tests: look at what was staged; the next load removes it */
        sl_info(p->cfg->prefix, "restricted mode: staged objects kept under s3://%s/%s", c->bucket,
                c->run);
        return;
    }
    if (delete_under(p, c->run, NULL, &e) < 0) {
        sl_warn(p->cfg->prefix,
                "%s: could not remove the staged objects under s3://%s/%s (the next load of the "
                "table removes them): %s",
                p->cfg->label, c->bucket, c->run, e.msg);
    }
}

void rs_copy_abort(rsb *p)
{
    rs_copy *c = p->copy;
    if (!c) {
        return;
    }
    if (c->gz) {
        sl_s3_gzip_abort(c->gz);
        c->gz = NULL;
    }
    rs_copy_done(p);
}

void rs_copy_free(rsb *p)
{
    rs_copy *c = p->copy;
    if (!c) {
        return;
    }
    if (c->gz) {
        sl_s3_gzip_abort(c->gz);
    }
    sl_s3_close(c->s3);
    sqlt_names_free(&c->keys);
    free(c->gzbytes);
    sl_buf_free(&c->line);
    sl_buf_free(&c->stmt);
    free(c);
    p->copy = NULL;
}
