/* CSV source: header handling, quoting, line numbers, rejected rows, exact
 * byte offsets (resume at any row yields exactly the remaining rows, plain
 * and gzip), checkpoint checks. CSV_BENCH=1 prints rows/s for 1M rows. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "config/config.h"
#include "core/ctx.h"
#include "sluice/plugin.h"

extern const sl_source_plugin sl_source_csv;

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sl_csv_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *tmp_path(const char *name)
{
    static char p[8][160];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof(p[k]), "%s/%s", tmpdir, name);
    return p[k];
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void write_gzip(const char *path, const void *data, size_t len)
{
    gzFile g = gzopen(path, "wb");
    assert_non_null(g);
    assert_int_equal(gzwrite(g, data, (unsigned)len), (int)len);
    assert_int_equal(gzclose(g), Z_OK);
}

/* ------------------------------------------------------------ harness */

typedef struct src {
    sl_opts *opts;
    sl_ctx *ctx;
    void *self;
} src;

/* Open a csv source with path=... plus extra "name=value" options. Returns
 * the init result; on failure err holds the message. */
static int src_open(src *s, const char *path, const char *const *extra, size_t nextra,
                    sl_error *err)
{
    const char *pairs[16];
    char pathopt[256];
    snprintf(pathopt, sizeof(pathopt), "path=%s", path);
    pairs[0] = pathopt;
    for (size_t i = 0; i < nextra; i++) {
        pairs[i + 1] = extra[i];
    }
    sl_buf errs;
    sl_buf_init(&errs, 0);
    memset(s, 0, sizeof(*s));
    s->opts = sl_opts_from_pairs(sl_source_csv.options, pairs, nextra + 1, &errs);
    if (!s->opts) {
        fail_msg("options: %s", sl_buf_cstr(&errs));
    }
    sl_buf_free(&errs);
    s->ctx = sl_ctx_new("test", "source", "csv", NULL, 0, NULL);
    assert_non_null(s->ctx);
    sl_error_clear(err);
    int rc = sl_source_csv.init(&s->self, s->opts, s->ctx, err);
    if (rc != 0) {
        assert_true(rc < 0);
        assert_true(err->msg[0] != '\0');
        s->self = NULL;
    }
    return rc;
}

static void src_close(src *s)
{
    if (s->self) {
        sl_source_csv.destroy(s->self);
    }
    sl_ctx_free(s->ctx);
    sl_opts_free(s->opts);
    memset(s, 0, sizeof(*s));
}

/* One produced record, flattened for comparisons. */
typedef struct row {
    uint64_t pos, next_pos, line, next_line;
    int status;
    char *json;   /* fields as a JSON object */
    char *reason; /* "" when OK */
} row;

typedef struct rows {
    row *v;
    size_t n, cap;
} rows;

static void rows_free(rows *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->v[i].json);
        free(r->v[i].reason);
    }
    free(r->v);
    memset(r, 0, sizeof(*r));
}

/* Read every record of an open source. */
static void read_rows(src *s, rows *out)
{
    memset(out, 0, sizeof(*out));
    sl_record rec;
    sl_record_init(&rec);
    sl_buf js;
    sl_buf_init(&js, 0);
    for (;;) {
        sl_record_reset(&rec);
        uint64_t next = 0;
        sl_error err = {0};
        int rc = sl_source_csv.next(s->self, &rec, &next, &err);
        if (rc < 0) {
            fail_msg("next: %s", err.msg);
        }
        if (rc == 0) {
            break;
        }
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 16;
            out->v = realloc(out->v, out->cap * sizeof(*out->v));
            assert_non_null(out->v);
        }
        row *r = &out->v[out->n++];
        r->pos = rec.pos;
        r->next_pos = next;
        r->line = rec.line;
        r->next_line = rec.next_line;
        r->status = rec.status;
        sl_buf_reset(&js);
        assert_int_equal(sl_record_to_json(&rec, &js), 0);
        r->json = strdup(sl_buf_cstr(&js));
        r->reason = strdup(sl_buf_cstr(&rec.reason));
        if (rec.status == SL_REC_REJECTED) {
            assert_int_equal(rec.stage, SL_STAGE_SOURCE);
        }
    }
    sl_buf_free(&js);
    sl_record_free(&rec);
}

static void read_file_rows(const char *path, const char *const *extra, size_t nextra, rows *out)
{
    src s;
    sl_error err;
    if (src_open(&s, path, extra, nextra, &err) != 0) {
        fail_msg("init: %s", err.msg);
    }
    read_rows(&s, out);
    src_close(&s);
}

static int open_error(const char *content, size_t len, const char *name, const char *const *extra,
                      size_t nextra, char *msg, size_t cap)
{
    const char *path = tmp_path(name);
    write_file(path, content, len);
    src s;
    sl_error err;
    int rc = src_open(&s, path, extra, nextra, &err);
    snprintf(msg, cap, "%s", rc ? err.msg : "");
    src_close(&s);
    return rc;
}

/* ------------------------------------------------------------ tests */

