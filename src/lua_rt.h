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
 *                  M.read_backend(query, project_id) -> "postgres" | "clickhouse"
 *   ttl.lua        M.retention_days(project_id, span) -> days | nil (forever)
 * A missing file, or a hook the module does not define, means the default:
 * transform keeps the span as it is, clickhouse is true, read_backend is
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

/* Store-time flags of b->spans[i] after the last sg_lua_transform() on b,
 * set by gw.attributes.nest(span [, with_resource]):
 *   SG_LUA_NEST_ATTRS     dump the attributes with SG_JSON_NEST;
 *   SG_LUA_NEST_RESOURCE  add the span's resource as attributes.resource.
 * The writers render the column with
 *   sg_json_dump_attributes(s->attributes,
 *       (f & SG_LUA_NEST_RESOURCE) ? s->resource : NULL,
 *       (f & SG_LUA_NEST_ATTRS) ? SG_JSON_NEST : 0, out).
 * sg_lua_transform() also stores them in b->spans[i].nest_attributes (same
 * bit values as SG_SPAN_NEST_*); this accessor is kept for compatibility.
 * 0 for indexes out of range. */
#define SG_LUA_NEST_ATTRS 1
#define SG_LUA_NEST_RESOURCE 2
int sg_lua_span_nested(const sg_lua_rt_t *rt, size_t i);

/* Is project_id written to ClickHouse? Always 0 when use_clickhouse is off
 * (the hook is not asked); the hook's answer is cached per project for the
 * life of the runtime. On a hook error: SG_ESCRIPT and *on = 1 (the
 * default). */
int sg_lua_route_clickhouse(sg_lua_rt_t *rt, const uint8_t project_id[16], int *on);

#define SG_READ_POSTGRES 0
#define SG_READ_CLICKHOUSE 1
/* The store that serves a read (query: the request's JSON body or NULL). On
 * a hook error or an unknown answer: SG_ESCRIPT and *backend = postgres. */
int sg_lua_read_backend(sg_lua_rt_t *rt, const uint8_t project_id[16], const json_t *query,
                        int *backend);

/* Retention of one (already transformed) span: *days > 0, or -1 = keep
 * forever (the hook returned nil or 0). On a hook error: SG_ESCRIPT and
 * *days = -1. */
int sg_lua_retention_days(sg_lua_rt_t *rt, const uint8_t project_id[16], const sg_span_t *s,
                          double *days);

void sg_lua_rt_stats(const sg_lua_rt_t *rt, sg_lua_stats_t *out);

/* gw.metrics.incr/gauge values of this runtime: cb is called once per
 * metric (kind 'c' counter, 'g' gauge) in creation order; stops and returns
 * cb's value when it is not 0. */
typedef int (*sg_lua_metric_cb)(const char *name, char kind, double value, void *ud);
int sg_lua_rt_metrics(const sg_lua_rt_t *rt, sg_lua_metric_cb cb, void *ud);

/* Adds this runtime's gw.metrics changes since the last call to /metrics'
 * process-wide sums (metrics.h). Call it from the runtime's thread, now and
 * then. retire: the runtime is about to be freed (a reload); its gauges are
 * taken out of the sums, its counters stay (they counted real events). */
void sg_lua_rt_publish_metrics(sg_lua_rt_t *rt, int retire);

/* The state, for the file that injects gw.pg / gw.ch / gw.sleep (jobs). */
struct lua_State;
struct lua_State *sg_lua_rt_state(sg_lua_rt_t *rt);

/* Implemented by the I/O binding (not in this file set): adds gw.pg.query,
 * gw.ch.query/insert and gw.sleep to the gw table at the top of the stack.
 * sg_lua_rt_new() calls the injector registered here, if any, before the
 * scripts load; the hooks above never yield, so I/O functions are meant for
 * jobs running in coroutines. */
typedef void (*sg_lua_io_injector_t)(struct lua_State *L, void *ud);
void sg_lua_set_io_injector(sg_lua_io_injector_t fn, void *ud);

/* ---- internal: shared by lua_rt.c, lua_span.c and lua_gw.c ------------------ */
#ifdef SG_LUA_INTERNAL
#include <lua.h>

