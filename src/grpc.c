/* grpc.c - unary gRPC over HTTP/2 cleartext with nghttp2 on a libuv loop
 * (see grpc.h for the contract).
 *
 * nghttp2 is used in its "memory" mode: bytes read from the socket go to
 * nghttp2_session_mem_recv(), which calls back per header, per DATA chunk,
 * per complete frame and per closed stream; what it has to send comes out
 * of nghttp2_session_mem_send() and is written with uv_write(). Flow
 * control is nghttp2's (automatic WINDOW_UPDATEs as DATA is taken); the
 * memory a message holds is bounded by max_message_bytes and counted in the
 * in-flight budget when its prefix arrives.
 *
 * A stream (one call) goes HEADERS -> RECEIVING -> HANDLER -> ANSWERED, or
 * straight to ANSWERED when the server refuses it. Its object lives until
 * both nghttp2 has closed the stream and no handler holds it: a call with
 * the handler outlives its stream or connection (marked gone) until it is
 * answered.
 *
 * A connection is H2 (nghttp2 runs it), then DRAIN once nghttp2 wants
 * neither to read nor to write (GOAWAY sent, no stream left) or after an
 * HTTP/1 answer: what is queued is written, then LINGER: FIN sent, input
 * discarded until EOF or linger time, so the peer reads our last bytes
 * rather than a reset. mem_recv and mem_send never nest: an answer given
 * inside a callback (or while the timer walks the streams) only queues
 * frames, and whoever runs nghttp2 (in_h2) flushes when it returns; a
 * connection is only torn down outside nghttp2's calls.
 */
#include "grpc.h"

#include <nghttp2/nghttp2.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "budget.h"
#include "err.h"
#include "google/rpc/retry_info.pb-c.h"
#include "google/rpc/status.pb-c.h"

#define RBUF_SIZE (64 * 1024)
#define OUT_CHUNK (256 * 1024)       /* nghttp2 output gathered into one write */
#define WQ_HIGH (1024 * 1024)        /* unsent output beyond which input is not read */
#define LINGER_MS 2000
#define MSG_MAX_IN 1024              /* grpc-message: input bytes kept */
#define ERR_MAX 240

typedef struct conn_s conn_t;
typedef struct stream_s stream_t;

typedef enum { S_HEADERS, S_RECEIVING, S_HANDLER, S_ANSWERED } stream_state_t;

struct stream_s {
  sg_grpc_call_t pub;        /* first: calls are cast back to streams */
  sg_grpc_server_t *srv;
  conn_t *conn;              /* NULL once the stream or its connection is gone */
  stream_t *prev, *next;     /* conn->streams while nghttp2 has the stream */
  int32_t id;
  stream_state_t state;
  unsigned h2_open : 1;      /* nghttp2 has not closed the stream */
  unsigned remote_done : 1;  /* the client's END_STREAM arrived */
  unsigned rst_wanted : 1;   /* answered before the client finished: reset after the answer */
  const sg_grpc_method_t *method;
  sg_buf_t hdrs;             /* "name\0value\0" repeated; names lower-case (HTTP/2's) */
  size_t header_bytes;       /* as SETTINGS_MAX_HEADER_LIST_SIZE counts */
  int refuse_code;           /* a limit broken while headers arrived: answered at their end */
  char refuse_msg[ERR_MAX];
  uint8_t prefix[5];
  uint8_t prefix_got;
  int nmsg;                  /* messages begun */
  uint32_t want;             /* length the current message's prefix announced */
  sg_buf_t msg;
  size_t held;               /* bytes counted in the in-flight budget */
  uint64_t deadline;         /* uv_now() of the read timeout while HEADERS/RECEIVING; of
                                the write timeout once ANSWERED (a client that opens no
                                flow-control window for the answer does not keep it) */
  unsigned reset_sent : 1;   /* the write timeout reset the stream */
  sg_buf_t out;              /* the OK answer's DATA: prefix + message */
  size_t out_off;
};

typedef enum { C_H2, C_DRAIN, C_LINGER } conn_phase_t;

struct conn_s {
  sg_grpc_server_t *srv;
  conn_t *prev, *next;       /* srv->conns until closed */
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shut;
  nghttp2_session *h2;
  stream_t *streams;
  int nstreams;              /* in the list: open in nghttp2 */
  conn_phase_t phase;
  int closed;                /* uv_close issued */
  int open_handles;
  int reading;
  int in_h2;                 /* inside mem_recv / mem_send: flush later */
  int wpending;              /* uv_write requests not yet called back */
  uint8_t head[24];          /* the first bytes, checked against the preface */
  size_t head_len;
  uint64_t idle_since;       /* uv_now() when the last stream closed (or accept) */
  uint64_t linger_until;
  size_t wq_mark;            /* write-queue size when wq_since was taken */
  uint64_t wq_since;
};

typedef struct {
  uv_write_t w;
  conn_t *conn;
  sg_buf_t out;
} wreq_t;

struct sg_grpc_server_s {
  uv_loop_t *loop;
  uv_tcp_t listener;
  uv_timer_t grace;
  sg_grpc_limits_t lim;
  sg_budget_t budget;
  const sg_grpc_method_t *methods;
  size_t nmethods;
  void *ctx;
  sg_grpc_log_cb observer;
  void *octx;
  nghttp2_session_callbacks *cbs;
  nghttp2_option *opt;
  char accept_enc[128];      /* "identity,gzip,..." */
  conn_t *conns;
  int nconn;
  int nreject;
  uv_tcp_t spare;
  int spare_busy;
  int accept_stalled;
  int ncalls;                /* with a handler, not yet answered */
  int listener_open;
  int grace_open;
  int shutting_down;
  void (*done)(void *);
  void *done_arg;
  uint8_t rbuf[RBUF_SIZE];   /* one read at a time per loop: nghttp2 takes it all */
};

