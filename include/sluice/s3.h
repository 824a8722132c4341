/* Amazon S3 (and S3-compatible stores), as much as staging a bulk load needs:
 * put, multipart upload, delete, list, and a gzip stream written straight
 * into a multipart upload. Requests are signed with AWS Signature Version 4
 * by libcurl (CURLOPT_AWS_SIGV4); there is no AWS SDK.
 *
 * Credentials, in this order: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY
 * (+ AWS_SESSION_TOKEN) from the environment; else the container/instance
 * role (AWS_CONTAINER_CREDENTIALS_FULL_URI, else IMDSv2 at
 * AWS_EC2_METADATA_SERVICE_ENDPOINT or http://169.254.169.254). Region:
 * the argument, else AWS_REGION, else AWS_DEFAULT_REGION. Endpoint:
 * SLUICE_S3_ENDPOINT (path-style, e.g. a test fake or MinIO), else
 * https://<bucket>.s3.<region>.amazonaws.com. Secrets are registered with
 * the redactor and never appear in any message. */
#ifndef SLUICE_S3_H
#define SLUICE_S3_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/error.h"

/* S3's multipart rules: every part but the last is at least 5 MiB; at most
 * 10,000 parts. */
#define SL_S3_MIN_PART ((size_t)5 << 20)
#define SL_S3_MAX_PARTS 10000

typedef struct sl_s3 sl_s3;
typedef struct sl_s3_upload sl_s3_upload;
typedef struct sl_s3_gzip sl_s3_gzip;

/* "s3://bucket/some/prefix/" -> bucket, key prefix ("some/prefix/"). A URL
 * that is not s3://, an empty or invalid bucket name is an error naming the
 * URL and what is expected. */
int sl_s3_url_parse(const char *url, char *bucket, size_t bucket_cap, char *key, size_t key_cap,
                    sl_error *err);

/* A client for one region. region may be NULL (environment). */
int sl_s3_open(sl_s3 **out, const char *region, sl_error *err);
void sl_s3_close(sl_s3 *s);

/* One object in one request (a manifest). */
int sl_s3_put(sl_s3 *s, const char *bucket, const char *key, const void *data, size_t len,
              const char *content_type, sl_error *err);
/* Remove an object; a missing object is not an error. */
int sl_s3_delete(sl_s3 *s, const char *bucket, const char *key, sl_error *err);
/* Keys under prefix, in order, each passed to fn (return nonzero to stop);
 * follows continuation tokens. For cleaning up what a crashed load left. */
int sl_s3_list(sl_s3 *s, const char *bucket, const char *prefix,
               int (*fn)(void *ud, const char *key, int64_t size), void *ud, sl_error *err);

/* Multipart upload: begin, parts in order (each >= SL_S3_MIN_PART except the
 * last), then complete, or abort (which frees the upload and removes the
 * parts). complete frees the upload whether it succeeds or not. */
int sl_s3_upload_begin(sl_s3 *s, const char *bucket, const char *key, sl_s3_upload **out,
                       sl_error *err);
int sl_s3_upload_part(sl_s3_upload *u, const void *data, size_t len, sl_error *err);
int sl_s3_upload_complete(sl_s3_upload *u, sl_error *err);
void sl_s3_upload_abort(sl_s3_upload *u);

/* A gzip stream into one object: bytes written are compressed (level 1) and
 * uploaded as multipart parts of part_size (0 = 8 MiB) as they fill, so
 * memory stays bounded whatever the object's size. finish completes the
 * upload and reports the uncompressed and compressed sizes; abort removes
 * it. Both free the stream. */
int sl_s3_gzip_open(sl_s3 *s, const char *bucket, const char *key, size_t part_size,
                    sl_s3_gzip **out, sl_error *err);
int sl_s3_gzip_write(sl_s3_gzip *g, const void *data, size_t len, sl_error *err);
int sl_s3_gzip_finish(sl_s3_gzip *g, uint64_t *raw_bytes, uint64_t *gz_bytes, sl_error *err);
void sl_s3_gzip_abort(sl_s3_gzip *g);

#endif
