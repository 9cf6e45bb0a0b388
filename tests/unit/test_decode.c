/* test_decode.c - OTLP protobuf, OTLP JSON and native JSON decoders, and the
 * OTLP response bodies. Protobuf requests are built with the generated
 * protobuf-c structs (build/gen) and packed, or written byte by byte where
 * protobuf-c cannot express the input (NUL in strings, deep nesting, bad
 * wire types). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "decode.h"
#include "err.h"
#include "jalloc.h"
#include "google/rpc/status.pb-c.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

typedef Opentelemetry__Proto__Common__V1__AnyValue AV;
typedef Opentelemetry__Proto__Common__V1__KeyValue KV;
typedef Opentelemetry__Proto__Common__V1__ArrayValue ARR;
typedef Opentelemetry__Proto__Common__V1__KeyValueList KVL;
typedef Opentelemetry__Proto__Trace__V1__Span SPAN;
typedef Opentelemetry__Proto__Trace__V1__Span__Event EVENT;
typedef Opentelemetry__Proto__Trace__V1__Span__Link LINK;
typedef Opentelemetry__Proto__Trace__V1__ScopeSpans SS;
typedef Opentelemetry__Proto__Trace__V1__ResourceSpans RS;
typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest REQ;

/* ---- helpers ---------------------------------------------------------------- */

/* Everything the builders allocate, freed by arena_free(). */
static void *arena[4096];
static size_t narena;
static void *A(size_t n) {
  void *p = calloc(1, n);
  assert_non_null(p);
  assert_true(narena < sizeof(arena) / sizeof(arena[0]));
  arena[narena++] = p;
  return p;
}
static void arena_free(void) {
  while (narena) free(arena[--narena]);
}

#define AV_CASE(x) OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_##x
static AV *av(int vcase) {
  AV *a = A(sizeof(*a));
  AV init = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
  *a = init;
  a->value_case = vcase;
  return a;
}
static AV *av_str(const char *s) {
  AV *a = av(AV_CASE(STRING_VALUE));
  a->string_value = (char *)s;
  return a;
}
static AV *av_int(int64_t v) {
  AV *a = av(AV_CASE(INT_VALUE));
  a->int_value = v;
  return a;
}
static KV *kv(const char *k, AV *v) {
  KV *x = A(sizeof(*x));
  KV init = OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT;
  *x = init;
  x->key = (char *)k;
  x->value = v;
  return x;
}
static KV **kvs(size_t n, ...) {
  KV **v = A(sizeof(KV *) * (n ? n : 1));
  va_list ap;
  va_start(ap, n);
  for (size_t i = 0; i < n; i++) v[i] = va_arg(ap, KV *);
  va_end(ap);
  return v;
}
static SPAN *span_new(const uint8_t *tid, size_t tn, const uint8_t *sid, size_t sn) {
  SPAN *s = A(sizeof(*s));
  SPAN init = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__INIT;
  *s = init;
  s->trace_id.data = (uint8_t *)tid;
  s->trace_id.len = tn;
  s->span_id.data = (uint8_t *)sid;
  s->span_id.len = sn;
  return s;
}

/* One resource with one scope holding the given spans. */
static uint8_t *pack_spans(SPAN **spans, size_t n, KV **res_attrs, size_t nres, size_t *len) {
  static Opentelemetry__Proto__Resource__V1__Resource res;
  Opentelemetry__Proto__Resource__V1__Resource rinit = OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
  res = rinit;
  res.n_attributes = nres;
  res.attributes = res_attrs;
  Opentelemetry__Proto__Common__V1__InstrumentationScope scope =
      OPENTELEMETRY__PROTO__COMMON__V1__INSTRUMENTATION_SCOPE__INIT;
  scope.name = "my.lib";
  scope.version = "1.2.3";
  SS ss = OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT, *ssp = &ss;
  ss.scope = &scope;
  ss.n_spans = n;
  ss.spans = spans;
  RS rs = OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT, *rsp = &rs;
  rs.resource = &res;
  rs.n_scope_spans = 1;
  rs.scope_spans = &ssp;
  REQ req = OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
  req.n_resource_spans = 1;
  req.resource_spans = &rsp;
  *len = opentelemetry__proto__collector__trace__v1__export_trace_service_request__get_packed_size(&req);
  uint8_t *buf = malloc(*len + 1);
  opentelemetry__proto__collector__trace__v1__export_trace_service_request__pack(&req, buf);
  return buf;
}

static char *dump(json_t *v) {
  char *s = sg_json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
  assert_non_null(s);
  return s;
}
#define assert_json(v, want)                                                   \
  do {                                                                         \
    char *s_ = dump(v);                                                        \
    assert_string_equal(s_, want);                                             \
    free(s_);                                                                  \
  } while (0)

static const uint8_t TID[16] = {0x31, 0xd6, 0xcf, 0xe0, 0x4b, 0x90, 0x11, 0xec,
                                0x80, 0x01, 0x42, 0x01, 0x0a, 0x80, 0x00, 0xb0};
static const uint8_t SID[8] = {0x31, 0xd6, 0xcf, 0xe0, 0x4b, 0x90, 0x11, 0xec};
static const uint8_t SID2[8] = {1, 2, 3, 4, 5, 6, 7, 8};

static void uuid_is(const uint8_t id[16], const char *want) {
  char u[37];
  sg_uuid_format(id, u);
  assert_string_equal(u, want);
}

/* ---- hand-written protobuf -------------------------------------------------- */

typedef struct {
  uint8_t *p;
  size_t n, cap;
} wb_t;
static void wb_put(wb_t *w, const void *p, size_t n) {
  if (w->n + n > w->cap) {
    w->cap = (w->n + n) * 2;
    w->p = realloc(w->p, w->cap);
    assert_non_null(w->p);
  }
  memcpy(w->p + w->n, p, n);
  w->n += n;
}
static void wb_varint(wb_t *w, uint64_t v) {
  uint8_t b[10];
  size_t k = 0;
  do {
    b[k] = v & 0x7f;
    v >>= 7;
    if (v) b[k] |= 0x80;
    k++;
  } while (v);
  wb_put(w, b, k);
}
/* field with length-delimited content */
static void wb_len(wb_t *w, unsigned field, const void *p, size_t n) {
  wb_varint(w, (uint64_t)field << 3 | 2);
  wb_varint(w, n);
  wb_put(w, p, n);
}
/* wrap w's content as field of a new message (in place) */
static void wb_wrap(wb_t *w, unsigned field) {
  wb_t o = {0};
  wb_len(&o, field, w->p, w->n);
  free(w->p);
  *w = o;
}
/* Wrap w's content `levels` times in the pair (inner field, outer field),
 * in linear time: the message is built back to front in one buffer, each
 * level prepending its tag and length (re-copying per level is quadratic,
 * minutes under ASan for 100000 levels). */
static void wb_wrap_pairs(wb_t *w, unsigned inner, unsigned outer, size_t levels) {
  size_t cap = w->n + levels * 2 * 11;
  uint8_t *b = malloc(cap);
  assert_non_null(b);
  size_t start = cap - w->n;
  memcpy(b + start, w->p, w->n);
  unsigned fields[2] = {inner, outer};
  for (size_t k = 0; k < levels * 2; k++) {
    uint8_t pre[20];
    wb_t t = {pre, 0, sizeof(pre)};
    wb_varint(&t, (uint64_t)fields[k & 1] << 3 | 2);
    wb_varint(&t, cap - start);
    start -= t.n;
    memcpy(b + start, pre, t.n);
  }
  free(w->p);
  w->n = cap - start;
  w->p = malloc(w->n);
  assert_non_null(w->p);
  memcpy(w->p, b + start, w->n);
  w->cap = w->n;
  free(b);
}
/* A request with one span (ids TID/SID) whose attribute list is the given
 * encoded KeyValue bytes. */
