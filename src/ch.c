/* ch.c - ClickHouse HTTP client: libcurl's multi interface driven by libuv.
 *
 * The wiring is curl's documented "multi_socket" model:
 *   CURLMOPT_SOCKETFUNCTION  -> one uv_poll_t per socket curl wants watched
 *                               (created on first use, closed on
 *                               CURL_POLL_REMOVE, which curl sends before it
 *                               closes the fd);
 *   CURLMOPT_TIMERFUNCTION   -> one uv_timer_t; on expiry
 *                               curl_multi_socket_action(CURL_SOCKET_TIMEOUT);
 *   after every socket_action, completed transfers are collected with
 *   curl_multi_info_read and their callbacks run (never inside a curl
 *   callback, so a user callback may start requests or close the client).
 *
 * Keep-alive: easy handles are removed after each transfer, but their
 * connections stay in the multi handle's connection cache and are reused by
 * the next request; CURLMOPT_MAX_HOST_CONNECTIONS caps them and queues the
 * excess inside curl. curl transparently retries a request once on a fresh
 * connection when a reused one turns out to be dead (the server closes idle
 * connections after keep_alive_timeout): at worst an INSERT lands twice,
 * which ReplacingMergeTree absorbs.
 *
 * Errors after a 200 (an exception in the middle of a streamed SELECT result
 * is appended to the body) cannot be told apart here; the callers that read
 * results check what they parse.
 */
#include "ch.h"

#include <ctype.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "err.h"

/* ---- ClickHouse exception codes ---------------------------------------------
 *
 * XX(code, name, class). POISON: the request or its data is wrong and the
 * server will answer the same way again (bad data, bad SQL). UNAVAIL: the
 * server or cluster is (temporarily) unable; retry with backoff. IO: needs
 * an operator (schema missing, credentials, permissions); retrying unchanged
 * will not help soon but the data is fine, so it must not be dead-lettered.
 * Names are ClickHouse's (src/Common/ErrorCodes.cpp). A code not listed is
 * classified by the HTTP status (see classify_http).
 *
 * 49 LOGICAL_ERROR is left out on purpose: 18.16 answers an unknown Enum
 * label on INSERT with it (HTTP 500), which is the data's fault, but later
 * versions raise it for their own bugs, which is not. Unlisted, it is
 * transient here (HTTP 500), and chsink's rule for server errors that keep
 * failing the same rows while others get through isolates such rows. */
