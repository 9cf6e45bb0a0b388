#include "metrics.h"

#include <stdio.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

sg_metrics_t sg_metrics;

/* Script metrics. Entries [0, lua_count) are immutable once published
 * (release store of lua_count after the entry is written); registration
 * takes the mutex, lookups of known names by the workers are cached on their
 * side, and rendering needs no lock. Values are doubles kept as their bits
 * in an atomic, added to by compare-and-swap. */
#define LUA_NAME_MAX (sizeof SG_LUA_USER_PREFIX + 130)
typedef struct {
  char name[LUA_NAME_MAX]; /* exported name, prefix included */
  char kind;
  _Atomic uint64_t bits;
} lua_user_t;

static lua_user_t lua_user[SG_LUA_USER_MAX];
static _Atomic int lua_count;
static _Atomic int lua_refusal_logged;
static pthread_mutex_t lua_mu = PTHREAD_MUTEX_INITIALIZER;

static void sanitise(const char *name, char *out, size_t cap) {
  size_t n = strlen(SG_LUA_USER_PREFIX);
  memcpy(out, SG_LUA_USER_PREFIX, n);
  /* The prefix makes a leading digit harmless; colons are for recording rules. */
  for (const char *p = name; *p && n + 1 < cap; p++) {
    char c = *p;
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    out[n++] = ok ? c : '_';
  }
  out[n] = '\0';
}

int sg_metrics_lua_slot(const char *name, char kind) {
  char full[LUA_NAME_MAX];
  sanitise(name, full, sizeof full);
  pthread_mutex_lock(&lua_mu);
  int n = atomic_load_explicit(&lua_count, memory_order_relaxed), slot = -1;
  for (int i = 0; i < n; i++)
    if (strcmp(lua_user[i].name, full) == 0) {
      slot = lua_user[i].kind == kind ? i : -1;
      goto out;
    }
  if (n < SG_LUA_USER_MAX) {
    memcpy(lua_user[n].name, full, strlen(full) + 1);
    lua_user[n].kind = kind;
    atomic_store_explicit(&lua_user[n].bits, 0, memory_order_relaxed);
    atomic_store_explicit(&lua_count, n + 1, memory_order_release);
    slot = n;
  }
out:
  pthread_mutex_unlock(&lua_mu);
  if (slot >= 0) return slot;
  atomic_fetch_add_explicit(&sg_metrics.lua_user_dropped, 1, memory_order_relaxed);
  return atomic_exchange(&lua_refusal_logged, 1) ? -1 : -2;
}

void sg_metrics_lua_add(int slot, double delta) {
  if (slot < 0 || slot >= SG_LUA_USER_MAX) return;
  _Atomic uint64_t *b = &lua_user[slot].bits;
  uint64_t old = atomic_load_explicit(b, memory_order_relaxed), nw;
  do {
    double v;
    memcpy(&v, &old, sizeof v);
    v += delta;
    memcpy(&nw, &v, sizeof nw);
  } while (!atomic_compare_exchange_weak_explicit(b, &old, nw, memory_order_relaxed,
                                                  memory_order_relaxed));
}

static void render_lua_user(sg_buf_t *o) {
  int n = atomic_load_explicit(&lua_count, memory_order_acquire);
  for (int i = 0; i < n; i++) {
    uint64_t bits = atomic_load_explicit(&lua_user[i].bits, memory_order_relaxed);
    double v;
    memcpy(&v, &bits, sizeof v);
    const char *name = lua_user[i].name;
    sg_buf_printf(o, "# HELP %s Script metric (gw.metrics.%s), summed over workers.\n"
                     "# TYPE %s %s\n%s %.17g\n",
                  name, lua_user[i].kind == 'c' ? "incr" : "gauge", name,
                  lua_user[i].kind == 'c' ? "counter" : "gauge", name, v);
  }
}

static const int statuses[SG_METRIC_NSTATUS - 1] = {SG_METRIC_STATUSES};
/* Upper bounds in seconds of the latency histogram buckets. */
static const double bounds[SG_METRIC_NBUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                  0.05,   0.1,   0.25,   0.5,   1,    2.5,
                                                  5,      10};
