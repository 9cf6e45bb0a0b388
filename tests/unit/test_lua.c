/* test_lua.c - the Lua binding: loading, exact round trip, changes, drop and
 * fan-out, failure isolation, the instruction budget, gw, the shipped
 * scripts, and the JSON dumper. What it costs: bench/lua_hooks.c.
 * Runs from the repository root (the shipped scripts are read from lua/). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "err.h"
#include "jalloc.h"
#include "json_nest.h"
#include "log.h"
#include "lua_rt.h"
#include "span.h"

static const uint8_t PROJECT[16] = {0x01, 0x93, 0x4b, 0x7e, 0x12, 0x34, 0x70, 0x00,
                                    0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01};

/* ---- helpers ------------------------------------------------------------------ */

static char tmpdir[64];

static void write_file(const char *name, const char *text) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static void clear_dir(void) {
  const char *names[] = {"transform.lua", "routing.lua", "ttl.lua"};
  for (int i = 0; i < 3; i++) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, names[i]);
    unlink(path);
  }
}

static void set_str(char **field, const char *v) {
  free(*field);
  *field = strdup(v);
}

static sg_config_t cfg_for(const char *dir) {
  sg_config_t cfg;
  assert_int_equal(sg_config_defaults(&cfg), 0);
  set_str(&cfg.scripts, dir);
  return cfg;
}

static sg_lua_rt_t *rt_with(const char *transform, sg_config_t *cfg) {
  clear_dir();
  if (transform) write_file("transform.lua", transform);
  *cfg = cfg_for(tmpdir);
  sg_buf_t err = SG_BUF_INIT;
  sg_lua_rt_t *rt = sg_lua_rt_new(cfg, &err);
  if (!rt) fprintf(stderr, "load error: %s\n", err.data);
  assert_non_null(rt);
  sg_buf_free(&err);
  return rt;
}

static sg_span_t *push_span(sg_span_batch_t *b, const char *name, const char *attrs) {
  sg_span_t *s = sg_span_batch_push(b);
  assert_non_null(s);
  assert_int_equal(sg_id_parse("0af7651916cd43dd8448eb211c80319c", 32, s->trace_id), 0);
  char sid[17];
  snprintf(sid, sizeof sid, "%016zx", b->n);
  assert_int_equal(sg_id_parse(sid, 16, s->span_id), 0);
  s->span_name = strdup(name);
  s->start_us = 1700000000000000LL;
  s->end_us = 1700000000123456LL;
  s->span_kind = SG_SPAN_KIND_SERVER;
  if (attrs) {
    json_error_t e;
    s->attributes = json_loads(attrs, JSON_DECODE_ANY, &e);
    if (!s->attributes) fail_msg("bad test JSON: %s", e.text);
  }
  return s;
}

static char *dump(const json_t *v, int flags) {
  sg_buf_t b = SG_BUF_INIT;
  assert_int_equal(sg_json_dump(v, flags, &b), 0);
  return sg_buf_detach(&b, NULL);
}

static void assert_dump(const json_t *v, int flags, const char *want) {
  char *got = dump(v, flags);
  assert_string_equal(got, want);
  free(got);
}

/* Run Lua in the runtime's state; returns the error text or NULL. */
static char lua_err[1024];
static const char *run_lua(sg_lua_rt_t *rt, const char *code) {
  lua_State *L = sg_lua_rt_state(rt);
  int top = lua_gettop(L);
  const char *r = NULL;
  if (luaL_loadstring(L, code) || lua_pcall(L, 0, 0, 0)) {
    snprintf(lua_err, sizeof lua_err, "%s", lua_tostring(L, -1));
    r = lua_err;
  }
  lua_settop(L, top);
  return r;
}

static int setup(void **state) {
  (void)state;
  sg_log_setup(getenv("SG_LUA_LOG") ? SG_LOG_DEBUG : SG_LOG_OFF, 0);
  strcpy(tmpdir, "/tmp/sg_lua_test_XXXXXX");
  assert_non_null(mkdtemp(tmpdir));
  return 0;
}

static int teardown(void **state) {
  (void)state;
  clear_dir();
  rmdir(tmpdir);
  return 0;
}

/* ---- loading ------------------------------------------------------------------ */

static void test_missing_scripts_are_defaults(void **state) {
  (void)state;
  sg_config_t cfg;
  sg_lua_rt_t *rt = rt_with(NULL, &cfg);
  assert_int_equal(sg_lua_rt_hooks(rt), 0);
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  push_span(&b, "a", "{\"x\":1}");
  size_t errs = 9;
  assert_int_equal(sg_lua_transform(rt, PROJECT, &b, &errs), 0);
  assert_int_equal(errs, 0);
  assert_int_equal(b.n, 1);
  assert_int_equal(b.spans[0].nest_attributes, 0);
  int on = 7, be = 7;
  double days = 0;
  assert_int_equal(sg_lua_route_clickhouse(rt, PROJECT, &on), 0);
  assert_int_equal(on, 0); /* use_clickhouse defaults to false */
  assert_int_equal(sg_lua_read_backend(rt, PROJECT, NULL, "query", &be), 0);
  assert_int_equal(be, SG_READ_POSTGRES);
  assert_int_equal(sg_lua_retention_days(rt, PROJECT, &b.spans[0], &days), 0);
  assert_true(days < 0);
  sg_span_batch_free(&b);
  sg_lua_rt_free(rt);
  cfg.use_clickhouse = 1;
  sg_buf_t err = SG_BUF_INIT;
  rt = sg_lua_rt_new(&cfg, &err);
  assert_int_equal(sg_lua_route_clickhouse(rt, PROJECT, &on), 0);
  assert_int_equal(on, 1);
  sg_lua_rt_free(rt);
  sg_config_free(&cfg);
}

static void expect_load_error(const char *file, const char *text, const char *want) {
  clear_dir();
  write_file(file, text);
  sg_config_t cfg = cfg_for(tmpdir);
  sg_buf_t err = SG_BUF_INIT;
  sg_lua_rt_t *rt = sg_lua_rt_new(&cfg, &err);
  assert_null(rt);
  assert_non_null(err.data);
  if (strstr(err.data, want) == NULL) fail_msg("error '%s' does not contain '%s'", err.data, want);
  sg_buf_free(&err);
  sg_config_free(&cfg);
}

static void test_load_errors(void **state) {
  (void)state;
  expect_load_error("transform.lua", "local M = {}\nfunction M.span(s)\n  return s\n", "transform.lua:4:");
  expect_load_error("routing.lua", "local x = \nreturn {}", "routing.lua:2:");
  expect_load_error("ttl.lua", "return {retention_days = 5}", "M.retention_days must be a function (got number)");
  expect_load_error("transform.lua", "\n\nreturn 42\n", "transform.lua:");
  expect_load_error("transform.lua", "return 42", "must return its module table (got number)");
  expect_load_error("routing.lua", "local t = nil\nreturn t.x", "routing.lua:2: attempt to index");
  expect_load_error("transform.lua", "while true do end", "script budget exceeded");
  /* a hook that is present and a function, the others absent: fine */
  clear_dir();
  write_file("routing.lua", "return {read_backend = function() return 'clickhouse' end}");
  sg_config_t cfg = cfg_for(tmpdir);
  sg_buf_t err = SG_BUF_INIT;
  sg_lua_rt_t *rt = sg_lua_rt_new(&cfg, &err);
  assert_non_null(rt);
  assert_int_equal(sg_lua_rt_hooks(rt), SG_LUA_HOOK_READ_BACKEND);
  int be;
  assert_int_equal(sg_lua_read_backend(rt, PROJECT, NULL, "query", &be), 0);
  assert_int_equal(be, SG_READ_CLICKHOUSE);
  sg_lua_rt_free(rt);
  /* the endpoint is the third argument (two-argument scripts ignore it) */
  write_file("routing.lua", "return {read_backend = function(q, p, e) return e == 'trace' and 'clickhouse' or 'postgres' end}");
  rt = sg_lua_rt_new(&cfg, &err);
  assert_non_null(rt);
  assert_int_equal(sg_lua_read_backend(rt, PROJECT, NULL, "trace", &be), 0);
  assert_int_equal(be, SG_READ_CLICKHOUSE);
  assert_int_equal(sg_lua_read_backend(rt, PROJECT, NULL, "analytics", &be), 0);
  assert_int_equal(be, SG_READ_POSTGRES);
  sg_lua_rt_free(rt);
  sg_config_free(&cfg);
}

/* ---- round trip ---------------------------------------------------------------- */

