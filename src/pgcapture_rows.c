/* pgcapture_rows.c - pgoutput tuples -> ClickHouse rows; see pgcapture_rows.h. */
#include "pgcapture_rows.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "ch.h"
#include "err.h"

static const char *const span_col_names[SG_CAP_NCOLS] = {
#define XX(n) #n,
    SG_CAP_SPAN_COLS(XX)
#undef XX
};

/* PostgreSQL type OIDs (pg_type.dat), for the nodes' attributes. */
enum {
  OID_BOOL = 16,
  OID_INT8 = 20,
  OID_INT2 = 21,
  OID_INT4 = 23,
  OID_OID = 26,
  OID_JSON = 114,
  OID_FLOAT4 = 700,
  OID_FLOAT8 = 701,
  OID_TIMESTAMP = 1114,
  OID_TIMESTAMPTZ = 1184,
  OID_NUMERIC = 1700,
  OID_JSONB = 3802,
};

/* ---- relations ----------------------------------------------------------------- */

void sg_cap_rel_free(sg_cap_rel_t *r) {
  if (r->names)
    for (uint16_t i = 0; i < r->ncols; i++) free(r->names[i]);
  free(r->names);
  free(r->types);
  memset(r, 0, sizeof *r);
}

static int16_t find_col(const sg_pgo_msg_t *m, const char *name) {
  for (uint16_t i = 0; i < m->u.rel.ncols; i++)
    if (!strcmp(m->u.rel.cols[i].name, name)) return (int16_t)i;
  return -1;
}

int sg_cap_rel_set(sg_cap_rel_t *r, const sg_pgo_msg_t *m, char *why, size_t whycap) {
  sg_cap_rel_free(r);
  r->oid = m->u.rel.oid;
  r->replident = m->u.rel.replident;
  r->ncols = m->u.rel.ncols;
  snprintf(r->name, sizeof r->name, "%s", m->u.rel.relname);
  if (m->u.rel.ncols > INT16_MAX) {
    snprintf(why, whycap, "%s has %u columns", r->name, m->u.rel.ncols);
    return SG_EINVAL;
  }
  if (!strcmp(r->name, "spans")) {
    r->kind = SG_CAP_SPANS;
    for (int c = 0; c < SG_CAP_NCOLS; c++) r->idx[c] = find_col(m, span_col_names[c]);
    static const int need[] = {SG_CAP_C_project_id, SG_CAP_C_trace_id,    SG_CAP_C_span_id,
                               SG_CAP_C_span_kind,  SG_CAP_C_span_name,   SG_CAP_C_start_time,
                               SG_CAP_C_end_time,   SG_CAP_C_status_code, SG_CAP_C_created_at};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
      if (r->idx[need[i]] < 0) {
        snprintf(why, whycap, "table spans has no column %s", span_col_names[need[i]]);
        return SG_EINVAL;
      }
    return 0;
  }
  if (!strcmp(r->name, "nodes")) {
    r->kind = SG_CAP_NODES;
    r->n_project = find_col(m, "project_id");
    r->n_node = find_col(m, "node_id");
    r->n_tree = find_col(m, "tree_id");
    r->n_root = find_col(m, "root_id");
    r->n_created = find_col(m, "created_at");
    r->n_updated = find_col(m, "updated_at");
    if (r->n_project < 0 || r->n_node < 0 || r->n_created < 0) {
      snprintf(why, whycap, "table nodes has no project_id, node_id or created_at");
      return SG_EINVAL;
    }
    r->names = calloc(r->ncols ? r->ncols : 1, sizeof *r->names);
    r->types = calloc(r->ncols ? r->ncols : 1, sizeof *r->types);
    if (!r->names || !r->types) return SG_ENOMEM;
    for (uint16_t i = 0; i < r->ncols; i++) {
      r->types[i] = m->u.rel.cols[i].type_oid;
      if ((r->names[i] = strdup(m->u.rel.cols[i].name)) == NULL) return SG_ENOMEM;
    }
    return 0;
  }
  r->kind = SG_CAP_OTHER;
  return 0;
}

/* ---- values ---------------------------------------------------------------------- */

/* Column i's text (p NULL: SQL NULL). An unchanged TOASTed value comes from
 * the old row. SG_ENOTFOUND: not in the stream. */