#define SG_CH_CODE_MAP(XX)                                                                      \
  XX(3, UNEXPECTED_END_OF_FILE, UNAVAIL)                                                        \
  XX(6, CANNOT_PARSE_TEXT, POISON)                                                              \
  XX(8, THERE_IS_NO_COLUMN, POISON)                                                             \
  XX(10, NOT_FOUND_COLUMN_IN_BLOCK, POISON)                                                     \
  XX(16, NO_SUCH_COLUMN_IN_TABLE, POISON)                                                       \
  XX(20, NUMBER_OF_COLUMNS_DOESNT_MATCH, POISON)                                                \
  XX(26, CANNOT_PARSE_QUOTED_STRING, POISON)                                                    \
  XX(27, CANNOT_PARSE_INPUT_ASSERTION_FAILED, POISON)                                           \
  XX(32, ATTEMPT_TO_READ_AFTER_EOF, POISON)                                                     \
  XX(33, CANNOT_READ_ALL_DATA, POISON)                                                          \
  XX(36, BAD_ARGUMENTS, POISON)                                                                 \
  XX(38, CANNOT_PARSE_DATE, POISON)                                                             \
  XX(41, CANNOT_PARSE_DATETIME, POISON)                                                         \
  XX(43, ILLEGAL_TYPE_OF_ARGUMENT, POISON)                                                      \
  XX(44, ILLEGAL_COLUMN, POISON)                                                                \
  XX(47, UNKNOWN_IDENTIFIER, POISON)                                                            \
  XX(53, TYPE_MISMATCH, POISON)                                                                 \
  XX(62, SYNTAX_ERROR, POISON)                                                                   \
  XX(69, ARGUMENT_OUT_OF_BOUND, POISON)                                                         \
  XX(70, CANNOT_CONVERT_TYPE, POISON)                                                           \
  XX(72, CANNOT_PARSE_NUMBER, POISON)                                                           \
  XX(73, UNKNOWN_FORMAT, POISON)                                                                \
  XX(117, INCORRECT_DATA, POISON)                                                               \
  XX(130, CANNOT_READ_ARRAY_FROM_TEXT, POISON)                                                  \
  XX(131, TOO_LARGE_STRING_SIZE, POISON)                                                        \
  XX(190, SIZES_OF_ARRAYS_DOESNT_MATCH, POISON)                                                 \
  XX(349, CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN, POISON)                                        \
  XX(354, ZLIB_INFLATE_FAILED, POISON)                                                          \
  XX(376, CANNOT_PARSE_UUID, POISON)                                                            \
  XX(377, ILLEGAL_SYNTAX_FOR_DATA_TYPE, POISON)                                                 \
  XX(691, UNKNOWN_ELEMENT_OF_ENUM, POISON)                                                      \
  XX(159, TIMEOUT_EXCEEDED, UNAVAIL)                                                            \
  XX(160, TOO_SLOW, UNAVAIL)                                                                    \
  XX(202, TOO_MANY_SIMULTANEOUS_QUERIES, UNAVAIL)                                               \
  XX(203, NO_FREE_CONNECTION, UNAVAIL)                                                          \
  XX(209, SOCKET_TIMEOUT, UNAVAIL)                                                              \
  XX(210, NETWORK_ERROR, UNAVAIL)                                                               \
  XX(236, ABORTED, UNAVAIL)                                                                     \
  XX(241, MEMORY_LIMIT_EXCEEDED, UNAVAIL)                                                       \
  XX(242, TABLE_IS_READ_ONLY, UNAVAIL)                                                          \
  XX(243, NOT_ENOUGH_SPACE, UNAVAIL)                                                            \
  XX(252, TOO_MANY_PARTS, UNAVAIL)                                                              \
  XX(285, TOO_FEW_LIVE_REPLICAS, UNAVAIL)                                                       \
  XX(319, UNKNOWN_STATUS_OF_INSERT, UNAVAIL)                                                    \
  XX(394, QUERY_WAS_CANCELLED, UNAVAIL)                                                         \
  XX(425, SYSTEM_ERROR, UNAVAIL)                                                                \
  XX(439, CANNOT_SCHEDULE_TASK, UNAVAIL)                                                        \
  XX(999, KEEPER_EXCEPTION, UNAVAIL)                                                            \
  XX(60, UNKNOWN_TABLE, IO)                                                                     \
  XX(81, UNKNOWN_DATABASE, IO)                                                                  \
  XX(164, READONLY, IO)                                                                         \
  XX(192, UNKNOWN_USER, IO)                                                                     \
  XX(193, WRONG_PASSWORD, IO)                                                                   \
  XX(194, REQUIRED_PASSWORD, IO)                                                                \
  XX(195, IP_ADDRESS_NOT_ALLOWED, IO)                                                           \
  XX(497, ACCESS_DENIED, IO)                                                                    \
  XX(516, AUTHENTICATION_FAILED, IO)

int sg_ch_code_class(int code) {
  switch (code) {
#define XX(num, name, cls)                                                                      \
  case num: return SG_E##cls;
    SG_CH_CODE_MAP(XX)
#undef XX
  default: return 0;
  }
}

/* A code not in the table: 5xx and 408/429 are transient; 400 (ClickHouse's
 * answer to malformed queries and data) and 413 are poison; other 4xx (401,
 * 403, 404) need an operator. Without any ClickHouse code a 4xx did not come
 * from ClickHouse's query handling (a proxy, or the native port 9000, which
 * 18.16 answers with "400 Port 9000 is for clickhouse-client program"):
 * configuration, SG_EIO, never poison. */
