/* pg.c - non-blocking libpq connections driven by a libuv loop.
 *
 * Each connection is a small state machine:
 *
 *   DOWN --timer--> CONNECTING --PQconnectPoll OK--> IDLE <--> BUSY
 *     ^                 |  (attempt failed / timed out)           |
 *     +-----------------+----------------(connection lost)--------+
 *
 * A connection is watched with a uv_poll_t on PQsocket(). While connecting,
 * libpq may close its socket and open another (next host or address, SSL
 * fallback) and the new one can even get the same fd number, which epoll
 * (and libuv's bookkeeping of it) would not notice; so during the connect
 * phase the poll handle is recreated after every PQconnectPoll step. Once
 * connected the socket never changes and one handle serves until the
 * connection ends. A poll handle is always closed before libpq closes its fd
 * (libuv must not poll a closed descriptor); poll handles are allocated
 * separately and freed in their close callback, so a connection can start a
 * new one while the old one is still closing.
 *
 * Idle connections keep watching for readability: a server that goes away is
 * noticed (PQconsumeInput fails) before a query is sent to a dead socket.
 *
 * Callbacks never run from inside sg_pg_query: a send that fails at once is
 * answered from a zero-delay timer.
 */
#include "pg.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

enum { C_DOWN = 0, C_CONNECTING, C_IDLE, C_BUSY, C_CLOSED };

/* Spares stay idle while the main connections have been busy without a
 * break for this long (see dispatch). */
#define SATURATED_MS 2000

/* COPY data handed to libpq at a time (see copy_pump). */
#define COPY_CHUNK ((size_t)64 << 10)

typedef struct query_s {
  struct query_s *next;
  const char *sql;
  const char *copy;   /* sg_pg_copy: the COPY data (else NULL) */
  size_t copy_len;
  int nparams;
  const char *const *values;
  const int *lengths;
  const int *formats;
  sg_pg_cb cb;
  void *arg;
  uint64_t queued_ms; /* uv_now when queued (opts.spares) */
} query_t;

typedef struct {
  sg_pg_pool_t *pool;
  PGconn *pg;
  uv_poll_t *poll;    /* NULL when not watching */
  int events;         /* what poll is started for */
  uv_timer_t timer;   /* backoff, connect timeout, deferred send failure */
  int state;
  int attempts;       /* failed attempts in a row (backoff exponent) */
  int ever_up;
  int first_done;     /* the first connection attempt is over */
  int flushing;       /* PQflush still has data to send */
  int send_err;       /* deferred failure of a send: SG_EUNAVAIL or SG_EIO */
  int recycle;        /* the server said the session is read-only: reconnect */
  int copying;        /* streaming the running query's COPY data */
  int copy_started;   /* the running query's COPY began (once per query) */
  int copy_ended;     /* PQputCopyEnd was accepted */
  size_t copy_off;    /* COPY data handed to libpq so far */
  uint64_t sent_ms;   /* uv_now when the running query was sent */
  query_t *q;         /* running query */
  PGresult *res;      /* its last result so far */
  char msg[256];      /* deferred failure message */
} conn_t;

struct sg_pg_pool_s {
  uv_loop_t *loop;
  char *conninfo;
  char *options;      /* the startup "options" we send (NULL: the conninfo's own) */
  sg_pg_pool_opts_t opts;
  conn_t *conns;
  int nconns;
  int first_pending;  /* connections still on their first attempt */
  int nmain;          /* conns[0..nmain) take queries at once, the rest are spares */
  uv_timer_t spare_timer; /* when the queue's head becomes due for a spare */
  uint64_t main_ms8;  /* the main connections' recent statement time, ms x 8 (moving average) */
  uint64_t main_idle_ms; /* uv_now when a main connection last found nothing to do */
  query_t *qhead, *qtail;
  sg_pg_stats_t stats;
  int closing;
  int open_handles;
  uint64_t rng;
  char last_error[256]; /* why the latest connection attempt failed or ended */
};

static void on_poll(uv_poll_t *h, int status, int events);
static void conn_start(conn_t *c);
static void conn_lost(conn_t *c, const char *why);
static void dispatch(sg_pg_pool_t *pool);

/* ---- small helpers ---------------------------------------------------------- */

static void copy_msg(char *dst, size_t cap, const char *src) {
  if (src == NULL) src = "";
  size_t n = strlen(src);
  while (n > 0 && (src[n - 1] == '\n' || src[n - 1] == ' ')) n--; /* libpq ends with "\n" */
  if (n >= cap) n = cap - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
  for (char *p = dst; *p; p++)
    if (*p == '\n') *p = ' ';
}

