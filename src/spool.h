/* spool.h - a durable on-disk queue of opaque records (one per worker).
 *
 * Stands alone: knows nothing of the server, HTTP, ClickHouse or Lua; never
 * logs. Every function returns 0 or a negative SG_E* code (err.h).
 *
 * What it is for. After a PostgreSQL commit, the rows bound for ClickHouse
 * are appended here (and synced) before the HTTP answer; a flusher later
 * reads whole sealed segments, sends them, and acknowledges them, and only
 * then does the spool delete them. A ClickHouse outage or a kill -9 of the
 * gateway loses nothing that sg_spool_append()+sg_spool_sync() returned 0 for.
 *
 * Threads. A spool is owned by one thread (one per worker loop); it has no
 * locks and no function may run concurrently with another on the same spool.
 * Distinct spools (distinct directories) are independent. The directory is
 * flock()ed while open, so a second sg_spool_open() of the same directory,
 * from this or another process, fails with SG_EBUSY. All calls do blocking
 * file I/O (fdatasync can take milliseconds); a caller that must not block
 * its loop may run a whole call on a thread pool, one call at a time.
 *
 * On disk, in the directory passed to sg_spool_open() (e.g. <spool_dir>/w3):
 *
 *   0000000000000042.seg   segment: a 16-byte file header, then records
 *   0000000000000042.ack   progress of a partly delivered segment (optional)
 *   seq.hw                 high-water mark of segment numbers (see below)
 *   dead/0000000000000042.seg   dead-lettered records, same format
 *   dead/0000000000000042.txt   one line per dead record: why
 *
 * Segment file header (16 bytes): "SGSPOOL" 0x01 (magic + format version),
 * then the segment number as u64 little-endian.
 *
 * Record (all integers little-endian, no alignment):
 *
 *   off size
 *    0   4   magic  FF 53 47 52  ("\xffSGR"; 0xFF never occurs in UTF-8 text)
 *    4   4   hcrc   CRC-32 (zlib) of bytes 8..35 of this header
 *    8   4   len    payload bytes
 *   12   4   pcrc   CRC-32 of tag bytes followed by payload bytes
 *   16   8   seq    record number: segment number << 24 | index in segment
 *   24   8   time   append time, microseconds (the caller's clock)
 *   32   1   tag_len
 *   33   1   flags  0 (reserved)
 *   34   2   0      (reserved)
 *   36       tag (tag_len bytes, no NUL), payload (len bytes)
 *
 * The payload is opaque (for spangate: TabSeparated ClickHouse rows of one
 * project); the tag is a short opaque string stored with it (for spangate:
 * the target table), so a reader can group records without parsing them.
 * The header CRC means a corrupt length cannot send the reader astray and a
 * stray magic inside a payload is not taken for a record.
 *
 * Record numbers are unique and increasing for the life of the directory:
 * segment numbers continue after the highest found in the directory, in
 * dead/ and in seq.hw, which reserves numbers in blocks of 1024 (one small
 * atomic rewrite per 1024 segments), so numbers are never reused even after
 * the spool was drained empty. A caller may use them as idempotency keys.
 *
 * Appending. Records go, with one writev(2) on an O_APPEND descriptor, to the
 * open segment, which is created on the first append after open/seal. It is
 * sealed (closed for appends; synced first unless FSYNC_NEVER) when the next
 * record would take it past segment_bytes, when it holds 2^24 records, or
 * when the caller calls sg_spool_seal() (e.g. on a flush-age timer). A record
 * larger than segment_bytes gets a segment of its own. Nothing is buffered in
 * memory. max_bytes bounds the bytes of all segment files (sealed and open,
 * including records already acknowledged in a partly delivered segment,
 * whose space returns only when the whole segment is acknowledged).
 *
 * Recovery (sg_spool_open): every segment found becomes sealed, to be read
 * before anything appended later. Each is validated record by record:
 *  - an invalid record followed by valid ones (disk corruption) is skipped:
 *    the reader resynchronises on the next valid header, and the skipped
 *    bytes are counted in corrupt_records/corrupt_bytes; nothing after it is
 *    lost;
 *  - invalid bytes at the end of a segment with no valid record after them (a
 *    torn append from a crash) are truncated away and counted in torn_bytes.
 *    Such appends were never acknowledged as durable: with FSYNC_ALWAYS/BATCH
 *    the caller answers only after the sync returned;
 *  - segments with no pending record (empty, fully acknowledged, garbage
 *    only) are deleted, as are *.ack files without a segment and *.tmp files.
 * A sealed segment corrupted while the spool is open is handled the same way
 * when read, except that nothing is truncated.
 *
 * Reading and acknowledging. sg_spool_next_segment() maps the oldest sealed
 * segment not already handed out, whole and read-only, and validates it,
 * giving back the pages it read as it goes; a reader gives back what it
 * reads with sg_spool_seg_drop(), so a segment of any size costs little
 * resident memory. Recovery reads every segment the same way. Its
 * pending records are numbered 0..count-1 in append order; the numbering is
 * stable for the life of the handle. Then, once the receiver accepted them:
 *  - sg_spool_ack(): every record is done; the file is unlinked and the
 *    directory fsynced; the handle is freed.
 *  - sg_spool_ack_records(): some records are done (e.g. one table's rows
 *    accepted, another's failed transiently). Recorded durably as a range of
 *    record numbers appended to <seg>.ack; a later load skips them.
 *  - sg_spool_deadletter(): one record is poison: it is copied verbatim to
 *    dead/<seg>.seg with a reason line in dead/<seg>.txt, then marked done.
 *    The records behind it stay deliverable. If the copy fails the record
 *    stays pending: a caller must not sg_spool_ack() the segment then.
 *  - sg_spool_release(): give the handle back untouched (e.g. ClickHouse is
 *    down); the next sg_spool_next_segment() returns it again.
 * How a poison batch is split: send the segment (grouped by tag); when the
 * receiver rejects a batch as bad data, resend its records one by one,
 * sg_spool_ack_records() the accepted ones and sg_spool_deadletter() the
 * rejected ones, then sg_spool_ack() the segment.
 *
 * Delivery is at least once. A crash between a delivery and its ack (or
 * between a dead-letter copy and its mark) repeats that delivery (or copy)
 * after restart; nothing is ever lost silently. dead/ is not bounded by
 * max_bytes and is never deleted by the spool: it is the operator's.
 *
 * Fsync policy: FSYNC_ALWAYS fdatasyncs each append before returning;
 * FSYNC_BATCH syncs only in sg_spool_sync() (call it once per group of
 * appends, e.g. per group commit, before answering), on seal and on close;
 * both also fsync the directory when files are created or deleted and
 * fdatasync .ack and dead-letter writes. FSYNC_NEVER never syncs (tests,
 * or when losing the page cache to a power cut is acceptable; a kill -9
 * still loses nothing that was appended).
 *
 * Errors: SG_EINVAL bad arguments; SG_ETOOBIG the record would take the spool
 * past max_bytes (or could never fit: compare sg_spool_record_size() with
 * max_bytes) - what a full spool means is the caller's policy, the record was
 * not written; SG_EBUSY directory locked by another open spool; SG_EIO a
 * system call failed (including ENOSPC); SG_ENOMEM; SG_ENOTFOUND no sealed
 * segment to read. After a failed append or sync the open segment is sealed,
 * so a later append starts a fresh file (a failed fdatasync cannot be
 * retried meaningfully on the same file).
 */
