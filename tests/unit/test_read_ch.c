/* test_read_ch.c - the ClickHouse side of the read API without a server:
 * the statements for 18.16 and for DateTime64 servers (the live tests run
 * 18.16 only), the filter evaluated in C with PostgreSQL's semantics, its
 * ClickHouse prefilter, and the analytics parameters and aggregate.
 * tests/node/read_parity.test.mjs compares both stores for real. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "read_analytics.h"
#include "read_chsql.h"
#include "read_eval.h"

static const uint8_t project[16] = {0x01, 0x90, 0xa3, 0xb4, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x0a};

static void has(const char *hay, const char *needle) {
  if (!strstr(hay, needle)) fail_msg("'%s'\n  lacks '%s'", hay, needle);
}

/* ---- statements --------------------------------------------------------------------- */

static void test_statements(void **st) {
  (void)st;
  sg_ch_version_t old, cur;
  assert_int_equal(sg_ch_version_parse("18.16.1", &old), 0);
  assert_int_equal(sg_ch_version_parse("24.8.4.13", &cur), 0);
  sg_rch_ctx_t c = {&old, "db`x", {0}};
  memcpy(c.project, project, 16);
  uint8_t trace[16];
  memset(trace, 0xab, 16);
  sg_buf_t b = SG_BUF_INIT;
  assert_int_equal(sg_rch_trace_sql(&c, trace, &b), 0);
  has(b.data, "FROM `db\\`x`.spans PREWHERE project_id = toUUID('0190a3b4-0000-7000-8000-00000000000a') "
              "AND trace_id = toUUID('abababab-abab-abab-abab-abababababab')");
  has(b.data, "(toInt64(start_time) * 1000000 + start_time_us)");
  has(b.data, ", version, " SG_RCH_LIVE_SQL " FROM");
  sg_buf_reset(&b);
  c.ver = &cur;
  assert_int_equal(sg_rch_trace_sql(&c, trace, &b), 0);
  has(b.data, "toUnixTimestamp64Micro(start_time)");
  sg_buf_reset(&b);

  sg_rch_pos_t after = {1714979289123456, "4bf92f35-77b3-4da6-a3ce-929d0e0e4736", "00f067aa-0ba9-02b7-00f0-67aa0ba902b7"};
  sg_rch_scan_t s = {1, 1, 1, 1714900000000000, 1715000000000000, &after, "position(attributes, '\"llm\"') > 0", 128, 0, 0};
  c.ver = &old;
  assert_int_equal(sg_rch_candidates_sql(&c, &s, &b), 0);
  has(b.data, "PREWHERE project_id = toUUID('0190a3b4-0000-7000-8000-00000000000a') AND "
              "(start_time > toDateTime(1714900000) OR (start_time = toDateTime(1714900000) AND start_time_us >= 0))");
  has(b.data, "(start_time < toDateTime(1714979289) OR (start_time = toDateTime(1714979289) AND start_time_us < 123456))"
              " OR ((start_time = toDateTime(1714979289) AND start_time_us = 123456) AND "
              "(toString(trace_id) < '4bf92f35-77b3-4da6-a3ce-929d0e0e4736'");
  has(b.data, "WHERE (position(attributes, '\"llm\"') > 0) AND (is_deleted = 0)");
  has(b.data, "ORDER BY start_time DESC, start_time_us DESC, t DESC, s DESC, version DESC LIMIT 128");
  sg_buf_reset(&b);
  c.ver = &cur;
  s.descending = 0;
  s.after = NULL;
  assert_int_equal(sg_rch_candidates_sql(&c, &s, &b), 0);
  has(b.data, "start_time >= toDateTime64('2024-05-05 09:06:40.000000', 6, 'UTC')");
  has(b.data, "ORDER BY start_time, t, s, version DESC LIMIT 128");
  sg_buf_reset(&b);

  sg_rch_key_t keys[3] = {{1714979289123456, "a", "b"}, {1714979289999999, "c", "d"}, {1714979290000000, "e", "f"}};
  c.ver = &old;
  assert_int_equal(sg_rch_fetch_sql(&c, keys, 3, NULL, &b), 0);
  /* each second once on 18.16 (created_at is DateTime there) */
  has(b.data, "AND created_at IN (toDateTime(1714979289), toDateTime(1714979290)) AND (toString(trace_id), "
              "toString(span_id)) IN (('a', 'b'), ('c', 'd'), ('e', 'f'))");
  has(b.data, "SETTINGS use_uncompressed_cache = 1 FORMAT TabSeparated");
  sg_buf_reset(&b);
  c.ver = &cur;
  assert_int_equal(sg_rch_fetch_sql(&c, keys, 3, NULL, &b), 0);
  has(b.data, "created_at IN (toDateTime64('2024-05-06 07:08:09.123456', 6, 'UTC'), toDateTime64('2024-05-06 07:08:09.999999', 6, 'UTC'), ");
  sg_buf_reset(&b);

  assert_int_equal(sg_rch_analytics_sql(&c, 1714900000000000, 1715000000000000, &keys[0], 20000, 1, &b), 0);
  has(b.data, "AND (created_at, trace_id, span_id) GLOBAL IN (SELECT created_at, trace_id, span_id FROM `db\\`x`.spans WHERE");
  has(b.data, "(created_at > toDateTime64('2024-05-06 07:08:09.123456', 6, 'UTC') OR ");
  has(b.data, "span_name, attributes FROM");
  has(b.data, "LIMIT 20000) FORMAT TabSeparated");
  sg_buf_free(&b);

  /* with the read index: the trace's created_at values from spans_by_trace
   * narrow spans to the granules holding it */
  sg_ch_version_t ix = old;
  ix.caps |= SG_CH_READ_INDEX;
  c.ver = &ix;
  sg_buf_reset(&b);
  assert_int_equal(sg_rch_trace_sql(&c, trace, &b), 0);
  has(b.data, "FROM `db\\`x`.spans PREWHERE project_id = toUUID('0190a3b4-0000-7000-8000-00000000000a') AND "
              "created_at IN (SELECT created_at FROM `db\\`x`.spans_by_trace WHERE project_id = "
              "toUUID('0190a3b4-0000-7000-8000-00000000000a') AND trace_id = "
              "toUUID('abababab-abab-abab-abab-abababababab')) AND trace_id = toUUID('abababab-abab-abab-abab-abababababab')");
  has(b.data, "distributed_product_mode = 'local'");
  /* candidates from spans_by_start: the window there, the index's prefilter */
  s.prefilter = "status_code = 'STATUS_CODE_ERROR'";
  s.from_index = 1;
  s.prune = 1;
  sg_buf_reset(&b);
  assert_int_equal(sg_rch_candidates_sql(&c, &s, &b), 0);
  has(b.data, " FROM `db\\`x`.spans_by_start PREWHERE project_id = ");
  has(b.data, " WHERE (status_code = 'STATUS_CODE_ERROR') AND (" SG_RCH_LIVE_SQL ")");
  assert_null(strstr(b.data, "created_at >="));
  /* ... or spans, pruned to the created_at range of the window's index rows
   * (a filter on a column spans_by_start lacks) */
  s.from_index = 0;
  s.prefilter = "position(attributes, '\"llm\"') > 0";
  sg_buf_reset(&b);
  assert_int_equal(sg_rch_candidates_sql(&c, &s, &b), 0);
  has(b.data, " FROM `db\\`x`.spans PREWHERE project_id = ");
  has(b.data, " AND created_at >= (SELECT min(created_at) FROM `db\\`x`.spans_by_start WHERE project_id = ");
  has(b.data, " AND created_at <= (SELECT max(created_at) FROM `db\\`x`.spans_by_start WHERE project_id = ");
  has(b.data, "SETTINGS distributed_product_mode = 'local' FORMAT TabSeparated");
  /* without the index: neither */
  c.ver = &old;
  sg_buf_reset(&b);
  assert_int_equal(sg_rch_candidates_sql(&c, &s, &b), 0);
  assert_null(strstr(b.data, "spans_by_"));
  /* the fetch with a prefilter: the JSON columns only where it holds */
  sg_rch_key_t k1 = {1714979289123456, "a", "b"};
  sg_buf_reset(&b);
  assert_int_equal(sg_rch_fetch_sql(&c, &k1, 1, "x = 1", &b), 0);
  has(b.data, "if(sg_pf, attributes, NULL), ");
  has(b.data, ", (x = 1) AS sg_pf FROM ");
  sg_buf_free(&b);
}

