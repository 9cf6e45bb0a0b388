/* metrics.h - process-wide counters shared by the workers as atomics, and
 * their Prometheus text rendering. Nothing else is shared between workers. */
#ifndef SG_METRICS_H
#define SG_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Requests are counted per route label (spangate_http_requests_total{route}
 * and the latency histogram). The labels are the endpoint table's
 * (router.c), registered at start; slot 0 is "other": requests no endpoint
 * matched, or answered before their path was known. */
#define SG_METRIC_MAX_ROUTES 24
#define SG_METRIC_ROUTE_OTHER 0

/* Status codes counted individually; anything else lands in "other". */
#define SG_METRIC_STATUSES 200, 202, 400, 401, 404, 405, 408, 413, 415, 429, 431, 500, 503
#define SG_METRIC_NSTATUS 14
#define SG_METRIC_NBUCKETS 14
#define SG_MAX_WORKERS 256
#define SG_METRICS_CH_ENDPOINTS 16 /* SG_CH_MAX_ENDPOINTS */
#define SG_METRIC_GRPC_CODES 17 /* gRPC status codes 0 (OK) .. 16 (UNAUTHENTICATED) */

typedef struct {
  _Atomic uint64_t requests[SG_METRIC_MAX_ROUTES][SG_METRIC_NSTATUS];
  _Atomic uint64_t latency_bucket[SG_METRIC_MAX_ROUTES][SG_METRIC_NBUCKETS]; /* cumulative at render */
  _Atomic uint64_t latency_sum_us[SG_METRIC_MAX_ROUTES];
  _Atomic uint64_t latency_count[SG_METRIC_MAX_ROUTES];
  _Atomic int64_t connections_open;
  _Atomic int64_t inflight_bytes;
  _Atomic uint64_t spans_received;
  _Atomic uint64_t spans_stored;
  _Atomic uint64_t spans_rejected;
  _Atomic uint64_t bytes_received;
  _Atomic uint64_t group_commits;
  /* PostgreSQL pool, summed over workers (each worker publishes its own). */
  _Atomic int64_t pg_conns_configured;
  _Atomic int64_t pg_conns_up;
  _Atomic int64_t pg_conns_busy;
  _Atomic int64_t pg_queue;
  _Atomic uint64_t pg_reconnects;
  _Atomic uint64_t pg_spare_queries;
  _Atomic uint64_t pg_errors;
  /* Lua hooks, summed over workers. */
  _Atomic uint64_t lua_calls;
  _Atomic uint64_t lua_errors;
  _Atomic uint64_t lua_budget_kills;
  _Atomic uint64_t lua_spans_dropped;
  _Atomic uint64_t lua_spans_rejected;
  _Atomic uint64_t lua_reloads;
  _Atomic uint64_t lua_reload_failures;
  _Atomic int64_t lua_reload_failed;    /* 1 while the last reload of any worker failed */
  /* ClickHouse dual-write, summed over workers. */
  _Atomic int64_t ch_enabled;           /* workers writing to ClickHouse */
  _Atomic int64_t ch_reachable;         /* of which the last attempt reached ClickHouse */
  _Atomic int64_t spool_bytes;
  _Atomic int64_t spool_records;
  _Atomic int64_t spool_oldest_us[SG_MAX_WORKERS + 1]; /* per worker id; 0 = nothing waiting */
  _Atomic uint64_t ch_inserts;
  _Atomic uint64_t ch_rows;
  _Atomic uint64_t ch_insert_us;
  _Atomic uint64_t ch_retries;
  _Atomic uint64_t ch_dead_records;
  _Atomic uint64_t ch_dead_rows;
  _Atomic uint64_t ch_encode_rejects;
  _Atomic uint64_t ch_gap_spans;
  /* The dual-write's ClickHouse endpoints, summed over workers; names are
   * written once (sg_metrics_ch_endpoint_names) before ch_ep_count is set. */
  _Atomic int64_t ch_ep_up[SG_METRICS_CH_ENDPOINTS];      /* workers that see it up */
  _Atomic int64_t ch_ep_pending[SG_METRICS_CH_ENDPOINTS];
  _Atomic uint64_t ch_ep_requests[SG_METRICS_CH_ENDPOINTS];
  _Atomic uint64_t ch_ep_failures[SG_METRICS_CH_ENDPOINTS];
  _Atomic uint64_t ch_failovers;
  _Atomic int ch_ep_count;
  char ch_ep_name[SG_METRICS_CH_ENDPOINTS][128];
  _Atomic uint64_t ch_dead_letter_failures;
  _Atomic uint64_t keys_reloads;        /* keys file reloads (SIGHUP), per worker */
  _Atomic uint64_t keys_reload_failures;
  _Atomic int64_t keys_reload_failed;   /* 1 while the last keys file reload was refused */
  _Atomic uint64_t auth_lookups;        /* auth=agenta look-ups sent to PostgreSQL */
  _Atomic uint64_t auth_lookups_limited; /* unknown keys answered 503 by the look-up rate limit */
  _Atomic uint64_t lua_user_dropped;    /* script metric names refused export (see below) */
  _Atomic uint64_t ch_spool_errors;
  /* Change capture (clickhouse_writes = "capture"), published by its thread. */
  _Atomic int64_t capture_state;        /* 0 off, 1 connecting, 2 streaming, 3 standby, 4 failing */
  _Atomic int64_t capture_lag_bytes;    /* WAL not yet confirmed: pg_current_wal_lsn() - confirmed */
  _Atomic int64_t capture_lag_us;       /* age of the oldest change not yet in ClickHouse */
  _Atomic int64_t capture_retained_bytes; /* WAL the slot holds back (from its restart_lsn) */
  _Atomic uint64_t capture_changes[4];  /* insert, update, delete, truncate (spans and nodes) */
  _Atomic uint64_t capture_transactions;
  _Atomic uint64_t capture_skipped;     /* rows of projects routing.lua keeps out of ClickHouse */
  _Atomic uint64_t capture_unwritable;  /* changes recorded as gaps (values not in the stream) */
  /* Retention. */
  _Atomic uint64_t ttl_rows_expired;    /* rows the ClickHouse sweep deleted */
  _Atomic int64_t ttl_last_sweep_s;     /* Unix time of the last completed sweep round */
  /* OTLP/gRPC calls by gRPC status code, their latency, open connections. */
  _Atomic uint64_t grpc_requests[SG_METRIC_GRPC_CODES];
  _Atomic uint64_t grpc_latency_bucket[SG_METRIC_NBUCKETS];
  _Atomic uint64_t grpc_latency_sum_us;
  _Atomic uint64_t grpc_latency_count;
  _Atomic int64_t grpc_connections_open;
} sg_metrics_t;

