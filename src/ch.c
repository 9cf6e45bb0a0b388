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
#include "pages.h"

#include <ctype.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <openssl/evp.h>
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
 * failing the same rows while others get through isolates such rows.
 *
 * 32 ATTEMPT_TO_READ_AFTER_EOF is transient: in TabSeparated a short row is
 * 27; 32 comes from binary formats, which spangate does not send, and from
 * a Distributed insert whose shard replica died while it was taking the
 * rows ("while receiving packet from <replica>: Insertion status"). */
#define SG_CH_CODE_MAP(XX)                                                                      \
  XX(3, UNEXPECTED_END_OF_FILE, UNAVAIL)                                                        \
  XX(32, ATTEMPT_TO_READ_AFTER_EOF, UNAVAIL)                                                    \
  XX(6, CANNOT_PARSE_TEXT, POISON)                                                              \
  XX(8, THERE_IS_NO_COLUMN, POISON)                                                             \
  XX(10, NOT_FOUND_COLUMN_IN_BLOCK, POISON)                                                     \
  XX(16, NO_SUCH_COLUMN_IN_TABLE, POISON)                                                       \
  XX(20, NUMBER_OF_COLUMNS_DOESNT_MATCH, POISON)                                                \
  XX(26, CANNOT_PARSE_QUOTED_STRING, POISON)                                                    \
  XX(27, CANNOT_PARSE_INPUT_ASSERTION_FAILED, POISON)                                           \
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

/* An endpoint's health: down after a failure of its own, until retry_at;
 * then one attempt (the probe) decides. */
typedef struct {
  char *name;           /* "host:port" ("https://host:port" with TLS): logs, metrics */
  char *url_base;       /* "http(s)://host:port/?" */
  int down;
  int probing;          /* a probe attempt is in flight */
  unsigned consecutive; /* failures since the last success: the backoff exponent */
  uint64_t retry_at;    /* loop time (ms) from which it may be probed */
  size_t pending;
  uint64_t requests, failures;
  char last_error[200];
} endpoint_t;

