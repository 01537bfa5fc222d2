// Aggregation (medians over rounds, ratios against the peers, targets) and the markdown section
// of the replication benchmarks.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Machine } from './machine.js';
import { DEFAULT_BENCH_DIR_TEMPLATE, reportPath } from './paths.js';
import type { CpuFigures, ReplData } from './replication.js';

type Status = 'met' | 'missed' | 'n/a';

export const REPL_TARGETS = {
  throughputRatio: 1.2,
  lagP99Ms: 500,
  linkShare: 0.9,
  syncBytesShare: 0.02,
  syncTimeRatio: 1.0,
};

export interface ReplRow {
  bench: string;
  figure: string;
  ours?: number;
  peer?: number;
  peerName: string;
  ratio?: number;
  perRound: string;
  target: string;
  status: Status;
  unit: string;
  decimals: number;
}

export interface ReplSummary {
  rows: ReplRow[];
  met: string[];
  missed: string[];
  errors: string[];
}

export function medianOf(values: (number | undefined)[]): number | undefined {
  const v = values.filter((x): x is number => x !== undefined && !Number.isNaN(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1]! + v[mid]!) / 2;
}

const MiB = 2 ** 20;
const ratioOf = (a?: number, b?: number) => (a !== undefined && b ? a / b : undefined);
const fmt = (v: number | undefined, d = 2): string => (v === undefined ? '–' : !Number.isFinite(v) ? '∞' : v.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }));
const fmtR = (v: number | undefined): string => (v === undefined ? '–' : v.toFixed(2));
const fmtPct = (v: number | undefined): string => (v === undefined ? '–' : `${v.toFixed(0)} %`);
const fmtB = (v: number | undefined): string => {
  if (v === undefined) return '–';
  if (v >= 2 ** 30) return `${(v / 2 ** 30).toFixed(2)} GiB`;
  if (v >= MiB) return `${(v / MiB).toFixed(1)} MiB`;
  if (v >= 1024) return `${(v / 1024).toFixed(0)} KiB`;
  return `${v} B`;
};
const mark = (s: Status): string => (s === 'met' ? 'met' : s === 'missed' ? '**missed**' : '');