/* ---- the filter in C ------------------------------------------------------------------ */

static sg_re_t *compile(const char *filtering) {
  json_error_t je;
  json_t *j = json_loads(filtering, 0, &je);
  if (!j) fail_msg("bad JSON in test: %s", je.text);
  sg_re_t *re = NULL;
  sg_buf_t err = SG_BUF_INIT;
  int rc = sg_re_compile(j, &re, &err);
  json_decref(j);
  if (rc) fail_msg("compile %s: %s", filtering, err.data ? err.data : "?");
  sg_buf_free(&err);
  return re;
}

/* A row: span_name, status_message (NULL allowed), attributes (NULL allowed). */
static int match(const char *filtering, const char *name, const char *msg, const char *attrs) {
  sg_re_t *re = compile(filtering);
  sg_re_row_t row;
  sg_re_row_init(&row);
  row.v[SG_RF_SPAN_NAME] = name;
  row.len[SG_RF_SPAN_NAME] = name ? strlen(name) : 0;
  row.v[SG_RF_STATUS_MESSAGE] = msg;
  row.len[SG_RF_STATUS_MESSAGE] = msg ? strlen(msg) : 0;
  row.v[SG_RF_ATTRIBUTES] = attrs;
  row.len[SG_RF_ATTRIBUTES] = attrs ? strlen(attrs) : 0;
  int r = sg_re_match(re, &row);
  sg_re_row_clear(&row);
  sg_re_free(re);
  return r;
}

