/* Byte-stream readers: plain, gzip, bzip2 (multi-member), truncation and
 * corruption errors, skips, stdin, max_bytes, and http(s) with Range. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <bzlib.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "sluice/reader.h"

static char tmpdir[64];

static void path_in(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmpdir, name);
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Text that compresses, with line numbers so misplaced bytes show. */
static char *make_text(size_t len)
{
    char *p = malloc(len);
    assert_non_null(p);
    size_t k = 0;
    unsigned line = 0;
    while (k < len) {
        char tmp[64];
        int n = snprintf(tmp, sizeof(tmp), "%u,user%u@example.org,%u\n", line, line * 7,
                         line * 31 % 1000);
        for (int i = 0; i < n && k < len; i++) {
            p[k++] = tmp[i];
        }
        line++;
    }
    return p;
}

static unsigned char *gzip_data(const void *data, size_t len, size_t *outlen)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&z, len) + 64;
    unsigned char *out = malloc(cap);
    assert_non_null(out);
    z.next_in = (unsigned char *)data;
    z.avail_in = (unsigned)len;
    z.next_out = out;
    z.avail_out = (unsigned)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    *outlen = cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

static char *bzip2_data(const void *data, size_t len, size_t *outlen)
{
    unsigned cap = (unsigned)(len + len / 100 + 1024);
    char *out = malloc(cap);
    assert_non_null(out);
    assert_int_equal(BZ2_bzBuffToBuffCompress(out, &cap, (char *)data, (unsigned)len, 9, 0, 0),
                     BZ_OK);
    *outlen = cap;
    return out;
}

