// Read parity: the same stored spans read from PostgreSQL and from
// ClickHouse give the same bytes, for a large set of span queries (every
// field and operator, JSON keys, NULLs, enums, ids, times, content, nested
// logic, windowing and paging), trace fetches and analytics with metrics.
// The data has what makes ClickHouse differ if a read is careless: spans
// updated after ingest (several versions until a merge), spans whose start
// time moved, soft-deleted spans, numbers written 1.50 and 1e2, Unicode and
// escapes, NULL columns. Where ClickHouse cannot match (README, "Reading
// from ClickHouse") the difference itself is tested.
// Random queries print their seed: SG_TEST_SEED=<n> repeats a run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, postJson, KEY_A, PROJECT_A, traceUuid, spanUuid } from './lib/harness.mjs';
import { both, caughtUp, getWith, queryWith, readScripts, backendOf } from './lib/read_both.mjs';

let gw; // ingests, reads PostgreSQL
let gwCh; // reads ClickHouse

const hex = (n, w) => n.toString(16).padStart(w, '0');
const BASE = 1717200000; // 2024-06-01T00:00:00Z, seconds
const N = 200;

const NAMES = ['chat openai', 'vector_search', 'Retrieve', 'tool_call', 'café au lait', 'ÉCOLE naïve', 'straße',
  'Kelvin \u212a sign', 'İstanbul', '100% sure_thing', 'back\\slash', 'quote "q"', 'tab\there', 'emoji 😀 ok', ''];
const TYPES = ['llm', 'tool', 'chain', 'embedding', null];
const KINDS = ['SPAN_KIND_SERVER', 'SPAN_KIND_CLIENT', 'SPAN_KIND_INTERNAL', 'SPAN_KIND_PRODUCER'];
const STATUS = ['STATUS_CODE_OK', 'STATUS_CODE_ERROR', 'STATUS_CODE_UNSET'];
const NUMS = [0, 1, 1.5, 2, 10, 100, 1e-7, 0.1, 0.0035339999999999998, 123456789012, -3, 42];

function span(i) {
  const t = Math.floor(i / 6);
  const start = (BASE + i * 397) * 1e6 + ((i * 7919) % 1e6);
  const s = {
    trace_id: hex(0xa000 + t, 32), span_id: hex(0xb00000 + i, 16),
    span_name: NAMES[i % NAMES.length], span_kind: KINDS[i % KINDS.length],
    start_time: start, end_time: start + ((i * 37) % 5000) * 1000 + (i % 997),
    status_code: STATUS[i % STATUS.length],
    attributes: {
      ag: {
        type: { span: TYPES[i % TYPES.length] ?? 'none' },
        metrics: { costs: { cumulative: { total: NUMS[i % NUMS.length] } }, tokens: { total: (i * 13) % 500 } },
        user: { id: `user-${i % 17}` },
      },
      gen_ai: { usage: { total_tokens: (i * 31) % 1000, prompt_tokens: i % 2 ? (i * 7) % 300 : undefined } },
      tags: i % 3 ? ['a', 'b', i % 2 ? 'odd' : 'even'] : [],
      n: NUMS[(i * 5) % NUMS.length],
      flag: i % 4 === 0, nothing: null,
      note: i % 5 === 0 ? `timeout after ${i} ms; see docs.example.com or /api/chat, user-0${i}` : `all good ${i}`,
      text: NAMES[(i * 3) % NAMES.length],
      obj: { a: i % 3, b: [1, 2, { c: i % 2 ? 'x' : 'y' }] },
    },
  };
  if (TYPES[i % TYPES.length]) s.span_type = TYPES[i % TYPES.length];
  if (i % 6) s.parent_id = hex(0xb00000 + i - (i % 6), 16);
  if (i % 3 === 0) s.status_message = i % 2 ? 'rate limited' : 'Upstream TIMEOUT';
  if (i % 4 !== 1) s.session_id = `sess-${i % 9}`;
  if (i % 5 !== 2) s.user_id = `u${i % 11}`;
  if (i % 7 === 3) s.agent_id = 'agent-x';
  if (i % 8 === 0) s.events = [{ name: i % 16 ? 'exception' : 'retry', timestamp: new Date(start / 1000).toISOString(),
    attributes: { 'exception.type': 'RateLimit', 'exception.message': `timeout ${i}` } }];
  if (i % 10 === 0) s.links = [{ trace_id: hex(0xc000 + i, 32), span_id: hex(0xd000 + i, 16) }];
  if (i % 12 === 0) s.references = [{ id: hex(i, 32), slug: `app-${i % 3}` }];
  if (i % 9 === 0) s.hashes = [{ id: `h${i}` }];
  if (i % 11 === 0) s.trace_type = i % 2 ? 'annotation' : 'invocation';
  return s;
}

