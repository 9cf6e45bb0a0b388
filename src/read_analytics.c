/* read_analytics.c - GET /v1/analytics/spans: the query string parsed, the
 * same aggregate as a PostgreSQL statement over `spans`, a ClickHouse one
 * over the materialized `spans_analytics`, or computed here from spans
 * (ClickHouse's exact path), and the answer rendered. See read_analytics.h. */
#include "read_analytics.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "read_internal.h"
#include "span.h"

const char *const sg_rf_dims[SG_RF_NDIMS] = {"trace_type", "span_type", "span_kind", "span_name"};

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = tolower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes s[0..n) ('+' is a space) into out (reset first). */
static int url_decode(const char *s, size_t n, sg_buf_t *out) {
  sg_buf_reset(out);
  int rc = sg_buf_reserve(out, n);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    if (s[i] == '%' && i + 2 < n && hexval((unsigned char)s[i + 1]) >= 0 &&
        hexval((unsigned char)s[i + 2]) >= 0) {
      rc = sg_buf_putc(out, (char)(hexval((unsigned char)s[i + 1]) << 4 | hexval((unsigned char)s[i + 2])));
      i += 2;
    } else {
      rc = sg_buf_putc(out, s[i] == '+' ? ' ' : s[i]);
    }
  }
  if (rc == 0 && out->data == NULL) rc = sg_buf_puts(out, "");
  return rc;
}

static int parse_bucket(const char *s, int64_t *out) {
  char *end;
  long long v = strtoll(s, &end, 10);
  if (end == s || v <= 0) return SG_EINVAL;
  int64_t mul = 1;
  if (!strcmp(end, "") || !strcmp(end, "s")) mul = 1;
  else if (!strcmp(end, "m")) mul = 60;
  else if (!strcmp(end, "h")) mul = 3600;
  else if (!strcmp(end, "d")) mul = 86400;
  else return SG_EINVAL;
  if (v > 366LL * 86400) return SG_EINVAL;
  *out = v * mul;
  return 0;
}

#define MAX_PATH_BYTES 512
#define MAX_SEGMENTS 32

static void path_free(sg_rf_path_t *p) {
  for (size_t i = 0; i < p->nseg; i++) free(p->seg[i]);
  free(p->seg);
  free(p->seglen);
  free(p->flat);
  free(p->name);
  memset(p, 0, sizeof *p);
}

void sg_rf_analytics_free(sg_rf_analytics_t *a) {
  for (int i = 0; i < a->nattr; i++) path_free(&a->attr[i]);
  for (int i = 0; i < a->nmetric; i++) {
    path_free(&a->metric[i].path);
    free(a->metric[i].name);
  }
  a->nattr = a->nmetric = 0;
}

/* "attributes.a.b" (s[0..n)) into p. SG_EINVAL with err, SG_ENOMEM. */
static int path_parse(const char *where, const char *s, size_t n, sg_rf_path_t *p, sg_buf_t *err) {
  static const char pre[] = "attributes.";
  char tmp[80];
  memset(p, 0, sizeof *p);
  char *name = strndup(s, n);
  if (!name) return SG_ENOMEM;
  if (n <= sizeof pre - 1 || memcmp(s, pre, sizeof pre - 1) || n > MAX_PATH_BYTES) {
    int rc = sg__rf_fail(err, where, "'%s' is not attributes.<dotted path> (at most %d bytes)",
                         sg__rf_shown(name, tmp), MAX_PATH_BYTES);
    free(name);
    return rc;
  }
  p->name = name;
  const char *k = name + sizeof pre - 1;
  for (const char *q = k;;) {
    const char *dot = strchr(q, '.');
    size_t sl = dot ? (size_t)(dot - q) : strlen(q);
    if (sl == 0 || p->nseg == MAX_SEGMENTS) {
      int rc = sg__rf_fail(err, where, "'%s' has an empty path element or more than %d of them",
                           sg__rf_shown(name, tmp), MAX_SEGMENTS);
      path_free(p);
      return rc;
    }
    char **ns = realloc(p->seg, (p->nseg + 1) * sizeof *ns);
    if (ns) p->seg = ns;
    size_t *nl = realloc(p->seglen, (p->nseg + 1) * sizeof *nl);
    if (nl) p->seglen = nl;
    if (!ns || !nl || !(p->seg[p->nseg] = strndup(q, sl))) {
      path_free(p);
      return SG_ENOMEM;
    }
    p->seglen[p->nseg++] = sl;
    if (!dot) break;
    q = dot + 1;
  }
  if (p->nseg > 1 && !(p->flat = strdup(k))) {
    path_free(p);
    return SG_ENOMEM;
  }
  return 0;
}

