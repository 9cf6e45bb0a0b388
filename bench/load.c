/* load.c - HTTP load generator for spangate: replays the workload's OTLP
 * bodies over N keep-alive connections (epoll, one thread), or with --grpc
 * as OTLP/gRPC TraceService/Export calls over N HTTP/2 connections (h2c,
 * nghttp2's client; one call at a time per connection, as one request at a
 * time per HTTP connection, so both modes run the same workload), and records
 * per-request latency in a log-bucketed histogram (HdrHistogram-like: 64
 * sub-buckets per power of two, < 1.6% relative error).
 *
 *   load -w WORKLOAD -p PORT -k KEY [-c CONNS] [-n REQUESTS | -d SECONDS]
 *        [-r RATE] [--seq-base N] [--timeline FILE] [--host IP] [--path P] [--grpc]
 *
 * Closed loop (no -r): every connection sends its next request as soon as
 * the previous answer arrived: the maximum rate.
 * Open loop (-r RATE, requests per second): request i is due at
 * t0 + i / RATE whether or not earlier ones have been answered; its latency
 * is measured from that due time (so queueing behind a slow answer counts,
 * no coordinated omission). A due request waits for a free connection.
 *
 * Request number seq (seq-base + i) carries body (seq % nbodies) with the
 * trace ids of seq (workload.h), so every span is a new row. 429 and 503
 * answers (gRPC: UNAVAILABLE, or a stream refused) are retried (same seq,
 * after 20 ms) and counted; other non-2xx answers (gRPC: codes other than
 * OK) are counted as errors and not retried.
 *
 * Prints one JSON object on stdout: counts, duration, rates, latency
 * percentiles (ms). --timeline writes per-second lines:
 *   second  requests_done  spans_done  p50_ms  p99_ms  max_ms
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "workload.h"

/* ---- histogram ------------------------------------------------------------ */

#define H_SUB 64
#define H_BUCKETS (2 * H_SUB + 40 * H_SUB)

typedef struct {
  uint64_t c[H_BUCKETS];
  uint64_t n, max;
} hist_t;

static int h_index(uint64_t v) { /* v in µs */
  if (v < 2 * H_SUB) return (int)v;
  int msb = 63 - __builtin_clzll(v);
  int shift = msb - 6; /* keep the top 7 bits: 64..127 */
  int idx = 2 * H_SUB + (shift - 1) * H_SUB + (int)((v >> shift) - H_SUB);
  return idx < H_BUCKETS ? idx : H_BUCKETS - 1;
}
static uint64_t h_value(int idx) { /* the bucket's midpoint */
  if (idx < 2 * H_SUB) return (uint64_t)idx;
  int shift = (idx - 2 * H_SUB) / H_SUB + 1;
  uint64_t m = (uint64_t)((idx - 2 * H_SUB) % H_SUB + H_SUB);
  return (m << shift) + ((1ULL << shift) >> 1);
}
static void h_add(hist_t *h, uint64_t v) {
  h->c[h_index(v)]++;
  h->n++;
  if (v > h->max) h->max = v;
}
static double h_pct_ms(const hist_t *h, double p) {
  if (h->n == 0) return 0;
  uint64_t want = (uint64_t)ceil(p / 100.0 * (double)h->n);
  if (want == 0) want = 1;
  uint64_t acc = 0;
  for (int i = 0; i < H_BUCKETS; i++) {
    acc += h->c[i];
    if (acc >= want) {
      uint64_t v = h_value(i);
      if (v > h->max) v = h->max;
      return (double)v / 1000.0;
    }
  }
  return (double)h->max / 1000.0;
}

/* ---- clock ---------------------------------------------------------------- */

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000;
}

/* ---- connections ----------------------------------------------------------- */

