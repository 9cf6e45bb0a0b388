/* read_jsonb.c - jsonb's rules over JSON text (see read_jsonb.h).
 *
 * The references are PostgreSQL 15's src/backend/utils/adt/jsonb.c (output),
 * jsonb_util.c (key order, containment, equality), jsonfuncs.c (#>, ->) and
 * numeric.c (a JSON number is a numeric: its text is numeric's output).
 */
#include "read_jsonb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

#define MAX_DEPTH 4096
#define NUMERIC_MAX_EXP 1000 /* numeric_in refuses exponents beyond this */

/* ---- arena -------------------------------------------------------------------- */

typedef struct chunk_s {
  struct chunk_s *next;
  size_t used, cap;
  max_align_t data[];
} chunk_t;

struct sg_jb_doc_s {
  chunk_t *head;
  sg_jb_t root;
};

static void *arena_alloc(sg_jb_doc_t *d, size_t n) {
  n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
  chunk_t *c = d->head;
  if (!c || c->cap - c->used < n) {
    size_t cap = n > 16384 ? n : 16384;
    c = malloc(sizeof *c + cap);
    if (!c) return NULL;
    c->cap = cap;
    c->used = 0;
    c->next = d->head;
    d->head = c;
  }
  void *p = (char *)c->data + c->used;
  c->used += n;
  return p;
}

void sg_jb_free(sg_jb_doc_t *d) {
  if (!d) return;
  chunk_t *c = d->head;
  while (c) {
    chunk_t *n = c->next;
    free(c);
    c = n;
  }
  free(d);
}

/* ---- numbers ---------------------------------------------------------------------- */

/* A JSON number split into its decimal parts: the significant digits
 * (leading zeros dropped, trailing kept), and where the decimal point goes
 * relative to them (point = number of digits before it; may be <= 0 or
 * beyond ndig). scale is numeric's display scale (fraction digits shown). */
typedef struct {
  int neg;
  const char *dig[2]; /* the integer part's and the fraction's digit runs */
  size_t dlen[2];
  long exp;
  long scale;
} num_t;

/* Parses a JSON number at s[0..n) exactly (no trailing bytes). 0 or SG_EINVAL. */
static int num_parse(const char *s, size_t n, num_t *o) {
  size_t i = 0;
  memset(o, 0, sizeof *o);
  if (i < n && s[i] == '-') o->neg = 1, i++;
  size_t a = i;
  while (i < n && s[i] >= '0' && s[i] <= '9') i++;
  if (i == a) return SG_EINVAL;
  if (i - a > 1 && s[a] == '0') return SG_EINVAL;
  o->dig[0] = s + a;
  o->dlen[0] = i - a;
  if (i < n && s[i] == '.') {
    size_t f = ++i;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    if (i == f) return SG_EINVAL;
    o->dig[1] = s + f;
    o->dlen[1] = i - f;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    int eneg = 0;
    if (i < n && (s[i] == '+' || s[i] == '-')) eneg = s[i++] == '-';
    size_t e0 = i;
    long e = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
      if (e < 100000) e = e * 10 + (s[i] - '0');
      i++;
    }
    if (i == e0) return SG_EINVAL;
    o->exp = eneg ? -e : e;
  }
  if (i != n) return SG_EINVAL;
  if (o->exp > NUMERIC_MAX_EXP || o->exp < -NUMERIC_MAX_EXP) return SG_EINVAL;
  o->scale = (long)o->dlen[1] - o->exp;
  if (o->scale < 0) o->scale = 0;
  return 0;
}

/* Digit k of the whole digit string (integer part then fraction), '0'
 * outside it. */
static char num_digit(const num_t *o, long k) {
  if (k < 0) return '0';
  if ((size_t)k < o->dlen[0]) return o->dig[0][k];
  k -= (long)o->dlen[0];
  if ((size_t)k < o->dlen[1]) return o->dig[1][k];
  return '0';
}

