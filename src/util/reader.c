/* Byte-stream readers: see include/sluice/reader.h.
 *
 * One fixed input buffer (RD_BUF) holds raw bytes from the file descriptor or
 * HTTP stream; decoders (zlib, libbz2) read from it into the caller's buffer.
 * Uncompressed input bypasses the buffer once the sniffed prefix is drained,
 * so plain files cost one read(2) per caller read. */
#include <bzlib.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "sluice/guard.h"
#include "sluice/reader.h"
#include "sluice/url.h"

#define RD_BUF ((size_t)256 * 1024)
#define RD_SCRATCH ((size_t)64 * 1024)
/* A URL skip shorter than this reads and discards instead of re-requesting. */
#define RD_RANGE_MIN ((uint64_t)1024 * 1024)
/* Bytes looked at to recognise compressed content. */
#define RD_SNIFF 10

struct sl_reader {
    sl_reader_kind kind;
    sl_compression comp;
    int fd;
    int seekable; /* a regular file: skips may lseek */
    sl_http_stream *hs;
    sl_reader_fn fn; /* SL_READER_STREAM */
    void *fn_ud;
    char *url; /* full URL (may hold credentials): never in messages */
    char *name;
    const char *headers; /* borrowed */
    sl_http_opts http;
    int64_t size;
    int64_t mtime;
    uint64_t max_bytes;
    uint32_t max_ratio;

    unsigned char *in;
    size_t in_pos, in_len;
    int raw_eof;
    uint64_t raw_off; /* underlying offset of in[in_pos]: bytes consumed */
    uint64_t out_off; /* decompressed stream position */

    z_stream z;
    int z_live;
    bz_stream bz;
    int bz_live;
    int member_end; /* a gzip member / bzip2 stream just ended cleanly */

    unsigned char *scratch; /* discard buffer for skips, allocated on first use */
    int failed;
    sl_error ferr; /* the sticky error */
};

