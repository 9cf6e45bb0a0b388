/* spool.c - the durable on-disk queue; format and contracts in spool.h. */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <libdeflate.h>

#include "err.h"
#include "pages.h"

#define FILE_MAGIC "SGSPOOL\x01"
static const unsigned char REC_MAGIC[4] = {0xff, 'S', 'G', 'R'};
static const unsigned char ACK_MAGIC[4] = {0xff, 'S', 'G', 'A'};
#define ACK_ENTRY 24u
#define IDX_BITS 24
#define MAX_SEG_RECORDS (1u << IDX_BITS)
#define MAX_SEG_SEQ ((UINT64_C(1) << (64 - IDX_BITS)) - 1)
#define HW_BLOCK 1024u
#define HW_NAME "seq.hw"
#define HW_TMP "seq.hw.tmp"
#define DEAD_DIR "dead"
#define MAX_REASON 4096u
#define NAME_LEN 32 /* 16 digits + ".seg" + NUL, with room */

/* What the spool knows of one segment file without holding it in memory. */
typedef struct {
  uint64_t seq;
  uint64_t bytes;    /* file size */
  uint64_t records;  /* pending (not acked, not dead-lettered) */
  int64_t oldest_us; /* append time of the first pending record */
  uint64_t corrupt;  /* invalid regions already counted in the stats */
  uint64_t corrupt_bytes;
  unsigned sealed : 1;
  unsigned loaded : 1; /* handed out by sg_spool_next_segment() */
} seg_meta_t;

struct sg_spool_seg_s {
  sg_spool_seg_t *prev, *next; /* handles out, so close can free them */
  uint64_t id;
  char *buf; /* the whole file, mapped read-only (NULL when empty) */
  size_t len;
  size_t *off; /* offsets of the pending records in buf */
  size_t n;
  uint8_t *done;
  size_t first_undone;
};

struct sg_spool_s {
  sg_spool_opts_t o;
  int dirfd;
  int deadfd; /* -1 until the first dead letter */
  seg_meta_t *segs; /* segs[head..n), ascending seq; the open one is last */
  size_t head, n, cap;
  int fd; /* the open segment, -1 if none */
  int dirty; /* appends since the last fdatasync */
  int sticky_err; /* a sync failed where nobody could be told; sg_spool_sync reports it */
  uint64_t sync_mark; /* appended_records at sg_spool_sync_begin */
  uint64_t open_nrec;
  uint64_t next_seq;
  uint64_t hw; /* segment numbers below this are reserved in seq.hw */
  uint64_t bytes;
  sg_spool_stats_t st; /* the counters */
  sg_spool_seg_t *handles;
};

/* ---- little helpers ---------------------------------------------------- */

static void put32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static uint64_t get64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* CRC-32 (the gzip/zlib polynomial, so spools written before stay
 * readable). libdeflate's folds with carry-less multiplies where the CPU
 * has them; zlib's table loop cost 6% of a request's CPU (it runs on every
 * append and again on every read). */
static uint32_t crc(uint32_t c, const void *p, size_t n) { return libdeflate_crc32(c, p, n); }

static int sys_err(void) { return errno == ENOMEM ? SG_ENOMEM : SG_EIO; }

static void seg_name(char *out, uint64_t seq, const char *ext) {
  snprintf(out, NAME_LEN, "%016" PRIu64 ".%s", seq, ext);
}

/* Parse "<16 digits>.<ext>"; 1 and *seq on a match. */
static int parse_name(const char *name, const char *ext, uint64_t *seq) {
  size_t el = strlen(ext);
  if (strlen(name) != 16 + 1 + el || name[16] != '.' || strcmp(name + 17, ext) != 0) return 0;
  uint64_t v = 0;
  for (int i = 0; i < 16; i++) {
    if (name[i] < '0' || name[i] > '9') return 0;
    v = v * 10 + (uint64_t)(name[i] - '0');
  }
  if (v == 0 || v > MAX_SEG_SEQ) return 0; /* never ours: leave it alone */
  *seq = v;
  return 1;
}

