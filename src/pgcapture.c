/* pgcapture.c - change capture from PostgreSQL's logical replication; the
 * contract is in pgcapture.h.
 *
 * The replication connection is a small state machine on the capture
 * thread's loop, libpq in non-blocking mode watched by a uv_poll_t on
 * PQsocket (recreated after every PQconnectPoll step, as pg.c does: libpq
 * may switch sockets while it connects):
 *
 *   IDLE --timer--> CONNECT --> QUERY (the setup steps, one simple query
 *   each) --> STREAM (START_REPLICATION answered with COPY BOTH)
 *     ^                                                     |
 *     +------ connection lost, setup failed, slot busy -----+
 *
 * Setup, on the replication connection itself (replication=database takes
 * SQL too): SHOW wal_level; find spans and nodes; REPLICA IDENTITY FULL on
 * them (see "Why REPLICA IDENTITY FULL"); the publication; the slot
 * (CREATE_REPLICATION_SLOT ... LOGICAL pgoutput when missing; its
 * confirmed_flush_lsn is where streaming resumes); START_REPLICATION.
 *
 * Confirming. Rows are appended to the capture spool (chsink) stamped with
 * a strictly increasing time; every commit pushes (stamp of its last row,
 * end LSN) on a FIFO. The spool's oldest pending stamp tells which rows
 * ClickHouse has: an entry whose stamp is older is delivered, and its LSN
 * may be confirmed (standby status update, flush = apply = that LSN). With
 * nothing pending and no transaction open, the position the server reports
 * in keepalives is confirmed too (as PostgreSQL's own apply worker does),
 * so a slot whose tables see no writes does not hold back WAL. The spool is
 * never fsynced and is emptied at start: every row in it is unconfirmed, and
 * the slot sends those changes again.
 *
 * Why REPLICA IDENTITY FULL. pgoutput sends a DELETE's old row and an
 * UPDATE's unchanged TOASTed values only with it. A tombstone needs the
 * deleted row's created_at (ClickHouse's sorting key) and an update of a
 * span with a large attributes or events column needs that column; reading
 * them back from PostgreSQL or ClickHouse would race with later changes and
 * cost a query per change. FULL costs WAL on updates and deletes (the old
 * row is logged; measured in the README). Changes without the values (the
 * identity changed back while running) are recorded as gaps for `spangate
 * migrate`, never dropped silently.
 */
#include "pgcapture.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <uv.h>

#include "ch_config.h"
#include "ch_setup.h"
#include "chsink.h"
#include "err.h"
#include "log.h"
#include "lua_rt.h"
#include "metrics.h"
#include "pg.h"
#include "pgcapture_rows.h"
#include "pgoutput.h"
#include "spool.h"

#define TICK_MS 100
#define RETRY_MIN_MS 500
#define RETRY_MAX_MS 30000
#define STANDBY_RETRY_MS 2000
#define CONNECT_TIMEOUT_MS 15000
#define QUERY_TIMEOUT_MS 120000 /* CREATE_REPLICATION_SLOT waits for running transactions to end */
#define STATUS_EVERY_MS 10000   /* well inside wal_sender_timeout (60 s by default) */
#define STATUS_MIN_GAP_MS 100   /* confirmations are batched this much */
#define STATS_EVERY_MS 2000
#define RETAINED_WARN_EVERY_MS 60000
#define ROWS_FLUSH_BYTES (1u << 20) /* rows gathered before they are appended (less for a small spool) */
#define BURST_MESSAGES 5000 /* messages handled per loop turn before others get a go */
#define VERSION_RETRY_MS 5000

enum { ST_OFF = 0, ST_CONNECTING, ST_STREAMING, ST_STANDBY, ST_FAILING };
static const char *const state_names[] = {"off", "connecting", "streaming", "standby", "failing"};

enum { P_IDLE = 0, P_CONNECT, P_QUERY, P_STREAM };

/* Setup steps, in order. */
enum { Q_WAL = 0, Q_TABLES, Q_IDENTITY, Q_PUB, Q_PUB_DDL, Q_SLOT, Q_CREATE_SLOT, Q_START };

enum { OP_INSERT = 0, OP_UPDATE, OP_DELETE, OP_TRUNCATE };

typedef struct {
  int64_t stamp;     /* -1: its rows are not appended yet; 0: nothing to wait for */
  sg_lsn_t lsn;      /* the transaction's end: confirmed once the rows are in */
  int64_t commit_us; /* Unix µs */
} pending_t;

struct sg_pgcapture_s {
  const sg_config_t *cfg;
  uv_thread_t thread;
  uv_loop_t loop;
  uv_async_t wake;
  _Atomic int stop_req, reload_req;
  uv_timer_t tick, kick;
  int stopping;

  sg_ch_target_t target; /* ClickHouse's version and the tables' row layouts */
  int have_target;
  uint64_t version_try_ms;
  sg_lua_rt_t *lua;
  int has_ttl;
  sg_ch_client_t *ch; /* the sinks' ClickHouse client, on this loop */
  sg_chsink_t *sink, *nodes_sink;
  char spool_dir[4096], nodes_dir[4096];
  sg_pg_pool_t *pg; /* slot statistics and gaps */
  int stats_inflight;
  uint64_t stats_ms, retained_warn_ms;

  /* the replication connection */
  PGconn *conn;
  uv_poll_t *poll;
  int poll_events;
  int phase, step;
  int flushing;
  uint64_t next_try_ms, backoff_ms, connect_ms;
  PGresult *res;
  char spans_q[256], nodes_q[256]; /* quoted qualified names; nodes_q "" when absent */
  char spans_ri, nodes_ri;
  int pub_exists;
  char pub_tables[1024];
  char role[128];

  /* the stream */
  sg_cap_rel_t *rels;
  size_t nrels, caprels;
  sg_pgo_scratch_t scratch;
  int in_txn;
  int64_t txn_commit_us;
  sg_buf_t rows, nrows;
  size_t flush_bytes; /* append the rows gathered once they reach this (bounded by spool_max_bytes) */
  int paused; /* the spool is full: nothing is read until the rows are appended */
  int64_t last_stamp, pend_stamp;
  pending_t *fifo;
  size_t fhead, fn, fcap;
  sg_lsn_t confirmed, recv, sent_flush;
  uint64_t status_ms;
  uint64_t log_ms; /* row-level error lines: at most one a second */
  uint64_t fail_log_ms; /* the same connection failure: logged once a minute */
  uint64_t log_quiet;

  /* figures */
  int state;
  char error[640];
  int64_t lag_bytes, retained_bytes, lag_us;
  uint64_t pub_inserts, pub_rows, pub_insert_us, pub_retries, pub_dead_records, pub_dead_rows,
      pub_encode_rejects, pub_dead_fail, pub_spool_err;
  int64_t pub_spool_bytes, pub_spool_records;
};

/* /readyz reads this from the worker threads. */
static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
  int running;
  int state;
  char slot[64];
  char confirmed[24];
  char error[640];
  int64_t lag_bytes, retained_bytes, lag_us;
} shared;

static void tick_cb(uv_timer_t *t);
static void kick_cb(uv_timer_t *t);
static void process(sg_pgcapture_t *c);
static void run_step(sg_pgcapture_t *c);

