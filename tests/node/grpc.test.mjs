// OTLP over gRPC with the real OpenTelemetry JS gRPC exporter, unmodified:
// the same spans exported over gRPC (project B) and over OTLP/HTTP protobuf
// (project A) are stored as the same rows, column by column, in PostgreSQL
// and, with dual-write on, in ClickHouse.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { BasicTracerProvider, SimpleSpanProcessor, InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { OTLPTraceExporter as ProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { OTLPTraceExporter as GrpcExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { SpanKind, SpanStatusCode, context, trace } from '@opentelemetry/api';
import grpc from '@grpc/grpc-js';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { startGateway, until, BIN, KEY_A, KEY_B, PROJECT_A, PROJECT_B, traceUuid, spanUuid } from './lib/harness.mjs';

const gw = await startGateway({ clickhouse: true });
// A clean exit after everything above (under ASan: no leak, no report).
after(async () => {
  const exit = await gw.stop();
  assert.equal(exit.code, 0, gw.log.split('\n').slice(-40).join('\n'));
});

// Records a small trace in memory: the spans both exporters send.
function recordSpans() {
  const memory = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'grpc-test', 'deployment.environment': 'ci' }),
    spanProcessors: [new SimpleSpanProcessor(memory)],
  });
  const tracer = provider.getTracer('spangate-grpc-tests', '2.0.1');
  const root = tracer.startSpan('root op', { kind: SpanKind.SERVER, attributes: {
    'ag.type.trace': 'invocation', 'ag.type.span': 'workflow', 'str': 'héllo ✓', 'int': 42,
    'big': 9007199254740993, 'neg': -7, 'dbl': 1.5, 'bool': true, 'arr': ['a', 'b'], 'nums': [1, 2, 3],
    'gen_ai.request.model': 'gpt-4o' } });
  const ctx = trace.setSpan(context.active(), root);
  const child = tracer.startSpan('child call', { kind: SpanKind.CLIENT, attributes: { 'tokens': 12 },
    links: [{ context: root.spanContext(), attributes: { 'why': 'because' } }] }, ctx);
  child.addEvent('thinking', { 'step': 1, 'note': 'first' });
  child.setStatus({ code: SpanStatusCode.ERROR, message: 'it broke' });
  child.end();
  const internal = tracer.startSpan('internal', { kind: SpanKind.INTERNAL }, ctx);
  internal.setStatus({ code: SpanStatusCode.OK });
  internal.end();
  root.end();
  return memory.getFinishedSpans();
}

// A grpc-js client of TraceService/Export that sends and returns raw bytes.
const TraceService = grpc.makeGenericClientConstructor({
  Export: {
    path: '/opentelemetry.proto.collector.trace.v1.TraceService/Export', requestStream: false, responseStream: false,
    requestSerialize: (b) => b, requestDeserialize: (b) => b, responseSerialize: (b) => b, responseDeserialize: (b) => b,
  },
}, 'TraceService');
const rawClient = (port) => new TraceService(`127.0.0.1:${port}`, grpc.credentials.createInsecure());

const exportWith = (exporter, spans) => new Promise((res) => exporter.export(spans, res));

// Every column but the project and the times of storing, one JSON object per row.
const pgRows = (project) => gw.query(
  `SELECT to_jsonb(s) - 'project_id' - 'created_at' - 'updated_at' AS r
     FROM spans s WHERE project_id = $1 ORDER BY trace_id, span_id`, [project]);

