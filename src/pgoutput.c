/* pgoutput.c - the logical replication stream's messages; see pgoutput.h. */
#include "pgoutput.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* ---- a bounds-checked reader ------------------------------------------------- */

typedef struct {
  const uint8_t *p, *end;
  int bad; /* a read ran past the end (sticky: the parse fails) */
} rd_t;

static int have(rd_t *r, size_t n) {
  if (r->bad || (size_t)(r->end - r->p) < n) {
    r->bad = 1;
    return 0;
  }
  return 1;
}

static uint8_t u8(rd_t *r) { return have(r, 1) ? *r->p++ : 0; }

static uint16_t u16(rd_t *r) {
  if (!have(r, 2)) return 0;
  uint16_t v = (uint16_t)(r->p[0] << 8 | r->p[1]);
  r->p += 2;
  return v;
}

static uint32_t u32(rd_t *r) {
  if (!have(r, 4)) return 0;
  uint32_t v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
  r->p += 4;
  return v;
}

static uint64_t u64(rd_t *r) {
  uint64_t hi = u32(r);
  return hi << 32 | u32(r);
}

/* A NUL-terminated string in place. */
static const char *str(rd_t *r) {
  if (r->bad) return "";
  const uint8_t *z = memchr(r->p, 0, (size_t)(r->end - r->p));
  if (z == NULL) {
    r->bad = 1;
    return "";
  }
  const char *s = (const char *)r->p;
  r->p = z + 1;
  return s;
}

static void put64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

/* ---- the replication protocol --------------------------------------------------- */

int sg_pgo_copy_parse(const void *buf, size_t len, sg_pgo_copy_t *out) {
  memset(out, 0, sizeof *out);
  rd_t r = {buf, (const uint8_t *)buf + len, 0};
  out->kind = (char)u8(&r);
  if (out->kind == 'w') {
    out->start = u64(&r);
    out->wal_end = u64(&r);
    out->clock = (int64_t)u64(&r);
    if (r.bad) return SG_EPARSE;
    out->data = r.p;
    out->len = (size_t)(r.end - r.p);
    return 0;
  }
  if (out->kind == 'k') {
    out->wal_end = u64(&r);
    out->clock = (int64_t)u64(&r);
    out->reply = u8(&r) != 0;
    return r.bad ? SG_EPARSE : 0;
  }
  return SG_EPARSE;
}

size_t sg_pgo_status_update(uint8_t out[SG_PGO_STATUS_LEN], sg_lsn_t written, sg_lsn_t flushed,
                            sg_lsn_t applied, int64_t clock, int reply) {
  out[0] = 'r';
  put64(out + 1, written);
  put64(out + 9, flushed);
  put64(out + 17, applied);
  put64(out + 25, (uint64_t)clock);
  out[33] = reply ? 1 : 0;
  return SG_PGO_STATUS_LEN;
}

/* ---- pgoutput messages ----------------------------------------------------------- */

static int grow(void **arr, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return 0;
  size_t n = *cap ? *cap : 32;
  while (n < need) n *= 2;
  void *p = realloc(*arr, n * elem);
  if (p == NULL) return SG_ENOMEM;
  *arr = p;
  *cap = n;
  return 0;
}

/* TupleData into scratch->v from index at; *n receives the column count. */
static int tuple(rd_t *r, sg_pgo_scratch_t *s, size_t at, uint16_t *n) {
  *n = u16(r);
  if (r->bad) return SG_EPARSE;
  /* Each value takes at least its kind byte: a count the message cannot
   * hold is refused before anything is allocated for it. */
  if ((size_t)(r->end - r->p) < *n) return SG_EPARSE;
  if (grow((void **)&s->v, &s->vcap, at + *n, sizeof *s->v) != 0) return SG_ENOMEM;
  for (uint16_t i = 0; i < *n; i++) {
    sg_pgo_value_t *v = &s->v[at + i];
    v->kind = (char)u8(r);
    v->p = NULL;
    v->len = 0;
    switch (v->kind) {
    case 'n':
    case 'u': break;
    case 't':
    case 'b':
      v->len = u32(r);
      if (!have(r, v->len)) return SG_EPARSE;
      v->p = (const char *)r->p;
      r->p += v->len;
      break;
    default: return SG_EPARSE;
    }
  }
  return r->bad ? SG_EPARSE : 0;
}

