/* read_filter.c - Agenta's filtering/windowing shape compiled to parameterized
 * PostgreSQL (POST /v1/spans/query) and the trace statement. See
 * read_filter.h for the rules; docs/read.md for the API.
 *
 * How a condition becomes SQL (L = the JSON leaf when a key is given:
 * `col #> $path::text[]`, or COALESCE(that, col -> $key) when the key has
 * dots, so a literal dotted key stored flat also matches):
 *
 *   column fields           is/eq: col = $v::T      is_not/neq: col IS DISTINCT FROM $v::T
 *                           (value null: IS NULL / IS NOT NULL)
 *                           gt lt gte lte btwn: times and strings
 *                           startswith endswith contains like: ILIKE (LIKE with
 *                           options.case_sensitive), matches: ~* (~)
 *                           in: col = ANY($v::T[])   not_in: (...) IS NOT TRUE
 *                           exists / not_exists: IS NOT NULL / IS NULL
 *   JSON fields with a key  is: col @> $nested::jsonb (Agenta's containment, which
 *                           the GIN index serves); eq/neq: L = $v::jsonb;
 *                           gt..btwn: numeric when the value is a number (leaves
 *                           that are not numbers never match), text otherwise;
 *                           string operators over L's text; in/not_in: L equals
 *                           one of the listed JSON values; exists: L IS NOT NULL
 *   JSON fields, no key     is/eq: col @> $v::jsonb; exists / not_exists
 *   content                 full-text search over attributes and events
 *                           (websearch_to_tsquery('simple', $v), as Agenta)
 * Negations count an absent value as "not equal" (IS NOT TRUE), so is_not
 * and not_in return the spans that lack the attribute too.
 */
#include "read_filter.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "jalloc.h"
#include "read_internal.h"
#include "read_span.h"
#include "span.h"

#define MAX_DEPTH 10
#define MAX_CONDITIONS 256
#define MAX_LIST 1000
#define MAX_KEY 512
#define MAX_SEGMENTS 32

/* ---- the query object --------------------------------------------------- */

void sg_rf_query_init(sg_rf_query_t *q) {
  memset(q, 0, sizeof *q);
  q->limit = SG_RF_LIMIT_DEFAULT;
  q->descending = 1;
}

void sg_rf_query_free(sg_rf_query_t *q) {
  for (size_t i = 0; i < q->nparams; i++) free(q->params[i]);
  free(q->params);
  sg_buf_free(&q->sql);
  q->params = NULL;
  q->nparams = q->capparams = 0;
}

int sg_rf_param(sg_rf_query_t *q, const char *text, size_t n) {
  if (q->nparams == q->capparams) {
    size_t cap = q->capparams ? q->capparams * 2 : 8;
    char **p = realloc(q->params, cap * sizeof *p);
    if (!p) return SG_ENOMEM;
    q->params = p;
    q->capparams = cap;
  }
  char *s = malloc(n + 1);
  if (!s) return SG_ENOMEM;
  memcpy(s, text, n);
  s[n] = '\0';
  q->params[q->nparams++] = s;
  return (int)q->nparams;
}

/* Parameter from a buffer's contents (the buffer is reset). */
static int param_buf(sg_rf_query_t *q, sg_buf_t *b) {
  int n = sg_rf_param(q, b->data ? b->data : "", b->len);
  sg_buf_reset(b);
  return n;
}

/* ---- fields and operators ------------------------------------------------- */

static const sg__rf_field_t fields[] = {
    {"trace_id", "trace_id", SG_RFK_UUID, "uuid", NULL, NULL, 0, SG_RF_TRACE_ID},
    {"span_id", "span_id", SG_RFK_UUID, "uuid", NULL, NULL, 0, SG_RF_SPAN_ID},
    {"parent_id", "parent_id", SG_RFK_UUID, "uuid", NULL, NULL, 0, SG_RF_PARENT_ID},
    {"created_by_id", "created_by_id", SG_RFK_UUID, "uuid", NULL, NULL, 0, SG_RF_CREATED_BY},
    {"updated_by_id", "updated_by_id", SG_RFK_UUID, "uuid", NULL, NULL, 0, SG_RF_UPDATED_BY},
    {"deleted_by_id", "deleted_by_id", SG_RFK_UUID, "uuid", NULL, NULL, 0, SG_RF_DELETED_BY},
    {"trace_type", "trace_type", SG_RFK_ENUM, "tracetype", sg_trace_type_parse, NULL, 0, SG_RF_TRACE_TYPE},
    {"span_type", "span_type", SG_RFK_ENUM, "spantype", sg_span_type_parse, NULL, 0, SG_RF_SPAN_TYPE},
    {"span_kind", "span_kind", SG_RFK_ENUM, "otelspankind", sg_span_kind_parse, "SPAN_KIND_", 0, SG_RF_SPAN_KIND},
    {"status_code", "status_code", SG_RFK_ENUM, "otelstatuscode", sg_status_code_parse, "STATUS_CODE_", 0, SG_RF_STATUS_CODE},
    {"span_name", "span_name", SG_RFK_STRING, "text", NULL, NULL, 0, SG_RF_SPAN_NAME},
    {"status_message", "status_message", SG_RFK_STRING, "text", NULL, NULL, 0, SG_RF_STATUS_MESSAGE},
    {"session_id", "session_id", SG_RFK_STRING, "text", NULL, NULL, 0, SG_RF_SESSION_ID},
    {"user_id", "user_id", SG_RFK_STRING, "text", NULL, NULL, 0, SG_RF_USER_ID},
    {"agent_id", "agent_id", SG_RFK_STRING, "text", NULL, NULL, 0, SG_RF_AGENT_ID},
    {"start_time", "start_time", SG_RFK_TIME, "timestamptz", NULL, NULL, 0, SG_RF_START_US},
    {"end_time", "end_time", SG_RFK_TIME, "timestamptz", NULL, NULL, 0, SG_RF_END_US},
    {"created_at", "created_at", SG_RFK_TIME, "timestamptz", NULL, NULL, 0, SG_RF_CREATED_US},
    {"updated_at", "updated_at", SG_RFK_TIME, "timestamptz", NULL, NULL, 0, SG_RF_UPDATED_US},
    {"deleted_at", "deleted_at", SG_RFK_TIME, "timestamptz", NULL, NULL, 0, SG_RF_DELETED_US},
    {"attributes", "attributes", SG_RFK_JSON, "jsonb", NULL, NULL, 0, SG_RF_ATTRIBUTES},
    {"references", "\"references\"", SG_RFK_JSON, "jsonb", NULL, NULL, 1, SG_RF_REFERENCES},
    {"links", "links", SG_RFK_JSON, "jsonb", NULL, NULL, 1, SG_RF_LINKS},
    {"events", "events", SG_RFK_JSON, "jsonb", NULL, NULL, 1, SG_RF_EVENTS},
    {"hashes", "hashes", SG_RFK_JSON, "jsonb", NULL, NULL, 1, SG_RF_HASHES},
    {"content", NULL, SG_RFK_CONTENT, "text", NULL, NULL, 0, -1},
};
#define NFIELDS (sizeof fields / sizeof fields[0])