export function summarizeRepl(d: ReplData): ReplSummary {
  const o = d.options;
  const rows: ReplRow[] = [];
  const met: string[] = [];
  const missed: string[] = [];
  const errors: string[] = [];
  const judge = (ok: boolean | undefined, label: string): Status => {
    const s: Status = ok === undefined ? 'missed' : ok ? 'met' : 'missed';
    (s === 'met' ? met : missed).push(label);
    return s;
  };

  if (d.throughput.length) {
    for (const r of d.throughput) {
      if (r.error) errors.push(`round ${r.round} throughput: ${r.error}`);
      if (r.peerError) errors.push(`round ${r.round} throughput peer: ${r.peerError}`);
    }
    const ours = medianOf(d.throughput.map((r) => r.oursS));
    const peer = medianOf(d.throughput.map((r) => r.peerS));
    const ratio = ratioOf(ours, peer);
    const bytes = o.throughputBytes;
    rows.push({
      bench: '1 throughput', figure: `${fmtB(bytes)} written until replayed on the secondary (s, lower is better)`, ours, peer, peerName: 'nbdcopy → nbdkit file, TCP loopback',
      ratio, perRound: d.throughput.map((r) => fmtR(ratioOf(r.oursS, r.peerS))).join(' / '),
      target: `<= ${REPL_TARGETS.throughputRatio}`, unit: 's', decimals: 2,
      status: judge(ratio === undefined ? undefined : ratio <= REPL_TARGETS.throughputRatio, `throughput: time to replicate ${fmtB(bytes)} ours/nbdcopy-to-nbdkit ${fmtR(ratio)} (target <= ${REPL_TARGETS.throughputRatio})`),
    });
    rows.push({
      bench: '1 throughput', figure: 'replication throughput (MiB/s, higher is better)',
      ours: ours ? bytes / ours / MiB : undefined, peer: peer ? bytes / peer / MiB : undefined, peerName: 'nbdcopy → nbdkit file, TCP loopback',
      ratio: ratioOf(peer, ours), perRound: d.throughput.map((r) => fmtR(ratioOf(r.peerS, r.oursS))).join(' / '), target: '', unit: 'MiB/s', decimals: 0, status: 'n/a',
    });
    const ingest = medianOf(d.throughput.map((r) => r.ingestS));
    rows.push({
      bench: '1 throughput', figure: 'of it: nbdcopy into the primary (s)', ours: ingest, peer, peerName: 'nbdcopy → nbdkit file, TCP loopback',
      ratio: ratioOf(ingest, peer), perRound: d.throughput.map((r) => fmtR(ratioOf(r.ingestS, r.peerS))).join(' / '), target: '', unit: 's', decimals: 2, status: 'n/a',
    });
  }

  if (d.lag.length) {
    for (const r of d.lag) if (r.error) errors.push(`round ${r.round} lag: ${r.error}`);
    const ok = d.lag.filter((r) => !r.error);
    const p50 = medianOf(ok.map((r) => r.replayLagMs?.p50));
    const p99 = medianOf(ok.map((r) => r.replayLagMs?.p99));
    const worst = Math.max(...ok.map((r) => r.replayLagMs?.p99 ?? Infinity));
    rows.push({
      bench: '2 lag', figure: 'replay lag p50 (ms)', ours: p50, peerName: '', perRound: ok.map((r) => fmt(r.replayLagMs?.p50, 0)).join(' / '), target: '', unit: 'ms', decimals: 0, status: 'n/a',
    });
    rows.push({
      bench: '2 lag', figure: 'replay lag p99 (ms)', ours: p99, peerName: '', perRound: ok.map((r) => fmt(r.replayLagMs?.p99, 0)).join(' / '),
      target: `< ${REPL_TARGETS.lagP99Ms}`, unit: 'ms', decimals: 0,
      status: judge(p99 === undefined ? undefined : p99 < REPL_TARGETS.lagP99Ms, `lag: replay lag p99 ${fmt(p99, 0)} ms at ${fmt(medianOf(ok.map((r) => r.rateBps)) !== undefined ? medianOf(ok.map((r) => r.rateBps))! / MiB : undefined, 1)} MiB/s (target < ${REPL_TARGETS.lagP99Ms} ms; worst round ${fmt(worst, 0)} ms)`),
    });
    rows.push({
      bench: '2 lag', figure: 'data visible on the secondary\'s disk, p50 / p99 (ms)', ours: medianOf(ok.map((r) => r.visibleLagMs?.p99)), peerName: '',
      perRound: ok.map((r) => `${fmt(r.visibleLagMs?.p50, 0)} / ${fmt(r.visibleLagMs?.p99, 0)}`).join('; '), target: '', unit: 'ms', decimals: 0, status: 'n/a',
    });
  }

  if (d.distance.length) {
    for (const r of d.distance) {
      if (r.error) errors.push(`round ${r.round} distance: ${r.error}`);
      if (r.peerError) errors.push(`round ${r.round} distance peer: ${r.peerError}`);
    }
    const steady = medianOf(d.distance.map((r) => r.steadyBps));
    const peer = medianOf(d.distance.map((r) => r.peerBps));
    const share = steady !== undefined ? steady / o.linkBps : undefined;
    rows.push({
      bench: '3 distance', figure: `fetch rate, steady (10-90 % of the logfile) (MiB/s, higher is better)`, ours: steady ? steady / MiB : undefined, peer: peer ? peer / MiB : undefined,
      peerName: 'nbdcopy → nbdkit through an identical proxy', ratio: ratioOf(steady, peer),
      perRound: d.distance.map((r) => fmtR(ratioOf(r.steadyBps, r.peerBps))).join(' / '), target: '', unit: 'MiB/s', decimals: 2, status: 'n/a',
    });
    const raw = medianOf(d.distance.map((r) => r.rawBps));
    rows.push({
      bench: '3 distance', figure: 'fetch rate against a plain TCP stream through an identical proxy (MiB/s)', ours: steady ? steady / MiB : undefined, peer: raw ? raw / MiB : undefined,
      peerName: 'plain TCP stream (node net) through an identical proxy', ratio: ratioOf(steady, raw),
      perRound: d.distance.map((r) => fmtR(ratioOf(r.steadyBps, r.rawBps))).join(' / '), target: '', unit: 'MiB/s', decimals: 2, status: 'n/a',
    });
    rows.push({
      bench: '3 distance', figure: `fetch rate / link rate (${fmt(o.linkBps / 1e6 * 8, 0)} Mbit/s)`, ours: share, peer: peer !== undefined ? peer / o.linkBps : undefined,
      peerName: 'nbdcopy → nbdkit through an identical proxy', ratio: share,
      perRound: d.distance.map((r) => fmtR(r.steadyBps !== undefined ? r.steadyBps / o.linkBps : undefined)).join(' / '), target: `>= ${REPL_TARGETS.linkShare}`, unit: '', decimals: 2,
      status: judge(share === undefined ? undefined : share >= REPL_TARGETS.linkShare, `distance: steady fetch rate ${fmtR(share)} of the ${fmt(o.linkBps / 1e6 * 8, 0)} Mbit/s link at ${2 * o.linkDelayMs} ms RTT (target >= ${REPL_TARGETS.linkShare})`),
    });
  }

  if (d.sync.length) {
    for (const r of d.sync) {
      if (r.error) errors.push(`round ${r.round} sync: ${r.error}`);
      if (r.rsyncError) errors.push(`round ${r.round} sync rsync: ${r.rsyncError}`);
      if (r.oursEqual === false) errors.push(`round ${r.round} sync: the secondary's disk differs from the primary's after the sync`);
      if (r.rsyncEqual === false) errors.push(`round ${r.round} sync: rsync's destination differs from its source`);
    }
    const ours = medianOf(d.sync.map((r) => r.oursS));
    const rs = medianOf(d.sync.map((r) => r.rsyncS));
    const timeRatio = ratioOf(ours, rs);
    rows.push({
      bench: '4 fast sync', figure: `${fmtB(o.syncBytes)}, ${fmt(100 * o.syncDiffFraction, 0)} % of 4 KiB blocks differ: wall time (s, lower is better)`, ours, peer: rs,
      peerName: 'rsync --inplace --no-whole-file over ssh', ratio: timeRatio, perRound: d.sync.map((r) => fmtR(ratioOf(r.oursS, r.rsyncS))).join(' / '),
      target: `<= ${REPL_TARGETS.syncTimeRatio}`, unit: 's', decimals: 2,
      status: judge(timeRatio === undefined ? undefined : timeRatio <= REPL_TARGETS.syncTimeRatio, `fast sync: wall time ours/rsync ${fmtR(timeRatio)} (target <= ${REPL_TARGETS.syncTimeRatio})`),
    });
    const bytes = medianOf(d.sync.map((r) => r.oursBytes));
    const rsBytes = medianOf(d.sync.map((r) => (r.rsyncSentBytes === undefined ? undefined : r.rsyncSentBytes + (r.rsyncReceivedBytes ?? 0))));
    const share = bytes !== undefined ? bytes / o.syncBytes : undefined;
    rows.push({
      bench: '4 fast sync', figure: 'bytes on the wire / disk size (both directions)', ours: share, peer: rsBytes !== undefined ? rsBytes / o.syncBytes : undefined,
      peerName: 'rsync --inplace --no-whole-file over ssh (its --stats, without ssh overhead)', ratio: ratioOf(bytes, rsBytes),
      perRound: d.sync.map((r) => fmt(r.oursBytes !== undefined ? (100 * r.oursBytes) / o.syncBytes : undefined, 2) + ' %').join(' / '), target: `<= ${REPL_TARGETS.syncBytesShare}`, unit: '', decimals: 4,
      status: judge(share === undefined ? undefined : share <= REPL_TARGETS.syncBytesShare, `fast sync: ${fmtB(bytes)} on the wire = ${fmt(share !== undefined ? 100 * share : undefined, 2)} % of the ${fmtB(o.syncBytes)} disk (target <= ${100 * REPL_TARGETS.syncBytesShare} %)`),
    });
  }
  return { rows, met, missed, errors };
}

