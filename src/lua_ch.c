/* lua_ch.c - gw.ch for jobs: gw.ch.query, gw.ch.insert,
 * gw.ch.insert_spans and gw.ch.span_batch on the job's ClickHouse client
 * (a task yields while libcurl works on the loop). Rows for insert_spans
 * and batches are encoded by lua_rows.c.
 */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ch_insert.h"
#include "err.h"
#include "lua_io_internal.h"

typedef sg_lua_task_t task_t;
typedef sg_lua_enc_stats_t enc_stats_t;

/* ---- requests ------------------------------------------------------------------------ */

enum { CH_TEXT, CH_TSV, CH_INSERT, CH_SPANS, CH_BATCH };

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
  if (!sg__lua_sched_live(&io->sched) || r->status == SG_ECANCELED) {
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
    sg__lua_task_ready(t, 2);
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
  sg__lua_task_ready(t, n);
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
 * the INSERT and body its data, sent as every insert spangate makes
 * (ch_insert.h: synchronous into a Distributed table, never dropped as a
 * repeat of an earlier insert); q->body (the request's own) is sent in
 * place, anything else (a Lua string) is copied by sg_ch_send. A spans
 * insert (insert_spans, a batch) may be sent again to another endpoint
 * after a failure: a second copy of a row is the same version, which the
 * spans table folds. */
static int ch_send(lua_State *L, chreq_t *q, const void *body, size_t len) {
  sg_lua_io_t *io = q->io;
  int rc;
  if (body == NULL) { /* a query travels in the body: URLs have a length limit (HTTP 400) */
    rc = sg_ch_request(io->ch, "", q->sql.data, q->sql.len, 0, ch_cb, q);
  } else {
    sg_ch_insert_t ins;
    unsigned flags = io->ch_flags | (body == q->body.data ? SG_CH_BORROW : 0) |
                     (q->mode == CH_SPANS || q->mode == CH_BATCH ? SG_CH_IDEMPOTENT : 0);
    sg_ch_insert_fresh(&ins, q->sql.data, body, len, flags);
    rc = sg_ch_send(io->ch, &ins.req, ch_cb, q);
  }
  if (rc != 0) {
    lua_pushboolean(L, 0);
    lua_pushfstring(L, "%s: ClickHouse: %s", q->fn, sg_strerror(rc));
    batch_return(q);
    chreq_free(q);
    return 2;
  }
  return sg__lua_task_yield(L, q->t);
}

/* ---- gw.ch.query / gw.ch.insert / gw.ch.insert_spans ------------------------------------ */

/* raw ch_query(sql [, "TSV"]) -> ok, text | rows */
static int l_ch_query(lua_State *L) {
  sg_lua_io_t *io = SG_LUA_IO(L);
  task_t *t = sg__lua_need_task(L, &io->sched, "gw.ch.query");
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
  sg_lua_io_t *io = SG_LUA_IO(L);
  task_t *t = sg__lua_need_task(L, &io->sched, "gw.ch.insert");
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
  sg_lua_io_t *io = SG_LUA_IO(L);
  const char *fn = "gw.ch.insert_spans";
  task_t *t = sg__lua_need_task(L, &io->sched, fn);
  enc_stats_t st;
  sg_buf_t body = SG_BUF_INIT;
  if (sg__lua_rows_add(L, io, fn, 1, &body, &st) != 0) {
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
  sg_lua_io_t *io = SG_LUA_IO(L);
  const char *fn = "batch:add";
  spanbatch_t *b = check_batch(L, 1, fn);
  enc_stats_t st;
  if (sg__lua_rows_add(L, io, fn, 2, &b->body, &st) != 0) return luaL_error(L, "%s: out of memory", fn);
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
  sg_lua_io_t *io = SG_LUA_IO(L);
  const char *fn = "batch:send";
  spanbatch_t *b = check_batch(L, 1, fn);
  task_t *t = sg__lua_need_task(L, &io->sched, fn);
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

/* ---- registration ------------------------------------------------------------------------ */

void sg__lua_ch_register(lua_State *L, sg_lua_io_t *io) {
  static const luaL_Reg fns[] = {
      {"ch_query", l_ch_query}, {"ch_insert", l_ch_insert}, {"ch_insert_spans", l_ch_insert_spans},
      {"ch_span_batch", l_ch_span_batch}, {"batch_add", l_batch_add}, {"batch_rows", l_batch_rows},
      {"batch_bytes", l_batch_bytes}, {"batch_send", l_batch_send}, {NULL, NULL}};
  if (luaL_newmetatable(L, BATCH_MT)) {         /* raw, mt: __index is set by gw_io.lua */
    lua_pushcfunction(L, batch_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setfield(L, -2, "batch_mt");              /* raw */
  sg__lua_io_register(L, io, fns);
}
