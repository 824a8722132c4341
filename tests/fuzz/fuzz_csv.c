/* libFuzzer harness: the CSV source over arbitrary bytes.
 *
 * Input layout: the first byte selects the options (see opts_for), the rest
 * is the file, handed to the source as /proc/self/fd/N of a memfd (no disk,
 * nothing shared between runs). Every record is checked against the source
 * contract (plugin.h: next); each accepted row is parsed again here by
 * libcsv alone, configured like the source, and must give the same fields
 * (the source splits most rows itself, promising libcsv's result), and a
 * row's raw bytes (record.h) must be the row as it is in the input. The run
 * is then repeated from a checkpoint taken at one record, in a fresh
 * instance: resuming must reproduce exactly the records the first pass
 * produced from there on. Any violation aborts. */
#include <csv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config/config.h"
#include "core/ctx.h"
#include "core/registry.h"
#include "sluice/plugin.h"

/* Records looked at per input: keeps a decompression bomb (compression is
 * auto-detected) within the time limit; the invariants hold on any prefix. */
#define MAX_RECORDS 5000

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_csv: invariant failed: %s (%s:%d)\n", #cond, __FILE__,           \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const sl_source_plugin *csv;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    sl_log_level = SL_LOG_ERROR;
    csv = sl_find_source("csv");
    if (!csv) {
        abort();
    }
    return 0;
}

/* The parsing settings a selector byte stands for (see opts_for). */
typedef struct dialect {
    unsigned char delim, quote;
    int trim, empty_null;
} dialect;

static dialect dialect_of(unsigned char sel)
{
    static const unsigned char delims[] = {',', ';', '\t', '|'};
    dialect d;
    d.delim = delims[sel & 3];
    d.quote = sel & 0x04 ? '\'' : '"';
    d.trim = (sel & 0x10) != 0;
    d.empty_null = (sel & 0x20) != 0;
    return d;
}

/* Options from the selector byte: every parsing mode gets fuzzed. */
static size_t opts_for(unsigned char sel, char store[][48], const char **pairs, const char *path)
{
    static const char *const delims[] = {",", ";", "\\t", "|"};
    size_t n = 0;
    snprintf(store[n], sizeof(store[n]), "path=%s", path);
    pairs[n] = store[n];
    n++;
    snprintf(store[n], sizeof(store[n]), "delimiter=%s", delims[sel & 3]);
    pairs[n] = store[n];
    n++;
    pairs[n++] = sel & 0x04 ? "quote='" : "quote=\"";
    if (sel & 0x08) {
        pairs[n++] = "header=false";
        pairs[n++] = "columns=a,b,c";
    }
    pairs[n++] = sel & 0x10 ? "trim=true" : "trim=false";
    pairs[n++] = sel & 0x20 ? "empty_is_null=true" : "empty_is_null=false";
    pairs[n++] = sel & 0x40 ? "skip_blank_lines=false" : "skip_blank_lines=true";
    /* 64 bytes is the smallest allowed: long-row and unterminated-quote
     * handling is then reached by small inputs */
    pairs[n++] = sel & 0x80 ? "max_row_bytes=64" : "max_row_bytes=1MB";
    return n;
}

/* Append everything observable about one record (raw bytes, no escaping, so
 * different values never serialize alike). */
static void digest(sl_buf *d, const sl_record *r, uint64_t next_pos)
{
    sl_buf_printf(d, "pos=%llu line=%llu next=%llu nline=%llu st=%d stage=%d nf=%u reason=",
                  (unsigned long long)r->pos, (unsigned long long)r->line,
                  (unsigned long long)next_pos, (unsigned long long)r->next_line, r->status,
                  r->stage, r->nfields);
    sl_buf_append(d, r->reason.data ? r->reason.data : "", r->reason.len);
    sl_buf_printf(d, " raw=%u:", r->raw_len);
    if (r->raw_len) {
        sl_buf_append(d, r->data.data + r->raw_off, r->raw_len);
    }
    for (uint32_t i = 0; i < r->nfields; i++) {
        const sl_field *f = &r->fields[i];
        sl_buf_printf(d, "|%u:", f->name_len);
        sl_buf_append(d, f->name, f->name_len);
        sl_buf_printf(d, " t%d f%d ", f->type, f->flags);
        if (f->type == SL_T_STRING || f->type == SL_T_JSON) {
            sl_buf_printf(d, "%u:", f->v.s.len);
            sl_buf_append(d, sl_field_str(r, f), f->v.s.len);
        }
    }
    sl_buf_putc(d, '\n');
}

