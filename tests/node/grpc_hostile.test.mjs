// Hostile OTLP/gRPC clients: each broken call is answered with its gRPC
// status, and neither the other calls on its connection nor other
// connections notice. Raw HTTP/2 from node:http2 (and raw bytes for what
// node:http2 refuses to send); the good calls are real OTLP requests.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import zlib from 'node:zlib';
import { BasicTracerProvider, SimpleSpanProcessor, InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { startGateway, request, until, KEY_A, PROJECT_A, traceUuid } from './lib/harness.mjs';

const READ_TIMEOUT_MS = 1500;
const gw = await startGateway({ conf: [
  'max_body_bytes = "1MiB"', 'max_inflight_bytes = "1536KiB"', 'max_decompressed_bytes = "2MiB"',
  `read_timeout_ms = ${READ_TIMEOUT_MS}`, 'max_header_bytes = "4KiB"', 'grpc_max_streams = 16',
] });
// A clean exit after everything above (under ASan: no leak, no report).
after(async () => {
  const exit = await gw.stop();
  assert.equal(exit.code, 0, gw.log.split('\n').slice(-40).join('\n'));
});

const EXPORT = '/opentelemetry.proto.collector.trace.v1.TraceService/Export';

function spansOf(n = 2) {
  const memory = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(memory)] });
  const tracer = provider.getTracer('hostile');
  for (let i = 0; i < n; i++) tracer.startSpan(`op ${i}`).end();
  return memory.getFinishedSpans();
}
const otlp = (spans) => Buffer.from(ProtobufTraceSerializer.serializeRequest(spans));
// The 5-byte gRPC message prefix: compressed flag, big-endian length.
function framed(msg, { flag = 0, length = msg.length } = {}) {
  const p = Buffer.alloc(5);
  p[0] = flag;
  p.writeUInt32BE(length, 1);
  return Buffer.concat([p, msg]);
}

// A connection, once the server's SETTINGS arrived.
const connect = () => new Promise((res, rej) => {
  const s = http2.connect(`http://127.0.0.1:${gw.grpcPort}`);
  s.once('remoteSettings', () => res(s));
  s.once('error', rej);
});

// One call on session. body: what is written (framed already); end: whether
// the request ends. Resolves {status, code, message, details, headers, data,
// rstCode}; the promise's req is the stream (to send the rest later).
function call(session, { path = EXPORT, headers = {}, body, end = true, key = KEY_A } = {}) {
  const h = { ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...headers };
  if (key) h.authorization = `ApiKey ${key}`;
  const req = session.request(h, { endStream: false });
  const p = new Promise((res) => {
    const out = { data: Buffer.alloc(0) };
    req.on('response', (hd) => { out.headers = hd; out.status = hd[':status']; });
    req.on('trailers', (t) => { out.trailers = t; });
    req.on('data', (d) => { out.data = Buffer.concat([out.data, d]); });
    req.on('error', () => { /* a reset: rstCode below */ });
    req.on('close', () => {
      const t = { ...out.headers, ...out.trailers };
      out.code = t['grpc-status'] !== undefined ? Number(t['grpc-status']) : undefined;
      out.message = t['grpc-message'] !== undefined ? decodeURIComponent(t['grpc-message']) : undefined;
      out.details = t['grpc-status-details-bin'];
      out.acceptEncoding = t['grpc-accept-encoding'];
      out.rstCode = req.rstCode;
      res(out);
    });
  });
  if (body) req.write(body);
  if (end) req.end();
  p.req = req;
  return p;
}

// A real export on session (or a fresh connection) that must succeed and be stored.
async function goodCall(session) {
  const own = !session;
  const s = session || await connect();
  const spans = spansOf(1);
  const r = await call(s, { body: framed(otlp(spans)) });
  if (own) s.close();
  assert.equal(r.code, 0, `a good call on the side: ${r.message}`);
  const rows = await gw.query('SELECT 1 FROM spans WHERE project_id = $1 AND trace_id = $2',
    [PROJECT_A, traceUuid(spans[0].spanContext().traceId)]);
  assert.equal(rows.length, 1);
}