#ifndef SG_SPOOL_H
#define SG_SPOOL_H

#include <stddef.h>
#include <stdint.h>

typedef struct sg_spool_s sg_spool_t;
typedef struct sg_spool_seg_s sg_spool_seg_t;

typedef enum {
  SG_SPOOL_FSYNC_BATCH = 0, /* default: sg_spool_sync() per group of appends */
  SG_SPOOL_FSYNC_ALWAYS,    /* fdatasync inside every sg_spool_append() */
  SG_SPOOL_FSYNC_NEVER      /* leave it to the kernel */
} sg_spool_fsync_t;

typedef struct {
  uint64_t segment_bytes;   /* seal the open segment at this size; 0: 8 MiB */
  uint64_t max_bytes;       /* bound on all segment files; 0: unbounded */
  sg_spool_fsync_t fsync;
} sg_spool_opts_t;

#define SG_SPOOL_DEFAULT_SEGMENT_BYTES (8u << 20)
#define SG_SPOOL_FILE_HEADER 16u
#define SG_SPOOL_REC_HEADER 36u
#define SG_SPOOL_MAX_TAG 255u
#define SG_SPOOL_MAX_PAYLOAD (1u << 30) /* 1 GiB */

typedef struct {
  uint64_t bytes;            /* segment file bytes, sealed + open (what max_bytes bounds) */
  uint64_t records;          /* records not yet acknowledged or dead-lettered */
  uint64_t segments;         /* segment files, sealed + open */
  uint64_t sealed_segments;  /* of which sealed (readable) */
  uint64_t open_bytes;       /* the open segment's size, 0 if none */
  uint64_t open_records;     /* records in the open segment */
  int64_t oldest_us;         /* append time of the oldest pending record; 0 if none */
  int64_t open_oldest_us;    /* append time of the open segment's first record; 0 if none */
  /* counters since open */
  uint64_t appended_records;
  uint64_t acked_records;    /* by sg_spool_ack / sg_spool_ack_records */
  uint64_t dead_records;     /* by sg_spool_deadletter */
  uint64_t corrupt_records;  /* invalid regions skipped (each may hide records) */
  uint64_t corrupt_bytes;
  uint64_t torn_bytes;       /* truncated at recovery */
  uint64_t lost_records;     /* pending records whose segment vanished (deleted by hand) */
  uint64_t fsyncs;           /* fdatasync/fsync calls made */
} sg_spool_stats_t;

