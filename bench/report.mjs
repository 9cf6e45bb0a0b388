// bench/report.mjs OUTDIR - turns what bench/run.sh measured into
// OUTDIR/results.json, OUTDIR/report.md and OUTDIR/bench.png (gnuplot), and
// prints the one-line summary last on stdout:
//   bench: ingest_ratio=R spans_per_s=S p99_ms=P p99_ratio=Q rss_mb=M lua_ns_per_span=L migrate_ratio=G grpc_ratio=X capture_lag_s=C
//          read_trace_ratio=T read_query_ratio=Q ch_only_ratio=O
// Node built-ins only (no npm packages in the bench path).
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';

const OUT = process.argv[2];
if (!OUT) { console.error('usage: report.mjs OUTDIR'); process.exit(2); }
const p = (f) => join(OUT, f);
const readJson = (f) => (existsSync(p(f)) ? JSON.parse(readFileSync(p(f), 'utf8')) : null);
const num = (v) => (v === undefined || v === null || v === '' || Number.isNaN(Number(v)) ? null : Number(v));

// facts.tsv: key<TAB>value, later lines win
const facts = {};
for (const line of readFileSync(p('facts.tsv'), 'utf8').split('\n')) {
  const i = line.indexOf('\t');
  if (i > 0) facts[line.slice(0, i)] = line.slice(i + 1);
}
const F = (k) => facts[k];
const FN = (k) => num(facts[k]);

const rounds = num(facts.rounds) || 1;
const loadFulls = [];
for (let r = 1; r <= rounds; r++) { const j = readJson(`load_full_${r}.json`); if (j) loadFulls.push(j); }
const loadFull = loadFulls.length ? loadFulls[loadFulls.length - 1] : null;
const loadHalf = readJson('load_half.json');
const loadSoak = readJson('load_soak.json');
const loadProfile = readJson('load_profile.json');
const lua = readJson('lua.json');

// RSS samples: epoch phase kB
const rss = existsSync(p('rss.tsv'))
  ? readFileSync(p('rss.tsv'), 'utf8').trim().split('\n').filter(Boolean).map((l) => {
    const [t, phase, kb] = l.split(' ');
    return { t: Number(t), phase, mb: Number(kb) / 1024 };
  }).filter((s) => s.mb > 0)
  : [];
const maxOf = (xs) => (xs.length ? Math.max(...xs) : null);
const rssByPhase = {};
for (const s of rss) rssByPhase[s.phase] = Math.max(rssByPhase[s.phase] ?? 0, s.mb);
let soakHalves = null;
if (FN('soak.start') && FN('soak.end')) {
  const a = FN('soak.start'), b = FN('soak.end'), mid = (a + b) / 2;
  const first = rss.filter((s) => s.t >= a && s.t < mid).map((s) => s.mb);
  const second = rss.filter((s) => s.t >= mid && s.t <= b).map((s) => s.mb);
  soakHalves = { first_half_max_mb: maxOf(first), second_half_max_mb: maxOf(second), samples: first.length + second.length };
  if (soakHalves.first_half_max_mb && soakHalves.second_half_max_mb) {
    soakHalves.growth_pct = 100 * (soakHalves.second_half_max_mb / soakHalves.first_half_max_mb - 1);
    soakHalves.flat = soakHalves.growth_pct < 5;
  }
}
const hwmMb = FN('gateway.vmhwm_kb') !== null ? FN('gateway.vmhwm_kb') / 1024 : maxOf(rss.map((s) => s.mb));

// perf report lines: "  12.34%  comm" or "  12.34%  dso  [.] symbol"
function parseProfile(file, withSym) {
  if (!existsSync(p(file))) return [];
  return readFileSync(p(file), 'utf8').split('\n').filter(Boolean).map((l) => {
    l = l.replace(/(\s+-)+\s*$/, '');
    const m = withSym ? l.match(/^\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*?)\s*$/) : l.match(/^\s*([\d.]+)%\s+(.*?)\s*$/);
    if (!m) return null;
    return withSym ? { pct: Number(m[1]), dso: m[2], symbol: m[3] } : { pct: Number(m[1]), comm: m[2] };
  }).filter(Boolean);
}
const profByProc = parseProfile('profile_by_process.txt', false);
const profGw = parseProfile('profile_gateway.txt', true);
const profPg = existsSync(p('profile_postgres.txt'))
  ? readFileSync(p('profile_postgres.txt'), 'utf8').split('\n').filter(Boolean).map((l) => {
    const m = l.replace(/(\s+-)+\s*$/, '').match(/^\s*([\d.]+)%\s+\[[.k]\]\s+(.*?)\s*$/);
    return m ? { pct: Number(m[1]), symbol: m[2] } : null;
  }).filter(Boolean)
  : [];
const loadavgs = Object.fromEntries(Object.entries(facts).filter(([k]) => k.startsWith('loadavg.')).map(([k, v]) => [k.slice(8), Number(v)]));
const profGwChildren = existsSync(p('profile_gateway_children.txt'))
  ? readFileSync(p('profile_gateway_children.txt'), 'utf8').split('\n').filter(Boolean).map((l) => {
    const m = l.replace(/(\s+-)+\s*$/, '').match(/^\s*([\d.]+)%\s+([\d.]+)%\s+\[[.k]\]\s+(.*?)\s*$/);
    return m ? { children_pct: Number(m[1]), self_pct: Number(m[2]), symbol: m[3] } : null;
  }).filter(Boolean)
  : [];

