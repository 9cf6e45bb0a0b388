// Authentication: no key, wrong key, each key writes only its own project.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, postJson, request, KEY_A, KEY_B, PROJECT_A, PROJECT_B, spanUuid, sleep, until } from './lib/harness.mjs';

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

test('auth=agenta: a flood of unknown keys is rate limited without asking PostgreSQL; a good key whose cache entry expires keeps working', async () => {
  const rate = 20;
  const g = await startGateway({ workers: 1, conf: ['auth = "agenta"', 'auth_cache_ttl_s = 1', `auth_lookup_rate = ${rate}`, 'auth_negative_ttl_s = 5'] });
  try {
    // api_keys is a view over a function that counts every look-up in a
    // sequence and takes 20 ms, so that a flood really queues.
    await g.query(`CREATE TABLE api_keys_t (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), prefix varchar, hashed_key varchar,
      project_id uuid NOT NULL, created_by_id uuid, expiration_date timestamptz)`);
    await g.query('CREATE SEQUENCE lookups');
    await g.query(`CREATE FUNCTION api_keys_fn() RETURNS SETOF api_keys_t LANGUAGE plpgsql AS $$
      BEGIN PERFORM nextval('lookups'); PERFORM pg_sleep(0.02); RETURN QUERY SELECT * FROM api_keys_t; END $$`);
    await g.query('CREATE VIEW api_keys AS SELECT * FROM api_keys_fn()');
    const lookups = async () => { const [r] = await g.query('SELECT last_value::int AS v, is_called FROM lookups'); return r.is_called ? r.v : 0; };
    const { createHash, randomBytes } = await import('node:crypto');
    const raw = 'a'.repeat(64);
    await g.query(`INSERT INTO api_keys_t (prefix, hashed_key, project_id) VALUES ('Good0001', $1, $2)`,
      [`Good0001.${createHash('sha256').update(raw).digest('hex')}`, PROJECT_B]);
    const good = `Good0001.${raw}`;
    assert.equal((await postJson(g, '/v1/spans', span('1100000000000001'), good)).status, 200);

    // A bad key retried is asked once, then answered from the negative cache.
    const before = await lookups();
    for (let i = 0; i < 5; i++) assert.equal((await postJson(g, '/v1/spans', span('1100000000000002'), 'Nope0001.xyz')).status, 401);
    assert.equal(await lookups() - before, 1, 'one look-up for five tries of the same bad key');

    // The flood: 20 clients sending random keys for 2.5 s, while the good
    // key is used every 100 ms (its 1 s cache entry expires twice).
    const l0 = await lookups();
    const t0 = Date.now();
    let stop = false;
    const flood = { 401: 0, 503: 0, other: [] };
    const flooders = Array.from({ length: 20 }, async () => {
      while (!stop) {
        const r = await postJson(g, '/v1/spans', span('1100000000000003'), `Rand${randomBytes(2).toString('hex')}.${randomBytes(16).toString('hex')}`);
        if (r.status === 401) flood[401]++;
        else if (r.status === 503 && Number(r.headers['retry-after']) >= 1) flood[503]++;
        else flood.other.push(r.status);
        await sleep(20); // pacing: each flooder's request rate
      }
    });
    const goodStatus = [];
    let n = 0;
    while (Date.now() - t0 < 2500) {
      const sid = (0x1200000000000000n + BigInt(n++)).toString(16);
      goodStatus.push((await postJson(g, '/v1/spans', span(sid), good)).status);
      await sleep(100); // pacing: the good key every 100 ms, across its cache entry's expiry
    }
    stop = true;
    await Promise.all(flooders);
    const elapsed = (Date.now() - t0) / 1000;
    const used = await lookups() - l0;
    assert.ok(goodStatus.length >= 10 && goodStatus.every((s) => s === 200), `the good key always worked: ${goodStatus}`);
    assert.deepEqual(flood.other, [], 'unknown keys get 401 or 503 + Retry-After');
    // Look-ups: the rate (plus one second of burst) and the good key's
    // revalidations, with room to spare.
    const bound = rate * elapsed + rate + elapsed + 10;
    assert.ok(used <= bound, `${used} look-ups in ${elapsed} s, bound ${bound} (flood ${JSON.stringify(flood)})`);
    assert.ok(flood[503] > 0, `some unknown keys were refused without a look-up: ${JSON.stringify(flood)}`);
    console.log(`# flood: ${JSON.stringify(flood)}, ${used} look-ups in ${elapsed} s (bound ${bound}), good key ${goodStatus.length}x 200`);
    const m = (await request(g, 'GET', '/metrics')).text;
    assert.match(m, /spangate_auth_lookups_limited_total [1-9]/);

    // A good key that is revoked stops working once its entry is stale.
    await g.query('DELETE FROM api_keys_t');
    let last = 0;
    await until(async () => (last = (await postJson(g, '/v1/spans', span('1100000000000004'), good)).status) === 401, 6000);
    assert.equal(last, 401, 'a revoked key is refused after auth_cache_ttl_s');
  } finally { await g.stop(); }
});

