-- jobs/migrate.lua - copy PostgreSQL's spans into ClickHouse, resumably,
-- until both stores agree.  `spangate migrate [OPTIONS]`; see docs/jobs.md.
--
-- Unit of work: one project's UTC day ("range"). For every selected range
-- the job compares PostgreSQL's count and version sum with ClickHouse's
-- (FINAL) and copies the ranges that differ, that a dual-write gap names,
-- or that an interrupted run left half done (resumed from its checkpoint).
-- Once every range is copied, all are checked again (a query per project
-- and run of days in each store); rows ClickHouse holds that PostgreSQL
-- does not (deleted there) are removed; a range that still differs is copied
-- again from its start. Exit 0 means every selected range agreed at the end.
--
-- Rows: keyset pages in ClickHouse's sort order (created_at, trace_id,
-- span_id within the project; never OFFSET), read with gw.pg.query_raw and
-- encoded into shared ClickHouse inserts of --insert-mb (jobs/lib/batcher.lua;
-- a range's checkpoint is saved once the insert carrying its rows is in):
-- the spool writer's encoder, ttl.lua for
-- expires_at, the stored created_at and version = µs of
-- coalesce(updated_at, created_at), exactly what the dual-write sends.
-- transform.lua is NOT applied: stored rows already went through it at
-- ingest, and ClickHouse must equal what PostgreSQL stored.
local gw = require("gw")
local plan = require("jobs.lib.plan")
local store = require("jobs.lib.store")
local batcher = require("jobs.lib.batcher")
local pool = require("jobs.lib.pool")

local format = string.format
local JOB = "migrate"

local SPEC = {
  project = {kind = "list"}, since = {kind = "string"}, ["until"] = {kind = "string"},
  batch = {kind = "number", default = 5000}, parallel = {kind = "number", default = 4},
  insert_mb = {kind = "number", default = 64},
  max_rate = {kind = "number"}, dry_run = {kind = "flag"}, restart = {kind = "flag"},
  no_index = {kind = "flag"}, no_nodes = {kind = "flag"}, help = {kind = "flag"},
}

local USAGE = [[
usage: spangate migrate [-c FILE] [OPTIONS]
  --project ID       only this project (repeatable, or comma-separated)
  --since DATE       only spans created at or after DATE (UTC, 2024-05-01[T12:00:00Z])
  --until DATE       only spans created before DATE
  --batch N          rows per PostgreSQL page (default 5000)
  --insert-mb N      pages collected into one ClickHouse insert up to N MiB (default 64)
  --parallel N       ranges copied at the same time (default 4)
  --max-rate N       at most N spans per second
  --dry-run          show what would be copied, change nothing
  --restart          copy every selected range again, ignoring checkpoints and agreement
  --no-index         do not create the keyset index spangate_spans_keyset
  --no-nodes         skip the old `nodes` table
]]

local opts, since_us, until_us = plan.job_args("migrate", {...}, SPEC, USAGE)
if not opts then return since_us end
if not gw.ch.server then
  io.stderr:write("spangate migrate: " .. tostring(gw.ch.server_error) .. "\n")
  return 1
end
local BATCH = math.floor(opts.batch)
local DB = store.ch_db()
local JOIN_DAYS = 8 -- a verification query covers at most this many consecutive days

-- ---- the keyset pages ---------------------------------------------------------------

local RANGE = format("project_id = $1 AND created_at >= %s AND created_at < %s", store.ts(2), store.ts(3))
local SQL_FIRST = format("SELECT %s FROM spans WHERE %s ORDER BY spans.created_at, spans.trace_id, spans.span_id LIMIT $4",
  store.PG_SPAN_COLUMNS, RANGE)
local SQL_NEXT = format("SELECT %s FROM spans WHERE %s AND (created_at, trace_id, span_id) > (%s, $5::uuid, $6::uuid)" ..
  " ORDER BY spans.created_at, spans.trace_id, spans.span_id LIMIT $7", store.PG_SPAN_COLUMNS, RANGE, store.ts(4))

-- Range [since, until) within day d.
local function bounds(r)
  local lo, hi = r.day, r.day + plan.DAY_US
  if since_us and since_us > lo then lo = since_us end
  if until_us and until_us < hi then hi = until_us end
  return store.us_param(lo), store.us_param(hi), lo, hi
end

-- ---- progress -------------------------------------------------------------------------

local t0 = gw.now()
local total = {rows = 0, rejected = 0, todo = 0, orphans = 0}
local per_project = {}
local function pstat(p)
  local s = per_project[p]
  if not s then
    s = {ranges = 0, skipped = 0, copied = 0, rows = 0, todo = 0, orphans = 0, failed = 0, rejected = 0}
    per_project[p] = s
  end
  return s
end
local tty = gw.stdout_isatty
local last_report = 0
local function progress(project, force)
  local now = gw.now()
  if not force and now - last_report < (tty and 200000 or 5000000) then return end
  last_report = now
  local el = (now - t0) / 1e6
  local rate = total.rows / math.max(el, 1e-3)
  local s = per_project[project]
  local left = math.max(total.todo - total.rows, 0)
  local line = format("%s %s/%s rows, project %s %s/%s, %.0f spans/s, ETA %s",
    tty and "migrate:" or "progress:", plan.fmt_count(total.rows), plan.fmt_count(total.todo),
    project, plan.fmt_count(s and s.rows or 0), plan.fmt_count(s and s.todo or 0), rate,
    plan.fmt_duration(rate > 0 and left / rate or nil))
  if tty then io.stdout:write("\r\027[K" .. line); io.stdout:flush()
  else gw.log.info(line) end
end

local function throttle()
  if not opts.max_rate then return end
  local ahead = total.rows / opts.max_rate - (gw.now() - t0) / 1e6
  if ahead > 0.001 then gw.sleep(ahead * 1000) end
end

-- ---- copying ---------------------------------------------------------------------------

local committed = {} -- range key -> its checkpoint as of the last insert that is in ClickHouse
local ins = batcher.new{
  new_batch = gw.ch.span_batch, limit = opts.insert_mb * 1048576,
  idle = function() gw.sleep(2) end,
  on_commit = function(marks)
    for key, m in pairs(marks) do
      store.save_checkpoint(JOB, m.r, m.cp)
      committed[key] = m.cp
    end
  end,
}

-- Range r from key `from` (nil: its start) into the batcher.
local function copy(r, from, cp)
  local lo, hi = bounds(r)
  local last, s = from, pstat(r.project)
  cp = cp or {rows = 0}
  while true do
    local res
    if last then
      res = gw.pg.query_raw(SQL_NEXT, r.project, lo, hi, last.created_us, last.trace_id, last.span_id, BATCH)
    else
      res = gw.pg.query_raw(SQL_FIRST, r.project, lo, hi, BATCH)
    end
    local n = #res
    if n == 0 then break end
    last = {created_us = res:get(n, "created_us"), trace_id = res:get(n, "trace_id"), span_id = res:get(n, "span_id")}
    cp = plan.checkpoint_after_batch(cp, last, n)
    local _, rejected, why = ins:add(r.project, res, r.key, {r = r, cp = cp})
    -- the page's rows are a C copy (~10 MB for 5000 spans of 2 KB), encoded
    -- by now: free it at once, not when the collector gets to it
    res:free()
    if rejected > 0 then
      total.rejected, s.rejected = total.rejected + rejected, s.rejected + rejected
      gw.log.error("project %s %s: %d spans cannot be written to ClickHouse (first: %s)",
        r.project, plan.day_text(r.day), rejected, tostring(why))
    end
    total.rows, s.rows = total.rows + n, s.rows + n
    progress(r.project)
    throttle()
    if n < BATCH then break end
  end
end

-- Every range of list copied, --parallel at a time; returns once all their
-- rows are in ClickHouse. resume: start from the checkpoints (first attempt).
local function copy_all(list, cps, resume)
  pool.run(opts.parallel, list, function(r)
    local from = resume and r.resume or nil
    local cp = from and cps[r.key] or nil
    if cp then committed[r.key] = {rows = cp.rows, last = from} end
    copy(r, from, cp and {rows = cp.rows} or nil)
  end)
  ins:drain()
end

-- ---- checking ----------------------------------------------------------------------------

-- Rows ClickHouse has in range r that PostgreSQL does not (hard deletes
-- that reached ClickHouse as no tombstone, a span re-created with another
-- created_at): removed with a mutation, then awaited (mutations are
-- asynchronous). Tombstones (is_deleted = 1 after FINAL) are deleted spans
-- already: neither counted nor listed.
local function remove_orphans(r, pg_n)
  local _, _, lo, hi = bounds(r)
  local where = format("project_id = toUUID('%s') AND created_at >= %s AND created_at < %s",
    r.project, store.ch_second(math.floor(lo / 1e6)), store.ch_second(math.ceil(hi / 1e6)))
  local removed = 0
  if pg_n == 0 then
    removed = tonumber(gw.ch.query(format("SELECT count() FROM %s.spans FINAL WHERE %s AND is_deleted = 0",
      DB, where), "TSV")[1][1])
    gw.ch.query(format("ALTER TABLE %s DELETE WHERE %s", store.ch_mutation_target(), where))
  else
    local pk = {}
    for i, row in ipairs(gw.pg.query(format(
        "SELECT trace_id::text || '/' || span_id::text AS k FROM spans WHERE %s", RANGE),
        r.project, store.us_param(lo), store.us_param(hi))) do
      pk[i] = row.k
    end
    local ck = {}
    for i, row in ipairs(gw.ch.query(format(
        "SELECT concat(toString(trace_id), '/', toString(span_id)) FROM %s.spans FINAL WHERE %s AND is_deleted = 0",
        DB, where), "TSV")) do
      ck[i] = row[1]
    end
    local orphans = plan.orphans(pk, ck)
    for i = 1, #orphans, 500 do
      local list = {}
      for j = i, math.min(i + 499, #orphans) do list[#list + 1] = "'" .. orphans[j] .. "'" end
      gw.ch.query(format("ALTER TABLE %s DELETE WHERE %s AND concat(toString(trace_id), '/', toString(span_id)) IN (%s)",
        store.ch_mutation_target(), where, table.concat(list, ", ")))
    end
    removed = #orphans
  end
  if removed > 0 then
    gw.log.warn("project %s %s: removing %d spans ClickHouse has and PostgreSQL does not",
      r.project, plan.day_text(r.day), removed)
    if not store.wait_mutations(120) then gw.log.warn("ClickHouse mutations still running after 120 s") end
  end
  return removed
end

-- Count and version sum of both stores for the ranges of list (after a
-- copy from PostgreSQL they find what can still differ: rows missing,
-- extra rows, a row updated meanwhile; the md5 checksum is for the plan,
-- where ClickHouse may hold damaged content). One query per store for
-- each project's run of up to JOIN_DAYS consecutive days, --parallel at a
-- time. Returns key -> {p, c}.
local function stats_of(list)
  local runs = plan.day_runs(list, JOIN_DAYS)
  local out = {}
  pool.run(opts.parallel, runs, function(run)
    local _, _, lo = bounds(run[1])
    local _, _, _, hi = bounds(run[#run])
    local pgs = store.pg_day_stats(run[1].project, lo, hi)
    local chs = store.ch_day_stats({run[1].project}, lo, hi)
    for _, r in ipairs(run) do
      out[r.key] = {p = pgs[r.key] or {n = 0, vsum = 0}, c = chs[r.key] or {n = 0, vsum = 0}}
    end
  end)
  return out
end

local verified, failed = {}, {}

-- Range r agrees after its copy: its checkpoint says done.
local function verify(r)
  local cp = committed[r.key] or {rows = 0}
  store.save_checkpoint(JOB, r, {status = "done", rows = cp.rows or 0, last = cp.last})
  verified[r.key] = true
  local s = pstat(r.project)
  s.copied = s.copied + 1
end

-- The ranges of list that still differ after their copy (orphans removed
-- first); the others are marked done.
local function check(list)
  local st, again = stats_of(list), {}
  for _, r in ipairs(list) do
    local s = pstat(r.project)
    local p, c = st[r.key].p, st[r.key].c
    if c.n > p.n then
      local n = remove_orphans(r, p.n)
      total.orphans, s.orphans = total.orphans + n, s.orphans + n
      local x = stats_of({r})[r.key]
      p, c = x.p, x.c
    end
    if p.n == c.n and p.vsum == c.vsum then
      verify(r)
    else
      r.pg_n, r.ch_n = p.n, c.n
      again[#again + 1] = r
    end
  end
  -- on a cluster, a replica that has not fetched the copy yet looks short
  return store.settle(again, function(l)
    local st2, still = stats_of(l), {}
    for _, r in ipairs(l) do
      local p, c = st2[r.key].p, st2[r.key].c
      if p.n == c.n and p.vsum == c.vsum then
        verify(r)
      else
        r.pg_n, r.ch_n = p.n, c.n
        still[#still + 1] = r
      end
    end
    return still
  end)
end

-- ---- nodes (Agenta's older observability table) ------------------------------------------

local function migrate_nodes(projects)
  local e = gw.pg.query("SELECT to_regclass('nodes') IS NOT NULL AS e")
  if e[1].e ~= "t" then
    gw.log.info("PostgreSQL has no `nodes` table: nothing to migrate there")
    return {skipped = true}
  end
  local cols = {}
  for _, c in ipairs(gw.pg.query([[SELECT column_name AS c FROM information_schema.columns
      WHERE table_schema = current_schema() AND table_name = 'nodes']])) do cols[c.c] = true end
  if not (cols.project_id and cols.node_id and cols.created_at) then
    gw.log.warn("PostgreSQL's `nodes` table has no project_id/node_id/created_at: skipped")
    return {skipped = true}
  end
  local srv = gw.ch.server
  local opt = function(c, cast) return cols[c] and (c .. cast) or "NULL" end
  local sel = format([[SELECT n.project_id::text AS p, n.node_id::text AS id, %s AS tree, %s AS root,
      to_char(n.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS cs,
      (extract(microseconds FROM n.created_at))::int8 %% 1000000 AS cus,
      (extract(epoch FROM n.created_at) * 1000000)::int8 AS cu,
      (to_jsonb(n) - 'project_id' - 'node_id' - 'tree_id' - 'root_id' - 'created_at')::text AS a,
      (extract(epoch FROM %s) * 1000000)::int8 AS v
    FROM nodes n]], opt("n.tree_id", "::text"), opt("n.root_id", "::text"),
    cols.updated_at and "coalesce(n.updated_at, n.created_at)" or "n.created_at")
  local target = format("%s.nodes (project_id, node_id, tree_id, root_id, created_at, %sattributes, version, expires_at)",
    DB, srv.nodes_datetime64 and "" or "created_at_us, ")
  local copied = 0
  for _, p in ipairs(projects) do
    local pn = tonumber(gw.pg.query("SELECT count(*) AS n FROM nodes WHERE project_id = $1", p)[1].n)
    local cn = tonumber(gw.ch.query(format(
      "SELECT count() FROM %s.nodes FINAL WHERE project_id = toUUID('%s') AND is_deleted = 0", DB, p), "TSV")[1][1])
    if pn ~= cn or opts.restart then
      local last
      while true do
        local rows
        if last then
          rows = gw.pg.query(sel .. [[ WHERE n.project_id = $1 AND (n.created_at, n.node_id) >
              ('epoch'::timestamptz + $2::int8 * interval '1 microsecond', $3::uuid)
              ORDER BY n.created_at, n.node_id LIMIT $4]], p, last[1], last[2], BATCH)
        else
          rows = gw.pg.query(sel .. " WHERE n.project_id = $1 ORDER BY n.created_at, n.node_id LIMIT $2", p, BATCH)
        end
        if #rows == 0 then break end
        local out = {}
        for i, r in ipairs(rows) do
          local created = srv.nodes_datetime64 and format("%s.%06d", r.cs, tonumber(r.cus)) or r.cs
          local row = {r.p, r.id, r.tree, r.root, created}
          if not srv.nodes_datetime64 then row[#row + 1] = r.cus end
          row[#row + 1] = r.a
          row[#row + 1] = r.v
          row[#row + 1] = "2105-12-31 23:59:59" -- nodes have no TTL hook: kept forever
          out[i] = row
        end
        gw.ch.insert(target, out)
        copied = copied + #rows
        last = {rows[#rows].cu, rows[#rows].id}
        if #rows < BATCH then break end
      end
    end
  end
  return {copied = copied}
end

-- ---- main -------------------------------------------------------------------------------------

if not opts.dry_run then store.ensure_checkpoints() end
if not opts.dry_run and not opts.no_index then store.ensure_keyset_index() end

local projects, unrouted, ch_only = store.select_projects(opts.project, true)
for _, p in ipairs(unrouted) do
  gw.log.info("project %s: routing.lua keeps it out of ClickHouse; skipped", p)
end
-- Its spans since the cut-over are in ClickHouse only: a copy would find
-- them "missing in PostgreSQL" and remove them (docs/cutover.md).
for _, o in ipairs(ch_only) do
  gw.log.info("project %s: ClickHouse-only%s; skipped (PostgreSQL is not its reference)", o.project,
    o.since and (" since " .. o.since) or " (routing.lua)")
end

-- statistics of both stores, PostgreSQL's per project in parallel
local pg = {}
pool.run(opts.parallel, projects, function(p)
  for k, v in pairs(store.pg_day_stats(p, since_us, until_us, false, true)) do pg[k] = v end
end)
local ch = #projects > 0 and store.ch_day_stats(projects, since_us, until_us, false) or {}
-- (--restart copies everything: the checksums would not change the plan)
if not opts.restart then store.add_checksums(pg, ch, since_us, until_us) end
local cps = opts.restart and {} or store.load_checkpoints(JOB)
local gaps = store.open_gaps(projects, since_us, until_us)
local ranges = plan.plan(pg, ch, cps, gaps, {restart = opts.restart})

local todo = {}
for _, r in ipairs(ranges) do
  local s = pstat(r.project)
  s.ranges = s.ranges + 1
  if r.action == "skip" then
    s.skipped = s.skipped + 1
    verified[r.key] = true
  else
    todo[#todo + 1] = r
    local n = r.pg_n
    if r.action == "resume" and cps[r.key] then n = math.max(n - (cps[r.key].rows or 0), 0) end
    s.todo, total.todo = s.todo + n, total.todo + n
  end
end

if opts.dry_run then
  local rows = {}
  for _, r in ipairs(ranges) do
    rows[#rows + 1] = {r.project, plan.day_text(r.day), plan.fmt_count(r.pg_n), plan.fmt_count(r.ch_n), r.action, r.why}
  end
  io.stdout:write(plan.render_table({"project", "day", "postgres", "clickhouse", "action", "why"}, rows))
  io.stdout:write(format("%d ranges, %d to copy (%s spans); %d open gaps; dry run: nothing changed\n",
    #ranges, #todo, plan.fmt_count(total.todo), #gaps))
  return 0
end

gw.log.info("%d projects, %d ranges: %d to copy (%s spans), %d agree; %d open gaps",
  #projects, #ranges, #todo, plan.fmt_count(total.todo), #ranges - #todo, #gaps)

-- the ranges, --parallel at a time; then all checked; what differs, copied again
do
  local list = todo
  for attempt = 1, 3 do
    local t1 = gw.now()
    copy_all(list, cps, attempt == 1)
    local t2 = gw.now()
    local n = #list
    list = check(list)
    gw.log.info("copy %d: %d ranges in %.1f s (%d ClickHouse inserts so far), checked in %.1f s: %d differ",
      attempt, n, (t2 - t1) / 1e6, ins.inserts, (gw.now() - t2) / 1e6, #list)
    if #list == 0 then break end
    for _, r in ipairs(list) do
      gw.log.warn("project %s %s: PostgreSQL %d spans, ClickHouse %d after copy %d%s",
        r.project, plan.day_text(r.day), r.pg_n, r.ch_n, attempt, attempt < 3 and "; copying again" or "")
      committed[r.key] = nil
      if attempt < 3 then total.todo = total.todo + r.pg_n end
    end
  end
  for _, r in ipairs(list) do
    local s = pstat(r.project)
    s.failed = s.failed + 1
    failed[#failed + 1] = r
  end
end
if tty and total.rows > 0 then progress(todo[#todo].project, true); io.stdout:write("\n") end

local repaired = plan.repaired_gaps(gaps, verified)
if #repaired > 0 then
  gw.pg.query("UPDATE spangate_ch_gaps SET repaired_at = now() WHERE id = ANY($1::bigint[]) AND repaired_at IS NULL",
    "{" .. table.concat(repaired, ",") .. "}")
end

local nodes = opts.no_nodes and {skipped = true} or migrate_nodes(projects)

-- ---- summary --------------------------------------------------------------------------------
local el = (gw.now() - t0) / 1e6
local rows = {}
for _, p in ipairs(projects) do
  local s = pstat(p)
  rows[#rows + 1] = {p, s.ranges, s.skipped, s.copied, plan.fmt_count(s.rows), s.orphans, s.rejected, s.failed}
end
io.stdout:write(plan.render_table({"project", "ranges", "agreed", "copied", "rows", "removed", "rejected", "failed"}, rows))
io.stdout:write(format("migrate: %s spans copied in %.2f s (%.0f spans/s); %d ranges copied, %d already agreed; " ..
  "%d spans removed from ClickHouse; %d gaps marked repaired; nodes: %s\n",
  plan.fmt_count(total.rows), el, total.rows / math.max(el, 1e-3), #todo - #failed, #ranges - #todo,
  total.orphans, #repaired,
  nodes.skipped and "skipped" or (plan.fmt_count(nodes.copied) .. " copied")))
for _, o in ipairs(ch_only) do
  io.stdout:write(format("skipped: project %s is ClickHouse-only%s\n", o.project, o.since and (" since " .. o.since) or ""))
end
for _, r in ipairs(failed) do
  io.stdout:write(format("DIFFERS: project %s day %s: PostgreSQL %d spans, ClickHouse %d (live ingest into this range? run again)\n",
    r.project, plan.day_text(r.day), r.pg_n, r.ch_n))
end
if total.rejected > 0 then
  io.stdout:write(format("%d spans could not be written to ClickHouse (see the log)\n", total.rejected))
end
return (#failed == 0 and total.rejected == 0) and 0 or 1
