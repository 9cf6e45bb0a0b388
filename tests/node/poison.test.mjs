// Poison isolation: a span PostgreSQL cannot store as sent never fails the
// requests that share its group commit.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, postJson, spanUuid } from './lib/harness.mjs';

// A long commit window makes every request below share one transaction.
const gw = await startGateway({ conf: ['commit_window_ms = 200', 'workers = 1'] });
after(async () => { await gw.stop(); });
const T = '22222222222222222222222222222222';
const sp = (sid, extra = {}) => ({ trace_id: T, span_id: sid, parent_id: '9999999999999999', span_name: 'n', start_time: 1714979289, end_time: 1714979289, ...extra });

test('NUL characters and bad time ranges beside good spans, in flight together', async () => {
  const reqs = [
    postJson(gw, '/v1/spans', { spans: [sp('3000000000000001')] }),
    postJson(gw, '/v1/spans', `{"spans":[${JSON.stringify(sp('3000000000000002'))},{"trace_id":"${T}","span_id":"3000000000000003","span_name":"nul\\u0000name","start_time":1714979289,"end_time":1714979289,"attributes":{"k":"v\\u0000"}}]}`),
    // A NUL inside an object key cannot be represented at all: that request
    // alone is refused, naming the problem.
    postJson(gw, '/v1/spans', `{"spans":[{"trace_id":"${T}","span_id":"3000000000000007","span_name":"x","start_time":1,"end_time":1,"attributes":{"k\\u0000":1}}]}`),
    postJson(gw, '/v1/spans', { spans: [sp('3000000000000004', { start_time: '99999-01-01T00:00:00Z' }), sp('3000000000000005')] }),
    postJson(gw, '/v1/spans', { spans: [sp('3000000000000006')] }),
  ];
  const res = await Promise.all(reqs);
  assert.equal(res[2].status, 400);
  assert.match(res[2].json().error, /NUL/);
  res.splice(2, 1);
  for (const r of res) assert.equal(r.status, 200, r.text);
  assert.equal(res[2].json().rejected, 1);
  assert.match(res[2].json().error, /start_time/);
  const rows = await gw.query('SELECT span_id::text, span_name, attributes FROM spans WHERE trace_id = $1 ORDER BY span_id', [`${T.slice(0, 8)}-${T.slice(8, 12)}-${T.slice(12, 16)}-${T.slice(16, 20)}-${T.slice(20)}`]);
  const ids = rows.map((r) => r.span_id);
  for (const s of ['3000000000000001', '3000000000000002', '3000000000000003', '3000000000000005', '3000000000000006'])
    assert.ok(ids.includes(spanUuid(s)), `span ${s} stored`);
  const nul = rows.find((r) => r.span_id === spanUuid('3000000000000003'));
  assert.equal(nul.span_name, 'nul\uFFFDname', 'NUL is replaced by U+FFFD');
  assert.equal(nul.attributes.k, 'v\uFFFD');
});

test('a second root span in a trace is rejected alone, the rest of its batch is stored', async () => {
  const T2 = '33333333333333333333333333333333';
  const root = (sid) => ({ trace_id: T2, span_id: sid, span_name: 'root', start_time: 1714979289, end_time: 1714979289 });
  const a = postJson(gw, '/v1/spans', { spans: [root('4000000000000001')] });
  const b = postJson(gw, '/v1/spans', { spans: [root('4000000000000002'), { ...root('4000000000000003'), parent_id: '4000000000000001' }] });
  const [ra, rb] = await Promise.all([a, b]);
  assert.equal(ra.status, 200);
  assert.equal(rb.status, 200);
  const rows = await gw.query(`SELECT span_id::text FROM spans WHERE trace_id = '33333333-3333-3333-3333-333333333333' ORDER BY 1`);
  assert.equal(rows.length, 2, 'one root and the child');
  const rejected = ra.json().rejected ?? 0 + (rb.json().rejected ?? 0);
  assert.ok((ra.json().rejected ?? 0) + (rb.json().rejected ?? 0) === 1, 'exactly one root rejected');
  const msg = (ra.json().error || '') + (rb.json().error || '');
  assert.match(msg, /root/);
  void rejected;
});
