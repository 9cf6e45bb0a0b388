// Hostile HTTP: nothing here may crash the gateway, hold a worker, or cost
// anyone else their data.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { startGateway, request, postJson, rawExchange, KEY_A, sleep } from './lib/harness.mjs';

const gw = await startGateway({ conf: ['read_timeout_ms = 500', 'max_body_bytes = "1MiB"', 'max_decompressed_bytes = "4MiB"'] });
after(async () => {
  const exit = await gw.stop();
  assert.deepEqual(exit, { code: 0, signal: null });
});
const auth = { authorization: `ApiKey ${KEY_A}` };

test('a garbage request line gets 400 and a close', async () => {
  const out = await rawExchange(gw, 'GARBAGE\x01\x02 / HTTP/9.9\r\n\r\n');
  assert.match(out, /^HTTP\/1\.1 400/);
});

test('huge headers get 431', async () => {
  const out = await rawExchange(gw, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`);
  assert.match(out, /^HTTP\/1\.1 431/);
});

test('a body over max_body_bytes gets 413 (Content-Length and chunked)', async () => {
  const big = Buffer.alloc(2 * 1024 * 1024, 0x41);
  const r = await request(gw, 'POST', '/v1/spans', big, { 'content-type': 'application/json', ...auth }).catch((e) => ({ status: 'reset', e }));
  assert.ok(r.status === 413 || r.status === 'reset', String(r.status));
  const chunks = ['POST /v1/spans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n'];
  for (let i = 0; i < 40; i++) chunks.push(`10000\r\n${'b'.repeat(0x10000)}\r\n`);
  const out = await rawExchange(gw, chunks);
  assert.match(out, /^HTTP\/1\.1 413/);
});

test('a gzip bomb gets 413 without exhausting memory', async () => {
  const bomb = zlib.gzipSync(Buffer.alloc(200 * 1024 * 1024, 0x20)); // 200 MiB of spaces, ~200 KiB gzipped
  assert.ok(bomb.length < 1024 * 1024);
  const r = await request(gw, 'POST', '/v1/spans', bomb, { 'content-type': 'application/json', 'content-encoding': 'gzip', ...auth });
  assert.equal(r.status, 413);
  assert.match(r.json().error, /decompress/);
});

test('bad gzip gets 400', async () => {
  const bad = Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]), Buffer.from('not deflate at all')]);
  const r = await request(gw, 'POST', '/v1/spans', bad, { 'content-type': 'application/json', 'content-encoding': 'gzip', ...auth });
  assert.equal(r.status, 400);
  const r2 = await request(gw, 'POST', '/v1/spans', bad, { 'content-type': 'application/json', ...auth });
  assert.equal(r2.status, 400, 'gzip recognised by its magic bytes');
});

test('unknown media types and encodings get 415', async () => {
  const r = await request(gw, 'POST', '/v1/traces', 'x', { 'content-type': 'text/plain', ...auth });
  assert.equal(r.status, 415);
  assert.match(r.text, /application\/x-protobuf/);
  const e = await request(gw, 'POST', '/v1/spans', '{}', { 'content-type': 'application/json', 'content-encoding': 'br', ...auth });
  assert.equal(e.status, 415);
});

test('truncated and random protobuf get 400; the gateway keeps serving', async () => {
  const h = { 'content-type': 'application/x-protobuf', ...auth };
  for (const body of [Buffer.from([0x0a, 0xff, 0xff, 0x01]), Buffer.from([0x0a, 0x05, 0x0a]), Buffer.from(Array.from({ length: 4096 }, () => Math.floor(Math.random() * 256)))]) {
    const r = await request(gw, 'POST', '/v1/traces', body, h);
    assert.ok(r.status === 400 || r.status === 200, `status ${r.status}`);
    if (r.status === 400) assert.match(r.headers['content-type'], /protobuf/);
  }
  assert.equal((await request(gw, 'GET', '/healthz')).status, 200);
});

test('a slow client that sends half a header is timed out and does not hold a worker', async () => {
  const slow = rawExchange(gw, 'POST /v1/spans HTTP/1.1\r\nHost: x\r\nContent-Le', { timeoutMs: 3000 });
  // Meanwhile other clients are served at once (2 workers, many slow clients).
  const more = Array.from({ length: 20 }, () => rawExchange(gw, 'GET /healthz HTTP/1.1\r\nHost: y\r\nContent-', { timeoutMs: 3000 }));
  const t0 = Date.now();
  const ok = await request(gw, 'GET', '/healthz');
  assert.equal(ok.status, 200);
  assert.ok(Date.now() - t0 < 400, 'served while slow clients wait');
  const out = await slow;
  assert.match(out, /^HTTP\/1\.1 408/);
  await Promise.all(more);
});

test('a client that disconnects mid-request costs nothing', async () => {
  await rawExchange(gw, 'POST /v1/spans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"spans":', { timeoutMs: 100 });
  const r = await postJson(gw, '/v1/spans', { spans: [] });
  assert.equal(r.status, 200);
});

test('no error-level log lines from bad input', async () => {
  await sleep(100);
  assert.deepEqual(gw.errorLines(), []);
});
