/* test_span.c - the span record: ids, times, labels, UTF-8, batches. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <jansson.h>

#include "err.h"
#include "seed.h"
#include "span.h"

static void uuid_of(const char *in, const char *want) {
  uint8_t id[16];
  char u[37];
  assert_int_equal(sg_id_parse(in, strlen(in), id), 0);
  sg_uuid_format(id, u);
  assert_string_equal(u, want);
}

static void test_id_forms(void **st) {
  (void)st;
  /* Agenta's doubling example */
  uuid_of("31d6cfe04b9011ec", "31d6cfe0-4b90-11ec-31d6-cfe04b9011ec");
  uuid_of("0x31d6cfe04b9011ec", "31d6cfe0-4b90-11ec-31d6-cfe04b9011ec");
  uuid_of("31D6CFE04B9011EC", "31d6cfe0-4b90-11ec-31d6-cfe04b9011ec");
  uuid_of("31d6cfe04b9011ec800142010a8000b0", "31d6cfe0-4b90-11ec-8001-42010a8000b0");
  uuid_of("0x31d6cfe04b9011ec800142010a8000b0", "31d6cfe0-4b90-11ec-8001-42010a8000b0");
  uuid_of("0X31D6CFE04B9011EC800142010A8000B0", "31d6cfe0-4b90-11ec-8001-42010a8000b0");
  uuid_of("31d6cfe0-4b90-11ec-8001-42010a8000b0", "31d6cfe0-4b90-11ec-8001-42010a8000b0");
  uuid_of("31D6CFE0-4B90-11EC-8001-42010A8000B0", "31d6cfe0-4b90-11ec-8001-42010a8000b0");

  static const char *bad[] = {
      "", "0x", "31d6cfe04b9011e", "31d6cfe04b9011ecc", "31d6cfe04b9011eg",
      "31d6cfe04b9011ec800142010a8000b", "0x31d6cfe04b9011ec800142010a8000b0aa",
      "31d6cfe0-4b90-11ec-8001-42010a8000bz", "31d6cfe04-b90-11ec-8001-42010a8000b0",
      "31d6cfe0-4b90-11ec-8001_42010a8000b0", "0x31d6cfe0-4b90-11ec-8001-42010a8000b0",
      "{31d6cfe0-4b90-11ec-8001-42010a8000b0}", " 31d6cfe04b9011ec",
  };
  uint8_t id[16];
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_equal(sg_id_parse(bad[i], strlen(bad[i]), id), SG_EINVAL);
  assert_int_equal(sg_id_parse(NULL, 0, id), SG_EINVAL);
}

static void test_id_bytes(void **st) {
  (void)st;
  uint8_t in8[8] = {0x31, 0xd6, 0xcf, 0xe0, 0x4b, 0x90, 0x11, 0xec};
  uint8_t in16[16], zero[16] = {0}, id[16];
  char u[37], h32[33], h16[17];
  for (int i = 0; i < 16; i++) in16[i] = (uint8_t)(i + 1);
  assert_int_equal(sg_id_from_bytes(in8, 8, id), 0);
  sg_uuid_format(id, u);
  assert_string_equal(u, "31d6cfe0-4b90-11ec-31d6-cfe04b9011ec");
  sg_hex16_format(id, h16);
  assert_string_equal(h16, "31d6cfe04b9011ec");
  assert_int_equal(sg_id_from_bytes(in16, 16, id), 0);
  sg_hex32_format(id, h32);
  assert_string_equal(h32, "0102030405060708090a0b0c0d0e0f10");
  assert_memory_equal(id, in16, 16);
  assert_int_equal(sg_id_from_bytes(in16, 3, id), SG_EINVAL);
  assert_int_equal(sg_id_from_bytes(in16, 0, id), SG_EINVAL);
  assert_int_equal(sg_id_from_bytes(in16, 12, id), SG_EINVAL);
  assert_int_equal(sg_id_from_bytes(zero, 16, id), SG_EINVAL);
  assert_int_equal(sg_id_from_bytes(zero, 8, id), SG_EINVAL);
}

