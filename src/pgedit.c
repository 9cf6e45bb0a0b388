/* pgedit.c - the trace delete's PostgreSQL statements (see pgedit.h).
 *
 * The delete is one statement: a data-modifying CTE deletes a chunk of the
 * trace's spans (RETURNING the whole rows), a second one records the
 * marker gap from what the first returned, and the outer SELECT renders the
 * rows as text, times as integer µs (extract(epoch ...) * 1e6 is numeric,
 * hence exact, since PostgreSQL 14). clock_timestamp() is read per row as
 * the outer query consumes it, i.e. after that row was deleted, so after
 * every update of it that committed before: the tombstone's version
 * (ch_rows.h) is the greater of it and the row's version + 1.
 */
#include "pgedit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "span.h"

#define US(x) "(extract(epoch FROM " x ") * 1000000)::int8"

/* The columns of the outer SELECT, in order. */
enum {
  C_TRACE, C_SPAN, C_PARENT, C_TRACE_TYPE, C_SPAN_TYPE, C_KIND, C_NAME, C_START, C_END, C_STATUS,
  C_MESSAGE, C_ATTRS, C_REFS, C_LINKS, C_HASHES, C_EVENTS, C_SESSION, C_USER, C_AGENT, C_CREATED,
  C_UPDATED, C_DELETED, C_CREATED_BY, C_UPDATED_BY, C_DELETED_BY, C_CLOCK, C_MARKER, C_NCOLS
};

static const char delete_sql[] =
    "WITH d AS (\n"
    "  DELETE FROM spans WHERE project_id = $1::uuid AND trace_id = $2::uuid AND span_id IN (\n"
    "    SELECT span_id FROM spans WHERE project_id = $1::uuid AND trace_id = $2::uuid LIMIT $3::int)\n"
    "  RETURNING *),\n"
    "g AS (\n"
    "  INSERT INTO spangate_ch_gaps (project_id, first_created_at, last_created_at, spans, reason)\n"
    "  SELECT $1::uuid, min(created_at), max(created_at), count(*),\n"
    "         'trace delete: tombstones not yet in the spool'\n"
    "  FROM d WHERE $4::bool HAVING count(*) > 0\n"
    "  RETURNING id)\n"
    "SELECT d.trace_id::text, d.span_id::text, d.parent_id::text, d.trace_type::text,"
    " d.span_type::text, d.span_kind::text, d.span_name, " US("d.start_time") ", " US("d.end_time") ","
    " d.status_code::text, d.status_message, d.attributes::text, d.\"references\"::text,"
    " d.links::text, d.hashes::text, d.events::text, d.session_id, d.user_id, d.agent_id,"
    " " US("d.created_at") ", " US("d.updated_at") ", " US("d.deleted_at") ","
    " d.created_by_id::text, d.updated_by_id::text, d.deleted_by_id::text,"
    " " US("clock_timestamp()") ", (SELECT id::text FROM g)\n"
    "FROM d";

typedef struct {
  char project[37], trace[37], limit[16], marker[8];
  const char *params[4];
  sg_pgedit_delete_cb cb;
  void *arg;
} del_t;

static int to_i64(const char *s, int64_t *out) {
  char *end;
  long long v = strtoll(s, &end, 10);
  if (end == s || *end) return SG_EINVAL;
  *out = v;
  return 0;
}

static void delete_cb(void *arg, PGresult *res, int err, const char *errmsg) {
  del_t *q = arg;
  sg_pgedit_deleted_t d;
  memset(&d, 0, sizeof d);
  d.err = err;
  d.errmsg = errmsg;
  if (err == 0 && res) {
    d.res = res;
    d.n = PQntuples(res);
    if (d.n > 0 && PQnfields(res) != C_NCOLS) { /* never: the statement is ours */
      d.err = SG_EIO;
      d.errmsg = "the delete statement returned an unexpected row shape";
      d.n = 0;
    }
    if (d.n > 0) {
      if (!PQgetisnull(res, 0, C_MARKER))
        snprintf(d.marker, sizeof d.marker, "%s", PQgetvalue(res, 0, C_MARKER));
      /* the latest clock of the chunk: every row was deleted before it */
      for (int i = 0; i < d.n; i++) {
        int64_t c;
        if (to_i64(PQgetvalue(res, i, C_CLOCK), &c) == 0 && c > d.clock_us) d.clock_us = c;
      }
    }
  }
  q->cb(q->arg, &d);
  free(q);
}