static wb_t request_with_kv(const uint8_t *kvb, size_t kvn) {
  wb_t w = {0};
  wb_len(&w, 1, TID, 16);
  wb_len(&w, 2, SID, 8);
  wb_len(&w, 9, kvb, kvn);
  wb_wrap(&w, 2); /* ScopeSpans.spans */
  wb_wrap(&w, 2); /* ResourceSpans.scope_spans */
  wb_wrap(&w, 1); /* Request.resource_spans */
  return w;
}

/* ---- OTLP protobuf ---------------------------------------------------------- */

static void test_proto_every_anyvalue(void **st) {
  (void)st;
  uint8_t bytes[] = {0, 1, 2, 0xff};
  AV *arr = av(AV_CASE(ARRAY_VALUE));
  ARR *a = A(sizeof(*a));
  ARR ainit = OPENTELEMETRY__PROTO__COMMON__V1__ARRAY_VALUE__INIT;
  *a = ainit;
  AV **vals = A(sizeof(AV *) * 3);
  vals[0] = av_int(1);
  vals[1] = av_str("x");
  vals[2] = av(AV_CASE(_NOT_SET));
  a->n_values = 3;
  a->values = vals;
  arr->array_value = a;

  AV *inner = av(AV_CASE(KVLIST_VALUE));
  KVL *il = A(sizeof(*il));
  KVL linit = OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE_LIST__INIT;
  *il = linit;
  il->n_values = 1;
  il->values = kvs(1, kv("b", av_int(1)));
  inner->kvlist_value = il;
  AV *outer = av(AV_CASE(KVLIST_VALUE));
  KVL *ol = A(sizeof(*ol));
  *ol = linit;
  ol->n_values = 1;
  ol->values = kvs(1, kv("a", inner));
  outer->kvlist_value = ol;

  AV *b = av(AV_CASE(BOOL_VALUE));
  b->bool_value = 1;
  AV *d = av(AV_CASE(DOUBLE_VALUE));
  d->double_value = 1.5;
  AV *nan = av(AV_CASE(DOUBLE_VALUE));
  nan->double_value = 0.0 / 0.0;
  AV *inf = av(AV_CASE(DOUBLE_VALUE));
  inf->double_value = 1.0 / 0.0;
  AV *ninf = av(AV_CASE(DOUBLE_VALUE));
  ninf->double_value = -1.0 / 0.0;
  AV *by = av(AV_CASE(BYTES_VALUE));
  by->bytes_value.data = bytes;
  by->bytes_value.len = sizeof(bytes);
  AV *empty_str = av_str("");

  SPAN *s = span_new(TID, 16, SID, 8);
  s->name = "chat gpt-4";
  s->kind = 3;
  s->start_time_unix_nano = 1704164645123456789ULL;
  s->end_time_unix_nano = 1704164646000000999ULL;
  s->n_attributes = 16;
  s->attributes = kvs(16, kv("s", av_str("h\xC3\xA9llo")), kv("bad", av_str("a\xC0\xAF" "b")),
                      kv("b", b), kv("i", av_int(9007199254740993LL)),
                      kv("imin", av_int(INT64_MIN)), kv("d", d), kv("nan", nan),
                      kv("inf", inf), kv("ninf", ninf), kv("arr", arr), kv("kv", outer),
                      kv("bytes", by), kv("unset", NULL), kv("gen_ai.prompt.0.content", av_str("hi")),
                      kv("dup", av_str("first")), kv("dup", empty_str));
  size_t n;
  uint8_t *buf = pack_spans(&s, 1, NULL, 0, &n);

  sg_span_batch_t bt;
  sg_buf_t err = SG_BUF_INIT;
  sg_span_batch_init(&bt);
  assert_int_equal(sg_otlp_decode_proto(buf, n, &bt, &err), 0);
  assert_int_equal(bt.n, 1);
  assert_int_equal(bt.rejected, 0);
  sg_span_t *sp = &bt.spans[0];
  uuid_is(sp->trace_id, "31d6cfe0-4b90-11ec-8001-42010a8000b0");
  uuid_is(sp->span_id, "31d6cfe0-4b90-11ec-31d6-cfe04b9011ec");
  assert_int_equal(sp->has_parent, 0);
  assert_string_equal(sp->span_name, "chat gpt-4");
  assert_int_equal(sp->span_kind, SG_SPAN_KIND_CLIENT);
  assert_int_equal(sp->status_code, SG_STATUS_CODE_UNSET);
  assert_null(sp->status_message);
  assert_int_equal(sp->trace_type, SG_NULL_ENUM);
  assert_int_equal(sp->span_type, SG_NULL_ENUM);
  assert_int_equal(sp->start_us, 1704164645123456LL);
  assert_int_equal(sp->end_us, 1704164646000000LL);
  assert_null(sp->events);
  assert_null(sp->links);
  assert_null(sp->resource);
  assert_json(sp->scope, "{\"attributes\":{},\"name\":\"my.lib\",\"version\":\"1.2.3\"}");
  assert_json(sp->attributes,
              "{\"arr\":[1,\"x\",null],\"b\":true,\"bad\":\"a\xEF\xBF\xBD\xEF\xBF\xBD" "b\","
              "\"bytes\":\"AAEC/w==\",\"d\":1.5,\"dup\":\"\","
              "\"gen_ai.prompt.0.content\":\"hi\",\"i\":9007199254740993,"
              "\"imin\":-9223372036854775808,\"inf\":\"Infinity\","
              "\"kv\":{\"a\":{\"b\":1}},\"nan\":\"NaN\",\"ninf\":\"-Infinity\","
              "\"s\":\"h\xC3\xA9llo\",\"unset\":null}");
  /* int64 beyond 2^53 is exact, not a double */
  json_t *i = json_object_get(sp->attributes, "i");
  assert_true(json_is_integer(i));
  assert_int_equal(json_integer_value(i), 9007199254740993LL);
  sg_span_batch_free(&bt);
  sg_buf_free(&err);
  free(buf);
  arena_free();
}