/* Digit at decimal position p (p = 0 the units, 1 tens, -1 tenths). */
static char num_at(const num_t *o, long p) {
  long point = (long)o->dlen[0] + o->exp; /* digits before the point */
  return num_digit(o, point - 1 - p);
}

static int num_is_zero(const num_t *o) {
  for (int h = 0; h < 2; h++)
    for (size_t i = 0; i < o->dlen[h]; i++)
      if (o->dig[h][i] != '0') return 0;
  return 1;
}

/* Highest decimal position holding a nonzero digit; LONG_MIN-ish when zero. */
static long num_top(const num_t *o) {
  long point = (long)o->dlen[0] + o->exp, k = 0;
  for (int h = 0; h < 2; h++)
    for (size_t i = 0; i < o->dlen[h]; i++, k++)
      if (o->dig[h][i] != '0') return point - 1 - k;
  return -1000000;
}

static long num_bottom(const num_t *o) { /* lowest position with a digit written */
  long point = (long)o->dlen[0] + o->exp;
  return point - (long)(o->dlen[0] + o->dlen[1]);
}

/* numeric_out of the number: sign only when nonzero, at least "0" before
 * the point, exactly `scale` digits after it. */
static int num_render(const num_t *o, sg_buf_t *b) {
  int zero = num_is_zero(o);
  int rc = 0;
  if (o->neg && !zero) rc = sg_buf_putc(b, '-');
  long top = zero ? 0 : num_top(o);
  if (top < 0) top = 0;
  for (long p = top; rc == 0 && p >= 0; p--) rc = sg_buf_putc(b, num_at(o, p));
  if (rc == 0 && o->scale > 0) {
    rc = sg_buf_putc(b, '.');
    for (long p = -1; rc == 0 && p >= -o->scale; p--) rc = sg_buf_putc(b, num_at(o, p));
  }
  return rc;
}

static int num_cmp(const num_t *a, const num_t *b) {
  int za = num_is_zero(a), zb = num_is_zero(b);
  int sa = za ? 0 : a->neg ? -1 : 1, sb = zb ? 0 : b->neg ? -1 : 1;
  if (sa != sb) return sa < sb ? -1 : 1;
  if (sa == 0) return 0;
  long ta = num_top(a), tb = num_top(b);
  int mag;
  if (ta != tb) mag = ta < tb ? -1 : 1;
  else {
    long lo = num_bottom(a) < num_bottom(b) ? num_bottom(a) : num_bottom(b);
    mag = 0;
    for (long p = ta; p >= lo && mag == 0; p--) {
      char x = num_at(a, p), y = num_at(b, p);
      if (x != y) mag = x < y ? -1 : 1;
    }
  }
  return sa < 0 ? -mag : mag;
}

int sg_jb_num_cmp(const char *a, size_t na, const char *b, size_t nb) {
  num_t x, y;
  if (num_parse(a, na, &x) || num_parse(b, nb, &y)) return 0;
  return num_cmp(&x, &y);
}

/* ---- parsing ----------------------------------------------------------------------- */

typedef struct {
  sg_jb_doc_t *d;
  const char *p, *end;
  sg_buf_t tmp;
  int depth;
} parser_t;

static void skip_ws(parser_t *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static char *arena_dup(sg_jb_doc_t *d, const char *s, size_t n) {
  char *c = arena_alloc(d, n + 1);
  if (!c) return NULL;
  memcpy(c, s, n);
  c[n] = '\0';
  return c;
}

static int hex4(const char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    int c = (unsigned char)p[i], d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return -1;
    v = v << 4 | (unsigned)d;
  }
  *out = v;
  return 0;
}

static int put_utf8(sg_buf_t *b, unsigned cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) u[0] = (char)cp, n = 1;
  else if (cp < 0x800) u[0] = (char)(0xc0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
  else if (cp < 0x10000)
    u[0] = (char)(0xe0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 0x3f)), u[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
  else
    u[0] = (char)(0xf0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 0x3f)),
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), u[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
  return sg_buf_append(b, u, n);
}

