// ClickHouse-only projects (routing.lua M.postgres false, here through
// gateway.conf's clickhouse_only_projects) against the real servers: spans
// skip PostgreSQL and are acknowledged once durable in the spool; reads come
// from ClickHouse and wait for what was acknowledged before them; a re-send
// replaces, an edit keeps the sorting key, a delete tombstones without
// PostgreSQL; a ClickHouse outage and a kill -9 lose nothing, a full spool
// answers 503 (never a gap); the OpenTelemetry SDK's trace reads back as
// sent; change capture leaves such projects to the ingest; migrate and
// validate leave them alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { BasicTracerProvider, SimpleSpanProcessor, InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { OTLPTraceExporter as ProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { OTLPTraceExporter as HttpExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as GrpcExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { SpanKind, SpanStatusCode, context, trace } from '@opentelemetry/api';
import grpc from '@grpc/grpc-js';
import {
  startGateway, createDatabase, postJson, request, until, BIN, PG_URI, pgQuery, KEY_A, KEY_B, PROJECT_A, PROJECT_B,
  spanUuid, chctl, CH_DIR,
} from './lib/harness.mjs';
import { backendOf, getWith } from './lib/read_both.mjs';

const CH_PORT = process.env.SG_TEST_CH_PORT;
const CH_TCP = process.env.SG_TEST_CH_TCP_PORT;
const ONLY = [`clickhouse_only_projects = { "${PROJECT_A}" }`];

const hex = (n, len) => n.toString(16).padStart(len, '0');
const traceHex = (t) => 'c7' + hex(t, 6) + 'e'.repeat(24);
const spanHex = (t, s) => hex(0xc7000000 + t, 8) + hex(s + 1, 8);
const T0 = 1767225600000000; // 2026-01-01T00:00:00Z, µs

// A trace of n spans: span 0 is the root.
function traceSpans(t, n, extra = {}) {
  return Array.from({ length: n }, (_, s) => ({
    trace_id: traceHex(t), span_id: spanHex(t, s), ...(s ? { parent_id: spanHex(t, 0) } : {}),
    span_name: `span ${t}.${s}`, span_kind: s ? 'SPAN_KIND_CLIENT' : 'SPAN_KIND_SERVER',
    start_time: T0 + t * 1000 + s, end_time: T0 + t * 1000 + 500000 + s, attributes: { n: s, t }, ...extra,
  }));
}

const auth = (key) => ({ authorization: `ApiKey ${key}` });
const send = (gw, spans, key = KEY_A) => postJson(gw, '/v1/spans', { spans }, key);
const del = (gw, t, key = KEY_A) => request(gw, 'DELETE', `/v1/traces/${traceHex(t)}`, undefined, auth(key));
const put = (gw, t, spans, key = KEY_A) => request(gw, 'PUT', `/v1/traces/${traceHex(t)}`, JSON.stringify({ spans }),
  { 'content-type': 'application/json', ...auth(key) });
const pgRows = async (gw, project) =>
  (await gw.query('SELECT count(*)::int AS n FROM spans WHERE project_id = $1', [project]))[0].n;
// ClickHouse: live spans of a project (FINAL, tombstones left out), and every stored row.
const chLive = async (gw, project, where = '1') =>
  Number((await gw.ch(`SELECT count() FROM spans FINAL WHERE project_id = toUUID('${project}') AND is_deleted = 0 AND ${where}`)).trim());
const chSpanIds = async (gw, project) => new Set((await gw.ch(
  `SELECT toString(span_id) FROM spans FINAL WHERE project_id = toUUID('${project}') AND is_deleted = 0`)).trim().split('\n').filter(Boolean));

