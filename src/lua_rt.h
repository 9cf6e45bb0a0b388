/* lua_rt.h - the per-worker Lua runtime: the operator's scripts
 * (transform.lua, routing.lua, ttl.lua) loaded and checked in one LuaJIT
 * state, and the hooks the ingest pipeline calls.
 *
 * One runtime per worker thread, never shared (OpenResty's model). A reload
 * builds a fresh runtime with sg_lua_rt_new() and, when that succeeds, the
 * worker swaps it in between requests and frees the old one; a runtime that
 * fails to build leaves the running one untouched.
 *
 * Scripts (in cfg->scripts):
 *   transform.lua  M.span(span, ctx) -> span | nil (drop) | {span, ...}
 *   routing.lua    M.clickhouse(project_id) -> boolean
 *                  M.postgres(project_id) -> boolean
 *                  M.read_backend(query, project_id, endpoint) -> "postgres" | "clickhouse"
 *   ttl.lua        M.retention_days(project_id, span) -> days | nil (forever)
 * A missing file, or a hook the module does not define, means the default:
 * transform keeps the span as it is, clickhouse and postgres are true, read_backend is
 * "postgres", retention_days is nil. A file that exists must load: a syntax
 * error, a runtime error in the chunk, a chunk that does not return a table,
 * or a hook that is not a function fails sg_lua_rt_new() with
 * "lua/transform.lua:12: ..." in err.
 *
 * Hooks run interpreted (the JIT compiler is off in these states) under an
 * instruction budget (cfg->script_budget per hook call): a JIT-compiled loop
 * never returns to the interpreter, so LuaJIT's count hook could not stop
 * `while true do end`. A hook that errors or runs out of budget is logged
 * (component "lua", with its traceback, at most one line per second per
 * runtime plus a count of the lines suppressed) and counted; the state stays
 * usable; once the budget is spent every further instruction of that call
 * fails too, so a script cannot catch the error with pcall and loop on.
 * See docs/lua.md.
 */
#ifndef SG_LUA_RT_H
#define SG_LUA_RT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "span.h"

typedef struct sg_lua_rt_s sg_lua_rt_t;

/* Counters of one runtime, for /metrics (the worker adds them up). */
typedef struct {
  uint64_t calls;         /* hook calls (every hook) */
  uint64_t errors;        /* hook calls that failed, budget kills included */
  uint64_t budget_kills;  /* hook calls stopped by the instruction budget */
  uint64_t spans_dropped; /* transform returned nil */
  uint64_t spans_added;   /* extra spans from fan-out */
  uint64_t spans_rejected;/* failed transforms with on_script_error=reject */
  uint64_t log_suppressed;/* error lines not written by the rate limit */
} sg_lua_stats_t;

/* Build a runtime from cfg (cfg is read here only: what is needed is
 * copied). NULL on failure with a one-line reason in err (appended), e.g.
 * "lua/routing.lua:3: '=' expected near 'x'". */
sg_lua_rt_t *sg_lua_rt_new(const sg_config_t *cfg, sg_buf_t *err);
void sg_lua_rt_free(sg_lua_rt_t *rt);

/* Which hooks the scripts define (the others fall back to the defaults). */
#define SG_LUA_HOOK_TRANSFORM 1
#define SG_LUA_HOOK_CLICKHOUSE 2
#define SG_LUA_HOOK_READ_BACKEND 4
#define SG_LUA_HOOK_RETENTION 8
#define SG_LUA_HOOK_POSTGRES 16
int sg_lua_rt_hooks(const sg_lua_rt_t *rt);

/* Run transform.lua over every span of b, in order. A span the hook returns
 * stays (changed in place); nil drops it; a list replaces it by the spans
 * listed (the input span and/or copies, in the list's order). A span whose
 * hook fails is restored exactly as it came and, per cfg->on_script_error,
 * kept ("pass") or removed and counted in b->rejected with the reason
 * "span N: rejected by the transform script" ("reject"). *errors (may be
 * NULL) receives the number of failed hook calls. Every span that comes out
 * of the hook has nest_attributes set (the flags below; 0 for a span whose
 * hook failed). Without a transform hook the batch is not touched. Returns
 * 0, or SG_ENOMEM (the batch is then still consistent: every span is owned
 * exactly once). When M.span is gw.agenta.normalize itself it runs as C,
 * without entering Lua (same results, counters and failure handling). */
int sg_lua_transform(sg_lua_rt_t *rt, const uint8_t project_id[16], sg_span_batch_t *b,
                     size_t *errors);

