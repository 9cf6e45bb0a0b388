/* test_pg.c - the PostgreSQL driver (src/pg.c) and the schema (src/pg_schema.c)
 * against a real server: SG_TEST_PG_URI (scripts/testenv.sh sets it). The
 * restart test also needs SG_TEST_TMP and SG_TEST_PG_PORT (the cluster
 * testenv.sh started in $SG_TEST_TMP/pg), to stop and start it with
 * scripts/pgctl.sh. Every test closes its loop and asserts nothing leaked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "err.h"
#include "pg.h"
#include "pg_schema.h"

static const char *pg_uri;

/* ---- helpers ---------------------------------------------------------------- */

typedef struct {
  int done;
  int err;
  char msg[512];
  char val[256];
  int ntuples;
} res_t;

static void on_result(void *arg, PGresult *res, int err, const char *errmsg) {
  res_t *r = arg;
  r->done++;
  r->err = err;
  snprintf(r->msg, sizeof r->msg, "%s", errmsg ? errmsg : "");
  r->ntuples = res ? PQntuples(res) : -1;
  if (res && PQntuples(res) > 0 && PQnfields(res) > 0)
    snprintf(r->val, sizeof r->val, "%s", PQgetvalue(res, 0, 0));
}

static void tick(uv_timer_t *t) { (void)t; }

/* Runs the loop until *flag becomes nonzero or timeout_ms passes. */
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

static void run_for(uv_loop_t *loop, int ms) {
  int never = 0;
  run_until(loop, &never, ms);
}

static void finish_loop(uv_loop_t *loop) {
  assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(loop), 0);
}

static int ready(uv_loop_t *loop, sg_pg_pool_t *pool, int want_up, int timeout_ms) {
  uint64_t deadline = uv_now(loop) + (uint64_t)timeout_ms;
  while (sg_pg_pool_stats(pool)->up < want_up && uv_now(loop) < deadline) run_for(loop, 20);
  return sg_pg_pool_stats(pool)->up >= want_up;
}

/* The test URI with its database replaced by db. Caller frees. */
static char *uri_with_db(const char *db) {
  const char *hostpart = strstr(pg_uri, "://");
  const char *slash = strchr(hostpart ? hostpart + 3 : pg_uri, '/');
  assert_non_null(slash);
  const char *q = strchr(slash, '?');
  sg_buf_t b = SG_BUF_INIT;
  sg_buf_append(&b, pg_uri, (size_t)(slash - pg_uri));
  sg_buf_printf(&b, "/%s%s", db, q ? q : "");
  return sg_buf_detach(&b, NULL);
}

static void exec_ok(const char *uri, const char *sql) {
  sg_buf_t err = SG_BUF_INIT;
  int rc = sg_pg_exec_sync(uri, sql, &err);
  if (rc) fprintf(stderr, "exec failed: %s\n  sql: %s\n", err.data, sql);
  assert_int_equal(rc, 0);
  sg_buf_free(&err);
}

