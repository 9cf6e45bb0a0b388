/* lua_rt.c - the per-worker Lua runtime: build a state, load and check the
 * scripts, run the hooks under an instruction budget, isolate failures.
 * Contracts in lua_rt.h; the span proxy in lua_span.c; gw in lua_gw.c.
 */
#include "lua_internal.h"

#include <errno.h>
#include <stddef.h>
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "err.h"
#include "log.h"

/* ---- budget and errors --------------------------------------------------------- */

/* Count hook: fires after rt->budget VM instructions of one hook call. It
 * only fires in interpreted code, which is why the JIT is off (lua_rt.h). */
static void budget_cb(lua_State *L, lua_Debug *ar) {
  (void)ar;
  sg_lua_rt_t *rt = sg__lua_rt_of(L);
  if (rt) rt->budget_hit = 1;
  /* From now on every instruction raises again, so a script that catches
   * the error with pcall (`while true do pcall(f) end`) cannot keep going:
   * the next Lua instruction it runs fails too, up to our lua_pcall. The
   * next hook call re-arms a full budget. */
  lua_sethook(L, budget_cb, LUA_MASKCOUNT, 1);
  luaL_error(L, "script budget exceeded (%d instructions; see script_budget)", rt ? rt->budget : 0);
}

static void budget_arm(sg_lua_rt_t *rt) {
  rt->budget_hit = 0;
  /* Re-setting the hook reloads the count; the dispatch mode does not change. */
  lua_sethook(rt->L, budget_cb, LUA_MASKCOUNT, rt->budget);
}

static void budget_disarm(sg_lua_rt_t *rt) { lua_sethook(rt->L, NULL, 0, 0); }

/* Message handler: the error with a traceback. */
static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) msg = lua_tostring(L, -1);
    else msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int64_t mono_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (int64_t)ts.tv_sec;
}

/* Count a failed hook call and log it: at most one line per second, the
 * next line saying how many were suppressed. The message (with its
 * traceback) is at the top of the stack. */
static void hook_failed(sg_lua_rt_t *rt, const char *what, const char *detail, const char *msg) {
  rt->st.errors++;
  if (rt->budget_hit) rt->st.budget_kills++;
  int64_t now = mono_sec();
  if (now == rt->log_sec && rt->log_sec != 0) {
    rt->log_supp_pending++;
    rt->st.log_suppressed++;
    return;
  }
  rt->log_sec = now;
  if (msg == NULL) msg = lua_tostring(rt->L, -1);
  if (rt->log_supp_pending)
    sg_error("lua", "%s failed%s: %s (%llu similar errors suppressed)", what, detail ? detail : "",
             msg ? msg : "?", (unsigned long long)rt->log_supp_pending);
  else sg_error("lua", "%s failed%s: %s", what, detail ? detail : "", msg ? msg : "?");
  rt->log_supp_pending = 0;
}

/* End of one sg_lua_* call: proxies made in it go stale, pins are released. */
static void call_done(sg_lua_rt_t *rt, int top) {
  budget_disarm(rt);
  lua_settop(rt->L, top);
  rt->in_hook = 0;
  rt->cur = NULL;
  rt->hook_gen++;
  rt->call_gen++;
  sg__lua_unpin_all(rt);
  rt->frozen[0] = rt->frozen[1] = rt->frozen[2] = rt->frozen[3] = NULL;
}

/* ---- loading ------------------------------------------------------------------- */

/* Load one script. 0 with the module table pushed, 1 with nothing pushed
 * when the file does not exist, or SG_ESCRIPT with err filled. */
