/* lua_internal.h - what the files of the Lua runtime share and nobody else
 * sees: the runtime's struct, the proxies, and the sg__lua_* functions one
 * file implements for the others (libuv's internal.h). Included by
 * lua_rt.c, lua_span.c, lua_gw.c and the files that build on them inside
 * the Lua layer; the rest of the program uses lua_rt.h only.
 */
#ifndef SG_LUA_INTERNAL_H
#define SG_LUA_INTERNAL_H

#include <jansson.h>
#include <lua.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "lua_rt.h"
#include "span.h"

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

/* A project's cached routing answers: ch (M.clickhouse) and pg (M.postgres)
 * are 0 until asked, then 1 for false and 2 for true. */
typedef struct {
  uint8_t id[16];
  int8_t used, ch, pg;
} sg_lua_route_ent_t;

struct sg_lua_rt_s {
  lua_State *L;
  sg_lua_stats_t st;
  int budget;
  int reject_on_error;
  int use_clickhouse;
  int hooks;
  int ref_transform, ref_clickhouse, ref_postgres, ref_read_backend, ref_retention, ref_traceback;
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
int sg__lua_span_init(lua_State *L, sg_lua_rt_t *rt);  /* metatables, FFI helpers, rt of L */
sg_lua_rt_t *sg__lua_rt_of(lua_State *L);              /* the runtime of a state */
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

/* Log that member k of c (which holds old, or nothing) is about to be set,
 * so a rollback of the hook restores it. 0 or SG_ENOMEM (nothing logged). */
int sg__lua_undo_obj_set(sg_lua_rt_t *rt, json_t *c, const char *k, size_t kl, json_t *old);

/* lua_agenta.c */
/* Agenta's normalisation of the span in slot (gw.agenta.normalize; the
 * default transform.lua's steps), pure C, no Lua. with_resource: the hook's
 * ctx has a resource. 0, or SG_ENOMEM / SG_EINVAL (attributes not an
 * object) with *err set; the caller then rolls the slot back. */
int sg__lua_agenta_normalize(sg_lua_rt_t *rt, sg_lua_slot_t *slot, int with_resource,
                             const char **err);

/* lua_baselib.c: the globals type, next, pairs and ipairs replaced by ones
 * that treat proxies as tables (before gw is built: gw.pairs is pairs).
 * 0 or SG_ESCRIPT. */
int sg__lua_baselib_init(lua_State *L, sg_lua_rt_t *rt);

/* lua_gw.c */
void sg__lua_inject_gw_api(lua_State *L, sg_lua_rt_t *rt, const sg_config_t *cfg);
/* Is the value at idx gw.agenta.normalize itself? (sg_lua_transform then
 * runs it without entering Lua.) */
int sg__lua_is_builtin_normalize(lua_State *L, int idx);

#endif
