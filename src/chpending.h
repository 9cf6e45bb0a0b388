/* chpending.h - what ClickHouse does not have yet, per project, known to the
 * whole process: the freshness rule of the reads.
 *
 * A span is acknowledged once its rows are in a worker's spool; ClickHouse
 * has it only after that worker's flusher delivered the record. A read
 * served from ClickHouse must contain every span acknowledged before the
 * read began, so before choosing ClickHouse a read asks
 * sg_chpending_before(project, start): does any worker still hold an
 * undelivered row of this project appended before `start`? The workers'
 * chsinks keep the table (sg_chpending_add when a record is appended, before
 * its request is answered; sg_chpending_done when ClickHouse took it or it
 * went to the dead letters), under one mutex per worker. A project that
 * must be read from ClickHouse anyway (ClickHouse-only) can instead wait
 * until the answer turns false.
 *
 * Gaps are the other way ClickHouse misses spans: rows that never reached
 * the spool (spool full, ClickHouse never reached since start) are recorded
 * in PostgreSQL's spangate_ch_gaps until `spangate migrate` repairs them.
 * The table remembers, per project, the gaps this process recorded (at
 * once, before the request is answered) and what the last look at
 * spangate_ch_gaps said (sg_chpending_gap_state / _gap_checked).
 *
 * Records are identified by (worker, append time in µs): a chsink stamps
 * its records with strictly increasing times (an append that does not is
 * taken as lost: see below). Records in the spool
 * from before the process started carry no project the table knows:
 * sg_chpending_unknown marks a worker as holding rows of any project
 * appended up to a time, until they are delivered.
 *
 * Any thread. Building block: no server, no logging; allocation failures
 * make the table answer "pending" (never a stale "not pending").
 */
#ifndef SG_CHPENDING_H
#define SG_CHPENDING_H

#include <stdint.h>

/* worker: 1..SG_CHPENDING_MAX_WORKERS; others are ignored. */
#define SG_CHPENDING_MAX_WORKERS 256

void sg_chpending_add(int worker, const uint8_t project[16], int64_t t_us);
void sg_chpending_done(int worker, int64_t t_us);
/* until_us > 0: the worker holds records of unknown projects appended up to
 * until_us; 0: it no longer does. */
void sg_chpending_unknown(int worker, int64_t until_us);
/* The worker's unknown-records time (0: none), so its chsink can clear it
 * once every record it still holds is newer. */
int64_t sg_chpending_unknown_until(int worker);

/* 1 when some worker holds an undelivered row of project appended before
 * t_us (or may: unknown records, a failed allocation), else 0. */
int sg_chpending_before(const uint8_t project[16], int64_t t_us);
/* 1 once since the last call when sg_chpending_before answered 1 because
 * of this worker's rows: a read is waiting for them (or was served by
 * PostgreSQL instead), so its chsink sends what it holds now rather than at
 * the end of its batching interval. */
int sg_chpending_wanted(int worker);
/* Undelivered rows of project in the whole process (for tests and logs). */
uint64_t sg_chpending_count(const uint8_t project[16]);

/* ---- gaps ------------------------------------------------------------------ */

/* This process is recording a gap for project (the INSERT is on its way). */
void sg_chpending_gap_begin(const uint8_t project[16]);
/* That INSERT ended: committed (ok) at committed_us, or failed (the gap is
 * then known to this process only, for as long as it runs). */
void sg_chpending_gap_end(const uint8_t project[16], int ok, int64_t committed_us);

#define SG_GAP_NO 0
#define SG_GAP_YES 1
#define SG_GAP_UNKNOWN 2 /* not looked at within max_age_us: look again */
/* What is known of the project's open gaps at now_us. */
int sg_chpending_gap_state(const uint8_t project[16], int64_t now_us, int64_t max_age_us);
/* The answer of a look at spangate_ch_gaps that started at asked_us. */
void sg_chpending_gap_checked(const uint8_t project[16], int open_gaps, int64_t asked_us);

/* Forgets everything (tests). */
void sg_chpending_reset(void);

#endif