test('a ClickHouse-only project: acknowledged from the spool, read back from ClickHouse at once; re-send, edit and delete work without PostgreSQL', async () => {
  // flush_interval_ms 400: the read right after the answer finds the spans still spooled
  const gw = await startGateway({ clickhouse: true, conf: ONLY, flushMs: 400 });
  try {
    let r = await send(gw, traceSpans(1, 3));
    assert.equal(r.status, 200, r.text);
    assert.equal((await send(gw, traceSpans(2, 2), KEY_B)).status, 200);
    // the read waits for the spool instead of answering without the spans
    let g = await getWith(gw, `/v1/traces/${traceHex(1)}`);
    assert.equal(g.status, 200, g.text);
    assert.equal(backendOf(g), 'clickhouse');
    const first = g.json().spans;
    assert.deepEqual(first.map((s) => s.span_name), ['span 1.0', 'span 1.1', 'span 1.2']);
    for (const s of first) assert.equal(s.created_at, s.start_time, 'created_at is the span\'s start_time');
    assert.equal(await pgRows(gw, PROJECT_A), 0, 'PostgreSQL has none of the project\'s spans');
    assert.equal(await pgRows(gw, PROJECT_B), 2, 'the other project is written to PostgreSQL as before');
    assert.equal(backendOf(await getWith(gw, `/v1/traces/${traceHex(2)}`, KEY_B)), 'postgres');

    // a re-send replaces: one span each, the new values, a higher version, the same created_at
    const v1 = BigInt((await gw.ch(`SELECT max(version) FROM spans WHERE project_id = toUUID('${PROJECT_A}')`)).trim());
    r = await send(gw, traceSpans(1, 3, { span_name: 'renamed' }));
    assert.equal(r.status, 200, r.text);
    g = await getWith(gw, `/v1/traces/${traceHex(1)}`);
    assert.deepEqual(g.json().spans.map((s) => s.span_name), ['renamed', 'renamed', 'renamed']);
    assert.deepEqual(g.json().spans.map((s) => s.created_at), first.map((s) => s.created_at));
    assert.equal(await chLive(gw, PROJECT_A), 3);
    const stored = (await gw.ch(`SELECT count(), min(version) FROM spans WHERE project_id = toUUID('${PROJECT_A}')
        AND span_name = 'renamed'`)).trim().split('\t');
    assert.equal(Number(stored[0]), 3);
    assert.ok(BigInt(stored[1]) > v1, 'the re-sent rows have higher versions');

    // an edit that moves a span's start_time keeps its sorting key: still one row per span
    const edited = traceSpans(1, 3, { span_name: 'edited' });
    edited[1].start_time += 777;
    r = await put(gw, 1, edited);
    assert.equal(r.status, 202, r.text);
    g = await getWith(gw, `/v1/traces/${traceHex(1)}`);
    assert.equal(g.json().count, 3, g.text);
    const e1 = g.json().spans.find((s) => s.span_id === spanHex(1, 1));
    assert.equal(e1.span_name, 'edited');
    assert.equal(e1.created_at, first[1].created_at, 'the edit kept the stored created_at');
    assert.notEqual(e1.start_time, first[1].start_time);
    assert.equal(await chLive(gw, PROJECT_A), 3);

    // a delete: tombstones through the spool; the trace is gone from the next read at once
    const d = await del(gw, 1);
    assert.equal(d.status, 202, d.text);
    assert.equal(d.json().count, 3);
    g = await getWith(gw, `/v1/traces/${traceHex(1)}`);
    assert.equal(g.status, 404, g.text);
    assert.equal(backendOf(g), 'clickhouse');
    assert.deepEqual((await del(gw, 1)).json(), { count: 0, links: [] }, 'a retried delete is harmless');
    assert.equal(await chLive(gw, PROJECT_A), 0);
    // a span sent again after its delete lives again
    assert.equal((await send(gw, traceSpans(1, 1))).status, 200);
    assert.equal((await getWith(gw, `/v1/traces/${traceHex(1)}`)).json().count, 1);

    assert.equal(await pgRows(gw, PROJECT_A), 0, 'still nothing in PostgreSQL');
    assert.equal((await gw.query('SELECT count(*)::int AS n FROM spangate_ch_gaps'))[0].n, 0);
    assert.deepEqual(await gw.query('SELECT project_id::text AS p FROM spangate_ch_only'), [{ p: PROJECT_A }],
      'the gateway recorded the project as ClickHouse-only');
    assert.deepEqual(gw.errorLines(), []);
  } finally { await gw.stop(); }
});

