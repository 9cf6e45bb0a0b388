/* edit.h - deleting a trace, whatever the transport (Agenta's hard delete:
 * every span of the trace in the key's project):
 *   PostgreSQL DELETE (pgedit.c, chunks of SG_PGEDIT_DELETE_CHUNK spans)
 *   -> tombstones for ClickHouse in the worker's spool (+ fsync) -> result.
 *
 * A tombstone is the deleted row with is_deleted = 1, deleted_at = the
 * delete's time and a version above the row's (ch_rows.h), so ClickHouse's
 * reads drop the span at once, without a mutation. routing.lua decides
 * whether the project's rows go to ClickHouse and ttl.lua gives the
 * tombstone the row's expires_at, as for ingest. With clickhouse_writes =
 * "capture" nothing is spooled: change capture sees the DELETE and writes
 * the same tombstones.
 *
 * The result comes only after every chunk is committed and its tombstones
 * are durable. Each chunk's statement also records its range in
 * spangate_ch_gaps, dropped once the tombstones are in the spool: a gateway
 * killed in between leaves the range there for `spangate migrate`, which
 * removes the rows from ClickHouse. Runs on the worker's loop.
 *
 * A ClickHouse-only project (routing.lua M.postgres false) has nothing in
 * PostgreSQL: the trace's live spans are read from ClickHouse (once no span
 * of the project acknowledged before the delete is still in a spool), their
 * tombstones spooled and synced, then the result; ClickHouse unreachable or
 * the spool full fails it as retryable, deleting nothing (edit.c).
 */
#ifndef SG_EDIT_H
#define SG_EDIT_H

#include <stddef.h>
#include <stdint.h>

#include "ingest.h"
#include "principal.h"
#include "worker.h"

typedef struct {
  sg_ingest_class_t cls;      /* SG_INGEST_OK, _UNAVAILABLE or _INTERNAL */
  const char *message;        /* for the client when not OK, never NULL */
  int retry_after_s;          /* UNAVAILABLE: seconds to wait before retrying */
  const uint8_t *trace_id;    /* the trace (16 bytes) */
  size_t n;                   /* OK: spans deleted (0: the project has no such trace) */
  const uint8_t (*span_ids)[16]; /* OK: their ids */
} sg_edit_result_t;

/* Called exactly once, on the loop; res is valid during the call only. */
typedef void (*sg_edit_done_cb)(void *arg, const sg_edit_result_t *res);

/* Deletes trace_id from who's project. done may run before this returns
 * (out of memory, PostgreSQL down). A failure after some chunks committed
 * is reported as such; the retry deletes the rest (and answers their
 * count only). */
void sg_edit_delete_trace(sg_worker_t *w, const sg_principal_t *who, const uint8_t trace_id[16],
                          sg_edit_done_cb done, void *arg);

#endif
