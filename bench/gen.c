/* gen.c - writes the benchmark workload: realistic LLM-application spans as
 * OTLP/HTTP protobuf request bodies (see workload.h for the file layout).
 *
 *   gen -o FILE [-n BODIES] [-s SPANS_PER_BODY] [--seed N]
 *
 * Each body is one ExportTraceServiceRequest: one resource (service.*,
 * telemetry.sdk.*), one scope ("agenta"), SPANS_PER_BODY spans (default 100)
 * made of whole traces of 5-20 spans with exactly one root each. Spans carry
 * about 1 KB of attributes the way Agenta's SDK and OpenTelemetry GenAI
 * instrumentations send them: ag.type.*, ag.data.inputs/outputs, ag.metrics.*
 * (tokens, costs), gen_ai.* (model, usage, prompt and completion text),
 * session and user ids. Deterministic for a given seed.
 *
 * Prints one line of figures (bodies, bytes, mean attribute bytes per span)
 * on stderr.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"
#include "workload.h"

typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue any_t;
typedef Opentelemetry__Proto__Common__V1__ArrayValue arr_t;
typedef Opentelemetry__Proto__Trace__V1__Span span_t;

/* ---- arena: everything of one body, released at once ---------------------- */

typedef struct blk_s {
  struct blk_s *next;
  size_t used, cap;
  char mem[];
} blk_t;
static blk_t *arena;

static void *amalloc(size_t n) {
  n = (n + 15) & ~(size_t)15;
  if (!arena || arena->used + n > arena->cap) {
    size_t cap = n > (1u << 20) ? n : (1u << 20);
    blk_t *b = malloc(sizeof *b + cap);
    if (!b) abort();
    b->next = arena;
    b->used = 0;
    b->cap = cap;
    arena = b;
  }
  void *p = arena->mem + arena->used;
  arena->used += n;
  memset(p, 0, n);
  return p;
}
static void arena_reset(void) {
  while (arena) {
    blk_t *n = arena->next;
    free(arena);
    arena = n;
  }
}
static char *astrdup(const char *s) {
  size_t n = strlen(s);
  char *p = amalloc(n + 1);
  memcpy(p, s, n + 1);
  return p;
}

/* ---- random ------------------------------------------------------------- */

