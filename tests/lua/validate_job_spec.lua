-- validate_job_spec.lua - lua/jobs/validate.lua's sample over a fake gw with
-- stores in memory: a sample larger than one ClickHouse statement can hold
-- (max_query_size, 256 KiB by default) is looked up in chunks, every key
-- exactly once, and differences are still found. No database.
package.path = "lua/?.lua;tests/lua/?.lua;" .. package.path
local plan = require("jobs.lib.plan")
local H = require("helper")
local null = H.null

local PROJECTS = {
  "0190a3b4-0000-7000-8000-0000000000c1", "0190a3b4-0000-7000-8000-0000000000c2",
  "0190a3b4-0000-7000-8000-0000000000c3",
}
local MAX_QUERY_SIZE = 262144

local function uuid(n, tag) return string.format("%08x-0000-4000-8000-%012x", n, tag) end

-- n spans spread over PROJECTS; the PostgreSQL row of each, keyed "p/t/s".
local function make_spans(n)
  local list, by_key = {}, {}
  for i = 1, n do
    local row = {project_id = PROJECTS[i % #PROJECTS + 1], trace_id = uuid(i, 1), span_id = uuid(i, 2)}
    for _, f in ipairs(plan.SAMPLE_FIELDS) do
      if row[f[1]] == nil then row[f[1]] = f[2] == "json" and null or (f[1] .. " " .. i) end
    end
    list[i] = row
    by_key[row.project_id .. "/" .. row.trace_id .. "/" .. row.span_id] = row
  end
  return list, by_key
end

local function array_param(s)
  local out = {}
  for v in s:sub(2, -2):gmatch("[^,]+") do out[#out + 1] = v end
  return out
end

-- Runs validate.lua with args over the spans; ch_of(row, n) -> the
-- ClickHouse row (a copy, changed or nil) the n-th time the row is looked
-- up. cluster: gw.ch.server says a cluster. ch_only: a project routing.lua
-- says is ClickHouse-only. Returns the exit status, the ClickHouse sample
-- statements, the keys each looked up, stdout, and the ms slept.
local function run(args, spans, by_key, ch_of, cluster, ch_only)
  local statements, looked_up, out, times, slept = {}, {}, {}, {}, 0
  local gw = H.fake_gw({})
  gw.sleep = function(ms) slept = slept + ms end
  gw.now = function() return 0 end
  gw.spawn = function(fn, ...) fn(...) return {} end
  gw.wait = function() return true end
  gw.hooks = {clickhouse = function() return true end, postgres = function(p) return p ~= ch_only end}
  gw.json = {decode = function(s) return s end}
  gw.totable = function(v) return v end
  gw.pg = {query = function(sql, ...)
    local a = {...}
    if sql:match("ORDER BY random%(%)") then
      local keys, wanted = {}, {}
      for _, p in ipairs(array_param(a[1])) do wanted[p] = true end
      for _, r in ipairs(spans) do
        if #keys == tonumber(a[4]) then break end
        -- (the other cases ask for projects' keys without minding which: only this one needs the filter)
        if wanted[r.project_id] or not ch_only then keys[#keys + 1] = {p = r.project_id, t = r.trace_id, s = r.span_id} end
      end
      return keys
    elseif sql:match("unnest%(") then
      local ps, ts, ss, rows = array_param(a[1]), array_param(a[2]), array_param(a[3]), {}
      for i = 1, #ps do rows[#rows + 1] = by_key[ps[i] .. "/" .. ts[i] .. "/" .. ss[i]] end
      return rows
    end
    return {} -- the per-day statistics: no ranges
  end}
  gw.ch = {server = {version = "18.16.1", major = 18, minor = 16, datetime64 = false, database = "db",
                    cluster = cluster and "c" or nil},
    query = function(sql)
      if not sql:match("%) IN %(") then return {} end
      statements[#statements + 1] = sql
      local rows = {}
      for k in sql:gmatch("'([%x%-]+/[%x%-]+/[%x%-]+)'") do
        looked_up[#looked_up + 1] = k
        times[k] = (times[k] or 0) + 1
        local r = by_key[k] and ch_of(by_key[k], times[k])
        if r then
          local t = {}
          for i, f in ipairs(plan.SAMPLE_FIELDS) do t[i] = r[f[1]] end
          t[#t + 1] = r.project_id
          rows[#rows + 1] = t
        end
      end
      return rows
    end}
  package.loaded.gw = gw
  package.loaded["jobs.lib.store"] = nil -- it captured the previous fake
  local chunk = assert(loadfile("lua/jobs/validate.lua"))
  local stdout = io.stdout
  io.stdout = {write = function(self, ...) for _, s in ipairs({...}) do out[#out + 1] = s end return self end}
  local ok, status = pcall(chunk, unpack(args))
  io.stdout = stdout
  assert(ok, status)
  return status, statements, looked_up, table.concat(out), slept
end

local function copy(r)
  local c = {}
  for k, v in pairs(r) do c[k] = v end
  return c
end

describe("validate's sample", function()
  local spans, by_key = make_spans(6000)
  local args = {"--project", table.concat(PROJECTS, ","), "--sample", "5000"}

  it("looks 5000 keys up in chunks under ClickHouse's max_query_size, each once", function()
    local status, statements, looked_up, out = run(args, spans, by_key, copy)
    assert.equal(0, status, out)
    assert.matches("sample: 5000 spans compared field by field, 0 differ", out)
    assert.is_true(#statements > 1)
    for _, sql in ipairs(statements) do
      assert.is_true(#sql < MAX_QUERY_SIZE / 2 + 1, "a statement of " .. #sql .. " bytes")
    end
    assert.equal(5000, #looked_up)
    local seen = {}
    for _, k in ipairs(looked_up) do
      assert.is_nil(seen[k], "looked up twice: " .. k)
      seen[k] = true
    end
  end)

  it("asks for more than the data has without complaint", function()
    local few = {}
    for i = 1, 40 do few[i] = spans[i] end
    local status, statements, _, out = run({"--sample", "5000", "--project", PROJECTS[1]}, few, by_key, copy)
    assert.equal(0, status, out)
    assert.matches("sample: 40 spans compared", out)
    assert.equal(1, #statements)
  end)

  it("still finds a missing and a differing span in a later chunk", function()
    local gone, changed = spans[4999], spans[5000]
    local status, _, _, out = run(args, spans, by_key, function(r)
      if r == gone then return nil end
      local c = copy(r)
      if r == changed then c.span_name = "renamed" end
      return c
    end)
    assert.equal(1, status)
    assert.matches("sample: 5000 spans compared field by field, 2 differ %(1 missing in ClickHouse%)", out)
    assert.matches("DIFFERS: project %S+ span " .. changed.trace_id:gsub("%-", "%%-") .. "/%S+: span_name", out)
    assert.matches("span " .. gone.trace_id:gsub("%-", "%%-") .. "/%S+: %(missing in ClickHouse%)", out)
  end)

  it("leaves a ClickHouse-only project out and says so", function()
    local status, _, looked_up, out = run(args, spans, by_key, function() return nil end, false, PROJECTS[2])
    -- every span of the other two projects is missing in ClickHouse: found; PROJECTS[2]'s never looked at
    assert.equal(1, status, out)
    assert.matches("skipped: project " .. PROJECTS[2]:gsub("%-", "%%-") .. " is ClickHouse%-only", out)
    for _, k in ipairs(looked_up) do assert.is_nil(k:find(PROJECTS[2], 1, true), k) end
    assert.is_true(#looked_up > 0)
  end)
end)

describe("validate on a cluster", function()
  local spans, by_key = make_spans(50)
  local args = {"--project", table.concat(PROJECTS, ","), "--sample", "50"}
  local late = spans[7]
  -- a replica that has not fetched the span yet answers the first read
  local function fetched_late(r, n)
    if r == late and n == 1 then return nil end
    return copy(r)
  end

  it("reads a span missing on one replica again until the replicas caught up", function()
    local status, _, _, out, slept = run(args, spans, by_key, fetched_late, true)
    assert.equal(0, status, out)
    assert.matches("sample: 50 spans compared field by field, 0 differ", out)
    assert.is_true(slept > 0 and slept < 1000, "slept " .. slept .. " ms")
  end)

  it("still reports a span that stays missing, after about 3 s", function()
    local status, _, _, out, slept = run(args, spans, by_key, function(r) return r ~= late and copy(r) or nil end, true)
    assert.equal(1, status)
    assert.matches("sample: 50 spans compared field by field, 1 differ %(1 missing in ClickHouse%)", out)
    assert.equal(3000, slept)
  end)

  it("on one server reports it at once", function()
    local status, _, _, out, slept = run(args, spans, by_key, fetched_late, false)
    assert.equal(1, status)
    assert.matches("1 differ %(1 missing in ClickHouse%)", out)
    assert.equal(0, slept)
  end)
end)