/* ------------------------------------------------ libcsv cross-check */

typedef struct ref {
    const sl_record *rec;
    size_t nf;
    int bad;
    int empty_null;
} ref;

static int ref_no_space(unsigned char c)
{
    (void)c;
    return 0;
}

static int ref_space_tab(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static int ref_space_only(unsigned char c)
{
    return c == ' ';
}

static int ref_no_term(unsigned char c)
{
    (void)c;
    return 0;
}

/* Field number nf of libcsv's parse against the record's. */
static void ref_field(void *v, size_t len, void *data)
{
    ref *r = data;
    size_t i = r->nf++;
    if (i >= r->rec->nfields) {
        r->bad = 1;
        return;
    }
    const sl_field *f = &r->rec->fields[i];
    if (!v && r->empty_null) {
        r->bad |= f->type != SL_T_NULL;
        return;
    }
    if (!v) {
        len = 0;
    }
    r->bad |= f->type != SL_T_STRING || f->v.s.len != len ||
              (len && memcmp(sl_field_str(r->rec, f), v, len) != 0);
}

/* An accepted row's bytes (line ending excluded) parsed by libcsv strictly,
 * with the source's settings, give exactly the record's fields. */
static void cross_check(const dialect *d, const sl_record *rec, const uint8_t *row, size_t len)
{
    struct csv_parser p;
    CHECK(csv_init(&p, CSV_STRICT | CSV_STRICT_FINI | (d->empty_null ? CSV_EMPTY_IS_NULL : 0)) ==
          0);
    csv_set_delim(&p, d->delim);
    csv_set_quote(&p, d->quote);
    csv_set_term_func(&p, ref_no_term);
    csv_set_space_func(&p, !d->trim           ? ref_no_space
                           : d->delim == '\t' ? ref_space_only
                                              : ref_space_tab);
    ref r = {rec, 0, 0, d->empty_null};
    size_t done = csv_parse(&p, row, len, ref_field, NULL, &r);
    int fini = done == len ? csv_fini(&p, ref_field, NULL, &r) : -1;
    csv_free(&p);
    if (done == len && fini == 0 && r.nf == 0) {
        /* libcsv sees no field in an empty row (or one of only spaces with
         * trim); the source makes it one empty field. With empty_is_null
         * that is NULL for an empty line but "" for a line of spaces, so
         * either is accepted then. */
        const sl_field *f = rec->nfields == 1 ? &rec->fields[0] : NULL;
        int empty_str = f && f->type == SL_T_STRING && f->v.s.len == 0;
        r.bad = !(empty_str || (f && d->empty_null && f->type == SL_T_NULL));
        r.nf = 1;
    }
    if (done != len || fini != 0 || r.bad || r.nf != rec->nfields) {
        fprintf(stderr,
                "fuzz_csv: line %llu: the source's fields differ from libcsv's parse of the "
                "row (libcsv: %s, %zu fields; record: %u fields)\n",
                (unsigned long long)rec->line, done != len || fini != 0 ? "refused" : "parsed",
                r.nf, rec->nfields);
        abort();
    }
}

typedef struct pass {
    sl_opts *opts;
    sl_ctx *ctx;
    void *self;
} pass;

static int pass_open(pass *p, const char *const *pairs, size_t n)
{
    sl_buf errs;
    sl_error err;
    memset(p, 0, sizeof(*p));
    sl_buf_init(&errs, 0);
    sl_error_clear(&err);
    p->opts = sl_opts_from_pairs(csv->options, pairs, n, &errs);
    /* the harness's own options are always valid */
    CHECK(p->opts != NULL);
    sl_buf_free(&errs);
    p->ctx = sl_ctx_new("fuzz", "source", "csv", NULL, 0, NULL);
    CHECK(p->ctx != NULL);
    int rc = csv->init(&p->self, p->opts, p->ctx, &err);
    if (rc != 0) {
        /* refusing the input is fine, but with a reason */
        CHECK(rc < 0);
        CHECK(err.msg[0] != '\0');
        p->self = NULL;
    }
    return rc;
}

static void pass_close(pass *p)
{
    if (p->self) {
        csv->destroy(p->self);
    }
    sl_ctx_free(p->ctx);
    sl_opts_free(p->opts);
    memset(p, 0, sizeof(*p));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    const unsigned char sel = data[0];
    const dialect dl = dialect_of(sel);
    const uint8_t *file = data + 1;
    const size_t flen = size - 1;
    /* compressed input: positions are offsets in the decompressed stream */
    const int compressed = (flen >= 2 && file[0] == 0x1f && file[1] == 0x8b) ||
                           (flen >= 3 && memcmp(file, "BZh", 3) == 0);

    int fd = memfd_create("fuzz_csv", MFD_CLOEXEC);
    CHECK(fd >= 0);
    size_t off = 0;
    while (off < flen) {
        ssize_t w = write(fd, file + off, flen - off);
        CHECK(w > 0);
        off += (size_t)w;
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

    char store[4][48];
    const char *pairs[16];
    size_t npairs = opts_for(sel, store, pairs, path);

    pass a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    sl_record rec;
    sl_record_init(&rec);
    sl_buf cp, d1, d2;
    sl_buf_init(&cp, 0);
    sl_buf_init(&d1, 0);
    sl_buf_init(&d2, 0);
    /* the checkpointed record: its position, line and digest offset */
    uint64_t cp_pos = 0, cp_line = 0;
    size_t cp_digest = 0;
    /* where each record starts: position, line, offset of its digest */
    typedef struct start {
        uint64_t pos, line;
        size_t doff;
    } start;
    start *starts = NULL;

    if (pass_open(&a, pairs, npairs) != 0) {
        goto done;
    }
    size_t ncols = 0;
    const char *const *cols = csv->columns(a.self, &ncols);
    CHECK(ncols >= 1 && cols != NULL);
    for (size_t i = 0; i < ncols; i++) {
        CHECK(cols[i] && cols[i][0]);
    }

    /* Which record to checkpoint at: one chosen by the input, so every
     * position gets tried over a campaign. */
    starts = malloc(MAX_RECORDS * sizeof(*starts));
    CHECK(starts != NULL);
    uint64_t prev_next = 0, prev_next_line = 0;
    size_t nrec = 0;
    sl_error err;
    for (;;) {
        sl_record_reset(&rec);
        uint64_t next_pos = UINT64_MAX;
        sl_error_clear(&err);
        int rc = csv->next(a.self, &rec, &next_pos, &err);
        if (rc < 0) {
            CHECK(err.msg[0] != '\0');
            break;
        }
        if (rc == 0) {
            break;
        }
        CHECK(rc == 1);
        /* positions strictly increase and never pass the input */
        CHECK(rec.pos >= prev_next);
        CHECK(next_pos > rec.pos);
        CHECK(compressed || next_pos <= flen);
        /* lines: 1-based, increasing, the next record starts at or after
         * where this one said the input continues */
        CHECK(rec.line >= 1);
        CHECK(rec.line >= prev_next_line);
        CHECK(rec.next_line > rec.line);
        CHECK(rec.status == SL_REC_OK || rec.status == SL_REC_REJECTED);
        if (rec.status == SL_REC_REJECTED) {
            CHECK(rec.stage == SL_STAGE_SOURCE);
            CHECK(rec.reason.len > 0);
        } else {
            /* an accepted row has exactly the columns, in order */
            CHECK(rec.nfields == ncols);
            for (uint32_t i = 0; i < rec.nfields; i++) {
                CHECK(rec.fields[i].name == cols[i]);
            }
        }
        /* the row as it is in the input: [pos, next_pos) without its
         * line ending (LF, or CRLF; a CR before the end of input too) */
        const uint8_t *row = compressed ? file : file + rec.pos;
        size_t row_len = compressed ? 0 : (size_t)(next_pos - rec.pos);
        if (row_len && row[row_len - 1] == '\n') {
            row_len--;
        }
        if (row_len && row[row_len - 1] == '\r') {
            row_len--;
        }
        if (rec.status == SL_REC_OK && !compressed) {
            cross_check(&dl, &rec, row, row_len);
        }
        if (rec.raw_len) {
            CHECK(rec.status == SL_REC_OK);
            CHECK((size_t)rec.raw_off + rec.raw_len <= rec.data.len);
            CHECK(compressed || (rec.raw_len == row_len &&
                                 memcmp(rec.data.data + rec.raw_off, row, row_len) == 0));
        }
        for (uint32_t i = 0; i < rec.nfields; i++) {
            const sl_field *f = &rec.fields[i];
            CHECK(f->type == SL_T_STRING || f->type == SL_T_NULL);
            if (f->type == SL_T_STRING) {
                CHECK((size_t)f->v.s.off + f->v.s.len < rec.data.len);
                CHECK(sl_field_str(&rec, f)[f->v.s.len] == '\0');
            }
        }
        starts[nrec].pos = rec.pos;
        starts[nrec].line = rec.line;
        starts[nrec].doff = d1.len;
        digest(&d1, &rec, next_pos);
        prev_next = next_pos;
        prev_next_line = rec.next_line;
        if (++nrec >= MAX_RECORDS) {
            break;
        }
    }
    /* the first pass stopped early: compare only as many records */
    const int truncated = nrec >= MAX_RECORDS;
    /* The record to resume at: chosen by the input, so every position
     * gets tried over a campaign; nrec = at the end, which must produce
     * nothing more (unless the first pass stopped early). */
    if (nrec == 0) {
        goto done;
    }
    size_t cp_index = (size * 7 + sel) % (nrec + (truncated ? 0 : 1));
    if (cp_index < nrec) {
        cp_pos = starts[cp_index].pos;
        cp_line = starts[cp_index].line;
        cp_digest = starts[cp_index].doff;
    } else {
        cp_pos = prev_next;
        cp_line = prev_next_line;
        cp_digest = d1.len;
    }
    const size_t want = nrec - cp_index;
    sl_error_clear(&err);
    CHECK(csv->checkpoint(a.self, cp_pos, cp_line, &cp, &err) == 0);

    /* Second pass: a fresh instance resumed at the checkpoint. */
    if (pass_open(&b, pairs, npairs) != 0) {
        abort(); /* the same input opened fine once already */
    }
    sl_error_clear(&err);
    if (csv->resume(b.self, sl_buf_cstr(&cp), &err) != 0) {
        fprintf(stderr, "fuzz_csv: resume refused its own checkpoint %s: %s\n", sl_buf_cstr(&cp),
                err.msg);
        abort();
    }
    size_t n_second = 0;
    /* one record more than expected is enough to show a difference */
    while (n_second < want || (!truncated && n_second == want)) {
        sl_record_reset(&rec);
        uint64_t next_pos = UINT64_MAX;
        sl_error_clear(&err);
        if (csv->next(b.self, &rec, &next_pos, &err) <= 0) {
            break;
        }
        digest(&d2, &rec, next_pos);
        n_second++;
    }
    const char *rest = d1.len ? d1.data + cp_digest : "";
    const size_t rest_len = d1.len - cp_digest;
    if (d2.len != rest_len || (rest_len && memcmp(d2.data, rest, rest_len) != 0)) {
        fprintf(stderr,
                "fuzz_csv: resuming at %s does not reproduce the rest of the input\n"
                "--- first pass (from the checkpoint):\n%.*s\n--- resumed:\n%s\n",
                sl_buf_cstr(&cp), (int)rest_len, rest, sl_buf_cstr(&d2));
        abort();
    }

done:
    free(starts);
    pass_close(&b);
    pass_close(&a);
    sl_record_free(&rec);
    sl_buf_free(&cp);
    sl_buf_free(&d1);
    sl_buf_free(&d2);
    close(fd);
    sl_secrets_clear();
    return 0;
}
