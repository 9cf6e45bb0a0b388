/* test_hash.c - the keyed hash (hash.h) against keys chosen to collide.
 *
 * The tables indexed by request data probe linearly in a power-of-two
 * table of at least twice the keys (json_nest.c's trie, pgsink.c's rows by
 * (project, trace, span)). These tests fill such a table, counting the
 * slots looked at, with keys built to share one slot: under the hash the
 * span table used before (FNV-1a), and under SipHash with a key fixed in
 * advance (what an unseeded SipHash would be). Both must cost about what
 * random keys cost. test_json_nest.c does the same through the trie.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "hash.h"
#include "seed.h"

#define KEY 48 /* pgsink's key: project, trace id, span id */

typedef uint64_t (*hash_fn)(const uint8_t *k);

static uint64_t keyed(const uint8_t *k) { return sg_hash(k, KEY); }

/* The number of slots looked at inserting keys[0..n) (distinct) into a
 * table sized as pgsink sizes it. */
static size_t probes(uint8_t (*keys)[KEY], size_t n, hash_fn h) {
  size_t nslots = 16, count = 0;
  while (nslots < 2 * n) nslots *= 2;
  uint32_t *slots = calloc(nslots, sizeof *slots);
  assert_non_null(slots);
  for (size_t i = 0; i < n; i++) {
    size_t s = (size_t)h(keys[i]) & (nslots - 1);
    for (;; s = (s + 1) & (nslots - 1)) {
      count++;
      if (slots[s] == 0) break;
    }
    slots[s] = (uint32_t)i + 1;
  }
  free(slots);
  return count;
}

static uint8_t (*random_keys(size_t n))[KEY] {
  uint8_t(*keys)[KEY] = malloc(n * KEY);
  assert_non_null(keys);
  for (size_t i = 0; i < n; i++)
    for (int j = 0; j < KEY; j++) keys[i][j] = (uint8_t)rand();
  return keys;
}

/* ---- FNV-1a, as pgsink's key_hash was ----------------------------------- */

static uint64_t fnv_from(uint64_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}
static uint64_t old_fnv(const uint8_t *k) { return fnv_from(1469598103934665603ULL, k, KEY); }

/* n keys (one project) whose FNV-1a agree in the low `bits` bits. Modulo
 * 2^bits FNV-1a only depends on its state modulo 2^bits, so for each
 * 3-byte block of the ids we take 4 blocks that lead from the previous
 * common state to one common state: 8 such blocks (the trace id and half
 * the span id) give 4^8 colliding keys. */
static uint8_t (*fnv_colliding(size_t n, int bits))[KEY] {
  const uint64_t mask = (1ULL << bits) - 1;
  uint32_t *count = calloc(mask + 1, sizeof *count);
  uint8_t(*keys)[KEY] = random_keys(n), blocks[8][4][3];
  assert_non_null(count);
  uint8_t fixed[KEY];
  memcpy(fixed, keys[0], KEY); /* the project and the end of the span id */
  uint64_t state = fnv_from(1469598103934665603ULL, fixed, 16);
  for (int b = 0; b < 8; b++) {
    memset(count, 0, (mask + 1) * sizeof *count);
    uint64_t best = 0;
    for (uint32_t c = 0; c < (1u << 20); c++) {
      uint8_t s[3] = {(uint8_t)c, (uint8_t)(c >> 8), (uint8_t)(c >> 16)};
      uint64_t e = fnv_from(state, s, 3) & mask;
      if (++count[e] > count[best]) best = e;
    }
    assert_true(count[best] >= 4);
    int k = 0;
    for (uint32_t c = 0; c < (1u << 20) && k < 4; c++) {
      uint8_t s[3] = {(uint8_t)c, (uint8_t)(c >> 8), (uint8_t)(c >> 16)};
      if ((fnv_from(state, s, 3) & mask) == best) memcpy(blocks[b][k++], s, 3);
    }
    state = best;
  }
  assert_true(n <= 65536);
  for (size_t i = 0; i < n; i++) {
    memcpy(keys[i], fixed, 16);
    for (int b = 0; b < 8; b++) memcpy(keys[i] + 16 + 3 * b, blocks[b][(i >> (2 * b)) & 3], 3);
    memcpy(keys[i] + 40, fixed + 40, 8);
  }
  free(count);
  return keys;
}