// Minimal protobuf reading for google.rpc.Status in grpc-status-details-bin.
function pbFields(buf) {
  const f = [];
  let i = 0;
  const varint = () => { let v = 0, m = 1, b; do { b = buf[i++]; v += (b & 0x7f) * m; m *= 128; } while (b & 0x80); return v; };
  while (i < buf.length) {
    const tag = varint();
    const no = Math.floor(tag / 8), wt = tag % 8;
    if (wt === 0) f.push([no, varint()]);
    else if (wt === 2) { const n = varint(); f.push([no, buf.subarray(i, i + n)]); i += n; }
    else throw new Error(`wire type ${wt}`);
  }
  return f;
}
function retryDelaySeconds(details) {
  const status = pbFields(Buffer.from(details, 'base64'));
  const any = status.find(([n]) => n === 3);
  if (!any) return null;
  const a = pbFields(any[1]);
  assert.equal(a.find(([n]) => n === 1)[1].toString(), 'type.googleapis.com/google.rpc.RetryInfo');
  const retryInfo = pbFields(a.find(([n]) => n === 2)[1]);
  const duration = pbFields(retryInfo.find(([n]) => n === 1)[1]);
  return duration.find(([n]) => n === 1)?.[1] ?? 0;
}

async function metric(name) {
  const r = await request(gw, 'GET', '/metrics');
  const m = r.text.match(new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : 0;
}

test('SETTINGS: concurrent streams bounded, header list size announced', async () => {
  const s = await connect();
  assert.equal(s.remoteSettings.maxConcurrentStreams, 16);
  assert.equal(s.remoteSettings.maxHeaderListSize, 4096);
  assert.ok(s.remoteSettings.initialWindowSize >= 65535);
  s.close();
});

test('stream-level faults answer their own gRPC status; the other calls on the connection succeed', async () => {
  const s = await connect();
  const good = otlp(spansOf(2));
  const cases = [
    { name: 'wrong content-type', opts: { headers: { 'content-type': 'application/json' }, body: framed(good) },
      status: 415, code: 3, msg: /content-type 'application\/json'/ },
    { name: 'unknown method', opts: { path: '/opentelemetry.proto.collector.logs.v1.LogsService/Export', body: framed(good) },
      code: 12, msg: /unknown method/ },
    { name: 'GET', opts: { headers: { ':method': 'GET' } }, status: 405, code: 13 },
    { name: 'compressed flag without grpc-encoding', opts: { body: framed(zlib.gzipSync(good), { flag: 1 }) },
      code: 13, msg: /compressed flag/ },
    { name: 'unsupported grpc-encoding', opts: { headers: { 'grpc-encoding': 'snappy' }, body: framed(good, { flag: 1 }) },
      code: 12, msg: /snappy/, accept: /gzip/ },
    { name: 'bad gzip', opts: { headers: { 'grpc-encoding': 'gzip' }, body: framed(Buffer.from('not gzip at all'), { flag: 1 }) },
      code: 3, msg: /decompress/ },
    { name: 'gzip bomb past max_decompressed_bytes', opts: { headers: { 'grpc-encoding': 'gzip' },
      body: framed(zlib.gzipSync(Buffer.alloc(3 * 1024 * 1024)), { flag: 1 }) }, code: 8, msg: /decompressed/, noRetry: true },
    { name: 'not protobuf', opts: { body: framed(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f, 1, 2])) }, code: 3, msg: /protobuf/ },
    { name: 'prefix announcing more than it sends', opts: { body: framed(good, { length: good.length + 100 }) },
      code: 13, msg: new RegExp(`announced ${good.length + 100} bytes, ${good.length} arrived`) },
    { name: 'half a prefix', opts: { body: Buffer.from([0, 0, 0]) }, code: 13, msg: /inside a message prefix/ },
    { name: 'no message', opts: {}, code: 13, msg: /without a message/ },
    { name: 'two messages in a unary call', opts: { body: Buffer.concat([framed(good), framed(good)]) }, code: 13, msg: /more than one/ },
    { name: 'invalid compressed flag', opts: { body: framed(good, { flag: 7 }) }, code: 13, msg: /flag/ },
    { name: 'missing key', opts: { key: null, body: framed(good) }, code: 16, msg: /missing/ },
    { name: 'wrong key', opts: { key: 'nope-nope-nope-nope-nope', body: framed(good) }, code: 16, msg: /invalid API key/ },
    { name: 'metadata over max_header_bytes', opts: { headers: { 'x-big': 'v'.repeat(5000) }, body: framed(good) },
      code: 8, msg: /metadata exceeds 4096 bytes/, noRetry: true },
  ];
  for (const c of cases) {
    // The hostile call and a good one side by side on the same connection.
    const [r] = await Promise.all([call(s, c.opts), goodCall(s)]);
    assert.equal(r.code, c.code, `${c.name}: grpc-status (${r.message})`);
    assert.equal(r.status, c.status ?? 200, `${c.name}: HTTP status`);
    if (c.msg) assert.match(r.message, c.msg, c.name);
    if (c.accept) assert.match(r.acceptEncoding, c.accept, `${c.name}: grpc-accept-encoding`);
    if (c.noRetry) assert.equal(r.details, undefined, `${c.name}: no RetryInfo, so exporters do not retry`);
  }
  await goodCall(s);
  s.close();
  await goodCall();
  assert.ok(await metric('spangate_grpc_requests_total{code="INTERNAL"}') >= 6);
  assert.ok(await metric('spangate_grpc_requests_total{code="OK"}') >= cases.length);
});