static int parse_groups(sg_rf_analytics_t *a, const char *v, sg_buf_t *err) {
  char tmp[80];
  int n = 0;
  for (const char *g = v; *g;) {
    const char *comma = strchr(g, ',');
    size_t gl = comma ? (size_t)(comma - g) : strlen(g);
    if (gl) {
      int found = -1;
      for (int i = 0; i < SG_RF_NDIMS; i++)
        if (strlen(sg_rf_dims[i]) == gl && !memcmp(sg_rf_dims[i], g, gl)) found = i;
      if (++n > SG_RF_MAX_GROUPS)
        return sg__rf_fail(err, "group_by", "at most %d groups", SG_RF_MAX_GROUPS);
      if (found >= 0) {
        a->dims |= 1u << found;
      } else if (gl > 11 && !memcmp(g, "attributes.", 11)) {
        int rc = path_parse("group_by", g, gl, &a->attr[a->nattr], err);
        if (rc) return rc;
        a->nattr++;
      } else {
        char *name = strndup(g, gl);
        int rc = sg__rf_fail(err, "group_by",
                             "unknown dimension '%s' (known: trace_type, span_type, span_kind, span_name, "
                             "attributes.<path>)",
                             name ? sg__rf_shown(name, tmp) : "?");
        free(name);
        return rc;
      }
    }
    g = comma ? comma + 1 : g + gl;
  }
  return 0;
}

static int parse_metrics(sg_rf_analytics_t *a, const char *v, sg_buf_t *err) {
  char tmp[80];
  for (const char *m = v; *m;) {
    const char *comma = strchr(m, ',');
    size_t ml = comma ? (size_t)(comma - m) : strlen(m);
    if (ml) {
      if (a->nmetric == SG_RF_MAX_METRICS)
        return sg__rf_fail(err, "metrics", "at most %d metrics", SG_RF_MAX_METRICS);
      int op = ml > 4 && !memcmp(m, "sum:", 4) ? SG_RF_SUM : ml > 4 && !memcmp(m, "avg:", 4) ? SG_RF_AVG : -1;
      if (op < 0) {
        char *name = strndup(m, ml);
        int rc = sg__rf_fail(err, "metrics", "'%s' is not sum:<path> or avg:<path> (e.g. "
                             "sum:attributes.gen_ai.usage.total_tokens)", name ? sg__rf_shown(name, tmp) : "?");
        free(name);
        return rc;
      }
      sg_rf_metric_t *x = &a->metric[a->nmetric];
      int rc = path_parse("metrics", m + 4, ml - 4, &x->path, err);
      if (rc) return rc;
      x->op = op;
      if (!(x->name = strndup(m, ml))) {
        path_free(&x->path);
        return SG_ENOMEM;
      }
      a->nmetric++;
    }
    m = comma ? comma + 1 : m + ml;
  }
  return 0;
}

