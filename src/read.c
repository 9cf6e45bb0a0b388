/* read.c - the read endpoints (docs/read.md):
 *   GET  /v1/traces/{trace_id}   the spans of one trace          PostgreSQL
 *   POST /v1/spans/query         Agenta's filtering + windowing  PostgreSQL
 *   GET  /v1/analytics/spans     counts, errors, percentiles     PostgreSQL or ClickHouse
 *
 * The router authenticates every request first (the table's key column)
 * and a handler reads only the key's project. The SQL comes from read_filter.c, which binds every value
 * the client sent as a parameter. Analytics go to ClickHouse only when the
 * dual-write is on, routing.lua's clickhouse() writes the project there and
 * its read_backend() says "clickhouse"; they read the spans_analytics table
 * the materialized view fills (ch_schema.c).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ch.h"
#include "err.h"
#include "json_load.h"
#include "log.h"
#include "read.h"
#include "read_analytics.h"
#include "read_filter.h"
#include "read_span.h"
#include "span.h"
#include "worker.h"

typedef struct {
  sg_worker_t *w;
  sg_http_req_t *req;
  char id_text[80];      /* the {trace_id} path segment */
  uint8_t trace_id[16];
  sg_principal_t who;
  sg_rf_query_t q;
  sg_rf_analytics_t an;
  json_t *body;
} rd_t;

static void rd_free(rd_t *r) {
  sg_rf_query_free(&r->q);
  json_decref(r->body);
  free(r);
}

static void rd_fail(rd_t *r, int status, const char *msg, const char *extra) {
  sg_http_respond_error(r->req, status, msg, extra);
  rd_free(r);
}

static void rd_respond(rd_t *r, sg_buf_t *b) {
  sg_http_respond(r->req, 200, "application/json", b->data, b->len, NULL);
  rd_free(r);
}

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

static void trace_start(rd_t *r) {
  size_t n = strlen(r->id_text);
  /* Trace ids: 32 hex digits, 0x + 32, or a dashed UUID (not the 16-hex
   * span form sg_id_parse also knows). */
  if ((n != 32 && n != 34 && n != 36) || sg_id_parse(r->id_text, n, r->trace_id) != 0) {
    rd_fail(r, 400, "trace id must be 32 hex digits, 0x-prefixed hex or a dashed UUID", NULL);
    return;
  }
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
  run_pg(r, r->q.sql.data, query_cb);
}

/* ---- GET /v1/analytics/spans ------------------------------------------------------------ */

typedef struct {
  int64_t bucket;
  const char *g[SG_RF_NDIMS];
  size_t glen[SG_RF_NDIMS];
  int64_t count, errors;
  double p[3];
} arow_t;

static int put_analytics_head(rd_t *r, const char *backend, sg_buf_t *b) {
  char f[32], t[32];
  sg_time_format(r->an.from_s * 1000000, f);
  sg_time_format(r->an.to_s * 1000000, t);
  int rc = sg_buf_printf(b, "{\"backend\":\"%s\",\"from\":\"%s\",\"to\":\"%s\",\"bucket\":%" PRId64
                         ",\"group_by\":[", backend, f, t, r->an.bucket_s);
  int k = 0;
  for (int i = 0; rc == 0 && i < SG_RF_NDIMS; i++)
    if (r->an.dims & (1u << i)) rc = sg_buf_printf(b, "%s\"%s\"", k++ ? "," : "", sg_rf_dims[i]);
  return rc ? rc : sg_buf_puts(b, "],\"buckets\":[");
}

