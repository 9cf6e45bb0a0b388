/* span.c - the span record: batches, ids, times, enum labels, UTF-8.
 *
 * Stands alone (buf + jansson only). See span.h for the contracts.
 */
#include "span.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "err.h"
#include "json_nest.h"

/* ---- enum labels ----------------------------------------------------------- */

static const char *const trace_type_labels[] = {
#define XX(n) #n,
    SG_TRACE_TYPE_MAP(XX)
#undef XX
};
static const char *const span_type_labels[] = {
#define XX(n) #n,
    SG_SPAN_TYPE_MAP(XX)
#undef XX
};
static const char *const span_kind_labels[] = {
#define XX(n) #n,
    SG_SPAN_KIND_MAP(XX)
#undef XX
};
static const char *const status_code_labels[] = {
#define XX(n) #n,
    SG_STATUS_CODE_MAP(XX)
#undef XX
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const char *label_of(const char *const *tab, size_t n, int v) {
  if (v < 0 || (size_t)v >= n) return NULL;
  return tab[v];
}

/* Case-insensitive exact match against the table; -1 when unknown. */
static int parse_label(const char *const *tab, size_t n, const char *s) {
  if (s == NULL) return -1;
  for (size_t i = 0; i < n; i++)
    if (strcasecmp(tab[i], s) == 0) return (int)i;
  return -1;
}

const char *sg_trace_type_label(int v) {
  return label_of(trace_type_labels, NELEM(trace_type_labels), v);
}
const char *sg_span_type_label(int v) {
  return label_of(span_type_labels, NELEM(span_type_labels), v);
}
const char *sg_span_kind_label(int v) {
  return label_of(span_kind_labels, NELEM(span_kind_labels), v);
}
const char *sg_status_code_label(int v) {
  return label_of(status_code_labels, NELEM(status_code_labels), v);
}
int sg_trace_type_parse(const char *s) {
  return parse_label(trace_type_labels, NELEM(trace_type_labels), s);
}
int sg_span_type_parse(const char *s) {
  return parse_label(span_type_labels, NELEM(span_type_labels), s);
}
int sg_span_kind_parse(const char *s) {
  return parse_label(span_kind_labels, NELEM(span_kind_labels), s);
}
int sg_status_code_parse(const char *s) {
  return parse_label(status_code_labels, NELEM(status_code_labels), s);
}

/* ---- batch ----------------------------------------------------------------- */

#define SG_REJECT_REASONS_KEPT 10

void sg_span_batch_init(sg_span_batch_t *b) {
  memset(b, 0, sizeof(*b));
}

sg_span_t *sg_span_batch_push(sg_span_batch_t *b) {
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 16;
    if (cap < b->cap || cap > ((size_t)-1) / sizeof(sg_span_t)) return NULL;
    sg_span_t *p = realloc(b->spans, cap * sizeof(sg_span_t));
    if (p == NULL) return NULL;
    b->spans = p;
    b->cap = cap;
  }
  sg_span_t *s = &b->spans[b->n++];
  memset(s, 0, sizeof(*s));
  s->trace_type = SG_NULL_ENUM;
  s->span_type = SG_NULL_ENUM;
  s->span_kind = SG_SPAN_KIND_UNSPECIFIED;
  s->status_code = SG_STATUS_CODE_UNSET;
  return s;
}

void sg_span_batch_reject(sg_span_batch_t *b, const char *fmt, ...) {
  b->rejected++;
  if (b->rejected > SG_REJECT_REASONS_KEPT) return;
  /* Best effort: a reason lost to ENOMEM still leaves the count right. */
  if (b->reject_msg.len > 0) (void)sg_buf_puts(&b->reject_msg, "; ");
  va_list ap;
  va_start(ap, fmt);
  (void)sg_buf_vprintf(&b->reject_msg, fmt, ap);
  va_end(ap);
}

size_t sg_span_batch_drop(sg_span_batch_t *b, const char *(*why)(const void *ctx, size_t i), const void *ctx) {
  size_t w = 0, n = b->n;
  for (size_t i = 0; i < n; i++) {
    const char *reason = why(ctx, i);
    if (reason == NULL) {
      if (w != i) b->spans[w] = b->spans[i];
      w++;
      continue;
    }
    char tid[33], sid[17];
    sg_hex32_format(b->spans[i].trace_id, tid);
    sg_hex16_format(b->spans[i].span_id, sid);
    sg_span_batch_reject(b, "span %s of trace %s: %s", sid, tid, reason);
    sg_span_clear(&b->spans[i]);
  }
  for (size_t i = w; i < n; i++) memset(&b->spans[i], 0, sizeof b->spans[i]);
  b->n = w;
  return n - w;
}