// Per round: the floor (the fastest of its COPY-session variants) and the
// gateway, their rates and ratio; CPU and PostgreSQL's own figures per run.
const streams = (F('floor.pg_streams') || '1').split(' ').filter(Boolean).map(Number);
const perSpans = (FN('workload.spans') || 0) / rounds;
const runFigures = (prefix) => {
  const o = {};
  for (const k of ['seconds', 'pg_seconds', 'ch_seconds', 'cpu_pg_s', 'cpu_ch_s', 'cpu_gw_s',
    'copy_calls', 'copy_ms', 'copy_rows', 'upsert_calls', 'upsert_ms', 'upsert_rows',
    'wal_mb', 'wal_fpi', 'checkpoints']) {
    const v = FN(`${prefix}.${k}`);
    if (v !== null) o[k] = v;
  }
  return o;
};
const roundRows = Array.from({ length: rounds }, (_, i) => {
  const r = i + 1;
  const best = FN(`floor.round${r}.best_streams`);
  const variants = streams.map((k) => ({ streams: k, ...runFigures(`floor.round${r}.k${k}`) }));
  const fs = FN(`floor.round${r}.seconds`), gs = FN(`gateway.round${r}.seconds_end_to_end`);
  return {
    round: r, floor_best_streams: best, floor_variants: variants,
    floor_spans_per_s: fs ? perSpans / fs : null, gateway_spans_per_s: gs ? perSpans / gs : null,
    ratio: fs && gs ? fs / gs : null,
    gateway_run: runFigures(`gateway.round${r}`),
  };
});
const ratios = roundRows.map((x) => x.ratio).filter((v) => v !== null);
const spread = ratios.length ? { min: Math.min(...ratios), max: Math.max(...ratios) } : null;
// CPU µs per span, summed over the rounds (the floor's fastest variants).
const cpuPerSpan = (runs) => {
  const sum = (k) => runs.reduce((a, x) => a + (x[k] ?? 0), 0);
  const n = perSpans * runs.length;
  if (!n || !runs.some((x) => x.cpu_pg_s !== undefined)) return null;
  const o = { pg: 1e6 * sum('cpu_pg_s') / n, ch: 1e6 * sum('cpu_ch_s') / n, gw: 1e6 * sum('cpu_gw_s') / n };
  o.total = o.pg + o.ch + o.gw;
  const ms = sum('copy_ms') + sum('upsert_ms');
  o.pg_exec_us = ms ? 1e3 * ms / n : null;
  o.statements = sum('copy_calls') + sum('upsert_calls');
  return o;
};
const floorRuns = roundRows.map((x) => x.floor_variants.find((v) => v.streams === x.floor_best_streams) || {});
const cpuFloor = cpuPerSpan(floorRuns), cpuGw = cpuPerSpan(roundRows.map((x) => x.gateway_run));
const floorHalf = {
  p50: FN('half.floor.p50_ms'), p90: FN('half.floor.p90_ms'), p99: FN('half.floor.p99_ms'), max: FN('half.floor.max_ms'),
  requests: FN('half.floor.requests'), errors: FN('half.floor.errors'),
};
const pgStmt = (k) => {
  const v = (F(k) || '').split(' ');
  return v.length === 5 && v[0] !== 'NA' ? { p50: Number(v[0]), p90: Number(v[1]), p99: Number(v[2]), max: Number(v[3]), n: Number(v[4]) } : null;
};
const pgStmtFloor = pgStmt('half.floor.pg_statement_ms'), pgStmtGw = pgStmt('half.gateway.pg_statement_ms');
const p99Ratio = FN('p99_ratio');

const ingestRatio = FN('ingest_ratio');
const spansPerS = FN('gateway.spans_per_s');
const p99 = loadHalf ? loadHalf.latency_ms.p99 : null;
const luaNs = lua ? lua.transform_ns_per_span : null;
const migrateRatio = FN('migrate_ratio');
const grpcRatio = FN('grpc_ratio'); // bench/grpc.sh: gRPC spans/s over OTLP/HTTP's, same workload
const captureLag = FN('capture_lag_s'); // bench/capture_lag.sh: p50 age of the oldest change not in ClickHouse, full load
const readTraceRatio = FN('read_trace_ratio');
const readQueryRatio = FN('read_query_ratio');
const chOnlyRatio = FN('ch_only_ratio'); // bench/ch_only.sh: a ClickHouse-only project's spans/s over ClickHouse's own inserts
const chOnlySpansPerS = FN('ch_only.spans_per_s');
// how many times the dual-write path's spans/s (gateway.spans_per_s) a ClickHouse-only project ingests
const chOnlyVsDual = chOnlySpansPerS !== null && spansPerS ? chOnlySpansPerS / spansPerS : null;