const char *const sg__rf_op_names[] = {
#define XX(e, s) s,
    SG_RFO_MAP(XX)
#undef XX
};

const sg__rf_field_t *sg__rf_find_field(const char *name, size_t n) {
  for (size_t i = 0; i < NFIELDS; i++)
    if (strlen(fields[i].name) == n && !memcmp(fields[i].name, name, n)) return &fields[i];
  return NULL;
}

int sg__rf_find_op(const char *s) {
  for (int i = 0; i < SG_RFO_COUNT; i++)
    if (!strcmp(sg__rf_op_names[i], s)) return i;
  return -1;
}

/* ---- messages ---------------------------------------------------------------- */

/* sg__rf_fail and sg__rf_shown serve read_analytics.c too (read_internal.h). */
int sg__rf_fail(sg_buf_t *err, const char *where, const char *fmt, ...) {
  if (err) {
    va_list ap;
    sg_buf_printf(err, "%s: ", where);
    va_start(ap, fmt);
    sg_buf_vprintf(err, fmt, ap);
    va_end(ap);
  }
  return SG_EINVAL;
}

static void known_fields(sg_buf_t *b) {
  for (size_t i = 0; i < NFIELDS; i++) sg_buf_printf(b, "%s%s", i ? ", " : "", fields[i].name);
}

static void known_ops(sg_buf_t *b) {
  for (int i = 0; i < SG_RFO_COUNT; i++) sg_buf_printf(b, "%s%s", i ? ", " : "", sg__rf_op_names[i]);
}

const char *sg__rf_shown(const char *s, char out[80]) {
  size_t n = 0;
  for (; *s && n < 70; s++) {
    unsigned char c = (unsigned char)*s;
    out[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
  }
  if (*s) { out[n - 3] = out[n - 2] = out[n - 1] = '.'; }
  out[n] = '\0';
  return out;
}

/* ---- values ----------------------------------------------------------------- */

/* PostgreSQL array literal element: "..." with \ and " escaped. */
static int put_array_elem(sg_buf_t *b, const char *s) {
  int rc = sg_buf_putc(b, '"');
  for (; rc == 0 && *s; s++) {
    if (*s == '"' || *s == '\\') rc = sg_buf_putc(b, '\\');
    if (rc == 0) rc = sg_buf_putc(b, *s);
  }
  return rc ? rc : sg_buf_putc(b, '"');
}

/* LIKE pattern text with % _ \ escaped (the default escape is backslash). */
static int put_like_escaped(sg_buf_t *b, const char *s) {
  int rc = 0;
  for (; rc == 0 && *s; s++) {
    if (*s == '%' || *s == '_' || *s == '\\') rc = sg_buf_putc(b, '\\');
    if (rc == 0) rc = sg_buf_putc(b, *s);
  }
  return rc;
}

int sg__rf_time_value(const json_t *v, int64_t *us) {
  if (json_is_integer(v)) return sg_time_from_epoch_int(json_integer_value(v), us);
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    int all_digits = n > 0;
    for (size_t i = 0; i < n; i++)
      if (!isdigit((unsigned char)s[i])) all_digits = 0;
    if (all_digits) return sg_time_from_epoch_digits(s, n, us);
    return sg_time_parse_iso(s, n, us);
  }
  return SG_EINVAL;
}

