/* lua_io_internal.h - what the files of a job's I/O share (lua_io.h is the
 * public side): the task scheduler (lua_sched.c), gw.pg (lua_pg.c), gw.ch
 * (lua_ch.c), the row conversion for gw.ch.insert_spans (lua_rows.c), and
 * the context that ties them to one loop (lua_io.c).
 *
 * Dependencies point one way: lua_io.c uses the others; lua_ch.c uses
 * lua_rows.c and the scheduler; lua_rows.c and lua_pg.c use the scheduler;
 * the scheduler uses none of them (it reports the job's end through
 * finish_cb).
 */
#ifndef SG_LUA_IO_INTERNAL_H
#define SG_LUA_IO_INTERNAL_H

#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "ch.h"
#include "ch_rows.h"
#include "ch_schema.h"
#include "ch_setup.h"
#include "config.h"
#include "lua_io.h"
#include "lua_rt.h"
#include "pg.h"
#include "span.h"

/* ---- lua_sched.c: tasks ------------------------------------------------------ */

typedef struct sg_lua_sched_s sg_lua_sched_t;
typedef struct sg_lua_task_s sg_lua_task_t;
typedef struct sg_lua_sleep_s sg_lua_sleep_t;

enum { SG_TASK_READY = 1, SG_TASK_RUNNING, SG_TASK_WAIT, SG_TASK_DONE };

/* A task: a coroutine the scheduler created (the job's main function or a
 * gw.spawn()ed one). An I/O function yields it (sg__lua_task_yield); the
 * request's callback pushes the results onto co and queues it
 * (sg__lua_task_ready); the scheduler resumes it on the next loop turn. */
struct sg_lua_task_s {
  sg_lua_sched_t *sched;
  lua_State *co;
  int ref_co;        /* anchors the coroutine while it runs */
  int state;
  int nresume;       /* values pushed onto co to resume it with */
  int ok;            /* when done: returned (1) or raised (0) */
  int ref_result;    /* done: {n = k, ...} or the error text with its traceback */
  int waited;        /* someone gw.wait()ed for it */
  int is_main;
  sg_lua_task_t **waiters;
  size_t nwaiters, capwaiters;
  sg_lua_task_t *next_ready;
  sg_lua_task_t *next_all;
};

struct sg_lua_sched_s {
  uv_loop_t *loop;
  lua_State *L;        /* the job's state, from sg__lua_sched_run on */
  uv_idle_t idle;
  sg_lua_task_t *ready_head, *ready_tail;
  sg_lua_task_t *all;
  sg_lua_sleep_t *sleeps;
  size_t alive;        /* tasks not done */
  int main_done;
  int exiting, exit_code;
  int status;          /* exit status so far */
  int closed;          /* sg__lua_sched_close ran: no more resumes */
  /* Called once when the job is over (every task ended, or gw.exit): the
   * owner closes its clients so the loop runs dry. It must call
   * sg__lua_sched_close. */
  void (*finish_cb)(void *ud);
  void *finish_ud;
};

void sg__lua_sched_init(sg_lua_sched_t *s, uv_loop_t *loop, void (*finish_cb)(void *), void *ud);

/* Adds spawn, wait, exit and sleep (raw: see src/lua/gw_io.lua) to the
 * table at the top of L's stack. */
void sg__lua_sched_register(lua_State *L, sg_lua_sched_t *s);

/* Runs the function at L's top (below it nothing; above it nargs
 * arguments, all popped) as the main task, and the loop until the job is
 * over. The exit status: lua_io.h's sg_lua_io_run. */
int sg__lua_sched_run(sg_lua_sched_t *s, lua_State *L, int nargs);

/* Stops resuming tasks and closes the scheduler's handles (idempotent). */
void sg__lua_sched_close(sg_lua_sched_t *s);

/* Frees the tasks (after the loop has closed the handles). */
void sg__lua_sched_free(sg_lua_sched_t *s);

/* The task running L, or a Lua error naming fn saying why I/O cannot run
 * here (not a task, a coroutine of the script's own, the job exiting). */
sg_lua_task_t *sg__lua_need_task(lua_State *L, sg_lua_sched_t *s, const char *fn);

/* Marks t waiting and yields it (return this from the C function). */
int sg__lua_task_yield(lua_State *L, sg_lua_task_t *t);

