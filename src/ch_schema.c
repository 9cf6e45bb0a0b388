/* ch_schema.c - the description of spangate's ClickHouse tables, their DDL
 * for a server's version (one server or a cluster), and the upgrade of
 * tables that already exist.
 *
 * Design of the tables (the seed's columns, corrected as DESIGN.md says):
 *
 *   - Key. The seed's PRIMARY KEY (project_id, trace_id, span_id) is not a
 *     prefix of its ORDER BY (project_id, created_at, trace_id, span_id):
 *     Code 36 on every version. The seed's nodes DDL has the same defect
 *     (PRIMARY KEY (project_id, node_id) vs ORDER BY (project_id,
 *     created_at, node_id): Code 36 on 18.16.1 too). We keep the seed's
 *     ORDER BY, which is also ReplacingMergeTree's deduplication key, and use
 *     PRIMARY KEY (project_id, created_at): created_at is stable per span
 *     (PostgreSQL keeps it on upsert and the row carries the value
 *     RETURNING gave), so every version of a span has the same sorting key
 *     and lands in the same partition, which is what ReplacingMergeTree
 *     needs to replace it. After (project_id, created_at), which is nearly
 *     unique, more key columns would not make the sparse index more
 *     selective, only bigger; trace_id look-ups get a bloom_filter index
 *     where the server has one for UUIDs.
 *   - ReplacingMergeTree(version), version UInt64: a retried or updated span
 *     replaces itself; readers use FINAL (or argMax by version). A hard
 *     delete is a tombstone, a row with is_deleted = 1 and a higher version
 *     (ch_rows.h); on 23.2+ the engine is ReplacingMergeTree(version,
 *     is_deleted). Tombstones go with their row's TTL (they carry its
 *     expires_at); docs/clickhouse.md says how to compact them otherwise.
 *     No conditional TTL on tombstones (`TTL ... WHERE is_deleted = 1`):
 *     a merge may expire a tombstone in a part apart from the older
 *     versions it hides, and the span would come back.
 *   - PARTITION BY toYYYYMM(created_at): monthly, a few dozen partitions per
 *     year of data, never per project or per day. All versions (custom
 *     partitioning exists since 1.1.54310).
 *   - expires_at DateTime('UTC') on every version, TTL expires_at [DELETE]
 *     where TTL exists. DateTime, not DateTime64: a TTL expression must be
 *     Date or DateTime on the versions we render for, and a retention
 *     deadline needs no microseconds. "Never" is SG_CH_EXPIRES_NEVER_S.
 *   - No ttl_only_drop_parts: retention is per project and per span, so a
 *     monthly part mixes rows with different expires_at; with the setting,
 *     a part is dropped only when all its rows expired, so expired rows that
 *     share a part with longer-lived ones would be kept forever. Partitioning
 *     by expires_at instead would put a span whose retention changed into
 *     another partition, out of reach of ReplacingMergeTree's replacement.
 *   - LowCardinality(String) for span_name only (names repeat a lot; ids and
 *     messages do not). Enum8 columns already are one byte.
 *   - JSON columns stay Nullable(String) with compact JSON text everywhere.
 *
 * Row format: TabSeparated; the measurement is in ch_rows.c.
 *
 * Clusters: `<table>_local` tables with Replicated*MergeTree engines (same
 * columns, keys, TTL and index as on one server), created ON CLUSTER, and a
 * Distributed table named like the single-server table in front, sharded
 * by cityHash64(toString(trace_id)) (nodes: node_id). Inserts and reads use
 * the Distributed name; mutations (ALTER ... DELETE) go to the local tables
 * ON CLUSTER (sg_ch_mutation_target).
 *
 * Upgrades: CREATE ... IF NOT EXISTS never changes a table that exists, so
 * sg_ch_upgrade_statements compares what exists (system.tables, columns)
 * with the description and adds what is missing in the existing table's own
 * layout; a table keeps its time layout for life (changing a column's type
 * would rewrite every part), and rows follow the table (ch_rows.h).
 */
#include "ch_schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ch.h"
#include "ch_desc.h"
#include "err.h"
#include "span.h"

/* ---- the description ---------------------------------------------------------- */

/* Enum labels and values straight from span.h's X-macros: value = the C
 * enum value (for span_kind and status_code that is OTLP's wire number).
 * Appending a label there appends a value here, which an ALTER can add. */
#define XX(n) #n,
static const char *const trace_type_labels[] = {SG_TRACE_TYPE_MAP(XX)};
static const char *const span_type_labels[] = {SG_SPAN_TYPE_MAP(XX)};
static const char *const span_kind_labels[] = {SG_SPAN_KIND_MAP(XX)};
static const char *const status_code_labels[] = {SG_STATUS_CODE_MAP(XX)};
#undef XX

#define ENUM_DEF(arr) {arr, (int)(sizeof(arr) / sizeof(arr[0]))}
static const enum_def_t trace_type_enum = ENUM_DEF(trace_type_labels);
static const enum_def_t span_type_enum = ENUM_DEF(span_type_labels);
static const enum_def_t span_kind_enum = ENUM_DEF(span_kind_labels);
static const enum_def_t status_code_enum = ENUM_DEF(status_code_labels);

/* The seed's spans columns in the seed's order, plus session_id, user_id,
 * agent_id (spangate's PostgreSQL table has them), version and expires_at.
 * start_time/end_time are NOT NULL as in PostgreSQL (the seed's Nullable was
 * looser than the source of the data). */
static const col_t span_cols[] = {
    {"project_id", T_UUID, F_PROJECT_ID, NULL, 0},
    {"trace_id", T_UUID, F_TRACE_ID, NULL, 0},
    {"span_id", T_UUID, F_SPAN_ID, NULL, 0},
    {"parent_id", T_UUID_NULL, F_PARENT_ID, NULL, 0},
    {"trace_type", T_ENUM_NULL, F_TRACE_TYPE, &trace_type_enum, 0},
    {"span_type", T_ENUM_NULL, F_SPAN_TYPE, &span_type_enum, 0},
    {"span_kind", T_ENUM, F_SPAN_KIND, &span_kind_enum, 0},
    {"span_name", T_STRING, F_SPAN_NAME, NULL, COLF_LOWCARD},
    {"start_time", T_TIME, F_START, NULL, 0},
    {"end_time", T_TIME, F_END, NULL, 0},
    {"status_code", T_ENUM, F_STATUS_CODE, &status_code_enum, 0},
    {"status_message", T_STRING_NULL, F_STATUS_MESSAGE, NULL, 0},
    {"attributes", T_JSON_NULL, F_ATTRIBUTES, NULL, 0},
    {"references", T_JSON_NULL, F_REFERENCES, NULL, 0},
    {"links", T_JSON_NULL, F_LINKS, NULL, 0},
    {"hashes", T_JSON_NULL, F_HASHES, NULL, 0},
    {"events", T_JSON_NULL, F_EVENTS, NULL, 0},
    {"session_id", T_STRING_NULL, F_SESSION_ID, NULL, 0},
    {"user_id", T_STRING_NULL, F_USER_ID, NULL, 0},
    {"agent_id", T_STRING_NULL, F_AGENT_ID, NULL, 0},
    {"created_at", T_TIME, F_CREATED, NULL, 0},
    {"updated_at", T_TIME_NULL, F_UPDATED, NULL, 0},
    {"deleted_at", T_TIME_NULL, F_DELETED, NULL, 0},
    {"created_by_id", T_UUID_NULL, F_CREATED_BY, NULL, 0},
    {"updated_by_id", T_UUID_NULL, F_UPDATED_BY, NULL, 0},
    {"deleted_by_id", T_UUID_NULL, F_DELETED_BY, NULL, 0},
    {"version", T_VERSION, F_VERSION, NULL, 0},
    {"expires_at", T_EXPIRES, F_EXPIRES, NULL, 0},
    {"is_deleted", T_FLAG, F_IS_DELETED, NULL, 0},
};

static const col_t node_cols[] = {
    {"project_id", T_UUID, F_NONE, NULL, 0},
    {"node_id", T_UUID, F_NONE, NULL, 0},
    {"tree_id", T_UUID_NULL, F_NONE, NULL, 0},
    {"root_id", T_UUID_NULL, F_NONE, NULL, 0},
    {"created_at", T_TIME, F_NONE, NULL, 0},
    {"attributes", T_JSON_NULL, F_NONE, NULL, 0},
    {"version", T_VERSION, F_NONE, NULL, 0},
    {"expires_at", T_EXPIRES, F_NONE, NULL, 0},
    {"is_deleted", T_FLAG, F_NONE, NULL, 0},
};

