/* read.c - the read endpoints (docs/read.md):
 *   GET  /v1/traces/{trace_id}   the spans of one trace
 *   POST /v1/spans/query         Agenta's filtering + windowing
 *   GET  /v1/analytics/spans     counts, errors, percentiles, metrics
 * each from PostgreSQL or ClickHouse.
 *
 * Every request authenticates first (as ingest does) and reads only the
 * key's project. The PostgreSQL SQL comes from read_filter.c, which binds
 * every value the client sent as a parameter; the ClickHouse path is
 * read_ch.c's. A read goes to ClickHouse when the dual-write is on,
 * routing.lua's clickhouse() writes the project there and its
 * read_backend() says "clickhouse" for this endpoint, and ClickHouse is
 * known to hold every span acknowledged before the read began (the
 * freshness rule, "backend choice" below); otherwise, or when ClickHouse
 * cannot answer, PostgreSQL does. The answer says which in
 * X-Spangate-Read-Backend (and why not ClickHouse in
 * X-Spangate-Read-Fallback). A ClickHouse-only project (routing.lua
 * M.postgres false) has no spans in PostgreSQL: its reads always go to
 * ClickHouse, after waiting (up to clickhouse_only_read_wait_ms) for the
 * spans acknowledged before the read to get there, and answer 503 when
 * they do not or ClickHouse cannot answer.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ch.h"
#include "chpending.h"
#include "err.h"
#include "json_load.h"
#include "log.h"
#include "read.h"
#include "read_analytics.h"
#include "read_ch.h"
#include "read_filter.h"
#include "read_span.h"
#include "span.h"
#include "worker.h"

enum { R_TRACE, R_QUERY, R_ANALYTICS };

typedef struct {
  sg_worker_t *w;
  sg_http_req_t *req;
  int kind;
  char id_text[80];      /* the {trace_id} path segment */
  uint8_t trace_id[16];
  sg_principal_t who;
  sg_rf_query_t q;
  sg_rf_analytics_t an;
  json_t *body;
  int routed;            /* a store was chosen: the answer names it */
  int backend;           /* SG_READ_POSTGRES / SG_READ_CLICKHOUSE */
  char fallback[160];    /* why PostgreSQL answers a read routed to ClickHouse */
  int64_t start_us;      /* when the read began (the freshness rule) */
  int ch_only;           /* a ClickHouse-only project: never PostgreSQL */
} rd_t;

static void rd_free(rd_t *r) {
  sg_rf_query_free(&r->q);
  sg_rf_analytics_free(&r->an);
  json_decref(r->body);
  free(r);
}

/* X-Spangate-Read-Backend (and -Fallback) before extra. */
static const char *rd_headers(rd_t *r, const char *extra, char *buf, size_t n) {
  if (!r->routed) return extra;
  int k = snprintf(buf, n, "X-Spangate-Read-Backend: %s\r\n",
                   r->backend == SG_READ_CLICKHOUSE ? "clickhouse" : "postgres");
  if (r->fallback[0] && k > 0 && (size_t)k < n) k += snprintf(buf + k, n - (size_t)k, "X-Spangate-Read-Fallback: %s\r\n", r->fallback);
  if (extra && k > 0 && (size_t)k < n) snprintf(buf + k, n - (size_t)k, "%s", extra);
  return buf;
}

static void rd_fail(rd_t *r, int status, const char *msg, const char *extra) {
  char h[512];
  sg_http_respond_error(r->req, status, msg, rd_headers(r, extra, h, sizeof h));
  rd_free(r);
}

static void rd_respond_raw(rd_t *r, const char *body, size_t len) {
  char h[512];
  sg_http_respond(r->req, 200, "application/json", body, len, rd_headers(r, NULL, h, sizeof h));
  rd_free(r);
}

static void rd_respond(rd_t *r, sg_buf_t *b) { rd_respond_raw(r, b->data, b->len); }

