/* lua_sched.c - a job's tasks: the scheduler that runs coroutines on a
 * libuv loop, and gw.spawn / gw.wait / gw.exit / gw.sleep.
 *
 * The model is OpenResty's cosocket: a task (a coroutine this file
 * created) calls an I/O function; the C side starts the request on the
 * loop and yields (sg__lua_task_yield); the request's callback pushes the
 * result onto the task's stack and queues the task (sg__lua_task_ready);
 * an idle handle resumes queued tasks, each once per loop turn. Knows
 * nothing of PostgreSQL or ClickHouse: when the job is over it tells its
 * owner (finish_cb), which closes the clients so the loop runs dry.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_io_internal.h"

struct sg_lua_sleep_s {
  uv_timer_t timer;
  sg_lua_task_t *t;
  sg_lua_sleep_t *prev, *next;
};

typedef sg_lua_task_t task_t;

static char tasks_key;  /* registry[&tasks_key] = { [thread] = lightuserdata task } (weak keys) */

#define SCHED() ((sg_lua_sched_t *)lua_touserdata(L, lua_upvalueindex(1)))

/* ---- context checks --------------------------------------------------------------- */

task_t *sg__lua_need_task(lua_State *L, sg_lua_sched_t *s, const char *fn) {
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
  if (!sg__lua_sched_live(s)) luaL_error(L, "%s: the job is exiting", fn);
  return t;
}

/* ---- scheduler ---------------------------------------------------------------------- */

static void idle_cb(uv_idle_t *h);

void sg__lua_task_ready(task_t *t, int nresume) {
  sg_lua_sched_t *s = t->sched;
  t->state = SG_TASK_READY;
  t->nresume = nresume;
  t->next_ready = NULL;
  if (s->ready_tail) s->ready_tail->next_ready = t;
  else s->ready_head = t;
  s->ready_tail = t;
  if (!s->closed) uv_idle_start(&s->idle, idle_cb);
}

int sg__lua_task_yield(lua_State *L, task_t *t) {
  t->state = SG_TASK_WAIT;
  return lua_yield(L, 0);
}

/* Push (ok, result) of done task d onto waiter w's stack and queue w. */
static void deliver(task_t *d, task_t *w) {
  lua_State *co = w->co;
  lua_checkstack(co, 3);
  lua_pushboolean(co, d->ok);
  lua_rawgeti(co, LUA_REGISTRYINDEX, d->ref_result);
  sg__lua_task_ready(w, 2);
}

static void task_done(task_t *t, int ok) {
  sg_lua_sched_t *s = t->sched;
  lua_State *L = s->L;
  t->state = SG_TASK_DONE;
  t->ok = ok;
  t->ref_result = luaL_ref(L, LUA_REGISTRYINDEX); /* the result at L's top */
  luaL_unref(L, LUA_REGISTRYINDEX, t->ref_co);
  t->ref_co = LUA_NOREF;
  s->alive--;
  for (size_t i = 0; i < t->nwaiters; i++) deliver(t, t->waiters[i]);
  if (t->nwaiters) t->waited = 1;
  free(t->waiters);
  t->waiters = NULL;
  t->nwaiters = 0;
  if (t->is_main) s->main_done = 1;
}