static int64_t iso(const char *s) {
  int64_t us = 0;
  assert_int_equal(sg_time_parse_iso(s, strlen(s), &us), 0);
  return us;
}

static void iso_bad(const char *s) {
  int64_t us;
  assert_int_equal(sg_time_parse_iso(s, strlen(s), &us), SG_EINVAL);
}

static void test_time_iso(void **st) {
  (void)st;
  const int64_t base = 1704164645LL * 1000000; /* 2024-01-02T03:04:05Z */
  assert_int_equal(iso("2024-01-02T03:04:05Z"), base);
  assert_int_equal(iso("2024-01-02t03:04:05z"), base);
  assert_int_equal(iso("2024-01-02 03:04:05Z"), base);
  assert_int_equal(iso("2024-01-02T03:04:05"), base); /* naive = UTC */
  assert_int_equal(iso("2024-01-02T03:04:05+00:00"), base);
  assert_int_equal(iso("2024-01-02T05:04:05+02:00"), base);
  assert_int_equal(iso("2024-01-02T05:04:05+0200"), base);
  assert_int_equal(iso("2024-01-02T05:04:05+02"), base);
  assert_int_equal(iso("2024-01-01T21:34:05-05:30"), base);
  assert_int_equal(iso("2024-01-02T03:04:05.5Z"), base + 500000);
  assert_int_equal(iso("2024-01-02T03:04:05.123456Z"), base + 123456);
  assert_int_equal(iso("2024-01-02T03:04:05.123456789Z"), base + 123456); /* 9 digits */
  assert_int_equal(iso("2024-01-02T03:04:05,25Z"), base + 250000);
  assert_int_equal(iso("2024-01-02T03:04Z"), base - 5000000);
  assert_int_equal(iso("2024-01-02"), base - (3 * 3600 + 4 * 60 + 5) * 1000000LL);
  assert_int_equal(iso("1970-01-01T00:00:00Z"), 0);
  assert_int_equal(iso("2024-02-29T00:00:00Z"), 1709164800LL * 1000000);
  assert_int_equal(iso("1970-01-01T00:00:00Z"), SG_TIME_MIN_US);
  assert_int_equal(iso("2105-12-31T23:59:59.999999Z"), SG_TIME_MAX_US);
  assert_int_equal(iso("2105-12-31T23:59:59.999999999Z"), SG_TIME_MAX_US);

  iso_bad("");
  iso_bad("2024");
  iso_bad("2024-1-02T03:04:05Z");
  iso_bad("2024-13-02T03:04:05Z");
  iso_bad("2023-02-29T03:04:05Z");
  iso_bad("2024-01-32T03:04:05Z");
  iso_bad("2024-01-02T24:00:00Z");
  iso_bad("2024-01-02T03:60:00Z");
  iso_bad("2024-01-02T03:04:60Z");
  iso_bad("2024-01-02T03:04:05.Z");
  iso_bad("2024-01-02T03:04:05.1234567890Z"); /* 10 digits */
  iso_bad("2024-01-02T03:04:05+24:00");
  iso_bad("2024-01-02T03:04:05+02:");
  iso_bad("2024-01-02T03:04:05Zjunk");
  iso_bad("2024-01-02X03:04:05Z");
  iso_bad("0000-12-31T23:59:59Z");                   /* year 0 */
  /* outside SG_TIME (1970..2105, what both stores keep exactly) */
  iso_bad("1969-12-31T23:59:59.999999Z");
  iso_bad("1970-01-01T00:00:00+00:01");
  iso_bad("0001-01-01T00:00:00Z");
  iso_bad("2105-12-31T23:59:59-00:01");
  iso_bad("2106-01-01T00:00:00Z");
  iso_bad("9999-12-31T23:59:59Z");
  iso_bad("10000-01-01T00:00:00Z");
}

