/* test_route.c - endpoint tables: path patterns, method masks, Allow, media
 * types; a table with the endpoints that come next (PUT and DELETE on a
 * trace under two paths, one handler); and the gateway's own table
 * answering as its documentation says. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"
#include "route.h"
#include "router.h"

static void read_trace(const sg_route_call_t *c) { (void)c; }
static void edit_trace(const sg_route_call_t *c) { (void)c; }
static void ingest(const sg_route_call_t *c) { (void)c; }

/* What `DELETE /v1/traces/{id}` and `PUT` (also under Agenta's
 * /api/tracing/traces/{id}) take: two rows and one handler. */
static const sg_route_t next_table[] = {
    {SG_M_POST, "/v1/traces", "otlp", 1, "application/x-protobuf, application/json", ingest, NULL},
    {SG_M_GET | SG_M_HEAD, "/v1/traces/{trace_id}", "trace", 1, NULL, read_trace, NULL},
    {SG_M_PUT | SG_M_DELETE, "/v1/traces/{trace_id}", "trace_edit", 1, "application/json", edit_trace,
     NULL},
    {SG_M_PUT | SG_M_DELETE, "/api/tracing/traces/{trace_id}", "trace_edit", 1, "application/json",
     edit_trace, NULL},
};
#define NNEXT (sizeof next_table / sizeof next_table[0])

static void find(const sg_route_t *t, size_t n, enum http_method m, const char *path,
                 sg_route_match_t *out) {
  sg_route_find(t, n, m, path, out);
}

static void test_path_patterns(void **state) {
  (void)state;
  const char *p;
  size_t n;
  assert_true(sg_route_path_match("/healthz", "/healthz", &p, &n));
  assert_null(p);
  assert_int_equal(n, 0);
  assert_false(sg_route_path_match("/healthz", "/healthz/", NULL, NULL));
  assert_false(sg_route_path_match("/healthz", "/health", NULL, NULL));
  assert_true(sg_route_path_match("/v1/traces/{id}", "/v1/traces/abc", &p, &n));
  assert_int_equal(n, 3);
  assert_memory_equal(p, "abc", 3);
  /* {name} is one non-empty segment. */
  assert_false(sg_route_path_match("/v1/traces/{id}", "/v1/traces/", NULL, NULL));
  assert_false(sg_route_path_match("/v1/traces/{id}", "/v1/traces/a/b", NULL, NULL));
  assert_false(sg_route_path_match("/v1/traces/{id}", "/v1/traces", NULL, NULL));
  /* ... also in the middle of a pattern. */
  assert_true(sg_route_path_match("/v1/traces/{id}/spans", "/v1/traces/x1/spans", &p, &n));
  assert_memory_equal(p, "x1", 2);
  assert_int_equal(n, 2);
  assert_false(sg_route_path_match("/v1/traces/{id}/spans", "/v1/traces/x1/span", NULL, NULL));
  assert_false(sg_route_path_match("/v1/{broken", "/v1/x", NULL, NULL));
}

static void test_next_endpoints(void **state) {
  (void)state;
  sg_route_match_t m;
  /* One handler under both paths, by method mask, with its parameter. */
  find(next_table, NNEXT, HTTP_DELETE, "/v1/traces/0af7651916cd43dd8448eb211c80319c", &m);
  assert_non_null(m.route);
  assert_ptr_equal(m.route->handler, edit_trace);
  assert_int_equal(m.param_len, 32);
  assert_memory_equal(m.param, "0af7651916cd43dd8448eb211c80319c", 32);
  find(next_table, NNEXT, HTTP_PUT, "/api/tracing/traces/abc", &m);
  assert_non_null(m.route);
  assert_ptr_equal(m.route->handler, edit_trace);
  assert_string_equal(m.route->label, "trace_edit");
  assert_int_equal(m.param_len, 3);
  assert_memory_equal(m.param, "abc", 3);
  /* GET on the same path is another row. */
  find(next_table, NNEXT, HTTP_GET, "/v1/traces/abc", &m);
  assert_ptr_equal(m.route->handler, read_trace);
  find(next_table, NNEXT, HTTP_HEAD, "/v1/traces/abc", &m);
  assert_ptr_equal(m.route->handler, read_trace);
  /* 405: Allow is every row of the path. */
  find(next_table, NNEXT, HTTP_POST, "/v1/traces/abc", &m);
  assert_null(m.route);
  assert_ptr_equal(m.path_route, &next_table[1]);
  char allow[64];
  sg_route_allow_text(m.allow, allow, sizeof allow);
  assert_string_equal(allow, "GET, HEAD, PUT, DELETE");
  find(next_table, NNEXT, HTTP_GET, "/api/tracing/traces/abc", &m);
  assert_null(m.route);
  sg_route_allow_text(m.allow, allow, sizeof allow);
  assert_string_equal(allow, "PUT, DELETE");
  /* The exact path is not the parameterised one. */
  find(next_table, NNEXT, HTTP_DELETE, "/v1/traces", &m);
  assert_null(m.route);
  sg_route_allow_text(m.allow, allow, sizeof allow);
  assert_string_equal(allow, "POST");
  /* 404. */
  find(next_table, NNEXT, HTTP_GET, "/v1/traces/a/b", &m);
  assert_null(m.path_route);
  assert_int_equal(m.allow, 0);
}

