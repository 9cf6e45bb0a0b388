// Trace edit and delete (PUT / DELETE /v1/traces/{id} and Agenta's
// /api/tracing/traces/{id}) against the real servers: Agenta's answers and
// checks; PostgreSQL first, then ClickHouse tombstones through the spool, so
// ClickHouse's reads drop a deleted span at once without a mutation; a delete
// acknowledged while ClickHouse is down, with the gateway killed -9 after
// the answer, still reaches ClickHouse; with change capture on, the endpoint
// spools nothing; a span sent again after its delete lives again;
// `spangate validate` passes after a mix of ingest, edits and deletes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  startGateway, createDatabase, postJson, request, until, chctl, CH_DIR, BIN, PG_URI, pgQuery, KEY_A, KEY_B,
  traceUuid, spanUuid,
} from './lib/harness.mjs';
import { readScripts, backendOf, getWith, queryWith } from './lib/read_both.mjs';

const CH_PORT = process.env.SG_TEST_CH_PORT;
const CH_TCP = process.env.SG_TEST_CH_TCP_PORT;

const hex = (n, len) => n.toString(16).padStart(len, '0');
const traceHex = (t) => hex(0xde1e7e00 + t, 8) + 'a'.repeat(24);
const spanHex = (t, s) => hex(0xde1e7e00 + t, 8) + hex(s + 1, 8);

// A trace of n spans: span 0 is the root.
function traceSpans(t, n, extra = {}) {
  return Array.from({ length: n }, (_, s) => ({
    trace_id: traceHex(t), span_id: spanHex(t, s), ...(s ? { parent_id: spanHex(t, 0) } : {}),
    span_name: `span ${t}.${s}`, span_kind: s ? 'SPAN_KIND_CLIENT' : 'SPAN_KIND_SERVER',
    start_time: 1767225600000000 + s, end_time: 1767225601000000 + s, attributes: { n: s }, ...extra,
  }));
}

async function ingest(gw, spans, key = KEY_A) {
  for (let i = 0; i < spans.length; i += 1000) {
    const r = await postJson(gw, '/v1/spans', { spans: spans.slice(i, i + 1000) }, key);
    assert.equal(r.status, 200, r.text);
  }
}

const auth = (key) => (key ? { authorization: `ApiKey ${key}` } : {});
const del = (gw, path, key = KEY_A) => request(gw, 'DELETE', path, undefined, auth(key));
const put = (gw, path, body, key = KEY_A) => request(gw, 'PUT', path, JSON.stringify(body),
  { 'content-type': 'application/json', ...auth(key) });

// ClickHouse: live spans (FINAL, tombstones left out), and all rows as stored.
const chLive = async (gw, where = '1') =>
  Number((await gw.ch(`SELECT count() FROM spans FINAL WHERE is_deleted = 0 AND ${where}`)).trim());
const chTombs = async (gw, where = '1') =>
  Number((await gw.ch(`SELECT count() FROM spans FINAL WHERE is_deleted = 1 AND ${where}`)).trim());
const ofTrace = (t) => `trace_id = toUUID('${traceUuid(traceHex(t))}')`;
const pgCount = async (gw, t) =>
  (await gw.query('SELECT count(*)::int AS n FROM spans WHERE trace_id = $1', [traceUuid(traceHex(t))]))[0].n;