/* Rows per granule of a new spans table. A read of a few spans (a trace, a
 * page) costs the granules that hold them, and a spans row is ~1.5 KB (its
 * JSON columns): 8192 rows are ~12 MB to decompress for one span, 1024
 * ~1.5 MB. 18.16 has no adaptive granularity; on 19.11+ the default
 * index_granularity_bytes (10 MB) would cut 1.5 KB rows at ~6800, so the row
 * count decides there too. The primary index grows with it (20-24 bytes a
 * granule: ~24 MB in memory for a billion spans). Tables that exist keep
 * theirs (it cannot be altered). docs/performance.md has the measurement. */
#define SG__CH_SPANS_GRANULARITY 1024

/* Sharding keys: every version of a span (and every span of a trace) on one
 * shard, so FINAL and ReplacingMergeTree's replacement work shard-locally
 * and a trace is read from one place. toString: 18.16's hash functions take
 * no UUID (Code 43), and the text form hashes alike on every version. */
const table_t sg__ch_tables[] = {
    {"spans", span_cols, sizeof(span_cols) / sizeof(span_cols[0]), "toYYYYMM(created_at)",
     "(project_id, created_at)", "(project_id, created_at, trace_id, span_id)", "trace_id",
     "expires_at", "cityHash64(toString(trace_id))", SG__CH_SPANS_GRANULARITY},
    {"nodes", node_cols, sizeof(node_cols) / sizeof(node_cols[0]), "toYYYYMM(created_at)",
     "(project_id, created_at)", "(project_id, created_at, node_id)", NULL, "expires_at",
     "cityHash64(toString(node_id))", 8192},
};
const size_t sg__ch_ntables = sizeof(sg__ch_tables) / sizeof(sg__ch_tables[0]);
/* ---- names and quoting ---------------------------------------------------------- */

static const char *db_of(const sg_ch_schema_opts_t *o) {
  return o && o->database && *o->database ? o->database : SG__CH_DEFAULT_DATABASE;
}

static const char *cluster_of(const sg_ch_schema_opts_t *o) {
  return o && o->cluster && *o->cluster ? o->cluster : NULL;
}

/* 'text' with backslash and quote escaped. */
static int put_literal(sg_buf_t *b, const char *s) {
  int rc = sg_buf_putc(b, '\'');
  for (; rc == 0 && *s; s++) {
    if (*s == '\'' || *s == '\\') rc = sg_buf_putc(b, '\\');
    if (rc == 0) rc = sg_buf_putc(b, *s);
  }
  return rc ? rc : sg_buf_putc(b, '\'');
}

/* `db`.name, with "_local" when local and on a cluster. */
static int put_table(sg_buf_t *b, const sg_ch_schema_opts_t *o, const char *name, int local) {
  int rc = sg_ch_quote_ident(b, db_of(o));
  rc = rc ? rc : sg_buf_printf(b, ".%s%s", name, local && cluster_of(o) ? "_local" : "");
  return rc;
}

static int put_on_cluster(sg_buf_t *b, const sg_ch_schema_opts_t *o) {
  if (!cluster_of(o)) return 0;
  int rc = sg_buf_puts(b, " ON CLUSTER ");
  return rc ? rc : sg_ch_quote_ident(b, cluster_of(o));
}

/* The ZooKeeper path of a local table: zk_path with {database} and {table}
 * replaced, as a literal. */
static int put_zk_path(sg_buf_t *b, const sg_ch_schema_opts_t *o, const char *local_name) {
  const char *p = o->zk_path && *o->zk_path ? o->zk_path : SG_CH_ZK_PATH_DEFAULT;
  sg_buf_t path = SG_BUF_INIT;
  int rc = 0;
  while (rc == 0 && *p) {
    if (!strncmp(p, "{database}", 10)) {
      rc = sg_buf_puts(&path, db_of(o));
      p += 10;
    } else if (!strncmp(p, "{table}", 7)) {
      rc = sg_buf_puts(&path, local_name);
      p += 7;
    } else {
      rc = sg_buf_putc(&path, *p++);
    }
  }
  rc = rc ? rc : put_literal(b, path.data ? path.data : "");
  sg_buf_free(&path);
  return rc;
}

/* ENGINE = <base>(<args>), or Replicated<base>('<path>', '<replica>'[, args])
 * on a cluster. */
static int put_engine(sg_buf_t *b, const sg_ch_schema_opts_t *o, const char *base, const char *args,
                      const char *name) {
  if (!cluster_of(o)) return sg_buf_printf(b, "ENGINE = %s(%s)\n", base, args);
  char local_name[64];
  snprintf(local_name, sizeof local_name, "%s_local", name);
  int rc = sg_buf_printf(b, "ENGINE = Replicated%s(", base);
  rc = rc ? rc : put_zk_path(b, o, local_name);
  rc = rc ? rc : sg_buf_puts(b, ", ");
  rc = rc ? rc : put_literal(b, o->replica && *o->replica ? o->replica : SG_CH_REPLICA_DEFAULT);
  rc = rc ? rc : sg_buf_printf(b, "%s%s)\n", *args ? ", " : "", args);
  return rc;
}

/* ---- column types ---------------------------------------------------------------- */

static int put_enum_type(sg_buf_t *b, const enum_def_t *e) {
  int rc = sg_buf_puts(b, "Enum8(");
  for (int i = 0; rc == 0 && i < e->n; i++)
    rc = sg_buf_printf(b, "%s'%s' = %d", i ? ", " : "", e->labels[i], i);
  return rc ? rc : sg_buf_putc(b, ')');
}

/* The type of column c (for a time: the main column). */
static int put_col_type(sg_buf_t *b, const col_t *c, unsigned caps, int dt64) {
  int lc = (c->flags & COLF_LOWCARD) && (caps & SG_CH_LOWCARD);
  int null = c->type == T_TIME_NULL;
  int rc = 0;
  switch (c->type) {
  case T_UUID: return sg_buf_puts(b, "UUID");
  case T_UUID_NULL: return sg_buf_puts(b, "Nullable(UUID)");
  case T_ENUM: return put_enum_type(b, c->enm);
  case T_ENUM_NULL:
    rc = sg_buf_puts(b, "Nullable(");
    rc = rc ? rc : put_enum_type(b, c->enm);
    return rc ? rc : sg_buf_putc(b, ')');
  case T_STRING: return sg_buf_puts(b, lc ? "LowCardinality(String)" : "String");
  case T_STRING_NULL:
  case T_JSON_NULL: return sg_buf_puts(b, lc ? "LowCardinality(Nullable(String))" : "Nullable(String)");
  case T_TIME:
  case T_TIME_NULL:
    if (dt64) return sg_buf_puts(b, null ? "Nullable(DateTime64(6, 'UTC'))" : "DateTime64(6, 'UTC')");
    return sg_buf_puts(b, null ? "Nullable(DateTime('UTC'))" : "DateTime('UTC')");
  case T_VERSION: return sg_buf_puts(b, "UInt64");
  case T_EXPIRES: return sg_buf_puts(b, "DateTime('UTC')");
  case T_FLAG: return sg_buf_puts(b, "UInt8"); /* its default is 0: a live row */
  }
  return SG_EINVAL;
}

static const char *us_type(const col_t *c) { return c->type == T_TIME_NULL ? "Nullable(UInt32)" : "UInt32"; }

/* Column definitions of one logical column: one line, or two for a time in
 * the DateTime + _us layout. */
static int put_col_def(sg_buf_t *b, const col_t *c, unsigned caps, int dt64) {
  int rc = sg_buf_printf(b, "    %s ", c->name);
  rc = rc ? rc : put_col_type(b, c, caps, dt64);
  if (rc == 0 && SG__CH_IS_TIME(c->type) && !dt64)
    rc = sg_buf_printf(b, ",\n    %s_us %s", c->name, us_type(c));
  return rc;
}

static int has_bloom(const table_t *t, unsigned caps) {
  return t->bloom_uuid_col && (caps & SG_CH_SKIP_INDEX) && (caps & SG_CH_BLOOM_UUID);
}

static int put_columns(sg_buf_t *b, const table_t *t, unsigned caps, int dt64, int index) {
  int rc = sg_buf_puts(b, "\n(\n");
  for (size_t i = 0; rc == 0 && i < t->ncols; i++) {
    rc = put_col_def(b, &t->cols[i], caps, dt64);
    rc = rc ? rc : sg_buf_puts(b, i + 1 == t->ncols && !index ? "\n" : ",\n");
  }
  if (rc == 0 && index)
    rc = sg_buf_printf(b, "    INDEX idx_%s %s TYPE bloom_filter(0.01) GRANULARITY 1\n",
                       t->bloom_uuid_col, t->bloom_uuid_col);
  return rc ? rc : sg_buf_puts(b, ")\n");
}

