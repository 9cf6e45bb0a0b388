/* chonly.c - ClickHouse-only projects: the gateway's clock and stamps, and a
 * trace's stored rows (chonly.h). */
#include "chonly.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "log.h"

/* ---- the clock ------------------------------------------------------------------ */

static _Atomic int64_t last_clock;

int64_t sg_chonly_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
  int64_t prev = atomic_load(&last_clock);
  for (;;) {
    int64_t next = now > prev ? now : prev + 1;
    if (atomic_compare_exchange_weak(&last_clock, &prev, next)) return next;
  }
}

void sg_chonly_stamp(sg_span_t *spans, size_t n, const uint8_t *user_id) {
  static const uint8_t nil[16];
  const uint8_t *by = user_id ? user_id : nil;
  for (size_t i = 0; i < n; i++) {
    sg_span_t *s = &spans[i];
    s->created_at_us = s->start_us;
    s->version = s->updated_at_us = sg_chonly_clock();
    memcpy(s->created_by_id, by, 16);
    memcpy(s->updated_by_id, by, 16);
    s->has_created_by = s->has_updated_by = 1;
  }
}

/* ---- the record in PostgreSQL ------------------------------------------------------------
 *
 * A process-wide set of projects recorded (or being recorded), under one
 * mutex: a bounded open-addressing table; when it is full a project is
 * recorded again each time (the INSERT is idempotent). */

#define REC_SLOTS 4096
enum { REC_FREE = 0, REC_BUSY, REC_DONE };

static struct {
  uint8_t id[16];
  uint8_t state;
} rec_tab[REC_SLOTS];
static uv_mutex_t rec_mu;
static uv_once_t rec_once = UV_ONCE_INIT;
static void rec_init(void) { uv_mutex_init(&rec_mu); }

/* The slot of project (found or claimed), or -1 when the table is full. */
static int rec_slot(const uint8_t project[16]) {
  uint64_t h = 1469598103934665603ULL;
  for (int i = 0; i < 16; i++) h = (h ^ project[i]) * 1099511628211ULL;
  for (size_t k = 0, i = (size_t)h % REC_SLOTS; k < REC_SLOTS; k++, i = (i + 1) % REC_SLOTS) {
    if (rec_tab[i].state == REC_FREE) {
      memcpy(rec_tab[i].id, project, 16);
      return (int)i;
    }
    if (!memcmp(rec_tab[i].id, project, 16)) return (int)i;
  }
  return -1;
}

typedef struct {
  int slot;
  char pid[37];
  const char *params[1];
} rec_t;

static void record_cb(void *arg, PGresult *res, int err, const char *errmsg) {
  rec_t *r = arg;
  (void)res;
  uv_mutex_lock(&rec_mu);
  if (r->slot >= 0) rec_tab[r->slot].state = err ? REC_FREE : REC_DONE;
  uv_mutex_unlock(&rec_mu);
  static _Atomic int64_t last_warn_s;
  int64_t now_s = (int64_t)time(NULL), last = atomic_load(&last_warn_s);
  if (err && now_s - last >= 10 && atomic_compare_exchange_strong(&last_warn_s, &last, now_s)) /* one line in 10 s */
    sg_warn("ingest", "could not record ClickHouse-only project %s in spangate_ch_only (%s); tried again "
                      "with its next request. Until it is there, `spangate migrate` and `validate` know the "
                      "project from routing.lua only", r->pid, errmsg ? errmsg : sg_strerror(err));
  free(r);
}

void sg_chonly_record(sg_pg_pool_t *pg, const uint8_t project[16]) {
  uv_once(&rec_once, rec_init);
  uv_mutex_lock(&rec_mu);
  int slot = rec_slot(project);
  int todo = slot < 0 || rec_tab[slot].state == REC_FREE;
  if (slot >= 0 && todo) rec_tab[slot].state = REC_BUSY;
  uv_mutex_unlock(&rec_mu);
  if (!todo) return;
  rec_t *r = calloc(1, sizeof *r);
  if (r) {
    r->slot = slot;
    sg_uuid_format(project, r->pid);
    r->params[0] = r->pid;
    static const char sql[] = "INSERT INTO spangate_ch_only (project_id) VALUES ($1::uuid) ON CONFLICT DO NOTHING";
    if (sg_pg_query(pg, sql, 1, r->params, NULL, NULL, record_cb, r) == 0) return;
    free(r);
  }
  uv_mutex_lock(&rec_mu);
  if (slot >= 0) rec_tab[slot].state = REC_FREE;
  uv_mutex_unlock(&rec_mu);
}

