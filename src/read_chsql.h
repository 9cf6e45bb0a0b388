/* read_chsql.h - the ClickHouse statements of the read API, built without
 * touching a server.
 *
 * ClickHouse keeps every version of a span until a merge collapses them
 * (ReplacingMergeTree(version), keyed by project_id, created_at, trace_id,
 * span_id), and 18.16 has no query parameters. So:
 *   - reads never trust a row to be the only version of its span: the
 *     statements return versions, and the caller (read_ch.c) keeps the
 *     highest version per (created_at, trace_id, span_id) (README, "Reading
 *     from ClickHouse", for the measurement behind that choice over FINAL
 *     and LIMIT 1 BY);
 *   - only values the gateway formatted itself go into the SQL: dashed UUIDs
 *     it printed, integers, enum labels from span.h, and client strings
 *     through sg_ch_quote_string (ClickHouse's literal escaping).
 *
 * Rows come back TabSeparated, in the column order of read_span.h (ids as
 * dashed UUID text, times as µs integers, JSON columns as stored text),
 * then the version and whether the row is live (SG_RCH_COL_VERSION,
 * SG_RCH_COL_LIVE).
 *
 * Stands alone: buf.h, ch.h (quoting), ch_schema.h (the version),
 * read_span.h, read_eval.h (time comparisons); no I/O, no logging.
 */
#ifndef SG_READ_CHSQL_H
#define SG_READ_CHSQL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "ch_schema.h"
#include "read_span.h"

#define SG_RCH_COL_VERSION SG_RF_NCOLS
#define SG_RCH_COL_LIVE (SG_RF_NCOLS + 1)
#define SG_RCH_NCOLS (SG_RF_NCOLS + 2)

/* The one place that says which stored rows are live: a SQL expression
 * over `spans` (1 or 0). A hard delete writes a tombstone version
 * (`is_deleted = 1`, docs/clickhouse.md). Reads look at it on the highest
 * version of a span only: a tombstone hides every older version. */
#define SG_RCH_LIVE_SQL "is_deleted = 0"

typedef struct {
  const sg_ch_version_t *ver;
  const char *database;
  uint8_t project[16];
} sg_rch_ctx_t;

/* The versions of every span of trace_id, full rows. With the read index,
 * the granules of spans are those spans_by_trace names for the trace. */
int sg_rch_trace_sql(const sg_rch_ctx_t *c, const uint8_t trace_id[16], sg_buf_t *out);

/* A position in the span query's order (start time, trace id, span id). */
typedef struct {
  int64_t start_us;
  char trace[37], span[37]; /* dashed lower-case UUID text */
} sg_rch_pos_t;

/* Step 1 of a span query: candidate versions in page order, at most limit:
 * created_at µs, trace id, span id, version, start µs. Window [oldest,
 * newest) (has_* 0: open), strictly after `after` when given, and the
 * filter's prefilter (SQL from sg_re_ch_prefilter, or with from_index
 * sg_re_ch_prefilter_on over SG_RCH_BY_START_COLS).
 * Where from (ver->caps has SG_CH_READ_INDEX for both index ways):
 *   from_index  spans_by_start: reads the window's rows only, narrow ones;
 *   prune       spans, its granules narrowed to the created_at range of the
 *               window's index rows (a filter on a JSON column must read
 *               spans: this keeps it to the granules that can match);
 *   neither     spans, every start_time of the project read. */
typedef struct {
  int descending;
  int has_oldest, has_newest;
  int64_t oldest_us, newest_us;
  const sg_rch_pos_t *after;
  const char *prefilter;
  int limit;
  int from_index, prune;
} sg_rch_scan_t;

/* The columns spans_by_start holds (ch_schema.h's SG_CH_BY_START_COLS), as
 * 1 << SG_RF_* bits for sg_re_ch_prefilter_on. */
#define SG_RCH_BY_START_COLS                                                                                \
  ((1u << SG_RF_TRACE_ID) | (1u << SG_RF_SPAN_ID) | (1u << SG_RF_PARENT_ID) | (1u << SG_RF_TRACE_TYPE) |     \
   (1u << SG_RF_SPAN_TYPE) | (1u << SG_RF_SPAN_KIND) | (1u << SG_RF_SPAN_NAME) | (1u << SG_RF_START_US) |    \
   (1u << SG_RF_END_US) | (1u << SG_RF_STATUS_CODE) | (1u << SG_RF_SESSION_ID) | (1u << SG_RF_USER_ID) |     \
   (1u << SG_RF_AGENT_ID) | (1u << SG_RF_CREATED_US))
int sg_rch_candidates_sql(const sg_rch_ctx_t *c, const sg_rch_scan_t *s, sg_buf_t *out);

/* A span's storage key: what ReplacingMergeTree collapses on. */
typedef struct {
  int64_t created_us;
  char trace[37], span[37];
} sg_rch_key_t;

/* Step 2: every version of these spans, full rows. n >= 1. With prefilter
 * (not NULL), one more column, SG_RCH_COL_PF: 1 when the row passes it; a
 * row that does not comes with its JSON columns NULL (the filter cannot
 * match it: no need to ship them). */
int sg_rch_fetch_sql(const sg_rch_ctx_t *c, const sg_rch_key_t *keys, size_t n, const char *prefilter,
                     sg_buf_t *out);
#define SG_RCH_COL_PF SG_RCH_NCOLS

/* Analytics over spans, one page of keys: the versions of the next `limit`
 * keys (in storage order, strictly after `after` when not NULL) that have
 * a version starting in [from, to): created_at µs, trace id, span id,
 * version, live, start µs, end µs, status_code, deleted_at µs, then
 * trace_type, span_type, span_kind, span_name, then attributes when
 * with_attributes. */
#define SG_RCH_A_CREATED 0
#define SG_RCH_A_TRACE 1
#define SG_RCH_A_SPAN 2
#define SG_RCH_A_VERSION 3
#define SG_RCH_A_LIVE 4
#define SG_RCH_A_START 5
#define SG_RCH_A_END 6
#define SG_RCH_A_STATUS 7
#define SG_RCH_A_DELETED 8
#define SG_RCH_A_DIMS 9 /* 4 columns: trace_type, span_type, span_kind, span_name */
#define SG_RCH_A_ATTRS 13
int sg_rch_analytics_sql(const sg_rch_ctx_t *c, int64_t from_us, int64_t to_us, const sg_rch_key_t *after,
                         int limit, int with_attributes, sg_buf_t *out);

#endif
