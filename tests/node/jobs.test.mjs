// `spangate migrate` and `spangate validate` against real PostgreSQL and
// ClickHouse: 150,000 spans seeded straight into PostgreSQL, a migration
// killed part-way and resumed, a second run that changes nothing, validate
// catching spans deleted from ClickHouse, a hard delete in PostgreSQL, and a
// dual-write gap; migrate repairing each; a sample larger than one ClickHouse
// query holds; query_raw results freed explicitly or by the collector;
// gw.ch.span_batch, the migration's shared inserts.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, ROOT, CH_PORT, createDatabase, pgQuery, chQuery, sleep, until } from './lib/harness.mjs';

const N = 150000;
const P = (i) => `0190a3b4-0000-7000-8000-0000000000c${i}`;
let db, conf, chdb;

// Runs spangate with args; resolves {code, signal, out, err, ms}. onStart(proc) may kill it.
function spangate(args, onStart) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    proc.stdout.on('data', (d) => { out += d; });
    proc.stderr.on('data', (d) => { err += d; if (process.env.SG_TEST_VERBOSE) process.stderr.write(d); });
    proc.on('exit', (code, signal) => resolve({ code, signal, out, err, ms: Date.now() - t0 }));
    if (onStart) onStart(proc);
  });
}
const migrate = (...a) => spangate(['migrate', '-c', conf, ...a]);
const validate = (...a) => spangate(['validate', '-c', conf, ...a]);
const ch = (sql) => chQuery(sql, chdb);
const pgq = (sql, p) => pgQuery(db.uri, sql, p);

async function countsByProject() {
  const pg = Object.fromEntries((await pgq('SELECT project_id::text AS p, count(*)::int AS n FROM spans GROUP BY 1'))
    .map((r) => [r.p, r.n]));
  const c = Object.fromEntries((await ch('SELECT toString(project_id), count() FROM spans FINAL GROUP BY project_id'))
    .trim().split('\n').filter(Boolean).map((l) => { const [p, n] = l.split('\t'); return [p, Number(n)]; }));
  return { pg, ch: c };
}

async function waitMutations() {
  const done = await until(async () =>
    (await ch(`SELECT count() FROM system.mutations WHERE database = '${chdb}' AND is_done = 0`)).trim() === '0', 60000);
  assert.ok(done, 'ClickHouse mutations did not finish');
}