test('a ClickHouse-only edit right after the ingest waits for the spool: the span keeps its sorting key, one copy', async () => {
  // flush_interval_ms 1500: the edit arrives while the trace is still spooled
  const gw = await startGateway({ clickhouse: true, conf: ONLY, flushMs: 1500 });
  try {
    assert.equal((await send(gw, traceSpans(9, 3))).status, 200);
    const edited = traceSpans(9, 3, { span_name: 'moved' });
    edited[2].start_time += 4242;
    const r = await put(gw, 9, edited);
    assert.equal(r.status, 202, r.text);
    const g = await getWith(gw, `/v1/traces/${traceHex(9)}`);
    assert.equal(g.status, 200, g.text);
    assert.equal(g.json().count, 3, g.text);
    const moved = g.json().spans.find((s) => s.span_id === spanHex(9, 2));
    assert.equal(moved.span_name, 'moved');
    assert.notEqual(moved.created_at, moved.start_time, 'the edit kept the created_at of the stored span');
    assert.equal(await chLive(gw, PROJECT_A), 3);
  } finally { await gw.stop(); }
});

test('a dual-write project read from ClickHouse: right after a delete, the trace is not served from ClickHouse', async () => {
  // the tombstones are counted as undelivered rows: the read goes to PostgreSQL until ClickHouse has them
  const gw = await startGateway({ clickhouse: true, conf: ['read_backend = "clickhouse"'], flushMs: 2000 });
  try {
    assert.equal((await send(gw, traceSpans(3, 2))).status, 200);
    assert.ok(await until(async () => (await chLive(gw, PROJECT_A)) === 2), 'in ClickHouse');
    // (ClickHouse shows the rows a moment before the gateway hears that the
    // insert succeeded; until then reads go to PostgreSQL)
    assert.ok(await until(async () => backendOf(await getWith(gw, `/v1/traces/${traceHex(3)}`)) === 'clickhouse'), 'read from ClickHouse');
    assert.equal((await del(gw, 3)).status, 202);
    const g = await getWith(gw, `/v1/traces/${traceHex(3)}`);
    assert.equal(g.status, 404, `${backendOf(g)}: ${g.text}`);
  } finally { await gw.stop(); }
});