/* First column of the first row, via a blocking connection. Caller frees. */
static char *query_value(const char *uri, const char *sql) {
  PGconn *c = PQconnectdb(uri);
  assert_int_equal(PQstatus(c), CONNECTION_OK);
  PGresult *r = PQexec(c, sql);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
  assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
  char *v = strdup(PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
  PQclear(r);
  PQfinish(c);
  return v;
}

/* scripts/pgctl.sh of this checkout, found from this file's path. */
static void pgctl(const char *action) {
  const char *tmp = getenv("SG_TEST_TMP"), *port = getenv("SG_TEST_PG_PORT");
  if (tmp == NULL || port == NULL)
    fail_msg("SG_TEST_TMP / SG_TEST_PG_PORT are not set: run under scripts/testenv.sh");
  char root[1024];
  snprintf(root, sizeof root, "%s", __FILE__);
  char *p = strstr(root, "tests/unit/test_pg.c");
  if (p) *p = '\0';
  char cmd[3072];
  snprintf(cmd, sizeof cmd, "%s%sscripts/pgctl.sh %s '%s/pg' %s >/dev/null",
           root, (root[0] && p && p[-1] != '/') ? "/" : "", action, tmp,
           strcmp(action, "start") == 0 ? port : "");
  assert_int_equal(system(cmd), 0);
}

/* ---- pool ------------------------------------------------------------------- */

static void test_query_params(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  sg_pg_pool_t *pool = sg_pg_pool_new(&loop, pg_uri, 2, NULL);
  assert_non_null(pool);
  assert_int_equal(sg_pg_pool_stats(pool)->configured, 2);

  /* Issued before any connection is up: waits for the first attempt. */
  res_t r1 = {0}, r2 = {0}, r3 = {0};
  const char *v1[] = {"40", "2", "it's \"quoted\""};
  assert_int_equal(sg_pg_query(pool, "SELECT ($1::int + $2::int)::text || ' ' || $3", 3, v1,
                               NULL, NULL, on_result, &r1), 0);
  /* A binary parameter: int4 in network order. */
  uint32_t be = htonl(123456);
  const char *v2[] = {(const char *)&be};
  int len2[] = {4}, fmt2[] = {1};
  assert_int_equal(sg_pg_query(pool, "SELECT $1::int4 * 2", 1, v2, len2, fmt2, on_result, &r2), 0);
  const char *v3[] = {NULL};
  assert_int_equal(sg_pg_query(pool, "SELECT coalesce($1, 'null')", 1, v3, NULL, NULL, on_result, &r3), 0);
  assert_int_equal(r1.done + r2.done + r3.done, 0); /* never inside sg_pg_query */
  assert_true(run_until(&loop, &r3.done, 10000));
  run_until(&loop, &r1.done, 5000);
  run_until(&loop, &r2.done, 5000);
  assert_int_equal(r1.err, 0);
  assert_string_equal(r1.val, "42 it's \"quoted\"");
  assert_int_equal(r2.err, 0);
  assert_string_equal(r2.val, "246912");
  assert_int_equal(r3.err, 0);
  assert_string_equal(r3.val, "null");
  assert_true(ready(&loop, pool, 2, 5000));
  assert_int_equal(sg_pg_pool_stats(pool)->busy, 0);
  assert_int_equal(sg_pg_pool_stats(pool)->queries, 3);
  assert_int_equal(sg_pg_pool_stats(pool)->errors, 0);

  /* Many at once over two connections: all answered, in any order. */
  enum { N = 50 };
  res_t many[N];
  memset(many, 0, sizeof many);
  int done = 0;
  for (int i = 0; i < N; i++)
    assert_int_equal(sg_pg_query(pool, "SELECT pg_backend_pid()", 0, NULL, NULL, NULL, on_result, &many[i]), 0);
  for (int i = 0; i < N; i++) {
    run_until(&loop, &many[i].done, 5000);
    done += many[i].done == 1 && many[i].err == 0;
  }
  assert_int_equal(done, N);
  sg_pg_pool_close(pool);
  finish_loop(&loop);
}

static void test_sql_errors(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  sg_pg_pool_t *pool = sg_pg_pool_new(&loop, pg_uri, 1, NULL);
  res_t div = {0}, undef = {0}, uniq = {0}, after = {0};
  assert_int_equal(sg_pg_query(pool, "SELECT 1/0", 0, NULL, NULL, NULL, on_result, &div), 0);
  assert_int_equal(sg_pg_query(pool, "SELECT * FROM no_such_table_here", 0, NULL, NULL, NULL, on_result, &undef), 0);
  const char *nul[] = {"{\"a\": \"x\\u0000y\"}"};
  assert_int_equal(sg_pg_query(pool, "SELECT $1::jsonb", 1, nul, NULL, NULL, on_result, &uniq), 0);
  assert_int_equal(sg_pg_query(pool, "SELECT 'still fine'", 0, NULL, NULL, NULL, on_result, &after), 0);
  assert_true(run_until(&loop, &after.done, 10000));
  assert_int_equal(div.err, SG_EPOISON);
  assert_non_null(strstr(div.msg, "22012"));
  assert_int_equal(undef.err, SG_EIO);
  assert_non_null(strstr(undef.msg, "42P01"));
  assert_int_equal(uniq.err, SG_EPOISON); /* 22P05: \u0000 in jsonb */
  assert_non_null(strstr(uniq.msg, "22P05"));
  assert_int_equal(after.err, 0);
  assert_string_equal(after.val, "still fine");
  assert_int_equal(sg_pg_pool_stats(pool)->errors, 3);
  sg_pg_pool_close(pool);
  finish_loop(&loop);
}

static void test_queue_bound_and_close(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  sg_pg_pool_opts_t o = {.max_queue = 2};
  sg_pg_pool_t *pool = sg_pg_pool_new(&loop, pg_uri, 1, &o);
  assert_true(ready(&loop, pool, 1, 10000));
  res_t slow = {0}, q1 = {0}, q2 = {0}, q3 = {0};
  assert_int_equal(sg_pg_query(pool, "SELECT pg_sleep(30)", 0, NULL, NULL, NULL, on_result, &slow), 0);
  assert_int_equal(sg_pg_query(pool, "SELECT 1", 0, NULL, NULL, NULL, on_result, &q1), 0);
  assert_int_equal(sg_pg_query(pool, "SELECT 2", 0, NULL, NULL, NULL, on_result, &q2), 0);
  assert_int_equal(sg_pg_query(pool, "SELECT 3", 0, NULL, NULL, NULL, on_result, &q3), SG_EBUSY);
  assert_int_equal(sg_pg_pool_stats(pool)->queued, 2);
  assert_int_equal(sg_pg_pool_stats(pool)->busy, 1);
  run_for(&loop, 100);
  /* Close with one running and two queued: all answered SG_ECANCELED at once. */
  sg_pg_pool_close(pool);
  assert_int_equal(slow.done, 1);
  assert_int_equal(slow.err, SG_ECANCELED);
  assert_int_equal(q1.err, SG_ECANCELED);
  assert_int_equal(q2.err, SG_ECANCELED);
  assert_int_equal(q3.done, 0);
  finish_loop(&loop);
}

/* Spares: quick statements all run on the main connection; a statement
 * queued behind a slow one goes to the spare once it has waited
 * spare_after_ms, not before, unless the main connection has been busy for
 * over 2 s without a break; with no main connection up, the spare takes
 * statements at once. */
static void test_spare_connection(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  sg_pg_pool_opts_t o = {.spares = 1, .spare_after_ms = 300};
  sg_pg_pool_t *pool = sg_pg_pool_new(&loop, pg_uri, 2, &o);
  assert_true(ready(&loop, pool, 2, 10000));
  assert_int_equal(sg_pg_pool_stats(pool)->spares, 1);
  res_t a = {0}, b = {0};
  assert_int_equal(sg_pg_query(pool, "SELECT pg_backend_pid()", 0, NULL, NULL, NULL, on_result, &a), 0);
  assert_int_equal(sg_pg_query(pool, "SELECT pg_backend_pid()", 0, NULL, NULL, NULL, on_result, &b), 0);
  assert_true(run_until(&loop, &b.done, 5000));
  assert_int_equal(a.err, 0);
  assert_string_equal(a.val, b.val); /* the second waited for the first, briefly */
  assert_int_equal(sg_pg_pool_stats(pool)->spare_queries, 0);

  res_t slow = {0}, q = {0};
  assert_int_equal(sg_pg_query(pool, "SELECT pg_backend_pid() FROM pg_sleep(5)", 0, NULL, NULL, NULL,
                               on_result, &slow), 0);
  assert_int_equal(sg_pg_query(pool, "SELECT pg_backend_pid()", 0, NULL, NULL, NULL, on_result, &q), 0);
  run_for(&loop, 100);
  assert_int_equal(q.done, 0); /* not due for the spare yet */
  assert_int_equal(sg_pg_pool_stats(pool)->queued, 1);
  assert_true(run_until(&loop, &q.done, 3000));
  assert_int_equal(q.err, 0);
  assert_int_equal(slow.done, 0); /* it did not wait for the slow one */
  assert_string_not_equal(q.val, a.val);
  assert_int_equal(sg_pg_pool_stats(pool)->spare_queries, 1);
  assert_true(run_until(&loop, &slow.done, 10000));
  assert_string_equal(slow.val, a.val);

  /* The main connection busy without a break for over 2 s (saturated): a
   * statement due for the spare waits for it instead. */
  res_t slow2 = {0}, q2 = {0};
  assert_int_equal(sg_pg_query(pool, "SELECT pg_backend_pid() FROM pg_sleep(4)", 0, NULL, NULL, NULL,
                               on_result, &slow2), 0);
  run_for(&loop, 2100);
  assert_int_equal(sg_pg_query(pool, "SELECT pg_backend_pid()", 0, NULL, NULL, NULL, on_result, &q2), 0);
  assert_true(run_until(&loop, &q2.done, 10000));
  assert_int_equal(slow2.done, 1);
  assert_string_equal(q2.val, a.val);
  assert_int_equal(sg_pg_pool_stats(pool)->spare_queries, 1);
  sg_pg_pool_close(pool);
  finish_loop(&loop);

  /* The main connection gone (and slow to come back): the spare at once. */
  uv_loop_init(&loop);
  o = (sg_pg_pool_opts_t){.spares = 1, .spare_after_ms = 60000, .backoff_min_ms = 60000};
  pool = sg_pg_pool_new(&loop, pg_uri, 2, &o);
  assert_true(ready(&loop, pool, 2, 10000));
  res_t m = {0}, r = {0};
  assert_int_equal(sg_pg_query(pool, "SELECT pg_backend_pid()", 0, NULL, NULL, NULL, on_result, &m), 0);
  assert_true(run_until(&loop, &m.done, 5000));
  char sql[320];
  snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%s)", m.val);
  char *v = query_value(pg_uri, sql);
  assert_string_equal(v, "t");
  free(v);
  uint64_t deadline = uv_now(&loop) + 10000;
  while (sg_pg_pool_stats(pool)->up > 1 && uv_now(&loop) < deadline) run_for(&loop, 20);
  assert_int_equal(sg_pg_pool_stats(pool)->up, 1);
  assert_int_equal(sg_pg_query(pool, "SELECT pg_backend_pid()", 0, NULL, NULL, NULL, on_result, &r), 0);
  assert_true(run_until(&loop, &r.done, 5000));
  assert_int_equal(r.err, 0);
  assert_string_not_equal(r.val, m.val);
  sg_pg_pool_close(pool);
  finish_loop(&loop);
}

