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
  sg_buf_t inflated;  /* the decompressed body (counted in the request's in-flight bytes) */
  int budget_rc;      /* why the in-flight budget refused the inflated copy, or 0 */
  sg_span_batch_t batch;
  sg_principal_t who;
} ingest_t;

static void answer_ok(ingest_t *in);
static void fail(ingest_t *in, int status, const char *msg, const char *extra);

/* Runs once per loop turn while requests wait for their spool rows to be
 * durable: one fsync for all of them, then their answers. When the fsync
 * fails (chsink logs it) the rows may not survive a crash, and nothing else
 * records them for ClickHouse: those requests get 503, not 200. Their spans
 * are in PostgreSQL; the client's retry is an idempotent upsert that spools
 * them again (into a fresh segment). */
static void sync_cb(uv_timer_t *t) {
  sg_worker_t *w = t->data;
  ingest_t *in = w->sync_head;
  w->sync_head = w->sync_tail = NULL;
  int rc = w->ch ? sg_chsink_sync(w->ch) : 0;
  while (in) {
    ingest_t *next = in->next;
    if (rc == 0)
      answer_ok(in);
    else
      fail(in, 503, "the spans were stored but could not be queued durably for ClickHouse; "
                    "retry the request (it is idempotent)", "Retry-After: 1\r\n");
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
      exp[i] = sg_span_expires_us(in->batch.spans[i].created_at_us, days);
    }
  }
  sg_chsink_append(w->ch, in->who.project_id, in->batch.spans, in->batch.n, exp);
  if (exp != stack) free(exp);
  return 1;
}

/* One warning a second per worker at most: an outage fails every request. */
static void warn_transient(size_t n, const char *why) {
  static _Thread_local uint64_t last_ms, quiet;
  uint64_t now = uv_hrtime() / 1000000;
  if (last_ms && now - last_ms < 1000) {
    quiet++;
    return;
  }
  if (quiet)
    sg_warn("ingest", "storing %zu spans failed, answered 503 (retryable): %s (and %llu more since the "
                      "last such line)", n, why, (unsigned long long)quiet);
  else
    sg_warn("ingest", "storing %zu spans failed, answered 503 (retryable): %s", n, why);
  last_ms = now;
  quiet = 0;
}

static void stored_cb(void *arg, int status, sg_span_batch_t *batch) {
  ingest_t *in = arg;
  (void)batch;
  const char *why = status ? sg_pgsink_errmsg(in->w->sink) : NULL; /* "<SQLSTATE> <message>" */
  sg__readyz_note_write(status, why);
  if (status == 0) {
    atomic_fetch_add(&sg_metrics.spans_stored, in->batch.n);
    atomic_fetch_add(&sg_metrics.spans_rejected, in->batch.rejected);
    if (in->w->ch && in->batch.n && strcmp(in->w->cfg->clickhouse_writes, "capture") && dual_write(in)) {
      answer_after_sync(in);
      return;
    }
    answer_ok(in);
    return;
  }
  if (status == SG_EUNAVAIL || status == SG_EBUSY || status == SG_ECANCELED || status == SG_ETIMEOUT) {
    warn_transient(in->batch.n, why ? why : sg_strerror(status));
    fail(in, 503, "PostgreSQL is unavailable; nothing was stored, retry later", "Retry-After: 2\r\n");
    return;
  }
  sg_error("ingest", "storing %zu spans failed: %s", in->batch.n, why ? why : sg_strerror(status));
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

/* The decompressed copy grows in the request's share of the in-flight
 * memory budget (max_inflight_bytes), checked as it is produced. */
static int inflate_grow_cb(void *arg, size_t n) {
  ingest_t *in = arg;
  return in->budget_rc = sg_http_req_reserve(in->req, n);
}

static void decode_and_store(ingest_t *in) {
  sg_http_req_t *req = in->req;
  const sg_config_t *cfg = in->w->cfg;

  /* The body itself is already counted in the in-flight budget: the HTTP
   * server reserved it as it arrived (429 there when it did not fit). */
  size_t body = req->body.len;
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
  /* The body buffer is NUL-terminated once allocated; an empty body has
   * none, and the decoders get "" rather than NULL. */
  const uint8_t *p = (const uint8_t *)(req->body.data ? req->body.data : "");
  size_t n = body;
  int rc = 0;
  int compressed = sg_encoding_resolve(p, n, enc) != SG_ENC_IDENTITY; /* identity: decoded in place */
  if (compressed)
    rc = sg_inflate_ex(p, n, enc, cfg->max_decompressed_bytes, &in->inflated, inflate_grow_cb, in);
  if (rc == SG_EBUSY) {
    fail(in, 429, "the gateway is at its in-flight memory limit (max_inflight_bytes); retry later",
         "Retry-After: 1\r\n");
    return;
  }
  if (rc == SG_ETOOBIG) {
    fail(in, 413, in->budget_rc == SG_ETOOBIG
                      ? "request body exceeds max_inflight_bytes once decompressed"
                      : "request body exceeds max_decompressed_bytes once decompressed",
         NULL);
    return;
  }
  if (rc != 0) {
    fail(in, rc == SG_ENOMEM ? 503 : 400,
         rc == SG_ENOMEM ? "out of memory"
         : enc == SG_ENC_AUTO ? "request body looks compressed but does not decompress"
                              : "request body does not decompress as its Content-Encoding says",
         rc == SG_ENOMEM ? "Retry-After: 1\r\n" : NULL);
    return;
  }
  if (compressed) { /* use the inflated copy */
    p = (const uint8_t *)in->inflated.data;
    n = in->inflated.len;
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