test('a keys file with a bad line on SIGHUP is refused loudly, yet a key removed in that edit stops working', async () => {
  const { writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const KEY_C = 'key-c-' + 'z'.repeat(20);
  const g = await startGateway({ workers: 2 });
  const metric = async (name) => Number(((await request(g, 'GET', '/metrics')).text.match(new RegExp(`^${name} (\\S+)$`, 'm')) || [])[1]);
  try {
    assert.equal((await postJson(g, '/v1/spans', span('1300000000000001'), KEY_A)).status, 200);
    assert.equal((await postJson(g, '/v1/spans', span('1300000000000002'), KEY_B)).status, 200);
    // The operator revokes B and adds C, and breaks line 3 while at it.
    const keys = join(g.dir, 'keys');
    const { execFileSync } = await import('node:child_process');
    const shaA = execFileSync('sha256sum', { input: KEY_A }).toString().split(' ')[0];
    writeFileSync(keys, `# test keys\n${PROJECT_A} sha256:${shaA}\n${PROJECT_B} sha256:not-hex\n${PROJECT_B} plain:${KEY_C}\n`);
    g.proc.kill('SIGHUP');
    assert.ok(await until(async () => (await metric('spangate_keys_reload_failures_total')) === 2, 5000), 'both workers tried');
    assert.equal(await metric('spangate_keys_reload_failed'), 1);
    assert.ok(g.errorLines().some((l) => l.includes(`keys file refused: keys file ${keys}:3: `) && /1 key it no longer lists on a valid line is revoked/.test(l)), g.log);
    // Several connections, so both workers answer.
    for (let i = 0; i < 6; i++) {
      assert.equal((await postJson(g, '/v1/spans', span('1300000000000003'), KEY_B)).status, 401, 'the removed key is revoked');
      assert.equal((await postJson(g, '/v1/spans', span('1300000000000004'), KEY_C)).status, 401, 'nothing is added from a refused file');
      assert.equal((await postJson(g, '/v1/spans', span('1300000000000005'), KEY_A)).status, 200, 'a key still listed keeps working');
    }
    // Fixed: C works, the flag clears.
    writeFileSync(keys, `${PROJECT_A} sha256:${shaA}\n${PROJECT_B} plain:${KEY_C}\n`);
    g.proc.kill('SIGHUP');
    assert.ok(await until(async () => (await metric('spangate_keys_reloads_total')) === 2, 5000));
    assert.equal(await metric('spangate_keys_reload_failed'), 0);
    for (let i = 0; i < 4; i++) assert.equal((await postJson(g, '/v1/spans', span('1300000000000006'), KEY_C)).status, 200);
    assert.ok(!g.log.includes(KEY_C) && !g.log.includes(KEY_B), 'keys are never logged');
  } finally { await g.stop(); }
});
