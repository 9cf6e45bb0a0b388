/* test_spool.c - the durable spool: round trips, rotation, recovery after
 * torn writes and corruption, the size bound, dead letters, partial acks,
 * fsync policies, stats, and a kill -9 of a process in the middle of appends.
 * Real files in a fresh temporary directory per test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "err.h"
#include "rss.h"
#include "seed.h"
#include "spool.h"

#define T0 INT64_C(1700000000000000) /* a plausible "now" in µs */

typedef struct {
  char dir[256];  /* the temp root, removed afterwards */
  char spool[300]; /* <root>/spool/w0: the spool creates the parents */
} fx_t;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

static int setup(void **state) {
  fx_t *fx = calloc(1, sizeof *fx);
  const char *tmp = getenv("TMPDIR");
  snprintf(fx->dir, sizeof fx->dir, "%s/spooltest.XXXXXX", tmp ? tmp : "/tmp");
  if (mkdtemp(fx->dir) == NULL) return -1;
  snprintf(fx->spool, sizeof fx->spool, "%s/spool/w0", fx->dir);
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  fx_t *fx = *state;
  nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  free(fx);
  return 0;
}

static void path_of(const fx_t *fx, char *out, size_t n, const char *name) {
  snprintf(out, n, "%s/%s", fx->spool, name);
}

static void seg_path(const fx_t *fx, char *out, size_t n, uint64_t seq, const char *ext) {
  snprintf(out, n, "%s/%016" PRIu64 ".%s", fx->spool, seq, ext);
}

static int count_files(const char *dir, const char *suffix) {
  DIR *d = opendir(dir);
  if (d == NULL) return 0;
  int n = 0;
  struct dirent *e;
  size_t sl = strlen(suffix);
  while ((e = readdir(d)) != NULL) {
    size_t l = strlen(e->d_name);
    if (l > sl && strcmp(e->d_name + l - sl, suffix) == 0) n++;
  }
  closedir(d);
  return n;
}

/* The path of the one *.seg file in the spool directory. */
static void only_seg(const fx_t *fx, char *out, size_t n) {
  assert_int_equal(count_files(fx->spool, ".seg"), 1);
  DIR *d = opendir(fx->spool);
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strstr(e->d_name, ".seg")) snprintf(out, n, "%s/%s", fx->spool, e->d_name);
  closedir(d);
}

static off_t file_size(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 ? sb.st_size : -1;
}

static sg_spool_t *open_ok(const fx_t *fx, uint64_t seg_bytes, uint64_t max_bytes,
                           sg_spool_fsync_t fs) {
  sg_spool_opts_t o = {seg_bytes, max_bytes, fs};
  sg_spool_t *sp = NULL;
  assert_int_equal(sg_spool_open(fx->spool, &o, &sp), 0);
  assert_non_null(sp);
  return sp;
}

/* Payload of record i: "rec-<i>" then i%37 filler bytes, so sizes vary. */
static size_t payload_of(int i, char *buf) {
  int n = sprintf(buf, "rec-%06d|", i);
  for (int k = 0; k < i % 37; k++) buf[n++] = (char)('a' + (i + k) % 26);
  return (size_t)n;
}

static void append_range(sg_spool_t *sp, int from, int to) {
  char buf[64];
  for (int i = from; i < to; i++) {
    size_t n = payload_of(i, buf);
    assert_int_equal(sg_spool_append(sp, (i % 2) ? "spans" : "events", buf, n, T0 + i), 0);
  }
}

static void check_rec(const sg_spool_rec_t *r, int i) {
  char buf[64];
  size_t n = payload_of(i, buf);
  assert_int_equal(r->len, n);
  assert_memory_equal(r->data, buf, n);
  const char *tag = (i % 2) ? "spans" : "events";
  assert_int_equal(r->tag_len, strlen(tag));
  assert_memory_equal(r->tag, tag, r->tag_len);
  assert_true(r->time_us == T0 + i);
}

/* Read every sealed segment, in order; record the "rec-<i>" numbers seen in
 * got[] (up to cap) and ack each segment if ack. Returns the count. */
static int drain(sg_spool_t *sp, int *got, int cap, int ack) {
  int n = 0;
  uint64_t last_seq = 0, last_id = 0;
  sg_spool_seg_t *seg;
  int rc;
  sg_spool_seg_t *kept[4096];
  int nk = 0;
  while ((rc = sg_spool_next_segment(sp, &seg)) == 0) {
    assert_true(sg_spool_seg_id(seg) > last_id);
    last_id = sg_spool_seg_id(seg);
    for (size_t i = 0; i < sg_spool_seg_count(seg); i++) {
      sg_spool_rec_t r;
      assert_int_equal(sg_spool_seg_record(seg, i, &r), 0);
      assert_true(r.seq > last_seq);
      last_seq = r.seq;
      assert_int_equal(r.seq >> 24, sg_spool_seg_id(seg));
      assert_true(r.len >= 11 && memcmp(r.data, "rec-", 4) == 0);
      int v = atoi((const char *)r.data + 4);
      check_rec(&r, v);
      if (n < cap) got[n] = v;
      n++;
    }
    if (ack) {
      assert_int_equal(sg_spool_ack(sp, seg), 0);
    } else {
      assert_true(nk < 4096);
      kept[nk++] = seg;
    }
  }
  assert_int_equal(rc, SG_ENOTFOUND);
  for (int k = 0; k < nk; k++) sg_spool_release(sp, kept[k]);
  return n;
}

static void expect_sequence(const int *got, int n, int from, int to) {
  assert_int_equal(n, to - from);
  for (int i = 0; i < n; i++) assert_int_equal(got[i], from + i);
}

/* ---------------------------------------------------------------------- */