/* Resume t once, and interpret how it stopped. */
static void run_task(task_t *t) {
  sg_lua_sched_t *s = t->sched;
  lua_State *L = s->L, *co = t->co;
  t->state = SG_TASK_RUNNING;
  int n = t->nresume;
  t->nresume = 0;
  int rc = lua_resume(co, n);
  if (rc == LUA_YIELD) {
    if (t->state == SG_TASK_RUNNING) { /* a bare coroutine.yield() reached the scheduler */
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
    if (t->is_main && !s->exiting) {
      lua_rawgeti(L, -1, 1);
      if (lua_type(L, -1) == LUA_TNUMBER) s->status = (int)lua_tonumber(L, -1);
      else if (lua_type(L, -1) == LUA_TBOOLEAN) s->status = lua_toboolean(L, -1) ? 0 : 1;
      lua_pop(L, 1);
    }
    task_done(t, 1);
    return;
  }
  /* An error: gw.exit's unwinding, or a real one. */
  if (s->exiting) {
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
    s->status = 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref_result);
    fprintf(stderr, "spangate: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

static void maybe_finish(sg_lua_sched_t *s) {
  if (s->closed) return;
  if (s->exiting || (s->main_done && s->alive == 0)) s->finish_cb(s->finish_ud);
}

static void idle_cb(uv_idle_t *h) {
  sg_lua_sched_t *s = h->data;
  task_t *last = s->ready_tail; /* tasks queued meanwhile wait for the next turn */
  while (s->ready_head && !s->exiting) {
    task_t *t = s->ready_head;
    s->ready_head = t->next_ready;
    if (!s->ready_head) s->ready_tail = NULL;
    run_task(t);
    if (t == last) break;
  }
  if (!s->ready_head && !s->closed) uv_idle_stop(&s->idle);
  maybe_finish(s);
}

/* A new task running the function at L's top with the nargs values below it
 * (all popped from L). Pushes nothing; returns the task (its coroutine is
 * anchored in the registry). */
static task_t *task_new(sg_lua_sched_t *s, lua_State *L, int nargs) {
  task_t *t = calloc(1, sizeof *t);
  if (t == NULL) luaL_error(L, "out of memory");
  lua_State *co = lua_newthread(L);        /* ..., f, args, co */
  lua_pushvalue(L, -1);                    /* ..., f, args, co, co */
  t->ref_co = luaL_ref(L, LUA_REGISTRYINDEX); /* ..., f, args, co */
  t->sched = s;
  t->co = co;
  t->ref_result = LUA_NOREF;
  t->next_all = s->all;
  s->all = t;
  s->alive++;
  lua_pushlightuserdata(L, &tasks_key);    /* ..., co, key */
  lua_rawget(L, LUA_REGISTRYINDEX);        /* ..., co, tasks */
  lua_pushvalue(L, -2);                    /* ..., co, tasks, co */
  lua_pushlightuserdata(L, t);             /* ..., co, tasks, co, t */
  lua_rawset(L, -3);                       /* ..., co, tasks */
  lua_pop(L, 1);                           /* ..., f, args, co */
  lua_insert(L, -2 - nargs);               /* ..., co, f, args */
  lua_xmove(L, co, nargs + 1);             /* ..., co */
  sg__lua_task_ready(t, nargs);
  return t;
}

/* ---- gw.spawn / gw.wait / gw.exit / gw.sleep --------------------------------------- */

static int l_spawn(lua_State *L) {
  sg_lua_sched_t *s = SCHED();
  sg__lua_need_task(L, s, "gw.spawn");
  if (!lua_isfunction(L, 1))
    return luaL_error(L, "gw.spawn: bad argument #1 (function expected, got %s)", luaL_typename(L, 1));
  int nargs = lua_gettop(L) - 1;
  lua_pushvalue(L, 1);
  lua_insert(L, 2);        /* f, f, args */
  task_new(s, L, nargs);   /* f, co */
  return 1;                /* the task handle is its coroutine */
}

/* raw wait(task) -> ok, result (yields while the task runs). */
static int l_wait(lua_State *L) {
  sg_lua_sched_t *s = SCHED();
  task_t *me = sg__lua_need_task(L, s, "gw.wait");
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
  if (t->state == SG_TASK_DONE) {
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
  return sg__lua_task_yield(L, me);
}

static int l_exit(lua_State *L) {
  sg_lua_sched_t *s = SCHED();
  int code = 0;
  if (lua_type(L, 1) == LUA_TNUMBER) code = (int)lua_tonumber(L, 1);
  else if (lua_type(L, 1) == LUA_TBOOLEAN) code = lua_toboolean(L, 1) ? 0 : 1;
  else if (!lua_isnoneornil(L, 1))
    return luaL_error(L, "gw.exit: bad argument #1 (number or boolean expected, got %s)",
                      luaL_typename(L, 1));
  s->exiting = 1;
  s->exit_code = code;
  lua_pushliteral(L, "gw.exit");
  return lua_error(L); /* unwinds the task; the scheduler stops the job */
}

static void sleep_closed(uv_handle_t *h) { free(h->data); }

static void sleep_unlink(sg_lua_sched_t *s, sg_lua_sleep_t *z) {
  if (z->prev) z->prev->next = z->next;
  else s->sleeps = z->next;
  if (z->next) z->next->prev = z->prev;
}

static void sleep_cb(uv_timer_t *h) {
  sg_lua_sleep_t *z = h->data;
  sleep_unlink(z->t->sched, z);
  lua_pushboolean(z->t->co, 1);
  sg__lua_task_ready(z->t, 1);
  uv_close((uv_handle_t *)&z->timer, sleep_closed);
}

static int l_sleep(lua_State *L) {
  sg_lua_sched_t *s = SCHED();
  task_t *t = sg__lua_need_task(L, s, "gw.sleep");
  if (lua_type(L, 1) != LUA_TNUMBER || !(lua_tonumber(L, 1) >= 0))
    return luaL_error(L, "gw.sleep: bad argument #1 (milliseconds >= 0 expected, got %s)",
                      luaL_typename(L, 1));
  sg_lua_sleep_t *z = calloc(1, sizeof *z);
  if (!z) return luaL_error(L, "out of memory");
  z->t = t;
  z->next = s->sleeps;
  if (s->sleeps) s->sleeps->prev = z;
  s->sleeps = z;
  uv_timer_init(s->loop, &z->timer);
  z->timer.data = z;
  uv_timer_start(&z->timer, sleep_cb, (uint64_t)lua_tonumber(L, 1), 0);
  return sg__lua_task_yield(L, t);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

void sg__lua_sched_init(sg_lua_sched_t *s, uv_loop_t *loop, void (*finish_cb)(void *), void *ud) {
  memset(s, 0, sizeof *s);
  s->loop = loop;
  s->finish_cb = finish_cb;
  s->finish_ud = ud;
  uv_idle_init(loop, &s->idle);
  s->idle.data = s;
}

void sg__lua_sched_register(lua_State *L, sg_lua_sched_t *s) {
  static const luaL_Reg fns[] = {{"spawn", l_spawn}, {"wait", l_wait}, {"exit", l_exit},
                                 {"sleep", l_sleep}, {NULL, NULL}};
  lua_pushlightuserdata(L, &tasks_key);
  lua_rawget(L, LUA_REGISTRYINDEX);             /* raw, tasks | nil */
  if (lua_isnil(L, -1)) {
    lua_pushlightuserdata(L, &tasks_key);       /* raw, nil, key */
    lua_newtable(L);                            /* raw, nil, key, tasks */
    lua_newtable(L);                            /* raw, nil, key, tasks, mt */
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");              /* done tasks go with their handles */
    lua_setmetatable(L, -2);                    /* raw, nil, key, tasks */
    lua_rawset(L, LUA_REGISTRYINDEX);           /* raw, nil */
  }
  lua_pop(L, 1);                                /* raw */
  sg__lua_io_register(L, s, fns);
}

void sg__lua_sched_close(sg_lua_sched_t *s) {
  if (s->closed) return;
  s->closed = 1;
  uv_idle_stop(&s->idle);
  uv_close((uv_handle_t *)&s->idle, NULL);
  for (sg_lua_sleep_t *z = s->sleeps, *n; z; z = n) {
    n = z->next;
    uv_timer_stop(&z->timer);
    uv_close((uv_handle_t *)&z->timer, sleep_closed);
  }
  s->sleeps = NULL;
}

int sg__lua_sched_run(sg_lua_sched_t *s, lua_State *L, int nargs) {
  s->L = L;
  task_t *t = task_new(s, L, nargs);
  t->is_main = 1;
  uv_run(s->loop, UV_RUN_DEFAULT);
  if (!s->closed) s->finish_cb(s->finish_ud); /* a loop that ran dry with tasks still waiting */
  uv_run(s->loop, UV_RUN_DEFAULT);
  if (s->exiting) return s->exit_code;
  int status = s->status;
  for (task_t *x = s->all; x; x = x->next_all) {
    if (x->state == SG_TASK_DONE && !x->ok && !x->waited) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, x->ref_result);
      fprintf(stderr, "spangate: a gw.spawn()ed task failed and nobody waited for it: %s\n",
              lua_tostring(L, -1));
      lua_pop(L, 1);
      if (status == 0) status = 1;
    } else if (x->state != SG_TASK_DONE && !s->exiting) {
      fprintf(stderr, "spangate: a task was still waiting when the loop ran out of work\n");
      if (status == 0) status = 1;
    }
  }
  return status;
}

void sg__lua_sched_free(sg_lua_sched_t *s) {
  for (task_t *t = s->all, *n; t; t = n) {
    n = t->next_all;
    free(t->waiters);
    free(t);
  }
  s->all = NULL;
}
