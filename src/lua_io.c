/* lua_io.c - a job's I/O context: the PostgreSQL pool, the ClickHouse
 * client and the task scheduler on one loop, and gw's job functions added
 * to the job's state (sg_lua_io_inject).
 *
 * The functions are C (lua_sched.c, lua_pg.c, lua_ch.c) behind a thin Lua
 * layer, src/lua/gw_io.lua, which is compiled into the binary
 * (build/gen/gw_io_lua.h, made by the Makefile) and raises the errors an
 * I/O function cannot raise from C once its task has yielded.
 */
#include "lua_io.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "ch_config.h"
#include "ch_setup.h"
#include "gw_io_lua.h"
#include "lua_io_internal.h"

/* ---- gw.hooks ------------------------------------------------------------------------------ */

/* gw.hooks.clickhouse(project_id) -> routing.lua's answer (true without the hook). */
static int l_hook_clickhouse(lua_State *L) {
  sg_lua_io_t *io = SG_LUA_IO(L);
  size_t n;
  const char *pid = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
  uint8_t project[16];
  if (pid == NULL || sg_id_parse(pid, n, project) != 0)
    return luaL_error(L, "gw.hooks.clickhouse: bad argument #1 (project id expected)");
  int on = 1;
  if (io->hooks) sg_lua_route_clickhouse(io->hooks, project, &on);
  lua_pushboolean(L, on);
  return 1;
}

/* gw.hooks.postgres(project_id) -> routing.lua's M.postgres for the project
 * (false: ClickHouse-only; true without the hook). */
static int l_hook_postgres(lua_State *L) {
  sg_lua_io_t *io = SG_LUA_IO(L);
  size_t n;
  const char *pid = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
  uint8_t project[16];
  if (pid == NULL || sg_id_parse(pid, n, project) != 0)
    return luaL_error(L, "gw.hooks.postgres: bad argument #1 (project id expected)");
  int on = 1;
  if (io->hooks) sg_lua_route_postgres(io->hooks, project, &on);
  lua_pushboolean(L, on);
  return 1;
}

/* ---- injection -------------------------------------------------------------------------------- */

void sg_lua_io_inject(lua_State *L, void *ud) {
  sg_lua_io_t *io = ud;
  static const luaL_Reg fns[] = {{"hook_clickhouse", l_hook_clickhouse}, {"hook_postgres", l_hook_postgres}, {NULL, NULL}};
  int gw = lua_gettop(L);                       /* gw */
  if (luaL_loadbuffer(L, gw_io_lua, sizeof gw_io_lua, "=gw_io.lua") != 0)
    lua_error(L);                               /* a build that embedded a broken file */
  lua_pushvalue(L, gw);                         /* gw, chunk, gw */
  lua_newtable(L);                              /* gw, chunk, gw, raw */
  sg__lua_sched_register(L, &io->sched);
  sg__lua_pg_register(L, io);
  sg__lua_ch_register(L, io);
  sg__lua_io_register(L, io, fns);
  lua_pushboolean(L, isatty(1));
  lua_setfield(L, -2, "isatty");
  if (io->have_ver) {
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
  } else {
    lua_pushstring(L, io->ver_err.data ? io->ver_err.data : "ClickHouse version unknown");
    lua_setfield(L, -2, "server_error");
  }
  lua_call(L, 2, 0);                            /* gw */
}

/* ---- lifecycle --------------------------------------------------------------------------------- */

/* The job is over (or being closed): no more resumes, clients closed. */
static void shutdown_io(void *ud) {
  sg_lua_io_t *io = ud;
  if (io->sched.closed) return;
  sg__lua_sched_close(&io->sched);
  sg_pg_pool_close(io->pg);
  sg_ch_client_close(io->ch);
}

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
  io->ch = sg_ch_client_from_config(loop, cfg); /* the one client of the job's loop */
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
  int rc = sg_ch_setup(cfg, 0, &io->target, NULL, &why);
  if (rc == SG_ENOTFOUND) {
    sg_ch_layout_of_version(&io->target.ver, &io->target.spans);
    io->target.nodes = io->target.spans;
    rc = 0;
  }
  if (rc == 0) {
    io->have_ver = 1;
    sg_ch_insert_sql(&io->target.spans, cfg->clickhouse_database, &io->insert_sql);
  } else {
    sg_buf_puts(&io->ver_err, why.data ? why.data : sg_strerror(rc));
  }
  sg_buf_free(&why);
  sg__lua_sched_init(&io->sched, loop, shutdown_io, io);
  return io;
}

int sg_lua_io_run(sg_lua_io_t *io, lua_State *L, int nargs) {
  return sg__lua_sched_run(&io->sched, L, nargs);
}

void sg_lua_io_close(sg_lua_io_t *io) {
  if (io) shutdown_io(io);
}

void sg_lua_io_free(sg_lua_io_t *io) {
  if (!io) return;
  sg__lua_sched_free(&io->sched);
  sg_buf_free(&io->ver_err);
  sg_buf_free(&io->insert_sql);
  free(io);
}
