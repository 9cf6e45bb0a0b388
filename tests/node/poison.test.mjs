// Poison isolation: a span PostgreSQL cannot store as sent never fails the
// requests that share its group commit; a row ClickHouse cannot take never
// blocks the rows behind it and never vanishes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { startGateway, postJson, spanUuid, request, chQuery, until, BIN } from './lib/harness.mjs';

// A long commit window makes every request below share one transaction.
const gw = await startGateway({ conf: ['commit_window_ms = 200', 'workers = 1'] });
after(async () => { await gw.stop(); });
const T = '22222222222222222222222222222222';
const sp = (sid, extra = {}) => ({ trace_id: T, span_id: sid, parent_id: '9999999999999999', span_name: 'n', start_time: 1714979289, end_time: 1714979289, ...extra });

test('NUL characters and bad time ranges beside good spans, in flight together', async () => {
  const reqs = [
    postJson(gw, '/v1/spans', { spans: [sp('3000000000000001')] }),
    postJson(gw, '/v1/spans', `{"spans":[${JSON.stringify(sp('3000000000000002'))},{"trace_id":"${T}","span_id":"3000000000000003","span_name":"nul\\u0000name","start_time":1714979289,"end_time":1714979289,"attributes":{"k":"v\\u0000"}}]}`),
    // A NUL inside an object key cannot be represented at all: that request
    // alone is refused, naming the problem.
    postJson(gw, '/v1/spans', `{"spans":[{"trace_id":"${T}","span_id":"3000000000000007","span_name":"x","start_time":1,"end_time":1,"attributes":{"k\\u0000":1}}]}`),
    postJson(gw, '/v1/spans', { spans: [sp('3000000000000004', { start_time: '99999-01-01T00:00:00Z' }), sp('3000000000000005')] }),
    postJson(gw, '/v1/spans', { spans: [sp('3000000000000006')] }),
  ];
  const res = await Promise.all(reqs);
  assert.equal(res[2].status, 400);
  assert.match(res[2].json().error, /NUL/);
  res.splice(2, 1);
  for (const r of res) assert.equal(r.status, 200, r.text);
  assert.equal(res[2].json().rejected, 1);
  assert.match(res[2].json().error, /start_time/);
  const rows = await gw.query('SELECT span_id::text, span_name, attributes FROM spans WHERE trace_id = $1 ORDER BY span_id', [`${T.slice(0, 8)}-${T.slice(8, 12)}-${T.slice(12, 16)}-${T.slice(16, 20)}-${T.slice(20)}`]);
  const ids = rows.map((r) => r.span_id);
  for (const s of ['3000000000000001', '3000000000000002', '3000000000000003', '3000000000000005', '3000000000000006'])
    assert.ok(ids.includes(spanUuid(s)), `span ${s} stored`);
  const nul = rows.find((r) => r.span_id === spanUuid('3000000000000003'));
  assert.equal(nul.span_name, 'nul\uFFFDname', 'NUL is replaced by U+FFFD');
  assert.equal(nul.attributes.k, 'v\uFFFD');
});

test('a second root span in a trace is rejected alone, the rest of its batch is stored', async () => {
  const T2 = '33333333333333333333333333333333';
  const root = (sid) => ({ trace_id: T2, span_id: sid, span_name: 'root', start_time: 1714979289, end_time: 1714979289 });
  const a = postJson(gw, '/v1/spans', { spans: [root('4000000000000001')] });
  const b = postJson(gw, '/v1/spans', { spans: [root('4000000000000002'), { ...root('4000000000000003'), parent_id: '4000000000000001' }] });
  const [ra, rb] = await Promise.all([a, b]);
  assert.equal(ra.status, 200);
  assert.equal(rb.status, 200);
  const rows = await gw.query(`SELECT span_id::text FROM spans WHERE trace_id = '33333333-3333-3333-3333-333333333333' ORDER BY 1`);
  assert.equal(rows.length, 2, 'one root and the child');
  const rejected = ra.json().rejected ?? 0 + (rb.json().rejected ?? 0);
  assert.ok((ra.json().rejected ?? 0) + (rb.json().rejected ?? 0) === 1, 'exactly one root rejected');
  const msg = (ra.json().error || '') + (rb.json().error || '');
  assert.match(msg, /root/);
  void rejected;
});

