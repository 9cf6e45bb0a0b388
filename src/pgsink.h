/* pgsink.h - spans into PostgreSQL, with group commit.
 *
 * Submissions (one per request) that arrive within opts.window_ms of the
 * first pending one, up to opts.max_batch_spans spans, are written by ONE
 * statement (while every slot of the pool is taken, the group keeps
 * growing past its window until one frees), hence one transaction and one
 * WAL flush: a COPY into Agenta's `spans` when every row is new, else a multi-row upsert (see pgsink.c for
 * both and how one falls back to the other). A group (or one
 * request) larger than opts.max_batch_spans spans or opts.max_statement_bytes
 * is written in several statements, in order. At most two statements per
 * main connection of the pool, and one per spare, are handed to it at a
 * time; later groups wait, unbuilt, in order, so the statements' data in
 * memory stay bounded by the pool's size and opts.max_batch_spans. A
 * submission is answered only after all its spans are committed, and is
 * answered:
 *
 *   0            every span still in the batch is committed, and its
 *                created_at_us / updated_at_us / version are filled from
 *                the database. Spans PostgreSQL refused for their own data
 *                (poison: bad JSON text, a second root span for a trace, a
 *                value too big for an index) were removed from the batch,
 *                counted in batch->rejected with a reason in
 *                batch->reject_msg; the other spans are stored.
 *   SG_EUNAVAIL  PostgreSQL is down, the connection was lost, or the server
 *                failed the statement for a transient reason (read-only,
 *                deadlock, serialization, disk full, shutting down, ...:
 *                see sg_pg_sqlstate_err): nothing of this submission is
 *                acknowledged (part of it may have committed; re-sending
 *                it is safe, the upsert is idempotent).
 *   SG_ETIMEOUT  the statement hit statement_timeout; as SG_EUNAVAIL.
 *   SG_EBUSY     the connection pool's queue is full (back-pressure).
 *   SG_EIO       any other database error (schema missing, ...).
 *   SG_ECANCELED the sink was closed first.
 *   SG_ENOMEM
 * Nothing is retried in a loop: bad spans are isolated by bisection, so k
 * of them among n spans cost O(k log n) extra statements, never a retry of
 * the same failure. sg_pgsink_errmsg() gives the cause of a failure to the
 * callback.
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
  size_t max_batch_spans; /* a group is sent as soon as it holds this many, and no
                           * statement holds more (default 2000) */
  size_t max_statement_bytes; /* most bytes of one statement's data (default 64 MiB) */
  int no_copy;            /* 1: never COPY, every statement is an upsert */
  /* created_by_id for submissions without a user (Agenta's column is NOT
   * NULL): the nil UUID unless set. */
  uint8_t created_by_id[16];
} sg_pgsink_opts_t;

typedef struct {
  uint64_t statements;    /* statements sent: COPYs and upserts (chunks, fallbacks and
                           * isolation re-runs included) */
  uint64_t copies;        /* of which COPYs */
  uint64_t copy_fallbacks; /* COPYs that met an existing row (or could not run) and were
                           * re-run as upserts */
  uint64_t groups;        /* group commits (first statement of each group) */
  uint64_t submissions;   /* answered */
  uint64_t spans_stored;
  uint64_t spans_rejected;
  uint64_t isolations;    /* groups in which a statement failed on poison (then bisected) */
  uint64_t max_group_submissions; /* largest number of submissions in one group */
} sg_pgsink_stats_t;

/* status: see above. The batch is the one submitted (the caller owns it). */
typedef void (*sg_pgsink_cb)(void *arg, int status, sg_span_batch_t *batch);

/* NULL on SG_ENOMEM or bad arguments. opts may be NULL. The pool must
 * outlive the sink (close the sink first, then the pool). */
sg_pgsink_t *sg_pgsink_new(uv_loop_t *loop, sg_pg_pool_t *pool, const sg_pgsink_opts_t *opts);

/* Queues batch for project_id, recording user_id (e.g. the API key's
 * creator) as created_by_id / updated_by_id; user_id NULL means
 * opts.created_by_id. Returns 0, and then cb runs exactly once, from the
 * loop (never inside this call); or a negative code (SG_ECANCELED when
 * closing, SG_EINVAL, SG_ENOMEM) and cb never runs. The batch must stay
 * alive and untouched until cb. */
int sg_pgsink_submit_as(sg_pgsink_t *sink, const uint8_t project_id[16], const uint8_t *user_id,
                        sg_span_batch_t *batch, sg_pgsink_cb cb, void *arg);

const sg_pgsink_stats_t *sg_pgsink_stats(const sg_pgsink_t *sink);

/* During a callback with a non-zero status: the cause in one line
 * ("<SQLSTATE> <message>" as PostgreSQL said it, or the pool's reason), or
 * NULL when there is none beyond the status. */
const char *sg_pgsink_errmsg(const sg_pgsink_t *sink);

/* Answers every submission not yet sent with SG_ECANCELED (inside this
 * call); submissions already sent are answered when their statement ends
 * (close the pool after the sink to cut that short). The sink frees itself
 * once its handles are closed and nothing is in flight. */
void sg_pgsink_close(sg_pgsink_t *sink);

#endif
