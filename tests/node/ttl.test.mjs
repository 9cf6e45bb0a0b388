// Retention: ttl.lua's policy fills ClickHouse's expires_at; on servers
// without native TTL (18.16) the gateway's sweep deletes expired rows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGateway, postJson, request, KEY_A, KEY_B, PROJECT_A, PROJECT_B, ROOT, until } from './lib/harness.mjs';

const T = '55555555555555555555555555555555';
const span = (sid) => ({ trace_id: T, span_id: sid, parent_id: '9'.repeat(16), span_name: 'n', start_time: 1714979289, end_time: 1714979289 });

test('a policy of N days for one project and none for another gives the right expires_at', async () => {
  const gw = await startGateway({ clickhouse: true, conf: [`retention_by_project = { ["${PROJECT_A}"] = 31 }`] });
  try {
    assert.equal((await postJson(gw, '/v1/spans', { spans: [span('a000000000000001')] }, KEY_A)).status, 200);
    assert.equal((await postJson(gw, '/v1/spans', { spans: [span('a000000000000002')] }, KEY_B)).status, 200);
    await until(async () => Number((await gw.ch('SELECT count() FROM spans FINAL')).trim()) === 2);
    const rows = (await gw.ch(`SELECT toString(project_id), toUInt32(expires_at) - toUInt32(created_at), toString(expires_at) FROM spans FINAL ORDER BY project_id FORMAT JSONCompact`));
    const data = Object.fromEntries(JSON.parse(rows).data.map((r) => [r[0], r]));
    // created_at µs rounds expires up to the next second: 31 days, within a second.
    const secs = Number(data[PROJECT_A][1]);
    assert.ok(secs >= 31 * 86400 && secs <= 31 * 86400 + 1, `project A expires after ${secs} s`);
    assert.equal(data[PROJECT_B][2], '2105-12-31 23:59:59', 'no policy: never (the documented sentinel)');
  } finally { await gw.stop(); }
});

test('an already-expired policy is swept from ClickHouse 18.16 by the gateway', async () => {
  const d = mkdtempSync(join(tmpdir(), 'sg-ttl-'));
  cpSync(join(ROOT, 'lua'), d, { recursive: true });
  // About one second of retention for project A.
  writeFileSync(join(d, 'ttl.lua'), `
local M = {}
function M.retention_days(project_id, span)
  if project_id == "${PROJECT_A}" then return 1 / 86400 end
  return nil
end
return M
`);
  const gw = await startGateway({ clickhouse: true, scripts: d, conf: ['ttl_sweep_interval_s = 1'] });
  try {
    for (let i = 0; i < 5; i++) assert.equal((await postJson(gw, '/v1/spans', { spans: [span(`b00000000000000${i}`)] }, KEY_A)).status, 200);
    assert.equal((await postJson(gw, '/v1/spans', { spans: [span('b000000000000009')] }, KEY_B)).status, 200);
    await until(async () => Number((await gw.ch('SELECT count() FROM spans FINAL')).trim()) === 6);
    const left = await until(async () => {
      const n = Number((await gw.ch('SELECT count() FROM spans FINAL')).trim());
      return n === 1 ? n : 0;
    }, 20000, 500);
    assert.equal(left, 1, 'only the span without a policy is left');
    assert.equal((await gw.ch('SELECT toString(project_id) FROM spans FINAL')).trim(), PROJECT_B);
    let m; // TTL figures are published twice a second: wait for them
    await until(async () => /spangate_ttl_rows_expired_total [5-9]/.test(m = (await request(gw, 'GET', '/metrics')).text), 5000);
    assert.match(m, /spangate_ttl_rows_expired_total [5-9]/);
    assert.match(m, /spangate_ttl_last_sweep_timestamp_seconds [1-9]\d+/);
    assert.match(gw.log, /TTL sweep: deleting \d+ expired rows from spans/);
    // the read index's rows expire with the spans they point at
    for (const t of ['spans_by_trace', 'spans_by_start']) {
      const q = `SELECT groupUniqArray(toString(project_id)) FROM ${t} WHERE project_id != toUUID('00000000-0000-0000-0000-000000000000') FORMAT TabSeparated`;
      let ps;
      await until(async () => (ps = (await gw.ch(q)).trim()) === `['${PROJECT_B}']`, 20000, 500);
      assert.equal(ps, `['${PROJECT_B}']`, `${t}: only project B's rows are left`);
    }
    assert.equal((await gw.query('SELECT count(*)::int AS n FROM spans'))[0].n, 6, 'PostgreSQL keeps everything (pg_retention is off)');
  } finally { await gw.stop(); }
});