int sl_compression_parse(const char *s)
{
    static const char *const names[] = {"auto", "none", "gzip", "bzip2"};
    for (int i = 0; i < 4; i++) {
        if (s && strcmp(s, names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

const char *sl_compression_name(sl_compression c)
{
    switch (c) {
    case SL_COMPRESS_AUTO:
        return "auto";
    case SL_COMPRESS_NONE:
        return "none";
    case SL_COMPRESS_GZIP:
        return "gzip";
    case SL_COMPRESS_BZIP2:
        return "bzip2";
    }
    return "?";
}

static int is_url(const char *s)
{
    return strncasecmp(s, "http://", 7) == 0 || strncasecmp(s, "https://", 8) == 0;
}

/* The URL as messages show it (sluice/url.h): no userinfo or query, since
 * they carry credentials (presigned URLs). */
static char *url_display_name(const char *url)
{
    char shown[512];
    sl_url_redact(url, shown, sizeof(shown), 0);
    return strdup(shown);
}

static int has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcasecmp(s + n - m, suf) == 0;
}

/* Record the error and make it sticky. */
static long fail(sl_reader *r, sl_error *err, const sl_error *e)
{
    r->failed = 1;
    r->ferr = *e;
    if (err) {
        *err = *e;
    }
    return -1;
}

/* Read from the underlying input: >0, 0 at end, -1 with e set. */
static long src_read(sl_reader *r, void *buf, size_t n, sl_error *e)
{
    if (r->hs) {
        long k = sl_http_stream_read(r->hs, buf, n, e);
        /* a max_download refusal already names the URL and is not an I/O error */
        if (k < 0 && e->code != SL_ERR_LIMIT) {
            sl_error_prefix(e, "%s: download failed at byte %llu", r->name,
                            (unsigned long long)(r->raw_off + (r->in_len - r->in_pos)));
            e->code = SL_ERR_IO;
        }
        return k;
    }
    if (r->fn) {
        return r->fn(r->fn_ud, buf, n, e);
    }
    for (;;) {
        ssize_t k = read(r->fd, buf, n);
        if (k >= 0) {
            return (long)k;
        }
        if (errno != EINTR) {
            sl_error_set(e, SL_ERR_IO, "%s: read error at byte %llu: %s", r->name,
                         (unsigned long long)(r->raw_off + (r->in_len - r->in_pos)),
                         strerror(errno));
            return -1;
        }
    }
}

/* Append raw bytes to the input buffer (compacting it first). 1 got bytes,
 * 0 end of input, -1 error. */
static int raw_fill(sl_reader *r, sl_error *e)
{
    if (r->raw_eof) {
        return 0;
    }
    if (r->in_pos > 0) {
        memmove(r->in, r->in + r->in_pos, r->in_len - r->in_pos);
        r->in_len -= r->in_pos;
        r->in_pos = 0;
    }
    if (r->in_len == RD_BUF) {
        return 1;
    }
    long k = src_read(r, r->in + r->in_len, RD_BUF - r->in_len, e);
    if (k < 0) {
        return -1;
    }
    if (k == 0) {
        r->raw_eof = 1;
        return 0;
    }
    r->in_len += (size_t)k;
    return 1;
}

static void consume(sl_reader *r, size_t n)
{
    r->in_pos += n;
    r->raw_off += n;
}

static long read_plain(sl_reader *r, unsigned char *buf, size_t n, sl_error *e)
{
    if (r->in_pos < r->in_len) {
        size_t k = r->in_len - r->in_pos;
        if (k > n) {
            k = n;
        }
        memcpy(buf, r->in + r->in_pos, k);
        consume(r, k);
        return (long)k;
    }
    if (r->raw_eof) {
        return 0;
    }
    long k = src_read(r, buf, n, e);
    if (k == 0) {
        r->raw_eof = 1;
    } else if (k > 0) {
        r->raw_off += (uint64_t)k;
    }
    return k;
}

/* Between members: padding NUL bytes are ignored (as gzip(1) does); returns
 * 1 when more data follows, 0 at a clean end, -1 on error. */
static int next_member(sl_reader *r, sl_error *e)
{
    for (;;) {
        while (r->in_pos < r->in_len && r->in[r->in_pos] == 0) {
            consume(r, 1);
        }
        if (r->in_pos < r->in_len) {
            return 1;
        }
        int rc = raw_fill(r, e);
        if (rc <= 0) {
            return rc;
        }
    }
}

/* Shared by both decoders: after a call that made no progress, tell
 * truncation (input exhausted) from corruption (input left, no progress). */
static long no_progress(sl_reader *r, const char *format, sl_error *e)
{
    if (r->in_pos == r->in_len && r->raw_eof) {
        sl_error_set(e, SL_ERR_INPUT,
                     "%s: %s data truncated at byte %llu (unexpected end of input)", r->name,
                     format, (unsigned long long)r->raw_off);
        return -1;
    }
    sl_error_set(e, SL_ERR_INPUT, "%s: corrupt %s data near byte %llu: decoder made no progress",
                 r->name, format, (unsigned long long)r->raw_off);
    return -1;
}

static long read_gzip(sl_reader *r, unsigned char *buf, size_t n, sl_error *e)
{
    if (n > UINT_MAX) {
        n = UINT_MAX;
    }
    for (;;) {
        if (r->member_end) {
            int rc = next_member(r, e);
            if (rc <= 0) {
                return rc;
            }
            if (inflateReset(&r->z) != Z_OK) {
                sl_error_set(e, SL_ERR, "%s: cannot reset the gzip decoder", r->name);
                return -1;
            }
            r->member_end = 0;
        }
        /* Refill only when empty; zlib may still hold output for an empty input. */
        if (r->in_pos == r->in_len && raw_fill(r, e) < 0) {
            return -1;
        }
        size_t avail = r->in_len - r->in_pos;
        r->z.next_in = r->in + r->in_pos;
        r->z.avail_in = (unsigned)avail;
        r->z.next_out = buf;
        r->z.avail_out = (unsigned)n;
        int ret = inflate(&r->z, Z_NO_FLUSH);
        size_t used = avail - r->z.avail_in;
        size_t produced = n - r->z.avail_out;
        consume(r, used);
        if (ret == Z_STREAM_END) {
            r->member_end = 1;
        } else if (ret != Z_OK && ret != Z_BUF_ERROR) {
            sl_error_set(e, SL_ERR_INPUT, "%s: corrupt gzip data near byte %llu: %s", r->name,
                         (unsigned long long)r->raw_off, r->z.msg ? r->z.msg : "invalid data");
            return -1;
        } else if (used == 0 && produced == 0) {
            return no_progress(r, "gzip", e);
        }
        if (produced > 0) {
            return (long)produced;
        }
    }
}

static const char *bz_reason(int ret)
{
    switch (ret) {
    case BZ_DATA_ERROR:
        return "data integrity error (bad checksum or block)";
    case BZ_DATA_ERROR_MAGIC:
        return "not bzip2 data (bad magic bytes)";
    case BZ_MEM_ERROR:
        return "out of memory";
    default:
        return "decoder error";
    }
}

static long read_bzip2(sl_reader *r, unsigned char *buf, size_t n, sl_error *e)
{
    if (n > UINT_MAX) {
        n = UINT_MAX;
    }
    for (;;) {
        if (r->member_end) {
            int rc = next_member(r, e);
            if (rc <= 0) {
                return rc;
            }
            BZ2_bzDecompressEnd(&r->bz);
            r->bz_live = 0;
            memset(&r->bz, 0, sizeof(r->bz));
            if (BZ2_bzDecompressInit(&r->bz, 0, 0) != BZ_OK) {
                sl_error_set(e, SL_ERR_NOMEM, "%s: cannot start the bzip2 decoder", r->name);
                return -1;
            }
            r->bz_live = 1;
            r->member_end = 0;
        }
        if (r->in_pos == r->in_len && raw_fill(r, e) < 0) {
            return -1;
        }
        size_t avail = r->in_len - r->in_pos;
        r->bz.next_in = (char *)(r->in + r->in_pos);
        r->bz.avail_in = (unsigned)avail;
        r->bz.next_out = (char *)buf;
        r->bz.avail_out = (unsigned)n;
        int ret = BZ2_bzDecompress(&r->bz);
        size_t used = avail - r->bz.avail_in;
        size_t produced = n - r->bz.avail_out;
        consume(r, used);
        if (ret == BZ_STREAM_END) {
            r->member_end = 1;
        } else if (ret != BZ_OK) {
            sl_error_set(e, SL_ERR_INPUT, "%s: corrupt bzip2 data near byte %llu: %s", r->name,
                         (unsigned long long)r->raw_off, bz_reason(ret));
            return -1;
        } else if (used == 0 && produced == 0) {
            return no_progress(r, "bzip2", e);
        }
        if (produced > 0) {
            return (long)produced;
        }
    }
}

static long read_any(sl_reader *r, unsigned char *buf, size_t n, sl_error *e)
{
    switch (r->comp) {
    case SL_COMPRESS_GZIP:
        return read_gzip(r, buf, n, e);
    case SL_COMPRESS_BZIP2:
        return read_bzip2(r, buf, n, e);
    default:
        return read_plain(r, buf, n, e);
    }
}

long sl_reader_read(sl_reader *r, void *buf, size_t n, sl_error *err)
{
    if (r->failed) {
        if (err) {
            *err = r->ferr;
        }
        return -1;
    }
    if (n == 0) {
        return 0;
    }
    if (n > LONG_MAX) {
        n = LONG_MAX;
    }
    if (r->max_bytes) {
        /* Ask for one byte past the cap so that hitting it is noticed. */
        uint64_t room = r->out_off < r->max_bytes ? r->max_bytes - r->out_off : 0;
        if (n > room + 1) {
            n = (size_t)(room + 1);
        }
    }
    sl_error e;
    sl_error_clear(&e);
    long k = read_any(r, buf, n, &e);
    if (k < 0) {
        return fail(r, err, &e);
    }
    r->out_off += (uint64_t)k;
    if (r->max_bytes && r->out_off > r->max_bytes) {
        sl_error_set(&e, SL_ERR_LIMIT, "%s: input is larger than the limit of %llu bytes%s",
                     r->name, (unsigned long long)r->max_bytes,
                     r->comp != SL_COMPRESS_NONE ? " after decompression" : "");
        return fail(r, err, &e);
    }
    if (r->max_ratio && r->comp != SL_COMPRESS_NONE && r->out_off > SL_READER_RATIO_FLOOR &&
        r->out_off / (r->raw_off ? r->raw_off : 1) >= r->max_ratio) {
        sl_error_set(&e, SL_ERR_LIMIT,
                     "%s: %s data expanded to %llu bytes from %llu: more than %u times its "
                     "compressed size (max_ratio %u; a compression bomb?)",
                     r->name, sl_compression_name(r->comp), (unsigned long long)r->out_off,
                     (unsigned long long)r->raw_off, r->max_ratio, r->max_ratio);
        return fail(r, err, &e);
    }
    return k;
}

static int open_stream(sl_reader *r, uint64_t from, sl_error *err)
{
    r->hs = sl_http_stream_open(r->url, r->headers, &r->http, from, err);
    if (!r->hs) {
        return err && err->code ? err->code : SL_ERR_IO;
    }
    r->size = sl_http_stream_size(r->hs);
    return 0;
}

static int discard(sl_reader *r, uint64_t n, sl_error *err)
{
    if (!r->scratch) {
        r->scratch = malloc(RD_SCRATCH);
        if (!r->scratch) {
            return sl_error_set(err, SL_ERR_NOMEM, "%s: out of memory", r->name);
        }
    }
    uint64_t target = r->out_off + n;
    while (r->out_off < target) {
        uint64_t want = target - r->out_off;
        long k = sl_reader_read(r, r->scratch, want < RD_SCRATCH ? (size_t)want : RD_SCRATCH, err);
        if (k < 0) {
            return err && err->code ? err->code : SL_ERR_IO;
        }
        if (k == 0) {
            return sl_error_set(
                err, SL_ERR_INPUT, "%s: cannot skip to byte %llu: the input ends at byte %llu",
                r->name, (unsigned long long)target, (unsigned long long)r->out_off);
        }
    }
    return 0;
}

int sl_reader_skip(sl_reader *r, uint64_t n, sl_error *err)
{
    if (r->failed) {
        if (err) {
            *err = r->ferr;
        }
        return r->ferr.code ? r->ferr.code : SL_ERR;
    }
    if (n == 0) {
        return 0;
    }
    uint64_t target = r->out_off + n;
    size_t buffered = r->in_len - r->in_pos;
    if (r->comp == SL_COMPRESS_NONE && r->seekable && !r->hs) {
        if (n <= buffered) {
            consume(r, (size_t)n);
            r->out_off = target;
            return 0;
        }
        if (r->size >= 0 && r->raw_off + n > (uint64_t)r->size) {
            return sl_error_set(err, SL_ERR_INPUT,
                                "%s: cannot skip to byte %llu: the input ends at byte %lld",
                                r->name, (unsigned long long)target, (long long)r->size);
        }
        uint64_t rest = n - buffered;
        if (rest > (uint64_t)INT64_MAX || lseek(r->fd, (off_t)rest, SEEK_CUR) < 0) {
            return sl_error_set(err, SL_ERR_IO, "%s: cannot seek to byte %llu: %s", r->name,
                                (unsigned long long)target, strerror(errno));
        }
        r->in_pos = r->in_len = 0;
        r->raw_off += n;
        r->out_off = target;
        r->raw_eof = 0;
        return 0;
    }
    if (r->comp == SL_COMPRESS_NONE && r->hs && n >= RD_RANGE_MIN && n > buffered) {
        sl_http_stream_close(r->hs);
        r->hs = NULL;
        r->in_pos = r->in_len = 0;
        r->raw_eof = 0;
        int rc = open_stream(r, target, err);
        if (rc) {
            sl_error e = err ? *err : (sl_error){0};
            fail(r, NULL, &e);
            return rc;
        }
        if (sl_http_stream_ranged(r->hs)) {
            r->raw_off = target;
            r->out_off = target;
            return 0;
        }
        /* The server sent the whole resource again: discard up to target. */
        r->raw_off = 0;
        r->out_off = 0;
        return discard(r, target, err);
    }
    return discard(r, n, err);
}

/* Decide the compression of an AUTO reader from the name and magic bytes. */
static int sniff(sl_reader *r, sl_error *err)
{
    sl_compression by_ext = SL_COMPRESS_NONE;
    if (has_suffix(r->name, ".gz")) {
        by_ext = SL_COMPRESS_GZIP;
    } else if (has_suffix(r->name, ".bz2")) {
        by_ext = SL_COMPRESS_BZIP2;
    }
    while (r->in_len < RD_SNIFF) {
        int rc = raw_fill(r, err);
        if (rc < 0) {
            return err && err->code ? err->code : SL_ERR_IO;
        }
        if (rc == 0) {
            break;
        }
    }
    const unsigned char *m = r->in;
    static const unsigned char bz_block[6] = {0x31, 0x41, 0x59, 0x26, 0x53, 0x59};
    static const unsigned char bz_end[6] = {0x17, 0x72, 0x45, 0x38, 0x50, 0x90};
    if (r->in_len >= 2 && m[0] == 0x1f && m[1] == 0x8b) {
        r->comp = SL_COMPRESS_GZIP;
    } else if (r->in_len >= 10 && memcmp(m, "BZh", 3) == 0 && m[3] >= '1' && m[3] <= '9' &&
               (memcmp(m + 4, bz_block, 6) == 0 || memcmp(m + 4, bz_end, 6) == 0)) {
        r->comp = SL_COMPRESS_BZIP2;
    } else if (by_ext != SL_COMPRESS_NONE) {
        return sl_error_set(err, SL_ERR_INPUT,
                            "%s: the name ends in %s but the content is not %s data; set "
                            "compression: none to read it as is",
                            r->name, by_ext == SL_COMPRESS_GZIP ? ".gz" : ".bz2",
                            sl_compression_name(by_ext));
    } else {
        r->comp = SL_COMPRESS_NONE;
    }
    return 0;
}

/* The decoders of a reader whose input is open (comp decided or AUTO). */
static int start_decoder(sl_reader *r, sl_error *err)
{
    if (r->comp == SL_COMPRESS_AUTO && sniff(r, err)) {
        return SL_ERR;
    }
    if (r->comp == SL_COMPRESS_GZIP) {
        /* 15 + 32: gzip or zlib header, detected; members are chained in read_gzip. */
        if (inflateInit2(&r->z, 15 + 32) != Z_OK) {
            return sl_error_set(err, SL_ERR_NOMEM, "%s: cannot start the gzip decoder", r->name);
        }
        r->z_live = 1;
    } else if (r->comp == SL_COMPRESS_BZIP2) {
        if (BZ2_bzDecompressInit(&r->bz, 0, 0) != BZ_OK) {
            return sl_error_set(err, SL_ERR_NOMEM, "%s: cannot start the bzip2 decoder", r->name);
        }
        r->bz_live = 1;
    }
    return 0;
}

sl_reader *sl_reader_open(const char *spec, const sl_reader_opts *o, sl_error *err)
{
    static const sl_reader_opts defaults = {0};
    if (!o) {
        o = &defaults;
    }
    if (!spec || !*spec) {
        sl_error_set(err, SL_ERR_USAGE, "input path is empty (expected a file, \"-\" or a URL)");
        return NULL;
    }
    if (o->http && o->http->guard && !is_url(spec)) {
        /* the path came from outside: a local file or stdin is exactly what
         * the guard is there to refuse */
        if (strcmp(spec, "-") == 0) {
            sl_error_set(err, SL_ERR_INPUT, "download refused: stdin: only https URLs are allowed");
        } else if (sl_guard_check_url(o->http->guard, spec, NULL, err) == 0) {
            /* cannot happen: the guard accepts only http(s) */
            sl_error_set(err, SL_ERR_INPUT, "download refused: not an http(s) URL");
        }
        return NULL;
    }
    sl_reader *r = calloc(1, sizeof(*r));
    if (!r) {
        sl_error_set(err, SL_ERR_NOMEM, "%s: out of memory", spec);
        return NULL;
    }
    r->fd = -1;
    r->size = -1;
    r->headers = o->http_headers;
    r->max_bytes = o->max_bytes;
    r->max_ratio = o->max_ratio;
    r->comp = o->compression;
    if (strcmp(spec, "-") == 0) {
        r->kind = SL_READER_STDIN;
        r->name = strdup("stdin");
    } else if (is_url(spec)) {
        r->kind = SL_READER_URL;
        r->name = url_display_name(spec);
        r->url = strdup(spec);
    } else {
        r->kind = SL_READER_FILE;
        r->name = strdup(spec);
    }
    r->in = malloc(RD_BUF);
    if (!r->name || !r->in || (r->kind == SL_READER_URL && !r->url)) {
        sl_error_set(err, SL_ERR_NOMEM, "%s: out of memory", spec);
        goto fail;
    }
    if (r->kind == SL_READER_URL) {
        /* Streams apply timeout_ms as a stall limit, not to the whole download. */
        if (o->http) {
            r->http = *o->http;
        } else {
            sl_http_opts_default(&r->http);
        }
        if (open_stream(r, 0, err)) {
            goto fail;
        }
    } else {
        if (r->kind == SL_READER_STDIN) {
            r->fd = STDIN_FILENO;
        } else {
            r->fd = open(spec, O_RDONLY | O_CLOEXEC);
            if (r->fd < 0) {
                sl_error_set(err, SL_ERR_IO, "%s: cannot open: %s", r->name, strerror(errno));
                goto fail;
            }
        }
        struct stat st;
        if (fstat(r->fd, &st) != 0) {
            sl_error_set(err, SL_ERR_IO, "%s: cannot open: %s", r->name, strerror(errno));
            goto fail;
        }
        if (S_ISDIR(st.st_mode)) {
            sl_error_set(err, SL_ERR_IO, "%s: cannot open: %s", r->name, strerror(EISDIR));
            goto fail;
        }
        if (S_ISREG(st.st_mode)) {
            r->seekable = 1;
            r->size = (int64_t)st.st_size;
            if (r->kind == SL_READER_FILE) {
                r->mtime = (int64_t)st.st_mtime;
            }
        }
    }
    if (start_decoder(r, err) != 0) {
        goto fail;
    }
    if (o->start_offset && sl_reader_skip(r, o->start_offset, err)) {
        goto fail;
    }
    return r;

fail:
    sl_reader_close(r);
    return NULL;
}

sl_reader *sl_reader_open_fn(const char *name, sl_reader_fn fn, void *ud, int64_t size,
                             const sl_reader_opts *o, sl_error *err)
{
    static const sl_reader_opts defaults = {0};
    if (!o) {
        o = &defaults;
    }
    sl_reader *r = calloc(1, sizeof(*r));
    if (!r) {
        sl_error_set(err, SL_ERR_NOMEM, "%s: out of memory", name);
        return NULL;
    }
    r->kind = SL_READER_STREAM;
    r->fd = -1;
    r->size = size;
    r->fn = fn;
    r->fn_ud = ud;
    r->max_bytes = o->max_bytes;
    r->max_ratio = o->max_ratio;
    r->comp = o->compression;
    r->name = strdup(name ? name : "stream");
    r->in = malloc(RD_BUF);
    if (!r->name || !r->in) {
        sl_error_set(err, SL_ERR_NOMEM, "%s: out of memory", name);
        goto fail;
    }
    if (start_decoder(r, err) != 0 ||
        (o->start_offset && sl_reader_skip(r, o->start_offset, err))) {
        goto fail;
    }
    return r;

fail:
    sl_reader_close(r);
    return NULL;
}

void sl_reader_close(sl_reader *r)
{
    if (!r) {
        return;
    }
    if (r->fd >= 0 && r->kind != SL_READER_STDIN) {
        close(r->fd);
    }
    if (r->hs) {
        sl_http_stream_close(r->hs);
    }
    if (r->z_live) {
        inflateEnd(&r->z);
    }
    if (r->bz_live) {
        BZ2_bzDecompressEnd(&r->bz);
    }
    free(r->in);
    free(r->scratch);
    free(r->url);
    free(r->name);
    free(r);
}

int64_t sl_reader_size(const sl_reader *r)
{
    return r->size;
}

uint64_t sl_reader_consumed(const sl_reader *r)
{
    return r->raw_off;
}

uint64_t sl_reader_offset(const sl_reader *r)
{
    return r->out_off;
}

const char *sl_reader_name(const sl_reader *r)
{
    return r->name;
}

sl_reader_kind sl_reader_kind_of(const sl_reader *r)
{
    return r->kind;
}

int64_t sl_reader_mtime(const sl_reader *r)
{
    return r->mtime;
}

const char *sl_reader_etag(const sl_reader *r)
{
    return r->hs ? sl_http_stream_etag(r->hs) : NULL;
}

const char *sl_reader_last_modified(const sl_reader *r)
{
    return r->hs ? sl_http_stream_last_modified(r->hs) : NULL;
}

sl_compression sl_reader_compression(const sl_reader *r)
{
    return r->comp;
}
