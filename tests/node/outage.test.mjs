// PostgreSQL down: 503 with Retry-After, nothing acknowledged; back up:
// the gateway reconnects by itself.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startGateway, postJson, request, sleep, createDatabase, ROOT, until } from './lib/harness.mjs';

// A gateway pointed at a PostgreSQL port nobody listens on, then at the real one.
test('PostgreSQL unreachable: 503 + Retry-After and /readyz 503; nothing is acknowledged', async () => {
  const db = await createDatabase();
  const gw = await startGateway({ db: { ...db, uri: db.uri.replace(/:(\d+)\//, ':1/') }, skipSchema: true });
  try {
    const r = await postJson(gw, '/v1/spans', { spans: [{ trace_id: 'a'.repeat(32), span_id: 'b'.repeat(16), span_name: 'x', start_time: 1, end_time: 1 }] });
    assert.equal(r.status, 503);
    assert.ok(Number(r.headers['retry-after']) >= 1);
    const ready = await request(gw, 'GET', '/readyz');
    assert.equal(ready.status, 503);
    assert.equal((await request(gw, 'GET', '/healthz')).status, 200, 'the process itself is fine');
  } finally { await gw.stop(); }
});

test('PostgreSQL restarted while clients send: every acknowledged span is stored', async () => {
  const port = process.env.SG_TEST_PG_PORT;
  const pgdir = process.env.SG_TEST_TMP + '/pg';
  const gw = await startGateway();
  try {
    const acked = [];
    let n = 0;
    let stop = false, refused = 0;
    const sender = (async () => {
      while (!stop) {
        const sid = (0x5000000000000000n + BigInt(n++)).toString(16);
        const r = await postJson(gw, '/v1/spans', { spans: [{ trace_id: 'c'.repeat(32), span_id: sid, parent_id: 'd'.repeat(16), span_name: 'r', start_time: 1, end_time: 1 }] }).catch(() => ({ status: 0 }));
        if (r.status === 200) acked.push(sid);
        else {
          assert.ok(r.status === 503 || r.status === 0, `unexpected ${r.status}`);
          refused++;
        }
        await sleep(5); // pacing: a steady client
      }
    })();
    // Some spans stored before the restart, some refused while PostgreSQL
    // is down, and some stored again after it.
    await until(() => acked.length >= 20, 10000, 20);
    execFileSync(`${ROOT}/scripts/pgctl.sh`, ['stop', pgdir], { stdio: 'ignore' });
    await until(() => refused > 0, 10000, 20);
    execFileSync(`${ROOT}/scripts/pgctl.sh`, ['start', pgdir, port], { stdio: 'ignore' });
    const back = acked.length;
    await until(() => acked.length >= back + 20, 15000, 20);
    stop = true;
    await sender;
    assert.ok(acked.length > 10, `acknowledged ${acked.length}`);
    const rows = await gw.query(`SELECT span_id::text FROM spans`);
    const stored = new Set(rows.map((r) => r.span_id.replace(/-/g, '').slice(0, 16)));
    for (const sid of acked) assert.ok(stored.has(sid), `acknowledged span ${sid} is stored`);
    // Reconnects back off up to 5 s; both workers' pools come back by themselves.
    const ready = await until(async () => (await request(gw, 'GET', '/readyz')).status === 200, 15000, 200);
    assert.ok(ready, '/readyz is 200 again');
  } finally { await gw.stop(); }
});

test('memory held by requests in flight is bounded: beyond max_inflight_bytes, 429 with Retry-After', async () => {
  // A long commit window keeps the first requests' memory in flight.
  const gw = await startGateway({ conf: ['max_inflight_bytes = "4KiB"', 'commit_window_ms = 400', 'workers = 1'] });
  try {
    const body = (i) => ({ spans: [{ trace_id: 'b'.repeat(32), span_id: (0x6000000000000000n + BigInt(i)).toString(16), parent_id: 'c'.repeat(16), span_name: 'x'.repeat(1500), start_time: 1, end_time: 1 }] });
    const res = await Promise.all(Array.from({ length: 8 }, (_, i) => postJson(gw, '/v1/spans', body(i))));
    const codes = res.map((r) => r.status);
    assert.ok(codes.includes(200), `some are stored: ${codes}`);
    assert.ok(codes.includes(429), `some are refused: ${codes}`);
    for (const r of res.filter((x) => x.status === 429)) {
      assert.equal(r.headers['retry-after'], '1');
      assert.match(r.json().error, /in-flight memory limit/);
    }
    const stored = (await gw.query('SELECT count(*)::int AS n FROM spans'))[0].n;
    assert.equal(stored, codes.filter((c) => c === 200).length, 'exactly the acknowledged requests are stored');
    // Once the memory is released, requests are accepted again.
    assert.equal((await postJson(gw, '/v1/spans', body(100))).status, 200);
  } finally { await gw.stop(); }
});
