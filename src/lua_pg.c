/* lua_pg.c - gw.pg for jobs: gw.pg.query and gw.pg.query_raw on the job's
 * PostgreSQL pool (a task yields while libpq works on the loop).
 *
 * Value decisions (docs/jobs.md, "Writing jobs"):
 *   gw.pg.query   rows as tables keyed by column name, every value as
 *                 PostgreSQL's text output (exact: int8, numeric and
 *                 timestamptz never pass through a double), NULL as gw.null.
 *   gw.pg.query_raw  the same rows kept in C (sg_lua_pgres_t, a compact
 *                 copy of the result), for gw.ch.insert_spans: no Lua table
 *                 per row. r:free() releases the copy at once; the collector
 *                 is also told its size (pgres_account), so dropped results
 *                 go too.
 */
#include <inttypes.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "lua_internal.h"
#include "lua_io_internal.h"

typedef sg_lua_pgres_t rawres_t;
#define RAWRES_MT SG_LUA_PGRES_MT

/* ---- query_raw results --------------------------------------------------------------- */

static void rawres_clear(rawres_t *r) {
  for (int j = 0; r->names && j < r->ncols; j++) free(r->names[j]);
  free(r->names);
  free(r->off);
  free(r->len);
  free(r->data);
  memset(r, 0, sizeof *r);
}

static int rawres_fill(rawres_t *r, const PGresult *res) {
  int nr = PQntuples(res), nc = PQnfields(res);
  size_t total = 0, cells = (size_t)nr * (size_t)nc;
  for (int i = 0; i < nr; i++)
    for (int j = 0; j < nc; j++) total += (size_t)PQgetlength(res, i, j) + 1;
  r->nrows = nr;
  r->ncols = nc;
  r->names = calloc((size_t)nc + 1, sizeof *r->names);
  r->off = malloc((cells + 1) * sizeof *r->off);
  r->len = malloc((cells + 1) * sizeof *r->len);
  r->data = malloc(total + 1);
  if (!r->names || !r->off || !r->len || !r->data) return SG_ENOMEM;
  r->bytes = total + 1 + (cells + 1) * (sizeof *r->off + sizeof *r->len) +
             ((size_t)nc + 1) * sizeof *r->names;
  for (int j = 0; j < nc; j++) {
    if (!(r->names[j] = strdup(PQfname(res, j)))) return SG_ENOMEM;
    r->bytes += strlen(r->names[j]) + 1;
  }
  size_t at = 0;
  for (int i = 0; i < nr; i++) {
    for (int j = 0; j < nc; j++) {
      size_t c = (size_t)i * (size_t)nc + (size_t)j;
      if (PQgetisnull(res, i, j)) {
        r->len[c] = -1;
        r->off[c] = 0;
        continue;
      }
      int n = PQgetlength(res, i, j);
      memcpy(r->data + at, PQgetvalue(res, i, j), (size_t)n);
      r->data[at + (size_t)n] = '\0';
      r->off[c] = at;
      r->len[c] = n;
      at += (size_t)n + 1;
    }
  }
  return 0;
}

int sg__lua_pgres_col(const rawres_t *r, const char *name) {
  for (int j = 0; j < r->ncols; j++)
    if (strcmp(r->names[j], name) == 0) return j;
  return -1;
}

static void rawres_push(lua_State *L, const rawres_t *r, int i, int j) {
  size_t c = (size_t)i * (size_t)r->ncols + (size_t)j;
  if (r->len[c] < 0) lua_pushlightuserdata(L, NULL); /* gw.null */
  else lua_pushlstring(L, r->data + r->off[c], (size_t)r->len[c]);
}

static rawres_t *check_rawres(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, RAWRES_MT);
}

/* The result at idx, or an error naming fn when r:free() released it. */
static rawres_t *live_rawres(lua_State *L, int idx, const char *fn) {
  rawres_t *r = check_rawres(L, idx);
  if (r->freed) luaL_error(L, "%s: result was freed (r:free() was called before)", fn);
  return r;
}

/* The collector only sees the userdata's few bytes, not the copy it owns:
 * results a script drops without r:free() would pile up until the Lua heap
 * itself grew enough for a cycle (`spangate migrate` reached ~1.9 GB RSS).
 * A step of the copy's size makes the collector work as if Lua had
 * allocated it (LuaJIT 2.1: `data` is KiB of allocation debt; a large one
 * finishes a cycle, so dropped results are finalized by the next call).
 * Run on the main state: the task's coroutine is suspended. */
static void rawres_account(sg_lua_io_t *io, const rawres_t *r) {
  size_t kb = r->bytes >> 10;
  if (kb > 0 && io->sched.L) lua_gc(io->sched.L, LUA_GCSTEP, kb > INT_MAX ? INT_MAX : (int)kb);
}

static int rawres_gc(lua_State *L) {
  rawres_clear(check_rawres(L, 1));
  return 0;
}

