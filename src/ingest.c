/* ingest.c - the ingest pipeline of one batch (see ingest.h):
 *   memory budget -> decompress -> decode -> transform -> group commit into
 *   PostgreSQL -> routing/ttl -> spool for ClickHouse (+ fsync) -> result.
 * Knows nothing of HTTP: the transport's adapter answers. */
#include "ingest.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "err.h"
#include "inflate.h"
#include "log.h"
#include "metrics.h"
#include "readiness.h"

typedef struct sg_ingest_s {
  struct sg_ingest_s *next; /* in the worker's list waiting for the spool fsync */
  sg_worker_t *w;
  sg_ingest_req_t rq;
  sg_principal_t who;
  sg_buf_t inflated;        /* the decompressed body (counted through rq.reserve) */
  int budget_rc;            /* why the in-flight budget refused the inflated copy, or 0 */
  sg_span_batch_t batch;
} ingest_t;

/* Reports res to the transport and frees in. */
static void finish(ingest_t *in, const sg_ingest_result_t *res) {
  in->rq.done(in->rq.arg, res);
  sg_buf_free(&in->inflated);
  sg_span_batch_free(&in->batch);
  free(in);
}

static void fail(ingest_t *in, sg_ingest_class_t cls, const char *msg, int retry_after_s) {
  sg_ingest_result_t res = {cls, msg, retry_after_s, 0, 0, NULL};
  finish(in, &res);
}

static void stored_ok(ingest_t *in) {
  const sg_span_batch_t *bt = &in->batch;
  sg_ingest_result_t res = {SG_INGEST_OK, bt->reject_msg.data ? bt->reject_msg.data : "", 0,
                            bt->n, bt->rejected, bt};
  finish(in, &res);
}

/* The results of the requests that waited for their spool rows to be
 * durable (one fsync for all of them). When the fsync fails (chsink logs it)
 * the rows may not survive a crash, and nothing else records them for
 * ClickHouse: those requests fail as unavailable, not OK. Their spans are in
 * PostgreSQL; the client's retry is an idempotent upsert that spools them
 * again (into a fresh segment). */
static void synced_cb(void *arg, int rc) {
  ingest_t *in = arg;
  while (in) {
    ingest_t *next = in->next;
    if (rc == 0)
      stored_ok(in);
    else
      fail(in, SG_INGEST_UNAVAILABLE,
           "the spans were stored but could not be queued durably for ClickHouse; "
           "retry the request (it is idempotent)", 1);
    in = next;
  }
}

/* Runs once per loop turn while requests wait for their spool rows to be
 * durable. The fsync runs off the loop (sg_chsink_sync_async), so the worker
 * goes on decoding and committing meanwhile. */
static void sync_cb(uv_timer_t *t) {
  sg_worker_t *w = t->data;
  ingest_t *in = w->sync_head;
  w->sync_head = w->sync_tail = NULL;
  if (w->chsink && sg_chsink_sync_async(w->chsink, synced_cb, in) == 0) return;
  synced_cb(in, w->chsink ? sg_chsink_sync(w->chsink) : 0); /* out of memory: sync here */
}

static void ok_after_sync(ingest_t *in) {
  sg_worker_t *w = in->w;
  in->next = NULL;
  if (w->sync_tail) w->sync_tail->next = in;
  else w->sync_head = in;
  w->sync_tail = in;
  if (!uv_is_active((uv_handle_t *)&w->sync_timer)) uv_timer_start(&w->sync_timer, sync_cb, 0, 0);
}

/* Spools the committed spans for ClickHouse when routing.lua says this
 * project goes there, with each span's expiry from ttl.lua. 1 when rows were
 * spooled (the result then waits for the fsync). */
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
  sg_chsink_append(w->chsink, in->who.project_id, in->batch.spans, in->batch.n, exp);
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
  sg_readiness_note_write(status, why);
  if (status == 0) {
    atomic_fetch_add(&sg_metrics.spans_stored, in->batch.n);
    atomic_fetch_add(&sg_metrics.spans_rejected, in->batch.rejected);
    if (in->w->chsink && in->batch.n && strcmp(in->w->cfg->clickhouse_writes, "capture") && dual_write(in)) {
      ok_after_sync(in);
      return;
    }
    stored_ok(in);
    return;
  }
  if (status == SG_EUNAVAIL || status == SG_EBUSY || status == SG_ECANCELED || status == SG_ETIMEOUT) {
    warn_transient(in->batch.n, why ? why : sg_strerror(status));
    fail(in, SG_INGEST_UNAVAILABLE, "PostgreSQL is unavailable; nothing was stored, retry later", 2);
    return;
  }
  sg_error("ingest", "storing %zu spans failed: %s", in->batch.n, why ? why : sg_strerror(status));
  fail(in, SG_INGEST_INTERNAL, "storing the spans failed; nothing was acknowledged", 0);
}

