/* ch_rows.c - spans rows for ClickHouse: the INSERT statement and the
 * TabSeparated row encoders (from an sg_span_t, and from PostgreSQL's text
 * output for the migration), for the layout of the table that exists.
 * The columns come from the one description (ch_desc.h). */
#include "ch_rows.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ch.h"
#include "ch_desc.h"
#include "err.h"
#include "json_nest.h"

/* `name` with backslash and backquote escaped (the same rules as ch.c's
 * sg_ch_quote_ident; repeated here so the encoders stand alone). */
void sg_ch_layout_of_version(const sg_ch_version_t *ver, sg_ch_layout_t *out) {
  out->flags = (ver->caps & SG_CH_DATETIME64) ? SG_CH_LAYOUT_DT64 : 0;
}

/* ---- INSERT ------------------------------------------------------------ */

static const table_t *spans_table(void) { return SG__CH_SPANS; }

size_t sg_ch_span_columns(const sg_ch_layout_t *lay) {
  const table_t *t = spans_table();
  size_t n = 0;
  for (size_t i = 0; i < t->ncols; i++) {
    n++;
    if ((t->cols[i].type == T_TIME || t->cols[i].type == T_TIME_NULL) &&
        !(lay->flags & SG_CH_LAYOUT_DT64))
      n++;
  }
  return n;
}

int sg_ch_insert_sql(const sg_ch_layout_t *lay, const char *database, sg_buf_t *out) {
  const char *db = database ? database : SG__CH_DEFAULT_DATABASE;
  if (lay == NULL || *db == '\0') return SG_EINVAL;
  const table_t *t = spans_table();
  size_t start = out->len;
  int rc = sg_buf_puts(out, "INSERT INTO ");
  rc = rc ? rc : sg_ch_quote_ident(out, db);
  rc = rc ? rc : sg_buf_printf(out, ".%s (", t->name);
  for (size_t i = 0; rc == 0 && i < t->ncols; i++) {
    const col_t *c = &t->cols[i];
    rc = sg_buf_printf(out, "%s%s", i ? ", " : "", c->name);
    if (rc == 0 && (c->type == T_TIME || c->type == T_TIME_NULL) && !(lay->flags & SG_CH_LAYOUT_DT64))
      rc = sg_buf_printf(out, ", %s_us", c->name);
  }
  rc = rc ? rc : sg_buf_puts(out, ") FORMAT TabSeparated");
  if (rc != 0 && out->data) {
    out->len = start;
    out->data[start] = '\0';
  }
  return rc;
}

/* ---- the row encoder -------------------------------------------------------
 *
 * Format decision: TabSeparated, not JSONEachRow. Measured on 18.16.1 on a
 * 2-core VM: 100 000 spans of ~800 B (the JSON columns hold a prompt, usage
 * numbers, an event), one INSERT over loopback HTTP, best of 3; the
 * JSONEachRow file is the same rows as ClickHouse itself writes them
 * (SELECT * ... FORMAT JSONEachRow):
 *
 *                   body       server     gzip -1 body   server
 *   TabSeparated    79.6 MB    0.64 s     7.5 MB         0.43 s
 *   JSONEachRow    132.4 MB    0.78 s     6.4 MB         0.67 s
 *
 * TSV is 40% smaller and 1.2-1.6x faster for the server to take; NULL is \N
 * on every version, escaping is four characters, while JSONEachRow quotes
 * the JSON columns a second time and names every column in every row. TSV
 * parses by position, so the INSERT names its columns (sg_ch_insert_sql) and
 * both come from the one description (ch_desc.h). Encoding costs ~8.5 us per such
 * row (~90 MB/s), more than half of it inside jansson's json_dumpb. */

/* The escape letter of each byte TabSeparated must escape, 0 for the rest. */
static const char tsv_esc[256] = {['\\'] = '\\', ['\t'] = 't', ['\n'] = 'n', ['\r'] = 'r', ['\0'] = '0'};

