/* http.c - HTTP/1.1 server connections (see http.h for the contract).
 *
 * A connection is in one of these states:
 *   READ     parsing requests; idle between requests (req == NULL, idle
 *            timer) or receiving one (req != NULL, read timer from its first
 *            byte);
 *   HANDLER  a complete request is with the handler; nothing is parsed, input
 *            is only buffered (until the buffer is full) to notice EOF;
 *   WRITE    the response is being written (write timer, re-armed while the
 *            kernel takes bytes); afterwards back to
 *            READ (keep-alive: buffered pipelined bytes are parsed then), or
 *   LINGER   the response said Connection: close: write side shut down,
 *            input discarded until EOF or linger_ms, then closed;
 *   CLOSED   uv_close() issued on both handles; freed in the last callback.
 * The parser is paused in on_message_complete, so one http_parser_execute()
 * never runs past the end of a request.
 */
#include "http.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "budget.h"
#include "err.h"

#define RBUF_SIZE (64 * 1024)
#define ERR_MSG_MAX 200

typedef struct conn_s conn_t;

/* The handler's request plus what the server keeps about it. pub must stay
 * the first member: sg_http_req_t pointers are cast back to req_t. */
typedef struct {
  sg_http_req_t pub;
  sg_http_server_t *srv;
  conn_t *conn;          /* NULL once the connection is gone */
  sg_buf_t target;       /* "path\0query" once headers are complete */
  sg_buf_t hdrs;         /* "name\0value\0" repeated; names lower-cased */
  size_t value_start;    /* offset in hdrs of the value being received */
  size_t header_bytes;   /* request line + headers + trailers, as counted */
  size_t held;           /* bytes counted in the in-flight budget for it */
  int hdr_state;         /* 0 nothing yet, 1 in a name, 2 in a value */
  unsigned headers_done : 1;
  unsigned keep_alive : 1;
  unsigned head : 1;
} req_t;

typedef enum { C_READ, C_HANDLER, C_WRITE, C_LINGER, C_CLOSED } conn_state_t;

struct conn_s {
  sg_http_server_t *srv;
  conn_t *prev, *next;   /* srv->conns, until conn_close() */
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shut;
  http_parser parser;
  char *rbuf;            /* RBUF_SIZE bytes, allocated while needed */
  size_t roff, rlen;     /* unparsed input is rbuf[roff..rlen) */
  req_t *req;            /* being received (READ) or with the handler (HANDLER) */
  conn_state_t state;
  int reading;           /* uv_read_start() active */
  int open_handles;      /* handles not yet closed */
  int peer_eof;          /* client half-closed while its request was being answered */
  int close_after_write; /* the response being written ends the connection */
  size_t wq_mark;        /* write queue size when the write timer was armed */
  int err_status;        /* set by a parser callback that refuses the request */
  char err_msg[ERR_MSG_MAX];
};

typedef struct {
  uv_write_t w;
  conn_t *conn;
  int final;             /* the response (not a 100 Continue) */
  sg_buf_t out;
} wreq_t;

struct sg_http_server_s {
  uv_loop_t *loop;
  uv_tcp_t listener;
  sg_http_limits_t lim;
  sg_budget_t budget;    /* lim.inflight and lim.max_inflight_bytes */
  sg_http_handler_cb handler;
  void *ctx;
  sg_http_log_cb observer;
  void *octx;
  conn_t *conns;
  int nconn;             /* connections not yet fully closed */
  int nreject;           /* rejected sockets not yet closed */
  uv_tcp_t spare;        /* for a reject when malloc fails */
  int spare_busy;
  int accept_stalled;    /* a connection waits for the spare handle */
  int nreqs;             /* requests handed out and not yet answered */
  int listener_open;
  int shutting_down;
  void (*done)(void *arg);
  void *done_arg;
  sg_http_stats_t stats;
  time_t date_sec;
  char date[40];
};

static http_parser_settings parser_settings;
static uv_once_t settings_once = UV_ONCE_INIT;

static void conn_close(conn_t *c);
static void conn_process(conn_t *c);
static void conn_update_reading(conn_t *c);
static void send_error(conn_t *c, int status, const char *msg);
static void arm_timer(conn_t *c, uint64_t ms);

/* ---------------------------------------------------------------- misc */

void sg_http_limits_default(sg_http_limits_t *lim) {
  lim->max_header_bytes = 16 * 1024;
  lim->max_body_bytes = 10 * 1024 * 1024;
  lim->read_timeout_ms = 30000;
  lim->idle_timeout_ms = 60000;
  lim->write_timeout_ms = 30000;
  lim->linger_ms = 2000;
  lim->max_connections = 10000;
  lim->backlog = SOMAXCONN;
  lim->inflight = NULL;
  lim->max_inflight_bytes = 0;
}

