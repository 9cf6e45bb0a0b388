/* read_chsql.c - the read API's ClickHouse statements (read_chsql.h). */
#include "read_chsql.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ch.h"
#include "err.h"
#include "read_eval.h"
#include "span.h"

/* Reads of a few rows: a row costs its whole granule (1024 rows of ~1.5 KB
 * here; 8192 in tables older than the read index), so keep decompressed
 * blocks for the next read (ClickHouse's advice for short, frequent
 * queries; the cache is bounded by the server's uncompressed_cache_size). */
#define POINT_READ "use_uncompressed_cache = 1"

#define OK(x) do { int rc_ = (x); if (rc_) return rc_; } while (0)

/* Subqueries over the index tables name their Distributed table; on a
 * cluster each shard then reads its own local one (a span and its index
 * rows are on the same shard: both shard by the trace). */
#define IX_SETTINGS "distributed_product_mode = 'local'"

static int table_named(sg_buf_t *b, const sg_rch_ctx_t *c, const char *name) {
  OK(sg_ch_quote_ident(b, c->database && c->database[0] ? c->database : "agenta_oss_tracing"));
  return sg_buf_printf(b, ".%s", name);
}

static int table(sg_buf_t *b, const sg_rch_ctx_t *c) { return table_named(b, c, "spans"); }

static int has_index(const sg_rch_ctx_t *c) { return (c->ver->caps & SG_CH_READ_INDEX) != 0; }

static int project_eq(sg_buf_t *b, const sg_rch_ctx_t *c) {
  char pid[37];
  sg_uuid_format(c->project, pid);
  return sg_buf_printf(b, "project_id = toUUID('%s')", pid);
}

static int us(sg_buf_t *b, const sg_rch_ctx_t *c, const char *col) { return sg_re_ch_time_us(b, c->ver, col); }

/* The full row: read_span.h's columns, version, live; with pf (an alias
 * of the query), the JSON columns only where it holds. */
static int row_columns_pf(sg_buf_t *b, const sg_rch_ctx_t *c, const char *pf) {
  OK(sg_buf_puts(b, "toString(trace_id), toString(span_id), toString(parent_id), toString(trace_type), "
                    "toString(span_type), toString(span_kind), span_name, "));
  OK(us(b, c, "start_time"));
  OK(sg_buf_puts(b, ", "));
  OK(us(b, c, "end_time"));
  OK(sg_buf_puts(b, ", toString(status_code), status_message, "));
  static const char *const json[] = {"attributes", "`references`", "links", "hashes", "events"};
  for (size_t i = 0; i < sizeof json / sizeof json[0]; i++)
    OK(pf ? sg_buf_printf(b, "if(%s, %s, NULL), ", pf, json[i]) : sg_buf_printf(b, "%s, ", json[i]));
  OK(sg_buf_puts(b, "session_id, user_id, agent_id, "));
  OK(us(b, c, "created_at"));
  OK(sg_buf_puts(b, ", "));
  OK(us(b, c, "updated_at"));
  OK(sg_buf_puts(b, ", "));
  OK(us(b, c, "deleted_at"));
  return sg_buf_puts(b, ", toString(created_by_id), toString(updated_by_id), toString(deleted_by_id), version, "
                        SG_RCH_LIVE_SQL);
}

static int row_columns(sg_buf_t *b, const sg_rch_ctx_t *c) { return row_columns_pf(b, c, NULL); }

int sg_rch_trace_sql(const sg_rch_ctx_t *c, const uint8_t trace_id[16], sg_buf_t *out) {
  char t[37];
  sg_uuid_format(trace_id, t);
  OK(sg_buf_puts(out, "SELECT "));
  OK(row_columns(out, c));
  OK(sg_buf_puts(out, " FROM "));
  OK(table(out, c));
  OK(sg_buf_puts(out, " PREWHERE "));
  OK(project_eq(out, c));
  if (!has_index(c))
    return sg_buf_printf(out, " AND trace_id = toUUID('%s') SETTINGS " POINT_READ " FORMAT TabSeparated", t);
  /* the created_at values of the trace's rows (in the primary key: the
   * granules that hold them), then the rows */
  OK(sg_buf_puts(out, " AND created_at IN (SELECT created_at FROM "));
  OK(table_named(out, c, "spans_by_trace"));
  OK(sg_buf_puts(out, " WHERE "));
  OK(project_eq(out, c));
  return sg_buf_printf(out, " AND trace_id = toUUID('%s')) AND trace_id = toUUID('%s') SETTINGS " POINT_READ ", "
                       IX_SETTINGS " FORMAT TabSeparated", t, t);
}

