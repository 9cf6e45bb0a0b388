/* config.c - gateway.conf (sandboxed Lua), environment overrides, checks. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "ch.h"
#include "ch_version.h"
#include "err.h"
#include "jalloc.h"
#include "log.h"

static const sg_config_key_t keys[] = {
#define XX(type, name, def, env, desc)                                                      \
  {SG_CFG_##type, #name, def, env, desc, offsetof(sg_config_t, name)},
  SG_CONFIG_MAP(XX)
#undef XX
};
#define NKEYS (sizeof keys / sizeof keys[0])

static char env_names[NKEYS][64];

static const char *key_env(size_t i) {
  if (keys[i].env) return keys[i].env;
  if (env_names[i][0] == '\0') {
    char tmp[64];
    int n = snprintf(tmp, sizeof tmp, "SPANGATE_%s", keys[i].name);
    for (int j = 0; j < n && j < (int)sizeof tmp; j++) tmp[j] = (char)toupper((unsigned char)tmp[j]);
    memcpy(env_names[i], tmp, sizeof tmp);
  }
  return env_names[i];
}

const sg_config_key_t *sg_config_keys(size_t *n) {
  static sg_config_key_t resolved[NKEYS];
  for (size_t i = 0; i < NKEYS; i++) {
    resolved[i] = keys[i];
    resolved[i].env = key_env(i);
  }
  *n = NKEYS;
  return resolved;
}

static const sg_config_key_t *find_key(const char *name) {
  for (size_t i = 0; i < NKEYS; i++)
    if (strcmp(keys[i].name, name) == 0) return &keys[i];
  return NULL;
}

static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 63 || lb > 63) return (size_t)-1;
  size_t row[64];
  for (size_t j = 0; j <= lb; j++) row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t cost = tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]) ? 0 : 1;
      size_t best = diag + cost;
      if (row[j] + 1 < best) best = row[j] + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

const char *sg_config_nearest(const char *name) {
  const char *best = NULL;
  size_t bestd = (size_t)-1;
  for (size_t i = 0; i < NKEYS; i++) {
    size_t d = edit_distance(name, keys[i].name);
    if (d < bestd) { bestd = d; best = keys[i].name; }
  }
  /* Also catch a prefix/suffix slip like "spool" for "spool_dir". */
  if (best && bestd <= 3 + strlen(name) / 4) return best;
  for (size_t i = 0; i < NKEYS; i++)
    if (strstr(keys[i].name, name) && strlen(name) >= 4) return keys[i].name;
  return NULL;
}

int sg_parse_size(const char *s, size_t *out) {
  errno = 0;
  char *end;
  double v = strtod(s, &end);
  if (end == s || errno || v < 0) return SG_EINVAL;
  while (*end == ' ') end++;
  double mul = 1;
  if (*end) {
    char unit[8] = {0};
    size_t k = 0;
    for (; end[k] && k < sizeof unit - 1; k++) unit[k] = (char)tolower((unsigned char)end[k]);
    if (end[k]) return SG_EINVAL;
    if (!strcmp(unit, "b")) mul = 1;
    else if (!strcmp(unit, "k") || !strcmp(unit, "kb") || !strcmp(unit, "kib")) mul = 1024.0;
    else if (!strcmp(unit, "m") || !strcmp(unit, "mb") || !strcmp(unit, "mib")) mul = 1048576.0;
    else if (!strcmp(unit, "g") || !strcmp(unit, "gb") || !strcmp(unit, "gib")) mul = 1073741824.0;
    else return SG_EINVAL;
  }
  v *= mul;
  if (v > 9.0e18) return SG_EINVAL;
  *out = (size_t)v;
  return 0;
}

static int parse_bool(const char *s, int *out) {
  static const char *const yes[] = {"1", "true", "yes", "on"};
  static const char *const no[] = {"0", "false", "no", "off", ""};
  for (size_t i = 0; i < 4; i++)
    if (strcasecmp(s, yes[i]) == 0) { *out = 1; return 0; }
  for (size_t i = 0; i < 5; i++)
    if (strcasecmp(s, no[i]) == 0) { *out = 0; return 0; }
  return SG_EINVAL;
}

