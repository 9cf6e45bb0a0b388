/* pgsink.c - group commit of span submissions into Agenta's `spans` table.
 *
 * The statement. All rows of a group travel as ONE jsonb parameter (an array
 * of small objects) unpacked by jsonb_to_recordset, typed by the record
 * definition, so there is one parse on the server and no per-row parameter
 * plumbing. Measured against unnest() over 18 parallel text arrays on
 * PostgreSQL 15, 2000 spans of ~1.2 KB attributes: the server's time is the
 * same (medians 102 vs 99 ms on a table with only the primary key, 528 vs
 * 533 ms with Agenta's GIN/full-text indexes, which dominate), while
 * building the arrays costs ~50% more on the client (every JSON value is
 * escaped a second time for the array literal) and is easier to get wrong.
 *
 * Times travel as text, "YYYY-MM-DDTHH:MM:SS.ffffffZ" (sg_time_format), and
 * come back as integer µs via extract(epoch ...) * 1e6, which is numeric
 * (exact) since PostgreSQL 14; no double is ever involved.
 *
 * The version (ClickHouse's ReplacingMergeTree column) must grow with every
 * upsert of the same row, in commit order, even when two land within one
 * µs. Agenta's table has no version column, so the statement makes
 * updated_at itself strictly increasing per row:
 *     updated_at = greatest(now(), coalesce(old.updated_at, old.created_at) + 1 µs)
 * and the version is the µs of coalesce(updated_at, created_at) as
 * returned. ON CONFLICT DO UPDATE holds the row lock and sees the latest
 * committed row, so successive upserts of a row (from any gateway) get
 * strictly increasing versions in the order they commit. updated_at is thus
 * "now" except when that would not move it forward, by at most a few µs.
 *
 * The fast path: COPY. Most groups hold only new spans, and for new rows
 * the upsert does more work in PostgreSQL than COPY does (measured with the
 * bench workload, 30k spans, Agenta's indexes, CPU of the whole cluster per
 * span: COPY from the gateway 242-302 µs, the upsert 287-373 µs, psql COPY
 * 239-285 µs, in pairs run back to back on a shared 2-core VM). So a group
 * is first sent as `COPY spans FROM STDIN; SELECT now()` in one implicit
 * transaction: a new row's created_at is the transaction's start (the
 * column's default), its version created_at, its created_by_id ours. When
 * every row was new that is exactly what the upsert would have stored and
 * returned; copy_check_sql makes sure of the table (the default, no
 * triggers, rules or row-level security) once, before the first group. When
 * a row exists already the COPY fails with 23505 and commits nothing: the
 * range is re-run as the upsert, and the next groups skip COPY
 * (COPY_PENALTY_*), since re-sent spans tend to come in runs. When the COPY
 * fails on bad data, the upsert would fail alike: the range is bisected at
 * once (by upserts), as below.
 *
 * Duplicates: ON CONFLICT cannot touch the same row twice in one statement
 * ("command cannot affect row a second time"), so a group is deduplicated by
 * (project_id, trace_id, span_id) first: the later occurrence wins and every
 * occurrence gets the row's returned values.
 *
 * Statements. A group's spans, in submission order, are written in chunks
 * of at most opts.max_batch_spans spans (and opts.max_statement_bytes of
 * parameter), so one huge request never makes a statement PostgreSQL cannot
 * take (a jsonb value stops at 256 MiB, a parameter at 1 GiB). A group
 * within the bounds is one statement, one transaction.
 *
 * Poison isolation by bisection: a chunk that fails with SG_EPOISON is
 * halved and each half re-run; a half that fails is halved again, down to
 * single spans, and only a span that fails alone is rejected. When the left
 * half of a failed range succeeds, the right half is split at once without
 * being run whole (the failure must be in it, or it was a conflict between
 * the halves: either way its halves are tested, and no span is ever
 * rejected without failing alone). So k bad spans among n cost O(k log n)
 * statements, not n. The ranges to run are an explicit stack (no
 * recursion); they run one at a time, in order, so a span sent twice is
 * still written last by its later occurrence. Nothing is retried after a
 * non-poison failure: every submission not yet answered gets it.
 */
#include "pgsink.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "hash.h"
#include "json_nest.h"

#define REASON_MAX 240

static const char upsert_sql[] =
    "INSERT INTO spans AS x (project_id, created_by_id, trace_id, span_id, parent_id,"
    " trace_type, span_type, span_kind, span_name, start_time, end_time, status_code,"
    " status_message, attributes, \"references\", links, hashes, events,"
    " session_id, user_id, agent_id)\n"
    "SELECT r.p, r.u, r.t, r.s, r.pa, r.tt, r.st, r.k, r.n, r.b, r.e, r.sc, r.sm,"
    " r.a, r.rf, r.l, r.h, r.ev, r.si, r.ui, r.ag\n"
    "FROM jsonb_to_recordset($1::jsonb) AS r(p uuid, u uuid, t uuid, s uuid, pa uuid,"
    " tt tracetype, st spantype, k otelspankind, n varchar, b timestamptz, e timestamptz,"
    " sc otelstatuscode, sm varchar, a jsonb, rf jsonb, l jsonb, h jsonb, ev jsonb,"
    " si varchar, ui varchar, ag varchar)\n"
    "ON CONFLICT (project_id, trace_id, span_id) DO UPDATE SET"
    " parent_id = EXCLUDED.parent_id, trace_type = EXCLUDED.trace_type,"
    " span_type = EXCLUDED.span_type, span_kind = EXCLUDED.span_kind,"
    " span_name = EXCLUDED.span_name, start_time = EXCLUDED.start_time,"
    " end_time = EXCLUDED.end_time, status_code = EXCLUDED.status_code,"
    " status_message = EXCLUDED.status_message, attributes = EXCLUDED.attributes,"
    " \"references\" = EXCLUDED.\"references\", links = EXCLUDED.links,"
    " hashes = EXCLUDED.hashes, events = EXCLUDED.events,"
    " session_id = EXCLUDED.session_id, user_id = EXCLUDED.user_id,"
    " agent_id = EXCLUDED.agent_id,"
    " deleted_at = EXCLUDED.deleted_at, deleted_by_id = EXCLUDED.deleted_by_id,"
    " updated_by_id = EXCLUDED.created_by_id,"
    " updated_at = greatest(now(), coalesce(x.updated_at, x.created_at) + interval '1 microsecond')\n"
    "RETURNING x.project_id, x.trace_id, x.span_id,"
    " (extract(epoch FROM x.created_at) * 1000000)::int8,"
    " (extract(epoch FROM x.updated_at) * 1000000)::int8,"
    " x.created_by_id, x.updated_by_id";