static int load_script(sg_lua_rt_t *rt, const char *dir, const char *name, sg_buf_t *err) {
  lua_State *L = rt->L;
  sg_buf_t path = SG_BUF_INIT;
  if (sg_buf_printf(&path, "%s/%s.lua", dir, name)) return SG_ENOMEM;
  struct stat st;
  if (stat(path.data, &st) != 0) {
    int e = errno;
    if (e == ENOENT) {
      sg_buf_free(&path);
      return 1;
    }
    sg_buf_printf(err, "%s: %s", path.data, strerror(e));
    sg_buf_free(&path);
    return SG_ESCRIPT;
  }
  lua_pushcfunction(L, traceback); /* tb */
  int tb = lua_gettop(L);
  if (luaL_loadfile(L, path.data)) { /* tb, msg */
    sg_buf_puts(err, lua_tostring(L, -1)); /* "lua/x.lua:3: '=' expected near 'y'" */
    lua_settop(L, tb - 1);
    sg_buf_free(&path);
    return SG_ESCRIPT;
  }
  lua_Debug ar;
  lua_pushvalue(L, -1);
  lua_getinfo(L, ">S", &ar); /* tb, chunk */
  int lastline = ar.lastlinedefined > 0 ? ar.lastlinedefined : 1;
  budget_arm(rt);
  int rc = lua_pcall(L, 0, 1, tb); /* tb, module | msg */
  budget_disarm(rt);
  if (rc) {
    sg_buf_printf(err, "%s", lua_tostring(L, -1));
    lua_settop(L, tb - 1);
    sg_buf_free(&path);
    return SG_ESCRIPT;
  }
  if (!lua_istable(L, -1)) {
    sg_buf_printf(err, "%s:%d: the script must return its module table (got %s)", path.data,
                  lastline, luaL_typename(L, -1));
    lua_settop(L, tb - 1);
    sg_buf_free(&path);
    return SG_ESCRIPT;
  }
  lua_remove(L, tb); /* module */
  lua_getglobal(L, "package");   /* module, package */
  lua_getfield(L, -1, "loaded"); /* module, package, loaded */
  lua_pushvalue(L, -3);          /* module, package, loaded, module */
  lua_setfield(L, -2, name);     /* module, package, loaded */
  lua_pop(L, 2);                 /* module */
  sg_buf_free(&path);
  return 0;
}

/* module.fn as a registry ref, LUA_NOREF when absent; SG_ESCRIPT when present
 * but not a function. The module is at the top of the stack. */
static int hook_ref(sg_lua_rt_t *rt, const char *dir, const char *file, const char *fn, int *ref,
                    sg_buf_t *err) {
  lua_State *L = rt->L;
  *ref = LUA_NOREF;
  lua_getfield(L, -1, fn); /* module, f */
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  if (!lua_isfunction(L, -1)) {
    sg_buf_printf(err, "%s/%s.lua: M.%s must be a function (got %s)", dir, file, fn,
                  luaL_typename(L, -1));
    lua_pop(L, 1);
    return SG_ESCRIPT;
  }
  lua_Debug ar;
  lua_pushvalue(L, -1);
  lua_getinfo(L, ">S", &ar);
  (void)ar;
  *ref = luaL_ref(L, LUA_REGISTRYINDEX); /* module */
  return 0;
}

static int ctx_newindex(lua_State *L) {
  return luaL_error(L, "ctx is read-only (tried to set '%s')", luaL_optstring(L, 2, "?"));
}

/* Runs opts->inject over the gw table (argument 1), protected. */
static int inject_call(lua_State *L) {
  const sg_lua_rt_opts_t *opts = lua_touserdata(L, lua_upvalueindex(1));
  lua_settop(L, 1);                   /* gw */
  opts->inject(L, opts->inject_ud);   /* gw */
  return 0;
}

sg_lua_rt_t *sg_lua_rt_new(const sg_config_t *cfg, sg_buf_t *err) {
  return sg_lua_rt_new_opts(cfg, NULL, err);
}