test('a message over max_body_bytes: RESOURCE_EXHAUSTED without RetryInfo, at its prefix; the stream is reset after the answer', async () => {
  const s = await connect();
  // The prefix announces 20 MB; only the first 64 KiB are sent, the request does not end.
  const r = await call(s, { body: framed(Buffer.alloc(64 * 1024), { length: 20 * 1024 * 1024 }), end: false });
  assert.equal(r.code, 8);
  assert.match(r.message, /20971520 bytes exceeds the limit of 1048576 bytes/);
  assert.equal(r.details, undefined);
  assert.equal(r.rstCode, http2.constants.NGHTTP2_NO_ERROR, 'RST_STREAM(NO_ERROR) tells the client to stop sending');
  await goodCall(s);
  s.close();
});

test('the in-flight budget full: UNAVAILABLE with RetryInfo; the message that holds it completes', async () => {
  const s = await connect();
  // A: a real request of ~1 MB (one span with a big attribute); its prefix
  // and the first KiB hold its size in the 1.5 MiB budget while it arrives.
  const memory = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(memory)] });
  provider.getTracer('hostile').startSpan('big', { attributes: { pad: 'x'.repeat(1000 * 1024) } }).end();
  const spans = memory.getFinishedSpans();
  const msgA = framed(otlp(spans));
  const a = call(s, { body: msgA.subarray(0, 5 + 1024), end: false });
  await until(async () => await metric('spangate_inflight_bytes') >= 1000 * 1024, 5000, 20);
  // B announces as much: no room now (but it would fit alone).
  const b = await call(s, { body: framed(Buffer.alloc(0), { length: 1000 * 1024 }), end: false });
  assert.equal(b.code, 14, b.message);
  assert.match(b.message, /in-flight memory limit/);
  assert.equal(retryDelaySeconds(b.details), 1, 'RetryInfo says 1 s');
  a.req.end(msgA.subarray(5 + 1024));
  const ra = await a;
  assert.equal(ra.code, 0, ra.message);
  const rows = await gw.query('SELECT 1 FROM spans WHERE trace_id = $1', [traceUuid(spans[0].spanContext().traceId)]);
  assert.equal(rows.length, 1);
  await until(async () => await metric('spangate_inflight_bytes') === 0, 5000, 20);
  await goodCall(s);
  s.close();
});

