/* ingest.c - the ingest pipeline of one batch (see ingest.h):
 *   memory budget -> decompress -> decode -> transform -> group commit into
 *   PostgreSQL -> routing/ttl -> spool for ClickHouse (+ fsync) -> result,
 * or for a ClickHouse-only project (routing.lua M.postgres false):
 *   ... -> transform -> stamps (chonly.h) -> ttl -> spool (+ fsync) -> result.
 * Knows nothing of HTTP: the transport's adapter answers. */
#include "ingest.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chonly.h"
#include "decode.h"
#include "err.h"
#include "inflate.h"
#include "jalloc.h"
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
  int ch_only;              /* the project is ClickHouse-only: the spool is the only copy */
  sg_span_batch_t batch;
  sg_jregion_t *region;      /* the batch's JSON values (jalloc.h) */
} ingest_t;

/* Reports res to the transport and frees in. */
static void finish(ingest_t *in, const sg_ingest_result_t *res) {
  in->rq.done(in->rq.arg, res);
  sg_buf_free(&in->inflated);
  sg_span_batch_free(&in->batch);
  sg_jregion_release(in->region); /* after the batch: its values are given back */
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
    else if (in->ch_only)
      fail(in, SG_INGEST_UNAVAILABLE,
           "the spans could not be made durable in the ClickHouse spool; nothing was acknowledged, "
           "retry the request", 1);
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

/* Each span's expiry from ttl.lua into exp[0..n) (from created_at). */
static void expiries(ingest_t *in, int64_t *exp) {
  sg_worker_t *w = in->w;
  int has_ttl = sg_lua_rt_hooks(w->lua) & SG_LUA_HOOK_RETENTION;
  for (size_t i = 0; i < in->batch.n; i++) {
    double days = -1;
    if (has_ttl) sg_lua_retention_days(w->lua, in->who.project_id, &in->batch.spans[i], &days);
    exp[i] = sg_span_expires_us(in->batch.spans[i].created_at_us, days);
  }
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
  if (exp) expiries(in, exp);
  sg_chsink_append(w->chsink, in->who.project_id, in->batch.spans, in->batch.n, exp);
  if (exp != stack) free(exp);
  return 1;
}

/* ---- ClickHouse-only projects ------------------------------------------------------
 *
 * The spool is the spans' only copy: they are acknowledged once their
 * record is durable, and a spool that cannot take them (full, layout
 * unknown, a write error) fails the request as retryable instead of
 * recording a gap, which PostgreSQL could not repair. */

static void warn_transient(size_t n, const char *why);

/* Why span i is rejected, when the row encoder refused it. */
static const char *refused_at(const void *refused, size_t i) {
  return ((const uint8_t *)refused)[i] ? "a value is out of ClickHouse's range" : NULL;
}

/* The stamped spans into the worker's spool; the result after the fsync. */
static void ch_only_spool(ingest_t *in) {
  sg_worker_t *w = in->w;
  size_t n = in->batch.n;
  int64_t *exp = malloc(n * sizeof *exp);
  uint8_t *refused = malloc(n);
  int rc = exp && refused ? 0 : SG_ENOMEM;
  if (rc == 0) {
    expiries(in, exp);
    rc = sg_chsink_append_only(w->chsink, in->who.project_id, in->batch.spans, n, exp, refused);
  }
  if (rc == 0) {
    size_t k = sg_span_batch_drop(&in->batch, refused_at, refused);
    if (k)
      sg_warn("ingest", "%zu spans of a ClickHouse-only project were rejected: a value is out of "
                        "ClickHouse's range", k);
  }
  free(exp);
  free(refused);
  if (rc == 0) {
    atomic_fetch_add(&sg_metrics.spans_stored, in->batch.n);
    atomic_fetch_add(&sg_metrics.spans_rejected, in->batch.rejected);
    if (in->batch.n) ok_after_sync(in);
    else stored_ok(in);
    return;
  }
  char p[37];
  sg_uuid_format(in->who.project_id, p);
  if (rc == SG_ETOOBIG) {
    warn_transient(n, "the ClickHouse spool is full (spool_max_bytes) and the project is ClickHouse-only");
    fail(in, SG_INGEST_UNAVAILABLE,
         "the ClickHouse spool is full and this project's spans are stored only in ClickHouse; "
         "nothing was stored, retry later", 5);
  } else if (rc == SG_EUNAVAIL) {
    warn_transient(n, "ClickHouse has not been reached since start (its table layout is unknown) "
                      "and the project is ClickHouse-only");
    fail(in, SG_INGEST_UNAVAILABLE, "ClickHouse is unavailable; nothing was stored, retry later", 5);
  } else if (rc == SG_ENOMEM) {
    fail(in, SG_INGEST_UNAVAILABLE, "out of memory", 1);
  } else {
    sg_error("ingest", "spooling %zu spans of ClickHouse-only project %s failed: %s", n, p, sg_strerror(rc));
    fail(in, SG_INGEST_UNAVAILABLE, "the spans could not be written to the ClickHouse spool; nothing "
                                    "was stored, retry later", 2);
  }
}

/* An edit's look-up came back: spans ClickHouse holds keep their created_at
 * (their sorting key) and creator, with a version above the stored one. */
static void edit_stored_cb(void *arg, int status, const char *why, const sg_chonly_stored_t *rows, size_t n) {
  ingest_t *in = arg;
  if (status != 0) {
    warn_transient(in->batch.n, why && why[0] ? why : sg_strerror(status));
    fail(in, SG_INGEST_UNAVAILABLE, "ClickHouse is unavailable; the trace was not edited, retry later", 2);
    return;
  }
  sg_chonly_stamp(in->batch.spans, in->batch.n, in->who.has_user ? in->who.user_id : NULL);
  for (size_t i = 0; i < in->batch.n; i++) {
    sg_span_t *s = &in->batch.spans[i];
    const sg_chonly_stored_t *best = NULL;
    for (size_t k = 0; k < n; k++) /* a span under two keys: the one written last */
      if (!memcmp(rows[k].span_id, s->span_id, 16) && (!best || rows[k].row.version > best->row.version))
        best = &rows[k];
    if (!best) continue;
    s->created_at_us = best->row.created_at_us;
    const sg_ch_text_t *cb = &best->row.created_by_id;
    s->has_created_by = cb->p && sg_id_parse(cb->p, cb->n, s->created_by_id) == 0;
    if (s->version <= best->row.version) s->version = s->updated_at_us = best->row.version + 1;
  }
  ch_only_spool(in);
}

/* An edit's look-up of the trace's stored rows. */
static void edit_lookup(ingest_t *in) {
  sg_worker_t *w = in->w;
  sg_ch_version_t ver;
  int rc = sg_chsink_read_version(w->chsink, &ver)
               ? sg_chonly_trace(w->ch, &ver, w->cfg->clickhouse_database, (long)w->cfg->clickhouse_timeout_ms,
                                 in->who.project_id, in->batch.spans[0].trace_id, edit_stored_cb, in)
               : SG_EUNAVAIL;
  if (rc != 0) edit_stored_cb(in, rc, rc == SG_EUNAVAIL ? "ClickHouse has not been reached since start" : NULL, NULL, 0);
}

/* An edit first waits, as the project's reads and deletes do (up to
 * clickhouse_only_read_wait_ms), until no span of the project acknowledged
 * before it is still in a spool: a look-up that missed a span would give
 * its edit the span's new start_time as created_at, a second sorting key,
 * and reads would show the span twice. */
#define EDIT_POLL_MS 5

typedef struct {
  uv_timer_t timer;
  ingest_t *in;
  int64_t start_us;
  uint64_t deadline;
} edit_wait_t;

static void edit_wait_closed(uv_handle_t *h) { free(h->data); }

static void edit_wait_tick(uv_timer_t *t) {
  edit_wait_t *ew = t->data;
  ingest_t *in = ew->in;
  int pending = sg_chsink_pending_before(in->who.project_id, ew->start_us);
  if (pending && uv_now(t->loop) < ew->deadline) return;
  uv_timer_stop(t);
  uv_close((uv_handle_t *)t, edit_wait_closed);
  if (!pending) {
    edit_lookup(in);
    return;
  }
  fail(in, SG_INGEST_UNAVAILABLE, "spans acknowledged before the edit are still on their way to ClickHouse; "
                                  "the trace was not edited, retry later", 1);
}

static void ch_only(ingest_t *in) {
  sg_worker_t *w = in->w;
  in->ch_only = 1;
  sg_chonly_record(w->pg, in->who.project_id);
  if (in->rq.edit) {
    int64_t start = sg_chonly_clock();
    if (!sg_chsink_pending_before(in->who.project_id, start)) {
      edit_lookup(in);
      return;
    }
    edit_wait_t *ew = calloc(1, sizeof *ew);
    if (!ew) {
      fail(in, SG_INGEST_UNAVAILABLE, "out of memory", 1);
      return;
    }
    ew->in = in;
    ew->start_us = start;
    uv_timer_init(&w->loop, &ew->timer);
    ew->timer.data = ew;
    ew->deadline = uv_now(&w->loop) + (uint64_t)w->cfg->clickhouse_only_read_wait_ms;
    uv_timer_start(&ew->timer, edit_wait_tick, EDIT_POLL_MS, EDIT_POLL_MS);
    return;
  }
  sg_chonly_stamp(in->batch.spans, in->batch.n, in->who.has_user ? in->who.user_id : NULL);
  ch_only_spool(in);
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
  /* The values decoded now live and die with the request: one region for
   * them all (jalloc.h); what the transform adds comes from malloc. */
  in->region = sg_jregion_new();
  sg_jregion_t *was = sg_jregion_enter(in->region);
  switch (rq->format) {
  case SG_INGEST_NATIVE_JSON: rc = sg_native_decode_json((const char *)p, n, &in->batch, &err); break;
  case SG_INGEST_OTLP_PROTO: rc = sg_otlp_decode_proto(p, n, &in->batch, &err); break;
  default: rc = sg_otlp_decode_json((const char *)p, n, &in->batch, &err); break;
  }
  sg_jregion_enter(was);
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
  int pg = 1;
  if (w->chsink) sg_lua_route_postgres(w->lua, in->who.project_id, &pg); /* errors: logged, PostgreSQL */
  if (!pg) {
    ch_only(in);
    return;
  }
  rc = sg_pgsink_submit_as(w->sink, in->who.project_id, in->who.has_user ? in->who.user_id : NULL,
                           &in->batch, stored_cb, in);
  if (rc != 0) stored_cb(in, rc, &in->batch);
}