/* A failed PostgreSQL query: the client learns the class, the log the cause. */
static void pg_fail(rd_t *r, int err, const char *errmsg) {
  if (err == SG_ETIMEOUT && errmsg && strstr(errmsg, "statement timeout")) {
    /* 57014 from the read pool's statement_timeout (not an operator's cancel). */
    char msg[256];
    snprintf(msg, sizeof msg,
             "the query ran longer than query_timeout_ms (%lld ms) and was canceled; narrow the "
             "filter or the time range",
             r->w->cfg->query_timeout_ms);
    sg_warn("read", "query canceled after query_timeout_ms (%lld ms): %s", r->w->cfg->query_timeout_ms,
            errmsg);
    rd_fail(r, 504, msg, NULL);
  } else if (err == SG_EUNAVAIL || err == SG_EBUSY || err == SG_ECANCELED || err == SG_ETIMEOUT) {
    /* Transient: PostgreSQL down, or a failure of the moment (its SQLSTATE
     * is in the log when the server gave one). */
    if (errmsg) sg_warn("read", "query failed, answered 503: %s", errmsg);
    rd_fail(r, 503, "PostgreSQL is unavailable; retry later", "Retry-After: 2\r\n");
  } else if (err == SG_EPOISON) {
    /* Class 22: a bound value the column or operator cannot take (a regular
     * expression that does not compile, a label the database's enum lacks). */
    sg_warn("read", "query rejected: %s", errmsg ? errmsg : sg_strerror(err));
    rd_fail(r, 400, "a filter value is not valid for its field or operator", NULL);
  } else {
    sg_error("read", "query failed: %s", errmsg ? errmsg : sg_strerror(err));
    rd_fail(r, 500, "the read failed", NULL);
  }
}

static int run_pg(rd_t *r, const char *sql, sg_pg_cb cb) {
  int rc = sg_pg_query(r->w->read_pg, sql, (int)r->q.nparams, (const char *const *)r->q.params, NULL,
                       NULL, cb, r);
  if (rc != 0) pg_fail(r, rc, NULL);
  return rc;
}

/* Row i of res as the span renderer's value array. */
static void row_values(PGresult *res, int i, const char *v[SG_RF_NCOLS]) {
  for (int c = 0; c < SG_RF_NCOLS; c++) v[c] = PQgetisnull(res, i, c) ? NULL : PQgetvalue(res, i, c);
}

static int put_spans(PGresult *res, int n, sg_buf_t *b) {
  int rc = sg_buf_printf(b, "{\"count\":%d,\"spans\":[", n);
  for (int i = 0; rc == 0 && i < n; i++) {
    const char *v[SG_RF_NCOLS];
    row_values(res, i, v);
    if (i) rc = sg_buf_putc(b, ',');
    rc = rc ? rc : sg_rf_span_json(v, b);
  }
  return rc ? rc : sg_buf_putc(b, ']');
}

/* ---- GET /v1/traces/{trace_id} ------------------------------------------------ */

static void trace_cb(void *arg, PGresult *res, int err, const char *errmsg) {
  rd_t *r = arg;
  if (err) {
    pg_fail(r, err, errmsg);
    return;
  }
  int n = res ? PQntuples(res) : 0;
  if (n == 0) {
    char hex[33], msg[80];
    sg_hex32_format(r->trace_id, hex);
    snprintf(msg, sizeof msg, "trace %s not found", hex);
    rd_fail(r, 404, msg, NULL);
    return;
  }
  sg_buf_t b = SG_BUF_INIT;
  int rc = put_spans(res, n, &b);
  rc = rc ? rc : sg_buf_puts(&b, "}\n");
  if (rc) {
    sg_buf_free(&b);
    sg_error("read", "rendering trace: %s", sg_strerror(rc));
    rd_fail(r, 500, "the read failed", NULL);
    return;
  }
  rd_respond(r, &b);
  sg_buf_free(&b);
}

static void route(rd_t *r);

static void trace_start(rd_t *r) {
  size_t n = strlen(r->id_text);
  /* Trace ids: 32 hex digits, 0x + 32, or a dashed UUID (not the 16-hex
   * span form sg_id_parse also knows). */
  if ((n != 32 && n != 34 && n != 36) || sg_id_parse(r->id_text, n, r->trace_id) != 0) {
    rd_fail(r, 400, "trace id must be 32 hex digits, 0x-prefixed hex or a dashed UUID", NULL);
    return;
  }
  route(r);
}

