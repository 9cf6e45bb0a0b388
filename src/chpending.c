/* chpending.c - per project, what ClickHouse does not have yet (chpending.h).
 *
 * One table per worker, each under its own mutex: a chsink only ever locks
 * its own, a read locks each in turn. A worker's table is its pending
 * records in append order (times increase, so a delivery finds its record
 * by binary search) and a count per project: a read for a project with no
 * pending record here costs one hash look-up; otherwise it walks the
 * records older than its start until it meets one of the project.
 */
#include "chpending.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* A project's count of pending records in one worker. */
typedef struct ent_s {
  struct ent_s *next;
  uint8_t project[16];
  size_t n;
} ent_t;

/* A pending record; rec[head..len) in append (time) order; delivered ones
 * in the middle stay (dead) until they reach the head. */
typedef struct {
  int64_t t;
  uint8_t project[16];
  int alive;
} rec_t;

typedef struct {
  pthread_mutex_t mu;
  ent_t **bucket;
  size_t nbucket, nent;
  rec_t *rec;
  size_t head, len, cap;
  int64_t unknown_until; /* records of unknown projects appended up to this time */
} wtab_t;

typedef struct gap_s {
  struct gap_s *next;
  uint8_t project[16];
  int inflight;          /* gap INSERTs on their way */
  int lost;              /* an INSERT failed: known here only */
  int64_t last_commit_us;
  int64_t checked_at;    /* when the last look at spangate_ch_gaps started */
  int checked_gap;
} gap_t;

static wtab_t tabs[SG_CHPENDING_MAX_WORKERS + 1];
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t gap_mu = PTHREAD_MUTEX_INITIALIZER;
static gap_t *gaps[256];
static _Atomic int max_worker; /* readers look at workers 1..max_worker */
/* A read found rows of a worker not yet delivered (sg_chpending_wanted). */
static _Atomic int wanted[SG_CHPENDING_MAX_WORKERS + 1];

static void init(void) {
  for (int i = 0; i <= SG_CHPENDING_MAX_WORKERS; i++) pthread_mutex_init(&tabs[i].mu, NULL);
}

static size_t hash16(const uint8_t p[16]) {
  uint64_t h = 1469598103934665603ULL;
  for (int i = 0; i < 16; i++) h = (h ^ p[i]) * 1099511628211ULL;
  return (size_t)(h ^ (h >> 29));
}

static wtab_t *tab(int worker) {
  if (worker < 1 || worker > SG_CHPENDING_MAX_WORKERS) return NULL;
  pthread_once(&once, init);
  int m = atomic_load(&max_worker);
  while (m < worker && !atomic_compare_exchange_weak(&max_worker, &m, worker)) {
  }
  return &tabs[worker];
}

static ent_t **find(wtab_t *w, const uint8_t p[16]) {
  if (!w->nbucket) return NULL;
  ent_t **e = &w->bucket[hash16(p) % w->nbucket];
  while (*e && memcmp((*e)->project, p, 16)) e = &(*e)->next;
  return e;
}

static int grow(wtab_t *w) {
  size_t nb = w->nbucket ? w->nbucket * 2 : 64;
  ent_t **b = calloc(nb, sizeof *b);
  if (!b) return -1;
  for (size_t i = 0; i < w->nbucket; i++) {
    ent_t *e = w->bucket[i];
    while (e) {
      ent_t *next = e->next;
      size_t h = hash16(e->project) % nb;
      e->next = b[h];
      b[h] = e;
      e = next;
    }
  }
  free(w->bucket);
  w->bucket = b;
  w->nbucket = nb;
  return 0;
}

/* Could not keep a record: the worker is then taken to hold rows of any
 * project from that time on, until its chsink says otherwise. */
static void lost(wtab_t *w, int64_t t) {
  if (!w->unknown_until || w->unknown_until < t) w->unknown_until = t;
}