static const char TRICKY[] =
    "{\"big\":9223372036854775807,\"neg\":-9223372036854775808,\"b53\":9007199254740993,"
    "\"one\":1,\"onef\":1.0,\"f\":0.1,\"exp\":1e300,\"eo\":{},\"ea\":[],\"nul\":null,"
    "\"t\":true,\"uni\":\"h\\u00e9llo \\u2028 \\ud83d\\ude00 \\u0001\",\"s/\":\"a/b\","
    "\"nested\":{\"a\":[1,2.5,{\"b\":null,\"c\":[]}],\"z\":{}},\"gen_ai.request.model\":\"m\"}";

static void test_roundtrip_exact(void **state) {
  (void)state;
  /* Reads every field and value, re-assigns several to themselves, changes
   * nothing: the record must come back byte for byte. */
  sg_config_t cfg;
  sg_lua_rt_t *rt = rt_with(
      "local gw = require('gw')\n"
      "local M = {}\n"
      "function M.span(s, ctx)\n"
      "  local t = {s.trace_id, s.span_id, s.parent_id, s.span_name, s.span_kind, s.span_type,\n"
      "    s.trace_type, s.status_code, s.status_message, s.start_time, s.end_time,\n"
      "    s.events, s.links, s.references, s.hashes, s.session_id, s.user_id, s.agent_id}\n"
      "  local a = s.attributes\n"
      "  for k, v in gw.pairs(a) do local _ = tostring(v) end\n"
      "  assert(tostring(a.big) == '9223372036854775807LL', tostring(a.big))\n"
      "  assert(tostring(a.neg) == '-9223372036854775808LL')\n"
      "  assert(gw.type(a.b53) == 'int64')\n"
      "  assert(a.one == 1 and a.onef == 1 and a.nul == gw.null and #a.ea == 0)\n"
      "  assert(gw.type(a.eo) == 'object' and gw.type(a.ea) == 'array')\n"
      "  assert(a.nested.a[3].b == gw.null and a.nested.a[2] == 2.5)\n"
      "  a.onef = a.onef; a.big = a.big; a.f = a.f; a.uni = a.uni; a.nul = gw.null; a.t = true\n"
      "  a.eo = a.eo; a.nested.a[1] = 1\n"
      "  s.span_name = s.span_name; s.start_time = s.start_time\n"
      "  s.trace_id = s.trace_id; s.status_message = s.status_message\n"
      "  return s\n"
      "end\n"
      "return M\n",
      &cfg);
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  sg_span_t *s = push_span(&b, "root \xc3\xa9", TRICKY);
  s->events = json_loads("[{\"name\":\"e\",\"attributes\":{\"k.x\":1.50}}]", 0, NULL);
  s->links = json_loads("[]", 0, NULL);
  s->start_us = SG_TIME_MAX_US;
  sg_span_t before;
  assert_int_equal(sg_span_copy(&before, s), 0);
  char *want = dump(s->attributes, 0);
  char *jansson = sg_json_dumps(s->attributes, JSON_COMPACT);
  assert_string_equal(want, jansson); /* our dumper is jansson's, byte for byte */
  free(jansson);
  size_t errs = 0;
  assert_int_equal(sg_lua_transform(rt, PROJECT, &b, &errs), 0);
  assert_int_equal(errs, 0);
  assert_int_equal(b.n, 1);
  s = &b.spans[0];
  char *got = dump(s->attributes, 0);
  assert_string_equal(got, want);
  assert_string_equal(got,
                      "{\"big\":9223372036854775807,\"neg\":-9223372036854775808,"
                      "\"b53\":9007199254740993,\"one\":1,\"onef\":1.0,\"f\":0.10000000000000001,"
                      "\"exp\":1.0000000000000001e300,\"eo\":{},\"ea\":[],\"nul\":null,\"t\":true,"
                      "\"uni\":\"h\xc3\xa9llo \xe2\x80\xa8 \xf0\x9f\x98\x80 \\u0001\",\"s/\":\"a/b\","
                      "\"nested\":{\"a\":[1,2.5,{\"b\":null,\"c\":[]}],\"z\":{}},"
                      "\"gen_ai.request.model\":\"m\"}");
  assert_true(json_equal(s->events, before.events));
  assert_string_equal(s->span_name, before.span_name);
  assert_int_equal(s->start_us, before.start_us);
  assert_memory_equal(s->trace_id, before.trace_id, 16);
  assert_null(s->status_message);
  free(got);
  free(want);
  sg_span_clear(&before);
  sg_span_batch_free(&b);
  sg_lua_rt_free(rt);
  sg_config_free(&cfg);
}

/* ---- modification --------------------------------------------------------------- */

static void test_modify(void **state) {
  (void)state;
  sg_config_t cfg;
  sg_lua_rt_t *rt = rt_with(
      "local gw = require('gw')\n"
      "return { span = function(s, ctx)\n"
      "  local a = s.attributes\n"
      "  a['secret.token'] = nil\n"
      "  a.added = {x = 1, y = gw.array(), z = {1, 2.5, 'three', gw.null}}\n"
      "  a.big = gw.int64('-9000000000000000001')\n"
      "  a.n = 3.0\n"
      "  s.span_name = 'renamed'\n"
      "  s.span_kind = 'SPAN_KIND_CLIENT'\n"
      "  s.status_code = 'STATUS_CODE_ERROR'\n"
      "  s.status_message = 'bad'\n"
      "  s.session_id = 'sess-1'\n"
      "  s.parent_id = '31d6cfe04b9011ec'\n"
      "  s.end_time = s.start_time + 5\n"
      "  s.events = {{name = 'ev', attributes = gw.object()}}\n"
      "  assert(ctx.project_id == '01934b7e-1234-7000-8000-000000000001')\n"
      "  assert(not pcall(function() ctx.project_id = 'x' end))\n"
      "  return s\n"
      "end }\n",
      &cfg);
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  push_span(&b, "a", "{\"keep\":\"v\",\"secret.token\":\"hunter2\",\"n\":1}");
  size_t errs = 0;
  assert_int_equal(sg_lua_transform(rt, PROJECT, &b, &errs), 0);
  assert_int_equal(errs, 0);
  sg_span_t *s = &b.spans[0];
  char *got = dump(s->attributes, 0);
  /* y is an empty array; object member order of a Lua table is unspecified */
  json_t *added = json_object_get(s->attributes, "added");
  assert_non_null(added);
  assert_true(json_is_array(json_object_get(added, "y")));
  assert_dump(json_object_get(added, "z"), 0, "[1,2.5,\"three\",null]");
  assert_null(json_object_get(s->attributes, "secret.token"));
  assert_dump(json_object_get(s->attributes, "big"), 0, "-9000000000000000001");
  assert_dump(json_object_get(s->attributes, "n"), 0, "3");
  assert_string_equal(s->span_name, "renamed");
  assert_int_equal(s->span_kind, SG_SPAN_KIND_CLIENT);
  assert_int_equal(s->status_code, SG_STATUS_CODE_ERROR);
  assert_string_equal(s->status_message, "bad");
  assert_string_equal(s->session_id, "sess-1");
  assert_int_equal(s->has_parent, 1);
  char pid[37];
  sg_uuid_format(s->parent_id, pid);
  assert_string_equal(pid, "31d6cfe0-4b90-11ec-31d6-cfe04b9011ec");
  assert_int_equal(s->end_us, s->start_us + 5);
  assert_true(json_is_object(json_object_get(json_array_get(s->events, 0), "attributes")));
  assert_dump(json_object_get(json_array_get(s->events, 0), "name"), 0, "\"ev\"");
  free(got);
  sg_span_batch_free(&b);
  sg_lua_rt_free(rt);
  sg_config_free(&cfg);
}

/* ---- drop and fan-out ------------------------------------------------------------ */