/* One scalar value of a column field as the text of its parameter. */
int sg__rf_column_value(const sg__rf_field_t *f, const json_t *v, const char *where, sg_buf_t *out,
                        sg_buf_t *err) {
  char tmp[80];
  switch (f->kind) {
  case SG_RFK_UUID: {
    uint8_t id[16];
    char u[37];
    if (!json_is_string(v) || sg_id_parse(json_string_value(v), json_string_length(v), id) != 0)
      return sg__rf_fail(err, where, "%s takes an id (32 hex digits, 16 hex digits, 0x-hex or a dashed UUID)",
                         f->name);
    sg_uuid_format(id, u);
    return sg_buf_puts(out, u);
  }
  case SG_RFK_ENUM: {
    char up[64];
    size_t n = 0;
    if (!json_is_string(v)) return sg__rf_fail(err, where, "%s takes a string", f->name);
    const char *s = json_string_value(v);
    for (; s[n] && n + 1 < sizeof up; n++) up[n] = (char)toupper((unsigned char)s[n]);
    up[n] = '\0';
    int e = s[n] ? -1 : f->parse(up);
    if (e < 0 && f->prefix && n + strlen(f->prefix) < sizeof up) {
      char full[160];
      snprintf(full, sizeof full, "%s%s", f->prefix, up);
      e = f->parse(full);
      if (e >= 0) return sg_buf_puts(out, full);
    }
    if (e < 0) return sg__rf_fail(err, where, "unknown %s '%s'", f->name, sg__rf_shown(s, tmp));
    return sg_buf_puts(out, up);
  }
  case SG_RFK_STRING:
  case SG_RFK_CONTENT:
    if (json_is_string(v)) return sg_buf_append(out, json_string_value(v), json_string_length(v));
    if (json_is_number(v)) {
      char *t = json_dumps(v, JSON_ENCODE_ANY);
      if (!t) return SG_ENOMEM;
      int rc = sg_buf_puts(out, t);
      sg_json_free(t);
      return rc;
    }
    return sg__rf_fail(err, where, "%s takes a string", f->name);
  case SG_RFK_TIME: {
    int64_t us;
    char iso[32];
    if (sg__rf_time_value(v, &us) != 0)
      return sg__rf_fail(err, where, "%s takes an ISO-8601 time or an integer epoch (s, ms, µs or ns)",
                         f->name);
    sg_time_format(us, iso);
    return sg_buf_puts(out, iso);
  }
  case SG_RFK_JSON: break;
  }
  return SG_EINVAL;
}

/* ---- compiling -------------------------------------------------------------- */

typedef struct {
  sg_rf_query_t *q;
  sg_buf_t *err;
  int nconds;
  sg_buf_t tmp; /* scratch for parameter texts */
} ctx_t;

#define SQL(...) do { if (sg_buf_printf(&c->q->sql, __VA_ARGS__) != 0) return SG_ENOMEM; } while (0)

static int add_param(ctx_t *c, int *n) {
  *n = param_buf(c->q, &c->tmp);
  return *n < 0 ? *n : 0;
}

/* $n for the value v of a column field (text in c->tmp first). */
static int column_param(ctx_t *c, const sg__rf_field_t *f, const json_t *v, const char *where, int *n) {
  sg_buf_reset(&c->tmp);
  int rc = sg__rf_column_value(f, v, where, &c->tmp, c->err);
  return rc ? rc : add_param(c, n);
}

static int opt_case_sensitive(const json_t *cond) {
  const json_t *o = json_object_get(cond, "options");
  return json_is_object(o) && json_is_true(json_object_get(o, "case_sensitive"));
}

/* The LIKE pattern for a string operator, in c->tmp. */
static int like_pattern(ctx_t *c, sg__rf_op_t op, const char *s) {
  sg_buf_reset(&c->tmp);
  int rc = 0;
  if (op == SG_RFO_LIKE || op == SG_RFO_MATCHES) return sg_buf_puts(&c->tmp, s);
  if (op == SG_RFO_ENDSWITH || op == SG_RFO_CONTAINS) rc = sg_buf_putc(&c->tmp, '%');
  rc = rc ? rc : put_like_escaped(&c->tmp, s);
  if (op == SG_RFO_STARTSWITH || op == SG_RFO_CONTAINS) rc = rc ? rc : sg_buf_putc(&c->tmp, '%');
  return rc;
}

/* Writes `<expr> <ILIKE|LIKE|~*|~> $n` for a string operator over expr. */
static int string_op(ctx_t *c, sg__rf_op_t op, const char *expr, const json_t *v, int cs, const char *where) {
  if (!json_is_string(v)) return sg__rf_fail(c->err, where, "%s takes a string value", sg__rf_op_names[op]);
  int rc = like_pattern(c, op, json_string_value(v)), n;
  if (rc || (rc = add_param(c, &n))) return rc;
  const char *sqlop = op == SG_RFO_MATCHES ? (cs ? "~" : "~*") : (cs ? "LIKE" : "ILIKE");
  SQL("%s %s $%d", expr, sqlop, n);
  return 0;
}

static const char *cmp_sql(sg__rf_op_t op) {
  switch (op) {
  case SG_RFO_GT: return ">";
  case SG_RFO_LT: return "<";
  case SG_RFO_GTE: return ">=";
  default: return "<=";
  }
}