/* Route labels: [0, route_count) are immutable once published (release
 * store of route_count after the entry is written), as for script metrics. */
static const char *route_names[SG_METRIC_MAX_ROUTES] = {"other"};
static _Atomic int route_count = 1;
static pthread_mutex_t route_mu = PTHREAD_MUTEX_INITIALIZER;

int sg_metrics_route_slot(const char *label) {
  pthread_mutex_lock(&route_mu);
  int n = atomic_load_explicit(&route_count, memory_order_relaxed), slot = SG_METRIC_ROUTE_OTHER;
  for (int i = 0; i < n; i++)
    if (strcmp(route_names[i], label) == 0) {
      slot = i;
      goto out;
    }
  if (n < SG_METRIC_MAX_ROUTES) {
    route_names[n] = label;
    atomic_store_explicit(&route_count, n + 1, memory_order_release);
    slot = n;
  }
out:
  pthread_mutex_unlock(&route_mu);
  return slot;
}

void sg_metrics_observe(int route, int status, uint64_t duration_ns) {
  if (route < 0 || route >= atomic_load_explicit(&route_count, memory_order_acquire))
    route = SG_METRIC_ROUTE_OTHER;
  int si = SG_METRIC_NSTATUS - 1;
  for (int i = 0; i < SG_METRIC_NSTATUS - 1; i++)
    if (statuses[i] == status) { si = i; break; }
  atomic_fetch_add_explicit(&sg_metrics.requests[route][si], 1, memory_order_relaxed);
  double s = (double)duration_ns / 1e9;
  for (int b = 0; b < SG_METRIC_NBUCKETS; b++)
    if (s <= bounds[b]) {
      atomic_fetch_add_explicit(&sg_metrics.latency_bucket[route][b], 1, memory_order_relaxed);
      break;
    }
  atomic_fetch_add_explicit(&sg_metrics.latency_sum_us[route], duration_ns / 1000,
                            memory_order_relaxed);
  atomic_fetch_add_explicit(&sg_metrics.latency_count[route], 1, memory_order_relaxed);
}

void sg_metrics_grpc_observe(int code, uint64_t duration_ns) {
  if (code < 0 || code >= SG_METRIC_GRPC_CODES) code = 2; /* UNKNOWN */
  atomic_fetch_add_explicit(&sg_metrics.grpc_requests[code], 1, memory_order_relaxed);
  double s = (double)duration_ns / 1e9;
  for (int b = 0; b < SG_METRIC_NBUCKETS; b++)
    if (s <= bounds[b]) {
      atomic_fetch_add_explicit(&sg_metrics.grpc_latency_bucket[b], 1, memory_order_relaxed);
      break;
    }
  atomic_fetch_add_explicit(&sg_metrics.grpc_latency_sum_us, duration_ns / 1000, memory_order_relaxed);
  atomic_fetch_add_explicit(&sg_metrics.grpc_latency_count, 1, memory_order_relaxed);
}

void sg_metrics_ch_endpoint_names(const char *const *names, size_t n) {
  static _Atomic int claimed;
  int no = 0;
  if (n == 0 || !atomic_compare_exchange_strong(&claimed, &no, 1)) return;
  if (n > SG_METRICS_CH_ENDPOINTS) n = SG_METRICS_CH_ENDPOINTS;
  for (size_t i = 0; i < n; i++)
    snprintf(sg_metrics.ch_ep_name[i], sizeof sg_metrics.ch_ep_name[i], "%s", names[i]);
  atomic_store_explicit(&sg_metrics.ch_ep_count, (int)n, memory_order_release);
}

