/* chsink.c - spool, flush and retry for the ClickHouse dual-write. */
#include "chsink.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "ch.h"
#include "ch_insert.h"
#include "chpending.h"
#include "ch_setup.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "pages.h"
#include "spool.h"

#define MAX_SPOOLS 16          /* own + orphaned directories from a larger worker count */
#define BACKOFF_MIN_MS 200
#define BACKOFF_MAX_MS 30000
#define TICK_MS 50

typedef struct {
  sg_spool_t *sp;
  char *dir;
  int own;                     /* this worker appends here; others are drained and removed */
} spool_ref_t;

/* A caller of sg_chsink_sync_async waiting for its fdatasync. */
typedef struct waiter_s {
  struct waiter_s *next;
  sg_chsink_sync_cb cb;
  void *arg;
} waiter_t;

typedef struct {
  int state;                   /* REC_* (see flushing) */
  char *why;                   /* REC_DEAD: the dead-letter reason */
} rec_state_t;

/* A segment that failed with suspect errors (see flushing). */
typedef struct {
  const sg_spool_t *sp;        /* NULL: none */
  uint64_t seg_id;
  unsigned tries;              /* whole sends and split passes that failed that way */
  uint64_t mark;               /* st.inserts at the first of them */
  int code;                    /* the last one's ClickHouse code and message */
  char msg[256];
} suspect_t;

struct sg_chsink_s {
  uv_loop_t *loop;
  const sg_config_t *cfg;
  sg_ch_layout_t lay;          /* the spans table's, as it exists */
  sg_ch_version_t ver;         /* the server's (insert options depend on it) */
  int sent_token;              /* the insert in flight carries a deduplication token */
  int no_token;                /* the server refused the token's setting: never again */
  int have_ver;                /* 0: layout unknown (ClickHouse never reached): gaps only */
  int worker_id;
  /* freshness (chpending.h), worker sinks only: this worker's records,
   * stamped strictly increasing; records older than started_us are from
   * before this run */
  int64_t last_stamp, started_us;
  struct setup_s *setup;       /* a ch_setup off the loop, when ClickHouse was away at start */
  char tag[32];                /* row layout of this server, e.g. "spans/us" */
  sg_buf_t insert_sql;
  sg_ch_client_t *ch;
  unsigned ch_flags;           /* SG_CH_GZIP per clickhouse_gzip; SG_CH_MAPPED */
  int64_t interval_ms;         /* flush_interval_ms, or the opts' own */
  sg_pg_pool_t *pg;
  spool_ref_t spools[MAX_SPOOLS];
  int nspools;
  uv_timer_t timer;
  /* the segment in flight */
  sg_spool_seg_t *seg;
  int seg_spool;
  int splitting;               /* sending seg's records one by one */
  size_t split_next;
  rec_state_t *rs;             /* while splitting: one per record of seg */
  size_t nrs;
  unsigned streak;             /* suspect failures in a row in this split pass */
  int dl_wait;                 /* a dead-letter write failed: seg is kept, retried at next_try_ms */
  int dl_quiet;                /* that failure is logged for this pass */
  uint64_t dl_backoff_ms;
  suspect_t sus;               /* the segment in flight's suspect failures, if any */
  sg_spool_seg_t *park;        /* a suspect segment held back, or NULL */
  const sg_spool_t *park_sp;
  suspect_t park_sus;
  uint64_t park_until, park_backoff_ms;
  uint64_t sent_at;            /* uv_now of the request, for latency */
  size_t sent_rows;
  sg_ch_piece_t *pieces;       /* the insert in flight: its records' rows, in place */
  size_t npieces_cap;
  sg_ch_piece_t one;           /* the record in flight while splitting */
  sg_buf_t rows;               /* scratch for encoding */
  uint64_t backoff_ms;
  uint64_t next_try_ms;
  uint64_t last_version_try;
  int closing;
  int logged_down;             /* a "ClickHouse unreachable" line is out */
  uint64_t last_encode_log;
  int fixed_insert;            /* sg_chsink_open with its own INSERT statement and tag */
  sg_chsink_stats_t st;
  /* sg_chsink_sync_async: the fdatasync on the thread pool, who waits for
   * it, and who waits for the next one */
  uv_work_t sync_work;
  int sync_running;
  int timer_closed;            /* closed: the last one out frees */
  int sync_fd, sync_rc, sync_begin_rc;
  waiter_t *sync_now;
  waiter_t *sync_next, *sync_next_tail;
  /* sealing (seal_due): the own spool's appends as the ticks saw them */
  uint64_t seen_appends;       /* its appended_records at the last look */
  uint64_t last_append_ms;     /* the last look that found new ones */
  uint64_t recent_gap_ms;      /* the longer recent gaps between such looks (seal_due) */
  int idle;                    /* watch_busy: no request in flight at the last tick */
  _Atomic int64_t *inflight;   /* the worker's own in-flight bytes (sg_chsink_watch), or NULL */
  uint64_t busy_since_ms, busy_ms;
};