static int column_condition(ctx_t *c, const sg__rf_field_t *f, sg__rf_op_t op, const json_t *v,
                            const json_t *cond, const char *where) {
  const char *col = f->col, *T = f->pgtype;
  int n, m, rc;
  switch (op) {
  case SG_RFO_EXISTS: SQL("%s IS NOT NULL", col); return 0;
  case SG_RFO_NOT_EXISTS: SQL("%s IS NULL", col); return 0;
  case SG_RFO_IS:
  case SG_RFO_EQ:
  case SG_RFO_IS_NOT:
  case SG_RFO_NEQ: {
    int neg = op == SG_RFO_IS_NOT || op == SG_RFO_NEQ;
    if (json_is_null(v) || v == NULL) {
      SQL("%s IS %sNULL", col, neg ? "NOT " : "");
      return 0;
    }
    if ((rc = column_param(c, f, v, where, &n))) return rc;
    SQL("%s %s $%d::%s", col, neg ? "IS DISTINCT FROM" : "=", n, T);
    return 0;
  }
  case SG_RFO_GT:
  case SG_RFO_LT:
  case SG_RFO_GTE:
  case SG_RFO_LTE:
  case SG_RFO_BTWN:
    if (f->kind != SG_RFK_TIME && f->kind != SG_RFK_STRING)
      return sg__rf_fail(c->err, where, "operator '%s' does not apply to field '%s'", sg__rf_op_names[op], f->name);
    if (op != SG_RFO_BTWN) {
      if ((rc = column_param(c, f, v, where, &n))) return rc;
      SQL("%s %s $%d::%s", col, cmp_sql(op), n, T);
      return 0;
    }
    if (!json_is_array(v) || json_array_size(v) != 2)
      return sg__rf_fail(c->err, where, "btwn takes a list of two values [low, high]");
    if ((rc = column_param(c, f, json_array_get(v, 0), where, &n)) ||
        (rc = column_param(c, f, json_array_get(v, 1), where, &m)))
      return rc;
    SQL("%s BETWEEN $%d::%s AND $%d::%s", col, n, T, m, T);
    return 0;
  case SG_RFO_STARTSWITH:
  case SG_RFO_ENDSWITH:
  case SG_RFO_CONTAINS:
  case SG_RFO_LIKE:
  case SG_RFO_MATCHES:
    if (f->kind != SG_RFK_STRING)
      return sg__rf_fail(c->err, where, "operator '%s' does not apply to field '%s'", sg__rf_op_names[op], f->name);
    return string_op(c, op, col, v, opt_case_sensitive(cond), where);
  case SG_RFO_IN:
  case SG_RFO_NOT_IN: {
    if (!json_is_array(v) || json_array_size(v) > MAX_LIST)
      return sg__rf_fail(c->err, where, "%s takes a list of at most %d values", sg__rf_op_names[op], MAX_LIST);
    sg_buf_t arr = SG_BUF_INIT;
    rc = sg_buf_putc(&arr, '{');
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
      sg_buf_reset(&c->tmp);
      if (rc == 0) rc = sg__rf_column_value(f, e, where, &c->tmp, c->err);
      if (rc == 0 && i) rc = sg_buf_putc(&arr, ',');
      if (rc == 0) rc = put_array_elem(&arr, c->tmp.data ? c->tmp.data : "");
    }
    if (rc == 0) rc = sg_buf_putc(&arr, '}');
    n = rc ? rc : param_buf(c->q, &arr);
    sg_buf_free(&arr);
    if (n < 0) return n;
    if (op == SG_RFO_IN) SQL("%s = ANY($%d::%s[])", col, n, T);
    else SQL("(%s = ANY($%d::%s[])) IS NOT TRUE", col, n, T);
    return 0;
  }
  default: break;
  }
  return sg__rf_fail(c->err, where, "operator '%s' does not apply to field '%s'", sg__rf_op_names[op], f->name);
}

/* Splits key on '.' into path (text[] literal) and, when every segment is
 * not a number, the nested JSON object {"a":{"b":v}} for containment. */
static int key_path(ctx_t *c, const char *key, const char *where, int dry, int *path_n, int *nsegs,
                    int *numeric_seg) {
  size_t len = strlen(key);
  char tmp[80];
  if (len == 0 || len > MAX_KEY) return sg__rf_fail(c->err, where, "key must be 1 to %d bytes", MAX_KEY);
  sg_buf_t arr = SG_BUF_INIT;
  int rc = sg_buf_putc(&arr, '{'), segs = 0;
  *numeric_seg = 0;
  const char *p = key;
  while (rc == 0) {
    const char *dot = strchr(p, '.');
    size_t n = dot ? (size_t)(dot - p) : strlen(p);
    if (n == 0) {
      sg_buf_free(&arr);
      return sg__rf_fail(c->err, where, "key '%s' has an empty path element", sg__rf_shown(key, tmp));
    }
    int digits = 1;
    for (size_t i = 0; i < n; i++)
      if (!isdigit((unsigned char)p[i])) digits = 0;
    if (digits) *numeric_seg = 1;
    char *seg = strndup(p, n);
    if (!seg) rc = SG_ENOMEM;
    if (rc == 0 && segs) rc = sg_buf_putc(&arr, ',');
    if (rc == 0) rc = put_array_elem(&arr, seg);
    free(seg);
    segs++;
    if (!dot) break;
    p = dot + 1;
  }
  if (segs > MAX_SEGMENTS) {
    sg_buf_free(&arr);
    return sg__rf_fail(c->err, where, "key has more than %d path elements", MAX_SEGMENTS);
  }
  if (rc == 0) rc = sg_buf_putc(&arr, '}');
  int n = rc ? rc : dry ? 0 : param_buf(c->q, &arr);
  sg_buf_free(&arr);
  if (n < 0) return n;
  *path_n = n;
  *nsegs = segs;
  return 0;
}

/* sg__rf_nest_value (read_internal.h). */
json_t *sg__rf_nest_value(const char *key, const json_t *v, int flat) {
  json_t *leaf = json_deep_copy(v);
  if (!leaf) return NULL;
  if (flat) {
    json_t *o = json_object();
    if (!o || json_object_set_new(o, key, leaf) != 0) { json_decref(o); return NULL; }
    return o;
  }
  const char *end = key + strlen(key);
  while (1) {
    const char *dot = end;
    while (dot > key && dot[-1] != '.') dot--;
    json_t *o = json_object();
    char *seg = strndup(dot, (size_t)(end - dot));
    if (!o || !seg || json_object_set_new(o, seg, leaf) != 0) {
      free(seg);
      json_decref(o);
      return NULL;
    }
    free(seg);
    leaf = o;
    if (dot == key) return leaf;
    end = dot - 1;
  }
}

