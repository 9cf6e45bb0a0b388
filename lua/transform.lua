-- transform.lua - what spangate does to every span before it is stored.
--
-- Contract (docs/lua.md): M.span(span, ctx) returns
--   the span (changed or not) - it is stored;
--   nil                       - it is dropped;
--   a list {s1, s2, ...}      - each element is stored: the span itself, a
--                               copy (gw.span.copy(span)), or a plain table of
--                               fields applied to a copy of the span.
-- span has Agenta's field names (trace_id, span_id, parent_id, span_name,
-- span_kind, span_type, trace_type, status_code, status_message, start_time,
-- end_time (integer µs), attributes, events, links, references, hashes,
-- session_id, user_id, agent_id). ctx.project_id, ctx.resource (OTLP
-- resource attributes) and ctx.scope are read-only.
--
-- This default performs Agenta's normalisation (its OTLP ingest and
-- attributes.py), so spans stored by spangate read like spans Agenta stored:
--
--   1. Types. attributes["ag.type.trace"] (legacy "ag.type.tree") and
--      attributes["ag.type.span"] (legacy "ag.type.node"; else OpenInference's
--      "openinference.span.kind") are lower-case names; they set the
--      trace_type / span_type columns to the upper-case labels. A missing or
--      unknown value keeps the column as sent (native JSON may send it), else
--      Agenta's defaults INVOCATION / TASK. The attributes keep the
--      normalised lower-case value, as Agenta's do.
--   2. Session, user, agent. "ag.session.id" (else OpenInference's
--      "session.id", copied to "ag.session.id" as Agenta's adapter does)
--      fills the session_id column; the same for "ag.user.id" / "user.id"
--      and user_id. "ag.agent.id" (else "gen_ai.agent.id") fills agent_id
--      (Agenta has no agent column). Attributes keep their values too.
--   3. Resource. Agenta drops OTLP resource attributes; spangate keeps them
--      under attributes.resource, nested like the rest, so service.name is
--      attributes.resource.service.name (a span's own "resource" or
--      "resource.*" attributes win). Added when the row is written (the
--      second argument of gw.attributes.nest), so the hook does not copy it
--      into every span; in Lua it is ctx.resource.
--   4. Nesting. Dotted keys are nested when stored (Agenta's
--      unmarshall_attributes): "gen_ai.request.model" is stored as
--      {"gen_ai":{"request":{"model":...}}}. This is a flag on the span
--      (gw.attributes.nest); the nesting itself happens in C when the row is
--      written. Inside Lua the attributes keep their keys as sent:
--      attributes["gen_ai.request.model"] reads the value before and after
--      nest(); gw.attributes.get(attributes, "gen_ai.request.model") finds
--      it whether it was sent flat or nested.
--
-- How it runs. M.normalize below is the whole policy written out in Lua:
-- read it, copy it, change it. The same steps are built into spangate as
-- gw.agenta.normalize(span, ctx) (C, the same result at a fraction of the
-- cost: a few hash look-ups instead of a dozen calls into the span proxy),
-- and M.span uses that. After editing M.normalize set USE_BUILTIN to false,
-- or write your own M.span (it can call either, before or after changes
-- of its own). test_lua.c checks that both give the same rows.
--
-- Pure over plain tables: busted feeds tables and a fake `gw`
-- (tests/lua/transform_spec.lua) and tests M.normalize.

local gw = require("gw")

local M = {}

local USE_BUILTIN = true

local type, lower, format, floor, tostring = type, string.lower, string.format, math.floor, tostring

-- Accepted spellings -> column label. Agenta validates the lower-case value;
-- the upper-case labels are accepted too (native JSON sends those).
local TRACE_TYPES, SPAN_TYPES, LOWER = {}, {}, {}
for _, l in ipairs({ "INVOCATION", "ANNOTATION", "UNKNOWN" }) do
  TRACE_TYPES[l], TRACE_TYPES[lower(l)], LOWER[l] = l, l, lower(l)
end
for _, l in ipairs({ "AGENT", "CHAIN", "WORKFLOW", "TASK", "TOOL", "EMBEDDING", "QUERY",
                     "LLM", "COMPLETION", "CHAT", "RERANK", "UNKNOWN" }) do
  SPAN_TYPES[l], SPAN_TYPES[lower(l)], LOWER[l] = l, l, lower(l)
end

-- OpenInference span kinds as Agenta's adapter maps them.
local OPENINFERENCE_KINDS = {
  CHAIN = "CHAIN", RETRIEVER = "QUERY", RERANKER = "RERANK", LLM = "CHAT",
  EMBEDDING = "EMBEDDING", AGENT = "AGENT", TOOL = "TOOL", GUARDRAIL = "TASK",
  EVALUATOR = "TASK",
}

local function label(map, v)
  local l = map[v]
  if l == nil and type(v) == "string" then l = map[lower(v)] end
  return l
end

-- An id attribute as column text: strings as they are, integers in decimal
-- (int64 cdata beyond 2^53 too), other numbers as tostring; anything else
-- (tables, booleans, null) is not an id.
local function id_text(v)
  local t = type(v)
  if t == "string" then
    if v ~= "" then return v end
  elseif t == "number" then
    if v == floor(v) and v >= -2^63 and v < 2^63 then return format("%d", v) end
    return tostring(v)
  elseif t == "cdata" then
    return (tostring(v):match("^(%-?%d+)U?LL$"))
  end
  return nil
end

local get_many = gw.attributes.get_many

function M.normalize(span, ctx)
  local a = span.attributes
  if a == nil then
    span.attributes = gw.object()
    a = span.attributes
  end
  -- One call reads every key this function looks at (a dozen metamethod
  -- calls would cost more than the rest of the function).
  local trace, tree, spn, node, oikind, sid, oisid, uid, oiuid, agid, gaid, own_res = get_many(a,
    "ag.type.trace", "ag.type.tree", "ag.type.span", "ag.type.node", "openinference.span.kind",
    "ag.session.id", "session.id", "ag.user.id", "user.id", "ag.agent.id", "gen_ai.agent.id",
    "resource")

  -- 1. types
  local tv = trace
  if tv == nil then tv = tree end
  local tt = label(TRACE_TYPES, tv) or span.trace_type or "INVOCATION"
  local sv = spn
  if sv == nil then sv = node end
  local st = label(SPAN_TYPES, sv)
  if st == nil then
    st = (oikind ~= nil and OPENINFERENCE_KINDS[oikind]) or span.span_type or "TASK"
  end
  span.trace_type = tt
  span.span_type = st
  local tl, sl = LOWER[tt], LOWER[st]
  if trace ~= tl then a["ag.type.trace"] = tl end
  if spn ~= sl then a["ag.type.span"] = sl end

  -- 2. session, user, agent ("ag.*" first; the OpenInference key is copied
  -- to the ag key, as Agenta's adapter does)
  if sid == nil and oisid ~= nil then
    sid = oisid
    a["ag.session.id"] = oisid
  end
  sid = id_text(sid)
  if sid then span.session_id = sid end
  if uid == nil and oiuid ~= nil then
    uid = oiuid
    a["ag.user.id"] = oiuid
  end
  uid = id_text(uid)
  if uid then span.user_id = uid end
  local aid = id_text(agid ~= nil and agid or gaid)
  if aid then span.agent_id = aid end

  -- 3 and 4: nest dotted keys, and add the resource, when the row is written
  gw.attributes.nest(span, ctx ~= nil and ctx.resource ~= nil and own_res == nil)
  return span
end

local builtin = USE_BUILTIN and gw.agenta and gw.agenta.normalize
M.span = builtin or M.normalize

return M
