/* ops.c - /healthz, /readyz, /metrics. */
#include "ops.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "metrics.h"
#include "pgcapture.h"
#include "readiness.h"
#include "worker.h"

void sg__ops_healthz(const sg_route_call_t *call) {
  static const char ok[] = "{\"status\":\"ok\"}\n";
  sg_http_respond(call->req, 200, "application/json", ok, sizeof ok - 1, NULL);
}

/* The pool connects only to a writable server, so "up" means writable
 * unless a write was refused since (a server turned read-only meanwhile). */
void sg__ops_readyz(const sg_route_call_t *call) {
  sg_worker_t *w = call->w;
  const sg_pg_stats_t *st = sg_pg_pool_stats(w->pg);
  char why[256] = "";
  int pg_up = st->up > 0;
  /* A refused write says more than the reconnect it caused (a read-only
   * session is replaced, and with one connection the pool is down meanwhile). */
  int ro = sg_readiness_unwritable(why, sizeof why);
  if (!pg_up && !ro) snprintf(why, sizeof why, "%s", sg_pg_pool_last_error(w->pg));
  int ready = pg_up && !ro;
  sg_buf_t b = SG_BUF_INIT;
  sg_buf_printf(&b, "{\"status\":\"%s\",\"postgres\":{\"up\":%s,\"writable\":%s,\"connections\":%d,"
                    "\"busy\":%d,\"read_connections\":%d",
                ready ? "ready" : "not ready", pg_up ? "true" : "false", ready ? "true" : "false", st->up,
                st->busy, w->read_pg ? sg_pg_pool_stats(w->read_pg)->up : 0);
  if (!ready) {
    const char *cause = why[0] ? why : "no connection yet";
    sg_buf_puts(&b, ",\"error\":\"");
    sg_buf_json_escape(&b, cause, strlen(cause));
    sg_buf_putc(&b, '"');
  }
  sg_buf_putc(&b, '}');
  if (w->chsink) {
    /* Process-wide figures (every worker publishes its own twice a second). */
    long long enabled = atomic_load(&sg_metrics.ch_enabled);
    long long reachable = atomic_load(&sg_metrics.ch_reachable);
    long long oldest = 0;
    for (int i = 0; i <= SG_MAX_WORKERS; i++) {
      long long v = atomic_load(&sg_metrics.spool_oldest_us[i]);
      if (v > 0 && (oldest == 0 || v < oldest)) oldest = v;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long now = (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    sg_buf_printf(&b, ",\"clickhouse\":{\"enabled\":true,\"reachable\":%s,\"spool_bytes\":%lld,"
                      "\"spool_records\":%lld,\"oldest_unsent_age_s\":%.3f,\"gap_spans\":%llu",
                  enabled > 0 && reachable == enabled ? "true" : "false",
                  (long long)atomic_load(&sg_metrics.spool_bytes),
                  (long long)atomic_load(&sg_metrics.spool_records),
                  oldest && now > oldest ? (double)(now - oldest) / 1e6 : 0.0,
                  (unsigned long long)atomic_load(&sg_metrics.ch_gap_spans));
    /* Endpoints: up when every dual-writing worker sees it up. */
    int neps = atomic_load(&sg_metrics.ch_ep_count);
    if (neps > 0) {
      sg_buf_puts(&b, ",\"endpoints\":[");
      for (int i = 0; i < neps; i++) {
        long long up = atomic_load(&sg_metrics.ch_ep_up[i]);
        sg_buf_printf(&b, "%s{\"endpoint\":\"%s\",\"up\":%s,\"workers_up\":%lld,\"failures\":%llu}",
                      i ? "," : "", sg_metrics.ch_ep_name[i],
                      enabled > 0 && up == enabled ? "true" : "false", up,
                      (unsigned long long)atomic_load(&sg_metrics.ch_ep_failures[i]));
      }
      sg_buf_putc(&b, ']');
    }
    sg_buf_putc(&b, '}');
  } else {
    sg_buf_puts(&b, ",\"clickhouse\":{\"enabled\":false}");
  }
  if (w->chsink && !strcmp(w->cfg->clickhouse_writes, "capture")) { /* change capture's state */
    sg_buf_puts(&b, ",\"capture\":");
    sg_pgcapture_status_json(&b);
  }
  sg_buf_puts(&b, "}\n");
  sg_http_respond(call->req, ready ? 200 : 503, "application/json", b.data, b.len,
                  ready ? NULL : "Retry-After: 1\r\n");
  sg_buf_free(&b);
}

void sg__ops_metrics(const sg_route_call_t *call) {
  sg_buf_t b = SG_BUF_INIT;
  if (sg_metrics_render(&b) != 0) {
    sg_buf_free(&b);
    sg_http_respond_error(call->req, 500, "out of memory rendering metrics", NULL);
    return;
  }
  sg_http_respond(call->req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, NULL);
  sg_buf_free(&b);
}
