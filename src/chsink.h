/* chsink.h - the ClickHouse side of the dual-write: spool, flush, retry.
 *
 * After a request's spans are committed to PostgreSQL, the rows bound for
 * ClickHouse (the values PostgreSQL stored, created_at and version included)
 * are appended to this worker's durable spool and synced before the request
 * is answered. A flusher on the worker's loop sends sealed spool segments to
 * ClickHouse as one gzipped INSERT each and deletes a segment only after
 * ClickHouse accepted it.
 *
 *   transient failure (refused, timeout, 5xx)  keep the segment, back off
 *                                               (exponential, jittered), retry
 *   poison (ClickHouse rejects the data)        split the segment into its
 *                                               records (one request each); a
 *                                               record ClickHouse still rejects
 *                                               goes to the dead-letter files,
 *                                               the others are delivered
 *   HTTP 5xx with a code not known to be        retried; after 3 failures split;
 *   transient (or 49)                           a record still failing so is
 *                                               dead-lettered once ClickHouse has
 *                                               taken other rows meanwhile, else
 *                                               held back while later segments go
 *   a dead-letter write fails                   the record is not acknowledged:
 *                                               the segment stays, the write is
 *                                               retried with backoff
 *   spool full (spool_max_bytes)                the spans are not spooled; the
 *                                               gap (project, created_at range,
 *                                               count) is recorded in
 *                                               PostgreSQL's spangate_ch_gaps
 *                                               for `spangate migrate` to repair
 *
 * On start the spool's contents are replayed first. One chsink per worker.
 */
#ifndef SG_CHSINK_H
#define SG_CHSINK_H

#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "ch.h"
#include "ch_rows.h"
#include "ch_setup.h"
#include "config.h"
#include "pg.h"
#include "span.h"

typedef struct sg_chsink_s sg_chsink_t;

typedef struct {
  uint64_t inserts;          /* INSERTs ClickHouse accepted */
  uint64_t rows_sent;        /* rows in those */
  uint64_t insert_us_sum;    /* their total latency */
  uint64_t retries;          /* failed attempts that will be retried */
  uint64_t dead_records;     /* records moved to dead letters */
  uint64_t dead_rows;
  uint64_t encode_rejects;   /* spans the row encoder refused (out of range) */
  uint64_t gaps;             /* spans recorded as gaps (spool full / unavailable) */
  uint64_t dead_letter_failures; /* dead-letter writes that failed (the rows were kept) */
  uint64_t spool_errors;     /* other spool operations that failed (nothing was lost) */
  int reachable;             /* last attempt reached ClickHouse (1), or not (0) */
  uint64_t spool_bytes, spool_records;
  int64_t spool_oldest_us;   /* append time of the oldest unsent row, 0 if none */
} sg_chsink_stats_t;

/* Opens <cfg->spool_dir>/w<worker_id> and starts the flusher, which sends
 * through ch (the worker's ClickHouse client, on loop; the caller owns it
 * and closes it before sg_chsink_close). target is the
 * server's version and the spans table's layout as it exists (ch_setup.h;
 * copied), NULL when ClickHouse was not
 * reached: spans are recorded as gaps until the sink reaches it (and
 * worker 1 creates the schema then, unless clickhouse_create_schema is off).
 * pg is used to record gaps. NULL with a reason in err. */
sg_chsink_t *sg_chsink_new(uv_loop_t *loop, const sg_config_t *cfg, sg_ch_client_t *ch,
                           const sg_ch_target_t *target, int worker_id, sg_pg_pool_t *pg,
                           sg_buf_t *err);

/* The bytes held by the worker's own requests in flight (budget.h's own
 * counter): the sink reads "ingest is idle" from it (see the sealing in
 * chsink.c), so one worker's last rows need not wait for another worker's
 * requests. Without it: the process-wide gauge. */
void sg_chsink_watch(sg_chsink_t *s, _Atomic int64_t *inflight);

/* A sink of its own beside the workers' (change capture's): one spool
 * directory, no adoption of other directories, no gaps (the caller keeps the
 * source of its rows). */
typedef struct {
  const char *dir;        /* spool directory (created) */
  const char *insert_sql; /* the INSERT its rows are for; NULL: the spans INSERT of the target's layout */
  const char *tag;        /* with insert_sql: the rows' layout, e.g. "nodes/us" */
  int fsync_never;        /* the spool is never synced: the caller can produce the rows again */
  long long flush_interval_ms; /* > 0: seal at least this often instead of flush_interval_ms */
} sg_chsink_opts_t;

/* Sends through ch (the caller's, closed before sg_chsink_close, as for
 * sg_chsink_new). target is required (the rows were encoded for its
 * layout). NULL with a reason in err. */
sg_chsink_t *sg_chsink_open(uv_loop_t *loop, const sg_config_t *cfg, sg_ch_client_t *ch,
                            const sg_ch_target_t *target, const sg_chsink_opts_t *o, sg_buf_t *err);

