-- routing.lua - which projects are written to ClickHouse, and which store
-- serves their reads.
--
-- Contract (docs/lua.md):
--   M.clickhouse(project_id) -> boolean. project_id is the dashed lower-case
--     UUID. Asked only when use_clickhouse is on; the answer is cached per
--     project until the scripts are reloaded (SIGHUP).
--   M.postgres(project_id) -> boolean. false cuts the project over to
--     ClickHouse only (docs/cutover.md): its spans skip PostgreSQL and are
--     acknowledged once durable in the spool; its reads always come from
--     ClickHouse. Asked only when use_clickhouse is on and M.clickhouse is
--     true for the project; cached like M.clickhouse. The jobs (migrate,
--     validate) ask it too, to skip such projects.
--   M.read_backend(query, project_id, endpoint) -> "postgres" | "clickhouse".
--     endpoint is "trace" (GET /v1/traces/{id}), "query" (POST
--     /v1/spans/query) or "analytics" (GET /v1/analytics/spans); query is a
--     read-only table describing the read, with the same `endpoint` (so a
--     script written for two arguments can tell them apart too): trace_id;
--     the request body's filtering and windowing; from, to, bucket,
--     group_by, metrics. "clickhouse" is a wish: a read is served from
--     ClickHouse only when it holds every span acknowledged before the read
--     began (README, "Reading from ClickHouse"), and PostgreSQL answers
--     otherwise.
--
-- This default reads gateway.conf through gw.config:
--   clickhouse_projects_deny  projects never written to ClickHouse (wins);
--   clickhouse_projects       projects written to ClickHouse; when the list
--                             is not empty, only these (the rollout
--                             percentage does not apply to them);
--   clickhouse_rollout_percent when clickhouse_projects is empty: the share
--                             of projects written, chosen by a stable hash:
--                             FNV-1a 32-bit of the dashed lower-case UUID
--                             text, mod 100, < percent. Raising the percentage
--                             only adds projects; none flips off.
--   clickhouse_only_projects  projects cut over to ClickHouse only
--                             (M.postgres false); the other lists still
--                             decide whether they go to ClickHouse at all,
--                             and one they keep out stays on PostgreSQL.
--   read_backend              "clickhouse" sends reads of projects written to
--                             ClickHouse there (all three endpoints); other
--                             projects and any other value read from
--                             PostgreSQL, except ClickHouse-only projects,
--                             which always read from ClickHouse (the gateway
--                             enforces it whatever this hook says).
-- Project ids in the lists may be written in any case, dashed or not.
--
-- Pure over plain tables: busted passes a fake gw (tests/lua/routing_spec.lua).

local gw = require("gw")
local bit = require("bit")

local M = {}

local bxor, byte, lower, gsub = bit.bxor, string.byte, string.lower, string.gsub

-- FNV-1a, 32-bit, over the bytes of s. Exact in doubles: h * 16777619 is
-- split as h * 2^24 (exact) + h * 403.
function M.fnv1a32(s)
  local h = 2166136261
  for i = 1, #s do
    h = bxor(h, byte(s, i)) % 4294967296
    h = ((h * 16777216) % 4294967296 + h * 403) % 4294967296
  end
  return h
end

-- "0123ABCD..." (32 hex) or a UUID in any case -> dashed lower-case.
local function canon(id)
  local h = gsub(lower(tostring(id)), "-", "")
  if #h ~= 32 or h:find("[^0-9a-f]") then return lower(tostring(id)) end
  return h:sub(1, 8) .. "-" .. h:sub(9, 12) .. "-" .. h:sub(13, 16) .. "-" ..
         h:sub(17, 20) .. "-" .. h:sub(21, 32)
end
M.canonical_id = canon

-- Sets built once per config table (a reload brings a new state anyway;
-- the specs swap configs).
local sets_for, allow, deny, n_allow, only
local function sets(cfg)
  if sets_for ~= cfg then
    allow, deny, n_allow, only = {}, {}, 0, {}
    for _, p in ipairs(cfg.clickhouse_projects or {}) do
      allow[canon(p)] = true
      n_allow = n_allow + 1
    end
    for _, p in ipairs(cfg.clickhouse_projects_deny or {}) do deny[canon(p)] = true end
    for _, p in ipairs(cfg.clickhouse_only_projects or {}) do only[canon(p)] = true end
    sets_for = cfg
  end
  return allow, deny, n_allow, only
end

function M.clickhouse(project_id)
  local cfg = gw.config
  local id = canon(project_id)
  local a, d, na = sets(cfg)
  if d[id] then return false end
  if na > 0 then return a[id] == true end
  local pct = tonumber(cfg.clickhouse_rollout_percent) or 100
  if pct >= 100 then return true end
  if pct <= 0 then return false end
  return M.fnv1a32(id) % 100 < pct
end

function M.postgres(project_id)
  local _, _, _, o = sets(gw.config)
  return not o[canon(project_id)]
end

function M.read_backend(query, project_id, endpoint)
  local cfg = gw.config
  if cfg.use_clickhouse and project_id ~= nil and M.clickhouse(project_id)
     and (cfg.read_backend == "clickhouse" or not M.postgres(project_id)) then
    return "clickhouse"
  end
  return "postgres"
end

return M
