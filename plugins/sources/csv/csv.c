/* CSV source: a file, stdin or an http(s) URL (gzip/bzip2 aware) -> one record
 * per row, fields named by the header. See docs/sources/csv.md.
 *
 * Rows are found here, not by libcsv: a line feed outside quotes ends a row
 * (CRLF or LF), a quote opens a quoted section only at the start of a field,
 * and quoted line feeds stay inside the row. That gives every row an exact
 * byte offset in the decompressed stream (the checkpoint), and lets one bad
 * row be rejected without losing the rest of the file. A row holding the
 * quote character is then parsed by libcsv (strict). Two shapes have nothing
 * to interpret and are split directly, giving libcsv's fields several times
 * faster: rows without a quote, and rows whose quoted fields are plain
 * "text" (no "" escape, nothing after the closing quote).
 *
 * Memory is constant: one window of max_row_bytes + 256 KB over the input,
 * reused libcsv parsers, and the record's own arena for values. */
#include <csv.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/csv.h"
#include "sluice/guard.h"
#include "sluice/plugin.h"
#include "sluice/reader.h"

#define CSV_CHUNK ((size_t)256 * 1024)
#define CSV_MIN_ROW ((int64_t)64)
/* Well under the record arena's 64 MB: a row's values always fit a record. */
#define CSV_MAX_ROW ((int64_t)32 * 1024 * 1024)
/* Fields beyond the header get generated names "_colN" up to this position;
 * later ones are left out of the (rejected) record and counted in its reason. */
#define CSV_MAX_EXTRA 1000
/* A dead letter for an over-long row shows at most this much of its first line. */
#define CSV_SHOW_MAX ((size_t)64 * 1024)
/* Content fingerprint (see "Fingerprints" below): the running SHA-256 of the
 * decompressed stream is snapshotted every CSV_SNAP_EVERY bytes; the first
 * snapshot is the input's "head", its quick identity. */
#define CSV_SNAP_EVERY ((uint64_t)64 * 1024)
#define CSV_SNAP_MAX 4096
/* Inputs remembered as delivered completely (oldest forgotten first). */
#define CSV_LEDGER_MAX 200
#define CSV_LEDGER_KEY "delivered"

static const sl_option csv_options[] = {
    {"path", SL_OPT_STRING, NULL, SL_OPT_REQUIRED, NULL,
     "file path, \"-\" for stdin, or an http(s):// URL"},
    {"compression", SL_OPT_ENUM, "auto", 0, "auto|none|gzip|bzip2",
     "auto: by the .gz/.bz2 extension and the content's magic bytes"},
    SL_CSV_PARSE_OPTIONS,
    {"http_headers", SL_OPT_MAP, NULL, SL_OPT_SECRET, NULL,
     "request headers sent when path is a URL (values are secrets)"},
    {"allow_hosts", SL_OPT_LIST, NULL, 0, NULL,
     "when set, path must be an https URL on one of these hosts (*.example.com or exact "
     "names; comma/space separated); for paths that come from outside, e.g. a webhook"},
    {"max_download", SL_OPT_SIZE, NULL, 0, NULL,
     "largest accepted download when path is a URL, in bytes as transferred (default: "
     "unlimited)"},
    {"max_decompressed", SL_OPT_SIZE, NULL, 0, NULL,
     "largest accepted input after decompression, in bytes (default: unlimited); a larger "
     "one fails the run naming the input and the limit"},
    {"max_ratio", SL_OPT_INT, "1000", 0, NULL,
     "compressed input may expand at most this many times (checked once 64MB came out; 0 = "
     "no limit): stops a compression bomb early"},
    SL_OPTIONS_END,
};

/* Outcome of looking for the row starting at the window's start. */
enum {
    ROW_OK = 0,
    ROW_END,          /* no more input */
    ROW_MORE,         /* the row continues past the window: read more */
    ROW_TOO_LONG,     /* longer than max_row_bytes */
    ROW_UNTERMINATED, /* the input ends inside a quoted field */
};

typedef struct csv_row {
    size_t off;     /* window index of the first byte */
    size_t len;     /* content bytes, line ending excluded */
    size_t next;    /* window index just past the line ending */
    uint64_t lines; /* line feeds inside the row (quoted) */
    int has_quote;
    int in_quote; /* ROW_TOO_LONG: a quoted field was still open at the cut */
} csv_row;

/* SHA-256 of the stream's first len bytes. */
typedef struct csv_snap {
    uint64_t len;
    unsigned char d[32];
} csv_snap;

typedef struct sl_csv {
    sl_ctx *ctx;
    sl_reader *r;
    char *path;
    char *http_headers;
    sl_guard *guard; /* allow_hosts, or NULL */
    sl_http_opts http;
    unsigned char delim, quote;
    int trim, skip_blank, has_header;
    int empty_null; /* empty unquoted cell -> NULL */
    int raw;        /* offer each row's bytes as rec->raw (see record.h) */
    size_t max_row;

    /* Window over the decompressed stream: buf[start, end) is unread. */
    char *buf;
    size_t cap, start, end;
    uint64_t base; /* stream offset of buf[0] */
    int eof;
    uint64_t line; /* line number of buf[start] */

    char **cols; /* column names: the field names of every record */
    uint32_t *col_len;
    size_t ncols;
    char **extra; /* "_colN" names for fields beyond the header, made on demand */
    size_t nextra;

    uint64_t header_line;
    uint64_t data_pos; /* first byte after the header */
    uint64_t data_line;
    int64_t size;  /* of the input when opened */
    int64_t mtime; /* of a local file when opened */

    struct csv_parser strict, lax;
    int strict_live, lax_live;

    /* Fingerprints (reader thread, except the snapshot ring, which the
     * checkpoint reads from the engine's thread under snap_mu). */
    EVP_MD_CTX *sha, *sha_tmp; /* running SHA-256 of every byte read */
    uint64_t hashed;           /* bytes fed to sha */
    csv_snap head;             /* first min(64 KB, length) bytes; fixed after init */
    int head_done;
    csv_snap whole; /* the whole stream, at end of input */
    int whole_done;
    csv_snap verify;  /* resume: the prefix the checkpoint vouches for */
    int verify_state; /* 0 none, 1 pending, 2 matched, 3 differs */
    pthread_mutex_t snap_mu;
    int snap_mu_live;
    csv_snap *snaps; /* ring of the latest snapshots, oldest at snap_tail */
    size_t snap_tail, nsnaps;
    csv_snap snap_used; /* latest snapshot a checkpoint vouched for */
    char url_sha[65];   /* a URL input: SHA-256 of the URL as configured */
    int refused;        /* already delivered: the run reads nothing */
    int comp;           /* sl_compression asked for */

    /* Per-row parse state for the libcsv callbacks. */
    sl_record *rec;
    size_t nf;
    size_t dropped; /* fields beyond CSV_MAX_EXTRA */
    int add_err;
    int anon;      /* parsing the header: fields get empty placeholder names */
    int malformed; /* the row failed the strict parse */
} csv_src;

/* --------------------------------------------------------------- helpers */

static int no_space(unsigned char c)
{
    (void)c;
    return 0;
}

static int space_only(unsigned char c)
{
    return c == ' ';
}

