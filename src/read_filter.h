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
 * A page's rows are rendered by read_span.h (which also holds the columns
 * both statements select and the cursor); the analytics statements are
 * read_analytics.h's.
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
 *   SELECT <the columns of read_span.h> FROM spans WHERE project_id = $1 ...
 *   ORDER BY start_time, trace_id, span_id (DESC by default) LIMIT limit+1
 * 0, SG_EINVAL (err: the reason for the client) or SG_ENOMEM. */
int sg_rf_compile_query(const json_t *body, const uint8_t project_id[16], sg_rf_query_t *q,
                        sg_buf_t *err);

/* GET /v1/traces/{id}: $1 project, $2 trace id (dashed UUID text). */
const char *sg_rf_trace_sql(void);

#endif
