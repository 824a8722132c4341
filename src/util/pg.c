/* Postgres sessions for plugins (see include/sluice/pg.h). */
#include "sluice/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"

int sl_pg_is_url(const char *url)
{
    if (!url) {
        return 0;
    }
    return strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0 ||
           (strchr(url, '=') && strncmp(url, "sqlite:", 7) != 0 && !sl_pg_is_redshift_url(url));
}

#define RS_SCHEME "redshift://"
#define RS_PORT "5439"

int sl_pg_is_redshift_url(const char *url)
{
    return url && strncmp(url, RS_SCHEME, strlen(RS_SCHEME)) == 0;
}

char *sl_pg_redshift_conninfo(const char *url)
{
    if (!sl_pg_is_redshift_url(url)) {
        return NULL;
    }
    const char *rest = url + strlen(RS_SCHEME);
    /* authority: up to the first '/', '?' or '#'; the host after its last
     * '@'; a port after the host's ':' (an IPv6 host is in brackets) */
    size_t alen = strcspn(rest, "/?#");
    const char *host = rest;
    for (const char *c = rest; c < rest + alen; c++) {
        if (*c == '@') {
            host = c + 1;
        }
    }
    const char *hend = rest + alen;
    const char *scan = host;
    if (*scan == '[') {
        const char *rb = memchr(scan, ']', (size_t)(hend - scan));
        scan = rb ? rb + 1 : hend;
    }
    int has_port = memchr(scan, ':', (size_t)(hend - scan)) != NULL;
    int add_port = !has_port && hend > host; /* no host: libpq's default (socket) */
    size_t n = strlen("postgres://") + strlen(rest) + (add_port ? strlen(":" RS_PORT) : 0) + 1;
    char *out = malloc(n);
    if (!out) {
        return NULL;
    }
    snprintf(out, n, "postgres://%.*s%s%s", (int)alen, rest, add_port ? ":" RS_PORT : "",
             rest + alen);
    return out;
}

char *sl_pg_first_line(char *dst, size_t cap, const char *msg)
{
    if (cap == 0) {
        return dst;
    }
    if (!msg) {
        msg = "";
    }
    while (*msg == ' ' || *msg == '\t' || *msg == '\n' || *msg == '\r') {
        msg++;
    }
    size_t n = strcspn(msg, "\r\n");
    while (n > 0 && (msg[n - 1] == ' ' || msg[n - 1] == '\t')) {
        n--;
    }
    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(dst, msg, n);
    dst[n] = '\0';
    return dst;
}

static void notice_to_log(void *arg, const char *msg)
{
    char line[512];
    sl_debug((const char *)arg, "postgres: %s", sl_pg_first_line(line, sizeof(line), msg));
}

char *sl_pg_describe(char *dst, size_t cap, const PGresult *res, const PGconn *conn)
{
    char a[512], b[512], c[256];
    const char *prim = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!prim) {
        snprintf(dst, cap, "%s", sl_pg_first_line(a, sizeof(a), conn ? PQerrorMessage(conn) : ""));
        return dst;
    }
    const char *det = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
    snprintf(dst, cap, "%s%s%s%s", sl_pg_first_line(a, sizeof(a), prim), det ? " (" : "",
             det ? sl_pg_first_line(b, sizeof(b), det) : "", det ? ")" : "");
    if (hint) {
        size_t n = strlen(dst);
        snprintf(dst + n, cap - n, "; hint: %s", sl_pg_first_line(c, sizeof(c), hint));
    }
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (st) {
        size_t n = strlen(dst);
        snprintf(dst + n, cap - n, " [SQLSTATE %s]", st);
    }
    return dst;
}

int sl_pg_code(const PGresult *res, const PGconn *conn)
{
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!st || (conn && PQstatus(conn) == CONNECTION_BAD)) {
        return SL_ERR_IO;
    }
    if (strncmp(st, "22", 2) == 0 || strncmp(st, "23", 2) == 0) {
        return SL_ERR_INPUT;
    }
    if (strncmp(st, "42", 2) == 0 || strcmp(st, "2BP01") == 0 || strncmp(st, "28", 2) == 0 ||
        strcmp(st, "3D000") == 0 || strcmp(st, "3F000") == 0 || strncmp(st, "0A", 2) == 0 ||
        strncmp(st, "44", 2) == 0) {
        return SL_ERR_CONFIG;
    }
    return SL_ERR_IO;
}

int sl_pg_conn_failure(const PGresult *res, const PGconn *conn)
{
    if (conn && PQstatus(conn) == CONNECTION_BAD) {
        return 1;
    }
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return !st || strncmp(st, "08", 2) == 0 || strncmp(st, "57", 2) == 0 ||
           strncmp(st, "53", 2) == 0 || strncmp(st, "58", 2) == 0;
}

/* Register the password with the redactor and describe the server for
 * messages (host, port, database: never the URL). */
static int inspect_url(const char *url, const char *label, char *where, sl_error *err)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    if (!opts) {
        /* libpq's message may quote parts of the URL: not shown */
        PQfreemem(perr);
        return sl_error_set(err, SL_ERR_CONFIG,
                            "%s: url: not a valid Postgres connection URI "
                            "(postgres://user:password@host:port/dbname) or key=value string",
                            label);
    }
    const char *host = NULL, *port = NULL, *db = NULL, *user = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val) {
            continue;
        }
        if (strcmp(o->keyword, "password") == 0) {
            sl_secret_register(o->val);
        } else if (strcmp(o->keyword, "host") == 0) {
            host = o->val;
        } else if (strcmp(o->keyword, "hostaddr") == 0 && !host) {
            host = o->val;
        } else if (strcmp(o->keyword, "port") == 0) {
            port = o->val;
        } else if (strcmp(o->keyword, "dbname") == 0) {
            db = o->val;
        } else if (strcmp(o->keyword, "user") == 0) {
            user = o->val;
        }
    }
    snprintf(where, SL_PG_WHERE_MAX, "database %s on %s%s%s",
             db     ? db
             : user ? user
                    : "(default)",
             host ? host : "(local socket)", port ? ":" : "", port ? port : "");
    PQconninfoFree(opts);
    return 0;
}

PGconn *sl_pg_connect(const char *url, const char *label, const char *log_prefix,
                      char where[SL_PG_WHERE_MAX], sl_error *err)
{
    where[0] = '\0';
    char *rs = NULL;
    if (sl_pg_is_redshift_url(url)) {
        if (!(rs = sl_pg_redshift_conninfo(url))) {
            sl_error_set(err, SL_ERR_NOMEM, "%s: out of memory", label);
            return NULL;
        }
        url = rs;
    }
    PGconn *conn = NULL;
    if (inspect_url(url, label, where, err) != 0) {
        goto done;
    }
    /* Later keywords override what the URL says: the text we exchange is UTF-8. */
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname",
                                "client_encoding", NULL};
    const char *const vals[] = {"15", "sluice", url, "UTF8", NULL};
    conn = PQconnectdbParams(keys, vals, 1);
    if (!conn) {
        sl_error_set(err, SL_ERR_NOMEM, "%s: out of memory connecting to %s", label, where);
        goto done;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        char m[512];
        sl_error_set(err, SL_ERR_IO, "%s: cannot connect to %s: %s", label, where,
                     sl_pg_first_line(m, sizeof(m), PQerrorMessage(conn)));
        PQfinish(conn);
        conn = NULL;
        goto done;
    }
    PQsetNoticeProcessor(conn, notice_to_log, (void *)log_prefix);
done:
    free(rs);
    return conn;
}