static int space_tab(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* Rows are delimited by us; libcsv never ends a row on CR or LF. */
static int no_term(unsigned char c)
{
    (void)c;
    return 0;
}

static int is_trim_space(const csv_src *s, unsigned char c)
{
    return c == ' ' || (c == '\t' && s->delim != '\t');
}

static int parser_init(csv_src *s, struct csv_parser *p, unsigned char opts)
{
    if (s->empty_null) {
        opts |= CSV_EMPTY_IS_NULL;
    }
    if (csv_init(p, opts) != 0) {
        return SL_ERR_NOMEM;
    }
    csv_set_delim(p, s->delim);
    csv_set_quote(p, s->quote);
    csv_set_term_func(p, no_term);
    if (!s->trim) {
        csv_set_space_func(p, no_space);
    } else {
        csv_set_space_func(p, s->delim == '\t' ? space_only : space_tab);
    }
    return 0;
}

static const char *extra_name(csv_src *s, size_t i, uint32_t *len)
{
    size_t k = i - s->ncols;
    if (k >= CSV_MAX_EXTRA) {
        return NULL;
    }
    while (s->nextra <= k) {
        if (!s->extra) {
            s->extra = calloc(CSV_MAX_EXTRA, sizeof(*s->extra));
            if (!s->extra) {
                return NULL;
            }
        }
        char tmp[32];
        snprintf(tmp, sizeof(tmp), "_col%zu", s->ncols + s->nextra + 1);
        s->extra[s->nextra] = strdup(tmp);
        if (!s->extra[s->nextra]) {
            return NULL;
        }
        s->nextra++;
    }
    *len = (uint32_t)strlen(s->extra[k]);
    return s->extra[k];
}

/* Add field number s->nf of the current row. */
static void add_field(csv_src *s, const char *v, size_t len)
{
    size_t i = s->nf++;
    const char *name;
    uint32_t nlen;
    if (s->anon) {
        name = "";
        nlen = 0;
    } else if (i < s->ncols) {
        name = s->cols[i];
        nlen = s->col_len[i];
    } else {
        name = extra_name(s, i, &nlen);
        if (!name) {
            s->dropped++;
            return;
        }
    }
    /* v == NULL: an empty unquoted cell (libcsv's CSV_EMPTY_IS_NULL, or the
     * fast splitters below), NULL only when empty_is_null asks for it */
    int rc = !v && s->empty_null ? sl_record_add_null(s->rec, name, nlen)
                                 : sl_record_add_str(s->rec, name, nlen, v ? v : "", v ? len : 0);
    if (rc && !s->add_err) {
        s->add_err = rc;
    }
}

static void cb_field(void *v, size_t len, void *data)
{
    add_field(data, v, len);
}

/* Split a row that holds no quote character: no quoting to undo, so the
 * fields are the bytes between delimiters (trimmed when asked), exactly what
 * libcsv would produce. */
static void split_plain(csv_src *s, const char *p, size_t len)
{
    const char *e = p + len;
    if (s->trim) {
        /* libcsv submits nothing for a row of only spaces. */
        const char *q = p;
        while (q < e && is_trim_space(s, (unsigned char)*q)) {
            q++;
        }
        if (q == e) {
            return;
        }
    }
    for (;;) {
        const char *d = memchr(p, s->delim, (size_t)(e - p));
        const char *fe = d ? d : e;
        const char *fb = p;
        if (s->trim) {
            while (fb < fe && is_trim_space(s, (unsigned char)*fb)) {
                fb++;
            }
            while (fe > fb && is_trim_space(s, (unsigned char)fe[-1])) {
                fe--;
            }
        }
        add_field(s, fe > fb ? fb : NULL, (size_t)(fe - fb));
        if (!d) {
            return;
        }
        p = d + 1;
    }
}

/* Split a row whose quoted fields are all simple ("text" with no quote
 * inside, followed by a delimiter or the end): their value is the text
 * between the quotes. Returns 1, having added nothing useful, as soon as
 * anything else shows up ("" escapes, a stray quote, text after a closing
 * quote, trim): the caller then resets the fields and lets libcsv decide. */
static int split_simple_quoted(csv_src *s, const char *p, size_t len)
{
    const char *e = p + len;
    if (s->trim) {
        return 1;
    }
    for (;;) {
        const char *fb = p;
        const char *fe;
        const char *next;
        if (p < e && (unsigned char)*p == s->quote) {
            const char *cq = memchr(p + 1, s->quote, (size_t)(e - p - 1));
            if (!cq || (cq + 1 < e && (unsigned char)cq[1] != s->delim)) {
                return 1;
            }
            fb = p + 1;
            fe = cq;
            next = cq + 1;
        } else {
            const char *d = memchr(p, s->delim, (size_t)(e - p));
            fe = d ? d : e;
            if (memchr(p, s->quote, (size_t)(fe - p))) {
                return 1;
            }
            next = fe;
            if (fe == fb) {
                fb = NULL; /* empty and unquoted */
            }
        }
        add_field(s, fb, (size_t)(fe - fb));
        if (next == e) {
            return 0;
        }
        p = next + 1;
    }
}

/* Parse one row with libcsv (strict, or lax to salvage a malformed row for
 * its dead letter). Returns 0, or 1 on a strict parse error (*bad_field is
 * the 1-based field where it happened), or <0 on out of memory. */
static int parse_libcsv(csv_src *s, int strict, const char *p, size_t len, size_t *bad_field)
{
    struct csv_parser *cp = strict ? &s->strict : &s->lax;
    size_t done = csv_parse(cp, p, len, cb_field, NULL, s);
    int bad = 0;
    if (done < len) {
        bad = csv_error(cp) == CSV_EPARSE ? 1 : SL_ERR_NOMEM;
    } else if (csv_fini(cp, cb_field, NULL, s) != 0) {
        bad = 1; /* CSV_STRICT_FINI: a quoted field never closed */
    }
    if (bad) {
        *bad_field = s->nf + 1;
        /* libcsv keeps a failed parser's state: start a fresh one. */
        csv_free(cp);
        int *live = strict ? &s->strict_live : &s->lax_live;
        *live = 0;
        int rc = parser_init(s, cp, strict ? (CSV_STRICT | CSV_STRICT_FINI) : 0);
        if (rc) {
            return rc;
        }
        *live = 1;
    }
    return bad;
}

/* Turn one row's bytes into rec's fields. On a malformed row rec is rejected
 * with the reason and the fields a lenient parse finds. <0 only when out of
 * memory. */
static int fill_fields(csv_src *s, sl_record *rec, const char *p, size_t len, int has_quote)
{
    s->rec = rec;
    s->nf = 0;
    s->dropped = 0;
    s->add_err = 0;
    s->malformed = 0;
    if (!has_quote) {
        split_plain(s, p, len);
    } else if (split_simple_quoted(s, p, len) != 0) {
        rec->nfields = 0;
        sl_buf_reset(&rec->data);
        s->nf = 0;
        s->dropped = 0;
        s->add_err = 0;
        size_t bad_field = 0;
        int rc = parse_libcsv(s, 1, p, len, &bad_field);
        if (rc < 0) {
            return rc;
        }
        if (rc == 1) {
            s->malformed = 1;
            rec->nfields = 0;
            sl_buf_reset(&rec->data);
            s->nf = 0;
            s->dropped = 0;
            size_t ignored;
            if (parse_libcsv(s, 0, p, len, &ignored) < 0) {
                return SL_ERR_NOMEM;
            }
            sl_record_reject(rec, SL_STAGE_SOURCE,
                             "%s:%llu: malformed quoting in field %zu (a quote inside an "
                             "unquoted field, text after a closing quote, or a quote never "
                             "closed)",
                             sl_reader_name(s->r), (unsigned long long)rec->line, bad_field);
        }
    }
    if (s->add_err) {
        return s->add_err;
    }
    if (s->nf == 0) {
        add_field(s, "", 0); /* an empty line, or only spaces with trim: one empty field */
    }
    if (s->nf != s->ncols && !s->malformed && !s->anon) {
        char more[64] = "";
        if (s->dropped) {
            snprintf(more, sizeof(more), "; %zu fields past column %d not shown", s->dropped,
                     CSV_MAX_EXTRA);
        }
        sl_record_reject(rec, SL_STAGE_SOURCE, "%s:%llu: row has %zu field%s, expected %zu (%s)%s",
                         sl_reader_name(s->r), (unsigned long long)rec->line, s->nf,
                         s->nf == 1 ? "" : "s", s->ncols, s->has_header ? "header" : "columns",
                         more);
    }
    return s->add_err;
}

/* ------------------------------------------------------------ fingerprints
 *
 * Every byte the source reads (decompressed) goes through one SHA-256, whose
 * state is snapshotted every 64 KB and at the end of input:
 *   - the first snapshot, the "head" (the first min(64 KB, length) bytes), is
 *     the input's quick identity;
 *   - a checkpoint at byte pos carries the head and the latest snapshot at or
 *     before pos (the "prefix"). A resume reads the input up to pos again and
 *     refuses unless both match, so an input rewritten in place (same size,
 *     same mtime) is caught. Only the bytes between the prefix and pos (less
 *     than 64 KB) are not covered. A checkpoint only copies digests computed
 *     by the reader (it is written up to ~1000 times a second);
 *   - the end-of-input digest identifies the whole input: a complete run
 *     records it in the "delivered" ledger, and a later run over the same
 *     content is refused unless --again (see check_delivered).
 * SHA-256 costs about 0.6 ms per MB here (SHA extensions). */

static void hex32(const unsigned char *d, char out[65])
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
    out[64] = '\0';
}

static int sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char d[32];
    if (!EVP_Digest(p, n, d, NULL, EVP_sha256(), NULL)) {
        return SL_ERR;
    }
    hex32(d, out);
    return 0;
}

/* The digest of the bytes hashed so far, the running state left as it is. */
static void snap_take(csv_src *s, csv_snap *out)
{
    out->len = s->hashed;
    if (!EVP_MD_CTX_copy_ex(s->sha_tmp, s->sha) || !EVP_DigestFinal_ex(s->sha_tmp, out->d, NULL)) {
        memset(out->d, 0, sizeof(out->d)); /* never matches a real digest */
    }
}

