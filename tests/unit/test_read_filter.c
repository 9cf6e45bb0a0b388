/* test_read_filter.c - the read API's SQL builder: Agenta's filter shape to
 * parameterized PostgreSQL, cursors, the span renderer, analytics parsing.
 * No database here: tests/node/read.test.mjs runs the same SQL for real. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "read_analytics.h"
#include "read_filter.h"
#include "read_span.h"

static const uint8_t project[16] = {0x01, 0x90, 0xa3, 0xb4, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x0a};

/* Compiles body (JSON text); returns the rc, q and err filled. */
static int compile(const char *body, sg_rf_query_t *q, sg_buf_t *err) {
  json_error_t je;
  json_t *j = body ? json_loads(body, 0, &je) : NULL;
  if (body) assert_non_null(j);
  sg_rf_query_init(q);
  int rc = sg_rf_compile_query(j, project, q, err);
  json_decref(j);
  return rc;
}

static int has_param(const sg_rf_query_t *q, const char *v) {
  for (size_t i = 0; i < q->nparams; i++)
    if (!strcmp(q->params[i], v)) return 1;
  return 0;
}

static void test_no_filter(void **st) {
  (void)st;
  sg_rf_query_t q;
  sg_buf_t err = SG_BUF_INIT;
  assert_int_equal(compile(NULL, &q, &err), 0);
  assert_non_null(strstr(q.sql.data, "FROM spans WHERE project_id = $1::uuid"));
  /* the table's columns (uuid order), not the select list's text casts of the same name */
  assert_non_null(strstr(q.sql.data, "ORDER BY spans.start_time DESC, spans.trace_id DESC, spans.span_id DESC LIMIT $2::int"));
  assert_int_equal(q.nparams, 2);
  assert_string_equal(q.params[0], "0190a3b4-0000-7000-8000-00000000000a");
  assert_string_equal(q.params[1], "101"); /* default limit 100, plus one to see a next page */
  assert_int_equal(q.limit, 100);
  sg_rf_query_free(&q);
}

static void test_nested_attribute_is(void **st) {
  (void)st;
  sg_rf_query_t q;
  sg_buf_t err = SG_BUF_INIT;
  assert_int_equal(compile("{\"filtering\":{\"operator\":\"and\",\"conditions\":[{\"field\":\"attributes\","
                           "\"key\":\"ag.type.span\",\"value\":\"llm\",\"operator\":\"is\"}]}}",
                           &q, &err), 0);
  /* Containment on the nested object, or on the literal dotted key. */
  assert_non_null(strstr(q.sql.data, "(attributes @> $2::jsonb OR attributes @> $3::jsonb)"));
  assert_string_equal(q.params[1], "{\"ag\":{\"type\":{\"span\":\"llm\"}}}");
  assert_string_equal(q.params[2], "{\"ag.type.span\":\"llm\"}");
  assert_int_equal(q.nparams, 4); /* no path parameter: containment names no leaf */
  sg_rf_query_free(&q);
  /* Other operators read the leaf: the path as a text[] parameter, and the
   * literal dotted key beside it. */
  assert_int_equal(compile("{\"filtering\":{\"conditions\":[{\"field\":\"attributes\","
                           "\"key\":\"ag.type.span\",\"value\":\"ll\",\"operator\":\"startswith\"}]}}",
                           &q, &err), 0);
  assert_non_null(strstr(q.sql.data, "(COALESCE(attributes #> $2::text[], attributes -> $3::text) #>> '{}') ILIKE $4"));
  assert_string_equal(q.params[1], "{\"ag\",\"type\",\"span\"}");
  assert_string_equal(q.params[2], "ag.type.span");
  assert_string_equal(q.params[3], "ll%");
  sg_rf_query_free(&q);
  /* The shorthand field "attributes.<key>" is the same condition. */
  assert_int_equal(compile("{\"filtering\":{\"conditions\":[{\"field\":\"attributes.ag.type.span\","
                           "\"value\":\"llm\"}]}}", &q, &err), 0);
  assert_true(has_param(&q, "{\"ag\":{\"type\":{\"span\":\"llm\"}}}"));
  sg_rf_query_free(&q);
}