int sg_ch_tsv_escape(sg_buf_t *out, const char *s, size_t n) {
  if (sg_buf_reserve(out, n) != 0) return SG_ENOMEM;
  size_t start = 0;
  for (size_t i = 0; i < n; i++) {
    char e = tsv_esc[(unsigned char)s[i]];
    if (e == 0) continue;
    char esc[2] = {'\\', e};
    if (sg_buf_append(out, s + start, i - start) != 0 || sg_buf_append(out, esc, 2) != 0)
      return SG_ENOMEM;
    start = i + 1;
  }
  return sg_buf_append(out, s + start, n - start);
}

static int put_uuid(sg_buf_t *b, const uint8_t id[16]) {
  char u[37];
  sg_uuid_format(id, u);
  return sg_buf_append(b, u, 36);
}

static int put_null(sg_buf_t *b) { return sg_buf_append(b, "\\N", 2); }

/* Days since 1970-01-01 to y-m-d (Howard Hinnant's civil_from_days). */
static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d) {
  z += 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  unsigned doe = (unsigned)(z - era * 146097);
  unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t yy = (int64_t)yoe + era * 400;
  unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = (int)(yy + (*m <= 2));
}

static char *put2(char *p, unsigned v) {
  p[0] = (char)('0' + v / 10);
  p[1] = (char)('0' + v % 10);
  return p + 2;
}

/* "YYYY-MM-DD hh:mm:ss" for 0 <= s <= year 9999 (callers check the range);
 * written by hand: snprintf was a tenth of the encoder's time. */
static char *fmt_datetime(char *p, int64_t s) {
  int64_t days = s / 86400, sod = s % 86400;
  int y;
  unsigned mo, d;
  civil_from_days(days, &y, &mo, &d);
  p = put2(p, (unsigned)y / 100);
  p = put2(p, (unsigned)y % 100);
  *p++ = '-';
  p = put2(p, mo);
  *p++ = '-';
  p = put2(p, d);
  *p++ = ' ';
  p = put2(p, (unsigned)(sod / 3600));
  *p++ = ':';
  p = put2(p, (unsigned)(sod / 60 % 60));
  *p++ = ':';
  return put2(p, (unsigned)(sod % 60));
}

static int put_datetime(sg_buf_t *b, int64_t s) {
  char tmp[24];
  return sg_buf_append(b, tmp, (size_t)(fmt_datetime(tmp, s) - tmp));
}

/* A µs time: "YYYY-MM-DD hh:mm:ss.ffffff" (DateTime64) or
 * "YYYY-MM-DD hh:mm:ss<TAB>f" (DateTime + _us, plain integer); caller
 * checked the range. */
static int put_time(sg_buf_t *b, int64_t us, unsigned lf) {
  char tmp[40], *p = fmt_datetime(tmp, us / 1000000);
  unsigned f = (unsigned)(us % 1000000);
  if (lf & SG_CH_LAYOUT_DT64) {
    *p++ = '.';
    for (int i = 5; i >= 0; i--, f /= 10) p[i] = (char)('0' + f % 10);
    p += 6;
  } else {
    char digits[8];
    int k = 0;
    *p++ = '\t';
    do digits[k++] = (char)('0' + f % 10);
    while ((f /= 10) != 0);
    while (k) *p++ = digits[--k];
  }
  return sg_buf_append(b, tmp, (size_t)(p - tmp));
}

static int put_time_null(sg_buf_t *b, unsigned lf) {
  return (lf & SG_CH_LAYOUT_DT64) ? put_null(b) : sg_buf_append(b, "\\N\t\\N", 5);
}

static int time_ok(int64_t us) { return us >= SG_CH_TIME_MIN_US && us <= SG_CH_TIME_MAX_US; }

/* JSON text as a TabSeparated field. jansson and json_nest.h escape every
 * control character, so the only byte of compact JSON text TabSeparated must
 * escape is the backslash: double each one written since start, from the end
 * backwards. */