static void list_free(sg_strlist_t *l) {
  for (size_t i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

static int list_push(sg_strlist_t *l, const char *s, size_t n) {
  char **v = realloc(l->v, (l->n + 1) * sizeof *v);
  if (!v) return SG_ENOMEM;
  l->v = v;
  if (!(v[l->n] = strndup(s, n))) return SG_ENOMEM;
  l->n++;
  return 0;
}

/* Set a key from its text form (defaults and environment variables).
 * Lists are comma-separated. 0, SG_EINVAL or SG_ENOMEM. */
static int set_from_text(sg_config_t *cfg, const sg_config_key_t *k, const char *text) {
  void *field = (char *)cfg + k->offset;
  switch (k->type) {
  case SG_CFG_STR: {
    char *dup = strdup(text);
    if (!dup) return SG_ENOMEM;
    free(*(char **)field);
    *(char **)field = dup;
    return 0;
  }
  case SG_CFG_INT: {
    errno = 0;
    char *end;
    long long v = strtoll(text, &end, 10);
    if (end == text || *end || errno) return SG_EINVAL;
    *(long long *)field = v;
    return 0;
  }
  case SG_CFG_BOOL: return parse_bool(text, (int *)field);
  case SG_CFG_SIZE: return sg_parse_size(text, (size_t *)field);
  case SG_CFG_TABLE: {
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
    int ok = v && (json_is_object(v) || json_is_array(v));
    json_decref(v);
    if (!ok) return SG_EINVAL;
    char *dup = strdup(text);
    if (!dup) return SG_ENOMEM;
    free(*(char **)field);
    *(char **)field = dup;
    return 0;
  }
  case SG_CFG_LIST: {
    sg_strlist_t *l = field;
    list_free(l);
    const char *p = text;
    while (*p) {
      const char *comma = strchr(p, ',');
      size_t n = comma ? (size_t)(comma - p) : strlen(p);
      const char *s = p;
      while (n && isspace((unsigned char)*s)) { s++; n--; }
      while (n && isspace((unsigned char)s[n - 1])) n--;
      if (n && list_push(l, s, n) != 0) return SG_ENOMEM;
      if (!comma) break;
      p = comma + 1;
    }
    return 0;
  }
  }
  return SG_EINVAL;
}

static const char *type_name(sg_cfg_type_t t) {
  switch (t) {
  case SG_CFG_STR: return "string";
  case SG_CFG_INT: return "integer";
  case SG_CFG_BOOL: return "boolean";
  case SG_CFG_SIZE: return "size";
  case SG_CFG_LIST: return "list of strings";
  case SG_CFG_TABLE: return "table";
  }
  return "?";
}

int sg_config_defaults(sg_config_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
  for (size_t i = 0; i < NKEYS; i++) {
    int rc = set_from_text(cfg, &keys[i], keys[i].def);
    if (rc != 0) return rc;
  }
  return 0;
}

void sg_config_free(sg_config_t *cfg) {
  for (size_t i = 0; i < NKEYS; i++) {
    void *field = (char *)cfg + keys[i].offset;
    if (keys[i].type == SG_CFG_STR || keys[i].type == SG_CFG_TABLE) {
      free(*(char **)field);
      *(char **)field = NULL;
    } else if (keys[i].type == SG_CFG_LIST) {
      list_free(field);
    }
  }
}

/* ---- the gateway.conf sandbox ------------------------------------------
 * The chunk runs with an environment table of its own and no libraries at
 * all. Assignments go through __newindex, which checks the key and the type
 * at the line that assigns, so errors carry the file and line. */

/* The Lua value at idx as JSON (tables with keys 1..n become arrays). NULL
 * when it holds something JSON cannot say (functions, cycles, odd keys). */
static json_t *lua_to_json(lua_State *L, int idx, int depth) {
  if (depth > 32) return NULL;
  switch (lua_type(L, idx)) {
  case LUA_TBOOLEAN: return json_boolean(lua_toboolean(L, idx));
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    return json_stringn(s, n);
  }
  case LUA_TNUMBER: {
    lua_Number v = lua_tonumber(L, idx);
    if (v == (lua_Number)(json_int_t)v) return json_integer((json_int_t)v);
    return json_real(v);
  }
  case LUA_TTABLE: {
    size_t n = lua_objlen(L, idx);
    json_t *out = n ? json_array() : json_object();
    if (idx < 0) idx = lua_gettop(L) + idx + 1;
    lua_pushnil(L); /* ... nil */
    while (lua_next(L, idx) != 0) { /* ... key value */
      json_t *v = lua_to_json(L, -1, depth + 1);
      int ok = v != NULL;
      if (ok && n) {
        ok = lua_type(L, -2) == LUA_TNUMBER && json_array_append_new(out, v) == 0;
      } else if (ok) {
        ok = lua_type(L, -2) == LUA_TSTRING && json_object_set_new(out, lua_tostring(L, -2), v) == 0;
      }
      lua_pop(L, 1); /* ... key */
      if (!ok) {
        lua_pop(L, 1);
        json_decref(out);
        return NULL;
      }
    }
    return out;
  }
  default: return NULL;
  }
}

static int conf_newindex(lua_State *L) {
  /* stack: env, key, value */
  sg_config_t *cfg = lua_touserdata(L, lua_upvalueindex(1));
  if (lua_type(L, 2) != LUA_TSTRING) return luaL_error(L, "configuration keys are names");
  const char *name = lua_tostring(L, 2);
  const sg_config_key_t *k = find_key(name);
  luaL_where(L, 2); /* env key value where */
  const char *where = lua_tostring(L, -1);
  if (k == NULL) {
    const char *near = sg_config_nearest(name);
    if (near) return luaL_error(L, "%sunknown key '%s' (did you mean '%s'?)", where, name, near);
    return luaL_error(L, "%sunknown key '%s'", where, name);
  }
  void *field = (char *)cfg + k->offset;
  int vt = lua_type(L, 3);
  int ok = 0;
  switch (k->type) {
  case SG_CFG_STR:
    if (vt == LUA_TSTRING) ok = set_from_text(cfg, k, lua_tostring(L, 3)) == 0;
    break;
  case SG_CFG_INT:
    if (vt == LUA_TNUMBER) {
      lua_Number v = lua_tonumber(L, 3);
      if (v == (lua_Number)(long long)v) { *(long long *)field = (long long)v; ok = 1; }
    }
    break;
  case SG_CFG_BOOL:
    if (vt == LUA_TBOOLEAN) { *(int *)field = lua_toboolean(L, 3); ok = 1; }
    break;
  case SG_CFG_SIZE:
    if (vt == LUA_TNUMBER && lua_tonumber(L, 3) >= 0) {
      *(size_t *)field = (size_t)lua_tonumber(L, 3);
      ok = 1;
    } else if (vt == LUA_TSTRING) {
      ok = sg_parse_size(lua_tostring(L, 3), field) == 0;
    }
    break;
  case SG_CFG_TABLE:
    if (vt == LUA_TTABLE) {
      json_t *j = lua_to_json(L, 3, 0);
      char *text = j ? sg_json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
      json_decref(j);
      if (text) {
        free(*(char **)field);
        *(char **)field = text;
        ok = 1;
      }
    }
    break;
  case SG_CFG_LIST:
    if (vt == LUA_TTABLE) {
      sg_strlist_t *l = field;
      list_free(l);
      ok = 1;
      for (int i = 1;; i++) {
        lua_rawgeti(L, 3, i); /* env key value where item */
        if (lua_isnil(L, -1)) { lua_pop(L, 1); break; }
        size_t n;
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
        if (s == NULL || list_push(l, s, n) != 0) ok = 0;
        lua_pop(L, 1); /* env key value where */
        if (!ok) break;
      }
    }
    break;
  }
  if (!ok)
    return luaL_error(L, "%s'%s' must be a %s%s", where, name, type_name(k->type),
                      k->type == SG_CFG_SIZE ? " (bytes, or a string like \"10MiB\")" : "");
  lua_pushvalue(L, 2); /* env key value where key */
  lua_pushvalue(L, 3); /* env key value where key value */
  lua_rawset(L, lua_upvalueindex(2)); /* assigned values, readable by later lines */
  return 0;
}

static int conf_index(lua_State *L) {
  /* stack: env, key */
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1)); /* env key value */
  return 1;
}