int sg_rf_analytics_parse(const char *query, int64_t now_s, sg_rf_analytics_t *a, sg_buf_t *err) {
  sg_buf_t val = SG_BUF_INIT;
  char tmp[80];
  int rc = 0, has_from = 0, has_to = 0;
  int64_t from_us = 0, to_us = 0;
  memset(a, 0, sizeof *a);
  a->bucket_s = 3600;
  const char *p = query ? query : "";
  while (*p && rc == 0) {
    const char *amp = strchr(p, '&');
    size_t n = amp ? (size_t)(amp - p) : strlen(p);
    const char *eq = memchr(p, '=', n);
    size_t kn = eq ? (size_t)(eq - p) : n;
    if ((rc = url_decode(eq ? eq + 1 : p + n, eq ? n - kn - 1 : 0, &val))) break;
    const char *v = val.data;
#define KEY(k) (kn == sizeof k - 1 && !memcmp(p, k, kn))
    if (KEY("from") || KEY("to")) {
      int64_t us;
      size_t vl = strlen(v), digits = 1;
      for (size_t i = 0; i < vl; i++)
        if (!isdigit((unsigned char)v[i])) digits = 0;
      int r = vl == 0 ? SG_EINVAL
              : digits ? sg_time_from_epoch_digits(v, vl, &us)
                       : sg_time_parse_iso(v, vl, &us);
      if (r != 0) {
        rc = sg__rf_fail(err, KEY("from") ? "from" : "to",
                         "'%s' is not an ISO-8601 time or an integer epoch", sg__rf_shown(v, tmp));
        break;
      }
      if (KEY("from")) from_us = us, has_from = 1;
      else to_us = us, has_to = 1;
    } else if (KEY("bucket")) {
      if (parse_bucket(v, &a->bucket_s) != 0 || a->bucket_s % 60 != 0) {
        rc = sg__rf_fail(err, "bucket", "'%s' is not a whole number of minutes (e.g. 60, 300s, 5m, 1h, 1d; "
                         "at most 366 days)", sg__rf_shown(v, tmp));
        break;
      }
    } else if (KEY("group_by")) {
      rc = parse_groups(a, v, err);
    } else if (KEY("metrics")) {
      rc = parse_metrics(a, v, err);
    } else if (kn) {
      char *name = strndup(p, kn);
      rc = sg__rf_fail(err, "query", "unknown parameter '%s' (known: from, to, bucket, group_by, metrics)",
                       name ? sg__rf_shown(name, tmp) : "?");
      free(name);
    }
#undef KEY
    p = amp ? amp + 1 : p + n;
  }
  sg_buf_free(&val);
  if (rc) return rc;
  /* Whole minutes: the ClickHouse aggregate keeps minutes, and every store
   * must answer over the same spans. */
  int64_t to_s = has_to ? to_us / 1000000 : (now_s / 60 + 1) * 60;
  int64_t from_s = has_from ? from_us / 1000000 : to_s - 86400;
  a->to_s = to_s - to_s % 60;
  a->from_s = from_s - from_s % 60;
  if (a->from_s >= a->to_s) return sg__rf_fail(err, "from", "must be at least a minute before 'to'");
  if ((a->to_s - a->from_s) / a->bucket_s > 10000)
    return sg__rf_fail(err, "bucket", "more than 10000 buckets between from and to; use a larger bucket");
  return 0;
}

/* The leaf of path p whose text[] is $n (and dotted key $n+1). */
static int pg_leaf(sg_buf_t *b, const sg_rf_path_t *p, int n) {
  if (p->flat) return sg_buf_printf(b, "COALESCE(attributes #> $%d::text[], attributes -> $%d::text)", n, n + 1);
  return sg_buf_printf(b, "(attributes #> $%d::text[])", n);
}

int sg_rf_analytics_pg_sql(const sg_rf_analytics_t *a, sg_buf_t *out) {
  int rc = sg_buf_puts(out, "SELECT (floor(extract(epoch from start_time) / $2::int8) * $2::int8)::int8");
  int k = 2, param = 5;
  for (int i = 0; rc == 0 && i < SG_RF_NDIMS; i++)
    if (a->dims & (1u << i)) rc = sg_buf_printf(out, ", coalesce(%s::text, '') COLLATE \"C\"", sg_rf_dims[i]), k++;
  for (int i = 0; rc == 0 && i < a->nattr; i++, k++) {
    rc = sg_buf_puts(out, ", (");
    rc = rc ? rc : pg_leaf(out, &a->attr[i], param);
    rc = rc ? rc : sg_buf_puts(out, " #>> '{}') COLLATE \"C\"");
    param += a->attr[i].flat ? 2 : 1;
  }
  int ngroup = k - 2;
  rc = rc ? rc : sg_buf_puts(out,
      ", count(*), count(*) FILTER (WHERE status_code = 'STATUS_CODE_ERROR'),"
      " percentile_cont(ARRAY[0.5, 0.95, 0.99]::float8[]) WITHIN GROUP (ORDER BY"
      " ((extract(epoch from end_time) - extract(epoch from start_time)) * 1000)::float8)");
  for (int i = 0; rc == 0 && i < a->nmetric; i++) {
    sg_buf_t leaf = SG_BUF_INIT;
    rc = pg_leaf(&leaf, &a->metric[i].path, param);
    param += a->metric[i].path.flat ? 2 : 1;
    rc = rc ? rc : sg_buf_printf(out, ", sum(CASE WHEN jsonb_typeof(%s) = 'number' THEN (%s #>> '{}')::numeric END)::text,"
                                 " count(CASE WHEN jsonb_typeof(%s) = 'number' THEN 1 END)",
                                 leaf.data, leaf.data, leaf.data);
    sg_buf_free(&leaf);
  }
  rc = rc ? rc : sg_buf_puts(out, " FROM spans WHERE project_id = $1::uuid AND start_time >= $3::timestamptz"
                                  " AND start_time < $4::timestamptz AND deleted_at IS NULL GROUP BY 1");
  for (int i = 0; rc == 0 && i < ngroup; i++) rc = sg_buf_printf(out, ", %d", i + 2);
  rc = rc ? rc : sg_buf_puts(out, " ORDER BY 1");
  for (int i = 0; rc == 0 && i < ngroup; i++) rc = sg_buf_printf(out, ", %d", i + 2);
  return rc;
}