static void close_in_cb(void *arg, PGresult *res, int err, const char *errmsg) {
  (void)res;
  (void)errmsg;
  void **a = arg;
  *(int *)a[1] = err == 0 ? 1 : 2;
  sg_pg_pool_close(a[0]);
}

static void test_close_from_callback(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  sg_pg_pool_t *pool = sg_pg_pool_new(&loop, pg_uri, 2, NULL);
  int got = 0;
  res_t queued = {0};
  void *arg[2] = {pool, &got};
  assert_int_equal(sg_pg_query(pool, "SELECT 1", 0, NULL, NULL, NULL, close_in_cb, arg), 0);
  assert_int_equal(sg_pg_query(pool, "SELECT pg_sleep(10)", 0, NULL, NULL, NULL, on_result, &queued), 0);
  assert_true(run_until(&loop, &got, 10000));
  assert_int_equal(got, 1);
  assert_int_equal(queued.done, 1);
  assert_int_equal(queued.err, SG_ECANCELED);
  finish_loop(&loop);
}

static void test_server_down(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  /* Port 1 on loopback: connection refused at once. */
  sg_pg_pool_opts_t o = {.backoff_min_ms = 50, .backoff_max_ms = 200};
  sg_pg_pool_t *pool = sg_pg_pool_new(&loop, "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2", 2, &o);
  assert_non_null(pool);
  res_t r = {0};
  /* During the first attempts: queued, then failed once they are over. */
  assert_int_equal(sg_pg_query(pool, "SELECT 1", 0, NULL, NULL, NULL, on_result, &r), 0);
  assert_true(run_until(&loop, &r.done, 10000));
  assert_int_equal(r.err, SG_EUNAVAIL);
  assert_non_null(strstr(r.msg, "no PostgreSQL connection"));
  /* Afterwards: refused at once. */
  assert_int_equal(sg_pg_query(pool, "SELECT 1", 0, NULL, NULL, NULL, on_result, &r), SG_EUNAVAIL);
  run_for(&loop, 500); /* a few backoff rounds */
  assert_true(sg_pg_pool_stats(pool)->connect_failures >= 4);
  assert_int_equal(sg_pg_pool_ready(pool), 0);
  sg_pg_pool_close(pool);
  finish_loop(&loop);

  /* A conninfo that does not parse is refused up front, with a reason. */
  uv_loop_init(&loop);
  assert_null(sg_pg_pool_new(&loop, "host=x nonsense_key=1", 1, NULL));
  sg_buf_t err = SG_BUF_INIT;
  assert_int_equal(sg_pg_conninfo_check("host=x nonsense_key=1", &err), SG_EINVAL);
  assert_non_null(strstr(err.data, "nonsense_key"));
  sg_buf_free(&err);
  finish_loop(&loop);
}