static void conf_budget_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  luaL_error(L, "configuration takes too long to evaluate (a loop?)");
}

static int load_file(sg_config_t *cfg, const char *path, sg_buf_t *err) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    sg_buf_printf(err, "%s: %s", path, strerror(errno));
    return SG_ECONFIG;
  }
  sg_buf_t text = SG_BUF_INIT;
  char chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) sg_buf_append(&text, chunk, n);
  fclose(f);

  lua_State *L = luaL_newstate(); /* no libraries: no os, io, require, load */
  if (!L) { sg_buf_free(&text); return SG_ENOMEM; }
  int rc = 0;
  const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
  char chunkname[256];
  snprintf(chunkname, sizeof chunkname, "@%s", name);
  if (luaL_loadbuffer(L, text.data ? text.data : "", text.len, chunkname) != 0) {
    sg_buf_printf(err, "%s", lua_tostring(L, -1));
    rc = SG_ECONFIG;
    goto done;
  }
  /* stack: chunk */
  lua_newtable(L);                       /* chunk env */
  lua_newtable(L);                       /* chunk env meta */
  lua_newtable(L);                       /* chunk env meta values */
  lua_pushlightuserdata(L, cfg);         /* chunk env meta values cfg */
  lua_pushvalue(L, -2);                  /* chunk env meta values cfg values */
  lua_pushcclosure(L, conf_newindex, 2); /* chunk env meta values newindex */
  lua_setfield(L, -3, "__newindex");     /* chunk env meta values */
  lua_pushcclosure(L, conf_index, 1);    /* chunk env meta index */
  lua_setfield(L, -2, "__index");        /* chunk env meta */
  lua_setmetatable(L, -2);               /* chunk env */
  lua_setfenv(L, -2);                    /* chunk */
  lua_sethook(L, conf_budget_hook, LUA_MASKCOUNT, 10 * 1000 * 1000);
  if (lua_pcall(L, 0, 0, 0) != 0) {
    const char *msg = lua_tostring(L, -1);
    sg_buf_printf(err, "%s", msg ? msg : "error evaluating configuration");
    rc = SG_ECONFIG;
  }