/* One labelled series per ClickHouse endpoint. */
static void endpoint_series(sg_buf_t *o, const char *name, const char *type, const char *help,
                            int n, _Atomic int64_t *g, _Atomic uint64_t *c) {
  sg_buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
  for (int i = 0; i < n; i++) {
    if (g) sg_buf_printf(o, "%s{endpoint=\"%s\"} %lld\n", name, sg_metrics.ch_ep_name[i],
                         (long long)atomic_load_explicit(&g[i], memory_order_relaxed));
    else sg_buf_printf(o, "%s{endpoint=\"%s\"} %llu\n", name, sg_metrics.ch_ep_name[i],
                       (unsigned long long)atomic_load_explicit(&c[i], memory_order_relaxed));
  }
}

#define LOAD(x) ((unsigned long long)atomic_load_explicit(&(x), memory_order_relaxed))
#define LOADS(x) ((long long)atomic_load_explicit(&(x), memory_order_relaxed))

static void gauge(sg_buf_t *o, const char *name, const char *help, long long v) {
  sg_buf_printf(o, "# HELP %s %s\n# TYPE %s gauge\n%s %lld\n", name, help, name, name, v);
}

static void counter(sg_buf_t *o, const char *name, const char *help, unsigned long long v) {
  sg_buf_printf(o, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name, v);
}

/* The gRPC listener's series: calls by code, latency, connections. */
static void render_grpc(sg_buf_t *o) {
  static const char *const names[SG_METRIC_GRPC_CODES] = {
      "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  sg_buf_puts(o, "# HELP spangate_grpc_requests_total OTLP/gRPC calls by gRPC status code.\n"
                 "# TYPE spangate_grpc_requests_total counter\n");
  for (int i = 0; i < SG_METRIC_GRPC_CODES; i++) {
    unsigned long long v = LOAD(sg_metrics.grpc_requests[i]);
    if (v) sg_buf_printf(o, "spangate_grpc_requests_total{code=\"%s\"} %llu\n", names[i], v);
  }
  unsigned long long count = LOAD(sg_metrics.grpc_latency_count), cum = 0;
  sg_buf_puts(o, "# HELP spangate_grpc_request_duration_seconds OTLP/gRPC call latency, HEADERS to "
                 "answer.\n# TYPE spangate_grpc_request_duration_seconds histogram\n");
  for (int b = 0; count && b < SG_METRIC_NBUCKETS; b++) {
    cum += LOAD(sg_metrics.grpc_latency_bucket[b]);
    sg_buf_printf(o, "spangate_grpc_request_duration_seconds_bucket{le=\"%g\"} %llu\n", bounds[b], cum);
  }
  if (count)
    sg_buf_printf(o, "spangate_grpc_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
                     "spangate_grpc_request_duration_seconds_sum %.6f\n"
                     "spangate_grpc_request_duration_seconds_count %llu\n",
                  count, (double)LOAD(sg_metrics.grpc_latency_sum_us) / 1e6, count);
  gauge(o, "spangate_grpc_connections_open", "Open OTLP/gRPC connections.",
        LOADS(sg_metrics.grpc_connections_open));
}

