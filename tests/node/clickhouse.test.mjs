// ClickHouse dual-write against the real 18.16 server: equal field by field,
// nothing lost through a ClickHouse outage or a gateway SIGKILL, poison rows
// dead-lettered without holding up the rows behind them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { SpanKind, SpanStatusCode, context, trace } from '@opentelemetry/api';
import { startGateway, postJson, request, KEY_A, chQuery, freePort, until, chctl, CH_DIR, sleep, spanUuid, BIN } from './lib/harness.mjs';
import { execFileSync } from 'node:child_process';
import net from 'node:net';

const CH_PORT = process.env.SG_TEST_CH_PORT;
const CH_TCP = process.env.SG_TEST_CH_TCP_PORT;

const chCount = async (gw, where = '1') => Number((await gw.ch(`SELECT count() FROM spans FINAL WHERE ${where}`)).trim());
const chRaw = async (gw) => Number((await gw.ch('SELECT count() FROM spans')).trim());

function span(sid, extra = {}) {
  return { trace_id: 'e'.repeat(32), span_id: sid, parent_id: 'f'.repeat(16), span_name: `s-${sid}`, start_time: 1714979289123456, end_time: 1714979289654321, ...extra };
}

test('spans from the OpenTelemetry SDK land in both stores, equal field by field', async () => {
  const gw = await startGateway({ clickhouse: true });
  try {
    const exporter = new OTLPTraceExporter({ url: `${gw.url}/v1/traces`, headers: { Authorization: `ApiKey ${KEY_A}` } });
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const tracer = provider.getTracer('ch-test');
    const root = tracer.startSpan('root', { kind: SpanKind.SERVER, attributes: { 'ag.type.span': 'workflow', 'n': 7, 'f': 2.5, 's': 'tab\there\nnewline \\ back', 'u': 'ünï 😀' } });
    const child = tracer.startSpan('child', { kind: SpanKind.CLIENT }, trace.setSpan(context.active(), root));
    child.addEvent('e1', { k: 'v' });
    child.setStatus({ code: SpanStatusCode.ERROR, message: 'bad' });
    child.end();
    root.end();
    await provider.forceFlush();
    await provider.shutdown();
    await until(async () => (await chCount(gw)) === 2);
    const pg = await gw.query(`SELECT project_id::text, trace_id::text, span_id::text, parent_id::text, span_name,
        span_kind::text, status_code::text, status_message, trace_type::text, span_type::text,
        (extract(epoch from start_time)*1000000)::bigint::text AS start_us,
        (extract(epoch from end_time)*1000000)::bigint::text AS end_us,
        (extract(epoch from created_at)*1000000)::bigint::text AS created_us,
        attributes, events, links, created_by_id::text FROM spans ORDER BY span_name`);
    const ch = (await gw.ch(`SELECT toString(project_id), toString(trace_id), toString(span_id), ifNull(toString(parent_id), ''),
        span_name, toString(span_kind), toString(status_code), ifNull(status_message, ''), ifNull(toString(trace_type), ''),
        ifNull(toString(span_type), ''),
        toString(toUInt64(start_time) * 1000000 + start_time_us), toString(toUInt64(end_time) * 1000000 + end_time_us),
        toString(toUInt64(created_at) * 1000000 + created_at_us), ifNull(attributes, 'null'), ifNull(events, 'null'),
        ifNull(links, 'null'), ifNull(toString(created_by_id), '')
        FROM spans FINAL ORDER BY span_name FORMAT JSONCompact`));
    const rows = JSON.parse(ch).data;
    assert.equal(rows.length, pg.length);
    pg.forEach((p, i) => {
      const c = rows[i];
      assert.deepEqual(
        [c[0], c[1], c[2], c[3] || null, c[4], c[5], c[6], c[7] || null, c[8] || null, c[9] || null, c[10], c[11], c[12]],
        [p.project_id, p.trace_id, p.span_id, p.parent_id, p.span_name, p.span_kind, p.status_code, p.status_message,
          p.trace_type, p.span_type, p.start_us, p.end_us, p.created_us], `span ${p.span_name}`);
      assert.deepEqual(JSON.parse(c[13]), p.attributes);
      assert.deepEqual(JSON.parse(c[14]), p.events);
      assert.deepEqual(JSON.parse(c[15]), p.links);
      assert.equal(c[16], p.created_by_id);
    });
    // A re-sent span replaces its row (FINAL) with the newer version.
    const r = await postJson(gw, '/v1/spans', { spans: [span('1111111111111111')] });
    assert.equal(r.status, 200);
    const r2 = await postJson(gw, '/v1/spans', { spans: [span('1111111111111111', { span_name: 'renamed' })] });
    assert.equal(r2.status, 200);
    await until(async () => (await gw.ch(`SELECT span_name FROM spans FINAL WHERE span_id = '${spanUuid('1111111111111111')}'`)).trim() === 'renamed');
    assert.equal(await chCount(gw, `span_id = '${spanUuid('1111111111111111')}'`), 1);
  } finally { await gw.stop(); }
});