/* ---- CREATE statements ----------------------------------------------------------- */

static int stmts_push_flags(sg_ch_stmts_t *st, sg_buf_t *b, const char *what, unsigned flags) {
  char **v = realloc(st->v, (st->n + 1) * sizeof(*v));
  if (v == NULL) return SG_ENOMEM;
  st->v = v;
  char **w = realloc(st->what, (st->n + 1) * sizeof(*w));
  if (w == NULL) return SG_ENOMEM;
  st->what = w;
  unsigned *f = realloc(st->flags, (st->n + 1) * sizeof(*f));
  if (f == NULL) return SG_ENOMEM;
  st->flags = f;
  f[st->n] = flags;
  size_t len;
  char *s = sg_buf_detach(b, &len);
  if (s == NULL) s = strdup("");
  char *d = strdup(what);
  if (s == NULL || d == NULL) {
    free(s);
    free(d);
    return SG_ENOMEM;
  }
  st->v[st->n] = s;
  st->what[st->n] = d;
  st->n++;
  return 0;
}

static int stmts_push(sg_ch_stmts_t *st, sg_buf_t *b, const char *what) { return stmts_push_flags(st, b, what, 0); }

void sg_ch_stmts_free(sg_ch_stmts_t *st) {
  if (st == NULL) return;
  for (size_t i = 0; i < st->n; i++) {
    free(st->v[i]);
    if (st->what) free(st->what[i]);
  }
  free(st->v);
  free(st->what);
  free(st->flags);
  st->v = NULL;
  st->what = NULL;
  st->flags = NULL;
  st->n = 0;
}

/* "what" texts: `db`.name */
static void what_of(char *out, size_t cap, const char *verb, const sg_ch_schema_opts_t *o,
                    const char *name, const char *extra) {
  snprintf(out, cap, "%s `%s`.%s%s", verb, db_of(o), name, extra ? extra : "");
}

static int push_database(sg_ch_stmts_t *out, sg_buf_t *b, const sg_ch_schema_opts_t *o) {
  int rc = sg_buf_puts(b, "CREATE DATABASE IF NOT EXISTS ");
  rc = rc ? rc : sg_ch_quote_ident(b, db_of(o));
  rc = rc ? rc : put_on_cluster(b, o);
  char what[300];
  snprintf(what, sizeof what, "create database `%s`", db_of(o));
  return rc ? rc : stmts_push(out, b, what);
}

/* The data table (on a cluster: <name>_local, replicated). */
static int push_table(sg_ch_stmts_t *out, sg_buf_t *b, const table_t *t, unsigned caps, int dt64,
                      const sg_ch_schema_opts_t *o) {
  int rc = sg_buf_puts(b, "CREATE TABLE IF NOT EXISTS ");
  rc = rc ? rc : put_table(b, o, t->name, 1);
  rc = rc ? rc : put_on_cluster(b, o);
  rc = rc ? rc : put_columns(b, t, caps, dt64, has_bloom(t, caps));
  /* 23.2+: the engine knows the tombstone column (FINAL then drops deleted
   * keys itself, and OPTIMIZE ... FINAL CLEANUP can remove them); readers
   * still filter is_deleted = 0, which older servers need. */
  rc = rc ? rc : put_engine(b, o, "ReplacingMergeTree",
                            (caps & SG_CH_REPLACING_DELETED) ? "version, is_deleted" : "version", t->name);
  rc = rc ? rc : sg_buf_printf(b, "PARTITION BY %s\n", t->partition_by);
  rc = rc ? rc : sg_buf_printf(b, "PRIMARY KEY %s\n", t->primary_key);
  rc = rc ? rc : sg_buf_printf(b, "ORDER BY %s\n", t->order_by);
  if (rc == 0 && t->ttl_col && (caps & SG_CH_TTL))
    rc = sg_buf_printf(b, "TTL %s%s\n", t->ttl_col, (caps & SG_CH_TTL_DELETE_KW) ? " DELETE" : "");
  rc = rc ? rc : sg_buf_printf(b, "SETTINGS index_granularity = %d", t->granularity);
  char what[300], name[64];
  snprintf(name, sizeof name, "%s%s", t->name, cluster_of(o) ? "_local" : "");
  what_of(what, sizeof what, "create table", o, name,
          dt64 ? " (DateTime64(6) times)" : " (DateTime + _us times)");
  return rc ? rc : stmts_push(out, b, what);
}

/* Distributed(cluster, db, <name>_local[, key]) named <name>. */
static int push_distributed(sg_ch_stmts_t *out, sg_buf_t *b, const char *name, const char *cols,
                            const char *key, const sg_ch_schema_opts_t *o) {
  char local[64];
  snprintf(local, sizeof local, "%s_local", name);
  int rc = sg_buf_puts(b, "CREATE TABLE IF NOT EXISTS ");
  rc = rc ? rc : put_table(b, o, name, 0);
  rc = rc ? rc : put_on_cluster(b, o);
  rc = rc ? rc : sg_buf_puts(b, cols);
  rc = rc ? rc : sg_buf_puts(b, "ENGINE = Distributed(");
  rc = rc ? rc : put_literal(b, cluster_of(o));
  rc = rc ? rc : sg_buf_puts(b, ", ");
  rc = rc ? rc : put_literal(b, db_of(o));
  rc = rc ? rc : sg_buf_puts(b, ", ");
  rc = rc ? rc : put_literal(b, local);
  if (rc == 0 && key) rc = sg_buf_printf(b, ", %s", key);
  rc = rc ? rc : sg_buf_putc(b, ')');
  char what[300];
  what_of(what, sizeof what, "create table", o, name, " (Distributed)");
  return rc ? rc : stmts_push(out, b, what);
}

static int push_table_distributed(sg_ch_stmts_t *out, sg_buf_t *b, const table_t *t, unsigned caps,
                                  int dt64, const sg_ch_schema_opts_t *o) {
  sg_buf_t cols = SG_BUF_INIT;
  int rc = put_columns(&cols, t, caps, dt64, 0); /* a Distributed table has no index */
  rc = rc ? rc : push_distributed(out, b, t->name, cols.data, t->shard_key, o);
  sg_buf_free(&cols);
  return rc;
}
/* ---- analytics aggregate ----------------------------------------------------
 *
 * GET /v1/analytics/spans reads spans_analytics, which the materialized view
 * spans_analytics_mv fills on every INSERT into spans: per project, minute
 * (of start_time) and (trace_type, span_type, span_kind, span_name), the
 * states of
 *   spans         uniqExact(trace_id, span_id)
 *   errors        uniqExactIf(trace_id, span_id, status_code = STATUS_CODE_ERROR)
 *   durations_ms  quantiles(0.5, 0.95, 0.99)(end - start, in ms)
 * for spans without deleted_at. AggregatingMergeTree and these -State
 * functions exist on every version we render for (checked on 18.16.1).
 *
 * Why uniqExact and not count: a materialized view sees inserts, not rows.
 * ReplacingMergeTree collapses a re-sent span (and the spool re-sending a
 * batch ClickHouse had already taken) only at merge time, so count() in the
 * view would count every copy. uniqExact over the span's key counts each
 * span once however often it is inserted, as long as the copies agree on
 * minute, group and status. What stays approximate (docs/read.md):
 *   - a re-sent span that changed start minute, type, kind, name or status
 *     is counted under both its old and its new values;
 *   - a span deleted after it was counted stays counted;
 *   - every copy adds a duration sample, and quantiles() keeps a reservoir of
 *     8192 samples per state: exact below that (PostgreSQL's percentile_cont
 *     gives the same interpolation), sampled above it.
 * Nullable columns cannot be in the sorting key on old servers, so NULL
 * trace_type / span_type are stored as ''. The view only sees spans
 * inserted after it exists: backfill with the INSERT ... SELECT in
 * docs/read.md.
 *
 * On a cluster the view reads the Distributed spans and writes the
 * Distributed spans_analytics, sharded by project (any key would do for the
 * reads, which merge the states of every shard; a key that depends on the
 * rows only is what matters). It fires on the server that takes the INSERT,
 * after every shard has its rows (inserts are synchronous, ch_insert.h), so
 * nothing is counted that is not stored. Reading spans_local instead loses
 * rows: a replica that stored a block and died before its view wrote the
 * aggregate leaves the retry a duplicate block, and 18.16 fires no view for
 * a block its replicated table drops as a duplicate. Firing on the
 * Distributed table, a retried insert fires the view again; its aggregate
 * block is the same bytes (the same rows, the same states), split the same
 * way, so the replicated aggregate drops it as a repeat wherever the retry
 * entered the cluster. What can still add a copy: rows re-sent in other
 * blocks (chsink's record-by-record pass, a job's copy), as on one server. */
