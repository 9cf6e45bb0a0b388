/* json_nest.c - compact JSON text (jansson-identical) and Agenta's nesting
 * of dotted attribute keys. See json_nest.h for the rules. */
#include "json_nest.h"

#include <math.h>
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
  } else {
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
  char tmp[32];
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
  case JSON_INTEGER: {
    int n = snprintf(tmp, sizeof tmp, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return sg_buf_append(b, tmp, (size_t)n);
  }
  case JSON_REAL: return put_real(b, json_real_value(v), flags & SG_JSON_SHORT_REAL);
  case JSON_TRUE: return sg_buf_append(b, "true", 4);
  case JSON_FALSE: return sg_buf_append(b, "false", 5);
  case JSON_NULL: return sg_buf_append(b, "null", 4);
  }
  return SG_EINVAL;
}

/* ---- nesting --------------------------------------------------------------- */

typedef struct {
  const char *seg;
  size_t seglen;
  const json_t *value; /* value of the key ending here, or NULL */
  size_t key;          /* index of that key */
  int first, last, next;
  size_t nchild;
  long idx;            /* seg as a canonical index, or -1 */
  int all_idx;         /* every child has idx >= 0 */
  long maxidx;
} node_t;

typedef struct {
  const char *k;
  size_t klen;
  const json_t *v;
} key_t_;

typedef struct {
  node_t *nodes;
  size_t nn, cap;
  int *hash;           /* open addressing: node index + 1, 0 empty */
  size_t hcap;
  int *parent_of;      /* node -> parent (for hashing) */
  key_t_ *keys;
  size_t nkeys;
  unsigned char *deferred;
  size_t probes;       /* slots looked at by child(), for the tests */
} trie_t;

