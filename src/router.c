/* router.c - the gateway's endpoints and the dispatch every request takes:
 *   path unknown -> 404; method not in the path's rows -> 405 with Allow;
 *   Content-Type not in the row's media -> 415; key needed -> authenticate
 *   (401, 503 when the key store cannot be asked); then the row's handler.
 * The refusals are answered in the endpoint's own error format (the row's
 * error column: OTLP's for OTLP), before the key is looked up, so a request
 * that cannot be served costs no key store look-up.
 *
 * An endpoint is one row and one handler. Rows may share a path (one per
 * method group: a DELETE or PUT beside a GET) and a handler (Agenta's
 * alias paths); a `{name}` segment reaches the handler as call->param. */
#include "router.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "edit_http.h"
#include "err.h"
#include "ingest_http.h"
#include "metrics.h"
#include "ops.h"
#include "read.h"
#include "worker.h"

#define GET_HEAD (SG_M_GET | SG_M_HEAD)

static const sg_route_t routes[] = {
    /* methods  path                          label        key  media: 415 beyond
     *          handler                  error answers */
    {SG_M_POST, "/v1/traces",                 "otlp",      1,   SG_INGEST_OTLP_MEDIA,
                sg__ingest_http_otlp,    sg__ingest_http_otlp_error},
    {SG_M_POST, "/api/otlp/v1/traces",        "otlp",      1,   SG_INGEST_OTLP_MEDIA,
                sg__ingest_http_otlp,    sg__ingest_http_otlp_error},
    {SG_M_POST, "/v1/spans",                  "native",    1,   SG_INGEST_NATIVE_MEDIA,
                sg__ingest_http_native,  NULL},
    {SG_M_POST, "/api/tracing/spans/ingest",  "native",    1,   SG_INGEST_NATIVE_MEDIA,
                sg__ingest_http_native,  NULL},
    {GET_HEAD,  "/v1/traces/{trace_id}",      "trace",     1,   NULL, sg__read_trace,     NULL},
    {SG_M_PUT,  "/v1/traces/{trace_id}",      "trace_edit", 1,  SG_EDIT_MEDIA, sg__edit_http_put, NULL},
    {SG_M_DELETE, "/v1/traces/{trace_id}",    "trace_delete", 1, NULL, sg__edit_http_delete, NULL},
    {SG_M_PUT,  "/api/tracing/traces/{trace_id}", "trace_edit", 1, SG_EDIT_MEDIA, sg__edit_http_put, NULL},
    {SG_M_DELETE, "/api/tracing/traces/{trace_id}", "trace_delete", 1, NULL, sg__edit_http_delete, NULL},
    {SG_M_POST, "/v1/spans/query",            "query",     1,   NULL, sg__read_query,     NULL},
    {GET_HEAD,  "/v1/analytics/spans",        "analytics", 1,   NULL, sg__read_analytics, NULL},
    {GET_HEAD,  "/healthz",                   "healthz",   0,   NULL, sg__ops_healthz,    NULL},
    {GET_HEAD,  "/readyz",                    "readyz",    0,   NULL, sg__ops_readyz,     NULL},
    {GET_HEAD,  "/metrics",                   "metrics",   0,   NULL, sg__ops_metrics,    NULL},
};
#define NROUTES (sizeof routes / sizeof routes[0])

const sg_route_t *sg_router_table(size_t *n) {
  *n = NROUTES;
  return routes;
}

/* ---- metrics labels ---------------------------------------------------------- */

static int label_slot[NROUTES]; /* written once, before any observe reads it */
static pthread_once_t labels_once = PTHREAD_ONCE_INIT;

static void register_labels(void) {
  for (size_t i = 0; i < NROUTES; i++) label_slot[i] = sg_metrics_route_slot(routes[i].label);
}

void sg_router_init(void) { pthread_once(&labels_once, register_labels); }

