// spangate on a ClickHouse cluster: ZooKeeper and 2 shards x 2 replicas of
// 18.16 on loopback (scripts/chcluster.sh), one cluster shared by the tests of
// this file.
//
// - The gateway makes its own cluster schema at start (ON CLUSTER: replicated
//   local tables, Distributed tables in front, the analytics view) and writes
//   through all four servers under load while one replica of each shard is
//   killed: every acknowledged span is in the Distributed table exactly once,
//   a trace on one shard, the replicas agree; analytics read from ClickHouse
//   equal PostgreSQL's, the rows equal PostgreSQL's field by field, and
//   `spangate validate` passes. `schema --apply` while the two servers are
//   down does its work on the others and leaves it queued for them.
// - The jobs on the cluster: schema --apply, migrate and validate; ttl apply
//   re-writes expires_at on every replica; the gateway's TTL sweep (18.16
//   has no TTL) deletes expired rows from every replica; migrate copies
//   them again, the same bytes as its first insert, and they are stored.
// - A re-sent identical insert is dropped by the replicated table whichever
//   endpoint it goes through.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  startCluster, startGateway, createDatabase, postJson, request, until, BIN, ROOT, KEY_A, KEY_B, PROJECT_A,
  PROJECT_B,
} from './lib/harness.mjs';

let cl;
before(async () => { cl = await startCluster(); });
after(() => cl?.stop());
// A failing test shows what the servers said.
afterEach((t) => { if (cl && !t.passed) t.diagnostic(cl.errorLogs()); });

const num = async (p) => Number((await p).trim());
// ON CLUSTER waits for every server; fail in 60 s rather than 18.16's 180.
const DDL = { distributed_ddl_task_timeout: 60 };

// A seeded generator (mulberry32): a failure can be replayed with SG_TEST_SEED.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const SEED = Number(process.env.SG_TEST_SEED || Date.now() % 1e9);
const rand = rng(SEED);
const rhex = (n) => Array.from({ length: n }, () => Math.floor(rand() * 16).toString(16)).join('');

// Spans of whole traces (5 spans each), started in the last hour, with
// varied types, kinds, names, statuses and µs durations.
const TYPES = ['llm', 'tool', 'workflow', 'chain'];
const KINDS = ['SPAN_KIND_SERVER', 'SPAN_KIND_CLIENT', 'SPAN_KIND_INTERNAL'];
function traces(n, t0) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const trace = rhex(32), root = rhex(16);
    for (let j = 0; j < 5; j++) {
      const start = t0 - Math.floor(rand() * 3600e6);
      out.push({
        trace_id: trace, span_id: j ? rhex(16) : root, parent_id: j ? root : undefined,
        span_name: `op ${Math.floor(rand() * 3)}`, span_type: TYPES[Math.floor(rand() * TYPES.length)],
        span_kind: KINDS[Math.floor(rand() * KINDS.length)],
        status_code: rand() < 0.2 ? 'STATUS_CODE_ERROR' : 'STATUS_CODE_OK',
        start_time: start, end_time: start + Math.floor(rand() * 5e6),
        attributes: { n: i, s: `ü ${j}` },
      });
    }
  }
  return out;
}

// Runs spangate; resolves {code, out, err, ms}.
function spangate(args) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    proc.stdout.on('data', (d) => { out += d; });
    proc.stderr.on('data', (d) => { err += d; if (process.env.SG_TEST_VERBOSE) process.stderr.write(d); });
    proc.on('exit', (code) => resolve({ code, out, err, ms: Date.now() - t0 }));
  });
}

// The cluster keys of a gateway writing through all four servers.
const clusterConf = () => [
  `clickhouse_hosts = {${cl.endpoints.map((e) => `"${e}"`).join(', ')}}`,
  `clickhouse_cluster = "${cl.name}"`,
];

// Each server: count() FINAL of the database's spans_local (-1 when it does
// not answer).
const localCounts = (db, where = '') => Promise.all(cl.nodes.map((_, i) =>
  num(cl.query(i, `SELECT count() FROM ${db}.spans_local FINAL ${where}`)).catch(() => -1)));