const targets = {
  ingest_ratio: { target: '>= 0.8', value: ingestRatio, met: ingestRatio !== null ? ingestRatio >= 0.8 : null },
  p99_ratio_at_half_load: { target: '<= 1.5', value: p99Ratio, met: p99Ratio !== null ? p99Ratio <= 1.5 : null },
  rss_mb_at_full_load: { target: '< 100', value: hwmMb, met: hwmMb !== null ? hwmMb < 100 : null },
  lua_ns_per_span: { target: '< 1000', value: luaNs, met: luaNs !== null ? luaNs < 1000 : null },
  migrate_ratio: { target: '>= 0.7', value: migrateRatio, met: migrateRatio !== null ? migrateRatio >= 0.7 : null },
  grpc_ratio: { target: '>= 0.9', value: grpcRatio, met: grpcRatio !== null ? grpcRatio >= 0.9 : null },
  read_trace_ratio: { target: '>= 1', value: readTraceRatio, met: readTraceRatio !== null ? readTraceRatio >= 1 : null },
  read_query_ratio: { target: '>= 5', value: readQueryRatio, met: readQueryRatio !== null ? readQueryRatio >= 5 : null },
  ch_only_ratio: { target: '>= 0.8', value: chOnlyRatio, met: chOnlyRatio !== null ? chOnlyRatio >= 0.8 : null },
};

const results = {
  generated_at: new Date().toISOString(),
  machine: { cores: FN('machine.cores'), memory_mb: FN('machine.memory_mb'), cpu: F('machine.cpu'), kernel: F('machine.kernel') },
  versions: { postgresql: F('version.postgresql'), clickhouse: F('version.clickhouse'), spangate: F('version.spangate'), git: F('version.git') },
  summary: { ingest_ratio: ingestRatio, ingest_ratio_rounds: ratios, spans_per_s: spansPerS, p99_ms: p99, p99_ratio: p99Ratio, rss_mb: hwmMb, lua_ns_per_span: luaNs, migrate_ratio: migrateRatio, grpc_ratio: grpcRatio, capture_lag_s: captureLag,
    read_trace_ratio: readTraceRatio, read_query_ratio: readQueryRatio, ch_only_ratio: chOnlyRatio },
  targets,
  workload: { requests: FN('workload.requests'), spans: FN('workload.spans'), spans_per_request: 100, generator: F('workload.summary') },
  floor: {
    mode: 'concurrent: PostgreSQL COPY and ClickHouse HTTP inserts started together; wall clock until both finished',
    pg_copy_sessions_tried: streams,
    seconds: FN('floor.seconds'), spans_per_s: FN('floor.spans_per_s'),
    pg_seconds: FN('floor.pg_seconds'), pg_spans_per_s: FN('floor.pg_spans_per_s'),
    ch_seconds: FN('floor.ch_seconds'), ch_spans_per_s: FN('floor.ch_spans_per_s'),
    pg_copy_bytes_per_round: FN('floor.pg_bytes'), ch_tsv_bytes_per_round: FN('floor.ch_bytes'), ch_inserts_per_round: FN('floor.ch_inserts'),
    rounds: Array.from({ length: rounds }, (_, i) => ({
      round: i + 1, seconds: FN(`floor.round${i + 1}.seconds`), pg_seconds: FN(`floor.round${i + 1}.pg_seconds`), ch_seconds: FN(`floor.round${i + 1}.ch_seconds`),
      best_streams: roundRows[i].floor_best_streams, variants: roundRows[i].floor_variants,
    })),
    cpu_us_per_span: cpuFloor,
  },
  rounds: roundRows.map(({ round, floor_spans_per_s, gateway_spans_per_s, ratio }) => ({ round, floor_spans_per_s, gateway_spans_per_s, ratio })),
  ingest_ratio_spread: spread,
  gateway: {
    workers: FN('gateway.workers'), connections: loadFull?.connections, order: 'rounds of floor, gateway, gateway, floor, ... (ABBA); each on fresh databases; totals are sums over rounds',
    seconds_end_to_end: FN('gateway.seconds_end_to_end'), spans_per_s: spansPerS,
    seconds_until_all_acked: FN('gateway.seconds_acked'), acked_spans_per_s: FN('gateway.acked_spans_per_s'),
    rounds: Array.from({ length: rounds }, (_, i) => ({
      round: i + 1,
      seconds_end_to_end: FN(`gateway.round${i + 1}.seconds_end_to_end`), seconds_acked: FN(`gateway.round${i + 1}.seconds_acked`),
      clickhouse_lag_after_last_ack_s: FN(`gateway.round${i + 1}.ch_lag_s`),
      pg_rows: FN(`gateway.round${i + 1}.pg_rows`), ch_rows: FN(`gateway.round${i + 1}.ch_rows`), ch_unique: FN(`gateway.round${i + 1}.ch_unique`),
      load: loadFulls[i] ?? null, run: roundRows[i].gateway_run,
    })),
    cpu_us_per_span: cpuGw,
  },
  latency_half_load: {
    target_rps: FN('half.target_rps'), load: loadHalf, floor: floorHalf, p99_ratio: p99Ratio,
    pg_statement_ms: { floor: pgStmtFloor, gateway: pgStmtGw },
  },
  memory: {
    vmhwm_mb: hwmMb, rss_peak_mb_by_phase: rssByPhase, soak: soakHalves, soak_load: loadSoak,
  },
  lua,
  migrate: {
    status: F('migrate.status'), rows: FN('migrate.rows'), seed_seconds: FN('migrate.seed_seconds'),
    pg_table_mb: FN('migrate.pg_table_mb'),
    pipe_seconds: FN('migrate.pipe_seconds'), pipe_spans_per_s: FN('migrate.pipe_spans_per_s'),
    job_seconds: FN('migrate.job_seconds'), job_spans_per_s: FN('migrate.job_spans_per_s'), job_rows: FN('migrate.job_rows'),
    migrate_ratio: migrateRatio,
  },
  read: {
    status: F('read.status'), rows: FN('read.rows'), window: F('read.window'), errors: F('read.errors'),
    trace: { pg_ms: FN('read.trace.pg_ms'), ch_ms: FN('read.trace.ch_ms') },
    queries: Object.fromEntries(['window', 'errors', 'user', 'model', 'name'].map((k) => [k,
      { pg_ms: FN(`read.query.${k}.pg_ms`), ch_ms: FN(`read.query.${k}.ch_ms`), ratio: FN(`read.query.${k}.ratio`) }])),
    read_trace_ratio: readTraceRatio, read_query_ratio: readQueryRatio,
    dedup_ms: { final: FN('read.dedup.final_ms'), limit_1_by: FN('read.dedup.limit1by_ms'), argmax: FN('read.dedup.argmax_ms'), candidate_keys: FN('read.dedup.keys_ms') },
    freshness_delay_ms: { p50: FN('read.lag.p50_ms'), p90: FN('read.lag.p90_ms'), max: FN('read.lag.max_ms') },
  },
  ch_only: {
    floor: 'the same rows as the gateway writes them for ClickHouse, inserted BENCH_CH_BATCH (50000) rows at a time',
    floor_spans_per_s: FN('ch_only.floor_spans_per_s'), spans_per_s: chOnlySpansPerS,
    acked_spans_per_s: FN('ch_only.acked_spans_per_s'), requests_per_round: FN('ch_only.requests_per_round'),
    rounds: FN('ch_only.rounds'), ch_only_ratio: chOnlyRatio, times_dual_write: chOnlyVsDual,
    cpu_us_per_span: { floor_clickhouse: FN('ch_only.floor_cpu_ch_us_per_span'), clickhouse: FN('ch_only.cpu_ch_us_per_span'),
      gateway: FN('ch_only.cpu_gw_us_per_span') },
  },
  profile: profByProc.length ? {
    method: 'perf record -a -g -e cpu-clock -F 997, 20 s at full rate; self time',
    load: loadProfile, cpu_by_process: profByProc, gateway_self: profGw.slice(0, 30), gateway_children: profGwChildren.slice(0, 30),
    postgres_self: profPg.slice(0, 30),
  } : null,
  loadavg_at_phase_start: loadavgs,
  bench_seconds: FN('bench.seconds'),
};
writeFileSync(p('results.json'), JSON.stringify(results, null, 2) + '\n');