static int64_t epoch(const char *s) {
  int64_t us = 0;
  assert_int_equal(sg_time_from_epoch_digits(s, strlen(s), &us), 0);
  return us;
}

static void test_time_epoch(void **st) {
  (void)st;
  int64_t us;
  assert_int_equal(epoch("1704164645"), 1704164645000000LL);          /* 10: s */
  assert_int_equal(epoch("1704164645123"), 1704164645123000LL);       /* 13: ms */
  assert_int_equal(epoch("1704164645123456"), 1704164645123456LL);    /* 16: µs */
  assert_int_equal(epoch("1704164645123456789"), 1704164645123456LL); /* 19: ns */
  assert_int_equal(epoch("0"), 0);
  assert_int_equal(epoch("5"), 5000000);                 /* up to 10 digits: s */
  assert_int_equal(epoch("17041646451"), 17041646451000LL); /* 11: ms */
  assert_int_equal(epoch("17041646451234"), 17041646451234LL); /* 14: µs */
  assert_int_equal(epoch("17041646451234567"), 17041646451234LL); /* 17: ns */
  assert_int_equal(epoch("4291747199999999999"), SG_TIME_MAX_US); /* 19: ns, last one */
  assert_int_equal(epoch("4291747199"), 4291747199000000LL);       /* 10: s, 2105 */
  assert_int_equal(epoch("0001704164645"), 1704164645000000LL); /* leading zeros */
  /* digit counts that parse but fall outside SG_TIME */
  assert_int_equal(sg_time_from_epoch_digits("9999999999", 10, &us), SG_EINVAL); /* 2286 */
  assert_int_equal(sg_time_from_epoch_digits("9999999999999", 13, &us), SG_EINVAL);
  assert_int_equal(sg_time_from_epoch_digits("9999999999999999", 16, &us), SG_EINVAL);
  assert_int_equal(sg_time_from_epoch_digits("9999999999999999999", 19, &us), SG_EINVAL);
  assert_int_equal(sg_time_from_epoch_digits("17041646451234567890", 20, &us), SG_EINVAL);
  assert_int_equal(sg_time_from_epoch_digits("", 0, &us), SG_EINVAL);
  assert_int_equal(sg_time_from_epoch_digits("-1", 2, &us), SG_EINVAL);
  assert_int_equal(sg_time_from_epoch_digits("12a", 3, &us), SG_EINVAL);

  assert_int_equal(sg_time_from_epoch_int(1704164645LL, &us), 0);
  assert_int_equal(us, 1704164645000000LL);
  assert_int_equal(sg_time_from_epoch_int(1704164645123LL, &us), 0);
  assert_int_equal(us, 1704164645123000LL);
  assert_int_equal(sg_time_from_epoch_int(1704164645123456LL, &us), 0);
  assert_int_equal(us, 1704164645123456LL);
  assert_int_equal(sg_time_from_epoch_int(1704164645123456789LL, &us), 0);
  assert_int_equal(us, 1704164645123456LL);
  assert_int_equal(sg_time_from_epoch_int(INT64_MAX, &us), SG_EINVAL); /* year 2262 */
  assert_int_equal(sg_time_from_epoch_int(0, &us), 0);
  assert_int_equal(us, 0);
  assert_int_equal(sg_time_from_epoch_int(-1, &us), SG_EINVAL);
}

/* The formatted UUID against snprintf's %02x for every byte value at every
 * position. */
static void test_uuid_format_bytes(void **st) {
  (void)st;
  for (int pos = 0; pos < 16; pos++)
    for (int v = 0; v < 256; v++) {
      uint8_t id[16];
      for (int i = 0; i < 16; i++) id[i] = (uint8_t)(i * 37 + pos);
      id[pos] = (uint8_t)v;
      char got[37], want[64];
      memset(got, 'x', sizeof got);
      sg_uuid_format(id, got);
      snprintf(want, sizeof want, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", id[0],
               id[1], id[2], id[3], id[4], id[5], id[6], id[7], id[8], id[9], id[10], id[11], id[12], id[13],
               id[14], id[15]);
      assert_string_equal(got, want);
    }
}