/* A string at ps->p (on the opening quote), decoded into the arena. */
static int parse_string(parser_t *ps, const char **out, uint32_t *len) {
  ps->p++;
  sg_buf_reset(&ps->tmp);
  const char *run = ps->p;
  while (1) {
    if (ps->p >= ps->end) return SG_EINVAL;
    unsigned char c = (unsigned char)*ps->p;
    if (c == '"' || c == '\\') {
      if (ps->p > run && sg_buf_append(&ps->tmp, run, (size_t)(ps->p - run))) return SG_ENOMEM;
      if (c == '"') break;
      if (ps->end - ps->p < 2) return SG_EINVAL;
      char e = ps->p[1];
      int rc = 0;
      ps->p += 2;
      switch (e) {
      case '"': rc = sg_buf_putc(&ps->tmp, '"'); break;
      case '\\': rc = sg_buf_putc(&ps->tmp, '\\'); break;
      case '/': rc = sg_buf_putc(&ps->tmp, '/'); break;
      case 'b': rc = sg_buf_putc(&ps->tmp, '\b'); break;
      case 'f': rc = sg_buf_putc(&ps->tmp, '\f'); break;
      case 'n': rc = sg_buf_putc(&ps->tmp, '\n'); break;
      case 'r': rc = sg_buf_putc(&ps->tmp, '\r'); break;
      case 't': rc = sg_buf_putc(&ps->tmp, '\t'); break;
      case 'u': {
        unsigned cp, lo;
        if (ps->end - ps->p < 4 || hex4(ps->p, &cp)) return SG_EINVAL;
        ps->p += 4;
        if (cp >= 0xd800 && cp <= 0xdbff) { /* a high surrogate needs its low half */
          if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' || hex4(ps->p + 2, &lo) ||
              lo < 0xdc00 || lo > 0xdfff)
            return SG_EINVAL;
          ps->p += 6;
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        } else if ((cp >= 0xdc00 && cp <= 0xdfff) || cp == 0) {
          return SG_EINVAL; /* jsonb refuses \u0000 and lone low surrogates */
        }
        rc = put_utf8(&ps->tmp, cp);
        break;
      }
      default: return SG_EINVAL;
      }
      if (rc) return rc;
      run = ps->p;
      continue;
    }
    if (c < 0x20) return SG_EINVAL;
    ps->p++;
  }
  ps->p++; /* closing quote */
  const char *s = arena_dup(ps->d, ps->tmp.data ? ps->tmp.data : "", ps->tmp.len);
  if (!s) return SG_ENOMEM;
  *out = s;
  *len = (uint32_t)ps->tmp.len;
  return 0;
}

/* Keys: length first, then bytes (jsonb's lengthCompareJsonbString). */
static int key_cmp(const sg_jb_t *a, const sg_jb_t *b) {
  if (a->n != b->n) return a->n < b->n ? -1 : 1;
  return memcmp(a->s, b->s, a->n);
}

/* Sorts an object's pairs into jsonb's key order, stably, and keeps the last
 * of equal keys (jsonb's uniqueifyJsonbObject). pairs = 2n nodes. Returns
 * the number of pairs kept. Insertion sort for small objects, merge sort
 * beyond (a stable sort either way). */
