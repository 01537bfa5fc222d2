// Aggregation (medians, ratios, targets) and the markdown / JSON report.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { JOBS, type Figure, type JobId, type Metrics } from './fio.js';
import type { Machine } from './machine.js';
import { DEFAULT_BENCH_DIR_TEMPLATE, reportPath } from './paths.js';
import type { AfterLoad, TargetName } from './targets.js';

export const RSS_LIMIT_BYTES = 300 * 2 ** 20;
export const WRITEBACK_FACTOR = 1.5;
/** marsd publishes writeback-rest at most every 200 ms: the resolution of the writeback time */
export const STATUS_PUBLISH_S = 0.2;

export interface RunRecord {
  round: number;
  job: JobId;
  target: TargetName;
  /** 1 if this target ran first for this job in this round, 2 if second */
  position: number;
  command: string[];
  metrics: Metrics;
  error?: string;
  /** wall time of the load (client process), s */
  loadWallS: number;
  /** CPU use of the server process during the load, % of one core */
  serverCpuPct?: number;
  /** CPU use of the server's main thread (marsd: the JavaScript thread), % of one core */
  serverMainThreadCpuPct?: number;
  /** the part of serverCpuPct spent in the kernel (system time) */
  serverKernelCpuPct?: number;
  /** the whole machine during the load: busy (user+system+irq) and iowait, % of all cores */
  sysBusyPct?: number;
  sysIowaitPct?: number;
  /** CPU used by other processes (and the kernel) during the load: machine busy minus server
   *  minus fio, % of one core; shows how much else ran on the machine */
  otherCpuPct?: number;
  /** peak RSS of the server from the start of the load to the end of writeback */
  peakRssBytes?: number;
  /** largest writeback-rest seen while the load ran (marsd) */
  maxWritebackRestBytes?: number;
  after: AfterLoad;
}

export interface DiskRate {
  command: string;
  /** at the start and at the end of each round */
  samplesBps: number[];
  medianBps: number;
}

export interface RoundInfo {
  round: number;
  loadAvgStart: number[];
  loadAvgEnd?: number[];
  /** disk sequential write rate at the start and at the end of the round */
  diskRatesBps: number[];
  /** marsd's RSS right after it started and created the resource, before any load */
  marsdIdleRssBytes?: number;
}

export interface BenchOptions {
  rounds: number;
  runtimeS: number;
  sizeBytes: number;
  jobs: JobId[];
  quick: boolean;
  dir: string;
}

export interface BenchData {
  startedAt: string;
  finishedAt: string;
  durationS: number;
  invocation: string;
  options: BenchOptions;
  machine: Machine;
  diskRate: DiskRate;
  rounds: RoundInfo[];
  setup: Record<TargetName, string[]>;
  randomSource: string;
  runs: RunRecord[];
  notes: string[];
}

export type Status = 'met' | 'missed' | 'n/a';

export interface FigureSummary {
  job: JobId;
  figure: Figure;
  nbdkit: (number | undefined)[];
  marsd: (number | undefined)[];
  nbdkitMedian?: number;
  marsdMedian?: number;
  roundRatios: (number | undefined)[];
  ratio?: number;
  status: Status;
}

export interface ResourceSummary {
  job: JobId;
  peakRssMaxBytes?: number;
  peakRssMedianBytes?: number;
  rssStatus: Status;
  marsdCpuPct?: number;
  marsdMainThreadCpuPct?: number;
  marsdKernelCpuPct?: number;
  nbdkitKernelCpuPct?: number;
  nbdkitCpuPct?: number;
  fioCpuMarsdPct?: number;
  fioCpuNbdkitPct?: number;
  sysBusyMarsdPct?: number;
  sysIowaitMarsdPct?: number;
  sysBusyNbdkitPct?: number;
  otherCpuMarsdPct?: number;
  otherCpuNbdkitPct?: number;
  loggedBytes?: number;
  restAtEndBytes?: number;
  maxRestBytes?: number;
  writebackS?: number;
  writebackBoundS?: number;
  writebackPerRound: { writebackS?: number; boundS?: number }[];
  writebackStatus: Status;
  /** missed by less than the status publication interval */
  writebackWithinResolution: boolean;
}