static void trace_pg(rd_t *r) {
  char pid[37], tid[37];
  sg_uuid_format(r->who.project_id, pid);
  sg_uuid_format(r->trace_id, tid);
  if (sg_rf_param(&r->q, pid, 36) < 0 || sg_rf_param(&r->q, tid, 36) < 0) {
    rd_fail(r, 503, "out of memory", "Retry-After: 1\r\n");
    return;
  }
  run_pg(r, sg_rf_trace_sql(), trace_cb);
}

/* ---- POST /v1/spans/query ---------------------------------------------------------- */

static void query_cb(void *arg, PGresult *res, int err, const char *errmsg) {
  rd_t *r = arg;
  if (err) {
    pg_fail(r, err, errmsg);
    return;
  }
  int n = res ? PQntuples(res) : 0, more = n > r->q.limit;
  if (more) n = r->q.limit;
  sg_buf_t b = SG_BUF_INIT;
  int rc = put_spans(res, n, &b);
  rc = rc ? rc : sg_buf_printf(&b, ",\"windowing\":{\"limit\":%d,\"order\":\"%s\"", r->q.limit,
                               r->q.descending ? "descending" : "ascending");
  if (rc == 0 && more) {
    /* The cursor is the last row returned: the next page starts after it. */
    uint8_t t[16], s[16];
    const char *tv = PQgetvalue(res, n - 1, SG_RF_TRACE_ID), *sv = PQgetvalue(res, n - 1, SG_RF_SPAN_ID);
    char cur[SG_RF_CURSOR_LEN + 1];
    long long us = strtoll(PQgetvalue(res, n - 1, SG_RF_START_US), NULL, 10);
    if (sg_id_parse(tv, strlen(tv), t) || sg_id_parse(sv, strlen(sv), s)) rc = SG_EINVAL;
    if (rc == 0) {
      sg_rf_cursor_format(r->q.descending, us, t, s, cur);
      rc = sg_buf_printf(&b, ",\"next\":\"%s\"", cur);
    }
  }
  rc = rc ? rc : sg_buf_puts(&b, "}}\n");
  if (rc) {
    sg_buf_free(&b);
    sg_error("read", "rendering spans: %s", sg_strerror(rc));
    rd_fail(r, 500, "the read failed", NULL);
    return;
  }
  rd_respond(r, &b);
  sg_buf_free(&b);
}

static void query_start(rd_t *r) {
  sg_http_req_t *req = r->req;
  size_t i = 0;
  while (i < req->body.len && strchr(" \t\r\n", req->body.data[i])) i++;
  if (i < req->body.len) {
    json_error_t je;
    int lrc = sg_json_load_bounded(req->body.data, req->body.len, JSON_REJECT_DUPLICATES,
                                   sg_json_tree_budget(req->body.len), &r->body, &je, NULL);
    if (lrc == SG_ETOOBIG) {
      rd_fail(r, 413, "query body too large: parsing it would take more than 64x its size "
              "(or 256 MiB) of memory", NULL);
      return;
    }
    if (!r->body || !json_is_object(r->body)) {
      char msg[256];
      if (r->body) snprintf(msg, sizeof msg, "body must be a JSON object");
      else snprintf(msg, sizeof msg, "body is not valid JSON: %s (line %d, column %d)", je.text, je.line,
                    je.column);
      rd_fail(r, 400, msg, NULL);
      return;
    }
  }
  sg_buf_t err = SG_BUF_INIT;
  int rc = sg_rf_compile_query(r->body, r->who.project_id, &r->q, &err);
  if (rc) {
    rd_fail(r, rc == SG_ENOMEM ? 503 : 400, err.data ? err.data : sg_strerror(rc), NULL);
    sg_buf_free(&err);
    return;
  }
  sg_buf_free(&err);
  route(r);
}

static void query_pg(rd_t *r) { run_pg(r, r->q.sql.data, query_cb); }

/* ---- GET /v1/analytics/spans ------------------------------------------------------------ */

