/* test_buf.c - the JSON string escaper and its 8-bytes-at-a-time scanner,
 * checked against a byte-by-byte reference on every position and on random
 * text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <jansson.h>

#include "buf.h"
#include "jalloc.h"

static size_t ref_plain_len(const char *s, size_t n) {
  size_t i = 0;
  while (i < n && (unsigned char)s[i] >= 0x20 && s[i] != '"' && s[i] != '\\') i++;
  return i;
}

static void ref_escape(sg_buf_t *b, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"') sg_buf_puts(b, "\\\"");
    else if (c == '\\') sg_buf_puts(b, "\\\\");
    else if (c == '\n') sg_buf_puts(b, "\\n");
    else if (c == '\r') sg_buf_puts(b, "\\r");
    else if (c == '\t') sg_buf_puts(b, "\\t");
    else if (c < 0x20) sg_buf_printf(b, "\\u%04x", c);
    else sg_buf_putc(b, (char)c);
  }
}

/* The same stops, and every byte from 0x80 up (sg_json_ascii_plain_len). */
static int ascii_stop(unsigned char c) { return c < 0x20 || c == '"' || c == '\\' || c >= 0x80; }

/* One special byte at every position of plain text of every length up to
 * 40 (both sides of each 16-byte block and 8-byte word), and UTF-8 bytes that must not
 * count as special (but do for the ASCII variant). */
static void test_plain_len_positions(void **st) {
  (void)st;
  const unsigned char specials[] = {'"', '\\', 0, 1, '\n', 0x1f};
  const unsigned char plains[] = {' ', 'a', 0x7f, 0x80, 0xc3, 0xff, '!', '#', '[', ']'};
  char s[48];
  for (size_t n = 0; n <= 40; n++) {
    for (size_t k = 0; k < sizeof plains; k++) {
      memset(s, plains[k], n);
      assert_int_equal(sg_json_plain_len(s, n), n);
      assert_int_equal(sg_copy_plain_len(s, n), n);
      assert_int_equal(sg_json_ascii_plain_len(s, n), ascii_stop(plains[k]) && n ? 0 : n);
      for (size_t at = 0; at < n; at++) {
        for (size_t j = 0; j < sizeof specials; j++) {
          memset(s, plains[k], n);
          s[at] = (char)specials[j];
          assert_int_equal(sg_json_plain_len(s, n), at);
          assert_int_equal(sg_copy_plain_len(s, n), specials[j] == '"' ? n : at); /* COPY keeps '"' */
          if (!ascii_stop(plains[k])) assert_int_equal(sg_json_ascii_plain_len(s, n), at);
        }
        /* a high byte in ASCII text */
        memset(s, 'a', n);
        s[at] = (char)plains[k];
        assert_int_equal(sg_json_ascii_plain_len(s, n), ascii_stop(plains[k]) ? at : n);
      }
    }
  }
}

static void test_escape_random(void **st) {
  (void)st;
  uint64_t seed = 0x9e3779b97f4a7c15u;
  char s[300];
  for (int round = 0; round < 20000; round++) {
    size_t n = (size_t)(round % 300);
    for (size_t i = 0; i < n; i++) {
      seed = seed * 6364136223846793005u + 1442695040888963407u;
      unsigned r = (unsigned)(seed >> 33);
      /* mostly plain text, sometimes specials and high bytes */
      static const char special[] = "\"\\\n\t\r\x01\x1f\x7f";
      if (r % 16 == 0) s[i] = special[r / 16 % 8];
      else if (r % 16 == 1) s[i] = (char)(0x80 + r / 16 % 128);
      else s[i] = (char)('a' + r / 16 % 26);
    }
    assert_int_equal(sg_json_plain_len(s, n), ref_plain_len(s, n));
    size_t ascii = 0;
    while (ascii < n && !ascii_stop((unsigned char)s[ascii])) ascii++;
    assert_int_equal(sg_json_ascii_plain_len(s, n), ascii);
    size_t copy = 0;
    while (copy < n && (unsigned char)s[copy] >= 0x20 && s[copy] != '\\') copy++;
    assert_int_equal(sg_copy_plain_len(s, n), copy);
    sg_buf_t a = SG_BUF_INIT, b = SG_BUF_INIT;
    assert_int_equal(sg_buf_json_escape(&a, s, n), 0);
    ref_escape(&b, s, n);
    assert_int_equal(a.len, b.len);
    if (a.len) assert_memory_equal(a.data, b.data, a.len);
    sg_buf_free(&a);
    sg_buf_free(&b);
    /* the jansson flavour is byte for byte what jansson dumps (which needs
     * valid UTF-8: the high bytes become ASCII for this part) */
    for (size_t i = 0; i < n; i++)
      if ((unsigned char)s[i] >= 0x80) s[i] = 'h';
    json_t *j = json_stringn_nocheck(s, n);
    char *want = sg_json_dumps(j, JSON_ENCODE_ANY);
    assert_int_equal(sg_buf_putc(&a, '"'), 0);
    assert_int_equal(sg_buf_json_escape_ex(&a, s, n, SG_JSON_ESC_JANSSON), 0);
    assert_int_equal(sg_buf_putc(&a, '"'), 0);
    assert_string_equal(a.data, want);
    free(want);
    json_decref(j);
    sg_buf_free(&a);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_plain_len_positions),
      cmocka_unit_test(test_escape_random),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
