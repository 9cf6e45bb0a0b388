/* test_pgsink.c - group commit of spans into a real PostgreSQL
 * (SG_TEST_PG_URI; scripts/testenv.sh sets it). The tests run in a database
 * of their own, created with Agenta's schema (sg_pg_schema_apply) and
 * dropped at the end. Every test closes its loop and asserts nothing leaked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "err.h"
#include "pg.h"
#include "pg_schema.h"
#include "pgsink.h"
#include "span.h"

static const char *base_uri;
static char *uri;      /* the test database */
static char dbname[64];
static uint32_t seq = 1;

/* ---- helpers ---------------------------------------------------------------- */

typedef struct {
  int done;
  int status;
  sg_pgsink_t *sink;  /* set it to capture sg_pgsink_errmsg() into msg */
  char msg[256];
} ans_t;

static void on_answer(void *arg, int status, sg_span_batch_t *batch) {
  (void)batch;
  ans_t *a = arg;
  a->done++;
  a->status = status;
  if (a->sink) {
    const char *m = sg_pgsink_errmsg(a->sink);
    snprintf(a->msg, sizeof a->msg, "%s", m ? m : "");
  }
}

static void tick(uv_timer_t *t) { (void)t; }

static int run_until(uv_loop_t *loop, const int *flag, int timeout_ms) {
  uv_timer_t t;
  uv_timer_init(loop, &t);
  uv_timer_start(&t, tick, 10, 10);
  uint64_t deadline = uv_now(loop) + (uint64_t)timeout_ms;
  while (!*flag && uv_now(loop) < deadline) uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return *flag;
}

static void new_id(uint8_t id[16]) {
  uint32_t s = seq++;
  for (int i = 0; i < 16; i++) id[i] = (uint8_t)(rand() & 0xff);
  memcpy(id + 12, &s, 4); /* unique within the run even if rand repeats */
}

/* A span with every column set; parent NULL when parent is NULL. */
static sg_span_t *add_span(sg_span_batch_t *b, const uint8_t trace[16], const uint8_t *parent,
                           const char *name) {
  sg_span_t *s = sg_span_batch_push(b);
  assert_non_null(s);
  memcpy(s->trace_id, trace, 16);
  new_id(s->span_id);
  if (parent) {
    memcpy(s->parent_id, parent, 16);
    s->has_parent = 1;
  }
  s->trace_type = SG_TRACE_INVOCATION;
  s->span_type = SG_SPAN_TYPE_LLM;
  s->span_kind = SG_SPAN_KIND_CLIENT;
  s->status_code = SG_STATUS_CODE_OK;
  s->span_name = strdup(name);
  s->status_message = strdup("fine \"quoted\" \\ é");
  s->start_us = 1700000000123457LL;
  s->end_us = 1700000001999999LL;
  s->attributes = json_pack("{s:s, s:i, s:{s:f}}", "gen_ai.request.model", "gpt-4o", "n", 3, "ag",
                            "cost", 0.25);
  s->events = json_pack("[{s:s}]", "name", "exception");
  s->links = json_array();
  return s;
}

static char *query_value(const char *sql) {
  PGconn *c = PQconnectdb(uri);
  assert_int_equal(PQstatus(c), CONNECTION_OK);
  PGresult *r = PQexec(c, sql);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
  assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
  char *v = strdup(PQntuples(r) ? (PQgetisnull(r, 0, 0) ? "NULL" : PQgetvalue(r, 0, 0)) : "");
  PQclear(r);
  PQfinish(c);
  return v;
}

static char *span_value(const uint8_t project[16], const sg_span_t *s, const char *expr) {
  char p[37], t[37], sp[37], sql[1024];
  sg_uuid_format(project, p);
  sg_uuid_format(s->trace_id, t);
  sg_uuid_format(s->span_id, sp);
  snprintf(sql, sizeof sql,
           "SELECT %s FROM spans WHERE project_id = '%s' AND trace_id = '%s' AND span_id = '%s'",
           expr, p, t, sp);
  return query_value(sql);
}

static int64_t span_i64(const uint8_t project[16], const sg_span_t *s, const char *expr) {
  char *v = span_value(project, s, expr);
  int64_t n = strcmp(v, "NULL") ? strtoll(v, NULL, 10) : 0;
  free(v);
  return n;
}

static void assert_span_value(const uint8_t project[16], const sg_span_t *s, const char *expr,
                              const char *want) {
  char *v = span_value(project, s, expr);
  if (strcmp(v, want)) fprintf(stderr, "%s: got '%s', want '%s'\n", expr, v, want);
  assert_string_equal(v, want);
  free(v);
}

static int64_t count_rows(const uint8_t project[16]) {
  char p[37], sql[256];
  sg_uuid_format(project, p);
  snprintf(sql, sizeof sql, "SELECT count(*) FROM spans WHERE project_id = '%s'", p);
  char *v = query_value(sql);
  int64_t n = strtoll(v, NULL, 10);
  free(v);
  return n;
}

typedef struct {
  uv_loop_t loop;
  sg_pg_pool_t *pool;
  sg_pgsink_t *sink;
} env_t;

static void env_open_opts(env_t *e, const char *conninfo, const sg_pgsink_opts_t *so) {
  assert_int_equal(uv_loop_init(&e->loop), 0);
  sg_pg_pool_opts_t po = {.backoff_min_ms = 50, .backoff_max_ms = 200};
  e->pool = sg_pg_pool_new(&e->loop, conninfo, 2, &po);
  assert_non_null(e->pool);
  e->sink = sg_pgsink_new(&e->loop, e->pool, so);
  assert_non_null(e->sink);
}

static void env_open(env_t *e, const char *conninfo, int window_ms) {
  sg_pgsink_opts_t so = {.window_ms = window_ms};
  env_open_opts(e, conninfo, &so);
}

static void env_close(env_t *e) {
  sg_pgsink_close(e->sink);
  sg_pg_pool_close(e->pool);
  assert_int_equal(uv_run(&e->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&e->loop), 0);
}

/* ---- tests ------------------------------------------------------------------ */

/* Three submissions (two projects) within the window: one statement, one
 * transaction (same xmin), every span answered with the stored values. */