sg_lua_rt_t *sg_lua_rt_new_opts(const sg_config_t *cfg, const sg_lua_rt_opts_t *opts, sg_buf_t *err) {
  sg_lua_rt_t *rt = calloc(1, sizeof *rt);
  if (rt == NULL) {
    sg_buf_puts(err, "out of memory");
    return NULL;
  }
  rt->ref_transform = rt->ref_clickhouse = rt->ref_postgres = rt->ref_read_backend = rt->ref_retention =
      LUA_NOREF;
  rt->budget = cfg->script_budget > 0 && cfg->script_budget < 2000000000 ? (int)cfg->script_budget
                                                                           : 1000000;
  rt->reject_on_error = cfg->on_script_error && strcmp(cfg->on_script_error, "reject") == 0;
  rt->use_clickhouse = cfg->use_clickhouse;
  rt->hook_gen = rt->call_gen = 1;
  lua_State *L = rt->L = luaL_newstate();
  if (L == NULL) {
    sg_buf_puts(err, "cannot create a Lua state (out of memory)");
    free(rt);
    return NULL;
  }
  luaL_openlibs(L);
  /* Interpreter only: the count hook must be able to stop every loop. The
   * jit module is hidden so a script cannot turn the compiler back on. */
  luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
  lua_getglobal(L, "package");   /* package */
  lua_getfield(L, -1, "loaded"); /* package, loaded */
  lua_pushnil(L);
  lua_setfield(L, -2, "jit");
  lua_pop(L, 1);                 /* package */
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua", cfg->scripts, cfg->scripts);
  lua_setfield(L, -2, "path");   /* package */
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_setglobal(L, "jit");

  if (sg__lua_span_init(L, rt) || sg__lua_baselib_init(L, rt)) {
    sg_buf_puts(err, "cannot initialise the Lua runtime (FFI helpers, base library)");
    sg_lua_rt_free(rt);
    return NULL;
  }
  sg__lua_inject_gw_api(L, rt, cfg);
  if (opts && opts->inject) {
    lua_pushlightuserdata(L, (void *)opts);   /* opts */
    lua_pushcclosure(L, inject_call, 1);      /* inject */
    lua_getglobal(L, "gw");                   /* inject, gw */
    if (lua_pcall(L, 1, 0, 0)) {              /* - | msg */
      sg_buf_printf(err, "cannot add the job functions to gw: %s", lua_tostring(L, -1));
      sg_lua_rt_free(rt);
      return NULL;
    }
  }
  lua_pushcfunction(L, traceback);
  rt->ref_traceback = luaL_ref(L, LUA_REGISTRYINDEX);

  /* ctx: a read-only view of a backing table the C side fills. */
  lua_newtable(L);                  /* ctx */
  lua_newtable(L);                  /* ctx, mt */
  lua_newtable(L);                  /* ctx, mt, data */
  lua_pushvalue(L, -1);             /* ctx, mt, data, data */
  rt->ref_ctx_data = luaL_ref(L, LUA_REGISTRYINDEX); /* ctx, mt, data */
  lua_setfield(L, -2, "__index");   /* ctx, mt */
  lua_pushcfunction(L, ctx_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_setmetatable(L, -2);          /* ctx */
  rt->ref_ctx = luaL_ref(L, LUA_REGISTRYINDEX);

  static const struct {
    const char *file, *fn;
    int bit;
    size_t off;
  } hooks[] = {
      {"transform", "span", SG_LUA_HOOK_TRANSFORM, offsetof(sg_lua_rt_t, ref_transform)},
      {"routing", "clickhouse", SG_LUA_HOOK_CLICKHOUSE, offsetof(sg_lua_rt_t, ref_clickhouse)},
      {"routing", "postgres", SG_LUA_HOOK_POSTGRES, offsetof(sg_lua_rt_t, ref_postgres)},
      {"routing", "read_backend", SG_LUA_HOOK_READ_BACKEND, offsetof(sg_lua_rt_t, ref_read_backend)},
      {"ttl", "retention_days", SG_LUA_HOOK_RETENTION, offsetof(sg_lua_rt_t, ref_retention)},
  };
  const char *loaded = NULL;
  int present = 0, rc = 0;
  for (size_t i = 0; i < sizeof hooks / sizeof hooks[0] && rc == 0; i++) {
    if (loaded == NULL || strcmp(loaded, hooks[i].file) != 0) {
      if (loaded && present) lua_pop(L, 1);
      loaded = hooks[i].file;
      rc = load_script(rt, cfg->scripts, loaded, err);
      present = rc == 0;
      if (rc == 1) rc = 0;
      if (rc) break;
    }
    if (!present) continue;
    int *ref = (int *)((char *)rt + hooks[i].off);
    rc = hook_ref(rt, cfg->scripts, hooks[i].file, hooks[i].fn, ref, err);
    if (rc == 0 && *ref != LUA_NOREF) rt->hooks |= hooks[i].bit;
  }
  if (rc == 0 && present) lua_pop(L, 1);
  if (rc == 0 && rt->ref_transform != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_transform); /* f */
    rt->tx_builtin = sg__lua_is_builtin_normalize(L, -1);
    lua_pop(L, 1);
  }
  call_done(rt, 0);
  if (rc) {
    if (rc == SG_ENOMEM) sg_buf_puts(err, "out of memory");
    sg_lua_rt_free(rt);
    return NULL;
  }
  return rt;
}

void sg_lua_rt_free(sg_lua_rt_t *rt) {
  if (rt == NULL) return;
  sg__lua_unpin_all(rt);
  if (rt->L) lua_close(rt->L);
  sg__lua_undo_commit(rt);
  free(rt->undo);
  sg_buf_free(&rt->undo_keys);
  free(rt->pins);
  json_decref(rt->nest_src);
  json_decref(rt->nest_val);
  free(rt->tx_out);
  free(rt->tx_nest);
  free(rt->out);
  for (size_t i = 0; i < rt->nmetrics; i++) free(rt->metrics[i].name);
  free(rt->metrics);
  free(rt->routes);
  free(rt);
}