/* Read everything with varying read sizes; returns bytes or -1 (err set). */
static long read_all(sl_reader *r, char *out, size_t cap, sl_error *err)
{
    size_t got = 0;
    size_t sizes[] = {1, 7, 4096, 65536, 300000};
    for (int i = 0;; i++) {
        size_t want = sizes[i % 5];
        if (want > cap - got) {
            want = cap - got;
        }
        if (want == 0) {
            return (long)got;
        }
        long k = sl_reader_read(r, out + got, want, err);
        if (k < 0) {
            return -1;
        }
        if (k == 0) {
            return (long)got;
        }
        got += (size_t)k;
    }
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sl_reader_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_plain(void **state)
{
    (void)state;
    size_t len = 700000; /* several internal buffers */
    char *data = make_text(len);
    char path[128];
    path_in(path, sizeof(path), "plain.csv");
    write_file(path, data, len);

    sl_error err = {0};
    sl_reader *r = sl_reader_open(path, NULL, &err);
    assert_non_null(r);
    assert_string_equal(sl_reader_name(r), path);
    assert_int_equal(sl_reader_kind_of(r), SL_READER_FILE);
    assert_int_equal(sl_reader_compression(r), SL_COMPRESS_NONE);
    assert_int_equal(sl_reader_size(r), (int64_t)len);
    assert_true(sl_reader_mtime(r) > 0);
    char *out = malloc(len + 10);
    assert_int_equal(read_all(r, out, len + 10, &err), (long)len);
    assert_memory_equal(out, data, len);
    assert_int_equal(sl_reader_consumed(r), len);
    assert_int_equal(sl_reader_offset(r), len);
    assert_int_equal(sl_reader_read(r, out, 10, &err), 0); /* EOF stays EOF */
    sl_reader_close(r);
    sl_reader_close(NULL);
    free(out);
    free(data);
}

static void test_open_errors(void **state)
{
    (void)state;
    sl_error err = {0};
    assert_null(sl_reader_open("no/such/users.csv", NULL, &err));
    assert_string_equal(err.msg, "no/such/users.csv: cannot open: No such file or directory");
    assert_int_equal(err.code, SL_ERR_IO);

    assert_null(sl_reader_open(tmpdir, NULL, &err));
    assert_non_null(strstr(err.msg, ": cannot open: Is a directory"));

    assert_null(sl_reader_open("", NULL, &err));
    assert_non_null(strstr(err.msg, "input path is empty"));

    /* .gz name, plain content: an error that says how to read it as is */
    char path[128];
    path_in(path, sizeof(path), "fake.csv.gz");
    write_file(path, "id,name\n1,a\n", 12);
    assert_null(sl_reader_open(path, NULL, &err));
    assert_non_null(strstr(err.msg, "fake.csv.gz: the name ends in .gz but the content is not "
                                    "gzip data; set compression: none"));
    sl_reader_opts o = {.compression = SL_COMPRESS_NONE};
    sl_reader *r = sl_reader_open(path, &o, &err);
    assert_non_null(r);
    char buf[32];
    assert_int_equal(sl_reader_read(r, buf, sizeof(buf), &err), 12);
    sl_reader_close(r);

    assert_int_equal(sl_compression_parse("bzip2"), SL_COMPRESS_BZIP2);
    assert_int_equal(sl_compression_parse("zip"), -1);
    assert_string_equal(sl_compression_name(SL_COMPRESS_GZIP), "gzip");
}

static void check_compressed(const char *name, const void *comp, size_t clen, const char *data,
                             size_t len, sl_compression expect, sl_compression opt)
{
    char path[128];
    path_in(path, sizeof(path), name);
    write_file(path, comp, clen);
    sl_error err = {0};
    sl_reader_opts o = {.compression = opt};
    sl_reader *r = sl_reader_open(path, &o, &err);
    if (!r) {
        fail_msg("%s", err.msg);
    }
    assert_int_equal(sl_reader_compression(r), expect);
    assert_int_equal(sl_reader_size(r), (int64_t)clen);
    char *out = malloc(len + 10);
    long got = read_all(r, out, len + 10, &err);
    if (got < 0) {
        fail_msg("%s", err.msg);
    }
    assert_int_equal(got, (long)len);
    assert_memory_equal(out, data, len);
    assert_int_equal(sl_reader_consumed(r), clen);
    sl_reader_close(r);
    free(out);
}

static void test_gzip(void **state)
{
    (void)state;
    size_t len = 2000000;
    char *data = make_text(len);
    size_t c1, c2;
    unsigned char *g1 = gzip_data(data, len / 2, &c1);
    unsigned char *g2 = gzip_data(data + len / 2, len - len / 2, &c2);
    /* two members, then NUL padding as some tools leave it */
    unsigned char *both = malloc(c1 + c2 + 16);
    memcpy(both, g1, c1);
    memcpy(both + c1, g2, c2);
    memset(both + c1 + c2, 0, 16);
    check_compressed("multi.csv.gz", both, c1 + c2 + 16, data, len, SL_COMPRESS_GZIP,
                     SL_COMPRESS_AUTO);
    /* no extension: recognised by the magic bytes */
    check_compressed("sniffed.csv", both, c1 + c2, data, len, SL_COMPRESS_GZIP, SL_COMPRESS_AUTO);
    check_compressed("explicit.dat", g1, c1, data, len / 2, SL_COMPRESS_GZIP, SL_COMPRESS_GZIP);
    free(both);
    free(g1);
    free(g2);
    free(data);
}

static void test_gzip_truncated_and_corrupt(void **state)
{
    (void)state;
    size_t len = 500000;
    char *data = make_text(len);
    size_t clen;
    unsigned char *g = gzip_data(data, len, &clen);
    char path[128];
    char *out = malloc(len + 10);
    sl_error err = {0};

    /* truncated in the middle, and just before the trailer */
    size_t cuts[] = {clen / 2, clen - 4, 5};
    for (int i = 0; i < 3; i++) {
        path_in(path, sizeof(path), "trunc.csv.gz");
        write_file(path, g, cuts[i]);
        sl_reader *r = sl_reader_open(path, NULL, &err);
        assert_non_null(r);
        assert_int_equal(read_all(r, out, len + 10, &err), -1);
        char want[256];
        snprintf(want, sizeof(want),
                 "%s: gzip data truncated at byte %zu (unexpected end of input)", path, cuts[i]);
        assert_string_equal(err.msg, want);
        /* sticky */
        sl_error again = {0};
        assert_int_equal(sl_reader_read(r, out, 10, &again), -1);
        assert_string_equal(again.msg, want);
        sl_reader_close(r);
    }

    /* flipped bytes in the middle: a corrupt stream, never a short read */
    unsigned char *bad = malloc(clen);
    memcpy(bad, g, clen);
    for (size_t i = clen / 2; i < clen / 2 + 16; i++) {
        bad[i] ^= 0x5a;
    }
    path_in(path, sizeof(path), "corrupt.csv.gz");
    write_file(path, bad, clen);
    sl_reader *r = sl_reader_open(path, NULL, &err);
    assert_non_null(r);
    /* the damage may decode to more bytes than the original: read to the end,
     * where at the latest the CRC check fails */
    char *big = malloc(4 * len);
    assert_int_equal(read_all(r, big, 4 * len, &err), -1);
    free(big);
    assert_non_null(strstr(err.msg, "corrupt.csv.gz: corrupt gzip data near byte "));
    sl_reader_close(r);

    /* garbage after a complete member */
    memcpy(bad, g, clen);
    unsigned char *tail = malloc(clen + 5);
    memcpy(tail, g, clen);
    memcpy(tail + clen, "junk!", 5);
    path_in(path, sizeof(path), "tail.csv.gz");
    write_file(path, tail, clen + 5);
    r = sl_reader_open(path, NULL, &err);
    assert_non_null(r);
    assert_int_equal(read_all(r, out, len + 10, &err), -1);
    assert_non_null(strstr(err.msg, "tail.csv.gz: "));
    sl_reader_close(r);

    free(tail);
    free(bad);
    free(g);
    free(out);
    free(data);
}

static void test_bzip2(void **state)
{
    (void)state;
    size_t len = 1500000;
    char *data = make_text(len);
    size_t c1, c2;
    char *b1 = bzip2_data(data, len / 3, &c1);
    char *b2 = bzip2_data(data + len / 3, len - len / 3, &c2);
    char *both = malloc(c1 + c2);
    memcpy(both, b1, c1);
    memcpy(both + c1, b2, c2);
    check_compressed("multi.csv.bz2", both, c1 + c2, data, len, SL_COMPRESS_BZIP2,
                     SL_COMPRESS_AUTO);
    check_compressed("sniffed.txt", both, c1 + c2, data, len, SL_COMPRESS_BZIP2, SL_COMPRESS_AUTO);

    /* truncated: an error naming the file and the offset */
    char path[128];
    path_in(path, sizeof(path), "trunc.csv.bz2");
    size_t cut = c1 + c2 / 2;
    write_file(path, both, cut);
    sl_error err = {0};
    sl_reader *r = sl_reader_open(path, NULL, &err);
    assert_non_null(r);
    char *out = malloc(len + 10);
    assert_int_equal(read_all(r, out, len + 10, &err), -1);
    char want[256];
    snprintf(want, sizeof(want), "%s: bzip2 data truncated at byte %zu (unexpected end of input)",
             path, cut);
    assert_string_equal(err.msg, want);
    sl_reader_close(r);

    /* corrupt block */
    both[c1 / 2] ^= 0x40;
    both[c1 / 2 + 1] ^= 0x11;
    path_in(path, sizeof(path), "corrupt.csv.bz2");
    write_file(path, both, c1 + c2);
    r = sl_reader_open(path, NULL, &err);
    assert_non_null(r);
    assert_int_equal(read_all(r, out, len + 10, &err), -1);
    assert_non_null(strstr(err.msg, "corrupt.csv.bz2: corrupt bzip2 data near byte "));
    sl_reader_close(r);

    free(out);
    free(both);
    free(b1);
    free(b2);
    free(data);
}

/* Skip then read: the rest must be exactly data[off..]. */
static void check_skip(const char *path, sl_compression comp, const char *data, size_t len,
                       uint64_t first, uint64_t skip)
{
    sl_error err = {0};
    sl_reader_opts o = {.compression = comp};
    sl_reader *r = sl_reader_open(path, &o, &err);
    assert_non_null(r);
    char *out = malloc(len + 10);
    if (first) {
        long k = sl_reader_read(r, out, first, &err);
        assert_true(k > 0);
        first = (uint64_t)k;
        assert_memory_equal(out, data, first);
    }
    if (sl_reader_skip(r, skip, &err) != 0) {
        fail_msg("%s", err.msg);
    }
    assert_int_equal(sl_reader_offset(r), first + skip);
    long got = read_all(r, out, len + 10, &err);
    assert_int_equal(got, (long)(len - first - skip));
    assert_memory_equal(out, data + first + skip, (size_t)got);
    sl_reader_close(r);
    free(out);
}

static void test_skip(void **state)
{
    (void)state;
    size_t len = 900000;
    char *data = make_text(len);
    char plain[128], gz[128], bz[128];
    path_in(plain, sizeof(plain), "skip.csv");
    path_in(gz, sizeof(gz), "skip.csv.gz");
    path_in(bz, sizeof(bz), "skip.csv.bz2");
    write_file(plain, data, len);
    size_t clen;
    unsigned char *g = gzip_data(data, len, &clen);
    write_file(gz, g, clen);
    free(g);
    char *b = bzip2_data(data, len, &clen);
    write_file(bz, b, clen);
    free(b);

    const char *paths[] = {plain, gz, bz};
    for (int i = 0; i < 3; i++) {
        check_skip(paths[i], SL_COMPRESS_AUTO, data, len, 0, 123457);
        check_skip(paths[i], SL_COMPRESS_AUTO, data, len, 100, 5);       /* inside the buffer */
        check_skip(paths[i], SL_COMPRESS_AUTO, data, len, 1000, 600000); /* past it */
        check_skip(paths[i], SL_COMPRESS_AUTO, data, len, 0, len);       /* to the very end */
        /* past the end: an error naming the input's length */
        sl_error err = {0};
        sl_reader *r = sl_reader_open(paths[i], NULL, &err);
        assert_non_null(r);
        assert_true(sl_reader_skip(r, len + 1, &err) < 0);
        char want[256];
        snprintf(want, sizeof(want), "%s: cannot skip to byte %zu: the input ends at byte %zu",
                 paths[i], len + 1, len);
        assert_string_equal(err.msg, want);
        sl_reader_close(r);
    }

    /* start_offset = open + skip */
    sl_error err = {0};
    sl_reader_opts o = {.start_offset = 777};
    sl_reader *r = sl_reader_open(gz, &o, &err);
    assert_non_null(r);
    char buf[16];
    assert_int_equal(sl_reader_read(r, buf, 16, &err), 16);
    assert_memory_equal(buf, data + 777, 16);
    sl_reader_close(r);
    free(data);
}

static void test_max_bytes(void **state)
{
    (void)state;
    char path[128];
    path_in(path, sizeof(path), "cap.csv");
    char data[1000];
    memset(data, 'x', sizeof(data));
    write_file(path, data, sizeof(data));
    char out[2000];
    sl_error err = {0};

    sl_reader_opts o = {.max_bytes = 1000};
    sl_reader *r = sl_reader_open(path, &o, &err);
    assert_int_equal(read_all(r, out, sizeof(out), &err), 1000);
    sl_reader_close(r);

    o.max_bytes = 999;
    r = sl_reader_open(path, &o, &err);
    assert_int_equal(read_all(r, out, sizeof(out), &err), -1);
    char want[200];
    snprintf(want, sizeof(want), "%s: input is larger than the limit of 999 bytes", path);
    assert_string_equal(err.msg, want);
    assert_int_equal(err.code, SL_ERR_LIMIT);
    sl_reader_close(r);
}

/* A compression bomb (issue 7 item 11): 80 MB of one byte, a few hundred
 * bytes as bzip2. With max_ratio it fails once 64 MB came out, naming the
 * input and the ratio; without a cap it reads through (a limit, not a
 * refusal of compressed data). */
static void test_max_ratio(void **state)
{
    (void)state;
    const size_t big = (size_t)80 << 20;
    char *data = malloc(big);
    assert_non_null(data);
    memset(data, 'a', big);
    size_t zlen = 0;
    char *z = bzip2_data(data, big, &zlen);
    free(data);
    assert_true(zlen < 4096);
    char path[128];
    path_in(path, sizeof(path), "bomb.csv.bz2");
    write_file(path, z, zlen);
    free(z);
    char *buf = malloc((size_t)1 << 20);
    assert_non_null(buf);
    for (int capped = 1; capped >= 0; capped--) {
        sl_error err = {0};
        sl_reader_opts o = {.max_ratio = capped ? 1000 : 0};
        sl_reader *r = sl_reader_open(path, &o, &err);
        assert_non_null(r);
        uint64_t total = 0;
        long k;
        while ((k = sl_reader_read(r, buf, (size_t)1 << 20, &err)) > 0) {
            total += (uint64_t)k;
        }
        if (capped) {
            assert_int_equal(k, -1);
            assert_int_equal(err.code, SL_ERR_LIMIT);
            assert_true(total >= SL_READER_RATIO_FLOOR && total < big);
            assert_non_null(strstr(err.msg, path));
            assert_non_null(strstr(err.msg, "more than 1000 times its compressed size"));
        } else {
            assert_int_equal(k, 0);
            assert_int_equal(total, big);
        }
        sl_reader_close(r);
    }
    free(buf);
}

static void test_stdin(void **state)
{
    (void)state;
    const char *data = "id,name\n1,Ann\n2,Bob\n3,Cy\n";
    size_t len = strlen(data);
    int saved = dup(STDIN_FILENO);
    assert_true(saved >= 0);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], data, len), (ssize_t)len);
    close(fds[1]);
    assert_int_equal(dup2(fds[0], STDIN_FILENO), STDIN_FILENO);
    close(fds[0]);

    sl_error err = {0};
    sl_reader *r = sl_reader_open("-", NULL, &err);
    assert_non_null(r);
    assert_string_equal(sl_reader_name(r), "stdin");
    assert_int_equal(sl_reader_kind_of(r), SL_READER_STDIN);
    assert_int_equal(sl_reader_size(r), -1);
    assert_int_equal(sl_reader_skip(r, 8, &err), 0); /* a pipe: read and discard */
    char out[64];
    assert_int_equal(read_all(r, out, sizeof(out), &err), (long)(len - 8));
    assert_memory_equal(out, data + 8, len - 8);
    sl_reader_close(r);

    /* stdin is left open by close: restore it */
    assert_int_equal(dup2(saved, STDIN_FILENO), STDIN_FILENO);
    close(saved);
}

