/* job.c - `spangate run|migrate|validate|ttl`: a Lua job with the gw module
 * on a loop of its own.
 *
 *   spangate run [-c FILE] SCRIPT.lua [ARGS...]
 *   spangate migrate|validate|ttl [-c FILE] [OPTIONS...]
 *       = run <scripts>/jobs/<command>.lua with the options as its arguments
 *
 * Two Lua runtimes are built from the configuration: the job's (the script
 * and its tasks; JIT on, no instruction budget: a job is the operator's own
 * long-running program) and a hooks runtime exactly like a gateway worker's
 * (ttl.lua, routing.lua under the budget, JIT off), which gw.ch.insert_spans
 * and gw.hooks call. Keeping them apart means a hook never runs on a state
 * whose coroutines are suspended in I/O, and the budget's count hook never
 * fires inside the job.
 */
#include "job.h"

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "buf.h"
#include "config.h"
#include "err.h"
#include "log.h"
#include "lua_io.h"
#include "lua_rt.h"

static int is_config_opt(char **argv, int i, int argc, const char **path, int *consumed) {
  if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) {
    *path = argv[i + 1];
    *consumed = 2;
    return 1;
  }
  if (!strncmp(argv[i], "--config=", 9)) {
    *path = argv[i] + 9;
    *consumed = 1;
    return 1;
  }
  return 0;
}

int sg_job_main(int argc, char **argv) {
  const char *cmd = argv[1];
  const char *conf = NULL, *script = NULL;
  char **args = calloc((size_t)argc + 1, sizeof *args);
  int nargs = 0, rc = 1;
  if (!args) return 1;
  int run = !strcmp(cmd, "run");
  for (int i = 2; i < argc;) {
    int used;
    if ((!run || script == NULL) && is_config_opt(argv, i, argc, &conf, &used)) {
      i += used;
      continue;
    }
    if (run && script == NULL) {
      if (argv[i][0] == '-' && strcmp(argv[i], "-") != 0) {
        fprintf(stderr, "spangate run: unknown option '%s' (usage: spangate run [-c FILE] "
                        "SCRIPT.lua [ARGS...])\n", argv[i]);
        free(args);
        return 2;
      }
      script = argv[i++];
      continue;
    }
    args[nargs++] = argv[i++];
  }
  if (run && script == NULL) {
    fprintf(stderr, "usage: spangate run [-c FILE] SCRIPT.lua [ARGS...]\n");
    free(args);
    return 2;
  }
  if (conf == NULL) {
    FILE *f = fopen("gateway.conf", "r");
    if (f) {
      fclose(f);
      conf = "gateway.conf";
    }
  }

  sg_config_t cfg;
  sg_buf_t err = SG_BUF_INIT, path = SG_BUF_INIT;
  if (sg_config_load(&cfg, conf, &err) != 0) {
    fprintf(stderr, "spangate: %s\n", err.data ? err.data : "configuration error");
    sg_buf_free(&err);
    sg_config_free(&cfg);
    free(args);
    return 1;
  }
  sg_log_setup((sg_log_level_t)sg_log_level_parse(cfg.log_level), !strcmp(cfg.log_format, "json"));
  if (run) sg_buf_puts(&path, script);
  else sg_buf_printf(&path, "%s/jobs/%s.lua", cfg.scripts, cmd);

  uv_loop_t loop;
  uv_loop_init(&loop);
  sg_lua_rt_t *hooks = NULL, *rt = NULL;
  sg_lua_io_t *io = NULL;
  /* The hooks runtime has gw.pg etc. as functions that explain why they
   * cannot run there; routing is asked even when use_clickhouse is off
   * (the job writes to ClickHouse whatever the gateway's setting). */
  sg_config_t hcfg = cfg;
  hcfg.use_clickhouse = 1;
  hooks = sg_lua_rt_new(&hcfg, &err);
  if (hooks) io = sg_lua_io_new(&loop, &cfg, hooks, &err);
  if (io) {
    sg_lua_rt_opts_t opts = {sg_lua_io_inject, io};
    rt = sg_lua_rt_new_opts(&cfg, &opts, &err);
  }
  if (rt == NULL) {
    fprintf(stderr, "spangate %s: %s\n", cmd, err.data ? err.data : "cannot start");
    goto done;
  }
  lua_State *L = sg_lua_rt_state(rt);
  /* The job's own state: compiled (the hooks runtime keeps the interpreter). */
  luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_ON);
  if (run) { /* modules next to the script first, then the scripts directory */
    const char *slash = strrchr(script, '/');
    int dirlen = slash ? (int)(slash - script) : 1;
    lua_getglobal(L, "package");                                   /* package */
    lua_getfield(L, -1, "path");                                   /* package, path */
    lua_pushfstring(L, "%s/?.lua;", slash ? script : ".");         /* package, path, "dir.../?.lua;" */
    if (slash) { /* keep only the directory part */
      lua_pop(L, 1);
      lua_pushlstring(L, script, (size_t)dirlen);
      lua_pushliteral(L, "/?.lua;");
      lua_concat(L, 2);
    }
    lua_insert(L, -2);                                             /* package, prefix, path */
    lua_concat(L, 2);                                              /* package, newpath */
    lua_setfield(L, -2, "path");                                   /* package */
    lua_pop(L, 1);
  }
  if (luaL_loadfile(L, path.data) != 0) {                          /* chunk | msg */
    fprintf(stderr, "spangate %s: %s\n", cmd, lua_tostring(L, -1));
    lua_pop(L, 1);
    rc = run ? 1 : 2;
    goto done;
  }
  lua_createtable(L, nargs, 1);                                    /* chunk, arg */
  lua_pushstring(L, path.data);
  lua_rawseti(L, -2, 0);
  for (int i = 0; i < nargs; i++) {
    lua_pushstring(L, args[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setglobal(L, "arg");                                         /* chunk */
  for (int i = 0; i < nargs; i++) lua_pushstring(L, args[i]);      /* chunk, args */
  rc = sg_lua_io_run(io, L, nargs);
  fflush(stdout);

done:
  if (rt) sg_lua_rt_free(rt);
  if (hooks) sg_lua_rt_free(hooks);
  if (io) {
    sg_lua_io_close(io); /* a no-op after sg_lua_io_run */
    uv_run(&loop, UV_RUN_DEFAULT);
    sg_lua_io_free(io);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) sg_warn("job", "loop closed with handles still open");
  sg_buf_free(&err);
  sg_buf_free(&path);
  sg_config_free(&cfg);
  free(args);
  return rc;
}