struct sg_ch_client_s {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  endpoint_t eps[SG_CH_MAX_ENDPOINTS];
  int neps;
  int rr;            /* round-robin start among equally loaded endpoints */
  uint64_t rng;      /* xorshift state for backoff jitter */
  uint64_t failovers;
  char *db_param;    /* "database=<escaped>&" or NULL */
  char *user, *password;
  char *ca_file, *cert_file, *key_file;
  int no_verify;
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
  char *params;      /* "database=...&query=...[&insert_deduplication_token=...]" */
  char *url;         /* the current attempt's endpoint + params */
  char *post;
  size_t post_len;
  int borrowed;      /* post (or pieces) is the caller's (SG_CH_BORROW): not freed here */
  const sg_ch_piece_t *pieces; /* borrowed pieces, read out by read_fn; NULL: post */
  size_t npieces;
  size_t at_piece, at_off;     /* read_fn's position in them */
  int mapped;                  /* SG_CH_MAPPED: read_fn gives back what it read */
  sg_pages_pass_t drop;
  int idempotent;    /* may be sent again after it reached a server */
  int ep;            /* endpoint of the current attempt */
  int probe;         /* the current attempt probes a down endpoint */
  uint32_t tried;    /* endpoints attempted, one bit each */
  long timeout_ms;
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

/* ---- endpoints ---------------------------------------------------------------- */

#define RETRY_BASE_MS 1000u  /* first backoff: 0.5-1 s */
#define RETRY_MAX_MS 30000u  /* longest: 15-30 s */

static uint64_t rng_next(sg_ch_client_t *c) {
  uint64_t x = c->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  c->rng = x;
  return x * 0x2545F4914F6CDD1DULL;
}

int sg_ch_endpoint_parse(const char *text, int secure, char *host, size_t cap, int *port, int *tls,
                         sg_buf_t *err) {
  if (text == NULL || host == NULL || cap == 0 || port == NULL || tls == NULL) return SG_EINVAL;
  const char *p = text, *end;
  while (*p == ' ' || *p == '\t') p++;
  end = p + strlen(p);
  while (end > p && (end[-1] == ' ' || end[-1] == '\t')) end--;
  if (end > p && end[-1] == '/') end--; /* "https://h:8443/" */
  *tls = secure != 0;
  if ((size_t)(end - p) >= 8 && strncasecmp(p, "https://", 8) == 0) {
    *tls = 1;
    p += 8;
  } else if ((size_t)(end - p) >= 7 && strncasecmp(p, "http://", 7) == 0) {
    *tls = 0;
    p += 7;
  }
  const char *why = NULL;
  const char *sch = strstr(p, "://");
  if (sch && sch < end) why = "unsupported scheme (http:// or https://)";
  for (const char *q = p; q < end && !why; q++) {
    if (*q == '@') why = "credentials do not belong in an endpoint (give the user and password on their own)";
    else if (*q == '/' || *q == '?' || *q == '#') why = "an endpoint is host[:port], without a path or query";
    else if ((unsigned char)*q <= ' ' || *q == '\\' || *q == '"' || *q == '\'') why = "unexpected character";
  }
  const char *h = p, *he = p, *ps = NULL;
  if (!why && p < end && *p == '[') {
    h = p + 1;
    he = memchr(h, ']', (size_t)(end - h));
    if (he == NULL) why = "unclosed '[' in an IPv6 address";
    else if (he + 1 < end && he[1] != ':') why = "expected ':port' after ']'";
    else if (he + 1 < end) ps = he + 2;
  } else if (!why) {
    he = memchr(p, ':', (size_t)(end - p));
    if (he && memchr(he + 1, ':', (size_t)(end - he - 1))) why = "an IPv6 address goes in brackets: [::1]:8123";
    else if (he) ps = he + 1;
    else he = end;
  }
  if (!why && he == h) why = "no host";
  if (!why && (size_t)(he - h) >= cap) why = "host name too long";
  long v = *tls ? 8443 : 8123;
  if (!why && ps) {
    v = 0;
    if (ps == end) why = "no port after ':'";
    for (const char *q = ps; q < end && !why; q++) {
      if (*q < '0' || *q > '9') why = "the port is not a number";
      else if ((v = v * 10 + (*q - '0')) > 65535) why = "the port must be 1..65535";
    }
    if (!why && v < 1) why = "the port must be 1..65535";
  }
  if (why) {
    /* Never echo an entry that may hold a password. */
    if (err && memchr(text, '@', strlen(text)))
      sg_buf_printf(err, "a ClickHouse endpoint holds '@': %s", why);
    else if (err)
      sg_buf_printf(err, "ClickHouse endpoint '%s': %s", text, why);
    return SG_EINVAL;
  }
  memcpy(host, h, (size_t)(he - h));
  host[he - h] = '\0';
  *port = (int)v;
  return 0;
}

static int endpoint_init(endpoint_t *e, const char *host, int port, int tls) {
  int v6 = strchr(host, ':') != NULL;
  sg_buf_t b = SG_BUF_INIT;
  int rc = sg_buf_printf(&b, "%s%s%s%s:%d", tls ? "https://" : "", v6 ? "[" : "", host, v6 ? "]" : "",
                         port);
  e->name = rc == 0 ? sg_buf_detach(&b, NULL) : NULL;
  sg_buf_free(&b);
  rc = sg_buf_printf(&b, "%s://%s%s%s:%d/?", tls ? "https" : "http", v6 ? "[" : "", host,
                     v6 ? "]" : "", port);
  e->url_base = rc == 0 ? sg_buf_detach(&b, NULL) : NULL;
  sg_buf_free(&b);
  return e->name && e->url_base ? 0 : SG_ENOMEM;
}

/* The endpoint for an attempt, or -1. exclude: endpoints already tried by
 * this request (a first attempt excludes none). A down endpoint whose retry
 * time has come is probed by one attempt at a time, by a re-sendable request
 * when there is a choice (its failure then costs a failover, not an error);
 * otherwise the healthy endpoint with the fewest pending attempts. A first
 * attempt with every endpoint down goes to the one retried soonest. */
static int pick(sg_ch_client_t *c, uint32_t exclude, int resendable, int *probe) {
  uint64_t now = uv_now(c->loop);
  int best = -1, due = -1, soonest = -1;
  for (int k = 0; k < c->neps; k++) {
    int i = (c->rr + k) % c->neps;
    if (exclude & (1u << i)) continue;
    const endpoint_t *e = &c->eps[i];
    if (!e->down) {
      if (best < 0 || e->pending < c->eps[best].pending) best = i;
      continue;
    }
    if (!e->probing && e->retry_at <= now && (due < 0 || e->retry_at < c->eps[due].retry_at)) due = i;
    if (soonest < 0 || e->retry_at < c->eps[soonest].retry_at) soonest = i;
  }
  *probe = 0;
  if (due >= 0 && (resendable || best < 0)) {
    *probe = 1;
    return due;
  }
  if (best >= 0) {
    c->rr = (best + 1) % c->neps;
    return best;
  }
  if (exclude == 0 && soonest >= 0) {
    *probe = !c->eps[soonest].probing;
    return soonest;
  }
  return -1;
}

static void endpoint_ok(endpoint_t *e) {
  e->down = 0;
  e->consecutive = 0;
}

static void endpoint_failed(sg_ch_client_t *c, endpoint_t *e, const char *line) {
  e->failures++;
  e->consecutive++;
  e->down = 1;
  unsigned shift = e->consecutive - 1 < 6 ? e->consecutive - 1 : 6;
  uint64_t d = (uint64_t)RETRY_BASE_MS << shift;
  if (d > RETRY_MAX_MS) d = RETRY_MAX_MS;
  e->retry_at = uv_now(c->loop) + d / 2 + rng_next(c) % (d / 2 + 1);
  size_t n = strnlen(line, sizeof e->last_error - 1);
  memcpy(e->last_error, line, n);
  e->last_error[n] = '\0';
}

size_t sg_ch_endpoint_count(const sg_ch_client_t *c) { return c ? (size_t)c->neps : 0; }

int sg_ch_endpoint_stats(const sg_ch_client_t *c, size_t i, sg_ch_endpoint_stats_t *out) {
  if (c == NULL || out == NULL || i >= (size_t)c->neps) return SG_EINVAL;
  const endpoint_t *e = &c->eps[i];
  uint64_t now = uv_now(c->loop);
  out->name = e->name;
  out->up = !e->down;
  out->pending = e->pending;
  out->requests = e->requests;
  out->failures = e->failures;
  out->consecutive = e->consecutive;
  out->retry_in_ms = e->down && e->retry_at > now ? e->retry_at - now : 0;
  out->last_error = e->last_error;
  return 0;
}

uint64_t sg_ch_failovers(const sg_ch_client_t *c) { return c ? c->failovers : 0; }

/* ---- handles and teardown --------------------------------------------------- */

static void client_free(sg_ch_client_t *c) {
  for (int i = 0; i < SG_CH_MAX_ENDPOINTS; i++) {
    free(c->eps[i].name);
    free(c->eps[i].url_base);
  }
  free(c->db_param);
  free(c->user);
  free(c->password);
  free(c->ca_file);
  free(c->cert_file);
  free(c->key_file);
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
  free(r->params);
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

/* The line for a transfer curl gave up on. TLS problems are spelled out:
 * they need an operator, and curl's own words do not say which file. */
static void curl_line(sg_ch_client_t *c, req_t *r, CURLcode rc) {
  const char *msg = r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
  const char *ep = c->eps[r->ep].name;
  switch (rc) {
  case CURLE_PEER_FAILED_VERIFICATION:
    snprintf(r->line, sizeof r->line,
             "ClickHouse TLS: the certificate of %s does not verify against %s%s: %s", ep,
             c->ca_file ? "the CA file " : "the system's CA certificates", c->ca_file ? c->ca_file : "",
             msg);
    return;
  case CURLE_SSL_CACERT_BADFILE:
    snprintf(r->line, sizeof r->line, "ClickHouse TLS: cannot use the CA file %s: %s",
             c->ca_file ? c->ca_file : "(system)", msg);
    return;
  case CURLE_SSL_CERTPROBLEM:
    snprintf(r->line, sizeof r->line, "ClickHouse TLS: cannot use the client certificate %s: %s",
             c->cert_file ? c->cert_file : "", msg);
    return;
  case CURLE_SSL_CONNECT_ERROR:
    snprintf(r->line, sizeof r->line, "ClickHouse TLS handshake with %s failed: %s", ep, msg);
    return;
  default:
    if (c->neps > 1) snprintf(r->line, sizeof r->line, "ClickHouse request to %s failed: %s", ep, msg);
    else snprintf(r->line, sizeof r->line, "ClickHouse request failed: %s", msg);
  }
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

static int start_attempt(sg_ch_client_t *c, req_t *r, int ep, int probe);

/* Whether any of the request reached a server: a failure before that (no
 * connection, TLS handshake) leaves nothing behind to repeat. Counted as
 * sent when in doubt. */
static int was_sent(CURL *e) {
  long req_bytes = 0;
  curl_off_t pre = 0;
  curl_easy_getinfo(e, CURLINFO_REQUEST_SIZE, &req_bytes);
  curl_easy_getinfo(e, CURLINFO_PRETRANSFER_TIME_T, &pre);
  return req_bytes > 0 || pre > 0;
}

static void finish(sg_ch_client_t *c, req_t *r, CURLcode rc) {
  curl_multi_remove_handle(c->multi, r->easy);
  endpoint_t *ep = &c->eps[r->ep];
  ep->pending--;
  if (r->probe) ep->probing = 0;
  long http = 0;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &http);
  int code = r->hdr_code, status, ep_failed;
  if (rc != CURLE_OK) {
    status = r->oom ? SG_ENOMEM : classify_curl(rc);
    curl_line(c, r, rc);
    if (http >= 400 && code == 0) code = body_code(r->resp.data ? r->resp.data : "", r->resp.len);
    ep_failed = status != SG_ENOMEM;
  } else if (http == 200) {
    status = 0;
    ep_failed = 0;
  } else {
    if (code == 0) code = body_code(r->resp.data ? r->resp.data : "", r->resp.len);
    status = code ? sg_ch_code_class(code) : 0;
    if (status == 0) status = classify_http(http, code);
    char prefix[300];
    if (c->neps > 1) snprintf(prefix, sizeof prefix, "ClickHouse HTTP %ld from %s: ", http, ep->name);
    else snprintf(prefix, sizeof prefix, "ClickHouse HTTP %ld: ", http);
    if (r->resp.len) set_line(r, prefix, r->resp.data, r->resp.len);
    else snprintf(r->line, sizeof r->line, "%swith an empty body", prefix);
    /* The server answered: it counts against the endpoint only when that
     * answer says "unavailable" (a code-less 5xx from a proxy, or a code of
     * the transient kind), not for an exception about the query itself,
     * which every endpoint would answer alike. */
    ep_failed = http >= 500 && (code == 0 || sg_ch_code_class(code) == SG_EUNAVAIL);
  }
  if (!ep_failed) {
    endpoint_ok(ep);
  } else {
    endpoint_failed(c, ep, r->line);
    if (c->neps > 1 && (r->idempotent || !was_sent(r->easy))) {
      int probe, next = pick(c, r->tried, r->idempotent, &probe);
      if (next >= 0 && start_attempt(c, r, next, probe) == 0) {
        c->failovers++;
        return;
      }
    }
  }
  req_unlink(c, r);
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

static char *dup_opt(const char *s, int *oom) {
  if (s == NULL || *s == '\0') return NULL;
  char *d = strdup(s);
  if (d == NULL) *oom = 1;
  return d;
}

sg_ch_client_t *sg_ch_client_new(uv_loop_t *loop, const sg_ch_opts_t *opts) {
  if (loop == NULL || opts == NULL || sg_ch_global_init() != 0) return NULL;
  if (opts->nhosts > SG_CH_MAX_ENDPOINTS || (opts->nhosts && opts->hosts == NULL)) return NULL;
  sg_ch_client_t *c = calloc(1, sizeof(*c));
  if (c == NULL) return NULL;
  c->loop = loop;
  c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 30000;
  long maxc = opts->max_connections > 0 ? opts->max_connections : 4;
  int oom = 0, bad = 0;
  c->user = dup_opt(opts->user, &oom);
  c->password = dup_or(opts->password, "");
  c->ca_file = dup_opt(opts->ca_file, &oom);
  c->cert_file = dup_opt(opts->cert_file, &oom);
  c->key_file = dup_opt(opts->key_file, &oom);
  c->no_verify = opts->no_verify != 0;
  c->rng = (uv_hrtime() ^ (uint64_t)(uintptr_t)c) | 1;
  if (opts->database && *opts->database) {
    char *db = curl_easy_escape(NULL, opts->database, 0);
    sg_buf_t b = SG_BUF_INIT;
    if (db && sg_buf_printf(&b, "database=%s&", db) == 0) c->db_param = sg_buf_detach(&b, NULL);
    else oom = 1;
    sg_buf_free(&b);
    curl_free(db);
  }
  if (opts->nhosts == 0) {
    const char *host = opts->host && *opts->host ? opts->host : "127.0.0.1";
    int port = opts->port > 0 ? opts->port : opts->secure ? 8443 : 8123;
    if (endpoint_init(&c->eps[0], host, port, opts->secure != 0) != 0) oom = 1;
    c->neps = 1;
  }
  for (size_t i = 0; i < opts->nhosts && !oom && !bad; i++) {
    char host[256];
    int port, tls;
    if (sg_ch_endpoint_parse(opts->hosts[i], opts->secure, host, sizeof host, &port, &tls, NULL) != 0)
      bad = 1;
    else if (endpoint_init(&c->eps[c->neps++], host, port, tls) != 0)
      oom = 1;
  }
  c->multi = oom || bad || c->password == NULL ? NULL : curl_multi_init();
  if (c->multi == NULL || uv_timer_init(loop, &c->timer) != 0) {
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
  curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, maxc * c->neps);
  curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, maxc * c->neps);
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

/* With SG_CH_MAPPED, a pass over the pieces gives back the pages it has read
 * (and the spool's record headers between them) as it goes (pages.h): once
 * per call of curl's read callback made the pages of a folio fault in again
 * and again. */
static void drop_note(sg_pages_pass_t *d, unsigned flags, const void *start, size_t n) {
  if (flags & SG_CH_MAPPED) sg_pages_behind(d, start, (const char *)start + n);
}

/* gzip at level 1: on span rows (80 MB of TSV) level 1 takes 0.74 s and
 * leaves 7.5 MB, level 6 takes 1.29 s for 6.4 MB; the flusher is CPU-bound
 * long before loopback or LAN bandwidth is. The pieces (len bytes in all)
 * go in one after the other. */
static int gzip_body(const sg_ch_piece_t *in, size_t n, size_t len, unsigned flags, char **out,
                     size_t *out_len) {
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  if (deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return SG_ENOMEM;
  uLong bound = deflateBound(&zs, (uLong)len) + 32 + 8 * (uLong)n;
  char *buf = malloc(bound);
  if (buf == NULL) {
    deflateEnd(&zs);
    return SG_ENOMEM;
  }
  zs.next_out = (Bytef *)buf;
  zs.avail_out = (uInt)bound;
  int zrc = Z_OK;
  sg_pages_pass_t d = {NULL, NULL};
  for (size_t i = 0; i < n && zrc == Z_OK; i++) {
    zs.next_in = (Bytef *)(uintptr_t)in[i].data;
    zs.avail_in = (uInt)in[i].len;
    zrc = deflate(&zs, Z_NO_FLUSH);
    if (zrc == Z_BUF_ERROR && zs.avail_in == 0) zrc = Z_OK; /* nothing to do: an empty piece */
    drop_note(&d, flags, in[i].data, in[i].len);
  }
  sg_pages_behind_end(&d);
  if (zrc == Z_OK) zrc = deflate(&zs, Z_FINISH);
  *out_len = zs.total_out;
  deflateEnd(&zs);
  if (zrc != Z_STREAM_END) {
    free(buf);
    return SG_EIO;
  }
  *out = buf;
  return 0;
}

/* curl reads a borrowed body in pieces from here... */
static size_t read_fn(char *dst, size_t size, size_t nitems, void *arg) {
  req_t *r = arg;
  size_t room = size * nitems, got = 0;
  while (got < room && r->at_piece < r->npieces) {
    const sg_ch_piece_t *p = &r->pieces[r->at_piece];
    size_t n = p->len - r->at_off;
    if (n > room - got) n = room - got;
    const char *from = (const char *)p->data + r->at_off;
    memcpy(dst + got, from, n);
    if (r->mapped) drop_note(&r->drop, SG_CH_MAPPED, from, n);
    got += n;
    r->at_off += n;
    if (r->at_off == p->len) r->at_piece++, r->at_off = 0;
  }
  if (r->mapped && r->at_piece == r->npieces) sg_pages_behind_end(&r->drop);
  return got;
}

/* ...and goes back in them when it must send the body again. */
static int seek_fn(void *arg, curl_off_t offset, int origin) {
  req_t *r = arg;
  if (origin != SEEK_SET || offset < 0) return CURL_SEEKFUNC_CANTSEEK;
  r->at_piece = r->at_off = 0;
  r->drop = (sg_pages_pass_t){NULL, NULL};
  size_t left = (size_t)offset;
  while (r->at_piece < r->npieces && left >= r->pieces[r->at_piece].len) left -= r->pieces[r->at_piece++].len;
  if (left && r->at_piece == r->npieces) return CURL_SEEKFUNC_FAIL;
  r->at_off = left;
  return CURL_SEEKFUNC_OK;
}

/* Reads cannot change anything, so sending one again is always safe. The
 * statement is the query parameter followed by the body (callers may send
 * it all in the body); n bytes of s are looked at. */
static int is_read(const char *s, size_t n) {
  static const char *const words[] = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS"};
  while (n && (isspace((unsigned char)*s) || *s == '(')) s++, n--;
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
    size_t w = strlen(words[i]);
    if (n >= w && strncasecmp(s, words[i], w) == 0 &&
        (n == w || (!isalnum((unsigned char)s[w]) && s[w] != '_')))
      return 1;
  }
  return 0;
}

static int is_blank(const char *s) {
  while (isspace((unsigned char)*s)) s++;
  return *s == '\0';
}

/* Point r's easy handle at endpoint ep and hand it to curl. 0, or an SG_E*
 * code with nothing started. */
static int start_attempt(sg_ch_client_t *c, req_t *r, int ep, int probe) {
  endpoint_t *e = &c->eps[ep];
  size_t n = strlen(e->url_base) + strlen(r->params) + 1;
  char *url = malloc(n);
  if (url == NULL) return SG_ENOMEM;
  snprintf(url, n, "%s%s", e->url_base, r->params);
  free(r->url);
  r->url = url;
  sg_buf_reset(&r->resp);
  r->hdr_code = 0;
  r->oom = 0;
  r->errbuf[0] = '\0';
  r->at_piece = r->at_off = 0; /* each attempt sends the whole body */
  r->drop = (sg_pages_pass_t){NULL, NULL};
  curl_easy_setopt(r->easy, CURLOPT_URL, r->url);
  /* Adding only arms the timer (timer_fn): the transfer starts on a later
   * loop turn, so cb never runs inside sg_ch_send. */
  if (curl_multi_add_handle(c->multi, r->easy) != CURLM_OK) return SG_EIO;
  r->ep = ep;
  r->probe = probe;
  r->tried |= 1u << ep;
  e->pending++;
  e->requests++;
  if (probe) e->probing = 1;
  return 0;
}

int sg_ch_send(sg_ch_client_t *c, const sg_ch_req_t *q, sg_ch_cb cb, void *arg) {
  if (c == NULL || q == NULL || q->sql == NULL || cb == NULL || (q->npieces && q->pieces == NULL) ||
      (!q->npieces && q->len && q->body == NULL))
    return SG_EINVAL;
  if (c->closing) return SG_ECANCELED;
  unsigned flags = q->flags;
  sg_ch_piece_t one = {q->body, q->len};
  const sg_ch_piece_t *pieces = q->npieces ? q->pieces : &one;
  size_t npieces = q->npieces ? q->npieces : 1, len = 0;
  for (size_t i = 0; i < npieces; i++) {
    if (pieces[i].len && pieces[i].data == NULL) return SG_EINVAL;
    len += pieces[i].len;
  }
  if ((flags & SG_CH_GZIP) && len > UINT32_MAX / 2) return SG_EINVAL; /* zlib's uInt */
  req_t *r = calloc(1, sizeof(*r));
  if (r == NULL) return SG_ENOMEM;
  r->c = c;
  r->cb = cb;
  r->arg = arg;
  r->ep = -1;
  r->idempotent = (flags & SG_CH_IDEMPOTENT) || is_read(q->sql, strlen(q->sql)) ||
                  (is_blank(q->sql) && pieces[0].len && is_read(pieces[0].data, pieces[0].len));
  r->timeout_ms = q->timeout_ms > 0 ? q->timeout_ms : c->timeout_ms;
  int rc = SG_ENOMEM, prc = 0;
  sg_buf_t p = SG_BUF_INIT;
  char *esc = NULL;
  r->easy = curl_easy_init();
  if (r->easy == NULL) goto fail;
  if (q->database == NULL) {
    if (c->db_param) prc = sg_buf_puts(&p, c->db_param);
  } else if (*q->database) {
    esc = curl_easy_escape(r->easy, q->database, 0);
    prc = esc ? sg_buf_printf(&p, "database=%s&", esc) : SG_ENOMEM;
    curl_free(esc);
  }
  esc = prc == 0 ? curl_easy_escape(r->easy, q->sql, 0) : NULL;
  prc = esc ? sg_buf_printf(&p, "query=%s", esc) : SG_ENOMEM;
  curl_free(esc);
  if (prc == 0 && q->dedup_token) {
    esc = curl_easy_escape(r->easy, q->dedup_token, 0);
    prc = esc ? sg_buf_printf(&p, "&insert_deduplication_token=%s", esc) : SG_ENOMEM;
    curl_free(esc);
  }
  if (prc == 0 && q->settings && *q->settings) prc = sg_buf_printf(&p, "&%s", q->settings);
  r->params = prc == 0 ? sg_buf_detach(&p, NULL) : NULL;
  sg_buf_free(&p);
  if (r->params == NULL) goto fail;

  if ((flags & SG_CH_GZIP) && len) {
    if ((rc = gzip_body(pieces, npieces, len, flags, &r->post, &r->post_len)) != 0) goto fail;
    rc = SG_ENOMEM;
    r->headers = curl_slist_append(r->headers, "Content-Encoding: gzip");
    if (r->headers == NULL) goto fail;
  } else if ((flags & SG_CH_BORROW) && len && npieces == 1 && !(flags & SG_CH_MAPPED)) {
    r->post = (char *)(uintptr_t)pieces[0].data; /* the caller keeps it until cb */
    r->post_len = len;
    r->borrowed = 1;
  } else if ((flags & SG_CH_BORROW) && len) {
    r->pieces = pieces; /* the caller keeps them until cb; read_fn sends them */
    r->npieces = npieces;
    r->mapped = (flags & SG_CH_MAPPED) != 0;
    r->post_len = len;
    r->borrowed = 1;
  } else {
    r->post = malloc(len ? len : 1);
    if (r->post == NULL) goto fail;
    sg_pages_pass_t d = {NULL, NULL};
    for (size_t i = 0, at = 0; i < npieces; at += pieces[i].len, i++)
      if (pieces[i].len) {
        memcpy(r->post + at, pieces[i].data, pieces[i].len);
        drop_note(&d, flags, pieces[i].data, pieces[i].len);
      }
    sg_pages_behind_end(&d);
    r->post_len = len;
  }
  /* No "Expect: 100-continue" round trip before large bodies. */
  struct curl_slist *h = curl_slist_append(r->headers, "Expect:");
  if (h == NULL) goto fail;
  r->headers = h;

  CURL *e = r->easy;
  curl_easy_setopt(e, CURLOPT_POST, 1L);
  if (r->pieces) {
    curl_easy_setopt(e, CURLOPT_READFUNCTION, read_fn);
    curl_easy_setopt(e, CURLOPT_READDATA, r);
    curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, seek_fn);
    curl_easy_setopt(e, CURLOPT_SEEKDATA, r);
  } else {
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->post);
  }
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->post_len);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_fn);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_fn);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, r->timeout_ms);
  /* A dead or black-holed endpoint should cost a failover, not the whole
   * request timeout. */
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, r->timeout_ms < 10000 ? r->timeout_ms : 10000L);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, c->no_verify ? 0L : 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, c->no_verify ? 0L : 2L);
  if (c->ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
  if (c->cert_file) curl_easy_setopt(e, CURLOPT_SSLCERT, c->cert_file);
  if (c->key_file) curl_easy_setopt(e, CURLOPT_SSLKEY, c->key_file);
  if (c->user) {
    /* An Authorization header, never user:password@ in the URL. */
    curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(e, CURLOPT_USERNAME, c->user);
    curl_easy_setopt(e, CURLOPT_PASSWORD, c->password);
  }
  int probe, ep = pick(c, 0, r->idempotent, &probe);
  if ((rc = start_attempt(c, r, ep, probe)) != 0) goto fail;
  r->next = c->reqs;
  if (c->reqs) c->reqs->prev = r;
  c->reqs = r;
  c->npending++;
  return 0;
fail:
  req_free(r);
  return rc;
}