static void test_drop_and_fanout(void **state) {
  (void)state;
  sg_config_t cfg;
  sg_lua_rt_t *rt = rt_with(
      "local gw = require('gw')\n"
      "return { span = function(s)\n"
      "  if s.span_name == 'drop' then return nil end\n"
      "  if s.span_name == 'fan' then\n"
      "    local c = gw.span.copy(s)\n"
      "    c.span_id = '00000000000000000000000000000abc'\n"
      "    c.attributes.copy = true\n"
      "    return {s, {span_id = '0000000000000def', span_name = 'child'}, c}\n"
      "  end\n"
      "  if s.span_name == 'empty' then return {} end\n"
      "  return s\n"
      "end }\n",
      &cfg);
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  push_span(&b, "keep1", "{\"a\":1}");
  push_span(&b, "drop", "{\"a\":2}");
  push_span(&b, "fan", "{\"a\":3}");
  push_span(&b, "empty", NULL);
  push_span(&b, "keep2", NULL);
  size_t errs = 0;
  assert_int_equal(sg_lua_transform(rt, PROJECT, &b, &errs), 0);
  assert_int_equal(errs, 0);
  assert_int_equal(b.n, 5);
  assert_string_equal(b.spans[0].span_name, "keep1");
  assert_string_equal(b.spans[1].span_name, "fan");
  assert_string_equal(b.spans[2].span_name, "child");
  assert_string_equal(b.spans[3].span_name, "fan");
  assert_string_equal(b.spans[4].span_name, "keep2");
  assert_dump(b.spans[1].attributes, 0, "{\"a\":3}");
  assert_dump(b.spans[2].attributes, 0, "{\"a\":3}");
  assert_dump(b.spans[3].attributes, 0, "{\"a\":3,\"copy\":true}");
  char id[37];
  sg_uuid_format(b.spans[2].span_id, id);
  assert_string_equal(id, "00000000-0000-0def-0000-000000000def");
  sg_lua_stats_t st;
  sg_lua_rt_stats(rt, &st);
  assert_int_equal(st.spans_dropped, 2);
  assert_int_equal(st.spans_added, 2);
  assert_int_equal(st.calls, 5);
  sg_span_batch_free(&b);
  sg_lua_rt_free(rt);
  sg_config_free(&cfg);
}

/* ---- failure isolation -------------------------------------------------------------- */

static const char FAILING[] =
    "local gw = require('gw')\n"
    "return { span = function(s)\n"
    "  local a = s.attributes\n"
    "  a.x = 'changed'; a.y = nil; a.new = {1}; a.arr[1] = 'z'; a.arr[3] = 9; a.arr[3] = nil\n"
    "  s.span_name = 'changed'; s.session_id = 'zz'; s.attributes.arr[2] = nil\n"
    "  if s.span_name == 'changed' and a.bad then error('boom') end\n"
    "  if a.badret then return 42 end\n"
    "  if a.badlist then return {s, 'x'} end\n"
    "  return s\n"
    "end }\n";

static void test_error_isolation(void **state) {
  (void)state;
  for (int reject = 0; reject <= 1; reject++) {
    clear_dir();
    write_file("transform.lua", FAILING);
    sg_config_t cfg = cfg_for(tmpdir);
    if (reject) set_str(&cfg.on_script_error, "reject");
    sg_buf_t err = SG_BUF_INIT;
    sg_lua_rt_t *rt = sg_lua_rt_new(&cfg, &err);
    assert_non_null(rt);
    sg_span_batch_t b;
    sg_span_batch_init(&b);
    const char *bad = "{\"y\":1,\"x\":\"orig\",\"arr\":[1,2],\"z\":1.0,\"bad\":true}";
    push_span(&b, "ok1", "{\"x\":1,\"y\":2,\"arr\":[0,0]}");
    push_span(&b, "bad", bad);
    push_span(&b, "badret", "{\"arr\":[1,2],\"badret\":1}");
    push_span(&b, "badlist", "{\"arr\":[1,2],\"badlist\":1}");
    push_span(&b, "ok2", "{\"arr\":[5,6]}");
    size_t errs = 0;
    assert_int_equal(sg_lua_transform(rt, PROJECT, &b, &errs), 0);
    assert_int_equal(errs, 3);
    if (!reject) {
      assert_int_equal(b.n, 5);
      assert_string_equal(b.spans[0].span_name, "changed");
      assert_string_equal(b.spans[1].span_name, "bad");
      assert_null(b.spans[1].session_id);
      assert_dump(b.spans[1].attributes, 0, bad); /* exactly as it came, order included */
      assert_dump(b.spans[2].attributes, 0, "{\"arr\":[1,2],\"badret\":1}");
      assert_dump(b.spans[3].attributes, 0, "{\"arr\":[1,2],\"badlist\":1}");
      assert_string_equal(b.spans[4].span_name, "changed");
      assert_dump(b.spans[4].attributes, 0, "{\"arr\":[\"z\"],\"x\":\"changed\",\"new\":[1]}");
    } else {
      assert_int_equal(b.n, 2);
      assert_int_equal(b.rejected, 3);
      assert_non_null(strstr(b.reject_msg.data, "span 1: rejected by the transform script"));
    }
    sg_lua_stats_t st;
    sg_lua_rt_stats(rt, &st);
    assert_int_equal(st.errors, 3);
    assert_int_equal(st.budget_kills, 0);
    sg_span_batch_free(&b);
    sg_lua_rt_free(rt);
    sg_buf_free(&err);
    sg_config_free(&cfg);
  }
}

/* ---- budget --------------------------------------------------------------------- */

static void test_budget(void **state) {
  (void)state;
  clear_dir();
  write_file("transform.lua",
             "local n = 0\n"
             "return { span = function(s)\n"
             "  if s.span_name == 'while' then while true do end end\n"
             "  if s.span_name == 'for' then for i = 1, 1e12 do n = n + i end end\n"
             "  if s.span_name == 'rec' then local function f(x) return f(x + 1) + 1 end f(1) end\n"
             "  if s.span_name == 'str' then local t = {} while true do t[#t % 100 + 1] = 'x' end end\n"
             "  if s.span_name == 'catch' then while true do pcall(function() while true do end end) end end\n"
             "  if s.span_name == 'catch2' then for i = 1, 1e12 do pcall(error, 'x') end end\n"
             "  s.attributes.ok = true\n"
             "  return s\n"
             "end }\n");
  sg_config_t cfg = cfg_for(tmpdir);
  cfg.script_budget = 200000;
  sg_buf_t err = SG_BUF_INIT;
  sg_lua_rt_t *rt = sg_lua_rt_new(&cfg, &err);
  assert_non_null(rt);
  for (int round = 0; round < 2; round++) { /* the state stays usable */
    sg_span_batch_t b;
    sg_span_batch_init(&b);
    push_span(&b, "while", "{}");
    push_span(&b, "fine", "{}");
    push_span(&b, "for", "{}");
    push_span(&b, "rec", "{}");
    push_span(&b, "str", "{}");
    push_span(&b, "fine", "{}");
    push_span(&b, "catch", "{}"); /* catches the budget error and loops on */
    push_span(&b, "catch2", "{}");
    push_span(&b, "fine", "{}");
    size_t errs = 0;
    time_t t0 = time(NULL);
    assert_int_equal(sg_lua_transform(rt, PROJECT, &b, &errs), 0);
    assert_true(time(NULL) - t0 < 10);
    assert_int_equal(errs, 6);
    assert_int_equal(b.n, 9);
    assert_dump(b.spans[0].attributes, 0, "{}");
    assert_dump(b.spans[1].attributes, 0, "{\"ok\":true}");
    assert_dump(b.spans[5].attributes, 0, "{\"ok\":true}");
    assert_dump(b.spans[6].attributes, 0, "{}");
    assert_dump(b.spans[8].attributes, 0, "{\"ok\":true}");
    sg_span_batch_free(&b);
  }
  sg_lua_stats_t st;
  sg_lua_rt_stats(rt, &st);
  assert_int_equal(st.errors, 12);
  assert_true(st.budget_kills >= 10); /* the recursion may hit the stack limit first */
  sg_lua_rt_free(rt);
  sg_buf_free(&err);
  sg_config_free(&cfg);
}

/* ---- gw ------------------------------------------------------------------------ */

