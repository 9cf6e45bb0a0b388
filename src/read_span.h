/* read_span.h - one span row of the read API: the columns the statements
 * select, the row as Agenta's span JSON, and the keyset cursor that points
 * just past a row (read_filter.c parses it back into the next page's WHERE).
 *
 * Stands alone: buf.h and span.h only; no SQL, no server, no logging.
 */
#ifndef SG_READ_SPAN_H
#define SG_READ_SPAN_H

#include <stdint.h>

#include "buf.h"

/* The columns read_filter.h's statements select, in this order. Times are integer µs
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
/* The cursor s back into its parts: 0, or SG_EINVAL for anything this API
 * did not format (outputs then unspecified). */
int sg_rf_cursor_parse(const char *s, int *descending, int64_t *start_us, uint8_t trace_id[16],
                       uint8_t span_id[16]);

#endif