/* The fast path: new rows go in by COPY, and the transaction's start time is
 * their created_at (the column's default, checked by copy_check_sql). */
static const char copy_sql[] =
    "COPY spans (project_id, created_by_id, trace_id, span_id, parent_id,"
    " trace_type, span_type, span_kind, span_name, start_time, end_time, status_code,"
    " status_message, attributes, \"references\", links, hashes, events,"
    " session_id, user_id, agent_id) FROM STDIN;\n"
    "SELECT (extract(epoch FROM now()) * 1000000)::int8";

/* Whether COPY stores what the upsert would for a new row and what
 * copy_sql returns is true: created_at defaults to the transaction's start
 * (Agenta's CURRENT_TIMESTAMP), the columns the upsert leaves out of a new
 * row have no default, and nothing rewrites rows behind COPY's back or
 * refuses it (triggers, rules, row-level security). No row (no table):
 * not known yet. */
static const char copy_check_sql[] =
    "SELECT coalesce((SELECT pg_get_expr(d.adbin, d.adrelid) IN ('CURRENT_TIMESTAMP', 'now()')"
    "                 FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
    "                 WHERE d.adrelid = c.oid AND a.attname = 'created_at'), false)"
    " AND NOT EXISTS (SELECT 1 FROM pg_attrdef d JOIN pg_attribute a"
    "                 ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE d.adrelid = c.oid"
    "                 AND a.attname IN ('updated_at', 'updated_by_id', 'deleted_at', 'deleted_by_id'))"
    " AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal)"
    " AND NOT EXISTS (SELECT 1 FROM pg_rewrite r WHERE r.ev_class = c.oid)"
    " AND NOT c.relrowsecurity AND c.relkind IN ('r', 'p')"
    " FROM pg_class c WHERE c.oid = to_regclass('spans')";

enum { COPY_UNKNOWN = 0, COPY_CHECKING, COPY_ON, COPY_OFF };

/* Statement buffers kept for reuse, and the most each may hold. */
#define SPARE_BUFS 2
#define SPARE_MAX_BYTES ((size_t)8 << 20)

/* Groups written by upsert after a COPY met an existing row (re-sent spans
 * tend to come in runs): the first penalty, doubling while COPYs keep
 * conflicting, up to the last; a COPY that succeeds resets it. */
#define COPY_PENALTY_MIN 8
#define COPY_PENALTY_MAX 1024

typedef struct sub_s {
  struct sub_s *next;
  uint8_t project[16];
  uint8_t user[16];
  sg_span_batch_t *batch;
  sg_pgsink_cb cb;
  void *arg;
  int status;
  size_t jidx;             /* index in job->subs */
  size_t pending;          /* spans neither stored nor rejected yet */
  char **reason;           /* per span, set when a span is rejected alone */
  char why[300];           /* a deferred failure's cause, or "" */
} sub_t;

typedef struct {
  sub_t *sub;
  size_t idx;              /* span index in sub->batch */
  size_t row;
} member_t;

typedef struct {
  const uint8_t *project, *user;
  const sg_span_t *span;   /* the occurrence that wins */
  int64_t created_us, updated_us;
  uint8_t created_by[16], updated_by[16];
  int has_cb, has_ub;
  int got;
} row_t;

/* A run of job->all to write with one statement. */
typedef struct {
  size_t lo, hi;
  unsigned left : 1;       /* the left half of a range that failed on poison */
  unsigned suspect : 1;    /* its left sibling succeeded: split without running */
  unsigned upsert : 1;     /* its COPY met an existing row: upsert it */
} range_t;

typedef struct job_s {
  sg_pgsink_t *sink;
  struct job_s *parked;    /* next in the sink's list of jobs waiting for a slot */
  sub_t **subs;            /* NULL once answered */
  size_t nsubs;
  size_t alive;            /* submissions not answered yet */
  member_t *all;           /* every span of the group, in order (row unused) */
  size_t nall;
  range_t *work;           /* stack of ranges still to run; the top runs next */
  size_t nwork, capwork;
  range_t cur;             /* the range of the statement in flight */
  int isolating;           /* a statement failed on poison once */
  int copy;                /* the group may use COPY */
  int copying;             /* the statement in flight is a COPY */
  member_t *m;             /* the members of the statement in flight */
  size_t nm;
  row_t *rows;
  size_t nrows;
  uint32_t *slots;         /* open addressing: row index + 1, 0 = empty */
  size_t nslots;
  sg_buf_t param;
  const char *values[1];
} job_t;

struct sg_pgsink_s {
  const char *errmsg;             /* during an answer's callback: its cause */
  uv_loop_t *loop;
  sg_pg_pool_t *pool;
  sg_pgsink_opts_t opts;
  sub_t *pend_head, *pend_tail;   /* waiting for the window to end */
  size_t pend_subs, pend_spans;
  sub_t *done_head, *done_tail;   /* answered from the kick timer */
  uv_timer_t window;
  uv_timer_t kick;
  int timer_running;
  int copy_mode;                  /* COPY_*: may new rows go in by COPY */
  int flush_waiting;              /* a flush waits for the COPY check */
  unsigned copy_skip;             /* groups left to upsert (COPY_PENALTY_*) */
  unsigned copy_penalty;          /* the last penalty, 0 after a COPY succeeded */
  int jobs;                       /* in flight (the COPY check counts as one) */
  /* Statements handed to the pool and not answered yet, at most
   * max_sending: a job builds its next statement only when it may send it,
   * the others wait in the parked list, unbuilt, so the statements' data in
   * memory stay bounded (2 x pool size x commit_max_spans rows). */
  int sending, max_sending;
  struct job_s *park_head, *park_tail;
  /* Statement buffers of finished jobs, kept with their pages for the next
   * (growing one from nothing was ~15% of the gateway's CPU: copies of
   * every doubling and page faults on fresh memory). */
  sg_buf_t spare[SPARE_BUFS];
  int nspare;
  int open_handles;
  int closing;
  sg_pgsink_stats_t stats;
};