// The flusher seals the open spool segment when ingest goes idle instead of
// waiting out flush_interval_ms (here a minute): the rows of the last
// requests reach ClickHouse soon after their answers.
test('rows answered last reach ClickHouse without waiting out flush_interval_ms once ingest is idle', async () => {
  const gw = await startGateway({ clickhouse: true, flushMs: 60000, workers: 1 });
  try {
    let n = 0;
    const text = 'lorem ipsum '.repeat(170); // ~2 KB per span: 800 spans fill more than 1 MiB of rows
    for (let i = 0; i < 4; i++) {
      const spans = Array.from({ length: 200 }, () => span((0x7200000000000000n + BigInt(n++)).toString(16), { attributes: { 'big.text': text } }));
      const r = await postJson(gw, '/v1/spans', { spans });
      assert.equal(r.status, 200, r.text);
    }
    const got = await until(async () => { const c = await chRaw(gw); return c === n ? c : 0; }, 20000, 100);
    assert.equal(got, n, 'the spooled rows were sent well before flush_interval_ms');
  } finally { await gw.stop(); }
});

// Idle is per worker: only a worker's own requests append to its spool, so
// a request another worker holds open (a slow upload: headers and part of
// a body) does not keep this worker's last rows out of ClickHouse. The
// kernel spreads connections over the workers (SO_REUSEPORT), so requests
// go on new connections until one lands beside the held one's worker.
test("a worker's last rows reach ClickHouse while another worker holds a request open", async () => {
  const gw = await startGateway({ clickhouse: true, flushMs: 60000, workers: 2, conf: ['read_timeout_ms = 120000'] });
  const held = net.connect(gw.port, '127.0.0.1');
  try {
    await new Promise((res, rej) => { held.once('connect', res); held.once('error', rej); });
    held.write(`POST /v1/spans HTTP/1.1\r\nHost: x\r\nAuthorization: ApiKey ${KEY_A}\r\n` +
      'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"spans": [');
    const inflight = async () => Number(((await request(gw, 'GET', '/metrics')).text.match(/^spangate_inflight_bytes (\S+)$/m) || [])[1]);
    await until(async () => (await inflight()) >= 100000, 5000);
    const text = 'lorem ipsum '.repeat(170); // ~2 KB per span: 600 spans hold more than 1 MiB of rows
    let n = 0, got = 0;
    for (let i = 0; i < 16 && got === 0; i++) {
      const spans = Array.from({ length: 600 }, () => span((0x7400000000000000n + BigInt(n++)).toString(16), { attributes: { 'big.text': text } }));
      const r = await postJson(gw, '/v1/spans', { spans });
      assert.equal(r.status, 200, r.text);
      got = await until(async () => chRaw(gw), 3000, 100).catch(() => 0);
    }
    assert.ok(got > 0, 'rows of a worker with nothing in flight reached ClickHouse within seconds (flush_interval_ms is a minute)');
    assert.ok((await inflight()) >= 100000, 'the held request was still in flight');
  } finally { held.destroy(); await gw.stop(); }
});