// Varied rows: every enum, NULLs, µs times, escapes and UTF-8 in names and
// JSON, big integers, soft-deleted and updated rows, created_at over 5 days.
const SEED = `
INSERT INTO spans (project_id, created_at, updated_at, deleted_at, created_by_id, updated_by_id, deleted_by_id,
  trace_id, span_id, parent_id, span_kind, span_name, start_time, end_time, status_code, status_message,
  attributes, events, links, "references", trace_type, span_type, hashes, session_id, user_id, agent_id)
SELECT
  ('0190a3b4-0000-7000-8000-0000000000c' || (g % 4))::uuid, c,
  CASE WHEN g % 7 = 0 THEN c + (g % 3600) * interval '1 second' + interval '17 microseconds' END,
  CASE WHEN g % 97 = 0 THEN c + interval '2 hours' END,
  '00000000-0000-0000-0000-000000000000'::uuid,
  CASE WHEN g % 7 = 0 THEN md5('u' || (g % 10))::uuid END,
  CASE WHEN g % 97 = 0 THEN md5('d' || (g % 10))::uuid END,
  md5('t' || (g / 5))::uuid, md5('s' || g)::uuid,
  CASE WHEN g % 5 = 0 THEN NULL ELSE md5('s' || (g - g % 5))::uuid END,
  (enum_range(NULL::otelspankind))[1 + g % 6],
  'span ' || (g % 50) || CASE WHEN g % 11 = 0 THEN E' tab\\there\\nnewline \\\\ back ünï' ELSE '' END,
  c - (g % 5000) * interval '1 millisecond' - (g % 997) * interval '1 microsecond',
  c - (g % 997) * interval '1 microsecond',
  (enum_range(NULL::otelstatuscode))[1 + g % 3],
  CASE WHEN g % 3 = 2 THEN 'error ' || g END,
  jsonb_build_object('ag', jsonb_build_object('type', jsonb_build_object('node', 'task'),
      'metrics', jsonb_build_object('tokens', g % 1000, 'cost', (g % 100) / 8.0, 'big', 9007199254740993 + g)),
    'gen_ai.prompt', repeat('lorem ', g % 40), 'n', g, 'flag', g % 2 = 0,
    'list', jsonb_build_array(1, 'two', NULL, 3.5, jsonb_build_object('z', 1, 'a', 2)),
    'esc', E'quote " back \\\\ tab \\t nl \\n uni \\u00e9'),
  CASE WHEN g % 4 = 0 THEN NULL ELSE jsonb_build_array(jsonb_build_object('name', 'ev' || (g % 3),
    'timestamp', to_char(c, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'attributes', jsonb_build_object('k', g))) END,
  CASE WHEN g % 6 = 0 THEN jsonb_build_array(jsonb_build_object('trace_id', md5('t' || g), 'span_id', md5('s' || g))) END,
  CASE WHEN g % 8 = 0 THEN jsonb_build_array(jsonb_build_object('id', md5('r' || g)::uuid, 'attributes', '{}'::jsonb)) END,
  CASE WHEN g % 3 = 0 THEN NULL ELSE (enum_range(NULL::tracetype))[1 + g % 3] END,
  (enum_range(NULL::spantype))[1 + g % 12],
  CASE WHEN g % 9 = 0 THEN '[]'::jsonb END,
  CASE WHEN g % 3 = 0 THEN 'sess-' || (g % 100) END,
  CASE WHEN g % 4 = 1 THEN 'user-' || (g % 10) END,
  CASE WHEN g % 5 = 2 THEN 'agent' END
FROM (SELECT g, timestamptz '2024-05-01 00:00:00+00'
        + ((g * 2654435761::int8) % (5::int8 * 86400 * 1000000)) * interval '1 microsecond' AS c
      FROM generate_series(1, ${N}) g) s`;

before(async () => {
  db = await createDatabase();
  chdb = db.name;
  const dir = mkdtempSync(join(tmpdir(), 'sg-jobs-'));
  mkdirSync(join(dir, 'spool'));
  conf = join(dir, 'gateway.conf');
  writeFileSync(conf, [
    `postgres_uri = "${db.uri}"`, 'use_clickhouse = true', 'clickhouse_host = "127.0.0.1"',
    `clickhouse_port = ${CH_PORT}`, `clickhouse_database = "${chdb}"`, `scripts = "${join(ROOT, 'lua')}"`,
    `spool_dir = "${join(dir, 'spool')}"`, 'log_level = "info"',
  ].join('\n') + '\n');
  execFileSync(BIN, ['schema', '--apply', '-c', conf], { stdio: 'pipe' });
  // Agenta's secondary indexes (GIN, full-text, btree) cost ~30 s for 150k rows
  // and play no part in the jobs: only the primary key stays.
  const ixs = await pgq(`SELECT indexname AS i FROM pg_indexes
    WHERE tablename = 'spans' AND schemaname = current_schema() AND indexname <> 'spans_pkey'`);
  for (const { i } of ixs) await pgq(`DROP INDEX IF EXISTS ${i}`);
  const t0 = Date.now();
  await pgq(SEED);
  await pgq('ANALYZE spans');
  // Agenta's older observability table, in a reduced form
  await pgq(`CREATE TABLE nodes (project_id uuid NOT NULL, created_at timestamptz NOT NULL,
    updated_at timestamptz, node_id uuid NOT NULL, tree_id uuid, root_id uuid, node_name varchar,
    data jsonb, PRIMARY KEY (project_id, node_id))`);
  await pgq(`INSERT INTO nodes SELECT ('0190a3b4-0000-7000-8000-0000000000c' || (g % 2))::uuid,
    timestamptz '2024-05-01' + g * interval '1.000123 second', CASE WHEN g % 2 = 0 THEN now() END,
    md5('n' || g)::uuid, md5('t' || (g / 10))::uuid, NULL, E'node\t' || g, jsonb_build_object('x', g)
    FROM generate_series(1, 200) g`);
  console.log(`# seeded ${N} spans in PostgreSQL in ${Date.now() - t0} ms`);
});

