/* test_jalloc.c - regions for jansson's values: what is decoded inside one
 * comes from it, a value that outlives the region's owner stays readable,
 * and text jansson hands out goes back the right way. The sanitizer build
 * runs the same tests and checks that every region's memory is freed once
 * the owner and the last value are done (LeakSanitizer) and that nothing
 * reads a value after it was given back (the values are poisoned). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <jansson.h>

#include "decode.h"
#include "jalloc.h"
#include "span.h"

static void test_values_come_from_the_entered_region(void **state) {
  (void)state;
  sg_jregion_t *r = sg_jregion_new();
  assert_non_null(r);
  assert_int_equal(sg_jregion_values(r), 0);
  json_t *outside = json_string("before");
  sg_jregion_t *was = sg_jregion_enter(r);
  assert_null(was);
  json_t *o = json_object();
  assert_int_equal(json_object_set_new(o, "k", json_string("v")), 0);
  size_t taken = sg_jregion_values(r);
  assert_true(taken >= 3); /* the object, its table, the pair, the string and its bytes */
  /* a large value comes from malloc: the region does not grow by it */
  char big[16384];
  memset(big, 'x', sizeof big);
  json_t *bigs = json_stringn(big, sizeof big);
  assert_non_null(bigs);
  assert_int_equal(sg_jregion_values(r), taken + 1); /* the string's head, not its bytes */
  assert_ptr_equal(sg_jregion_enter(was), r);
  json_t *after = json_string("after");
  assert_int_equal(sg_jregion_values(r), taken + 1);
  json_decref(bigs);
  json_decref(o);
  assert_int_equal(sg_jregion_values(r), 0);
  sg_jregion_release(r);
  json_decref(outside);
  json_decref(after);
}

static void test_a_value_outlives_the_owner(void **state) {
  (void)state;
  sg_jregion_t *r = sg_jregion_new();
  sg_jregion_t *was = sg_jregion_enter(r);
  json_t *a = json_pack("{s:s, s:[i,i,i]}", "name", "kept", "n", 1, 2, 3);
  sg_jregion_enter(was);
  assert_non_null(a);
  json_t *keep = json_incref(json_object_get(a, "n"));
  json_decref(a);
  sg_jregion_release(r); /* the owner is done; the array still holds its memory */
  assert_int_equal(json_array_size(keep), 3);
  assert_int_equal(json_integer_value(json_array_get(keep, 2)), 3);
  json_decref(keep); /* the last value: the region goes (LeakSanitizer checks) */
}

static void test_nested_enter_restores(void **state) {
  (void)state;
  sg_jregion_t *a = sg_jregion_new(), *b = sg_jregion_new();
  sg_jregion_t *w0 = sg_jregion_enter(a);
  sg_jregion_t *w1 = sg_jregion_enter(b);
  json_t *in_b = json_integer(7);
  sg_jregion_enter(w1);
  json_t *in_a = json_integer(8);
  sg_jregion_enter(w0);
  assert_int_equal(sg_jregion_values(a), 1);
  assert_int_equal(sg_jregion_values(b), 1);
  sg_jregion_release(a);
  sg_jregion_release(b);
  json_decref(in_a);
  json_decref(in_b);
}

static void test_dumped_text(void **state) {
  (void)state;
  json_t *j = json_pack("{s:i}", "a", 1);
  char *t = json_dumps(j, JSON_COMPACT);
  assert_string_equal(t, "{\"a\":1}");
  sg_json_free(t);
  char *m = sg_json_dumps(j, JSON_COMPACT);
  assert_string_equal(m, "{\"a\":1}");
  free(m); /* plain malloc memory */
  json_decref(j);
}

/* A decoded batch inside a region: every value is taken from it, and
 * freeing the batch gives every one back. */
static void test_decoded_batch(void **state) {
  (void)state;
  static const char body[] =
      "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":\"svc\"}}]},"
      "\"scopeSpans\":[{\"spans\":[{\"traceId\":\"0af7651916cd43dd8448eb211c80319c\",\"spanId\":\"b7ad6b7169203331\","
      "\"name\":\"s\",\"startTimeUnixNano\":\"1\",\"endTimeUnixNano\":\"2\",\"attributes\":["
      "{\"key\":\"ag.data.inputs.q\",\"value\":{\"stringValue\":\"hello\"}},"
      "{\"key\":\"n\",\"value\":{\"intValue\":\"3\"}}]}]}]}]}";
  sg_span_batch_t batch;
  sg_span_batch_init(&batch);
  sg_buf_t err = SG_BUF_INIT;
  sg_jregion_t *r = sg_jregion_new();
  sg_jregion_t *was = sg_jregion_enter(r);
  int rc = sg_otlp_decode_json(body, sizeof body - 1, &batch, &err);
  sg_jregion_enter(was);
  assert_int_equal(rc, 0);
  assert_int_equal(batch.n, 1);
  assert_true(sg_jregion_values(r) > 0);
  assert_non_null(json_object_get(batch.spans[0].attributes, "n"));
  sg_span_batch_free(&batch);
  assert_int_equal(sg_jregion_values(r), 0);
  sg_jregion_release(r);
  sg_buf_free(&err);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_values_come_from_the_entered_region),
      cmocka_unit_test(test_a_value_outlives_the_owner),
      cmocka_unit_test(test_nested_enter_restores),
      cmocka_unit_test(test_dumped_text),
      cmocka_unit_test(test_decoded_batch),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
