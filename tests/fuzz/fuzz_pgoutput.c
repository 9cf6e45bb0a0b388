/* fuzz_pgoutput.c - libFuzzer target for the logical replication stream:
 * the input is a sequence of messages, each a 2-byte big-endian length and
 * that many bytes, fed to the CopyData parser and, whole or as an XLogData
 * payload, to the pgoutput parser; Relation messages are kept (as the
 * capture keeps them) and the changes after them turned into spans and
 * nodes rows, tombstones and the span ttl.lua would see. Nothing may crash,
 * read out of bounds or leak; a row encoded must end with a newline. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pgcapture_rows.h"
#include "pgoutput.h"

static void change(const sg_cap_rel_t *rel, const sg_pgo_msg_t *m) {
  static const sg_ch_layout_t lays[2] = {{0}, {SG_CH_LAYOUT_DT64}};
  const sg_pgo_tuple_t *old = m->u.change.old_kind == 'O' ? &m->u.change.old_tuple : NULL;
  const sg_pgo_tuple_t *tup = m->type == 'D' ? &m->u.change.old_tuple : &m->u.change.new_tuple;
  for (int k = 0; k < 2; k++) {
    const sg_ch_layout_t *v = &lays[k];
    uint8_t pid[16];
    const char *why = NULL;
    sg_buf_t b = SG_BUF_INIT;
    if (rel->kind == SG_CAP_SPANS) {
      sg_ch_text_row_t row;
      if (sg_cap_span_row(rel, tup, m->type == 'D' ? NULL : old, pid, &row, &why) == 0) {
        if (m->type == 'D') sg_cap_tombstone(&row, 1767323200000000LL);
        if (sg_ch_row_encode_text(v, pid, &row, INT64_MAX, &b, &why) == 0 && b.data[b.len - 1] != '\n') abort();
        sg_span_t s;
        if (sg_cap_hook_span(&row, &s, &why) == 0) sg_span_clear(&s);
      }
      if (old) (void)sg_cap_span_key_moved(rel, old, &m->u.change.new_tuple);
    } else if (rel->kind == SG_CAP_NODES) {
      if (sg_cap_node_row(v, rel, tup, m->type == 'D' ? NULL : old, m->type == 'D', 5, &b, pid, &why) == 0 &&
          b.data[b.len - 1] != '\n')
        abort();
    }
    sg_buf_free(&b);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  sg_pgo_scratch_t s = {0};
  sg_cap_rel_t rel;
  memset(&rel, 0, sizeof rel);
  int have_rel = 0;
  while (size >= 2) {
    size_t n = (size_t)data[0] << 8 | data[1];
    data += 2;
    size -= 2;
    if (n > size) n = size;
    /* an exact-size copy, so that a read past the message is caught */
    uint8_t *msg = malloc(n ? n : 1);
    memcpy(msg, data, n);
    data += n;
    size -= n;
    const uint8_t *p = msg;
    size_t len = n;
    sg_pgo_copy_t f;
    if (sg_pgo_copy_parse(msg, n, &f) == 0 && f.kind == 'w') {
      p = f.data;
      len = f.len;
    }
    sg_pgo_msg_t m;
    if (sg_pgo_parse(p, len, &m, &s) == 0) {
      char why[200];
      if (m.type == 'R') have_rel = sg_cap_rel_set(&rel, &m, why, sizeof why) == 0;
      else if ((m.type == 'I' || m.type == 'U' || m.type == 'D') && have_rel) change(&rel, &m);
      else if (m.type == 'T')
        for (uint32_t i = 0; i < m.u.truncate.nrels; i++) (void)sg_pgo_truncate_oid(&m, i);
    }
    free(msg);
  }
  sg_cap_rel_free(&rel);
  sg_pgo_scratch_free(&s);
  return 0;
}