static void test_proto_span_fields(void **st) {
  (void)st;
  /* events, links, status, parent, resource shared between spans */
  EVENT e = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__EVENT__INIT, e2 = e, *ev[2] = {&e, &e2};
  e.time_unix_nano = 1704164645123456789ULL;
  e.name = "exception";
  e.n_attributes = 1;
  e.attributes = kvs(1, kv("exception.message", av_str("boom")));
  e2.time_unix_nano = 0;
  LINK l = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__LINK__INIT, *lk = &l;
  l.trace_id.data = (uint8_t *)TID;
  l.trace_id.len = 16;
  l.span_id.data = (uint8_t *)SID2;
  l.span_id.len = 8;
  AV *lst = av(AV_CASE(ARRAY_VALUE));
  ARR *la = A(sizeof(*la));
  ARR ainit = OPENTELEMETRY__PROTO__COMMON__V1__ARRAY_VALUE__INIT;
  *la = ainit;
  la->n_values = 2;
  la->values = A(sizeof(AV *) * 2);
  la->values[0] = av_str("p");
  la->values[1] = av_str("q");
  lst->array_value = la;
  l.n_attributes = 2;
  l.attributes = kvs(2, kv("key", av_str("invocation")), kv("list", lst));
  Opentelemetry__Proto__Trace__V1__Status status = OPENTELEMETRY__PROTO__TRACE__V1__STATUS__INIT;
  status.code = 2;
  status.message = "it broke";

  SPAN *s1 = span_new(TID, 16, SID, 8), *s2 = span_new(TID, 16, SID2, 8);
  s1->n_events = 2;
  s1->events = ev;
  s1->n_links = 1;
  s1->links = &lk;
  s1->status = &status;
  s1->kind = 42; /* unknown kind -> UNSPECIFIED */
  s2->parent_span_id.data = (uint8_t *)SID;
  s2->parent_span_id.len = 8;
  s2->kind = 2;
  SPAN *spans[] = {s1, s2};
  size_t n;
  uint8_t *buf = pack_spans(spans, 2, kvs(1, kv("service.name", av_str("svc"))), 1, &n);

  sg_span_batch_t bt;
  sg_buf_t err = SG_BUF_INIT;
  sg_span_batch_init(&bt);
  assert_int_equal(sg_otlp_decode_proto(buf, n, &bt, &err), 0);
  assert_int_equal(bt.n, 2);
  sg_span_t *a = &bt.spans[0], *b = &bt.spans[1];
  assert_string_equal(a->span_name, "");
  assert_int_equal(a->span_kind, SG_SPAN_KIND_UNSPECIFIED);
  assert_int_equal(a->status_code, SG_STATUS_CODE_ERROR);
  assert_string_equal(a->status_message, "it broke");
  assert_json(a->events,
              "[{\"attributes\":{\"exception.message\":\"boom\"},\"name\":\"exception\","
              "\"timestamp\":\"2024-01-02T03:04:05.123456Z\"},"
              "{\"attributes\":{},\"name\":\"\",\"timestamp\":\"1970-01-01T00:00:00.000000Z\"}]");
  assert_json(a->links,
              "[{\"attributes.key\":\"invocation\",\"attributes.list.0\":\"p\","
              "\"attributes.list.1\":\"q\",\"span_id\":\"01020304-0506-0708-0102-030405060708\","
              "\"trace_id\":\"31d6cfe0-4b90-11ec-8001-42010a8000b0\"}]");
  assert_null(a->attributes);
  assert_int_equal(b->has_parent, 1);
  uuid_is(b->parent_id, "31d6cfe0-4b90-11ec-31d6-cfe04b9011ec");
  assert_int_equal(b->span_kind, SG_SPAN_KIND_SERVER);
  assert_json(a->resource, "{\"service.name\":\"svc\"}");
  assert_ptr_equal(a->resource, b->resource); /* shared, refcounted */
  assert_ptr_equal(a->scope, b->scope);
  sg_span_batch_free(&bt);
  sg_buf_free(&err);
  free(buf);
  arena_free();
}

static void test_proto_partial_rejection(void **st) {
  (void)st;
  static const uint8_t zero16[16], zero8[8], five[5] = {1, 2, 3, 4, 5};
  SPAN *spans[] = {
      span_new(TID, 16, SID, 8),         /* good */
      span_new(TID, 3, SID, 8),          /* 3-byte trace id */
      span_new(TID, 16, NULL, 0),        /* missing span id */
      span_new(zero16, 16, SID, 8),      /* all-zero trace id */
      span_new(TID, 16, TID, 16),        /* 16-byte span id: accepted */
      span_new(TID, 16, SID2, 8),        /* bad parent */
      span_new(TID, 16, SID2, 8),        /* all-zero parent: root */
      span_new(TID, 8, SID, 8),          /* 8-byte trace id */
      span_new(TID, 16, SID2, 8),        /* start time beyond 2105 */
  };
  spans[8]->start_time_unix_nano = UINT64_MAX;
  spans[5]->parent_span_id.data = (uint8_t *)five;
  spans[5]->parent_span_id.len = 5;
  spans[6]->parent_span_id.data = (uint8_t *)zero8;
  spans[6]->parent_span_id.len = 8;
  size_t n;
  uint8_t *buf = pack_spans(spans, 9, NULL, 0, &n);
  sg_span_batch_t bt;
  sg_buf_t err = SG_BUF_INIT;
  sg_span_batch_init(&bt);
  assert_int_equal(sg_otlp_decode_proto(buf, n, &bt, &err), 0);
  assert_int_equal(bt.n, 3);
  assert_int_equal(bt.rejected, 6);
  assert_int_equal(bt.spans[2].has_parent, 0);
  uuid_is(bt.spans[1].span_id, "31d6cfe0-4b90-11ec-8001-42010a8000b0");
  const char *m = bt.reject_msg.data;
  assert_non_null(strstr(m, "resource_spans[0].scope_spans[0].spans[1].trace_id: must be 16 bytes"));
  assert_non_null(strstr(m, "(got 3 bytes)"));
  assert_non_null(strstr(m, "spans[2].span_id"));
  assert_non_null(strstr(m, "spans[3].trace_id"));
  assert_non_null(strstr(m, "spans[5].parent_span_id"));
  assert_non_null(strstr(m, "spans[7].trace_id"));
  assert_non_null(strstr(m, "spans[8].start_time_unix_nano: outside "
                            "1970-01-01T00:00:00Z..2105-12-31T23:59:59Z"));
  sg_span_batch_free(&bt);
  sg_buf_free(&err);
  free(buf);
  arena_free();
}

static void test_proto_truncated_and_random(void **st) {
  (void)st;
  SPAN *s = span_new(TID, 16, SID, 8);
  s->name = "x";
  s->n_attributes = 2;
  s->attributes = kvs(2, kv("a", av_str("b")), kv("n", av_int(-5)));
  size_t n;
  uint8_t *buf = pack_spans(&s, 1, kvs(1, kv("service.name", av_str("svc"))), 1, &n);
  /* Every strict prefix cuts inside the one resource_spans field. */
  for (size_t k = 1; k < n; k++) {
    sg_span_batch_t bt;
    sg_buf_t err = SG_BUF_INIT;
    sg_span_batch_init(&bt);
    uint8_t *cut = malloc(k); /* exact size so ASan sees over-reads */
    memcpy(cut, buf, k);
    assert_int_equal(sg_otlp_decode_proto(cut, k, &bt, &err), SG_EPARSE);
    assert_non_null(strstr(err.data, "protobuf: "));
    free(cut);
    sg_span_batch_free(&bt);
    sg_buf_free(&err);
  }
  /* Random bytes and random mutations: 0 or SG_EPARSE, nothing leaks. */
  uint32_t seed = 12345;
  for (int iter = 0; iter < 20000; iter++) {
    size_t len = (size_t)(iter % 97);
    uint8_t *r = malloc(n + len + 1);
    size_t rn;
    if (iter % 2) {
      rn = len;
      for (size_t k = 0; k < rn; k++) r[k] = (uint8_t)((seed = seed * 1103515245 + 12345) >> 16);
    } else {
      rn = n;
      memcpy(r, buf, n);
      for (int m = 0; m < 3; m++) {
        seed = seed * 1103515245 + 12345;
        r[(seed >> 8) % n] = (uint8_t)(seed >> 20);
      }
    }
    sg_span_batch_t bt;
    sg_buf_t err = SG_BUF_INIT;
    sg_span_batch_init(&bt);
    int rc = sg_otlp_decode_proto(r, rn, &bt, &err);
    assert_true(rc == 0 || rc == SG_EPARSE);
    if (rc == SG_EPARSE) assert_non_null(err.data);
    free(r);
    sg_span_batch_free(&bt);
    sg_buf_free(&err);
  }
  free(buf);
  arena_free();
}