/* (start, trace, span) strictly after p in the page order. */
static int after_pos(sg_buf_t *b, const sg_rch_ctx_t *c, const sg_rch_pos_t *p, int desc) {
  const char *lt = desc ? "<" : ">";
  OK(sg_buf_puts(b, " AND ("));
  OK(sg_re_ch_time_cmp(b, c->ver, "start_time", lt, p->start_us));
  OK(sg_buf_puts(b, " OR ("));
  OK(sg_re_ch_time_cmp(b, c->ver, "start_time", "=", p->start_us));
  return sg_buf_printf(b, " AND (toString(trace_id) %s '%s' OR (toString(trace_id) = '%s' AND toString(span_id) %s '%s'))))",
                       lt, p->trace, p->trace, lt, p->span);
}

/* The project, the window [oldest, newest) on start_time (Agenta's
 * windowing) and the position after the cursor: where a page's rows are. */
static int window(sg_buf_t *out, const sg_rch_ctx_t *c, const sg_rch_scan_t *s) {
  OK(project_eq(out, c));
  if (s->has_oldest) {
    OK(sg_buf_puts(out, " AND "));
    OK(sg_re_ch_time_cmp(out, c->ver, "start_time", ">=", s->oldest_us));
  }
  if (s->has_newest) {
    OK(sg_buf_puts(out, " AND "));
    OK(sg_re_ch_time_cmp(out, c->ver, "start_time", "<", s->newest_us));
  }
  if (s->after) OK(after_pos(out, c, s->after, s->descending));
  return 0;
}

/* created_at AND its bound over the window's index rows (agg: min or max;
 * op: >= or <=). */
static int created_bound(sg_buf_t *out, const sg_rch_ctx_t *c, const sg_rch_scan_t *s, const char *agg,
                         const char *op) {
  OK(sg_buf_printf(out, " AND created_at %s (SELECT %s(created_at) FROM ", op, agg));
  OK(table_named(out, c, "spans_by_start"));
  OK(sg_buf_puts(out, " WHERE "));
  OK(window(out, c, s));
  return sg_buf_putc(out, ')');
}

int sg_rch_candidates_sql(const sg_rch_ctx_t *c, const sg_rch_scan_t *s, sg_buf_t *out) {
  const char *dir = s->descending ? " DESC" : "";
  int from_index = s->from_index && has_index(c), prune = !from_index && s->prune && has_index(c);
  OK(sg_buf_puts(out, "SELECT "));
  OK(us(out, c, "created_at"));
  OK(sg_buf_puts(out, ", toString(trace_id) AS t, toString(span_id) AS s, version, "));
  OK(us(out, c, "start_time"));
  OK(sg_buf_puts(out, " FROM "));
  OK(table_named(out, c, from_index ? "spans_by_start" : "spans"));
  /* The window first, explicitly (ClickHouse would move the project's
   * equality there, the cheapest column, and then read every JSON column
   * of the project): start_time is read for the project's rows (of the
   * index's window only, or of spans' granules in the window's created_at
   * range), the other columns only in the granules the window keeps. Safe
   * per version: each candidate is checked against its span's latest
   * version afterwards. */
  OK(sg_buf_puts(out, " PREWHERE "));
  OK(window(out, c, s));
  if (prune) {
    OK(created_bound(out, c, s, "min", ">="));
    OK(created_bound(out, c, s, "max", "<="));
  }
  OK(sg_buf_printf(out, " WHERE (%s) AND (" SG_RCH_LIVE_SQL ")", s->prefilter && s->prefilter[0] ? s->prefilter : "1"));
  OK(sg_buf_printf(out, " ORDER BY start_time%s", dir));
  if (!(c->ver->caps & SG_CH_DATETIME64)) OK(sg_buf_printf(out, ", start_time_us%s", dir));
  /* text order of the ids: PostgreSQL's uuid order (ClickHouse's own UUID
   * order compares the halves the other way round) */
  OK(sg_buf_printf(out, ", t%s, s%s, version DESC LIMIT %d", dir, dir, s->limit));
  if (prune) OK(sg_buf_puts(out, " SETTINGS " IX_SETTINGS));
  return sg_buf_puts(out, " FORMAT TabSeparated");
}

/* created_at as a literal of its column type. */
static int created_lit(sg_buf_t *b, const sg_rch_ctx_t *c, int64_t us_) {
  if (c->ver->caps & SG_CH_DATETIME64) {
    char iso[32];
    sg_time_format(us_, iso);
    iso[10] = ' ';
    iso[26] = '\0';
    return sg_buf_printf(b, "toDateTime64('%s', 6, 'UTC')", iso);
  }
  return sg_buf_printf(b, "toDateTime(%" PRId64 ")", us_ / 1000000);
}

