/* read_analytics.c - GET /v1/analytics/spans: the query string parsed, and
 * the same aggregate as a PostgreSQL statement over `spans` or a ClickHouse
 * one over the materialized `spans_analytics`. See read_analytics.h. */
#include "read_analytics.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ch.h"
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

int sg_rf_analytics_parse(const char *query, int64_t now_s, sg_rf_analytics_t *a, sg_buf_t *err) {
  sg_buf_t val = SG_BUF_INIT;
  char tmp[80];
  int rc = 0, has_from = 0, has_to = 0;
  int64_t from_us = 0, to_us = 0;
  a->bucket_s = 3600;
  a->dims = 0;
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
      const char *g = v;
      while (*g) {
        const char *comma = strchr(g, ',');
        size_t gl = comma ? (size_t)(comma - g) : strlen(g);
        int found = -1;
        for (int i = 0; i < SG_RF_NDIMS; i++)
          if (strlen(sg_rf_dims[i]) == gl && !memcmp(sg_rf_dims[i], g, gl)) found = i;
        if (found < 0 && gl) {
          char *name = strndup(g, gl);
          rc = sg__rf_fail(err, "group_by",
                           "unknown dimension '%s' (known: trace_type, span_type, span_kind, span_name)",
                           name ? sg__rf_shown(name, tmp) : "?");
          free(name);
          break;
        }
        if (found >= 0) a->dims |= 1u << found;
        g = comma ? comma + 1 : g + gl;
      }
    } else if (kn) {
      char *name = strndup(p, kn);
      rc = sg__rf_fail(err, "query", "unknown parameter '%s' (known: from, to, bucket, group_by)",
                       name ? sg__rf_shown(name, tmp) : "?");
      free(name);
    }
#undef KEY
    p = amp ? amp + 1 : p + n;
  }
  sg_buf_free(&val);
  if (rc) return rc;
  /* Whole minutes: the ClickHouse aggregate keeps minutes, and both stores
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

int sg_rf_analytics_pg_sql(const sg_rf_analytics_t *a, sg_buf_t *out) {
  int rc = sg_buf_puts(out, "SELECT (floor(extract(epoch from start_time) / $2::int8) * $2::int8)::int8");
  for (int i = 0; rc == 0 && i < SG_RF_NDIMS; i++)
    if (a->dims & (1u << i)) rc = sg_buf_printf(out, ", coalesce(%s::text, '') COLLATE \"C\"", sg_rf_dims[i]);
  rc = rc ? rc : sg_buf_puts(out,
      ", count(*), count(*) FILTER (WHERE status_code = 'STATUS_CODE_ERROR'),"
      " percentile_cont(ARRAY[0.5, 0.95, 0.99]::float8[]) WITHIN GROUP (ORDER BY"
      " ((extract(epoch from end_time) - extract(epoch from start_time)) * 1000)::float8)"
      " FROM spans WHERE project_id = $1::uuid AND start_time >= $3::timestamptz"
      " AND start_time < $4::timestamptz GROUP BY 1");
  int k = 2;
  for (int i = 0; rc == 0 && i < SG_RF_NDIMS; i++)
    if (a->dims & (1u << i)) rc = sg_buf_printf(out, ", %d", k++);
  rc = rc ? rc : sg_buf_puts(out, " ORDER BY 1");
  k = 2;
  for (int i = 0; rc == 0 && i < SG_RF_NDIMS; i++)
    if (a->dims & (1u << i)) rc = sg_buf_printf(out, ", %d", k++);
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
  return 0;
}

int sg_rf_analytics_ch_sql(const sg_rf_analytics_t *a, const uint8_t project_id[16],
                           const char *database, sg_buf_t *out) {
  char pid[37];
  sg_uuid_format(project_id, pid);
  int rc = sg_buf_printf(out, "SELECT toUInt32(intDiv(toUInt32(minute), %" PRId64 ") * %" PRId64 ") AS b",
                         a->bucket_s, a->bucket_s);
  for (int i = 0; rc == 0 && i < SG_RF_NDIMS; i++)
    if (a->dims & (1u << i)) rc = sg_buf_printf(out, ", %s", sg_rf_dims[i]);
  rc = rc ? rc : sg_buf_puts(out, ", uniqExactMerge(spans), uniqExactIfMerge(errors),"
                                  " quantilesMerge(0.5, 0.95, 0.99)(durations_ms) FROM ");
  rc = rc ? rc : sg_ch_quote_ident(out, database);
  rc = rc ? rc : sg_buf_printf(out, ".spans_analytics WHERE project_id = toUUID('%s')"
                               " AND minute >= toDateTime(%" PRId64 ") AND minute < toDateTime(%" PRId64 ")"
                               " GROUP BY b", pid, a->from_s, a->to_s);
  for (int i = 0; rc == 0 && i < SG_RF_NDIMS; i++)
    if (a->dims & (1u << i)) rc = sg_buf_printf(out, ", %s", sg_rf_dims[i]);
  rc = rc ? rc : sg_buf_puts(out, " ORDER BY b");
  for (int i = 0; rc == 0 && i < SG_RF_NDIMS; i++)
    if (a->dims & (1u << i)) rc = sg_buf_printf(out, ", %s", sg_rf_dims[i]);
  return rc ? rc : sg_buf_puts(out, " FORMAT JSONCompact");
}
