/* chsink.c - spool, flush and retry for the ClickHouse dual-write. */
#include "chsink.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "ch.h"
#include "err.h"
#include "log.h"
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

struct sg_chsink_s {
  uv_loop_t *loop;
  const sg_config_t *cfg;
  sg_ch_version_t ver;
  int have_ver;                /* 0: layout unknown (ClickHouse never reached): gaps only */
  char tag[32];                /* row layout of this server, e.g. "spans/us" */
  sg_buf_t insert_sql;
  sg_ch_client_t *ch;
  unsigned ch_flags;           /* SG_CH_GZIP per clickhouse_gzip */
  sg_pg_pool_t *pg;
  spool_ref_t spools[MAX_SPOOLS];
  int nspools;
  uv_timer_t timer;
  /* the segment in flight */
  sg_spool_seg_t *seg;
  int seg_spool;
  int splitting;               /* sending seg's records one by one */
  size_t split_next;
  uint64_t sent_at;            /* uv_now of the request, for latency */
  size_t sent_rows;
  sg_buf_t body;
  sg_buf_t rows;               /* scratch for encoding */
  uint64_t backoff_ms;
  uint64_t next_try_ms;
  uint64_t last_version_try;
  int version_inflight;
  int closing;
  int logged_down;             /* a "ClickHouse unreachable" line is out */
  uint64_t last_encode_log;
  sg_chsink_stats_t st;
  /* sg_chsink_sync_async: the fdatasync on the thread pool, who waits for
   * it, and who waits for the next one */
  uv_work_t sync_work;
  int sync_running;
  int timer_closed;            /* closed: the last one out frees */
  int sync_fd, sync_rc, sync_begin_rc;
  waiter_t *sync_now;
  waiter_t *sync_next, *sync_next_tail;
};