// ---- plot ----------------------------------------------------------------------
let plotted = false;
try {
  // spans/s per second is spiky (group commits land in bursts): plot a 5 s
  // moving average beside the raw points.
  const smooth = (f) => {
    if (!existsSync(p(f))) return null;
    const rows = readFileSync(p(f), 'utf8').split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(' ').map(Number));
    const out = rows.map((r, i) => {
      const w = rows.slice(Math.max(0, i - 2), i + 3);
      return `${r[0]} ${(w.reduce((a, x) => a + x[2], 0) / w.length).toFixed(1)}`;
    });
    const name = f.replace('.tsv', '.smooth.tsv');
    writeFileSync(p(name), out.join('\n') + '\n');
    return `'${p(name)}'`;
  };
  const tl = (f) => (existsSync(p(f)) ? `'${p(f)}'` : null);
  const half = tl('timeline_half.tsv'), soak = smooth('timeline_soak.tsv');
  const floorRate = FN('floor.spans_per_s');
  const series = [];
  const colors = ['#2020c0', '#8020a0', '#206080', '#a02060'];
  for (let r = 1; r <= rounds; r++) {
    const raw = tl(`timeline_full_${r}.tsv`), sm = smooth(`timeline_full_${r}.tsv`);
    if (raw) series.push(`${raw} using 1:3 with points pt 7 ps 0.4 lc rgb '${colors[(r - 1) % 4]}' notitle`);
    if (sm) series.push(`${sm} using 1:2 with lines lw 2 lc rgb '${colors[(r - 1) % 4]}' title 'full rate, round ${r} (5 s avg; dots per second)'`);
  }
  if (soak) series.push(`${soak} using 1:2 with lines lw 1 lc rgb '#20a020' title 'soak, 5 s average'`);
  if (half) series.push(`${half} using 1:3 with lines lw 1 lc rgb '#c08000' title 'half rate (open loop)'`);
  if (floorRate) series.push(`${floorRate} with lines dt 2 lw 2 lc rgb '#d00000' title 'floor (COPY + CH insert)'`);
  const t0 = rss.length ? rss[0].t : 0;
  writeFileSync(p('rss_plot.tsv'), rss.map((s) => `${(s.t - t0).toFixed(1)} ${s.mb.toFixed(1)} ${s.phase}`).join('\n') + '\n');
  const gp = `
set terminal pngcairo size 1100,1200 font 'sans,10' noenhanced
set output '${p('bench.png')}'
set multiplot layout 3,1 title 'spangate bench: ${results.versions.spangate}, ${results.machine.cores} cores, PostgreSQL ${results.versions.postgresql}, ClickHouse ${results.versions.clickhouse}'
set grid
set key outside right
set title 'Throughput per second (ingest_ratio ${ingestRatio?.toFixed(3)}; end-to-end ${Math.round(spansPerS || 0)} spans/s)'
set xlabel 'seconds into the run'
set ylabel 'spans/s'
plot ${series.join(', ') || '0 notitle'}
set title 'Request latency per second at half load (open loop; p99 overall ${p99?.toFixed(2)} ms)'
set ylabel 'ms'
set logscale y
plot ${half ? `${half} using 1:4 with linespoints pt 7 ps 0.4 title 'p50', ${half} using 1:5 with linespoints pt 7 ps 0.4 title 'p99', ${half} using 1:6 with lines title 'max'` : '1 notitle'}
unset logscale y
set title 'Gateway RSS (VmHWM ${hwmMb?.toFixed(1)} MB)'
set ylabel 'MB'
set xlabel 'seconds since the gateway started'
plot '${p('rss_plot.tsv')}' using 1:2 with lines lw 2 title 'RSS'
unset multiplot
`;
  writeFileSync(p('bench.gp'), gp);
  execFileSync('gnuplot', [p('bench.gp')], { stdio: ['ignore', 'ignore', 'pipe'] });
  plotted = true;
} catch (e) {
  console.error(`report: plot failed: ${e.message}`);
}

