/* read_ch.c - the read endpoints answered from ClickHouse (read_ch.h). */
#include "read_ch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "read_eval.h"
#include "read_filter.h"
#include "read_internal.h"
#include "read_span.h"
#include "span.h"

#define BATCH_MIN 128     /* candidates asked for first (and never fewer) */
#define BATCH_MAX 1500    /* the most asked for in one round: bounds memory, and the
                           * second statement (~110 bytes a key) stays under 18.16's
                           * max_query_size of 256 KiB */
#define A_PAGE 20000      /* spans per analytics page */
#define SLICES 16         /* a bounded window's first slice: 1/16 of it */

/* ---- TabSeparated answers ------------------------------------------------------ */

/* ClickHouse's rows, unescaped in a private copy of the body: f[r * ncols
 * + c] points into it (NUL-terminated), NULL for \N. */
typedef struct {
  char *buf;
  char **f;
  size_t *len;
  size_t nrows, ncols;
} tsv_t;

static void tsv_free(tsv_t *t) {
  free(t->buf);
  free(t->f);
  free(t->len);
  memset(t, 0, sizeof *t);
}

/* 0, SG_EINVAL (a row without ncols fields), SG_ENOMEM. */
static int tsv_parse(const char *body, size_t n, size_t ncols, tsv_t *t) {
  memset(t, 0, sizeof *t);
  t->ncols = ncols;
  size_t rows = 0;
  for (size_t i = 0; i < n; i++) rows += body[i] == '\n';
  if (n && body[n - 1] != '\n') rows++;
  t->buf = malloc(n + 1);
  t->f = malloc((rows ? rows : 1) * ncols * sizeof *t->f);
  t->len = malloc((rows ? rows : 1) * ncols * sizeof *t->len);
  if (!t->buf || !t->f || !t->len) {
    tsv_free(t);
    return SG_ENOMEM;
  }
  memcpy(t->buf, body, n);
  t->buf[n] = '\0';
  char *p = t->buf, *end = t->buf + n;
  while (p < end) {
    size_t col = 0;
    while (1) {
      char *start = p, *w = p;
      while (p < end && *p != '\t' && *p != '\n') {
        if (*p == '\\' && p + 1 < end) {
          char e = p[1];
          p += 2;
          switch (e) {
          case 'b': *w++ = '\b'; break;
          case 'f': *w++ = '\f'; break;
          case 'r': *w++ = '\r'; break;
          case 'n': *w++ = '\n'; break;
          case 't': *w++ = '\t'; break;
          case '0': *w++ = '\0'; break;
          case 'N': *w++ = 1; break; /* marks \N below */
          default: *w++ = e; break;
          }
        } else {
          *w++ = *p++;
        }
      }
      char sep = p < end ? *p : '\n';
      size_t flen = (size_t)(w - start);
      *w = '\0';
      if (col >= ncols) {
        tsv_free(t);
        return SG_EINVAL;
      }
      size_t k = t->nrows * ncols + col;
      int is_null = flen == 1 && *start == 1 && p - start == 2;
      t->f[k] = is_null ? NULL : start;
      t->len[k] = is_null ? 0 : flen;
      col++;
      if (p < end) p++;
      if (sep == '\n') break;
    }
    if (col != ncols) {
      tsv_free(t);
      return SG_EINVAL;
    }
    t->nrows++;
  }
  return 0;
}

#define F(t, r, c) ((t)->f[(r) * (t)->ncols + (c)])
#define L(t, r, c) ((t)->len[(r) * (t)->ncols + (c)])

/* ---- rows ------------------------------------------------------------------------ */

static const int json_cols[] = {SG_RF_ATTRIBUTES, SG_RF_REFERENCES, SG_RF_LINKS, SG_RF_HASHES, SG_RF_EVENTS};
#define NJSON (sizeof json_cols / sizeof json_cols[0])

static void row_of(const tsv_t *t, size_t r, sg_re_row_t *row) {
  sg_re_row_init(row);
  for (int c = 0; c < SG_RF_NCOLS; c++) {
    row->v[c] = F(t, r, c);
    row->len[c] = L(t, r, c);
  }
}

/* Appends the row as Agenta's span JSON, its JSON columns in jsonb's form.
 * scratch: NJSON buffers. */
static int render_span(sg_re_row_t *row, sg_buf_t *scratch, sg_buf_t *out) {
  const char *v[SG_RF_NCOLS];
  memcpy(v, row->v, sizeof v);
  for (size_t i = 0; i < NJSON; i++) {
    int c = json_cols[i];
    const sg_jb_t *j;
    sg_buf_reset(&scratch[i]);
    int rc = sg_re_row_json(row, c, &j);
    if (rc == SG_ENOMEM) return rc;
    if (rc == 0 && j) {
      if ((rc = sg_jb_render(j, &scratch[i]))) return rc;
      v[c] = scratch[i].data;
    }
    /* not valid JSON (never written so): shown as stored */
  }
  return sg_rf_span_json(v, out);
}