#define ANALYTICS_SHARD_KEY "cityHash64(toString(project_id))"

static const char analytics_cols[] =
    "\n(\n"
    "    project_id UUID,\n"
    "    minute DateTime('UTC'),\n"
    "    trace_type String,\n"
    "    span_type String,\n"
    "    span_kind String,\n"
    "    span_name String,\n"
    "    spans AggregateFunction(uniqExact, UUID, UUID),\n"
    "    errors AggregateFunction(uniqExactIf, UUID, UUID, UInt8),\n"
    "    durations_ms AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64)\n"
    ")\n";

/* Deleted spans, for the analytics to subtract (docs/clickhouse.md,
 * "Deletes"). The view above counts a span when it is inserted and cannot
 * take it back; a second aggregate, filled from the tombstones (which carry
 * the deleted row's values, hence its minute and group), counts the deleted
 * spans with the same states, and a reader takes
 *   uniqExactMerge(spans) - uniqExactMerge(deleted spans)
 * per bucket and group (errors alike). Apart from spans_analytics because
 * 18.16's views must write every column of their target (Code 10 "Expected
 * column"), and the existing view cannot be changed. Durations keep the
 * deleted spans' samples. On a cluster it reads and writes the Distributed
 * tables, as the view above does, and for the same reason. */
static const char analytics_deleted_cols[] =
    "\n(\n"
    "    project_id UUID,\n"
    "    minute DateTime('UTC'),\n"
    "    trace_type String,\n"
    "    span_type String,\n"
    "    span_kind String,\n"
    "    span_name String,\n"
    "    spans AggregateFunction(uniqExact, UUID, UUID),\n"
    "    errors AggregateFunction(uniqExactIf, UUID, UUID, UInt8)\n"
    ")\n";

static int push_agg_table(sg_ch_stmts_t *out, sg_buf_t *b, const sg_ch_schema_opts_t *o, const char *name,
                          const char *cols, const char *about) {
  int rc = sg_buf_puts(b, "CREATE TABLE IF NOT EXISTS ");
  rc = rc ? rc : put_table(b, o, name, 1);
  rc = rc ? rc : put_on_cluster(b, o);
  rc = rc ? rc : sg_buf_puts(b, cols);
  rc = rc ? rc : put_engine(b, o, "AggregatingMergeTree", "", name);
  rc = rc ? rc : sg_buf_puts(b, "PARTITION BY toYYYYMM(minute)\n"
                                "ORDER BY (project_id, minute, trace_type, span_type, span_kind, span_name)\n"
                                "SETTINGS index_granularity = 8192");
  char what[300], local[64];
  snprintf(local, sizeof local, "%s%s", name, cluster_of(o) ? "_local" : "");
  what_of(what, sizeof what, "create table", o, local, about);
  return rc ? rc : stmts_push(out, b, what);
}

static int push_analytics_table(sg_ch_stmts_t *out, sg_buf_t *b, const sg_ch_schema_opts_t *o) {
  return push_agg_table(out, b, o, "spans_analytics", analytics_cols, " (the analytics aggregate)");
}

static int push_analytics_deleted_table(sg_ch_stmts_t *out, sg_buf_t *b, const sg_ch_schema_opts_t *o) {
  return push_agg_table(out, b, o, "spans_analytics_deleted", analytics_deleted_cols,
                        " (deleted spans, for the analytics to subtract)");
}

/* The view, reading the spans table in its layout (dt64: DateTime64). */
static int push_analytics_view(sg_ch_stmts_t *out, sg_buf_t *b, int dt64, const sg_ch_schema_opts_t *o) {
  int rc = sg_buf_puts(b, "CREATE MATERIALIZED VIEW IF NOT EXISTS ");
  rc = rc ? rc : put_table(b, o, "spans_analytics_mv", 0);
  rc = rc ? rc : put_on_cluster(b, o);
  rc = rc ? rc : sg_buf_puts(b, " TO ");
  rc = rc ? rc : put_table(b, o, "spans_analytics", 0);
  rc = rc ? rc : sg_buf_printf(b,
      " AS\n"
      "SELECT project_id, toStartOfMinute(%s) AS minute,\n"
      "    ifNull(toString(trace_type), '') AS trace_type, ifNull(toString(span_type), '') AS span_type,\n"
      "    toString(span_kind) AS span_kind, toString(span_name) AS span_name,\n"
      "    uniqExactState(trace_id, span_id) AS spans,\n"
      "    uniqExactIfState(trace_id, span_id, status_code = 'STATUS_CODE_ERROR') AS errors,\n"
      "    quantilesState(0.5, 0.95, 0.99)(%s) AS durations_ms\n"
      "FROM ",
      dt64 ? "toDateTime(start_time)" : "start_time",
      dt64 ? "(toUnixTimestamp64Micro(end_time) - toUnixTimestamp64Micro(start_time)) / 1000"
           : "((toInt64(end_time) - toInt64(start_time)) * 1000000 + toInt64(end_time_us) - "
             "toInt64(start_time_us)) / 1000");
  rc = rc ? rc : put_table(b, o, "spans", 0); /* on a cluster both Distributed: see above */
  rc = rc ? rc : sg_buf_puts(b, "\nWHERE deleted_at IS NULL\n"
                                "GROUP BY project_id, minute, trace_type, span_type, span_kind, span_name");
  char what[300];
  what_of(what, sizeof what, "create materialized view", o, "spans_analytics_mv",
          dt64 ? " (reads DateTime64 times)" : " (reads DateTime + _us times)");
  return rc ? rc : stmts_push(out, b, what);
}

/* The tombstones' view: the deleted spans, grouped as the view above. */
static int push_analytics_deleted_view(sg_ch_stmts_t *out, sg_buf_t *b, int dt64, const sg_ch_schema_opts_t *o) {
  int rc = sg_buf_puts(b, "CREATE MATERIALIZED VIEW IF NOT EXISTS ");
  rc = rc ? rc : put_table(b, o, "spans_analytics_deleted_mv", 0);
  rc = rc ? rc : put_on_cluster(b, o);
  rc = rc ? rc : sg_buf_puts(b, " TO ");
  rc = rc ? rc : put_table(b, o, "spans_analytics_deleted", 0);
  rc = rc ? rc : sg_buf_printf(b,
      " AS\n"
      "SELECT project_id, toStartOfMinute(%s) AS minute,\n"
      "    ifNull(toString(trace_type), '') AS trace_type, ifNull(toString(span_type), '') AS span_type,\n"
      "    toString(span_kind) AS span_kind, toString(span_name) AS span_name,\n"
      "    uniqExactState(trace_id, span_id) AS spans,\n"
      "    uniqExactIfState(trace_id, span_id, status_code = 'STATUS_CODE_ERROR') AS errors\n"
      "FROM ",
      dt64 ? "toDateTime(start_time)" : "start_time");
  rc = rc ? rc : put_table(b, o, "spans", 0); /* on a cluster both Distributed, as above */
  rc = rc ? rc : sg_buf_puts(b, "\nWHERE is_deleted = 1\n"
                                "GROUP BY project_id, minute, trace_type, span_type, span_kind, span_name");
  char what[300];
  what_of(what, sizeof what, "create materialized view", o, "spans_analytics_deleted_mv",
          " (the tombstones, for the analytics)");
  return rc ? rc : stmts_push(out, b, what);
}

static const struct sg_ch_tinfo *ex_table(const sg_ch_existing_t *ex, const char *name);

/* ---- the read index -----------------------------------------------------------
 *
 * spans_by_trace and spans_by_start (ch_schema.h says what each is for):
 *   - Filled by materialized views on spans, so the gateway's insert stays
 *     one INSERT. On a cluster a view reads spans_local and writes
 *     <index>_local on the replica that takes the insert (replicated from
 *     there), and the Distributed <index> shards by the trace as spans does:
 *     a span and its index rows live on one shard.
 *   - ReplacingMergeTree(version): a re-sent batch, or a span's next version
 *     at the same place, collapses on merge; nothing else removes a row. A
 *     version whose start_time moved leaves its old row in spans_by_start:
 *     the reader judges every candidate on its span's latest version in
 *     spans. No is_deleted engine argument: tombstones stay visible to the
 *     reader, which decides liveness on the latest version.
 *   - PARTITION BY toYYYYMM(created_at) and TTL expires_at, as spans: index
 *     rows go when the rows they point at go.
 *   - index_granularity 1024: the rows are narrow (~50 and ~120 bytes), and
 *     a look-up reads one granule per part.
 *   - spans_by_trace holds created_at without its `_us` column in that
 *     layout: the spans primary key has seconds only, and a trace's rows of
 *     one second then collapse into one.
 * A view sees the inserts made after it exists: an upgrade backfills each
 * table from spans (after creating the view; rows both copy collapse) and
 * then inserts the marker row (project_id all zeros) that says the backfill
 * completed. Until both markers are there, readers leave the index alone. */