// ---- report.md -------------------------------------------------------------------
const f = (v, d = 1) => (v === null || v === undefined ? 'n/a' : Number(v).toFixed(d));
const met = (t) => (t.met === null ? 'n/a' : t.met ? 'met' : '**not met**');
const lines = [];
lines.push(`# spangate benchmark`, '');
lines.push(`${results.generated_at} - ${results.versions.spangate} (${results.versions.git}), PostgreSQL ${results.versions.postgresql}, ClickHouse ${results.versions.clickhouse}`);
lines.push(`Machine: ${results.machine.cores} cores (${results.machine.cpu}), ${results.machine.memory_mb} MB RAM, ${results.machine.kernel}. Run took ${f(results.bench_seconds, 0)} s.`, '');
lines.push('Measurements, not tests: the targets are DESIGN.md\'s and are reported, never asserted.', '');
// The bench itself keeps ~2 runnable tasks per core busy at full rate; more
// than twice the core count means someone else is using the machine too.
const busy = Object.entries(loadavgs).filter(([, v]) => v > (results.machine.cores || 2) * 2);
lines.push(`1-minute load average at the start of each phase: ${Object.entries(loadavgs).map(([k, v]) => `${k} ${v}`).join(', ')}.` +
  (busy.length ? ` **Load above twice the core count (${busy.map(([k]) => k).join(', ')}): other work was running on the machine; figures from those phases are pessimistic and noisy.**` : ''), '');
lines.push('| figure | value | target | |', '|---|---|---|---|');
lines.push(`| ingest_ratio (gateway / floor, end to end; rounds ${ratios.map((v) => f(v, 3)).join(', ')}) | ${f(ingestRatio, 3)} | ${targets.ingest_ratio.target} | ${met(targets.ingest_ratio)} |`);
lines.push(`| p99_ratio at half load (gateway p99 ${f(p99, 1)} ms / floor p99 ${f(floorHalf.p99, 1)} ms) | ${f(p99Ratio, 2)} | ${targets.p99_ratio_at_half_load.target} | ${met(targets.p99_ratio_at_half_load)} |`);
lines.push(`| peak RSS (VmHWM) at full load | ${f(hwmMb)} MB | ${targets.rss_mb_at_full_load.target} MB | ${met(targets.rss_mb_at_full_load)} |`);
lines.push(`| Lua default transform | ${f(luaNs)} ns/span | ${targets.lua_ns_per_span.target} ns | ${met(targets.lua_ns_per_span)} |`);
lines.push(`| migrate_ratio (job / pipe) | ${migrateRatio === null ? 'NA (' + (F('migrate.status') || 'not run') + ')' : f(migrateRatio, 3)} | ${targets.migrate_ratio.target} | ${met(targets.migrate_ratio)} |`);
lines.push(`| grpc_ratio (OTLP/gRPC / OTLP/HTTP, acked spans/s) | ${f(grpcRatio, 3)} | ${targets.grpc_ratio.target} | ${met(targets.grpc_ratio)} |`);
lines.push(`| capture_lag_s (change capture, p50 lag at full ingest rate) | ${captureLag === null ? 'NA' : f(captureLag, 2)} s | keeps up | ${captureLag === null ? 'NA' : '-'} |`);
lines.push(`| read_trace_ratio (PostgreSQL / ClickHouse, median trace fetch) | ${readTraceRatio === null ? 'NA' : f(readTraceRatio, 3)} | ${targets.read_trace_ratio.target} | ${met(targets.read_trace_ratio)} |`);
lines.push(`| read_query_ratio (PostgreSQL / ClickHouse, 5 span queries over 24 h) | ${readQueryRatio === null ? 'NA' : f(readQueryRatio, 3)} | ${targets.read_query_ratio.target} | ${met(targets.read_query_ratio)} |`);
lines.push(`| ch_only_ratio (ClickHouse-only project / ClickHouse's own large inserts, end to end; ${chOnlySpansPerS === null ? 'NA' : f(chOnlySpansPerS, 0)} spans/s, ${chOnlyVsDual === null ? 'NA' : f(chOnlyVsDual, 1)}x the dual-write path) | ${chOnlyRatio === null ? 'NA' : f(chOnlyRatio, 3)} | ${targets.ch_only_ratio.target} | ${met(targets.ch_only_ratio)} |`);
lines.push('');
lines.push('## Workload', '');
lines.push(`${results.workload.requests} OTLP/HTTP protobuf requests of 100 spans (${results.workload.spans} spans): ${results.workload.generator}. ` +
  'Traces of 5-20 spans, one root each (workflow -> chain/chat/embedding/query/tool/rerank), 2% errors with an exception event; ' +
  'ag.type.*, ag.data.*, ag.metrics.*, gen_ai.* (model, usage, prompt/completion text), session and user ids. ' +
  'Generated once (bench/gen.c); each replayed request gets fresh trace ids (bench/workload.h), so every span is a new row.', '');
