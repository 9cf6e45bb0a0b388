/* lua_hooks.c - what each kind of transform.lua costs per span, in
 * process: no script, `return s`, the shipped one (M.span =
 * gw.agenta.normalize), a Lua M.span that calls the built-in, and the same
 * steps in Lua (M.normalize); plus the store-time dump of the attributes
 * flat and nested. The numbers in docs/lua.md's "Performance" table.
 *
 *   lua_hooks [-r ROUNDS] [--scripts DIR]     (from the repository root)
 *
 * Each round transforms a batch of 1000 fresh deep copies of a realistic
 * span (sharing one resource, as the decoders do); prints the median over
 * the rounds of the batch's thread CPU time per span (the mean wall clock
 * in brackets). --scripts DIR adds a line for the scripts in DIR.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "json_nest.h"
#include "lua_rt.h"
#include "span.h"

static const uint8_t PROJECT[16] = {0x01, 0x93, 0x4b, 0x7e, 0x12, 0x34, 0x70, 0x00,
                                    0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01};

static const char REALISTIC[] =
    "{\"ag.type.trace\":\"invocation\",\"ag.type.span\":\"llm\","
    "\"gen_ai.system\":\"openai\",\"gen_ai.request.model\":\"gpt-4o-mini\","
    "\"gen_ai.request.temperature\":0.7,\"gen_ai.request.max_tokens\":512,"
    "\"gen_ai.usage.prompt_tokens\":412,\"gen_ai.usage.completion_tokens\":96,"
    "\"gen_ai.response.id\":\"chatcmpl-9a8b7c6d5e4f3a2b1c0d\","
    "\"ag.session.id\":\"session-7f3a9c2e\",\"ag.user.id\":\"user-4411\","
    "\"ag.data.inputs.prompt\":\"You are a helpful assistant. Answer the user's question about the "
    "quarterly report concisely, citing the relevant section numbers. The report covers revenue, "
    "operating costs, headcount changes, and the outlook for the next two quarters, including risks "
    "related to supply chain constraints and currency fluctuations in the European market. Keep the "
    "answer under two hundred words and use bullet points where helpful for readability.\","
    "\"ag.data.outputs.completion.0.role\":\"assistant\","
    "\"ag.data.outputs.completion.0.content\":\"Revenue grew 12% (section 2.1); costs rose 4%.\","
    "\"ag.meta.request.stream\":false,\"llm.is_streaming\":false}";

static const char RESOURCE[] =
    "{\"service.name\":\"checkout\",\"service.version\":\"1.4.2\",\"telemetry.sdk.language\":"
    "\"python\",\"telemetry.sdk.name\":\"opentelemetry\",\"telemetry.sdk.version\":\"1.27.0\","
    "\"host.name\":\"ip-10-0-3-17\"}";

static void die(const char *what, const char *why) {
  fprintf(stderr, "lua_hooks: %s: %s\n", what, why ? why : "?");
  exit(1);
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* CPU time of this thread: on a shared machine, time other processes take
 * from us is not counted (cache contention still is). */
static double cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* A runtime from dir, or from a scratch directory holding transform.lua =
 * text (none when text is NULL). */
static sg_lua_rt_t *runtime(const char *dir, const char *text) {
  char tmp[] = "/tmp/sg_lua_hooks_XXXXXX", path[64];
  if (dir == NULL) {
    if (!mkdtemp(tmp)) die("mkdtemp", "failed");
    dir = tmp;
    snprintf(path, sizeof path, "%s/transform.lua", tmp);
    if (text) {
      FILE *f = fopen(path, "w");
      if (!f || fputs(text, f) < 0 || fclose(f) != 0) die(path, "cannot write");
    }
  }
  sg_config_t cfg;
  sg_config_defaults(&cfg);
  free(cfg.scripts);
  cfg.scripts = strdup(dir);
  sg_buf_t err = SG_BUF_INIT;
  sg_lua_rt_t *rt = sg_lua_rt_new(&cfg, &err);
  if (!rt) die(dir, err.data);
  sg_buf_free(&err);
  sg_config_free(&cfg);
  if (dir == tmp) {
    if (text) unlink(path);
    rmdir(tmp);
  }
  return rt;
}

/* ns/span of sg_lua_transform over batches of 1000 copies of span: the
 * median over rounds of the batch's thread CPU time; the mean wall clock
 * in *mean. */
