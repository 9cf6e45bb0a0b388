/* ch.h - ClickHouse HTTP client on a libuv loop (libcurl multi interface).
 *
 * One client per loop (per worker). Requests are POSTs to
 * http://host:port/?database=...&query=... with an optional body (rows for
 * an INSERT); connections are kept alive and reused, at most
 * max_connections at a time (further requests queue inside curl).
 *
 * Every completed request is classified for its caller, Fluent Bit style
 * (OK / RETRY / ERROR):
 *   0            the server answered 200;
 *   SG_EUNAVAIL  transient: connection refused or reset, timeout, HTTP 5xx,
 *                and the ClickHouse codes that mean "try again later"
 *                (memory limit, too many parts, too many queries, ...);
 *   SG_EPOISON   the server rejected the request or its data and will do so
 *                again (parse errors, type mismatches, syntax errors, ...):
 *                report it, never retry it unchanged;
 *   SG_EIO       anything else, including configuration problems that need
 *                an operator (unknown database or table, authentication);
 *   SG_ECANCELED the client was closed before the request completed.
 * The table of ClickHouse codes is in ch.c (sg_ch_code_class).
 *
 * Library layer: never logs; results carry codes and one-line messages.
 * Not thread-safe: use a client only from its loop's thread.
 */
#ifndef SG_CH_H
#define SG_CH_H

#include <stddef.h>
#include <uv.h>

#include "buf.h"

typedef struct {
  const char *host;      /* NULL: "127.0.0.1" */
  int port;              /* HTTP port; 0: 8123 */
  const char *user;      /* NULL or "": no authentication header */
  const char *password;  /* NULL: "" */
  const char *database;  /* NULL or "": the server's default database */
  long timeout_ms;       /* per request, connect included; 0: 30000 */
  long max_connections;  /* kept-alive connections; 0: 4 */
} sg_ch_opts_t;

#define SG_CH_GZIP 1u   /* gzip the body and send Content-Encoding: gzip */
#define SG_CH_BORROW 2u /* send body in place (no copy): it stays valid and
                         * unchanged until cb has run */

typedef struct {
  int status;         /* 0, SG_EUNAVAIL, SG_EPOISON, SG_EIO, SG_ECANCELED, SG_ENOMEM */
  long http_status;   /* 0 when no HTTP response arrived */
  int ch_code;        /* ClickHouse exception code, 0 when none */
  const char *body;   /* response body, NUL-terminated (never NULL) */
  size_t len;
  const char *error;  /* one line, "" on success (never NULL) */
} sg_ch_result_t;

/* The result and its strings are valid only during the callback. */
typedef void (*sg_ch_cb)(void *arg, const sg_ch_result_t *r);

typedef struct sg_ch_client_s sg_ch_client_t;

/* curl_global_init, once per process (pthread_once); every constructor
 * below calls it too, so calling it early is only needed to fail early.
 * 0 or SG_EIO. */
int sg_ch_global_init(void);

/* A client on loop. opts strings are copied. NULL when out of memory or
 * curl cannot be initialised. */
sg_ch_client_t *sg_ch_client_new(uv_loop_t *loop, const sg_ch_opts_t *opts);

/* Start a request: sql goes URL-encoded in the `query` parameter, body (may
 * be NULL with len 0) is copied and POSTed, gzipped with SG_CH_GZIP, or
 * sent from where it is with SG_CH_BORROW (and without SG_CH_GZIP).
 * Returns 0 and then calls cb exactly once, from the loop (never from inside
 * this call); or returns SG_ENOMEM / SG_EINVAL / SG_ECANCELED (client
 * closing) and never calls cb. */
int sg_ch_request(sg_ch_client_t *c, const char *sql, const void *body, size_t len, unsigned flags,
                  sg_ch_cb cb, void *arg);

/* Requests started and not yet completed. */
size_t sg_ch_pending(const sg_ch_client_t *c);

/* Abort pending requests (their callbacks run now with SG_ECANCELED), close
 * every uv handle; the client is freed in the last close callback, so the
 * loop can end and uv_loop_close() succeeds. May be called from a request
 * callback. Idempotent; c must not be used afterwards. */
void sg_ch_client_close(sg_ch_client_t *c);

/* Blocking helper for the CLI: runs one request on a private loop. The
 * response body is appended to out (may be NULL), the one-line error to err
 * (may be NULL). Returns the request's status (see above). Never call it on
 * a worker loop's thread while that loop must keep running. */
int sg_ch_exec_sync(const sg_ch_opts_t *opts, const char *sql, const void *body, size_t len,
                    sg_buf_t *out, sg_buf_t *err);

/* Classify a ClickHouse exception code: SG_EPOISON, SG_EUNAVAIL or SG_EIO;
 * 0 when the code is not in the table (the HTTP status decides then). */
int sg_ch_code_class(int ch_code);

/* Quote an identifier for ClickHouse SQL: `name`, with ` and \ escaped. */
int sg_ch_quote_ident(sg_buf_t *out, const char *name);
/* Quote a string literal: 'text', with \ ' and control characters escaped
 * (\n \t \r \0 \b \f, others as \xHH). */
int sg_ch_quote_string(sg_buf_t *out, const char *s, size_t n);

#endif