/* r:free(): releases the rows now (idempotent); #r is 0 afterwards and
 * get/row/columns raise. */
static int rawres_free(lua_State *L) {
  rawres_t *r = check_rawres(L, 1);
  rawres_clear(r);
  r->freed = 1;
  return 0;
}

static int rawres_len(lua_State *L) {
  lua_pushinteger(L, check_rawres(L, 1)->nrows);
  return 1;
}

/* r:get(i, column) -> text | gw.null */
static int rawres_get(lua_State *L) {
  rawres_t *r = live_rawres(L, 1, "result:get");
  int i = (int)luaL_checkinteger(L, 2);
  int j = lua_type(L, 3) == LUA_TNUMBER ? (int)lua_tointeger(L, 3) - 1 : sg__lua_pgres_col(r, luaL_checkstring(L, 3));
  if (i < 1 || i > r->nrows) return luaL_error(L, "result:get: row %d out of range (1..%d)", i, r->nrows);
  if (j < 0 || j >= r->ncols) return luaL_error(L, "result:get: no column %s", lua_tostring(L, 3));
  rawres_push(L, r, i - 1, j);
  return 1;
}

/* r:row(i) -> { column = text | gw.null, ... } */
static int rawres_row(lua_State *L) {
  rawres_t *r = live_rawres(L, 1, "result:row");
  int i = (int)luaL_checkinteger(L, 2);
  if (i < 1 || i > r->nrows) return luaL_error(L, "result:row: row %d out of range (1..%d)", i, r->nrows);
  lua_createtable(L, 0, r->ncols);
  for (int j = 0; j < r->ncols; j++) {
    rawres_push(L, r, i - 1, j);
    lua_setfield(L, -2, r->names[j]);
  }
  return 1;
}

static int rawres_columns(lua_State *L) {
  rawres_t *r = live_rawres(L, 1, "result:columns");
  lua_createtable(L, r->ncols, 0);
  for (int j = 0; j < r->ncols; j++) {
    lua_pushstring(L, r->names[j]);
    lua_rawseti(L, -2, j + 1);
  }
  return 1;
}

/* ---- gw.pg.query / gw.pg.query_raw ---------------------------------------------------- */

typedef struct {
  sg_lua_io_t *io;
  sg_lua_task_t *t;
  int raw;
  char *sql;
  int n;
  char **vals;
} pgreq_t;

static void pgreq_free(pgreq_t *q) {
  for (int i = 0; i < q->n; i++) free(q->vals[i]);
  free(q->vals);
  free(q->sql);
  free(q);
}

static void pg_cb(void *arg, PGresult *res, int err, const char *errmsg) {
  pgreq_t *q = arg;
  sg_lua_io_t *io = q->io;
  if (!sg__lua_sched_live(&io->sched)) {
    pgreq_free(q);
    return;
  }
  sg_lua_task_t *t = q->t;
  lua_State *co = t->co;
  lua_checkstack(co, 8);
  if (err || res == NULL) {
    lua_pushboolean(co, 0);
    lua_pushfstring(co, "gw.pg.query: %s", errmsg ? errmsg : sg_strerror(err ? err : SG_EIO));
    pgreq_free(q);
    sg__lua_task_ready(t, 2);
    return;
  }
  const char *tuples = PQcmdTuples(res);
  lua_pushboolean(co, 1);
  if (q->raw) {
    rawres_t *r = lua_newuserdata(co, sizeof *r); /* ok, r */
    memset(r, 0, sizeof *r);
    luaL_getmetatable(co, RAWRES_MT);
    lua_setmetatable(co, -2);
    if (rawres_fill(r, res) != 0) {
      rawres_clear(r);
      lua_settop(co, lua_gettop(co) - 2);
      lua_pushboolean(co, 0);
      lua_pushliteral(co, "gw.pg.query_raw: out of memory");
      pgreq_free(q);
      sg__lua_task_ready(t, 2);
      return;
    }
    rawres_account(io, r);
  } else {
    int nr = PQntuples(res), nc = PQnfields(res);
    lua_checkstack(co, nc + 4);
    int base = lua_gettop(co);
    for (int j = 0; j < nc; j++) lua_pushstring(co, PQfname(res, j)); /* ok, names */
    lua_createtable(co, nr, 0);                                        /* ok, names, rows */
    for (int i = 0; i < nr; i++) {
      lua_createtable(co, 0, nc);                                      /* ..., rows, row */
      for (int j = 0; j < nc; j++) {
        lua_pushvalue(co, base + 1 + j);
        if (PQgetisnull(res, i, j)) lua_pushlightuserdata(co, NULL);
        else lua_pushlstring(co, PQgetvalue(res, i, j), (size_t)PQgetlength(res, i, j));
        lua_rawset(co, -3);
      }
      lua_rawseti(co, -2, i + 1);                                      /* ..., rows */
    }
    lua_replace(co, base + 1);                                         /* ok, rows, names... */
    lua_settop(co, base + 1);                                          /* ok, rows */
  }
  lua_pushnumber(co, tuples && *tuples ? strtod(tuples, NULL) : 0);   /* ok, rows, affected */
  pgreq_free(q);
  sg__lua_task_ready(t, 3);
}