static int tsv_double_backslashes(sg_buf_t *b, size_t start) {
  size_t n = b->len - start, k = 0;
  for (const char *q = b->data + start; (q = memchr(q, '\\', (size_t)(b->data + start + n - q))); q++) k++;
  if (k == 0) return 0;
  if (sg_buf_reserve(b, k) != 0) return SG_ENOMEM;
  char *p = b->data + start;
  b->len += k;
  b->data[b->len] = '\0';
  /* from the last backslash back: move the text after it k places right,
   * the backslash doubled in front of it */
  for (size_t end = n; k > 0; k--) {
    char *q = memrchr(p, '\\', end);
    size_t at = (size_t)(q - p), seg = end - at;
    memmove(p + at + k, q, seg);
    p[at + k - 1] = '\\';
    end = at;
  }
  return 0;
}

/* Compact JSON text already rendered (sg_span_attributes_text). */
static int put_json_text_raw(sg_buf_t *b, const char *text, size_t len) {
  if (sg_buf_reserve(b, len) != 0) return SG_ENOMEM;
  for (const char *end = text + len, *q; text < end; text = q + 1) {
    if ((q = memchr(text, '\\', (size_t)(end - text))) == NULL) return sg_buf_append(b, text, (size_t)(end - text));
    if (sg_buf_append(b, text, (size_t)(q - text) + 1) != 0 || sg_buf_putc(b, '\\') != 0) return SG_ENOMEM;
  }
  return 0;
}

/* A JSON value dumped straight into the row's buffer and escaped in place. */
static int put_json(sg_buf_t *b, const json_t *j) {
  if (j == NULL) return put_null(b);
  size_t start = b->len;
  int rc = sg_json_dump(j, 0, b);
  if (rc != 0) {
    b->len = start;
    return rc;
  }
  return tsv_double_backslashes(b, start);
}

static int put_str_null(sg_buf_t *b, const char *s) {
  return s ? sg_ch_tsv_escape(b, s, strlen(s)) : put_null(b);
}

static int put_enum(sg_buf_t *b, const enum_def_t *e, int v, int nullable) {
  if (nullable && v == SG_NULL_ENUM) return put_null(b);
  if (v < 0 || v >= e->n) return SG_EINVAL;
  return sg_buf_puts(b, e->labels[v]);
}

static int put_u64(sg_buf_t *b, uint64_t v) {
  char tmp[24];
  int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v);
  return sg_buf_append(b, tmp, (size_t)n);
}