static int write_full(int fd, const void *p, size_t n) {
  const char *b = p;
  while (n > 0) {
    ssize_t w = write(fd, b, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return sys_err();
    }
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

static int writev_full(int fd, struct iovec *iov, int cnt) {
  while (cnt > 0) {
    ssize_t w = writev(fd, iov, cnt);
    if (w < 0) {
      if (errno == EINTR) continue;
      return sys_err();
    }
    while (cnt > 0 && (size_t)w >= iov->iov_len) {
      w -= (ssize_t)iov->iov_len;
      iov++;
      cnt--;
    }
    if (cnt > 0) {
      iov->iov_base = (char *)iov->iov_base + w;
      iov->iov_len -= (size_t)w;
    }
  }
  return 0;
}

/* fdatasync/fsync unless FSYNC_NEVER; counted. */
static int do_sync(sg_spool_t *sp, int fd, int data_only) {
  if (sp->o.fsync == SG_SPOOL_FSYNC_NEVER) return 0;
  sp->st.fsyncs++;
  int r;
  do r = data_only ? fdatasync(fd) : fsync(fd);
  while (r != 0 && errno == EINTR);
  /* some file systems cannot fsync a directory (EINVAL): nothing to wait for */
  if (r != 0 && !data_only && errno == EINVAL) r = 0;
  return r == 0 ? 0 : SG_EIO;
}

/* Read the file name (relative to dirfd) whole. SG_ENOTFOUND if missing.
 * *buf is malloc'd (never NULL on success), the caller frees it. */
static int read_all(int dirfd, const char *name, char **buf, size_t *len) {
  int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? SG_ENOTFOUND : sys_err();
  struct stat stb;
  if (fstat(fd, &stb) != 0) {
    int rc = sys_err();
    close(fd);
    return rc;
  }
  size_t size = (size_t)stb.st_size, got = 0;
  char *b = malloc(size ? size : 1);
  if (b == NULL) {
    close(fd);
    return SG_ENOMEM;
  }
  while (got < size) {
    ssize_t r = pread(fd, b + got, size - got, (off_t)got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int rc = sys_err();
      free(b);
      close(fd);
      return rc;
    }
    if (r == 0) break; /* shrank under us: take what is there */
    got += (size_t)r;
  }
  close(fd);
  *buf = b;
  *len = got;
  return 0;
}

/* Map the file name (relative to dirfd) whole, read-only: *buf is NULL for
 * an empty file; unmap with unmap_file(). SG_ENOTFOUND if missing. Pages are
 * read on first touch and may be dropped again (pages.h), so a segment costs
 * resident memory only for what is being read at the time. A read error of
 * the disk under a mapping is a SIGBUS, where read() would return EIO: the
 * spool holds only sealed files it wrote itself, never truncated while they
 * are out. */
static int map_file(int dirfd, const char *name, char **buf, size_t *len) {
  int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? SG_ENOTFOUND : sys_err();
  struct stat stb;
  int rc = 0;
  *buf = NULL;
  *len = 0;
  if (fstat(fd, &stb) != 0) {
    rc = sys_err();
  } else if (stb.st_size > 0) {
    void *m = mmap(NULL, (size_t)stb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      rc = sys_err();
    } else {
      *buf = m;
      *len = (size_t)stb.st_size;
    }
  }
  close(fd);
  return rc;
}

static void unmap_file(char *buf, size_t len) {
  if (buf) munmap(buf, len);
}

/* ---- the record format -------------------------------------------------- */

uint64_t sg_spool_record_size(size_t tag_len, size_t len) {
  return (uint64_t)SG_SPOOL_REC_HEADER + tag_len + len;
}

/* Size of the valid record at buf[pos], or 0 if there is none. */
static size_t rec_valid(const unsigned char *buf, size_t len, size_t pos) {
  if (len - pos < SG_SPOOL_REC_HEADER) return 0;
  const unsigned char *h = buf + pos;
  if (memcmp(h, REC_MAGIC, 4) != 0) return 0;
  if (get32(h + 4) != crc(0, h + 8, SG_SPOOL_REC_HEADER - 8)) return 0;
  if (h[33] != 0 || h[34] != 0 || h[35] != 0) return 0;
  uint64_t body = (uint64_t)h[32] + get32(h + 8);
  if (body > len - pos - SG_SPOOL_REC_HEADER) return 0;
  if (get32(h + 12) != crc(0, h + SG_SPOOL_REC_HEADER, (size_t)body)) return 0;
  return SG_SPOOL_REC_HEADER + (size_t)body;
}

static void rec_decode(const char *buf, size_t off, sg_spool_rec_t *rec) {
  const unsigned char *h = (const unsigned char *)buf + off;
  rec->tag_len = h[32];
  rec->len = get32(h + 8);
  rec->tag = buf + off + SG_SPOOL_REC_HEADER;
  rec->data = rec->tag + rec->tag_len;
  rec->seq = get64(h + 16);
  rec->time_us = (int64_t)get64(h + 24);
}

static uint64_t rec_seq(const char *buf, size_t off) {
  return get64((const unsigned char *)buf + off + 16);
}
static int64_t rec_time(const char *buf, size_t off) {
  return (int64_t)get64((const unsigned char *)buf + off + 24);
}

/* Done ranges of record numbers, from a .ack file: sorted and merged. */
typedef struct {
  uint64_t first, last;
} range_t;

static int range_cmp(const void *a, const void *b) {
  const range_t *x = a, *y = b;
  return x->first < y->first ? -1 : x->first > y->first;
}

static int ranges_load(int dirfd, uint64_t seq, range_t **out, size_t *count) {
  char name[NAME_LEN];
  seg_name(name, seq, "ack");
  char *buf;
  size_t len;
  *out = NULL;
  *count = 0;
  int rc = read_all(dirfd, name, &buf, &len);
  if (rc == SG_ENOTFOUND) return 0;
  if (rc != 0) return rc;
  range_t *r = malloc((len / ACK_ENTRY + 1) * sizeof *r);
  if (r == NULL) {
    free(buf);
    return SG_ENOMEM;
  }
  size_t n = 0;
  const unsigned char *b = (const unsigned char *)buf;
  /* Entries are fixed-size, but resynchronise on the magic so a torn or
   * corrupt entry cannot misalign the ones after it. */
  for (size_t pos = 0; pos + ACK_ENTRY <= len;) {
    if (memcmp(b + pos, ACK_MAGIC, 4) == 0 && get32(b + pos + 4) == crc(0, b + pos + 8, 16)) {
      r[n].first = get64(b + pos + 8);
      r[n].last = get64(b + pos + 16);
      if (r[n].first <= r[n].last) n++;
      pos += ACK_ENTRY;
    } else {
      pos++;
    }
  }
  free(buf);
  qsort(r, n, sizeof *r, range_cmp);
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    if (m > 0 && r[i].first <= r[m - 1].last + 1) {
      if (r[i].last > r[m - 1].last) r[m - 1].last = r[i].last;
    } else {
      r[m++] = r[i];
    }
  }
  *out = r;
  *count = m;
  return 0;
}

static int range_has(const range_t *r, size_t n, uint64_t v) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (v < r[mid].first) hi = mid;
    else if (v > r[mid].last) lo = mid + 1;
    else return 1;
  }
  return 0;
}

