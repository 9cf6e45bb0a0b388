// Change capture (clickhouse_writes = "capture") against the real servers:
// spans written with plain SQL, the way Agenta's DAO writes them (insert,
// upsert, update, hard delete of a trace), reach ClickHouse's reads; a
// kill -9 of the gateway mid-stream, a ClickHouse outage and a failover to a
// standby gateway lose nothing and double nothing; a role without the
// REPLICATION attribute and a server without wal_level = logical get the fix
// in the error.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import {
  startGateway, createDatabase, request, postJson, until, sleep, chctl, CH_DIR, BIN, ROOT, PG_URI,
  PROJECT_A, freePort, pgQuery,
} from './lib/harness.mjs';

const CH_PORT = process.env.SG_TEST_CH_PORT;
const CH_TCP = process.env.SG_TEST_CH_TCP_PORT;
const CREATOR = '0190a3b4-0000-7000-8000-0000000000ff';

const slots = [];
after(async () => {
  // an abandoned slot would hold back the test server's WAL for the rest of the run
  for (const s of slots) {
    await until(async () => {
      try {
        await pgQuery(PG_URI, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1', [s]);
        return true;
      } catch { return false; } // still active for a moment after its gateway stopped
    }, 10000, 200);
  }
});

// A database of its own and a slot named after it (slots are per cluster).
async function captureDb() {
  const db = await createDatabase();
  slots.push(db.name);
  return db;
}

function captureConf(db, extra = []) {
  return ['clickhouse_writes = "capture"', `capture_slot = "${db.name}"`, ...extra];
}

async function readyz(gw) {
  const r = await request(gw, 'GET', '/readyz');
  return JSON.parse(r.text);
}

async function waitState(gw, state, ms = 20000) {
  const ok = await until(async () => (await readyz(gw)).capture?.state === state, ms, 100);
  assert.ok(ok, `capture did not reach state ${state}: ${JSON.stringify((await readyz(gw)).capture)}\n${gw.log}`);
}

const hex = (n, len) => n.toString(16).padStart(len, '0');
const uuidOf = (h32) => `${h32.slice(0, 8)}-${h32.slice(8, 12)}-${h32.slice(12, 16)}-${h32.slice(16, 20)}-${h32.slice(20)}`;
const traceId = (t) => uuidOf(hex(0xca000000 + t, 8) + '0'.repeat(24));
const spanId = (t, s) => uuidOf(hex(0xca000000 + t, 8) + hex(s + 1, 24));

// One span as Agenta's DAO inserts it (SQLAlchemy: every column, created_at from the server).
const INSERT = `INSERT INTO spans (project_id, created_by_id, trace_id, span_id, parent_id, span_kind, span_name,
    start_time, end_time, status_code, status_message, attributes, events, links, "references", hashes,
    trace_type, span_type)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`;
function spanParams(t, s, extra = {}) {
  const o = {
    parent: s === 0 ? null : spanId(t, 0), kind: s === 0 ? 'SPAN_KIND_SERVER' : 'SPAN_KIND_CLIENT',
    name: `span ${t}.${s}`, start: '2026-01-02 03:04:05.123456+00', end: '2026-01-02 03:04:06.654321+00',
    status: 'STATUS_CODE_OK', message: null, attributes: { ag: { type: { span: 'task' } }, n: s, text: 'tab\there "q" \\' },
    ...extra,
  };
  return [PROJECT_A, CREATOR, traceId(t), spanId(t, s), o.parent, o.kind, o.name, o.start, o.end, o.status,
    o.message, JSON.stringify(o.attributes), '[]', null, null, null, 'INVOCATION', s === 0 ? 'WORKFLOW' : 'TASK'];
}

async function withClient(uri, fn) {
  const c = new pg.Client({ connectionString: uri });
  await c.connect();
  try { return await fn(c); } finally { await c.end(); }
}

// ClickHouse's live spans (FINAL, tombstones left out) by span id.
async function chSpans(gw, where = '1') {
  const rows = (await gw.ch(`SELECT toString(span_id), span_name, ifNull(status_message, ''), attributes, toString(version)
      FROM spans FINAL WHERE is_deleted = 0 AND ${where} FORMAT JSONCompact`));
  const out = {};
  for (const [id, name, msg, attrs, version] of JSON.parse(rows).data) out[id] = { name, msg, attrs, version };
  return out;
}

const chLive = async (gw) => Number((await gw.ch('SELECT count() FROM spans FINAL WHERE is_deleted = 0')).trim());
const pgCount = async (gw) => (await gw.query('SELECT count(*)::int AS n FROM spans'))[0].n;

test('SQL inserts, upserts, updates and a hard delete of a trace reach ClickHouse; validate agrees', async () => {
  const db = await captureDb();
  // Agenta's older observability table, reduced: captured too when it exists
  await pgQuery(db.uri, `CREATE TABLE nodes (project_id uuid NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz, node_id uuid NOT NULL, tree_id uuid, root_id uuid, node_name varchar, data jsonb,
    PRIMARY KEY (project_id, node_id))`);
  const gw = await startGateway({ db, clickhouse: true, conf: captureConf(db, ['capture_max_retained_wal = "1B"']) });
  try {
    await waitState(gw, 'streaming');
    const big = 'x'.repeat(10) + Array.from({ length: 400 }, (_, i) => `${i * 7919 % 10007}`).join('-'); // stored out of line
    await withClient(db.uri, async (c) => {
      await c.query('BEGIN');
      for (let t = 0; t < 3; t++)
        for (let s = 0; s < 3; s++)
          await c.query(INSERT, spanParams(t, s, t === 0 && s === 2 ? { attributes: { big } } : {}));
      await c.query('COMMIT');
      // Agenta's upsert of a re-sent span
      const p = spanParams(1, 1, { name: 'renamed by upsert' });
      await c.query(`${INSERT} ON CONFLICT (project_id, trace_id, span_id) DO UPDATE SET span_name = EXCLUDED.span_name,
          attributes = EXCLUDED.attributes, updated_at = now(), updated_by_id = EXCLUDED.created_by_id`, p);
      // an edit of the attributes
      await c.query(`UPDATE spans SET attributes = jsonb_set(attributes, '{edited}', 'true'), updated_at = now()
          WHERE project_id = $1 AND trace_id = $2 AND span_id = $3`, [PROJECT_A, traceId(2), spanId(2, 0)]);
      // an edit that leaves the large (TOASTed) attributes alone: pgoutput does not resend them
      await c.query(`UPDATE spans SET status_message = 'looked at', updated_at = now()
          WHERE project_id = $1 AND trace_id = $2 AND span_id = $3`, [PROJECT_A, traceId(0), spanId(0, 2)]);
    });
    // and the gateway's own ingest: one path to ClickHouse, through the slot
    const r = await postJson(gw, '/v1/spans', { spans: [{ trace_id: 'cb'.repeat(16), span_id: 'cc'.repeat(8), span_name: 'ingested', start_time: 1767323045000000, end_time: 1767323046000000 }] });
    assert.equal(r.status, 200, r.text);

    const got = await until(async () => {
      const s = await chSpans(gw);
      return Object.keys(s).length === 10 && s[spanId(0, 2)]?.msg === 'looked at' && s[spanId(2, 0)]?.attrs.includes('edited') ? s : null;
    }, 20000, 200);
    assert.ok(got, `ClickHouse has ${JSON.stringify(Object.entries(await chSpans(gw)).map(([k, v]) => [k, v.name, v.msg]))}`);
    assert.equal(got[spanId(1, 1)].name, 'renamed by upsert');
    assert.equal(JSON.parse(got[spanId(2, 0)].attrs).edited, true);
    assert.equal(JSON.parse(got[spanId(0, 2)].attrs).big, big, 'the unchanged TOASTed attributes survive the update');
    assert.equal(JSON.parse(got[spanId(1, 2)].attrs).text, 'tab\there "q" \\');
    // versions are the dual-write's: µs of coalesce(updated_at, created_at)
    const versions = await gw.query(`SELECT span_id::text AS id,
        (extract(epoch FROM coalesce(updated_at, created_at)) * 1000000)::int8::text AS v FROM spans`);
    for (const { id, v } of versions) assert.equal(got[id].version, v, `version of ${id}`);
    const spool = join(gw.dir, 'spool', 'w1');
    assert.ok(!existsSync(spool) || readdirSync(spool).every((f) => !f.endsWith('.seg')), 'ingest spooled nothing itself');

    // Agenta's hard delete of a trace: tombstones, gone from reads
    await gw.query('DELETE FROM spans WHERE project_id = $1 AND trace_id = $2', [PROJECT_A, traceId(1)]);
    const gone = await until(async () => Object.keys(await chSpans(gw, `trace_id = toUUID('${traceId(1)}')`)).length === 0, 20000, 200);
    assert.ok(gone, 'the deleted trace is gone from ClickHouse reads');
    const tomb = (await gw.ch(`SELECT count(), min(is_deleted), countIf(deleted_at IS NULL) FROM spans FINAL
        WHERE trace_id = toUUID('${traceId(1)}')`)).trim().split('\t').map(Number);
    assert.deepEqual(tomb, [3, 1, 0], 'three tombstones with deleted_at');
    assert.equal(await chLive(gw), 7);

    // nodes: inserted, updated, one deleted
    const [n1, n2, tree] = [spanId(9, 1), spanId(9, 2), traceId(9)];
    await withClient(db.uri, async (c) => {
      await c.query(`INSERT INTO nodes (project_id, node_id, tree_id, node_name, data)
          VALUES ($1, $2, $4, 'n1', '{"x": 1}'), ($1, $3, $4, 'n2', '{"x": 2}')`, [PROJECT_A, n1, n2, tree]);
      await c.query(`UPDATE nodes SET data = '{"x": 3}', updated_at = now() WHERE node_id = $1`, [n1]);
      await c.query('DELETE FROM nodes WHERE node_id = $1', [n2]);
    });
    const nodes = await until(async () => {
      const r = JSON.parse(await gw.ch(`SELECT toString(node_id), toString(tree_id), attributes FROM nodes FINAL
          WHERE is_deleted = 0 FORMAT JSONCompact`)).data;
      return r.length === 1 && JSON.parse(r[0][2]).data.x === 3 ? r : null;
    }, 20000, 200);
    assert.ok(nodes, `ClickHouse nodes: ${await gw.ch('SELECT * FROM nodes FORMAT TSV')}`);
    assert.equal(nodes[0][0], n1);
    assert.equal(nodes[0][1], tree);
    const attrs = JSON.parse(nodes[0][2]);
    assert.equal(attrs.node_name, 'n1');
    assert.match(attrs.updated_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$/);
    assert.equal(Number((await gw.ch(`SELECT count() FROM nodes FINAL WHERE is_deleted = 1`)).trim()), 1);

    const v = spawnSync(BIN, ['validate', '-c', gw.conf], { env: gw.env, encoding: 'utf8' });
    assert.equal(v.status, 0, `validate: ${v.stdout}\n${v.stderr}`);
    assert.match(v.stdout, /ClickHouse matches PostgreSQL/);
    const m = (await request(gw, 'GET', '/metrics')).text;
    assert.match(m, /spangate_capture_changes_total\{op="delete"\} 4\n/); // three spans, one node
    assert.match(m, /spangate_capture_changes_total\{op="update"\} [3-9]\n/);
    assert.match(m, /spangate_capture_state 2\n/);
    // the slot holds back more than capture_max_retained_wal: warned, with the way out
    // (1 byte: an idle slot's restart_lsn can come within 1 KiB of the
    // server's position, so a larger limit is not always passed)
    assert.ok(await until(() => new RegExp(`replication slot '${db.name}' holds back [0-9.]+ MiB of WAL .*` +
      `SELECT pg_drop_replication_slot\\('${db.name}'\\)`).test(gw.log), 10000), gw.log);
    assert.deepEqual(gw.errorLines(), []);
    // a clean stop: capture's thread, loop, sinks and connections closed (no sanitizer report)
    assert.deepEqual(await gw.stop(), { code: 0, signal: null }, gw.log);
    assert.doesNotMatch(gw.log, /Sanitizer|runtime error/);
  } finally { await gw.stop(); }
});

// Inserts `txns` transactions (one multi-row INSERT each) of `per` spans, from trace number `from` on.
async function writeTraces(uri, from, txns, per, pauseMs = 0) {
  const head = INSERT.slice(0, INSERT.indexOf('VALUES'));
  await withClient(uri, async (c) => {
    for (let t = from; t < from + txns; t++) {
      const params = [], values = [];
      for (let s = 0; s < per; s++) {
        const p = spanParams(t, s);
        values.push(`(${p.map((_, i) => `$${params.length + i + 1}`).join(', ')})`);
        params.push(...p);
      }
      await c.query(`${head} VALUES ${values.join(', ')}`, params);
      if (pauseMs) await sleep(pauseMs);
    }
  });
}

async function caughtUp(gw, ms = 30000) {
  const want = await pgCount(gw);
  const got = await until(async () => (await chLive(gw)) === want, ms, 200);
  assert.ok(got, `ClickHouse has ${await chLive(gw)} live spans, PostgreSQL ${want}`);
  const uniq = Number((await gw.ch('SELECT uniqExact(span_id) FROM spans')).trim());
  assert.equal(uniq, want, 'nothing doubled (one span id per span)');
  return want;
}

// Captured rows go out every capture_flush_interval_ms, whatever the ingest
// spools' flush_interval_ms: nothing else asks for them, and their WAL is
// held until ClickHouse has them. With the ingest's minute, a trickle of
// captured rows would wait half of it (the idle rule's least age).
test('captured rows are sent every capture_flush_interval_ms, not the ingest spools\' interval', async () => {
  const db = await captureDb();
  const gw = await startGateway({ db, clickhouse: true, flushMs: 60000, captureFlushMs: 300, conf: captureConf(db) });
  try {
    await waitState(gw, 'streaming');
    await withClient(db.uri, (c) => c.query(INSERT, spanParams(7001, 0)));
    const t0 = Date.now();
    const ok = await until(async () => (await chLive(gw)) === 1, 10000, 50);
    assert.ok(ok, `the captured span did not reach ClickHouse within 10 s (flush_interval_ms is 60 s)\n${gw.log}`);
    console.log(`# captured span in ClickHouse after ${Date.now() - t0} ms`);
    assert.deepEqual(gw.errorLines(), []);
  } finally { await gw.stop(); }
});

test('kill -9 of the gateway mid-stream, then a restart: nothing missing, nothing doubled', async () => {
  const db = await captureDb();
  const gw = await startGateway({ db, clickhouse: true, conf: captureConf(db) });
  try {
    await waitState(gw, 'streaming');
    const writer = writeTraces(db.uri, 0, 150, 8, 5);
    await until(async () => (await chLive(gw)) >= 200, 20000, 50);
    await gw.kill();
    const chAtKill = await chLive(gw);
    assert.ok(chAtKill < 1200, 'killed while the writer was still writing');
    const pgAtKill = await pgCount(gw);
    // the writer goes on while no gateway follows the slot
    assert.ok(await until(async () => (await pgCount(gw)) >= pgAtKill + 80, 20000, 20), 'writes while down');
    await gw.start();
    await writer;
    const n = await caughtUp(gw);
    assert.equal(n, 1200);
    const raw = Number((await gw.ch('SELECT count() FROM spans')).trim());
    console.log(`# killed with ${chAtKill} spans in ClickHouse; ${raw} rows inserted for ${n} spans (replayed: ${raw - n})`);
    assert.deepEqual(gw.errorLines(), []);
  } finally { await gw.stop(); }
});

test('ClickHouse down: nothing is confirmed past what it holds, a full spool pauses reading, a kill -9 meanwhile loses nothing; back up, it catches up', async () => {
  const db = await captureDb();
  // a spool that the outage fills: reading pauses, the slot keeps the rest
  const gw = await startGateway({ db, clickhouse: true, conf: captureConf(db, ['spool_max_bytes = "48KiB"']) });
  let chDown = false;
  try {
    await waitState(gw, 'streaming');
    await writeTraces(db.uri, 0, 5, 10);
    await caughtUp(gw);
    chctl('stop', CH_DIR);
    chDown = true;
    await writeTraces(db.uri, 5, 20, 10);
    const written = (await gw.query('SELECT pg_current_wal_lsn()::text AS l'))[0].l;
    // the rows are read and spooled, but not confirmed: the slot keeps them
    await until(async () => (await readyz(gw)).capture.lag_seconds > 0.5, 10000, 100);
    const slot = (await gw.query(`SELECT confirmed_flush_lsn::text AS c, pg_wal_lsn_diff($2::pg_lsn, confirmed_flush_lsn)::int8 AS behind
        FROM pg_replication_slots WHERE slot_name = $1`, [db.name, written]))[0];
    assert.ok(Number(slot.behind) > 0, `the slot confirmed ${slot.c}, past ${written}, while ClickHouse was down`);
    await gw.kill(); // the spooled rows are not in ClickHouse: the slot sends them again
    await gw.start();
    await writeTraces(db.uri, 25, 5, 10);
    chctl('start', CH_DIR, CH_PORT, CH_TCP);
    chDown = false;
    assert.equal(await caughtUp(gw, 60000), 300);
    assert.match(gw.log, /discarded \d+ records/);
    assert.match(gw.log, /the capture spool is full \(spool_max_bytes\): reading paused/);
    assert.match(gw.log, /the capture spool has room again: reading resumes/);
    await until(async () => (await gw.query(`SELECT pg_wal_lsn_diff(confirmed_flush_lsn, $2::pg_lsn)::int8 AS d
        FROM pg_replication_slots WHERE slot_name = $1`, [db.name, written]))[0].d >= 0, 20000, 200);
  } finally {
    if (chDown) chctl('start', CH_DIR, CH_PORT, CH_TCP);
    await gw.stop();
  }
});

test('two gateways: one follows the slot, the other stands by and takes over after a kill -9', async () => {
  const db = await captureDb();
  const a = await startGateway({ db, clickhouse: true, conf: captureConf(db) });
  let b;
  try {
    await waitState(a, 'streaming');
    b = await startGateway({ db, clickhouse: true, conf: captureConf(db), skipSchema: true });
    await waitState(b, 'standby');
    assert.match(b.log, /standing by: .*slot .* is active for PID/);
    await writeTraces(db.uri, 0, 5, 10);
    await caughtUp(a);
    assert.equal((await readyz(b)).capture.state, 'standby', 'the standby did not take the slot');
    await a.kill();
    await writeTraces(db.uri, 5, 5, 10);
    await waitState(b, 'streaming', 20000);
    assert.equal(await caughtUp(b), 100);
    assert.deepEqual(b.errorLines(), []);
  } finally {
    await a.stop();
    if (b) await b.stop();
  }
});

test('a role without REPLICATION: the gateway refuses to start and says how to grant it', async () => {
  const db = await captureDb();
  const role = `${db.name}_norep`;
  await pgQuery(PG_URI, `CREATE ROLE ${role} LOGIN`);
  const uri = db.uri.replace('postgres@', `${role}@`);
  after(() => pgQuery(PG_URI, `DROP ROLE IF EXISTS ${role}`));
  await assert.rejects(startGateway({ db: { ...db, uri }, clickhouse: true, conf: captureConf(db), skipSchema: true }),
    (e) => {
      assert.match(e.message, /gateway exited at start-up: \{"code":[1-9]/);
      assert.match(e.message, new RegExp(`ALTER ROLE ${role} REPLICATION`));
      return true;
    });
});

test('wal_level is not logical: the gateway refuses to start and names the fix', async () => {
  // a cluster of its own (the shared one must stay logical): initdb, then wal_level = replica
  const dir = mkdtempSync(join(tmpdir(), 'sg-pg-replica-'));
  chmodSync(dir, 0o755); // as root the cluster runs as user postgres, who must reach it
  const port = await freePort();
  const pgctl = (...a) => execFileSync(`${ROOT}/scripts/pgctl.sh`, a, { stdio: 'pipe' });
  try {
    pgctl('start', dir, String(port));
    const uri = `postgresql://postgres@127.0.0.1:${port}/postgres`;
    await pgQuery(uri, 'ALTER SYSTEM SET wal_level = replica');
    pgctl('stop', dir);
    pgctl('start', dir, String(port));
    assert.equal((await pgQuery(uri, 'SHOW wal_level'))[0].wal_level, 'replica');
    await assert.rejects(startGateway({ db: { name: 'postgres', uri }, clickhouse: true, skipSchema: true,
      chdb: 'sg_unused', conf: ['clickhouse_writes = "capture"'] }),
      (e) => {
        assert.match(e.message, /wal_level = replica; change capture needs logical: ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL/);
        return true;
      });
  } finally {
    try { pgctl('stop', dir); } catch { /* never started */ }
    rmSync(dir, { recursive: true, force: true });
  }
});