// Steady ingest with pauses between requests (one every 150 ms, never a
// request in flight at a tick) is not idle: the segment still goes to
// ClickHouse once per flush_interval_ms, not at every pause.
test('steady ingest with pauses between requests makes one INSERT per flush_interval_ms', async () => {
  const gw = await startGateway({ clickhouse: true, flushMs: 1000, workers: 1 });
  try {
    const metric = (text, name) => Number((text.match(new RegExp(`^${name} (\\S+)$`, 'm')) || [])[1]);
    let n = 0;
    const t0 = Date.now();
    for (let i = 0; i < 30; i++) {
      const spans = Array.from({ length: 5 }, () => span((0x7300000000000000n + BigInt(n++)).toString(16)));
      const r = await postJson(gw, '/v1/spans', { spans });
      assert.equal(r.status, 200, r.text);
      await sleep(150); // the load's pace, not a wait for the gateway
    }
    const seconds = (Date.now() - t0) / 1000;
    let m = '';
    await until(async () => metric(m = (await request(gw, 'GET', '/metrics')).text, 'spangate_clickhouse_rows_total') === n, 10000);
    const inserts = metric(m, 'spangate_clickhouse_inserts_total');
    console.log(`# ${n} spans over ${seconds.toFixed(1)} s: ${inserts} INSERTs`);
    assert.ok(inserts <= Math.ceil(seconds) + 1, `${inserts} INSERTs for ${seconds.toFixed(1)} s of steady ingest at flush_interval_ms = 1000`);
  } finally { await gw.stop(); }
});

test('ClickHouse killed while clients send: 200s continue; afterwards every span arrives once', async () => {
  const gw = await startGateway({ clickhouse: true });
  let chDown = false;
  try {
    const acked = new Set();
    let n = 0;
    const send = async () => {
      const sids = Array.from({ length: 5 }, () => (0x7000000000000000n + BigInt(n++)).toString(16));
      const r = await postJson(gw, '/v1/spans', { spans: sids.map((s) => span(s)) });
      assert.equal(r.status, 200, r.text);
      sids.forEach((s) => acked.add(s));
    };
    for (let i = 0; i < 20; i++) await send();
    chctl('stop', CH_DIR);
    chDown = true;
    for (let i = 0; i < 40; i++) await send(); // PostgreSQL still answers
    let m; // spool figures are published twice a second: wait for them
    await until(async () => /spangate_spool_records [1-9]/.test(m = (await request(gw, 'GET', '/metrics')).text), 5000);
    assert.match(m, /spangate_spool_records [1-9]/);
    chctl('start', CH_DIR, CH_PORT, CH_TCP);
    chDown = false;
    for (let i = 0; i < 20; i++) await send();
    const want = acked.size;
    const got = await until(async () => { const c = await chCount(gw); return c === want ? c : 0; }, 60000, 250);
    assert.equal(got, want, 'every acknowledged span reached ClickHouse');
    const uniq = Number((await gw.ch('SELECT uniqExact(span_id) FROM spans')).trim());
    assert.equal(uniq, want);
    const pg = (await gw.query('SELECT count(*)::int AS n FROM spans'))[0].n;
    assert.equal(pg, want);
    await until(async () => /spangate_clickhouse_retries_total [1-9]/.test(m = (await request(gw, 'GET', '/metrics')).text), 5000);
    assert.match(m, /spangate_clickhouse_retries_total [1-9]/);
  } finally {
    if (chDown) chctl('start', CH_DIR, CH_PORT, CH_TCP);
    await gw.stop();
  }
});