/* The path's parameters: text[] literal, and the dotted key. */
static int path_params(const sg_rf_path_t *p, sg_rf_query_t *q) {
  sg_buf_t arr = SG_BUF_INIT;
  int rc = sg_buf_putc(&arr, '{');
  for (size_t i = 0; rc == 0 && i < p->nseg; i++) {
    if (i) rc = sg_buf_putc(&arr, ',');
    rc = rc ? rc : sg_buf_putc(&arr, '"');
    for (const char *c = p->seg[i]; rc == 0 && *c; c++) {
      if (*c == '"' || *c == '\\') rc = sg_buf_putc(&arr, '\\');
      rc = rc ? rc : sg_buf_putc(&arr, *c);
    }
    rc = rc ? rc : sg_buf_putc(&arr, '"');
  }
  rc = rc ? rc : sg_buf_putc(&arr, '}');
  if (rc == 0 && sg_rf_param(q, arr.data, arr.len) < 0) rc = SG_ENOMEM;
  if (rc == 0 && p->flat && sg_rf_param(q, p->flat, strlen(p->flat)) < 0) rc = SG_ENOMEM;
  sg_buf_free(&arr);
  return rc;
}

int sg_rf_analytics_pg_params(const sg_rf_analytics_t *a, const uint8_t project_id[16],
                              sg_rf_query_t *q) {
  char pid[37], num[32], iso[32];
  sg_uuid_format(project_id, pid);
  if (sg_rf_param(q, pid, 36) < 0) return SG_ENOMEM;
  snprintf(num, sizeof num, "%" PRId64, a->bucket_s);
  if (sg_rf_param(q, num, strlen(num)) < 0) return SG_ENOMEM;
  sg_time_format(a->from_s * 1000000, iso);
  if (sg_rf_param(q, iso, strlen(iso)) < 0) return SG_ENOMEM;
  sg_time_format(a->to_s * 1000000, iso);
  if (sg_rf_param(q, iso, strlen(iso)) < 0) return SG_ENOMEM;
  for (int i = 0; i < a->nattr; i++)
    if (path_params(&a->attr[i], q)) return SG_ENOMEM;
  for (int i = 0; i < a->nmetric; i++)
    if (path_params(&a->metric[i].path, q)) return SG_ENOMEM;
  return 0;
}

/* ---- the answer ------------------------------------------------------------------ */

/* The shortest text that reads back as v (both stores' sums are rounded
 * once from the same exact value, so they print alike); null when not
 * finite. */
static int put_number(sg_buf_t *b, double v) {
  if (!isfinite(v)) return sg_buf_puts(b, "null");
  char t[40];
  if (v == floor(v) && fabs(v) < 1e15) { /* whole numbers as integers, never 1e+02 */
    snprintf(t, sizeof t, "%.0f", v);
    return sg_buf_puts(b, t);
  }
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(t, sizeof t, "%.*g", prec, v);
    if (strtod(t, NULL) == v) break;
  }
  return sg_buf_puts(b, t);
}