static int classify_http(long http, int code) {
  if (http >= 500 || http == 408 || http == 429) return SG_EUNAVAIL;
  if (code != 0 && (http == 400 || http == 413)) return SG_EPOISON;
  return SG_EIO;
}

static int classify_curl(CURLcode rc) {
  switch (rc) {
  case CURLE_COULDNT_CONNECT:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_SSL_CONNECT_ERROR: return SG_EUNAVAIL;
  case CURLE_OUT_OF_MEMORY:
  case CURLE_WRITE_ERROR: /* our write callback only fails when out of memory */
    return SG_ENOMEM;
  default: return SG_EIO; /* e.g. not speaking HTTP (the native port 9000) */
  }
}

/* ---- global init ----------------------------------------------------------- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init_once(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

int sg_ch_global_init(void) {
  pthread_once(&global_once, global_init_once);
  return global_rc == CURLE_OK ? 0 : SG_EIO;
}

/* ---- types ----------------------------------------------------------------- */

typedef struct req_s req_t;
typedef struct sock_s sock_t;

struct sg_ch_client_s {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  char *url_base; /* "http://host:port/?database=db&" or "http://host:port/?" */
  char *user, *password;
  long timeout_ms;
  req_t *reqs; /* pending, doubly linked */
  size_t npending;
  sock_t *socks; /* watched sockets (not yet closing) */
  int open_handles; /* uv handles not yet through their close callback */
  int dispatching;  /* depth of collect_done() on the stack */
  int closing;
  int torn_down;
};

struct req_s {
  req_t *prev, *next;
  sg_ch_client_t *c;
  CURL *easy;
  char *url;
  char *post;
  size_t post_len;
  int borrowed;      /* post is the caller's (SG_CH_BORROW): not freed here */
  struct curl_slist *headers;
  sg_buf_t resp;
  int hdr_code; /* X-ClickHouse-Exception-Code, 0 when absent */
  int oom;
  sg_ch_cb cb;
  void *arg;
  char errbuf[CURL_ERROR_SIZE];
  char line[512];
};

struct sock_s {
  uv_poll_t poll;
  curl_socket_t fd;
  sg_ch_client_t *c;
  sock_t *prev, *next;
};

/* ---- handles and teardown --------------------------------------------------- */

static void client_free(sg_ch_client_t *c) {
  free(c->url_base);
  free(c->user);
  free(c->password);
  free(c);
}

static void handle_closed(sg_ch_client_t *c) {
  if (--c->open_handles == 0 && c->torn_down) client_free(c);
}

static void timer_close_cb(uv_handle_t *h) { handle_closed((sg_ch_client_t *)h->data); }

static void sock_close_cb(uv_handle_t *h) {
  sock_t *k = h->data;
  sg_ch_client_t *c = k->c;
  free(k);
  handle_closed(c);
}

static void sock_unlink(sg_ch_client_t *c, sock_t *k) {
  if (k->prev) k->prev->next = k->next;
  else c->socks = k->next;
  if (k->next) k->next->prev = k->prev;
  k->prev = k->next = NULL;
}

static void sock_close(sg_ch_client_t *c, sock_t *k) {
  sock_unlink(c, k);
  uv_poll_stop(&k->poll);
  uv_close((uv_handle_t *)&k->poll, sock_close_cb);
}

static void req_unlink(sg_ch_client_t *c, req_t *r) {
  if (r->prev) r->prev->next = r->next;
  else c->reqs = r->next;
  if (r->next) r->next->prev = r->prev;
  r->prev = r->next = NULL;
  c->npending--;
}

static void req_free(req_t *r) {
  if (r->easy) curl_easy_cleanup(r->easy);
  curl_slist_free_all(r->headers);
  free(r->url);
  if (!r->borrowed) free(r->post);
  sg_buf_free(&r->resp);
  free(r);
}

/* Everything but the pending requests (already cancelled): curl first (it may
 * still report sockets to remove), then our handles. Runs when no
 * collect_done() is on the stack. */
