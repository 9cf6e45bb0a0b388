/* read_analytics.h - GET /v1/analytics/spans: counts, errors and latency
 * percentiles per time bucket, grouped by up to 4 columns or attribute
 * paths, with sums and averages of numeric attributes (tokens, costs).
 *
 * Two ways to the same answer:
 *   - PostgreSQL: one statement over `spans` (sg_rf_analytics_pg_sql);
 *   - ClickHouse: the latest versions of the spans, aggregated here in C
 *     (sg_rf_agg_*: read_ch.c feeds it), with PostgreSQL's arithmetic:
 *     percentile_cont's interpolation in float8, sums as exact decimals.
 *     (The materialized `spans_analytics` cannot give PostgreSQL's answer:
 *     it keeps every copy of a re-sent span's duration and a changed
 *     span under its old values.)
 * The rows are rendered by one function (sg_rf_analytics_row) whichever way
 * they came.
 *
 * Query string (percent-encoded):
 *   from, to        ISO-8601 or integer epoch; [from, to) on start_time,
 *                   both rounded down to the minute; default the 24 h up to
 *                   the next whole minute
 *   bucket          60, 300s, 5m, 1h, 1d (whole minutes; default 1h)
 *   group_by        comma-separated, at most 4: trace_type, span_type,
 *                   span_kind, span_name, attributes.<dotted.path>
 *   metrics         comma-separated, at most 8: sum:attributes.<path>,
 *                   avg:attributes.<path> (numbers only: a leaf that is not a
 *                   JSON number is left out, as a missing one is)
 * An attribute path reads like the span query's key: nested objects, or the
 * dotted name as one key (Agenta's flat form).
 *
 * Stands alone like read_filter.h: no server, no database connection, no
 * logging.
 */
#ifndef SG_READ_ANALYTICS_H
#define SG_READ_ANALYTICS_H

#include <stdint.h>

#include "buf.h"
#include "read_filter.h"
#include "read_jsonb.h"

/* Column dimensions (bit i = sg_rf_dims[i]). */
#define SG_RF_NDIMS 4
extern const char *const sg_rf_dims[SG_RF_NDIMS]; /* trace_type span_type span_kind span_name */

#define SG_RF_MAX_GROUPS 4
#define SG_RF_MAX_METRICS 8

/* An attribute path: "attributes.a.b" -> segments a, b; flat "a.b". */
typedef struct {
  char *name;   /* "attributes.a.b", as the answer names it */
  char **seg;
  size_t *seglen, nseg;
  char *flat;   /* the path as one dotted key; NULL without dots */
} sg_rf_path_t;

#define SG_RF_SUM 0
#define SG_RF_AVG 1
typedef struct {
  int op;        /* SG_RF_SUM, SG_RF_AVG */
  sg_rf_path_t path;
  char *name;    /* "sum:attributes.a.b" */
} sg_rf_metric_t;

typedef struct {
  int64_t from_s, to_s;   /* [from, to), whole minutes, epoch seconds */
  int64_t bucket_s;       /* a multiple of 60 */
  unsigned dims;          /* column groups, in sg_rf_dims order */
  sg_rf_path_t attr[SG_RF_MAX_GROUPS]; /* attribute groups, in request order (after the columns) */
  int nattr;
  sg_rf_metric_t metric[SG_RF_MAX_METRICS];
  int nmetric;
} sg_rf_analytics_t;

/* Parses the query string. now_s fills the defaults. 0, SG_EINVAL with err
 * for the client, or SG_ENOMEM. a is always initialised: free it with
 * sg_rf_analytics_free whatever the result. */
int sg_rf_analytics_parse(const char *query, int64_t now_s, sg_rf_analytics_t *a, sg_buf_t *err);
void sg_rf_analytics_free(sg_rf_analytics_t *a);

/* PostgreSQL statement; parameters $1 project, $2 bucket seconds, $3 from,
 * $4 to (timestamptz text), then each attribute path's text[] (and dotted
 * key when it has dots), which sg_rf_analytics_pg_params adds. Columns:
 * bucket start (epoch s), the column groups ('' for NULL), the attribute
 * groups (NULL for none), count, errors, {p50,p95,p99} float8[] in ms,
 * then per metric its exact sum (numeric text, NULL for none) and count. */
int sg_rf_analytics_pg_sql(const sg_rf_analytics_t *a, sg_buf_t *out);
int sg_rf_analytics_pg_params(const sg_rf_analytics_t *a, const uint8_t project_id[16],
                              sg_rf_query_t *q);
/* ---- the answer ------------------------------------------------------------- */

typedef struct {
  int64_t bucket;                     /* epoch seconds */
  const char *g[SG_RF_NDIMS];         /* column groups ('' = NULL except for span_name) */
  size_t glen[SG_RF_NDIMS];
  const char *ag[SG_RF_MAX_GROUPS];   /* attribute groups, NULL = null */
  size_t aglen[SG_RF_MAX_GROUPS];
  int64_t count, errors;
  double p[3];                        /* ms */
  int has[SG_RF_MAX_METRICS];         /* a number was seen */
  double sum[SG_RF_MAX_METRICS];      /* the exact sum, rounded once */
  int64_t n[SG_RF_MAX_METRICS];       /* how many numbers */
} sg_rf_arow_t;

/* {"backend": ..., "from", "to", "bucket", "group_by": [...], ["metrics":
 * [...],] "buckets": [  -- then rows, then the tail: ], "count": n}\n */
int sg_rf_analytics_head(const sg_rf_analytics_t *a, const char *backend, sg_buf_t *out);
int sg_rf_analytics_row(const sg_rf_analytics_t *a, const sg_rf_arow_t *r, int first, sg_buf_t *out);
int sg_rf_analytics_tail(size_t rows, sg_buf_t *out);

/* ---- the exact aggregate in C ------------------------------------------------- */

typedef struct sg_rf_agg_s sg_rf_agg_t;

/* NULL when out of memory. a must outlive the aggregate. */
sg_rf_agg_t *sg_rf_agg_new(const sg_rf_analytics_t *a);
/* One span (its latest live version, start in [from, to), not deleted):
 * start and end in µs, error: status is STATUS_CODE_ERROR, col: the column
 * groups' text (NULL for NULL), attributes: the parsed column or NULL.
 * 0 or SG_ENOMEM. */
int sg_rf_agg_add(sg_rf_agg_t *g, int64_t start_us, int64_t end_us, int error,
                  const char *const col[SG_RF_NDIMS], const sg_jb_t *attributes);
/* The whole answer, rows in PostgreSQL's order. 0 or SG_ENOMEM. */
int sg_rf_agg_render(sg_rf_agg_t *g, const char *backend, sg_buf_t *out);
void sg_rf_agg_free(sg_rf_agg_t *g);

#endif