extern sg_metrics_t sg_metrics;

/* Scripts' own metrics (gw.metrics.incr/gauge), exported as
 * spangate_lua_user_<name>: at most SG_LUA_USER_MAX distinct names in the
 * process, each the sum of what every worker published for it. */
#define SG_LUA_USER_MAX 256
#define SG_LUA_USER_PREFIX "spangate_lua_user_"

/* The slot of the script metric name ('c' counter or 'g' gauge), registered
 * on first use; safe from any thread. name is sanitised to Prometheus' rules
 * (characters outside [a-zA-Z0-9_] become '_'; a leading digit gets a '_'),
 * so names that sanitise alike share a slot. -1 when it cannot be exported
 * (table full, or the name is taken by the other kind): lua_user_dropped is
 * counted and the first such refusal returns -2, so the caller logs once. */
int sg_metrics_lua_slot(const char *name, char kind);
/* Adds delta to slot's value (a worker publishes its changes as deltas). */
void sg_metrics_lua_add(int slot, double delta);

/* The slot of a route label, registered on first use (safe from any
 * thread; register at start, the rendering lists labels in that order).
 * The same label gives the same slot; SG_METRIC_ROUTE_OTHER for "other" and
 * when the table is full. label must stay valid (a string literal). */
int sg_metrics_route_slot(const char *label);
/* Counts one answered request of route slot with its status and latency. */
void sg_metrics_observe(int route_slot, int status, uint64_t duration_ns);
/* Counts one answered gRPC call with its status code (0..16; others count
 * as 2, UNKNOWN) and latency. */
void sg_metrics_grpc_observe(int code, uint64_t duration_ns);
/* Names the ClickHouse endpoints (the first call wins; every worker has the
 * same list). */
void sg_metrics_ch_endpoint_names(const char *const *names, size_t n);
/* Prometheus text exposition format 0.0.4. */
int sg_metrics_render(sg_buf_t *out);

#endif