static void job_send(job_t *job);
static void flush(sg_pgsink_t *s);

/* Whether a group formed now would only wait: every slot is taken, or
 * groups formed earlier are parked. */
static int saturated(const sg_pgsink_t *s) { return s->sending >= s->max_sending || s->park_head != NULL; }

/* ---- completion ------------------------------------------------------------- */

static void maybe_free(sg_pgsink_t *s) {
  if (!s->closing || s->open_handles != 0 || s->jobs != 0) return;
  while (s->nspare > 0) sg_buf_free(&s->spare[--s->nspare]);
  free(s);
}

/* A job's statement buffer goes back to the sink (emptied), or is freed
 * when the sink keeps enough or it grew too big to keep. */
static void param_release(sg_pgsink_t *s, sg_buf_t *b) {
  if (b->data && !s->closing && s->nspare < SPARE_BUFS && b->cap <= SPARE_MAX_BYTES) {
    sg_buf_reset(b);
    s->spare[s->nspare++] = *b;
    *b = (sg_buf_t)SG_BUF_INIT;
    return;
  }
  sg_buf_free(b);
}

static const char *reason_at(const void *reasons, size_t i) { return ((char *const *)reasons)[i]; }

/* Removes the spans rejected alone (keeping the order of the others), then
 * answers the submission. */
static void sub_answer(sg_pgsink_t *s, sub_t *sub, int status) {
  sg_span_batch_t *b = sub->batch;
  if (sub->reason) {
    size_t n = b->n;
    s->stats.spans_rejected += sg_span_batch_drop(b, reason_at, sub->reason);
    for (size_t i = 0; i < n; i++) free(sub->reason[i]);
    free(sub->reason);
    sub->reason = NULL;
  }
  if (status == 0) s->stats.spans_stored += b->n;
  s->stats.submissions++;
  sub->cb(sub->arg, status, b);
  free(sub);
}

static void kick_cb(uv_timer_t *t) {
  sg_pgsink_t *s = t->data;
  sub_t *sub;
  while ((sub = s->done_head) != NULL) {
    s->done_head = sub->next;
    if (s->done_head == NULL) s->done_tail = NULL;
    s->errmsg = sub->status && sub->why[0] ? sub->why : NULL;
    sub_answer(s, sub, sub->status);
    s->errmsg = NULL;
  }
}

/* Answer later, from the loop (used where the caller may be inside submit). */
static void sub_defer(sg_pgsink_t *s, sub_t *sub, int status, const char *why) {
  sub->status = status;
  snprintf(sub->why, sizeof sub->why, "%s", why ? why : "");
  sub->next = NULL;
  if (s->done_tail) s->done_tail->next = sub;
  else s->done_head = sub;
  s->done_tail = sub;
  if (!s->closing) uv_timer_start(&s->kick, kick_cb, 0, 0);
}

/* Releases what a statement was built in (a parked job keeps only its
 * members). */
static void job_unbuild(job_t *job) {
  free(job->m);
  free(job->rows);
  free(job->slots);
  job->m = NULL;
  job->rows = NULL;
  job->slots = NULL;
  job->nm = job->nrows = job->nslots = 0;
  param_release(job->sink, &job->param);
}

static void job_free(job_t *job) {
  sg_pgsink_t *s = job->sink;
  free(job->subs);
  free(job->all);
  free(job->work);
  free(job->m);
  free(job->rows);
  free(job->slots);
  param_release(s, &job->param);
  free(job);
  s->jobs--;
  maybe_free(s);
}

/* ---- building the statement -------------------------------------------------- */

/* Keyed (hash.h): trace and span ids are the client's to choose. */
static uint64_t key_hash(const uint8_t *p, const uint8_t *t, const uint8_t *sp) {
  uint8_t k[48];
  memcpy(k, p, 16);
  memcpy(k + 16, t, 16);
  memcpy(k + 32, sp, 16);
  return sg_hash(k, sizeof k);
}

/* Slot for the key: either holding its row or the empty slot to use. */
static uint32_t *row_slot(job_t *job, const uint8_t *p, const uint8_t *t, const uint8_t *sp) {
  size_t mask = job->nslots - 1, i = (size_t)key_hash(p, t, sp) & mask;
  for (;; i = (i + 1) & mask) {
    uint32_t v = job->slots[i];
    if (v == 0) return &job->slots[i];
    const row_t *r = &job->rows[v - 1];
    if (!memcmp(r->project, p, 16) && !memcmp(r->span->trace_id, t, 16) &&
        !memcmp(r->span->span_id, sp, 16))
      return &job->slots[i];
  }
}

static int add_member(job_t *job, sub_t *sub, size_t idx) {
  const sg_span_t *sp = &sub->batch->spans[idx];
  uint32_t *slot = row_slot(job, sub->project, sp->trace_id, sp->span_id);
  if (*slot == 0) {
    row_t *r = &job->rows[job->nrows++];
    memset(r, 0, sizeof *r);
    r->project = sub->project;
    *slot = (uint32_t)job->nrows;
  }
  row_t *r = &job->rows[*slot - 1];
  r->span = sp; /* the later occurrence wins */
  r->user = sub->user;
  job->m[job->nm++] = (member_t){sub, idx, *slot - 1};
  return 0;
}


/* ,"key": — keys are short literals without anything to escape. */
static int put_key(sg_buf_t *b, const char *key) {
  size_t n = strlen(key);
  if (sg_buf_reserve(b, n + 4) != 0) return SG_ENOMEM;
  char *p = b->data + b->len;
  *p++ = ',';
  *p++ = '"';
  memcpy(p, key, n);
  p += n;
  *p++ = '"';
  *p++ = ':';
  b->len += n + 4;
  b->data[b->len] = '\0';
  return 0;
}

static int put_uuid(sg_buf_t *b, const char *key, const uint8_t id[16]) {
  char u[38];
  u[0] = '"';
  sg_uuid_format(id, u + 1);
  u[37] = '"';
  int rc = put_key(b, key);
  return rc ? rc : sg_buf_append(b, u, 38);
}