test('DELETE: 202 with Agenta\'s links, gone from PostgreSQL and at once from ClickHouse\'s reads (tombstones, no mutation); other traces and projects untouched', async () => {
  const gw = await startGateway({ clickhouse: true });
  try {
    await ingest(gw, [...traceSpans(1, 3), ...traceSpans(2, 2)]);
    await ingest(gw, traceSpans(3, 2), KEY_B);
    assert.ok(await until(async () => (await chLive(gw)) === 7), 'ingested spans in ClickHouse');
    const before = (await gw.query('SELECT span_id::text AS s, (extract(epoch FROM coalesce(updated_at, created_at)) * 1000000)::int8::text AS v FROM spans WHERE trace_id = $1', [traceUuid(traceHex(1))]));

    const r = await del(gw, `/v1/traces/${traceHex(1)}`);
    assert.equal(r.status, 202, r.text);
    const body = r.json();
    assert.equal(body.count, 3);
    assert.deepEqual(body.links.map((l) => l.span_id).sort(), [0, 1, 2].map((s) => spanHex(1, s)).sort());
    for (const l of body.links) assert.equal(l.trace_id, traceHex(1), 'trace ids as 32 hex digits');
    assert.equal(await pgCount(gw, 1), 0, 'PostgreSQL: deleted');

    // ClickHouse: tombstones with the rows' keys, deleted_at set, a version above the row's
    assert.ok(await until(async () => (await chTombs(gw, ofTrace(1))) === 3), `tombstones arrive\n${gw.log}`);
    assert.equal(await chLive(gw, ofTrace(1)), 0, 'the reads drop the deleted spans');
    const tombs = (await gw.ch(`SELECT toString(span_id), version, deleted_at IS NULL, span_name FROM spans FINAL
        WHERE ${ofTrace(1)} ORDER BY span_id FORMAT JSONCompact`));
    for (const [sid, v, noDeletedAt, name] of JSON.parse(tombs).data) {
      const old = before.find((b) => b.s === sid);
      assert.ok(BigInt(v) > BigInt(old.v), `version ${v} above the row's ${old.v}`);
      assert.equal(noDeletedAt, 0, 'deleted_at is set');
      assert.match(name, /^span 1\./, 'the tombstone carries the row\'s values');
    }
    assert.equal(await chLive(gw), 4, 'the other traces and the other project stay');
    assert.equal((await gw.ch(`SELECT count() FROM system.mutations WHERE database = '${gw.chdb}'`)).trim(), '0',
      'no ALTER ... DELETE');

    // Agenta's path; another project's trace and an unknown trace delete nothing (202, count 0)
    const other = await del(gw, `/api/tracing/traces/${traceHex(3)}`, KEY_A);
    assert.equal(other.status, 202);
    assert.deepEqual(other.json(), { count: 0, links: [] });
    assert.equal(await pgCount(gw, 3), 2, 'project B\'s trace is untouched by project A\'s key');
    const again = await del(gw, `/v1/traces/${traceHex(1)}`);
    assert.deepEqual([again.status, again.json()], [202, { count: 0, links: [] }], 'a retried delete is harmless');
    const b2 = await del(gw, `/api/tracing/traces/${traceUuid(traceHex(3))}`, KEY_B);
    assert.equal(b2.json().count, 2, 'a dashed UUID works too');
    assert.ok(await until(async () => (await chLive(gw)) === 2), 'project B\'s trace gone from ClickHouse');

    // refusals
    assert.equal((await del(gw, '/v1/traces/xyz')).status, 400);
    assert.match((await del(gw, `/v1/traces/${spanHex(2, 0)}`)).json().error, /Invalid trace_id/, 'a span id is not a trace id');
    assert.equal((await del(gw, `/v1/traces/${traceHex(2)}`, null)).status, 401);
    assert.equal(await pgCount(gw, 2), 2, 'refused deletes deleted nothing');
    const metrics = (await request(gw, 'GET', '/metrics')).text;
    assert.match(metrics, /spangate_http_requests_total\{route="trace_delete",status="202"\} [1-9]/);
    assert.match(metrics, /spangate_http_requests_total\{route="trace_delete",status="400"\} [1-9]/);
    assert.deepEqual(gw.errorLines(), []);
  } finally { await gw.stop(); }
});

test('a deleted trace is gone from the read API served by ClickHouse: trace fetch, span query, analytics', async () => {
  const gw = await startGateway({ clickhouse: true, scripts: readScripts() });
  try {
    await ingest(gw, [...traceSpans(7, 3), ...traceSpans(8, 2)]);
    assert.ok(await until(async () => (await chLive(gw)) === 5), 'ingested spans in ClickHouse');
    const win = { windowing: { oldest: '2026-01-01T00:00:00Z', newest: '2026-01-02T00:00:00Z' } };
    // (ClickHouse shows the rows a moment before the gateway hears that the
    // insert succeeded; until then reads go to PostgreSQL)
    let before;
    assert.ok(await until(async () => backendOf(before = await queryWith(gw, win)) === 'clickhouse'), 'read from ClickHouse');
    assert.equal(before.json().count, 5);
    assert.equal((await del(gw, `/v1/traces/${traceHex(7)}`)).status, 202);
    // The tombstones are in the spool: reads go to PostgreSQL until ClickHouse has them, then to ClickHouse.
    assert.ok(await until(async () => (await chTombs(gw, ofTrace(7))) === 3), 'tombstones arrive');
    let r;
    assert.ok(await until(async () => backendOf(r = await getWith(gw, `/v1/traces/${traceHex(7)}`)) === 'clickhouse'), 'read from ClickHouse');
    assert.equal(r.status, 404, r.text);
    const q = await queryWith(gw, win);
    assert.equal(backendOf(q), 'clickhouse');
    assert.deepEqual(q.json().spans.map((x) => x.span_name).sort(), ['span 8.0', 'span 8.1']);
    const a = await getWith(gw, '/v1/analytics/spans?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&bucket=1d');
    assert.equal(backendOf(a), 'clickhouse');
    assert.equal(a.json().buckets.reduce((n, b) => n + b.count, 0), 2, a.text);
  } finally { await gw.stop(); }
});