void sg_span_batch_free(sg_span_batch_t *b) {
  for (size_t i = 0; i < b->n; i++) sg_span_clear(&b->spans[i]);
  free(b->spans);
  sg_buf_free(&b->reject_msg);
  memset(b, 0, sizeof(*b));
}

void sg_span_clear(sg_span_t *s) {
  free(s->span_name);
  free(s->status_message);
  free(s->session_id);
  free(s->user_id);
  free(s->agent_id);
  json_decref(s->attributes);
  json_decref(s->references);
  json_decref(s->links);
  json_decref(s->hashes);
  json_decref(s->events);
  json_decref(s->resource);
  json_decref(s->scope);
  free(s->attributes_text);
  memset(s, 0, sizeof(*s));
}

static int dup_str(char **dst, const char *src) {
  *dst = NULL;
  if (src == NULL) return 0;
  *dst = strdup(src);
  return *dst ? 0 : SG_ENOMEM;
}

static int dup_json(json_t **dst, json_t *src) {
  *dst = NULL;
  if (src == NULL) return 0;
  *dst = json_deep_copy(src);
  return *dst ? 0 : SG_ENOMEM;
}

/* Deep copy: on failure dst is left cleared (nothing leaks). */
int sg_span_copy(sg_span_t *dst, const sg_span_t *src) {
  *dst = *src;
  dst->span_name = dst->status_message = dst->session_id = NULL;
  dst->user_id = dst->agent_id = NULL;
  dst->attributes = dst->references = dst->links = NULL;
  dst->hashes = dst->events = dst->resource = dst->scope = NULL;
  dst->attributes_text = NULL; /* the copy renders its own (it may be changed) */
  dst->attributes_len = 0;
  if (dup_str(&dst->span_name, src->span_name ? src->span_name : "") ||
      dup_str(&dst->status_message, src->status_message) ||
      dup_str(&dst->session_id, src->session_id) ||
      dup_str(&dst->user_id, src->user_id) ||
      dup_str(&dst->agent_id, src->agent_id) ||
      dup_json(&dst->attributes, src->attributes) ||
      dup_json(&dst->references, src->references) ||
      dup_json(&dst->links, src->links) ||
      dup_json(&dst->hashes, src->hashes) ||
      dup_json(&dst->events, src->events) ||
      dup_json(&dst->resource, src->resource) ||
      dup_json(&dst->scope, src->scope)) {
    sg_span_clear(dst);
    return SG_ENOMEM;
  }
  return 0;
}

/* ---- ids ------------------------------------------------------------------- */

static const char hexdig[] = "0123456789abcdef";

