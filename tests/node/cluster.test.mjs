// A ClickHouse cluster on loopback (ZooKeeper, 2 shards x 2 replicas of 18.16,
// scripts/chcluster.sh): spans table made by hand ON CLUSTER (spangate's own
// 18.16 columns, ReplicatedReplacingMergeTree behind a Distributed table), the
// gateway writing through all four endpoints, one server killed mid-load:
// every acknowledged span is in the Distributed table exactly once; and a
// re-sent identical insert is dropped by the replicated table whichever
// endpoint it goes through.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster, startGateway, createDatabase, postJson, request, until, hex, BIN } from './lib/harness.mjs';

let cl;
before(async () => { cl = await startCluster(); });
after(() => cl?.stop());
// A failing test shows what the servers said.
afterEach((t) => { if (cl && !t.passed) t.diagnostic(cl.errorLogs()); });

// spangate's spans table for 18.16, made replicated per shard, and a
// Distributed table of the same name in front, sharded by trace.
function clusterDdl(db, c) {
  const ddl = execFileSync(BIN, ['schema', '--print', '--clickhouse-version', '18.16']).toString();
  const m = ddl.match(/CREATE TABLE IF NOT EXISTS `[^`]+`\.spans\s*\(([\s\S]*?)\n\)\s*ENGINE = ReplacingMergeTree\(version\)([^;]*);/);
  assert.ok(m, `no spans table in spangate's 18.16 DDL:\n${ddl}`);
  return [
    `CREATE DATABASE IF NOT EXISTS ${db} ON CLUSTER ${c}`,
    `CREATE TABLE ${db}.spans_local ON CLUSTER ${c} (${m[1]}\n) ENGINE = ReplicatedReplacingMergeTree(` +
      `'/clickhouse/tables/{shard}/${db}/spans_local', '{replica}', version)${m[2]}`,
    `CREATE TABLE ${db}.spans ON CLUSTER ${c} AS ${db}.spans_local ` +
      `ENGINE = Distributed(${c}, ${db}, spans_local, cityHash64(toString(trace_id)))`, // 18.16 hashes no UUID
  ];
}

const num = async (p) => Number((await p).trim());
// ON CLUSTER waits for every server; fail in 60 s rather than 18.16's 180.
const DDL = { distributed_ddl_task_timeout: 60 };

function spans(n) {
  return Array.from({ length: n }, () => ({
    trace_id: hex(32), span_id: hex(16), span_name: 'cl', start_time: 1714979289123456, end_time: 1714979289654321,
  }));
}

