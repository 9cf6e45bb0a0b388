/* fuzz_http.c - libFuzzer target for the HTTP request path: the input is
 * sent as raw bytes by a client on the same loop to a real sg_http server
 * (listening on loopback), whose handler answers like the gateway does. The
 * server must answer or close, never crash, leak or hang. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>

#include "http.h"

static uv_loop_t *loop;
static sg_http_server_t *server;
static _Atomic int64_t inflight; /* the in-flight budget: back to 0 after every input */
static struct sockaddr_in addr;

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t conn;
  uv_write_t write;
  uv_shutdown_t shut;
  uv_buf_t buf;
  char rbuf[65536];
  int done;
} client_t;

static void handler(sg_http_req_t *req, void *ctx) {
  (void)ctx;
  char body[64];
  int n = snprintf(body, sizeof body, "{\"len\":%zu}", req->body.len);
  sg_http_respond(req, 200, "application/json", body, (size_t)n, NULL);
}

static void on_close(uv_handle_t *h) { ((client_t *)h->data)->done = 1; }

static void alloc_cb(uv_handle_t *h, size_t size, uv_buf_t *b) {
  (void)size;
  client_t *c = h->data;
  *b = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  if (n < 0) uv_close((uv_handle_t *)s, on_close);
}

static void shut_cb(uv_shutdown_t *r, int status) { (void)r; (void)status; }

static void write_cb(uv_write_t *w, int status) {
  client_t *c = w->data;
  if (status == 0) uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, shut_cb);
}

static void connect_cb(uv_connect_t *r, int status) {
  client_t *c = r->data;
  if (status != 0) {
    uv_close((uv_handle_t *)&c->tcp, on_close);
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
  c->write.data = c;
  uv_write(&c->write, (uv_stream_t *)&c->tcp, &c->buf, 1, write_cb);
}

static void setup(void) {
  loop = uv_default_loop();
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) || listen(fd, 128) ||
      getsockname(fd, (struct sockaddr *)&addr, &len))
    abort();
  sg_http_limits_t lim;
  memset(&lim, 0, sizeof lim);
  lim.max_body_bytes = 1 << 20;
  lim.max_header_bytes = 8192;
  lim.read_timeout_ms = 200;
  lim.idle_timeout_ms = 200;
  lim.linger_ms = 10;
  lim.inflight = &inflight;
  lim.max_inflight_bytes = 256 * 1024; /* below max_body_bytes: 429 and 413 paths too */
  server = sg_http_server_new(loop, fd, &lim, handler, NULL);
  if (!server) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!loop) setup();
  client_t *c = calloc(1, sizeof *c);
  c->buf = uv_buf_init((char *)data, (unsigned)size);
  uv_tcp_init(loop, &c->tcp);
  c->tcp.data = c;
  c->conn.data = c;
  uv_tcp_connect(&c->conn, &c->tcp, (const struct sockaddr *)&addr, connect_cb);
  while (!c->done) uv_run(loop, UV_RUN_ONCE);
  free(c);
  /* Once the server has closed the connection, every byte it counted for
   * the input's requests must be released. */
  while (sg_http_server_connections(server) > 0) uv_run(loop, UV_RUN_ONCE);
  if (atomic_load(&inflight) != 0) abort();
  return 0;
}
