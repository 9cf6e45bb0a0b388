/* read_span.c - one span row of the read API: the row PostgreSQL returns as
 * Agenta's span JSON, and the keyset cursor that points just past a row.
 * See read_span.h. */
#include "read_span.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "span.h"

/* ---- cursor ------------------------------------------------------------------- */

static const char hexd[] = "0123456789abcdef";

static void put_hex(char *out, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hexd[p[i] >> 4];
    out[2 * i + 1] = hexd[p[i] & 15];
  }
}

static int unhex(const char *s, uint8_t *out, size_t n) {
  for (size_t i = 0; i < 2 * n; i++) {
    int c = (unsigned char)s[i], v;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else return -1;
    if (i % 2 == 0) out[i / 2] = (uint8_t)(v << 4);
    else out[i / 2] |= (uint8_t)v;
  }
  return 0;
}

void sg_rf_cursor_format(int descending, int64_t start_us, const uint8_t trace_id[16],
                         const uint8_t span_id[16], char out[SG_RF_CURSOR_LEN + 1]) {
  uint8_t t[8];
  uint64_t u = (uint64_t)start_us;
  for (int i = 7; i >= 0; i--, u >>= 8) t[i] = (uint8_t)u;
  out[0] = 'c';
  out[1] = '1';
  out[2] = descending ? 'd' : 'a';
  put_hex(out + 3, t, 8);
  put_hex(out + 19, trace_id, 16);
  put_hex(out + 51, span_id, 16);
  out[SG_RF_CURSOR_LEN] = '\0';
}

int sg_rf_cursor_parse(const char *s, int *descending, int64_t *start_us, uint8_t trace_id[16],
                       uint8_t span_id[16]) {
  uint8_t t[8];
  if (strlen(s) != SG_RF_CURSOR_LEN || s[0] != 'c' || s[1] != '1' || (s[2] != 'd' && s[2] != 'a'))
    return SG_EINVAL;
  if (unhex(s + 3, t, 8) || unhex(s + 19, trace_id, 16) || unhex(s + 51, span_id, 16)) return SG_EINVAL;
  uint64_t u = 0;
  for (int i = 0; i < 8; i++) u = u << 8 | t[i];
  if ((int64_t)u < SG_TIME_MIN_US || (int64_t)u > SG_TIME_MAX_US) return SG_EINVAL;
  *descending = s[2] == 'd';
  *start_us = (int64_t)u;
  return 0;
}

/* ---- rows ----------------------------------------------------------------------- */

static int put_str(sg_buf_t *b, const char *name, const char *v) {
  int rc = sg_buf_printf(b, ",\"%s\":\"", name);
  rc = rc ? rc : sg_buf_json_escape(b, v, strlen(v));
  return rc ? rc : sg_buf_putc(b, '"');
}

static int put_time_us(sg_buf_t *b, const char *name, const char *v) {
  char *end;
  long long us = strtoll(v, &end, 10);
  char iso[32];
  if (*end || us < SG_TIME_MIN_US || us > SG_TIME_MAX_US) return SG_EINVAL;
  sg_time_format(us, iso);
  return sg_buf_printf(b, ",\"%s\":\"%s\"", name, iso);
}

static int put_id_sep(sg_buf_t *b, const char *sep, const char *name, const char *v, int span) {
  uint8_t id[16];
  char h[33];
  if (sg_id_parse(v, strlen(v), id) != 0) return SG_EINVAL;
  put_hex(h, id, 16);
  h[32] = '\0';
  return sg_buf_printf(b, "%s\"%s\":\"%s\"", sep, name, span ? h + 16 : h);
}

/* 32 hex (trace) or the last 16 hex (span, Agenta's UUID.hex[16:]). */
static int put_id(sg_buf_t *b, const char *name, const char *v, int span) {
  return put_id_sep(b, ",", name, v, span);
}

static int put_lower(sg_buf_t *b, const char *name, const char *v) {
  int rc = sg_buf_printf(b, ",\"%s\":\"", name);
  for (; rc == 0 && *v; v++) rc = sg_buf_putc(b, (char)tolower((unsigned char)*v));
  return rc ? rc : sg_buf_putc(b, '"');
}