static void snap_mark(csv_src *s, const csv_snap *sn)
{
    if (!s->head_done) {
        s->head = *sn;
        s->head_done = 1;
    }
    if (s->verify_state == 1 && s->verify.len == sn->len) {
        s->verify_state = memcmp(s->verify.d, sn->d, 32) == 0 ? 2 : 3;
    }
    pthread_mutex_lock(&s->snap_mu);
    if (s->nsnaps == CSV_SNAP_MAX) { /* the engine is very far behind: forget the oldest */
        s->snap_tail = (s->snap_tail + 1) % CSV_SNAP_MAX;
        s->nsnaps--;
    }
    s->snaps[(s->snap_tail + s->nsnaps) % CSV_SNAP_MAX] = *sn;
    s->nsnaps++;
    pthread_mutex_unlock(&s->snap_mu);
}

static void hash_bytes(csv_src *s, const char *p, size_t n)
{
    while (n > 0) {
        uint64_t to_mark = CSV_SNAP_EVERY - s->hashed % CSV_SNAP_EVERY;
        size_t k = n < to_mark ? n : (size_t)to_mark;
        EVP_DigestUpdate(s->sha, p, k);
        s->hashed += k;
        p += k;
        n -= k;
        if (s->hashed % CSV_SNAP_EVERY == 0) {
            csv_snap sn;
            snap_take(s, &sn);
            snap_mark(s, &sn);
        }
    }
}

static void hash_end(csv_src *s)
{
    if (s->whole_done) {
        return;
    }
    snap_take(s, &s->whole);
    s->whole_done = 1;
    if (s->hashed == 0 || s->hashed % CSV_SNAP_EVERY != 0) {
        snap_mark(s, &s->whole);
    }
}

/* The latest snapshot at or before pos (engine thread). Older ones are not
 * needed again: checkpoints only move forward. */
static csv_snap snap_at(csv_src *s, uint64_t pos)
{
    pthread_mutex_lock(&s->snap_mu);
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < s->nsnaps; i++) {
        const csv_snap *sn = &s->snaps[(s->snap_tail + i) % CSV_SNAP_MAX];
        if (sn->len > pos) {
            break;
        }
        best = i;
    }
    if (best != SIZE_MAX) {
        s->snap_used = s->snaps[(s->snap_tail + best) % CSV_SNAP_MAX];
        s->snap_tail = (s->snap_tail + best) % CSV_SNAP_MAX;
        s->nsnaps -= best;
    }
    csv_snap r = s->snap_used;
    pthread_mutex_unlock(&s->snap_mu);
    return r;
}

