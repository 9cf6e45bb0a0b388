// Hostile HTTP: nothing here may crash the gateway, hold a worker, or cost
// anyone else their data.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { readFileSync } from 'node:fs';
import { startGateway, request, postJson, rawExchange, KEY_A, hex, spanUuid, until, BIN } from './lib/harness.mjs';

const gw = await startGateway({ conf: ['read_timeout_ms = 500', 'max_body_bytes = "1MiB"', 'max_decompressed_bytes = "4MiB"'] });
after(async () => {
  const exit = await gw.stop();
  assert.deepEqual(exit, { code: 0, signal: null });
});
const auth = { authorization: `ApiKey ${KEY_A}` };

// The random inputs below come from one seed, printed; SG_TEST_SEED=<n>
// replays a run. (mulberry32: small, and good enough for test data.)
const SEED = Number(process.env.SG_TEST_SEED || Math.floor(Math.random() * 2 ** 32)) >>> 0;
console.log(`# hostile: seed ${SEED} (SG_TEST_SEED=${SEED} replays it)`);
const random = ((a) => () => {
  a = (a + 0x6d2b79f5) >>> 0;
  let t = Math.imul(a ^ (a >>> 15), a | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
})(SEED);

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
  for (const body of [Buffer.from([0x0a, 0xff, 0xff, 0x01]), Buffer.from([0x0a, 0x05, 0x0a]), Buffer.from(Array.from({ length: 4096 }, () => Math.floor(random() * 256)))]) {
    const r = await request(gw, 'POST', '/v1/traces', body, h);
    assert.ok(r.status === 400 || r.status === 200, `status ${r.status}`);
    if (r.status === 400) assert.match(r.headers['content-type'], /protobuf/);
  }
  assert.equal((await request(gw, 'GET', '/healthz')).status, 200);
});