static void test_time_format(void **st) {
  (void)st;
  char b[32];
  sg_time_format(1704164645123456LL, b);
  assert_string_equal(b, "2024-01-02T03:04:05.123456Z");
  sg_time_format(0, b);
  assert_string_equal(b, "1970-01-01T00:00:00.000000Z");
  sg_time_format(-1, b);
  assert_string_equal(b, "1969-12-31T23:59:59.999999Z");
  sg_time_format(SG_TIME_MIN_US, b);
  assert_string_equal(b, "1970-01-01T00:00:00.000000Z");
  sg_time_format(SG_TIME_MAX_US, b);
  assert_string_equal(b, "2105-12-31T23:59:59.999999Z");
  sg_time_format(-62135596800000000LL, b); /* formatting works beyond the range */
  assert_string_equal(b, "0001-01-01T00:00:00.000000Z");
  sg_time_format(253402300799999999LL, b);
  assert_string_equal(b, "9999-12-31T23:59:59.999999Z");
  /* the written-out years against snprintf's, around and past their edges */
  const int64_t day_us = 86400LL * 1000000;
  const int64_t edges[] = {-62167219200000000LL, 253402300800000000LL, 0};
  for (size_t e = 0; e < sizeof edges / sizeof *edges; e++)
    for (int64_t v = edges[e] - 3 * day_us; v <= edges[e] + 3 * day_us; v += day_us / 7 + 999999) {
      char ref[96];
      int64_t days = v / day_us, rem = v % day_us;
      if (rem < 0) rem += day_us, days--;
      time_t secs = (time_t)(days * 86400 + rem / 1000000);
      struct tm tm;
      gmtime_r(&secs, &tm);
      snprintf(ref, sizeof ref, "%04lld-%02d-%02dT%02d:%02d:%02d.%06dZ", (long long)tm.tm_year + 1900,
               tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(rem % 1000000));
      ref[31] = '\0';
      sg_time_format(v, b);
      assert_string_equal(b, ref);
    }
  /* round trip over a spread of values */
  const int64_t step = (SG_TIME_MAX_US - SG_TIME_MIN_US) / 997;
  for (int64_t v = SG_TIME_MIN_US; v <= SG_TIME_MAX_US - step; v += step) {
    int64_t back;
    sg_time_format(v, b);
    assert_int_equal(sg_time_parse_iso(b, strlen(b), &back), 0);
    assert_int_equal(back, v);
  }
}

/* ttl.lua's days to an expiry: never for "no retention" and for anything
 * int64 µs cannot hold, without overflow (the ASan build traps on it). */
static void test_expires(void **st) {
  (void)st;
  const int64_t c = 1714979289000000LL; /* 2024-05-06 */
  const int64_t day = 86400000000LL;
  assert_int_equal(sg_span_expires_us(c, 31), c + 31 * day);
  assert_int_equal(sg_span_expires_us(c, 0.5), c + day / 2);
  assert_int_equal(sg_span_expires_us(c, 1.0 / 86400), c + 1000000);
  assert_true(sg_span_expires_us(c, 0) == INT64_MAX);
  assert_true(sg_span_expires_us(c, -1) == INT64_MAX);
  assert_true(sg_span_expires_us(c, 0.0 / 0.0) == INT64_MAX);
  assert_true(sg_span_expires_us(c, 1.0 / 0.0) == INT64_MAX);
  assert_true(sg_span_expires_us(c, -1.0 / 0.0) == INT64_MAX);
  assert_true(sg_span_expires_us(c, 1e300) == INT64_MAX);
  assert_true(sg_span_expires_us(c, 5e8) == INT64_MAX);       /* the cast would overflow */
  assert_true(sg_span_expires_us(c, 106751991) == INT64_MAX); /* the sum would overflow */
  assert_true(sg_span_expires_us(INT64_MAX - day, 2) == INT64_MAX);
  /* just below the edge: exact */
  assert_int_equal(sg_span_expires_us(0, 100000), 100000 * day);
  assert_int_equal(sg_span_expires_us(-day, 1), 0);
}

