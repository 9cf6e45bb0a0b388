/* lua_gw.c - the `gw` module, non-I/O part: gw.log, gw.metrics, gw.json,
 * gw.now, gw.config, gw.null / gw.array / gw.object / gw.int64 / gw.type /
 * gw.totable, gw.attributes.*, gw.span.copy (gw.pairs is the global pairs,
 * lua_baselib.c).
 *
 * The table is built in one place (sg__lua_inject_gw_api) and published as
 * package.loaded.gw and the global `gw`, so scripts write
 * `local gw = require("gw")` and busted specs substitute a plain table.
 * The job-only functions (gw.pg, gw.ch, gw.sleep, the tasks) are here as
 * stand-ins that raise "only available to jobs"; a job's runtime replaces
 * them with the real ones (sg_lua_rt_opts_t.inject, lua_io.h).
 *
 * Every function checks its arguments and raises a Lua error naming the
 * function and the argument ("gw.metrics.incr: bad argument #1 (metric name
 * expected, got nil)").
 */
#include "lua_internal.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "json_load.h"
#include "json_nest.h"
#include "log.h"
#include "metrics.h"

static int is_null(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL;
}

#define RT() ((sg_lua_rt_t *)lua_touserdata(L, lua_upvalueindex(1)))

/* ---- gw.log ------------------------------------------------------------------- */

/* msg, or string.format(fmt, ...) when there are more arguments. */
static int log_at(lua_State *L, sg_log_level_t lvl) {
  int n = lua_gettop(L);
  if (n == 0) return luaL_error(L, "gw.log: bad argument #1 (message expected)");
  if (lvl < sg_log_level()) return 0;
  if (n > 1) {
    luaL_checktype(L, 1, LUA_TSTRING);
    lua_getglobal(L, "string");   /* args, string */
    lua_getfield(L, -1, "format"); /* args, string, format */
    lua_insert(L, 1);              /* format, args, string */
    lua_pop(L, 1);                 /* format, args */
    lua_call(L, n, 1);             /* text */
  } else if (!lua_isstring(L, 1)) {
    lua_getglobal(L, "tostring"); /* v, tostring */
    lua_insert(L, 1);             /* tostring, v */
    lua_call(L, 1, 1);            /* text */
  }
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  sg_log_write(lvl, "lua", "%.*s", (int)(len > 65536 ? 65536 : len), s ? s : "");
  return 0;
}
static int gw_log_debug(lua_State *L) { return log_at(L, SG_LOG_DEBUG); }
static int gw_log_info(lua_State *L) { return log_at(L, SG_LOG_INFO); }
static int gw_log_warn(lua_State *L) { return log_at(L, SG_LOG_WARN); }
static int gw_log_error(lua_State *L) { return log_at(L, SG_LOG_ERROR); }

/* ---- gw.metrics --------------------------------------------------------------- */

#define MAX_METRICS 1000

static sg_lua_metric_t *metric(lua_State *L, sg_lua_rt_t *rt, const char *fn, char kind) {
  size_t n;
  const char *name = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
  if (name == NULL)
    luaL_error(L, "%s: bad argument #1 (metric name expected, got %s)", fn, luaL_typename(L, 1));
  int ok = n > 0 && n <= 128;
  for (size_t i = 0; ok && i < n; i++) {
    char c = name[i];
    ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
         (i > 0 && c >= '0' && c <= '9');
  }
  if (!ok) luaL_error(L, "%s: metric name '%s' must match [a-zA-Z_:][a-zA-Z0-9_:]*", fn, name);
  for (size_t i = 0; i < rt->nmetrics; i++) {
    if (strcmp(rt->metrics[i].name, name) == 0) {
      if (rt->metrics[i].kind != kind)
        luaL_error(L, "%s: '%s' is already a %s", fn, name,
                   rt->metrics[i].kind == 'c' ? "counter" : "gauge");
      return &rt->metrics[i];
    }
  }
  if (rt->nmetrics >= MAX_METRICS) luaL_error(L, "%s: too many metrics (%d)", fn, MAX_METRICS);
  if (rt->nmetrics == rt->capmetrics) {
    size_t cap = rt->capmetrics ? rt->capmetrics * 2 : 16;
    sg_lua_metric_t *p = realloc(rt->metrics, cap * sizeof *p);
    if (!p) luaL_error(L, "out of memory");
    rt->metrics = p;
    rt->capmetrics = cap;
  }
  char *copy = strdup(name);
  if (!copy) luaL_error(L, "out of memory");
  sg_lua_metric_t *m = &rt->metrics[rt->nmetrics++];
  m->name = copy;
  m->kind = kind;
  m->v = 0;
  m->slot = SG_LUA_SLOT_NEW;
  m->pub = 0;
  return m;
}