void sg_chpending_add(int worker, const uint8_t project[16], int64_t t_us) {
  wtab_t *w = tab(worker);
  if (!w) return;
  pthread_mutex_lock(&w->mu);
  if (w->len == w->cap) {
    if (w->head > 0 && w->head >= w->len / 2) { /* compact */
      memmove(w->rec, w->rec + w->head, (w->len - w->head) * sizeof *w->rec);
      w->len -= w->head;
      w->head = 0;
    } else {
      size_t cap = w->cap ? w->cap * 2 : 256;
      rec_t *r = realloc(w->rec, cap * sizeof *r);
      if (!r) goto fail;
      w->rec = r;
      w->cap = cap;
    }
  }
  if (w->len > w->head && w->rec[w->len - 1].t >= t_us) goto fail; /* times must increase */
  if (w->nent >= w->nbucket && grow(w) != 0 && !w->nbucket) goto fail;
  ent_t **slot = find(w, project), *e = *slot;
  if (!e) {
    if (!(e = calloc(1, sizeof *e))) goto fail;
    memcpy(e->project, project, 16);
    *slot = e;
    w->nent++;
  }
  e->n++;
  rec_t *r = &w->rec[w->len++];
  r->t = t_us;
  memcpy(r->project, project, 16);
  r->alive = 1;
  pthread_mutex_unlock(&w->mu);
  return;
fail:
  lost(w, t_us);
  pthread_mutex_unlock(&w->mu);
}

void sg_chpending_done(int worker, int64_t t_us) {
  wtab_t *w = tab(worker);
  if (!w) return;
  pthread_mutex_lock(&w->mu);
  size_t lo = w->head, hi = w->len;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (w->rec[mid].t < t_us) lo = mid + 1;
    else hi = mid;
  }
  if (lo < w->len && w->rec[lo].t == t_us && w->rec[lo].alive) {
    w->rec[lo].alive = 0;
    ent_t **slot = find(w, w->rec[lo].project), *e = slot ? *slot : NULL;
    if (e && --e->n == 0) {
      *slot = e->next;
      free(e);
      w->nent--;
    }
    while (w->head < w->len && !w->rec[w->head].alive) w->head++;
    if (w->head == w->len) w->head = w->len = 0;
  }
  pthread_mutex_unlock(&w->mu);
}

int64_t sg_chpending_unknown_until(int worker) {
  wtab_t *w = tab(worker);
  if (!w) return 0;
  pthread_mutex_lock(&w->mu);
  int64_t u = w->unknown_until;
  pthread_mutex_unlock(&w->mu);
  return u;
}

void sg_chpending_unknown(int worker, int64_t until_us) {
  wtab_t *w = tab(worker);
  if (!w) return;
  pthread_mutex_lock(&w->mu);
  if (until_us == 0) w->unknown_until = 0;
  else lost(w, until_us);
  pthread_mutex_unlock(&w->mu);
}

int sg_chpending_before(const uint8_t project[16], int64_t t_us) {
  pthread_once(&once, init);
  int m = atomic_load(&max_worker);
  for (int i = 1; i <= m; i++) {
    wtab_t *w = &tabs[i];
    pthread_mutex_lock(&w->mu);
    int hit = w->unknown_until != 0;
    ent_t **slot = hit ? NULL : find(w, project);
    if (slot && *slot) /* the project has pending records here: is one older than t? */
      for (size_t k = w->head; !hit && k < w->len && w->rec[k].t < t_us; k++)
        hit = w->rec[k].alive && !memcmp(w->rec[k].project, project, 16);
    pthread_mutex_unlock(&w->mu);
    if (hit) {
      atomic_store(&wanted[i], 1);
      return 1;
    }
  }
  return 0;
}

int sg_chpending_wanted(int worker) {
  if (worker < 1 || worker > SG_CHPENDING_MAX_WORKERS) return 0;
  return atomic_exchange(&wanted[worker], 0);
}

