/* json_nest.c - compact JSON text (jansson-identical) and Agenta's nesting
 * of dotted attribute keys. See json_nest.h for the rules. */
#include "json_nest.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "hash.h"

#define MAX_DEPTH 2048

/* ---- plain dump ------------------------------------------------------------ */

/* A JSON string as jansson's dump_string writes it (sg_buf_json_escape_ex):
 * '"' '\\' and control characters escaped, \b \f \n \r \t short, others
 * \u00XX upper case; everything else (including '/' and UTF-8) as is. */
static int put_str(sg_buf_t *b, const char *s, size_t n) {
  if (sg_buf_putc(b, '"')) return SG_ENOMEM;
  if (sg_buf_json_escape_ex(b, s, n, SG_JSON_ESC_JANSSON)) return SG_ENOMEM;
  return sg_buf_putc(b, '"');
}

/* ---- numbers ---------------------------------------------------------------
 * snprintf cost a sixth of rendering an attributes column; integers and most
 * reals are written here instead, with the very bytes it writes. */

/* "%lld" (JSON_INTEGER_FORMAT). */
static int put_int(sg_buf_t *b, json_int_t v) {
  char tmp[24], *end = tmp + sizeof tmp, *p = end;
  uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
  do {
    *--p = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0) *--p = '-';
  return sg_buf_append(b, p, (size_t)(end - p));
}

typedef unsigned __int128 u128;

/* round(m * 2^e * 10^k) with ties to even, as glibc's printf rounds in the
 * default rounding mode, computed exactly in 128 bits; 0 when the exact
 * product or quotient would not fit (the caller falls back to snprintf). */
static int scaled_round(uint64_t m, int e, int k, u128 *out) {
  u128 q, rem, half;
  if (k >= 0) {
    if (k > 32) return 0;          /* 5^32 * 2^53 < 2^128 */
    u128 n = m;
    for (int i = 0; i < k; i++) n *= 5;
    int s = e + k;                 /* n * 2^s */
    if (s >= 0) {
      if (s > 16) return 0;        /* not near [1e16, 1e17): not a case we meet */
      *out = n << s;
      return 1;
    }
    if (s <= -127) return 0;
    q = n >> -s;
    rem = n & (((u128)1 << -s) - 1);
    half = (u128)1 << (-s - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    *out = q;
    return 1;
  }
  if (k < -22 || e < 0 || e > 74) return 0; /* 10^22 < 2^74; m * 2^74 < 2^127 */
  u128 d = 1;
  for (int i = 0; i < -k; i++) d *= 10;
  u128 n = (u128)m << e;
  q = n / d;
  rem = n % d;
  if (2 * rem > d || (2 * rem == d && (q & 1))) q++;
  *out = q;
  return 1;
}

/* snprintf(out, 32, "%.17g", d) for normal doubles from about 1e-16 to
 * 2^127, the reals attributes carry; 0 (nothing written) for the others.
 * Returns the length. The 17 significant digits are the exact value rounded
 * (scaled_round), laid out as %g does: an exponent when it is below -4 or
 * from 17 up, otherwise plain; trailing zeros of the fraction dropped. */
static int g17(double d, char *out) {
  uint64_t bits;
  memcpy(&bits, &d, sizeof bits);
  int bexp = (int)(bits >> 52 & 0x7ff);
  if (bexp == 0 || bexp == 0x7ff) return 0; /* zero, subnormal, inf, nan */
  uint64_t m = (bits & ((UINT64_C(1) << 52) - 1)) | UINT64_C(1) << 52;
  int e = bexp - 1075;                       /* |d| = m * 2^e */
  /* decimal exponent of the leading digit, maybe one too small */
  int x = (int)floor((bexp - 1023) * 0.30102999566398120);
  const u128 lo = (u128)UINT64_C(10000000000000000), hi = lo * 10;
  u128 r = 0;
  int tries = 0;
  for (;; tries++) {
    if (tries == 3 || !scaled_round(m, e, 16 - x, &r)) return 0;
    if (r >= hi) x++;
    else if (r < lo) x--;
    else break;
  }
  char dig[17];
  uint64_t v = (uint64_t)r;
  for (int i = 16; i >= 0; i--, v /= 10) dig[i] = (char)('0' + v % 10);
  int nd = 17;
  while (nd > 1 && dig[nd - 1] == '0') nd--; /* %g drops trailing zeros */
  char *o = out;
  if (bits >> 63) *o++ = '-';
  if (x < -4 || x >= 17) {
    *o++ = dig[0];
    if (nd > 1) {
      *o++ = '.';
      memcpy(o, dig + 1, (size_t)nd - 1);
      o += nd - 1;
    }
    *o++ = 'e';
    *o++ = x < 0 ? '-' : '+';
    int ax = x < 0 ? -x : x;
    if (ax >= 100) *o++ = (char)('0' + ax / 100);
    *o++ = (char)('0' + ax / 10 % 10);
    *o++ = (char)('0' + ax % 10);
  } else if (x >= 0) {
    memcpy(o, dig, (size_t)x + 1); /* x <= 16: all integer digits are among the 17 */
    o += x + 1;
    if (nd > x + 1) {
      *o++ = '.';
      memcpy(o, dig + x + 1, (size_t)(nd - x - 1));
      o += nd - x - 1;
    }
  } else {
    *o++ = '0';
    *o++ = '.';
    for (int i = 0; i < -x - 1; i++) *o++ = '0';
    memcpy(o, dig, (size_t)nd);
    o += nd;
  }
  *o = '\0';
  return (int)(o - out);
}

int sg__json_g17(double d, char out[32]) { return g17(d, out); }

/* jansson's jsonp_dtostr: "%.17g", ".0" when there is no '.' or 'e', and
 * the exponent without '+' and leading zeros. With shortest, the fewest
 * digits (15..17) that read back the same double. */
static int put_real(sg_buf_t *b, double d, int shortest) {
  char tmp[64];
  int n = 0;
  if (shortest) {
    /* Fewest digits that read back the same double, without switching to
     * an exponent where the full form has none (100.0, not 1e2). */
    char full[64];
    snprintf(full, sizeof full, "%.17g", d);
    int full_exp = strchr(full, 'e') != NULL;
    for (int prec = 1; prec <= 17; prec++) {
      n = snprintf(tmp, sizeof tmp, "%.*g", prec, d);
      if (strtod(tmp, NULL) == d && (full_exp || strchr(tmp, 'e') == NULL)) break;
    }
  } else if ((n = g17(d, tmp)) == 0) {
    n = snprintf(tmp, sizeof tmp, "%.17g", d);
  }
  if (n < 0 || (size_t)n >= sizeof tmp - 3) return SG_EINVAL;
  if (strchr(tmp, '.') == NULL && strchr(tmp, 'e') == NULL) {
    tmp[n++] = '.';
    tmp[n++] = '0';
    tmp[n] = '\0';
  }
  char *e = strchr(tmp, 'e');
  if (e) {
    char *start = e + 1, *end = start + 1;
    if (*start == '-') start++;
    /* start: first char after 'e' / 'e-'; drop '+' and leading zeros */
    end = start;
    if (*end == '+') end++;
    while (*end == '0' && end[1] != '\0') end++;
    if (end != start) {
      memmove(start, end, strlen(end) + 1);
      n = (int)strlen(tmp);
    }
  }
  return sg_buf_append(b, tmp, (size_t)n);
}

static int dump(const json_t *v, int flags, sg_buf_t *b, int depth);

static int dump_object(const json_t *v, int flags, sg_buf_t *b, int depth) {
  if (sg_buf_putc(b, '{')) return SG_ENOMEM;
  int first = 1;
  for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
    if (!first && sg_buf_putc(b, ',')) return SG_ENOMEM;
    first = 0;
    int rc;
    if ((rc = put_str(b, json_object_iter_key(it), json_object_iter_key_len(it)))) return rc;
    if (sg_buf_putc(b, ':')) return SG_ENOMEM;
    if ((rc = dump(json_object_iter_value(it), flags, b, depth + 1))) return rc;
  }
  return sg_buf_putc(b, '}');
}

