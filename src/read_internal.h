/* read_internal.h - what the read API's request parsers (read_filter.c,
 * read_analytics.c, read_eval.c) share and nobody else calls: the client's
 * error messages, and the filter's fields and operators, so the ClickHouse
 * evaluator (read_eval.c) reads a request exactly as the PostgreSQL compiler
 * (read_filter.c) does. Not part of their interface; include it from those
 * files only.
 */
#ifndef SG_READ_INTERNAL_H
#define SG_READ_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "buf.h"

/* Appends "<where>: <message>" to err (when not NULL) and returns
 * SG_EINVAL, so a parser can `return sg__rf_fail(...)`. */
int sg__rf_fail(sg_buf_t *err, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A client string made safe to quote in a message: at most 70 bytes
 * (longer ends in "..."), control characters as '?'. Returns out. */
const char *sg__rf_shown(const char *s, char out[80]);

/* ---- the filter's fields and operators (read_filter.c) ------------------------ */

typedef enum { SG_RFK_UUID, SG_RFK_ENUM, SG_RFK_STRING, SG_RFK_TIME, SG_RFK_JSON, SG_RFK_CONTENT } sg__rf_kind_t;

typedef struct {
  const char *name;
  const char *col;    /* PostgreSQL column, written by us */
  sg__rf_kind_t kind;
  const char *pgtype; /* cast of a parameter for this column */
  int (*parse)(const char *);
  const char *prefix; /* enum short form: "server" -> SPAN_KIND_SERVER */
  int list;           /* JSON list column: `is` with an object means "has an element like" */
  int rcol;           /* the column in read_span.h's row (SG_RF_*), -1 for content */
} sg__rf_field_t;

#define SG_RFO_MAP(XX)                                                                         \
  XX(IS, "is") XX(IS_NOT, "is_not") XX(EQ, "eq") XX(NEQ, "neq") XX(GT, "gt") XX(LT, "lt")     \
  XX(GTE, "gte") XX(LTE, "lte") XX(BTWN, "btwn") XX(STARTSWITH, "startswith")                 \
  XX(ENDSWITH, "endswith") XX(CONTAINS, "contains") XX(MATCHES, "matches") XX(LIKE, "like")   \
  XX(IN, "in") XX(NOT_IN, "not_in") XX(EXISTS, "exists") XX(NOT_EXISTS, "not_exists")

typedef enum {
#define XX(e, s) SG_RFO_##e,
  SG_RFO_MAP(XX)
#undef XX
  SG_RFO_COUNT
} sg__rf_op_t;

extern const char *const sg__rf_op_names[SG_RFO_COUNT];

/* The field named name[0..n), or NULL. */
const sg__rf_field_t *sg__rf_find_field(const char *name, size_t n);
/* The operator named s, or -1. */
int sg__rf_find_op(const char *s);
/* A time value of the API (ISO-8601 text, or integer epoch s/ms/µs/ns as a
 * number or digits): 0 with *us, or SG_EINVAL. */
int sg__rf_time_value(const json_t *v, int64_t *us);
/* One scalar value of a column field as the text PostgreSQL is given: a
 * dashed UUID, an enum's label, the string, an ISO-8601 time. 0, SG_EINVAL
 * (err: the reason) or SG_ENOMEM. */
int sg__rf_column_value(const sg__rf_field_t *f, const json_t *v, const char *where, sg_buf_t *out,
                        sg_buf_t *err);
/* {"a":{"b":v}} for key "a.b" (v is copied), or {"a.b": v} when flat. NULL
 * when out of memory. */
json_t *sg__rf_nest_value(const char *key, const json_t *v, int flat);

#endif