static void teardown(sg_ch_client_t *c) {
  c->torn_down = 1;
  if (c->multi) {
    /* NULL first: socket_fn may run during the cleanup and must not touch
     * the multi handle being destroyed. */
    CURLM *m = c->multi;
    c->multi = NULL;
    curl_multi_cleanup(m);
  }
  while (c->socks) sock_close(c, c->socks);
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, timer_close_cb);
}

/* ---- completion ------------------------------------------------------------- */

/* One line of text for r->error: the first line of s, whitespace-trimmed and
 * cut at a sensible length, after a prefix. */
static void set_line(req_t *r, const char *prefix, const char *s, size_t n) {
  while (n && isspace((unsigned char)*s)) s++, n--;
  size_t m = 0;
  while (m < n && s[m] != '\n' && s[m] != '\r') m++;
  while (m && isspace((unsigned char)s[m - 1])) m--;
  snprintf(r->line, sizeof r->line, "%s%.*s", prefix, (int)(m > 400 ? 400 : m), s);
}

/* "Code: 27, e.displayText() = ..." (18.16) or "Code: 27. DB::Exception: ..."
 * (newer), at or near the start of an error body. 0 when absent. */
static int body_code(const char *s, size_t n) {
  size_t lim = n < 256 ? n : 256;
  for (size_t i = 0; i + 6 < lim; i++) {
    if (memcmp(s + i, "Code: ", 6) != 0) continue;
    int v = 0;
    size_t j = i + 6;
    if (j >= n || !isdigit((unsigned char)s[j])) return 0;
    while (j < n && isdigit((unsigned char)s[j]) && v < 100000) v = v * 10 + (s[j++] - '0');
    return v;
  }
  return 0;
}

static void deliver(req_t *r, int status, long http, int code, const char *error) {
  sg_ch_result_t res;
  res.status = status;
  res.http_status = http;
  res.ch_code = code;
  res.body = r->resp.data ? r->resp.data : "";
  res.len = r->resp.len;
  res.error = error ? error : "";
  r->cb(r->arg, &res);
}

static void finish(sg_ch_client_t *c, req_t *r, CURLcode rc) {
  req_unlink(c, r);
  curl_multi_remove_handle(c->multi, r->easy);
  long http = 0;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &http);
  int code = r->hdr_code, status;
  if (rc != CURLE_OK) {
    status = r->oom ? SG_ENOMEM : classify_curl(rc);
    const char *msg = r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
    snprintf(r->line, sizeof r->line, "ClickHouse request failed: %s", msg);
    if (http >= 400 && code == 0) code = body_code(r->resp.data ? r->resp.data : "", r->resp.len);
  } else if (http == 200) {
    status = 0;
  } else {
    if (code == 0) code = body_code(r->resp.data ? r->resp.data : "", r->resp.len);
    status = code ? sg_ch_code_class(code) : 0;
    if (status == 0) status = classify_http(http, code);
    char prefix[48];
    snprintf(prefix, sizeof prefix, "ClickHouse HTTP %ld: ", http);
    if (r->resp.len) set_line(r, prefix, r->resp.data, r->resp.len);
    else snprintf(r->line, sizeof r->line, "ClickHouse HTTP %ld with an empty body", http);
  }
  deliver(r, status, http, code, status ? r->line : "");
  req_free(r);
}