const char *sg_http_status_text(int status) {
  if (status < 100 || status > 599) return "Unknown";
  const char *s = http_status_str((enum http_status)status);
  return (s == NULL || s[0] == '<') ? "Unknown" : s;
}

/* IMF-fixdate, cached per second. Formatted by hand: strftime's names
 * follow the locale. */
static const char *http_date(sg_http_server_t *srv) {
  static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  time_t now = time(NULL);
  if (now != srv->date_sec || srv->date[0] == '\0') {
    struct tm tm;
    gmtime_r(&now, &tm);
    snprintf(srv->date, sizeof srv->date, "%s, %02d %s %04d %02d:%02d:%02d GMT",
             days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
             tm.tm_hour, tm.tm_min, tm.tm_sec);
    srv->date_sec = now;
  }
  return srv->date;
}

static void maybe_finish(sg_http_server_t *srv) {
  if (!srv->shutting_down || srv->listener_open || srv->nconn > 0 || srv->nreject > 0 ||
      srv->nreqs > 0)
    return;
  void (*done)(void *) = srv->done;
  void *arg = srv->done_arg;
  free(srv);
  if (done != NULL) done(arg);
}

static void count_response(sg_http_server_t *srv, int status) {
  srv->stats.responses++;
  if (status >= 100 && status <= 599) srv->stats.status[status / 100]++;
}

/* ---------------------------------------------------------------- budget */

/* Count n more bytes held by r in the shared in-flight budget. 0,
 * SG_EBUSY (no room now), SG_ETOOBIG (r alone would exceed the limit). */
static int budget_take(req_t *r, size_t n) { return sg_budget_take(&r->srv->budget, &r->held, n); }

static void budget_release(req_t *r) { sg_budget_release(&r->srv->budget, &r->held); }

int sg_http_req_reserve(sg_http_req_t *pub, size_t n) { return budget_take((req_t *)pub, n); }

/* Make room in r's body for n more bytes, counted before it is allocated.
 * exact (a Content-Length): the buffer gets just that; otherwise (chunks)
 * its capacity at least doubles, up to max_body_bytes, so appends stay
 * cheap, unless only the exact size fits in the budget. The counted size
 * is the capacity without the NUL. 0, SG_EBUSY, SG_ETOOBIG or SG_ENOMEM
 * (the bytes stay counted until r is freed). */
static int body_room(req_t *r, size_t n, int exact) {
  sg_buf_t *b = &r->pub.body;
  if (n == 0 || n > SIZE_MAX / 2 - b->len) return n == 0 ? 0 : SG_ETOOBIG;
  size_t need = b->len + n + 1;
  if (need <= b->cap) return 0;
  size_t cap = need;
  if (!exact) {
    size_t dbl = b->cap < 2048 ? 4096 : b->cap * 2;
    size_t top = r->srv->lim.max_body_bytes + 1;
    if (dbl > top) dbl = top;
    if (dbl > cap) cap = dbl;
  }
  size_t had = b->cap ? b->cap - 1 : 0;
  int rc = budget_take(r, (cap - 1) - had);
  /* Near the limit, doubling could refuse a body that fits: grow exactly. */
  if (rc != 0 && cap > need && (rc = budget_take(r, (need - 1) - had)) == 0) cap = need;
  if (rc != 0) return rc;
  char *d = realloc(b->data, cap);
  if (d == NULL) return SG_ENOMEM;
  b->data = d;
  b->cap = cap;
  return 0;
}

/* ---------------------------------------------------------------- requests */

static void req_free(req_t *r) {
  budget_release(r);
  sg_buf_free(&r->target);
  sg_buf_free(&r->hdrs);
  sg_buf_free(&r->pub.body);
  free(r);
}

const char *sg_http_header(const sg_http_req_t *pub, const char *lname) {
  const req_t *r = (const req_t *)pub;
  if (!r->headers_done || r->hdrs.len == 0) return NULL;
  const char *p = r->hdrs.data, *end = r->hdrs.data + r->hdrs.len;
  while (p < end) {
    const char *name = p;
    const char *value = name + strlen(name) + 1;
    if (value >= end) break;
    if (strcmp(name, lname) == 0) return value;
    p = value + strlen(value) + 1;
  }
  return NULL;
}

int sg_http_req_gone(const sg_http_req_t *pub) { return ((const req_t *)pub)->conn == NULL; }

/* ---------------------------------------------------------------- parser callbacks */

/* Refuse the request from inside a parser callback: remember the answer and
 * make the callback fail, which stops http_parser_execute(). */