int sg_pgedit_delete_trace(sg_pg_pool_t *pool, const uint8_t project_id[16], const uint8_t trace_id[16],
                           int marker, sg_pgedit_delete_cb cb, void *arg) {
  del_t *q = calloc(1, sizeof *q);
  if (!q) return SG_ENOMEM;
  sg_uuid_format(project_id, q->project);
  sg_uuid_format(trace_id, q->trace);
  snprintf(q->limit, sizeof q->limit, "%d", SG_PGEDIT_DELETE_CHUNK);
  snprintf(q->marker, sizeof q->marker, "%s", marker ? "true" : "false");
  q->params[0] = q->project;
  q->params[1] = q->trace;
  q->params[2] = q->limit;
  q->params[3] = q->marker;
  q->cb = cb;
  q->arg = arg;
  int rc = sg_pg_query(pool, delete_sql, 4, q->params, NULL, NULL, delete_cb, q);
  if (rc != 0) free(q);
  return rc;
}

static sg_ch_text_t text_of(PGresult *res, int i, int c) {
  sg_ch_text_t t = {NULL, 0};
  if (!PQgetisnull(res, i, c)) {
    t.p = PQgetvalue(res, i, c);
    t.n = (size_t)PQgetlength(res, i, c);
  }
  return t;
}

/* A time column: µs, 0 for NULL where nullable. */
static int time_of(PGresult *res, int i, int c, int nullable, int64_t *out) {
  *out = 0;
  if (PQgetisnull(res, i, c)) return nullable ? 0 : SG_EINVAL;
  return to_i64(PQgetvalue(res, i, c), out);
}

int sg_pgedit_row(const sg_pgedit_deleted_t *d, int i, sg_ch_text_row_t *row) {
  PGresult *res = d->res;
  memset(row, 0, sizeof *row);
  if (!res || i < 0 || i >= d->n) return SG_EINVAL;
  row->trace_id = text_of(res, i, C_TRACE);
  row->span_id = text_of(res, i, C_SPAN);
  row->parent_id = text_of(res, i, C_PARENT);
  row->trace_type = text_of(res, i, C_TRACE_TYPE);
  row->span_type = text_of(res, i, C_SPAN_TYPE);
  row->span_kind = text_of(res, i, C_KIND);
  row->status_code = text_of(res, i, C_STATUS);
  row->span_name = text_of(res, i, C_NAME);
  row->status_message = text_of(res, i, C_MESSAGE);
  row->session_id = text_of(res, i, C_SESSION);
  row->user_id = text_of(res, i, C_USER);
  row->agent_id = text_of(res, i, C_AGENT);
  row->attributes = text_of(res, i, C_ATTRS);
  row->references = text_of(res, i, C_REFS);
  row->links = text_of(res, i, C_LINKS);
  row->hashes = text_of(res, i, C_HASHES);
  row->events = text_of(res, i, C_EVENTS);
  row->created_by_id = text_of(res, i, C_CREATED_BY);
  row->updated_by_id = text_of(res, i, C_UPDATED_BY);
  row->deleted_by_id = text_of(res, i, C_DELETED_BY);
  int rc = time_of(res, i, C_START, 0, &row->start_us);
  rc = rc ? rc : time_of(res, i, C_END, 0, &row->end_us);
  rc = rc ? rc : time_of(res, i, C_CREATED, 0, &row->created_at_us);
  rc = rc ? rc : time_of(res, i, C_UPDATED, 1, &row->updated_at_us);
  rc = rc ? rc : time_of(res, i, C_DELETED, 1, &row->deleted_at_us);
  if (rc) return rc;
  row->version = row->updated_at_us ? row->updated_at_us : row->created_at_us;
  return 0;
}

typedef struct {
  char id[24];
  const char *params[1];
} drop_t;

static void drop_cb(void *arg, PGresult *res, int err, const char *errmsg) {
  (void)res;
  (void)err;
  (void)errmsg; /* best effort (see pgedit.h) */
  free(arg);
}

void sg_pgedit_drop_marker(sg_pg_pool_t *pool, const char *marker) {
  if (!marker || !*marker) return;
  drop_t *q = calloc(1, sizeof *q);
  if (!q) return;
  snprintf(q->id, sizeof q->id, "%s", marker);
  q->params[0] = q->id;
  if (sg_pg_query(pool, "DELETE FROM spangate_ch_gaps WHERE id = $1::int8 AND repaired_at IS NULL", 1,
                  q->params, NULL, NULL, drop_cb, q) != 0)
    free(q);
}