test('PUT: Agenta\'s checks, then a re-ingest of the trace: 202 with links, new values in both stores', async () => {
  const gw = await startGateway({ clickhouse: true });
  try {
    await ingest(gw, traceSpans(4, 3));
    const path = `/v1/traces/${traceHex(4)}`;
    const refusals = [
      [{ spans: [] }, /Missing spans/],
      [{ spans: [...traceSpans(4, 2), ...traceSpans(5, 1)] }, /exactly one trace_id/],
      [{ spans: traceSpans(5, 2) }, /does not match payload trace_id/],
      [{ spans: traceSpans(4, 3).slice(1) }, /Missing root span/],
      [{ spans: [...traceSpans(4, 2), { ...traceSpans(4, 3)[2], parent_id: undefined }] }, /Too many root spans/],
      [{ spans: [...traceSpans(4, 2), { ...traceSpans(4, 3)[2], start_time: 'noon' }] }, /start_time/],
      ['{"spans": [', /JSON/],
    ];
    for (const [b, re] of refusals) {
      const r = typeof b === 'string'
        ? await request(gw, 'PUT', path, b, { 'content-type': 'application/json', ...auth(KEY_A) })
        : await put(gw, path, b);
      assert.equal(r.status, 400, `${JSON.stringify(b).slice(0, 80)}: ${r.text}`);
      assert.match(r.json().error, re);
    }
    assert.equal((await put(gw, '/v1/traces/nothex', { spans: traceSpans(4, 3) })).status, 400);
    assert.equal((await request(gw, 'PUT', path, 'x', { 'content-type': 'text/plain', ...auth(KEY_A) })).status, 415);
    const unchanged = await gw.query('SELECT count(*)::int AS n FROM spans WHERE updated_at IS NOT NULL');
    assert.equal(unchanged[0].n, 0, 'refused edits changed nothing');

    const edited = traceSpans(4, 3, { attributes: { edited: true } });
    const r = await put(gw, `/api/tracing/traces/${traceHex(4)}`, { spans: edited });
    assert.equal(r.status, 202, r.text);
    assert.equal(r.json().count, 3);
    assert.deepEqual(r.json().links[0], { trace_id: traceHex(4), span_id: spanHex(4, 0) });
    const pg = await gw.query('SELECT attributes::text AS a, updated_at IS NOT NULL AS u FROM spans');
    assert.equal(pg.length, 3);
    for (const row of pg) assert.deepEqual([JSON.parse(row.a).edited, row.u], [true, true]);
    assert.ok(await until(async () => (await chLive(gw, "attributes LIKE '%\"edited\":true%'")) === 3),
      `ClickHouse holds the edit\n${gw.log}`);
    assert.equal(await chLive(gw), 3, 'one live row per span');
  } finally { await gw.stop(); }
});

test('a trace larger than one delete statement is deleted whole, tombstones included', async () => {
  const gw = await startGateway({ clickhouse: true, workers: 1 });
  try {
    await ingest(gw, traceSpans(6, 2300));
    const r = await del(gw, `/v1/traces/${traceHex(6)}`);
    assert.equal(r.status, 202);
    assert.equal(r.json().count, 2300);
    assert.equal(new Set(r.json().links.map((l) => l.span_id)).size, 2300);
    assert.equal(await pgCount(gw, 6), 0);
    assert.ok(await until(async () => (await chTombs(gw)) === 2300 && (await chLive(gw)) === 0),
      'every span tombstoned in ClickHouse');
    const markers = await gw.query('SELECT count(*)::int AS n FROM spangate_ch_gaps');
    assert.equal(markers[0].n, 0, 'the in-flight markers are dropped once the tombstones are spooled');
  } finally { await gw.stop(); }
});