int sg_lua_rt_hooks(const sg_lua_rt_t *rt) { return rt->hooks; }
struct lua_State *sg_lua_rt_state(sg_lua_rt_t *rt) { return rt->L; }
void sg_lua_rt_stats(const sg_lua_rt_t *rt, sg_lua_stats_t *out) { *out = rt->st; }

int sg_lua_rt_metrics(const sg_lua_rt_t *rt, sg_lua_metric_cb cb, void *ud) {
  for (size_t i = 0; i < rt->nmetrics; i++) {
    int r = cb(rt->metrics[i].name, rt->metrics[i].kind, rt->metrics[i].v, ud);
    if (r) return r;
  }
  return 0;
}

/* ---- transform ----------------------------------------------------------------- */

/* The spans of one hook call are staged in rt->tx_out (a scratch list kept
 * across calls), then placed in the batch. Placement is in place: output
 * span w goes to b->spans[w] as long as w does not pass the input being
 * read (drops and single results never do), so a batch costs no new array;
 * only a fan-out that would overtake the input moves the output to a new
 * array (rt->tx_sep). */

/* Append a span (moved by value) to this call's scratch list; raises on ENOMEM. */
static void stage(lua_State *L, sg_lua_rt_t *rt, const sg_span_t *s, uint8_t nest) {
  if (rt->tx_n == rt->tx_cap) {
    size_t cap = rt->tx_cap ? rt->tx_cap * 2 : 8;
    sg_span_t *o = realloc(rt->tx_out, cap * sizeof *o);
    if (o) rt->tx_out = o;
    uint8_t *n = o ? realloc(rt->tx_nest, cap) : NULL;
    if (n) rt->tx_nest = n;
    if (!o || !n) luaL_error(L, "out of memory");
    rt->tx_cap = cap;
  }
  rt->tx_out[rt->tx_n] = *s;
  rt->tx_nest[rt->tx_n++] = nest;
}

/* Stage the span of a returned proxy: the input span or a copy the hook
 * made; a span listed twice is staged as a deep copy the second time. */
static void stage_proxy(lua_State *L, sg_lua_rt_t *rt, int idx) {
  sg_lua_slot_t *slot = sg__lua_check_span_rt(L, idx, 1, rt);
  int known = slot == rt->cur;
  for (sg_lua_slot_t *c = rt->copies; c && !known; c = c->next_copy) known = c == slot;
  if (!known) luaL_error(L, "M.span returned a span that is not this call's span or a copy of it");
  if (slot->owned == 2 || (slot == rt->cur && rt->cur->owned == 2)) {
    sg_lua_slot_t *dup = sg__lua_copy_slot(L, rt, slot);
    stage(L, rt, dup->s, dup->nest);
    dup->owned = 2;
    return;
  }
  stage(L, rt, slot->s, slot->nest);
  slot->owned = 2; /* staged: its record now belongs to the output */
}

/* pcall'd: stage every element of the list at index 1. */
static int stage_list(lua_State *L) {
  sg_lua_rt_t *rt = lua_touserdata(L, lua_upvalueindex(1));
  size_t n = lua_objlen(L, 1);
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, (int)i); /* elem */
    if (sg__lua_test_proxy_rt(L, -1, rt)) {
      stage_proxy(L, rt, lua_gettop(L));
    } else if (lua_istable(L, -1)) {
      /* A plain table: a copy of the span with these fields changed. */
      sg_lua_slot_t *c = sg__lua_copy_slot(L, rt, rt->cur);
      int t = lua_gettop(L);
      lua_pushnil(L);
      while (lua_next(L, t)) { /* elem, k, v */
        if (lua_type(L, -2) != LUA_TSTRING)
          luaL_error(L, "element %d of the returned list: span field names are strings", (int)i);
        sg__lua_span_set(L, c, lua_tostring(L, -2), lua_gettop(L));
        lua_pop(L, 1);
      }
      stage(L, rt, c->s, c->nest);
      c->owned = 2;
    } else {
      luaL_error(L, "element %d of the returned list is a %s (span or table expected)", (int)i,
                 luaL_typename(L, -1));
    }
    lua_pop(L, 1);
  }
  return 0;
}

/* Interpret what M.span returned (at the top; the span proxy passed in at
 * px). 0 with rt->tx_self set when it is the span itself (the common case:
 * nothing to stage), 0 with the spans staged, or an error message pushed. */
