/* grpc.h - unary gRPC calls over HTTP/2 cleartext (h2c with prior
 * knowledge, as gRPC clients connect) on a libuv loop, with nghttp2.
 *
 * One server per listening socket and loop; everything runs on that loop's
 * thread. The server owns the connections and their streams: it speaks
 * HTTP/2 (nghttp2 does the framing, HPACK and flow control), reads each
 * call's metadata and its one length-prefixed request message, enforces the
 * limits below, and hands each complete call to the handler of its method.
 * The handler answers with sg_grpc_respond() or sg_grpc_respond_status(),
 * at once or later. Knows nothing about spans: methods are a table of paths
 * and handlers, messages are bytes.
 *
 * Many calls run at once on one connection (HTTP/2 streams, at most
 * max_streams open per connection: SETTINGS_MAX_CONCURRENT_STREAMS). A
 * call that breaks the rules is answered alone; its connection and the
 * other calls on it go on. Only a connection-level violation (a bad
 * preface, a frame nghttp2 refuses, a flood) ends a connection, with a
 * GOAWAY.
 *
 * Errors the server answers itself (trailers-only responses: HTTP status,
 * grpc-status, grpc-message), before or instead of the handler:
 *   HTTP 415, 3 INVALID_ARGUMENT   content-type not application/grpc[+proto]
 *   HTTP 405, 13 INTERNAL          a :method other than POST
 *   12 UNIMPLEMENTED               a path the method table lacks; a
 *                                  grpc-encoding not accepted (the answer
 *                                  lists grpc-accept-encoding)
 *   8 RESOURCE_EXHAUSTED           metadata over max_header_bytes; a message
 *                                  prefix announcing more than
 *                                  max_message_bytes, or more than the whole
 *                                  in-flight budget (never fits: no RetryInfo)
 *   14 UNAVAILABLE + RetryInfo     the in-flight budget has no room for the
 *                                  message now
 *   13 INTERNAL                    framing: compressed flag set without a
 *                                  grpc-encoding, a flag other than 0/1, the
 *                                  request ending inside a message or with
 *                                  none, a second message (calls are unary)
 *   4 DEADLINE_EXCEEDED            the request (metadata and message) did not
 *                                  arrive whole within read_timeout_ms of its
 *                                  HEADERS frame
 * (these are the codes gRPC's own implementations use for the same faults).
 * When a call is answered before the client finished sending, the stream is
 * reset with NO_ERROR after the answer, so the client stops sending.
 *
 * Connections: without open streams for idle_timeout_ms a connection is
 * closed with GOAWAY(NO_ERROR); a peer that does not take the server's
 * output for write_timeout_ms is dropped, and a stream whose answer the
 * peer opens no flow-control window for is reset (CANCEL) after as long; beyond max_connections new ones
 * are accepted and closed at once. Bytes that are not the HTTP/2 preface
 * end the connection (an HTTP/1 request gets a one-line HTTP/1.1 400
 * saying so).
 */
#ifndef SG_GRPC_H
#define SG_GRPC_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"

/* gRPC status codes (the subset the server and its handlers use). */
enum {
  SG_GRPC_OK = 0,
  SG_GRPC_CANCELLED = 1,
  SG_GRPC_INVALID_ARGUMENT = 3,
  SG_GRPC_DEADLINE_EXCEEDED = 4,
  SG_GRPC_RESOURCE_EXHAUSTED = 8,
  SG_GRPC_UNIMPLEMENTED = 12,
  SG_GRPC_INTERNAL = 13,
  SG_GRPC_UNAVAILABLE = 14,
  SG_GRPC_UNAUTHENTICATED = 16
};
#define SG_GRPC_NCODES 17

/* Limits; a zero field takes the default shown. */
typedef struct {
  size_t max_message_bytes;  /* one request message as sent (compressed); 10 MiB */
  size_t max_header_bytes;   /* a call's metadata, counted as HTTP/2 does (name + value + 32 per
                                field); 16 KiB; also SETTINGS_MAX_HEADER_LIST_SIZE */
  uint32_t max_streams;      /* SETTINGS_MAX_CONCURRENT_STREAMS; 100 */
  uint32_t stream_window;    /* SETTINGS_INITIAL_WINDOW_SIZE; 1 MiB */
  uint32_t conn_window;      /* the connection's receive window; 16 MiB */
  uint64_t read_timeout_ms;  /* a call's request, from its HEADERS; 30 s */
  uint64_t idle_timeout_ms;  /* a connection without open streams; 60 s */
  uint64_t write_timeout_ms; /* output the peer does not take; 30 s */
  uint64_t goaway_grace_ms;  /* shutdown: between the GOAWAY notice and the final GOAWAY; 500 ms */
  size_t max_connections;    /* per server; 10000 */
  int backlog;               /* listen() backlog; SOMAXCONN */
  /* The in-flight memory budget (budget.h), shared with other servers given
   * the same counter: a message is counted when its 5-byte prefix announces
   * its length, before it arrives, and released when the call is answered
   * or dropped. Handlers add what they allocate with sg_grpc_call_reserve(). */
  _Atomic int64_t *inflight;
  size_t max_inflight_bytes; /* with a counter: 0 = count only, no limit */
  _Atomic int64_t *inflight_own; /* the same bytes counted here too (no limit), or NULL */
  /* Message encodings accepted besides identity, as grpc-accept-encoding
   * lists them ("gzip,deflate"); the handler decompresses. NULL: none. */
  const char *accept_encoding;
} sg_grpc_limits_t;