static int encode_col(sg_buf_t *b, const col_t *c, const uint8_t project_id[16], const sg_span_t *sp,
                      int64_t expires_at_us, unsigned lf) {
  switch (c->field) {
  case F_NONE:
    switch (c->type) {
    case T_TIME:
    case T_TIME_NULL: return put_time_null(b, lf);
    case T_FLAG: return sg_buf_putc(b, '0');
    default: return put_null(b);
    }
  case F_PROJECT_ID: return put_uuid(b, project_id);
  case F_TRACE_ID: return put_uuid(b, sp->trace_id);
  case F_SPAN_ID: return put_uuid(b, sp->span_id);
  case F_PARENT_ID: return sp->has_parent ? put_uuid(b, sp->parent_id) : put_null(b);
  case F_CREATED_BY: return sp->has_created_by ? put_uuid(b, sp->created_by_id) : put_null(b);
  case F_UPDATED_BY: return sp->has_updated_by ? put_uuid(b, sp->updated_by_id) : put_null(b);
  case F_TRACE_TYPE: return put_enum(b, c->enm, sp->trace_type, 1);
  case F_SPAN_TYPE: return put_enum(b, c->enm, sp->span_type, 1);
  case F_SPAN_KIND: return put_enum(b, c->enm, sp->span_kind, 0);
  case F_STATUS_CODE: return put_enum(b, c->enm, sp->status_code, 0);
  case F_SPAN_NAME: return put_str_null(b, sp->span_name ? sp->span_name : "");
  case F_STATUS_MESSAGE: return put_str_null(b, sp->status_message);
  case F_SESSION_ID: return put_str_null(b, sp->session_id);
  case F_USER_ID: return put_str_null(b, sp->user_id);
  case F_AGENT_ID: return put_str_null(b, sp->agent_id);
  case F_START: return time_ok(sp->start_us) ? put_time(b, sp->start_us, lf) : SG_EINVAL;
  case F_END: return time_ok(sp->end_us) ? put_time(b, sp->end_us, lf) : SG_EINVAL;
  case F_CREATED: return time_ok(sp->created_at_us) ? put_time(b, sp->created_at_us, lf) : SG_EINVAL;
  case F_UPDATED:
    if (sp->updated_at_us == 0) return put_time_null(b, lf); /* span.h: 0 = NULL */
    return time_ok(sp->updated_at_us) ? put_time(b, sp->updated_at_us, lf) : SG_EINVAL;
  case F_DELETED:
    if (sp->deleted_at_us == 0) return put_time_null(b, lf); /* span.h: 0 = NULL */
    return time_ok(sp->deleted_at_us) ? put_time(b, sp->deleted_at_us, lf) : SG_EINVAL;
  case F_DELETED_BY: return sp->has_deleted_by ? put_uuid(b, sp->deleted_by_id) : put_null(b);
  case F_ATTRIBUTES: {
    if (sp->attributes == NULL && !((sp->nest_attributes & SG_SPAN_NEST_RESOURCE) && sp->resource))
      return put_null(b);
    const char *text;
    size_t len;
    int rc = sg_span_attributes_text(sp, &text, &len); /* the text PostgreSQL got */
    return rc ? rc : put_json_text_raw(b, text, len);
  }
  case F_REFERENCES: return put_json(b, sp->references);
  case F_LINKS: return put_json(b, sp->links);
  case F_HASHES: return put_json(b, sp->hashes);
  case F_EVENTS: return put_json(b, sp->events);
  case F_VERSION: return sp->version >= 0 ? put_u64(b, (uint64_t)sp->version) : SG_EINVAL;
  case F_EXPIRES: {
    if (expires_at_us < 0) return SG_EINVAL;
    int64_t s = expires_at_us / 1000000 + (expires_at_us % 1000000 != 0); /* round up */
    if (s > SG_CH_EXPIRES_NEVER_S) s = SG_CH_EXPIRES_NEVER_S;             /* INT64_MAX: never */
    return put_datetime(b, s);
  }
  case F_IS_DELETED: return sg_buf_putc(b, '0'); /* a live span; tombstones come from text rows */
  }
  return SG_EINVAL;
}

int sg_ch_row_encode(const sg_ch_layout_t *lay, const uint8_t project_id[16], const sg_span_t *span,
                     int64_t expires_at_us, sg_buf_t *out) {
  if (lay == NULL || project_id == NULL || span == NULL || out == NULL) return SG_EINVAL;
  const table_t *t = spans_table();
  size_t start = out->len;
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < t->ncols; i++) {
    if (i) rc = sg_buf_putc(out, '\t');
    rc = rc ? rc : encode_col(out, &t->cols[i], project_id, span, expires_at_us, lay->flags);
  }
  rc = rc ? rc : sg_buf_putc(out, '\n');
  if (rc != 0 && out->data) {
    out->len = start;
    out->data[start] = '\0';
  }
  return rc;
}

/* ---- rows from PostgreSQL's text output ------------------------------------ */

/* JSON text -> compact JSON as a TabSeparated field, in one pass (see the
 * header). Valid JSON has no raw control character in a string, so once the
 * whitespace between tokens is gone the backslash is the only byte
 * TabSeparated must escape. The migration's profile before this: parsing
 * jsonb's text with jansson and dumping it back was ~40% of the job's CPU. */

#define JSON_MAX_DEPTH 2048

/* Bytes 0x20..0x7f a string copies as they are (not '"', not '\\'). */

static int hexv(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static long hex4(const unsigned char *p) {
  long v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hexv(p[i]);
    if (h < 0) return -1;
    v = v * 16 + h;
  }
  return v;
}

/* Length of the valid UTF-8 sequence at p (not ASCII), 0 if invalid
 * (overlong forms, UTF-16 surrogates and code points past U+10FFFF are, as
 * for jansson). */