static int put_str(sg_buf_t *b, const char *key, const char *v) {
  if (v == NULL) return 0; /* absent key = SQL NULL */
  int rc = put_key(b, key);
  if (rc == 0) rc = sg_buf_putc(b, '"');
  if (rc == 0) rc = sg_buf_json_escape(b, v, strlen(v));
  if (rc == 0) rc = sg_buf_putc(b, '"');
  return rc;
}

static int put_json(sg_buf_t *b, const char *key, const json_t *v) {
  if (v == NULL || json_is_null(v)) return 0;
  int rc = put_key(b, key);
  if (rc == 0) rc = sg_json_dump(v, 0, b);
  return rc;
}

/* The attributes column: nested and with the resource when the transform
 * asked for it (json_nest.h). */
static int put_attributes(sg_buf_t *b, const sg_span_t *sp) {
  const json_t *res = (sp->nest_attributes & SG_SPAN_NEST_RESOURCE) ? sp->resource : NULL;
  if ((sp->attributes == NULL || json_is_null(sp->attributes)) && res == NULL) return 0;
  const char *text;
  size_t len;
  int rc = sg_span_attributes_text(sp, &text, &len);
  if (rc == 0) rc = put_key(b, "a");
  if (rc == 0) rc = sg_buf_append(b, text, len);
  return rc;
}

static int put_row(sg_buf_t *b, const row_t *r) {
  const sg_span_t *sp = r->span;
  char t1[32], t2[32];
  const char *kind = sg_span_kind_label(sp->span_kind);
  const char *code = sg_status_code_label(sp->status_code);
  int rc = sg_buf_puts(b, "{\"_\":0");
  if (rc == 0) rc = put_uuid(b, "p", r->project);
  if (rc == 0) rc = put_uuid(b, "u", r->user);
  if (rc == 0) rc = put_uuid(b, "t", sp->trace_id);
  if (rc == 0) rc = put_uuid(b, "s", sp->span_id);
  if (rc == 0 && sp->has_parent) rc = put_uuid(b, "pa", sp->parent_id);
  if (rc == 0) rc = put_str(b, "tt", sg_trace_type_label(sp->trace_type));
  if (rc == 0) rc = put_str(b, "st", sg_span_type_label(sp->span_type));
  if (rc == 0) rc = put_str(b, "k", kind ? kind : sg_span_kind_label(SG_SPAN_KIND_UNSPECIFIED));
  if (rc == 0) rc = put_str(b, "n", sp->span_name ? sp->span_name : "");
  sg_time_format(sp->start_us, t1);
  sg_time_format(sp->end_us, t2);
  if (rc == 0) rc = put_str(b, "b", t1);
  if (rc == 0) rc = put_str(b, "e", t2);
  if (rc == 0) rc = put_str(b, "sc", code ? code : sg_status_code_label(SG_STATUS_CODE_UNSET));
  if (rc == 0) rc = put_str(b, "sm", sp->status_message);
  if (rc == 0) rc = put_attributes(b, sp);
  if (rc == 0) rc = put_json(b, "rf", sp->references);
  if (rc == 0) rc = put_json(b, "l", sp->links);
  if (rc == 0) rc = put_json(b, "h", sp->hashes);
  if (rc == 0) rc = put_json(b, "ev", sp->events);
  if (rc == 0) rc = put_str(b, "si", sp->session_id);
  if (rc == 0) rc = put_str(b, "ui", sp->user_id);
  if (rc == 0) rc = put_str(b, "ag", sp->agent_id);
  if (rc == 0) rc = sg_buf_putc(b, '}');
  return rc;
}

/* ---- COPY text ---------------------------------------------------------------
 * One line per row, columns separated by tabs, \N for NULL; inside a value
 * a backslash, tab, newline and carriage return are written \\ \t \n \r
 * (any other byte stands for itself). */

/* The runs without a backslash or a byte below 0x20 (sg_copy_plain_len)
 * go in whole: JSON text has long runs of them. */
static int copy_escape(sg_buf_t *b, const char *s, size_t n) {
  if (sg_buf_reserve(b, n) != 0) return SG_ENOMEM;
  while (n > 0) {
    size_t k = sg_copy_plain_len(s, n);
    if (sg_buf_append(b, s, k) != 0) return SG_ENOMEM;
    s += k;
    n -= k;
    if (n == 0) break;
    char e = *s == '\\' ? '\\' : *s == '\t' ? 't' : *s == '\n' ? 'n' : *s == '\r' ? 'r' : 0;
    char esc[2] = {'\\', e};
    int rc = e ? sg_buf_append(b, esc, 2) : sg_buf_append(b, s, 1);
    if (rc != 0) return SG_ENOMEM;
    s++;
    n--;
  }
  return 0;
}

static int copy_sep(sg_buf_t *b, char c) { return sg_buf_putc(b, c); }

static int copy_uuid(sg_buf_t *b, const uint8_t id[16]) {
  char u[38];
  sg_uuid_format(id, u);
  u[36] = '\t';
  return sg_buf_append(b, u, 37);
}

static int copy_null(sg_buf_t *b) { return sg_buf_append(b, "\\N\t", 3); }

static int copy_str(sg_buf_t *b, const char *v) {
  if (v == NULL) return copy_null(b);
  int rc = copy_escape(b, v, strlen(v));
  return rc ? rc : copy_sep(b, '\t');
}

static int copy_json(sg_buf_t *b, sg_buf_t *tmp, const json_t *v) {
  if (v == NULL || json_is_null(v)) return copy_null(b);
  sg_buf_reset(tmp);
  int rc = sg_json_dump(v, 0, tmp);
  if (rc == 0) rc = copy_escape(b, tmp->data, tmp->len);
  return rc ? rc : copy_sep(b, '\t');
}

