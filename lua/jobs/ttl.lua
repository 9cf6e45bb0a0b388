-- jobs/ttl.lua - retention jobs: `spangate ttl apply|purge-postgres`; see docs/ttl.md.
--
-- apply: after a policy change (ttl.lua, retention_* in gateway.conf),
--   recompute ClickHouse's expires_at of the spans already stored. Per
--   project, keyset pages of PostgreSQL's spans in ClickHouse's order
--   (created_at, trace_id, span_id); for each page ttl.lua gives the new
--   expires_at, ClickHouse (FINAL, the page's created_at seconds) the stored
--   one; the rows that differ are written again, with their stored
--   version, in inserts of up to 64 MiB (gw.ch.span_batch: few parts for
--   ClickHouse to merge when a policy change rewrites much). ReplacingMergeTree keeps the last row inserted
--   among equal versions (checked on 18.16, FINAL and merged), so the
--   re-written row replaces the old one; nothing else about it changes.
--   Rows ClickHouse does not have are counted, not copied (that is migrate's
--   job). --dry-run only counts.
--
-- purge-postgres: Agenta's retention (docs/ttl.md). Per project, root spans
--   (parent_id IS NULL) oldest first through ix_spans_root_project_created_trace;
--   ttl.lua is asked about each root; a trace whose root's created_at is
--   older than now - days is deleted whole, --batch-traces traces per
--   statement (one transaction each). ClickHouse first: the same traces are
--   deleted there with a mutation before PostgreSQL's DELETE, so ClickHouse
--   never holds a trace PostgreSQL no longer has; if PostgreSQL's delete
--   fails, the next run finds the traces again and both deletes are repeated
--   (both are idempotent). A page of roots with nothing expired ends the
--   project. Refuses (exit 2) unless pg_retention = true, except --dry-run.
local gw = require("gw")
local plan = require("jobs.lib.plan")
local store = require("jobs.lib.store")
local tp = require("jobs.lib.ttl_plan")

local format, concat = string.format, table.concat

local cmd, opts = tp.parse({...})
if cmd == "help" then io.stdout:write(tp.USAGE); return 0 end
if not cmd then
  io.stderr:write("spangate ttl: " .. opts .. "\n\n" .. tp.USAGE)
  return 2
end
local hook = require("jobs.lib.ttl_hook")

local CH_ATTEMPTS = 3

-- ================================ apply ================================================

local function apply()
  if not gw.ch.server then
    io.stderr:write("spangate ttl apply: ClickHouse: " .. tostring(gw.ch.server_error) .. "\n")
    return 1
  end
  local DB = store.ch_db()
  local BATCH = opts.batch
  local INSERT_BYTES = 64 * 1048576
  if not opts.dry_run and not opts.no_index then store.ensure_keyset_index() end
  local SQL_FIRST = format("SELECT %s FROM spans WHERE project_id = $1 ORDER BY spans.created_at, spans.trace_id, spans.span_id LIMIT $2",
    store.PG_SPAN_COLUMNS)
  local SQL_NEXT = format("SELECT %s FROM spans WHERE project_id = $1 AND (created_at, trace_id, span_id) > (%s, $3::uuid, $4::uuid)" ..
    " ORDER BY spans.created_at, spans.trace_id, spans.span_id LIMIT $5", store.PG_SPAN_COLUMNS, store.ts(2))

  local projects, unrouted = store.select_projects(opts.project)
  for _, p in ipairs(unrouted) do gw.log.info("project %s: routing.lua keeps it out of ClickHouse; skipped", p) end
  gw.log.info("ttl apply: %d projects; retention from %s%s", #projects, hook.source(),
    opts.dry_run and " (dry run)" or "")

  local t0, total = gw.now(), {scanned = 0, changed = 0, missing = 0, rejected = 0}
  local out = {}
  local batch = not opts.dry_run and gw.ch.span_batch() or nil
  for _, p in ipairs(projects) do
    local s = {scanned = 0, present = 0, changed = 0, missing = 0, rejected = 0}
    local last
    while true do
      local rows
      if last then
        rows = gw.pg.query(SQL_NEXT, p, last.created_us, last.trace_id, last.span_id, BATCH)
      else
        rows = gw.pg.query(SQL_FIRST, p, BATCH)
      end
      local n = #rows
      if n == 0 then break end
      -- what ClickHouse stores for the page's keys: the page's created_at
      -- seconds, the sort key's prefix, so ClickHouse reads only that range
      local lo_s = math.floor(tonumber(rows[1].created_us) / 1e6)
      local hi_s = math.floor(tonumber(rows[n].created_us) / 1e6) + 1
      local stored = {}
      for _, r in ipairs(gw.ch.query(format([[
          SELECT concat(toString(trace_id), '/', toString(span_id)), toUInt32(expires_at)
          FROM %s.spans FINAL
          WHERE project_id = toUUID('%s') AND created_at >= %s AND created_at < %s]],
          DB, p, store.ch_second(lo_s), store.ch_second(hi_s)), "TSV")) do
        stored[r[1]] = tonumber(r[2])
      end
      local changed = {}
      for _, row in ipairs(rows) do
        local old = stored[row.trace_id .. "/" .. row.span_id]
        if old == nil then
          s.missing = s.missing + 1
        else
          s.present = s.present + 1
          local new = tp.expires_s(tonumber(row.created_us), hook.retention(p, row))
          if new ~= old then
            changed[#changed + 1] = row
            if not s.example then s.example = {old = old, new = new} end
          end
        end
      end
      s.scanned = s.scanned + n
      s.changed = s.changed + #changed
      if #changed > 0 and not opts.dry_run then
        local _, rejected, why = batch:add(p, changed)
        if rejected > 0 then
          s.rejected = s.rejected + rejected
          gw.log.error("project %s: %d spans cannot be written to ClickHouse (first: %s)", p, rejected, tostring(why))
        end
        if batch:bytes() >= INSERT_BYTES then batch:send() end
      end
      local l = rows[n]
      last = {created_us = l.created_us, trace_id = l.trace_id, span_id = l.span_id}
      if n < BATCH then break end
    end
    total.scanned, total.changed = total.scanned + s.scanned, total.changed + s.changed
    total.missing, total.rejected = total.missing + s.missing, total.rejected + s.rejected
    local ex = s.example
    out[#out + 1] = {p, plan.fmt_count(s.scanned), plan.fmt_count(s.present), plan.fmt_count(s.changed),
      plan.fmt_count(s.missing), ex and tp.fmt_expires(ex.old) or "", ex and tp.fmt_expires(ex.new) or ""}
  end
  if batch then batch:send() end
  io.stdout:write(plan.render_table({"project", "scanned", "in clickhouse", opts.dry_run and "would change" or "changed",
    "not in clickhouse", "e.g. old expires_at", "new expires_at"}, out))
  io.stdout:write(format("ttl apply: %s rows scanned, %s %s, %s not in ClickHouse (spangate migrate copies them) in %.2f s%s\n",
    plan.fmt_count(total.scanned), plan.fmt_count(total.changed), opts.dry_run and "would change" or "re-written",
    plan.fmt_count(total.missing), (gw.now() - t0) / 1e6, opts.dry_run and "; dry run: nothing changed" or ""))
  if hook.errors() > 0 then
    io.stdout:write(format("ttl.lua failed for %d spans (kept forever; see the log)\n", hook.errors()))
  end
  if total.rejected > 0 then
    io.stdout:write(format("%d spans could not be written to ClickHouse (see the log)\n", total.rejected))
    return 1
  end
  return 0
end

-- ================================ purge-postgres ================================================

local function purge()
  if not opts.dry_run and gw.config.pg_retention ~= true then
    io.stderr:write("spangate ttl purge-postgres: refusing to delete from PostgreSQL: pg_retention is off.\n" ..
      "Set pg_retention = true in gateway.conf (or SPANGATE_PG_RETENTION=true) to opt in;\n" ..
      "--dry-run shows what would be deleted.\n")
    return 2
  end
  -- ClickHouse gets the same deletes whenever it is in use or reachable:
  -- deleting from PostgreSQL alone would leave ClickHouse claiming traces
  -- PostgreSQL no longer has.
  local ch = not opts.no_clickhouse and gw.ch.server ~= nil
  if not opts.no_clickhouse and not gw.ch.server and gw.config.use_clickhouse then
    io.stderr:write("spangate ttl purge-postgres: ClickHouse is not reachable (" .. tostring(gw.ch.server_error) ..
      "); deleting from PostgreSQL alone would leave ClickHouse with traces PostgreSQL no longer has.\n" ..
      "Fix ClickHouse, or run with --no-clickhouse to accept that.\n")
    return 1
  end
  local DB = ch and store.ch_db()
  local BATCH = opts.batch_traces

  -- Deletes one chunk of traces from ClickHouse; returns the rows there were
  -- and the rows left. One mutation at a time, awaited and checked: on
  -- 18.16 mutations queued while others (or merges) are pending were seen
  -- marked done with their rows still there, so each one waits for an idle
  -- table, and a chunk whose rows survive gets another mutation.
  local function ch_delete(p, ids)
    local where = format("project_id = toUUID('%s') AND trace_id IN (%s)", p, store.uuid_list(ids))
    local count_sql = format("SELECT count() FROM %s.spans WHERE %s", DB, where)
    local n = tonumber(gw.ch.query(count_sql, "TSV")[1][1])
    if n == 0 or opts.dry_run then return n, 0 end
    local left = n
    for _ = 1, CH_ATTEMPTS do
      store.wait_mutations(600)
      gw.ch.query(format("ALTER TABLE %s DELETE WHERE %s", store.ch_mutation_target(), where))
      store.wait_mutations(600)
      left = tonumber(gw.ch.query(count_sql, "TSV")[1][1])
      -- on a cluster the count can reach a replica still running the mutation
      left = store.settle(left > 0 and {left} or {}, function()
        local l = tonumber(gw.ch.query(count_sql, "TSV")[1][1])
        return l > 0 and {l} or {}
      end)[1] or 0
      if left == 0 then break end
      gw.log.warn("project %s: %d of %d ClickHouse rows survived their DELETE mutation; again", p, left, n)
    end
    return n, left
  end
  local now = gw.now()

  local ROOTS_FIRST = format("SELECT %s FROM spans WHERE project_id = $1 AND parent_id IS NULL" ..
    " ORDER BY spans.created_at, spans.trace_id LIMIT $2", store.PG_SPAN_COLUMNS)
  local ROOTS_NEXT = format("SELECT %s FROM spans WHERE project_id = $1 AND parent_id IS NULL" ..
    " AND (created_at, trace_id) > (%s, $3::uuid) ORDER BY spans.created_at, spans.trace_id LIMIT $4",
    store.PG_SPAN_COLUMNS, store.ts(2))

  -- projects, the most overdue first (their oldest root: one index probe each)
  local listed = #opts.project > 0 and opts.project or store.pg_projects()
  local projects, oldest = {}, {}
  for _, p in ipairs(listed) do
    local r = gw.pg.query([[SELECT (extract(epoch FROM created_at) * 1000000)::int8 AS c FROM spans
        WHERE project_id = $1 AND parent_id IS NULL ORDER BY created_at LIMIT 1]], p)
    if #r == 1 then projects[#projects + 1] = p; oldest[p] = tonumber(r[1].c) end
  end
  table.sort(projects, function(a, b)
    if oldest[a] ~= oldest[b] then return oldest[a] < oldest[b] end
    return a < b
  end)
  gw.log.info("ttl purge-postgres: %d projects with traces; retention from %s; ClickHouse %s%s",
    #projects, hook.source(), ch and "too" or "left alone", opts.dry_run and " (dry run)" or "")

  local out, total, failed = {}, {traces = 0, spans = 0, ch_rows = 0, projects = 0}, false
  for _, p in ipairs(projects) do
    if opts.max_projects and total.projects >= opts.max_projects then
      gw.log.info("--max-projects %d reached; the other projects wait for the next run", opts.max_projects)
      break
    end
    local s = {traces = 0, spans = 0, ch_rows = 0}
    local last
    while true do
      local roots
      if last then
        roots = gw.pg.query(ROOTS_NEXT, p, last.created_us, last.trace_id, BATCH)
      else
        roots = gw.pg.query(ROOTS_FIRST, p, BATCH)
      end
      if #roots == 0 then break end
      local ids = {}
      for _, r in ipairs(roots) do
        local c = tonumber(r.created_us)
        if tp.expired(c, hook.retention(p, r), now) then
          ids[#ids + 1] = r.trace_id
          if not s.newest or c > s.newest then s.newest = c end
        end
      end
      -- a page with nothing expired ends the project for this run (roots come
      -- oldest first: with a per-project policy nothing newer can be expired)
      if #ids == 0 then break end
      local ch_ok = true
      if ch then
        for _, part in ipairs(tp.chunks(ids, tp.CH_IDS_PER_STATEMENT)) do
          local n, left = ch_delete(p, part)
          s.ch_rows = s.ch_rows + n
          if left > 0 then
            ch_ok, failed = false, true
            gw.log.error("project %s: ClickHouse still has %d rows of %d traces after %d mutations; " ..
              "their PostgreSQL delete is skipped (the next run tries again)", p, left, #part, CH_ATTEMPTS)
          end
        end
      end
      local arr = tp.pg_uuid_array(ids)
      local r
      if not ch_ok then
        r = {traces = 0, spans = 0}
      elseif opts.dry_run then
        r = gw.pg.query([[SELECT count(*) AS spans, count(DISTINCT trace_id) AS traces FROM spans
            WHERE project_id = $1 AND trace_id = ANY($2::uuid[])]], p, arr)[1]
      else
        -- one statement: its own transaction, the whole batch of traces or nothing
        r = gw.pg.query([[WITH d AS (DELETE FROM spans WHERE project_id = $1 AND trace_id = ANY($2::uuid[])
            RETURNING trace_id) SELECT count(*) AS spans, count(DISTINCT trace_id) AS traces FROM d]], p, arr)[1]
      end
      s.traces, s.spans = s.traces + tonumber(r.traces), s.spans + tonumber(r.spans)
      local l = roots[#roots]
      last = {created_us = l.created_us, trace_id = l.trace_id}
      if #roots < BATCH then break end
    end
    if s.traces > 0 then
      total.projects = total.projects + 1
      total.traces, total.spans, total.ch_rows = total.traces + s.traces, total.spans + s.spans, total.ch_rows + s.ch_rows
      out[#out + 1] = {p, plan.fmt_count(s.traces), plan.fmt_count(s.spans),
        ch and plan.fmt_count(s.ch_rows) or "-", plan.day_text(s.newest)}
      gw.log.info("project %s: %s %d traces (%d spans)", p, opts.dry_run and "would delete" or "deleted", s.traces, s.spans)
    end
  end
  local verb = opts.dry_run and "would delete" or "deleted"
  io.stdout:write(plan.render_table({"project", "traces " .. verb, "spans " .. verb, "clickhouse rows", "newest root day"}, out))
  io.stdout:write(format("ttl purge-postgres: %s traces (%s spans) %s in %d projects; ClickHouse: %s%s\n",
    plan.fmt_count(total.traces), plan.fmt_count(total.spans), verb, total.projects,
    ch and (plan.fmt_count(total.ch_rows) .. " rows " .. verb) or "left alone",
    opts.dry_run and "; dry run: nothing changed" or ""))
  if hook.errors() > 0 then
    io.stdout:write(format("ttl.lua failed for %d root spans (their traces were kept; see the log)\n", hook.errors()))
  end
  return failed and 1 or 0
end

if cmd == "apply" then return apply() end
return purge()