// Waits until both replicas of each shard hold the same rows, n in all.
async function replicasAgree(db, n, where = '') {
  let c;
  const ok = await until(async () => {
    c = await localCounts(db, where);
    return c[0] === c[1] && c[2] === c[3] && c[0] + c[2] === n;
  }, 60000, 200);
  assert.ok(ok, `replicas never agreed on ${n} spans: ${c}`);
  return c;
}

// Every replica has fetched what the others took (replicas catch up
// asynchronously: a read through a Distributed table may see a replica that
// has not yet fetched the last insert).
const syncReplicas = (db, table = 'spans_local') =>
  Promise.all(cl.nodes.map((_, i) => cl.query(i, `SYSTEM SYNC REPLICA ${db}.${table}`)));

// Starts the killed servers again, together, once ZooKeeper dropped their
// sessions (18.16 retries a replica that still looks active only every
// 10 s). The other replicas' fetches from them failed meanwhile, and 18.16
// tries a failed fetch again only some 10 s later: once the servers are
// active again, their queues are woken (stopping and starting fetches wakes
// a replicated table's queue).
async function restart(db, killed) {
  const activeNode = (i, tb) => `/clickhouse/tables/${cl.nodes[i].shard}/${db}/${tb}/replicas/${cl.nodes[i].replica}`;
  const isActive = async (i, tb) => (await num(cl.query(i % 2 ? i - 1 : i + 1, // its shard's other replica
    `SELECT count() FROM system.zookeeper WHERE path = '${activeNode(i, tb)}' AND name = 'is_active'`))) === 1;
  await Promise.all(killed.map(async (i) =>
    assert.ok(await until(async () => !(await isActive(i, 'spans_local')), 30000, 100), `${cl.nodes[i].name} looks active`)));
  await cl.startNodes(killed);
  const tables = ['spans_local', 'spans_analytics_local'];
  for (const i of killed)
    for (const tb of tables) assert.ok(await until(() => isActive(i, tb), 30000, 100), `${cl.nodes[i].name} ${tb} inactive`);
  for (let i = 0; i < cl.nodes.length; i++) {
    if (killed.includes(i)) continue;
    for (const tb of tables)
      for (const verb of ['STOP', 'START']) await cl.query(i, `SYSTEM ${verb} FETCHES ${db}.${tb}`);
  }
}

// spangate_clickhouse_endpoint_<what>_total of endpoint e in a /metrics
// text; undefined when absent.
const endpointCounter = (metrics, what, e) => {
  const m = metrics.match(new RegExp(`spangate_clickhouse_endpoint_${what}_total\\{endpoint="${e}"\\} (\\d+)`));
  return m ? Number(m[1]) : undefined;
};

// spangate's tables on every server of the cluster, with their engines.
const TABLES = ['nodes\tDistributed', 'nodes_local\tReplicatedReplacingMergeTree', 'spans\tDistributed',
  'spans_analytics\tDistributed', 'spans_analytics_deleted\tDistributed',
  'spans_analytics_deleted_local\tReplicatedAggregatingMergeTree', 'spans_analytics_deleted_mv\tMaterializedView',
  'spans_analytics_local\tReplicatedAggregatingMergeTree', 'spans_analytics_mv\tMaterializedView',
  'spans_by_start\tDistributed', 'spans_by_start_local\tReplicatedReplacingMergeTree', 'spans_by_start_mv\tMaterializedView',
  'spans_by_trace\tDistributed', 'spans_by_trace_local\tReplicatedReplacingMergeTree', 'spans_by_trace_mv\tMaterializedView',
  'spans_local\tReplicatedReplacingMergeTree'];

// Analytics buckets of gateway g; their sum of counts.
async function analytics(g, qs) {
  const r = await request(g, 'GET', `/v1/analytics/spans?${qs}`, undefined, { authorization: `ApiKey ${KEY_A}` });
  assert.equal(r.status, 200, r.text);
  return { ...r.json(), fallback: r.headers['x-spangate-read-fallback'] };
}

