-- jobs/lib/ttl_plan.lua - the pure part of `spangate ttl`: sub-commands and
-- options, the expiry arithmetic (exactly the C side's), cutoffs, the span
-- a ttl.lua hook sees when it is asked about a stored row, and formatting.
-- No I/O: tests/lua/ttl_job_spec.lua runs it under busted.
local plan = require("jobs.lib.plan")

local M = {}
local floor, format = math.floor, string.format

M.DAY_US = 86400 * 1000000
-- ClickHouse's "never" (SG_CH_EXPIRES_NEVER_S in src/ch_schema.h):
-- 2105-12-31 23:59:59 UTC, the last second a DateTime holds.
M.NEVER_S = 4291747199
-- Trace ids per ClickHouse mutation: a toUUID('...') literal is ~48 bytes
-- and the statement must stay under max_query_size (256 KiB by default).
M.CH_IDS_PER_STATEMENT = 2000

-- ---- command line -------------------------------------------------------------------

M.COMMANDS = {
  apply = {
    project = {kind = "list"}, batch = {kind = "number", default = 5000},
    dry_run = {kind = "flag"}, no_index = {kind = "flag"}, help = {kind = "flag"},
  },
  ["purge-postgres"] = {
    project = {kind = "list"}, batch_traces = {kind = "number", default = 1000},
    max_projects = {kind = "number"}, dry_run = {kind = "flag"},
    no_clickhouse = {kind = "flag"}, help = {kind = "flag"},
  },
}

M.USAGE = [[
usage: spangate ttl apply [-c FILE] [--project ID] [--dry-run] [--batch N] [--no-index]
       spangate ttl purge-postgres [-c FILE] [--project ID] [--dry-run]
                                   [--batch-traces N] [--max-projects N] [--no-clickhouse]

apply           recompute ClickHouse's expires_at of stored spans with the current
                ttl.lua (after a policy change); re-writes only the rows that change
  --project ID    only this project (repeatable, or comma-separated)
  --dry-run       report per project how many rows would change; change nothing
  --batch N       rows per PostgreSQL page (default 5000)
  --no-index      do not create the keyset index spangate_spans_keyset

purge-postgres  delete whole traces whose root span is older than ttl.lua's retention
                from PostgreSQL (and the same traces from ClickHouse); needs
                pg_retention = true in gateway.conf (except --dry-run)
  --project ID       only this project (repeatable, or comma-separated)
  --dry-run          report what would be deleted; delete nothing
  --batch-traces N   traces per DELETE (one transaction each; default 1000)
  --max-projects N   stop after N projects had traces deleted (default: all)
  --no-clickhouse    leave ClickHouse alone (it keeps the traces until they expire)
]]

-- argv = the job's arguments. Returns cmd, opts; or nil, message (usage
-- error); or "help" alone.
function M.parse(argv)
  local cmd = argv[1]
  if cmd == nil then return nil, "a sub-command is needed (apply or purge-postgres)" end
  if cmd == "help" or cmd == "--help" or cmd == "-h" then return "help" end
  local spec = M.COMMANDS[cmd]
  if not spec then return nil, format("unknown sub-command '%s' (apply or purge-postgres)", cmd) end
  local rest = {}
  for i = 2, #argv do rest[#rest + 1] = argv[i] end
  local opts, err = plan.parse_args(rest, spec)
  if not opts then return nil, err end
  if opts.help then return "help" end
  for i, p in ipairs(opts.project) do
    if not plan.is_uuid(p) then return nil, format("--project '%s' is not a UUID", p) end
    opts.project[i] = p:lower()
  end
  for _, k in ipairs({"batch", "batch_traces", "max_projects"}) do
    if opts[k] and opts[k] ~= floor(opts[k]) then
      return nil, format("--%s: '%s' is not a whole number", (k:gsub("_", "-")), tostring(opts[k]))
    end
  end
  return cmd, opts
end