static int parse_f8_array(const char *s, double p[3]) {
  /* "{1.5,2,3}" */
  if (*s++ != '{') return SG_EINVAL;
  for (int i = 0; i < 3; i++) {
    char *end;
    p[i] = strtod(s, &end);
    if (end == s || *end != (i < 2 ? ',' : '}')) return SG_EINVAL;
    s = end + 1;
  }
  return 0;
}

static void analytics_pg_cb(void *arg, PGresult *res, int err, const char *errmsg) {
  rd_t *r = arg;
  if (err) {
    pg_fail(r, err, errmsg);
    return;
  }
  int n = res ? PQntuples(res) : 0;
  sg_buf_t b = SG_BUF_INIT;
  int rc = sg_rf_analytics_head(&r->an, "postgres", &b);
  for (int i = 0; rc == 0 && i < n; i++) {
    sg_rf_arow_t a;
    memset(&a, 0, sizeof a);
    int c = 0;
    a.bucket = strtoll(PQgetvalue(res, i, c++), NULL, 10);
    for (int d = 0; d < SG_RF_NDIMS; d++)
      if (r->an.dims & (1u << d)) {
        a.g[d] = PQgetvalue(res, i, c);
        a.glen[d] = (size_t)PQgetlength(res, i, c++);
      }
    for (int d = 0; d < r->an.nattr; d++, c++) {
      a.ag[d] = PQgetisnull(res, i, c) ? NULL : PQgetvalue(res, i, c);
      a.aglen[d] = (size_t)PQgetlength(res, i, c);
    }
    a.count = strtoll(PQgetvalue(res, i, c++), NULL, 10);
    a.errors = strtoll(PQgetvalue(res, i, c++), NULL, 10);
    rc = parse_f8_array(PQgetvalue(res, i, c++), a.p);
    for (int m = 0; m < r->an.nmetric; m++) {
      a.has[m] = !PQgetisnull(res, i, c);
      a.sum[m] = a.has[m] ? strtod(PQgetvalue(res, i, c), NULL) : 0; /* the exact sum, rounded once */
      c++;
      a.n[m] = strtoll(PQgetvalue(res, i, c++), NULL, 10);
    }
    rc = rc ? rc : sg_rf_analytics_row(&r->an, &a, i == 0, &b);
  }
  rc = rc ? rc : sg_rf_analytics_tail((size_t)n, &b);
  if (rc) {
    sg_buf_free(&b);
    sg_error("read", "rendering analytics: %s", sg_strerror(rc));
    rd_fail(r, 500, "the read failed", NULL);
    return;
  }
  rd_respond(r, &b);
  sg_buf_free(&b);
}

static void analytics_start(rd_t *r) {
  sg_buf_t err = SG_BUF_INIT;
  int rc = sg_rf_analytics_parse(r->req->query, (int64_t)time(NULL), &r->an, &err);
  if (rc) {
    rd_fail(r, rc == SG_ENOMEM ? 503 : 400, err.data ? err.data : sg_strerror(rc), NULL);
    sg_buf_free(&err);
    return;
  }
  sg_buf_free(&err);
  route(r);
}

static void analytics_pg(rd_t *r) {
  int rc = sg_rf_analytics_pg_sql(&r->an, &r->q.sql);
  rc = rc ? rc : sg_rf_analytics_pg_params(&r->an, r->who.project_id, &r->q);
  if (rc) {
    rd_fail(r, 503, "out of memory", "Retry-After: 1\r\n");
    return;
  }
  run_pg(r, r->q.sql.data, analytics_pg_cb);
}

/* ---- backend choice ---------------------------------------------------------------
 *
 * ClickHouse serves a read when routing.lua sends it there and ClickHouse
 * holds every span acknowledged before the read began: no row of the
 * project appended before then is still in a spool (chpending.h), and no
 * gap of the project is recorded (spangate_ch_gaps, looked at again when
 * the last look is older than GAP_MAX_AGE_US). Otherwise PostgreSQL
 * answers and X-Spangate-Read-Fallback says why. */

#define GAP_MAX_AGE_US 5000000

static const char *const endpoint_names[] = {"trace", "query", "analytics"};

