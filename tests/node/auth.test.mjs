// Authentication: no key, wrong key, each key writes only its own project.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, postJson, request, KEY_A, KEY_B, PROJECT_A, PROJECT_B, spanUuid } from './lib/harness.mjs';

const gw = await startGateway();
after(async () => { await gw.stop(); });
const T = '11111111111111111111111111111111';
const span = (sid) => ({ spans: [{ trace_id: T, span_id: sid, parent_id: '9'.repeat(16), span_name: 'a', start_time: 1714979289, end_time: 1714979289 }] });

test('no Authorization header: 401 naming what is missing', async () => {
  const r = await postJson(gw, '/v1/spans', span('1000000000000001'), null);
  assert.equal(r.status, 401);
  assert.match(r.json().error, /missing Authorization/);
});

test('a wrong key: 401, and the key is not logged', async () => {
  const secret = 'wrong-key-do-not-log-me';
  const r = await postJson(gw, '/v1/spans', span('1000000000000002'), secret);
  assert.equal(r.status, 401);
  assert.match(r.json().error, /invalid API key/);
  const o = await request(gw, 'POST', '/v1/traces', Buffer.alloc(0), { 'content-type': 'application/x-protobuf', authorization: 'ApiKey nope' });
  assert.equal(o.status, 401);
  assert.match(o.headers['content-type'], /protobuf/);
  assert.ok(!gw.log.includes(secret));
  assert.ok(!gw.log.includes(KEY_A) && !gw.log.includes(KEY_B));
});

test('Bearer works as well as ApiKey; sha256 and plain keys both work', async () => {
  const a = await postJson(gw, '/v1/spans', span('1000000000000003'), null, { authorization: `Bearer ${KEY_A}` });
  assert.equal(a.status, 200, a.text);
  const b = await postJson(gw, '/v1/spans', span('1000000000000004'), KEY_B);
  assert.equal(b.status, 200, b.text);
});

test('each key writes only to its own project', async () => {
  const rows = await gw.query(`SELECT span_id::text, project_id::text FROM spans ORDER BY span_id`);
  const by = Object.fromEntries(rows.map((r) => [r.span_id, r.project_id]));
  assert.equal(by[spanUuid('1000000000000003')], PROJECT_A);
  assert.equal(by[spanUuid('1000000000000004')], PROJECT_B);
  assert.equal(by[spanUuid('1000000000000001')], undefined);
  assert.equal(by[spanUuid('1000000000000002')], undefined);
});

test('the same span id in two projects are two rows', async () => {
  await postJson(gw, '/v1/spans', span('1000000000000005'), KEY_A);
  await postJson(gw, '/v1/spans', span('1000000000000005'), KEY_B);
  const rows = await gw.query(`SELECT project_id::text FROM spans WHERE span_id = $1 ORDER BY 1`, [spanUuid('1000000000000005')]);
  assert.deepEqual(rows.map((r) => r.project_id), [PROJECT_A, PROJECT_B].sort());
});

test('auth=none writes to the configured project', async () => {
  const g = await startGateway({ conf: ['auth = "none"', `project_id = "${PROJECT_B}"`] });
  try {
    const r = await postJson(g, '/v1/spans', span('1000000000000006'), null);
    assert.equal(r.status, 200, r.text);
    const rows = await g.query('SELECT project_id::text FROM spans');
    assert.deepEqual(rows, [{ project_id: PROJECT_B }]);
  } finally { await g.stop(); }
});

test("auth=agenta checks Agenta's api_keys table, honouring expiry", async () => {
  const g = await startGateway({ conf: ['auth = "agenta"', 'auth_cache_ttl_s = 1'] });
  try {
    await g.query(`CREATE TABLE api_keys (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), prefix varchar, hashed_key varchar,
      project_id uuid NOT NULL, created_by_id uuid, rate_limit int DEFAULT 0, hidden boolean DEFAULT false,
      expiration_date timestamptz, created_at timestamptz DEFAULT now(), updated_at timestamptz)`);
    const raw = 'f'.repeat(64);
    const { createHash } = await import('node:crypto');
    const h = createHash('sha256').update(raw).digest('hex');
    await g.query(`INSERT INTO api_keys (prefix, hashed_key, project_id, created_by_id) VALUES ('AbCd1234', $1, $2, $3)`,
      [`AbCd1234.${h}`, PROJECT_B, '0190a3b4-0000-7000-8000-0000000000ee']);
    await g.query(`INSERT INTO api_keys (prefix, hashed_key, project_id, expiration_date) VALUES ('Expired1', $1, $2, now() - interval '1 day')`,
      [`Expired1.${h}`, PROJECT_A]);
    const ok = await postJson(g, '/v1/spans', span('1000000000000007'), `AbCd1234.${raw}`);
    assert.equal(ok.status, 200, ok.text);
    const rows = await g.query('SELECT project_id::text, created_by_id::text FROM spans');
    assert.deepEqual(rows, [{ project_id: PROJECT_B, created_by_id: '0190a3b4-0000-7000-8000-0000000000ee' }]);
    const expired = await postJson(g, '/v1/spans', span('1000000000000008'), `Expired1.${raw}`);
    assert.equal(expired.status, 401);
    const wrong = await postJson(g, '/v1/spans', span('1000000000000009'), `AbCd1234.${'e'.repeat(64)}`);
    assert.equal(wrong.status, 401);
  } finally { await g.stop(); }
});