typedef struct {
  const char *name;
  int no_us; /* the time without its `_us` column in the DateTime layout */
} ixcol_t;

typedef struct {
  const char *name;
  const ixcol_t *cols;
  size_t ncols;
  const char *order_dt64, *order_us; /* ORDER BY in each layout */
  const char *primary_key;           /* NULL: the ORDER BY */
  const char *about;
} ix_t;

static const ixcol_t by_trace_cols[] = {
    {"project_id", 0}, {"trace_id", 0}, {"created_at", 1}, {"version", 0}, {"expires_at", 0},
};
static const ixcol_t by_start_cols[] = {
    {"project_id", 0}, {"start_time", 0}, {"trace_id", 0},    {"span_id", 0},   {"created_at", 0},
    {"version", 0},    {"is_deleted", 0}, {"parent_id", 0},   {"trace_type", 0}, {"span_type", 0},
    {"span_kind", 0},  {"span_name", 0},  {"status_code", 0}, {"end_time", 0},  {"session_id", 0},
    {"user_id", 0},    {"agent_id", 0},   {"expires_at", 0},
};
static const ix_t ixs[SG_CH_IX_N] = {
    {"spans_by_trace", by_trace_cols, sizeof by_trace_cols / sizeof by_trace_cols[0],
     "(project_id, trace_id, created_at)", "(project_id, trace_id, created_at)", NULL, "trace -> created_at"},
    {"spans_by_start", by_start_cols, sizeof by_start_cols / sizeof by_start_cols[0],
     "(project_id, start_time, trace_id, span_id, created_at)",
     "(project_id, start_time, start_time_us, trace_id, span_id, created_at, created_at_us)",
     "(project_id, start_time)", "spans in start_time order"},
};
#define IX_GRANULARITY 1024
#define IX_MARKER_PROJECT "00000000-0000-0000-0000-000000000000"

static const col_t *span_col(const char *name) {
  for (size_t i = 0; i < sizeof span_cols / sizeof span_cols[0]; i++)
    if (!strcmp(span_cols[i].name, name)) return &span_cols[i];
  return NULL;
}

static int put_ix_columns(sg_buf_t *b, const ix_t *x, unsigned caps, int dt64) {
  int rc = sg_buf_puts(b, "\n(\n");
  for (size_t i = 0; rc == 0 && i < x->ncols; i++) {
    const col_t *c = span_col(x->cols[i].name);
    if (!c) return SG_EINVAL;
    if (c->type == T_ENUM || c->type == T_ENUM_NULL) { /* as text: see put_ix_names */
      rc = sg_buf_printf(b, "    %s %s", c->name, c->type == T_ENUM ? "String" : "Nullable(String)");
    } else if (x->cols[i].no_us) {
      rc = sg_buf_printf(b, "    %s ", c->name);
      rc = rc ? rc : put_col_type(b, c, caps, dt64);
    } else {
      rc = put_col_def(b, c, caps, dt64);
    }
    rc = rc ? rc : sg_buf_puts(b, i + 1 == x->ncols ? "\n" : ",\n");
  }
  return rc ? rc : sg_buf_puts(b, ")\n");
}

/* "project_id, start_time, start_time_us, ..." in the table's order; sel:
 * as a SELECT list over spans, the enums as their text. The index keeps
 * them as String: 18.16 converts no Enum type into another, so an enum
 * column of spans altered to other values (a new label) would fail every
 * insert into spans in its view, good rows too. */
static int put_ix_names(sg_buf_t *b, const ix_t *x, int dt64, int sel) {
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < x->ncols; i++) {
    const col_t *c = span_col(x->cols[i].name);
    if (sel && c && (c->type == T_ENUM || c->type == T_ENUM_NULL))
      rc = sg_buf_printf(b, "%stoString(%s) AS %s", i ? ", " : "", c->name, c->name);
    else
      rc = sg_buf_printf(b, "%s%s", i ? ", " : "", x->cols[i].name);
    if (rc == 0 && c && SG__CH_IS_TIME(c->type) && !dt64 && !x->cols[i].no_us)
      rc = sg_buf_printf(b, ", %s_us", x->cols[i].name);
  }
  return rc;
}

static int push_ix_table(sg_ch_stmts_t *out, sg_buf_t *b, const ix_t *x, unsigned caps, int dt64,
                         const sg_ch_schema_opts_t *o) {
  int rc = sg_buf_puts(b, "CREATE TABLE IF NOT EXISTS ");
  rc = rc ? rc : put_table(b, o, x->name, 1);
  rc = rc ? rc : put_on_cluster(b, o);
  rc = rc ? rc : put_ix_columns(b, x, caps, dt64);
  rc = rc ? rc : put_engine(b, o, "ReplacingMergeTree", "version", x->name);
  rc = rc ? rc : sg_buf_puts(b, "PARTITION BY toYYYYMM(created_at)\n");
  if (rc == 0 && x->primary_key) rc = sg_buf_printf(b, "PRIMARY KEY %s\n", x->primary_key);
  rc = rc ? rc : sg_buf_printf(b, "ORDER BY %s\n", dt64 ? x->order_dt64 : x->order_us);
  if (rc == 0 && (caps & SG_CH_TTL))
    rc = sg_buf_printf(b, "TTL expires_at%s\n", (caps & SG_CH_TTL_DELETE_KW) ? " DELETE" : "");
  rc = rc ? rc : sg_buf_printf(b, "SETTINGS index_granularity = %d", IX_GRANULARITY);
  char what[300], name[64], about[120];
  snprintf(name, sizeof name, "%s%s", x->name, cluster_of(o) ? "_local" : "");
  snprintf(about, sizeof about, " (the read index: %s)", x->about);
  what_of(what, sizeof what, "create table", o, name, about);
  return rc ? rc : stmts_push(out, b, what);
}

static int push_ix_distributed(sg_ch_stmts_t *out, sg_buf_t *b, const ix_t *x, unsigned caps, int dt64,
                               const sg_ch_schema_opts_t *o) {
  sg_buf_t cols = SG_BUF_INIT;
  int rc = put_ix_columns(&cols, x, caps, dt64);
  rc = rc ? rc : push_distributed(out, b, x->name, cols.data, SG__CH_SPANS->shard_key, o);
  sg_buf_free(&cols);
  return rc;
}

static int push_ix_view(sg_ch_stmts_t *out, sg_buf_t *b, const ix_t *x, int dt64, const sg_ch_schema_opts_t *o) {
  char mv[64];
  snprintf(mv, sizeof mv, "%s_mv", x->name);
  int rc = sg_buf_puts(b, "CREATE MATERIALIZED VIEW IF NOT EXISTS ");
  rc = rc ? rc : put_table(b, o, mv, 0);
  rc = rc ? rc : put_on_cluster(b, o);
  rc = rc ? rc : sg_buf_puts(b, " TO ");
  rc = rc ? rc : put_table(b, o, x->name, 1);
  rc = rc ? rc : sg_buf_puts(b, " AS\nSELECT ");
  rc = rc ? rc : put_ix_names(b, x, dt64, 1);
  rc = rc ? rc : sg_buf_puts(b, "\nFROM ");
  rc = rc ? rc : put_table(b, o, "spans", 1);
  char what[300];
  what_of(what, sizeof what, "create materialized view", o, mv, " (fills the read index on every insert)");
  return rc ? rc : stmts_push(out, b, what);
}

/* The backfill, then the marker row (through the Distributed table on a
 * cluster: each row goes to its trace's shard). */