static int refuse(conn_t *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int refuse(conn_t *c, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err_msg, sizeof c->err_msg, fmt, ap);
  va_end(ap);
  c->err_status = status;
  return -1;
}

/* Refuse for a failed body_room(): 429 when the budget is full now, 413
 * when the body could never fit in it. 0 when rc is 0. */
static int refuse_room(conn_t *c, int rc) {
  size_t max = c->srv->lim.max_inflight_bytes;
  switch (rc) {
  case 0: return 0;
  case SG_EBUSY:
    return refuse(c, 429, "the server holds its in-flight memory limit (%zu bytes) of requests "
                          "already; retry later", max);
  case SG_ETOOBIG:
    return refuse(c, 413, "request body exceeds the in-flight memory limit of %zu bytes", max);
  default: return refuse(c, 503, "out of memory");
  }
}

static int count_header_bytes(conn_t *c, size_t n) {
  req_t *r = c->req;
  r->header_bytes += n;
  if (r->header_bytes > c->srv->lim.max_header_bytes)
    return refuse(c, 431, "request headers exceed %zu bytes", c->srv->lim.max_header_bytes);
  return 0;
}

/* End the header value being received: trim trailing white space, NUL. */
static int end_value(req_t *r) {
  while (r->hdrs.len > r->value_start &&
         (r->hdrs.data[r->hdrs.len - 1] == ' ' || r->hdrs.data[r->hdrs.len - 1] == '\t'))
    r->hdrs.len--;
  return sg_buf_putc(&r->hdrs, '\0');
}

static int on_message_begin(http_parser *p) {
  conn_t *c = p->data;
  req_t *r = calloc(1, sizeof *r);
  if (r == NULL) return refuse(c, 503, "out of memory");
  r->srv = c->srv;
  r->conn = c;
  r->pub.start_ns = uv_hrtime();
  r->pub.path = "";
  r->pub.query = "";
  c->req = r;
  arm_timer(c, c->srv->lim.read_timeout_ms); /* the whole request, from now */
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (count_header_bytes(c, len) != 0) return -1;
  if (sg_buf_append(&c->req->target, at, len) != 0) return refuse(c, 503, "out of memory");
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  req_t *r = c->req;
  if (count_header_bytes(c, len + (r->hdr_state != 1 ? 4 : 0)) != 0) return -1;
  if (r->headers_done) return 0; /* a trailer: counted, not kept */
  if (r->hdr_state == 2 && end_value(r) != 0) return refuse(c, 503, "out of memory");
  r->hdr_state = 1;
  if (sg_buf_reserve(&r->hdrs, len) != 0) return refuse(c, 503, "out of memory");
  for (size_t i = 0; i < len; i++) {
    char ch = at[i];
    if (ch >= 'A' && ch <= 'Z') ch = (char)(ch - 'A' + 'a');
    r->hdrs.data[r->hdrs.len++] = ch;
  }
  r->hdrs.data[r->hdrs.len] = '\0';
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  req_t *r = c->req;
  if (count_header_bytes(c, len) != 0) return -1;
  if (r->headers_done) return 0;
  if (r->hdr_state == 1) {
    if (sg_buf_putc(&r->hdrs, '\0') != 0) return refuse(c, 503, "out of memory");
    r->value_start = r->hdrs.len;
    r->hdr_state = 2;
  }
  if (sg_buf_append(&r->hdrs, at, len) != 0) return refuse(c, 503, "out of memory");
  return 0;
}

/* Split the request target into path and query. Origin-form ("/p?q") is
 * what clients send; absolute-form ("http://h/p?q") is accepted as RFC 9112
 * asks of servers; "*" only for OPTIONS. 0 or -1 (not a valid target). */
static int split_target(req_t *r) {
  if (r->target.len == 0 || sg_buf_putc(&r->target, '\0') != 0) return -1;
  r->target.len--; /* keep the NUL out of len */
  char *t = r->target.data;
  char *path = t;
  if (t[0] != '/') {
    if (strcmp(t, "*") == 0 && r->pub.method == HTTP_OPTIONS) {
      r->pub.path = t;
      return 0;
    }
    char *scheme_end = strstr(t, "://");
    if (scheme_end == NULL) return -1;
    char *authority = scheme_end + 3;
    path = authority + strcspn(authority, "/?#");
    if (*path != '/') { /* "http://host", "http://host?q" */
      char *q = *path == '?' ? path + 1 : NULL;
      r->pub.path = "/";
      r->pub.query = q != NULL ? q : "";
      if (q != NULL && (q = strchr(q, '#')) != NULL) *q = '\0';
      return 0;
    }
  }
  char *frag = strchr(path, '#');
  if (frag != NULL) *frag = '\0';
  char *q = strchr(path, '?');
  if (q != NULL) {
    *q = '\0';
    r->pub.query = q + 1;
  }
  r->pub.path = path;
  return 0;
}

