/* hash.h - a keyed hash for tables whose keys come from requests.
 *
 * An unkeyed hash (FNV-1a, as the span tables used before) lets a client
 * choose keys that all land in one bucket: 50,000 such attribute keys cost
 * a worker seconds of probing. SipHash-2-4 (libsodium's crypto_shorthash)
 * under a key drawn once per process from the system's random source
 * makes the bucket of a key unpredictable from outside, so colliding keys
 * cannot be computed in advance and probing stays linear on average.
 *
 * Stands alone (libsodium only). Values differ from process to process:
 * never store them or send them anywhere.
 */
#ifndef SG_HASH_H
#define SG_HASH_H

#include <stddef.h>
#include <stdint.h>

/* The keyed hash of p[0..n). Thread-safe; the first call in the process
 * draws the key. */
uint64_t sg_hash(const void *p, size_t n);

/* The keyed hash of the pair (x, p[0..n)), for keys made of a number (a
 * parent's index, say) and bytes, without building the pair first. */
uint64_t sg_hash_pair(uint64_t x, const void *p, size_t n);

#endif