test('a migration killed part-way resumes and ends complete and exact', async () => {
  let killedAfter = null;
  const first = await spangate(['migrate', '-c', conf, '--parallel', '2'], (proc) => {
    (async () => {
      // SIGKILL once a few batches are checkpointed (and well before the end)
      await until(async () => {
        try {
          const r = await pgq("SELECT coalesce(sum(rows), 0)::int AS n FROM spangate_checkpoints WHERE job = 'migrate'");
          if (r[0].n >= 20000) { killedAfter = r[0].n; return true; }
        } catch { /* the table does not exist yet */ }
        return false;
      }, 60000, 100);
      proc.kill('SIGKILL');
    })();
  });
  assert.equal(first.signal, 'SIGKILL', `migrate ended before it was killed: ${first.out}\n${first.err}`);
  const partial = Number((await ch('SELECT count() FROM spans FINAL')).trim());
  assert.ok(partial > 0 && partial < N, `partial copy expected, ClickHouse has ${partial}`);
  const running = await pgq("SELECT count(*)::int AS n FROM spangate_checkpoints WHERE status = 'running'");
  console.log(`# killed after ${killedAfter} checkpointed rows; ClickHouse had ${partial}; ${running[0].n} ranges mid-way`);

  const second = await migrate();
  assert.equal(second.code, 0, `${second.out}\n${second.err}`);
  const copied = Number(second.out.match(/migrate: ([\d,]+) spans copied/)[1].replace(/,/g, ''));
  assert.ok(copied < N, `the second run should not copy everything again (copied ${copied})`);
  assert.match(second.out, /already agreed/);
  assert.doesNotMatch(second.err, /\[error\]/);
  const c = await countsByProject();
  assert.deepEqual(c.ch, c.pg);
  assert.equal(Object.keys(c.pg).length, 4);

  assert.equal((await ch('SELECT count() FROM nodes FINAL')).trim(), '200');
  const node = (await ch(`SELECT attributes, toString(created_at_us) FROM nodes FINAL
    WHERE node_id = toUUID('${(await pgq("SELECT md5('n7')::uuid::text AS u"))[0].u}')`)).trim().split('\t');
  assert.deepEqual(JSON.parse(node[0].replace(/\\\\/g, '\\')), { node_name: 'node\t7', data: { x: 7 }, updated_at: null });
  assert.equal(node[1], '861');

  const v = await validate('--sample', '300');
  assert.equal(v.code, 0, `${v.out}\n${v.err}`);
  assert.match(v.out, /sample: 300 spans compared field by field, 0 differ/);
  assert.match(v.out, /ClickHouse matches PostgreSQL/);
});

test('a second migration changes nothing and is fast', async () => {
  const r = await migrate();
  assert.equal(r.code, 0, `${r.out}\n${r.err}`);
  assert.match(r.out, /migrate: 0 spans copied/);
  assert.match(r.out, /0 ranges copied, 20 already agreed/);
  console.log(`# second run over ${N} spans: ${r.ms} ms`);
  assert.ok(r.ms < 20000, `second run took ${r.ms} ms`);
});

test('validate --json passes and reports every project-day', async () => {
  const r = await validate('--json', '--sample', '50');
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out);
  assert.equal(j.ok, true);
  assert.equal(j.ranges.length, 20);
  for (const x of j.ranges) {
    assert.equal(x.status, 'ok');
    assert.equal(x.postgres, x.clickhouse);
    assert.equal(x.postgres_checksum, x.clickhouse_checksum);
  }
  assert.equal(j.sample.compared, 50);
});