static void test_roundtrip(void **state) {
  fx_t *fx = *state;
  sg_spool_t *sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_BATCH);
  sg_spool_seg_t *seg;
  assert_int_equal(sg_spool_next_segment(sp, &seg), SG_ENOTFOUND);
  assert_int_equal(sg_spool_append(sp, "spans", "a\tb\n", 4, T0), 0);
  assert_int_equal(sg_spool_append(sp, NULL, "", 0, T0 + 1), 0); /* empty, untagged */
  assert_int_equal(sg_spool_append(sp, "events", "c\td\n", 4, T0 + 2), 0);
  assert_int_equal(sg_spool_sync(sp), 0);
  /* the open segment is not readable until sealed */
  assert_int_equal(sg_spool_next_segment(sp, &seg), SG_ENOTFOUND);
  assert_int_equal(sg_spool_seal(sp), 0);
  assert_int_equal(sg_spool_seal(sp), 0); /* nothing open: no-op */
  assert_int_equal(sg_spool_next_segment(sp, &seg), 0);
  assert_int_equal(sg_spool_seg_count(seg), 3);
  sg_spool_rec_t r;
  assert_int_equal(sg_spool_seg_record(seg, 0, &r), 0);
  assert_int_equal(r.len, 4);
  assert_memory_equal(r.data, "a\tb\n", 4);
  assert_int_equal(r.tag_len, 5);
  assert_memory_equal(r.tag, "spans", 5);
  assert_true(r.time_us == T0);
  assert_int_equal(sg_spool_seg_record(seg, 1, &r), 0);
  assert_int_equal(r.len, 0);
  assert_int_equal(r.tag_len, 0);
  assert_int_equal(sg_spool_seg_record(seg, 2, &r), 0);
  assert_memory_equal(r.data, "c\td\n", 4);
  assert_memory_equal(r.tag, "events", 6);
  assert_int_equal(sg_spool_seg_record(seg, 3, &r), SG_EINVAL);
  /* handed out: not handed out twice */
  sg_spool_seg_t *again;
  assert_int_equal(sg_spool_next_segment(sp, &again), SG_ENOTFOUND);
  assert_int_equal(sg_spool_ack(sp, seg), 0);
  assert_int_equal(sg_spool_next_segment(sp, &seg), SG_ENOTFOUND);
  assert_int_equal(count_files(fx->spool, ".seg"), 0);
  sg_spool_stats_t st;
  sg_spool_stats(sp, &st);
  assert_int_equal(st.records, 0);
  assert_int_equal(st.bytes, 0);
  assert_int_equal(st.segments, 0);
  assert_int_equal(st.appended_records, 3);
  assert_int_equal(st.acked_records, 3);
  assert_int_equal(sg_spool_close(sp), 0);
}

/* The CRCs are zlib's CRC-32 (spool.h), whatever computes them: segments
 * written by an earlier build must stay readable. The header of a record
 * appended now carries crc32() of its bytes 8..35 and of tag + payload. */
static void test_crc_is_zlibs(void **state) {
  fx_t *fx = *state;
  sg_spool_t *sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_BATCH);
  char payload[3000];
  uint64_t rnd = test_seed("test_crc_is_zlibs");
  for (size_t i = 0; i < sizeof payload; i++) {
    rnd = rnd * 6364136223846793005u + 1442695040888963407u;
    payload[i] = (char)(rnd >> 56);
  }
  assert_int_equal(sg_spool_append(sp, "spans", payload, sizeof payload, T0), 0);
  assert_int_equal(sg_spool_seal(sp), 0);
  char path[512];
  seg_path(fx, path, sizeof path, 1, "seg");
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  static unsigned char file[16 + SG_SPOOL_REC_HEADER + 5 + sizeof payload + 1];
  size_t got = fread(file, 1, sizeof file, f);
  fclose(f);
  assert_int_equal(got, sizeof file - 1);
  const unsigned char *h = file + 16;
  uint32_t hcrc = (uint32_t)h[4] | (uint32_t)h[5] << 8 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 24;
  uint32_t pcrc = (uint32_t)h[12] | (uint32_t)h[13] << 8 | (uint32_t)h[14] << 16 | (uint32_t)h[15] << 24;
  assert_int_equal(hcrc, (uint32_t)crc32(0, h + 8, SG_SPOOL_REC_HEADER - 8));
  assert_int_equal(pcrc, (uint32_t)crc32(0, h + SG_SPOOL_REC_HEADER, 5 + sizeof payload));
  /* and a record whose payload CRC is off by one bit is not handed out */
  sg_spool_seg_t *seg;
  assert_int_equal(sg_spool_next_segment(sp, &seg), 0);
  assert_int_equal(sg_spool_seg_count(seg), 1);
  sg_spool_release(sp, seg);
  assert_int_equal(sg_spool_close(sp), 0);
  file[16 + SG_SPOOL_REC_HEADER + 5 + 100] ^= 1;
  f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(file, 1, got, f), got);
  fclose(f);
  sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_BATCH);
  assert_int_equal(sg_spool_next_segment(sp, &seg), SG_ENOTFOUND);
  assert_int_equal(sg_spool_close(sp), 0);
}

static void test_rotation_order(void **state) {
  fx_t *fx = *state;
  sg_spool_t *sp = open_ok(fx, 4096, 0, SG_SPOOL_FSYNC_NEVER);
  append_range(sp, 0, 2000);
  sg_spool_stats_t st;
  sg_spool_stats(sp, &st);
  assert_true(st.segments > 10);
  assert_int_equal(st.sealed_segments, st.segments - 1);
  assert_int_equal(st.records, 2000);
  /* no sealed segment is over the size (records are far smaller) */
  DIR *d = opendir(fx->spool);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strstr(e->d_name, ".seg") == NULL) continue;
    char p[1024];
    path_of(fx, p, sizeof p, e->d_name);
    assert_true(file_size(p) <= 4096);
  }
  closedir(d);
  static int got[2000];
  /* only sealed segments so far: a prefix, in order */
  int n = drain(sp, got, 2000, 1);
  assert_true(n > 0 && n < 2000);
  expect_sequence(got, n, 0, n);
  int first = n;
  assert_int_equal(sg_spool_seal(sp), 0);
  n = drain(sp, got, 2000, 1);
  expect_sequence(got, n, first, 2000);
  sg_spool_stats(sp, &st);
  assert_int_equal(st.records, 0);
  assert_int_equal(st.segments, 0);
  assert_int_equal(sg_spool_close(sp), 0);
}

static void test_reopen(void **state) {
  fx_t *fx = *state;
  sg_spool_t *sp = open_ok(fx, 4096, 0, SG_SPOOL_FSYNC_BATCH);
  append_range(sp, 0, 300);
  assert_int_equal(sg_spool_close(sp), 0); /* the open segment stays on disk */
  sp = open_ok(fx, 4096, 0, SG_SPOOL_FSYNC_BATCH);
  sg_spool_stats_t st;
  sg_spool_stats(sp, &st);
  assert_int_equal(st.records, 300);
  assert_int_equal(st.sealed_segments, st.segments); /* everything recovered is sealed */
  assert_true(st.oldest_us == T0);
  append_range(sp, 300, 400); /* goes after, into new segments */
  assert_int_equal(sg_spool_close(sp), 0);
  sp = open_ok(fx, 4096, 0, SG_SPOOL_FSYNC_BATCH);
  static int got[400];
  int n = drain(sp, got, 400, 1);
  expect_sequence(got, n, 0, 400);
  assert_int_equal(sg_spool_close(sp), 0);
}