typedef struct {
  const void *data;   /* payload; valid until the handle is acked/released */
  size_t len;
  const char *tag;    /* not NUL-terminated */
  size_t tag_len;
  uint64_t seq;       /* record number (see above) */
  int64_t time_us;    /* append time */
} sg_spool_rec_t;

/* Open (creating it and its parents, mode 0700) the spool directory dir and
 * recover what is in it (see above). opts may be NULL for the defaults; they
 * are copied. *out is the spool, freed by sg_spool_close(). Recovery reads
 * every segment once, one at a time, so opening a full spool costs a
 * sequential read of max_bytes. */
int sg_spool_open(const char *dir, const sg_spool_opts_t *opts, sg_spool_t **out);

/* Sync the open segment (unless FSYNC_NEVER), free every handle still out,
 * unlock and free. NULL is a no-op. Returns the sync's result; the spool is
 * freed either way. */
int sg_spool_close(sg_spool_t *sp);

/* Bytes a record with this tag length and payload length takes on disk. */
uint64_t sg_spool_record_size(size_t tag_len, size_t len);

/* Append one record: tag (NUL-terminated, at most 255 bytes, NULL for none)
 * and len payload bytes, stamped with now_us. With FSYNC_ALWAYS it is durable
 * when this returns 0; with FSYNC_BATCH after the next sg_spool_sync(). */
int sg_spool_append(sg_spool_t *sp, const char *tag, const void *data, size_t len,
                    int64_t now_us);

/* Make every record appended so far durable (fdatasync of the open segment
 * if it has unsynced appends). A no-op with FSYNC_NEVER. */
int sg_spool_sync(sg_spool_t *sp);

