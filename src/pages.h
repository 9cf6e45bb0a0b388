/* pages.h - giving back the pages of a read-only file mapping.
 *
 * A spool segment is read through mmap, so the pages a pass has read can be
 * dropped behind it (MADV_DONTNEED): touched again, they come back from the
 * page cache or the file. That keeps a sealed segment of any size out of the
 * process's resident memory while it is validated, counted, digested and
 * sent. Only ever call it on such a mapping: on anonymous memory
 * MADV_DONTNEED zeroes the pages. */
#ifndef SG_PAGES_H
#define SG_PAGES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/* Drop every page that [p, p+n) touches. The whole pages around it must lie
 * in the same file mapping (a mapping always spans whole pages). */
static inline void sg_pages_drop(const void *p, size_t n) {
  if (p == NULL || n == 0) return;
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t from = (uintptr_t)p & ~(page - 1);
  uintptr_t to = ((uintptr_t)p + n + page - 1) & ~(page - 1);
  (void)madvise((void *)from, to - from, MADV_DONTNEED);
}

/* A pass over a mapping, in ascending order, that gives back what it has
 * read behind it: sg_pages_behind() for each range read (the bytes between
 * ranges go too), every SG_PAGES_BEHIND bytes; sg_pages_behind_end() at the
 * end of the pass. */
#define SG_PAGES_BEHIND (1u << 20)
typedef struct {
  const char *lo, *hi; /* read and not given back yet: [lo, hi) */
} sg_pages_pass_t;

static inline void sg_pages_behind(sg_pages_pass_t *d, const void *start, const void *end) {
  if (start == NULL || end == start) return;
  if (d->lo == NULL) d->lo = start;
  d->hi = end;
  if ((size_t)(d->hi - d->lo) >= SG_PAGES_BEHIND) {
    sg_pages_drop(d->lo, (size_t)(d->hi - d->lo));
    d->lo = d->hi;
  }
}

static inline void sg_pages_behind_end(sg_pages_pass_t *d) {
  if (d->lo && d->hi > d->lo) sg_pages_drop(d->lo, (size_t)(d->hi - d->lo));
  d->lo = d->hi;
}

#endif