static void test_lock(void **state) {
  fx_t *fx = *state;
  sg_spool_t *sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_NEVER);
  sg_spool_t *sp2 = NULL;
  assert_int_equal(sg_spool_open(fx->spool, NULL, &sp2), SG_EBUSY);
  assert_null(sp2);
  assert_int_equal(sg_spool_close(sp), 0);
  assert_int_equal(sg_spool_open(fx->spool, NULL, &sp2), 0);
  assert_int_equal(sg_spool_close(sp2), 0);
}

/* Record k of a segment of fixed-size records ("rec-%06d|", tag "events" or
 * "spans"): payload_of(i) for i%37==0 is 11 bytes. Use i = 37*k. */
static void append_fixed(sg_spool_t *sp, int k0, int k1) {
  char buf[64];
  for (int k = k0; k < k1; k++) {
    size_t n = payload_of(37 * 2 * k, buf); /* even: tag "events" */
    assert_int_equal(n, 11);
    assert_int_equal(sg_spool_append(sp, "events", buf, n, T0 + 37 * 2 * k), 0);
  }
}
#define FIXED_REC (SG_SPOOL_REC_HEADER + 6 + 11)
#define FIXED_OFF(k) (SG_SPOOL_FILE_HEADER + (k) * FIXED_REC)

static void flip_byte(const char *path, off_t off) {
  int fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  unsigned char c;
  assert_int_equal(pread(fd, &c, 1, off), 1);
  c ^= 0x5a;
  assert_int_equal(pwrite(fd, &c, 1, off), 1);
  close(fd);
}

static void test_torn_tail(void **state) {
  fx_t *fx = *state;
  sg_spool_t *sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_BATCH);
  append_fixed(sp, 0, 10);
  assert_int_equal(sg_spool_close(sp), 0);
  char p[1024];
  seg_path(fx, p, sizeof p, 1, "seg");
  assert_int_equal(file_size(p), FIXED_OFF(10));
  /* a crash in the middle of the 10th record's write */
  assert_int_equal(truncate(p, FIXED_OFF(9) + 20), 0);
  sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_BATCH);
  sg_spool_stats_t st;
  sg_spool_stats(sp, &st);
  assert_int_equal(st.records, 9);
  assert_int_equal(st.torn_bytes, 20);
  assert_int_equal(st.corrupt_records, 0);
  assert_int_equal(file_size(p), FIXED_OFF(9)); /* cut away */
  static int got[16];
  int n = drain(sp, got, 16, 0);
  assert_int_equal(n, 9);
  for (int k = 0; k < 9; k++) assert_int_equal(got[k], 74 * k);
  /* appends after recovery go to a new segment, read after the old one */
  append_fixed(sp, 10, 12);
  assert_int_equal(sg_spool_seal(sp), 0);
  n = drain(sp, got, 16, 1);
  assert_int_equal(n, 11);
  assert_int_equal(got[9], 740);
  assert_int_equal(sg_spool_close(sp), 0);

  /* a crash while creating a segment: a torn file header, no records */
  seg_path(fx, p, sizeof p, 77, "seg");
  int fd = open(p, O_WRONLY | O_CREAT, 0600);
  assert_int_equal(write(fd, "SGSP", 4), 4);
  close(fd);
  sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_BATCH);
  assert_int_equal(file_size(p), -1); /* deleted */
  sg_spool_stats(sp, &st);
  assert_int_equal(st.records, 0);
  assert_int_equal(st.segments, 0);
  /* numbering continues after the highest found, even that one */
  append_fixed(sp, 0, 1);
  assert_int_equal(sg_spool_seal(sp), 0);
  sg_spool_seg_t *seg;
  assert_int_equal(sg_spool_next_segment(sp, &seg), 0);
  assert_true(sg_spool_seg_id(seg) >= 78);
  assert_int_equal(sg_spool_ack(sp, seg), 0);
  assert_int_equal(sg_spool_close(sp), 0);
}

static void test_mid_corruption(void **state) {
  fx_t *fx = *state;
  sg_spool_t *sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_BATCH);
  append_fixed(sp, 0, 10);
  assert_int_equal(sg_spool_close(sp), 0);
  char p[1024];
  seg_path(fx, p, sizeof p, 1, "seg");
  flip_byte(p, FIXED_OFF(3) + SG_SPOOL_REC_HEADER + 8); /* payload of record 3 */
  flip_byte(p, FIXED_OFF(6) + 9);                         /* length field of record 6 */
  flip_byte(p, FIXED_OFF(7) + 0);                         /* magic of record 7 */
  sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_BATCH);
  sg_spool_stats_t st;
  sg_spool_stats(sp, &st);
  assert_int_equal(st.records, 7);
  assert_int_equal(st.corrupt_records, 2); /* {3} and {6,7} */
  assert_int_equal(st.corrupt_bytes, 3 * FIXED_REC);
  assert_int_equal(st.torn_bytes, 0);
  static int got[16];
  int n = drain(sp, got, 16, 1);
  assert_int_equal(n, 7);
  static const int want[] = {0, 1, 2, 4, 5, 8, 9};
  for (int i = 0; i < 7; i++) assert_int_equal(got[i], 74 * want[i]);
  assert_int_equal(sg_spool_close(sp), 0);

  /* a bad file header with good records behind it: only the header is lost */
  sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_BATCH);
  append_fixed(sp, 0, 3);
  assert_int_equal(sg_spool_close(sp), 0);
  only_seg(fx, p, sizeof p); /* numbers jump by the seq.hw reservation */
  flip_byte(p, 2);
  sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_BATCH);
  sg_spool_stats(sp, &st);
  assert_int_equal(st.records, 3);
  assert_int_equal(st.corrupt_records, 1);
  n = drain(sp, got, 16, 1);
  assert_int_equal(n, 3);
  assert_int_equal(sg_spool_close(sp), 0);
}