static int64_t wall_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The read as routing.lua sees it: {endpoint = ..., ...}. */
static json_t *lua_view(rd_t *r) {
  json_t *v = json_object();
  if (!v) return NULL;
  if (r->kind == R_TRACE) {
    char hex[33];
    sg_hex32_format(r->trace_id, hex);
    json_object_set_new(v, "trace_id", json_string(hex));
  } else if (r->kind == R_QUERY) {
    if (r->body) json_object_update(v, r->body);
  } else {
    json_t *dims = json_array();
    for (int i = 0; dims && i < SG_RF_NDIMS; i++)
      if (r->an.dims & (1u << i)) json_array_append_new(dims, json_string(sg_rf_dims[i]));
    for (int i = 0; dims && i < r->an.nattr; i++) json_array_append_new(dims, json_string(r->an.attr[i].name));
    json_t *ms = json_array();
    for (int i = 0; ms && i < r->an.nmetric; i++) json_array_append_new(ms, json_string(r->an.metric[i].name));
    json_object_set_new(v, "from", json_integer(r->an.from_s));
    json_object_set_new(v, "to", json_integer(r->an.to_s));
    json_object_set_new(v, "bucket", json_integer(r->an.bucket_s));
    if (dims) json_object_set_new(v, "group_by", dims);
    if (ms) json_object_set_new(v, "metrics", ms);
  }
  json_object_set_new(v, "endpoint", json_string(endpoint_names[r->kind]));
  return v;
}

/* routing.lua's say, for this project and endpoint. */
static int lua_backend(rd_t *r) {
  sg_worker_t *w = r->w;
  if (!w->cfg->use_clickhouse) return SG_READ_POSTGRES;
  int on = 0, backend = SG_READ_POSTGRES;
  sg_lua_route_clickhouse(w->lua, r->who.project_id, &on);
  if (!on) return SG_READ_POSTGRES;
  json_t *qj = lua_view(r);
  sg_lua_read_backend(w->lua, r->who.project_id, qj, endpoint_names[r->kind], &backend); /* errors: logged, postgres */
  json_decref(qj);
  return backend;
}

static void run_postgres(rd_t *r) {
  r->backend = SG_READ_POSTGRES;
  switch (r->kind) {
  case R_TRACE: trace_pg(r); return;
  case R_QUERY: query_pg(r); return;
  default: analytics_pg(r); return;
  }
}

/* A ClickHouse-only project's read ClickHouse cannot serve now: 503, the
 * reason for the client (PostgreSQL does not have the spans). */
static void ch_only_unavailable(rd_t *r, const char *why, int retry_s) {
  char msg[256], h[32];
  r->backend = SG_READ_CLICKHOUSE;
  snprintf(msg, sizeof msg, "%s; the project is ClickHouse-only, retry later", why);
  snprintf(h, sizeof h, "Retry-After: %d\r\n", retry_s);
  rd_fail(r, 503, msg, h);
}

/* ClickHouse was chosen but PostgreSQL answers: said in the headers and,
 * when ClickHouse failed, in the log. */
static void pg_instead(rd_t *r, const char *why) {
  if (r->ch_only) { /* never PostgreSQL: it does not have the spans */
    ch_only_unavailable(r, why, 2);
    return;
  }
  snprintf(r->fallback, sizeof r->fallback, "%s", why);
  for (char *c = r->fallback; *c; c++)
    if (*c == '\r' || *c == '\n' || (unsigned char)*c < 0x20) *c = ' ';
  run_postgres(r);
}

static void ch_done(void *arg, const sg_rch_result_t *res) {
  rd_t *r = arg;
  if (res->status == 0 && r->ch_only) {
    sg_warn("read", "ClickHouse could not answer a read of a ClickHouse-only project, answered 503: %s",
            res->why ? res->why : "?");
    ch_only_unavailable(r, "ClickHouse could not answer", 2);
    return;
  }
  if (res->status == 0) {
    sg_warn("read", "ClickHouse could not answer, PostgreSQL does: %s", res->why ? res->why : "?");
    pg_instead(r, "ClickHouse could not answer");
    return;
  }
  if (res->status >= 500 && res->why) sg_error("read", "ClickHouse read: %s", res->why);
  else if (res->why) sg_warn("read", "ClickHouse read: %s", res->why);
  if (res->status == 200) rd_respond_raw(r, res->body, res->len);
  else rd_fail(r, res->status, res->body ? res->body : "the read failed", NULL);
}

