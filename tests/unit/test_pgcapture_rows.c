/* test_pgcapture_rows.c - change capture's rows: pgoutput messages of
 * Agenta's spans table, recorded from PostgreSQL 15 (the schema `spangate
 * schema --apply` creates, REPLICA IDENTITY FULL), turned into ClickHouse
 * rows; unchanged TOASTed values, key-only deletes, tombstones, a key that
 * moves, the span ttl.lua sees, and nodes rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "pgcapture_rows.h"

/* Recorded with pg_logical_slot_peek_binary_changes(..., 'proto_version', '1'):
 *   INSERT INTO spans (project_id, created_at, created_by_id, trace_id, span_id, parent_id, span_kind,
 *     span_name, start_time, end_time, status_code, status_message, attributes, events, trace_type,
 *     span_type, session_id)
 *   VALUES ('0190a3b4-0000-7000-8000-00000000000a', '2026-01-02 03:04:05.000007+00', '...ff',
 *     '31d6cfe0-4b90-11ec-8001-42010a8000b0', '31d6cfe0-4b90-11ec-31d6-cfe04b9011ec',
 *     'aaaaaaaa-bbbb-cccc-aaaa-aaaabbbbcccc', 'SPAN_KIND_CLIENT', E'chat\tcompletion',
 *     '2026-01-02 03:04:05.123456+00', '2026-01-02 03:04:06+00', 'STATUS_CODE_ERROR', 'boom',
 *     '{"k": "v\n", "n": 42}', '[]', 'INVOCATION', 'LLM', 's1');
 *   UPDATE spans SET status_message = 'edited', updated_at = '2026-01-02 03:05:00+00' WHERE ...;
 *   DELETE FROM spans WHERE ...; */
static const char *const rec_relation =
    "52000040c17075626c6963007370616e730066001b0170726f6a6563745f69640000000b86ffffffff0163726561746564"
    "5f617400000004a0ffffffff01757064617465645f617400000004a0ffffffff0164656c657465645f617400000004a0ff"
    "ffffff01637265617465645f62795f69640000000b86ffffffff01757064617465645f62795f69640000000b86ffffffff"
    "0164656c657465645f62795f69640000000b86ffffffff0174726163655f69640000000b86ffffffff017370616e5f6964"
    "0000000b86ffffffff01706172656e745f69640000000b86ffffffff017370616e5f6b696e64000000408affffffff0173"
    "70616e5f6e616d650000000413ffffffff0173746172745f74696d6500000004a0ffffffff01656e645f74696d65000000"
    "04a0ffffffff017374617475735f636f64650000004098ffffffff017374617475735f6d6573736167650000000413ffff"
    "ffff01617474726962757465730000000edaffffffff016576656e74730000000edaffffffff016c696e6b730000000eda"
    "ffffffff017265666572656e6365730000000edaffffffff0174726163655f7479706500000040a0ffffffff017370616e"
    "5f7479706500000040a8ffffffff016861736865730000000edaffffffff01657863657074696f6e0000000edaffffffff"
    "0173657373696f6e5f69640000000413ffffffff01757365725f69640000000413ffffffff016167656e745f6964000000"
    "0413ffffffff";
#define REC_ROW_OLD \
  "001b740000002430313930613362342d303030302d373030302d383030302d303030303030303030303061740000001d" \
  "323032362d30312d30322030333a30343a30352e3030303030372b30306e6e740000002430313930613362342d303030" \
  "302d373030302d383030302d3030303030303030303066666e6e740000002433316436636665302d346239302d313165" \
  "632d383030312d343230313061383030306230740000002433316436636665302d346239302d313165632d333164362d" \
  "636665303462393031316563740000002461616161616161612d626262622d636363632d616161612d61616161626262" \
  "626363636374000000105350414e5f4b494e445f434c49454e54740000000f6368617409636f6d706c6574696f6e7400" \
  "00001d323032362d30312d30322030333a30343a30352e3132333435362b30307400000016323032362d30312d303220" \
  "30333a30343a30362b303074000000115354415455535f434f44455f4552524f527400000004626f6f6d74000000157b" \
  "226b223a2022765c6e222c20226e223a2034327d74000000025b5d6e6e740000000a494e564f434154494f4e74000000" \
  "034c4c4d6e6e740000000273316e6e"