typedef struct {
  int fd;
  int busy;            /* a request is out */
  uint64_t seq;        /* of the request out */
  uint64_t due_us;     /* its due (open loop) or first-send (closed loop) time */
  uint8_t *body;
  uint32_t body_len;
  uint32_t spans;
  char head[512];
  size_t head_len;
  size_t sent;         /* bytes of head+body written */
  char *rbuf;
  size_t rlen, rcap;
  uint64_t retry_at;   /* 0: none pending */
  int retries;
  /* --grpc: the HTTP/2 session, the call's stream and what came back. body
   * holds the 5-byte message prefix, then the message. */
  nghttp2_session *h2;
  int32_t stream;
  int grpc_status;     /* -1 until the trailers (or a trailers-only answer) */
  char grpc_msg[160];
  size_t body_off;     /* bytes of prefix + message handed to nghttp2 */
  uint8_t *wpend;      /* nghttp2 output the socket did not take yet */
  size_t wpend_len, wpend_off, wpend_cap;
} conn_t;

static struct sockaddr_in addr;
static const char *key = "", *path = "/v1/traces";
static int grpc_mode;
static nghttp2_session_callbacks *h2_cbs;
#define GRPC_PATH "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
static int ep;
static wl_t wl;
static uint32_t maxlen;
static hist_t hist;
static uint64_t ok_req, ok_spans, err_req, retries, reconnects, status_counts[6];
static char last_err[256];

/* timeline */
typedef struct {
  uint64_t req, spans;
  hist_t *h;
} sec_t;
static sec_t *secs;
static size_t nsecs;
static uint64_t t_start;

static void timeline_add(uint64_t t, uint64_t lat, uint32_t spans) {
  size_t s = (size_t)((t - t_start) / 1000000ULL);
  if (s >= nsecs) {
    size_t n = s + 64;
    secs = realloc(secs, n * sizeof *secs);
    memset(secs + nsecs, 0, (n - nsecs) * sizeof *secs);
    nsecs = n;
  }
  if (!secs[s].h) secs[s].h = calloc(1, sizeof(hist_t));
  secs[s].req++;
  secs[s].spans += spans;
  h_add(secs[s].h, lat);
}

static int conn_open(conn_t *c) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) return -1;
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
    close(c->fd);
    c->fd = -1;
    return -1;
  }
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
  c->rlen = 0;
  if (grpc_mode) {
    if (c->h2) nghttp2_session_del(c->h2);
    c->h2 = NULL;
    c->wpend_len = c->wpend_off = 0;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    if (nghttp2_session_client_new(&c->h2, h2_cbs, c) != 0 ||
        nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 1) != 0)
      return -1;
  }
  return 0;
}

static void conn_reopen(conn_t *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  reconnects++;
  if (conn_open(c) != 0) {
    snprintf(last_err, sizeof last_err, "connect: %s", strerror(errno));
  }
}

static void g_flush(conn_t *c);

static void flush_out(conn_t *c) {
  if (grpc_mode) {
    g_flush(c);
    return;
  }
  while (c->busy && c->sent < c->head_len + c->body_len) {
    struct iovec iov[2];
    int n = 0;
    if (c->sent < c->head_len) {
      iov[n].iov_base = c->head + c->sent;
      iov[n++].iov_len = c->head_len - c->sent;
      iov[n].iov_base = c->body;
      iov[n++].iov_len = c->body_len;
    } else {
      iov[n].iov_base = c->body + (c->sent - c->head_len);
      iov[n++].iov_len = c->body_len - (c->sent - c->head_len);
    }
    ssize_t w = writev(c->fd, iov, n);
    if (w < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      snprintf(last_err, sizeof last_err, "write: %s", strerror(errno));
      /* the server closed an idle keep-alive connection: send again */
      c->sent = 0;
      conn_reopen(c);
      return;
    }
    c->sent += (size_t)w;
  }
}

static void g_start(conn_t *c, uint64_t seq, uint64_t due);

static void start_request(conn_t *c, uint64_t seq, uint64_t due) {
  if (grpc_mode) {
    g_start(c, seq, due);
    return;
  }
  const wl_body_t *b = wl_render(&wl, seq, c->body);
  c->body_len = b->len;
  c->spans = wl.spans_per_body;
  c->seq = seq;
  c->due_us = due;
  c->busy = 1;
  c->retries = 0;
  c->head_len = (size_t)snprintf(c->head, sizeof c->head,
                                 "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-protobuf\r\n"
                                 "Authorization: ApiKey %s\r\nContent-Length: %u\r\n\r\n",
                                 path, inet_ntoa(addr.sin_addr), key, b->len);
  c->sent = 0;
  flush_out(c);
}