static void test_gw(void **state) {
  (void)state;
  sg_config_t cfg;
  sg_lua_rt_t *rt = rt_with(NULL, &cfg);
  const char *e;
  e = run_lua(rt,
              "local gw = require('gw')\n"
              "local s = '{\"a\":1.0,\"b\":[],\"c\":{},\"d\":null,\"e\":18446744073709551615}'\n"
              "local v, err = gw.json.decode(s)\n"
              "assert(v == nil and err:find('line 1'), err)\n"
              "s = '{\"a\":1.0,\"b\":[],\"c\":{},\"d\":null,\"e\":9223372036854775807,\"f\":\"\\\\u00e9\"}'\n"
              "v = gw.json.decode(s)\n"
              "assert(gw.json.encode(v) == '{\"a\":1.0,\"b\":[],\"c\":{},\"d\":null,\"e\":9223372036854775807,\"f\":\"\\195\\169\"}', gw.json.encode(v))\n"
              "v.x = 1; assert(v.x == 1)\n"
              "assert(gw.json.encode({1, 2, 3}) == '[1,2,3]')\n"
              "assert(gw.json.encode(gw.array()) == '[]')\n"
              "assert(gw.json.encode({}) == '{}')\n"
              "assert(gw.json.encode({a = gw.null}) == '{\"a\":null}')\n"
              "assert(gw.json.encode(0.5) == '0.5')\n"
              "assert(not pcall(gw.json.encode, {1, 2, x = 3}))\n"
              "assert(not pcall(gw.json.encode, 0/0))\n"
              "local t = {} t.self = t\n"
              "local ok, m = pcall(gw.json.encode, t) assert(not ok and m:find('deeply'), m)\n"
              "local big = gw.int64('9223372036854775807')\n"
              "assert(gw.json.encode({big}) == '[9223372036854775807]')\n"
              "assert(tostring(gw.int64(5)) == '5LL')\n"
              "local now = gw.now() assert(now > 1.7e15 and now < 1e17)\n"
              "gw.metrics.incr('spans_seen') gw.metrics.incr('spans_seen', 2) gw.metrics.gauge('q', 7)\n"
              "ok, m = pcall(gw.metrics.incr) assert(not ok and m:find('metric name expected'), m)\n"
              "ok, m = pcall(gw.metrics.incr, 'bad name') assert(not ok and m:find('must match'), m)\n"
              "ok, m = pcall(gw.metrics.gauge, 'spans_seen', 1) assert(not ok and m:find('already a counter'), m)\n"
              "assert(gw.config.retention_days == 0 and gw.config.scripts ~= nil)\n"
              "assert(gw.config.clickhouse_password == nil and gw.config.postgres_uri == nil)\n"
              "ok, m = pcall(function() gw.config.x = 1 end) assert(not ok and m:find('read%-only'), m)\n"
              "assert(type(gw.config.clickhouse_projects) == 'table')\n"
              "assert(type(gw.config.retention_by_project) == 'table')\n"
              "ok, m = pcall(gw.attributes.nest, {}) assert(not ok and m:find('span expected'), m)\n"
              "ok, m = pcall(gw.json.decode, 5) assert(not ok and m:find('string expected'), m)\n"
              /* #14: parsed trees are bounded like request bodies */
              "v, m = gw.json.decode('[' .. string.rep('{},', 400000) .. '{}]')\n"
              "assert(v == nil and m:find('^too large to parse: about %d+ MiB once parsed, over 74 MiB'), m)\n"
              "gw.log.info('hello %s %d', 'x', 3)\n"
              "ok, m = pcall(gw.log.info) assert(not ok)\n"
              "assert(gw.type(gw.null) == 'null' and gw.type(gw.array()) == 'array')\n"
              "local tt = gw.totable(gw.json.decode('{\"a\":[1,{\"b\":2}]}'))\n"
              "assert(type(tt) == 'table' and tt.a[2].b == 2 and gw.type(tt.a) == 'array')\n"
              "local n = 0 for k, v in gw.pairs(gw.json.decode('{\"a\":1,\"b\":2}')) do n = n + v end\n"
              "assert(n == 3)\n"
              "assert(jit == nil)\n");
  if (e) fail_msg("%s", e);
  struct {
    int n;
    double sum;
  } acc = {0, 0};
  int cb(const char *name, char kind, double v, void *ud);
  assert_int_equal(sg_lua_rt_metrics(rt, cb, &acc), 0);
  assert_int_equal(acc.n, 2);
  assert_true(acc.sum == 10);
  sg_lua_rt_free(rt);
  sg_config_free(&cfg);
}

int cb(const char *name, char kind, double v, void *ud) {
  struct {
    int n;
    double sum;
  } *acc = ud;
  (void)name;
  (void)kind;
  acc->n++;
  acc->sum += v;
  return 0;
}

/* ---- stale proxies and read-only values ------------------------------------------- */

static void test_proxy_rules(void **state) {
  (void)state;
  sg_config_t cfg;
  sg_lua_rt_t *rt = rt_with(
      "local gw = require('gw')\n"
      "local kept\n"
      "return { span = function(s, ctx)\n"
      "  if kept then\n"
      "    local ok, m = pcall(function() return kept.x end)\n"
      "    assert(not ok and m:find('stale'), m)\n"
      "  end\n"
      "  kept = s.attributes\n"
      "  local ok, m = pcall(function() ctx.resource['service.name'] = 'x' end)\n"
      "  assert(not ok and m:find('read%-only'), m)\n"
      "  assert(ctx.resource['service.name'] == 'svc')\n"
      "  s.attributes.res = ctx.resource\n"
      "  ok, m = pcall(function() s.attributes.res.y = 1 end)\n"
      "  assert(not ok and m:find('read%-only'), m)\n"
      "  local ok2, m2 = pcall(function() s.nosuch = 1 end)\n"
      "  assert(not ok2 and m2:find(\"no field 'nosuch'\"), m2)\n"
      "  ok2, m2 = pcall(function() s.span_kind = 'SERVER' end)\n"
      "  assert(not ok2 and m2:find('unknown label'), m2)\n"
      "  ok2, m2 = pcall(function() s.trace_id = 'nope' end)\n"
      "  assert(not ok2 and m2:find('UUID'), m2)\n"
      "  ok2, m2 = pcall(function() s.attributes.f = function() end end)\n"
      "  assert(not ok2 and m2:find('function cannot be stored'), m2)\n"
      "  s.attributes.cp = s.attributes.obj\n"
      "  s.attributes.cp.z = 1\n"
      "  return s\n"
      "end }\n",
      &cfg);
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  json_t *res = json_loads("{\"service.name\":\"svc\"}", 0, NULL);
  for (int i = 0; i < 2; i++) {
    sg_span_t *s = push_span(&b, "a", "{\"obj\":{\"k\":1}}");
    s->resource = json_incref(res);
  }
  size_t errs = 0;
  assert_int_equal(sg_lua_transform(rt, PROJECT, &b, &errs), 0);
  assert_int_equal(errs, 0);
  /* the copy did not alias: obj unchanged; the resource shared, unchanged */
  assert_dump(b.spans[0].attributes, 0,
              "{\"obj\":{\"k\":1},\"res\":{\"service.name\":\"svc\"},\"cp\":{\"k\":1,\"z\":1}}");
  assert_dump(res, 0, "{\"service.name\":\"svc\"}");
  json_decref(res);
  sg_span_batch_free(&b);
  sg_lua_rt_free(rt);
  sg_config_free(&cfg);
}

/* ---- shipped scripts ------------------------------------------------------------ */

static sg_lua_rt_t *shipped(sg_config_t *cfg) {
  *cfg = cfg_for("lua");
  sg_buf_t err = SG_BUF_INIT;
  sg_lua_rt_t *rt = sg_lua_rt_new(cfg, &err);
  if (!rt) fail_msg("shipped scripts: %s", err.data);
  sg_buf_free(&err);
  return rt;
}

static const char REALISTIC[] =
    "{\"ag.type.trace\":\"invocation\",\"ag.type.span\":\"llm\","
    "\"gen_ai.system\":\"openai\",\"gen_ai.request.model\":\"gpt-4o-mini\","
    "\"gen_ai.request.temperature\":0.7,\"gen_ai.request.max_tokens\":512,"
    "\"gen_ai.usage.prompt_tokens\":412,\"gen_ai.usage.completion_tokens\":96,"
    "\"gen_ai.response.id\":\"chatcmpl-9a8b7c6d5e4f3a2b1c0d\","
    "\"ag.session.id\":\"session-7f3a9c2e\",\"ag.user.id\":\"user-4411\","
    "\"ag.data.inputs.prompt\":\"You are a helpful assistant. Answer the user's question about the "
    "quarterly report concisely, citing the relevant section numbers. The report covers revenue, "
    "operating costs, headcount changes, and the outlook for the next two quarters, including risks "
    "related to supply chain constraints and currency fluctuations in the European market. Keep the "
    "answer under two hundred words and use bullet points where helpful for readability.\","
    "\"ag.data.outputs.completion.0.role\":\"assistant\","
    "\"ag.data.outputs.completion.0.content\":\"Revenue grew 12% (section 2.1); costs rose 4%.\","
    "\"ag.meta.request.stream\":false,\"llm.is_streaming\":false}";

static const char RESOURCE[] =
    "{\"service.name\":\"checkout\",\"service.version\":\"1.4.2\",\"telemetry.sdk.language\":"
    "\"python\",\"telemetry.sdk.name\":\"opentelemetry\",\"telemetry.sdk.version\":\"1.27.0\","
    "\"host.name\":\"ip-10-0-3-17\"}";

/* ---- proxies answer as tables --------------------------------------------------- */