static uint64_t rng = 0x243f6a8885a308d3ULL;
static uint64_t rnd(void) { /* xorshift64* */
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * 2685821657736338717ULL;
}
static int rint_(int lo, int hi) { return lo + (int)(rnd() % (uint64_t)(hi - lo + 1)); }
static double rdbl(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

static const char *words[] = {
    "the", "customer", "asked", "about", "refund", "policy", "for", "orders", "placed", "within",
    "thirty", "days", "and", "whether", "shipping", "costs", "are", "included", "in", "total",
    "retrieval", "context", "document", "section", "answer", "according", "to", "our", "terms",
    "service", "you", "can", "request", "a", "full", "or", "partial", "credit", "account",
    "please", "note", "that", "items", "marked", "final", "sale", "cannot", "be", "returned",
    "invoice", "number", "reference", "support", "ticket", "escalation", "priority", "summary",
    "model", "latency", "tokens", "embedding", "vector", "similarity", "score", "ranked", "chunk",
    "knowledge", "base", "article", "updated", "version", "warehouse", "delivery", "tracking",
    "status", "pending", "approved", "rejected", "manager", "review", "policy", "exception",
    "é", "naïve", "café", "résumé", "日本語", "😀", "\"quoted\"", "back\\slash", "tab\there",
};
#define NWORDS (sizeof words / sizeof words[0])

/* Text of about n bytes (words, some punctuation, occasional newline). */
static char *text(int n) {
  char *p = amalloc((size_t)n + 64);
  int len = 0;
  while (len < n) {
    const char *w = words[rnd() % NWORDS];
    size_t wl = strlen(w);
    memcpy(p + len, w, wl);
    len += (int)wl;
    uint64_t r = rnd() % 16;
    p[len++] = r == 0 ? '.' : r == 1 ? ',' : r == 2 ? '\n' : ' ';
  }
  p[len] = 0;
  return p;
}

static void hexid(char *out, int bytes) {
  static const char hx[] = "0123456789abcdef";
  for (int i = 0; i < bytes; i++) {
    uint8_t b = (uint8_t)rnd();
    out[2 * i] = hx[b >> 4];
    out[2 * i + 1] = hx[b & 15];
  }
  out[2 * bytes] = 0;
}
static char *uuid_text(void) {
  char h[33], *u = amalloc(37);
  hexid(h, 16);
  snprintf(u, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
  return u;
}

/* ---- attributes ------------------------------------------------------------ */

typedef struct {
  kv_t **v;
  size_t n, cap;
  size_t bytes; /* key + value bytes, for the size report */
} attrs_t;

static kv_t *push(attrs_t *a, const char *key) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 32;
    kv_t **v = amalloc(cap * sizeof *v);
    if (a->n) memcpy(v, a->v, a->n * sizeof *v);
    a->v = v;
    a->cap = cap;
  }
  kv_t *kv = amalloc(sizeof *kv);
  opentelemetry__proto__common__v1__key_value__init(kv);
  kv->key = astrdup(key);
  kv->value = amalloc(sizeof(any_t));
  opentelemetry__proto__common__v1__any_value__init(kv->value);
  a->v[a->n++] = kv;
  a->bytes += strlen(key);
  return kv;
}
static void s_(attrs_t *a, const char *k, const char *v) {
  kv_t *kv = push(a, k);
  kv->value->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
  kv->value->string_value = astrdup(v);
  a->bytes += strlen(v);
}
static void i_(attrs_t *a, const char *k, int64_t v) {
  kv_t *kv = push(a, k);
  kv->value->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
  kv->value->int_value = v;
  a->bytes += 6;
}
static void d_(attrs_t *a, const char *k, double v) {
  kv_t *kv = push(a, k);
  kv->value->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE;
  kv->value->double_value = v;
  a->bytes += 10;
}
static void b_(attrs_t *a, const char *k, int v) {
  kv_t *kv = push(a, k);
  kv->value->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE;
  kv->value->bool_value = v;
  a->bytes += 5;
}
static void sa_(attrs_t *a, const char *k, int n, int each) {
  kv_t *kv = push(a, k);
  kv->value->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE;
  arr_t *arr = amalloc(sizeof *arr);
  opentelemetry__proto__common__v1__array_value__init(arr);
  arr->n_values = (size_t)n;
  arr->values = amalloc((size_t)n * sizeof *arr->values);
  for (int i = 0; i < n; i++) {
    any_t *v = amalloc(sizeof *v);
    opentelemetry__proto__common__v1__any_value__init(v);
    v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
    v->string_value = each > 16 ? text(each) : astrdup(i == 0 ? "stop" : "length");
    a->bytes += strlen(v->string_value);
    arr->values[i] = v;
  }
  kv->value->array_value = arr;
}

enum { K_ROOT, K_CHAIN, K_CHAT, K_EMBED, K_QUERY, K_TOOL, K_RERANK };

static const char *models[] = {"gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet-20241022",
                               "gemini-1.5-pro", "llama-3.1-70b-instruct"};

