// The read parity harness: one read sent to a gateway that answers from
// PostgreSQL and to one that answers from ClickHouse (same databases), and
// the two answers compared. Used by every read test (read*.test.mjs).
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request, postJson, ROOT, until, KEY_A } from './harness.mjs';

// A directory of scripts: the repo's lua/ with read_backend answering
// `answer` (a Lua expression over query, project_id, endpoint).
export function readScripts(answer = '"clickhouse"') {
  const dir = mkdtempSync(join(tmpdir(), 'sg-read-lua-'));
  cpSync(join(ROOT, 'lua'), dir, { recursive: true });
  const p = join(dir, 'routing.lua');
  const src = readFileSync(p, 'utf8');
  const i = src.lastIndexOf('return M');
  writeFileSync(p, `${src.slice(0, i)}function M.read_backend(query, project_id, endpoint) return ${answer} end\n\nreturn M\n`);
  return dir;
}

export const backendOf = (r) => r.headers['x-spangate-read-backend'];

// Analytics answers name their store; otherwise the same bytes.
function sameAnalytics(p, c, what) {
  assert.equal(p.json().backend, 'postgres', what);
  assert.equal(c.json().backend, 'clickhouse', what);
  assert.equal(c.text.replace('"backend":"clickhouse"', '"backend":"postgres"'), p.text, what);
}

// Sends the read to both gateways at once; asserts each says where its
// answer came from and that the answers are equal; returns PostgreSQL's.
export async function both(pg, ch, send, what) {
  const [p, c] = await Promise.all([send(pg), send(ch)]);
  assert.equal(c.status, p.status, `${what}: status ${p.status} from PostgreSQL, ${c.status} from ClickHouse: ${c.text}`);
  if (backendOf(p) === undefined) { // refused before a store was asked (401, 400 ...)
    assert.equal(backendOf(c), undefined, what);
  } else {
    assert.equal(backendOf(p), 'postgres', what);
    assert.equal(backendOf(c), 'clickhouse', `${what}: ${c.headers['x-spangate-read-fallback'] || ''}`);
  }
  if (p.status === 200 && /^\{"backend"/.test(p.text)) sameAnalytics(p, c, what);
  else assert.equal(c.text, p.text, what);
  return p;
}

// ClickHouse holds every span PostgreSQL has, at their latest versions
// (one gateway ingests, the other reads: this is the wait the freshness
// rule does inside one process).
export async function caughtUp(gw, timeoutMs = 30000) {
  const want = async () => (await gw.query(`SELECT count(*)::int AS n, coalesce(sum(extract(epoch FROM coalesce(updated_at, created_at)) * 1000000), 0)::text AS v FROM spans`))[0];
  const ok = await until(async () => {
    const w = await want();
    const c = (await gw.ch('SELECT count(), sum(version) FROM spans FINAL')).trim().split('\t');
    return Number(c[0]) === w.n && BigInt(c[1] || 0) === BigInt(w.v.split('.')[0]);
  }, timeoutMs, 100);
  assert.ok(ok, 'ClickHouse caught up with PostgreSQL');
}

export const getWith = (g, path, key = KEY_A) => request(g, 'GET', path, undefined, key ? { authorization: `ApiKey ${key}` } : {});
export const queryWith = (g, body, key = KEY_A) => postJson(g, '/v1/spans/query', body, key);