void sg_lua_rt_publish_metrics(sg_lua_rt_t *rt, int retire) {
  for (size_t i = 0; rt && i < rt->nmetrics; i++) {
    sg_lua_metric_t *m = &rt->metrics[i];
    if (m->slot == SG_LUA_SLOT_NEW) {
      int slot = sg_metrics_lua_slot(m->name, m->kind);
      if (slot == -2)
        sg_warn("lua", "gw.metrics '%s' is not exported to /metrics: scripts may export at most %d "
                       "distinct names, and a name (after sanitising) is either a counter or a "
                       "gauge; counted in spangate_lua_metrics_dropped_total (logged once)",
                m->name, SG_LUA_USER_MAX);
      m->slot = slot < 0 ? -1 : slot;
    }
    if (m->slot < 0) continue;
    double now = retire && m->kind == 'g' ? 0 : m->v;
    if (now != m->pub) {
      sg_metrics_lua_add(m->slot, now - m->pub);
      m->pub = now;
    }
  }
}

static int gw_metrics_incr(lua_State *L) {
  double by = 1;
  if (!lua_isnoneornil(L, 2)) {
    if (lua_type(L, 2) != LUA_TNUMBER || !(lua_tonumber(L, 2) >= 0) || !isfinite(lua_tonumber(L, 2)))
      return luaL_error(L, "gw.metrics.incr: bad argument #2 (non-negative number expected)");
    by = lua_tonumber(L, 2);
  }
  metric(L, RT(), "gw.metrics.incr", 'c')->v += by;
  return 0;
}

static int gw_metrics_gauge(lua_State *L) {
  if (lua_type(L, 2) != LUA_TNUMBER || !isfinite(lua_tonumber(L, 2)))
    return luaL_error(L, "gw.metrics.gauge: bad argument #2 (finite number expected, got %s)",
                      luaL_typename(L, 2));
  metric(L, RT(), "gw.metrics.gauge", 'g')->v = lua_tonumber(L, 2);
  return 0;
}

/* ---- gw.json ------------------------------------------------------------------ */

static int gw_json_encode(lua_State *L) {
  sg_lua_rt_t *rt = RT();
  luaL_checkany(L, 1);
  json_t *v;
  sg_lua_proxy_t *p = sg__lua_test_proxy(L, 1);
  if (p && p->tag == SG_PX_JSON) v = json_incref(sg__lua_check_json_proxy(L, 1, 0));
  else v = sg__lua_to_json(L, rt, 1, "gw.json.encode");
  sg_buf_t b = SG_BUF_INIT;
  int rc = sg_json_dump(v, 0, &b);
  json_decref(v);
  if (rc) {
    sg_buf_free(&b);
    return luaL_error(L, "gw.json.encode: %s", sg_strerror(rc));
  }
  lua_pushlstring(L, b.data, b.len);
  sg_buf_free(&b);
  return 1;
}

static int gw_json_decode(lua_State *L) {
  size_t n;
  const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
  if (s == NULL)
    return luaL_error(L, "gw.json.decode: bad argument #1 (string expected, got %s)",
                      luaL_typename(L, 1));
  json_error_t e;
  json_t *v;
  size_t cost;
  /* The text may be a request's (an attribute): bounded as request bodies
   * are (json_load.h), or 1 MB of "{}" would take 80 MB outside the
   * script's own memory. */
  if (sg_json_load_bounded(s, n, JSON_DECODE_ANY, sg_json_tree_budget(n), &v, &e, &cost) ==
      SG_ETOOBIG) {
    lua_pushnil(L);
    lua_pushfstring(L, "too large to parse: about %d MiB once parsed, over %d MiB (%dx its size + "
                    "1 MiB, at most %d MiB)", (int)(cost >> 20), (int)(sg_json_tree_budget(n) >> 20),
                    SG_JSON_TREE_RATIO, (int)(SG_JSON_TREE_MAX >> 20));
    return 2;
  }
  if (v == NULL) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s at line %d column %d", e.text, e.line, e.column);
    return 2; /* nil, message: decode errors are data, not bugs */
  }
  sg__lua_push_json(L, RT(), v, SG_PXF_OWNED);
  json_decref(v);
  return 1;
}