#define F1(field, op, value) "{\"conditions\":[{\"field\":\"" field "\",\"operator\":\"" op "\",\"value\":" value "}]}"
#define FK(key, op, value) "{\"conditions\":[{\"field\":\"attributes\",\"key\":\"" key "\",\"operator\":\"" op "\",\"value\":" value "}]}"

static void test_three_valued(void **st) {
  (void)st;
  /* status_message = x: unknown for NULL; NOT of unknown is unknown (left out) */
  assert_int_equal(match(F1("status_message", "eq", "\"x\""), "n", NULL, NULL), 0);
  assert_int_equal(match("{\"operator\":\"not\",\"conditions\":[" "{\"field\":\"status_message\",\"operator\":\"eq\",\"value\":\"x\"}]}",
                         "n", NULL, NULL), 0);
  assert_int_equal(match("{\"operator\":\"not\",\"conditions\":[" "{\"field\":\"status_message\",\"operator\":\"eq\",\"value\":\"x\"}]}",
                         "n", "y", NULL), 1);
  /* is_not is IS DISTINCT FROM: true for NULL */
  assert_int_equal(match(F1("status_message", "is_not", "\"x\""), "n", NULL, NULL), 1);
  /* OR with an unknown side is true when the other is */
  assert_int_equal(match("{\"operator\":\"or\",\"conditions\":[{\"field\":\"status_message\",\"operator\":\"eq\",\"value\":\"x\"},"
                         "{\"field\":\"span_name\",\"value\":\"n\"}]}", "n", NULL, NULL), 1);
  /* NOR over (unknown, false) is unknown */
  assert_int_equal(match("{\"operator\":\"nor\",\"conditions\":[{\"field\":\"status_message\",\"operator\":\"eq\",\"value\":\"x\"},"
                         "{\"field\":\"span_name\",\"value\":\"m\"}]}", "n", NULL, NULL), 0);
  /* in over an empty list is false even for NULL; not_in true */
  assert_int_equal(match(F1("status_message", "in", "[]"), "n", NULL, NULL), 0);
  assert_int_equal(match(F1("status_message", "not_in", "[]"), "n", NULL, NULL), 1);
  assert_int_equal(match(F1("status_message", "not_in", "[\"x\"]"), "n", NULL, NULL), 1);
  /* no conditions: no restriction, even under nand */
  assert_int_equal(match("{\"operator\":\"nand\",\"conditions\":[]}", "n", NULL, NULL), 1);
}