static int64_t num(const char *s) { return s ? strtoll(s, NULL, 10) : 0; }

/* ---- common request state ------------------------------------------------------------ */

typedef struct {
  sg_rch_opts_t o;
  sg_ch_version_t ver;
  char *database;
  sg_rch_cb cb;
  void *arg;
  uint64_t deadline;    /* uv_now bound, 0: none */
  sg_buf_t sql, out;
  sg_buf_t scratch[NJSON];
} base_t;

static int base_init(base_t *b, const sg_rch_opts_t *o, sg_rch_cb cb, void *arg) {
  b->o = *o;
  b->ver = *o->c.ver;
  b->database = strdup(o->c.database ? o->c.database : "agenta_oss_tracing");
  if (!b->database) return SG_ENOMEM;
  b->o.c.ver = &b->ver;
  b->o.c.database = b->database;
  b->cb = cb;
  b->arg = arg;
  b->deadline = o->timeout_ms ? uv_now(o->loop) + o->timeout_ms : 0;
  return 0;
}

static void base_free(base_t *b) {
  free(b->database);
  sg_buf_free(&b->sql);
  sg_buf_free(&b->out);
  for (size_t i = 0; i < NJSON; i++) sg_buf_free(&b->scratch[i]);
}

static void answer(base_t *b, int status, const char *body, size_t len, const char *why) {
  sg_rch_result_t r = {status, body, len, why};
  b->cb(b->arg, &r);
}

/* A failed ClickHouse request: PostgreSQL answers instead. */
static void ch_failed(base_t *b, const sg_ch_result_t *res) {
  char why[512];
  snprintf(why, sizeof why, "ClickHouse: %s", res->error && res->error[0] ? res->error : sg_strerror(res->status));
  answer(b, 0, NULL, 0, why);
}

/* A ClickHouse answer's rows into *t (ncols columns each). 0, or the read
 * was answered here (ClickHouse failed: PostgreSQL answers; rows the
 * gateway cannot read: 500) and the caller only frees its state. */
static int rows_of(base_t *b, const sg_ch_result_t *res, size_t ncols, tsv_t *t) {
  if (res->status != 0) {
    ch_failed(b, res);
    return -1;
  }
  int rc = tsv_parse(res->body, res->len, ncols, t);
  if (rc) answer(b, 500, "the read failed", 15, rc == SG_ENOMEM ? "out of memory" : "ClickHouse sent rows the gateway cannot read");
  return rc;
}

static int past_deadline(const base_t *b) { return b->deadline && uv_now(b->o.loop) >= b->deadline; }

/* ---- GET /v1/traces/{id} ------------------------------------------------------------- */

typedef struct {
  base_t b;
  uint8_t trace[16];
} trace_t;

/* Storage key order, versions descending: the first of each key is its
 * highest version. */
static int key_ver_cmp(const tsv_t *t, size_t x, size_t y) {
  int64_t cx = num(F(t, x, SG_RF_CREATED_US)), cy = num(F(t, y, SG_RF_CREATED_US));
  if (cx != cy) return cx < cy ? -1 : 1;
  int c = strcmp(F(t, x, SG_RF_TRACE_ID), F(t, y, SG_RF_TRACE_ID));
  if (!c) c = strcmp(F(t, x, SG_RF_SPAN_ID), F(t, y, SG_RF_SPAN_ID));
  if (c) return c;
  uint64_t vx = strtoull(F(t, x, SG_RCH_COL_VERSION), NULL, 10), vy = strtoull(F(t, y, SG_RCH_COL_VERSION), NULL, 10);
  return vx > vy ? -1 : vx < vy;
}

static int idx_key_ver_cmp(const void *a, const void *b, void *ctx) {
  return key_ver_cmp(ctx, *(const size_t *)a, *(const size_t *)b);
}

static int same_key(const tsv_t *t, size_t x, size_t y) {
  return num(F(t, x, SG_RF_CREATED_US)) == num(F(t, y, SG_RF_CREATED_US)) &&
         !strcmp(F(t, x, SG_RF_TRACE_ID), F(t, y, SG_RF_TRACE_ID)) &&
         !strcmp(F(t, x, SG_RF_SPAN_ID), F(t, y, SG_RF_SPAN_ID));
}