test('the gateway makes the cluster schema and writes under load while a replica of each shard dies: every span once, reads agree with PostgreSQL, validate passes', async (t) => {
  t.diagnostic(`cluster start-up: ${cl.ms} ms; seed ${SEED} (SG_TEST_SEED)`);
  const db = await createDatabase();
  // chSchema false: `schema --apply` makes PostgreSQL's tables only; the
  // gateway makes ClickHouse's at start, ON CLUSTER.
  const gw = await startGateway({
    db, clickhouse: true, chSchema: false, flushMs: 50, workers: 2,
    conf: [...clusterConf(), 'clickhouse_timeout_ms = 5000', 'read_backend = "clickhouse"'],
  });
  const killed = new Set();
  let gwPg;
  try {
    for (const what of ['create table `' + db.name + '`.spans_local', 'create table `' + db.name + '`.spans (Distributed)',
      'create materialized view `' + db.name + '`.spans_analytics_mv'])
      assert.ok(gw.log.includes(`schema: ${what}`), `the gateway's log says "${what}":\n${gw.log}`);
    for (let i = 0; i < cl.nodes.length; i++) {
      const tables = (await cl.query(i, `SELECT name, engine FROM system.tables WHERE database = '${db.name}' ORDER BY name`)).trim();
      assert.equal(tables, TABLES.join('\n'), cl.nodes[i].name);
    }

    // Load: 4 clients posting 4 traces (20 spans) at a time; server n2
    // (replica 2 of shard 1) is killed after 400 acknowledged spans, n3
    // (replica 1 of shard 2) after 800, both while requests and inserts are
    // in flight; the load goes on to 1200, and after each kill until an
    // insert sent to the dead server failed (400 spans are a handful of
    // inserts over four endpoints: none of them may have picked it).
    const now = Date.now() * 1000;
    const acked = new Map();
    let stop = false, posted = 0;
    const client = async () => {
      while (!stop) {
        const batch = traces(4, now);
        posted += batch.length;
        const r = await postJson(gw, '/v1/spans', { spans: batch });
        assert.equal(r.status, 200, r.text);
        for (const s of batch) acked.set(s.span_id, s);
      }
    };
    const clients = Promise.all([client(), client(), client(), client()]);
    const at = (n) => until(() => acked.size >= n, 60000, 5);
    const noticed = async (i) => {
      let m = '';
      assert.ok(await until(async () =>
        (endpointCounter(m = (await request(gw, 'GET', '/metrics')).text, 'failures', cl.endpoints[i]) ?? 0) > 0, 60000, 100),
        `${cl.endpoints[i]} was killed and never failed:\n${m}`);
    };
    try {
      assert.ok(await at(400));
      cl.kill(1);
      killed.add(1);
      assert.ok(await at(800));
      await noticed(1);
      cl.kill(2);
      killed.add(2);
      assert.ok(await at(1200));
      await noticed(2);
    } finally {
      stop = true;
      await clients;
    }
    const n = acked.size;
    t.diagnostic(`${n} spans acknowledged (${posted} posted) by ${cl.endpoints.length} endpoints, 2 of them killed mid-load`);

    // The dead endpoints were noticed, and nothing waits in the spool.
    let metrics = '';
    // (ClickHouse took every row, and the metrics, published every 0.5 s,
    // say so)
    const delivered = () => /\nspangate_spool_records 0\n/.test(metrics) &&
      Number(metrics.match(/\nspangate_clickhouse_rows_total (\d+)/)?.[1]) >= n;
    assert.ok(await until(async () => {
      metrics = (await request(gw, 'GET', '/metrics')).text;
      return delivered();
    }, 30000),
      `the spool never emptied:\n${metrics}`);
    const per = cl.endpoints.map((e) =>
      `${e} ${endpointCounter(metrics, 'requests', e)} requests, ${endpointCounter(metrics, 'failures', e)} failed`);
    t.diagnostic(`inserts per endpoint: ${per.join('; ')}; ${metrics.match(/spangate_clickhouse_failovers_total (\d+)/)?.[1]} failovers`);

    // A schema made while the two servers are down: `schema --apply` (of
    // another database) runs each statement on the servers that are up,
    // and leaves it queued for the others.
    const other = `${db.name}_x`;
    const conf2 = `${gw.conf}.other`;
    writeFileSync(conf2, `${readFileSync(gw.conf)}clickhouse_database = "${other}"\nclickhouse_timeout_ms = 2000\n`);
    const apply = await spangate(['schema', '--apply', '-c', conf2]);
    assert.equal(apply.code, 0, apply.out + apply.err);
    assert.match(apply.out, /create database `[^`]+`: done on the servers that are up; 2 did not answer within 2 s/, apply.out);
    assert.match(apply.out, /create materialized view `[^`]+`\.spans_analytics_mv .*\(queued ON CLUSTER: 2 servers are down\)/, apply.out);
    const tables = (i) => num(cl.query(i, `SELECT count() FROM system.tables WHERE database = '${other}'`));
    for (const i of [0, 3]) assert.equal(await tables(i), TABLES.length, cl.nodes[i].name);
    t.diagnostic(`schema --apply with 2 of 4 servers down: ${apply.ms} ms`);

    // The killed servers back: both replicas of each shard agree.
    const tRestart = Date.now();
    await restart(db.name, [...killed]);
    killed.clear();
    await replicasAgree(db.name, n);
    t.diagnostic(`restart to all replicas agreeing: ${Date.now() - tRestart} ms`);
    // Every span is in the Distributed table once.
    const dist = `${db.name}.spans`;
    assert.equal(await num(cl.query(0, `SELECT count() FROM ${dist} FINAL`)), n);
    assert.equal(await num(cl.query(3, `SELECT uniqExact(span_id) FROM ${dist}`)), n);
    const ids = (await cl.query(1, `SELECT toString(span_id) FROM ${dist} FINAL`)).trim().split('\n');
    assert.equal(ids.length, n);
    assert.equal(new Set(ids).size, n);
    // A trace lives on one shard.
    const shardTraces = async (i) => new Set((await cl.query(i, `SELECT DISTINCT toString(trace_id) FROM ${db.name}.spans_local`)).trim().split('\n'));
    const [s1, s2] = [await shardTraces(0), await shardTraces(2)];
    assert.ok(s1.size > 0 && s2.size > 0 && s1.size + s2.size === n / 5, `${s1.size} + ${s2.size} traces`);
    assert.equal([...s1].filter((x) => s2.has(x)).length, 0);
    assert.deepEqual(queuedBlocks(db.name), [], 'the dual-write inserted synchronously');

    // The rows equal PostgreSQL's, field by field (those the read API and
    // the analytics use).
    const pgRows = await gw.query(`SELECT trace_id::text AS t, span_id::text AS s, coalesce(parent_id::text, '') AS p,
        span_name AS name, span_type::text AS type, span_kind::text AS kind, status_code::text AS status,
        (extract(epoch FROM start_time) * 1e6)::int8::text AS st, (extract(epoch FROM end_time) * 1e6)::int8::text AS et,
        (extract(epoch FROM created_at) * 1e6)::int8::text AS ct, attributes::text AS a FROM spans`);
    const chRows = JSON.parse(await cl.query(2, `SELECT toString(trace_id) AS t, toString(span_id) AS s,
        ifNull(toString(parent_id), '') AS p, toString(span_name) AS name, lower(toString(span_type)) AS type,
        toString(span_kind) AS kind, toString(status_code) AS status,
        toString(toUInt64(start_time) * 1000000 + start_time_us) AS st, toString(toUInt64(end_time) * 1000000 + end_time_us) AS et,
        toString(toUInt64(created_at) * 1000000 + created_at_us) AS ct, attributes AS a
        FROM ${dist} FINAL FORMAT JSON`)).data;
    assert.equal(pgRows.length, n);
    const key = (r) => `${r.t}/${r.s}`;
    const chBy = new Map(chRows.map((r) => [key(r), r]));
    for (const p of pgRows) {
      const c = chBy.get(key(p));
      assert.ok(c, `span ${key(p)} is not in ClickHouse`);
      const pj = JSON.parse(p.a);
      assert.deepEqual({ ...c, a: JSON.parse(c.a), type: c.type.toLowerCase() },
        { ...p, a: pj, type: p.type.toLowerCase() });
    }

    // Analytics from ClickHouse (the gateway reads the Distributed
    // spans_analytics) equal PostgreSQL's (a gateway on the same database
    // without ClickHouse).
    await syncReplicas(db.name, 'spans_analytics_local'); // the restarted replicas caught up here too
    // They ran the statements queued for them meanwhile.
    for (const i of [1, 2]) assert.ok(await until(async () => (await tables(i)) === TABLES.length, 20000), `${cl.nodes[i].name} has ${other}`);
    gwPg = await startGateway({ db, skipSchema: true });
    const from = Math.floor(now / 1e6) - 7200, to = Math.floor(now / 1e6) + 120;
    for (const qs of [`from=${from}&to=${to}&bucket=10m`, `from=${from}&to=${to}&bucket=1h&group_by=span_type,span_kind,span_name`]) {
      const c = await analytics(gw, qs), p = await analytics(gwPg, qs);
      assert.equal(c.backend, 'clickhouse', `${qs}: PostgreSQL answered: ${c.fallback}\n${gw.log.split('\n').filter((l) => / read: /.test(l)).join('\n')}`);
      assert.equal(p.backend, 'postgres');
      assert.equal(p.buckets.reduce((a, b) => a + b.count, 0), n, qs);
      assert.equal(c.buckets.length, p.buckets.length, qs);
      p.buckets.forEach((x, i) => {
        const y = c.buckets[i];
        assert.deepEqual([y.timestamp, y.group, y.count, y.errors], [x.timestamp, x.group, x.count, x.errors], qs);
        for (const k of ['p50', 'p95', 'p99'])
          assert.ok(Math.abs(y.duration_ms[k] - x.duration_ms[k]) <= 0.0011, `${qs} ${x.timestamp} ${k}: ${x.duration_ms[k]} vs ${y.duration_ms[k]}`);
      });
    }

    const v = await spangate(['validate', '-c', gw.conf]);
    assert.equal(v.code, 0, v.out + v.err);
    assert.match(v.out, /validate: ClickHouse matches PostgreSQL/);
    t.diagnostic(`validate on the cluster: ${v.ms} ms`);
    assert.deepEqual(gw.errorLines(), []);
    // A replica dying under a Distributed insert is no fault of the rows
    // (18.16 answers code 32, "Attempt to read after eof ... Insertion
    // status"): the batch is retried whole, never taken apart as rejected.
    assert.doesNotMatch(gw.log, /rejected a batch/);
  } finally {
    await gw.stop();
    await gwPg?.stop();
    if (killed.size) await cl.startNodes([...killed]);
  }
});