/* A whole response in rbuf? Returns its length and the status, or 0. */
static size_t parse_response(conn_t *c, int *status, int *close_after) {
  if (c->rlen < 12) return 0;
  char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
  if (!end) return 0;
  size_t hlen = (size_t)(end - c->rbuf) + 4;
  *status = atoi(c->rbuf + 9);
  size_t clen = 0;
  *close_after = 0;
  for (char *p = c->rbuf; p < end;) {
    char *nl = memmem(p, (size_t)(end - p), "\r\n", 2);
    if (!nl) nl = end;
    if (!strncasecmp(p, "content-length:", 15)) clen = strtoul(p + 15, NULL, 10);
    if (!strncasecmp(p, "connection:", 11) && strcasestr(p, "close") && strcasestr(p, "close") < nl)
      *close_after = 1;
    p = nl + 2;
  }
  if (c->rlen < hlen + clen) return 0;
  return hlen + clen;
}

static int closed_loop;
static uint64_t next_seq, seq_end, seq_base;
static uint64_t inflight;

static void g_readable(conn_t *c);

static void on_readable(conn_t *c) {
  if (grpc_mode) {
    g_readable(c);
    return;
  }
  for (;;) {
    if (c->rcap - c->rlen < 4096) {
      c->rcap = c->rcap ? c->rcap * 2 : 16384;
      c->rbuf = realloc(c->rbuf, c->rcap);
    }
    ssize_t r = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) break;
      r = 0;
    }
    if (r == 0) { /* closed by the server */
      if (c->busy) {
        /* send it again on a new connection (an idle close raced our write) */
        snprintf(last_err, sizeof last_err, "connection closed with a request out");
        c->sent = 0;
        conn_reopen(c);
        flush_out(c);
      } else {
        conn_reopen(c);
      }
      return;
    }
    c->rlen += (size_t)r;
  }
  int status, close_after;
  size_t n;
  while ((n = parse_response(c, &status, &close_after)) > 0) {
    uint64_t t = now_us();
    if (status == 429 || status == 503) {
      retries++;
      c->retries++;
      c->retry_at = t + 20000;
    } else {
      if (!c->busy) break;
      c->busy = 0;
      inflight--;
      uint64_t lat = t - c->due_us;
      if (status >= 200 && status < 300) {
        ok_req++;
        ok_spans += c->spans;
        h_add(&hist, lat);
        timeline_add(t, lat, c->spans);
      } else {
        err_req++;
        int k = status / 100;
        if (k >= 0 && k < 6) status_counts[k]++;
        size_t hl = (size_t)((char *)memmem(c->rbuf, c->rlen, "\r\n\r\n", 4) - c->rbuf) + 4;
        snprintf(last_err, sizeof last_err, "HTTP %d: %.*s", status,
                 (int)(n - hl > 200 ? 200 : n - hl), c->rbuf + hl);
      }
    }
    memmove(c->rbuf, c->rbuf + n, c->rlen - n);
    c->rlen -= n;
    if (close_after) {
      conn_reopen(c);
      if (c->retry_at == 0) return;
    }
  }
}

/* ---- gRPC mode ------------------------------------------------------------- */