static uint32_t sort_pairs(sg_jb_t *v, uint32_t n, sg_jb_t *scratch) {
  if (n > 1) {
    /* bottom-up merge sort over pair indexes */
    sg_jb_t *src = v, *dst = scratch;
    for (uint32_t w = 1; w < n; w *= 2) {
      for (uint32_t lo = 0; lo < n; lo += 2 * w) {
        uint32_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
        uint32_t i = lo, j = mid, k = lo;
        while (i < mid && j < hi) {
          if (key_cmp(&src[2 * j], &src[2 * i]) < 0) {
            dst[2 * k] = src[2 * j], dst[2 * k + 1] = src[2 * j + 1], j++;
          } else {
            dst[2 * k] = src[2 * i], dst[2 * k + 1] = src[2 * i + 1], i++;
          }
          k++;
        }
        while (i < mid) dst[2 * k] = src[2 * i], dst[2 * k + 1] = src[2 * i + 1], i++, k++;
        while (j < hi) dst[2 * k] = src[2 * j], dst[2 * k + 1] = src[2 * j + 1], j++, k++;
      }
      sg_jb_t *t = src;
      src = dst;
      dst = t;
    }
    if (src != v) memcpy(v, src, sizeof *v * 2 * n);
  }
  uint32_t out = 0;
  for (uint32_t i = 0; i < n; i++) {
    if (i + 1 < n && key_cmp(&v[2 * i], &v[2 * (i + 1)]) == 0) continue; /* a later one wins */
    v[2 * out] = v[2 * i];
    v[2 * out + 1] = v[2 * i + 1];
    out++;
  }
  return out;
}

static int parse_value(parser_t *ps, sg_jb_t *out);

/* Members are collected on a growable array first (their count is unknown),
 * then copied into the arena. */
static int parse_container(parser_t *ps, sg_jb_t *out, int object) {
  if (++ps->depth > MAX_DEPTH) return SG_EINVAL;
  ps->p++;
  sg_jb_t *items = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  skip_ws(ps);
  char close = object ? '}' : ']';
  if (ps->p < ps->end && *ps->p == close) {
    ps->p++;
  } else {
    while (1) {
      if (n + 2 > cap) {
        size_t nc = cap ? cap * 2 : 16;
        sg_jb_t *ni = realloc(items, nc * sizeof *ni);
        if (!ni) { rc = SG_ENOMEM; break; }
        items = ni;
        cap = nc;
      }
      skip_ws(ps);
      if (object) {
        if (ps->p >= ps->end || *ps->p != '"') { rc = SG_EINVAL; break; }
        sg_jb_t *k = &items[n++];
        memset(k, 0, sizeof *k);
        k->type = SG_JB_STRING;
        if ((rc = parse_string(ps, &k->s, &k->n))) break;
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':') { rc = SG_EINVAL; break; }
        ps->p++;
      }
      skip_ws(ps);
      if ((rc = parse_value(ps, &items[n++]))) break;
      skip_ws(ps);
      if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
      if (ps->p < ps->end && *ps->p == close) { ps->p++; break; }
      rc = SG_EINVAL;
      break;
    }
  }
  if (rc == 0) {
    out->type = object ? SG_JB_OBJECT : SG_JB_ARRAY;
    uint32_t count = (uint32_t)(object ? n / 2 : n);
    out->v = NULL;
    if (n) {
      out->v = arena_alloc(ps->d, n * sizeof *items);
      if (!out->v) rc = SG_ENOMEM;
      else memcpy(out->v, items, n * sizeof *items);
    }
    if (rc == 0 && object && count > 1) {
      sg_jb_t *scratch = malloc(n * sizeof *scratch);
      if (!scratch) rc = SG_ENOMEM;
      else count = sort_pairs(out->v, count, scratch);
      free(scratch);
    }
    out->n = count;
  }
  free(items);
  ps->depth--;
  return rc;
}