lines.push('## Ingest: floor vs gateway', '');
lines.push('| | seconds | spans/s |', '|---|---|---|');
lines.push(`| floor, PostgreSQL COPY alone (the fastest session count of each round) | ${f(results.floor.pg_seconds, 2)} | ${f(results.floor.pg_spans_per_s, 0)} |`);
lines.push(`| floor, ClickHouse inserts alone (${results.floor.ch_inserts_per_round} HTTP inserts per round) | ${f(results.floor.ch_seconds, 2)} | ${f(results.floor.ch_spans_per_s, 0)} |`);
lines.push(`| **floor, both at once** (wall clock) | ${f(results.floor.seconds, 2)} | **${f(results.floor.spans_per_s, 0)}** |`);
lines.push(`| gateway, until every request was acknowledged (PostgreSQL committed) | ${f(results.gateway.seconds_until_all_acked, 2)} | ${f(results.gateway.acked_spans_per_s, 0)} |`);
lines.push(`| **gateway, until ClickHouse held every span too** (end to end) | ${f(results.gateway.seconds_end_to_end, 2)} | **${f(spansPerS, 0)}** |`);
lines.push('');
lines.push(`Floor: the rows the gateway would write (decoded by the gateway's decoder, transformed by lua/transform.lua, attributes nested as stored, bench/rows.c), ` +
  `PostgreSQL \`COPY spans (...) FROM STDIN\` into a fresh database with \`spangate schema --apply\` (all of Agenta's indexes), once in each of ${streams.join(', ')} concurrent sessions (the file split by lines; the fastest counts), ` +
  `and ClickHouse TabSeparated rows from the spool's encoder (sg_ch_row_encode) POSTed in inserts of up to 50000 rows; the two loads run concurrently, as the gateway writes both concurrently. ` +
  `Gateway: ${results.gateway.workers} workers, dual-write on, default commit window and flush interval, ${results.gateway.connections} keep-alive connections sending back to back (bench/load.c). ` +
  `Order: ${results.gateway.order}.`);
lines.push('', '| round | floor s by COPY sessions (PostgreSQL / ClickHouse) | floor spans/s | gateway s end to end (acked) | gateway spans/s | ratio | ClickHouse lag after last ack | rows PostgreSQL / ClickHouse (distinct) |', '|---|---|---|---|---|---|---|---|');
for (let i = 0; i < rounds; i++) {
  const fr = results.floor.rounds[i], gr = results.gateway.rounds[i], rr = roundRows[i];
  const vs = fr.variants.map((v) => `${v.streams}: ${v.streams === fr.best_streams ? '**' : ''}${f(v.seconds, 1)}${v.streams === fr.best_streams ? '**' : ''} (${f(v.pg_seconds, 1)} / ${f(v.ch_seconds, 1)})`).join('; ');
  lines.push(`| ${i + 1} | ${vs} | ${f(rr.floor_spans_per_s, 0)} | ${f(gr.seconds_end_to_end, 1)} (${f(gr.seconds_acked, 1)}) | ${f(rr.gateway_spans_per_s, 0)} | ${f(rr.ratio, 3)} | ${f(gr.clickhouse_lag_after_last_ack_s, 2)} s | ${gr.pg_rows} / ${gr.ch_rows} (${gr.ch_unique}) |`);
}
if (spread) lines.push('', `Spread: the per-round ratios run from ${f(spread.min, 3)} to ${f(spread.max, 3)}; ingest_ratio ${f(ingestRatio, 3)} is the ratio of the totals.`);
if (cpuFloor && cpuGw) {
  lines.push('', 'CPU per span (process trees, user + system, summed over the rounds; the floor\'s fastest runs), and PostgreSQL\'s own execution time of the statements that wrote the spans (pg_stat_statements, total_exec_time, which includes waiting for the CPU and for locks):', '');
  lines.push('| µs per span | PostgreSQL | ClickHouse | gateway | total | PostgreSQL statements (exec µs per span) |', '|---|---|---|---|---|---|');
  for (const [name, c] of [['floor', cpuFloor], ['gateway', cpuGw]])
    lines.push(`| ${name} | ${f(c.pg, 0)} | ${f(c.ch, 0)} | ${name === 'floor' ? '-' : f(c.gw, 0)} | ${f(c.total, 0)} | ${c.statements} (${f(c.pg_exec_us, 0)}) |`);
  lines.push('', `CPU ratio (floor total / gateway total per span): ${f(cpuFloor.total / cpuGw.total, 3)}; less sensitive to other work on the machine than wall clock.`);
}
// PostgreSQL's WAL per round (pg_stat_wal) and the checkpoints that started.
const walOf = (runs) => runs.some((x) => x.wal_mb !== undefined)
  ? runs.map((x) => `${f(x.wal_mb, 0)} MB (${x.wal_fpi} full-page images, ${x.checkpoints} checkpoints)`).join(', ')
  : null;