int sg_rch_fetch_sql(const sg_rch_ctx_t *c, const sg_rch_key_t *keys, size_t n, const char *prefilter,
                     sg_buf_t *out) {
  OK(sg_buf_puts(out, "SELECT "));
  OK(row_columns_pf(out, c, prefilter ? "sg_pf" : NULL));
  if (prefilter) OK(sg_buf_printf(out, ", (%s) AS sg_pf", prefilter));
  OK(sg_buf_puts(out, " FROM "));
  OK(table(out, c));
  /* created_at is in the primary key: it narrows the granules read (each
   * distinct value once); the ids are read first there (PREWHERE), the
   * other columns only in granules holding one of the spans */
  OK(sg_buf_puts(out, " PREWHERE "));
  OK(project_eq(out, c));
  OK(sg_buf_puts(out, " AND created_at IN ("));
  int64_t unit = (c->ver->caps & SG_CH_DATETIME64) ? 1 : 1000000;
  for (size_t i = 0; i < n; i++) {
    int seen = 0;
    for (size_t j = 0; j < i && !seen; j++) seen = keys[j].created_us / unit == keys[i].created_us / unit;
    if (seen) continue;
    if (i) OK(sg_buf_puts(out, ", "));
    OK(created_lit(out, c, keys[i].created_us));
  }
  /* The ids as text: a set of string literals. 18.16 evaluates every
   * toUUID('...') of an IN list as an expression of its own while building
   * the set, ~35 µs each: 128 keys cost ~6 ms before a row is read
   * (docs/performance.md). The keys are toString's own output. */
  OK(sg_buf_puts(out, ") AND (toString(trace_id), toString(span_id)) IN ("));
  for (size_t i = 0; i < n; i++)
    OK(sg_buf_printf(out, "%s('%s', '%s')", i ? ", " : "", keys[i].trace, keys[i].span));
  return sg_buf_puts(out, ") SETTINGS " POINT_READ " FORMAT TabSeparated");
}

int sg_rch_analytics_sql(const sg_rch_ctx_t *c, int64_t from_us, int64_t to_us, const sg_rch_key_t *after,
                         int limit, int with_attributes, sg_buf_t *out) {
  OK(sg_buf_puts(out, "SELECT "));
  OK(us(out, c, "created_at"));
  OK(sg_buf_puts(out, ", toString(trace_id), toString(span_id), version, " SG_RCH_LIVE_SQL ", "));
  OK(us(out, c, "start_time"));
  OK(sg_buf_puts(out, ", "));
  OK(us(out, c, "end_time"));
  OK(sg_buf_puts(out, ", toString(status_code), "));
  OK(us(out, c, "deleted_at"));
  OK(sg_buf_puts(out, ", toString(trace_type), toString(span_type), toString(span_kind), span_name"));
  if (with_attributes) OK(sg_buf_puts(out, ", attributes"));
  OK(sg_buf_puts(out, " FROM "));
  OK(table(out, c));
  OK(sg_buf_puts(out, " WHERE "));
  OK(project_eq(out, c));
  /* Every version of the next keys with a version in the window: a span
   * whose latest version left the window is judged on that version.
   * GLOBAL: on a cluster the page of keys is chosen once, over every shard
   * (a plain IN on a Distributed table is refused, code 288, and a
   * per-shard LIMIT would let the cursor skip keys). */
  OK(sg_buf_puts(out, " AND (created_at, trace_id, span_id) GLOBAL IN (SELECT created_at, trace_id, span_id FROM "));
  OK(table(out, c));
  OK(sg_buf_puts(out, " WHERE "));
  OK(project_eq(out, c));
  OK(sg_buf_puts(out, " AND "));
  OK(sg_re_ch_time_cmp(out, c->ver, "start_time", ">=", from_us));
  OK(sg_buf_puts(out, " AND "));
  OK(sg_re_ch_time_cmp(out, c->ver, "start_time", "<", to_us));
  if (after) {
    OK(sg_buf_puts(out, " AND ("));
    OK(sg_re_ch_time_cmp(out, c->ver, "created_at", ">", after->created_us));
    OK(sg_buf_puts(out, " OR ("));
    OK(sg_re_ch_time_cmp(out, c->ver, "created_at", "=", after->created_us));
    OK(sg_buf_printf(out, " AND (toString(trace_id) > '%s' OR (toString(trace_id) = '%s' AND toString(span_id) > '%s'))))",
                     after->trace, after->trace, after->span));
  }
  OK(sg_buf_puts(out, " GROUP BY created_at"));
  if (!(c->ver->caps & SG_CH_DATETIME64)) OK(sg_buf_puts(out, ", created_at_us"));
  OK(sg_buf_puts(out, ", trace_id, span_id ORDER BY created_at"));
  if (!(c->ver->caps & SG_CH_DATETIME64)) OK(sg_buf_puts(out, ", created_at_us"));
  return sg_buf_printf(out, ", toString(trace_id), toString(span_id) LIMIT %d) FORMAT TabSeparated", limit);
}
