/* s3_tool: drive the S3 client (src/net/s3.c) from shell tests and benches.
 *
 *   s3_tool put URL [CONTENT-TYPE]  < data     one PutObject
 *   s3_tool gzip URL [PART-BYTES]   < data     gzip stream (prints raw= gz=)
 *   s3_tool upload URL PART-BYTES   < data     plain multipart, parts of PART-BYTES
 *   s3_tool abort URL PART-BYTES    < data     multipart, then abort instead of complete
 *   s3_tool delete URL
 *   s3_tool list URL                           "key<TAB>size" per line
 *
 * URL is s3://bucket/key. Region, credentials and endpoint come from the
 * environment (see include/sluice/s3.h). Exit 0, or 1 with the client's
 * error message on stderr. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/s3.h"

#define READ_CHUNK ((size_t)1 << 20)

static int print_key(void *ud, const char *key, int64_t size)
{
    (void)ud;
    printf("%s\t%lld\n", key, (long long)size);
    return 0;
}

static int die(const char *what, const sl_error *err)
{
    fprintf(stderr, "s3_tool %s: %s\n", what, err->msg);
    return 1;
}

/* Read all of stdin into a malloc'd buffer. */
static char *slurp(size_t *len)
{
    size_t cap = READ_CHUNK, n = 0;
    char *b = malloc(cap);
    ssize_t r;
    while (b && (r = read(0, b + n, cap - n)) > 0) {
        n += (size_t)r;
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(b, cap);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
        }
    }
    *len = n;
    return b;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: s3_tool put|gzip|upload|abort|delete|list s3://bucket/key [ARG]\n");
        return 2;
    }
    const char *cmd = argv[1];
    char bucket[64], key[1025];
    sl_error err;
    sl_error_clear(&err);
    if (sl_s3_url_parse(argv[2], bucket, sizeof(bucket), key, sizeof(key), &err) != 0) {
        return die(cmd, &err);
    }
    sl_s3 *s = NULL;
    if (sl_s3_open(&s, NULL, &err) != 0) {
        return die(cmd, &err);
    }
    int rc = 0;
    if (!strcmp(cmd, "put")) {
        size_t len = 0;
        char *data = slurp(&len);
        rc = sl_s3_put(s, bucket, key, data, len, argc > 3 ? argv[3] : NULL, &err);
        free(data);
    } else if (!strcmp(cmd, "delete")) {
        rc = sl_s3_delete(s, bucket, key, &err);
    } else if (!strcmp(cmd, "list")) {
        rc = sl_s3_list(s, bucket, key, print_key, NULL, &err);
    } else if (!strcmp(cmd, "gzip")) {
        size_t part = argc > 3 ? (size_t)strtoull(argv[3], NULL, 10) : 0;
        sl_s3_gzip *g = NULL;
        rc = sl_s3_gzip_open(s, bucket, key, part, &g, &err);
        char *buf = malloc(READ_CHUNK);
        ssize_t r;
        while (rc == 0 && (r = read(0, buf, READ_CHUNK)) > 0) {
            rc = sl_s3_gzip_write(g, buf, (size_t)r, &err);
        }
        free(buf);
        if (rc == 0) {
            uint64_t raw = 0, gz = 0;
            rc = sl_s3_gzip_finish(g, &raw, &gz, &err);
            if (rc == 0) {
                printf("raw=%llu gz=%llu\n", (unsigned long long)raw, (unsigned long long)gz);
            }
        } else if (g) {
            sl_s3_gzip_abort(g);
        }
    } else if (!strcmp(cmd, "upload") || !strcmp(cmd, "abort")) {
        size_t part = argc > 3 ? (size_t)strtoull(argv[3], NULL, 10) : 0;
        if (part == 0) {
            fprintf(stderr, "s3_tool %s: PART-BYTES needed\n", cmd);
            sl_s3_close(s);
            return 2;
        }
        size_t len = 0;
        char *data = slurp(&len);
        sl_s3_upload *u = NULL;
        rc = sl_s3_upload_begin(s, bucket, key, &u, &err);
        for (size_t off = 0; rc == 0 && (off < len || off == 0); off += part) {
            size_t n = len - off < part ? len - off : part;
            rc = sl_s3_upload_part(u, data + off, n, &err);
            if (len == 0) {
                break;
            }
        }
        if (u && rc != 0) {
            sl_s3_upload_abort(u);
        } else if (u && !strcmp(cmd, "abort")) {
            sl_s3_upload_abort(u);
        } else if (u) {
            rc = sl_s3_upload_complete(u, &err);
        }
        free(data);
    } else {
        fprintf(stderr, "s3_tool: unknown command %s\n", cmd);
        sl_s3_close(s);
        return 2;
    }
    sl_s3_close(s);
    return rc == 0 ? 0 : die(cmd, &err);
}
