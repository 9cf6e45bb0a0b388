// A ttl.lua answer too large for int64 µs (or not a number of days at all)
// must give the ClickHouse row the "never" expiry, never an overflowed,
// negative one that the row encoder refuses (the span would then be missing
// from ClickHouse). Under the ASan+UBSan build an overflow would abort.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGateway, postJson, KEY_A, ROOT, until } from './lib/harness.mjs';

const T = '66666666666666666666666666666666';
// span name -> what ttl.lua answers for it
const CASES = {
  cast: '5e8',              // accepted by the hook (< 1e9 days); days * 86400e6 overflows int64
  sum: '106751991',         // days * 86400e6 fits; + created_at does not
  huge: '1e300',            // refused by the hook (logged): kept forever
  inf: 'math.huge',
  nan: '0/0',
  neg: '-1',
  month: '31',              // a sane policy still works
};

test('ttl.lua answers past what int64 µs holds give a never-expiring ClickHouse row', async () => {
  const d = mkdtempSync(join(tmpdir(), 'sg-ttlclamp-'));
  cpSync(join(ROOT, 'lua'), d, { recursive: true });
  writeFileSync(join(d, 'ttl.lua'), `
local M = {}
local DAYS = { ${Object.entries(CASES).map(([k, v]) => `${k} = ${v}`).join(', ')} }
function M.retention_days(project_id, span)
  return DAYS[span.span_name]
end
return M
`);
  const gw = await startGateway({ clickhouse: true, scripts: d });
  try {
    const names = Object.keys(CASES);
    const spans = names.map((n, i) => ({
      trace_id: T, span_id: `c0000000000000${String(i).padStart(2, '0')}`, parent_id: '7'.repeat(16),
      span_name: n, start_time: 1714979289, end_time: 1714979289,
    }));
    const r = await postJson(gw, '/v1/spans', { spans }, KEY_A);
    assert.equal(r.status, 200, r.text);
    const n = await until(async () => {
      const c = Number((await gw.ch('SELECT count() FROM spans FINAL')).trim());
      return c === names.length ? c : 0;
    });
    assert.equal(n, names.length, `every span reaches ClickHouse\n${gw.log}`);
    const rows = JSON.parse(await gw.ch(
      'SELECT span_name, toString(expires_at), toUInt32(expires_at) - toUInt32(created_at) FROM spans FINAL FORMAT JSONCompact')).data;
    const got = Object.fromEntries(rows.map((x) => [x[0], x]));
    for (const name of ['cast', 'sum', 'huge', 'inf', 'nan', 'neg'])
      assert.equal(got[name][1], '2105-12-31 23:59:59', `${name}: never expires`);
    const secs = Number(got.month[2]);
    assert.ok(secs >= 31 * 86400 && secs <= 31 * 86400 + 1, `31 days: ${secs} s`);
    assert.doesNotMatch(gw.log, /cannot be written to ClickHouse/);
    // The answers that are not a number of days are logged as hook errors.
    assert.match(gw.log, /M\.retention_days must return a number of days >= 0 or nil/);
    assert.deepEqual(await gw.stop(), { code: 0, signal: null }, 'clean exit');
  } finally { await gw.stop(); }
});