/* A segment file read and validated. */
typedef struct {
  char *buf;
  size_t len;
  size_t *off; /* pending records */
  size_t n;
  uint64_t regions; /* invalid regions followed by a valid record */
  uint64_t region_bytes;
  size_t tail; /* bytes from here on are invalid with nothing valid after */
} parsed_t;

static void parsed_free(parsed_t *p) {
  unmap_file(p->buf, p->len);
  free(p->off);
}

/* Read segment seq, validate every record, drop those done per its .ack. */
static int segment_load(sg_spool_t *sp, uint64_t seq, parsed_t *p) {
  char name[NAME_LEN];
  seg_name(name, seq, "seg");
  memset(p, 0, sizeof *p);
  int rc = map_file(sp->dirfd, name, &p->buf, &p->len);
  if (rc != 0) return rc;
  range_t *done;
  size_t ndone;
  if ((rc = ranges_load(sp->dirfd, seq, &done, &ndone)) != 0) {
    parsed_free(p);
    return rc;
  }
  const unsigned char *b = (const unsigned char *)p->buf;
  size_t len = p->len, cap = 0, pos = 0, region = 0;
  sg_pages_pass_t pass = {NULL, NULL}; /* validated pages go back as it goes */
  int in_region = 0;
  if (len >= SG_SPOOL_FILE_HEADER && memcmp(b, FILE_MAGIC, 8) == 0) {
    pos = SG_SPOOL_FILE_HEADER;
  } else {
    in_region = 1; /* a bad file header is a corrupt region too */
  }
  p->tail = pos;
  while (pos < len) {
    size_t sz = rec_valid(b, len, pos);
    if (sz == 0) {
      if (!in_region) region = pos, in_region = 1;
      const unsigned char *m = memmem(b + pos + 1, len - pos - 1, REC_MAGIC, 4);
      pos = m ? (size_t)(m - b) : len;
      continue;
    }
    if (in_region) {
      p->regions++;
      p->region_bytes += pos - region;
      in_region = 0;
    }
    if (!range_has(done, ndone, rec_seq(p->buf, pos))) {
      if (p->n == cap) {
        size_t nc = cap ? cap * 2 : 64;
        size_t *no = realloc(p->off, nc * sizeof *no);
        if (no == NULL) {
          free(done);
          parsed_free(p);
          return SG_ENOMEM;
        }
        p->off = no;
        cap = nc;
      }
      p->off[p->n++] = pos;
    }
    pos += sz;
    p->tail = pos;
    sg_pages_behind(&pass, b, b + pos);
  }
  sg_pages_behind(&pass, b, b + len); /* and what no record held */
  sg_pages_behind_end(&pass);
  free(done);
  return 0;
}

/* ---- segment bookkeeping ------------------------------------------------ */

static seg_meta_t *meta_push(sg_spool_t *sp) {
  if (sp->n == sp->cap) {
    if (sp->head > 0) {
      memmove(sp->segs, sp->segs + sp->head, (sp->n - sp->head) * sizeof *sp->segs);
      sp->n -= sp->head;
      sp->head = 0;
    } else {
      size_t nc = sp->cap ? sp->cap * 2 : 16;
      seg_meta_t *ns = realloc(sp->segs, nc * sizeof *ns);
      if (ns == NULL) return NULL;
      sp->segs = ns;
      sp->cap = nc;
    }
  }
  seg_meta_t *m = &sp->segs[sp->n++];
  memset(m, 0, sizeof *m);
  return m;
}

static seg_meta_t *meta_find(sg_spool_t *sp, uint64_t seq) {
  size_t lo = sp->head, hi = sp->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (sp->segs[mid].seq < seq) lo = mid + 1;
    else if (sp->segs[mid].seq > seq) hi = mid;
    else return &sp->segs[mid];
  }
  return NULL;
}

static void meta_remove(sg_spool_t *sp, seg_meta_t *m) {
  size_t i = (size_t)(m - sp->segs);
  sp->bytes -= m->bytes;
  if (i == sp->head) {
    sp->head++;
  } else {
    memmove(m, m + 1, (sp->n - i - 1) * sizeof *m);
    sp->n--;
  }
  if (sp->head == sp->n) sp->head = sp->n = 0;
}

static seg_meta_t *open_meta(sg_spool_t *sp) {
  return sp->fd >= 0 ? &sp->segs[sp->n - 1] : NULL;
}

