/* lua_span.c - the span as seen from Lua, and C <-> Lua value conversion.
 *
 * A span is a userdata proxy over the C record; span.attributes (and every
 * JSON container below it) is a userdata proxy over the jansson value. A
 * read converts one value on access; an assignment converts one value and
 * writes it into the record or the JSON tree. Values nobody touches stay the
 * decoder's json_t, so they are stored byte for byte as they came (int64
 * beyond 2^53, 1 vs 1.0, {} vs [], null, unicode).
 *
 * Value model (reads): string -> string; true/false -> boolean; integer ->
 * number when |v| <= 2^53, else int64 cdata (9223372036854775807LL); real ->
 * number; null -> gw.null; object / array -> proxy. Assignments: string
 * (invalid UTF-8 and NUL bytes become U+FFFD, as the decoders do), boolean,
 * number (integral -> integer, else real; NaN and infinities are errors),
 * int64/uint64 cdata -> exact integer, gw.null, table (array when its keys
 * are 1..n, object when they are strings; gw.array()/gw.object() mark empty
 * or explicit ones), proxy (a copy of the container, except read-only
 * values which are shared). nil deletes an object member (or the last
 * array element). Assigning the value a member already has keeps the
 * stored value (so a.x = a.x keeps 1.0 a real).
 *
 * Lifetime: a proxy is valid during the hook call that made it (read-only
 * proxies: during the whole sg_lua_* call); using it later raises "stale".
 * Every container a proxy points at is referenced (pinned) until the
 * sg_lua_* call ends, so assignments that unlink it cannot free it under
 * the proxy. In-place changes to JSON are logged (undo log) and the span's
 * own fields are snapshotted, so a hook that fails leaves the span exactly
 * as it came.
 */
#include "lua_internal.h"

#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "json_nest.h"

#define LUA_TCDATA_ 10 /* LuaJIT's type tag for FFI cdata (not in lua.h) */
#define MAX_CONV_DEPTH 64

enum { U_OBJ_SET, U_OBJ_SNAP, U_ARR_SET, U_ARR_APPEND, U_ARR_POP };

/* ---- pins and undo ------------------------------------------------------------ */

void sg__lua_pin(sg_lua_rt_t *rt, json_t *v) {
  if (rt->npins == rt->cappins) {
    size_t cap = rt->cappins ? rt->cappins * 2 : 64;
    json_t **p = realloc(rt->pins, cap * sizeof *p);
    if (p == NULL) return; /* unpinned: still safe unless the hook unlinks it */
    rt->pins = p;
    rt->cappins = cap;
  }
  rt->pins[rt->npins++] = json_incref(v);
}

void sg__lua_unpin_all(sg_lua_rt_t *rt) {
  for (size_t i = 0; i < rt->npins; i++) json_decref(rt->pins[i]);
  rt->npins = 0;
}

static int undo_reserve(sg_lua_rt_t *rt) {
  if (rt->nundo < rt->capundo) return 0;
  size_t cap = rt->capundo ? rt->capundo * 2 : 32;
  sg_lua_undo_t *p = realloc(rt->undo, cap * sizeof *p);
  if (p == NULL) return SG_ENOMEM;
  rt->undo = p;
  rt->capundo = cap;
  return 0;
}

/* Append an undo entry; raises "out of memory" (nothing changed yet). */
static sg_lua_undo_t *undo_push(lua_State *L, sg_lua_rt_t *rt, int op, json_t *c) {
  if (rt->nundo == rt->capundo) {
    size_t cap = rt->capundo ? rt->capundo * 2 : 32;
    sg_lua_undo_t *p = realloc(rt->undo, cap * sizeof *p);
    if (p == NULL) luaL_error(L, "out of memory");
    rt->undo = p;
    rt->capundo = cap;
  }
  sg_lua_undo_t *u = &rt->undo[rt->nundo++];
  memset(u, 0, sizeof *u);
  u->op = op;
  u->c = json_incref(c);
  return u;
}

void sg__lua_undo_commit(sg_lua_rt_t *rt) {
  for (size_t i = 0; i < rt->nundo; i++) {
    json_decref(rt->undo[i].c);
    json_decref(rt->undo[i].old);
  }
  rt->nundo = 0;
  sg_buf_reset(&rt->undo_keys);
}

/* Log that member k of c (which holds old, or nothing) is about to be set,
 * so a rollback restores it. 0 or SG_ENOMEM (nothing logged). */
int sg__lua_undo_obj_set(sg_lua_rt_t *rt, json_t *c, const char *k, size_t kl, json_t *old) {
  size_t off = rt->undo_keys.len;
  if (undo_reserve(rt) || sg_buf_append(&rt->undo_keys, k, kl) ||
      sg_buf_putc(&rt->undo_keys, '\0')) {
    rt->undo_keys.len = off;
    if (rt->undo_keys.data) rt->undo_keys.data[off] = '\0';
    return SG_ENOMEM;
  }
  sg_lua_undo_t *e = &rt->undo[rt->nundo++];
  memset(e, 0, sizeof *e);
  e->op = U_OBJ_SET;
  e->c = json_incref(c);
  e->old = old ? json_incref(old) : NULL;
  e->idx = off;
  e->klen = kl;
  return 0;
}

/* Reverse order. Restoring a shallow snapshot puts the members back in their
 * original order (a deleted key re-added by json_object_set would go last). */