/* ---- values ------------------------------------------------------------------- */

static int gw_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec * 1e6 + (lua_Number)(ts.tv_nsec / 1000));
  return 1;
}

static int mark(lua_State *L, int ref, const char *fn) {
  if (lua_isnoneornil(L, 1)) lua_newtable(L);
  else if (!lua_istable(L, 1))
    return luaL_error(L, "%s: bad argument #1 (table or nothing expected, got %s)", fn,
                      luaL_typename(L, 1));
  else lua_settop(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref); /* t, mt */
  lua_setmetatable(L, -2);                /* t */
  return 1;
}
static int gw_array(lua_State *L) { return mark(L, RT()->ref_mt_array, "gw.array"); }
static int gw_object(lua_State *L) { return mark(L, RT()->ref_mt_object, "gw.object"); }

static int gw_int64(lua_State *L) {
  sg_lua_rt_t *rt = RT();
  int64_t v;
  if (lua_type(L, 1) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, 1, &n);
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (n == 0 || end != s + n || errno)
      return luaL_error(L, "gw.int64: '%s' is not a decimal int64", s);
    v = x;
  } else if (!sg__lua_to_int64(L, rt, 1, &v)) {
    return luaL_error(L, "gw.int64: bad argument #1 (integer or decimal string expected, got %s)",
                      luaL_typename(L, 1));
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_mk_i64); /* mk */
  lua_pushlightuserdata(L, &v);                      /* mk, &v */
  lua_call(L, 1, 1);                                 /* int64 cdata */
  return 1;
}

static int gw_type(lua_State *L) {
  luaL_checkany(L, 1);
  sg_lua_proxy_t *p = sg__lua_test_proxy(L, 1);
  if (p) lua_pushstring(L, p->tag == SG_PX_SPAN ? "span"
                           : json_is_object(p->u.json) ? "object" : "array");
  else if (is_null(L, 1)) lua_pushliteral(L, "null");
  else if (lua_type(L, 1) == 10) {
    int64_t v;
    lua_pushstring(L, sg__lua_to_int64(L, RT(), 1, &v) ? "int64" : "cdata");
  } else if (lua_istable(L, 1)) {
    sg_lua_rt_t *rt = RT();
    const char *t = "table";
    if (lua_getmetatable(L, 1)) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_mt_array);
      if (lua_rawequal(L, -1, -2)) t = "array";
      lua_pop(L, 1);
      lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_mt_object);
      if (lua_rawequal(L, -1, -2)) t = "object";
      lua_pop(L, 2);
    }
    lua_pushstring(L, t);
  } else lua_pushstring(L, luaL_typename(L, 1));
  return 1;
}

static void totable(lua_State *L, sg_lua_rt_t *rt, json_t *v, int depth) {
  if (depth > 64) luaL_error(L, "gw.totable: nested too deeply");
  luaL_checkstack(L, 4, "gw.totable");
  if (json_is_object(v)) {
    lua_createtable(L, 0, (int)json_object_size(v)); /* t */
    for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it)) {
      lua_pushlstring(L, json_object_iter_key(it), json_object_iter_key_len(it));
      totable(L, rt, json_object_iter_value(it), depth + 1);
      lua_rawset(L, -3);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_mt_object);
    lua_setmetatable(L, -2);
  } else if (json_is_array(v)) {
    lua_createtable(L, (int)json_array_size(v), 0);
    for (size_t i = 0; i < json_array_size(v); i++) {
      totable(L, rt, json_array_get(v, i), depth + 1);
      lua_rawseti(L, -2, (int)i + 1);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_mt_array);
    lua_setmetatable(L, -2);
  } else {
    sg__lua_push_json(L, rt, v, 0);
  }
}

static int gw_totable(lua_State *L) {
  sg_lua_proxy_t *p = sg__lua_test_proxy(L, 1);
  if (!p || p->tag != SG_PX_JSON) {
    lua_settop(L, 1);
    return 1; /* plain values (and tables) are already tables */
  }
  totable(L, RT(), sg__lua_check_json_proxy(L, 1, 0), 0);
  return 1;
}

/* ---- gw.attributes ----------------------------------------------------------- */

/* gw.attributes.nest(span [, with_resource]): nest the dotted keys when the
 * row is written; with_resource also stores the span's OTLP resource
 * attributes as attributes.resource (unless the span has its own). Both
 * happen in C at store time: Lua keeps seeing the attributes as sent.
 * gw.attributes.nest(span, false, false) clears both. */
