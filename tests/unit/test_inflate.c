/* test_inflate.c - bounded decompression: gzip, zlib, raw deflate, bombs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <zlib.h>

#include "err.h"
#include "inflate.h"

/* Compress in with the given windowBits (31 gzip, 15 zlib, -15 raw). */
static uint8_t *compress_wb(const void *in, size_t n, int wbits, size_t *outn) {
  z_stream zs;
  memset(&zs, 0, sizeof(zs));
  assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY), Z_OK);
  size_t cap = deflateBound(&zs, n) + 64;
  uint8_t *out = malloc(cap);
  assert_non_null(out);
  zs.next_in = (Bytef *)in;
  zs.avail_in = (uInt)n;
  zs.next_out = out;
  zs.avail_out = (uInt)cap;
  assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
  *outn = cap - zs.avail_out;
  deflateEnd(&zs);
  return out;
}

static const char text[] =
    "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[]}]}]} spangate spangate spangate";

static void roundtrip(int wbits, int enc) {
  size_t cn;
  uint8_t *c = compress_wb(text, sizeof(text) - 1, wbits, &cn);
  sg_buf_t out = SG_BUF_INIT;
  assert_int_equal(sg_inflate_ex(c, cn, enc, 1 << 20, &out, NULL, NULL), 0);
  assert_int_equal(out.len, sizeof(text) - 1);
  assert_memory_equal(out.data, text, out.len);
  assert_int_equal(out.data[out.len], '\0');
  sg_buf_free(&out);
  free(c);
}

static void test_formats(void **st) {
  (void)st;
  roundtrip(31, SG_ENC_GZIP);
  roundtrip(31, SG_ENC_AUTO);
  roundtrip(15, SG_ENC_DEFLATE);
  roundtrip(15, SG_ENC_AUTO);
  roundtrip(-15, SG_ENC_DEFLATE); /* raw deflate under "deflate" */
}

static void test_identity(void **st) {
  (void)st;
  sg_buf_t out = SG_BUF_INIT;
  assert_int_equal(sg_inflate_ex((const uint8_t *)text, 10, SG_ENC_IDENTITY, 100, &out, NULL, NULL), 0);
  assert_int_equal(out.len, 10);
  /* AUTO on plain JSON / protobuf is identity */
  sg_buf_reset(&out);
  assert_int_equal(sg_inflate_ex((const uint8_t *)text, sizeof(text) - 1, SG_ENC_AUTO, 1000, &out, NULL, NULL), 0);
  assert_memory_equal(out.data, text, sizeof(text) - 1);
  sg_buf_reset(&out);
  assert_int_equal(sg_inflate_ex((const uint8_t *)text, 10, SG_ENC_IDENTITY, 9, &out, NULL, NULL), SG_ETOOBIG);
  sg_buf_free(&out);
}

static void test_concatenated_gzip(void **st) {
  (void)st;
  size_t n1, n2;
  uint8_t *a = compress_wb("hello, ", 7, 31, &n1);
  uint8_t *b = compress_wb("world", 5, 31, &n2);
  uint8_t *both = malloc(n1 + n2 + 4);
  memcpy(both, a, n1);
  memcpy(both + n1, b, n2);
  sg_buf_t out = SG_BUF_INIT;
  assert_int_equal(sg_inflate_ex(both, n1 + n2, SG_ENC_GZIP, 100, &out, NULL, NULL), 0);
  assert_string_equal(out.data, "hello, world");
  /* trailing zero padding is tolerated, other trailing bytes are not */
  memset(both + n1 + n2, 0, 4);
  sg_buf_reset(&out);
  assert_int_equal(sg_inflate_ex(both, n1 + n2 + 4, SG_ENC_AUTO, 100, &out, NULL, NULL), 0);
  assert_string_equal(out.data, "hello, world");
  both[n1 + n2 + 2] = 'x';
  sg_buf_reset(&out);
  assert_int_equal(sg_inflate_ex(both, n1 + n2 + 4, SG_ENC_GZIP, 100, &out, NULL, NULL), SG_EPARSE);
  assert_int_equal(out.len, 0);
  /* the limit counts both members */
  sg_buf_reset(&out);
  assert_int_equal(sg_inflate_ex(both, n1 + n2, SG_ENC_GZIP, 11, &out, NULL, NULL), SG_ETOOBIG);
  sg_buf_reset(&out);
  assert_int_equal(sg_inflate_ex(both, n1 + n2, SG_ENC_GZIP, 12, &out, NULL, NULL), 0);
  sg_buf_free(&out);
  free(a);
  free(b);
  free(both);
}