done:
  lua_close(L);
  sg_buf_free(&text);
  return rc;
}

/* A replication slot name (and, by the same rule, our publication name):
 * lower-case letters, digits and underscores, as PostgreSQL requires of
 * slots; safe to put in statements unquoted. */
static int pg_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n < 1 || n > 63) return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return 0;
  return 1;
}

/* Endpoints and TLS: every mistake named at start, none found by the
 * flusher at 3 a.m. */
static int check_clickhouse(const sg_config_t *cfg, sg_buf_t *err) {
  const char *h = cfg->clickhouse_host;
  if (strstr(h, "://") || strchr(h, '@') || strchr(h, '/')) {
    sg_buf_printf(err, "clickhouse_host '%s' is a host name, not a URL: credentials go in "
                       "clickhouse_user/clickhouse_password, https is clickhouse_secure = true",
                  strchr(h, '@') ? "(hidden: it holds '@')" : h);
    return SG_ECONFIG;
  }
  for (const char *p = h; *p; p++)
    if ((unsigned char)*p <= ' ' || *p == '"' || *p == '\'' || *p == '\\') {
      sg_buf_printf(err, "clickhouse_host '%s': unexpected character", h);
      return SG_ECONFIG;
    }
  if (cfg->clickhouse_hosts.n > SG_CH_MAX_ENDPOINTS) {
    sg_buf_printf(err, "clickhouse_hosts lists %zu endpoints; at most %d", cfg->clickhouse_hosts.n,
                  SG_CH_MAX_ENDPOINTS);
    return SG_ECONFIG;
  }
  int any_tls = cfg->clickhouse_hosts.n == 0 && cfg->clickhouse_secure;
  for (size_t i = 0; i < cfg->clickhouse_hosts.n; i++) {
    char host[256];
    int port, tls;
    sg_buf_t why = SG_BUF_INIT;
    const char *text = cfg->clickhouse_hosts.v[i];
    if (sg_ch_endpoint_parse(text, cfg->clickhouse_secure, host, sizeof host, &port, &tls, &why) != 0) {
      sg_buf_printf(err, "clickhouse_hosts[%zu]: %s%s", i + 1, why.data ? why.data : "invalid",
                    strchr(text, '@') ? " (clickhouse_user, clickhouse_password)" : "");
      sg_buf_free(&why);
      return SG_ECONFIG;
    }
    if (port == 9000 || port == 9440) {
      sg_buf_printf(err, "clickhouse_hosts[%zu] '%s': port %d is ClickHouse's native TCP port; "
                         "spangate speaks the HTTP interface (8123, https 8443)", i + 1, text, port);
      return SG_ECONFIG;
    }
    any_tls |= tls;
  }
  const struct { const char *key, *path; } files[] = {
      {"clickhouse_ca_file", cfg->clickhouse_ca_file},
      {"clickhouse_cert_file", cfg->clickhouse_cert_file},
      {"clickhouse_key_file", cfg->clickhouse_key_file},
  };
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    if (files[i].path[0] == '\0') continue;
    if (access(files[i].path, R_OK) != 0) {
      sg_buf_printf(err, "%s '%s': %s", files[i].key, files[i].path, strerror(errno));
      return SG_ECONFIG;
    }
    if (!any_tls) {
      sg_buf_printf(err, "%s is set but no ClickHouse endpoint uses https (clickhouse_secure = "
                         "true, or \"https://host:port\" in clickhouse_hosts)", files[i].key);
      return SG_ECONFIG;
    }
  }
  if (cfg->clickhouse_key_file[0] && !cfg->clickhouse_cert_file[0]) {
    sg_buf_puts(err, "clickhouse_key_file is set without clickhouse_cert_file");
    return SG_ECONFIG;
  }
  return 0;
}