/* Store-time flags sg_lua_transform() leaves in b->spans[i].nest_attributes
 * (the same bits as SG_SPAN_NEST_*), set by gw.attributes.nest(span [,
 * with_resource]):
 *   SG_LUA_NEST_ATTRS     dump the attributes with SG_JSON_NEST;
 *   SG_LUA_NEST_RESOURCE  add the span's resource as attributes.resource.
 * The writers render the column with
 *   sg_json_dump_attributes(s->attributes,
 *       (f & SG_LUA_NEST_RESOURCE) ? s->resource : NULL,
 *       (f & SG_LUA_NEST_ATTRS) ? SG_JSON_NEST : 0, out). */
#define SG_LUA_NEST_ATTRS 1
#define SG_LUA_NEST_RESOURCE 2

/* Is project_id written to ClickHouse? Always 0 when use_clickhouse is off
 * (the hook is not asked); the hook's answer is cached per project for the
 * life of the runtime. On a hook error: SG_ESCRIPT and *on = 1 (the
 * default). */
int sg_lua_route_clickhouse(sg_lua_rt_t *rt, const uint8_t project_id[16], int *on);

/* Are project_id's spans written to PostgreSQL? 0 only for a project cut
 * over to ClickHouse (docs/cutover.md): use_clickhouse on, M.clickhouse
 * true and M.postgres false. The hook's answer is cached per project for
 * the life of the runtime. On a hook error, or when M.postgres says false
 * for a project M.clickhouse keeps out of ClickHouse (the spans would go
 * nowhere): SG_ESCRIPT and *on = 1, not cached. */
int sg_lua_route_postgres(sg_lua_rt_t *rt, const uint8_t project_id[16], int *on);

#define SG_READ_POSTGRES 0
#define SG_READ_CLICKHOUSE 1
/* The store that serves a read: M.read_backend(query, project_id, endpoint)
 * with endpoint "trace", "query" or "analytics" (scripts written for two
 * arguments read query.endpoint, which is the same). On a hook error or an
 * unknown answer: SG_ESCRIPT and *backend = postgres. */
int sg_lua_read_backend(sg_lua_rt_t *rt, const uint8_t project_id[16], const json_t *query,
                        const char *endpoint, int *backend);

/* Retention of one (already transformed) span: *days > 0, or -1 = keep
 * forever (the hook returned nil or 0). On a hook error: SG_ESCRIPT and
 * *days = -1. */
int sg_lua_retention_days(sg_lua_rt_t *rt, const uint8_t project_id[16], const sg_span_t *s,
                          double *days);

void sg_lua_rt_stats(const sg_lua_rt_t *rt, sg_lua_stats_t *out);

/* gw.metrics.incr/gauge values of this runtime: cb is called once per
 * metric (kind 'c' counter, 'g' gauge) in creation order; stops and returns
 * cb's value when it is not 0. A seam for the tests; /metrics gets the
 * values through sg_lua_rt_publish_metrics. */
typedef int (*sg_lua_metric_cb)(const char *name, char kind, double value, void *ud);
int sg_lua_rt_metrics(const sg_lua_rt_t *rt, sg_lua_metric_cb cb, void *ud);

/* Adds this runtime's gw.metrics changes since the last call to /metrics'
 * process-wide sums (metrics.h). Call it from the runtime's thread, now and
 * then. retire: the runtime is about to be freed (a reload); its gauges are
 * taken out of the sums, its counters stay (they counted real events). */
void sg_lua_rt_publish_metrics(sg_lua_rt_t *rt, int retire);

/* The state, for the runner that calls the job's script (job.c). */
struct lua_State;
struct lua_State *sg_lua_rt_state(sg_lua_rt_t *rt);

/* What a runtime gets beyond cfg. inject (may be NULL) adds functions to
 * the gw table at the top of L's stack, after gw's own and before the
 * scripts load; it may raise a Lua error, which fails sg_lua_rt_new_opts()
 * with the message in err. Jobs add their I/O this way (lua_io.h); without
 * it gw.pg, gw.ch, gw.sleep and the task functions raise "only available
 * to jobs". */
typedef struct {
  void (*inject)(struct lua_State *L, void *ud);
  void *inject_ud;
} sg_lua_rt_opts_t;

/* sg_lua_rt_new() with opts (NULL: none). */
sg_lua_rt_t *sg_lua_rt_new_opts(const sg_config_t *cfg, const sg_lua_rt_opts_t *opts, sg_buf_t *err);

#endif
