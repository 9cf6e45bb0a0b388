/* test_ch_insert.c - the settings every INSERT carries (ch_insert.h): a
 * spool segment's and a job's fresh insert, the token by server version. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ch_insert.h"

static const char SQL[] = "INSERT INTO `db`.spans (a) FORMAT TabSeparated";
static const char BODY[] = "1\n2\n";
/* BODY as a spool segment's two records */
static const sg_ch_piece_t PIECES[] = {{BODY, 2}, {BODY + 2, 2}};
static const sg_ch_piece_t WHOLE[] = {{BODY, 4}};

static void ver(sg_ch_version_t *v, const char *text) { assert_int_equal(sg_ch_version_parse(text, v), 0); }

static void test_segment(void **st) {
  (void)st;
  sg_ch_version_t v;
  sg_ch_insert_t ins;
  ver(&v, "18.16.1");
  assert_int_equal(sg_ch_insert_segment(&ins, &v, SQL, PIECES, 2, SG_CH_GZIP, "w1", 5, 9), 0);
  assert_ptr_equal(ins.req.sql, SQL);
  assert_ptr_equal(ins.req.pieces, PIECES);
  assert_int_equal(ins.req.npieces, 2);
  assert_int_equal(ins.req.flags, SG_CH_GZIP | SG_CH_IDEMPOTENT); /* a repeat is dropped: re-sendable */
  assert_string_equal(ins.req.settings, "insert_distributed_sync=1");
  assert_null(ins.req.dedup_token); /* 18.16 refuses the unknown setting */
  ver(&v, "22.1.3");
  assert_int_equal(sg_ch_insert_segment(&ins, &v, SQL, PIECES, 2, 0, "w1", 5, 9), 0);
  assert_null(ins.req.dedup_token);
  ver(&v, "22.2.1");
  assert_int_equal(sg_ch_insert_segment(&ins, &v, SQL, PIECES, 2, 0, "w1", 5, 9), 0);
  char want[SG_CH_TOKEN_MAX];
  assert_int_equal(sg_ch_dedup_token(want, "w1", 5, 9, WHOLE, 1, 0), 0); /* the bytes count, not the pieces */
  assert_non_null(ins.req.dedup_token);
  assert_string_equal(ins.req.dedup_token, want);
  assert_ptr_equal(ins.req.dedup_token, ins.token);
  assert_string_equal(ins.req.settings, "insert_distributed_sync=1");
  /* no scope: no token (a server that refused the setting) */
  assert_int_equal(sg_ch_insert_segment(&ins, &v, SQL, PIECES, 2, 0, NULL, 5, 9), 0);
  assert_null(ins.req.dedup_token);
  assert_int_equal(ins.req.flags, SG_CH_IDEMPOTENT);
}

static void test_fresh(void **st) {
  (void)st;
  sg_ch_insert_t ins;
  sg_ch_insert_fresh(&ins, SQL, BODY, 4, SG_CH_BORROW);
  assert_ptr_equal(ins.req.sql, SQL);
  assert_ptr_equal(ins.req.body, BODY);
  assert_int_equal(ins.req.len, 4);
  assert_int_equal(ins.req.flags, SG_CH_BORROW); /* re-sendable only when the caller says so */
  assert_string_equal(ins.req.settings, "insert_distributed_sync=1&insert_deduplicate=0");
  assert_null(ins.req.dedup_token);
  assert_null(ins.req.database);
  assert_int_equal(ins.req.timeout_ms, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_segment),
      cmocka_unit_test(test_fresh),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