/* Hands nghttp2's output to the socket; what it does not take waits in wpend. */
static void g_flush(conn_t *c) {
  if (c->fd < 0 || !c->h2) return;
  for (;;) {
    if (c->wpend_off < c->wpend_len) {
      ssize_t w = write(c->fd, c->wpend + c->wpend_off, c->wpend_len - c->wpend_off);
      if (w < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        snprintf(last_err, sizeof last_err, "write: %s", strerror(errno));
        conn_reopen(c);
        if (c->busy) g_start(c, c->seq, c->due_us);
        return;
      }
      c->wpend_off += (size_t)w;
      if (c->wpend_off < c->wpend_len) return;
    }
    /* Gather nghttp2's frames (a request is a HEADERS and ~16 KiB DATA
     * frames) into one write, as the HTTP mode's one writev. */
    c->wpend_len = c->wpend_off = 0;
    for (;;) {
      const uint8_t *d;
      ssize_t n = nghttp2_session_mem_send(c->h2, &d);
      if (n <= 0) break;
      if (c->wpend_len + (size_t)n > c->wpend_cap) {
        c->wpend_cap = (c->wpend_len + (size_t)n) * 2;
        c->wpend = realloc(c->wpend, c->wpend_cap);
      }
      memcpy(c->wpend + c->wpend_len, d, (size_t)n);
      c->wpend_len += (size_t)n;
      if (c->wpend_len >= 1 << 20) break;
    }
    if (c->wpend_len == 0) return;
  }
}

static ssize_t g_read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                           nghttp2_data_source *src, void *user) {
  (void)s;
  (void)id;
  (void)src;
  conn_t *c = user;
  size_t total = 5 + (size_t)c->body_len, n = total - c->body_off;
  if (n > len) n = len;
  memcpy(buf, c->body + c->body_off, n);
  c->body_off += n;
  if (c->body_off == total) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

static void g_start(conn_t *c, uint64_t seq, uint64_t due) {
  const wl_body_t *b = wl_render(&wl, seq, c->body + 5);
  c->body_len = b->len;
  c->body[0] = 0;
  c->body[1] = (uint8_t)(b->len >> 24);
  c->body[2] = (uint8_t)(b->len >> 16);
  c->body[3] = (uint8_t)(b->len >> 8);
  c->body[4] = (uint8_t)b->len;
  c->body_off = 0;
  c->spans = wl.spans_per_body;
  c->seq = seq;
  c->due_us = due;
  c->busy = 1;
  c->retries = 0;
  c->grpc_status = -1;
  c->grpc_msg[0] = '\0';
  char auth[300], authority[64];
  int al = snprintf(auth, sizeof auth, "ApiKey %s", key);
  int hl = snprintf(authority, sizeof authority, "%s:%u", inet_ntoa(addr.sin_addr), ntohs(addr.sin_port));
#define NV(n, v, vl) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (size_t)(vl), NGHTTP2_NV_FLAG_NONE}
  nghttp2_nv nva[] = {NV(":method", "POST", 4), NV(":scheme", "http", 4),
                      NV(":path", GRPC_PATH, sizeof GRPC_PATH - 1), NV(":authority", authority, hl),
                      NV("content-type", "application/grpc", 16), NV("te", "trailers", 8),
                      NV("authorization", auth, al)};
#undef NV
  nghttp2_data_provider dp = {.source.ptr = c, .read_callback = g_read_body};
  c->stream = c->h2 ? nghttp2_submit_request(c->h2, NULL, nva, sizeof nva / sizeof nva[0], &dp, c) : -1;
  if (c->stream < 0) {
    snprintf(last_err, sizeof last_err, "nghttp2_submit_request: %s", nghttp2_strerror(c->stream));
    c->retry_at = now_us() + 20000; /* after a reconnect */
    conn_reopen(c);
    return;
  }
  g_flush(c);
}

static int g_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
                       const uint8_t *value, size_t valuelen, uint8_t flags, void *user) {
  (void)s;
  (void)flags;
  conn_t *c = user;
  if (f->hd.stream_id != c->stream) return 0;
  if (namelen == 11 && !memcmp(name, "grpc-status", 11)) {
    int v = 0;
    for (size_t i = 0; i < valuelen; i++) v = v * 10 + (value[i] - '0');
    c->grpc_status = v;
  } else if (namelen == 12 && !memcmp(name, "grpc-message", 12)) {
    snprintf(c->grpc_msg, sizeof c->grpc_msg, "%.*s", (int)valuelen, (const char *)value);
  }
  return 0;
}