/* Attributes of one span of kind k; sid/uid are the trace's session and user. */
static void span_attrs(attrs_t *a, int k, const char *sid, const char *uid) {
  char key[96];
  int in_tok = rint_(200, 4000), out_tok = rint_(20, 800);
  double cost = in_tok * 0.00000015 + out_tok * 0.0000006;
  s_(a, "ag.type.trace", "invocation");
  switch (k) {
  case K_ROOT:
    s_(a, "ag.type.span", "workflow");
    s_(a, "ag.session.id", sid);
    s_(a, "ag.user.id", uid);
    s_(a, "ag.refs.application.id", uuid_text());
    s_(a, "ag.refs.application.slug", "support-assistant");
    s_(a, "ag.refs.variant.slug", "rag-v3");
    i_(a, "ag.refs.variant.version", rint_(1, 40));
    s_(a, "ag.refs.environment.slug", "production");
    s_(a, "ag.data.inputs.question", text(rint_(120, 220)));
    s_(a, "ag.data.inputs.locale", "en-US");
    s_(a, "ag.data.outputs.answer", text(rint_(300, 450)));
    d_(a, "ag.metrics.acc.costs.total", cost * 4);
    i_(a, "ag.metrics.acc.tokens.prompt", in_tok * 3);
    i_(a, "ag.metrics.acc.tokens.completion", out_tok * 2);
    i_(a, "ag.metrics.acc.tokens.total", in_tok * 3 + out_tok * 2);
    d_(a, "ag.metrics.acc.duration.total", rdbl() * 8000);
    s_(a, "http.route", "/api/chat");
    s_(a, "http.request.method", "POST");
    break;
  case K_CHAIN:
    s_(a, "ag.type.span", "chain");
    s_(a, "ag.data.inputs.query", text(rint_(100, 200)));
    s_(a, "ag.data.inputs.context", text(rint_(250, 400)));
    s_(a, "ag.data.outputs.result", text(rint_(250, 400)));
    d_(a, "ag.metrics.acc.costs.total", cost * 2);
    i_(a, "ag.metrics.acc.tokens.total", in_tok + out_tok);
    break;
  case K_CHAT: {
    const char *m = models[rnd() % 5];
    s_(a, "ag.type.span", "chat");
    s_(a, "gen_ai.operation.name", "chat");
    s_(a, "gen_ai.system", strncmp(m, "gpt", 3) ? "anthropic" : "openai");
    s_(a, "gen_ai.request.model", m);
    d_(a, "gen_ai.request.temperature", 0.2);
    i_(a, "gen_ai.request.max_tokens", 1024);
    d_(a, "gen_ai.request.top_p", 0.95);
    s_(a, "gen_ai.response.model", m);
    char rid[40] = "chatcmpl-";
    hexid(rid + 9, 12);
    s_(a, "gen_ai.response.id", rid);
    sa_(a, "gen_ai.response.finish_reasons", 1, 0);
    i_(a, "gen_ai.usage.input_tokens", in_tok);
    i_(a, "gen_ai.usage.output_tokens", out_tok);
    s_(a, "gen_ai.prompt.0.role", "system");
    s_(a, "gen_ai.prompt.0.content", text(rint_(80, 160)));
    s_(a, "gen_ai.prompt.1.role", "user");
    s_(a, "gen_ai.prompt.1.content", text(rint_(150, 300)));
    s_(a, "gen_ai.completion.0.role", "assistant");
    s_(a, "gen_ai.completion.0.content", text(rint_(150, 350)));
    s_(a, "gen_ai.completion.0.finish_reason", "stop");
    d_(a, "ag.metrics.unit.costs.total", cost);
    i_(a, "ag.metrics.unit.tokens.prompt", in_tok);
    i_(a, "ag.metrics.unit.tokens.completion", out_tok);
    i_(a, "ag.metrics.unit.tokens.total", in_tok + out_tok);
    b_(a, "llm.is_streaming", (int)(rnd() & 1));
    break;
  }
  case K_EMBED:
    s_(a, "ag.type.span", "embedding");
    s_(a, "gen_ai.operation.name", "embeddings");
    s_(a, "gen_ai.system", "openai");
    s_(a, "gen_ai.request.model", "text-embedding-3-small");
    i_(a, "gen_ai.usage.input_tokens", in_tok / 4);
    sa_(a, "ag.data.inputs.texts", 3, rint_(120, 220));
    i_(a, "ag.data.outputs.dimensions", 1536);
    d_(a, "ag.metrics.unit.costs.total", in_tok * 0.00000002);
    i_(a, "ag.metrics.unit.tokens.total", in_tok / 4);
    break;
  case K_QUERY:
    s_(a, "ag.type.span", "query");
    s_(a, "ag.data.inputs.query", text(rint_(60, 140)));
    i_(a, "ag.data.inputs.top_k", 5);
    s_(a, "db.system", "pgvector");
    s_(a, "db.collection.name", "kb_articles");
    for (int i = 0; i < 3; i++) {
      snprintf(key, sizeof key, "ag.data.outputs.documents.%d.id", i);
      s_(a, key, uuid_text());
      snprintf(key, sizeof key, "ag.data.outputs.documents.%d.score", i);
      d_(a, key, 0.5 + rdbl() / 2);
      snprintf(key, sizeof key, "ag.data.outputs.documents.%d.content", i);
      s_(a, key, text(rint_(120, 220)));
    }
    break;
  case K_TOOL:
    s_(a, "ag.type.span", "tool");
    s_(a, "gen_ai.tool.name", rnd() & 1 ? "lookup_order" : "create_ticket");
    s_(a, "gen_ai.tool.call.id", uuid_text());
    s_(a, "ag.data.inputs.arguments", text(rint_(80, 200)));
    s_(a, "ag.data.outputs.result", text(rint_(300, 550)));
    d_(a, "ag.metrics.acc.duration.total", rdbl() * 900);
    break;
  case K_RERANK:
    s_(a, "ag.type.span", "rerank");
    s_(a, "gen_ai.request.model", "rerank-english-v3.0");
    s_(a, "ag.data.inputs.query", text(rint_(60, 140)));
    sa_(a, "ag.data.outputs.documents", 3, rint_(120, 220));
    d_(a, "ag.metrics.unit.costs.total", 0.002);
    break;
  }
}

static const char *names[] = {"workflow", "retrieve_and_answer", "chat openai", "embed", "vector_search",
                              "tool_call", "rerank"};
static const int kinds[] = {2, 1, 3, 3, 3, 1, 3}; /* SERVER, INTERNAL, CLIENT */

