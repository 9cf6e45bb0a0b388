/* jalloc.c - jansson's allocator: regions for decoded requests (jalloc.h). */
#include "jalloc.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* In the sanitizer builds a region's memory is poisoned except for the
 * values handed out and not given back, and each value has a poisoned gap
 * after it: reads past a value's end, after it was given back, or a second
 * give-back are reported as they would be for malloc's memory. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#define GAP 32
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#define GAP 0
#endif

#define CHUNK_BYTES (64u << 10)
#define SMALL_MAX (4u << 10) /* larger values come from malloc: a chunk wastes no more than this */

/* In front of every value jansson gets: the region it came from (NULL:
 * malloc) and its size. 16 bytes, so the value keeps malloc's alignment. */
typedef struct {
  sg_jregion_t *r;
  size_t n;
} hdr_t;

typedef struct chunk_s {
  struct chunk_s *next;
  size_t pad; /* keeps what follows 16-aligned */
} chunk_t;

struct sg_jregion {
  _Atomic size_t live; /* values not given back, + 1 while the owner holds it */
  chunk_t *chunks;
  char *cur, *end; /* free space of the newest chunk */
};

static _Thread_local sg_jregion_t *entered;

static void destroy(sg_jregion_t *r) {
  for (chunk_t *c = r->chunks, *next; c; c = next) {
    next = c->next;
    UNPOISON(c, CHUNK_BYTES);
    free(c);
  }
  free(r);
}

static void put(sg_jregion_t *r) {
  if (atomic_fetch_sub_explicit(&r->live, 1, memory_order_acq_rel) == 1) destroy(r);
}

static void *from_region(sg_jregion_t *r, size_t n) {
  size_t need = (sizeof(hdr_t) + n + GAP + 15) & ~(size_t)15;
  if ((size_t)(r->end - r->cur) < need) {
    chunk_t *c = malloc(CHUNK_BYTES);
    if (c == NULL) return NULL;
    c->next = r->chunks;
    r->chunks = c;
    r->cur = (char *)(c + 1);
    r->end = (char *)c + CHUNK_BYTES;
    POISON(r->cur, (size_t)(r->end - r->cur));
  }
  hdr_t *h = (hdr_t *)(void *)r->cur;
  r->cur += need;
  UNPOISON(h, sizeof(hdr_t) + n);
  h->r = r;
  h->n = n;
  /* only the owner's thread takes, and its hold keeps live above 0 */
  atomic_fetch_add_explicit(&r->live, 1, memory_order_relaxed);
  return h + 1;
}

static void *jmalloc(size_t n) {
  sg_jregion_t *r = entered;
  if (r != NULL && n <= SMALL_MAX) {
    void *p = from_region(r, n);
    if (p != NULL) return p;
  }
  if (n > SIZE_MAX - sizeof(hdr_t)) return NULL;
  hdr_t *h = malloc(sizeof(hdr_t) + n);
  if (h == NULL) return NULL;
  h->r = NULL;
  h->n = n;
  return h + 1;
}

static void jfree(void *p) {
  if (p == NULL) return;
  hdr_t *h = (hdr_t *)p - 1;
  sg_jregion_t *r = h->r;
  if (r == NULL) {
    free(h);
    return;
  }
  POISON(h, sizeof(hdr_t) + h->n);
  put(r);
}

/* Before main: jansson must never see two allocators. */
__attribute__((constructor)) static void install(void) { json_set_alloc_funcs(jmalloc, jfree); }

sg_jregion_t *sg_jregion_new(void) {
  sg_jregion_t *r = calloc(1, sizeof *r);
  if (r != NULL) atomic_init(&r->live, 1);
  return r;
}

sg_jregion_t *sg_jregion_enter(sg_jregion_t *r) {
  sg_jregion_t *was = entered;
  entered = r;
  return was;
}

void sg_jregion_release(sg_jregion_t *r) {
  if (r == NULL) return;
  if (entered == r) entered = NULL;
  put(r);
}

size_t sg_jregion_values(sg_jregion_t *r) { return atomic_load(&r->live) - 1; }

void sg_json_free(void *p) { jfree(p); } /* this file installed it */

char *sg_json_dumps(const json_t *j, size_t flags) {
  char *t = json_dumps(j, flags);
  if (t == NULL) return NULL;
  char *copy = strdup(t);
  sg_json_free(t);
  return copy;
}
