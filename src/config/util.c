/* Message formatting and small helpers shared by the config module. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/internal.h"
#include "sluice/log.h"

/* One message line is cut at this length (a runaway value cannot flood). */
#define CFG_MSG_MAX 2048

static void vappend(sl_buf *errors, const char *prefix, const char *path, const char *fmt,
                    va_list ap)
{
    char msg[CFG_MSG_MAX];
    int n = snprintf(msg, sizeof(msg), "%s%s%s", prefix, path && *path ? path : "",
                     path && *path ? ": " : "");
    if (n < 0 || (size_t)n >= sizeof(msg)) {
        n = (int)strlen(msg);
    }
    vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
    /* one error, one line */
    for (char *p = msg; *p; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = ' ';
        }
    }
    sl_buf_puts(errors, msg);
    sl_buf_putc(errors, '\n');
}

void cfg_err(sl_buf *errors, const char *file, int line, int col, const char *path, const char *fmt,
             ...)
{
    if (!errors) {
        return;
    }
    char prefix[CFG_WHERE_MAX + 2];
    if (line > 0) {
        cfg_where(prefix, sizeof(prefix) - 2, file, line, col);
        strcat(prefix, ": ");
    } else if (file && *file) {
        snprintf(prefix, sizeof(prefix), "%.*s: ", CFG_WHERE_MAX - 4, file);
    } else {
        prefix[0] = '\0';
    }
    va_list ap;
    va_start(ap, fmt);
    vappend(errors, prefix, path, fmt, ap);
    va_end(ap);
}

void cfg_errw(sl_buf *errors, const char *where, const char *path, const char *fmt, ...)
{
    if (!errors) {
        return;
    }
    char prefix[CFG_WHERE_MAX + 2];
    snprintf(prefix, sizeof(prefix), "%s%s", where ? where : "", where && *where ? ": " : "");
    va_list ap;
    va_start(ap, fmt);
    vappend(errors, prefix, path, fmt, ap);
    va_end(ap);
}

void cfg_redact_tail(sl_buf *errors, size_t from)
{
    if (!errors || !errors->data || errors->len <= from) {
        return;
    }
    /* "[redacted]" (10 bytes) replaces a secret of at least 4 bytes: the text
     * grows at most 2.5 times. */
    size_t n = errors->len - from;
    size_t cap = n * 3 + 16;
    char *tmp = malloc(cap);
    if (!tmp) {
        return;
    }
    memcpy(tmp, errors->data + from, n);
    tmp[n] = '\0';
    sl_redact(tmp, cap);
    errors->len = from;
    errors->data[from] = '\0';
    sl_buf_puts(errors, tmp);
    free(tmp);
}

void cfg_where(char *out, size_t cap, const char *file, int line, int col)
{
    /* keep the tail of a long path: the file name is the useful part */
    const char *f = file ? file : "";
    size_t fl = strlen(f);
    size_t room = cap > 32 ? cap - 32 : 0;
    if (fl > room) {
        f += fl - room;
    }
    snprintf(out, cap, "%s:%d:%d", f, line, col);
}

void cfg_path_key(char *out, size_t cap, const char *path, const char *key)
{
    if (path && *path) {
        snprintf(out, cap, "%s.%s", path, key);
    } else {
        snprintf(out, cap, "%s", key);
    }
}

void cfg_path_index(char *out, size_t cap, const char *path, size_t i)
{
    snprintf(out, cap, "%s[%zu]", path ? path : "", i);
}

const char *cfg_quote(const char *s, char *out, size_t cap)
{
    size_t max = cap > 16 ? cap - 16 : 0;
    if (max > 48) {
        max = 48;
    }
    size_t o = 0;
    out[o++] = '\'';
    size_t i = 0;
    for (; s[i] && o < max + 1; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[o++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    if (s[i]) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = '\'';
    out[o] = '\0';
    return out;
}

long cfg_map_find(const sl_node *map, const char *key)
{
    if (!map || map->kind != SL_NODE_MAP) {
        return -1;
    }
    for (size_t i = 0; i < map->n; i++) {
        if (strcmp(map->keys[i], key) == 0) {
            return (long)i;
        }
    }
    return -1;
}

int cfg_edit_distance(const char *a, const char *b, int cap)
{
    /* optimal string alignment distance over three rolling rows */
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) {
        return cap + 1;
    }
    if ((la > lb ? la - lb : lb - la) > (size_t)cap) {
        return cap + 1;
    }
    int rows[3][65];
    int *pp = rows[0], *prev = rows[1], *cur = rows[2];
    for (size_t j = 0; j <= lb; j++) {
        prev[j] = (int)j;
    }
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int ca = tolower((unsigned char)a[i - 1]);
            int cb = tolower((unsigned char)b[j - 1]);
            int cost = ca != cb;
            int v = prev[j] + 1;
            if (cur[j - 1] + 1 < v) {
                v = cur[j - 1] + 1;
            }
            if (prev[j - 1] + cost < v) {
                v = prev[j - 1] + cost;
            }
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && pp[j - 2] + 1 < v) {
                v = pp[j - 2] + 1;
            }
            cur[j] = v;
        }
        int *t = pp;
        pp = prev;
        prev = cur;
        cur = t;
    }
    return prev[lb] > cap ? cap + 1 : prev[lb];
}

typedef struct msgline {
    const char *s;
    size_t len;
    long line, col;
    size_t idx;
} msgline;

static int msgline_cmp(const void *a, const void *b)
{
    const msgline *x = a, *y = b;
    if (x->line != y->line) {
        return x->line < y->line ? -1 : 1;
    }
    if (x->col != y->col) {
        return x->col < y->col ? -1 : 1;
    }
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

void cfg_sort_tail(sl_buf *errors, size_t from, const char *file)
{
    if (!errors || !errors->data || errors->len <= from || !file) {
        return;
    }
    size_t fl = strlen(file);
    size_t n = 0;
    for (size_t i = from; i < errors->len; i++) {
        n += errors->data[i] == '\n';
    }
    if (n < 2) {
        return;
    }
    msgline *m = calloc(n, sizeof(*m));
    char *copy = malloc(errors->len - from + 1);
    if (!m || !copy) {
        goto done;
    }
    memcpy(copy, errors->data + from, errors->len - from);
    copy[errors->len - from] = '\0';
    size_t k = 0;
    for (char *p = copy; *p && k < n; k++) {
        char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) + 1 : strlen(p);
        m[k] = (msgline){p, len, 0, 0, k};
        /* "FILE:LINE:COL: ..." sorts by position; messages without one first */
        if (len > fl && strncmp(p, file, fl) == 0 && p[fl] == ':') {
            char *e1, *e2;
            long line = strtol(p + fl + 1, &e1, 10);
            if (e1 != p + fl + 1 && *e1 == ':') {
                long col = strtol(e1 + 1, &e2, 10);
                if (e2 != e1 + 1 && *e2 == ':') {
                    m[k].line = line;
                    m[k].col = col;
                }
            }
        }
        p += len;
    }
    qsort(m, k, sizeof(*m), msgline_cmp);
    errors->len = from;
    errors->data[from] = '\0';
    for (size_t i = 0; i < k; i++) {
        sl_buf_append(errors, m[i].s, m[i].len);
    }

done:
    free(m);
    free(copy);
}
