// `spangate ttl apply` and `spangate ttl purge-postgres` against real
// PostgreSQL and ClickHouse 18.16: a policy change re-applied to stored
// rows; PostgreSQL retention deleting exactly the expired traces, whole, and
// the same traces from ClickHouse, so that validate still passes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { appendFileSync, cpSync, mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BIN, ROOT, CH_PORT, KEY_A, KEY_B, PROJECT_A, PROJECT_B, createDatabase, pgQuery, chQuery, postJson,
  startGateway, until,
} from './lib/harness.mjs';

const PROJECT_C = '0190a3b4-0000-7000-8000-00000000000c';
const NEVER = '2105-12-31 23:59:59';

// Runs spangate; resolves {code, out, err}.
function spangate(args, env = {}) {
  return new Promise((resolve) => {
    const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '', err = '';
    proc.stdout.on('data', (d) => { out += d; });
    proc.stderr.on('data', (d) => { err += d; if (process.env.SG_TEST_VERBOSE) process.stderr.write(d); });
    proc.on('exit', (code) => resolve({ code, out, err }));
  });
}

// The per-project rows of a job's table: { project: [cells...] }.
function tableRows(out) {
  return Object.fromEntries(out.split('\n').filter((l) => /^[0-9a-f]{8}-/.test(l))
    .map((l) => { const c = l.trim().split(/\s{2,}/); return [c[0], c.slice(1)]; }));
}

