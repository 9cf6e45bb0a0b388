// Connection edge cases and the in-flight memory budget (max_inflight_bytes).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startGateway, KEY_A } from './lib/harness.mjs';

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
  } finally { await gw.stop(); }
});
