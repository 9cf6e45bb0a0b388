/* test_json_nest.c - nesting of dotted attribute keys under hostile input:
 * keys of very many segments and keys chosen to collide in the trie's hash
 * table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <inttypes.h>
#include <math.h>

#include "buf.h"
#include "err.h"
#include "jalloc.h"
#include "json_nest.h"
#include "seed.h"

/* "a.a.a..." of nseg segments (NUL-terminated, caller frees). */
static char *dotted(size_t nseg) {
  char *k = malloc(2 * nseg);
  assert_non_null(k);
  for (size_t i = 0; i < nseg; i++) {
    k[2 * i] = 'a';
    k[2 * i + 1] = i + 1 < nseg ? '.' : '\0';
  }
  return k;
}

static char *dump(const json_t *v, int flags) {
  sg_buf_t b = SG_BUF_INIT;
  assert_int_equal(sg_json_dump(v, flags, &b), 0);
  return b.data;
}

/* A key of 60,000 segments (a 120 KB body) used to recurse once per
 * segment and overflow the stack. Keys of more segments than
 * SG_JSON_NEST_MAX_SEGMENTS are now kept flat; up to it they nest. */
static void test_deep_key(void **st) {
  (void)st;
  char *deep = dotted(60000);
  json_t *o = json_pack("{s:i,s:s}", deep, 1, "b.c", "x");
  char *nested = dump(o, SG_JSON_NEST), *flat;
  assert_int_equal(strncmp(nested, "{\"a.a.", 6), 0);            /* kept as sent */
  assert_int_equal(strncmp(nested + 2 + strlen(deep), "\":1,", 4), 0);
  assert_string_equal(nested + 2 + strlen(deep) + 4, "\"b\":{\"c\":\"x\"}}"); /* b.c nests */
  free(nested);

  /* The same key in the resource, and through sg_json_nested. */
  json_t *res = json_pack("{s:s}", deep, "svc");
  sg_buf_t b = SG_BUF_INIT;
  assert_int_equal(sg_json_dump_attributes(o, res, SG_JSON_NEST, &b), 0);
  assert_non_null(strstr(b.data, "\"resource\":{\"a.a.a."));
  sg_buf_free(&b);
  json_t *n = sg_json_nested(o);
  assert_non_null(n);
  assert_int_equal(json_integer_value(json_object_get(n, deep)), 1);
  assert_string_equal(json_string_value(json_object_get(json_object_get(n, "b"), "c")), "x");
  json_decref(n);
  json_decref(res);
  json_decref(o);
  free(deep);

  /* The edge: SG_JSON_NEST_MAX_SEGMENTS segments nest, one more does not. */
  char *at = dotted(SG_JSON_NEST_MAX_SEGMENTS), *over = dotted(SG_JSON_NEST_MAX_SEGMENTS + 1);
  o = json_pack("{s:i}", at);
  nested = dump(o, SG_JSON_NEST);
  size_t depth = 0;
  for (const char *p = nested; *p; p++) depth += *p == '{';
  assert_int_equal(depth, SG_JSON_NEST_MAX_SEGMENTS);
  free(nested);
  json_decref(o);
  o = json_pack("{s:i}", over);
  nested = dump(o, SG_JSON_NEST);
  flat = dump(o, 0);
  assert_string_equal(nested, flat);
  free(nested);
  free(flat);
  json_decref(o);
  free(at);
  free(over);
}

/* One text per case: keys that share leading segments with the key before
 * them (the trie reuses those nodes), keys that share only bytes ("a.b" and
 * "a.bc", "a" and "ab"), a key that is a prefix of the previous one, escaped
 * segments, and keys whose "..", escapes and dots fall on either side of an
 * 8-byte boundary (the key scan reads 8 bytes at a time). */