/* Row indexes of the highest version of each stored key; *n in/out. */
static size_t *latest_versions(const tsv_t *t, size_t *n) {
  size_t *idx = malloc((t->nrows ? t->nrows : 1) * sizeof *idx);
  if (!idx) return NULL;
  for (size_t i = 0; i < t->nrows; i++) idx[i] = i;
  qsort_r(idx, t->nrows, sizeof *idx, idx_key_ver_cmp, (void *)t);
  size_t k = 0;
  for (size_t i = 0; i < t->nrows; i++)
    if (!k || !same_key(t, idx[k - 1], idx[i])) idx[k++] = idx[i];
  *n = k;
  return idx;
}

/* PostgreSQL's trace order: start_time, then span_id (uuid order = text). */
static int trace_order(const void *a, const void *b, void *ctx) {
  const tsv_t *t = ctx;
  size_t x = *(const size_t *)a, y = *(const size_t *)b;
  int64_t sx = num(F(t, x, SG_RF_START_US)), sy = num(F(t, y, SG_RF_START_US));
  if (sx != sy) return sx < sy ? -1 : 1;
  int c = strcmp(F(t, x, SG_RF_SPAN_ID), F(t, y, SG_RF_SPAN_ID));
  if (c) return c;
  /* one span stored under two keys (re-created): the highest version first */
  uint64_t vx = strtoull(F(t, x, SG_RCH_COL_VERSION), NULL, 10), vy = strtoull(F(t, y, SG_RCH_COL_VERSION), NULL, 10);
  return vx > vy ? -1 : vx < vy;
}

static void trace_cb(void *arg, const sg_ch_result_t *res) {
  trace_t *q = arg;
  base_t *b = &q->b;
  tsv_t t;
  int rc = rows_of(b, res, SG_RCH_NCOLS, &t);
  if (rc) goto done;
  size_t n = 0, k = 0;
  size_t *idx = latest_versions(&t, &n);
  if (!idx) rc = SG_ENOMEM;
  for (size_t i = 0; idx && i < n; i++)
    if (F(&t, idx[i], SG_RCH_COL_LIVE) && !strcmp(F(&t, idx[i], SG_RCH_COL_LIVE), "1")) idx[k++] = idx[i];
  if (idx) qsort_r(idx, k, sizeof *idx, trace_order, &t);
  sg_buf_t *o = &b->sql; /* the spans, then the answer in b->out */
  size_t shown = 0;
  sg_buf_reset(o);
  for (size_t i = 0; rc == 0 && i < k; i++) {
    if (i && !strcmp(F(&t, idx[i], SG_RF_SPAN_ID), F(&t, idx[i - 1], SG_RF_SPAN_ID)) &&
        num(F(&t, idx[i], SG_RF_START_US)) == num(F(&t, idx[i - 1], SG_RF_START_US)))
      continue;
    sg_re_row_t row;
    row_of(&t, idx[i], &row);
    if (shown) rc = sg_buf_putc(o, ',');
    rc = rc ? rc : render_span(&row, b->scratch, o);
    sg_re_row_clear(&row);
    shown++;
  }
  rc = rc ? rc : sg_buf_printf(&b->out, "{\"count\":%zu,\"spans\":[", shown);
  rc = rc ? rc : sg_buf_append(&b->out, o->data ? o->data : "", o->len);
  rc = rc ? rc : sg_buf_puts(&b->out, "]}\n");
  free(idx);
  tsv_free(&t);
  if (rc) {
    answer(b, 500, "the read failed", 15, sg_strerror(rc));
  } else if (shown == 0) {
    char hex[33], msg[80];
    sg_hex32_format(q->trace, hex);
    snprintf(msg, sizeof msg, "trace %s not found", hex);
    answer(b, 404, msg, strlen(msg), NULL);
  } else {
    answer(b, 200, b->out.data, b->out.len, NULL);
  }
done:
  base_free(b);
  free(q);
}

int sg_rch_trace(const sg_rch_opts_t *o, const uint8_t trace_id[16], sg_rch_cb cb, void *arg) {
  trace_t *q = calloc(1, sizeof *q);
  if (!q) return SG_ENOMEM;
  memcpy(q->trace, trace_id, 16);
  int rc = base_init(&q->b, o, cb, arg);
  rc = rc ? rc : sg_rch_trace_sql(&q->b.o.c, trace_id, &q->b.sql);
  rc = rc ? rc : sg_ch_request(o->ch, "", q->b.sql.data, q->b.sql.len, 0, trace_cb, q);
  if (rc) {
    base_free(&q->b);
    free(q);
  }
  return rc;
}

/* ---- POST /v1/spans/query ----------------------------------------------------------- */

enum { C_CREATED, C_TRACE, C_SPAN, C_VERSION, C_START, C_NCOLS };