static double measure(sg_lua_rt_t *rt, const sg_span_t *span, int rounds, double *mean) {
  enum { N = 1000 };
  double total = 0, *per = calloc((size_t)rounds, sizeof *per);
  if (!per) die("measure", "out of memory");
  for (int r = 0; r < rounds; r++) {
    sg_span_batch_t b;
    sg_span_batch_init(&b);
    for (int i = 0; i < N; i++) {
      sg_span_t *d = sg_span_batch_push(&b);
      if (!d || sg_span_copy(d, span) != 0) die("copy", "out of memory");
      json_decref(d->resource);
      d->resource = json_incref(span->resource); /* shared, as decoders do */
    }
    double t0 = now_ns(), c0 = cpu_ns();
    size_t errs;
    if (sg_lua_transform(rt, PROJECT, &b, &errs) != 0 || errs != 0 || b.n != N)
      die("sg_lua_transform", "failed");
    per[r] = (cpu_ns() - c0) / N;
    total += now_ns() - t0;
    sg_span_batch_free(&b);
  }
  qsort(per, (size_t)rounds, sizeof *per, cmp_double);
  double med = per[rounds / 2];
  free(per);
  *mean = total / ((double)rounds * N);
  return med;
}

int main(int argc, char **argv) {
  int rounds = 200;
  const char *dir = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-r") && i + 1 < argc) rounds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--scripts") && i + 1 < argc) dir = argv[++i];
    else die("usage", "lua_hooks [-r ROUNDS] [--scripts DIR]");
  }
  if (rounds < 1) rounds = 1;
  /* name, transform.lua text (NULL: none; "" the shipped lua/) */
  static const struct {
    const char *name, *script;
  } cases[] = {
      {"no script", NULL},
      {"identity", "return { span = function(s, ctx) return s end }"},
      {"default", ""},
      {"default from Lua", /* a custom M.span that calls the built-in */
       "local gw = require('gw')\n"
       "local normalize = gw.agenta.normalize\n"
       "return { span = function(s, ctx) return normalize(s, ctx) end }"},
      {"default in Lua", /* the shipped M.normalize, by hand */
       "local gw = require('gw')\n"
       "local saved = gw.agenta\n"
       "gw.agenta = nil\n"
       "local M = dofile('lua/transform.lua')\n"
       "gw.agenta = saved\n"
       "return M\n"},
  };
  sg_span_t span;
  memset(&span, 0, sizeof span);
  sg_id_parse("0af7651916cd43dd8448eb211c80319c", 32, span.trace_id);
  sg_id_parse("00f067aa0ba902b7", 16, span.span_id);
  span.span_name = strdup("chat gpt-4o-mini");
  span.start_us = 1700000000000000LL;
  span.end_us = 1700000000123456LL;
  span.span_kind = SG_SPAN_KIND_SERVER;
  span.trace_type = span.span_type = SG_NULL_ENUM;
  span.attributes = json_loads(REALISTIC, 0, NULL);
  span.resource = json_loads(RESOURCE, 0, NULL);
  if (!span.span_name || !span.attributes || !span.resource) die("span", "out of memory");

  printf("ns/span (median thread CPU time over %d rounds of 1000 spans; mean wall clock), "
         "attributes %zu bytes:\n", rounds, strlen(REALISTIC));
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    const char *s = cases[c].script;
    sg_lua_rt_t *rt = s && !s[0] ? runtime("lua", NULL) : runtime(NULL, s);
    double mean, med = measure(rt, &span, rounds, &mean);
    printf("  %-18s %6.0f (%.0f)\n", cases[c].name, med, mean);
    sg_lua_rt_free(rt);
  }
  if (dir) {
    sg_lua_rt_t *rt = runtime(dir, NULL);
    double mean, med = measure(rt, &span, rounds, &mean);
    printf("  %-18s %6.0f (%.0f)\n", dir, med, mean);
    sg_lua_rt_free(rt);
  }
  /* the cost of the nested dump the writers pay */
  sg_buf_t b = SG_BUF_INIT;
  double dumps[2];
  for (int nest = 0; nest < 2; nest++) {
    double t0 = cpu_ns();
    for (int i = 0; i < rounds * 100; i++) {
      sg_buf_reset(&b);
      sg_json_dump(span.attributes, nest ? SG_JSON_NEST : 0, &b);
    }
    dumps[nest] = (cpu_ns() - t0) / (rounds * 100.0);
  }
  printf("  attributes dump: flat %.0f, nested %.0f\n", dumps[0], dumps[1]);
  sg_buf_free(&b);
  sg_span_clear(&span);
  return 0;
}