static void test_proxy_as_table(void **state) {
  (void)state;
  /* The operator's guard must not skip the redaction (proxies are
   * userdata), and the base library iterates proxies like the tables they
   * stand for. */
  sg_config_t cfg;
  sg_lua_rt_t *rt = rt_with(
      "local gw = require('gw')\n"
      "local function keys(it, t)\n"
      "  local out = {}\n"
      "  for k, v in it(t) do out[#out + 1] = tostring(k) .. '=' .. gw.type(v) end\n"
      "  return table.concat(out, ',')\n"
      "end\n"
      "return { span = function(span, ctx)\n"
      "  if type(span.attributes) ~= 'table' then return span end\n"
      "  local a = span.attributes\n"
      "  for k in pairs(a) do if k:find('email', 1, true) then a[k] = nil end end\n"
      "  assert(type(span) == 'table' and type(a.list) == 'table' and type(a.obj) == 'table')\n"
      "  assert(type(a.list[3]) == 'userdata' and type(a.n) == 'number' and type(nil) == 'nil')\n"
      "  assert(type(gw.int64(5)) == 'cdata' and type('x') == 'string' and type({}) == 'table')\n"
      "  assert(gw.type(span) == 'span' and gw.type(a) == 'object' and gw.type(a.list) == 'array')\n"
      "  local ok, m = pcall(type) assert(not ok and m:find('value expected'), m)\n"
      "  assert(keys(pairs, a) == 'n=number,list=array,obj=object,empty=object', keys(pairs, a))\n"
      "  assert(keys(ipairs, a.list) == '1=number,2=string,3=null,4=object', keys(ipairs, a.list))\n"
      "  assert(keys(pairs, a.list) == keys(ipairs, a.list))\n"
      "  assert(keys(ipairs, a) == '' and keys(ipairs, span) == '')\n"
      "  assert(next(a.empty) == nil and next(a) == 'n' and next(a, 'n') == 'list')\n"
      "  assert(select(2, next(a.list, 3)).k == 1 and next(a.list, 4) == nil)\n"
      "  assert(keys(pairs, {x = 1}) == 'x=number' and keys(ipairs, {7}) == '1=number')\n"
      "  assert(gw.pairs == pairs)\n"
      "  local f = {}\n"
      "  for k, v in pairs(span) do f[#f + 1] = k; assert(v == span[k] or type(v) == 'table', k) end\n"
      "  f = table.concat(f, ',')\n"
      "  assert(f:find('^trace_id,span_id,span_name,span_kind,') and f:find(',attributes') and\n"
      "         not f:find('parent_id'), f)\n"
      "  for k, v in pairs(a.obj) do v.seen = true end\n" /* values are live proxies */
      "  ok, m = pcall(function() local x = pairs(nil) return x end) assert(not ok and m:find(\"bad argument #1 to 'pairs' %(table expected, got nil%)\"), m)\n"
      "  ok, m = pcall(next, a, 'nope') assert(not ok and m:find('invalid key'), m)\n"
      "  ok, m = pcall(ipairs, 5) assert(not ok and m:find('table expected, got number'), m)\n"
      "  a.redacted = true\n"
      "  return span\n"
      "end }\n",
      &cfg);
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  push_span(&b, "s", "{\"n\":1,\"user.email\":\"a@b\",\"contact.email\":\"c@d\",\"list\":[1,\"x\",null,{\"k\":1}],"
                     "\"obj\":{\"inner\":{}},\"empty\":{}}");
  size_t errs = 0;
  assert_int_equal(sg_lua_transform(rt, PROJECT, &b, &errs), 0);
  assert_int_equal(errs, 0);
  assert_dump(b.spans[0].attributes, 0,
              "{\"n\":1,\"list\":[1,\"x\",null,{\"k\":1}],\"obj\":{\"inner\":{\"seen\":true}},"
              "\"empty\":{},\"redacted\":true}");
  sg_span_batch_free(&b);
  sg_lua_rt_free(rt);
  sg_config_free(&cfg);
}

/* A hook's state has the job-only functions, and they say why they fail. */
static void test_job_only_functions(void **state) {
  (void)state;
  sg_config_t cfg;
  sg_lua_rt_t *rt = rt_with(NULL, &cfg);
  const char *e = run_lua(rt,
      "for _, f in ipairs({gw.pg.query, gw.pg.query_raw, gw.ch.query, gw.ch.insert,\n"
      "    gw.ch.insert_spans, gw.ch.span_batch, gw.sleep, gw.spawn, gw.wait, gw.exit,\n"
      "    gw.hooks.clickhouse}) do\n"
      "  local ok, m = pcall(f, 'SELECT 1')\n"
      "  assert(not ok and m:find('^gw%.[%w_.]+: I/O is only available to jobs'), m)\n"
      "end\n");
  if (e) fail_msg("%s", e);
  sg_lua_rt_free(rt);
  sg_config_free(&cfg);
}

static void test_shipped_transform(void **state) {
  (void)state;
  sg_config_t cfg;
  sg_lua_rt_t *rt = shipped(&cfg);
  assert_int_equal(sg_lua_rt_hooks(rt), SG_LUA_HOOK_TRANSFORM | SG_LUA_HOOK_CLICKHOUSE | SG_LUA_HOOK_POSTGRES |
                                          SG_LUA_HOOK_READ_BACKEND | SG_LUA_HOOK_RETENTION);
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  json_t *res = json_loads(RESOURCE, 0, NULL);
  sg_span_t *s = push_span(&b, "chat", REALISTIC);
  s->resource = json_incref(res);
  s = push_span(&b, "oi", "{\"session.id\":\"s-9\",\"user.id\":42,\"openinference.span.kind\":\"RETRIEVER\","
                          "\"ag.type.trace\":\"bogus\",\"gen_ai.agent.id\":\"ag-1\",\"resource\":\"mine\"}");
  s->resource = json_incref(res);
  s = push_span(&b, "plain", NULL);
  s->trace_type = SG_TRACE_ANNOTATION;
  size_t errs = 0;
  assert_int_equal(sg_lua_transform(rt, PROJECT, &b, &errs), 0);
  assert_int_equal(errs, 0);
  assert_int_equal(b.n, 3);
  s = &b.spans[0];
  assert_int_equal(s->trace_type, SG_TRACE_INVOCATION);
  assert_int_equal(s->span_type, SG_SPAN_TYPE_LLM);
  assert_string_equal(s->session_id, "session-7f3a9c2e");
  assert_string_equal(s->user_id, "user-4411");
  assert_null(s->agent_id);
  assert_int_equal(b.spans[0].nest_attributes, SG_LUA_NEST_ATTRS | SG_LUA_NEST_RESOURCE);
  assert_int_equal(b.spans[1].nest_attributes, SG_LUA_NEST_ATTRS); /* has its own "resource" */
  assert_int_equal(b.spans[2].nest_attributes, SG_LUA_NEST_ATTRS);
  sg_buf_t nb = SG_BUF_INIT;
  assert_int_equal(sg_json_dump_attributes(s->attributes, s->resource, SG_JSON_NEST, &nb), 0);
  char *nested = sg_buf_detach(&nb, NULL);
  assert_non_null(strstr(nested, "\"gen_ai\":{\"system\":\"openai\",\"request\":{\"model\":\"gpt-4o-mini\""));
  assert_non_null(strstr(nested, "\"resource\":{\"service\":{\"name\":\"checkout\",\"version\":\"1.4.2\"}"));
  assert_non_null(strstr(nested, "\"completion\":[{\"role\":\"assistant\",\"content\":"));
  assert_non_null(strstr(nested, "\"session\":{\"id\":\"session-7f3a9c2e\"}"));
  free(nested);
  s = &b.spans[1];
  assert_int_equal(s->trace_type, SG_TRACE_INVOCATION);
  assert_int_equal(s->span_type, SG_SPAN_TYPE_QUERY);
  assert_string_equal(s->session_id, "s-9");
  assert_string_equal(s->user_id, "42");
  assert_string_equal(s->agent_id, "ag-1");
  assert_dump(json_object_get(s->attributes, "ag.session.id"), 0, "\"s-9\"");
  assert_dump(json_object_get(s->attributes, "ag.type.trace"), 0, "\"invocation\"");
  assert_dump(json_object_get(s->attributes, "ag.type.span"), 0, "\"query\"");
  assert_dump(json_object_get(s->attributes, "resource"), 0, "\"mine\"");
  s = &b.spans[2];
  assert_int_equal(s->trace_type, SG_TRACE_ANNOTATION); /* as sent, no attribute */
  assert_int_equal(s->span_type, SG_SPAN_TYPE_TASK);
  assert_dump(s->attributes, SG_JSON_NEST, "{\"ag\":{\"type\":{\"trace\":\"annotation\",\"span\":\"task\"}}}");
  assert_non_null(strstr(run_lua(rt, "require('gw').attributes.nest(1)"), "span expected"));
  json_decref(res);
  sg_span_batch_free(&b);
  sg_lua_rt_free(rt);
  sg_config_free(&cfg);
}

