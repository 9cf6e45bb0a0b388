/* http.h - HTTP/1.1 server connections on a libuv loop (http-parser).
 *
 * One server per listening socket and loop; everything runs on that loop's
 * thread. The server owns the connections: it reads and parses requests
 * (request line, headers, body de-chunked), enforces the size and time
 * limits, answers protocol errors itself, and hands each complete request
 * to the handler. The handler answers with sg_http_respond(), at once or
 * later (after a database commit). Knows nothing about spans or routes.
 *
 * Per connection one request is in flight at a time: while the handler
 * holds it, the server parses nothing more from that connection, and reads
 * only until its read buffer is full (so a client that resets the
 * connection is noticed, and a pipelining client is held back by TCP flow
 * control). Pipelined requests are answered in order. A client that
 * half-closes (EOF) after sending still gets the answers to the requests
 * it sent; the connection is closed after the last one.
 *
 * Errors the server answers itself, each with a JSON body {"error":"..."}
 * and Connection: close:
 *   400 malformed request line or headers, bad request target
 *   408 the request did not arrive within read_timeout_ms of its first byte
 *   413 Content-Length or the chunked body exceeds max_body_bytes (answered
 *       as soon as that is known, without reading the body), or a body
 *       larger than the whole in-flight budget (it could never fit)
 *   417 an Expect other than 100-continue
 *   429 the in-flight budget (below) has no room for the body: answered
 *       when the headers show a Content-Length that does not fit, or when a
 *       chunk's size line would push past it; with Retry-After: 1
 *   431 request line + headers (+ trailers) exceed max_header_bytes
 *   501 a Transfer-Encoding other than chunked, or CONNECT
 *   503 (no body) to connections beyond max_connections, then closed
 *   505 an HTTP version other than 1.0 and 1.1
 * After an error response (and any Connection: close response) the server
 * half-closes and discards input for at most linger_ms before closing, so
 * the client reads the response instead of a TCP reset.
 */
#ifndef SG_HTTP_H
#define SG_HTTP_H

#include <http_parser.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"

/* Limits; a zero field takes the default shown. */
typedef struct {
  size_t max_header_bytes;   /* request line + headers + trailers; 16 KiB; beyond: 431 */
  size_t max_body_bytes;     /* de-chunked body; 10 MiB; beyond: 413 */
  uint64_t read_timeout_ms;  /* whole request, from its first byte; 30 s; then 408 + close */
  uint64_t idle_timeout_ms;  /* keep-alive connection without a request; 60 s; closed quietly */
  uint64_t write_timeout_ms; /* a response not taken by the client; 30 s; then closed */
  uint64_t linger_ms;        /* input drained after a closing response; 2 s */
  size_t max_connections;    /* per server; 10000; beyond: 503 and close */
  int backlog;               /* listen() backlog; SOMAXCONN */
  /* In-flight memory budget, shared by every server given the same counter
   * (e.g. all workers' servers): bytes held by requests, counted as they
   * are allocated. A body is counted before it is received: its
   * Content-Length when the headers arrive, a chunked body as each chunk's
   * size line arrives (its buffer grows by doubling, up to max_body_bytes;
   * what is allocated is counted). Handlers add what they allocate for a
   * request with sg_http_req_reserve(). Everything a request holds is
   * released when it is answered or dropped (client gone, timeout, error).
   * NULL: nothing is counted. The counter is never negative. */
  _Atomic int64_t *inflight;
  size_t max_inflight_bytes; /* with a counter: 0 = count only, no limit */
  _Atomic int64_t *inflight_own; /* the same bytes counted here too (no limit), or NULL */
} sg_http_limits_t;

/* Fill *lim with the defaults. */
void sg_http_limits_default(sg_http_limits_t *lim);

/* A request as the handler sees it. Fields are read-only for the handler,
 * except user (the handler's slot) and body (the handler may take the memory
 * with sg_buf_detach()). Valid from the handler call until sg_http_respond(). */
typedef struct sg_http_req_s {
  enum http_method method;          /* HTTP_GET, HTTP_POST, ... */
  unsigned short http_major, http_minor;
  const char *path;                 /* request target without query, NUL-terminated, not
                                       percent-decoded; "*" for OPTIONS * */
  const char *query;                /* after '?', without it; "" when none */
  sg_buf_t body;                    /* complete body, de-chunked; len 0 when none */
  uint64_t start_ns;                /* uv_hrtime() at the request's first byte */
  size_t bytes_in;                  /* bytes of the request on the wire */
  void *user;                       /* for the handler; the server never touches it */
} sg_http_req_t;

typedef struct sg_http_server_s sg_http_server_t;

/* Called once per request, when headers and body have arrived. The handler
 * must call sg_http_respond() exactly once, now or later. */