static int push_ix_fill(sg_ch_stmts_t *out, sg_buf_t *b, const ix_t *x, int dt64, const sg_ch_schema_opts_t *o) {
  int rc = sg_buf_puts(b, "INSERT INTO ");
  rc = rc ? rc : put_table(b, o, x->name, 0);
  rc = rc ? rc : sg_buf_puts(b, " (");
  rc = rc ? rc : put_ix_names(b, x, dt64, 0);
  rc = rc ? rc : sg_buf_puts(b, ") SELECT ");
  rc = rc ? rc : put_ix_names(b, x, dt64, 1);
  rc = rc ? rc : sg_buf_puts(b, " FROM ");
  rc = rc ? rc : put_table(b, o, "spans", 0);
  char what[300];
  what_of(what, sizeof what, "backfill", o, x->name, " from spans (its view only sees inserts made after it)");
  rc = rc ? rc : stmts_push_flags(out, b, what, SG_CH_STMT_BACKFILL);
  rc = rc ? rc : sg_buf_puts(b, "INSERT INTO ");
  rc = rc ? rc : put_table(b, o, x->name, 0);
  /* expires_at: SG_CH_EXPIRES_NEVER_S */
  rc = rc ? rc : sg_buf_puts(b, " (project_id, version, expires_at) VALUES ('" IX_MARKER_PROJECT
                                "', 0, '2105-12-31 23:59:59')");
  what_of(what, sizeof what, "mark", o, x->name, " complete");
  return rc ? rc : stmts_push_flags(out, b, what, SG_CH_STMT_BACKFILL);
}

/* What the read index lacks: its tables, views, and the backfill when its
 * marker is missing or its view is new. ex NULL: nothing exists. */
static int push_index(sg_ch_stmts_t *out, sg_buf_t *b, unsigned caps, int dt64, const sg_ch_existing_t *ex,
                      const sg_ch_schema_opts_t *o) {
  int rc = 0, cl = cluster_of(o) != NULL;
  for (int i = 0; rc == 0 && i < SG_CH_IX_N; i++) {
    const ix_t *x = &ixs[i];
    char local[64], mv[64];
    snprintf(local, sizeof local, "%s%s", x->name, cl ? "_local" : "");
    snprintf(mv, sizeof mv, "%s_mv", x->name);
    if (!ex_table(ex, local)) rc = push_ix_table(out, b, x, caps, dt64, o);
    if (rc == 0 && cl && !ex_table(ex, x->name)) rc = push_ix_distributed(out, b, x, caps, dt64, o);
    int fill = !(ex && (ex->index_marked & (1u << i)));
    if (rc == 0 && !ex_table(ex, mv)) {
      rc = push_ix_view(out, b, x, dt64, o);
      fill = 1; /* inserts made while there was no view are not in the table */
    }
    if (rc == 0 && fill) rc = push_ix_fill(out, b, x, dt64, o);
  }
  return rc;
}

static int check_opts(const sg_ch_schema_opts_t *o) {
  if (o && o->database && *o->database == '\0') return SG_EINVAL;
  if (cluster_of(o) && o->zk_path && *o->zk_path && !strstr(o->zk_path, "{table}")) return SG_EINVAL;
  return 0;
}

int sg_ch_schema_statements(const sg_ch_version_t *ver, const sg_ch_schema_opts_t *o,
                            sg_ch_stmts_t *out) {
  out->v = NULL;
  out->what = NULL;
  out->flags = NULL;
  out->n = 0;
  if (ver == NULL) return SG_EINVAL;
  int rc = check_opts(o);
  if (rc) return rc;
  sg_ch_schema_opts_t none = {0};
  if (!o) o = &none;
  int dt64 = (ver->caps & SG_CH_DATETIME64) != 0;
  sg_buf_t b = SG_BUF_INIT;
  rc = push_database(out, &b, o);
  for (size_t i = 0; rc == 0 && i < sg__ch_ntables; i++) {
    rc = push_table(out, &b, &sg__ch_tables[i], ver->caps, dt64, o);
    if (rc == 0 && cluster_of(o)) rc = push_table_distributed(out, &b, &sg__ch_tables[i], ver->caps, dt64, o);
  }
  rc = rc ? rc : push_analytics_table(out, &b, o);
  if (rc == 0 && cluster_of(o)) rc = push_distributed(out, &b, "spans_analytics", analytics_cols, ANALYTICS_SHARD_KEY, o);
  rc = rc ? rc : push_analytics_view(out, &b, dt64, o);
  rc = rc ? rc : push_analytics_deleted_table(out, &b, o);
  if (rc == 0 && cluster_of(o))
    rc = push_distributed(out, &b, "spans_analytics_deleted", analytics_deleted_cols, ANALYTICS_SHARD_KEY, o);
  rc = rc ? rc : push_analytics_deleted_view(out, &b, dt64, o);
  rc = rc ? rc : push_index(out, &b, ver->caps, dt64, NULL, o);
  sg_buf_free(&b);
  return rc;
}

int sg_ch_schema_render(const sg_ch_version_t *ver, const sg_ch_schema_opts_t *o, sg_buf_t *out) {
  sg_ch_stmts_t st;
  int rc = sg_ch_schema_statements(ver, o, &st);
  for (size_t i = 0; rc == 0 && i < st.n; i++)
    rc = sg_buf_printf(out, "%s%s;\n", i ? "\n" : "", st.v[i]);
  sg_ch_stmts_free(&st);
  return rc;
}

int sg_ch_mutation_target(const sg_ch_schema_opts_t *o, const char *table, sg_buf_t *out) {
  int rc = put_table(out, o, table, 1);
  return rc ? rc : put_on_cluster(out, o);
}

/* ---- what exists ------------------------------------------------------------------- */

int sg_ch_existing_tables_sql(const sg_ch_schema_opts_t *o, sg_buf_t *out) {
  /* The last row says whether the database itself exists (name ''). */
  int rc = sg_buf_puts(out, "SELECT name, engine, create_table_query FROM system.tables WHERE database = ");
  rc = rc ? rc : put_literal(out, db_of(o));
  rc = rc ? rc : sg_buf_puts(out, " UNION ALL SELECT '', 'Database', '' FROM system.databases WHERE name = ");
  rc = rc ? rc : put_literal(out, db_of(o));
  return rc ? rc : sg_buf_puts(out, " FORMAT TabSeparated");
}

int sg_ch_existing_columns_sql(const sg_ch_schema_opts_t *o, sg_buf_t *out) {
  int rc = sg_buf_puts(out, "SELECT table, name, type FROM system.columns WHERE database = ");
  rc = rc ? rc : put_literal(out, db_of(o));
  return rc ? rc : sg_buf_puts(out, " FORMAT TabSeparated");
}

/* One TabSeparated field, unescaped, as a new string. */
static char *tsv_field(const char *p, size_t n) {
  char *s = malloc(n + 1), *o = s;
  if (!s) return NULL;
  for (size_t i = 0; i < n; i++) {
    if (p[i] != '\\' || i + 1 == n) {
      *o++ = p[i];
      continue;
    }
    char e = p[++i];
    *o++ = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == '0' ? '\0' : e == 'b' ? '\b'
         : e == 'f' ? '\f' : e;
  }
  *o = '\0';
  return s;
}

/* Splits tsv into rows of nf fields; calls add for each. */
static int tsv_rows(const char *tsv, size_t len, int nf, int (*add)(void *, char **), void *arg) {
  const char *p = tsv, *end = tsv + len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *le = nl ? nl : end;
    if (le == p) { /* empty line */
      p = le + 1;
      continue;
    }
    char *f[4] = {0};
    int k = 0, rc = 0;
    for (const char *q = p; k < nf; k++) {
      const char *tab = memchr(q, '\t', (size_t)(le - q));
      const char *fe = tab && k + 1 < nf ? tab : le;
      if ((k + 1 < nf && !tab) || (k + 1 == nf && tab)) rc = SG_EPARSE;
      if (rc == 0 && (f[k] = tsv_field(q, (size_t)(fe - q))) == NULL) rc = SG_ENOMEM;
      if (rc) break;
      q = fe + 1;
    }
    if (rc == 0) rc = add(arg, f);
    if (rc) {
      for (int i = 0; i < 4; i++) free(f[i]);
      return rc;
    }
    p = le + 1;
  }
  return 0;
}

static int add_table(void *arg, char **f) {
  sg_ch_existing_t *ex = arg;
  if (f[0][0] == '\0') { /* the database row */
    ex->database_exists = 1;
    for (int i = 0; i < 3; i++) free(f[i]);
    return 0;
  }
  struct sg_ch_tinfo *t = realloc(ex->tables, (ex->ntables + 1) * sizeof *t);
  if (!t) return SG_ENOMEM;
  ex->tables = t;
  t[ex->ntables].name = f[0];
  t[ex->ntables].engine = f[1];
  t[ex->ntables].create = f[2];
  ex->ntables++;
  ex->database_exists = 1;
  return 0;
}