static void test_fnv_colliding_ids(void **st) {
  (void)st;
  const size_t n = 50000; /* a table of 2^17 slots */
  uint8_t(*bad)[KEY] = fnv_colliding(n, 17), (*good)[KEY] = random_keys(n);
  for (size_t i = 1; i < n; i++) { /* the set is the attack it claims to be */
    assert_int_equal(old_fnv(bad[i]) & 0x1ffff, old_fnv(bad[0]) & 0x1ffff);
    assert_memory_not_equal(bad[i], bad[i - 1], KEY);
  }
  size_t pb = probes(bad, n, keyed), pg = probes(good, n, keyed);
  printf("# probes: colliding under FNV-1a %zu, random %zu (keyed hash)\n", pb, pg);
  assert_true(pg < 4 * n);
  assert_true(pb < 3 * pg);
  free(bad);
  free(good);
}

/* ---- SipHash under a key known in advance --------------------------------- */

static const unsigned char zero_key[crypto_shorthash_KEYBYTES];

static uint64_t zero_keyed(const uint8_t *k) {
  unsigned char out[crypto_shorthash_BYTES];
  uint64_t h;
  crypto_shorthash(out, k, KEY, zero_key);
  memcpy(&h, out, sizeof h);
  return h;
}

/* Keys found by trying random ones until n share the low `bits` bits of
 * SipHash under the all-zero key: what an attacker could precompute if the
 * key were not drawn per process. */
static void test_fixed_key_set(void **st) {
  (void)st;
  const size_t n = 1000; /* a table of 2^11 slots */
  const uint64_t mask = (1u << 11) - 1;
  uint8_t(*bad)[KEY] = malloc(n * KEY), (*good)[KEY] = random_keys(n);
  assert_non_null(bad);
  for (size_t i = 0; i < n;) {
    for (int j = 0; j < KEY; j++) bad[i][j] = (uint8_t)rand();
    if ((zero_keyed(bad[i]) & mask) == 0) i++;
  }
  size_t fixed = probes(bad, n, zero_keyed), pb = probes(bad, n, keyed), pg = probes(good, n, keyed);
  printf("# probes: %zu under the fixed key, %zu keyed; random %zu keyed\n", fixed, pb, pg);
  assert_true(fixed > 100 * pg);
  assert_true(pb < 3 * pg);
  free(bad);
  free(good);
}

/* Same input, same hash (within the process); the pair form is a
 * function of both parts. */
static void test_stable(void **st) {
  (void)st;
  char big[300];
  memset(big, 'x', sizeof big);
  assert_int_equal(sg_hash("abc", 3), sg_hash("abc", 3));
  assert_int_not_equal(sg_hash("abc", 3), sg_hash("abd", 3));
  assert_int_equal(sg_hash_pair(7, "abc", 3), sg_hash_pair(7, "abc", 3));
  assert_int_not_equal(sg_hash_pair(7, "abc", 3), sg_hash_pair(8, "abc", 3));
  assert_int_equal(sg_hash_pair(7, big, sizeof big), sg_hash_pair(7, big, sizeof big));
  assert_int_not_equal(sg_hash_pair(7, big, sizeof big), sg_hash_pair(8, big, sizeof big));
  assert_int_not_equal(sg_hash_pair(7, big, sizeof big), sg_hash_pair(7, big, sizeof big - 1));
}

int main(void) {
  srand(test_seed("test_hash"));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stable),
      cmocka_unit_test(test_fnv_colliding_ids),
      cmocka_unit_test(test_fixed_key_set),
  };
  return cmocka_run_group_tests_name("hash", tests, NULL, NULL);
}
