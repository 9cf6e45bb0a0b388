/* read_filter.h - the read API's SQL, built without touching a database.
 *
 * Agenta's query shape (docs/read.md):
 *   {"filtering": {"operator": "and"|"or"|"not"|"nand"|"nor",
 *                  "conditions": [{"field", "key", "value", "operator", "options"}
 *                                 | nested filtering, ...]},
 *    "windowing": {"oldest", "newest", "limit", "next", "order"}}
 * compiled into one PostgreSQL statement over Agenta's `spans` table.
 *
 * Safety rules this file keeps (and tests/unit/test_read_filter.c checks):
 *   - every value of the request reaches PostgreSQL as a bound parameter
 *     ($n, text format); nothing the client sent is ever pasted into the SQL;
 *   - field names come from a fixed allow list (each maps to a column the
 *     SQL names itself); JSON keys are split into path elements and bound as
 *     one text[] parameter (`attributes #> $n::text[]`);
 *   - project_id = $1 is always part of the WHERE clause.
 * An unknown field, operator or malformed value is SG_EINVAL with a message
 * for the client that names the place ("filtering.conditions[1].field:
 * unknown field 'foo' ...").
 *
 * Stands alone: jansson and span.h only; no server, no libpq, no logging.
 */
#ifndef SG_READ_FILTER_H
#define SG_READ_FILTER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define SG_RF_LIMIT_DEFAULT 100
#define SG_RF_LIMIT_MAX 1000

/* A statement and its parameters (text, owned; none is NULL). */
typedef struct {
  sg_buf_t sql;
  char **params;
  size_t nparams, capparams;
  int limit;       /* spans per page; the statement asks for limit + 1 rows */
  int descending;  /* page order: start_time, trace_id, span_id descending */
} sg_rf_query_t;

void sg_rf_query_init(sg_rf_query_t *q);
void sg_rf_query_free(sg_rf_query_t *q);

/* Adds a parameter (copied) and returns its number ($n), or SG_ENOMEM. */
int sg_rf_param(sg_rf_query_t *q, const char *text, size_t n);

/* POST /v1/spans/query: body is the request's JSON object (NULL or {} = the
 * newest spans of the project). Fills q with
 *   SELECT <SG_RF_SPAN_COLUMNS> FROM spans WHERE project_id = $1 ...
 *   ORDER BY start_time, trace_id, span_id (DESC by default) LIMIT limit+1
 * 0, SG_EINVAL (err: the reason for the client) or SG_ENOMEM. */
int sg_rf_compile_query(const json_t *body, const uint8_t project_id[16], sg_rf_query_t *q,
                        sg_buf_t *err);

/* Appends the boolean SQL expression of one filtering object to q->sql
 * (parameters added to q). where names it in messages ("filtering").
 * 0, SG_EINVAL (err) or SG_ENOMEM. Exposed for the unit test. */
int sg_rf_compile_filtering(const json_t *filtering, const char *where, sg_rf_query_t *q,
                            sg_buf_t *err);

/* GET /v1/traces/{id}: $1 project, $2 trace id (dashed UUID text). */
const char *sg_rf_trace_sql(void);

/* The columns both statements select, in this order. Times are integer µs
 * since the epoch; ids dashed UUID text; JSON columns as jsonb text. */
enum {
  SG_RF_TRACE_ID, SG_RF_SPAN_ID, SG_RF_PARENT_ID, SG_RF_TRACE_TYPE, SG_RF_SPAN_TYPE,
  SG_RF_SPAN_KIND, SG_RF_SPAN_NAME, SG_RF_START_US, SG_RF_END_US, SG_RF_STATUS_CODE,
  SG_RF_STATUS_MESSAGE, SG_RF_ATTRIBUTES, SG_RF_REFERENCES, SG_RF_LINKS, SG_RF_HASHES,
  SG_RF_EVENTS, SG_RF_SESSION_ID, SG_RF_USER_ID, SG_RF_AGENT_ID, SG_RF_CREATED_US,
  SG_RF_UPDATED_US, SG_RF_DELETED_US, SG_RF_CREATED_BY, SG_RF_UPDATED_BY, SG_RF_DELETED_BY,
  SG_RF_NCOLS
};

/* One row (vals[SG_RF_NCOLS], NULL = SQL NULL) as Agenta's API span object:
 * trace_id 32 hex, span_id / parent_id the last 16 hex of the UUID (Agenta's
 * parse_span_id_from_uuid), trace_type / span_type as Agenta's lower-case
 * values, times ISO-8601 UTC with 6 fractional digits, JSON columns as
 * stored; NULL columns are left out (Agenta answers with exclude_none).
 * Appends to out. 0, SG_EINVAL (a value PostgreSQL would never send) or
 * SG_ENOMEM. */
int sg_rf_span_json(const char *const *vals, sg_buf_t *out);

/* The keyset cursor: opaque to clients, "c1" + 'd'|'a' + 16 hex start µs +
 * 32 hex trace id + 32 hex span id. */
#define SG_RF_CURSOR_LEN 83
void sg_rf_cursor_format(int descending, int64_t start_us, const uint8_t trace_id[16],
                         const uint8_t span_id[16], char out[SG_RF_CURSOR_LEN + 1]);
int sg_rf_cursor_parse(const char *s, int *descending, int64_t *start_us, uint8_t trace_id[16],
                       uint8_t span_id[16]);

/* ---- analytics ------------------------------------------------------------ */

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
 * $4 to (timestamptz text), which sg_rf_analytics_params fills. Columns:
 * bucket start (epoch s), the group columns in sg_rf_dims order ('' for
 * NULL), count, errors, percentile_cont {p50,p95,p99} float8[] in ms. */
int sg_rf_analytics_pg_sql(const sg_rf_analytics_t *a, sg_buf_t *out);
int sg_rf_analytics_pg_params(const sg_rf_analytics_t *a, const uint8_t project_id[16],
                              sg_rf_query_t *q);
/* ClickHouse statement over `db`.spans_analytics (the aggregating table the
 * materialized view fills), FORMAT JSONCompact, the same columns. Only
 * numbers and a formatted UUID go into this SQL (ClickHouse 18.16 has no
 * query parameters). */
int sg_rf_analytics_ch_sql(const sg_rf_analytics_t *a, const uint8_t project_id[16],
                           const char *database, sg_buf_t *out);

#endif