static int check(const sg_config_t *cfg, sg_buf_t *err) {
  if (cfg->clickhouse_port == 9000) {
    sg_buf_puts(err, "CLICKHOUSE_PORT/clickhouse_port is 9000, ClickHouse's native TCP port; "
                     "spangate speaks ClickHouse's HTTP interface (default port 8123)");
    return SG_ECONFIG;
  }
  if (cfg->clickhouse_port < 1 || cfg->clickhouse_port > 65535) {
    sg_buf_printf(err, "clickhouse_port must be 1..65535, not %lld", cfg->clickhouse_port);
    return SG_ECONFIG;
  }
  if (check_clickhouse(cfg, err) != 0) return SG_ECONFIG;
  if (sg_log_level_parse(cfg->log_level) < 0) {
    sg_buf_printf(err, "log_level must be debug, info, warn or error, not '%s'", cfg->log_level);
    return SG_ECONFIG;
  }
  if (strcmp(cfg->log_format, "text") && strcmp(cfg->log_format, "json")) {
    sg_buf_printf(err, "log_format must be text or json, not '%s'", cfg->log_format);
    return SG_ECONFIG;
  }
  if (strcmp(cfg->auth, "keys") && strcmp(cfg->auth, "agenta") && strcmp(cfg->auth, "none")) {
    sg_buf_printf(err, "auth must be keys, agenta or none, not '%s'", cfg->auth);
    return SG_ECONFIG;
  }
  if (!strcmp(cfg->auth, "none") && cfg->project_id[0] == '\0') {
    sg_buf_puts(err, "auth = \"none\" needs project_id (the one project it writes to)");
    return SG_ECONFIG;
  }
  if (cfg->workers < 0 || cfg->workers > 256) {
    sg_buf_printf(err, "workers must be 0..256, not %lld", cfg->workers);
    return SG_ECONFIG;
  }
  if (cfg->pg_pool_size < 1 || cfg->pg_pool_size > 64) {
    sg_buf_printf(err, "pg_pool_size must be 1..64, not %lld", cfg->pg_pool_size);
    return SG_ECONFIG;
  }
  if (cfg->pg_spare_connections < 0 || cfg->pg_spare_connections > 64) {
    sg_buf_printf(err, "pg_spare_connections must be 0..64, not %lld", cfg->pg_spare_connections);
    return SG_ECONFIG;
  }
  if (cfg->pg_spare_after_ms < 1 || cfg->pg_spare_after_ms > 60000) {
    sg_buf_printf(err, "pg_spare_after_ms must be 1..60000, not %lld", cfg->pg_spare_after_ms);
    return SG_ECONFIG;
  }
  if (cfg->read_pool_size < 1 || cfg->read_pool_size > 64) {
    sg_buf_printf(err, "read_pool_size must be 1..64, not %lld", cfg->read_pool_size);
    return SG_ECONFIG;
  }
  if (cfg->query_timeout_ms < 0 || cfg->query_timeout_ms > 2147483647) {
    sg_buf_printf(err, "query_timeout_ms must be 0 (no limit) or a positive number of ms, not %lld",
                  cfg->query_timeout_ms);
    return SG_ECONFIG;
  }
  if (cfg->commit_window_ms < 0 || cfg->commit_max_spans < 1) {
    sg_buf_puts(err, "commit_window_ms must be >= 0 and commit_max_spans >= 1");
    return SG_ECONFIG;
  }
  if (cfg->grpc_listen[0]) {
    /* Two SO_REUSEPORT listeners on one port would share its connections. */
    const char *hp = strrchr(cfg->listen, ':'), *gp = strrchr(cfg->grpc_listen, ':');
    if (hp && gp && !strcmp(hp, gp)) {
      sg_buf_printf(err, "grpc_listen (%s) must not use the port of listen (%s)", cfg->grpc_listen,
                    cfg->listen);
      return SG_ECONFIG;
    }
  }
  if (cfg->grpc_max_streams < 1 || cfg->grpc_max_streams > 10000) {
    sg_buf_printf(err, "grpc_max_streams must be 1..10000, not %lld", cfg->grpc_max_streams);
    return SG_ECONFIG;
  }
  if (cfg->read_timeout_ms < 1 || cfg->idle_timeout_ms < 1 || cfg->shutdown_timeout_ms < 0) {
    sg_buf_puts(err, "read_timeout_ms and idle_timeout_ms must be positive");
    return SG_ECONFIG;
  }
  if (strcmp(cfg->clickhouse_gzip, "auto") && strcmp(cfg->clickhouse_gzip, "always") &&
      strcmp(cfg->clickhouse_gzip, "never")) {
    sg_buf_printf(err, "clickhouse_gzip must be auto, always or never, not '%s'", cfg->clickhouse_gzip);
    return SG_ECONFIG;
  }
  if (strcmp(cfg->spool_fsync, "always") && strcmp(cfg->spool_fsync, "batch") &&
      strcmp(cfg->spool_fsync, "never")) {
    sg_buf_printf(err, "spool_fsync must be always, batch or never, not '%s'", cfg->spool_fsync);
    return SG_ECONFIG;
  }
  if (cfg->flush_interval_ms < 10 || cfg->capture_flush_interval_ms < 10 ||
      cfg->clickhouse_timeout_ms < 100) {
    sg_buf_puts(err, "flush_interval_ms and capture_flush_interval_ms must be >= 10, "
                     "clickhouse_timeout_ms >= 100");
    return SG_ECONFIG;
  }
  if (cfg->clickhouse_only_read_wait_ms < 0 || cfg->clickhouse_only_read_wait_ms > 600000) {
    sg_buf_printf(err, "clickhouse_only_read_wait_ms must be 0..600000, not %lld", cfg->clickhouse_only_read_wait_ms);
    return SG_ECONFIG;
  }
  if (strcmp(cfg->clickhouse_writes, "spool") && strcmp(cfg->clickhouse_writes, "capture")) {
    sg_buf_printf(err, "clickhouse_writes must be spool or capture, not '%s'", cfg->clickhouse_writes);
    return SG_ECONFIG;
  }
  if (!strcmp(cfg->clickhouse_writes, "capture") && !cfg->use_clickhouse) {
    sg_buf_puts(err, "clickhouse_writes = \"capture\" writes to ClickHouse: it needs use_clickhouse = true");
    return SG_ECONFIG;
  }
  if (!pg_name_ok(cfg->capture_slot) || !pg_name_ok(cfg->capture_publication)) {
    sg_buf_printf(err, "capture_slot and capture_publication must be 1..63 characters of a-z, 0-9 and _ "
                       "(PostgreSQL's rule for slot names), not '%s' / '%s'",
                  cfg->capture_slot, cfg->capture_publication);
    return SG_ECONFIG;
  }
  if (strcmp(cfg->on_script_error, "pass") && strcmp(cfg->on_script_error, "reject")) {
    sg_buf_printf(err, "on_script_error must be pass or reject, not '%s'", cfg->on_script_error);
    return SG_ECONFIG;
  }
  if (strcmp(cfg->read_backend, "postgres") && strcmp(cfg->read_backend, "clickhouse")) {
    sg_buf_printf(err, "read_backend must be postgres or clickhouse, not '%s'", cfg->read_backend);
    return SG_ECONFIG;
  }
  if (cfg->clickhouse_version[0]) {
    sg_ch_version_t v;
    if (sg_ch_version_parse(cfg->clickhouse_version, &v) != 0) {
      sg_buf_printf(err, "clickhouse_version must be a ClickHouse version like 24.8, not '%s'",
                    cfg->clickhouse_version);
      return SG_ECONFIG;
    }
  }
  if (cfg->clickhouse_cluster[0] && !strstr(cfg->clickhouse_zk_path, "{table}")) {
    sg_buf_printf(err, "clickhouse_zk_path must contain {table} (each replicated table needs its own "
                       "path), not '%s'", cfg->clickhouse_zk_path);
    return SG_ECONFIG;
  }
  if (cfg->clickhouse_rollout_percent < 0 || cfg->clickhouse_rollout_percent > 100) {
    sg_buf_printf(err, "clickhouse_rollout_percent must be 0..100, not %lld",
                  cfg->clickhouse_rollout_percent);
    return SG_ECONFIG;
  }
  if (cfg->ttl_sweep_interval_s < 1) {
    sg_buf_puts(err, "ttl_sweep_interval_s must be >= 1");
    return SG_ECONFIG;
  }
  if (cfg->retention_days < 0) {
    sg_buf_puts(err, "retention_days must be >= 0 (0 keeps spans forever)");
    return SG_ECONFIG;
  }
  if (cfg->max_body_bytes < 1024 || cfg->max_decompressed_bytes < cfg->max_body_bytes) {
    sg_buf_puts(err, "max_body_bytes must be >= 1KiB and max_decompressed_bytes >= max_body_bytes");
    return SG_ECONFIG;
  }
  return 0;
}

