/* router.c - which handler answers a request, and the operations endpoints. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "metrics.h"
#include "pgcapture.h"
#include "worker.h"

typedef struct {
  const char *path;
  sg_route_t route;
  const char *allow; /* methods, for 405 */
} route_t;

static const route_t routes[] = {
    {"/v1/traces", SG_ROUTE_OTLP, "POST"},
    {"/api/otlp/v1/traces", SG_ROUTE_OTLP, "POST"},
    {"/v1/spans", SG_ROUTE_NATIVE, "POST"},
    {"/api/tracing/spans/ingest", SG_ROUTE_NATIVE, "POST"},
    {"/healthz", SG_ROUTE_HEALTHZ, "GET, HEAD"},
    {"/readyz", SG_ROUTE_READYZ, "GET, HEAD"},
    {"/metrics", SG_ROUTE_METRICS, "GET, HEAD"},
    {"/v1/spans/query", SG_ROUTE_QUERY, "POST"},
    {"/v1/analytics/spans", SG_ROUTE_QUERY, "GET, HEAD"},
};

static const char trace_prefix[] = "/v1/traces/";

sg_route_t sg__route_of(const char *path) {
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
    if (!strcmp(path, routes[i].path)) return routes[i].route;
  if (!strncmp(path, trace_prefix, sizeof trace_prefix - 1)) return SG_ROUTE_TRACE;
  return SG_ROUTE_OTHER;
}

void sg__respond_error(sg_http_req_t *req, int status, const char *msg, const char *extra) {
  sg_buf_t b = SG_BUF_INIT;
  sg_buf_puts(&b, "{\"error\":\"");
  sg_buf_json_escape(&b, msg, strlen(msg));
  sg_buf_puts(&b, "\"}\n");
  sg_http_respond(req, status, "application/json", b.data, b.len, extra);
  sg_buf_free(&b);
}

static void respond_json(sg_http_req_t *req, int status, const char *body) {
  sg_http_respond(req, status, "application/json", body, strlen(body), NULL);
}

/* ---- PostgreSQL writability, for /readyz ------------------------------------ */

/* Process-wide (every worker's ingest reports, any worker answers /readyz).
 * A write refused because the server takes no writes for now
 * (sg_pg_sqlstate_unwritable: read-only, disk full, I/O error) makes the
 * gateway unready until a later write succeeds, or for UNWRITABLE_HOLD_MS:
 * a load balancer then sends traffic again and the next write decides (no
 * traffic would otherwise ever clear it). */
#define UNWRITABLE_HOLD_MS 10000
static _Atomic uint64_t write_ok_ms, write_fail_ms;
static pthread_mutex_t fail_mu = PTHREAD_MUTEX_INITIALIZER;
static char fail_msg[256];

void sg__readyz_note_write(int status, const char *errmsg) {
  uint64_t now = uv_hrtime() / 1000000 + 1; /* never 0: 0 means "never" */
  if (status == 0) {
    atomic_store(&write_ok_ms, now);
    return;
  }
  /* errmsg is "<SQLSTATE> <message>" when the server answered. */
  char st[6];
  if (errmsg == NULL || strlen(errmsg) < 6 || errmsg[5] != ' ') return;
  memcpy(st, errmsg, 5);
  st[5] = '\0';
  if (!sg_pg_sqlstate_unwritable(st)) return;
  pthread_mutex_lock(&fail_mu);
  snprintf(fail_msg, sizeof fail_msg, "%s", errmsg);
  atomic_store(&write_fail_ms, now);
  pthread_mutex_unlock(&fail_mu);
}

/* 1 and the cause in why when the latest write said PostgreSQL is unwritable. */
static int unwritable(char *why, size_t cap) {
  uint64_t now = uv_hrtime() / 1000000 + 1;
  uint64_t f = atomic_load(&write_fail_ms), ok = atomic_load(&write_ok_ms);
  if (f == 0 || f < ok || now - f >= UNWRITABLE_HOLD_MS) return 0;
  pthread_mutex_lock(&fail_mu);
  snprintf(why, cap, "%s", fail_msg);
  pthread_mutex_unlock(&fail_mu);
  return 1;
}

/* 200 when this worker has a PostgreSQL connection that takes writes (its
 * pool connects only to a writable server) and no recent write was refused
 * for lack of writability; else 503 naming the cause. */