/* The call's stream closed: its answer is complete (or it was refused or reset). */
static int g_on_close(nghttp2_session *s, int32_t id, uint32_t code, void *user) {
  (void)s;
  conn_t *c = user;
  if (id != c->stream || !c->busy) return 0;
  c->stream = -1;
  uint64_t t = now_us();
  if (c->grpc_status == 14 || code == NGHTTP2_REFUSED_STREAM) {
    retries++;
    c->retries++;
    c->retry_at = t + 20000;
    return 0;
  }
  c->busy = 0;
  inflight--;
  uint64_t lat = t - c->due_us;
  if (c->grpc_status == 0) {
    ok_req++;
    ok_spans += c->spans;
    h_add(&hist, lat);
    timeline_add(t, lat, c->spans);
  } else {
    err_req++;
    status_counts[c->grpc_status < 0 ? 5 : 4]++;
    snprintf(last_err, sizeof last_err, "gRPC status %d (stream error %u): %s", c->grpc_status, code,
             c->grpc_msg);
  }
  return 0;
}

static void g_readable(conn_t *c) {
  uint8_t buf[65536];
  for (;;) {
    ssize_t r = read(c->fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) break;
      r = 0;
    }
    if (r == 0 || nghttp2_session_mem_recv(c->h2, buf, (size_t)r) < 0) {
      /* closed (an idle GOAWAY, say): the call in flight goes again on a new connection */
      snprintf(last_err, sizeof last_err, "connection closed%s", c->busy ? " with a call out" : "");
      conn_reopen(c);
      if (c->busy && c->retry_at == 0) g_start(c, c->seq, c->due_us);
      return;
    }
  }
  g_flush(c);
}

static volatile sig_atomic_t stop;
static void on_sig(int s) {
  (void)s;
  stop = 1;
}

