/* read_filter.c - Agenta's filtering/windowing shape compiled to parameterized
 * PostgreSQL, the span row renderer, the keyset cursor, and the analytics
 * statements. See read_filter.h for the rules; docs/read.md for the API.
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
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
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

typedef enum { K_UUID, K_ENUM, K_STRING, K_TIME, K_JSON, K_CONTENT } kind_t;

typedef struct {
  const char *name;
  const char *col;    /* SQL, written by us */
  kind_t kind;
  const char *pgtype; /* cast of a parameter for this column */
  int (*parse)(const char *);
  const char *prefix; /* enum short form: "server" -> SPAN_KIND_SERVER */
  int list;           /* JSON list column: `is` with an object means "has an element like" */
} field_t;

static const field_t fields[] = {
    {"trace_id", "trace_id", K_UUID, "uuid", NULL, NULL, 0},
    {"span_id", "span_id", K_UUID, "uuid", NULL, NULL, 0},
    {"parent_id", "parent_id", K_UUID, "uuid", NULL, NULL, 0},
    {"created_by_id", "created_by_id", K_UUID, "uuid", NULL, NULL, 0},
    {"updated_by_id", "updated_by_id", K_UUID, "uuid", NULL, NULL, 0},
    {"deleted_by_id", "deleted_by_id", K_UUID, "uuid", NULL, NULL, 0},
    {"trace_type", "trace_type", K_ENUM, "tracetype", sg_trace_type_parse, NULL, 0},
    {"span_type", "span_type", K_ENUM, "spantype", sg_span_type_parse, NULL, 0},
    {"span_kind", "span_kind", K_ENUM, "otelspankind", sg_span_kind_parse, "SPAN_KIND_", 0},
    {"status_code", "status_code", K_ENUM, "otelstatuscode", sg_status_code_parse, "STATUS_CODE_", 0},
    {"span_name", "span_name", K_STRING, "text", NULL, NULL, 0},
    {"status_message", "status_message", K_STRING, "text", NULL, NULL, 0},
    {"session_id", "session_id", K_STRING, "text", NULL, NULL, 0},
    {"user_id", "user_id", K_STRING, "text", NULL, NULL, 0},
    {"agent_id", "agent_id", K_STRING, "text", NULL, NULL, 0},
    {"start_time", "start_time", K_TIME, "timestamptz", NULL, NULL, 0},
    {"end_time", "end_time", K_TIME, "timestamptz", NULL, NULL, 0},
    {"created_at", "created_at", K_TIME, "timestamptz", NULL, NULL, 0},
    {"updated_at", "updated_at", K_TIME, "timestamptz", NULL, NULL, 0},
    {"deleted_at", "deleted_at", K_TIME, "timestamptz", NULL, NULL, 0},
    {"attributes", "attributes", K_JSON, "jsonb", NULL, NULL, 0},
    {"references", "\"references\"", K_JSON, "jsonb", NULL, NULL, 1},
    {"links", "links", K_JSON, "jsonb", NULL, NULL, 1},
    {"events", "events", K_JSON, "jsonb", NULL, NULL, 1},
    {"hashes", "hashes", K_JSON, "jsonb", NULL, NULL, 1},
    {"content", NULL, K_CONTENT, "text", NULL, NULL, 0},
};
#define NFIELDS (sizeof fields / sizeof fields[0])

#define OP_MAP(XX)                                                                              \
  XX(IS, "is") XX(IS_NOT, "is_not") XX(EQ, "eq") XX(NEQ, "neq") XX(GT, "gt") XX(LT, "lt")      \
  XX(GTE, "gte") XX(LTE, "lte") XX(BTWN, "btwn") XX(STARTSWITH, "startswith")                  \
  XX(ENDSWITH, "endswith") XX(CONTAINS, "contains") XX(MATCHES, "matches") XX(LIKE, "like")    \
  XX(IN, "in") XX(NOT_IN, "not_in") XX(EXISTS, "exists") XX(NOT_EXISTS, "not_exists")

typedef enum {
#define XX(e, s) OP_##e,
  OP_MAP(XX)
#undef XX
  OP_COUNT
} op_t;

static const char *const op_names[] = {
#define XX(e, s) s,
    OP_MAP(XX)
#undef XX
};

static const field_t *find_field(const char *name, size_t n) {
  for (size_t i = 0; i < NFIELDS; i++)
    if (strlen(fields[i].name) == n && !memcmp(fields[i].name, name, n)) return &fields[i];
  return NULL;
}

static int find_op(const char *s) {
  for (int i = 0; i < OP_COUNT; i++)
    if (!strcmp(op_names[i], s)) return i;
  return -1;
}

/* ---- messages ---------------------------------------------------------------- */