static void run_clickhouse(rd_t *r) {
  sg_worker_t *w = r->w;
  sg_ch_client_t *ch = w->ch; /* the worker's client */
  sg_ch_version_t ver;
  if (!ch || !sg_chsink_read_version(w->chsink, &ver)) {
    pg_instead(r, ch ? "the ClickHouse version is not known yet" : "no ClickHouse client");
    return;
  }
  r->backend = SG_READ_CLICKHOUSE;
  sg_rch_opts_t o = {ch, &w->loop, {&ver, w->cfg->clickhouse_database, {0}},
                     w->cfg->query_timeout_ms > 0 ? (uint64_t)w->cfg->query_timeout_ms : 0};
  memcpy(o.c.project, r->who.project_id, 16);
  int rc;
  if (r->kind == R_TRACE) {
    rc = sg_rch_trace(&o, r->trace_id, ch_done, r);
  } else if (r->kind == R_QUERY) {
    sg_buf_t err = SG_BUF_INIT;
    rc = sg_rch_query(&o, r->body, ch_done, r, &err);
    if (rc == SG_EINVAL) {
      rd_fail(r, 400, err.data ? err.data : "a filter value is not valid for its field or operator", NULL);
      sg_buf_free(&err);
      return;
    }
    sg_buf_free(&err);
  } else {
    /* from the spans, not the materialized spans_analytics: it counts a
     * re-sent span's duration twice and keeps a changed span under its old
     * values, and answers must equal PostgreSQL's */
    rc = sg_rch_analytics(&o, &r->an, ch_done, r);
  }
  if (rc) pg_instead(r, "out of memory");
}

/* The project's open gaps, looked at in spangate_ch_gaps. */
typedef struct {
  rd_t *r;
  int64_t asked_us;
  char pid[37];
  const char *params[1];
} gapq_t;

static void gap_cb(void *arg, PGresult *res, int err, const char *errmsg) {
  gapq_t *g = arg;
  rd_t *r = g->r;
  if (err && !(errmsg && strstr(errmsg, "42P01"))) { /* no table (an older schema): no gaps */
    sg_warn("read", "could not look at spangate_ch_gaps: %s", errmsg ? errmsg : sg_strerror(err));
    free(g);
    pg_instead(r, "spangate_ch_gaps could not be read");
    return;
  }
  int open = !err && res && PQntuples(res) > 0;
  sg_chpending_gap_checked(r->who.project_id, open, g->asked_us);
  free(g);
  if (open) pg_instead(r, "the project has spans missing from ClickHouse (spangate_ch_gaps)");
  else run_clickhouse(r);
}

/* ---- ClickHouse-only projects ------------------------------------------------------
 *
 * PostgreSQL has none of their spans after the cut-over, so "never silently
 * stale" means waiting: the read polls the table of undelivered rows
 * (chpending.h) every FRESH_POLL_MS until no row of the project appended
 * before the read began is left, then reads ClickHouse; after
 * clickhouse_only_read_wait_ms it answers 503 with Retry-After. No gap can
 * be recorded for such a project (a full spool refuses its spans instead),
 * so spangate_ch_gaps is not consulted: gaps from before the cut-over are
 * repaired before it (docs/cutover.md). */

#define FRESH_POLL_MS 5

typedef struct {
  uv_timer_t timer;
  rd_t *r;
  uint64_t deadline;
} fresh_wait_t;

static void fresh_closed(uv_handle_t *h) { free(h->data); }

static void fresh_tick(uv_timer_t *t) {
  fresh_wait_t *fw = t->data;
  rd_t *r = fw->r;
  int pending = sg_chpending_before(r->who.project_id, r->start_us);
  if (pending && uv_now(t->loop) < fw->deadline) return;
  uv_timer_stop(t);
  uv_close((uv_handle_t *)t, fresh_closed);
  if (!pending) {
    run_clickhouse(r);
    return;
  }
  sg_warn("read", "a read of a ClickHouse-only project waited %lld ms for spans acknowledged before it to "
                  "reach ClickHouse; answered 503", r->w->cfg->clickhouse_only_read_wait_ms);
  ch_only_unavailable(r, "spans acknowledged before the read are still on their way to ClickHouse", 1);
}