test('a ClickHouse-only project through a ClickHouse outage and a kill -9: acknowledged spans all arrive; a full spool answers 503 and loses nothing', async () => {
  const gw = await startGateway({ clickhouse: true, workers: 1, conf: [...ONLY,
    'spool_max_bytes = "48KiB"', 'spool_segment_bytes = "4KiB"', 'clickhouse_timeout_ms = 1000'] });
  let chDown = false;
  try {
    const acked = new Set(), refused = [];
    let t = 100;
    const sendTrace = async () => {
      const spans = traceSpans(t++, 4, { attributes: { pad: 'x'.repeat(300) } });
      const r = await send(gw, spans);
      if (r.status === 200) spans.forEach((s) => acked.add(spanUuid(s.span_id)));
      return { r, spans };
    };
    for (let i = 0; i < 5; i++) assert.equal((await sendTrace()).r.status, 200);
    assert.ok(await until(async () => (await chLive(gw, PROJECT_A)) === acked.size), 'delivered before the outage');

    chctl('stop', CH_DIR);
    chDown = true;
    // acknowledged into the spool while ClickHouse is away, up to spool_max_bytes; then 503
    const before = acked.size;
    let full = null;
    for (let i = 0; i < 200 && !full; i++) {
      const { r, spans } = await sendTrace();
      if (r.status === 200) continue;
      assert.equal(r.status, 503, r.text);
      assert.match(r.json().error, /spool is full/);
      assert.equal(r.headers['retry-after'], '5');
      full = spans;
      refused.push(...spans);
    }
    assert.ok(full, 'the spool filled up');
    assert.ok(acked.size - before >= 40, `acknowledged during the outage: ${acked.size - before}`);
    // reads: ClickHouse cannot answer and PostgreSQL does not have the spans: 503
    const g = await getWith(gw, `/v1/traces/${traceHex(100)}`);
    assert.equal(g.status, 503, g.text);
    assert.equal(backendOf(g), 'clickhouse');
    assert.ok(Number(g.headers['retry-after']) >= 1);
    // a dual-write project keeps today's behaviour: stored in PostgreSQL, its spool overflow (rows larger
    // than the ones just refused) recorded as a gap
    assert.equal((await send(gw, traceSpans(999, 4, { attributes: { pad: 'x'.repeat(600) } }), KEY_B)).status, 200);
    assert.ok(await until(async () => (await gw.query('SELECT count(*)::int AS n FROM spangate_ch_gaps WHERE project_id = $1', [PROJECT_B]))[0].n === 1));

    await gw.kill(); // SIGKILL with the spool full of acknowledged spans
    chctl('start', CH_DIR, CH_PORT, CH_TCP);
    chDown = false;
    await gw.start();
    const got = await until(async () => (await chSpanIds(gw, PROJECT_A)).size === acked.size, 30000, 200);
    assert.ok(got, `ClickHouse has ${(await chSpanIds(gw, PROJECT_A)).size} of ${acked.size} acknowledged spans`);
    const ids = await chSpanIds(gw, PROJECT_A);
    for (const id of acked) assert.ok(ids.has(id), `acknowledged span ${id} is in ClickHouse`);
    for (const s of refused) assert.ok(!ids.has(spanUuid(s.span_id)), 'a refused span was not stored');
    // the refused request, retried, is taken
    assert.equal((await send(gw, full)).status, 200);
    assert.ok(await until(async () => (await chSpanIds(gw, PROJECT_A)).size === acked.size + full.length));
    assert.equal(await pgRows(gw, PROJECT_A), 0);
    assert.equal((await gw.query('SELECT count(*)::int AS n FROM spangate_ch_gaps WHERE project_id = $1', [PROJECT_A]))[0].n, 0,
      'never a gap for a ClickHouse-only project');
    // what the outage logged: the refusals and the gap of the other project, nothing else
    assert.deepEqual(gw.errorLines().filter((l) => !/spangate_ch_gaps|full \(spool_max_bytes\)|ClickHouse/.test(l)), []);
  } finally {
    if (chDown) chctl('start', CH_DIR, CH_PORT, CH_TCP);
    await gw.stop();
  }
});

// ---- the OpenTelemetry SDK -----------------------------------------------------

function recordSpans(name) {
  const memory = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': name, 'deployment.environment': 'ci' }),
    spanProcessors: [new SimpleSpanProcessor(memory)],
  });
  const tracer = provider.getTracer('spangate-cutover-tests', '3.0.0');
  const root = tracer.startSpan('root op', { kind: SpanKind.SERVER, attributes: {
    'ag.type.trace': 'invocation', 'ag.type.span': 'workflow', 'str': 'héllo ✓ "tab\there"', 'int': 42,
    'big': 9007199254740993, 'neg': -7, 'dbl': 1.5, 'bool': true, 'arr': ['a', 'b'], 'nums': [1, 2, 3],
    'gen_ai.usage.total_tokens': 120 } });
  const ctx = trace.setSpan(context.active(), root);
  const child = tracer.startSpan('child call', { kind: SpanKind.CLIENT, attributes: { 'tokens': 12 },
    links: [{ context: root.spanContext(), attributes: { 'why': 'because' } }] }, ctx);
  child.addEvent('thinking', { 'step': 1, 'note': 'first' });
  child.addEvent('exception', { 'exception.type': 'Boom', 'exception.message': 'it broke' });
  child.setStatus({ code: SpanStatusCode.ERROR, message: 'it broke' });
  child.end();
  const internal = tracer.startSpan('internal', { kind: SpanKind.INTERNAL }, ctx);
  internal.setStatus({ code: SpanStatusCode.OK });
  internal.end();
  root.end();
  return memory.getFinishedSpans();
}