static int collect(sg_lua_rt_t *rt, int tb, int px) {
  lua_State *L = rt->L;
  int r = lua_gettop(L);
  if (lua_rawequal(L, r, px)) { /* still this call's proxy, so it is live */
    rt->tx_self = 1;
    return 0;
  }
  if (lua_isnil(L, r)) return 0; /* dropped */
  if (lua_type(L, r) == LUA_TUSERDATA || lua_istable(L, r)) {
    lua_pushlightuserdata(L, rt);
    lua_pushcclosure(L, stage_list, 1); /* r, f */
    if (lua_istable(L, r)) {
      lua_pushvalue(L, r);              /* r, f, list */
    } else {
      lua_createtable(L, 1, 0);         /* r, f, {} */
      lua_pushvalue(L, r);
      lua_rawseti(L, -2, 1);            /* r, f, {r} */
    }
    return lua_pcall(L, 1, 0, tb);
  }
  lua_pushfstring(L, "M.span must return the span, nil or a list of spans (got %s)",
                  luaL_typename(L, r));
  return LUA_ERRRUN;
}

/* Free the copies of one hook call that were not staged. */
static void copies_done(sg_lua_rt_t *rt, int ok) {
  sg_lua_slot_t *c = rt->copies;
  while (c) {
    sg_lua_slot_t *next = c->next_copy;
    if (ok) sg__lua_slot_commit(rt, c);
    else sg__lua_slot_rollback(rt, c);
    if (!(ok && c->owned == 2)) sg_span_clear(c->s); /* staged ones live on in the output */
    free(c->s);
    free(c);
    c = next;
  }
  rt->copies = NULL;
}

/* Room for output spans [0, need). In place while
 * need <= limit (the spans up to the input being read are consumed);
 * otherwise the output moves to a separate array. 0 or SG_ENOMEM. */
static int out_reserve(sg_lua_rt_t *rt, sg_span_batch_t *b, size_t w, size_t need, size_t limit,
                       size_t nin) {
  if (!rt->tx_sep) {
    if (need <= limit) return 0;
    size_t cap = need + (nin - limit) + 16;
    sg_span_t *o = malloc(cap * sizeof *o);
    if (o == NULL) return SG_ENOMEM;
    memcpy(o, b->spans, w * sizeof *o);
    rt->out = o;
    rt->out_cap = cap;
    rt->tx_sep = 1;
    return 0;
  }
  if (need > rt->out_cap) {
    size_t cap = rt->out_cap * 2 > need ? rt->out_cap * 2 : need;
    sg_span_t *o = realloc(rt->out, cap * sizeof *o);
    if (o == NULL) return SG_ENOMEM;
    rt->out = o;
    rt->out_cap = cap;
  }
  return 0;
}

_Static_assert(SG_LUA_NEST_ATTRS == SG_SPAN_NEST_ATTRS && SG_LUA_NEST_RESOURCE == SG_SPAN_NEST_RESOURCE,
               "the nest flags are stored in sg_span_t.nest_attributes as they are");

/* Output span w = *s (moved), with its nest flags. */
static void out_put(sg_lua_rt_t *rt, sg_span_batch_t *b, size_t w, const sg_span_t *s, uint8_t nest) {
  sg_span_t *d = rt->tx_sep ? &rt->out[w] : &b->spans[w];
  if (d != s) *d = *s;
  d->nest_attributes = nest;
}