/* ------------------------------------------------------------ http(s) */

static const char *http_data;
static size_t http_len;
static unsigned char *http_gz;
static size_t http_gzlen;
static int http_ranged_requests;
static int http_requests;
static char http_last_auth[128];

static enum MHD_Result serve(void *cls, struct MHD_Connection *c, const char *url,
                             const char *method, const char *version, const char *upload,
                             size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)method;
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)con_cls;
    http_requests++;
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Token");
    snprintf(http_last_auth, sizeof(http_last_auth), "%s", auth ? auth : "");
    const char *body = NULL;
    size_t blen = 0;
    int ranges = 1;
    if (strcmp(url, "/data.csv") == 0) {
        body = http_data;
        blen = http_len;
    } else if (strcmp(url, "/norange/data.csv") == 0) {
        body = http_data;
        blen = http_len;
        ranges = 0;
    } else if (strcmp(url, "/data.csv.gz") == 0) {
        body = (const char *)http_gz;
        blen = http_gzlen;
    }
    struct MHD_Response *resp;
    enum MHD_Result rc;
    if (!body) {
        resp = MHD_create_response_from_buffer(9, (void *)"not found", MHD_RESPMEM_PERSISTENT);
        rc = MHD_queue_response(c, 404, resp);
        MHD_destroy_response(resp);
        return rc;
    }
    const char *range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range");
    unsigned long long from = 0;
    if (ranges && range && sscanf(range, "bytes=%llu-", &from) == 1 && from < blen) {
        http_ranged_requests++;
        resp = MHD_create_response_from_buffer(blen - from, (void *)(body + from),
                                               MHD_RESPMEM_PERSISTENT);
        char cr[96];
        snprintf(cr, sizeof(cr), "bytes %llu-%zu/%zu", from, blen - 1, blen);
        MHD_add_response_header(resp, "Content-Range", cr);
        rc = MHD_queue_response(c, 206, resp);
    } else {
        resp = MHD_create_response_from_buffer(blen, (void *)body, MHD_RESPMEM_PERSISTENT);
        rc = MHD_queue_response(c, 200, resp);
    }
    MHD_destroy_response(resp);
    return rc;
}