static void test_group_commit(void **state) {
  (void)state;
  env_t e;
  env_open(&e, uri, 50);
  uint8_t pa[16], pb[16], trace[3][16];
  new_id(pa);
  new_id(pb);
  sg_span_batch_t b[3];
  ans_t a[3] = {{0}};
  for (int i = 0; i < 3; i++) {
    sg_span_batch_init(&b[i]);
    new_id(trace[i]);
    sg_span_t *root = add_span(&b[i], trace[i], NULL, "root");
    add_span(&b[i], trace[i], root->span_id, "child");
    assert_int_equal(sg_pgsink_submit_as(e.sink, i == 1 ? pb : pa, NULL, &b[i], on_answer, &a[i]), 0);
  }
  assert_int_equal(a[0].done + a[1].done + a[2].done, 0);
  assert_true(run_until(&e.loop, &a[2].done, 10000));
  run_until(&e.loop, &a[0].done, 1000);
  run_until(&e.loop, &a[1].done, 1000);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(a[i].done, 1);
    assert_int_equal(a[i].status, 0);
    assert_int_equal(b[i].n, 2);
    assert_int_equal(b[i].rejected, 0);
  }
  const sg_pgsink_stats_t *st = sg_pgsink_stats(e.sink);
  assert_int_equal(st->groups, 1);
  assert_int_equal(st->statements, 1);
  assert_int_equal(st->copies, 1); /* new rows: COPY */
  assert_int_equal(st->max_group_submissions, 3);
  assert_int_equal(st->spans_stored, 6);
  /* One transaction: the same xmin on the rows of all three submissions. */
  char sql[512], p1[37], p2[37];
  sg_uuid_format(pa, p1);
  sg_uuid_format(pb, p2);
  snprintf(sql, sizeof sql,
           "SELECT count(DISTINCT xmin::text) || '/' || count(*) FROM spans WHERE project_id IN ('%s', '%s')",
           p1, p2);
  char *v = query_value(sql);
  assert_string_equal(v, "1/6");
  free(v);
  /* Returned values are the stored ones, to the µs; new rows: version = created_at. */
  for (int i = 0; i < 3; i++) {
    const uint8_t *p = i == 1 ? pb : pa;
    for (size_t k = 0; k < 2; k++) {
      const sg_span_t *s = &b[i].spans[k];
      assert_true(s->created_at_us > 0);
      assert_int_equal(s->created_at_us, span_i64(p, s, "(extract(epoch FROM created_at) * 1000000)::int8"));
      assert_int_equal(s->updated_at_us, 0);
      assert_int_equal(s->version, s->created_at_us);
    }
  }
  /* Every column as sent. */
  const sg_span_t *c = &b[0].spans[1];
  char parent[37];
  sg_uuid_format(b[0].spans[0].span_id, parent);
  assert_span_value(pa, c, "parent_id::text", parent);
  assert_span_value(pa, c, "trace_type::text || span_type || span_kind || status_code",
                    "INVOCATIONLLMSPAN_KIND_CLIENTSTATUS_CODE_OK");
  assert_span_value(pa, c, "span_name || '|' || status_message", "child|fine \"quoted\" \\ é");
  assert_span_value(pa, c, "attributes::text",
                    "{\"n\": 3, \"ag\": {\"cost\": 0.25}, \"gen_ai.request.model\": \"gpt-4o\"}");
  assert_span_value(pa, c, "events::text || links::text || coalesce(hashes::text, 'NULL')",
                    "[{\"name\": \"exception\"}][]NULL");
  assert_span_value(pa, c, "created_by_id::text", "00000000-0000-0000-0000-000000000000");
  assert_span_value(pa, &b[0].spans[0], "parent_id IS NULL", "t");
  for (int i = 0; i < 3; i++) sg_span_batch_free(&b[i]);
  env_close(&e);
}

/* Times survive exactly, at the edges of the accepted range too. */
static void test_exact_times(void **state) {
  (void)state;
  env_t e;
  env_open(&e, uri, 1);
  uint8_t p[16], t[16];
  new_id(p);
  new_id(t);
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  sg_span_t *s1 = add_span(&b, t, NULL, "edges");
  s1->start_us = SG_TIME_MIN_US + 1;
  s1->end_us = SG_TIME_MAX_US;
  sg_span_t *s2 = add_span(&b, t, s1->span_id, "pre-1970");
  s2->start_us = -1;          /* 1969-12-31T23:59:59.999999Z */
  s2->end_us = 1700000000000001LL;
  ans_t a = {0};
  assert_int_equal(sg_pgsink_submit_as(e.sink, p, NULL, &b, on_answer, &a), 0);
  assert_true(run_until(&e.loop, &a.done, 10000));
  assert_int_equal(a.status, 0);
  const char *st = "(extract(epoch FROM start_time) * 1000000)::int8";
  const char *en = "(extract(epoch FROM end_time) * 1000000)::int8";
  assert_int_equal(span_i64(p, &b.spans[0], st), SG_TIME_MIN_US + 1);
  assert_int_equal(span_i64(p, &b.spans[0], en), SG_TIME_MAX_US);
  assert_int_equal(span_i64(p, &b.spans[1], st), -1);
  assert_int_equal(span_i64(p, &b.spans[1], en), 1700000000000001LL);
  sg_span_batch_free(&b);
  env_close(&e);
}

static void submit_wait(env_t *e, const uint8_t p[16], sg_span_batch_t *b, int want) {
  ans_t a = {0};
  assert_int_equal(sg_pgsink_submit_as(e->sink, p, NULL, b, on_answer, &a), 0);
  assert_true(run_until(&e->loop, &a.done, 10000));
  assert_int_equal(a.status, want);
}

/* Re-sending updates every column but created_at/created_by_id, sets
 * updated_at, and the version grows strictly, even back to back. */
