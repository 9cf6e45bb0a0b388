/* worker.h - what one worker thread owns. Nothing here is shared with other
 * workers; process-wide counters live in metrics.h as atomics. */
#ifndef SG_WORKER_H
#define SG_WORKER_H

#include <stdint.h>
#include <uv.h>

#include "auth.h"
#include "chsink.h"
#include "chttl.h"
#include "config.h"
#include "http.h"
#include "lua_rt.h"
#include "metrics.h"
#include "pg.h"
#include "pgsink.h"

typedef struct sg_worker_s {
  int id;
  char tag[24];              /* "worker 1", for log lines */
  const sg_config_t *cfg;
  uv_loop_t loop;
  uv_thread_t thread;
  uv_async_t wake;           /* main -> worker: shut down */
  uv_timer_t stats_timer;    /* publishes pool state to the metrics */
  uv_os_sock_t listen_fd;
  sg_http_server_t *http;
  sg_pg_pool_t *pg;          /* ingest (writes) */
  sg_pg_pool_t *read_pg;     /* the read API, with query_timeout_ms */
  sg_pgsink_t *sink;
  sg_auth_t *auth;
  sg_chsink_t *ch;           /* NULL when USE_CLICKHOUSE is off */
  sg_chttl_t *ttl;           /* worker 1 with ClickHouse: the expired-row sweep */
  sg_lua_rt_t *lua;          /* transform, routing and ttl hooks; swapped on SIGHUP */
  uv_async_t reload;         /* main -> worker: rebuild the Lua states (and keys) */
  sg_lua_stats_t lua_retired; /* counters of the states replaced by reloads */
  struct sg__read_s *read;   /* read.c's per-worker state, NULL until first used */
  uv_timer_t sync_timer;     /* answers requests after one spool fsync per loop turn */
  struct sg__ingest_s *sync_head, *sync_tail;
  int stopping;
  int start_rc;              /* set before the thread signals it started */
  /* Last pool figures published, so the shared gauges can be moved by deltas. */
  int64_t pub_conns, pub_up, pub_busy, pub_queue, pub_open;
  uint64_t pub_reconnects, pub_errors;
  int64_t pub_ch_enabled, pub_ch_reachable, pub_spool_bytes, pub_spool_records;
  uint64_t pub_lua_calls, pub_lua_errors, pub_lua_kills, pub_lua_dropped, pub_lua_rejected;
  uint64_t pub_ch_inserts, pub_ch_rows, pub_ch_insert_us, pub_ch_retries, pub_ch_dead_records,
      pub_ch_dead_rows, pub_ch_encode_rejects, pub_ch_gap_spans, pub_ch_dead_fail, pub_ch_spool_err;
  int64_t pub_ep_up[SG_METRICS_CH_ENDPOINTS], pub_ep_pending[SG_METRICS_CH_ENDPOINTS];
  uint64_t pub_ep_requests[SG_METRICS_CH_ENDPOINTS], pub_ep_failures[SG_METRICS_CH_ENDPOINTS],
      pub_ch_failovers;
} sg_worker_t;

/* ClickHouse version given to every worker's chsink (server.c); NULL when unknown. */
extern const sg_ch_target_t *sg__ch_target;

/* Route one complete request (router.c). */
void sg__router_handle(sg_http_req_t *req, void *worker);
/* The ingest endpoints (ingest.c). format: 0 OTLP, 1 native JSON. */
void sg__ingest_handle(sg_worker_t *w, sg_http_req_t *req, int format);
/* The read endpoints (read.c): GET /v1/traces/{id}, POST /v1/spans/query,
 * GET /v1/analytics/spans. They authenticate like ingest does. */
void sg__read_trace(sg_worker_t *w, sg_http_req_t *req, const char *trace_id);
void sg__read_query(sg_worker_t *w, sg_http_req_t *req);
void sg__read_analytics(sg_worker_t *w, sg_http_req_t *req);
/* Per-worker state of read.c (its ClickHouse client, ...); created lazily,
 * released by sg__read_close() at shutdown. */
void sg__read_close(sg_worker_t *w);

/* Ingest reports each group-commit outcome (status, and PostgreSQL's
 * "<SQLSTATE> <message>" when it failed) for /readyz (router.c). Any thread. */
void sg__readyz_note_write(int status, const char *errmsg);

/* Answer with a JSON error body {"error": msg}. */
void sg__respond_error(sg_http_req_t *req, int status, const char *msg, const char *extra_headers);

#endif