static void test_strings(void **st) {
  (void)st;
  assert_int_equal(match(F1("span_name", "like", "\"c_f\\u00e9%\""), "café au lait", NULL, NULL), 1); /* _ is one character */
  assert_int_equal(match(F1("span_name", "like", "\"100\\\\%%\""), "100% sure", NULL, NULL), 1);
  assert_int_equal(match(F1("span_name", "like", "\"100\\\\%%\""), "1000 sure", NULL, NULL), 0);
  assert_int_equal(match(F1("span_name", "contains", "\"k sign\""), "Kelvin \xe2\x84\xaa sign", NULL, NULL), 1); /* U+212A */
  assert_int_equal(match(F1("span_name", "contains", "\"%\""), "100% sure", NULL, NULL), 1);
  assert_int_equal(match(F1("span_name", "contains", "\"%\""), "sure", NULL, NULL), 0);
  assert_int_equal(match(F1("span_name", "startswith", "\"\\u00c9COLE\""), "\xc3\xa9" "cole", NULL, NULL), 1);
  assert_int_equal(match("{\"conditions\":[{\"field\":\"span_name\",\"operator\":\"startswith\",\"value\":\"Ret\","
                         "\"options\":{\"case_sensitive\":true}}]}", "retrieve", NULL, NULL), 0);
  assert_int_equal(match(F1("span_name", "matches", "\"^a.c$\""), "a\nc", NULL, NULL), 1); /* dot matches newline, as in ARE */
  assert_int_equal(match(F1("span_name", "matches", "\"CAF\\u00c9\""), "café", NULL, NULL), 1);
  assert_int_equal(match(F1("span_name", "gt", "\"r\""), "straße", NULL, NULL), 1);
  assert_int_equal(match(F1("span_name", "lt", "\"Z\""), "a", NULL, NULL), 0); /* bytes: 'a' > 'Z' */
  /* what PostgreSQL refuses while running: the same 400 message */
  json_t *j = json_loads(F1("span_name", "matches", "\"(\""), 0, NULL);
  sg_re_t *re = NULL;
  sg_buf_t err = SG_BUF_INIT;
  assert_int_equal(sg_re_compile(j, &re, &err), SG_EINVAL);
  assert_string_equal(err.data, "a filter value is not valid for its field or operator");
  json_decref(j);
  sg_buf_reset(&err);
  j = json_loads(F1("span_name", "like", "\"ab\\\\\""), 0, NULL);
  assert_int_equal(sg_re_compile(j, &re, &err), SG_EINVAL);
  json_decref(j);
  sg_buf_free(&err);
}

static void test_json(void **st) {
  (void)st;
  const char *a = "{\"ag\":{\"type\":{\"span\":\"llm\"}},\"n\":1.50,\"tags\":[\"a\",\"odd\"],\"nothing\":null,"
                  "\"ag.flat\":\"yes\",\"obj\":{\"a\":1,\"b\":[1,2]}}";
  assert_int_equal(match(FK("ag.type.span", "is", "\"llm\""), "x", NULL, a), 1);
  assert_int_equal(match(FK("ag.type", "is", "{\"span\":\"llm\"}"), "x", NULL, a), 1);
  assert_int_equal(match(FK("ag.flat", "is", "\"yes\""), "x", NULL, a), 1); /* the dotted name stored flat */
  assert_int_equal(match(FK("ag.flat", "startswith", "\"ye\""), "x", NULL, a), 1);
  assert_int_equal(match(FK("n", "eq", "1.5"), "x", NULL, a), 1);
  assert_int_equal(match(FK("n", "contains", "\"1.50\""), "x", NULL, a), 1); /* numeric prints 1.50 */
  assert_int_equal(match(FK("n", "btwn", "[1, 2]"), "x", NULL, a), 1);
  assert_int_equal(match(FK("n", "gt", "\"1\""), "x", NULL, a), 0); /* a number is not compared as text */
  assert_int_equal(match(FK("tags.-1", "eq", "\"odd\""), "x", NULL, a), 1); /* negative: from the end */
  assert_int_equal(match(FK("tags.-1", "is", "\"odd\""), "x", NULL, a), 0); /* containment: {"tags": {"-1": ...}} */
  assert_int_equal(match(FK("tags", "is", "\"odd\""), "x", NULL, a), 0); /* {"tags": "odd"} is not contained */
  assert_int_equal(match(FK("nothing", "is", "null"), "x", NULL, a), 1);
  assert_int_equal(match(FK("missing", "is", "null"), "x", NULL, a), 1);
  assert_int_equal(match(FK("nothing", "exists", "null"), "x", NULL, a), 1);
  assert_int_equal(match(FK("obj", "contains", "\"\\\"a\\\": 1\""), "x", NULL, a), 1); /* jsonb's text */
  assert_int_equal(match(FK("n", "in", "[1.5, \"x\"]"), "x", NULL, a), 1);
  assert_int_equal(match(FK("n", "not_in", "[2]"), "x", NULL, NULL), 1);
  assert_int_equal(match(FK("n", "eq", "1.5"), "x", NULL, NULL), 0);
  assert_int_equal(match(F1("attributes", "is", "{\"obj\":{\"b\":[2]}}"), "x", NULL, a), 1);
}