test('ClickHouse down: DELETE is acknowledged; the gateway killed -9 after the answer; the tombstones reach ClickHouse after both are back', async () => {
  const gw = await startGateway({ clickhouse: true });
  let chDown = false;
  try {
    await ingest(gw, [...traceSpans(7, 4), ...traceSpans(8, 2)]);
    assert.ok(await until(async () => (await chLive(gw)) === 6));
    chctl('stop', CH_DIR);
    chDown = true;
    const r = await del(gw, `/v1/traces/${traceHex(7)}`);
    assert.equal(r.status, 202, r.text);
    assert.equal(r.json().count, 4);
    await gw.kill();
    chctl('start', CH_DIR, CH_PORT, CH_TCP);
    chDown = false;
    await gw.start();
    assert.ok(await until(async () => (await chTombs(gw, ofTrace(7))) === 4, 60000, 250),
      `the spooled tombstones arrive\n${gw.log}`);
    assert.equal(await chLive(gw), 2);
  } finally {
    if (chDown) chctl('start', CH_DIR, CH_PORT, CH_TCP);
    await gw.stop();
  }
});

// Tombstone rows (TabSeparated, is_deleted = 1 last) of trace t in the
// workers' spools (w1, w2, ...; change capture's own spool is apart).
function spooledTombstones(gw, t) {
  const uuid = traceUuid(traceHex(t));
  const root = join(gw.dir, 'spool');
  let n = 0;
  const walk = (d) => {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) { if (d !== root || /^w\d+$/.test(e)) walk(p); continue; }
      for (const line of readFileSync(p, 'latin1').split('\n')) if (line.includes(uuid) && line.endsWith('\t1')) n++;
    }
  };
  walk(root);
  return n;
}