static void test_server_restart(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  sg_pg_pool_opts_t o = {.backoff_min_ms = 50, .backoff_max_ms = 500};
  sg_pg_pool_t *pool = sg_pg_pool_new(&loop, pg_uri, 2, &o);
  assert_true(ready(&loop, pool, 2, 10000));
  res_t running = {0};
  assert_int_equal(sg_pg_query(pool, "SELECT pg_sleep(60)", 0, NULL, NULL, NULL, on_result, &running), 0);
  run_for(&loop, 200); /* sent and running */
  assert_int_equal(sg_pg_pool_stats(pool)->busy, 1);

  pgctl("stop"); /* fast shutdown: the running query's backend is terminated */
  assert_true(run_until(&loop, &running.done, 10000));
  assert_int_equal(running.err, SG_EUNAVAIL);
  run_for(&loop, 300); /* the idle connection notices too */
  assert_int_equal(sg_pg_pool_stats(pool)->up, 0);
  res_t r = {0};
  assert_int_equal(sg_pg_query(pool, "SELECT 1", 0, NULL, NULL, NULL, on_result, &r), SG_EUNAVAIL);
  assert_int_equal(running.done, 1); /* never re-run, never answered twice */

  pgctl("start");
  assert_true(ready(&loop, pool, 2, 15000));
  assert_true(sg_pg_pool_stats(pool)->reconnects >= 2);
  assert_int_equal(sg_pg_query(pool, "SELECT 'back'", 0, NULL, NULL, NULL, on_result, &r), 0);
  assert_true(run_until(&loop, &r.done, 5000));
  assert_int_equal(r.err, 0);
  assert_string_equal(r.val, "back");
  sg_pg_pool_close(pool);
  finish_loop(&loop);
}

static void test_exec_sync(void **state) {
  (void)state;
  sg_buf_t err = SG_BUF_INIT;
  assert_int_equal(sg_pg_exec_sync(pg_uri, "SELECT 1; SELECT 2; CREATE TEMP TABLE t (a int); DROP TABLE t", &err), 0);
  assert_int_equal(sg_pg_exec_sync(pg_uri, "SELECT 1; SELEC 2", &err), SG_EIO);
  assert_non_null(strstr(err.data, "42601"));
  sg_buf_reset(&err);
  assert_int_equal(sg_pg_exec_sync("postgresql://postgres@127.0.0.1:1/postgres", "SELECT 1", &err), SG_EUNAVAIL);
  assert_non_null(strstr(err.data, "cannot connect"));
  sg_buf_free(&err);
}

/* ---- SQLSTATE classes ------------------------------------------------------------- */

/* The classification table: transient failures are never SG_EIO (which the
 * gateway answers 500, and OTLP exporters never retry). */