// ---- ClickHouse ---------------------------------------------------------------

// A ClickHouse database with the 18.16 schema, edited by edit(ddl).
let chSeq = 0;
async function chSchema(edit) {
  const db = `sgpoison_${process.pid}_${chSeq++}`;
  const ddl = execFileSync(BIN, ['schema', '--print', '--clickhouse-version', '18.16'], { env: { ...process.env, CLICKHOUSE_DATABASE: db } }).toString();
  const stmts = ddl.split(/;\s*\n/).map((x) => x.trim()).filter(Boolean);
  for (const stmt of stmts) await chQuery(stmt.includes('.spans\n') ? edit(stmt) : stmt);
  return db;
}
const withColumn = (col) => (ddl) => ddl.replace(/\n\)\nENGINE/, `,\n    ${col}\n)\nENGINE`); // after the last column
const CT = 'abababababababababababababababab';
const chSpan = (sid, name) => ({ trace_id: CT, span_id: sid, parent_id: 'cdcdcdcdcdcdcdcd', span_name: name, start_time: 1714979289123456, end_time: 1714979289654321 });
const chIds = async (gw) => (await gw.ch('SELECT toString(span_id) FROM spans FINAL ORDER BY span_id')).trim().split('\n').filter(Boolean);
async function metric(gw, name) {
  const text = (await request(gw, 'GET', '/metrics')).text;
  const m = text.match(new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm'));
  return m ? Number(m[1]) : NaN;
}
const DEAD_ROWS = 'spangate_clickhouse_dead_letter_rows_total{cause="rejected"}';
const deadText = (dir, ext) => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(ext)).map((f) => readFileSync(join(dir, f), 'latin1')).join('') : '');

test('a row ClickHouse fails with an unlisted code and HTTP 500 is dead-lettered after a few tries; the rows behind it arrive', async () => {
  // throwIf raises code 395, which ch.c does not list: HTTP 500, "transient".
  const db = await chSchema(withColumn("chk UInt8 MATERIALIZED throwIf(span_name = 'boom')"));
  const gw = await startGateway({ clickhouse: true, chdb: db, flushMs: 300, workers: 1 });
  try {
    const res = await Promise.all([
      postJson(gw, '/v1/spans', { spans: [chSpan('b000000000000001', 'ok')] }),
      postJson(gw, '/v1/spans', { spans: [chSpan('b000000000000002', 'boom')] }),
      postJson(gw, '/v1/spans', { spans: [chSpan('b000000000000003', 'ok')] }),
    ]);
    for (const r of res) assert.equal(r.status, 200, r.text);
    assert.ok(await until(async () => (await chIds(gw)).length === 2, 20000), `the good rows arrived: ${gw.log}`);
    // Rows sent afterwards are not held up behind it.
    assert.equal((await postJson(gw, '/v1/spans', { spans: [chSpan('b000000000000004', 'later')] })).status, 200);
    assert.ok(await until(async () => (await chIds(gw)).length === 3, 20000), 'the later row arrived');
    assert.deepEqual(await chIds(gw), ['b000000000000001', 'b000000000000003', 'b000000000000004'].map(spanUuid));
    const dead = join(gw.dir, 'spool', 'w1', 'dead');
    assert.ok(await until(async () => (await metric(gw, DEAD_ROWS)) === 1 && (await metric(gw, 'spangate_spool_records')) === 0, 10000), 'dead-lettered and drained');
    assert.match(deadText(dead, '.txt'), /Code: 395/);
    assert.match(deadText(dead, '.seg'), /boom/);
    assert.ok(gw.errorLines().some((l) => /ClickHouse rejected 1 rows .*code 395.*moved to/.test(l)), 'logged');
  } finally { await gw.stop(); }
});