/* Appends rows already encoded for the sink's INSERT (TabSeparated, each
 * '\n'-terminated) as one record stamped now_us (the spool's oldest_us
 * then tells which records ClickHouse has: every one stamped earlier than
 * sg_chsink_stats()'s spool_oldest_us, all when it is 0, provided the
 * stamps increase). 0; SG_ETOOBIG: the spool is full (nothing written,
 * try again once the flusher made room); SG_EUNAVAIL: no INSERT (version
 * unknown); SG_EIO. Unlike sg_chsink_append nothing becomes a gap. */
int sg_chsink_append_rows(sg_chsink_t *s, const char *rows, size_t len, int64_t now_us);

/* sg_chsink_append_rows for rows of one project (a trace's tombstones),
 * stamped now and counted in the freshness table like sg_chsink_append's
 * records: until ClickHouse has them, sg_chsink_pending_before says so for
 * reads of the project that begin after this returned. Same results. */
int sg_chsink_append_project_rows(sg_chsink_t *s, const uint8_t project_id[16], const char *rows, size_t len);

/* The spans table's layout the sink writes for, NULL while it is unknown
 * (ClickHouse not reached since start): rows for sg_chsink_append_rows are
 * encoded for it (sg_ch_row_encode_text). */
const sg_ch_layout_t *sg_chsink_layout(const sg_chsink_t *s);

/* Spools the committed spans of one request for project. expires_us[i] is
 * span i's expiry (µs; INT64_MAX = never), or NULL for never. Spans the row
 * encoder refuses are counted and logged, not spooled. Returns 0 when the
 * rows are spooled (durable after sg_chsink_sync) or recorded as a gap. */
int sg_chsink_append(sg_chsink_t *s, const uint8_t project_id[16], const sg_span_t *spans, size_t n,
                     const int64_t *expires_us);

/* Spools the spans of a ClickHouse-only project (chonly.h stamped them).
 * Nothing becomes a gap (PostgreSQL has no copy to repair one from): the
 * caller refuses the request instead. Spans the row encoder refuses (a
 * value out of ClickHouse's range) are counted and marked in refused[i]
 * (n bytes; may be NULL), for the caller to reject to the client; the
 * others are spooled as one record. 0 when they are (durable after
 * sg_chsink_sync; also when every span was refused); SG_ETOOBIG: the spool
 * is full (spool_max_bytes), nothing was written; SG_EUNAVAIL: the spans
 * table's layout is unknown (ClickHouse not reached since start and none
 * cached); SG_EIO: the write failed; SG_ENOMEM. */
int sg_chsink_append_only(sg_chsink_t *s, const uint8_t project_id[16], const sg_span_t *spans, size_t n,
                          const int64_t *expires_us, uint8_t *refused);

/* Makes every append so far durable (fsync per spool_fsync). Call once per
 * group of appends, before answering their requests. 0 or SG_EIO. */
int sg_chsink_sync(sg_chsink_t *s);

/* sg_chsink_sync without blocking the loop: the fdatasync runs on libuv's
 * thread pool while the loop goes on (appends included). cb(arg, status)
 * runs on the loop once every append made before this call is durable
 * (status 0) or could not be made so (SG_EIO, logged); inside this call
 * when there is nothing to wait for. Calls made while a sync runs are
 * served together by the next one. 0, or SG_ENOMEM (cb never runs). */
typedef void (*sg_chsink_sync_cb)(void *arg, int status);
int sg_chsink_sync_async(sg_chsink_t *s, sg_chsink_sync_cb cb, void *arg);

void sg_chsink_stats(const sg_chsink_t *s, sg_chsink_stats_t *out);

/* The version ClickHouse SQL for the spans table is written in: the
 * server's, with SG_CH_DATETIME64 as the table has it (tables made before an
 * upgrade keep DateTime + _us columns). 1, or 0 while the sink has not
 * reached ClickHouse yet. */
int sg_chsink_read_version(const sg_chsink_t *s, sg_ch_version_t *out);

/* Does any worker's spool still hold a row of project_id appended (that is,
 * acknowledged) before t_us (µs since the epoch, this host's clock), not yet
 * in ClickHouse? 1 or 0; any thread. A read that must contain every span
 * acknowledged before it began is served from ClickHouse only when this is
 * 0 for its start time (read_ch.c); a ClickHouse-only project can wait for
 * it instead. The table behind it (chpending.h) also knows the gaps this
 * process recorded. */
int sg_chsink_pending_before(const uint8_t project_id[16], int64_t t_us);

/* Stops the flusher and closes the spool; frees itself once its handles
 * are closed. Close the ClickHouse client first (sg_ch_client_close): that
 * cancels an insert in flight, which may be sending from the spool's memory.
 * Whatever is not sent stays in the spool for next time (at least once). */
void sg_chsink_close(sg_chsink_t *s);

#endif