static void test_sqlstate_table(void **state) {
  (void)state;
  static const struct {
    const char *st;
    int err, unwritable;
  } cases[] = {
      {"25006", SG_EUNAVAIL, 1}, /* read_only_sql_transaction (standby after failover) */
      {"40P01", SG_EUNAVAIL, 0}, /* deadlock_detected */
      {"40001", SG_EUNAVAIL, 0}, /* serialization_failure */
      {"53100", SG_EUNAVAIL, 1}, /* disk_full */
      {"53200", SG_EUNAVAIL, 1}, /* out_of_memory */
      {"53300", SG_EUNAVAIL, 0}, /* too_many_connections */
      {"57014", SG_ETIMEOUT, 0}, /* query_canceled (statement_timeout) */
      {"57P01", SG_EUNAVAIL, 0}, /* admin_shutdown */
      {"57P03", SG_EUNAVAIL, 0}, /* cannot_connect_now */
      {"58030", SG_EUNAVAIL, 1}, /* io_error */
      {"08006", SG_EUNAVAIL, 0}, /* connection_failure */
      {"55P03", SG_EUNAVAIL, 0}, /* lock_not_available (lock_timeout) */
      {"25P03", SG_EUNAVAIL, 0}, /* idle_in_transaction_session_timeout */
      {"22012", SG_EPOISON, 0},  /* division_by_zero */
      {"22P05", SG_EPOISON, 0},  /* untranslatable_character (\u0000 in jsonb) */
      {"23505", SG_EPOISON, 0},  /* unique_violation (a second root span) */
      {"54000", SG_EPOISON, 0},  /* program_limit_exceeded */
      {"42P01", SG_EIO, 0},      /* undefined_table: the schema is missing */
      {"42601", SG_EIO, 0},      /* syntax_error */
      {"42501", SG_EIO, 0},      /* insufficient_privilege */
      {"25001", SG_EIO, 0},      /* active_sql_transaction: not 25006 */
      {"XX000", SG_EIO, 0},      /* internal_error */
      {"P0001", SG_EIO, 0},      /* raise_exception (a trigger) */
      {"0A000", SG_EIO, 0},      /* feature_not_supported */
      {"5", SG_EIO, 0},          /* malformed */
      {"5300", SG_EIO, 0},
      {"530000", SG_EIO, 0},
      {NULL, SG_EIO, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int err = sg_pg_sqlstate_err(cases[i].st, 0);
    if (err != cases[i].err || sg_pg_sqlstate_unwritable(cases[i].st) != cases[i].unwritable)
      fail_msg("SQLSTATE %s: %s, unwritable %d; want %s, %d", cases[i].st ? cases[i].st : "NULL",
               sg_strerror(err), sg_pg_sqlstate_unwritable(cases[i].st), sg_strerror(cases[i].err),
               cases[i].unwritable);
  }
  /* A lost connection is unavailable whatever the server said. */
  assert_int_equal(sg_pg_sqlstate_err("22012", 1), SG_EUNAVAIL);
}

/* A database that turned read-only (what a failover to a standby looks
 * like to the gateway): a write is answered SG_EUNAVAIL with 25006, and the
 * read-only session is replaced; a writable pool refuses such a server at
 * connect time, names why, and connects once it takes writes again. */
static void test_read_only_server(void **state) {
  (void)state;
  char db[64], sql[256];
  snprintf(db, sizeof db, "sg_test_ro_%d", (int)getpid());
  snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
  exec_ok(pg_uri, sql);
  char *uri = uri_with_db(db);
  exec_ok(uri, "CREATE TABLE t (a int)");
  snprintf(sql, sizeof sql, "ALTER DATABASE %s SET default_transaction_read_only = on", db);
  exec_ok(pg_uri, sql);

  uv_loop_t loop;
  uv_loop_init(&loop);
  sg_pg_pool_opts_t any = {.backoff_min_ms = 20, .backoff_max_ms = 100};
  sg_pg_pool_t *pool = sg_pg_pool_new(&loop, uri, 1, &any);
  assert_true(ready(&loop, pool, 1, 10000));
  res_t w = {0};
  assert_int_equal(sg_pg_query(pool, "INSERT INTO t VALUES (1)", 0, NULL, NULL, NULL, on_result, &w), 0);
  assert_true(run_until(&loop, &w.done, 10000));
  assert_int_equal(w.err, SG_EUNAVAIL);
  assert_non_null(strstr(w.msg, "25006"));
  assert_non_null(strstr(w.msg, "read-only transaction"));
  /* The session was dropped after the answer, and a new one opened. */
  uint64_t deadline = uv_now(&loop) + 10000;
  while (sg_pg_pool_stats(pool)->reconnects < 1 && uv_now(&loop) < deadline) run_for(&loop, 20);
  assert_int_equal(sg_pg_pool_stats(pool)->reconnects, 1);
  assert_non_null(strstr(sg_pg_pool_last_error(pool), "read-only"));
  sg_pg_pool_close(pool);

  sg_pg_pool_opts_t wr = {.backoff_min_ms = 20, .backoff_max_ms = 100, .writable = 1};
  pool = sg_pg_pool_new(&loop, uri, 1, &wr);
  res_t r = {0};
  assert_int_equal(sg_pg_query(pool, "INSERT INTO t VALUES (2)", 0, NULL, NULL, NULL, on_result, &r), 0);
  assert_true(run_until(&loop, &r.done, 10000));
  assert_int_equal(r.err, SG_EUNAVAIL);
  assert_non_null(strstr(r.msg, "read-only"));
  assert_int_equal(sg_pg_pool_ready(pool), 0);
  assert_non_null(strstr(sg_pg_pool_last_error(pool), "read-only"));

  snprintf(sql, sizeof sql, "ALTER DATABASE %s RESET default_transaction_read_only", db);
  exec_ok(pg_uri, sql);
  assert_true(ready(&loop, pool, 1, 10000));
  memset(&r, 0, sizeof r);
  assert_int_equal(sg_pg_query(pool, "INSERT INTO t VALUES (3) RETURNING a", 0, NULL, NULL, NULL, on_result, &r), 0);
  assert_true(run_until(&loop, &r.done, 10000));
  assert_int_equal(r.err, 0);
  assert_string_equal(r.val, "3");
  sg_pg_pool_close(pool);
  finish_loop(&loop);
  free(uri);
  snprintf(sql, sizeof sql, "DROP DATABASE %s", db);
  exec_ok(pg_uri, sql);
}

/* statement_timeout_ms is added to the conninfo's own startup options; a
 * statement over it is SG_ETIMEOUT (57014). */
static void test_statement_timeout(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  char ci[1024];
  snprintf(ci, sizeof ci, "%s%soptions=-c%%20work_mem%%3D5MB", pg_uri, strchr(pg_uri, '?') ? "&" : "?");
  /* 2 s, not less: on a loaded machine under ASan even a trivial statement
   * has taken over 100 ms. */
  sg_pg_pool_opts_t o = {.statement_timeout_ms = 2000};
  sg_pg_pool_t *pool = sg_pg_pool_new(&loop, ci, 1, &o);
  assert_non_null(pool);
  res_t set = {0}, slow = {0}, after = {0};
  assert_int_equal(sg_pg_query(pool, "SELECT current_setting('work_mem') || ' ' || current_setting('statement_timeout')",
                               0, NULL, NULL, NULL, on_result, &set), 0);
  assert_int_equal(sg_pg_query(pool, "SELECT pg_sleep(30)", 0, NULL, NULL, NULL, on_result, &slow), 0);
  assert_int_equal(sg_pg_query(pool, "SELECT 'after'", 0, NULL, NULL, NULL, on_result, &after), 0);
  assert_true(run_until(&loop, &after.done, 20000));
  assert_int_equal(set.err, 0);
  assert_string_equal(set.val, "5MB 2s");
  assert_int_equal(slow.err, SG_ETIMEOUT);
  assert_non_null(strstr(slow.msg, "57014"));
  assert_int_equal(after.err, 0);
  assert_string_equal(after.val, "after");
  sg_pg_pool_close(pool);
  finish_loop(&loop);
}

/* ---- schema ----------------------------------------------------------------- */

static const char *const agenta_indexes[] = {
    "spans_pkey", "ix_project_id", "ix_project_id_trace_id", "ix_project_id_span_id",
    "ix_project_id_start_time", "ix_attributes_gin", "ix_events_gin", "ix_links_gin",
    "ix_references_gin", "ix_hashes_gin", "ix_spans_project_id_trace_type",
    "ix_spans_project_id_span_type", "ix_spans_project_id_trace_id_created_at",
    "ix_spans_project_id_trace_id_start_time", "ix_spans_fts_attributes_gin",
    "ix_spans_fts_events_gin", "ix_spans_root_project_created_trace", "ux_spans_root_per_trace"};

static void check_schema(const char *uri) {
  char *cols = query_value(uri,
      "SELECT string_agg(attname || ':' || format_type(atttypid, atttypmod) ||"
      " CASE WHEN attnotnull THEN '!' ELSE '' END, ',' ORDER BY attname)"
      " FROM pg_attribute WHERE attrelid = 'spans'::regclass AND attnum > 0 AND NOT attisdropped");
  assert_string_equal(cols,
      "agent_id:character varying,"
      "attributes:jsonb,created_at:timestamp with time zone!,created_by_id:uuid!,"
      "deleted_at:timestamp with time zone,deleted_by_id:uuid,end_time:timestamp with time zone!,"
      "events:jsonb,exception:jsonb,hashes:jsonb,links:jsonb,parent_id:uuid,project_id:uuid!,"
      "references:jsonb,session_id:character varying,span_id:uuid!,span_kind:otelspankind!,span_name:character varying!,"
      "span_type:spantype,start_time:timestamp with time zone!,status_code:otelstatuscode!,"
      "status_message:character varying,trace_id:uuid!,trace_type:tracetype,"
      "updated_at:timestamp with time zone,updated_by_id:uuid,user_id:character varying");
  free(cols);
  char *pk = query_value(uri, "SELECT pg_get_indexdef('spans_pkey'::regclass)");
  assert_non_null(strstr(pk, "(project_id, trace_id, span_id)"));
  free(pk);
  for (size_t i = 0; i < sizeof agenta_indexes / sizeof *agenta_indexes; i++) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_class WHERE relname = '%s' AND relkind = 'i'",
             agenta_indexes[i]);
    char *n = query_value(uri, sql);
    if (strcmp(n, "1")) fprintf(stderr, "missing index %s\n", agenta_indexes[i]);
    assert_string_equal(n, "1");
    free(n);
  }
  char *ux = query_value(uri, "SELECT pg_get_indexdef('ux_spans_root_per_trace'::regclass)");
  assert_non_null(strstr(ux, "UNIQUE INDEX"));
  assert_non_null(strstr(ux, "WHERE (parent_id IS NULL)"));
  free(ux);
  char *labels = query_value(uri,
      "SELECT string_agg(t.typname || '.' || e.enumlabel, ',' ORDER BY t.typname, e.enumsortorder)"
      " FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid"
      " WHERE t.typname IN ('tracetype', 'otelstatuscode')");
  assert_string_equal(labels,
      "otelstatuscode.STATUS_CODE_UNSET,otelstatuscode.STATUS_CODE_OK,otelstatuscode.STATUS_CODE_ERROR,"
      "tracetype.INVOCATION,tracetype.ANNOTATION,tracetype.UNKNOWN");
  free(labels);
  char *st = query_value(uri, "SELECT count(*) FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid"
                              " WHERE t.typname = 'spantype'");
  assert_string_equal(st, "12");
  free(st);
  char *sk = query_value(uri, "SELECT count(*) FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid"
                              " WHERE t.typname = 'otelspankind'");
  assert_string_equal(sk, "6");
  free(sk);
}