static void test_proto_handwritten(void **st) {
  (void)st;
  sg_span_batch_t bt;
  sg_buf_t err = SG_BUF_INIT;

  /* NUL inside a string value, and a key with invalid UTF-8 */
  wb_t kvw = {0};
  wb_len(&kvw, 1, "k\xFF", 2);
  wb_t v = {0};
  wb_len(&v, 1, "a\0b", 3);
  wb_len(&kvw, 2, v.p, v.n);
  free(v.p);
  wb_t req = request_with_kv(kvw.p, kvw.n);
  sg_span_batch_init(&bt);
  assert_int_equal(sg_otlp_decode_proto(req.p, req.n, &bt, &err), 0);
  assert_int_equal(bt.n, 1);
  assert_json(bt.spans[0].attributes, "{\"k\xEF\xBF\xBD\":\"a\xEF\xBF\xBD" "b\"}");
  sg_span_batch_free(&bt);
  free(req.p);
  free(kvw.p);

  /* A later oneof member replaces the earlier one (string then int) */
  kvw = (wb_t){0};
  wb_len(&kvw, 1, "k", 1);
  v = (wb_t){0};
  wb_len(&v, 1, "s", 1);
  wb_varint(&v, 3 << 3 | 0);
  wb_varint(&v, 7);
  wb_len(&kvw, 2, v.p, v.n);
  free(v.p);
  req = request_with_kv(kvw.p, kvw.n);
  sg_span_batch_init(&bt);
  assert_int_equal(sg_otlp_decode_proto(req.p, req.n, &bt, &err), 0);
  assert_json(bt.spans[0].attributes, "{\"k\":7}");
  sg_span_batch_free(&bt);
  free(req.p);
  free(kvw.p);

  /* Nesting: 32 array levels are kept, 33 reject the span, 100000 levels
   * neither overflow the stack nor fail the request. */
  int depths[] = {SG_ATTR_MAX_DEPTH, SG_ATTR_MAX_DEPTH + 1, 100000};
  for (int t = 0; t < 3; t++) {
    wb_t val = {0};
    wb_varint(&val, 3 << 3 | 0); /* innermost AnyValue: int 1 */
    wb_varint(&val, 1);
    wb_wrap_pairs(&val, 1, 5, depths[t]); /* ArrayValue.values in AnyValue.array_value */
    kvw = (wb_t){0};
    wb_len(&kvw, 1, "deep", 4);
    wb_len(&kvw, 2, val.p, val.n);
    free(val.p);
    req = request_with_kv(kvw.p, kvw.n);
    sg_span_batch_init(&bt);
    sg_buf_reset(&err);
    assert_int_equal(sg_otlp_decode_proto(req.p, req.n, &bt, &err), 0);
    if (t == 0) {
      assert_int_equal(bt.n, 1);
      assert_int_equal(bt.rejected, 0);
    } else {
      assert_int_equal(bt.n, 0);
      assert_int_equal(bt.rejected, 1);
      assert_non_null(strstr(bt.reject_msg.data, "nested deeper than 32"));
    }
    sg_span_batch_free(&bt);
    free(req.p);
    free(kvw.p);
  }

  /* Expansion budget: 100000 empty events (2 bytes each, 4 JSON values
   * each) fail the request as too large (413, like JSON over its budget),
   * not as malformed; 2000 named events are fine. */
  for (int t = 0; t < 2; t++) {
    wb_t w = {0};
    wb_len(&w, 1, TID, 16);
    wb_len(&w, 2, SID, 8);
    for (int k = 0; k < (t ? 2000 : 100000); k++) {
      if (t) {
        static const uint8_t ev[] = {0x09, 1, 2, 3, 4, 5, 6, 7, 8, 0x12, 2, 'a', 'b'};
        wb_len(&w, 11, ev, sizeof(ev));
      } else {
        wb_len(&w, 11, "", 0);
      }
    }
    wb_wrap(&w, 2);
    wb_wrap(&w, 2);
    wb_wrap(&w, 1);
    sg_span_batch_init(&bt);
    sg_buf_reset(&err);
    int rc = sg_otlp_decode_proto(w.p, w.n, &bt, &err);
    if (t) {
      assert_int_equal(rc, 0);
      assert_int_equal(json_array_size(bt.spans[0].events), 2000);
    } else {
      assert_int_equal(rc, SG_ETOOBIG);
      assert_non_null(strstr(err.data, "protobuf: message expands too much when decoded"));
    }
    sg_span_batch_free(&bt);
    free(w.p);
  }

  /* Wrong wire type for a known field, invalid wire type, field 0, bad varint */
  static const struct {
    const char *bytes;
    size_t n;
    const char *msg;
  } bad[] = {
      {"\x08\x01", 2, "wrong wire type for ExportTraceServiceRequest.resource_spans"},
      {"\x0f", 1, "unsupported wire type"},
      {"\x0b\x0c", 2, "unsupported wire type"},
      {"\x02\x00", 2, "invalid field number 0"},
      {"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12, "malformed varint"},
      {"\x0a\x05\x12\x03\x12\x01\x0a", 7, "truncated message"},
      {"\x0a\x04\x12\x02\x12\x05", 6, "truncated message"},
  };
  for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
    sg_span_batch_init(&bt);
    sg_buf_reset(&err);
    assert_int_equal(sg_otlp_decode_proto((const uint8_t *)bad[k].bytes, bad[k].n, &bt, &err),
                     SG_EPARSE);
    assert_non_null(strstr(err.data, bad[k].msg));
    sg_span_batch_free(&bt);
  }
  /* Empty body and unknown fields are fine */
  sg_span_batch_init(&bt);
  assert_int_equal(sg_otlp_decode_proto((const uint8_t *)"", 0, &bt, &err), 0);
  assert_int_equal(sg_otlp_decode_proto((const uint8_t *)"\x10\x05\x1a\x01x", 5, &bt, &err), 0);
  assert_int_equal(bt.n, 0);
  sg_span_batch_free(&bt);
  sg_buf_free(&err);
}

/* ---- OTLP JSON --------------------------------------------------------------- */

static int decode_json(const char *body, sg_span_batch_t *bt, sg_buf_t *err) {
  sg_span_batch_init(bt);
  sg_buf_reset(err);
  return sg_otlp_decode_json(body, strlen(body), bt, err);
}

