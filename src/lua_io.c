/* lua_io.c - gw.pg / gw.ch / gw.sleep and the job's task scheduler.
 *
 * The model is OpenResty's cosocket: a task (a coroutine the scheduler
 * created) calls an I/O function; the C side starts the request on the loop
 * and yields; the request's callback pushes the result onto the task's stack
 * and queues the task; an idle handle resumes queued tasks. C functions
 * cannot raise an error "later", so each one yields to a small Lua wrapper
 * (wrappers_lua below) that turns (false, message) into error(message, 2),
 * pointing at the script's line.
 *
 * Value decisions (docs/jobs.md):
 *   gw.pg.query   rows as tables keyed by column name, every value as
 *                 PostgreSQL's text output (exact: int8, numeric and
 *                 timestamptz never pass through a double), NULL as gw.null.
 *   gw.pg.query_raw  the same rows kept in C (a compact copy of the result),
 *                 for gw.ch.insert_spans: no Lua table per row. r:free()
 *                 releases the copy at once; the collector is also told
 *                 its size (rawres_account), so dropped results go too.
 *   gw.ch.insert_spans  a query_raw result -> sg_ch_row_encode_text (the
 *                 text twin of the spool writer's encoder: same columns and
 *                 checks, JSON made compact in one validating pass instead
 *                 of a jansson parse + dump), ttl.lua for expires_at with
 *                 the span's JSON parsed only if the hook reads it; a list
 *                 of Lua rows -> sg_span_t -> sg_ch_row_encode. Either way
 *                 ClickHouse equals PostgreSQL as values (docs/jobs.md).
 */
#define SG_LUA_INTERNAL
#include "lua_io.h"

#include <errno.h>
#include <inttypes.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ch.h"
#include "ch_schema.h"
#include "ch_setup.h"
#include "err.h"
#include "pg.h"
#include "span.h"

/* ---- types --------------------------------------------------------------------- */

enum { T_READY = 1, T_RUNNING, T_WAIT, T_DONE };

typedef struct task_s task_t;
struct task_s {
  sg_lua_io_t *io;
  lua_State *co;
  int ref_co;        /* anchors the coroutine while it runs */
  int state;
  int nresume;       /* values pushed onto co to resume it with */
  int ok;            /* when done: returned (1) or raised (0) */
  int ref_result;    /* done: {n = k, ...} or the error text with its traceback */
  int waited;        /* someone gw.wait()ed for it */
  int is_main;
  task_t **waiters;
  size_t nwaiters, capwaiters;
  task_t *next_ready;
  task_t *next_all;
};

typedef struct sleep_s {
  uv_timer_t timer;
  task_t *t;
  struct sleep_s *prev, *next;
} sleep_t;

struct sg_lua_io_s {
  uv_loop_t *loop;
  const sg_config_t *cfg;
  sg_lua_rt_t *hooks;
  sg_pg_pool_t *pg;
  sg_ch_client_t *ch;
  sg_ch_target_t target;  /* the server's version and the tables' row layouts */
  int have_ver;
  sg_buf_t ver_err;
  sg_buf_t insert_sql;
  unsigned ch_flags;
  lua_State *L;
  uv_idle_t idle;
  task_t *ready_head, *ready_tail;
  task_t *all;
  sleep_t *sleeps;
  size_t alive;        /* tasks not done */
  int main_done;
  int exiting, exit_code;
  int status;          /* exit status so far */
  int closed;
  /* ttl.lua's span for gw.ch.insert_spans: JSON columns parsed on first read
   * (lazy_span_index), see hook_span. */
  lua_CFunction span_index_orig;
  int lazy_ok;                       /* the hooks runtime's span __index is ours */
  sg_span_t *lazy_span;              /* the span of the hook call in progress */
  const sg_ch_text_row_t *lazy_row;  /* its text values */
  const char *lazy_err;              /* a JSON column that did not parse */
};

static char tasks_key;  /* registry[&tasks_key] = { [thread] = lightuserdata task } */

#define IO() ((sg_lua_io_t *)lua_touserdata(L, lua_upvalueindex(1)))

/* ---- context checks --------------------------------------------------------------- */

