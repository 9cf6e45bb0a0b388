/* budget.h - a memory budget shared by threads: bytes held by requests in
 * flight, counted as they are allocated, with an optional limit.
 *
 * One counter serves the whole process (every worker, every transport: the
 * HTTP server counts bodies, the ingest pipeline decompressed copies, a
 * later transport its own messages), so the limit bounds them together.
 * Each holder (a request) keeps its own tally and gives it all back at
 * once when it is done. A second counter, without a limit, may tally the
 * same bytes for part of the process (a worker's own requests: its
 * ClickHouse flusher tells from it that no request of its own is in
 * flight). Stands alone (atomics only).
 */
#ifndef SG_BUDGET_H
#define SG_BUDGET_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  _Atomic int64_t *counter; /* shared; NULL: nothing is counted */
  size_t max;               /* 0: count only, no limit */
  _Atomic int64_t *own;     /* also counted here (never limited), or NULL */
} sg_budget_t;

/* Counts n more bytes for a holder that has *held already; adds n to *held.
 * A compare-and-swap loop, so the counter never passes the limit even for a
 * moment (another thread would see a spurious refusal). Returns 0;
 * SG_EBUSY when there is no room for n now (retry later); SG_ETOOBIG when
 * *held + n alone exceeds the limit (it can never fit). Nothing is counted
 * on failure. Without a counter, or for n == 0: 0. */
int sg_budget_take(const sg_budget_t *b, size_t *held, size_t n);

/* Gives back everything the holder has (*held becomes 0). */
void sg_budget_release(const sg_budget_t *b, size_t *held);

#endif