export interface Summary {
  figures: FigureSummary[];
  resources: ResourceSummary[];
  met: string[];
  missed: string[];
  errors: string[];
}

export const jobName = (job: JobId): string => (job === 'COPY' ? 'nbdcopy' : job);

export function median(values: (number | undefined)[]): number | undefined {
  const v = values.filter((x): x is number => x !== undefined && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1]! + v[mid]!) / 2;
}

const maxOf = (values: (number | undefined)[]): number | undefined => {
  const v = values.filter((x): x is number => x !== undefined && Number.isFinite(x));
  return v.length ? Math.max(...v) : undefined;
};

function judge(ratio: number | undefined, target: Figure['target']): Status {
  if (!target) return 'n/a';
  if (ratio === undefined) return 'missed';
  return (target.op === '>=' ? ratio >= target.ratio : ratio <= target.ratio) ? 'met' : 'missed';
}

export function summarize(data: BenchData): Summary {
  const { rounds, jobs } = data.options;
  const run = (job: JobId, target: TargetName, round: number) =>
    data.runs.find((r) => r.job === job && r.target === target && r.round === round);
  const figures: FigureSummary[] = [];
  const resources: ResourceSummary[] = [];
  const met: string[] = [];
  const missed: string[] = [];
  const errors = data.runs.filter((r) => r.error || r.after.error).map((r) => `round ${r.round} ${jobName(r.job)} ${r.target}: ${r.error ?? r.after.error}`);
  const roundsList = Array.from({ length: rounds }, (_, i) => i + 1);
  const diskRate = data.diskRate.medianBps;

  for (const job of jobs) {
    for (const figure of JOBS[job].figures) {
      const val = (t: TargetName, r: number) => {
        const x = run(job, t, r);
        return x && !x.error ? x.metrics[figure.key] : undefined;
      };
      const nbdkit = roundsList.map((r) => val('nbdkit', r));
      const marsd = roundsList.map((r) => val('marsd', r));
      const nbdkitMedian = median(nbdkit);
      const marsdMedian = median(marsd);
      const roundRatios = roundsList.map((_, i) => (marsd[i] !== undefined && nbdkit[i] ? marsd[i]! / nbdkit[i]! : undefined));
      const ratio = marsdMedian !== undefined && nbdkitMedian ? marsdMedian / nbdkitMedian : undefined;
      const status = judge(ratio, figure.target);
      if (figure.target) {
        const label = `${jobName(job)} ${figure.label} ours/nbdkit ${fmtRatio(ratio)} (target ${figure.target.op} ${figure.target.ratio})`;
        (status === 'met' ? met : missed).push(label);
      }
      figures.push({ job, figure, nbdkit, marsd, nbdkitMedian, marsdMedian, roundRatios, ratio, status });
    }

    const mRuns = roundsList.map((r) => run(job, 'marsd', r));
    const nRuns = roundsList.map((r) => run(job, 'nbdkit', r));
    const rssPerRound = mRuns.map((r) => r?.peakRssBytes);
    const peakRssMaxBytes = maxOf(rssPerRound);
    const rssStatus: Status = peakRssMaxBytes === undefined ? 'missed' : peakRssMaxBytes <= RSS_LIMIT_BYTES ? 'met' : 'missed';
    (rssStatus === 'met' ? met : missed).push(`${jobName(job)} marsd peak RSS ${fmtMiB(peakRssMaxBytes)} (target <= 300 MiB)`);

    const writebackPerRound = mRuns.map((r) => ({
      writebackS: r?.after.writebackS,
      boundS: r?.after.loggedBytes !== undefined && diskRate > 0 ? (WRITEBACK_FACTOR * r.after.loggedBytes) / diskRate : undefined,
    }));
    const loggedBytes = median(mRuns.map((r) => r?.after.loggedBytes));
    const writebackS = median(writebackPerRound.map((w) => w.writebackS));
    const writebackBoundS = loggedBytes !== undefined && diskRate > 0 ? (WRITEBACK_FACTOR * loggedBytes) / diskRate : undefined;
    let writebackStatus: Status = 'n/a';
    let writebackWithinResolution = false;
    if (JOBS[job].writes) {
      writebackStatus = writebackS !== undefined && writebackBoundS !== undefined && writebackS <= writebackBoundS ? 'met' : 'missed';
      writebackWithinResolution = writebackStatus === 'missed' && writebackS !== undefined && writebackBoundS !== undefined
        && writebackS <= writebackBoundS + STATUS_PUBLISH_S;
      (writebackStatus === 'met' ? met : missed).push(
        `${jobName(job)} writeback ${fmtS(writebackS)} after the load (target <= ${fmtS(writebackBoundS)} = 1.5 x ${fmtBytes(loggedBytes)} / ${fmtRate(diskRate)})`
        + (writebackWithinResolution ? ' [within the 0.2 s status-link resolution]' : ''),
      );
    }
    const ok = (r: RunRecord | undefined) => (r && !r.error ? r : undefined);
    resources.push({
      job,
      peakRssMaxBytes,
      peakRssMedianBytes: median(rssPerRound),
      rssStatus,
      marsdCpuPct: median(mRuns.map((r) => ok(r)?.serverCpuPct)),
      marsdMainThreadCpuPct: median(mRuns.map((r) => ok(r)?.serverMainThreadCpuPct)),
      marsdKernelCpuPct: median(mRuns.map((r) => ok(r)?.serverKernelCpuPct)),
      nbdkitKernelCpuPct: median(nRuns.map((r) => ok(r)?.serverKernelCpuPct)),
      nbdkitCpuPct: median(nRuns.map((r) => ok(r)?.serverCpuPct)),
      fioCpuMarsdPct: median(mRuns.map((r) => ok(r)?.metrics.fioCpuPct)),
      fioCpuNbdkitPct: median(nRuns.map((r) => ok(r)?.metrics.fioCpuPct)),
      sysBusyMarsdPct: median(mRuns.map((r) => ok(r)?.sysBusyPct)),
      sysIowaitMarsdPct: median(mRuns.map((r) => ok(r)?.sysIowaitPct)),
      sysBusyNbdkitPct: median(nRuns.map((r) => ok(r)?.sysBusyPct)),
      otherCpuMarsdPct: median(mRuns.map((r) => ok(r)?.otherCpuPct)),
      otherCpuNbdkitPct: median(nRuns.map((r) => ok(r)?.otherCpuPct)),
      loggedBytes,
      restAtEndBytes: median(mRuns.map((r) => r?.after.restAtEndBytes)),
      maxRestBytes: maxOf(mRuns.map((r) => r?.maxWritebackRestBytes)),
      writebackS,
      writebackBoundS,
      writebackPerRound,
      writebackStatus,
      writebackWithinResolution,
    });
  }
  return { figures, resources, met, missed, errors };
}

