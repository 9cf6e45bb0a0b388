/* lua_agenta.c - gw.agenta.normalize: Agenta's normalisation of one span,
 * in C: the default transform.lua's steps 1-4 (the comments there are the
 * specification; M.normalize in that file is the same steps in Lua, and
 * test_lua.c checks that both give the same rows). It costs a few jansson
 * look-ups instead of a dozen metamethod calls and interpreted Lua, and
 * runs no Lua at all, so sg_lua_transform calls it directly when it is the
 * transform hook (M.span = gw.agenta.normalize). Changes go through the same undo log and snapshot
 * as assignments from Lua, so a failure (only ENOMEM, or attributes that
 * are not an object) leaves the span as it came once rolled back.
 * Two differences from the Lua version, both towards exactness: a value
 * copied from session.id / user.id keeps its JSON form (1.0 stays a real),
 * and an id given as a real is formatted from the double directly.
 * The span proxy and the undo log are lua_span.c's.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "lua_internal.h"

enum { K_TRACE, K_TREE, K_SPAN, K_NODE, K_OIKIND, K_SID, K_OISID, K_UID, K_OIUID, K_AGID, K_GAID,
       K_RESOURCE, K_COUNT };

typedef struct {
  const char *s;
  size_t n;
  int v;
} nlabel_t;
#define NL(s, v) {s, sizeof s - 1, v}

static const nlabel_t norm_keys[K_COUNT] = {
    NL("ag.type.trace", 0), NL("ag.type.tree", 0), NL("ag.type.span", 0), NL("ag.type.node", 0),
    NL("openinference.span.kind", 0), NL("ag.session.id", 0), NL("session.id", 0),
    NL("ag.user.id", 0), NL("user.id", 0), NL("ag.agent.id", 0), NL("gen_ai.agent.id", 0),
    NL("resource", 0),
};

/* Lower-case labels: the attribute values, and what ag.type.* are matched
 * against (without ASCII case, as Lua's map[v] or map[v:lower()]). */
static const nlabel_t trace_types[] = {
#define XX(n) NL(#n, SG_TRACE_##n),
    SG_TRACE_TYPE_MAP(XX)
#undef XX
};
static const nlabel_t span_types[] = {
#define XX(n) NL(#n, SG_SPAN_TYPE_##n),
    SG_SPAN_TYPE_MAP(XX)
#undef XX
};
/* OpenInference's span kinds as Agenta's adapter maps them (exact case). */
static const nlabel_t oi_kinds[] = {
    NL("CHAIN", SG_SPAN_TYPE_CHAIN), NL("RETRIEVER", SG_SPAN_TYPE_QUERY),
    NL("RERANKER", SG_SPAN_TYPE_RERANK), NL("LLM", SG_SPAN_TYPE_CHAT),
    NL("EMBEDDING", SG_SPAN_TYPE_EMBEDDING), NL("AGENT", SG_SPAN_TYPE_AGENT),
    NL("TOOL", SG_SPAN_TYPE_TOOL), NL("GUARDRAIL", SG_SPAN_TYPE_TASK),
    NL("EVALUATOR", SG_SPAN_TYPE_TASK),
};
#undef NL

static json_t *attr(const json_t *a, int k) { return json_object_getn(a, norm_keys[k].s, norm_keys[k].n); }

static int upper(int c) { return c >= 'a' && c <= 'z' ? c - 32 : c; }

/* The enum of v (a JSON string) among labels (upper case), ignoring ASCII
 * case when ci; -1 when v is not one. */
static int match_label(const nlabel_t *l, size_t nl, const json_t *v, int ci) {
  if (!json_is_string(v)) return -1;
  const char *s = json_string_value(v);
  size_t n = json_string_length(v);
  for (size_t i = 0; i < nl; i++) {
    if (l[i].n != n) continue;
    size_t j = 0;
    if (ci) while (j < n && l[i].s[j] == upper((unsigned char)s[j])) j++;
    else while (j < n && l[i].s[j] == s[j]) j++;
    if (j == n) return l[i].v;
  }
  return -1;
}

/* An id attribute as column text (transform.lua's id_text): a non-empty
 * string as it is, an integer in decimal, a real in decimal when it is
 * integral and below 2^63, else as Lua's tostring ("%.14g"); NULL for
 * anything else. The text is in buf or points into v. */
static const char *id_text(const json_t *v, char buf[32], size_t *n) {
  if (json_is_string(v)) {
    *n = json_string_length(v);
    return *n ? json_string_value(v) : NULL;
  }
  if (json_is_integer(v)) {
    *n = (size_t)snprintf(buf, 32, "%lld", (long long)json_integer_value(v));
    return buf;
  }
  if (json_is_real(v)) {
    double d = json_real_value(v);
    if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0)
      *n = (size_t)snprintf(buf, 32, "%lld", (long long)d);
    else *n = (size_t)snprintf(buf, 32, "%.14g", d);
    return buf;
  }
  return NULL;
}

/* The string column at offset off of a span (session_id, ...). */
static char **str_at(sg_span_t *s, size_t off) { return (char **)((char *)s + off); }

/* The column at offset off = the id text of v, if v has one (the rules of
 * span.<column> = string: invalid UTF-8 and NUL become U+FFFD). */
