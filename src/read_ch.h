/* read_ch.h - the read endpoints answered from ClickHouse: trace fetch, span
 * query and the exact analytics, with the JSON PostgreSQL's path gives for
 * the same stored spans (README, "Reading from ClickHouse").
 *
 *   trace      one statement: every version of the trace's spans; the
 *              highest version of each span, live ones, ordered as
 *              PostgreSQL orders them (start_time, span_id).
 *   query      rounds of two statements: candidate versions in page order
 *              narrowed by the filter's prefilter (read_eval.h), then every
 *              version of those spans; a candidate counts when it is its
 *              span's highest version at the same position and the filter
 *              (evaluated in C) holds on it; rounds go on, with larger
 *              batches, until the page is full or the window is exhausted.
 *   analytics  pages of spans with a version in the window, every version
 *              of them; aggregated in C (read_analytics.h's accumulator).
 * JSON columns are re-printed in jsonb's form (read_jsonb.h), times and ids
 * as read_span.h prints them, so answers compare byte for byte.
 *
 * The executor knows nothing of freshness or routing (read.c decides that
 * before calling here) and never logs: a failure comes back in the result,
 * with status 0 when PostgreSQL should answer instead.
 */
#ifndef SG_READ_CH_H
#define SG_READ_CH_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "ch.h"
#include "read_analytics.h"
#include "read_chsql.h"

typedef struct {
  int status;       /* 200, 400, 404, 500, 504; 0: ClickHouse could not answer, serve from PostgreSQL */
  const char *body; /* 200: the answer; other statuses: the client's message */
  size_t len;
  const char *why;  /* status 0 or 5xx: the cause, for the operator's log */
} sg_rch_result_t;

typedef void (*sg_rch_cb)(void *arg, const sg_rch_result_t *r);

typedef struct {
  sg_ch_client_t *ch;
  uv_loop_t *loop;
  sg_rch_ctx_t c;       /* copied; c.ver and c.database must outlive the read */
  uint64_t timeout_ms;  /* the whole read (0: none): 504 beyond */
} sg_rch_opts_t;

/* GET /v1/traces/{id}. Calls cb exactly once, later, from the loop; or
 * returns SG_ENOMEM without calling it. */
int sg_rch_trace(const sg_rch_opts_t *o, const uint8_t trace_id[16], sg_rch_cb cb, void *arg);

/* POST /v1/spans/query: body already accepted by sg_rf_compile_query (NULL:
 * no filter, default windowing). Same contract as sg_rch_trace, and
 * SG_EINVAL (err: the client's message) for a filter value only this path
 * refuses (a regular expression PCRE2 cannot compile). */
int sg_rch_query(const sg_rch_opts_t *o, const json_t *body, sg_rch_cb cb, void *arg, sg_buf_t *err);

/* GET /v1/analytics/spans, computed exactly from the spans (used when the
 * request asks for metrics or attribute groups, which the materialized
 * aggregate does not hold). a must outlive the read. */
int sg_rch_analytics(const sg_rch_opts_t *o, const sg_rf_analytics_t *a, sg_rch_cb cb, void *arg);

#endif