static int col_text(const sg_pgo_tuple_t *tup, const sg_pgo_tuple_t *old, int i, sg_ch_text_t *v) {
  v->p = NULL;
  v->n = 0;
  if (i < 0) return 0; /* the table lacks the column: NULL */
  if (i >= tup->n) return SG_ENOTFOUND;
  const sg_pgo_value_t *x = &tup->v[i];
  if (x->kind == 'u' && old && i < old->n) x = &old->v[i];
  if (x->kind == 'n') return 0;
  if (x->kind != 't') return SG_ENOTFOUND; /* 'u' without the old row; 'b' is never asked for */
  v->p = x->p ? x->p : "";
  v->n = x->len;
  return 0;
}

/* A timestamptz column as µs; NULL is 0 (span.h's rule) when nullable. */
static int col_time(const sg_pgo_tuple_t *tup, const sg_pgo_tuple_t *old, int i, int nullable, int64_t *us) {
  sg_ch_text_t v;
  int rc = col_text(tup, old, i, &v);
  if (rc != 0) return rc;
  if (v.p == NULL) {
    *us = 0;
    return nullable ? 0 : SG_ENOTFOUND;
  }
  return sg_pgo_timestamptz_us(v.p, v.n, us) == 0 ? 0 : SG_EINVAL;
}