void sg__lua_undo_rollback(sg_lua_rt_t *rt) {
  for (size_t i = rt->nundo; i-- > 0;) {
    sg_lua_undo_t *u = &rt->undo[i];
    const char *key = rt->undo_keys.data ? rt->undo_keys.data + u->idx : "";
    switch (u->op) {
    case U_OBJ_SET:
      if (u->old) json_object_setn_nocheck(u->c, key, u->klen, u->old);
      else json_object_deln(u->c, key, u->klen);
      break;
    case U_OBJ_SNAP:
      json_object_clear(u->c);
      json_object_update(u->c, u->old);
      break;
    case U_ARR_SET: json_array_set(u->c, u->idx, u->old); break;
    case U_ARR_APPEND: json_array_remove(u->c, json_array_size(u->c) - 1); break;
    case U_ARR_POP: json_array_append(u->c, u->old); break;
    }
  }
  sg__lua_undo_commit(rt);
}

/* ---- slots: snapshot, commit, rollback --------------------------------------- */

void sg__lua_slot_begin(sg_lua_rt_t *rt, sg_lua_slot_t *slot) {
  (void)rt;
  slot->orig = *slot->s;
  slot->orig_nest = slot->nest;
}

#define STR_FIELDS(XX) XX(span_name) XX(status_message) XX(session_id) XX(user_id) XX(agent_id)
#define JSON_FIELDS(XX) XX(attributes) XX(references) XX(links) XX(hashes) XX(events)

void sg__lua_slot_commit(sg_lua_rt_t *rt, sg_lua_slot_t *slot) {
  (void)rt;
  sg_span_t *s = slot->s, *o = &slot->orig;
#define XX(f) if (s->f != o->f) free(o->f);
  STR_FIELDS(XX)
#undef XX
#define XX(f) if (s->f != o->f) json_decref(o->f);
  JSON_FIELDS(XX)
#undef XX
  slot->orig = *s;
  slot->orig_nest = slot->nest;
}

void sg__lua_slot_rollback(sg_lua_rt_t *rt, sg_lua_slot_t *slot) {
  (void)rt;
  sg_span_t *s = slot->s, *o = &slot->orig;
#define XX(f) if (s->f != o->f) free(s->f);
  STR_FIELDS(XX)
#undef XX
#define XX(f) if (s->f != o->f) json_decref(s->f);
  JSON_FIELDS(XX)
#undef XX
  *s = *o;
  slot->nest = slot->orig_nest;
}

sg_lua_slot_t *sg__lua_copy_slot(lua_State *L, sg_lua_rt_t *rt, const sg_lua_slot_t *src) {
  sg_lua_slot_t *c = calloc(1, sizeof *c);
  sg_span_t *s = calloc(1, sizeof *s);
  if (c == NULL || s == NULL || sg_span_copy(s, src->s) != 0) {
    free(c);
    free(s);
    luaL_error(L, "out of memory");
    return NULL;
  }
  c->s = s;
  c->nest = src->nest;
  c->owned = 1;
  c->next_copy = rt->copies;
  rt->copies = c;
  sg__lua_slot_begin(rt, c);
  return c;
}

/* ---- proxies ------------------------------------------------------------------ */

static char rt_key; /* registry[&rt_key] = lightuserdata rt (set by sg__lua_span_init) */

sg_lua_rt_t *sg__lua_rt_of(lua_State *L) {
  lua_pushlightuserdata(L, &rt_key);    /* key */
  lua_rawget(L, LUA_REGISTRYINDEX);     /* rt */
  sg_lua_rt_t *rt = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return rt;
}

/* rt: the runtime of L (C closures have it as an upvalue, which saves the
 * registry look-up of sg__lua_rt_of). */
sg_lua_proxy_t *sg__lua_test_proxy_rt(lua_State *L, int idx, sg_lua_rt_t *rt) {
  if (lua_type(L, idx) != LUA_TUSERDATA) return NULL;
  sg_lua_proxy_t *p = lua_touserdata(L, idx);
  if (lua_objlen(L, idx) != sizeof *p) return NULL;
  if (p->tag != SG_PX_SPAN && p->tag != SG_PX_JSON) return NULL;
  /* A foreign userdata of the same size and first bytes is possible in
   * theory: the metatable must be one of ours. */
  if (!lua_getmetatable(L, idx)) return NULL; /* mt */
  const void *mt = lua_topointer(L, -1);
  lua_pop(L, 1);
  return rt && (mt == rt->mt_ptr[0] || mt == rt->mt_ptr[1] || mt == rt->mt_ptr[2]) ? p : NULL;
}

sg_lua_proxy_t *sg__lua_test_proxy(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TUSERDATA) return NULL;
  return sg__lua_test_proxy_rt(L, idx, sg__lua_rt_of(L));
}

static int proxy_live(const sg_lua_proxy_t *p) {
  if (p->flags & SG_PXF_OWNED) return 1;
  if (p->flags & SG_PXF_READONLY) return p->gen == p->rt->call_gen;
  return p->gen == p->rt->hook_gen;
}

static sg_lua_proxy_t *check_proxy_rt(lua_State *L, int idx, int tag, int writable, sg_lua_rt_t *rt) {
  sg_lua_proxy_t *p = rt ? sg__lua_test_proxy_rt(L, idx, rt) : sg__lua_test_proxy(L, idx);
  if (p == NULL || p->tag != tag)
    luaL_error(L, "bad argument #%d (%s expected, got %s)", idx,
               tag == SG_PX_SPAN ? "span" : "JSON object or array", luaL_typename(L, idx));
  if (!proxy_live(p))
    luaL_error(L, "stale %s: proxies are valid only during the hook call that made them",
               tag == SG_PX_SPAN ? "span" : "JSON value");
  if (writable && (p->flags & SG_PXF_READONLY))
    luaL_error(L, "read-only %s", tag == SG_PX_SPAN ? "span" : "value");
  return p;
}

