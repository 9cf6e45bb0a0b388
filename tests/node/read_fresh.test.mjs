// Never silently stale: a span acknowledged before a read began is in that
// read's answer. A read routed to ClickHouse is served from PostgreSQL (and
// says so) while rows of its project are still in a spool, when a gap of
// the project is recorded, or when ClickHouse cannot answer; once ClickHouse
// holds everything it serves the read again.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGateway, postJson, freePort, until, KEY_A, KEY_B, PROJECT_A } from './lib/harness.mjs';
import { getWith, queryWith, readScripts, backendOf } from './lib/read_both.mjs';

// Each test stops its gateways (PostgreSQL's connections are few) and
// checks their logs for error lines.
let gateways = [];
afterEach(async () => {
  const gs = gateways;
  gateways = [];
  for (const g of gs) await g.stop();
  for (const g of gs) assert.deepEqual(g.errorLines(), [], 'no error lines in the log');
});

const hex = (n, w) => n.toString(16).padStart(w, '0');
let seq = 1;
const newSpan = () => {
  const i = seq++;
  const start = 1717200000000000 + i * 1000000;
  return { trace_id: hex(0xf00d0000 + i, 32), span_id: hex(0xbeef0000 + i, 16), span_name: `fresh-${i}`,
    start_time: start, end_time: start + 5000, attributes: { fresh: i } };
};
const fallback = (r) => r.headers['x-spangate-read-fallback'];
// The trace's read once ClickHouse serves it (polled every 50 ms), or null after ms.
const fromClickHouse = (g, traceId, ms) => until(async () => {
  const x = await getWith(g, `/v1/traces/${traceId}`);
  return backendOf(x) === 'clickhouse' ? x : null;
}, ms, 50);

test('rows still in the spool: the read is served from PostgreSQL, then from ClickHouse once delivered', async () => {
  // one gateway ingests and reads; its spool holds rows for 2 s
  const g = await startGateway({ clickhouse: true, flushMs: 2000, scripts: readScripts() });
  gateways.push(g);
  const s = newSpan();
  const w = await postJson(g, '/v1/spans', { spans: [s] });
  assert.equal(w.status, 200, w.text);
  const r = await getWith(g, `/v1/traces/${s.trace_id}`);
  assert.equal(r.status, 200, r.text); // not a 404: the acknowledged span is there
  assert.equal(r.json().spans[0].span_name, s.span_name);
  assert.equal(backendOf(r), 'postgres');
  assert.match(fallback(r), /still on their way to ClickHouse/);
  // (that read asked the flusher to send the rows now: the next reads may
  // find them delivered already, and must then have them)
  const q = await queryWith(g, { filtering: { conditions: [{ field: 'attributes', key: 'fresh', operator: 'exists' }] } });
  if (backendOf(q) === 'postgres') assert.match(fallback(q), /still on their way to ClickHouse/);
  assert.equal(q.json().count, 1);
  // another project's pending rows do not hold project B's reads back
  const b = await getWith(g, `/v1/traces/${s.trace_id}`, KEY_B);
  assert.equal(b.status, 404);
  assert.equal(backendOf(b), 'clickhouse');
  // once the flusher delivered, ClickHouse answers, with the same bytes
  const later = await fromClickHouse(g, s.trace_id, 15000);
  assert.ok(later, 'ClickHouse serves the read once the rows are delivered');
  assert.equal(later.text, r.text);
  // An update is a new acknowledgement: PostgreSQL again until delivered.
  const w2 = await postJson(g, '/v1/spans', { spans: [{ ...s, span_name: 'fresh-updated' }] });
  assert.equal(w2.status, 200);
  const r2 = await getWith(g, `/v1/traces/${s.trace_id}`);
  assert.equal(r2.json().spans[0].span_name, 'fresh-updated');
  assert.equal(backendOf(r2), 'postgres');
  // analytics follow the same rule
  const a = await getWith(g, '/v1/analytics/spans?from=1717200000&to=1717300000');
  assert.equal(a.json().backend, backendOf(a));
  if (backendOf(a) === 'postgres') assert.match(fallback(a), /still on their way to ClickHouse/);
  const r3 = await fromClickHouse(g, s.trace_id, 15000);
  assert.deepEqual(r3?.json().spans.map((y) => y.span_name), ['fresh-updated']);
});

// The flusher batches rows for flush_interval_ms (here a minute), but a
// read that has to go to PostgreSQL because of them asks for them: the
// worker sends what it holds at its next tick, and ClickHouse serves the
// project's reads again within moments, not a minute later.
test('a read held back by spooled rows has them sent at once', async () => {
  const g = await startGateway({ clickhouse: true, flushMs: 60000, workers: 1, scripts: readScripts() });
  gateways.push(g);
  const s = newSpan();
  assert.equal((await postJson(g, '/v1/spans', { spans: [s] })).status, 200);
  const r = await getWith(g, `/v1/traces/${s.trace_id}`);
  assert.equal(backendOf(r), 'postgres');
  assert.match(fallback(r), /still on their way to ClickHouse/);
  const t0 = Date.now();
  const ch = await fromClickHouse(g, s.trace_id, 10000);
  assert.ok(ch, 'ClickHouse serves the read within 10 s of it being held back (flush_interval_ms is 60 s)');
  assert.equal(ch.text, r.text);
  console.log(`# served by ClickHouse ${Date.now() - t0} ms after the first read was held back`);
});

