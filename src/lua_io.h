/* lua_io.h - gw I/O for jobs: gw.pg / gw.ch / gw.sleep and the task
 * scheduler (gw.spawn / gw.wait / gw.exit), OpenResty's cosocket model.
 * Implemented by lua_io.c (the context), lua_sched.c, lua_pg.c, lua_ch.c
 * and lua_rows.c, which share lua_io_internal.h.
 *
 * A job is a Lua state with the gw module, run as coroutines ("tasks") on a
 * libuv loop of its own. An I/O function starts the request on the loop and
 * yields the calling task; the loop resumes the task with the result when
 * libpq / libcurl are done. Only tasks can do I/O: the job's main chunk and
 * the functions given to gw.spawn. Anywhere else (a hook on a gateway
 * worker, a coroutine of the script's own, a state without a job context)
 * the functions raise a Lua error saying why. The Lua-facing contract is in
 * docs/jobs.md ("Writing jobs: the I/O API").
 *
 * Not thread-safe: one context, one loop, one thread.
 */
#ifndef SG_LUA_IO_H
#define SG_LUA_IO_H

#include <uv.h>

#include "buf.h"
#include "config.h"
#include "lua_rt.h"

typedef struct sg_lua_io_s sg_lua_io_t;

/* A context on loop: a PostgreSQL pool to cfg->postgres_uri and a ClickHouse
 * client to cfg->clickhouse_* (its version is asked once, blocking, here;
 * when ClickHouse does not answer, gw.ch.insert_spans fails later with that
 * reason and the rest still works). hooks: a runtime whose ttl.lua /
 * routing.lua answer gw.ch.insert_spans and gw.hooks (may be NULL: the
 * defaults). cfg must outlive the context. NULL with a reason in err. */
sg_lua_io_t *sg_lua_io_new(uv_loop_t *loop, const sg_config_t *cfg, sg_lua_rt_t *hooks,
                           sg_buf_t *err);

/* For sg_lua_rt_opts_t.inject (ud: the context): sets gw.pg, gw.ch,
 * gw.sleep, gw.spawn, gw.wait, gw.exit, gw.hooks and gw.stdout_isatty in
 * the gw table at the top of L's stack. One job state per context. */
void sg_lua_io_inject(struct lua_State *L, void *ud);

/* Runs a function as the main task: push the function, then its nargs
 * arguments (all popped). Runs it and the loop until every task has
 * ended (or gw.exit). Returns the exit status: gw.exit(n)'s n; else the main
 * function's first result (a number; true or nothing: 0; false: 1); 1 when
 * a task failed (its traceback is written to stderr). The context is closed
 * before this returns: free it with sg_lua_io_free after uv_run is over. */
int sg_lua_io_run(sg_lua_io_t *io, struct lua_State *L, int nargs);

/* Closes the context's handles and clients (idempotent; sg_lua_io_run
 * does it too); run the loop afterwards so they finish closing. */
void sg_lua_io_close(sg_lua_io_t *io);

/* Frees the context (after sg_lua_io_run, once the loop has no more work). */
void sg_lua_io_free(sg_lua_io_t *io);

#endif