/* Collect finished transfers and run their callbacks. */
static void collect_done(sg_ch_client_t *c) {
  c->dispatching++;
  CURLMsg *m;
  int left;
  while (!c->closing && (m = curl_multi_info_read(c->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE) continue;
    req_t *r = NULL;
    CURLcode rc = m->data.result; /* m is invalid after remove_handle */
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
    finish(c, r, rc);
  }
  c->dispatching--;
  if (c->closing && c->dispatching == 0 && !c->torn_down) teardown(c);
}

/* ---- curl <-> libuv ------------------------------------------------------------ */

static void poll_cb(uv_poll_t *h, int status, int events) {
  sock_t *k = h->data;
  sg_ch_client_t *c = k->c;
  int flags = 0, running;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  curl_multi_socket_action(c->multi, k->fd, flags, &running); /* may close k */
  collect_done(c);
}

static void timer_cb(uv_timer_t *h) {
  sg_ch_client_t *c = h->data;
  int running;
  curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  collect_done(c);
}

static int socket_fn(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp) {
  (void)e;
  sg_ch_client_t *c = userp;
  sock_t *k = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (k) {
      if (c->multi) curl_multi_assign(c->multi, fd, NULL);
      sock_close(c, k);
    }
    return 0;
  }
  if (c->torn_down) return -1;
  if (k == NULL) {
    k = calloc(1, sizeof(*k));
    if (k == NULL) return -1;
    if (uv_poll_init_socket(c->loop, &k->poll, fd) != 0) {
      free(k);
      return -1;
    }
    k->fd = fd;
    k->c = c;
    k->poll.data = k;
    k->next = c->socks;
    if (c->socks) c->socks->prev = k;
    c->socks = k;
    c->open_handles++;
    curl_multi_assign(c->multi, fd, k);
  }
  int ev = 0;
  if (what & CURL_POLL_IN) ev |= UV_READABLE;
  if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
  return uv_poll_start(&k->poll, ev, poll_cb) == 0 ? 0 : -1;
}

static int timer_fn(CURLM *m, long timeout_ms, void *userp) {
  (void)m;
  sg_ch_client_t *c = userp;
  if (c->torn_down) return 0;
  if (timeout_ms < 0) uv_timer_stop(&c->timer);
  else uv_timer_start(&c->timer, timer_cb, (uint64_t)timeout_ms, 0); /* 0: next loop turn */
  return 0;
}

/* ---- client -------------------------------------------------------------------- */

static char *dup_or(const char *s, const char *def) {
  return strdup(s ? s : def);
}

sg_ch_client_t *sg_ch_client_new(uv_loop_t *loop, const sg_ch_opts_t *opts) {
  if (loop == NULL || opts == NULL || sg_ch_global_init() != 0) return NULL;
  sg_ch_client_t *c = calloc(1, sizeof(*c));
  if (c == NULL) return NULL;
  c->loop = loop;
  c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 30000;
  long maxc = opts->max_connections > 0 ? opts->max_connections : 4;
  c->user = (opts->user && *opts->user) ? strdup(opts->user) : NULL;
  c->password = dup_or(opts->password, "");

  sg_buf_t url = SG_BUF_INIT;
  const char *host = opts->host && *opts->host ? opts->host : "127.0.0.1";
  int bracket = strchr(host, ':') != NULL; /* IPv6 literal */
  int rc = sg_buf_printf(&url, "http://%s%s%s:%d/?", bracket ? "[" : "", host, bracket ? "]" : "",
                         opts->port > 0 ? opts->port : 8123);
  if (rc == 0 && opts->database && *opts->database) {
    char *db = curl_easy_escape(NULL, opts->database, 0);
    rc = db ? sg_buf_printf(&url, "database=%s&", db) : SG_ENOMEM;
    curl_free(db);
  }
  c->url_base = rc == 0 ? sg_buf_detach(&url, NULL) : NULL;
  sg_buf_free(&url);
  c->multi = curl_multi_init();
  if (c->url_base == NULL || c->password == NULL || (opts->user && *opts->user && !c->user) ||
      c->multi == NULL || uv_timer_init(loop, &c->timer) != 0) {
    if (c->multi) curl_multi_cleanup(c->multi);
    client_free(c);
    return NULL;
  }
  c->timer.data = c;
  c->open_handles = 1;
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_fn);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_fn);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, maxc);
  curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, maxc);
  curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, maxc);
  return c;
}

size_t sg_ch_pending(const sg_ch_client_t *c) { return c ? c->npending : 0; }

static size_t write_fn(char *p, size_t size, size_t n, void *userp) {
  req_t *r = userp;
  if (sg_buf_append(&r->resp, p, size * n) != 0) {
    r->oom = 1;
    return 0;
  }
  return size * n;
}