static int hexval(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Exactly 2*nbytes hex digits at s into out. */
static int unhex(const char *s, size_t nbytes, uint8_t *out) {
  for (size_t i = 0; i < nbytes; i++) {
    int hi = hexval((unsigned char)s[2 * i]), lo = hexval((unsigned char)s[2 * i + 1]);
    if (hi < 0 || lo < 0) return SG_EINVAL;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return 0;
}

int sg_id_from_bytes(const uint8_t *p, size_t n, uint8_t out[16]) {
  if (n != 16 && n != 8) return SG_EINVAL;
  uint8_t any = 0;
  for (size_t i = 0; i < n; i++) any |= p[i];
  if (!any) return SG_EINVAL;
  if (n == 16) {
    memcpy(out, p, 16);
  } else {
    memcpy(out, p, 8);
    memcpy(out + 8, p, 8);
  }
  return 0;
}

int sg_id_parse(const char *s, size_t n, uint8_t out[16]) {
  uint8_t tmp[16];
  if (s == NULL) return SG_EINVAL;
  if (n >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    s += 2;
    n -= 2;
    if (n != 32 && n != 16) return SG_EINVAL;
  }
  if (n == 32) {
    if (unhex(s, 16, tmp)) return SG_EINVAL;
  } else if (n == 16) {
    if (unhex(s, 8, tmp)) return SG_EINVAL;
    memcpy(tmp + 8, tmp, 8);
  } else if (n == 36) {
    /* 8-4-4-4-12 */
    static const unsigned char groups[] = {8, 4, 4, 4, 12};
    size_t pos = 0, o = 0;
    for (size_t g = 0; g < 5; g++) {
      if (g > 0) {
        if (s[pos] != '-') return SG_EINVAL;
        pos++;
      }
      if (unhex(s + pos, groups[g] / 2, tmp + o)) return SG_EINVAL;
      pos += groups[g];
      o += groups[g] / 2;
    }
  } else {
    return SG_EINVAL;
  }
  memcpy(out, tmp, 16);
  return 0;
}

/* Every byte's two hex digits, so each byte is one 2-byte copy (the row
 * encoders format several UUIDs per span). */
static const char hexpair[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

void sg_uuid_format(const uint8_t id[16], char out[37]) {
  /* where byte i's digits go: 8-4-4-4-12 */
  static const uint8_t at[16] = {0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};
  for (int i = 0; i < 16; i++) memcpy(out + at[i], hexpair + 2 * id[i], 2);
  out[8] = out[13] = out[18] = out[23] = '-';
  out[36] = '\0';
}

void sg_hex32_format(const uint8_t id[16], char out[33]) {
  for (int i = 0; i < 16; i++) {
    out[2 * i] = hexdig[id[i] >> 4];
    out[2 * i + 1] = hexdig[id[i] & 15];
  }
  out[32] = '\0';
}

void sg_hex16_format(const uint8_t id[16], char out[17]) {
  for (int i = 0; i < 8; i++) {
    out[2 * i] = hexdig[id[i] >> 4];
    out[2 * i + 1] = hexdig[id[i] & 15];
  }
  out[16] = '\0';
}

/* ---- times ----------------------------------------------------------------- */

#define US_PER_SEC 1000000LL
#define US_PER_DAY (86400LL * US_PER_SEC)

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil), valid for every year an int can hold. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = (unsigned)(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = (unsigned)(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m) {
  static const unsigned char dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* n decimal digits at s[*i] as a number; advances *i. -1 when not digits. */
static int64_t digits(const char *s, size_t len, size_t *i, size_t n) {
  int64_t v = 0;
  if (*i + n > len) return -1;
  for (size_t k = 0; k < n; k++) {
    unsigned char c = (unsigned char)s[*i + k];
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  *i += n;
  return v;
}

/* Accepted: YYYY-MM-DD, optionally followed by ('T'|'t'|' ') hh:mm[:ss[.f]]
 * with 1..9 fraction digits ('.' or ','), then an optional offset: Z, z,
 * +hh, +hh:mm, +hhmm (or '-'). No offset means UTC (Agenta's servers run in
 * UTC and Python reads naive times as such there). */
int sg_time_parse_iso(const char *s, size_t n, int64_t *us) {
  size_t i = 0;
  int64_t y, mo, d, hh = 0, mi = 0, ss = 0, frac = 0, off_us = 0;
  if (s == NULL) return SG_EINVAL;
  if ((y = digits(s, n, &i, 4)) < 1) return SG_EINVAL;
  if (i >= n || s[i++] != '-') return SG_EINVAL;
  if ((mo = digits(s, n, &i, 2)) < 1 || mo > 12) return SG_EINVAL;
  if (i >= n || s[i++] != '-') return SG_EINVAL;
  if ((d = digits(s, n, &i, 2)) < 1 || d > (int64_t)days_in_month(y, (unsigned)mo))
    return SG_EINVAL;
  if (i < n) {
    if (s[i] != 'T' && s[i] != 't' && s[i] != ' ') return SG_EINVAL;
    i++;
    if ((hh = digits(s, n, &i, 2)) < 0 || hh > 23) return SG_EINVAL;
    if (i >= n || s[i++] != ':') return SG_EINVAL;
    if ((mi = digits(s, n, &i, 2)) < 0 || mi > 59) return SG_EINVAL;
    if (i < n && s[i] == ':') {
      i++;
      if ((ss = digits(s, n, &i, 2)) < 0 || ss > 59) return SG_EINVAL;
      if (i < n && (s[i] == '.' || s[i] == ',')) {
        size_t nd = 0;
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
          if (++nd > 9) return SG_EINVAL;
          if (nd <= 6) frac = frac * 10 + (s[i] - '0');
          i++;
        }
        if (nd == 0) return SG_EINVAL;
        for (; nd < 6; nd++) frac *= 10;
      }
    }
    if (i < n) {
      if (s[i] == 'Z' || s[i] == 'z') {
        i++;
      } else if (s[i] == '+' || s[i] == '-') {
        int neg = s[i] == '-';
        int64_t oh, om = 0;
        i++;
        if ((oh = digits(s, n, &i, 2)) < 0 || oh > 23) return SG_EINVAL;
        if (i < n) {
          if (s[i] == ':') i++;
          if ((om = digits(s, n, &i, 2)) < 0 || om > 59) return SG_EINVAL;
        }
        off_us = (oh * 3600 + om * 60) * US_PER_SEC;
        if (neg) off_us = -off_us;
      } else {
        return SG_EINVAL;
      }
    }
  }
  if (i != n) return SG_EINVAL;
  int64_t v = days_from_civil(y, (unsigned)mo, (unsigned)d) * US_PER_DAY +
              (hh * 3600 + mi * 60 + ss) * US_PER_SEC + frac - off_us;
  if (v < SG_TIME_MIN_US || v > SG_TIME_MAX_US) return SG_EINVAL;
  *us = v;
  return 0;
}

/* Agenta's rule, by the number of significant digits of the value:
 * <= 10 seconds, 11-13 milliseconds, 14-16 microseconds, 17-19 nanoseconds. */
static int epoch_scale(uint64_t v, unsigned nd, int64_t *us) {
  if (nd <= 10) *us = (int64_t)v * US_PER_SEC;
  else if (nd <= 13) *us = (int64_t)v * 1000;
  else if (nd <= 16) *us = (int64_t)v;
  else if (nd <= 19) *us = (int64_t)(v / 1000);
  else return SG_EINVAL;
  /* No overflow: every value above is at most 10^19 ns or 10^10 s, i.e.
   * below 10^16 µs; the range is SG_TIME's. */
  if (*us < SG_TIME_MIN_US || *us > SG_TIME_MAX_US) return SG_EINVAL;
  return 0;
}

int sg_time_from_epoch_digits(const char *s, size_t n, int64_t *us) {
  uint64_t v = 0;
  unsigned nd = 0;
  if (s == NULL || n == 0) return SG_EINVAL;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < '0' || c > '9') return SG_EINVAL;
    if (nd == 0 && c == '0') continue; /* leading zeros do not count */
    if (++nd > 19) return SG_EINVAL;
    v = v * 10 + (c - '0');
  }
  return epoch_scale(v, nd ? nd : 1, us);
}

int sg_time_from_epoch_int(int64_t v, int64_t *us) {
  if (v < 0) return SG_EINVAL;
  unsigned nd = 1;
  for (int64_t t = v; t >= 10; t /= 10) nd++;
  return epoch_scale((uint64_t)v, nd, us);
}

void sg_time_format(int64_t us, char out[32]) {
  int64_t days = us / US_PER_DAY, rem = us % US_PER_DAY;
  if (rem < 0) {
    rem += US_PER_DAY;
    days--;
  }
  int64_t y;
  unsigned m, d;
  civil_from_days(days, &y, &m, &d);
  int64_t secs = rem / US_PER_SEC, frac = rem % US_PER_SEC;
  if (y >= 0 && y <= 9999) {
    /* Written by hand: snprintf was 3% of a request's CPU (two per span). */
    unsigned f[7] = {(unsigned)y, m, d, (unsigned)(secs / 3600), (unsigned)(secs / 60 % 60),
                     (unsigned)(secs % 60), (unsigned)frac};
    static const char width[7] = {4, 2, 2, 2, 2, 2, 6}, after[7] = {'-', '-', 'T', ':', ':', '.', 'Z'};
    char *o = out;
    for (int i = 0; i < 7; i++) {
      for (int k = width[i] - 1; k >= 0; k--, f[i] /= 10) o[k] = (char)('0' + f[i] % 10);
      o += width[i];
      *o++ = after[i];
    }
    *o = '\0';
    return;
  }
  /* Far outside the range the year grows (or goes negative): format into
   * room enough for any int64 and keep what fits in 32. */
  char tmp[96];
  snprintf(tmp, sizeof(tmp), "%04lld-%02u-%02uT%02d:%02d:%02d.%06dZ", (long long)y, m, d,
           (int)(secs / 3600), (int)(secs / 60 % 60), (int)(secs % 60), (int)frac);
  memcpy(out, tmp, 31);
  out[31] = '\0';
}

int64_t sg_span_expires_us(int64_t created_us, double days) {
  if (!(days > 0)) return INT64_MAX; /* also NaN */
  /* 9e18 µs is 285,000 years: a double below it converts to int64 exactly
   * enough and without undefined behaviour; anything above is never. */
  double add = days * (double)US_PER_DAY;
  if (!(add < 9e18)) return INT64_MAX;
  int64_t a = (int64_t)add; /* truncated toward zero, as ttl_plan.lua assumes */
  if (created_us > INT64_MAX - a) return INT64_MAX;
  return created_us + a;
}

/* ---- text ------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when it is not valid;
 * then *bad is the length of the maximal invalid subpart to replace with one
 * U+FFFD (Unicode's "substitution of maximal subparts" practice). */
static size_t utf8_seq(const unsigned char *p, size_t n, size_t *bad) {
  unsigned char c = p[0];
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  *bad = 1;
  if (c == 0) return 0;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) need = 1;
  else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;        /* overlong */
    else if (c == 0xED) hi = 0x9F;   /* surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;        /* overlong */
    else if (c == 0xF4) hi = 0x8F;   /* beyond U+10FFFF */
  } else return 0;                   /* C0, C1, F5..FF, stray continuation */
  for (size_t k = 1; k <= need; k++) {
    if (k >= n) return 0;
    unsigned char t = p[k];
    if (k == 1 ? (t < lo || t > hi) : (t < 0x80 || t > 0xBF)) return 0;
    *bad = k + 1;
  }
  return need + 1;
}

