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
#include "ch_schema.h"
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

/* Opens <cfg->spool_dir>/w<worker_id> and starts the flusher. ver is the
 * ClickHouse server's version (the row layout depends on it). pg is used to
 * record gaps. NULL with a reason in err. */
sg_chsink_t *sg_chsink_new(uv_loop_t *loop, const sg_config_t *cfg, const sg_ch_version_t *ver,
                           int worker_id, sg_pg_pool_t *pg, sg_buf_t *err);

/* Spools the committed spans of one request for project. expires_us[i] is
 * span i's expiry (µs; INT64_MAX = never), or NULL for never. Spans the row
 * encoder refuses are counted and logged, not spooled. Returns 0 when the
 * rows are spooled (durable after sg_chsink_sync) or recorded as a gap. */
int sg_chsink_append(sg_chsink_t *s, const uint8_t project_id[16], const sg_span_t *spans, size_t n,
                     const int64_t *expires_us);

/* Makes every append so far durable (fsync per spool_fsync). Call once per
 * group of appends, before answering their requests. 0 or SG_EIO. */
int sg_chsink_sync(sg_chsink_t *s);

void sg_chsink_stats(const sg_chsink_t *s, sg_chsink_stats_t *out);

/* Does any worker's spool still hold a row of project_id appended (that is,
 * acknowledged) before t_us (µs since the epoch, this host's clock), not yet
 * in ClickHouse? 1 or 0; any thread. A read that must contain every span
 * acknowledged before it began is served from ClickHouse only when this is
 * 0 for its start time (read_ch.c); a ClickHouse-only project can wait for
 * it instead. The table behind it (chpending.h) also knows the gaps this
 * process recorded. */
int sg_chsink_pending_before(const uint8_t project_id[16], int64_t t_us);

/* Stops the flusher, waits for an insert in flight (bounded by the request
 * timeout), closes the spool and the ClickHouse client; frees itself once its
 * handles are closed. Whatever is not sent stays in the spool for next time. */
void sg_chsink_close(sg_chsink_t *s);

/* ClickHouse's version, asked with a short timeout; falls back to the version
 * cached in <spool_dir>/clickhouse.version by the last successful ask. 0, or
 * SG_EUNAVAIL when neither is available (err says why). */
int sg_chsink_server_version(const sg_config_t *cfg, sg_ch_version_t *ver, sg_buf_t *err);

#endif