#define REC_ROW_NEW \
  "001b740000002430313930613362342d303030302d373030302d383030302d303030303030303030303061740000001d" \
  "323032362d30312d30322030333a30343a30352e3030303030372b30307400000016323032362d30312d30322030333a" \
  "30353a30302b30306e740000002430313930613362342d303030302d373030302d383030302d30303030303030303030" \
  "66666e6e740000002433316436636665302d346239302d313165632d383030312d343230313061383030306230740000" \
  "002433316436636665302d346239302d313165632d333164362d63666530346239303131656374000000246161616161" \
  "6161612d626262622d636363632d616161612d61616161626262626363636374000000105350414e5f4b494e445f434c" \
  "49454e54740000000f6368617409636f6d706c6574696f6e740000001d323032362d30312d30322030333a30343a3035" \
  "2e3132333435362b30307400000016323032362d30312d30322030333a30343a30362b30307400000011535441545553" \
  "5f434f44455f4552524f52740000000665646974656474000000157b226b223a2022765c6e222c20226e223a2034327d" \
  "74000000025b5d6e6e740000000a494e564f434154494f4e74000000034c4c4d6e6e740000000273316e6e"
static const char *const rec_insert = "49000040c14e" REC_ROW_OLD;
static const char *const rec_update = "55000040c14f" REC_ROW_OLD "4e" REC_ROW_NEW;
static const char *const rec_delete = "44000040c14f" REC_ROW_NEW;

static const uint8_t project[16] = {0x01, 0x90, 0xa3, 0xb4, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x0a};

typedef struct {
  uint8_t *p;
  size_t n;
} bytes_t;

static bytes_t unhex(const char *h) {
  bytes_t b;
  b.n = strlen(h) / 2;
  b.p = malloc(b.n);
  assert_non_null(b.p);
  for (size_t i = 0; i < b.n; i++) {
    unsigned v;
    assert_int_equal(sscanf(h + 2 * i, "%2x", &v), 1);
    b.p[i] = (uint8_t)v;
  }
  return b;
}

/* The two row layouts: DateTime + _us (18.16's) and DateTime64 (20.1+). */
static const sg_ch_layout_t v18 = {0}, v24 = {SG_CH_LAYOUT_DT64};

static void spans_rel(sg_cap_rel_t *rel) {
  bytes_t b = unhex(rec_relation);
  sg_pgo_scratch_t s = {0};
  sg_pgo_msg_t m;
  assert_int_equal(sg_pgo_parse(b.p, b.n, &m, &s), 0);
  char why[200] = "";
  memset(rel, 0, sizeof *rel);
  assert_int_equal(sg_cap_rel_set(rel, &m, why, sizeof why), 0);
  sg_pgo_scratch_free(&s);
  free(b.p);
}

/* The ClickHouse row of a recorded change (tup: its new row, or its old row for a delete). */
static const char row_insert_24_8[] =
    "0190a3b4-0000-7000-8000-00000000000a\t31d6cfe0-4b90-11ec-8001-42010a8000b0\t"
    "31d6cfe0-4b90-11ec-31d6-cfe04b9011ec\taaaaaaaa-bbbb-cccc-aaaa-aaaabbbbcccc\tINVOCATION\tLLM\t"
    "SPAN_KIND_CLIENT\tchat\\tcompletion\t2026-01-02 03:04:05.123456\t2026-01-02 03:04:06.000000\t"
    "STATUS_CODE_ERROR\tboom\t{\"k\":\"v\\\\n\",\"n\":42}\t\\N\t\\N\t\\N\t[]\ts1\t\\N\t\\N\t"
    "2026-01-02 03:04:05.000007\t\\N\t\\N\t0190a3b4-0000-7000-8000-0000000000ff\t\\N\t\\N\t"
    "1767323045000007\t2105-12-31 23:59:59\t0\n";

