/* seed.h - the seed of a unit test's random choices: SG_TEST_SEED=<n> in
 * the environment replays a run, otherwise each run draws a new one. It is
 * printed either way (the run's log keeps it), so a failure can be replayed. */
#ifndef SG_TEST_SEED_H
#define SG_TEST_SEED_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static inline unsigned test_seed(const char *who) {
  const char *s = getenv("SG_TEST_SEED");
  unsigned seed = s != NULL && *s != '\0' ? (unsigned)strtoul(s, NULL, 10)
                                          : (unsigned)time(NULL) ^ (unsigned)getpid() << 16;
  printf("# %s: seed %u (SG_TEST_SEED=%u replays it)\n", who, seed, seed);
  fflush(stdout);
  return seed;
}

#endif