static int64_t now_us(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static void set_version(sg_chsink_t *s, const sg_ch_version_t *ver) {
  s->ver = *ver;
  s->have_ver = 1;
  snprintf(s->tag, sizeof s->tag, "spans/%s", (ver->caps & SG_CH_DATETIME64) ? "dt64" : "us");
  sg_buf_reset(&s->insert_sql);
  sg_ch_insert_sql(&s->ver, s->cfg->clickhouse_database, &s->insert_sql);
}

/* ---- server version ------------------------------------------------------- */

static void version_cache_path(const sg_config_t *cfg, char *out, size_t cap) {
  snprintf(out, cap, "%s/clickhouse.version", cfg->spool_dir);
}

int sg_chsink_server_version(const sg_config_t *cfg, sg_ch_version_t *ver, sg_buf_t *err) {
  sg_ch_opts_t o = {cfg->clickhouse_host, (int)cfg->clickhouse_port, cfg->clickhouse_user,
                    cfg->clickhouse_password, NULL, 3000, 1};
  sg_buf_t out = SG_BUF_INIT, why = SG_BUF_INIT;
  char path[4096];
  version_cache_path(cfg, path, sizeof path);
  int rc = sg_ch_exec_sync(&o, "SELECT version()", NULL, 0, &out, &why);
  if (rc == 0 && out.data && sg_ch_version_parse(out.data, ver) == 0) {
    mkdir(cfg->spool_dir, 0755);
    FILE *f = fopen(path, "w");
    if (f) {
      fputs(out.data, f);
      fclose(f);
    }
    sg_buf_free(&out);
    sg_buf_free(&why);
    return 0;
  }
  char text[64] = {0};
  FILE *f = fopen(path, "r");
  if (f) {
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    if (sg_ch_version_parse(text, ver) == 0) {
      sg_buf_free(&out);
      sg_buf_free(&why);
      return 0;
    }
  }
  sg_buf_printf(err, "ClickHouse at %s:%lld did not answer SELECT version() (%s) and no version "
                     "is cached in %s",
                cfg->clickhouse_host, cfg->clickhouse_port, why.data ? why.data : "no answer", path);
  sg_buf_free(&out);
  sg_buf_free(&why);
  return SG_EUNAVAIL;
}

/* ---- gaps ------------------------------------------------------------------ */

typedef struct {
  char project[37], first[24], last[24], count[24];
  char reason[160];
  const char *params[5];
} gap_t;

static void gap_cb(void *arg, PGresult *res, int err, const char *errmsg) {
  gap_t *g = arg;
  (void)res;
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
  if (!g) return;
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

int sg_chsink_append(sg_chsink_t *s, const uint8_t project_id[16], const sg_span_t *spans, size_t n,
                     const int64_t *expires_us) {
  if (n == 0) return 0;
  if (!s->have_ver) {
    record_gap(s, project_id, spans, n, "ClickHouse version unknown (never reached since start)");
    return 0;
  }
  sg_buf_reset(&s->rows);
  size_t good = 0;
  for (size_t i = 0; i < n; i++) {
    size_t before = s->rows.len;
    int rc = sg_ch_row_encode(&s->ver, project_id, &spans[i], expires_us ? expires_us[i] : INT64_MAX,
                              &s->rows);
    if (rc == 0) {
      good++;
      continue;
    }
    s->rows.len = before;
    s->st.encode_rejects++;
    if (uv_now(s->loop) - s->last_encode_log >= 1000 || s->last_encode_log == 0) {
      s->last_encode_log = uv_now(s->loop);
      char t[37], sp[37];
      sg_uuid_format(spans[i].trace_id, t);
      sg_uuid_format(spans[i].span_id, sp);
      sg_error("clickhouse", "span %s/%s cannot be written to ClickHouse (%s); it is in PostgreSQL only",
               t, sp, sg_strerror(rc));
    }
  }
  if (good == 0) return 0;
  int rc = sg_spool_append(s->spools[0].sp, s->tag, s->rows.data, s->rows.len, now_us());
  if (rc == 0) return 0;
  sg_error("clickhouse", "spool %s: %s; the spans are recorded as a gap for `spangate migrate`",
           s->spools[0].dir, rc == SG_ETOOBIG ? "full (spool_max_bytes)" : sg_strerror(rc));
  record_gap(s, project_id, spans, n, rc == SG_ETOOBIG ? "spool full" : "spool write failed");
  return 0;
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

/* ---- flushing --------------------------------------------------------------- */

static void schedule_now(sg_chsink_t *s);

static void backoff(sg_chsink_t *s, const sg_ch_result_t *r) {
  s->st.retries++;
  s->st.reachable = r->http_status != 0;
  s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
  if (s->backoff_ms > BACKOFF_MAX_MS) s->backoff_ms = BACKOFF_MAX_MS;
  uint64_t jitter = (uint64_t)rand() % (s->backoff_ms / 2 + 1);
  s->next_try_ms = uv_now(s->loop) + s->backoff_ms / 2 + jitter;
  if (!s->logged_down) {
    s->logged_down = 1;
    sg_warn("clickhouse", "insert failed, will retry with backoff (spooled rows are kept): %s",
            r->error && r->error[0] ? r->error : sg_strerror(r->status));
  }
  sg_spool_release(s->spools[s->seg_spool].sp, s->seg);
  s->seg = NULL;
  s->splitting = 0;
}

static void delivered(sg_chsink_t *s, size_t rows) {
  s->st.inserts++;
  s->st.rows_sent += rows;
  s->st.insert_us_sum += (uv_now(s->loop) - s->sent_at) * 1000;
  s->st.reachable = 1;
  s->backoff_ms = 0;
  if (s->logged_down) {
    s->logged_down = 0;
    sg_info("clickhouse", "ClickHouse accepts inserts again");
  }
}

static size_t count_rows(const void *p, size_t n) {
  size_t rows = 0;
  for (const char *c = p, *e = c + n; c < e; c++) rows += *c == '\n';
  return rows;
}

static void split_cb(void *arg, const sg_ch_result_t *r);

static void send_record(sg_chsink_t *s) {
  sg_spool_t *sp = s->spools[s->seg_spool].sp;
  size_t count = sg_spool_seg_count(s->seg);
  while (s->split_next < count && sg_spool_seg_done(s->seg, s->split_next)) s->split_next++;
  if (s->split_next >= count) {
    sg_spool_ack(sp, s->seg);
    s->seg = NULL;
    s->splitting = 0;
    schedule_now(s);
    return;
  }
  sg_spool_rec_t rec;
  sg_spool_seg_record(s->seg, s->split_next, &rec);
  s->sent_at = uv_now(s->loop);
  s->sent_rows = count_rows(rec.data, rec.len);
  int rc;
  if (rec.tag_len != strlen(s->tag) || memcmp(rec.tag, s->tag, rec.tag_len) != 0) {
    sg_ch_result_t fake = {SG_EPOISON, 0, 0, "", 0, "row layout does not match this ClickHouse version"};
    split_cb(s, &fake);
    return;
  }
  rc = sg_ch_request(s->ch, s->insert_sql.data, rec.data, rec.len, s->ch_flags, split_cb, s);
  if (rc != 0) {
    sg_ch_result_t fake = {rc, 0, 0, "", 0, sg_strerror(rc)};
    split_cb(s, &fake);
  }
}

static void split_cb(void *arg, const sg_ch_result_t *r) {
  sg_chsink_t *s = arg;
  sg_spool_t *sp = s->spools[s->seg_spool].sp;
  if (r->status == SG_ECANCELED) return; /* closing: the segment stays spooled */
  if (r->status == 0) {
    delivered(s, s->sent_rows);
    sg_spool_ack_records(sp, s->seg, s->split_next, 1);
  } else if (r->status == SG_EPOISON) {
    sg_spool_rec_t rec;
    sg_spool_seg_record(s->seg, s->split_next, &rec);
    s->st.dead_records++;
    s->st.dead_rows += s->sent_rows;
    sg_error("clickhouse", "ClickHouse rejected %zu rows (record %" PRIu64 ", code %d): %s; moved to "
                           "%s/dead/",
             s->sent_rows, rec.seq, r->ch_code, r->error, s->spools[s->seg_spool].dir);
    sg_spool_deadletter(sp, s->seg, s->split_next, r->error);
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
  if (r->status == 0) {
    delivered(s, s->sent_rows);
    sg_spool_ack(s->spools[s->seg_spool].sp, s->seg);
    s->seg = NULL;
    schedule_now(s);
    return;
  }
  if (r->status == SG_EPOISON) {
    sg_warn("clickhouse", "ClickHouse rejected a batch of %zu rows (code %d: %s); sending its records "
                          "one by one to isolate the bad ones",
            s->sent_rows, r->ch_code, r->error);
    s->splitting = 1;
    s->split_next = 0;
    send_record(s);
    return;
  }
  backoff(s, r);
}

/* Picks the oldest sealed segment of any spool and sends it as one INSERT. */
static void send_next(sg_chsink_t *s) {
  if (s->seg || s->closing || !s->have_ver) return;
  for (int i = 0; i < s->nspools; i++) {
    sg_spool_seg_t *seg;
    if (sg_spool_next_segment(s->spools[i].sp, &seg) != 0) continue;
    s->seg = seg;
    s->seg_spool = i;
    sg_buf_reset(&s->body);
    size_t count = sg_spool_seg_count(seg);
    int mixed = 0;
    for (size_t r = 0; r < count; r++) {
      sg_spool_rec_t rec;
      if (sg_spool_seg_record(seg, r, &rec) != 0) continue;
      if (rec.tag_len != strlen(s->tag) || memcmp(rec.tag, s->tag, rec.tag_len) != 0) mixed = 1;
      sg_buf_append(&s->body, rec.data, rec.len);
    }
    s->sent_at = uv_now(s->loop);
    s->sent_rows = count_rows(s->body.data, s->body.len);
    if (mixed) { /* rows of another layout: sort them out record by record */
      s->splitting = 1;
      s->split_next = 0;
      send_record(s);
      return;
    }
    int rc = sg_ch_request(s->ch, s->insert_sql.data, s->body.data, s->body.len, s->ch_flags,
                           insert_cb, s);
    if (rc != 0) {
      sg_ch_result_t fake = {rc, 0, 0, "", 0, sg_strerror(rc)};
      backoff(s, &fake);
    }
    return;
  }
}

static void version_cb(void *arg, const sg_ch_result_t *r) {
  sg_chsink_t *s = arg;
  s->version_inflight = 0;
  sg_ch_version_t v;
  if (r->status == 0 && sg_ch_version_parse(r->body, &v) == 0) {
    set_version(s, &v);
    sg_info("clickhouse", "ClickHouse %d.%d reached; dual-write resumes", v.major, v.minor);
  }
}

static void tick(uv_timer_t *t) {
  sg_chsink_t *s = t->data;
  if (s->closing) return;
  uint64_t now = uv_now(s->loop);
  if (!s->have_ver) {
    if (!s->version_inflight && now - s->last_version_try >= 5000) {
      s->last_version_try = now;
      s->version_inflight =
          sg_ch_request(s->ch, "SELECT version()", NULL, 0, 0, version_cb, s) == 0;
    }
    return;
  }
  sg_spool_stats_t st;
  sg_spool_stats(s->spools[0].sp, &st);
  if (st.open_records &&
      now_us() - st.open_oldest_us >= (int64_t)s->cfg->flush_interval_ms * 1000)
    sg_spool_seal(s->spools[0].sp);
  if (s->seg || now < s->next_try_ms) return;
  send_next(s);
  /* Drained orphan spools (from a run with more workers) are removed. */
  for (int i = s->nspools - 1; i > 0; i--) {
    if (s->seg) break;
    sg_spool_stats(s->spools[i].sp, &st);
    if (st.records == 0) {
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

static int open_spool(sg_chsink_t *s, const char *dir, int own, sg_buf_t *err) {
  sg_spool_opts_t o;
  memset(&o, 0, sizeof o);
  o.segment_bytes = s->cfg->spool_segment_bytes;
  o.max_bytes = s->cfg->spool_max_bytes;
  o.fsync = !strcmp(s->cfg->spool_fsync, "always") ? SG_SPOOL_FSYNC_ALWAYS
            : !strcmp(s->cfg->spool_fsync, "never") ? SG_SPOOL_FSYNC_NEVER
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

sg_chsink_t *sg_chsink_new(uv_loop_t *loop, const sg_config_t *cfg, const sg_ch_version_t *ver,
                           int worker_id, sg_pg_pool_t *pg, sg_buf_t *err) {
  sg_chsink_t *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->loop = loop;
  s->cfg = cfg;
  /* Both bodies it sends (s->body, a record of the segment in flight) stay
   * put until the insert's callback: no copy unless gzipped. */
  s->ch_flags = sg_config_clickhouse_gzip(cfg) ? SG_CH_GZIP : SG_CH_BORROW;
  s->pg = pg;
  if (ver) set_version(s, ver);
  s->st.reachable = ver != NULL; /* the version was just asked of the server */
  sg_ch_opts_t o = {cfg->clickhouse_host, (int)cfg->clickhouse_port, cfg->clickhouse_user,
                    cfg->clickhouse_password, cfg->clickhouse_database,
                    (long)cfg->clickhouse_timeout_ms, 4};
  s->ch = sg_ch_client_new(loop, &o);
  if (!s->ch) {
    sg_buf_puts(err, "ClickHouse client: out of memory");
    free(s);
    return NULL;
  }
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/w%d", cfg->spool_dir, worker_id);
  mkdir(cfg->spool_dir, 0755);
  if (open_spool(s, dir, 1, err) != 0) {
    sg_ch_client_close(s->ch);
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
    if (open_spool(s, dir, 0, &why) != 0) sg_warn("clickhouse", "%s", why.data);
    sg_buf_free(&why);
  }
  if (d) closedir(d);
  uv_timer_init(loop, &s->timer);
  s->timer.data = s;
  uv_timer_start(&s->timer, tick, 0, TICK_MS);
  return s;
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
  sg_buf_free(&s->body);
  sg_buf_free(&s->rows);
  s->timer_closed = 1;
  if (!s->sync_running) free(s); /* else sync_after_cb frees it */
}

void sg_chsink_close(sg_chsink_t *s) {
  if (!s) return;
  s->closing = 1;
  uv_timer_stop(&s->timer);
  /* Cancels an insert in flight (its segment stays spooled: at least once);
   * the client first: the request may point into the segment. */
  sg_ch_client_close(s->ch);
  if (s->seg) {
    sg_spool_release(s->spools[s->seg_spool].sp, s->seg);
    s->seg = NULL;
  }
  int rc = 0;
  for (int i = 0; i < s->nspools; i++) {
    int r = sg_spool_close(s->spools[i].sp);
    if (i == 0) rc = r;
    free(s->spools[i].dir);
  }
  /* Waiting for a sync that will not start: the spool's close synced. */
  waiter_t *next = s->sync_next;
  s->sync_next = s->sync_next_tail = NULL;
  sync_answer(s, next, rc);
  uv_close((uv_handle_t *)&s->timer, timer_closed);
}
