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

#endif