int sg_pgo_parse(const void *buf, size_t len, sg_pgo_msg_t *m, sg_pgo_scratch_t *s) {
  memset(m, 0, sizeof *m);
  rd_t r = {buf, (const uint8_t *)buf + len, 0};
  m->type = (char)u8(&r);
  int rc = 0;
  switch (m->type) {
  case 'B':
    m->u.begin.final_lsn = u64(&r);
    m->u.begin.commit_time = (int64_t)u64(&r);
    m->u.begin.xid = u32(&r);
    break;
  case 'C':
    m->u.commit.flags = u8(&r);
    m->u.commit.commit_lsn = u64(&r);
    m->u.commit.end_lsn = u64(&r);
    m->u.commit.commit_time = (int64_t)u64(&r);
    break;
  case 'O':
    m->u.origin.lsn = u64(&r);
    m->u.origin.name = str(&r);
    break;
  case 'R': {
    m->u.rel.oid = u32(&r);
    m->u.rel.nspname = str(&r);
    m->u.rel.relname = str(&r);
    m->u.rel.replident = (char)u8(&r);
    uint16_t n = u16(&r);
    /* a column takes at least 10 bytes: flags, "" and two int32 */
    if (r.bad || (size_t)(r.end - r.p) / 10 < n) return SG_EPARSE;
    if (grow((void **)&s->c, &s->ccap, n, sizeof *s->c) != 0) return SG_ENOMEM;
    for (uint16_t i = 0; i < n; i++) {
      s->c[i].flags = u8(&r);
      s->c[i].name = str(&r);
      s->c[i].type_oid = u32(&r);
      s->c[i].typmod = (int32_t)u32(&r);
    }
    m->u.rel.ncols = n;
    m->u.rel.cols = s->c;
    break;
  }
  case 'Y':
    m->u.type.oid = u32(&r);
    m->u.type.nspname = str(&r);
    m->u.type.name = str(&r);
    break;
  case 'I':
  case 'U':
  case 'D': {
    m->u.change.rel = u32(&r);
    char k = (char)u8(&r);
    uint16_t nold = 0, nnew = 0;
    if (m->type != 'I' && (k == 'K' || k == 'O')) {
      m->u.change.old_kind = k;
      if ((rc = tuple(&r, s, 0, &nold)) != 0) return rc;
      if (m->type == 'U') k = (char)u8(&r);
    } else if (m->type == 'D') {
      return SG_EPARSE; /* a delete always names its row */
    }
    if (m->type != 'D') {
      if (k != 'N') return SG_EPARSE;
      if ((rc = tuple(&r, s, nold, &nnew)) != 0) return rc;
    }
    /* pointers only now: the array may have moved while the tuples grew it */
    m->u.change.old_tuple.n = nold;
    m->u.change.old_tuple.v = nold ? s->v : NULL;
    m->u.change.new_tuple.n = nnew;
    m->u.change.new_tuple.v = nnew ? s->v + nold : NULL;
    break;
  }
  case 'T':
    m->u.truncate.nrels = u32(&r);
    m->u.truncate.options = u8(&r);
    if (r.bad || (size_t)(r.end - r.p) / 4 < m->u.truncate.nrels) return SG_EPARSE;
    m->u.truncate.oids = r.p;
    r.p += (size_t)m->u.truncate.nrels * 4;
    break;
  case 'M':
    m->u.message.flags = u8(&r);
    m->u.message.lsn = u64(&r);
    m->u.message.prefix = str(&r);
    m->u.message.len = u32(&r);
    if (!have(&r, m->u.message.len)) return SG_EPARSE;
    m->u.message.content = r.p;
    r.p += m->u.message.len;
    break;
  default: return SG_EPARSE;
  }
  if (r.bad || r.p != r.end) return SG_EPARSE;
  return 0;
}