/* The same columns as put_row, as a line of COPY text. */
static int copy_row(sg_buf_t *b, sg_buf_t *tmp, const row_t *r) {
  const sg_span_t *sp = r->span;
  char t[32];
  const char *kind = sg_span_kind_label(sp->span_kind);
  const char *code = sg_status_code_label(sp->status_code);
  int rc = copy_uuid(b, r->project);
  if (rc == 0) rc = copy_uuid(b, r->user);
  if (rc == 0) rc = copy_uuid(b, sp->trace_id);
  if (rc == 0) rc = copy_uuid(b, sp->span_id);
  if (rc == 0) rc = sp->has_parent ? copy_uuid(b, sp->parent_id) : copy_null(b);
  if (rc == 0) rc = copy_str(b, sg_trace_type_label(sp->trace_type));
  if (rc == 0) rc = copy_str(b, sg_span_type_label(sp->span_type));
  if (rc == 0) rc = copy_str(b, kind ? kind : sg_span_kind_label(SG_SPAN_KIND_UNSPECIFIED));
  if (rc == 0) rc = copy_str(b, sp->span_name ? sp->span_name : "");
  sg_time_format(sp->start_us, t);
  if (rc == 0) rc = copy_str(b, t);
  sg_time_format(sp->end_us, t);
  if (rc == 0) rc = copy_str(b, t);
  if (rc == 0) rc = copy_str(b, code ? code : sg_status_code_label(SG_STATUS_CODE_UNSET));
  if (rc == 0) rc = copy_str(b, sp->status_message);
  const json_t *res = (sp->nest_attributes & SG_SPAN_NEST_RESOURCE) ? sp->resource : NULL;
  if (rc == 0 && (sp->attributes == NULL || json_is_null(sp->attributes)) && res == NULL) {
    rc = copy_null(b);
  } else if (rc == 0) {
    const char *text;
    size_t len;
    rc = sg_span_attributes_text(sp, &text, &len);
    if (rc == 0) rc = copy_escape(b, text, len);
    if (rc == 0) rc = copy_sep(b, '\t');
  }
  if (rc == 0) rc = copy_json(b, tmp, sp->references);
  if (rc == 0) rc = copy_json(b, tmp, sp->links);
  if (rc == 0) rc = copy_json(b, tmp, sp->hashes);
  if (rc == 0) rc = copy_json(b, tmp, sp->events);
  if (rc == 0) rc = copy_str(b, sp->session_id);
  if (rc == 0) rc = copy_str(b, sp->user_id);
  if (rc == 0) rc = copy_str(b, sp->agent_id);
  if (rc == 0) b->data[b->len - 1] = '\n'; /* the last tab ends the line */
  return rc;
}

/* Fills job->m/rows/param with the spans of job->cur: COPY text when
 * job->copying, else the upsert's jsonb parameter. 0 or SG_ENOMEM. */
static int job_build(job_t *job) {
  size_t total = job->cur.hi - job->cur.lo;
  job->nm = job->nrows = 0;
  sg_pgsink_t *s = job->sink;
  if (job->param.data == NULL && s->nspare > 0) job->param = s->spare[--s->nspare];
  sg_buf_reset(&job->param);
  free(job->m);
  free(job->rows);
  free(job->slots);
  job->nslots = 16;
  while (job->nslots < total * 2) job->nslots *= 2;
  job->m = malloc((total ? total : 1) * sizeof *job->m);
  job->rows = malloc((total ? total : 1) * sizeof *job->rows);
  job->slots = calloc(job->nslots, sizeof *job->slots);
  if (job->m == NULL || job->rows == NULL || job->slots == NULL) return SG_ENOMEM;
  for (size_t i = job->cur.lo; i < job->cur.hi; i++) add_member(job, job->all[i].sub, job->all[i].idx);
  if (job->copying) {
    sg_buf_t tmp = SG_BUF_INIT;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < job->nrows; i++) rc = copy_row(&job->param, &tmp, &job->rows[i]);
    sg_buf_free(&tmp);
    return rc;
  }
  int rc = sg_buf_putc(&job->param, '[');
  for (size_t i = 0; rc == 0 && i < job->nrows; i++) {
    if (i) rc = sg_buf_putc(&job->param, ',');
    if (rc == 0) rc = put_row(&job->param, &job->rows[i]);
  }
  if (rc == 0) rc = sg_buf_putc(&job->param, ']');
  job->values[0] = job->param.data;
  return rc;
}

/* ---- results ---------------------------------------------------------------- */

static int parse_i64(const char *s, int64_t *out) {
  char *end;
  long long v = strtoll(s, &end, 10);
  if (end == s || *end) return -1;
  *out = v;
  return 0;
}

/* Fills the members' spans from their rows. SG_EIO when a row got nothing. */
static int job_fill(job_t *job) {
  for (size_t i = 0; i < job->nm; i++) {
    const row_t *r = &job->rows[job->m[i].row];
    if (!r->got) return SG_EIO;
    sg_span_t *span = &job->m[i].sub->batch->spans[job->m[i].idx];
    span->created_at_us = r->created_us;
    span->updated_at_us = r->updated_us;
    span->version = r->updated_us ? r->updated_us : r->created_us;
    memcpy(span->created_by_id, r->created_by, 16);
    memcpy(span->updated_by_id, r->updated_by, 16);
    span->has_created_by = r->has_cb;
    span->has_updated_by = r->has_ub;
  }
  return 0;
}

/* A COPY committed: every row is new, created at the transaction's start
 * (the one value the statement returns), by its submitter, never updated. */
static int job_apply_copy(job_t *job, const PGresult *res) {
  int64_t created;
  if (res == NULL || PQntuples(res) != 1 || PQnfields(res) != 1 || PQgetisnull(res, 0, 0) ||
      parse_i64(PQgetvalue(res, 0, 0), &created))
    return SG_EIO;
  for (size_t i = 0; i < job->nrows; i++) {
    row_t *r = &job->rows[i];
    r->created_us = created;
    r->updated_us = 0;
    memcpy(r->created_by, r->user, 16);
    r->has_cb = 1;
    r->has_ub = 0;
    r->got = 1;
  }
  return job_fill(job);
}