static void test_relation(void **st) {
  (void)st;
  sg_cap_rel_t rel;
  spans_rel(&rel);
  assert_int_equal(rel.kind, SG_CAP_SPANS);
  assert_int_equal(rel.replident, 'f');
  assert_string_equal(rel.name, "spans");
  assert_int_equal(rel.ncols, 27); /* Agenta's columns, `exception` included */
  assert_int_equal(rel.idx[SG_CAP_C_project_id], 0);
  assert_int_equal(rel.idx[SG_CAP_C_created_at], 1);
  assert_int_equal(rel.idx[SG_CAP_C_span_id], 8);
  assert_int_equal(rel.idx[SG_CAP_C_agent_id], 26);
  sg_cap_rel_free(&rel);
}

static void test_insert_update_delete(void **st) {
  (void)st;
  sg_cap_rel_t rel;
  spans_rel(&rel);
  sg_pgo_scratch_t s = {0};
  sg_pgo_msg_t m;
  uint8_t pid[16];
  sg_ch_text_row_t row;
  const char *why = NULL;
  sg_buf_t b = SG_BUF_INIT;

  bytes_t ins = unhex(rec_insert);
  assert_int_equal(sg_pgo_parse(ins.p, ins.n, &m, &s), 0);
  assert_int_equal(sg_cap_span_row(&rel, &m.u.change.new_tuple, NULL, pid, &row, &why), 0);
  assert_memory_equal(pid, project, 16);
  assert_true(row.created_at_us == 1767323045000007LL);
  assert_true(row.start_us == 1767323045123456LL);
  assert_true(row.version == row.created_at_us);
  assert_int_equal(row.updated_at_us, 0);
  assert_int_equal(sg_ch_row_encode_text(&v24, pid, &row, INT64_MAX, &b, &why), 0);
  assert_string_equal(b.data, row_insert_24_8);
  sg_buf_reset(&b);
  assert_int_equal(sg_ch_row_encode_text(&v18, pid, &row, INT64_MAX, &b, &why), 0);
  assert_non_null(strstr(b.data, "\t2026-01-02 03:04:05\t123456\t2026-01-02 03:04:06\t0\t"));

  /* the span ttl.lua sees */
  sg_span_t hs;
  assert_int_equal(sg_cap_hook_span(&row, &hs, &why), 0);
  assert_string_equal(hs.span_name, "chat\tcompletion");
  assert_string_equal(hs.status_message, "boom");
  assert_string_equal(hs.session_id, "s1");
  assert_null(hs.user_id);
  assert_int_equal(hs.span_kind, SG_SPAN_KIND_CLIENT);
  assert_int_equal(hs.span_type, SG_SPAN_TYPE_LLM);
  assert_int_equal(hs.has_parent, 1);
  assert_int_equal(json_integer_value(json_object_get(hs.attributes, "n")), 42);
  assert_null(hs.links);
  assert_true(hs.created_at_us == 1767323045000007LL);
  sg_span_clear(&hs);
  free(ins.p);

  /* an update with REPLICA IDENTITY FULL: the old row and the new */
  bytes_t upd = unhex(rec_update);
  assert_int_equal(sg_pgo_parse(upd.p, upd.n, &m, &s), 0);
  assert_int_equal(m.u.change.old_kind, 'O');
  assert_int_equal(sg_cap_span_row(&rel, &m.u.change.new_tuple, &m.u.change.old_tuple, pid, &row, &why), 0);
  assert_true(row.updated_at_us == 1767323100000000LL);
  assert_true(row.version == row.updated_at_us);
  assert_int_equal(row.status_message.n, 6);
  assert_memory_equal(row.status_message.p, "edited", 6);
  assert_int_equal(sg_cap_span_key_moved(&rel, &m.u.change.old_tuple, &m.u.change.new_tuple), 0);

  /* the attributes unchanged and stored out of line: 'u' in the new row */
  sg_pgo_value_t nv[27];
  memcpy(nv, m.u.change.new_tuple.v, sizeof nv);
  int ai = rel.idx[SG_CAP_C_attributes];
  nv[ai].kind = 'u';
  nv[ai].p = NULL;
  nv[ai].len = 0;
  sg_pgo_tuple_t nt = {27, nv};
  assert_int_equal(sg_cap_span_row(&rel, &nt, &m.u.change.old_tuple, pid, &row, &why), 0);
  assert_int_equal(row.attributes.n, 21);
  assert_memory_equal(row.attributes.p, "{\"k\": \"v\\n\", \"n\": 42}", 21);
  /* without the old row (REPLICA IDENTITY DEFAULT) it is not in the stream */
  assert_int_equal(sg_cap_span_row(&rel, &nt, NULL, pid, &row, &why), SG_ENOTFOUND);
  assert_string_equal(why, "attributes");
  assert_true(row.created_at_us == 1767323045000007LL); /* still known: the gap's range */

  /* a key that moves (created_at changed): the old key needs a tombstone */
  nv[ai] = m.u.change.new_tuple.v[ai];
  int ci = rel.idx[SG_CAP_C_created_at];
  nv[ci].p = "2026-01-02 03:04:05.000008+00";
  nv[ci].len = (uint32_t)strlen(nv[ci].p);
  assert_int_equal(sg_cap_span_key_moved(&rel, &m.u.change.old_tuple, &nt), 1);
  free(upd.p);

  /* a delete with REPLICA IDENTITY FULL: the tombstone */
  bytes_t del = unhex(rec_delete);
  assert_int_equal(sg_pgo_parse(del.p, del.n, &m, &s), 0);
  assert_int_equal(m.type, 'D');
  assert_int_equal(sg_cap_span_row(&rel, &m.u.change.old_tuple, NULL, pid, &row, &why), 0);
  sg_cap_tombstone(&row, 1767323200000000LL);
  assert_int_equal(row.is_deleted, 1);
  assert_true(row.deleted_at_us == 1767323200000000LL);
  assert_true(row.version == 1767323200000000LL);
  sg_buf_reset(&b);
  assert_int_equal(sg_ch_row_encode_text(&v24, pid, &row, INT64_MAX, &b, &why), 0);
  /* same sorting key as the row (created_at kept), deleted_at set, flag last */
  assert_non_null(strstr(b.data, "\t2026-01-02 03:04:05.000007\t2026-01-02 03:05:00.000000\t"
                                 "2026-01-02 03:06:40.000000\t"));
  assert_non_null(strstr(b.data, "\t1767323200000000\t2105-12-31 23:59:59\t1\n"));
  /* a clock behind the row's version still gives a higher version */
  sg_ch_text_row_t r2;
  assert_int_equal(sg_cap_span_row(&rel, &m.u.change.old_tuple, NULL, pid, &r2, &why), 0);
  sg_cap_tombstone(&r2, 5);
  assert_true(r2.version == 1767323100000001LL);
  assert_true(r2.deleted_at_us == 5);

  /* without REPLICA IDENTITY FULL a delete carries the key alone */
  sg_pgo_value_t kv[27];
  for (int i = 0; i < 27; i++) kv[i] = (sg_pgo_value_t){'n', NULL, 0};
  static const int keys[] = {SG_CAP_C_project_id, SG_CAP_C_trace_id, SG_CAP_C_span_id};
  for (int k = 0; k < 3; k++) kv[rel.idx[keys[k]]] = m.u.change.old_tuple.v[rel.idx[keys[k]]];
  sg_pgo_tuple_t kt = {27, kv};
  assert_int_equal(sg_cap_span_row(&rel, &kt, NULL, pid, &row, &why), SG_ENOTFOUND);
  assert_string_equal(why, "created_at");
  assert_memory_equal(pid, project, 16);
  assert_int_equal(row.created_at_us, 0);
  free(del.p);

  sg_buf_free(&b);
  sg_pgo_scratch_free(&s);
  sg_cap_rel_free(&rel);
}