/* A snapshot of exactly len bytes still in the ring, or NULL. */
static const csv_snap *snap_find(csv_src *s, uint64_t len)
{
    for (size_t i = 0; i < s->nsnaps; i++) {
        const csv_snap *sn = &s->snaps[(s->snap_tail + i) % CSV_SNAP_MAX];
        if (sn->len == len) {
            return sn;
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- window */

/* Read more input into the window, moving the unread part to the front.
 * 0 ok (s->eof set at the end), <0 error. */
static int fill(csv_src *s, sl_error *err)
{
    if (s->start > 0) {
        memmove(s->buf, s->buf + s->start, s->end - s->start);
        s->base += s->start;
        s->end -= s->start;
        s->start = 0;
    }
    if (s->eof || s->end == s->cap) {
        return 0;
    }
    long k = sl_reader_read(s->r, s->buf + s->end, s->cap - s->end, err);
    if (k < 0) {
        return err && err->code ? err->code : SL_ERR_IO;
    }
    if (k == 0) {
        s->eof = 1;
        hash_end(s);
    }
    hash_bytes(s, s->buf + s->end, (size_t)k);
    s->end += (size_t)k;
    return 0;
}

/* Find the row at s->start (see the file comment for the rules). */
static int scan_row(const csv_src *s, csv_row *row)
{
    const char *b = s->buf;
    const char *p = b + s->start;
    const char *e = b + s->end;
    memset(row, 0, sizeof(*row));
    row->off = s->start;
    if (p == e) {
        return s->eof ? ROW_END : ROW_MORE;
    }
    const char *nl = memchr(p, '\n', (size_t)(e - p));
    const char *lim = nl ? nl : e;
    const char *stop = NULL; /* the row's line feed, or e at the end of input */
    if (!memchr(p, s->quote, (size_t)(lim - p))) {
        stop = nl;
    } else {
        /* Quote-aware walk. States: 0 field start, 1 unquoted, 2 quoted,
         * 3 quote seen inside a quoted field. */
        row->has_quote = 1;
        int st = 0;
        const char *q = p;
        while (q < e) {
            unsigned char c = (unsigned char)*q;
            if (st == 2) {
                const char *cq = memchr(q, s->quote, (size_t)(e - q));
                const char *seg_end = cq ? cq : e;
                for (const char *t = q; (t = memchr(t, '\n', (size_t)(seg_end - t))) != NULL; t++) {
                    row->lines++;
                }
                if (!cq) {
                    q = e;
                    break;
                }
                q = cq + 1;
                st = 3;
                continue;
            }
            if (c == '\n') {
                stop = q;
                break;
            }
            if (st == 3 && c == s->quote) {
                st = 2; /* "" inside a quoted field */
            } else if (c == s->delim) {
                st = 0;
            } else if (st == 0 && c == s->quote) {
                st = 2;
            } else if (st == 0 && s->trim && is_trim_space(s, c)) {
                /* leading spaces: a quote may still open the field */
            } else {
                st = 1; /* includes text after a closing quote (libcsv rejects it) */
            }
            q++;
        }
        if (!stop && st == 2) {
            row->in_quote = 1;
        }
    }
    if (stop) {
        size_t len = (size_t)(stop - p);
        row->next = (size_t)(stop + 1 - b);
        if (len > 0 && stop[-1] == '\r') {
            len--;
        }
        row->len = len;
        return len > s->max_row ? ROW_TOO_LONG : ROW_OK;
    }
    size_t avail = (size_t)(e - p);
    if (avail > s->max_row + 1) { /* +1: room for the CR of a CRLF */
        return ROW_TOO_LONG;
    }
    if (!s->eof) {
        return ROW_MORE;
    }
    if (row->in_quote) {
        return ROW_UNTERMINATED;
    }
    row->len = avail;
    row->next = s->end;
    if (row->len > 0 && p[row->len - 1] == '\r') {
        row->len--;
    }
    return row->len > s->max_row ? ROW_TOO_LONG : ROW_OK;
}

/* Next row at the window start, reading as needed. Returns ROW_OK, ROW_END,
 * ROW_TOO_LONG or ROW_UNTERMINATED, or <0 on a read error. */
static int get_row(csv_src *s, csv_row *row, sl_error *err)
{
    for (;;) {
        int st = scan_row(s, row);
        if (st != ROW_MORE) {
            return st;
        }
        int rc = fill(s, err);
        if (rc < 0) {
            return rc;
        }
    }
}

/* A row that cannot be taken whole (too long, or a quote that never closes):
 * keep what its first physical line shows and continue on the next line, so
 * one stray quote costs one row, not the rest of the file. The first line
 * starts at the window start; rec gets its fields (at most CSV_SHOW_MAX
 * bytes of it) and *next_pos the stream offset past its line feed, reading
 * and discarding as needed. */
static int skip_first_line(csv_src *s, sl_record *rec, int has_quote, uint64_t *next_pos,
                           sl_error *err)
{
    const char *p = s->buf + s->start;
    size_t avail = s->end - s->start;
    const char *nl = memchr(p, '\n', avail);
    size_t show = nl ? (size_t)(nl - p) : avail;
    if (show > 0 && nl && p[show - 1] == '\r') {
        show--;
    }
    if (show > CSV_SHOW_MAX) {
        show = CSV_SHOW_MAX;
    }
    /* The dead letter gets the fields of the first line, parsed leniently. */
    s->rec = rec;
    s->nf = 0;
    s->dropped = 0;
    s->add_err = 0;
    s->malformed = 0;
    size_t ignored;
    if (has_quote) {
        if (parse_libcsv(s, 0, p, show, &ignored) < 0) {
            return SL_ERR_NOMEM;
        }
    } else {
        split_plain(s, p, show);
    }
    if (s->add_err) {
        return s->add_err;
    }
    while (!nl) {
        s->start = s->end; /* discard: fill() moves base past it */
        if (s->eof) {
            *next_pos = s->base + s->end;
            s->line++;
            return 0;
        }
        int rc = fill(s, err);
        if (rc < 0) {
            return rc;
        }
        nl = memchr(s->buf + s->start, '\n', s->end - s->start);
    }
    s->start = (size_t)(nl - s->buf) + 1;
    *next_pos = s->base + s->start;
    s->line++;
    return 0;
}

/* ---------------------------------------------------------------- source */

static int src_next(void *self, sl_record *rec, uint64_t *next_pos, sl_error *err)
{
    csv_src *s = self;
    csv_row row;
    if (s->refused) {
        return 0; /* already delivered: nothing to read */
    }
    for (;;) {
        int st = get_row(s, &row, err);
        if (st < 0) {
            return st;
        }
        if (st == ROW_END) {
            return 0;
        }
        if (st == ROW_OK && row.len == 0 && s->skip_blank) {
            s->start = row.next;
            s->line++;
            continue;
        }
        rec->pos = s->base + s->start;
        rec->line = s->line;
        if (st == ROW_OK) {
            int rc = fill_fields(s, rec, s->buf + row.off, row.len, row.has_quote);
            if (rc < 0) {
                return sl_error_set(err, rc, "%s:%llu: cannot store the row: %s",
                                    sl_reader_name(s->r), (unsigned long long)rec->line,
                                    rc == SL_ERR_NOMEM ? "out of memory" : "record size limit");
            }
            if (s->raw && rec->status == SL_REC_OK && row.len > 0 && row.len < UINT32_MAX) {
                /* the row as read: a COPY-compatible sink can send it as is */
                size_t off = rec->data.len;
                if (sl_buf_append(&rec->data, s->buf + row.off, row.len) == 0) {
                    rec->raw_off = (uint32_t)off;
                    rec->raw_len = (uint32_t)row.len;
                }
            }
            s->start = row.next;
            s->line += 1 + row.lines;
            *next_pos = s->base + s->start;
            rec->next_line = s->line;
            return 1;
        }
        int rc = skip_first_line(s, rec, row.has_quote, next_pos, err);
        if (rc < 0) {
            if (rc == SL_ERR_NOMEM || rc == SL_ERR_LIMIT) {
                sl_error_set(err, rc, "%s:%llu: cannot store the row: %s", sl_reader_name(s->r),
                             (unsigned long long)rec->line,
                             rc == SL_ERR_NOMEM ? "out of memory" : "record size limit");
            }
            return rc;
        }
        rec->next_line = s->line;
        if (st == ROW_UNTERMINATED) {
            sl_record_reject(rec, SL_STAGE_SOURCE,
                             "%s:%llu: unterminated quoted field: no closing quote before the "
                             "end of input; reading resumes at line %llu",
                             sl_reader_name(s->r), (unsigned long long)rec->line,
                             (unsigned long long)s->line);
        } else {
            sl_record_reject(rec, SL_STAGE_SOURCE, "%s:%llu: row exceeds max_row_bytes (%zu)%s",
                             sl_reader_name(s->r), (unsigned long long)rec->line, s->max_row,
                             row.in_quote ? " \xe2\x80\x94 unterminated quote?" : "");
        }
        return 1;
    }
}

/* Read the header row into s->cols. */
static int read_header(csv_src *s, sl_error *err)
{
    const char *name = sl_reader_name(s->r);
    csv_row row;
    sl_record tmp;
    sl_record_init(&tmp);
    int rc = 0;
    for (;;) {
        rc = get_row(s, &row, err);
        if (rc < 0) {
            goto done;
        }
        if (rc == ROW_OK && row.len == 0) {
            s->start = row.next;
            s->line++;
            continue;
        }
        break;
    }
    uint64_t hline = s->line;
    s->header_line = hline;
    if (rc == ROW_END) {
        rc = sl_error_set(err, SL_ERR_INPUT, "%s: empty input (expected a header row)", name);
        goto done;
    }
    if (rc == ROW_TOO_LONG) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s:%llu: does not look like CSV: the header row is longer than "
                          "max_row_bytes (%zu)%s",
                          name, (unsigned long long)hline, s->max_row,
                          row.in_quote ? " (a quote in it is never closed)" : "");
        goto done;
    }
    if (rc == ROW_UNTERMINATED) {
        rc = sl_error_set(err, SL_ERR_INPUT, "%s:%llu: header row has a quote that is never closed",
                          name, (unsigned long long)hline);
        goto done;
    }
    const char *hp = s->buf + row.off;
    const char *nul = memchr(hp, '\0', row.len);
    if (nul) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s:%llu: does not look like CSV: binary data (NUL byte at offset "
                          "%llu) in the header row; if the file is compressed, set compression",
                          name, (unsigned long long)hline,
                          (unsigned long long)(s->base + (size_t)(nul - s->buf)));
        goto done;
    }
    if (memchr(hp, '\r', row.len)) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s:%llu: does not look like CSV with LF or CRLF line breaks: the header "
                          "row holds a bare carriage return (classic Mac line breaks?)",
                          name, (unsigned long long)hline);
        goto done;
    }
    tmp.line = hline;
    s->anon = 1;
    rc = fill_fields(s, &tmp, hp, row.len, row.has_quote);
    s->anon = 0;
    if (rc < 0) {
        rc = sl_error_set(err, rc, "%s: out of memory reading the header", name);
        goto done;
    }
    if (s->malformed) {
        rc = sl_error_set(err, SL_ERR_INPUT, "%s (header row)", sl_buf_cstr(&tmp.reason));
        goto done;
    }
    size_t n = tmp.nfields;
    s->cols = calloc(n, sizeof(*s->cols));
    s->col_len = calloc(n, sizeof(*s->col_len));
    if (!s->cols || !s->col_len) {
        rc = sl_error_set(err, SL_ERR_NOMEM, "%s: out of memory reading the header", name);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const sl_field *f = &tmp.fields[i];
        if (f->v.s.len == 0) {
            rc = sl_error_set(err, SL_ERR_INPUT, "%s:%llu: header column %zu is empty", name,
                              (unsigned long long)hline, i + 1);
            goto done;
        }
        s->cols[i] = strndup(sl_field_str(&tmp, f), f->v.s.len);
        if (!s->cols[i]) {
            rc = sl_error_set(err, SL_ERR_NOMEM, "%s: out of memory reading the header", name);
            goto done;
        }
        s->col_len[i] = f->v.s.len;
        s->ncols = i + 1;
        for (size_t j = 0; j < i; j++) {
            if (s->col_len[j] == s->col_len[i] && memcmp(s->cols[j], s->cols[i], f->v.s.len) == 0) {
                rc = sl_error_set(err, SL_ERR_INPUT,
                                  "%s:%llu: duplicate column '%s' (columns %zu and %zu)", name,
                                  (unsigned long long)hline, s->cols[i], j + 1, i + 1);
                goto done;
            }
        }
    }
    s->start = row.next;
    s->line += 1 + row.lines;
    rc = 0;
done:
    sl_record_free(&tmp);
    return rc;
}

static int set_columns_from_option(csv_src *s, const sl_opts *o, sl_error *err)
{
    size_t n = sl_opt_count(o, "columns");
    s->cols = calloc(n ? n : 1, sizeof(*s->cols));
    s->col_len = calloc(n ? n : 1, sizeof(*s->col_len));
    if (!s->cols || !s->col_len) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        const char *c = sl_opt_item(o, "columns", i);
        if (!c || !*c) {
            return sl_error_set(err, SL_ERR_CONFIG, "%s: columns: entry %zu is empty",
                                sl_opt_where(o, "columns"), i + 1);
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(s->cols[j], c) == 0) {
                return sl_error_set(err, SL_ERR_CONFIG,
                                    "%s: columns: duplicate column '%s' (entries %zu and %zu)",
                                    sl_opt_where(o, "columns"), c, j + 1, i + 1);
            }
        }
        s->cols[i] = strdup(c);
        if (!s->cols[i]) {
            return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
        }
        s->col_len[i] = (uint32_t)strlen(c);
        s->ncols = i + 1;
    }
    return 0;
}

static int check_required_columns(csv_src *s, const sl_opts *o, sl_error *err)
{
    size_t n = sl_opt_count(o, "columns");
    for (size_t i = 0; i < n; i++) {
        const char *c = sl_opt_item(o, "columns", i);
        size_t k = 0;
        while (k < s->ncols && strcmp(s->cols[k], c) != 0) {
            k++;
        }
        if (k == s->ncols) {
            return sl_error_set(err, SL_ERR_INPUT,
                                "%s:%llu: header has no column '%s' (required by columns at %s)",
                                sl_reader_name(s->r), (unsigned long long)s->header_line, c,
                                sl_opt_where(o, "columns"));
        }
    }
    return 0;
}