static int64_t now_us(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static void set_state(sg_pgcapture_t *c, int st, const char *error) {
  c->state = st;
  if (error == NULL) {
    c->error[0] = '\0';
  } else if (error != c->error) {
    size_t n = strlen(error);
    if (n >= sizeof c->error) n = sizeof c->error - 1;
    memcpy(c->error, error, n);
    c->error[n] = '\0';
  }
  atomic_store(&sg_metrics.capture_state, st);
}

/* ---- publishing figures ------------------------------------------------------ */

static void publish(sg_pgcapture_t *c) {
  char lsn[24];
  sg_pgo_lsn_format(c->confirmed, lsn);
  int64_t lag_us = 0;
  if (c->fn > 0) {
    int64_t age = now_us() - c->fifo[c->fhead].commit_us;
    lag_us = age > 0 ? age : 0;
  }
  c->lag_us = lag_us;
  atomic_store(&sg_metrics.capture_lag_us, lag_us);
  atomic_store(&sg_metrics.capture_lag_bytes, c->lag_bytes);
  atomic_store(&sg_metrics.capture_retained_bytes, c->retained_bytes);
  pthread_mutex_lock(&shared_mu);
  shared.state = c->state;
  snprintf(shared.confirmed, sizeof shared.confirmed, "%s", lsn);
  snprintf(shared.error, sizeof shared.error, "%s", c->error);
  shared.lag_bytes = c->lag_bytes;
  shared.retained_bytes = c->retained_bytes;
  shared.lag_us = lag_us;
  pthread_mutex_unlock(&shared_mu);

  /* The capture sinks' figures join the workers' in the ClickHouse metrics. */
  sg_chsink_stats_t a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  if (c->sink) sg_chsink_stats(c->sink, &a);
  if (c->nodes_sink) sg_chsink_stats(c->nodes_sink, &b);
#define PUB(field, metric, value)                                                                            \
  do {                                                                                                       \
    atomic_fetch_add(&sg_metrics.metric, (value) - c->field);                                                \
    c->field = (value);                                                                                      \
  } while (0)
  PUB(pub_inserts, ch_inserts, a.inserts + b.inserts);
  PUB(pub_rows, ch_rows, a.rows_sent + b.rows_sent);
  PUB(pub_insert_us, ch_insert_us, a.insert_us_sum + b.insert_us_sum);
  PUB(pub_retries, ch_retries, a.retries + b.retries);
  PUB(pub_dead_records, ch_dead_records, a.dead_records + b.dead_records);
  PUB(pub_dead_rows, ch_dead_rows, a.dead_rows + b.dead_rows);
  PUB(pub_encode_rejects, ch_encode_rejects, a.encode_rejects + b.encode_rejects);
  PUB(pub_dead_fail, ch_dead_letter_failures, a.dead_letter_failures + b.dead_letter_failures);
  PUB(pub_spool_err, ch_spool_errors, a.spool_errors + b.spool_errors);
  PUB(pub_spool_bytes, spool_bytes, (int64_t)(a.spool_bytes + b.spool_bytes));
  PUB(pub_spool_records, spool_records, (int64_t)(a.spool_records + b.spool_records));
#undef PUB
  int64_t oldest = a.spool_oldest_us;
  if (b.spool_oldest_us && (!oldest || b.spool_oldest_us < oldest)) oldest = b.spool_oldest_us;
  atomic_store(&sg_metrics.spool_oldest_us[0], oldest); /* slot 0: no worker has that id */
}

int sg_pgcapture_status_json(sg_buf_t *out) {
  pthread_mutex_lock(&shared_mu);
  int rc;
  if (!shared.running) {
    rc = sg_buf_puts(out, "{\"state\":\"off\"}");
  } else {
    rc = sg_buf_printf(out,
                       "{\"state\":\"%s\",\"slot\":\"%s\",\"confirmed_lsn\":\"%s\",\"lag_bytes\":%" PRId64
                       ",\"lag_seconds\":%.3f,\"retained_wal_bytes\":%" PRId64,
                       state_names[shared.state], shared.slot, shared.confirmed, shared.lag_bytes,
                       (double)shared.lag_us / 1e6, shared.retained_bytes);
    if (rc == 0 && shared.error[0]) {
      rc = sg_buf_puts(out, ",\"error\":\"");
      rc = rc ? rc : sg_buf_json_escape(out, shared.error, strlen(shared.error));
      rc = rc ? rc : sg_buf_putc(out, '"');
    }
    rc = rc ? rc : sg_buf_putc(out, '}');
  }
  pthread_mutex_unlock(&shared_mu);
  return rc;
}

/* ---- what a failure means ---------------------------------------------------- */

/* The fix for a failure that will not go away by itself, or NULL. */
static const char *permanent_fix(const char *msg) {
  if (msg == NULL) return NULL;
  if (strstr(msg, "replication role") || strstr(msg, "REPLICATION attribute") ||
      strstr(msg, "start WAL sender") || strstr(msg, "to use replication slots"))
    return "the role needs the REPLICATION attribute: as a superuser, ALTER ROLE <role> REPLICATION";
  if (strstr(msg, "max_wal_senders"))
    return "PostgreSQL accepts no replication connections: ALTER SYSTEM SET max_wal_senders = 10, then "
           "restart PostgreSQL";
  if (strstr(msg, "max_replication_slots"))
    return "PostgreSQL has no room for a replication slot: ALTER SYSTEM SET max_replication_slots = 10, "
           "then restart PostgreSQL";
  if (strstr(msg, "wal_level"))
    return "logical decoding needs wal_level = logical: ALTER SYSTEM SET wal_level = logical, then "
           "restart PostgreSQL";
  return NULL;
}

static void one_line(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap, "%s", src ? src : "");
  size_t n = strlen(dst);
  while (n > 0 && (dst[n - 1] == '\n' || dst[n - 1] == ' ')) dst[--n] = '\0';
  for (char *p = dst; *p; p++)
    if (*p == '\n') *p = ' ';
}

/* The message of a failure, with its fix when it has one, for the log and
 * /readyz: "<what>: <message>[; fix: <fix>]" with <role> filled in. */
static void describe(char *out, size_t cap, const char *what, const char *msg, const char *role) {
  char m[400];
  one_line(m, sizeof m, msg);
  const char *fix = permanent_fix(m);
  char f[300] = "";
  if (fix) {
    const char *r = strstr(fix, "<role>");
    if (r)
      snprintf(f, sizeof f, "%.*s%s%s", (int)(r - fix), fix, role && *role ? role : "<role>", r + 6);
    else
      snprintf(f, sizeof f, "%s", fix);
  }
  snprintf(out, cap, "%s: %s%s%s", what, m, fix ? "; to fix: " : "", f);
}

/* ---- the connection ------------------------------------------------------------- */

/* libpq keywords for the replication connection: postgres_uri expanded,
 * then replication=database and the session settings the text values are
 * parsed under (times in ISO format and UTC, floats exact), added to the
 * URI's own options. Returns the options string (caller frees). */
static char *conn_params(const sg_config_t *cfg, const char **kw, const char **val) {
  const char *ours = "-c datestyle=ISO -c timezone=UTC -c extra_float_digits=3 -c intervalstyle=postgres";
  char *theirs = NULL;
  PQconninfoOption *o = PQconninfoParse(cfg->postgres_uri, NULL);
  for (PQconninfoOption *p = o; p && p->keyword; p++)
    if (!strcmp(p->keyword, "options") && p->val && *p->val) theirs = strdup(p->val);
  if (o) PQconninfoFree(o);
  char *opts = malloc((theirs ? strlen(theirs) + 1 : 0) + strlen(ours) + 1);
  if (opts) sprintf(opts, "%s%s%s", theirs ? theirs : "", theirs ? " " : "", ours);
  free(theirs);
  int i = 0;
  kw[i] = "dbname", val[i++] = cfg->postgres_uri;
  kw[i] = "replication", val[i++] = "database";
  kw[i] = "options", val[i++] = opts ? opts : ours;
  kw[i] = "fallback_application_name", val[i++] = "spangate capture";
  kw[i] = "connect_timeout", val[i++] = "10";
  kw[i] = NULL, val[i] = NULL;
  return opts;
}

int sg_pgcapture_precheck(const sg_config_t *cfg, sg_buf_t *err) {
  const char *kw[8], *val[8];
  char *opts = conn_params(cfg, kw, val);
  PGconn *pg = PQconnectdbParams(kw, val, 1);
  free(opts);
  char why[600];
  if (pg == NULL || PQstatus(pg) != CONNECTION_OK) {
    const char *m = pg ? PQerrorMessage(pg) : "out of memory";
    describe(why, sizeof why, "PostgreSQL refused a replication connection", m, pg ? PQuser(pg) : NULL);
    int permanent = permanent_fix(m) != NULL;
    sg_buf_puts(err, why);
    PQfinish(pg);
    return permanent ? SG_ECONFIG : SG_EUNAVAIL;
  }
  PGresult *r = PQexec(pg, "SHOW wal_level");
  int rc = 0;
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
    sg_buf_printf(err, "SHOW wal_level failed: %s", PQresultErrorMessage(r));
    rc = SG_EUNAVAIL;
  } else if (strcmp(PQgetvalue(r, 0, 0), "logical") != 0) {
    sg_buf_printf(err,
                  "PostgreSQL runs with wal_level = %s; change capture needs logical: "
                  "ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL "
                  "(or set clickhouse_writes = \"spool\")",
                  PQgetvalue(r, 0, 0));
    rc = SG_ECONFIG;
  }
  PQclear(r);
  PQfinish(pg);
  return rc;
}

static void poll_closed(uv_handle_t *h) { free(h); }

static void unwatch(sg_pgcapture_t *c) {
  if (c->poll == NULL) return;
  uv_close((uv_handle_t *)c->poll, poll_closed);
  c->poll = NULL;
  c->poll_events = 0;
}

static void on_poll(uv_poll_t *h, int status, int events);

/* Watches the connection's socket for events (a fresh handle when fresh is
 * set: the socket may have changed). */
static void watch(sg_pgcapture_t *c, int events, int fresh) {
  if (fresh) unwatch(c);
  if (c->poll == NULL) {
    if (events == 0) return;
    c->poll = malloc(sizeof *c->poll);
    if (c->poll == NULL || uv_poll_init_socket(&c->loop, c->poll, PQsocket(c->conn)) != 0) {
      free(c->poll);
      c->poll = NULL;
      return; /* the connect timeout or the next tick notices */
    }
    c->poll->data = c;
  }
  if (events == c->poll_events) return;
  c->poll_events = events;
  if (events)
    uv_poll_start(c->poll, events, on_poll);
  else
    uv_poll_stop(c->poll);
}