test('a ClickHouse that fails every insert with an unlisted code gets nothing dead-lettered; once fixed, every row arrives', async () => {
  const db = await chSchema(withColumn('chk UInt8 MATERIALIZED throwIf(length(span_name) > 0)'));
  const gw = await startGateway({ clickhouse: true, chdb: db, flushMs: 300, workers: 1 });
  try {
    const res = await Promise.all(['c000000000000001', 'c000000000000002', 'c000000000000003'].map((sid) =>
      postJson(gw, '/v1/spans', { spans: [chSpan(sid, 'n')] })));
    for (const r of res) assert.equal(r.status, 200, r.text);
    // Split, found no row the server takes, held back (not dead-lettered).
    assert.ok(await until(() => /held back/.test(gw.log), 20000), `held back: ${gw.log}`);
    assert.equal(await metric(gw, DEAD_ROWS), 0);
    assert.ok(!existsSync(join(gw.dir, 'spool', 'w1', 'dead')), 'no dead letters');
    await chQuery('ALTER TABLE spans DROP COLUMN chk', db);
    assert.ok(await until(async () => (await chIds(gw)).length === 3, 20000), `every row arrived: ${gw.log}`);
    assert.ok(await until(async () => (await metric(gw, 'spangate_spool_records')) === 0, 5000));
    assert.equal(await metric(gw, DEAD_ROWS), 0);
    assert.ok(!existsSync(join(gw.dir, 'spool', 'w1', 'dead')), 'still no dead letters');
  } finally { await gw.stop(); }
});

test('a rejected row whose dead-letter write fails stays in the spool, and lands in dead/ once that is writable', async () => {
  // "boom" fails (throwIf: code 395, sorted out record by record while the
  // rows around it are accepted, then dead-lettered); "7" and "8" are fine.
  const db = await chSchema(withColumn("chk UInt8 MATERIALIZED throwIf(span_name = 'boom')"));
  const gw = await startGateway({ clickhouse: true, chdb: db, flushMs: 300, workers: 1 });
  try {
    // A regular file where dead/ should be: a write fails for root too.
    const deadPath = join(gw.dir, 'spool', 'w1', 'dead');
    writeFileSync(deadPath, 'not a directory\n');
    const res = await Promise.all([
      postJson(gw, '/v1/spans', { spans: [chSpan('d000000000000001', '7')] }),
      postJson(gw, '/v1/spans', { spans: [chSpan('d000000000000002', 'boom')] }),
      postJson(gw, '/v1/spans', { spans: [chSpan('d000000000000003', '8')] }),
    ]);
    for (const r of res) assert.equal(r.status, 200, r.text);
    assert.ok(await until(async () => (await chIds(gw)).length === 2, 20000), `the good rows arrived: ${gw.log}`);
    assert.ok(await until(() => gw.errorLines().some((l) => /could NOT be written to .*dead/.test(l)), 10000), `logged loudly: ${gw.log}`);
    assert.ok(await until(async () => (await metric(gw, 'spangate_clickhouse_dead_letter_failures_total')) >= 1, 5000), 'counted');
    // The row is still in the spool, not acknowledged as moved (the figures
    // are published every 0.5 s).
    assert.ok(await until(async () => (await metric(gw, 'spangate_spool_records')) === 1, 5000), 'the rejected record is kept');
    assert.equal(await metric(gw, DEAD_ROWS), 0);
    assert.ok(!gw.errorLines().some((l) => /moved to/.test(l)), 'never claimed as moved');
    // dead/ is fixed: the next retry moves it.
    unlinkSync(deadPath);
    assert.ok(await until(async () => (await metric(gw, DEAD_ROWS)) === 1 && (await metric(gw, 'spangate_spool_records')) === 0, 20000), `moved: ${gw.log}`);
    assert.match(deadText(deadPath, '.seg'), /boom/);
    assert.equal(deadText(deadPath, '.txt').trim().split('\n').length, 1, 'one reason line');
    assert.ok(gw.errorLines().some((l) => /ClickHouse rejected 1 rows .*moved to/.test(l)), 'logged once moved');
    assert.deepEqual(await chIds(gw), ['d000000000000001', 'd000000000000003'].map(spanUuid));
  } finally { await gw.stop(); }
});
