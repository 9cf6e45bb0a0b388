// ClickHouse's HTTP interface in front of two engines, recording every
// statement spangate sends and what came back. Each runs in a process of its
// own (`node engine.mjs engine DIR` / `node engine.mjs proxy PORT`, which
// prints "PORT n"), so a test may block on a spangate command while the
// server answers it; startEngine() / startProxy() start one and return
// { port, query(sql) (engine only), log(), close() }. GET /__log answers
// the recorded statements; requests with an x-sg-test header are not
// recorded.
//   - startEngineServer(session): the modern engine, chDB (ClickHouse 26.x
//     as a library), executing each request's SQL in one session;
//   - startRecordingProxy(port): the real 18.16 server of the test
//     environment, each request passed through unchanged.
// Only what spangate's client uses is spoken: POST /?database=&query= with
// the rows (or nothing) in the body, gzip by Content-Encoding, the answer
// in the body, an error as "Code: N. DB::Exception: ..." with HTTP 500 and
// X-ClickHouse-Exception-Code. So the HTTP layer of a modern server is not
// what these tests verify (it stays tested on 18.16): the engine is.
import http from 'node:http';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';

function readBody(req) {
  return new Promise((res, rej) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let b = Buffer.concat(chunks);
      if (/gzip/i.test(req.headers['content-encoding'] || '')) b = gunzipSync(b);
      res(b);
    });
    req.on('error', rej);
  });
}

function listen(server) {
  return new Promise((res) => server.listen(0, '127.0.0.1', () => res(server.address().port)));
}

// The statement and its rows as ClickHouse's HTTP interface reads them: the
// `query` parameter followed by the body, which for an INSERT holds its rows
// (spangate's jobs send long statements in the body, query= left empty).
function statementOf(url, body) {
  const q = url.searchParams.get('query') || '';
  const text = body.toString('utf8');
  if (/^\s*INSERT\b/i.test(q)) return { sql: q, data: text };
  return { sql: q + text, data: '' };
}

const SPOKEN = new Set(['query', 'database', 'user', 'password']);

function serveLog(req, res, log) {
  if (req.url !== '/__log') return false;
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(log));
  return true;
}

async function engineServer(session) {
  const log = [];
  const server = http.createServer(async (req, res) => {
    if (serveLog(req, res, log)) return;
    const url = new URL(req.url, 'http://x');
    const body = await readBody(req);
    const { sql, data } = statementOf(url, body);
    const entry = { sql, rows: data ? data.split('\n').filter(Boolean).length : 0, ok: false, answer: '', error: '' };
    if (!req.headers['x-sg-test']) log.push(entry);
    // Every other parameter is a setting, as ClickHouse's HTTP interface
    // takes them (insert_distributed_sync, insert_deduplication_token, ...):
    // set for this statement on the session, then put back.
    const settings = [...url.searchParams.entries()].filter(([k]) => !SPOKEN.has(k));
    const lit = (v) => (/^-?\d+$/.test(v) ? v : `'${v.replace(/[\\']/g, '\\$&')}'`);
    try {
      const db = url.searchParams.get('database');
      session.query(`USE ${db ? '`' + db.replace(/[`\\]/g, '\\$&') + '`' : 'default'}`, 'TabSeparated');
      for (const [k, v] of settings) {
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`Code: 115. DB::Exception: Unknown setting '${k}'`);
        session.query(`SET ${k} = ${lit(v)}`, 'TabSeparated');
      }
      const text = data ? `${sql}\n${data}` : sql;
      entry.answer = session.query(text, 'TabSeparated');
      entry.ok = true;
      res.writeHead(200, { 'Content-Type': 'text/tab-separated-values; charset=UTF-8' });
      res.end(entry.answer);
    } catch (e) {
      const msg = String(e.message || e).replace(/^Query failed: /, '');
      entry.error = msg;
      const code = (/^Code: (\d+)\./.exec(msg) || [])[1] || '1';
      res.writeHead(500, { 'X-ClickHouse-Exception-Code': code });
      res.end(msg.endsWith('\n') ? msg : `${msg}\n`);
    } finally {
      for (const [k] of settings) {
        try { session.query(`SET ${k} = DEFAULT`, 'TabSeparated'); } catch { /* a name that was refused */ }
      }
    }
  });
  return listen(server);
}

async function recordingProxy(targetPort) {
  const log = [];
  const server = http.createServer(async (req, res) => {
    if (serveLog(req, res, log)) return;
    const url = new URL(req.url, 'http://x');
    const raw = Buffer.concat(await new Promise((r) => { const c = []; req.on('data', (d) => c.push(d)); req.on('end', () => r(c)); }));
    let plain = raw;
    if (/gzip/i.test(req.headers['content-encoding'] || '')) plain = gunzipSync(raw);
    const { sql, data } = statementOf(url, plain);
    const entry = { sql, rows: data ? data.split('\n').filter(Boolean).length : 0, ok: false, answer: '', error: '' };
    log.push(entry);
    const headers = { ...req.headers };
    delete headers.host;
    delete headers.expect; /* answered by this server already */
    delete headers.connection;
    const up = http.request({ host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers }, (r) => {
      const chunks = [];
      r.on('data', (c) => chunks.push(c));
      r.on('end', () => {
        const b = Buffer.concat(chunks);
        entry.ok = r.statusCode === 200;
        if (entry.ok) entry.answer = b.toString('utf8'); else entry.error = b.toString('utf8');
        res.writeHead(r.statusCode, r.headers);
        res.end(b);
      });
    });
    up.on('error', (e) => { entry.error = String(e); res.writeHead(502); res.end(String(e)); });
    up.end(raw);
  });
  return listen(server);
}

// ---- the test's side --------------------------------------------------------------------

function start(args) {
  return new Promise((res, rej) => {
    const p = spawn(process.execPath, [fileURLToPath(import.meta.url), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
      const m = /PORT (\d+)\n/.exec(out);
      if (!m) return;
      const port = Number(m[1]);
      const url = (path) => `http://127.0.0.1:${port}${path}`;
      res({
        port,
        // a statement of the test's own (not recorded); rejects with ClickHouse's error
        query: async (sql) => {
          const r = await fetch(url('/'), { method: 'POST', body: sql, headers: { 'x-sg-test': '1' } });
          const t = await r.text();
          if (!r.ok) throw new Error(t);
          return t;
        },
        log: async () => (await fetch(url('/__log'))).json(),
        close: () => new Promise((r) => { p.once('exit', r); p.kill('SIGTERM'); }),
      });
    });
    p.on('exit', (code) => rej(new Error(`${args[0]} exited (${code}) before listening`)));
  });
}

export const startEngine = (dir) => start(['engine', dir]);
export const startProxy = (port) => start(['proxy', String(port)]);

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [kind, arg] = process.argv.slice(2);
  let session;
  if (kind === 'engine') {
    const { Session } = await import('chdb');
    session = new Session(arg);
  }
  const port = kind === 'engine' ? await engineServer(session) : await recordingProxy(Number(arg));
  process.stdout.write(`PORT ${port}\n`);
  process.on('SIGTERM', () => { if (session) session.close(); process.exit(0); });
}