const spans = Array.from({ length: N }, (_, i) => span(i));

async function ingest(list) {
  for (let i = 0; i < list.length; i += 200) {
    const r = await postJson(gw, '/v1/spans', { spans: list.slice(i, i + 200) });
    assert.equal(r.status, 200, r.text);
  }
}

before(async () => {
  gw = await startGateway({ clickhouse: true });
  gwCh = await startGateway({ clickhouse: true, db: gw.db, chdb: gw.chdb, scripts: readScripts() });
  await ingest(spans);
  await caughtUp(gw);
  // No merges from here on: every version of an updated span stays in its
  // own part, as it does on a busy server until the next merge.
  await gw.ch('SYSTEM STOP MERGES spans');
  // Updates: re-sent spans with other values (a second version, in another
  // ClickHouse part, until a merge), some with a moved start time.
  const updated = spans.filter((_, i) => i % 7 === 0).map((s, k) => ({
    ...s, status_code: 'STATUS_CODE_ERROR', span_name: `${s.span_name} v2`,
    attributes: { ...s.attributes, ag: { ...s.attributes.ag, type: { span: 'updated' } }, n: 1e2 },
    ...(k % 3 === 0 ? { start_time: s.start_time - 3600e6, end_time: s.end_time - 3600e6 } : {}),
  }));
  await ingest(updated);
  await caughtUp(gw);
  // Soft deletes as Agenta writes them (deleted_at), carried to ClickHouse as
  // a new version of the row, the way the migration and change capture do.
  const del = spans.filter((_, i) => i % 13 === 5).map((s) => spanUuid(s.span_id));
  await gw.query(`UPDATE spans SET deleted_at = now(), updated_at = clock_timestamp() WHERE span_id = ANY($1::uuid[])`, [del]);
  const rows = await gw.query(`SELECT trace_id::text t, span_id::text s, (extract(epoch FROM deleted_at) * 1000000)::int8::text d,
      (extract(epoch FROM updated_at) * 1000000)::int8::text u FROM spans WHERE span_id = ANY($1::uuid[])`, [del]);
  const cols = (await gw.ch('DESCRIBE TABLE spans')).trim().split('\n').map((l) => l.split('\t')[0]);
  for (const r of rows) {
    const set = { deleted_at: `toDateTime(intDiv(${r.d}, 1000000))`, deleted_at_us: `toUInt32(${r.d} % 1000000)`,
      updated_at: `toDateTime(intDiv(${r.u}, 1000000))`, updated_at_us: `toUInt32(${r.u} % 1000000)`, version: r.u };
    await gw.ch(`INSERT INTO spans SELECT ${cols.map((x) => set[x] ?? `\`${x}\``).join(', ')}
      FROM spans FINAL WHERE trace_id = toUUID('${r.t}') AND span_id = toUUID('${r.s}')`);
  }
  await caughtUp(gw);
  const versions = Number((await gw.ch('SELECT count() - uniqExact(created_at, trace_id, span_id) FROM spans')).trim());
  assert.ok(versions > 0, 'ClickHouse holds several versions of some spans (not merged yet)');
});

after(async () => {
  await gw?.ch('SYSTEM START MERGES spans');
  await gwCh?.stop();
  await gw?.stop();
  for (const g of [gw, gwCh]) if (g) assert.deepEqual(g.errorLines(), [], 'no error lines in the log');
});

const q = (body, what) => both(gw, gwCh, (g) => queryWith(g, body), what || JSON.stringify(body));
const c = (field, operator, value, key, options) => ({ field, operator, value, key, ...(options ? { options } : {}) });
const all = { windowing: { limit: 1000 } };
const where = (...conds) => ({ filtering: { operator: 'and', conditions: conds }, windowing: { limit: 1000 } });

// ---- the conditions -------------------------------------------------------------------

const T0 = new Date((BASE + 40000) * 1000).toISOString();
const T1 = (BASE + 90000) * 1e6;
const CONDS = [
  // ids
  c('trace_id', 'is', hex(0xa000 + 3, 32)), c('trace_id', 'is', `0x${hex(0xa000 + 4, 32)}`),
  c('trace_id', 'in', [hex(0xa001, 32), traceUuid(hex(0xa002, 32))]), c('trace_id', 'not_in', [hex(0xa001, 32)]),
  c('span_id', 'is', hex(0xb00000 + 7, 16)), c('span_id', 'is_not', hex(0xb00000 + 7, 16)), c('span_id', 'in', []),
  c('span_id', 'not_in', []), c('parent_id', 'exists'), c('parent_id', 'not_exists'), c('parent_id', 'is', null),
  c('parent_id', 'is_not', null), c('parent_id', 'is', hex(0xb00000 + 6, 16)), c('parent_id', 'neq', hex(0xb00000 + 6, 16)),
  c('deleted_by_id', 'not_exists'),
  // enums
  c('span_type', 'is', 'llm'), c('span_type', 'is', 'LLM'), c('span_type', 'is_not', 'tool'), c('span_type', 'is', null),
  c('span_type', 'in', ['tool', 'chain']), c('span_type', 'not_in', ['tool']), c('span_kind', 'is', 'server'),
  c('span_kind', 'in', ['client', 'SPAN_KIND_PRODUCER']), c('status_code', 'is', 'error'), c('status_code', 'neq', 'STATUS_CODE_OK'),
  c('trace_type', 'is', 'invocation'), c('trace_type', 'exists'), c('trace_type', 'not_in', ['annotation']),
  // strings
  c('span_name', 'is', 'tool_call'), c('span_name', 'eq', 'café au lait'), c('span_name', 'is_not', 'straße'),
  c('span_name', 'startswith', 'ret'), c('span_name', 'startswith', 'Ret', undefined, { case_sensitive: true }),
  c('span_name', 'endswith', 'V2'), c('span_name', 'contains', 'école'), c('span_name', 'contains', 'NAÏVE'),
  c('span_name', 'contains', 'k sign'), c('span_name', 'contains', 'istanbul'), c('span_name', 'contains', 'İSTANBUL'),
  c('span_name', 'contains', 'STRASSE'), c('span_name', 'contains', '100%'), c('span_name', 'contains', '_thing'),
  c('span_name', 'contains', 'back\\slash'), c('span_name', 'contains', '"q"'), c('span_name', 'contains', '\t'),
  c('span_name', 'contains', '😀'), c('span_name', 'like', 'c%t'), c('span_name', 'like', '%_o_%'),
  c('span_name', 'like', 'C_F%', undefined, { case_sensitive: true }), c('span_name', 'like', '100\\%%'),
  c('span_name', 'matches', '^(chat|tool)'), c('span_name', 'matches', 'v2$'), c('span_name', 'matches', '[0-9]+'),
  c('span_name', 'matches', 'CAFÉ'), c('span_name', 'matches', 'CAFÉ', undefined, { case_sensitive: true }),
  c('span_name', 'matches', 'a.c'), c('span_name', 'gt', 'r'), c('span_name', 'lte', 'café'), c('span_name', 'btwn', ['a', 'm']),
  c('span_name', 'in', ['straße', 'tool_call', 'nope']), c('span_name', 'not_in', ['straße']), c('span_name', 'is', ''),
  c('status_message', 'exists'), c('status_message', 'not_exists'), c('status_message', 'contains', 'timeout'),
  c('status_message', 'is_not', 'rate limited'), c('status_message', 'gt', 'S'), c('status_message', 'not_in', ['rate limited']),
  c('session_id', 'is', 'sess-3'), c('session_id', 'is', null), c('user_id', 'in', ['u1', 'u2']), c('user_id', 'neq', 'u3'),
  c('agent_id', 'exists'), c('agent_id', 'is_not', 'agent-x'),
  // times
  c('start_time', 'gt', T0), c('start_time', 'lt', T1), c('start_time', 'btwn', [T0, T1]), c('end_time', 'gte', BASE + 50000),
  c('start_time', 'is', spans[10].start_time), c('start_time', 'in', [spans[11].start_time, spans[12].start_time]),
  c('updated_at', 'exists'), c('updated_at', 'not_exists'), c('updated_at', 'gt', '2000-01-01T00:00:00Z'),
  c('deleted_at', 'exists'), c('deleted_at', 'is', null), c('created_at', 'lt', '2100-01-01T00:00:00Z'),
  // JSON with keys
  c('attributes', 'is', 'llm', 'ag.type.span'), c('attributes', 'is_not', 'llm', 'ag.type.span'),
  c('attributes', 'is', 'updated', 'ag.type.span'), c('attributes', 'is', { span: 'tool' }, 'ag.type'),
  c('attributes', 'is', 1.5, 'ag.metrics.costs.cumulative.total'), c('attributes', 'is', 100, 'n'),
  c('attributes', 'eq', 100.0, 'n'), c('attributes', 'eq', 1e-7, 'ag.metrics.costs.cumulative.total'),
  c('attributes', 'neq', 2, 'n'), c('attributes', 'is', true, 'flag'), c('attributes', 'is', false, 'flag'),
  c('attributes', 'is', null, 'nothing'), c('attributes', 'is', null, 'missing'), c('attributes', 'is_not', null, 'nothing'),
  c('attributes', 'is_not', null, 'note'), c('attributes', 'eq', null, 'nothing'),
  c('attributes', 'gt', 5, 'n'), c('attributes', 'lt', 0.5, 'ag.metrics.costs.cumulative.total'),
  c('attributes', 'gte', 0.0035339999999999998, 'ag.metrics.costs.cumulative.total'), c('attributes', 'btwn', [1, 100], 'n'),
  c('attributes', 'gt', 'm', 'text'), c('attributes', 'btwn', ['a', 'd'], 'ag.type.span'),
  c('attributes', 'gt', 200, 'gen_ai.usage.total_tokens'), c('attributes', 'lte', 100, 'gen_ai.usage.prompt_tokens'),
  c('attributes', 'startswith', 'user-1', 'ag.user.id'), c('attributes', 'contains', 'TIMEOUT', 'note'),
  c('attributes', 'contains', 'timeout', 'note', { case_sensitive: true }), c('attributes', 'contains', '.5', 'n'),
  c('attributes', 'contains', 'tru', 'flag'), c('attributes', 'contains', '"a": 0', 'obj'), c('attributes', 'like', '%docs.%', 'note'),
  c('attributes', 'endswith', 'E', 'text'), c('attributes', 'matches', '^all good [0-9]+$', 'note'),
  c('attributes', 'in', ['llm', 'tool'], 'ag.type.span'), c('attributes', 'in', [100, 1.5, 'x'], 'n'),
  c('attributes', 'not_in', ['llm'], 'ag.type.span'), c('attributes', 'in', [], 'n'),
  c('attributes', 'exists', undefined, 'gen_ai.usage.prompt_tokens'), c('attributes', 'not_exists', undefined, 'gen_ai.usage.prompt_tokens'),
  c('attributes', 'is', 'a', 'tags.0'), c('attributes', 'is', 'odd', 'tags.-1'), c('attributes', 'exists', undefined, 'tags.2'),
  c('attributes', 'eq', 'x', 'obj.b.2.c'), c('attributes', 'is', 2, 'obj.b.1'), c('attributes', 'eq', [1, 2, { c: 'y' }], 'obj.b'),
  c('attributes', 'is', { a: 1 }, 'obj'), c('attributes', 'is', [{ c: 'x' }], 'obj.b'),
  { field: 'attributes.ag.user.id', value: 'user-3' }, { field: 'attributes.tags', operator: 'is', value: 'odd' },
  // JSON without keys
  c('attributes', 'is', { ag: { user: { id: 'user-4' } } }), c('attributes', 'exists'), c('events', 'is', { name: 'retry' }),
  c('events', 'is', [{ name: 'exception' }]), c('events', 'is_not', { name: 'retry' }), c('events', 'not_exists'),
  c('events', 'is', { attributes: { 'exception.type': 'RateLimit' } }), c('links', 'exists'), c('references', 'is', { slug: 'app-1' }),
  c('hashes', 'is', null), c('links', 'is', { span_id: hex(0xd000 + 20, 16) }), c('events', 'exists', undefined, '0.name'),
  c('events', 'is', 'retry', '0.name'), c('references', 'contains', 'app', '0.slug'),
  // content (words on which PostgreSQL's parser and ours agree)
  c('content', 'is', 'timeout'), c('content', 'contains', 'rate'), c('content', 'is', '"all good"'),
  c('content', 'is', 'timeout or good'), c('content', 'is', 'good -all'), c('content', 'is', 'RETRIEVE'), c('content', 'is', 'RateLimit'),
  c('content', 'is', 'café'), c('content', 'is', 'nosuchword'),
];

// Runs fn over items, `width` at a time (the servers have work to overlap).
async function each(items, fn, width = 4) {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  }));
}

test('every condition alone: the same spans, the same bytes', async () => {
  await each(CONDS, (cond) => q(where(cond)));
});

test('logical operators, nesting and empty condition lists', async () => {
  const a = c('span_type', 'is', 'llm'), b = c('attributes', 'gt', 5, 'n'), d = c('status_message', 'exists');
  for (const op of ['and', 'or', 'nand', 'nor']) {
    await q({ filtering: { operator: op, conditions: [a, b, d] }, windowing: { limit: 1000 } });
    await q({ filtering: { operator: op, conditions: [] }, windowing: { limit: 1000 } });
  }
  await q({ filtering: { operator: 'not', conditions: [d] }, windowing: { limit: 1000 } });
  // NOT over a NULL comparison stays unknown (the span is left out on both)
  await q({ filtering: { operator: 'not', conditions: [c('status_message', 'eq', 'rate limited')] }, windowing: { limit: 1000 } });
  await q({ filtering: { operator: 'nor', conditions: [c('session_id', 'startswith', 'sess'), c('user_id', 'is', 'u1')] }, ...all });
  await q({ filtering: { operator: 'or', conditions: [{ operator: 'and', conditions: [a, { operator: 'not', conditions: [b] }] },
    { operator: 'nand', conditions: [d, c('attributes', 'is', 'x', 'obj.b.2.c')] }, { conditions: [] }] }, ...all });
  await q({ filtering: { conditions: [] } });
  await q({});
  await q({ filtering: null, windowing: null });
});

test('random combinations of conditions and windowing (seeded)', async () => {
  const seed = Number(process.env.SG_TEST_SEED || Date.now() % 1e9);
  console.log(`read_parity seed: ${seed} (SG_TEST_SEED=${seed} repeats it)`);
  let x = seed;
  const rnd = (n) => { x = (x * 1103515245 + 12345) % 2147483648; return x % n; };
  const pick = (arr) => arr[rnd(arr.length)];
  const node = (depth) => {
    if (depth > 2 || rnd(3) === 0) return pick(CONDS);
    const k = 1 + rnd(3);
    const op = pick(['and', 'or', 'not', 'nand', 'nor']);
    return { operator: op, conditions: Array.from({ length: op === 'not' ? 1 : k }, () => node(depth + 1)) };
  };
  const bodies = Array.from({ length: 60 }, () => {
    const w = { limit: pick([1, 3, 17, 100, 1000]), order: pick(['ascending', 'descending']) };
    if (rnd(2)) w.oldest = new Date((BASE + rnd(100000)) * 1000).toISOString();
    if (rnd(2)) w.newest = BASE + 40000 + rnd(120000);
    return { filtering: { operator: pick(['and', 'or']), conditions: [node(0), node(1)] }, windowing: w };
  });
  await each(bodies, (body, i) => q(body, `seed ${seed} #${i}: ${JSON.stringify(body)}`));
});