/* The task running L, or a Lua error saying why I/O cannot run here. */
static task_t *need_task(lua_State *L, sg_lua_io_t *io, const char *fn) {
  if (io == NULL)
    luaL_error(L, "%s: I/O is only available to jobs (spangate run|migrate|validate); "
                  "hooks on a gateway worker cannot yield", fn);
  if (lua_pushthread(L)) { /* thread */
    lua_pop(L, 1);
    luaL_error(L, "%s: cannot yield here (not in a job task: hooks such as transform.lua or "
                  "ttl.lua run on the main thread)", fn);
  }
  lua_pushlightuserdata(L, &tasks_key); /* thread, key */
  lua_rawget(L, LUA_REGISTRYINDEX);     /* thread, tasks | nil */
  task_t *t = NULL;
  if (lua_istable(L, -1)) {
    lua_pushvalue(L, -2);               /* thread, tasks, thread */
    lua_rawget(L, -2);                  /* thread, tasks, task | nil */
    t = lua_touserdata(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
  if (t == NULL || t->co != L)
    luaL_error(L, "%s: called from a coroutine the job runner does not know; do I/O in the "
                  "job's main function or in a gw.spawn()ed task", fn);
  if (io->closed || io->exiting) luaL_error(L, "%s: the job is exiting", fn);
  return t;
}

/* ---- scheduler ---------------------------------------------------------------------- */

static void idle_cb(uv_idle_t *h);
static void shutdown_io(sg_lua_io_t *io);

static void make_ready(task_t *t, int nresume) {
  sg_lua_io_t *io = t->io;
  t->state = T_READY;
  t->nresume = nresume;
  t->next_ready = NULL;
  if (io->ready_tail) io->ready_tail->next_ready = t;
  else io->ready_head = t;
  io->ready_tail = t;
  if (!io->closed) uv_idle_start(&io->idle, idle_cb);
}

/* Push (ok, result) of done task d onto waiter w's stack and queue w. */
static void deliver(task_t *d, task_t *w) {
  lua_State *co = w->co;
  lua_checkstack(co, 3);
  lua_pushboolean(co, d->ok);
  lua_rawgeti(co, LUA_REGISTRYINDEX, d->ref_result);
  make_ready(w, 2);
}

static void task_done(task_t *t, int ok) {
  sg_lua_io_t *io = t->io;
  lua_State *L = io->L;
  t->state = T_DONE;
  t->ok = ok;
  t->ref_result = luaL_ref(L, LUA_REGISTRYINDEX); /* the result at L's top */
  luaL_unref(L, LUA_REGISTRYINDEX, t->ref_co);
  t->ref_co = LUA_NOREF;
  io->alive--;
  for (size_t i = 0; i < t->nwaiters; i++) deliver(t, t->waiters[i]);
  if (t->nwaiters) t->waited = 1;
  free(t->waiters);
  t->waiters = NULL;
  t->nwaiters = 0;
  if (t->is_main) io->main_done = 1;
}

/* Resume t once, and interpret how it stopped. */
static void run_task(task_t *t) {
  sg_lua_io_t *io = t->io;
  lua_State *L = io->L, *co = t->co;
  t->state = T_RUNNING;
  int n = t->nresume;
  t->nresume = 0;
  int rc = lua_resume(co, n);
  if (rc == LUA_YIELD) {
    if (t->state == T_RUNNING) { /* a bare coroutine.yield() reached the scheduler */
      lua_settop(co, 0);
      lua_pushliteral(L, "a job task called coroutine.yield() outside gw I/O (use gw.sleep, "
                         "gw.wait or a coroutine of your own)");
      task_done(t, 0);
    }
    return;
  }
  if (rc == 0) {
    int k = lua_gettop(co);
    lua_checkstack(L, k + 2);
    lua_createtable(L, k, 1); /* res */
    lua_xmove(co, L, k);      /* res, v1..vk */
    for (int i = k; i >= 1; i--) lua_rawseti(L, -1 - i, i);
    lua_pushnumber(L, k);
    lua_setfield(L, -2, "n"); /* res */
    if (t->is_main && !io->exiting) {
      lua_rawgeti(L, -1, 1);
      if (lua_type(L, -1) == LUA_TNUMBER) io->status = (int)lua_tonumber(L, -1);
      else if (lua_type(L, -1) == LUA_TBOOLEAN) io->status = lua_toboolean(L, -1) ? 0 : 1;
      lua_pop(L, 1);
    }
    task_done(t, 1);
    return;
  }
  /* An error: gw.exit's unwinding, or a real one. */
  if (io->exiting) {
    lua_settop(co, 0);
    lua_pushliteral(L, "gw.exit");
    task_done(t, 1);
    t->waited = 1;
    return;
  }
  const char *msg = lua_tostring(co, -1);
  if (msg == NULL) {
    if (luaL_callmeta(co, -1, "__tostring") && lua_isstring(co, -1)) msg = lua_tostring(co, -1);
    else msg = lua_pushfstring(co, "(error object is a %s value)", luaL_typename(co, -1));
  }
  /* An error re-raised from gw.wait already carries its traceback. */
  if (strstr(msg, "stack traceback:")) lua_pushstring(L, msg);
  else luaL_traceback(L, co, msg, 0);
  lua_settop(co, 0);
  task_done(t, 0);
  if (t->is_main) {
    t->waited = 1;
    io->status = 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref_result);
    fprintf(stderr, "spangate: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

static void maybe_finish(sg_lua_io_t *io) {
  if (io->closed) return;
  if (io->exiting || (io->main_done && io->alive == 0)) shutdown_io(io);
}

static void idle_cb(uv_idle_t *h) {
  sg_lua_io_t *io = h->data;
  task_t *last = io->ready_tail; /* tasks queued meanwhile wait for the next turn */
  while (io->ready_head && !io->exiting) {
    task_t *t = io->ready_head;
    io->ready_head = t->next_ready;
    if (!io->ready_head) io->ready_tail = NULL;
    run_task(t);
    if (t == last) break;
  }
  if (!io->ready_head && !io->closed) uv_idle_stop(&io->idle);
  maybe_finish(io);
}

/* A new task running the function at L's top with the nargs values below it
 * (all popped from L). Pushes nothing; returns the task (its coroutine is
 * anchored in the registry). */
static task_t *task_new(sg_lua_io_t *io, lua_State *L, int nargs) {
  task_t *t = calloc(1, sizeof *t);
  if (t == NULL) luaL_error(L, "out of memory");
  lua_State *co = lua_newthread(L);        /* ..., f, args, co */
  lua_pushvalue(L, -1);                    /* ..., f, args, co, co */
  t->ref_co = luaL_ref(L, LUA_REGISTRYINDEX); /* ..., f, args, co */
  t->io = io;
  t->co = co;
  t->ref_result = LUA_NOREF;
  t->next_all = io->all;
  io->all = t;
  io->alive++;
  lua_pushlightuserdata(L, &tasks_key);    /* ..., co, key */
  lua_rawget(L, LUA_REGISTRYINDEX);        /* ..., co, tasks */
  lua_pushvalue(L, -2);                    /* ..., co, tasks, co */
  lua_pushlightuserdata(L, t);             /* ..., co, tasks, co, t */
  lua_rawset(L, -3);                       /* ..., co, tasks */
  lua_pop(L, 1);                           /* ..., f, args, co */
  lua_insert(L, -2 - nargs);               /* ..., co, f, args */
  lua_xmove(L, co, nargs + 1);             /* ..., co */
  make_ready(t, nargs);
  return t;
}

/* ---- gw.spawn / gw.wait / gw.exit / gw.sleep --------------------------------------- */

static int l_spawn(lua_State *L) {
  sg_lua_io_t *io = IO();
  need_task(L, io, "gw.spawn");
  if (!lua_isfunction(L, 1))
    return luaL_error(L, "gw.spawn: bad argument #1 (function expected, got %s)", luaL_typename(L, 1));
  int nargs = lua_gettop(L) - 1;
  lua_pushvalue(L, 1);
  lua_insert(L, 2);        /* f, f, args */
  task_t *t = task_new(io, L, nargs); /* f, co */
  (void)t;
  return 1;                /* the task handle is its coroutine */
}

/* raw wait(task) -> ok, result (yields while the task runs). */
static int l_wait(lua_State *L) {
  sg_lua_io_t *io = IO();
  task_t *me = need_task(L, io, "gw.wait");
  task_t *t = NULL;
  if (lua_type(L, 1) == LUA_TTHREAD) {
    lua_pushlightuserdata(L, &tasks_key);
    lua_rawget(L, LUA_REGISTRYINDEX); /* tasks */
    lua_pushvalue(L, 1);
    lua_rawget(L, -2);                /* tasks, t */
    t = lua_touserdata(L, -1);
    lua_pop(L, 2);
  }
  if (t == NULL)
    return luaL_error(L, "gw.wait: bad argument (task from gw.spawn expected, got %s)",
                      luaL_typename(L, 1));
  if (t == me) return luaL_error(L, "gw.wait: a task cannot wait for itself");
  if (t->state == T_DONE) {
    t->waited = 1;
    lua_pushboolean(L, t->ok);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref_result);
    return 2;
  }
  if (t->nwaiters == t->capwaiters) {
    size_t cap = t->capwaiters ? t->capwaiters * 2 : 4;
    task_t **w = realloc(t->waiters, cap * sizeof *w);
    if (!w) return luaL_error(L, "out of memory");
    t->waiters = w;
    t->capwaiters = cap;
  }
  t->waiters[t->nwaiters++] = me;
  me->state = T_WAIT;
  return lua_yield(L, 0);
}

static int l_exit(lua_State *L) {
  sg_lua_io_t *io = IO();
  if (io == NULL) return luaL_error(L, "gw.exit: only jobs can exit");
  int code = 0;
  if (lua_type(L, 1) == LUA_TNUMBER) code = (int)lua_tonumber(L, 1);
  else if (lua_type(L, 1) == LUA_TBOOLEAN) code = lua_toboolean(L, 1) ? 0 : 1;
  else if (!lua_isnoneornil(L, 1))
    return luaL_error(L, "gw.exit: bad argument #1 (number or boolean expected, got %s)",
                      luaL_typename(L, 1));
  io->exiting = 1;
  io->exit_code = code;
  lua_pushliteral(L, "gw.exit");
  return lua_error(L); /* unwinds the task; the scheduler stops the job */
}

static void sleep_closed(uv_handle_t *h) { free(h->data); }

static void sleep_unlink(sg_lua_io_t *io, sleep_t *s) {
  if (s->prev) s->prev->next = s->next;
  else io->sleeps = s->next;
  if (s->next) s->next->prev = s->prev;
}

static void sleep_cb(uv_timer_t *h) {
  sleep_t *s = h->data;
  sg_lua_io_t *io = s->t->io;
  sleep_unlink(io, s);
  lua_pushboolean(s->t->co, 1);
  make_ready(s->t, 1);
  uv_close((uv_handle_t *)&s->timer, sleep_closed);
}

static int l_sleep(lua_State *L) {
  sg_lua_io_t *io = IO();
  task_t *t = need_task(L, io, "gw.sleep");
  if (lua_type(L, 1) != LUA_TNUMBER || !(lua_tonumber(L, 1) >= 0))
    return luaL_error(L, "gw.sleep: bad argument #1 (milliseconds >= 0 expected, got %s)",
                      luaL_typename(L, 1));
  sleep_t *s = calloc(1, sizeof *s);
  if (!s) return luaL_error(L, "out of memory");
  s->t = t;
  s->next = io->sleeps;
  if (io->sleeps) io->sleeps->prev = s;
  io->sleeps = s;
  uv_timer_init(io->loop, &s->timer);
  s->timer.data = s;
  uv_timer_start(&s->timer, sleep_cb, (uint64_t)lua_tonumber(L, 1), 0);
  t->state = T_WAIT;
  return lua_yield(L, 0);
}

/* ---- PostgreSQL ---------------------------------------------------------------------- */

/* A compact copy of a PGresult: text values, NUL-terminated, one buffer. */
typedef struct {
  int nrows, ncols;
  char **names;
  size_t *off;  /* nrows * ncols */
  int *len;     /* -1 = NULL */
  char *data;
  size_t bytes; /* malloc'd above, for the collector (rawres_account) */
  int freed;    /* r:free() was called: every access but #r raises */
} rawres_t;

#define RAWRES_MT "spangate.pg.result"

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

static int rawres_col(const rawres_t *r, const char *name) {
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
  if (kb > 0 && io->L) lua_gc(io->L, LUA_GCSTEP, kb > INT_MAX ? INT_MAX : (int)kb);
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
  int j = lua_type(L, 3) == LUA_TNUMBER ? (int)lua_tointeger(L, 3) - 1 : rawres_col(r, luaL_checkstring(L, 3));
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

typedef struct {
  sg_lua_io_t *io;
  task_t *t;
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
  if (io->closed || io->exiting) {
    pgreq_free(q);
    return;
  }
  task_t *t = q->t;
  lua_State *co = t->co;
  lua_checkstack(co, 8);
  if (err || res == NULL) {
    lua_pushboolean(co, 0);
    lua_pushfstring(co, "gw.pg.query: %s", errmsg ? errmsg : sg_strerror(err ? err : SG_EIO));
    pgreq_free(q);
    make_ready(t, 2);
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
      make_ready(t, 2);
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
  make_ready(t, 3);
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
  sg_lua_io_t *io = IO();
  int raw = lua_toboolean(L, 1);
  const char *fn = raw ? "gw.pg.query_raw" : "gw.pg.query";
  task_t *t = need_task(L, io, fn);
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
  t->state = T_WAIT;
  return lua_yield(L, 0);
}

/* ---- ClickHouse ------------------------------------------------------------------------ */

enum { CH_TEXT, CH_TSV, CH_INSERT, CH_SPANS, CH_BATCH };

/* What encoding rows for gw.ch.insert_spans / batch:add found. */
typedef struct {
  size_t rows, rejected;
  char reason[200]; /* the first rejection */
} enc_stats_t;

typedef struct spanbatch_s spanbatch_t;

typedef struct {
  sg_lua_io_t *io;
  task_t *t;
  int mode;
  const char *fn;
  size_t rows, rejected;
  char reason[200];
  sg_buf_t sql;
  sg_buf_t body;      /* an INSERT's rows, sent in place (CH_BATCH: the batch's, given back) */
  spanbatch_t *batch;
} chreq_t;

struct spanbatch_s {
  sg_buf_t body;
  size_t rows;
  int sending; /* b:send() in flight: body belongs to the request */
};

static void chreq_free(chreq_t *q) {
  sg_buf_free(&q->sql);
  sg_buf_free(&q->body);
  free(q);
}

/* A sent batch's memory back to it, emptied, for its next rows. */
static void batch_return(chreq_t *q) {
  spanbatch_t *b = q->batch;
  if (!b) return;
  b->body = q->body;
  sg_buf_reset(&b->body);
  memset(&q->body, 0, sizeof q->body);
  b->sending = 0;
  q->batch = NULL;
}

/* TabSeparated text -> list of row arrays (\N as gw.null), pushed on co. */
static void push_tsv(lua_State *co, const char *p, size_t n) {
  lua_newtable(co); /* rows */
  sg_buf_t f = SG_BUF_INIT;
  int r = 0;
  const char *end = p + n;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) eol = end;
    lua_newtable(co); /* rows, row */
    int c = 0;
    const char *q = p;
    while (q <= eol) {
      const char *tab = memchr(q, '\t', (size_t)(eol - q));
      if (!tab) tab = eol;
      if (tab - q == 2 && q[0] == '\\' && q[1] == 'N') {
        lua_pushlightuserdata(co, NULL);
      } else {
        sg_buf_reset(&f);
        for (const char *s = q; s < tab; s++) {
          if (*s == '\\' && s + 1 < tab) {
            s++;
            char e = *s;
            sg_buf_putc(&f, e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == '0' ? '\0'
                             : e == 'b' ? '\b' : e == 'f' ? '\f' : e);
          } else {
            sg_buf_putc(&f, *s);
          }
        }
        lua_pushlstring(co, f.data ? f.data : "", f.len);
      }
      lua_rawseti(co, -2, ++c);
      q = tab + 1;
    }
    lua_rawseti(co, -2, ++r);
    p = eol + 1;
  }
  sg_buf_free(&f);
}

static void ch_cb(void *arg, const sg_ch_result_t *r) {
  chreq_t *q = arg;
  sg_lua_io_t *io = q->io;
  if (io->closed || io->exiting || r->status == SG_ECANCELED) {
    chreq_free(q);
    return;
  }
  batch_return(q);
  task_t *t = q->t;
  lua_State *co = t->co;
  lua_checkstack(co, 6);
  if (r->status != 0) {
    lua_pushboolean(co, 0);
    if (r->ch_code)
      lua_pushfstring(co, "%s: ClickHouse code %d: %s", q->fn, r->ch_code, r->error);
    else
      lua_pushfstring(co, "%s: ClickHouse: %s", q->fn, r->error && *r->error ? r->error : sg_strerror(r->status));
    chreq_free(q);
    make_ready(t, 2);
    return;
  }
  lua_pushboolean(co, 1);
  int n = 2;
  switch (q->mode) {
  case CH_TEXT: lua_pushlstring(co, r->body, r->len); break;
  case CH_TSV: push_tsv(co, r->body, r->len); break;
  case CH_INSERT:
  case CH_BATCH: lua_pushnumber(co, (lua_Number)q->rows); break;
  case CH_SPANS:
    lua_pushnumber(co, (lua_Number)q->rows);
    lua_pushnumber(co, (lua_Number)q->rejected);
    if (q->reason[0]) lua_pushstring(co, q->reason);
    else lua_pushnil(co);
    n = 4;
    break;
  }
  chreq_free(q);
  make_ready(t, n);
}

static chreq_t *chreq_new(lua_State *L, sg_lua_io_t *io, task_t *t, int mode, const char *fn) {
  chreq_t *q = calloc(1, sizeof *q);
  if (!q) luaL_error(L, "out of memory");
  q->io = io;
  q->t = t;
  q->mode = mode;
  q->fn = fn;
  return q;
}

/* Starts q and yields. body NULL: q->sql is the query. Otherwise q->sql is
 * the INSERT and body its data: q->body (the request's own) is sent in
 * place, anything else (a Lua string) is copied by sg_ch_request. */
static int ch_send(lua_State *L, chreq_t *q, const void *body, size_t len) {
  sg_lua_io_t *io = q->io;
  int rc;
  if (body == NULL) /* a query travels in the body: URLs have a length limit (HTTP 400) */
    rc = sg_ch_request(io->ch, "", q->sql.data, q->sql.len, 0, ch_cb, q);
  else
    rc = sg_ch_request(io->ch, q->sql.data, body, len,
                       io->ch_flags | (body == q->body.data ? SG_CH_BORROW : 0), ch_cb, q);
  if (rc != 0) {
    lua_pushboolean(L, 0);
    lua_pushfstring(L, "%s: ClickHouse: %s", q->fn, sg_strerror(rc));
    batch_return(q);
    chreq_free(q);
    return 2;
  }
  q->t->state = T_WAIT;
  return lua_yield(L, 0);
}

/* raw ch_query(sql [, "TSV"]) -> ok, text | rows */
static int l_ch_query(lua_State *L) {
  sg_lua_io_t *io = IO();
  task_t *t = need_task(L, io, "gw.ch.query");
  if (lua_type(L, 1) != LUA_TSTRING)
    return luaL_error(L, "gw.ch.query: bad argument #1 (SQL string expected, got %s)", luaL_typename(L, 1));
  int mode = CH_TEXT;
  if (!lua_isnoneornil(L, 2)) {
    const char *f = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
    if (strcmp(f, "TSV") != 0)
      return luaL_error(L, "gw.ch.query: bad argument #2 (\"TSV\" or nothing expected)");
    mode = CH_TSV;
  }
  chreq_t *q = chreq_new(L, io, t, mode, "gw.ch.query");
  sg_buf_puts(&q->sql, lua_tostring(L, 1));
  if (mode == CH_TSV) sg_buf_puts(&q->sql, "\nFORMAT TabSeparated");
  if (q->sql.data == NULL) {
    chreq_free(q);
    return luaL_error(L, "out of memory");
  }
  return ch_send(L, q, NULL, 0);
}

static int put_tsv_value(lua_State *L, int idx, sg_buf_t *b) {
  size_t n;
  switch (lua_type(L, idx)) {
  case LUA_TNIL: return sg_buf_append(b, "\\N", 2);
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) return sg_buf_append(b, "\\N", 2);
    return SG_EINVAL;
  case LUA_TBOOLEAN: return sg_buf_putc(b, lua_toboolean(L, idx) ? '1' : '0');
  case LUA_TNUMBER: {
    double d = lua_tonumber(L, idx);
    if (d == floor(d) && fabs(d) < 9007199254740992.0) return sg_buf_printf(b, "%.0f", d);
    return sg_buf_printf(b, "%.17g", d);
  }
  case LUA_TSTRING: {
    const char *s = lua_tolstring(L, idx, &n);
    return sg_ch_tsv_escape(b, s, n);
  }
  }
  return SG_EINVAL;
}

/* raw ch_insert(target, body | rows) -> ok, rows */
static int l_ch_insert(lua_State *L) {
  sg_lua_io_t *io = IO();
  task_t *t = need_task(L, io, "gw.ch.insert");
  if (lua_type(L, 1) != LUA_TSTRING)
    return luaL_error(L, "gw.ch.insert: bad argument #1 (table name expected, got %s)", luaL_typename(L, 1));
  if (lua_type(L, 2) != LUA_TSTRING && !lua_istable(L, 2))
    return luaL_error(L, "gw.ch.insert: bad argument #2 (TabSeparated text or a list of row arrays "
                         "expected, got %s)", luaL_typename(L, 2));
  chreq_t *q = chreq_new(L, io, t, CH_INSERT, "gw.ch.insert");
  sg_buf_printf(&q->sql, "INSERT INTO %s FORMAT TabSeparated", lua_tostring(L, 1));
  if (lua_type(L, 2) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, 2, &n);
    for (size_t i = 0; i < n; i++) q->rows += s[i] == '\n';
    return ch_send(L, q, s, n);
  }
  sg_buf_t *body = &q->body;
  size_t nr = lua_objlen(L, 2);
  for (size_t i = 1; i <= nr; i++) {
    lua_rawgeti(L, 2, (int)i); /* row */
    if (!lua_istable(L, -1)) {
      chreq_free(q);
      return luaL_error(L, "gw.ch.insert: row %d is a %s (array expected)", (int)i, luaL_typename(L, -1));
    }
    size_t nc = lua_objlen(L, -1);
    int rc = 0;
    for (size_t j = 1; rc == 0 && j <= nc; j++) {
      if (j > 1) rc = sg_buf_putc(body, '\t');
      lua_rawgeti(L, -1, (int)j);
      rc = rc ? rc : put_tsv_value(L, lua_gettop(L), body);
      lua_pop(L, 1);
    }
    rc = rc ? rc : sg_buf_putc(body, '\n');
    lua_pop(L, 1);
    if (rc) {
      chreq_free(q);
      return luaL_error(L, "gw.ch.insert: row %d: a value is not a string, number, boolean or gw.null", (int)i);
    }
    q->rows++;
  }
  return ch_send(L, q, body->data, body->len);
}

/* ---- rows -> spans ----------------------------------------------------------------------- */

/* The columns gw.ch.insert_spans reads, by name (docs/jobs.md). */
#define SPAN_COLS(XX)                                                                          \
  XX(trace_id) XX(span_id) XX(parent_id) XX(trace_type) XX(span_type) XX(span_kind)            \
  XX(span_name) XX(start_us) XX(end_us) XX(status_code) XX(status_message) XX(attributes)      \
  XX(references) XX(links) XX(hashes) XX(events) XX(session_id) XX(user_id) XX(agent_id)       \
  XX(created_us) XX(updated_us) XX(deleted_us) XX(created_by_id) XX(updated_by_id)             \
  XX(deleted_by_id) XX(version)

enum {
#define XX(n) C_##n,
  SPAN_COLS(XX)
#undef XX
  C_COUNT
};
static const char *const span_col_names[] = {
#define XX(n) #n,
    SPAN_COLS(XX)
#undef XX
};

typedef struct {
  const char *p; /* NULL: SQL NULL or absent */
  size_t n;
  int isnum;
  double num;
} val_t;

/* Row source: a raw result, or a Lua list of tables at stack index idx. */
typedef struct {
  rawres_t *raw;
  int col[C_COUNT];
  lua_State *L;
  int idx;
} rows_t;

static void get_val(rows_t *src, int row, int c, val_t *v) {
  memset(v, 0, sizeof *v);
  if (src->raw) {
    int j = src->col[c];
    if (j < 0) return;
    size_t cell = (size_t)row * (size_t)src->raw->ncols + (size_t)j;
    if (src->raw->len[cell] < 0) return;
    v->p = src->raw->data + src->raw->off[cell];
    v->n = (size_t)src->raw->len[cell];
    return;
  }
  lua_State *L = src->L;
  lua_getfield(L, -1, span_col_names[c]); /* row, value */
  if (lua_type(L, -1) == LUA_TNUMBER) {
    v->isnum = 1;
    v->num = lua_tonumber(L, -1);
    v->p = "";
  } else if (lua_type(L, -1) == LUA_TSTRING) {
    v->p = lua_tolstring(L, -1, &v->n); /* stays alive: the row table holds it */
  }
  lua_pop(L, 1);
}

static int val_int(const val_t *v, int64_t *out) {
  if (v->p == NULL) return SG_EINVAL;
  if (v->isnum) {
    if (v->num != floor(v->num) || fabs(v->num) > 9.2e18) return SG_EINVAL;
    *out = (int64_t)v->num;
    return 0;
  }
  char *end;
  errno = 0;
  long long x = strtoll(v->p, &end, 10);
  if (v->n == 0 || end != v->p + v->n || errno) return SG_EINVAL;
  *out = x;
  return 0;
}

static char *val_str(const val_t *v) {
  if (v->p == NULL || v->isnum) return NULL;
  char *s = malloc(v->n + 1);
  if (s) {
    memcpy(s, v->p, v->n);
    s[v->n] = '\0';
  }
  return s;
}

static int val_json(const val_t *v, json_t **out) {
  *out = NULL;
  if (v->p == NULL) return 0;
  if (v->isnum) return SG_EINVAL;
  json_error_t e;
  *out = json_loadb(v->p, v->n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
  /* jsonb numbers beyond int64 (Agenta's API may have stored them): reals. */
  if (*out == NULL) *out = json_loadb(v->p, v->n, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &e);
  return *out ? 0 : SG_EPARSE;
}

static int val_id(const val_t *v, uint8_t out[16], uint8_t *has) {
  if (has) *has = 0;
  if (v->p == NULL) return has ? 0 : SG_EINVAL;
  if (v->isnum || sg_id_parse(v->p, v->n, out) != 0) return SG_EINVAL;
  if (has) *has = 1;
  return 0;
}

static int val_enum(const val_t *v, int (*parse)(const char *), int nullable, int8_t *out) {
  if (v->p == NULL) {
    if (!nullable) return SG_EINVAL;
    *out = SG_NULL_ENUM;
    return 0;
  }
  char buf[64];
  if (v->isnum || v->n >= sizeof buf) return SG_EINVAL;
  memcpy(buf, v->p, v->n);
  buf[v->n] = '\0';
  int x = parse(buf);
  if (x < 0) return SG_EINVAL;
  *out = (int8_t)x;
  return 0;
}

/* Row i of src as a span; what failed goes to why. 0 or an SG_E* code. */
static int row_to_span(rows_t *src, int row, sg_span_t *s, const char **why) {
  val_t v[C_COUNT];
  for (int c = 0; c < C_COUNT; c++) get_val(src, row, c, &v[c]);
  memset(s, 0, sizeof *s);
  int rc;
#define CHECK(expr, what) if ((rc = (expr)) != 0) { *why = what; return rc; }
  CHECK(val_id(&v[C_trace_id], s->trace_id, NULL), "trace_id");
  CHECK(val_id(&v[C_span_id], s->span_id, NULL), "span_id");
  CHECK(val_id(&v[C_parent_id], s->parent_id, &s->has_parent), "parent_id");
  CHECK(val_enum(&v[C_trace_type], sg_trace_type_parse, 1, &s->trace_type), "trace_type");
  CHECK(val_enum(&v[C_span_type], sg_span_type_parse, 1, &s->span_type), "span_type");
  CHECK(val_enum(&v[C_span_kind], sg_span_kind_parse, 0, &s->span_kind), "span_kind");
  CHECK(val_enum(&v[C_status_code], sg_status_code_parse, 0, &s->status_code), "status_code");
  CHECK(val_int(&v[C_start_us], &s->start_us), "start_us");
  CHECK(val_int(&v[C_end_us], &s->end_us), "end_us");
  CHECK(val_int(&v[C_created_us], &s->created_at_us), "created_us");
  if (v[C_updated_us].p) CHECK(val_int(&v[C_updated_us], &s->updated_at_us), "updated_us");
  if (v[C_deleted_us].p) CHECK(val_int(&v[C_deleted_us], &s->deleted_at_us), "deleted_us");
  CHECK(val_id(&v[C_created_by_id], s->created_by_id, &s->has_created_by), "created_by_id");
  CHECK(val_id(&v[C_updated_by_id], s->updated_by_id, &s->has_updated_by), "updated_by_id");
  CHECK(val_id(&v[C_deleted_by_id], s->deleted_by_id, &s->has_deleted_by), "deleted_by_id");
  /* The live path's rule (pgsink.c): µs of coalesce(updated_at, created_at). */
  if (v[C_version].p) {
    CHECK(val_int(&v[C_version], &s->version), "version");
  } else {
    s->version = s->updated_at_us ? s->updated_at_us : s->created_at_us;
  }
  *why = "out of memory";
  s->span_name = val_str(&v[C_span_name]);
  if (!s->span_name) s->span_name = strdup("");
  if (!s->span_name) return SG_ENOMEM;
  if (v[C_status_message].p && !(s->status_message = val_str(&v[C_status_message]))) return SG_ENOMEM;
  if (v[C_session_id].p && !(s->session_id = val_str(&v[C_session_id]))) return SG_ENOMEM;
  if (v[C_user_id].p && !(s->user_id = val_str(&v[C_user_id]))) return SG_ENOMEM;
  if (v[C_agent_id].p && !(s->agent_id = val_str(&v[C_agent_id]))) return SG_ENOMEM;
  CHECK(val_json(&v[C_attributes], &s->attributes), "attributes");
  CHECK(val_json(&v[C_references], &s->references), "references");
  CHECK(val_json(&v[C_links], &s->links), "links");
  CHECK(val_json(&v[C_hashes], &s->hashes), "hashes");
  CHECK(val_json(&v[C_events], &s->events), "events");
#undef CHECK
  return 0;
}

/* ---- rows of a raw result -> TabSeparated, without sg_span_t ------------------------
 *
 * The migration's path (docs/jobs.md "Rows"): PostgreSQL's text values go
 * straight into sg_ch_row_encode_text (ids and labels copied, JSON made
 * compact in one validating pass), no jansson tree, no malloc per value.
 * The TTL hook, when ttl.lua defines one, still gets a full read-only span
 * (JSON columns parsed) so that its answer is exactly the live path's. */

static void raw_text(const rawres_t *r, int row, int j, sg_ch_text_t *v) {
  v->p = NULL;
  v->n = 0;
  if (j < 0) return;
  size_t cell = (size_t)row * (size_t)r->ncols + (size_t)j;
  if (r->len[cell] < 0) return;
  v->p = r->data + r->off[cell];
  v->n = (size_t)r->len[cell];
}

/* A decimal int64 (PostgreSQL's int8 output), exactly. */
static int text_i64(const sg_ch_text_t *v, int64_t *out) {
  if (v->p == NULL || v->n == 0 || v->n > 20) return SG_EINVAL;
  const char *p = v->p, *end = p + v->n;
  int neg = *p == '-';
  if (neg && ++p == end) return SG_EINVAL;
  uint64_t x = 0;
  for (; p < end; p++) {
    if (*p < '0' || *p > '9') return SG_EINVAL;
    uint64_t d = (uint64_t)(*p - '0');
    if (x > (UINT64_MAX - d) / 10) return SG_EINVAL;
    x = x * 10 + d;
  }
  if (x > (uint64_t)INT64_MAX + (uint64_t)neg) return SG_EINVAL;
  *out = neg ? (int64_t)(0 - x) : (int64_t)x;
  return 0;
}

static int raw_row_text(const rows_t *src, int row, sg_ch_text_row_t *t, const char **why) {
  const rawres_t *r = src->raw;
  const int *col = src->col;
  sg_ch_text_t v;
  memset(t, 0, sizeof *t);
#define TXT(name, field) raw_text(r, row, col[C_##name], &t->field)
  TXT(trace_id, trace_id); TXT(span_id, span_id); TXT(parent_id, parent_id);
  TXT(trace_type, trace_type); TXT(span_type, span_type); TXT(span_kind, span_kind);
  TXT(status_code, status_code); TXT(span_name, span_name); TXT(status_message, status_message);
  TXT(session_id, session_id); TXT(user_id, user_id); TXT(agent_id, agent_id);
  TXT(attributes, attributes); TXT(references, references); TXT(links, links);
  TXT(hashes, hashes); TXT(events, events); TXT(created_by_id, created_by_id);
  TXT(updated_by_id, updated_by_id); TXT(deleted_by_id, deleted_by_id);
#undef TXT
#define INT(name, field, required)                                              \
  raw_text(r, row, col[C_##name], &v);                                          \
  if ((v.p || (required)) && text_i64(&v, &t->field) != 0) {                    \
    *why = #name;                                                               \
    return SG_EINVAL;                                                           \
  }
  INT(start_us, start_us, 1);
  INT(end_us, end_us, 1);
  INT(created_us, created_at_us, 1);
  INT(updated_us, updated_at_us, 0);
  INT(deleted_us, deleted_at_us, 0);
  raw_text(r, row, col[C_version], &v);
  if (v.p) {
    if (text_i64(&v, &t->version) != 0) {
      *why = "version";
      return SG_EINVAL;
    }
  } else { /* the live path's rule (pgsink.c): µs of coalesce(updated_at, created_at) */
    t->version = t->updated_at_us ? t->updated_at_us : t->created_at_us;
  }
#undef INT
  return 0;
}

static int text_enum(const sg_ch_text_t *v, int (*parse)(const char *), int nullable, int8_t *out) {
  val_t x = {v->p, v->n, 0, 0};
  return val_enum(&x, parse, nullable, out);
}

static int text_id(const sg_ch_text_t *v, uint8_t out[16], uint8_t *has) {
  val_t x = {v->p, v->n, 0, 0};
  return val_id(&x, out, has);
}

static int text_json(const sg_ch_text_t *v, json_t **out) {
  val_t x = {v->p, v->n, 0, 0};
  return val_json(&x, out);
}

/* The span ttl.lua sees (read-only): strings point into the result (its
 * values are NUL-terminated), JSON columns parsed. Release with
 * hook_span_clear, never sg_span_clear. */
static int hook_span(const sg_ch_text_row_t *t, sg_span_t *s, int with_json, const char **why) {
  memset(s, 0, sizeof *s);
  int rc;
#define CHECK(expr, what) if ((rc = (expr)) != 0) { *why = what; return rc; }
  CHECK(text_id(&t->trace_id, s->trace_id, NULL), "trace_id");
  CHECK(text_id(&t->span_id, s->span_id, NULL), "span_id");
  CHECK(text_id(&t->parent_id, s->parent_id, &s->has_parent), "parent_id");
  CHECK(text_id(&t->created_by_id, s->created_by_id, &s->has_created_by), "created_by_id");
  CHECK(text_id(&t->updated_by_id, s->updated_by_id, &s->has_updated_by), "updated_by_id");
  CHECK(text_id(&t->deleted_by_id, s->deleted_by_id, &s->has_deleted_by), "deleted_by_id");
  CHECK(text_enum(&t->trace_type, sg_trace_type_parse, 1, &s->trace_type), "trace_type");
  CHECK(text_enum(&t->span_type, sg_span_type_parse, 1, &s->span_type), "span_type");
  CHECK(text_enum(&t->span_kind, sg_span_kind_parse, 0, &s->span_kind), "span_kind");
  CHECK(text_enum(&t->status_code, sg_status_code_parse, 0, &s->status_code), "status_code");
  s->span_name = (char *)(t->span_name.p ? t->span_name.p : "");
  s->status_message = (char *)t->status_message.p;
  s->session_id = (char *)t->session_id.p;
  s->user_id = (char *)t->user_id.p;
  s->agent_id = (char *)t->agent_id.p;
  s->start_us = t->start_us;
  s->end_us = t->end_us;
  s->created_at_us = t->created_at_us;
  s->updated_at_us = t->updated_at_us;
  s->deleted_at_us = t->deleted_at_us;
  s->version = t->version;
  if (!with_json) return 0; /* lazy_span_index parses them when read */
  CHECK(text_json(&t->attributes, &s->attributes), "attributes");
  CHECK(text_json(&t->references, &s->references), "references");
  CHECK(text_json(&t->links, &s->links), "links");
  CHECK(text_json(&t->hashes, &s->hashes), "hashes");
  CHECK(text_json(&t->events, &s->events), "events");
#undef CHECK
  return 0;
}

/* The hooks runtime's span.__index, wrapped: reading a JSON column of the
 * migration's span parses that column then (jansson, as the live path
 * has it), so a ttl.lua that never looks at them costs no parsing; one that
 * does sees exactly what it would have seen. Every way a hook can reach a
 * span's JSON goes through span.__index (lua_gw.c's helpers take the JSON
 * proxies it returns). */
static int lazy_span_index(lua_State *L) {
  sg_lua_io_t *io = lua_touserdata(L, lua_upvalueindex(1));
  size_t n;
  const char *k;
  if (io->lazy_span && (k = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &n) : NULL) != NULL) {
    sg_lua_proxy_t *p = sg__lua_test_proxy_rt(L, 1, io->hooks);
    if (p && p->tag == SG_PX_SPAN && (p->flags & SG_PXF_READONLY) && p->gen == io->hooks->call_gen &&
        p->u.slot && p->u.slot->s == io->lazy_span) {
      sg_span_t *s = io->lazy_span;
      const sg_ch_text_row_t *t = io->lazy_row;
      json_t **dst = NULL;
      const sg_ch_text_t *src = NULL;
#define JF(name)                                                    \
      if (n == sizeof #name - 1 && memcmp(k, #name, n) == 0) {      \
        dst = &s->name;                                             \
        src = &t->name;                                             \
      }
      JF(attributes) else JF(references) else JF(links) else JF(hashes) else JF(events)
#undef JF
      if (dst && *dst == NULL && src->p && text_json(src, dst) != 0) {
        *dst = NULL;
        if (!io->lazy_err) io->lazy_err = k[0] == 'a' ? "attributes" : k[0] == 'r' ? "references"
                                          : k[0] == 'l' ? "links" : k[0] == 'h' ? "hashes" : "events";
      }
    }
  }
  return io->span_index_orig(L);
}

/* Wraps the hooks runtime's span.__index once (and again should a reload
 * have replaced the metatable's entry). 1 when lazy parsing is in place. */
static int lazy_install(sg_lua_io_t *io) {
  lua_State *H = sg_lua_rt_state(io->hooks);
  int top = lua_gettop(H);
  lua_rawgeti(H, LUA_REGISTRYINDEX, io->hooks->ref_mt_span); /* mt */
  if (!lua_istable(H, -1)) goto out;
  lua_getfield(H, -1, "__index"); /* mt, index */
  lua_CFunction f = lua_tocfunction(H, -1);
  if (f == lazy_span_index) {
    io->lazy_ok = 1;
    goto out;
  }
  if (f == NULL) { /* not the C function lua_span.c installs: parse eagerly */
    io->lazy_ok = 0;
    goto out;
  }
  io->span_index_orig = f;
  lua_pushlightuserdata(H, io);
  lua_pushcclosure(H, lazy_span_index, 1); /* mt, index, wrapper */
  lua_setfield(H, -3, "__index");
  io->lazy_ok = 1;
out:
  lua_settop(H, top);
  return io->lazy_ok;
}

static void hook_span_clear(sg_span_t *s) {
  json_decref(s->attributes);
  json_decref(s->references);
  json_decref(s->links);
  json_decref(s->hashes);
  json_decref(s->events);
  memset(s, 0, sizeof *s);
}

/* Row i of a raw result appended to body; 0, SG_ENOMEM or a rejection
 * (reason in st->reason for the first one). */
static int raw_row_encode(sg_lua_io_t *io, rows_t *src, int i, const uint8_t project[16], int has_ttl,
                          sg_buf_t *body, enc_stats_t *st) {
  sg_ch_text_row_t t;
  const char *why = "";
  int rc = raw_row_text(src, i, &t, &why);
  int64_t exp = INT64_MAX;
  if (rc == 0 && has_ttl) {
    sg_span_t s;
    int lazy = io->lazy_ok;
    rc = hook_span(&t, &s, !lazy, &why);
    double days = -1;
    if (rc == 0) {
      if (lazy) {
        io->lazy_span = &s;
        io->lazy_row = &t;
        io->lazy_err = NULL;
      }
      sg_lua_retention_days(io->hooks, project, &s, &days);
      io->lazy_span = NULL;
      if (lazy && io->lazy_err) { /* the sg_span_t path rejects it before the hook */
        rc = SG_EPARSE;
        why = io->lazy_err;
      }
    }
    if (days > 0) exp = t.created_at_us + (int64_t)(days * 86400e6);
    hook_span_clear(&s);
  }
  if (rc == 0) {
    rc = sg_ch_row_encode_text(&io->target.spans, project, &t, exp, body, &why);
    /* a time, version or expires_at out of range: what the sg_span_t path says */
    if (rc == SG_EINVAL && (strstr(why, "_at") || strstr(why, "_time") || !strcmp(why, "version")))
      why = "value out of ClickHouse's range";
  }
  if (rc == 0 || rc == SG_ENOMEM) return rc;
  if (!st->reason[0]) {
    snprintf(st->reason, sizeof st->reason, "span %.*s/%.*s: bad %s", (int)(t.trace_id.p ? t.trace_id.n : 0),
             t.trace_id.p ? t.trace_id.p : "", (int)(t.span_id.p ? t.span_id.n : 0),
             t.span_id.p ? t.span_id.p : "", why);
  }
  return rc;
}

/* The (project_id, rows) arguments at pidx, pidx + 1 of gw.ch.insert_spans
 * and b:add, checked (raises, naming fn, before anything is allocated;
 * numbered as the script counts them: #1 and #2 for batch:add too). */
static void span_args(lua_State *L, sg_lua_io_t *io, const char *fn, int pidx, uint8_t project[16],
                      rows_t *src, int *nrows) {
  size_t pn;
  const char *pid = lua_type(L, pidx) == LUA_TSTRING ? lua_tolstring(L, pidx, &pn) : NULL;
  if (pid == NULL || sg_id_parse(pid, pn, project) != 0)
    luaL_error(L, "%s: bad argument #1 (project id expected, got %s)", fn, pid ? pid : luaL_typename(L, pidx));
  memset(src, 0, sizeof *src);
  int ridx = pidx + 1;
  if (lua_type(L, ridx) == LUA_TUSERDATA && luaL_checkudata(L, ridx, RAWRES_MT)) {
    src->raw = lua_touserdata(L, ridx);
    if (src->raw->freed)
      luaL_error(L, "%s: bad argument #2 (result was freed: r:free() was called before)", fn);
    for (int c = 0; c < C_COUNT; c++) src->col[c] = rawres_col(src->raw, span_col_names[c]);
    *nrows = src->raw->nrows;
  } else if (lua_istable(L, ridx)) {
    src->L = L;
    src->idx = ridx;
    *nrows = (int)lua_objlen(L, ridx);
  } else {
    luaL_error(L, "%s: bad argument #2 (gw.pg.query_raw result or list of rows expected, got %s)", fn,
               luaL_typename(L, ridx));
  }
  if (!io->have_ver)
    luaL_error(L, "%s: %s", fn, io->ver_err.data ? io->ver_err.data : "ClickHouse version unknown");
}

/* The rows of src appended to body as ClickHouse TabSeparated rows of
 * project (the spool writer's format); rejected rows counted in st, with
 * the first reason. 0 or SG_ENOMEM (body then holds a partial row: the
 * caller drops it or cuts it back). */
static int encode_spans(lua_State *L, sg_lua_io_t *io, const uint8_t project[16], rows_t *src, int nrows,
                        sg_buf_t *body, enc_stats_t *st) {
  int has_ttl = io->hooks && (sg_lua_rt_hooks(io->hooks) & SG_LUA_HOOK_RETENTION);
  if (src->raw) {
    if (has_ttl) lazy_install(io);
    for (int i = 0; i < nrows; i++) {
      int rc = raw_row_encode(io, src, i, project, has_ttl, body, st);
      if (rc == SG_ENOMEM) return rc;
      if (rc) st->rejected++;
      else st->rows++;
    }
    return 0;
  }
  for (int i = 0; i < nrows; i++) {
    lua_rawgeti(L, src->idx, i + 1); /* row */
    if (!lua_istable(L, -1)) {
      lua_pop(L, 1);
      st->rejected++;
      if (!st->reason[0]) snprintf(st->reason, sizeof st->reason, "row %d is not a table", i + 1);
      continue;
    }
    sg_span_t s;
    const char *why = "";
    int rc = row_to_span(src, i, &s, &why);
    lua_pop(L, 1);
    if (rc == 0) {
      double days = -1;
      if (has_ttl) sg_lua_retention_days(io->hooks, project, &s, &days);
      int64_t exp = days > 0 ? s.created_at_us + (int64_t)(days * 86400e6) : INT64_MAX;
      rc = sg_ch_row_encode(&io->target.spans, project, &s, exp, body);
      if (rc) why = "value out of ClickHouse's range";
    }
    if (rc == SG_ENOMEM) {
      sg_span_clear(&s);
      return rc;
    }
    if (rc) {
      st->rejected++;
      if (!st->reason[0]) {
        char tid[37], sid[37];
        sg_uuid_format(s.trace_id, tid);
        sg_uuid_format(s.span_id, sid);
        snprintf(st->reason, sizeof st->reason, "span %s/%s: bad %s", tid, sid, why);
      }
    } else {
      st->rows++;
    }
    sg_span_clear(&s);
  }
  return 0;
}

/* The call's (project_id, rows) at pidx, pidx + 1 appended to body, all
 * or none; counts in st. Raises on bad arguments; 0 or SG_ENOMEM. */
static int add_spans(lua_State *L, sg_lua_io_t *io, const char *fn, int pidx, sg_buf_t *body, enc_stats_t *st) {
  uint8_t project[16];
  rows_t src;
  int nrows = 0;
  span_args(L, io, fn, pidx, project, &src, &nrows);
  memset(st, 0, sizeof *st);
  size_t mark = body->len;
  int rc = encode_spans(L, io, project, &src, nrows, body, st);
  if (rc) body->len = mark;
  return rc;
}

/* [ok,] rows, rejected, first reason */
static int push_enc_stats(lua_State *L, const enc_stats_t *st, int with_ok) {
  if (with_ok) lua_pushboolean(L, 1);
  lua_pushnumber(L, (lua_Number)st->rows);
  lua_pushnumber(L, (lua_Number)st->rejected);
  if (st->reason[0]) lua_pushstring(L, st->reason);
  else lua_pushnil(L);
  return with_ok + 3;
}

/* raw ch_insert_spans(project_id, rows) -> ok, inserted, rejected, first reason */
static int l_ch_insert_spans(lua_State *L) {
  sg_lua_io_t *io = IO();
  const char *fn = "gw.ch.insert_spans";
  task_t *t = need_task(L, io, fn);
  enc_stats_t st;
  sg_buf_t body = SG_BUF_INIT;
  if (add_spans(L, io, fn, 1, &body, &st) != 0) {
    sg_buf_free(&body);
    return luaL_error(L, "%s: out of memory", fn);
  }
  if (st.rows == 0) {
    sg_buf_free(&body);
    return push_enc_stats(L, &st, 1);
  }
  chreq_t *q = chreq_new(L, io, t, CH_SPANS, fn);
  q->rows = st.rows;
  q->rejected = st.rejected;
  memcpy(q->reason, st.reason, sizeof q->reason);
  q->body = body; /* every row is encoded: nothing points into a query_raw result */
  sg_buf_append(&q->sql, io->insert_sql.data, io->insert_sql.len);
  return ch_send(L, q, q->body.data, q->body.len);
}

/* ---- gw.ch.span_batch ---------------------------------------------------------------------
 * Rows of many gw.pg.query_raw pages (of any projects) collected into one
 * ClickHouse INSERT: fewer, larger parts than an insert per page, so
 * ClickHouse merges less. b:add() encodes at once (the result may be freed
 * right after); b:send() posts the body in place (no copy) and, whatever
 * the outcome, leaves the batch empty with its memory kept for the next
 * rows. */
#define BATCH_MT "spangate.ch.span_batch"

static spanbatch_t *check_batch(lua_State *L, int idx, const char *fn) {
  spanbatch_t *b = luaL_checkudata(L, idx, BATCH_MT);
  if (b->sending) luaL_error(L, "%s: the batch is being sent (b:send() has not returned)", fn);
  return b;
}

static int batch_gc(lua_State *L) {
  spanbatch_t *b = luaL_checkudata(L, 1, BATCH_MT);
  sg_buf_free(&b->body); /* empty while sending: the request owns it then */
  return 0;
}

/* raw ch_span_batch() -> batch */
static int l_ch_span_batch(lua_State *L) {
  spanbatch_t *b = lua_newuserdata(L, sizeof *b);
  memset(b, 0, sizeof *b);
  luaL_getmetatable(L, BATCH_MT);
  lua_setmetatable(L, -2);
  return 1;
}

/* b:add(project_id, rows) -> added, rejected, first reason */
static int l_batch_add(lua_State *L) {
  sg_lua_io_t *io = IO();
  const char *fn = "batch:add";
  spanbatch_t *b = check_batch(L, 1, fn);
  if (io == NULL) return luaL_error(L, "%s: I/O is only available to jobs", fn);
  enc_stats_t st;
  if (add_spans(L, io, fn, 2, &b->body, &st) != 0) return luaL_error(L, "%s: out of memory", fn);
  b->rows += st.rows;
  return push_enc_stats(L, &st, 0);
}

static int l_batch_rows(lua_State *L) {
  spanbatch_t *b = luaL_checkudata(L, 1, BATCH_MT);
  lua_pushnumber(L, (lua_Number)b->rows);
  return 1;
}

static int l_batch_bytes(lua_State *L) {
  spanbatch_t *b = luaL_checkudata(L, 1, BATCH_MT);
  lua_pushnumber(L, (lua_Number)b->body.len); /* 0 while sending: the request has it */
  return 1;
}

/* raw batch_send(b) -> ok, rows | false, message */
static int l_batch_send(lua_State *L) {
  sg_lua_io_t *io = IO();
  const char *fn = "batch:send";
  spanbatch_t *b = check_batch(L, 1, fn);
  task_t *t = need_task(L, io, fn);
  if (b->rows == 0) {
    lua_pushboolean(L, 1);
    lua_pushnumber(L, 0);
    return 2;
  }
  chreq_t *q = chreq_new(L, io, t, CH_BATCH, fn);
  q->rows = b->rows;
  q->body = b->body; /* the request's until ch_cb gives it back */
  memset(&b->body, 0, sizeof b->body);
  b->rows = 0;
  b->sending = 1;
  q->batch = b; /* b is on the task's stack (the argument) until it resumes */
  sg_buf_append(&q->sql, io->insert_sql.data, io->insert_sql.len);
  return ch_send(L, q, q->body.data, q->body.len);
}

/* ---- gw.hooks ------------------------------------------------------------------------------ */

/* gw.hooks.clickhouse(project_id) -> routing.lua's answer (true without the hook). */
static int l_hook_clickhouse(lua_State *L) {
  sg_lua_io_t *io = IO();
  size_t n;
  const char *pid = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
  uint8_t project[16];
  if (pid == NULL || sg_id_parse(pid, n, project) != 0)
    return luaL_error(L, "gw.hooks.clickhouse: bad argument #1 (project id expected)");
  int on = 1;
  if (io && io->hooks) sg_lua_route_clickhouse(io->hooks, project, &on);
  lua_pushboolean(L, on);
  return 1;
}

/* ---- injection -------------------------------------------------------------------------------- */

/* Lua wrappers: raise the error a resumed C function could not raise. */
static const char wrappers_lua[] =
    "local gw, raw = ...\n"
    "local error, select, unpack = error, select, unpack\n"
    "gw.pg = {\n"
    "  query = function(sql, ...)\n"
    "    local ok, rows, n = raw.pg_query(false, sql, ...)\n"
    "    if not ok then error(rows, 2) end\n"
    "    return rows, n\n"
    "  end,\n"
    "  query_raw = function(sql, ...)\n"
    "    local ok, rows, n = raw.pg_query(true, sql, ...)\n"
    "    if not ok then error(rows, 2) end\n"
    "    return rows, n\n"
    "  end,\n"
    "}\n"
    "gw.ch = {\n"
    "  server = raw.server, server_error = raw.server_error,\n"
    "  query = function(sql, format)\n"
    "    local ok, r = raw.ch_query(sql, format)\n"
    "    if not ok then error(r, 2) end\n"
    "    return r\n"
    "  end,\n"
    "  insert = function(target, rows)\n"
    "    local ok, r = raw.ch_insert(target, rows)\n"
    "    if not ok then error(r, 2) end\n"
    "    return r\n"
    "  end,\n"
    "  insert_spans = function(project_id, rows)\n"
    "    local ok, n, rejected, why = raw.ch_insert_spans(project_id, rows)\n"
    "    if not ok then error(n, 2) end\n"
    "    return n, rejected, why\n"
    "  end,\n"
    "  span_batch = raw.ch_span_batch,\n"
    "}\n"
    "raw.batch_mt.__index = {\n"
    "  add = raw.batch_add, rows = raw.batch_rows, bytes = raw.batch_bytes,\n"
    "  send = function(b)\n"
    "    local ok, n = raw.batch_send(b)\n"
    "    if not ok then error(n, 2) end\n"
    "    return n\n"
    "  end,\n"
    "}\n"
    "gw.sleep = function(ms)\n"
    "  local ok, e = raw.sleep(ms)\n"
    "  if not ok then error(e, 2) end\n"
    "end\n"
    "gw.spawn = raw.spawn\n"
    "gw.exit = raw.exit\n"
    "gw.wait = function(...)\n"
    "  local n = select('#', ...)\n"
    "  if n == 0 then error('gw.wait: bad argument #1 (task expected)', 2) end\n"
    "  local first\n"
    "  for i = 1, n do\n"
    "    local ok, res = raw.wait((select(i, ...)))\n"
    "    if not ok then error(res, 0) end\n"
    "    if i == 1 then first = res end\n"
    "  end\n"
    "  if n == 1 then return unpack(first, 1, first.n) end\n"
    "  return true\n"
    "end\n"
    "gw.hooks = { clickhouse = raw.hook_clickhouse }\n"
    "gw.stdout_isatty = raw.isatty\n";

void sg_lua_io_inject(lua_State *L, void *ud) {
  sg_lua_io_t *io = ud;
  static const luaL_Reg fns[] = {
      {"pg_query", l_pg_query}, {"ch_query", l_ch_query}, {"ch_insert", l_ch_insert},
      {"ch_insert_spans", l_ch_insert_spans}, {"sleep", l_sleep}, {"spawn", l_spawn},
      {"wait", l_wait}, {"exit", l_exit}, {"hook_clickhouse", l_hook_clickhouse},
      {"ch_span_batch", l_ch_span_batch}, {"batch_add", l_batch_add}, {"batch_rows", l_batch_rows},
      {"batch_bytes", l_batch_bytes}, {"batch_send", l_batch_send},
      {NULL, NULL}};
  int gw = lua_gettop(L);                       /* gw */
  if (luaL_newmetatable(L, RAWRES_MT)) {        /* gw, mt */
    static const luaL_Reg m[] = {{"get", rawres_get}, {"row", rawres_row},
                                 {"columns", rawres_columns}, {"free", rawres_free},
                                 {NULL, NULL}};
    lua_newtable(L);                            /* gw, mt, methods */
    for (const luaL_Reg *r = m; r->name; r++) {
      lua_pushcfunction(L, r->func);
      lua_setfield(L, -2, r->name);
    }
    lua_setfield(L, -2, "__index");             /* gw, mt */
    lua_pushcfunction(L, rawres_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, rawres_len);
    lua_setfield(L, -2, "__len");
  }
  lua_pop(L, 1);                                /* gw */
  if (luaL_newmetatable(L, BATCH_MT)) {         /* gw, mt: __index is set by wrappers_lua */
    lua_pushcfunction(L, batch_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);                                /* gw */
  lua_pushlightuserdata(L, &tasks_key);
  lua_rawget(L, LUA_REGISTRYINDEX);             /* gw, tasks | nil */
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushlightuserdata(L, &tasks_key);       /* gw, key */
    lua_newtable(L);                            /* gw, key, tasks */
    lua_newtable(L);                            /* gw, key, tasks, mt */
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");              /* done tasks go with their handles */
    lua_setmetatable(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);           /* gw */
  } else {
    lua_pop(L, 1);
  }
  if (luaL_loadbuffer(L, wrappers_lua, sizeof wrappers_lua - 1, "=gw.io") != 0) {
    lua_pop(L, 1); /* cannot happen: the chunk is constant */
    return;
  }                                             /* gw, chunk */
  lua_pushvalue(L, gw);                         /* gw, chunk, gw */
  lua_newtable(L);                              /* gw, chunk, gw, raw */
  for (const luaL_Reg *r = fns; r->name; r++) {
    lua_pushlightuserdata(L, io);
    lua_pushcclosure(L, r->func, 1);
    lua_setfield(L, -2, r->name);
  }
  lua_pushboolean(L, isatty(1));
  lua_setfield(L, -2, "isatty");
  luaL_getmetatable(L, BATCH_MT);
  lua_setfield(L, -2, "batch_mt");
  if (io && io->have_ver) {
    lua_newtable(L);                            /* ..., raw, server */
    lua_pushstring(L, io->target.version_text);
    lua_setfield(L, -2, "version");
    lua_pushinteger(L, io->target.ver.major);
    lua_setfield(L, -2, "major");
    lua_pushinteger(L, io->target.ver.minor);
    lua_setfield(L, -2, "minor");
    /* the tables' layouts, not the version's: tables made before an upgrade keep theirs */
    lua_pushboolean(L, (io->target.spans.flags & SG_CH_LAYOUT_DT64) != 0);
    lua_setfield(L, -2, "datetime64");
    lua_pushboolean(L, (io->target.nodes.flags & SG_CH_LAYOUT_DT64) != 0);
    lua_setfield(L, -2, "nodes_datetime64");
    if (io->cfg->clickhouse_cluster[0]) {
      lua_pushstring(L, io->cfg->clickhouse_cluster);
      lua_setfield(L, -2, "cluster");
    }
    sg_ch_schema_opts_t so;
    sg_ch_setup_opts(io->cfg, &so);
    sg_buf_t mt = SG_BUF_INIT;
    if (sg_ch_mutation_target(&so, "spans", &mt) == 0) {
      lua_pushlstring(L, mt.data, mt.len);
      lua_setfield(L, -2, "spans_mutation"); /* ALTER TABLE <this> DELETE ... */
    }
    sg_buf_free(&mt);
    lua_pushstring(L, io->cfg->clickhouse_database);
    lua_setfield(L, -2, "database");
    lua_setfield(L, -2, "server");              /* ..., raw */
  } else if (io) {
    lua_pushstring(L, io->ver_err.data ? io->ver_err.data : "ClickHouse version unknown");
    lua_setfield(L, -2, "server_error");
  }
  lua_call(L, 2, 0);                            /* gw */
}

/* ---- lifecycle --------------------------------------------------------------------------------- */

sg_lua_io_t *sg_lua_io_new(uv_loop_t *loop, const sg_config_t *cfg, sg_lua_rt_t *hooks,
                           sg_buf_t *err) {
  sg_lua_io_t *io = calloc(1, sizeof *io);
  if (!io) {
    sg_buf_puts(err, "out of memory");
    return NULL;
  }
  io->loop = loop;
  io->cfg = cfg;
  io->hooks = hooks;
  sg_buf_t why = SG_BUF_INIT;
  if (sg_pg_conninfo_check(cfg->postgres_uri, &why) != 0) {
    sg_buf_printf(err, "postgres_uri: %s", why.data ? why.data : "does not parse");
    sg_buf_free(&why);
    free(io);
    return NULL;
  }
  sg_buf_free(&why);
  int size = cfg->pg_pool_size > 8 ? (int)cfg->pg_pool_size : 8;
  io->pg = sg_pg_pool_new(loop, cfg->postgres_uri, size, NULL);
  sg_ch_opts_t o = {cfg->clickhouse_host, (int)cfg->clickhouse_port, cfg->clickhouse_user,
                    cfg->clickhouse_password, cfg->clickhouse_database,
                    (long)cfg->clickhouse_timeout_ms, 8};
  io->ch = sg_ch_client_new(loop, &o);
  if (!io->pg || !io->ch) {
    sg_buf_puts(err, "cannot create the database clients (out of memory)");
    if (io->pg) sg_pg_pool_close(io->pg);
    if (io->ch) sg_ch_client_close(io->ch);
    uv_run(loop, UV_RUN_DEFAULT);
    free(io);
    return NULL;
  }
  io->ch_flags = sg_config_clickhouse_gzip(cfg) ? SG_CH_GZIP : 0;
  /* The server's version and the tables' row layouts, asked once. A job
   * does not create tables; with none yet, rows are those of the version. */
  sg_buf_t why2 = SG_BUF_INIT;
  int rc = sg_ch_setup(cfg, 0, &io->target, NULL, &why2);
  if (rc == SG_ENOTFOUND) {
    sg_ch_layout_of_version(&io->target.ver, &io->target.spans);
    io->target.nodes = io->target.spans;
    rc = 0;
  }
  if (rc == 0) {
    io->have_ver = 1;
    sg_ch_insert_sql(&io->target.spans, cfg->clickhouse_database, &io->insert_sql);
  } else {
    sg_buf_puts(&io->ver_err, why2.data ? why2.data : sg_strerror(rc));
  }
  sg_buf_free(&why2);
  sg_buf_free(&why);
  uv_idle_init(loop, &io->idle);
  io->idle.data = io;
  return io;
}

static void shutdown_io(sg_lua_io_t *io) {
  if (io->closed) return;
  io->closed = 1;
  uv_idle_stop(&io->idle);
  uv_close((uv_handle_t *)&io->idle, NULL);
  for (sleep_t *s = io->sleeps, *n; s; s = n) {
    n = s->next;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, sleep_closed);
  }
  io->sleeps = NULL;
  sg_pg_pool_close(io->pg);
  sg_ch_client_close(io->ch);
}

int sg_lua_io_run(sg_lua_io_t *io, lua_State *L, int nargs) {
  io->L = L;
  task_t *t = task_new(io, L, nargs);
  t->is_main = 1;
  uv_run(io->loop, UV_RUN_DEFAULT);
  shutdown_io(io);                /* a loop that ran dry with tasks still waiting */
  uv_run(io->loop, UV_RUN_DEFAULT);
  if (io->exiting) return io->exit_code;
  int status = io->status;
  for (task_t *x = io->all; x; x = x->next_all) {
    if (x->state == T_DONE && !x->ok && !x->waited) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, x->ref_result);
      fprintf(stderr, "spangate: a gw.spawn()ed task failed and nobody waited for it: %s\n",
              lua_tostring(L, -1));
      lua_pop(L, 1);
      if (status == 0) status = 1;
    } else if (x->state != T_DONE && !io->exiting) {
      fprintf(stderr, "spangate: a task was still waiting when the loop ran out of work\n");
      if (status == 0) status = 1;
    }
  }
  return status;
}

void sg_lua_io_close(sg_lua_io_t *io) {
  if (io) shutdown_io(io);
}

void sg_lua_io_free(sg_lua_io_t *io) {
  if (!io) return;
  for (task_t *t = io->all, *n; t; t = n) {
    n = t->next_all;
    free(t->waiters);
    free(t);
  }
  sg_buf_free(&io->ver_err);
  sg_buf_free(&io->insert_sql);
  free(io);
}