test('a slow stream times out with DEADLINE_EXCEEDED; calls on another connection complete meanwhile', async () => {
  const slowSession = await connect();
  let slowAnswered = false;
  const slow = call(slowSession, { end: false }).then((r) => { slowAnswered = true; return r; });
  const other = await connect();
  await goodCall(other);
  await goodCall(other);
  assert.equal(slowAnswered, false, 'the good calls did not wait for the slow one');
  const r = await slow;
  assert.equal(r.code, 4);
  assert.match(r.message, new RegExp(`within ${READ_TIMEOUT_MS} ms`));
  await goodCall(slowSession);
  slowSession.close();
  other.close();
});

// ---- raw bytes ---------------------------------------------------------------

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
function frame(type, flags, stream, payload = Buffer.alloc(0)) {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}
// HPACK literal header field without indexing, new name, no Huffman (lengths < 127).
const lit = (n, v) => Buffer.concat([Buffer.from([0, n.length]), Buffer.from(n), Buffer.from([v.length]), Buffer.from(v)]);

// A raw connection: resolves {frames: [{type, flags, stream, payload}], text, closed} as they come.
function rawConn() {
  const sock = net.connect(gw.grpcPort, '127.0.0.1');
  const st = { frames: [], raw: Buffer.alloc(0), closed: false, sock };
  sock.on('data', (d) => {
    st.raw = Buffer.concat([st.raw, d]);
    let b = st.raw.subarray(st.frames.reduce((n, f) => n + 9 + f.payload.length, 0));
    while (b.length >= 9) {
      const len = b.readUIntBE(0, 3);
      if (b.length < 9 + len) break;
      st.frames.push({ type: b[3], flags: b[4], stream: b.readUInt32BE(5) & 0x7fffffff, payload: b.subarray(9, 9 + len) });
      b = b.subarray(9 + len);
    }
  });
  sock.on('close', () => { st.closed = true; });
  sock.on('error', () => {});
  return st;
}

test('bad preface: GOAWAY(PROTOCOL_ERROR) and close; HTTP/1.1 gets a 400 saying what the port speaks', async () => {
  const junk = rawConn();
  junk.sock.write(Buffer.from('\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 this is not HTTP/2 at all'));
  assert.ok(await until(() => junk.closed, 5000, 20), 'closed');
  const goaway = junk.frames.find((f) => f.type === 7);
  assert.ok(goaway, 'a GOAWAY frame');
  assert.equal(goaway.payload.readUInt32BE(4), 1, 'PROTOCOL_ERROR');

  const h1 = rawConn();
  h1.sock.write('POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}');
  assert.ok(await until(() => h1.closed, 5000, 20), 'closed');
  assert.match(h1.raw.toString('latin1'), /^HTTP\/1\.1 400 Bad Request\r\n[^]*HTTP\/2 with prior knowledge/);
  await goodCall();
});

test('a truncated DATA frame: the call gets DEADLINE_EXCEEDED, the connection and the others go on', async () => {
  const before = await metric('spangate_grpc_requests_total{code="DEADLINE_EXCEEDED"}');
  const c = rawConn();
  const headers = Buffer.concat([lit(':method', 'POST'), lit(':scheme', 'http'), lit(':path', EXPORT),
    lit(':authority', 'gw'), lit('content-type', 'application/grpc'), lit('authorization', `ApiKey ${KEY_A}`)]);
  // A DATA frame announcing 1000 bytes of which 100 are sent: a message
  // prefix (995 bytes follow) and the first 95 of them.
  const dataHead = frame(0, 0, 1, framed(Buffer.alloc(995))).subarray(0, 9 + 100);
  c.sock.write(Buffer.concat([PREFACE, frame(4, 0, 0), frame(1, 0x4, 1, headers), dataHead]));
  await goodCall(); // meanwhile, elsewhere
  const answered = await until(() => c.frames.find((f) => f.type === 1 && f.stream === 1 && (f.flags & 1)), 10000, 20);
  assert.ok(answered, 'stream 1 answered (HEADERS with END_STREAM)');
  assert.equal(await metric('spangate_grpc_requests_total{code="DEADLINE_EXCEEDED"}'), before + 1);
  assert.equal(c.closed, false, 'the connection stays');
  c.sock.destroy();
  await goodCall();
  assert.equal(gw.exit, null, 'the gateway runs');
});