int sg_lua_transform(sg_lua_rt_t *rt, const uint8_t project_id[16], sg_span_batch_t *b,
                     size_t *errors) {
  size_t nerr = 0;
  if (errors) *errors = 0;
  size_t nin = b->n;
  if (!(rt->hooks & SG_LUA_HOOK_TRANSFORM) || nin == 0) return 0;

  lua_State *L = rt->L;
  int top = lua_gettop(L), tb = 0, data = 0;
  int builtin = rt->tx_builtin; /* M.span is gw.agenta.normalize: no Lua to run */
  char pid[37];
  sg_uuid_format(project_id, pid);
  json_t *cur_res = NULL, *cur_scope = NULL;
  if (!builtin) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_traceback); /* tb */
    tb = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_ctx_data);  /* tb, data */
    data = lua_gettop(L);
    lua_pushlstring(L, pid, 36);
    lua_setfield(L, data, "project_id");
    lua_pushnil(L);
    lua_setfield(L, data, "resource");
    lua_pushnil(L);
    lua_setfield(L, data, "scope");
    rt->in_hook = 1;
    budget_arm(rt); /* once: switching the hook on and off per span costs a dispatch rewrite */
  }
  rt->tx_sep = 0;
  size_t w = 0; /* output spans so far */
  for (size_t i = 0; i < nin; i++) {
    sg_span_t *s = &b->spans[i];
    sg_lua_slot_t slot;
    memset(&slot, 0, sizeof slot);
    slot.s = s;
    sg__lua_slot_begin(rt, &slot);
    rt->cur = &slot;
    rt->tx_n = 0;
    rt->tx_self = 0;
    rt->st.calls++;
    const char *msg = NULL;
    char mbuf[96];
    int rc;
    if (builtin) {
      /* ctx.resource is the span's resource: with_resource when it has one */
      rc = sg__lua_agenta_normalize(rt, &slot, s->resource != NULL, &msg);
      rt->tx_self = rc == 0;
      if (rc) {
        snprintf(mbuf, sizeof mbuf, "gw.agenta.normalize: %s", msg);
        msg = mbuf;
      }
    } else {
      if (s->resource != cur_res) {
        cur_res = rt->frozen[0] = s->resource;
        sg__lua_push_json(L, rt, cur_res, SG_PXF_READONLY);
        lua_setfield(L, data, "resource");
      }
      if (s->scope != cur_scope) {
        cur_scope = rt->frozen[1] = s->scope;
        sg__lua_push_json(L, rt, cur_scope, SG_PXF_READONLY);
        lua_setfield(L, data, "scope");
      }
      sg__lua_push_span(L, rt, &slot, 0);                   /* tb, data, span */
      lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_transform); /* tb, data, span, f */
      lua_pushvalue(L, data + 1);                           /* tb, data, span, f, span */
      lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_ctx);       /* tb, data, span, f, span, ctx */
      budget_arm(rt);                                       /* a fresh count per call */
      rc = lua_pcall(L, 2, 1, tb);                          /* tb, data, span, result | msg */
      if (rc == 0) rc = collect(rt, tb, data + 1);          /* tb, data, span, result [, msg] */
    }
    size_t made = 0;
    if (rc == 0) {
      sg__lua_undo_commit(rt);
      sg__lua_slot_commit(rt, &slot);
      copies_done(rt, 1);
      made = rt->tx_self ? 1 : rt->tx_n;
      if (rt->tx_self) slot.owned = 2;
      if (slot.owned != 2) sg_span_clear(s); /* dropped */
      if (made && out_reserve(rt, b, w, w + made, i + 1, nin)) {
        /* no room for the result: it is lost, and reported as such */
        if (rt->tx_self) sg_span_clear(s);
        for (size_t k = 0; !rt->tx_self && k < rt->tx_n; k++) sg_span_clear(&rt->tx_out[k]);
        sg_span_batch_reject(b, "span %zu: out of memory", i);
        made = 0;
      } else if (rt->tx_self) {
        out_put(rt, b, w++, s, slot.nest);
      } else {
        for (size_t k = 0; k < rt->tx_n; k++) out_put(rt, b, w++, &rt->tx_out[k], rt->tx_nest[k]);
      }
      if (made == 0) rt->st.spans_dropped++;
      else if (made > 1) rt->st.spans_added += made - 1;
    } else {
      sg__lua_undo_rollback(rt);
      sg__lua_slot_rollback(rt, &slot);
      copies_done(rt, 0);
      char detail[96], sid[37];
      sg_uuid_format(s->span_id, sid);
      snprintf(detail, sizeof detail, " for span %s of project %s", sid, pid);
      hook_failed(rt, "transform.lua M.span", detail, msg);
      nerr++;
      if (rt->reject_on_error) {
        sg_span_clear(s);
        sg_span_batch_reject(b, "span %zu: rejected by the transform script", i);
        rt->st.spans_rejected++;
      } else if (out_reserve(rt, b, w, w + 1, i + 1, nin)) {
        sg_span_clear(s);
        sg_span_batch_reject(b, "span %zu: out of memory", i);
      } else {
        out_put(rt, b, w++, s, 0); /* kept as it came */
      }
    }
    if (!builtin) {
      lua_settop(L, data); /* tb, data */
      rt->hook_gen++;
    }
    rt->cur = NULL;
  }
  if (!builtin) {
    lua_pushnil(L);
    lua_setfield(L, data, "resource");
    lua_pushnil(L);
    lua_setfield(L, data, "scope");
  }
  call_done(rt, top);
  if (rt->tx_sep) {
    free(b->spans);
    b->spans = rt->out;
    b->cap = rt->out_cap;
    rt->out = NULL;
    rt->out_cap = 0;
    rt->tx_sep = 0;
  }
  b->n = w;
  rt->tx_n = 0;
  if (errors) *errors = nerr;
  return 0;
}

/* ---- routing -------------------------------------------------------------------- */

static size_t route_hash(const uint8_t id[16]) {
  uint64_t h = 1469598103934665603ULL;
  for (int i = 0; i < 16; i++) h = (h ^ id[i]) * 1099511628211ULL;
  return (size_t)h;
}