int sg_config_load(sg_config_t *cfg, const char *path, sg_buf_t *err) {
  int rc = sg_config_defaults(cfg);
  if (rc != 0) return rc;
  if (path && (rc = load_file(cfg, path, err)) != 0) return rc;
  for (size_t i = 0; i < NKEYS; i++) {
    const char *v = getenv(key_env(i));
    if (v == NULL) continue;
    rc = set_from_text(cfg, &keys[i], v);
    if (rc == SG_ENOMEM) return rc;
    if (rc != 0) {
      sg_buf_printf(err, "environment %s='%s': expected a %s", key_env(i), v,
                    type_name(keys[i].type));
      return SG_ECONFIG;
    }
  }
  return check(cfg, err);
}

int sg_config_help(sg_buf_t *out) {
  for (size_t i = 0; i < NKEYS; i++) {
    sg_buf_printf(out, "  %-24s %s\n  %-24s default %s%s%s%s, env %s\n", keys[i].name,
                  keys[i].desc, "", keys[i].type == SG_CFG_STR ? "\"" : "", keys[i].def,
                  keys[i].type == SG_CFG_STR ? "\"" : "",
                  keys[i].type == SG_CFG_LIST ? " (comma-separated in the environment)" : "",
                  key_env(i));
  }
  return 0;
}