static int utf8_len(const unsigned char *p, const unsigned char *end) {
  unsigned char c = p[0];
  if (c < 0xC2 || c > 0xF4) return 0;
  int k = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  if (end - p < k) return 0;
  for (int i = 1; i < k; i++)
    if ((p[i] & 0xC0) != 0x80) return 0;
  if (c == 0xE0 && p[1] < 0xA0) return 0;
  if (c == 0xED && p[1] >= 0xA0) return 0;
  if (c == 0xF0 && p[1] < 0x90) return 0;
  if (c == 0xF4 && p[1] >= 0x90) return 0;
  return k;
}

/* The string after its opening quote; writes it with the closing quote.
 * Returns the position after the closing quote, NULL if invalid. */
static const unsigned char *json_str(const unsigned char *p, const unsigned char *end, char **op) {
  char *o = *op;
  for (;;) {
    size_t run = sg_json_ascii_plain_len((const char *)p, (size_t)(end - p));
    memcpy(o, p, run);
    o += run;
    p += run;
    if (p >= end) return NULL;
    unsigned char c = *p;
    if (c == '"') {
      *o++ = '"';
      *op = o;
      return p + 1;
    }
    if (c == '\\') {
      if (end - p < 2) return NULL;
      unsigned char e = p[1];
      *o++ = '\\';
      *o++ = '\\';
      switch (e) {
      case '\\': *o++ = '\\'; *o++ = '\\'; p += 2; break;
      case '"': case '/': case 'b': case 'f': case 'n': case 'r': case 't': *o++ = (char)e; p += 2; break;
      case 'u': {
        if (end - p < 6) return NULL;
        long u = hex4(p + 2);
        if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF)) return NULL;
        memcpy(o, p + 1, 5);
        o += 5;
        p += 6;
        if (u >= 0xD800 && u <= 0xDBFF) { /* a low surrogate must follow */
          if (end - p < 6 || p[0] != '\\' || p[1] != 'u') return NULL;
          long l = hex4(p + 2);
          if (l < 0xDC00 || l > 0xDFFF) return NULL;
          *o++ = '\\';
          *o++ = '\\';
          memcpy(o, p + 1, 5);
          o += 5;
          p += 6;
        }
        break;
      }
      default: return NULL;
      }
      continue;
    }
    if (c < 0x20) return NULL;
    int k = utf8_len(p, end);
    if (k == 0) return NULL;
    memcpy(o, p, (size_t)k);
    o += k;
    p += k;
  }
}

static const unsigned char *json_num(const unsigned char *p, const unsigned char *end, char **op) {
  const unsigned char *s = p;
  if (p < end && *p == '-') p++;
  if (p >= end) return NULL;
  if (*p == '0') p++;
  else if (*p >= '1' && *p <= '9') while (p < end && *p >= '0' && *p <= '9') p++;
  else return NULL;
  if (p < end && *p == '.') {
    p++;
    if (p >= end || *p < '0' || *p > '9') return NULL;
    while (p < end && *p >= '0' && *p <= '9') p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    if (p >= end || *p < '0' || *p > '9') return NULL;
    while (p < end && *p >= '0' && *p <= '9') p++;
  }
  memcpy(*op, s, (size_t)(p - s));
  *op += p - s;
  return p;
}

#define JSON_WS(c) ((c) == ' ' || (c) == '\n' || (c) == '\t' || (c) == '\r')