static int dump(const json_t *v, int flags, sg_buf_t *b, int depth) {
  int rc;
  if (v == NULL || depth > MAX_DEPTH) return SG_EINVAL;
  switch (json_typeof(v)) {
  case JSON_OBJECT: return dump_object(v, flags, b, depth);
  case JSON_ARRAY: {
    size_t n = json_array_size(v);
    if (sg_buf_putc(b, '[')) return SG_ENOMEM;
    for (size_t i = 0; i < n; i++) {
      if (i && sg_buf_putc(b, ',')) return SG_ENOMEM;
      if ((rc = dump(json_array_get(v, i), flags, b, depth + 1))) return rc;
    }
    return sg_buf_putc(b, ']');
  }
  case JSON_STRING: return put_str(b, json_string_value(v), json_string_length(v));
  case JSON_INTEGER: return put_int(b, json_integer_value(v));
  case JSON_REAL: return put_real(b, json_real_value(v), flags & SG_JSON_SHORT_REAL);
  case JSON_TRUE: return sg_buf_append(b, "true", 4);
  case JSON_FALSE: return sg_buf_append(b, "false", 5);
  case JSON_NULL: return sg_buf_append(b, "null", 4);
  }
  return SG_EINVAL;
}

/* ---- nesting --------------------------------------------------------------- */

/* "key": with the comma before it when asked; a key known to need no
 * escaping goes in with one copy. */
static int put_member_key(sg_buf_t *b, const char *k, size_t n, int plain, int comma) {
  if (plain) {
    if (sg_buf_reserve(b, n + 4)) return SG_ENOMEM;
    char *o = b->data + b->len;
    if (comma) *o++ = ',';
    *o++ = '"';
    memcpy(o, k, n);
    o += n;
    *o++ = '"';
    *o++ = ':';
    *o = '\0';
    b->len = (size_t)(o - b->data);
    return 0;
  }
  int rc;
  if (comma && sg_buf_putc(b, ',')) return SG_ENOMEM;
  if ((rc = put_str(b, k, n))) return rc;
  return sg_buf_putc(b, ':');
}

