/* ingest.c - the ingest pipeline of one request:
 *   media type -> authenticate -> memory budget -> decompress -> decode
 *   -> group commit into PostgreSQL -> answer.
 * A request is answered 200 only after its spans are committed. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "err.h"
#include "inflate.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"

enum { FMT_OTLP = 0, FMT_NATIVE = 1 };

typedef struct sg__ingest_s {
  struct sg__ingest_s *next; /* in the worker's list waiting for the spool fsync */
  sg_worker_t *w;
  sg_http_req_t *req;
  int format;
  int proto;          /* OTLP answered in protobuf (else JSON) */
  size_t accounted;   /* bytes counted in sg_metrics.inflight_bytes */
  sg_buf_t inflated;
  sg_span_batch_t batch;
  sg_principal_t who;
} ingest_t;

static void answer_ok(ingest_t *in);

/* Runs once per loop turn while requests wait for their spool rows to be
 * durable: one fsync for all of them, then their answers. */
static void sync_cb(uv_timer_t *t) {
  sg_worker_t *w = t->data;
  ingest_t *in = w->sync_head;
  w->sync_head = w->sync_tail = NULL;
  if (w->ch) sg_chsink_sync(w->ch); /* a failure is logged; PostgreSQL has the spans either way */
  while (in) {
    ingest_t *next = in->next;
    answer_ok(in);
    in = next;
  }
}

static void answer_after_sync(ingest_t *in) {
  sg_worker_t *w = in->w;
  in->next = NULL;
  if (w->sync_tail) w->sync_tail->next = in;
  else w->sync_head = in;
  w->sync_tail = in;
  if (!uv_is_active((uv_handle_t *)&w->sync_timer)) uv_timer_start(&w->sync_timer, sync_cb, 0, 0);
}

static void ingest_free(ingest_t *in) {
  if (in->accounted)
    atomic_fetch_sub(&sg_metrics.inflight_bytes, (int64_t)in->accounted);
  sg_buf_free(&in->inflated);
  sg_span_batch_free(&in->batch);
  free(in);
}

/* gRPC status code that matches an HTTP status, for google.rpc.Status. */
static int grpc_code(int status) {
  switch (status) {
  case 400: case 413: case 415: return 3; /* INVALID_ARGUMENT */
  case 401: return 16;                    /* UNAUTHENTICATED */
  case 429: return 8;                     /* RESOURCE_EXHAUSTED */
  case 503: return 14;                    /* UNAVAILABLE */
  default: return 13;                     /* INTERNAL */
  }
}

/* Error answer in the request's encoding: google.rpc.Status for OTLP
 * protobuf, {"error","code","message"} JSON otherwise. Frees in. */
static void fail(ingest_t *in, int status, const char *msg, const char *extra) {
  sg_http_req_t *req = in->req;
  if (in->format == FMT_OTLP && in->proto) {
    sg_buf_t b = SG_BUF_INIT;
    sg_rpc_status_proto(grpc_code(status), msg, &b);
    sg_http_respond(req, status, "application/x-protobuf", b.data, b.len, extra);
    sg_buf_free(&b);
  } else if (in->format == FMT_OTLP) {
    sg_buf_t b = SG_BUF_INIT;
    sg_buf_printf(&b, "{\"code\":%d,\"message\":\"", grpc_code(status));
    sg_buf_json_escape(&b, msg, strlen(msg));
    sg_buf_puts(&b, "\",\"error\":\"");
    sg_buf_json_escape(&b, msg, strlen(msg));
    sg_buf_puts(&b, "\"}\n");
    sg_http_respond(req, status, "application/json", b.data, b.len, extra);
    sg_buf_free(&b);
  } else {
    sg__respond_error(req, status, msg, extra);
  }
  ingest_free(in);
}