static void write_continue(conn_t *c);

static int on_headers_complete(http_parser *p) {
  conn_t *c = p->data;
  req_t *r = c->req;
  const sg_http_limits_t *lim = &c->srv->lim;

  if (r->hdr_state == 2 && end_value(r) != 0) return refuse(c, 503, "out of memory");
  r->headers_done = 1;
  r->pub.method = (enum http_method)p->method;
  r->pub.http_major = p->http_major;
  r->pub.http_minor = p->http_minor;
  r->head = p->method == HTTP_HEAD;
  r->keep_alive = http_should_keep_alive(p) != 0;

  if (p->http_major != 1 || p->http_minor > 1)
    return refuse(c, 505, "HTTP/%u.%u is not supported, use HTTP/1.1", p->http_major,
                  p->http_minor);
  if (p->method == HTTP_CONNECT) return refuse(c, 501, "CONNECT is not supported");
  if (split_target(r) != 0) return refuse(c, 400, "invalid request target");

  const char *te = sg_http_header(&r->pub, "transfer-encoding");
  if (te != NULL && strcasecmp(te, "chunked") != 0)
    return refuse(c, 501, "Transfer-Encoding '%.64s' is not supported, only chunked", te);

  int chunked = (p->flags & F_CHUNKED) != 0;
  uint64_t clen = p->content_length;
  int has_length = !chunked && clen != ULLONG_MAX && clen > 0;
  if (has_length) {
    if (clen > lim->max_body_bytes)
      return refuse(c, 413, "request body of %llu bytes exceeds the limit of %zu bytes",
                    (unsigned long long)clen, lim->max_body_bytes);
    if (refuse_room(c, body_room(r, (size_t)clen, 1)) != 0) return -1;
  }

  const char *expect = sg_http_header(&r->pub, "expect");
  if (expect != NULL) {
    if (strcasecmp(expect, "100-continue") != 0)
      return refuse(c, 417, "Expect '%.64s' is not supported", expect);
    /* An HTTP/1.0 client cannot understand 1xx; no body, nothing to wait for. */
    if (p->http_minor >= 1 && (chunked || has_length)) write_continue(c);
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  req_t *r = c->req;
  size_t max = c->srv->lim.max_body_bytes;
  if (len > max || r->pub.body.len > max - len)
    return refuse(c, 413, "request body exceeds the limit of %zu bytes", max);
  /* Normally a no-op: the room was made (and counted) at the headers or
   * at the chunk's size line. */
  if (refuse_room(c, body_room(r, len, 0)) != 0) return -1;
  if (sg_buf_append(&r->pub.body, at, len) != 0) return refuse(c, 503, "out of memory");
  return 0;
}

/* The size of the coming chunk is known before its data: refuse early,
 * and count its room in the budget before it arrives. */
static int on_chunk_header(http_parser *p) {
  conn_t *c = p->data;
  req_t *r = c->req;
  size_t max = c->srv->lim.max_body_bytes;
  if (p->content_length > max || r->pub.body.len > max - p->content_length)
    return refuse(c, 413, "chunked request body exceeds the limit of %zu bytes", max);
  return refuse_room(c, body_room(r, (size_t)p->content_length, 0));
}

static int on_message_complete(http_parser *p) {
  conn_t *c = p->data;
  c->req->keep_alive = http_should_keep_alive(p) != 0;
  http_parser_pause(p, 1); /* execute() returns right after this request */
  return 0;
}

static void settings_init(void) {
  http_parser_settings_init(&parser_settings);
  parser_settings.on_message_begin = on_message_begin;
  parser_settings.on_url = on_url;
  parser_settings.on_header_field = on_header_field;
  parser_settings.on_header_value = on_header_value;
  parser_settings.on_headers_complete = on_headers_complete;
  parser_settings.on_body = on_body;
  parser_settings.on_chunk_header = on_chunk_header;
  parser_settings.on_message_complete = on_message_complete;
}

/* ---------------------------------------------------------------- connections */

static void on_timer(uv_timer_t *t);

static void arm_timer(conn_t *c, uint64_t ms) { uv_timer_start(&c->timer, on_timer, ms, 0); }

static void on_handle_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->open_handles > 0) return;
  sg_http_server_t *srv = c->srv;
  free(c->rbuf);
  free(c);
  srv->nconn--;
  maybe_finish(srv);
}

/* Tear the connection down now. A request being received is dropped; one
 * held by the handler stays valid and is marked gone. */
