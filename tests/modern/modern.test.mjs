// Modern ClickHouse, verified: everything spangate sends to a 20.1+ server,
// executed on ClickHouse 26.x's own engine (chDB, the npm package), next to
// the real 18.16 server of the test environment.
//   - the DDL `schema --print` renders for 20.1 .. 26.x (and 18.16's tables
//     carried over by an upgrade), with `schema --apply` completing them;
//   - the cluster variants (Replicated*, Distributed, ON CLUSTER);
//   - the rows the gateway's encoder writes, read back field by field;
//   - every statement the read API and the jobs send, recorded on the way,
//     with the answers compared to 18.16's for the same data.
// The engine sits behind a small HTTP front (lib/engine.mjs): the HTTP
// interface of a modern server is not what this verifies.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  BIN, ROOT, KEY_A, KEY_B, PROJECT_A, CH_PORT, startGateway, postJson, request, until, chQuery, createDatabase,
} from '../node/lib/harness.mjs';
import { startEngine, startProxy } from './lib/engine.mjs';

const run = promisify(execFile);
const work = mkdtempSync(join(tmpdir(), 'sg-modern-'));
const engine = await startEngine(join(work, 'chdb'));
const q = engine.query;
const ENGINE = (await q('SELECT version()')).trim();
const CURRENT = ENGINE.split('.').slice(0, 2).join('.');
after(() => engine.close());

const statements = (text) => text.split(/;\n/).map((s) => s.trim()).filter(Boolean);
const render = (version, env = {}) => execFileSync(BIN, ['schema', '--print', '--clickhouse-version', version, '-c', emptyConf()],
  { env: { ...process.env, ...env } }).toString();
function emptyConf() {
  const p = join(work, 'empty.conf');
  writeFileSync(p, '-- defaults\n');
  return p;
}
// A copy of a gateway.conf with lines added (later assignments win).
function confWith(base, lines) {
  const p = join(work, `conf-${Math.random().toString(36).slice(2)}.conf`);
  writeFileSync(p, readFileSync(base, 'utf8') + lines.join('\n') + '\n');
  return p;
}

test(`the DDL for 18.16, 20.1, 20.12, 24.8 and ${CURRENT} runs on ClickHouse ${ENGINE}; schema --apply completes older tables there`, async () => {
  assert.match(ENGINE, /^2[6-9]\.|^[3-9]\d\./, 'a modern engine');
  const db = await createDatabase();
  for (const v of ['18.16', '20.1', '20.12', '24.8', CURRENT]) {
    const name = `ddl_${v.replace('.', '_')}`;
    const stmts = statements(render(v, { CLICKHOUSE_DATABASE: name }));
    assert.equal(stmts.length, 15); // 7, and the read index: 2 tables, their views, backfills and markers
    for (const s of stmts) await q(s);
    const create = await q(`SHOW CREATE TABLE ${name}.spans`);
    const modern = v !== '18.16';
    assert.equal(create.includes("DateTime64(6, \\'UTC\\')"), modern, `${v}: time columns`);
    assert.equal(/TTL expires_at/.test(create), modern, `${v}: TTL`);
    assert.equal(create.includes('INDEX idx_trace_id trace_id TYPE bloom_filter'), v === '24.8' || v === CURRENT || v === '20.12', `${v}: index`);
    assert.equal((await q(`SELECT count() FROM system.tables WHERE database = '${name}'`)).trim(), '10');
    assert.equal((await q(`SELECT count() FROM ${name}.spans_by_start WHERE project_id = toUUID('00000000-0000-0000-0000-000000000000')`)).trim(), '1', `${v}: the index is marked complete`);
    // 23.2+: the engine knows the tombstone column
    assert.equal(/ReplacingMergeTree\(version, is_deleted\)/.test(create), v === '24.8' || v === CURRENT, `${v}: engine`);
    // schema --apply against the engine (its real version): tables from an
    // older version keep their layout and get what they lack
    const conf = join(work, `apply-${name}.conf`);
    writeFileSync(conf, [`postgres_uri = "${db.uri}"`, 'use_clickhouse = true', 'clickhouse_host = "127.0.0.1"',
      `clickhouse_port = ${engine.port}`, `clickhouse_database = "${name}"`, `spool_dir = "${join(work, 'spool')}"`].join('\n') + '\n');
    const out = execFileSync(BIN, ['schema', '--apply', '-c', conf], { stdio: 'pipe' }).toString();
    if (v === CURRENT || v === '24.8' || v === '20.12') assert.match(out, /ClickHouse: nothing was missing/, v);
    if (v === '18.16' || v === '20.1') assert.match(out, /add index idx_trace_id/, v);
    if (v === '18.16') {
      assert.match(out, /set TTL expires_at on `ddl_18_16`\.spans/);
      assert.match(await q('SHOW CREATE TABLE ddl_18_16.spans'), /TTL expires_at/);
      assert.match(await q('SHOW CREATE TABLE ddl_18_16.spans'), /`start_time_us` UInt32/, 'the layout stays');
    }
  }
  assert.deepEqual((await engine.log()).filter((e) => !e.ok), [], 'every statement ran');
});

