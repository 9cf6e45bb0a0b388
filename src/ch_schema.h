/* ch_schema.h - spangate's ClickHouse tables: the DDL for a server's
 * version (one server or a cluster), and what to do with tables that exist.
 *
 * One static description of the `spans` and `nodes` tables (ch_desc.h)
 * drives the CREATE statements here and the INSERT column list and row
 * encoders in ch_rows.h, so they always agree.
 *
 * Fresh tables are rendered for the server's capabilities (ch_version.h).
 * Tables that already exist are read back from system.tables and
 * system.columns: their layout (DateTime64 or DateTime + `_us`) decides the
 * rows spangate writes, whatever the server's version now is; what they lack
 * (columns, the bloom_filter index, TTL, the analytics view) is added, and
 * nothing is ever dropped or changed in type.
 *
 * Clusters (opts.cluster set): every statement runs ON CLUSTER; the data
 * lives in `<table>_local` tables with Replicated*MergeTree engines, and a
 * Distributed table with the plain name (`spans`, `nodes`,
 * `spans_analytics`) sits in front, sharded by the trace (spans) or node id
 * (nodes), so every insert and query keeps using the plain name.
 *
 * Stands alone: no server, no loop, no logging.
 */
#ifndef SG_CH_SCHEMA_H
#define SG_CH_SCHEMA_H

#include <stddef.h>

#include "buf.h"
#include "ch_rows.h"
#include "ch_version.h"

#define SG_CH_ZK_PATH_DEFAULT "/clickhouse/tables/{shard}/{database}/{table}"
#define SG_CH_REPLICA_DEFAULT "{replica}"

typedef struct {
  const char *database; /* NULL or "": "agenta_oss_tracing" */
  const char *cluster;  /* NULL or "": one server */
  /* The Replicated engines' ZooKeeper path: spangate replaces {database}
   * and {table} itself (18.16 has no such macros); {shard} and any other
   * {macro} are left to the server's <macros>. NULL or "":
   * SG_CH_ZK_PATH_DEFAULT. It must contain {table}. */
  const char *zk_path;
  const char *replica;  /* replica name; NULL or "": SG_CH_REPLICA_DEFAULT */
} sg_ch_schema_opts_t;

/* ---- fresh tables ---------------------------------------------------------- */

typedef struct {
  char **v; /* each a NUL-terminated statement without a trailing ';' */
  char **what; /* per statement: what it does, one line ("create table `db`.spans") */
  unsigned *flags; /* per statement: SG_CH_STMT_* */
  size_t n;
} sg_ch_stmts_t;

/* A statement that fills the read index from the spans table (a backfill,
 * or the row that marks one complete): it may run long, and when it fails
 * the schema is still usable (reads then leave the index alone), so the
 * caller reports it and skips the remaining such statements. Send it as a
 * fresh insert (ch_insert.h's SG_CH_INSERT_FRESH_SETTINGS): on a cluster
 * the marker lands only once every shard holds the rows before it, and a
 * second backfill is never dropped as a repeat of an earlier one. */
#define SG_CH_STMT_BACKFILL 1u

/* The statements that create everything, in order (CREATE ... IF NOT
 * EXISTS: the database, the tables, the analytics table and its view),
 * rendered for ver. ClickHouse's HTTP interface takes one statement per
 * request, so send them one by one. Never drops or alters anything.
 * 0, SG_EINVAL (empty database name, a zk_path without {table}) or
 * SG_ENOMEM; free with sg_ch_stmts_free (also after an error). */
int sg_ch_schema_statements(const sg_ch_version_t *ver, const sg_ch_schema_opts_t *o,
                            sg_ch_stmts_t *out);
void sg_ch_stmts_free(sg_ch_stmts_t *st);

/* The same statements as one script for `spangate schema --print`: each ends
 * with ";\n", separated by a blank line. Appends to out. */
int sg_ch_schema_render(const sg_ch_version_t *ver, const sg_ch_schema_opts_t *o, sg_buf_t *out);

/* ---- tables that exist ------------------------------------------------------- */

/* What the database holds: tables (name, engine, CREATE text) and columns. */
typedef struct {
  int database_exists;
  struct sg_ch_tinfo { char *name, *engine, *create; } *tables;
  size_t ntables;
  struct sg_ch_cinfo { char *table, *name, *type; } *cols;
  size_t ncols;
  unsigned index_marked; /* read index tables holding their "complete" row: 1 << SG_CH_IX_* */
} sg_ch_existing_t;