typedef struct {
  base_t b;
  sg_re_t *re;
  sg_buf_t prefilter;        /* over every column (spans) */
  sg_buf_t prefilter_ix;     /* over spans_by_start's columns */
  int exact;
  int ix;                    /* the read index is there */
  int wide;                  /* ... and the filter tests a column it lacks */
  int rounds;
  int limit, desc;
  int has_oldest, has_newest;
  int64_t oldest, newest;
  int has_after;
  sg_rch_pos_t after;        /* the scan goes on strictly after this */
  int sliced;                /* the scan covers the window slice by slice */
  int64_t from, edge, width; /* ... from `from` on; scanned so far: start_time >= edge
                              * (descending) or < edge */
  int batch;
  tsv_t cand;                /* this round's candidates */
  int accepted;              /* spans of the page found so far (limit + 1 ends it) */
  sg_rch_pos_t last_shown;   /* the page's last span: the cursor */
  int has_last;
} query_t;

static void query_free(query_t *q) {
  sg_re_free(q->re);
  sg_buf_free(&q->prefilter);
  sg_buf_free(&q->prefilter_ix);
  tsv_free(&q->cand);
  base_free(&q->b);
  free(q);
}

static void query_round(query_t *q);
static void query_finish(query_t *q);

/* Slicing (sg_rch_query): a bounded window is scanned from its page-order
 * end in slices, 1/SLICES of it first, each next one at least 4 times wider
 * and as wide as the matches found so far say the page needs (the rest of
 * the window at once when none were found: a rare filter then costs two
 * slices, not four): 18.16
 * cannot stop reading a primary key range at the LIMIT (no read in order),
 * so a page from a 24 h window would read every row of the 24 h; a page's
 * rows are usually in its first slice. The rounds' cursor (q->after) goes
 * on across slices: every span is looked at once. */
static int slice_done(const query_t *q) {
  return !q->sliced || (q->desc ? q->edge <= q->oldest : q->edge >= q->newest);
}

static void slice_next(query_t *q) {
  int64_t done = q->desc ? q->from - q->edge : q->edge - q->from; /* µs looked at */
  double w = (double)q->width * 4;
  if (q->accepted == 0) w = (double)INT64_MAX / 4;
  else if ((double)(q->limit + 1 - q->accepted) * done / q->accepted * 1.25 > w)
    w = (double)(q->limit + 1 - q->accepted) * done / q->accepted * 1.25;
  q->width = w >= (double)INT64_MAX / 4 ? INT64_MAX / 4 : (int64_t)w;
  if (q->desc) q->edge = q->edge - q->oldest <= q->width ? q->oldest : q->edge - q->width;
  else q->edge = q->newest - q->edge <= q->width ? q->newest : q->edge + q->width;
}

/* After a round that did not fill the page: on in this slice when the
 * batch came back full (there may be more), else in the next slice, or the
 * end when the window is done. */
static void scan_on(query_t *q, int full) {
  if (full) {
    query_round(q);
    return;
  }
  if (slice_done(q)) {
    query_finish(q);
    return;
  }
  slice_next(q);
  query_round(q);
}

static void query_finish(query_t *q) {
  base_t *b = &q->b;
  sg_buf_t tail = SG_BUF_INIT;
  int shown = q->accepted > q->limit ? q->limit : q->accepted;
  int rc = sg_buf_printf(&tail, "{\"count\":%d,\"spans\":[", shown);
  rc = rc ? rc : sg_buf_append(&tail, b->out.data ? b->out.data : "", b->out.len);
  rc = rc ? rc : sg_buf_printf(&tail, "],\"windowing\":{\"limit\":%d,\"order\":\"%s\"", q->limit,
                               q->desc ? "descending" : "ascending");
  if (rc == 0 && q->accepted > q->limit && q->has_last) {
    uint8_t t[16], s[16];
    char cur[SG_RF_CURSOR_LEN + 1];
    if (sg_id_parse(q->last_shown.trace, 36, t) || sg_id_parse(q->last_shown.span, 36, s)) rc = SG_EINVAL;
    if (rc == 0) {
      sg_rf_cursor_format(q->desc, q->last_shown.start_us, t, s, cur);
      rc = sg_buf_printf(&tail, ",\"next\":\"%s\"", cur);
    }
  }
  rc = rc ? rc : sg_buf_puts(&tail, "}}\n");
  if (rc) answer(b, 500, "the read failed", 15, sg_strerror(rc));
  else answer(b, 200, tail.data, tail.len, NULL);
  sg_buf_free(&tail);
  query_free(q);
}

