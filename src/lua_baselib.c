/* lua_baselib.c - type, next, pairs and ipairs as the scripts see them: a
 * span or JSON proxy answers as the table it stands for.
 *
 * Proxies are userdata (lua_span.c), and LuaJIT (Lua 5.1) has no __pairs:
 * the stock functions say "userdata" and refuse to iterate them, so an
 * operator's natural guard `if type(span.attributes) ~= "table" then return
 * end` silently skipped the rest of a redaction. These replace the globals
 * in every runtime's state (hooks and jobs alike), before the scripts load:
 *
 *   type(v)        "table" for a span or a JSON object/array proxy (gw.type
 *                  still tells "span", "object" and "array" apart);
 *   next(v, k)     a JSON object's members in stored order, a JSON array's
 *                  elements 1..n, a span's fields that are not nil in a
 *                  fixed order; plain tables as before;
 *   pairs(v)       next, v, nil; for a JSON object an iterator over the
 *                  keys it has when the loop starts, so deleting members
 *                  while iterating works (gw.pairs is the same function);
 *   ipairs(v)      1..n of a JSON array (JSON null is gw.null, not a hole);
 *                  nothing for an object or a span, as for a table without
 *                  [1].
 *
 * Values come from the proxies' own __index, so they are what v.key gives
 * (nested containers as proxies, read-only where v is). The rest of the
 * table library (rawget, table.insert, unpack, ...) still needs a real
 * table: gw.totable(v) makes one. Plain tables pay nothing but one type
 * check (pairs and ipairs hand back the stock iterators).
 */
#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>
#include <string.h>

#include "err.h"
#include "lua_internal.h"

#define RT() ((sg_lua_rt_t *)lua_touserdata(L, lua_upvalueindex(1)))

/* Raises like the stock functions: "bad argument #1 to 'pairs' (table
 * expected, got nil)". */
static int table_expected(lua_State *L) {
  return luaL_argerror(L, 1, lua_pushfstring(L, "table expected, got %s", luaL_typename(L, 1)));
}

/* The span's next field after the one named at index 2 (nil: the first)
 * whose value is not nil: pushes name, value and returns 2, or returns 0
 * at the end. */
static int span_next(lua_State *L, sg_lua_rt_t *rt) {
  enum { NF = sizeof rt->field_ptr / sizeof rt->field_ptr[0] };
  size_t i = 0;
  if (!lua_isnil(L, 2)) {
    /* Field names are interned and anchored: the same text is the same pointer. */
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
    while (i < NF && rt->field_ptr[i] && rt->field_ptr[i] != k) i++;
    if (i == NF || rt->field_ptr[i] == NULL) return luaL_error(L, "invalid key to 'next'");
    i++;
  }
  for (; i < NF && rt->field_ptr[i]; i++) {
    lua_pushstring(L, rt->field_ptr[i]);   /* name */
    lua_pushvalue(L, -1);                  /* name, name */
    lua_gettable(L, 1);                    /* name, value (span.__index) */
    if (!lua_isnil(L, -1)) return 2;
    lua_pop(L, 2);
  }
  return 0;
}

/* A JSON container's member or element after the key at index 2. */
static int json_next(lua_State *L, sg_lua_proxy_t *p) {
  json_t *c = sg__lua_check_json_proxy(L, 1, 0); /* raises when stale */
  int fl = p->flags & (SG_PXF_READONLY | SG_PXF_OWNED);
  if (json_is_array(c)) {
    size_t i = 0;
    if (!lua_isnil(L, 2)) {
      lua_Number d = lua_type(L, 2) == LUA_TNUMBER ? lua_tonumber(L, 2) : 0;
      if (!(d >= 1 && d <= (lua_Number)json_array_size(c) && d == (lua_Number)(size_t)d))
        return luaL_error(L, "invalid key to 'next'");
      i = (size_t)d;
    }
    if (i >= json_array_size(c)) return 0;
    lua_pushnumber(L, (lua_Number)(i + 1));
    sg__lua_push_json(L, p->rt, json_array_get(c, i), fl);
    return 2;
  }
  void *it;
  if (lua_isnil(L, 2)) {
    it = json_object_iter(c);
  } else {
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
    it = k ? json_object_iter_at(c, k) : NULL;
    if (it == NULL) return luaL_error(L, "invalid key to 'next'");
    it = json_object_iter_next(c, it);
  }
  if (it == NULL) return 0;
  lua_pushlstring(L, json_object_iter_key(it), json_object_iter_key_len(it));
  sg__lua_push_json(L, p->rt, json_object_iter_value(it), fl);
  return 2;
}

/* next(t [, k]) */
static int base_next(lua_State *L) {
  sg_lua_rt_t *rt = RT();
  lua_settop(L, 2);
  if (lua_istable(L, 1)) {
    if (lua_next(L, 1)) return 2;
    lua_pushnil(L);
    return 1;
  }
  sg_lua_proxy_t *p = sg__lua_test_proxy_rt(L, 1, rt);
  if (p == NULL) return table_expected(L);
  int n = p->tag == SG_PX_SPAN ? span_next(L, rt) : json_next(L, p);
  if (n) return n;
  lua_pushnil(L);
  return 1;
}

