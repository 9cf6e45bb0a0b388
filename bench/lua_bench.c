/* lua_bench.c - in-process cost of the per-span Lua transform.
 *
 *   lua_bench -w WORKLOAD --scripts DIR --empty DIR [-b BODIES] [-i ITERATIONS]
 *
 * Decodes BODIES workload bodies (sg_otlp_decode_proto), then, ITERATIONS
 * times, runs sg_lua_transform over each decoded batch with the scripts in
 * DIR (the shipped lua/) and with an empty scripts directory, timing only
 * the sg_lua_transform call (a fresh decode before each call, untimed, so
 * every call sees spans exactly as the decoder makes them). Also times the
 * store-time rendering of the attributes column with and without the
 * nesting the default transform asks for (sg_json_dump_attributes), since
 * that is the other half of what the default script costs.
 *
 * Prints one JSON object: ns per span for each variant and the differences.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "decode.h"
#include "json_nest.h"
#include "lua_rt.h"
#include "span.h"
#include "workload.h"

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static sg_lua_rt_t *runtime(const char *dir, sg_config_t *cfg) {
  sg_config_defaults(cfg);
  free(cfg->scripts);
  cfg->scripts = strdup(dir);
  sg_buf_t err = SG_BUF_INIT;
  sg_lua_rt_t *rt = sg_lua_rt_new(cfg, &err);
  if (!rt) fprintf(stderr, "lua_bench: %s: %s\n", dir, err.data ? err.data : "?");
  sg_buf_free(&err);
  return rt;
}

typedef struct {
  uint64_t ns, spans, decode_ns;
  uint64_t dump_ns, dump_flat_ns, dump_bytes, dump_flat_bytes;
} res_t;

static int run(sg_lua_rt_t *rt, const wl_t *wl, int bodies, int iters, uint8_t *buf, res_t *r) {
  uint8_t pid[16] = {0x01, 0x90, 0xa3, 0xb4, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 0xbe};
  sg_buf_t err = SG_BUF_INIT, out = SG_BUF_INIT;
  memset(r, 0, sizeof *r);
  for (int it = 0; it < iters; it++) {
    for (int bi = 0; bi < bodies; bi++) {
      const wl_body_t *b = wl_render(wl, (uint64_t)bi, buf);
      sg_span_batch_t batch;
      sg_span_batch_init(&batch);
      uint64_t t0 = now_ns();
      if (sg_otlp_decode_proto(buf, b->len, &batch, &err) != 0) {
        fprintf(stderr, "lua_bench: decode: %s\n", err.data ? err.data : "?");
        return -1;
      }
      uint64_t t1 = now_ns();
      if (sg_lua_transform(rt, pid, &batch, NULL) != 0) {
        fprintf(stderr, "lua_bench: transform failed\n");
        return -1;
      }
      uint64_t t2 = now_ns();
      r->decode_ns += t1 - t0;
      r->ns += t2 - t1;
      r->spans += batch.n;
      if (it == 0) { /* store-time rendering, once per body is plenty */
        for (size_t i = 0; i < batch.n; i++) {
          sg_span_t *s = &batch.spans[i];
          int f = s->nest_attributes;
          sg_buf_reset(&out);
          uint64_t a = now_ns();
          sg_json_dump_attributes(s->attributes, (f & SG_LUA_NEST_RESOURCE) ? s->resource : NULL,
                                  (f & SG_LUA_NEST_ATTRS) ? SG_JSON_NEST : 0, &out);
          uint64_t m = now_ns();
          r->dump_bytes += out.len;
          sg_buf_reset(&out);
          uint64_t c = now_ns();
          sg_json_dump_attributes(s->attributes, NULL, 0, &out);
          uint64_t d = now_ns();
          r->dump_flat_bytes += out.len;
          r->dump_ns += m - a;
          r->dump_flat_ns += d - c;
        }
      }
      sg_span_batch_free(&batch);
    }
  }
  sg_buf_free(&err);
  sg_buf_free(&out);
  return 0;
}

