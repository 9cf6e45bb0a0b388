// bench/read.mjs - read latency through two gateways on the same spans, one
// reading PostgreSQL and one ClickHouse (bench/read.sh sets them up).
//
//   node bench/read.mjs latency PG_PORT CH_PORT KEY REQUESTS.json ROUNDS
//     REQUESTS.json: [{name, kind: "trace"|"query", path, body}]. Each round
//     sends every request to both gateways, alternating which goes first
//     (ABBA), one at a time on keep-alive connections; checks the status, the
//     X-Spangate-Read-Backend header and, once per request, that both
//     answers are the same bytes. Prints JSON: per request the median ms on
//     each store and the ratio PostgreSQL / ClickHouse.
//   node bench/read.mjs lag PORT KEY N
//     The delay until ClickHouse serves a span: N times, one span ingested,
//     then its trace read every 5 ms until the answer comes from ClickHouse
//     with the span in it. Prints JSON: ms from the ingest answer, p50/p90/max.
import http from 'node:http';
import { readFileSync } from 'node:fs';

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function send(port, method, path, body, key) {
  return new Promise((res, rej) => {
    const t0 = process.hrtime.bigint();
    const headers = { authorization: `ApiKey ${key}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent }, (r) => {
      const chunks = [];
      r.on('data', (c) => chunks.push(c));
      r.on('end', () => res({ status: r.statusCode, backend: r.headers['x-spangate-read-backend'],
        fallback: r.headers['x-spangate-read-fallback'], text: Buffer.concat(chunks).toString(),
        ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
    });
    req.on('error', rej);
    if (body !== undefined) req.write(typeof body === 'string' ? body : JSON.stringify(body));
    req.end();
  });
}

const median = (a) => { const s = [...a].sort((x, y) => x - y); return s.length ? s[Math.floor((s.length - 1) / 2)] : null; };
const pct = (a, p) => { const s = [...a].sort((x, y) => x - y); return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : null; };

async function latency([pgPort, chPort, key, file, rounds]) {
  const reqs = JSON.parse(readFileSync(file, 'utf8'));
  const out = {};
  for (const r of reqs) out[r.name] = { kind: r.kind, pg: [], ch: [], equal: null, errors: [] };
  for (let round = 0; round < Number(rounds); round++) {
    for (const r of reqs) {
      const method = r.body === undefined ? 'GET' : 'POST';
      const order = round % 2 ? [['ch', chPort], ['pg', pgPort]] : [['pg', pgPort], ['ch', chPort]];
      const got = {};
      for (const [side, port] of order) {
        const a = await send(Number(port), method, r.path, r.body, key);
        got[side] = a;
        const want = side === 'pg' ? 'postgres' : 'clickhouse';
        if (a.status !== 200 || a.backend !== want)
          out[r.name].errors.push(`${side}: ${a.status} ${a.backend} ${a.fallback || ''} ${a.text.slice(0, 200)}`);
        else out[r.name][side].push(a.ms);
      }
      if (out[r.name].equal === null) out[r.name].equal = got.pg.text === got.ch.text;
    }
  }
  for (const [name, o] of Object.entries(out)) {
    o.pg_ms = median(o.pg);
    o.ch_ms = median(o.ch);
    o.ratio = o.pg_ms && o.ch_ms ? o.pg_ms / o.ch_ms : null;
    o.runs = o.pg.length;
    delete o.pg;
    delete o.ch;
    o.errors = o.errors.slice(0, 3);
    out[name] = o;
  }
  console.log(JSON.stringify(out));
}

async function lag([port, key, n]) {
  const ms = [];
  const fails = [];
  for (let i = 0; i < Number(n); i++) {
    const trace = (Date.now() * 1000 + i).toString(16).padStart(32, '0');
    const start = Date.now() * 1000;
    const w = await send(Number(port), 'POST', '/v1/spans', { spans: [{ trace_id: trace, span_id: trace.slice(-16),
      span_name: 'lag', start_time: start, end_time: start + 1000 }] }, key);
    if (w.status !== 200) { fails.push(`ingest ${w.status}`); continue; }
    const t0 = process.hrtime.bigint();
    let seen = false;
    while (!seen && Number(process.hrtime.bigint() - t0) / 1e6 < 30000) {
      const r = await send(Number(port), 'GET', `/v1/traces/${trace}`, undefined, key);
      if (r.status === 200 && r.backend === 'clickhouse') seen = true;
      else if (r.status !== 200) fails.push(`read ${r.status}`);
      else await new Promise((res) => setTimeout(res, 5));
    }
    if (seen) ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
    else fails.push('not served from ClickHouse within 30 s');
  }
  console.log(JSON.stringify({ n: ms.length, p50_ms: median(ms), p90_ms: pct(ms, 0.9), max_ms: Math.max(...ms), errors: fails.slice(0, 3) }));
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'latency') await latency(args);
else if (mode === 'lag') await lag(args);
else { console.error('usage: read.mjs latency PG_PORT CH_PORT KEY FILE ROUNDS | lag PORT KEY N'); process.exit(2); }
agent.destroy();