static void test_upsert(void **state) {
  (void)state;
  env_t e;
  env_open(&e, uri, 1);
  uint8_t p[16], t[16], user[16];
  new_id(p);
  new_id(t);
  new_id(user);
  sg_span_batch_t b1, b2;
  sg_span_batch_init(&b1);
  sg_span_batch_init(&b2);
  sg_span_t *s = add_span(&b1, t, NULL, "first");
  submit_wait(&e, p, &b1, 0);
  int64_t created = s->created_at_us, v1 = s->version;

  assert_int_equal(sg_span_copy(sg_span_batch_push(&b2), s), 0);
  sg_span_t *s2 = &b2.spans[0];
  free(s2->span_name);
  s2->span_name = strdup("second");
  json_object_set_new(s2->attributes, "n", json_integer(4));
  s2->status_code = SG_STATUS_CODE_ERROR;
  s2->span_type = SG_NULL_ENUM;
  ans_t a = {0};
  assert_int_equal(sg_pgsink_submit_as(e.sink, p, user, &b2, on_answer, &a), 0);
  assert_true(run_until(&e.loop, &a.done, 10000));
  assert_int_equal(a.status, 0);
  assert_int_equal(s2->created_at_us, created);
  assert_true(s2->updated_at_us > 0);
  assert_true(s2->version > v1);
  assert_int_equal(s2->version, s2->updated_at_us);
  assert_span_value(p, s2, "span_name || status_code || coalesce(span_type::text, 'NULL')",
                    "secondSTATUS_CODE_ERRORNULL");
  assert_span_value(p, s2, "attributes->>'n'", "4");
  char u[37];
  sg_uuid_format(user, u);
  assert_span_value(p, s2, "created_by_id::text", "00000000-0000-0000-0000-000000000000");
  assert_span_value(p, s2, "updated_by_id::text", u);
  assert_int_equal(span_i64(p, s2, "(extract(epoch FROM created_at) * 1000000)::int8"), created);
  assert_int_equal(span_i64(p, s2, "(extract(epoch FROM updated_at) * 1000000)::int8"), s2->updated_at_us);

  /* Ten more upserts of the same row, as fast as possible: strictly increasing. */
  int64_t last = s2->version;
  for (int i = 0; i < 10; i++) {
    submit_wait(&e, p, &b2, 0);
    assert_true(s2->version > last);
    assert_int_equal(s2->created_at_us, created);
    last = s2->version;
  }
  assert_int_equal(count_rows(p), 1);
  sg_span_batch_free(&b1);
  sg_span_batch_free(&b2);
  env_close(&e);
}

/* The same span twice in one group (two submissions, and inside one batch):
 * no "cannot affect row a second time"; the later one wins; all share the
 * returned values. */
static void test_duplicates(void **state) {
  (void)state;
  env_t e;
  env_open(&e, uri, 50);
  uint8_t p[16], t[16];
  new_id(p);
  new_id(t);
  sg_span_batch_t b1, b2;
  sg_span_batch_init(&b1);
  sg_span_batch_init(&b2);
  sg_span_t *s = add_span(&b1, t, NULL, "one");
  assert_int_equal(sg_span_copy(sg_span_batch_push(&b1), s), 0);
  free(b1.spans[1].span_name);
  b1.spans[1].span_name = strdup("two");
  assert_int_equal(sg_span_copy(sg_span_batch_push(&b2), &b1.spans[0]), 0);
  free(b2.spans[0].span_name);
  b2.spans[0].span_name = strdup("three");
  ans_t a1 = {0}, a2 = {0};
  assert_int_equal(sg_pgsink_submit_as(e.sink, p, NULL, &b1, on_answer, &a1), 0);
  assert_int_equal(sg_pgsink_submit_as(e.sink, p, NULL, &b2, on_answer, &a2), 0);
  assert_true(run_until(&e.loop, &a2.done, 10000));
  run_until(&e.loop, &a1.done, 1000);
  assert_int_equal(a1.status, 0);
  assert_int_equal(a2.status, 0);
  assert_int_equal(sg_pgsink_stats(e.sink)->statements, 1);
  assert_int_equal(count_rows(p), 1);
  assert_span_value(p, &b2.spans[0], "span_name", "three");
  assert_int_equal(b1.spans[0].version, b2.spans[0].version);
  assert_int_equal(b1.spans[1].version, b2.spans[0].version);
  assert_int_equal(b1.spans[0].created_at_us, b2.spans[0].created_at_us);
  sg_span_batch_free(&b1);
  sg_span_batch_free(&b2);
  env_close(&e);
}

/* A span PostgreSQL refuses (\u0000 in jsonb) shares a group with good
 * submissions: only it is rejected, with a reason; the rest is stored. */
static void test_poison_span(void **state) {
  (void)state;
  env_t e;
  env_open(&e, uri, 50);
  uint8_t p[16];
  new_id(p);
  sg_span_batch_t b[3];
  ans_t a[3] = {{0}};
  sg_span_t *bad = NULL;
  for (int i = 0; i < 3; i++) {
    uint8_t t[16];
    new_id(t);
    sg_span_batch_init(&b[i]);
    sg_span_t *root = add_span(&b[i], t, NULL, "root");
    for (int k = 0; k < 3; k++) {
      sg_span_t *s = add_span(&b[i], t, root->span_id, "child");
      if (i == 1 && k == 1) {
        json_object_set_new(s->attributes, "nul", json_stringn("a\0b", 3));
        bad = s;
      }
    }
  }
  char bad_sid[17];
  sg_hex16_format(bad->span_id, bad_sid);
  uint8_t bad_key[16];
  memcpy(bad_key, bad->span_id, 16);
  for (int i = 0; i < 3; i++) assert_int_equal(sg_pgsink_submit_as(e.sink, p, NULL, &b[i], on_answer, &a[i]), 0);
  for (int i = 0; i < 3; i++) assert_true(run_until(&e.loop, &a[i].done, 10000));
  for (int i = 0; i < 3; i++) assert_int_equal(a[i].status, 0);
  assert_int_equal(b[0].n, 4);
  assert_int_equal(b[2].n, 4);
  assert_int_equal(b[1].n, 3);
  assert_int_equal(b[1].rejected, 1);
  assert_non_null(strstr(b[1].reject_msg.data, bad_sid));
  assert_non_null(strstr(b[1].reject_msg.data, "22P05"));
  for (size_t k = 0; k < b[1].n; k++) {
    assert_memory_not_equal(b[1].spans[k].span_id, bad_key, 16);
    assert_true(b[1].spans[k].version > 0);
  }
  assert_int_equal(count_rows(p), 11);
  const sg_pgsink_stats_t *st = sg_pgsink_stats(e.sink);
  assert_int_equal(st->isolations, 1);
  assert_int_equal(st->spans_rejected, 1);
  assert_int_equal(st->spans_stored, 11);
  /* Bisection over the 12 spans, the bad one 7th: the group (its COPY);
   * [0,6) stored; [6,12) split unrun (its sibling succeeded); [6,9) fails;
   * [6,7) fails alone and is rejected; [7,9) and [9,12) stored. */
  assert_int_equal(st->statements, 6);
  assert_int_equal(st->copies, 1);
  assert_int_equal(st->copy_fallbacks, 0); /* bad data: bisected at once */
  for (int i = 0; i < 3; i++) sg_span_batch_free(&b[i]);
  env_close(&e);
}