test('paging: the same pages and cursors, every span once, on both', async () => {
  for (const [limit, order, filtering] of [[7, 'descending', undefined], [11, 'ascending', { conditions: [c('attributes', 'is', 'llm', 'ag.type.span')] }],
    [13, 'descending', { operator: 'or', conditions: [c('span_name', 'contains', 'v2'), c('content', 'is', 'timeout')] }]]) {
    let next;
    const seen = new Set();
    let pages = 0;
    do {
      const r = await q({ filtering, windowing: { limit, order, next } });
      for (const s of r.json().spans) {
        assert.ok(!seen.has(s.span_id), `span ${s.span_id} twice`);
        seen.add(s.span_id);
      }
      next = r.json().windowing.next;
      pages++;
    } while (next && pages < 200);
    assert.ok(pages > 1, 'several pages');
  }
  // A cursor made by one store pages on in the other: they order alike.
  const p1 = await queryWith(gw, { windowing: { limit: 10 } });
  const next = p1.json().windowing.next;
  const a = await queryWith(gw, { windowing: { limit: 10, next } });
  const b = await queryWith(gwCh, { windowing: { limit: 10, next } });
  assert.equal(backendOf(b), 'clickhouse');
  assert.equal(b.text, a.text);
});

test('paging a bounded window (ClickHouse scans it in slices from its page-order end): the same pages, every span once', async () => {
  // Spans every 397 s from BASE: a window of ~19 h holds ~170 of them. A page
  // of 9 comes from the first slice; a filter few spans pass (the renamed
  // ones; errors) needs later, wider slices, some of them empty.
  const oldest = new Date((BASE + 1000) * 1000).toISOString(), newest = BASE + 70000;
  for (const [limit, order, filtering] of [[9, 'descending', undefined], [9, 'ascending', undefined],
    [2, 'descending', { conditions: [c('span_name', 'contains', 'v2')] }],
    [3, 'ascending', { conditions: [c('status_code', 'is', 'error'), c('attributes', 'exists', undefined, 'ag')] }]]) {
    let next;
    const seen = new Set();
    let pages = 0;
    do {
      const r = await q({ filtering, windowing: { limit, order, oldest, newest, next } }, `${order} ${limit} page ${pages}`);
      for (const s of r.json().spans) {
        assert.ok(!seen.has(s.span_id), `span ${s.span_id} twice`);
        seen.add(s.span_id);
      }
      next = r.json().windowing.next;
      pages++;
    } while (next && pages < 200);
    // every span of the window that passes the filter, once, on both
    const whole = await q({ filtering, windowing: { limit: 1000, order, oldest, newest } });
    assert.ok(whole.json().count > limit, `${JSON.stringify(filtering)}: ${whole.json().count} spans, several pages`);
    assert.equal(seen.size, whole.json().count);
  }
});