int sg_rf_analytics_head(const sg_rf_analytics_t *a, const char *backend, sg_buf_t *b) {
  char f[32], t[32];
  sg_time_format(a->from_s * 1000000, f);
  sg_time_format(a->to_s * 1000000, t);
  int rc = sg_buf_printf(b, "{\"backend\":\"%s\",\"from\":\"%s\",\"to\":\"%s\",\"bucket\":%" PRId64
                         ",\"group_by\":[", backend, f, t, a->bucket_s);
  int k = 0;
  for (int i = 0; rc == 0 && i < SG_RF_NDIMS; i++)
    if (a->dims & (1u << i)) rc = sg_buf_printf(b, "%s\"%s\"", k++ ? "," : "", sg_rf_dims[i]);
  for (int i = 0; rc == 0 && i < a->nattr; i++) {
    rc = sg_buf_printf(b, "%s\"", k++ ? "," : "");
    rc = rc ? rc : sg_buf_json_escape(b, a->attr[i].name, strlen(a->attr[i].name));
    rc = rc ? rc : sg_buf_putc(b, '"');
  }
  rc = rc ? rc : sg_buf_putc(b, ']');
  if (rc == 0 && a->nmetric) {
    rc = sg_buf_puts(b, ",\"metrics\":[");
    for (int i = 0; rc == 0 && i < a->nmetric; i++) {
      rc = sg_buf_puts(b, i ? ",\"" : "\"");
      rc = rc ? rc : sg_buf_json_escape(b, a->metric[i].name, strlen(a->metric[i].name));
      rc = rc ? rc : sg_buf_putc(b, '"');
    }
    rc = rc ? rc : sg_buf_putc(b, ']');
  }
  return rc ? rc : sg_buf_puts(b, ",\"buckets\":[");
}

int sg_rf_analytics_row(const sg_rf_analytics_t *a, const sg_rf_arow_t *r, int first, sg_buf_t *b) {
  char ts[32];
  sg_time_format(r->bucket * 1000000, ts);
  int rc = sg_buf_printf(b, "%s{\"timestamp\":\"%s\"", first ? "" : ",", ts);
  if (a->dims || a->nattr) {
    rc = rc ? rc : sg_buf_puts(b, ",\"group\":{");
    int k = 0;
    for (int i = 0; rc == 0 && i < SG_RF_NDIMS; i++) {
      if (!(a->dims & (1u << i))) continue;
      rc = sg_buf_printf(b, "%s\"%s\":", k++ ? "," : "", sg_rf_dims[i]);
      if (rc) break;
      if (r->glen[i] == 0 && i < 3) { /* '' stands for NULL (span_name '' is a name) */
        rc = sg_buf_puts(b, "null");
        continue;
      }
      rc = sg_buf_putc(b, '"');
      if (i <= 1) /* trace_type, span_type: Agenta's lower-case values, as in spans */
        for (size_t j = 0; rc == 0 && j < r->glen[i]; j++)
          rc = sg_buf_putc(b, (char)(r->g[i][j] >= 'A' && r->g[i][j] <= 'Z' ? r->g[i][j] + 32 : r->g[i][j]));
      else
        rc = rc ? rc : sg_buf_json_escape(b, r->g[i], r->glen[i]);
      rc = rc ? rc : sg_buf_putc(b, '"');
    }
    for (int i = 0; rc == 0 && i < a->nattr; i++) {
      rc = sg_buf_printf(b, "%s\"", k++ ? "," : "");
      rc = rc ? rc : sg_buf_json_escape(b, a->attr[i].name, strlen(a->attr[i].name));
      rc = rc ? rc : sg_buf_puts(b, "\":");
      if (rc) break;
      if (!r->ag[i]) {
        rc = sg_buf_puts(b, "null");
        continue;
      }
      rc = sg_buf_putc(b, '"');
      rc = rc ? rc : sg_buf_json_escape(b, r->ag[i], r->aglen[i]);
      rc = rc ? rc : sg_buf_putc(b, '"');
    }
    rc = rc ? rc : sg_buf_putc(b, '}');
  }
  /* ms with µs resolution: both stores compute in float8 from exact µs,
   * three decimals hide the last-bit differences of their interpolation. */
  rc = rc ? rc : sg_buf_printf(b, ",\"count\":%" PRId64 ",\"errors\":%" PRId64
                               ",\"duration_ms\":{\"p50\":%.3f,\"p95\":%.3f,\"p99\":%.3f}",
                               r->count, r->errors, r->p[0], r->p[1], r->p[2]);
  if (rc == 0 && a->nmetric) {
    rc = sg_buf_puts(b, ",\"metrics\":{");
    for (int i = 0; rc == 0 && i < a->nmetric; i++) {
      rc = sg_buf_puts(b, i ? ",\"" : "\"");
      rc = rc ? rc : sg_buf_json_escape(b, a->metric[i].name, strlen(a->metric[i].name));
      rc = rc ? rc : sg_buf_puts(b, "\":");
      if (rc) break;
      if (!r->has[i] || r->n[i] == 0) rc = sg_buf_puts(b, "null");
      else rc = put_number(b, a->metric[i].op == SG_RF_SUM ? r->sum[i] : r->sum[i] / (double)r->n[i]);
    }
    rc = rc ? rc : sg_buf_putc(b, '}');
  }
  return rc ? rc : sg_buf_putc(b, '}');
}