/* Agenta's one root per trace: a second root with another span_id is
 * rejected alone, with a clear reason; its siblings are stored. */
static void test_second_root(void **state) {
  (void)state;
  env_t e;
  env_open(&e, uri, 1);
  uint8_t p[16], t[16];
  new_id(p);
  new_id(t);
  sg_span_batch_t b1, b2;
  sg_span_batch_init(&b1);
  sg_span_batch_init(&b2);
  sg_span_t *r1 = add_span(&b1, t, NULL, "root");
  submit_wait(&e, p, &b1, 0);
  add_span(&b2, t, r1->span_id, "child");
  add_span(&b2, t, NULL, "another root");
  add_span(&b2, t, r1->span_id, "child 2");
  submit_wait(&e, p, &b2, 0);
  assert_int_equal(b2.n, 2);
  assert_int_equal(b2.rejected, 1);
  assert_non_null(strstr(b2.reject_msg.data, "already has a root span"));
  assert_string_equal(b2.spans[0].span_name, "child");
  assert_string_equal(b2.spans[1].span_name, "child 2");
  assert_int_equal(count_rows(p), 3);
  /* Re-sending the stored root is an update, not a second root. */
  submit_wait(&e, p, &b1, 0);
  assert_int_equal(b1.rejected, 0);
  assert_true(b1.spans[0].updated_at_us > 0);
  sg_span_batch_free(&b1);
  sg_span_batch_free(&b2);
  env_close(&e);
}

/* PostgreSQL down: every submission of the group is answered SG_EUNAVAIL,
 * once, and nothing loops. */
static void test_unavailable(void **state) {
  (void)state;
  env_t e;
  env_open(&e, "postgresql://postgres@127.0.0.1:1/postgres", 5);
  uint8_t p[16], t[16];
  new_id(p);
  new_id(t);
  sg_span_batch_t b1, b2;
  sg_span_batch_init(&b1);
  sg_span_batch_init(&b2);
  add_span(&b1, t, NULL, "root");
  add_span(&b2, t, b1.spans[0].span_id, "child");
  ans_t a1 = {0}, a2 = {0};
  assert_int_equal(sg_pgsink_submit_as(e.sink, p, NULL, &b1, on_answer, &a1), 0);
  assert_int_equal(sg_pgsink_submit_as(e.sink, p, NULL, &b2, on_answer, &a2), 0);
  assert_true(run_until(&e.loop, &a2.done, 10000));
  run_until(&e.loop, &a1.done, 1000);
  assert_int_equal(a1.status, SG_EUNAVAIL);
  assert_int_equal(a2.status, SG_EUNAVAIL);
  /* Later submissions too (the pool refuses at once; answered from the loop). */
  ans_t a3 = {.sink = e.sink};
  assert_int_equal(sg_pgsink_submit_as(e.sink, p, NULL, &b1, on_answer, &a3), 0);
  assert_int_equal(a3.done, 0);
  assert_true(run_until(&e.loop, &a3.done, 5000));
  assert_int_equal(a3.status, SG_EUNAVAIL);
  assert_non_null(strstr(a3.msg, "no PostgreSQL connection")); /* and libpq's reason */
  if (!strstr(a3.msg, "refused")) fprintf(stderr, "msg: %s\n", a3.msg);
  assert_non_null(strstr(a3.msg, "refused"));
  int never = 0;
  run_until(&e.loop, &never, 200);
  assert_int_equal(a1.done + a2.done + a3.done, 3);
  assert_int_equal(b1.n, 1); /* nothing removed */
  sg_span_batch_free(&b1);
  sg_span_batch_free(&b2);
  env_close(&e);
}

/* Closing with submissions still in the window answers them SG_ECANCELED. */
static void test_close_pending(void **state) {
  (void)state;
  env_t e;
  env_open(&e, uri, 1000);
  uint8_t p[16], t[16];
  new_id(p);
  new_id(t);
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  add_span(&b, t, NULL, "root");
  ans_t a = {0};
  assert_int_equal(sg_pgsink_submit_as(e.sink, p, NULL, &b, on_answer, &a), 0);
  sg_pgsink_close(e.sink);
  assert_int_equal(a.done, 1);
  assert_int_equal(a.status, SG_ECANCELED);
  sg_pg_pool_close(e.pool);
  assert_int_equal(uv_run(&e.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&e.loop), 0);
  sg_span_batch_free(&b);
}

/* ---- statements per request ----------------------------------------------------- */

/* n spans of one trace (a root, then its children) in b. */
static void add_spans(sg_span_batch_t *b, size_t n) {
  uint8_t t[16];
  new_id(t);
  sg_span_t *root = add_span(b, t, NULL, "root");
  uint8_t rid[16];
  memcpy(rid, root->span_id, 16);
  for (size_t i = 1; i < n; i++) add_span(b, t, rid, "child");
}

/* A span PostgreSQL refuses for its data: \u0000 in jsonb (22P05). */
static void make_bad(sg_span_t *s) { json_object_set_new(s->attributes, "nul", json_stringn("a\0b", 3)); }

/* Bad spans at the given indexes of one 2000-span request: each is rejected
 * alone, the other spans stored, and the statements grow with k log n (the
 * old isolation ran one statement per span: 2001 for one bad span). */