static void test_json_full(void **st) {
  (void)st;
  const char *body =
      "{\"resourceSpans\":[{\"resource\":{\"attributes\":["
      "{\"key\":\"service.name\",\"value\":{\"stringValue\":\"svc\"}}]},"
      "\"scopeSpans\":[{\"scope\":{\"name\":\"lib\",\"version\":\"2\"},\"spans\":[{"
      "\"traceId\":\"31D6CFE04B9011EC800142010A8000B0\",\"spanId\":\"31d6cfe04b9011ec\","
      "\"parentSpanId\":\"0102030405060708\",\"name\":\"op\",\"kind\":\"SPAN_KIND_SERVER\","
      "\"startTimeUnixNano\":\"1704164645123456789\",\"endTimeUnixNano\":1704164646000000000,"
      "\"unknownField\":{\"x\":1},"
      "\"attributes\":["
      "{\"key\":\"s\",\"value\":{\"stringValue\":\"a\\u0000b\"}},"
      "{\"key\":\"b\",\"value\":{\"boolValue\":false}},"
      "{\"key\":\"i\",\"value\":{\"intValue\":\"9007199254740993\"}},"
      "{\"key\":\"i2\",\"value\":{\"intValue\":9007199254740993}},"
      "{\"key\":\"i3\",\"value\":{\"intValue\":\"-9223372036854775808\"}},"
      "{\"key\":\"d\",\"value\":{\"doubleValue\":2}},"
      "{\"key\":\"d2\",\"value\":{\"doubleValue\":\"NaN\"}},"
      "{\"key\":\"d3\",\"value\":{\"doubleValue\":\"-Infinity\"}},"
      "{\"key\":\"d4\",\"value\":{\"doubleValue\":\"2.5\"}},"
      "{\"key\":\"arr\",\"value\":{\"arrayValue\":{\"values\":[{\"intValue\":\"1\"},{}]}}},"
      "{\"key\":\"kv\",\"value\":{\"kvlistValue\":{\"values\":[{\"key\":\"a\",\"value\":{\"stringValue\":\"b\"}}]}}},"
      "{\"key\":\"by\",\"value\":{\"bytesValue\":\"AAEC/w==\"}},"
      "{\"key\":\"by2\",\"value\":{\"bytesValue\":\"AAEC_w\"}},"
      "{\"key\":\"none\"},"
      "{\"key\":\"empty\",\"value\":{\"arrayValue\":{}}},"
      "{\"key\":\"a.b.c\",\"value\":{\"stringValue\":\"flat\"}}],"
      "\"events\":[{\"timeUnixNano\":\"1704164645000000000\",\"name\":\"e\",\"attributes\":[]}],"
      "\"links\":[{\"traceId\":\"31d6cfe04b9011ec800142010a8000b0\",\"spanId\":\"0102030405060708\","
      "\"attributes\":[{\"key\":\"k\",\"value\":{\"kvlistValue\":{\"values\":[{\"key\":\"x\",\"value\":{\"intValue\":5}}]}}}]}],"
      "\"status\":{\"code\":2,\"message\":\"bad\"}}]}]}]}";
  sg_span_batch_t bt;
  sg_buf_t err = SG_BUF_INIT;
  assert_int_equal(decode_json(body, &bt, &err), 0);
  assert_int_equal(bt.n, 1);
  sg_span_t *s = &bt.spans[0];
  uuid_is(s->trace_id, "31d6cfe0-4b90-11ec-8001-42010a8000b0");
  uuid_is(s->span_id, "31d6cfe0-4b90-11ec-31d6-cfe04b9011ec");
  uuid_is(s->parent_id, "01020304-0506-0708-0102-030405060708");
  assert_int_equal(s->has_parent, 1);
  assert_string_equal(s->span_name, "op");
  assert_int_equal(s->span_kind, SG_SPAN_KIND_SERVER);
  assert_int_equal(s->start_us, 1704164645123456LL);
  assert_int_equal(s->end_us, 1704164646000000LL);
  assert_int_equal(s->status_code, SG_STATUS_CODE_ERROR);
  assert_string_equal(s->status_message, "bad");
  assert_json(s->attributes,
              "{\"a.b.c\":\"flat\",\"arr\":[1,null],\"b\":false,\"by\":\"AAEC/w==\","
              "\"by2\":\"AAEC/w==\",\"d\":2.0,\"d2\":\"NaN\",\"d3\":\"-Infinity\",\"d4\":2.5,"
              "\"empty\":[],\"i\":9007199254740993,\"i2\":9007199254740993,"
              "\"i3\":-9223372036854775808,\"kv\":{\"a\":\"b\"},\"none\":null,"
              "\"s\":\"a\xEF\xBF\xBD" "b\"}");
  assert_int_equal(json_integer_value(json_object_get(s->attributes, "i")), 9007199254740993LL);
  assert_json(s->events, "[{\"attributes\":{},\"name\":\"e\",\"timestamp\":\"2024-01-02T03:04:05.000000Z\"}]");
  assert_json(s->links, "[{\"attributes.k.x\":5,\"span_id\":\"01020304-0506-0708-0102-030405060708\","
                        "\"trace_id\":\"31d6cfe0-4b90-11ec-8001-42010a8000b0\"}]");
  assert_json(s->resource, "{\"service.name\":\"svc\"}");
  assert_json(s->scope, "{\"attributes\":{},\"name\":\"lib\",\"version\":\"2\"}");
  sg_span_batch_free(&bt);

  /* proto field names are accepted too; enums as integers */
  assert_int_equal(
      decode_json("{\"resource_spans\":[{\"scope_spans\":[{\"spans\":[{"
                  "\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\","
                  "\"parent_span_id\":\"\",\"kind\":3,\"start_time_unix_nano\":5000,"
                  "\"status\":{\"code\":\"STATUS_CODE_OK\"}}]}]}]}", &bt, &err),
      0);
  assert_int_equal(bt.n, 1);
  assert_int_equal(bt.spans[0].has_parent, 0);
  assert_int_equal(bt.spans[0].span_kind, SG_SPAN_KIND_CLIENT);
  assert_int_equal(bt.spans[0].start_us, 5);
  assert_int_equal(bt.spans[0].status_code, SG_STATUS_CODE_OK);
  assert_null(bt.spans[0].scope);
  assert_null(bt.spans[0].attributes);
  sg_span_batch_free(&bt);
  sg_buf_free(&err);
}