static void conn_flush(conn_t *c);
static void conn_close(conn_t *c);
static void conn_arm(conn_t *c);
static void answer(stream_t *s, int http_status, int code, const char *msg, int retry_ms);

/* ---------------------------------------------------------------- small things */

void sg_grpc_limits_default(sg_grpc_limits_t *lim) {
  memset(lim, 0, sizeof *lim);
  lim->max_message_bytes = 10 * 1024 * 1024;
  lim->max_header_bytes = 16 * 1024;
  lim->max_streams = 100;
  lim->stream_window = 1024 * 1024;
  lim->conn_window = 16 * 1024 * 1024;
  lim->read_timeout_ms = 30000;
  lim->idle_timeout_ms = 60000;
  lim->write_timeout_ms = 30000;
  lim->goaway_grace_ms = 500;
  lim->max_connections = 10000;
  lim->backlog = SOMAXCONN;
}

int sg_grpc_percent_encode(const char *s, size_t max_in, sg_buf_t *out) {
  size_t n = strlen(s);
  if (n > max_in) {
    n = max_in;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80) n--; /* not inside a UTF-8 sequence */
  }
  static const char hex[] = "0123456789ABCDEF";
  if (sg_buf_reserve(out, n * 3) != 0) return SG_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch >= 0x20 && ch <= 0x7e && ch != '%') {
      out->data[out->len++] = (char)ch;
    } else {
      out->data[out->len++] = '%';
      out->data[out->len++] = hex[ch >> 4];
      out->data[out->len++] = hex[ch & 15];
    }
  }
  out->data[out->len] = '\0';
  return 0;
}

static int pack(const ProtobufCMessage *m, sg_buf_t *out) {
  size_t n = protobuf_c_message_get_packed_size(m);
  if (sg_buf_reserve(out, n) != 0) return SG_ENOMEM;
  out->len += protobuf_c_message_pack(m, (uint8_t *)out->data + out->len);
  out->data[out->len] = '\0';
  return 0;
}

int sg_grpc_status_details(int code, const char *message, int retry_after_ms, sg_buf_t *out) {
  Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
  st.code = code;
  st.message = (char *)(message ? message : "");
  sg_buf_t ri_bytes = SG_BUF_INIT, any_bytes = SG_BUF_INIT;
  ProtobufCBinaryData detail;
  int rc = 0;
  if (retry_after_ms > 0) {
    Google__Rpc__Duration d = GOOGLE__RPC__DURATION__INIT;
    d.seconds = retry_after_ms / 1000;
    d.nanos = (retry_after_ms % 1000) * 1000000;
    Google__Rpc__RetryInfo ri = GOOGLE__RPC__RETRY_INFO__INIT;
    ri.retry_delay = &d;
    rc = pack(&ri.base, &ri_bytes);
    Google__Rpc__Any any = GOOGLE__RPC__ANY__INIT;
    any.type_url = "type.googleapis.com/google.rpc.RetryInfo";
    any.value.data = (uint8_t *)ri_bytes.data;
    any.value.len = ri_bytes.len;
    rc = rc ? rc : pack(&any.base, &any_bytes);
    detail.data = (uint8_t *)any_bytes.data;
    detail.len = any_bytes.len;
    st.n_details = 1;
    st.details = &detail;
  }
  rc = rc ? rc : pack(&st.base, out);
  sg_buf_free(&ri_bytes);
  sg_buf_free(&any_bytes);
  return rc;
}

/* ---------------------------------------------------------------- streams */

static void stream_release(stream_t *s) {
  sg_budget_release(&s->srv->budget, &s->held);
  sg_buf_free(&s->msg);
}

static void stream_free(stream_t *s) {
  stream_release(s);
  sg_buf_free(&s->hdrs);
  sg_buf_free(&s->out);
  free(s);
}

/* Out of the connection's list (nghttp2 closed it, or the connection went). */
static void stream_unlink(stream_t *s) {
  conn_t *c = s->conn;
  if (!c || !s->h2_open) return;
  s->h2_open = 0;
  if (s->prev) s->prev->next = s->next;
  else c->streams = s->next;
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = NULL;
  if (--c->nstreams == 0) c->idle_since = uv_now(c->srv->loop);
}

const char *sg_grpc_metadata(const sg_grpc_call_t *call, const char *lname) {
  const stream_t *s = (const stream_t *)call;
  const char *p = s->hdrs.data, *end = s->hdrs.data + s->hdrs.len;
  while (p && p < end) {
    const char *name = p, *value = name + strlen(name) + 1;
    if (value >= end) break;
    if (strcmp(name, lname) == 0) return value;
    p = value + strlen(value) + 1;
  }
  return NULL;
}

int sg_grpc_call_gone(const sg_grpc_call_t *call) { return ((const stream_t *)call)->conn == NULL; }

int sg_grpc_call_reserve(sg_grpc_call_t *call, size_t n) {
  stream_t *s = (stream_t *)call;
  return sg_budget_take(&s->srv->budget, &s->held, n);
}

/* ---------------------------------------------------------------- answers */

#define NV(n, v, vl) \
  { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NONE }