static void test_runtime_corruption(void **state) {
  fx_t *fx = *state;
  sg_spool_t *sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_NEVER);
  append_fixed(sp, 0, 5);
  assert_int_equal(sg_spool_seal(sp), 0);
  char p[1024];
  seg_path(fx, p, sizeof p, 1, "seg");
  flip_byte(p, FIXED_OFF(2) + SG_SPOOL_REC_HEADER + 1); /* bit rot while open */
  flip_byte(p, FIXED_OFF(4) + SG_SPOOL_REC_HEADER + 1); /* and in the last one */
  sg_spool_seg_t *seg;
  for (int round = 0; round < 2; round++) { /* counted once, however often read */
    assert_int_equal(sg_spool_next_segment(sp, &seg), 0);
    assert_int_equal(sg_spool_seg_count(seg), 3);
    sg_spool_stats_t st;
    sg_spool_stats(sp, &st);
    assert_int_equal(st.corrupt_records, 2);
    assert_int_equal(st.corrupt_bytes, 2 * FIXED_REC);
    assert_int_equal(st.records, 3);
    sg_spool_release(sp, seg);
  }
  /* a segment deleted behind the spool's back is reported lost */
  unlink(p);
  assert_int_equal(sg_spool_next_segment(sp, &seg), SG_ENOTFOUND);
  sg_spool_stats_t st;
  sg_spool_stats(sp, &st);
  assert_int_equal(st.lost_records, 3);
  assert_int_equal(st.records, 0);
  assert_int_equal(st.bytes, 0);
  assert_int_equal(sg_spool_close(sp), 0);
}

static void test_max_bytes(void **state) {
  fx_t *fx = *state;
  uint64_t rec = sg_spool_record_size(6, 11);
  assert_int_equal(rec, FIXED_REC);
  /* room for two segments of 3 records each */
  uint64_t seg_bytes = SG_SPOOL_FILE_HEADER + 3 * rec;
  sg_spool_t *sp = open_ok(fx, seg_bytes, 2 * seg_bytes, SG_SPOOL_FSYNC_BATCH);
  append_fixed(sp, 0, 6);
  char buf[64];
  size_t n = payload_of(999 * 74, buf);
  assert_int_equal(sg_spool_append(sp, "events", buf, n, T0), SG_ETOOBIG);
  sg_spool_stats_t st;
  sg_spool_stats(sp, &st);
  assert_int_equal(st.bytes, 2 * seg_bytes);
  assert_int_equal(st.records, 6);
  assert_int_equal(sg_spool_sync(sp), 0);
  /* a record that could never fit */
  static char huge[4096];
  assert_true(sg_spool_record_size(0, sizeof huge) > 2 * seg_bytes);
  assert_int_equal(sg_spool_append(sp, NULL, huge, sizeof huge, T0), SG_ETOOBIG);
  /* acking the sealed segment gives its space back */
  sg_spool_seg_t *seg;
  assert_int_equal(sg_spool_next_segment(sp, &seg), 0);
  assert_int_equal(sg_spool_seg_count(seg), 3);
  /* acking records does not free the file's space yet */
  assert_int_equal(sg_spool_ack_records(sp, seg, 0, 3), 0);
  assert_int_equal(sg_spool_append(sp, "events", buf, n, T0), SG_ETOOBIG);
  assert_int_equal(sg_spool_ack(sp, seg), 0);
  append_fixed(sp, 6, 9);
  assert_int_equal(sg_spool_append(sp, "events", buf, n, T0), SG_ETOOBIG);
  sg_spool_stats(sp, &st);
  assert_int_equal(st.records, 6);
  assert_int_equal(st.bytes, 2 * seg_bytes);
  assert_int_equal(sg_spool_close(sp), 0);
}

static void test_big_record(void **state) {
  fx_t *fx = *state;
  sg_spool_t *sp = open_ok(fx, 1024, 0, SG_SPOOL_FSYNC_NEVER);
  static char big[10000];
  memset(big, 'x', sizeof big);
  assert_int_equal(sg_spool_append(sp, "a", "small1", 6, T0), 0);
  assert_int_equal(sg_spool_append(sp, "b", big, sizeof big, T0 + 1), 0);
  assert_int_equal(sg_spool_append(sp, "c", "small2", 6, T0 + 2), 0);
  assert_int_equal(sg_spool_seal(sp), 0);
  sg_spool_stats_t st;
  sg_spool_stats(sp, &st);
  assert_int_equal(st.segments, 3); /* the big one alone in the middle */
  static const size_t lens[] = {6, sizeof big, 6};
  for (int i = 0; i < 3; i++) {
    sg_spool_seg_t *seg;
    assert_int_equal(sg_spool_next_segment(sp, &seg), 0);
    assert_int_equal(sg_spool_seg_count(seg), 1);
    sg_spool_rec_t r;
    assert_int_equal(sg_spool_seg_record(seg, 0, &r), 0);
    assert_int_equal(r.len, lens[i]);
    assert_int_equal(r.tag[0], 'a' + i);
    assert_int_equal(sg_spool_ack(sp, seg), 0);
  }
  char tag[300];
  memset(tag, 't', sizeof tag - 1);
  tag[sizeof tag - 1] = '\0';
  assert_int_equal(sg_spool_append(sp, tag, "x", 1, T0), SG_EINVAL); /* tag > 255 */
  tag[255] = '\0';
  assert_int_equal(sg_spool_append(sp, tag, "x", 1, T0), 0);
  assert_int_equal(sg_spool_close(sp), 0);
}

/* A segment is read through a mapping that costs resident memory only for
 * what is being read: loading it (validation) leaves almost nothing
 * resident, a pass over its records leaves them resident until
 * sg_spool_seg_drop, and what was dropped reads back the same. "Almost
 * nothing": touching one byte can map a whole folio of the page cache, up to
 * 2 MB. */