static void readyz(sg_worker_t *w, sg_http_req_t *req) {
  const sg_pg_stats_t *st = sg_pg_pool_stats(w->pg);
  char why[256] = "";
  int pg_up = st->up > 0;
  int ro = pg_up && unwritable(why, sizeof why);
  if (!pg_up) snprintf(why, sizeof why, "%s", sg_pg_pool_last_error(w->pg));
  int ready = pg_up && !ro;
  sg_buf_t b = SG_BUF_INIT;
  sg_buf_printf(&b, "{\"status\":\"%s\",\"postgres\":{\"up\":%s,\"writable\":%s,\"connections\":%d,"
                    "\"busy\":%d,\"read_connections\":%d",
                ready ? "ready" : "not ready", pg_up ? "true" : "false", ready ? "true" : "false", st->up,
                st->busy, w->read_pg ? sg_pg_pool_stats(w->read_pg)->up : 0);
  if (!ready) {
    sg_buf_puts(&b, ",\"error\":\"");
    sg_buf_json_escape(&b, why[0] ? why : "no connection yet", strlen(why[0] ? why : "no connection yet"));
    sg_buf_putc(&b, '"');
  }
  sg_buf_putc(&b, '}');
  if (w->ch) {
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
  if (w->ch && !strcmp(w->cfg->clickhouse_writes, "capture")) { /* change capture's state */
    sg_buf_puts(&b, ",\"capture\":");
    sg_pgcapture_status_json(&b);
  }
  sg_buf_puts(&b, "}\n");
  sg_http_respond(req, ready ? 200 : 503, "application/json", b.data, b.len,
                  ready ? NULL : "Retry-After: 1\r\n");
  sg_buf_free(&b);
}

static void metrics(sg_http_req_t *req) {
  sg_buf_t b = SG_BUF_INIT;
  if (sg_metrics_render(&b) != 0) {
    sg_buf_free(&b);
    sg__respond_error(req, 500, "out of memory rendering metrics", NULL);
    return;
  }
  sg_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, NULL);
  sg_buf_free(&b);
}

void sg__router_handle(sg_http_req_t *req, void *arg) {
  sg_worker_t *w = arg;
  const route_t *r = NULL;
  static const route_t trace_route = {"/v1/traces/{trace_id}", SG_ROUTE_TRACE, "GET, HEAD"};
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
    if (!strcmp(req->path, routes[i].path)) r = &routes[i];
  if (!r && !strncmp(req->path, trace_prefix, sizeof trace_prefix - 1)) r = &trace_route;
  if (r == NULL) {
    sg_buf_t msg = SG_BUF_INIT;
    sg_buf_printf(&msg, "no such endpoint: %s %s", http_method_str(req->method), req->path);
    sg__respond_error(req, 404, msg.data, NULL);
    sg_buf_free(&msg);
    return;
  }
  int is_get = req->method == HTTP_GET || req->method == HTTP_HEAD;
  int is_post = req->method == HTTP_POST;
  int ok = (!strcmp(r->allow, "POST") && is_post) || (strcmp(r->allow, "POST") && is_get);
  if (!ok) {
    char extra[64];
    snprintf(extra, sizeof extra, "Allow: %s\r\n", r->allow);
    sg_buf_t msg = SG_BUF_INIT;
    sg_buf_printf(&msg, "method %s not allowed on %s (allowed: %s)", http_method_str(req->method),
                  req->path, r->allow);
    sg__respond_error(req, 405, msg.data, extra);
    sg_buf_free(&msg);
    return;
  }
  switch (r->route) {
  case SG_ROUTE_OTLP: sg__ingest_handle(w, req, 0); return;
  case SG_ROUTE_NATIVE: sg__ingest_handle(w, req, 1); return;
  case SG_ROUTE_HEALTHZ: respond_json(req, 200, "{\"status\":\"ok\"}\n"); return;
  case SG_ROUTE_READYZ: readyz(w, req); return;
  case SG_ROUTE_METRICS: metrics(req); return;
  case SG_ROUTE_TRACE: sg__read_trace(w, req, req->path + sizeof trace_prefix - 1); return;
  case SG_ROUTE_QUERY:
    if (!strcmp(req->path, "/v1/spans/query")) sg__read_query(w, req);
    else sg__read_analytics(w, req);
    return;
  default: sg__respond_error(req, 404, "no such endpoint", NULL); return;
  }
}