static void test_basic_bom_crlf(void **state)
{
    (void)state;
    const char *csv = "\xef\xbb\xbfid,name,note\r\n"
                      "1,Ann,\"hello, world\"\r\n"
                      "2,Bob,\"say \"\"hi\"\"\"\r\n"
                      "3,,\r\n"
                      "4,D\xff\xfe,x"; /* invalid UTF-8 passes; no final line break */
    const char *path = tmp_path("basic.csv");
    write_file(path, csv, strlen(csv));
    src s;
    sl_error err;
    assert_int_equal(src_open(&s, path, NULL, 0, &err), 0);
    size_t n = 0;
    const char *const *cols = sl_source_csv.columns(s.self, &n);
    assert_int_equal(n, 3);
    assert_string_equal(cols[0], "id"); /* BOM not part of the name */
    assert_string_equal(cols[2], "note");
    assert_string_equal(sl_source_csv.input_name(s.self), path);
    rows r;
    read_rows(&s, &r);
    assert_int_equal(r.n, 4);
    assert_string_equal(r.v[0].json, "{\"id\":\"1\",\"name\":\"Ann\",\"note\":\"hello, world\"}");
    assert_string_equal(r.v[1].json, "{\"id\":\"2\",\"name\":\"Bob\",\"note\":\"say \\\"hi\\\"\"}");
    assert_string_equal(r.v[2].json, "{\"id\":\"3\",\"name\":\"\",\"note\":\"\"}");
    assert_int_equal(r.v[3].status, SL_REC_OK);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(r.v[i].status, SL_REC_OK);
        assert_int_equal(r.v[i].line, i + 2);
        assert_int_equal(r.v[i].next_line, i + 3);
    }
    /* offsets count the BOM and the CRLFs */
    size_t hdr = strlen("\xef\xbb\xbfid,name,note\r\n");
    assert_int_equal(r.v[0].pos, hdr);
    assert_int_equal(r.v[0].next_pos, hdr + strlen("1,Ann,\"hello, world\"\r\n"));
    assert_int_equal(r.v[1].pos, r.v[0].next_pos);
    assert_int_equal(r.v[3].next_pos, strlen(csv));
    int64_t done = 0, total = 0;
    sl_source_csv.progress(s.self, &done, &total);
    assert_int_equal(total, (int64_t)strlen(csv));
    assert_int_equal(done, (int64_t)strlen(csv));
    rows_free(&r);
    src_close(&s);
}

static void test_quoted_newlines_line_numbers(void **state)
{
    (void)state;
    const char *csv = "id,note\n"                    /* 1 */
                      "1,\"two\nlines\"\n"           /* 2-3 */
                      "\n"                           /* 4 blank */
                      "2,\"three\r\nline\nfield\"\n" /* 5-7 */
                      "3,plain\n";                   /* 8 */
    const char *path = tmp_path("nl.csv");
    write_file(path, csv, strlen(csv));
    rows r;
    read_file_rows(path, NULL, 0, &r);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.v[0].json, "{\"id\":\"1\",\"note\":\"two\\nlines\"}");
    assert_int_equal(r.v[0].line, 2);
    assert_int_equal(r.v[0].next_line, 4);
    assert_string_equal(r.v[1].json, "{\"id\":\"2\",\"note\":\"three\\r\\nline\\nfield\"}");
    assert_int_equal(r.v[1].line, 5);
    assert_int_equal(r.v[1].next_line, 8);
    assert_int_equal(r.v[2].line, 8);
    /* the blank line lies between next_pos of row 1 and pos of row 2 */
    assert_int_equal(r.v[1].pos, r.v[0].next_pos + 1);
    rows_free(&r);
}

static void test_ragged_and_malformed(void **state)
{
    (void)state;
    const char *csv = "a,b,c\n"
                      "1,2,3\n"
                      "4,5\n"        /* line 3: too few */
                      "6,7,8,9,10\n" /* line 4: too many */
                      "x,ab\"c,y\n"  /* line 5: stray quote */
                      "\"q\"z,1,2\n" /* line 6: text after closing quote */
                      "11,12,13\n";
    const char *path = tmp_path("users.csv");
    write_file(path, csv, strlen(csv));
    rows r;
    read_file_rows(path, NULL, 0, &r);
    assert_int_equal(r.n, 6);
    assert_int_equal(r.v[0].status, SL_REC_OK);

    char want[512];
    assert_int_equal(r.v[1].status, SL_REC_REJECTED);
    snprintf(want, sizeof(want), "%s:3: row has 2 fields, expected 3 (header)", path);
    assert_string_equal(r.v[1].reason, want);
    assert_string_equal(r.v[1].json, "{\"a\":\"4\",\"b\":\"5\"}");

    assert_int_equal(r.v[2].status, SL_REC_REJECTED);
    snprintf(want, sizeof(want), "%s:4: row has 5 fields, expected 3 (header)", path);
    assert_string_equal(r.v[2].reason, want);
    /* the extra fields are kept for the dead letter */
    assert_string_equal(r.v[2].json,
                        "{\"a\":\"6\",\"b\":\"7\",\"c\":\"8\",\"_col4\":\"9\",\"_col5\":\"10\"}");

    assert_int_equal(r.v[3].status, SL_REC_REJECTED);
    snprintf(want, sizeof(want), "%s:5: malformed quoting in field 2", path);
    assert_memory_equal(r.v[3].reason, want, strlen(want));
    assert_string_equal(r.v[3].json, "{\"a\":\"x\",\"b\":\"ab\\\"c\",\"c\":\"y\"}");

    assert_int_equal(r.v[4].status, SL_REC_REJECTED);
    snprintf(want, sizeof(want), "%s:6: malformed quoting in field 1", path);
    assert_memory_equal(r.v[4].reason, want, strlen(want));

    /* parsing went on */
    assert_int_equal(r.v[5].status, SL_REC_OK);
    assert_int_equal(r.v[5].line, 7);
    assert_string_equal(r.v[5].json, "{\"a\":\"11\",\"b\":\"12\",\"c\":\"13\"}");
    rows_free(&r);
}

