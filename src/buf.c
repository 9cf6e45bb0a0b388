#include "buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "err.h"

int sg_buf_reserve(sg_buf_t *b, size_t extra) {
  size_t need = b->len + extra + 1;
  if (need < b->len) return SG_ENOMEM; /* overflow */
  if (need <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need) {
    if (cap > ((size_t)-1) / 2) { cap = need; break; }
    cap *= 2;
  }
  char *p = realloc(b->data, cap);
  if (p == NULL) return SG_ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int sg_buf_puts(sg_buf_t *b, const char *s) { return sg_buf_append(b, s, strlen(s)); }

int sg_buf_vprintf(sg_buf_t *b, const char *fmt, va_list ap) {
  va_list cp;
  va_copy(cp, ap);
  int n = vsnprintf(NULL, 0, fmt, cp);
  va_end(cp);
  if (n < 0) return SG_EINVAL;
  if (sg_buf_reserve(b, (size_t)n) != 0) return SG_ENOMEM;
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  b->len += (size_t)n;
  return 0;
}

int sg_buf_printf(sg_buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = sg_buf_vprintf(b, fmt, ap);
  va_end(ap);
  return rc;
}

/* Bytes of s before the first below 0x20, '\\' or (with stop_quote) '"'
 * (and, with stop_high, the first from 0x80 up): 16 at a time with SSE2
 * (every x86-64), then 8 at a time in a word. */
static inline size_t plain_run(const char *s, size_t n, int stop_high, int stop_quote) {
  size_t i = 0;
#ifdef __SSE2__
  const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), c1f = _mm_set1_epi8(0x1f);
  for (; i + 16 <= n; i += 16) {
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
    /* min(v, 0x1f) == v: a byte below 0x20 (unsigned) */
    __m128i hit = _mm_or_si128(_mm_cmpeq_epi8(_mm_min_epu8(v, c1f), v), _mm_cmpeq_epi8(v, bslash));
    if (stop_quote) hit = _mm_or_si128(hit, _mm_cmpeq_epi8(v, quote));
    unsigned m = (unsigned)_mm_movemask_epi8(hit);
    if (stop_high) m |= (unsigned)_mm_movemask_epi8(v);
    if (m) return i + (size_t)__builtin_ctz(m);
  }
#endif
  /* what is left, or everything without SSE2 */
  const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
  for (; i + 8 <= n; i += 8) {
    uint64_t x, q, e;
    memcpy(&x, s + i, 8);
    q = stop_quote ? x ^ (ones * '"') : ~(uint64_t)0;
    e = x ^ (ones * '\\');
    /* a byte below 0x20, or equal to '"' or '\\' (zero after the xor) */
    if ((((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((e - ones) & ~e) | (stop_high ? x : 0)) & high) break;
  }
  for (; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == '\\' || (stop_quote && c == '"') || (stop_high && c >= 0x80)) break;
  }
  return i;
}

size_t sg_json_plain_len(const char *s, size_t n) { return plain_run(s, n, 0, 1); }

size_t sg_json_ascii_plain_len(const char *s, size_t n) { return plain_run(s, n, 1, 1); }

size_t sg_copy_plain_len(const char *s, size_t n) { return plain_run(s, n, 0, 0); }

int sg_buf_json_escape_ex(sg_buf_t *b, const char *s, size_t n, int flags) {
  const char *hex = (flags & SG_JSON_ESC_JANSSON) ? "0123456789ABCDEF" : "0123456789abcdef";
  int short_bf = flags & SG_JSON_ESC_JANSSON;
  /* Room for the text as it is (and a closing quote), so plain runs are
   * copied without a check; each escape makes room again for the rest. */
  if (sg_buf_reserve(b, n + 2) != 0) return SG_ENOMEM;
  for (size_t i = 0;;) {
    size_t run = sg_json_plain_len(s + i, n - i);
    if (run) memcpy(b->data + b->len, s + i, run);
    b->len += run;
    b->data[b->len] = '\0';
    if ((i += run) == n) return 0;
    unsigned char c = (unsigned char)s[i++];
    char esc[6] = {'\\', 0, 0, 0, 0, 0};
    size_t elen = 2;
    switch (c) {
    case '"': esc[1] = '"'; break;
    case '\\': esc[1] = '\\'; break;
    case '\n': esc[1] = 'n'; break;
    case '\r': esc[1] = 'r'; break;
    case '\t': esc[1] = 't'; break;
    default:
      if (short_bf && (c == '\b' || c == '\f')) {
        esc[1] = c == '\b' ? 'b' : 'f';
        break;
      }
      esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
      esc[4] = hex[c >> 4]; esc[5] = hex[c & 15];
      elen = 6;
    }
    if (sg_buf_reserve(b, elen + (n - i) + 2) != 0) return SG_ENOMEM;
    memcpy(b->data + b->len, esc, elen);
    b->len += elen;
  }
}

int sg_buf_json_escape(sg_buf_t *b, const char *s, size_t n) { return sg_buf_json_escape_ex(b, s, n, 0); }

void sg_buf_reset(sg_buf_t *b) {
  b->len = 0;
  if (b->data) b->data[0] = '\0';
}

void sg_buf_free(sg_buf_t *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

char *sg_buf_detach(sg_buf_t *b, size_t *len) {
  char *p = b->data;
  if (len) *len = b->len;
  b->data = NULL;
  b->len = b->cap = 0;
  return p;
}