/* Reserve segment numbers below value in seq.hw (write, sync, rename). */
static int hw_write(sg_spool_t *sp, uint64_t value) {
  char text[32];
  int tl = snprintf(text, sizeof text, "%" PRIu64 "\n", value);
  int fd = openat(sp->dirfd, HW_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return sys_err();
  int rc = write_full(fd, text, (size_t)tl);
  if (rc == 0) rc = do_sync(sp, fd, 1);
  close(fd);
  if (rc == 0 && renameat(sp->dirfd, HW_TMP, sp->dirfd, HW_NAME) != 0) rc = sys_err();
  if (rc == 0) rc = do_sync(sp, sp->dirfd, 0);
  if (rc != 0) {
    unlinkat(sp->dirfd, HW_TMP, 0);
    return rc;
  }
  sp->hw = value;
  return 0;
}

static uint64_t hw_read(int dirfd) {
  char *buf;
  size_t len;
  if (read_all(dirfd, HW_NAME, &buf, &len) != 0) return 0;
  uint64_t v = 0;
  size_t i = 0;
  for (; i < len && i < 20 && buf[i] >= '0' && buf[i] <= '9'; i++)
    v = v * 10 + (uint64_t)(buf[i] - '0');
  int ok = i > 0 && i < len && buf[i] == '\n';
  free(buf);
  return ok ? v : 0;
}

/* Close the open segment for appends. Syncs it first if it has unsynced
 * appends; a failed sync is kept for sg_spool_sync() to report. An open
 * segment without records (a failed first append) is deleted. */
static void seal_open(sg_spool_t *sp, int sync) {
  seg_meta_t *m = open_meta(sp);
  if (m == NULL) return;
  if (sync && sp->dirty && do_sync(sp, sp->fd, 1) != 0) sp->sticky_err = SG_EIO;
  close(sp->fd);
  sp->fd = -1;
  sp->dirty = 0;
  if (m->records == 0) {
    char name[NAME_LEN];
    seg_name(name, m->seq, "seg");
    unlinkat(sp->dirfd, name, 0);
    meta_remove(sp, m);
    return;
  }
  m->sealed = 1;
}

static int segment_create(sg_spool_t *sp) {
  uint64_t seq = sp->next_seq;
  if (seq > MAX_SEG_SEQ) return SG_EIO;
  int rc;
  if (seq >= sp->hw && (rc = hw_write(sp, seq + HW_BLOCK)) != 0) return rc;
  seg_meta_t *m = meta_push(sp);
  if (m == NULL) return SG_ENOMEM;
  sp->n--; /* reserved; kept only once the file exists */
  char name[NAME_LEN];
  seg_name(name, seq, "seg");
  int fd = openat(sp->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return sys_err();
  unsigned char hdr[SG_SPOOL_FILE_HEADER];
  memcpy(hdr, FILE_MAGIC, 8);
  put64(hdr + 8, seq);
  rc = write_full(fd, hdr, sizeof hdr);
  /* The new name must survive a power cut as long as its records do. */
  if (rc == 0) rc = do_sync(sp, sp->dirfd, 0);
  if (rc != 0) {
    close(fd);
    unlinkat(sp->dirfd, name, 0);
    return rc;
  }
  sp->n++;
  m->seq = seq;
  m->bytes = SG_SPOOL_FILE_HEADER;
  sp->bytes += SG_SPOOL_FILE_HEADER;
  sp->fd = fd;
  sp->dirty = 0;
  sp->open_nrec = 0;
  sp->next_seq = seq + 1;
  return 0;
}

/* ---- open / close ------------------------------------------------------- */

static int mkdir_p(const char *dir) {
  size_t n = strlen(dir);
  char *p = malloc(n + 1);
  if (p == NULL) return SG_ENOMEM;
  memcpy(p, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (p[i] != '/' && p[i] != '\0') continue;
    char c = p[i];
    p[i] = '\0';
    if (mkdir(p, 0700) != 0 && errno != EEXIST) {
      free(p);
      return sys_err();
    }
    p[i] = c;
  }
  free(p);
  return 0;
}

/* Highest segment number among the dead letters (0 if none). */
static uint64_t dead_max(int dirfd) {
  int fd = openat(dirfd, DEAD_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return 0;
  DIR *d = fdopendir(fd);
  if (d == NULL) {
    close(fd);
    return 0;
  }
  uint64_t max = 0, s;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if ((parse_name(e->d_name, "seg", &s) || parse_name(e->d_name, "txt", &s)) && s > max) max = s;
  closedir(d);
  return max;
}

static int u64_cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

typedef struct {
  uint64_t *v;
  size_t n, cap;
} u64vec_t;

static int u64_push(u64vec_t *a, uint64_t v) {
  if (a->n == a->cap) {
    size_t nc = a->cap ? a->cap * 2 : 32;
    uint64_t *nv = realloc(a->v, nc * sizeof *nv);
    if (nv == NULL) return SG_ENOMEM;
    a->v = nv;
    a->cap = nc;
  }
  a->v[a->n++] = v;
  return 0;
}

/* Validate segment seq found at open: truncate a torn tail, delete it if
 * nothing is pending, else remember it as sealed. *changed is set when the
 * directory was modified. */
static int recover_segment(sg_spool_t *sp, uint64_t seq, int *changed) {
  char name[NAME_LEN], ack[NAME_LEN];
  seg_name(name, seq, "seg");
  seg_name(ack, seq, "ack");
  parsed_t p;
  int rc = segment_load(sp, seq, &p);
  if (rc == SG_ENOTFOUND) return 0;
  if (rc != 0) return rc;
  sp->st.corrupt_records += p.regions;
  sp->st.corrupt_bytes += p.region_bytes;
  if (p.n == 0) { /* nothing to deliver: empty, all acked, or garbage */
    parsed_free(&p);
    if (unlinkat(sp->dirfd, name, 0) != 0 && errno != ENOENT) return sys_err();
    unlinkat(sp->dirfd, ack, 0);
    *changed = 1;
    return 0;
  }
  if (p.tail < p.len) {
    sp->st.torn_bytes += p.len - p.tail;
    int fd = openat(sp->dirfd, name, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)p.tail) != 0) rc = sys_err();
    if (rc == 0) rc = do_sync(sp, fd, 1);
    if (fd >= 0) close(fd);
    if (rc != 0) {
      parsed_free(&p);
      return rc;
    }
  }
  seg_meta_t *m = meta_push(sp);
  if (m == NULL) {
    parsed_free(&p);
    return SG_ENOMEM;
  }
  m->seq = seq;
  m->bytes = p.tail;
  m->records = p.n;
  m->oldest_us = rec_time(p.buf, p.off[0]);
  m->corrupt = p.regions;
  m->corrupt_bytes = p.region_bytes;
  m->sealed = 1;
  sp->bytes += p.tail;
  parsed_free(&p);
  return 0;
}

static int recover(sg_spool_t *sp) {
  u64vec_t segs = {0}, acks = {0};
  int rc = 0, changed = 0;
  int fd = fcntl(sp->dirfd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return sys_err();
  DIR *d = fdopendir(fd);
  if (d == NULL) {
    close(fd);
    return sys_err();
  }
  rewinddir(d);
  struct dirent *e;
  uint64_t s;
  while (rc == 0 && (e = readdir(d)) != NULL) {
    if (parse_name(e->d_name, "seg", &s)) rc = u64_push(&segs, s);
    else if (parse_name(e->d_name, "ack", &s)) rc = u64_push(&acks, s);
    else if (strcmp(e->d_name, HW_TMP) == 0) unlinkat(sp->dirfd, e->d_name, 0);
  }
  closedir(d);
  if (segs.n) qsort(segs.v, segs.n, sizeof *segs.v, u64_cmp);
  for (size_t i = 0; rc == 0 && i < segs.n; i++) rc = recover_segment(sp, segs.v[i], &changed);
  /* progress files whose segment is gone (crash inside sg_spool_ack) */
  for (size_t i = 0; rc == 0 && i < acks.n; i++) {
    if (segs.n && bsearch(&acks.v[i], segs.v, segs.n, sizeof *segs.v, u64_cmp)) continue;
    char name[NAME_LEN];
    seg_name(name, acks.v[i], "ack");
    unlinkat(sp->dirfd, name, 0);
    changed = 1;
  }
  if (rc == 0) {
    uint64_t next = 1, dm = dead_max(sp->dirfd);
    if (segs.n && segs.v[segs.n - 1] >= next) next = segs.v[segs.n - 1] + 1;
    if (dm >= next) next = dm + 1;
    sp->hw = hw_read(sp->dirfd);
    if (sp->hw > next) next = sp->hw;
    sp->next_seq = next;
    if (changed) rc = do_sync(sp, sp->dirfd, 0);
  }
  free(segs.v);
  free(acks.v);
  return rc;
}

int sg_spool_open(const char *dir, const sg_spool_opts_t *opts, sg_spool_t **out) {
  if (dir == NULL || *dir == '\0' || out == NULL) return SG_EINVAL;
  *out = NULL;
  sg_spool_t *sp = calloc(1, sizeof *sp);
  if (sp == NULL) return SG_ENOMEM;
  if (opts) sp->o = *opts;
  if (sp->o.segment_bytes == 0) sp->o.segment_bytes = SG_SPOOL_DEFAULT_SEGMENT_BYTES;
  if (sp->o.fsync != SG_SPOOL_FSYNC_BATCH && sp->o.fsync != SG_SPOOL_FSYNC_ALWAYS &&
      sp->o.fsync != SG_SPOOL_FSYNC_NEVER) {
    free(sp);
    return SG_EINVAL;
  }
  sp->fd = sp->deadfd = sp->dirfd = -1;
  int rc = mkdir_p(dir);
  if (rc != 0) goto fail;
  sp->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (sp->dirfd < 0) {
    rc = sys_err();
    goto fail;
  }
  if (flock(sp->dirfd, LOCK_EX | LOCK_NB) != 0) {
    rc = errno == EWOULDBLOCK ? SG_EBUSY : sys_err();
    goto fail;
  }
  if ((rc = recover(sp)) != 0) goto fail;
  *out = sp;
  return 0;
fail:
  if (sp->dirfd >= 0) close(sp->dirfd);
  free(sp->segs);
  free(sp);
  return rc;
}

static void handle_free(sg_spool_t *sp, sg_spool_seg_t *seg) {
  if (seg->prev) seg->prev->next = seg->next;
  else sp->handles = seg->next;
  if (seg->next) seg->next->prev = seg->prev;
  unmap_file(seg->buf, seg->len);
  free(seg->off);
  free(seg->done);
  free(seg);
}

int sg_spool_close(sg_spool_t *sp) {
  if (sp == NULL) return 0;
  int rc = sg_spool_sync(sp);
  seal_open(sp, 0);
  while (sp->handles) handle_free(sp, sp->handles);
  if (sp->deadfd >= 0) close(sp->deadfd);
  close(sp->dirfd); /* drops the flock */
  free(sp->segs);
  free(sp);
  return rc;
}

/* ---- appending ---------------------------------------------------------- */

int sg_spool_append(sg_spool_t *sp, const char *tag, const void *data, size_t len,
                    int64_t now_us) {
  if (sp == NULL || (data == NULL && len > 0)) return SG_EINVAL;
  size_t tag_len = tag ? strlen(tag) : 0;
  if (tag_len > SG_SPOOL_MAX_TAG) return SG_EINVAL;
  if (len > SG_SPOOL_MAX_PAYLOAD) return SG_ETOOBIG;
  uint64_t size = sg_spool_record_size(tag_len, len);
  seg_meta_t *m = open_meta(sp);
  int rotate = m && m->records > 0 &&
               (m->bytes + size > sp->o.segment_bytes || sp->open_nrec >= MAX_SEG_RECORDS);
  uint64_t need = size + (m == NULL || rotate ? SG_SPOOL_FILE_HEADER : 0);
  if (sp->o.max_bytes && sp->bytes + need > sp->o.max_bytes) return SG_ETOOBIG;
  int rc;
  if (rotate) seal_open(sp, 1);
  if (sp->fd < 0 && (rc = segment_create(sp)) != 0) return rc;
  m = open_meta(sp);

  unsigned char h[SG_SPOOL_REC_HEADER];
  uint64_t seq = (m->seq << IDX_BITS) | sp->open_nrec;
  memcpy(h, REC_MAGIC, 4);
  put32(h + 8, (uint32_t)len);
  put32(h + 12, crc(crc(0, tag, tag_len), data, len));
  put64(h + 16, seq);
  put64(h + 24, (uint64_t)now_us);
  h[32] = (unsigned char)tag_len;
  h[33] = h[34] = h[35] = 0;
  put32(h + 4, crc(0, h + 8, SG_SPOOL_REC_HEADER - 8));
  struct iovec iov[3] = {
      {h, sizeof h}, {(void *)tag, tag_len}, {(void *)data, len}};
  if ((rc = writev_full(sp->fd, iov, 3)) != 0) {
    /* Cut a partial record off so the file stays clean; if even that fails
     * the reader will skip the garbage. Either way no more appends here. */
    if (ftruncate(sp->fd, (off_t)m->bytes) != 0) {
      struct stat stb;
      if (fstat(sp->fd, &stb) == 0 && (uint64_t)stb.st_size > m->bytes) {
        sp->bytes += (uint64_t)stb.st_size - m->bytes;
        m->bytes = (uint64_t)stb.st_size;
      }
    }
    seal_open(sp, 1);
    return rc;
  }
  if (m->records == 0) m->oldest_us = now_us;
  m->records++;
  m->bytes += size;
  sp->bytes += size;
  sp->open_nrec++;
  sp->dirty = 1;
  sp->st.appended_records++;
  if (sp->o.fsync == SG_SPOOL_FSYNC_ALWAYS) {
    if (do_sync(sp, sp->fd, 1) != 0) {
      seal_open(sp, 0);
      return SG_EIO;
    }
    sp->dirty = 0;
  }
  return 0;
}

int sg_spool_sync(sg_spool_t *sp) {
  if (sp == NULL) return SG_EINVAL;
  int rc = sp->sticky_err;
  sp->sticky_err = 0;
  if (sp->fd >= 0 && sp->dirty) {
    if (do_sync(sp, sp->fd, 1) != 0) {
      /* After a failed fdatasync the kernel may have dropped the dirty
       * pages; syncing the same file again proves nothing. Start afresh. */
      rc = SG_EIO;
      seal_open(sp, 0);
    }
    sp->dirty = 0;
  }
  return rc;
}

int sg_spool_sync_begin(sg_spool_t *sp, int *fd) {
  if (sp == NULL || fd == NULL) return SG_EINVAL;
  *fd = -1;
  int rc = sp->sticky_err;
  sp->sticky_err = 0;
  sp->sync_mark = sp->st.appended_records;
  if (sp->fd >= 0 && sp->dirty && sp->o.fsync != SG_SPOOL_FSYNC_NEVER) {
    *fd = fcntl(sp->fd, F_DUPFD_CLOEXEC, 0);
    if (*fd < 0) return SG_EIO; /* still dirty: the next sync tries again */
    sp->st.fsyncs++;
  }
  sp->dirty = 0;
  return rc;
}

int sg_spool_sync_fd(int fd) {
  int r;
  do r = fdatasync(fd);
  while (r != 0 && errno == EINTR);
  close(fd);
  return r == 0 ? 0 : SG_EIO;
}

void sg_spool_sync_end(sg_spool_t *sp, int rc) {
  if (sp == NULL || rc == 0) return;
  seal_open(sp, 0);
  if (sp->st.appended_records != sp->sync_mark) sp->sticky_err = SG_EIO;
}

int sg_spool_seal(sg_spool_t *sp) {
  if (sp == NULL) return SG_EINVAL;
  seal_open(sp, 1);
  /* Reported, and kept for sg_spool_sync(): the appends it covers belong to
   * whoever syncs next, who must not be told they are durable. */
  return sp->sticky_err;
}

/* ---- reading and acknowledging ----------------------------------------- */

int sg_spool_next_segment(sg_spool_t *sp, sg_spool_seg_t **out) {
  if (sp == NULL || out == NULL) return SG_EINVAL;
  *out = NULL;
  for (size_t i = sp->head; i < sp->n; i++) {
    seg_meta_t *m = &sp->segs[i];
    if (!m->sealed || m->loaded) continue;
    parsed_t p;
    int rc = segment_load(sp, m->seq, &p);
    if (rc == SG_ENOTFOUND) { /* deleted behind our back */
      sp->st.lost_records += m->records;
      meta_remove(sp, m);
      i = sp->head - 1; /* rescan: the array may have moved */
      if (sp->n == 0) break;
      continue;
    }
    if (rc != 0) return rc;
    /* Corruption since open: trailing garbage is a region too here. */
    uint64_t regions = p.regions + (p.tail < p.len);
    uint64_t rbytes = p.region_bytes + (p.len - p.tail);
    if (regions > m->corrupt) {
      sp->st.corrupt_records += regions - m->corrupt;
      sp->st.corrupt_bytes += rbytes > m->corrupt_bytes ? rbytes - m->corrupt_bytes : 0;
      m->corrupt = regions;
      m->corrupt_bytes = rbytes;
    }
    sg_spool_seg_t *seg = calloc(1, sizeof *seg);
    uint8_t *done = calloc(p.n ? p.n : 1, 1);
    if (seg == NULL || done == NULL) {
      free(seg);
      free(done);
      parsed_free(&p);
      return SG_ENOMEM;
    }
    seg->id = m->seq;
    seg->buf = p.buf;
    seg->len = p.len;
    seg->off = p.off;
    seg->n = p.n;
    seg->done = done;
    m->records = p.n;
    m->oldest_us = p.n ? rec_time(p.buf, p.off[0]) : 0;
    m->loaded = 1;
    seg->next = sp->handles;
    if (sp->handles) sp->handles->prev = seg;
    sp->handles = seg;
    *out = seg;
    return 0;
  }
  return SG_ENOTFOUND;
}

size_t sg_spool_seg_count(const sg_spool_seg_t *seg) { return seg ? seg->n : 0; }

uint64_t sg_spool_seg_id(const sg_spool_seg_t *seg) { return seg ? seg->id : 0; }

int sg_spool_seg_record(const sg_spool_seg_t *seg, size_t i, sg_spool_rec_t *rec) {
  if (seg == NULL || rec == NULL || i >= seg->n) return SG_EINVAL;
  rec_decode(seg->buf, seg->off[i], rec);
  return 0;
}

int sg_spool_seg_done(const sg_spool_seg_t *seg, size_t i) {
  return seg && i < seg->n && seg->done[i];
}

void sg_spool_seg_drop(const sg_spool_seg_t *seg, size_t first, size_t n) {
  if (seg == NULL || first >= seg->n || n == 0) return;
  size_t from = first ? seg->off[first] : 0, to = seg->len;
  if (n < seg->n - first) {
    sg_spool_rec_t last;
    rec_decode(seg->buf, seg->off[first + n - 1], &last);
    to = (size_t)((const char *)last.data + last.len - seg->buf);
  }
  sg_pages_drop(seg->buf + from, to - from);
}

int sg_spool_ack(sg_spool_t *sp, sg_spool_seg_t *seg) {
  if (sp == NULL || seg == NULL) return SG_EINVAL;
  seg_meta_t *m = meta_find(sp, seg->id);
  if (m == NULL || !m->loaded) return SG_EINVAL;
  char name[NAME_LEN];
  seg_name(name, seg->id, "seg");
  if (unlinkat(sp->dirfd, name, 0) != 0 && errno != ENOENT) return sys_err();
  /* Progress file second: a crash in between leaves an orphan .ack, which
   * open deletes; the other order could resend acked records. */
  seg_name(name, seg->id, "ack");
  unlinkat(sp->dirfd, name, 0);
  /* The unlink happened; a failed directory sync can at worst resurrect the
   * segment after a power cut (a repeated delivery), so it is not an error
   * the caller could act on. */
  (void)do_sync(sp, sp->dirfd, 0);
  for (size_t i = 0; i < seg->n; i++)
    if (!seg->done[i]) sp->st.acked_records++;
  meta_remove(sp, m);
  handle_free(sp, seg);
  return 0;
}

/* Durably mark records [first, first+n) of seg done; update the counts. */
static int mark_done(sg_spool_t *sp, sg_spool_seg_t *seg, size_t first, size_t n, int dead) {
  seg_meta_t *m = meta_find(sp, seg->id);
  if (m == NULL || !m->loaded) return SG_EINVAL;
  unsigned char e[ACK_ENTRY];
  memcpy(e, ACK_MAGIC, 4);
  put64(e + 8, rec_seq(seg->buf, seg->off[first]));
  put64(e + 16, rec_seq(seg->buf, seg->off[first + n - 1]));
  put32(e + 4, crc(0, e + 8, 16));
  char name[NAME_LEN];
  seg_name(name, seg->id, "ack");
  int fd = openat(sp->dirfd, name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return sys_err();
  int rc = 0;
  struct stat stb;
  if (fstat(fd, &stb) != 0) rc = sys_err();
  /* a torn entry from a crash: cut it so ours starts aligned */
  if (rc == 0 && stb.st_size % ACK_ENTRY != 0 &&
      ftruncate(fd, stb.st_size - stb.st_size % ACK_ENTRY) != 0)
    rc = sys_err();
  if (rc == 0) rc = write_full(fd, e, sizeof e);
  if (rc == 0) rc = do_sync(sp, fd, 1);
  if (rc == 0 && stb.st_size == 0) rc = do_sync(sp, sp->dirfd, 0);
  close(fd);
  if (rc != 0) return rc;
  for (size_t i = first; i < first + n; i++) {
    if (seg->done[i]) continue;
    seg->done[i] = 1;
    m->records--;
    if (dead) sp->st.dead_records++;
    else sp->st.acked_records++;
  }
  while (seg->first_undone < seg->n && seg->done[seg->first_undone]) seg->first_undone++;
  m->oldest_us = seg->first_undone < seg->n ? rec_time(seg->buf, seg->off[seg->first_undone]) : 0;
  return 0;
}

int sg_spool_ack_records(sg_spool_t *sp, sg_spool_seg_t *seg, size_t first, size_t n) {
  if (sp == NULL || seg == NULL || first > seg->n || n > seg->n - first) return SG_EINVAL;
  if (n == 0) return 0;
  return mark_done(sp, seg, first, n, 0);
}

/* Open dead/<name> for appending; *size is what it holds already (0: new). */
static int dead_open(sg_spool_t *sp, const char *name, int *fd, off_t *size) {
  if (sp->deadfd < 0) {
    int made = mkdirat(sp->dirfd, DEAD_DIR, 0700) == 0;
    if (!made && errno != EEXIST) return sys_err();
    if (made && do_sync(sp, sp->dirfd, 0) != 0) return SG_EIO;
    sp->deadfd = openat(sp->dirfd, DEAD_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sp->deadfd < 0) return sys_err();
  }
  *fd = openat(sp->deadfd, name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (*fd < 0) return sys_err();
  struct stat stb;
  if (fstat(*fd, &stb) != 0) {
    int rc = sys_err();
    close(*fd);
    return rc;
  }
  *size = stb.st_size;
  return 0;
}

static void put_clean(char *dst, size_t *n, const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    dst[(*n)++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
  }
}

int sg_spool_deadletter(sg_spool_t *sp, sg_spool_seg_t *seg, size_t i, const char *reason) {
  if (sp == NULL || seg == NULL || i >= seg->n) return SG_EINVAL;
  if (seg->done[i]) return 0;
  sg_spool_rec_t rec;
  rec_decode(seg->buf, seg->off[i], &rec);
  char name[NAME_LEN];
  int fd = -1, tfd = -1, rc;
  off_t size = 0, tsize = 0;

  /* The line for the operator: "<record seq>\t<append us>\t<tag>\t<reason>\n" */
  size_t rl = reason ? strnlen(reason, MAX_REASON) : 0;
  char *line = malloc(64 + rec.tag_len + rl);
  if (line == NULL) return SG_ENOMEM;
  size_t n = (size_t)snprintf(line, 48, "%" PRIu64 "\t%" PRId64 "\t", rec.seq, rec.time_us);
  put_clean(line, &n, rec.tag, rec.tag_len);
  line[n++] = '\t';
  put_clean(line, &n, reason ? reason : "", rl);
  line[n++] = '\n';

  /* 1. the record, verbatim, in a file of the segment format */
  seg_name(name, seg->id, "seg");
  if ((rc = dead_open(sp, name, &fd, &size)) != 0) goto out;
  if (size == 0) {
    unsigned char hdr[SG_SPOOL_FILE_HEADER];
    memcpy(hdr, FILE_MAGIC, 8);
    put64(hdr + 8, seg->id);
    rc = write_full(fd, hdr, sizeof hdr);
  }
  if (rc == 0)
    rc = write_full(fd, seg->buf + seg->off[i], (size_t)sg_spool_record_size(rec.tag_len, rec.len));
  if (rc == 0) rc = do_sync(sp, fd, 1);

  /* 2. why */
  if (rc == 0) {
    seg_name(name, seg->id, "txt");
    rc = dead_open(sp, name, &tfd, &tsize);
  }
  if (rc == 0) rc = write_full(tfd, line, n);
  if (rc == 0) rc = do_sync(sp, tfd, 1);
  if (rc == 0 && (size == 0 || tsize == 0)) rc = do_sync(sp, sp->deadfd, 0);
  /* 3. only now is it done: a crash before this copies it again, no loss */
  if (rc == 0) rc = mark_done(sp, seg, i, 1, 1);
  if (rc != 0) {
    /* Take back what this attempt wrote, so a retry neither copies the
     * record twice nor appends it behind a torn header. */
    if (fd >= 0 && ftruncate(fd, size) != 0) { /* the reader skips a torn tail */ }
    if (tfd >= 0 && ftruncate(tfd, tsize) != 0) { /* a torn line, then a whole one */ }
  }
  if (tfd >= 0) close(tfd);
  if (fd >= 0) close(fd);
out:
  free(line);
  return rc;
}

void sg_spool_release(sg_spool_t *sp, sg_spool_seg_t *seg) {
  if (sp == NULL || seg == NULL) return;
  seg_meta_t *m = meta_find(sp, seg->id);
  if (m) m->loaded = 0;
  handle_free(sp, seg);
}

void sg_spool_stats(const sg_spool_t *sp, sg_spool_stats_t *st) {
  if (st == NULL) return;
  memset(st, 0, sizeof *st);
  if (sp == NULL) return;
  *st = sp->st;
  st->bytes = sp->bytes;
  st->segments = sp->n - sp->head;
  for (size_t i = sp->head; i < sp->n; i++) {
    const seg_meta_t *m = &sp->segs[i];
    st->records += m->records;
    if (m->records && (st->oldest_us == 0 || m->oldest_us < st->oldest_us))
      st->oldest_us = m->oldest_us;
    if (m->sealed) {
      st->sealed_segments++;
    } else {
      st->open_bytes = m->bytes;
      st->open_records = m->records;
      st->open_oldest_us = m->records ? m->oldest_us : 0;
    }
  }
}
