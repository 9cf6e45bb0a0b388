// Operator scripts in the live path: a custom transform (redact a secret,
// drop by name; a type()/pairs() redaction over the proxies), SIGHUP reload, a broken reload keeping the old scripts,
// and routing.lua choosing the projects that reach ClickHouse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGateway, postJson, request, KEY_A, KEY_B, PROJECT_A, PROJECT_B, ROOT, until, spanUuid } from './lib/harness.mjs';

function scriptsDir(files) {
  const d = mkdtempSync(join(tmpdir(), 'sg-lua-'));
  cpSync(join(ROOT, 'lua'), d, { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(d, name), text);
  return d;
}

const T = '44444444444444444444444444444444';
const span = (sid, name, attrs = {}) => ({ trace_id: T, span_id: sid, parent_id: '9'.repeat(16), span_name: name, start_time: 1714979289, end_time: 1714979289, attributes: attrs });

const REDACT_V1 = `
local M = {}
function M.span(span, ctx)
  if span.span_name == "healthcheck" then return nil end
  local a = span.attributes
  if a and a["api_key"] ~= nil then a["api_key"] = "[redacted]" end
  return span
end
return M
`;
const REDACT_V2 = `
local M = {}
function M.span(span, ctx)
  span.span_name = "v2:" .. span.span_name
  return span
end
return M
`;

test('a custom transform redacts a secret and drops by name; SIGHUP reloads it; a broken reload keeps the old one', async () => {
  const dir = scriptsDir({ 'transform.lua': REDACT_V1 });
  const gw = await startGateway({ scripts: dir });
  try {
    let r = await postJson(gw, '/v1/spans', { spans: [span('5000000000000001', 'call', { api_key: 'sk-secret', model: 'm' }), span('5000000000000002', 'healthcheck')] });
    assert.equal(r.status, 200, r.text);
    let rows = await gw.query('SELECT span_id::text, span_name, attributes FROM spans ORDER BY span_id');
    assert.deepEqual(rows.map((x) => x.span_name), ['call']);
    assert.deepEqual(rows[0].attributes, { api_key: '[redacted]', model: 'm' });
    assert.ok(!gw.log.includes('sk-secret'));

    writeFileSync(join(dir, 'transform.lua'), REDACT_V2);
    gw.proc.kill('SIGHUP');
    await until(async () => (await request(gw, 'GET', '/metrics')).text.match(/spangate_lua_reloads_total [1-9]/), 5000);
    r = await postJson(gw, '/v1/spans', { spans: [span('5000000000000003', 'after')] });
    assert.equal(r.status, 200);
    rows = await gw.query(`SELECT span_name FROM spans WHERE span_id = '${spanUuid('5000000000000003')}'`);
    assert.equal(rows[0].span_name, 'v2:after');

    writeFileSync(join(dir, 'transform.lua'), 'local M = {}\nfunction M.span(s) return s end\nreturn M +\n');
    gw.proc.kill('SIGHUP');
    await until(async () => (await request(gw, 'GET', '/metrics')).text.match(/spangate_lua_reload_failures_total [1-9]/), 5000);
    assert.match(gw.log, /reload failed, the previous scripts keep running: .*transform\.lua:\d+: /);
    r = await postJson(gw, '/v1/spans', { spans: [span('5000000000000004', 'still')] });
    assert.equal(r.status, 200);
    rows = await gw.query(`SELECT span_name FROM spans WHERE span_id = '${spanUuid('5000000000000004')}'`);
    assert.equal(rows[0].span_name, 'v2:still', 'the previous scripts are still running');
    const exit = await gw.stop();
    assert.deepEqual(exit, { code: 0, signal: null });
  } finally { await gw.stop(); }
});

test('a failing or runaway transform: the span is stored untransformed (pass) and others are untouched', async () => {
  const dir = scriptsDir({ 'transform.lua': `
local M = {}
function M.span(span)
  if span.span_name == "boom" then error("kaboom") end
  if span.span_name == "loop" then while true do end end
  span.span_name = "ok:" .. span.span_name
  return span
end
return M
` });
  const gw = await startGateway({ scripts: dir, conf: ['script_budget = 100000'] });
  try {
    const r = await postJson(gw, '/v1/spans', { spans: [span('6000000000000001', 'boom'), span('6000000000000002', 'loop'), span('6000000000000003', 'fine')] });
    assert.equal(r.status, 200, r.text);
    const rows = await gw.query('SELECT span_name FROM spans ORDER BY span_id');
    assert.deepEqual(rows.map((x) => x.span_name), ['boom', 'loop', 'ok:fine']);
    assert.match(gw.log, /kaboom/);
    let m; // Lua figures are published twice a second: wait for them
    await until(async () => /spangate_lua_errors_total [2-9]/.test(m = (await request(gw, 'GET', '/metrics')).text) &&
      /spangate_lua_budget_kills_total [1-9]/.test(m), 5000);
    assert.match(m, /spangate_lua_errors_total [2-9]/);
    assert.match(m, /spangate_lua_budget_kills_total [1-9]/);
  } finally { await gw.stop(); }
});

test('on_script_error = reject rejects the failing span alone', async () => {
  const dir = scriptsDir({ 'transform.lua': 'local M = {}\nfunction M.span(s) if s.span_name == "bad" then error("no") end return s end\nreturn M\n' });
  const gw = await startGateway({ scripts: dir, conf: ['on_script_error = "reject"'] });
  try {
    const r = await postJson(gw, '/v1/spans', { spans: [span('6100000000000001', 'bad'), span('6100000000000002', 'good')] });
    assert.equal(r.status, 200);
    assert.equal(r.json().count, 1);
    assert.equal(r.json().rejected, 1);
    assert.deepEqual((await gw.query('SELECT span_name FROM spans')).map((x) => x.span_name), ['good']);
  } finally { await gw.stop(); }
});

test('an operator\'s type() guard and pairs() loop redact through the attribute proxies', async () => {
  const dir = scriptsDir({ 'transform.lua': `
local M = {}
function M.span(span, ctx)
  if type(span.attributes) ~= "table" then return span end
  for k, v in pairs(span.attributes) do
    if k:find("email", 1, true) then span.attributes[k] = nil end
  end
  local n = 0
  for _, tag in ipairs(span.attributes.tags or {}) do n = n + 1 end
  span.attributes.ntags = n
  return span
end
return M
` });
  const gw = await startGateway({ scripts: dir });
  try {
    const r = await postJson(gw, '/v1/spans', { spans: [span('6200000000000001', 'call', { 'user.email': 'a@b', 'contact.email': 'c@d', keep: 'x', tags: ['a', 'b'] })] });
    assert.equal(r.status, 200, r.text);
    const rows = await gw.query('SELECT attributes FROM spans');
    assert.deepEqual(rows.map((x) => x.attributes), [{ keep: 'x', tags: ['a', 'b'], ntags: 2 }]);
    assert.deepEqual(gw.errorLines(), []);
  } finally { await gw.stop(); }
});

test('spangate check reports a broken script with its file and line', async () => {
  const { spawnSync } = await import('node:child_process');
  const { BIN } = await import('./lib/harness.mjs');
  const dir = scriptsDir({ 'routing.lua': 'local M = {}\nM.clickhouse = 3\nreturn M\n' });
  const r = spawnSync(BIN, ['check'], { env: { ...process.env, SPANGATE_SCRIPTS: dir }, cwd: ROOT });
  assert.equal(r.status, 1);
  assert.match(r.stderr.toString(), /routing\.lua/);
});

test('routing.lua: only the enabled projects reach ClickHouse', async () => {
  const dir = scriptsDir({ 'routing.lua': `
local M = {}
function M.clickhouse(project_id) return project_id == "${PROJECT_A}" end
return M
` });
  // One worker sends its spool in order: once A's span (sent last) is in
  // ClickHouse, B's would be too, had routing let it through.
  const gw = await startGateway({ scripts: dir, clickhouse: true, workers: 1 });
  try {
    assert.equal((await postJson(gw, '/v1/spans', { spans: [span('7000000000000002', 'b')] }, KEY_B)).status, 200);
    assert.equal((await postJson(gw, '/v1/spans', { spans: [span('7000000000000001', 'a')] }, KEY_A)).status, 200);
    await until(async () => Number((await gw.ch('SELECT count() FROM spans FINAL')).trim()) >= 1, 10000);
    const rows = (await gw.ch('SELECT toString(project_id) FROM spans FINAL')).trim().split('\n');
    assert.deepEqual(rows, [PROJECT_A]);
    assert.equal((await gw.query('SELECT count(*)::int AS n FROM spans'))[0].n, 2, 'PostgreSQL has both');
  } finally { await gw.stop(); }
});

test('gw.metrics values reach /metrics as spangate_lua_user_*, summed over the workers, bounded in number', async () => {
  // docs/lua.md's redaction example, plus a gauge each worker sets to 1 (its
  // sum says how many workers ran the transform) and, for one span, more
  // distinct names than /metrics takes.
  const dir = scriptsDir({ 'transform.lua': `
local gw = require("gw")
local M = {}
function M.span(span, ctx)
  gw.metrics.gauge("workers_seen", 1)
  local a = span.attributes
  if a and a["api_key"] ~= nil then
    a["api_key"] = "[redacted]"
    gw.metrics.incr("spans_redacted")
    gw.metrics.incr("redact:bytes", 10)
  end
  if span.span_name == "many" then
    for i = 1, 300 do gw.metrics.incr("name_" .. i) end
  end
  return span
end
return M
` });
  const gw = await startGateway({ scripts: dir, workers: 2 });
  const metrics = async () => (await request(gw, 'GET', '/metrics')).text;
  const value = (text, name) => { const m = text.match(new RegExp(`^${name} (\\S+)$`, 'm')); return m ? Number(m[1]) : NaN; };
  try {
    // One connection per request: SO_REUSEPORT spreads them over both workers.
    const N = 40;
    const res = await Promise.all(Array.from({ length: N }, (_, i) =>
      postJson(gw, '/v1/spans', { spans: [span((0x8000000000000000n + BigInt(i)).toString(16), 'call', { api_key: 'sk', model: 'm' })] })));
    for (const r of res) assert.equal(r.status, 200, r.text);
    const ok = await until(async () => {
      const m = await metrics();
      return value(m, 'spangate_lua_user_spans_redacted') === N && value(m, 'spangate_lua_user_workers_seen') === 2;
    }, 5000);
    let m = await metrics();
    assert.ok(ok, `summed over both workers:\n${m.split('\n').filter((l) => l.includes('lua_user')).join('\n')}`);
    assert.match(m, /# TYPE spangate_lua_user_spans_redacted counter\n/);
    assert.match(m, /# TYPE spangate_lua_user_workers_seen gauge\n/);
    assert.equal(value(m, 'spangate_lua_user_redact_bytes'), 10 * N, 'a colon is sanitised to _');

    // 300 more names from one request: 256 distinct names at most.
    assert.equal((await postJson(gw, '/v1/spans', { spans: [span('8100000000000001', 'many')] })).status, 200);
    assert.ok(await until(async () => value(await metrics(), 'spangate_lua_metrics_dropped_total') > 0, 5000));
    m = await metrics();
    const exported = m.split('\n').filter((l) => l.startsWith('# TYPE spangate_lua_user_')).length;
    assert.equal(exported, 256);
    assert.equal(value(m, 'spangate_lua_metrics_dropped_total'), 3 + 300 - 256);
    assert.equal(gw.log.split('\n').filter((l) => /is not exported to \/metrics/.test(l)).length, 1, 'logged once');

    // A reload: counters keep counting, the old states' gauges leave the sum.
    gw.proc.kill('SIGHUP');
    assert.ok(await until(async () => value(await metrics(), 'spangate_lua_reloads_total') === 2, 5000));
    assert.ok(await until(async () => value(await metrics(), 'spangate_lua_user_workers_seen') === 0, 5000), 'gauges of the old states are gone');
    assert.equal((await postJson(gw, '/v1/spans', { spans: [span('8200000000000001', 'call', { api_key: 'sk' })] })).status, 200);
    assert.ok(await until(async () => value(await metrics(), 'spangate_lua_user_spans_redacted') === N + 1, 5000), 'counters continue across a reload');
  } finally { await gw.stop(); }
});