static void test_schema_fresh_twice(void **state) {
  (void)state;
  char db[64];
  snprintf(db, sizeof db, "sg_test_schema_%d", (int)getpid());
  char sql[256];
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", db);
  exec_ok(pg_uri, sql);
  snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
  exec_ok(pg_uri, sql);
  char *uri = uri_with_db(db);
  sg_buf_t err = SG_BUF_INIT;
  assert_int_equal(sg_pg_schema_apply(uri, &err), 0);
  check_schema(uri);
  /* Rows survive a second apply; nothing is dropped or rewritten. */
  exec_ok(uri, "INSERT INTO spans (project_id, created_by_id, trace_id, span_id, span_kind, span_name,"
               " start_time, end_time, status_code, span_type)"
               " VALUES (gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), gen_random_uuid(),"
               " 'SPAN_KIND_SERVER', 'x', now(), now(), 'STATUS_CODE_OK', 'LLM')");
  assert_int_equal(sg_pg_schema_apply(uri, &err), 0);
  check_schema(uri);
  char *n = query_value(uri, "SELECT count(*) FROM spans");
  assert_string_equal(n, "1");
  free(n);
  /* The printed script is the applied one, and is one transaction. */
  assert_non_null(strstr(sg_pg_schema_sql(), "pg_advisory_xact_lock"));
  assert_null(strstr(sg_pg_schema_sql(), "DROP "));
  sg_buf_free(&err);
  free(uri);
  snprintf(sql, sizeof sql, "DROP DATABASE %s", db);
  exec_ok(pg_uri, sql);
}