/* The built-in gw.agenta.normalize and the shipped M.normalize (the same
 * steps in Lua) must store the same rows: run both over varied spans and
 * compare every column and the attributes as stored. */
static const char *NORM_CASES[] = {
    REALISTIC,
    NULL, /* no attributes */
    "{}",
    "{\"ag.type.tree\":\"invocation\",\"ag.type.node\":\"chat\"}", /* legacy, already lower case */
    "{\"ag.type.tree\":\"Annotation\",\"ag.type.node\":\"RERANK\",\"ag.type.trace\":null}",
    "{\"ag.type.trace\":\"bogus\",\"ag.type.span\":7,\"openinference.span.kind\":\"TOOL\"}",
    "{\"openinference.span.kind\":\"RETRIEVER\",\"session.id\":\"s-9\",\"user.id\":42}",
    "{\"openinference.span.kind\":\"retriever\",\"session.id\":{\"x\":[1,2]},\"user.id\":true}",
    "{\"ag.session.id\":null,\"session.id\":\"oi\",\"ag.user.id\":\"\",\"user.id\":\"u\"}",
    "{\"ag.session.id\":12345678901234,\"ag.user.id\":-7,\"ag.agent.id\":1.5,\"gen_ai.agent.id\":\"g\"}",
    "{\"ag.agent.id\":false,\"gen_ai.agent.id\":\"g\",\"resource\":\"mine\"}",
    "{\"ag.agent.id\":\"a\",\"gen_ai.agent.id\":\"g\",\"ag.type.span\":\"LlM\"}",
    "{\"ag.session.id\":9007199254740993,\"ag.user.id\":1e20,\"ag.agent.id\":2.0}",
    "{\"ag.session.id\":\"h\\u00e9llo\",\"ag.user.id\":\"u\\u0000x\"}",
    "{\"ag.type.trace\":\"UNKNOWN\",\"ag.type.span\":\"unknown\",\"x.y\":1}",
};

static void fill_norm_batch(sg_span_batch_t *b, json_t *res) {
  sg_span_batch_init(b);
  size_t n = sizeof NORM_CASES / sizeof NORM_CASES[0];
  for (size_t k = 0; k < 4 * n; k++) {
    json_error_t e;
    sg_span_t *s = push_span(b, "n", NULL);
    const char *a = NORM_CASES[k % n];
    if (a && !(s->attributes = json_loads(a, JSON_ALLOW_NUL, &e))) fail_msg("bad test JSON: %s", e.text);
    int v = (int)(k / n); /* columns as a native client may send them; resource or not */
    s->trace_type = v & 1 ? SG_TRACE_ANNOTATION : SG_NULL_ENUM;
    s->span_type = v & 2 ? SG_SPAN_TYPE_TOOL : SG_NULL_ENUM;
    if (v & 1) s->session_id = strdup("sent");
    if (v != 2) s->resource = json_incref(res);
  }
}

static void test_normalize_builtin_matches_lua(void **state) {
  (void)state;
  json_t *res = json_loads(RESOURCE, 0, NULL);
  sg_span_batch_t bc, bl;
  fill_norm_batch(&bc, res);
  fill_norm_batch(&bl, res);
  sg_config_t cc, cl;
  sg_lua_rt_t *c = shipped(&cc);
  sg_lua_rt_t *l = rt_with("local gw = require('gw')\n"
                           "local saved = gw.agenta\n"
                           "gw.agenta = nil\n" /* the shipped file then runs M.normalize */
                           "local M = dofile('lua/transform.lua')\n"
                           "gw.agenta = saved\n"
                           "assert(M.span == M.normalize)\n"
                           "return M\n",
                           &cl);
  size_t ec = 9, el = 9;
  assert_int_equal(sg_lua_transform(c, PROJECT, &bc, &ec), 0);
  assert_int_equal(sg_lua_transform(l, PROJECT, &bl, &el), 0);
  assert_int_equal(ec, 0);
  assert_int_equal(el, 0);
  assert_int_equal(bc.n, bl.n);
  for (size_t i = 0; i < bc.n; i++) {
    sg_span_t *x = &bc.spans[i], *y = &bl.spans[i];
    char *ax = dump(x->attributes, 0), *ay = dump(y->attributes, 0);
    /* Documented differences (lua_span.c): a copied session.id / user.id
     * keeps its JSON form; an integer beyond 2^53 is exact in both. */
    if (strcmp(ax, ay) != 0) fail_msg("span %zu attributes: builtin %s, Lua %s", i, ax, ay);
    free(ax);
    free(ay);
    assert_int_equal(x->trace_type, y->trace_type);
    assert_int_equal(x->span_type, y->span_type);
    const char *sx[] = {x->session_id, x->user_id, x->agent_id}, *sy[] = {y->session_id, y->user_id, y->agent_id};
    for (int k = 0; k < 3; k++) {
      if ((sx[k] == NULL) != (sy[k] == NULL) || (sx[k] && strcmp(sx[k], sy[k]) != 0))
        fail_msg("span %zu id column %d: builtin %s, Lua %s", i, k, sx[k] ? sx[k] : "NULL",
                 sy[k] ? sy[k] : "NULL");
    }
    assert_int_equal(x->nest_attributes, y->nest_attributes);
  }
  /* a few rows spelled out */
  assert_dump(bc.spans[3].attributes, 0,
              "{\"ag.type.tree\":\"invocation\",\"ag.type.node\":\"chat\",\"ag.type.trace\":\"invocation\","
              "\"ag.type.span\":\"chat\"}");
  assert_string_equal(bc.spans[9].session_id, "12345678901234");
  assert_string_equal(bc.spans[9].user_id, "-7");
  assert_string_equal(bc.spans[9].agent_id, "1.5");
  assert_string_equal(bc.spans[12].session_id, "9007199254740993");
  assert_string_equal(bc.spans[12].user_id, "1e+20");
  assert_string_equal(bc.spans[12].agent_id, "2");
  assert_int_equal(bc.spans[0].nest_attributes, SG_LUA_NEST_ATTRS | SG_LUA_NEST_RESOURCE);
  assert_int_equal(bc.spans[10].nest_attributes, SG_LUA_NEST_ATTRS); /* own "resource" */
  sg_lua_stats_t st;
  sg_lua_rt_stats(c, &st);
  assert_int_equal(st.calls, bc.n);
  sg_span_batch_free(&bc);
  sg_span_batch_free(&bl);
  sg_lua_rt_free(c);
  sg_lua_rt_free(l);
  sg_config_free(&cc);
  sg_config_free(&cl);
  json_decref(res);
}

/* The built-in failing (attributes that are not an object) is a hook
 * failure like any other: logged, counted, the span kept as it came. */
static void test_normalize_builtin_errors(void **state) {
  (void)state;
  sg_config_t cfg;
  sg_lua_rt_t *rt = shipped(&cfg);
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  push_span(&b, "ok", "{\"ag.session.id\":\"s\"}");
  push_span(&b, "bad", "[1,{\"ag.session.id\":\"s\"}]");
  push_span(&b, "ok2", NULL);
  size_t errs = 0;
  assert_int_equal(sg_lua_transform(rt, PROJECT, &b, &errs), 0);
  assert_int_equal(errs, 1);
  assert_int_equal(b.n, 3);
  assert_string_equal(b.spans[0].session_id, "s");
  assert_dump(b.spans[1].attributes, 0, "[1,{\"ag.session.id\":\"s\"}]");
  assert_null(b.spans[1].session_id);
  assert_int_equal(b.spans[1].nest_attributes, 0);
  assert_int_equal(b.spans[1].trace_type, SG_NULL_ENUM);
  assert_int_equal(b.spans[2].nest_attributes, SG_LUA_NEST_ATTRS);
  sg_span_batch_free(&b);
  /* called from Lua: bad arguments, and a failure after it rolls it back */
  const char *e = run_lua(rt, "local gw = require('gw')\n"
                              "local ok, m = pcall(gw.agenta.normalize, {})\n"
                              "assert(not ok and m:find('span expected'), m)\n");
  if (e) fail_msg("%s", e);
  sg_lua_rt_free(rt);
  sg_config_free(&cfg);
  rt = rt_with("local gw = require('gw')\n"
               "return { span = function(s, ctx)\n"
               "  gw.agenta.normalize(s, ctx)\n"
               "  if s.span_name == 'fail' then error('after normalize') end\n"
               "  return s\n"
               "end }\n",
               &cfg);
  sg_span_batch_init(&b);
  push_span(&b, "fail", "{\"session.id\":\"oi\",\"ag.type.span\":\"LLM\"}");
  push_span(&b, "pass", "{\"session.id\":\"oi\"}");
  assert_int_equal(sg_lua_transform(rt, PROJECT, &b, &errs), 0);
  assert_int_equal(errs, 1);
  assert_dump(b.spans[0].attributes, 0, "{\"session.id\":\"oi\",\"ag.type.span\":\"LLM\"}");
  assert_null(b.spans[0].session_id);
  assert_int_equal(b.spans[0].span_type, SG_NULL_ENUM);
  assert_int_equal(b.spans[0].nest_attributes, 0);
  assert_dump(b.spans[1].attributes, 0,
              "{\"session.id\":\"oi\",\"ag.type.trace\":\"invocation\",\"ag.type.span\":\"task\","
              "\"ag.session.id\":\"oi\"}");
  assert_string_equal(b.spans[1].session_id, "oi");
  sg_span_batch_free(&b);
  sg_lua_rt_free(rt);
  sg_config_free(&cfg);
}