const exportWith = (exporter, spans) => new Promise((res) => exporter.export(spans, res));
const us = (t) => BigInt(t[0]) * 1000000n + BigInt(Math.floor(t[1] / 1000));
const isoUs = (t) => { // µs -> the read API's time text
  const u = us(t);
  return new Date(Number(u / 1000n)).toISOString().replace(/\.\d{3}Z$/, '') + '.' + (u % 1000000n).toString().padStart(6, '0') + 'Z';
};
// The answer without what each store assigns when storing.
const stripStored = (j) => ({ ...j, spans: j.spans.map(({ created_at, updated_at, updated_by_id, ...rest }) => rest) });

test('the OpenTelemetry SDK (protobuf, JSON with gzip, gRPC) writes to a ClickHouse-only project: the trace reads back as sent', async () => {
  const gw = await startGateway({ clickhouse: true, conf: ONLY });
  try {
    const md = (key) => { const m = new grpc.Metadata(); m.set('authorization', `ApiKey ${key}`); return m; };
    const exporters = {
      proto: (key) => new ProtoExporter({ url: `${gw.url}/v1/traces`, headers: auth(key) }),
      json: (key) => new HttpExporter({ url: `${gw.url}/api/otlp/v1/traces`, compression: 'gzip', headers: auth(key) }),
      grpc: (key) => new GrpcExporter({ url: `http://127.0.0.1:${gw.grpcPort}`, metadata: md(key), compression: 'gzip' }),
    };
    for (const [kind, make] of Object.entries(exporters)) {
      const spans = recordSpans(`cutover-${kind}`);
      // the same spans into the ClickHouse-only project and into a project on PostgreSQL
      for (const key of [KEY_A, KEY_B]) {
        const ex = make(key);
        const res = await exportWith(ex, spans);
        await ex.shutdown();
        assert.equal(res.code, 0, `${kind} export: ${res.error}`);
      }
      const tid = spans[0].spanContext().traceId;
      const a = await getWith(gw, `/v1/traces/${tid}`, KEY_A);
      const b = await getWith(gw, `/v1/traces/${tid}`, KEY_B);
      assert.equal(a.status, 200, a.text);
      assert.equal(backendOf(a), 'clickhouse');
      assert.equal(backendOf(b), 'postgres');
      assert.deepEqual(stripStored(a.json()), stripStored(b.json()), `${kind}: the same trace as PostgreSQL stores it`);
      // and what the SDK recorded, field by field
      const got = Object.fromEntries(a.json().spans.map((s) => [s.span_id, s]));
      assert.equal(Object.keys(got).length, 3);
      for (const s of spans) {
        const sc = s.spanContext();
        const r = got[sc.spanId];
        assert.ok(r, `${kind}: span ${s.name}`);
        assert.equal(r.trace_id, sc.traceId);
        assert.equal(r.span_name, s.name);
        assert.equal(r.start_time, isoUs(s.startTime), `${s.name} start_time to the µs`);
        assert.equal(r.end_time, isoUs(s.endTime));
        assert.equal(r.created_at, r.start_time);
        assert.equal(r.status_message ?? undefined, s.status.message || undefined);
        assert.equal((r.events || []).length, s.events.length);
      }
      assert.equal(JSON.stringify(got[spans[2].spanContext().spanId].attributes).includes('héllo ✓ \\"tab\\there\\"'), true);
    }
    assert.equal(await pgRows(gw, PROJECT_A), 0, 'PostgreSQL has none of the ClickHouse-only project\'s spans');
    assert.deepEqual(gw.errorLines(), []);
  } finally { await gw.stop(); }
});

// ---- change capture, and the jobs --------------------------------------------------

