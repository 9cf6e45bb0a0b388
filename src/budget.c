/* budget.c - the shared in-flight memory budget (see budget.h). */
#include "budget.h"

#include "err.h"

int sg_budget_take(const sg_budget_t *b, size_t *held, size_t n) {
  if (b->counter == NULL || n == 0) return 0;
  if (n > INT64_MAX / 2) return SG_ETOOBIG;
  size_t max = b->max;
  if (max == 0 || max > INT64_MAX / 2) {
    atomic_fetch_add(b->counter, (int64_t)n);
  } else {
    if (n > max || *held > max - n) return SG_ETOOBIG;
    int64_t cur = atomic_load(b->counter);
    do {
      if (cur > (int64_t)(max - n)) return SG_EBUSY;
    } while (!atomic_compare_exchange_weak(b->counter, &cur, cur + (int64_t)n));
  }
  if (b->own) atomic_fetch_add(b->own, (int64_t)n);
  *held += n;
  return 0;
}

void sg_budget_release(const sg_budget_t *b, size_t *held) {
  if (*held == 0) return;
  atomic_fetch_sub(b->counter, (int64_t)*held);
  if (b->own) atomic_fetch_sub(b->own, (int64_t)*held);
  *held = 0;
}