static void test_allow_and_media(void **state) {
  (void)state;
  char a[16];
  sg_route_allow_text(SG_M_GET | SG_M_HEAD | SG_M_POST | SG_M(HTTP_OPTIONS), a, sizeof a);
  assert_string_equal(a, "GET, HEAD, POST"); /* truncated at a whole method */
  char b[64];
  sg_route_allow_text(SG_M(HTTP_OPTIONS) | SG_M_DELETE, b, sizeof b);
  assert_string_equal(b, "DELETE, OPTIONS");
  sg_route_allow_text(0, b, sizeof b);
  assert_string_equal(b, "");

  char mt[32];
  sg_route_media_type(" Application/JSON ; charset=utf-8", mt, sizeof mt);
  assert_string_equal(mt, "application/json");
  sg_route_media_type(NULL, mt, sizeof mt);
  assert_string_equal(mt, "");
  const char *otlp = "application/x-protobuf, application/json";
  assert_true(sg_route_media_ok(otlp, "application/json"));
  assert_true(sg_route_media_ok(otlp, "application/x-protobuf"));
  assert_false(sg_route_media_ok(otlp, "application/x-proto"));
  assert_false(sg_route_media_ok(otlp, "application/jsonx"));
  assert_false(sg_route_media_ok(otlp, ""));
  assert_true(sg_route_media_ok(NULL, "text/plain"));
}

/* The gateway's table answers as README's endpoint table says. */
static void test_gateway_table(void **state) {
  (void)state;
  size_t n;
  const sg_route_t *t = sg_router_table(&n);
  static const struct {
    enum http_method m;
    const char *path, *label, *allow; /* label NULL: 404; allow: 405 */
  } cases[] = {
      {HTTP_POST, "/v1/traces", "otlp", NULL},
      {HTTP_POST, "/api/otlp/v1/traces", "otlp", NULL},
      {HTTP_GET, "/v1/traces", "otlp", "POST"},
      {HTTP_POST, "/v1/spans", "native", NULL},
      {HTTP_POST, "/api/tracing/spans/ingest", "native", NULL},
      {HTTP_GET, "/v1/traces/0af7651916cd43dd8448eb211c80319c", "trace", NULL},
      {HTTP_HEAD, "/v1/traces/x", "trace", NULL},
      {HTTP_POST, "/v1/traces/x", "trace", "GET, HEAD, PUT, DELETE"},
      {HTTP_PUT, "/v1/traces/x", "trace", NULL},
      {HTTP_DELETE, "/v1/traces/x", "trace", NULL},
      {HTTP_PUT, "/api/tracing/traces/x", "trace_edit", NULL},
      {HTTP_DELETE, "/api/tracing/traces/x", "trace_edit", NULL},
      {HTTP_GET, "/api/tracing/traces/x", "trace_edit", "PUT, DELETE"},
      {HTTP_POST, "/v1/spans/query", "query", NULL},
      {HTTP_GET, "/v1/analytics/spans", "analytics", NULL},
      {HTTP_GET, "/healthz", "healthz", NULL},
      {HTTP_DELETE, "/healthz", "healthz", "GET, HEAD"},
      {HTTP_GET, "/readyz", "readyz", NULL},
      {HTTP_GET, "/metrics", "metrics", NULL},
      {HTTP_GET, "/nope", NULL, NULL},
      {HTTP_GET, "/v1/traces/", NULL, NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    sg_route_match_t m;
    sg_route_find(t, n, cases[i].m, cases[i].path, &m);
    if (cases[i].label == NULL) {
      assert_null(m.path_route);
      continue;
    }
    assert_non_null(m.path_route);
    assert_string_equal(m.path_route->label, cases[i].label);
    if (cases[i].allow) {
      char allow[64];
      assert_null(m.route);
      sg_route_allow_text(m.allow, allow, sizeof allow);
      assert_string_equal(allow, cases[i].allow);
    } else {
      assert_non_null(m.route);
      assert_non_null(m.route->handler);
    }
  }
  /* The edit and delete rows beside the read's, with a handler each, and
   * the same pair on Agenta's path. */
  static const struct {
    enum http_method m;
    const char *path, *label;
  } rows[] = {
      {HTTP_PUT, "/v1/traces/x", "trace_edit"},
      {HTTP_DELETE, "/v1/traces/x", "trace_delete"},
      {HTTP_PUT, "/api/tracing/traces/x", "trace_edit"},
      {HTTP_DELETE, "/api/tracing/traces/x", "trace_delete"},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    sg_route_match_t m;
    sg_route_find(t, n, rows[i].m, rows[i].path, &m);
    assert_non_null(m.route);
    assert_string_equal(m.route->label, rows[i].label);
    assert_int_equal(m.param_len, 1);
  }
  /* Ingest and reads need a key, the operations endpoints none. */
  for (size_t i = 0; i < n; i++)
    assert_int_equal(t[i].key, strncmp(t[i].path, "/v1/", 4) == 0 || strncmp(t[i].path, "/api/", 5) == 0);
}

/* Metrics route labels: one slot per label, "other" in slot 0. */
static void test_metrics_labels(void **state) {
  (void)state;
  sg_router_init();
  int a = sg_metrics_route_slot("otlp"), b = sg_metrics_route_slot("analytics");
  assert_true(a > 0 && b > 0 && a != b);
  assert_int_equal(sg_metrics_route_slot("otlp"), a);
  assert_int_equal(sg_metrics_route_slot("other"), SG_METRIC_ROUTE_OTHER);
  sg_metrics_observe(b, 200, 1000000);
  sg_buf_t out = SG_BUF_INIT;
  assert_int_equal(sg_metrics_render(&out), 0);
  assert_non_null(strstr(out.data, "spangate_http_requests_total{route=\"analytics\",status=\"200\"} 1\n"));
  sg_buf_free(&out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_path_patterns),   cmocka_unit_test(test_next_endpoints),
      cmocka_unit_test(test_allow_and_media), cmocka_unit_test(test_gateway_table),
      cmocka_unit_test(test_metrics_labels),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