static void test_json_rejections(void **st) {
  (void)st;
  const char *body =
      "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":["
      "{\"traceId\":\"31d6cfe04b9011ec800142010a8000b0\",\"spanId\":\"31d6cfe04b9011ec\"},"
      "{\"traceId\":\"abcdef\",\"spanId\":\"31d6cfe04b9011ec\"},"
      "{\"traceId\":\"31d6cfe04b9011ec800142010a8000b0\"},"
      "{\"traceId\":\"MdbP4EuQEeyAAUIBCoAAsA==\",\"spanId\":\"31d6cfe04b9011ec\"},"
      "{\"traceId\":\"31d6cfe04b9011ec800142010a8000b0\",\"spanId\":\"31d6cfe04b9011ec\",\"startTimeUnixNano\":\"-5\"},"
      "{\"traceId\":\"31d6cfe04b9011ec800142010a8000b0\",\"spanId\":\"31d6cfe04b9011ec\",\"startTimeUnixNano\":\"99999999999999999999\"},"
      "{\"traceId\":\"31d6cfe04b9011ec800142010a8000b0\",\"spanId\":\"31d6cfe04b9011ec\",\"attributes\":[{\"key\":\"x\",\"value\":{\"intValue\":\"9223372036854775808\"}}]},"
      "{\"traceId\":\"31d6cfe04b9011ec800142010a8000b0\",\"spanId\":\"31d6cfe04b9011ec\",\"attributes\":[{\"key\":\"x\",\"value\":{\"bytesValue\":\"!!\"}}]},"
      "{\"traceId\":\"31d6cfe04b9011ec800142010a8000b0\",\"spanId\":\"31d6cfe04b9011ec\",\"name\":5},"
      "{\"traceId\":\"31d6cfe04b9011ec800142010a8000b0\",\"spanId\":\"31d6cfe04b9011ec\",\"links\":[{\"traceId\":\"00\",\"spanId\":\"31d6cfe04b9011ec\"}]},"
      "7,"
      "{\"traceId\":\"00000000000000000000000000000000\",\"spanId\":\"31d6cfe04b9011ec\"},"
      "{\"traceId\":\"31d6cfe04b9011ec800142010a8000b0\",\"spanId\":\"0102030405060708\",\"kind\":\"NOPE\",\"startTimeUnixNano\":\"4291747199999999999\"},"
      "{\"traceId\":\"31d6cfe04b9011ec800142010a8000b0\",\"spanId\":\"0102030405060708\",\"endTimeUnixNano\":\"18446744073709551615\"}"
      "]}]}]}";
  sg_span_batch_t bt;
  sg_buf_t err = SG_BUF_INIT;
  assert_int_equal(decode_json(body, &bt, &err), 0);
  assert_int_equal(bt.n, 2);
  assert_int_equal(bt.rejected, 12);
  assert_int_equal(bt.spans[1].span_kind, SG_SPAN_KIND_UNSPECIFIED);
  assert_int_equal(bt.spans[1].start_us, SG_TIME_MAX_US);
  const char *m = bt.reject_msg.data;
  assert_non_null(strstr(m, "resourceSpans[0].scopeSpans[0].spans[1].traceId: expected 32 hex digits"));
  assert_non_null(strstr(m, "spans[2].spanId: expected a hex string"));
  assert_non_null(strstr(m, "spans[3].traceId: expected 32 hex digits"));
  assert_non_null(strstr(m, "spans[4].startTimeUnixNano"));
  assert_non_null(strstr(m, "spans[5].startTimeUnixNano: integer out of range"));
  assert_non_null(strstr(m, "spans[6].attributes[0].value.intValue: integer out of int64 range"));
  assert_non_null(strstr(m, "spans[7].attributes[0].value: bytesValue: invalid base64"));
  assert_non_null(strstr(m, "spans[8].name: expected a string"));
  assert_non_null(strstr(m, "spans[9].links[0].traceId"));
  /* only the first 10 reasons are kept; check the range message directly */
  sg_span_batch_free(&bt);
  assert_int_equal(decode_json("{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{"
                               "\"traceId\":\"31d6cfe04b9011ec800142010a8000b0\","
                               "\"spanId\":\"0102030405060708\","
                               "\"endTimeUnixNano\":\"18446744073709551615\"}]}]}]}", &bt, &err),
                   0);
  assert_int_equal(bt.rejected, 1);
  assert_string_equal(bt.reject_msg.data,
                      "resourceSpans[0].scopeSpans[0].spans[0].endTimeUnixNano: outside "
                      "1970-01-01T00:00:00Z..2105-12-31T23:59:59Z");
  sg_span_batch_free(&bt);

  /* Attribute nesting beyond the limit rejects the span. */
  sg_buf_t deep = SG_BUF_INIT;
  sg_buf_puts(&deep, "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":"
                     "\"31d6cfe04b9011ec800142010a8000b0\",\"spanId\":\"31d6cfe04b9011ec\","
                     "\"attributes\":[{\"key\":\"d\",\"value\":");
  for (int i = 0; i < 40; i++) sg_buf_puts(&deep, "{\"arrayValue\":{\"values\":[");
  sg_buf_puts(&deep, "{}");
  for (int i = 0; i < 40; i++) sg_buf_puts(&deep, "]}}");
  sg_buf_puts(&deep, "}]}]}]}]}");
  sg_span_batch_init(&bt);
  assert_int_equal(sg_otlp_decode_json(deep.data, deep.len, &bt, &err), 0);
  assert_int_equal(bt.rejected, 1);
  assert_non_null(strstr(bt.reject_msg.data, "nested deeper than 32 levels"));
  sg_span_batch_free(&bt);
  sg_buf_free(&deep);

  /* A bad resource attribute rejects the spans under it, not the request. */
  assert_int_equal(decode_json("{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"k\","
                               "\"value\":{\"intValue\":\"x\"}}]},\"scopeSpans\":[{\"spans\":[{"
                               "\"traceId\":\"31d6cfe04b9011ec800142010a8000b0\","
                               "\"spanId\":\"31d6cfe04b9011ec\"}]}]},"
                               "{\"scopeSpans\":[{\"spans\":[{"
                               "\"traceId\":\"31d6cfe04b9011ec800142010a8000b0\","
                               "\"spanId\":\"31d6cfe04b9011ec\"}]}]}]}",
                               &bt, &err),
                   0);
  assert_int_equal(bt.n, 1);
  assert_int_equal(bt.rejected, 1);
  assert_non_null(strstr(bt.reject_msg.data, "resourceSpans[0].resource.attributes[0].value.intValue"));
  sg_span_batch_free(&bt);
  sg_buf_free(&err);
}

static void test_json_body_errors(void **st) {
  (void)st;
  static const struct {
    const char *body, *msg;
  } cases[] = {
      {"", "body is not valid JSON: "},
      {"{\"resourceSpans\": [}", "body is not valid JSON: "},
      {"{\"a\":1} x", "body is not valid JSON: "},
      {"[]", "body: expected a JSON object"},
      {"{\"resourceSpans\":{}}", "resourceSpans: expected an array"},
      {"{\"resourceSpans\":[5]}", "resourceSpans[0]: expected an object"},
      {"{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":{}}]}]}", "resourceSpans[0].scopeSpans[0].spans: expected an array"},
      {"{\"resourceSpans\":[{\"resource\":[]}]}", "resourceSpans[0].resource: expected an object"},
      {"{\"resourceSpans\":[{\"scopeSpans\":[1]}]}", "resourceSpans[0].scopeSpans[0]: expected an object"},
      {"{\"x\":\"\xff\"}", "body is not valid JSON: "},
      {"{\"a\":\"\\\n\xff\"}", "body is not valid JSON: invalid escape"}, /* echoed text */
  };
  sg_span_batch_t bt;
  sg_buf_t err = SG_BUF_INIT;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    assert_int_equal(decode_json(cases[i].body, &bt, &err), SG_EPARSE);
    assert_non_null(strstr(err.data, cases[i].msg));
    assert_null(strchr(err.data, '\n'));
    sg_span_batch_free(&bt);
  }
  assert_int_equal(decode_json("{\"resourceSpans\": [}", &bt, &err), SG_EPARSE);
  assert_non_null(strstr(err.data, "line 1 column"));
  sg_span_batch_free(&bt);
  /* empty request / unknown top-level fields */
  assert_int_equal(decode_json("{}", &bt, &err), 0);
  assert_int_equal(decode_json("{\"resourceSpans\":null,\"x\":1}", &bt, &err), 0);
  assert_int_equal(bt.n, 0);
  sg_span_batch_free(&bt);
  sg_buf_free(&err);
}

/* A JSON body whose parsed tree would be out of proportion is refused
 * before jansson builds it (#14: 32 MiB of "x":[0,0,...] in an ignored
 * field took the gateway to 700 MB): past the 256 MiB cap (16 MiB of
 * zeros, ~24x), and past 64x + 1 MiB for a smaller body of empty objects.
 * Both decoders; the message says what to do. */
static void test_json_expansion_budget(void **st) {
  (void)st;
  static const char *const shapes[][3] = {
      /* prefix, element, suffix */
      {"{\"x\":[", "0,", "0],\"resourceSpans\":[],\"spans\":[]}"},
      {"{\"x\":[", "{},", "{}],\"resourceSpans\":[],\"spans\":[]}"},
  };
  static const size_t counts[] = {8u << 20, 1u << 20};
  sg_buf_t body = SG_BUF_INIT, err = SG_BUF_INIT;
  sg_span_batch_t bt;
  for (size_t k = 0; k < 2; k++) {
    sg_buf_reset(&body);
    assert_int_equal(sg_buf_puts(&body, shapes[k][0]), 0);
    size_t el = strlen(shapes[k][1]);
    assert_int_equal(sg_buf_reserve(&body, counts[k] * el), 0);
    for (size_t i = 0; i < counts[k]; i++) memcpy(body.data + body.len + i * el, shapes[k][1], el);
    body.len += counts[k] * el;
    assert_int_equal(sg_buf_puts(&body, shapes[k][2]), 0);
    for (int native = 0; native < 2; native++) {
      sg_span_batch_init(&bt);
      sg_buf_reset(&err);
      int rc = native ? sg_native_decode_json(body.data, body.len, &bt, &err)
                      : sg_otlp_decode_json(body.data, body.len, &bt, &err);
      assert_int_equal(rc, SG_ETOOBIG);
      assert_non_null(strstr(err.data, "JSON body too large to decode: its "));
      assert_non_null(strstr(err.data, "send fewer spans per request, or protobuf"));
      assert_int_equal(bt.n, 0);
      sg_span_batch_free(&bt);
    }
  }
  /* The same zeros, fewer: decoded (the field is ignored). */
  sg_buf_reset(&body);
  sg_buf_puts(&body, "{\"x\":[");
  for (int i = 0; i < 100000; i++) sg_buf_puts(&body, "0,");
  sg_buf_puts(&body, "0],\"resourceSpans\":[]}");
  sg_span_batch_init(&bt);
  assert_int_equal(sg_otlp_decode_json(body.data, body.len, &bt, &err), 0);
  sg_span_batch_free(&bt);
  sg_buf_free(&body);
  sg_buf_free(&err);
}