static void san(const char *in, size_t n, const char *want, int want_changed) {
  int changed = -1;
  char *s = sg_utf8_sanitize(in, n, &changed);
  assert_non_null(s);
  assert_string_equal(s, want);
  assert_int_equal(changed, want_changed);
  free(s);
}

#define R "\xEF\xBF\xBD" /* U+FFFD */

static void test_utf8(void **st) {
  (void)st;
  san("", 0, "", 0);
  san("hello", 5, "hello", 0);
  san("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80", 15, "h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80", 0);
  san("a\0b", 3, "a" R "b", 1);                   /* NUL */
  san("\xC0\xAF", 2, R R, 1);                      /* overlong '/' */
  san("\xE0\x80\xAF", 3, R R R, 1);                /* overlong, 3 bytes */
  san("\xF0\x80\x80\xAF", 4, R R R R, 1);          /* overlong, 4 bytes */
  san("\xED\xA0\x80", 3, R R R, 1);                /* surrogate U+D800 */
  san("\xED\xBF\xBF", 3, R R R, 1);                /* surrogate U+DFFF */
  san("\xED\x9F\xBF", 3, "\xED\x9F\xBF", 0);       /* U+D7FF is fine */
  san("\xF4\x90\x80\x80", 4, R R R R, 1);          /* > U+10FFFF */
  san("\xF4\x8F\xBF\xBF", 4, "\xF4\x8F\xBF\xBF", 0); /* U+10FFFF */
  san("ab\xE2\x82", 4, "ab" R, 1);                 /* truncated at the end */
  san("\xE2\x82x", 3, R "x", 1);                   /* truncated in the middle */
  san("\xF0\x9F\x98", 3, R, 1);                    /* truncated 4-byte */
  san("\x80", 1, R, 1);                            /* stray continuation */
  san("\xFF\xFE", 2, R R, 1);
  san("\xF5\x80\x80\x80", 4, R R R R, 1);
}

/* The reference: Unicode's well-formed UTF-8 (Table 3-7) decoded the slow
 * way, code point by code point, NUL excluded. */
static size_t ref_valid_len(const unsigned char *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = p[i], len, cp;
    if (c == 0) break;
    if (c < 0x80) { i++; continue; }
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
    else break;
    if (i + len > n) break;
    size_t k = 1;
    for (; k < len && (p[i + k] & 0xC0) == 0x80; k++) cp = cp << 6 | (p[i + k] & 0x3F);
    if (k < len) break;
    static const unsigned min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) break;
    i += len;
  }
  return i;
}

/* sg_utf8_valid_len against the reference on random strings of ASCII runs
 * (the 8-byte path at every alignment), characters of every length and
 * edge, truncated and invalid sequences and NUL; a string it passes whole
 * is one jansson accepts as well (the decoders hand such strings to jansson
 * unchecked) and one sg_utf8_sanitize leaves as it is. */
