/* job.c - placeholder until the job runner lands. */
#include <stdio.h>

#include "job.h"

int sg_job_main(int argc, char **argv) {
  (void)argc;
  fprintf(stderr, "spangate %s: not implemented yet\n", argv[1]);
  return 2;
}