/* What a failed statement's SQLSTATE means to the caller, by the longest
 * matching prefix (a class is its first two characters; an entry of five
 * characters overrides its class). Transient means "the same statement may
 * well succeed later, or on another server": the caller answers 503 and the
 * client retries, never 500. Unwritable marks the states in which the
 * server takes no writes at all for now (read-only, full, failing I/O), for
 * readiness. Everything not listed (42 syntax/undefined objects, 0A, XX,
 * P0, ...) is SG_EIO: a fault of the gateway's SQL or of the schema that a
 * retry does not cure. */
static const struct {
  const char *prefix;
  int err;
  int unwritable;
} sqlstates[] = {
    {"22", SG_EPOISON, 0},     /* data exception: a value the column cannot take */
    {"23", SG_EPOISON, 0},     /* integrity constraint (e.g. Agenta's one root per trace) */
    {"54", SG_EPOISON, 0},     /* program limit: a value too big for an index or a tsvector */
    {"08", SG_EUNAVAIL, 0},    /* connection exception */
    {"25006", SG_EUNAVAIL, 1}, /* read-only transaction: a standby, or a read-only default */
    {"25P03", SG_EUNAVAIL, 0}, /* idle_in_transaction_session_timeout */
    {"25P04", SG_EUNAVAIL, 0}, /* transaction_timeout */
    {"40", SG_EUNAVAIL, 0},    /* transaction rollback: serialization failure, deadlock */
    {"53", SG_EUNAVAIL, 1},    /* insufficient resources: disk full, out of memory */
    {"53300", SG_EUNAVAIL, 0}, /* too many connections: the server still takes writes */
    {"55006", SG_EUNAVAIL, 0}, /* object in use */
    {"55P03", SG_EUNAVAIL, 0}, /* lock not available (lock_timeout) */
    {"57", SG_EUNAVAIL, 0},    /* operator intervention: shutdown, cannot connect now */
    {"57014", SG_ETIMEOUT, 0}, /* query canceled: statement_timeout or a cancel request */
    {"58", SG_EUNAVAIL, 1},    /* system error: I/O error */
    {"72000", SG_EUNAVAIL, 0}, /* snapshot too old */
};

/* Index into sqlstates of the longest prefix of st, or -1. */
static int sqlstate_find(const char *st) {
  if (st == NULL || strlen(st) != 5) return -1;
  int best = -1;
  size_t bestn = 0;
  for (size_t i = 0; i < sizeof sqlstates / sizeof sqlstates[0]; i++) {
    size_t n = strlen(sqlstates[i].prefix);
    if (n > bestn && !strncmp(st, sqlstates[i].prefix, n)) {
      best = (int)i;
      bestn = n;
    }
  }
  return best;
}

int sg_pg_sqlstate_err(const char *st, int conn_bad) {
  if (conn_bad) return SG_EUNAVAIL;
  int i = sqlstate_find(st);
  return i < 0 ? SG_EIO : sqlstates[i].err;
}

int sg_pg_sqlstate_unwritable(const char *st) {
  int i = sqlstate_find(st);
  return i >= 0 && sqlstates[i].unwritable;
}

/* "<SQLSTATE> <primary> (<detail>)" into out. */
static void result_msg(const PGresult *res, PGconn *pg, char *out, size_t cap) {
  const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  const char *prim = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  if (st == NULL || prim == NULL) {
    const char *m = res ? PQresultErrorMessage(res) : NULL;
    copy_msg(out, cap, (m && *m) ? m : (pg ? PQerrorMessage(pg) : "no result"));
    return;
  }
  const char *det = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
  char tmp[1024];
  snprintf(tmp, sizeof tmp, "%s %s%s%s%s", st, prim, det ? " (" : "", det ? det : "", det ? ")" : "");
  copy_msg(out, cap, tmp);
}

static uint64_t rnd(sg_pg_pool_t *p) {
  uint64_t x = p->rng; /* xorshift64 */
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return p->rng = x;
}

static void maybe_free_pool(sg_pg_pool_t *pool) {
  if (!pool->closing || pool->open_handles > 0) return;
  free(pool->conns);
  free(pool->conninfo);
  free(pool->options);
  free(pool);
}

static void spare_timer_closed(uv_handle_t *h) {
  sg_pg_pool_t *pool = h->data;
  pool->open_handles--;
  maybe_free_pool(pool);
}

static void handle_closed(uv_handle_t *h) {
  sg_pg_pool_t *pool = ((conn_t *)h->data)->pool;
  if (h->type == UV_POLL) free(h);
  pool->open_handles--;
  maybe_free_pool(pool);
}