static sg_lua_proxy_t *check_proxy(lua_State *L, int idx, int tag, int writable) {
  return check_proxy_rt(L, idx, tag, writable, NULL);
}

json_t *sg__lua_check_json_proxy(lua_State *L, int idx, int writable) {
  return check_proxy(L, idx, SG_PX_JSON, writable)->u.json;
}

sg_lua_slot_t *sg__lua_check_span(lua_State *L, int idx, int writable) {
  return check_proxy(L, idx, SG_PX_SPAN, writable)->u.slot;
}

sg_lua_slot_t *sg__lua_check_span_rt(lua_State *L, int idx, int writable, sg_lua_rt_t *rt) {
  return check_proxy_rt(L, idx, SG_PX_SPAN, writable, rt)->u.slot;
}

static int is_frozen(sg_lua_rt_t *rt, json_t *v) {
  for (int i = 0; i < 4; i++)
    if (rt->frozen[i] == v) return 1;
  return 0;
}

void sg__lua_push_json(lua_State *L, sg_lua_rt_t *rt, json_t *v, int flags) {
  if (v == NULL) {
    lua_pushnil(L);
    return;
  }
  switch (json_typeof(v)) {
  case JSON_STRING: lua_pushlstring(L, json_string_value(v), json_string_length(v)); return;
  case JSON_INTEGER: sg__lua_push_int64(L, rt, json_integer_value(v)); return;
  case JSON_REAL: lua_pushnumber(L, json_real_value(v)); return;
  case JSON_TRUE: lua_pushboolean(L, 1); return;
  case JSON_FALSE: lua_pushboolean(L, 0); return;
  case JSON_NULL: lua_pushlightuserdata(L, NULL); return;
  case JSON_OBJECT:
  case JSON_ARRAY: break;
  }
  if (!(flags & SG_PXF_OWNED) && is_frozen(rt, v)) flags |= SG_PXF_READONLY;
  sg_lua_proxy_t *p = lua_newuserdata(L, sizeof *p); /* proxy */
  p->tag = SG_PX_JSON;
  p->flags = (uint16_t)flags;
  p->rt = rt;
  p->gen = (flags & SG_PXF_READONLY) ? rt->call_gen : rt->hook_gen;
  if (flags & SG_PXF_OWNED) p->u.json = json_incref(v);
  else {
    sg__lua_pin(rt, v);
    p->u.json = v;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, (flags & SG_PXF_OWNED) ? rt->ref_mt_json_gc : rt->ref_mt_json);
  lua_setmetatable(L, -2); /* proxy */
}

void sg__lua_push_span(lua_State *L, sg_lua_rt_t *rt, sg_lua_slot_t *slot, int readonly) {
  sg_lua_proxy_t *p = lua_newuserdata(L, sizeof *p); /* proxy */
  p->tag = SG_PX_SPAN;
  p->flags = readonly ? SG_PXF_READONLY : 0;
  p->rt = rt;
  p->gen = readonly ? rt->call_gen : rt->hook_gen;
  p->u.slot = slot;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_mt_span);
  lua_setmetatable(L, -2); /* proxy */
}

/* ---- int64 -------------------------------------------------------------------- */

#define TWO53 9007199254740992LL

void sg__lua_push_int64(lua_State *L, sg_lua_rt_t *rt, int64_t v) {
  if (v >= -TWO53 && v <= TWO53) {
    lua_pushnumber(L, (lua_Number)v);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_mk_i64); /* mk */
  lua_pushlightuserdata(L, &v);                      /* mk, &v */
  lua_call(L, 1, 1);                                 /* cdata */
}

int sg__lua_to_int64(lua_State *L, sg_lua_rt_t *rt, int idx, int64_t *out) {
  if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = lua_gettop(L) + idx + 1;
  int t = lua_type(L, idx);
  if (t == LUA_TNUMBER) {
    double d = lua_tonumber(L, idx);
    if (d != floor(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0) return 0;
    *out = (int64_t)d;
    return 1;
  }
  if (t != LUA_TCDATA_) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_i64_str); /* f */
  lua_pushvalue(L, idx);                              /* f, v */
  lua_call(L, 1, 1);                                  /* "123LL" | nil */
  const char *s = lua_tostring(L, -1);
  int ok = 0;
  if (s) {
    char *end;
    if (strstr(s, "ULL")) {
      unsigned long long u = strtoull(s, &end, 10);
      if (u <= (unsigned long long)INT64_MAX) {
        *out = (int64_t)u;
        ok = 1;
      }
    } else {
      *out = strtoll(s, &end, 10);
      ok = 1;
    }
  }
  lua_pop(L, 1);
  return ok;
}

/* ---- Lua -> JSON ------------------------------------------------------------- */

static int utf8_clean(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c >= 0x01 && c < 0x80) {
      i++;
      continue;
    }
    if (c == 0) return 0;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
      need = 2;
      if (c == 0xE0) lo = 0xA0;
      else if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 3;
      if (c == 0xF0) lo = 0x90;
      else if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (i + need >= n) return 0;
    for (size_t k = 1; k <= need; k++) {
      unsigned char t = p[i + k];
      if (k == 1 ? (t < lo || t > hi) : (t < 0x80 || t > 0xBF)) return 0;
    }
    i += need + 1;
  }
  return 1;
}

/* New JSON string from Lua bytes, sanitised like the decoders do. */
static json_t *json_str(const char *s, size_t n) {
  if (utf8_clean(s, n)) return json_stringn_nocheck(s, n);
  char *c = sg_utf8_sanitize(s, n, NULL);
  if (c == NULL) return NULL;
  json_t *j = json_stringn_nocheck(c, strlen(c));
  free(c);
  return j;
}