static sg_lua_route_ent_t *route_find(sg_lua_rt_t *rt, const uint8_t id[16]) {
  if (rt->caproutes == 0) return NULL;
  size_t m = rt->caproutes - 1;
  for (size_t h = route_hash(id) & m;; h = (h + 1) & m) {
    sg_lua_route_ent_t *e = &rt->routes[h];
    if (!e->used) return NULL;
    if (memcmp(e->id, id, 16) == 0) return e;
  }
}

/* The project's entry, added (with nothing cached) when missing; NULL when
 * out of memory (the answer is then not cached: asked again next time). */
static sg_lua_route_ent_t *route_slot(sg_lua_rt_t *rt, const uint8_t id[16]) {
  sg_lua_route_ent_t *e = route_find(rt, id);
  if (e) return e;
  if ((rt->nroutes + 1) * 2 > rt->caproutes) {
    size_t cap = rt->caproutes ? rt->caproutes * 2 : 64;
    if (cap > (1u << 20)) { /* a bounded cache: start over */
      memset(rt->routes, 0, rt->caproutes * sizeof *rt->routes);
      rt->nroutes = 0;
    } else {
      sg_lua_route_ent_t *n = calloc(cap, sizeof *n);
      if (n == NULL) return NULL;
      for (size_t i = 0; i < rt->caproutes; i++) {
        if (!rt->routes[i].used) continue;
        size_t h = route_hash(rt->routes[i].id) & (cap - 1);
        while (n[h].used) h = (h + 1) & (cap - 1);
        n[h] = rt->routes[i];
      }
      free(rt->routes);
      rt->routes = n;
      rt->caproutes = cap;
    }
  }
  size_t m = rt->caproutes - 1, h = route_hash(id) & m;
  while (rt->routes[h].used) h = (h + 1) & m;
  e = &rt->routes[h];
  memset(e, 0, sizeof *e);
  memcpy(e->id, id, 16);
  e->used = 1;
  rt->nroutes++;
  return e;
}

/* Call a hook whose function ref is fn with the arguments already pushed
 * above [tb, f]. Returns the pcall status; the result or message on top. */
static int call_hook(sg_lua_rt_t *rt, int tb, int nargs) {
  rt->st.calls++;
  rt->in_hook = 1;
  budget_arm(rt);
  int rc = lua_pcall(rt->L, nargs, 1, tb);
  budget_disarm(rt);
  return rc;
}

int sg_lua_route_clickhouse(sg_lua_rt_t *rt, const uint8_t project_id[16], int *on) {
  *on = 0;
  if (!rt->use_clickhouse) return 0;
  *on = 1;
  if (!(rt->hooks & SG_LUA_HOOK_CLICKHOUSE)) return 0;
  sg_lua_route_ent_t *e = route_find(rt, project_id);
  if (e && e->ch) {
    *on = e->ch == 2;
    return 0;
  }
  lua_State *L = rt->L;
  int top = lua_gettop(L), ret = 0;
  char pid[37];
  sg_uuid_format(project_id, pid);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_traceback);  /* tb */
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_clickhouse); /* tb, f */
  lua_pushlstring(L, pid, 36);                           /* tb, f, pid */
  int rc = call_hook(rt, top + 1, 1);                    /* tb, result | msg */
  if (rc == 0 && !lua_isboolean(L, -1)) {
    lua_pushfstring(L, "M.clickhouse must return a boolean (got %s)", luaL_typename(L, -1));
    rc = LUA_ERRRUN;
  }
  char detail[64];
  snprintf(detail, sizeof detail, " for project %s", pid);
  if (rc) {
    hook_failed(rt, "routing.lua M.clickhouse", detail, NULL);
    ret = SG_ESCRIPT; /* default (on), not cached: asked again next time */
  } else {
    *on = lua_toboolean(L, -1);
    if ((e = route_slot(rt, project_id)) != NULL) e->ch = *on ? 2 : 1;
  }
  call_done(rt, top);
  return ret;
}