function table(head: string[], rows: string[][]): string {
  const out = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const r of rows) out.push(`| ${r.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`);
  return out.join('\n');
}

export function replResultsTable(s: ReplSummary): string {
  return table(['Benchmark', 'Figure', 'ours (median)', 'peer (median)', 'peer', 'ours/peer', 'per round', 'Target', 'Status'],
    s.rows.map((r) => [r.bench, r.figure, fmt(r.ours, r.decimals), fmt(r.peer, r.decimals), r.peerName, fmtR(r.ratio), r.perRound, r.target, mark(r.status)]));
}

const cpuCells = (c: CpuFigures | undefined): string[] => [
  `${fmtPct(c?.primaryCpuPct)} (${fmtPct(c?.primaryMainThreadCpuPct)}; ${fmtPct(c?.primaryMainRunqPct)})`,
  `${fmtPct(c?.secondaryCpuPct)} (${fmtPct(c?.secondaryMainThreadCpuPct)}; ${fmtPct(c?.secondaryMainRunqPct)})`,
  `${fmtPct(c?.sysBusyPct)} / ${fmtPct(c?.sysIowaitPct)}`,
  `${fmtB(c?.diskWrittenBytes)} / ${fmtPct(c?.diskBusyPct)}`,
];
const CPU_HEAD = ['CPU primary (main thread; its wait for a CPU)', 'CPU secondary (main thread; its wait for a CPU)', 'machine busy / iowait', 'disk written / busy'];