/* Queues t to be resumed with the nresume values pushed onto t->co. */
void sg__lua_task_ready(sg_lua_task_t *t, int nresume);

/* Is the job still taking results (not closed, not exiting)? */
static inline int sg__lua_sched_live(const sg_lua_sched_t *s) { return !s->closed && !s->exiting; }

/* ---- lua_io.c: the context ------------------------------------------------------ */

struct sg_lua_io_s {
  uv_loop_t *loop;
  const sg_config_t *cfg;
  sg_lua_rt_t *hooks;     /* ttl.lua / routing.lua for insert_spans and gw.hooks */
  sg_pg_pool_t *pg;
  sg_ch_client_t *ch;
  sg_ch_target_t target;  /* the server's version and the tables' row layouts */
  int have_ver;
  sg_buf_t ver_err;
  sg_buf_t insert_sql;    /* INSERT INTO <db>.spans (...) FORMAT TabSeparated */
  unsigned ch_flags;
  sg_lua_sched_t sched;
  /* ttl.lua's span for gw.ch.insert_spans: JSON columns parsed on first
   * read (lua_rows.c). */
  lua_CFunction span_index_orig;
  int lazy_ok;                       /* the hooks runtime's span __index is ours */
  sg_span_t *lazy_span;              /* the span of the hook call in progress */
  const sg_ch_text_row_t *lazy_row;  /* its text values */
  const char *lazy_err;              /* a JSON column that did not parse */
};

/* The context a raw function was registered with (its upvalue 1). */
#define SG_LUA_IO(L) ((sg_lua_io_t *)lua_touserdata((L), lua_upvalueindex(1)))

/* Sets raw[name] = fn with ud as its upvalue 1, for each entry; the raw
 * table is at the top of L's stack. */
static inline void sg__lua_io_register(lua_State *L, void *ud, const luaL_Reg *fns) {
  for (; fns->name; fns++) {
    lua_pushlightuserdata(L, ud);         /* raw, ud */
    lua_pushcclosure(L, fns->func, 1);    /* raw, f */
    lua_setfield(L, -2, fns->name);       /* raw */
  }
}

/* ---- lua_pg.c: gw.pg ------------------------------------------------------------- */

/* A gw.pg.query_raw result: a compact copy of a PGresult, text values
 * NUL-terminated in one buffer. */
typedef struct {
  int nrows, ncols;
  char **names;
  size_t *off;  /* nrows * ncols */
  int *len;     /* -1 = NULL */
  char *data;
  size_t bytes; /* malloc'd above, for the collector */
  int freed;    /* r:free() was called: every access but #r raises */
} sg_lua_pgres_t;

#define SG_LUA_PGRES_MT "spangate.pg.result"

/* Adds pg_query to the raw table at L's top; creates the result metatable. */
void sg__lua_pg_register(lua_State *L, sg_lua_io_t *io);

/* The index of column name, or -1. */
int sg__lua_pgres_col(const sg_lua_pgres_t *r, const char *name);

/* ---- lua_rows.c: rows -> ClickHouse rows --------------------------------------------- */

/* What encoding rows for gw.ch.insert_spans / batch:add found. */
typedef struct {
  size_t rows, rejected;
  char reason[200]; /* the first rejection */
} sg_lua_enc_stats_t;

/* The call's (project_id, rows) at pidx, pidx + 1 (rows: a query_raw
 * result or a list of row tables) appended to body as ClickHouse
 * TabSeparated rows of spans, with ttl.lua's expires_at; all or none;
 * counts and the first rejection in st. Raises (naming fn, before anything
 * is appended) on bad arguments or when ClickHouse's version is unknown.
 * 0 or SG_ENOMEM (body then as it was). */
int sg__lua_rows_add(lua_State *L, sg_lua_io_t *io, const char *fn, int pidx, sg_buf_t *body,
                     sg_lua_enc_stats_t *st);

/* ---- lua_ch.c: gw.ch ---------------------------------------------------------------- */

/* Adds ch_query, ch_insert, ch_insert_spans, the span batch functions and
 * batch_mt to the raw table at L's top. */
void sg__lua_ch_register(lua_State *L, sg_lua_io_t *io);

#endif