static int gw_attr_nest(lua_State *L) {
  sg_lua_slot_t *slot = sg__lua_check_span(L, 1, 1);
  int on = lua_isnone(L, 3) || lua_toboolean(L, 3);
  slot->nest = (uint8_t)((on ? SG_LUA_NEST_ATTRS : 0) | (lua_toboolean(L, 2) ? SG_LUA_NEST_RESOURCE : 0));
  return 0;
}

/* -> nested, with_resource */
static int gw_attr_is_nested(lua_State *L) {
  uint8_t f = sg__lua_check_span(L, 1, 0)->nest;
  lua_pushboolean(L, f & SG_LUA_NEST_ATTRS);
  lua_pushboolean(L, f & SG_LUA_NEST_RESOURCE);
  return 2;
}

static int gw_attr_get(lua_State *L) {
  sg_lua_proxy_t *p = sg__lua_test_proxy(L, 1);
  size_t n;
  const char *path = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &n) : NULL;
  if (path == NULL)
    return luaL_error(L, "gw.attributes.get: bad argument #2 (string expected, got %s)",
                      luaL_typename(L, 2));
  if (lua_isnil(L, 1)) return 0;
  if (!p || p->tag != SG_PX_JSON)
    return luaL_error(L, "gw.attributes.get: bad argument #1 (JSON object expected, got %s)",
                      luaL_typename(L, 1));
  json_t *c = sg__lua_check_json_proxy(L, 1, 0);
  sg__lua_push_json(L, p->rt, sg_json_path_get(c, path, n), p->flags & (SG_PXF_READONLY | SG_PXF_OWNED));
  return 1;
}

/* gw.attributes.get_many(attrs, k1, k2, ...) -> attrs[k1], attrs[k2], ...
 * One call instead of one metamethod call per key (the default transform
 * reads a dozen keys per span). attrs may be nil (all values nil). */
static int gw_attr_get_many(lua_State *L) {
  int n = lua_gettop(L);
  if (n < 2) return luaL_error(L, "gw.attributes.get_many: bad argument #2 (key expected)");
  if (lua_isnil(L, 1)) {
    lua_settop(L, 1);
    for (int i = 2; i < n; i++) lua_pushnil(L);
    return n - 1;
  }
  sg_lua_proxy_t *p = sg__lua_test_proxy(L, 1);
  if (!p || p->tag != SG_PX_JSON)
    return luaL_error(L, "gw.attributes.get_many: bad argument #1 (JSON object expected, got %s)",
                      luaL_typename(L, 1));
  json_t *c = sg__lua_check_json_proxy(L, 1, 0);
  int fl = p->flags & (SG_PXF_READONLY | SG_PXF_OWNED);
  luaL_checkstack(L, n, "gw.attributes.get_many");
  for (int i = 2; i <= n; i++) {
    size_t kl;
    const char *k = lua_type(L, i) == LUA_TSTRING ? lua_tolstring(L, i, &kl) : NULL;
    if (k == NULL)
      return luaL_error(L, "gw.attributes.get_many: bad argument #%d (string expected, got %s)", i,
                        luaL_typename(L, i));
    sg__lua_push_json(L, p->rt, json_is_object(c) ? json_object_getn(c, k, kl) : NULL, fl);
  }
  return n - 1;
}

/* The nested form of a (read-only) object, cached for the last source:
 * the spans of one OTLP ResourceSpans share their resource object, so a
 * batch nests it once. The result is read-only and shared. */
static int gw_attr_nested(lua_State *L) {
  sg_lua_rt_t *rt = RT();
  if (lua_isnil(L, 1)) return 0;
  json_t *src = sg__lua_check_json_proxy(L, 1, 0);
  if (rt->nest_src != src) {
    json_t *nv = sg_json_nested(src);
    if (!nv) return luaL_error(L, "out of memory");
    json_decref(rt->nest_src);
    json_decref(rt->nest_val);
    rt->nest_src = json_incref(src);
    rt->nest_val = nv;
  }
  rt->frozen[2] = rt->nest_val;
  sg__lua_push_json(L, rt, rt->nest_val, SG_PXF_READONLY);
  return 1;
}

static int gw_span_copy(lua_State *L) {
  sg_lua_rt_t *rt = RT();
  sg_lua_slot_t *src = sg__lua_check_span(L, 1, 0);
  if (!rt->in_hook || rt->cur == NULL)
    return luaL_error(L, "gw.span.copy: only inside transform's M.span");
  sg__lua_push_span(L, rt, sg__lua_copy_slot(L, rt, src), 0);
  return 1;
}

