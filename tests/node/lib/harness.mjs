// Test harness: a real spangate process on a free loopback port, a fresh
// PostgreSQL database of its own on the test server that scripts/testenv.sh
// started, and helpers to talk to both. Never a mock of a database.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import http from 'node:http';
import pg from 'pg';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = process.env.SPANGATE_BIN || join(ROOT, 'build/spangate');
export const PG_URI = process.env.SG_TEST_PG_URI;
export const CH_PORT = process.env.SG_TEST_CH_PORT;
if (!PG_URI) throw new Error('SG_TEST_PG_URI is not set: run the tests through scripts/testenv.sh');

export const PROJECT_A = '0190a3b4-0000-7000-8000-00000000000a';
export const PROJECT_B = '0190a3b4-0000-7000-8000-00000000000b';
export const KEY_A = 'key-a-' + 'x'.repeat(20);
export const KEY_B = 'key-b-' + 'y'.repeat(20);

// A port nothing listens on now, and not one handed out before in this
// process: the kernel may give the port just closed to the next listen(0),
// so two calls in a row (a gateway's HTTP and gRPC ports) could agree.
const portsGiven = new Set();
function unusedPort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}
export async function freePort() {
  for (;;) {
    const port = await unusedPort();
    if (!portsGiven.has(port)) {
      portsGiven.add(port);
      return port;
    }
  }
}

export function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

let dbSeq = 0;
export async function createDatabase() {
  const name = `sg_${process.pid}_${Date.now() % 1e8}_${dbSeq++}`;
  const c = new pg.Client({ connectionString: PG_URI });
  await c.connect();
  await c.query(`CREATE DATABASE ${name}`);
  await c.end();
  return { name, uri: PG_URI.replace(/\/[^/?]*(\?|$)/, `/${name}$1`) };
}

export async function pgQuery(uri, sql, params = []) {
  const c = new pg.Client({ connectionString: uri });
  await c.connect();
  try { return (await c.query(sql, params)).rows; } finally { await c.end(); }
}

function sha256hex(s) {
  return execFileSync('sha256sum', { input: s }).toString().split(' ')[0];
}

// Starts a gateway. opts.conf: extra gateway.conf lines; opts.env: extra env.
export async function startGateway(opts = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'sg-gw-'));
  const db = opts.db || await createDatabase();
  const port = await freePort();
  // Each gateway its own gRPC port (the default 4317 would be shared through SO_REUSEPORT).
  const grpcPort = await freePort();
  const keys = join(dir, 'keys');
  writeFileSync(keys, `# test keys\n${PROJECT_A} sha256:${sha256hex(KEY_A)}\n${PROJECT_B} plain:${KEY_B}\n`);
  mkdirSync(join(dir, 'spool'));
  const chdb = opts.clickhouse ? (opts.chdb || db.name) : null;
  const chConf = opts.clickhouse ? [
    'use_clickhouse = true', 'clickhouse_host = "127.0.0.1"', `clickhouse_port = ${CH_PORT}`,
    `clickhouse_database = "${chdb}"`, `flush_interval_ms = ${opts.flushMs ?? 100}`,
    `capture_flush_interval_ms = ${opts.captureFlushMs ?? opts.flushMs ?? 100}`,
    'clickhouse_timeout_ms = 5000',
  ] : [];
  const conf = join(dir, 'gateway.conf');
  writeFileSync(conf, [
    `listen = "127.0.0.1:${port}"`,
    `grpc_listen = "127.0.0.1:${grpcPort}"`,
    `workers = ${opts.workers ?? 2}`,
    `log_level = "${opts.logLevel || 'info'}"`,
    `postgres_uri = "${db.uri}"`,
    `auth = "keys"`,
    `keys_file = "${keys}"`,
    `spool_dir = "${join(dir, 'spool')}"`,
    `scripts = "${opts.scripts || join(ROOT, 'lua')}"`,
    ...chConf,
    ...(opts.conf || []),
  ].join('\n') + '\n');
  const env = { ...process.env, ...(opts.env || {}) };
  for (const k of Object.keys(env))
    if (k.startsWith('SPANGATE_') || k.startsWith('CLICKHOUSE_') || k === 'POSTGRES_URI' || k === 'USE_CLICKHOUSE') delete env[k];
  Object.assign(env, opts.env || {});
  // chSchema: false applies PostgreSQL's schema only (the test makes ClickHouse's).
  const schemaEnv = opts.chSchema === false ? { ...env, USE_CLICKHOUSE: 'false' } : env;
  if (!opts.skipSchema) execFileSync(BIN, ['schema', '--apply', '-c', conf], { env: schemaEnv, stdio: 'pipe' });
  const gw = {
    dir, db, chdb, port, grpcPort, conf, env, url: `http://127.0.0.1:${port}`, log: '', proc: null, exit: null,
  };
  gw.start = async () => {
    gw.exit = null;
    const proc = spawn(BIN, ['serve', '-c', conf], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    gw.proc = proc;
    proc.stdout.on('data', (d) => { gw.log += d; });
    proc.stderr.on('data', (d) => { gw.log += d; if (process.env.SG_TEST_VERBOSE) process.stderr.write(d); });
    gw.exited = new Promise((res) => proc.on('exit', (code, signal) => { gw.exit = { code, signal }; res(gw.exit); }));
    for (let i = 0; i < 200; i++) {
      if (gw.exit) throw new Error(`gateway exited at start-up: ${JSON.stringify(gw.exit)}\n${gw.log}`);
      try {
        const r = await request(gw, 'GET', '/healthz');
        if (r.status === 200) return gw;
      } catch { /* not listening yet */ }
      await sleep(50);
    }
    throw new Error(`gateway did not come up\n${gw.log}`);
  };
  // Graceful stop; resolves to the exit status.
  gw.stop = async (signal = 'SIGTERM') => {
    if (!gw.proc || gw.exit) return gw.exit;
    gw.proc.kill(signal);
    return gw.exited;
  };
  gw.kill = async () => gw.stop('SIGKILL');
  gw.query = (sql, params) => pgQuery(db.uri, sql, params);
  gw.ch = (sql) => chQuery(sql, chdb);
  // Log lines at error level (Test::Nginx's no_error_log).
  gw.errorLines = () => gw.log.split('\n').filter((l) => l.includes('[error]'));
  await gw.start();
  return gw;
}