int sg_lua_route_postgres(sg_lua_rt_t *rt, const uint8_t project_id[16], int *on) {
  *on = 1;
  if (!rt->use_clickhouse || !(rt->hooks & SG_LUA_HOOK_POSTGRES)) return 0;
  sg_lua_route_ent_t *e = route_find(rt, project_id);
  if (e && e->pg) {
    *on = e->pg == 2;
    return 0;
  }
  /* Off PostgreSQL only into ClickHouse: a project M.clickhouse keeps out
   * (or cannot answer for) stays on PostgreSQL, whatever M.postgres says. */
  int ch = 0;
  if (sg_lua_route_clickhouse(rt, project_id, &ch) != 0) return SG_ESCRIPT;
  lua_State *L = rt->L;
  int top = lua_gettop(L), ret = 0;
  char pid[37];
  sg_uuid_format(project_id, pid);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_traceback); /* tb */
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_postgres);  /* tb, f */
  lua_pushlstring(L, pid, 36);                          /* tb, f, pid */
  int rc = call_hook(rt, top + 1, 1);                   /* tb, result | msg */
  if (rc == 0 && !lua_isboolean(L, -1)) {
    lua_pushfstring(L, "M.postgres must return a boolean (got %s)", luaL_typename(L, -1));
    rc = LUA_ERRRUN;
  }
  if (rc == 0 && !lua_toboolean(L, -1) && !ch) {
    lua_pushstring(L, "M.postgres says false but M.clickhouse keeps the project out of ClickHouse: "
                      "its spans stay on PostgreSQL");
    rc = LUA_ERRRUN;
  }
  char detail[64];
  snprintf(detail, sizeof detail, " for project %s", pid);
  if (rc) {
    hook_failed(rt, "routing.lua M.postgres", detail, NULL);
    ret = SG_ESCRIPT; /* default (PostgreSQL), not cached: asked again next time */
  } else {
    *on = lua_toboolean(L, -1);
    if ((e = route_slot(rt, project_id)) != NULL) e->pg = *on ? 2 : 1;
  }
  call_done(rt, top);
  return ret;
}

int sg_lua_read_backend(sg_lua_rt_t *rt, const uint8_t project_id[16], const json_t *query,
                        const char *endpoint, int *backend) {
  *backend = SG_READ_POSTGRES;
  if (!(rt->hooks & SG_LUA_HOOK_READ_BACKEND)) return 0;
  lua_State *L = rt->L;
  int top = lua_gettop(L), ret = 0;
  char pid[37];
  sg_uuid_format(project_id, pid);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_traceback);    /* tb */
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_read_backend); /* tb, f */
  rt->frozen[0] = (json_t *)query;
  sg__lua_push_json(L, rt, (json_t *)query, SG_PXF_READONLY); /* tb, f, query */
  lua_pushlstring(L, pid, 36);                                /* tb, f, query, pid */
  lua_pushstring(L, endpoint ? endpoint : "analytics");       /* tb, f, query, pid, endpoint */
  int rc = call_hook(rt, top + 1, 3);                         /* tb, result | msg */
  if (rc == 0) {
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (s && strcmp(s, "clickhouse") == 0) *backend = SG_READ_CLICKHOUSE;
    else if (!s || strcmp(s, "postgres") != 0) {
      lua_pushfstring(L, "M.read_backend must return \"postgres\" or \"clickhouse\" (got %s)",
                      s ? s : luaL_typename(L, -1));
      rc = LUA_ERRRUN;
    }
  }
  if (rc) {
    hook_failed(rt, "routing.lua M.read_backend", NULL, NULL);
    ret = SG_ESCRIPT;
  }
  call_done(rt, top);
  return ret;
}

int sg_lua_retention_days(sg_lua_rt_t *rt, const uint8_t project_id[16], const sg_span_t *s,
                          double *days) {
  *days = -1;
  if (!(rt->hooks & SG_LUA_HOOK_RETENTION)) return 0;
  lua_State *L = rt->L;
  int top = lua_gettop(L), ret = 0;
  char pid[37];
  sg_uuid_format(project_id, pid);
  sg_lua_slot_t slot;
  memset(&slot, 0, sizeof slot);
  slot.s = (sg_span_t *)s; /* read-only proxy: never written */
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_traceback); /* tb */
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_retention); /* tb, f */
  lua_pushlstring(L, pid, 36);                          /* tb, f, pid */
  sg__lua_push_span(L, rt, &slot, 1);                   /* tb, f, pid, span */
  int rc = call_hook(rt, top + 1, 2);                   /* tb, result | msg */
  if (rc == 0 && !lua_isnil(L, -1)) {
    double d = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
    if (d > 0 && d < 1e9) *days = d;
    else if (d != 0) {
      lua_pushfstring(L, "M.retention_days must return a number of days >= 0 or nil (got %s)",
                      lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
      rc = LUA_ERRRUN;
    }
  }
  if (rc) {
    char detail[64];
    snprintf(detail, sizeof detail, " for project %s", pid);
    hook_failed(rt, "ttl.lua M.retention_days", detail, NULL);
    *days = -1;
    ret = SG_ESCRIPT;
  }
  call_done(rt, top);
  return ret;
}