test('validate --sample beyond what one ClickHouse query holds passes', async () => {
  // 5000 keys as one IN list are ~560 KiB, over ClickHouse's max_query_size
  // (256 KiB): the job looks them up in chunks.
  const r = await validate('--sample', '5000');
  assert.equal(r.code, 0, `${r.out}\n${r.err}`);
  assert.match(r.out, /sample: 5000 spans compared field by field, 0 differ/);
  console.log(`# validate --sample 5000 over ${N} spans: ${r.ms} ms`);
  // more than the range has: every span of it, once
  const range = ['--project', P(0), '--since', '2024-05-01', '--until', '2024-05-01T02:00:00Z'];
  const [{ n }] = await pgq(`SELECT count(*)::int AS n FROM spans WHERE project_id = $1
    AND created_at >= '2024-05-01 00:00:00+00' AND created_at < '2024-05-01 02:00:00+00'`, [P(0)]);
  assert.ok(n > 0 && n < 5000, `${n} spans in the range`);
  const few = await validate(...range, '--sample', '5000');
  assert.equal(few.code, 0, `${few.out}\n${few.err}`);
  assert.match(few.out, new RegExp(`sample: ${n} spans compared field by field, 0 differ`));
});

test('spans deleted from ClickHouse fail validate, naming the project; migrate repairs them', async () => {
  await ch(`ALTER TABLE spans DELETE WHERE project_id = toUUID('${P(2)}') AND toDayOfMonth(created_at) IN (2, 4)`);
  await waitMutations();
  const bad = await validate('--sample', '100');
  assert.equal(bad.code, 1, bad.out);
  const differs = bad.out.split('\n').filter((l) => l.startsWith('DIFFERS: project'));
  assert.deepEqual(differs.map((l) => l.split(' ')[2] + ' ' + l.split(' ')[4].replace(':', '')).sort(),
    [`${P(2)} 2024-05-02`, `${P(2)} 2024-05-04`]);
  assert.match(bad.out, /ClickHouse DIFFERS from PostgreSQL/);

  const fix = await migrate();
  assert.equal(fix.code, 0, `${fix.out}\n${fix.err}`);
  assert.match(fix.out, /2 ranges copied, 18 already agreed/);
  const good = await validate();
  assert.equal(good.code, 0, good.out);
});

test('spans deleted from PostgreSQL are removed from ClickHouse', async () => {
  await pgq(`DELETE FROM spans WHERE project_id = $1 AND span_id IN
    (SELECT span_id FROM spans WHERE project_id = $1 ORDER BY span_id LIMIT 3)`, [P(1)]);
  const bad = await validate('--sample', '10');
  assert.equal(bad.code, 1);
  assert.match(bad.out, new RegExp(`DIFFERS: project ${P(1)} day .*count differs`));
  const fix = await migrate();
  assert.equal(fix.code, 0, `${fix.out}\n${fix.err}`);
  // 18.16 sometimes reports a mutation done before its rows are gone; the
  // job then checks again and removes the stragglers, so the count it prints
  // can exceed 3. What matters is the end state, checked below.
  const removed = Number((fix.out.match(/(\d+) spans removed from ClickHouse/) || [])[1]);
  assert.ok(removed >= 3, fix.out);
  const good = await validate();
  assert.equal(good.code, 0, good.out);
  const c = await countsByProject();
  assert.deepEqual(c.ch, c.pg);
});

