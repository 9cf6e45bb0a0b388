/* test_ingest.c - the ingest pipeline driven without HTTP, as another
 * transport (OTLP/gRPC) would: a worker with its PostgreSQL pool, group
 * commit and Lua state, sg_ingest_submit() with a body, an encoding and a
 * reserve callback on the process's budget, and the result classes. Runs
 * against a real PostgreSQL (SG_TEST_PG_URI, scripts/testenv.sh) in a
 * database of its own; every test closes its loop. */
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
#include <zlib.h>

#include "budget.h"
#include "err.h"
#include "inflate.h"
#include "ingest.h"
#include "pg.h"
#include "pg_schema.h"
#include "worker.h"

static const char *base_uri;
static char *uri;
static char dbname[64];

/* ---- a worker without HTTP ------------------------------------------------------ */

typedef struct {
  sg_worker_t w;
  sg_config_t cfg;
  _Atomic int64_t counter; /* the "process-wide" budget of this test */
  sg_budget_t budget;
  size_t held;             /* what this request holds in it */
} env_t;

static void env_open(env_t *e, size_t max_inflight) {
  memset(e, 0, sizeof *e);
  assert_int_equal(sg_config_defaults(&e->cfg), 0);
  sg_worker_t *w = &e->w;
  w->cfg = &e->cfg;
  w->id = 1;
  assert_int_equal(uv_loop_init(&w->loop), 0);
  uv_timer_init(&w->loop, &w->sync_timer);
  w->sync_timer.data = w;
  sg_buf_t err = SG_BUF_INIT;
  w->lua = sg_lua_rt_new(&e->cfg, &err); /* the shipped scripts (lua/) */
  if (!w->lua) fprintf(stderr, "lua: %s\n", err.data);
  assert_non_null(w->lua);
  sg_buf_free(&err);
  w->pg = sg_pg_pool_new(&w->loop, uri, 1, NULL);
  assert_non_null(w->pg);
  sg_pgsink_opts_t so;
  memset(&so, 0, sizeof so);
  w->sink = sg_pgsink_new(&w->loop, w->pg, &so);
  assert_non_null(w->sink);
  e->budget.counter = &e->counter;
  e->budget.max = max_inflight;
}

static void env_close(env_t *e) {
  sg_worker_t *w = &e->w;
  sg_pgsink_close(w->sink);
  sg_pg_pool_close(w->pg);
  uv_close((uv_handle_t *)&w->sync_timer, NULL);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&w->loop), 0);
  sg_lua_rt_free(w->lua);
  sg_config_free(&e->cfg);
  sg_budget_release(&e->budget, &e->held);
}

typedef struct {
  int done;
  sg_ingest_class_t cls;
  char message[256];
  int retry_after_s;
  size_t stored, rejected;
  char first_trace[37];
} result_t;

static void done_cb(void *arg, const sg_ingest_result_t *res) {
  result_t *r = arg;
  r->done++;
  r->cls = res->cls;
  snprintf(r->message, sizeof r->message, "%s", res->message);
  r->retry_after_s = res->retry_after_s;
  r->stored = res->stored;
  r->rejected = res->rejected;
  if (res->batch && res->batch->n) sg_uuid_format(res->batch->spans[0].trace_id, r->first_trace);
}

static int reserve_cb(void *arg, size_t n) {
  env_t *e = arg;
  return sg_budget_take(&e->budget, &e->held, n);
}

static void tick(uv_timer_t *t) { (void)t; }

static void submit_and_wait(env_t *e, sg_ingest_format_t format, const void *body, size_t len,
                            int encoding, result_t *r) {
  static const sg_principal_t who = {{0x01, 0x90, 0xa3, 0xb4, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x0a},
                                     0, {0}};
  sg_ingest_req_t rq;
  memset(&rq, 0, sizeof rq);
  rq.format = format;
  rq.body = body;
  rq.len = len;
  rq.encoding = encoding;
  rq.reserve = reserve_cb;
  rq.reserve_arg = e;
  rq.done = done_cb;
  rq.arg = r;
  memset(r, 0, sizeof *r);
  sg_ingest_submit(&e->w, &who, &rq);
  uv_timer_t t;
  uv_timer_init(&e->w.loop, &t);
  uv_timer_start(&t, tick, 10, 10);
  uint64_t deadline = uv_now(&e->w.loop) + 20000;
  while (!r->done && uv_now(&e->w.loop) < deadline) uv_run(&e->w.loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&e->w.loop, UV_RUN_NOWAIT);
  assert_int_equal(r->done, 1);
}

static size_t gzip(const char *in, uint8_t *out, size_t cap) {
  z_stream z;
  memset(&z, 0, sizeof z);
  assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)strlen(in);
  z.next_out = out;
  z.avail_out = (uInt)cap;
  assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
  size_t n = z.total_out;
  deflateEnd(&z);
  return n;
}