/* Text of parameter idx, malloc'd; NULL for SQL NULL. Raises on bad types. */
static char *param_text(lua_State *L, int idx, int argn) {
  char tmp[64];
  switch (lua_type(L, idx)) {
  case LUA_TNIL: return NULL;
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) return NULL;
    break;
  case LUA_TBOOLEAN: return strdup(lua_toboolean(L, idx) ? "true" : "false");
  case LUA_TNUMBER: {
    double d = lua_tonumber(L, idx);
    if (d == floor(d) && fabs(d) < 9007199254740992.0) snprintf(tmp, sizeof tmp, "%.0f", d);
    else snprintf(tmp, sizeof tmp, "%.17g", d);
    return strdup(tmp);
  }
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    char *c = malloc(n + 1);
    if (c) {
      memcpy(c, s, n);
      c[n] = '\0';
    }
    return c;
  }
  case 10: { /* cdata: int64 */
    int64_t v;
    if (sg__lua_to_int64(L, sg__lua_rt_of(L), idx, &v)) {
      snprintf(tmp, sizeof tmp, "%" PRId64, v);
      return strdup(tmp);
    }
    break;
  }
  }
  luaL_error(L, "gw.pg.query: bad argument #%d (string, number, boolean, int64, nil or gw.null "
                "expected, got %s)", argn, luaL_typename(L, idx));
  return NULL;
}

/* raw pg_query(raw, sql, ...) -> ok, rows | message, affected */
static int l_pg_query(lua_State *L) {
  sg_lua_io_t *io = SG_LUA_IO(L);
  int raw = lua_toboolean(L, 1);
  const char *fn = raw ? "gw.pg.query_raw" : "gw.pg.query";
  sg_lua_task_t *t = sg__lua_need_task(L, &io->sched, fn);
  if (lua_type(L, 2) != LUA_TSTRING)
    return luaL_error(L, "%s: bad argument #1 (SQL string expected, got %s)", fn, luaL_typename(L, 2));
  int n = lua_gettop(L) - 2;
  pgreq_t *q = calloc(1, sizeof *q);
  if (!q) return luaL_error(L, "out of memory");
  q->io = io;
  q->t = t;
  q->raw = raw;
  q->sql = strdup(lua_tostring(L, 2));
  q->vals = calloc((size_t)n + 1, sizeof *q->vals);
  if (!q->sql || !q->vals) {
    pgreq_free(q);
    return luaL_error(L, "out of memory");
  }
  for (int i = 0; i < n; i++) {
    int idx = 3 + i;
    int bad = lua_type(L, idx) == LUA_TTABLE || lua_type(L, idx) == LUA_TFUNCTION ||
              lua_type(L, idx) == LUA_TUSERDATA || lua_type(L, idx) == LUA_TTHREAD ||
              (lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) != NULL);
    if (bad) {
      q->n = i;
      pgreq_free(q);
      return luaL_error(L, "%s: bad argument #%d (string, number, boolean, int64, nil or gw.null "
                           "expected, got %s)", fn, i + 2, luaL_typename(L, idx));
    }
    q->vals[i] = param_text(L, idx, i + 2); /* cdata that is not int64 raises (q leaks then: rare) */
    q->n = i + 1;
  }
  int rc = sg_pg_query(io->pg, q->sql, n, (const char *const *)q->vals, NULL, NULL, pg_cb, q);
  if (rc != 0) {
    pgreq_free(q);
    lua_pushboolean(L, 0);
    lua_pushfstring(L, "%s: PostgreSQL: %s", fn, sg_strerror(rc));
    return 2;
  }
  return sg__lua_task_yield(L, t);
}

/* ---- registration ------------------------------------------------------------------------ */

void sg__lua_pg_register(lua_State *L, sg_lua_io_t *io) {
  static const luaL_Reg fns[] = {{"pg_query", l_pg_query}, {NULL, NULL}};
  static const luaL_Reg methods[] = {{"get", rawres_get}, {"row", rawres_row},
                                     {"columns", rawres_columns}, {"free", rawres_free},
                                     {NULL, NULL}};
  if (luaL_newmetatable(L, RAWRES_MT)) {        /* raw, mt */
    lua_newtable(L);                            /* raw, mt, methods */
    for (const luaL_Reg *r = methods; r->name; r++) {
      lua_pushcfunction(L, r->func);
      lua_setfield(L, -2, r->name);
    }
    lua_setfield(L, -2, "__index");             /* raw, mt */
    lua_pushcfunction(L, rawres_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, rawres_len);
    lua_setfield(L, -2, "__len");
  }
  lua_pop(L, 1);                                /* raw */
  sg__lua_io_register(L, io, fns);
}