static void test_bad_values(void **st) {
  (void)st;
  sg_cap_rel_t rel;
  spans_rel(&rel);
  sg_pgo_scratch_t s = {0};
  sg_pgo_msg_t m;
  bytes_t ins = unhex(rec_insert);
  assert_int_equal(sg_pgo_parse(ins.p, ins.n, &m, &s), 0);
  sg_pgo_value_t v[27];
  memcpy(v, m.u.change.new_tuple.v, sizeof v);
  sg_pgo_tuple_t t = {27, v};
  uint8_t pid[16];
  sg_ch_text_row_t row;
  const char *why;
  int si = rel.idx[SG_CAP_C_start_time];
  v[si].p = "infinity";
  v[si].len = 8;
  assert_int_equal(sg_cap_span_row(&rel, &t, NULL, pid, &row, &why), SG_EINVAL);
  assert_string_equal(why, "start_time");
  memcpy(v, m.u.change.new_tuple.v, sizeof v);
  v[rel.idx[SG_CAP_C_project_id]].p = "not a uuid";
  v[rel.idx[SG_CAP_C_project_id]].len = 10;
  assert_int_equal(sg_cap_span_row(&rel, &t, NULL, pid, &row, &why), SG_EINVAL);
  assert_string_equal(why, "project_id");
  /* a table without a column a row needs is refused when its Relation comes */
  sg_pgo_msg_t r;
  memset(&r, 0, sizeof r);
  sg_pgo_column_t cols[2] = {{1, "project_id", 2950, -1}, {1, "span_id", 2950, -1}};
  r.type = 'R';
  r.u.rel.oid = 7;
  r.u.rel.nspname = "public";
  r.u.rel.relname = "spans";
  r.u.rel.replident = 'f';
  r.u.rel.ncols = 2;
  r.u.rel.cols = cols;
  char whyb[200];
  sg_cap_rel_t bad;
  memset(&bad, 0, sizeof bad);
  assert_int_equal(sg_cap_rel_set(&bad, &r, whyb, sizeof whyb), SG_EINVAL);
  assert_string_equal(whyb, "table spans has no column trace_id");
  sg_cap_rel_free(&bad);
  r.u.rel.relname = "other";
  assert_int_equal(sg_cap_rel_set(&bad, &r, whyb, sizeof whyb), 0);
  assert_int_equal(bad.kind, SG_CAP_OTHER);
  sg_cap_rel_free(&bad);
  free(ins.p);
  sg_pgo_scratch_free(&s);
  sg_cap_rel_free(&rel);
}