test('gateway SIGKILLed while ClickHouse is down, then restarted: every acknowledged span reaches ClickHouse', async () => {
  const gw = await startGateway({ clickhouse: true });
  let chDown = false;
  try {
    let acked = 0;
    for (let i = 0; i < 10; i++) {
      const r = await postJson(gw, '/v1/spans', { spans: [span((0x7100000000000000n + BigInt(i)).toString(16))] });
      assert.equal(r.status, 200);
      acked++;
    }
    chctl('stop', CH_DIR);
    chDown = true;
    for (let i = 10; i < 60; i++) {
      const r = await postJson(gw, '/v1/spans', { spans: [span((0x7100000000000000n + BigInt(i)).toString(16))] });
      assert.equal(r.status, 200);
      acked++;
    }
    await gw.kill();
    chctl('start', CH_DIR, CH_PORT, CH_TCP);
    chDown = false;
    await gw.start();
    const got = await until(async () => { const c = await chCount(gw); return c === acked ? c : 0; }, 60000, 250);
    assert.equal(got, acked);
  } finally {
    if (chDown) chctl('start', CH_DIR, CH_PORT, CH_TCP);
    await gw.stop();
  }
});

test('a poison batch goes to the dead-letter file and the rows behind it still arrive', async () => {
  // The table is changed under the running gateway: its span_type enum loses
  // RERANK (at start spangate refuses a table it cannot write; see the
  // schema tests below). Such rows are rejected by ClickHouse (bad data),
  // the others are fine.
  const db = `sgpoison_${process.pid}`;
  const gw = await startGateway({ clickhouse: true, chdb: db, flushMs: 400, workers: 1 });
  try {
    const type = (await gw.ch(`SELECT type FROM system.columns WHERE database = '${db}' AND table = 'spans' AND name = 'span_type'`)).trim();
    await gw.ch(`ALTER TABLE spans MODIFY COLUMN span_type ${type.replace(/\\'/g, "'").replace(/,\s*'RERANK'\s*=\s*\d+/, '')}`);
    const reqs = [
      postJson(gw, '/v1/spans', { spans: [span('8000000000000001')] }),
      postJson(gw, '/v1/spans', { spans: [span('8000000000000002', { span_type: 'RERANK' }), span('8000000000000003', { span_type: 'RERANK' })] }),
      postJson(gw, '/v1/spans', { spans: [span('8000000000000004')] }),
    ];
    for (const r of await Promise.all(reqs)) assert.equal(r.status, 200);
    const got = await until(async () => (await chCount(gw)) === 2, 20000);
    assert.ok(got, 'the good rows arrived');
    const ids = (await gw.ch('SELECT toString(span_id) FROM spans FINAL ORDER BY span_id')).trim().split('\n');
    assert.deepEqual(ids, [spanUuid('8000000000000001'), spanUuid('8000000000000004')]);
    const deadDir = join(gw.dir, 'spool', 'w1', 'dead');
    await until(() => existsSync(deadDir) && readdirSync(deadDir).some((f) => f.endsWith('.txt')));
    const txt = readdirSync(deadDir).filter((f) => f.endsWith('.txt')).map((f) => readFileSync(join(deadDir, f), 'utf8')).join('');
    assert.match(txt, /RERANK|Unknown element|49/);
    const dead = await until(async () => /spangate_clickhouse_dead_letter_rows_total\{cause="rejected"\} 2\n/.test((await request(gw, 'GET', '/metrics')).text), 5000);
    assert.ok(dead, 'the dead-lettered rows are counted');
    assert.ok(gw.errorLines().some((l) => /ClickHouse rejected 2 rows/.test(l)), 'the dead letter is logged');
    // Both stores still agree on what PostgreSQL has: all four.
    assert.equal((await gw.query('SELECT count(*)::int AS n FROM spans'))[0].n, 4);
  } finally { await gw.stop(); }
});

test('USE_CLICKHOUSE=false writes nothing to ClickHouse', async () => {
  const gw = await startGateway({ clickhouse: true, conf: ['use_clickhouse = false'] });
  try {
    await chQuery(`CREATE DATABASE IF NOT EXISTS ${gw.chdb}`);
    const r = await postJson(gw, '/v1/spans', { spans: [span('9000000000000001')] });
    assert.equal(r.status, 200);
    // The absence under test: nothing may appear within a few flush
    // intervals (100 ms); there is no event to wait for.
    await sleep(500);
    const tables = (await chQuery(`SELECT count() FROM system.tables WHERE database = '${gw.chdb}'`)).trim();
    assert.equal(tables, '0', 'no tables created, nothing written');
    assert.match((await request(gw, 'GET', '/metrics')).text, /spangate_clickhouse_enabled 0/);
  } finally { await gw.stop(); }
});