/* Matches the RETURNING rows to ours by key and fills the members' spans. */
static int job_apply(job_t *job, const PGresult *res) {
  int n = PQntuples(res);
  for (int i = 0; i < n; i++) {
    uint8_t p[16], t[16], sp[16];
    if (sg_id_parse(PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0), p) ||
        sg_id_parse(PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1), t) ||
        sg_id_parse(PQgetvalue(res, i, 2), (size_t)PQgetlength(res, i, 2), sp))
      return SG_EIO;
    uint32_t v = *row_slot(job, p, t, sp);
    if (v == 0) return SG_EIO;
    row_t *r = &job->rows[v - 1];
    if (parse_i64(PQgetvalue(res, i, 3), &r->created_us)) return SG_EIO;
    r->updated_us = 0;
    if (!PQgetisnull(res, i, 4) && parse_i64(PQgetvalue(res, i, 4), &r->updated_us)) return SG_EIO;
    r->has_cb = !PQgetisnull(res, i, 5) &&
                sg_id_parse(PQgetvalue(res, i, 5), (size_t)PQgetlength(res, i, 5), r->created_by) == 0;
    r->has_ub = !PQgetisnull(res, i, 6) &&
                sg_id_parse(PQgetvalue(res, i, 6), (size_t)PQgetlength(res, i, 6), r->updated_by) == 0;
    r->got = 1;
  }
  return job_fill(job);
}

/* A client-facing reason for a span PostgreSQL refused. */
static char *span_reason(const char *errmsg) {
  char *out = malloc(REASON_MAX + 1);
  if (out == NULL) return NULL;
  if (errmsg && strstr(errmsg, "ux_spans_root_per_trace")) {
    snprintf(out, REASON_MAX + 1,
             "the trace already has a root span (no parent_id) with another span_id; "
             "Agenta stores one root span per trace");
  } else {
    snprintf(out, REASON_MAX + 1, "rejected by PostgreSQL: %s", errmsg ? errmsg : "unknown error");
  }
  return out;
}

static int work_push(job_t *job, range_t r) {
  if (job->nwork == job->capwork) {
    size_t cap = job->capwork ? job->capwork * 2 : 16;
    range_t *w = realloc(job->work, cap * sizeof *w);
    if (w == NULL) return SG_ENOMEM;
    job->work = w;
    job->capwork = cap;
  }
  job->work[job->nwork++] = r;
  return 0;
}

/* Answers one submission of the job now (from a statement's callback). */
static void job_answer(job_t *job, sub_t *sub, int status, const char *errmsg) {
  sg_pgsink_t *s = job->sink;
  job->subs[sub->jidx] = NULL;
  job->alive--;
  s->errmsg = status ? errmsg : NULL;
  sub_answer(s, sub, status);
  s->errmsg = NULL;
}

/* Every submission not answered yet gets err, now or (deferred: we may be
 * inside sg_pgsink_submit) from the loop; the remaining work is dropped. */
static void job_fail_rest(job_t *job, int err, const char *errmsg, int deferred) {
  for (size_t i = 0; i < job->nsubs; i++) {
    sub_t *sub = job->subs[i];
    if (sub == NULL) continue;
    if (deferred) {
      job->subs[i] = NULL;
      job->alive--;
      sub_defer(job->sink, sub, err, errmsg);
    } else {
      job_answer(job, sub, err, errmsg);
    }
  }
  job->nwork = 0;
}

/* One span of the range is settled (stored or rejected): its submission is
 * answered when it was the last. */
static void span_settled(job_t *job, sub_t *sub) {
  if (--sub->pending == 0) job_answer(job, sub, 0, NULL);
}

/* Splits a range that failed (or must hold a failure) into its halves; the
 * left one runs first. */
static int bisect(job_t *job, range_t r) {
  size_t mid = r.lo + (r.hi - r.lo) / 2;
  range_t right = {mid, r.hi, 0, 0, 0}, left = {r.lo, mid, 1, 0, 0};
  int rc = work_push(job, right);
  return rc ? rc : work_push(job, left);
}

/* A COPY failed for a reason other than the connection or the server's
 * state. A key that exists already (23505: a re-sent span, or a second
 * root) needs the upsert: the range is re-run as one, and the next groups
 * skip COPY for a while. Bad data (22, other 23, 54) would fail the upsert
 * alike, so the range is bisected at once, by upserts. Anything else is
 * COPY's own trouble (a permission, say): the range is upserted and COPY is
 * not tried again. 0, or SG_ENOMEM. */
static int copy_failed(job_t *job, range_t r, int err, const char *errmsg) {
  sg_pgsink_t *s = job->sink;
  int conflict = errmsg && !strncmp(errmsg, "23505", 5);
  if (err == SG_EPOISON && !conflict) {
    if (!job->isolating) {
      job->isolating = 1;
      s->stats.isolations++;
    }
    return r.hi - r.lo > 1 ? bisect(job, r) : work_push(job, (range_t){r.lo, r.hi, 0, 0, 1});
  }
  s->stats.copy_fallbacks++;
  if (conflict) {
    s->copy_penalty = s->copy_penalty ? s->copy_penalty * 2 : COPY_PENALTY_MIN;
    if (s->copy_penalty > COPY_PENALTY_MAX) s->copy_penalty = COPY_PENALTY_MAX;
    s->copy_skip = s->copy_penalty;
  } else {
    s->copy_mode = COPY_OFF;
  }
  r.upsert = 1;
  return work_push(job, r);
}

static void park(job_t *job) {
  sg_pgsink_t *s = job->sink;
  job_unbuild(job);
  job->parked = NULL;
  if (s->park_tail) s->park_tail->parked = job;
  else s->park_head = job;
  s->park_tail = job;
}

/* Sends parked jobs' statements while there are free slots. */
static void unpark(sg_pgsink_t *s) {
  while (!s->closing && s->park_head && s->sending < s->max_sending) {
    job_t *job = s->park_head;
    s->park_head = job->parked;
    if (s->park_head == NULL) s->park_tail = NULL;
    job->parked = NULL;
    job_send(job);
  }
}

static void job_settle(job_t *job, range_t r, PGresult *res, int err, const char *errmsg);

static void job_result(void *arg, PGresult *res, int err, const char *errmsg) {
  job_t *job = arg;
  sg_pgsink_t *s = job->sink;
  s->sending--;
  s->jobs++; /* hold: the job may free itself (and a closing sink with it) */
  job_settle(job, job->cur, res, err, errmsg);
  /* Its next statement queues behind the jobs already waiting. */
  if (s->park_head && job->alive > 0 && !s->closing) park(job);
  else job_send(job);
  unpark(s);
  /* A group held back by flush: it goes now, unless its window runs. */
  if (s->pend_head && !s->timer_running && !s->closing && !saturated(s)) flush(s);
  s->jobs--;
  maybe_free(s);
}