/* A database at Agenta's first tracing migration (58b1b61e5d6c), with enum
 * types missing labels, and two roots in one trace: apply completes it. */
static void test_schema_existing_table(void **state) {
  (void)state;
  char db[64];
  snprintf(db, sizeof db, "sg_test_schema_old_%d", (int)getpid());
  char sql[256];
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", db);
  exec_ok(pg_uri, sql);
  snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
  exec_ok(pg_uri, sql);
  char *uri = uri_with_db(db);
  exec_ok(uri,
      "CREATE TYPE otelspankind AS ENUM ('SPAN_KIND_UNSPECIFIED', 'SPAN_KIND_INTERNAL',"
      "  'SPAN_KIND_SERVER', 'SPAN_KIND_CLIENT', 'SPAN_KIND_PRODUCER', 'SPAN_KIND_CONSUMER');"
      "CREATE TYPE otelstatuscode AS ENUM ('STATUS_CODE_UNSET', 'STATUS_CODE_OK', 'STATUS_CODE_ERROR');"
      "CREATE TYPE spantype AS ENUM ('AGENT', 'CHAIN', 'WORKFLOW', 'TASK', 'TOOL', 'EMBEDDING',"
      "  'QUERY', 'COMPLETION', 'CHAT', 'RERANK');" /* no LLM, no UNKNOWN */
      "CREATE TABLE spans (project_id uuid NOT NULL,"
      "  created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP, updated_at timestamptz,"
      "  deleted_at timestamptz, created_by_id uuid NOT NULL, updated_by_id uuid,"
      "  deleted_by_id uuid, trace_id uuid NOT NULL, span_id uuid NOT NULL, parent_id uuid,"
      "  span_kind otelspankind NOT NULL, span_name varchar NOT NULL,"
      "  start_time timestamptz NOT NULL, end_time timestamptz NOT NULL,"
      "  status_code otelstatuscode NOT NULL, status_message varchar, attributes jsonb,"
      "  events jsonb, links jsonb, \"references\" jsonb,"
      "  PRIMARY KEY (project_id, trace_id, span_id));"
      "CREATE INDEX ix_project_id ON spans (project_id);"
      "CREATE INDEX ix_events_gin ON spans USING gin (events);"
      "INSERT INTO spans (project_id, created_by_id, trace_id, span_id, span_kind, span_name,"
      "  start_time, end_time, status_code) SELECT '00000000-0000-0000-0000-000000000001',"
      "  gen_random_uuid(), '00000000-0000-0000-0000-000000000002', gen_random_uuid(),"
      "  'SPAN_KIND_SERVER', 'root', now(), now(), 'STATUS_CODE_OK' FROM generate_series(1, 2)");
  sg_buf_t err = SG_BUF_INIT;
  /* Two roots in a trace: the unique index is skipped (WARNING), the rest applies. */
  assert_int_equal(sg_pg_schema_apply(uri, &err), 0);
  char *ux = query_value(uri, "SELECT count(*) FROM pg_class WHERE relname = 'ux_spans_root_per_trace'");
  assert_string_equal(ux, "0");
  free(ux);
  char *cols = query_value(uri, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'spans'::regclass"
                                " AND attname IN ('trace_type', 'span_type', 'hashes', 'exception')");
  assert_string_equal(cols, "4");
  free(cols);
  /* An existing index keeps its definition (events: plain jsonb_ops here). */
  char *ev = query_value(uri, "SELECT pg_get_indexdef('ix_events_gin'::regclass)");
  assert_null(strstr(ev, "jsonb_path_ops"));
  free(ev);
  /* Fix the trace, apply again: now complete. */
  exec_ok(uri, "DELETE FROM spans WHERE ctid = (SELECT min(ctid) FROM spans)");
  assert_int_equal(sg_pg_schema_apply(uri, &err), 0);
  check_schema(uri);
  char *labels = query_value(uri, "SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum"
                                  " WHERE enumtypid = 'spantype'::regtype");
  assert_string_equal(labels, "AGENT,CHAIN,WORKFLOW,TASK,TOOL,EMBEDDING,QUERY,COMPLETION,CHAT,RERANK,LLM,UNKNOWN");
  free(labels);
  char *n = query_value(uri, "SELECT count(*) FROM spans");
  assert_string_equal(n, "1");
  free(n);
  sg_buf_free(&err);
  free(uri);
  snprintf(sql, sizeof sql, "DROP DATABASE %s", db);
  exec_ok(pg_uri, sql);
}

/* ---- COPY ------------------------------------------------------------------- */

/* sg_pg_copy streams far more data than the socket takes at once (so it
 * must wait for writability), the statements after the COPY see its rows in
 * the same transaction, and a failure anywhere (bad data late in the COPY,
 * a key conflict, an error after it) commits nothing and leaves the
 * connection usable; the queue stays in order around COPYs. */