static void test_mapped_segment(void **state) {
  fx_t *fx = *state;
  sg_spool_t *sp = open_ok(fx, 64u << 20, 0, SG_SPOOL_FSYNC_NEVER);
  enum { RECS = 800, LEN = 40000 }; /* 32 MB */
  static char rec[LEN];
  for (int k = 0; k < RECS; k++) {
    memset(rec, 'a' + k % 26, sizeof rec);
    memcpy(rec, &k, sizeof k);
    assert_int_equal(sg_spool_append(sp, "t", rec, sizeof rec, T0 + k), 0);
  }
  assert_int_equal(sg_spool_seal(sp), 0);
  sg_spool_seg_t *seg;
  assert_int_equal(sg_spool_next_segment(sp, &seg), 0);
  assert_int_equal(sg_spool_seg_count(seg), RECS);
  sg_spool_rec_t r;
  assert_int_equal(sg_spool_seg_record(seg, 0, &r), 0);
  long kb = mapping_rss_kb(r.data);
  if (kb < 0 || kb > 4096) fail_msg("after loading, %ld kB of the segment are resident", kb);
  for (int pass = 0; pass < 2; pass++) {
    for (int k = 0; k < RECS; k++) {
      assert_int_equal(sg_spool_seg_record(seg, (size_t)k, &r), 0);
      assert_int_equal(r.len, LEN);
      int got;
      memcpy(&got, r.data, sizeof got);
      assert_int_equal(got, k);
      const char *c = r.data;
      assert_int_equal(c[LEN - 1], 'a' + k % 26);
      assert_int_equal(c[LEN / 2], 'a' + k % 26);
    }
    kb = mapping_rss_kb(r.data);
    if (kb < 24000) fail_msg("pass %d read 32 MB of records, yet %ld kB are resident", pass, kb);
    if (pass == 0) { /* the first half, then the rest */
      sg_spool_seg_drop(seg, 0, RECS / 2);
      kb = mapping_rss_kb(r.data);
      if (kb < 12000 || kb > 18000) fail_msg("%ld kB resident with half the records given back", kb);
      sg_spool_seg_drop(seg, RECS / 2, SIZE_MAX);
    } else {
      sg_spool_seg_drop(seg, 0, SIZE_MAX);
    }
    kb = mapping_rss_kb(r.data);
    if (kb > 0) fail_msg("pass %d: %ld kB still resident after sg_spool_seg_drop", pass, kb);
  }
  assert_int_equal(sg_spool_ack(sp, seg), 0);
  assert_int_equal(sg_spool_close(sp), 0);
}

static void test_deadletter(void **state) {
  fx_t *fx = *state;
  sg_spool_t *sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_BATCH);
  append_fixed(sp, 0, 5);
  assert_int_equal(sg_spool_seal(sp), 0);
  sg_spool_seg_t *seg;
  assert_int_equal(sg_spool_next_segment(sp, &seg), 0);
  assert_int_equal(sg_spool_seg_count(seg), 5);
  /* the batch was poison; record by record: 0,1 go through, 2 is bad */
  assert_int_equal(sg_spool_ack_records(sp, seg, 0, 2), 0);
  assert_int_equal(sg_spool_deadletter(sp, seg, 2, "Code: 117. DB::Exception:\nbad\tTSV"), 0);
  assert_true(sg_spool_seg_done(seg, 2));
  assert_false(sg_spool_seg_done(seg, 3));
  assert_int_equal(sg_spool_deadletter(sp, seg, 2, "again"), 0); /* idempotent */
  sg_spool_stats_t st;
  sg_spool_stats(sp, &st);
  assert_int_equal(st.records, 2);
  assert_int_equal(st.dead_records, 1);
  assert_int_equal(st.acked_records, 2);
  assert_true(st.oldest_us == T0 + 74 * 3);
  /* ClickHouse goes away before 3 and 4 are sent; then the gateway dies */
  sg_spool_release(sp, seg);
  assert_int_equal(sg_spool_close(sp), 0);

  sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_BATCH);
  sg_spool_stats(sp, &st);
  assert_int_equal(st.records, 2);
  assert_int_equal(sg_spool_next_segment(sp, &seg), 0);
  assert_int_equal(sg_spool_seg_count(seg), 2); /* only the undelivered ones */
  sg_spool_rec_t r;
  assert_int_equal(sg_spool_seg_record(seg, 0, &r), 0);
  check_rec(&r, 74 * 3);
  assert_int_equal(sg_spool_seg_record(seg, 1, &r), 0);
  check_rec(&r, 74 * 4);
  assert_int_equal(sg_spool_ack(sp, seg), 0);
  assert_int_equal(count_files(fx->spool, ".seg"), 0);
  assert_int_equal(count_files(fx->spool, ".ack"), 0);

  /* the dead letter: the record verbatim and one line saying why */
  char dd[1024], p[1200];
  path_of(fx, dd, sizeof dd, "dead");
  snprintf(p, sizeof p, "%s/%016d.seg", dd, 1);
  assert_int_equal(file_size(p), SG_SPOOL_FILE_HEADER + FIXED_REC);
  snprintf(p, sizeof p, "%s/%016d.txt", dd, 1);
  FILE *f = fopen(p, "r");
  assert_non_null(f);
  char line[512];
  assert_non_null(fgets(line, sizeof line, f));
  char want[512];
  snprintf(want, sizeof want,
           "%" PRIu64 "\t%" PRId64 "\tevents\tCode: 117. DB::Exception: bad TSV\n",
           (UINT64_C(1) << 24) | 2, T0 + 74 * 2);
  assert_string_equal(line, want);
  assert_null(fgets(line, sizeof line, f));
  fclose(f);
  /* the dead file is a readable spool segment: open it as one */
  sg_spool_close(sp);
  char spool2[1024];
  snprintf(spool2, sizeof spool2, "%s/copy", fx->dir);
  assert_int_equal(mkdir(spool2, 0700), 0);
  char dst[1100], cmd[3000];
  snprintf(dst, sizeof dst, "%s/%016d.seg", spool2, 1);
  snprintf(cmd, sizeof cmd, "cp '%s/%016d.seg' '%s'", dd, 1, dst);
  assert_int_equal(system(cmd), 0);
  assert_int_equal(sg_spool_open(spool2, NULL, &sp), 0);
  assert_int_equal(sg_spool_next_segment(sp, &seg), 0);
  assert_int_equal(sg_spool_seg_count(seg), 1);
  assert_int_equal(sg_spool_seg_record(seg, 0, &r), 0);
  check_rec(&r, 74 * 2);
  assert_int_equal(r.seq, (UINT64_C(1) << 24) | 2);
  sg_spool_release(sp, seg);
  assert_int_equal(sg_spool_close(sp), 0);
}

/* A dead-letter write that fails (dead/ is not a directory; the reason file
 * cannot be opened) leaves the record pending and nothing half-written in
 * dead/: once dead/ is fixed one retry gives exactly one copy. Regular files
 * and directories in the way stop root too, unlike permission bits. */
