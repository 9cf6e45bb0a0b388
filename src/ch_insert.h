/* ch_insert.h - how spangate sends an INSERT to ClickHouse: the one place
 * that knows the settings every insert carries, whoever sends it (the
 * dual-write's flusher, gw.ch.insert / insert_spans / span_batch of the
 * jobs).
 *
 * Every insert:
 *   insert_distributed_sync=1  into a Distributed table (a cluster's
 *       `spans`) the insert is answered only once every shard has its
 *       rows. An asynchronous one is answered when the rows are queued on
 *       the receiving server, and 18.16 moves a queued block aside to
 *       broken/ when the replica it is being sent to dies: the rows would
 *       be gone from the table while the sender (spool segment, job
 *       checkpoint) counts them as delivered. With the setting, a shard that
 *       cannot take its rows fails the insert and the sender keeps them.
 *       Other tables ignore it.
 *
 * Two kinds, by what a repeat of the same bytes means:
 *   a segment (the dual-write): records first..last of one spool, sent again
 *       after a failure that may have reached the server (timeout, reset,
 *       failover to another endpoint). A repeat is the same insert, and a
 *       replicated table must drop it: insert deduplication stays on (a
 *       Replicated*MergeTree drops a block whose checksum it has seen), and
 *       on 22.2+ it gets an insert_deduplication_token naming the records
 *       and the bytes (sg_ch_dedup_token), so the repeat is dropped however
 *       the server splits blocks. Re-sendable (SG_CH_IDEMPOTENT).
 *   a fresh insert (the jobs): rows the job decided to write now. The same
 *       bytes may well have been inserted before and removed since (a
 *       mutation, the TTL sweep, a lost replica: migrate copies them
 *       again), and a replicated table would drop them as a repeat of that
 *       first insert, silently, for its last replicated_deduplication_window
 *       blocks: so insert_deduplicate=0. A copy that lands twice is a second
 *       row of the same version, which ReplacingMergeTree folds (FINAL).
 *       Re-sendable only when the caller says so.
 *
 * Stands alone: builds requests, sends nothing, never logs.
 */
#ifndef SG_CH_INSERT_H
#define SG_CH_INSERT_H

#include <stddef.h>
#include <stdint.h>

#include "ch.h"
#include "ch_version.h"

/* The URL parameters of each kind (exposed for tests and docs). */
#define SG_CH_INSERT_SEGMENT_SETTINGS "insert_distributed_sync=1"
#define SG_CH_INSERT_FRESH_SETTINGS "insert_distributed_sync=1&insert_deduplicate=0"

/* An insert request ready for sg_ch_send: req points into this struct
 * (token) and at the caller's sql and body, which must outlive the
 * sg_ch_send call (sg_ch_send copies what it keeps). */
typedef struct {
  sg_ch_req_t req;
  char token[SG_CH_TOKEN_MAX];
} sg_ch_insert_t;

/* A spool segment's insert of its records' rows (records first..last of
 * the spool named scope, in npieces pieces) with sql, for a server of
 * version ver: flags | SG_CH_IDEMPOTENT,
 * the segment settings, and on 22.2+ a deduplication token (none when scope
 * is NULL: a server that refused the setting). 0, or SG_EIO when the
 * token's digest failed (the request is then still usable, without a
 * token: block checksums still deduplicate). */
int sg_ch_insert_segment(sg_ch_insert_t *ins, const sg_ch_version_t *ver, const char *sql,
                         const sg_ch_piece_t *pieces, size_t npieces, unsigned flags,
                         const char *scope, uint64_t first, uint64_t last);

/* A fresh insert of body with sql: flags as given, the fresh settings. */
void sg_ch_insert_fresh(sg_ch_insert_t *ins, const char *sql, const void *body, size_t len,
                        unsigned flags);

#endif