/* Output placed in place until a fan-out overtakes the input: then it moves
 * to a new array, in order, nothing lost or doubled. */
static void test_fanout_growth(void **state) {
  (void)state;
  sg_config_t cfg;
  sg_lua_rt_t *rt = rt_with("local gw = require('gw')\n"
                            "return { span = function(s)\n"
                            "  local n = tonumber(s.span_name)\n"
                            "  if n % 7 == 3 then return nil end\n"
                            "  if n % 5 == 1 then return {s, {span_name = n .. 'b'}, {span_name = n .. 'c'}} end\n"
                            "  return s\n"
                            "end }\n",
                            &cfg);
  for (int round = 0; round < 2; round++) {
    sg_span_batch_t b;
    sg_span_batch_init(&b);
    char name[16];
    for (int i = 0; i < 300; i++) {
      snprintf(name, sizeof name, "%d", i);
      push_span(&b, name, "{\"a\":1}");
    }
    size_t errs = 0;
    assert_int_equal(sg_lua_transform(rt, PROJECT, &b, &errs), 0);
    assert_int_equal(errs, 0);
    size_t w = 0;
    for (int i = 0; i < 300; i++) {
      if (i % 7 == 3) continue;
      snprintf(name, sizeof name, "%d", i);
      assert_string_equal(b.spans[w++].span_name, name);
      if (i % 5 == 1) {
        snprintf(name, sizeof name, "%db", i);
        assert_string_equal(b.spans[w++].span_name, name);
        snprintf(name, sizeof name, "%dc", i);
        assert_string_equal(b.spans[w++].span_name, name);
      }
    }
    assert_int_equal(b.n, w);
    assert_true(b.cap >= b.n);
    sg_span_batch_free(&b);
  }
  sg_lua_rt_free(rt);
  sg_config_free(&cfg);
}

static sg_strlist_t list_of(const char *a, const char *b) {
  sg_strlist_t l = {calloc(2, sizeof(char *)), 0};
  if (a) l.v[l.n++] = strdup(a);
  if (b) l.v[l.n++] = strdup(b);
  return l;
}

