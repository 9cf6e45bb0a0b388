/* pgedit.h - the trace delete's PostgreSQL statements (Agenta's hard delete
 * of a trace: DELETE /tracing/traces/{trace_id}).
 *
 * One statement deletes at most SG_PGEDIT_DELETE_CHUNK spans of one trace
 * of one project and returns each deleted row whole, as the text values
 * ClickHouse's tombstones are made of (ch_rows.h's sg_ch_text_row_t), and
 * the statement's clock. With `marker` set, the same statement (hence the
 * same transaction) records the deleted rows' range in spangate_ch_gaps:
 * if the gateway dies after the commit and before the tombstones are in
 * its spool, `spangate migrate` finds the range and removes the rows from
 * ClickHouse; once the tombstones are durable the marker is dropped
 * (sg_pgedit_drop_marker).
 *
 * Runs on the caller's pool (a worker's write pool); depends on pg.h and
 * ch_rows.h only.
 */
#ifndef SG_PGEDIT_H
#define SG_PGEDIT_H

#include <stdint.h>

#include "ch_rows.h"
#include "pg.h"

/* Spans deleted by one statement. A larger trace takes several statements
 * (one transaction each), so one delete never holds more than this many
 * rows in memory. */
#define SG_PGEDIT_DELETE_CHUNK 2000

/* The answer of one delete statement. */
typedef struct {
  int err;             /* 0 or the pool's SG_E* class (pg.h) */
  const char *errmsg;  /* err: "<SQLSTATE> <message>" or NULL */
  int n;               /* rows deleted */
  int64_t clock_us;    /* the statement's clock_timestamp() at the end, µs */
  char marker[24];     /* the spangate_ch_gaps id recorded, "" for none */
  PGresult *res;       /* the rows (sg_pgedit_row); owned by the pool */
} sg_pgedit_deleted_t;

/* Called once, from the loop; d is valid during the call only. */
typedef void (*sg_pgedit_delete_cb)(void *arg, const sg_pgedit_deleted_t *d);

/* Deletes up to SG_PGEDIT_DELETE_CHUNK spans of trace_id in project_id.
 * marker: also record the rows' created_at range in spangate_ch_gaps (see
 * above). The ids are copied. 0, and cb runs once; or an SG_E* code from
 * sg_pg_query (cb never runs). */
int sg_pgedit_delete_trace(sg_pg_pool_t *pool, const uint8_t project_id[16], const uint8_t trace_id[16],
                           int marker, sg_pgedit_delete_cb cb, void *arg);

/* Row i of d as a ClickHouse text row (values point into d->res) and the
 * row's project. SG_EINVAL when a time does not parse. */
int sg_pgedit_row(const sg_pgedit_deleted_t *d, int i, sg_ch_text_row_t *row);

/* Drops a marker once its tombstones are durable. Best effort: a marker
 * left behind costs `spangate migrate` one needless check of its range. */
void sg_pgedit_drop_marker(sg_pg_pool_t *pool, const char *marker);

#endif