/* Sanitised copy of a Lua string as a C string (caller frees). */
static char *c_str(const char *s, size_t n) {
  if (utf8_clean(s, n)) {
    char *r = malloc(n + 1);
    if (r) {
      memcpy(r, s, n);
      r[n] = '\0';
    }
    return r;
  }
  return sg_utf8_sanitize(s, n, NULL);
}

static int has_mt(lua_State *L, int idx, int ref) {
  if (!lua_getmetatable(L, idx)) return 0; /* mt */
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);  /* mt, marker */
  int r = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return r;
}

/* Converts without raising: NULL and *err on failure (nothing leaks). */
static json_t *conv(lua_State *L, sg_lua_rt_t *rt, int idx, int depth, const char **err) {
  if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = lua_gettop(L) + idx + 1;
  int t = lua_type(L, idx);
  switch (t) {
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    json_t *j = json_str(s, n);
    if (!j) *err = "out of memory";
    return j;
  }
  case LUA_TBOOLEAN: return json_boolean(lua_toboolean(L, idx));
  case LUA_TNUMBER: {
    double d = lua_tonumber(L, idx);
    json_t *j;
    if (!isfinite(d)) {
      *err = "NaN and infinities are not JSON";
      return NULL;
    }
    if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0)
      j = json_integer((json_int_t)d);
    else j = json_real(d);
    if (!j) *err = "out of memory";
    return j;
  }
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) return json_null();
    *err = "light userdata other than gw.null cannot be stored";
    return NULL;
  case LUA_TCDATA_: {
    int64_t v;
    if (!sg__lua_to_int64(L, rt, idx, &v)) {
      *err = "only int64_t / uint64_t cdata (up to 2^63-1) can be stored";
      return NULL;
    }
    return json_integer(v);
  }
  case LUA_TUSERDATA: {
    sg_lua_proxy_t *p = sg__lua_test_proxy(L, idx);
    if (p == NULL || p->tag != SG_PX_JSON) {
      *err = p ? "a span cannot be stored as a JSON value" : "userdata cannot be stored";
      return NULL;
    }
    if (!proxy_live(p)) {
      *err = "stale JSON value (from an earlier hook call)";
      return NULL;
    }
    /* Read-only values are shared (they cannot change); anything else is
     * copied, so no cycle and no aliasing can be made. */
    if (p->flags & SG_PXF_READONLY) return json_incref(p->u.json);
    json_t *j = json_deep_copy(p->u.json);
    if (!j) *err = "out of memory";
    return j;
  }
  case LUA_TTABLE: break;
  default:
    *err = t == LUA_TFUNCTION ? "a function cannot be stored" : "this type cannot be stored";
    return NULL;
  }
  if (depth >= MAX_CONV_DEPTH) {
    *err = "table nested too deeply (or a cycle)";
    return NULL;
  }
  if (!lua_checkstack(L, 4)) {
    *err = "Lua stack overflow";
    return NULL;
  }
  int kind = 0; /* 1 array, 2 object */
  if (has_mt(L, idx, rt->ref_mt_array)) kind = 1;
  else if (has_mt(L, idx, rt->ref_mt_object)) kind = 2;
  size_t count = 0, nstr = 0;
  double maxn = 0;
  lua_pushnil(L); /* nil */
  while (lua_next(L, idx)) { /* k, v */
    count++;
    if (lua_type(L, -2) == LUA_TSTRING) nstr++;
    else if (lua_type(L, -2) == LUA_TNUMBER) {
      double k = lua_tonumber(L, -2);
      if (k >= 1 && k == floor(k) && k > maxn) maxn = k;
    }
    lua_pop(L, 1); /* k */
  }
  if (kind == 0) kind = (count > 0 && nstr == 0 && maxn == (double)count) ? 1 : 2;
  json_t *out;
  if (kind == 1) {
    if (nstr > 0 || maxn != (double)count) {
      *err = "an array table must have exactly the keys 1..n";
      return NULL;
    }
    out = json_array();
    for (size_t i = 1; out && i <= count; i++) {
      lua_rawgeti(L, idx, (int)i); /* v */
      json_t *e = conv(L, rt, -1, depth + 1, err);
      lua_pop(L, 1);
      if (!e || json_array_append_new(out, e)) {
        json_decref(out);
        if (e && !*err) *err = "out of memory";
        return NULL;
      }
    }
  } else {
    if (nstr != count) {
      *err = "an object table must have string keys only (mixed or number keys)";
      return NULL;
    }
    out = json_object();
    lua_pushnil(L);
    while (out && lua_next(L, idx)) { /* k, v */
      size_t kl;
      const char *k = lua_tolstring(L, -2, &kl);
      json_t *e = conv(L, rt, -1, depth + 1, err);
      int bad = e == NULL;
      if (!bad) {
        if (utf8_clean(k, kl)) bad = json_object_setn_new_nocheck(out, k, kl, e) != 0;
        else {
          char *ck = c_str(k, kl);
          bad = !ck || json_object_setn_new_nocheck(out, ck, strlen(ck), e) != 0;
          if (!ck) json_decref(e);
          free(ck);
        }
        if (bad && !*err) *err = "out of memory";
      }
      lua_pop(L, 1); /* k */
      if (bad) {
        lua_pop(L, 1);
        json_decref(out);
        return NULL;
      }
    }
  }
  if (!out && !*err) *err = "out of memory";
  return out;
}