size_t sg_utf8_valid_len(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
  size_t i = 0, bad;
  while (i < n) {
    /* ASCII without NUL (no high bit, no zero byte), 16 bytes at a time
     * with SSE2 (every x86-64), then 8 in a word */
#ifdef __SSE2__
    const __m128i zero = _mm_setzero_si128();
    while (i + 16 <= n) {
      __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
      unsigned m = (unsigned)(_mm_movemask_epi8(v) | _mm_movemask_epi8(_mm_cmpeq_epi8(v, zero)));
      if (m) {
        i += (size_t)__builtin_ctz(m);
        goto other;
      }
      i += 16;
    }
#endif
    while (i + 8 <= n) {
      uint64_t x;
      memcpy(&x, p + i, 8);
      if ((x | ((x - ones) & ~x)) & high) break;
      i += 8;
    }
#ifdef __SSE2__
  other:
#endif
    if (i == n) break;
    size_t l = utf8_seq(p + i, n - i, &bad);
    if (l == 0) break;
    i += l;
  }
  return i;
}

char *sg_utf8_sanitize(const char *s, size_t n, int *changed) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = sg_utf8_valid_len(s, n), bad; /* most strings are clean */
  int ch = 0;
  if (changed) *changed = 0;
  if (i == n) {
    char *r = malloc(n + 1);
    if (r == NULL) return NULL;
    if (n) memcpy(r, s, n);
    r[n] = '\0';
    return r;
  }
  /* Each input byte becomes at most 3 output bytes. */
  if (n > ((size_t)-1 - 1) / 3) return NULL;
  char *r = malloc(3 * n + 1), *o = r;
  if (r == NULL) return NULL;
  memcpy(o, s, i);
  o += i;
  while (i < n) {
    size_t l = utf8_seq(p + i, n - i, &bad);
    if (l) {
      memcpy(o, p + i, l);
      o += l;
      i += l;
    } else {
      *o++ = (char)0xEF;
      *o++ = (char)0xBF;
      *o++ = (char)0xBD;
      i += bad;
      ch = 1;
    }
  }
  *o = '\0';
  if (changed) *changed = ch;
  char *shrunk = realloc(r, (size_t)(o - r) + 1);
  return shrunk ? shrunk : r;
}

int sg_span_attributes_text(const sg_span_t *cs, const char **text, size_t *len) {
  sg_span_t *s = (sg_span_t *)cs; /* span.h: a memo */
  if (s->attributes_text == NULL) {
    const json_t *res = (s->nest_attributes & SG_SPAN_NEST_RESOURCE) ? s->resource : NULL;
    sg_buf_t b = SG_BUF_INIT;
    int rc = sg_json_dump_attributes(s->attributes, res,
                                     (s->nest_attributes & SG_SPAN_NEST_ATTRS) ? SG_JSON_NEST : 0, &b);
    if (rc != 0) {
      sg_buf_free(&b);
      return rc;
    }
    s->attributes_text = b.data; /* the buffer's bytes, NUL-terminated */
    s->attributes_len = b.len;
  }
  *text = s->attributes_text;
  *len = s->attributes_len;
  return 0;
}