/* ---- a trace's stored rows ---------------------------------------------------------- */

/* The columns asked for, in this order. */
enum {
  C_TRACE, C_SPAN, C_PARENT, C_TRACE_TYPE, C_SPAN_TYPE, C_SPAN_KIND, C_STATUS, C_NAME, C_STATUS_MSG,
  C_SESSION, C_USER, C_AGENT, C_ATTRS, C_REFS, C_LINKS, C_HASHES, C_EVENTS, C_CREATED_BY, C_UPDATED_BY,
  C_DELETED_BY, C_START, C_END, C_CREATED, C_UPDATED, C_DELETED, C_VERSION, C_IS_DELETED, C_EXPIRES,
  NCOLS
};

typedef struct {
  sg_chonly_trace_cb cb;
  void *arg;
} lookup_t;

/* µs of a time column as an Int64 expression (0 for NULL). */
static int time_us(sg_buf_t *b, const sg_ch_version_t *ver, const char *col) {
  if (ver->caps & SG_CH_DATETIME64) return sg_buf_printf(b, "ifNull(toUnixTimestamp64Micro(%s), 0)", col);
  return sg_buf_printf(b, "ifNull(toInt64(%s) * 1000000 + %s_us, 0)", col, col);
}

static int trace_sql(sg_buf_t *b, const sg_ch_version_t *ver, const char *database, const uint8_t project[16],
                     const uint8_t trace_id[16]) {
  char p[37], t[37];
  sg_uuid_format(project, p);
  sg_uuid_format(trace_id, t);
  int rc = sg_buf_puts(b, "SELECT toString(trace_id), toString(span_id), toString(parent_id), toString(trace_type), "
                          "toString(span_type), toString(span_kind), toString(status_code), span_name, status_message, "
                          "session_id, user_id, agent_id, attributes, `references`, links, hashes, events, "
                          "toString(created_by_id), toString(updated_by_id), toString(deleted_by_id)");
  static const char *const times[] = {"start_time", "end_time", "created_at", "updated_at", "deleted_at"};
  for (size_t i = 0; rc == 0 && i < sizeof times / sizeof times[0]; i++) {
    rc = sg_buf_puts(b, ", ");
    rc = rc ? rc : time_us(b, ver, times[i]);
  }
  rc = rc ? rc : sg_buf_puts(b, ", version, is_deleted, toUInt32(expires_at) FROM ");
  rc = rc ? rc : sg_ch_quote_ident(b, database && database[0] ? database : "agenta_oss_tracing");
  rc = rc ? rc : sg_buf_printf(b, ".spans WHERE project_id = toUUID('%s') AND trace_id = toUUID('%s') "
                                  "FORMAT TabSeparated", p, t);
  return rc;
}

/* Unescapes ClickHouse's TabSeparated answer in place: fields[r * NCOLS + c]
 * (NULL for \N), NUL-terminated, lengths in lens. 0, SG_EINVAL (a row
 * without NCOLS fields) or SG_ENOMEM. */