/* What to watch while connected: readable unless paused, writable while
 * libpq has unsent bytes. */
static void rewatch(sg_pgcapture_t *c) {
  int ev = (c->paused && c->phase == P_STREAM ? 0 : UV_READABLE) | (c->flushing ? UV_WRITABLE : 0);
  watch(c, ev, 0);
}

static void drop_conn(sg_pgcapture_t *c) {
  unwatch(c);
  if (c->res) PQclear(c->res);
  c->res = NULL;
  if (c->conn) PQfinish(c->conn);
  c->conn = NULL;
  c->phase = P_IDLE;
  c->flushing = 0;
  c->in_txn = 0;
  for (size_t i = 0; i < c->nrels; i++) sg_cap_rel_free(&c->rels[i]);
  c->nrels = 0;
}

/* The connection or a setup step failed: log (once per distinct cause, or
 * per minute), drop, retry with backoff. */
static void fail(sg_pgcapture_t *c, int state, const char *what, const char *msg, uint64_t retry_ms) {
  char why[600];
  describe(why, sizeof why, what, msg, c->role);
  int repeat = !strcmp(why, c->error);
  drop_conn(c);
  uint64_t now = uv_now(&c->loop);
  if (retry_ms == 0) {
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : RETRY_MIN_MS;
    if (c->backoff_ms > RETRY_MAX_MS) c->backoff_ms = RETRY_MAX_MS;
    retry_ms = c->backoff_ms;
  }
  c->next_try_ms = now + retry_ms;
  if (state == ST_STANDBY) {
    if (c->state != ST_STANDBY)
      sg_info("capture",
              "standing by: %s; another gateway follows slot '%s', this one takes over when "
              "its connection ends (trying every %d s)",
              why, c->cfg->capture_slot, STANDBY_RETRY_MS / 1000);
    set_state(c, ST_STANDBY, NULL);
    return;
  }
  if (!repeat || now - c->fail_log_ms >= 60000) {
    c->fail_log_ms = now;
    if (permanent_fix(msg))
      sg_error("capture", "%s; capture is not running (retrying)", why);
    else
      sg_warn("capture", "%s; retrying in %" PRIu64 " ms", why, retry_ms);
  }
  set_state(c, state, why);
}

static void start_connect(sg_pgcapture_t *c) {
  const char *kw[8], *val[8];
  char *opts = conn_params(c->cfg, kw, val);
  c->conn = PQconnectStartParams(kw, val, 1);
  free(opts);
  if (c->conn == NULL || PQstatus(c->conn) == CONNECTION_BAD) {
    fail(c, ST_CONNECTING, "connecting to PostgreSQL failed",
         c->conn ? PQerrorMessage(c->conn) : "out of memory", 0);
    return;
  }
  PQsetnonblocking(c->conn, 1);
  c->phase = P_CONNECT;
  c->connect_ms = uv_now(&c->loop);
  if (c->state != ST_STANDBY) set_state(c, ST_CONNECTING, c->error[0] ? c->error : NULL);
  watch(c, UV_WRITABLE, 1); /* PQconnectStart's first step wants writability */
}

static void connect_step(sg_pgcapture_t *c) {
  switch (PQconnectPoll(c->conn)) {
  case PGRES_POLLING_READING: watch(c, UV_READABLE, 1); return;
  case PGRES_POLLING_WRITING: watch(c, UV_WRITABLE, 1); return;
  case PGRES_POLLING_FAILED:
    fail(c, ST_CONNECTING, "PostgreSQL refused the replication connection", PQerrorMessage(c->conn), 0);
    return;
  default: break;
  }
  snprintf(c->role, sizeof c->role, "%s", PQuser(c->conn));
  watch(c, UV_READABLE, 1);
  c->phase = P_QUERY;
  c->step = Q_WAL;
  run_step(c);
}

/* Sends sql; the result comes to step_done() (through on_poll). */
static void send_query(sg_pgcapture_t *c, const char *sql) {
  c->connect_ms = uv_now(&c->loop);
  if (PQsendQuery(c->conn, sql) != 1) {
    fail(c, ST_CONNECTING, "sending a setup statement failed", PQerrorMessage(c->conn), 0);
    return;
  }
  int f = PQflush(c->conn);
  c->flushing = f == 1;
  if (f < 0) {
    fail(c, ST_CONNECTING, "sending a setup statement failed", PQerrorMessage(c->conn), 0);
    return;
  }
  rewatch(c);
}

/* ---- setup ---------------------------------------------------------------------- */

static const char *res_err(const PGresult *r, const sg_pgcapture_t *c) {
  const char *m = r ? PQresultErrorMessage(r) : NULL;
  return m && *m ? m : PQerrorMessage(c->conn);
}

static const char *res_state(const PGresult *r) {
  const char *s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  return s ? s : "";
}

