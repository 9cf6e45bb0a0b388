-- migrate_spec.lua - the migration's pure logic (lua/jobs/lib/plan.lua):
-- options, dates, range planning, checkpoints, gaps, orphans. No database.
package.path = "lua/?.lua;tests/lua/?.lua;" .. package.path
local plan = require("jobs.lib.plan")

local P1 = "0190a3b4-0000-7000-8000-0000000000c1"
local P2 = "0190a3b4-0000-7000-8000-0000000000c2"
local D1 = plan.parse_date("2024-05-01")
local D2 = D1 + plan.DAY_US

local SPEC = {
  project = {kind = "list"}, since = {kind = "string"}, batch = {kind = "number", default = 5000},
  dry_run = {kind = "flag"}, sample = {kind = "number", default = 200, zero_ok = true},
}

local function stat(p, d, n, vsum, sum)
  return {[plan.range_key(p, d)] = {project = p, day = d, n = n, vsum = vsum or n, checksum = sum}}
end
local function merge(...)
  local out = {}
  for _, t in ipairs({...}) do for k, v in pairs(t) do out[k] = v end end
  return out
end

describe("plan.parse_args", function()
  it("reads flags, numbers, repeated and comma-separated lists, --x=y", function()
    local o = assert(plan.parse_args({"--project", P1, "--project=" .. P2 .. ",x", "--batch", "100", "--dry-run"}, SPEC))
    assert.same({P1, P2, "x"}, o.project)
    assert.equal(100, o.batch)
    assert.is_true(o.dry_run)
  end)
  it("keeps defaults and rejects unknown or bad options", function()
    assert.equal(5000, plan.parse_args({}, SPEC).batch)
    local o, e = plan.parse_args({"--bogus"}, SPEC)
    assert.is_nil(o); assert.matches("unknown option '%-%-bogus'", e)
    o, e = plan.parse_args({"--batch", "0"}, SPEC)
    assert.is_nil(o); assert.matches("positive", e)
    assert.equal(0, plan.parse_args({"--sample", "0"}, SPEC).sample)
    o, e = plan.parse_args({"--batch"}, SPEC)
    assert.matches("needs a value", e)
  end)
end)

describe("plan dates", function()
  it("parses UTC dates and times to µs and prints days", function()
    assert.equal(1714521600 * 1e6, D1)
    assert.equal(D1 + 12 * 3600e6 + 30e6, plan.parse_date("2024-05-01T12:00:30Z"))
    assert.equal("2024-05-01", plan.day_text(D1 + 86399e6))
    assert.equal("2024-02-29", plan.day_text(plan.parse_date("2024-02-29")))
    assert.equal("1970-01-01", plan.day_text(0))
    assert.is_nil(plan.parse_date("2024-13-01"))
    assert.is_nil(plan.parse_date("yesterday"))
    assert.equal(D1, plan.day_start(D1 + 5))
  end)
end)