typedef struct {
  const char *seg;
  const json_t *value; /* value of the key ending here, or NULL */
  uint32_t seglen;
  uint32_t key;        /* index of that key */
  int first, last, next, parent;
  uint32_t nchild;
  int idx;             /* seg as a canonical index, or -1 */
  int maxidx;
  uint8_t all_idx;     /* every child has idx >= 0 */
  uint8_t hashed;      /* the children are in the hash table */
  uint8_t plain;       /* seg needs no JSON escaping */
  uint32_t src;        /* the key whose bytes seg points into */
} node_t;

typedef struct {
  const char *k;
  size_t klen;
  const json_t *v;
  uint32_t nseg;       /* segments when split, 0 when kept as sent */
  uint8_t plain;       /* no byte that JSON escapes */
} key_t_;

/* A node finds its children by comparing them one by one while it has at
 * most SMALL_FANOUT (the common case: a few keys under "gen_ai.request");
 * past that they go into a hash table keyed by (parent, segment). Hashing
 * every segment was a tenth of a request's CPU. */
#define SMALL_FANOUT 8

typedef struct {
  node_t *nodes;
  size_t nn, cap;
  int *hash;           /* open addressing: node index + 1, 0 empty; made on first need */
  size_t hcap;
  key_t_ *keys;
  size_t nkeys;
  unsigned char *deferred;
  void *heap;          /* nodes, keys and deferred when they did not fit the caller's room */
  size_t probes;       /* children and slots looked at by child(), for the tests */
} trie_t;