test('change capture on: a ClickHouse-only project\'s spans are spooled by the ingest itself (PostgreSQL never sees them)', async () => {
  const db = await createDatabase();
  const gw = await startGateway({ db, clickhouse: true, conf: [...ONLY, 'clickhouse_writes = "capture"', `capture_slot = "${db.name}"`] });
  try {
    // changes made before the slot exists are not captured: wait until it streams
    const streaming = async () => JSON.parse((await request(gw, 'GET', '/readyz')).text).capture?.state === 'streaming';
    assert.ok(await until(streaming, 20000), gw.log);
    assert.equal((await send(gw, traceSpans(4, 3))).status, 200);
    assert.equal((await send(gw, traceSpans(5, 2), KEY_B)).status, 200);
    const g = await getWith(gw, `/v1/traces/${traceHex(4)}`);
    assert.equal(g.status, 200, g.text);
    assert.equal(g.json().count, 3);
    assert.ok(await until(async () => (await chLive(gw, PROJECT_B)) === 2, 20000), 'the other project through capture');
    assert.equal(await chLive(gw, PROJECT_A), 3);
    assert.equal(await pgRows(gw, PROJECT_A), 0);
    assert.equal((await del(gw, 4)).json().count, 3, 'deleted without PostgreSQL (capture has nothing to see)');
    assert.equal((await getWith(gw, `/v1/traces/${traceHex(4)}`)).status, 404);
    assert.deepEqual(gw.errorLines(), []);
  } finally {
    await gw.stop();
    await until(async () => {
      try {
        await pgQuery(PG_URI, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1', [db.name]);
        return true;
      } catch { return false; } // still active for a moment after its gateway stopped
    }, 10000, 200);
  }
});

test('migrate and validate leave a ClickHouse-only project alone, also after its writes went back to PostgreSQL', async () => {
  const gw = await startGateway({ clickhouse: true, conf: ONLY });
  try {
    assert.equal((await send(gw, [...traceSpans(6, 3), ...traceSpans(7, 2)])).status, 200);
    assert.equal((await send(gw, traceSpans(8, 4), KEY_B)).status, 200);
    assert.ok(await until(async () => (await chLive(gw, PROJECT_A)) === 5 && (await chLive(gw, PROJECT_B)) === 4));
    const run = (job, conf = gw.conf) => spawnSync(BIN, [job, '-c', conf], { env: gw.env, encoding: 'utf8' });
    let v = run('validate');
    assert.equal(v.status, 0, `validate: ${v.stdout}\n${v.stderr}`);
    assert.match(v.stdout, new RegExp(`skipped: project ${PROJECT_A} is ClickHouse-only since \\d{4}-\\d\\d-\\d\\dT`));
    assert.match(v.stdout, /ClickHouse matches PostgreSQL \(1 projects/);
    let m = run('migrate');
    assert.equal(m.status, 0, `migrate: ${m.stdout}\n${m.stderr}`);
    assert.match(m.stdout, new RegExp(`skipped: project ${PROJECT_A} is ClickHouse-only`));
    assert.equal(await chLive(gw, PROJECT_A), 5, 'migrate did not take the spans for rows PostgreSQL lost');

    // writes back to PostgreSQL (the project no longer listed): the record keeps the jobs away
    await gw.stop();
    const back = gw.conf.replace(/\.conf$/, '-back.conf');
    spawnSync('sh', ['-c', `grep -v clickhouse_only_projects '${gw.conf}' > '${back}'`]);
    m = run('migrate', back);
    assert.equal(m.status, 0, `migrate: ${m.stdout}\n${m.stderr}`);
    assert.match(m.stdout, new RegExp(`skipped: project ${PROJECT_A} is ClickHouse-only since`));
    assert.equal(await chLive(gw, PROJECT_A), 5);
    v = run('validate', back);
    assert.equal(v.status, 0, `validate: ${v.stdout}\n${v.stderr}`);
  } finally { await gw.stop(); }
});
