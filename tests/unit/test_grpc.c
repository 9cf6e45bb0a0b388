/* test_grpc.c - what grpc.c writes into trailers: grpc-message's
 * percent-encoding (and its cut at a UTF-8 boundary) and the
 * google.rpc.Status of grpc-status-details-bin with its RetryInfo, read
 * back with the generated protobuf-c code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "google/rpc/retry_info.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "grpc.h"

static void percent_encoding(void **state) {
  (void)state;
  sg_buf_t b = SG_BUF_INIT;
  assert_int_equal(sg_grpc_percent_encode("plain text: ok (100)", 1024, &b), 0);
  assert_string_equal(b.data, "plain text: ok (100)");
  sg_buf_reset(&b);
  /* '%', controls and every byte of UTF-8 are encoded, upper-case hex. */
  assert_int_equal(sg_grpc_percent_encode("50% \xc3\xa9\n", 1024, &b), 0);
  assert_string_equal(b.data, "50%25 %C3%A9%0A");
  sg_buf_reset(&b);
  /* Cut at max_in, never inside a UTF-8 sequence: "ab" + 2-byte é, limit 3. */
  assert_int_equal(sg_grpc_percent_encode("ab\xc3\xa9z", 3, &b), 0);
  assert_string_equal(b.data, "ab");
  sg_buf_reset(&b);
  assert_int_equal(sg_grpc_percent_encode("ab\xc3\xa9z", 4, &b), 0);
  assert_string_equal(b.data, "ab%C3%A9");
  sg_buf_free(&b);
}

static void status_details(void **state) {
  (void)state;
  sg_buf_t b = SG_BUF_INIT;
  assert_int_equal(sg_grpc_status_details(14, "PostgreSQL is unavailable", 2500, &b), 0);
  Google__Rpc__Status *st = google__rpc__status__unpack(NULL, b.len, (const uint8_t *)b.data);
  assert_non_null(st);
  assert_int_equal(st->code, 14);
  assert_string_equal(st->message, "PostgreSQL is unavailable");
  assert_int_equal(st->n_details, 1);
  Google__Rpc__Any *any = google__rpc__any__unpack(NULL, st->details[0].len, st->details[0].data);
  assert_non_null(any);
  assert_string_equal(any->type_url, "type.googleapis.com/google.rpc.RetryInfo");
  Google__Rpc__RetryInfo *ri = google__rpc__retry_info__unpack(NULL, any->value.len, any->value.data);
  assert_non_null(ri);
  assert_non_null(ri->retry_delay);
  assert_int_equal(ri->retry_delay->seconds, 2);
  assert_int_equal(ri->retry_delay->nanos, 500000000);
  google__rpc__retry_info__free_unpacked(ri, NULL);
  google__rpc__any__free_unpacked(any, NULL);
  google__rpc__status__free_unpacked(st, NULL);
  /* Without a delay: no details at all (nothing tells the client to retry). */
  sg_buf_reset(&b);
  assert_int_equal(sg_grpc_status_details(8, "too large", 0, &b), 0);
  st = google__rpc__status__unpack(NULL, b.len, (const uint8_t *)b.data);
  assert_non_null(st);
  assert_int_equal(st->code, 8);
  assert_int_equal(st->n_details, 0);
  google__rpc__status__free_unpacked(st, NULL);
  sg_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(percent_encoding),
      cmocka_unit_test(status_details),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