test('ttl apply re-computes expires_at of stored rows after a policy change; --dry-run only reports', async () => {
  const d = mkdtempSync(join(tmpdir(), 'sg-ttlapply-'));
  cpSync(join(ROOT, 'lua'), d, { recursive: true });
  const gw = await startGateway({ clickhouse: true, scripts: d });
  try {
    const T = 'a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1';
    const span = (sid, parent) => ({ trace_id: T, span_id: sid, parent_id: parent, span_name: 'n',
      start_time: 1714979289, end_time: 1714979290, attributes: { 'gen_ai.system': 'x' } });
    assert.equal((await postJson(gw, '/v1/spans', { spans: [span('a000000000000001'),
      span('a000000000000002', 'a000000000000001'), span('a000000000000003', 'a000000000000001')] }, KEY_A)).status, 200);
    assert.equal((await postJson(gw, '/v1/spans', { spans: [span('b000000000000001'),
      span('b000000000000002', 'b000000000000001')] }, KEY_B)).status, 200);
    await until(async () => Number((await gw.ch('SELECT count() FROM spans FINAL')).trim()) === 5);
    const expiries = async () => Object.fromEntries((await gw.ch(`SELECT toString(project_id),
        groupArray(toUInt32(expires_at) - toUInt32(created_at)), groupArray(toString(expires_at))
        FROM spans FINAL GROUP BY project_id FORMAT JSONCompact`).then(JSON.parse)).data.map((r) => [r[0], r]));
    let e = await expiries();
    assert.deepEqual(e[PROJECT_A][2], [NEVER, NEVER, NEVER], 'no policy yet: never');
    assert.deepEqual(e[PROJECT_B][2], [NEVER, NEVER]);

    // the operator changes the policy: 31 days for project A
    writeFileSync(join(d, 'ttl.lua'), `
local M = {}
function M.retention_days(project_id, span)
  assert(span.span_name == "n" and span.trace_id and span.start_time > 0)
  if project_id == "${PROJECT_A}" then return 31 end
  return nil
end
return M
`);
    const dry = await spangate(['ttl', 'apply', '--dry-run', '-c', gw.conf]);
    assert.equal(dry.code, 0, dry.err + dry.out);
    let rows = tableRows(dry.out);
    // scanned, in clickhouse, would change, not in clickhouse, old, new
    assert.deepEqual(rows[PROJECT_A].slice(0, 4), ['3', '3', '3', '0'], dry.out);
    assert.equal(rows[PROJECT_A][4], 'never');
    assert.match(rows[PROJECT_A][5], /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
    assert.deepEqual(rows[PROJECT_B], ['2', '2', '0', '0'], dry.out);
    assert.match(dry.out, /5 rows scanned, 3 would change, .*dry run: nothing changed/);
    e = await expiries();
    assert.deepEqual(e[PROJECT_A][2], [NEVER, NEVER, NEVER], '--dry-run changed nothing');

    const run = await spangate(['ttl', 'apply', '-c', gw.conf]);
    assert.equal(run.code, 0, run.err + run.out);
    rows = tableRows(run.out);
    assert.deepEqual(rows[PROJECT_A].slice(0, 4), ['3', '3', '3', '0'], run.out);
    assert.deepEqual(rows[PROJECT_B], ['2', '2', '0', '0'], run.out);
    e = await expiries();
    for (const secs of e[PROJECT_A][1]) {
      // created_at has µs: expires_at is rounded up to the next second
      assert.ok(secs >= 31 * 86400 && secs <= 31 * 86400 + 1, `project A: ${secs} s after created_at`);
    }
    assert.deepEqual(e[PROJECT_B][2], [NEVER, NEVER], 'project B untouched');
    assert.equal(Number((await gw.ch('SELECT count() FROM spans FINAL')).trim()), 5, 'replaced, not added');
    // the rows are otherwise what they were: validate still agrees
    const v = await spangate(['validate', '-c', gw.conf]);
    assert.equal(v.code, 0, v.out + v.err);

    const again = await spangate(['ttl', 'apply', '-c', gw.conf]);
    assert.equal(again.code, 0, again.err);
    assert.match(again.out, /5 rows scanned, 0 re-written/, 'a second run has nothing to do');
    assert.deepEqual(gw.errorLines(), []);
  } finally { await gw.stop(); }
});

test('ttl: usage errors exit 2', async () => {
  const r = await spangate(['ttl', 'frobnicate', '-c', '/dev/null']);
  assert.equal(r.code, 2);
  assert.match(r.err, /unknown sub-command 'frobnicate'/);
  const p = await spangate(['ttl', 'purge-postgres', '--project', 'nope', '-c', '/dev/null']);
  assert.equal(p.code, 2);
  assert.match(p.err, /--project 'nope' is not a UUID/);
});

// ---- PostgreSQL retention ------------------------------------------------------------

// Traces seeded straight into PostgreSQL with created_at in the past.
// Retention: A 31 days, B 7 days, C none (kept forever).
const TR = (n) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
const SP = (t, n) => `${String(t).padStart(8, '0')}-0000-4000-9000-${String(n).padStart(12, '0')}`;
const TRACES = [
  // [project, trace, root age, children ages, expected]
  [PROJECT_A, 1, '40 days', ['40 days', '39 days'], 'deleted'],
  [PROJECT_A, 2, '20 days', ['20 days'], 'kept'],
  [PROJECT_A, 3, '1 day', ['100 days', '90 days'], 'kept'], // recent root, old children: kept whole
  [PROJECT_A, 4, '60 days', ['1 hour', '2 minutes'], 'deleted'], // old root, recent children: deleted whole
  [PROJECT_B, 5, '10 days', ['10 days'], 'deleted'],
  [PROJECT_B, 6, '5 days', ['5 days'], 'kept'],
  [PROJECT_C, 7, '400 days', ['400 days'], 'kept'],
];
// and 25 more expired traces in A (roots 32..56 days old), so batches of 10 take three
for (let i = 0; i < 25; i++) TRACES.push([PROJECT_A, 100 + i, `${32 + i} days`, ['35 days', '1 day'], 'deleted']);

async function seed(uri) {
  const rows = [];
  for (const [p, t, rootAge, kids] of TRACES) {
    rows.push([p, TR(t), SP(t, 0), null, rootAge]);
    kids.forEach((age, i) => rows.push([p, TR(t), SP(t, i + 1), SP(t, 0), age]));
  }
  const values = rows.map((r, i) => `($${5 * i + 1}::uuid, $${5 * i + 2}::uuid, $${5 * i + 3}::uuid, $${5 * i + 4}::uuid,
    now() - $${5 * i + 5}::interval + interval '123 microseconds')`).join(',\n');
  await pgQuery(uri, `INSERT INTO spans (project_id, trace_id, span_id, parent_id, created_at, created_by_id,
      span_kind, span_name, start_time, end_time, status_code, attributes)
    SELECT v.p, v.t, v.s, v.par, v.c, '00000000-0000-0000-0000-000000000000', 'SPAN_KIND_INTERNAL', 'n',
      v.c - interval '1 second', v.c, 'STATUS_CODE_OK', '{"k": 1}'
    FROM (VALUES ${values}) AS v(p, t, s, par, c)`, rows.flat());
  return rows.length;
}

test('ttl purge-postgres deletes exactly the expired traces, whole, from both stores; refuses without pg_retention', async () => {
  const db = await createDatabase();
  const dir = mkdtempSync(join(tmpdir(), 'sg-purge-'));
  mkdirSync(join(dir, 'spool'));
  const conf = join(dir, 'gateway.conf');
  writeFileSync(conf, [
    `postgres_uri = "${db.uri}"`, 'use_clickhouse = true', 'clickhouse_host = "127.0.0.1"',
    `clickhouse_port = ${CH_PORT}`, `clickhouse_database = "${db.name}"`, `scripts = "${join(ROOT, 'lua')}"`,
    `spool_dir = "${join(dir, 'spool')}"`, 'log_level = "info"',
    `retention_by_project = { ["${PROJECT_A}"] = 31, ["${PROJECT_B}"] = 7 }`,
  ].join('\n') + '\n');
  execFileSync(BIN, ['schema', '--apply', '-c', conf], { stdio: 'pipe' });
  const pgq = (sql, p) => pgQuery(db.uri, sql, p);
  const ch = (sql) => chQuery(sql, db.name);
  const total = await seed(db.uri);
  const mig = await spangate(['migrate', '-c', conf, '--no-index']);
  assert.equal(mig.code, 0, mig.out + mig.err);

  const pgKeys = async () => (await pgq(`SELECT project_id::text || '/' || trace_id::text || '/' || span_id::text AS k
      FROM spans ORDER BY 1`)).map((r) => r.k);
  const chKeys = async () => (await ch(`SELECT concat(toString(project_id), '/', toString(trace_id), '/', toString(span_id)) AS k
      FROM spans FINAL ORDER BY k`)).trim().split('\n').filter(Boolean);
  const before = await pgKeys();
  assert.equal(before.length, total);
  assert.deepEqual(await chKeys(), before, 'migrated');

  // opt-in: refused without pg_retention, nothing deleted
  const refused = await spangate(['ttl', 'purge-postgres', '-c', conf]);
  assert.equal(refused.code, 2, refused.out + refused.err);
  assert.match(refused.err, /refusing to delete from PostgreSQL: pg_retention is off/);
  assert.deepEqual(await pgKeys(), before);

  // --dry-run reports, deletes nothing (allowed without pg_retention)
  const expected = { [PROJECT_A]: [0, 0], [PROJECT_B]: [0, 0] };
  for (const [p, , , kids, what] of TRACES) {
    if (what === 'deleted') { expected[p][0] += 1; expected[p][1] += 1 + kids.length; }
  }
  const dry = await spangate(['ttl', 'purge-postgres', '--dry-run', '-c', conf]);
  assert.equal(dry.code, 0, dry.out + dry.err);
  let rows = tableRows(dry.out);
  assert.deepEqual(rows[PROJECT_A].slice(0, 3), [String(expected[PROJECT_A][0]), String(expected[PROJECT_A][1]),
    String(expected[PROJECT_A][1])], dry.out);
  assert.deepEqual(rows[PROJECT_B].slice(0, 3), ['1', '2', '2'], dry.out);
  assert.equal(rows[PROJECT_C], undefined, 'no policy: nothing to delete');
  assert.match(dry.out, /dry run: nothing changed/);
  assert.deepEqual(await pgKeys(), before);
  assert.deepEqual(await chKeys(), before);
  // --max-projects: the most overdue project first (A's oldest root is 60 days old, B's 10)
  const one = await spangate(['ttl', 'purge-postgres', '--dry-run', '--max-projects', '1', '-c', conf]);
  assert.equal(one.code, 0, one.err);
  assert.deepEqual(Object.keys(tableRows(one.out)), [PROJECT_A], one.out);

  appendFileSync(conf, 'pg_retention = true\n');
  const run = await spangate(['ttl', 'purge-postgres', '--batch-traces', '10', '-c', conf]);
  assert.equal(run.code, 0, run.out + run.err);
  rows = tableRows(run.out);
  assert.deepEqual(rows[PROJECT_A].slice(0, 2), [String(expected[PROJECT_A][0]), String(expected[PROJECT_A][1])], run.out);
  assert.deepEqual(rows[PROJECT_B].slice(0, 2), ['1', '2'], run.out);
  assert.doesNotMatch(run.err, /\[error\]/);

  const want = before.filter((k) => {
    const [p, t] = k.split('/');
    return TRACES.find((tr) => tr[0] === p && TR(tr[1]) === t)[4] === 'kept';
  });
  assert.deepEqual(await pgKeys(), want, 'PostgreSQL: exactly the kept traces, whole');
  assert.deepEqual(await chKeys(), want, 'ClickHouse: the same');
  const v = await spangate(['validate', '-c', conf]);
  assert.equal(v.code, 0, v.out + v.err);

  const again = await spangate(['ttl', 'purge-postgres', '-c', conf]);
  assert.equal(again.code, 0, again.err);
  assert.match(again.out, /0 traces \(0 spans\) deleted in 0 projects/);
  assert.deepEqual(await pgKeys(), want);
});