static uint64_t now_ns;
static size_t total_attr_bytes, total_spans;

/* One trace of n spans appended to spans[]; returns the trace's first span index. */
static void trace(span_t **spans, size_t *ns, int n, uint64_t t0) {
  uint8_t *tid = amalloc(16);
  for (int i = 0; i < 16; i++) tid[i] = (uint8_t)rnd();
  char sid[48], uid[48];
  snprintf(sid, sizeof sid, "sess-%016" PRIx64, rnd());
  snprintf(uid, sizeof uid, "user-%06d", rint_(1, 50000));
  uint64_t dur_root = (uint64_t)rint_(800, 9000) * 1000000ULL;
  size_t first = *ns;
  for (int i = 0; i < n; i++) {
    span_t *s = amalloc(sizeof *s);
    opentelemetry__proto__trace__v1__span__init(s);
    s->trace_id.len = 16;
    s->trace_id.data = tid;
    s->span_id.len = 8;
    s->span_id.data = amalloc(8);
    for (int j = 0; j < 8; j++) s->span_id.data[j] = (uint8_t)rnd();
    s->span_id.data[0] |= 1; /* never all zero */
    int k;
    if (i == 0) {
      k = K_ROOT;
    } else {
      uint64_t r = rnd() % 20;
      k = r < 3 ? K_CHAIN : r < 11 ? K_CHAT : r < 13 ? K_EMBED : r < 16 ? K_QUERY : r < 19 ? K_TOOL : K_RERANK;
    }
    if (i > 0) {
      /* parent: the root or an earlier chain span */
      size_t p = first;
      for (int tries = 0; tries < 3; tries++) {
        size_t c = first + (size_t)(rnd() % (uint64_t)i);
        if (!strcmp(spans[c]->name, names[K_CHAIN])) {
          p = c;
          break;
        }
      }
      s->parent_span_id = spans[p]->span_id;
    }
    s->name = (char *)names[k];
    s->kind = kinds[k];
    uint64_t off = i == 0 ? 0 : (uint64_t)(rdbl() * (double)dur_root * 0.8);
    uint64_t dur = i == 0 ? dur_root : (uint64_t)(rdbl() * (double)(dur_root - off)) + 1000;
    s->start_time_unix_nano = t0 + off;
    s->end_time_unix_nano = t0 + off + dur;
    attrs_t a = {0};
    span_attrs(&a, k, sid, uid);
    s->attributes = a.v;
    s->n_attributes = a.n;
    total_attr_bytes += a.bytes;
    total_spans++;
    s->status = amalloc(sizeof *s->status);
    opentelemetry__proto__trace__v1__status__init(s->status);
    if (rnd() % 50 == 0) { /* 2%: a failed call with an exception event */
      s->status->code = OPENTELEMETRY__PROTO__TRACE__V1__STATUS__STATUS_CODE__STATUS_CODE_ERROR;
      s->status->message = "upstream timeout";
      s->n_events = 1;
      s->events = amalloc(sizeof *s->events);
      Opentelemetry__Proto__Trace__V1__Span__Event *e = amalloc(sizeof *e);
      opentelemetry__proto__trace__v1__span__event__init(e);
      e->name = "exception";
      e->time_unix_nano = s->end_time_unix_nano;
      attrs_t ea = {0};
      s_(&ea, "exception.type", "TimeoutError");
      s_(&ea, "exception.message", "request to upstream timed out after 30s");
      s_(&ea, "exception.stacktrace", text(200));
      e->attributes = ea.v;
      e->n_attributes = ea.n;
      s->events[0] = e;
    } else {
      s->status->code = OPENTELEMETRY__PROTO__TRACE__V1__STATUS__STATUS_CODE__STATUS_CODE_OK;
    }
    spans[(*ns)++] = s;
  }
}

static void put_u32(FILE *f, uint32_t v) { fwrite(&v, 4, 1, f); }

