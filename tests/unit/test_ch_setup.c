/* test_ch_setup.c - ON CLUSTER statements that time out (ch_setup.h): which
 * answers mean "done where the servers are up, queued for those that are
 * down", and how long spangate lets ClickHouse wait. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ch_setup.h"

/* ClickHouse's own answers (18.16, and the wording of current versions). */
static const char DOWN_1816[] =
    "Code: 159, e.displayText() = DB::Exception: Watching task /clickhouse/task_queue/ddl/query-0000000004 "
    "is executing longer than distributed_ddl_task_timeout (=3) seconds. There are 2 unfinished hosts (0 of "
    "them are currently active), they are going to execute the query in background, e.what() = DB::Exception";
static const char BUSY_1816[] =
    "Code: 159, e.displayText() = DB::Exception: Watching task /clickhouse/task_queue/ddl/query-0000000004 "
    "is executing longer than distributed_ddl_task_timeout (=3) seconds. There are 3 unfinished hosts (1 of "
    "them are currently active), they are going to execute the query in background";
static const char DOWN_NEW[] =
    "Code: 159. DB::Exception: Watching task /clickhouse/task_queue/ddl/query-0000000012 is executing longer "
    "than distributed_ddl_task_timeout (=5) seconds. There are 1 unfinished hosts (0 of them are currently "
    "executing the task), they are going to execute the query in background. (TIMEOUT_EXCEEDED)";

static void test_queued_for_down(void **st) {
  (void)st;
  long n = -1;
  assert_int_equal(sg_ch_ddl_queued_for_down(159, DOWN_1816, &n), 1);
  assert_int_equal(n, 2);
  assert_int_equal(sg_ch_ddl_queued_for_down(159, DOWN_NEW, &n), 1);
  assert_int_equal(n, 1);
  assert_int_equal(sg_ch_ddl_queued_for_down(159, DOWN_1816, NULL), 1);
  /* a server that is up is still at it: not done */
  n = -1;
  assert_int_equal(sg_ch_ddl_queued_for_down(159, BUSY_1816, &n), 0);
  assert_int_equal(n, -1);
  /* another code, or text that is not ClickHouse's */
  assert_int_equal(sg_ch_ddl_queued_for_down(57, DOWN_1816, &n), 0);
  assert_int_equal(sg_ch_ddl_queued_for_down(159, NULL, &n), 0);
  assert_int_equal(sg_ch_ddl_queued_for_down(159, "", &n), 0);
  assert_int_equal(sg_ch_ddl_queued_for_down(159, "There are many unfinished hosts (0 of them are currently active)", &n), 0);
  assert_int_equal(sg_ch_ddl_queued_for_down(159, "(0 of them are currently active) There are 2 unfinished hosts", &n), 0);
  assert_int_equal(sg_ch_ddl_queued_for_down(159, "There are 2 unfinished hosts 0 of them are currently active", &n), 0);
}

static void test_wait(void **st) {
  (void)st;
  sg_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.clickhouse_timeout_ms = 30000;
  assert_int_equal(sg_ch_ddl_wait_s(&cfg), 30);
  cfg.clickhouse_timeout_ms = 2500;
  assert_int_equal(sg_ch_ddl_wait_s(&cfg), 3);
  cfg.clickhouse_timeout_ms = 100;
  assert_int_equal(sg_ch_ddl_wait_s(&cfg), 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_queued_for_down),
      cmocka_unit_test(test_wait),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