static int put_arow(rd_t *r, const arow_t *a, int first, sg_buf_t *b) {
  char ts[32];
  sg_time_format(a->bucket * 1000000, ts);
  int rc = sg_buf_printf(b, "%s{\"timestamp\":\"%s\"", first ? "" : ",", ts);
  if (r->an.dims) {
    rc = rc ? rc : sg_buf_puts(b, ",\"group\":{");
    int k = 0;
    for (int i = 0; rc == 0 && i < SG_RF_NDIMS; i++) {
      if (!(r->an.dims & (1u << i))) continue;
      rc = sg_buf_printf(b, "%s\"%s\":", k++ ? "," : "", sg_rf_dims[i]);
      if (rc) break;
      if (a->glen[i] == 0 && i < 3) { /* '' stands for NULL (span_name '' is a name) */
        rc = sg_buf_puts(b, "null");
        continue;
      }
      rc = sg_buf_putc(b, '"');
      if (i <= 1) /* trace_type, span_type: Agenta's lower-case values, as in spans */
        for (size_t j = 0; rc == 0 && j < a->glen[i]; j++)
          rc = sg_buf_putc(b, (char)(a->g[i][j] >= 'A' && a->g[i][j] <= 'Z' ? a->g[i][j] + 32 : a->g[i][j]));
      else
        rc = rc ? rc : sg_buf_json_escape(b, a->g[i], a->glen[i]);
      rc = rc ? rc : sg_buf_putc(b, '"');
    }
    rc = rc ? rc : sg_buf_putc(b, '}');
  }
  /* ms with µs resolution: both stores compute in float8 from exact µs,
   * three decimals hide the last-bit differences of their interpolation. */
  rc = rc ? rc : sg_buf_printf(b, ",\"count\":%" PRId64 ",\"errors\":%" PRId64
                               ",\"duration_ms\":{\"p50\":%.3f,\"p95\":%.3f,\"p99\":%.3f}}",
                               a->count, a->errors, a->p[0], a->p[1], a->p[2]);
  return rc;
}

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
  int rc = put_analytics_head(r, "postgres", &b);
  for (int i = 0; rc == 0 && i < n; i++) {
    arow_t a;
    memset(&a, 0, sizeof a);
    int c = 0;
    a.bucket = strtoll(PQgetvalue(res, i, c++), NULL, 10);
    for (int d = 0; d < SG_RF_NDIMS; d++)
      if (r->an.dims & (1u << d)) {
        a.g[d] = PQgetvalue(res, i, c);
        a.glen[d] = (size_t)PQgetlength(res, i, c++);
      }
    a.count = strtoll(PQgetvalue(res, i, c++), NULL, 10);
    a.errors = strtoll(PQgetvalue(res, i, c++), NULL, 10);
    rc = parse_f8_array(PQgetvalue(res, i, c), a.p);
    rc = rc ? rc : put_arow(r, &a, i == 0, &b);
  }
  rc = rc ? rc : sg_buf_printf(&b, "],\"count\":%d}\n", n);
  if (rc) {
    sg_buf_free(&b);
    sg_error("read", "rendering analytics: %s", sg_strerror(rc));
    rd_fail(r, 500, "the read failed", NULL);
    return;
  }
  rd_respond(r, &b);
  sg_buf_free(&b);
}

static int64_t json_i64(const json_t *v) {
  if (json_is_integer(v)) return json_integer_value(v);
  if (json_is_string(v)) return strtoll(json_string_value(v), NULL, 10);
  return -1;
}

/* ClickHouse's JSONCompact answer: {"data": [[b, g..., count, errors, [p50, p95, p99]], ...]}. */
static void analytics_ch_cb(void *arg, const sg_ch_result_t *res) {
  rd_t *r = arg;
  if (res->status != 0) {
    if (res->status == SG_EUNAVAIL || res->status == SG_ECANCELED) {
      sg_warn("read", "ClickHouse analytics: %s", res->error);
      rd_fail(r, 503, "ClickHouse is unavailable; retry later", "Retry-After: 2\r\n");
    } else {
      sg_error("read", "ClickHouse analytics: %s", res->error);
      rd_fail(r, 500, "the read failed", NULL);
    }
    return;
  }
  json_error_t je;
  json_t *doc = json_loadb(res->body, res->len, 0, &je);
  json_t *data = doc ? json_object_get(doc, "data") : NULL;
  if (!json_is_array(data)) {
    sg_error("read", "ClickHouse analytics: unexpected answer (%s)", doc ? "no data" : je.text);
    json_decref(doc);
    rd_fail(r, 502, "ClickHouse gave an answer the gateway could not read", NULL);
    return;
  }
  sg_buf_t b = SG_BUF_INIT;
  int rc = put_analytics_head(r, "clickhouse", &b);
  size_t i;
  json_t *row;
  json_array_foreach(data, i, row) {
    if (rc) break;
    arow_t a;
    memset(&a, 0, sizeof a);
    size_t c = 0;
    a.bucket = json_i64(json_array_get(row, c++));
    for (int d = 0; d < SG_RF_NDIMS; d++)
      if (r->an.dims & (1u << d)) {
        json_t *g = json_array_get(row, c++);
        a.g[d] = json_is_string(g) ? json_string_value(g) : "";
        a.glen[d] = json_is_string(g) ? json_string_length(g) : 0;
      }
    a.count = json_i64(json_array_get(row, c++));
    a.errors = json_i64(json_array_get(row, c++));
    json_t *q = json_array_get(row, c);
    for (int k = 0; k < 3; k++) a.p[k] = json_number_value(json_array_get(q, (size_t)k));
    if (!json_is_array(q) || json_array_size(q) != 3 || a.count < 0) rc = SG_EINVAL;
    rc = rc ? rc : put_arow(r, &a, i == 0, &b);
  }
  rc = rc ? rc : sg_buf_printf(&b, "],\"count\":%zu}\n", json_array_size(data));
  json_decref(doc);
  if (rc) {
    sg_buf_free(&b);
    sg_error("read", "rendering ClickHouse analytics: %s", sg_strerror(rc));
    rd_fail(r, 500, "the read failed", NULL);
    return;
  }
  rd_respond(r, &b);
  sg_buf_free(&b);
}