static void bisect_case(const size_t *bad, size_t k, uint64_t max_statements) {
  env_t e;
  env_open(&e, uri, 1);
  uint8_t p[16];
  new_id(p);
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  add_spans(&b, 2000);
  for (size_t i = 0; i < k; i++) make_bad(&b.spans[bad[i]]);
  ans_t a = {0};
  assert_int_equal(sg_pgsink_submit_as(e.sink, p, NULL, &b, on_answer, &a), 0);
  assert_true(run_until(&e.loop, &a.done, 60000));
  assert_int_equal(a.status, 0);
  assert_int_equal(b.rejected, k);
  assert_int_equal(b.n, 2000 - k);
  for (size_t i = 0; i < b.n; i++) assert_true(b.spans[i].version > 0);
  assert_int_equal(count_rows(p), 2000 - (int64_t)k);
  const sg_pgsink_stats_t *st = sg_pgsink_stats(e.sink);
  fprintf(stderr, "  %zu bad span(s) of 2000: %llu statements\n", k, (unsigned long long)st->statements);
  assert_true(st->statements <= max_statements);
  assert_int_equal(st->spans_rejected, k);
  sg_span_batch_free(&b);
  env_close(&e);
}

static void test_bisect_one_bad(void **state) {
  (void)state;
  size_t bad = 1 + (size_t)rand() % 1999; /* srand(seed) in main prints the seed */
  fprintf(stderr, "  bad span at %zu\n", bad);
  bisect_case(&bad, 1, 40); /* about 2 log2(2000) = 22, or less */
}

static void test_bisect_k_bad(void **state) {
  (void)state;
  size_t bad[5];
  for (int i = 0; i < 5; i++) bad[i] = (size_t)i * 400 + (size_t)rand() % 400;
  bisect_case(bad, 5, 5 * 24);
  size_t adjacent[4] = {0, 1, 1998, 1999};
  bisect_case(adjacent, 4, 4 * 24);
}

/* One request larger than max_batch_spans is written in chunks of at most
 * that many, in order (a span sent twice: the later wins), and answered once
 * all are stored. */
static void test_split_by_max_spans(void **state) {
  (void)state;
  env_t e;
  sg_pgsink_opts_t so = {.window_ms = 1, .max_batch_spans = 100};
  env_open_opts(&e, uri, &so);
  uint8_t p[16];
  new_id(p);
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  add_spans(&b, 450);
  /* Span 10 again at 420 (another chunk), renamed: the later one wins. */
  sg_span_t *again = &b.spans[420];
  memcpy(again->span_id, b.spans[10].span_id, 16);
  free(again->span_name);
  again->span_name = strdup("later");
  ans_t a = {0};
  assert_int_equal(sg_pgsink_submit_as(e.sink, p, NULL, &b, on_answer, &a), 0);
  assert_true(run_until(&e.loop, &a.done, 30000));
  assert_int_equal(a.status, 0);
  assert_int_equal(b.n, 450);
  assert_int_equal(b.rejected, 0);
  /* Five chunks, each one COPY; the chunk holding span 420 meets span 10's
   * row (23505) and is re-run as an upsert: six statements. */
  assert_int_equal(sg_pgsink_stats(e.sink)->statements, 6);
  assert_int_equal(sg_pgsink_stats(e.sink)->copies, 5);
  assert_int_equal(sg_pgsink_stats(e.sink)->copy_fallbacks, 1);
  assert_int_equal(count_rows(p), 449);
  assert_span_value(p, &b.spans[10], "span_name", "later");
  assert_true(b.spans[420].version > b.spans[10].version);
  for (size_t i = 0; i < b.n; i++) {
    if (i == 10 || i == 420) continue;
    assert_int_equal(b.spans[i].created_at_us,
                     span_i64(p, &b.spans[i], "(extract(epoch FROM created_at) * 1000000)::int8"));
  }
  sg_span_batch_free(&b);
  env_close(&e);
}

/* A statement stays under max_statement_bytes: 40 spans of ~2 KB under an
 * 8 KiB bound take several statements; all are stored. */
static void test_split_by_bytes(void **state) {
  (void)state;
  env_t e;
  sg_pgsink_opts_t so = {.window_ms = 1, .max_statement_bytes = 8192};
  env_open_opts(&e, uri, &so);
  uint8_t p[16];
  new_id(p);
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  add_spans(&b, 40);
  char big[2001];
  memset(big, 'x', 2000);
  big[2000] = '\0';
  for (size_t i = 0; i < b.n; i++) json_object_set_new(b.spans[i].attributes, "big", json_string(big));
  ans_t a = {0};
  assert_int_equal(sg_pgsink_submit_as(e.sink, p, NULL, &b, on_answer, &a), 0);
  assert_true(run_until(&e.loop, &a.done, 30000));
  assert_int_equal(a.status, 0);
  assert_int_equal(count_rows(p), 40);
  uint64_t n = sg_pgsink_stats(e.sink)->statements;
  assert_true(n >= 10 && n <= 40);
  assert_int_equal(sg_pgsink_stats(e.sink)->isolations, 0);
  sg_span_batch_free(&b);
  env_close(&e);
}

/* At most two statements per connection are handed to the pool at a time
 * (the statements' data in memory stay bounded); submissions that come
 * while every slot is taken wait as one growing group, even with no
 * window, and go as one statement when a slot frees; every span is still
 * written, and closing answers the waiting ones SG_ECANCELED at once. */