describe("plan.plan", function()
  it("skips ranges where both stores agree and copies the others", function()
    local pg = merge(stat(P1, D1, 10, 5, "a"), stat(P1, D2, 7), stat(P2, D1, 3))
    local ch = merge(stat(P1, D1, 10, 5, "a"), stat(P1, D2, 6))
    local r = plan.plan(pg, ch, {}, {}, {})
    assert.equal(3, #r)
    assert.same({P1, D1, "skip"}, {r[1].project, r[1].day, r[1].action})
    assert.same({"copy", "counts differ"}, {r[2].action, r[2].why})
    assert.same({P2, "copy", "not in ClickHouse"}, {r[3].project, r[3].action, r[3].why})
  end)
  it("copies when only the checksum or the version sum differs", function()
    local r = plan.plan(stat(P1, D1, 10, 5, "a"), stat(P1, D1, 10, 5, "b"), {}, {}, {})
    assert.same({"copy", "checksums differ"}, {r[1].action, r[1].why})
    r = plan.plan(stat(P1, D1, 10, 5), stat(P1, D1, 10, 6), {}, {}, {})
    assert.equal("copy", r[1].action)
  end)
  it("includes ranges only ClickHouse has (deleted in PostgreSQL)", function()
    local r = plan.plan({}, stat(P2, D2, 4), {}, {}, {})
    assert.same({P2, D2, 0, 4, "copy"}, {r[1].project, r[1].day, r[1].pg_n, r[1].ch_n, r[1].action})
  end)
  it("resumes an interrupted range from its checkpoint, unless --restart", function()
    local last = {created_us = "1714521600000001", trace_id = "t", span_id = "s"}
    local cps = {[plan.range_key(P1, D1)] = {status = "running", rows = 5, last = last}}
    local r = plan.plan(stat(P1, D1, 10), stat(P1, D1, 5), cps, {}, {})
    assert.equal("resume", r[1].action)
    assert.equal(last, r[1].resume)
    r = plan.plan(stat(P1, D1, 10), stat(P1, D1, 5), cps, {}, {restart = true})
    assert.equal("copy", r[1].action)
    r = plan.plan(stat(P1, D1, 10), stat(P1, D1, 10), {}, {}, {restart = true})
    assert.equal("copy", r[1].action)
  end)
  it("copies a done range again when the stores no longer agree", function()
    local cps = {[plan.range_key(P1, D1)] = {status = "done", rows = 10}}
    local r = plan.plan(stat(P1, D1, 10), stat(P1, D1, 8), cps, {}, {})
    assert.same({"copy", "done before, stores differ now"}, {r[1].action, r[1].why})
    r = plan.plan(stat(P1, D1, 10), stat(P1, D1, 10), cps, {}, {})
    assert.same({"skip", "done, stores agree"}, {r[1].action, r[1].why})
  end)
  it("copies every day a gap touches even where counts agree", function()
    local gaps = {{id = "7", project = P1, first_us = D1 + 5, last_us = D2 + 5}}
    local r = plan.plan(merge(stat(P1, D1, 10), stat(P1, D2, 3)), merge(stat(P1, D1, 10), stat(P1, D2, 3)), {}, gaps, {})
    assert.equal(2, #r)
    assert.same({"copy", "copy"}, {r[1].action, r[2].action})
    assert.same({"7"}, r[1].gaps)
  end)
end)

describe("checkpoints and gaps", function()
  it("accumulates rows and keeps the last key", function()
    local cp = plan.checkpoint_after_batch(nil, {created_us = "1"}, 5000)
    cp = plan.checkpoint_after_batch(cp, {created_us = "2"}, 12)
    assert.same({status = "running", last = {created_us = "2"}, rows = 5012}, cp)
  end)
  it("marks a gap repaired only when every day it touches verified", function()
    local gaps = {
      {id = "1", project = P1, first_us = D1, last_us = D2 + 1},
      {id = "2", project = P1, first_us = D1, last_us = D1},
      {id = "3", project = P1, first_us = D1, last_us = D1, clipped = true},
    }
    local verified = {[plan.range_key(P1, D1)] = true}
    assert.same({"2"}, plan.repaired_gaps(gaps, verified))
    verified[plan.range_key(P1, D2)] = true
    assert.same({"1", "2"}, plan.repaired_gaps(gaps, verified))
  end)
  it("finds the keys ClickHouse has and PostgreSQL does not", function()
    assert.same({"c/3"}, plan.orphans({"a/1", "b/2"}, {"a/1", "c/3", "b/2"}))
    assert.same({}, plan.orphans({"a/1"}, {}))
  end)
end)

describe("formatting", function()
  it("groups digits, prints durations and aligned tables", function()
    assert.equal("150,000", plan.fmt_count(150000))
    assert.equal("7", plan.fmt_count(7))
    assert.equal("1m05s", plan.fmt_duration(65))
    assert.equal("?", plan.fmt_duration(nil))
    assert.equal("a    bb\n---  --\nxyz  1\n", plan.render_table({"a", "bb"}, {{"xyz", 1}}))
  end)
end)

describe("store.add_checksums", function()
  local H = require("helper")
  local function load_store()
    package.loaded.gw = H.fake_gw({})
    package.loaded["jobs.lib.store"] = nil
    return require("jobs.lib.store")
  end

  it("asks for version sums and checksums only over the days whose counts agree", function()
    local store = load_store()
    local D3 = D2 + plan.DAY_US
    local calls = {}
    store.pg_day_stats = function(p, lo, hi, cs)
      calls[#calls + 1] = {"pg", p, lo, hi, cs}
      return merge(stat(p, D2, 5, 5, "pg2"), stat(p, D3, 7, 7, "pg3"))
    end
    store.ch_day_stats = function(ps, lo, hi, cs)
      calls[#calls + 1] = {"ch", ps[1], lo, hi, cs}
      return merge(stat(ps[1], D2, 5, 5, "ch2"), stat(ps[1], D3, 7, 7, "ch3"))
    end
    -- P1: D1 differs (not in ClickHouse), D2 and D3 agree; P2: nothing agrees
    local pg = merge(stat(P1, D1, 3), stat(P1, D2, 5), stat(P1, D3, 7), stat(P2, D1, 4))
    for _, v in pairs(pg) do v.vsum = nil end -- as pg_day_stats(..., count_only) returns them
    local ch = merge(stat(P1, D2, 5), stat(P1, D3, 7), stat(P2, D1, 2))
    store.add_checksums(pg, ch, nil, nil)
    assert.same({{"pg", P1, D2, D3 + plan.DAY_US, true}, {"ch", P1, D2, D3 + plan.DAY_US, true}}, calls)
    assert.equal("pg2", pg[plan.range_key(P1, D2)].checksum)
    assert.equal(5, pg[plan.range_key(P1, D2)].vsum) -- filled from the second query
    assert.equal("ch3", ch[plan.range_key(P1, D3)].checksum)
    assert.is_nil(pg[plan.range_key(P1, D1)].checksum)
    assert.is_nil(pg[plan.range_key(P2, D1)].checksum)
    -- agreeing checksums are a skip, differing ones a copy
    local ranges = plan.plan(pg, ch, {}, {}, {})
    local by = {}
    for _, r in ipairs(ranges) do by[r.key] = r end
    assert.equal("copy", by[plan.range_key(P1, D2)].action)
    assert.equal("checksums differ", by[plan.range_key(P1, D2)].why)
  end)

  it("does not read checksums when ClickHouse is empty, and keeps within --since/--until", function()
    local store = load_store()
    local n = 0
    store.pg_day_stats = function() n = n + 1; return {} end
    store.ch_day_stats = function() n = n + 1; return {} end
    store.add_checksums(merge(stat(P1, D1, 3), stat(P1, D2, 5)), {}, nil, nil)
    assert.equal(0, n)
    local seen
    store.pg_day_stats = function(_, lo, hi) seen = {lo, hi}; return {} end
    store.add_checksums(stat(P1, D1, 3), stat(P1, D1, 3), D1 + 3600e6, D1 + 7200e6)
    assert.same({D1 + 3600e6, D1 + 7200e6}, seen)
  end)
end)

describe("plan.job_args", function()
  local stderr = io.stderr
  local written
  before_each(function()
    written = {}
    io.stderr = {write = function(_, ...) for _, v in ipairs({...}) do written[#written + 1] = v end end}
  end)
  after_each(function() io.stderr = stderr end)
  local spec = {project = {kind = "list"}, since = {kind = "string"}, ["until"] = {kind = "string"},
    help = {kind = "flag"}}

  it("returns the options and the dates in µs", function()
    local opts, since, till = plan.job_args("migrate", {"--project", P1, "--since", "2024-05-01",
      "--until", "2024-05-02T12:00:00Z"}, spec, "usage\n")
    assert.same({P1}, opts.project)
    assert.equal(D1, since)
    assert.equal(D2 + 12 * 3600e6, till)
  end)

  it("exits 0 with the usage on --help, 2 naming the problem otherwise", function()
    assert.same({nil, 0}, {plan.job_args("validate", {"--help"}, spec, "usage\n")})
    assert.equal("usage\n", table.concat(written))
    written = {}
    assert.same({nil, 2}, {plan.job_args("validate", {"--project", "nope"}, spec, "usage\n")})
    assert.matches("spangate validate: %-%-project 'nope' is not a UUID", table.concat(written))
    written = {}
    assert.same({nil, 2}, {plan.job_args("migrate", {"--since", "May 1st"}, spec, "usage\n")})
    assert.matches("spangate migrate: %-%-since/%-%-until take a date", table.concat(written))
    written = {}
    assert.same({nil, 2}, {plan.job_args("migrate", {"--bogus"}, spec, "usage\n")})
    assert.matches("^spangate migrate: .*\n\nusage\n$", table.concat(written))
  end)
end)

describe("plan.day_runs", function()
  local function r(p, d) return {project = p, day = d, key = plan.range_key(p, d)} end
  local function shape(runs)
    local out = {}
    for i, run in ipairs(runs) do
      local days = {}
      for j, x in ipairs(run) do days[j] = (x.project == P1 and "a" or "b") .. ((x.day - D1) / plan.DAY_US) end
      out[i] = table.concat(days, " ")
    end
    return out
  end
  local DAY = plan.DAY_US
  it("groups each project's consecutive days, in order, at most max_days per run", function()
    local list = {r(P2, D1), r(P1, D1 + 3 * DAY), r(P1, D1), r(P1, D1 + DAY), r(P1, D1 + 2 * DAY),
      r(P1, D1 + 5 * DAY), r(P2, D1 + DAY)}
    assert.same({"a0 a1 a2 a3", "a5", "b0 b1"}, shape(plan.day_runs(list, 8)))
    assert.same({"a0 a1", "a2 a3", "a5", "b0 b1"}, shape(plan.day_runs(list, 2)))
    assert.same({}, plan.day_runs({}, 8))
  end)
  it("leaves the caller's list as it was", function()
    local list = {r(P1, D1 + DAY), r(P1, D1)}
    plan.day_runs(list, 8)
    assert.equal(D1 + DAY, list[1].day)
  end)
end)
