/* worker.h - what one worker thread owns. Nothing here is shared with other
 * workers; process-wide counters live in metrics.h as atomics. */
#ifndef SG_WORKER_H
#define SG_WORKER_H

#include <stdint.h>
#include <uv.h>

#include "auth.h"
#include "config.h"
#include "http.h"
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
  sg_pg_pool_t *pg;
  sg_pgsink_t *sink;
  sg_auth_t *auth;
  int stopping;
  int start_rc;              /* set before the thread signals it started */
  /* Last pool figures published, so the shared gauges can be moved by deltas. */
  int64_t pub_conns, pub_up, pub_busy, pub_queue;
  uint64_t pub_reconnects, pub_errors;
} sg_worker_t;

/* Route one complete request (router.c). */
void sg__router_handle(sg_http_req_t *req, void *worker);
/* The ingest endpoints (ingest.c). format: 0 OTLP, 1 native JSON. */
void sg__ingest_handle(sg_worker_t *w, sg_http_req_t *req, int format);
/* Answer with a JSON error body {"error": msg}. */
void sg__respond_error(sg_http_req_t *req, int status, const char *msg, const char *extra_headers);

#endif