/* One byte, or "\t" / "tab" for a tab. */
static int one_byte_opt(const sl_opts *o, const char *key, unsigned char *out, sl_error *err)
{
    const char *v = sl_opt_str(o, key);
    if (v && (strcmp(v, "\\t") == 0 || strcmp(v, "tab") == 0)) {
        *out = '\t';
        return 0;
    }
    if (!v || strlen(v) != 1 || v[0] == '\n' || v[0] == '\r') {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "%s: %s: must be one byte other than a line break (\"\\t\" for tab), "
                            "got '%s'",
                            sl_opt_where(o, key), key, v ? v : "");
    }
    *out = (unsigned char)v[0];
    return 0;
}

static int build_http_headers(csv_src *s, const sl_opts *o, sl_error *err)
{
    size_t n = sl_opt_count(o, "http_headers");
    if (n == 0) {
        return 0;
    }
    sl_buf b;
    sl_buf_init(&b, 64 * 1024);
    for (size_t i = 0; i < n; i++) {
        const char *k = sl_opt_key(o, "http_headers", i);
        const char *v = sl_opt_item(o, "http_headers", i);
        if (!k || !*k || strpbrk(k, ":\r\n \t") || (v && strpbrk(v, "\r\n"))) {
            sl_buf_free(&b);
            /* The value is a secret: name only the header. */
            return sl_error_set(err, SL_ERR_CONFIG,
                                "%s: http_headers: header '%s' has an invalid name or a line "
                                "break in its value",
                                sl_opt_where(o, "http_headers"), k ? k : "");
        }
        if (sl_buf_printf(&b, "%s: %s\n", k, v ? v : "") != 0) {
            sl_buf_free(&b);
            return sl_error_set(err, SL_ERR_CONFIG, "%s: http_headers: too large",
                                sl_opt_where(o, "http_headers"));
        }
    }
    s->http_headers = sl_buf_steal(&b);
    return 0;
}

/* allow_hosts and max_download -> s->http (with s->guard). */
static int build_download_limits(csv_src *s, const sl_opts *o, sl_error *err)
{
    sl_http_opts_default(&s->http);
    if (sl_opt_isset(o, "max_download")) {
        int64_t max = sl_opt_size(o, "max_download");
        if (max <= 0) {
            return sl_error_set(err, SL_ERR_CONFIG,
                                "%s: max_download: must be more than 0 bytes (leave it out for "
                                "no limit)",
                                sl_opt_where(o, "max_download"));
        }
        s->http.max_download = (uint64_t)max;
    }
    if (!sl_opt_isset(o, "allow_hosts")) {
        return 0;
    }
    s->guard = sl_guard_new("allow_hosts");
    if (!s->guard) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    size_t n = sl_opt_count(o, "allow_hosts");
    for (size_t i = 0; i < n; i++) {
        if (sl_guard_add(s->guard, sl_opt_item(o, "allow_hosts", i), err) != 0) {
            return sl_error_prefix(err, "%s", sl_opt_where(o, "allow_hosts"));
        }
    }
    if (sl_guard_count(s->guard) == 0) {
        /* e.g. allow_hosts: ${EXPORT_HOSTS} with the variable empty: refusing
         * everything would hide the mistake until the first download */
        return sl_error_set(err, SL_ERR_CONFIG,
                            "%s: allow_hosts: lists no host (expected e.g. *.amazonaws.com; is "
                            "the environment variable empty?)",
                            sl_opt_where(o, "allow_hosts"));
    }
    s->http.guard = s->guard;
    return 0;
}

/* ------------------------------------------------------ delivered inputs
 *
 * The ledger (plugin state "delivered") lists the inputs that runs delivered
 * completely: SHA-256 of the whole content, of its head, sizes, the URL's
 * validators, when. A later run over the same content is refused before
 * anything is sent, unless --again: Braze bills every data point.
 *
 * The whole content is only known after reading it, so a run looks up the
 * ledger by the head (the first 64 KB) and then makes sure:
 *   - an input that ended within what init read: its whole digest is known;
 *   - a local file of the same size: it is read once more, hashed, and only
 *     refused when the whole digest matches (the common case: the same file
 *     run again; costs one read of the file, nothing is sent);
 *   - a URL: the same URL with the same strong ETag and size is trusted as
 *     the same content; otherwise it is downloaded once and hashed;
 *   - stdin or a pipe: cannot be read twice. It is refused with an error
 *     (exit 1) naming --again: sending it could bill it twice, and a silent
 *     "nothing to do" could skip new rows that follow the same first 64 KB. */

static void fmt_utc(double t, char *out, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || strftime(out, n, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0) {
        snprintf(out, n, "%.0f", t);
    }
}

static const char *jstr(const json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

/* SHA-256 (hex) of the whole input at s->path, read once more. */
static int hash_whole_input(csv_src *s, char out[65], sl_error *err)
{
    sl_reader_opts ro = {0};
    ro.compression = (sl_compression)s->comp;
    ro.http_headers = s->http_headers;
    ro.http = &s->http;
    sl_reader *r = sl_reader_open(s->path, &ro, err);
    if (!r) {
        return err && err->code ? err->code : SL_ERR_IO;
    }
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    char *buf = malloc(CSV_CHUNK);
    int rc = 0;
    if (!m || !buf || !EVP_DigestInit_ex(m, EVP_sha256(), NULL)) {
        rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (;;) {
        long k = sl_reader_read(r, buf, CSV_CHUNK, err);
        if (k < 0) {
            rc = err && err->code ? err->code : SL_ERR_IO;
            goto done;
        }
        if (k == 0) {
            break;
        }
        EVP_DigestUpdate(m, buf, (size_t)k);
    }
    unsigned char d[32];
    if (!EVP_DigestFinal_ex(m, d, NULL)) {
        rc = sl_error_set(err, SL_ERR, "%s: cannot compute SHA-256", sl_reader_name(r));
        goto done;
    }
    hex32(d, out);
done:
    EVP_MD_CTX_free(m);
    free(buf);
    sl_reader_close(r);
    return rc;
}

/* The ledger as a JSON array (new reference; an empty one when absent).
 * NULL with err set on a state error. */
static json_t *ledger_load(csv_src *s, int *unreadable, sl_error *err)
{
    sl_buf b;
    sl_buf_init(&b, 0);
    *unreadable = 0;
    int found = sl_ctx_state_get(s->ctx, CSV_LEDGER_KEY, &b, err);
    json_t *j = NULL;
    if (found == 1) {
        j = json_loads(sl_buf_cstr(&b), 0, NULL);
        if (!json_is_array(j)) {
            json_decref(j);
            j = NULL;
            *unreadable = 1;
        }
    }
    sl_buf_free(&b);
    if (found < 0) {
        return NULL;
    }
    return j ? j : json_array();
}

static int check_delivered(csv_src *s, sl_error *err)
{
    if (sl_ctx_again(s->ctx) || sl_ctx_dry_run(s->ctx)) {
        return 0;
    }
    const char *name = sl_reader_name(s->r);
    sl_error e2 = {0};
    int unreadable = 0;
    json_t *led = ledger_load(s, &unreadable, &e2);
    if (!led) {
        /* no state store (a test harness) or an unreadable one, which the
         * engine reports before anything is sent */
        sl_plog(s->ctx, SL_LOG_DEBUG, "cannot look up delivered inputs: %s", e2.msg);
        return 0;
    }
    char head[65];
    hex32(s->head.d, head);
    const json_t *hit = NULL;
    for (size_t i = json_array_size(led); i-- > 0 && !hit;) {
        const json_t *en = json_array_get(led, i);
        if (strcmp(jstr(en, "head"), head) == 0 &&
            json_integer_value(json_object_get(en, "head_len")) == (json_int_t)s->head.len) {
            hit = en;
        }
    }
    int rc = 0;
    if (!hit) {
        goto done;
    }
    char when[64];
    fmt_utc(json_number_value(json_object_get(hit, "at")), when, sizeof(when));
    const char *was = jstr(hit, "input");
    const char *want = jstr(hit, "sha256");
    json_int_t esize = json_is_integer(json_object_get(hit, "size"))
                           ? json_integer_value(json_object_get(hit, "size"))
                           : -1;
    sl_reader_kind kind = sl_reader_kind_of(s->r);
    int same = 0;
    if (s->whole_done) {
        char whole[65];
        hex32(s->whole.d, whole);
        same = strcmp(whole, want) == 0;
    } else if (kind == SL_READER_STDIN || (kind == SL_READER_FILE && s->mtime == 0)) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s: starts with the same %llu bytes as '%s', which the run of %s "
                          "delivered completely; %s cannot be compared whole before it is sent. "
                          "Pass --again to send it (or give the file's path, which sluice can "
                          "check)",
                          name, (unsigned long long)s->head.len, was, when,
                          kind == SL_READER_STDIN ? "stdin" : "a pipe");
        goto done;
    } else if (esize >= 0 && s->size >= 0 && esize != s->size) {
        same = 0;
    } else {
        const char *etag = sl_reader_etag(s->r);
        if (kind == SL_READER_URL && etag && strncmp(etag, "W/", 2) != 0 &&
            strcmp(etag, jstr(hit, "etag")) == 0 &&
            strcmp(s->url_sha, jstr(hit, "url_sha256")) == 0) {
            same = 1; /* a strong validator of the same URL: the same bytes */
        } else {
            char whole[65];
            sl_plog(s->ctx, SL_LOG_INFO,
                    "%s starts like '%s', delivered by the run of %s: reading it once to compare",
                    name, was, when);
            if ((rc = hash_whole_input(s, whole, err)) != 0) {
                sl_error_prefix(err, "%s: cannot check whether it was already delivered", name);
                goto done;
            }
            same = strcmp(whole, want) == 0;
        }
    }
    if (same) {
        s->refused = 1;
        json_int_t failed = json_integer_value(json_object_get(hit, "failed"));
        char more[128] = "";
        if (failed > 0) {
            snprintf(more, sizeof(more),
                     " (%lld row(s) were dead-lettered then: `sluice retry` re-sends those)",
                     (long long)failed);
        }
        sl_ctx_skip_run(s->ctx,
                        "%s: already delivered completely by the run of %s (as '%s', same "
                        "content, SHA-256 %.16s...)%s; nothing to do. Pass --again to send it "
                        "again",
                        name, when, was, want, more);
    }
done:
    json_decref(led);
    return rc;
}