static void test_numeric_and_string_ops(void **st) {
  (void)st;
  sg_rf_query_t q;
  sg_buf_t err = SG_BUF_INIT;
  assert_int_equal(compile("{\"filtering\":{\"operator\":\"or\",\"conditions\":["
                           "{\"field\":\"attributes\",\"key\":\"n\",\"value\":5,\"operator\":\"gte\"},"
                           "{\"field\":\"span_name\",\"value\":\"50%_x\",\"operator\":\"contains\"},"
                           "{\"field\":\"span_name\",\"value\":\"Ab\",\"operator\":\"startswith\","
                           "\"options\":{\"case_sensitive\":true}},"
                           "{\"field\":\"start_time\",\"value\":[\"2024-05-06T07:08:09Z\",1714979289],"
                           "\"operator\":\"btwn\"}]}}", &q, &err), 0);
  const char *s = q.sql.data;
  assert_non_null(strstr(s, "(CASE WHEN jsonb_typeof((attributes #> $2::text[])) = 'number' THEN "
                            "((attributes #> $2::text[]) #>> '{}')::numeric END) >= $3::numeric"));
  assert_string_equal(q.params[2], "5");
  assert_non_null(strstr(s, "span_name ILIKE $4"));
  assert_string_equal(q.params[3], "%50\\%\\_x%");
  assert_non_null(strstr(s, "span_name LIKE $5"));
  assert_string_equal(q.params[4], "Ab%");
  assert_non_null(strstr(s, "start_time BETWEEN $6::timestamptz AND $7::timestamptz"));
  assert_string_equal(q.params[5], "2024-05-06T07:08:09.000000Z");
  assert_string_equal(q.params[6], "2024-05-06T07:08:09.000000Z");
  assert_non_null(strstr(s, " OR "));
  sg_rf_query_free(&q);
}

static void test_columns_enums_ids(void **st) {
  (void)st;
  sg_rf_query_t q;
  sg_buf_t err = SG_BUF_INIT;
  assert_int_equal(compile("{\"filtering\":{\"conditions\":["
                           "{\"field\":\"span_kind\",\"value\":\"server\"},"
                           "{\"field\":\"span_type\",\"value\":\"llm\",\"operator\":\"is_not\"},"
                           "{\"field\":\"trace_id\",\"value\":[\"0x0123456789abcdef0123456789abcdef\","
                           "\"31d6cfe04b9011ec\"],\"operator\":\"in\"},"
                           "{\"field\":\"parent_id\",\"operator\":\"not_exists\"},"
                           "{\"operator\":\"not\",\"conditions\":[{\"field\":\"status_code\",\"value\":\"error\"}]}"
                           "]}}", &q, &err), 0);
  const char *s = q.sql.data;
  assert_non_null(strstr(s, "span_kind = $2::otelspankind"));
  assert_string_equal(q.params[1], "SPAN_KIND_SERVER");
  assert_non_null(strstr(s, "span_type IS DISTINCT FROM $3::spantype"));
  assert_string_equal(q.params[2], "LLM");
  assert_non_null(strstr(s, "trace_id = ANY($4::uuid[])"));
  assert_string_equal(q.params[3], "{\"01234567-89ab-cdef-0123-456789abcdef\","
                                   "\"31d6cfe0-4b90-11ec-31d6-cfe04b9011ec\"}");
  assert_non_null(strstr(s, "parent_id IS NULL"));
  assert_non_null(strstr(s, "NOT ((status_code = $5::otelstatuscode))"));
  assert_string_equal(q.params[4], "STATUS_CODE_ERROR");
  sg_rf_query_free(&q);
}

/* Nothing the client sends reaches the SQL text: values, keys and bad field
 * names are parameters or errors. */
static void test_injection_is_inert(void **st) {
  (void)st;
  static const char evil[] = "x'); DROP TABLE spans; --";
  sg_rf_query_t q;
  sg_buf_t err = SG_BUF_INIT;
  assert_int_equal(compile("{\"filtering\":{\"conditions\":["
                           "{\"field\":\"span_name\",\"value\":\"x'); DROP TABLE spans; --\"},"
                           "{\"field\":\"attributes\",\"key\":\"x'); DROP TABLE spans; --\",\"value\":1},"
                           "{\"field\":\"attributes\",\"key\":\"a\\\"}.b\",\"value\":\"x'); DROP TABLE spans; --\","
                           "\"operator\":\"contains\"}]}}", &q, &err), 0);
  assert_null(strstr(q.sql.data, "DROP"));
  assert_null(strstr(q.sql.data, "'x"));
  assert_true(has_param(&q, evil));
  assert_true(has_param(&q, "{\"x'); DROP TABLE spans; --\":1}")); /* one key, in JSON */
  assert_true(has_param(&q, "{\"a\\\"}\",\"b\"}"));               /* array literal escaping */
  sg_rf_query_free(&q);

  /* A field name is never SQL: unknown fields are a 400 naming them. */
  assert_int_equal(compile("{\"filtering\":{\"conditions\":[{\"field\":\"span_name; DROP TABLE spans\","
                           "\"value\":1}]}}", &q, &err), SG_EINVAL);
  assert_non_null(strstr(err.data, "filtering.conditions[0].field: unknown field 'span_name; DROP TABLE spans'"));
  sg_rf_query_free(&q);
  sg_buf_free(&err);
}