json_t *sg__lua_to_json(lua_State *L, sg_lua_rt_t *rt, int idx, const char *what) {
  const char *err = NULL;
  json_t *j = conv(L, rt, idx, 0, &err);
  if (j == NULL) luaL_error(L, "%s: %s", what, err ? err : "cannot be stored");
  return j;
}

/* Does the Lua value at idx equal the stored v (value model equality)? */
static int same_value(lua_State *L, sg_lua_rt_t *rt, int idx, json_t *v) {
  if (v == NULL) return 0;
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    return json_is_string(v) && json_string_length(v) == n &&
           memcmp(json_string_value(v), s, n) == 0;
  }
  case LUA_TNUMBER: {
    double d = lua_tonumber(L, idx);
    if (json_is_real(v)) return json_real_value(v) == d;
    if (json_is_integer(v)) {
      json_int_t i = json_integer_value(v);
      return i >= -TWO53 && i <= TWO53 && (double)i == d;
    }
    return 0;
  }
  case LUA_TBOOLEAN: return json_is_boolean(v) && json_is_true(v) == lua_toboolean(L, idx);
  case LUA_TLIGHTUSERDATA: return json_is_null(v) && lua_touserdata(L, idx) == NULL;
  case LUA_TCDATA_: {
    int64_t i;
    return json_is_integer(v) && sg__lua_to_int64(L, rt, idx, &i) && json_integer_value(v) == i;
  }
  case LUA_TUSERDATA: {
    sg_lua_proxy_t *p = sg__lua_test_proxy(L, idx);
    return p && p->tag == SG_PX_JSON && p->u.json == v;
  }
  }
  return 0;
}

/* ---- JSON proxy metamethods ---------------------------------------------------- */

/* Array index from a Lua key: 1-based integer -> 0-based; -1 otherwise. */
static long arr_index(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TNUMBER) return -1;
  double d = lua_tonumber(L, idx);
  if (d < 1 || d != floor(d) || d > 1e15) return -1;
  return (long)d - 1;
}

/* Metamethods are only reachable through our metatables (which are hidden
 * by __metatable), so argument 1 is known to be a proxy of that kind. */
static sg_lua_proxy_t *self_proxy(lua_State *L, int writable) {
  sg_lua_proxy_t *p = lua_touserdata(L, 1);
  if (!proxy_live(p))
    luaL_error(L, "stale %s: proxies are valid only during the hook call that made them",
               p->tag == SG_PX_SPAN ? "span" : "JSON value");
  if (writable && (p->flags & SG_PXF_READONLY))
    luaL_error(L, "read-only %s", p->tag == SG_PX_SPAN ? "span" : "value");
  return p;
}

static int json_index(lua_State *L) {
  sg_lua_proxy_t *p = self_proxy(L, 0);
  json_t *c = p->u.json, *v = NULL;
  if (json_is_object(c)) {
    size_t n;
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &n) : NULL;
    if (k) v = json_object_getn(c, k, n);
  } else {
    long i = arr_index(L, 2);
    if (i >= 0) v = json_array_get(c, (size_t)i);
  }
  sg__lua_push_json(L, p->rt, v, p->flags & (SG_PXF_READONLY | SG_PXF_OWNED));
  return 1;
}

static int json_newindex(lua_State *L) {
  sg_lua_proxy_t *p = self_proxy(L, 1);
  sg_lua_rt_t *rt = p->rt;
  json_t *c = p->u.json;
  int owned = p->flags & SG_PXF_OWNED; /* decoded values: no undo needed */
  if (json_is_object(c)) {
    if (lua_type(L, 2) != LUA_TSTRING)
      return luaL_error(L, "JSON object keys are strings (got %s)", luaL_typename(L, 2));
    size_t kl;
    const char *k = lua_tolstring(L, 2, &kl);
    char *ck = NULL;
    if (!utf8_clean(k, kl)) {
      if ((ck = c_str(k, kl)) == NULL) return luaL_error(L, "out of memory");
      k = ck;
      kl = strlen(ck);
    }
    json_t *old = json_object_getn(c, k, kl);
    if (lua_isnil(L, 3)) {
      if (old) {
        if (!owned) {
          /* A delete reorders the object on rollback unless the whole
           * member list is kept: snapshot it (shallow) once per hook. */
          int snapped = 0;
          for (size_t i = 0; i < rt->nundo && !snapped; i++)
            snapped = rt->undo[i].op == U_OBJ_SNAP && rt->undo[i].c == c;
          if (!snapped) {
            json_t *snap = json_copy(c);
            if (!snap || undo_reserve(rt)) {
              json_decref(snap);
              free(ck);
              return luaL_error(L, "out of memory");
            }
            sg_lua_undo_t *e = &rt->undo[rt->nundo++];
            memset(e, 0, sizeof *e);
            e->op = U_OBJ_SNAP;
            e->c = json_incref(c);
            e->old = snap;
          }
        }
        json_object_deln(c, k, kl);
      }
      free(ck);
      return 0;
    }
    if (same_value(L, rt, 3, old)) {
      free(ck);
      return 0;
    }
    const char *err = NULL;
    json_t *v = conv(L, rt, 3, 0, &err);
    if (v == NULL) {
      free(ck);
      return luaL_error(L, "attributes[\"%s\"]: %s", k, err ? err : "cannot be stored");
    }
    if (!owned && sg__lua_undo_obj_set(rt, c, k, kl, old)) {
      json_decref(v);
      free(ck);
      return luaL_error(L, "out of memory");
    }
    int rc = json_object_setn_new_nocheck(c, k, kl, v);
    free(ck);
    if (rc) return luaL_error(L, "out of memory");
    return 0;
  }
  /* array */
  long i = arr_index(L, 2);
  size_t n = json_array_size(c);
  if (i < 0 || (size_t)i > n)
    return luaL_error(L, "array index out of range (1..%d, or %d to append)", (int)n, (int)n + 1);
  if (lua_isnil(L, 3)) {
    if ((size_t)i == n) return 0;
    if ((size_t)i != n - 1)
      return luaL_error(L, "only the last array element can be removed (index %d of %d)",
                        (int)i + 1, (int)n);
    if (!owned) undo_push(L, rt, U_ARR_POP, c)->old = json_incref(json_array_get(c, (size_t)i));
    json_array_remove(c, (size_t)i);
    return 0;
  }
  json_t *old = json_array_get(c, (size_t)i);
  if (same_value(L, rt, 3, old)) return 0;
  const char *err = NULL;
  json_t *v = conv(L, rt, 3, 0, &err);
  if (v == NULL) return luaL_error(L, "array element: %s", err ? err : "cannot be stored");
  if (!owned && undo_reserve(rt)) {
    json_decref(v);
    return luaL_error(L, "out of memory");
  }
  if (old) json_incref(old); /* the set below may release the array's reference */
  int rc = (size_t)i == n ? json_array_append_new(c, v) : json_array_set_new(c, (size_t)i, v);
  if (rc) {
    json_decref(old);
    return luaL_error(L, "out of memory");
  }
  if (!owned) {
    sg_lua_undo_t *u = &rt->undo[rt->nundo++];
    memset(u, 0, sizeof *u);
    u->op = (size_t)i == n ? U_ARR_APPEND : U_ARR_SET;
    u->c = json_incref(c);
    u->idx = (size_t)i;
    u->old = old; /* the reference taken above */
  } else {
    json_decref(old);
  }
  return 0;
}