/* The OK answer's DATA, then its trailers (grpc-status 0). */
static ssize_t read_out(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length,
                        uint32_t *flags, nghttp2_data_source *src, void *user) {
  (void)user;
  stream_t *s = src->ptr;
  size_t left = s->out.len - s->out_off;
  size_t n = left < length ? left : length;
  memcpy(buf, s->out.data + s->out_off, n);
  s->out_off += n;
  if (s->out_off == s->out.len) {
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    nghttp2_nv tr[] = {NV("grpc-status", "0", 1)};
    if (nghttp2_submit_trailer(h2, id, tr, 1) != 0) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  return (ssize_t)n;
}

static void observe(stream_t *s, int code) {
  sg_grpc_server_t *srv = s->srv;
  if (srv->observer) srv->observer(srv->octx, &s->pub, code, uv_hrtime() - s->pub.start_ns);
}

/* Queue the answer of s on its stream (if it is still there). code OK
 * sends s->out; any other code is a trailers-only answer. */
static void submit_answer(stream_t *s, int http_status, int code, const char *msg, int retry_ms) {
  conn_t *c = s->conn;
  if (!c || !s->h2_open || c->phase != C_H2) return;
  char status[4], gcode[4];
  snprintf(status, sizeof status, "%d", http_status);
  snprintf(gcode, sizeof gcode, "%d", code);
  const char *ae = s->srv->accept_enc;
  nghttp2_nv nv[7] = {NV(":status", status, strlen(status)),
                      NV("content-type", "application/grpc", 16),
                      NV("grpc-accept-encoding", ae, strlen(ae))};
  size_t n = 3;
  int rc;
  if (code == SG_GRPC_OK) {
    nghttp2_data_provider dp;
    dp.source.ptr = s;
    dp.read_callback = read_out;
    rc = nghttp2_submit_response(c->h2, s->id, nv, n, &dp);
  } else {
    sg_buf_t m = SG_BUF_INIT, det = SG_BUF_INIT, b64 = SG_BUF_INIT;
    nv[n++] = (nghttp2_nv)NV("grpc-status", gcode, strlen(gcode));
    if (msg && *msg && sg_grpc_percent_encode(msg, MSG_MAX_IN, &m) == 0)
      nv[n++] = (nghttp2_nv)NV("grpc-message", m.data, m.len);
    if (retry_ms > 0 && sg_grpc_status_details(code, msg, retry_ms, &det) == 0) {
      size_t cap = sodium_base64_ENCODED_LEN(det.len, sodium_base64_VARIANT_ORIGINAL);
      if (sg_buf_reserve(&b64, cap) == 0) {
        sodium_bin2base64(b64.data, cap, (const unsigned char *)det.data, det.len,
                          sodium_base64_VARIANT_ORIGINAL);
        b64.len = strlen(b64.data);
        nv[n++] = (nghttp2_nv)NV("grpc-status-details-bin", b64.data, b64.len);
      }
    }
    rc = nghttp2_submit_response(c->h2, s->id, nv, n, NULL); /* copies the values */
    sg_buf_free(&m);
    sg_buf_free(&det);
    sg_buf_free(&b64);
  }
  if (rc != 0) { /* out of memory in nghttp2: the client sees the stream reset */
    nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    return;
  }
  if (!s->remote_done) s->rst_wanted = 1;
  s->deadline = uv_now(s->srv->loop) + s->srv->lim.write_timeout_ms;
}

/* The server's own answer to s (not with a handler): counted, queued, and
 * the request's memory given back. */
static void answer(stream_t *s, int http_status, int code, const char *msg, int retry_ms) {
  if (s->state == S_ANSWERED || s->state == S_HANDLER) return;
  s->state = S_ANSWERED;
  observe(s, code);
  submit_answer(s, http_status, code, msg, retry_ms);
  stream_release(s);
  if (s->conn) conn_flush(s->conn);
}

static stream_t *handler_done(sg_grpc_call_t *call, int code) {
  stream_t *s = (stream_t *)call;
  sg_grpc_server_t *srv = s->srv;
  s->state = S_ANSWERED;
  srv->ncalls--;
  observe(s, code);
  stream_release(s);
  return s;
}

static void maybe_finish(sg_grpc_server_t *srv);

/* After a handler's answer: flush, or free a call whose stream is gone. */
static void after_handler(stream_t *s) {
  sg_grpc_server_t *srv = s->srv;
  if (!s->conn) {
    stream_free(s);
    maybe_finish(srv);
    return;
  }
  conn_flush(s->conn);
}

void sg_grpc_respond(sg_grpc_call_t *call, const void *msg, size_t len) {
  stream_t *s = handler_done(call, SG_GRPC_OK);
  uint8_t prefix[5] = {0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                       (uint8_t)len};
  if (s->conn && (sg_buf_append(&s->out, prefix, 5) != 0 || sg_buf_append(&s->out, msg, len) != 0)) {
    sg_buf_free(&s->out);
    submit_answer(s, 200, SG_GRPC_INTERNAL, "out of memory", 0);
  } else {
    submit_answer(s, 200, SG_GRPC_OK, NULL, 0);
  }
  after_handler(s);
}

void sg_grpc_respond_status(sg_grpc_call_t *call, int code, const char *message, int retry_after_ms) {
  stream_t *s = handler_done(call, code);
  submit_answer(s, 200, code, message, retry_after_ms);
  after_handler(s);
}

/* ---------------------------------------------------------------- requests */

static int refuse(stream_t *s, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int refuse(stream_t *s, int code, const char *fmt, ...) {
  if (s->refuse_code) return 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->refuse_msg, sizeof s->refuse_msg, fmt, ap);
  va_end(ap);
  s->refuse_code = code;
  return 0;
}

/* "application/grpc" or "application/grpc+proto", parameters allowed. */
static int grpc_content_type(const char *ct) {
  if (!ct || strncasecmp(ct, "application/grpc", 16) != 0) return 0;
  const char *p = ct + 16;
  if (!strncasecmp(p, "+proto", 6)) p += 6;
  return *p == '\0' || *p == ';' || *p == ' ';
}

static int encoding_accepted(const sg_grpc_server_t *srv, const char *enc) {
  size_t n = strlen(enc);
  for (const char *p = srv->accept_enc; *p;) {
    size_t k = strcspn(p, ",");
    if (k == n && !strncmp(p, enc, n)) return 1;
    p += k;
    if (*p == ',') p++;
  }
  return 0;
}

/* The request's HEADERS are complete: check them, then receive the message. */
static void headers_done(stream_t *s) {
  sg_grpc_server_t *srv = s->srv;
  const char *path = sg_grpc_metadata(&s->pub, ":path");
  s->pub.path = path ? path : "";
  if (s->refuse_code) {
    answer(s, 200, s->refuse_code, s->refuse_msg, 0);
    return;
  }
  const char *method = sg_grpc_metadata(&s->pub, ":method");
  if (!method || strcmp(method, "POST") != 0) {
    char m[ERR_MAX];
    snprintf(m, sizeof m, "method %.32s is not allowed: gRPC calls are POST", method ? method : "(none)");
    answer(s, 405, SG_GRPC_INTERNAL, m, 0);
    return;
  }
  const char *ct = sg_grpc_metadata(&s->pub, "content-type");
  if (!grpc_content_type(ct)) {
    char m[ERR_MAX];
    snprintf(m, sizeof m, "invalid gRPC request content-type '%.64s': use application/grpc",
             ct ? ct : "");
    answer(s, 415, SG_GRPC_INVALID_ARGUMENT, m, 0);
    return;
  }
  for (size_t i = 0; i < srv->nmethods; i++)
    if (!strcmp(srv->methods[i].path, s->pub.path)) s->method = &srv->methods[i];
  if (!s->method) {
    char m[ERR_MAX];
    snprintf(m, sizeof m, "unknown method %.160s", s->pub.path);
    answer(s, 200, SG_GRPC_UNIMPLEMENTED, m, 0);
    return;
  }
  const char *enc = sg_grpc_metadata(&s->pub, "grpc-encoding");
  s->pub.encoding = enc && *enc ? enc : "identity";
  if (!encoding_accepted(srv, s->pub.encoding)) {
    char m[ERR_MAX];
    snprintf(m, sizeof m, "grpc-encoding '%.32s' is not supported (accepted: %s)", s->pub.encoding,
             srv->accept_enc);
    answer(s, 200, SG_GRPC_UNIMPLEMENTED, m, 0);
    return;
  }
  s->state = S_RECEIVING;
}

/* A message prefix is complete: check it and make room for the message. */
static void prefix_done(stream_t *s) {
  sg_grpc_server_t *srv = s->srv;
  uint8_t flag = s->prefix[0];
  uint32_t n = (uint32_t)s->prefix[1] << 24 | (uint32_t)s->prefix[2] << 16 |
               (uint32_t)s->prefix[3] << 8 | s->prefix[4];
  if (++s->nmsg > 1) {
    answer(s, 200, SG_GRPC_INTERNAL, "more than one request message in a unary call", 0);
    return;
  }
  if (flag > 1) {
    answer(s, 200, SG_GRPC_INTERNAL, "invalid message prefix: compressed flag is neither 0 nor 1", 0);
    return;
  }
  if (flag == 1 && !strcmp(s->pub.encoding, "identity")) {
    answer(s, 200, SG_GRPC_INTERNAL,
           "compressed flag set with identity or no grpc-encoding (send grpc-encoding: gzip)", 0);
    return;
  }
  char m[ERR_MAX];
  if (n > srv->lim.max_message_bytes) {
    snprintf(m, sizeof m, "request message of %u bytes exceeds the limit of %zu bytes", n,
             srv->lim.max_message_bytes);
    answer(s, 200, SG_GRPC_RESOURCE_EXHAUSTED, m, 0);
    return;
  }
  int rc = sg_budget_take(&srv->budget, &s->held, n);
  if (rc == SG_EBUSY) {
    snprintf(m, sizeof m, "the server holds its in-flight memory limit (%zu bytes) of requests "
                          "already; retry later", srv->lim.max_inflight_bytes);
    answer(s, 200, SG_GRPC_UNAVAILABLE, m, 1000);
    return;
  }
  if (rc != 0) {
    snprintf(m, sizeof m, "request message of %u bytes exceeds the in-flight memory limit of %zu "
                          "bytes", n, srv->lim.max_inflight_bytes);
    answer(s, 200, SG_GRPC_RESOURCE_EXHAUSTED, m, 0);
    return;
  }
  /* Exactly the counted size (sg_buf_reserve would round up). */
  s->msg.data = malloc((size_t)n + 1);
  if (!s->msg.data) {
    answer(s, 200, SG_GRPC_UNAVAILABLE, "out of memory", 1000);
    return;
  }
  s->msg.cap = (size_t)n + 1;
  s->want = n;
  s->pub.compressed = flag;
}

/* The client's END_STREAM: dispatch the one message, or say what is wrong. */
static void request_done(stream_t *s) {
  s->remote_done = 1;
  if (s->state != S_RECEIVING) return;
  if (s->refuse_code) { /* trailers over the metadata limit */
    answer(s, 200, s->refuse_code, s->refuse_msg, 0);
    return;
  }
  char m[ERR_MAX];
  if (s->prefix_got > 0 && s->prefix_got < 5) {
    snprintf(m, sizeof m, "request ended inside a message prefix (%u of 5 bytes)", s->prefix_got);
    answer(s, 200, SG_GRPC_INTERNAL, m, 0);
    return;
  }
  if (s->nmsg == 0) {
    answer(s, 200, SG_GRPC_INTERNAL, "request ended without a message (a unary call takes one)", 0);
    return;
  }
  if (s->msg.len < s->want) {
    snprintf(m, sizeof m, "request ended inside a message: its prefix announced %u bytes, %zu arrived",
             s->want, s->msg.len);
    answer(s, 200, SG_GRPC_INTERNAL, m, 0);
    return;
  }
  s->state = S_HANDLER;
  s->pub.message = (const uint8_t *)(s->msg.data ? s->msg.data : "");
  s->pub.len = s->msg.len;
  s->srv->ncalls++;
  s->method->handler(&s->pub, s->srv->ctx);
}

/* ---------------------------------------------------------------- nghttp2 callbacks */

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *f, void *user) {
  conn_t *c = user;
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  stream_t *s = calloc(1, sizeof *s);
  if (!s) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the stream is reset */
  s->srv = c->srv;
  s->conn = c;
  s->id = f->hd.stream_id;
  s->h2_open = 1;
  s->pub.path = "";
  s->pub.encoding = "identity";
  s->pub.start_ns = uv_hrtime();
  s->deadline = uv_now(c->srv->loop) + c->srv->lim.read_timeout_ms;
  s->next = c->streams;
  if (c->streams) c->streams->prev = s;
  c->streams = s;
  c->nstreams++;
  nghttp2_session_set_stream_user_data(h2, s->id, s);
  return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user) {
  (void)flags;
  conn_t *c = user;
  stream_t *s = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
  if (!s || s->state == S_ANSWERED) return 0;
  size_t max = c->srv->lim.max_header_bytes;
  s->header_bytes += namelen + valuelen + 32;
  if (s->header_bytes > max)
    return refuse(s, SG_GRPC_RESOURCE_EXHAUSTED, "request metadata exceeds %zu bytes", max);
  if (s->refuse_code || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0; /* trailers: counted only */
  if (sg_buf_append(&s->hdrs, name, namelen) != 0 || sg_buf_putc(&s->hdrs, '\0') != 0 ||
      sg_buf_append(&s->hdrs, value, valuelen) != 0 || sg_buf_putc(&s->hdrs, '\0') != 0)
    return refuse(s, SG_GRPC_UNAVAILABLE, "out of memory");
  return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *user) {
  (void)user;
  if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) return 0;
  stream_t *s = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
  if (!s) return 0;
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST && s->state == S_HEADERS)
    headers_done(s);
  if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) request_done(s);
  return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user) {
  (void)flags;
  (void)user;
  stream_t *s = nghttp2_session_get_stream_user_data(h2, id);
  while (s && s->state == S_RECEIVING && len > 0) {
    if (s->prefix_got < 5) {
      size_t k = (size_t)(5 - s->prefix_got);
      if (k > len) k = len;
      memcpy(s->prefix + s->prefix_got, data, k);
      s->prefix_got = (uint8_t)(s->prefix_got + k);
      data += k;
      len -= k;
      if (s->prefix_got == 5) prefix_done(s);
      continue;
    }
    size_t k = s->want - s->msg.len;
    if (k == 0) { /* the next message's prefix */
      s->prefix_got = 0;
      continue;
    }
    if (k > len) k = len;
    sg_buf_append(&s->msg, data, k); /* room was reserved at the prefix */
    data += k;
    len -= k;
  }
  return 0;
}