static int tsv_fields(char *body, size_t n, char ***fields, size_t **lens, size_t *nrows) {
  size_t rows = 0;
  for (size_t i = 0; i < n; i++) rows += body[i] == '\n';
  *fields = malloc((rows ? rows : 1) * NCOLS * sizeof **fields);
  *lens = malloc((rows ? rows : 1) * NCOLS * sizeof **lens);
  *nrows = 0;
  if (!*fields || !*lens) return SG_ENOMEM;
  char *p = body, *end = body + n;
  while (p < end) {
    if (*nrows == rows) return SG_EINVAL; /* a last row without its newline */
    for (size_t c = 0; c < NCOLS; c++) {
      char *start = p, *w = p;
      int null = p + 2 <= end && p[0] == '\\' && p[1] == 'N' && (p + 2 == end || p[2] == '\t' || p[2] == '\n');
      if (null) p += 2;
      while (!null && p < end && *p != '\t' && *p != '\n') {
        if (*p == '\\' && p + 1 < end) {
          char e = p[1];
          p += 2;
          *w++ = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == '0' ? '\0' : e == 'b' ? '\b'
               : e == 'f' ? '\f' : e;
        } else {
          *w++ = *p++;
        }
      }
      if (p >= end || (*p == '\n') != (c == NCOLS - 1)) return SG_EINVAL;
      size_t k = *nrows * NCOLS + c;
      (*lens)[k] = null ? 0 : (size_t)(w - start);
      if (!null) *w = '\0'; /* w <= p: the separator's place at the latest */
      (*fields)[k] = null ? NULL : start;
      p++;
    }
    (*nrows)++;
  }
  return 0;
}

typedef struct {
  char **f;
} sort_ctx_t;

static int64_t num(const char *s) { return s ? strtoll(s, NULL, 10) : 0; }

/* Sorting key, then the highest version first. */
static int key_ver_cmp(const void *a, const void *b, void *ctx) {
  char **f = ((sort_ctx_t *)ctx)->f;
  size_t x = *(const size_t *)a * NCOLS, y = *(const size_t *)b * NCOLS;
  int64_t cx = num(f[x + C_CREATED]), cy = num(f[y + C_CREATED]);
  if (cx != cy) return cx < cy ? -1 : 1;
  int c = strcmp(f[x + C_TRACE] ? f[x + C_TRACE] : "", f[y + C_TRACE] ? f[y + C_TRACE] : "");
  if (!c) c = strcmp(f[x + C_SPAN] ? f[x + C_SPAN] : "", f[y + C_SPAN] ? f[y + C_SPAN] : "");
  if (c) return c;
  uint64_t vx = strtoull(f[x + C_VERSION] ? f[x + C_VERSION] : "0", NULL, 10);
  uint64_t vy = strtoull(f[y + C_VERSION] ? f[y + C_VERSION] : "0", NULL, 10);
  return vx > vy ? -1 : vx < vy;
}

static sg_ch_text_t text(char **f, size_t *len, size_t k) {
  sg_ch_text_t t = {f[k], len[k]};
  return t;
}

/* Row r's fields as a stored span; SG_EINVAL when an id does not parse. */
static int stored_of(char **f, size_t *len, size_t r, sg_chonly_stored_t *s) {
  size_t k = r * NCOLS;
  memset(s, 0, sizeof *s);
  if (!f[k + C_TRACE] || !f[k + C_SPAN] || sg_id_parse(f[k + C_TRACE], len[k + C_TRACE], s->trace_id) ||
      sg_id_parse(f[k + C_SPAN], len[k + C_SPAN], s->span_id))
    return SG_EINVAL;
  sg_ch_text_row_t *w = &s->row;
  w->trace_id = text(f, len, k + C_TRACE);
  w->span_id = text(f, len, k + C_SPAN);
  w->parent_id = text(f, len, k + C_PARENT);
  w->trace_type = text(f, len, k + C_TRACE_TYPE);
  w->span_type = text(f, len, k + C_SPAN_TYPE);
  w->span_kind = text(f, len, k + C_SPAN_KIND);
  w->status_code = text(f, len, k + C_STATUS);
  w->span_name = text(f, len, k + C_NAME);
  w->status_message = text(f, len, k + C_STATUS_MSG);
  w->session_id = text(f, len, k + C_SESSION);
  w->user_id = text(f, len, k + C_USER);
  w->agent_id = text(f, len, k + C_AGENT);
  w->attributes = text(f, len, k + C_ATTRS);
  w->references = text(f, len, k + C_REFS);
  w->links = text(f, len, k + C_LINKS);
  w->hashes = text(f, len, k + C_HASHES);
  w->events = text(f, len, k + C_EVENTS);
  w->created_by_id = text(f, len, k + C_CREATED_BY);
  w->updated_by_id = text(f, len, k + C_UPDATED_BY);
  w->deleted_by_id = text(f, len, k + C_DELETED_BY);
  w->start_us = num(f[k + C_START]);
  w->end_us = num(f[k + C_END]);
  w->created_at_us = num(f[k + C_CREATED]);
  w->updated_at_us = num(f[k + C_UPDATED]);
  w->deleted_at_us = num(f[k + C_DELETED]);
  w->version = (int64_t)strtoull(f[k + C_VERSION] ? f[k + C_VERSION] : "0", NULL, 10);
  w->is_deleted = 0;
  s->expires_us = num(f[k + C_EXPIRES]) * 1000000;
  return 0;
}