int main(int argc, char **argv) {
  const char *wpath = NULL, *host = "127.0.0.1", *timeline = NULL;
  int port = 0, nconns = 32;
  uint64_t nreq = 0;
  double duration = 0, rate = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v && strcmp(a, "--grpc")) goto usage;
    if (!strcmp(a, "-w")) wpath = v;
    else if (!strcmp(a, "-p")) port = atoi(v);
    else if (!strcmp(a, "-k")) key = v;
    else if (!strcmp(a, "-c")) nconns = atoi(v);
    else if (!strcmp(a, "-n")) nreq = strtoull(v, NULL, 10);
    else if (!strcmp(a, "-d")) duration = atof(v);
    else if (!strcmp(a, "-r")) rate = atof(v);
    else if (!strcmp(a, "--seq-base")) seq_base = strtoull(v, NULL, 10);
    else if (!strcmp(a, "--timeline")) timeline = v;
    else if (!strcmp(a, "--host")) host = v;
    else if (!strcmp(a, "--path")) path = v;
    else if (!strcmp(a, "--grpc")) {
      grpc_mode = 1;
      continue; /* no value */
    }
    else goto usage;
    i++;
  }
  if (!wpath || !port || (!nreq && duration <= 0) || nconns < 1) goto usage;
  if (wl_load(wpath, &wl) != 0) return 1;
  maxlen = wl_max_len(&wl);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, on_sig);
  signal(SIGTERM, on_sig);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    fprintf(stderr, "load: bad host %s\n", host);
    return 2;
  }
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (grpc_mode) {
    nghttp2_session_callbacks_new(&h2_cbs);
    nghttp2_session_callbacks_set_on_header_callback(h2_cbs, g_on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(h2_cbs, g_on_close);
  }
  conn_t *cs = calloc((size_t)nconns, sizeof *cs);
  for (int i = 0; i < nconns; i++) {
    cs[i].fd = -1;
    cs[i].body = malloc((size_t)maxlen + 5); /* --grpc: the message prefix first */
    if (conn_open(&cs[i]) != 0) {
      fprintf(stderr, "load: connect: %s\n", strerror(errno));
      return 1;
    }
  }
  closed_loop = rate <= 0;
  next_seq = seq_base;
  seq_end = nreq ? seq_base + nreq : UINT64_MAX;
  uint64_t t0 = now_us();
  t_start = t0;
  uint64_t t_end = duration > 0 ? t0 + (uint64_t)(duration * 1e6) : UINT64_MAX;
  double interval = closed_loop ? 0 : 1e6 / rate;
  uint64_t issued = 0; /* open loop: requests started (index from t0) */
  struct epoll_event evs[256];
  for (;;) {
    uint64_t t = now_us();
    int sending = !stop && next_seq < seq_end && t < t_end;
    /* start what is due on free connections */
    for (int i = 0; i < nconns; i++) {
      conn_t *c = &cs[i];
      if (c->retry_at && t >= c->retry_at) {
        c->retry_at = 0;
        c->sent = 0;
        int r = c->retries;
        start_request(c, c->seq, c->due_us);
        c->retries = r;
        continue;
      }
      if (c->busy || c->fd < 0 || !sending) continue;
      if (closed_loop) {
        start_request(c, next_seq++, t);
        inflight++;
      } else {
        uint64_t due = t0 + (uint64_t)((double)issued * interval);
        if (due > t) break;
        start_request(c, next_seq++, due);
        issued++;
        inflight++;
      }
      sending = next_seq < seq_end && t < t_end;
    }
    if (inflight == 0 && !sending) break;
    int timeout = 100;
    if (!closed_loop && sending) {
      uint64_t due = t0 + (uint64_t)((double)issued * interval);
      timeout = due > t ? (int)((due - t) / 1000) : 0;
      if (timeout > 100) timeout = 100;
    }
    for (int i = 0; i < nconns; i++)
      if (cs[i].retry_at) timeout = timeout > 20 ? 20 : timeout;
    int n = epoll_wait(ep, evs, 256, timeout);
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
      if (c->fd >= 0 && (evs[i].events & EPOLLOUT)) flush_out(c);
    }
    if (stop && inflight == 0) break;
  }
  uint64_t t1 = now_us();
  double secs_total = (double)(t1 - t0) / 1e6;
  printf("{\"requests_ok\":%" PRIu64 ",\"spans_ok\":%" PRIu64 ",\"errors\":%" PRIu64
         ",\"errors_4xx\":%" PRIu64 ",\"errors_5xx\":%" PRIu64 ",\"retries_429_503\":%" PRIu64
         ",\"reconnects\":%" PRIu64 ",\"connections\":%d,\"target_rate_rps\":%.2f,"
         "\"seconds\":%.3f,\"requests_per_s\":%.2f,\"spans_per_s\":%.1f,"
         "\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p99_9\":%.3f,\"max\":%.3f},"
         "\"last_error\":\"",
         ok_req, ok_spans, err_req, status_counts[4], status_counts[5], retries, reconnects, nconns,
         rate, secs_total, (double)ok_req / secs_total, (double)ok_spans / secs_total,
         h_pct_ms(&hist, 50), h_pct_ms(&hist, 90), h_pct_ms(&hist, 99), h_pct_ms(&hist, 99.9),
         (double)hist.max / 1000.0);
  for (const char *p = last_err; *p; p++) {
    if (*p == '"' || *p == '\\') putchar('\\');
    putchar((unsigned char)*p < 0x20 ? ' ' : *p);
  }
  printf("\"}\n");
  if (timeline) {
    FILE *f = fopen(timeline, "w");
    if (f) {
      fprintf(f, "# second requests spans p50_ms p99_ms max_ms\n");
      size_t last = (size_t)((t1 - t0) / 1000000ULL);
      for (size_t s = 0; s <= last && s < nsecs; s++) {
        hist_t *h = secs[s].h;
        fprintf(f, "%zu %" PRIu64 " %" PRIu64 " %.3f %.3f %.3f\n", s, secs[s].req, secs[s].spans,
                h ? h_pct_ms(h, 50) : 0.0, h ? h_pct_ms(h, 99) : 0.0, h ? (double)h->max / 1000.0 : 0.0);
      }
      fclose(f);
    }
  }
  return err_req ? 3 : 0;
usage:
  fprintf(stderr,
          "usage: load -w WORKLOAD -p PORT -k KEY [-c CONNS] [-n REQUESTS | -d SECONDS] [-r RATE]\n"
          "            [--seq-base N] [--timeline FILE] [--host IP] [--path P] [--grpc]\n");
  return 2;
}