int sg_rf_analytics_tail(size_t rows, sg_buf_t *b) { return sg_buf_printf(b, "],\"count\":%zu}\n", rows); }

/* ---- the exact aggregate in C ------------------------------------------------------- */

typedef struct {
  int64_t bucket;
  char *g[SG_RF_NDIMS];            /* '' for NULL, as PostgreSQL's coalesce */
  char *ag[SG_RF_MAX_GROUPS];      /* NULL for null */
  int64_t count, errors;
  double *dur;
  size_t ndur, capdur;
  sg_jb_sum_t sum[SG_RF_MAX_METRICS];
  int64_t n[SG_RF_MAX_METRICS];
} grp_t;

struct sg_rf_agg_s {
  const sg_rf_analytics_t *a;
  grp_t **g;
  size_t n, cap;
  size_t *slot;                    /* hash table of group indexes + 1 */
  size_t nslot;
  sg_buf_t key, tmp;
};

sg_rf_agg_t *sg_rf_agg_new(const sg_rf_analytics_t *a) {
  sg_rf_agg_t *g = calloc(1, sizeof *g);
  if (g) g->a = a;
  return g;
}

static void grp_free(grp_t *x) {
  for (int i = 0; i < SG_RF_NDIMS; i++) free(x->g[i]);
  for (int i = 0; i < SG_RF_MAX_GROUPS; i++) free(x->ag[i]);
  for (int i = 0; i < SG_RF_MAX_METRICS; i++) sg_jb_sum_free(&x->sum[i]);
  free(x->dur);
  free(x);
}

void sg_rf_agg_free(sg_rf_agg_t *g) {
  if (!g) return;
  for (size_t i = 0; i < g->n; i++) grp_free(g->g[i]);
  free(g->g);
  free(g->slot);
  sg_buf_free(&g->key);
  sg_buf_free(&g->tmp);
  free(g);
}

static uint64_t hash_bytes(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
  return h;
}

/* The leaf of path p in attributes (NULL for SQL NULL), as the filter's
 * keys read it. */
static const sg_jb_t *agg_leaf(const sg_rf_path_t *p, const sg_jb_t *attrs) {
  if (!attrs) return NULL;
  const sg_jb_t *l = sg_jb_path(attrs, (const char *const *)p->seg, p->seglen, p->nseg);
  if (!l && p->flat) l = sg_jb_get(attrs, p->flat, strlen(p->flat));
  return l;
}

static int rehash(sg_rf_agg_t *g) {
  size_t ns = g->nslot ? g->nslot * 2 : 256;
  size_t *slot = calloc(ns, sizeof *slot);
  if (!slot) return SG_ENOMEM;
  for (size_t i = 0; i < g->n; i++) {
    grp_t *x = g->g[i];
    /* the key is rebuilt the way sg_rf_agg_add builds it */
    sg_buf_reset(&g->key);
    sg_buf_append(&g->key, &x->bucket, sizeof x->bucket);
    for (int d = 0; d < SG_RF_NDIMS; d++) {
      sg_buf_puts(&g->key, x->g[d] ? x->g[d] : "");
      sg_buf_putc(&g->key, '\0');
    }
    for (int d = 0; d < g->a->nattr; d++) {
      sg_buf_putc(&g->key, x->ag[d] ? 1 : 0);
      sg_buf_puts(&g->key, x->ag[d] ? x->ag[d] : "");
      sg_buf_putc(&g->key, '\0');
    }
    size_t h = hash_bytes(g->key.data, g->key.len) % ns;
    while (slot[h]) h = (h + 1) % ns;
    slot[h] = i + 1;
  }
  free(g->slot);
  g->slot = slot;
  g->nslot = ns;
  return 0;
}