/* The two queries that read it (TabSeparated answers for the parsers
 * below). Append to out. */
int sg_ch_existing_tables_sql(const sg_ch_schema_opts_t *o, sg_buf_t *out);
int sg_ch_existing_columns_sql(const sg_ch_schema_opts_t *o, sg_buf_t *out);
/* Parse those answers into ex (start from a zeroed ex). 0, SG_EPARSE or
 * SG_ENOMEM. */
int sg_ch_existing_add_tables(sg_ch_existing_t *ex, const char *tsv, size_t len);
int sg_ch_existing_add_columns(sg_ch_existing_t *ex, const char *tsv, size_t len);
void sg_ch_existing_free(sg_ch_existing_t *ex);

/* ---- the read index -----------------------------------------------------------
 *
 * Two narrow tables a materialized view fills from every insert into spans,
 * for the read API (docs/read.md, "The read index"):
 *   spans_by_trace  (project_id, trace_id) -> created_at: which granules of
 *                   spans hold a trace;
 *   spans_by_start  one row per stored version in (project_id, start_time,
 *                   trace_id, span_id) order, with created_at, version,
 *                   is_deleted and the short columns a filter may test
 *                   (SG_CH_BY_START_COLS): a page's candidates.
 * A view sees only inserts made after it exists, so an upgrade backfills the
 * tables from spans and then writes a marker row (project_id all zeros);
 * reads use the index only when both views exist and both markers are there
 * (SG_CH_READ_INDEX). */
#define SG_CH_IX_BY_TRACE 0
#define SG_CH_IX_BY_START 1
#define SG_CH_IX_N 2
/* The columns of spans (read_span.h's names) spans_by_start copies. */
#define SG_CH_BY_START_COLS                                                                       \
  "trace_id", "span_id", "parent_id", "trace_type", "span_type", "span_kind", "span_name", "start_time", \
      "end_time", "status_code", "session_id", "user_id", "agent_id", "created_at"
/* Not a server capability: a bit sg_ch_setup sets in its target's version
 * (and so in the readers' sg_ch_version_t) when the read index is complete. */
#define SG_CH_READ_INDEX (1u << 31)

/* The query that finds the markers of the index tables that exist (none:
 * nothing appended, 0). Its answer goes to sg_ch_existing_add_index. */
int sg_ch_index_state_sql(const sg_ch_schema_opts_t *o, const sg_ch_existing_t *ex, sg_buf_t *out);
int sg_ch_existing_add_index(sg_ch_existing_t *ex, const char *tsv, size_t len);
/* 1 when reads may use the index: both tables, both views, both markers. */
int sg_ch_index_complete(const sg_ch_existing_t *ex, const sg_ch_schema_opts_t *o);

/* The layout of table ("spans" or "nodes", the name inserts use) as it
 * exists: 0 with *out filled; SG_ENOTFOUND when it does not exist; SG_EINVAL
 * when spangate cannot write it exactly, with why naming the table and
 * column and what is wrong (a missing column, a type it cannot take, an
 * enum without one of spangate's labels). */
int sg_ch_table_layout(const sg_ch_existing_t *ex, const sg_ch_schema_opts_t *o, const char *table,
                       sg_ch_layout_t *out, sg_buf_t *why);

/* What to run so that the database has everything spangate uses: CREATE
 * statements for what does not exist (tables in ver's layout, the analytics
 * view in the spans table's layout), ALTER TABLE ... ADD COLUMN for columns
 * an existing table lacks (in that table's layout; expires_at with a
 * DEFAULT of "never", so old rows do not expire at once), ADD INDEX for the
 * trace_id bloom_filter index and MODIFY TTL where ver has them and the
 * table does not. Nothing is dropped, no type is changed. ex may be NULL
 * (an empty server). out->what says what each statement does. An empty
 * list means nothing is missing. 0, SG_EINVAL (as sg_ch_schema_statements,
 * or an existing table with no created_at to read its layout from) or
 * SG_ENOMEM. */
int sg_ch_upgrade_statements(const sg_ch_version_t *ver, const sg_ch_schema_opts_t *o,
                             const sg_ch_existing_t *ex, sg_ch_stmts_t *out);

/* "`db`.table" for statements that must reach the data itself: ALTER ...
 * DELETE and system.mutations. On a cluster "`db`.table_local ON CLUSTER
 * `c`" (mutations do not go through a Distributed table). Appends to out. */
int sg_ch_mutation_target(const sg_ch_schema_opts_t *o, const char *table, sg_buf_t *out);

#endif