typedef void (*sg_http_handler_cb)(sg_http_req_t *req, void *ctx);

/* Called for every response, the handler's and the server's own, when it is
 * queued. req is NULL when the server answered before the request's headers
 * were complete (parse errors, 431, 408 on a partial header); otherwise it is
 * valid for the duration of the call. duration_ns counts from the first byte. */
typedef void (*sg_http_log_cb)(void *ctx, const sg_http_req_t *req, int status,
                               uint64_t duration_ns, size_t bytes_in);

typedef struct {
  uint64_t accepted;      /* connections accepted and served */
  uint64_t rejected;      /* connections beyond max_connections (503) */
  uint64_t requests;      /* requests handed to the handler */
  uint64_t responses;     /* responses queued, handler's and server's */
  uint64_t errors;        /* responses generated by the server (4xx/5xx above) */
  uint64_t timeouts;      /* 408s and write timeouts */
  uint64_t idle_closed;   /* keep-alive connections closed for idleness */
  uint64_t client_gone;   /* clients that left while the handler held their request */
  uint64_t status[6];     /* responses by class: [1] 1xx ... [5] 5xx */
} sg_http_stats_t;

/* Serve connections accepted on listen_fd (a listening TCP socket, e.g. from
 * sg_listen_tcp()) on loop. The server takes ownership of listen_fd in every
 * case, also on failure (do not close it afterwards). lim may be NULL
 * (defaults); it is copied, and zero fields take their defaults. handler
 * and ctx are called for each request. Returns the server, or NULL when out
 * of memory or when libuv refuses the socket; the fd is then closed, possibly
 * through a libuv close callback, so the loop must run once more before it
 * is closed. */
sg_http_server_t *sg_http_server_new(uv_loop_t *loop, uv_os_sock_t listen_fd,
                                     const sg_http_limits_t *lim, sg_http_handler_cb handler,
                                     void *ctx);

/* Observe every response (see sg_http_log_cb). NULL turns it off. */
void sg_http_server_set_observer(sg_http_server_t *srv, sg_http_log_cb cb, void *ctx);

/* Graceful stop: close the listener, close idle connections now, let
 * requests being received or held by the handler finish (their responses
 * carry Connection: close), then close their connections. When every
 * handle is closed and every request answered, the server frees itself and
 * calls done(arg) (which may happen inside a late sg_http_respond()). The
 * caller can then close the loop. Call once; srv is invalid after done. */
void sg_http_server_shutdown(sg_http_server_t *srv, void (*done)(void *arg), void *arg);

/* Connections currently open (including ones being closed). */
int sg_http_server_connections(const sg_http_server_t *srv);

/* Copy the counters. */
void sg_http_server_stats(const sg_http_server_t *srv, sg_http_stats_t *out);

/* Value of the request header whose lower-cased name is lname (the first
 * one if repeated), with surrounding white space removed; NULL if absent. */
const char *sg_http_header(const sg_http_req_t *req, const char *lname);

/* 1 if the client has disconnected (reset or read error) while the
 * handler held req: the response will be dropped, so the handler may skip
 * work. A half-close (EOF) is not a disconnect. */
int sg_http_req_gone(const sg_http_req_t *req);

/* Count n more bytes held for req (memory the handler allocates for it,
 * e.g. a decompressed copy of the body) in the in-flight budget; they are
 * released with the request. Returns 0; SG_EBUSY when the budget has no
 * room for n more now (answer 429, retry later); SG_ETOOBIG when req
 * alone would exceed the budget (it can never be served: 413). Nothing is
 * counted on failure. Without a budget: 0. */
int sg_http_req_reserve(sg_http_req_t *req, size_t n);

/* Answer req and release it (req is invalid afterwards). status: 100..599
 * (not 1xx in practice). content_type may be NULL (no Content-Type header);
 * body/len are copied; extra_headers, if not NULL, are complete header lines
 * each ending in "\r\n" ("Retry-After: 1\r\n"). Date, Content-Length and
 * Connection are added by the server; for HEAD the body is not sent. If the
 * client is gone the response is dropped. Call exactly once per request. */
void sg_http_respond(sg_http_req_t *req, int status, const char *content_type, const void *body,
                     size_t len, const char *extra_headers);

/* sg_http_respond() with the body {"error":"<message>"} and a newline
 * (message JSON-escaped), Content-Type application/json. When even that body
 * cannot be built (out of memory): 500 without a body. */
void sg_http_respond_error(sg_http_req_t *req, int status, const char *message,
                           const char *extra_headers);

/* Reason phrase for status ("Not Found"); "Unknown" for codes without one. */
const char *sg_http_status_text(int status);

#endif
