/* sql source: database values -> record fields (see sqlv.h). */
#include "sqlv.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

int sqlv_json_number(const char *s, size_t len)
{
    size_t i = 0;
    if (i < len && s[i] == '-') {
        i++;
    }
    if (i >= len) {
        return 0;
    }
    if (s[i] == '0') {
        i++;
    } else if (s[i] >= '1' && s[i] <= '9') {
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
    } else {
        return 0;
    }
    if (i < len && s[i] == '.') {
        size_t d = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
        if (i == d) {
            return 0;
        }
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-')) {
            i++;
        }
        size_t d = i;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
        if (i == d) {
            return 0;
        }
    }
    return i == len;
}

static int digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }
    return 1;
}

size_t sqlv_iso_timestamp(const char *in, size_t len, char *out, size_t cap)
{
    /* YYYY-MM-DD HH:MM:SS[.f+][(+|-)HH[:MM[:SS]]]; four-digit years only (a
     * BC date or a year past 9999 stays as the server wrote it) */
    if (len < 19 || len + 4 > cap || !digits(in, 4) || in[4] != '-' || !digits(in + 5, 2) ||
        in[7] != '-' || !digits(in + 8, 2) || in[10] != ' ' || !digits(in + 11, 2) ||
        in[13] != ':' || !digits(in + 14, 2) || in[16] != ':' || !digits(in + 17, 2)) {
        return 0;
    }
    size_t i = 19;
    if (i < len && in[i] == '.') {
        i++;
        size_t d = i;
        while (i < len && in[i] >= '0' && in[i] <= '9') {
            i++;
        }
        if (i == d) {
            return 0;
        }
    }
    memcpy(out, in, i);
    out[10] = 'T';
    size_t o = i;
    if (i == len) {
        out[o] = '\0';
        return o;
    }
    if (in[i] != '+' && in[i] != '-') {
        return 0;
    }
    const char *z = in + i;
    size_t zl = len - i;
    if (!((zl == 3 && digits(z + 1, 2)) ||
          (zl == 6 && digits(z + 1, 2) && z[3] == ':' && digits(z + 4, 2)) ||
          (zl == 9 && digits(z + 1, 2) && z[3] == ':' && digits(z + 4, 2) && z[6] == ':' &&
           digits(z + 7, 2)))) {
        return 0;
    }
    int zero = 1;
    for (size_t k = 1; k < zl; k++) {
        if (z[k] != '0' && z[k] != ':') {
            zero = 0;
        }
    }
    if (zero) {
        out[o++] = 'Z';
    } else {
        memcpy(out + o, z, zl);
        o += zl;
        if (zl == 3) {
            memcpy(out + o, ":00", 3);
            o += 3;
        }
    }
    out[o] = '\0';
    return o;
}

/* The last field added to r. */
static sl_field *last(sl_record *r)
{
    return &r->fields[r->nfields - 1];
}

/* A number as text: int when it is an integer that fits, else a float that
 * keeps the text (exact for numeric), else (NaN, Infinity) the string. */
static int add_number(sl_record *r, const char *name, uint32_t nlen, const char *val, size_t len)
{
    if (!sqlv_json_number(val, len)) {
        return sl_record_add_str(r, name, nlen, val, len);
    }
    char tmp[32];
    if (len < sizeof(tmp) && !memchr(val, '.', len) && !memchr(val, 'e', len) &&
        !memchr(val, 'E', len)) {
        memcpy(tmp, val, len);
        tmp[len] = '\0';
        errno = 0;
        char *end = NULL;
        long long v = strtoll(tmp, &end, 10);
        if (errno == 0 && end == tmp + len) {
            return sl_record_add_int(r, name, nlen, (int64_t)v);
        }
    }
    if (sl_record_add_str(r, name, nlen, val, len) < 0) {
        return -1;
    }
    sl_field *f = last(r);
    uint32_t off = f->v.s.off;
    double d = strtod(r->data.data + off, NULL);
    f->type = SL_T_FLOAT;
    f->v.f = d;
    f->toff = off;
    f->tlen = (uint32_t)len;
    f->flags |= SL_FIELD_NUMTEXT;
    return 0;
}

/* A JSON value: object/array as JSON, scalars as their own type. */
static int add_json(sl_record *r, const char *name, uint32_t nlen, const char *val, size_t len)
{
    size_t i = 0;
    while (i < len && (val[i] == ' ' || val[i] == '\t' || val[i] == '\n' || val[i] == '\r')) {
        i++;
    }
    if (i < len && (val[i] == '{' || val[i] == '[')) {
        return sl_record_add_json(r, name, nlen, val, len);
    }
    json_error_t je;
    json_t *j = json_loadb(val, len, JSON_DECODE_ANY, &je);
    int rc;
    if (!j) {
        rc = sl_record_add_str(r, name, nlen, val, len);
    } else if (json_is_string(j)) {
        rc = sl_record_add_str(r, name, nlen, json_string_value(j), json_string_length(j));
    } else if (json_is_integer(j)) {
        rc = sl_record_add_int(r, name, nlen, (int64_t)json_integer_value(j));
    } else if (json_is_real(j)) {
        rc = add_number(r, name, nlen, val + i, strcspn(val + i, " \t\r\n"));
    } else if (json_is_boolean(j)) {
        rc = sl_record_add_bool(r, name, nlen, json_is_true(j));
    } else {
        rc = sl_record_add_null(r, name, nlen);
    }
    json_decref(j);
    return rc;
}