static long seg_index(const char *s, size_t n) {
  if (n == 0 || n > 9) return -1;
  if (n > 1 && s[0] == '0') return -1;
  long v = 0;
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

/* The child of parent named seg, created when absent. -1 on ENOMEM. */
static int child(trie_t *t, int parent, const char *seg, size_t n) {
  size_t mask = t->hcap - 1, h = hash_seg(parent, seg, n) & mask;
  for (;;) {
    int e = t->hash[h];
    t->probes++;
    if (e == 0) break;
    node_t *c = &t->nodes[e - 1];
    if (t->parent_of[e - 1] == parent && c->seglen == n && memcmp(c->seg, seg, n) == 0)
      return e - 1;
    h = (h + 1) & mask;
  }
  if (t->nn == t->cap) return -1; /* sized up front; cannot happen */
  int id = (int)t->nn++;
  node_t *c = &t->nodes[id];
  memset(c, 0, sizeof *c);
  c->seg = seg;
  c->seglen = n;
  c->first = c->last = c->next = -1;
  c->idx = seg_index(seg, n);
  c->all_idx = 1;
  c->maxidx = -1;
  t->parent_of[id] = parent;
  t->hash[h] = id + 1;
  if (parent >= 0) {
    node_t *p = &t->nodes[parent];
    if (p->last >= 0) t->nodes[p->last].next = id;
    else p->first = id;
    p->last = id;
    p->nchild++;
    if (c->idx < 0) p->all_idx = 0;
    else if (c->idx > p->maxidx) p->maxidx = c->idx;
  }
  return id;
}

/* A key is split unless a segment is empty or it has more segments than
 * SG_JSON_NEST_MAX_SEGMENTS: rendering recurses once per segment, so the
 * bound keeps a hostile key ("a.a.a..." x 60,000) from exhausting the
 * stack, and such a key is kept as sent. */
static int splittable(const char *k, size_t n) {
  if (n == 0 || k[0] == '.' || k[n - 1] == '.') return 0;
  size_t nseg = 1;
  for (size_t i = 1; i < n; i++) {
    if (k[i] != '.') continue;
    if (k[i - 1] == '.' || ++nseg > SG_JSON_NEST_MAX_SEGMENTS) return 0;
  }
  return 1;
}

static void trie_free(trie_t *t) {
  free(t->nodes);
  free(t->hash);
  free(t->parent_of);
  free(t->keys);
  free(t->deferred);
}

/* Node 0 is the root (the top-level object). */
static int trie_build(trie_t *t, const json_t *obj) {
  memset(t, 0, sizeof *t);
  size_t nk = json_object_size(obj), nseg = 1;
  t->keys = calloc(nk ? nk : 1, sizeof *t->keys);
  t->deferred = calloc(nk ? nk : 1, 1);
  if (!t->keys || !t->deferred) return SG_ENOMEM;
  for (void *it = json_object_iter((json_t *)obj); it; it = json_object_iter_next((json_t *)obj, it)) {
    key_t_ *k = &t->keys[t->nkeys++];
    k->k = json_object_iter_key(it);
    k->klen = json_object_iter_key_len(it);
    k->v = json_object_iter_value(it);
    nseg++;
    if (splittable(k->k, k->klen))
      for (size_t i = 0; i < k->klen; i++) nseg += k->k[i] == '.';
  }
  t->cap = nseg;
  t->hcap = 16;
  while (t->hcap < 2 * nseg) t->hcap *= 2;
  t->nodes = malloc(nseg * sizeof *t->nodes);
  t->parent_of = malloc(nseg * sizeof *t->parent_of);
  t->hash = calloc(t->hcap, sizeof *t->hash);
  if (!t->nodes || !t->parent_of || !t->hash) return SG_ENOMEM;
  int root = child(t, -2, "", 0); /* parent -2: nobody's child */
  (void)root;
  for (size_t i = 0; i < t->nkeys; i++) {
    key_t_ *k = &t->keys[i];
    int cur = 0;
    if (!splittable(k->k, k->klen)) {
      cur = child(t, 0, k->k, k->klen);
    } else {
      size_t s = 0;
      for (size_t j = 0; j <= k->klen; j++) {
        if (j == k->klen || k->k[j] == '.') {
          cur = child(t, cur, k->k + s, j - s);
          s = j + 1;
        }
      }
    }
    t->nodes[cur].value = k->v;
    t->nodes[cur].key = i;
  }
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
      if (!*first && sg_buf_putc(b, ',')) return SG_ENOMEM;
      *first = 0;
      if ((rc = put_str(b, json_object_iter_key(it), json_object_iter_key_len(it)))) return rc;
      if (sg_buf_putc(b, ':')) return SG_ENOMEM;
      if ((rc = dump(json_object_iter_value(it), flags, b, 1))) return rc;
    }
  }
  for (int c = t->nodes[n].first; c >= 0; c = t->nodes[c].next) {
    node_t *cn = &t->nodes[c];
    if (own && json_object_getn(own, cn->seg, cn->seglen)) {
      defer_subtree(t, c);
      continue;
    }
    if (!*first && sg_buf_putc(b, ',')) return SG_ENOMEM;
    *first = 0;
    if ((rc = put_str(b, cn->seg, cn->seglen))) return rc;
    if (sg_buf_putc(b, ':')) return SG_ENOMEM;
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
  if (nd->all_idx && nd->maxidx < 16 + 4 * (long)nd->nchild) {
    size_t len = (size_t)nd->maxidx + 1;
    int *slot = malloc(len * sizeof *slot);
    if (!slot) return SG_ENOMEM;
    for (size_t i = 0; i < len; i++) slot[i] = -1;
    for (int c = nd->first; c >= 0; c = t->nodes[c].next) slot[t->nodes[c].idx] = c;
    rc = sg_buf_putc(b, '[');
    for (size_t i = 0; rc == 0 && i < len; i++) {
      if (i) rc = sg_buf_putc(b, ',');
      if (rc == 0) rc = slot[i] < 0 ? sg_buf_append(b, "null", 4) : emit(t, slot[i], flags, b);
    }
    free(slot);
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

static int dump_nested_extra(const json_t *obj, int flags, sg_buf_t *b, const json_t *resource) {
  trie_t t;
  int rc = trie_build(&t, obj), first = 1;
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
    if (rc == 0) rc = dump_nested(resource, flags, b);
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
  if (trie_build(&t, obj) == 0) probes = t.probes;
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