static void test_grouped_keys(void **st) {
  (void)st;
  static const char *cases[][2] = {
      {"{\"gen_ai.request.model\":\"m\",\"gen_ai.request.top_p\":1,\"gen_ai.response.id\":\"r\",\"gen_ai.system\":\"s\",\"llm\":2}",
       "{\"gen_ai\":{\"request\":{\"model\":\"m\",\"top_p\":1},\"response\":{\"id\":\"r\"},\"system\":\"s\"},\"llm\":2}"},
      {"{\"a.b\":1,\"a.b.c\":2,\"a.bc\":3,\"ab.c\":4,\"a\":{\"x\":5},\"a.b\\\"q.r\":6,\"a.b\\\"q.s\":7}",
       "{\"a\":{\"x\":5,\"b\":1,\"bc\":3,\"b\\\"q\":{\"r\":6,\"s\":7}},\"ab\":{\"c\":4},\"a.b.c\":2}"},
      {"{\"a.b.c\":1,\"a.b\":{\"x\":0},\"a.b.d\":2,\"a.0\":3}", "{\"a\":{\"b\":{\"x\":0,\"c\":1,\"d\":2},\"0\":3}}"},
      {"{\"x.0\":1,\"x.1\":2,\"x.1.y\":3,\"x.10\":4}",
       "{\"x\":[1,2,null,null,null,null,null,null,null,null,4],\"x.1.y\":3}"},
      {"{\"abcdefg..x\":1,\"abcdefgh.x\":2,\"abcdefg.\":3,\"abcdefghijklmno.p\":4,\"abcdefghijklmno..p\":5,"
       "\"abcdefghij\\\"k.l\":6,\"abcdefghijklmnop\\u0001.q\":7}",
       "{\"abcdefg..x\":1,\"abcdefgh\":{\"x\":2},\"abcdefg.\":3,\"abcdefghijklmno\":{\"p\":4},\"abcdefghijklmno..p\":5,"
       "\"abcdefghij\\\"k\":{\"l\":6},\"abcdefghijklmnop\\u0001\":{\"q\":7}}"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    json_error_t e;
    json_t *o = json_loads(cases[i][0], 0, &e);
    assert_non_null(o);
    char *got = dump(o, SG_JSON_NEST);
    assert_string_equal(got, cases[i][1]);
    free(got);
    json_decref(o);
  }
  /* Only the last segment of each key after the first is looked for:
   * 0 + 1 + 2 + 3 + 4 children compared under "g.r". */
  json_t *g = json_pack("{s:i,s:i,s:i,s:i,s:i}", "g.r.k0", 0, "g.r.k1", 1, "g.r.k2", 2, "g.r.k3", 3, "g.r.k4", 4);
  assert_int_equal(sg__json_nest_probes(g), 10);
  json_decref(g);
}

/* ---- hash flooding ------------------------------------------------------- */

/* The hash json_nest used before: 32-bit FNV-1a, the parent's index xored
 * into the offset basis (0 for the top-level keys). */
static uint32_t old_fnv_step(uint32_t h, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";

/* n keys of 3*nblocks characters whose old hashes agree in the low `bits`
 * bits: FNV-1a modulo 2^bits only depends on the state modulo 2^bits, so
 * for each 3-character block we pick `per` blocks that take the state from
 * the previous common value to one common value; any choice of one block
 * per position then collides (a multicollision, 8^6 keys from 6 blocks). */
static char **colliding_keys(size_t n, int bits, int nblocks, int per) {
  const uint32_t mask = (1u << bits) - 1, na = sizeof alphabet - 1, ncand = na * na * na;
  uint32_t *count = calloc(mask + 1, sizeof *count), state = 2166136261u & mask;
  char(*blocks)[16][3] = calloc((size_t)nblocks, sizeof *blocks);
  assert_non_null(count);
  assert_non_null(blocks);
  for (int b = 0; b < nblocks; b++) {
    memset(count, 0, (mask + 1) * sizeof *count);
    uint32_t best = 0;
    for (uint32_t c = 0; c < ncand; c++) {
      char s[3] = {alphabet[c % na], alphabet[c / na % na], alphabet[c / na / na]};
      uint32_t e = old_fnv_step(state, s, 3) & mask;
      if (++count[e] > count[best]) best = e;
    }
    assert_true(count[best] >= (uint32_t)per);
    int k = 0;
    for (uint32_t c = 0; c < ncand && k < per; c++) {
      char s[3] = {alphabet[c % na], alphabet[c / na % na], alphabet[c / na / na]};
      if ((old_fnv_step(state, s, 3) & mask) == best) memcpy(blocks[b][k++], s, 3);
    }
    state = best;
  }
  char **keys = calloc(n, sizeof *keys);
  assert_non_null(keys);
  for (size_t i = 0; i < n; i++) {
    keys[i] = malloc(3 * (size_t)nblocks + 1);
    size_t x = i;
    for (int b = 0; b < nblocks; b++, x /= (size_t)per) memcpy(keys[i] + 3 * b, blocks[b][x % (size_t)per], 3);
    keys[i][3 * nblocks] = '\0';
    assert_int_equal(old_fnv_step(2166136261u, keys[i], 3 * (size_t)nblocks) & mask, state);
  }
  free(count);
  free(blocks);
  return keys;
}

static char **random_keys(size_t n, size_t len) {
  char **keys = calloc(n, sizeof *keys);
  assert_non_null(keys);
  for (size_t i = 0; i < n; i++) {
    keys[i] = malloc(len + 1);
    for (size_t j = 0; j < len; j++) keys[i][j] = alphabet[rand() % (int)(sizeof alphabet - 1)];
    keys[i][len] = '\0';
  }
  return keys;
}

static json_t *object_of(char **keys, size_t n) {
  json_t *o = json_object();
  for (size_t i = 0; i < n; i++) assert_int_equal(json_object_set_new(o, keys[i], json_integer(1)), 0);
  for (size_t i = 0; i < n; i++) free(keys[i]);
  free(keys);
  return o;
}

/* 50,000 top-level keys that all hashed to one slot of the old 2^17-slot
 * table (the 750 KB request that held a worker for 7 s) must cost
 * about as many probes as random keys. The table is keyed now, so the
 * same set is as good as random. */
static void test_colliding_keys(void **st) {
  (void)st;
  srand(test_seed("test_colliding_keys"));
  const size_t n = 50000; /* 50,001 nodes: a table of 2^17 slots */
  json_t *bad = object_of(colliding_keys(n, 17, 6, 8), n);
  json_t *good = object_of(random_keys(n, 18), n);
  assert_int_equal(json_object_size(bad), n);
  assert_int_equal(json_object_size(good), n);
  size_t pb = sg__json_nest_probes(bad), pg = sg__json_nest_probes(good);
  printf("# probes: colliding %zu, random %zu\n", pb, pg);
  assert_true(pg >= n && pg < 4 * n);
  assert_true(pb < 3 * pg);
  /* And the rendering is whole: one member per key. */
  char *t = dump(bad, SG_JSON_NEST);
  size_t members = 0;
  for (const char *p = t; *p; p++) members += *p == ':';
  assert_int_equal(members, n);
  free(t);
  json_decref(bad);
  json_decref(good);
}

/* Keys that match many prefixes of a path ("a" and "a.a" at every level)
 * made the look-up explore every way of splitting the path: 2^34 for 50
 * segments (it never finished). It now gives up after
 * SG_JSON_PATH_MAX_LOOKUPS look-ups; ordinary paths are still found. */
static void test_path_search_bounded(void **st) {
  (void)st;
  json_t *lv[51];
  lv[0] = json_pack("{s:i}", "z", 1);
  lv[1] = json_pack("{s:O}", "a", lv[0]);
  for (int i = 2; i <= 50; i++) lv[i] = json_pack("{s:O,s:O}", "a", lv[i - 1], "a.a", lv[i - 2]);
  char path[128];
  size_t n = 0;
  for (int i = 0; i < 50; i++) n += (size_t)sprintf(path + n, "a.");
  n += (size_t)sprintf(path + n, "y"); /* absent: every split is tried */
  assert_null(sg_json_path_get(lv[50], path, n));
  path[n - 1] = 'z'; /* present, found on the first descent */
  assert_ptr_equal(sg_json_path_get(lv[50], path, n), json_object_get(lv[0], "z"));
  assert_ptr_equal(sg_json_path_get(lv[50], "a.a.a.a", 7), lv[46]);
  for (int i = 0; i <= 50; i++) json_decref(lv[i]);
}

/* ---- the resource's memo -------------------------------------------------- */

/* The attributes column of {"a.b":1} with resource r, and what it must be:
 * the resource nested on its own (sg_json_nested does not use the memo). */
static void check_with_resource(json_t *r) {
  json_t *at = json_pack("{s:i}", "a.b", 1);
  sg_buf_t b = SG_BUF_INIT;
  assert_int_equal(sg_json_dump_attributes(at, r, SG_JSON_NEST, &b), 0);
  json_t *n = sg_json_nested(r);
  char *nt = dump(n, 0), want[4096];
  snprintf(want, sizeof want, "{\"a\":{\"b\":1},\"resource\":%s}", nt);
  assert_string_equal(b.data, want);
  free(nt);
  json_decref(n);
  sg_buf_free(&b);
  json_decref(at);
}

/* The text of the last resource is reused for the next span with the same
 * resource, and only then: a resource changed in place (a value, the order
 * of its members, 0.0 against -0.0, 1 against 1.0, a member added) or
 * another one is rendered anew. */
static void test_resource_memo(void **st) {
  (void)st;
  json_t *r = json_pack("{s:s,s:s,s:f,s:i}", "service.name", "svc", "host.name", "h", "x.r", 0.0, "x.i", 1);
  check_with_resource(r);
  check_with_resource(r); /* from the memo */
  json_object_set_new(r, "x.r", json_real(-0.0));
  check_with_resource(r);
  json_object_set_new(r, "x.i", json_real(1.0));
  check_with_resource(r);
  json_t *v = json_incref(json_object_get(r, "service.name"));
  json_object_del(r, "service.name");
  json_object_set_new(r, "service.name", v); /* the same members, another order */
  check_with_resource(r);
  json_object_set_new(r, "service.version", json_string("2"));
  check_with_resource(r);
  json_t *other = json_pack("{s:s}", "service.name", "other");
  check_with_resource(other);
  check_with_resource(r);
  json_string_set(json_object_get(r, "host.name"), "h2"); /* a member's own value changed */
  check_with_resource(r);
  json_decref(other);
  json_decref(r);
}

/* ---- numbers ---------------------------------------------------------------- */

static uint64_t rng;
static uint64_t next64(void) { /* splitmix64 */
  uint64_t z = (rng += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

static size_t g17_hits;

/* The renderer's "%.17g" equals snprintf's whenever it makes one, and the
 * column's text equals jansson's json_dumps (the contract of json_nest.h). */
static void check_real(double d) {
  if (d != d || d - d != 0) return;
  char want[64], got[32];
  snprintf(want, sizeof want, "%.17g", d);
  int n = sg__json_g17(d, got);
  if (n > 0) {
    g17_hits++;
    if (strcmp(got, want) != 0) fail_msg("%%.17g of %a: got %s, snprintf %s", d, got, want);
    assert_int_equal(n, strlen(want));
  }
  json_t *v = json_real(d);
  char *j = sg_json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT), *t = dump(v, 0);
  if (strcmp(t, j) != 0) fail_msg("real %a: rendered %s, jansson %s", d, t, j);
  free(j);
  free(t);
  json_decref(v);
}

static void test_reals_match_snprintf(void **st) {
  (void)st;
  rng = test_seed("test_reals_match_snprintf");
  /* fixed edges: powers of ten and their neighbours, exponent switches,
   * carries (9.99...), halves that round to even at the 17th digit */
  for (int k = -20; k <= 40; k++) {
    double p = pow(10, k);
    check_real(p);
    check_real(-p);
    check_real(nextafter(p, 0));
    check_real(nextafter(p, INFINITY));
    check_real(p * 9.999999999999999);
    check_real(p * 0.5);
  }
  const double fixed[] = {0.1, 0.2, 0.95, 1.5, 100, 1e16, 1e17, 123456789012345678.0, 1e-4, 9.99e-5,
                          0.0001, 0.00001, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                          1000000000000000.25, 1000000000000000.75, 4503599627370495.5, 0.0,
                          -0.0, 170141183460469231731687303715884105728.0};
  for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) check_real(fixed[i]);
  for (int i = 0; i < 300000; i++) {
    uint64_t r = next64(), bits;
    double d;
    switch (i % 6) {
    case 0: /* any bit pattern */
      bits = r;
      memcpy(&d, &bits, sizeof d);
      break;
    case 1: /* log-uniform over the range attributes carry, and past it */
      d = pow(10, (double)(r >> 11) / (double)(UINT64_C(1) << 53) * 60 - 20);
      break;
    case 2: { /* short decimals: costs, temperatures, latencies */
      char t[40];
      snprintf(t, sizeof t, "%" PRIu64 "e-%d", (r >> 8) % 10000000, (int)(r % 12));
      d = strtod(t, NULL);
      break;
    }
    case 3: /* integers as reals, up to 2^63 */
      d = (double)(r >> (r % 64));
      break;
    case 4: /* 53-bit mantissas over small powers of two: 18+ digits, ties */
      d = ldexp((double)((r >> 11) | UINT64_C(1) << 52), -(int)(r % 60) - 1);
      break;
    default: /* neighbours of short decimals */
      d = nextafter((double)(r % 100000) / 1000, (r & 1) ? INFINITY : 0);
    }
    check_real((r >> 63) ? -d : d);
  }
  printf("# %zu of the reals took the renderer's own path\n", g17_hits);
  assert_true(g17_hits > 150000);
}

static void test_integers_match_jansson(void **st) {
  (void)st;
  rng = test_seed("test_integers_match_jansson");
  const json_int_t fixed[] = {0, 1, -1, 9, 10, -10, 99, 100, INT64_MAX, INT64_MIN, INT64_MIN + 1,
                              1000000000000000000, -999999999999999999};
  for (size_t i = 0; i < sizeof fixed / sizeof *fixed + 100000; i++) {
    json_int_t v = i < sizeof fixed / sizeof *fixed ? fixed[i] : (json_int_t)(next64() >> (next64() % 64));
    if (i % 2 && v != INT64_MIN) v = -v;
    json_t *j = json_integer(v);
    char *want = sg_json_dumps(j, JSON_ENCODE_ANY), *got = dump(j, 0);
    assert_string_equal(got, want);
    free(want);
    free(got);
    json_decref(j);
  }
}

/* ---- the kept shapes ---------------------------------------------------- */

static json_t *random_value(int depth) {
  switch (next64() % 7) {
  case 0: return json_integer((json_int_t)(next64() % 5));
  case 1: return json_pack("{s:i,s:s}", "b", 1, "x.y", "z"); /* merges with dotted children */
  case 2: return json_string("s\"q");
  case 3: return json_pack("[i,f]", 1, 0.5);
  case 4: return json_real((double)(next64() % 1000) / 7.0);
  case 5: return depth ? json_null() : json_pack("{s:o}", "c", random_value(1));
  default: return json_true();
  }
}

/* Objects drawn from 14 sequences of keys (more than the thread keeps;
 * three of them equal to another but for one byte or the order of two
 * keys; keys sharing leading segments, empty segments, escapes), each time
 * with other values, render the same with the kept shapes as built anew,
 * with and without a resource. */
static void test_shapes_same_text(void **st) {
  (void)st;
  rng = test_seed("test_shapes_same_text");
  static const char alpha[] = "aab0123.._\"\\\x01xyz";
  enum { NSEQ = 14, MAXK = 20 };
  char *seq[NSEQ][MAXK];
  int seqn[NSEQ];
  for (int q = 0; q < NSEQ - 3; q++) {
    seqn[q] = 1 + (int)(next64() % (MAXK - 1));
    for (int i = 0; i < seqn[q]; i++) {
      size_t len = next64() % (next64() % 2 ? 6 : 40), pre = 0;
      const char *prev = i ? seq[q][i - 1] : "";
      if (i && next64() % 3 == 0) pre = next64() % (strlen(prev) + 1); /* grouped with the key before */
      char *k = malloc(pre + 1 + len + 1);
      assert_non_null(k);
      memcpy(k, prev, pre);
      size_t at = pre;
      if (pre) k[at++] = '.';
      for (size_t j = 0; j < len; j++) k[at++] = alpha[next64() % (sizeof alpha - 1)];
      k[at] = '\0';
      seq[q][i] = k;
    }
  }
  for (int q = NSEQ - 3; q < NSEQ; q++) {
    seqn[q] = seqn[q - 3];
    for (int i = 0; i < seqn[q]; i++) assert_non_null(seq[q][i] = strdup(seq[q - 3][i]));
    if (q == NSEQ - 1 && seqn[q] > 1) {
      char *tmp = seq[q][0];
      seq[q][0] = seq[q][1];
      seq[q][1] = tmp;
    } else if (seq[q][seqn[q] - 1][0]) {
      seq[q][seqn[q] - 1][0] ^= 1;
    }
  }
  json_t *res = json_pack("{s:s,s:i}", "service.name", "svc", "host.cpu.count", 4);
  for (int round = 0; round < 20000; round++) {
    int q = (int)(next64() % NSEQ);
    json_t *o = json_object();
    for (int i = 0; i < seqn[q]; i++) assert_int_equal(json_object_set_new_nocheck(o, seq[q][i], random_value(0)), 0);
    json_t *r = round % 2 ? res : NULL;
    sg_buf_t kept = SG_BUF_INIT, fresh = SG_BUF_INIT;
    assert_int_equal(sg_json_dump_attributes(o, r, SG_JSON_NEST, &kept), 0);
    sg__json_nest_shapes(0);
    assert_int_equal(sg_json_dump_attributes(o, r, SG_JSON_NEST, &fresh), 0);
    sg__json_nest_shapes(1);
    assert_string_equal(kept.data, fresh.data);
    sg_buf_free(&kept);
    sg_buf_free(&fresh);
    json_decref(o);
  }
  json_decref(res);
  for (int q = 0; q < NSEQ; q++)
    for (int i = 0; i < seqn[q]; i++) free(seq[q][i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_deep_key),
      cmocka_unit_test(test_grouped_keys),
      cmocka_unit_test(test_colliding_keys),
      cmocka_unit_test(test_path_search_bounded),
      cmocka_unit_test(test_resource_memo),
      cmocka_unit_test(test_reals_match_snprintf),
      cmocka_unit_test(test_integers_match_jansson),
      cmocka_unit_test(test_shapes_same_text),
  };
  return cmocka_run_group_tests_name("json_nest", tests, NULL, NULL);
}