/* ---- gw.agenta ---------------------------------------------------------------- */

/* gw.agenta.normalize(span [, ctx]) -> span: Agenta's normalisation (the
 * default transform.lua, steps 1-4) done in C. ctx (the hook's ctx, or any
 * table) only tells whether there is a resource to add; nil or false: none. */
static int gw_agenta_normalize(lua_State *L) {
  sg_lua_rt_t *rt = RT();
  sg_lua_slot_t *slot = sg__lua_check_span_rt(L, 1, 1, rt);
  int t = lua_type(L, 2), res = 0;
  if (t == LUA_TTABLE || t == LUA_TUSERDATA) {
    lua_getfield(L, 2, "resource"); /* span, ctx, resource */
    res = !lua_isnil(L, -1);
  } else if (t != LUA_TNONE && t != LUA_TNIL && !(t == LUA_TBOOLEAN && !lua_toboolean(L, 2))) {
    return luaL_error(L, "gw.agenta.normalize: bad argument #2 (ctx or nil expected, got %s)",
                      luaL_typename(L, 2));
  }
  const char *err;
  if (sg__lua_agenta_normalize(rt, slot, res, &err))
    return luaL_error(L, "gw.agenta.normalize: %s", err);
  lua_settop(L, 1); /* span */
  return 1;
}

int sg__lua_is_builtin_normalize(lua_State *L, int idx) {
  return lua_tocfunction(L, idx) == gw_agenta_normalize;
}

/* ---- gw.config ---------------------------------------------------------------- */

static int readonly_newindex(lua_State *L) {
  return luaL_error(L, "gw.config is read-only (tried to set '%s')", luaL_optstring(L, 2, "?"));
}

/* Keys that may hold credentials stay out of the scripts' reach. */
static int secret_key(const char *name) {
  return strcmp(name, "clickhouse_password") == 0 || strcmp(name, "postgres_uri") == 0 ||
         strcmp(name, "agenta_postgres_uri") == 0;
}

static void push_config(lua_State *L, sg_lua_rt_t *rt, const sg_config_t *cfg) {
  size_t nk;
  const sg_config_key_t *keys = sg_config_keys(&nk);
  lua_newtable(L); /* proxy */
  lua_newtable(L); /* proxy, data */
  for (size_t i = 0; cfg && i < nk; i++) {
    const sg_config_key_t *k = &keys[i];
    if (secret_key(k->name)) continue;
    const char *base = (const char *)cfg + k->offset;
    switch (k->type) {
    case SG_CFG_STR: lua_pushstring(L, *(char *const *)base ? *(char *const *)base : ""); break;
    case SG_CFG_INT: lua_pushnumber(L, (lua_Number) * (const long long *)base); break;
    case SG_CFG_BOOL: lua_pushboolean(L, *(const int *)base); break;
    case SG_CFG_SIZE: lua_pushnumber(L, (lua_Number) * (const size_t *)base); break;
    case SG_CFG_LIST: {
      const sg_strlist_t *l = (const sg_strlist_t *)base;
      lua_createtable(L, (int)l->n, 0);
      for (size_t j = 0; j < l->n; j++) {
        lua_pushstring(L, l->v[j]);
        lua_rawseti(L, -2, (int)j + 1);
      }
      break;
    }
    case SG_CFG_TABLE: {
      const char *text = *(char *const *)base;
      json_t *v = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
      if (v) {
        totable(L, rt, v, 0);
        json_decref(v);
      } else {
        lua_newtable(L);
      }
      break;
    }
    }
    lua_setfield(L, -2, k->name); /* proxy, data */
  }
  lua_newtable(L);              /* proxy, data, mt */
  lua_insert(L, -2);            /* proxy, mt, data */
  lua_setfield(L, -2, "__index"); /* proxy, mt */
  lua_pushcfunction(L, readonly_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushliteral(L, "read-only");
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2); /* proxy */
}

/* ---- the gw table ------------------------------------------------------------- */

/* A job-only function in a state that cannot do I/O (a hook's). The
 * upvalue is the function's name. */
static int job_only(lua_State *L) {
  return luaL_error(L, "%s: I/O is only available to jobs (spangate run|migrate|validate|ttl); "
                       "hooks cannot yield", lua_tostring(L, lua_upvalueindex(1)));
}

