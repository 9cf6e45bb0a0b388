/* hash.c - SipHash-2-4 under a per-process random key. See hash.h. */
#include "hash.h"

#include <pthread.h>
#include <sodium.h>
#include <string.h>

static unsigned char key[crypto_shorthash_KEYBYTES];
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

/* sodium_init() picks the random source (getrandom(2), else /dev/urandom);
 * randombytes_buf() aborts inside libsodium if neither works, in which
 * case nothing else in the process could be seeded either. */
static void key_init(void) {
  if (sodium_init() < 0) {
    /* only its random source can fail, and randombytes_buf tries again */
  }
  randombytes_buf(key, sizeof key);
}

static uint64_t siphash(const void *p, size_t n) {
  unsigned char out[crypto_shorthash_BYTES];
  uint64_t h;
  crypto_shorthash(out, p, n, key);
  memcpy(&h, out, sizeof h);
  return h;
}

uint64_t sg_hash(const void *p, size_t n) {
  pthread_once(&key_once, key_init);
  return siphash(p, n);
}

uint64_t sg_hash_pair(uint64_t x, const void *p, size_t n) {
  unsigned char buf[128];
  pthread_once(&key_once, key_init);
  memcpy(buf, &x, sizeof x);
  if (n <= sizeof buf - sizeof x) {
    memcpy(buf + sizeof x, p, n);
    return siphash(buf, sizeof x + n);
  }
  /* Longer: hash the bytes first. The pair's hash is still a keyed
   * function of (x, p) that nobody without the key can steer. */
  uint64_t h = siphash(p, n);
  memcpy(buf + sizeof x, &h, sizeof h);
  return siphash(buf, sizeof x + sizeof h);
}