/* Two spans, one of them with a span id of the wrong length. */
static const char two_spans[] =
    "{\"spans\":[{\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"span_id\":\"00f067aa0ba902b7\","
    "\"span_name\":\"kept\",\"start_time\":1700000000000000,\"end_time\":1700000000000001,"
    "\"attributes\":{\"pad\":\"................................................................\"}},"
    "{\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"span_id\":\"00f0\","
    "\"span_name\":\"refused\",\"start_time\":1700000000000000,\"end_time\":1700000000000001}]}";

/* A gzipped native body: committed, the bad span rejected alone, the
 * decompressed copy counted in the budget through the transport's callback. */
static void test_commit_without_http(void **state) {
  (void)state;
  env_t e;
  env_open(&e, 0);
  uint8_t gz[1024];
  size_t n = gzip(two_spans, gz, sizeof gz);
  result_t r;
  submit_and_wait(&e, SG_INGEST_NATIVE_JSON, gz, n, SG_ENC_AUTO, &r);
  assert_int_equal(r.cls, SG_INGEST_OK);
  assert_int_equal(r.stored, 1);
  assert_int_equal(r.rejected, 1);
  assert_non_null(strstr(r.message, "span_id"));
  assert_string_equal(r.first_trace, "4bf92f35-77b3-4da6-a3ce-929d0e0e4736");
  assert_true(e.held >= strlen(two_spans)); /* the inflated copy, counted as it grew */
  PGconn *c = PQconnectdb(uri);
  PGresult *res = PQexec(c, "SELECT project_id::text || ' ' || span_name FROM spans");
  assert_int_equal(PQntuples(res), 1);
  assert_string_equal(PQgetvalue(res, 0, 0), "0190a3b4-0000-7000-8000-00000000000a kept");
  PQclear(res);
  PQfinish(c);
  env_close(&e);
}

/* The same budget every transport shares: no room now is "busy" (retry),
 * a copy that could never fit is "too large". */
static void test_budget_classes(void **state) {
  (void)state;
  uint8_t gz[1024];
  size_t n = gzip(two_spans, gz, sizeof gz);
  env_t e;
  result_t r;

  env_open(&e, 1 << 20);
  e.counter = (1 << 20) - 100; /* other requests hold nearly all of it */
  submit_and_wait(&e, SG_INGEST_NATIVE_JSON, gz, n, SG_ENC_GZIP, &r);
  assert_int_equal(r.cls, SG_INGEST_BUSY);
  assert_int_equal(r.retry_after_s, 1);
  assert_non_null(strstr(r.message, "max_inflight_bytes"));
  e.counter = 0;
  env_close(&e);

  env_open(&e, 64);
  submit_and_wait(&e, SG_INGEST_NATIVE_JSON, gz, n, SG_ENC_GZIP, &r);
  assert_int_equal(r.cls, SG_INGEST_TOO_LARGE);
  assert_string_equal(r.message, "request body exceeds max_inflight_bytes once decompressed");
  env_close(&e);
}

/* Bodies that are not what they claim: bad input, with the decoder's or the
 * inflater's reason; nothing reaches PostgreSQL. */
static void test_bad_input(void **state) {
  (void)state;
  env_t e;
  env_open(&e, 0);
  result_t r;
  submit_and_wait(&e, SG_INGEST_OTLP_JSON, "{\"resourceSpans\": 7}", 20, SG_ENC_AUTO, &r);
  assert_int_equal(r.cls, SG_INGEST_BAD_INPUT);
  assert_non_null(strstr(r.message, "resourceSpans"));
  static const uint8_t not_gzip[] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 'x', 'y'};
  submit_and_wait(&e, SG_INGEST_OTLP_PROTO, not_gzip, sizeof not_gzip, SG_ENC_AUTO, &r);
  assert_int_equal(r.cls, SG_INGEST_BAD_INPUT);
  assert_string_equal(r.message, "request body looks compressed but does not decompress");
  submit_and_wait(&e, SG_INGEST_NATIVE_JSON, "{}", 2, SG_ENC_GZIP, &r);
  assert_int_equal(r.cls, SG_INGEST_BAD_INPUT);
  assert_string_equal(r.message, "request body does not decompress as its Content-Encoding says");
  env_close(&e);
}

static int setup(void **state) {
  (void)state;
  char sql[256];
  sg_buf_t err = SG_BUF_INIT;
  snprintf(dbname, sizeof dbname, "sg_test_ingest_%d", (int)getpid());
  snprintf(sql, sizeof sql, "CREATE DATABASE %s", dbname);
  if (sg_pg_exec_sync(base_uri, sql, &err) != 0) {
    fprintf(stderr, "test_ingest: %s\n", err.data);
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
  if (rc) fprintf(stderr, "test_ingest: schema: %s\n", err.data);
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
    fprintf(stderr, "test_ingest: SG_TEST_PG_URI is not set; these tests need a real PostgreSQL "
                    "(run them under scripts/testenv.sh)\n");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_commit_without_http),
      cmocka_unit_test(test_budget_classes),
      cmocka_unit_test(test_bad_input),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
