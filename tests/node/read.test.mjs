// The read API against real servers: GET /v1/traces/{id}, POST /v1/spans/query
// (Agenta's filter shape, keyset pagination, injection attempts) and
// GET /v1/analytics/spans. Every read here runs on both stores: `gw` answers
// from PostgreSQL, `gwCh` (same databases) from ClickHouse (18.16), and the
// answers must be the same bytes (lib/read_both.mjs); read_parity.test.mjs
// has the larger comparison.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startGateway, postJson, request, KEY_A, KEY_B, until, spanUuid, traceUuid,
} from './lib/harness.mjs';
import { both, caughtUp, getWith, queryWith, readScripts } from './lib/read_both.mjs';

let gw;   // ingests; reads from PostgreSQL (the shipped routing.lua)
let gwCh; // same databases; a routing.lua whose read_backend says "clickhouse"

// A read through gw is a read through both gateways, compared.
const get = (g, path, key = KEY_A) =>
  (g === gw ? both(gw, gwCh, (x) => getWith(x, path, key), `GET ${path}`) : getWith(g, path, key));
const query = (g, body, key = KEY_A) =>
  (g === gw ? both(gw, gwCh, (x) => queryWith(x, body, key), `query ${typeof body === 'string' ? body : JSON.stringify(body)}`)
    : queryWith(g, body, key));
const hex16 = (n) => n.toString(16).padStart(16, '0');

async function ingest(spans, key = KEY_A) {
  for (let i = 0; i < spans.length; i += 500) {
    const r = await postJson(gw, '/v1/spans', { spans: spans.slice(i, i + 500) }, key);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json().rejected, undefined, r.text);
  }
}

// ---- data ------------------------------------------------------------------

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const traceSpans = [
  {
    trace_id: TRACE, span_id: '00f067aa0ba902b7', span_name: 'root', span_kind: 'SPAN_KIND_SERVER',
    trace_type: 'invocation', span_type: 'workflow', start_time: 1714979289123456, end_time: 1714979290654321,
    status_code: 'STATUS_CODE_OK',
    attributes: { 'ag.type.span': 'workflow', 'ag.data.inputs': { q: 'hi' }, 'n': 7, 'literal.dotted': 'flat?' },
  },
  {
    trace_id: TRACE, span_id: '1111111111111111', parent_id: '00f067aa0ba902b7', span_name: 'llm call',
    span_kind: 'SPAN_KIND_CLIENT', span_type: 'llm', start_time: 1714979289200000, end_time: 1714979289900001,
    status_code: 'STATUS_CODE_ERROR', status_message: 'rate limited',
    attributes: { 'ag.type.span': 'llm', 'gen_ai.usage.prompt_tokens': 42, 'note': "it's 100% \"quoted\"" },
    events: [{ name: 'exception', timestamp: '2024-05-06T07:08:09.500000Z', attributes: { 'exception.type': 'RateLimit' } }],
  },
  {
    trace_id: TRACE, span_id: '2222222222222222', parent_id: '00f067aa0ba902b7', span_name: 'tool',
    span_kind: 'SPAN_KIND_INTERNAL', span_type: 'tool', start_time: 1714979289300000, end_time: 1714979289300000,
    attributes: { 'ag.type.span': 'tool', 'n': 3 },
  },
];

// 3000 spans over 429 distinct start times (7 share each), for pagination.
const PAGE_N = 3000;
// Ten spans per trace: the first is the root (one root per trace, as Agenta).
const parentOf = (base, i, per) => (i % per ? { parent_id: hex16(base + i - (i % per)) } : {});
const pageSpans = Array.from({ length: PAGE_N }, (_, i) => ({
  trace_id: (0x5000 + Math.floor(i / 10)).toString(16).padStart(32, '0'),
  span_id: hex16(0x6000000 + i), ...parentOf(0x6000000, i, 10),
  span_name: `page-${i}`,
  start_time: 1700000000000000 + Math.floor(i / 7) * 1000,
  end_time: 1700000000000000 + Math.floor(i / 7) * 1000 + 5,
  attributes: { batch: 'paging', i },
}));