-- ---- retention arithmetic ---------------------------------------------------------------

-- A hook's answer as spangate takes it (src/lua_rt.c sg_lua_retention_days):
-- a number of days in (0, 1e9), else nil (keep forever: nil, 0). Anything
-- else is an error: returns nil, message (the span is kept).
function M.check_days(d)
  if d == nil or d == 0 then return nil end
  if type(d) ~= "number" or d ~= d or d < 0 or d >= 1e9 then
    return nil, format("M.retention_days must return a number of days >= 0 or nil (got %s)", tostring(d))
  end
  return d
end

-- expires_at in whole seconds, as the row encoder stores it: created_at +
-- (int64)(days * 86400e6) µs, rounded up to the second; nil days = never.
function M.expires_s(created_us, days)
  if not days then return M.NEVER_S end
  local add = days * 86400e6
  add = add >= 0 and floor(add) or -floor(-add) -- C's truncation toward zero
  local us = created_us + add
  local s = floor(us / 1000000)
  if us % 1000000 ~= 0 then s = s + 1 end
  if s > M.NEVER_S then s = M.NEVER_S end
  return s
end

-- Is a root span created at created_us past its retention at now_us?
-- (Agenta: created_at < now - retention.)
function M.expired(created_us, days, now_us)
  if not days then return false end
  return created_us < now_us - days * 86400e6
end

-- ---- the span a hook sees -------------------------------------------------------------

local JSON_FIELDS = {attributes = true, events = true, links = true, references = true, hashes = true}
local TEXT_FIELDS = {
  trace_id = true, span_id = true, parent_id = true, span_name = true, span_kind = true,
  status_code = true, span_type = true, trace_type = true, status_message = true,
  session_id = true, user_id = true, agent_id = true,
}

-- A read-only span over a stored row (the columns jobs/lib/store.lua's
-- PG_SPAN_COLUMNS selects: text values, `null` for SQL NULL), with the
-- field names and value types of docs/lua.md: ids and labels as text, NULL
-- as nil, start_time/end_time integer µs, JSON columns decoded on first
-- access with decode(text).
function M.row_span(row, null, decode)
  local cache = {}
  return setmetatable({}, {
    __index = function(_, k)
      local v = cache[k]
      if v ~= nil then return v end
      local src
      if k == "start_time" then src = row.start_us
      elseif k == "end_time" then src = row.end_us
      elseif TEXT_FIELDS[k] or JSON_FIELDS[k] then src = row[k]
      else return nil end
      if src == nil or src == null then return nil end
      if k == "start_time" or k == "end_time" then v = tonumber(src)
      elseif JSON_FIELDS[k] then v = decode(src)
      else v = src end
      cache[k] = v
      return v
    end,
    __newindex = function(_, k) error("the ttl hook's span is read-only (assigning " .. tostring(k) .. ")", 2) end,
  })
end

-- ---- batching and formatting ---------------------------------------------------------

-- Splits list into lists of at most n.
function M.chunks(list, n)
  local out = {}
  for i = 1, #list, n do
    local c = {}
    for j = i, math.min(i + n - 1, #list) do c[#c + 1] = list[j] end
    out[#out + 1] = c
  end
  return out
end

-- A PostgreSQL array literal of UUIDs (validated): "{a,b}".
function M.pg_uuid_array(ids)
  for _, id in ipairs(ids) do assert(plan.is_uuid(id), "not a UUID: " .. tostring(id)) end
  return "{" .. table.concat(ids, ",") .. "}"
end

-- Seconds since the epoch -> "2024-05-01 12:00:00" (UTC), or "never".
function M.fmt_expires(s)
  if s == nil then return "" end
  if s >= M.NEVER_S then return "never" end
  local day = floor(s / 86400)
  local t = s - day * 86400
  return format("%s %02d:%02d:%02d", plan.day_text(day * M.DAY_US), floor(t / 3600), floor(t / 60) % 60, t % 60)
end

return M