static size_t header_fn(char *p, size_t size, size_t n, void *userp) {
  req_t *r = userp;
  static const char name[] = "X-ClickHouse-Exception-Code:";
  size_t len = size * n, nl = sizeof(name) - 1;
  if (len > nl && strncasecmp(p, name, nl) == 0) {
    int v = 0;
    for (size_t i = nl; i < len; i++) {
      if (isdigit((unsigned char)p[i]) && v < 100000) v = v * 10 + (p[i] - '0');
      else if (v) break;
    }
    r->hdr_code = v;
  }
  return len;
}

/* gzip at level 1: on span rows (80 MB of TSV) level 1 takes 0.74 s and
 * leaves 7.5 MB, level 6 takes 1.29 s for 6.4 MB; the flusher is CPU-bound
 * long before loopback or LAN bandwidth is. */
static int gzip_body(const void *in, size_t len, char **out, size_t *out_len) {
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  if (deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return SG_ENOMEM;
  uLong bound = deflateBound(&zs, (uLong)len) + 32;
  char *buf = malloc(bound);
  if (buf == NULL) {
    deflateEnd(&zs);
    return SG_ENOMEM;
  }
  zs.next_in = (Bytef *)(uintptr_t)in;
  zs.avail_in = (uInt)len;
  zs.next_out = (Bytef *)buf;
  zs.avail_out = (uInt)bound;
  int zrc = deflate(&zs, Z_FINISH);
  *out_len = zs.total_out;
  deflateEnd(&zs);
  if (zrc != Z_STREAM_END) {
    free(buf);
    return SG_EIO;
  }
  *out = buf;
  return 0;
}

int sg_ch_request(sg_ch_client_t *c, const char *sql, const void *body, size_t len, unsigned flags,
                  sg_ch_cb cb, void *arg) {
  if (c == NULL || sql == NULL || cb == NULL || (len && body == NULL)) return SG_EINVAL;
  if (c->closing) return SG_ECANCELED;
  if ((flags & SG_CH_GZIP) && len > UINT32_MAX / 2) return SG_EINVAL; /* zlib's uInt */
  req_t *r = calloc(1, sizeof(*r));
  if (r == NULL) return SG_ENOMEM;
  r->c = c;
  r->cb = cb;
  r->arg = arg;
  int rc = SG_ENOMEM;
  r->easy = curl_easy_init();
  if (r->easy == NULL) goto fail;
  char *q = curl_easy_escape(r->easy, sql, 0);
  if (q == NULL) goto fail;
  size_t ul = strlen(c->url_base) + strlen("query=") + strlen(q) + 1;
  r->url = malloc(ul);
  if (r->url) snprintf(r->url, ul, "%squery=%s", c->url_base, q);
  curl_free(q);
  if (r->url == NULL) goto fail;

  if ((flags & SG_CH_GZIP) && len) {
    if ((rc = gzip_body(body, len, &r->post, &r->post_len)) != 0) goto fail;
    rc = SG_ENOMEM;
    r->headers = curl_slist_append(r->headers, "Content-Encoding: gzip");
    if (r->headers == NULL) goto fail;
  } else if ((flags & SG_CH_BORROW) && len) {
    r->post = (char *)(uintptr_t)body; /* the caller keeps it until cb */
    r->post_len = len;
    r->borrowed = 1;
  } else {
    r->post = malloc(len ? len : 1);
    if (r->post == NULL) goto fail;
    if (len) memcpy(r->post, body, len);
    r->post_len = len;
  }
  /* No "Expect: 100-continue" round trip before large bodies. */
  struct curl_slist *h = curl_slist_append(r->headers, "Expect:");
  if (h == NULL) goto fail;
  r->headers = h;

  CURL *e = r->easy;
  curl_easy_setopt(e, CURLOPT_URL, r->url);
  curl_easy_setopt(e, CURLOPT_POST, 1L);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->post);
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->post_len);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_fn);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_fn);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  if (c->user) {
    curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(e, CURLOPT_USERNAME, c->user);
    curl_easy_setopt(e, CURLOPT_PASSWORD, c->password);
  }
  /* Adding only arms the timer (timer_fn): the transfer starts on a later
   * loop turn, so cb never runs inside this call. */
  if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
    rc = SG_EIO;
    goto fail;
  }
  r->next = c->reqs;
  if (c->reqs) c->reqs->prev = r;
  c->reqs = r;
  c->npending++;
  return 0;
