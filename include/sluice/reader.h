/* Byte-stream readers: a local file, stdin ("-") or an http(s) URL, optionally
 * gzip- or bzip2-compressed, read in constant memory (fixed 256 KB buffers).
 * Part of the plugin API: sources that read files (csv, ...) use it.
 *
 * Offsets: sl_reader_read() delivers the *decompressed* stream; positions a
 * caller keeps (checkpoints) are offsets in that stream. sl_reader_size() and
 * sl_reader_consumed() are about the *underlying* input (compressed bytes for
 * a .gz file), for progress display.
 *
 * Errors are sentences naming the input ("users.csv.gz: gzip data truncated
 * at byte 1048576 (unexpected end of input)"). A truncated or corrupt
 * compressed stream is always an error, never a silent short read. Once a
 * read failed, every later read fails with the same message. */
#ifndef SLUICE_READER_H
#define SLUICE_READER_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/error.h"
#include "sluice/http.h"

typedef enum sl_compression {
    SL_COMPRESS_AUTO = 0, /* by the .gz/.bz2 extension, and by the content's magic bytes */
    SL_COMPRESS_NONE,
    SL_COMPRESS_GZIP,  /* zlib inflate, multi-member aware */
    SL_COMPRESS_BZIP2, /* libbz2, multi-stream aware */
} sl_compression;

/* "auto|none|gzip|bzip2" -> value; -1 when unknown. */
int sl_compression_parse(const char *s);
const char *sl_compression_name(sl_compression c);

/* Decompressed bytes allowed before max_ratio is applied (small inputs
 * compress well: a 1 MB file of one repeated byte is no bomb). */
#define SL_READER_RATIO_FLOOR ((uint64_t)64 << 20)

typedef struct sl_reader_opts {
    sl_compression compression;
    /* Extra request headers for URLs, as "Name: value\n" lines. Borrowed for
     * the reader's lifetime (it is re-sent when a skip re-requests with a
     * Range). May be NULL. Values are the caller's to register as secrets. */
    const char *http_headers;
    /* HTTP client settings for URLs; NULL = sl_http_opts_default() (for
     * streams timeout_ms limits a stall, not the whole download). Copied; its
     * strings (ca_file, log_prefix) are borrowed for the reader's lifetime. */
    const sl_http_opts *http;
    /* Cap on decompressed bytes delivered; 0 = none. Exceeding it is an
     * error ("input is larger than max_bytes"), not a silent truncation. */
    uint64_t max_bytes;
    /* Cap on the expansion of compressed input: once more than
     * SL_READER_RATIO_FLOOR bytes came out, at most max_ratio decompressed
     * bytes per compressed byte consumed; 0 = none. A compression bomb (1 KB
     * of bzip2 that expands to gigabytes) then fails early with an
     * SL_ERR_LIMIT error naming the input and the limit. */
    uint32_t max_ratio;
    /* Start reading at this decompressed offset (as sl_reader_skip after
     * open: an uncompressed URL is re-requested with a Range header). */
    uint64_t start_offset;
} sl_reader_opts;

typedef enum sl_reader_kind {
    SL_READER_FILE = 0, /* a path: regular file, FIFO, device */
    SL_READER_STDIN,
    SL_READER_URL,
    SL_READER_STREAM, /* a caller's byte stream (sl_reader_open_fn) */
} sl_reader_kind;

typedef struct sl_reader sl_reader;

/* Open spec: a file path, "-" for stdin, or an http(s):// URL. o may be NULL
 * (all defaults). Returns NULL with err set, e.g. "users.csv: cannot open: No
 * such file or directory". The returned reader is owned by the caller
 * (sl_reader_close). */
sl_reader *sl_reader_open(const char *spec, const sl_reader_opts *o, sl_error *err);
/* A caller's byte stream: read up to n bytes into buf; >0 bytes, 0 at the
 * end, -1 on error with err set to a sentence naming the input. */
typedef long (*sl_reader_fn)(void *ud, void *buf, size_t n, sl_error *err);
/* Open a reader over a caller's byte stream (a member extracted from an
 * archive, ...), so that what reads files can read it too. name is what
 * messages show (copied); size its length when known, else -1. o as for
 * sl_reader_open (its http fields are ignored; compression, max_bytes and
 * max_ratio apply to the bytes fn delivers). fn and ud are borrowed until
 * close. Returns NULL with err set. */
sl_reader *sl_reader_open_fn(const char *name, sl_reader_fn fn, void *ud, int64_t size,
                             const sl_reader_opts *o, sl_error *err);
/* Closes the input (stdin is left open). NULL is a no-op. */
void sl_reader_close(sl_reader *r);

/* Read up to n decompressed bytes into buf: >0 bytes, 0 at end of input,
 * -1 on error (err set). */
long sl_reader_read(sl_reader *r, void *buf, size_t n, sl_error *err);
/* Skip n decompressed bytes forward. Plain regular files seek; an
 * uncompressed URL skipping at least 1 MiB is re-requested with a Range
 * header (a server that ignores it costs a re-download of the prefix);
 * everything else reads and discards. Skipping past the end of the input is
 * an error naming the input's length. 0 ok, <0 error. */
int sl_reader_skip(sl_reader *r, uint64_t n, sl_error *err);

/* Total bytes of the underlying input if known (file size, Content-Length),
 * else -1. */
int64_t sl_reader_size(const sl_reader *r);
/* Underlying input bytes consumed so far (seeks included), for progress. */
uint64_t sl_reader_consumed(const sl_reader *r);
/* Decompressed bytes delivered or skipped so far: the stream position. */
uint64_t sl_reader_offset(const sl_reader *r);
/* Path as given, "stdin" for "-", or the URL without userinfo, query and
 * fragment: safe for messages. Valid until close. */
const char *sl_reader_name(const sl_reader *r);
sl_reader_kind sl_reader_kind_of(const sl_reader *r);
/* Modification time (seconds since the epoch) of a regular file, else 0. */
int64_t sl_reader_mtime(const sl_reader *r);
/* An http(s) input's ETag / Last-Modified as the server sent them, else
 * NULL. Valid until close. */
const char *sl_reader_etag(const sl_reader *r);
const char *sl_reader_last_modified(const sl_reader *r);
/* The compression in effect (never AUTO once opened). */
sl_compression sl_reader_compression(const sl_reader *r);

#endif