static void test_content(void **st) {
  (void)st;
  const char *a = "{\"a\":\"Timeout after 5 ms; see docs.example.com\",\"b\":[\"rate-limited now\"],\"n\":\"hello\","
                  "\"m\":\"there friend\"}";
  assert_int_equal(match(F1("content", "is", "\"timeout\""), "x", NULL, a), 1);
  assert_int_equal(match(F1("content", "is", "\"example\""), "x", NULL, a), 0);       /* a host name is one word */
  assert_int_equal(match(F1("content", "is", "\"docs.example.com\""), "x", NULL, a), 1);
  assert_int_equal(match(F1("content", "is", "\"limited\""), "x", NULL, a), 1);       /* a hyphenated word's part */
  assert_int_equal(match(F1("content", "is", "\"\\\"rate-limited now\\\"\""), "x", NULL, a), 1);
  assert_int_equal(match(F1("content", "is", "\"\\\"hello there\\\"\""), "x", NULL, a), 0); /* not across values */
  assert_int_equal(match(F1("content", "is", "\"nope or friend\""), "x", NULL, a), 1);
  assert_int_equal(match(F1("content", "is", "\"timeout -friend\""), "x", NULL, a), 0);
  assert_int_equal(match(F1("content", "is", "\"!!\""), "x", NULL, a), 0);             /* no words: nothing */
  assert_int_equal(match(F1("content", "is", "\"timeout\""), "x", NULL, NULL), 0);     /* NULL: unknown */
}

static void prefilter(const char *filtering, const sg_ch_version_t *v, const char *want, int want_exact) {
  sg_re_t *re = compile(filtering);
  sg_buf_t b = SG_BUF_INIT;
  int exact = -1;
  assert_int_equal(sg_re_ch_prefilter(re, v, &b, &exact), 0);
  if (getenv("SHOW")) printf("%s\n  => %s [%d]\n", filtering, b.data, exact);
  else if (strcmp(b.data, want)) fail_msg("%s:\n  got  %s\n  want %s", filtering, b.data, want);
  if (exact != want_exact) fail_msg("%s: exact %d", filtering, exact);
  sg_buf_free(&b);
  sg_re_free(re);
}