int sqlv_pg_add(sl_record *r, const char *name, uint32_t nlen, unsigned oid, const char *val,
                size_t len, int isnull)
{
    if (isnull) {
        return sl_record_add_null(r, name, nlen);
    }
    switch (oid) {
    case SQLV_INT2OID:
    case SQLV_INT4OID:
    case SQLV_INT8OID:
    case SQLV_OIDOID:
    case SQLV_FLOAT4OID:
    case SQLV_FLOAT8OID:
    case SQLV_NUMERICOID:
        return add_number(r, name, nlen, val, len);
    case SQLV_BOOLOID:
        if (len == 1 && (val[0] == 't' || val[0] == 'f')) {
            return sl_record_add_bool(r, name, nlen, val[0] == 't');
        }
        return sl_record_add_str(r, name, nlen, val, len);
    case SQLV_TIMESTAMPOID:
    case SQLV_TIMESTAMPTZOID: {
        char iso[64];
        size_t n = sqlv_iso_timestamp(val, len, iso, sizeof(iso));
        return n ? sl_record_add_str(r, name, nlen, iso, n)
                 : sl_record_add_str(r, name, nlen, val, len);
    }
    case SQLV_JSONOID:
    case SQLV_JSONBOID:
        return add_json(r, name, nlen, val, len);
    default:
        return sl_record_add_str(r, name, nlen, val, len);
    }
}

static int has_word(const char *decl, const char *w)
{
    return decl && strcasestr(decl, w) != NULL;
}

int sqlv_sqlite_add(sl_record *r, const char *name, uint32_t nlen, sqlite3_stmt *st, int col,
                    const char *decl)
{
    switch (sqlite3_column_type(st, col)) {
    case SQLITE_INTEGER: {
        sqlite3_int64 v = sqlite3_column_int64(st, col);
        if (has_word(decl, "BOOL") && (v == 0 || v == 1)) {
            return sl_record_add_bool(r, name, nlen, (int)v);
        }
        return sl_record_add_int(r, name, nlen, (int64_t)v);
    }
    case SQLITE_FLOAT: {
        double d = sqlite3_column_double(st, col);
        if (!isfinite(d)) {
            return sl_record_add_str(r, name, nlen,
                                     d != d  ? "NaN"
                                     : d > 0 ? "Infinity"
                                             : "-Infinity",
                                     d != d  ? 3
                                     : d > 0 ? 8
                                             : 9);
        }
        return sl_record_add_float(r, name, nlen, d);
    }
    case SQLITE_TEXT: {
        const char *t = (const char *)sqlite3_column_text(st, col);
        size_t n = (size_t)sqlite3_column_bytes(st, col);
        if (has_word(decl, "JSON") && n > 0 && (t[0] == '{' || t[0] == '[')) {
            json_error_t je;
            json_t *j = json_loadb(t, n, 0, &je);
            if (j) {
                json_decref(j);
                return sl_record_add_json(r, name, nlen, t, n);
            }
        }
        if (has_word(decl, "BOOL") && n == 4 && strncasecmp(t, "true", 4) == 0) {
            return sl_record_add_bool(r, name, nlen, 1);
        }
        if (has_word(decl, "BOOL") && n == 5 && strncasecmp(t, "false", 5) == 0) {
            return sl_record_add_bool(r, name, nlen, 0);
        }
        return sl_record_add_str(r, name, nlen, t, n);
    }
    case SQLITE_BLOB: {
        const unsigned char *b = sqlite3_column_blob(st, col);
        size_t n = (size_t)sqlite3_column_bytes(st, col);
        /* like Postgres' bytea output: "\\x" then two hex digits a byte */
        char *h = malloc(2 * n + 3);
        if (!h) {
            return SL_ERR_NOMEM;
        }
        static const char hex[] = "0123456789abcdef";
        h[0] = '\\';
        h[1] = 'x';
        for (size_t i = 0; i < n; i++) {
            h[2 + 2 * i] = hex[b[i] >> 4];
            h[3 + 2 * i] = hex[b[i] & 15];
        }
        int rc = sl_record_add_str(r, name, nlen, h, 2 * n + 2);
        free(h);
        return rc;
    }
    default:
        return sl_record_add_null(r, name, nlen);
    }
}
