/* readiness.c - PostgreSQL writability as the latest writes saw it. */
#include "readiness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "pg.h"

static _Atomic uint64_t write_ok_ms, write_fail_ms;
static pthread_mutex_t fail_mu = PTHREAD_MUTEX_INITIALIZER;
static char fail_msg[256];

void sg_readiness_note_write(int status, const char *errmsg) {
  uint64_t now = uv_hrtime() / 1000000 + 1; /* never 0: 0 means "never" */
  if (status == 0) {
    atomic_store(&write_ok_ms, now);
    return;
  }
  char st[6];
  if (errmsg == NULL || strlen(errmsg) < 6 || errmsg[5] != ' ') return;
  memcpy(st, errmsg, 5);
  st[5] = '\0';
  if (!sg_pg_sqlstate_unwritable(st)) return;
  pthread_mutex_lock(&fail_mu);
  snprintf(fail_msg, sizeof fail_msg, "%s", errmsg);
  atomic_store(&write_fail_ms, now);
  pthread_mutex_unlock(&fail_mu);
}

int sg_readiness_unwritable(char *why, size_t cap) {
  uint64_t now = uv_hrtime() / 1000000 + 1;
  uint64_t f = atomic_load(&write_fail_ms), ok = atomic_load(&write_ok_ms);
  if (f == 0 || f < ok || now - f >= SG_READINESS_HOLD_MS) return 0;
  pthread_mutex_lock(&fail_mu);
  snprintf(why, cap, "%s", fail_msg);
  pthread_mutex_unlock(&fail_mu);
  return 1;
}
