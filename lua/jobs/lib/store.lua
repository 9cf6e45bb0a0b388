-- jobs/lib/store.lua - what the migration and validation jobs ask both
-- stores: SQL text for PostgreSQL 15 and for ClickHouse (rendered for the
-- server's version: 18.16 keeps µs in `<col>_us` columns, 20.1+ has
-- DateTime64), project discovery, per-(project, day) statistics,
-- checkpoints and gaps. Every PostgreSQL statement is parameterized; the
-- ClickHouse ones only embed values this file validated (UUIDs, integers).
local gw = require("gw")
local plan = require("jobs.lib.plan")

local M = {}
local format, concat = string.format, table.concat

local function us_param(us) return format("%.0f", us) end
M.us_param = us_param

-- PostgreSQL: a timestamptz from a µs parameter, exactly.
local function ts(n) return format("('epoch'::timestamptz + $%d::int8 * interval '1 microsecond')", n) end
M.ts = ts
local function us_of(col) return format("(extract(epoch FROM %s) * 1000000)::int8", col) end

-- The spans columns gw.ch.insert_spans and the sample comparison read.
M.PG_SPAN_COLUMNS = concat({
  "trace_id::text AS trace_id", "span_id::text AS span_id", "parent_id::text AS parent_id",
  "trace_type::text AS trace_type", "span_type::text AS span_type", "span_kind::text AS span_kind",
  "span_name", us_of("start_time") .. " AS start_us", us_of("end_time") .. " AS end_us",
  "status_code::text AS status_code", "status_message",
  "attributes::text AS attributes", "\"references\"::text AS \"references\"",
  "links::text AS links", "hashes::text AS hashes", "events::text AS events",
  "session_id", "user_id", "agent_id",
  us_of("created_at") .. " AS created_us", us_of("updated_at") .. " AS updated_us",
  us_of("deleted_at") .. " AS deleted_us",
  "created_by_id::text AS created_by_id", "updated_by_id::text AS updated_by_id",
  "deleted_by_id::text AS deleted_by_id",
  us_of("coalesce(updated_at, created_at)") .. " AS version",
}, ", ")

-- ---- ClickHouse expressions -----------------------------------------------------

local function ch_us(col, nullable)
  local srv = gw.ch.server
  if srv and srv.datetime64 then return format("toUnixTimestamp64Micro(%s)", col) end
  return format("(toUInt64(toUInt32(%s)) * 1000000 + %s_us)", col, col)
end
M.ch_us = ch_us

-- A whole second (epoch s) as a constant of created_at's own type.
-- ClickHouse 26.x (26.7, found by tests/modern) answers `k < toDateTime(N)`
-- without the rows when k is a DateTime64 column of the sorting key (the
-- same comparison in a SELECT list is right); against toDateTime64 it
-- reads the right rows, on every version that has DateTime64.
function M.ch_second(s)
  local srv = gw.ch.server
  if srv and srv.datetime64 then return format("toDateTime64(%.0f, 6, 'UTC')", s) end
  return format("toDateTime(%.0f)", s)
end