static int64_t now_us(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* Without its INSERT statement the sink must not send anything (an empty
 * query would come back as a syntax error, i.e. "poison"): the layout stays
 * unknown, so rows are recorded as gaps and the layout is asked again. */
static int set_layout(sg_chsink_t *s, const sg_ch_layout_t *lay) {
  s->lay = *lay;
  if (s->fixed_insert) return 0; /* sg_chsink_open: the caller's INSERT and tag */
  snprintf(s->tag, sizeof s->tag, "spans/%s", (lay->flags & SG_CH_LAYOUT_DT64) ? "dt64" : "us");
  sg_buf_reset(&s->insert_sql);
  int rc = sg_ch_insert_sql(&s->lay, s->cfg->clickhouse_database, &s->insert_sql);
  s->have_ver = rc == 0;
  return rc;
}

/* ---- gaps ------------------------------------------------------------------ */

typedef struct {
  uint8_t id[16];
  char project[37], first[24], last[24], count[24];
  char reason[160];
  const char *params[5];
} gap_t;

static void gap_cb(void *arg, PGresult *res, int err, const char *errmsg) {
  gap_t *g = arg;
  (void)res;
  sg_chpending_gap_end(g->id, err == 0, now_us());
  if (err)
    sg_error("clickhouse", "could not record a ClickHouse gap (project %s, created_at µs %s..%s, "
                           "%s spans): %s; run `spangate migrate --project %s` to repair",
             g->project, g->first, g->last, g->count, errmsg ? errmsg : sg_strerror(err), g->project);
  free(g);
}

/* Records in PostgreSQL that these committed spans are missing from
 * ClickHouse, so the migration job repairs them. */
static void record_gap(sg_chsink_t *s, const uint8_t project[16], const sg_span_t *spans, size_t n,
                       const char *reason) {
  if (n == 0) return;
  int64_t lo = spans[0].created_at_us, hi = lo;
  for (size_t i = 1; i < n; i++) {
    if (spans[i].created_at_us < lo) lo = spans[i].created_at_us;
    if (spans[i].created_at_us > hi) hi = spans[i].created_at_us;
  }
  s->st.gaps += n;
  gap_t *g = calloc(1, sizeof *g);
  if (!g) {
    sg_chpending_gap_begin(project);
    sg_chpending_gap_end(project, 0, 0); /* known to this process only */
    char p[37];
    sg_uuid_format(project, p);
    sg_error("clickhouse", "could not record a ClickHouse gap (project %s, created_at µs %" PRId64
                           "..%" PRId64 ", %zu spans): out of memory; run `spangate migrate "
                           "--project %s` to repair",
             p, lo, hi, n, p);
    return;
  }
  memcpy(g->id, project, 16);
  sg_chpending_gap_begin(project); /* reads of the project avoid ClickHouse from now on */
  sg_uuid_format(project, g->project);
  snprintf(g->first, sizeof g->first, "%" PRId64, lo);
  snprintf(g->last, sizeof g->last, "%" PRId64, hi);
  snprintf(g->count, sizeof g->count, "%zu", n);
  snprintf(g->reason, sizeof g->reason, "%s", reason);
  g->params[0] = g->project;
  g->params[1] = g->first;
  g->params[2] = g->last;
  g->params[3] = g->count;
  g->params[4] = g->reason;
  static const char sql[] =
      "INSERT INTO spangate_ch_gaps (project_id, first_created_at, last_created_at, spans, reason)"
      " VALUES ($1, 'epoch'::timestamptz + $2::int8 * interval '1 microsecond',"
      " 'epoch'::timestamptz + $3::int8 * interval '1 microsecond', $4::int8, $5)";
  if (sg_pg_query(s->pg, sql, 5, g->params, NULL, NULL, gap_cb, g) != 0) gap_cb(g, NULL, SG_EUNAVAIL, NULL);
}

/* ---- appending -------------------------------------------------------------- */

/* Encodes spans into s->rows; a span the encoder refuses is left out,
 * counted, marked in refused (may be NULL) and, when log, reported (once a
 * second at most). *good: how many were encoded. SG_ENOMEM: nothing kept. */
static int encode(sg_chsink_t *s, const uint8_t project_id[16], const sg_span_t *spans, size_t n,
                  const int64_t *expires_us, uint8_t *refused, int log, size_t *good) {
  sg_buf_reset(&s->rows);
  *good = 0;
  for (size_t i = 0; i < n; i++) {
    size_t before = s->rows.len;
    int rc = sg_ch_row_encode(&s->lay, project_id, &spans[i], expires_us ? expires_us[i] : INT64_MAX,
                              &s->rows);
    if (rc == 0) {
      ++*good;
      continue;
    }
    s->rows.len = before;
    if (rc == SG_ENOMEM) return rc; /* not the span's fault */
    s->st.encode_rejects++;
    if (refused) refused[i] = 1;
    if (log && (uv_now(s->loop) - s->last_encode_log >= 1000 || s->last_encode_log == 0)) {
      s->last_encode_log = uv_now(s->loop);
      char t[37], sp[37];
      sg_uuid_format(spans[i].trace_id, t);
      sg_uuid_format(spans[i].span_id, sp);
      sg_error("clickhouse", "span %s/%s cannot be written to ClickHouse (%s); it is in PostgreSQL only",
               t, sp, sg_strerror(rc));
    }
  }
  return 0;
}

int sg_chsink_append(sg_chsink_t *s, const uint8_t project_id[16], const sg_span_t *spans, size_t n,
                     const int64_t *expires_us) {
  if (n == 0) return 0;
  if (!s->have_ver) {
    record_gap(s, project_id, spans, n, "ClickHouse version unknown (never reached since start)");
    return 0;
  }
  size_t good;
  if (encode(s, project_id, spans, n, expires_us, NULL, 1, &good) != 0) {
    sg_error("clickhouse", "out of memory encoding ClickHouse rows; the spans are recorded as a "
                           "gap for `spangate migrate`");
    record_gap(s, project_id, spans, n, "out of memory encoding rows"); /* the whole request */
    return 0;
  }
  if (good == 0) return 0;
  int rc = sg_chsink_append_project_rows(s, project_id, s->rows.data, s->rows.len);
  if (rc == 0) return 0;
  sg_error("clickhouse", "spool %s: %s; the spans are recorded as a gap for `spangate migrate`",
           s->spools[0].dir, rc == SG_ETOOBIG ? "full (spool_max_bytes)" : sg_strerror(rc));
  record_gap(s, project_id, spans, n, rc == SG_ETOOBIG ? "spool full" : "spool write failed");
  return 0;
}

int sg_chsink_append_only(sg_chsink_t *s, const uint8_t project_id[16], const sg_span_t *spans, size_t n,
                          const int64_t *expires_us, uint8_t *refused) {
  if (refused) memset(refused, 0, n);
  if (n == 0) return 0;
  if (!s->have_ver) return SG_EUNAVAIL;
  size_t good;
  int rc = encode(s, project_id, spans, n, expires_us, refused, 0, &good);
  if (rc != 0 || good == 0) return rc;
  rc = sg_chsink_append_project_rows(s, project_id, s->rows.data, s->rows.len);
  return rc == 0 || rc == SG_ETOOBIG || rc == SG_ENOMEM ? rc : SG_EIO;
}

int sg_chsink_append_rows(sg_chsink_t *s, const char *rows, size_t len, int64_t now_us) {
  if (!s->have_ver) return SG_EUNAVAIL;
  if (len == 0) return 0;
  /* Stamped like sg_chsink_append's records (unique, increasing), so that
   * chpending never takes one record's delivery for another's. */
  if (s->worker_id > 0 && now_us <= s->last_stamp) now_us = s->last_stamp + 1;
  int rc = sg_spool_append(s->spools[0].sp, s->tag, rows, len, now_us);
  if (rc == 0 && s->worker_id > 0 && now_us > s->last_stamp) s->last_stamp = now_us;
  return rc;
}

int sg_chsink_append_project_rows(sg_chsink_t *s, const uint8_t project_id[16], const char *rows, size_t len) {
  if (!s->have_ver) return SG_EUNAVAIL;
  if (len == 0) return 0;
  int64_t t = now_us();
  if (t <= s->last_stamp) t = s->last_stamp + 1; /* unique and increasing: the record's name in chpending */
  int rc = sg_spool_append(s->spools[0].sp, s->tag, rows, len, t);
  if (rc != 0) return rc;
  s->last_stamp = t;
  sg_chpending_add(s->worker_id, project_id, t);
  return 0;
}

int sg_chsink_pending_before(const uint8_t project_id[16], int64_t t_us) {
  return sg_chpending_before(project_id, t_us);
}

int sg_chsink_read_version(const sg_chsink_t *s, sg_ch_version_t *out) {
  if (!s || !s->have_ver || s->fixed_insert) return 0;
  *out = s->ver;
  if (s->lay.flags & SG_CH_LAYOUT_DT64) out->caps |= SG_CH_DATETIME64;
  else out->caps &= ~SG_CH_DATETIME64;
  return 1;
}

const sg_ch_layout_t *sg_chsink_layout(const sg_chsink_t *s) {
  return s && s->have_ver && !s->fixed_insert ? &s->lay : NULL;
}

int sg_chsink_sync(sg_chsink_t *s) {
  int rc = sg_spool_sync(s->spools[0].sp);
  if (rc != 0) sg_error("clickhouse", "spool %s: fsync failed: %s", s->spools[0].dir, sg_strerror(rc));
  return rc;
}

static void sync_start(sg_chsink_t *s, waiter_t *list);

static void sync_work_cb(uv_work_t *w) {
  sg_chsink_t *s = w->data;
  s->sync_rc = sg_spool_sync_fd(s->sync_fd);
}

static void sync_answer(sg_chsink_t *s, waiter_t *list, int rc) {
  if (rc != 0 && !s->closing)
    sg_error("clickhouse", "spool %s: fsync failed: %s", s->spools[0].dir, sg_strerror(rc));
  while (list) {
    waiter_t *next = list->next;
    list->cb(list->arg, rc);
    free(list);
    list = next;
  }
}

static void sync_after_cb(uv_work_t *w, int status) {
  sg_chsink_t *s = w->data;
  int rc = status == 0 ? s->sync_rc : SG_EIO;
  s->sync_running = 0;
  if (!s->closing) sg_spool_sync_end(s->spools[0].sp, rc);
  waiter_t *list = s->sync_now;
  s->sync_now = NULL;
  sync_answer(s, list, s->sync_begin_rc ? s->sync_begin_rc : rc);
  if (s->closing) {
    if (s->timer_closed) free(s);
    return;
  }
  list = s->sync_next;
  s->sync_next = s->sync_next_tail = NULL;
  if (list) sync_start(s, list);
}

/* One fdatasync for everything appended so far, on the thread pool; list
 * is answered when it is done (at once when there is nothing to sync). */
static void sync_start(sg_chsink_t *s, waiter_t *list) {
  int fd, rc = sg_spool_sync_begin(s->spools[0].sp, &fd);
  if (fd < 0) {
    sync_answer(s, list, rc);
    return;
  }
  s->sync_fd = fd;
  s->sync_begin_rc = rc;
  s->sync_now = list;
  s->sync_work.data = s;
  if (uv_queue_work(s->loop, &s->sync_work, sync_work_cb, sync_after_cb) != 0) {
    s->sync_now = NULL; /* no thread pool: sync here */
    rc = sg_spool_sync_fd(fd);
    sg_spool_sync_end(s->spools[0].sp, rc);
    sync_answer(s, list, s->sync_begin_rc ? s->sync_begin_rc : rc);
    return;
  }
  s->sync_running = 1;
}

int sg_chsink_sync_async(sg_chsink_t *s, sg_chsink_sync_cb cb, void *arg) {
  waiter_t *w = malloc(sizeof *w);
  if (w == NULL) return SG_ENOMEM;
  w->next = NULL;
  w->cb = cb;
  w->arg = arg;
  if (!s->sync_running) {
    sync_start(s, w);
    return 0;
  }
  if (s->sync_next_tail) s->sync_next_tail->next = w;
  else s->sync_next = w;
  s->sync_next_tail = w;
  return 0;
}

/* ---- flushing ---------------------------------------------------------------
 *
 * One segment is in flight at a time (s->seg). It is sent whole; a rejection
 * as bad data splits it into its records, sent one by one (s->splitting,
 * s->split_next, the per-record states in s->rs). A segment is deleted only
 * when every record is in ClickHouse or in a dead-letter file; when a record
 * cannot be written to dead/, the segment is kept in memory and the move is
 * retried with backoff (s->dl_wait), so nothing rejected ever vanishes.
 *
 * Suspect errors. ClickHouse answers some failures with HTTP 500 and an
 * exception code that says nothing about whether the data is at fault (a code
 * not in ch.c's table, or 49 LOGICAL_ERROR, which 18.16 gives for an unknown
 * Enum label and later versions give for server bugs). Retrying forever would
 * block the spool behind one such row; dead-lettering at once would throw
 * away good rows whenever the server has a bad minute. So: a segment that
 * fails that way SUSPECT_TRIES times is split; a record that still fails that
 * way is dead-lettered only once ClickHouse has accepted other rows since the
 * segment's first failure (the server is fine, this row is not). Without that
 * evidence the segment is parked (its handle kept, s->park) and the segments
 * behind it are sent; the first one accepted is the evidence, and the parked
 * segment is retried then (or after its own backoff, in case the server
 * recovered for everything). */

#define SUSPECT_TRIES 3
#define SUSPECT_STREAK 8 /* a split pass stops after this many suspect failures in a row */
#define PARK_BACKOFF_MIN_MS 1000

enum { REC_PENDING = 0, REC_DELIVERED, REC_SKIPPED, REC_DEAD };

static char oom_reason[] = "rejected by ClickHouse (reason not kept: out of memory)";

static void schedule_now(sg_chsink_t *s);
static void send_record(sg_chsink_t *s);

static sg_spool_t *cur_sp(const sg_chsink_t *s) { return s->spools[s->seg_spool].sp; }

static void rs_free(rec_state_t *rs, size_t n) {
  for (size_t i = 0; rs && i < n; i++)
    if (rs[i].why != oom_reason) free(rs[i].why);
  free(rs);
}

/* Forgets the split state of the segment in flight (not the segment). */
static void split_reset(sg_chsink_t *s) {
  rs_free(s->rs, s->nrs);
  s->rs = NULL;
  s->nrs = 0;
  s->splitting = 0;
  s->split_next = 0;
  s->dl_wait = 0;
}

static int sus_is(const sg_chsink_t *s, const sg_spool_t *sp, const sg_spool_seg_t *seg) {
  return s->sus.sp == sp && s->sus.seg_id == sg_spool_seg_id(seg);
}

/* ClickHouse itself failed the request (HTTP 5xx, an exception code) with a
 * code not known to be transient: maybe the data, maybe the server. */
static int is_suspect(const sg_ch_result_t *r) {
  return r->status == SG_EUNAVAIL && r->http_status >= 500 && r->ch_code != 0 &&
         sg_ch_code_class(r->ch_code) == 0;
}

/* Notes a suspect failure of the segment in flight (whole or a split pass). */
static void sus_note(sg_chsink_t *s, const sg_ch_result_t *r) {
  if (!sus_is(s, cur_sp(s), s->seg)) {
    s->sus.sp = cur_sp(s);
    s->sus.seg_id = sg_spool_seg_id(s->seg);
    s->sus.tries = 0;
    s->sus.mark = s->st.inserts;
  }
  s->sus.code = r->ch_code;
  snprintf(s->sus.msg, sizeof s->sus.msg, "%s", r->error && r->error[0] ? r->error : "no message");
}

/* Gives the segment in flight back to the spool and waits delay_ms. */
static void hold(sg_chsink_t *s, uint64_t delay_ms) {
  s->next_try_ms = uv_now(s->loop) + delay_ms;
  split_reset(s);
  sg_spool_release(cur_sp(s), s->seg);
  s->seg = NULL;
}

static uint64_t next_backoff(uint64_t *ms, uint64_t min) {
  *ms = *ms ? *ms * 2 : min;
  if (*ms > BACKOFF_MAX_MS) *ms = BACKOFF_MAX_MS;
  return *ms / 2 + (uint64_t)rand() % (*ms / 2 + 1);
}

static void backoff(sg_chsink_t *s, const sg_ch_result_t *r) {
  s->st.retries++;
  s->st.reachable = r->http_status != 0;
  uint64_t delay = next_backoff(&s->backoff_ms, BACKOFF_MIN_MS);
  if (!s->logged_down) {
    s->logged_down = 1;
    sg_warn("clickhouse", "insert failed, will retry with backoff (spooled rows are kept): %s",
            r->error && r->error[0] ? r->error : sg_strerror(r->status));
  }
  hold(s, delay);
}

static void delivered(sg_chsink_t *s, size_t rows) {
  s->st.inserts++;
  s->st.rows_sent += rows;
  s->st.insert_us_sum += (uv_now(s->loop) - s->sent_at) * 1000;
  s->st.reachable = 1;
  sg_debug("clickhouse", "worker %d: insert of %zu rows took %" PRIu64 " ms", s->worker_id, rows,
           uv_now(s->loop) - s->sent_at);
  s->backoff_ms = 0;
  if (s->logged_down) {
    s->logged_down = 0;
    sg_info("clickhouse", "ClickHouse accepts inserts again");
  }
}

/* Rows end in '\n' (values escape theirs). memchr skips a row's ~1 KB at
 * vector speed where a byte loop cost 6% of a request's CPU. */
static size_t count_rows(const void *p, size_t n) {
  size_t rows = 0;
  for (const char *c = p, *e = c + n; c < e; rows++) {
    const char *nl = memchr(c, '\n', (size_t)(e - c));
    if (nl == NULL) break;
    c = nl + 1;
  }
  return rows;
}

/* Every record of the segment in flight is in ClickHouse or dead/: delete it.
 * When the spool cannot delete it, it is kept and sent again later (at least
 * once: ClickHouse collapses the repeated rows by version). */
/* Record i of the segment in flight is in ClickHouse or dead/: chpending
 * forgets it (records from before this run, and the records of a sink that
 * is no worker's, were never in it). */
static void record_done(sg_chsink_t *s, size_t i) {
  sg_spool_rec_t rec;
  if (s->worker_id <= 0 || sg_spool_seg_record(s->seg, i, &rec) != 0 || rec.time_us < s->started_us)
    return;
  sg_chpending_done(s->worker_id, rec.time_us);
}

static void finish_segment(sg_chsink_t *s) {
  if (sus_is(s, cur_sp(s), s->seg)) { /* resolved */
    s->sus.sp = NULL;
    s->park_backoff_ms = 0;
  }
  for (size_t i = 0, n = sg_spool_seg_count(s->seg); i < n; i++) record_done(s, i);
  int rc = sg_spool_ack(cur_sp(s), s->seg);
  if (rc != 0) {
    s->st.spool_errors++;
    sg_error("clickhouse", "spool %s: could not delete delivered segment %" PRIu64 " (%s); it is "
                           "kept and sent again later",
             s->spools[s->seg_spool].dir, sg_spool_seg_id(s->seg), sg_strerror(rc));
    hold(s, next_backoff(&s->backoff_ms, BACKOFF_MIN_MS));
    return;
  }
  s->seg = NULL;
  split_reset(s);
  schedule_now(s);
}

static int start_split(sg_chsink_t *s) {
  split_reset(s);
  size_t n = sg_spool_seg_count(s->seg);
  s->rs = calloc(n ? n : 1, sizeof *s->rs);
  if (!s->rs) {
    s->st.spool_errors++;
    sg_error("clickhouse", "out of memory splitting a rejected segment; retrying later");
    hold(s, next_backoff(&s->backoff_ms, BACKOFF_MIN_MS));
    return SG_ENOMEM;
  }
  s->nrs = n;
  s->splitting = 1;
  s->split_next = 0;
  s->streak = 0;
  return 0;
}

/* Moves record i of the segment in flight to dead/ with the reason in
 * s->rs[i].why. 0 once it is there; otherwise the failure is logged and
 * counted and the record stays pending: end_pass() keeps the segment and
 * retries the move after a backoff. */
static int dead_letter(sg_chsink_t *s, size_t i) {
  sg_spool_rec_t rec;
  sg_spool_seg_record(s->seg, i, &rec);
  size_t rows = count_rows(rec.data, rec.len);
  int rc = sg_spool_deadletter(cur_sp(s), s->seg, i, s->rs[i].why);
  if (rc == 0) {
    record_done(s, i);
    s->st.dead_records++;
    s->st.dead_rows += rows;
    s->dl_backoff_ms = 0;
    sg_error("clickhouse", "ClickHouse rejected %zu rows (record %" PRIu64 "): %s; moved to %s/dead/",
             rows, rec.seq, s->rs[i].why, s->spools[s->seg_spool].dir);
    return 0;
  }
  s->st.dead_letter_failures++;
  if (s->dl_quiet) return rc; /* one line per attempt at the segment, not per record */
  s->dl_quiet = 1;
  sg_error("clickhouse", "ClickHouse rejected %zu rows (record %" PRIu64 "): %s; they could NOT be "
                         "written to %s/dead/ (%s): they stay in the spool and the move is retried "
                         "with backoff",
           rows, rec.seq, s->rs[i].why, s->spools[s->seg_spool].dir, sg_strerror(rc));
  return rc;
}

static char *reason_dup(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *reason_dup(const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  char *p = strdup(buf);
  return p ? p : oom_reason;
}

/* Keeps the segment in flight back (parked) while the records behind it are
 * sent; or, when one is parked already, gives it back to the spool. */
static void park_or_hold(sg_chsink_t *s) {
  if (s->park) {
    hold(s, next_backoff(&s->backoff_ms, BACKOFF_MIN_MS));
    return;
  }
  uint64_t delay = next_backoff(&s->park_backoff_ms, PARK_BACKOFF_MIN_MS);
  sg_warn("clickhouse", "ClickHouse keeps failing records of segment %" PRIu64 " with code %d (%s) "
                        "and has accepted no other rows since; they are held back and retried in "
                        "%" PRIu64 " ms while the rows behind them are sent",
          s->sus.seg_id, s->sus.code, s->sus.msg, delay);
  s->park = s->seg;
  s->park_sp = cur_sp(s);
  s->park_sus = s->sus;
  s->park_until = uv_now(s->loop) + delay;
  s->sus.sp = NULL;
  s->seg = NULL;
  split_reset(s);
  schedule_now(s);
}

/* A split pass is over: every record was tried once (or the pass stopped). */
static void end_pass(sg_chsink_t *s) {
  size_t skipped = 0, unmoved = 0;
  for (size_t i = 0; i < s->nrs; i++) {
    skipped += s->rs[i].state == REC_SKIPPED;
    unmoved += s->rs[i].state == REC_DEAD && !sg_spool_seg_done(s->seg, i);
  }
  s->dl_quiet = 0;
  if (unmoved) { /* a rejected row is never acknowledged before it is kept */
    s->dl_wait = 1;
    s->next_try_ms = uv_now(s->loop) + next_backoff(&s->dl_backoff_ms, BACKOFF_MIN_MS);
    return;
  }
  if (skipped == 0) {
    finish_segment(s);
    return;
  }
  s->sus.tries++;
  int evidence = s->st.inserts > s->sus.mark;
  if (s->sus.tries >= SUSPECT_TRIES && evidence) {
    /* The server takes other rows, these it fails every time: poison. */
    for (size_t i = 0; i < s->nrs; i++) {
      if (s->rs[i].state != REC_SKIPPED) continue;
      s->rs[i].state = REC_DEAD;
      s->rs[i].why = reason_dup("ClickHouse failed these rows %u times with code %d while it "
                                "accepted others: %s",
                                s->sus.tries, s->sus.code, s->sus.msg);
    }
    s->split_next = 0;
    send_record(s);
    return;
  }
  if (s->sus.tries >= SUSPECT_TRIES) {
    park_or_hold(s);
    return;
  }
  sg_ch_result_t r = {SG_EUNAVAIL, 500, s->sus.code, "", 0, s->sus.msg};
  backoff(s, &r);
}

static void split_cb(void *arg, const sg_ch_result_t *r);

/* One INSERT of spooled records first..last, sent as a segment (ch_insert.h:
 * synchronous into a Distributed table, a repeat dropped by a replicated
 * table, and by its token on 22.2+), so the client may fail it over to
 * another endpoint. */
static int send_insert(sg_chsink_t *s, const sg_ch_piece_t *pieces, size_t n, uint64_t first,
                       uint64_t last, sg_ch_cb cb) {
  sg_ch_insert_t ins;
  const char *dir = s->spools[s->seg_spool].dir, *base = strrchr(dir, '/');
  /* a failed digest leaves the insert without a token: block checksums still deduplicate */
  sg_ch_insert_segment(&ins, &s->ver, s->insert_sql.data, pieces, n, s->ch_flags,
                       s->no_token ? NULL : base ? base + 1 : dir, first, last);
  s->sent_token = ins.req.dedup_token != NULL;
  return sg_ch_send(s->ch, &ins.req, cb, s);
}

/* 1 when ClickHouse refused the insert for its deduplication token's
 * setting (code 115, unknown setting: an older server than the version
 * spangate was told, e.g. clickhouse_version set ahead of an upgrade). The
 * sink stops sending the token and the insert is retried as a transient
 * failure: Replicated tables still deduplicate a retried segment by its
 * block checksum. */
static int token_refused(sg_chsink_t *s, const sg_ch_result_t *r) {
  if (!s->sent_token || r->ch_code != 115) return 0;
  s->no_token = 1;
  sg_warn("clickhouse", "ClickHouse refused insert_deduplication_token (%s); sending inserts "
                        "without it from now on", r->error);
  return 1;
}

/* Sends the next record of the segment in flight that needs sending, moves
 * the ones judged poison to dead/, and ends the pass after the last. */
static void send_record(sg_chsink_t *s) {
  size_t count = sg_spool_seg_count(s->seg);
  sg_spool_rec_t rec;
  for (;; s->split_next++) {
    size_t i = s->split_next;
    if (i >= count) {
      end_pass(s);
      return;
    }
    if (sg_spool_seg_done(s->seg, i)) continue;
    int st = s->rs[i].state;
    if (st == REC_DELIVERED || st == REC_SKIPPED) continue;
    if (st == REC_PENDING) {
      sg_spool_seg_record(s->seg, i, &rec);
      if (rec.tag_len == strlen(s->tag) && memcmp(rec.tag, s->tag, rec.tag_len) == 0) break;
      s->rs[i].state = REC_DEAD;
      s->rs[i].why = reason_dup("row layout %.*s does not match this ClickHouse version (%s)",
                                (int)rec.tag_len, rec.tag, s->tag);
    }
    dead_letter(s, i); /* on failure it stays pending for end_pass() */
  }
  sg_spool_seg_drop(s->seg, 0, s->split_next); /* what the records before this one left */
  s->sent_at = uv_now(s->loop);
  s->sent_rows = count_rows(rec.data, rec.len);
  s->one = (sg_ch_piece_t){rec.data, rec.len};
  int rc = send_insert(s, &s->one, 1, rec.seq, rec.seq, split_cb);
  if (rc != 0) {
    sg_ch_result_t fake = {rc, 0, 0, "", 0, sg_strerror(rc)};
    backoff(s, &fake);
  }
}

static void split_cb(void *arg, const sg_ch_result_t *r) {
  sg_chsink_t *s = arg;
  if (r->status == SG_ECANCELED) return; /* closing: the segment stays spooled */
  size_t i = s->split_next;
  if (r->status != 0 && token_refused(s, r)) {
    send_record(s); /* the same record again, without the token */
    return;
  }
  if (r->status == 0) {
    delivered(s, s->sent_rows);
    s->streak = 0;
    record_done(s, i);
    int rc = sg_spool_ack_records(cur_sp(s), s->seg, i, 1);
    if (rc != 0) {
      /* Delivered all the same; the segment is deleted at the end, or (a
       * crash first) this record is sent once more. */
      s->st.spool_errors++;
      s->rs[i].state = REC_DELIVERED;
      sg_warn("clickhouse", "spool %s: could not record a delivered record (%s)",
              s->spools[s->seg_spool].dir, sg_strerror(rc));
    }
  } else if (r->status == SG_EPOISON) {
    s->rs[i].state = REC_DEAD;
    s->rs[i].why = reason_dup("%s", r->error);
    send_record(s); /* moves it to dead/ first */
    return;
  } else if (is_suspect(r)) {
    sus_note(s, r);
    s->rs[i].state = REC_SKIPPED;
    /* Nothing accepted since the first failure and one failure after
     * another: the server is failing everything, not these rows. */
    if (++s->streak >= SUSPECT_STREAK && s->st.inserts == s->sus.mark) {
      end_pass(s);
      return;
    }
  } else {
    backoff(s, r);
    return;
  }
  s->split_next++;
  send_record(s);
}

static void insert_cb(void *arg, const sg_ch_result_t *r) {
  sg_chsink_t *s = arg;
  if (r->status == SG_ECANCELED) return;
  if (r->status != 0 && token_refused(s, r)) {
    backoff(s, r); /* retried soon, without the token */
    return;
  }
  if (r->status == 0) {
    delivered(s, s->sent_rows);
    finish_segment(s);
    return;
  }
  if (r->status == SG_EPOISON) {
    sg_warn("clickhouse", "ClickHouse rejected a batch of %zu rows (code %d: %s); sending its records "
                          "one by one to isolate the bad ones",
            s->sent_rows, r->ch_code, r->error);
    if (start_split(s) == 0) send_record(s);
    return;
  }
  if (is_suspect(r)) {
    sus_note(s, r);
    if (++s->sus.tries >= SUSPECT_TRIES) {
      s->st.retries++;
      sg_warn("clickhouse", "ClickHouse failed a batch of %zu rows %u times with code %d, which does "
                            "not say whether the data is at fault (%s); sending its records one by "
                            "one to find the rows it fails on",
              s->sent_rows, s->sus.tries, r->ch_code, r->error);
      if (start_split(s) == 0) send_record(s);
      return;
    }
  }
  backoff(s, r);
}

/* Picks the segment to send: the parked one when there is news for it, else
 * the oldest sealed segment of any spool; sends it as one INSERT. */
static void send_next(sg_chsink_t *s) {
  if (s->seg || s->closing || !s->have_ver) return;
  if (s->park && (s->st.inserts > s->park_sus.mark || uv_now(s->loop) >= s->park_until)) {
    int idx = -1;
    for (int i = 0; i < s->nspools; i++)
      if (s->spools[i].sp == s->park_sp) idx = i;
    s->seg = s->park;
    s->seg_spool = idx < 0 ? 0 : idx;
    s->sus = s->park_sus;
    s->park = NULL;
    if (start_split(s) == 0) send_record(s);
    return;
  }
  for (int i = 0; i < s->nspools; i++) {
    sg_spool_seg_t *seg;
    if (sg_spool_next_segment(s->spools[i].sp, &seg) != 0) continue;
    s->seg = seg;
    s->seg_spool = i;
    size_t count = sg_spool_seg_count(seg);
    int mixed = 0, rc = 0;
    uint64_t first = 0, last = 0;
    if (count > s->npieces_cap) {
      sg_ch_piece_t *p = realloc(s->pieces, count * sizeof *p);
      if (p) s->pieces = p, s->npieces_cap = count;
      else rc = SG_ENOMEM;
    }
    s->sent_rows = 0;
    sg_pages_pass_t pass = {NULL, NULL}; /* the segment is mapped: give back what is counted */
    for (size_t r = 0; r < count && rc == 0; r++) {
      sg_spool_rec_t rec;
      sg_spool_seg_record(seg, r, &rec);
      if (r == 0) first = rec.seq;
      last = rec.seq;
      if (rec.tag_len != strlen(s->tag) || memcmp(rec.tag, s->tag, rec.tag_len) != 0) mixed = 1;
      s->pieces[r] = (sg_ch_piece_t){rec.data, rec.len};
      s->sent_rows += count_rows(rec.data, rec.len);
      sg_pages_behind(&pass, rec.tag, (const char *)rec.data + rec.len);
    }
    sg_pages_behind_end(&pass);
    if (rc != 0) { /* never send part of a segment as if it were all of it */
      s->st.spool_errors++;
      sg_error("clickhouse", "out of memory building an INSERT of segment %" PRIu64 "; retrying later",
               sg_spool_seg_id(seg));
      hold(s, next_backoff(&s->backoff_ms, BACKOFF_MIN_MS));
      return;
    }
    s->sent_at = uv_now(s->loop);
    /* Rows of another layout are sorted out record by record; so is a
     * segment that kept failing with a suspect error. */
    if (mixed || (sus_is(s, s->spools[i].sp, seg) && s->sus.tries >= SUSPECT_TRIES)) {
      if (start_split(s) == 0) send_record(s);
      return;
    }
    rc = send_insert(s, s->pieces, count, first, last, insert_cb);
    if (rc != 0) {
      sg_ch_result_t fake = {rc, 0, 0, "", 0, sg_strerror(rc)};
      backoff(s, &fake);
    }
    return;
  }
}

/* ---- ClickHouse away at start --------------------------------------------------------
 *
 * The sink asks every 5 s, off the loop (ch_setup blocks), until ClickHouse
 * answers; worker 1 also creates or completes the schema then (unless
 * clickhouse_create_schema is off), the others only read the layout. */

typedef struct setup_s {
  uv_work_t req;
  sg_chsink_t *s;      /* NULL once the sink closed */
  const sg_config_t *cfg;
  unsigned flags;
  int rc;
  sg_ch_target_t t;
  sg_buf_t done, err;
} setup_t;

static void setup_work(uv_work_t *req) {
  setup_t *u = req->data;
  u->rc = sg_ch_setup(u->cfg, u->flags, &u->t, &u->done, &u->err);
}

static void setup_after(uv_work_t *req, int status) {
  setup_t *u = req->data;
  sg_chsink_t *s = u->s;
  if (s && status == 0) {
    s->setup = NULL;
    /* what worker 1 created (the others only read: their "missing" lines are noise) */
    for (char *l = (u->flags & SG_CH_SETUP_CREATE) ? u->done.data : NULL, *nl; l && *l && (nl = strchr(l, '\n'));
         l = nl + 1) {
      *nl = '\0';
      sg_info("clickhouse", "schema: %s", l);
    }
    if (u->rc == 0) s->ver = u->t.ver;
    if (u->rc == 0 && set_layout(s, &u->t.spans) != 0) {
      sg_error("clickhouse", "out of memory building the INSERT statement; asking again");
    } else if (u->rc == 0) {
      if (s->worker_id == 1) sg_ch_setup_save(s->cfg, &u->t);
      sg_info("clickhouse", "ClickHouse %s reached; dual-write resumes", u->t.version_text);
    } else if (u->rc != SG_EUNAVAIL && u->rc != SG_ENOTFOUND) {
      sg_error("clickhouse", "%s; spans are recorded as gaps for `spangate migrate`",
               u->err.data ? u->err.data : sg_strerror(u->rc));
    }
  } else if (s) {
    s->setup = NULL;
  }
  sg_buf_free(&u->done);
  sg_buf_free(&u->err);
  free(u);
}

static void setup_start(sg_chsink_t *s) {
  setup_t *u = calloc(1, sizeof *u);
  if (!u) return;
  u->s = s;
  u->cfg = s->cfg;
  u->flags = s->worker_id == 1 && s->cfg->clickhouse_create_schema ? SG_CH_SETUP_CREATE | SG_CH_SETUP_NO_BACKFILL : 0;
  u->req.data = u;
  if (uv_queue_work(s->loop, &u->req, setup_work, setup_after) != 0) {
    free(u);
    return;
  }
  s->setup = u;
}

/* ---- sealing ----------------------------------------------------------------
 *
 * The open segment is sealed (and so sent) once its oldest record is
 * flush_interval_ms old, or when it reaches spool_segment_bytes (the
 * spool's own rotation). Under steady ingest that is one INSERT per worker
 * per interval. When ingest stops, though, the last rows would wait up to
 * a whole interval after their requests were answered (0.4-1.3 s measured
 * at the end of a bench round). So the segment is also sealed once ingest
 * is idle: no request of the worker's own in flight (its share of the
 * in-flight memory gauge, which holds every request from its body's first
 * byte to its answer, is 0; only its own requests append to its spool, so
 * another worker's slow upload or last group commit does not hold its rows
 * back) and no append for longer than twice the recent gaps
 * between appends (and at least IDLE_MS). Ingest at a steady pace with
 * pauses between requests is not idle: its pauses are the gaps, and a
 * fixed quiet time shorter than them sealed at every pause (twice the
 * INSERTs). A gap of flush_interval_ms or more is a stop, not a pace, and
 * is not counted. A segment sealed when idle must be at least half an
 * interval old or hold IDLE_MIN_BYTES, so even an irregular trickle makes
 * at most two INSERTs per interval. A stretch of BUSY_MS or more with a
 * request in flight at every tick (a client sending flat out) is a burst,
 * and its end is idle at the first tick that finds nothing in flight (a
 * request's rows are appended before it is answered, so none can follow):
 * at full load appends come in group commits a few hundred ms apart, so
 * twice the recent gap kept the last rows back that long.
 *
 * Longer intervals make bigger inserts, which ClickHouse takes at a
 * fraction of the CPU per row (its merges of small parts are most of the
 * cost: 27 µs per row in inserts of 3,000 rows against 10 in inserts of
 * 12,500, measured on the spans table and its views). What they would cost
 * is freshness, and only reads from ClickHouse care: a read held back by
 * a worker's spooled rows (chpending.h) asks for them, and that worker
 * seals at its next tick. */
#define IDLE_MS TICK_MS
#define IDLE_MIN_BYTES (1u << 20)
#define BUSY_MS 500

/* Whether requests are in flight, as the ticks see it: s->idle when none
 * is, and s->busy_ms, how long the stretch of ticks that each saw one
 * lasted (the current stretch, or the last one once idle). */
static void watch_busy(sg_chsink_t *s, uint64_t now_ms) {
  s->idle = atomic_load(s->inflight ? s->inflight : &sg_metrics.inflight_bytes) == 0;
  if (s->idle) {
    s->busy_since_ms = 0;
    return;
  }
  if (!s->busy_since_ms) s->busy_since_ms = now_ms;
  s->busy_ms = now_ms - s->busy_since_ms;
}

/* 1 when the open segment of the own spool should be sealed now. */
static int seal_due(sg_chsink_t *s, uint64_t now_ms) {
  sg_spool_stats_t st;
  sg_spool_stats(s->spools[0].sp, &st);
  uint64_t interval_ms = (uint64_t)s->interval_ms;
  int wanted = s->worker_id > 0 && sg_chpending_wanted(s->worker_id); /* taken at every tick */
  if (st.appended_records != s->seen_appends) {
    uint64_t gap = now_ms - s->last_append_ms;
    if (s->seen_appends == 0 || gap >= interval_ms) {
      s->recent_gap_ms = 0; /* the first appends, or the first after a stop */
    } else {
      /* the longest gap, forgotten by an eighth per append */
      uint64_t decayed = s->recent_gap_ms - s->recent_gap_ms / 8;
      s->recent_gap_ms = gap > decayed ? gap : decayed;
    }
    s->seen_appends = st.appended_records;
    s->last_append_ms = now_ms;
  }
  if (st.open_records == 0) return 0;
  int64_t interval_us = (int64_t)interval_ms * 1000, age_us = now_us() - st.open_oldest_us;
  if (age_us >= interval_us || wanted) return 1;
  if (age_us < interval_us / 2 && st.open_bytes < IDLE_MIN_BYTES) return 0;
  uint64_t quiet = now_ms - s->last_append_ms;
  if (!s->idle) return 0;
  if (s->busy_ms >= BUSY_MS) return 1; /* the end of a burst: nothing in flight, so no append to come */
  return quiet >= IDLE_MS && quiet > 2 * s->recent_gap_ms;
}

static void tick(uv_timer_t *t) {
  sg_chsink_t *s = t->data;
  if (s->closing) return;
  uint64_t now = uv_now(s->loop);
  if (!s->have_ver) {
    if (!s->setup && now - s->last_version_try >= 5000) {
      s->last_version_try = now;
      setup_start(s);
    }
    return;
  }
  sg_spool_stats_t st;
  int64_t unknown = s->worker_id > 0 ? sg_chpending_unknown_until(s->worker_id) : 0;
  if (unknown) { /* rows of unknown projects: cleared once every row held is newer */
    int64_t oldest = 0;
    for (int i = 0; i < s->nspools; i++) {
      sg_spool_stats(s->spools[i].sp, &st);
      if (st.records && (!oldest || st.oldest_us < oldest)) oldest = st.oldest_us;
    }
    if (!oldest || oldest > unknown) sg_chpending_unknown(s->worker_id, 0);
  }
  watch_busy(s, now);
  if (seal_due(s, now)) {
    sg_debug("clickhouse", "worker %d: sealing the open segment", s->worker_id);
    (void)sg_spool_seal(s->spools[0].sp); /* a failed sync waits for sg_chsink_sync's caller */
    s->busy_ms = 0;                       /* a stretch seals once */
  }
  if (s->seg) {
    if (s->dl_wait && now >= s->next_try_ms) {
      s->dl_wait = 0;
      s->split_next = 0;
      send_record(s);
    }
    return;
  }
  if (now < s->next_try_ms) return;
  send_next(s);
  /* Drained orphan spools (from a run with more workers) are removed. */
  for (int i = s->nspools - 1; i > 0; i--) {
    if (s->seg) break;
    sg_spool_stats(s->spools[i].sp, &st);
    if (st.records == 0 && s->spools[i].sp != s->park_sp) {
      if (s->sus.sp == s->spools[i].sp) s->sus.sp = NULL;
      sg_spool_close(s->spools[i].sp);
      sg_info("clickhouse", "spool %s drained", s->spools[i].dir);
      char dead[4200];
      snprintf(dead, sizeof dead, "%s/dead", s->spools[i].dir);
      if (rmdir(dead) == 0 || errno == ENOENT) {
        /* the spool's own bookkeeping files go with the directory */
        DIR *d = opendir(s->spools[i].dir);
        struct dirent *e;
        while (d && (e = readdir(d))) {
          if (e->d_name[0] == '.') continue;
          char p[4400];
          snprintf(p, sizeof p, "%s/%s", s->spools[i].dir, e->d_name);
          unlink(p);
        }
        if (d) closedir(d);
        rmdir(s->spools[i].dir);
      }
      free(s->spools[i].dir);
      s->spools[i] = s->spools[--s->nspools];
    }
  }
}

/* Runs the flusher on the next loop turn (after the current callbacks). */
static void schedule_now(sg_chsink_t *s) {
  if (!s->closing) uv_timer_start(&s->timer, tick, 0, TICK_MS);
}

/* ---- lifecycle ---------------------------------------------------------------- */

static int open_spool(sg_chsink_t *s, const char *dir, int own, int fsync_never, sg_buf_t *err) {
  sg_spool_opts_t o;
  memset(&o, 0, sizeof o);
  o.segment_bytes = s->cfg->spool_segment_bytes;
  o.max_bytes = s->cfg->spool_max_bytes;
  o.fsync = fsync_never                               ? SG_SPOOL_FSYNC_NEVER
            : !strcmp(s->cfg->spool_fsync, "always") ? SG_SPOOL_FSYNC_ALWAYS
            : !strcmp(s->cfg->spool_fsync, "never")  ? SG_SPOOL_FSYNC_NEVER
                                                     : SG_SPOOL_FSYNC_BATCH;
  sg_spool_t *sp;
  int rc = sg_spool_open(dir, &o, &sp);
  if (rc != 0) {
    sg_buf_printf(err, "spool %s: %s", dir, sg_strerror(rc));
    return rc;
  }
  s->spools[s->nspools].sp = sp;
  s->spools[s->nspools].dir = strdup(dir);
  s->spools[s->nspools].own = own;
  s->nspools++;
  sg_spool_stats_t st;
  sg_spool_stats(sp, &st);
  if (st.records)
    sg_info("clickhouse", "spool %s holds %" PRIu64 " records (%" PRIu64 " bytes) from before; "
                          "replaying them first",
            dir, st.records, st.bytes);
  return 0;
}

/* The sink without its spools. */
static sg_chsink_t *sink_alloc(uv_loop_t *loop, const sg_config_t *cfg, sg_ch_client_t *ch,
                               const sg_ch_target_t *target, const sg_chsink_opts_t *co, int worker_id,
                               sg_pg_pool_t *pg) {
  sg_chsink_t *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->loop = loop;
  s->cfg = cfg;
  /* What it sends (the records of the segment in flight, s->pieces, in the
   * segment's mapping) stays put until the insert's callback: no copy
   * unless gzipped. */
  s->ch_flags = (sg_config_clickhouse_gzip(cfg) ? SG_CH_GZIP : SG_CH_BORROW) | SG_CH_MAPPED;
  s->interval_ms = co && co->flush_interval_ms > 0 ? co->flush_interval_ms : cfg->flush_interval_ms;
  s->pg = pg;
  s->worker_id = worker_id;
  s->started_us = s->last_stamp = now_us();
  if (co && co->insert_sql) {
    s->fixed_insert = 1;
    snprintf(s->tag, sizeof s->tag, "%s", co->tag);
    if (sg_buf_puts(&s->insert_sql, co->insert_sql) != 0) {
      free(s);
      return NULL;
    }
    s->have_ver = 1;
  }
  if (target) {
    s->ver = target->ver;
    set_layout(s, &target->spans);
  }
  s->st.reachable = target != NULL; /* the server was just asked */
  s->ch = ch;
  return s;
}

sg_chsink_t *sg_chsink_open(uv_loop_t *loop, const sg_config_t *cfg, sg_ch_client_t *ch,
                            const sg_ch_target_t *target, const sg_chsink_opts_t *co, sg_buf_t *err) {
  if (ch == NULL || target == NULL || co == NULL || co->dir == NULL || (co->insert_sql && co->tag == NULL)) {
    sg_buf_puts(err, "sg_chsink_open: bad arguments");
    return NULL;
  }
  sg_chsink_t *s = sink_alloc(loop, cfg, ch, target, co, 0, NULL);
  if (!s) {
    sg_buf_puts(err, "out of memory");
    return NULL;
  }
  mkdir(cfg->spool_dir, 0755);
  if (open_spool(s, co->dir, 1, co->fsync_never, err) != 0) {
    sg_buf_free(&s->insert_sql);
    free(s);
    return NULL;
  }
  uv_timer_init(loop, &s->timer);
  s->timer.data = s;
  uv_timer_start(&s->timer, tick, 0, TICK_MS);
  return s;
}

sg_chsink_t *sg_chsink_new(uv_loop_t *loop, const sg_config_t *cfg, sg_ch_client_t *ch,
                           const sg_ch_target_t *target, int worker_id, sg_pg_pool_t *pg,
                           sg_buf_t *err) {
  sg_chsink_t *s = sink_alloc(loop, cfg, ch, target, NULL, worker_id, pg);
  if (!s) return NULL;
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/w%d", cfg->spool_dir, worker_id);
  mkdir(cfg->spool_dir, 0755);
  if (open_spool(s, dir, 1, 0, err) != 0) {
    free(s);
    return NULL;
  }
  /* Spools of workers that no longer exist (the worker count went down) are
   * adopted by worker ((n - 1) % workers) + 1 and drained. */
  int nworkers = cfg->workers > 0 ? (int)cfg->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
  DIR *d = opendir(cfg->spool_dir);
  struct dirent *e;
  while (d && (e = readdir(d)) && s->nspools < MAX_SPOOLS) {
    int n;
    char extra;
    if (sscanf(e->d_name, "w%d%c", &n, &extra) != 1 || n <= nworkers) continue;
    if ((n - 1) % nworkers + 1 != worker_id) continue;
    snprintf(dir, sizeof dir, "%s/%s", cfg->spool_dir, e->d_name);
    sg_buf_t why = SG_BUF_INIT;
    if (open_spool(s, dir, 0, 0, &why) != 0) sg_warn("clickhouse", "%s", why.data);
    sg_buf_free(&why);
  }
  if (d) closedir(d);
  /* Rows from before this run belong to projects the table does not know:
   * every project counts as pending until they are delivered. */
  for (int i = 0; i < s->nspools; i++) {
    sg_spool_stats_t st;
    sg_spool_stats(s->spools[i].sp, &st);
    if (st.records) sg_chpending_unknown(worker_id, s->started_us);
  }
  uv_timer_init(loop, &s->timer);
  s->timer.data = s;
  uv_timer_start(&s->timer, tick, 0, TICK_MS);
  return s;
}

void sg_chsink_watch(sg_chsink_t *s, _Atomic int64_t *inflight) {
  if (s) s->inflight = inflight;
}

void sg_chsink_stats(const sg_chsink_t *s, sg_chsink_stats_t *out) {
  *out = s->st;
  out->spool_bytes = out->spool_records = 0;
  out->spool_oldest_us = 0;
  for (int i = 0; i < s->nspools; i++) {
    sg_spool_stats_t st;
    sg_spool_stats(s->spools[i].sp, &st);
    out->spool_bytes += st.bytes;
    out->spool_records += st.records;
    if (st.oldest_us && (!out->spool_oldest_us || st.oldest_us < out->spool_oldest_us))
      out->spool_oldest_us = st.oldest_us;
  }
}

static void timer_closed(uv_handle_t *h) {
  sg_chsink_t *s = h->data;
  sg_buf_free(&s->insert_sql);
  free(s->pieces);
  sg_buf_free(&s->rows);
  s->timer_closed = 1;
  if (!s->sync_running) free(s); /* else sync_after_cb frees it */
}

void sg_chsink_close(sg_chsink_t *s) {
  if (!s) return;
  s->closing = 1;
  uv_timer_stop(&s->timer);
  if (s->setup) s->setup->s = NULL; /* it finishes on its own and frees itself */
  /* The owner closed the client already, which canceled an insert in
   * flight (its segment stays spooled): the segment can go. */
  if (s->seg) {
    sg_spool_release(s->spools[s->seg_spool].sp, s->seg);
    s->seg = NULL;
  }
  split_reset(s);
  if (s->park) {
    for (int i = 0; i < s->nspools; i++)
      if (s->spools[i].sp == s->park_sp) sg_spool_release(s->spools[i].sp, s->park);
    s->park = NULL;
  }
  int rc0 = 0;
  for (int i = 0; i < s->nspools; i++) {
    int rc = sg_spool_close(s->spools[i].sp);
    if (i == 0) rc0 = rc;
    /* Requests were answered only after their own sync; this one only
     * covers appends nobody was told about yet, but say so all the same. */
    if (rc != 0)
      sg_error("clickhouse", "spool %s: final sync failed: %s", s->spools[i].dir, sg_strerror(rc));
    free(s->spools[i].dir);
  }
  /* Waiting for a sync that will not start: the spool's close synced. */
  waiter_t *next = s->sync_next;
  s->sync_next = s->sync_next_tail = NULL;
  sync_answer(s, next, rc0);
  uv_close((uv_handle_t *)&s->timer, timer_closed);
}
