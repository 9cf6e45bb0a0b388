/* edit.c - deleting a trace (see edit.h): PostgreSQL first, then the
 * tombstones through the worker's spool, then the result; for a
 * ClickHouse-only project the trace's live spans are read from ClickHouse
 * and their tombstones spooled, without PostgreSQL. */
#include "edit.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ch_rows.h"
#include "chonly.h"
#include "err.h"
#include "log.h"
#include "pgcapture_rows.h"
#include "pgedit.h"
#include "readiness.h"

typedef struct {
  sg_worker_t *w;
  sg_principal_t who;
  uint8_t trace[16];
  int spool;               /* tombstones go to this worker's spool */
  sg_edit_done_cb done;
  void *arg;
  uint8_t (*ids)[16];      /* every span deleted so far */
  size_t n, cap;
  sg_buf_t rows;           /* one chunk's tombstones */
} del_t;

static void finish(del_t *d, sg_ingest_class_t cls, const char *msg, int retry) {
  sg_edit_result_t res = {cls, msg ? msg : "", retry, d->trace, d->n, (const uint8_t(*)[16])d->ids};
  d->done(d->arg, &res);
  sg_buf_free(&d->rows);
  free(d->ids);
  free(d);
}

static int keep_ids(del_t *d, const sg_pgedit_deleted_t *r) {
  if (d->n + (size_t)r->n > d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 64;
    while (cap < d->n + (size_t)r->n) cap *= 2;
    uint8_t(*ids)[16] = realloc(d->ids, cap * sizeof *ids);
    if (!ids) return SG_ENOMEM;
    d->ids = ids;
    d->cap = cap;
  }
  for (int i = 0; i < r->n; i++) {
    const char *s = PQgetvalue(r->res, i, 1); /* span_id::text */
    if (sg_id_parse(s, strlen(s), d->ids[d->n]) != 0) memset(d->ids[d->n], 0, 16);
    d->n++;
  }
  return 0;
}

/* One chunk's tombstones into d->rows: the deleted rows turned into
 * tombstones at the statement's clock, each with ttl.lua's expires_at.
 * Returns how many rows could not be encoded (their values are out of
 * ClickHouse's range: logged; the marker then stays for migrate), or
 * SG_ENOMEM. */
static int encode_tombstones(del_t *d, const sg_pgedit_deleted_t *r, const sg_ch_layout_t *lay) {
  sg_worker_t *w = d->w;
  int has_ttl = (sg_lua_rt_hooks(w->lua) & SG_LUA_HOOK_RETENTION) != 0, bad = 0;
  sg_buf_reset(&d->rows);
  for (int i = 0; i < r->n; i++) {
    sg_ch_text_row_t row;
    const char *why = "a time";
    int rc = sg_pgedit_row(r, i, &row);
    int64_t expires = INT64_MAX;
    if (rc == 0 && has_ttl) {
      sg_span_t s;
      if ((rc = sg_cap_hook_span(&row, &s, &why)) == 0) {
        double days = -1;
        sg_lua_retention_days(w->lua, d->who.project_id, &s, &days); /* errors: logged, kept forever */
        expires = sg_span_expires_us(row.created_at_us, days);
        sg_span_clear(&s);
      }
    }
    if (rc == 0) {
      sg_cap_tombstone(&row, r->clock_us);
      rc = sg_ch_row_encode_text(lay, d->who.project_id, &row, expires, &d->rows, &why);
    }
    if (rc == SG_ENOMEM) return rc;
    if (rc != 0) {
      char p[37];
      sg_uuid_format(d->who.project_id, p);
      sg_error("edit", "the tombstone of span %s/%s/%s cannot be written to ClickHouse (bad %s: %s); "
                       "`spangate migrate` removes the span there (its range is in spangate_ch_gaps)",
               p, PQgetvalue(r->res, i, 0), PQgetvalue(r->res, i, 1), why, sg_strerror(rc));
      bad++;
    }
  }
  return bad;
}

/* The chunk's tombstones into the spool, made durable. 0 when they are:
 * the marker can go; otherwise (logged) it stays for migrate. */
static int spool_tombstones(del_t *d, const sg_pgedit_deleted_t *r) {
  sg_chsink_t *sink = d->w->chsink;
  const sg_ch_layout_t *lay = sg_chsink_layout(sink);
  char p[37];
  sg_uuid_format(d->who.project_id, p);
  if (!lay) {
    sg_warn("edit", "ClickHouse has not been reached since start: the tombstones of %d deleted spans of "
                    "project %s are not spooled; their range is in spangate_ch_gaps for `spangate migrate`",
            r->n, p);
    return SG_EUNAVAIL;
  }
  int bad = encode_tombstones(d, r, lay);
  if (bad == SG_ENOMEM) {
    sg_error("edit", "out of memory encoding the tombstones of %d deleted spans of project %s; their "
                     "range is in spangate_ch_gaps for `spangate migrate`", r->n, p);
    return bad;
  }
  if (d->rows.len == 0) return SG_EINVAL; /* none encoded (logged) */
  int rc = sg_chsink_append_project_rows(sink, d->who.project_id, d->rows.data, d->rows.len);
  if (rc != 0) {
    sg_error("edit", "the spool took no tombstones of project %s (%s); the range of the %d deleted "
                     "spans is in spangate_ch_gaps for `spangate migrate`",
             p, rc == SG_ETOOBIG ? "full: spool_max_bytes" : sg_strerror(rc), r->n);
    return rc;
  }
  if ((rc = sg_chsink_sync(sink)) != 0) return rc; /* logged by the sink; the marker stays */
  return bad ? SG_EINVAL : 0;
}