test('trace fetch: every trace, the same bytes (updated, moved and deleted spans included)', async () => {
  const traces = [...new Set(spans.map((s) => s.trace_id))];
  for (const t of traces) await both(gw, gwCh, (g) => getWith(g, `/v1/traces/${t}`), `trace ${t}`);
  await both(gw, gwCh, (g) => getWith(g, `/v1/traces/${'f'.repeat(32)}`), 'unknown trace');
});

test('analytics with metrics and attribute groups: the same bytes', async () => {
  const from = BASE, to = BASE + 400 * 397;
  for (const qs of [
    `from=${from}&to=${to}&bucket=1d&metrics=sum:attributes.gen_ai.usage.total_tokens,avg:attributes.ag.metrics.costs.cumulative.total`,
    `from=${from}&to=${to}&bucket=6h&group_by=span_type,attributes.ag.type.span&metrics=sum:attributes.ag.metrics.costs.cumulative.total,avg:attributes.gen_ai.usage.prompt_tokens`,
    `from=${from}&to=${to}&bucket=1h&group_by=attributes.ag.user.id,span_kind,attributes.flag,attributes.obj.b`,
    `from=${from}&to=${to}&bucket=12h&group_by=attributes.n,trace_type&metrics=sum:attributes.n,avg:attributes.n,sum:attributes.text`,
    `from=${from}&to=${to}&bucket=1d&group_by=span_name`,
  ]) {
    const r = await both(gw, gwCh, (g) => getWith(g, `/v1/analytics/spans?${qs}`), qs);
    assert.equal(r.status, 200, r.text);
  }
  // Sums are exact decimals: 0.1 and 0.0035339999999999998 add up as numeric does.
  const r = (await getWith(gw, `/v1/analytics/spans?from=${from}&to=${to}&bucket=366d&metrics=sum:attributes.ag.metrics.costs.cumulative.total`)).json();
  const want = (await gw.query(`SELECT sum((attributes #>> '{ag,metrics,costs,cumulative,total}')::numeric)::text AS s FROM spans
      WHERE deleted_at IS NULL AND start_time >= to_timestamp(${from}) AND start_time < to_timestamp(${to})`))[0].s;
  assert.equal(r.buckets.length, 1);
  assert.equal(r.buckets[0].metrics['sum:attributes.ag.metrics.costs.cumulative.total'], Number(want));
  // deleted spans are left out on both
  const del = (await gw.query('SELECT count(*)::int AS n FROM spans WHERE deleted_at IS NOT NULL'))[0].n;
  assert.ok(del > 0);
  const total = (await getWith(gw, `/v1/analytics/spans?from=0&to=4000000000&bucket=366d&group_by=attributes.flag`)).json()
    .buckets.reduce((a, b) => a + b.count, 0);
  assert.equal(total, N - del);
});

