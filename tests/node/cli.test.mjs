// The command line: usage, exit codes, configuration errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, ROOT } from './lib/harness.mjs';

function run(args, env = {}, input) {
  const e = { ...process.env, ...env };
  for (const k of Object.keys(e)) if (k.startsWith('SPANGATE_') && !(k in env)) delete e[k];
  const r = spawnSync(BIN, args, { env: e, input, cwd: ROOT });
  return { code: r.status, out: r.stdout.toString(), err: r.stderr.toString() };
}

function conf(text) {
  const d = mkdtempSync(join(tmpdir(), 'sg-cli-'));
  writeFileSync(join(d, 'gateway.conf'), text);
  return join(d, 'gateway.conf');
}

test('--version prints the version', () => {
  const r = run(['--version']);
  assert.equal(r.code, 0);
  assert.match(r.out, /^spangate \d+\.\d+\.\d+/);
});

test('--help lists every configuration key with its environment variable', () => {
  const r = run(['--help']);
  assert.equal(r.code, 0);
  for (const k of ['listen', 'workers', 'postgres_uri', 'spool_dir', 'scripts', 'auth', 'keys_file', 'log_level', 'log_format'])
    assert.match(r.out, new RegExp(`\\b${k}\\b`));
  for (const e of ['SPANGATE_LISTEN', 'SPANGATE_WORKERS', 'SPANGATE_SPOOL_DIR', 'SPANGATE_SCRIPTS', 'SPANGATE_AUTH',
    'SPANGATE_KEYS_FILE', 'SPANGATE_LOG_LEVEL', 'SPANGATE_LOG_FORMAT', 'POSTGRES_URI', 'CLICKHOUSE_HOST',
    'CLICKHOUSE_PORT', 'CLICKHOUSE_USER', 'CLICKHOUSE_PASSWORD', 'CLICKHOUSE_DATABASE', 'USE_CLICKHOUSE'])
    assert.ok(r.out.includes(e), `--help lacks ${e}`);
});

test('no command, an unknown command or an unknown option: usage and exit 2', () => {
  for (const args of [[], ['frobnicate'], ['serve', '--frob'], ['schema', '--print', '--bogus']]) {
    const r = run(args);
    assert.equal(r.code, 2, `spangate ${args.join(' ')}`);
    assert.match(r.err, /usage: spangate/);
  }
});

test('an unknown key names the nearest known key and its line', () => {
  const c = conf('listen = "127.0.0.1:1"\nworkrs = 2\n');
  const r = run(['check', '-c', c]);
  assert.equal(r.code, 1);
  assert.match(r.err, /gateway\.conf:2: unknown key 'workrs' \(did you mean 'workers'\?\)/);
});

test('a value of the wrong type is an error naming the key and the type', () => {
  const r = run(['check', '-c', conf('workers = "two"\n')]);
  assert.equal(r.code, 1);
  assert.match(r.err, /gateway\.conf:1: 'workers' must be a integer|gateway\.conf:1: 'workers' must be an integer/);
});

test('a value outside its set names the choices', () => {
  for (const [text, re] of [['spool_fsync = "sometimes"\n', /spool_fsync must be always, batch or never/],
    ['clickhouse_gzip = "fast"\n', /clickhouse_gzip must be auto, always or never, not 'fast'/]]) {
    const r = run(['check', '-c', conf(text)]);
    assert.equal(r.code, 1, text);
    assert.match(r.err, re, text);
  }
});

test('the configuration sandbox has no os, io or require', () => {
  for (const text of ['x = os.getenv("HOME")\n', 'io.write("hi")\n', 'require("os")\n', 'loadstring("x=1")()\n']) {
    const r = run(['check', '-c', conf(text)]);
    assert.equal(r.code, 1, text);
    assert.match(r.err, /gateway\.conf:1:/, text);
  }
});

test('a configuration that loops forever is stopped', () => {
  const r = run(['check', '-c', conf('while true do end\n')]);
  assert.equal(r.code, 1);
  assert.match(r.err, /too long/);
});

test('environment variables override the file, with clear errors', () => {
  const c = conf('workers = 2\n');
  assert.equal(run(['check', '-c', c], { SPANGATE_WORKERS: '3' }).code, 0);
  const bad = run(['check', '-c', c], { SPANGATE_WORKERS: 'many' });
  assert.equal(bad.code, 1);
  assert.match(bad.err, /SPANGATE_WORKERS='many'/);
});

test("CLICKHOUSE_PORT=9000 is refused: it is ClickHouse's native port", () => {
  const r = run(['check', '-c', conf('\n')], { CLICKHOUSE_PORT: '9000' });
  assert.equal(r.code, 1);
  assert.match(r.err, /9000.*native.*HTTP.*8123/);
});

test('schema --print prints the PostgreSQL DDL', () => {
  const r = run(['schema', '--print']);
  assert.equal(r.code, 0);
  assert.match(r.out, /CREATE TABLE IF NOT EXISTS (public\.)?spans/i);
  assert.match(r.out, /PRIMARY KEY \(project_id, trace_id, span_id\)/i);
});

test("docs/configuration.md's table is the one the binary generates", () => {
  const gen = run(['config-markdown']).out;
  const doc = spawnSync('cat', [join(ROOT, 'docs/configuration.md')]).stdout.toString();
  assert.ok(doc.includes(gen.trim()), 'docs/configuration.md is out of date: run `make docs`');
});
