/* Which backend the state-store tests run against (included by test_state.c
 * and test_jobs.c only): SQLite files in a temp dir by default, or, with
 * SLUICE_TEST_STATE_URL=postgres://... (tests/integration/test_state_pg.sh
 * sets it), a fresh database per test on that server, so ids start at 1 and
 * no test sees another's rows.
 *
 * tb_raw_int / tb_raw_exec look at the store through a second, raw
 * connection (sqlite3 on the file, libpq with search_path sluice). */
#ifndef SLUICE_TEST_STATE_BACKEND_H
#define SLUICE_TEST_STATE_BACKEND_H

#include <libpq-fe.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/url.h"

static inline const char *tb_pg_base(void)
{
    const char *u = getenv("SLUICE_TEST_STATE_URL");
    return u && *u ? u : NULL;
}

static inline int tb_is_pg(void)
{
    return tb_pg_base() != NULL;
}

static inline int tb_is_pg_url(const char *url)
{
    return strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0;
}

/* base with its database name replaced by db, into out. */
static inline void tb_pg_url_for(const char *db, char *out, size_t cap)
{
    const char *base = tb_pg_base();
    const char *host = strstr(base, "://");
    host = host ? host + 3 : base;
    const char *slash = strchr(host, '/');
    const char *query = strchr(host, '?');
    size_t plen = slash ? (size_t)(slash - base) : query ? (size_t)(query - base) : strlen(base);
    snprintf(out, cap, "%.*s/%s%s", (int)plen, base, db, query ? query : "");
}

static inline void tb_pg_quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static inline PGconn *tb_pg_connect(const char *url)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        fail_msg("connect to the test server: %s", PQerrorMessage(c));
    }
    PQsetNoticeProcessor(c, tb_pg_quiet, NULL);
    return c;
}

static inline void tb_pg_admin(const char *sql)
{
    PGconn *c = tb_pg_connect(tb_pg_base());
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    }
    PQclear(r);
    PQfinish(c);
}

/* A fresh database: its name into name, its URL into url. */
static inline void tb_pg_create(char *name, size_t ncap, char *url, size_t ucap)
{
    static int seq;
    char sql[256];
    snprintf(name, ncap, "sluice_t_%ld_%d", (long)getpid(), ++seq);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
    tb_pg_admin(sql);
    tb_pg_url_for(name, url, ucap);
}

static inline void tb_pg_drop(const char *name)
{
    char sql[256];
    if (!name || !*name) {
        return;
    }
    /* FORCE: connections a killed child left behind */
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    tb_pg_admin(sql);
}

static inline PGresult *tb_pg_query(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, "SET search_path TO sluice");
    PQclear(r);
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    }
    return r;
}

/* First column of the first row as an integer (a boolean as 0/1); -1 when
 * there is no row. */
static inline int64_t tb_raw_int(const char *db, const char *sql)
{
    int64_t v = -1;
    if (tb_is_pg_url(db)) {
        PGconn *c = tb_pg_connect(db);
        PGresult *r = tb_pg_query(c, sql);
        if (PQntuples(r) > 0) {
            const char *s = PQgetisnull(r, 0, 0) ? "0" : PQgetvalue(r, 0, 0);
            v = strcmp(s, "t") == 0 ? 1 : strcmp(s, "f") == 0 ? 0 : strtoll(s, NULL, 10);
        }
        PQclear(r);
        PQfinish(c);
        return v;
    }
    sqlite3 *d = NULL;
    sqlite3_stmt *st = NULL;
    if (strncmp(db, "sqlite:", 7) == 0) {
        db += 7;
    }
    assert_int_equal(sqlite3_open_v2(db, &d, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(d, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(d);
    return v;
}

static inline void tb_raw_exec(const char *db, const char *sql)
{
    if (tb_is_pg_url(db)) {
        PGconn *c = tb_pg_connect(db);
        PQclear(tb_pg_query(c, sql));
        PQfinish(c);
        return;
    }
    sqlite3 *d = NULL;
    if (strncmp(db, "sqlite:", 7) == 0) {
        db += 7;
    }
    assert_int_equal(sqlite3_open(db, &d), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(d, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fail_msg("%s: %s", sql, msg);
    }
    sqlite3_close(d);
}

/* The stored checkpoint value as SQL for tb_raw_int (bytea in Postgres). */
#define TB_KV_VALUE(where)                                                                         \
    (tb_is_pg() ? "SELECT convert_from(value, 'UTF8') FROM kv WHERE " where                        \
                : "SELECT value FROM kv WHERE " where)

/* How the store names db in its messages: the path, or the URL without
 * user and password. Returns a static buffer. */
static inline const char *tb_where(const char *db)
{
    static char buf[PATH_MAX + 64];
    if (!tb_is_pg_url(db)) {
        snprintf(buf, sizeof(buf), "%s", db);
    } else {
        sl_url_redact(db, buf, sizeof(buf), 0);
    }
    return buf;
}

static inline void tb_announce(const char *prog)
{
    printf("%s: backend: %s\n", prog, tb_is_pg() ? "postgres (SLUICE_TEST_STATE_URL)" : "sqlite");
    fflush(stdout);
}

#define TB_SKIP_ON_PG(why)                                                                         \
    do {                                                                                           \
        if (tb_is_pg()) {                                                                          \
            print_message("SKIP on Postgres: %s\n", why);                                          \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

#endif
