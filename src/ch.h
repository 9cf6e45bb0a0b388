/* ch.h - ClickHouse HTTP client on a libuv loop (libcurl multi interface).
 *
 * One client per loop (per worker). Requests are POSTs to
 * http(s)://host:port/?database=...&query=... with an optional body (rows
 * for an INSERT); connections are kept alive and reused, at most
 * max_connections per endpoint at a time (further requests queue inside
 * curl).
 *
 * Endpoints. A client talks to one server or to several interchangeable
 * ones (replicas of a cluster, each with the same tables or a Distributed
 * table in front). Each request goes to the healthy endpoint with the fewest
 * requests pending (round robin among equals). An endpoint whose request
 * failed for its own reason (no connection, TLS handshake, timeout, HTTP 5xx
 * classified transient) is marked down and gets no traffic until its retry
 * time (jittered exponential backoff, 0.5-1 s up to 15-30 s); then one
 * request probes it, preferably a re-sendable one. When every endpoint is
 * down a request still goes to the one retried soonest: a client never
 * refuses work by itself, its callers have their own backoff.
 *
 * Failover. A request that failed on one endpoint is sent again to another
 * healthy (or due) endpoint it has not tried, before its callback runs, when
 * that is safe: always when nothing reached the server (connect, resolve and
 * TLS failures); after the request was sent only when it is re-sendable -
 * reads (SELECT, WITH, SHOW, DESCRIBE, EXISTS) and requests flagged
 * SG_CH_IDEMPOTENT (inserts whose repeat the table absorbs: a deduplication
 * token, a Replicated table's block checksums). Each attempt gets the full
 * timeout.
 *
 * TLS. https with libcurl's OpenSSL: the peer and its host name are
 * verified against the system's CA store or ca_file unless no_verify; an
 * optional client certificate. Credentials go in the Authorization header
 * (HTTP basic), never in the URL; no error text carries them.
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
 *                an operator (unknown database or table, authentication, a
 *                certificate that does not verify);
 *   SG_ECANCELED the client was closed before the request completed.
 * The table of ClickHouse codes is in ch.c (sg_ch_code_class).
 *
 * Library layer: never logs; results carry codes and one-line messages.
 * Not thread-safe: use a client only from its loop's thread. Every request
 * names its own database, timeout and flags if it wants to, so that one
 * client per loop can serve every user of ClickHouse on it.
 */
#ifndef SG_CH_H
#define SG_CH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"

#define SG_CH_MAX_ENDPOINTS 16

typedef struct sg_ch_opts_s {
  const char *host;      /* NULL: "127.0.0.1" */
  int port;              /* HTTP port; 0: 8123, or 8443 when secure */
  const char *user;      /* NULL or "": no authentication header */
  const char *password;  /* NULL: "" */
  const char *database;  /* NULL or "": the server's default database */
  long timeout_ms;       /* per request attempt, connect included; 0: 30000 */
  long max_connections;  /* kept-alive connections per endpoint; 0: 4 */
  /* Several endpoints, each "host", "host:port" or "[v6addr]:port",
   * optionally prefixed with http:// or https://; when nhosts > 0, host and
   * port above are not used. At most SG_CH_MAX_ENDPOINTS. */
  const char *const *hosts;
  size_t nhosts;
  int secure;            /* https for entries without a scheme (and host) */
  int no_verify;         /* https without verifying the peer's certificate
                          * and host name (self-signed test servers only) */
  const char *ca_file;   /* PEM CA bundle to verify with; NULL: the system's */
  const char *cert_file; /* PEM client certificate; NULL: none */
  const char *key_file;  /* its PEM private key; NULL: inside cert_file */
} sg_ch_opts_t;

#define SG_CH_GZIP 1u   /* gzip the body and send Content-Encoding: gzip */
#define SG_CH_BORROW 2u /* send body in place (no copy): it stays valid and
                         * unchanged until cb has run */
#define SG_CH_IDEMPOTENT 4u /* sending it twice does no harm: it may be sent
                             * again to another endpoint after one failed */
#define SG_CH_MAPPED 8u /* the body's pieces lie in ascending order in one
                         * read-only file mapping (a spool segment): the
                         * pages read are dropped behind every pass over them
                         * (pages.h), so a body of any size costs no resident
                         * memory; never for other memory */

/* A piece of a body given in pieces. */
typedef struct {
  const void *data;
  size_t len;
} sg_ch_piece_t;

/* One request. Only sql is required. */
typedef struct {
  const char *sql;         /* goes URL-encoded in the `query` parameter */
  const void *body;        /* POSTed after the query (INSERT rows); may be NULL */
  size_t len;
  /* or the body in npieces pieces, sent one after the other (body and len
   * are then ignored): a spool segment's records, never copied into one
   * buffer. With SG_CH_BORROW the array and the pieces stay valid until cb. */
  const sg_ch_piece_t *pieces;
  size_t npieces;
  unsigned flags;          /* SG_CH_GZIP, SG_CH_BORROW, SG_CH_IDEMPOTENT */
  const char *database;    /* NULL: the client's; "": the server's default */
  long timeout_ms;         /* per attempt; 0: the client's */
  const char *dedup_token; /* NULL, or sent as insert_deduplication_token
                            * (ClickHouse 22.2+; older servers reject it) */
  const char *settings;    /* NULL, or more URL parameters, URL-encoded:
                            * "name=value&name=value" (query settings) */
} sg_ch_req_t;

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