int sg_ch_request(sg_ch_client_t *c, const char *sql, const void *body, size_t len, unsigned flags,
                  sg_ch_cb cb, void *arg) {
  sg_ch_req_t q;
  memset(&q, 0, sizeof q);
  q.sql = sql;
  q.body = body;
  q.len = len;
  q.flags = flags;
  return sg_ch_send(c, &q, cb, arg);
}

void sg_ch_client_close(sg_ch_client_t *c) {
  if (c == NULL || c->closing) return;
  c->closing = 1;
  while (c->reqs) {
    req_t *r = c->reqs;
    req_unlink(c, r);
    curl_multi_remove_handle(c->multi, r->easy);
    c->eps[r->ep].pending--;
    if (r->probe) c->eps[r->ep].probing = 0;
    deliver(r, SG_ECANCELED, 0, 0, "ClickHouse request canceled: client closed");
    req_free(r);
  }
  if (c->dispatching == 0) teardown(c);
}

/* ---- deduplication tokens ------------------------------------------------------ */

int sg_ch_dedup_token(char *out, const char *scope, uint64_t first, uint64_t last,
                      const sg_ch_piece_t *pieces, size_t npieces, unsigned flags) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
  sg_pages_pass_t d = {NULL, NULL};
  for (size_t i = 0; ok && i < npieces; i++) {
    if (pieces[i].len == 0) continue;
    ok = EVP_DigestUpdate(ctx, pieces[i].data, pieces[i].len) == 1;
    drop_note(&d, flags, pieces[i].data, pieces[i].len);
  }
  sg_pages_behind_end(&d);
  ok = ok && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen >= 16;
  EVP_MD_CTX_free(ctx);
  if (!ok) return SG_EIO;
  char hex[33];
  for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
  snprintf(out, SG_CH_TOKEN_MAX, "spangate-%.32s-%" PRIx64 "-%" PRIx64 "-%s", scope ? scope : "",
           first, last, hex);
  return 0;
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
  sg_ch_req_t q = {.sql = sql, .body = body, .len = len};
  return sg_ch_send_sync(opts, &q, out, err);
}

int sg_ch_send_sync(const sg_ch_opts_t *opts, const sg_ch_req_t *q, sg_buf_t *out, sg_buf_t *err) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return SG_ENOMEM;
  sync_t s = {NULL, out, err, SG_EIO};
  s.c = sg_ch_client_new(&loop, opts);
  int rc = s.c ? sg_ch_send(s.c, q, sync_cb, &s) : SG_ENOMEM;
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