/* gw.<name> = a stand-in, or gw.<name>.<fn> = one for each fn listed. */
static void job_only_api(lua_State *L, const char *name, const char *const *fns) {
  if (fns == NULL) {
    lua_pushfstring(L, "gw.%s", name);           /* gw, "gw.name" */
    lua_pushcclosure(L, job_only, 1);            /* gw, f */
    lua_setfield(L, -2, name);                   /* gw */
    return;
  }
  lua_newtable(L);                               /* gw, t */
  for (; *fns; fns++) {
    lua_pushfstring(L, "gw.%s.%s", name, *fns);  /* gw, t, "gw.name.fn" */
    lua_pushcclosure(L, job_only, 1);            /* gw, t, f */
    lua_setfield(L, -2, *fns);                   /* gw, t */
  }
  lua_setfield(L, -2, name);                     /* gw */
}

static void set_funcs(lua_State *L, sg_lua_rt_t *rt, const luaL_Reg *r) {
  for (; r->name; r++) {
    lua_pushlightuserdata(L, rt);
    lua_pushcclosure(L, r->func, 1);
    lua_setfield(L, -2, r->name);
  }
}

static void sub_table(lua_State *L, sg_lua_rt_t *rt, const char *name, const luaL_Reg *r) {
  lua_newtable(L);
  set_funcs(L, rt, r);
  lua_setfield(L, -2, name);
}

void sg__lua_inject_gw_api(lua_State *L, sg_lua_rt_t *rt, const sg_config_t *cfg) {
  static const luaL_Reg log_fns[] = {{"debug", gw_log_debug}, {"info", gw_log_info},
                                     {"warn", gw_log_warn}, {"error", gw_log_error},
                                     {NULL, NULL}};
  static const luaL_Reg metrics_fns[] = {{"incr", gw_metrics_incr}, {"gauge", gw_metrics_gauge},
                                         {NULL, NULL}};
  static const luaL_Reg json_fns[] = {{"encode", gw_json_encode}, {"decode", gw_json_decode},
                                      {NULL, NULL}};
  static const luaL_Reg attr_fns[] = {{"nest", gw_attr_nest}, {"is_nested", gw_attr_is_nested},
                                      {"get", gw_attr_get}, {"nested", gw_attr_nested},
                                      {"get_many", gw_attr_get_many},
                                      {NULL, NULL}};
  static const luaL_Reg span_fns[] = {{"copy", gw_span_copy}, {NULL, NULL}};
  static const luaL_Reg agenta_fns[] = {{"normalize", gw_agenta_normalize}, {NULL, NULL}};
  static const luaL_Reg top_fns[] = {{"now", gw_now}, {"array", gw_array}, {"object", gw_object},
                                     {"int64", gw_int64}, {"type", gw_type},
                                     {"totable", gw_totable}, {NULL, NULL}};

  lua_newtable(L); /* gw */
  set_funcs(L, rt, top_fns);
  sub_table(L, rt, "log", log_fns);
  sub_table(L, rt, "metrics", metrics_fns);
  sub_table(L, rt, "json", json_fns);
  sub_table(L, rt, "attributes", attr_fns);
  sub_table(L, rt, "span", span_fns);
  sub_table(L, rt, "agenta", agenta_fns);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_getglobal(L, "pairs");        /* gw, pairs (lua_baselib.c's: proxies too) */
  lua_setfield(L, -2, "pairs");     /* gw */
  push_config(L, rt, cfg);
  lua_setfield(L, -2, "config");
  static const char *const pg_fns[] = {"query", "query_raw", NULL};
  static const char *const ch_fns[] = {"query", "insert", "insert_spans", "span_batch", NULL};
  static const char *const hook_fns[] = {"clickhouse", "postgres", NULL};
  job_only_api(L, "pg", pg_fns);
  job_only_api(L, "ch", ch_fns);
  job_only_api(L, "hooks", hook_fns);
  job_only_api(L, "sleep", NULL);
  job_only_api(L, "spawn", NULL);
  job_only_api(L, "wait", NULL);
  job_only_api(L, "exit", NULL);

  lua_getglobal(L, "package");      /* gw, package */
  lua_getfield(L, -1, "loaded");    /* gw, package, loaded */
  lua_pushvalue(L, -3);             /* gw, package, loaded, gw */
  lua_setfield(L, -2, "gw");        /* gw, package, loaded */
  lua_pop(L, 2);                    /* gw */
  lua_setglobal(L, "gw");           /* - */
}