const walFloor = walOf(floorRuns), walGw = walOf(roundRows.map((x) => x.gateway_run));
if (walFloor && walGw) lines.push('', `PostgreSQL's WAL by round (pg_stat_wal; checkpoints that started during the round): floor ${walFloor}; gateway ${walGw}.`);
for (const [i, lf] of loadFulls.entries()) lines.push('', `Full-rate request latency, round ${i + 1} (closed loop, ${lf.connections} connections): p50 ${f(lf.latency_ms.p50, 1)} ms, p99 ${f(lf.latency_ms.p99, 1)} ms, max ${f(lf.latency_ms.max, 1)} ms; ${lf.errors} errors, ${lf.retries_429_503} retried 429/503.`);
lines.push('');
lines.push('## Latency at half load', '');
if (loadHalf) {
  lines.push(`Open loop (constant rate, latency from each request's due time, so queueing counts): target ${f(results.latency_half_load.target_rps, 1)} requests/s = ${f(results.latency_half_load.target_rps * 100, 0)} spans/s; the gateway achieved ${f(loadHalf.requests_per_s, 1)} requests/s over ${f(loadHalf.seconds, 1)} s, ${loadHalf.connections} connections available. ` +
    `Floor: the same requests' rows, each request one \`COPY\` straight into PostgreSQL at the same pace over ${facts['half.floor.sessions'] ?? 8} sessions (bench/pgload.c), half of them before the gateway's run and half after (${floorHalf.requests} requests, ${floorHalf.errors} errors). p99_ratio = gateway p99 / floor p99 = **${f(p99Ratio, 2)}**.`, '');
  lines.push('| | p50 | p90 | p99 | max | errors |', '|---|---|---|---|---|---|');
  lines.push(`| floor (COPY per request) | ${f(floorHalf.p50, 2)} ms | ${f(floorHalf.p90, 2)} ms | ${f(floorHalf.p99, 2)} ms | ${f(floorHalf.max, 2)} ms | ${floorHalf.errors} |`);
  lines.push(`| gateway | ${f(loadHalf.latency_ms.p50, 2)} ms | ${f(loadHalf.latency_ms.p90, 2)} ms | ${f(loadHalf.latency_ms.p99, 2)} ms | ${f(loadHalf.latency_ms.max, 2)} ms | ${loadHalf.errors} (${loadHalf.retries_429_503} retried 429/503) |`);
  if (pgStmtFloor || pgStmtGw) {
    lines.push('', 'PostgreSQL\'s own execution time of the statements that wrote spans during those runs (log_min_duration_statement = 0; the floor: one COPY per request; the gateway: one statement per group commit):', '');
    lines.push('| | statements | p50 | p90 | p99 | max |', '|---|---|---|---|---|---|');
    for (const [name, x] of [['floor', pgStmtFloor], ['gateway', pgStmtGw]])
      if (x) lines.push(`| ${name} | ${x.n} | ${f(x.p50, 1)} ms | ${f(x.p90, 1)} ms | ${f(x.p99, 1)} ms | ${f(x.max, 1)} ms |`);
  }
  const walHalf = (k) => FN(`half.${k}.wal_mb`) === null ? null
    : `${f(FN(`half.${k}.wal_mb`), 0)} MB of WAL and ${FN(`half.${k}.checkpoints`)} checkpoints`;
  if (walHalf('gateway')) lines.push('', `Meanwhile PostgreSQL wrote: floor part a ${walHalf('floor_a')}, gateway ${walHalf('gateway')}, floor part b ${walHalf('floor_b')} (a checkpoint fills the WAL with full-page images of every page touched again, and ends with the sync of what it wrote).`);
}
lines.push('');
lines.push('## Memory', '');
lines.push(`VmHWM ${f(hwmMb)} MB over all phases. Peak RSS by phase: ${Object.entries(rssByPhase).map(([k, v]) => `${k} ${f(v)} MB`).join(', ')}.`);
if (soakHalves) lines.push(`Soak at full rate (${f(loadSoak?.seconds, 0)} s, ${loadSoak?.spans_ok} spans): first-half max ${f(soakHalves.first_half_max_mb)} MB, second-half max ${f(soakHalves.second_half_max_mb)} MB (${f(soakHalves.growth_pct)}%): ${soakHalves.flat ? 'flat' : '**growing**'}.`);
lines.push('');
lines.push('## Lua transform', '');
if (lua) {
  lines.push(`In process (bench/lua_bench.c, ${lua.spans_timed} spans timed): sg_lua_transform with the shipped lua/ ${f(lua.transform_ns_per_span)} ns/span, with an empty scripts directory ${f(lua.empty_ns_per_span)} ns/span (difference ${f(lua.lua_ns_per_span)} ns). ` +
    `For scale: decoding the protobuf costs ${f(lua.decode_ns_per_span)} ns/span; rendering the attributes column nested as the default transform asks costs ${f(lua.attr_dump_nested_ns_per_span)} ns/span vs ${f(lua.attr_dump_flat_ns_per_span)} flat (+${f(lua.nesting_extra_ns_per_span)} ns, paid once per store, twice with dual-write).`);
}
lines.push('');
lines.push('## Migration', '');
const mg = results.migrate;
if (mg.status === 'skipped' || !mg.status) lines.push('Skipped (BENCH_MIGRATE_ROWS=0).');
else {
  const rounds = Number(F('migrate.rounds') || 1);
  const per = (side) => Array.from({length: rounds}, (_, i) => FN(`migrate.round${i + 1}.${side}_seconds`))
    .filter((v) => v !== null).map((v) => f(v, 1)).join(' + ');
  lines.push(`${mg.rows} spans seeded in PostgreSQL in ${f(mg.seed_seconds, 1)} s (${f(mg.pg_table_mb, 0)} MB; only the primary key kept, the job builds its own keyset index inside its time). ` +
    `${rounds} rounds in the order pipe, job, job, pipe (each from an empty ClickHouse table; each job without index or checkpoints). ` +
    `Pipe \`psql COPY (SELECT ...) TO STDOUT | clickhouse-client INSERT ... FORMAT TabSeparated\`: ${per('pipe')} = ${f(mg.pipe_seconds, 1)} s = ${f(mg.pipe_spans_per_s, 0)} spans/s.`);
  if (mg.status === 'ok') lines.push(`\`spangate migrate\`: ${per('job')} = ${f(mg.job_seconds, 1)} s = ${f(mg.job_spans_per_s, 0)} spans/s; migrate_ratio ${f(migrateRatio, 3)}.`);
  else lines.push(`\`spangate migrate\`: ${mg.status} - migrate_ratio NA.`);
}
lines.push('');
lines.push('## Reads: PostgreSQL vs ClickHouse', '');
const rd = results.read;
if (rd.status !== 'ok') lines.push(`Not measured (${rd.status || 'not run'}).`);
else {
  lines.push(`${rd.rows} spans (the migration phase's), a 24 h window (${rd.window}, epoch s). Two gateways, one reading PostgreSQL ((project_id, start_time) index and the primary key; no GIN), one ClickHouse (18.16 layout); each read sent to both in turn, median of the runs (bench/read.sh). Errors or differing answers: ${rd.errors}.`, '');
  lines.push('| read | PostgreSQL ms | ClickHouse ms | ratio |', '|---|---|---|---|');
  lines.push(`| trace fetch (10 traces) | ${f(rd.trace.pg_ms, 2)} | ${f(rd.trace.ch_ms, 2)} | ${f(readTraceRatio, 3)} |`);
  for (const [k, x] of Object.entries(rd.queries)) lines.push(`| query: ${k} | ${f(x.pg_ms, 2)} | ${f(x.ch_ms, 2)} | ${f(x.ratio, 3)} |`);
  lines.push('', `Duplicates (one 24 h page of full rows, straight on ClickHouse, median of 3): FINAL ${f(rd.dedup_ms.final, 1)} ms, LIMIT 1 BY ${f(rd.dedup_ms.limit_1_by, 1)} ms, argMax ${f(rd.dedup_ms.argmax, 1)} ms; the gateway's first statement (candidate keys) ${f(rd.dedup_ms.candidate_keys, 1)} ms.`);
  lines.push('', `Freshness: ClickHouse serves a span ${f(rd.freshness_delay_ms.p50, 0)} ms after its ingest was answered (median; p90 ${f(rd.freshness_delay_ms.p90, 0)} ms, max ${f(rd.freshness_delay_ms.max, 0)} ms) with the default flush_interval_ms (a read held back by spooled rows asks for them); PostgreSQL answers meanwhile.`);
}
lines.push('');
if (results.profile) {
  lines.push('## Profile (full rate)', '');
  lines.push(`${results.profile.method}. CPU by process (whole machine):`, '');
  lines.push('| % of samples | process |', '|---|---|');
  for (const r of profByProc.slice(0, 8)) lines.push(`| ${f(r.pct, 2)} | ${r.comm} |`);
  lines.push('', 'Gateway, top 15 functions by self time (% of the gateway\'s samples):', '');
  lines.push('| % self | object | function |', '|---|---|---|');
  for (const r of profGw.slice(0, 15)) lines.push(`| ${f(r.pct, 2)} | ${r.dso} | \`${r.symbol}\` |`);
  if (profPg.length) {
    lines.push('', 'PostgreSQL backends during the same window, top 15 functions by self time (% of postgres samples):', '');
    lines.push('| % self | function |', '|---|---|');
    for (const r of profPg.slice(0, 15)) lines.push(`| ${f(r.pct, 2)} | \`${r.symbol}\` |`);
  }
  lines.push('');
}
if (plotted) lines.push('![throughput, latency and RSS](bench.png)', '');
lines.push('Raw figures: results.json; per-second timelines: timeline_*.tsv; RSS samples: rss.tsv.');
writeFileSync(p('report.md'), lines.join('\n') + '\n');

const fmtOrNA = (v, d) => (v === null || v === undefined ? 'NA' : Number(v).toFixed(d));
console.log(`bench: ingest_ratio=${fmtOrNA(ingestRatio, 3)} spans_per_s=${fmtOrNA(spansPerS, 0)} p99_ms=${fmtOrNA(p99, 2)} p99_ratio=${fmtOrNA(p99Ratio, 2)} ` +
  `rss_mb=${fmtOrNA(hwmMb, 1)} lua_ns_per_span=${fmtOrNA(luaNs, 0)} migrate_ratio=${fmtOrNA(migrateRatio, 3)} ` +
  `grpc_ratio=${fmtOrNA(grpcRatio, 3)} capture_lag_s=${fmtOrNA(captureLag, 2)} read_trace_ratio=${fmtOrNA(readTraceRatio, 3)} read_query_ratio=${fmtOrNA(readQueryRatio, 3)} ch_only_ratio=${fmtOrNA(chOnlyRatio, 3)}`);