static int json_param(ctx_t *c, const json_t *v, int *n) {
  char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
  if (!t) return SG_ENOMEM;
  *n = sg_rf_param(c->q, t, strlen(t));
  sg_json_free(t);
  return *n < 0 ? *n : 0;
}

/* $n holding a number's JSON text or a string's text (for ::numeric / ::text). */
static int json_param_text(ctx_t *c, const json_t *v, int *n) {
  if (json_is_string(v)) *n = sg_rf_param(c->q, json_string_value(v), json_string_length(v));
  else return json_param(c, v, n);
  return *n < 0 ? *n : 0;
}

static int json_condition(ctx_t *c, const sg__rf_field_t *f, const char *key, sg__rf_op_t op, const json_t *v,
                          const json_t *cond, const char *where) {
  const char *col = f->col;
  int n, m, rc;
  if (key == NULL) {
    switch (op) {
    case SG_RFO_EXISTS: SQL("%s IS NOT NULL", col); return 0;
    case SG_RFO_NOT_EXISTS: SQL("%s IS NULL", col); return 0;
    case SG_RFO_IS:
    case SG_RFO_EQ:
    case SG_RFO_IS_NOT:
    case SG_RFO_NEQ: {
      if (v == NULL || json_is_null(v)) {
        SQL("%s IS %sNULL", col, op == SG_RFO_IS || op == SG_RFO_EQ ? "" : "NOT ");
        return 0;
      }
      json_t *w = NULL;
      if (f->list && json_is_object(v)) w = json_pack("[O]", v);
      rc = json_param(c, w ? w : v, &n);
      json_decref(w);
      if (rc) return rc;
      if (op == SG_RFO_IS || op == SG_RFO_EQ) SQL("%s @> $%d::jsonb", col, n);
      else SQL("(%s @> $%d::jsonb) IS NOT TRUE", col, n);
      return 0;
    }
    default:
      return sg__rf_fail(c->err, where, "operator '%s' on field '%s' needs a key", sg__rf_op_names[op], f->name);
    }
  }
  int path = 0, nsegs = 0, numeric = 0;
  if ((rc = key_path(c, key, where, 1, &path, &nsegs, &numeric))) return rc;
  /* Containment (`is` with a value) names no leaf: PostgreSQL must not see
   * parameters the statement does not use (it cannot type them). */
  int containment = (op == SG_RFO_IS || op == SG_RFO_IS_NOT) && v && !json_is_null(v) && !numeric && !f->list;
  int flat = 0; /* $k: the key as one literal (flat) name */
  char leaf[160] = "";
  if (!containment) {
    if ((rc = key_path(c, key, where, 0, &path, &nsegs, &numeric))) return rc;
    if (nsegs > 1 && (flat = sg_rf_param(c->q, key, strlen(key))) < 0) return flat;
    if (flat) snprintf(leaf, sizeof leaf, "COALESCE(%s #> $%d::text[], %s -> $%d::text)", col, path, col, flat);
    else snprintf(leaf, sizeof leaf, "(%s #> $%d::text[])", col, path);
  }
  flat = nsegs > 1; /* for containment: also match the literal dotted key */
  switch (op) {
  case SG_RFO_EXISTS: SQL("%s IS NOT NULL", leaf); return 0;
  case SG_RFO_NOT_EXISTS: SQL("%s IS NULL", leaf); return 0;
  case SG_RFO_IS:
  case SG_RFO_IS_NOT: {
    int neg = op == SG_RFO_IS_NOT;
    if (v == NULL || json_is_null(v)) {
      if (neg) SQL("(%s IS NOT NULL AND %s <> 'null'::jsonb)", leaf, leaf);
      else SQL("(%s IS NULL OR %s = 'null'::jsonb)", leaf, leaf);
      return 0;
    }
    if (numeric || f->list) { /* containment cannot express array positions */
      if ((rc = json_param(c, v, &n))) return rc;
      SQL(neg ? "(%s = $%d::jsonb) IS NOT TRUE" : "%s = $%d::jsonb", leaf, n);
      return 0;
    }
    json_t *nested = sg__rf_nest_value(key, v, 0);
    if (!nested) return SG_ENOMEM;
    rc = json_param(c, nested, &n);
    json_decref(nested);
    if (rc) return rc;
    if (flat) {
      json_t *fl = sg__rf_nest_value(key, v, 1);
      if (!fl) return SG_ENOMEM;
      rc = json_param(c, fl, &m);
      json_decref(fl);
      if (rc) return rc;
      SQL(neg ? "(%s @> $%d::jsonb OR %s @> $%d::jsonb) IS NOT TRUE" : "(%s @> $%d::jsonb OR %s @> $%d::jsonb)",
          col, n, col, m);
    } else {
      SQL(neg ? "(%s @> $%d::jsonb) IS NOT TRUE" : "%s @> $%d::jsonb", col, n);
    }
    return 0;
  }
  case SG_RFO_EQ:
  case SG_RFO_NEQ:
    if (v == NULL) return sg__rf_fail(c->err, where, "%s needs a value", sg__rf_op_names[op]);
    if ((rc = json_param(c, v, &n))) return rc;
    SQL(op == SG_RFO_EQ ? "%s = $%d::jsonb" : "(%s = $%d::jsonb) IS NOT TRUE", leaf, n);
    return 0;
  case SG_RFO_GT:
  case SG_RFO_LT:
  case SG_RFO_GTE:
  case SG_RFO_LTE:
  case SG_RFO_BTWN: {
    const json_t *lo = v, *hi = NULL;
    if (op == SG_RFO_BTWN) {
      if (!json_is_array(v) || json_array_size(v) != 2)
        return sg__rf_fail(c->err, where, "btwn takes a list of two values [low, high]");
      lo = json_array_get(v, 0);
      hi = json_array_get(v, 1);
    }
    int num = json_is_number(lo) && (!hi || json_is_number(hi));
    int str = json_is_string(lo) && (!hi || json_is_string(hi));
    if (!num && !str) return sg__rf_fail(c->err, where, "%s takes numbers or strings", sg__rf_op_names[op]);
    char expr[480];
    if (num)
      snprintf(expr, sizeof expr, "(CASE WHEN jsonb_typeof(%s) = 'number' THEN (%s #>> '{}')::numeric END)",
               leaf, leaf);
    else
      snprintf(expr, sizeof expr, "(CASE WHEN jsonb_typeof(%s) = 'string' THEN %s #>> '{}' END)", leaf, leaf);
    const char *T = num ? "numeric" : "text";
    if ((rc = json_param_text(c, lo, &n))) return rc;
    if (hi && (rc = json_param_text(c, hi, &m))) return rc;
    if (hi) SQL("%s BETWEEN $%d::%s AND $%d::%s", expr, n, T, m, T);
    else SQL("%s %s $%d::%s", expr, cmp_sql(op), n, T);
    return 0;
  }
  case SG_RFO_STARTSWITH:
  case SG_RFO_ENDSWITH:
  case SG_RFO_CONTAINS:
  case SG_RFO_LIKE:
  case SG_RFO_MATCHES: {
    char expr[200];
    snprintf(expr, sizeof expr, "(%s #>> '{}')", leaf);
    return string_op(c, op, expr, v, opt_case_sensitive(cond), where);
  }
  case SG_RFO_IN:
  case SG_RFO_NOT_IN:
    if (!json_is_array(v) || json_array_size(v) > MAX_LIST)
      return sg__rf_fail(c->err, where, "%s takes a list of at most %d values", sg__rf_op_names[op], MAX_LIST);
    if ((rc = json_param(c, v, &n))) return rc;
    SQL(op == SG_RFO_IN ? "EXISTS (SELECT 1 FROM jsonb_array_elements($%d::jsonb) AS e(v) WHERE e.v = %s)"
                    : "NOT EXISTS (SELECT 1 FROM jsonb_array_elements($%d::jsonb) AS e(v) WHERE e.v = %s)",
        n, leaf);
    return 0;
  default: break;
  }
  return sg__rf_fail(c->err, where, "operator '%s' does not apply to field '%s'", sg__rf_op_names[op], f->name);
}