static int norm_str_field(sg_lua_slot_t *slot, size_t off, const json_t *v) {
  char buf[32];
  size_t n;
  const char *t = id_text(v, buf, &n);
  if (t == NULL) return 0;
  char **sf = str_at(slot->s, off), **of = str_at(&slot->orig, off);
  if (*sf && strlen(*sf) == n && memcmp(*sf, t, n) == 0) return 0; /* unchanged */
  char *nv = sg_utf8_sanitize(t, n, NULL);
  if (nv == NULL) return SG_ENOMEM;
  if (*sf != *of) free(*sf);
  *sf = nv;
  return 0;
}

/* attributes[k] = v (a new reference, NULL meaning ENOMEM; cur: its value
 * now), undo-logged unless the object is new in this call. */
static int norm_set(sg_lua_rt_t *rt, json_t *a, int fresh, int k, json_t *cur, json_t *v) {
  if (v == NULL) return SG_ENOMEM;
  if (!fresh && sg__lua_undo_obj_set(rt, a, norm_keys[k].s, norm_keys[k].n, cur)) {
    json_decref(v);
    return SG_ENOMEM;
  }
  return json_object_setn_new_nocheck(a, norm_keys[k].s, norm_keys[k].n, v) ? SG_ENOMEM : 0;
}

/* attributes[k] = the lower-case form of label l, unless cur is that already. */
static int norm_set_label(sg_lua_rt_t *rt, json_t *a, int fresh, int k, json_t *cur, const nlabel_t *l) {
  char low[16];
  for (size_t i = 0; i < l->n; i++) low[i] = (char)(l->s[i] >= 'A' && l->s[i] <= 'Z' ? l->s[i] + 32 : l->s[i]);
  if (json_is_string(cur) && json_string_length(cur) == l->n && memcmp(json_string_value(cur), low, l->n) == 0)
    return 0;
  return norm_set(rt, a, fresh, k, cur, json_stringn_nocheck(low, l->n));
}

/* ag.<x>.id, else OpenInference's <x>.id copied to the ag key: the column. */
static int norm_id(sg_lua_rt_t *rt, sg_lua_slot_t *slot, json_t *a, int fresh, int k, int k_oi,
                   size_t off) {
  json_t *v = attr(a, k);
  if (v == NULL && (v = attr(a, k_oi)) != NULL) {
    int rc = norm_set(rt, a, fresh, k, NULL,
                      json_is_object(v) || json_is_array(v) ? json_deep_copy(v) : json_copy(v));
    if (rc) return rc;
  }
  return norm_str_field(slot, off, v);
}

int sg__lua_agenta_normalize(sg_lua_rt_t *rt, sg_lua_slot_t *slot, int with_resource,
                             const char **err) {
  sg_span_t *s = slot->s;
  json_t *a = s->attributes;
  int fresh = 0, rc;
  *err = "out of memory";
  if (a == NULL) {
    /* span.attributes = gw.object(): the snapshot releases it on rollback,
     * so its members need no undo entries. */
    if ((a = json_object()) == NULL) return SG_ENOMEM;
    s->attributes = a;
    fresh = 1;
  } else if (!json_is_object(a)) {
    *err = "span.attributes is not an object";
    return SG_EINVAL;
  }

  /* 1. types */
  json_t *trace = attr(a, K_TRACE), *tv = trace ? trace : attr(a, K_TREE);
  int tt = match_label(trace_types, sizeof trace_types / sizeof trace_types[0], tv, 1);
  if (tt < 0) tt = s->trace_type >= 0 ? s->trace_type : SG_TRACE_INVOCATION;
  json_t *span = attr(a, K_SPAN), *sv = span ? span : attr(a, K_NODE);
  int st = match_label(span_types, sizeof span_types / sizeof span_types[0], sv, 1);
  if (st < 0) {
    json_t *oi = attr(a, K_OIKIND);
    if (oi) st = match_label(oi_kinds, sizeof oi_kinds / sizeof oi_kinds[0], oi, 0);
    if (st < 0) st = s->span_type >= 0 ? s->span_type : SG_SPAN_TYPE_TASK;
  }
  s->trace_type = (int8_t)tt;
  s->span_type = (int8_t)st;
  if ((rc = norm_set_label(rt, a, fresh, K_TRACE, trace, &trace_types[tt])) ||
      (rc = norm_set_label(rt, a, fresh, K_SPAN, span, &span_types[st])))
    return rc;

  /* 2. session, user, agent */
  if ((rc = norm_id(rt, slot, a, fresh, K_SID, K_OISID, offsetof(sg_span_t, session_id))) ||
      (rc = norm_id(rt, slot, a, fresh, K_UID, K_OIUID, offsetof(sg_span_t, user_id))))
    return rc;
  json_t *ag = attr(a, K_AGID);
  if (ag == NULL || json_is_false(ag)) ag = attr(a, K_GAID); /* Lua's `agid ~= nil and agid or gaid` */
  if ((rc = norm_str_field(slot, offsetof(sg_span_t, agent_id), ag))) return rc;

  /* 3 and 4: nest when stored, with the resource unless the span has its own */
  slot->nest = (uint8_t)(SG_LUA_NEST_ATTRS |
                         (with_resource && attr(a, K_RESOURCE) == NULL ? SG_LUA_NEST_RESOURCE : 0));
  return 0;
}