static void run_step(sg_pgcapture_t *c) {
  char sql[2048];
  const char *slot = c->cfg->capture_slot, *pub = c->cfg->capture_publication;
  switch (c->step) {
  case Q_WAL: send_query(c, "SHOW wal_level"); return;
  case Q_TABLES:
    send_query(c, "SELECT c.relname, format('%I.%I', n.nspname, c.relname), c.relreplident "
                  "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                  "WHERE c.oid IN (to_regclass('spans'), to_regclass('nodes'))");
    return;
  case Q_IDENTITY:
    /* ALTER TABLE waits for an exclusive lock, and every query on the table
     * queues behind it: give up after 3 s (and try again later) rather
     * than stall ingest behind a long transaction */
    snprintf(sql, sizeof sql, "SET lock_timeout = '3s';");
    if (c->spans_ri != 'f')
      snprintf(sql + strlen(sql), sizeof sql - strlen(sql), "ALTER TABLE %s REPLICA IDENTITY FULL;", c->spans_q);
    if (c->nodes_q[0] && c->nodes_ri != 'f')
      snprintf(sql + strlen(sql), sizeof sql - strlen(sql), "ALTER TABLE %s REPLICA IDENTITY FULL;",
               c->nodes_q);
    snprintf(sql + strlen(sql), sizeof sql - strlen(sql), "RESET lock_timeout");
    sg_info("capture", "setting REPLICA IDENTITY FULL, so that deletes and updates carry the old row: %s",
            sql);
    send_query(c, sql);
    return;
  case Q_PUB:
    snprintf(sql, sizeof sql,
             "SELECT (SELECT count(*) FROM pg_publication WHERE pubname = '%s'), "
             "(SELECT string_agg(format('%%I.%%I', schemaname, tablename), ',') FROM pg_publication_tables "
             "WHERE pubname = '%s')",
             pub, pub);
    send_query(c, sql);
    return;
  case Q_PUB_DDL: {
    /* the tables the publication lacks */
    char want[600] = "";
    const char *tabs[2] = {c->spans_q, c->nodes_q};
    for (int i = 0; i < 2; i++) {
      if (!tabs[i][0]) continue;
      int has = 0;
      for (const char *p = c->pub_tables; (p = strstr(p, tabs[i])) != NULL; p++)
        if ((p == c->pub_tables || p[-1] == ',') && (p[strlen(tabs[i])] == ',' || p[strlen(tabs[i])] == '\0'))
          has = 1;
      if (has) continue;
      snprintf(want + strlen(want), sizeof want - strlen(want), "%s%s", want[0] ? ", " : "", tabs[i]);
    }
    if (!want[0]) {
      c->step = Q_SLOT;
      run_step(c);
      return;
    }
    if (c->pub_exists)
      snprintf(sql, sizeof sql, "ALTER PUBLICATION %s ADD TABLE %s", pub, want);
    else
      snprintf(sql, sizeof sql, "CREATE PUBLICATION %s FOR TABLE %s", pub, want);
    sg_info("capture", "%s", sql);
    send_query(c, sql);
    return;
  }
  case Q_SLOT:
    snprintf(sql, sizeof sql,
             "SELECT coalesce(plugin, ''), (database = current_database())::text, "
             "coalesce(confirmed_flush_lsn::text, '') FROM pg_replication_slots WHERE slot_name = '%s'",
             slot);
    send_query(c, sql);
    return;
  case Q_CREATE_SLOT:
    /* the pre-15 spelling, still accepted: works on every supported server */
    snprintf(sql, sizeof sql, "CREATE_REPLICATION_SLOT %s LOGICAL pgoutput NOEXPORT_SNAPSHOT", slot);
    send_query(c, sql);
    return;
  case Q_START: {
    char lsn[24];
    sg_pgo_lsn_format(c->confirmed, lsn);
    snprintf(sql, sizeof sql,
             "START_REPLICATION SLOT %s LOGICAL %s (proto_version '1', publication_names '%s')", slot, lsn,
             pub);
    send_query(c, sql);
    return;
  }
  }
}

/* The setup statement's result (the last one, or COPY BOTH). */
static void step_done(sg_pgcapture_t *c, PGresult *r) {
  ExecStatusType st = PQresultStatus(r);
  int ok = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
  switch (c->step) {
  case Q_WAL:
    if (!ok) {
      fail(c, ST_FAILING, "SHOW wal_level failed", res_err(r, c), 0);
      return;
    }
    if (strcmp(PQgetvalue(r, 0, 0), "logical") != 0) {
      char m[128];
      snprintf(m, sizeof m, "PostgreSQL runs with wal_level = %s", PQgetvalue(r, 0, 0));
      fail(c, ST_FAILING, "change capture needs wal_level = logical", m, RETRY_MAX_MS);
      return;
    }
    c->step = Q_TABLES;
    break;
  case Q_TABLES:
    if (!ok) {
      fail(c, ST_FAILING, "looking up the spans table failed", res_err(r, c), 0);
      return;
    }
    c->spans_q[0] = c->nodes_q[0] = '\0';
    for (int i = 0; i < PQntuples(r); i++) {
      int spans = !strcmp(PQgetvalue(r, i, 0), "spans");
      snprintf(spans ? c->spans_q : c->nodes_q, sizeof c->spans_q, "%s", PQgetvalue(r, i, 1));
      *(spans ? &c->spans_ri : &c->nodes_ri) = PQgetvalue(r, i, 2)[0];
    }
    if (!c->spans_q[0]) {
      fail(c, ST_FAILING, "no spans table", "the database has no spans table (run `spangate schema --apply`)",
           RETRY_MAX_MS);
      return;
    }
    c->step = (c->spans_ri != 'f' || (c->nodes_q[0] && c->nodes_ri != 'f')) ? Q_IDENTITY : Q_PUB;
    break;
  case Q_IDENTITY:
    if (!ok) {
      fail(c, ST_FAILING,
           "setting REPLICA IDENTITY FULL failed (run it as the tables' owner: ALTER TABLE spans "
           "REPLICA IDENTITY FULL)",
           res_err(r, c), RETRY_MAX_MS);
      return;
    }
    c->step = Q_PUB;
    break;
  case Q_PUB:
    if (!ok) {
      fail(c, ST_FAILING, "looking up the publication failed", res_err(r, c), 0);
      return;
    }
    c->pub_exists = atoi(PQgetvalue(r, 0, 0)) > 0;
    snprintf(c->pub_tables, sizeof c->pub_tables, "%s", PQgetvalue(r, 0, 1));
    c->step = Q_PUB_DDL;
    break;
  case Q_PUB_DDL:
    if (!ok && strcmp(res_state(r), "42710") != 0) { /* 42710: created meanwhile by another gateway */
      fail(c, ST_FAILING, "creating the publication failed", res_err(r, c), RETRY_MAX_MS);
      return;
    }
    c->step = Q_SLOT;
    break;
  case Q_SLOT:
    if (!ok) {
      fail(c, ST_FAILING, "looking up the replication slot failed", res_err(r, c), 0);
      return;
    }
    if (PQntuples(r) == 0) {
      c->step = Q_CREATE_SLOT;
      break;
    }
    if (strcmp(PQgetvalue(r, 0, 0), "pgoutput") != 0 || strcmp(PQgetvalue(r, 0, 1), "true") != 0) {
      char m[300];
      snprintf(m, sizeof m, "slot '%s' exists but is not a pgoutput slot of this database (plugin '%s')",
               c->cfg->capture_slot, PQgetvalue(r, 0, 0));
      fail(c, ST_FAILING, "the replication slot cannot be used", m, RETRY_MAX_MS);
      return;
    }
    {
      sg_lsn_t l;
      if (sg_pgo_lsn_parse(PQgetvalue(r, 0, 2), &l) == 0 && l > c->confirmed) c->confirmed = l;
    }
    c->step = Q_START;
    break;
  case Q_CREATE_SLOT:
    if (!ok) {
      if (!strcmp(res_state(r), "42710")) { /* another gateway was quicker */
        c->step = Q_SLOT;
        break;
      }
      fail(c, ST_FAILING, "creating the replication slot failed", res_err(r, c), RETRY_MAX_MS);
      return;
    }
    {
      sg_lsn_t l;
      if (PQnfields(r) >= 2 && sg_pgo_lsn_parse(PQgetvalue(r, 0, 1), &l) == 0 && l > c->confirmed)
        c->confirmed = l;
      sg_info("capture",
              "created replication slot '%s' (pgoutput) at %s: changes committed from now on "
              "are captured; run `spangate migrate` once for what was there before",
              c->cfg->capture_slot, PQgetvalue(r, 0, 1));
    }
    c->step = Q_SLOT;
    break;
  case Q_START:
    if (st != PGRES_COPY_BOTH) {
      if (!strcmp(res_state(r), "55006")) /* the slot is active for another process */
        fail(c, ST_STANDBY, "the slot is in use", res_err(r, c), STANDBY_RETRY_MS);
      else
        fail(c, ST_FAILING, "START_REPLICATION failed", res_err(r, c), 0);
      return;
    }
    c->phase = P_STREAM;
    c->backoff_ms = 0;
    c->status_ms = uv_now(&c->loop);
    if (c->recv < c->confirmed) c->recv = c->confirmed;
    c->sent_flush = c->confirmed;
    {
      char lsn[24];
      sg_pgo_lsn_format(c->confirmed, lsn);
      sg_info("capture", "following slot '%s' from %s (publication '%s': %s%s%s)", c->cfg->capture_slot, lsn,
              c->cfg->capture_publication, c->spans_q, c->nodes_q[0] ? ", " : "", c->nodes_q);
    }
    set_state(c, ST_STREAMING, NULL);
    process(c);
    return;
  }
  run_step(c);
}

/* ---- confirming ------------------------------------------------------------------ */

static int fifo_push(sg_pgcapture_t *c, int64_t stamp, sg_lsn_t lsn, int64_t commit_us) {
  /* Transactions that wait for the same rows are confirmed together: one
   * entry, so that a run of transactions without rows (other projects,
   * routed away) cannot grow the queue while ClickHouse is away. */
  if (c->fn > 0) {
    pending_t *t = &c->fifo[(c->fhead + c->fn - 1) % c->fcap];
    if (t->stamp == stamp) {
      if (lsn > t->lsn) t->lsn = lsn;
      return 0;
    }
  }
  if (c->fn == c->fcap) {
    size_t cap = c->fcap ? c->fcap * 2 : 256;
    pending_t *f = malloc(cap * sizeof *f);
    if (!f) return SG_ENOMEM;
    for (size_t i = 0; i < c->fn; i++) f[i] = c->fifo[(c->fhead + i) % c->fcap];
    free(c->fifo);
    c->fifo = f;
    c->fcap = cap;
    c->fhead = 0;
  }
  c->fifo[(c->fhead + c->fn) % c->fcap] = (pending_t){stamp, lsn, commit_us};
  c->fn++;
  return 0;
}

static int64_t next_stamp(sg_pgcapture_t *c) {
  int64_t t = now_us();
  if (t <= c->last_stamp) t = c->last_stamp + 1;
  return c->last_stamp = t;
}

/* Appends the rows gathered so far to the spools. 0 when both buffers are
 * empty afterwards; SG_ETOOBIG while a spool is full (the rows wait). */
static int flush_rows(sg_pgcapture_t *c) {
  sg_buf_t *bufs[2] = {&c->rows, &c->nrows};
  sg_chsink_t *sinks[2] = {c->sink, c->nodes_sink};
  for (int i = 0; i < 2; i++) {
    if (bufs[i]->len == 0) continue;
    int64_t stamp = next_stamp(c);
    int rc = sinks[i] ? sg_chsink_append_rows(sinks[i], bufs[i]->data, bufs[i]->len, stamp) : SG_EUNAVAIL;
    if (rc == SG_ETOOBIG) return rc;
    if (rc != 0) {
      /* Not appended: the transactions stay unconfirmed, and the slot sends
       * them again after a reconnect. */
      sg_error("capture", "capture spool: %s; reconnecting to read those changes again", sg_strerror(rc));
      return rc;
    }
    c->pend_stamp = stamp;
    sg_buf_reset(bufs[i]);
  }
  /* every transaction waiting for its rows to be appended has them now */
  for (size_t k = c->fn; k > 0; k--) {
    pending_t *e = &c->fifo[(c->fhead + k - 1) % c->fcap];
    if (e->stamp != -1) break;
    e->stamp = c->pend_stamp;
  }
  return 0;
}

/* Confirms what ClickHouse holds, and tells the server now and then. */
static void confirm(sg_pgcapture_t *c) {
  sg_chsink_stats_t a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  if (c->sink) sg_chsink_stats(c->sink, &a);
  if (c->nodes_sink) sg_chsink_stats(c->nodes_sink, &b);
  int64_t oldest = a.spool_oldest_us;
  if (b.spool_oldest_us && (!oldest || b.spool_oldest_us < oldest)) oldest = b.spool_oldest_us;
  while (c->fn > 0) {
    pending_t *e = &c->fifo[c->fhead];
    if (e->stamp < 0 || (oldest != 0 && e->stamp >= oldest)) break;
    if (e->lsn > c->confirmed) c->confirmed = e->lsn;
    c->fhead = (c->fhead + 1) % c->fcap;
    c->fn--;
  }
  if (c->fn == 0 && !c->in_txn && c->rows.len == 0 && c->nrows.len == 0 && c->recv > c->confirmed)
    c->confirmed = c->recv;
}

static void send_status(sg_pgcapture_t *c, int reply) {
  if (c->phase != P_STREAM) return;
  uint8_t b[SG_PGO_STATUS_LEN];
  sg_lsn_t written = c->recv > c->confirmed ? c->recv : c->confirmed;
  sg_pgo_status_update(b, written, c->confirmed, c->confirmed, now_us() - SG_PGO_EPOCH_US, reply);
  int rc = PQputCopyData(c->conn, (const char *)b, sizeof b);
  if (rc == 0) return; /* libpq's buffer is full: the next tick tries again */
  if (rc < 0) {
    fail(c, ST_CONNECTING, "sending a status update failed", PQerrorMessage(c->conn), 0);
    return;
  }
  int f = PQflush(c->conn);
  if (f < 0) {
    fail(c, ST_CONNECTING, "sending a status update failed", PQerrorMessage(c->conn), 0);
    return;
  }
  c->flushing = f == 1;
  c->status_ms = uv_now(&c->loop);
  c->sent_flush = c->confirmed;
  rewatch(c);
}

static void maybe_status(sg_pgcapture_t *c) {
  uint64_t now = uv_now(&c->loop);
  if (c->phase != P_STREAM) return;
  if (c->confirmed > c->sent_flush && now - c->status_ms >= STATUS_MIN_GAP_MS) send_status(c, 0);
  /* now and then, and asking for the server's position: when nothing is
   * pending that is what gets confirmed, so an idle slot keeps up too */
  else if (now - c->status_ms >= STATUS_EVERY_MS)
    send_status(c, 1);
}

/* ---- changes -> rows ----------------------------------------------------------------- */

static sg_cap_rel_t *rel_find(sg_pgcapture_t *c, uint32_t oid) {
  for (size_t i = 0; i < c->nrels; i++)
    if (c->rels[i].oid == oid) return &c->rels[i];
  return NULL;
}

/* Row-level trouble: logged at most once a second, the rest counted. */
static void row_log(sg_pgcapture_t *c, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void row_log(sg_pgcapture_t *c, int level, const char *fmt, ...) {
  uint64_t now = uv_now(&c->loop);
  if (c->log_ms && now - c->log_ms < 1000) {
    c->log_quiet++;
    return;
  }
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (c->log_quiet)
    sg_log_write(level, "capture", "%s (and %" PRIu64 " more such lines since the last)", line, c->log_quiet);
  else
    sg_log_write(level, "capture", "%s", line);
  c->log_ms = now;
  c->log_quiet = 0;
}

typedef struct {
  char project[37], first[24], last[24], count[24];
  char reason[200];
  const char *params[5];
} gap_t;

static void gap_cb(void *arg, PGresult *res, int err, const char *errmsg) {
  gap_t *g = arg;
  (void)res;
  if (err)
    sg_error("capture",
             "could not record a ClickHouse gap (project %s, created_at µs %s..%s): %s; run "
             "`spangate migrate --project %s` to repair",
             g->project, g->first, g->last, errmsg ? errmsg : sg_strerror(err), g->project);
  free(g);
}

/* A change that cannot be written (its values are not in the stream) is
 * recorded in spangate_ch_gaps, for `spangate migrate` to repair that
 * range of the project from PostgreSQL. */
static void record_gap(sg_pgcapture_t *c, const uint8_t project[16], int64_t first_us, int64_t last_us,
                       const char *reason) {
  atomic_fetch_add(&sg_metrics.capture_unwritable, 1);
  gap_t *g = calloc(1, sizeof *g);
  char p[37];
  sg_uuid_format(project, p);
  row_log(c, SG_LOG_WARN,
          "project %s: %s; recorded as a gap (created_at µs %" PRId64 "..%" PRId64 ") for `spangate migrate`",
          p, reason, first_us, last_us);
  if (!g) {
    sg_error("capture",
             "could not record a ClickHouse gap of project %s: out of memory; run `spangate "
             "migrate --project %s` to repair",
             p, p);
    return;
  }
  memcpy(g->project, p, sizeof p);
  snprintf(g->first, sizeof g->first, "%" PRId64, first_us);
  snprintf(g->last, sizeof g->last, "%" PRId64, last_us);
  snprintf(g->count, sizeof g->count, "1");
  snprintf(g->reason, sizeof g->reason, "capture: %s", reason);
  g->params[0] = g->project;
  g->params[1] = g->first;
  g->params[2] = g->last;
  g->params[3] = g->count;
  g->params[4] = g->reason;
  static const char sql[] =
      "INSERT INTO spangate_ch_gaps (project_id, first_created_at, last_created_at, spans, reason)"
      " VALUES ($1, 'epoch'::timestamptz + $2::int8 * interval '1 microsecond',"
      " 'epoch'::timestamptz + $3::int8 * interval '1 microsecond', $4::int8, $5)";
  if (sg_pg_query(c->pg, sql, 5, g->params, NULL, NULL, gap_cb, g) != 0) gap_cb(g, NULL, SG_EUNAVAIL, NULL);
}

/* One spans row (or tombstone) through routing.lua, ttl.lua and the
 * encoder into the rows buffer. */
static int put_span(sg_pgcapture_t *c, const uint8_t project[16], sg_ch_text_row_t *row) {
  int on = 1;
  sg_lua_route_clickhouse(c->lua, project, &on); /* errors: logged, default on */
  if (!on) {
    atomic_fetch_add(&sg_metrics.capture_skipped, 1);
    return 0;
  }
  int64_t expires = INT64_MAX;
  const char *why = "";
  int rc = 0;
  if (c->has_ttl) {
    sg_span_t s;
    rc = sg_cap_hook_span(row, &s, &why);
    if (rc == SG_ENOMEM) return rc;
    if (rc == 0) {
      double days = -1;
      sg_lua_retention_days(c->lua, project, &s, &days);
      expires = sg_span_expires_us(row->created_at_us, days);
      sg_span_clear(&s);
    }
  }
  if (rc == 0) rc = sg_ch_row_encode_text(&c->target.spans, project, row, expires, &c->rows, &why);
  if (rc == SG_ENOMEM) return rc;
  if (rc != 0) {
    char p[37];
    sg_uuid_format(project, p);
    atomic_fetch_add(&sg_metrics.ch_encode_rejects, 1);
    row_log(c, SG_LOG_ERROR,
            "span %s/%.*s/%.*s cannot be written to ClickHouse (bad %s: %s); it is in "
            "PostgreSQL only",
            p, (int)row->trace_id.n, row->trace_id.p ? row->trace_id.p : "", (int)row->span_id.n,
            row->span_id.p ? row->span_id.p : "", why, sg_strerror(rc));
  }
  return 0;
}

/* The deleted row as a tombstone: same sorting key, is_deleted = 1,
 * deleted_at the delete's commit time, a version above the row's. */
static int put_tombstone(sg_pgcapture_t *c, const uint8_t project[16], sg_ch_text_row_t *row) {
  sg_cap_tombstone(row, c->txn_commit_us);
  return put_span(c, project, row);
}

static int span_change(sg_pgcapture_t *c, const sg_cap_rel_t *rel, const sg_pgo_msg_t *m) {
  uint8_t project[16];
  sg_ch_text_row_t row;
  const char *why = "";
  const sg_pgo_tuple_t *old = m->u.change.old_kind == 'O' ? &m->u.change.old_tuple : NULL;
  int rc;
  if (m->type == 'D') {
    rc = sg_cap_span_row(rel, &m->u.change.old_tuple, NULL, project, &row, &why);
    if (rc == SG_ENOTFOUND || rc == SG_EINVAL) {
      /* without REPLICA IDENTITY FULL only the key: no created_at, no range */
      int64_t lo = row.created_at_us ? row.created_at_us : SG_CH_TIME_MIN_US;
      int64_t hi = row.created_at_us ? row.created_at_us : SG_CH_TIME_MAX_US;
      char reason[200];
      snprintf(reason, sizeof reason,
               "a deleted span's %s is not in the stream (table %s has REPLICA "
               "IDENTITY %c, not FULL)",
               why, rel->name, rel->replident);
      record_gap(c, project, lo, hi, reason);
      return 0;
    }
    return rc ? rc : put_tombstone(c, project, &row);
  }
  rc = sg_cap_span_row(rel, &m->u.change.new_tuple, old, project, &row, &why);
  if (rc == SG_ENOTFOUND) {
    char reason[200];
    snprintf(reason, sizeof reason,
             "an updated span's unchanged column %s is not in the stream (table %s "
             "has REPLICA IDENTITY %c, not FULL)",
             why, rel->name, rel->replident);
    int64_t at = row.created_at_us ? row.created_at_us : SG_CH_TIME_MIN_US;
    record_gap(c, project, at, row.created_at_us ? at : SG_CH_TIME_MAX_US, reason);
    return 0;
  }
  if (rc == SG_EINVAL) {
    char p[37];
    sg_uuid_format(project, p);
    atomic_fetch_add(&sg_metrics.ch_encode_rejects, 1);
    row_log(c, SG_LOG_ERROR,
            "a span of project %s cannot be written to ClickHouse (bad %s); it is in "
            "PostgreSQL only",
            p, why);
    return 0;
  }
  if (rc != 0) return rc;
  if (m->type == 'U' && old && sg_cap_span_key_moved(rel, old, &m->u.change.new_tuple)) {
    /* the row moved to another sorting key: the old one is deleted */
    uint8_t oproject[16];
    sg_ch_text_row_t orow;
    if (sg_cap_span_row(rel, old, NULL, oproject, &orow, &why) == 0 &&
        (rc = put_tombstone(c, oproject, &orow)) != 0)
      return rc;
  }
  return put_span(c, project, &row);
}

static int open_nodes_sink(sg_pgcapture_t *c);

static int node_change(sg_pgcapture_t *c, const sg_cap_rel_t *rel, const sg_pgo_msg_t *m) {
  if (!c->nodes_sink && open_nodes_sink(c) != 0) return SG_EIO;
  uint8_t project[16];
  const char *why = "";
  const sg_pgo_tuple_t *old = m->u.change.old_kind == 'O' ? &m->u.change.old_tuple : NULL;
  int del = m->type == 'D';
  const sg_pgo_tuple_t *tup = del ? &m->u.change.old_tuple : &m->u.change.new_tuple;
  size_t before = c->nrows.len;
  int rc =
      sg_cap_node_row(&c->target.nodes, rel, tup, del ? NULL : old, del, c->txn_commit_us, &c->nrows, project,
                      &why);
  if (rc == SG_ENOMEM) return rc;
  if (rc != 0) {
    char reason[200];
    snprintf(reason, sizeof reason,
             "a node's %s is not in the stream or not valid (table %s, REPLICA "
             "IDENTITY %c); `spangate migrate` copies nodes again",
             why, rel->name, rel->replident);
    row_log(c, SG_LOG_WARN, "%s", reason);
    atomic_fetch_add(&sg_metrics.capture_unwritable, 1);
    return 0;
  }
  int on = 1;
  sg_lua_route_clickhouse(c->lua, project, &on);
  if (!on) {
    c->nrows.len = before;
    c->nrows.data[before] = '\0';
    atomic_fetch_add(&sg_metrics.capture_skipped, 1);
  }
  return 0;
}

/* One pgoutput message. 0, or an error that ends the connection (the
 * unconfirmed changes come again). */
static int handle_message(sg_pgcapture_t *c, const uint8_t *data, size_t len) {
  sg_pgo_msg_t m;
  int rc = sg_pgo_parse(data, len, &m, &c->scratch);
  if (rc != 0) {
    sg_error("capture", "a pgoutput message of %zu bytes (type '%c') does not parse: %s", len,
             len ? data[0] : '?', sg_strerror(rc));
    return rc;
  }
  switch (m.type) {
  case 'B':
    c->in_txn = 1;
    c->txn_commit_us = m.u.begin.commit_time + SG_PGO_EPOCH_US;
    return 0;
  case 'C':
    c->in_txn = 0;
    atomic_fetch_add(&sg_metrics.capture_transactions, 1);
    if (c->rows.len + c->nrows.len >= c->flush_bytes) (void)flush_rows(c); /* a full spool: later */
    return fifo_push(c, (c->rows.len || c->nrows.len) ? -1 : c->last_stamp, m.u.commit.end_lsn,
                     m.u.commit.commit_time + SG_PGO_EPOCH_US);
  case 'R': {
    sg_cap_rel_t *r = rel_find(c, m.u.rel.oid);
    if (!r) {
      if (c->nrels == c->caprels) {
        size_t cap = c->caprels ? c->caprels * 2 : 4;
        sg_cap_rel_t *n = realloc(c->rels, cap * sizeof *n);
        if (!n) return SG_ENOMEM;
        c->rels = n;
        c->caprels = cap;
      }
      r = &c->rels[c->nrels++];
      memset(r, 0, sizeof *r);
    }
    char why[200];
    rc = sg_cap_rel_set(r, &m, why, sizeof why);
    if (rc == SG_EINVAL) {
      sg_error("capture", "%s: its changes cannot be captured (each is counted and logged)", why);
      r->kind = SG_CAP_BROKEN;
      return 0;
    }
    if (rc != 0) return rc;
    if (r->kind != SG_CAP_OTHER && r->replident != 'f')
      sg_warn("capture",
              "table %s has REPLICA IDENTITY %c, not FULL: its deletes and some updates "
              "cannot be captured whole (they are recorded as gaps); ALTER TABLE %s REPLICA "
              "IDENTITY FULL",
              r->name, r->replident, r->name);
    return 0;
  }
  case 'I':
  case 'U':
  case 'D': {
    const sg_cap_rel_t *r = rel_find(c, m.u.change.rel);
    if (r == NULL) {
      sg_error("capture", "a change of relation %u came before its Relation message", m.u.change.rel);
      return SG_EPARSE;
    }
    if (r->kind == SG_CAP_OTHER) return 0;
    if (r->kind == SG_CAP_BROKEN) {
      atomic_fetch_add(&sg_metrics.capture_unwritable, 1);
      row_log(c, SG_LOG_ERROR, "a change of table %s is not captured: the table lacks a column ClickHouse "
                               "rows need", r->name);
      return 0;
    }
    atomic_fetch_add(&sg_metrics.capture_changes[m.type == 'I'   ? OP_INSERT
                                                 : m.type == 'U' ? OP_UPDATE
                                                                 : OP_DELETE],
                     1);
    rc = r->kind == SG_CAP_SPANS ? span_change(c, r, &m) : node_change(c, r, &m);
    if (rc == 0 && c->rows.len + c->nrows.len >= 4 * c->flush_bytes) (void)flush_rows(c);
    return rc;
  }
  case 'T':
    for (uint32_t i = 0; i < m.u.truncate.nrels; i++) {
      const sg_cap_rel_t *r = rel_find(c, sg_pgo_truncate_oid(&m, i));
      if (!r || r->kind == SG_CAP_OTHER) continue;
      atomic_fetch_add(&sg_metrics.capture_changes[OP_TRUNCATE], 1);
      sg_warn("capture",
              "TRUNCATE of %s is not mirrored: ClickHouse keeps its rows (a truncate would "
              "also empty projects that live only in ClickHouse); to empty it there too: "
              "TRUNCATE TABLE %s.%s in ClickHouse",
              r->name, c->cfg->clickhouse_database, r->name);
    }
    return 0;
  default: return 0; /* Origin, Type, Message: nothing to write */
  }
}

/* ---- the stream ---------------------------------------------------------------------- */

static void stream_lost(sg_pgcapture_t *c, const char *why) {
  /* rows gathered so far go to the spool if they can; unconfirmed changes come again anyway */
  (void)flush_rows(c);
  fail(c, ST_CONNECTING, "the replication stream ended", why, 0);
}

/* The capture spool is full: stop reading until its rows are appended (the
 * tick retries; the slot keeps the changes meanwhile). */
static void pause_reading(sg_pgcapture_t *c) {
  if (!c->paused)
    sg_warn("capture", "the capture spool is full (spool_max_bytes): reading paused until ClickHouse "
                       "takes rows (the slot keeps the changes)");
  c->paused = 1;
  /* An empty spool that still refuses them: one change's rows are larger
   * than spool_max_bytes, and waiting will not help. Loud, and nothing is
   * confirmed past it: the slot keeps it until spool_max_bytes is raised. */
  sg_chsink_stats_t a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  if (c->sink) sg_chsink_stats(c->sink, &a);
  if (c->nodes_sink) sg_chsink_stats(c->nodes_sink, &b);
  if (a.spool_records + b.spool_records == 0 && c->state != ST_FAILING) {
    char m[300];
    snprintf(m, sizeof m, "%zu bytes of rows do not fit in spool_max_bytes (%zu) even with the spool empty: "
                          "raise spool_max_bytes",
             c->rows.len + c->nrows.len, c->cfg->spool_max_bytes);
    sg_error("capture", "%s; capture waits (nothing is lost: the slot keeps the changes)", m);
    set_state(c, ST_FAILING, m);
  }
}

/* Handles what libpq has buffered, up to a burst; then flushes the rows,
 * confirms, and schedules itself again if more is waiting. */
static void process(sg_pgcapture_t *c) {
  if (c->phase != P_STREAM) return;
  int n = 0;
  while (!c->paused && n < BURST_MESSAGES) {
    char *buf = NULL;
    int len = PQgetCopyData(c->conn, &buf, 1);
    if (len == 0) break;
    if (len == -1) { /* the server ended the COPY: its reason is in the result */
      PGresult *r = PQgetResult(c->conn);
      char why[400];
      one_line(why, sizeof why,
               r && PQresultErrorMessage(r)[0] ? PQresultErrorMessage(r) : "the server ended the stream");
      PQclear(r);
      stream_lost(c, why);
      return;
    }
    if (len < 0) {
      stream_lost(c, PQerrorMessage(c->conn));
      return;
    }
    n++;
    sg_pgo_copy_t f;
    int rc = sg_pgo_copy_parse(buf, (size_t)len, &f);
    if (rc == 0 && f.kind == 'w') {
      rc = handle_message(c, f.data, f.len);
      if (rc == 0 && !c->in_txn && f.wal_end > c->recv) c->recv = f.wal_end;
    } else if (rc == 0 && f.kind == 'k') {
      if (!c->in_txn && f.wal_end > c->recv) c->recv = f.wal_end;
      if (f.reply) {
        confirm(c);
        send_status(c, 0);
        if (c->phase != P_STREAM) {
          PQfreemem(buf);
          return;
        }
      }
    } else if (rc != 0) {
      sg_error("capture", "a replication message of %d bytes (kind '%c') does not parse", len, f.kind);
    }
    PQfreemem(buf);
    if (rc != 0) {
      stream_lost(c, sg_strerror(rc));
      return;
    }
    if (c->rows.len + c->nrows.len >= 4 * c->flush_bytes && flush_rows(c) == SG_ETOOBIG) pause_reading(c);
  }
  int rc = flush_rows(c);
  if (rc == SG_ETOOBIG) {
    pause_reading(c);
  } else if (rc != 0) {
    stream_lost(c, "the capture spool failed");
    return;
  }
  confirm(c);
  maybe_status(c);
  rewatch(c);
  if (!c->paused && n >= BURST_MESSAGES) uv_timer_start(&c->kick, kick_cb, 0, 0);
}

static void kick_cb(uv_timer_t *t) { process(t->data); }

static void on_poll(uv_poll_t *h, int status, int events) {
  sg_pgcapture_t *c = h->data;
  if (c->conn == NULL) return;
  if (c->phase == P_CONNECT) {
    connect_step(c);
    return;
  }
  if (status < 0) events = UV_READABLE; /* let libpq find out what happened */
  if (events & UV_WRITABLE) {
    int f = PQflush(c->conn);
    if (f < 0) {
      fail(c, ST_CONNECTING, "writing to PostgreSQL failed", PQerrorMessage(c->conn), 0);
      return;
    }
    c->flushing = f == 1;
    rewatch(c);
  }
  if (!(events & UV_READABLE)) return;
  if (PQconsumeInput(c->conn) != 1) {
    if (c->phase == P_STREAM)
      stream_lost(c, PQerrorMessage(c->conn));
    else
      fail(c, ST_CONNECTING, "the connection to PostgreSQL was lost", PQerrorMessage(c->conn), 0);
    return;
  }
  if (c->phase == P_STREAM) {
    process(c);
    return;
  }
  /* a setup statement: collect its results; COPY BOTH comes alone */
  while (c->conn && !PQisBusy(c->conn)) {
    PGresult *r = PQgetResult(c->conn);
    if (r == NULL) {
      PGresult *last = c->res;
      c->res = NULL;
      if (last == NULL) {
        fail(c, ST_CONNECTING, "a setup statement returned nothing", PQerrorMessage(c->conn), 0);
        return;
      }
      step_done(c, last);
      PQclear(last);
      return;
    }
    if (PQresultStatus(r) == PGRES_COPY_BOTH) {
      if (c->res) PQclear(c->res);
      c->res = NULL;
      step_done(c, r);
      PQclear(r);
      return;
    }
    /* keep the first error of a multi-statement string, else the last result */
    if (c->res && PQresultStatus(c->res) == PGRES_FATAL_ERROR)
      PQclear(r);
    else {
      if (c->res) PQclear(c->res);
      c->res = r;
    }
  }
}

/* ---- slot statistics -------------------------------------------------------------- */

static void stats_cb(void *arg, PGresult *res, int err, const char *errmsg) {
  sg_pgcapture_t *c = arg;
  c->stats_inflight = 0;
  (void)errmsg;
  if (err || res == NULL || PQntuples(res) != 1) return;
  c->lag_bytes = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
  c->retained_bytes = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
  uint64_t now = uv_now(&c->loop);
  if (c->cfg->capture_max_retained_wal > 0 &&
      (uint64_t)c->retained_bytes > c->cfg->capture_max_retained_wal &&
      (c->retained_warn_ms == 0 || now - c->retained_warn_ms >= RETAINED_WARN_EVERY_MS)) {
    c->retained_warn_ms = now;
    sg_warn("capture",
            "replication slot '%s' holds back %.1f MiB of WAL (capture_max_retained_wal %.1f "
            "MiB; capture is %s, lag %.1f MiB): PostgreSQL keeps that WAL until capture "
            "confirms it. If no gateway will follow this slot again, drop it, or it fills "
            "the disk: SELECT pg_drop_replication_slot('%s')",
            c->cfg->capture_slot, (double)c->retained_bytes / 1048576.0,
            (double)c->cfg->capture_max_retained_wal / 1048576.0, state_names[c->state],
            (double)c->lag_bytes / 1048576.0, c->cfg->capture_slot);
  }
}

static void ask_stats(sg_pgcapture_t *c) {
  static const char sql[] =
      "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::int8, "
      "coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::int8 "
      "FROM pg_replication_slots WHERE slot_name = $1";
  const char *params[1] = {c->cfg->capture_slot};
  if (sg_pg_query(c->pg, sql, 1, params, NULL, NULL, stats_cb, c) == 0) c->stats_inflight = 1;
}

/* ---- sinks ---------------------------------------------------------------------------- */

/* Empties a capture spool directory left by an earlier run, through the
 * spool's own lock and acknowledgements: each row in it is unconfirmed (or
 * already in ClickHouse), so the slot sends it again, in order; replaying
 * the old copy after the new one could put an older row last. */
static int discard_spool(const char *dir, sg_buf_t *err) {
  sg_spool_opts_t o;
  memset(&o, 0, sizeof o);
  o.fsync = SG_SPOOL_FSYNC_NEVER;
  sg_spool_t *sp;
  int rc = sg_spool_open(dir, &o, &sp);
  if (rc != 0) {
    sg_buf_printf(err, "capture spool %s: %s%s", dir, sg_strerror(rc),
                  rc == SG_EBUSY ? " (another process uses it: give each gateway its own spool_dir)" : "");
    return rc;
  }
  sg_spool_stats_t st;
  sg_spool_stats(sp, &st);
  (void)sg_spool_seal(sp);
  sg_spool_seg_t *seg;
  while (sg_spool_next_segment(sp, &seg) == 0)
    if (sg_spool_ack(sp, seg) != 0) {
      sg_spool_release(sp, seg);
      break;
    }
  if (st.records)
    sg_info("capture",
            "discarded %" PRIu64 " records (%" PRIu64 " bytes) an earlier run spooled but had not "
            "confirmed: the slot sends those changes again",
            st.records, st.bytes);
  sg_spool_close(sp);
  return 0;
}

static int open_sink(sg_pgcapture_t *c, sg_buf_t *err) {
  if (discard_spool(c->spool_dir, err) != 0) return SG_EIO;
  sg_chsink_opts_t o = {c->spool_dir, NULL, NULL, 1, c->cfg->capture_flush_interval_ms};
  c->sink = sg_chsink_open(&c->loop, c->cfg, c->ch, &c->target, &o, err);
  return c->sink ? 0 : SG_EIO;
}

static int open_nodes_sink(sg_pgcapture_t *c) {
  sg_buf_t err = SG_BUF_INIT, sql = SG_BUF_INIT;
  int rc = discard_spool(c->nodes_dir, &err);
  if (rc == 0 && sg_cap_nodes_insert_sql(&c->target.nodes, c->cfg->clickhouse_database, &sql) == 0) {
    char tag[32];
    snprintf(tag, sizeof tag, "nodes/%s", (c->target.nodes.flags & SG_CH_LAYOUT_DT64) ? "dt64" : "us");
    sg_chsink_opts_t o = {c->nodes_dir, sql.data, tag, 1, c->cfg->capture_flush_interval_ms};
    c->nodes_sink = sg_chsink_open(&c->loop, c->cfg, c->ch, &c->target, &o, &err);
  }
  if (!c->nodes_sink)
    sg_error("capture", "the nodes spool cannot be opened: %s", err.data ? err.data : "out of memory");
  sg_buf_free(&err);
  sg_buf_free(&sql);
  return c->nodes_sink ? 0 : SG_EIO;
}

/* ---- the thread ---------------------------------------------------------------------- */

static void tick_cb(uv_timer_t *t) {
  sg_pgcapture_t *c = t->data;
  if (c->stopping) return;
  uint64_t now = uv_now(&c->loop);
  if (!c->have_target) {
    if (now - c->version_try_ms >= VERSION_RETRY_MS || c->version_try_ms == 0) {
      c->version_try_ms = now;
      sg_buf_t err = SG_BUF_INIT;
      /* Blocking, on this thread only: nothing is streaming yet. The schema
       * is the workers' to create (chsink.c); this only reads it. */
      if (sg_ch_setup(c->cfg, 0, &c->target, NULL, &err) == 0) {
        sg_buf_reset(&err);
        if (open_sink(c, &err) == 0) {
          c->have_target = 1;
          sg_info("capture", "ClickHouse %s reached: capture starts", c->target.version_text);
        } else {
          set_state(c, ST_FAILING, err.data);
          sg_error("capture", "%s", err.data);
        }
      } else {
        set_state(c, ST_CONNECTING, err.data);
      }
      sg_buf_free(&err);
    }
    publish(c);
    return;
  }
  switch (c->phase) {
  case P_IDLE:
    if (now >= c->next_try_ms) start_connect(c);
    break;
  case P_CONNECT:
    if (now - c->connect_ms > CONNECT_TIMEOUT_MS)
      fail(c, ST_CONNECTING, "connecting to PostgreSQL", "no answer within 15 s", 0);
    break;
  case P_QUERY:
    if (now - c->connect_ms > QUERY_TIMEOUT_MS)
      fail(c, ST_CONNECTING, "setting up capture", "a setup statement got no answer within 120 s", 0);
    break;
  case P_STREAM:
    if (c->paused) {
      int rc = flush_rows(c);
      if (rc == 0) {
        c->paused = 0;
        if (c->state == ST_FAILING) set_state(c, ST_STREAMING, NULL);
        sg_info("capture", "the capture spool has room again: reading resumes");
        process(c); /* confirms and reports too */
        break;
      }
      if (rc != SG_ETOOBIG) {
        stream_lost(c, "the capture spool failed");
        break;
      }
      pause_reading(c); /* still full; says so if it never will have room */
    }
    confirm(c); /* while paused too: what ClickHouse took is confirmed, the server hears from us */
    maybe_status(c);
    break;
  }
  if (!c->stats_inflight && now - c->stats_ms >= STATS_EVERY_MS && sg_pg_pool_ready(c->pg)) {
    c->stats_ms = now;
    ask_stats(c);
  }
  publish(c);
}

static void handle_closed(uv_handle_t *h) { (void)h; }

static void wake_cb(uv_async_t *a) {
  sg_pgcapture_t *c = a->data;
  if (atomic_exchange(&c->reload_req, 0) && !c->stopping) {
    sg_buf_t err = SG_BUF_INIT;
    sg_lua_rt_t *fresh = sg_lua_rt_new(c->cfg, &err);
    if (fresh) {
      sg_lua_rt_free(c->lua);
      c->lua = fresh;
      c->has_ttl = (sg_lua_rt_hooks(c->lua) & SG_LUA_HOOK_RETENTION) != 0;
    } else {
      sg_error("capture", "script reload failed, the previous scripts keep running: %s",
               err.data ? err.data : "out of memory");
    }
    sg_buf_free(&err);
  }
  if (!atomic_load(&c->stop_req) || c->stopping) return;
  c->stopping = 1;
  (void)flush_rows(c); /* not needed for safety (the slot has them), but keeps ClickHouse closer */
  if (c->phase == P_STREAM) {
    confirm(c);
    send_status(c, 0);
  }
  drop_conn(c);
  /* the client first: that cancels an insert in flight from a spool's memory */
  sg_ch_client_close(c->ch);
  c->ch = NULL;
  sg_chsink_close(c->sink);
  c->sink = NULL;
  sg_chsink_close(c->nodes_sink);
  c->nodes_sink = NULL;
  sg_pg_pool_close(c->pg);
  c->pg = NULL;
  set_state(c, ST_OFF, NULL);
  publish(c);
  uv_close((uv_handle_t *)&c->tick, handle_closed);
  uv_close((uv_handle_t *)&c->kick, handle_closed);
  uv_close((uv_handle_t *)&c->wake, handle_closed);
}

static void thread_main(void *arg) {
  sg_pgcapture_t *c = arg;
  uv_run(&c->loop, UV_RUN_DEFAULT);
}

int sg_pgcapture_start(const sg_config_t *cfg, const sg_ch_target_t *target, sg_pgcapture_t **out,
                       sg_buf_t *err) {
  sg_pgcapture_t *c = calloc(1, sizeof *c);
  if (!c) return SG_ENOMEM;
  c->cfg = cfg;
  snprintf(c->spool_dir, sizeof c->spool_dir, "%s/capture", cfg->spool_dir);
  snprintf(c->nodes_dir, sizeof c->nodes_dir, "%s/capture-nodes", cfg->spool_dir);
  c->lua = sg_lua_rt_new(cfg, err);
  if (!c->lua) {
    free(c);
    return SG_ESCRIPT;
  }
  c->has_ttl = (sg_lua_rt_hooks(c->lua) & SG_LUA_HOOK_RETENTION) != 0;
  c->flush_bytes = ROWS_FLUSH_BYTES;
  if (cfg->spool_max_bytes > 0 && cfg->spool_max_bytes / 8 < c->flush_bytes)
    c->flush_bytes = cfg->spool_max_bytes / 8;
  uv_loop_init(&c->loop);
  sg_pg_pool_opts_t po;
  memset(&po, 0, sizeof po);
  po.max_queue = 1000;
  c->pg = sg_pg_pool_new(&c->loop, cfg->postgres_uri, 1, &po);
  c->ch = c->pg ? sg_ch_client_from_config(&c->loop, cfg) : NULL;
  if (!c->ch) {
    if (c->pg) {
      sg_pg_pool_close(c->pg);
      uv_run(&c->loop, UV_RUN_DEFAULT);
      c->pg = NULL;
    }
    sg_buf_puts(err, "capture: PostgreSQL pool or ClickHouse client: out of memory or a bad postgres_uri");
    sg_lua_rt_free(c->lua);
    uv_loop_close(&c->loop);
    free(c);
    return SG_ENOMEM;
  }
  if (target) {
    c->target = *target;
    if (open_sink(c, err) != 0) {
      sg_ch_client_close(c->ch);
      sg_pg_pool_close(c->pg);
      uv_run(&c->loop, UV_RUN_DEFAULT);
      uv_loop_close(&c->loop);
      sg_lua_rt_free(c->lua);
      free(c);
      return SG_ECONFIG;
    }
    c->have_target = 1;
  }
  uv_timer_init(&c->loop, &c->tick);
  c->tick.data = c;
  uv_timer_init(&c->loop, &c->kick);
  c->kick.data = c;
  uv_async_init(&c->loop, &c->wake, wake_cb);
  c->wake.data = c;
  uv_timer_start(&c->tick, tick_cb, 0, TICK_MS);
  pthread_mutex_lock(&shared_mu);
  memset(&shared, 0, sizeof shared);
  shared.running = 1;
  shared.state = ST_CONNECTING;
  snprintf(shared.slot, sizeof shared.slot, "%s", cfg->capture_slot);
  pthread_mutex_unlock(&shared_mu);
  set_state(c, ST_CONNECTING, NULL);
  if (uv_thread_create(&c->thread, thread_main, c) != 0) {
    sg_buf_puts(err, "capture: cannot start its thread");
    return SG_ENOMEM; /* the process exits */
  }
  *out = c;
  return 0;
}

void sg_pgcapture_reload(sg_pgcapture_t *c) {
  if (!c) return;
  atomic_store(&c->reload_req, 1);
  uv_async_send(&c->wake);
}

void sg_pgcapture_stop(sg_pgcapture_t *c) {
  if (!c) return;
  atomic_store(&c->stop_req, 1);
  uv_async_send(&c->wake);
  uv_thread_join(&c->thread);
  if (uv_loop_close(&c->loop) != 0) sg_warn("capture", "capture loop closed with handles open");
  for (size_t i = 0; i < c->nrels; i++) sg_cap_rel_free(&c->rels[i]);
  free(c->rels);
  free(c->fifo);
  sg_pgo_scratch_free(&c->scratch);
  sg_buf_free(&c->rows);
  sg_buf_free(&c->nrows);
  sg_lua_rt_free(c->lua);
  pthread_mutex_lock(&shared_mu);
  shared.running = 0;
  pthread_mutex_unlock(&shared_mu);
  atomic_store(&sg_metrics.capture_state, ST_OFF);
  free(c);
}