/* sg_spool_sync() in three steps, for an owner that must not wait for the
 * disk: the fdatasync runs on another thread while appends go on.
 *   sg_spool_sync_begin (owner)  *fd receives a duplicate descriptor of the
 *       open segment when it has unsynced appends, -1 when there is nothing
 *       to wait for (or FSYNC_NEVER); the appends so far now count as synced.
 *       Returns the failure of an earlier sync or seal, else 0 (as
 *       sg_spool_sync does).
 *   sg_spool_sync_fd (any thread) fdatasync(fd) and close(fd): the records
 *       appended before the begin are durable when it returns 0; SG_EIO.
 *       Touches nothing of the spool.
 *   sg_spool_sync_end (owner) the result of sg_spool_sync_fd. After a
 *       failure the open segment is sealed unsynced (later appends go to a
 *       fresh file), and when records were appended since the begin the
 *       next sync fails too: the kernel may have dropped their pages.
 * One sync at a time: begin again only after end. */
int sg_spool_sync_begin(sg_spool_t *sp, int *fd);
int sg_spool_sync_fd(int fd);
void sg_spool_sync_end(sg_spool_t *sp, int rc);

/* Seal the open segment (synced first unless FSYNC_NEVER), so the reader can
 * take it; the next append opens a new one. A no-op if nothing is open. A
 * failed sync is returned and also left for the next sg_spool_sync(), which
 * is what tells the appenders whether their records are durable. */
int sg_spool_seal(sg_spool_t *sp);

/* The oldest sealed segment not already handed out, loaded and validated.
 * SG_ENOTFOUND if there is none (the open segment is never handed out: seal
 * it first). The handle is the caller's until sg_spool_ack() or
 * sg_spool_release(); a segment may have 0 pending records (ack it). */
int sg_spool_next_segment(sg_spool_t *sp, sg_spool_seg_t **out);

size_t sg_spool_seg_count(const sg_spool_seg_t *seg);  /* records, 0..count-1 */
uint64_t sg_spool_seg_id(const sg_spool_seg_t *seg);   /* segment number */
/* Record i of the handle: 0, or SG_EINVAL if i >= count. */
int sg_spool_seg_record(const sg_spool_seg_t *seg, size_t i, sg_spool_rec_t *rec);
/* Whether record i has been acked or dead-lettered through this handle. */
int sg_spool_seg_done(const sg_spool_seg_t *seg, size_t i);
/* A handle's records lie in a read-only mapping of the segment file, in
 * order. This gives back the pages of records first..first+n-1 and of what
 * lies between them (pages.h); n = SIZE_MAX: through the end of the file. A
 * pass over a large segment calls it as it goes, so the segment does not
 * stay in resident memory. Records stay valid; they are read back when
 * touched. Out-of-range records are ignored. */
void sg_spool_seg_drop(const sg_spool_seg_t *seg, size_t first, size_t n);

/* The whole segment is delivered: delete it (unlink, fsync of the directory)
 * and free the handle. If the unlink fails the handle is still the caller's.
 * A failed directory fsync is not reported: the file is gone, and the worst a
 * power cut can then do is bring it back for one repeated delivery. */
int sg_spool_ack(sg_spool_t *sp, sg_spool_seg_t *seg);

/* Records first..first+n-1 of the handle are delivered; durable when this
 * returns 0 (per the fsync policy). Acking a record twice is harmless. */
int sg_spool_ack_records(sg_spool_t *sp, sg_spool_seg_t *seg, size_t first, size_t n);

/* Record i is poison: copy it to dead/ with reason (one line; NUL-terminated,
 * may be NULL; control characters are replaced), then mark it done. On any
 * error (dead/ not a writable directory, disk full, ...) the record is not
 * done and stays the caller's to retry; what the attempt wrote to dead/ is
 * cut off again, so a retry leaves exactly one copy. */
int sg_spool_deadletter(sg_spool_t *sp, sg_spool_seg_t *seg, size_t i, const char *reason);

/* Give the handle back undelivered; the segment will be handed out again. */
void sg_spool_release(sg_spool_t *sp, sg_spool_seg_t *seg);

void sg_spool_stats(const sg_spool_t *sp, sg_spool_stats_t *st);

#endif