static void unwatch(conn_t *c) {
  if (c->poll == NULL) return;
  uv_close((uv_handle_t *)c->poll, handle_closed); /* stops polling the fd at once */
  c->poll = NULL;
  c->events = 0;
}

/* Watch PQsocket(c->pg) for events. 0 or a negative code. */
static int watch(conn_t *c, int events) {
  if (c->poll == NULL) {
    int fd = PQsocket(c->pg);
    if (fd < 0) return SG_EIO;
    uv_poll_t *p = malloc(sizeof *p);
    if (p == NULL) return SG_ENOMEM;
    if (uv_poll_init(c->pool->loop, p, fd) != 0) {
      free(p);
      return SG_EIO;
    }
    p->data = c;
    c->pool->open_handles++;
    c->poll = p;
    c->events = 0;
  }
  if (c->events == events) return 0;
  if (uv_poll_start(c->poll, events, on_poll) != 0) return SG_EIO;
  c->events = events;
  return 0;
}

static query_t *queue_pop(sg_pg_pool_t *pool) {
  query_t *q = pool->qhead;
  if (q == NULL) return NULL;
  pool->qhead = q->next;
  if (pool->qhead == NULL) pool->qtail = NULL;
  pool->stats.queued--;
  return q;
}

/* Answers every queued query with err. Callbacks may queue more (they are
 * answered too, unless sg_pg_query refuses them outright). */
static void fail_queue(sg_pg_pool_t *pool, int err, const char *msg) {
  query_t *q;
  while ((q = queue_pop(pool)) != NULL) {
    pool->stats.errors++;
    q->cb(q->arg, NULL, err, msg);
    free(q);
  }
}

static void no_connection_left(sg_pg_pool_t *pool, const char *why) {
  if (pool->closing || pool->stats.up > 0 || pool->first_pending > 0) return;
  char msg[512];
  snprintf(msg, sizeof msg, "no PostgreSQL connection: %.400s", why);
  fail_queue(pool, SG_EUNAVAIL, msg);
}

/* ---- connecting ------------------------------------------------------------- */

static void first_attempt_over(conn_t *c) {
  if (c->first_done) return;
  c->first_done = 1;
  c->pool->first_pending--;
}

static void reconnect_cb(uv_timer_t *t) {
  conn_t *c = t->data;
  if (!c->pool->closing && c->state == C_DOWN) conn_start(c);
}

static void schedule_reconnect(conn_t *c) {
  sg_pg_pool_t *pool = c->pool;
  if (pool->closing) return;
  uint64_t d = (uint64_t)pool->opts.backoff_min_ms;
  for (int i = 0; i < c->attempts && d < (uint64_t)pool->opts.backoff_max_ms; i++) d *= 2;
  if (d > (uint64_t)pool->opts.backoff_max_ms) d = (uint64_t)pool->opts.backoff_max_ms;
  /* Full jitter over the upper half: spread the workers' reconnects out. */
  d = d / 2 + rnd(pool) % (d / 2 + 1);
  c->attempts++;
  uv_timer_start(&c->timer, reconnect_cb, d, 0);
}

static void attempt_failed(conn_t *c, const char *why) {
  char msg[256];
  copy_msg(msg, sizeof msg, why);
  copy_msg(c->pool->last_error, sizeof c->pool->last_error, msg);
  uv_timer_stop(&c->timer);
  unwatch(c);
  if (c->pg) PQfinish(c->pg);
  c->pg = NULL;
  c->state = C_DOWN;
  c->pool->stats.connect_failures++;
  first_attempt_over(c);
  schedule_reconnect(c);
  no_connection_left(c->pool, msg);
}

static void connect_timeout_cb(uv_timer_t *t) {
  conn_t *c = t->data;
  if (c->state == C_CONNECTING) attempt_failed(c, "connection attempt timed out");
}

/* Server notices (and libpq's reports of a connection it is closing) would go
 * to stderr by default; a library layer never logs, and every failure that
 * matters reaches the caller through a callback anyway. */