static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *f, void *user) {
  (void)user;
  if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
      !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
    return 0;
  /* Our answer is out; the client is still sending a request we no longer
   * need: reset the stream with NO_ERROR so it stops (RFC 9113 8.1). */
  stream_t *s = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
  if (s && s->rst_wanted && !s->remote_done)
    nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
  return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t id, uint32_t code, void *user) {
  (void)code;
  (void)user;
  stream_t *s = nghttp2_session_get_stream_user_data(h2, id);
  if (!s) return 0;
  if (s->state != S_ANSWERED && s->state != S_HANDLER)
    observe(s, SG_GRPC_CANCELLED); /* the client reset it (or the connection ends) */
  stream_unlink(s);
  if (s->state == S_HANDLER) {
    s->conn = NULL; /* the handler's answer will be dropped */
    return 0;
  }
  stream_free(s);
  return 0;
}

/* ---------------------------------------------------------------- connections */

static void on_handle_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->open_handles > 0) return;
  sg_grpc_server_t *srv = c->srv;
  free(c);
  srv->nconn--;
  maybe_finish(srv);
}

/* Tear the connection down now. Streams with a handler stay, marked gone. */
static void conn_close(conn_t *c) {
  if (c->closed) return;
  c->closed = 1;
  sg_grpc_server_t *srv = c->srv;
  stream_t *next;
  for (stream_t *s = c->streams; s; s = next) {
    next = s->next;
    if (s->state != S_ANSWERED && s->state != S_HANDLER) observe(s, SG_GRPC_CANCELLED);
    stream_unlink(s);
    s->conn = NULL;
    if (s->state != S_HANDLER) stream_free(s);
  }
  if (c->h2) nghttp2_session_del(c->h2);
  c->h2 = NULL;
  if (c->prev) c->prev->next = c->next;
  else srv->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  conn_t *c = h->data;
  *buf = uv_buf_init((char *)c->srv->rbuf, RBUF_SIZE);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

/* Read unless the peer is not taking our output (or there is nothing to read for). */
static void conn_update_reading(conn_t *c) {
  if (c->closed) return;
  int want = c->phase == C_LINGER || (c->phase == C_H2 && c->tcp.write_queue_size < WQ_HIGH);
  if (want && !c->reading) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
      conn_close(c);
      return;
    }
    c->reading = 1;
  } else if (!want && c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

static void on_shutdown(uv_shutdown_t *r, int status) {
  conn_t *c = r->data;
  if (status < 0 && !c->closed) conn_close(c);
}

/* Everything is written: FIN, then discard input until EOF or LINGER_MS. */
static void conn_linger(conn_t *c) {
  c->phase = C_LINGER;
  c->linger_until = uv_now(c->srv->loop) + LINGER_MS;
  c->shut.data = c;
  if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    conn_close(c);
    return;
  }
  conn_update_reading(c);
  conn_arm(c);
}