static void test_overlong_and_unterminated(void **state)
{
    (void)state;
    /* line 3 opens a quote that never closes; what follows is long */
    sl_buf b;
    sl_buf_init(&b, 0);
    sl_buf_puts(&b, "id,v\n1,a\n2,\"oops\n");
    for (int i = 3; i < 40; i++) {
        sl_buf_printf(&b, "%d,value number %d\n", i, i);
    }
    const char *path = tmp_path("long.csv");
    write_file(path, b.data, b.len);
    const char *opt[] = {"max_row_bytes=100"};
    rows r;
    read_file_rows(path, opt, 1, &r);
    assert_int_equal(r.n, 39);
    assert_int_equal(r.v[1].status, SL_REC_REJECTED);
    char want[256];
    snprintf(want, sizeof(want),
             "%s:3: row exceeds max_row_bytes (100) \xe2\x80\x94 unterminated quote?", path);
    assert_string_equal(r.v[1].reason, want);
    assert_string_equal(r.v[1].json, "{\"id\":\"2\",\"v\":\"oops\"}");
    assert_int_equal(r.v[1].next_line, 4);
    /* resumes at the line after the row's first line */
    assert_int_equal(r.v[2].status, SL_REC_OK);
    assert_int_equal(r.v[2].line, 4);
    assert_string_equal(r.v[2].json, "{\"id\":\"3\",\"v\":\"value number 3\"}");
    assert_int_equal(r.v[2].pos, r.v[1].next_pos);
    rows_free(&r);

    /* the same with the default limit: the quote runs to the end of input */
    read_file_rows(path, NULL, 0, &r);
    assert_int_equal(r.n, 39);
    snprintf(want, sizeof(want),
             "%s:3: unterminated quoted field: no closing quote before the end of input; "
             "reading resumes at line 4",
             path);
    assert_string_equal(r.v[1].reason, want);
    assert_int_equal(r.v[2].line, 4);
    assert_int_equal(r.v[38].status, SL_REC_OK);
    rows_free(&r);

    /* one physical line longer than the whole window, without quotes */
    sl_buf_reset(&b);
    sl_buf_puts(&b, "id,v\n1,");
    for (int i = 0; i < 300000; i++) {
        sl_buf_putc(&b, 'x');
    }
    sl_buf_puts(&b, "\n2,ok\n");
    write_file(path, b.data, b.len);
    const char *opt2[] = {"max_row_bytes=1KB"};
    read_file_rows(path, opt2, 1, &r);
    assert_int_equal(r.n, 2);
    snprintf(want, sizeof(want), "%s:2: row exceeds max_row_bytes (1024)", path);
    assert_string_equal(r.v[0].reason, want);
    assert_int_equal(r.v[0].next_pos, b.len - 5);
    assert_string_equal(r.v[1].json, "{\"id\":\"2\",\"v\":\"ok\"}");
    assert_int_equal(r.v[1].line, 3);
    rows_free(&r);
    sl_buf_free(&b);
}

static void test_blank_lines(void **state)
{
    (void)state;
    const char *csv = "\n\nid,v\n\n1,a\n\r\n\n2,b\n\n";
    const char *path = tmp_path("blank.csv");
    write_file(path, csv, strlen(csv));
    rows r;
    read_file_rows(path, NULL, 0, &r);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.v[0].line, 5);
    assert_int_equal(r.v[1].line, 8);
    rows_free(&r);

    const char *opt[] = {"skip_blank_lines=false"};
    read_file_rows(path, opt, 1, &r);
    /* leading blank lines before the header are still skipped */
    assert_int_equal(r.n, 6);
    assert_int_equal(r.v[0].status, SL_REC_REJECTED);
    assert_int_equal(r.v[0].line, 4);
    assert_string_equal(r.v[0].json, "{\"id\":\"\"}");
    assert_int_equal(r.v[1].status, SL_REC_OK);
    rows_free(&r);
}

static void test_header_errors(void **state)
{
    (void)state;
    char msg[1024], want[512];
    assert_true(open_error("id,,name\n1,2,3\n", 15, "users.csv", NULL, 0, msg, sizeof(msg)) < 0);
    snprintf(want, sizeof(want), "%s: header column 2 is empty", tmp_path("users.csv"));
    /* messages start with the path as given, then the line */
    snprintf(want, sizeof(want), "%s:1: header column 2 is empty", tmp_path("users.csv"));
    assert_string_equal(msg, want);

    assert_true(open_error("id,email,x,y,email\n", 19, "users.csv", NULL, 0, msg, sizeof(msg)) < 0);
    snprintf(want, sizeof(want), "%s:1: duplicate column 'email' (columns 2 and 5)",
             tmp_path("users.csv"));
    assert_string_equal(msg, want);

    assert_true(open_error("", 0, "users.csv", NULL, 0, msg, sizeof(msg)) < 0);
    snprintf(want, sizeof(want), "%s: empty input (expected a header row)", tmp_path("users.csv"));
    assert_string_equal(msg, want);

    assert_true(open_error("\n\r\n\n", 4, "users.csv", NULL, 0, msg, sizeof(msg)) < 0);
    assert_string_equal(msg, want);

    /* binary data */
    const char bin[] = "PK\x03\x04\x00\x00garbage\x00\x01\n1,2\n";
    assert_true(open_error(bin, sizeof(bin) - 1, "users.csv", NULL, 0, msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "users.csv:1: does not look like CSV: binary data (NUL byte"));

    /* a gzip file read as is: its header bytes hold NULs or no line break */
    const char *gz = tmp_path("real.csv.gz");
    sl_buf big;
    sl_buf_init(&big, 0);
    for (int i = 0; i < 20000; i++) {
        sl_buf_printf(&big, "%d,%d,%d\n", i, rand(), rand());
    }
    write_gzip(gz, big.data, big.len);
    src s;
    sl_error err;
    const char *none[] = {"compression=none"};
    assert_true(src_open(&s, gz, none, 1, &err) < 0);
    assert_non_null(strstr(err.msg, "does not look like CSV"));
    src_close(&s);
    /* auto reads it */
    assert_int_equal(src_open(&s, gz, NULL, 0, &err), 0);
    rows r;
    read_rows(&s, &r);
    assert_int_equal(r.n, 19999);
    rows_free(&r);
    src_close(&s);

    /* a header with no line break within max_row_bytes */
    sl_buf_reset(&big);
    for (int i = 0; i < 2000; i++) {
        sl_buf_printf(&big, "col%d,", i);
    }
    const char *opt[] = {"max_row_bytes=1KB"};
    assert_true(open_error(big.data, big.len, "wide.csv", opt, 1, msg, sizeof(msg)) < 0);
    snprintf(want, sizeof(want),
             "%s:1: does not look like CSV: the header row is longer than max_row_bytes (1024)",
             tmp_path("wide.csv"));
    assert_string_equal(msg, want);
    sl_buf_free(&big);

    assert_true(open_error("id,\"na\"me\n", 10, "q.csv", NULL, 0, msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "q.csv:1: malformed quoting in field 2"));
    assert_non_null(strstr(msg, "(header row)"));

    /* classic Mac line breaks would make one giant header */
    assert_true(open_error("id,name\r1,a\r2,b\r", 16, "mac.csv", NULL, 0, msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "mac.csv:1: does not look like CSV with LF or CRLF line breaks"));

    /* missing file */
    assert_true(src_open(&s, "nope/users.csv", NULL, 0, &err) < 0);
    assert_string_equal(err.msg, "nope/users.csv: cannot open: No such file or directory");
    src_close(&s);
}