static void next_chunk(del_t *d);

static void deleted_cb(void *arg, const sg_pgedit_deleted_t *r) {
  del_t *d = arg;
  sg_readiness_note_write(r->err, r->errmsg);
  if (r->err) {
    const char *why = r->errmsg ? r->errmsg : sg_strerror(r->err);
    if (r->err == SG_EUNAVAIL || r->err == SG_EBUSY || r->err == SG_ECANCELED || r->err == SG_ETIMEOUT) {
      sg_warn("edit", "deleting a trace failed, answered 503 (retryable): %s", why);
      finish(d, SG_INGEST_UNAVAILABLE, "PostgreSQL is unavailable; the trace was not deleted (or not "
                                       "whole), retry later", 2);
    } else {
      sg_error("edit", "deleting a trace failed: %s", why);
      finish(d, SG_INGEST_INTERNAL, "deleting the trace failed", 0);
    }
    return;
  }
  if (keep_ids(d, r) != 0) {
    /* the chunk is deleted and its marker stays: migrate repairs ClickHouse */
    finish(d, SG_INGEST_UNAVAILABLE, "out of memory", 1);
    return;
  }
  if (d->spool && r->n > 0 && spool_tombstones(d, r) == 0) sg_pgedit_drop_marker(d->w->pg, r->marker);
  if (r->n == SG_PGEDIT_DELETE_CHUNK) {
    next_chunk(d);
    return;
  }
  finish(d, SG_INGEST_OK, NULL, 0);
}

static void next_chunk(del_t *d) {
  int rc = sg_pgedit_delete_trace(d->w->pg, d->who.project_id, d->trace, d->spool, deleted_cb, d);
  if (rc != 0) {
    sg_pgedit_deleted_t r;
    memset(&r, 0, sizeof r);
    r.err = rc == SG_ENOMEM ? SG_EUNAVAIL : rc;
    deleted_cb(d, &r);
  }
}

/* ---- ClickHouse-only projects ------------------------------------------------------
 *
 * PostgreSQL has no rows to delete and to take the tombstones' sorting keys
 * from: the trace's live spans are read from ClickHouse (every version,
 * collapsed by chonly.c), each becomes its tombstone (the stored row with
 * is_deleted = 1, deleted_at and a version from the gateway's clock, above
 * the stored one; the row's own expires_at), and the tombstones are spooled
 * and synced before the answer. A span acknowledged but still in a spool
 * when the delete reads ClickHouse is not seen: the delete waits (up to
 * clickhouse_only_read_wait_ms) until no row of the project acknowledged
 * before it is undelivered, as the project's reads do. ClickHouse
 * unreachable, the spool full: 503, nothing deleted (a retry is harmless). */

#define FRESH_POLL_MS 5

typedef struct {
  uv_timer_t timer;
  del_t *d;
  int64_t start_us;
  uint64_t deadline;
} fresh_wait_t;

static void ch_only_synced(void *arg, int status) {
  del_t *d = arg;
  if (status != 0) {
    finish(d, SG_INGEST_UNAVAILABLE, "the tombstones could not be made durable in the ClickHouse spool; "
                                     "retry the delete", 1);
    return;
  }
  finish(d, SG_INGEST_OK, NULL, 0);
}

