/* pg.h - the PostgreSQL driver: a per-worker connection pool on a libuv loop.
 *
 * libpq in non-blocking mode: connections are opened with
 * PQconnectStartParams/PQconnectPoll and every socket is watched with a
 * uv_poll_t, so no call here ever waits on the network (libpq's one
 * exception: resolving a host *name* in PQconnectPoll is a blocking
 * getaddrinfo; give an IP address, or a local socket directory, on the hot
 * path). Queries are always parameterized (PQsendQueryParams).
 *
 * One pool belongs to one loop and one thread; nothing here is thread-safe.
 *
 * Failure model:
 * - a query whose connection is lost while it runs is answered SG_EUNAVAIL
 *   and never re-sent: the caller decides (spangate's upserts are
 *   idempotent, so the sink simply reports and the client retries);
 * - lost connections reconnect in the background, with exponential backoff
 *   and jitter between opts.backoff_min_ms and opts.backoff_max_ms;
 * - when no connection is up, new queries fail at once with SG_EUNAVAIL
 *   (except while the pool's very first connection attempts are still
 *   running: those queries wait for them), and queued queries are failed
 *   SG_EUNAVAIL when the last connection goes down;
 * - a statement answered 25006 (read-only transaction) ends its connection
 *   after the callback: the session cannot become writable, while a new
 *   connection may reach the new primary (or be refused, see opts.writable).
 */
#ifndef SG_PG_H
#define SG_PG_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"

typedef struct sg_pg_pool_s sg_pg_pool_t;

typedef struct {
  int max_queue;          /* queries waiting for a connection; beyond: SG_EBUSY (default 1024) */
  int connect_timeout_ms; /* one connection attempt, TCP to ready (default 5000) */
  int backoff_min_ms;     /* first reconnect delay (default 100) */
  int backoff_max_ms;     /* cap of the doubling delay (default 5000) */
  /* 1: connect only to a server that takes writes (libpq's
   * target_session_attrs=read-write, unless the conninfo sets it): a standby
   * or a read-only database fails the attempt like a refused connection. */
  int writable;
  /* > 0: every session's statement_timeout, in ms (a startup option added
   * to the conninfo's own); a statement running longer is answered
   * SG_ETIMEOUT. */
  int statement_timeout_ms;
  /* The last `spares` connections (< size) are spares: a query goes to one
   * only once it has waited in the queue for the others spare_after_ms
   * (default 50) and twice their recent statement time (a moving average),
   * as long as the others had an idle moment in the last 2 s; at once while
   * none of the others is up. So the pool keeps size - spares statements in
   * flight, and, unless the server is saturated (where another writer would
   * only slow it down), one unusually slow statement (a GIN index merging
   * its pending list, a lock) no longer holds up every query behind it.
   * 0: every connection takes queries at once. */
  int spares;
  int spare_after_ms;
} sg_pg_pool_opts_t;

/* For /metrics: read it whenever (single thread; plain fields). */
typedef struct {
  int configured;         /* connections the pool keeps */
  int spares;             /* of which spares (opts.spares) */
  int up;                 /* connected (idle or busy) */
  int busy;               /* running a query */
  size_t queued;          /* waiting for a connection */
  uint64_t queries;       /* accepted by sg_pg_query */
  uint64_t spare_queries; /* of which a spare connection ran (opts.spares) */
  uint64_t errors;        /* queries answered with an error (any code) */
  uint64_t reconnects;    /* connections re-established after being lost */
  uint64_t connect_failures; /* connection attempts that failed */
} sg_pg_stats_t;

/* Called exactly once per accepted query, always from the loop (never from
 * inside sg_pg_query).
 *   res    the query's last result, or NULL when there is none (lost
 *          connection, cancel); owned by the pool and cleared after cb returns.
 *   err    0, or by SQLSTATE (see sg_pg_sqlstate_err):
 *          SG_EPOISON   the data is at fault (classes 22, 23, 54);
 *          SG_EUNAVAIL  transient: no connection could run it (server down,
 *                       connection lost), or the server failed it for now
 *                       (classes 08, 40, 53, 57, 58; 25006 read-only; lock
 *                       and idle timeouts): the same statement may succeed
 *                       when re-sent later;
 *          SG_ETIMEOUT  57014: statement_timeout (or a cancel request);
 *          SG_ECANCELED the pool was closed;
 *          SG_EIO       every other SQL error (syntax, missing table, ...).
 *   errmsg NULL when err is 0; otherwise one line: "<SQLSTATE> <message>"
 *          (plus " (<detail>)" when the server sent one), or libpq's own
 *          message; valid during cb only.
 * The callback may issue queries and may close the pool. */