static int src_commit(void *self, const sl_run_end *e, sl_error *err)
{
    csv_src *s = self;
    if (!e->complete || e->dry_run || s->refused || !s->whole_done) {
        return 0;
    }
    int unreadable = 0;
    json_t *led = ledger_load(s, &unreadable, err);
    if (!led) {
        return SL_ERR;
    }
    if (unreadable) {
        sl_plog(s->ctx, SL_LOG_WARN,
                "the ledger of delivered inputs was unreadable; starting a new one");
    }
    char whole[65], head[65];
    hex32(s->whole.d, whole);
    hex32(s->head.d, head);
    for (size_t i = json_array_size(led); i-- > 0;) {
        if (strcmp(jstr(json_array_get(led, i), "sha256"), whole) == 0) {
            json_array_remove(led, i);
        }
    }
    while (json_array_size(led) >= CSV_LEDGER_MAX) {
        json_array_remove(led, 0);
    }
    const char *etag = sl_reader_etag(s->r);
    const char *lm = sl_reader_last_modified(s->r);
    json_t *en =
        json_pack("{s:s, s:s, s:I, s:I, s:I, s:f, s:I, s:I, s:I}", "sha256", whole, "head", head,
                  "head_len", (json_int_t)s->head.len, "length", (json_int_t)s->whole.len, "size",
                  (json_int_t)s->size, "at", e->started_at, "read", (json_int_t)e->read, "sent",
                  (json_int_t)e->sent, "failed", (json_int_t)e->failed);
    if (en) {
        json_t *in = json_string(sl_reader_name(s->r));
        json_object_set_new(en, "input", in ? in : json_string("(a name that is not UTF-8)"));
    }
    if (en && s->url_sha[0]) {
        json_object_set_new(en, "url_sha256", json_string(s->url_sha));
    }
    if (en && etag) {
        json_object_set_new(en, "etag", json_string(etag));
    }
    if (en && lm) {
        json_object_set_new(en, "last_modified", json_string(lm));
    }
    char *txt = en && json_array_append_new(led, en) == 0 ? json_dumps(led, JSON_COMPACT) : NULL;
    json_decref(led);
    if (!txt) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory recording the delivered input");
    }
    int rc = sl_ctx_state_set(s->ctx, CSV_LEDGER_KEY, txt, strlen(txt), err);
    free(txt);
    return rc;
}

static void src_destroy(void *self)
{
    csv_src *s = self;
    if (!s) {
        return;
    }
    sl_reader_close(s->r);
    if (s->strict_live) {
        csv_free(&s->strict);
    }
    if (s->lax_live) {
        csv_free(&s->lax);
    }
    for (size_t i = 0; i < s->ncols; i++) {
        free(s->cols[i]);
    }
    free(s->cols);
    free(s->col_len);
    for (size_t i = 0; i < s->nextra; i++) {
        free(s->extra[i]);
    }
    free(s->extra);
    free(s->buf);
    free(s->http_headers);
    EVP_MD_CTX_free(s->sha);
    EVP_MD_CTX_free(s->sha_tmp);
    free(s->snaps);
    if (s->snap_mu_live) {
        pthread_mutex_destroy(&s->snap_mu);
    }
    sl_guard_free(s->guard); /* after the reader: its streams borrow it */
    free(s->path);
    free(s);
}

/* The parse options (SL_CSV_PARSE_OPTIONS) -> s, and the window and
 * parsers they size. */
static int parse_setup(csv_src *s, const sl_opts *o, sl_error *err)
{
    int rc;
    s->trim = sl_opt_bool(o, "trim");
    s->empty_null = sl_opt_bool(o, "empty_is_null");
    s->skip_blank = sl_opt_bool(o, "skip_blank_lines");
    s->has_header = sl_opt_bool(o, "header");
    if ((rc = one_byte_opt(o, "delimiter", &s->delim, err)) != 0 ||
        (rc = one_byte_opt(o, "quote", &s->quote, err)) != 0) {
        return rc;
    }
    if (s->delim == s->quote) {
        return sl_error_set(err, SL_ERR_CONFIG, "%s: quote: must differ from the delimiter",
                            sl_opt_where(o, "quote"));
    }
    /* rows read with PostgreSQL's CSV rules can be passed through as read */
    s->raw = s->empty_null && !s->trim && s->has_header && s->delim == ',' && s->quote == '"';
    int64_t max_row = sl_opt_size(o, "max_row_bytes");
    if (max_row < CSV_MIN_ROW || max_row > CSV_MAX_ROW) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "%s: max_row_bytes: must be between 64 bytes and 32MB, got %lld",
                            sl_opt_where(o, "max_row_bytes"), (long long)max_row);
    }
    s->max_row = (size_t)max_row;
    if (!s->has_header && sl_opt_count(o, "columns") == 0) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "%s: columns: required when header is false (the names of the fields)",
                            sl_opt_where(o, "columns"));
    }
    if (parser_init(s, &s->strict, CSV_STRICT | CSV_STRICT_FINI) != 0) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    s->strict_live = 1;
    if (parser_init(s, &s->lax, 0) != 0) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    s->lax_live = 1;
    s->cap = s->max_row + CSV_CHUNK + 2;
    s->buf = malloc(s->cap);
    /* every byte read is hashed: the identity of the input (resume, and
     * whether it was already delivered) */
    s->sha = EVP_MD_CTX_new();
    s->sha_tmp = EVP_MD_CTX_new();
    s->snaps = calloc(CSV_SNAP_MAX, sizeof(*s->snaps));
    if (!s->buf || !s->sha || !s->sha_tmp || !s->snaps ||
        !EVP_DigestInit_ex(s->sha, EVP_sha256(), NULL) ||
        pthread_mutex_init(&s->snap_mu, NULL) != 0) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    s->snap_mu_live = 1;
    return 0;
}

/* With s->r open: byte order mark, header, required columns. */
static int start_input(csv_src *s, const sl_opts *o, sl_error *err)
{
    int rc;
    s->size = sl_reader_size(s->r);
    s->mtime = sl_reader_mtime(s->r);
    s->line = 1;

    /* A UTF-8 byte order mark is not data (offsets still count it). */
    while (s->end < 3 && !s->eof) {
        if ((rc = fill(s, err)) != 0) {
            return rc;
        }
    }
    if (s->end >= 3 && memcmp(s->buf, "\xef\xbb\xbf", 3) == 0) {
        s->start = 3;
    }
    if (s->has_header) {
        if ((rc = read_header(s, err)) != 0) {
            return rc;
        }
        s->data_pos = s->base + s->start;
        s->data_line = s->line;
        return check_required_columns(s, o, err);
    }
    if ((rc = set_columns_from_option(s, o, err)) != 0) {
        return rc;
    }
    s->data_pos = s->base + s->start;
    s->data_line = s->line;
    return 0;
}