int sg_cap_span_row(const sg_cap_rel_t *rel, const sg_pgo_tuple_t *tup, const sg_pgo_tuple_t *old,
                    uint8_t project_id[16], sg_ch_text_row_t *row, const char **why) {
  memset(row, 0, sizeof *row);
  memset(project_id, 0, 16);
  const char *dummy;
  if (why == NULL) why = &dummy;
  *why = "";
  const int16_t *ix = rel->idx;
  sg_ch_text_t p;
  int rc;
#define FAIL(col, code)                                                                                      \
  do {                                                                                                       \
    *why = span_col_names[SG_CAP_C_##col];                                                                   \
    return (code);                                                                                           \
  } while (0)
  if ((rc = col_text(tup, old, ix[SG_CAP_C_project_id], &p)) != 0) FAIL(project_id, rc);
  if (p.p == NULL) FAIL(project_id, SG_ENOTFOUND);
  if (sg_id_parse(p.p, p.n, project_id) != 0) FAIL(project_id, SG_EINVAL);
  /* created_at first: a caller that cannot write the row may still name its range */
  if ((rc = col_time(tup, old, ix[SG_CAP_C_created_at], 0, &row->created_at_us)) != 0) FAIL(created_at, rc);
#define TXT(col)                                                                                             \
  if ((rc = col_text(tup, old, ix[SG_CAP_C_##col], &row->col)) != 0) FAIL(col, rc);
  TXT(trace_id)
  TXT(span_id) TXT(parent_id) TXT(trace_type) TXT(span_type) TXT(span_kind) TXT(span_name) TXT(status_code)
      TXT(status_message) TXT(attributes) TXT(references) TXT(links) TXT(hashes) TXT(events) TXT(session_id)
          TXT(user_id) TXT(agent_id) TXT(created_by_id) TXT(updated_by_id) TXT(deleted_by_id)
#undef TXT
      /* NOT NULL in PostgreSQL: NULL here means a key-only old row (a delete
   * without REPLICA IDENTITY FULL) */
      if (row->trace_id.p == NULL) FAIL(trace_id, SG_ENOTFOUND);
  if (row->span_id.p == NULL) FAIL(span_id, SG_ENOTFOUND);
  if (row->span_kind.p == NULL) FAIL(span_kind, SG_ENOTFOUND);
  if (row->status_code.p == NULL) FAIL(status_code, SG_ENOTFOUND);
  if ((rc = col_time(tup, old, ix[SG_CAP_C_start_time], 0, &row->start_us)) != 0) FAIL(start_time, rc);
  if ((rc = col_time(tup, old, ix[SG_CAP_C_end_time], 0, &row->end_us)) != 0) FAIL(end_time, rc);
  if ((rc = col_time(tup, old, ix[SG_CAP_C_updated_at], 1, &row->updated_at_us)) != 0) FAIL(updated_at, rc);
  if ((rc = col_time(tup, old, ix[SG_CAP_C_deleted_at], 1, &row->deleted_at_us)) != 0) FAIL(deleted_at, rc);
#undef FAIL
  row->version = row->updated_at_us ? row->updated_at_us : row->created_at_us;
  return 0;
}

void sg_cap_tombstone(sg_ch_text_row_t *row, int64_t commit_us) {
  row->is_deleted = 1;
  if (commit_us >= SG_CH_TIME_MIN_US && commit_us <= SG_CH_TIME_MAX_US) row->deleted_at_us = commit_us;
  row->version = commit_us > row->version ? commit_us : row->version + 1;
}

int sg_cap_span_key_moved(const sg_cap_rel_t *rel, const sg_pgo_tuple_t *old, const sg_pgo_tuple_t *tup) {
  static const int keys[] = {SG_CAP_C_project_id, SG_CAP_C_trace_id, SG_CAP_C_span_id, SG_CAP_C_created_at};
  for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
    sg_ch_text_t a, b;
    int i = rel->idx[keys[k]];
    if (col_text(old, NULL, i, &a) != 0 || col_text(tup, old, i, &b) != 0) return 0;
    if (a.p == NULL || b.p == NULL) return 0;
    if (a.n != b.n || memcmp(a.p, b.p, a.n) != 0) return 1;
  }
  return 0;
}

/* ---- the span ttl.lua sees ------------------------------------------------------- */

static int enum_text(const sg_ch_text_t *v, int (*parse)(const char *), int nullable, int8_t *out) {
  if (v->p == NULL) {
    if (!nullable) return SG_EINVAL;
    *out = SG_NULL_ENUM;
    return 0;
  }
  char label[64];
  if (v->n >= sizeof label) return SG_EINVAL;
  memcpy(label, v->p, v->n);
  label[v->n] = '\0';
  int e = parse(label);
  if (e < 0) return SG_EINVAL;
  *out = (int8_t)e;
  return 0;
}

static int id_text(const sg_ch_text_t *v, uint8_t out[16], uint8_t *has) {
  if (v->p == NULL) {
    if (has == NULL) return SG_EINVAL;
    *has = 0;
    return 0;
  }
  if (sg_id_parse(v->p, v->n, out) != 0) return SG_EINVAL;
  if (has) *has = 1;
  return 0;
}

static int str_text(const sg_ch_text_t *v, char **out) {
  *out = NULL;
  if (v->p == NULL) return 0;
  *out = strndup(v->p, v->n);
  return *out ? 0 : SG_ENOMEM;
}

static int json_text(const sg_ch_text_t *v, json_t **out) {
  *out = NULL;
  if (v->p == NULL) return 0;
  json_error_t e;
  *out = json_loadb(v->p, v->n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
  return *out ? 0 : SG_EPARSE;
}

int sg_cap_hook_span(const sg_ch_text_row_t *t, sg_span_t *s, const char **why) {
  memset(s, 0, sizeof *s);
  int rc;
#define CHECK(expr, what)                                                                                    \
  if ((rc = (expr)) != 0) {                                                                                  \
    *why = what;                                                                                             \
    sg_span_clear(s);                                                                                        \
    return rc;                                                                                               \
  }
  CHECK(id_text(&t->trace_id, s->trace_id, NULL), "trace_id");
  CHECK(id_text(&t->span_id, s->span_id, NULL), "span_id");
  CHECK(id_text(&t->parent_id, s->parent_id, &s->has_parent), "parent_id");
  CHECK(id_text(&t->created_by_id, s->created_by_id, &s->has_created_by), "created_by_id");
  CHECK(id_text(&t->updated_by_id, s->updated_by_id, &s->has_updated_by), "updated_by_id");
  CHECK(id_text(&t->deleted_by_id, s->deleted_by_id, &s->has_deleted_by), "deleted_by_id");
  CHECK(enum_text(&t->trace_type, sg_trace_type_parse, 1, &s->trace_type), "trace_type");
  CHECK(enum_text(&t->span_type, sg_span_type_parse, 1, &s->span_type), "span_type");
  CHECK(enum_text(&t->span_kind, sg_span_kind_parse, 0, &s->span_kind), "span_kind");
  CHECK(enum_text(&t->status_code, sg_status_code_parse, 0, &s->status_code), "status_code");
  static const sg_ch_text_t empty = {"", 0};
  CHECK(str_text(t->span_name.p ? &t->span_name : &empty, &s->span_name), "span_name");
  CHECK(str_text(&t->status_message, &s->status_message), "status_message");
  CHECK(str_text(&t->session_id, &s->session_id), "session_id");
  CHECK(str_text(&t->user_id, &s->user_id), "user_id");
  CHECK(str_text(&t->agent_id, &s->agent_id), "agent_id");
  CHECK(json_text(&t->attributes, &s->attributes), "attributes");
  CHECK(json_text(&t->references, &s->references), "references");
  CHECK(json_text(&t->links, &s->links), "links");
  CHECK(json_text(&t->hashes, &s->hashes), "hashes");
  CHECK(json_text(&t->events, &s->events), "events");
#undef CHECK
  s->start_us = t->start_us;
  s->end_us = t->end_us;
  s->created_at_us = t->created_at_us;
  s->updated_at_us = t->updated_at_us;
  s->deleted_at_us = t->deleted_at_us;
  s->version = t->version;
  return 0;
}

/* ---- nodes ------------------------------------------------------------------------- */

int sg_cap_nodes_insert_sql(const sg_ch_layout_t *lay, const char *db, sg_buf_t *out) {
  int rc = sg_buf_puts(out, "INSERT INTO ");
  rc = rc ? rc : sg_ch_quote_ident(out, db);
  rc = rc ? rc
          : sg_buf_printf(out,
                          ".nodes (project_id, node_id, tree_id, root_id, created_at, %s"
                          "attributes, version, expires_at, is_deleted) FORMAT TabSeparated",
                          (lay->flags & SG_CH_LAYOUT_DT64) ? "" : "created_at_us, ");
  return rc;
}

/* A UUID column, printed canonically; NULL allowed when nullable. */
static int node_uuid(sg_buf_t *b, const sg_pgo_tuple_t *tup, const sg_pgo_tuple_t *old, int i, int nullable,
                     uint8_t id[16]) {
  sg_ch_text_t v;
  int rc = col_text(tup, old, i, &v);
  if (rc != 0) return rc;
  if (v.p == NULL) return nullable ? sg_buf_append(b, "\\N", 2) : SG_ENOTFOUND;
  uint8_t tmp[16];
  if (id == NULL) id = tmp;
  if (sg_id_parse(v.p, v.n, id) != 0) return SG_EINVAL;
  char u[37];
  sg_uuid_format(id, u);
  return sg_buf_append(b, u, 36);
}

/* jsonb orders an object's keys by length, then bytewise. */
static int jsonb_key_cmp(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la != lb) return la < lb ? -1 : 1;
  return memcmp(a, b, la);
}

static int is_json_number(const char *p, size_t n) {
  if (n == 0) return 0;
  if (n == 3 && !memcmp(p, "NaN", 3)) return 0;
  for (size_t i = 0; i < n; i++) /* Infinity / -Infinity and anything odd become strings */
    if (!((p[i] >= '0' && p[i] <= '9') || p[i] == '-' || p[i] == '+' || p[i] == '.' || p[i] == 'e' ||
          p[i] == 'E'))
      return 0;
  return 1;
}

/* One value as to_jsonb() renders it (for the types nodes use; anything
 * else as its text in a JSON string). */
static int json_value(sg_buf_t *j, uint32_t type, const sg_ch_text_t *v) {
  if (v->p == NULL) return sg_buf_puts(j, "null");
  switch (type) {
  case OID_BOOL: return sg_buf_puts(j, v->n == 1 && v->p[0] == 't' ? "true" : "false");
  case OID_INT2:
  case OID_INT4:
  case OID_INT8:
  case OID_OID:
  case OID_FLOAT4:
  case OID_FLOAT8:
  case OID_NUMERIC:
    if (is_json_number(v->p, v->n)) return sg_buf_append(j, v->p, v->n);
    break;
  case OID_JSON:
  case OID_JSONB: return sg_buf_append(j, v->p, v->n);
  case OID_TIMESTAMP:
  case OID_TIMESTAMPTZ:
    /* "2024-05-01 00:00:01.5+00" -> "2024-05-01T00:00:01.5+00:00" (ISO 8601, as to_jsonb) */
    if (v->n >= 19 && v->p[10] == ' ') {
      size_t zone = v->n;
      if (type == OID_TIMESTAMPTZ)
        for (size_t k = 19; k < v->n; k++)
          if (v->p[k] == '+' || v->p[k] == '-') {
            zone = k;
            break;
          }
      int rc = sg_buf_putc(j, '"');
      rc = rc ? rc : sg_buf_append(j, v->p, 10);
      rc = rc ? rc : sg_buf_putc(j, 'T');
      rc = rc ? rc : sg_buf_append(j, v->p + 11, v->n - 11);
      if (rc == 0 && zone < v->n && v->n - zone == 3) rc = sg_buf_puts(j, ":00");
      return rc ? rc : sg_buf_putc(j, '"');
    }
    break;
  default: break;
  }
  int rc = sg_buf_putc(j, '"');
  rc = rc ? rc : sg_buf_json_escape(j, v->p, v->n);
  return rc ? rc : sg_buf_putc(j, '"');
}

static void put_time(char *out, size_t cap, int64_t us, int dt64) {
  time_t secs = (time_t)(us / 1000000);
  long frac = (long)(us % 1000000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char base[32];
  strftime(base, sizeof base, "%Y-%m-%d %H:%M:%S", &tm);
  if (dt64)
    snprintf(out, cap, "%s.%06ld", base, frac);
  else
    snprintf(out, cap, "%s\t%ld", base, frac);
}

int sg_cap_node_row(const sg_ch_layout_t *lay, const sg_cap_rel_t *rel, const sg_pgo_tuple_t *tup,
                    const sg_pgo_tuple_t *old, int is_deleted, int64_t tomb_version, sg_buf_t *out,
                    uint8_t project_id[16], const char **why) {
  size_t start = out->len;
  sg_buf_t j = SG_BUF_INIT;
  int *order = NULL;
  int rc;
  const char *dummy;
  if (why == NULL) why = &dummy;
  *why = "";
#define STEP(expr, what)                                                                                     \
  if ((rc = (expr)) != 0) {                                                                                  \
    *why = what;                                                                                             \
    goto fail;                                                                                               \
  }
  STEP(node_uuid(out, tup, old, rel->n_project, 0, project_id), "project_id");
  STEP(sg_buf_putc(out, '\t'), "");
  STEP(node_uuid(out, tup, old, rel->n_node, 0, NULL), "node_id");
  STEP(sg_buf_putc(out, '\t'), "");
  STEP(node_uuid(out, tup, old, rel->n_tree, 1, NULL), "tree_id");
  STEP(sg_buf_putc(out, '\t'), "");
  STEP(node_uuid(out, tup, old, rel->n_root, 1, NULL), "root_id");
  STEP(sg_buf_putc(out, '\t'), "");
  int64_t created, updated;
  STEP(col_time(tup, old, rel->n_created, 0, &created), "created_at");
  STEP(col_time(tup, old, rel->n_updated, 1, &updated), "updated_at");
  if (created < SG_CH_TIME_MIN_US || created > SG_CH_TIME_MAX_US) STEP(SG_EINVAL, "created_at");
  char t[64];
  put_time(t, sizeof t, created, (lay->flags & SG_CH_LAYOUT_DT64) != 0);
  STEP(sg_buf_puts(out, t), "");
  STEP(sg_buf_putc(out, '\t'), "");
  /* attributes: every other column, keys in jsonb's order */
  order = malloc((rel->ncols ? rel->ncols : 1) * sizeof *order);
  if (!order) STEP(SG_ENOMEM, "");
  int n = 0;
  for (int i = 0; i < rel->ncols; i++) {
    if (i == rel->n_project || i == rel->n_node || i == rel->n_tree || i == rel->n_root ||
        i == rel->n_created)
      continue;
    int k = n++;
    while (k > 0 && jsonb_key_cmp(rel->names[order[k - 1]], rel->names[i]) > 0) {
      order[k] = order[k - 1];
      k--;
    }
    order[k] = i;
  }
  STEP(sg_buf_putc(&j, '{'), "");
  for (int k = 0; k < n; k++) {
    int i = order[k];
    sg_ch_text_t v;
    if ((rc = col_text(tup, old, i, &v)) != 0) {
      *why = rel->names[i];
      goto fail;
    }
    STEP(sg_buf_puts(&j, k ? ",\"" : "\""), "");
    STEP(sg_buf_json_escape(&j, rel->names[i], strlen(rel->names[i])), "");
    STEP(sg_buf_puts(&j, "\":"), "");
    if ((rc = json_value(&j, rel->types[i], &v)) != 0) {
      *why = rel->names[i];
      goto fail;
    }
  }
  STEP(sg_buf_putc(&j, '}'), "");
  STEP(sg_ch_json_tsv(out, j.data, j.len), "attributes");
  int64_t version = updated ? updated : created;
  if (is_deleted) version = version + 1 > tomb_version ? version + 1 : tomb_version;
  STEP(sg_buf_printf(out, "\t%" PRId64 "\t2105-12-31 23:59:59\t%d\n", version, is_deleted ? 1 : 0), "");
#undef STEP
  free(order);
  sg_buf_free(&j);
  return 0;
fail:
  free(order);
  sg_buf_free(&j);
  if (out->data) {
    out->len = start;
    out->data[start] = '\0';
  }
  return rc;
}