static int add_col(void *arg, char **f) {
  sg_ch_existing_t *ex = arg;
  struct sg_ch_cinfo *c = realloc(ex->cols, (ex->ncols + 1) * sizeof *c);
  if (!c) return SG_ENOMEM;
  ex->cols = c;
  c[ex->ncols].table = f[0];
  c[ex->ncols].name = f[1];
  c[ex->ncols].type = f[2];
  ex->ncols++;
  return 0;
}

int sg_ch_existing_add_tables(sg_ch_existing_t *ex, const char *tsv, size_t len) {
  return tsv_rows(tsv ? tsv : "", tsv ? len : 0, 3, add_table, ex);
}

int sg_ch_existing_add_columns(sg_ch_existing_t *ex, const char *tsv, size_t len) {
  return tsv_rows(tsv ? tsv : "", tsv ? len : 0, 3, add_col, ex);
}

void sg_ch_existing_free(sg_ch_existing_t *ex) {
  if (!ex) return;
  for (size_t i = 0; i < ex->ntables; i++) {
    free(ex->tables[i].name);
    free(ex->tables[i].engine);
    free(ex->tables[i].create);
  }
  for (size_t i = 0; i < ex->ncols; i++) {
    free(ex->cols[i].table);
    free(ex->cols[i].name);
    free(ex->cols[i].type);
  }
  free(ex->tables);
  free(ex->cols);
  memset(ex, 0, sizeof *ex);
}

static const struct sg_ch_tinfo *ex_table(const sg_ch_existing_t *ex, const char *name) {
  for (size_t i = 0; ex && i < ex->ntables; i++)
    if (!strcmp(ex->tables[i].name, name)) return &ex->tables[i];
  return NULL;
}

static const char *ex_type(const sg_ch_existing_t *ex, const char *table, const char *col) {
  for (size_t i = 0; ex && i < ex->ncols; i++)
    if (!strcmp(ex->cols[i].table, table) && !strcmp(ex->cols[i].name, col)) return ex->cols[i].type;
  return NULL;
}

/* ---- can spangate write it? --------------------------------------------------------- */

/* type without the wrapper "W(...)": the inner text in buf, 1 if it was wrapped. */
static int unwrap(const char *type, const char *w, char *buf, size_t cap) {
  size_t wl = strlen(w), tl = strlen(type);
  if (tl > wl + 1 && !strncmp(type, w, wl) && type[wl] == '(' && type[tl - 1] == ')') {
    snprintf(buf, cap, "%.*s", (int)(tl - wl - 2), type + wl + 1);
    return 1;
  }
  snprintf(buf, cap, "%s", type);
  return 0;
}

/* Why a column of type `type` cannot take what spangate writes for c in
 * this layout, or NULL when it can. */
static const char *col_problem(const col_t *c, const char *type, int dt64, char *msg, size_t cap) {
  char t1[2048], t2[2048];
  int lowcard = unwrap(type, "LowCardinality", t1, sizeof t1);
  int null = unwrap(t1, "Nullable", t2, sizeof t2);
  if (!null && lowcard) null = unwrap(t2, "Nullable", t1, sizeof t1) ? (strcpy(t2, t1), 1) : 0;
  int want_null = c->type == T_UUID_NULL || c->type == T_ENUM_NULL || c->type == T_STRING_NULL ||
                  c->type == T_JSON_NULL || c->type == T_TIME_NULL;
  if (want_null && !null) return "is not Nullable and spangate writes NULL into it";
  switch (c->type) {
  case T_UUID:
  case T_UUID_NULL: return strcmp(t2, "UUID") ? "is not a UUID" : NULL;
  case T_ENUM:
  case T_ENUM_NULL:
    if (!strcmp(t2, "String")) return NULL;
    if (strncmp(t2, "Enum8(", 6) && strncmp(t2, "Enum16(", 7)) return "is neither an Enum nor a String";
    for (int i = 0; i < c->enm->n; i++) {
      char lab[128];
      snprintf(lab, sizeof lab, "'%s' =", c->enm->labels[i]);
      if (!strstr(t2, lab)) {
        snprintf(msg, cap, "lacks the enum label '%s' (such spans would be rejected)", c->enm->labels[i]);
        return msg;
      }
    }
    return NULL;
  case T_STRING:
  case T_STRING_NULL:
  case T_JSON_NULL: return strcmp(t2, "String") ? "is not a String" : NULL;
  case T_TIME:
  case T_TIME_NULL:
    if (dt64) return strcmp(t2, "DateTime64(6, 'UTC')") ? "is not DateTime64(6, 'UTC') like created_at" : NULL;
    return strcmp(t2, "DateTime('UTC')") ? "is not DateTime('UTC') like created_at" : NULL;
  case T_VERSION: return strcmp(t2, "UInt64") ? "is not UInt64" : NULL;
  case T_EXPIRES: return strcmp(t2, "DateTime('UTC')") ? "is not DateTime('UTC')" : NULL;
  case T_FLAG: return strcmp(t2, "UInt8") ? "is not UInt8" : NULL;
  }
  return "has an unknown type";
}

static const table_t *desc_table(const char *name) {
  for (size_t i = 0; i < sg__ch_ntables; i++)
    if (!strcmp(sg__ch_tables[i].name, name)) return &sg__ch_tables[i];
  return NULL;
}

/* The time layout of an existing table, from created_at: 1 DateTime64, 0
 * DateTime (+ _us), -1 neither. */
static int existing_dt64(const sg_ch_existing_t *ex, const char *table) {
  const char *ct = ex_type(ex, table, "created_at");
  if (!ct) return -1;
  if (!strncmp(ct, "DateTime64(", 11)) return 1;
  if (!strncmp(ct, "DateTime", 8)) return 0;
  return -1;
}

int sg_ch_table_layout(const sg_ch_existing_t *ex, const sg_ch_schema_opts_t *o, const char *table,
                       sg_ch_layout_t *out, sg_buf_t *why) {
  const table_t *t = desc_table(table);
  if (!t) return SG_EINVAL;
  if (!ex_table(ex, table)) {
    if (why) sg_buf_printf(why, "ClickHouse table `%s`.%s does not exist", db_of(o), table);
    return SG_ENOTFOUND;
  }
  int dt64 = existing_dt64(ex, table);
  if (dt64 < 0) {
    const char *ct = ex_type(ex, table, "created_at");
    if (why)
      sg_buf_printf(why, "ClickHouse table `%s`.%s: column created_at %s%s; spangate writes µs times "
                    "to DateTime64(6, 'UTC') or to DateTime('UTC') plus a UInt32 created_at_us",
                    db_of(o), table, ct ? "is " : "is missing", ct ? ct : "");
    return SG_EINVAL;
  }
  for (size_t i = 0; i < t->ncols; i++) {
    const col_t *c = &t->cols[i];
    const char *type = ex_type(ex, table, c->name), *problem = NULL;
    char col[80], msg[160];
    snprintf(col, sizeof col, "%s", c->name);
    if (!type) {
      problem = "is missing";
    } else if ((problem = col_problem(c, type, dt64, msg, sizeof msg)) == NULL && SG__CH_IS_TIME(c->type) && !dt64) {
      snprintf(col, sizeof col, "%s_us", c->name);
      type = ex_type(ex, table, col);
      const char *want = us_type(c);
      if (!type) problem = "is missing (the microseconds of a DateTime column)";
      else if (strcmp(type, want) && strcmp(type, "Nullable(UInt32)"))
        problem = "is not UInt32 (the microseconds of a DateTime column)";
      else if (!strcmp(want, "Nullable(UInt32)") && strcmp(type, want))
        problem = "is not Nullable and spangate writes NULL into it";
    }
    if (problem) {
      if (why)
        sg_buf_printf(why, "ClickHouse table `%s`.%s: column %s%s%s %s; spangate cannot write this table "
                      "(`spangate schema --apply` adds missing columns, never changes a type)",
                      db_of(o), table, col, type ? " " : "", type ? type : "", problem);
      return SG_EINVAL;
    }
  }
  out->flags = dt64 ? SG_CH_LAYOUT_DT64 : 0;
  return 0;
}

/* ---- upgrades ------------------------------------------------------------------------ */

/* "CREATE TABLE" text of an existing table has a table TTL. */
static int has_ttl(const char *create) { return strstr(create, " TTL ") || strstr(create, "\nTTL "); }