/* Agenta's older `nodes` table, reduced (as tests/node/jobs.test.mjs has it). */
static void test_nodes(void **st) {
  (void)st;
  sg_pgo_column_t cols[] = {
      {1, "project_id", 2950, -1}, {0, "created_at", 1184, -1}, {0, "updated_at", 1184, -1},
      {1, "node_id", 2950, -1},    {0, "tree_id", 2950, -1},    {0, "root_id", 2950, -1},
      {0, "node_name", 1043, -1},  {0, "data", 3802, -1},       {0, "ok", 16, -1},
      {0, "cost", 1700, -1},       {0, "score", 701, -1},
  };
  sg_pgo_msg_t r;
  memset(&r, 0, sizeof r);
  r.type = 'R';
  r.u.rel.oid = 9;
  r.u.rel.nspname = "public";
  r.u.rel.relname = "nodes";
  r.u.rel.replident = 'f';
  r.u.rel.ncols = 11;
  r.u.rel.cols = cols;
  sg_cap_rel_t rel;
  memset(&rel, 0, sizeof rel);
  char why[200];
  assert_int_equal(sg_cap_rel_set(&rel, &r, why, sizeof why), 0);
  assert_int_equal(rel.kind, SG_CAP_NODES);
#define T(s) {'t', (s), sizeof(s) - 1}
#define N {'n', NULL, 0}
  sg_pgo_value_t v[11] = {
      T("0190a3b4-0000-7000-8000-00000000000a"), T("2024-05-01 00:00:01.000123+00"), N,
      T("11111111-2222-3333-4444-555555555555"), T("66666666-7777-8888-9999-aaaaaaaaaaaa"), N,
      T("node\t7 \"q\""), T("{\"x\": 7}"), T("t"), T("NaN"), T("2.5"),
  };
  sg_pgo_tuple_t t = {11, v};
  sg_buf_t b = SG_BUF_INIT;
  uint8_t pid[16];
  const char *w;
  assert_int_equal(sg_cap_node_row(&v18, &rel, &t, NULL, 0, 0, &b, pid, &w), 0);
  /* jsonb's key order (by length, then bytes), to_jsonb's values, TSV-escaped */
  assert_string_equal(b.data, "0190a3b4-0000-7000-8000-00000000000a\t11111111-2222-3333-4444-555555555555\t"
                              "66666666-7777-8888-9999-aaaaaaaaaaaa\t\\N\t2024-05-01 00:00:01\t123\t"
                              "{\"ok\":true,\"cost\":\"NaN\",\"data\":{\"x\":7},\"score\":2.5,"
                              "\"node_name\":\"node\\\\t7 \\\\\"q\\\\\"\",\"updated_at\":null}\t"
                              "1714521601000123\t2105-12-31 23:59:59\t0\n");
  assert_memory_equal(pid, project, 16);
  sg_buf_reset(&b);
  /* updated: the version is updated_at's; a timestamp as to_jsonb writes it */
  v[2] = (sg_pgo_value_t)T("2024-05-02 00:00:00+00");
  assert_int_equal(sg_cap_node_row(&v24, &rel, &t, NULL, 0, 0, &b, pid, &w), 0);
  assert_non_null(strstr(b.data, "\t2024-05-01 00:00:01.000123\t"));
  assert_non_null(strstr(b.data, "\"updated_at\":\"2024-05-02T00:00:00+00:00\"}\t1714608000000000\t"));
  sg_buf_reset(&b);
  /* the tombstone: above the row's version and the delete's time */
  assert_int_equal(sg_cap_node_row(&v24, &rel, &t, NULL, 1, 5, &b, pid, &w), 0);
  assert_non_null(strstr(b.data, "\t1714608000000001\t2105-12-31 23:59:59\t1\n"));
  sg_buf_reset(&b);
  /* a value not in the stream leaves out as it was */
  assert_int_equal(sg_buf_puts(&b, "keep\n"), 0);
  v[7] = (sg_pgo_value_t){'u', NULL, 0};
  assert_int_equal(sg_cap_node_row(&v24, &rel, &t, NULL, 0, 0, &b, pid, &w), SG_ENOTFOUND);
  assert_string_equal(w, "data");
  assert_string_equal(b.data, "keep\n");
  sg_buf_reset(&b);
  assert_int_equal(sg_cap_nodes_insert_sql(&v18, "db`x", &b), 0);
  assert_string_equal(b.data, "INSERT INTO `db\\`x`.nodes (project_id, node_id, tree_id, root_id, created_at, "
                              "created_at_us, attributes, version, expires_at, is_deleted) FORMAT TabSeparated");
#undef T
#undef N
  sg_buf_free(&b);
  sg_cap_rel_free(&rel);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_relation),
      cmocka_unit_test(test_insert_update_delete),
      cmocka_unit_test(test_bad_values),
      cmocka_unit_test(test_nodes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