/* ---- native JSON ------------------------------------------------------------- */

static int decode_native(const char *body, sg_span_batch_t *bt, sg_buf_t *err) {
  sg_span_batch_init(bt);
  sg_buf_reset(err);
  return sg_native_decode_json(body, strlen(body), bt, err);
}

static void test_native_full(void **st) {
  (void)st;
  const char *body =
      "{\"project_id\":\"ignored\",\"spans\":[{"
      "\"trace_id\":\"31d6cfe0-4b90-11ec-8001-42010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\","
      "\"parent_id\":\"0x0102030405060708\",\"project_id\":\"11111111-1111-1111-1111-111111111111\","
      "\"span_name\":\"root\",\"span_kind\":\"server\",\"span_type\":\"llm\",\"trace_type\":\"INVOCATION\","
      "\"status_code\":\"STATUS_CODE_ERROR\",\"status_message\":\"oops\","
      "\"start_time\":\"2024-01-02T05:04:05.123456789+02:00\",\"end_time\":1704164646,"
      "\"attributes\":{\"ag\":{\"data\":{\"inputs\":{\"q\":\"a\\u0000b\"}}},\"n\":9007199254740993},"
      "\"events\":[{\"name\":\"exception\",\"timestamp\":1704164645123,\"attributes\":{\"message\":\"m\"}}],"
      "\"links\":[{\"trace_id\":\"0x31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"0102030405060708\","
      "\"attributes\":{\"key\":\"parent\"}}],"
      "\"references\":[{\"id\":\"x\",\"attributes\":{\"key\":\"application\"}}],"
      "\"hashes\":[],"
      "\"session_id\":\"sess\",\"user_id\":\"u\",\"agent_id\":\"ag\"}]}";
  sg_span_batch_t bt;
  sg_buf_t err = SG_BUF_INIT;
  assert_int_equal(decode_native(body, &bt, &err), 0);
  assert_int_equal(bt.n, 1);
  assert_int_equal(bt.rejected, 0);
  sg_span_t *s = &bt.spans[0];
  uuid_is(s->trace_id, "31d6cfe0-4b90-11ec-8001-42010a8000b0");
  uuid_is(s->span_id, "31d6cfe0-4b90-11ec-31d6-cfe04b9011ec");
  uuid_is(s->parent_id, "01020304-0506-0708-0102-030405060708");
  assert_int_equal(s->has_parent, 1);
  assert_string_equal(s->span_name, "root");
  assert_int_equal(s->span_kind, SG_SPAN_KIND_SERVER);
  assert_int_equal(s->span_type, SG_SPAN_TYPE_LLM);
  assert_int_equal(s->trace_type, SG_TRACE_INVOCATION);
  assert_int_equal(s->status_code, SG_STATUS_CODE_ERROR);
  assert_string_equal(s->status_message, "oops");
  assert_int_equal(s->start_us, 1704164645123456LL);
  assert_int_equal(s->end_us, 1704164646000000LL);
  assert_json(s->attributes, "{\"ag\":{\"data\":{\"inputs\":{\"q\":\"a\xEF\xBF\xBD" "b\"}}},"
                             "\"n\":9007199254740993}");
  assert_json(s->events, "[{\"attributes\":{\"message\":\"m\"},\"name\":\"exception\","
                         "\"timestamp\":\"2024-01-02T03:04:05.123000Z\"}]");
  assert_json(s->links, "[{\"attributes.key\":\"parent\",\"span_id\":\"01020304-0506-0708-0102-030405060708\","
                        "\"trace_id\":\"31d6cfe0-4b90-11ec-8001-42010a8000b0\"}]");
  assert_json(s->references, "[{\"attributes\":{\"key\":\"application\"},\"id\":\"x\"}]");
  assert_null(s->hashes); /* empty array -> NULL */
  assert_string_equal(s->session_id, "sess");
  assert_string_equal(s->user_id, "u");
  assert_string_equal(s->agent_id, "ag");
  assert_null(s->resource);
  assert_null(s->scope);
  sg_span_batch_free(&bt);
  sg_buf_free(&err);
}

