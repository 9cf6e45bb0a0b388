/* ch_rows.h - spans rows for ClickHouse: the INSERT statement and the
 * TabSeparated row encoders.
 *
 * Rows are written for the layout of the table that exists (ch_schema.h
 * reads it from system.columns), not for the server's version: a table
 * created before an upgrade keeps its layout. Times are exact to the
 * microsecond in both layouts:
 *   - SG_CH_LAYOUT_DT64: DateTime64(6, 'UTC') columns (what 20.1+ gets);
 *   - otherwise: the seed's DateTime('UTC') column (whole seconds) plus a
 *     `<column>_us UInt32` column beside it holding the microseconds within
 *     that second (0..999999), Nullable exactly when the time is.
 *
 * Rows are TabSeparated (see ch_rows.c for the measurement behind the
 * choice). Stands alone: no server, no loop, no logging.
 *
 * Deletes are tombstones, not mutations: both tables have `is_deleted UInt8`
 * (0 unless set; the column modern ReplacingMergeTree(version, is_deleted)
 * names, an ordinary column on older servers). A hard delete becomes a row
 * with the deleted row's sorting key, a higher version and is_deleted = 1;
 * readers filter `is_deleted = 0` after FINAL (WHERE, not PREWHERE).
 */
#ifndef SG_CH_ROWS_H
#define SG_CH_ROWS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "ch_version.h"
#include "span.h"

#define SG_CH_LAYOUT_DT64 1u /* µs times as DateTime64(6, 'UTC') */

typedef struct {
  unsigned flags; /* SG_CH_LAYOUT_* */
} sg_ch_layout_t;

/* The layout spangate creates tables with on a server of this version. */
void sg_ch_layout_of_version(const sg_ch_version_t *ver, sg_ch_layout_t *out);

/* "INSERT INTO `db`.spans (col, ...) FORMAT TabSeparated" for rows made by
 * sg_ch_row_encode with the same layout. Appends to out (no trailing
 * newline; the rows go in the request body). */
int sg_ch_insert_sql(const sg_ch_layout_t *lay, const char *database, sg_buf_t *out);

/* Columns per spans row in this layout (the INSERT column count). A seam
 * for the tests, which check the encoder's rows against it. */
size_t sg_ch_span_columns(const sg_ch_layout_t *lay);

/* Time range every version stores exactly: 1970-01-01T00:00:00Z up to
 * 2105-12-31T23:59:59.999999Z (18.16's DateTime silently wraps values past
 * 2105 when parsing text; DateTime64 covers more, but one range on all
 * versions keeps a row portable across a server upgrade). */
#define SG_CH_TIME_MIN_US 0LL
#define SG_CH_TIME_MAX_US 4291747199999999LL /* 2105-12-31T23:59:59.999999Z */

/* expires_at for "never": 2105-12-31 23:59:59 UTC, the last second every
 * version's DateTime column represents and prints correctly. */
#define SG_CH_EXPIRES_NEVER_S 4291747199LL

/* Append one spans row (TabSeparated, '\n'-terminated) for span in project.
 *
 * Every value round-trips exactly: ids as dashed UUIDs, enums as their
 * span.h labels, NULL as \N, strings escaped as TabSeparated asks (\\ \t \n
 * \r; everything else, UTF-8 included, verbatim), times as UTC text with the
 * microseconds in the DateTime64 fraction or the `_us` column, version as
 * UInt64, the JSON columns as compact JSON text (jansson, JSON_COMPACT).
 *
 * expires_at_us: INT64_MAX (or anything past 2105) means never and is stored
 * as SG_CH_EXPIRES_NEVER_S; otherwise rounded up to the second.
 *
 * Out-of-range values are rejected, never clamped: a start/end/created/
 * updated time outside [SG_CH_TIME_MIN_US, SG_CH_TIME_MAX_US], a negative
 * expires_at or version, or an enum value without a label returns SG_EINVAL
 * and leaves out as it was, so the caller can dead-letter that span and keep
 * the rest of the batch. SG_ENOMEM likewise leaves out unchanged. */
int sg_ch_row_encode(const sg_ch_layout_t *lay, const uint8_t project_id[16], const sg_span_t *span,
                     int64_t expires_at_us, sg_buf_t *out);

/* TabSeparated escaping of s[0..n) (no NULL handling). Appends to out. */
int sg_ch_tsv_escape(sg_buf_t *out, const char *s, size_t n);


/* ---- rows from PostgreSQL's text output (the migration) -------------------- */

/* A text value: p[0..n), p NULL for SQL NULL. */
typedef struct {
  const char *p;
  size_t n;
} sg_ch_text_t;

/* One spans row as PostgreSQL prints it (what `gw.pg.query_raw` holds):
 * ids as UUID text (any form sg_id_parse takes), enums as span.h labels
 * (case-insensitive), strings verbatim, the JSON columns as JSON text
 * (json / jsonb output, or any valid JSON), times as µs integers with 0 =
 * NULL for updated_at / deleted_at (span.h's rule). */
typedef struct {
  sg_ch_text_t trace_id, span_id, parent_id;
  sg_ch_text_t trace_type, span_type, span_kind, status_code;
  sg_ch_text_t span_name, status_message, session_id, user_id, agent_id;
  sg_ch_text_t attributes, references, links, hashes, events;
  sg_ch_text_t created_by_id, updated_by_id, deleted_by_id;
  int64_t start_us, end_us, created_at_us, updated_at_us, deleted_at_us, version;
  int is_deleted; /* 1: a tombstone (the span was deleted in PostgreSQL); readers skip it */
} sg_ch_text_row_t;

/* Append one spans row like sg_ch_row_encode, from text values, without an
 * sg_span_t and without parsing the JSON into a tree: ids in canonical form
 * are copied (others parsed and printed dashed lower case), enums printed
 * as their canonical labels, and the JSON columns validated and made
 * compact in one pass (sg_ch_json_tsv). The result equals sg_ch_row_encode's
 * for the same span as JSON values; the JSON text keeps the source's key
 * order and number spelling (jsonb: keys sorted by length, `1.50` stays
 * `1.50`, integers beyond int64 stay exact) instead of jansson's.
 * Same range checks and errors as sg_ch_row_encode (SG_EINVAL, SG_EPARSE for
 * JSON that does not parse, SG_ENOMEM; out unchanged then); *why names the
 * offending column. */
int sg_ch_row_encode_text(const sg_ch_layout_t *lay, const uint8_t project_id[16],
                          const sg_ch_text_row_t *row, int64_t expires_at_us, sg_buf_t *out,
                          const char **why);

/* JSON text s[0..n) as a TabSeparated field: validated (RFC 8259 plus
 * jansson's rules with JSON_DECODE_ANY | JSON_ALLOW_NUL: valid UTF-8,
 * paired surrogate escapes, depth <= 2048; numbers of any size), whitespace
 * outside strings dropped, every backslash doubled. Strings, escapes and
 * numbers are copied as written. 0, SG_EPARSE (out unchanged) or SG_ENOMEM. */
int sg_ch_json_tsv(sg_buf_t *out, const char *s, size_t n);

#endif