static void test_utf8_valid_len_random(void **st) {
  (void)st;
  static const char *pieces[] = {
      "a", "hello wo", "0123456789abcdefghij", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80",
      "\xC2\x80", "\xDF\xBF", "\xE0\xA0\x80", "\xED\x9F\xBF", "\xEE\x80\x80", "\xEF\xBF\xBF",
      "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF", "\xC0\xAF", "\xC1\xBF", "\xE0\x9F\xBF", "\xED\xA0\x80",
      "\xF0\x8F\xBF\xBF", "\xF4\x90\x80\x80", "\xF5\x80\x80\x80", "\xFF", "\x80", "\xBF", "\xE2\x82",
      "\xF0\x9F\x98", "\xC3", "\x7F", "\x01", "\t\n"};
  srand(test_seed("test_utf8_valid_len_random"));
  unsigned char buf[128];
  size_t clean = 0;
  for (int iter = 0; iter < 200000; iter++) {
    size_t n = 0;
    int parts = rand() % 12;
    for (int k = 0; k < parts; k++) {
      int r = rand() % 40;
      if (r < 30) {
        const char *pc = pieces[rand() % (int)(sizeof pieces / sizeof *pieces)];
        size_t l = strlen(pc);
        if (n + l > sizeof buf) break;
        memcpy(buf + n, pc, l);
        n += l;
      } else if (n < sizeof buf) {
        buf[n++] = r < 38 ? (unsigned char)rand() : 0; /* any byte, or NUL */
      }
    }
    size_t off = (size_t)(rand() % 8); /* unaligned starts */
    if (off > n) off = n;
    size_t want = ref_valid_len(buf + off, n - off);
    assert_int_equal(sg_utf8_valid_len((const char *)buf + off, n - off), want);
    if (want == n - off) {
      clean++;
      json_t *j = json_stringn((const char *)buf + off, n - off);
      assert_non_null(j);
      json_decref(j);
      int changed = -1;
      char *c = sg_utf8_sanitize((const char *)buf + off, n - off, &changed);
      assert_int_equal(changed, 0);
      free(c);
    }
  }
  assert_true(clean > 1000); /* both outcomes were exercised */
}

static void test_labels(void **st) {
  (void)st;
  assert_string_equal(sg_span_kind_label(SG_SPAN_KIND_SERVER), "SPAN_KIND_SERVER");
  assert_string_equal(sg_status_code_label(SG_STATUS_CODE_ERROR), "STATUS_CODE_ERROR");
  assert_string_equal(sg_trace_type_label(SG_TRACE_INVOCATION), "INVOCATION");
  assert_string_equal(sg_span_type_label(SG_SPAN_TYPE_RERANK), "RERANK");
  assert_null(sg_span_kind_label(-1));
  assert_null(sg_span_kind_label(SG_SPAN_KIND_COUNT));
  assert_null(sg_span_type_label(SG_NULL_ENUM));
  assert_int_equal(sg_span_kind_parse("SPAN_KIND_CONSUMER"), SG_SPAN_KIND_CONSUMER);
  assert_int_equal(sg_span_kind_parse("span_kind_client"), SG_SPAN_KIND_CLIENT);
  assert_int_equal(sg_span_kind_parse("CLIENT"), -1);
  assert_int_equal(sg_status_code_parse("STATUS_CODE_OK"), SG_STATUS_CODE_OK);
  assert_int_equal(sg_trace_type_parse("annotation"), SG_TRACE_ANNOTATION);
  assert_int_equal(sg_span_type_parse("llm"), SG_SPAN_TYPE_LLM);
  assert_int_equal(sg_span_type_parse("nope"), -1);
  assert_int_equal(sg_span_type_parse(NULL), -1);
  for (int i = 0; i < SG_SPAN_TYPE_COUNT; i++)
    assert_int_equal(sg_span_type_parse(sg_span_type_label(i)), i);
}