// ---- schema at start and upgrades ---------------------------------------------------

const us = (col) => `toString(toUInt64(${col}) * 1000000 + ${col}_us)`;

async function chTables(db) {
  return (await chQuery(`SELECT name FROM system.tables WHERE database = '${db}' ORDER BY name`)).trim().split('\n').filter(Boolean);
}

test('serve creates the missing ClickHouse database and tables at start (logged), as Agenta\'s init_tables()', async () => {
  // PostgreSQL's schema only; ClickHouse has nothing yet
  const gw = await startGateway({ clickhouse: true, conf: ['use_clickhouse = false'] });
  try {
    await gw.stop();
    assert.deepEqual(await chTables(gw.chdb), []);
    appendFileSync(gw.conf, 'use_clickhouse = true\n');
    await gw.start();
    assert.match(gw.log, /\[info\] clickhouse: schema: create database `[^`]+`/);
    assert.match(gw.log, /schema: create table `[^`]+`\.spans \(DateTime \+ _us times\)/);
    assert.deepEqual(await chTables(gw.chdb), ['nodes', 'spans', 'spans_analytics', 'spans_analytics_deleted', 'spans_analytics_deleted_mv', 'spans_analytics_mv',
      'spans_by_start', 'spans_by_start_mv', 'spans_by_trace', 'spans_by_trace_mv']);
    const r = await postJson(gw, '/v1/spans', { spans: [span('a100000000000001')] });
    assert.equal(r.status, 200);
    assert.ok(await until(async () => (await chCount(gw)) === 1), 'the span arrived');
    assert.deepEqual(gw.errorLines(), []);
  } finally { await gw.stop(); }
});

