// PostgreSQL failures that are not the data's fault: a read-only primary
// (what a failover to a standby looks like), a lock held by another session.
// Each is answered 503 with Retry-After (OTLP exporters retry it; 500 they
// drop), nothing is acknowledged, the log carries PostgreSQL's SQLSTATE and
// message, and /readyz says why the gateway is not ready.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startGateway, postJson, request, pgQuery, PG_URI, until, spanUuid } from './lib/harness.mjs';

const T = '5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a';
const span = (sid, name = 'n') => ({ trace_id: T, span_id: sid, parent_id: '9999999999999999', span_name: name, start_time: 1714979289, end_time: 1714979290 });
const post = (gw, sid, name) => postJson(gw, '/v1/spans', { spans: [span(sid, name)] });
const readyz = async (gw) => request(gw, 'GET', '/readyz');
const stored = async (gw, sid) => (await gw.query('SELECT span_name FROM spans WHERE span_id = $1', [spanUuid(sid)]))[0]?.span_name;

// Ends the gateway's sessions on its database: its pools reconnect.
const kickSessions = (gw) => pgQuery(PG_URI,
  "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'spangate'",
  [gw.db.name]);
const setReadOnly = (gw, on) => pgQuery(PG_URI,
  `ALTER DATABASE ${gw.db.name} ${on ? 'SET default_transaction_read_only = on' : 'RESET default_transaction_read_only'}`);

const gateways = [];
after(async () => { for (const g of gateways) await g.stop(); });

test('a read-only primary: 503 + Retry-After, /readyz 503 naming it, then back to 200 when writable', async () => {
  const gw = await startGateway({ workers: 1 });
  gateways.push(gw);
  assert.equal((await post(gw, '1000000000000001')).status, 200);

  await setReadOnly(gw, true);
  await kickSessions(gw);
  // The pool refuses read-only servers at connect time; /readyz says so.
  let r;
  assert.ok(await until(async () => {
    r = await readyz(gw);
    return r.status === 503 && /read-only/.test(r.json().postgres.error);
  }, 10000, 50), `/readyz 503 naming the read-only primary: ${r?.text}`);
  assert.ok(r.headers['retry-after']);
  assert.equal(r.json().postgres.writable, false);

  const w = await post(gw, '1000000000000002');
  assert.equal(w.status, 503, w.text);
  assert.ok(w.headers['retry-after'], 'Retry-After');
  assert.match(w.json().error, /nothing was stored/);
  assert.equal(await stored(gw, '1000000000000002'), undefined);
  assert.match(gw.log, /\[warn\].*answered 503.*read-only/);

  await setReadOnly(gw, false);
  assert.ok(await until(async () => (await readyz(gw)).status === 200, 15000, 50), '/readyz 200 again');
  assert.equal((await post(gw, '1000000000000002')).status, 200);
  assert.equal(await stored(gw, '1000000000000002'), 'n');
  assert.deepEqual(gw.errorLines(), [], 'no error lines: a transient failure is a warning');
});

test('25006 on a live session (target_session_attrs=any): 503 with SQLSTATE in the log, /readyz 503', async () => {
  const gw0 = await startGateway({ workers: 1 });
  await gw0.stop();
  const uri = `${gw0.db.uri}${gw0.db.uri.includes('?') ? '&' : '?'}target_session_attrs=any`;
  await setReadOnly(gw0, true); // every session the gateway opens is read-only
  const gw = await startGateway({ workers: 1, db: gw0.db, skipSchema: true, env: { POSTGRES_URI: uri } });
  gateways.push(gw);
  assert.ok(await until(async () => (await readyz(gw)).status === 200, 10000, 50), 'connected');
  const w = await post(gw, '2000000000000002');
  assert.equal(w.status, 503, w.text);
  assert.ok(w.headers['retry-after'], 'Retry-After');
  assert.match(gw.log, /\[warn\].*answered 503.*25006 cannot execute (INSERT|COPY FROM) in a read-only transaction/);
  const r = await readyz(gw);
  assert.equal(r.status, 503, r.text);
  assert.match(r.json().postgres.error, /^25006 /);

  await setReadOnly(gw, false);
  // Every read-only session is replaced after its 25006: writes succeed again.
  assert.ok(await until(async () => (await post(gw, '2000000000000002')).status === 200, 15000, 50));
  assert.equal(await stored(gw, '2000000000000002'), 'n');
  assert.equal((await readyz(gw)).status, 200);
  assert.deepEqual(gw.errorLines(), []);
});

test('a row locked by another session past lock_timeout: 503 + Retry-After, 55P03 in the log', async () => {
  const gw0 = await startGateway({ workers: 1 });
  await gw0.stop();
  const uri = `${gw0.db.uri}${gw0.db.uri.includes('?') ? '&' : '?'}options=-c%20lock_timeout%3D200`;
  const gw = await startGateway({ workers: 1, db: gw0.db, skipSchema: true, env: { POSTGRES_URI: uri } });
  gateways.push(gw);
  assert.equal((await post(gw, '3000000000000001', 'first')).status, 200);

  const holder = new pg.Client({ connectionString: gw.db.uri });
  await holder.connect();
  try {
    await holder.query('BEGIN');
    await holder.query('SELECT 1 FROM spans WHERE span_id = $1 FOR UPDATE', [spanUuid('3000000000000001')]);
    const w = await post(gw, '3000000000000001', 'second');
    assert.equal(w.status, 503, w.text);
    assert.ok(w.headers['retry-after'], 'Retry-After');
    assert.match(gw.log, /\[warn\].*answered 503.*55P03/);
    // A lock is not an unwritable primary: still ready.
    assert.equal((await readyz(gw)).status, 200);
  } finally {
    await holder.query('ROLLBACK');
    await holder.end();
  }
  assert.equal((await post(gw, '3000000000000001', 'second')).status, 200);
  assert.equal(await stored(gw, '3000000000000001'), 'second');
  assert.deepEqual(gw.errorLines(), []);
});