/* The decompressed copy grows in the request's share of the in-flight
 * memory budget (max_inflight_bytes), checked as it is produced. */
static int inflate_grow_cb(void *arg, size_t n) {
  ingest_t *in = arg;
  return in->budget_rc = in->rq.reserve(in->rq.reserve_arg, n);
}

void sg_ingest_submit(sg_worker_t *w, const sg_principal_t *who, const sg_ingest_req_t *rq) {
  ingest_t *in = calloc(1, sizeof *in);
  if (!in) {
    sg_ingest_result_t res = {SG_INGEST_UNAVAILABLE, "out of memory", 1, 0, 0, NULL};
    rq->done(rq->arg, &res);
    return;
  }
  in->w = w;
  in->rq = *rq;
  in->who = *who;
  sg_span_batch_init(&in->batch);
  const sg_config_t *cfg = w->cfg;

  /* The body itself is counted in the in-flight budget by the transport. */
  atomic_fetch_add(&sg_metrics.bytes_received, rq->len);

  /* A body without bytes has no buffer: the decoders get "" rather than NULL. */
  const uint8_t *p = rq->body ? rq->body : (const uint8_t *)"";
  size_t n = rq->len;
  int enc = rq->encoding, rc = 0;
  int compressed = sg_encoding_resolve(p, n, enc) != SG_ENC_IDENTITY; /* identity: decoded in place */
  if (compressed)
    rc = sg_inflate_ex(p, n, enc, cfg->max_decompressed_bytes, &in->inflated,
                       rq->reserve ? inflate_grow_cb : NULL, in);
  if (rc == SG_EBUSY) {
    fail(in, SG_INGEST_BUSY,
         "the gateway is at its in-flight memory limit (max_inflight_bytes); retry later", 1);
    return;
  }
  if (rc == SG_ETOOBIG) {
    fail(in, SG_INGEST_TOO_LARGE,
         in->budget_rc == SG_ETOOBIG ? "request body exceeds max_inflight_bytes once decompressed"
                                     : "request body exceeds max_decompressed_bytes once decompressed",
         0);
    return;
  }
  if (rc == SG_ENOMEM) {
    fail(in, SG_INGEST_UNAVAILABLE, "out of memory", 1);
    return;
  }
  if (rc != 0) {
    fail(in, SG_INGEST_BAD_INPUT,
         enc == SG_ENC_AUTO ? "request body looks compressed but does not decompress"
                            : "request body does not decompress as its Content-Encoding says",
         0);
    return;
  }
  if (compressed) { /* decode the inflated copy */
    p = (const uint8_t *)in->inflated.data;
    n = in->inflated.len;
  }

  sg_buf_t err = SG_BUF_INIT;
  switch (rq->format) {
  case SG_INGEST_NATIVE_JSON: rc = sg_native_decode_json((const char *)p, n, &in->batch, &err); break;
  case SG_INGEST_OTLP_PROTO: rc = sg_otlp_decode_proto(p, n, &in->batch, &err); break;
  default: rc = sg_otlp_decode_json((const char *)p, n, &in->batch, &err); break;
  }
  if (rc != 0) {
    fail(in, rc == SG_ENOMEM    ? SG_INGEST_UNAVAILABLE
             : rc == SG_ETOOBIG ? SG_INGEST_TOO_LARGE
                                : SG_INGEST_BAD_INPUT,
         err.data ? err.data : sg_strerror(rc), 0);
    sg_buf_free(&err);
    return;
  }
  sg_buf_free(&err);
  atomic_fetch_add(&sg_metrics.spans_received, in->batch.n + in->batch.rejected);
  if (rq->check) {
    char why[400];
    if (rq->check(rq->arg, &in->batch, why, sizeof why) != 0) {
      fail(in, SG_INGEST_BAD_INPUT, why, 0);
      return;
    }
  }
  if (sg_lua_rt_hooks(w->lua) & SG_LUA_HOOK_TRANSFORM) {
    if (sg_lua_transform(w->lua, in->who.project_id, &in->batch, NULL) == SG_ENOMEM) {
      fail(in, SG_INGEST_UNAVAILABLE, "out of memory", 1);
      return;
    }
  }
  if (in->batch.n == 0) { /* nothing storable: done now */
    atomic_fetch_add(&sg_metrics.spans_rejected, in->batch.rejected);
    stored_ok(in);
    return;
  }
  rc = sg_pgsink_submit_as(w->sink, in->who.project_id, in->who.has_user ? in->who.user_id : NULL,
                           &in->batch, stored_cb, in);
  if (rc != 0) stored_cb(in, rc, &in->batch);
}