/* Every option check and setting short of opening the input: shared by init
 * and the validate hook, so `sluice check` refuses exactly what `run` would. */
static int setup_options(csv_src *s, const sl_opts *o, sl_reader_opts *ro, sl_error *err)
{
    int rc;
    if ((rc = parse_setup(s, o, err)) != 0 || (rc = build_http_headers(s, o, err)) != 0 ||
        (rc = build_download_limits(s, o, err)) != 0) {
        return rc;
    }
    const char *comp = sl_opt_str(o, "compression");
    int c = sl_compression_parse(comp ? comp : "auto");
    if (c < 0) {
        return sl_error_set(err, SL_ERR_CONFIG, "%s: compression: expected auto|none|gzip|bzip2",
                            sl_opt_where(o, "compression"));
    }
    const char *path = sl_opt_str(o, "path");
    s->path = strdup(path ? path : "");
    if (!s->path) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    s->comp = c;
    memset(ro, 0, sizeof(*ro));
    ro->compression = (sl_compression)c;
    if (sl_opt_isset(o, "max_decompressed")) {
        int64_t max = sl_opt_size(o, "max_decompressed");
        if (max <= 0) {
            return sl_error_set(err, SL_ERR_CONFIG,
                                "%s: max_decompressed: must be more than 0 bytes (leave it out "
                                "for no limit)",
                                sl_opt_where(o, "max_decompressed"));
        }
        ro->max_bytes = (uint64_t)max;
    }
    int64_t ratio = sl_opt_int(o, "max_ratio");
    if (ratio < 0 || ratio > UINT32_MAX) {
        return sl_error_set(err, SL_ERR_CONFIG,
                            "%s: max_ratio: expected 0 (no limit) to 4294967295, got %lld",
                            sl_opt_where(o, "max_ratio"), (long long)ratio);
    }
    ro->max_ratio = (uint32_t)ratio;
    ro->http_headers = s->http_headers;
    ro->http = &s->http;
    return 0;
}

static int src_validate(const sl_opts *o, sl_report_fn report, void *ud)
{
    csv_src *s = calloc(1, sizeof(*s));
    if (!s) {
        report(ud, NULL, "out of memory checking the options");
        return 1;
    }
    sl_error err = {0};
    sl_reader_opts ro;
    int rc = setup_options(s, o, &ro, &err);
    src_destroy(s);
    if (rc == 0) {
        return 0;
    }
    /* the message names the option and its file:line:col already */
    report(ud, NULL, "%s", err.msg);
    return 1;
}

static int src_init(void **self, const sl_opts *o, sl_ctx *ctx, sl_error *err)
{
    int rc = 0;
    csv_src *s = calloc(1, sizeof(*s));
    if (!s) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    s->ctx = ctx;
    sl_reader_opts ro;
    if ((rc = setup_options(s, o, &ro, err)) != 0) {
        goto fail;
    }
    if (strncmp(s->path, "http://", 7) == 0 || strncmp(s->path, "https://", 8) == 0) {
        /* the whole URL, query included, without keeping it (it may hold a
         * signature): a changed query string is another input */
        sha256_hex(s->path, strlen(s->path), s->url_sha);
    }
    s->r = sl_reader_open(s->path, &ro, err);
    if (!s->r) {
        rc = err && err->code ? err->code : SL_ERR_IO;
        goto fail;
    }
    if ((rc = start_input(s, o, err)) != 0) {
        goto fail;
    }
    /* the quick identity: the first 64 KB (or all of a shorter input) */
    while (!s->head_done && s->end < s->cap) {
        if ((rc = fill(s, err)) != 0) {
            goto fail;
        }
    }
    if ((rc = check_delivered(s, err)) != 0) {
        goto fail;
    }
    *self = s;
    return 0;

fail:
    src_destroy(s);
    return rc ? rc : SL_ERR;
}

static int src_checkpoint(void *self, uint64_t pos, uint64_t line, sl_buf *out, sl_error *err)
{
    csv_src *s = self;
    sl_jw w;
    sl_jw_init(&w, out);
    sl_jw_obj_open(&w);
    sl_jw_keyz(&w, "offset");
    sl_jw_int(&w, (int64_t)pos);
    sl_jw_keyz(&w, "line");
    sl_jw_int(&w, (int64_t)line);
    sl_jw_keyz(&w, "input");
    const char *name = sl_reader_name(s->r);
    sl_jw_str(&w, name, strlen(name));
    sl_jw_keyz(&w, "size");
    sl_jw_int(&w, s->size);
    sl_jw_keyz(&w, "mtime");
    sl_jw_int(&w, s->mtime);
    sl_jw_keyz(&w, "columns");
    sl_jw_arr_open(&w);
    for (size_t i = 0; i < s->ncols; i++) {
        sl_jw_str(&w, s->cols[i], s->col_len[i]);
    }
    sl_jw_arr_close(&w);
    /* content fingerprints (see "Fingerprints") */
    char hex[65];
    csv_snap pre = snap_at(s, pos);
    hex32(s->head.d, hex);
    sl_jw_keyz(&w, "head_len");
    sl_jw_int(&w, (int64_t)s->head.len);
    sl_jw_keyz(&w, "head_sha256");
    sl_jw_str(&w, hex, 64);
    sl_jw_keyz(&w, "prefix_len");
    sl_jw_int(&w, (int64_t)pre.len);
    if (pre.len > 0) {
        hex32(pre.d, hex);
        sl_jw_keyz(&w, "prefix_sha256");
        sl_jw_str(&w, hex, 64);
    }
    if (s->url_sha[0]) {
        sl_jw_keyz(&w, "url_sha256");
        sl_jw_str(&w, s->url_sha, 64);
    }
    const char *etag = sl_reader_etag(s->r);
    const char *lm = sl_reader_last_modified(s->r);
    if (etag) {
        sl_jw_keyz(&w, "etag");
        sl_jw_str(&w, etag, strlen(etag));
    }
    if (lm) {
        sl_jw_keyz(&w, "last_modified");
        sl_jw_str(&w, lm, strlen(lm));
    }
    sl_jw_obj_close(&w);
    if (w.err) {
        return sl_error_set(err, w.err, "%s: cannot write the checkpoint", name);
    }
    return 0;
}

/* Move the window to stream offset pos (>= the current position), reading
 * (and so hashing) every byte on the way: a resume proves the prefix. */
static int read_to(csv_src *s, uint64_t pos, sl_error *err)
{
    while (s->base + s->end < pos) {
        if (s->eof) {
            return sl_error_set(
                err, SL_ERR_INPUT,
                "%s: the input ends at byte %llu, before the checkpoint (byte %llu)",
                sl_reader_name(s->r), (unsigned long long)(s->base + s->end),
                (unsigned long long)pos);
        }
        s->start = s->end; /* discard: fill() moves base past it */
        int rc = fill(s, err);
        if (rc) {
            return rc;
        }
    }
    s->start = (size_t)(pos - s->base);
    return 0;
}

/* Whether string j of a checkpoint is what src_checkpoint wrote for text.
 * The JSON writer replaces bytes that are not UTF-8 (a Latin-1 header or
 * file name) with U+FFFD, so such text compares by its escaped form. */
static int same_as_written(const char *text, size_t len, const json_t *j)
{
    if (!json_is_string(j)) {
        return 0;
    }
    const char *v = json_string_value(j);
    size_t vlen = json_string_length(j);
    if (vlen == len && memcmp(v, text, len) == 0) {
        return 1;
    }
    sl_buf a, b;
    sl_buf_init(&a, 0);
    sl_buf_init(&b, 0);
    int same = sl_json_escape(&a, text, len) == 0 && sl_json_escape(&b, v, vlen) == 0 &&
               a.len == b.len && memcmp(sl_buf_cstr(&a), sl_buf_cstr(&b), a.len) == 0;
    sl_buf_free(&a);
    sl_buf_free(&b);
    return same;
}

/* Whether optional string k of checkpoint j differs from the current value
 * (both present and different). */
static int differs(const json_t *j, const char *k, const char *now)
{
    const char *was = json_string_value(json_object_get(j, k));
    return was && now && strcmp(was, now) != 0;
}