static void test_bad(void **st) {
  (void)st;
  size_t cn;
  uint8_t *c = compress_wb(text, sizeof(text) - 1, 31, &cn);
  sg_buf_t out = SG_BUF_INIT;
  /* truncated */
  assert_int_equal(sg_inflate_ex(c, cn - 5, SG_ENC_GZIP, 1 << 20, &out, NULL, NULL), SG_EPARSE);
  assert_int_equal(sg_inflate_ex(c, 10, SG_ENC_GZIP, 1 << 20, &out, NULL, NULL), SG_EPARSE);
  /* corrupt CRC */
  c[cn - 6] ^= 0xff;
  assert_int_equal(sg_inflate_ex(c, cn, SG_ENC_GZIP, 1 << 20, &out, NULL, NULL), SG_EPARSE);
  c[cn - 6] ^= 0xff;
  /* corrupt data */
  c[12] ^= 0x55;
  c[13] ^= 0xaa;
  assert_int_equal(sg_inflate_ex(c, cn, SG_ENC_GZIP, 1 << 20, &out, NULL, NULL), SG_EPARSE);
  /* not gzip at all */
  assert_int_equal(sg_inflate_ex((const uint8_t *)"hello", 5, SG_ENC_GZIP, 100, &out, NULL, NULL), SG_EPARSE);
  assert_int_equal(sg_inflate_ex((const uint8_t *)"\x1f\x8b", 2, SG_ENC_AUTO, 100, &out, NULL, NULL), SG_EPARSE);
  assert_int_equal(sg_inflate_ex((const uint8_t *)"\x78\x9c\xff\xff", 4, SG_ENC_AUTO, 100, &out, NULL, NULL), SG_EPARSE);
  assert_int_equal(sg_inflate_ex((const uint8_t *)"\xff\xff\xff", 3, SG_ENC_DEFLATE, 100, &out, NULL, NULL), SG_EPARSE);
  assert_int_equal(sg_inflate_ex((const uint8_t *)"", 0, SG_ENC_GZIP, 100, &out, NULL, NULL), SG_EPARSE);
  assert_int_equal(out.len, 0);
  assert_int_equal(sg_inflate_ex((const uint8_t *)"", 0, 99, 100, &out, NULL, NULL), SG_EINVAL);
  sg_buf_free(&out);
  free(c);
}

/* 100 MB of zeros, gzip'ed to ~100 KB, against a 1 MB limit. */
static void test_bomb(void **st) {
  (void)st;
  const size_t total = 100u << 20, chunk = 1u << 20;
  uint8_t *zeros = calloc(1, chunk);
  z_stream zs;
  memset(&zs, 0, sizeof(zs));
  assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, 31, 9, Z_DEFAULT_STRATEGY), Z_OK);
  size_t cap = 1u << 20, cn = 0;
  uint8_t *c = malloc(cap);
  for (size_t done = 0; done < total; done += chunk) {
    zs.next_in = zeros;
    zs.avail_in = (uInt)chunk;
    do {
      zs.next_out = c + cn;
      zs.avail_out = (uInt)(cap - cn);
      deflate(&zs, done + chunk == total ? Z_FINISH : Z_NO_FLUSH);
      cn = cap - zs.avail_out;
    } while (zs.avail_in > 0 || (done + chunk == total && zs.avail_out == 0));
  }
  deflateEnd(&zs);
  free(zeros);
  assert_true(cn < 200000);

  sg_buf_t out = SG_BUF_INIT;
  clock_t t0 = clock();
  assert_int_equal(sg_inflate_ex(c, cn, SG_ENC_AUTO, 1u << 20, &out, NULL, NULL), SG_ETOOBIG);
  double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
  assert_true(secs < 1.0);
  assert_true(out.cap <= (1u << 20) + 1); /* never more than max_out (+ NUL) */
  assert_int_equal(out.len, 0);
  sg_buf_free(&out);

  /* zlib and raw deflate bombs are bounded the same way */
  uint8_t *big = calloc(1, 4u << 20);
  for (int wb = 15; wb >= -15; wb -= 30) {
    size_t zn;
    uint8_t *z = compress_wb(big, 4u << 20, wb, &zn);
    assert_int_equal(sg_inflate_ex(z, zn, SG_ENC_DEFLATE, 1u << 20, &out, NULL, NULL), SG_ETOOBIG);
    assert_true(out.cap <= (1u << 20) + 1);
    sg_buf_free(&out);
    free(z);
  }
  free(big);
  free(c);
}

