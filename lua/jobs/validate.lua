-- jobs/validate.lua - prove ClickHouse holds what PostgreSQL holds.
-- `spangate validate [OPTIONS]`; see docs/jobs.md.
--
-- 1. counts per project and UTC day: PostgreSQL count(*) vs ClickHouse
--    count() FINAL (one row per span);
-- 2. where counts agree, an order-independent checksum of each day in both
--    servers: the sum modulo 2^64 of the first 8 bytes (big-endian) of
--    md5(trace|span|parent|kind|status|name|start_us|end_us|created_us|
--    deleted_us|version) (store.lua builds the text identically in both);
-- 3. a random sample (--sample N) compared field by field: ids, names,
--    kinds, status, times to the µs, JSON columns parsed and compared
--    structurally, lifecycle fields and version.
-- Exit 0 only when everything matches.
local gw = require("gw")
local plan = require("jobs.lib.plan")
local store = require("jobs.lib.store")
local pool = require("jobs.lib.pool")

local format = string.format

local SPEC = {
  project = {kind = "list"}, since = {kind = "string"}, ["until"] = {kind = "string"},
  sample = {kind = "number", default = 200, zero_ok = true}, json = {kind = "flag"}, help = {kind = "flag"},
}
local USAGE = [[
usage: spangate validate [-c FILE] [OPTIONS]
  --project ID     only this project (repeatable, or comma-separated)
  --since DATE     only spans created at or after DATE (UTC)
  --until DATE     only spans created before DATE
  --sample N       spans compared field by field (default 200)
  --json           one JSON document on stdout instead of the table
]]

local opts, since_us, until_us = plan.job_args("validate", {...}, SPEC, USAGE)
if not opts then return since_us end
if not gw.ch.server then
  io.stderr:write("spangate validate: " .. tostring(gw.ch.server_error) .. "\n")
  return 1
end
local DB = store.ch_db()
local t0 = gw.now()

-- ClickHouse-only projects (docs/cutover.md) have no PostgreSQL rows to
-- compare with after their cut-over: listed as skipped, never a failure.
local projects, _, ch_only = store.select_projects(opts.project, true)

-- counts and checksums, PostgreSQL per project in parallel with ClickHouse
local pg = {}
local pg_done = pool.start(4, projects, function(p)
  for k, v in pairs(store.pg_day_stats(p, since_us, until_us, true)) do pg[k] = v end
end)
local ch = #projects > 0 and store.ch_day_stats(projects, since_us, until_us, true) or {}
pg_done()

local ranges = plan.plan(pg, ch, {}, {}, {})

-- Range r's status from both stores' statistics p and c (nil: no rows);
-- true when they agree.
local function judge(r, p, c)
  r.pg_n, r.ch_n = p and p.n or 0, c and c.n or 0
  r.pg_sum, r.ch_sum = p and p.checksum or "", c and c.checksum or ""
  if r.pg_n ~= r.ch_n then
    r.status = "COUNT DIFFERS"
  elseif r.pg_sum ~= r.ch_sum then
    r.status = "CHECKSUM DIFFERS"
  else
    r.status = "ok"
  end
  return r.status == "ok"
end