static void ch_only_rows_cb(void *arg, int status, const char *why, const sg_chonly_stored_t *rows, size_t n) {
  del_t *d = arg;
  char p[37];
  sg_uuid_format(d->who.project_id, p);
  if (status != 0) {
    sg_warn("edit", "deleting a trace of ClickHouse-only project %s: reading its spans from ClickHouse "
                    "failed, answered 503: %s", p, why && why[0] ? why : sg_strerror(status));
    finish(d, SG_INGEST_UNAVAILABLE, "ClickHouse is unavailable; the trace was not deleted, retry later", 2);
    return;
  }
  if (n == 0) {
    finish(d, SG_INGEST_OK, NULL, 0);
    return;
  }
  sg_chsink_t *sink = d->w->chsink;
  const sg_ch_layout_t *lay = sg_chsink_layout(sink);
  if (!lay) {
    finish(d, SG_INGEST_UNAVAILABLE, "ClickHouse is unavailable; the trace was not deleted, retry later", 5);
    return;
  }
  d->ids = malloc(n * sizeof *d->ids);
  if (!d->ids) {
    finish(d, SG_INGEST_UNAVAILABLE, "out of memory", 1);
    return;
  }
  sg_buf_reset(&d->rows);
  int rc = 0;
  for (size_t i = 0; i < n && rc != SG_ENOMEM; i++) {
    sg_ch_text_row_t row = rows[i].row;
    const char *bad = "a value";
    sg_cap_tombstone(&row, sg_chonly_clock());
    rc = sg_ch_row_encode_text(lay, d->who.project_id, &row, rows[i].expires_us, &d->rows, &bad);
    if (rc == 0) {
      memcpy(d->ids[d->n++], rows[i].span_id, 16);
    } else if (rc != SG_ENOMEM) { /* stored in ClickHouse, so it encodes; logged should it not */
      char t[37], s[37];
      sg_uuid_format(rows[i].trace_id, t);
      sg_uuid_format(rows[i].span_id, s);
      sg_error("edit", "the tombstone of span %s/%s/%s cannot be encoded (bad %s: %s); the span stays",
               p, t, s, bad, sg_strerror(rc));
    }
  }
  if (rc == SG_ENOMEM) {
    d->n = 0;
    finish(d, SG_INGEST_UNAVAILABLE, "out of memory", 1);
    return;
  }
  rc = d->rows.len ? sg_chsink_append_project_rows(sink, d->who.project_id, d->rows.data, d->rows.len) : 0;
  if (rc != 0) {
    d->n = 0;
    if (rc == SG_ETOOBIG)
      finish(d, SG_INGEST_UNAVAILABLE, "the ClickHouse spool is full and this project's spans are stored only "
                                       "in ClickHouse; the trace was not deleted, retry later", 5);
    else
      finish(d, SG_INGEST_UNAVAILABLE, "the tombstones could not be written to the ClickHouse spool; the "
                                       "trace was not deleted, retry later", 2);
    return;
  }
  if (sg_chsink_sync_async(sink, ch_only_synced, d) != 0) ch_only_synced(d, sg_chsink_sync(sink));
}

static void ch_only_read(del_t *d) {
  sg_worker_t *w = d->w;
  sg_ch_version_t ver;
  int rc = sg_chsink_read_version(w->chsink, &ver)
               ? sg_chonly_trace(w->ch, &ver, w->cfg->clickhouse_database, (long)w->cfg->clickhouse_timeout_ms,
                                 d->who.project_id, d->trace, ch_only_rows_cb, d)
               : SG_EUNAVAIL;
  if (rc != 0) ch_only_rows_cb(d, rc, rc == SG_EUNAVAIL ? "ClickHouse has not been reached since start" : NULL, NULL, 0);
}

static void fresh_closed(uv_handle_t *h) { free(h->data); }

static void fresh_tick(uv_timer_t *t) {
  fresh_wait_t *fw = t->data;
  del_t *d = fw->d;
  int pending = sg_chsink_pending_before(d->who.project_id, fw->start_us);
  if (pending && uv_now(t->loop) < fw->deadline) return;
  uv_timer_stop(t);
  uv_close((uv_handle_t *)t, fresh_closed);
  if (!pending) {
    ch_only_read(d);
    return;
  }
  finish(d, SG_INGEST_UNAVAILABLE, "spans acknowledged before the delete are still on their way to ClickHouse; "
                                   "the trace was not deleted, retry later", 1);
}

static void ch_only_delete(del_t *d) {
  sg_worker_t *w = d->w;
  int64_t start = sg_chonly_clock();
  if (!sg_chsink_pending_before(d->who.project_id, start)) {
    ch_only_read(d);
    return;
  }
  fresh_wait_t *fw = calloc(1, sizeof *fw);
  if (!fw) {
    finish(d, SG_INGEST_UNAVAILABLE, "out of memory", 1);
    return;
  }
  fw->d = d;
  fw->start_us = start;
  uv_timer_init(&w->loop, &fw->timer);
  fw->timer.data = fw;
  fw->deadline = uv_now(&w->loop) + (uint64_t)w->cfg->clickhouse_only_read_wait_ms;
  uv_timer_start(&fw->timer, fresh_tick, FRESH_POLL_MS, FRESH_POLL_MS);
}

void sg_edit_delete_trace(sg_worker_t *w, const sg_principal_t *who, const uint8_t trace_id[16],
                          sg_edit_done_cb done, void *arg) {
  del_t *d = calloc(1, sizeof *d);
  if (!d) {
    sg_edit_result_t res = {SG_INGEST_UNAVAILABLE, "out of memory", 1, trace_id, 0, NULL};
    done(arg, &res);
    return;
  }
  d->w = w;
  d->who = *who;
  memcpy(d->trace, trace_id, 16);
  d->done = done;
  d->arg = arg;
  int pg = 1;
  if (w->chsink) sg_lua_route_postgres(w->lua, who->project_id, &pg); /* errors: logged, PostgreSQL */
  if (!pg) {
    ch_only_delete(d);
    return;
  }
  if (w->chsink && strcmp(w->cfg->clickhouse_writes, "capture") != 0) {
    int on = 1;
    sg_lua_route_clickhouse(w->lua, who->project_id, &on); /* errors: logged, default on */
    d->spool = on;
  }
  next_chunk(d);
}
