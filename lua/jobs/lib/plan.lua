-- jobs/lib/plan.lua - the pure part of the migration and validation jobs:
-- options, dates, range planning, checkpoint bookkeeping, value comparison,
-- formatting. No gw, no I/O: tests/lua/*_spec.lua run it under busted.
local M = {}

local floor, format = math.floor, string.format

M.DAY_US = 86400 * 1000000
M.VSUM_MOD = 1000000007 -- version sums are compared modulo this prime (fits both int types)

-- ---- options ---------------------------------------------------------------------

-- spec: { name = {kind = "flag"|"number"|"string"|"list", default = v} }.
-- Returns opts, or nil and a message naming the bad option.
function M.parse_args(argv, spec)
  local opts = {}
  for name, s in pairs(spec) do
    if s.kind == "list" then opts[name] = {} else opts[name] = s.default end
  end
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local name, inline = a:match("^%-%-([%w%-]+)=(.*)$")
    if not name then name = a:match("^%-%-([%w%-]+)$") end
    if not name then return nil, format("unexpected argument '%s'", a) end
    local key = name:gsub("%-", "_")
    local s = spec[key]
    if not s then return nil, format("unknown option '--%s'", name) end
    if s.kind == "flag" then
      if inline then return nil, format("--%s takes no value", name) end
      opts[key] = true
    else
      local v = inline
      if not v then
        i = i + 1
        v = argv[i]
        if v == nil then return nil, format("--%s needs a value", name) end
      end
      if s.kind == "number" then
        local n = tonumber(v)
        if not n or n < 0 or (n == 0 and not s.zero_ok) then
          return nil, format("--%s: '%s' is not a %s number", name, v, s.zero_ok and "non-negative" or "positive")
        end
        opts[key] = n
      elseif s.kind == "list" then
        for item in v:gmatch("[^,%s]+") do opts[key][#opts[key] + 1] = item end
      else
        opts[key] = v
      end
    end
    i = i + 1
  end
  return opts
end

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
function M.is_uuid(s) return type(s) == "string" and s:match(UUID) ~= nil end

-- ---- dates -----------------------------------------------------------------------

-- Days since 1970-01-01 of a civil date (Howard Hinnant's days_from_civil).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local d = doy - floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m, d
end

-- The preamble migrate and validate share: options by spec, --help, --project
-- ids and --since/--until dates checked. Returns opts, since_us, until_us;
-- or nil, exit code (usage or the problem already written to stderr).
function M.job_args(name, argv, spec, usage)
  local opts, err = M.parse_args(argv, spec)
  if not opts or opts.help then
    io.stderr:write(opts and "" or ("spangate " .. name .. ": " .. err .. "\n\n"), usage)
    return nil, opts and 0 or 2
  end
  for _, p in ipairs(opts.project or {}) do
    if not M.is_uuid(p) then
      io.stderr:write(string.format("spangate %s: --project '%s' is not a UUID\n", name, p))
      return nil, 2
    end
  end
  local since_us = opts.since and M.parse_date(opts.since)
  local until_us = opts["until"] and M.parse_date(opts["until"])
  if (opts.since and not since_us) or (opts["until"] and not until_us) then
    io.stderr:write("spangate " .. name .. ": --since/--until take a date like 2024-05-01 or 2024-05-01T12:00:00Z\n")
    return nil, 2
  end
  return opts, since_us, until_us
end

-- "2024-05-01" or "2024-05-01T12:00:00Z" (UTC) -> µs since the epoch; nil on bad input.
function M.parse_date(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > 31 then return nil end
  local h, mi, se = 0, 0, 0
  if rest ~= "" then
    local hh, mm, ss = rest:match("^[T ](%d%d):(%d%d):?(%d?%d?)Z?$")
    if not hh then return nil end
    h, mi, se = tonumber(hh), tonumber(mm), tonumber(ss) or 0
  end
  return ((days_from_civil(y, mo, d) * 86400) + h * 3600 + mi * 60 + se) * 1000000
end

-- µs -> "2024-05-01" (the UTC day).
function M.day_text(us)
  local y, m, d = civil_from_days(floor(us / M.DAY_US))
  return format("%04d-%02d-%02d", y, m, d)
end

function M.day_start(us) return floor(us / M.DAY_US) * M.DAY_US end

-- ---- planning ------------------------------------------------------------------

-- A range is one project's UTC day: key "project/day_us".
function M.range_key(project, day_us) return project .. "/" .. format("%.0f", day_us) end

-- Merge per-(project, day) statistics of both stores into the list of ranges
-- to look at, sorted in ClickHouse's order (project, day).
--   pg, ch:    { [key] = {project=, day=, n=, vsum=, checksum=} }
--   cps:       { [key] = {status = "running"|"done", last = {...} | nil, rows =} }
--   gaps:      list of {id=, project=, first_us=, last_us=} (unrepaired)
--   opts:      {restart = bool}
-- Each range: {project, day, pg_n, ch_n, pg_vsum, ch_vsum, action, why, resume,
-- gaps = {ids}}. action: "skip" (the stores agree and nothing is pending),
-- "copy" (from the start) or "resume" (from the checkpoint's last key).
function M.plan(pg, ch, cps, gaps, opts)
  local keys, seen = {}, {}
  for k, v in pairs(pg) do if not seen[k] then seen[k] = v; keys[#keys + 1] = k end end
  for k, v in pairs(ch) do if not seen[k] then seen[k] = v; keys[#keys + 1] = k end end
  -- gaps mark their project's days as pending even where counts agree (an
  -- update that never reached ClickHouse leaves the count unchanged)
  local gap_ranges = {}
  for _, g in ipairs(gaps or {}) do
    local d = M.day_start(g.first_us)
    while d <= g.last_us do
      local k = M.range_key(g.project, d)
      gap_ranges[k] = gap_ranges[k] or {}
      table.insert(gap_ranges[k], g.id)
      if not seen[k] then seen[k] = {project = g.project, day = d}; keys[#keys + 1] = k end
      d = d + M.DAY_US
    end
  end
  local out = {}
  for _, k in ipairs(keys) do
    local base = seen[k]
    local p, c, cp = pg[k], ch[k], cps and cps[k]
    local r = {
      key = k, project = base.project, day = base.day,
      pg_n = p and p.n or 0, ch_n = c and c.n or 0,
      pg_vsum = p and p.vsum or 0, ch_vsum = c and c.vsum or 0,
      pg_sum = p and p.checksum, ch_sum = c and c.checksum,
      gaps = gap_ranges[k],
    }
    -- checksums (when the statistics have them) catch what counts cannot: a
    -- row changed without a new version, or damaged in ClickHouse
    local agree = r.pg_n == r.ch_n and r.pg_vsum == r.ch_vsum and r.pg_sum == r.ch_sum
    if opts and opts.restart then
      r.action, r.why = "copy", "--restart"
    elseif r.gaps then
      r.action, r.why = "copy", "gap recorded by the dual-write"
    elseif agree then
      r.action, r.why = "skip", (cp and cp.status == "done") and "done, stores agree" or "stores agree"
    elseif cp and cp.status == "running" and cp.last then
      r.action, r.why, r.resume = "resume", "interrupted run", cp.last
    else
      r.action = "copy"
      r.why = (cp and cp.status == "done") and "done before, stores differ now"
        or (r.ch_n == 0 and "not in ClickHouse" or (r.pg_n ~= r.ch_n and "counts differ" or "checksums differ"))
    end
    out[#out + 1] = r
  end
  table.sort(out, function(a, b)
    if a.project ~= b.project then return a.project < b.project end
    return a.day < b.day
  end)
  return out
end

-- Gap ids that may be marked repaired: every range a gap touches was
-- verified (verified: { [range key] = true }).
function M.repaired_gaps(gaps, verified)
  local ids = {}
  for _, g in ipairs(gaps or {}) do
    local ok, d = not g.clipped, M.day_start(g.first_us)
    while d <= g.last_us do
      if not verified[M.range_key(g.project, d)] then ok = false; break end
      d = d + M.DAY_US
    end
    if ok then ids[#ids + 1] = g.id end
  end
  return ids
end

-- Checkpoint bookkeeping for one range: the state after a batch whose last
-- row is last = {created_us=, trace_id=, span_id=}.
function M.checkpoint_after_batch(cp, last, nrows)
  return {status = "running", last = last, rows = (cp and cp.rows or 0) + nrows}
end

-- Ranges grouped for checking: per project, runs of consecutive days, at
-- most max_days each (one query per run and store). Runs ordered by
-- project then day; ranges within a run by day.
function M.day_runs(ranges, max_days)
  local sorted = {}
  for i, r in ipairs(ranges) do sorted[i] = r end
  table.sort(sorted, function(a, b)
    if a.project ~= b.project then return a.project < b.project end
    return a.day < b.day
  end)
  local runs, cur = {}, nil
  for _, r in ipairs(sorted) do
    local prev = cur and cur[#cur]
    if prev and prev.project == r.project and r.day == prev.day + M.DAY_US and #cur < max_days then
      cur[#cur + 1] = r
    else
      cur = {r}
      runs[#runs + 1] = cur
    end
  end
  return runs
end

-- Keys present in ClickHouse but not in PostgreSQL. Both: lists of "trace/span".
function M.orphans(pg_keys, ch_keys)
  local have, out = {}, {}
  for _, k in ipairs(pg_keys) do have[k] = true end
  for _, k in ipairs(ch_keys) do if not have[k] then out[#out + 1] = k end end
  return out
end

-- ---- comparison ------------------------------------------------------------------

-- Structural equality of decoded JSON values: objects by key set (order
-- ignored), arrays by position, numbers by value. null: the null sentinel.
function M.json_equal(a, b, null)
  if a == b then return true end
  local ta, tb = type(a), type(b)
  if ta ~= tb then
    if ta == "number" and tb == "cdata" or ta == "cdata" and tb == "number" then
      return tonumber(a) == tonumber(b)
    end
    return false
  end
  if ta ~= "table" then return false end
  for k, v in pairs(a) do
    local w = b[k]
    if w == nil or not M.json_equal(v, w, null) then return false end
  end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

-- The fields a sample compares, and how: "text" (exact text), "json"
-- (structural), "null" handling is shared: both NULL or both the same value.
M.SAMPLE_FIELDS = {
  {"trace_id", "text"}, {"span_id", "text"}, {"parent_id", "text"},
  {"trace_type", "text"}, {"span_type", "text"}, {"span_kind", "text"},
  {"span_name", "text"}, {"start_us", "text"}, {"end_us", "text"},
  {"status_code", "text"}, {"status_message", "text"},
  {"attributes", "json"}, {"references", "json"}, {"links", "json"},
  {"hashes", "json"}, {"events", "json"},
  {"session_id", "text"}, {"user_id", "text"}, {"agent_id", "text"},
  {"created_us", "text"}, {"updated_us", "text"}, {"deleted_us", "text"},
  {"created_by_id", "text"}, {"updated_by_id", "text"}, {"deleted_by_id", "text"},
  {"version", "text"},
}

-- Compare one PostgreSQL row with one ClickHouse row (tables keyed by field
-- name, text values, null = the NULL sentinel). decode(text) -> value for
-- JSON. Returns the list of differing field names (empty when equal).
function M.compare_rows(pg, ch, null, decode)
  local diff = {}
  for _, f in ipairs(M.SAMPLE_FIELDS) do
    local name, how = f[1], f[2]
    local a, b = pg[name], ch[name]
    if a == nil then a = null end
    if b == nil then b = null end
    local same
    if a == null or b == null then
      same = a == b
    elseif how == "json" then
      local ok1, va = pcall(decode, a)
      local ok2, vb = pcall(decode, b)
      same = ok1 and ok2 and M.json_equal(va, vb, null)
    else
      same = tostring(a) == tostring(b)
    end
    if not same then diff[#diff + 1] = name end
  end
  return diff
end

-- ---- formatting ----------------------------------------------------------------

function M.fmt_count(n)
  local s = format("%.0f", n)
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""))
end

function M.fmt_duration(s)
  if s == nil or s ~= s or s == math.huge then return "?" end
  s = floor(s + 0.5)
  if s < 60 then return format("%ds", s) end
  if s < 3600 then return format("%dm%02ds", floor(s / 60), s % 60) end
  return format("%dh%02dm", floor(s / 3600), floor(s / 60) % 60)
end

-- A text table: header = list of column titles, rows = list of lists.
function M.render_table(header, rows)
  local w = {}
  for i, h in ipairs(header) do w[i] = #h end
  for _, r in ipairs(rows) do
    for i, v in ipairs(r) do if #tostring(v) > w[i] then w[i] = #tostring(v) end end
  end
  local lines = {}
  local function line(r)
    local cells = {}
    for i = 1, #header do cells[i] = format("%-" .. w[i] .. "s", tostring(r[i] or "")) end
    lines[#lines + 1] = (table.concat(cells, "  "):gsub("%s+$", ""))
  end
  line(header)
  local sep = {}
  for i = 1, #header do sep[i] = string.rep("-", w[i]) end
  line(sep)
  for _, r in ipairs(rows) do line(r) end
  return table.concat(lines, "\n") .. "\n"
end

return M