// A plain HTTP request. body: Buffer|string|undefined. Resolves {status, headers, body(Buffer), json()}.
export function request(gw, method, path, body, headers = {}) {
  return new Promise((res, rej) => {
    const req = http.request({ host: '127.0.0.1', port: gw.port, method, path, headers, agent: false }, (r) => {
      const chunks = [];
      r.on('data', (c) => chunks.push(c));
      r.on('end', () => {
        const buf = Buffer.concat(chunks);
        res({ status: r.statusCode, headers: r.headers, body: buf, text: buf.toString(), json: () => JSON.parse(buf.toString()) });
      });
    });
    req.on('error', rej);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

export function postJson(gw, path, obj, key = KEY_A, extra = {}) {
  const body = typeof obj === 'string' ? obj : JSON.stringify(obj);
  const h = { 'content-type': 'application/json', ...extra };
  if (key) h.authorization = `ApiKey ${key}`;
  return request(gw, 'POST', path, body, h);
}

// Raw bytes over a socket (for malformed requests). Resolves with everything
// the server sent before closing, or after timeoutMs.
export function rawExchange(gw, chunks, { timeoutMs = 5000, gapMs = 0 } = {}) {
  return new Promise((res) => {
    const s = net.connect(gw.port, '127.0.0.1');
    let out = '';
    const done = () => { clearTimeout(t); s.destroy(); res(out); };
    const t = setTimeout(done, timeoutMs);
    s.on('data', (d) => { out += d.toString('latin1'); });
    s.on('close', done);
    s.on('error', done);
    s.on('connect', async () => {
      for (const c of [].concat(chunks)) {
        if (s.destroyed) break;
        s.write(c);
        if (gapMs) await sleep(gapMs);
      }
    });
  });
}

export function hex(n) {
  let s = '';
  for (let i = 0; i < n; i++) s += Math.floor(Math.random() * 16).toString(16);
  return s.replace(/^0+$/, '1'.repeat(n));
}

// Agenta's id mapping: 16 hex doubled into a UUID.
export function spanUuid(hex16) {
  const h = (hex16 + hex16).toLowerCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
export function traceUuid(hex32) {
  const h = hex32.toLowerCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// A ClickHouse query over HTTP; resolves to the response text (TSV by default).
export async function chQuery(sql, database) {
  const u = new URL(`http://127.0.0.1:${CH_PORT}/`);
  if (database) u.searchParams.set('database', database);
  const r = await fetch(u, { method: 'POST', body: sql });
  const text = await r.text();
  if (!r.ok) throw new Error(`ClickHouse ${r.status}: ${text}`);
  return text;
}

// Polls fn until it returns truthy or timeoutMs passes; returns the last value.
export async function until(fn, timeoutMs = 15000, stepMs = 100) {
  const t0 = Date.now();
  let v;
  while (Date.now() - t0 < timeoutMs) {
    v = await fn();
    if (v) return v;
    await sleep(stepMs);
  }
  return v;
}

export function chctl(...args) {
  return execFileSync(`${ROOT}/scripts/chctl.sh`, args, { stdio: 'pipe' }).toString();
}
export const CH_DIR = process.env.SG_TEST_TMP ? `${process.env.SG_TEST_TMP}/ch` : null;

// ---- extra ClickHouse servers -------------------------------------------------
// Started only by the tests that need them, under SG_TEST_TMP (scripts/testenv.sh
// stops whatever is left there), and stopped by the test, or at exit at the latest.

// A query to another ClickHouse server (a cluster node, the https server's
// plain port): settings are URL parameters. One connection per query, closed
// after it: a server being stopped waits for idle keep-alive connections,
// and a test's stop blocks the loop that would close them.
export function chQueryAt(port, sql, database, settings = {}) {
  const u = new URL(`http://127.0.0.1:${port}/`);
  if (database) u.searchParams.set('database', database);
  for (const [k, v] of Object.entries(settings)) u.searchParams.set(k, String(v));
  return new Promise((res, rej) => {
    const req = http.request(u, { method: 'POST', agent: false }, (r) => {
      const chunks = [];
      r.on('data', (c) => chunks.push(c));
      r.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        if (r.statusCode !== 200) rej(new Error(`ClickHouse ${r.statusCode}: ${text}`));
        else res(text);
      });
    });
    req.on('error', rej);
    req.end(sql);
  });
}

function script(name, args) {
  return execFileSync(`${ROOT}/scripts/${name}`, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

// The same without blocking the loop (several at once); resolves to stdout.
function scriptAsync(name, args) {
  return new Promise((res, rej) => {
    const p = spawn(`${ROOT}/scripts/${name}`, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('exit', (code) => (code === 0 ? res(out) : rej(new Error(`${name} ${args.join(' ')}: exit ${code}\n${err}`))));
  });
}

function extraDir(prefix) {
  const base = process.env.SG_TEST_TMP || tmpdir();
  return mkdtempSync(join(base, prefix));
}

const atExit = new Set();
process.on('exit', () => { for (const f of atExit) { try { f(); } catch { /* best effort */ } } });

// A ClickHouse 18.16 cluster on loopback: ZooKeeper and shards x replicas servers
// (scripts/chcluster.sh). Resolves to {name, zookeeper, nodes: [{name, http, tcp,
// shard, replica, dir}], endpoints: ["127.0.0.1:<http>", ...], query(i, sql, db,
// settings), kill(i) (SIGKILL), stopNode(i), startNode(i), startNodes([i, ...])
// (async, in parallel), stop(), ms (start-up time)}; node indexes are 0-based.
export async function startCluster({ shards = 2, replicas = 2 } = {}) {
  const dir = extraDir('cluster-');
  const t0 = Date.now();
  const info = JSON.parse(script('chcluster.sh', ['start', dir, String(shards), String(replicas)]));
  const stopSync = () => script('chcluster.sh', ['stop', dir]);
  atExit.add(stopSync);
  const node = (i) => String(i + 1);
  return {
    name: info.cluster,
    zookeeper: info.zookeeper,
    nodes: info.nodes,
    dir,
    ms: Date.now() - t0,
    endpoints: info.nodes.map((n) => `127.0.0.1:${n.http}`),
    query: (i, sql, database, settings) => chQueryAt(info.nodes[i].http, sql, database, settings),
    kill: (i) => script('chcluster.sh', ['kill', dir, node(i)]),
    stopNode: (i) => script('chcluster.sh', ['stop-node', dir, node(i)]),
    startNode: (i) => script('chcluster.sh', ['start-node', dir, node(i)]),
    // Several servers started again, together; resolves when all answer.
    startNodes: (list) => Promise.all(list.map((i) => scriptAsync('chcluster.sh', ['start-node', dir, node(i)]))),
    stop: () => { atExit.delete(stopSync); stopSync(); },
    // The servers' error logs (tails), for a failing test's message.
    errorLogs: () => info.nodes.map((n) => {
      try {
        const t = readFileSync(join(n.dir, 'log', 'clickhouse-server.err.log'), 'utf8').split('\n')
          .filter((l) => /<Error>|Exception/.test(l)).slice(-5).join('\n');
        return `--- ${n.name}\n${t}`;
      } catch { return `--- ${n.name}: no log`; }
    }).join('\n'),
  };
}

// A ClickHouse 18.16 with https (scripts/chtls.sh): a CA made for the test, the
// server's certificate for 127.0.0.1 and localhost, client certificates required
// on https, a user with a password. Resolves to {http, https, tcp, ca, wrongCa,
// clientCert, clientKey, user, password, dir, query(sql), stop()}.
export async function startTlsClickHouse() {
  const dir = extraDir('chtls-');
  const info = JSON.parse(script('chtls.sh', ['start', dir]));
  const stopSync = () => script('chtls.sh', ['stop', dir]);
  atExit.add(stopSync);
  return {
    ...info,
    dir,
    query: (sql, database) => chQueryAt(info.http, sql, database),
    stop: () => { atExit.delete(stopSync); stopSync(); },
  };
}