/* Candidate c's storage key vs fetched row r (ordered as latest_versions). */
static int cand_key_cmp(const tsv_t *cand, size_t c, const tsv_t *t, size_t r) {
  int64_t cx = num(F(cand, c, C_CREATED)), cy = num(F(t, r, SG_RF_CREATED_US));
  if (cx != cy) return cx < cy ? -1 : 1;
  int k = strcmp(F(cand, c, C_TRACE), F(t, r, SG_RF_TRACE_ID));
  return k ? k : strcmp(F(cand, c, C_SPAN), F(t, r, SG_RF_SPAN_ID));
}

static void fetch_cb(void *arg, const sg_ch_result_t *res) {
  query_t *q = arg;
  base_t *b = &q->b;
  tsv_t t;
  int rc = rows_of(b, res, SG_RCH_NCOLS + (q->wide ? 1 : 0), &t);
  if (rc) {
    query_free(q);
    return;
  }
  size_t nl = 0;
  size_t *latest = latest_versions(&t, &nl);
  if (!latest) rc = SG_ENOMEM;
  /* In page order: a candidate counts when its key's highest version sits
   * at the candidate's position (a version that moved is judged where it
   * is now), is live, and passes the filter. */
  for (size_t c = 0; rc == 0 && c < q->cand.nrows && q->accepted <= q->limit; c++) {
    size_t lo = 0, hi = nl;
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (cand_key_cmp(&q->cand, c, &t, latest[mid]) > 0) lo = mid + 1;
      else hi = mid;
    }
    if (lo == nl || cand_key_cmp(&q->cand, c, &t, latest[lo]) != 0) continue; /* gone meanwhile */
    size_t r = latest[lo];
    int64_t start = num(F(&q->cand, c, C_START));
    if (num(F(&t, r, SG_RF_START_US)) != start) continue;
    if (!F(&t, r, SG_RCH_COL_LIVE) || strcmp(F(&t, r, SG_RCH_COL_LIVE), "1")) continue;
    /* fails the prefilter, so the filter: its JSON columns did not come */
    if (q->wide && (!F(&t, r, SG_RCH_COL_PF) || strcmp(F(&t, r, SG_RCH_COL_PF), "1"))) continue;
    if (q->has_last && q->last_shown.start_us == start && !strcmp(q->last_shown.trace, F(&q->cand, c, C_TRACE)) &&
        !strcmp(q->last_shown.span, F(&q->cand, c, C_SPAN)))
      continue; /* the same span again (another version, or a re-created copy) */
    sg_re_row_t row;
    row_of(&t, r, &row);
    int m = sg_re_match(q->re, &row);
    if (m < 0) {
      sg_re_row_clear(&row);
      rc = m;
      break;
    }
    if (m) {
      q->accepted++;
      if (q->accepted <= q->limit) {
        if (b->out.len) rc = sg_buf_putc(&b->out, ',');
        rc = rc ? rc : render_span(&row, b->scratch, &b->out);
        q->last_shown.start_us = start;
        snprintf(q->last_shown.trace, sizeof q->last_shown.trace, "%s", F(&q->cand, c, C_TRACE));
        snprintf(q->last_shown.span, sizeof q->last_shown.span, "%s", F(&q->cand, c, C_SPAN));
        q->has_last = 1;
      }
    }
    sg_re_row_clear(&row);
  }
  free(latest);
  tsv_free(&t);
  if (rc == SG_EINVAL) { /* a regular expression over its budget */
    static const char msg[] = "a filter value is not valid for its field or operator";
    answer(b, 400, msg, sizeof msg - 1, "a regular expression ran out of its match budget");
    query_free(q);
    return;
  }
  if (rc) {
    answer(b, 500, "the read failed", 15, sg_strerror(rc));
    query_free(q);
    return;
  }
  if (q->accepted > q->limit) {
    query_finish(q);
    return;
  }
  /* more to look at: on after the last candidate, with a larger batch */
  int full = q->cand.nrows >= (size_t)q->batch;
  size_t last = q->cand.nrows - 1;
  q->after.start_us = num(F(&q->cand, last, C_START));
  snprintf(q->after.trace, sizeof q->after.trace, "%s", F(&q->cand, last, C_TRACE));
  snprintf(q->after.span, sizeof q->after.span, "%s", F(&q->cand, last, C_SPAN));
  q->has_after = 1;
  q->batch = q->batch * 4 > BATCH_MAX ? BATCH_MAX : q->batch * 4;
  scan_on(q, full);
}