static void on_write(uv_write_t *w, int status) {
  wreq_t *wr = (wreq_t *)w;
  conn_t *c = wr->conn;
  sg_buf_free(&wr->out);
  free(wr);
  c->wpending--;
  if (c->closed) return;
  if (status < 0) {
    conn_close(c);
    return;
  }
  if (c->phase == C_DRAIN && c->wpending == 0) {
    conn_linger(c);
    return;
  }
  if (c->phase == C_H2) conn_flush(c); /* more output may wait (a capped batch) */
  conn_update_reading(c);
}

static int queue_write(conn_t *c, sg_buf_t *out) {
  wreq_t *wr = calloc(1, sizeof *wr);
  if (!wr) {
    sg_buf_free(out);
    return SG_ENOMEM;
  }
  wr->conn = c;
  wr->out = *out;
  *out = (sg_buf_t)SG_BUF_INIT;
  uv_buf_t b = uv_buf_init(wr->out.data, (unsigned)wr->out.len);
  int was_empty = c->tcp.write_queue_size == 0;
  if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
    sg_buf_free(&wr->out);
    free(wr);
    return SG_EIO;
  }
  c->wpending++;
  if (was_empty) { /* what the kernel did not take now starts the write timeout */
    c->wq_mark = c->tcp.write_queue_size;
    c->wq_since = uv_now(c->srv->loop);
  }
  return 0;
}