static void test_copy(void **state) {
  (void)state;
  char db[64], sql[256];
  snprintf(db, sizeof db, "sg_test_copy_%d", (int)getpid());
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", db);
  exec_ok(pg_uri, sql);
  snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
  exec_ok(pg_uri, sql);
  char *uri = uri_with_db(db);
  exec_ok(uri, "CREATE TABLE t (id int PRIMARY KEY, v text)");
  uv_loop_t loop;
  uv_loop_init(&loop);
  sg_pg_pool_t *pool = sg_pg_pool_new(&loop, uri, 1, NULL);
  assert_non_null(pool);

  /* 40,000 rows of ~500 bytes (20 MB), with escapes. */
  enum { N = 40000 };
  sg_buf_t big = SG_BUF_INIT;
  char pad[480];
  memset(pad, 'x', sizeof pad - 1);
  pad[sizeof pad - 1] = '\0';
  for (int i = 0; i < N; i++) sg_buf_printf(&big, "%d\ttab\\there\\\\ %s\n", i, pad);
  res_t r1 = {0}, before = {0}, after = {0};
  assert_int_equal(sg_pg_query(pool, "SELECT 'before'", 0, NULL, NULL, NULL, on_result, &before), 0);
  assert_int_equal(sg_pg_copy(pool, "COPY t (id, v) FROM STDIN; SELECT count(*)::text FROM t",
                              big.data, big.len, on_result, &r1), 0);
  assert_int_equal(sg_pg_query(pool, "SELECT 'after'", 0, NULL, NULL, NULL, on_result, &after), 0);
  assert_int_equal(r1.done, 0); /* never inside the call */
  assert_true(run_until(&loop, &after.done, 30000));
  assert_int_equal(before.done, 1);
  assert_int_equal(r1.done, 1);
  if (r1.err) fprintf(stderr, "copy: %s\n", r1.msg);
  assert_int_equal(r1.err, 0);
  assert_string_equal(r1.val, "40000"); /* the SELECT after the COPY sees its rows */
  assert_string_equal(after.val, "after");
  char *v = query_value(uri, "SELECT v FROM t WHERE id = 7");
  assert_int_equal(strncmp(v, "tab\there\\ xxx", strlen("tab\there\\ xxx")), 0);
  free(v);

  /* Bad data on the last line: nothing of it is committed. */
  sg_buf_t bad = SG_BUF_INIT;
  for (int i = N; i < 2 * N; i++) sg_buf_printf(&bad, "%d\t%s\n", i, pad);
  sg_buf_puts(&bad, "not-a-number\tx\n");
  res_t r2 = {0}, r3 = {0}, r4 = {0}, r5 = {0};
  assert_int_equal(sg_pg_copy(pool, "COPY t (id, v) FROM STDIN; SELECT 1", bad.data, bad.len, on_result, &r2), 0);
  /* A key that exists: 23505, nothing committed. */
  assert_int_equal(sg_pg_copy(pool, "COPY t (id, v) FROM STDIN", "100000\tnew\n7\tdup\n", 17, on_result, &r3), 0);
  /* The COPY succeeds, the statement after it fails: rolled back together. */
  assert_int_equal(sg_pg_copy(pool, "COPY t (id, v) FROM STDIN; SELECT 1/0", "100001\tx\n", 9, on_result, &r4), 0);
  /* Empty data: a COPY of no rows. */
  assert_int_equal(sg_pg_copy(pool, "COPY t (id, v) FROM STDIN; SELECT count(*)::text FROM t", NULL, 0,
                              on_result, &r5), 0);
  assert_true(run_until(&loop, &r5.done, 30000));
  assert_int_equal(r2.err, SG_EPOISON);
  assert_non_null(strstr(r2.msg, "22P02"));
  assert_int_equal(r3.err, SG_EPOISON);
  assert_non_null(strstr(r3.msg, "23505"));
  assert_int_equal(r4.err, SG_EPOISON);
  assert_non_null(strstr(r4.msg, "22012"));
  assert_int_equal(r5.err, 0);
  assert_string_equal(r5.val, "40000");
  char *n = query_value(uri, "SELECT count(*) FROM t");
  assert_string_equal(n, "40000");
  free(n);
  assert_int_equal(sg_pg_pool_stats(pool)->up, 1); /* the same connection throughout */
  assert_int_equal(sg_pg_pool_stats(pool)->reconnects, 0);
  assert_int_equal(sg_pg_pool_stats(pool)->errors, 3);

  /* Through sg_pg_query a COPY is still refused, and the connection survives. */
  res_t q1 = {0}, q2 = {0};
  assert_int_equal(sg_pg_query(pool, "COPY t (id, v) FROM STDIN", 0, NULL, NULL, NULL, on_result, &q1), 0);
  assert_int_equal(sg_pg_query(pool, "SELECT 'ok'", 0, NULL, NULL, NULL, on_result, &q2), 0);
  assert_true(run_until(&loop, &q2.done, 10000));
  assert_int_not_equal(q1.err, 0);
  assert_string_equal(q2.val, "ok");

  sg_pg_pool_close(pool);
  finish_loop(&loop);
  sg_buf_free(&big);
  sg_buf_free(&bad);
  snprintf(sql, sizeof sql, "DROP DATABASE %s", db);
  exec_ok(pg_uri, sql);
  free(uri);
}

int main(void) {
  pg_uri = getenv("SG_TEST_PG_URI");
  if (pg_uri == NULL || *pg_uri == '\0') {
    fprintf(stderr, "test_pg: SG_TEST_PG_URI is not set; these tests need a real PostgreSQL "
                    "(run them under scripts/testenv.sh)\n");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_query_params),
      cmocka_unit_test(test_sql_errors),
      cmocka_unit_test(test_copy),
      cmocka_unit_test(test_queue_bound_and_close),
      cmocka_unit_test(test_spare_connection),
      cmocka_unit_test(test_close_from_callback),
      cmocka_unit_test(test_server_down),
      cmocka_unit_test(test_exec_sync),
      cmocka_unit_test(test_schema_fresh_twice),
      cmocka_unit_test(test_schema_existing_table),
      cmocka_unit_test(test_sqlstate_table),
      cmocka_unit_test(test_read_only_server),
      cmocka_unit_test(test_statement_timeout),
      cmocka_unit_test(test_server_restart),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