function readReplAnalysis(): string | undefined {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const candidate of [join(here, 'repl-analysis.md'), join(here, '..', '..', '..', 'test_suite', 'bench', 'repl-analysis.md')]) {
    try {
      return readFileSync(candidate, 'utf8');
    } catch { /* try the next */ }
  }
  return undefined;
}

export function renderReplMarkdown(d: ReplData & { machine?: Machine }, s: ReplSummary): string {
  const o = d.options;
  const lines: string[] = [];
  const p = (...x: string[]) => lines.push(...x);
  p('## Replication: two marsd hosts on one machine', '');
  p(`Generated by \`${d.invocation}\` (test_suite/bench/replication.ts) on ${d.startedAt.slice(0, 10)}; the replication suite took ${(d.durationS / 60).toFixed(1)} min. `
    + `Rounds: ${o.rounds}; benchmarks ${o.benches.join(', ')}${o.quick ? ' (--quick: a smoke check with small sizes, not a measurement)' : ''}. Raw figures: the \`replication\` part of [benchmarks.json](benchmarks.json).`, '');
  p(`**Replication targets: ${s.met.length} met, ${s.missed.length} missed.**`, '');
  for (const x of s.met) p(`- met: ${x}`);
  for (const x of s.missed) p(`- **missed**: ${x}`);
  p('');
  if (s.errors.length) {
    p('Errors during the run (their figures are left out of the medians):', '');
    for (const x of s.errors) p(`- ${x}`);
    p('');
  }
  p('### Results (medians over the rounds)', '');
  p(replResultsTable(s), '');

  if (d.throughput.length) {
    p('### 1. Replication throughput, per round', '');
    p(table(['Round', 'order', 'ours: until replayed', 'nbdcopy into primary', 'secondary had every byte', 'logged', 'not yet fetched / not yet replayed when nbdcopy ended', 'peer: nbdcopy → nbdkit TCP', 'ours/peer', ...CPU_HEAD],
      d.throughput.map((r) => [String(r.round), r.order, fmt(r.oursS), fmt(r.ingestS), fmt(r.fetchedS), fmtB(r.loggedBytes),
        `${fmtB(r.fetchBehindAtIngestEnd)} / ${fmtB(r.replayBehindAtIngestEnd)}`, fmt(r.peerS), fmtR(ratioOf(r.oursS, r.peerS)), ...cpuCells(r.cpu)])), '');
  }
  if (d.lag.length) {
    p('### 2. Replication lag under a paced writer, per round', '');
    p(table(['Round', 'rate (MiB/s)', 'writes', 'achieved (MiB/s)', 'replay lag p50 / p90 / p99 / max (ms)', 'visible on disk p50 / p99 (ms)', 'primary ack p50 / p99 (ms)', 'not replayed', 'primary logfiles written (2+: rotated)', ...CPU_HEAD],
      d.lag.map((r) => [String(r.round), fmt(r.rateBps / MiB, 1), `${r.chunks} x ${r.chunkBytes / 1024} KiB`, fmt(r.achievedBps !== undefined ? r.achievedBps / MiB : undefined, 1),
        [r.replayLagMs?.p50, r.replayLagMs?.p90, r.replayLagMs?.p99, r.replayLagMs?.max].map((x) => fmt(x, 0)).join(' / '),
        `${fmt(r.visibleLagMs?.p50, 0)} / ${fmt(r.visibleLagMs?.p99, 0)}`, `${fmt(r.ackMs?.p50, 1)} / ${fmt(r.ackMs?.p99, 1)}`, String(r.notReplayed ?? '–'), String(r.logfiles ?? '–'), ...cpuCells(r.cpu)])), '');
    for (const r of d.lag) {
      if (r.maxLagPerSecondMs?.length) p(`Round ${r.round}: largest replay lag among the writes of each second (ms): ${r.maxLagPerSecondMs.join(', ')}.`, '');
    }
  }
  if (d.distance.length) {
    p(`### 3. Long distance: ${2 * o.linkDelayMs} ms RTT, ${fmt((o.linkBps * 8) / 1e6, 0)} Mbit/s (${fmt(o.linkBps / MiB, 2)} MiB/s), per round`, '');
    p(table(['Round', 'order', 'logfile bytes', 'first byte after', 'complete after', 'steady rate (MiB/s)', 'of the link', 'average first→last byte (MiB/s)', 'proxy bytes towards the secondary', 'peer: nbdcopy through the same kind of proxy (MiB/s)', 'plain TCP stream through the same kind of proxy (MiB/s)'],
      d.distance.map((r) => [String(r.round), r.order, fmtB(r.logBytes), fmt(r.firstByteS), fmt(r.totalS), fmt(r.steadyBps !== undefined ? r.steadyBps / MiB : undefined),
        fmt(r.steadyBps !== undefined ? (100 * r.steadyBps) / o.linkBps : undefined, 1) + ' %', fmt(r.averageBps !== undefined ? r.averageBps / MiB : undefined), fmtB(r.proxyDownBytes),
        fmt(r.peerBps !== undefined ? r.peerBps / MiB : undefined), fmt(r.rawBps !== undefined ? r.rawBps / MiB : undefined)])), '');
    const last = [...d.distance].reverse().find((r) => r.samples?.length);
    if (last?.samples) {
      p(`Bytes fetched over time in round ${last.round} (s after resume-fetch: MiB): ${last.samples.map(([t, b]) => `${t.toFixed(2)}: ${(b / MiB).toFixed(1)}`).join(', ')}.`, '');
    }
  }
  if (d.sync.length) {
    p(`### 4. Fast sync of ${fmtB(o.syncBytes)} with ${fmt(100 * o.syncDiffFraction, 0)} % differing 4 KiB blocks, per round`, '');
    p(table(['Round', 'order', 'differing blocks', 'ours: until synced', 'join-resource --wait', 'ours: bytes up / down', 'verifystatus (equal,different)', 'disks equal after', 'rsync', 'rsync sent / received', 'rsync literal data', 'rsync result equal', 'ours/rsync time', ...CPU_HEAD],
      d.sync.map((r) => [String(r.round), r.order, String(r.differingBlocks), fmt(r.oursS), fmt(r.commandS), `${fmtB(r.oursUpBytes)} / ${fmtB(r.oursDownBytes)}`, r.verifyStatus ?? '–', String(r.oursEqual ?? '–'),
        r.rsyncError ? `not run: ${r.rsyncError}` : fmt(r.rsyncS), `${fmtB(r.rsyncSentBytes)} / ${fmtB(r.rsyncReceivedBytes)}`, fmtB(r.rsyncLiteralBytes), String(r.rsyncEqual ?? '–'), fmtR(ratioOf(r.oursS, r.rsyncS)), ...cpuCells(r.cpu)])), '');
  }
  p(`Disk sequential write rate at the start of each round (\`${d.diskRateCommand}\`): ${d.rounds.map((r) => (r.diskRateBps ? `${(r.diskRateBps / MiB).toFixed(0)} MiB/s` : '–')).join(' / ')}. `
    + `Load average at the start / end of each round: ${d.rounds.map((r) => `${r.loadAvgStart[0]?.toFixed(2)} / ${r.loadAvgEnd?.[0]?.toFixed(2) ?? '–'}`).join('; ')}.`, '');

  p('### How the figures are taken', '');
  p(
    `- Two marsd hosts, \`alpha\` (primary) and \`beta\`, run on this machine with their own /mars trees and data files in the bench directory, listening for peers on 127.0.0.2 and 127.0.0.3 (nbdkit peers on 127.0.0.4). `
      + 'marsd runs with its defaults (--quiet, --bind only). Every round sets up fresh clusters: create-cluster, marsd, create-resource on alpha; join-cluster with the secret file, marsd, join-resource on beta.',
    `- **Throughput**: \`nbdcopy --flush\` of ${fmtB(o.throughputBytes)} of random data (a file in the page cache) into alpha's export on its Unix socket. The time runs from nbdcopy's start until beta's versionlink of alpha's newest logfile equals alpha's, and alpha's covers the whole file `
      + '(polled every 20 ms; beta writes it after the replayed data was fdatasync\'ed). The peer is `nbdcopy --flush` of the same file into nbdkit\'s file plugin on TCP 127.0.0.4, in the same round (order alternating). '
      + 'Both hosts, the peer and the client share one disk and two cores: the primary writes every byte twice (log, data) and the secondary twice (log copy, data), so the disk carries four times what nbdkit writes.',
    `- **Lag**: after the throughput run, on the same cluster, a writer in the bench process sends ${o.lagChunkBytes / 1024} KiB writes to alpha's export on a fixed schedule at half the median replication throughput of this run (at most 64 in flight), for ${o.lagSeconds} s, sequentially over the device (no wrap-around). `
      + 'Each write carries a tag (run id, number) in its first bytes. Every 2 ms the bench reads beta\'s replay link and the tags of the not-yet-seen writes in beta\'s data file. '
      + 'Afterwards it scans alpha\'s logfiles for the end of each write\'s record; the **replay lag** of a write is the time from its acknowledgement on alpha until beta\'s replay link (durable: written after fdatasync) first stood at or past that end. '
      + '"Visible on disk" is the time until the tag could be read from beta\'s data file (written by the replayer, before its fdatasync). A write never replayed counts as infinite.',
    `- **Long distance**: a cluster with a FaultProxy (test_suite/helpers/fault-proxy.ts, in the bench process) in front of each host; ips/ip-HOST names the proxy, marsd --bind listens behind it. `
      + `With fetching paused on beta, ${fmtB(o.distanceBytes)} are written into alpha (nbdcopy --flush); then both proxies get ${o.linkDelayMs} ms delay each way and ${fmt(o.linkBps / 1e6, 1)} MB/s in each direction, and \`marsadm resume-fetch\` runs on beta. `
      + 'The size of beta\'s logfile copies is sampled every 50 ms; the steady rate is 80 % of the logfile divided by the time between 10 % and 90 % of it. '
      + 'The proxies\' token bucket may burst 50 ms of the link rate (625 KB; with the proxy\'s default of 64 KiB the emulated link itself lost up to a quarter of its rate whenever the proxy\'s timers fired late on this busy machine). '
      + 'Peers through a third proxy with the same settings, in the same round: nbdcopy of the same file into nbdkit over TCP (its default 4 connections and 64 requests in flight), and a plain TCP stream of 64 MiB (or the logfile size if smaller) from the bench process into a sink, which shows what the emulated link itself delivers.',
    `- **Fast sync**: alpha's disk holds ${fmtB(o.syncBytes)} of random data (the initial content of create-resource), beta's is a copy of it with ${fmt(100 * o.syncDiffFraction, 0)} % of its 4 KiB blocks overwritten with random data. `
      + 'With a FaultProxy (no faults) in front of each host to count bytes, the time runs from the start of `marsadm join-resource r0 DISK --wait` until beta\'s syncstatus equals the size; the bytes are everything both proxies forwarded in both directions meanwhile (digests, blocks, protocol, tree pulls). '
      + 'Afterwards both disks are compared (SHA-256). The peer is `rsync --inplace --no-whole-file --ignore-times` of alpha\'s disk onto another copy of beta\'s, over ssh to a temporary sshd on 127.0.0.1 (own host key, one authorized key, UsePAM=no, StrictModes=no), in the same round with the cluster stopped; its bytes are rsync\'s --stats totals. Both read files in the page cache.',
    '- CPU: user+system time of each marsd during the measured interval, % of one core (in parentheses: the main thread, which runs all JavaScript, and the time the main thread was runnable but waited for a CPU, from /proc/PID/task/PID/schedstat, in % of the interval); "machine busy / iowait" is the share of both cores from /proc/stat. '
      + '"disk written / busy" comes from /proc/diskstats for the whole device (everything written to it during the interval, and the share of the interval it had I/O in flight), so other processes\' I/O is included. '
      + 'Other agents ran tests on this machine at the same time; the load averages above and the per-round ratios show how noisy a run was.',
    '',
  );
  const analysis = readReplAnalysis();
  if (analysis) p(analysis.trimEnd(), '');
  const m = d.machine;
  if (m) {
    p('### Machine (replication run)', '');
    p(
      `- CPU: ${m.cpuModel}, ${m.cores} cores; RAM ${fmtB(m.ramBytes)}`,
      `- OS: ${m.os}; kernel ${m.kernel}`,
      `- Bench directory: ${m.benchDirTemplate ?? DEFAULT_BENCH_DIR_TEMPLATE} on ${m.filesystem}; ${fmtB(m.freeBytesAtStart)} free at start; load average at start ${m.loadAvgAtStart.join(' ')}`,
      `- Node ${m.node}, ${m.nbdkit}, ${m.nbdcopy}, ${d.tools.rsync ?? ''}, ${d.tools.ssh ?? ''}`,
      `- Code: git ${m.gitCommit}`,
      '',
    );
  }
  p('### Commands', '');
  p('```sh', 'npm run bench -- --suite replication                  # 3 rounds: 2 GiB throughput, 30 s lag, 256 MiB over the slow link, 1 GiB fast sync',
    'npm run bench -- --suite replication --quick          # smoke check: 1 round, small sizes',
    'npm run bench -- --suite replication --repl throughput,lag --rounds 5 --no-write-docs', '```', '');
  p(`What ran in the last round, from the root of the checkout (BENCHDIR is the run's temporary directory, removed at the end):`, '');
  const benchDirShown = d.machine?.benchDirTemplate ?? DEFAULT_BENCH_DIR_TEMPLATE;
  const names: Record<string, string> = { throughput: 'Throughput (cluster setup, then the two copies)', lag: 'Lag', distance: 'Long distance', sync: 'Fast sync' };
  for (const [k, cmds] of Object.entries(d.commands)) {
    if (!cmds?.length) continue;
    p(`${names[k] ?? k}:`, '', '```sh', `BENCHDIR=${benchDirShown}`, ...cmds.map((c) => reportPath(c, o.dir)), '```', '');
  }
  if (d.notes.length) {
    p('### Notes', '');
    for (const n of d.notes) p(`- ${n}`);
    p('');
  }
  return lines.join('\n');
}