static int push_alter(sg_ch_stmts_t *out, sg_buf_t *b, const sg_ch_schema_opts_t *o, const char *name,
                      int local, const char *action, const char *what) {
  int rc = sg_buf_puts(b, "ALTER TABLE ");
  rc = rc ? rc : put_table(b, o, name, local);
  rc = rc ? rc : put_on_cluster(b, o);
  rc = rc ? rc : sg_buf_printf(b, " %s", action);
  return rc ? rc : stmts_push(out, b, what);
}

/* ADD COLUMN for what table `name` (as it exists, local or Distributed)
 * lacks. */
static int add_missing_columns(sg_ch_stmts_t *out, sg_buf_t *b, const table_t *t, const char *name,
                               int local, int dt64, unsigned caps, const sg_ch_existing_t *ex,
                               const sg_ch_schema_opts_t *o) {
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < t->ncols; i++) {
    const col_t *c = &t->cols[i];
    for (int part = 0; rc == 0 && part < 2; part++) {
      if (part == 1 && !(SG__CH_IS_TIME(c->type) && !dt64)) break;
      char col[80];
      snprintf(col, sizeof col, "%s%s", c->name, part ? "_us" : "");
      if (ex_type(ex, name, col)) continue;
      sg_buf_t type = SG_BUF_INIT, act = SG_BUF_INIT;
      rc = part ? sg_buf_puts(&type, us_type(c)) : put_col_type(&type, c, caps, dt64);
      /* old rows must not expire at once (DateTime's default is 1970) */
      if (rc == 0 && c->type == T_EXPIRES)
        rc = sg_buf_printf(&type, " DEFAULT toDateTime(%lld, 'UTC')", (long long)SG_CH_EXPIRES_NEVER_S);
      rc = rc ? rc : sg_buf_printf(&act, "ADD COLUMN %s %s", col, type.data);
      char what[600];
      if (rc == 0)
        snprintf(what, sizeof what, "add column `%s`.%s.%s %s", db_of(o), name, col, type.data);
      rc = rc ? rc : push_alter(out, b, o, t->name, local, act.data, what);
      sg_buf_free(&type);
      sg_buf_free(&act);
    }
  }
  return rc;
}

int sg_ch_upgrade_statements(const sg_ch_version_t *ver, const sg_ch_schema_opts_t *o,
                             const sg_ch_existing_t *ex, sg_ch_stmts_t *out) {
  out->v = NULL;
  out->what = NULL;
  out->flags = NULL;
  out->n = 0;
  if (ver == NULL) return SG_EINVAL;
  int rc = check_opts(o);
  if (rc) return rc;
  sg_ch_schema_opts_t none = {0};
  if (!o) o = &none;
  unsigned caps = ver->caps;
  int cl = cluster_of(o) != NULL, ver_dt64 = (caps & SG_CH_DATETIME64) != 0, spans_dt64 = ver_dt64;
  sg_buf_t b = SG_BUF_INIT;
  if (!ex || !ex->database_exists) rc = push_database(out, &b, o);
  for (size_t i = 0; rc == 0 && i < sg__ch_ntables; i++) {
    const table_t *t = &sg__ch_tables[i];
    char local[64];
    snprintf(local, sizeof local, "%s%s", t->name, cl ? "_local" : "");
    /* The layout: the local table's, else the front table's, else ver's. */
    int dt64 = existing_dt64(ex, local);
    if (dt64 < 0) dt64 = existing_dt64(ex, t->name);
    if (dt64 < 0 && (ex_table(ex, local) || ex_table(ex, t->name))) {
      rc = SG_EINVAL; /* no usable created_at: sg_ch_table_layout names it */
      break;
    }
    if (dt64 < 0) dt64 = ver_dt64;
    if (t == SG__CH_SPANS) spans_dt64 = dt64;
    const struct sg_ch_tinfo *lt = ex_table(ex, local);
    if (!lt) {
      rc = push_table(out, &b, t, caps, dt64, o);
    } else {
      rc = add_missing_columns(out, &b, t, local, 1, dt64, caps, ex, o);
      char what[300];
      if (rc == 0 && has_bloom(t, caps) && !strstr(lt->create, "INDEX idx_")) {
        char act[200];
        snprintf(act, sizeof act, "ADD INDEX idx_%s %s TYPE bloom_filter(0.01) GRANULARITY 1",
                 t->bloom_uuid_col, t->bloom_uuid_col);
        snprintf(what, sizeof what, "add index idx_%s (bloom_filter on %s) to `%s`.%s; parts written "
                 "before it are indexed when merged", t->bloom_uuid_col, t->bloom_uuid_col, db_of(o), local);
        rc = push_alter(out, &b, o, t->name, 1, act, what);
      }
      if (rc == 0 && t->ttl_col && (caps & SG_CH_TTL) && !has_ttl(lt->create)) {
        char act[200];
        snprintf(act, sizeof act, "MODIFY TTL %s%s", t->ttl_col, (caps & SG_CH_TTL_DELETE_KW) ? " DELETE" : "");
        snprintf(what, sizeof what, "set TTL %s on `%s`.%s (the server expires rows itself from now on)",
                 t->ttl_col, db_of(o), local);
        rc = push_alter(out, &b, o, t->name, 1, act, what);
      }
    }
    if (rc == 0 && cl) {
      if (!ex_table(ex, t->name)) rc = push_table_distributed(out, &b, t, caps, dt64, o);
      else rc = add_missing_columns(out, &b, t, t->name, 0, dt64, caps, ex, o);
    }
  }
  if (rc == 0 && !ex_table(ex, cl ? "spans_analytics_local" : "spans_analytics"))
    rc = push_analytics_table(out, &b, o);
  if (rc == 0 && cl && !ex_table(ex, "spans_analytics"))
    rc = push_distributed(out, &b, "spans_analytics", analytics_cols, ANALYTICS_SHARD_KEY, o);
  if (rc == 0 && !ex_table(ex, "spans_analytics_mv")) rc = push_analytics_view(out, &b, spans_dt64, o);
  if (rc == 0 && !ex_table(ex, cl ? "spans_analytics_deleted_local" : "spans_analytics_deleted"))
    rc = push_analytics_deleted_table(out, &b, o);
  if (rc == 0 && cl && !ex_table(ex, "spans_analytics_deleted"))
    rc = push_distributed(out, &b, "spans_analytics_deleted", analytics_deleted_cols, ANALYTICS_SHARD_KEY, o);
  if (rc == 0 && !ex_table(ex, "spans_analytics_deleted_mv"))
    rc = push_analytics_deleted_view(out, &b, spans_dt64, o);
  rc = rc ? rc : push_index(out, &b, caps, spans_dt64, ex, o);
  sg_buf_free(&b);
  return rc;
}

/* ---- the read index's state ----------------------------------------------------------- */

int sg_ch_index_state_sql(const sg_ch_schema_opts_t *o, const sg_ch_existing_t *ex, sg_buf_t *out) {
  int rc = 0, k = 0;
  for (int i = 0; rc == 0 && i < SG_CH_IX_N; i++) {
    if (!ex_table(ex, ixs[i].name)) continue;
    rc = sg_buf_printf(out, "%sSELECT '%s', count() FROM ", k++ ? " UNION ALL " : "", ixs[i].name);
    rc = rc ? rc : put_table(out, o, ixs[i].name, 0);
    rc = rc ? rc : sg_buf_puts(out, " WHERE project_id = toUUID('" IX_MARKER_PROJECT "')");
  }
  if (rc == 0 && k) rc = sg_buf_puts(out, " FORMAT TabSeparated");
  return rc;
}

static int add_marker(void *arg, char **f) {
  sg_ch_existing_t *ex = arg;
  for (int i = 0; i < SG_CH_IX_N; i++)
    if (!strcmp(f[0], ixs[i].name) && strtoull(f[1], NULL, 10) > 0) ex->index_marked |= 1u << i;
  free(f[0]);
  free(f[1]);
  return 0;
}

int sg_ch_existing_add_index(sg_ch_existing_t *ex, const char *tsv, size_t len) {
  return tsv_rows(tsv ? tsv : "", tsv ? len : 0, 2, add_marker, ex);
}

int sg_ch_index_complete(const sg_ch_existing_t *ex, const sg_ch_schema_opts_t *o) {
  for (int i = 0; i < SG_CH_IX_N; i++) {
    char local[64], mv[64];
    snprintf(local, sizeof local, "%s_local", ixs[i].name);
    snprintf(mv, sizeof mv, "%s_mv", ixs[i].name);
    if (!ex_table(ex, ixs[i].name) || !ex_table(ex, mv) || (cluster_of(o) && !ex_table(ex, local)) ||
        !(ex->index_marked & (1u << i)))
      return 0;
  }
  return 1;
}
