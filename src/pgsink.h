/* pgsink.h - spans into PostgreSQL, with group commit.
 *
 * Submissions (one per request) that arrive within opts.window_ms of the
 * first pending one, up to opts.max_batch_spans spans, are written by ONE
 * statement, hence one transaction and one WAL flush: a multi-row upsert
 * into Agenta's `spans` (see pgsink.c for the statement). A submission is
 * answered only after that statement committed, and is answered:
 *
 *   0            every span still in the batch is committed, and its
 *                created_at_us / updated_at_us / version are filled from
 *                the database. Spans PostgreSQL refused for their own data
 *                (poison: bad JSON text, a second root span for a trace, a
 *                value too big for an index) were removed from the batch,
 *                counted in batch->rejected with a reason in
 *                batch->reject_msg; the other spans are stored.
 *   SG_EUNAVAIL  PostgreSQL is down or the connection was lost: nothing of
 *                this submission is acknowledged (it may or may not have
 *                committed; re-sending it is safe, the upsert is idempotent).
 *   SG_EBUSY     the connection pool's queue is full (back-pressure).
 *   SG_EIO       any other database error (schema missing, ...).
 *   SG_ECANCELED the sink was closed first.
 *   SG_ENOMEM
 * Nothing is retried in a loop: one bad span costs at most a few extra
 * statements (the group, then its submission alone, then its spans one by
 * one), never a retry of the same failure.
 *
 * One sink per worker loop; not thread-safe. Depends on pg.h and span.h only.
 */
#ifndef SG_PGSINK_H
#define SG_PGSINK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "pg.h"
#include "span.h"

typedef struct sg_pgsink_s sg_pgsink_t;

typedef struct {
  int window_ms;          /* group-commit window (default 2; 0 = default, <0 = no wait) */
  size_t max_batch_spans; /* a group is sent as soon as it holds this many (default 2000) */
  /* created_by_id for submissions without a user (Agenta's column is NOT
   * NULL): the nil UUID unless set. */
  uint8_t created_by_id[16];
} sg_pgsink_opts_t;

typedef struct {
  uint64_t statements;    /* upserts sent (groups, isolation re-runs included) */
  uint64_t groups;        /* group commits (first statement of each group) */
  uint64_t submissions;   /* answered */
  uint64_t spans_stored;
  uint64_t spans_rejected;
  uint64_t isolations;    /* groups that failed on poison and were split */
  uint64_t max_group_submissions; /* largest number of submissions in one group */
} sg_pgsink_stats_t;

/* status: see above. The batch is the one submitted (the caller owns it). */
typedef void (*sg_pgsink_cb)(void *arg, int status, sg_span_batch_t *batch);

/* NULL on SG_ENOMEM or bad arguments. opts may be NULL. The pool must
 * outlive the sink (close the sink first, then the pool). */
sg_pgsink_t *sg_pgsink_new(uv_loop_t *loop, sg_pg_pool_t *pool, const sg_pgsink_opts_t *opts);

/* Queues batch for project_id. Returns 0, and then cb runs exactly once,
 * from the loop (never inside this call); or a negative code (SG_ECANCELED
 * when closing, SG_EINVAL, SG_ENOMEM) and cb never runs. The batch must stay
 * alive and untouched until cb. */
int sg_pgsink_submit(sg_pgsink_t *sink, const uint8_t project_id[16], sg_span_batch_t *batch,
                     sg_pgsink_cb cb, void *arg);
/* Same, recording user_id (e.g. the API key's creator) as created_by_id /
 * updated_by_id; user_id NULL means opts.created_by_id. */
int sg_pgsink_submit_as(sg_pgsink_t *sink, const uint8_t project_id[16], const uint8_t *user_id,
                        sg_span_batch_t *batch, sg_pgsink_cb cb, void *arg);

const sg_pgsink_stats_t *sg_pgsink_stats(const sg_pgsink_t *sink);

/* Answers every submission not yet sent with SG_ECANCELED (inside this
 * call); submissions already sent are answered when their statement ends
 * (close the pool after the sink to cut that short). The sink frees itself
 * once its handles are closed and nothing is in flight. */
void sg_pgsink_close(sg_pgsink_t *sink);

#endif
