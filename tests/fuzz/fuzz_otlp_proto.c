/* fuzz_otlp_proto.c - libFuzzer target for sg_otlp_decode_proto.
 * The checks are in decode_check.h. */
#include <stddef.h>
#include <stdint.h>

#include "decode_check.h"
#include "inflate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  sg_span_batch_t bt;
  sg_buf_t err = SG_BUF_INIT;
  sg_span_batch_init(&bt);
  int rc = sg_otlp_decode_proto(data, size, &bt, &err);
  check_decoded(rc, &bt, &err);
  sg_span_batch_free(&bt);
  sg_buf_free(&err);
  /* The same bytes through the decompressor (a bomb must stay bounded). */
  sg_buf_t raw = SG_BUF_INIT;
  int zr = sg_inflate_ex(data, size, size > 0 && data[0] == 0x03 ? SG_ENC_DEFLATE : SG_ENC_AUTO,
                         1u << 20, &raw, NULL, NULL);
  if (zr != 0 && zr != SG_EPARSE && zr != SG_ETOOBIG && zr != SG_ENOMEM) abort();
  if (raw.cap > (1u << 20) + 1 && raw.cap > 2 * size + 128) abort();
  sg_buf_free(&raw);
  return 0;
}