static void conn_close(conn_t *c) {
  if (c->state == C_CLOSED) return;
  sg_http_server_t *srv = c->srv;
  if (c->req != NULL) {
    if (c->state == C_HANDLER) {
      c->req->conn = NULL;
      srv->stats.client_gone++;
    } else {
      req_free(c->req);
    }
    c->req = NULL;
  }
  c->state = C_CLOSED;
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
  if (c->rbuf == NULL) {
    c->rbuf = malloc(RBUF_SIZE);
    c->roff = c->rlen = 0;
    if (c->rbuf == NULL) {
      *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
      return;
    }
  }
  if (c->state == C_LINGER) c->roff = c->rlen = 0; /* discarding */
  if (c->roff == c->rlen) {
    c->roff = c->rlen = 0;
  } else if (c->roff > 0) {
    memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
    c->rlen -= c->roff;
    c->roff = 0;
  }
  *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(RBUF_SIZE - c->rlen));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  conn_t *c = s->data;
  if (c->state == C_CLOSED) return;
  if (nread == UV_ENOBUFS) { /* buffer full (or no memory): stop until it drains */
    if (c->rbuf == NULL) {
      conn_close(c);
      return;
    }
    uv_read_stop(s);
    c->reading = 0;
    return;
  }
  if (nread < 0) {
    /* EOF: the client sends nothing more, but it may still be reading: a
     * client that half-closes after its request (shutdown(SHUT_WR)) waits
     * for the answer. So a request with the handler, or a response being
     * written, is still answered (then the connection closes). Idle or
     * halfway through a request there is nothing to answer; and an error
     * (reset) means the client has left: its request is marked gone. */
    if (nread == UV_EOF && (c->state == C_WRITE || c->state == C_HANDLER)) {
      c->peer_eof = 1;
      uv_read_stop(s);
      c->reading = 0;
      return;
    }
    conn_close(c);
    return;
  }
  if (nread == 0) return;
  if (c->state == C_LINGER) {
    c->roff = c->rlen = 0;
    return;
  }
  c->rlen += (size_t)nread;
  if (c->state == C_READ) conn_process(c);
  if (c->state != C_CLOSED) conn_update_reading(c);
}

/* Read while a request can be parsed or input must be drained; while the
 * handler or a write has the connection, read only until the buffer is
 * full. */
static void conn_update_reading(conn_t *c) {
  int want;
  switch (c->state) {
  case C_READ:
  case C_LINGER: want = 1; break;
  case C_HANDLER:
  case C_WRITE: want = !c->peer_eof && (c->rbuf == NULL || c->rlen < RBUF_SIZE); break;
  default: want = 0;
  }
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

static void dispatch(conn_t *c) {
  sg_http_server_t *srv = c->srv;
  c->state = C_HANDLER;
  uv_timer_stop(&c->timer);
  srv->stats.requests++;
  srv->nreqs++;
  srv->handler(&c->req->pub, srv->ctx);
  /* The handler may have answered already (state WRITE), or even caused
   * the connection to close; conn_process() re-checks the state. */
}

static void parse_error(conn_t *c, enum http_errno e) {
  if (c->err_status != 0) {
    send_error(c, c->err_status, c->err_msg);
    return;
  }
  switch (e) {
  case HPE_HEADER_OVERFLOW: send_error(c, 431, "request headers too large"); return;
  case HPE_INVALID_TRANSFER_ENCODING:
    send_error(c, 501, "Transfer-Encoding not supported, only chunked");
    return;
  default: {
    char msg[ERR_MSG_MAX];
    snprintf(msg, sizeof msg, "malformed request: %s", http_errno_description(e));
    send_error(c, 400, msg);
  }
  }
}

/* Parse buffered input while the connection is in READ: each complete
 * request goes to the handler, and parsing resumes after its response. */
static void conn_process(conn_t *c) {
  while (c->state == C_READ && c->roff < c->rlen) {
    size_t n = http_parser_execute(&c->parser, &parser_settings, c->rbuf + c->roff,
                                   c->rlen - c->roff);
    if (c->req != NULL) c->req->pub.bytes_in += n;
    c->roff += n;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED) {
      http_parser_pause(&c->parser, 0);
      dispatch(c);
    } else if (e != HPE_OK) {
      parse_error(c, e);
      return;
    }
  }
  if (c->state == C_READ && c->roff == c->rlen && c->rbuf != NULL) {
    c->roff = c->rlen = 0;
    if (c->req == NULL) { /* idle: give the buffer back */
      free(c->rbuf);
      c->rbuf = NULL;
    }
  }
}