/* Writes past out->len; sg_ch_json_tsv commits it or restores the NUL. */
static int json_tsv(sg_buf_t *out, const char *text, size_t n) {
  const unsigned char *p = (const unsigned char *)text, *end = p + n;
  char *o = out->data + out->len;
  unsigned char stack[JSON_MAX_DEPTH]; /* '{' or '[' */
  int depth = 0;
value:
  while (p < end && JSON_WS(*p)) p++;
  if (p >= end) return SG_EPARSE;
  switch (*p) {
  case '{':
  case '[':
    if (depth == JSON_MAX_DEPTH) return SG_EPARSE;
    stack[depth++] = *p;
    *o++ = (char)*p++;
    while (p < end && JSON_WS(*p)) p++;
    if (p < end && *p == (stack[depth - 1] == '{' ? '}' : ']')) {
      *o++ = (char)*p++;
      depth--;
      goto after;
    }
    if (stack[depth - 1] == '{') goto key;
    goto value;
  case '"':
    *o++ = '"';
    if (!(p = json_str(p + 1, end, &o))) return SG_EPARSE;
    goto after;
  case 't':
  case 'f':
  case 'n': {
    const char *lit = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
    size_t k = strlen(lit);
    if ((size_t)(end - p) < k || memcmp(p, lit, k) != 0) return SG_EPARSE;
    memcpy(o, lit, k);
    o += k;
    p += k;
    goto after;
  }
  default:
    if (!(p = json_num(p, end, &o))) return SG_EPARSE;
    goto after;
  }
key:
  while (p < end && JSON_WS(*p)) p++;
  if (p >= end || *p != '"') return SG_EPARSE;
  *o++ = '"';
  if (!(p = json_str(p + 1, end, &o))) return SG_EPARSE;
  while (p < end && JSON_WS(*p)) p++;
  if (p >= end || *p != ':') return SG_EPARSE;
  *o++ = ':';
  p++;
  goto value;
after:
  while (p < end && JSON_WS(*p)) p++;
  if (depth == 0) {
    if (p != end) return SG_EPARSE;
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
    return 0;
  }
  if (p >= end) return SG_EPARSE;
  if (*p == ',') {
    *o++ = ',';
    p++;
    if (stack[depth - 1] == '{') goto key;
    goto value;
  }
  if (*p == (stack[depth - 1] == '{' ? '}' : ']')) {
    *o++ = (char)*p++;
    depth--;
    goto after;
  }
  return SG_EPARSE;
}

int sg_ch_json_tsv(sg_buf_t *out, const char *text, size_t n) {
  if (text == NULL) return SG_EPARSE;
  if (sg_buf_reserve(out, 2 * n + 2) != 0) return SG_ENOMEM;
  int rc = json_tsv(out, text, n);
  if (rc != 0) out->data[out->len] = '\0';
  return rc;
}

