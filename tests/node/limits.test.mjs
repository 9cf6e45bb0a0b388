// Connection edge cases and the in-flight memory budget (max_inflight_bytes).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import zlib from 'node:zlib';
import { readFileSync } from 'node:fs';
import { startGateway, postJson, request, until, KEY_A } from './lib/harness.mjs';

// Everything the server sends until it closes (or timeoutMs).
function readAll(s, timeoutMs = 10000) {
  return new Promise((res) => {
    let out = '';
    const done = () => { clearTimeout(t); res(out); };
    const t = setTimeout(() => { s.destroy(); done(); }, timeoutMs);
    s.on('data', (d) => { out += d.toString('latin1'); });
    s.on('close', done);
    s.on('error', () => {});
  });
}

test('a client that half-closes after its request still gets the answer', async () => {
  const gw = await startGateway({ workers: 1 });
  try {
    const body = JSON.stringify({ spans: [{ trace_id: '7'.repeat(32), span_id: 'd000000000000001', span_name: 'hc', start_time: 1714979289, end_time: 1714979289 }] });
    const s = net.connect({ port: gw.port, host: '127.0.0.1', allowHalfOpen: true });
    await new Promise((r) => s.on('connect', r));
    const got = readAll(s);
    // The whole request, then FIN: the answer comes after the PostgreSQL commit.
    s.end(`POST /v1/spans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: ApiKey ${KEY_A}\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    const out = await got;
    assert.match(out, /^HTTP\/1\.1 200 /, `answer: ${JSON.stringify(out.slice(0, 200))}`);
    assert.match(out, /"count":1/);
    assert.equal((await gw.query(`SELECT count(*)::int AS n FROM spans WHERE span_name = 'hc'`))[0].n, 1);
    assert.deepEqual(await gw.stop(), { code: 0, signal: null }, 'clean exit');
  } finally { await gw.stop(); }
});

// ---- max_inflight_bytes --------------------------------------------------------------

const MiB = 1024 * 1024;

function rssKiB(pid) {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
  return Number(m[1]);
}

// Bytes still queued in the kernel on loopback connections to port: sent
// by a client and not yet taken by the gateway (its receive queues, the
// clients' send queues). 0 = the gateway has read everything sent to it.
function queuedTo(port) {
  let n = 0;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5) continue;
    const local = parseInt(f[1].split(':')[1], 16), remote = parseInt(f[2].split(':')[1], 16);
    const [tx, rx] = f[4].split(':').map((h) => parseInt(h, 16));
    if (local === port) n += rx;
    if (remote === port) n += tx;
  }
  return n;
}

async function metric(gw, name) {
  const m = (await request(gw, 'GET', '/metrics')).text.match(new RegExp(`^${name} (\\d+)`, 'm'));
  return m ? Number(m[1]) : NaN;
}

// A client that sends the head and `sent` bytes of a body of `length`, then
// waits. Resolves once the bytes are written (or the gateway answered);
// .answer is what the gateway sent back so far.
function slowBody(gw, length, sent, chunk) {
  const s = net.connect(gw.port, '127.0.0.1');
  const c = { s, answer: '' };
  s.on('data', (d) => { c.answer += d.toString('latin1'); });
  c.done = new Promise((res) => {
    s.on('error', () => res());
    s.on('close', () => res());
    s.on('connect', () => {
      s.write(`POST /v1/spans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: ApiKey ${KEY_A}\r\nContent-Length: ${length}\r\n\r\n`);
      let left = sent;
      const more = () => {
        while (left > 0 && !s.destroyed) {
          const n = Math.min(left, chunk.length);
          left -= n;
          if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) { s.once('drain', more); return; }
        }
        if (left === 0) s.write('', () => res());
      };
      more();
    });
  });
  return c;
}

test('bodies still arriving count against max_inflight_bytes: new bodies get 429, memory stays bounded', async () => {
  const limit = 10 * MiB, length = 5 * MiB, sent = Math.floor(length * 0.9), N = 30;
  const gw = await startGateway({ conf: ['max_body_bytes = "6MiB"', 'max_decompressed_bytes = "8MiB"', 'max_inflight_bytes = "10MiB"', 'read_timeout_ms = 60000'] });
  const spans = { spans: [{ trace_id: '8'.repeat(32), span_id: 'e000000000000001', span_name: 'after', start_time: 1714979289, end_time: 1714979289 }] };
  const slow = [];
  try {
    assert.equal((await postJson(gw, '/v1/spans', spans)).status, 200);
    const base = rssKiB(gw.proc.pid);
    const chunk = Buffer.alloc(256 * 1024, 0x20);
    for (let i = 0; i < N; i++) slow.push(slowBody(gw, length, sent, chunk));
    await Promise.all(slow.map((c) => c.done));
    // Wait until the gateway has taken every byte sent (or dropped it).
    const drained = await until(() => queuedTo(gw.port) === 0, 30000, 50);
    assert.ok(drained, 'the gateway reads what the clients sent');
    const grown = (rssKiB(gw.proc.pid) - base) / 1024;
    console.log(`# ${N} slow clients x ${(sent / MiB).toFixed(1)} MiB: gateway RSS grew ${grown.toFixed(1)} MiB (max_inflight_bytes 10 MiB)`);
    // Two bodies fill the budget (2 x 5 MiB); every other one was refused at its headers.
    const refused = slow.filter((c) => /^HTTP\/1\.1 429 /.test(c.answer));
    assert.equal(refused.length, N - 2, `429s: ${refused.length}; answers: ${JSON.stringify(slow.map((c) => c.answer.slice(0, 12)))}`);
    assert.match(refused[0].answer, /\r\nRetry-After: 1\r\n/);
    assert.match(refused[0].answer, /\{"error":"[^"]*in-flight memory limit/);
    assert.equal(await metric(gw, 'spangate_inflight_bytes'), limit);
    // A new request with a body does not fit either; one without (health) does.
    const r = await postJson(gw, '/v1/spans', spans);
    assert.equal(r.status, 429, r.text);
    assert.equal(r.headers['retry-after'], '1');
    assert.equal((await request(gw, 'GET', '/healthz')).status, 200);
    assert.ok(grown < 40, `RSS grew ${grown.toFixed(1)} MiB`);
    // The slow clients leave: their bytes are released, requests fit again.
    for (const c of slow) c.s.destroy();
    assert.ok(await until(async () => (await metric(gw, 'spangate_inflight_bytes')) === 0), 'released when the clients leave');
    assert.equal((await postJson(gw, '/v1/spans', spans)).status, 200);
    assert.deepEqual(await gw.stop(), { code: 0, signal: null }, 'clean exit');
  } finally {
    for (const c of slow) c.s.destroy();
    await gw.stop();
  }
});

test('a compressed body counts its decompressed size: 429 when that does not fit, 413 when it never could', async () => {
  const gw = await startGateway({ workers: 1, conf: ['max_body_bytes = "1MiB"', 'max_decompressed_bytes = "8MiB"', 'max_inflight_bytes = "4MiB"', 'read_timeout_ms = 60000'] });
  const slow = [];
  try {
    const span = (i, extra) => ({ trace_id: '9'.repeat(32), span_id: `f0000000000000${String(i).padStart(2, '0')}`, span_name: 'z', start_time: 1714979289, end_time: 1714979289, attributes: { pad: extra } });
    // 1.5 MiB of JSON that gzips to a few KiB (its buffer grows to 2 MiB).
    const big = zlib.gzipSync(JSON.stringify({ spans: [span(1, 'x'.repeat(1.5 * MiB))] }));
    assert.ok(big.length < 64 * 1024);
    const h = { 'content-type': 'application/json', 'content-encoding': 'gzip', authorization: `ApiKey ${KEY_A}` };
    const post = (body) => request(gw, 'POST', '/v1/spans', body, h);
    const r0 = await post(big);
    assert.equal(r0.status, 200, r0.text);
    // Two slow clients hold 2 MiB of the 4: the inflated copy does not fit now.
    for (let i = 0; i < 2; i++) slow.push(slowBody(gw, MiB, 1000, Buffer.alloc(1000, 0x20)));
    await Promise.all(slow.map((c) => c.done));
    assert.ok(await until(async () => (await metric(gw, 'spangate_inflight_bytes')) === 2 * MiB));
    const r = await post(big);
    assert.equal(r.status, 429, r.text);
    assert.equal(r.headers['retry-after'], '1');
    assert.match(r.json().error, /max_inflight_bytes/);
    for (const c of slow) c.s.destroy();
    assert.ok(await until(async () => (await metric(gw, 'spangate_inflight_bytes')) === 0));
    // 6 MiB once inflated: within max_decompressed_bytes, never within the 4 MiB budget.
    const huge = zlib.gzipSync(JSON.stringify({ spans: [span(2, 'y'.repeat(6 * MiB))] }));
    const r2 = await post(huge);
    assert.equal(r2.status, 413, r2.text);
    assert.match(r2.json().error, /max_inflight_bytes/);
    assert.equal(await metric(gw, 'spangate_inflight_bytes'), 0);
    assert.deepEqual(await gw.stop(), { code: 0, signal: null }, 'clean exit');
  } finally {
    for (const c of slow) c.s.destroy();
    await gw.stop();
  }
});
