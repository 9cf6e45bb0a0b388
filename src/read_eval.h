/* read_eval.h - the span query's filter evaluated in C, on rows read from
 * ClickHouse, with PostgreSQL's semantics (what read_filter.c's SQL means).
 *
 * ClickHouse 18.16 has no JSON functions, and even where it has them they do
 * not mean what jsonb's operators mean. So a ClickHouse read works in two
 * parts: ClickHouse narrows the rows with a condition that every matching
 * row satisfies (sg_re_ch_prefilter: exact for the columns, a text search
 * for JSON values), and this evaluator decides each remaining row exactly:
 *   - SQL's three-valued logic (a NULL column makes `=` unknown, NOT of
 *     unknown is unknown, IS NOT TRUE is true), as the SQL read_filter.c
 *     writes for the same condition;
 *   - jsonb's operators (read_jsonb.h): containment, equality with numbers by
 *     value, paths with array positions, numeric comparison as `numeric`;
 *   - LIKE / ILIKE as PostgreSQL matches them (`_` one character, `\`
 *     escapes; ILIKE lower-cases both sides with the C library's Unicode
 *     tables, as PostgreSQL with a UTF-8 locale does);
 *   - text comparison (gt, lt, btwn on strings) byte by byte, as a database
 *     with the C collation compares.
 * Where it cannot match PostgreSQL exactly it says so (README, "Reading
 * from ClickHouse"):
 *   - `matches` uses PCRE2 (UTF, Unicode properties, dot matches newline)
 *     instead of PostgreSQL's POSIX ARE;
 *   - `content` approximates PostgreSQL's full-text search: words are runs
 *     of letters and digits (plus dotted and hyphenated compounds), lower-
 *     cased; websearch syntax ("phrase", or, -word).
 *
 * Stands alone: jansson, pcre2, read_jsonb.h, read_span.h's column indexes
 * and ch_schema.h's version; no server, no I/O, no logging.
 */
#ifndef SG_READ_EVAL_H
#define SG_READ_EVAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "ch_schema.h"
#include "read_jsonb.h"
#include "read_span.h"

typedef struct sg_re_s sg_re_t;

/* One row as the evaluator sees it: the text of each column in read_span.h's
 * order (NULL = SQL NULL; times as µs integers), and its JSON columns parsed
 * on first use (sg_re_row_json). */
typedef struct {
  const char *v[SG_RF_NCOLS];
  size_t len[SG_RF_NCOLS];
  sg_jb_doc_t *doc[SG_RF_NCOLS];
  const sg_jb_t *json[SG_RF_NCOLS];
  signed char state[SG_RF_NCOLS]; /* 0 not parsed yet, 1 parsed, -1 not valid JSON */
} sg_re_row_t;

/* Sets the row's values (pointers kept, not copied); forgets parsed JSON. */
void sg_re_row_init(sg_re_row_t *row);
void sg_re_row_clear(sg_re_row_t *row);
/* Column col parsed as JSON: the root, or NULL for SQL NULL. SG_EINVAL when
 * the text is not valid JSON, SG_ENOMEM. */
int sg_re_row_json(sg_re_row_t *row, int col, const sg_jb_t **out);

/* Compiles the request's filtering object (NULL: no restriction). The body
 * must already have passed sg_rf_compile_query (the same validation and
 * messages); this only fails on what PostgreSQL would reject while running
 * the query: a regular expression PCRE2 cannot compile, a LIKE pattern
 * ending in the escape character (SG_EINVAL with err), SG_ENOMEM. */
int sg_re_compile(const json_t *filtering, sg_re_t **out, sg_buf_t *err);
void sg_re_free(sg_re_t *f);

/* Does the row pass (the WHERE clause is true)? 1 yes, 0 no (false or
 * unknown), SG_EINVAL (a JSON column that is not JSON, a regular
 * expression that ran out of its match budget), SG_ENOMEM. */
int sg_re_match(const sg_re_t *f, sg_re_row_t *row);

/* A ClickHouse boolean expression that every row passing the filter
 * satisfies, over the `spans` table of version ver (always at least "1").
 * *exact (may be NULL) is set when the expression is the filter itself
 * (nothing left for sg_re_match to refuse). 0 or SG_ENOMEM. */
int sg_re_ch_prefilter(const sg_re_t *f, const sg_ch_version_t *ver, sg_buf_t *out, int *exact);
/* The same over a table holding only some of the columns: cols has bit
 * 1 << SG_RF_x for each column it may test (content needs attributes and
 * events); a condition on another column narrows nothing (it is left out,
 * so the expression stays necessary, never exact). *complete (may be NULL)
 * is set when nothing was left out: the expression narrows as much as
 * sg_re_ch_prefilter's. */
int sg_re_ch_prefilter_on(const sg_re_t *f, const sg_ch_version_t *ver, uint32_t cols, sg_buf_t *out, int *exact,
                          int *complete);

/* ClickHouse comparison `col <op> us` for a time column, exact to the µs on
 * both layouts (DateTime + `_us`, DateTime64). op: "<", "<=", ">", ">=",
 * "=". The column must not be Nullable unless wrapped by the caller. */
int sg_re_ch_time_cmp(sg_buf_t *out, const sg_ch_version_t *ver, const char *col, const char *op,
                      int64_t us);
/* The µs expression of a time column (Int64; Nullable when the column is). */
int sg_re_ch_time_us(sg_buf_t *out, const sg_ch_version_t *ver, const char *col);

#endif