test('clickhouse_create_schema = false with the tables missing: a clear error at start, not endless retries', async () => {
  const gw = await startGateway({ clickhouse: true, conf: ['use_clickhouse = false'] });
  await gw.stop();
  appendFileSync(gw.conf, 'use_clickhouse = true\nclickhouse_create_schema = false\n');
  await assert.rejects(gw.start(), (e) => {
    assert.match(e.message, /gateway exited at start-up/);
    assert.match(e.message, /ClickHouse table `[^`]+`\.spans does not exist; create it with `spangate schema --apply`/);
    return true;
  });
  assert.deepEqual(await chTables(gw.chdb), [], 'nothing created');
});

test('a table spangate cannot write fails the start, naming the table and column (no dead letters)', async () => {
  const db = `sgbadlayout_${process.pid}`;
  const ddl = execFileSync(BIN, ['schema', '--print', '--clickhouse-version', '18.16'], { env: { ...process.env, CLICKHOUSE_DATABASE: db } }).toString();
  for (const stmt of ddl.split(/;\s*\n/).map((x) => x.trim()).filter(Boolean))
    await chQuery(stmt.replace('    version UInt64,', '    version UInt32,'));
  await assert.rejects(startGateway({ clickhouse: true, chdb: db }), (e) => {
    assert.match(e.message, /ClickHouse table `sgbadlayout_\d+`\.spans: column version UInt32 is not UInt64/);
    return true;
  });
});

test('tables made with 18.16\'s layout keep getting exact rows when the server reports a newer version', async () => {
  // The tables exist with DateTime + _us columns (made by schema --apply on
  // 18.16); then ClickHouse is "upgraded": the gateway is told 24.8, which
  // would render DateTime64 for new tables. The rows must follow the table.
  const gw = await startGateway({ clickhouse: true, workers: 1 });
  try {
    await gw.stop();
    appendFileSync(gw.conf, 'clickhouse_version = "24.8"\nclickhouse_create_schema = false\n');
    await gw.start();
    assert.match(gw.log, /ClickHouse 24\.8 at .* spans rows DateTime \+ _us; dual-write on/);
    // what 24.8 would add is reported, not done (create_schema off)
    assert.match(gw.log, /\[warn\] clickhouse: schema missing: set TTL expires_at on/);
    const spans = [
      span('a200000000000001', { start_time: 1714979289000001, end_time: 1714979289999999, attributes: { n: 'BIG', s: 'ünï 😀 \t\n\\' } }),
      span('a200000000000002', { start_time: 4102444799999999, end_time: 4102444800000000, status_message: null }),
    ];
    // 2^53 + 1 as a JSON number: exact only if nothing on the way is a double
    const r = await postJson(gw, '/v1/spans', JSON.stringify({ spans }).replace('"BIG"', '9007199254740993'));
    assert.equal(r.status, 200);
    assert.ok(await until(async () => (await chCount(gw)) === 2), 'both spans arrived');
    const rows = (await gw.ch(`SELECT toString(span_id), ${us('start_time')}, ${us('end_time')}, ${us('created_at')}, attributes
        FROM spans FINAL ORDER BY span_id FORMAT JSONCompact`));
    const pg = await gw.query(`SELECT span_id::text, (extract(epoch from start_time)*1000000)::bigint::text AS s,
        (extract(epoch from end_time)*1000000)::bigint::text AS e, (extract(epoch from created_at)*1000000)::bigint::text AS c,
        attributes FROM spans ORDER BY span_id`);
    const got = JSON.parse(rows).data;
    assert.deepEqual(got.map((x) => x.slice(0, 4)), pg.map((p) => [p.span_id, p.s, p.e, p.c]));
    assert.deepEqual(got.map((x) => JSON.parse(x[4])), pg.map((p) => p.attributes));
    assert.match(got[0][4], /"n":9007199254740993[,}]/);
    assert.equal(got[0][1], '1714979289000001');
    assert.equal(got[1][2], '4102444800000000');
    assert.ok(!existsSync(join(gw.dir, 'spool', 'w1', 'dead')) || readdirSync(join(gw.dir, 'spool', 'w1', 'dead')).length === 0, 'no dead letters');
    // the jobs read the same layout: validate compares every field
    const v = execFileSync(BIN, ['validate', '-c', gw.conf, '--sample', '10'], { env: gw.env }).toString();
    assert.match(v, /sample: 2 spans compared field by field, 0 differ/);
    assert.match(v, /validate: ClickHouse matches PostgreSQL/);
  } finally { await gw.stop(); }
});

test('schema --apply on an existing database adds what is missing, prints it, and drops nothing', async () => {
  const gw = await startGateway({ clickhouse: true });
  try {
    await gw.stop();
    await gw.ch('ALTER TABLE spans DROP COLUMN agent_id');
    await gw.ch('ALTER TABLE spans DROP COLUMN deleted_at_us');
    await gw.ch('DROP TABLE spans_analytics_mv');
    const out = execFileSync(BIN, ['schema', '--apply', '-c', gw.conf], { env: gw.env }).toString();
    assert.match(out, /add column `[^`]+`\.spans\.agent_id Nullable\(String\)\n/);
    assert.match(out, /add column `[^`]+`\.spans\.deleted_at_us Nullable\(UInt32\)\n/);
    assert.match(out, /create materialized view `[^`]+`\.spans_analytics_mv \(reads DateTime \+ _us times\)\n/);
    assert.doesNotMatch(out, /create table/);
    const cols = (await gw.ch("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'spans' AND name IN ('agent_id', 'deleted_at_us')")).trim().split('\n').sort();
    assert.deepEqual(cols, ['agent_id', 'deleted_at_us']);
    const again = execFileSync(BIN, ['schema', '--apply', '-c', gw.conf], { env: gw.env }).toString();
    assert.match(again, /ClickHouse: nothing was missing/);
  } finally { await gw.stop(); }
});

test('a start on spans without the read index leaves the backfill to schema --apply; reads answer alike before and after', async () => {
  const gw = await startGateway({ clickhouse: true, conf: ['read_backend = "clickhouse"'] });
  const marked = async () => Number((await gw.ch(`SELECT count() FROM spans_by_trace
      WHERE project_id = toUUID('00000000-0000-0000-0000-000000000000')`)).trim());
  const fetch = async () => {
    const r = await request(gw, 'GET', `/v1/traces/${'e'.repeat(32)}`, undefined, { authorization: `ApiKey ${KEY_A}` });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-spangate-read-backend'], 'clickhouse', r.headers['x-spangate-read-fallback']);
    return r.text;
  };
  try {
    const spans = ['a200000000000001', 'a200000000000002', 'a200000000000003'].map((sid) => span(sid));
    assert.equal((await postJson(gw, '/v1/spans', { spans })).status, 200);
    assert.ok(await until(async () => (await chCount(gw)) === 3), 'the spans arrived');
    let before;
    assert.ok(await until(async () => { try { before = await fetch(); return true; } catch { return false; } }), 'read from ClickHouse');
    // a database from before the read index: spans hold rows, no index
    await gw.stop();
    for (const t of ['spans_by_trace', 'spans_by_start']) {
      await gw.ch(`DROP TABLE ${t}_mv`);
      await gw.ch(`DROP TABLE ${t}`);
    }
    await gw.start();
    assert.match(gw.log, /schema: create table `[^`]+`\.spans_by_trace/);
    assert.match(gw.log, /schema: left for `spangate schema --apply`: backfill `[^`]+`\.spans_by_(trace|start) from spans/);
    assert.equal(await marked(), 0, 'not marked complete without its backfill');
    assert.equal(await fetch(), before, 'without the index');
    const out = execFileSync(BIN, ['schema', '--apply', '-c', gw.conf], { env: gw.env }).toString();
    assert.match(out, /backfill `[^`]+`\.spans_by_trace from spans/);
    assert.match(out, /mark `[^`]+`\.spans_by_trace complete/);
    assert.equal(await marked(), 1);
    await gw.stop();
    const mark = gw.log.length;
    await gw.start(); // the index is read as complete at start: nothing left to do
    assert.doesNotMatch(gw.log.slice(mark), /schema: /);
    assert.equal(await fetch(), before, 'with the index');
    assert.deepEqual(gw.errorLines(), []);
  } finally { await gw.stop(); }
});

test('ClickHouse away at start with nothing created: gaps meanwhile, then the schema is created and rows flow', async () => {
  // The gateway's ClickHouse port forwards to the real server only once a
  // forwarder listens there; until then connections are refused.
  const port = await freePort();
  const gw = await startGateway({ clickhouse: true, conf: ['use_clickhouse = false'] });
  let fwd;
  try {
    await gw.stop();
    appendFileSync(gw.conf, `use_clickhouse = true\nclickhouse_port = ${port}\n`);
    await gw.start();
    assert.match(gw.log, /spans are recorded as gaps until ClickHouse answers/);
    assert.equal((await postJson(gw, '/v1/spans', { spans: [span('c100000000000001')] })).status, 200);
    assert.ok(await until(async () => (await gw.query('SELECT coalesce(sum(spans), 0)::int AS n FROM spangate_ch_gaps'))[0].n === 1),
      'the span is recorded as a gap');
    fwd = net.createServer((c) => {
      const up = net.connect(Number(CH_PORT), '127.0.0.1');
      c.pipe(up).pipe(c);
      c.on('error', () => up.destroy());
      up.on('error', () => c.destroy());
    });
    await new Promise((r) => fwd.listen(port, '127.0.0.1', r));
    // each of the two workers (worker 1 creates the schema, the other waits for it)
    const resumed = () => (gw.log.match(/ClickHouse 18\.16\.\S+ reached; dual-write resumes/g) || []).length;
    assert.ok(await until(() => resumed() === 2, 30000), gw.log);
    assert.match(gw.log, /\[info\] worker 1 clickhouse: schema: create table `[^`]+`\.spans \(DateTime \+ _us times\)/);
    assert.equal((await postJson(gw, '/v1/spans', { spans: [span('c100000000000002')] })).status, 200);
    assert.ok(await until(async () => (await chCount(gw)) === 1), 'the span after the reconnect arrived');
  } finally {
    await gw.stop();
    if (fwd) await new Promise((r) => fwd.close(r));
  }
});