/* Nothing more to say on this connection: write what is queued, then linger. */
static void conn_drain(conn_t *c) {
  if (c->phase != C_H2) return;
  c->phase = C_DRAIN;
  if (c->wpending == 0) conn_linger(c); /* else on_write lingers after the last write */
  else conn_arm(c);
}

/* Hand what nghttp2 has to send to libuv, and end the connection when
 * nghttp2 is done with it. Not while nghttp2 runs (in_h2): the caller
 * flushes afterwards. */
static void conn_flush(conn_t *c) {
  if (c->closed || c->in_h2 || c->phase != C_H2) return;
  for (;;) {
    sg_buf_t out = SG_BUF_INIT;
    c->in_h2 = 1;
    while (out.len < OUT_CHUNK) {
      const uint8_t *d;
      ssize_t n = nghttp2_session_mem_send(c->h2, &d);
      if (n < 0) {
        c->in_h2 = 0;
        sg_buf_free(&out);
        conn_close(c);
        return;
      }
      if (n == 0) break;
      if (sg_buf_append(&out, d, (size_t)n) != 0) {
        c->in_h2 = 0;
        sg_buf_free(&out);
        conn_close(c);
        return;
      }
    }
    c->in_h2 = 0;
    if (out.len == 0) break;
    int full = out.len >= OUT_CHUNK;
    if (queue_write(c, &out) != 0) {
      conn_close(c);
      return;
    }
    if (!full || c->tcp.write_queue_size >= WQ_HIGH) break; /* on_write asks again */
  }
  if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) {
    conn_drain(c);
    return;
  }
  conn_update_reading(c);
  conn_arm(c);
}

/* An HTTP/1 request on the gRPC port: one clear answer, then close. */
static void answer_http1(conn_t *c) {
  static const char body[] =
      "this port serves OTLP over gRPC: HTTP/2 with prior knowledge (h2c), not HTTP/1.1; "
      "send OTLP/HTTP to the gateway's HTTP listener\n";
  sg_buf_t out = SG_BUF_INIT;
  if (sg_buf_printf(&out, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                    sizeof body - 1, body) != 0 ||
      queue_write(c, &out) != 0) {
    conn_close(c);
    return;
  }
  conn_drain(c);
}

static int looks_http1(const uint8_t *p, size_t n) {
  size_t i = 0;
  while (i < n && p[i] >= 'A' && p[i] <= 'Z') i++;
  return i >= 3 && i < n && p[i] == ' ';
}

/* Checks the first bytes against the client preface. 0 while they match. */
static int check_preface(conn_t *c, const uint8_t *p, size_t n) {
  static const char magic[] = NGHTTP2_CLIENT_MAGIC;
  size_t want = NGHTTP2_CLIENT_MAGIC_LEN;
  if (c->head_len >= want) return 0;
  size_t k = want - c->head_len < n ? want - c->head_len : n;
  memcpy(c->head + c->head_len, p, k);
  c->head_len += k;
  if (memcmp(c->head, magic, c->head_len) == 0) return 0;
  if (looks_http1(c->head, c->head_len)) {
    answer_http1(c);
  } else {
    nghttp2_session_terminate_session(c->h2, NGHTTP2_PROTOCOL_ERROR);
    conn_flush(c);
  }
  return -1;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = st->data;
  if (c->closed) return;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  if (nread == 0 || c->phase != C_H2) return; /* draining or lingering: discarded */
  const uint8_t *p = (const uint8_t *)buf->base;
  if (check_preface(c, p, (size_t)nread) != 0) return;
  c->in_h2 = 1;
  ssize_t rc = nghttp2_session_mem_recv(c->h2, p, (size_t)nread);
  c->in_h2 = 0;
  if (rc < 0) { /* fatal: out of memory, a flood, a callback failure */
    conn_close(c);
    return;
  }
  conn_flush(c);
}