int sg_metrics_render(sg_buf_t *o) {
  sg_buf_puts(o, "# HELP spangate_http_requests_total HTTP requests by route and status.\n"
                 "# TYPE spangate_http_requests_total counter\n");
  int nroutes = atomic_load_explicit(&route_count, memory_order_acquire);
  for (int k = 1; k <= nroutes; k++) /* "other" (slot 0) last */
    for (int i = 0, r = k % nroutes; i < SG_METRIC_NSTATUS; i++) {
      unsigned long long v = LOAD(sg_metrics.requests[r][i]);
      if (v == 0) continue;
      if (i < SG_METRIC_NSTATUS - 1)
        sg_buf_printf(o, "spangate_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                      route_names[r], statuses[i], v);
      else
        sg_buf_printf(o, "spangate_http_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                      route_names[r], v);
    }
  sg_buf_puts(o, "# HELP spangate_http_request_duration_seconds HTTP request latency, first "
                 "byte to response.\n"
                 "# TYPE spangate_http_request_duration_seconds histogram\n");
  for (int k = 1; k <= nroutes; k++) {
    int r = k % nroutes;
    unsigned long long count = LOAD(sg_metrics.latency_count[r]);
    if (count == 0) continue;
    unsigned long long cum = 0;
    for (int b = 0; b < SG_METRIC_NBUCKETS; b++) {
      cum += LOAD(sg_metrics.latency_bucket[r][b]);
      sg_buf_printf(o, "spangate_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                    route_names[r], bounds[b], cum);
    }
    sg_buf_printf(o,
                  "spangate_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n"
                  "spangate_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
                  "spangate_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
                  route_names[r], count, route_names[r],
                  (double)LOAD(sg_metrics.latency_sum_us[r]) / 1e6, route_names[r], count);
  }
  gauge(o, "spangate_http_connections_open", "Open client connections.",
        LOADS(sg_metrics.connections_open));
  render_grpc(o);
  gauge(o, "spangate_inflight_bytes", "Memory held by requests in flight.",
        LOADS(sg_metrics.inflight_bytes));
  counter(o, "spangate_request_bytes_total", "Request body bytes received (as sent).",
          LOAD(sg_metrics.bytes_received));
  counter(o, "spangate_spans_received_total", "Spans decoded from requests.",
          LOAD(sg_metrics.spans_received));
  counter(o, "spangate_spans_stored_total", "Spans committed to PostgreSQL.",
          LOAD(sg_metrics.spans_stored));
  counter(o, "spangate_spans_rejected_total", "Spans rejected individually (bad data).",
          LOAD(sg_metrics.spans_rejected));
  counter(o, "spangate_pg_group_commits_total", "PostgreSQL group-commit statements.",
          LOAD(sg_metrics.group_commits));
  gauge(o, "spangate_pg_connections", "PostgreSQL connections configured (all workers).",
        LOADS(sg_metrics.pg_conns_configured));
  gauge(o, "spangate_pg_connections_up", "PostgreSQL connections established.",
        LOADS(sg_metrics.pg_conns_up));
  gauge(o, "spangate_pg_connections_busy", "PostgreSQL connections running a query.",
        LOADS(sg_metrics.pg_conns_busy));
  gauge(o, "spangate_pg_queue", "Queries waiting for a PostgreSQL connection.",
        LOADS(sg_metrics.pg_queue));
  counter(o, "spangate_pg_reconnects_total", "PostgreSQL reconnect attempts.",
          LOAD(sg_metrics.pg_reconnects));
  counter(o, "spangate_pg_spare_statements_total",
          "Ingest statements a spare connection ran (pg_spare_connections): one slow statement "
          "would have held them up.",
          LOAD(sg_metrics.pg_spare_queries));
  counter(o, "spangate_pg_errors_total", "PostgreSQL query errors.", LOAD(sg_metrics.pg_errors));
  counter(o, "spangate_keys_reloads_total", "Keys file reloads (SIGHUP) that succeeded, per worker.",
          LOAD(sg_metrics.keys_reloads));
  counter(o, "spangate_keys_reload_failures_total",
          "Keys file reloads refused (a bad line) or failed (unreadable), per worker.",
          LOAD(sg_metrics.keys_reload_failures));
  gauge(o, "spangate_keys_reload_failed",
        "1 while the last keys file reload was refused or failed (fix the file, then SIGHUP).",
        LOADS(sg_metrics.keys_reload_failed));
  counter(o, "spangate_auth_lookups_total", "auth=agenta key look-ups sent to PostgreSQL.",
          LOAD(sg_metrics.auth_lookups));
  counter(o, "spangate_auth_lookups_limited_total",
          "Keys not known to be good answered 503 by auth_lookup_rate (PostgreSQL not asked).",
          LOAD(sg_metrics.auth_lookups_limited));
  counter(o, "spangate_lua_calls_total", "Lua hook calls.", LOAD(sg_metrics.lua_calls));
  counter(o, "spangate_lua_errors_total", "Lua hook calls that failed (budget kills included).",
          LOAD(sg_metrics.lua_errors));
  counter(o, "spangate_lua_budget_kills_total", "Lua hook calls stopped by script_budget.",
          LOAD(sg_metrics.lua_budget_kills));
  counter(o, "spangate_lua_spans_dropped_total", "Spans the transform dropped (returned nil).",
          LOAD(sg_metrics.lua_spans_dropped));
  counter(o, "spangate_lua_spans_rejected_total",
          "Spans rejected because their transform failed (on_script_error = reject).",
          LOAD(sg_metrics.lua_spans_rejected));
  counter(o, "spangate_lua_reloads_total", "Successful script reloads (SIGHUP), per worker.",
          LOAD(sg_metrics.lua_reloads));
  counter(o, "spangate_lua_reload_failures_total",
          "Script reloads that failed; the previous scripts kept running.",
          LOAD(sg_metrics.lua_reload_failures));
  gauge(o, "spangate_lua_reload_failed", "1 when the last script reload failed.",
        LOADS(sg_metrics.lua_reload_failed));
  gauge(o, "spangate_clickhouse_enabled", "Workers dual-writing to ClickHouse.",
        LOADS(sg_metrics.ch_enabled));
  gauge(o, "spangate_clickhouse_reachable", "Workers whose last ClickHouse attempt got an answer.",
        LOADS(sg_metrics.ch_reachable));
  gauge(o, "spangate_spool_bytes", "Bytes in the ClickHouse spool, not yet accepted by ClickHouse.",
        LOADS(sg_metrics.spool_bytes));
  gauge(o, "spangate_spool_records", "Spool records (one per request) not yet accepted by ClickHouse.",
        LOADS(sg_metrics.spool_records));
  {
    long long oldest = 0;
    for (int w = 0; w <= SG_MAX_WORKERS; w++) {
      long long v = LOADS(sg_metrics.spool_oldest_us[w]);
      if (v > 0 && (oldest == 0 || v < oldest)) oldest = v;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long now = (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    sg_buf_printf(o, "# HELP spangate_spool_oldest_age_seconds Age of the oldest row waiting for "
                     "ClickHouse (0 when none).\n# TYPE spangate_spool_oldest_age_seconds gauge\n"
                     "spangate_spool_oldest_age_seconds %.3f\n",
                  oldest > 0 && now > oldest ? (double)(now - oldest) / 1e6 : 0.0);
  }
  counter(o, "spangate_clickhouse_inserts_total", "INSERTs ClickHouse accepted.",
          LOAD(sg_metrics.ch_inserts));
  counter(o, "spangate_clickhouse_rows_total", "Rows ClickHouse accepted.", LOAD(sg_metrics.ch_rows));
  sg_buf_printf(o, "# HELP spangate_clickhouse_insert_seconds_total Time spent in accepted INSERTs.\n"
                   "# TYPE spangate_clickhouse_insert_seconds_total counter\n"
                   "spangate_clickhouse_insert_seconds_total %.6f\n",
                (double)LOAD(sg_metrics.ch_insert_us) / 1e6);
  counter(o, "spangate_clickhouse_retries_total", "Failed ClickHouse attempts that will be retried.",
          LOAD(sg_metrics.ch_retries));
  sg_buf_printf(o, "# HELP spangate_clickhouse_dead_letter_rows_total Rows ClickHouse will never "
                   "get, by cause.\n# TYPE spangate_clickhouse_dead_letter_rows_total counter\n"
                   "spangate_clickhouse_dead_letter_rows_total{cause=\"rejected\"} %llu\n"
                   "spangate_clickhouse_dead_letter_rows_total{cause=\"out_of_range\"} %llu\n",
                LOAD(sg_metrics.ch_dead_rows), LOAD(sg_metrics.ch_encode_rejects));
  counter(o, "spangate_clickhouse_gap_spans_total",
          "Committed spans not spooled (spool full or ClickHouse version unknown), recorded in "
          "spangate_ch_gaps for `spangate migrate`.",
          LOAD(sg_metrics.ch_gap_spans));
  int neps = atomic_load_explicit(&sg_metrics.ch_ep_count, memory_order_acquire);
  if (neps > 0) {
    endpoint_series(o, "spangate_clickhouse_endpoint_up", "gauge",
                    "Workers that see this ClickHouse endpoint up (all enabled ones when healthy).",
                    neps, sg_metrics.ch_ep_up, NULL);
    endpoint_series(o, "spangate_clickhouse_endpoint_pending", "gauge",
                    "Dual-write requests in flight to this endpoint.", neps, sg_metrics.ch_ep_pending,
                    NULL);
    endpoint_series(o, "spangate_clickhouse_endpoint_requests_total", "counter",
                    "Dual-write request attempts sent to this endpoint.", neps, NULL,
                    sg_metrics.ch_ep_requests);
    endpoint_series(o, "spangate_clickhouse_endpoint_failures_total", "counter",
                    "Attempts that failed for the endpoint's own reason (connection, TLS, "
                    "timeout, 5xx); each marks it down for a backoff.",
                    neps, NULL, sg_metrics.ch_ep_failures);
    counter(o, "spangate_clickhouse_failovers_total",
            "Dual-write requests sent again to another endpoint after a failure.",
            LOAD(sg_metrics.ch_failovers));
  }
  counter(o, "spangate_clickhouse_dead_letter_failures_total",
          "Rejected records that could not be written to the dead-letter files (they stay in the "
          "spool and the write is retried).",
          LOAD(sg_metrics.ch_dead_letter_failures));
  counter(o, "spangate_spool_errors_total",
          "Other spool operations that failed (the rows were kept and are sent again).",
          LOAD(sg_metrics.ch_spool_errors));
  counter(o, "spangate_lua_metrics_dropped_total",
          "Script metric names (gw.metrics) not exported: over the limit of distinct names, or "
          "already used by a metric of the other kind.",
          LOAD(sg_metrics.lua_user_dropped));
  render_lua_user(o);
  gauge(o, "spangate_capture_state",
        "Change capture: 0 off, 1 connecting, 2 streaming, 3 standing by (another gateway follows "
        "the slot), 4 failing.",
        LOADS(sg_metrics.capture_state));
  gauge(o, "spangate_capture_lag_bytes", "WAL written since the position capture confirmed.",
        LOADS(sg_metrics.capture_lag_bytes));
  sg_buf_printf(o, "# HELP spangate_capture_lag_seconds Age of the oldest captured change not yet "
                   "in ClickHouse.\n# TYPE spangate_capture_lag_seconds gauge\n"
                   "spangate_capture_lag_seconds %.3f\n",
                (double)LOADS(sg_metrics.capture_lag_us) / 1e6);
  gauge(o, "spangate_capture_retained_wal_bytes", "WAL the replication slot holds back.",
        LOADS(sg_metrics.capture_retained_bytes));
  {
    static const char *const ops[4] = {"insert", "update", "delete", "truncate"};
    sg_buf_puts(o, "# HELP spangate_capture_changes_total Changes captured, by operation.\n"
                   "# TYPE spangate_capture_changes_total counter\n");
    for (int i = 0; i < 4; i++)
      sg_buf_printf(o, "spangate_capture_changes_total{op=\"%s\"} %llu\n", ops[i],
                    LOAD(sg_metrics.capture_changes[i]));
  }
  counter(o, "spangate_capture_transactions_total", "Transactions captured.",
          LOAD(sg_metrics.capture_transactions));
  counter(o, "spangate_capture_skipped_total",
          "Captured rows of projects routing.lua keeps out of ClickHouse.",
          LOAD(sg_metrics.capture_skipped));
  counter(o, "spangate_capture_gap_changes_total",
          "Captured changes whose values were not in the stream, recorded in spangate_ch_gaps.",
          LOAD(sg_metrics.capture_unwritable));
  counter(o, "spangate_ttl_rows_expired_total",
          "Rows the ClickHouse TTL sweep deleted (servers without native TTL).",
          LOAD(sg_metrics.ttl_rows_expired));
  gauge(o, "spangate_ttl_last_sweep_timestamp_seconds",
        "Unix time of the last ClickHouse TTL sweep round (0: none yet).",
        LOADS(sg_metrics.ttl_last_sweep_s));
  return 0;
}