static int json_len(lua_State *L) {
  sg_lua_proxy_t *p = check_proxy(L, 1, SG_PX_JSON, 0);
  json_t *c = p->u.json;
  lua_pushinteger(L, (lua_Integer)(json_is_object(c) ? json_object_size(c) : json_array_size(c)));
  return 1;
}

static int json_tostring(lua_State *L) {
  sg_lua_proxy_t *p = check_proxy(L, 1, SG_PX_JSON, 0);
  sg_buf_t b = SG_BUF_INIT;
  if (sg_json_dump(p->u.json, 0, &b)) {
    sg_buf_free(&b);
    return luaL_error(L, "out of memory");
  }
  lua_pushlstring(L, b.data, b.len);
  sg_buf_free(&b);
  return 1;
}

static int json_gc(lua_State *L) {
  sg_lua_proxy_t *p = lua_touserdata(L, 1);
  if (p && (p->flags & SG_PXF_OWNED) && p->u.json) {
    json_decref(p->u.json);
    p->u.json = NULL;
  }
  return 0;
}

static int proxy_eq(lua_State *L) {
  sg_lua_proxy_t *a = sg__lua_test_proxy(L, 1), *b = sg__lua_test_proxy(L, 2);
  lua_pushboolean(L, a && b && a->tag == b->tag &&
                         (a->tag == SG_PX_JSON ? a->u.json == b->u.json : a->u.slot == b->u.slot));
  return 1;
}

/* ---- span proxy ---------------------------------------------------------------- */

typedef enum {
  F_TRACE_ID, F_SPAN_ID, F_PARENT_ID, F_SPAN_NAME, F_SPAN_KIND, F_SPAN_TYPE, F_TRACE_TYPE,
  F_STATUS_CODE, F_STATUS_MESSAGE, F_START, F_END, F_ATTRIBUTES, F_EVENTS, F_LINKS,
  F_REFERENCES, F_HASHES, F_SESSION, F_USER, F_AGENT, F_UNKNOWN
} field_t;

static const struct {
  const char *name;
  field_t f;
} fields[] = {
    {"trace_id", F_TRACE_ID}, {"span_id", F_SPAN_ID}, {"parent_id", F_PARENT_ID},
    {"span_name", F_SPAN_NAME}, {"span_kind", F_SPAN_KIND}, {"span_type", F_SPAN_TYPE},
    {"trace_type", F_TRACE_TYPE}, {"status_code", F_STATUS_CODE},
    {"status_message", F_STATUS_MESSAGE}, {"start_time", F_START}, {"end_time", F_END},
    {"attributes", F_ATTRIBUTES}, {"events", F_EVENTS}, {"links", F_LINKS},
    {"references", F_REFERENCES}, {"hashes", F_HASHES}, {"session_id", F_SESSION},
    {"user_id", F_USER}, {"agent_id", F_AGENT},
};

/* By pointer first (interned strings), then by content. */
static field_t field_fast(sg_lua_rt_t *rt, const char *k, size_t n) {
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
    if (rt->field_ptr[i] == k) return fields[i].f;
  (void)n;
  return F_UNKNOWN; /* every string is interned: same text, same pointer */
}

static field_t field_of(const char *k, size_t n) {
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
    if (fields[i].name[0] == k[0] && strlen(fields[i].name) == n && memcmp(fields[i].name, k, n) == 0)
      return fields[i].f;
  return F_UNKNOWN;
}

static json_t **json_field(sg_span_t *s, field_t f) {
  switch (f) {
  case F_ATTRIBUTES: return &s->attributes;
  case F_EVENTS: return &s->events;
  case F_LINKS: return &s->links;
  case F_REFERENCES: return &s->references;
  case F_HASHES: return &s->hashes;
  default: return NULL;
  }
}