static int src_resume(void *self, const char *checkpoint, sl_error *err)
{
    csv_src *s = self;
    const char *name = sl_reader_name(s->r);
    if (s->refused) {
        return 0; /* already delivered: nothing to resume */
    }
    json_error_t jerr;
    json_t *j = json_loads(checkpoint ? checkpoint : "", 0, &jerr);
    int rc = 0;
    if (!json_is_object(j)) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s: the saved checkpoint is not a JSON object (%s); use --from-start",
                          name, j ? "wrong type" : jerr.text);
        goto done;
    }
    json_t *joff = json_object_get(j, "offset");
    json_t *jline = json_object_get(j, "line");
    json_t *jin = json_object_get(j, "input");
    json_t *jcols = json_object_get(j, "columns");
    if (!json_is_integer(joff) || json_integer_value(joff) < 0 || !json_is_integer(jline) ||
        !json_is_array(jcols)) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s: the saved checkpoint lacks offset, line or columns; use "
                          "--from-start",
                          name);
        goto done;
    }
    if (json_is_string(jin) && !same_as_written(name, strlen(name), jin)) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s: the interrupted run was reading '%s', not this input; use "
                          "--from-start",
                          name, json_string_value(jin));
        goto done;
    }
    int same = json_array_size(jcols) == s->ncols;
    for (size_t i = 0; same && i < s->ncols; i++) {
        same = same_as_written(s->cols[i], s->col_len[i], json_array_get(jcols, i));
    }
    if (!same) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s: header changed since the interrupted run; use --from-start", name);
        goto done;
    }
    sl_reader_kind kind = sl_reader_kind_of(s->r);
    unsigned long long at_line = (unsigned long long)json_integer_value(jline);
    if (kind == SL_READER_STDIN || (kind == SL_READER_FILE && s->mtime == 0)) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s: an interrupted run stopped before line %llu, but %s cannot be "
                          "proven to carry the same input again; use --from-start to send it from "
                          "the beginning (rows delivered before are sent again), or give a file "
                          "path",
                          name, at_line, kind == SL_READER_STDIN ? "stdin" : "a pipe");
        goto done;
    }
    if (kind == SL_READER_URL) {
        const char *why = NULL;
        if (differs(j, "url_sha256", s->url_sha)) {
            why = "the URL differs (path or query string)";
        } else if (differs(j, "etag", sl_reader_etag(s->r))) {
            why = "the server's ETag changed";
        } else if (differs(j, "last_modified", sl_reader_last_modified(s->r))) {
            why = "the server's Last-Modified changed";
        }
        if (why) {
            rc = sl_error_set(err, SL_ERR_INPUT,
                              "%s: not the input of the interrupted run: %s; use --from-start",
                              name, why);
            goto done;
        }
    }
    json_t *jsize = json_object_get(j, "size");
    json_t *jmtime = json_object_get(j, "mtime");
    long long osize = json_is_integer(jsize) ? (long long)json_integer_value(jsize) : -1;
    long long omtime = json_is_integer(jmtime) ? (long long)json_integer_value(jmtime) : 0;
    int changed = 0;
    if (kind == SL_READER_FILE) {
        changed = osize != (long long)s->size || omtime != (long long)s->mtime;
    } else if (kind == SL_READER_URL) {
        changed = osize >= 0 && s->size >= 0 && osize != (long long)s->size;
    }
    if (changed) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s: the input changed since the interrupted run (size %lld -> %lld "
                          "bytes, modified %lld -> %lld); use --from-start",
                          name, osize, (long long)s->size, omtime, (long long)s->mtime);
        goto done;
    }
    /* The content: the first 64 KB, and everything up to the checkpoint but
     * its last < 64 KB (see "Fingerprints"). */
    json_t *jhl = json_object_get(j, "head_len");
    const char *hsha = json_string_value(json_object_get(j, "head_sha256"));
    json_t *jpl = json_object_get(j, "prefix_len");
    const char *psha = json_string_value(json_object_get(j, "prefix_sha256"));
    if (!json_is_integer(jhl) || !hsha || !json_is_integer(jpl) ||
        (json_integer_value(jpl) > 0 && !psha) || json_integer_value(jpl) < 0 ||
        json_integer_value(jpl) > json_integer_value(joff)) {
        rc =
            sl_error_set(err, SL_ERR_INPUT,
                         "%s: the saved checkpoint has no content fingerprint (written by an "
                         "older sluice?), so the input cannot be proven the same; use --from-start",
                         name);
        goto done;
    }
    char hex[65];
    hex32(s->head.d, hex);
    if ((uint64_t)json_integer_value(jhl) != s->head.len || strcmp(hsha, hex) != 0) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s: the input changed since the interrupted run: its first %llu bytes "
                          "differ (same name%s); use --from-start",
                          name, (unsigned long long)s->head.len,
                          kind == SL_READER_FILE ? ", size and modification time" : "");
        goto done;
    }
    uint64_t plen = (uint64_t)json_integer_value(jpl);
    if (plen > 0) {
        s->verify.len = plen;
        memset(s->verify.d, 0, 32);
        for (size_t i = 0; i < 32 && psha[2 * i] && psha[2 * i + 1]; i++) {
            unsigned int byte = 0;
            sscanf(psha + 2 * i, "%2x", &byte);
            s->verify.d[i] = (unsigned char)byte;
        }
        const csv_snap *seen = snap_find(s, plen);
        s->verify_state = seen ? (memcmp(seen->d, s->verify.d, 32) == 0 ? 2 : 3) : 1;
    }
    uint64_t off = (uint64_t)json_integer_value(joff);
    uint64_t line = (uint64_t)json_integer_value(jline);
    if (off < s->data_pos) {
        /* Nothing was acknowledged past the header: start at the first row. */
        off = s->data_pos;
        line = s->data_line;
    }
    if (line == 0) {
        line = 1; /* only messages depend on it */
    }
    rc = read_to(s, off, err);
    /* a prefix that ends where the input ended is hashed at end of input */
    while (rc == 0 && s->verify_state == 1 && !s->eof && s->end < s->cap) {
        rc = fill(s, err);
    }
    if (rc) {
        sl_error_prefix(err, "%s: cannot read up to the checkpoint (byte %llu); use --from-start",
                        name, (unsigned long long)off);
        goto done;
    }
    if (s->verify_state == 1 || s->verify_state == 3) {
        rc = sl_error_set(err, SL_ERR_INPUT,
                          "%s: the input changed since the interrupted run: its first %llu bytes "
                          "(rows already delivered) are not the same; use --from-start",
                          name, (unsigned long long)plen);
        goto done;
    }
    s->line = line;
done:
    json_decref(j);
    return rc;
}

static const char *const *src_columns(void *self, size_t *n)
{
    csv_src *s = self;
    *n = s->ncols;
    return (const char *const *)s->cols;
}

static const char *src_input_name(void *self)
{
    csv_src *s = self;
    return sl_reader_name(s->r);
}

static void src_progress(void *self, int64_t *done, int64_t *total)
{
    csv_src *s = self;
    *done = (int64_t)sl_reader_consumed(s->r);
    *total = sl_reader_size(s->r);
}

/* ---------------------------------------------------------------- sluice/csv.h */

int sl_csv_open(sl_csv **out, sl_reader *r, const sl_opts *o, sl_error *err)
{
    *out = NULL;
    csv_src *s = calloc(1, sizeof(*s));
    if (!s) {
        sl_reader_close(r);
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    s->r = r;
    int rc = parse_setup(s, o, err);
    if (rc == 0) {
        rc = start_input(s, o, err);
    }
    if (rc != 0) {
        src_destroy(s);
        return rc;
    }
    *out = s;
    return 0;
}

int sl_csv_next(sl_csv *c, sl_record *rec, uint64_t *next_pos, sl_error *err)
{
    return src_next(c, rec, next_pos, err);
}

int sl_csv_checkpoint(sl_csv *c, uint64_t pos, uint64_t line, sl_buf *out, sl_error *err)
{
    return src_checkpoint(c, pos, line, out, err);
}

int sl_csv_resume(sl_csv *c, const char *checkpoint, sl_error *err)
{
    return src_resume(c, checkpoint, err);
}

const char *const *sl_csv_columns(sl_csv *c, size_t *n)
{
    return src_columns(c, n);
}

sl_reader *sl_csv_reader(sl_csv *c)
{
    return c->r;
}

void sl_csv_free(sl_csv *c)
{
    src_destroy(c);
}

const sl_source_plugin sl_source_csv = {
    .name = "csv",
    .summary = "rows of a CSV file, stdin or http(s) URL (gzip/bzip2 aware), resumable",
    .options = csv_options,
    .validate = src_validate,
    .init = src_init,
    .resume = src_resume,
    .next = src_next,
    .checkpoint = src_checkpoint,
    .columns = src_columns,
    .input_name = src_input_name,
    .progress = src_progress,
    .commit = src_commit,
    .destroy = src_destroy,
};