static void test_prefilter(void **st) {
  (void)st;
  sg_ch_version_t v;
  assert_int_equal(sg_ch_version_parse("18.16.1", &v), 0);
  prefilter("{\"conditions\":[]}", &v, "1", 1);
  prefilter(F1("span_kind", "is", "\"server\""), &v, "(ifNull(toString(span_kind) = 'SPAN_KIND_SERVER', 0))", 1);
  prefilter(F1("status_message", "is_not", "\"x\""), &v, "((isNull(status_message) OR NOT ifNull(status_message = 'x', 0)))", 1);
  prefilter(F1("trace_id", "in", "[\"4bf92f3577b34da6a3ce929d0e0e4736\"]"), &v,
            "(ifNull(trace_id = toUUID('4bf92f35-77b3-4da6-a3ce-929d0e0e4736'), 0))", 1);
  prefilter(F1("start_time", "gte", "1714979289123456"), &v,
            "(ifNull((start_time > toDateTime(1714979289) OR (start_time = toDateTime(1714979289) AND start_time_us >= 123456)), 0))", 1);
  /* JSON: the string and the key as they are written in any stored form */
  prefilter(FK("ag.type.span", "is", "\"llm\""), &v,
            "(position(attributes, '\"llm\"') > 0 AND (position(attributes, '\"span\"') > 0 OR position(attributes, '\"ag.type.span\"') > 0))", 0);
  /* case-insensitive: no run through i or k (U+0130, U+212A) */
  prefilter(F1("span_name", "contains", "\"Kiwi stuff\""), &v, "(positionCaseInsensitiveUTF8(span_name, ' stuff') > 0)", 0);
  /* numbers in JSON are not searched as text (1e-07 is stored, 0.0000001 read): the key only */
  prefilter(FK("n", "contains", "\"0.00\""), &v, "((position(attributes, '\"n\"') > 0))", 0);
  /* OR narrows only when every side does; NOT only over exact sides */
  prefilter("{\"operator\":\"or\",\"conditions\":[{\"field\":\"span_name\",\"value\":\"a\"},"
            "{\"field\":\"span_name\",\"operator\":\"matches\",\"value\":\"b\"}]}", &v, "1", 0);
  prefilter("{\"operator\":\"not\",\"conditions\":[{\"field\":\"span_name\",\"value\":\"a\"}]}", &v,
            "NOT ((ifNull(span_name = 'a', 0)))", 0);
  prefilter(F1("content", "is", "\"Timeout rate\""), &v,
            "(((1 AND (positionCaseInsensitiveUTF8(attributes, 'meout') > 0 OR positionCaseInsensitiveUTF8(events, 'meout') > 0) "
            "AND (positionCaseInsensitiveUTF8(attributes, 'rate') > 0 OR positionCaseInsensitiveUTF8(events, 'rate') > 0))))", 0);
  /* literals quoted as ClickHouse wants, whatever the client sent */
  prefilter(F1("span_name", "is", "\"x'); DROP TABLE spans; --\\\\\""), &v,
            "(ifNull(span_name = 'x\\'); DROP TABLE spans; --\\\\', 0))", 1);
}

/* ---- analytics ---------------------------------------------------------------------------- */

