/* worker.h - what one worker thread owns (server.c builds and closes it).
 * Nothing here is shared with other workers; process-wide counters live in
 * metrics.h as atomics, the in-flight budget's counter among them. The
 * functions of the modules that use a worker are declared in their own
 * headers (router.h, ingest.h, ...), not here. */
#ifndef SG_WORKER_H
#define SG_WORKER_H

#include <stdint.h>
#include <uv.h>

#include "auth.h"
#include "budget.h"
#include "ch.h"
#include "chsink.h"
#include "chttl.h"
#include "config.h"
#include "grpc.h"
#include "http.h"
#include "lua_rt.h"
#include "metrics.h"
#include "pg.h"
#include "pgsink.h"

struct sg_ingest_s;

typedef struct sg_worker_s {
  int id;
  char tag[24];              /* "worker 1", for log lines */
  const sg_config_t *cfg;
  uv_loop_t loop;
  uv_thread_t thread;
  uv_async_t wake;           /* main -> worker: shut down */
  uv_timer_t stats_timer;    /* publishes pool state to the metrics */
  uv_os_sock_t listen_fd;
  sg_budget_t inflight;      /* the process-wide in-flight memory budget, for every transport */
  _Atomic int64_t inflight_own; /* the part of it held by this worker's requests (inflight.own) */
  sg_http_server_t *http;
  uv_os_sock_t grpc_fd;      /* the gRPC listener's socket until grpc owns it; -1: none */
  sg_grpc_server_t *grpc;    /* OTLP/gRPC (grpc_listen); NULL when off */
  int servers_open;          /* listeners still shutting down (http, grpc) */
  sg_pg_pool_t *pg;          /* ingest (writes) */
  sg_pg_pool_t *read_pg;     /* the read API, with query_timeout_ms */
  sg_pgsink_t *sink;
  sg_auth_t *auth;
  sg_ch_client_t *ch;        /* the loop's ClickHouse client; NULL when USE_CLICKHOUSE is off */
  sg_chsink_t *chsink;       /* the dual-write through ch; NULL when USE_CLICKHOUSE is off */
  sg_chttl_t *ttl;           /* worker 1 with ClickHouse: the expired-row sweep */
  sg_lua_rt_t *lua;          /* transform, routing and ttl hooks; swapped on SIGHUP */
  uv_async_t reload;         /* main -> worker: rebuild the Lua states (and keys) */
  sg_lua_stats_t lua_retired; /* counters of the states replaced by reloads */
  uv_timer_t sync_timer;     /* ingest.c: answers after one spool fsync per loop turn */
  struct sg_ingest_s *sync_head, *sync_tail; /* ingest.c: waiting for that fsync */
  int stopping;
  int start_rc;              /* set before the thread signals it started */
  /* Last pool figures published, so the shared gauges can be moved by deltas. */
  int64_t pub_conns, pub_up, pub_busy, pub_queue, pub_open, pub_grpc_open;
  uint64_t pub_reconnects, pub_errors, pub_spare;
  int64_t pub_ch_enabled, pub_ch_reachable, pub_spool_bytes, pub_spool_records;
  uint64_t pub_lua_calls, pub_lua_errors, pub_lua_kills, pub_lua_dropped, pub_lua_rejected;
  uint64_t pub_ch_inserts, pub_ch_rows, pub_ch_insert_us, pub_ch_retries, pub_ch_dead_records,
      pub_ch_dead_rows, pub_ch_encode_rejects, pub_ch_gap_spans, pub_ch_dead_fail, pub_ch_spool_err;
  uint64_t pub_pg_groups;
  int64_t pub_ep_up[SG_METRICS_CH_ENDPOINTS], pub_ep_pending[SG_METRICS_CH_ENDPOINTS];
  uint64_t pub_ep_requests[SG_METRICS_CH_ENDPOINTS], pub_ep_failures[SG_METRICS_CH_ENDPOINTS],
      pub_ch_failovers;
} sg_worker_t;

#endif