static void quiet_notice(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

static void connected(conn_t *c) {
  sg_pg_pool_t *pool = c->pool;
  uv_timer_stop(&c->timer);
  if (PQsetnonblocking(c->pg, 1) != 0 || watch(c, UV_READABLE) != 0) {
    attempt_failed(c, PQerrorMessage(c->pg));
    return;
  }
  c->state = C_IDLE;
  c->attempts = 0;
  c->recycle = 0;
  pool->stats.up++;
  if (c->ever_up) pool->stats.reconnects++;
  c->ever_up = 1;
  first_attempt_over(c);
  dispatch(pool);
}

/* One step of PQconnectPoll's protocol: st is what it (or PQconnectStart) said. */
static void connect_step(conn_t *c, PostgresPollingStatusType st) {
  int rc = 0;
  unwatch(c); /* the socket may have changed: see the top of the file */
  switch (st) {
  case PGRES_POLLING_READING: rc = watch(c, UV_READABLE); break;
  case PGRES_POLLING_WRITING: rc = watch(c, UV_WRITABLE); break;
  case PGRES_POLLING_OK: connected(c); return;
  default: attempt_failed(c, PQerrorMessage(c->pg)); return;
  }
  if (rc != 0) attempt_failed(c, "cannot watch the connection's socket");
}

static void conn_start(conn_t *c) {
  sg_pg_pool_t *pool = c->pool;
  /* Entries before the expanded dbname are defaults the conninfo may
   * override; entries after it override the conninfo (libpq's rule). So a
   * writable pool refuses a read-only server (a standby, or
   * default_transaction_read_only) unless the operator's conninfo says
   * otherwise; libpq checks what the server reports at start-up, or asks
   * with SHOW transaction_read_only before PostgreSQL 14. */
  const char *keys[5], *vals[5];
  int n = 0;
  if (pool->opts.writable) {
    keys[n] = "target_session_attrs";
    vals[n++] = "read-write";
  }
  keys[n] = "dbname";
  vals[n++] = pool->conninfo;
  keys[n] = "fallback_application_name";
  vals[n++] = "spangate";
  if (pool->options) {
    keys[n] = "options";
    vals[n++] = pool->options;
  }
  keys[n] = vals[n] = NULL;
  c->pg = PQconnectStartParams(keys, vals, 1);
  if (c->pg == NULL) {
    attempt_failed(c, "out of memory");
    return;
  }
  PQsetNoticeProcessor(c->pg, quiet_notice, NULL);
  if (PQstatus(c->pg) == CONNECTION_BAD) {
    attempt_failed(c, PQerrorMessage(c->pg));
    return;
  }
  c->state = C_CONNECTING;
  uv_timer_start(&c->timer, connect_timeout_cb, (uint64_t)pool->opts.connect_timeout_ms, 0);
  connect_step(c, PGRES_POLLING_WRITING); /* as libpq's docs say to start */
}

/* ---- queries ---------------------------------------------------------------- */

static int result_err(conn_t *c, PGresult *res, char *msg, size_t cap) {
  if (res == NULL) {
    copy_msg(msg, cap, "no result");
    return SG_EIO;
  }
  switch (PQresultStatus(res)) {
  case PGRES_COMMAND_OK:
  case PGRES_TUPLES_OK:
  case PGRES_EMPTY_QUERY:
  case PGRES_SINGLE_TUPLE:
    return 0;
  default: break;
  }
  result_msg(res, c->pg, msg, cap);
  const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  /* A read-only session stays read-only: after a failover (or a changed
   * default) only a new connection can reach a writable server. */
  if (st && !strcmp(st, "25006")) c->recycle = 1;
  return sg_pg_sqlstate_err(st, PQstatus(c->pg) == CONNECTION_BAD);
}

/* The running query has all its results: answer it, then serve the queue.
 * Touches nothing of c after the callback unless the pool is still open. */
static void query_complete(conn_t *c) {
  sg_pg_pool_t *pool = c->pool;
  query_t *q = c->q;
  PGresult *res = c->res;
  char msg[512];
  int err = result_err(c, res, msg, sizeof msg);
  c->q = NULL;
  c->res = NULL;
  c->state = C_IDLE;
  pool->stats.busy--;
  if (err) pool->stats.errors++;
  if (c - pool->conns < pool->nmain) { /* moving average over ~8 statements */
    uint64_t ms = uv_now(pool->loop) - c->sent_ms;
    pool->main_ms8 = pool->main_ms8 ? pool->main_ms8 - pool->main_ms8 / 8 + ms : ms * 8;
  }
  q->cb(q->arg, res, err, err ? msg : NULL);
  free(q);
  PQclear(res);
  if (pool->closing) return;
  if (c->state == C_IDLE && PQstatus(c->pg) == CONNECTION_BAD) {
    conn_lost(c, PQerrorMessage(c->pg));
    return;
  }
  if (c->state == C_IDLE && c->recycle) {
    conn_lost(c, "the session is read-only (25006); reconnecting");
    return;
  }
  dispatch(pool);
}

static void deferred_fail_cb(uv_timer_t *t) {
  conn_t *c = t->data;
  if (c->state != C_BUSY || c->q == NULL) return;
  if (c->send_err == SG_EUNAVAIL) {
    conn_lost(c, c->msg);
    return;
  }
  /* Connection fine, the query could not be sent (e.g. too many parameters). */
  sg_pg_pool_t *pool = c->pool;
  query_t *q = c->q;
  c->q = NULL;
  c->state = C_IDLE;
  pool->stats.busy--;
  pool->stats.errors++;
  q->cb(q->arg, NULL, SG_EIO, c->msg);
  free(q);
  if (!pool->closing) dispatch(pool);
}

static void defer_fail(conn_t *c) {
  c->send_err = PQstatus(c->pg) == CONNECTION_BAD ? SG_EUNAVAIL : SG_EIO;
  copy_msg(c->msg, sizeof c->msg, PQerrorMessage(c->pg));
  uv_timer_start(&c->timer, deferred_fail_cb, 0, 0);
}

/* 0, or the send failed (already deferred to the timer). */
static int conn_flush(conn_t *c, int deferred) {
  int r = PQflush(c->pg);
  if (r < 0) {
    if (deferred) defer_fail(c);
    else conn_lost(c, PQerrorMessage(c->pg));
    return -1;
  }
  c->flushing = r == 1;
  if (watch(c, c->flushing ? (UV_READABLE | UV_WRITABLE) : UV_READABLE) != 0) {
    if (deferred) {
      c->send_err = SG_EUNAVAIL;
      copy_msg(c->msg, sizeof c->msg, "cannot watch the connection's socket");
      uv_timer_start(&c->timer, deferred_fail_cb, 0, 0);
    } else {
      conn_lost(c, "cannot watch the connection's socket");
    }
    return -1;
  }
  return 0;
}

static void conn_send(conn_t *c, query_t *q) {
  c->q = q;
  c->res = NULL;
  c->state = C_BUSY;
  c->copying = c->copy_started = c->copy_ended = 0;
  c->copy_off = 0;
  c->sent_ms = uv_now(c->pool->loop);
  c->pool->stats.busy++;
  /* A COPY travels as a simple query: the statements after it run in the
   * same implicit transaction, and the extended protocol takes only one. */
  int sent = q->copy ? PQsendQuery(c->pg, q->sql)
                     : PQsendQueryParams(c->pg, q->sql, q->nparams, NULL, q->values, q->lengths,
                                         q->formats, 0);
  if (!sent) {
    defer_fail(c);
    return;
  }
  (void)conn_flush(c, 1);
}

static void spare_due_cb(uv_timer_t *t) {
  sg_pg_pool_t *pool = t->data;
  if (!pool->closing) dispatch(pool);
}

/* Hands queued queries to idle connections: the main ones first; a spare
 * takes the queue's head once it has waited opts.spare_after_ms and twice
 * the main connections' recent statement time (so only an outlier spills
 * over), unless the main connections have had no idle moment for
 * SATURATED_MS (spares cut the latency of a server with time to spare; they
 * cannot add throughput to one that has none, and more concurrent writers
 * make Agenta's GIN indexes grow); at once when no main connection is up. */
static void dispatch(sg_pg_pool_t *pool) {
  int main_up = 0;
  for (int i = 0; i < pool->nmain && !pool->closing; i++) {
    conn_t *c = &pool->conns[i];
    if (c->state == C_IDLE && pool->qhead != NULL) conn_send(c, queue_pop(pool));
    if (c->state == C_IDLE) pool->main_idle_ms = uv_now(pool->loop); /* nothing to do */
    if (c->state == C_IDLE || c->state == C_BUSY) main_up++;
  }
  if (pool->nmain == pool->nconns || pool->closing) return;
  /* Main connections busy without a break for SATURATED_MS: PostgreSQL is
   * the bottleneck, and another writer would only slow it down. */
  if (main_up > 0 && uv_now(pool->loop) - pool->main_idle_ms > SATURATED_MS) return;
  uv_timer_stop(&pool->spare_timer);
  uint64_t now = uv_now(pool->loop), wait = pool->main_ms8 / 4; /* twice the average */
  if (wait < (uint64_t)pool->opts.spare_after_ms) wait = (uint64_t)pool->opts.spare_after_ms;
  for (int i = pool->nmain; i < pool->nconns && pool->qhead != NULL && !pool->closing; i++) {
    conn_t *c = &pool->conns[i];
    if (c->state != C_IDLE) continue;
    uint64_t due = pool->qhead->queued_ms + wait;
    if (main_up > 0 && now < due) {
      uv_timer_start(&pool->spare_timer, spare_due_cb, due - now, 0);
      return;
    }
    pool->stats.spare_queries++;
    conn_send(c, queue_pop(pool));
  }
}

/* The connection is gone: answer its query SG_EUNAVAIL (never re-run it),
 * reconnect later, fail the queue if it was the last one. */
static void conn_lost(conn_t *c, const char *why) {
  sg_pg_pool_t *pool = c->pool;
  char why1[256], msg[300];
  copy_msg(why1, sizeof why1, why && *why ? why : "closed");
  snprintf(msg, sizeof msg, "connection to PostgreSQL lost: %s", why1);
  copy_msg(pool->last_error, sizeof pool->last_error, msg);
  if (c->state == C_IDLE || c->state == C_BUSY) pool->stats.up--;
  if (c->state == C_BUSY) pool->stats.busy--;
  query_t *q = c->q;
  c->q = NULL;
  if (c->res) PQclear(c->res);
  c->res = NULL;
  uv_timer_stop(&c->timer);
  unwatch(c);
  if (c->pg) PQfinish(c->pg);
  c->pg = NULL;
  c->state = C_DOWN;
  c->flushing = 0;
  c->copying = 0;
  schedule_reconnect(c);
  if (q) {
    pool->stats.errors++;
    q->cb(q->arg, NULL, SG_EUNAVAIL, msg);
    free(q);
  }
  no_connection_left(pool, msg);
}

/* Streams the running query's COPY data into the connection, then ends the
 * COPY. libpq copies what it is given into its output buffer, so data is
 * handed over COPY_CHUNK bytes at a time and only once the previous bytes
 * have reached the socket: libpq's buffer stays small however much data
 * there is, and a full socket means waiting for writability, never
 * blocking. Returns 0 when the COPY is ended (its results follow), 1 when
 * waiting for the socket, -1 when the connection was lost (answered). */
static int copy_pump(conn_t *c) {
  query_t *q = c->q;
  for (;;) {
    int f = PQflush(c->pg);
    if (f < 0) {
      conn_lost(c, PQerrorMessage(c->pg));
      return -1;
    }
    int r = 1;
    if (f == 0 && c->copy_ended) {
      c->copying = 0;
    } else if (f == 0 && c->copy_off < q->copy_len) {
      size_t n = q->copy_len - c->copy_off;
      if (n > COPY_CHUNK) n = COPY_CHUNK;
      r = PQputCopyData(c->pg, q->copy + c->copy_off, (int)n);
      if (r == 1) c->copy_off += n;
    } else if (f == 0) {
      r = PQputCopyEnd(c->pg, NULL);
      if (r == 1) c->copy_ended = 1;
    }
    if (r < 0) {
      if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_lost(c, PQerrorMessage(c->pg));
        return -1;
      }
      c->copying = 0; /* the server ended the COPY (an error): its result says why */
    }
    if (!c->copying || f == 1 || r == 0) {
      if (watch(c, c->copying ? (UV_READABLE | UV_WRITABLE) : UV_READABLE) != 0) {
        conn_lost(c, "cannot watch the connection's socket");
        return -1;
      }
      return c->copying ? 1 : 0;
    }
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  conn_t *c = h->data;
  /* libuv reports POLLERR as status UV_EBADF and stops the handle; libpq
   * reads the socket's error itself and says what it was ("Connection
   * refused"), and may try the server's next address. */
  if (c->state == C_CONNECTING) {
    connect_step(c, PQconnectPoll(c->pg));
    return;
  }
  if (status < 0) {
    int got = PQconsumeInput(c->pg);
    const char *why = PQerrorMessage(c->pg);
    conn_lost(c, !got && why && *why ? why : uv_strerror(status));
    return;
  }
  if ((events & UV_READABLE) && !PQconsumeInput(c->pg)) {
    conn_lost(c, PQerrorMessage(c->pg));
    return;
  }
  if (c->state == C_IDLE) {
    /* Nothing is expected while idle: notices are handled by libpq,
     * notifications and stray results are dropped. */
    PGnotify *n;
    while ((n = PQnotifies(c->pg)) != NULL) PQfreemem(n);
    while (!PQisBusy(c->pg)) {
      PGresult *r = PQgetResult(c->pg);
      if (r == NULL) break;
      PQclear(r);
    }
    if (PQstatus(c->pg) == CONNECTION_BAD) conn_lost(c, PQerrorMessage(c->pg));
    return;
  }
  if (c->state != C_BUSY) return;
  if (c->copying) {
    if (copy_pump(c) != 0) return;
  } else if (c->flushing && conn_flush(c, 0) != 0) {
    return;
  }
  while (!PQisBusy(c->pg)) {
    PGresult *r = PQgetResult(c->pg);
    if (r == NULL) {
      query_complete(c);
      return;
    }
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COPY_IN && c->q->copy && !c->copy_started) {
      /* sg_pg_copy's COPY: stream its data; the results of the COPY and of
       * the statements after it follow. */
      PQclear(r);
      c->copy_started = c->copying = 1;
      if (copy_pump(c) != 0) return;
      continue;
    }
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
      /* Not supported here (sg_pg_query, or a second COPY): end the copy so
       * the query finishes. */
      if (st == PGRES_COPY_IN) (void)PQputCopyEnd(c->pg, "COPY is not supported by sg_pg_query");
    }
    /* Keep the last result, but an error outlives what follows it. */
    if (c->res && PQresultStatus(c->res) == PGRES_FATAL_ERROR) {
      PQclear(r);
    } else {
      PQclear(c->res);
      c->res = r;
    }
  }
}