static void on_timer(uv_timer_t *t) {
  conn_t *c = t->data;
  if (c->closed) return;
  uint64_t now = uv_now(c->srv->loop);
  const sg_grpc_limits_t *lim = &c->srv->lim;
  if (c->phase == C_LINGER) {
    if (now >= c->linger_until) conn_close(c);
    else conn_arm(c);
    return;
  }
  size_t wq = c->tcp.write_queue_size;
  if (wq > 0) {
    if (wq < c->wq_mark) { /* the peer took some: a new period (nginx's send_timeout) */
      c->wq_mark = wq;
      c->wq_since = now;
    } else if (now >= c->wq_since + lim->write_timeout_ms) {
      conn_close(c);
      return;
    }
  }
  if (c->phase == C_H2) {
    /* Answers are queued first and flushed once: a flush may close and
     * free streams of this list. */
    c->in_h2 = 1;
    for (stream_t *s = c->streams; s; s = s->next) {
      if ((s->state == S_HEADERS || s->state == S_RECEIVING) && now >= s->deadline) {
        char m[ERR_MAX];
        snprintf(m, sizeof m, "request not received within %llu ms (read_timeout_ms)",
                 (unsigned long long)lim->read_timeout_ms);
        answer(s, 200, SG_GRPC_DEADLINE_EXCEEDED, m, 0);
      } else if (s->state == S_ANSWERED && !s->reset_sent && now >= s->deadline) {
        s->reset_sent = 1;
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
      }
    }
    c->in_h2 = 0;
    conn_flush(c);
    if (c->closed) return;
    if (c->phase == C_H2 && c->nstreams == 0 && now >= c->idle_since + lim->idle_timeout_ms) {
      nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR); /* GOAWAY; then done */
      conn_flush(c);
      if (c->closed) return;
    }
  }
  conn_arm(c);
}

/* The timer at the earliest of: a receiving stream's read deadline, the
 * idle deadline (no open stream), the write deadline, the linger end. */
static void conn_arm(conn_t *c) {
  if (c->closed) return;
  const sg_grpc_limits_t *lim = &c->srv->lim;
  uint64_t now = uv_now(c->srv->loop), next = UINT64_MAX;
  if (c->phase == C_LINGER) {
    next = c->linger_until;
  } else {
    if (c->phase == C_H2) {
      for (stream_t *s = c->streams; s; s = s->next)
        if ((s->state == S_HEADERS || s->state == S_RECEIVING ||
             (s->state == S_ANSWERED && !s->reset_sent)) && s->deadline < next)
          next = s->deadline;
      if (c->nstreams == 0 && c->idle_since + lim->idle_timeout_ms < next)
        next = c->idle_since + lim->idle_timeout_ms;
    }
    if (c->tcp.write_queue_size > 0) {
      uint64_t w = c->wq_since + lim->write_timeout_ms;
      if (w < next) next = w;
    }
  }
  if (next == UINT64_MAX) {
    uv_timer_stop(&c->timer);
    return;
  }
  uv_timer_start(&c->timer, on_timer, next > now ? next - now : 0, 0);
}

/* ---------------------------------------------------------------- accepting */

static void reject(sg_grpc_server_t *srv);

static void on_reject_closed(uv_handle_t *h) {
  sg_grpc_server_t *srv = h->data;
  if (h == (uv_handle_t *)&srv->spare) srv->spare_busy = 0;
  else free(h);
  srv->nreject--;
  if (srv->accept_stalled && !srv->shutting_down) {
    srv->accept_stalled = 0;
    reject(srv);
  }
  maybe_finish(srv);
}

/* A connection beyond max_connections (or without memory for it): accepted
 * and closed at once (libuv stops watching the listener while one waits). */
static void reject(sg_grpc_server_t *srv) {
  uv_tcp_t *t = malloc(sizeof *t);
  if (!t) {
    if (srv->spare_busy) {
      srv->accept_stalled = 1;
      return;
    }
    t = &srv->spare;
    srv->spare_busy = 1;
  }
  uv_tcp_init(srv->loop, t);
  t->data = srv;
  srv->nreject++;
  (void)uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)t);
  uv_close((uv_handle_t *)t, on_reject_closed);
}

static int conn_start_h2(conn_t *c) {
  sg_grpc_server_t *srv = c->srv;
  if (nghttp2_session_server_new2(&c->h2, srv->cbs, c, srv->opt) != 0) return SG_ENOMEM;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, srv->lim.max_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, srv->lim.stream_window},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)srv->lim.max_header_bytes},
  };
  if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0)
    return SG_ENOMEM;
  if (srv->lim.conn_window > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE &&
      nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, (int32_t)srv->lim.conn_window) != 0)
    return SG_ENOMEM;
  return 0;
}

