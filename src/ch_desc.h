/* ch_desc.h - the one description of spangate's ClickHouse tables, shared
 * by the DDL (ch_schema.c) and the row encoders (ch_rows.c) so the CREATE
 * statements, the INSERT column lists and the rows cannot disagree.
 * Internal to those two files; everyone else uses ch_schema.h / ch_rows.h.
 */
#ifndef SG_CH_DESC_H
#define SG_CH_DESC_H

#include <stddef.h>

/* A column's logical type; how it is spelled depends on the server's
 * capabilities (DDL) and on the table's layout (rows). */
typedef enum {
  T_UUID,
  T_UUID_NULL,
  T_ENUM,
  T_ENUM_NULL,
  T_STRING,
  T_STRING_NULL,
  T_TIME,      /* µs-exact time, NOT NULL */
  T_TIME_NULL, /* µs-exact time, Nullable */
  T_JSON_NULL, /* compact JSON text, Nullable(String) */
  T_VERSION,   /* UInt64, ReplacingMergeTree's version */
  T_EXPIRES,   /* DateTime('UTC'), the TTL column */
  T_FLAG,      /* UInt8, 0 unless set (is_deleted) */
} ltype_t;

/* Which value of a span a column carries (the encoder's switch). F_NONE:
 * sg_span_t does not carry it (yet); the encoder writes NULL. */
typedef enum {
  F_NONE,
  F_PROJECT_ID,
  F_TRACE_ID,
  F_SPAN_ID,
  F_PARENT_ID,
  F_CREATED_BY,
  F_UPDATED_BY,
  F_TRACE_TYPE,
  F_SPAN_TYPE,
  F_SPAN_KIND,
  F_STATUS_CODE,
  F_SPAN_NAME,
  F_STATUS_MESSAGE,
  F_SESSION_ID,
  F_USER_ID,
  F_AGENT_ID,
  F_START,
  F_END,
  F_CREATED,
  F_UPDATED,
  F_DELETED,
  F_DELETED_BY,
  F_ATTRIBUTES,
  F_REFERENCES,
  F_LINKS,
  F_HASHES,
  F_EVENTS,
  F_VERSION,
  F_EXPIRES,
  F_IS_DELETED,
} field_t;

typedef struct {
  const char *const *labels;
  int n;
} enum_def_t;

#define COLF_LOWCARD 1u /* LowCardinality(...) where the server has it */

typedef struct {
  const char *name;
  ltype_t type;
  field_t field;
  const enum_def_t *enm;
  unsigned flags;
} col_t;

typedef struct {
  const char *name;
  const col_t *cols;
  size_t ncols;
  const char *partition_by;
  const char *primary_key;
  const char *order_by;
  const char *bloom_uuid_col; /* INDEX idx_<col> ... bloom_filter, or NULL */
  const char *ttl_col;
  const char *shard_key;      /* the Distributed table's sharding expression */
  int granularity;            /* index_granularity of a new table */
} table_t;

/* The tables, spans first. */
extern const table_t sg__ch_tables[];
extern const size_t sg__ch_ntables;
#define SG__CH_SPANS (&sg__ch_tables[0])
#define SG__CH_NODES (&sg__ch_tables[1])

#define SG__CH_DEFAULT_DATABASE "agenta_oss_tracing"

/* 1 for the two µs-exact time types. */
#define SG__CH_IS_TIME(t) ((t) == T_TIME || (t) == T_TIME_NULL)

#endif