/* The iterator pairs() gives for a JSON object: (obj, _) -> the next key
 * of the snapshot (upvalue 1, with the position in upvalue 2) that still
 * has a value, and that value. A snapshot, because the natural redaction
 * loop deletes members while it iterates (`a[k] = nil`), and a deleted key
 * can no longer say which member came after it. */
static int object_next(lua_State *L) {
  int i = (int)lua_tointeger(L, lua_upvalueindex(2));
  lua_settop(L, 1);                                 /* obj */
  for (;;) {
    lua_rawgeti(L, lua_upvalueindex(1), ++i);       /* obj, key | nil */
    if (lua_isnil(L, -1)) break;
    lua_pushvalue(L, -1);                           /* obj, key, key */
    lua_gettable(L, 1);                             /* obj, key, value (__index) */
    if (!lua_isnil(L, -1)) break;                   /* deleted meanwhile: skip */
    lua_pop(L, 2);                                  /* obj */
  }
  lua_pushinteger(L, i);
  lua_replace(L, lua_upvalueindex(2));
  return lua_isnil(L, -1) ? 0 : 2;
}

/* pairs(t) -> next, t, nil. Upvalues: rt, the stock next, ours. */
static int base_pairs(lua_State *L) {
  sg_lua_proxy_t *p = NULL;
  if (lua_istable(L, 1)) {
    lua_pushvalue(L, lua_upvalueindex(2));          /* next */
  } else if ((p = sg__lua_test_proxy_rt(L, 1, RT())) == NULL) {
    return table_expected(L);
  } else if (p->tag == SG_PX_JSON && json_is_object(sg__lua_check_json_proxy(L, 1, 0))) {
    json_t *c = p->u.json;
    lua_createtable(L, (int)json_object_size(c), 0); /* keys */
    int i = 0;
    for (void *it = json_object_iter(c); it; it = json_object_iter_next(c, it)) {
      lua_pushlstring(L, json_object_iter_key(it), json_object_iter_key_len(it));
      lua_rawseti(L, -2, ++i);
    }
    lua_pushinteger(L, 0);                          /* keys, 0 */
    lua_pushcclosure(L, object_next, 2);            /* iterator */
  } else {
    lua_pushvalue(L, lua_upvalueindex(3));          /* our next */
  }
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

/* ipairs over a proxy: (p, i) -> i + 1, p[i + 1] until that is nil. */
static int proxy_ipairs_aux(lua_State *L) {
  lua_Number i = lua_tonumber(L, 2) + 1;
  lua_settop(L, 1);
  lua_pushnumber(L, i);   /* p, i */
  lua_pushvalue(L, -1);   /* p, i, i */
  lua_gettable(L, 1);     /* p, i, v */
  return lua_isnil(L, -1) ? 0 : 2;
}

/* ipairs(t) -> aux, t, 0. Upvalues: rt, the stock aux, ours. */
static int base_ipairs(lua_State *L) {
  if (lua_istable(L, 1)) lua_pushvalue(L, lua_upvalueindex(2));
  else if (sg__lua_test_proxy_rt(L, 1, RT())) lua_pushvalue(L, lua_upvalueindex(3));
  else return table_expected(L);
  lua_pushvalue(L, 1);
  lua_pushnumber(L, 0);
  return 3;
}

/* type(v). Upvalues: rt, then the name of each type code 0..10 (interned
 * once here: pushing a C string would hash it on every call). */
#define TYPE_CODES 11 /* LUA_TNIL .. LuaJIT's cdata (10) */
static int base_type(lua_State *L) {
  int t = lua_type(L, 1);
  if (t == LUA_TNONE) return luaL_argerror(L, 1, "value expected");
  if (t == LUA_TUSERDATA && sg__lua_test_proxy_rt(L, 1, RT())) t = LUA_TTABLE;
  lua_pushvalue(L, lua_upvalueindex(2 + t));
  return 1;
}

int sg__lua_baselib_init(lua_State *L, sg_lua_rt_t *rt) {
  lua_pushlightuserdata(L, rt);                 /* rt */
  for (int t = 0; t < TYPE_CODES; t++)
    lua_pushstring(L, lua_typename(L, t)); /* rt, names... */
  lua_pushcclosure(L, base_type, 1 + TYPE_CODES); /* type */
  lua_setglobal(L, "type");                     /* - */

  lua_pushlightuserdata(L, rt);                 /* rt */
  lua_pushcclosure(L, base_next, 1);            /* next */
  lua_pushlightuserdata(L, rt);                 /* next, rt */
  lua_getglobal(L, "next");                     /* next, rt, stock next */
  lua_pushvalue(L, -3);                         /* next, rt, stock next, next */
  lua_pushcclosure(L, base_pairs, 3);           /* next, pairs */
  lua_setglobal(L, "pairs");                    /* next */
  lua_setglobal(L, "next");                     /* - */

  lua_pushlightuserdata(L, rt);                 /* rt */
  lua_getglobal(L, "ipairs");                   /* rt, stock ipairs */
  lua_newtable(L);                              /* rt, stock ipairs, {} */
  if (lua_pcall(L, 1, 1, 0)) {                  /* rt, stock aux | msg */
    lua_pop(L, 2);
    return SG_ESCRIPT;
  }
  lua_pushcfunction(L, proxy_ipairs_aux);       /* rt, stock aux, aux */
  lua_pushcclosure(L, base_ipairs, 3);          /* ipairs */
  lua_setglobal(L, "ipairs");                   /* - */
  return 0;
}