static void on_shutdown(uv_shutdown_t *sr, int status) {
  conn_t *c = sr->data;
  if (status < 0 && c->state != C_CLOSED) conn_close(c);
}

/* After a response that ends the connection: send FIN, then drain input
 * for at most linger_ms so that unread request bytes do not turn into a
 * TCP reset that could destroy the response at the client. */
static void conn_linger(conn_t *c) {
  if (c->peer_eof) {
    conn_close(c);
    return;
  }
  c->state = C_LINGER;
  c->roff = c->rlen = 0;
  c->shut.data = c;
  if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    conn_close(c);
    return;
  }
  arm_timer(c, c->srv->lim.linger_ms);
  conn_update_reading(c);
}

static void on_write(uv_write_t *w, int status) {
  wreq_t *wr = (wreq_t *)w;
  conn_t *c = wr->conn;
  int final = wr->final;
  sg_buf_free(&wr->out);
  free(wr);
  if (c->state == C_CLOSED) return;
  if (status < 0) {
    conn_close(c);
    return;
  }
  if (!final) return;
  if (c->close_after_write || c->srv->shutting_down) {
    conn_linger(c);
    return;
  }
  c->state = C_READ;
  if (c->peer_eof) {
    /* The client half-closed: answer the requests it sent before that
     * (pipelined, already buffered), then close. */
    conn_process(c);
    if (c->state == C_READ) conn_close(c);
    return;
  }
  /* Keep-alive: idle until the next request's first byte (which re-arms
   * the timer with the read timeout), and parse what was pipelined. */
  arm_timer(c, c->srv->lim.idle_timeout_ms);
  conn_process(c);
  if (c->state != C_CLOSED) conn_update_reading(c);
}

static int queue_write(conn_t *c, sg_buf_t *out, int final) {
  wreq_t *wr = calloc(1, sizeof *wr);
  if (wr == NULL) {
    sg_buf_free(out);
    return SG_ENOMEM;
  }
  wr->conn = c;
  wr->final = final;
  wr->out = *out;
  *out = (sg_buf_t)SG_BUF_INIT;
  uv_buf_t b = uv_buf_init(wr->out.data, (unsigned)wr->out.len);
  if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
    sg_buf_free(&wr->out);
    free(wr);
    return SG_EIO;
  }
  return 0;
}

static void write_continue(conn_t *c) {
  sg_buf_t out = SG_BUF_INIT;
  if (sg_buf_puts(&out, "HTTP/1.1 100 Continue\r\n\r\n") != 0) return;
  (void)queue_write(c, &out, 0); /* on failure the client sends the body anyway */
}

/* Queue a complete response on c and move it to WRITE. keep: the
 * connection stays open afterwards. minor: the request's HTTP minor version
 * (HTTP/1.0 keep-alive must be confirmed). */
static void write_response(conn_t *c, int status, const char *ctype, const void *body,
                           size_t len, const char *extra, int keep, int head, int minor) {
  sg_buf_t out = SG_BUF_INIT;
  int no_body = head || status == 204 || status == 304 || status < 200;
  int rc = sg_buf_printf(&out, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status,
                         sg_http_status_text(status), http_date(c->srv));
  if (rc == 0 && ctype != NULL) rc = sg_buf_printf(&out, "Content-Type: %s\r\n", ctype);
  if (rc == 0 && status != 204 && status >= 200)
    rc = sg_buf_printf(&out, "Content-Length: %zu\r\n", len);
  if (rc == 0 && !keep) rc = sg_buf_puts(&out, "Connection: close\r\n");
  else if (rc == 0 && minor == 0) rc = sg_buf_puts(&out, "Connection: keep-alive\r\n");
  if (rc == 0 && extra != NULL) rc = sg_buf_puts(&out, extra);
  if (rc == 0) rc = sg_buf_puts(&out, "\r\n");
  if (rc == 0 && !no_body && len > 0) rc = sg_buf_append(&out, body, len);
  if (rc != 0) {
    sg_buf_free(&out);
    conn_close(c);
    return;
  }
  c->state = C_WRITE;
  c->close_after_write = !keep;
  if (queue_write(c, &out, 1) != 0) {
    conn_close(c);
    return;
  }
  c->wq_mark = c->tcp.write_queue_size;
  arm_timer(c, c->srv->lim.write_timeout_ms);
  conn_update_reading(c);
}

/* Answer a request the server refuses (or a timeout) and end the
 * connection. The partial request is dropped; the observer sees it only if
 * its headers were complete. */