static void answer_ok(ingest_t *in) {
  sg_buf_t b = SG_BUF_INIT;
  const sg_span_batch_t *bt = &in->batch;
  const char *msg = bt->reject_msg.data ? bt->reject_msg.data : "";
  if (in->format == FMT_OTLP) {
    if (in->proto) sg_otlp_response_proto(bt->rejected, msg, &b);
    else sg_otlp_response_json(bt->rejected, msg, &b);
    sg_http_respond(in->req, 200, in->proto ? "application/x-protobuf" : "application/json",
                    b.data, b.len, NULL);
  } else {
    sg_buf_printf(&b, "{\"count\":%zu,\"links\":[", bt->n);
    for (size_t i = 0; i < bt->n; i++) {
      char t[37], s[37];
      sg_uuid_format(bt->spans[i].trace_id, t);
      sg_uuid_format(bt->spans[i].span_id, s);
      sg_buf_printf(&b, "%s{\"trace_id\":\"%s\",\"span_id\":\"%s\"}", i ? "," : "", t, s);
    }
    sg_buf_puts(&b, "]");
    if (bt->rejected) {
      sg_buf_printf(&b, ",\"rejected\":%zu,\"error\":\"", bt->rejected);
      sg_buf_json_escape(&b, msg, strlen(msg));
      sg_buf_puts(&b, "\"");
    }
    sg_buf_puts(&b, "}\n");
    sg_http_respond(in->req, 200, "application/json", b.data, b.len, NULL);
  }
  sg_buf_free(&b);
  ingest_free(in);
}

/* Spools the committed spans for ClickHouse when routing.lua says this
 * project goes there, with each span's expiry from ttl.lua. 1 when rows were
 * spooled (the answer then waits for the fsync). */
static int dual_write(ingest_t *in) {
  sg_worker_t *w = in->w;
  int on = 1;
  sg_lua_route_clickhouse(w->lua, in->who.project_id, &on); /* errors: logged, default on */
  if (!on) return 0;
  int64_t stack[128];
  int64_t *exp = in->batch.n <= 128 ? stack : malloc(in->batch.n * sizeof *exp);
  if (exp) {
    int has_ttl = sg_lua_rt_hooks(w->lua) & SG_LUA_HOOK_RETENTION;
    for (size_t i = 0; i < in->batch.n; i++) {
      double days = -1;
      if (has_ttl) sg_lua_retention_days(w->lua, in->who.project_id, &in->batch.spans[i], &days);
      exp[i] = days > 0 ? in->batch.spans[i].created_at_us + (int64_t)(days * 86400e6) : INT64_MAX;
    }
  }
  sg_chsink_append(w->ch, in->who.project_id, in->batch.spans, in->batch.n, exp);
  if (exp != stack) free(exp);
  return 1;
}

static void stored_cb(void *arg, int status, sg_span_batch_t *batch) {
  ingest_t *in = arg;
  (void)batch;
  if (status == 0) {
    atomic_fetch_add(&sg_metrics.spans_stored, in->batch.n);
    atomic_fetch_add(&sg_metrics.spans_rejected, in->batch.rejected);
    if (in->w->ch && in->batch.n && dual_write(in)) {
      answer_after_sync(in);
      return;
    }
    answer_ok(in);
    return;
  }
  if (status == SG_EUNAVAIL || status == SG_EBUSY || status == SG_ECANCELED) {
    fail(in, 503, "PostgreSQL is unavailable; nothing was stored, retry later", "Retry-After: 2\r\n");
    return;
  }
  sg_error("ingest", "storing %zu spans failed: %s", in->batch.n, sg_strerror(status));
  fail(in, 500, "storing the spans failed; nothing was acknowledged", NULL);
}

/* Lower-cased media type without parameters ("application/json"). */
static void media_type(const char *h, char *out, size_t cap) {
  size_t n = 0;
  if (h)
    for (; *h && *h != ';' && n + 1 < cap; h++)
      if (!isspace((unsigned char)*h)) out[n++] = (char)tolower((unsigned char)*h);
  out[n] = '\0';
}