static void test_errors_name_the_place(void **st) {
  (void)st;
  static const struct { const char *body, *want; } cases[] = {
      {"{\"filtering\":{\"conditions\":[{\"field\":\"nope\",\"value\":1}]}}",
       "filtering.conditions[0].field: unknown field 'nope'"},
      {"{\"filtering\":{\"conditions\":[{\"field\":\"span_name\"},{\"operator\":\"and\",\"conditions\":"
       "[{\"field\":\"span_name\",\"operator\":\"approx\",\"value\":\"a\"}]}]}}",
       "filtering.conditions[1].conditions[0].operator: unknown operator 'approx'"},
      {"{\"filtering\":{\"operator\":\"xor\",\"conditions\":[]}}",
       "filtering.operator: unknown logical operator 'xor'"},
      {"{\"filtering\":{\"operator\":\"not\",\"conditions\":[]}}", "exactly one condition"},
      {"{\"filtering\":{\"conditions\":[{\"field\":\"span_kind\",\"value\":\"sideways\"}]}}",
       "unknown span_kind 'sideways'"},
      {"{\"filtering\":{\"conditions\":[{\"field\":\"trace_id\",\"value\":\"zz\"}]}}", "takes an id"},
      {"{\"filtering\":{\"conditions\":[{\"field\":\"span_kind\",\"value\":\"a\",\"operator\":\"gt\"}]}}",
       "operator 'gt' does not apply to field 'span_kind'"},
      {"{\"filtering\":{\"conditions\":[{\"field\":\"span_name\",\"key\":\"a\",\"value\":\"a\"}]}}",
       "takes no key"},
      {"{\"filtering\":{\"conditions\":[{\"field\":\"attributes\",\"value\":1,\"operator\":\"gt\"}]}}",
       "needs a key"},
      {"{\"filtering\":{\"conditions\":[{\"field\":\"attributes\",\"key\":\"a..b\",\"value\":1}]}}",
       "empty path element"},
      {"{\"windowing\":{\"limit\":0}}", "windowing.limit"},
      {"{\"windowing\":{\"next\":\"abc\"}}", "windowing.next"},
      {"{\"windowing\":{\"oldest\":\"yesterday\"}}", "windowing.oldest"},
      {"[1]", "body: must be a JSON object"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    sg_rf_query_t q;
    sg_buf_t err = SG_BUF_INIT;
    assert_int_equal(compile(cases[i].body, &q, &err), SG_EINVAL);
    if (!strstr(err.data, cases[i].want)) fail_msg("case %zu: '%s' lacks '%s'", i, err.data, cases[i].want);
    sg_rf_query_free(&q);
    sg_buf_free(&err);
  }
}

static void test_windowing_and_cursor(void **st) {
  (void)st;
  uint8_t t[16], s[16], t2[16], s2[16];
  for (int i = 0; i < 16; i++) t[i] = (uint8_t)(i * 17), s[i] = (uint8_t)(255 - i);
  char cur[SG_RF_CURSOR_LEN + 1];
  sg_rf_cursor_format(1, 1714979289123456LL, t, s, cur);
  assert_int_equal(strlen(cur), SG_RF_CURSOR_LEN);
  int desc;
  int64_t us;
  assert_int_equal(sg_rf_cursor_parse(cur, &desc, &us, t2, s2), 0);
  assert_int_equal(desc, 1);
  assert_true(us == 1714979289123456LL);
  assert_memory_equal(t, t2, 16);
  assert_memory_equal(s, s2, 16);
  cur[40] = 'X';
  assert_int_equal(sg_rf_cursor_parse(cur, &desc, &us, t2, s2), SG_EINVAL);

  sg_rf_cursor_format(1, 1714979289123456LL, t, s, cur);
  char body[400];
  snprintf(body, sizeof body, "{\"windowing\":{\"limit\":5000,\"oldest\":\"2024-05-06T00:00:00Z\","
           "\"newest\":1714979289,\"next\":\"%s\"}}", cur);
  sg_rf_query_t q;
  sg_buf_t err = SG_BUF_INIT;
  assert_int_equal(compile(body, &q, &err), 0);
  assert_int_equal(q.limit, SG_RF_LIMIT_MAX); /* clamped */
  assert_non_null(strstr(q.sql.data, "start_time >= $2::timestamptz AND start_time < $3::timestamptz"));
  assert_non_null(strstr(q.sql.data, "(start_time, trace_id, span_id) < ($4::timestamptz, $5::uuid, $6::uuid)"));
  assert_string_equal(q.params[3], "2024-05-06T07:08:09.123456Z");
  assert_string_equal(q.params[6], "1001");
  sg_rf_query_free(&q);
  /* A descending cursor does not continue an ascending listing. */
  snprintf(body, sizeof body, "{\"windowing\":{\"order\":\"ascending\",\"next\":\"%s\"}}", cur);
  assert_int_equal(compile(body, &q, &err), SG_EINVAL);
  sg_rf_query_free(&q);
  sg_buf_free(&err);
}

static void test_span_json(void **st) {
  (void)st;
  const char *v[SG_RF_NCOLS] = {0};
  v[SG_RF_TRACE_ID] = "01234567-89ab-cdef-0123-456789abcdef";
  v[SG_RF_SPAN_ID] = "aaaaaaaa-bbbb-cccc-31d6-cfe04b9011ec";
  v[SG_RF_PARENT_ID] = "31d6cfe0-4b90-11ec-31d6-cfe04b9011ec";
  v[SG_RF_TRACE_TYPE] = "INVOCATION";
  v[SG_RF_SPAN_KIND] = "SPAN_KIND_SERVER";
  v[SG_RF_SPAN_NAME] = "say \"hi\"";
  v[SG_RF_START_US] = "1714979289123456";
  v[SG_RF_END_US] = "1714979289654321";
  v[SG_RF_STATUS_CODE] = "STATUS_CODE_OK";
  v[SG_RF_ATTRIBUTES] = "{\"ag\": {\"type\": {\"span\": \"llm\"}}}";
  sg_buf_t b = SG_BUF_INIT;
  assert_int_equal(sg_rf_span_json(v, &b), 0);
  assert_string_equal(b.data,
                      "{\"trace_id\":\"0123456789abcdef0123456789abcdef\",\"span_id\":\"31d6cfe04b9011ec\","
                      "\"parent_id\":\"31d6cfe04b9011ec\",\"trace_type\":\"invocation\","
                      "\"span_kind\":\"SPAN_KIND_SERVER\",\"span_name\":\"say \\\"hi\\\"\","
                      "\"start_time\":\"2024-05-06T07:08:09.123456Z\",\"end_time\":\"2024-05-06T07:08:09.654321Z\","
                      "\"status_code\":\"STATUS_CODE_OK\",\"attributes\":{\"ag\": {\"type\": {\"span\": \"llm\"}}}}");
  json_error_t je;
  json_t *j = json_loads(b.data, 0, &je);
  assert_non_null(j);
  json_decref(j);
  sg_buf_free(&b);
}

static void test_analytics(void **st) {
  (void)st;
  sg_rf_analytics_t a;
  sg_buf_t err = SG_BUF_INIT, sql = SG_BUF_INIT;
  assert_int_equal(sg_rf_analytics_parse("from=2024-05-06T07%3A08%3A09Z&to=1714989289&bucket=5m"
                                         "&group_by=span_type,span_name", 0, &a, &err), 0);
  assert_true(a.from_s == 1714979280 && a.to_s == 1714989240 && a.bucket_s == 300);
  assert_int_equal(a.dims, 2u | 8u);
  assert_int_equal(sg_rf_analytics_pg_sql(&a, &sql), 0);
  assert_non_null(strstr(sql.data, "coalesce(span_type::text, '') COLLATE \"C\", coalesce(span_name::text, '')"));
  assert_non_null(strstr(sql.data, "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"));
  sg_buf_free(&sql);
  /* Defaults: the last 24 hours up to the next whole minute, hourly. */
  assert_int_equal(sg_rf_analytics_parse("", 1714979289, &a, &err), 0);
  assert_true(a.to_s == 1714979340 && a.from_s == 1714979340 - 86400 && a.bucket_s == 3600 && a.dims == 0);
  static const struct { const char *q, *want; } bad[] = {
      {"bucket=90s", "bucket: '90s' is not a whole number of minutes"},
      {"bucket=1w", "bucket"},
      {"group_by=span_type,evil'--", "group_by: unknown dimension 'evil'--'"},
      {"from=tomorrow", "from: 'tomorrow'"},
      {"from=1714979289&to=1714979289", "from: must be at least a minute before 'to'"},
      {"bucket=1m&from=0&to=1714979289", "more than 10000 buckets"},
      {"limit=3", "unknown parameter 'limit'"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    sg_buf_reset(&err);
    assert_int_equal(sg_rf_analytics_parse(bad[i].q, 1714979289, &a, &err), SG_EINVAL);
    if (!strstr(err.data, bad[i].want)) fail_msg("case %zu: '%s' lacks '%s'", i, err.data, bad[i].want);
  }
  sg_buf_free(&err);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_no_filter),
      cmocka_unit_test(test_nested_attribute_is),
      cmocka_unit_test(test_numeric_and_string_ops),
      cmocka_unit_test(test_columns_enums_ids),
      cmocka_unit_test(test_injection_is_inert),
      cmocka_unit_test(test_errors_name_the_place),
      cmocka_unit_test(test_windowing_and_cursor),
      cmocka_unit_test(test_span_json),
      cmocka_unit_test(test_analytics),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
