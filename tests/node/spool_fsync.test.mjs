// A spool fsync that fails must not be answered 200: the request's
// ClickHouse rows are not durable, and nothing else records them. The
// failure is real: libfiu's POSIX preload (Debian's fiu-utils) makes the
// gateway's next fdatasync() fail with EIO, switched on from outside the
// running process with fiu-ctrl. The binary is the unmodified build.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGateway, postJson, request, until, BIN } from './lib/harness.mjs';

const FIU = '/usr/lib/fiu';

async function metric(gw, name) {
  const m = (await request(gw, 'GET', '/metrics')).text.match(new RegExp(`^${name} (\\d+)`, 'm'));
  return m ? Number(m[1]) : NaN;
}

test('a failed spool fsync answers 503 with Retry-After; the retry is stored and reaches ClickHouse', async () => {
  assert.ok(existsSync(`${FIU}/fiu_posix_preload.so`), 'fiu-utils is installed (scripts/deps.sh)');
  const fifo = join(mkdtempSync(join(tmpdir(), 'sg-fiu-')), 'ctrl');
  // The ASan build's runtime must come first in the preload list.
  const asan = execFileSync('ldd', [BIN]).toString().match(/=>\s*(\S*libasan\.so\S*)/);
  const gw = await startGateway({
    clickhouse: true, workers: 1,
    env: {
      LD_PRELOAD: [asan && asan[1], `${FIU}/fiu_run_preload.so`, `${FIU}/fiu_posix_preload.so`].filter(Boolean).join(' '),
      FIU_CTRL_FIFO: fifo, FIU_ENABLE: '',
    },
  });
  const fiu = (cmd) => execFileSync('fiu-ctrl', ['-f', fifo, '-c', cmd, String(gw.proc.pid)], { stdio: 'pipe' });
  const span = (sid) => ({ spans: [{ trace_id: 'a'.repeat(32), span_id: sid, parent_id: '5'.repeat(16), span_name: 'fsync', start_time: 1714979289, end_time: 1714979289 }] });
  try {
    // A first request opens the spool's segment; once ClickHouse has its
    // row the spool is idle, so the next fdatasync is the next request's.
    assert.equal((await postJson(gw, '/v1/spans', span('b000000000000001'))).status, 200);
    assert.ok(await until(async () => (await metric(gw, 'spangate_spool_records')) === 0 &&
      Number((await gw.ch('SELECT count() FROM spans FINAL')).trim()) === 1), 'first row delivered');

    fiu('enable name=posix/io/sync/fdatasync,failinfo=5,onetime');
    const r = await postJson(gw, '/v1/spans', span('b000000000000002'));
    assert.equal(r.status, 503, r.text);
    assert.equal(r.headers['retry-after'], '1');
    assert.match(r.json().error, /could not be queued durably for ClickHouse; retry/);
    assert.match(gw.log, /fsync failed/);
    // PostgreSQL has the span already; the retry is an upsert of the same row.
    assert.equal((await gw.query(`SELECT count(*)::int AS n FROM spans WHERE span_name = 'fsync'`))[0].n, 2);

    const again = await postJson(gw, '/v1/spans', span('b000000000000002'));
    assert.equal(again.status, 200, again.text);
    assert.equal((await gw.query(`SELECT count(*)::int AS n FROM spans WHERE span_name = 'fsync'`))[0].n, 2);
    const n = await until(async () => {
      const c = Number((await gw.ch(`SELECT count() FROM spans FINAL WHERE span_name = 'fsync'`)).trim());
      return c === 2 ? c : 0;
    });
    assert.equal(n, 2, 'both spans reach ClickHouse, once each');
    assert.deepEqual(await gw.stop(), { code: 0, signal: null }, 'clean exit');
  } finally { await gw.stop(); }
});