// No server queued blocks of db's Distributed spans table for later: every
// insert was synchronous (an 18.16 queue loses a block to broken/ when the
// replica it is being sent to dies). Lists what is queued.
function queuedBlocks(db) {
  return cl.nodes.flatMap((nd) => {
    const d = join(nd.dir, 'data', 'data', db, 'spans');
    return existsSync(d) ? readdirSync(d).map((q) => `${nd.name}: ${q}`) : [];
  });
}

test('the jobs on a cluster: schema --apply ON CLUSTER, migrate, validate, ttl apply, the TTL sweep, migrate repairing', async (t) => {
  const db = await createDatabase();
  // 2 projects x 60 traces x 5 spans straight into PostgreSQL, created
  // yesterday between 12:00 and 14:00 (one day: one range per project).
  const N = 600;
  const seed = await import('pg').then(({ default: pg }) => pg);
  const c = new seed.Client({ connectionString: db.uri });
  const dir = mkdtempSync(join(tmpdir(), 'sg-cl-jobs-'));
  cpSync(join(ROOT, 'lua'), join(dir, 'lua'), { recursive: true });
  const conf = join(dir, 'gateway.conf');
  writeFileSync(conf, [
    `postgres_uri = "${db.uri}"`, 'use_clickhouse = true', `clickhouse_database = "${db.name}"`,
    ...clusterConf(), `scripts = "${join(dir, 'lua')}"`, `spool_dir = "${join(dir, 'spool')}"`,
    'auth = "keys"', `keys_file = "${join(dir, 'keys')}"`,
    // Project B keeps spans 1.7 s: its rows are written expired.
    `retention_by_project = { ["${PROJECT_B}"] = 0.00002 }`, '',
  ].join('\n'));
  writeFileSync(join(dir, 'keys'), `${PROJECT_A} plain:${KEY_A}\n${PROJECT_B} plain:${KEY_B}\n`);

  // The schema, ON CLUSTER, by `schema --apply`; a second run has nothing to do.
  let r = await spangate(['schema', '--apply', '-c', conf]);
  assert.equal(r.code, 0, r.err + r.out);
  assert.match(r.out, new RegExp(`create table \`${db.name}\`\\.spans_local`));
  r = await spangate(['schema', '--apply', '-c', conf]);
  assert.equal(r.code, 0, r.err + r.out);
  assert.match(r.out, /ClickHouse: nothing was missing/);

  await c.connect();
  try {
    await c.query(`INSERT INTO spans (project_id, created_at, created_by_id, trace_id, span_id, parent_id, span_kind,
        span_name, start_time, end_time, status_code, attributes)
      SELECT (CASE WHEN g % 2 = 0 THEN $1 ELSE $2 END)::uuid, date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '12 hours' + (g % 7200) * interval '1 second' + (g % 999) * interval '1 microsecond',
        '00000000-0000-0000-0000-000000000000', md5('t' || (g / 5))::uuid, md5('s' || g)::uuid,
        CASE WHEN g % 5 = 0 THEN NULL ELSE md5('s' || (g - g % 5))::uuid END, 'SPAN_KIND_SERVER', 'job ' || (g % 4),
        now() - interval '3 hours', now() - interval '3 hours' + (g % 5000) * interval '1 microsecond',
        'STATUS_CODE_OK', jsonb_build_object('g', g, 'u', 'ü')
      FROM generate_series(0, ${N - 1}) g`, [PROJECT_A, PROJECT_B]);
  } finally { await c.end(); }
  const perProject = async () => Object.fromEntries((await cl.query(0,
    `SELECT toString(project_id), count() FROM ${db.name}.spans FINAL GROUP BY project_id`)).trim().split('\n')
    .filter(Boolean).map((l) => l.split('\t')).map(([p, n]) => [p, Number(n)]));

  // migrate copies everything through the Distributed table, synchronously;
  // a project per run, so each project's rows are one insert.
  for (const p of [PROJECT_A, PROJECT_B]) {
    r = await spangate(['migrate', '-c', conf, '--project', p]);
    assert.equal(r.code, 0, r.err + r.out);
  }
  assert.deepEqual(queuedBlocks(db.name), [], 'migrate inserted synchronously');
  await replicasAgree(db.name, N);
  assert.deepEqual(await perProject(), { [PROJECT_A]: N / 2, [PROJECT_B]: N / 2 });
  r = await spangate(['validate', '-c', conf]);
  assert.equal(r.code, 0, r.err + r.out);

  // ttl apply: project A's retention becomes 31 days; its rows are
  // re-written with the new expires_at (on every replica).
  writeFileSync(conf, `retention_by_project = { ["${PROJECT_A}"] = 31, ["${PROJECT_B}"] = 0.00002 }\n`, { flag: 'a' });
  r = await spangate(['ttl', 'apply', '-c', conf]);
  assert.equal(r.code, 0, r.err + r.out);
  assert.match(r.out, new RegExp(`${N / 2} re-written`), r.out);
  assert.deepEqual(queuedBlocks(db.name), [], 'ttl apply inserted synchronously');
  await syncReplicas(db.name);
  const a31 = `project_id = toUUID('${PROJECT_A}') AND toUInt32(expires_at) - toUInt32(created_at) BETWEEN 31 * 86400 AND 31 * 86400 + 1`;
  const c31 = await localCounts(db.name, `WHERE ${a31}`);
  assert.ok(c31[0] === c31[1] && c31[2] === c31[3] && c31[0] + c31[2] === N / 2, `project A's rows with 31 days per server: ${c31}`);

  // The gateway's sweep (18.16 has no TTL) deletes project B's expired rows
  // from every replica, with a mutation of the local tables ON CLUSTER.
  const gw = await startGateway({ db, clickhouse: true, skipSchema: true, conf: [...clusterConf(), 'ttl_sweep_interval_s = 1'] });
  try {
    let counts;
    const swept = await until(async () => {
      counts = await localCounts(db.name, `WHERE project_id = toUUID('${PROJECT_B}')`);
      return counts.every((x) => x === 0);
    }, 30000, 200);
    assert.ok(swept, `project B's rows per server after the sweeps: ${counts}`);
    // (the mutation can be done before the sweep hears it was accepted)
    assert.ok(await until(() => /TTL sweep: deleting 300 expired rows from spans/.test(gw.log)), gw.log);
    await replicasAgree(db.name, N / 2);
    assert.deepEqual(await perProject(), { [PROJECT_A]: N / 2 });
    r = await spangate(['validate', '-c', conf, '--project', PROJECT_A]);
    assert.equal(r.code, 0, r.err + r.out);
    assert.deepEqual(gw.errorLines(), []);
  } finally { await gw.stop(); }

  // Rows ClickHouse lost (here: B's, removed by that mutation) copied again
  // by migrate: the very rows of B's first insert, which a replicated table
  // must not drop as a repeat of it. validate agrees.
  r = await spangate(['migrate', '-c', conf]);
  assert.equal(r.code, 0, r.err + r.out);
  assert.match(r.out, /migrate: 300 spans copied .*; 1 ranges copied, 1 already agreed/, r.out);
  await replicasAgree(db.name, N);
  assert.deepEqual(await perProject(), { [PROJECT_A]: N / 2, [PROJECT_B]: N / 2 }, r.out);
  r = await spangate(['validate', '-c', conf]);
  assert.equal(r.code, 0, r.err + r.out);
});