static void send_error(conn_t *c, int status, const char *msg) {
  sg_http_server_t *srv = c->srv;
  req_t *r = c->req;
  sg_buf_t body = SG_BUF_INIT;
  if (sg_buf_puts(&body, "{\"error\":\"") != 0 ||
      sg_buf_json_escape(&body, msg, strlen(msg)) != 0 || sg_buf_puts(&body, "\"}") != 0) {
    sg_buf_free(&body);
    conn_close(c);
    return;
  }
  srv->stats.errors++;
  if (status == 408) srv->stats.timeouts++;
  count_response(srv, status);
  if (srv->observer != NULL) {
    uint64_t start = r != NULL ? r->pub.start_ns : uv_hrtime();
    srv->observer(srv->octx, (r != NULL && r->headers_done) ? &r->pub : NULL, status,
                  uv_hrtime() - start, r != NULL ? r->pub.bytes_in : 0);
  }
  if (r != NULL) {
    req_free(r);
    c->req = NULL;
  }
  write_response(c, status, "application/json", body.data, body.len,
                 status == 429 || status == 503 ? "Retry-After: 1\r\n" : NULL, 0, 0, 1);
  sg_buf_free(&body);
}

static void on_timer(uv_timer_t *t) {
  conn_t *c = t->data;
  switch (c->state) {
  case C_READ:
    if (c->req != NULL) {
      char msg[ERR_MSG_MAX];
      snprintf(msg, sizeof msg, "request not received within %llu ms",
               (unsigned long long)c->srv->lim.read_timeout_ms);
      send_error(c, 408, msg);
    } else {
      c->srv->stats.idle_closed++;
      conn_close(c);
    }
    break;
  case C_WRITE:
    /* An inactivity timeout, as nginx's send_timeout: a big response to a
     * slow reader may take longer as long as the kernel keeps taking bytes. */
    if (c->tcp.write_queue_size < c->wq_mark) {
      c->wq_mark = c->tcp.write_queue_size;
      arm_timer(c, c->srv->lim.write_timeout_ms);
      break;
    }
    c->srv->stats.timeouts++;
    conn_close(c);
    break;
  case C_LINGER: conn_close(c); break;
  default: break;
  }
}

/* A connection we will not serve (beyond max_connections, or no memory for
 * it): accept it, write a best-effort 503 and close it. It must be
 * accepted: libuv stops watching the listener while an accepted socket
 * waits for uv_accept(). Without memory for a handle the server's spare
 * handle is used; if that is still closing, the accept waits for it. */
static void reject(sg_http_server_t *srv);

static void on_reject_closed(uv_handle_t *h) {
  sg_http_server_t *srv = h->data;
  if (h == (uv_handle_t *)&srv->spare) {
    srv->spare_busy = 0;
  } else {
    free(h);
  }
  srv->nreject--;
  if (srv->accept_stalled && !srv->shutting_down) {
    srv->accept_stalled = 0;
    reject(srv);
  }
  maybe_finish(srv);
}

static void reject(sg_http_server_t *srv) {
  static const char resp[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                             "Retry-After: 1\r\nConnection: close\r\n\r\n";
  uv_tcp_t *t = malloc(sizeof *t);
  if (t == NULL) {
    if (srv->spare_busy) {
      srv->accept_stalled = 1;
      return;
    }
    t = &srv->spare;
    srv->spare_busy = 1;
  }
  uv_tcp_init(srv->loop, t); /* cannot fail for AF_UNSPEC */
  t->data = srv;
  srv->nreject++;
  if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)t) == 0) {
    uv_buf_t b = uv_buf_init((char *)resp, sizeof resp - 1);
    (void)uv_try_write((uv_stream_t *)t, &b, 1);
    srv->stats.rejected++;
    count_response(srv, 503);
  }
  uv_close((uv_handle_t *)t, on_reject_closed);
}

static void on_connection(uv_stream_t *l, int status) {
  sg_http_server_t *srv = l->data;
  if (status < 0 || srv->shutting_down) return;
  if ((size_t)srv->nconn >= srv->lim.max_connections) {
    reject(srv);
    return;
  }
  conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    reject(srv);
    return;
  }
  c->srv = srv;
  uv_tcp_init(srv->loop, &c->tcp); /* cannot fail for AF_UNSPEC */
  uv_timer_init(srv->loop, &c->timer); /* cannot fail */
  c->tcp.data = c->timer.data = c;
  c->open_handles = 2;
  srv->nconn++;
  c->next = srv->conns;
  if (srv->conns) srv->conns->prev = c;
  srv->conns = c;
  c->state = C_READ;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  srv->stats.accepted++;
  uv_tcp_nodelay(&c->tcp, 1);
  arm_timer(c, srv->lim.idle_timeout_ms);
  conn_update_reading(c);
}

/* ---------------------------------------------------------------- responses */