int sg_config_markdown(sg_buf_t *out) {
  sg_buf_puts(out, "| key | type | default | environment | meaning |\n"
                   "| --- | --- | --- | --- | --- |\n");
  for (size_t i = 0; i < NKEYS; i++) {
    sg_buf_printf(out, "| `%s` | %s | `%s%s%s` | `%s` | ", keys[i].name, type_name(keys[i].type),
                  keys[i].type == SG_CFG_STR ? "\"" : "", keys[i].def,
                  keys[i].type == SG_CFG_STR ? "\"" : "", key_env(i));
    for (const char *p = keys[i].desc; *p; p++) {
      if (*p == '|') sg_buf_puts(out, "\\|");
      else sg_buf_putc(out, *p);
    }
    sg_buf_puts(out, " |\n");
  }
  return 0;
}

/* gzip costs the gateway more CPU than any other step of a request (level 1
 * still reads every byte twice, and ClickHouse pays to inflate it); it pays
 * off only when bandwidth to the server is scarce, so auto leaves loopback
 * uncompressed. */
static int is_loopback(const char *h) {
  return !strcmp(h, "127.0.0.1") || !strcmp(h, "localhost") || !strcmp(h, "::1");
}

int sg_config_clickhouse_gzip(const sg_config_t *cfg) {
  const char *h = cfg->clickhouse_host, *m = cfg->clickhouse_gzip;
  if (!strcmp(m, "always")) return 1;
  if (!strcmp(m, "never")) return 0;
  if (cfg->clickhouse_hosts.n == 0) return !(h == NULL || is_loopback(h));
  for (size_t i = 0; i < cfg->clickhouse_hosts.n; i++) {
    char host[256];
    int port, tls;
    if (sg_ch_endpoint_parse(cfg->clickhouse_hosts.v[i], 0, host, sizeof host, &port, &tls, NULL) != 0 ||
        !is_loopback(host))
      return 1;
  }
  return 0;
}