static void test_deadletter_fails(void **state) {
  fx_t *fx = *state;
  sg_spool_t *sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_BATCH);
  append_fixed(sp, 0, 3);
  assert_int_equal(sg_spool_seal(sp), 0);
  char dd[1024], p[1200];
  path_of(fx, dd, sizeof dd, "dead");
  FILE *f = fopen(dd, "w"); /* a file where the directory should be */
  assert_non_null(f);
  fclose(f);
  sg_spool_seg_t *seg;
  assert_int_equal(sg_spool_next_segment(sp, &seg), 0);
  assert_int_equal(sg_spool_deadletter(sp, seg, 1, "bad"), SG_EIO);
  assert_false(sg_spool_seg_done(seg, 1));
  sg_spool_stats_t st;
  sg_spool_stats(sp, &st);
  assert_int_equal(st.dead_records, 0);
  assert_int_equal(st.records, 3);

  /* dead/ exists now, but the reason file cannot be written: the record's
   * copy made in this attempt must be taken back */
  assert_int_equal(unlink(dd), 0);
  assert_int_equal(mkdir(dd, 0700), 0);
  snprintf(p, sizeof p, "%s/%016d.txt", dd, 1);
  assert_int_equal(mkdir(p, 0700), 0);
  assert_int_not_equal(sg_spool_deadletter(sp, seg, 1, "bad"), 0);
  assert_false(sg_spool_seg_done(seg, 1));
  assert_int_equal(sg_spool_deadletter(sp, seg, 1, "bad"), SG_EIO);

  assert_int_equal(rmdir(p), 0);
  assert_int_equal(sg_spool_deadletter(sp, seg, 1, "bad"), 0);
  assert_true(sg_spool_seg_done(seg, 1));
  snprintf(p, sizeof p, "%s/%016d.seg", dd, 1);
  assert_int_equal(file_size(p), SG_SPOOL_FILE_HEADER + FIXED_REC); /* one copy */
  snprintf(p, sizeof p, "%s/%016d.txt", dd, 1);
  f = fopen(p, "r");
  assert_non_null(f);
  char line[256];
  assert_non_null(fgets(line, sizeof line, f));
  assert_non_null(strstr(line, "\tbad\n"));
  assert_null(fgets(line, sizeof line, f));
  fclose(f);
  sg_spool_stats(sp, &st);
  assert_int_equal(st.dead_records, 1);
  assert_int_equal(st.records, 2);
  sg_spool_release(sp, seg);
  assert_int_equal(sg_spool_close(sp), 0);
}

static void test_partial_ack(void **state) {
  fx_t *fx = *state;
  sg_spool_t *sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_ALWAYS);
  append_range(sp, 0, 10);
  assert_int_equal(sg_spool_seal(sp), 0);
  sg_spool_seg_t *seg;
  assert_int_equal(sg_spool_next_segment(sp, &seg), 0);
  /* e.g. the "spans" rows (odd) were accepted, "events" failed transiently */
  for (size_t i = 1; i < 10; i += 2) assert_int_equal(sg_spool_ack_records(sp, seg, i, 1), 0);
  assert_int_equal(sg_spool_ack_records(sp, seg, 9, 2), SG_EINVAL);
  assert_int_equal(sg_spool_ack_records(sp, seg, 0, 0), 0);
  sg_spool_stats_t st;
  sg_spool_stats(sp, &st);
  assert_int_equal(st.records, 5);
  assert_true(st.oldest_us == T0);
  assert_int_equal(sg_spool_close(sp), 0); /* frees the handle still out */

  /* a torn progress entry from a crash does not confuse what follows */
  char p[1024];
  seg_path(fx, p, sizeof p, 1, "ack");
  int fd = open(p, O_WRONLY | O_APPEND);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "\xffSGA\x01\x02\x03", 7), 7);
  close(fd);
  sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_ALWAYS);
  static int got[16];
  int n = drain(sp, got, 16, 0);
  assert_int_equal(n, 5);
  for (int i = 0; i < 5; i++) assert_int_equal(got[i], 2 * i);
  assert_int_equal(sg_spool_next_segment(sp, &seg), 0);
  assert_int_equal(sg_spool_ack_records(sp, seg, 0, 1), 0); /* record 0 */
  assert_int_equal(sg_spool_ack_records(sp, seg, 3, 2), 0); /* records 6, 8 */
  sg_spool_release(sp, seg);
  assert_int_equal(sg_spool_close(sp), 0);
  sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_ALWAYS);
  n = drain(sp, got, 16, 1);
  assert_int_equal(n, 2);
  assert_int_equal(got[0], 2);
  assert_int_equal(got[1], 4);
  assert_int_equal(sg_spool_close(sp), 0);

  /* all acked but the crash came before the segment was deleted */
  sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_ALWAYS);
  append_range(sp, 0, 3);
  assert_int_equal(sg_spool_seal(sp), 0);
  assert_int_equal(sg_spool_next_segment(sp, &seg), 0);
  assert_int_equal(sg_spool_ack_records(sp, seg, 0, 3), 0);
  assert_int_equal(sg_spool_close(sp), 0);
  /* and an orphan progress file from a crash inside sg_spool_ack */
  seg_path(fx, p, sizeof p, 999, "ack");
  fd = open(p, O_WRONLY | O_CREAT, 0600);
  close(fd);
  sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_ALWAYS);
  sg_spool_stats(sp, &st);
  assert_int_equal(st.records, 0);
  assert_int_equal(st.segments, 0);
  assert_int_equal(count_files(fx->spool, ".seg"), 0);
  assert_int_equal(count_files(fx->spool, ".ack"), 0);
  assert_int_equal(sg_spool_close(sp), 0);
}

static void test_fsync_modes(void **state) {
  fx_t *fx = *state;
  sg_spool_stats_t st;
  uint64_t f0;

  sg_spool_t *sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_ALWAYS);
  append_range(sp, 0, 1); /* creates the segment (and seq.hw) */
  sg_spool_stats(sp, &st);
  f0 = st.fsyncs;
  assert_true(f0 >= 2);
  append_range(sp, 1, 5);
  sg_spool_stats(sp, &st);
  assert_int_equal(st.fsyncs, f0 + 4);
  assert_int_equal(sg_spool_sync(sp), 0); /* nothing unsynced */
  sg_spool_stats(sp, &st);
  assert_int_equal(st.fsyncs, f0 + 4);
  assert_int_equal(sg_spool_close(sp), 0);

  sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_BATCH);
  append_range(sp, 0, 1);
  assert_int_equal(sg_spool_sync(sp), 0);
  sg_spool_stats(sp, &st);
  f0 = st.fsyncs;
  append_range(sp, 1, 5);
  sg_spool_stats(sp, &st);
  assert_int_equal(st.fsyncs, f0);
  assert_int_equal(sg_spool_sync(sp), 0);
  assert_int_equal(sg_spool_sync(sp), 0);
  sg_spool_stats(sp, &st);
  assert_int_equal(st.fsyncs, f0 + 1);
  append_range(sp, 5, 6);
  assert_int_equal(sg_spool_seal(sp), 0); /* seal syncs what is unsynced */
  sg_spool_stats(sp, &st);
  assert_int_equal(st.fsyncs, f0 + 2);
  assert_int_equal(sg_spool_close(sp), 0);

  sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_NEVER);
  append_range(sp, 0, 5);
  assert_int_equal(sg_spool_sync(sp), 0);
  assert_int_equal(sg_spool_seal(sp), 0);
  static int got[32];
  int n = drain(sp, got, 32, 1);
  assert_int_equal(n, 5 + 6 + 5);
  sg_spool_stats(sp, &st);
  assert_int_equal(st.fsyncs, 0);
  assert_int_equal(sg_spool_close(sp), 0);
}