static int content_condition(ctx_t *c, const sg__rf_field_t *f, sg__rf_op_t op, const json_t *v, const char *where) {
  int n, rc;
  if (op != SG_RFO_IS && op != SG_RFO_CONTAINS)
    return sg__rf_fail(c->err, where, "field 'content' takes the operators is and contains");
  if ((rc = column_param(c, f, v, where, &n))) return rc;
  /* The expressions of Agenta's ix_spans_fts_*_gin indexes, so they serve it. */
  SQL("(to_tsvector('simple', attributes) @@ websearch_to_tsquery('simple', $%d) OR "
      "to_tsvector('simple', events) @@ websearch_to_tsquery('simple', $%d))", n, n);
  return 0;
}

static int compile_filtering(ctx_t *c, const json_t *flt, const char *where, int depth);

static int compile_condition(ctx_t *c, const json_t *cond, const char *where) {
  char tmp[80];
  sg_buf_t w = SG_BUF_INIT;
  int rc;
  if (++c->nconds > MAX_CONDITIONS)
    return sg__rf_fail(c->err, where, "more than %d conditions", MAX_CONDITIONS);
  const json_t *jf = json_object_get(cond, "field"), *jk = json_object_get(cond, "key");
  const json_t *jo = json_object_get(cond, "operator"), *v = json_object_get(cond, "value");
  const char *key = NULL;
  if (!json_is_string(jf)) return sg__rf_fail(c->err, where, "field must be a string");
  const char *fname = json_string_value(jf);
  const sg__rf_field_t *f = sg__rf_find_field(fname, json_string_length(jf));
  if (!f) { /* "attributes.ag.type.span": a JSON field and its key in one */
    const char *dot = strchr(fname, '.');
    const sg__rf_field_t *jfld = dot ? sg__rf_find_field(fname, (size_t)(dot - fname)) : NULL;
    if (jfld && jfld->kind == SG_RFK_JSON && !jk) {
      f = jfld;
      key = dot + 1;
    }
  }
  if (!f) {
    sg_buf_printf(&w, "%s.field", where);
    sg_buf_t known = SG_BUF_INIT;
    known_fields(&known);
    rc = sg__rf_fail(c->err, w.data, "unknown field '%s' (known: %s)", sg__rf_shown(fname, tmp), known.data);
    sg_buf_free(&known);
    sg_buf_free(&w);
    return rc;
  }
  if (jk && !json_is_null(jk)) {
    if (!json_is_string(jk)) return sg__rf_fail(c->err, where, "key must be a string");
    if (f->kind != SG_RFK_JSON)
      return sg__rf_fail(c->err, where, "field '%s' takes no key (keys apply to attributes, references, "
                         "links, events and hashes)", f->name);
    key = json_string_value(jk);
  }
  sg__rf_op_t op = SG_RFO_IS;
  if (jo && !json_is_null(jo)) {
    int o = json_is_string(jo) ? sg__rf_find_op(json_string_value(jo)) : -1;
    if (o < 0) {
      sg_buf_printf(&w, "%s.operator", where);
      sg_buf_t known = SG_BUF_INIT;
      known_ops(&known);
      rc = sg__rf_fail(c->err, w.data, "unknown operator '%s' (known: %s)",
                       json_is_string(jo) ? sg__rf_shown(json_string_value(jo), tmp) : "(not a string)",
                       known.data);
      sg_buf_free(&known);
      sg_buf_free(&w);
      return rc;
    }
    op = (sg__rf_op_t)o;
  }
  if (v == NULL && op != SG_RFO_EXISTS && op != SG_RFO_NOT_EXISTS && op != SG_RFO_IS && op != SG_RFO_IS_NOT)
    return sg__rf_fail(c->err, where, "operator '%s' needs a value", sg__rf_op_names[op]);
  SQL("(");
  if (f->kind == SG_RFK_JSON) rc = json_condition(c, f, key, op, v, cond, where);
  else if (f->kind == SG_RFK_CONTENT) rc = content_condition(c, f, op, v, where);
  else rc = column_condition(c, f, op, v, cond, where);
  if (rc) return rc;
  SQL(")");
  return 0;
}

