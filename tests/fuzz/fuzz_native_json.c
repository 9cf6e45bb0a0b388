/* fuzz_native_json.c - libFuzzer target for sg_native_decode_json.
 * The checks are in decode_check.h. */
#include <stddef.h>
#include <stdint.h>

#include "decode_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  sg_span_batch_t bt;
  sg_buf_t err = SG_BUF_INIT;
  sg_span_batch_init(&bt);
  int rc = sg_native_decode_json((const char *)data, size, &bt, &err);
  check_decoded(rc, &bt, &err);
  sg_span_batch_free(&bt);
  sg_buf_free(&err);
  return 0;
}