static int seg_index(const char *s, size_t n) {
  if (n == 0 || n > 9) return -1;
  if (n > 1 && s[0] == '0') return -1;
  int v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

/* Keyed (hash.h): the segments are the client's, and an unkeyed hash let
 * 50,000 chosen keys share one chain (quadratic probing, seconds). */
static size_t hash_seg(int parent, const char *s, size_t n) {
  return (size_t)sg_hash_pair((uint64_t)(int64_t)parent, s, n);
}

static void hash_put(trie_t *t, int id) {
  size_t mask = t->hcap - 1, h = hash_seg(t->nodes[id].parent, t->nodes[id].seg, t->nodes[id].seglen) & mask;
  while (t->hash[h]) h = (h + 1) & mask;
  t->hash[h] = id + 1;
}

/* The child of parent named seg, created when absent. -1 on ENOMEM. */
static int child(trie_t *t, int parent, const char *seg, size_t n, int plain, uint32_t src) {
  node_t *p = &t->nodes[parent];
  size_t h = 0, mask = t->hcap - 1;
  if (!p->hashed) {
    for (int c = p->first; c >= 0; c = t->nodes[c].next) {
      const node_t *cn = &t->nodes[c];
      t->probes++;
      if (cn->seglen == n && memcmp(cn->seg, seg, n) == 0) return c;
    }
  } else {
    for (h = hash_seg(parent, seg, n) & mask;; h = (h + 1) & mask) {
      int e = t->hash[h];
      t->probes++;
      if (e == 0) break;
      const node_t *c = &t->nodes[e - 1];
      if (c->parent == parent && c->seglen == n && memcmp(c->seg, seg, n) == 0) return e - 1;
    }
  }
  if (t->nn == t->cap) return -1; /* sized up front; cannot happen */
  int id = (int)t->nn++;
  node_t *c = &t->nodes[id];
  memset(c, 0, sizeof *c);
  c->seg = seg;
  c->seglen = (uint32_t)n;
  c->first = c->last = c->next = -1;
  c->parent = parent;
  c->idx = seg_index(seg, n);
  c->all_idx = 1;
  c->maxidx = -1;
  c->plain = (uint8_t)plain;
  c->src = src;
  if (p->last >= 0) t->nodes[p->last].next = id;
  else p->first = id;
  p->last = id;
  p->nchild++;
  if (c->idx < 0) p->all_idx = 0;
  else if (c->idx > p->maxidx) p->maxidx = c->idx;
  if (p->hashed) {
    t->hash[h] = id + 1;
  } else if (p->nchild > SMALL_FANOUT) {
    if (t->hash == NULL) {
      t->hcap = 16;
      while (t->hcap < 2 * t->cap) t->hcap *= 2;
      if ((t->hash = calloc(t->hcap, sizeof *t->hash)) == NULL) return -1;
    }
    for (int k = p->first; k >= 0; k = t->nodes[k].next) hash_put(t, k);
    p->hashed = 1;
  }
  return id;
}

/* A key is split unless a segment is empty or it has more segments than
 * SG_JSON_NEST_MAX_SEGMENTS: rendering recurses once per segment, so the
 * bound keeps a hostile key ("a.a.a..." x 60,000) from exhausting the
 * stack, and such a key is kept as sent. Fills nseg (0: not split) and
 * plain (no byte JSON escapes: '"', '\\', controls) in one pass, 8 bytes at
 * a time. */
static void key_scan(key_t_ *k) {
  const unsigned char *s = (const unsigned char *)k->k;
  size_t n = k->klen, dots = 0, i = 0;
  int esc = 0, twodots = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u, low7 = 0x7f7f7f7f7f7f7f7fu;
  uint64_t carry = 0; /* 0x80 when the byte before this word is a dot */
  for (; i + 8 <= n; i += 8) {
    uint64_t x, q, e, d, m;
    memcpy(&x, s + i, 8);
    q = x ^ (ones * '"');
    e = x ^ (ones * '\\');
    d = x ^ (ones * '.');
    /* any byte below 0x20, '"' or '\\' (exact as a yes/no, as in buf.c) */
    esc |= ((((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((e - ones) & ~e)) & high) != 0;
    m = ~(((d & low7) + low7) | d | low7); /* exactly 0x80 in each byte that is '.' */
    dots += (size_t)(((m >> 7) * ones) >> 56); /* one bit per dot: their sum in the top byte */
    twodots |= (m & ((m << 8) | carry)) != 0;
    carry = (m >> 56) & 0x80;
  }
  int prev_dot = carry != 0;
#else
  int prev_dot = 0;
#endif
  for (; i < n; i++) {
    unsigned char c = s[i];
    if (c == '.') {
      dots++;
      twodots |= prev_dot;
      prev_dot = 1;
      continue;
    }
    prev_dot = 0;
    esc |= c < 0x20 || c == '"' || c == '\\';
  }
  int split = n > 0 && s[0] != '.' && s[n - 1] != '.' && !twodots && dots < SG_JSON_NEST_MAX_SEGMENTS;
  k->nseg = split ? (uint32_t)(dots + 1) : 0;
  k->plain = (uint8_t)!esc;
}

static void trie_free(trie_t *t) {
  free(t->heap);
  free(t->hash);
}

/* ---- the trie's shape, once per sequence of keys ---------------------------
 *
 * Spans of one kind carry the same keys in the same order ("ag.type.span",
 * "gen_ai.request.model", ...) with other values, and the trie depends on
 * the keys alone: its nodes, their order and flags, the node each key ends
 * at. Each thread keeps the shapes of the last SHAPE_SLOTS sequences of
 * keys it nested (the key bytes, the nodes, where each node's segment lies
 * in which key); an object whose keys equal one of them byte for byte and
 * in order gets a copy of those nodes bound to its own keys and values,
 * without scanning, splitting or looking up any key. */
#define SHAPE_SLOTS 8
#define SHAPE_MAX_KEYS 64
#define SHAPE_MAX_BYTES 4096

typedef struct {
  void *blob;         /* everything below, in one allocation; NULL: empty */
  uint32_t nkeys, nn;
  node_t *nodes;      /* nn, values NULL */
  uint32_t *klen;     /* nkeys */
  uint32_t *keynode;  /* nkeys: the node each key ends at */
  uint32_t *segoff;   /* nn: node n's segment starts segoff[n] into key nodes[n].src */
  char *bytes;        /* the keys, one after another */
} shape_t;

typedef struct {
  shape_t slot[SHAPE_SLOTS];
  unsigned next;      /* the slot the next new shape replaces */
} shapes_t;

static pthread_key_t shapes_key;
static int shapes_ok;
static pthread_once_t shapes_once = PTHREAD_ONCE_INIT;
static int shapes_off; /* tests: sg__json_nest_shapes */

static void shapes_free(void *p) {
  shapes_t *sh = p;
  for (int i = 0; i < SHAPE_SLOTS; i++) free(sh->slot[i].blob);
  free(sh);
}

static void shapes_init(void) { shapes_ok = pthread_key_create(&shapes_key, shapes_free) == 0; }

static shapes_t *shapes_get(void) {
  if (shapes_off) return NULL;
  pthread_once(&shapes_once, shapes_init);
  if (!shapes_ok) return NULL;
  shapes_t *sh = pthread_getspecific(shapes_key);
  if (sh == NULL && (sh = calloc(1, sizeof *sh)) != NULL && pthread_setspecific(shapes_key, sh) != 0) {
    free(sh);
    sh = NULL;
  }
  return sh;
}

void sg__json_nest_shapes(int on) { shapes_off = !on; }

/* The kept shape of exactly these keys (bytes and order), or NULL. */
static const shape_t *shape_find(const shapes_t *sh, const key_t_ *keys, size_t nkeys) {
  for (int s = 0; s < SHAPE_SLOTS; s++) {
    const shape_t *p = &sh->slot[s];
    if (p->blob == NULL || p->nkeys != nkeys) continue;
    const char *b = p->bytes;
    size_t i = 0;
    for (; i < nkeys; b += keys[i].klen, i++)
      if (p->klen[i] != keys[i].klen || memcmp(b, keys[i].k, keys[i].klen) != 0) break;
    if (i == nkeys) return p;
  }
  return NULL;
}

/* Keeps the shape of the trie t just built (small ones only), replacing
 * the oldest kept. Nothing when memory is short: it is only a cache. */
static void shape_store(shapes_t *sh, const trie_t *t) {
  size_t nk = t->nkeys, nn = t->nn, kb = 0;
  if (nk == 0 || nk > SHAPE_MAX_KEYS) return;
  for (size_t i = 0; i < nk; i++) kb += t->keys[i].klen;
  if (kb > SHAPE_MAX_BYTES) return;
  char *blob = malloc(nn * sizeof(node_t) + (2 * nk + nn) * sizeof(uint32_t) + kb);
  if (blob == NULL) return;
  shape_t p;
  p.blob = blob;
  p.nkeys = (uint32_t)nk;
  p.nn = (uint32_t)nn;
  p.nodes = (node_t *)(void *)blob;
  p.klen = (uint32_t *)(void *)(blob + nn * sizeof(node_t));
  p.keynode = p.klen + nk;
  p.segoff = p.keynode + nk;
  p.bytes = (char *)(p.segoff + nn);
  memcpy(p.nodes, t->nodes, nn * sizeof(node_t));
  for (size_t i = 0; i < nk; i++) p.keynode[i] = UINT32_MAX;
  p.segoff[0] = 0;
  for (size_t n = 0; n < nn; n++) {
    node_t *c = &p.nodes[n];
    if (n > 0) p.segoff[n] = (uint32_t)(c->seg - t->keys[c->src].k);
    c->seg = NULL;
    if (c->value) p.keynode[c->key] = (uint32_t)n;
    c->value = NULL;
  }
  char *b = p.bytes;
  for (size_t i = 0; i < nk; i++) {
    if (p.keynode[i] == UINT32_MAX) { /* a key that ends at no node of its own: not kept */
      free(blob);
      return;
    }
    p.klen[i] = (uint32_t)t->keys[i].klen;
    memcpy(b, t->keys[i].k, t->keys[i].klen);
    b += t->keys[i].klen;
  }
  shape_t *slot = &sh->slot[sh->next];
  free(slot->blob);
  *slot = p;
  sh->next = (sh->next + 1) % SHAPE_SLOTS;
}

/* Node 0 is the root (the top-level object). room (roomsz bytes, aligned
 * for any type) holds the trie when it fits, else it is allocated. With
 * shapes, a kept shape of the same keys is used and a new one kept. */
static int trie_build(trie_t *t, const json_t *obj, void *room, size_t roomsz, shapes_t *shapes) {
  memset(t, 0, sizeof *t);
  size_t nk = json_object_size(obj), nseg = 1;
  if (nk == 0) nk = 1;
  size_t kbytes = nk * sizeof(key_t_);
  key_t_ *keys = kbytes <= roomsz ? room : NULL;
  if (keys == NULL && (keys = t->heap = malloc(kbytes)) == NULL) return SG_ENOMEM;
  for (void *it = json_object_iter((json_t *)obj); it; it = json_object_iter_next((json_t *)obj, it)) {
    key_t_ *k = &keys[t->nkeys++];
    k->k = json_object_iter_key(it);
    k->klen = json_object_iter_key_len(it);
    k->v = json_object_iter_value(it);
  }
  const shape_t *shape = shapes && t->nkeys ? shape_find(shapes, keys, t->nkeys) : NULL;
  if (shape) {
    nseg = shape->nn;
  } else {
    for (size_t i = 0; i < t->nkeys; i++) {
      key_scan(&keys[i]);
      nseg += keys[i].nseg ? keys[i].nseg : 1;
    }
  }
  /* one block: keys, then nodes, then the deferred flags */
  size_t nodes_at = (kbytes + _Alignof(node_t) - 1) / _Alignof(node_t) * _Alignof(node_t);
  size_t total = nodes_at + nseg * sizeof(node_t) + nk;
  char *base = (char *)keys;
  if (t->heap == NULL && total > roomsz) {
    if ((base = t->heap = malloc(total)) == NULL) return SG_ENOMEM;
    memcpy(base, keys, t->nkeys * sizeof *keys);
  } else if (t->heap != NULL) {
    char *grown = realloc(t->heap, total);
    if (grown == NULL) return SG_ENOMEM;
    base = t->heap = grown;
  }
  t->keys = (key_t_ *)base;
  t->nodes = (node_t *)(base + nodes_at);
  t->deferred = (unsigned char *)base + nodes_at + nseg * sizeof(node_t);
  memset(t->deferred, 0, nk);
  t->cap = nseg;
  if (shape) {
    /* the kept nodes, pointing into this object's keys and values */
    memcpy(t->nodes, shape->nodes, shape->nn * sizeof(node_t));
    for (size_t n = 1; n < shape->nn; n++) t->nodes[n].seg = t->keys[t->nodes[n].src].k + shape->segoff[n];
    for (size_t i = 0; i < t->nkeys; i++) t->nodes[shape->keynode[i]].value = t->keys[i].v;
    t->nn = shape->nn;
    return 0;
  }
  node_t *root = &t->nodes[0];
  memset(root, 0, sizeof *root);
  root->first = root->last = root->next = -1;
  root->parent = -2; /* nobody's child */
  root->idx = -1;
  root->all_idx = 1;
  root->maxidx = -1;
  root->plain = 1;
  t->nn = 1;
  /* The previous split key's nodes and where its segments end: keys come
   * grouped ("gen_ai.request.model", "gen_ai.request.top_p"), and the
   * segments a key shares with the one before are its nodes already. */
  const key_t_ *pk = NULL;
  int path[SG_JSON_NEST_MAX_SEGMENTS];
  size_t pend[SG_JSON_NEST_MAX_SEGMENTS], npath = 0;
  for (size_t i = 0; i < t->nkeys; i++) {
    key_t_ *k = &t->keys[i];
    int cur = 0;
    if (k->nseg == 0) {
      cur = child(t, 0, k->k, k->klen, k->plain, (uint32_t)i);
      pk = NULL;
    } else {
      size_t j = 0, off = 0;
      if (pk) {
        size_t lim = k->klen < pk->klen ? k->klen : pk->klen, cp = 0;
        while (cp < lim && k->k[cp] == pk->k[cp]) cp++;
        /* segment j is shared when it ends before cp (both then have a '.'
         * there), or at cp where this key ends or goes on with a '.' */
        while (j < npath && (pend[j] < cp || (pend[j] == cp && (cp == k->klen || k->k[cp] == '.')))) j++;
        if (j > 0) {
          cur = path[j - 1];
          off = pend[j - 1] + 1;
        }
      }
      while (off <= k->klen) {
        const char *p = k->k + off, *dot = memchr(p, '.', k->klen - off);
        size_t len = dot ? (size_t)(dot - p) : k->klen - off;
        if ((cur = child(t, cur, p, len, k->plain, (uint32_t)i)) < 0) break;
        path[j] = cur;
        pend[j++] = off + len;
        off += len + 1;
      }
      npath = j;
      pk = k;
    }
    if (cur < 0) return SG_ENOMEM;
    t->nodes[cur].value = k->v;
    t->nodes[cur].key = (uint32_t)i;
  }
  if (shapes) shape_store(shapes, t);
  return 0;
}

/* Mark every key in the subtree of n to be written unsplit at the end. */
static void defer_subtree(trie_t *t, int n) {
  if (t->nodes[n].value) t->deferred[t->nodes[n].key] = 1;
  for (int c = t->nodes[n].first; c >= 0; c = t->nodes[c].next) defer_subtree(t, c);
}

static int emit(trie_t *t, int n, int flags, sg_buf_t *b);

/* Members of an object node: the own object's members (merge case) then the
 * children not shadowed by them. */
static int emit_members(trie_t *t, int n, const json_t *own, int flags, sg_buf_t *b, int *first) {
  int rc;
  if (own) {
    for (void *it = json_object_iter((json_t *)own); it; it = json_object_iter_next((json_t *)own, it)) {
      if ((rc = put_member_key(b, json_object_iter_key(it), json_object_iter_key_len(it), 0, !*first)))
        return rc;
      *first = 0;
      if ((rc = dump(json_object_iter_value(it), flags, b, 1))) return rc;
    }
  }
  for (int c = t->nodes[n].first; c >= 0; c = t->nodes[c].next) {
    node_t *cn = &t->nodes[c];
    if (own && json_object_getn(own, cn->seg, cn->seglen)) {
      defer_subtree(t, c);
      continue;
    }
    if ((rc = put_member_key(b, cn->seg, cn->seglen, cn->plain, !*first))) return rc;
    *first = 0;
    if ((rc = emit(t, c, flags, b))) return rc;
  }
  return 0;
}

static int emit(trie_t *t, int n, int flags, sg_buf_t *b) {
  node_t *nd = &t->nodes[n];
  int rc, first = 1;
  if (nd->first < 0) return dump(nd->value, flags, b, 1);
  if (nd->value) {
    if (!json_is_object(nd->value)) {
      for (int c = nd->first; c >= 0; c = t->nodes[c].next) defer_subtree(t, c);
      return dump(nd->value, flags, b, 1);
    }
    if (sg_buf_putc(b, '{')) return SG_ENOMEM;
    if ((rc = emit_members(t, n, nd->value, flags, b, &first))) return rc;
    return sg_buf_putc(b, '}');
  }
  if (nd->all_idx && (long)nd->maxidx < 16 + 4 * (long)nd->nchild) {
    size_t len = (size_t)nd->maxidx + 1;
    int room[64], *slot = len <= 64 ? room : malloc(len * sizeof *slot);
    if (!slot) return SG_ENOMEM;
    for (size_t i = 0; i < len; i++) slot[i] = -1;
    for (int c = nd->first; c >= 0; c = t->nodes[c].next) slot[t->nodes[c].idx] = c;
    rc = sg_buf_putc(b, '[');
    for (size_t i = 0; rc == 0 && i < len; i++) {
      if (i) rc = sg_buf_putc(b, ',');
      if (rc == 0) rc = slot[i] < 0 ? sg_buf_append(b, "null", 4) : emit(t, slot[i], flags, b);
    }
    if (slot != room) free(slot);
    return rc ? rc : sg_buf_putc(b, ']');
  }
  if (sg_buf_putc(b, '{')) return SG_ENOMEM;
  if ((rc = emit_members(t, n, NULL, flags, b, &first))) return rc;
  return sg_buf_putc(b, '}');
}

static int dump_nested_extra(const json_t *obj, int flags, sg_buf_t *b, const json_t *resource);

static int dump_nested(const json_t *obj, int flags, sg_buf_t *b) {
  return dump_nested_extra(obj, flags, b, NULL);
}

static int has_resource_key(const json_t *obj) {
  for (void *it = json_object_iter((json_t *)obj); it; it = json_object_iter_next((json_t *)obj, it)) {
    const char *k = json_object_iter_key(it);
    size_t n = json_object_iter_key_len(it);
    if (n >= 8 && memcmp(k, "resource", 8) == 0 && (n == 8 || k[8] == '.')) return 1;
  }
  return 0;
}

int sg_json_dump_attributes(const json_t *attrs, const json_t *resource, int flags, sg_buf_t *out) {
  if (resource && !json_is_object(resource)) resource = NULL;
  if (resource && attrs && (!json_is_object(attrs) || has_resource_key(attrs))) resource = NULL;
  if (resource == NULL) {
    if (attrs == NULL) return sg_buf_append(out, "null", 4);
    return sg_json_dump(attrs, flags, out);
  }
  if (sg_buf_reserve(out, 256)) return SG_ENOMEM;
  json_t *empty = NULL;
  if (attrs == NULL && (attrs = empty = json_object()) == NULL) return SG_ENOMEM;
  int rc = (flags & SG_JSON_NEST) ? dump_nested_extra(attrs, flags, out, resource)
                                  : SG_EINVAL;
  if (rc == SG_EINVAL && !(flags & SG_JSON_NEST)) {
    /* flat: the object's members, then "resource": the resource as is */
    json_t *tmp = json_copy((json_t *)attrs);
    rc = tmp && json_object_set((json_t *)tmp, "resource", (json_t *)resource) == 0
             ? sg_json_dump(tmp, flags, out)
             : SG_ENOMEM;
    json_decref(tmp);
  }
  json_decref(empty);
  return rc;
}

/* ---- the resource's text, once per resource ----------------------------------
 *
 * Every span of a request carries the same resource, and nesting it again
 * for each span was a sixth of rendering an attributes column. Each thread
 * keeps the last resource it rendered (a deep copy, so nothing it points to
 * can change or be freed under it) and that text; a resource equal to the
 * copy member by member in the same order (what the text depends on) reuses
 * it. */
#define MEMO_MAX_TEXT (64u << 10) /* larger resources are rendered each time */

typedef struct {
  json_t *copy; /* NULL: empty */
  int flags;
  sg_buf_t text;
} res_memo_t;

static pthread_key_t memo_key;
static int memo_ok; /* the key exists */
static pthread_once_t memo_once = PTHREAD_ONCE_INIT;

static void memo_free(void *p) {
  res_memo_t *m = p;
  json_decref(m->copy);
  sg_buf_free(&m->text);
  free(m);
}

static void memo_init(void) { memo_ok = pthread_key_create(&memo_key, memo_free) == 0; }

static res_memo_t *memo_get(void) {
  pthread_once(&memo_once, memo_init);
  if (!memo_ok) return NULL;
  res_memo_t *m = pthread_getspecific(memo_key);
  if (m == NULL && (m = calloc(1, sizeof *m)) != NULL && pthread_setspecific(memo_key, m) != 0) {
    free(m);
    m = NULL;
  }
  return m;
}

/* 1 when a and b would render the same text: the same types, members in
 * the same order under the same keys, the same string bytes, integers and
 * reals bit for bit (0.0 and -0.0 differ). Depth-bounded like dump. */
static int same_value(const json_t *a, const json_t *b, int depth) {
  if (a == b) return 1;
  if (a == NULL || b == NULL || json_typeof(a) != json_typeof(b) || depth > MAX_DEPTH) return 0;
  switch (json_typeof(a)) {
  case JSON_OBJECT: {
    if (json_object_size(a) != json_object_size(b)) return 0;
    void *i = json_object_iter((json_t *)a), *j = json_object_iter((json_t *)b);
    for (; i && j; i = json_object_iter_next((json_t *)a, i), j = json_object_iter_next((json_t *)b, j)) {
      size_t n = json_object_iter_key_len(i);
      if (n != json_object_iter_key_len(j) || memcmp(json_object_iter_key(i), json_object_iter_key(j), n) != 0 ||
          !same_value(json_object_iter_value(i), json_object_iter_value(j), depth + 1))
        return 0;
    }
    return i == NULL && j == NULL;
  }
  case JSON_ARRAY: {
    size_t n = json_array_size(a);
    if (n != json_array_size(b)) return 0;
    for (size_t k = 0; k < n; k++)
      if (!same_value(json_array_get(a, k), json_array_get(b, k), depth + 1)) return 0;
    return 1;
  }
  case JSON_STRING: {
    size_t n = json_string_length(a);
    return n == json_string_length(b) && memcmp(json_string_value(a), json_string_value(b), n) == 0;
  }
  case JSON_INTEGER: return json_integer_value(a) == json_integer_value(b);
  case JSON_REAL: {
    double x = json_real_value(a), y = json_real_value(b);
    return memcmp(&x, &y, sizeof x) == 0;
  }
  default: return 1; /* true, false, null */
  }
}

/* The resource nested, as dump_nested writes it, from the memo when it
 * holds the same resource. */
static int dump_resource(const json_t *res, int flags, sg_buf_t *b) {
  res_memo_t *m = memo_get();
  if (m && m->copy && m->flags == flags && same_value(m->copy, res, 0))
    return sg_buf_append(b, m->text.data, m->text.len);
  size_t at = b->len;
  int rc = dump_nested(res, flags, b);
  if (rc != 0 || m == NULL) return rc;
  json_decref(m->copy);
  m->copy = NULL;
  sg_buf_reset(&m->text);
  if (b->len - at <= MEMO_MAX_TEXT && sg_buf_append(&m->text, b->data + at, b->len - at) == 0) {
    m->copy = json_deep_copy(res);
    m->flags = flags;
  }
  return 0;
}

static int dump_nested_extra(const json_t *obj, int flags, sg_buf_t *b, const json_t *resource) {
  /* Room for the trie of a usual attributes object (~30 keys) without
   * allocating; this recurses once, for the resource. */
  union {
    max_align_t align;
    char bytes[8192];
  } room;
  trie_t t;
  int rc = trie_build(&t, obj, &room, sizeof room, shapes_get()), first = 1;
  if (rc == 0) rc = sg_buf_putc(b, '{');
  if (rc == 0) rc = emit_members(&t, 0, NULL, flags, b, &first);
  for (size_t i = 0; rc == 0 && i < t.nkeys; i++) {
    if (!t.deferred[i]) continue;
    if (!first && (rc = sg_buf_putc(b, ','))) break;
    first = 0;
    if ((rc = put_str(b, t.keys[i].k, t.keys[i].klen))) break;
    if ((rc = sg_buf_putc(b, ':'))) break;
    rc = dump(t.keys[i].v, flags, b, 1);
  }
  if (rc == 0 && resource) {
    if (!first) rc = sg_buf_putc(b, ',');
    if (rc == 0) rc = sg_buf_append(b, "\"resource\":", 11);
    if (rc == 0) rc = dump_resource(resource, flags, b);
  }
  if (rc == 0) rc = sg_buf_putc(b, '}');
  trie_free(&t);
  return rc;
}

int sg_json_dump(const json_t *v, int flags, sg_buf_t *out) {
  if (v == NULL) return SG_EINVAL;
  /* Room for the common case in one go. */
  if (sg_buf_reserve(out, 256)) return SG_ENOMEM;
  if ((flags & SG_JSON_NEST) && json_is_object(v)) return dump_nested(v, flags, out);
  return dump(v, flags, out, 0);
}

json_t *sg_json_nested(const json_t *obj) {
  if (!json_is_object(obj)) return json_incref((json_t *)obj);
  sg_buf_t b = SG_BUF_INIT;
  json_t *r = NULL;
  /* jansson reads back exactly what we write (reals as %.17g round-trip). */
  if (dump_nested(obj, 0, &b) == 0)
    r = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
  sg_buf_free(&b);
  return r;
}

size_t sg__json_nest_probes(const json_t *obj) {
  trie_t t;
  size_t probes = 0;
  if (!json_is_object(obj)) return 0;
  if (trie_build(&t, obj, NULL, 0, NULL) == 0) probes = t.probes;
  trie_free(&t);
  return probes;
}

/* ---- path look-up ---------------------------------------------------------- */

/* sg_json_path_get with a budget of object look-ups: each '.' can open a
 * branch (a member named by the prefix, then the rest below it), so keys
 * made to match many prefixes of a long path could make the search
 * exponential. */
static json_t *path_get(const json_t *v, const char *path, size_t len, int *budget) {
  for (int depth = 0; v && depth < 64; depth++) {
    if (json_is_object(v)) {
      if (--*budget < 0) return NULL;
      json_t *r = json_object_getn(v, path, len);
      if (r) return r;
      for (size_t i = 0; i < len; i++) {
        if (path[i] != '.') continue;
        if (--*budget < 0) return NULL;
        json_t *c = json_object_getn(v, path, i);
        if (c && (json_is_object(c) || json_is_array(c))) {
          json_t *found = path_get(c, path + i + 1, len - i - 1, budget);
          if (found) return found;
        }
      }
      return NULL;
    }
    if (json_is_array(v)) {
      size_t i = 0;
      while (i < len && path[i] != '.') i++;
      long idx = seg_index(path, i);
      if (idx < 0) return NULL;
      json_t *c = json_array_get(v, (size_t)idx);
      if (i == len) return c;
      v = c;
      path += i + 1;
      len -= i + 1;
      continue;
    }
    return NULL;
  }
  return NULL;
}

json_t *sg_json_path_get(const json_t *v, const char *path, size_t len) {
  int budget = SG_JSON_PATH_MAX_LOOKUPS;
  return path_get(v, path, len, &budget);
}