static void test_analytics(void **st) {
  (void)st;
  sg_rf_analytics_t a;
  sg_buf_t err = SG_BUF_INIT, sql = SG_BUF_INIT;
  assert_int_equal(sg_rf_analytics_parse("from=0&to=7200&bucket=1h&group_by=span_type,attributes.ag.type.span"
                                         "&metrics=sum%3Aattributes.gen_ai.usage.total_tokens,avg:attributes.cost", 0, &a, &err), 0);
  assert_int_equal(a.nattr, 1);
  assert_int_equal(a.nmetric, 2);
  assert_string_equal(a.metric[0].name, "sum:attributes.gen_ai.usage.total_tokens");
  assert_string_equal(a.metric[0].path.flat, "gen_ai.usage.total_tokens");
  assert_null(a.metric[1].path.flat);
  assert_int_equal(sg_rf_analytics_pg_sql(&a, &sql), 0);
  has(sql.data, "(COALESCE(attributes #> $5::text[], attributes -> $6::text) #>> '{}') COLLATE \"C\"");
  has(sql.data, "sum(CASE WHEN jsonb_typeof(COALESCE(attributes #> $7::text[], attributes -> $8::text)) = 'number'");
  has(sql.data, "jsonb_typeof((attributes #> $9::text[])) = 'number'");
  has(sql.data, "AND deleted_at IS NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3");
  sg_rf_query_t q;
  sg_rf_query_init(&q);
  assert_int_equal(sg_rf_analytics_pg_params(&a, project, &q), 0);
  assert_int_equal(q.nparams, 9);
  assert_string_equal(q.params[4], "{\"ag\",\"type\",\"span\"}");
  assert_string_equal(q.params[5], "ag.type.span");
  sg_rf_query_free(&q);
  sg_buf_free(&sql);

  /* the exact aggregate: percentile_cont and exact sums, as PostgreSQL */
  sg_rf_agg_t *g = sg_rf_agg_new(&a);
  const char *col[SG_RF_NDIMS] = {NULL, "LLM", "SPAN_KIND_CLIENT", "x"};
  sg_jb_doc_t *d[4];
  const sg_jb_t *r[4];
  const char *docs[4] = {"{\"ag\":{\"type\":{\"span\":\"llm\"}},\"gen_ai\":{\"usage\":{\"total_tokens\":10}},\"cost\":0.1}",
                         "{\"ag\":{\"type\":{\"span\":\"llm\"}},\"gen_ai.usage.total_tokens\":5,\"cost\":0.2}",
                         "{\"ag\":{\"type\":{\"span\":\"llm\"}},\"cost\":\"0.3\"}",
                         "{\"cost\":1e2}"};
  for (int i = 0; i < 4; i++) assert_int_equal(sg_jb_parse(docs[i], strlen(docs[i]), &d[i], &r[i]), 0);
  assert_int_equal(sg_rf_agg_add(g, 1000000, 1001000, 1, col, r[0]), 0);
  assert_int_equal(sg_rf_agg_add(g, 2000000, 2004000, 0, col, r[1]), 0);
  assert_int_equal(sg_rf_agg_add(g, 3000000, 3002000, 0, col, r[2]), 0);
  assert_int_equal(sg_rf_agg_add(g, 3600000000, 3600000001, 0, col, r[3]), 0);
  sg_buf_t out = SG_BUF_INIT;
  assert_int_equal(sg_rf_agg_render(g, "clickhouse", &out), 0);
  has(out.data, "\"group_by\":[\"span_type\",\"attributes.ag.type.span\"],\"metrics\":[");
  has(out.data, "{\"timestamp\":\"1970-01-01T00:00:00.000000Z\",\"group\":{\"span_type\":\"llm\",\"attributes.ag.type.span\":\"llm\"},"
                "\"count\":3,\"errors\":1,\"duration_ms\":{\"p50\":2.000,\"p95\":3.800,\"p99\":3.960},"
                "\"metrics\":{\"sum:attributes.gen_ai.usage.total_tokens\":15,\"avg:attributes.cost\":0.15}}");
  /* 0.1 + 0.2 summed exactly is 0.3 (in doubles 0.30000000000000004), the average 0.15 */
  has(out.data, "{\"timestamp\":\"1970-01-01T01:00:00.000000Z\",\"group\":{\"span_type\":\"llm\",\"attributes.ag.type.span\":null},"
                "\"count\":1,\"errors\":0,\"duration_ms\":{\"p50\":0.001,\"p95\":0.001,\"p99\":0.001},"
                "\"metrics\":{\"sum:attributes.gen_ai.usage.total_tokens\":null,\"avg:attributes.cost\":100}}");
  has(out.data, "],\"count\":2}\n");
  sg_buf_free(&out);
  sg_rf_agg_free(g);
  for (int i = 0; i < 4; i++) sg_jb_free(d[i]);
  sg_rf_analytics_free(&a);

  static const struct { const char *q, *want; } bad[] = {
      {"metrics=max:attributes.x", "metrics: 'max:attributes.x' is not sum:<path> or avg:<path>"},
      {"metrics=sum:events.x", "metrics: 'events.x' is not attributes.<dotted path>"},
      {"group_by=attributes.a..b", "has an empty path element"},
      {"group_by=span_type,span_kind,span_name,trace_type,attributes.x", "at most 4 groups"},
      {"metrics=sum:attributes.a,sum:attributes.a,sum:attributes.a,sum:attributes.a,sum:attributes.a,"
       "sum:attributes.a,sum:attributes.a,sum:attributes.a,sum:attributes.a", "at most 8 metrics"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    sg_buf_reset(&err);
    assert_int_equal(sg_rf_analytics_parse(bad[i].q, 1714979289, &a, &err), SG_EINVAL);
    if (!strstr(err.data, bad[i].want)) fail_msg("case %zu: '%s' lacks '%s'", i, err.data, bad[i].want);
    sg_rf_analytics_free(&a);
  }
  sg_buf_free(&err);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_statements),
      cmocka_unit_test(test_three_valued),
      cmocka_unit_test(test_strings),
      cmocka_unit_test(test_json),
      cmocka_unit_test(test_content),
      cmocka_unit_test(test_prefilter),
      cmocka_unit_test(test_analytics),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