/* Whether group x has the key in g->key (bucket, column texts, attribute texts). */
static int grp_is(const sg_rf_agg_t *g, const grp_t *x, int64_t bucket, const char *const col[SG_RF_NDIMS],
                  char *const *ag) {
  if (x->bucket != bucket) return 0;
  for (int d = 0; d < SG_RF_NDIMS; d++)
    if (strcmp(x->g[d] ? x->g[d] : "", col[d] ? col[d] : "")) return 0;
  for (int d = 0; d < g->a->nattr; d++) {
    if (!x->ag[d] != !ag[d]) return 0;
    if (ag[d] && strcmp(x->ag[d], ag[d])) return 0;
  }
  return 1;
}

int sg_rf_agg_add(sg_rf_agg_t *g, int64_t start_us, int64_t end_us, int error,
                  const char *const col_in[SG_RF_NDIMS], const sg_jb_t *attributes) {
  const sg_rf_analytics_t *a = g->a;
  const char *col[SG_RF_NDIMS];
  for (int d = 0; d < SG_RF_NDIMS; d++) col[d] = (a->dims & (1u << d)) ? col_in[d] : NULL;
  /* floor(epoch / bucket) * bucket */
  int64_t s = start_us >= 0 ? start_us / 1000000 : -((-start_us + 999999) / 1000000);
  int64_t bucket = (s >= 0 ? s / a->bucket_s : -((-s + a->bucket_s - 1) / a->bucket_s)) * a->bucket_s;
  /* attribute groups: the leaf's text (#>> '{}'), NULL for none or JSON null */
  char *ag[SG_RF_MAX_GROUPS] = {0};
  int rc = 0;
  for (int d = 0; rc == 0 && d < a->nattr; d++) {
    const sg_jb_t *l = agg_leaf(&a->attr[d], attributes);
    if (!l) continue;
    int isnull;
    sg_buf_reset(&g->tmp);
    rc = sg_jb_text(l, &g->tmp, &isnull);
    if (rc == 0 && !isnull && !(ag[d] = strndup(g->tmp.data ? g->tmp.data : "", g->tmp.len))) rc = SG_ENOMEM;
  }
  sg_buf_reset(&g->key);
  rc = rc ? rc : sg_buf_append(&g->key, &bucket, sizeof bucket);
  for (int d = 0; rc == 0 && d < SG_RF_NDIMS; d++) {
    rc = sg_buf_puts(&g->key, col[d] ? col[d] : "");
    rc = rc ? rc : sg_buf_putc(&g->key, '\0');
  }
  for (int d = 0; rc == 0 && d < a->nattr; d++) {
    rc = sg_buf_putc(&g->key, ag[d] ? 1 : 0);
    rc = rc ? rc : sg_buf_puts(&g->key, ag[d] ? ag[d] : "");
    rc = rc ? rc : sg_buf_putc(&g->key, '\0');
  }
  grp_t *x = NULL;
  if (rc == 0 && g->nslot) {
    size_t h = hash_bytes(g->key.data, g->key.len) % g->nslot;
    while (g->slot[h] && !grp_is(g, g->g[g->slot[h] - 1], bucket, col, ag)) h = (h + 1) % g->nslot;
    if (g->slot[h]) x = g->g[g->slot[h] - 1];
  }
  if (rc == 0 && !x) {
    if (g->n == g->cap) {
      size_t cap = g->cap ? g->cap * 2 : 64;
      grp_t **ng = realloc(g->g, cap * sizeof *ng);
      if (!ng) rc = SG_ENOMEM;
      else g->g = ng, g->cap = cap;
    }
    if (rc == 0 && !(x = calloc(1, sizeof *x))) rc = SG_ENOMEM;
    if (rc == 0) {
      x->bucket = bucket;
      for (int d = 0; d < SG_RF_NDIMS; d++)
        if (col[d] && !(x->g[d] = strdup(col[d]))) rc = SG_ENOMEM;
      for (int d = 0; d < a->nattr; d++) x->ag[d] = ag[d], ag[d] = NULL;
      for (int m = 0; m < a->nmetric; m++) sg_jb_sum_init(&x->sum[m]);
      g->g[g->n++] = x;
      if (rc == 0 && g->n * 2 > g->nslot) rc = rehash(g);
      else if (rc == 0) {
        size_t h = hash_bytes(g->key.data, g->key.len) % g->nslot;
        while (g->slot[h]) h = (h + 1) % g->nslot;
        g->slot[h] = g->n;
      }
    }
  }
  for (int d = 0; d < SG_RF_MAX_GROUPS; d++) free(ag[d]);
  if (rc) return rc;
  x->count++;
  x->errors += error != 0;
  if (x->ndur == x->capdur) {
    size_t cap = x->capdur ? x->capdur * 2 : 16;
    double *nd = realloc(x->dur, cap * sizeof *nd);
    if (!nd) return SG_ENOMEM;
    x->dur = nd;
    x->capdur = cap;
  }
  /* PostgreSQL: ((epoch(end) - epoch(start)) * 1000)::float8, from exact
   * numerics: the µs difference divided by 1000, rounded once. */
  x->dur[x->ndur++] = (double)(end_us - start_us) / 1000.0;
  for (int m = 0; m < a->nmetric; m++) {
    const sg_jb_t *l = agg_leaf(&a->metric[m].path, attributes);
    if (!l || l->type != SG_JB_NUMBER) continue;
    if ((rc = sg_jb_sum_add(&x->sum[m], l->s, l->n))) return rc;
    x->n[m]++;
  }
  return 0;
}