/* A proxy: the Lua face of a span or a JSON container. */
enum { SG_PX_SPAN = 0x5350, SG_PX_JSON = 0x4a53 };
#define SG_PXF_READONLY 1 /* assignments raise an error */
#define SG_PXF_OWNED 2    /* holds a reference released by __gc (gw.json.decode) */

typedef struct sg_lua_slot_s sg_lua_slot_t;

typedef struct {
  uint16_t tag;     /* SG_PX_SPAN or SG_PX_JSON */
  uint16_t flags;
  uint32_t gen;     /* rt->hook_gen (mutable) or rt->call_gen (read-only) at creation */
  sg_lua_rt_t *rt;
  union {
    sg_lua_slot_t *slot; /* SG_PX_SPAN */
    json_t *json;        /* SG_PX_JSON */
  } u;
} sg_lua_proxy_t;

/* A span under a hook: the record plus its nest flag, and what it looked
 * like when the hook started (to restore it when the hook fails). */
struct sg_lua_slot_s {
  sg_span_t *s;
  uint8_t nest;
  uint8_t owned;     /* a copy made by the hook (s is malloc'd, freed unless kept) */
  sg_span_t orig;    /* shallow snapshot at hook start */
  uint8_t orig_nest;
  sg_lua_slot_t *next_copy;
};

/* Undo log entry for a JSON container changed under a hook. */
typedef struct {
  int op;          /* see lua_span.c */
  json_t *c;       /* the container (referenced) */
  json_t *old;     /* previous value / shallow snapshot (referenced) or NULL */
  size_t idx;      /* array index, or key offset in rt->undo_keys */
  size_t klen;
} sg_lua_undo_t;

typedef struct {
  char *name;
  char kind;
  double v;
  int slot;      /* in metrics.h's table; SG_LUA_SLOT_NEW until asked, -1 when refused */
  double pub;    /* the value last added to that slot */
} sg_lua_metric_t;
#define SG_LUA_SLOT_NEW (-100)

typedef struct {
  uint8_t id[16];
  int8_t used, on;
} sg_lua_route_ent_t;

struct sg_lua_rt_s {
  lua_State *L;
  sg_lua_stats_t st;
  int budget;
  int reject_on_error;
  int use_clickhouse;
  int hooks;
  int ref_transform, ref_clickhouse, ref_read_backend, ref_retention, ref_traceback;
  int ref_ctx, ref_ctx_data;      /* the transform's ctx and its backing table */
  int ref_mk_i64, ref_i64_str;    /* FFI helpers: pointer -> int64 cdata, cdata -> string */
  int ref_mt_span, ref_mt_json, ref_mt_json_gc, ref_mt_array, ref_mt_object;
  const void *mt_ptr[3];          /* the three proxy metatables, for identity checks */
  /* Interned (and anchored) field names and enum labels: LuaJIT interns
   * every string, so a key is matched by comparing pointers. */
  const char *field_ptr[24];
  const char *label_ptr[4][16];
  uint32_t hook_gen, call_gen;
  int budget_hit;
  int in_hook;                    /* 1 while a hook runs: proxies may be made */
  /* Per API call: references held while proxies may point at values. */
  json_t **pins;
  size_t npins, cappins;
  /* Per hook call: undo log and the copies the hook made. */
  sg_lua_undo_t *undo;
  size_t nundo, capundo;
  sg_buf_t undo_keys;
  sg_lua_slot_t *copies;
  sg_lua_slot_t *cur;             /* the input span of the running hook */
  /* Values shared read-only (ctx.resource, ctx.scope, nested resource). */
  json_t *frozen[4];
  json_t *nest_src, *nest_val;    /* gw.attributes.nested() one-entry cache */
  /* Nest flags of the last transformed batch. */
  uint8_t *nest;
  size_t nest_n, nest_cap;
  /* sg_lua_transform: the spans one hook call returned (scratch, kept
   * across calls), whether that is just the input span (tx_self), and the
   * output array once a fan-out outgrew the batch in place (tx_sep). */
  sg_span_t *tx_out;
  uint8_t *tx_nest;
  size_t tx_n, tx_cap;
  int tx_self, tx_sep;
  sg_span_t *out;
  size_t out_cap;
  int tx_builtin;                 /* M.span is gw.agenta.normalize itself */
  /* Error log rate limit. */
  int64_t log_sec;
  uint64_t log_supp_pending;
  /* gw.metrics */
  sg_lua_metric_t *metrics;
  size_t nmetrics, capmetrics;
  /* routing cache (open addressing on the project id) */
  sg_lua_route_ent_t *routes;
  size_t nroutes, caproutes;
};

