/* read_analytics.h - GET /v1/analytics/spans: counts, errors and latency
 * percentiles per time bucket, optionally grouped by a few dimensions, as
 * one statement for PostgreSQL (over `spans`) or ClickHouse (over the
 * materialized `spans_analytics`); both answer with the same columns.
 *
 * Stands alone like read_filter.h: no server, no database connection, no
 * logging (ch.h only for its identifier quoting).
 */
#ifndef SG_READ_ANALYTICS_H
#define SG_READ_ANALYTICS_H

#include <stdint.h>

#include "buf.h"
#include "read_filter.h"

/* Dimensions GET /v1/analytics/spans can group by (bit i = sg_rf_dims[i]). */
#define SG_RF_NDIMS 4
extern const char *const sg_rf_dims[SG_RF_NDIMS]; /* trace_type span_type span_kind span_name */

typedef struct {
  int64_t from_s, to_s; /* [from, to), whole minutes, epoch seconds */
  int64_t bucket_s;     /* a multiple of 60 */
  unsigned dims;        /* group_by bits, in sg_rf_dims order */
} sg_rf_analytics_t;

/* Parses the query string (from, to, bucket, group_by; percent-encoded).
 * now_s fills the defaults: to = now (next whole minute), from = to - 24 h,
 * bucket = 1h. 0 or SG_EINVAL with err for the client. */
int sg_rf_analytics_parse(const char *query, int64_t now_s, sg_rf_analytics_t *a, sg_buf_t *err);

/* PostgreSQL statement; parameters $1 project, $2 bucket seconds, $3 from,
 * $4 to (timestamptz text), which sg_rf_analytics_pg_params fills. Columns:
 * bucket start (epoch s), the group columns in sg_rf_dims order ('' for
 * NULL), count, errors, percentile_cont {p50,p95,p99} float8[] in ms. */
int sg_rf_analytics_pg_sql(const sg_rf_analytics_t *a, sg_buf_t *out);
int sg_rf_analytics_pg_params(const sg_rf_analytics_t *a, const uint8_t project_id[16],
                              sg_rf_query_t *q);
/* ClickHouse statement over `database`.spans_analytics (the aggregating
 * table the materialized view fills), FORMAT JSONCompact, the same columns.
 * Only numbers, a formatted UUID and the quoted database name go into this
 * SQL (ClickHouse 18.16 has no query parameters). */
int sg_rf_analytics_ch_sql(const sg_rf_analytics_t *a, const uint8_t project_id[16],
                           const char *database, sg_buf_t *out);

#endif