static int dbl_cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* PostgreSQL's percentile_cont: lerp between the rows around p * (n - 1). */
static double percentile_cont(const double *v, size_t n, double p) {
  double row = p * (double)(n - 1);
  double first = floor(row), second = ceil(row);
  double lo = v[(size_t)first], hi = v[(size_t)second];
  return lo + (hi - lo) * (row - first);
}

static int grp_cmp(const void *pa, const void *pb, void *ctx) {
  const sg_rf_analytics_t *sort_a = ctx;
  const grp_t *x = *(grp_t *const *)pa, *y = *(grp_t *const *)pb;
  if (x->bucket != y->bucket) return x->bucket < y->bucket ? -1 : 1;
  for (int d = 0; d < SG_RF_NDIMS; d++) {
    int c = strcmp(x->g[d] ? x->g[d] : "", y->g[d] ? y->g[d] : ""); /* bytes: COLLATE "C" */
    if (c) return c;
  }
  for (int d = 0; d < sort_a->nattr; d++) {
    if (!x->ag[d] != !y->ag[d]) return x->ag[d] ? -1 : 1; /* NULLS LAST */
    int c = x->ag[d] ? strcmp(x->ag[d], y->ag[d]) : 0;
    if (c) return c;
  }
  return 0;
}

int sg_rf_agg_render(sg_rf_agg_t *g, const char *backend, sg_buf_t *out) {
  if (g->n) qsort_r(g->g, g->n, sizeof *g->g, grp_cmp, (void *)g->a);
  int rc = sg_rf_analytics_head(g->a, backend, out);
  for (size_t i = 0; rc == 0 && i < g->n; i++) {
    grp_t *x = g->g[i];
    sg_rf_arow_t r;
    memset(&r, 0, sizeof r);
    r.bucket = x->bucket;
    for (int d = 0; d < SG_RF_NDIMS; d++) {
      r.g[d] = x->g[d] ? x->g[d] : "";
      r.glen[d] = strlen(r.g[d]);
    }
    for (int d = 0; d < g->a->nattr; d++) {
      r.ag[d] = x->ag[d];
      r.aglen[d] = x->ag[d] ? strlen(x->ag[d]) : 0;
    }
    r.count = x->count;
    r.errors = x->errors;
    qsort(x->dur, x->ndur, sizeof *x->dur, dbl_cmp);
    static const double pct[3] = {0.5, 0.95, 0.99};
    for (int k = 0; k < 3; k++) r.p[k] = x->ndur ? percentile_cont(x->dur, x->ndur, pct[k]) : 0;
    for (int m = 0; m < g->a->nmetric; m++) {
      r.has[m] = x->n[m] > 0;
      r.n[m] = x->n[m];
      r.sum[m] = sg_jb_sum_value(&x->sum[m]);
    }
    rc = sg_rf_analytics_row(g->a, &r, i == 0, out);
  }
  return rc ? rc : sg_rf_analytics_tail(g->n, out);
}
