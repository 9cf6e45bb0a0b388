/* test_json_load.c - the estimate of jansson's tree size and the bounded
 * parse (json_load.h), checked against what jansson really allocates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <malloc.h>

#include "buf.h"
#include "err.h"
#include "json_load.h"

/* jansson's allocations, as malloc's usable size plus its 8-byte header
 * (what the heap really gives): live now and the peak since reset. */
static size_t live, peak, nallocs;

static void *count_malloc(size_t n) {
  void *p = malloc(n);
  if (p) {
    live += malloc_usable_size(p) + 8;
    nallocs++;
    if (live > peak) peak = live;
  }
  return p;
}

static void count_free(void *p) {
  if (p) live -= malloc_usable_size(p) + 8;
  free(p);
}

static int setup(void **st) {
  (void)st;
  json_set_alloc_funcs(count_malloc, count_free);
  return 0;
}

static void repeat(sg_buf_t *b, const char *s, size_t times) {
  for (size_t i = 0; i < times; i++) assert_int_equal(sg_buf_puts(b, s), 0);
}

/* The estimate is at least what jansson takes at its peak, and not far
 * above, for the shapes that matter: spans as clients send them and the
 * dense documents an attacker would send. */
static void check_shape(const char *name, const sg_buf_t *b) {
  size_t est = sg_json_tree_cost(b->data, b->len);
  live = peak = 0;
  json_error_t je;
  json_t *doc = json_loadb(b->data, b->len, JSON_ALLOW_NUL, &je);
  assert_non_null(doc);
  printf("# %-16s %8zu bytes: jansson peak %6.1fx, estimate %6.1fx\n", name, b->len,
         (double)peak / (double)b->len, (double)est / (double)b->len);
  assert_true(est >= peak);
  assert_true(est < peak + peak / 2);
  json_decref(doc);
}

static void test_estimate(void **st) {
  (void)st;
  sg_buf_t b = SG_BUF_INIT;
  sg_buf_puts(&b, "{\"x\":[");
  repeat(&b, "0,", 100000);
  sg_buf_puts(&b, "0],\"resourceSpans\":[]}");
  check_shape("zeros", &b);
  b.len = 0;
  sg_buf_puts(&b, "[");
  repeat(&b, "{},", 50000);
  sg_buf_puts(&b, "{}]");
  check_shape("empty objects", &b);
  b.len = 0;
  sg_buf_puts(&b, "[");
  repeat(&b, "[],", 50000);
  sg_buf_puts(&b, "\"\"]");
  check_shape("empty arrays", &b);
  b.len = 0;
  sg_buf_puts(&b, "{\"spans\":[");
  for (int i = 0; i < 2000; i++)
    sg_buf_printf(&b, "%s{\"trace_id\":\"%032x\",\"span_id\":\"%016x\",\"span_name\":\"n \\\"q\\\" \\u00e9\","
                  "\"attributes\":{\"a.b\":%d,\"c\":[1.5,true,null,\"x\"],\"long key of some length\":"
                  "{\"d\":\"%0200d\"}}}", i ? "," : "", i + 1, i + 1, i, i);
  sg_buf_puts(&b, "]}");
  check_shape("native spans", &b);
  b.len = 0;
  sg_buf_puts(&b, "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[");
  for (int i = 0; i < 1000; i++) {
    sg_buf_printf(&b, "%s{\"traceId\":\"%032x\",\"spanId\":\"%016x\",\"attributes\":[", i ? "," : "",
                  i + 1, i + 1);
    for (int k = 0; k < 20; k++)
      sg_buf_printf(&b, "%s{\"key\":\"k%d\",\"value\":{\"intValue\":%d}}", k ? "," : "", k, k);
    sg_buf_puts(&b, "]}");
  }
  sg_buf_puts(&b, "]}]}]}");
  check_shape("otlp small ints", &b);
  sg_buf_free(&b);
}