void sg_config_clickhouse_opts(const sg_config_t *cfg, const char *database, long timeout_ms,
                               long max_connections, struct sg_ch_opts_s *o) {
  memset(o, 0, sizeof *o);
  o->host = cfg->clickhouse_host;
  o->port = (int)cfg->clickhouse_port;
  o->user = cfg->clickhouse_user;
  o->password = cfg->clickhouse_password;
  o->database = database;
  o->timeout_ms = timeout_ms;
  o->max_connections = max_connections;
  o->hosts = (const char *const *)cfg->clickhouse_hosts.v;
  o->nhosts = cfg->clickhouse_hosts.n;
  o->secure = cfg->clickhouse_secure;
  o->no_verify = !cfg->clickhouse_verify;
  o->ca_file = cfg->clickhouse_ca_file;
  o->cert_file = cfg->clickhouse_cert_file;
  o->key_file = cfg->clickhouse_key_file;
}

const char *sg_config_clickhouse_where(const sg_config_t *cfg, char *buf, size_t cap) {
  if (cap == 0) return "";
  if (cfg->clickhouse_hosts.n == 0) {
    snprintf(buf, cap, "%s%s:%lld", cfg->clickhouse_secure ? "https://" : "", cfg->clickhouse_host,
             cfg->clickhouse_port);
    return buf;
  }
  size_t used = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < cfg->clickhouse_hosts.n && used < cap; i++) {
    int n = snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", cfg->clickhouse_hosts.v[i]);
    if (n < 0) break;
    used += (size_t)n;
  }
  return buf;
}