int sg_rf_span_json(const char *const *v, sg_buf_t *out) {
  size_t start = out->len;
  int rc = 0;
  if (!v[SG_RF_TRACE_ID] || !v[SG_RF_SPAN_ID] || !v[SG_RF_START_US] || !v[SG_RF_END_US]) return SG_EINVAL;
  rc = sg_buf_putc(out, '{');
  rc = rc ? rc : put_id_sep(out, "", "trace_id", v[SG_RF_TRACE_ID], 0);
  rc = rc ? rc : put_id(out, "span_id", v[SG_RF_SPAN_ID], 1);
  if (rc == 0 && v[SG_RF_PARENT_ID]) rc = put_id(out, "parent_id", v[SG_RF_PARENT_ID], 1);
  if (rc == 0 && v[SG_RF_TRACE_TYPE]) rc = put_lower(out, "trace_type", v[SG_RF_TRACE_TYPE]);
  if (rc == 0 && v[SG_RF_SPAN_TYPE]) rc = put_lower(out, "span_type", v[SG_RF_SPAN_TYPE]);
  if (rc == 0 && v[SG_RF_SPAN_KIND]) rc = put_str(out, "span_kind", v[SG_RF_SPAN_KIND]);
  if (rc == 0 && v[SG_RF_SPAN_NAME]) rc = put_str(out, "span_name", v[SG_RF_SPAN_NAME]);
  rc = rc ? rc : put_time_us(out, "start_time", v[SG_RF_START_US]);
  rc = rc ? rc : put_time_us(out, "end_time", v[SG_RF_END_US]);
  if (rc == 0 && v[SG_RF_STATUS_CODE]) rc = put_str(out, "status_code", v[SG_RF_STATUS_CODE]);
  if (rc == 0 && v[SG_RF_STATUS_MESSAGE]) rc = put_str(out, "status_message", v[SG_RF_STATUS_MESSAGE]);
  static const struct { int col; const char *name; } js[] = {
      {SG_RF_ATTRIBUTES, "attributes"}, {SG_RF_REFERENCES, "references"}, {SG_RF_LINKS, "links"},
      {SG_RF_HASHES, "hashes"}, {SG_RF_EVENTS, "events"}};
  for (size_t i = 0; rc == 0 && i < sizeof js / sizeof js[0]; i++)
    if (v[js[i].col]) rc = sg_buf_printf(out, ",\"%s\":%s", js[i].name, v[js[i].col]);
  if (rc == 0 && v[SG_RF_SESSION_ID]) rc = put_str(out, "session_id", v[SG_RF_SESSION_ID]);
  if (rc == 0 && v[SG_RF_USER_ID]) rc = put_str(out, "user_id", v[SG_RF_USER_ID]);
  if (rc == 0 && v[SG_RF_AGENT_ID]) rc = put_str(out, "agent_id", v[SG_RF_AGENT_ID]);
  if (rc == 0 && v[SG_RF_CREATED_US]) rc = put_time_us(out, "created_at", v[SG_RF_CREATED_US]);
  if (rc == 0 && v[SG_RF_UPDATED_US]) rc = put_time_us(out, "updated_at", v[SG_RF_UPDATED_US]);
  if (rc == 0 && v[SG_RF_DELETED_US]) rc = put_time_us(out, "deleted_at", v[SG_RF_DELETED_US]);
  if (rc == 0 && v[SG_RF_CREATED_BY]) rc = put_str(out, "created_by_id", v[SG_RF_CREATED_BY]);
  if (rc == 0 && v[SG_RF_UPDATED_BY]) rc = put_str(out, "updated_by_id", v[SG_RF_UPDATED_BY]);
  if (rc == 0 && v[SG_RF_DELETED_BY]) rc = put_str(out, "deleted_by_id", v[SG_RF_DELETED_BY]);
  rc = rc ? rc : sg_buf_putc(out, '}');
  if (rc != 0 && out->data) {
    out->len = start;
    out->data[start] = '\0';
  }
  return rc;
}