/* Over its budget a document is refused before jansson allocates anything. */
static void test_bounded(void **st) {
  (void)st;
  assert_int_equal(sg_json_tree_budget(0), SG_JSON_TREE_SLACK);
  assert_int_equal(sg_json_tree_budget(1000), 64000 + SG_JSON_TREE_SLACK);
  assert_int_equal(sg_json_tree_budget(SIZE_MAX / 2), SG_JSON_TREE_MAX);
  assert_int_equal(sg_json_tree_budget(64u << 20), SG_JSON_TREE_MAX);

  sg_buf_t b = SG_BUF_INIT;
  sg_buf_puts(&b, "[");
  repeat(&b, "{},", 20000);
  sg_buf_puts(&b, "{}]");
  json_t *doc = (json_t *)1;
  json_error_t je;
  size_t cost = 0;
  nallocs = 0;
  assert_int_equal(sg_json_load_bounded(b.data, b.len, 0, 1u << 20, &doc, &je, &cost), SG_ETOOBIG);
  assert_null(doc);
  assert_int_equal(nallocs, 0);
  assert_true(cost > 1u << 20);
  assert_int_equal(sg_json_load_bounded(b.data, b.len, 0, cost, &doc, &je, NULL), 0);
  assert_int_equal(json_array_size(doc), 20001);
  sg_json_release(doc, cost);
  assert_int_equal(sg_json_load_bounded("[1,", 3, 0, 1u << 20, &doc, &je, NULL), SG_EPARSE);
  assert_null(doc);
  assert_true(je.text[0] != '\0');
  sg_buf_free(&b);
}

/* Whatever the text, the estimate is finite and the scan stays in bounds
 * (escaped quotes, runs of backslashes, unterminated strings, NULs, more
 * nesting than jansson accepts). */
static void test_odd_text(void **st) {
  (void)st;
  static const char *const texts[] = {
      "", "\"", "\"\\", "\"\\\"", "\"\\\\\"", "{\"a\\\"b\":\"c\\\\\\\"d\"}", "\\\\\\\"\"",
      "{\"a\":", "}}]]", "tru", "-", "[1e5,-0.5,2E-3]", "{\"k\" : \"v\" , \"k2\" : [ ] }",
  };
  for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
    size_t c = sg_json_tree_cost(texts[i], strlen(texts[i]));
    assert_true(c < 4096);
  }
  /* The string contents of {"a\"b":"c\\\"d"}: one member, one string. */
  assert_int_equal(sg_json_tree_cost("{\"a\\\"b\":\"c\\\\\\\"d\"}", 17), 224 + 112 + 4 + 80 + 6);
  char nul[5] = {'[', '\0', '1', '\0', ']'};
  assert_true(sg_json_tree_cost(nul, sizeof nul) < 4096);
  /* jansson stops at 2048 levels with an error: the estimate stops there
   * too, so such a document gets jansson's error, not SG_ETOOBIG. */
  sg_buf_t b = SG_BUF_INIT;
  repeat(&b, "[{\"a\":", 3000);
  /* per [{"a": : an array (a member's value: no slot), an object in the
   * array's slot, a member keyed "a"; 1024 of them make 2048 levels */
  assert_int_equal(sg_json_tree_cost(b.data, b.len), 1024 * (128 + 224 + 16 + 112 + 1));
  b.len = 0;
  repeat(&b, "[", 100000);
  repeat(&b, "]", 100000);
  json_t *doc;
  json_error_t je;
  assert_int_equal(sg_json_load_bounded(b.data, b.len, 0, sg_json_tree_budget(b.len), &doc, &je, NULL),
                   SG_EPARSE);
  assert_non_null(strstr(je.text, "depth"));
  sg_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_estimate),
      cmocka_unit_test(test_bounded),
      cmocka_unit_test(test_odd_text),
  };
  return cmocka_run_group_tests_name("json_load", tests, setup, NULL);
}