int main(int argc, char **argv) {
  const char *out = NULL;
  int nbodies = 2000, per = 100;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
    else if (!strcmp(argv[i], "-n") && i + 1 < argc) nbodies = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-s") && i + 1 < argc) per = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--seed") && i + 1 < argc) rng ^= strtoull(argv[++i], NULL, 0) * 0x9e3779b97f4a7c15ULL;
    else {
      fprintf(stderr, "usage: gen -o FILE [-n BODIES] [-s SPANS_PER_BODY] [--seed N]\n");
      return 2;
    }
  }
  if (!out || nbodies < 1 || per < 5) {
    fprintf(stderr, "usage: gen -o FILE [-n BODIES] [-s SPANS_PER_BODY>=5] [--seed N]\n");
    return 2;
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  now_ns = (uint64_t)ts.tv_sec * 1000000000ULL - 3600ULL * 1000000000ULL; /* an hour ago */
  FILE *f = fopen(out, "wb");
  if (!f) {
    perror(out);
    return 1;
  }
  fwrite(WL_MAGIC, 1, 8, f);
  put_u32(f, (uint32_t)nbodies);
  put_u32(f, (uint32_t)per);
  size_t total_bytes = 0, ntraces = 0;
  uint8_t *buf = NULL;
  size_t bufcap = 0;
  for (int bi = 0; bi < nbodies; bi++) {
    span_t **spans = amalloc((size_t)per * sizeof *spans);
    size_t ns = 0;
    uint64_t t0 = now_ns + (uint64_t)bi * 50000000ULL;
    int rem = per;
    while (rem > 0) {
      int n = rem <= 20 ? rem : rint_(5, rem - 5 < 20 ? rem - 5 : 20);
      trace(spans, &ns, n, t0 + (uint64_t)ntraces % 1000 * 1000000ULL);
      rem -= n;
      ntraces++;
    }
    /* resource and scope */
    attrs_t ra = {0};
    s_(&ra, "service.name", "support-assistant");
    s_(&ra, "service.version", "3.14.2");
    s_(&ra, "deployment.environment", "production");
    s_(&ra, "telemetry.sdk.language", "python");
    s_(&ra, "telemetry.sdk.name", "opentelemetry");
    s_(&ra, "telemetry.sdk.version", "1.27.0");
    Opentelemetry__Proto__Resource__V1__Resource res = OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
    res.attributes = ra.v;
    res.n_attributes = ra.n;
    Opentelemetry__Proto__Common__V1__InstrumentationScope scope =
        OPENTELEMETRY__PROTO__COMMON__V1__INSTRUMENTATION_SCOPE__INIT;
    scope.name = "agenta";
    scope.version = "0.27.0";
    Opentelemetry__Proto__Trace__V1__ScopeSpans ss = OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
    ss.scope = &scope;
    ss.spans = spans;
    ss.n_spans = ns;
    Opentelemetry__Proto__Trace__V1__ScopeSpans *ssp = &ss;
    Opentelemetry__Proto__Trace__V1__ResourceSpans rs = OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
    rs.resource = &res;
    rs.scope_spans = &ssp;
    rs.n_scope_spans = 1;
    Opentelemetry__Proto__Trace__V1__ResourceSpans *rsp = &rs;
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest req =
        OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
    req.resource_spans = &rsp;
    req.n_resource_spans = 1;
    size_t len = opentelemetry__proto__collector__trace__v1__export_trace_service_request__get_packed_size(&req);
    if (len > bufcap) {
      bufcap = len * 2;
      buf = realloc(buf, bufcap);
      if (!buf) abort();
    }
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__pack(&req, buf);
    /* where the trace ids are: each span's trace_id field (tag 0x0a, length 16) */
    uint32_t *pos = amalloc(ns * sizeof *pos);
    uint32_t npos = 0;
    for (size_t i = 0; i < ns; i++) {
      const uint8_t *tid = spans[i]->trace_id.data;
      /* find this span's copy: search from the last position onwards */
      size_t from = npos ? pos[npos - 1] + 16 : 0;
      const uint8_t *hit = NULL;
      for (size_t o = from; o + 16 <= len; o++)
        if (buf[o] == tid[0] && !memcmp(buf + o, tid, 16) && o >= 2 && buf[o - 2] == 0x0a && buf[o - 1] == 16) {
          hit = buf + o;
          break;
        }
      if (!hit) {
        fprintf(stderr, "gen: trace id of span %zu not found in the packed body\n", i);
        return 1;
      }
      pos[npos++] = (uint32_t)(hit - buf);
    }
    put_u32(f, (uint32_t)len);
    put_u32(f, npos);
    fwrite(pos, 4, npos, f);
    fwrite(buf, 1, len, f);
    static const uint8_t zero[4];
    size_t off = (size_t)ftell(f);
    if (off % 4) fwrite(zero, 1, 4 - off % 4, f);
    total_bytes += len;
    arena_reset();
  }
  if (fclose(f) != 0) {
    perror(out);
    return 1;
  }
  free(buf);
  fprintf(stderr, "gen: %d bodies, %zu spans, %zu traces, %.1f KB per body, %.0f attribute bytes per span\n",
          nbodies, total_spans, ntraces, total_bytes / 1024.0 / nbodies,
          (double)total_attr_bytes / (double)total_spans);
  return 0;
}