static void test_http(void **state)
{
    (void)state;
    size_t len = 3000000;
    char *data = make_text(len);
    http_data = data;
    http_len = len;
    http_gz = gzip_data(data, len, &http_gzlen);
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, serve,
                                            NULL, MHD_OPTION_END);
    assert_non_null(d);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    unsigned port = info->port;
    char url[256], want_name[256];
    snprintf(url, sizeof(url), "http://user:pw@127.0.0.1:%u/data.csv?sig=SECRET#x", port);
    snprintf(want_name, sizeof(want_name), "http://127.0.0.1:%u/data.csv", port);
    sl_http_opts ho;
    sl_http_opts_default(&ho);
    ho.max_attempts = 1;
    sl_reader_opts o = {.http_headers = "X-Token: tok123\n", .http = &ho};
    char *out = malloc(len + 10);
    sl_error err = {0};

    /* whole download; the display name drops userinfo, query and fragment */
    sl_reader *r = sl_reader_open(url, &o, &err);
    if (!r) {
        fail_msg("%s", err.msg);
    }
    assert_string_equal(sl_reader_name(r), want_name);
    assert_int_equal(sl_reader_kind_of(r), SL_READER_URL);
    assert_int_equal(sl_reader_size(r), (int64_t)len);
    assert_string_equal(http_last_auth, "tok123");
    assert_int_equal(read_all(r, out, len + 10, &err), (long)len);
    assert_memory_equal(out, data, len);
    sl_reader_close(r);

    /* a long skip re-requests with a Range */
    http_ranged_requests = 0;
    r = sl_reader_open(url, &o, &err);
    assert_non_null(r);
    assert_int_equal(sl_reader_read(r, out, 100, &err), 100);
    assert_int_equal(sl_reader_skip(r, 2000000, &err), 0);
    assert_int_equal(http_ranged_requests, 1);
    assert_int_equal(sl_reader_consumed(r), 2000100);
    long got = read_all(r, out, len + 10, &err);
    assert_int_equal(got, (long)(len - 2000100));
    assert_memory_equal(out, data + 2000100, (size_t)got);
    sl_reader_close(r);

    /* a server that ignores Range: same bytes, by re-reading */
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/norange/data.csv", port);
    r = sl_reader_open(url, &o, &err);
    assert_non_null(r);
    assert_int_equal(sl_reader_skip(r, 2500000, &err), 0);
    got = read_all(r, out, len + 10, &err);
    assert_int_equal(got, (long)(len - 2500000));
    assert_memory_equal(out, data + 2500000, (size_t)got);
    sl_reader_close(r);

    /* gzip over http, recognised by the extension and magic */
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/data.csv.gz", port);
    r = sl_reader_open(url, &o, &err);
    assert_non_null(r);
    assert_int_equal(sl_reader_compression(r), SL_COMPRESS_GZIP);
    assert_int_equal(sl_reader_skip(r, 1234567, &err), 0);
    got = read_all(r, out, len + 10, &err);
    assert_int_equal(got, (long)(len - 1234567));
    assert_memory_equal(out, data + 1234567, (size_t)got);
    sl_reader_close(r);

    /* 404: the open fails with the status */
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/missing.csv?token=SECRET", port);
    assert_null(sl_reader_open(url, &o, &err));
    assert_non_null(strstr(err.msg, "404"));
    assert_null(strstr(err.msg, "SECRET"));

    MHD_stop_daemon(d);
    free(http_gz);
    free(out);
    free(data);
}