static void test_options(void **state)
{
    (void)state;
    char msg[1024];
    /* header: false needs columns */
    const char *nohdr[] = {"header=false"};
    assert_true(open_error("1,2\n", 4, "o.csv", nohdr, 1, msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "columns: required when header is false"));

    const char *cols[] = {"header=false", "columns=[id, name]"};
    const char *path = tmp_path("nohdr.csv");
    write_file(path, "1,Ann\n2,Bob\n", 12);
    rows r;
    read_file_rows(path, cols, 2, &r);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.v[0].line, 1);
    assert_int_equal(r.v[0].pos, 0);
    assert_string_equal(r.v[1].json, "{\"id\":\"2\",\"name\":\"Bob\"}");
    rows_free(&r);

    /* with a header, columns lists what must exist */
    const char *need[] = {"columns=[id, email]"};
    assert_true(open_error("id,name\n1,a\n", 12, "need.csv", need, 1, msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "need.csv:1: header has no column 'email'"));
    const char *need_ok[] = {"columns=[name]"};
    assert_int_equal(open_error("id,name\n1,a\n", 12, "need.csv", need_ok, 1, msg, sizeof(msg)), 0);

    /* delimiter: tab as "\t", and trim */
    const char *tsv[] = {"delimiter=\\t", "trim=true"};
    path = tmp_path("t.tsv");
    const char *t = "id\tname\n 1 \t Ann Lee \n2\t \" q \" \n";
    write_file(path, t, strlen(t));
    read_file_rows(path, tsv, 2, &r);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.v[0].json, "{\"id\":\"1\",\"name\":\"Ann Lee\"}");
    assert_string_equal(r.v[1].json, "{\"id\":\"2\",\"name\":\" q \"}");
    rows_free(&r);
    /* without trim, spaces are data */
    const char *tsv2[] = {"delimiter=\\t"};
    read_file_rows(path, tsv2, 1, &r);
    assert_string_equal(r.v[0].json, "{\"id\":\" 1 \",\"name\":\" Ann Lee \"}");
    assert_int_equal(r.v[1].status, SL_REC_REJECTED); /* ' "' : stray quote */
    rows_free(&r);

    const char *semi[] = {"delimiter=;", "quote='"};
    path = tmp_path("semi.csv");
    write_file(path, "a;b\n'x;y';'it''s'\n", 18);
    read_file_rows(path, semi, 2, &r);
    assert_string_equal(r.v[0].json, "{\"a\":\"x;y\",\"b\":\"it's\"}");
    rows_free(&r);

    const char *bad[] = {"delimiter=;;"};
    assert_true(open_error("a\n", 2, "d.csv", bad, 1, msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "delimiter: must be one byte"));
    const char *same[] = {"delimiter=\"", "quote=\""};
    assert_true(open_error("a\n", 2, "d.csv", same, 2, msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "quote: must differ from the delimiter"));
    const char *tiny[] = {"max_row_bytes=10"};
    assert_true(open_error("a\n", 2, "d.csv", tiny, 1, msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "max_row_bytes: must be between"));
}

/* A file with every awkward case, for the offset property. */
static void tricky_file(sl_buf *b)
{
    sl_buf_puts(b, "\xef\xbb\xbf\"id\",name,\"no,te\"\r\n");
    for (int i = 0; i < 400; i++) {
        switch (i % 9) {
        case 0:
            sl_buf_printf(b, "%d,plain %d,x\n", i, i);
            break;
        case 1:
            sl_buf_printf(b, "%d,\"multi\nline\r\n%d\",\"q\"\"q\"\r\n", i, i);
            break;
        case 2:
            sl_buf_printf(b, "\n\r\n");
            break;
        case 3:
            sl_buf_printf(b, "%d,short\n", i);
            break; /* ragged */
        case 4:
            sl_buf_printf(b, "%d,bad\"quote,y\n", i);
            break;
        case 5:
            sl_buf_printf(b, "%d,\"\",\"\"\n", i);
            break;
        case 6:
            sl_buf_printf(b, "%d,\xc3\xa9t\xc3\xa9,\"a,b\nc\"\r\n", i);
            break;
        case 7:
            sl_buf_printf(b, "%d,\"%0300d\",z\n", i, i);
            break; /* long field */
        default:
            sl_buf_printf(b, "%d,,\n", i);
            break;
        }
    }
    sl_buf_puts(b, "last,row,no newline");
}

static void rows_equal(const row *a, const row *b)
{
    assert_int_equal(a->pos, b->pos);
    assert_int_equal(a->next_pos, b->next_pos);
    assert_int_equal(a->line, b->line);
    assert_int_equal(a->next_line, b->next_line);
    assert_int_equal(a->status, b->status);
    assert_string_equal(a->json, b->json);
    assert_string_equal(a->reason, b->reason);
}