static char **str_field(sg_span_t *s, field_t f) {
  switch (f) {
  case F_SPAN_NAME: return &s->span_name;
  case F_STATUS_MESSAGE: return &s->status_message;
  case F_SESSION: return &s->session_id;
  case F_USER: return &s->user_id;
  case F_AGENT: return &s->agent_id;
  default: return NULL;
  }
}

static void push_label(lua_State *L, const char *l) {
  if (l) lua_pushstring(L, l);
  else lua_pushnil(L);
}

static int span_index(lua_State *L) {
  sg_lua_proxy_t *p = self_proxy(L, 0);
  sg_span_t *s = p->u.slot->s;
  size_t n;
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &n) : NULL;
  if (k == NULL) return 0;
  field_t f = field_fast(p->rt, k, n);
  char id[37];
  switch (f) {
  case F_TRACE_ID: sg_uuid_format(s->trace_id, id); lua_pushlstring(L, id, 36); return 1;
  case F_SPAN_ID: sg_uuid_format(s->span_id, id); lua_pushlstring(L, id, 36); return 1;
  case F_PARENT_ID:
    if (!s->has_parent) return 0;
    sg_uuid_format(s->parent_id, id);
    lua_pushlstring(L, id, 36);
    return 1;
  case F_SPAN_KIND: push_label(L, sg_span_kind_label(s->span_kind)); return 1;
  case F_SPAN_TYPE: push_label(L, sg_span_type_label(s->span_type)); return 1;
  case F_TRACE_TYPE: push_label(L, sg_trace_type_label(s->trace_type)); return 1;
  case F_STATUS_CODE: push_label(L, sg_status_code_label(s->status_code)); return 1;
  case F_START: sg__lua_push_int64(L, p->rt, s->start_us); return 1;
  case F_END: sg__lua_push_int64(L, p->rt, s->end_us); return 1;
  case F_UNKNOWN: return 0;
  default: break;
  }
  char **sf = str_field(s, f);
  if (sf) {
    if (*sf) lua_pushstring(L, *sf);
    else if (f == F_SPAN_NAME) lua_pushliteral(L, "");
    else lua_pushnil(L);
    return 1;
  }
  json_t **jf = json_field(s, f);
  sg__lua_push_json(L, p->rt, *jf, p->flags & SG_PXF_READONLY);
  return 1;
}

static int parse_enum(lua_State *L, int idx, int (*parse)(const char *), const char *name,
                      int nullable, const char *const *interned) {
  if (nullable && lua_isnil(L, idx)) return SG_NULL_ENUM;
  const char *v = lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : NULL;
  for (int i = 0; v && i < 16 && interned[i]; i++)
    if (interned[i] == v) return i; /* the exact upper-case label */
  int e = v ? parse(v) : -1;
  if (e < 0)
    luaL_error(L, "span.%s: unknown label %s%s%s", name, v ? "'" : "(", v ? v : luaL_typename(L, idx),
               v ? "'" : ")");
  return e;
}

static void span_set(lua_State *L, sg_lua_rt_t *rt, sg_lua_slot_t *slot, const char *k, field_t f,
                     int idx) {
  sg_span_t *s = slot->s;
  switch (f) {
  case F_TRACE_ID:
  case F_SPAN_ID:
  case F_PARENT_ID: {
    if (f == F_PARENT_ID && lua_isnil(L, idx)) {
      s->has_parent = 0;
      memset(s->parent_id, 0, 16);
      return;
    }
    size_t n;
    const char *v = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &n) : NULL;
    uint8_t id[16];
    if (v == NULL || sg_id_parse(v, n, id) != 0)
      luaL_error(L, "span.%s: expected a UUID or 32/16 hex digits", k);
    uint8_t any = 0;
    for (int i = 0; i < 16; i++) any |= id[i];
    if (!any) luaL_error(L, "span.%s: the all-zero id is invalid", k);
    memcpy(f == F_TRACE_ID ? s->trace_id : f == F_SPAN_ID ? s->span_id : s->parent_id, id, 16);
    if (f == F_PARENT_ID) s->has_parent = 1;
    return;
  }
  case F_SPAN_KIND: s->span_kind = (int8_t)parse_enum(L, idx, sg_span_kind_parse, k, 0, rt->label_ptr[2]); return;
  case F_STATUS_CODE:
    s->status_code = (int8_t)parse_enum(L, idx, sg_status_code_parse, k, 0, rt->label_ptr[3]);
    return;
  case F_SPAN_TYPE: s->span_type = (int8_t)parse_enum(L, idx, sg_span_type_parse, k, 1, rt->label_ptr[1]); return;
  case F_TRACE_TYPE:
    s->trace_type = (int8_t)parse_enum(L, idx, sg_trace_type_parse, k, 1, rt->label_ptr[0]);
    return;
  case F_START:
  case F_END: {
    int64_t v;
    if (!sg__lua_to_int64(L, rt, idx, &v) || v < SG_TIME_MIN_US || v > SG_TIME_MAX_US)
      luaL_error(L, "span.%s: expected integer microseconds since the epoch, in the range the stores keep", k);
    if (f == F_START) s->start_us = v;
    else s->end_us = v;
    return;
  }
  case F_UNKNOWN:
    luaL_error(L, "span has no field '%s'", k);
    return;
  default: break;
  }
  char **sf = str_field(s, f);
  if (sf) {
    char **of = str_field(&slot->orig, f);
    char *nv = NULL;
    if (lua_isnil(L, idx)) {
      if (f == F_SPAN_NAME) luaL_error(L, "span.span_name cannot be nil (use \"\")");
    } else if (lua_type(L, idx) == LUA_TSTRING) {
      size_t n;
      const char *v = lua_tolstring(L, idx, &n);
      if (*sf && strlen(*sf) == n && memcmp(*sf, v, n) == 0) return; /* unchanged */
      if ((nv = c_str(v, n)) == NULL) luaL_error(L, "out of memory");
    } else {
      luaL_error(L, "span.%s: expected a string%s (got %s)", k, f == F_SPAN_NAME ? "" : " or nil",
                 luaL_typename(L, idx));
    }
    if (*sf != *of) free(*sf);
    *sf = nv;
    return;
  }
  json_t **jf = json_field(s, f), **of = json_field(&slot->orig, f);
  json_t *nv = NULL;
  if (!lua_isnil(L, idx)) {
    if (same_value(L, rt, idx, *jf)) return;
    nv = sg__lua_to_json(L, rt, idx, k);
    if (f == F_ATTRIBUTES && !json_is_object(nv)) {
      json_decref(nv);
      luaL_error(L, "span.attributes must be an object (a table with string keys) or nil");
    }
  }
  if (*jf != *of) json_decref(*jf);
  *jf = nv;
}

