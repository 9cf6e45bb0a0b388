/* read_jsonb.h - PostgreSQL's jsonb semantics over JSON text, for the rows
 * the read API takes from ClickHouse.
 *
 * ClickHouse keeps the JSON columns as text: the compact form the gateway
 * wrote, or jsonb's own text when `spangate migrate` copied the row. For a
 * read to answer exactly as PostgreSQL does, that text is parsed here into a
 * tree with jsonb's rules and then
 *   - printed as `jsonb::text` prints it (sg_jb_render): object keys ordered
 *     by length then bytes, a duplicate key keeping its last value, ", " and
 *     ": " separators, \uXXXX escapes decoded, numbers as `numeric` prints
 *     them (1.50 stays 1.50, 1e2 becomes 100, -0 becomes 0);
 *   - queried with jsonb's operators: `->` (sg_jb_get), `#>` (sg_jb_path),
 *     `=` (sg_jb_equal), `@>` (sg_jb_contains), `#>> '{}'` (sg_jb_text),
 *     and numeric comparison of number leaves (sg_jb_num_cmp).
 *
 * A document owns all its nodes (one arena); nodes stay valid until
 * sg_jb_free. Stands alone: buf.h only; no server, no logging.
 */
#ifndef SG_READ_JSONB_H
#define SG_READ_JSONB_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef enum {
  SG_JB_NULL, SG_JB_FALSE, SG_JB_TRUE, SG_JB_NUMBER, SG_JB_STRING, SG_JB_ARRAY, SG_JB_OBJECT
} sg_jb_type_t;

typedef struct sg_jb_s sg_jb_t;
struct sg_jb_s {
  uint8_t type;   /* sg_jb_type_t */
  uint32_t n;     /* STRING, NUMBER: bytes of s; ARRAY: elements; OBJECT: pairs */
  const char *s;  /* STRING: the decoded UTF-8 text; NUMBER: numeric's output text */
  sg_jb_t *v;     /* ARRAY: n values; OBJECT: 2n nodes (key, value) in jsonb's key order */
};

typedef struct sg_jb_doc_s sg_jb_doc_t;

/* Parses text[0..n) (one JSON value, whitespace around allowed). *doc owns
 * the tree, *root is its top. 0; SG_EINVAL for text jsonb would refuse
 * (malformed, \u0000, a lone surrogate, a number numeric cannot hold, nesting
 * deeper than 4096), *doc then NULL; SG_ENOMEM. */
int sg_jb_parse(const char *text, size_t n, sg_jb_doc_t **doc, const sg_jb_t **root);
void sg_jb_free(sg_jb_doc_t *doc);

/* Appends v as `jsonb::text` writes it. 0 or SG_ENOMEM. */
int sg_jb_render(const sg_jb_t *v, sg_buf_t *out);

/* v -> key: the member's value, NULL when v is not an object or lacks it. */
const sg_jb_t *sg_jb_get(const sg_jb_t *v, const char *key, size_t n);
/* v #> path: each element a key of an object or, for an array, an integer
 * index (negative counts from the end); NULL where PostgreSQL gives NULL. */
const sg_jb_t *sg_jb_path(const sg_jb_t *v, const char *const *seg, const size_t *len, size_t nseg);

/* a = b for jsonb (numbers by value: 1 = 1.0). */
int sg_jb_equal(const sg_jb_t *a, const sg_jb_t *b);
/* a @> b, with jsonb's rules (an array at the top contains a scalar it
 * holds; objects match partially, arrays as sets). */
int sg_jb_contains(const sg_jb_t *a, const sg_jb_t *b);

/* Compares two JSON number texts as exact decimals: <0, 0, >0. Texts that
 * are not JSON numbers compare as 0. */
int sg_jb_num_cmp(const char *a, size_t na, const char *b, size_t nb);

/* v #>> '{}': a string's text, other values rendered; JSON null is SQL NULL
 * (*is_null set, nothing appended). 0 or SG_ENOMEM. */
int sg_jb_text(const sg_jb_t *v, sg_buf_t *out, int *is_null);

/* jsonb_typeof(v): "object", "array", "string", "number", "boolean", "null". */
const char *sg_jb_typeof(const sg_jb_t *v);

/* Exact decimal sums of JSON numbers (sum(numeric) over number leaves). */
typedef struct {
  uint32_t *lim;   /* little-endian base-10^9 limbs of the magnitude */
  int nlim;        /* limbs in use */
  int cap;
  int neg;
  int frac;        /* limbs below the decimal point (the scale, in limbs) */
  int bad;         /* a number outside what is kept exactly (then the sum is inexact) */
} sg_jb_sum_t;

void sg_jb_sum_init(sg_jb_sum_t *s);
void sg_jb_sum_free(sg_jb_sum_t *s);
/* Adds the JSON number text a[0..n). 0, SG_EINVAL (not a number) or SG_ENOMEM. */
int sg_jb_sum_add(sg_jb_sum_t *s, const char *a, size_t n);
/* The sum as a double, rounded once from the exact decimal value. */
double sg_jb_sum_value(const sg_jb_sum_t *s);

#endif