uint64_t sg_chpending_count(const uint8_t project[16]) {
  pthread_once(&once, init);
  uint64_t n = 0;
  int m = atomic_load(&max_worker);
  for (int i = 1; i <= m; i++) {
    pthread_mutex_lock(&tabs[i].mu);
    ent_t **slot = find(&tabs[i], project);
    if (slot && *slot) n += (*slot)->n;
    pthread_mutex_unlock(&tabs[i].mu);
  }
  return n;
}

/* ---- gaps ------------------------------------------------------------------------- */

static gap_t *gap_get(const uint8_t p[16], int create) {
  gap_t **g = &gaps[hash16(p) % 256];
  while (*g && memcmp((*g)->project, p, 16)) g = &(*g)->next;
  if (!*g && create) {
    *g = calloc(1, sizeof **g);
    if (*g) memcpy((*g)->project, p, 16);
  }
  return *g;
}

void sg_chpending_gap_begin(const uint8_t project[16]) {
  pthread_mutex_lock(&gap_mu);
  gap_t *g = gap_get(project, 1);
  if (g) g->inflight++;
  pthread_mutex_unlock(&gap_mu);
}

void sg_chpending_gap_end(const uint8_t project[16], int ok, int64_t committed_us) {
  pthread_mutex_lock(&gap_mu);
  gap_t *g = gap_get(project, 1);
  if (g) {
    if (g->inflight > 0) g->inflight--;
    if (!ok) g->lost = 1;
    else if (committed_us > g->last_commit_us) g->last_commit_us = committed_us;
  }
  pthread_mutex_unlock(&gap_mu);
}

int sg_chpending_gap_state(const uint8_t project[16], int64_t now_us, int64_t max_age_us) {
  pthread_mutex_lock(&gap_mu);
  gap_t *g = gap_get(project, 0);
  int r;
  if (g && (g->inflight || g->lost)) r = SG_GAP_YES;
  /* a gap committed after the last look started may be missing from it */
  else if (g && g->last_commit_us && g->last_commit_us >= g->checked_at) r = SG_GAP_YES;
  else if (!g || !g->checked_at || now_us - g->checked_at > max_age_us) r = SG_GAP_UNKNOWN;
  else r = g->checked_gap ? SG_GAP_YES : SG_GAP_NO;
  pthread_mutex_unlock(&gap_mu);
  return r;
}

void sg_chpending_gap_checked(const uint8_t project[16], int open_gaps, int64_t asked_us) {
  pthread_mutex_lock(&gap_mu);
  gap_t *g = gap_get(project, 1);
  if (g && asked_us >= g->checked_at) {
    g->checked_at = asked_us;
    g->checked_gap = open_gaps != 0;
  }
  pthread_mutex_unlock(&gap_mu);
}

void sg_chpending_reset(void) {
  pthread_once(&once, init);
  for (int i = 1; i <= SG_CHPENDING_MAX_WORKERS; i++) {
    wtab_t *w = &tabs[i];
    pthread_mutex_lock(&w->mu);
    for (size_t b = 0; b < w->nbucket; b++) {
      ent_t *e = w->bucket[b];
      while (e) {
        ent_t *n = e->next;
        free(e);
        e = n;
      }
    }
    free(w->bucket);
    free(w->rec);
    w->bucket = NULL;
    w->rec = NULL;
    w->nbucket = w->nent = w->head = w->len = w->cap = 0;
    w->unknown_until = 0;
    pthread_mutex_unlock(&w->mu);
    atomic_store(&wanted[i], 0);
  }
  pthread_mutex_lock(&gap_mu);
  for (int i = 0; i < 256; i++) {
    gap_t *g = gaps[i];
    while (g) {
      gap_t *n = g->next;
      free(g);
      g = n;
    }
    gaps[i] = NULL;
  }
  pthread_mutex_unlock(&gap_mu);
}