-- Where ALTER TABLE ... DELETE goes: the spans table, or on a cluster its
-- local tables on every host (a Distributed table takes no mutation); and
-- the table name system.mutations knows them by (this host's).
function M.ch_mutation_target()
  local srv = assert(gw.ch.server, gw.ch.server_error)
  return srv.spans_mutation or (M.ch_db() .. ".spans")
end
function M.ch_mutation_table()
  local srv = assert(gw.ch.server, gw.ch.server_error)
  return srv.cluster and "spans_local" or "spans"
end

-- On a cluster a read through a Distributed table reaches one replica per
-- shard, and a replica fetches what another one took asynchronously (within
-- a second on a healthy cluster): right after a write a range can look
-- short. settle(list, recheck) gives such differences time: recheck(list)
-- reads them again and returns those that still differ, called after
-- pauses of 0.1 s growing to 1.5 s, 3 s in all, until none is left.
-- Returns what still differs then. One server: list as it is.
function M.settle(list, recheck)
  local srv = gw.ch.server
  if not (srv and srv.cluster) then return list end
  for _, ms in ipairs({100, 200, 400, 800, 1500}) do
    if #list == 0 then break end
    gw.sleep(ms)
    list = recheck(list)
  end
  return list
end

function M.ch_db()
  local srv = assert(gw.ch.server, gw.ch.server_error)
  return "`" .. srv.database:gsub("[`\\]", "\\%0") .. "`"
end

-- Waits until ClickHouse has no unfinished mutation (ALTER ... DELETE) on
-- the spans table: mutations run asynchronously. Polls every 100 ms for at
-- most timeout_s seconds; true when none is left, false on timeout.
function M.wait_mutations(timeout_s)
  local srv = assert(gw.ch.server, gw.ch.server_error)
  local sql = format("SELECT count() FROM system.mutations WHERE database = '%s' AND table = '" .. M.ch_mutation_table() .. "' AND is_done = 0",
    (srv.database:gsub("[\\']", "\\%0")))
  for _ = 1, timeout_s * 10 do
    if tonumber(gw.ch.query(sql, "TSV")[1][1]) == 0 then return true end
    gw.sleep(100)
  end
  return false
end

local function uuid_list(ids)
  local out = {}
  for i, p in ipairs(ids) do
    assert(plan.is_uuid(p), "not a UUID: " .. tostring(p))
    out[i] = format("toUUID('%s')", p)
  end
  return concat(out, ", ")
end
M.uuid_list = uuid_list

-- WHERE clause for ClickHouse: projects (list or nil = all) and [since, until) µs.
function M.ch_where(projects, since_us, until_us)
  local w = {}
  if projects and #projects > 0 then w[#w + 1] = "project_id IN (" .. uuid_list(projects) .. ")" end
  if since_us then w[#w + 1] = "created_at >= " .. M.ch_second(math.floor(since_us / 1e6)) end
  if until_us then w[#w + 1] = "created_at < " .. M.ch_second(math.ceil(until_us / 1e6)) end
  return #w > 0 and ("WHERE " .. concat(w, " AND ")) or ""
end

-- ---- discovery -------------------------------------------------------------------

-- Projects with spans in PostgreSQL: a skip scan over the primary key (one
-- index probe per project instead of reading every row).
function M.pg_projects()
  local rows = gw.pg.query([[
    WITH RECURSIVE p AS (
      (SELECT project_id FROM spans ORDER BY project_id LIMIT 1)
      UNION ALL
      SELECT (SELECT s.project_id FROM spans s WHERE s.project_id > p.project_id
              ORDER BY s.project_id LIMIT 1)
      FROM p WHERE p.project_id IS NOT NULL)
    SELECT project_id::text AS p FROM p WHERE project_id IS NOT NULL]])
  local out = {}
  for i, r in ipairs(rows) do out[i] = r.p end
  return out
end

function M.ch_projects()
  local rows = gw.ch.query(format("SELECT DISTINCT toString(project_id) FROM %s.spans", M.ch_db()), "TSV")
  local out = {}
  for i, r in ipairs(rows) do out[i] = r[1] end
  return out
end

-- ClickHouse-only projects the gateway recorded (docs/cutover.md): project
-- -> since (ISO text), from spangate_ch_only when the table exists.
function M.ch_only_recorded()
  local out = {}
  local t = gw.pg.query("SELECT to_regclass('spangate_ch_only') IS NOT NULL AS e")[1]
  if not t or t.e ~= "t" then return out end
  for _, r in ipairs(gw.pg.query([[SELECT project_id::text AS p,
      to_char(since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS s FROM spangate_ch_only]])) do
    out[r.p] = r.s
  end
  return out
end

-- The projects a job looks at: --project, or every project either store has;
-- minus those routing.lua keeps out of ClickHouse (returned second). With
-- split_ch_only, ClickHouse-only projects (routing.lua's M.postgres false,
-- or recorded in spangate_ch_only, which outlives a switch back to
-- PostgreSQL) are left out too and returned third, as {project, since}:
-- PostgreSQL is not their reference, so migrate and validate leave them alone.
function M.select_projects(listed, split_ch_only)
  local set, list = {}, {}
  local function add(p) if not set[p] then set[p] = true; list[#list + 1] = p end end
  if listed and #listed > 0 then
    for _, p in ipairs(listed) do add(p:lower()) end
  else
    for _, p in ipairs(M.pg_projects()) do add(p) end
    for _, p in ipairs(M.ch_projects()) do add(p) end
  end
  table.sort(list)
  local recorded = split_ch_only and M.ch_only_recorded() or {}
  local on, off, only = {}, {}, {}
  for _, p in ipairs(list) do
    if not gw.hooks.clickhouse(p) then
      off[#off + 1] = p
    elseif split_ch_only and (recorded[p] or not gw.hooks.postgres(p)) then
      only[#only + 1] = {project = p, since = recorded[p]}
    else
      on[#on + 1] = p
    end
  end
  return on, off, only
end

-- ---- statistics per (project, day) ----------------------------------------------

local PG_DAY = "(extract(epoch FROM date_trunc('day', created_at AT TIME ZONE 'UTC')) * 1000000)::int8"

-- Count and version sum of one project's days in [since, until) (µs, nil = open).
-- with_checksum adds the md5 checksum validate compares (see checksum_text);
-- count_only leaves out the version sum (vsum = nil). Without the checksum
-- PostgreSQL answers from the keyset index alone (spangate_spans_keyset
-- includes updated_at for the version sum) without reading the rows.
function M.pg_day_stats(project, since_us, until_us, with_checksum, count_only)
  local cs = with_checksum and (", (sum(('x' || substr(md5(" .. M.PG_CANON ..
    "), 1, 16))::bit(64)::int8::numeric) % 18446744073709551616 + 18446744073709551616)" ..
    " % 18446744073709551616 AS checksum") or ""
  local vs = count_only and "" or format(", sum(%s %% %d) AS vsum", us_of("coalesce(updated_at, created_at)"),
    plan.VSUM_MOD)
  local sql = format([[
    SELECT %s AS day, count(*) AS n%s%s
    FROM spans
    WHERE project_id = $1 AND created_at >= %s AND created_at < %s
    GROUP BY 1]], PG_DAY, vs, cs, ts(2), ts(3))
  local rows = gw.pg.query(sql, project, us_param(since_us or 0),
    us_param(until_us or 4291747199999999))
  local out = {}
  for _, r in ipairs(rows) do
    local day = tonumber(r.day)
    out[plan.range_key(project, day)] = {
      project = project, day = day, n = tonumber(r.n), vsum = r.vsum and tonumber(r.vsum),
      checksum = r.checksum ~= gw.null and r.checksum or nil,
    }
  end
  return out
end

-- The same statistics from ClickHouse (FINAL: one row per span), all
-- selected projects in one query. Spans deleted in PostgreSQL are tombstones
-- (is_deleted = 1) after FINAL: left out (WHERE applies after FINAL's merge).
function M.ch_day_stats(projects, since_us, until_us, with_checksum)
  local cs = with_checksum and (", toString(sum(reinterpretAsUInt64(reverse(substring(MD5(" ..
    M.ch_canon() .. "), 1, 8)))))") or ""
  local where = M.ch_where(projects, since_us, until_us)
  where = (where == "" and "WHERE " or where .. " AND ") .. "is_deleted = 0"
  local sql = format([[
    SELECT toString(project_id), toUInt32(toStartOfDay(created_at)), count(),
           sum(version %% %d)%s
    FROM %s.spans FINAL %s
    GROUP BY project_id, toStartOfDay(created_at)]], plan.VSUM_MOD, cs, M.ch_db(), where)
  local out = {}
  for _, r in ipairs(gw.ch.query(sql, "TSV")) do
    local day = tonumber(r[2]) * 1000000
    out[plan.range_key(r[1], day)] = {
      project = r[1], day = day, n = tonumber(r[3]), vsum = tonumber(r[4]), checksum = r[5],
    }
  end
  return out
end

-- Version sums and checksums only where they can change the outcome: the
-- (project, day) ranges whose counts already agree (pg from pg_day_stats
-- with count_only). A first migration (ClickHouse empty) then reads no row
-- for its plan. Fills pg[k].vsum/checksum and ch[k].checksum for those keys;
-- each project's days are asked for in one span [first agreeing day, last +
-- 1 day) within [since, until).
function M.add_checksums(pg, ch, since_us, until_us)
  local span = {}
  for k, p in pairs(pg) do
    local c = ch[k]
    if c and p.n > 0 and p.n == c.n then
      local s = span[p.project]
      if not s then s = {lo = p.day, hi = p.day, keys = {}}; span[p.project] = s end
      if p.day < s.lo then s.lo = p.day end
      if p.day > s.hi then s.hi = p.day end
      s.keys[#s.keys + 1] = k
    end
  end
  for project, s in pairs(span) do
    local lo, hi = s.lo, s.hi + plan.DAY_US
    if since_us and since_us > lo then lo = since_us end
    if until_us and until_us < hi then hi = until_us end
    local pgs, chs = M.pg_day_stats(project, lo, hi, true), M.ch_day_stats({project}, lo, hi, true)
    for _, k in ipairs(s.keys) do
      pg[k].vsum = pgs[k] and pgs[k].vsum
      pg[k].checksum = pgs[k] and pgs[k].checksum
      ch[k].checksum = chs[k] and chs[k].checksum
    end
  end
end

-- ---- checksums ---------------------------------------------------------------------
-- One 64-bit hash per span: the first 8 bytes of md5(canonical text), read
-- big-endian, summed modulo 2^64 (order-independent). The canonical text is
-- built identically by both servers:
--   trace|span|parent|kind|status|name|start_us|end_us|created_us|deleted_us|version
-- (ids in dashed lower case; NULLs as ""). JSON columns are not in it (their
-- text differs between jsonb and the compact form): the sample compares them.
M.PG_CANON = "concat_ws('|', trace_id::text, span_id::text, coalesce(parent_id::text, '')," ..
  " span_kind::text, status_code::text, span_name, " .. us_of("start_time") .. "::text, " ..
  us_of("end_time") .. "::text, " .. us_of("created_at") .. "::text, coalesce(" ..
  us_of("deleted_at") .. "::text, ''), " .. us_of("coalesce(updated_at, created_at)") .. "::text)"

function M.ch_canon()
  return "concat(toString(trace_id), '|', toString(span_id), '|', ifNull(toString(parent_id), ''), '|', " ..
    "toString(span_kind), '|', toString(status_code), '|', toString(span_name), '|', " ..
    "toString(" .. ch_us("start_time") .. "), '|', toString(" .. ch_us("end_time") .. "), '|', " ..
    "toString(" .. ch_us("created_at") .. "), '|', ifNull(toString(" .. ch_us("deleted_at") .. "), ''), '|', " ..
    "toString(version))"
end

-- ---- the keyset index ----------------------------------------------------------

-- The keyset index migrate and ttl apply page through (ClickHouse's order
-- within a project): created once, CONCURRENTLY, so ingest goes on; an
-- invalid one left by an interrupted build is dropped and built again.
function M.ensure_keyset_index()
  -- valid, and with updated_at as an included column (older spangate built it without)
  local r = gw.pg.query([[SELECT i.indisvalid::text AS v, (i.indnatts > i.indnkeyatts)::text AS inc
      FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid
      WHERE c.relname = 'spangate_spans_keyset' AND c.relnamespace = current_schema()::regnamespace]])
  if #r == 1 and r[1].v == "true" and r[1].inc == "true" then return end
  if #r == 1 then gw.pg.query("DROP INDEX CONCURRENTLY IF EXISTS spangate_spans_keyset") end
  gw.log.info("creating index spangate_spans_keyset ON spans (project_id, created_at, trace_id, span_id) " ..
    "INCLUDE (updated_at) CONCURRENTLY for the keyset pages (once, shared by migrate and ttl apply; " ..
    "--no-index skips it)")
  gw.pg.query("CREATE INDEX CONCURRENTLY IF NOT EXISTS spangate_spans_keyset ON spans " ..
    "(project_id, created_at, trace_id, span_id) INCLUDE (updated_at)")
end

-- ---- checkpoints and gaps ------------------------------------------------------

-- The job's own table (created on first use; `spangate schema --apply` does
-- not know it): one row per (job, project, day).
function M.ensure_checkpoints()
  local r = gw.pg.query("SELECT to_regclass('spangate_checkpoints') IS NOT NULL AS e")
  if r[1].e == "t" then return end
  gw.pg.query([[
    CREATE TABLE IF NOT EXISTS spangate_checkpoints (
      job text NOT NULL,
      project_id uuid NOT NULL,
      range_start timestamptz NOT NULL,
      range_end timestamptz NOT NULL,
      last_created_us bigint,
      last_trace_id uuid,
      last_span_id uuid,
      rows bigint NOT NULL DEFAULT 0,
      status text NOT NULL DEFAULT 'running',
      started_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      finished_at timestamptz,
      PRIMARY KEY (job, project_id, range_start))]])
end

function M.load_checkpoints(job)
  local r = gw.pg.query("SELECT to_regclass('spangate_checkpoints') IS NOT NULL AS e")
  if r[1].e ~= "t" then return {} end
  local out = {}
  local rows = gw.pg.query([[
    SELECT project_id::text AS p, ]] .. us_of("range_start") .. [[ AS day, status, rows,
           last_created_us::text AS lc, last_trace_id::text AS lt, last_span_id::text AS ls
    FROM spangate_checkpoints WHERE job = $1]], job)
  for _, c in ipairs(rows) do
    local last
    if c.lc ~= gw.null then last = {created_us = c.lc, trace_id = c.lt, span_id = c.ls} end
    out[plan.range_key(c.p, tonumber(c.day))] = {status = c.status, rows = tonumber(c.rows), last = last}
  end
  return out
end

function M.save_checkpoint(job, r, cp)
  local last = cp.last or {}
  gw.pg.query(format([[
    INSERT INTO spangate_checkpoints AS c (job, project_id, range_start, range_end, last_created_us,
      last_trace_id, last_span_id, rows, status, finished_at)
    VALUES ($1, $2, %s, %s, $5, $6, $7, $8, $9, CASE WHEN $9 = 'done' THEN now() END)
    ON CONFLICT (job, project_id, range_start) DO UPDATE SET
      last_created_us = EXCLUDED.last_created_us, last_trace_id = EXCLUDED.last_trace_id,
      last_span_id = EXCLUDED.last_span_id, rows = EXCLUDED.rows, status = EXCLUDED.status,
      updated_at = now(), finished_at = EXCLUDED.finished_at,
      started_at = CASE WHEN c.status = 'done' THEN now() ELSE c.started_at END]], ts(3), ts(4)),
    job, r.project, us_param(r.day), us_param(r.day + plan.DAY_US),
    last.created_us, last.trace_id, last.span_id, cp.rows or 0, cp.status)
end

function M.open_gaps(projects, since_us, until_us)
  local r = gw.pg.query("SELECT to_regclass('spangate_ch_gaps') IS NOT NULL AS e")
  if r[1].e ~= "t" then return {} end
  local rows = gw.pg.query(format([[
    SELECT id::text AS id, project_id::text AS p, %s AS f, %s AS l
    FROM spangate_ch_gaps
    WHERE repaired_at IS NULL AND last_created_at >= %s AND first_created_at < %s]],
    us_of("first_created_at"), us_of("last_created_at"), ts(1), ts(2)),
    us_param(since_us or 0), us_param(until_us or 4291747199999999))
  local want = {}
  for _, p in ipairs(projects) do want[p] = true end
  local out = {}
  for _, g in ipairs(rows) do
    if want[g.p] then
      local f, l = tonumber(g.f), tonumber(g.l)
      -- only the part inside the selected time range is repaired by this run,
      -- and a gap reaching outside it is not marked repaired
      local clipped = false
      if since_us and f < since_us then f, clipped = since_us, true end
      if until_us and l >= until_us then l, clipped = until_us - 1, true end
      out[#out + 1] = {id = g.id, project = g.p, first_us = f, last_us = l, clipped = clipped}
    end
  end
  return out
end

return M
