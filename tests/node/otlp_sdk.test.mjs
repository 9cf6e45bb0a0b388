// A real client, unmodified: the OpenTelemetry JS SDK exports to spangate
// (protobuf, and JSON with gzip); every field in PostgreSQL is compared with
// what the SDK recorded.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { BasicTracerProvider, SimpleSpanProcessor, InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { OTLPTraceExporter as ProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { OTLPTraceExporter as HttpExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { SpanKind, SpanStatusCode, context, trace } from '@opentelemetry/api';
import { startGateway, KEY_A, PROJECT_A, traceUuid, spanUuid } from './lib/harness.mjs';

const gw = await startGateway();
after(async () => { await gw.stop(); });

// hrtime [s, ns] -> µs since the epoch, as PostgreSQL keeps it.
const us = (t) => BigInt(t[0]) * 1000000n + BigInt(Math.floor(t[1] / 1000));

function record(exporter, { path = '/v1/traces', kind = 'proto' } = {}) {
  const memory = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'sdk-test', 'deployment.environment': 'ci' }),
    spanProcessors: [new SimpleSpanProcessor(memory), new SimpleSpanProcessor(exporter)],
  });
  const tracer = provider.getTracer('spangate-tests', '1.2.3');
  const root = tracer.startSpan('root op', { kind: SpanKind.SERVER, attributes: {
    'ag.type.trace': 'invocation', 'ag.type.span': 'workflow', 'str': 'héllo ✓', 'int': 42,
    'big': 9007199254740993, 'neg': -7, 'dbl': 1.5, 'bool': true, 'arr': ['a', 'b'], 'nums': [1, 2, 3],
    'gen_ai.request.model': 'gpt-4o' } });
  const ctx = trace.setSpan(context.active(), root);
  const child = tracer.startSpan('child call', { kind: SpanKind.CLIENT, attributes: { 'tokens': 12 } }, ctx);
  child.addEvent('thinking', { 'step': 1, 'note': 'first' });
  child.addEvent('exception', { 'exception.type': 'Boom', 'exception.message': 'it broke' });
  child.setStatus({ code: SpanStatusCode.ERROR, message: 'it broke' });
  child.end();
  const internal = tracer.startSpan('internal', { kind: SpanKind.INTERNAL }, ctx);
  internal.setStatus({ code: SpanStatusCode.OK });
  internal.end();
  root.end();
  return { provider, memory };
}

const KIND = ['SPAN_KIND_INTERNAL', 'SPAN_KIND_SERVER', 'SPAN_KIND_CLIENT', 'SPAN_KIND_PRODUCER', 'SPAN_KIND_CONSUMER'];
const STATUS = ['STATUS_CODE_UNSET', 'STATUS_CODE_OK', 'STATUS_CODE_ERROR'];

// Finds a value in the stored attributes whether the default transform
// nested dotted keys ({"gen_ai":{"request":{"model":..}}}) or not.
function attr(obj, key) {
  if (obj && key in obj) return obj[key];
  let cur = obj;
  for (const part of key.split('.')) {
    if (cur == null || typeof cur !== 'object') return undefined;
    cur = cur[part];
  }
  return cur;
}

async function compare(spans) {
  assert.equal(spans.length, 3);
  for (const s of spans) {
    const sc = s.spanContext();
    const rows = await gw.query(
      `SELECT project_id::text, trace_id::text, span_id::text, parent_id::text, span_name, span_kind::text,
              status_code::text, status_message,
              (extract(epoch from start_time) * 1000000)::bigint::text AS start_us,
              (extract(epoch from end_time) * 1000000)::bigint::text AS end_us,
              attributes, events, links, created_at
         FROM spans WHERE trace_id = $1 AND span_id = $2`, [traceUuid(sc.traceId), spanUuid(sc.spanId)]);
    assert.equal(rows.length, 1, `span ${s.name} stored once`);
    const r = rows[0];
    assert.equal(r.project_id, PROJECT_A);
    assert.equal(r.span_name, s.name);
    assert.equal(r.span_kind, KIND[s.kind]);
    assert.equal(r.status_code, STATUS[s.status.code]);
    assert.equal(r.status_message, s.status.message || null);
    const parent = s.parentSpanContext?.spanId || s.parentSpanId;
    assert.equal(r.parent_id, parent ? spanUuid(parent) : null);
    assert.equal(r.start_us, us(s.startTime).toString(), `${s.name} start_time to the µs`);
    assert.equal(r.end_us, us(s.endTime).toString(), `${s.name} end_time to the µs`);
    for (const [k, v] of Object.entries(s.attributes)) {
      const got = attr(r.attributes, k);
      assert.deepEqual(got, v, `attribute ${k} of ${s.name}`);
    }
    if (s.events.length) {
      assert.equal(r.events.length, s.events.length);
      s.events.forEach((e, i) => {
        assert.equal(r.events[i].name, e.name);
        const tsUs = us(e.time);
        const stored = BigInt(Date.parse(r.events[i].timestamp)) * 1000n + BigInt(r.events[i].timestamp.match(/\.\d{3}(\d{3})/)?.[1] ?? '0');
        assert.equal(stored, tsUs, `event ${e.name} time to the µs`);
        for (const [k, v] of Object.entries(e.attributes)) assert.deepEqual(attr(r.events[i].attributes, k), v);
      });
    } else {
      assert.equal(r.events, null);
    }
  }
}

test('OTLP/HTTP protobuf exporter: every field arrives exactly', async () => {
  const exporter = new ProtoExporter({ url: `${gw.url}/v1/traces`, headers: { Authorization: `ApiKey ${KEY_A}` } });
  const { provider, memory } = record(exporter);
  await provider.forceFlush();
  const spans = [...memory.getFinishedSpans()]; // shutdown() empties the memory exporter
  await provider.shutdown();
  await compare(spans);
});

test('OTLP/HTTP JSON exporter with gzip, on Agenta\'s path', async () => {
  const exporter = new HttpExporter({ url: `${gw.url}/api/otlp/v1/traces`, compression: 'gzip', headers: { Authorization: `ApiKey ${KEY_A}` } });
  const { provider, memory } = record(exporter);
  await provider.forceFlush();
  const spans = [...memory.getFinishedSpans()]; // shutdown() empties the memory exporter
  await provider.shutdown();
  await compare(spans);
});