test('a re-sent identical insert is dropped by the replicated table, through any endpoint', async (t) => {
  const db = (await createDatabase()).name;
  // spangate's 18.16 spans table made by hand, as plain ReplicatedMergeTree
  // (no merge folds duplicates away, so count() is what the inserts left),
  // a Distributed table in front.
  const ddl = execFileSync(BIN, ['schema', '--print', '--clickhouse-version', '18.16']).toString();
  const m = ddl.match(/CREATE TABLE IF NOT EXISTS `[^`]+`\.spans\s*\(([\s\S]*?)\n\)\s*ENGINE = ReplacingMergeTree\(version\)([^;]*);/);
  assert.ok(m, `no spans table in spangate's 18.16 DDL:\n${ddl}`);
  for (const sql of [
    `CREATE DATABASE IF NOT EXISTS ${db} ON CLUSTER ${cl.name}`,
    `CREATE TABLE ${db}.spans_local ON CLUSTER ${cl.name} (${m[1]}\n) ENGINE = ReplicatedMergeTree(` +
      `'/clickhouse/tables/{shard}/${db}/spans_local', '{replica}')${m[2]}`,
    `CREATE TABLE ${db}.spans ON CLUSTER ${cl.name} AS ${db}.spans_local ` +
      `ENGINE = Distributed(${cl.name}, ${db}, spans_local, cityHash64(toString(trace_id)))`,
  ]) await cl.query(0, sql, undefined, DDL);
  // A segment's rows as spangate encodes them, from a gateway on the single server.
  const gw = await startGateway({ clickhouse: true });
  let body;
  try {
    assert.equal((await postJson(gw, '/v1/spans', { spans: traces(60, Date.now() * 1000) })).status, 200);
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