/* ---- public API ------------------------------------------------------------- */

int sg_pg_conninfo_check(const char *conninfo, sg_buf_t *err) {
  char *msg = NULL;
  PQconninfoOption *o = PQconninfoParse(conninfo ? conninfo : "", &msg);
  if (o == NULL) {
    if (err) sg_buf_printf(err, "bad PostgreSQL connection string: %s", msg ? msg : "out of memory");
    if (msg) PQfreemem(msg);
    return SG_EINVAL;
  }
  PQconninfoFree(o);
  return 0;
}

/* The startup options: the conninfo's own, then statement_timeout (a later
 * -c wins on the server). 0 or SG_ENOMEM. */
static int set_options(sg_pg_pool_t *pool) {
  const char *own = NULL;
  PQconninfoOption *o = PQconninfoParse(pool->conninfo, NULL);
  if (o == NULL) return SG_ENOMEM; /* it parsed before: only memory can fail */
  for (PQconninfoOption *i = o; i->keyword; i++)
    if (!strcmp(i->keyword, "options") && i->val && *i->val) own = i->val;
  sg_buf_t b = SG_BUF_INIT;
  int rc = sg_buf_printf(&b, "%s%s-c statement_timeout=%d", own ? own : "", own ? " " : "",
                         pool->opts.statement_timeout_ms);
  PQconninfoFree(o);
  if (rc != 0) {
    sg_buf_free(&b);
    return SG_ENOMEM;
  }
  pool->options = sg_buf_detach(&b, NULL);
  return 0;
}