test('several endpoints, one killed mid-load: every span once in the Distributed table', async (t) => {
  t.diagnostic(`cluster start-up: ${cl.ms} ms`);
  const db = await createDatabase();
  for (const sql of clusterDdl(db.name, cl.name)) await cl.query(0, sql, undefined, DDL);
  const hosts = cl.endpoints.map((e) => `"${e}"`).join(', ');
  const gw = await startGateway({
    db, clickhouse: true, chSchema: false, flushMs: 50,
    conf: [`clickhouse_hosts = {${hosts}}`, 'clickhouse_timeout_ms = 3000'],
  });
  const victim = 1; // n2: replica 2 of shard 1
  let killed = false;
  try {
    const acked = new Set();
    const send = async (n) => {
      const batch = spans(n);
      const r = await postJson(gw, '/v1/spans', { spans: batch });
      assert.equal(r.status, 200, r.text);
      for (const s of batch) acked.add(s.span_id);
    };
    for (let i = 0; i < 10; i++) await Promise.all([send(20), send(20)]);
    cl.kill(victim);
    killed = true;
    for (let i = 0; i < 10; i++) await Promise.all([send(20), send(20)]);
    // The gateway found the dead endpoint, marked it down and carried on elsewhere.
    const deadName = cl.endpoints[victim];
    const seen = await until(async () => {
      const ready = (await request(gw, 'GET', '/readyz')).json();
      const ep = ready.clickhouse.endpoints.find((e) => e.endpoint === deadName);
      if (ep && !ep.up && ep.failures > 0) return ep;
      await send(5);
      return null;
    }, 20000, 50);
    assert.ok(seen, `readyz never showed ${deadName} down`);
    const metrics = (await request(gw, 'GET', '/metrics')).text;
    const failed = metrics.match(new RegExp(`spangate_clickhouse_endpoint_failures_total\\{endpoint="${deadName}"\\} (\\d+)`));
    assert.ok(failed && Number(failed[1]) > 0, metrics);
    // Back up once ZooKeeper dropped the dead server's session (18.16 retries a
    // replica that still looks active only every 10 s); its Distributed queue
    // and replication catch up.
    const active = `/clickhouse/tables/${cl.nodes[victim].shard}/${db.name}/spans_local/replicas/${cl.nodes[victim].replica}`;
    assert.ok(await until(async () => (await num(cl.query(0,
      `SELECT count() FROM system.zookeeper WHERE path = '${active}' AND name = 'is_active'`))) === 0, 30000, 200));
    const tRestart = Date.now();
    cl.startNode(victim);
    killed = false;
    const n = acked.size;
    // Both replicas of each shard hold the same rows, and together every span.
    const local = (i) => num(cl.query(i, `SELECT count() FROM ${db.name}.spans_local FINAL`));
    const agreed = await until(async () => {
      const c = await Promise.all(cl.nodes.map((_, i) => local(i).catch(() => -1)));
      return c[0] === c[1] && c[2] === c[3] && c[0] + c[2] === n ? c : null;
    }, 60000, 200);
    assert.ok(agreed, `replicas never agreed on ${n} spans`);
    t.diagnostic(`restart to all replicas agreeing: ${Date.now() - tRestart} ms`);
    const dist = `${db.name}.spans`;
    assert.equal(await num(cl.query(2, `SELECT count() FROM ${dist} FINAL`)), n);
    assert.equal(await num(cl.query(2, `SELECT uniqExact(span_id) FROM ${dist}`)), n);
    const ids = (await cl.query(0, `SELECT toString(span_id) FROM ${dist} FINAL`)).trim().split('\n');
    assert.equal(new Set(ids).size, n);
    // A trace stays on one shard: no trace_id in both.
    const traces = async (i) => new Set((await cl.query(i, `SELECT DISTINCT toString(trace_id) FROM ${db.name}.spans_local`)).trim().split('\n'));
    const [s1, s2] = [await traces(0), await traces(2)];
    assert.ok(s1.size > 0 && s2.size > 0);
    assert.equal([...s1].filter((x) => s2.has(x)).length, 0);
    // The gateway's inserts were synchronous: no server queued blocks for
    // later (an 18.16 queue loses a block to broken/ when the replica it is
    // being sent to dies).
    const queued = cl.nodes.flatMap((nd) => {
      const d = join(nd.dir, 'data', 'data', db.name, 'spans');
      return existsSync(d) ? readdirSync(d).map((q) => `${nd.name}: ${q}`) : [];
    });
    assert.deepEqual(queued, []);
    const raw = await num(cl.query(0, `SELECT count() FROM ${dist}`));
    t.diagnostic(`${n} spans acknowledged; Distributed: count() FINAL ${n}, count() ${raw}`);
    // Nothing left in the spool.
    let final = '';
    assert.ok(await until(async () => /\nspangate_spool_records 0\n/.test(final = (await request(gw, 'GET', '/metrics')).text)));
    const per = cl.endpoints.map((e) => {
      const m = final.match(new RegExp(`spangate_clickhouse_endpoint_requests_total\\{endpoint="${e}"\\} (\\d+)`));
      const f = final.match(new RegExp(`spangate_clickhouse_endpoint_failures_total\\{endpoint="${e}"\\} (\\d+)`));
      return `${e} ${m ? m[1] : '?'} requests, ${f ? f[1] : '?'} failed`;
    });
    t.diagnostic(`inserts per endpoint: ${per.join('; ')}; ${final.match(/spangate_clickhouse_failovers_total (\d+)/)?.[1]} failovers`);
    assert.deepEqual(gw.errorLines(), []);
  } finally {
    await gw.stop();
    if (killed) cl.startNode(victim);
  }
});

test('a re-sent identical insert is dropped by the replicated table, through any endpoint', async (t) => {
  const db = (await createDatabase()).name;
  // Plain ReplicatedMergeTree: no merge folds duplicates away, so count() is
  // what the inserts left.
  const ddl = clusterDdl(db, cl.name).map((s) => s.replace('ReplicatedReplacingMergeTree(', 'ReplicatedMergeTree(')
    .replace(/, version\)/, ')'));
  for (const sql of ddl) await cl.query(0, sql, undefined, DDL);
  // A segment's rows as spangate encodes them, from a gateway on the single server.
  const gw = await startGateway({ clickhouse: true });
  let body;
  try {
    assert.equal((await postJson(gw, '/v1/spans', { spans: spans(300) })).status, 200);
    assert.ok(await until(async () => (await num(gw.ch('SELECT count() FROM spans'))) === 300));
    body = await gw.ch('SELECT * FROM spans ORDER BY trace_id, span_id FORMAT TabSeparated');
  } finally { await gw.stop(); }
  // Synchronous Distributed inserts: each has reached the shards when it returns.
  const insert = (i, settings = {}) => cl.query(i, `INSERT INTO ${db}.spans FORMAT TabSeparated\n${body}`, undefined,
    { insert_distributed_sync: 1, ...settings });
  // internal_replication: an insert reaches one replica per shard, the other
  // fetches it; count once every replica has.
  const count = async () => {
    await Promise.all(cl.nodes.map((_, i) => cl.query(i, `SYSTEM SYNC REPLICA ${db}.spans_local`)));
    return num(cl.query(0, `SELECT count() FROM ${db}.spans`));
  };
  const perNode = async () => (await Promise.all(cl.nodes.map((_, i) =>
    cl.query(i, `SELECT count() FROM ${db}.spans_local`)))).map((x) => x.trim()).join(' ');
  await insert(0);
  assert.equal(await count(), 300, `per node: ${await perNode()}`);
  // The same body again, through the same node and through each other one, as
  // a retry that failed over would send it.
  for (const i of [0, 1, 2, 3]) await insert(i);
  const again = await count();
  t.diagnostic(`300 rows inserted, then the same body 4 times more through 4 endpoints: count() ${again}`);
  assert.equal(again, 300, `per node: ${await perNode()}`);
  // The control: with deduplication off the same body does double.
  await insert(2, { insert_deduplicate: 0 });
  assert.equal(await count(), 600);
});