let chCols;
async function chRows(project) {
  chCols ??= (await gw.ch(`SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'spans'
                             AND name NOT IN ('project_id', 'created_at', 'created_at_us', 'updated_at',
                                              'updated_at_us', 'version', 'expires_at')`)).trim().split('\n');
  const text = await gw.ch(`SELECT ${chCols.map((c) => `\`${c}\``).join(', ')} FROM spans FINAL
                             WHERE project_id = '${project}' ORDER BY trace_id, span_id FORMAT JSONEachRow`);
  return text.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

test('the OTLP JS gRPC exporter (gzip) stores the rows the OTLP/HTTP exporter stores, in PostgreSQL and ClickHouse', async () => {
  const spans = recordSpans();
  assert.equal(spans.length, 3);
  const http = new ProtoExporter({ url: `${gw.url}/v1/traces`, headers: { Authorization: `ApiKey ${KEY_A}` } });
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `ApiKey ${KEY_B}`);
  const viaGrpc = new GrpcExporter({ url: `http://127.0.0.1:${gw.grpcPort}`, metadata, compression: 'gzip' });
  try {
    const r1 = await exportWith(http, spans);
    assert.equal(r1.code, 0, `HTTP export: ${r1.error}`);
    const r2 = await exportWith(viaGrpc, spans);
    assert.equal(r2.code, 0, `gRPC export: ${r2.error}`);
  } finally {
    await http.shutdown();
    await viaGrpc.shutdown();
  }
  const a = await pgRows(PROJECT_A);
  const b = await pgRows(PROJECT_B);
  assert.equal(a.length, 3);
  assert.deepEqual(b, a, 'PostgreSQL: the gRPC rows equal the HTTP rows column by column');
  // And they are the spans the SDK recorded (the HTTP path's own test checks every field).
  const byId = new Map(b.map((x) => [x.r.span_id, x.r]));
  for (const s of spans) {
    const row = byId.get(spanUuid(s.spanContext().spanId));
    assert.ok(row, `span ${s.name} stored`);
    assert.equal(row.trace_id, traceUuid(s.spanContext().traceId));
    assert.equal(row.span_name, s.name);
  }

  // ClickHouse: the dual-write's rows of both projects, once flushed.
  const ca = await until(async () => { const r = await chRows(PROJECT_A); return r.length === 3 && r; });
  const cb = await until(async () => { const r = await chRows(PROJECT_B); return r.length === 3 && r; });
  assert.ok(ca && cb, 'both projects reach ClickHouse');
  assert.deepEqual(cb, ca, 'ClickHouse: the gRPC rows equal the HTTP rows column by column');
  assert.deepEqual(gw.errorLines(), []);
});

// A copy of span whose span id is all zeros: ingest rejects that span alone.
function zeroId(span) {
  const sc = { ...span.spanContext(), spanId: '0000000000000000' };
  return Object.create(span, { spanContext: { value: () => sc } });
}

test('the exporter without gzip (Bearer key): a rejected span does not cost the others', async () => {
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${KEY_A}`);
  const viaGrpc = new GrpcExporter({ url: `http://127.0.0.1:${gw.grpcPort}`, metadata });
  const spans = recordSpans();
  const r = await exportWith(viaGrpc, [zeroId(spans[0]), spans[1], spans[2]]);
  await viaGrpc.shutdown();
  assert.equal(r.code, 0, String(r.error));
  const stored = await gw.query(
    'SELECT span_id::text FROM spans WHERE project_id = $1 AND trace_id = $2', [PROJECT_A, traceUuid(spans[1].spanContext().traceId)]);
  assert.deepEqual(stored.map((x) => x.span_id).sort(),
    [spans[1], spans[2]].map((s) => spanUuid(s.spanContext().spanId)).sort());
});

test('partial success: ExportTraceServiceResponse.partial_success names the rejected span', async () => {
  const spans = recordSpans();
  const body = ProtobufTraceSerializer.serializeRequest([zeroId(spans[0]), spans[1], spans[2]]);
  const client = rawClient(gw.grpcPort);
  const md = new grpc.Metadata();
  md.set('authorization', `ApiKey ${KEY_A}`);
  const resp = await new Promise((res, rej) => client.Export(Buffer.from(body), md, (e, v) => (e ? rej(e) : res(v))));
  client.close();
  const decoded = ProtobufTraceSerializer.deserializeResponse(resp);
  assert.equal(Number(decoded.partialSuccess.rejectedSpans), 1);
  assert.match(decoded.partialSuccess.errorMessage, /spans\[0\]\.span_id: .*all zero/);
  // A request without rejections answers an empty response (no partial_success).
  const client2 = rawClient(gw.grpcPort);
  const ok = await new Promise((res, rej) =>
    client2.Export(Buffer.from(ProtobufTraceSerializer.serializeRequest(recordSpans())), md, (e, v) => (e ? rej(e) : res(v))));
  client2.close();
  assert.equal(ok.length, 0);
});

test('grpc_listen: "" turns the listener off; the HTTP listener\'s port is refused', async () => {
  const g = await startGateway({ db: gw.db, skipSchema: true, conf: ['grpc_listen = ""'] });
  try {
    const refused = await new Promise((res) => {
      const s = net.connect(g.grpcPort, '127.0.0.1');
      s.on('connect', () => { s.destroy(); res(false); });
      s.on('error', (e) => res(e.code === 'ECONNREFUSED'));
    });
    assert.ok(refused, 'nothing listens on the gRPC port');
    assert.doesNotMatch(g.log, /OTLP\/gRPC/);
  } finally {
    await g.stop();
  }
  const r = spawnSync(BIN, ['check', '-c', gw.conf], {
    env: { ...gw.env, SPANGATE_GRPC_LISTEN: `127.0.0.1:${gw.port}` } });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr.toString(), /grpc_listen \(127\.0\.0\.1:\d+\) must not use the port of listen/);
});