sg_pg_pool_t *sg_pg_pool_new(uv_loop_t *loop, const char *conninfo, int size,
                             const sg_pg_pool_opts_t *opts) {
  if (loop == NULL || conninfo == NULL || size < 1 || sg_pg_conninfo_check(conninfo, NULL) != 0)
    return NULL;
  sg_pg_pool_t *pool = calloc(1, sizeof *pool);
  if (pool == NULL) return NULL;
  pool->conninfo = strdup(conninfo);
  pool->conns = calloc((size_t)size, sizeof *pool->conns);
  if (pool->conninfo == NULL || pool->conns == NULL) {
    free(pool->conninfo);
    free(pool->conns);
    free(pool);
    return NULL;
  }
  if (opts) pool->opts = *opts;
  if (pool->opts.statement_timeout_ms > 0 && set_options(pool) != 0) {
    free(pool->conninfo);
    free(pool->conns);
    free(pool);
    return NULL;
  }
  if (pool->opts.max_queue <= 0) pool->opts.max_queue = 1024;
  if (pool->opts.connect_timeout_ms <= 0) pool->opts.connect_timeout_ms = 5000;
  if (pool->opts.backoff_min_ms <= 0) pool->opts.backoff_min_ms = 100;
  if (pool->opts.backoff_max_ms < pool->opts.backoff_min_ms)
    pool->opts.backoff_max_ms = pool->opts.backoff_min_ms > 5000 ? pool->opts.backoff_min_ms : 5000;
  if (pool->opts.spares < 0 || pool->opts.spares >= size) pool->opts.spares = 0;
  if (pool->opts.spare_after_ms <= 0) pool->opts.spare_after_ms = 50;
  pool->loop = loop;
  pool->nconns = size;
  pool->nmain = size - pool->opts.spares;
  pool->main_idle_ms = uv_now(loop);
  uv_timer_init(loop, &pool->spare_timer);
  pool->spare_timer.data = pool;
  pool->open_handles++;
  pool->first_pending = size;
  pool->stats.configured = size;
  pool->stats.spares = pool->opts.spares;
  pool->rng = (uv_hrtime() ^ (uint64_t)(uintptr_t)pool) | 1;
  for (int i = 0; i < size; i++) {
    conn_t *c = &pool->conns[i];
    c->pool = pool;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    pool->open_handles++;
  }
  for (int i = 0; i < size; i++) conn_start(&pool->conns[i]);
  return pool;
}

