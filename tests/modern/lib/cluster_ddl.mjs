// Runs spangate's cluster DDL on chDB, in a process of its own (the engine
// keeps one configuration per process): a configuration with the macros
// {shard} and {replica}, an in-memory ZooKeeper ("testkeeper") and the
// cluster in remote_servers, so the Replicated engines resolve their
// ZooKeeper paths and the Distributed tables find their cluster.
// chDB has no distributed DDL queue, so every statement is also parsed whole
// (formatQuery, ON CLUSTER included) and then executed without its
// ON CLUSTER clause on this one host. Replicated tables stay read-only here
// (no replication threads run in chDB): they are created, not written.
//   node cluster_ddl.mjs STATEMENTS.json CLUSTER DIR  -> JSON results on stdout
import { Session } from 'chdb';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [stmtsFile, cluster, dir] = process.argv.slice(2);
const stmts = JSON.parse(readFileSync(stmtsFile, 'utf8'));
mkdirSync(dir, { recursive: true });
const cfg = join(dir, 'config.xml');
writeFileSync(cfg, `<clickhouse>
  <tcp_port>9000</tcp_port>
  <macros><shard>01</shard><replica>r1</replica></macros>
  <zookeeper><implementation>testkeeper</implementation></zookeeper>
  <remote_servers><${cluster}><shard><internal_replication>true</internal_replication>
    <replica><host>localhost</host><port>9000</port></replica></shard></${cluster}></remote_servers>
</clickhouse>
`);
const s = new Session(join(dir, 'data'), { connectionArgs: [`--config-file=${cfg}`] });
const results = [];
const quote = (x) => "'" + x.replace(/\\/g, '\\\\').replace(/'/g, "\\'") + "'";
for (const sql of stmts) {
  const r = { sql, parsed: false, executed: false, error: '' };
  try {
    s.query(`SELECT formatQuery(${quote(sql)})`, 'TabSeparated');
    r.parsed = true;
    s.query(sql.replace(/ ON CLUSTER `[^`]+`/, ''), 'TabSeparated');
    r.executed = true;
  } catch (e) { r.error = String(e.message || e); }
  results.push(r);
}
try {
  const t = s.query("SELECT name, engine FROM system.tables WHERE database NOT IN ('system', 'INFORMATION_SCHEMA', 'information_schema', 'default') ORDER BY name FORMAT JSONEachRow", 'TabSeparated');
  results.push({ tables: t.split('\n').filter(Boolean).map((l) => JSON.parse(l)) });
  // chDB crashes at exit while replicated tables are open: drop them first
  for (const l of s.query("SELECT database, name FROM system.tables WHERE engine LIKE 'Replicated%' FORMAT TSV", 'TabSeparated').split('\n').filter(Boolean)) {
    const [d, n] = l.split('\t');
    s.query(`DROP TABLE \`${d}\`.\`${n}\` SYNC`, 'TabSeparated');
  }
} finally { s.close(); }
process.stdout.write(JSON.stringify(results));