static void cand_cb(void *arg, const sg_ch_result_t *res) {
  query_t *q = arg;
  base_t *b = &q->b;
  tsv_free(&q->cand);
  if (rows_of(b, res, C_NCOLS, &q->cand) != 0) {
    query_free(q);
    return;
  }
  if (q->cand.nrows == 0) {
    scan_on(q, 0);
    return;
  }
  sg_rch_key_t *keys = malloc(q->cand.nrows * sizeof *keys);
  if (!keys) {
    answer(b, 500, "the read failed", 15, "out of memory");
    query_free(q);
    return;
  }
  for (size_t i = 0; i < q->cand.nrows; i++) {
    keys[i].created_us = num(F(&q->cand, i, C_CREATED));
    snprintf(keys[i].trace, sizeof keys[i].trace, "%s", F(&q->cand, i, C_TRACE));
    snprintf(keys[i].span, sizeof keys[i].span, "%s", F(&q->cand, i, C_SPAN));
  }
  sg_buf_reset(&b->sql);
  int rc = sg_rch_fetch_sql(&b->o.c, keys, q->cand.nrows, q->wide ? q->prefilter.data : NULL, &b->sql);
  free(keys);
  rc = rc ? rc : sg_ch_request(b->o.ch, "", b->sql.data, b->sql.len, 0, fetch_cb, q);
  if (rc) {
    answer(b, 500, "the read failed", 15, sg_strerror(rc));
    query_free(q);
  }
}

static void query_round(query_t *q) {
  base_t *b = &q->b;
  if (past_deadline(b)) {
    char msg[200];
    snprintf(msg, sizeof msg, "the query ran longer than query_timeout_ms (%" PRIu64 " ms) and was canceled; "
             "narrow the filter or the time range", b->o.timeout_ms);
    answer(b, 504, msg, strlen(msg), "ClickHouse read past query_timeout_ms");
    query_free(q);
    return;
  }
  /* With the index: candidates from spans_by_start when it can test the
   * whole filter; otherwise from spans, where ClickHouse tests the JSON
   * columns over the window's granules. An unbounded window takes a first
   * round from the index too (in page order: a filter most spans pass fills
   * the page from the newest rows without reading the project's JSON); a
   * sliced one does not need it (its first slice is small), and a filter
   * few spans pass would pay a round for nothing. */
  int from_ix = q->ix && (!q->wide || (q->rounds == 0 && !q->sliced));
  sg_rch_scan_t s = {q->desc, q->has_oldest, q->has_newest, q->oldest, q->newest,
                     q->has_after ? &q->after : NULL, from_ix ? q->prefilter_ix.data : q->prefilter.data,
                     q->batch, from_ix, q->ix};
  if (q->sliced && q->desc) s.oldest_us = q->edge;
  if (q->sliced && !q->desc) s.newest_us = q->edge;
  q->rounds++;
  sg_buf_reset(&b->sql);
  int rc = sg_rch_candidates_sql(&b->o.c, &s, &b->sql);
  rc = rc ? rc : sg_ch_request(b->o.ch, "", b->sql.data, b->sql.len, 0, cand_cb, q);
  if (rc) {
    answer(b, 500, "the read failed", 15, sg_strerror(rc));
    query_free(q);
  }
}

static int window_time(const json_t *w, const char *name, int64_t *us, int *has) {
  const json_t *v = json_object_get(w, name);
  *has = 0;
  if (!v || json_is_null(v)) return 0;
  if (sg__rf_time_value(v, us)) return SG_EINVAL;
  *has = 1;
  return 0;
}