/* Resume at (pos, line) of every row, and at (next_pos, next_line): the rows
 * produced must be exactly the remaining ones. */
static void check_resume_everywhere(const char *path, const char *const *extra, size_t nextra)
{
    rows all;
    read_file_rows(path, extra, nextra, &all);
    assert_true(all.n > 100);
    sl_buf cp;
    sl_buf_init(&cp, 0);
    for (size_t i = 0; i < all.n; i++) {
        for (int which = 0; which < 2; which++) {
            src s;
            sl_error err;
            assert_int_equal(src_open(&s, path, extra, nextra, &err), 0);
            sl_buf_reset(&cp);
            uint64_t pos = which ? all.v[i].next_pos : all.v[i].pos;
            uint64_t line = which ? all.v[i].next_line : all.v[i].line;
            assert_int_equal(sl_source_csv.checkpoint(s.self, pos, line, &cp, &err), 0);
            if (sl_source_csv.resume(s.self, sl_buf_cstr(&cp), &err) != 0) {
                fail_msg("resume at %llu: %s", (unsigned long long)pos, err.msg);
            }
            rows rest;
            read_rows(&s, &rest);
            size_t from = which ? i + 1 : i;
            assert_int_equal(rest.n, all.n - from);
            for (size_t k = 0; k < rest.n; k++) {
                rows_equal(&rest.v[k], &all.v[from + k]);
            }
            rows_free(&rest);
            src_close(&s);
        }
    }
    sl_buf_free(&cp);
    rows_free(&all);
}

static void test_offsets_resume_property(void **state)
{
    (void)state;
    sl_buf b;
    sl_buf_init(&b, 0);
    tricky_file(&b);
    const char *path = tmp_path("tricky.csv");
    write_file(path, b.data, b.len);

    rows all;
    read_file_rows(path, NULL, 0, &all);
    /* sanity of the tricky file: rejects and OKs, and pos..next_pos is the row */
    size_t rejected = 0;
    for (size_t i = 0; i < all.n; i++) {
        rejected += all.v[i].status == SL_REC_REJECTED;
        assert_true(all.v[i].next_pos > all.v[i].pos);
        if (i + 1 < all.n) {
            assert_true(all.v[i].next_pos <= all.v[i + 1].pos);
            assert_true(all.v[i].next_line <= all.v[i + 1].line);
        }
    }
    assert_true(rejected >= 80);
    assert_int_equal(all.v[all.n - 1].next_pos, b.len);
    assert_string_equal(all.v[0].json, "{\"id\":\"0\",\"name\":\"plain 0\",\"no,te\":\"x\"}");
    assert_string_equal(all.v[1].json,
                        "{\"id\":\"1\",\"name\":\"multi\\nline\\r\\n1\",\"no,te\":\"q\\\"q\"}");
    assert_int_equal(all.v[1].line, 3);
    assert_int_equal(all.v[2].line, 8); /* 3 lines of row 1, 2 blank lines */
    rows_free(&all);

    const char *small[] = {"max_row_bytes=100"}; /* the long fields are rejected too */
    check_resume_everywhere(path, NULL, 0);
    check_resume_everywhere(path, small, 1);

    const char *gz = tmp_path("tricky.csv.gz");
    write_gzip(gz, b.data, b.len);
    check_resume_everywhere(gz, NULL, 0);
    sl_buf_free(&b);
}

/* Random rows with quoting, across many window refills: fields must come back
 * exactly, with the right line numbers. */
static void test_random_roundtrip(void **state)
{
    (void)state;
    srand(42);
    const char alphabet[] = "ab ,\"\n\r\t;xyz\xc3\xa9";
    size_t nrows = 20000, ncols = 4;
    sl_buf b, expect;
    sl_buf_init(&b, 0);
    sl_buf_init(&expect, 0);
    sl_buf_puts(&b, "c0,c1,c2,c3\n");
    uint64_t *lines = calloc(nrows, sizeof(*lines));
    uint64_t line = 2;
    char field[128];
    for (size_t i = 0; i < nrows; i++) {
        lines[i] = line;
        sl_buf_putc(&expect, '{');
        for (size_t c = 0; c < ncols; c++) {
            size_t len = (size_t)(rand() % 40);
            for (size_t k = 0; k < len; k++) {
                field[k] = alphabet[rand() % (sizeof(alphabet) - 1)];
            }
            if (c == 0 && len == 0) {
                field[len++] = 'e'; /* keep rows non-blank */
            }
            int quote = memchr(field, ',', len) || memchr(field, '"', len) ||
                        memchr(field, '\n', len) || memchr(field, '\r', len) || rand() % 4 == 0;
            if (c) {
                sl_buf_putc(&b, ',');
                sl_buf_putc(&expect, ',');
            }
            sl_buf_printf(&expect, "\"c%zu\":\"", c);
            sl_json_escape(&expect, field, len);
            sl_buf_putc(&expect, '"');
            if (quote) {
                sl_buf_putc(&b, '"');
                for (size_t k = 0; k < len; k++) {
                    if (field[k] == '"') {
                        sl_buf_putc(&b, '"');
                    }
                    if (field[k] == '\n') {
                        line++;
                    }
                    sl_buf_putc(&b, field[k]);
                }
                sl_buf_putc(&b, '"');
            } else {
                sl_buf_append(&b, field, len);
            }
        }
        sl_buf_puts(&b, rand() % 2 ? "\r\n" : "\n");
        sl_buf_putc(&expect, '}');
        sl_buf_putc(&expect, '\n');
        line++;
    }
    const char *path = tmp_path("random.csv");
    write_file(path, b.data, b.len);
    rows r;
    read_file_rows(path, NULL, 0, &r);
    assert_int_equal(r.n, nrows);
    const char *e = expect.data;
    for (size_t i = 0; i < nrows; i++) {
        const char *nl = strchr(e, '\n');
        if (r.v[i].status != SL_REC_OK || strlen(r.v[i].json) != (size_t)(nl - e) ||
            memcmp(r.v[i].json, e, (size_t)(nl - e)) != 0) {
            fail_msg("row %zu (line %llu): got %s (%s), want %.*s", i, (unsigned long long)lines[i],
                     r.v[i].json, r.v[i].reason, (int)(nl - e), e);
        }
        assert_int_equal(r.v[i].line, lines[i]);
        e = nl + 1;
    }
    rows_free(&r);
    free(lines);
    sl_buf_free(&b);
    sl_buf_free(&expect);
}