void sg__lua_span_set(lua_State *L, sg_lua_slot_t *slot, const char *k, int idx) {
  span_set(L, sg__lua_rt_of(L), slot, k, field_of(k, strlen(k)), idx);
}

static int span_newindex(lua_State *L) {
  sg_lua_proxy_t *p = self_proxy(L, 1);
  size_t n;
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &n) : NULL;
  if (k == NULL) return luaL_error(L, "span field names are strings");
  span_set(L, p->rt, p->u.slot, k, field_fast(p->rt, k, n), 3);
  return 0;
}

static int span_tostring(lua_State *L) {
  sg_lua_proxy_t *p = check_proxy(L, 1, SG_PX_SPAN, 0);
  char id[37];
  sg_uuid_format(p->u.slot->s->span_id, id);
  lua_pushfstring(L, "span %s (%s)", id, p->u.slot->s->span_name ? p->u.slot->s->span_name : "");
  return 1;
}

/* ---- set-up ------------------------------------------------------------------- */

static int new_mt(lua_State *L, const luaL_Reg *fns, const void **ptr) {
  lua_newtable(L); /* mt */
  for (; fns->name; fns++) {
    lua_pushcfunction(L, fns->func);
    lua_setfield(L, -2, fns->name);
  }
  lua_pushliteral(L, "spangate proxy");
  lua_setfield(L, -2, "__metatable"); /* getmetatable() answers this string */
  *ptr = lua_topointer(L, -1);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

int sg__lua_span_init(lua_State *L, sg_lua_rt_t *rt) {
  lua_pushlightuserdata(L, &rt_key); /* key */
  lua_pushlightuserdata(L, rt);      /* key, rt */
  lua_rawset(L, LUA_REGISTRYINDEX);  /* - */
  static const luaL_Reg span_mt[] = {{"__index", span_index}, {"__newindex", span_newindex},
                                     {"__tostring", span_tostring}, {"__eq", proxy_eq},
                                     {NULL, NULL}};
  static const luaL_Reg json_mt[] = {{"__index", json_index}, {"__newindex", json_newindex},
                                     {"__len", json_len}, {"__tostring", json_tostring},
                                     {"__eq", proxy_eq}, {NULL, NULL}};
  static const luaL_Reg json_gc_mt[] = {{"__index", json_index}, {"__newindex", json_newindex},
                                        {"__len", json_len}, {"__tostring", json_tostring},
                                        {"__eq", proxy_eq}, {"__gc", json_gc}, {NULL, NULL}};
  rt->ref_mt_span = new_mt(L, span_mt, &rt->mt_ptr[0]);
  rt->ref_mt_json = new_mt(L, json_mt, &rt->mt_ptr[1]);
  rt->ref_mt_json_gc = new_mt(L, json_gc_mt, &rt->mt_ptr[2]);
  lua_newtable(L);
  rt->ref_mt_array = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  rt->ref_mt_object = luaL_ref(L, LUA_REGISTRYINDEX);
  /* Field names and labels, interned and anchored in one registry table. */
  lua_newtable(L); /* anchor */
  int ai = 1;
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    lua_pushstring(L, fields[i].name);
    rt->field_ptr[i] = lua_tostring(L, -1);
    lua_rawseti(L, -2, ai++);
  }
  const char *(*labels[4])(int) = {sg_trace_type_label, sg_span_type_label, sg_span_kind_label,
                                   sg_status_code_label};
  for (int t = 0; t < 4; t++) {
    for (int i = 0; i < 16; i++) {
      const char *l = labels[t](i);
      if (l == NULL) break;
      lua_pushstring(L, l);
      rt->label_ptr[t][i] = lua_tostring(L, -1);
      lua_rawseti(L, -2, ai++);
    }
  }
  luaL_ref(L, LUA_REGISTRYINDEX); /* anchored for the life of the state */
  /* FFI helpers for int64 values beyond 2^53. */
  static const char helpers[] =
      "local ffi = require('ffi')\n"
      "local p64 = ffi.typeof('const int64_t *')\n"
      "local i64, u64 = ffi.typeof('int64_t'), ffi.typeof('uint64_t')\n"
      "return function(p) return ffi.cast(p64, p)[0] end,\n"
      "  function(v) if ffi.istype(i64, v) or ffi.istype(u64, v) then return tostring(v) end end\n";
  if (luaL_loadbuffer(L, helpers, sizeof helpers - 1, "=spangate.int64") ||
      lua_pcall(L, 0, 2, 0))
    return SG_ESCRIPT;
  rt->ref_i64_str = luaL_ref(L, LUA_REGISTRYINDEX);
  rt->ref_mk_i64 = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}