int sg_rch_query(const sg_rch_opts_t *o, const json_t *body, sg_rch_cb cb, void *arg, sg_buf_t *err) {
  query_t *q = calloc(1, sizeof *q);
  if (!q) return SG_ENOMEM;
  int rc = base_init(&q->b, o, cb, arg);
  if (rc) {
    free(q);
    return rc;
  }
  q->limit = SG_RF_LIMIT_DEFAULT;
  q->desc = 1;
  /* windowing, as sg_rf_compile_query read it (it accepted this body) */
  const json_t *w = body ? json_object_get(body, "windowing") : NULL;
  if (json_is_object(w)) {
    const json_t *lim = json_object_get(w, "limit"), *ord = json_object_get(w, "order"), *nx = json_object_get(w, "next");
    if (json_is_integer(lim)) q->limit = json_integer_value(lim) > SG_RF_LIMIT_MAX ? SG_RF_LIMIT_MAX : (int)json_integer_value(lim);
    if (json_is_string(ord) && !strcmp(json_string_value(ord), "ascending")) q->desc = 0;
    rc = window_time(w, "oldest", &q->oldest, &q->has_oldest);
    rc = rc ? rc : window_time(w, "newest", &q->newest, &q->has_newest);
    if (rc == 0 && json_is_string(nx)) {
      int d;
      uint8_t t[16], s[16];
      rc = sg_rf_cursor_parse(json_string_value(nx), &d, &q->after.start_us, t, s);
      sg_uuid_format(t, q->after.trace);
      sg_uuid_format(s, q->after.span);
      q->has_after = 1;
    }
  }
  const json_t *flt = body ? json_object_get(body, "filtering") : NULL;
  rc = rc ? rc : sg_re_compile(json_is_null(flt) ? NULL : flt, &q->re, err);
  rc = rc ? rc : sg_re_ch_prefilter(q->re, &q->b.ver, &q->prefilter, &q->exact);
  q->ix = (q->b.ver.caps & SG_CH_READ_INDEX) != 0;
  if (rc == 0 && q->ix) {
    int exact_ix = 0, complete = 0;
    rc = sg_re_ch_prefilter_on(q->re, &q->b.ver, SG_RCH_BY_START_COLS, &q->prefilter_ix, &exact_ix, &complete);
    q->wide = !complete;
    if (q->wide) q->exact = 0;
  }
  if (rc) {
    query_free(q);
    return rc;
  }
  /* Exact prefilter: every candidate that is its span's latest version
   * counts, so limit + 1 rows usually end it in one round. */
  q->batch = q->exact ? q->limit + 1 : (q->limit + 1) * 4;
  if (q->batch < BATCH_MIN) q->batch = BATCH_MIN;
  if (q->batch > BATCH_MAX) q->batch = BATCH_MAX;
  /* the first slice: from the window's page-order end, or the cursor's
   * position when that is inside the window */
  if (q->has_oldest && q->has_newest && q->newest - q->oldest >= SLICES * 1000000LL) {
    int64_t from = q->desc ? q->newest : q->oldest;
    if (q->has_after && q->after.start_us > q->oldest && q->after.start_us < q->newest) from = q->after.start_us;
    q->sliced = 1;
    q->from = from;
    q->width = (q->newest - q->oldest) / SLICES;
    if (q->desc) q->edge = from - q->oldest <= q->width ? q->oldest : from - q->width;
    else q->edge = q->newest - from <= q->width ? q->newest : from + q->width;
  }
  query_round(q);
  return 0;
}

/* ---- GET /v1/analytics/spans (exact) -------------------------------------------------- */

enum { A_NCOLS_BASE = SG_RCH_A_ATTRS };

typedef struct {
  base_t b;
  const sg_rf_analytics_t *a;
  sg_rf_agg_t *agg;
  int attrs;
  int has_after;
  sg_rch_key_t after;
} ana_t;

static void ana_page(ana_t *q);

static void ana_free(ana_t *q) {
  sg_rf_agg_free(q->agg);
  base_free(&q->b);
  free(q);
}

static int a_key_ver_cmp(const void *pa, const void *pb, void *ctx) {
  const tsv_t *t = ctx;
  size_t x = *(const size_t *)pa, y = *(const size_t *)pb;
  int64_t cx = num(F(t, x, SG_RCH_A_CREATED)), cy = num(F(t, y, SG_RCH_A_CREATED));
  if (cx != cy) return cx < cy ? -1 : 1;
  int c = strcmp(F(t, x, SG_RCH_A_TRACE), F(t, y, SG_RCH_A_TRACE));
  if (!c) c = strcmp(F(t, x, SG_RCH_A_SPAN), F(t, y, SG_RCH_A_SPAN));
  if (c) return c;
  uint64_t vx = strtoull(F(t, x, SG_RCH_A_VERSION), NULL, 10), vy = strtoull(F(t, y, SG_RCH_A_VERSION), NULL, 10);
  return vx > vy ? -1 : vx < vy;
}