/* A caller's byte stream: chunks as the callback gives them, gzip sniffed
 * in it, max_bytes applied, skips read and discard, the callback's error
 * kept (sticky). */
typedef struct mem_stream {
    const unsigned char *p;
    size_t len, off, chunk;
    size_t fail_at; /* 0 = never */
} mem_stream;

static long mem_read(void *ud, void *buf, size_t n, sl_error *err)
{
    mem_stream *m = ud;
    if (m->fail_at && m->off >= m->fail_at) {
        sl_error_set(err, SL_ERR_INPUT, "x.zip!a.csv: damaged zip: bad CRC");
        return -1;
    }
    size_t k = m->len - m->off;
    if (k > n) {
        k = n;
    }
    if (k > m->chunk) {
        k = m->chunk;
    }
    memcpy(buf, m->p + m->off, k);
    m->off += k;
    return (long)k;
}

static void test_stream_fn(void **state)
{
    (void)state;
    const char *text = "email,name\nada@example.org,Ada\ngrace@example.org,Grace\n";
    size_t tlen = strlen(text);
    mem_stream m = {(const unsigned char *)text, tlen, 0, 7, 0};
    sl_error err;
    sl_reader *r = sl_reader_open_fn("x.zip!a.csv", mem_read, &m, (int64_t)tlen, NULL, &err);
    assert_non_null(r);
    assert_int_equal(sl_reader_kind_of(r), SL_READER_STREAM);
    assert_string_equal(sl_reader_name(r), "x.zip!a.csv");
    assert_int_equal(sl_reader_size(r), (int64_t)tlen);
    assert_int_equal(sl_reader_compression(r), SL_COMPRESS_NONE);
    assert_int_equal(sl_reader_skip(r, 6, &err), 0);
    char out[256];
    size_t got = 0;
    long k;
    while ((k = sl_reader_read(r, out + got, sizeof(out) - got, &err)) > 0) {
        got += (size_t)k;
    }
    assert_int_equal(k, 0);
    assert_int_equal(got, tlen - 6);
    assert_memory_equal(out, text + 6, got);
    sl_reader_close(r);

    /* gzip inside the stream is recognised (AUTO) and max_bytes applies */
    unsigned char gz[256];
    uLongf gzlen = sizeof(gz);
    z_stream z = {0};
    assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (unsigned char *)text;
    z.avail_in = (uInt)tlen;
    z.next_out = gz;
    z.avail_out = (uInt)gzlen;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    gzlen = z.total_out;
    deflateEnd(&z);
    mem_stream g = {gz, gzlen, 0, 5, 0};
    sl_reader_opts o = {0};
    o.max_bytes = 10;
    r = sl_reader_open_fn("x.zip!a.csv.gz", mem_read, &g, -1, &o, &err);
    assert_non_null(r);
    assert_int_equal(sl_reader_compression(r), SL_COMPRESS_GZIP);
    while ((k = sl_reader_read(r, out, sizeof(out), &err)) > 0) {
    }
    assert_int_equal(k, -1);
    assert_int_equal(err.code, SL_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "x.zip!a.csv.gz: input is larger than the limit of 10 bytes"));
    sl_reader_close(r);

    /* the callback's error, sticky */
    mem_stream f = {(const unsigned char *)text, tlen, 0, 8, 16};
    r = sl_reader_open_fn("x.zip!a.csv", mem_read, &f, -1, NULL, &err);
    assert_non_null(r);
    while ((k = sl_reader_read(r, out, sizeof(out), &err)) > 0) {
    }
    assert_int_equal(k, -1);
    assert_string_equal(err.msg, "x.zip!a.csv: damaged zip: bad CRC");
    sl_error_clear(&err);
    assert_int_equal(sl_reader_read(r, out, sizeof(out), &err), -1);
    assert_string_equal(err.msg, "x.zip!a.csv: damaged zip: bad CRC");
    sl_reader_close(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),     cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_gzip),      cmocka_unit_test(test_gzip_truncated_and_corrupt),
        cmocka_unit_test(test_bzip2),     cmocka_unit_test(test_skip),
        cmocka_unit_test(test_max_bytes), cmocka_unit_test(test_max_ratio),
        cmocka_unit_test(test_stream_fn), cmocka_unit_test(test_stdin),
        cmocka_unit_test(test_http),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