static void test_batch(void **st) {
  (void)st;
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  for (int i = 0; i < 100; i++) {
    sg_span_t *s = sg_span_batch_push(&b);
    assert_non_null(s);
    assert_int_equal(s->trace_type, SG_NULL_ENUM);
    assert_int_equal(s->span_type, SG_NULL_ENUM);
    assert_int_equal(s->span_kind, SG_SPAN_KIND_UNSPECIFIED);
    assert_int_equal(s->status_code, SG_STATUS_CODE_UNSET);
    s->span_name = strdup("x");
    s->attributes = json_pack("{s:i}", "a", i);
  }
  assert_int_equal(b.n, 100);

  sg_span_t copy;
  b.spans[3].resource = json_pack("{s:s}", "service.name", "svc");
  b.spans[3].session_id = strdup("sess");
  assert_int_equal(sg_span_copy(&copy, &b.spans[3]), 0);
  assert_string_equal(copy.span_name, "x");
  assert_string_equal(copy.session_id, "sess");
  assert_ptr_not_equal(copy.attributes, b.spans[3].attributes);
  assert_true(json_equal(copy.attributes, b.spans[3].attributes));
  assert_true(json_equal(copy.resource, b.spans[3].resource));
  assert_null(copy.events);
  sg_span_clear(&copy);
  assert_null(copy.span_name);

  for (int i = 0; i < 12; i++) sg_span_batch_reject(&b, "span %d: bad", i);
  assert_int_equal(b.rejected, 12);
  assert_non_null(strstr(b.reject_msg.data, "span 0: bad; span 1: bad"));
  assert_non_null(strstr(b.reject_msg.data, "span 9: bad"));
  assert_null(strstr(b.reject_msg.data, "span 10"));
  sg_span_batch_free(&b);
  assert_int_equal(b.n, 0);
}

/* The attributes column is rendered once and kept: both writers get the
 * same bytes; a copy renders its own. */
static void test_attributes_text(void **st) {
  (void)st;
  sg_span_t s, c;
  memset(&s, 0, sizeof s);
  s.attributes = json_pack("{s:s,s:i}", "ag.type.node", "chat", "gen_ai.usage.total_tokens", 12);
  s.resource = json_pack("{s:s}", "service.name", "svc");
  s.nest_attributes = SG_SPAN_NEST_ATTRS | SG_SPAN_NEST_RESOURCE;
  const char *t1, *t2;
  size_t n1, n2;
  assert_int_equal(sg_span_attributes_text(&s, &t1, &n1), 0);
  assert_string_equal(t1, "{\"ag\":{\"type\":{\"node\":\"chat\"}},\"gen_ai\":{\"usage\":"
                          "{\"total_tokens\":12}},\"resource\":{\"service\":{\"name\":\"svc\"}}}");
  assert_int_equal(n1, strlen(t1));
  assert_int_equal(sg_span_attributes_text(&s, &t2, &n2), 0);
  assert_ptr_equal(t1, t2); /* kept, not rendered again */
  assert_int_equal(sg_span_copy(&c, &s), 0);
  assert_null(c.attributes_text);
  assert_int_equal(sg_span_attributes_text(&c, &t2, &n2), 0);
  assert_ptr_not_equal(t1, t2);
  assert_string_equal(t1, t2);
  sg_span_clear(&c);
  sg_span_clear(&s);
  assert_null(s.attributes_text);

  memset(&s, 0, sizeof s); /* flat, no resource */
  s.attributes = json_pack("{s:s}", "a.b", "x\\y");
  assert_int_equal(sg_span_attributes_text(&s, &t1, &n1), 0);
  assert_string_equal(t1, "{\"a.b\":\"x\\\\y\"}");
  sg_span_clear(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_attributes_text),
      cmocka_unit_test(test_id_forms),   cmocka_unit_test(test_id_bytes),
      cmocka_unit_test(test_time_iso),   cmocka_unit_test(test_time_epoch),
      cmocka_unit_test(test_uuid_format_bytes),
      cmocka_unit_test(test_time_format), cmocka_unit_test(test_expires),
      cmocka_unit_test(test_utf8),
      cmocka_unit_test(test_utf8_valid_len_random),
      cmocka_unit_test(test_labels),     cmocka_unit_test(test_batch),
  };
  return cmocka_run_group_tests_name("span", tests, NULL, NULL);
}