static int fail(sg_buf_t *err, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(sg_buf_t *err, const char *where, const char *fmt, ...) {
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
  for (int i = 0; i < OP_COUNT; i++) sg_buf_printf(b, "%s%s", i ? ", " : "", op_names[i]);
}

/* A client string quoted for a message: at most 64 bytes, JSON-ish escaped. */
static const char *shown(const char *s, char out[80]) {
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

static int time_value(const json_t *v, int64_t *us) {
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
static int column_value(const field_t *f, const json_t *v, const char *where, sg_buf_t *out,
                        sg_buf_t *err) {
  char tmp[80];
  switch (f->kind) {
  case K_UUID: {
    uint8_t id[16];
    char u[37];
    if (!json_is_string(v) || sg_id_parse(json_string_value(v), json_string_length(v), id) != 0)
      return fail(err, where, "%s takes an id (32 hex digits, 16 hex digits, 0x-hex or a dashed UUID)",
                  f->name);
    sg_uuid_format(id, u);
    return sg_buf_puts(out, u);
  }
  case K_ENUM: {
    char up[64];
    size_t n = 0;
    if (!json_is_string(v)) return fail(err, where, "%s takes a string", f->name);
    const char *s = json_string_value(v);
    for (; s[n] && n + 1 < sizeof up; n++) up[n] = (char)toupper((unsigned char)s[n]);
    up[n] = '\0';
    int e = s[n] ? -1 : f->parse(up);
    if (e < 0 && f->prefix && n + strlen(f->prefix) < sizeof up) {
      char full[96];
      snprintf(full, sizeof full, "%s%s", f->prefix, up);
      e = f->parse(full);
      if (e >= 0) return sg_buf_puts(out, full);
    }
    if (e < 0) return fail(err, where, "unknown %s '%s'", f->name, shown(s, tmp));
    return sg_buf_puts(out, up);
  }
  case K_STRING:
  case K_CONTENT:
    if (json_is_string(v)) return sg_buf_append(out, json_string_value(v), json_string_length(v));
    if (json_is_number(v)) {
      char *t = json_dumps(v, JSON_ENCODE_ANY);
      if (!t) return SG_ENOMEM;
      int rc = sg_buf_puts(out, t);
      free(t);
      return rc;
    }
    return fail(err, where, "%s takes a string", f->name);
  case K_TIME: {
    int64_t us;
    char iso[32];
    if (time_value(v, &us) != 0)
      return fail(err, where, "%s takes an ISO-8601 time or an integer epoch (s, ms, µs or ns)",
                  f->name);
    sg_time_format(us, iso);
    return sg_buf_puts(out, iso);
  }
  case K_JSON: break;
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
static int column_param(ctx_t *c, const field_t *f, const json_t *v, const char *where, int *n) {
  sg_buf_reset(&c->tmp);
  int rc = column_value(f, v, where, &c->tmp, c->err);
  return rc ? rc : add_param(c, n);
}

static int opt_case_sensitive(const json_t *cond) {
  const json_t *o = json_object_get(cond, "options");
  return json_is_object(o) && json_is_true(json_object_get(o, "case_sensitive"));
}

/* The LIKE pattern for a string operator, in c->tmp. */
static int like_pattern(ctx_t *c, op_t op, const char *s) {
  sg_buf_reset(&c->tmp);
  int rc = 0;
  if (op == OP_LIKE || op == OP_MATCHES) return sg_buf_puts(&c->tmp, s);
  if (op == OP_ENDSWITH || op == OP_CONTAINS) rc = sg_buf_putc(&c->tmp, '%');
  rc = rc ? rc : put_like_escaped(&c->tmp, s);
  if (op == OP_STARTSWITH || op == OP_CONTAINS) rc = rc ? rc : sg_buf_putc(&c->tmp, '%');
  return rc;
}

/* Writes `<expr> <ILIKE|LIKE|~*|~> $n` for a string operator over expr. */
static int string_op(ctx_t *c, op_t op, const char *expr, const json_t *v, int cs, const char *where) {
  if (!json_is_string(v)) return fail(c->err, where, "%s takes a string value", op_names[op]);
  int rc = like_pattern(c, op, json_string_value(v)), n;
  if (rc || (rc = add_param(c, &n))) return rc;
  const char *sqlop = op == OP_MATCHES ? (cs ? "~" : "~*") : (cs ? "LIKE" : "ILIKE");
  SQL("%s %s $%d", expr, sqlop, n);
  return 0;
}

static const char *cmp_sql(op_t op) {
  switch (op) {
  case OP_GT: return ">";
  case OP_LT: return "<";
  case OP_GTE: return ">=";
  default: return "<=";
  }
}

static int column_condition(ctx_t *c, const field_t *f, op_t op, const json_t *v,
                            const json_t *cond, const char *where) {
  const char *col = f->col, *T = f->pgtype;
  int n, m, rc;
  switch (op) {
  case OP_EXISTS: SQL("%s IS NOT NULL", col); return 0;
  case OP_NOT_EXISTS: SQL("%s IS NULL", col); return 0;
  case OP_IS:
  case OP_EQ:
  case OP_IS_NOT:
  case OP_NEQ: {
    int neg = op == OP_IS_NOT || op == OP_NEQ;
    if (json_is_null(v) || v == NULL) {
      SQL("%s IS %sNULL", col, neg ? "NOT " : "");
      return 0;
    }
    if ((rc = column_param(c, f, v, where, &n))) return rc;
    SQL("%s %s $%d::%s", col, neg ? "IS DISTINCT FROM" : "=", n, T);
    return 0;
  }
  case OP_GT:
  case OP_LT:
  case OP_GTE:
  case OP_LTE:
  case OP_BTWN:
    if (f->kind != K_TIME && f->kind != K_STRING)
      return fail(c->err, where, "operator '%s' does not apply to field '%s'", op_names[op], f->name);
    if (op != OP_BTWN) {
      if ((rc = column_param(c, f, v, where, &n))) return rc;
      SQL("%s %s $%d::%s", col, cmp_sql(op), n, T);
      return 0;
    }
    if (!json_is_array(v) || json_array_size(v) != 2)
      return fail(c->err, where, "btwn takes a list of two values [low, high]");
    if ((rc = column_param(c, f, json_array_get(v, 0), where, &n)) ||
        (rc = column_param(c, f, json_array_get(v, 1), where, &m)))
      return rc;
    SQL("%s BETWEEN $%d::%s AND $%d::%s", col, n, T, m, T);
    return 0;
  case OP_STARTSWITH:
  case OP_ENDSWITH:
  case OP_CONTAINS:
  case OP_LIKE:
  case OP_MATCHES:
    if (f->kind != K_STRING)
      return fail(c->err, where, "operator '%s' does not apply to field '%s'", op_names[op], f->name);
    return string_op(c, op, col, v, opt_case_sensitive(cond), where);
  case OP_IN:
  case OP_NOT_IN: {
    if (!json_is_array(v) || json_array_size(v) > MAX_LIST)
      return fail(c->err, where, "%s takes a list of at most %d values", op_names[op], MAX_LIST);
    sg_buf_t arr = SG_BUF_INIT;
    rc = sg_buf_putc(&arr, '{');
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
      sg_buf_reset(&c->tmp);
      if (rc == 0) rc = column_value(f, e, where, &c->tmp, c->err);
      if (rc == 0 && i) rc = sg_buf_putc(&arr, ',');
      if (rc == 0) rc = put_array_elem(&arr, c->tmp.data ? c->tmp.data : "");
    }
    if (rc == 0) rc = sg_buf_putc(&arr, '}');
    n = rc ? rc : param_buf(c->q, &arr);
    sg_buf_free(&arr);
    if (n < 0) return n;
    if (op == OP_IN) SQL("%s = ANY($%d::%s[])", col, n, T);
    else SQL("(%s = ANY($%d::%s[])) IS NOT TRUE", col, n, T);
    return 0;
  }
  default: break;
  }
  return fail(c->err, where, "operator '%s' does not apply to field '%s'", op_names[op], f->name);
}

/* Splits key on '.' into path (text[] literal) and, when every segment is
 * not a number, the nested JSON object {"a":{"b":v}} for containment. */
static int key_path(ctx_t *c, const char *key, const char *where, int *path_n, int *nsegs,
                    int *numeric_seg) {
  size_t len = strlen(key);
  char tmp[80];
  if (len == 0 || len > MAX_KEY) return fail(c->err, where, "key must be 1 to %d bytes", MAX_KEY);
  sg_buf_t arr = SG_BUF_INIT;
  int rc = sg_buf_putc(&arr, '{'), segs = 0;
  *numeric_seg = 0;
  const char *p = key;
  while (rc == 0) {
    const char *dot = strchr(p, '.');
    size_t n = dot ? (size_t)(dot - p) : strlen(p);
    if (n == 0) {
      sg_buf_free(&arr);
      return fail(c->err, where, "key '%s' has an empty path element", shown(key, tmp));
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
    return fail(c->err, where, "key has more than %d path elements", MAX_SEGMENTS);
  }
  if (rc == 0) rc = sg_buf_putc(&arr, '}');
  int n = rc ? rc : param_buf(c->q, &arr);
  sg_buf_free(&arr);
  if (n < 0) return n;
  *path_n = n;
  *nsegs = segs;
  return 0;
}

/* {"a":{"b":v}} for key "a.b" (v is borrowed), or {"a.b": v} when flat. */
static json_t *nest_value(const char *key, const json_t *v, int flat) {
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
  free(t);
  return *n < 0 ? *n : 0;
}

static int json_condition(ctx_t *c, const field_t *f, const char *key, op_t op, const json_t *v,
                          const json_t *cond, const char *where) {
  const char *col = f->col;
  int n, m, rc;
  if (key == NULL) {
    switch (op) {
    case OP_EXISTS: SQL("%s IS NOT NULL", col); return 0;
    case OP_NOT_EXISTS: SQL("%s IS NULL", col); return 0;
    case OP_IS:
    case OP_EQ:
    case OP_IS_NOT:
    case OP_NEQ: {
      if (v == NULL || json_is_null(v)) {
        SQL("%s IS %sNULL", col, op == OP_IS || op == OP_EQ ? "" : "NOT ");
        return 0;
      }
      json_t *w = NULL;
      if (f->list && json_is_object(v)) w = json_pack("[O]", v);
      rc = json_param(c, w ? w : v, &n);
      json_decref(w);
      if (rc) return rc;
      if (op == OP_IS || op == OP_EQ) SQL("%s @> $%d::jsonb", col, n);
      else SQL("(%s @> $%d::jsonb) IS NOT TRUE", col, n);
      return 0;
    }
    default:
      return fail(c->err, where, "operator '%s' on field '%s' needs a key", op_names[op], f->name);
    }
  }
  int path, nsegs, numeric;
  if ((rc = key_path(c, key, where, &path, &nsegs, &numeric))) return rc;
  int flat = 0; /* $k: the key as one literal (flat) name */
  if (nsegs > 1) {
    if ((flat = sg_rf_param(c->q, key, strlen(key))) < 0) return flat;
  }
  char leaf[96];
  if (flat) snprintf(leaf, sizeof leaf, "COALESCE(%s #> $%d::text[], %s -> $%d)", col, path, col, flat);
  else snprintf(leaf, sizeof leaf, "(%s #> $%d::text[])", col, path);
  switch (op) {
  case OP_EXISTS: SQL("%s IS NOT NULL", leaf); return 0;
  case OP_NOT_EXISTS: SQL("%s IS NULL", leaf); return 0;
  case OP_IS:
  case OP_IS_NOT: {
    int neg = op == OP_IS_NOT;
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
    json_t *nested = nest_value(key, v, 0);
    if (!nested) return SG_ENOMEM;
    rc = json_param(c, nested, &n);
    json_decref(nested);
    if (rc) return rc;
    if (flat) {
      json_t *fl = nest_value(key, v, 1);
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
  case OP_EQ:
  case OP_NEQ:
    if (v == NULL) return fail(c->err, where, "%s needs a value", op_names[op]);
    if ((rc = json_param(c, v, &n))) return rc;
    SQL(op == OP_EQ ? "%s = $%d::jsonb" : "(%s = $%d::jsonb) IS NOT TRUE", leaf, n);
    return 0;
  case OP_GT:
  case OP_LT:
  case OP_GTE:
  case OP_LTE:
  case OP_BTWN: {
    const json_t *lo = v, *hi = NULL;
    if (op == OP_BTWN) {
      if (!json_is_array(v) || json_array_size(v) != 2)
        return fail(c->err, where, "btwn takes a list of two values [low, high]");
      lo = json_array_get(v, 0);
      hi = json_array_get(v, 1);
    }
    int num = json_is_number(lo) && (!hi || json_is_number(hi));
    int str = json_is_string(lo) && (!hi || json_is_string(hi));
    if (!num && !str) return fail(c->err, where, "%s takes numbers or strings", op_names[op]);
    char expr[200];
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
  case OP_STARTSWITH:
  case OP_ENDSWITH:
  case OP_CONTAINS:
  case OP_LIKE:
  case OP_MATCHES: {
    char expr[120];
    snprintf(expr, sizeof expr, "(%s #>> '{}')", leaf);
    return string_op(c, op, expr, v, opt_case_sensitive(cond), where);
  }
  case OP_IN:
  case OP_NOT_IN:
    if (!json_is_array(v) || json_array_size(v) > MAX_LIST)
      return fail(c->err, where, "%s takes a list of at most %d values", op_names[op], MAX_LIST);
    if ((rc = json_param(c, v, &n))) return rc;
    SQL(op == OP_IN ? "EXISTS (SELECT 1 FROM jsonb_array_elements($%d::jsonb) AS e(v) WHERE e.v = %s)"
                    : "NOT EXISTS (SELECT 1 FROM jsonb_array_elements($%d::jsonb) AS e(v) WHERE e.v = %s)",
        n, leaf);
    return 0;
  default: break;
  }
  return fail(c->err, where, "operator '%s' does not apply to field '%s'", op_names[op], f->name);
}