static void test_resume_checks(void **state)
{
    (void)state;
    const char *path = tmp_path("users.csv");
    write_file(path, "id,email\n1,a@x\n2,b@x\n3,c@x\n", 27);
    src s;
    sl_error err;
    assert_int_equal(src_open(&s, path, NULL, 0, &err), 0);
    sl_buf cp;
    sl_buf_init(&cp, 0);
    assert_int_equal(sl_source_csv.checkpoint(s.self, 15, 3, &cp, &err), 0);
    src_close(&s);
    json_t *j = json_loads(sl_buf_cstr(&cp), 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "offset")), 15);
    assert_int_equal(json_integer_value(json_object_get(j, "line")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "size")), 27);
    assert_true(json_integer_value(json_object_get(j, "mtime")) > 0);
    assert_string_equal(json_string_value(json_object_get(j, "input")), path);
    assert_int_equal(json_array_size(json_object_get(j, "columns")), 2);
    json_decref(j);

    /* unchanged: resumes at row 2 */
    assert_int_equal(src_open(&s, path, NULL, 0, &err), 0);
    assert_int_equal(sl_source_csv.resume(s.self, sl_buf_cstr(&cp), &err), 0);
    rows r;
    read_rows(&s, &r);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.v[0].line, 3);
    assert_string_equal(r.v[0].json, "{\"id\":\"2\",\"email\":\"b@x\"}");
    rows_free(&r);
    src_close(&s);

    char want[512];
    /* header changed */
    write_file(path, "id,mail\n1,a@x\n2,b@x\n3,c@xy\n", 27);
    assert_int_equal(src_open(&s, path, NULL, 0, &err), 0);
    assert_true(sl_source_csv.resume(s.self, sl_buf_cstr(&cp), &err) < 0);
    snprintf(want, sizeof(want), "%s: header changed since the interrupted run; use --from-start",
             path);
    assert_string_equal(err.msg, want);
    src_close(&s);

    /* same header, the file changed */
    write_file(path, "id,email\n1,a@x\n2,b@x\n3,c@x\n4,d@x\n", 33);
    assert_int_equal(src_open(&s, path, NULL, 0, &err), 0);
    assert_true(sl_source_csv.resume(s.self, sl_buf_cstr(&cp), &err) < 0);
    snprintf(want, sizeof(want), "%s: the input changed since the interrupted run (size 27 -> 33",
             path);
    assert_memory_equal(err.msg, want, strlen(want));
    assert_non_null(strstr(err.msg, "use --from-start"));
    src_close(&s);

    /* a different input */
    const char *other = tmp_path("other.csv");
    write_file(other, "id,email\n1,a@x\n2,b@x\n3,c@x\n", 27);
    assert_int_equal(src_open(&s, other, NULL, 0, &err), 0);
    assert_true(sl_source_csv.resume(s.self, sl_buf_cstr(&cp), &err) < 0);
    assert_non_null(strstr(err.msg, "the interrupted run was reading"));
    src_close(&s);

    /* garbage checkpoint */
    assert_int_equal(src_open(&s, other, NULL, 0, &err), 0);
    assert_true(sl_source_csv.resume(s.self, "{not json", &err) < 0);
    assert_non_null(strstr(err.msg, "checkpoint is not a JSON object"));
    src_close(&s);

    /* an offset past the end (file truncated while keeping size/mtime is
     * impossible, so forge one) */
    assert_int_equal(src_open(&s, other, NULL, 0, &err), 0);
    sl_buf_reset(&cp);
    assert_int_equal(sl_source_csv.checkpoint(s.self, 5000, 9, &cp, &err), 0);
    assert_true(sl_source_csv.resume(s.self, sl_buf_cstr(&cp), &err) < 0);
    assert_non_null(strstr(err.msg, "cannot read up to the checkpoint (byte 5000)"));
    src_close(&s);
    sl_buf_free(&cp);
}