static void enqueue(sg_pg_pool_t *pool, query_t *q) {
  if (pool->qtail) pool->qtail->next = q;
  else pool->qhead = q;
  pool->qtail = q;
  pool->stats.queued++;
  pool->stats.queries++;
  q->queued_ms = uv_now(pool->loop);
  dispatch(pool);
}

int sg_pg_query(sg_pg_pool_t *pool, const char *sql, int nparams,
                const char *const *values, const int *lengths, const int *formats,
                sg_pg_cb cb, void *arg) {
  if (pool == NULL || sql == NULL || cb == NULL || nparams < 0 || (nparams > 0 && values == NULL))
    return SG_EINVAL;
  if (pool->closing) return SG_ECANCELED;
  if (pool->stats.up == 0 && pool->first_pending == 0) return SG_EUNAVAIL;
  if (pool->stats.queued >= (size_t)pool->opts.max_queue) return SG_EBUSY;
  query_t *q = calloc(1, sizeof *q);
  if (q == NULL) return SG_ENOMEM;
  q->sql = sql;
  q->nparams = nparams;
  q->values = values;
  q->lengths = lengths;
  q->formats = formats;
  q->cb = cb;
  q->arg = arg;
  enqueue(pool, q);
  return 0;
}

int sg_pg_copy(sg_pg_pool_t *pool, const char *sql, const char *data, size_t len, sg_pg_cb cb,
               void *arg) {
  if (pool == NULL || sql == NULL || cb == NULL || (data == NULL && len > 0)) return SG_EINVAL;
  if (pool->closing) return SG_ECANCELED;
  if (pool->stats.up == 0 && pool->first_pending == 0) return SG_EUNAVAIL;
  if (pool->stats.queued >= (size_t)pool->opts.max_queue) return SG_EBUSY;
  query_t *q = calloc(1, sizeof *q);
  if (q == NULL) return SG_ENOMEM;
  q->sql = sql;
  q->copy = data ? data : "";
  q->copy_len = len;
  q->cb = cb;
  q->arg = arg;
  enqueue(pool, q);
  return 0;
}