test('a client that opens no flow-control window for its answer: the stream is reset after the write timeout', async () => {
  const s = await new Promise((res, rej) => {
    const x = http2.connect(`http://127.0.0.1:${gw.grpcPort}`, { settings: { initialWindowSize: 0 } });
    x.once('remoteSettings', () => res(x));
    x.once('error', rej);
  });
  const r = await call(s, { body: framed(otlp(spansOf(1))) });
  assert.equal(r.status, 200, 'the answer\'s HEADERS (not flow-controlled) arrived');
  assert.equal(r.code, undefined, 'its DATA and trailers could not');
  assert.equal(r.rstCode, http2.constants.NGHTTP2_CANCEL);
  s.close();
  await goodCall();
});

test('many calls multiplexed on one connection', async () => {
  const s = await connect();
  await Promise.all(Array.from({ length: 40 }, () => goodCall(s)));
  s.close();
});

test('idle connections get GOAWAY(NO_ERROR) and are closed; SIGTERM: GOAWAY, the call in flight completes, the process exits 0', async () => {
  const g = await startGateway({ db: gw.db, skipSchema: true, conf: ['idle_timeout_ms = 1000'] });
  // Idle: no call for idle_timeout_ms.
  const idle = http2.connect(`http://127.0.0.1:${g.grpcPort}`);
  idle.on('error', () => {});
  const idleGoaway = new Promise((r) => idle.once('goaway', (code) => r(code)));
  const idleClosed = new Promise((r) => idle.once('close', r));
  assert.equal(await idleGoaway, 0, 'GOAWAY(NO_ERROR)');
  await idleClosed;

  const s = http2.connect(`http://127.0.0.1:${g.grpcPort}`);
  await new Promise((r) => s.once('connect', r));
  let goaway = null;
  s.on('goaway', (code, last) => { goaway = { code, last }; });
  s.on('error', () => {});
  const spans = spansOf(1);
  const msg = framed(otlp(spans));
  // The call starts, half its message sent; then SIGTERM; then the rest.
  const h = { ':method': 'POST', ':path': EXPORT, 'content-type': 'application/grpc', authorization: `ApiKey ${KEY_A}` };
  const req = s.request(h, { endStream: false });
  const out = {};
  req.on('response', (hd) => Object.assign(out, hd));
  req.on('trailers', (t) => Object.assign(out, t));
  req.on('data', () => {});
  const closed = new Promise((r) => req.on('close', r));
  req.write(msg.subarray(0, 10));
  await until(async () => (await request(g, 'GET', '/metrics')).text.includes('spangate_grpc_connections_open 1'), 5000, 20);
  g.proc.kill('SIGTERM');
  assert.ok(await until(() => goaway, 5000, 10), 'GOAWAY received');
  assert.equal(goaway.code, 0, 'NO_ERROR');
  req.end(msg.subarray(10));
  await closed;
  assert.equal(out['grpc-status'], '0', 'the call in flight completed');
  const rows = await gw.query('SELECT 1 FROM spans WHERE trace_id = $1', [traceUuid(spans[0].spanContext().traceId)]);
  assert.equal(rows.length, 1);
  const exit = await g.exited;
  assert.equal(exit.code, 0);
  s.destroy();
});