static void set_mtime(const char *path, time_t t)
{
    struct timespec ts[2] = {{t, 0}, {t, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

/* A file rewritten in place with the same size and mtime is not resumed:
 * the checkpoint carries a fingerprint of the content before it. */
static void test_resume_same_size_same_mtime(void **state)
{
    (void)state;
    const char *path = tmp_path("rewritten.csv");
    write_file(path, "id,email\n1,a@x\n2,b@x\n3,c@x\n", 27);
    set_mtime(path, 1700000000);
    src s;
    sl_error err;
    sl_buf cp;
    sl_buf_init(&cp, 0);
    assert_int_equal(src_open(&s, path, NULL, 0, &err), 0);
    assert_int_equal(sl_source_csv.checkpoint(s.self, 15, 3, &cp, &err), 0);
    src_close(&s);
    write_file(path, "id,email\n1,z@x\n2,b@x\n3,c@x\n", 27); /* row 1 changed */
    set_mtime(path, 1700000000);
    assert_int_equal(src_open(&s, path, NULL, 0, &err), 0);
    assert_true(sl_source_csv.resume(s.self, sl_buf_cstr(&cp), &err) < 0);
    char want[512];
    snprintf(want, sizeof(want),
             "%s: the input changed since the interrupted run: its first 27 bytes differ (same "
             "name, size and modification time); use --from-start",
             path);
    assert_string_equal(err.msg, want);
    src_close(&s);

    /* a larger file: a row changed between the first 64 KB and the
     * checkpoint is caught by the prefix fingerprint; a change after the
     * checkpoint is not the resume's business */
    sl_buf b;
    sl_buf_init(&b, 0);
    sl_buf_printf(&b, "id,email\n");
    for (int i = 0; i < 20000; i++) {
        sl_buf_printf(&b, "%05d,user%05d@example.org\n", i, i); /* 28 bytes */
    }
    char *body = (char *)sl_buf_cstr(&b);
    uint64_t ck = 9 + 28 * 6000; /* row 6000: byte 168009 */
    write_file(path, body, b.len);
    set_mtime(path, 1700000000);
    assert_int_equal(src_open(&s, path, NULL, 0, &err), 0);
    sl_buf_reset(&cp);
    assert_int_equal(sl_source_csv.checkpoint(s.self, ck, 6002, &cp, &err), 0);
    src_close(&s);
    json_t *j = json_loads(sl_buf_cstr(&cp), 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "head_len")), 65536);
    assert_int_equal(json_integer_value(json_object_get(j, "prefix_len")), 131072);
    json_decref(j);

    char was = body[9 + 28 * 4000 + 10];
    body[9 + 28 * 4000 + 10] = 'X'; /* row 4000: byte ~112000 */
    write_file(path, body, b.len);
    set_mtime(path, 1700000000);
    assert_int_equal(src_open(&s, path, NULL, 0, &err), 0);
    assert_true(sl_source_csv.resume(s.self, sl_buf_cstr(&cp), &err) < 0);
    assert_non_null(strstr(err.msg, "its first 131072 bytes (rows already delivered) are not the "
                                    "same; use --from-start"));
    src_close(&s);

    body[9 + 28 * 4000 + 10] = was;
    body[9 + 28 * 7000 + 10] = 'X'; /* after the checkpoint */
    write_file(path, body, b.len);
    set_mtime(path, 1700000000);
    assert_int_equal(src_open(&s, path, NULL, 0, &err), 0);
    assert_int_equal(sl_source_csv.resume(s.self, sl_buf_cstr(&cp), &err), 0);
    rows r;
    read_rows(&s, &r);
    assert_int_equal(r.n, 14000);
    assert_string_equal(r.v[0].json, "{\"id\":\"06000\",\"email\":\"user06000@example.org\"}");
    rows_free(&r);
    src_close(&s);
    sl_buf_free(&b);
    sl_buf_free(&cp);
}

/* path "-": read from stdin; a resume is refused (stdin cannot be proven to
 * carry the same input as the interrupted run). */
static void test_stdin_resume(void **state)
{
    (void)state;
    const char *csv = "id,v\n1,a\n2,b\n3,c\n";
    size_t len = strlen(csv);
    int saved = dup(STDIN_FILENO);
    assert_true(saved >= 0);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], csv, len), (ssize_t)len);
    close(fds[1]);
    assert_int_equal(dup2(fds[0], STDIN_FILENO), STDIN_FILENO);
    close(fds[0]);

    src s;
    sl_error err;
    assert_int_equal(src_open(&s, "-", NULL, 0, &err), 0);
    assert_string_equal(sl_source_csv.input_name(s.self), "stdin");
    sl_buf cp;
    sl_buf_init(&cp, 0);
    /* row "3,c" starts at byte 13, line 4 */
    assert_int_equal(sl_source_csv.checkpoint(s.self, 13, 4, &cp, &err), 0);
    assert_non_null(strstr(sl_buf_cstr(&cp), "\"size\":-1,\"mtime\":0"));
    assert_true(sl_source_csv.resume(s.self, sl_buf_cstr(&cp), &err) < 0);
    assert_string_equal(
        err.msg, "stdin: an interrupted run stopped before line 4, but stdin cannot be "
                 "proven to carry the same input again; use --from-start to send it from "
                 "the beginning (rows delivered before are sent again), or give a file path");
    src_close(&s);
    sl_buf_free(&cp);
    assert_int_equal(dup2(saved, STDIN_FILENO), STDIN_FILENO);
    close(saved);
}

static char http_seen_key[64];

static enum MHD_Result serve_csv(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    (void)url;
    (void)method;
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)con_cls;
    const char *body = cls;
    const char *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Api-Key");
    snprintf(http_seen_key, sizeof(http_seen_key), "%s", key ? key : "");
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result rc = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* An http URL with http_headers: the header is sent, the name in messages
 * carries neither the query nor the userinfo. */