/* lua_span.c */
int sg__lua_span_init(lua_State *L, sg_lua_rt_t *rt);  /* metatables, FFI helpers */
void sg__lua_push_span(lua_State *L, sg_lua_rt_t *rt, sg_lua_slot_t *slot, int readonly);
void sg__lua_push_json(lua_State *L, sg_lua_rt_t *rt, json_t *v, int flags);
/* Lua value at idx -> new JSON reference; raises a Lua error when it cannot be
 * converted (what names the place, e.g. "attributes.x"). */
json_t *sg__lua_to_json(lua_State *L, sg_lua_rt_t *rt, int idx, const char *what);
sg_lua_proxy_t *sg__lua_test_proxy(lua_State *L, int idx);
sg_lua_proxy_t *sg__lua_test_proxy_rt(lua_State *L, int idx, sg_lua_rt_t *rt); /* rt of L known */
json_t *sg__lua_check_json_proxy(lua_State *L, int idx, int writable);
sg_lua_slot_t *sg__lua_check_span(lua_State *L, int idx, int writable);
sg_lua_slot_t *sg__lua_check_span_rt(lua_State *L, int idx, int writable, sg_lua_rt_t *rt);
void sg__lua_pin(sg_lua_rt_t *rt, json_t *v);   /* raises on ENOMEM is avoided: best effort */
void sg__lua_unpin_all(sg_lua_rt_t *rt);
/* Hook bracket for one span: snapshot / commit / rollback. */
void sg__lua_slot_begin(sg_lua_rt_t *rt, sg_lua_slot_t *slot);
void sg__lua_slot_commit(sg_lua_rt_t *rt, sg_lua_slot_t *slot);
void sg__lua_slot_rollback(sg_lua_rt_t *rt, sg_lua_slot_t *slot);
void sg__lua_undo_commit(sg_lua_rt_t *rt);
void sg__lua_undo_rollback(sg_lua_rt_t *rt);
/* A new copy of src under the running hook (owned slot), raises on ENOMEM. */
sg_lua_slot_t *sg__lua_copy_slot(lua_State *L, sg_lua_rt_t *rt, const sg_lua_slot_t *src);
/* Set span field `name` from the value at idx (same rules as span.name = v). */
void sg__lua_span_set(lua_State *L, sg_lua_slot_t *slot, const char *name, int idx);
/* Push int64 as a Lua number when |v| <= 2^53, else as int64 cdata. */
void sg__lua_push_int64(lua_State *L, sg_lua_rt_t *rt, int64_t v);
/* Value at idx as an exact int64 (number with an integral value or int64
 * cdata); 0 when it is not one. */
int sg__lua_to_int64(lua_State *L, sg_lua_rt_t *rt, int idx, int64_t *out);

/* Agenta's normalisation of the span in slot (gw.agenta.normalize; the
 * default transform.lua's steps), pure C, no Lua. with_resource: the hook's
 * ctx has a resource. 0, or SG_ENOMEM / SG_EINVAL (attributes not an
 * object) with *err set; the caller then rolls the slot back. */
int sg__lua_agenta_normalize(sg_lua_rt_t *rt, sg_lua_slot_t *slot, int with_resource,
                             const char **err);

/* lua_gw.c */
void sg__lua_inject_gw_api(lua_State *L, sg_lua_rt_t *rt, const sg_config_t *cfg);
sg_lua_rt_t *sg__lua_rt_of(lua_State *L);
/* Is the value at idx gw.agenta.normalize itself? (sg_lua_transform then
 * runs it without entering Lua.) */
int sg__lua_is_builtin_normalize(lua_State *L, int idx);
int sg__lua_check_null(lua_State *L, int idx);  /* gw.null? */
#endif

#endif
