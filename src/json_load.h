/* json_load.h - parsing JSON from requests with a memory bound.
 *
 * jansson builds the whole tree of a document, and the tree is much larger
 * than the text: ~5-12x for the spans clients send, ~20x for an array of
 * small numbers ([0,0,...]), ~80x for an array of empty objects. A body
 * that inflates from 32 KB of gzip to 32 MiB of JSON would take ~700 MB
 * before anything looked at it. So before parsing, one pass over the text
 * (no allocation, ~1 GB/s) estimates what jansson will allocate, and a
 * document whose tree would exceed its budget is refused unparsed.
 *
 * The estimate follows jansson 2.14's allocations on 64-bit glibc
 * (test_json_load.c checks it against a counting allocator): an object
 * 224 bytes + 112 per member + the key, an array 128 + 16 per element, a
 * string 80 + its length, a number 32, true/false/null nothing.
 *
 * Stands alone (jansson only).
 */
#ifndef SG_JSON_LOAD_H
#define SG_JSON_LOAD_H

#include <jansson.h>
#include <stddef.h>

/* The budget of a request body of n bytes: SG_JSON_TREE_RATIO times its
 * size plus SG_JSON_TREE_SLACK (protobuf's budget, decode.h), and never
 * more than SG_JSON_TREE_MAX. Span payloads stay far below the ratio (up to
 * ~30x for OTLP arrays of small integers; 5-12x usually); documents of
 * empty objects exceed it. The cap bounds what one request can take
 * whatever its size: 256 MiB is ~25 MiB of typical OTLP JSON. */
#define SG_JSON_TREE_RATIO 64
#define SG_JSON_TREE_SLACK ((size_t)1 << 20)
#define SG_JSON_TREE_MAX ((size_t)256 << 20)
size_t sg_json_tree_budget(size_t n);

/* Estimated bytes jansson allocates to parse p[0..n) (any text: for what is
 * not JSON the estimate is meaningless but finite). */
size_t sg_json_tree_cost(const char *p, size_t n);

/* json_loadb(p, n, flags, je) when sg_json_tree_cost(p, n) <= max_bytes.
 * 0 with *doc set; SG_ETOOBIG (nothing parsed); SG_EPARSE (*je says why);
 * SG_ENOMEM. *cost (may be NULL) receives the estimate either way. */
int sg_json_load_bounded(const char *p, size_t n, size_t flags, size_t max_bytes, json_t **doc,
                         json_error_t *je, size_t *cost);

/* json_decref(doc), then, when the tree was large (cost, as estimated, of
 * SG_JSON_TRIM_ABOVE or more), hand the freed pages back to the system:
 * glibc keeps freed small blocks in the thread's heap, so one large body
 * would otherwise leave the worker hundreds of MB larger for good. */
#define SG_JSON_TRIM_ABOVE ((size_t)16 << 20)
void sg_json_release(json_t *doc, size_t cost);

#endif