static void on_connection(uv_stream_t *l, int status) {
  sg_grpc_server_t *srv = l->data;
  if (status < 0 || srv->shutting_down) return;
  if ((size_t)srv->nconn >= srv->lim.max_connections) {
    reject(srv);
    return;
  }
  conn_t *c = calloc(1, sizeof *c);
  if (!c) {
    reject(srv);
    return;
  }
  c->srv = srv;
  uv_tcp_init(srv->loop, &c->tcp);
  uv_timer_init(srv->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->open_handles = 2;
  srv->nconn++;
  c->next = srv->conns;
  if (srv->conns) srv->conns->prev = c;
  srv->conns = c;
  c->idle_since = uv_now(srv->loop);
  if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0 || conn_start_h2(c) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  /* Our SETTINGS wait for the client's first bytes: an HTTP/1 client gets
   * a plain HTTP/1 answer rather than HTTP/2 frames. */
  conn_update_reading(c);
  conn_arm(c);
}

/* ---------------------------------------------------------------- server */

static void maybe_finish(sg_grpc_server_t *srv) {
  if (!srv->shutting_down || srv->listener_open || srv->grace_open || srv->nconn > 0 ||
      srv->nreject > 0 || srv->ncalls > 0)
    return;
  void (*done)(void *) = srv->done;
  void *arg = srv->done_arg;
  nghttp2_session_callbacks_del(srv->cbs);
  nghttp2_option_del(srv->opt);
  free(srv);
  if (done) done(arg);
}

static void free_server_cb(uv_handle_t *h) {
  sg_grpc_server_t *srv = h->data;
  nghttp2_session_callbacks_del(srv->cbs);
  nghttp2_option_del(srv->opt);
  free(srv);
}

sg_grpc_server_t *sg_grpc_server_new(uv_loop_t *loop, uv_os_sock_t listen_fd,
                                     const sg_grpc_limits_t *lim, const sg_grpc_method_t *methods,
                                     size_t n, void *ctx) {
  sg_grpc_server_t *srv = calloc(1, sizeof *srv);
  if (!srv) {
    close(listen_fd);
    return NULL;
  }
  sg_grpc_limits_default(&srv->lim);
  if (lim) {
#define TAKE(f) if (lim->f) srv->lim.f = lim->f
    TAKE(max_message_bytes); TAKE(max_header_bytes); TAKE(max_streams); TAKE(stream_window);
    TAKE(conn_window); TAKE(read_timeout_ms); TAKE(idle_timeout_ms); TAKE(write_timeout_ms);
    TAKE(goaway_grace_ms); TAKE(max_connections); TAKE(backlog);
#undef TAKE
    srv->lim.inflight = lim->inflight;
    srv->lim.max_inflight_bytes = lim->max_inflight_bytes;
    srv->lim.inflight_own = lim->inflight_own;
    srv->lim.accept_encoding = lim->accept_encoding;
  }
  if (srv->lim.stream_window > NGHTTP2_MAX_WINDOW_SIZE) srv->lim.stream_window = NGHTTP2_MAX_WINDOW_SIZE;
  if (srv->lim.conn_window > NGHTTP2_MAX_WINDOW_SIZE) srv->lim.conn_window = NGHTTP2_MAX_WINDOW_SIZE;
  snprintf(srv->accept_enc, sizeof srv->accept_enc, "identity%s%s",
           srv->lim.accept_encoding && *srv->lim.accept_encoding ? "," : "",
           srv->lim.accept_encoding ? srv->lim.accept_encoding : "");
  srv->budget.counter = srv->lim.inflight;
  srv->budget.max = srv->lim.max_inflight_bytes;
  srv->budget.own = srv->lim.inflight ? srv->lim.inflight_own : NULL;
  srv->loop = loop;
  srv->methods = methods;
  srv->nmethods = n;
  srv->ctx = ctx;
  if (nghttp2_session_callbacks_new(&srv->cbs) != 0 || nghttp2_option_new(&srv->opt) != 0) {
    if (srv->cbs) nghttp2_session_callbacks_del(srv->cbs);
    close(listen_fd);
    free(srv);
    return NULL;
  }
  nghttp2_session_callbacks_set_on_begin_headers_callback(srv->cbs, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(srv->cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(srv->cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(srv->cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(srv->cbs, on_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(srv->cbs, on_stream_close);
  if (uv_tcp_init(loop, &srv->listener) != 0) {
    close(listen_fd);
    nghttp2_session_callbacks_del(srv->cbs);
    nghttp2_option_del(srv->opt);
    free(srv);
    return NULL;
  }
  srv->listener.data = srv;
  if (uv_tcp_open(&srv->listener, listen_fd) != 0) {
    close(listen_fd);
    uv_close((uv_handle_t *)&srv->listener, free_server_cb);
    return NULL;
  }
  if (uv_listen((uv_stream_t *)&srv->listener, srv->lim.backlog, on_connection) != 0) {
    uv_close((uv_handle_t *)&srv->listener, free_server_cb);
    return NULL;
  }
  uv_timer_init(loop, &srv->grace); /* cannot fail */
  srv->grace.data = srv;
  srv->listener_open = 1;
  srv->grace_open = 1;
  return srv;
}

void sg_grpc_server_set_observer(sg_grpc_server_t *srv, sg_grpc_log_cb cb, void *ctx) {
  srv->observer = cb;
  srv->octx = ctx;
}

static void on_listener_closed(uv_handle_t *h) {
  sg_grpc_server_t *srv = h->data;
  srv->listener_open = 0;
  maybe_finish(srv);
}

static void on_grace_closed(uv_handle_t *h) {
  sg_grpc_server_t *srv = h->data;
  srv->grace_open = 0;
  maybe_finish(srv);
}

/* The final GOAWAY: streams after the last one taken are not processed
 * (the client retries them elsewhere); the rest finish. */
static void grace_cb(uv_timer_t *t) {
  sg_grpc_server_t *srv = t->data;
  conn_t *next;
  for (conn_t *c = srv->conns; c; c = next) {
    next = c->next;
    if (c->phase != C_H2) continue;
    nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->h2),
                          NGHTTP2_NO_ERROR, NULL, 0);
    conn_flush(c);
  }
  uv_close((uv_handle_t *)&srv->grace, on_grace_closed);
}

void sg_grpc_server_shutdown(sg_grpc_server_t *srv, void (*done)(void *arg), void *arg) {
  if (srv->shutting_down) return;
  srv->shutting_down = 1;
  srv->done = done;
  srv->done_arg = arg;
  uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
  if (!srv->conns) { /* nobody to tell */
    uv_close((uv_handle_t *)&srv->grace, on_grace_closed);
    return;
  }
  for (conn_t *c = srv->conns; c; c = c->next)
    if (c->phase == C_H2) nghttp2_submit_shutdown_notice(c->h2);
  conn_t *next;
  for (conn_t *c = srv->conns; c; c = next) {
    next = c->next;
    conn_flush(c);
  }
  uv_timer_start(&srv->grace, grace_cb, srv->lim.goaway_grace_ms, 0);
}

int sg_grpc_server_connections(const sg_grpc_server_t *srv) { return srv->nconn; }