// Analytics: 900 spans over 2 h from 2024-06-01T00:00:00Z, mixed types,
// kinds, statuses and durations.
const A_BASE = 1717200000;
const TYPES = ['llm', 'tool', 'chain', null];
const KINDS = ['SPAN_KIND_SERVER', 'SPAN_KIND_CLIENT', 'SPAN_KIND_INTERNAL'];
const anaSpans = Array.from({ length: 900 }, (_, i) => {
  const start = (A_BASE + i * 8) * 1e6 + (i * 7919) % 1e6;
  const dur = ((i * 37) % 2000) * 1000 + (i * 13) % 1000; // µs, up to ~2 s
  const s = {
    trace_id: (0x9000 + Math.floor(i / 5)).toString(16).padStart(32, '0'),
    span_id: hex16(0x7000000 + i), ...parentOf(0x7000000, i, 5), span_name: `op-${i % 3}`, span_kind: KINDS[i % 3],
    start_time: start, end_time: start + dur,
    status_code: i % 5 === 0 ? 'STATUS_CODE_ERROR' : 'STATUS_CODE_OK',
    attributes: { batch: 'analytics' },
  };
  if (TYPES[i % 4]) s.span_type = TYPES[i % 4];
  return s;
});

before(async () => {
  gw = await startGateway({ clickhouse: true });
  gwCh = await startGateway({ clickhouse: true, db: gw.db, chdb: gw.chdb, scripts: readScripts() });
  await ingest(traceSpans);
  await ingest(pageSpans);
  await ingest(anaSpans);
  // Project B has a trace of its own with a span id A also has.
  await ingest([{ trace_id: 'b'.repeat(32), span_id: '1111111111111111', span_name: 'b-root',
    start_time: 1714979289123456, end_time: 1714979289123457 }], KEY_B);
  await caughtUp(gw);
});

after(async () => {
  await gwCh?.stop();
  await gw?.stop();
  for (const g of [gw, gwCh]) if (g) assert.deepEqual(g.errorLines(), [], 'no error lines in the log');
});

// ---- auth ----------------------------------------------------------------------

test('every read answers 401 without a key, and with a bad one', async () => {
  for (const key of [null, 'nope']) {
    const h = key ? { authorization: `ApiKey ${key}` } : {};
    assert.equal((await request(gw, 'GET', `/v1/traces/${TRACE}`, undefined, h)).status, 401);
    assert.equal((await request(gw, 'POST', '/v1/spans/query', '{}', { 'content-type': 'application/json', ...h })).status, 401);
    const r = await request(gw, 'GET', '/v1/analytics/spans', undefined, h);
    assert.equal(r.status, 401);
    assert.match(r.headers['www-authenticate'], /ApiKey/);
  }
});

// ---- traces ----------------------------------------------------------------------

