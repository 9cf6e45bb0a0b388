/* workload.h - the benchmark workload file, shared by gen.c (writes it),
 * load.c (replays it over HTTP), rows.c (renders the same spans as database
 * rows for the floor) and lua_bench.c (decodes and transforms them).
 *
 * Layout (little-endian):
 *   "SGWL0001"                           magic, 8 bytes
 *   u32 nbodies, u32 spans_per_body
 *   nbodies x { u32 len, u32 npos, u32 pos[npos], u8 body[len] }
 * body is one OTLP/HTTP ExportTraceServiceRequest (binary protobuf); pos are
 * the offsets of every trace id's 16 bytes inside it.
 *
 * Replays make every span a new row: request number `seq` of a run gets a
 * copy of body (seq % nbodies) whose trace ids have their first 8 bytes
 * replaced by mix64(seq) (a bijection, so distinct seqs never collide, and
 * random-looking, so the primary-key index sees random inserts as with real
 * trace ids); the last 8 bytes (distinct within a body) are kept. The floor
 * renders requests 0..R-1 exactly as the gateway run sends them.
 *
 * Header-only on purpose: the tools stand alone (no server headers).
 */
#ifndef SG_BENCH_WORKLOAD_H
#define SG_BENCH_WORKLOAD_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WL_MAGIC "SGWL0001"

typedef struct {
  uint8_t *body;
  uint32_t len;
  uint32_t npos;
  uint32_t *pos;
} wl_body_t;

typedef struct {
  wl_body_t *b;
  uint32_t n;
  uint32_t spans_per_body;
  uint8_t *mem; /* the whole file */
} wl_t;

/* splitmix64's finalizer: a bijection on 64-bit values. */
static inline uint64_t wl_mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* Copy body (seq % n) into dst (room for its len) with the ids of request seq. */
static inline const wl_body_t *wl_render(const wl_t *w, uint64_t seq, uint8_t *dst) {
  const wl_body_t *b = &w->b[seq % w->n];
  memcpy(dst, b->body, b->len);
  uint64_t m = wl_mix64(seq);
  uint8_t hi[8];
  for (int i = 0; i < 8; i++) hi[i] = (uint8_t)(m >> (56 - 8 * i));
  if (m == 0) hi[0] = 1; /* never an all-zero prefix (harmless either way) */
  for (uint32_t i = 0; i < b->npos; i++) memcpy(dst + b->pos[i], hi, 8);
  return b;
}

static inline uint32_t wl_max_len(const wl_t *w) {
  uint32_t m = 0;
  for (uint32_t i = 0; i < w->n; i++)
    if (w->b[i].len > m) m = w->b[i].len;
  return m;
}

/* Read a workload file; 0 or -1 (message on stderr). */
static inline int wl_load(const char *path, wl_t *w) {
  memset(w, 0, sizeof *w);
  FILE *f = fopen(path, "rb");
  if (!f) {
    perror(path);
    return -1;
  }
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  w->mem = malloc((size_t)sz + 1);
  if (!w->mem || fread(w->mem, 1, (size_t)sz, f) != (size_t)sz || sz < 16 ||
      memcmp(w->mem, WL_MAGIC, 8) != 0) {
    fprintf(stderr, "%s: not a workload file\n", path);
    fclose(f);
    return -1;
  }
  fclose(f);
  uint8_t *p = w->mem + 8, *end = w->mem + sz;
  memcpy(&w->n, p, 4);
  memcpy(&w->spans_per_body, p + 4, 4);
  p += 8;
  w->b = calloc(w->n ? w->n : 1, sizeof *w->b);
  for (uint32_t i = 0; i < w->n; i++) {
    if (end - p < 8) goto bad;
    memcpy(&w->b[i].len, p, 4);
    memcpy(&w->b[i].npos, p + 4, 4);
    p += 8;
    if ((size_t)(end - p) < (size_t)w->b[i].npos * 4 + w->b[i].len) goto bad;
    w->b[i].pos = (uint32_t *)(void *)p; /* 4-aligned: every field before is a u32 multiple */
    p += (size_t)w->b[i].npos * 4;
    w->b[i].body = p;
    p += w->b[i].len;
    /* keep the next record's u32 fields aligned */
    size_t off = (size_t)(p - w->mem);
    if (off % 4) p += 4 - off % 4;
  }
  return 0;
bad:
  fprintf(stderr, "%s: truncated workload file\n", path);
  return -1;
}

#endif