static void trace_cb(void *arg, const sg_ch_result_t *res) {
  lookup_t *q = arg;
  if (res->status != 0) {
    q->cb(q->arg, res->status, res->error, NULL, 0);
    free(q);
    return;
  }
  char *body = malloc(res->len + 1);
  char **f = NULL;
  size_t *len = NULL, nrows = 0, *idx = NULL, nout = 0;
  sg_chonly_stored_t *out = NULL;
  int rc = body ? 0 : SG_ENOMEM;
  if (rc == 0) {
    memcpy(body, res->body, res->len);
    body[res->len] = '\0';
    rc = tsv_fields(body, res->len, &f, &len, &nrows);
  }
  if (rc == 0) {
    idx = malloc((nrows ? nrows : 1) * sizeof *idx);
    out = malloc((nrows ? nrows : 1) * sizeof *out);
    if (!idx || !out) rc = SG_ENOMEM;
  }
  if (rc == 0) {
    for (size_t i = 0; i < nrows; i++) idx[i] = i;
    sort_ctx_t ctx = {f};
    qsort_r(idx, nrows, sizeof *idx, key_ver_cmp, &ctx);
    for (size_t i = 0; rc == 0 && i < nrows; i++) {
      size_t r = idx[i];
      if (i) { /* an older version of the key just seen */
        size_t a = idx[i - 1], b = r;
        if (num(f[a * NCOLS + C_CREATED]) == num(f[b * NCOLS + C_CREATED]) &&
            !strcmp(f[a * NCOLS + C_TRACE] ? f[a * NCOLS + C_TRACE] : "", f[b * NCOLS + C_TRACE] ? f[b * NCOLS + C_TRACE] : "") &&
            !strcmp(f[a * NCOLS + C_SPAN] ? f[a * NCOLS + C_SPAN] : "", f[b * NCOLS + C_SPAN] ? f[b * NCOLS + C_SPAN] : ""))
          continue;
      }
      const char *del = f[r * NCOLS + C_IS_DELETED];
      if (del && strcmp(del, "0") != 0) continue; /* the key's latest version is a tombstone */
      rc = stored_of(f, len, r, &out[nout]);
      if (rc == 0) nout++;
    }
  }
  if (rc == 0) q->cb(q->arg, 0, "", out, nout);
  else q->cb(q->arg, rc, rc == SG_ENOMEM ? "out of memory" : "ClickHouse sent rows the gateway cannot read", NULL, 0);
  free(out);
  free(idx);
  free(f);
  free(len);
  free(body);
  free(q);
}

int sg_chonly_trace(sg_ch_client_t *ch, const sg_ch_version_t *ver, const char *database, long timeout_ms,
                    const uint8_t project[16], const uint8_t trace_id[16], sg_chonly_trace_cb cb, void *arg) {
  lookup_t *q = calloc(1, sizeof *q);
  if (!q) return SG_ENOMEM;
  q->cb = cb;
  q->arg = arg;
  sg_buf_t sql = SG_BUF_INIT;
  int rc = trace_sql(&sql, ver, database, project, trace_id);
  if (rc == 0) {
    sg_ch_req_t r;
    memset(&r, 0, sizeof r);
    r.sql = sql.data;
    r.database = "";
    r.timeout_ms = timeout_ms;
    rc = sg_ch_send(ch, &r, trace_cb, q);
  }
  sg_buf_free(&sql);
  if (rc != 0) free(q);
  return rc;
}