static int parse_value(parser_t *ps, sg_jb_t *out) {
  memset(out, 0, sizeof *out);
  if (ps->p >= ps->end) return SG_EINVAL;
  char c = *ps->p;
  if (c == '{') return parse_container(ps, out, 1);
  if (c == '[') return parse_container(ps, out, 0);
  if (c == '"') {
    out->type = SG_JB_STRING;
    return parse_string(ps, &out->s, &out->n);
  }
  size_t left = (size_t)(ps->end - ps->p);
  if (left >= 4 && !memcmp(ps->p, "true", 4)) { out->type = SG_JB_TRUE; ps->p += 4; return 0; }
  if (left >= 5 && !memcmp(ps->p, "false", 5)) { out->type = SG_JB_FALSE; ps->p += 5; return 0; }
  if (left >= 4 && !memcmp(ps->p, "null", 4)) { out->type = SG_JB_NULL; ps->p += 4; return 0; }
  const char *a = ps->p;
  while (ps->p < ps->end && (strchr("+-.eE", *ps->p) || (*ps->p >= '0' && *ps->p <= '9'))) ps->p++;
  num_t num;
  if (ps->p == a || num_parse(a, (size_t)(ps->p - a), &num)) return SG_EINVAL;
  sg_buf_reset(&ps->tmp);
  if (num_render(&num, &ps->tmp)) return SG_ENOMEM;
  out->type = SG_JB_NUMBER;
  out->s = arena_dup(ps->d, ps->tmp.data, ps->tmp.len);
  out->n = (uint32_t)ps->tmp.len;
  return out->s ? 0 : SG_ENOMEM;
}

int sg_jb_parse(const char *text, size_t n, sg_jb_doc_t **doc, const sg_jb_t **root) {
  *doc = NULL;
  *root = NULL;
  sg_jb_doc_t *d = calloc(1, sizeof *d);
  if (!d) return SG_ENOMEM;
  parser_t ps = {d, text, text + n, SG_BUF_INIT, 0};
  skip_ws(&ps);
  int rc = parse_value(&ps, &d->root);
  if (rc == 0) {
    skip_ws(&ps);
    if (ps.p != ps.end) rc = SG_EINVAL;
  }
  sg_buf_free(&ps.tmp);
  if (rc) {
    sg_jb_free(d);
    return rc;
  }
  *doc = d;
  *root = &d->root;
  return 0;
}

/* ---- output ------------------------------------------------------------------------ */

/* jsonb's escape_json: the short escapes, \u00xx (lower case) for other
 * control characters, everything else as it is. */
static int put_string(sg_buf_t *b, const char *s, size_t n) {
  int rc = sg_buf_putc(b, '"');
  size_t i = 0;
  while (rc == 0 && i < n) {
    size_t run = sg_json_plain_len(s + i, n - i);
    if (run) {
      rc = sg_buf_append(b, s + i, run);
      i += run;
      continue;
    }
    unsigned char c = (unsigned char)s[i++];
    switch (c) {
    case '\b': rc = sg_buf_puts(b, "\\b"); break;
    case '\f': rc = sg_buf_puts(b, "\\f"); break;
    case '\n': rc = sg_buf_puts(b, "\\n"); break;
    case '\r': rc = sg_buf_puts(b, "\\r"); break;
    case '\t': rc = sg_buf_puts(b, "\\t"); break;
    case '"': rc = sg_buf_puts(b, "\\\""); break;
    case '\\': rc = sg_buf_puts(b, "\\\\"); break;
    default: rc = c < 0x20 ? sg_buf_printf(b, "\\u%04x", c) : sg_buf_putc(b, (char)c); break;
    }
  }
  return rc ? rc : sg_buf_putc(b, '"');
}

static int render(const sg_jb_t *v, sg_buf_t *b) {
  int rc = 0;
  switch (v->type) {
  case SG_JB_NULL: return sg_buf_puts(b, "null");
  case SG_JB_TRUE: return sg_buf_puts(b, "true");
  case SG_JB_FALSE: return sg_buf_puts(b, "false");
  case SG_JB_NUMBER: return sg_buf_append(b, v->s, v->n);
  case SG_JB_STRING: return put_string(b, v->s, v->n);
  case SG_JB_ARRAY:
    rc = sg_buf_putc(b, '[');
    for (uint32_t i = 0; rc == 0 && i < v->n; i++) {
      if (i) rc = sg_buf_puts(b, ", ");
      rc = rc ? rc : render(&v->v[i], b);
    }
    return rc ? rc : sg_buf_putc(b, ']');
  case SG_JB_OBJECT:
    rc = sg_buf_putc(b, '{');
    for (uint32_t i = 0; rc == 0 && i < v->n; i++) {
      if (i) rc = sg_buf_puts(b, ", ");
      rc = rc ? rc : put_string(b, v->v[2 * i].s, v->v[2 * i].n);
      rc = rc ? rc : sg_buf_puts(b, ": ");
      rc = rc ? rc : render(&v->v[2 * i + 1], b);
    }
    return rc ? rc : sg_buf_putc(b, '}');
  }
  return SG_EINVAL;
}