// A protobuf body that would take more than its budget once decoded (64x
// its size + 1 MiB, decode.h) is too large, as a JSON one is: 413, not 400.
test('a protobuf body over the decoder\'s expansion budget gets 413, as JSON does', async () => {
  const varint = (n) => { const b = []; for (; n > 0x7f; n >>>= 7) b.push((n & 0x7f) | 0x80); b.push(n); return Buffer.from(b); };
  const field = (num, body) => Buffer.concat([varint(num << 3 | 2), varint(body.length), body]);
  // One span with 100,000 empty events: 200 KB on the wire, ~48 MB decoded.
  const events = Buffer.alloc(2 * 100000);
  for (let i = 0; i < events.length; i += 2) events[i] = 11 << 3 | 2;
  const span = Buffer.concat([field(1, Buffer.from(hex(32), 'hex')), field(2, Buffer.from(hex(16), 'hex')), events]);
  const body = field(1, field(2, field(2, span)));
  const r = await request(gw, 'POST', '/v1/traces', body, { 'content-type': 'application/x-protobuf', ...auth });
  assert.equal(r.status, 413, r.text);
  assert.match(r.headers['content-type'], /protobuf/);
  assert.match(r.text, /message expands too much when decoded/);
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

// #14: rendering nested attributes recursed once per key segment; 60,000
// segments (120 KB) crashed every worker with SIGSEGV. Such a key is now
// stored as sent (flat), in the span's attributes and in the resource's.
test('a 60,000-segment attribute key is stored flat, without crashing the gateway', async () => {
  const deep = Array(60000).fill('a').join('.');
  const T = hex(32), S = hex(16);
  const native = { spans: [{ trace_id: T, span_id: S, span_name: 'deep', start_time: 1, end_time: 2, attributes: { [deep]: 1, 'b.c': 'x' } }] };
  const r = await postJson(gw, '/v1/spans', native);
  assert.equal(r.status, 200, r.text);
  const [row] = await gw.query('SELECT attributes ? $1 AS flat, attributes #>> \'{b,c}\' AS bc FROM spans WHERE span_id = $2', [deep, spanUuid(S)]);
  assert.deepEqual(row, { flat: true, bc: 'x' });
  const T2 = hex(32), S2 = hex(16);
  const kv = (k, v) => ({ key: k, value: { intValue: v } });
  const otlp = { resourceSpans: [{ resource: { attributes: [kv(deep, 2)] }, scopeSpans: [{ spans: [{ traceId: T2, spanId: S2, name: 'deep', startTimeUnixNano: '1000', endTimeUnixNano: '2000', attributes: [kv(deep, 3)] }] }] }] };
  const r2 = await postJson(gw, '/v1/traces', otlp);
  assert.equal(r2.status, 200, r2.text);
  const [row2] = await gw.query('SELECT attributes->$1 AS own, attributes->\'resource\'->$1 AS res FROM spans WHERE span_id = $2', [deep, spanUuid(S2)]);
  assert.deepEqual(row2, { own: 3, res: 2 });
  assert.equal((await request(gw, 'GET', '/healthz')).status, 200);
});

// 50,000 attribute keys whose old (unkeyed FNV-1a) hashes agree in the low
// 17 bits: one slot of the trie's table. Built as in test_json_nest.c:
// FNV-1a modulo 2^17 depends only on the state modulo 2^17, so 8 blocks of
// 3 characters leading to one common state per position give 8^6 keys.
function collidingKeys(n) {
  const A = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-';
  const mask = (1 << 17) - 1, na = A.length;
  const step = (h, s) => { for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619) >>> 0; return h; };
  let state = 2166136261 & mask;
  const blocks = [];
  for (let b = 0; b < 6; b++) {
    const count = new Uint32Array(mask + 1);
    let best = 0;
    for (let c = 0; c < na ** 3; c++) {
      const e = step(state, A[c % na] + A[Math.floor(c / na) % na] + A[Math.floor(c / na / na)]) & mask;
      if (++count[e] > count[best]) best = e;
    }
    const pick = [];
    for (let c = 0; c < na ** 3 && pick.length < 8; c++) {
      const s = A[c % na] + A[Math.floor(c / na) % na] + A[Math.floor(c / na / na)];
      if ((step(state, s) & mask) === best) pick.push(s);
    }
    assert.equal(pick.length, 8);
    blocks.push(pick);
    state = best;
  }
  const keys = [];
  for (let i = 0; i < n; i++) {
    let k = '', x = i;
    for (let b = 0; b < 6; b++, x = Math.floor(x / 8)) k += blocks[b][x % 8];
    keys.push(k);
  }
  assert.equal(new Set(keys.map((k) => step(2166136261, k) & mask)).size, 1);
  return keys;
}

test('50,000 colliding attribute keys cost about what random keys cost', async () => {
  const n = 50000;
  const bad = collidingKeys(n);
  const A = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
  const good = Array.from({ length: n }, () => Array.from({ length: 18 }, () => A[Math.floor(random() * A.length)]).join(''));
  const post = async (keys) => {
    const body = zlib.gzipSync(JSON.stringify({ spans: [{ trace_id: hex(32), span_id: hex(16), span_name: 'keys', start_time: 1, end_time: 2, attributes: Object.fromEntries(keys.map((k) => [k, 1])) }] }));
    const t0 = process.hrtime.bigint();
    const r = await request(gw, 'POST', '/v1/spans', body, { 'content-type': 'application/json', 'content-encoding': 'gzip', ...auth });
    assert.equal(r.status, 200, r.text);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  // Best of two each: the machine is shared.
  const tg = Math.min(await post(good), await post(good));
  const tb = Math.min(await post(bad), await post(bad));
  console.log(`# random keys ${tg.toFixed(0)} ms, colliding keys ${tb.toFixed(0)} ms`);
  // Before keyed hashing: 26x. 5x leaves room for a busy shared machine.
  assert.ok(tb < 5 * tg, `colliding ${tb} ms vs random ${tg} ms`);
});

test('a query body that would parse into too large a tree gets 413', async () => {
  const body = '{"x":[' + '{},'.repeat(340000) + '{}]}'; // ~1 MB, ~80 MB parsed
  const r = await request(gw, 'POST', '/v1/spans/query', body, { 'content-type': 'application/json', ...auth });
  assert.equal(r.status, 413, r.text);
  assert.match(r.json().error, /query body too large/);
});

test('no error-level log lines from bad input', async () => {
  // A request PostgreSQL rejects is logged as a warning: once that line is
  // in the log, so is every line the gateway wrote before it.
  const marker = await request(gw, 'POST', '/v1/spans/query', JSON.stringify({ filtering: { operator: 'and', conditions: [{ field: 'span_name', operator: 'matches', value: '(' }] } }), { 'content-type': 'application/json', ...auth });
  assert.equal(marker.status, 400, marker.text);
  await until(() => /query rejected/.test(gw.log), 5000, 10);
  assert.deepEqual(gw.errorLines(), []);
});

// #14: 32 KB of gzip inflating to 32 MiB of "x":[0,0,...] (an ignored
// field) answered 200 and took the gateway from 13 MB to 701 MB of RSS.
// The parsed tree is now estimated first and refused; the default limits
// (max_decompressed_bytes = 64 MiB) let the body through to the decoder.
test('a 32 MiB JSON bomb gets 413 and the gateway stays small', async () => {
  const big = await startGateway({ workers: 1 });
  try {
    const status = () => Object.fromEntries(readFileSync(`/proc/${big.proc.pid}/status`, 'utf8').split('\n')
      .map((l) => l.match(/^(VmHWM|VmRSS):\s*(\d+) kB/)).filter(Boolean).map((m) => [m[1], Number(m[2]) / 1024]));
    const before = status();
    const zeros = Buffer.alloc(32 * 1024 * 1024, '0,');
    const bomb = zlib.gzipSync(Buffer.concat([Buffer.from('{"x":['), zeros, Buffer.from('0],"resourceSpans":[],"spans":[]}')]), { level: 9 });
    assert.ok(bomb.length < 64 * 1024, `${bomb.length} bytes of gzip`);
    for (const path of ['/v1/traces', '/v1/spans']) {
      const r = await request(big, 'POST', path, bomb, { 'content-type': 'application/json', 'content-encoding': 'gzip', ...auth });
      assert.equal(r.status, 413, r.text);
      assert.match(r.text, /JSON body too large to decode/);
    }
    const ok = await postJson(big, '/v1/spans', { spans: [{ trace_id: hex(32), span_id: hex(16), span_name: 'after', start_time: 1, end_time: 2 }] });
    assert.equal(ok.status, 200, ok.text);
    // The inflated body (32 MiB) is all it held, and only until the request
    // was freed, just after the answer. (Not under ASan: its quarantine
    // keeps freed memory resident on purpose.)
    if (!BIN.includes('/asan/')) {
      const peak = status().VmHWM;
      assert.ok(peak < before.VmHWM + 80, `peak ${peak} MB (was ${before.VmHWM} MB)`);
      await until(() => status().VmRSS < before.VmRSS + 16, 5000);
      const now = status().VmRSS;
      console.log(`# RSS before ${before.VmRSS.toFixed(0)} MB, peak ${peak.toFixed(0)} MB, then ${now.toFixed(0)} MB`);
      assert.ok(now < before.VmRSS + 16, `rss ${now} MB (was ${before.VmRSS} MB)`);
    }
  } finally {
    assert.deepEqual(await big.stop(), { code: 0, signal: null });
  }
});