static int compile_filtering(ctx_t *c, const json_t *flt, const char *where, int depth) {
  if (depth > MAX_DEPTH) return sg__rf_fail(c->err, where, "filters nest deeper than %d levels", MAX_DEPTH);
  if (!json_is_object(flt)) return sg__rf_fail(c->err, where, "must be an object");
  const json_t *jo = json_object_get(flt, "operator"), *conds = json_object_get(flt, "conditions");
  const char *op = "and";
  if (jo && !json_is_null(jo)) {
    if (!json_is_string(jo)) return sg__rf_fail(c->err, where, "operator must be a string");
    op = json_string_value(jo);
  }
  int is_and = !strcmp(op, "and"), is_or = !strcmp(op, "or"), is_not = !strcmp(op, "not"),
      is_nand = !strcmp(op, "nand"), is_nor = !strcmp(op, "nor");
  if (!(is_and || is_or || is_not || is_nand || is_nor)) {
    char tmp[80];
    sg_buf_t w = SG_BUF_INIT;
    sg_buf_printf(&w, "%s.operator", where);
    int rc = sg__rf_fail(c->err, w.data, "unknown logical operator '%s' (known: and, or, not, nand, nor)",
                         sg__rf_shown(op, tmp));
    sg_buf_free(&w);
    return rc;
  }
  if (conds && !json_is_null(conds) && !json_is_array(conds))
    return sg__rf_fail(c->err, where, "conditions must be a list");
  size_t n = json_is_array(conds) ? json_array_size(conds) : 0;
  if (is_not && n != 1) return sg__rf_fail(c->err, where, "operator 'not' takes exactly one condition");
  if (n == 0) { /* no conditions: no restriction (Agenta applies none either) */
    SQL("TRUE");
    return 0;
  }
  const char *join = (is_or || is_nor) ? " OR " : " AND ";
  SQL((is_not || is_nand || is_nor) ? "NOT (" : "(");
  for (size_t i = 0; i < n; i++) {
    const json_t *e = json_array_get(conds, i);
    sg_buf_t w = SG_BUF_INIT;
    if (sg_buf_printf(&w, "%s.conditions[%zu]", where, i) != 0) return SG_ENOMEM;
    if (i) SQL("%s", join);
    int rc;
    if (json_is_object(e) && !json_object_get(e, "field") && json_object_get(e, "conditions"))
      rc = compile_filtering(c, e, w.data, depth + 1);
    else if (json_is_object(e))
      rc = compile_condition(c, e, w.data);
    else
      rc = sg__rf_fail(c->err, w.data, "must be a condition or a filtering object");
    sg_buf_free(&w);
    if (rc) return rc;
  }
  SQL(")");
  return 0;
}

/* Appends the boolean SQL expression of the request's filtering object to
 * q->sql (parameters added to q). 0, SG_EINVAL (err) or SG_ENOMEM. */
static int filtering_sql(const json_t *filtering, sg_rf_query_t *q, sg_buf_t *err) {
  ctx_t c = {q, err, 0, SG_BUF_INIT};
  int rc = compile_filtering(&c, filtering, "filtering", 0);
  sg_buf_free(&c.tmp);
  return rc;
}

/* ---- statements -------------------------------------------------------------- */

/* The columns of read_span.h (SG_RF_TRACE_ID ... SG_RF_DELETED_BY), in that
 * order: the renderer reads them by those indexes. */
#define SPAN_COLUMNS                                                                           \
  "trace_id::text, span_id::text, parent_id::text, trace_type::text, span_type::text, "        \
  "span_kind::text, span_name, (extract(epoch from start_time) * 1000000)::int8, "             \
  "(extract(epoch from end_time) * 1000000)::int8, status_code::text, status_message, "         \
  "attributes::text, \"references\"::text, links::text, hashes::text, events::text, "           \
  "session_id, user_id, agent_id, (extract(epoch from created_at) * 1000000)::int8, "           \
  "(extract(epoch from updated_at) * 1000000)::int8, (extract(epoch from deleted_at) * 1000000)::int8, " \
  "created_by_id::text, updated_by_id::text, deleted_by_id::text"

static const char trace_sql[] =
    "SELECT " SPAN_COLUMNS " FROM spans WHERE project_id = $1::uuid AND trace_id = $2::uuid "
    "ORDER BY spans.start_time, spans.span_id";

const char *sg_rf_trace_sql(void) { return trace_sql; }

