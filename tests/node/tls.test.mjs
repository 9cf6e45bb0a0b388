// https to ClickHouse against a real 18.16 with an https port and certificates
// made for the test (scripts/chtls.sh): a CA file verifies the server, a wrong
// CA and a missing client certificate are refused with errors that say so,
// clickhouse_verify = false accepts a server no known CA signed, and no
// password appears in any log line or error.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGateway, startTlsClickHouse, postJson, request, until, hex, createDatabase, BIN, ROOT } from './lib/harness.mjs';

let ch, pgUri;
before(async () => {
  ch = await startTlsClickHouse();
  pgUri = (await createDatabase()).uri;
});
after(() => ch?.stop());

// gateway.conf lines for the https server; extra lines win.
function tlsConf(extra = []) {
  return [
    'clickhouse_host = "localhost"', // the certificate's name, not just its address
    `clickhouse_port = ${ch.https}`,
    'clickhouse_secure = true',
    `clickhouse_ca_file = "${ch.ca}"`,
    `clickhouse_cert_file = "${ch.clientCert}"`,
    `clickhouse_key_file = "${ch.clientKey}"`,
    `clickhouse_user = "${ch.user}"`,
    `clickhouse_password = "${ch.password}"`,
    ...extra,
  ];
}

const spans = (n) => ({
  spans: Array.from({ length: n }, () => ({
    trace_id: hex(32), span_id: hex(16), span_name: 'tls', start_time: 1714979289123456, end_time: 1714979289654321,
  })),
});

const stored = async (gw) => Number((await ch.query('SELECT count() FROM spans FINAL', gw.chdb)).trim());

// `spangate schema --apply` with these lines: {status, out} (stdout and stderr).
function applySchema(lines) {
  const dir = mkdtempSync(join(tmpdir(), 'sg-tls-'));
  const conf = join(dir, 'gateway.conf');
  writeFileSync(conf, ['use_clickhouse = true', `postgres_uri = "${pgUri}"`,
    'clickhouse_database = "sg_tls_schema"', 'clickhouse_timeout_ms = 3000', ...lines].join('\n') + '\n');
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('SPANGATE_') || k.startsWith('CLICKHOUSE_')) delete env[k];
  try {
    const out = execFileSync(BIN, ['schema', '--apply', '-c', conf], { env, stdio: 'pipe' }).toString();
    return { status: 0, out };
  } catch (e) {
    return { status: e.status, out: `${e.stdout}${e.stderr}` };
  }
}

test('https with the CA file: spans are stored, readyz names the endpoint, no password in the log', async () => {
  const gw = await startGateway({ clickhouse: true, conf: tlsConf() });
  try {
    const r = await postJson(gw, '/v1/spans', spans(5));
    assert.equal(r.status, 200);
    assert.equal(await until(async () => (await stored(gw)) === 5), true);
    const ready = (await request(gw, 'GET', '/readyz')).json();
    assert.deepEqual(ready.clickhouse.endpoints.map((e) => [e.endpoint, e.up]), [[`https://localhost:${ch.https}`, true]]);
    const metrics = (await request(gw, 'GET', '/metrics')).text;
    assert.match(metrics, new RegExp(`spangate_clickhouse_endpoint_up\\{endpoint="https://localhost:${ch.https}"\\} 2`));
    assert.ok(!gw.log.includes(ch.password), 'the password is in the log');
    assert.deepEqual(gw.errorLines(), []);
  } finally { await gw.stop(); }
  assert.ok(!gw.log.includes(ch.password));
});

test('a CA that did not sign the server is refused with an error naming the CA file', async () => {
  const r = applySchema(tlsConf([`clickhouse_ca_file = "${ch.wrongCa}"`]));
  assert.notEqual(r.status, 0);
  assert.match(r.out, /ClickHouse TLS: the certificate of https:\/\/localhost:\d+ does not verify against the CA file .*wrong-ca\.crt/);
  assert.ok(!r.out.includes(ch.password));
  // Without a CA file the system's CAs decide: they do not know the test's CA either.
  const sys = applySchema(tlsConf(['clickhouse_ca_file = ""']));
  assert.notEqual(sys.status, 0);
  assert.match(sys.out, /does not verify against the system's CA certificates/);
});

test('clickhouse_verify = false accepts a server certificate no known CA signed', async () => {
  const gw = await startGateway({
    clickhouse: true, conf: tlsConf(['clickhouse_ca_file = ""', 'clickhouse_verify = false']),
  });
  try {
    assert.equal((await postJson(gw, '/v1/spans', spans(3))).status, 200);
    assert.equal(await until(async () => (await stored(gw)) === 3), true);
  } finally { await gw.stop(); }
});

test('the client certificate is sent: without it this server refuses the connection', async () => {
  // The other tests pass with it; the server requires one (verificationMode strict).
  const r = applySchema(tlsConf(['clickhouse_cert_file = ""', 'clickhouse_key_file = ""']));
  assert.notEqual(r.status, 0);
  // OpenSSL reports the server's refusal at whichever step notices first
  // ("certificate required", a reset, a closed socket).
  assert.match(r.out, /schema: ClickHouse at https:\/\/localhost:\d+: ClickHouse (TLS handshake|request failed)/);
});

test('credentials are never echoed: wrong password, URL-style hosts, hosts with user:password@', async () => {
  const secret = `hunter2-${hex(12)}`;
  const wrong = applySchema(tlsConf([`clickhouse_password = "${secret}"`]));
  assert.notEqual(wrong.status, 0);
  assert.match(wrong.out, /Wrong password for user spangate/);
  assert.ok(!wrong.out.includes(secret), wrong.out);

  const check = (lines, env = {}) => {
    const dir = mkdtempSync(join(tmpdir(), 'sg-tls-'));
    const conf = join(dir, 'gateway.conf');
    writeFileSync(conf, [`scripts = "${ROOT}/lua"`, ...lines].join('\n') + '\n');
    const e = { ...process.env, ...env };
    try {
      execFileSync(BIN, ['check', '-c', conf], { env: e, stdio: 'pipe' });
      return { status: 0, out: '' };
    } catch (x) { return { status: x.status, out: `${x.stdout}${x.stderr}` }; }
  };
  const hosts = check([`clickhouse_hosts = {"h1:8123", "default:${secret}@h2:8123"}`]);
  assert.notEqual(hosts.status, 0);
  assert.match(hosts.out, /clickhouse_hosts\[2\]: .*credentials do not belong in an endpoint/);
  assert.ok(!hosts.out.includes(secret), hosts.out);
  const url = check([], { CLICKHOUSE_HOST: `https://default:${secret}@ch.example.com` });
  assert.notEqual(url.status, 0);
  assert.match(url.out, /clickhouse_host .* is a host name, not a URL/);
  assert.ok(!url.out.includes(secret), url.out);
  const envHosts = check([], { SPANGATE_CLICKHOUSE_HOSTS: `h1:8123, u:${secret}@h2` });
  assert.notEqual(envHosts.status, 0);
  assert.ok(!envHosts.out.includes(secret), envHosts.out);
  // TLS files that are set must exist, and are refused without https.
  const missing = check(['clickhouse_secure = true', 'clickhouse_ca_file = "/nonexistent/ca.pem"']);
  assert.match(missing.out, /clickhouse_ca_file '\/nonexistent\/ca\.pem': No such file/);
  const plain = check([`clickhouse_ca_file = "${ch.ca}"`]);
  assert.match(plain.out, /clickhouse_ca_file is set but no ClickHouse endpoint uses https/);
});
