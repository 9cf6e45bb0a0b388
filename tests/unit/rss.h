/* rss.h - resident kilobytes of the mapping that holds an address, from
 * /proc/self/smaps (for the tests of reading spool segments through mmap). */
#ifndef SG_TEST_RSS_H
#define SG_TEST_RSS_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* -1 when no mapping holds p. */
static long mapping_rss_kb(const void *p) {
  FILE *f = fopen("/proc/self/smaps", "r");
  if (f == NULL) return -1;
  char line[512];
  int inside = 0;
  long kb = -1;
  uintptr_t a = (uintptr_t)p;
  while (fgets(line, sizeof line, f)) {
    uintmax_t lo, hi;
    if (sscanf(line, "%jx-%jx ", &lo, &hi) == 2) { /* a mapping's first line */
      inside = a >= lo && a < hi;
      continue;
    }
    if (inside && sscanf(line, "Rss: %ld kB", &kb) == 1) break;
  }
  fclose(f);
  return kb;
}

#endif