/* What a statement's result means for the job's spans and its remaining
 * work. */
static void job_settle(job_t *job, range_t r, PGresult *res, int err, const char *errmsg) {
  sg_pgsink_t *s = job->sink;
  if (job->copying && (err == SG_EPOISON || err == SG_EIO)) {
    if (copy_failed(job, r, err, errmsg) != 0) job_fail_rest(job, SG_ENOMEM, "out of memory", 0);
    return;
  }
  if (err == 0) {
    err = job->copying ? job_apply_copy(job, res) : job_apply(job, res);
    if (err == 0 && job->copying) s->copy_penalty = 0;
  }
  if (err == 0) {
    /* A member's submission may be answered (and freed) by span_settled:
     * only once its last member here is counted, so no later m[] entry
     * refers to it. */
    if (r.left && job->nwork > 0) job->work[job->nwork - 1].suspect = 1;
    for (size_t i = 0; i < job->nm; i++) span_settled(job, job->m[i].sub);
  } else if (err == SG_EPOISON) {
    if (!job->isolating) {
      job->isolating = 1;
      s->stats.isolations++;
    }
    if (r.hi - r.lo > 1) {
      if (bisect(job, r) != 0) job_fail_rest(job, SG_ENOMEM, "out of memory", 0);
    } else {
      sub_t *sub = job->all[r.lo].sub;
      if (sub->reason == NULL) sub->reason = calloc(sub->batch->n, sizeof *sub->reason);
      char *why = sub->reason ? span_reason(errmsg) : NULL;
      if (why == NULL) {
        job_fail_rest(job, SG_ENOMEM, "out of memory", 0);
      } else {
        sub->reason[job->all[r.lo].idx] = why;
        span_settled(job, sub);
      }
    }
  } else {
    job_fail_rest(job, err, errmsg, 0);
  }
}

/* Pops the next range to run into job->cur and builds its statement:
 * ranges known to hold a failure are split without running, and a range
 * whose statement would exceed max_statement_bytes is cut in two. 0, 1 when
 * no work is left, or SG_ENOMEM. */
static int job_next(job_t *job) {
  const sg_pgsink_opts_t *o = &job->sink->opts;
  for (;;) {
    if (job->nwork == 0) return 1;
    range_t r = job->work[--job->nwork];
    if (r.suspect && r.hi - r.lo > 1) {
      int rc = bisect(job, r);
      if (rc) return rc;
      continue;
    }
    job->cur = r;
    job->copying = job->copy && !job->isolating && !r.upsert && job->sink->copy_mode == COPY_ON;
    for (;;) {
      int rc = job_build(job);
      if (rc) return rc;
      size_t n = job->cur.hi - job->cur.lo;
      if (job->param.len <= o->max_statement_bytes || n == 1) return 0;
      range_t rest = {job->cur.lo + n / 2, job->cur.hi, 0, 0, job->cur.upsert};
      if ((rc = work_push(job, rest)) != 0) return rc;
      job->cur.hi = rest.lo;
      job->cur.left = 0; /* its sibling is not on the stack any more */
    }
  }
}

/* Sends the job's next statement, or frees it when every submission is
 * answered. A failure to send answers the submissions still waiting,
 * deferred: this may run inside sg_pgsink_submit (a full group is flushed
 * at once). */
static void job_send(job_t *job) {
  sg_pgsink_t *s = job->sink;
  for (;;) {
    if (job->alive == 0) {
      job_free(job);
      return;
    }
    if (s->closing) { /* only reached from a statement's callback */
      job_fail_rest(job, SG_ECANCELED, "the PostgreSQL sink is closing", 0);
      continue;
    }
    if (s->sending >= s->max_sending) {
      park(job);
      return;
    }
    int rc = job_next(job);
    if (rc == 1) rc = SG_EIO; /* spans left without a range: cannot happen */
    if (rc == 0 && job->copying)
      rc = sg_pg_copy(s->pool, copy_sql, job->param.data, job->param.len, job_result, job);
    else if (rc == 0)
      rc = sg_pg_query(s->pool, upsert_sql, 1, job->values, NULL, NULL, job_result, job);
    if (rc == 0) {
      s->sending++;
      s->stats.statements++;
      if (job->copying) s->stats.copies++;
      return;
    }
    char why[300];
    if (rc == SG_EUNAVAIL)
      snprintf(why, sizeof why, "no PostgreSQL connection: %s", sg_pg_pool_last_error(s->pool));
    else
      snprintf(why, sizeof why, "PostgreSQL pool: %s", sg_strerror(rc));
    job_fail_rest(job, rc, why, 1);
  }
}

/* ---- grouping --------------------------------------------------------------- */

static void copy_checked(void *arg, PGresult *res, int err, const char *errmsg) {
  sg_pgsink_t *s = arg;
  (void)errmsg;
  s->jobs--;
  if (err == 0 && res && PQntuples(res) == 1)
    s->copy_mode = !strcmp(PQgetvalue(res, 0, 0), "t") ? COPY_ON : COPY_OFF;
  else
    s->copy_mode = COPY_UNKNOWN; /* no table yet, or no answer: ask again next time */
  if (s->flush_waiting && !s->closing) {
    s->flush_waiting = 0;
    flush(s);
  }
  maybe_free(s);
}

/* Before the first group: may it use COPY? The group waits for the answer
 * (one round trip, once), so every group is written the same way. 1 when
 * the check is under way, 0 when the group goes ahead now. */
static int copy_check(sg_pgsink_t *s) {
  if (s->copy_mode == COPY_CHECKING) return 1;
  if (s->copy_mode != COPY_UNKNOWN || s->opts.no_copy) return 0;
  if (sg_pg_query(s->pool, copy_check_sql, 0, NULL, NULL, NULL, copy_checked, s) != 0) return 0;
  s->copy_mode = COPY_CHECKING;
  s->jobs++;
  return 1;
}

