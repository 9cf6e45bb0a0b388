/* inflate.c - bounded gzip / zlib / raw deflate decompression (see inflate.h). */
#include "inflate.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "err.h"

int sg_encoding_parse(const char *s, size_t n) {
  if (s == NULL) return SG_ENC_IDENTITY;
  while (n > 0 && (*s == ' ' || *s == '\t')) s++, n--;
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
  if (n == 0) return SG_ENC_IDENTITY;
  if (n == 8 && strncasecmp(s, "identity", 8) == 0) return SG_ENC_IDENTITY;
  if (n == 4 && strncasecmp(s, "gzip", 4) == 0) return SG_ENC_GZIP;
  if (n == 6 && strncasecmp(s, "x-gzip", 6) == 0) return SG_ENC_GZIP;
  if (n == 7 && strncasecmp(s, "deflate", 7) == 0) return SG_ENC_DEFLATE;
  return -1;
}

/* A zlib (RFC 1950) header: deflate method, window <= 32K, no preset
 * dictionary, and the FCHECK bits making CMF*256+FLG a multiple of 31. */
static int zlib_header(const uint8_t *p, size_t n) {
  if (n < 2) return 0;
  if ((p[0] & 0x0f) != 8 || (p[0] >> 4) > 7) return 0;
  if (p[1] & 0x20) return 0;
  return ((unsigned)p[0] << 8 | p[1]) % 31 == 0;
}

static int all_zero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

typedef struct {
  sg_inflate_grow_cb cb;
  void *arg;
} budget_t;

/* Grow out so that at least need bytes (plus NUL) fit, never beyond limit
 * bytes (plus NUL): the buffer's own doubling could allocate twice max_out.
 * The budget is asked for the growth first. */
static int grow(sg_buf_t *out, size_t need, size_t limit, const budget_t *bg) {
  if (need + 1 <= out->cap) return 0;
  size_t cap = out->cap * 2;
  if (cap < need + 1) cap = need + 1;
  if (cap < 16384) cap = 16384;
  if (cap > limit + 1) cap = limit + 1;
  if (bg->cb != NULL) {
    int rc = bg->cb(bg->arg, cap - out->cap);
    if (rc != 0) return rc;
  }
  char *d = realloc(out->data, cap);
  if (d == NULL) return SG_ENOMEM;
  out->data = d;
  out->cap = cap;
  return 0;
}

/* Inflate with the given zlib windowBits; gzip allows further members. */
static int run(const uint8_t *p, size_t n, int wbits, int gzip, size_t max_out,
               sg_buf_t *out, const budget_t *bg) {
  z_stream zs;
  const uint8_t *end = p + n;
  size_t start = out->len, limit = start + max_out;
  int rc = 0;
  if (max_out > SIZE_MAX - start - 1) limit = SIZE_MAX - 1;
  memset(&zs, 0, sizeof(zs));
  if (inflateInit2(&zs, wbits) != Z_OK) return SG_ENOMEM;
  zs.next_in = (Bytef *)p;
  for (;;) {
    size_t rem = (size_t)(end - zs.next_in);
    zs.avail_in = rem > (1u << 30) ? (1u << 30) : (uInt)rem;
    uint8_t probe;
    size_t room;
    if (out->len >= limit) {
      /* Full: one more byte of output means the body is too big. */
      zs.next_out = &probe;
      zs.avail_out = 1;
      room = 1;
    } else {
      size_t want = out->len + (out->len - start < 65536 ? 65536 : out->len - start);
      if (want > limit || want < out->len) want = limit;
      if ((rc = grow(out, want, limit, bg))) break;
      room = out->cap - 1 - out->len; /* the buffer may have been bigger already */
      if (room > limit - out->len) room = limit - out->len;
      if (room > (1u << 30)) room = 1u << 30;
      zs.next_out = (Bytef *)out->data + out->len;
      zs.avail_out = (uInt)room;
    }
    int zr = inflate(&zs, Z_NO_FLUSH);
    size_t made = room - zs.avail_out;
    if (out->len >= limit) {
      if (made) {
        rc = SG_ETOOBIG;
        break;
      }
    } else {
      out->len += made;
    }
    if (zr == Z_STREAM_END) {
      rem = (size_t)(end - zs.next_in);
      if (rem == 0 || all_zero(zs.next_in, rem)) break; /* zero padding is tolerated */
      if (gzip && rem >= 2 && zs.next_in[0] == 0x1f && zs.next_in[1] == 0x8b) {
        if (inflateReset(&zs) != Z_OK) {
          rc = SG_EPARSE;
          break;
        }
        continue; /* next member */
      }
      rc = SG_EPARSE; /* trailing garbage */
      break;
    }
    if (zr == Z_MEM_ERROR) {
      rc = SG_ENOMEM;
      break;
    }
    if (zr == Z_BUF_ERROR) {
      /* No progress: out of input (truncated) or, with room left, stuck. */
      if (zs.next_in == end || zs.avail_out > 0) {
        rc = SG_EPARSE;
        break;
      }
      continue;
    }
    if (zr != Z_OK) { /* Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR */
      rc = SG_EPARSE;
      break;
    }
  }
  inflateEnd(&zs);
  if (rc != 0) out->len = start;
  if (out->data) out->data[out->len] = '\0';
  return rc;
}

int sg_encoding_resolve(const uint8_t *p, size_t n, int encoding) {
  if (encoding != SG_ENC_AUTO) return encoding;
  if (n >= 2 && p[0] == 0x1f && p[1] == 0x8b) return SG_ENC_GZIP;
  if (n >= 2 && p[0] == 0x78 && zlib_header(p, n)) return SG_ENC_DEFLATE;
  return SG_ENC_IDENTITY;
}

int sg_inflate_ex(const uint8_t *p, size_t n, int encoding, size_t max_out, sg_buf_t *out,
                  sg_inflate_grow_cb grow_cb, void *arg) {
  const budget_t bg = {grow_cb, arg};
  switch (sg_encoding_resolve(p, n, encoding)) {
  case SG_ENC_IDENTITY:
    if (n > max_out) return SG_ETOOBIG;
    if (grow_cb != NULL && out->len + n + 1 > out->cap) {
      size_t cap = out->len + n + 1;
      int rc = grow_cb(arg, cap - out->cap);
      if (rc != 0) return rc;
      char *d = realloc(out->data, cap);
      if (d == NULL) return SG_ENOMEM;
      out->data = d;
      out->cap = cap;
    }
    return sg_buf_append(out, p, n);
  case SG_ENC_GZIP:
    if (n < 2 || p[0] != 0x1f || p[1] != 0x8b) return SG_EPARSE;
    return run(p, n, 16 + MAX_WBITS, 1, max_out, out, &bg);
  case SG_ENC_DEFLATE:
    /* HTTP's "deflate" is zlib-wrapped; accept raw deflate too (also when
     * raw data happens to start with two bytes that pass as a zlib header). */
    if (zlib_header(p, n)) {
      int rc = run(p, n, MAX_WBITS, 0, max_out, out, &bg);
      if (rc != SG_EPARSE) return rc;
    }
    return run(p, n, -MAX_WBITS, 0, max_out, out, &bg);
  default:
    return SG_EINVAL;
  }
}