/* sg_spool_sync() in steps, the fdatasync on another thread's descriptor:
 * only unsynced appends give a descriptor; appends between begin and end
 * wait for the next sync; after a failed sync the open segment is sealed
 * (new appends go to a fresh file) and the next sync fails too. */
static void test_sync_split(void **state) {
  fx_t *fx = *state;
  sg_spool_stats_t st;
  int fd;
  sg_spool_t *sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_BATCH);
  assert_int_equal(sg_spool_sync_begin(sp, &fd), 0);
  assert_int_equal(fd, -1); /* nothing appended */
  append_range(sp, 0, 2);
  assert_int_equal(sg_spool_sync_begin(sp, &fd), 0);
  assert_true(fd >= 0);
  append_range(sp, 2, 3); /* after the begin: for the next sync */
  assert_int_equal(sg_spool_sync_fd(fd), 0);
  assert_int_equal(fcntl(fd, F_GETFD), -1); /* closed */
  sg_spool_sync_end(sp, 0);
  assert_int_equal(sg_spool_sync_begin(sp, &fd), 0);
  assert_true(fd >= 0);
  assert_int_equal(sg_spool_sync_fd(fd), 0);
  sg_spool_sync_end(sp, 0);
  assert_int_equal(sg_spool_sync_begin(sp, &fd), 0);
  assert_int_equal(fd, -1);

  /* A failed sync with nothing appended meanwhile: sealed; the next
   * appends go to a fresh segment and sync fine. */
  append_range(sp, 3, 4);
  assert_int_equal(sg_spool_sync_begin(sp, &fd), 0);
  close(fd);
  sg_spool_sync_end(sp, SG_EIO);
  sg_spool_stats(sp, &st);
  assert_int_equal(st.sealed_segments, 1);
  append_range(sp, 4, 5);
  assert_int_equal(sg_spool_sync_begin(sp, &fd), 0);
  assert_true(fd >= 0);
  assert_int_equal(sg_spool_sync_fd(fd), 0);
  sg_spool_sync_end(sp, 0);

  /* A failed sync with an append meanwhile: sealed, and the next sync
   * (the one that append waits for) reports the failure. */
  append_range(sp, 5, 6);
  assert_int_equal(sg_spool_sync_begin(sp, &fd), 0);
  assert_true(fd >= 0);
  append_range(sp, 6, 7);
  close(fd);
  sg_spool_sync_end(sp, SG_EIO);
  sg_spool_stats(sp, &st);
  assert_int_equal(st.segments, 2);
  assert_int_equal(st.sealed_segments, 2);
  append_range(sp, 7, 8);
  sg_spool_stats(sp, &st);
  assert_int_equal(st.segments, 3);
  assert_int_equal(sg_spool_sync_begin(sp, &fd), SG_EIO);
  assert_true(fd >= 0);
  assert_int_equal(sg_spool_sync_fd(fd), 0);
  sg_spool_sync_end(sp, 0);
  assert_int_equal(sg_spool_sync_begin(sp, &fd), 0);
  assert_int_equal(fd, -1);
  static int got[16];
  assert_int_equal(sg_spool_seal(sp), 0);
  assert_int_equal(drain(sp, got, 16, 1), 8); /* nothing lost */
  assert_int_equal(sg_spool_close(sp), 0);

  sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_NEVER);
  append_range(sp, 0, 2);
  assert_int_equal(sg_spool_sync_begin(sp, &fd), 0);
  assert_int_equal(fd, -1);
  assert_int_equal(sg_spool_close(sp), 0);
}

static void test_stats(void **state) {
  fx_t *fx = *state;
  uint64_t rec = FIXED_REC;
  sg_spool_t *sp = open_ok(fx, SG_SPOOL_FILE_HEADER + 4 * rec, 0, SG_SPOOL_FSYNC_NEVER);
  sg_spool_stats_t st;
  sg_spool_stats(sp, &st);
  assert_int_equal(st.records + st.bytes + st.segments, 0);
  assert_true(st.oldest_us == 0);
  append_fixed(sp, 0, 6); /* 4 sealed + 2 open */
  sg_spool_stats(sp, &st);
  assert_int_equal(st.records, 6);
  assert_int_equal(st.segments, 2);
  assert_int_equal(st.sealed_segments, 1);
  assert_int_equal(st.bytes, 2 * SG_SPOOL_FILE_HEADER + 6 * rec);
  assert_int_equal(st.open_records, 2);
  assert_int_equal(st.open_bytes, SG_SPOOL_FILE_HEADER + 2 * rec);
  assert_true(st.oldest_us == T0);
  assert_true(st.open_oldest_us == T0 + 74 * 4);
  assert_int_equal(st.appended_records, 6);
  sg_spool_seg_t *seg;
  assert_int_equal(sg_spool_next_segment(sp, &seg), 0);
  assert_int_equal(sg_spool_ack_records(sp, seg, 0, 1), 0);
  sg_spool_stats(sp, &st);
  assert_true(st.oldest_us == T0 + 74);
  assert_int_equal(st.records, 5);
  assert_int_equal(sg_spool_ack(sp, seg), 0);
  sg_spool_stats(sp, &st);
  assert_true(st.oldest_us == T0 + 74 * 4);
  assert_int_equal(st.records, 2);
  assert_int_equal(st.acked_records, 4);
  assert_int_equal(st.segments, 1);
  assert_int_equal(st.sealed_segments, 0);
  assert_int_equal(st.bytes, SG_SPOOL_FILE_HEADER + 2 * rec);
  assert_int_equal(sg_spool_close(sp), 0);
}