/* Output exactly max_out bytes is fine; one more is not. */
static void test_exact_limit(void **st) {
  (void)st;
  size_t cn;
  uint8_t *c = compress_wb(text, sizeof(text) - 1, 31, &cn);
  sg_buf_t out = SG_BUF_INIT;
  assert_int_equal(sg_inflate_ex(c, cn, SG_ENC_GZIP, sizeof(text) - 1, &out, NULL, NULL), 0);
  assert_int_equal(out.len, sizeof(text) - 1);
  sg_buf_reset(&out);
  assert_int_equal(sg_inflate_ex(c, cn, SG_ENC_GZIP, sizeof(text) - 2, &out, NULL, NULL), SG_ETOOBIG);
  assert_int_equal(sg_inflate_ex(c, cn, SG_ENC_GZIP, 0, &out, NULL, NULL), SG_ETOOBIG);
  /* appending keeps what was there */
  sg_buf_puts(&out, "prefix:");
  assert_int_equal(sg_inflate_ex(c, cn, SG_ENC_GZIP, 1000, &out, NULL, NULL), 0);
  assert_int_equal(out.len, 7 + sizeof(text) - 1);
  assert_memory_equal(out.data, "prefix:", 7);
  sg_buf_free(&out);
  free(c);
}

/* A budget that allows up to left bytes of growth in all. */
typedef struct {
  size_t left, asked, calls;
} budget_t;

static int budget_cb(void *arg, size_t n) {
  budget_t *b = arg;
  b->calls++;
  if (n > b->left) return SG_EBUSY;
  b->left -= n;
  b->asked += n;
  return 0;
}

/* Every byte the output allocates is asked for first; a refusal stops the
 * inflater with the budget's code and leaves the output as it was. */
static void test_grow_budget(void **st) {
  (void)st;
  size_t n = 1u << 20, cn;
  char *plain = malloc(n);
  for (size_t i = 0; i < n; i++) plain[i] = (char)('a' + (i * 7 % 13));
  uint8_t *c = compress_wb(plain, n, 31, &cn);

  budget_t b = {SIZE_MAX, 0, 0};
  sg_buf_t out = SG_BUF_INIT;
  assert_int_equal(sg_inflate_ex(c, cn, SG_ENC_AUTO, 4u << 20, &out, budget_cb, &b), 0);
  assert_int_equal(out.len, n);
  assert_memory_equal(out.data, plain, n);
  assert_int_equal(b.asked, out.cap); /* all of it, growth by growth */
  assert_true(b.calls > 1);
  sg_buf_free(&out);

  /* room for 256 KiB only: refused on the way, with the budget's code */
  b = (budget_t){256u << 10, 0, 0};
  assert_int_equal(sg_inflate_ex(c, cn, SG_ENC_GZIP, 4u << 20, &out, budget_cb, &b), SG_EBUSY);
  assert_int_equal(out.len, 0);
  assert_true(out.cap == b.asked && b.asked <= 256u << 10);
  sg_buf_free(&out);

  /* identity is counted too (a copy is made) */
  b = (budget_t){SIZE_MAX, 0, 0};
  assert_int_equal(sg_inflate_ex((const uint8_t *)plain, 1000, SG_ENC_IDENTITY, n, &out, budget_cb, &b), 0);
  assert_int_equal(b.asked, out.cap);
  sg_buf_free(&out);
  b = (budget_t){999, 0, 0};
  assert_int_equal(sg_inflate_ex((const uint8_t *)plain, 1000, SG_ENC_IDENTITY, n, &out, budget_cb, &b), SG_EBUSY);
  assert_null(out.data);

  /* what the first bytes say */
  assert_int_equal(sg_encoding_resolve(c, cn, SG_ENC_AUTO), SG_ENC_GZIP);
  assert_int_equal(sg_encoding_resolve((const uint8_t *)plain, n, SG_ENC_AUTO), SG_ENC_IDENTITY);
  assert_int_equal(sg_encoding_resolve((const uint8_t *)plain, n, SG_ENC_GZIP), SG_ENC_GZIP);
  free(c);
  free(plain);
}

static void test_encoding_parse(void **st) {
  (void)st;
  assert_int_equal(sg_encoding_parse(NULL, 0), SG_ENC_IDENTITY);
  assert_int_equal(sg_encoding_parse("", 0), SG_ENC_IDENTITY);
  assert_int_equal(sg_encoding_parse("identity", 8), SG_ENC_IDENTITY);
  assert_int_equal(sg_encoding_parse(" GZip ", 6), SG_ENC_GZIP);
  assert_int_equal(sg_encoding_parse("x-gzip", 6), SG_ENC_GZIP);
  assert_int_equal(sg_encoding_parse("deflate", 7), SG_ENC_DEFLATE);
  assert_int_equal(sg_encoding_parse("br", 2), -1);
  assert_int_equal(sg_encoding_parse("gzip, br", 8), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_formats),     cmocka_unit_test(test_identity),
      cmocka_unit_test(test_concatenated_gzip), cmocka_unit_test(test_bad),
      cmocka_unit_test(test_bomb),        cmocka_unit_test(test_exact_limit),
      cmocka_unit_test(test_encoding_parse), cmocka_unit_test(test_grow_budget),
  };
  return cmocka_run_group_tests_name("inflate", tests, NULL, NULL);
}
