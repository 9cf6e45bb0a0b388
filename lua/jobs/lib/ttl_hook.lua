-- jobs/lib/ttl_hook.lua - asks ttl.lua how long a stored span is kept.
--
-- retention(project_id, row) -> days | nil (forever); row has the columns
-- of jobs/lib/store.lua's PG_SPAN_COLUMNS (what gw.ch.insert_spans reads).
--
-- Where the binary has gw.hooks.retention_days (the hooks runtime's ttl.lua,
-- exactly what gw.ch.insert_spans evaluates) it is used. Otherwise the job
-- asks the copy of ttl.lua its own state loaded from the scripts directory,
-- with a read-only span built from the row (jobs/lib/ttl_plan.lua row_span):
-- the same script and the same gw.config, but run in the job's state (JIT
-- on, no instruction budget) over plain values instead of the C span proxy.
-- Like the gateway, a hook that fails means "keep" (logged, at most once a
-- second, with a count).
local gw = require("gw")
local tp = require("jobs.lib.ttl_plan")

local M = {}

local errors, last_log, suppressed = 0, 0, 0
local function failed(project, msg)
  errors = errors + 1
  local now = gw.now()
  if now - last_log >= 1000000 then
    gw.log.error("ttl.lua M.retention_days for project %s: %s%s", project, tostring(msg),
      suppressed > 0 and string.format(" (%d more suppressed)", suppressed) or "")
    last_log, suppressed = now, 0
  else
    suppressed = suppressed + 1
  end
end

function M.errors() return errors end

-- Where the answer comes from, for the job's log.
function M.source()
  if gw.hooks and gw.hooks.retention_days then return "gw.hooks.retention_days" end
  return "ttl.lua in the job's state"
end

local function local_hook()
  local mod = package.loaded.ttl
  if mod == nil then
    local path = (gw.config.scripts or "lua") .. "/ttl.lua"
    local f = io.open(path, "r")
    if not f then return nil end -- no ttl.lua: keep forever
    f:close()
    local chunk = assert(loadfile(path))
    mod = chunk()
  end
  if type(mod) ~= "table" or type(mod.retention_days) ~= "function" then return nil end
  return mod.retention_days
end

local fn_c = gw.hooks and gw.hooks.retention_days
local fn_l = not fn_c and local_hook() or nil
local decode = function(s)
  local v, err = gw.json.decode(s)
  if v == nil and err then error(err, 0) end
  return v
end

function M.retention(project, row)
  if fn_c then
    local ok, d = pcall(fn_c, project, row)
    if not ok then failed(project, d); return nil end
    return d
  end
  if not fn_l then return nil end
  local ok, d = pcall(fn_l, project, tp.row_span(row, gw.null, decode))
  if not ok then failed(project, d); return nil end
  local days, err = tp.check_days(d)
  if err then failed(project, err) end
  return days
end

return M
