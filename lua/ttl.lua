-- ttl.lua - how long spans are kept (fills ClickHouse's expires_at).
--
-- Contract (docs/lua.md): M.retention_days(project_id, span) -> a number of
-- days (> 0; fractions allowed), or nil to keep the span forever (0 means
-- forever too). project_id is the dashed lower-case UUID; span is the
-- transformed span, read-only.
--
-- This default reads gateway.conf through gw.config:
--   retention_by_project  { ["<project uuid>"] = days, ... } (0 = forever);
--   retention_days        for every other project (0 = forever).
--
-- Pure over plain tables: busted passes a fake gw (tests/lua/ttl_spec.lua).

local gw = require("gw")

local M = {}

local lower, type = string.lower, type

-- retention_by_project with its keys in lower case, built once per config.
local by_for, by
local function by_project(cfg)
  if by_for ~= cfg then
    by = {}
    for k, v in pairs(cfg.retention_by_project or {}) do
      by[lower(tostring(k))] = v
    end
    by_for = cfg
  end
  return by
end

function M.retention_days(project_id, span)
  local cfg = gw.config
  local d = by_project(cfg)[lower(project_id)]
  if d == nil then d = cfg.retention_days end
  if type(d) ~= "number" or d <= 0 then return nil end
  return d
end

return M
