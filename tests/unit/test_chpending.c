/* test_chpending.c - the process-wide table of rows not yet in ClickHouse
 * (chpending.h): which reads may go to ClickHouse. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "chpending.h"

static const uint8_t A[16] = {1}, B[16] = {2};

static int reset(void **st) {
  (void)st;
  sg_chpending_reset();
  return 0;
}

static void test_before_and_done(void **st) {
  (void)st;
  assert_false(sg_chpending_before(A, 1000));
  sg_chpending_add(1, A, 100);
  sg_chpending_add(1, B, 200);
  sg_chpending_add(2, A, 300);
  /* a read that began before the append does not wait for it */
  assert_false(sg_chpending_before(A, 100));
  assert_true(sg_chpending_before(A, 101));
  assert_false(sg_chpending_before(B, 200));
  assert_true(sg_chpending_before(B, 201));
  assert_int_equal(sg_chpending_count(A), 2);
  sg_chpending_done(1, 100);
  assert_false(sg_chpending_before(A, 300)); /* worker 2's row is from 300 */
  assert_true(sg_chpending_before(A, 301));
  sg_chpending_done(2, 300);
  assert_false(sg_chpending_before(A, 1000));
  assert_true(sg_chpending_before(B, 1000));
  sg_chpending_done(1, 200);
  assert_false(sg_chpending_before(B, 1000));
  assert_int_equal(sg_chpending_count(A), 0);
  sg_chpending_done(1, 200); /* twice: harmless */
  sg_chpending_done(7, 12345); /* never added: harmless */
}

static void test_out_of_order_delivery(void **st) {
  (void)st;
  for (int i = 1; i <= 1000; i++) sg_chpending_add(3, i % 2 ? A : B, i);
  /* a held-back segment: the later ones are delivered first */
  for (int i = 501; i <= 1000; i++) sg_chpending_done(3, i);
  assert_true(sg_chpending_before(A, 2));
  assert_true(sg_chpending_before(B, 3));
  for (int i = 1; i <= 499; i++) sg_chpending_done(3, i);
  assert_false(sg_chpending_before(A, 5000));
  assert_true(sg_chpending_before(B, 5000)); /* 500 (even: B) is still held back */
  assert_int_equal(sg_chpending_count(A) + sg_chpending_count(B), 1);
  sg_chpending_done(3, 500);
  assert_false(sg_chpending_before(A, 5000));
  assert_false(sg_chpending_before(B, 5000));
}

static void test_unknown_and_order(void **st) {
  (void)st;
  sg_chpending_unknown(4, 50); /* replayed rows of unknown projects */
  assert_true(sg_chpending_before(A, 1));
  assert_int_equal(sg_chpending_unknown_until(4), 50);
  sg_chpending_unknown(4, 0);
  assert_false(sg_chpending_before(A, 1000));
  /* a time that does not increase cannot be tracked: the worker turns unknown */
  sg_chpending_add(4, A, 100);
  sg_chpending_add(4, B, 100);
  assert_true(sg_chpending_before(B, 101));
  assert_int_equal(sg_chpending_unknown_until(4), 100);
  sg_chpending_add(0, A, 1); /* out of range: ignored */
}

static void test_gaps(void **st) {
  (void)st;
  assert_int_equal(sg_chpending_gap_state(A, 1000, 100), SG_GAP_UNKNOWN);
  sg_chpending_gap_checked(A, 0, 1000);
  assert_int_equal(sg_chpending_gap_state(A, 1050, 100), SG_GAP_NO);
  assert_int_equal(sg_chpending_gap_state(A, 1101, 100), SG_GAP_UNKNOWN); /* too old */
  sg_chpending_gap_begin(A);
  assert_int_equal(sg_chpending_gap_state(A, 1050, 100), SG_GAP_YES);
  sg_chpending_gap_end(A, 1, 1060);
  /* committed after the last look began: that look may not have seen it */
  assert_int_equal(sg_chpending_gap_state(A, 1070, 100), SG_GAP_YES);
  sg_chpending_gap_checked(A, 0, 1050); /* an older look answering late changes nothing */
  assert_int_equal(sg_chpending_gap_state(A, 1070, 100), SG_GAP_YES);
  sg_chpending_gap_checked(A, 0, 1080); /* repaired meanwhile */
  assert_int_equal(sg_chpending_gap_state(A, 1090, 100), SG_GAP_NO);
  sg_chpending_gap_begin(B);
  sg_chpending_gap_end(B, 0, 0); /* the INSERT failed: known here only, for good */
  sg_chpending_gap_checked(B, 0, 5000);
  assert_int_equal(sg_chpending_gap_state(B, 5001, 100), SG_GAP_YES);
}

static void *adder(void *arg) {
  int w = (int)(intptr_t)arg;
  for (int i = 1; i <= 20000; i++) {
    sg_chpending_add(w, (i % 3) ? A : B, i);
    if (i > 10) sg_chpending_done(w, i - 10);
  }
  for (int i = 19991; i <= 20000; i++) sg_chpending_done(w, i);
  return NULL;
}

static void test_threads(void **st) {
  (void)st;
  pthread_t t[4];
  for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, adder, (void *)(intptr_t)(i + 10));
  for (int k = 0; k < 20000; k++) (void)sg_chpending_before(A, k);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  assert_false(sg_chpending_before(A, 1 << 30));
  assert_int_equal(sg_chpending_count(B), 0);
}

/* A read that finds a worker's rows undelivered tells that worker once. */
static void test_wanted(void **st) {
  (void)st;
  sg_chpending_add(1, A, 100);
  sg_chpending_add(2, B, 200);
  assert_false(sg_chpending_wanted(1));
  assert_false(sg_chpending_before(A, 100)); /* not before the read: nobody waits */
  assert_false(sg_chpending_wanted(1));
  assert_true(sg_chpending_before(A, 101));
  assert_true(sg_chpending_wanted(1));
  assert_false(sg_chpending_wanted(1)); /* taken */
  assert_false(sg_chpending_wanted(2)); /* worker 2 holds nothing of A */
  assert_true(sg_chpending_before(B, 201));
  assert_true(sg_chpending_wanted(2));
  assert_false(sg_chpending_wanted(0));
  assert_false(sg_chpending_wanted(SG_CHPENDING_MAX_WORKERS + 1));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_before_and_done, reset),
      cmocka_unit_test_setup(test_wanted, reset),
      cmocka_unit_test_setup(test_out_of_order_delivery, reset),
      cmocka_unit_test_setup(test_unknown_and_order, reset),
      cmocka_unit_test_setup(test_gaps, reset),
      cmocka_unit_test_setup(test_threads, reset),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  sg_chpending_reset();
  return rc;
}