fail:
  req_free(r);
  return rc;
}

void sg_ch_client_close(sg_ch_client_t *c) {
  if (c == NULL || c->closing) return;
  c->closing = 1;
  while (c->reqs) {
    req_t *r = c->reqs;
    req_unlink(c, r);
    curl_multi_remove_handle(c->multi, r->easy);
    deliver(r, SG_ECANCELED, 0, 0, "ClickHouse request canceled: client closed");
    req_free(r);
  }
  if (c->dispatching == 0) teardown(c);
}

/* ---- blocking helper ------------------------------------------------------------ */

typedef struct {
  sg_ch_client_t *c;
  sg_buf_t *out, *err;
  int status;
} sync_t;

static void sync_cb(void *arg, const sg_ch_result_t *r) {
  sync_t *s = arg;
  s->status = r->status;
  if (s->out && r->len && sg_buf_append(s->out, r->body, r->len) != 0) s->status = SG_ENOMEM;
  if (s->err && r->status) sg_buf_puts(s->err, r->error);
  sg_ch_client_close(s->c);
}

int sg_ch_exec_sync(const sg_ch_opts_t *opts, const char *sql, const void *body, size_t len,
                    sg_buf_t *out, sg_buf_t *err) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return SG_ENOMEM;
  sync_t s = {NULL, out, err, SG_EIO};
  s.c = sg_ch_client_new(&loop, opts);
  int rc = s.c ? sg_ch_request(s.c, sql, body, len, 0, sync_cb, &s) : SG_ENOMEM;
  if (rc != 0) {
    if (err) sg_buf_puts(err, s.c ? "ClickHouse request could not start" : "ClickHouse client: out of memory");
    sg_ch_client_close(s.c);
    s.status = rc;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  return uv_loop_close(&loop) == 0 ? s.status : (s.status ? s.status : SG_EIO);
}

/* ---- quoting ---------------------------------------------------------------------- */

int sg_ch_quote_ident(sg_buf_t *out, const char *name) {
  if (name == NULL) return SG_EINVAL;
  int rc = sg_buf_putc(out, '`');
  for (const char *p = name; rc == 0 && *p; p++) {
    if (*p == '`' || *p == '\\') rc = sg_buf_putc(out, '\\');
    rc = rc ? rc : sg_buf_putc(out, *p);
  }
  return rc ? rc : sg_buf_putc(out, '`');
}

int sg_ch_quote_string(sg_buf_t *out, const char *s, size_t n) {
  if (s == NULL && n) return SG_EINVAL;
  if (sg_buf_reserve(out, n + 2) != 0) return SG_ENOMEM;
  int rc = sg_buf_putc(out, '\'');
  for (size_t i = 0; rc == 0 && i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    switch (ch) {
    case '\'': rc = sg_buf_append(out, "\\'", 2); break;
    case '\\': rc = sg_buf_append(out, "\\\\", 2); break;
    case '\n': rc = sg_buf_append(out, "\\n", 2); break;
    case '\t': rc = sg_buf_append(out, "\\t", 2); break;
    case '\r': rc = sg_buf_append(out, "\\r", 2); break;
    case '\0': rc = sg_buf_append(out, "\\0", 2); break;
    case '\b': rc = sg_buf_append(out, "\\b", 2); break;
    case '\f': rc = sg_buf_append(out, "\\f", 2); break;
    default:
      if (ch < 0x20 || ch == 0x7f) rc = sg_buf_printf(out, "\\x%02X", ch);
      else rc = sg_buf_putc(out, (char)ch);
    }
  }
  return rc ? rc : sg_buf_putc(out, '\'');
}