local bad_ranges = {}
for _, r in ipairs(ranges) do
  if not judge(r, pg[r.key], ch[r.key]) then bad_ranges[#bad_ranges + 1] = r end
end
-- on a cluster, a replica that has not fetched the last writes yet differs
-- for a moment: read those ranges again
bad_ranges = store.settle(bad_ranges, function(list)
  local still = {}
  for _, r in ipairs(list) do
    local lo = math.max(r.day, since_us or 0)
    local hi = math.min(r.day + plan.DAY_US, until_us or (r.day + plan.DAY_US))
    local p = store.pg_day_stats(r.project, lo, hi, true)[r.key]
    local c = store.ch_day_stats({r.project}, lo, hi, true)[r.key]
    if not judge(r, p, c) then still[#still + 1] = r end
  end
  return still
end)

-- ---- the sample -------------------------------------------------------------------------

local CH_COLUMNS = table.concat({
  "toString(trace_id)", "toString(span_id)", "toString(parent_id)", "toString(trace_type)",
  "toString(span_type)", "toString(span_kind)", "toString(span_name)",
  "toString(" .. store.ch_us("start_time") .. ")", "toString(" .. store.ch_us("end_time") .. ")",
  "toString(status_code)", "status_message", "attributes", "`references`", "links", "hashes", "events",
  "session_id", "user_id", "agent_id", "toString(" .. store.ch_us("created_at") .. ")",
  "toString(" .. store.ch_us("updated_at") .. ")", "toString(" .. store.ch_us("deleted_at") .. ")",
  "toString(created_by_id)", "toString(updated_by_id)", "toString(deleted_by_id)", "toString(version)",
  "toString(project_id)",
}, ", ")

local function decode(text)
  local v, e = gw.json.decode(text)
  if v == nil then error(e) end
  return gw.totable(v)
end

-- ClickHouse refuses a query longer than max_query_size (256 KiB by
-- default), and the sample's keys are an IN list (~115 bytes a key): they go
-- in chunks of at most half that, measured from the keys' text. PostgreSQL
-- gets the same chunks (its keys are parameters, but the rows of one chunk
-- at a time are enough to compare).
local CH_QUERY_BYTES = 128 * 1024
local CH_SAMPLE_SQL = [[
  SELECT %s FROM %s.spans FINAL
  WHERE project_id IN (%s)
    AND concat(toString(project_id), '/', toString(trace_id), '/', toString(span_id)) IN (%s)
    AND is_deleted = 0]]
local PG_SAMPLE_SQL = format([[
  SELECT project_id::text AS project_id, %s FROM spans
  JOIN unnest($1::uuid[], $2::uuid[], $3::uuid[]) AS k(p, t, s)
    ON project_id = k.p AND trace_id = k.t AND span_id = k.s]], store.PG_SPAN_COLUMNS)

-- The sampled keys in chunks whose ClickHouse statement stays within
-- CH_QUERY_BYTES; sorted by project first, so that a chunk names few
-- projects (ClickHouse reads only theirs).
local function sample_chunks(keys)
  table.sort(keys, function(a, b)
    if a.p ~= b.p then return a.p < b.p end
    if a.t ~= b.t then return a.t < b.t end
    return a.s < b.s
  end)
  local fixed = #CH_SAMPLE_SQL + #CH_COLUMNS + #DB
  local chunks, c = {}, nil
  for _, k in ipairs(keys) do
    -- the literal and ", "; a project new to the chunk adds "toUUID('...'), "
    local lit = format("'%s/%s/%s'", k.p, k.t, k.s)
    local pbytes = #k.p + 12
    if not c or c.bytes + #lit + 2 + (c.pset[k.p] and 0 or pbytes) > CH_QUERY_BYTES then
      c = {keys = {}, inlist = {}, projects = {}, pset = {}, bytes = fixed}
      chunks[#chunks + 1] = c
    end
    if not c.pset[k.p] then
      c.pset[k.p] = true
      c.projects[#c.projects + 1] = k.p
      c.bytes = c.bytes + pbytes
    end
    c.bytes = c.bytes + #lit + 2
    c.keys[#c.keys + 1] = k
    c.inlist[#c.inlist + 1] = lit
  end
  return chunks
end

local mismatches, sampled, missing = {}, 0, 0

local function compare_chunk(c)
  local ps, ts_, ss = {}, {}, {}
  for i, k in ipairs(c.keys) do ps[i], ts_[i], ss[i] = k.p, k.t, k.s end
  local pgrows = gw.pg.query(PG_SAMPLE_SQL, "{" .. table.concat(ps, ",") .. "}",
    "{" .. table.concat(ts_, ",") .. "}", "{" .. table.concat(ss, ",") .. "}")
  local chrows = gw.ch.query(format(CH_SAMPLE_SQL, CH_COLUMNS, DB, store.uuid_list(c.projects),
    table.concat(c.inlist, ", ")), "TSV")
  local by_key = {}
  for _, row in ipairs(chrows) do
    local t = {}
    for i, f in ipairs(plan.SAMPLE_FIELDS) do t[f[1]] = row[i] end
    local pid = row[#plan.SAMPLE_FIELDS + 1]
    -- several rows for one key would be a ReplacingMergeTree key problem: keep all
    local k = pid .. "/" .. t.trace_id .. "/" .. t.span_id
    if by_key[k] then by_key[k].dup = true else by_key[k] = t end
  end
  for _, p in ipairs(pgrows) do
    sampled = sampled + 1
    local k = p.project_id .. "/" .. p.trace_id .. "/" .. p.span_id
    local ch_row = by_key[k]
    if not ch_row then
      missing = missing + 1
      mismatches[#mismatches + 1] = {project = p.project_id, trace_id = p.trace_id, span_id = p.span_id,
        fields = {"(missing in ClickHouse)"}}
    else
      local diff = plan.compare_rows(p, ch_row, gw.null, decode)
      if ch_row.dup then diff[#diff + 1] = "(several rows in ClickHouse)" end
      if #diff > 0 then
        local detail = {}
        for _, f in ipairs(diff) do
          if p[f] ~= nil then
            detail[f] = {postgres = p[f] == gw.null and "NULL" or p[f],
              clickhouse = ch_row[f] == gw.null and "NULL" or ch_row[f]}
          end
        end
        mismatches[#mismatches + 1] = {project = p.project_id, trace_id = p.trace_id, span_id = p.span_id,
          fields = diff, values = detail}
      end
    end
  end
end

if opts.sample > 0 and #projects > 0 then
  local keys = gw.pg.query(format([[
    SELECT project_id::text AS p, trace_id::text AS t, span_id::text AS s FROM spans
    WHERE project_id = ANY($1::uuid[]) AND created_at >= %s AND created_at < %s
    ORDER BY random() LIMIT $4]], store.ts(2), store.ts(3)),
    "{" .. table.concat(projects, ",") .. "}", store.us_param(since_us or 0),
    store.us_param(until_us or 4291747199999999), math.floor(opts.sample))
  for _, c in ipairs(sample_chunks(keys)) do compare_chunk(c) end
  -- on a cluster, the spans that differ are compared again a few times
  if #mismatches > 0 then
    local again = {}
    for i, m in ipairs(mismatches) do again[i] = {p = m.project, t = m.trace_id, s = m.span_id} end
    store.settle(again, function(list)
      local n = sampled
      mismatches, missing = {}, 0
      for _, c in ipairs(sample_chunks(list)) do compare_chunk(c) end
      sampled = n
      local still = {}
      for i, m in ipairs(mismatches) do still[i] = {p = m.project, t = m.trace_id, s = m.span_id} end
      return still
    end)
  end
end

local ok = #bad_ranges == 0 and #mismatches == 0
local elapsed = (gw.now() - t0) / 1e6

-- ---- report ---------------------------------------------------------------------------------

if opts.json then
  local out = {ok = ok, seconds = elapsed, projects = gw.array(projects), ranges = gw.array(),
    sample = {compared = sampled, missing = missing, mismatches = gw.array()}, clickhouse_only = gw.array()}
  for _, o in ipairs(ch_only) do table.insert(out.clickhouse_only, {project = o.project, since = o.since}) end
  for _, r in ipairs(ranges) do
    table.insert(out.ranges, {project = r.project, day = plan.day_text(r.day), postgres = r.pg_n,
      clickhouse = r.ch_n, postgres_checksum = r.pg_sum, clickhouse_checksum = r.ch_sum, status = r.status})
  end
  for _, m in ipairs(mismatches) do
    m.fields = gw.array(m.fields)
    table.insert(out.sample.mismatches, m)
  end
  io.stdout:write(gw.json.encode(out), "\n")
else
  local rows = {}
  for _, r in ipairs(ranges) do
    rows[#rows + 1] = {r.project, plan.day_text(r.day), plan.fmt_count(r.pg_n), plan.fmt_count(r.ch_n), r.status}
  end
  io.stdout:write(plan.render_table({"project", "day", "postgres", "clickhouse", "status"}, rows))
  io.stdout:write(format("sample: %d spans compared field by field, %d differ (%d missing in ClickHouse)\n",
    sampled, #mismatches, missing))
  for i, m in ipairs(mismatches) do
    if i > 20 then io.stdout:write(format("  ... and %d more\n", #mismatches - 20)); break end
    io.stdout:write(format("  DIFFERS: project %s span %s/%s: %s\n", m.project, m.trace_id, m.span_id,
      table.concat(m.fields, ", ")))
  end
  for _, r in ipairs(bad_ranges) do
    io.stdout:write(format("DIFFERS: project %s day %s: %s (PostgreSQL %d, ClickHouse %d)\n",
      r.project, plan.day_text(r.day), r.status:lower(), r.pg_n, r.ch_n))
  end
  for _, o in ipairs(ch_only) do
    io.stdout:write(format("skipped: project %s is ClickHouse-only%s (nothing in PostgreSQL to compare with)\n",
      o.project, o.since and (" since " .. o.since) or ""))
  end
  io.stdout:write(format("validate: %s (%d projects, %d project-days, %.2f s)\n",
    ok and "ClickHouse matches PostgreSQL" or "ClickHouse DIFFERS from PostgreSQL", #projects, #ranges, elapsed))
end
return ok and 0 or 1