static void free_list(sg_strlist_t *l) {
  for (size_t i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

static void test_shipped_routing_ttl(void **state) {
  (void)state;
  uint8_t other[16] = {0xaa};
  sg_config_t cfg = cfg_for("lua");
  cfg.use_clickhouse = 1;
  free_list(&cfg.clickhouse_projects_deny);
  cfg.clickhouse_projects_deny = list_of("01934B7E-1234-7000-8000-000000000001", NULL);
  cfg.retention_days = 30;
  set_str(&cfg.retention_by_project, "{\"aa000000-0000-0000-0000-000000000000\": 7}");
  set_str(&cfg.read_backend, "clickhouse");
  sg_buf_t err = SG_BUF_INIT;
  sg_lua_rt_t *rt = sg_lua_rt_new(&cfg, &err);
  if (!rt) fail_msg("%s", err.data);
  int on = 5, be;
  assert_int_equal(sg_lua_route_clickhouse(rt, PROJECT, &on), 0);
  assert_int_equal(on, 0); /* denied */
  assert_int_equal(sg_lua_route_clickhouse(rt, other, &on), 0);
  assert_int_equal(on, 1);
  assert_int_equal(sg_lua_route_clickhouse(rt, other, &on), 0); /* cached */
  assert_int_equal(on, 1);
  assert_int_equal(sg_lua_read_backend(rt, other, NULL, "trace", &be), 0);
  assert_int_equal(be, SG_READ_CLICKHOUSE);
  assert_int_equal(sg_lua_read_backend(rt, PROJECT, NULL, "query", &be), 0);
  assert_int_equal(be, SG_READ_POSTGRES);
  sg_span_batch_t b;
  sg_span_batch_init(&b);
  push_span(&b, "x", NULL);
  double d;
  assert_int_equal(sg_lua_retention_days(rt, PROJECT, &b.spans[0], &d), 0);
  assert_true(d == 30);
  assert_int_equal(sg_lua_retention_days(rt, other, &b.spans[0], &d), 0);
  assert_true(d == 7);
  sg_lua_stats_t st;
  sg_lua_rt_stats(rt, &st);
  assert_int_equal(st.errors, 0);
  sg_span_batch_free(&b);
  sg_lua_rt_free(rt);
  sg_config_free(&cfg);
  sg_buf_free(&err);
}

/* M.postgres: the shipped default reads clickhouse_only_projects; a project
 * is off PostgreSQL only when it goes to ClickHouse; errors keep it on
 * PostgreSQL and are not cached; answers are cached. */
static void test_route_postgres(void **state) {
  (void)state;
  uint8_t other[16] = {0xaa};
  sg_config_t cfg = cfg_for("lua");
  cfg.use_clickhouse = 1;
  free_list(&cfg.clickhouse_only_projects);
  cfg.clickhouse_only_projects = list_of("01934B7E123470008000000000000001", NULL);
  sg_buf_t err = SG_BUF_INIT;
  sg_lua_rt_t *rt = sg_lua_rt_new(&cfg, &err);
  if (!rt) fail_msg("%s", err.data);
  assert_true(sg_lua_rt_hooks(rt) & SG_LUA_HOOK_POSTGRES);
  int on = 7, be = 7;
  assert_int_equal(sg_lua_route_postgres(rt, PROJECT, &on), 0);
  assert_int_equal(on, 0);
  assert_int_equal(sg_lua_route_postgres(rt, other, &on), 0);
  assert_int_equal(on, 1);
  /* its reads come from ClickHouse whatever read_backend says in gateway.conf */
  assert_int_equal(sg_lua_read_backend(rt, PROJECT, NULL, "trace", &be), 0);
  assert_int_equal(be, SG_READ_CLICKHOUSE);
  assert_int_equal(sg_lua_read_backend(rt, other, NULL, "trace", &be), 0);
  assert_int_equal(be, SG_READ_POSTGRES);
  sg_lua_rt_free(rt);
  /* a project the deny list keeps out of ClickHouse stays on PostgreSQL (logged as an error) */
  free_list(&cfg.clickhouse_projects_deny);
  cfg.clickhouse_projects_deny = list_of("01934b7e-1234-7000-8000-000000000001", NULL);
  rt = sg_lua_rt_new(&cfg, &err);
  if (!rt) fail_msg("%s", err.data);
  assert_int_equal(sg_lua_route_postgres(rt, PROJECT, &on), SG_ESCRIPT);
  assert_int_equal(on, 1);
  sg_lua_rt_free(rt);
  /* use_clickhouse off: never asked */
  cfg.use_clickhouse = 0;
  rt = sg_lua_rt_new(&cfg, &err);
  assert_int_equal(sg_lua_route_postgres(rt, PROJECT, &on), 0);
  assert_int_equal(on, 1);
  sg_lua_rt_free(rt);
  sg_config_free(&cfg);

  /* a hook of one's own: errors and non-booleans keep PostgreSQL and are asked again; answers are cached */
  clear_dir();
  write_file("routing.lua", "local n = 0\n"
                            "return {postgres = function(p) n = n + 1\n"
                            "  if n == 1 then error('boom') end\n"
                            "  if n == 2 then return 'no' end\n"
                            "  return false end}");
  cfg = cfg_for(tmpdir);
  cfg.use_clickhouse = 1;
  rt = sg_lua_rt_new(&cfg, &err);
  if (!rt) fail_msg("%s", err.data);
  assert_int_equal(sg_lua_route_postgres(rt, PROJECT, &on), SG_ESCRIPT);
  assert_int_equal(on, 1);
  assert_int_equal(sg_lua_route_postgres(rt, PROJECT, &on), SG_ESCRIPT);
  assert_int_equal(on, 1);
  assert_int_equal(sg_lua_route_postgres(rt, PROJECT, &on), 0);
  assert_int_equal(on, 0);
  assert_int_equal(sg_lua_route_postgres(rt, PROJECT, &on), 0); /* cached: the hook would say false again */
  assert_int_equal(on, 0);
  sg_lua_stats_t st;
  sg_lua_rt_stats(rt, &st);
  assert_int_equal(st.errors, 2);
  assert_int_equal(st.calls, 3); /* M.postgres three times; M.clickhouse is not defined (true) */
  sg_lua_rt_free(rt);
  sg_config_free(&cfg);
  sg_buf_free(&err);
}

/* ---- the JSON dumper ------------------------------------------------------------- */

static void test_dump_matches_jansson(void **state) {
  (void)state;
  const char *docs[] = {
      "0", "-0.0", "1e22", "1e-7", "123456789012345678", "5e-324", "1.7976931348623157e308",
      "\"\\b\\f\\n\\r\\t\\u0000\\u001f\\u007f\\\"\\\\/\"", "[[],{},[{}],null,true,false]",
      "{\"\\u00e9\":{\"x\\ny\":[1.5,-2,0.25]}}", "3.0", "100.0", "1e16", "-1.5e-300",
  };
  for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
    json_t *v = json_loads(docs[i], JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    assert_non_null(v);
    char *j = sg_json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    assert_dump(v, 0, j);
    free(j);
    json_decref(v);
  }
  /* random reals and integers */
  srand(42);
  for (int i = 0; i < 20000; i++) {
    uint64_t bits = ((uint64_t)rand() << 42) ^ ((uint64_t)rand() << 21) ^ (uint64_t)rand();
    double d;
    memcpy(&d, &bits, sizeof d);
    if (d != d || d - d != 0) continue;
    json_t *v = json_real(d);
    char *j = sg_json_dumps(v, JSON_ENCODE_ANY);
    assert_dump(v, 0, j);
    free(j);
    /* shortest form reads back the same double */
    char *sh = dump(v, SG_JSON_SHORT_REAL);
    assert_true(strtod(sh, NULL) == d);
    free(sh);
    json_decref(v);
  }
  json_t *r = json_real(0.1);
  assert_dump(r, SG_JSON_SHORT_REAL, "0.1");
  json_decref(r);
  r = json_real(100);
  assert_dump(r, SG_JSON_SHORT_REAL, "100.0");
  json_decref(r);
}

static void nest_case(const char *in, const char *want) {
  json_t *v = json_loads(in, 0, NULL);
  assert_non_null(v);
  assert_dump(v, SG_JSON_NEST, want);
  json_t *n = sg_json_nested(v);
  assert_dump(n, 0, want);
  json_decref(n);
  json_decref(v);
}

static void test_nest_rules(void **state) {
  (void)state;
  nest_case("{\"gen_ai.request.model\":\"m\",\"gen_ai.system\":\"o\",\"x\":1}",
            "{\"gen_ai\":{\"request\":{\"model\":\"m\"},\"system\":\"o\"},\"x\":1}");
  nest_case("{\"ag.node.children.0.name\":\"c1\",\"ag.node.children.1.name\":\"c2\",\"ag.type\":\"tree\"}",
            "{\"ag\":{\"node\":{\"children\":[{\"name\":\"c1\"},{\"name\":\"c2\"}]},\"type\":\"tree\"}}");
  nest_case("{\"a.2\":\"x\",\"a.0\":1}", "{\"a\":[1,null,\"x\"]}");
  nest_case("{\"a.0\":1,\"a.x\":2}", "{\"a\":{\"0\":1,\"x\":2}}");
  nest_case("{\"a.01\":1}", "{\"a\":{\"01\":1}}");
  nest_case("{\"a.99\":1}", "{\"a\":{\"99\":1}}");
  nest_case("{\"a\":1,\"a.b\":2,\"c\":3}", "{\"a\":1,\"c\":3,\"a.b\":2}");
  nest_case("{\"a.b\":2,\"a\":1}", "{\"a\":1,\"a.b\":2}");
  nest_case("{\"a.b\":2,\"a\":{\"c\":3,\"b\":4}}", "{\"a\":{\"c\":3,\"b\":4},\"a.b\":2}");
  nest_case("{\"a.b\":2,\"a\":{\"c\":3}}", "{\"a\":{\"c\":3,\"b\":2}}");
  nest_case("{\"a\":{\"x.y\":1}}", "{\"a\":{\"x.y\":1}}");
  nest_case("{\".a\":1,\"b.\":2,\"c..d\":3,\"0.x\":4}", "{\".a\":1,\"b.\":2,\"c..d\":3,\"0\":{\"x\":4}}");
  nest_case("{\"a.0\":1,\"a.0.b\":2}", "{\"a\":[1],\"a.0.b\":2}");
  nest_case("{}", "{}");
  /* the attributes column with the resource */
  json_t *res = json_loads("{\"service.name\":\"svc\",\"host.name\":\"h\"}", 0, NULL);
  json_t *at = json_loads("{\"a.b\":1}", 0, NULL);
  sg_buf_t ob = SG_BUF_INIT;
  assert_int_equal(sg_json_dump_attributes(at, res, SG_JSON_NEST, &ob), 0);
  assert_string_equal(ob.data, "{\"a\":{\"b\":1},\"resource\":{\"service\":{\"name\":\"svc\"},\"host\":{\"name\":\"h\"}}}");
  sg_buf_reset(&ob);
  assert_int_equal(sg_json_dump_attributes(NULL, res, SG_JSON_NEST, &ob), 0);
  assert_string_equal(ob.data, "{\"resource\":{\"service\":{\"name\":\"svc\"},\"host\":{\"name\":\"h\"}}}");
  sg_buf_reset(&ob);
  assert_int_equal(sg_json_dump_attributes(at, res, 0, &ob), 0);
  assert_string_equal(ob.data, "{\"a.b\":1,\"resource\":{\"service.name\":\"svc\",\"host.name\":\"h\"}}");
  sg_buf_reset(&ob);
  json_object_set_new(at, "resource.x", json_true());
  assert_int_equal(sg_json_dump_attributes(at, res, SG_JSON_NEST, &ob), 0);
  assert_string_equal(ob.data, "{\"a\":{\"b\":1},\"resource\":{\"x\":true}}");
  sg_buf_reset(&ob);
  assert_int_equal(sg_json_dump_attributes(NULL, NULL, SG_JSON_NEST, &ob), 0);
  assert_string_equal(ob.data, "null");
  sg_buf_free(&ob);
  json_decref(at);
  json_decref(res);
  json_t *v = json_loads("{\"gen_ai\":{\"request.model\":\"m\"},\"x.y\":1,\"l\":[{\"k\":2}]}", 0, NULL);
  assert_dump(sg_json_path_get(v, "gen_ai.request.model", 20), 0, "\"m\"");
  assert_dump(sg_json_path_get(v, "x.y", 3), 0, "1");
  assert_dump(sg_json_path_get(v, "l.0.k", 5), 0, "2");
  assert_null(sg_json_path_get(v, "gen_ai.nope", 11));
  json_decref(v);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_missing_scripts_are_defaults),
      cmocka_unit_test(test_load_errors),
      cmocka_unit_test(test_roundtrip_exact),
      cmocka_unit_test(test_modify),
      cmocka_unit_test(test_drop_and_fanout),
      cmocka_unit_test(test_error_isolation),
      cmocka_unit_test(test_budget),
      cmocka_unit_test(test_gw),
      cmocka_unit_test(test_proxy_rules),
      cmocka_unit_test(test_proxy_as_table),
      cmocka_unit_test(test_job_only_functions),
      cmocka_unit_test(test_shipped_transform),
      cmocka_unit_test(test_normalize_builtin_matches_lua),
      cmocka_unit_test(test_normalize_builtin_errors),
      cmocka_unit_test(test_fanout_growth),
      cmocka_unit_test(test_shipped_routing_ttl),
      cmocka_unit_test(test_route_postgres),
      cmocka_unit_test(test_dump_matches_jansson),
      cmocka_unit_test(test_nest_rules),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