test('a recorded dual-write gap is repaired and marked', async () => {
  // An update that never reached ClickHouse: same count, same version.
  const [row] = await pgq(`UPDATE spans SET span_name = 'renamed while ClickHouse was away'
    WHERE project_id = $1 AND span_id = (SELECT span_id FROM spans WHERE project_id = $1 ORDER BY span_id LIMIT 1)
    RETURNING created_at`, [P(3)]);
  await pgq(`INSERT INTO spangate_ch_gaps (project_id, first_created_at, last_created_at, spans, reason)
    VALUES ($1, $2, $2, 1, 'spool full')`, [P(3), row.created_at]);
  const bad = await validate('--sample', '0');
  assert.equal(bad.code, 1);
  assert.match(bad.out, new RegExp(`DIFFERS: project ${P(3)} .*checksum differs`));
  const fix = await migrate();
  assert.equal(fix.code, 0, `${fix.out}\n${fix.err}`);
  assert.match(fix.out, /1 gaps marked repaired/);
  const gaps = await pgq('SELECT count(*)::int AS n FROM spangate_ch_gaps WHERE repaired_at IS NULL');
  assert.equal(gaps[0].n, 0);
  const good = await validate();
  assert.equal(good.code, 0, good.out);
});

test('gw.pg.query_raw: r:free() releases the rows; dropped results do not pile up', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-raw-'));
  const script = join(dir, 'raw.lua');
  writeFileSync(script, `
    local gw = require("gw")
    local r = gw.pg.query_raw("SELECT g AS n, 'x' || g AS t FROM generate_series(1, 3) g")
    assert(#r == 3 and r:get(2, "t") == "x2" and r:row(3).n == "3")
    r:free()
    r:free() -- again: nothing to do
    assert(#r == 0, "#r after free: " .. #r)
    for _, f in ipairs({function() return r:get(1, "t") end, function() return r:row(1) end,
        function() return r:columns() end, function() return gw.ch.insert_spans("${P(0)}", r) end}) do
      local ok, e = pcall(f)
      assert(not ok and tostring(e):match("result was freed"), tostring(e))
    end
    -- ~1 MB results dropped without r:free(): the collector knows their size
    -- and finalizes them (a weak table sees which are still alive)
    local function hwm()
      for l in io.lines("/proc/self/status") do
        local kb = l:match("^VmHWM:%s*(%d+)")
        if kb then return tonumber(kb) end
      end
    end
    local h0, live = hwm(), setmetatable({}, {__mode = "v"})
    for i = 1, 100 do
      live[i] = gw.pg.query_raw("SELECT repeat('x', 1000) || g AS v FROM generate_series(1, 1000) g")
    end
    local n = 0
    for _ in pairs(live) do n = n + 1 end
    print(string.format("live=%d hwm_growth_kb=%d", n, hwm() - h0))`);
  const s = await spangate(['run', '-c', conf, script]);
  assert.equal(s.code, 0, s.err);
  const [, live, growth] = s.out.match(/live=(\d+) hwm_growth_kb=(\d+)/);
  console.log(`# 100 dropped 1 MB results: ${live} still alive, peak RSS +${Math.round(growth / 1024)} MB`);
  // without the accounting all 100 stay (the Lua heap hardly grows): +100 MB
  assert.ok(Number(live) <= 10, `${live} of 100 results still alive`);
});