static void test_statements_bounded(void **state) {
  (void)state;
  enum { N = 30 };
  env_t e;
  env_open(&e, uri, -1); /* no window: a group goes as soon as it may */
  uint8_t p[16];
  new_id(p);
  sg_span_batch_t w;
  sg_span_batch_init(&w);
  add_spans(&w, 1);
  submit_wait(&e, p, &w, 0); /* the COPY check is done */
  sg_span_batch_free(&w);
  sg_span_batch_t b[N];
  ans_t a[N];
  memset(a, 0, sizeof a);
  for (int i = 0; i < N; i++) {
    sg_span_batch_init(&b[i]);
    add_spans(&b[i], 3);
    assert_int_equal(sg_pgsink_submit_as(e.sink, p, NULL, &b[i], on_answer, &a[i]), 0);
  }
  const sg_pg_stats_t *ps = sg_pg_pool_stats(e.pool);
  size_t most = ps->queued + (size_t)ps->busy;
  uint64_t deadline = uv_now(&e.loop) + 30000;
  int done = 0;
  while (done < N && uv_now(&e.loop) < deadline) {
    uv_run(&e.loop, UV_RUN_ONCE);
    size_t now = ps->queued + (size_t)ps->busy;
    if (now > most) most = now;
    done = 0;
    for (int i = 0; i < N; i++) done += a[i].done;
  }
  fprintf(stderr, "  at most %zu statements at the pool at once\n", most);
  assert_int_equal(done, N);
  assert_true(most <= 4); /* 2 connections x 2 */
  for (int i = 0; i < N; i++) assert_int_equal(a[i].status, 0);
  assert_int_equal(count_rows(p), 3 * N + 1);
  /* the first, then one per slot (2 connections x 2), then the other 26
   * together once a slot freed */
  assert_int_equal(sg_pgsink_stats(e.sink)->groups, 1 + 4 + 1);
  assert_int_equal(sg_pgsink_stats(e.sink)->max_group_submissions, N - 4);

  /* Closing with groups waiting: those are answered inside the call. */
  ans_t c[N];
  memset(c, 0, sizeof c);
  for (int i = 0; i < N; i++) {
    sg_span_batch_free(&b[i]);
    sg_span_batch_init(&b[i]);
    add_spans(&b[i], 3);
    assert_int_equal(sg_pgsink_submit_as(e.sink, p, NULL, &b[i], on_answer, &c[i]), 0);
  }
  sg_pgsink_close(e.sink);
  int canceled = 0;
  for (int i = 0; i < N; i++) canceled += c[i].done && c[i].status == SG_ECANCELED;
  assert_true(canceled >= N - 4);
  sg_pg_pool_close(e.pool);
  assert_int_equal(uv_run(&e.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&e.loop), 0);
  for (int i = 0; i < N; i++) assert_int_equal(c[i].done, 1);
  for (int i = 0; i < N; i++) sg_span_batch_free(&b[i]);
}

/* ---- COPY and upsert ------------------------------------------------------------ */

static void exec_sql(const char *conninfo, const char *sql);

/* Spans with every awkward byte COPY text escapes (tab, newline, carriage
 * return, backslash) and some it does not (quotes, a control character,
 * non-ASCII), NULL columns, nested attributes with a resource: the rows the
 * COPY path stores are column for column those the upsert stores. */