const sg_pg_stats_t *sg_pg_pool_stats(const sg_pg_pool_t *pool) { return &pool->stats; }

const char *sg_pg_pool_last_error(const sg_pg_pool_t *pool) { return pool->last_error; }

int sg_pg_pool_ready(const sg_pg_pool_t *pool) { return pool->stats.up > 0; }

void sg_pg_pool_close(sg_pg_pool_t *pool) {
  if (pool == NULL || pool->closing) return;
  pool->closing = 1;
  fail_queue(pool, SG_ECANCELED, "PostgreSQL pool closed");
  uv_close((uv_handle_t *)&pool->spare_timer, spare_timer_closed);
  for (int i = 0; i < pool->nconns; i++) {
    conn_t *c = &pool->conns[i];
    query_t *q = c->q;
    c->q = NULL;
    if (c->res) PQclear(c->res);
    c->res = NULL;
    if (c->state == C_IDLE || c->state == C_BUSY) pool->stats.up--;
    if (c->state == C_BUSY) pool->stats.busy--;
    unwatch(c);
    if (c->pg) PQfinish(c->pg);
    c->pg = NULL;
    c->state = C_CLOSED;
    uv_close((uv_handle_t *)&c->timer, handle_closed);
    if (q) {
      pool->stats.errors++;
      q->cb(q->arg, NULL, SG_ECANCELED, "PostgreSQL pool closed");
      free(q);
    }
  }
}

int sg_pg_exec_sync(const char *conninfo, const char *sql, sg_buf_t *err) {
  const char *keys[] = {"dbname", "fallback_application_name", NULL};
  const char *vals[] = {conninfo ? conninfo : "", "spangate", NULL};
  char msg[1024];
  PGconn *pg = PQconnectdbParams(keys, vals, 1);
  if (pg == NULL) return SG_ENOMEM;
  if (PQstatus(pg) != CONNECTION_OK) {
    copy_msg(msg, sizeof msg, PQerrorMessage(pg));
    if (err) sg_buf_printf(err, "cannot connect to PostgreSQL: %s", msg);
    PQfinish(pg);
    return SG_EUNAVAIL;
  }
  PGresult *res = PQexec(pg, sql);
  int rc = 0;
  ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
    result_msg(res, pg, msg, sizeof msg);
    rc = sg_pg_sqlstate_err(res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL,
                            PQstatus(pg) == CONNECTION_BAD);
    if (err) sg_buf_puts(err, msg);
  }
  PQclear(res);
  PQfinish(pg);
  return rc;
}
