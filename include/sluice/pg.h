/* The one libpq connection helper, shared by every plugin that talks to
 * Postgres (the sql_table sink, the sql source): how a connection URL is
 * checked and described without its password, how a session is opened, and
 * how a server error becomes one line and a sluice error code. Implemented
 * in src/util/pg.c (it needs only libpq and the util layer).
 *
 * Plugins may include only the headers in include/sluice, so the shared piece lives
 * here rather than in one plugin's folder; libpq is a dependency of the core
 * already. */
#ifndef SLUICE_PG_H
#define SLUICE_PG_H

#include <stddef.h>

#include <libpq-fe.h>

#include "sluice/error.h"

/* Room for a description of the server ("database app on 10.0.0.5:5432"). */
#define SL_PG_WHERE_MAX 300

/* 1 when url names a Postgres server: a postgres:// or postgresql:// URI,
 * or a libpq key=value string ("host=... dbname=..."); "sqlite:..." and
 * "redshift://..." never. */
int sl_pg_is_url(const char *url);

/* 1 when url is a redshift:// URI (redshift://user:pw@host:5439/db?...).
 * Amazon Redshift speaks the Postgres wire protocol: sl_pg_connect accepts
 * such a URL and hands libpq the same URI as postgres://, with port 5439
 * when the URL names none. Plugins use this to pick the Redshift dialect. */
int sl_pg_is_redshift_url(const char *url);

/* The libpq conninfo for a redshift:// URL: "postgres://" + the rest, with
 * ":5439" after the host when the URL names no port. Returns a malloc'd
 * string (free it; it holds the password) or NULL (out of memory, or not a
 * redshift:// URL). */
char *sl_pg_redshift_conninfo(const char *url);

/* Open a session on url (the option's text, a secret: never printed; a
 * postgres:// URI, a key=value string or a redshift:// URI). The
 * password is registered with the redactor first; *where receives a
 * description of the server for messages (database, host, port: never the
 * URL). Sessions are UTF-8, connect within 15 s and are named "sluice" when
 * the URL names no application. Server notices go to the debug log under
 * log_prefix (borrowed: it must outlive the connection). label starts error
 * messages ("postgres table \"t\""). Returns the connection (PQfinish it) or
 * NULL with err set: SL_ERR_CONFIG for a malformed URL, SL_ERR_IO when the
 * server cannot be reached or refuses the login. */
PGconn *sl_pg_connect(const char *url, const char *label, const char *log_prefix,
                      char where[SL_PG_WHERE_MAX], sl_error *err);

/* The server's error as one line into dst: the primary message, then
 * "(detail)", "; hint: ..." and " [SQLSTATE xxxxx]"; without a result (or a
 * result without fields) the connection's message. Returns dst. */
char *sl_pg_describe(char *dst, size_t cap, const PGresult *res, const PGconn *conn);

/* The sluice error code for a failed statement, by SQLSTATE (never by the
 * message, which is in the server's language):
 *   SL_ERR_INPUT  the data: 22 data exception, 23 integrity constraint;
 *   SL_ERR_CONFIG the schema, rights or setup: 42 syntax / undefined object /
 *                 insufficient privilege, 2BP01 dependent objects, 28
 *                 authorization, 3D000 no such database, 3F000 no such
 *                 schema, 0A feature not supported, 44 check option;
 *   SL_ERR_IO     everything else, retried: 08 connection, 40001 / 40P01
 *                 serialization / deadlock, 53 resources, 57P0x shutdown,
 *                 55P03 lock timeout, and unknown states.
 * A job whose load fails with INPUT or CONFIG fails at once (serve mode):
 * retrying cannot fix it. */
int sl_pg_code(const PGresult *res, const PGconn *conn);

/* 1 when the failure is about the connection (or the server going away,
 * out of resources) rather than the statement: the session cannot go on. */
int sl_pg_conn_failure(const PGresult *res, const PGconn *conn);

/* First line of a (library) message, trimmed, into dst. Returns dst. */
char *sl_pg_first_line(char *dst, size_t cap, const char *msg);

#endif