static int windowing_time(const json_t *w, const char *name, int64_t *us, int *has, sg_buf_t *err) {
  const json_t *v = json_object_get(w, name);
  *has = 0;
  if (v == NULL || json_is_null(v)) return 0;
  char where[32];
  snprintf(where, sizeof where, "windowing.%s", name);
  if (sg__rf_time_value(v, us) != 0)
    return sg__rf_fail(err, where, "must be an ISO-8601 time or an integer epoch (s, ms, µs or ns)");
  *has = 1;
  return 0;
}

int sg_rf_compile_query(const json_t *body, const uint8_t project_id[16], sg_rf_query_t *q,
                        sg_buf_t *err) {
  char pid[37], iso[32], num[32];
  int rc, n;
  if (body && !json_is_object(body)) return sg__rf_fail(err, "body", "must be a JSON object");
  const json_t *w = body ? json_object_get(body, "windowing") : NULL;
  const json_t *flt = body ? json_object_get(body, "filtering") : NULL;
  if (w && !json_is_null(w) && !json_is_object(w)) return sg__rf_fail(err, "windowing", "must be an object");
  if (json_is_null(w)) w = NULL;
  int64_t oldest = 0, newest = 0, cur_us = 0;
  int has_oldest = 0, has_newest = 0, has_cursor = 0, cur_desc = 1;
  uint8_t cur_trace[16], cur_span[16];
  q->limit = SG_RF_LIMIT_DEFAULT;
  q->descending = 1;
  if (w) {
    const json_t *lim = json_object_get(w, "limit"), *nx = json_object_get(w, "next"),
                 *ord = json_object_get(w, "order");
    if (lim && !json_is_null(lim)) {
      if (!json_is_integer(lim) || json_integer_value(lim) < 1)
        return sg__rf_fail(err, "windowing.limit", "must be a positive integer (at most %d)", SG_RF_LIMIT_MAX);
      json_int_t l = json_integer_value(lim);
      q->limit = l > SG_RF_LIMIT_MAX ? SG_RF_LIMIT_MAX : (int)l;
    }
    if (ord && !json_is_null(ord)) {
      const char *o = json_is_string(ord) ? json_string_value(ord) : "";
      if (!strcmp(o, "ascending")) q->descending = 0;
      else if (strcmp(o, "descending"))
        return sg__rf_fail(err, "windowing.order", "must be \"ascending\" or \"descending\"");
    }
    if ((rc = windowing_time(w, "oldest", &oldest, &has_oldest, err)) ||
        (rc = windowing_time(w, "newest", &newest, &has_newest, err)))
      return rc;
    if (nx && !json_is_null(nx)) {
      if (!json_is_string(nx) ||
          sg_rf_cursor_parse(json_string_value(nx), &cur_desc, &cur_us, cur_trace, cur_span) != 0)
        return sg__rf_fail(err, "windowing.next", "is not a cursor this API returned");
      if (cur_desc != q->descending)
        return sg__rf_fail(err, "windowing.next", "was made for the other order");
      has_cursor = 1;
    }
  }
  sg_uuid_format(project_id, pid);
  if ((n = sg_rf_param(q, pid, strlen(pid))) < 0) return n;
  if (sg_buf_puts(&q->sql, "SELECT " SPAN_COLUMNS " FROM spans WHERE project_id = $1::uuid") != 0)
    return SG_ENOMEM;
  if (has_oldest) { /* Agenta's windowing: oldest <= start_time < newest */
    sg_time_format(oldest, iso);
    if ((n = sg_rf_param(q, iso, strlen(iso))) < 0) return n;
    if (sg_buf_printf(&q->sql, " AND start_time >= $%d::timestamptz", n)) return SG_ENOMEM;
  }
  if (has_newest) {
    sg_time_format(newest, iso);
    if ((n = sg_rf_param(q, iso, strlen(iso))) < 0) return n;
    if (sg_buf_printf(&q->sql, " AND start_time < $%d::timestamptz", n)) return SG_ENOMEM;
  }
  if (has_cursor) {
    /* Keyset: strictly after the last row of the previous page in the
     * page order; (start_time, trace_id, span_id) is unique per project.
     * The first comparison alone lets the (project_id, start_time) index
     * bound the scan. */
    char t[37], s[37];
    sg_time_format(cur_us, iso);
    sg_uuid_format(cur_trace, t);
    sg_uuid_format(cur_span, s);
    int a = sg_rf_param(q, iso, strlen(iso)), b = sg_rf_param(q, t, 36), d = sg_rf_param(q, s, 36);
    if (a < 0 || b < 0 || d < 0) return SG_ENOMEM;
    const char *cmp = q->descending ? "<" : ">";
    if (sg_buf_printf(&q->sql,
                      " AND start_time %s= $%d::timestamptz"
                      " AND (start_time, trace_id, span_id) %s ($%d::timestamptz, $%d::uuid, $%d::uuid)",
                      cmp, a, cmp, a, b, d))
      return SG_ENOMEM;
  }
  if (flt && !json_is_null(flt)) {
    if (sg_buf_puts(&q->sql, " AND ")) return SG_ENOMEM;
    if ((rc = filtering_sql(flt, q, err))) return rc;
  }
  snprintf(num, sizeof num, "%d", q->limit + 1);
  if ((n = sg_rf_param(q, num, strlen(num))) < 0) return n;
  const char *dir = q->descending ? " DESC" : "";
  if (sg_buf_printf(&q->sql, " ORDER BY spans.start_time%s, spans.trace_id%s, spans.span_id%s LIMIT $%d::int", dir, dir,
                    dir, n))
    return SG_ENOMEM;
  return 0;
}
