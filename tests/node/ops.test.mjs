// Operations endpoints, routing, graceful shutdown.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, request, postJson, rawExchange, until } from './lib/harness.mjs';

const gw = await startGateway();
after(async () => { await gw.stop(); });

test('/healthz answers 200', async () => {
  const r = await request(gw, 'GET', '/healthz');
  assert.equal(r.status, 200);
  assert.equal(r.json().status, 'ok');
});

test('/readyz answers 200 when PostgreSQL is reachable', async () => {
  let r;
  await until(async () => (r = await request(gw, 'GET', '/readyz')).status === 200, 2000, 50);
  assert.equal(r.status, 200);
  assert.equal(r.json().postgres.up, true);
});

test('/metrics is Prometheus text with requests, latency, connections and pool state', async () => {
  await request(gw, 'GET', '/healthz');
  let r; // pool figures are published twice a second: wait for them
  await until(async () => /^spangate_pg_connections_up [1-9]\d*$/m.test((r = await request(gw, 'GET', '/metrics')).text), 5000, 50);
  assert.equal(r.status, 200);
  assert.match(r.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  assert.match(r.text, /^spangate_http_requests_total\{route="healthz",status="200"\} [1-9]\d*$/m);
  assert.match(r.text, /^# TYPE spangate_http_request_duration_seconds histogram$/m);
  assert.match(r.text, /^spangate_http_request_duration_seconds_bucket\{route="healthz",le="\+Inf"\} [1-9]/m);
  assert.match(r.text, /^spangate_http_connections_open \d+$/m);
  assert.match(r.text, /^spangate_pg_connections_up [1-9]\d*$/m);
  assert.match(r.text, /^spangate_pg_spare_statements_total \d+$/m);
  // Every sample line is "name{labels} value" or "name value".
  for (const line of r.text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    assert.match(line, /^[a-z_]+(\{[^}]*\})? -?[0-9.e+]+$/, line);
  }
});

test('/metrics counts the group commits that stored spans', async () => {
  const span = { trace_id: 'a1'.repeat(16), span_id: 'b2'.repeat(8), span_name: 'gc', start_time: 1, end_time: 2 };
  assert.equal((await postJson(gw, '/v1/spans', { spans: [span] })).status, 200);
  // published twice a second
  assert.ok(await until(async () => /^spangate_pg_group_commits_total [1-9]\d*$/m.test((await request(gw, 'GET', '/metrics')).text), 5000, 50));
});

test('unknown routes get 404 and wrong methods 405 with Allow', async () => {
  const r = await request(gw, 'GET', '/nope');
  assert.equal(r.status, 404);
  assert.match(r.json().error, /no such endpoint: GET \/nope/);
  const m = await request(gw, 'GET', '/v1/traces');
  assert.equal(m.status, 405);
  assert.equal(m.headers.allow, 'POST');
  const d = await request(gw, 'DELETE', '/healthz');
  assert.equal(d.status, 405);
});

test('keep-alive: several requests on one connection', async () => {
  const out = await rawExchange(gw,
    'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.equal((out.match(/HTTP\/1\.1 200/g) || []).length, 3);
});

test('SIGTERM finishes in-flight requests and exits 0', async () => {
  const g = await startGateway({ conf: ['commit_window_ms = 300'] });
  const body = { spans: [{ trace_id: 'a'.repeat(32), span_id: 'b'.repeat(16), span_name: 'inflight', start_time: 1700000000000000, end_time: 1700000000000001 }] };
  const pending = postJson(g, '/v1/spans', body);
  // SIGTERM once the request waits in the 300 ms commit window (its body
  // is held in flight until it is answered)
  await until(async () => /^spangate_inflight_bytes [1-9]/m.test((await request(g, 'GET', '/metrics')).text), 2000, 10);
  g.proc.kill('SIGTERM');
  const r = await pending;
  assert.equal(r.status, 200);
  assert.equal(r.json().count, 1);
  const exit = await g.exited;
  assert.deepEqual(exit, { code: 0, signal: null });
  const rows = await g.query('SELECT span_name FROM spans');
  assert.deepEqual(rows.map((x) => x.span_name), ['inflight']);
  assert.deepEqual(g.errorLines(), []);
});