static void decode_and_store(ingest_t *in) {
  sg_http_req_t *req = in->req;
  const sg_config_t *cfg = in->w->cfg;

  /* Memory budget across workers: what this request holds now, and at most
   * max_decompressed_bytes more if it turns out to be compressed. */
  size_t body = req->body.len;
  in->accounted = body;
  int64_t now = atomic_fetch_add(&sg_metrics.inflight_bytes, (int64_t)body) + (int64_t)body;
  if ((size_t)now > cfg->max_inflight_bytes) {
    fail(in, 429, "the gateway is at its in-flight memory limit; retry later", "Retry-After: 1\r\n");
    return;
  }
  atomic_fetch_add(&sg_metrics.bytes_received, body);

  const char *ce = sg_http_header(req, "content-encoding");
  int enc = SG_ENC_AUTO;
  if (ce && (!strcasecmp(ce, "gzip") || !strcasecmp(ce, "x-gzip"))) enc = SG_ENC_GZIP;
  else if (ce && !strcasecmp(ce, "deflate")) enc = SG_ENC_DEFLATE;
  else if (ce && strcasecmp(ce, "identity") && *ce) {
    sg_buf_t m = SG_BUF_INIT;
    sg_buf_printf(&m, "unsupported Content-Encoding '%s' (use gzip, deflate or identity)", ce);
    fail(in, 415, m.data, NULL);
    sg_buf_free(&m);
    return;
  }
  const uint8_t *p = (const uint8_t *)req->body.data;
  size_t n = body;
  int rc = sg_inflate(p, n, enc, cfg->max_decompressed_bytes, &in->inflated);
  if (rc == SG_ETOOBIG) {
    fail(in, 413, "request body exceeds max_decompressed_bytes once decompressed", NULL);
    return;
  }
  if (rc != 0 && rc != SG_ENOTFOUND) {
    fail(in, 400, enc == SG_ENC_AUTO ? "request body looks compressed but does not decompress"
                                     : "request body does not decompress as its Content-Encoding says",
         NULL);
    return;
  }
  if (rc == 0) { /* it was compressed: use the inflated copy */
    p = (const uint8_t *)in->inflated.data;
    n = in->inflated.len;
    in->accounted += n;
    atomic_fetch_add(&sg_metrics.inflight_bytes, (int64_t)n);
  }

  sg_buf_t err = SG_BUF_INIT;
  if (in->format == FMT_NATIVE) rc = sg_native_decode_json((const char *)p, n, &in->batch, &err);
  else if (in->proto) rc = sg_otlp_decode_proto(p, n, &in->batch, &err);
  else rc = sg_otlp_decode_json((const char *)p, n, &in->batch, &err);
  if (rc != 0) {
    fail(in, rc == SG_ENOMEM ? 503 : rc == SG_ETOOBIG ? 413 : 400, err.data ? err.data : sg_strerror(rc),
         NULL);
    sg_buf_free(&err);
    return;
  }
  sg_buf_free(&err);
  atomic_fetch_add(&sg_metrics.spans_received, in->batch.n + in->batch.rejected);
  if (sg_lua_rt_hooks(in->w->lua) & SG_LUA_HOOK_TRANSFORM) {
    if (sg_lua_transform(in->w->lua, in->who.project_id, &in->batch, NULL) == SG_ENOMEM) {
      fail(in, 503, "out of memory", "Retry-After: 1\r\n");
      return;
    }
  }
  if (in->batch.n == 0) { /* nothing storable: answer now */
    atomic_fetch_add(&sg_metrics.spans_rejected, in->batch.rejected);
    answer_ok(in);
    return;
  }
  rc = sg_pgsink_submit_as(in->w->sink, in->who.project_id, in->who.has_user ? in->who.user_id : NULL,
                           &in->batch, stored_cb, in);
  if (rc != 0) stored_cb(in, rc, &in->batch);
}

static void auth_cb(void *arg, int rc, const sg_principal_t *who, const char *msg) {
  ingest_t *in = arg;
  if (rc == SG_EUNAVAIL) {
    fail(in, 503, "the API key store is unavailable; retry later", "Retry-After: 2\r\n");
    return;
  }
  if (rc != 0) {
    fail(in, 401, msg ? msg : "invalid API key", "WWW-Authenticate: ApiKey\r\n");
    return;
  }
  in->who = *who;
  decode_and_store(in);
}

void sg__ingest_handle(sg_worker_t *w, sg_http_req_t *req, int format) {
  ingest_t *in = calloc(1, sizeof *in);
  if (!in) {
    sg__respond_error(req, 503, "out of memory", "Retry-After: 1\r\n");
    return;
  }
  in->w = w;
  in->req = req;
  in->format = format;
  sg_span_batch_init(&in->batch);

  char mt[64];
  media_type(sg_http_header(req, "content-type"), mt, sizeof mt);
  if (format == FMT_OTLP && !strcmp(mt, "application/x-protobuf")) {
    in->proto = 1;
  } else if (!strcmp(mt, "application/json")) {
    in->proto = 0;
  } else {
    sg_buf_t m = SG_BUF_INIT;
    sg_buf_printf(&m, "unsupported media type '%s': use %s", mt[0] ? mt : "(none)",
                  format == FMT_OTLP ? "application/x-protobuf or application/json"
                                     : "application/json");
    fail(in, 415, m.data, NULL);
    sg_buf_free(&m);
    return;
  }
  sg_auth_check(w->auth, sg_http_header(req, "authorization"), auth_cb, in);
}
