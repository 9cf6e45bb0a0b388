/* test_read_jsonb.c - jsonb's rules over JSON text (read_jsonb.h). The
 * expected texts are what PostgreSQL 15 prints for the same input
 * (`'...'::jsonb::text`, `@>`, `#>`, `=`); tests/node/read_parity.test.mjs
 * compares against a live server on many more documents. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "read_jsonb.h"

/* text as jsonb::text, or "ERR" */
static char *canon(const char *text) {
  sg_jb_doc_t *d;
  const sg_jb_t *r;
  if (sg_jb_parse(text, strlen(text), &d, &r) != 0) return strdup("ERR");
  sg_buf_t b = SG_BUF_INIT;
  assert_int_equal(sg_jb_render(r, &b), 0);
  sg_jb_free(d);
  return b.data;
}

static void expect(const char *in, const char *want) {
  char *got = canon(in);
  assert_string_equal(got, want);
  free(got);
}

static void test_render(void **st) {
  (void)st;
  expect("{\"b\":1,\"aa\":2,\"a\":[1],\"a\":\"dup\\u00e9\\n\\u001f\\/\",\"c\":{}, \"d\":[]}",
         "{\"a\": \"dup\xc3\xa9\\n\\u001f/\", \"b\": 1, \"c\": {}, \"d\": [], \"aa\": 2}");
  expect("[1.50,1e2,-0,-0.00,1E-3,0.5e1,12.5e-1,1e+2,-1.2e-10, 0.0035339999999999998, 6892.7585841622131, "
         "true, null, false]",
         "[1.50, 100, 0, 0.00, 0.001, 5, 1.25, 100, -0.00000000012, 0.0035339999999999998, "
         "6892.7585841622131, true, null, false]");
  expect("123456789012345678901234567890.123456789e-5", "1234567890123456789012345.67890123456789");
  expect("-0e5", "0");
  expect("0.000e3", "0");
  expect("1.0e0", "1.0");
  expect("\"\\ud83d\\ude00 \\u0041\"", "\"\xf0\x9f\x98\x80 A\"");
  expect(" { } ", "{}");
  /* what jsonb refuses */
  expect("\"\\u0000\"", "ERR");
  expect("\"\\udc00\"", "ERR");
  expect("01", "ERR");
  expect("1e1001", "ERR");
  expect("[1,]", "ERR");
  expect("{\"a\" 1}", "ERR");
  expect("[1] x", "ERR");
  expect("\"tab\there\"", "ERR");
}

static int op(const char *a, const char *b, int which) {
  sg_jb_doc_t *da, *db;
  const sg_jb_t *ra, *rb;
  assert_int_equal(sg_jb_parse(a, strlen(a), &da, &ra), 0);
  assert_int_equal(sg_jb_parse(b, strlen(b), &db, &rb), 0);
  int r = which ? sg_jb_contains(ra, rb) : sg_jb_equal(ra, rb);
  sg_jb_free(da);
  sg_jb_free(db);
  return r;
}

static void test_contains_equal(void **st) {
  (void)st;
  assert_true(op("[1,[2,{\"a\":1}]]", "[[{\"a\":1}]]", 1));
  assert_true(op("[1,2]", "1", 1));
  assert_false(op("{\"a\":[1,2]}", "{\"a\":1}", 1)); /* the scalar exception is for the top only */
  assert_true(op("{\"a\":[1,2]}", "{\"a\":[1]}", 1));
  assert_false(op("1", "[1]", 1));
  assert_true(op("{\"a\":1}", "{}", 1));
  assert_true(op("[]", "[]", 1));
  assert_true(op("{\"a\":{\"b\":1,\"c\":2}}", "{\"a\":{\"b\":1.0}}", 1));
  assert_false(op("{\"a\":{\"b\":1}}", "{\"a\":[]}", 1));
  assert_false(op("{\"a\":\"x\"}", "[\"x\"]", 1));
  assert_true(op("1.0", "1", 0));
  assert_true(op("{\"a\":1,\"b\":[1,2]}", "{\"b\":[1,2.0],\"a\":1.00}", 0));
  assert_false(op("\"1\"", "1", 0));
  assert_false(op("[1,2]", "[2,1]", 0));
}

static const char *path(const char *doc, const char *p) { /* "a|b|c" */
  static char out[256];
  sg_jb_doc_t *d;
  const sg_jb_t *r;
  assert_int_equal(sg_jb_parse(doc, strlen(doc), &d, &r), 0);
  const char *seg[8];
  size_t len[8], n = 0;
  const char *s = p;
  while (*p) {
    const char *bar = strchr(s, '|');
    seg[n] = s;
    len[n++] = bar ? (size_t)(bar - s) : strlen(s);
    if (!bar) break;
    s = bar + 1;
  }
  const sg_jb_t *v = sg_jb_path(r, seg, len, n);
  if (!v) {
    snprintf(out, sizeof out, "NULL");
  } else {
    sg_buf_t b = SG_BUF_INIT;
    sg_jb_render(v, &b);
    snprintf(out, sizeof out, "%s", b.data);
    sg_buf_free(&b);
  }
  sg_jb_free(d);
  return out;
}

static void test_path(void **st) {
  (void)st;
  assert_string_equal(path("[1,2,3]", "-1"), "3");
  assert_string_equal(path("[1,2,3]", " 1"), "2");
  assert_string_equal(path("[1,2,3]", "+1"), "2");
  assert_string_equal(path("[1,2,3]", "1x"), "NULL");
  assert_string_equal(path("{\"1\":5}", "1"), "5");
  assert_string_equal(path("[1,2,3]", "-4"), "NULL");
  assert_string_equal(path("{\"a\":{\"b\":[{\"c\":null}]}}", "a|b|0|c"), "null");
  assert_string_equal(path("{\"a\":{\"b\":1}}", "a|b|c"), "NULL");
}

static void test_numbers(void **st) {
  (void)st;
  assert_int_equal(sg_jb_num_cmp("1", 1, "1.000", 5), 0);
  assert_true(sg_jb_num_cmp("1e2", 3, "99.999", 6) > 0);
  assert_true(sg_jb_num_cmp("-1", 2, "-0.5", 4) < 0);
  assert_int_equal(sg_jb_num_cmp("-0", 2, "0.0", 3), 0);
  assert_true(sg_jb_num_cmp("0.10000000000000001", 19, "0.1", 3) > 0);
  sg_jb_sum_t s;
  sg_jb_sum_init(&s);
  const char *xs[] = {"0.1", "0.2", "-0.3", "1e-20", "12345678901234567890", "-12345678901234567890", "0.0035339999999999998"};
  for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) assert_int_equal(sg_jb_sum_add(&s, xs[i], strlen(xs[i])), 0);
  /* exact: 0.1 + 0.2 - 0.3 is 0 here, unlike in doubles */
  assert_true(sg_jb_sum_value(&s) == strtod("0.00353399999999999980000000001", NULL));
  assert_int_equal(sg_jb_sum_add(&s, "x", 1), SG_EINVAL);
  sg_jb_sum_free(&s);
  sg_jb_sum_init(&s);
  assert_int_equal(sg_jb_sum_add(&s, "-2.5", 4), 0);
  assert_int_equal(sg_jb_sum_add(&s, "1", 1), 0);
  assert_true(sg_jb_sum_value(&s) == -1.5);
  sg_jb_sum_free(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_render),
      cmocka_unit_test(test_contains_equal),
      cmocka_unit_test(test_path),
      cmocka_unit_test(test_numbers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