test('a trace reads back as it was ingested, under every id form', async () => {
  const r = await get(gw, `/v1/traces/${TRACE}`);
  assert.equal(r.status, 200, r.text);
  const body = r.json();
  assert.equal(body.count, 3);
  const byId = Object.fromEntries(body.spans.map((s) => [s.span_id, s]));
  const rows = await gw.query(`SELECT span_id::text, attributes, events FROM spans
      WHERE project_id = $1 AND trace_id = $2`, ['0190a3b4-0000-7000-8000-00000000000a', traceUuid(TRACE)]);
  assert.equal(rows.length, 3);
  for (const sent of traceSpans) {
    const got = byId[sent.span_id];
    assert.ok(got, `span ${sent.span_id}`);
    assert.equal(got.trace_id, TRACE);
    assert.equal(got.parent_id, sent.parent_id);
    assert.equal(got.span_name, sent.span_name);
    assert.equal(got.span_kind, sent.span_kind);
    assert.equal(got.status_code, sent.status_code || 'STATUS_CODE_UNSET');
    assert.equal(got.status_message, sent.status_message);
    if (sent.span_type) assert.equal(got.span_type, sent.span_type);
    const iso = (us) => new Date(Math.floor(us / 1000)).toISOString().replace('Z', `${String(us % 1000).padStart(3, '0')}Z`);
    assert.equal(got.start_time, iso(sent.start_time));
    assert.equal(got.end_time, iso(sent.end_time));
    assert.match(got.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    const row = rows.find((x) => x.span_id === spanUuid(sent.span_id));
    assert.deepEqual(got.attributes, row.attributes, 'attributes as stored');
    assert.deepEqual(got.events, row.events ?? undefined);
  }
  // The default transform nests dotted keys (Agenta's form).
  assert.equal(byId['1111111111111111'].attributes.ag.type.span, 'llm');
  assert.equal(byId['1111111111111111'].events[0].attributes['exception.type'], 'RateLimit');
  // Ordered by start time.
  assert.deepEqual(body.spans.map((s) => s.span_name), ['root', 'llm call', 'tool']);
  for (const form of [`0x${TRACE}`, traceUuid(TRACE), TRACE.toUpperCase()]) {
    const again = await get(gw, `/v1/traces/${form}`);
    assert.equal(again.status, 200, form);
    assert.deepEqual(again.json(), body, form);
  }
});

test('another project\'s trace, an unknown trace and a bad id', async () => {
  const other = await get(gw, `/v1/traces/${'b'.repeat(32)}`);
  assert.equal(other.status, 404);
  assert.match(other.json().error, /not found/);
  assert.equal((await get(gw, `/v1/traces/${'b'.repeat(32)}`, KEY_B)).status, 200);
  assert.equal((await get(gw, `/v1/traces/${TRACE}`, KEY_B)).status, 404);
  assert.equal((await get(gw, `/v1/traces/${'c'.repeat(32)}`)).status, 404);
  for (const bad of ['xyz', '1111111111111111', `${TRACE}00`, "4bf92f3577b34da6a3ce929d0e0e47'--"]) {
    const r = await get(gw, `/v1/traces/${encodeURIComponent(bad)}`);
    assert.equal(r.status, 400, bad);
  }
});

// ---- filters ----------------------------------------------------------------------

const names = (r) => r.json().spans.map((s) => s.span_name).sort();
const cond = (field, operator, value, key) => ({ field, key, operator, value });
const filt = (operator, ...conditions) => ({ filtering: { operator, conditions } });

test('filters on columns', async () => {
  let r = await query(gw, filt('and', cond('trace_id', 'is', TRACE), cond('span_kind', 'is', 'client')));
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(names(r), ['llm call']);
  r = await query(gw, filt('and', cond('trace_id', 'is', `0x${TRACE}`), cond('status_code', 'is_not', 'STATUS_CODE_ERROR')));
  assert.deepEqual(names(r), ['root', 'tool']);
  r = await query(gw, filt('and', cond('span_name', 'startswith', 'LLM'), cond('trace_id', 'eq', traceUuid(TRACE))));
  assert.deepEqual(names(r), ['llm call']); // case-insensitive by default
  r = await query(gw, { filtering: { conditions: [cond('span_name', 'startswith', 'LLM')], operator: 'and' } });
  r = await query(gw, filt('and', { field: 'span_name', operator: 'startswith', value: 'LLM', options: { case_sensitive: true } }));
  assert.equal(r.json().count, 0);
  r = await query(gw, filt('and', cond('span_id', 'in', ['1111111111111111', '2222222222222222']), cond('trace_id', 'is', TRACE)));
  assert.deepEqual(names(r), ['llm call', 'tool']);
  r = await query(gw, filt('and', cond('trace_id', 'is', TRACE), cond('parent_id', 'not_exists')));
  assert.deepEqual(names(r), ['root']);
  r = await query(gw, filt('and', cond('trace_id', 'is', TRACE),
    cond('start_time', 'btwn', ['2024-05-06T07:08:09.150000Z', '2024-05-06T07:08:09.300000Z'])));
  assert.deepEqual(names(r), ['llm call', 'tool']);
  r = await query(gw, filt('and', cond('trace_id', 'is', TRACE), cond('end_time', 'gt', 1714979289900000)));
  assert.deepEqual(names(r), ['llm call', 'root']);
  // nested logic: not (kind = server or type = tool)
  r = await query(gw, filt('and', cond('trace_id', 'is', TRACE),
    { operator: 'not', conditions: [{ operator: 'or', conditions: [cond('span_kind', 'is', 'SPAN_KIND_SERVER'), cond('span_type', 'is', 'tool')] }] }));
  assert.deepEqual(names(r), ['llm call']);
});

test('filters on nested attributes', async () => {
  const inTrace = cond('trace_id', 'is', TRACE);
  let r = await query(gw, filt('and', inTrace, cond('attributes', 'is', 'llm', 'ag.type.span')));
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(names(r), ['llm call']);
  r = await query(gw, filt('and', inTrace, cond('attributes', 'is_not', 'llm', 'ag.type.span')));
  assert.deepEqual(names(r), ['root', 'tool']);
  r = await query(gw, filt('and', inTrace, { field: 'attributes.ag.type.span', value: 'tool' }));
  assert.deepEqual(names(r), ['tool']);
  r = await query(gw, filt('and', inTrace, cond('attributes', 'gt', 5, 'n')));
  assert.deepEqual(names(r), ['root']);
  r = await query(gw, filt('and', inTrace, cond('attributes', 'btwn', [1, 10], 'n')));
  assert.deepEqual(names(r), ['root', 'tool']);
  r = await query(gw, filt('and', inTrace, cond('attributes', 'eq', 42, 'gen_ai.usage.prompt_tokens')));
  assert.deepEqual(names(r), ['llm call']);
  r = await query(gw, filt('and', inTrace, cond('attributes', 'in', ['tool', 'workflow'], 'ag.type.span')));
  assert.deepEqual(names(r), ['root', 'tool']);
  r = await query(gw, filt('and', inTrace, cond('attributes', 'exists', undefined, 'ag.data.inputs.q')));
  assert.deepEqual(names(r), ['root']);
  r = await query(gw, filt('and', inTrace, cond('attributes', 'not_exists', undefined, 'n')));
  assert.deepEqual(names(r), ['llm call']);
  r = await query(gw, filt('and', inTrace, cond('attributes', 'contains', '100% "quoted', 'note')));
  assert.deepEqual(names(r), ['llm call']);
  r = await query(gw, filt('and', inTrace, cond('attributes', 'contains', '100%x', 'note')));
  assert.deepEqual(names(r), []); // % is a literal, not a wildcard
  r = await query(gw, filt('and', inTrace, cond('events', 'is', { name: 'exception' })));
  assert.deepEqual(names(r), ['llm call']);
});

test('pagination over 3000 spans returns each exactly once, in order', async () => {
  for (const [limit, order] of [[137, 'descending'], [1000, 'ascending']]) {
    const seen = new Map();
    let next;
    let pages = 0;
    let last = null;
    do {
      const r = await query(gw, {
        filtering: { conditions: [cond('attributes', 'is', 'paging', 'batch')] },
        windowing: { limit, order, next },
      });
      assert.equal(r.status, 200, r.text);
      const b = r.json();
      assert.ok(b.count <= limit);
      for (const s of b.spans) {
        assert.ok(!seen.has(s.span_id), `span ${s.span_id} repeated`);
        seen.set(s.span_id, s);
        const key = `${s.start_time}|${s.trace_id}|${s.span_id}`;
        if (last) assert.ok(order === 'descending' ? key < last : key > last, 'keyset order');
        last = key;
      }
      next = b.windowing.next;
      pages++;
    } while (next);
    assert.equal(seen.size, PAGE_N);
    assert.equal(pages, Math.ceil(PAGE_N / limit));
  }
  // The cursor is only a position: a changed filter still never repeats.
  const r = await query(gw, { windowing: { limit: 5000 } });
  assert.equal(r.json().count, 1000); // limit is capped at 1000
});

test('injection attempts in values, keys and field names are inert', async () => {
  const evil = "x'); DROP TABLE spans; --";
  for (const body of [
    filt('and', cond('span_name', 'is', evil)),
    filt('and', cond('span_name', 'contains', evil)),
    filt('and', cond('attributes', 'is', evil, 'ag.type.span')),
    filt('and', cond('attributes', 'is', 'llm', evil)),
    filt('and', cond('attributes', 'gt', 1, `n') OR 1=1 --`)),
    filt('and', cond('attributes', 'in', [evil, 1], "a\"}', 'b")),
    filt('and', cond('span_id', 'in', [])),
    { filtering: { conditions: [cond('content', 'is', evil)] } },
  ]) {
    const r = await query(gw, body);
    assert.equal(r.status, 200, `${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.json().count, 0, JSON.stringify(body));
  }
  let r = await query(gw, filt('and', cond('span_name; DROP TABLE spans --', 'is', 'x')));
  assert.equal(r.status, 400);
  assert.match(r.json().error, /filtering\.conditions\[0\]\.field: unknown field 'span_name; DROP TABLE spans --'/);
  r = await query(gw, filt('and', cond('span_name', "is' OR '1'='1", 'x')));
  assert.equal(r.status, 400);
  assert.match(r.json().error, /unknown operator 'is' OR '1'='1'/);
  r = await query(gw, { filtering: { operator: 'and', conditions: [{ operator: 'xor', conditions: [] }] } });
  assert.equal(r.status, 400);
  assert.match(r.json().error, /filtering\.conditions\[0\]\.operator: unknown logical operator 'xor'/);
  r = await query(gw, '{"filtering": ');
  assert.equal(r.status, 400);
  // Bad analytics parameters are 400s too.
  r = await get(gw, `/v1/analytics/spans?group_by=${encodeURIComponent("span_type;DROP TABLE spans")}`);
  assert.equal(r.status, 400);
  assert.match(r.json().error, /group_by: unknown dimension/);
  // The table is still there, with every span.
  const n = (await gw.query('SELECT count(*)::int AS n FROM spans'))[0].n;
  assert.equal(n, traceSpans.length + PAGE_N + anaSpans.length + 1);
  // A value PostgreSQL itself rejects (a broken regular expression) is a 400.
  r = await query(gw, filt('and', cond('span_name', 'matches', '(')));
  assert.equal(r.status, 400);
});

// ---- the read pool ------------------------------------------------------------------

// A filter PostgreSQL answers by scanning every span of the project.
const scanAll = () => filt('and', cond('attributes', 'contains', 'no such text', 'batch'));

test('a query past query_timeout_ms is canceled: 504 naming the limit, and the next read works', async () => {
  const g = await startGateway({ db: gw.db, skipSchema: true, workers: 1, conf: ['query_timeout_ms = 1'] });
  try {
    const r = await query(g, scanAll());
    assert.equal(r.status, 504, r.text);
    assert.match(r.json().error, /query_timeout_ms \(1 ms\)/);
    // the log line is written before the answer, but stderr reaches us on its own pipe
    await until(() => /\[warn\].*query canceled after query_timeout_ms.*57014/.test(g.log), 5000, 20);
    assert.match(g.log, /\[warn\].*query canceled after query_timeout_ms.*57014/);
    // A cheap read on the same connection still answers (or is canceled the
    // same way: 1 ms is little), never a 500.
    const t = await get(g, `/v1/traces/${TRACE}`);
    assert.ok([200, 504].includes(t.status), t.text);
    // Ingest has its own pool and no such limit.
    const w = await postJson(g, '/v1/spans', { spans: [{ trace_id: 'c'.repeat(32), span_id: 'c'.repeat(16),
      span_name: 'during', start_time: 1714979289, end_time: 1714979290 }] });
    assert.equal(w.status, 200, w.text);
    assert.deepEqual(g.errorLines(), []);
  } finally {
    await g.stop();
    await gw.query(`DELETE FROM spans WHERE trace_id = '${traceUuid('c'.repeat(32))}'`);
  }
});

test('slow reads queue on their own pool: ingest keeps answering meanwhile', async () => {
  const [{ t0 }] = await gw.query('SELECT now() AS t0');
  const g = await startGateway({
    db: gw.db, skipSchema: true, workers: 1,
    conf: ['pg_pool_size = 1', 'read_pool_size = 1', 'query_timeout_ms = 0'],
  });
  let stopped = 0;
  try {
    // The read connection, stopped (SIGSTOP of its backend): every read waits
    // for it, however fast the machine, until it is let go.
    assert.equal((await query(g, scanAll())).status, 200);
    const [row] = await gw.query(`SELECT pid FROM pg_stat_activity WHERE datname = current_database()
        AND application_name = 'spangate' AND query ILIKE 'select%' AND backend_start >= $1`, [t0]);
    assert.ok(row, 'the read connection is found');
    process.kill(row.pid, 'SIGSTOP');
    stopped = row.pid;
    const N = 30;
    let readsDone = 0;
    const reads = Array.from({ length: N }, () => query(g, scanAll()).then((r) => { readsDone++; return r; }));
    // The reads are sent first, so on a shared pool the write would queue behind them.
    const w = await postJson(g, '/v1/spans', { spans: [{ trace_id: 'd'.repeat(32), span_id: 'd'.repeat(16),
      span_name: 'during', start_time: 1714979289, end_time: 1714979290 }] });
    const pendingAtWrite = N - readsDone;
    assert.equal(w.status, 200, w.text);
    assert.equal(pendingAtWrite, N, `the write answered while ${pendingAtWrite} of ${N} reads were still waiting`);
    process.kill(stopped, 'SIGCONT');
    stopped = 0;
    for (const r of await Promise.all(reads)) assert.equal(r.status, 200, r.text);
  } finally {
    if (stopped) process.kill(stopped, 'SIGCONT');
    await g.stop();
    await gw.query(`DELETE FROM spans WHERE trace_id = '${traceUuid('d'.repeat(32))}'`);
  }
});

// ---- analytics ----------------------------------------------------------------------

test('analytics from PostgreSQL and from ClickHouse agree', async () => {
  const total = traceSpans.length + PAGE_N + anaSpans.length;
  const inCh = await until(async () => {
    const c = Number((await gw.ch(`SELECT count() FROM spans FINAL WHERE project_id = toUUID('0190a3b4-0000-7000-8000-00000000000a')`)).trim());
    return c === total ? c : 0;
  }, 30000, 200);
  assert.equal(inCh, total, 'ClickHouse caught up');
  const from = new Date(A_BASE * 1000).toISOString();
  const to = new Date((A_BASE + 7200) * 1000).toISOString();
  for (const qs of [
    `from=${from}&to=${to}&bucket=15m`,
    `from=${from}&to=${to}&bucket=1800&group_by=span_type,span_kind`,
    `from=${A_BASE}&to=${A_BASE + 7200}&bucket=1h&group_by=span_name,trace_type`,
  ]) {
    const p = await get(gw, `/v1/analytics/spans?${qs}`);
    const c = await get(gwCh, `/v1/analytics/spans?${qs}`);
    assert.equal(p.status, 200, p.text);
    assert.equal(c.status, 200, c.text);
    const pb = p.json();
    const cb = c.json();
    assert.equal(pb.backend, 'postgres');
    assert.equal(cb.backend, 'clickhouse');
    assert.equal(pb.buckets.reduce((a, b) => a + b.count, 0), anaSpans.length, qs);
    assert.equal(pb.buckets.reduce((a, b) => a + b.errors, 0), anaSpans.length / 5, qs);
    assert.equal(cb.buckets.length, pb.buckets.length, qs);
    pb.buckets.forEach((x, i) => {
      const y = cb.buckets[i];
      assert.equal(y.timestamp, x.timestamp);
      assert.deepEqual(y.group, x.group);
      assert.equal(y.count, x.count);
      assert.equal(y.errors, x.errors);
      for (const k of ['p50', 'p95', 'p99'])
        assert.ok(Math.abs(y.duration_ms[k] - x.duration_ms[k]) <= 0.0011, `${qs} ${x.timestamp} ${k}: ${x.duration_ms[k]} vs ${y.duration_ms[k]}`);
    });
  }
  // Checked against a direct computation for one bucket.
  const pb = (await get(gw, `/v1/analytics/spans?from=${A_BASE}&to=${A_BASE + 7200}&bucket=2h`)).json();
  assert.equal(pb.buckets.length, 1);
  const durs = anaSpans.map((s) => (s.end_time - s.start_time) / 1000).sort((a, b) => a - b);
  const pc = (q) => { const x = q * (durs.length - 1); const lo = Math.floor(x); return durs[lo] + (x - lo) * ((durs[lo + 1] ?? durs[lo]) - durs[lo]); };
  assert.ok(Math.abs(pb.buckets[0].duration_ms.p95 - pc(0.95)) < 0.0011);
  // Another project sees none of it, from either store.
  for (const g of [gw, gwCh]) {
    const r = await get(g, `/v1/analytics/spans?from=${A_BASE}&to=${A_BASE + 7200}`, KEY_B);
    assert.equal(r.status, 200);
    assert.deepEqual(r.json().buckets, []);
  }
  // A re-sent, unchanged span is counted once by ClickHouse too.
  const again = anaSpans.slice(0, 10);
  const r = await postJson(gw, '/v1/spans', { spans: again });
  assert.equal(r.status, 200);
  await until(async () => Number((await gw.ch('SELECT count() FROM spans')).trim()) >= total + 10, 15000, 100);
  const c2 = (await get(gwCh, `/v1/analytics/spans?from=${A_BASE}&to=${A_BASE + 7200}&bucket=2h`)).json();
  assert.equal(c2.buckets[0].count, anaSpans.length);
  assert.equal(c2.buckets[0].errors, anaSpans.length / 5);
});