void sg_pgo_scratch_free(sg_pgo_scratch_t *s) {
  free(s->v);
  free(s->c);
  memset(s, 0, sizeof *s);
}

uint32_t sg_pgo_truncate_oid(const sg_pgo_msg_t *m, uint32_t i) {
  const uint8_t *p = m->u.truncate.oids + (size_t)i * 4;
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- values and positions ---------------------------------------------------------- */

int sg_pgo_lsn_parse(const char *s, sg_lsn_t *out) {
  if (s == NULL) return SG_EPARSE;
  char *e;
  const char *slash = strchr(s, '/');
  if (slash == NULL || slash == s || slash[1] == '\0') return SG_EPARSE;
  for (const char *p = s; *p; p++)
    if (p != slash && !((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'F') || (*p >= 'a' && *p <= 'f')))
      return SG_EPARSE;
  unsigned long long hi = strtoull(s, &e, 16), lo = strtoull(slash + 1, &e, 16);
  if (slash - s > 8 || strlen(slash + 1) > 8) return SG_EPARSE;
  *out = (sg_lsn_t)hi << 32 | (sg_lsn_t)lo;
  return 0;
}

void sg_pgo_lsn_format(sg_lsn_t lsn, char out[24]) {
  snprintf(out, 24, "%" PRIX32 "/%" PRIX32, (uint32_t)(lsn >> 32), (uint32_t)lsn);
}

/* Days from 1970-01-01 to y-m-d, proleptic Gregorian (Howard Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

/* n digits at p as a number, -1 if any is not a digit. */
static long digits(const char *p, int n) {
  long v = 0;
  for (int i = 0; i < n; i++) {
    if (p[i] < '0' || p[i] > '9') return -1;
    v = v * 10 + (p[i] - '0');
  }
  return v;
}

int sg_pgo_timestamptz_us(const char *p, size_t n, int64_t *us) {
  /* YYYY-MM-DD HH:MM:SS: 19 bytes, then [.f{1,6}] and a zone [+-]HH[:MM[:SS]] */
  if (p == NULL || n < 22 || p[4] != '-' || p[7] != '-' || p[10] != ' ' || p[13] != ':' || p[16] != ':')
    return SG_EPARSE;
  long y = digits(p, 4), mo = digits(p + 5, 2), d = digits(p + 8, 2);
  long h = digits(p + 11, 2), mi = digits(p + 14, 2), s = digits(p + 17, 2);
  if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 || s < 0 ||
      s > 59)
    return SG_EPARSE;
  size_t i = 19;
  long frac = 0;
  if (p[i] == '.') {
    int k = 0;
    for (i++; i < n && k < 6 && p[i] >= '0' && p[i] <= '9'; i++, k++) frac = frac * 10 + (p[i] - '0');
    if (k == 0) return SG_EPARSE;
    for (; k < 6; k++) frac *= 10;
  }
  if (i + 3 > n || (p[i] != '+' && p[i] != '-')) return SG_EPARSE;
  int sign = p[i] == '-' ? -1 : 1;
  long zh = digits(p + i + 1, 2), zm = 0, zs = 0;
  i += 3;
  if (i < n && p[i] == ':') {
    if (i + 3 > n || (zm = digits(p + i + 1, 2)) < 0) return SG_EPARSE;
    i += 3;
    if (i < n && p[i] == ':') {
      if (i + 3 > n || (zs = digits(p + i + 1, 2)) < 0) return SG_EPARSE;
      i += 3;
    }
  }
  if (zh < 0 || zh > 15 || zm > 59 || zs > 59 || i != n) return SG_EPARSE;
  int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
  int64_t secs = days * 86400 + h * 3600 + mi * 60 + s - sign * (zh * 3600 + zm * 60 + zs);
  *us = secs * 1000000 + frac;
  return 0;
}