static void route_ch_only(rd_t *r) {
  r->ch_only = 1;
  r->backend = SG_READ_CLICKHOUSE;
  sg_ch_version_t ver;
  if (!sg_chsink_read_version(r->w->chsink, &ver)) {
    ch_only_unavailable(r, "ClickHouse has not been reached since the gateway started", 5);
    return;
  }
  if (!sg_chpending_before(r->who.project_id, r->start_us)) {
    run_clickhouse(r);
    return;
  }
  fresh_wait_t *fw = calloc(1, sizeof *fw);
  if (!fw) {
    ch_only_unavailable(r, "out of memory", 1);
    return;
  }
  fw->r = r;
  uv_timer_init(&r->w->loop, &fw->timer);
  fw->timer.data = fw;
  fw->deadline = uv_now(&r->w->loop) + (uint64_t)r->w->cfg->clickhouse_only_read_wait_ms;
  uv_timer_start(&fw->timer, fresh_tick, FRESH_POLL_MS, FRESH_POLL_MS);
}

static void route(rd_t *r) {
  r->start_us = wall_us();
  r->routed = 1;
  int pg = 1;
  if (r->w->chsink) sg_lua_route_postgres(r->w->lua, r->who.project_id, &pg); /* errors: logged, PostgreSQL */
  if (!pg) {
    route_ch_only(r);
    return;
  }
  if (lua_backend(r) != SG_READ_CLICKHOUSE) {
    run_postgres(r);
    return;
  }
  const uint8_t *p = r->who.project_id;
  sg_ch_version_t ver;
  if (!sg_chsink_read_version(r->w->chsink, &ver)) {
    pg_instead(r, "the ClickHouse version is not known yet");
    return;
  }
  if (sg_chpending_before(p, r->start_us)) {
    pg_instead(r, "spans acknowledged before the read are still on their way to ClickHouse");
    return;
  }
  int gap = sg_chpending_gap_state(p, wall_us(), GAP_MAX_AGE_US);
  if (gap == SG_GAP_YES) {
    pg_instead(r, "the project has spans missing from ClickHouse (spangate_ch_gaps)");
    return;
  }
  if (gap == SG_GAP_NO) {
    run_clickhouse(r);
    return;
  }
  gapq_t *g = calloc(1, sizeof *g);
  if (!g) {
    pg_instead(r, "out of memory");
    return;
  }
  g->r = r;
  g->asked_us = wall_us();
  sg_uuid_format(p, g->pid);
  g->params[0] = g->pid;
  static const char sql[] = "SELECT 1 FROM spangate_ch_gaps WHERE project_id = $1::uuid AND repaired_at IS NULL LIMIT 1";
  if (sg_pg_query(r->w->read_pg, sql, 1, g->params, NULL, NULL, gap_cb, g) != 0) {
    free(g);
    pg_instead(r, "spangate_ch_gaps could not be read");
  }
}

/* ---- entry points --------------------------------------------------------------------- */

/* The request's state, with the key's principal; NULL (answered 503) when
 * out of memory. */
static rd_t *start(const sg_route_call_t *call, int kind) {
  rd_t *r = calloc(1, sizeof *r);
  if (!r) {
    sg_http_respond_error(call->req, 503, "out of memory", "Retry-After: 1\r\n");
    return NULL;
  }
  r->w = call->w;
  r->req = call->req;
  r->who = *call->who;
  r->kind = kind;
  sg_rf_query_init(&r->q);
  if (call->param_len && call->param_len < sizeof r->id_text) /* too long: left empty, a bad id */
    memcpy(r->id_text, call->param, call->param_len);
  return r;
}

void sg__read_trace(const sg_route_call_t *call) {
  rd_t *r = start(call, R_TRACE);
  if (r) trace_start(r);
}

void sg__read_query(const sg_route_call_t *call) {
  rd_t *r = start(call, R_QUERY);
  if (r) query_start(r);
}

void sg__read_analytics(const sg_route_call_t *call) {
  rd_t *r = start(call, R_ANALYTICS);
  if (r) analytics_start(r);
}