/* Fill *lim with the defaults. */
void sg_grpc_limits_default(sg_grpc_limits_t *lim);

/* A call as the handler sees it: read-only but for user. Valid from the
 * handler call until the call is answered. */
typedef struct sg_grpc_call_s {
  const char *path;          /* "/package.Service/Method" */
  const uint8_t *message;    /* the request message as sent (without its prefix) */
  size_t len;
  int compressed;            /* the prefix's compressed flag: message is in `encoding` */
  const char *encoding;      /* grpc-encoding, lower-case; "identity" when absent */
  uint64_t start_ns;         /* uv_hrtime() at the call's HEADERS */
  void *user;                /* for the handler */
} sg_grpc_call_t;

typedef struct sg_grpc_server_s sg_grpc_server_t;

/* Called once per call whose request arrived whole and well-formed. The
 * handler must answer it exactly once, now or later. ctx: the server's. */
typedef void (*sg_grpc_handler_cb)(sg_grpc_call_t *call, void *ctx);

typedef struct {
  const char *path;          /* "/opentelemetry.proto.collector.trace.v1.TraceService/Export" */
  sg_grpc_handler_cb handler;
} sg_grpc_method_t;

/* Called for every answer, the handler's and the server's own, when it is
 * queued: the call (NULL fields but path and start_ns when the request never
 * reached a handler), its gRPC code, time since its HEADERS. */
typedef void (*sg_grpc_log_cb)(void *ctx, const sg_grpc_call_t *call, int code,
                               uint64_t duration_ns);

/* Serve gRPC on listen_fd (a listening TCP socket, e.g. from
 * sg_listen_tcp()) on loop; the server owns listen_fd in every case. lim
 * may be NULL (defaults) and is copied. methods (n rows, kept by reference:
 * a static table) route calls by path. ctx goes to the handlers. NULL when
 * out of memory or libuv refuses the socket (the fd is then closed, maybe
 * in a close callback: run the loop once more before closing it). */
sg_grpc_server_t *sg_grpc_server_new(uv_loop_t *loop, uv_os_sock_t listen_fd,
                                     const sg_grpc_limits_t *lim, const sg_grpc_method_t *methods,
                                     size_t n, void *ctx);

/* Observe every answer (see sg_grpc_log_cb). NULL turns it off. */
void sg_grpc_server_set_observer(sg_grpc_server_t *srv, sg_grpc_log_cb cb, void *ctx);

/* Graceful stop: close the listener; tell every connection with a GOAWAY
 * notice, and after goaway_grace_ms a final GOAWAY naming the last stream
 * taken, so clients send new calls elsewhere; calls taken are still
 * received and answered; then the connections close. When every handle is
 * closed and every call answered, the server frees itself and calls
 * done(arg). Call once; srv is invalid after done. */
void sg_grpc_server_shutdown(sg_grpc_server_t *srv, void (*done)(void *arg), void *arg);

/* Connections currently open (including ones being closed). */
int sg_grpc_server_connections(const sg_grpc_server_t *srv);

/* Value of the call's metadata entry lname (lower-case; the first if
 * repeated), NULL when absent. */
const char *sg_grpc_metadata(const sg_grpc_call_t *call, const char *lname);

/* 1 when the client reset the stream or the connection is gone: the
 * answer will be dropped. */
int sg_grpc_call_gone(const sg_grpc_call_t *call);

/* Count n more bytes held for call in the in-flight budget, released with
 * the call. 0; SG_EBUSY (no room now); SG_ETOOBIG (the call alone would
 * exceed the budget). Nothing is counted on failure. */
int sg_grpc_call_reserve(sg_grpc_call_t *call, size_t n);

/* Answer OK with one response message msg[0..len) (copied, sent
 * uncompressed), then grpc-status 0. The call is invalid afterwards. */
void sg_grpc_respond(sg_grpc_call_t *call, const void *msg, size_t len);

/* Answer with an error code (not OK) and a message for the client
 * (grpc-message, percent-encoded, at most 1 KiB of it). retry_after_ms > 0
 * adds a google.rpc.RetryInfo with that delay to grpc-status-details-bin
 * (for UNAVAILABLE or RESOURCE_EXHAUSTED: OTLP exporters retry
 * RESOURCE_EXHAUSTED only with it). The call is invalid afterwards. */
void sg_grpc_respond_status(sg_grpc_call_t *call, int code, const char *message,
                            int retry_after_ms);

/* Percent-encodes s for grpc-message (bytes outside 0x20..0x7e and '%'),
 * taking at most max_in bytes of s (cut at a UTF-8 boundary). Appends to
 * out. 0 or SG_ENOMEM. */
int sg_grpc_percent_encode(const char *s, size_t max_in, sg_buf_t *out);

/* google.rpc.Status {code, message, details: [Any(RetryInfo{retry_delay})]}
 * (no details when retry_after_ms <= 0), binary, appended to out. 0 or
 * SG_ENOMEM. */
int sg_grpc_status_details(int code, const char *message, int retry_after_ms, sg_buf_t *out);

#endif