static void test_native_ids_times_labels(void **st) {
  (void)st;
  static const struct {
    const char *fields;
    int64_t start_us;
  } ok[] = {
      {"\"start_time\":1704164645", 1704164645000000LL},
      {"\"start_time\":1704164645123", 1704164645123000LL},
      {"\"start_time\":1704164645123456", 1704164645123456LL},
      {"\"start_time\":1704164645123456789", 1704164645123456LL},
      {"\"start_time\":\"1704164645\"", 1704164645000000LL},
      {"\"start_time\":\"1704164645123\"", 1704164645123000LL},
      {"\"start_time\":\"1704164645123456\"", 1704164645123456LL},
      {"\"start_time\":\"1704164645123456789\"", 1704164645123456LL},
      {"\"start_time\":\"2024-01-02T03:04:05Z\"", 1704164645000000LL},
      {"\"start_time\":\"2024-01-02 03:04:05.5\"", 1704164645500000LL},
      {"\"start_time\":\"2024-01-01T22:04:05-0500\"", 1704164645000000LL},
      {"\"end_time\":\"2024-01-02T03:04:05Z\"", 1704164645000000LL}, /* start = end */
  };
  sg_span_batch_t bt;
  sg_buf_t err = SG_BUF_INIT;
  char body[512];
  for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
    snprintf(body, sizeof(body),
             "{\"spans\":[{\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\","
             "\"span_id\":\"31d6cfe04b9011ec\",%s}]}", ok[i].fields);
    assert_int_equal(decode_native(body, &bt, &err), 0);
    assert_int_equal(bt.n, 1);
    assert_int_equal(bt.spans[0].start_us, ok[i].start_us);
    assert_int_equal(bt.spans[0].end_us, ok[i].start_us);
    sg_span_batch_free(&bt);
  }
  /* no times at all: now */
  assert_int_equal(decode_native("{\"spans\":[{\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\","
                                 "\"span_id\":\"31d6cfe04b9011ec\",\"span_kind\":3,\"status_code\":\"ok\","
                                 "\"span_type\":null,\"parent_id\":null}]}", &bt, &err),
                   0);
  assert_true(bt.spans[0].start_us > 1704164645000000LL);
  assert_int_equal(bt.spans[0].start_us, bt.spans[0].end_us);
  assert_int_equal(bt.spans[0].span_kind, SG_SPAN_KIND_CLIENT);
  assert_int_equal(bt.spans[0].status_code, SG_STATUS_CODE_OK);
  assert_int_equal(bt.spans[0].span_type, SG_NULL_ENUM);
  assert_int_equal(bt.spans[0].has_parent, 0);
  assert_string_equal(bt.spans[0].span_name, "");
  sg_span_batch_free(&bt);

  static const struct {
    const char *fields, *msg;
  } rej[] = {
      {"\"span_id\":\"31d6cfe04b9011ec\"", "spans[0].trace_id: missing"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\"", "spans[0].span_id: missing"},
      {"\"trace_id\":\"abc\",\"span_id\":\"31d6cfe04b9011ec\"", "spans[0].trace_id: expected 32 hex digits"},
      {"\"trace_id\":\"00000000-0000-0000-0000-000000000000\",\"span_id\":\"31d6cfe04b9011ec\"", "trace_id: id is all zero"},
      {"\"trace_id\":5,\"span_id\":\"31d6cfe04b9011ec\"", "trace_id: expected"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"parent_id\":\"xyz\"", "parent_id"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"span_type\":\"robot\"", "span_type: unknown label \"robot\""},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"trace_type\":\"x\"", "trace_type: unknown label"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"span_kind\":\"SIDEWAYS\"", "span_kind: unknown label"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"status_code\":7", "status_code: unknown value 7"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"start_time\":\"10000-01-01T00:00:00Z\"", "start_time: expected an ISO-8601 time"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"start_time\":\"0000-12-31T00:00:00Z\"", "start_time"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"end_time\":\"2105-12-31T23:59:59-01:00\"", "end_time: expected an ISO-8601 time within 1970-01-01T00:00:00Z..2105-12-31T23:59:59Z"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"start_time\":\"1969-12-31T23:59:59Z\"", "start_time: expected an ISO-8601 time"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"start_time\":9999999999", "start_time: epoch"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"start_time\":\"9999999999999999999\"", "start_time: epoch"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"start_time\":-5", "start_time: epoch"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"start_time\":\"12345678901234567890\"", "start_time: epoch"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"start_time\":1.5", "start_time: expected"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"attributes\":[]", "attributes: expected an object"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"events\":[{\"name\":\"e\"}]", "events[0].timestamp: missing"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"links\":[{\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\"}]", "links[0].span_id: missing"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"references\":{}", "references: expected an array"},
      {"\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\",\"span_id\":\"31d6cfe04b9011ec\",\"session_id\":5", "session_id: expected a string"},
  };
  for (size_t i = 0; i < sizeof(rej) / sizeof(rej[0]); i++) {
    snprintf(body, sizeof(body),
             "{\"spans\":[{%s},{\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\","
             "\"span_id\":\"0102030405060708\"}]}", rej[i].fields);
    assert_int_equal(decode_native(body, &bt, &err), 0);
    assert_int_equal(bt.n, 1);        /* the good span is kept */
    assert_int_equal(bt.rejected, 1);
    if (strstr(bt.reject_msg.data, rej[i].msg) == NULL)
      fail_msg("case %zu: \"%s\" lacks \"%s\"", i, bt.reject_msg.data, rej[i].msg);
    sg_span_batch_free(&bt);
  }

  /* attributes nested beyond SG_NATIVE_MAX_DEPTH */
  sg_buf_t deep = SG_BUF_INIT;
  sg_buf_puts(&deep, "{\"spans\":[{\"trace_id\":\"31d6cfe04b9011ec800142010a8000b0\","
                     "\"span_id\":\"31d6cfe04b9011ec\",\"attributes\":");
  for (int i = 0; i < 70; i++) sg_buf_puts(&deep, "{\"a\":");
  sg_buf_puts(&deep, "1");
  for (int i = 0; i < 70; i++) sg_buf_puts(&deep, "}");
  sg_buf_puts(&deep, "}, 5]}");
  sg_span_batch_init(&bt);
  assert_int_equal(sg_native_decode_json(deep.data, deep.len, &bt, &err), 0);
  assert_int_equal(bt.rejected, 2);
  assert_non_null(strstr(bt.reject_msg.data, "spans[0].attributes: nested deeper than 64"));
  assert_non_null(strstr(bt.reject_msg.data, "spans[1]: expected an object"));
  sg_span_batch_free(&bt);
  sg_buf_free(&deep);

  /* body errors */
  static const char *bodies[] = {"[]", "{}", "{\"spans\":{}}", "{\"spans\":null}", "nope"};
  for (size_t i = 0; i < 5; i++) {
    assert_int_equal(decode_native(bodies[i], &bt, &err), SG_EPARSE);
    assert_true(strstr(err.data, "{\"spans\": [...]}") || strstr(err.data, "not valid JSON"));
    sg_span_batch_free(&bt);
  }
  sg_buf_free(&err);
}

/* ---- responses --------------------------------------------------------------- */

static void test_responses(void **st) {
  (void)st;
  sg_buf_t b = SG_BUF_INIT;
  assert_int_equal(sg_otlp_response_proto(0, NULL, &b), 0);
  assert_int_equal(b.len, 0);
  assert_int_equal(sg_otlp_response_proto(0, "", &b), 0);
  assert_int_equal(b.len, 0);

  assert_int_equal(sg_otlp_response_proto(3, "span 1: bad", &b), 0);
  Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse *r =
      opentelemetry__proto__collector__trace__v1__export_trace_service_response__unpack(
          NULL, b.len, (const uint8_t *)b.data);
  assert_non_null(r);
  assert_non_null(r->partial_success);
  assert_int_equal(r->partial_success->rejected_spans, 3);
  assert_string_equal(r->partial_success->error_message, "span 1: bad");
  opentelemetry__proto__collector__trace__v1__export_trace_service_response__free_unpacked(r, NULL);

  sg_buf_reset(&b);
  assert_int_equal(sg_otlp_response_proto(0, "warning", &b), 0); /* a warning */
  r = opentelemetry__proto__collector__trace__v1__export_trace_service_response__unpack(
      NULL, b.len, (const uint8_t *)b.data);
  assert_non_null(r->partial_success);
  assert_int_equal(r->partial_success->rejected_spans, 0);
  opentelemetry__proto__collector__trace__v1__export_trace_service_response__free_unpacked(r, NULL);

  sg_buf_reset(&b);
  assert_int_equal(sg_otlp_response_json(0, NULL, &b), 0);
  assert_string_equal(b.data, "{}");
  sg_buf_reset(&b);
  assert_int_equal(sg_otlp_response_json(2, "span \"x\": bad", &b), 0);
  assert_string_equal(b.data,
                      "{\"partialSuccess\":{\"rejectedSpans\":\"2\",\"errorMessage\":\"span \\\"x\\\": bad\"}}");
  sg_buf_reset(&b);
  assert_int_equal(sg_otlp_response_json(0, "careful", &b), 0);
  assert_string_equal(b.data, "{\"partialSuccess\":{\"errorMessage\":\"careful\"}}");

  sg_buf_reset(&b);
  assert_int_equal(sg_rpc_status_proto(3, "body is not valid JSON", &b), 0);
  Google__Rpc__Status *s = google__rpc__status__unpack(NULL, b.len, (const uint8_t *)b.data);
  assert_non_null(s);
  assert_int_equal(s->code, 3);
  assert_string_equal(s->message, "body is not valid JSON");
  assert_int_equal(s->n_details, 0);
  google__rpc__status__free_unpacked(s, NULL);
  sg_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_proto_every_anyvalue),
      cmocka_unit_test(test_proto_span_fields),
      cmocka_unit_test(test_proto_partial_rejection),
      cmocka_unit_test(test_proto_truncated_and_random),
      cmocka_unit_test(test_proto_handwritten),
      cmocka_unit_test(test_json_full),
      cmocka_unit_test(test_json_rejections),
      cmocka_unit_test(test_json_body_errors),
      cmocka_unit_test(test_json_expansion_budget),
      cmocka_unit_test(test_native_full),
      cmocka_unit_test(test_native_ids_times_labels),
      cmocka_unit_test(test_responses),
  };
  return cmocka_run_group_tests_name("decode", tests, NULL, NULL);
}