test('gw.ch.span_batch: pages of rows into one insert, sent in place, reused', async () => {
  // its own ClickHouse database: the tests around this one compare the stores
  const dir = mkdtempSync(join(tmpdir(), 'sg-batch-'));
  const bdb = `${chdb}_batch`;
  const conf2 = join(dir, 'gateway.conf');
  writeFileSync(conf2, readFileSync(conf, 'utf8').replace(`clickhouse_database = "${chdb}"`, `clickhouse_database = "${bdb}"`));
  await chQuery(`CREATE DATABASE IF NOT EXISTS ${bdb}`);
  await chQuery(`CREATE TABLE ${bdb}.spans AS ${chdb}.spans`); // (schema --apply would rebuild PostgreSQL's indexes)
  const script = join(dir, 'batch.lua');
  writeFileSync(script, `
    local gw = require("gw")
    local store = require("jobs.lib.store")
    local P1 = "${P(1)}"
    local SQL = "SELECT " .. store.PG_SPAN_COLUMNS .. " FROM spans WHERE project_id = $1 ORDER BY span_id LIMIT $2 OFFSET $3"
    local b = gw.ch.span_batch()
    assert(b:rows() == 0 and b:bytes() == 0)
    local r = gw.pg.query_raw(SQL, P1, 300, 0)
    local n, rejected = b:add(P1, r)
    r:free() -- the rows are encoded: the result may go at once
    assert(n == 300 and rejected == 0, n .. " " .. rejected)
    r = gw.pg.query_raw(SQL, P1, 200, 300)
    assert(b:add(P1, r) == 200)
    local n3, rej3, why = b:add(P1, {{trace_id = "not a uuid"}})
    assert(n3 == 0 and rej3 == 1 and why, tostring(why))
    local ok, e = pcall(b.add, b, "nope", r)
    assert(not ok and e:match("batch:add: bad argument #1 %(project id expected"), e)
    ok, e = pcall(b.add, b, P1, r)
    r:free()
    assert(b:rows() == 700 and b:bytes() > 0, b:rows())
    ok, e = pcall(b.add, b, P1, r)
    assert(not ok and e:match("result was freed"), e)
    local before = gw.ch.query("SELECT count() FROM spans", "TSV")[1][1]
    -- while the insert is in flight the batch is the request's (the task
    -- runs at the next yield: inside b:send(), before any reply is read)
    local other = gw.spawn(function()
      local ok2, e2 = pcall(b.add, b, P1, {})
      assert(not ok2 and e2:match("being sent"), e2)
      return true
    end)
    assert(b:send() == 700)
    assert(gw.wait(other))
    assert(b:rows() == 0 and b:bytes() == 0)
    assert(b:send() == 0) -- empty: nothing sent
    r = gw.pg.query_raw(SQL, P1, 100, 500)
    b:add(P1, r)
    r:free()
    assert(b:send() == 100)
    print("before=" .. before)`);
  const s = await spangate(['run', '-c', conf2, script]);
  assert.equal(s.code, 0, s.err);
  assert.match(s.out, /before=0/);
  // 300 + 200 + the same 200 again + 100: 600 distinct spans, as PostgreSQL has them
  assert.equal((await chQuery(`SELECT count(), uniqExact(span_id) FROM ${bdb}.spans FINAL`)).trim(), '600\t600');
  const pgIds = (await pgq(`SELECT span_id::text AS s FROM spans WHERE project_id = $1 ORDER BY span_id LIMIT 600`, [P(1)]))
    .map((r) => r.s).sort().join(',');
  const chIds = (await chQuery(`SELECT toString(span_id) FROM ${bdb}.spans FINAL`)).trim().split('\n').sort().join(',');
  assert.equal(chIds, pgIds);
  await chQuery(`DROP DATABASE ${bdb}`);
});

test('misuse: bad options and I/O outside a task give clear errors', async () => {
  const r = await migrate('--bogus');
  assert.equal(r.code, 2);
  assert.match(r.err, /unknown option '--bogus'/);
  const dir = mkdtempSync(join(tmpdir(), 'sg-run-'));
  const script = join(dir, 'misuse.lua');
  writeFileSync(script, `
    local gw = require("gw")
    local n = gw.pg.query("SELECT $1::int + 1 AS x", 41)[1].x
    local co = coroutine.wrap(function() return pcall(gw.sleep, 1) end)
    local ok, e = co()
    assert(not ok and e:match("gw.spawn"), e)
    local ok2, e2 = pcall(gw.pg.query, "SELECT 1/0")
    assert(not ok2 and e2:match("22012"), e2)
    local t = gw.spawn(function(a) gw.sleep(5) return a * 2 end, 21)
    assert(gw.wait(t) == 42)
    print("x=" .. n, ...)
    gw.exit(7)`);
  const s = await spangate(['run', '-c', conf, script, 'a', 'b']);
  assert.equal(s.code, 7, s.err);
  assert.match(s.out, /x=42\ta\tb/);
  writeFileSync(script, 'error("boom")');
  const f = await spangate(['run', '-c', conf, script]);
  assert.equal(f.code, 1);
  assert.match(f.err, /boom\nstack traceback:/);
});