/* routing.lua's say, for this project and request. */
static int analytics_backend(rd_t *r) {
  sg_worker_t *w = r->w;
  if (!w->cfg->use_clickhouse) return SG_READ_POSTGRES;
  int on = 0, backend = SG_READ_POSTGRES;
  sg_lua_route_clickhouse(w->lua, r->who.project_id, &on);
  if (!on) return SG_READ_POSTGRES;
  json_t *dims = json_array();
  for (int i = 0; dims && i < SG_RF_NDIMS; i++)
    if (r->an.dims & (1u << i)) json_array_append_new(dims, json_string(sg_rf_dims[i]));
  json_t *qj = json_pack("{s:s, s:I, s:I, s:I, s:o*}", "endpoint", "analytics", "from",
                         (json_int_t)r->an.from_s, "to", (json_int_t)r->an.to_s, "bucket",
                         (json_int_t)r->an.bucket_s, "group_by", dims);
  sg_lua_read_backend(w->lua, r->who.project_id, qj, &backend); /* errors: logged, postgres */
  json_decref(qj);
  return backend;
}

static void analytics_start(rd_t *r) {
  sg_buf_t err = SG_BUF_INIT;
  int rc = sg_rf_analytics_parse(r->req->query, (int64_t)time(NULL), &r->an, &err);
  if (rc) {
    rd_fail(r, 400, err.data ? err.data : sg_strerror(rc), NULL);
    sg_buf_free(&err);
    return;
  }
  sg_buf_free(&err);
  if (analytics_backend(r) == SG_READ_CLICKHOUSE) {
    sg_ch_client_t *ch = r->w->ch; /* the worker's client */
    sg_buf_t sql = SG_BUF_INIT;
    rc = ch ? sg_rf_analytics_ch_sql(&r->an, r->who.project_id, r->w->cfg->clickhouse_database, &sql)
            : SG_ENOMEM;
    rc = rc ? rc : sg_ch_request(ch, sql.data, NULL, 0, 0, analytics_ch_cb, r);
    sg_buf_free(&sql);
    if (rc) rd_fail(r, 503, "ClickHouse is unavailable; retry later", "Retry-After: 2\r\n");
    return;
  }
  rc = sg_rf_analytics_pg_sql(&r->an, &r->q.sql);
  rc = rc ? rc : sg_rf_analytics_pg_params(&r->an, r->who.project_id, &r->q);
  if (rc) {
    rd_fail(r, 503, "out of memory", "Retry-After: 1\r\n");
    return;
  }
  run_pg(r, r->q.sql.data, analytics_pg_cb);
}

/* ---- entry points --------------------------------------------------------------------- */

/* The request's state, with the key's principal; NULL (answered 503) when
 * out of memory. */
static rd_t *start(const sg_route_call_t *call) {
  rd_t *r = calloc(1, sizeof *r);
  if (!r) {
    sg_http_respond_error(call->req, 503, "out of memory", "Retry-After: 1\r\n");
    return NULL;
  }
  r->w = call->w;
  r->req = call->req;
  r->who = *call->who;
  sg_rf_query_init(&r->q);
  if (call->param_len && call->param_len < sizeof r->id_text) /* too long: left empty, a bad id */
    memcpy(r->id_text, call->param, call->param_len);
  return r;
}

void sg__read_trace(const sg_route_call_t *call) {
  rd_t *r = start(call);
  if (r) trace_start(r);
}

void sg__read_query(const sg_route_call_t *call) {
  rd_t *r = start(call);
  if (r) query_start(r);
}

void sg__read_analytics(const sg_route_call_t *call) {
  rd_t *r = start(call);
  if (r) analytics_start(r);
}
