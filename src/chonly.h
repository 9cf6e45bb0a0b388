/* chonly.h - ClickHouse-only projects (docs/cutover.md): the values the
 * gateway assigns in PostgreSQL's place, and a trace's stored rows read
 * back from ClickHouse for its edits and deletes.
 *
 * A project routed off PostgreSQL (routing.lua M.postgres false) has no
 * upsert to return created_at, updated_at and the version, so the gateway
 * assigns them (sg_chonly_stamp):
 *
 *   created_at  the span's start_time. ReplacingMergeTree replaces a row
 *               only by one with the same sorting key (project_id,
 *               created_at, trace_id, span_id), so a re-sent span must get
 *               the created_at it got the first time, on any gateway, after
 *               any restart, without a look-up on the ingest path (which
 *               would make ingest depend on ClickHouse being up). An OTLP
 *               span's start_time does not change when it is re-sent.
 *               Edits look up the stored rows instead (sg_chonly_trace),
 *               so an edit that moves start_time still replaces the span.
 *   updated_at  the time of this write (the version's µs): without a
 *   version     look-up the gateway cannot tell a first write from a
 *               re-send. The version is the wall clock in µs, strictly
 *               increasing within the process (sg_chonly_clock), so a
 *               re-send on the same gateway always wins; across gateways
 *               and restarts it wins when the clocks do not step back by
 *               more than the time between the two writes (NTP-disciplined
 *               clocks are within milliseconds; docs/cutover.md).
 *   created_by_id, updated_by_id  the key's user (the nil UUID when the key
 *               has none), as PostgreSQL's ingest records them.
 *
 * Runs on the worker's loop (sg_chonly_trace), or anywhere (the rest).
 */
#ifndef SG_CHONLY_H
#define SG_CHONLY_H

#include <stddef.h>
#include <stdint.h>

#include "ch.h"
#include "ch_rows.h"
#include "ch_version.h"
#include "pg.h"
#include "span.h"

/* µs since the epoch (wall clock), strictly greater than every value it
 * returned before in this process, from any thread. */
int64_t sg_chonly_clock(void);

/* Stamps spans[0..n) of a ClickHouse-only write as the comment above says;
 * versions increase in batch order, so a span repeated in one request is
 * replaced by its later occurrence (as PostgreSQL's upsert keeps the later
 * one). user_id NULL: the nil UUID. */
void sg_chonly_stamp(sg_span_t *spans, size_t n, const uint8_t *user_id);

/* Records in PostgreSQL's spangate_ch_only (on pg, asynchronously) that
 * project's spans go to ClickHouse only, once per project and process
 * (again after a failure, logged). The row tells `spangate migrate` and
 * `validate` to leave the project alone even after routing.lua sends it
 * back to PostgreSQL: PostgreSQL lacks the spans written meanwhile, which
 * migrate would otherwise remove from ClickHouse as rows PostgreSQL lost.
 * Never delays a request. Call on pg's loop. */
void sg_chonly_record(sg_pg_pool_t *pg, const uint8_t project[16]);

/* One span of a trace as ClickHouse holds it: its latest version, live
 * (is_deleted = 0). Values point into the answer (valid during the
 * callback); row.is_deleted is 0. */
typedef struct {
  sg_ch_text_row_t row;
  int64_t expires_us;       /* its expires_at, µs */
  uint8_t trace_id[16], span_id[16];
} sg_chonly_stored_t;

/* status 0 with the rows (n may be 0: no live span), or the failure:
 * SG_EUNAVAIL / SG_EIO / SG_EPOISON (ClickHouse's, why = its message),
 * SG_EINVAL (an answer the gateway cannot read), SG_ENOMEM. */
typedef void (*sg_chonly_trace_cb)(void *arg, int status, const char *why, const sg_chonly_stored_t *rows,
                                   size_t n);

/* Reads every live span of trace_id in project from `database`.spans: all
 * versions are read and collapsed here (the highest version of each
 * sorting key; a key whose highest version is a tombstone is gone), so no
 * FINAL is needed. ver: the version the spans table's SQL is written for
 * (sg_chsink_read_version). 0 and cb runs later on ch's loop, or SG_ENOMEM
 * / SG_ECANCELED and cb never runs. */
int sg_chonly_trace(sg_ch_client_t *ch, const sg_ch_version_t *ver, const char *database, long timeout_ms,
                    const uint8_t project[16], const uint8_t trace_id[16], sg_chonly_trace_cb cb, void *arg);

#endif