int sg_jb_render(const sg_jb_t *v, sg_buf_t *out) { return render(v, out); }

int sg_jb_text(const sg_jb_t *v, sg_buf_t *out, int *is_null) {
  *is_null = 0;
  if (v->type == SG_JB_NULL) {
    *is_null = 1;
    return 0;
  }
  if (v->type == SG_JB_STRING) return sg_buf_append(out, v->s, v->n);
  return render(v, out);
}

const char *sg_jb_typeof(const sg_jb_t *v) {
  switch (v->type) {
  case SG_JB_OBJECT: return "object";
  case SG_JB_ARRAY: return "array";
  case SG_JB_STRING: return "string";
  case SG_JB_NUMBER: return "number";
  case SG_JB_TRUE:
  case SG_JB_FALSE: return "boolean";
  default: return "null";
  }
}

/* ---- operators ------------------------------------------------------------------------ */

const sg_jb_t *sg_jb_get(const sg_jb_t *v, const char *key, size_t n) {
  if (!v || v->type != SG_JB_OBJECT) return NULL;
  sg_jb_t k = {SG_JB_STRING, (uint32_t)n, key, NULL};
  uint32_t lo = 0, hi = v->n; /* keys are sorted: binary search */
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    int c = key_cmp(&v->v[2 * mid], &k);
    if (c == 0) return &v->v[2 * mid + 1];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

const sg_jb_t *sg_jb_path(const sg_jb_t *v, const char *const *seg, const size_t *len, size_t nseg) {
  for (size_t i = 0; v && i < nseg; i++) {
    if (v->type == SG_JB_OBJECT) {
      v = sg_jb_get(v, seg[i], len[i]);
    } else if (v->type == SG_JB_ARRAY) {
      /* jsonfuncs.c: strtoint over the element; anything else is NULL */
      char num[32];
      if (len[i] == 0 || len[i] >= sizeof num) return NULL;
      memcpy(num, seg[i], len[i]);
      num[len[i]] = '\0';
      char *end;
      errno = 0;
      long idx = strtol(num, &end, 10);
      if (end == num || *end || errno || idx > INT32_MAX || idx < INT32_MIN) return NULL;
      if (idx < 0) {
        if (-idx > (long)v->n) return NULL;
        idx += v->n;
      }
      if (idx >= (long)v->n) return NULL;
      v = &v->v[idx];
    } else {
      return NULL;
    }
  }
  return v;
}

static int scalar_equal(const sg_jb_t *a, const sg_jb_t *b) {
  if (a->type != b->type) return 0;
  switch (a->type) {
  case SG_JB_STRING: return a->n == b->n && !memcmp(a->s, b->s, a->n);
  case SG_JB_NUMBER: return sg_jb_num_cmp(a->s, a->n, b->s, b->n) == 0;
  default: return 1;
  }
}

int sg_jb_equal(const sg_jb_t *a, const sg_jb_t *b) {
  if (a->type != b->type || ((a->type == SG_JB_ARRAY || a->type == SG_JB_OBJECT) && a->n != b->n)) return 0;
  if (a->type == SG_JB_ARRAY) {
    for (uint32_t i = 0; i < a->n; i++)
      if (!sg_jb_equal(&a->v[i], &b->v[i])) return 0;
    return 1;
  }
  if (a->type == SG_JB_OBJECT) {
    for (uint32_t i = 0; i < a->n; i++)
      if (key_cmp(&a->v[2 * i], &b->v[2 * i]) || !sg_jb_equal(&a->v[2 * i + 1], &b->v[2 * i + 1])) return 0;
    return 1;
  }
  return scalar_equal(a, b);
}

static int is_container(const sg_jb_t *v) { return v->type == SG_JB_ARRAY || v->type == SG_JB_OBJECT; }

/* JsonbDeepContains over two containers of the same kind. */
static int deep_contains(const sg_jb_t *a, const sg_jb_t *b) {
  if (a->type != b->type) return 0;
  if (a->type == SG_JB_OBJECT) {
    if (a->n < b->n) return 0;
    for (uint32_t i = 0; i < b->n; i++) {
      const sg_jb_t *bv = &b->v[2 * i + 1];
      const sg_jb_t *av = sg_jb_get(a, b->v[2 * i].s, b->v[2 * i].n);
      if (!av) return 0;
      if (is_container(av) != is_container(bv)) return 0;
      if (!is_container(av)) {
        if (!scalar_equal(av, bv)) return 0;
      } else if (!deep_contains(av, bv)) {
        return 0;
      }
    }
    return 1;
  }
  /* arrays: every element of b is in a (scalars by equality, containers by
   * containment in some container element of a) */
  for (uint32_t i = 0; i < b->n; i++) {
    const sg_jb_t *bv = &b->v[i];
    int found = 0;
    for (uint32_t j = 0; !found && j < a->n; j++) {
      const sg_jb_t *av = &a->v[j];
      if (!is_container(bv)) found = !is_container(av) && scalar_equal(av, bv);
      else found = is_container(av) && deep_contains(av, bv);
    }
    if (!found) return 0;
  }
  return 1;
}

int sg_jb_contains(const sg_jb_t *a, const sg_jb_t *b) {
  /* At the top a scalar is a one-element "raw scalar" array: an array
   * contains a scalar it holds; a scalar contains only an equal scalar. */
  if (!is_container(b)) {
    if (!is_container(a)) return scalar_equal(a, b);
    if (a->type != SG_JB_ARRAY) return 0;
    for (uint32_t j = 0; j < a->n; j++)
      if (!is_container(&a->v[j]) && scalar_equal(&a->v[j], b)) return 1;
    return 0;
  }
  if (!is_container(a)) return 0;
  return deep_contains(a, b);
}

/* ---- exact sums ------------------------------------------------------------------------ */

#define LIMB 1000000000u
#define MAX_LIMBS 400 /* numeric holds up to ~1000 digits each side of the point */

void sg_jb_sum_init(sg_jb_sum_t *s) { memset(s, 0, sizeof *s); }

void sg_jb_sum_free(sg_jb_sum_t *s) {
  free(s->lim);
  memset(s, 0, sizeof *s);
}

static int sum_grow(sg_jb_sum_t *s, int need) {
  if (need <= s->cap) return 0;
  int cap = s->cap ? s->cap : 8;
  while (cap < need) cap *= 2;
  uint32_t *l = realloc(s->lim, (size_t)cap * sizeof *l);
  if (!l) return SG_ENOMEM;
  s->lim = l;
  s->cap = cap;
  return 0;
}

/* Magnitude comparison of limb arrays aligned on the same frac. */
static int mag_cmp(const uint32_t *a, int na, const uint32_t *b, int nb) {
  while (na > 0 && a[na - 1] == 0) na--;
  while (nb > 0 && b[nb - 1] == 0) nb--;
  if (na != nb) return na < nb ? -1 : 1;
  for (int i = na - 1; i >= 0; i--)
    if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
  return 0;
}

int sg_jb_sum_add(sg_jb_sum_t *s, const char *a, size_t n) {
  num_t x;
  if (num_parse(a, n, &x)) return SG_EINVAL;
  if (num_is_zero(&x)) return 0;
  long top = num_top(&x), bot = num_bottom(&x);
  /* limbs: limb k (k >= 0 above the point, k < 0 below) holds positions
   * 9k .. 9k+8 */
  long kfrac = bot < 0 ? (-bot + 8) / 9 : 0;
  long khigh = top >= 0 ? top / 9 : -1;
  if (kfrac + khigh + 2 > MAX_LIMBS) {
    s->bad = 1;
    return 0;
  }
  int frac = s->frac > (int)kfrac ? s->frac : (int)kfrac;
  if (frac > s->frac) { /* rescale: shift the limbs up */
    int d = frac - s->frac;
    if (sum_grow(s, s->nlim + d)) return SG_ENOMEM;
    memmove(s->lim + d, s->lim, (size_t)s->nlim * sizeof *s->lim);
    memset(s->lim, 0, (size_t)d * sizeof *s->lim);
    s->nlim += d;
    s->frac = frac;
  }
  int nx = frac + (int)khigh + 1;
  if (nx < 1) nx = 1;
  uint32_t tmp[MAX_LIMBS + 2];
  memset(tmp, 0, sizeof tmp);
  for (long p = top; p >= bot; p--) {
    char c = num_at(&x, p);
    if (c == '0') continue;
    long k = p >= 0 ? p / 9 : -((-p + 8) / 9);
    long within = p - 9 * k;
    uint32_t mul = 1;
    for (long i = 0; i < within; i++) mul *= 10;
    tmp[k + frac] += (uint32_t)(c - '0') * mul;
  }
  int need = (nx > s->nlim ? nx : s->nlim) + 1;
  if (sum_grow(s, need)) return SG_ENOMEM;
  for (int i = s->nlim; i < need; i++) s->lim[i] = 0;
  int nl = need;
  if (s->nlim == 0 || s->neg == x.neg) {
    s->neg = x.neg;
    uint64_t carry = 0;
    for (int i = 0; i < nl; i++) {
      uint64_t v = (uint64_t)s->lim[i] + (i < nx ? tmp[i] : 0) + carry;
      s->lim[i] = (uint32_t)(v % LIMB);
      carry = v / LIMB;
    }
  } else if (mag_cmp(s->lim, s->nlim, tmp, nx) >= 0) { /* |s| - |x| */
    int64_t borrow = 0;
    for (int i = 0; i < nl; i++) {
      int64_t v = (int64_t)s->lim[i] - (i < nx ? tmp[i] : 0) - borrow;
      borrow = v < 0;
      s->lim[i] = (uint32_t)(v < 0 ? v + LIMB : v);
    }
  } else { /* |x| - |s|, sign of x */
    int64_t borrow = 0;
    for (int i = 0; i < nl; i++) {
      int64_t v = (int64_t)(i < nx ? tmp[i] : 0) - s->lim[i] - borrow;
      borrow = v < 0;
      s->lim[i] = (uint32_t)(v < 0 ? v + LIMB : v);
    }
    s->neg = x.neg;
  }
  while (nl > 0 && s->lim[nl - 1] == 0) nl--;
  s->nlim = nl;
  return 0;
}

double sg_jb_sum_value(const sg_jb_sum_t *s) {
  if (s->nlim == 0) return 0;
  sg_buf_t b = SG_BUF_INIT;
  int rc = s->neg ? sg_buf_putc(&b, '-') : 0;
  int top = s->nlim - 1;
  if (top < s->frac) rc = rc ? rc : sg_buf_putc(&b, '0');
  for (int i = top; rc == 0 && i >= s->frac; i--)
    rc = sg_buf_printf(&b, i == top ? "%u" : "%09u", s->lim[i]);
  if (rc == 0 && s->frac) rc = sg_buf_putc(&b, '.');
  for (int i = s->frac - 1; rc == 0 && i >= 0; i--) rc = sg_buf_printf(&b, "%09u", i < s->nlim ? s->lim[i] : 0);
  double v = rc ? 0 : strtod(b.data, NULL); /* correctly rounded from the exact text */
  sg_buf_free(&b);
  return v;
}