test(`the cluster DDL for 24.8 and ${CURRENT} parses whole and creates its tables on ClickHouse ${ENGINE}`, async () => {
  for (const v of ['24.8', CURRENT]) {
    // the read index's backfills and markers are INSERTs through the
    // Distributed tables: chDB's replicated tables take no writes (below)
    const all = statements(render(v, { SPANGATE_CLICKHOUSE_CLUSTER: 'sg_cluster' }));
    const inserts = all.filter((x) => x.startsWith('INSERT'));
    assert.deepEqual(inserts.map((x) => x.match(/^INSERT INTO `[^`]+`\.(\w+) /)[1]),
      ['spans_by_trace', 'spans_by_trace', 'spans_by_start', 'spans_by_start']);
    const stmts = all.filter((x) => !x.startsWith('INSERT'));
    const file = join(work, `cluster-${v}.json`);
    writeFileSync(file, JSON.stringify(stmts));
    const { stdout } = await run(process.execPath, [join(ROOT, 'tests/modern/lib/cluster_ddl.mjs'), file, 'sg_cluster',
      join(work, `cluster-${v}`)], { cwd: join(ROOT, 'tests/modern') });
    const res = JSON.parse(stdout);
    const tables = res.pop().tables;
    for (const r of res) assert.ok(r.parsed && r.executed, `${v}: ${r.error}\n${r.sql}`);
    assert.deepEqual(tables.map((t) => `${t.name} ${t.engine}`), [
      'nodes Distributed', 'nodes_local ReplicatedReplacingMergeTree', 'spans Distributed',
      'spans_analytics Distributed', 'spans_analytics_deleted Distributed',
      'spans_analytics_deleted_local ReplicatedAggregatingMergeTree', 'spans_analytics_deleted_mv MaterializedView',
      'spans_analytics_local ReplicatedAggregatingMergeTree',
      'spans_analytics_mv MaterializedView',
      'spans_by_start Distributed', 'spans_by_start_local ReplicatedReplacingMergeTree', 'spans_by_start_mv MaterializedView',
      'spans_by_trace Distributed', 'spans_by_trace_local ReplicatedReplacingMergeTree', 'spans_by_trace_mv MaterializedView',
      'spans_local ReplicatedReplacingMergeTree']);
  }
  // The sharding key hashes alike on 18.16 and here: a trace lands on the same shard.
  const id = '4bf92f35-77b3-4da6-a3ce-929d0e0e4736';
  const expr = `cityHash64(toString(toUUID('${id}')))`;
  assert.equal((await q(`SELECT ${expr}`)).trim(), (await chQuery(`SELECT ${expr}`)).trim());
});

// ---- rows -------------------------------------------------------------------------------

const T = '5bf92f3577b34da6a3ce929d0e0e4736';
const edgeSpans = [
  { trace_id: T, span_id: 'b000000000000001', span_name: 'root \t tab\nnewline \\ backslash ünï 😀', span_kind: 'SPAN_KIND_SERVER',
    trace_type: 'invocation', span_type: 'workflow', start_time: 1714979289000001, end_time: 1714979289999999,
    status_code: 'STATUS_CODE_OK', session_id: 's-1', user_id: 'u-1', agent_id: 'a-1',
    attributes: { big: 'BIG', neg: 'NEG', f: 1.5e-7, s: 'quote " and \\\\ and \u0001 and 中文', nested: { a: [1, null, true] } },
    references: [{ id: 'r1' }], links: [{ trace_id: T, span_id: 'b000000000000002' }], hashes: [{ h: 'x' }],
    events: [{ name: 'e', timestamp: '2024-05-06T07:08:09.000001Z', attributes: { k: 'v' } }] },
  { trace_id: T, span_id: 'b000000000000002', parent_id: 'b000000000000001', span_name: '', span_kind: 'SPAN_KIND_CLIENT',
    span_type: 'llm', start_time: '1970-01-01T00:00:00Z', end_time: '1970-01-01T00:00:00.000001Z', status_code: 'STATUS_CODE_ERROR', status_message: 'x\ty\nz' },
  { trace_id: T, span_id: 'b000000000000003', parent_id: 'b000000000000001', span_name: 'late', span_kind: 'SPAN_KIND_CONSUMER',
    trace_type: 'annotation', span_type: 'rerank', start_time: 4291747199999998, end_time: 4291747199999999 },
];
// JSON numbers JavaScript cannot hold, written into the body as text
const edgeBody = () => JSON.stringify({ spans: edgeSpans }).replace('"BIG"', '9223372036854775807').replace('"NEG"', '-9007199254740993');

const PG_ROW = `SELECT project_id::text, trace_id::text, span_id::text, parent_id::text, trace_type::text, span_type::text,
  span_kind::text, span_name, (extract(epoch from start_time)*1000000)::bigint::text, (extract(epoch from end_time)*1000000)::bigint::text,
  status_code::text, status_message, attributes::text, "references"::text, links::text, hashes::text, events::text, session_id, user_id, agent_id,
  (extract(epoch from created_at)*1000000)::bigint::text, (extract(epoch from updated_at)*1000000)::bigint::text,
  (extract(epoch from deleted_at)*1000000)::bigint::text, created_by_id::text, updated_by_id::text, deleted_by_id::text,
  (extract(epoch from coalesce(updated_at, created_at))*1000000)::bigint::text FROM spans ORDER BY span_id`;
const chRow = (t) => `SELECT toString(project_id), toString(trace_id), toString(span_id), toString(parent_id), toString(trace_type),
  toString(span_type), toString(span_kind), span_name, ${t('start_time')}, ${t('end_time')}, toString(status_code), status_message,
  attributes, references, links, hashes, events, session_id, user_id, agent_id, ${t('created_at')}, ${t('updated_at')},
  ${t('deleted_at')}, toString(created_by_id), toString(updated_by_id), toString(deleted_by_id), toString(version),
  toString(expires_at) FROM spans FINAL ORDER BY span_id FORMAT JSONCompact`;
const dt64 = (c) => `toString(toUnixTimestamp64Micro(${c}))`;
const us18 = (c) => `if(isNull(${c}), NULL, toString(toUInt64(${c}) * 1000000 + ${c}_us))`;
// JSON text compared as values, keys in any order (jsonb sorts them)
const canon = (v) => (Array.isArray(v) ? v.map(canon) : v && typeof v === 'object'
  ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])])) : v);
const jsonText = (x) => (x == null ? null : JSON.stringify(canon(JSON.parse(x))));

test(`the encoder's rows land on ClickHouse ${ENGINE} exactly: µs times, int64 past 2^53, Unicode, escapes, NULLs`, async () => {
  const gw = await startGateway({ clickhouse: true, conf: [`clickhouse_port = ${engine.port}`], workers: 1 });
  const g18 = await startGateway({ clickhouse: true, workers: 1 });
  try {
    assert.match(gw.log, new RegExp(`ClickHouse ${ENGINE.replace(/\./g, '\\.')} at .* spans rows DateTime64; dual-write on`));
    for (const g of [gw, g18]) assert.equal((await postJson(g, '/v1/spans', edgeBody())).status, 200);
    const db = gw.chdb;
    assert.ok(await until(async () => (await q(`SELECT count() FROM ${db}.spans FINAL`)).trim() === '3', 15000), 'rows arrived on the modern engine');
    assert.ok(await until(async () => (await g18.ch('SELECT count() FROM spans FINAL')).trim() === '3', 15000), 'and on 18.16');
    const modern = JSON.parse(await q(chRow(dt64).replace('FROM spans', `FROM ${db}.spans`))).data;
    const old = JSON.parse(await g18.ch(chRow(us18))).data;
    const pg = (await gw.query({ text: PG_ROW, rowMode: 'array' })).map((r) => r);
    assert.equal(modern.length, 3);
    modern.forEach((c, i) => {
      const p = pg[i];
      for (let k = 0; k < 12; k++) assert.equal(c[k], p[k], `span ${i} column ${k}`);
      for (let k = 12; k < 17; k++) assert.equal(jsonText(c[k]), jsonText(p[k]), `span ${i} JSON column ${k}`);
      for (let k = 17; k < 27; k++) assert.equal(c[k], p[k], `span ${i} column ${k}`);
      assert.equal(c[27], '2105-12-31 23:59:59', 'expires_at: never');
      // 18.16 holds the same values but for what PostgreSQL assigns per database
      for (const k of [...Array(20).keys(), 22, 23, 25, 27]) assert.equal(old[i][k], c[k], `span ${i} column ${k}: 18.16 = ${ENGINE}`);
    });
    assert.match(modern[0][12], /"big":9223372036854775807/, 'int64 max, exact');
    assert.match(modern[0][12], /"neg":-9007199254740993/, 'past 2^53, exact');
    assert.equal(modern[1][8], '0');
    assert.equal(modern[2][9], '4291747199999999');
    assert.deepEqual((await engine.log()).filter((e) => !e.ok), [], 'every statement ran');
  } finally { await gw.stop(); await g18.stop(); }
});

// ---- queries: the read API and the jobs -------------------------------------------------------

function clickhouseReadScripts() {
  const dir = mkdtempSync(join(tmpdir(), 'sg-modern-lua-'));
  cpSync(join(ROOT, 'lua'), dir, { recursive: true });
  const p = join(dir, 'routing.lua');
  const src = readFileSync(p, 'utf8');
  const i = src.lastIndexOf('return M');
  writeFileSync(p, src.slice(0, i) + 'function M.read_backend(query, project_id) return "clickhouse" end\n\nreturn M\n');
  return dir;
}

// SELECTs whose answer depends on the data only (not on the server's
// version, its system tables, or the tables' layout).
const comparable = (sql) => /^\s*SELECT\b/i.test(sql) && !/version\(\)|system\./i.test(sql);
// An answer as data: JSON formats by their rows (not statistics such as
// elapsed, nor 18.16's quoting of 64-bit integers), numbers to 12
// significant digits (float printing differs between versions), rows sorted.
const num = (v) => (typeof v === 'number' || (typeof v === 'string' && /^-?\d+(\.\d+)?(e[+-]?\d+)?$/i.test(v))
  ? Number(Number(v).toPrecision(12)) : Array.isArray(v) ? v.map(num) : v);
function answerOf(text) {
  const t = text.trim();
  if (t.startsWith('{')) return JSON.stringify(JSON.parse(t).data.map(num).map((r) => JSON.stringify(r)).sort());
  return JSON.stringify(t.split('\n').filter(Boolean).map((l) => JSON.stringify(l.split('\t').map(num))).sort());
}

test(`the read API's and the jobs' statements run on ClickHouse ${ENGINE} and answer as 18.16 does for the same data`, async () => {
  const proxy = await startProxy(CH_PORT);
  const scripts = clickhouseReadScripts();
  const g18 = await startGateway({ clickhouse: true, scripts, conf: [`clickhouse_port = ${proxy.port}`] });
  let g26;
  try {
    // Spans of two projects over two hours: every kind, type, status, some deleted-free durations.
    const base = (Math.floor(Date.now() / 1e3 / 3600) - 2) * 3600 * 1e6; // µs, two hours ago
    const kinds = ['SPAN_KIND_SERVER', 'SPAN_KIND_CLIENT', 'SPAN_KIND_INTERNAL'];
    const types = ['workflow', 'llm', 'tool', 'chain', null];
    const mk = (n, proj) => Array.from({ length: n }, (_, i) => ({
      trace_id: `${proj}d${i.toString(16).padStart(30, '0')}`, /* a root per trace (Agenta's rule) */
      span_id: `${proj}c${i.toString(16).padStart(14, '0')}`,
      span_name: `op-${i % 4}`, span_kind: kinds[i % 3], span_type: types[i % 5] || undefined, trace_type: i % 2 ? 'invocation' : undefined,
      start_time: base + i * 61e6 + (i % 9), end_time: base + i * 61e6 + 1000 * (i * 37 % 500) + 7,
      status_code: i % 5 === 0 ? 'STATUS_CODE_ERROR' : 'STATUS_CODE_OK', attributes: { i, s: `v${i}` },
    }));
    for (const [n, p, key] of [[90, 'a', KEY_A], [40, 'b', KEY_B]]) {
      const r = await postJson(g18, '/v1/spans', { spans: mk(n, p) }, key);
      assert.equal(r.status, 200);
      assert.equal(r.json().rejected, undefined, r.text);
    }
    const n18 = await until(async () => (await g18.ch('SELECT count() FROM spans FINAL')).trim() === '130', 20000);
    assert.ok(n18, `on 18.16: ${await g18.ch('SELECT count() FROM spans FINAL')} spans; ${JSON.stringify((await proxy.log()).filter((e) => !e.ok)).slice(0, 2000)}\n${g18.log.slice(-3000)}`);

    // The same PostgreSQL, copied into the modern engine by the migration job.
    const conf26 = confWith(g18.conf, [`clickhouse_port = ${engine.port}`]);
    execFileSync(BIN, ['schema', '--apply', '-c', conf26], { stdio: 'pipe' });
    const mig = execFileSync(BIN, ['migrate', '-c', conf26], { stdio: 'pipe' }).toString();
    assert.equal((await q(`SELECT count() FROM \`${g18.chdb}\`.spans FINAL`)).trim(), '130', mig);
    // From here on both engines hold the same rows and get the same requests
    // in the same order: the k-th time a statement is sent, it is sent to
    // equal data on both.
    const e0 = (await engine.log()).length, p0 = (await proxy.log()).length;
    g26 = await startGateway({ db: g18.db, skipSchema: true, clickhouse: true, chdb: g18.chdb, scripts,
      conf: [`clickhouse_port = ${engine.port}`] });

    // The read API: analytics from both.
    const from = new Date(base / 1e3).toISOString(), to = new Date(base / 1e3 + 3 * 3600e3).toISOString();
    for (const qs of [`from=${from}&to=${to}&bucket=15m`, `from=${from}&to=${to}&bucket=1h&group_by=span_type,span_kind,span_name,trace_type`]) {
      for (const key of [KEY_A, KEY_B]) {
        const a = await request(g18, 'GET', `/v1/analytics/spans?${qs}`, undefined, { authorization: `ApiKey ${key}` });
        const b = await request(g26, 'GET', `/v1/analytics/spans?${qs}`, undefined, { authorization: `ApiKey ${key}` });
        assert.equal(a.status, 200, a.text);
        assert.equal(b.status, 200, b.text);
        assert.equal(a.json().backend, 'clickhouse');
        assert.ok(a.json().buckets.length > 0);
        assert.deepEqual(b.json(), a.json(), qs);
      }
    }

    // The jobs on both: validate, migrate again (nothing to copy), ttl apply
    // after a retention change (rewrites every row), validate again.
    const both = async (args, conf18 = g18.conf, confM = conf26) => {
      const a = await run(BIN, [...args, '-c', conf18]).catch((e) => e);
      const b = await run(BIN, [...args, '-c', confM]).catch((e) => e);
      return [a, b];
    };
    const norm = (s) => s.replace(/\d+\.\d+ s\b/g, 'T s').replace(/"seconds":[\d.e+-]+/g, '"seconds":T')
      .replace(/\d+(\.\d+)? (spans|rows)\/s/g, 'R $2/s').replace(/ in [\d.]+ ?m?s\b/g, ' in T');
    let [a, b] = await both(['validate', '--json', '--sample', '100']);
    assert.equal(a.code ?? 0, 0, a.stderr);
    assert.equal(b.code ?? 0, 0, b.stderr);
    const va = JSON.parse(a.stdout), vb = JSON.parse(b.stdout);
    assert.equal(va.ok, true);
    assert.equal(vb.ok, true, b.stdout);
    assert.deepEqual(vb.ranges, va.ranges);
    assert.deepEqual(vb.sample.compared, va.sample.compared);
    [a, b] = await both(['migrate']);
    assert.equal(a.code ?? 0, 0, a.stderr);
    assert.equal(b.code ?? 0, 0, b.stderr);
    const conf18r = confWith(g18.conf, ['retention_days = 30']);
    const conf26r = confWith(conf26, ['retention_days = 30']);
    [a, b] = await both(['ttl', 'apply'], conf18r, conf26r);
    assert.equal(a.code ?? 0, 0, a.stderr);
    assert.equal(b.code ?? 0, 0, b.stderr);
    assert.equal(norm(b.stdout), norm(a.stdout));
    assert.match(a.stdout, /130/);
    [a, b] = await both(['validate', '--sample', '50'], conf18r, conf26r);
    assert.equal(a.code ?? 0, 0, a.stdout);
    assert.equal(b.code ?? 0, 0, b.stdout);
    const exp = (s) => s.trim().split('\n').sort();
    assert.deepEqual(exp(await q(`SELECT toString(expires_at), count() FROM \`${g18.chdb}\`.spans FINAL GROUP BY expires_at`)),
      exp(await g18.ch('SELECT toString(expires_at), count() FROM spans FINAL GROUP BY expires_at')));

    // Every statement the modern engine got ran; those 18.16 got too (same
    // text) answer the same.
    const elog = (await engine.log()).slice(e0), plog = (await proxy.log()).slice(p0);
    const failed = elog.filter((e) => !e.ok);
    assert.deepEqual(failed.map((e) => `${e.error}\n${e.sql}`), []);
    // The jobs' statements differ between the layouts only in how a µs time
    // is read and a second is written: mapped onto 18.16's forms, the same
    // statement must give the same answer.
    const as18 = (sql) => sql.replace(/toUnixTimestamp64Micro\((\w+)\)/g, '(toUInt64(toUInt32($1)) * 1000000 + $1_us)')
      .replace(/toDateTime64\((\d+), 6, 'UTC'\)/g, 'toDateTime($1)');
    const old = new Map(); // statement -> its answers, in order
    for (const e of plog) if (e.ok && comparable(e.sql)) old.set(e.sql, [...(old.get(e.sql) || []), e.answer]);
    const seen = new Map();
    let compared = 0;
    const onlyModern = new Set();
    for (const e of elog) {
      if (!comparable(e.sql)) continue;
      const sql18 = as18(e.sql), k = seen.get(sql18) || 0;
      seen.set(sql18, k + 1);
      if (!old.has(sql18) || old.get(sql18).length <= k) { onlyModern.add(e.sql.replace(/\s+/g, ' ').slice(0, 160)); continue; }
      assert.equal(answerOf(e.answer), answerOf(old.get(sql18)[k]), e.sql);
      compared++;
    }
    assert.ok(compared >= 10, `compared ${compared} statements; not compared:\n${[...onlyModern].join('\n')}`);
    const kinds18 = new Set(plog.map((e) => e.sql.split(/\s+/)[0].toUpperCase()));
    const kinds26 = new Set(elog.map((e) => e.sql.split(/\s+/)[0].toUpperCase()));
    for (const k of kinds18) assert.ok(kinds26.has(k), `the modern engine got ${k} statements too`);
    console.log(`${elog.length} statements ran on ClickHouse ${ENGINE}; ${compared} SELECTs answered as on 18.16; ` +
      `${onlyModern.size} SELECT shapes exist only in their DateTime64 form (checked through the jobs' results above)`);
  } finally {
    if (g26) await g26.stop();
    await g18.stop();
    await proxy.close();
  }
});
