/* ch_schema.h - ClickHouse DDL for the server's version, and the row encoder.
 *
 * One static description of the `spans` and `nodes` tables (column name,
 * logical type, per-capability rendering rules) drives three things that must
 * agree: the CREATE statements, the INSERT column list and the row encoder.
 * Rendering is version-aware: spangate reads `SELECT version()` and renders
 * for what that server has (see the capability table in ch_schema.c).
 *
 * Times are exact to the microsecond on every version:
 *   - DateTime64(6, 'UTC') where the server has it (20.1+);
 *   - older servers: the seed's DateTime('UTC') column (whole seconds) plus a
 *     `<column>_us UInt32` column beside it holding the microseconds within
 *     that second (0..999999), Nullable exactly when the time is.
 *
 * Rows are TabSeparated (see ch_schema.c for the measurement behind the
 * choice).
 *
 * Deletes are tombstones, not mutations: both tables have `is_deleted UInt8
 * DEFAULT 0` (the column modern ReplacingMergeTree(version, is_deleted)
 * names; an ordinary column on older servers). A hard delete becomes a row
 * with the deleted row's sorting key, a higher version and is_deleted = 1;
 * readers filter `is_deleted = 0` after FINAL (WHERE, not PREWHERE). Stands alone: no server, no loop, no logging.
 */
#ifndef SG_CH_SCHEMA_H
#define SG_CH_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "span.h"

/* Capabilities, each from a documented version threshold (ch_schema.c). */
#define SG_CH_DATETIME64 (1u << 0)          /* DateTime64(p, tz)                     20.1 */
#define SG_CH_TTL (1u << 1)                 /* table TTL expressions                 19.6 */
#define SG_CH_TTL_DELETE_KW (1u << 2)       /* `TTL expr DELETE` (explicit action)   20.1 */
#define SG_CH_SKIP_INDEX (1u << 3)          /* data skipping indexes, GA             20.1 */
#define SG_CH_BLOOM_UUID (1u << 4)          /* bloom_filter index on UUID columns   20.12 */
#define SG_CH_LOWCARD (1u << 5)             /* LowCardinality without a setting      19.3 */
#define SG_CH_JSON_FUNCS (1u << 6)          /* JSONExtract* / JSONHas ...            19.8 */
#define SG_CH_TTL_ONLY_DROP_PARTS (1u << 7) /* MergeTree setting ttl_only_drop_parts 20.1 */
#define SG_CH_EXCEPTION_HEADER (1u << 8)    /* X-ClickHouse-Exception-Code header    20.3 */

typedef struct {
  int major, minor;
  unsigned caps; /* SG_CH_* bits */
} sg_ch_version_t;

/* Parse `SELECT version()` output: "18.16.1", "24.8.4.13" (trailing
 * whitespace and newline allowed; more components ignored) and fill in caps.
 * 0 or SG_EINVAL. */
int sg_ch_version_parse(const char *s, sg_ch_version_t *v);
/* The caps of major.minor (what sg_ch_version_parse fills in). */
unsigned sg_ch_version_caps(int major, int minor);

/* ---- DDL --------------------------------------------------------------- */

typedef struct {
  char **v; /* each a NUL-terminated statement without a trailing ';' */
  size_t n;
} sg_ch_stmts_t;

/* The statements that create what is missing, in order: CREATE DATABASE IF
 * NOT EXISTS, CREATE TABLE IF NOT EXISTS spans, ... nodes. ClickHouse's HTTP
 * interface takes one statement per request, so send them one by one. Never
 * drops or alters anything. database NULL means "agenta_oss_tracing".
 * 0, SG_EINVAL (empty database name) or SG_ENOMEM; free with
 * sg_ch_stmts_free (also after an error). */
int sg_ch_schema_statements(const sg_ch_version_t *ver, const char *database, sg_ch_stmts_t *out);
void sg_ch_stmts_free(sg_ch_stmts_t *st);

/* The same statements as one script for `spangate schema --print`: each ends
 * with ";\n", separated by a blank line. Appends to out. */
int sg_ch_schema_render(const sg_ch_version_t *ver, const char *database, sg_buf_t *out);

/* ---- rows --------------------------------------------------------------- */

/* "INSERT INTO `db`.spans (col, ...) FORMAT TabSeparated" for rows made by
 * sg_ch_row_encode with the same version. Appends to out (no trailing
 * newline; the rows go in the request body). */
int sg_ch_insert_sql(const sg_ch_version_t *ver, const char *database, sg_buf_t *out);

/* Columns per spans row for this version (the INSERT column count). */
size_t sg_ch_span_columns(const sg_ch_version_t *ver);

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
int sg_ch_row_encode(const sg_ch_version_t *ver, const uint8_t project_id[16], const sg_span_t *span,
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
int sg_ch_row_encode_text(const sg_ch_version_t *ver, const uint8_t project_id[16],
                          const sg_ch_text_row_t *row, int64_t expires_at_us, sg_buf_t *out,
                          const char **why);

/* JSON text s[0..n) as a TabSeparated field: validated (RFC 8259 plus
 * jansson's rules with JSON_DECODE_ANY | JSON_ALLOW_NUL: valid UTF-8,
 * paired surrogate escapes, depth <= 2048; numbers of any size), whitespace
 * outside strings dropped, every backslash doubled. Strings, escapes and
 * numbers are copied as written. 0, SG_EPARSE (out unchanged) or SG_ENOMEM. */
int sg_ch_json_tsv(sg_buf_t *out, const char *s, size_t n);

#endif
