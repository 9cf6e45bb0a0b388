/* lua_rows.c - rows of PostgreSQL's spans table as ClickHouse rows, for
 * gw.ch.insert_spans and batch:add (docs/jobs.md, "Writing jobs", "Rows").
 *
 * Two sources, one result (ClickHouse equals PostgreSQL as values):
 *   a gw.pg.query_raw result: PostgreSQL's text values go straight into
 *     sg_ch_row_encode_text (the text twin of the spool writer's encoder:
 *     same columns and checks, JSON made compact in one validating pass
 *     instead of a jansson parse + dump);
 *   a Lua list of row tables: each row -> sg_span_t -> sg_ch_row_encode.
 * ttl.lua gives expires_at either way; for the first source the span it
 * sees has its JSON columns parsed only if the hook reads them.
 */
#include <errno.h>
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
typedef sg_lua_enc_stats_t enc_stats_t;

/* ---- a row (raw result or Lua table) -> sg_span_t ----------------------------------- */

/* The columns gw.ch.insert_spans reads, by name (docs/jobs.md, "Writing jobs"). */
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
 * The migration's path (docs/jobs.md, "Writing jobs", "Rows"): PostgreSQL's text values go
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
    exp = sg_span_expires_us(t.created_at_us, days);
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

/* ---- gw.ch.insert_spans / batch:add ------------------------------------------------------ */

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
  if (lua_type(L, ridx) == LUA_TUSERDATA && luaL_checkudata(L, ridx, SG_LUA_PGRES_MT)) {
    src->raw = lua_touserdata(L, ridx);
    if (src->raw->freed)
      luaL_error(L, "%s: bad argument #2 (result was freed: r:free() was called before)", fn);
    for (int c = 0; c < C_COUNT; c++) src->col[c] = sg__lua_pgres_col(src->raw, span_col_names[c]);
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
      int64_t exp = sg_span_expires_us(s.created_at_us, days);
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

int sg__lua_rows_add(lua_State *L, sg_lua_io_t *io, const char *fn, int pidx, sg_buf_t *body,
                     enc_stats_t *st) {
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