void sg_router_observe(void *worker, const sg_http_req_t *req, int status, uint64_t duration_ns,
                       size_t bytes_in) {
  (void)worker;
  (void)bytes_in;
  sg_router_init();
  int slot = SG_METRIC_ROUTE_OTHER;
  /* The row of the method and path; else by path alone: a 405 or a 429 on
   * an endpoint's path counts under it. */
  for (int pass = 0; req && pass < 2 && slot == SG_METRIC_ROUTE_OTHER; pass++)
    for (size_t i = 0; i < NROUTES; i++)
      if ((pass || (routes[i].methods & SG_M(req->method))) &&
          sg_route_path_match(routes[i].path, req->path, NULL, NULL)) {
        slot = label_slot[i];
        break;
      }
  sg_metrics_observe(slot, status, duration_ns);
}

/* ---- dispatch ------------------------------------------------------------------ */

static sg_route_error_fn error_fn(const sg_route_t *r) {
  return r->error ? r->error : sg_http_respond_error;
}

/* The one "authenticate, then run" of every endpoint that needs a key. */
static void auth_cb(void *arg, int rc, const sg_principal_t *who, const char *msg) {
  sg_route_call_t *pending = arg, call = *pending;
  free(pending);
  if (rc == SG_EUNAVAIL) {
    error_fn(call.route)(call.req, 503, "the API key store is unavailable; retry later",
                         "Retry-After: 2\r\n");
    return;
  }
  if (rc != 0) {
    error_fn(call.route)(call.req, 401, msg ? msg : "invalid API key", "WWW-Authenticate: ApiKey\r\n");
    return;
  }
  call.who = who;
  call.route->handler(&call);
}

static void refuse_method(sg_http_req_t *req, const sg_route_match_t *m) {
  char allow[96], extra[128];
  sg_route_allow_text(m->allow, allow, sizeof allow);
  snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
  sg_buf_t msg = SG_BUF_INIT;
  sg_buf_printf(&msg, "method %s not allowed on %s (allowed: %s)", http_method_str(req->method),
                req->path, allow);
  sg_http_respond_error(req, 405, msg.data ? msg.data : "method not allowed", extra);
  sg_buf_free(&msg);
}

/* 415 naming the types the row takes ("use a or b"). */
static void refuse_media(sg_http_req_t *req, const sg_route_t *r, const char *mt) {
  sg_buf_t msg = SG_BUF_INIT;
  sg_buf_printf(&msg, "unsupported media type '%s': use ", mt[0] ? mt : "(none)");
  for (const char *p = r->media; *p;) {
    size_t k = strcspn(p, ",");
    sg_buf_append(&msg, p, k);
    p += k;
    while (*p == ',' || *p == ' ') p++;
    if (*p) sg_buf_puts(&msg, " or ");
  }
  error_fn(r)(req, 415, msg.data ? msg.data : "unsupported media type", NULL);
  sg_buf_free(&msg);
}

void sg_router_handle(sg_http_req_t *req, void *worker) {
  sg_route_match_t m;
  sg_route_find(routes, NROUTES, req->method, req->path, &m);
  if (m.path_route == NULL) {
    sg_buf_t msg = SG_BUF_INIT;
    sg_buf_printf(&msg, "no such endpoint: %s %s", http_method_str(req->method), req->path);
    sg_http_respond_error(req, 404, msg.data ? msg.data : "no such endpoint", NULL);
    sg_buf_free(&msg);
    return;
  }
  if (m.route == NULL) {
    refuse_method(req, &m);
    return;
  }
  const sg_route_t *r = m.route;
  if (r->media) {
    char mt[64];
    sg_route_media_type(sg_http_header(req, "content-type"), mt, sizeof mt);
    if (!sg_route_media_ok(r->media, mt)) {
      refuse_media(req, r, mt);
      return;
    }
  }
  sg_route_call_t call = {worker, req, r, NULL, m.param, m.param_len};
  if (!r->key) {
    r->handler(&call);
    return;
  }
  /* The call waits for the key store (auth=agenta may ask PostgreSQL). */
  sg_route_call_t *pending = malloc(sizeof *pending);
  if (pending == NULL) {
    error_fn(r)(req, 503, "out of memory", "Retry-After: 1\r\n");
    return;
  }
  *pending = call;
  sg_worker_t *w = worker;
  sg_auth_check(w->auth, sg_http_header(req, "authorization"), auth_cb, pending);
}