// ---- where ClickHouse differs (documented in the README) ----------------------------------

test('documented: `matches` is PCRE2 on ClickHouse, POSIX ARE on PostgreSQL', async () => {
  // \m (ARE's start of word) is not PCRE2: PostgreSQL answers, ClickHouse refuses the pattern
  const body = where(c('span_name', 'matches', '\\mtool'));
  const p = await queryWith(gw, body);
  const h = await queryWith(gwCh, body);
  assert.equal(p.status, 200, p.text);
  assert.ok(p.json().count > 0);
  assert.equal(h.status, 400, h.text);
  assert.match(h.json().error, /not valid for its field or operator/);
  // \b is a word boundary in PCRE2 and a backspace in ARE
  const b2 = where(c('span_name', 'matches', 'call\\b'));
  assert.equal((await queryWith(gw, b2)).json().count, 0);
  assert.ok((await queryWith(gwCh, b2)).json().count > 0);
});

test('documented: `content` words on ClickHouse are runs of letters and digits', async () => {
  // PostgreSQL's parser keeps "/api/chat" as one file-path token and "-0N"
  // after a hyphen as a signed number; ClickHouse's reading finds the words
  for (const word of ['api', '05']) {
    const body = where(c('content', 'is', word), c('attributes', 'contains', 'timeout after', 'note'));
    const p = (await queryWith(gw, body)).json();
    const h = (await queryWith(gwCh, body)).json();
    assert.ok(h.count > p.count, `${word}: ClickHouse ${h.count}, PostgreSQL ${p.count}`);
  }
});

test('a project sees only its own spans, on both stores', async () => {
  await both(gw, gwCh, (g) => queryWith(g, all, 'key-b-' + 'y'.repeat(20)), 'project B');
  const r = await queryWith(gwCh, where(c('trace_id', 'is', hex(0xa000, 32))));
  assert.ok(r.json().spans.every((s) => s.trace_id === hex(0xa000, 32)));
  assert.equal(PROJECT_A.length, 36);
  assert.equal(KEY_A.length > 0, true);
});