static void flush(sg_pgsink_t *s) {
  if (s->pend_head == NULL) return;
  if (s->timer_running) {
    uv_timer_stop(&s->window);
    s->timer_running = 0;
  }
  /* PostgreSQL is busy with earlier groups: this one keeps growing until a
   * slot frees (job_result), so under load each statement takes what came
   * in while the one before it ran, not a window's worth. A full group
   * goes at once (it parks, unbuilt). */
  if (saturated(s) && s->pend_spans < s->opts.max_batch_spans && !s->closing) return;
  if (copy_check(s)) {
    s->flush_waiting = 1;
    return;
  }
  job_t *job = calloc(1, sizeof *job);
  sub_t **subs = calloc(s->pend_subs, sizeof *subs);
  if (job == NULL || subs == NULL) {
    free(job);
    free(subs);
    sub_t *sub = s->pend_head;
    s->pend_head = s->pend_tail = NULL;
    s->pend_subs = s->pend_spans = 0;
    while (sub) {
      sub_t *next = sub->next;
      sub_defer(s, sub, SG_ENOMEM, NULL);
      sub = next;
    }
    return;
  }
  size_t n = 0, nspans = s->pend_spans;
  for (sub_t *sub = s->pend_head; sub; sub = sub->next) subs[n++] = sub;
  s->pend_head = s->pend_tail = NULL;
  s->pend_subs = s->pend_spans = 0;
  job->sink = s;
  job->subs = subs;
  job->nsubs = n;
  if (s->copy_mode == COPY_ON && s->copy_skip > 0) s->copy_skip--;
  else job->copy = s->copy_mode == COPY_ON;
  s->jobs++;
  s->stats.groups++;
  if (n > s->stats.max_group_submissions) s->stats.max_group_submissions = n;
  job->all = malloc((nspans ? nspans : 1) * sizeof *job->all);
  int rc = job->all ? 0 : SG_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    sub_t *sub = subs[i];
    sub->jidx = i;
    sub->pending = sub->batch->n;
    if (sub->pending == 0) { /* nothing to write: answered OK */
      subs[i] = NULL;
      sub_defer(s, sub, 0, NULL);
      continue;
    }
    job->alive++;
    for (size_t k = 0; job->all && k < sub->batch->n; k++) job->all[job->nall++] = (member_t){sub, k, 0};
  }
  /* The chunks, pushed last first so the first runs first. */
  size_t max = s->opts.max_batch_spans, nchunks = (job->nall + max - 1) / max;
  for (size_t c = nchunks; rc == 0 && c-- > 0;) {
    range_t r = {c * max, (c + 1) * max < job->nall ? (c + 1) * max : job->nall, 0, 0, 0};
    rc = work_push(job, r);
  }
  if (rc) job_fail_rest(job, rc, NULL, 1);
  job_send(job);
}

static void window_cb(uv_timer_t *t) {
  sg_pgsink_t *s = t->data;
  s->timer_running = 0;
  flush(s);
}

sg_pgsink_t *sg_pgsink_new(uv_loop_t *loop, sg_pg_pool_t *pool, const sg_pgsink_opts_t *opts) {
  if (loop == NULL || pool == NULL) return NULL;
  sg_pgsink_t *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->loop = loop;
  s->pool = pool;
  if (opts) s->opts = *opts;
  if (s->opts.window_ms == 0) s->opts.window_ms = 2;
  if (s->opts.max_batch_spans == 0) s->opts.max_batch_spans = 2000;
  if (s->opts.max_statement_bytes == 0) s->opts.max_statement_bytes = (size_t)64 << 20;
  /* One waiting per main connection, and the spares' own. */
  const sg_pg_stats_t *ps = sg_pg_pool_stats(pool);
  s->max_sending = 2 * (ps->configured - ps->spares) + ps->spares;
  uv_timer_init(loop, &s->window);
  uv_timer_init(loop, &s->kick);
  s->window.data = s->kick.data = s;
  s->open_handles = 2;
  return s;
}

int sg_pgsink_submit_as(sg_pgsink_t *s, const uint8_t project_id[16], const uint8_t *user_id,
                        sg_span_batch_t *batch, sg_pgsink_cb cb, void *arg) {
  if (s == NULL || project_id == NULL || batch == NULL || cb == NULL) return SG_EINVAL;
  if (s->closing) return SG_ECANCELED;
  sub_t *sub = calloc(1, sizeof *sub);
  if (sub == NULL) return SG_ENOMEM;
  memcpy(sub->project, project_id, 16);
  memcpy(sub->user, user_id ? user_id : s->opts.created_by_id, 16);
  sub->batch = batch;
  sub->cb = cb;
  sub->arg = arg;
  if (s->pend_tail) s->pend_tail->next = sub;
  else s->pend_head = sub;
  s->pend_tail = sub;
  s->pend_subs++;
  s->pend_spans += batch->n;
  if (s->pend_spans >= s->opts.max_batch_spans || s->opts.window_ms < 0) {
    flush(s);
  } else if (!s->timer_running) {
    uv_timer_start(&s->window, window_cb, (uint64_t)s->opts.window_ms, 0);
    s->timer_running = 1;
  }
  return 0;
}

const sg_pgsink_stats_t *sg_pgsink_stats(const sg_pgsink_t *s) { return &s->stats; }

const char *sg_pgsink_errmsg(const sg_pgsink_t *s) { return s->errmsg; }

static void handle_closed(uv_handle_t *h) {
  sg_pgsink_t *s = h->data;
  s->open_handles--;
  maybe_free(s);
}

void sg_pgsink_close(sg_pgsink_t *s) {
  if (s == NULL || s->closing) return;
  s->closing = 1;
  s->jobs++; /* hold: callbacks below may not free us */
  sub_t *sub;
  while ((sub = s->pend_head) != NULL) {
    s->pend_head = sub->next;
    if (s->pend_head == NULL) s->pend_tail = NULL;
    sub_answer(s, sub, SG_ECANCELED);
  }
  s->pend_subs = s->pend_spans = 0;
  job_t *job;
  while ((job = s->park_head) != NULL) { /* never sent: answered now */
    s->park_head = job->parked;
    job_fail_rest(job, SG_ECANCELED, "the PostgreSQL sink is closing", 0);
    job_free(job);
  }
  s->park_tail = NULL;
  kick_cb(&s->kick); /* answer what was already decided */
  uv_close((uv_handle_t *)&s->window, handle_closed);
  uv_close((uv_handle_t *)&s->kick, handle_closed);
  s->jobs--;
  maybe_free(s);
}