static void test_http_source(void **state)
{
    (void)state;
    static const char body[] = "id,v\n1,a\n2\n";
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL,
                                            serve_csv, (void *)body, MHD_OPTION_END);
    assert_non_null(d);
    unsigned port = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port;
    char url[200], name[200];
    snprintf(url, sizeof(url), "http://u:p@127.0.0.1:%u/exports/users.csv?sig=abc", port);
    snprintf(name, sizeof(name), "http://127.0.0.1:%u/exports/users.csv", port);
    const char *opt[] = {"http_headers={X-Api-Key: k3y-value}"};
    src s;
    sl_error err;
    if (src_open(&s, url, opt, 1, &err) != 0) {
        fail_msg("%s", err.msg);
    }
    assert_string_equal(http_seen_key, "k3y-value");
    assert_string_equal(sl_source_csv.input_name(s.self), name);
    rows r;
    read_rows(&s, &r);
    assert_int_equal(r.n, 2);
    char want[300];
    snprintf(want, sizeof(want), "%s:3: row has 1 field, expected 2 (header)", name);
    assert_string_equal(r.v[1].reason, want);
    rows_free(&r);
    src_close(&s);
    MHD_stop_daemon(d);
}

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* Not a pass/fail: prints rows/s when CSV_BENCH=1. */
static void test_bench(void **state)
{
    (void)state;
    if (!getenv("CSV_BENCH")) {
        skip();
    }
    size_t nrows = 1000000;
    const char *path = tmp_path("bench.csv");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("external_id,email,first_name,last_name,zip,phone,city,country,score,active\n", f);
    for (size_t i = 0; i < nrows; i++) {
        fprintf(f, "%zu,u%zu@ex.org,Ann,Lee,%05zu,555%07zu,Lyon,FR,%zu,%s\n", i, i, i % 100000, i,
                i % 100, i % 2 ? "true" : "false");
    }
    fclose(f);
    const char *quoted = tmp_path("bench_q.csv");
    f = fopen(quoted, "wb");
    fputs("external_id,email,first_name,last_name,zip,phone,city,country,score,active\n", f);
    for (size_t i = 0; i < nrows; i++) {
        fprintf(f,
                "\"%zu\",\"u%zu@ex.org\",\"Ann\",\"Lee\",\"%05zu\",\"555%07zu\",\"Lyon\",\"FR\","
                "\"%zu\",\"%s\"\n",
                i, i, i % 100000, i, i % 100, i % 2 ? "true" : "false");
    }
    fclose(f);
    const char *escaped = tmp_path("bench_e.csv");
    f = fopen(escaped, "wb");
    fputs("external_id,email,first_name,last_name,zip,phone,city,country,score,active\n", f);
    for (size_t i = 0; i < nrows; i++) {
        fprintf(f, "%zu,u%zu@ex.org,\"Ann \"\"A\"\"\",Lee,%05zu,555%07zu,Lyon,FR,%zu,%s\n", i, i,
                i % 100000, i, i % 100, i % 2 ? "true" : "false");
    }
    fclose(f);
    const char *files[] = {path, quoted, escaped};
    const char *label[] = {"unquoted", "all fields quoted", "one \"\" escape per row (libcsv)"};
    for (int k = 0; k < 3; k++) {
        struct stat st;
        stat(files[k], &st);
        src s;
        sl_error err;
        assert_int_equal(src_open(&s, files[k], NULL, 0, &err), 0);
        sl_record rec;
        sl_record_init(&rec);
        double t0 = now_s();
        size_t n = 0;
        uint64_t next;
        for (;;) {
            sl_record_reset(&rec);
            int rc = sl_source_csv.next(s.self, &rec, &next, &err);
            assert_true(rc >= 0);
            if (rc == 0) {
                break;
            }
            n++;
        }
        double dt = now_s() - t0;
        assert_int_equal(n, nrows);
        printf("csv source, %s: %zu rows (%.0f MB) in %.3f s = %.2f M rows/s, %.0f MB/s "
               "(target >= 1.5 M rows/s)\n",
               label[k], n, st.st_size / 1e6, dt, n / dt / 1e6, st.st_size / dt / 1e6);
        sl_record_free(&rec);
        src_close(&s);
    }
}
/* A header and a file name that are not UTF-8 (Latin-1 exports): the
 * checkpoint stores them through the JSON writer (U+FFFD for such bytes),
 * and resume must still recognise them as the same (found by fuzz_csv). */
static void test_resume_latin1_header(void **state)
{
    (void)state;
    const char *path = tmp_path("stra\xdf"
                                "e.csv");
    write_file(path,
               "id,stra\xdf"
               "e\n1,a\n2,b\n3,c\n",
               22);
    src s;
    sl_error err;
    assert_int_equal(src_open(&s, path, NULL, 0, &err), 0);
    sl_buf cp;
    sl_buf_init(&cp, 0);
    assert_int_equal(sl_source_csv.checkpoint(s.self, 14, 3, &cp, &err), 0);
    src_close(&s);
    assert_non_null(strstr(sl_buf_cstr(&cp), "\"stra\xef\xbf\xbd"
                                             "e\""));

    assert_int_equal(src_open(&s, path, NULL, 0, &err), 0);
    if (sl_source_csv.resume(s.self, sl_buf_cstr(&cp), &err) != 0) {
        fail_msg("resume: %s", err.msg);
    }
    rows r;
    read_rows(&s, &r);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.v[0].pos, 14);
    assert_int_equal(r.v[0].line, 3);
    assert_string_equal(r.v[0].json, "{\"id\":\"2\",\"stra\xef\xbf\xbd"
                                     "e\":\"b\"}");
    rows_free(&r);
    src_close(&s);

    /* another header of the same size is still seen as changed */
    write_file(path,
               "id,stra\xdf"
               "f\n1,a\n2,b\n3,c\n",
               22);
    assert_int_equal(src_open(&s, path, NULL, 0, &err), 0);
    assert_true(sl_source_csv.resume(s.self, sl_buf_cstr(&cp), &err) < 0);
    assert_non_null(strstr(err.msg, "header changed since the interrupted run"));
    src_close(&s);
    sl_buf_free(&cp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_bom_crlf),
        cmocka_unit_test(test_quoted_newlines_line_numbers),
        cmocka_unit_test(test_ragged_and_malformed),
        cmocka_unit_test(test_overlong_and_unterminated),
        cmocka_unit_test(test_blank_lines),
        cmocka_unit_test(test_header_errors),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_offsets_resume_property),
        cmocka_unit_test(test_random_roundtrip),
        cmocka_unit_test(test_resume_checks),
        cmocka_unit_test(test_resume_same_size_same_mtime),
        cmocka_unit_test(test_resume_latin1_header),
        cmocka_unit_test(test_stdin_resume),
        cmocka_unit_test(test_http_source),
        cmocka_unit_test(test_bench),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