static void ana_cb(void *arg, const sg_ch_result_t *res) {
  ana_t *q = arg;
  base_t *b = &q->b;
  tsv_t t;
  int rc = rows_of(b, res, A_NCOLS_BASE + (q->attrs ? 1 : 0), &t);
  if (rc) {
    ana_free(q);
    return;
  }
  size_t *idx = malloc((t.nrows ? t.nrows : 1) * sizeof *idx);
  if (!idx) rc = SG_ENOMEM;
  for (size_t i = 0; idx && i < t.nrows; i++) idx[i] = i;
  if (idx) qsort_r(idx, t.nrows, sizeof *idx, a_key_ver_cmp, &t);
  size_t keys = 0, last = 0;
  int64_t from = q->a->from_s * 1000000, to = q->a->to_s * 1000000;
  for (size_t i = 0; rc == 0 && i < t.nrows; i++) {
    size_t r = idx[i];
    if (i && !a_key_ver_cmp(&idx[i - 1], &idx[i], &t)) continue;
    if (i && num(F(&t, idx[i - 1], SG_RCH_A_CREATED)) == num(F(&t, r, SG_RCH_A_CREATED)) &&
        !strcmp(F(&t, idx[i - 1], SG_RCH_A_TRACE), F(&t, r, SG_RCH_A_TRACE)) &&
        !strcmp(F(&t, idx[i - 1], SG_RCH_A_SPAN), F(&t, r, SG_RCH_A_SPAN)))
      continue; /* an older version */
    keys++;
    last = r;
    /* the latest version decides: live, not deleted, starting in the window */
    int64_t start = num(F(&t, r, SG_RCH_A_START));
    if (!F(&t, r, SG_RCH_A_LIVE) || strcmp(F(&t, r, SG_RCH_A_LIVE), "1") || F(&t, r, SG_RCH_A_DELETED) ||
        start < from || start >= to)
      continue;
    const char *col[SG_RF_NDIMS];
    for (int d = 0; d < SG_RF_NDIMS; d++) col[d] = F(&t, r, SG_RCH_A_DIMS + d);
    const sg_jb_t *attrs = NULL;
    sg_jb_doc_t *doc = NULL;
    if (q->attrs && F(&t, r, SG_RCH_A_ATTRS) &&
        sg_jb_parse(F(&t, r, SG_RCH_A_ATTRS), L(&t, r, SG_RCH_A_ATTRS), &doc, &attrs) == SG_ENOMEM)
      rc = SG_ENOMEM;
    const char *st = F(&t, r, SG_RCH_A_STATUS);
    rc = rc ? rc : sg_rf_agg_add(q->agg, start, num(F(&t, r, SG_RCH_A_END)), st && !strcmp(st, "STATUS_CODE_ERROR"),
                                 col, attrs);
    sg_jb_free(doc);
  }
  if (rc == 0 && keys >= A_PAGE * 9 / 10) { /* (a key merged away meanwhile shows no rows) */
    /* the page was full: go on after the highest key seen */
    size_t top = last;
    for (size_t i = 0; i < t.nrows; i++) {
      size_t x = idx[i], y = top;
      int64_t cx = num(F(&t, x, SG_RCH_A_CREATED)), cy = num(F(&t, y, SG_RCH_A_CREATED));
      int c = cx != cy ? (cx < cy ? -1 : 1) : strcmp(F(&t, x, SG_RCH_A_TRACE), F(&t, y, SG_RCH_A_TRACE));
      if (!c) c = strcmp(F(&t, x, SG_RCH_A_SPAN), F(&t, y, SG_RCH_A_SPAN));
      if (c > 0) top = x;
    }
    q->after.created_us = num(F(&t, top, SG_RCH_A_CREATED));
    snprintf(q->after.trace, sizeof q->after.trace, "%s", F(&t, top, SG_RCH_A_TRACE));
    snprintf(q->after.span, sizeof q->after.span, "%s", F(&t, top, SG_RCH_A_SPAN));
    q->has_after = 1;
    free(idx);
    tsv_free(&t);
    ana_page(q);
    return;
  }
  free(idx);
  tsv_free(&t);
  rc = rc ? rc : sg_rf_agg_render(q->agg, "clickhouse", &b->out);
  if (rc) answer(b, 500, "the read failed", 15, sg_strerror(rc));
  else answer(b, 200, b->out.data, b->out.len, NULL);
  ana_free(q);
}

static void ana_page(ana_t *q) {
  base_t *b = &q->b;
  if (past_deadline(b)) {
    char msg[200];
    snprintf(msg, sizeof msg, "the query ran longer than query_timeout_ms (%" PRIu64 " ms) and was canceled; "
             "narrow the time range", b->o.timeout_ms);
    answer(b, 504, msg, strlen(msg), "ClickHouse read past query_timeout_ms");
    ana_free(q);
    return;
  }
  sg_buf_reset(&b->sql);
  int rc = sg_rch_analytics_sql(&b->o.c, q->a->from_s * 1000000, q->a->to_s * 1000000,
                                q->has_after ? &q->after : NULL, A_PAGE, q->attrs, &b->sql);
  rc = rc ? rc : sg_ch_request(b->o.ch, "", b->sql.data, b->sql.len, 0, ana_cb, q);
  if (rc) {
    answer(b, 500, "the read failed", 15, sg_strerror(rc));
    ana_free(q);
  }
}

int sg_rch_analytics(const sg_rch_opts_t *o, const sg_rf_analytics_t *a, sg_rch_cb cb, void *arg) {
  ana_t *q = calloc(1, sizeof *q);
  if (!q) return SG_ENOMEM;
  int rc = base_init(&q->b, o, cb, arg);
  q->a = a;
  q->attrs = a->nattr > 0 || a->nmetric > 0;
  if (rc == 0 && !(q->agg = sg_rf_agg_new(a))) rc = SG_ENOMEM;
  if (rc) {
    ana_free(q);
    return rc;
  }
  ana_page(q);
  return 0;
}