/* A client on loop. opts strings are copied. NULL when out of memory, an
 * endpoint does not parse (check them first with sg_ch_endpoint_parse) or
 * curl cannot be initialised. */
sg_ch_client_t *sg_ch_client_new(uv_loop_t *loop, const sg_ch_opts_t *opts);

/* Parse one endpoint entry (see sg_ch_opts_t.hosts): host into host (cap
 * bytes, IPv6 without brackets), *port (default 8123, or 8443 for https)
 * and *tls (the scheme, or secure when none is given). 0, or SG_EINVAL with
 * a one-line reason in err (may be NULL). Credentials ("user:pw@host"), a
 * path or a query string are refused. */
int sg_ch_endpoint_parse(const char *text, int secure, char *host, size_t cap, int *port, int *tls,
                         sg_buf_t *err);

/* Start a request: sql goes URL-encoded in the `query` parameter, body (may
 * be NULL with len 0) is copied and POSTed, gzipped with SG_CH_GZIP, or
 * sent from where it is with SG_CH_BORROW (and without SG_CH_GZIP).
 * Returns 0 and then calls cb exactly once, from the loop (never from inside
 * this call); or returns SG_ENOMEM / SG_EINVAL / SG_ECANCELED (client
 * closing) and never calls cb. */
int sg_ch_request(sg_ch_client_t *c, const char *sql, const void *body, size_t len, unsigned flags,
                  sg_ch_cb cb, void *arg);
/* The same with every option of sg_ch_req_t. q and its strings are copied
 * (the body only without SG_CH_BORROW). */
int sg_ch_send(sg_ch_client_t *c, const sg_ch_req_t *q, sg_ch_cb cb, void *arg);

/* An insert deduplication token for a body in pieces (at most SG_CH_TOKEN_MAX bytes with
 * the NUL): scope (e.g. the spool's name), the first and last record numbers
 * it holds, and a digest of its bytes, so that equal tokens mean equal
 * bodies and a token can never make the server drop different rows. flags:
 * the request's (SG_CH_MAPPED drops the pages digested).
 * 0 or SG_EIO (the digest failed). */
#define SG_CH_TOKEN_MAX 128
int sg_ch_dedup_token(char *out, const char *scope, uint64_t first, uint64_t last,
                      const sg_ch_piece_t *pieces, size_t npieces, unsigned flags);

/* Requests started and not yet completed. A seam for the tests (that every
 * request ends); the gateway reads per-endpoint figures instead. */
size_t sg_ch_pending(const sg_ch_client_t *c);

/* What a client knows of one endpoint. Strings live as long as the client. */
typedef struct {
  const char *name;        /* "host:port", "https://" prefixed when TLS */
  int up;                  /* 0 while marked down */
  size_t pending;          /* attempts in flight there */
  uint64_t requests;       /* attempts sent there */
  uint64_t failures;       /* of which failed for the endpoint's own reason */
  unsigned consecutive;    /* failures since its last success */
  uint64_t retry_in_ms;    /* down: time until it may be probed (0: due) */
  const char *last_error;  /* the last failure's line ("" if none) */
} sg_ch_endpoint_stats_t;

/* Endpoints of c (at least 1). */
size_t sg_ch_endpoint_count(const sg_ch_client_t *c);
/* Endpoint i of c into out: 0, or SG_EINVAL when i is out of range. */
int sg_ch_endpoint_stats(const sg_ch_client_t *c, size_t i, sg_ch_endpoint_stats_t *out);
/* Requests that were sent again to another endpoint after a failure. */
uint64_t sg_ch_failovers(const sg_ch_client_t *c);

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

/* The same for a request with its own settings or timeout. */
int sg_ch_send_sync(const sg_ch_opts_t *opts, const sg_ch_req_t *q, sg_buf_t *out, sg_buf_t *err);

/* Classify a ClickHouse exception code: SG_EPOISON, SG_EUNAVAIL or SG_EIO;
 * 0 when the code is not in the table (the HTTP status decides then). */
int sg_ch_code_class(int ch_code);

/* Quote an identifier for ClickHouse SQL: `name`, with ` and \ escaped. */
int sg_ch_quote_ident(sg_buf_t *out, const char *name);
/* Quote a string literal: 'text', with \ ' and control characters escaped
 * (\n \t \r \0 \b \f, others as \xHH). */
int sg_ch_quote_string(sg_buf_t *out, const char *s, size_t n);

#endif