static void test_numbers_never_reused(void **state) {
  fx_t *fx = *state;
  uint64_t last = 0;
  for (int round = 0; round < 3; round++) {
    sg_spool_t *sp = open_ok(fx, 0, 0, SG_SPOOL_FSYNC_BATCH);
    append_range(sp, 0, 3);
    assert_int_equal(sg_spool_seal(sp), 0);
    sg_spool_seg_t *seg;
    assert_int_equal(sg_spool_next_segment(sp, &seg), 0);
    sg_spool_rec_t r;
    assert_int_equal(sg_spool_seg_record(seg, 0, &r), 0);
    assert_true(r.seq > last);
    assert_int_equal(sg_spool_seg_record(seg, 2, &r), 0);
    last = r.seq;
    assert_int_equal(sg_spool_ack(sp, seg), 0);
    assert_int_equal(sg_spool_close(sp), 0);
    assert_int_equal(count_files(fx->spool, ".seg"), 0); /* drained empty */
  }
}

static void test_bad_args(void **state) {
  fx_t *fx = *state;
  sg_spool_t *sp = NULL;
  sg_spool_opts_t o = {0, 0, (sg_spool_fsync_t)42};
  assert_int_equal(sg_spool_open(fx->spool, &o, &sp), SG_EINVAL);
  assert_int_equal(sg_spool_open("", NULL, &sp), SG_EINVAL);
  assert_int_equal(sg_spool_open(NULL, NULL, &sp), SG_EINVAL);
  char p[1024];
  snprintf(p, sizeof p, "%s/file", fx->dir);
  int fd = open(p, O_WRONLY | O_CREAT, 0600);
  close(fd);
  assert_int_equal(sg_spool_open(p, NULL, &sp), SG_EIO); /* not a directory */
  assert_null(sp);
  assert_int_equal(sg_spool_open(fx->spool, NULL, &sp), 0);
  assert_int_equal(sg_spool_append(sp, "t", NULL, 3, T0), SG_EINVAL);
  assert_int_equal(sg_spool_append(NULL, "t", "x", 1, T0), SG_EINVAL);
  assert_int_equal(sg_spool_next_segment(sp, NULL), SG_EINVAL);
  assert_int_equal(sg_spool_ack(sp, NULL), SG_EINVAL);
  assert_int_equal(sg_spool_close(NULL), 0);
  assert_int_equal(sg_spool_close(sp), 0);
}

/* ---- kill -9 in the middle of appends ---------------------------------- */

static void crash_child(const char *dir, int wfd, sg_spool_fsync_t fs) {
  sg_spool_opts_t o = {8192, 0, fs};
  sg_spool_t *sp;
  if (sg_spool_open(dir, &o, &sp) != 0) _exit(2);
  char buf[4096];
  for (int i = 0; i < 1000000; i++) {
    /* variable sizes up to ~3 KiB so kills land inside writes */
    int n = snprintf(buf, sizeof buf, "crash-%08d|", i);
    int extra = (i * 7919) % 3000;
    for (int k = 0; k < extra; k++) buf[n + k] = (char)('A' + (i + k) % 26);
    n += extra;
    if (sg_spool_append(sp, "spans", buf, (size_t)n, T0 + i) != 0) _exit(3);
    if (sg_spool_sync(sp) != 0) _exit(4);
    if (write(wfd, &i, sizeof i) != sizeof i) _exit(5);
  }
  _exit(0);
}

static void crash_round(const fx_t *fx, const char *dir, sg_spool_fsync_t fs, int kill_after,
                        int delay_us) {
  (void)fx;
  int pfd[2];
  assert_int_equal(pipe(pfd), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(pfd[0]);
    crash_child(dir, pfd[1], fs);
  }
  close(pfd[1]);
  int reported = -1, v;
  while (reported < kill_after) {
    ssize_t r = read(pfd[0], &v, sizeof v);
    assert_int_equal(r, sizeof v);
    reported = v;
  }
  usleep((useconds_t)delay_us);
  kill(pid, SIGKILL);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  ssize_t r;
  while ((r = read(pfd[0], &v, sizeof v)) == sizeof v) reported = v;
  assert_int_equal(r, 0);
  close(pfd[0]);

  sg_spool_t *sp;
  assert_int_equal(sg_spool_open(dir, NULL, &sp), 0);
  sg_spool_stats_t st;
  sg_spool_stats(sp, &st);
  assert_int_equal(st.corrupt_records, 0);
  int next = 0;
  sg_spool_seg_t *seg;
  int rc;
  while ((rc = sg_spool_next_segment(sp, &seg)) == 0) {
    for (size_t i = 0; i < sg_spool_seg_count(seg); i++) {
      sg_spool_rec_t rec;
      assert_int_equal(sg_spool_seg_record(seg, i, &rec), 0);
      char want[4096];
      int n = snprintf(want, sizeof want, "crash-%08d|", next);
      int extra = (next * 7919) % 3000;
      for (int k = 0; k < extra; k++) want[n + k] = (char)('A' + (next + k) % 26);
      n += extra;
      assert_int_equal(rec.len, (size_t)n);
      assert_memory_equal(rec.data, want, (size_t)n);
      assert_true(rec.time_us == T0 + next);
      next++;
    }
    assert_int_equal(sg_spool_ack(sp, seg), 0);
  }
  assert_int_equal(rc, SG_ENOTFOUND);
  /* every record reported synced is there (and possibly the one after) */
  assert_true(next >= reported + 1);
  assert_true(next <= reported + 2);
  assert_int_equal(sg_spool_close(sp), 0);
}

static void test_crash_kill9(void **state) {
  fx_t *fx = *state;
  srand(test_seed("test_crash_kill9"));
  for (int round = 0; round < 6; round++) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/crash%d", fx->dir, round);
    sg_spool_fsync_t fs = round % 3 == 0   ? SG_SPOOL_FSYNC_ALWAYS
                          : round % 3 == 1 ? SG_SPOOL_FSYNC_BATCH
                                           : SG_SPOOL_FSYNC_NEVER;
    crash_round(fx, dir, fs, 200 + rand() % 300, rand() % 3000);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_crc_is_zlibs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rotation_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
      cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mid_corruption, setup, teardown),
      cmocka_unit_test_setup_teardown(test_runtime_corruption, setup, teardown),
      cmocka_unit_test_setup_teardown(test_max_bytes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_big_record, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mapped_segment, setup, teardown),
      cmocka_unit_test_setup_teardown(test_deadletter, setup, teardown),
      cmocka_unit_test_setup_teardown(test_deadletter_fails, setup, teardown),
      cmocka_unit_test_setup_teardown(test_partial_ack, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fsync_modes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
      cmocka_unit_test_setup_teardown(test_numbers_never_reused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_args, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sync_split, setup, teardown),
      cmocka_unit_test_setup_teardown(test_crash_kill9, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