for (const mode of ['spool', 'capture']) {
  test(`clickhouse_writes = "${mode}": the delete ${mode === 'spool' ? 'spools its tombstones' : 'spools nothing; capture writes the tombstones'}`, async () => {
    const db = await createDatabase();
    const conf = mode === 'capture' ? ['clickhouse_writes = "capture"', `capture_slot = "${db.name}"`] : [];
    const gw = await startGateway({ db, clickhouse: true, conf });
    let chDown = false;
    try {
      if (mode === 'capture') { // changes are captured once the slot exists
        const ok = await until(async () => JSON.parse((await request(gw, 'GET', '/readyz')).text).capture?.state === 'streaming', 20000, 100);
        assert.ok(ok, `capture streams\n${gw.log}`);
      }
      await ingest(gw, traceSpans(9, 3));
      assert.ok(await until(async () => (await chLive(gw)) === 3), `ingested spans in ClickHouse\n${gw.log}`);
      // ClickHouse away: whatever the delete spools stays in the spool files
      chctl('stop', CH_DIR);
      chDown = true;
      const r = await del(gw, `/v1/traces/${traceHex(9)}`);
      assert.equal(r.status, 202);
      assert.equal(r.json().count, 3);
      assert.equal(spooledTombstones(gw, 9), mode === 'spool' ? 3 : 0, 'tombstones in the workers\' spools');
      chctl('start', CH_DIR, CH_PORT, CH_TCP);
      chDown = false;
      assert.ok(await until(async () => (await chTombs(gw)) === 3, 30000, 200), `the tombstones arrive\n${gw.log}`);
      assert.equal(await chLive(gw), 0);
    } finally {
      if (chDown) chctl('start', CH_DIR, CH_PORT, CH_TCP);
      await gw.stop();
      if (mode === 'capture') {
        await until(async () => {
          try {
            await pgQuery(PG_URI, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1', [db.name]);
            return true;
          } catch { return false; }
        }, 10000, 200);
      }
    }
  });
}

test('a span sent again after its delete lives again (a new row, as Agenta\'s upsert does); a soft delete is cleared by a re-send', async () => {
  const gw = await startGateway({ clickhouse: true });
  try {
    await ingest(gw, traceSpans(10, 2));
    const c1 = (await gw.query('SELECT min(created_at)::text AS c FROM spans'))[0].c;
    assert.equal((await del(gw, `/v1/traces/${traceHex(10)}`)).json().count, 2);
    await ingest(gw, traceSpans(10, 2));
    const rows = await gw.query('SELECT created_at::text AS c, deleted_at FROM spans');
    assert.equal(rows.length, 2);
    for (const row of rows) assert.ok(row.c > c1, 'a new created_at: a new row');
    // (on 18.16's layout created_at's sorting key has whole seconds: a span
    // re-sent within the second of its first created_at replaces its own
    // tombstone, the later version; otherwise the old key stays tombstoned)
    assert.ok(await until(async () => (await chLive(gw)) === 2), 'ClickHouse: the re-sent spans live');
    assert.equal(Number((await gw.ch('SELECT count() FROM spans FINAL')).trim()) - 2, await chTombs(gw));

    // a soft delete (deleted_at set by SQL, as an operator might): a re-send clears it
    await gw.query('UPDATE spans SET deleted_at = now()');
    await ingest(gw, traceSpans(10, 2));
    const soft = await gw.query('SELECT count(*)::int AS n FROM spans WHERE deleted_at IS NULL');
    assert.equal(soft[0].n, 2);
  } finally { await gw.stop(); }
});

test('spangate validate passes after a mix of ingest, edits and deletes', async () => {
  const gw = await startGateway({ clickhouse: true });
  try {
    for (let t = 20; t < 30; t++) await ingest(gw, traceSpans(t, 1 + (t % 4)), t % 3 ? KEY_A : KEY_B);
    for (let t = 20; t < 30; t += 3) {
      const key = t % 3 ? KEY_A : KEY_B;
      assert.equal((await put(gw, `/v1/traces/${traceHex(t)}`, { spans: traceSpans(t, 1 + (t % 4), { span_name: 'edited' }) }, key)).status, 202);
    }
    for (const t of [21, 24, 28]) assert.equal((await del(gw, `/v1/traces/${traceHex(t)}`, t % 3 ? KEY_A : KEY_B)).status, 202);
    await ingest(gw, traceSpans(21, 2)); // a deleted trace sent again
    // Caught up: the same live spans with the same names (a count alone
    // matches before the edits' new versions arrive).
    const pgSet = (await gw.query(`SELECT span_id::text || ' ' || span_name AS k FROM spans ORDER BY 1`)).map((r) => r.k).join('\n');
    const chSet = async () => (await gw.ch(`SELECT concat(toString(span_id), ' ', span_name) AS k FROM spans FINAL
        WHERE is_deleted = 0 ORDER BY k FORMAT TSV`)).trim();
    assert.ok(await until(async () => (await chSet()) === pgSet), 'ClickHouse caught up');
    const v = spawnSync(BIN, ['validate', '-c', gw.conf, '--sample', '100'], { env: gw.env, encoding: 'utf8' });
    assert.equal(v.status, 0, `validate:\n${v.stdout}\n${v.stderr}`);
    // the check can fail: a span PostgreSQL lost behind ClickHouse's back
    await gw.query('DELETE FROM spans WHERE trace_id = $1', [traceUuid(traceHex(22))]);
    const bad = spawnSync(BIN, ['validate', '-c', gw.conf], { env: gw.env, encoding: 'utf8' });
    assert.notEqual(bad.status, 0, 'validate notices a delete ClickHouse did not get');
  } finally { await gw.stop(); }
});

test('spangate migrate leaves tombstones alone: it removes only the live rows PostgreSQL lost', async () => {
  const gw = await startGateway({ clickhouse: true });
  try {
    await ingest(gw, [...traceSpans(30, 3), ...traceSpans(31, 2)]);
    assert.ok(await until(async () => (await chLive(gw)) === 5));
    assert.equal((await del(gw, `/v1/traces/${traceHex(30)}`)).json().count, 3);
    assert.ok(await until(async () => (await chTombs(gw)) === 3));
    // a span deleted behind the gateway's back: ClickHouse still has it live
    await gw.query('DELETE FROM spans WHERE span_id = $1', [spanUuid(spanHex(31, 1))]);
    const m = spawnSync(BIN, ['migrate', '-c', gw.conf], { env: gw.env, encoding: 'utf8' });
    assert.equal(m.status, 0, `migrate:\n${m.stdout}\n${m.stderr}`);
    assert.match(m.stdout, /\b1 spans removed from ClickHouse/, m.stdout);
    assert.equal(await chLive(gw), 1);
  } finally { await gw.stop(); }
});