void sg_http_respond(sg_http_req_t *pub, int status, const char *content_type, const void *body,
                     size_t len, const char *extra_headers) {
  req_t *r = (req_t *)pub;
  sg_http_server_t *srv = r->srv;
  conn_t *c = r->conn;
  count_response(srv, status);
  if (srv->observer != NULL)
    srv->observer(srv->octx, pub, status, uv_hrtime() - pub->start_ns, pub->bytes_in);
  srv->nreqs--;
  if (c == NULL) { /* the client left; the connection is closed or closing */
    req_free(r);
    maybe_finish(srv);
    return;
  }
  c->req = NULL;
  int keep = r->keep_alive && !srv->shutting_down;
  int head = r->head, minor = r->pub.http_minor;
  req_free(r);
  write_response(c, status, content_type, body, len, extra_headers, keep, head, minor);
}

void sg_http_respond_error(sg_http_req_t *req, int status, const char *message,
                           const char *extra_headers) {
  sg_buf_t b = SG_BUF_INIT;
  if (sg_buf_puts(&b, "{\"error\":\"") != 0 ||
      sg_buf_json_escape(&b, message, strlen(message)) != 0 || sg_buf_puts(&b, "\"}\n") != 0) {
    sg_buf_free(&b);
    sg_http_respond(req, 500, NULL, NULL, 0, extra_headers);
    return;
  }
  sg_http_respond(req, status, "application/json", b.data, b.len, extra_headers);
  sg_buf_free(&b);
}

/* ---------------------------------------------------------------- server */

static void on_listener_closed(uv_handle_t *h) {
  sg_http_server_t *srv = h->data;
  srv->listener_open = 0;
  maybe_finish(srv);
}

static void free_server_cb(uv_handle_t *h) { free(h->data); }

sg_http_server_t *sg_http_server_new(uv_loop_t *loop, uv_os_sock_t listen_fd,
                                     const sg_http_limits_t *lim, sg_http_handler_cb handler,
                                     void *ctx) {
  uv_once(&settings_once, settings_init);
  sg_http_server_t *srv = calloc(1, sizeof *srv);
  if (srv == NULL) {
    close(listen_fd);
    return NULL;
  }
  sg_http_limits_default(&srv->lim);
  if (lim != NULL) {
#define TAKE(f) if (lim->f) srv->lim.f = lim->f
    TAKE(max_header_bytes); TAKE(max_body_bytes); TAKE(read_timeout_ms);
    TAKE(idle_timeout_ms); TAKE(write_timeout_ms); TAKE(linger_ms);
    TAKE(max_connections); TAKE(backlog);
#undef TAKE
    srv->lim.inflight = lim->inflight;
    srv->lim.max_inflight_bytes = lim->max_inflight_bytes;
    srv->lim.inflight_own = lim->inflight_own;
  }
  srv->budget.counter = srv->lim.inflight;
  srv->budget.max = srv->lim.max_inflight_bytes;
  srv->budget.own = srv->lim.inflight ? srv->lim.inflight_own : NULL;
  srv->loop = loop;
  srv->handler = handler;
  srv->ctx = ctx;
  if (uv_tcp_init(loop, &srv->listener) != 0) {
    close(listen_fd);
    free(srv);
    return NULL;
  }
  srv->listener.data = srv;
  if (uv_tcp_open(&srv->listener, listen_fd) != 0) {
    close(listen_fd);
    uv_close((uv_handle_t *)&srv->listener, free_server_cb);
    return NULL;
  }
  /* The socket is normally listening already; libuv calls listen() again
   * (harmless) and starts watching it. */
  if (uv_listen((uv_stream_t *)&srv->listener, srv->lim.backlog, on_connection) != 0) {
    uv_close((uv_handle_t *)&srv->listener, free_server_cb);
    return NULL;
  }
  srv->listener_open = 1;
  return srv;
}

void sg_http_server_set_observer(sg_http_server_t *srv, sg_http_log_cb cb, void *ctx) {
  srv->observer = cb;
  srv->octx = ctx;
}

void sg_http_server_shutdown(sg_http_server_t *srv, void (*done)(void *arg), void *arg) {
  if (srv->shutting_down) return;
  srv->shutting_down = 1;
  srv->done = done;
  srv->done_arg = arg;
  uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
  conn_t *next;
  for (conn_t *c = srv->conns; c != NULL; c = next) {
    next = c->next;
    if (c->state == C_READ && c->req == NULL) conn_close(c); /* idle keep-alive */
  }
}

int sg_http_server_connections(const sg_http_server_t *srv) { return srv->nconn; }

void sg_http_server_stats(const sg_http_server_t *srv, sg_http_stats_t *out) { *out = srv->stats; }