int main(int argc, char **argv) {
  const char *wpath = NULL, *scripts = "lua", *empty = NULL;
  int bodies = 50, iters = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *a = argv[i], *v = argv[i + 1];
    if (!strcmp(a, "-w")) wpath = v;
    else if (!strcmp(a, "--scripts")) scripts = v;
    else if (!strcmp(a, "--empty")) empty = v;
    else if (!strcmp(a, "-b")) bodies = atoi(v);
    else if (!strcmp(a, "-i")) iters = atoi(v);
    else {
      fprintf(stderr, "lua_bench: unknown option %s\n", a);
      return 2;
    }
  }
  if (!wpath || !empty || bodies < 1 || iters < 1) {
    fprintf(stderr, "usage: lua_bench -w WORKLOAD --scripts DIR --empty DIR [-b BODIES] [-i ITERATIONS]\n");
    return 2;
  }
  wl_t wl;
  if (wl_load(wpath, &wl) != 0) return 1;
  if ((uint32_t)bodies > wl.n) bodies = (int)wl.n;
  uint8_t *buf = malloc(wl_max_len(&wl));
  sg_config_t c1, c2;
  sg_lua_rt_t *rt_def = runtime(scripts, &c1), *rt_empty = runtime(empty, &c2);
  if (!rt_def || !rt_empty) return 1;
  if (!(sg_lua_rt_hooks(rt_def) & SG_LUA_HOOK_TRANSFORM)) {
    fprintf(stderr, "lua_bench: %s has no transform hook\n", scripts);
    return 1;
  }
  res_t warm, d, e;
  /* warm-up (page faults, string interning, allocator) */
  if (run(rt_def, &wl, bodies, 2, buf, &warm) || run(rt_empty, &wl, bodies, 2, buf, &warm)) return 1;
  /* alternate the two so drift (frequency, noise) hits both alike */
  res_t acc_d = {0}, acc_e = {0};
  for (int round = 0; round < 4; round++) {
    if (run(rt_def, &wl, bodies, iters / 4 + 1, buf, &d) || run(rt_empty, &wl, bodies, iters / 4 + 1, buf, &e))
      return 1;
    acc_d.ns += d.ns, acc_d.spans += d.spans, acc_d.decode_ns += d.decode_ns;
    acc_d.dump_ns += d.dump_ns, acc_d.dump_flat_ns += d.dump_flat_ns;
    acc_d.dump_bytes += d.dump_bytes, acc_d.dump_flat_bytes += d.dump_flat_bytes;
    acc_e.ns += e.ns, acc_e.spans += e.spans;
  }
  sg_lua_stats_t st;
  sg_lua_rt_stats(rt_def, &st);
  double ns_def = (double)acc_d.ns / (double)acc_d.spans;
  double ns_empty = (double)acc_e.ns / (double)acc_e.spans;
  double dn = (double)acc_d.dump_ns / (double)(acc_d.spans / (iters / 4 + 1));
  double df = (double)acc_d.dump_flat_ns / (double)(acc_d.spans / (iters / 4 + 1));
  printf("{\"spans_timed\":%" PRIu64 ",\"transform_ns_per_span\":%.1f,\"empty_ns_per_span\":%.1f,"
         "\"lua_ns_per_span\":%.1f,\"decode_ns_per_span\":%.1f,"
         "\"attr_dump_nested_ns_per_span\":%.1f,\"attr_dump_flat_ns_per_span\":%.1f,"
         "\"nesting_extra_ns_per_span\":%.1f,\"attr_bytes_nested\":%.0f,\"attr_bytes_flat\":%.0f,"
         "\"hook_errors\":%" PRIu64 "}\n",
         acc_d.spans, ns_def, ns_empty, ns_def - ns_empty, (double)acc_d.decode_ns / (double)acc_d.spans, dn, df,
         dn - df, (double)acc_d.dump_bytes / (double)(acc_d.spans / (iters / 4 + 1)),
         (double)acc_d.dump_flat_bytes / (double)(acc_d.spans / (iters / 4 + 1)), st.errors);
  sg_lua_rt_free(rt_def);
  sg_lua_rt_free(rt_empty);
  sg_config_free(&c1);
  sg_config_free(&c2);
  free(buf);
  return 0;
}