static void test_copy_same_as_upsert(void **state) {
  (void)state;
  env_t ec, eu;
  env_open(&ec, uri, 1);
  sg_pgsink_opts_t so = {.window_ms = 1, .no_copy = 1};
  env_open_opts(&eu, uri, &so);
  uint8_t pc[16], pu[16], t[16];
  new_id(pc);
  new_id(pu);
  new_id(t);
  sg_span_batch_t bc, bu;
  sg_span_batch_init(&bc);
  sg_span_batch_init(&bu);
  sg_span_t *root = add_span(&bc, t, NULL, "tab\there\nnewline\rcr\\backslash \\N \\. end");
  free(root->status_message);
  root->status_message = strdup("\\\t\"quoted\" \x01 ctl é 😀");
  root->session_id = strdup("sess\tion\\id");
  root->user_id = strdup("");
  root->span_type = SG_NULL_ENUM;
  json_object_set_new(root->attributes, "text", json_string("line1\nline2\ttab \\ back \"q\" \x01"));
  json_object_set_new(root->attributes, "gen_ai.usage.prompt_tokens", json_integer(12));
  root->resource = json_pack("{s:s}", "service.name", "svc\tname");
  root->nest_attributes = SG_SPAN_NEST_ATTRS | SG_SPAN_NEST_RESOURCE;
  root->references = json_pack("[{s:s}]", "id", "a\\b\nc");
  root->hashes = json_pack("[{s:s}]", "h", "x");
  sg_span_t *child = add_span(&bc, t, root->span_id, "child");
  json_decref(child->attributes);
  child->attributes = NULL;
  json_decref(child->events);
  child->events = NULL;
  child->agent_id = strdup("agent\r\n");
  child->trace_type = SG_NULL_ENUM;
  for (size_t i = 0; i < bc.n; i++) assert_int_equal(sg_span_copy(sg_span_batch_push(&bu), &bc.spans[i]), 0);
  submit_wait(&ec, pc, &bc, 0);
  submit_wait(&eu, pu, &bu, 0);
  assert_int_equal(sg_pgsink_stats(ec.sink)->copies, 1);
  assert_int_equal(sg_pgsink_stats(ec.sink)->statements, 1); /* the COPY took every row */
  assert_int_equal(sg_pgsink_stats(ec.sink)->isolations, 0);
  assert_int_equal(sg_pgsink_stats(eu.sink)->copies, 0);
  assert_int_equal(sg_pgsink_stats(eu.sink)->statements, 1);
  char sql[2048], p1[37], p2[37];
  sg_uuid_format(pc, p1);
  sg_uuid_format(pu, p2);
  const char *cols = "created_by_id, updated_by_id, updated_at, deleted_at, deleted_by_id, trace_id, span_id,"
                     " parent_id, span_kind, span_name, start_time, end_time, status_code, status_message,"
                     " attributes, events, links, \"references\", trace_type, span_type, hashes, exception,"
                     " session_id, user_id, agent_id";
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM ((SELECT %s FROM spans WHERE project_id = '%s' EXCEPT ALL"
           " SELECT %s FROM spans WHERE project_id = '%s') UNION ALL (SELECT %s FROM spans WHERE"
           " project_id = '%s' EXCEPT ALL SELECT %s FROM spans WHERE project_id = '%s')) d",
           cols, p1, cols, p2, cols, p2, cols, p1);
  char *v = query_value(sql);
  assert_string_equal(v, "0");
  free(v);
  assert_int_equal(count_rows(pc), 2);
  assert_span_value(pc, &bc.spans[0], "span_name", "tab\there\nnewline\rcr\\backslash \\N \\. end");
  assert_span_value(pc, &bc.spans[0], "attributes->'resource'->'service'->>'name'", "svc\tname");
  assert_span_value(pc, &bc.spans[1], "coalesce(attributes::text, 'NULL') || agent_id", "NULLagent\r\n");
  for (size_t i = 0; i < bc.n; i++) {
    assert_int_equal(bc.spans[i].created_at_us,
                     span_i64(pc, &bc.spans[i], "(extract(epoch FROM created_at) * 1000000)::int8"));
    assert_int_equal(bc.spans[i].version, bc.spans[i].created_at_us);
    assert_int_equal(bc.spans[i].updated_at_us, 0);
    assert_true(bc.spans[i].has_created_by);
    assert_false(bc.spans[i].has_updated_by);
    assert_int_equal(bu.spans[i].has_created_by, 1);
    assert_int_equal(bu.spans[i].has_updated_by, 0);
  }
  sg_span_batch_free(&bc);
  sg_span_batch_free(&bu);
  env_close(&ec);
  env_close(&eu);
}

/* A group holding a span stored before: its COPY meets the row (23505) and
 * the group is re-run as an upsert (the re-sent span updated, the new ones
 * stored, one transaction); the next groups skip COPY for a while, then
 * COPY again. */
static void test_copy_conflict_fallback(void **state) {
  (void)state;
  env_t e;
  env_open(&e, uri, 1);
  uint8_t p[16];
  new_id(p);
  sg_span_batch_t b1, b2;
  sg_span_batch_init(&b1);
  sg_span_batch_init(&b2);
  add_spans(&b1, 3);
  submit_wait(&e, p, &b1, 0);
  const sg_pgsink_stats_t *st = sg_pgsink_stats(e.sink);
  assert_int_equal(st->copies, 1);
  int64_t created = b1.spans[2].created_at_us;

  add_spans(&b2, 4);
  assert_int_equal(sg_span_copy(sg_span_batch_push(&b2), &b1.spans[2]), 0);
  free(b2.spans[4].span_name);
  b2.spans[4].span_name = strdup("again");
  submit_wait(&e, p, &b2, 0);
  assert_int_equal(st->copies, 2);
  assert_int_equal(st->copy_fallbacks, 1);
  assert_int_equal(st->statements, 3);
  assert_int_equal(st->isolations, 0);
  assert_int_equal(b2.rejected, 0);
  assert_int_equal(count_rows(p), 7);
  assert_span_value(p, &b2.spans[4], "span_name", "again");
  assert_int_equal(b2.spans[4].created_at_us, created);
  assert_true(b2.spans[4].updated_at_us > 0);
  assert_int_equal(b2.spans[4].version, b2.spans[4].updated_at_us);
  for (size_t i = 0; i < 4; i++) {
    assert_int_equal(b2.spans[i].updated_at_us, 0);
    assert_int_equal(b2.spans[i].version, b2.spans[i].created_at_us);
  }
  char sql[512], pid[37];
  sg_uuid_format(p, pid);
  snprintf(sql, sizeof sql,
           "SELECT count(DISTINCT xmin::text) FROM spans WHERE project_id = '%s' AND span_name <> 'root'"
           " AND span_name <> 'child'", pid);
  char *v = query_value(sql);
  assert_string_equal(v, "1");
  free(v);

  /* The penalty: the next 8 groups of new spans are upserted, the 9th is a COPY. */
  for (int g = 0; g < 9; g++) {
    sg_span_batch_t b;
    sg_span_batch_init(&b);
    add_spans(&b, 2);
    submit_wait(&e, p, &b, 0);
    assert_int_equal(st->copies, g < 8 ? 2 : 3);
    sg_span_batch_free(&b);
  }
  assert_int_equal(count_rows(p), 7 + 18);
  /* That COPY succeeded, so the penalty starts over at 8 (not 16). */
  submit_wait(&e, p, &b2, 0);
  assert_int_equal(st->copies, 4);
  assert_int_equal(st->copy_fallbacks, 2);
  for (int g = 0; g < 9; g++) {
    sg_span_batch_t b;
    sg_span_batch_init(&b);
    add_spans(&b, 2);
    submit_wait(&e, p, &b, 0);
    assert_int_equal(st->copies, g < 8 ? 4 : 5);
    sg_span_batch_free(&b);
  }
  sg_span_batch_free(&b1);
  sg_span_batch_free(&b2);
  env_close(&e);
}

/* A table COPY would not treat as the upsert does (here a trigger that
 * rewrites rows): every group is upserted, and the trigger's values are the
 * ones returned. */
static void test_copy_refused_table(void **state) {
  (void)state;
  exec_sql(uri, "CREATE SCHEMA IF NOT EXISTS trig;"
                "CREATE TABLE trig.spans (LIKE public.spans INCLUDING ALL);"
                "CREATE FUNCTION trig.stamp() RETURNS trigger LANGUAGE plpgsql AS"
                " $$BEGIN NEW.created_at := '2001-02-03T04:05:06Z'; RETURN NEW; END$$;"
                "CREATE TRIGGER stamp BEFORE INSERT ON trig.spans FOR EACH ROW EXECUTE FUNCTION trig.stamp()");
  char ci[1024];
  snprintf(ci, sizeof ci, "%s%soptions=-c%%20search_path%%3Dtrig,public", uri, strchr(uri, '?') ? "&" : "?");
  env_t e;
  env_open(&e, ci, 1);
  uint8_t p[16];
  new_id(p);
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  add_spans(&b, 3);
  submit_wait(&e, p, &b, 0);
  assert_int_equal(sg_pgsink_stats(e.sink)->copies, 0);
  assert_int_equal(sg_pgsink_stats(e.sink)->statements, 1);
  assert_int_equal(b.spans[0].created_at_us, 981173106000000LL);
  assert_int_equal(count_rows(p), 0); /* in trig.spans, not public.spans */
  sg_span_batch_free(&b);
  env_close(&e);
  exec_sql(uri, "DROP SCHEMA trig CASCADE");
}

/* ---- transient failures -------------------------------------------------------- */

static void exec_sql(const char *conninfo, const char *sql) {
  sg_buf_t err = SG_BUF_INIT;
  int rc = sg_pg_exec_sync(conninfo, sql, &err);
  if (rc) fprintf(stderr, "%s: %s\n", sql, err.data);
  assert_int_equal(rc, 0);
  sg_buf_free(&err);
}

/* The database turned read-only (as after a failover to a standby): the
 * submission fails SG_EUNAVAIL, not SG_EIO, and the cause names 25006. */
static void test_read_only(void **state) {
  (void)state;
  char sql[256];
  snprintf(sql, sizeof sql, "ALTER DATABASE %s SET default_transaction_read_only = on", dbname);
  exec_sql(base_uri, sql);
  env_t e;
  env_open(&e, uri, 1); /* new sessions: read-only */
  uint8_t p[16];
  new_id(p);
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  add_spans(&b, 3);
  ans_t a = {.sink = e.sink};
  assert_int_equal(sg_pgsink_submit_as(e.sink, p, NULL, &b, on_answer, &a), 0);
  assert_true(run_until(&e.loop, &a.done, 10000));
  snprintf(sql, sizeof sql, "ALTER DATABASE %s RESET default_transaction_read_only", dbname);
  exec_sql(base_uri, sql);
  assert_int_equal(a.status, SG_EUNAVAIL);
  assert_non_null(strstr(a.msg, "25006"));
  assert_non_null(strstr(a.msg, "read-only transaction"));
  assert_int_equal(b.n, 3); /* nothing rejected: nothing was wrong with the spans */
  assert_int_equal(sg_pgsink_stats(e.sink)->isolations, 0);
  assert_int_equal(count_rows(p), 0);
  sg_span_batch_free(&b);
  env_close(&e);
}

/* A second session holds a row lock: lock_timeout (55P03) and
 * statement_timeout (57014) are transient, answered SG_EUNAVAIL and
 * SG_ETIMEOUT with PostgreSQL's words; the spans are not rejected. */
static void test_lock_timeouts(void **state) {
  (void)state;
  uint8_t p[16];
  new_id(p);
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  add_spans(&b, 2);
  env_t e;
  env_open(&e, uri, 1);
  submit_wait(&e, p, &b, 0);
  env_close(&e);

  PGconn *holder = PQconnectdb(uri);
  assert_int_equal(PQstatus(holder), CONNECTION_OK);
  char sql[512], pid[37], sid[37];
  sg_uuid_format(p, pid);
  sg_uuid_format(b.spans[1].span_id, sid);
  snprintf(sql, sizeof sql, "BEGIN; SELECT 1 FROM spans WHERE project_id = '%s' AND span_id = '%s' FOR UPDATE",
           pid, sid);
  PQclear(PQexec(holder, sql));

  const char *opts[2] = {"options=-c%20lock_timeout%3D100", "options=-c%20statement_timeout%3D100"};
  int want[2] = {SG_EUNAVAIL, SG_ETIMEOUT};
  const char *state_code[2] = {"55P03", "57014"};
  for (int i = 0; i < 2; i++) {
    char ci[512];
    snprintf(ci, sizeof ci, "%s%s%s", uri, strchr(uri, '?') ? "&" : "?", opts[i]);
    env_open(&e, ci, 1);
    ans_t a = {.sink = e.sink};
    assert_int_equal(sg_pgsink_submit_as(e.sink, p, NULL, &b, on_answer, &a), 0);
    assert_true(run_until(&e.loop, &a.done, 10000));
    assert_int_equal(a.status, want[i]);
    assert_non_null(strstr(a.msg, state_code[i]));
    assert_int_equal(b.n, 2);
    assert_int_equal(sg_pgsink_stats(e.sink)->isolations, 0);
    env_close(&e);
  }
  PQclear(PQexec(holder, "ROLLBACK"));
  PQfinish(holder);
  sg_span_batch_free(&b);
}

/* ---- setup ------------------------------------------------------------------ */

static int setup(void **state) {
  (void)state;
  char sql[256];
  sg_buf_t err = SG_BUF_INIT;
  snprintf(dbname, sizeof dbname, "sg_test_sink_%d", (int)getpid());
  snprintf(sql, sizeof sql, "CREATE DATABASE %s", dbname);
  if (sg_pg_exec_sync(base_uri, sql, &err) != 0) {
    fprintf(stderr, "test_pgsink: %s\n", err.data);
    return -1;
  }
  const char *hostpart = strstr(base_uri, "://");
  const char *slash = strchr(hostpart ? hostpart + 3 : base_uri, '/');
  if (slash == NULL) return -1;
  const char *q = strchr(slash, '?');
  sg_buf_t b = SG_BUF_INIT;
  sg_buf_append(&b, base_uri, (size_t)(slash - base_uri));
  sg_buf_printf(&b, "/%s%s", dbname, q ? q : "");
  uri = sg_buf_detach(&b, NULL);
  int rc = sg_pg_schema_apply(uri, &err);
  if (rc) fprintf(stderr, "test_pgsink: schema: %s\n", err.data);
  sg_buf_free(&err);
  return rc ? -1 : 0;
}

static int teardown(void **state) {
  (void)state;
  char sql[256];
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", dbname);
  int rc = sg_pg_exec_sync(base_uri, sql, NULL);
  free(uri);
  return rc ? -1 : 0;
}

int main(void) {
  base_uri = getenv("SG_TEST_PG_URI");
  if (base_uri == NULL || *base_uri == '\0') {
    fprintf(stderr, "test_pgsink: SG_TEST_PG_URI is not set; these tests need a real PostgreSQL "
                    "(run them under scripts/testenv.sh)\n");
    return 1;
  }
  unsigned seed = getenv("SG_TEST_SEED") ? (unsigned)strtoul(getenv("SG_TEST_SEED"), NULL, 10)
                                         : (unsigned)getpid();
  fprintf(stderr, "test_pgsink: seed %u (SG_TEST_SEED to repeat)\n", seed);
  srand(seed);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_group_commit),
      cmocka_unit_test(test_exact_times),
      cmocka_unit_test(test_upsert),
      cmocka_unit_test(test_duplicates),
      cmocka_unit_test(test_poison_span),
      cmocka_unit_test(test_second_root),
      cmocka_unit_test(test_unavailable),
      cmocka_unit_test(test_close_pending),
      cmocka_unit_test(test_bisect_one_bad),
      cmocka_unit_test(test_bisect_k_bad),
      cmocka_unit_test(test_split_by_max_spans),
      cmocka_unit_test(test_split_by_bytes),
      cmocka_unit_test(test_statements_bounded),
      cmocka_unit_test(test_copy_same_as_upsert),
      cmocka_unit_test(test_copy_conflict_fallback),
      cmocka_unit_test(test_copy_refused_table),
      cmocka_unit_test(test_read_only),
      cmocka_unit_test(test_lock_timeouts),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