test('rows left in the spool by a killed gateway: reads avoid ClickHouse until they are replayed', async () => {
  const g = await startGateway({ clickhouse: true, flushMs: 60000, scripts: readScripts() });
  gateways.push(g);
  const s = newSpan();
  assert.equal((await postJson(g, '/v1/spans', { spans: [s] })).status, 200);
  await g.kill(); // the rows stay in the spool, never sent
  const conf = g.conf;
  // the restarted gateway flushes every 100 ms but must first replay
  writeFileSync(conf, `${(await import('node:fs')).readFileSync(conf, 'utf8')}flush_interval_ms = 100\n`);
  await g.start();
  const r = await getWith(g, `/v1/traces/${s.trace_id}`, KEY_B); // even another project: unknown rows
  assert.equal(r.status, 404);
  const a = await getWith(g, `/v1/traces/${s.trace_id}`);
  assert.equal(a.status, 200, a.text);
  const ch = await fromClickHouse(g, s.trace_id, 15000);
  assert.ok(ch, 'ClickHouse serves the read once the replay delivered the rows');
  assert.equal(ch.text, a.text);
  assert.ok(backendOf(r) === 'postgres' || backendOf(r) === 'clickhouse');
});

test('a recorded gap sends the project\'s reads to PostgreSQL until it is repaired', async () => {
  const g = await startGateway({ clickhouse: true, flushMs: 50, scripts: readScripts() });
  gateways.push(g);
  const s = newSpan();
  assert.equal((await postJson(g, '/v1/spans', { spans: [s] })).status, 200);
  const ok = await fromClickHouse(g, s.trace_id, 15000);
  assert.ok(ok);
  // a gap, as the dual-write records it when it cannot spool (here by hand,
  // as another gateway of the same databases would have)
  const [{ id }] = await g.query(`INSERT INTO spangate_ch_gaps (project_id, first_created_at, last_created_at, spans, reason)
      VALUES ($1, now(), now(), 1, 'test') RETURNING id`, [PROJECT_A]);
  const gapped = await until(async () => {
    const x = await getWith(g, `/v1/traces/${s.trace_id}`);
    return backendOf(x) === 'postgres' ? x : null;
  }, 10000, 100); // the last look at spangate_ch_gaps is at most 5 s old
  assert.ok(gapped, 'the gap is seen');
  assert.match(fallback(gapped), /spangate_ch_gaps/);
  assert.equal(backendOf(await getWith(g, `/v1/traces/${s.trace_id}`, KEY_B)), 'clickhouse'); // B has no gap
  await g.query('UPDATE spangate_ch_gaps SET repaired_at = now() WHERE id = $1', [id]);
  const back = await fromClickHouse(g, s.trace_id, 10000);
  assert.ok(back, 'ClickHouse again once repaired');
});

test('a gap the gateway records itself (spool full) is seen at once', async () => {
  const g = await startGateway({ clickhouse: true, flushMs: 50, scripts: readScripts(),
    conf: ['spool_max_bytes = 1', 'spool_segment_bytes = 1'] });
  gateways.push(g);
  const s = newSpan();
  assert.equal((await postJson(g, '/v1/spans', { spans: [s] })).status, 200);
  const r = await getWith(g, `/v1/traces/${s.trace_id}`);
  assert.equal(r.status, 200, r.text);
  assert.equal(backendOf(r), 'postgres');
  assert.match(fallback(r), /spangate_ch_gaps/);
  // the gap reaches spangate_ch_gaps too (for `spangate migrate`)
  assert.ok(await until(async () => (await g.query('SELECT count(*)::int AS n FROM spangate_ch_gaps'))[0].n === 1, 10000, 50));
  // the spool-full gap is logged at error level by design; nothing else is
  await g.stop();
  assert.match(g.log, /\[error\].*full \(spool_max_bytes\)/);
  g.log = g.log.split('\n').filter((l) => !/full \(spool_max_bytes\)/.test(l)).join('\n');
});

test('ClickHouse unreachable: the read is served from PostgreSQL and says so', async () => {
  const g = await startGateway({ clickhouse: true, flushMs: 50 });
  gateways.push(g);
  const s = newSpan();
  assert.equal((await postJson(g, '/v1/spans', { spans: [s] })).status, 200);
  // a second gateway on the same databases whose ClickHouse is a closed port
  // (its version known from the spool's cache, as after a restart)
  const spool = mkdtempSync(join(tmpdir(), 'sg-spool-'));
  writeFileSync(join(spool, 'clickhouse.version'), '18.16.1\n');
  const dead = await startGateway({ clickhouse: true, db: g.db, chdb: g.chdb, skipSchema: true, scripts: readScripts(),
    conf: [`clickhouse_port = ${await freePort()}`, `spool_dir = "${spool}"`, 'clickhouse_timeout_ms = 1000'] });
  gateways.push(dead);
  const r = await getWith(dead, `/v1/traces/${s.trace_id}`);
  assert.equal(r.status, 200, r.text);
  assert.equal(backendOf(r), 'postgres');
  assert.match(fallback(r), /ClickHouse could not answer/);
  assert.equal(r.text, (await getWith(g, `/v1/traces/${s.trace_id}`)).text);
  await until(() => /ClickHouse could not answer, PostgreSQL does/.test(dead.log), 5000, 20);
  assert.match(dead.log, /\[warn\].*ClickHouse could not answer, PostgreSQL does/);
  assert.equal(KEY_A.length > 0, true);
});