static int is_lhex(unsigned char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

/* A UUID from text: the canonical form (dashed lower case, what PostgreSQL
 * prints) copied, any other form sg_id_parse takes printed canonically. */
static int put_uuid_text(sg_buf_t *b, const sg_ch_text_t *v, int nullable) {
  if (v->p == NULL) return nullable ? put_null(b) : SG_EINVAL;
  if (v->n == 36) {
    size_t i = 0;
    for (; i < 36; i++) {
      unsigned char c = (unsigned char)v->p[i];
      if (i == 8 || i == 13 || i == 18 || i == 23 ? c != '-' : !is_lhex(c)) break;
    }
    if (i == 36) return sg_buf_append(b, v->p, 36);
  }
  uint8_t id[16];
  if (sg_id_parse(v->p, v->n, id) != 0) return SG_EINVAL;
  return put_uuid(b, id);
}

/* An enum from its label (case-insensitive, as span.c parses), printed as
 * the canonical label. */
static int put_enum_text(sg_buf_t *b, const enum_def_t *e, const sg_ch_text_t *v, int nullable) {
  if (v->p == NULL) return nullable ? put_null(b) : SG_EINVAL;
  for (int i = 0; i < e->n; i++) {
    size_t k = strlen(e->labels[i]);
    if (k == v->n && strncasecmp(e->labels[i], v->p, k) == 0) return sg_buf_append(b, e->labels[i], k);
  }
  return SG_EINVAL;
}

static int put_str_text(sg_buf_t *b, const sg_ch_text_t *v) {
  return v->p ? sg_ch_tsv_escape(b, v->p, v->n) : put_null(b);
}

static int put_json_text(sg_buf_t *b, const sg_ch_text_t *v) {
  return v->p ? sg_ch_json_tsv(b, v->p, v->n) : put_null(b);
}

static int put_time_text(sg_buf_t *b, int64_t us, int nullable, unsigned lf) {
  if (nullable && us == 0) return put_time_null(b, lf); /* span.h: 0 = NULL */
  return time_ok(us) ? put_time(b, us, lf) : SG_EINVAL;
}

static int encode_col_text(sg_buf_t *b, const col_t *c, const uint8_t project_id[16],
                           const sg_ch_text_row_t *r, int64_t expires_at_us, unsigned lf) {
  static const sg_ch_text_t empty = {"", 0};
  switch (c->field) {
  case F_NONE:
    if (c->type == T_FLAG) return sg_buf_putc(b, '0');
    return (c->type == T_TIME || c->type == T_TIME_NULL) ? put_time_null(b, lf) : put_null(b);
  case F_PROJECT_ID: return put_uuid(b, project_id);
  case F_TRACE_ID: return put_uuid_text(b, &r->trace_id, 0);
  case F_SPAN_ID: return put_uuid_text(b, &r->span_id, 0);
  case F_PARENT_ID: return put_uuid_text(b, &r->parent_id, 1);
  case F_CREATED_BY: return put_uuid_text(b, &r->created_by_id, 1);
  case F_UPDATED_BY: return put_uuid_text(b, &r->updated_by_id, 1);
  case F_DELETED_BY: return put_uuid_text(b, &r->deleted_by_id, 1);
  case F_TRACE_TYPE: return put_enum_text(b, c->enm, &r->trace_type, 1);
  case F_SPAN_TYPE: return put_enum_text(b, c->enm, &r->span_type, 1);
  case F_SPAN_KIND: return put_enum_text(b, c->enm, &r->span_kind, 0);
  case F_STATUS_CODE: return put_enum_text(b, c->enm, &r->status_code, 0);
  case F_SPAN_NAME: return put_str_text(b, r->span_name.p ? &r->span_name : &empty);
  case F_STATUS_MESSAGE: return put_str_text(b, &r->status_message);
  case F_SESSION_ID: return put_str_text(b, &r->session_id);
  case F_USER_ID: return put_str_text(b, &r->user_id);
  case F_AGENT_ID: return put_str_text(b, &r->agent_id);
  case F_START: return put_time_text(b, r->start_us, 0, lf);
  case F_END: return put_time_text(b, r->end_us, 0, lf);
  case F_CREATED: return put_time_text(b, r->created_at_us, 0, lf);
  case F_UPDATED: return put_time_text(b, r->updated_at_us, 1, lf);
  case F_DELETED: return put_time_text(b, r->deleted_at_us, 1, lf);
  case F_ATTRIBUTES: return put_json_text(b, &r->attributes);
  case F_REFERENCES: return put_json_text(b, &r->references);
  case F_LINKS: return put_json_text(b, &r->links);
  case F_HASHES: return put_json_text(b, &r->hashes);
  case F_EVENTS: return put_json_text(b, &r->events);
  case F_VERSION: return r->version >= 0 ? put_u64(b, (uint64_t)r->version) : SG_EINVAL;
  case F_EXPIRES: {
    if (expires_at_us < 0) return SG_EINVAL;
    int64_t s = expires_at_us / 1000000 + (expires_at_us % 1000000 != 0);
    if (s > SG_CH_EXPIRES_NEVER_S) s = SG_CH_EXPIRES_NEVER_S;
    return put_datetime(b, s);
  }
  case F_IS_DELETED: return sg_buf_putc(b, r->is_deleted ? '1' : '0');
  }
  return SG_EINVAL;
}

int sg_ch_row_encode_text(const sg_ch_layout_t *lay, const uint8_t project_id[16],
                          const sg_ch_text_row_t *row, int64_t expires_at_us, sg_buf_t *out,
                          const char **why) {
  const char *dummy;
  if (why == NULL) why = &dummy;
  *why = "";
  if (lay == NULL || project_id == NULL || row == NULL || out == NULL) return SG_EINVAL;
  const table_t *t = spans_table();
  size_t start = out->len;
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < t->ncols; i++) {
    if (i) rc = sg_buf_putc(out, '\t');
    if (rc == 0 && (rc = encode_col_text(out, &t->cols[i], project_id, row, expires_at_us, lay->flags)) != 0)
      *why = t->cols[i].name;
  }
  rc = rc ? rc : sg_buf_putc(out, '\n');
  if (rc != 0 && out->data) {
    out->len = start;
    out->data[start] = '\0';
  }
  return rc;
}