typedef void (*sg_pg_cb)(void *arg, PGresult *res, int err, const char *errmsg);

/* Creates the pool and starts connecting `size` connections. conninfo is a
 * libpq URI or key=value string (copied). opts may be NULL (defaults; zero
 * fields take defaults too). Returns NULL when conninfo does not parse (see
 * sg_pg_conninfo_check for why), size < 1, or memory runs out. */
sg_pg_pool_t *sg_pg_pool_new(uv_loop_t *loop, const char *conninfo, int size,
                             const sg_pg_pool_opts_t *opts);

/* 0 when conninfo parses; SG_EINVAL with libpq's reason in err otherwise. */
int sg_pg_conninfo_check(const char *conninfo, sg_buf_t *err);

/* Runs sql with nparams parameters ($1..$n). values/lengths/formats as
 * PQsendQueryParams takes them (lengths and formats may be NULL for all-text
 * parameters; formats[i] = 1 for binary); results come back in text format.
 * The caller keeps sql and the parameters alive until cb runs.
 * Returns 0 (cb will run exactly once), or, with cb never called:
 *   SG_EUNAVAIL  no connection is up (and the first attempts are over)
 *   SG_EBUSY     the queue is full
 *   SG_ECANCELED the pool is closing
 *   SG_EINVAL / SG_ENOMEM */
int sg_pg_query(sg_pg_pool_t *pool, const char *sql, int nparams,
                const char *const *values, const int *lengths, const int *formats,
                sg_pg_cb cb, void *arg);

/* Runs sql with the simple query protocol: its first statement is
 * `COPY ... FROM STDIN` (text or csv), which receives data[0..len); the
 * statements after it (separated by ';') run in the same implicit
 * transaction, which commits only if all of them succeed. The data is
 * streamed as the socket takes it (never blocking, libpq's buffer stays
 * small). cb gets the last result (e.g. a SELECT after the COPY), or the
 * first error, with err as for sg_pg_query. The caller keeps sql and data
 * alive until cb runs. Returns as sg_pg_query. */
int sg_pg_copy(sg_pg_pool_t *pool, const char *sql, const char *data, size_t len, sg_pg_cb cb,
               void *arg);

/* Live counters (pointer stays valid until the pool is freed). */
const sg_pg_stats_t *sg_pg_pool_stats(const sg_pg_pool_t *pool);

/* Why the latest connection attempt failed, or the latest connection
 * ended, in one line ("" when none has); for /readyz when no connection is
 * up. Valid until the next call into the pool. */
const char *sg_pg_pool_last_error(const sg_pg_pool_t *pool);

/* 1 when at least one connection is up. */
int sg_pg_pool_ready(const sg_pg_pool_t *pool);

/* Closes every connection and handle: queued and running queries are
 * answered SG_ECANCELED (from inside this call), then the handles close on
 * the loop's next turns and the pool frees itself in the last close
 * callback. After this, uv_run() returns once nothing else is active. The
 * pool must not be used after the call. Safe from within a query callback. */
void sg_pg_pool_close(sg_pg_pool_t *pool);

/* Blocking helper for the CLI (never on a worker loop): connects, runs sql
 * with the simple query protocol (several statements allowed), disconnects.
 * 0 on success; SG_EUNAVAIL when the connection fails, SG_EPOISON / SG_EIO
 * as above when a statement fails; err (may be NULL) receives the message. */
int sg_pg_exec_sync(const char *conninfo, const char *sql, sg_buf_t *err);

/* SG_E* code for a failed result's SQLSTATE (as the callback receives it).
 * conn_bad: the connection is gone (PQstatus == CONNECTION_BAD). One table
 * in pg.c, by class with specific overrides; an unknown or missing
 * SQLSTATE is SG_EIO. */
int sg_pg_sqlstate_err(const char *sqlstate, int conn_bad);

/* 1 when the SQLSTATE says the server takes no writes for now (25006
 * read-only, class 53 insufficient resources but 53300, class 58 system
 * error), 0 otherwise: such a failure of a write makes the gateway unready
 * for a while. */
int sg_pg_sqlstate_unwritable(const char *sqlstate);

#endif