// ---------------------------------------------------------------------------------------------
// formatting

export function fmtNum(v: number | undefined, decimals = 0): string {
  if (v === undefined || !Number.isFinite(v)) return '–';
  return v.toLocaleString('en-US', { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}
export const fmtRatio = (v: number | undefined): string => (v === undefined ? '–' : v.toFixed(2));
export const fmtMiB = (v: number | undefined): string => (v === undefined ? '–' : `${(v / 2 ** 20).toFixed(0)} MiB`);
export const fmtS = (v: number | undefined): string => (v === undefined ? '–' : `${v.toFixed(2)} s`);
export const fmtPct = (v: number | undefined): string => (v === undefined ? '–' : `${v.toFixed(0)} %`);
export function fmtBytes(v: number | undefined): string {
  if (v === undefined) return '–';
  if (v >= 2 ** 30) return `${(v / 2 ** 30).toFixed(2)} GiB`;
  if (v >= 2 ** 20) return `${(v / 2 ** 20).toFixed(0)} MiB`;
  if (v >= 2 ** 10) return `${(v / 2 ** 10).toFixed(0)} KiB`;
  return `${v} B`;
}
export const fmtRate = (bps: number | undefined): string => (bps === undefined ? '–' : `${(bps / 2 ** 20).toFixed(0)} MiB/s`);
const mark = (s: Status): string => (s === 'met' ? 'met' : s === 'missed' ? '**missed**' : '');

function table(head: string[], rows: string[][]): string {
  const out = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const r of rows) out.push(`| ${r.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`);
  return out.join('\n');
}

export function resultsTable(s: Summary): string {
  return table(
    ['Job', 'Figure', 'nbdkit (median)', 'marsd (median)', 'ours/nbdkit', 'per round', 'Target', 'Status'],
    s.figures.map((f) => [
      jobName(f.job),
      `${f.figure.label} (${f.figure.unit}${f.figure.higherBetter ? ', higher is better' : ', lower is better'})`,
      fmtNum(f.nbdkitMedian, f.figure.decimals),
      fmtNum(f.marsdMedian, f.figure.decimals),
      fmtRatio(f.ratio),
      f.roundRatios.map(fmtRatio).join(' / '),
      f.figure.target ? `${f.figure.target.op} ${f.figure.target.ratio.toFixed(1)}` : '',
      mark(f.status),
    ]),
  );
}

export function cpuTable(s: Summary): string {
  return table(
    ['Job', 'marsd CPU', 'of it: main thread', 'of it: kernel', 'nbdkit CPU', 'of it: kernel', 'fio CPU (marsd run / nbdkit run)', 'machine busy / iowait (marsd run)', 'other processes\' CPU (marsd run / nbdkit run)'],
    s.resources.map((r) => [
      jobName(r.job),
      fmtPct(r.marsdCpuPct),
      fmtPct(r.marsdMainThreadCpuPct),
      fmtPct(r.marsdKernelCpuPct),
      fmtPct(r.nbdkitCpuPct),
      fmtPct(r.nbdkitKernelCpuPct),
      `${fmtPct(r.fioCpuMarsdPct)} / ${fmtPct(r.fioCpuNbdkitPct)}`,
      `${fmtPct(r.sysBusyMarsdPct)} / ${fmtPct(r.sysIowaitMarsdPct)}`,
      `${fmtPct(r.otherCpuMarsdPct)} / ${fmtPct(r.otherCpuNbdkitPct)}`,
    ]),
  );
}

export function memoryTable(s: Summary): string {
  return table(
    ['Job', 'marsd peak RSS (max of rounds)', 'RSS <= 300 MiB', 'logged', 'writeback-rest at load end (max during load)', 'writeback time after the load', 'bound: 1.5 x logged / disk rate', 'writeback status'],
    s.resources.map((r) => [
      jobName(r.job),
      fmtMiB(r.peakRssMaxBytes),
      mark(r.rssStatus),
      fmtBytes(r.loggedBytes),
      `${fmtBytes(r.restAtEndBytes)} (${fmtBytes(r.maxRestBytes)})`,
      JOBS[r.job].writes ? fmtS(r.writebackS) : '–',
      JOBS[r.job].writes ? fmtS(r.writebackBoundS) : '–',
      mark(r.writebackStatus) + (r.writebackWithinResolution ? ' (by less than the 0.2 s link resolution)' : ''),
    ]),
  );
}

const shellQuote = (a: string): string => (/^[\w@%+=:,./$-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
export const shellJoin = (cmd: string[]): string => cmd.map(shellQuote).join(' ');

/** The hand-written analysis (test_suite/bench/analysis.md), included verbatim. */
function readAnalysis(): string | undefined {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const candidate of [join(here, 'analysis.md'), join(here, '..', '..', '..', 'test_suite', 'bench', 'analysis.md')]) {
    try {
      return readFileSync(candidate, 'utf8');
    } catch { /* try the next */ }
  }
  return undefined;
}

export function renderMarkdown(data: BenchData, s: Summary): string {
  const o = data.options;
  const m = data.machine;
  const lastRound = Math.max(...data.runs.map((r) => r.round), 0);
  const lines: string[] = [];
  const p = (...x: string[]) => lines.push(...x);
  p('## Write path: marsd (primary) against nbdkit\'s file plugin', '');
  p(`Generated by \`${data.invocation}\` (test_suite/bench/run.ts) on ${data.startedAt.slice(0, 10)}; the write suite took ${(data.durationS / 60).toFixed(1)} min.`);
  p(`Rounds: ${o.rounds}, ${o.runtimeS} s per fio job, device size ${fmtBytes(o.sizeBytes)}, jobs ${o.jobs.map(jobName).join(', ')}${o.quick ? ' (--quick: a smoke check, not a measurement)' : ''}.`);
  p(`The raw figures of every run are in the \`write\` part of [benchmarks.json](benchmarks.json).`, '');
  p(`**Write-path targets: ${s.met.length} met, ${s.missed.length} missed.**`, '');
  if (s.missed.length) {
    p('Missed:', '');
    for (const x of s.missed) p(`- ${x}`);
    p('');
  }
  if (s.errors.length) {
    p('Errors during the run (their figures are left out of the medians):', '');
    for (const x of s.errors) p(`- ${x}`);
    p('');
  }
  p('### Throughput and latency (medians over the rounds)', '');
  p(resultsTable(s), '');
  p('### marsd memory and writeback (medians over the rounds unless noted)', '');
  p(memoryTable(s), '');
  p(`marsd's RSS right after start, before any load (per round): ${data.rounds.map((r) => fmtMiB(r.marsdIdleRssBytes)).join(' / ')}.`, '');
  p(`Disk sequential write rate, measured in the bench directory at the start and at the end of each round with \`${data.diskRate.command}\`: `
    + `${data.diskRate.samplesBps.map(fmtRate).join(' / ')}; median ${fmtRate(data.diskRate.medianBps)} (used for the writeback bound).`, '');
  const j4 = s.figures.find((f) => f.job === 'J4' && f.figure.key === 'bwMiBs');
  if (j4?.marsdMedian !== undefined && data.diskRate.medianBps > 0) {
    const diskMiBs = data.diskRate.medianBps / 2 ** 20;
    p(`J4 against the disk: marsd wrote ${j4.marsdMedian.toFixed(0)} MiB/s, ${(j4.marsdMedian / diskMiBs).toFixed(2)} of the disk's synced sequential rate `
      + `(median ${diskMiBs.toFixed(0)} MiB/s); marsd writes every byte twice (log, then data disk), so about half the disk's rate is the most its design can reach (see the analysis below).`, '');
  }
  p(`Load average at the start / end of each round: ${data.rounds.map((r) => `${r.loadAvgStart[0]?.toFixed(2)} / ${r.loadAvgEnd?.[0]?.toFixed(2) ?? '–'}`).join('; ')} (${m.cores} cores).`, '');
  p('### Where the CPU goes (medians over the rounds, % of one core, during the load)', '');
  p(cpuTable(s), '');
  p('### How to read the figures', '');
  p(
    '- Both servers run at the same time, on sparse data files in the same directory (same filesystem), each exported on a Unix socket; '
      + 'every job runs against one and then the other, and which one goes first alternates from round to round. Each round starts both servers afresh '
      + '(new data files; for marsd a new /mars tree and resource `r0`).',
    '- The nbdcopy job runs first in each round and fills the whole device with random data, so J5 reads written data and all later jobs overwrite allocated blocks.',
    '- "ours/nbdkit" is marsd\'s median divided by nbdkit\'s median; "per round" gives the same ratio for each round, which shows how noisy the machine was. '
      + 'For IOPS and MiB/s a ratio above 1 means marsd is faster; for latencies and the nbdcopy wall time a ratio below 1 means marsd is faster.',
    '- J3 latency is the median (p50) or p99 of fio\'s write latency plus the same percentile of its flush latency (fio reports the two separately); '
      + 'each write is followed by a FLUSH, so the sum is the time one durable 4k write takes. The p99 sum is an upper estimate of the p99 of the sum.',
    '- nbdkit\'s file plugin writes into the page cache and only syncs on FLUSH; marsd appends every write to its transaction log (and fsyncs the log on FLUSH/FUA), '
      + 'then writes the data back to its data file in the background. "logged" is the growth of the logfiles during the job; "writeback time" is the time from the end of the load '
      + '(fio or nbdcopy exited) until `resource-r0/actual-alpha/writeback-rest` reads 0, polled every 20 ms. marsd publishes that link at most every 0.2 s, so the time is exact only to about 0.2 s. '
      + 'The bound is 1.5 x logged bytes / the disk\'s sequential write rate measured in the same run. '
      + 'marsd lets written data collect for a moment before it writes it back and fdatasyncs the data file before it counts it as written back, '
      + 'so even a few KiB left at the end of a load take a few tenths of a second; for jobs that log little the bound is shorter than that.',
    '- Peak RSS is the largest of marsd\'s VmRSS, polled every 100 ms, and VmHWM, reset (via /proc/PID/clear_refs) when the job starts and read after writeback finished. '
      + 'CPU % is the server process\'s user+system time during the load divided by the load\'s wall time (100 % = one core); '
      + 'marsd\'s main thread runs all its JavaScript, so a main-thread figure near 100 % means marsd is bound by that one core; the other threads are libuv\'s pool (file I/O) and V8\'s helpers; '
      + '"kernel" is the system time of the process (syscalls, copies into and out of the page cache and the socket); "machine busy / iowait" is the share of all cores from /proc/stat. '
      + 'fio itself shares the cores with the server, so a server that needs much CPU also slows the client down. '
      + '"Other processes\' CPU" is the machine\'s busy time minus the server\'s and fio\'s (in % of one core): anything else that ran at the same time, '
      + 'kernel work on behalf of the two included; large values mean the figures of that run were disturbed.',
    '- Between runs the bench waits for marsd\'s writeback, runs `marsadm log-rotate` and `marsadm log-delete --force`, and syncs the filesystem (`sync -f`), '
      + 'so a run does not pay for dirty pages of the one before.',
    '',
  );
  const analysis = readAnalysis();
  if (analysis) p(analysis.trimEnd(), '');
  p('### Machine (write-path run)', '');
  p(
    `- CPU: ${m.cpuModel}, ${m.cores} cores; RAM ${fmtBytes(m.ramBytes)}`,
    `- OS: ${m.os}; kernel ${m.kernel}`,
    `- Bench directory: ${m.benchDirTemplate ?? DEFAULT_BENCH_DIR_TEMPLATE} on ${m.filesystem}; ${fmtBytes(m.freeBytesAtStart)} free at start; load average at start ${m.loadAvgAtStart.join(' ')}`,
    `- Node ${m.node}, ${m.fio}, ${m.nbdkit}, ${m.nbdcopy}`,
    `- Code: git ${m.gitCommit}`,
    '',
  );
  p('### Commands', '');
  p('Run the bench (root installs fio, nbdkit and libnbd-bin when they are missing):', '', '```sh');
  p('npm run bench -- --suite write                  # 3 rounds, 20 s per job, 1 GiB device');
  p('npm run bench -- --suite write --quick          # smoke check: 1 round, 5 s, 256 MiB');
  p('npm run bench -- --suite write --rounds 5 --runtime 30 --jobs J1,J3 --dir /var/tmp --no-write-docs');
  p('```', '');
  const bd = (x: string) => reportPath(x, o.dir);
  const uriOf = (t: TargetName) => data.runs.find((x) => x.round === lastRound && x.target === t)?.command.find((a) => a.includes('nbd+unix:'))?.replace(/^--uri=/, '');
  p(`Exactly what ran in round ${lastRound}, from the root of the checkout (BENCHDIR is the temporary directory of the run, created with mkdtemp and removed at the end):`, '', '```sh');
  p(`BENCHDIR=${m.benchDirTemplate ?? DEFAULT_BENCH_DIR_TEMPLATE}`);
  p(`# the nbdcopy source: ${bd(data.randomSource)}; read once before each copy so that it is in the page cache`);
  p(`# disk sequential write rate, at the start and at the end of each round`, bd(data.diskRate.command));
  p('# nbdkit', ...data.setup.nbdkit.map(bd), '# marsd', ...data.setup.marsd.map(bd));
  p(`NBDKIT_URI="${bd(uriOf('nbdkit') ?? '')}"`, `MARSD_URI="${bd(uriOf('marsd') ?? '')}"`);
  p('# each job runs for URI=$NBDKIT_URI and URI=$MARSD_URI (order alternating by round), after `sync -f $BENCHDIR`:');
  for (const job of o.jobs) {
    const r = data.runs.find((x) => x.round === lastRound && x.job === job);
    if (!r) continue;
    const cmd = r.command.map((a) => (a.includes('nbd+unix:') ? a.replace(/nbd\+unix:.*$/, 'URI') : bd(a)));
    p(`# ${jobName(job)}: ${JOBS[job].title}`, shellJoin(cmd).replace(/URI/g, '"$URI"').replace(/'"\$URI"'/g, '"$URI"'));
  }
  p('```', '');
  if (data.notes.length) {
    p('### Notes', '');
    for (const n of data.notes) p(`- ${n}`);
    p('');
  }
  return lines.join('\n');
}
