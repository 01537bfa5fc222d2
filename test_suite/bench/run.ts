// `npm run bench`: two suites, each with medians over rounds, ratios against a peer measured in
// the same run, and targets; writes docs/benchmarks.md and docs/benchmarks.json.
//   write        marsd (primary, NBD export on a Unix socket) against nbdkit's file plugin on the
//                same filesystem, with fio's nbd engine and nbdcopy (this file, targets.ts)
//   replication  two marsd hosts on loopback addresses: throughput, lag, long-distance fetch,
//                fast sync, against nbdcopy/nbdkit and rsync over ssh (replication.ts)
// and, only when asked for (`--suite reliability`, its own options: reliability.ts), the long
// runs of the torture runner, the power-loss tests, the fuzzers and the simulation, recorded in
// docs/reliability.md; and (`--suite scale`, its own options: scale-options.ts) the idle cost of
// two marsd with many resources and logfiles, recorded in docs/benchmarks-scale.json and
// rendered into its section of docs/benchmarks.md.
//
// Options: --suite write|replication|all (all)  --rounds N (3)  --quick  --dir DIR
//          --no-write-docs  --render FILE; write suite: --runtime S (20) --size BYTES (1 GiB)
//          --jobs COPY,J1,...; replication suite: --repl LIST --repl-size --lag-seconds
//          --lag-rate --distance-size --sync-size (see usage()).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { BENCH_DIR_PREFIX, DOCS_DIR, reportPath, SCRAPE_SECTION_FILE, scrubPaths } from './paths.js';
import { ensureTools } from '../helpers/prereqs.js';
import { fioCommand, JOB_ORDER, JOBS, nbdcopyCommand, runFio, runNbdcopy, type JobId, type JobOutcome } from './fio.js';
import { describeMachine, freeBytes, type Machine } from './machine.js';
import { killAllTracked, LoadSampler, memStatus, toolEnv } from './proc.js';
import { fmtBytes, fmtMiB, fmtNum, fmtPct, fmtRate, fmtS, median, renderMarkdown, cpuTable, memoryTable, resultsTable, summarize, type BenchData, type BenchOptions, type RoundInfo, type RunRecord } from './report.js';
import { MarsdTarget, NbdkitTarget, type Target, type TargetName } from './targets.js';
import { measureDiskRate, syncFs, warmCache, writeRandomFile } from './files.js';
import { REPL_ORDER, ReplicationSuite, toolVersions, type ReplBenchId, type ReplData, type ReplOptions } from './replication.js';
import { renderReplMarkdown, replResultsTable, summarizeRepl } from './repl-report.js';
import { reliabilityUsage, runReliabilitySuite } from './reliability.js';
import { runScaleSuite } from './scale-main.js';
import { scaleUsage } from './scale-options.js';
import { readScaleData, renderScaleSection } from './scale-report.js';


const GiB = 2 ** 30;
const MiB = 2 ** 20;
const round2 = (x: number): number => Math.round(x * 100) / 100;

type Suite = 'write' | 'replication';

function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]i?b?)?$/i.exec(s.trim());
  if (!m) throw new Error(`bad size ${s}`);
  const mult = { k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[(m[2] ?? '').charAt(0).toLowerCase() as 'k'] ?? 1;
  return Math.floor(Number(m[1]) * mult);
}

function usage(): string {
  return [
    'usage: npm run bench -- [--suite write|replication|all] [--rounds N] [--quick] [--dir DIR] [--no-write-docs]',
    '                        [--runtime S] [--size BYTES] [--jobs COPY,J1,...,J6]',
    '                        [--repl throughput,lag,distance,sync] [--repl-size BYTES] [--lag-seconds S] [--lag-rate BYTES/S]',
    '                        [--distance-size BYTES] [--sync-size BYTES]',
    '  --suite LIST     write, replication or all (default all); --suite reliability or --suite scale alone: see --suite reliability --help, --suite scale --help',
    '  --rounds N       rounds of each suite (default 3)',
    '  --quick          smoke check: 1 round and small sizes (explicit options still win)',
    '  --dir DIR        where the temporary bench directory is created (default the system temp dir)',
    '  --no-write-docs  do not write docs/benchmarks.md and docs/benchmarks.json',
    '  --render FILE    only rewrite docs/benchmarks.md (and .json) from the data in a benchmarks.json',
    'write suite (marsd against nbdkit on one host):',
    '  --runtime S      seconds per fio job (default 20; quick 5)',
    '  --size BYTES     device size (default 1G; quick 256M); also the amount nbdcopy copies',
    `  --jobs LIST      subset of ${JOB_ORDER.join(',')} (default all; COPY is the nbdcopy job)`,
    'replication suite (two marsd hosts on loopback addresses):',
    `  --repl LIST      subset of ${REPL_ORDER.join(',')} (default all)`,
    '  --repl-size B    bytes written for the throughput benchmark, also the device size (default 2G; quick 256M)',
    '  --lag-seconds S  how long the paced writer runs (default 30; quick 8)',
    '  --lag-rate B/S   rate of the paced writer (default: half the median replication throughput of this run)',
    '  --distance-size B  logfile size fetched over the 50 ms / 100 Mbit/s link (default 256M; quick 32M)',
    '  --sync-size B    disk size of the fast-sync benchmark (default 1G; quick 256M)',
    '  --cpu-prof DIR   run every marsd with node --cpu-prof, profiles into DIR/BENCH-round-N (figures are then not representative)',
  ].join('\n');
}

interface RunOptions {
  suites: Suite[];
  write: BenchOptions;
  repl: ReplOptions;
  writeDocs: boolean;
  parent: string;
}

function parseOptions(argv: string[]): RunOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      suite: { type: 'string' },
      rounds: { type: 'string' },
      runtime: { type: 'string' },
      size: { type: 'string' },
      jobs: { type: 'string' },
      repl: { type: 'string' },
      'repl-size': { type: 'string' },
      'lag-seconds': { type: 'string' },
      'lag-rate': { type: 'string' },
      'distance-size': { type: 'string' },
      'sync-size': { type: 'string' },
      'cpu-prof': { type: 'string' },
      quick: { type: 'boolean', default: false },
      dir: { type: 'string' },
      'no-write-docs': { type: 'boolean', default: false },
      render: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.render !== undefined) {
    renderFrom(values.render);
    process.exit(0);
  }
  if (values.help) {
    console.log(usage());
    process.exit(0);
  }
  const quick = values.quick ?? false;
  let suites: Suite[] = ['write', 'replication'];
  if (values.suite !== undefined && values.suite !== 'all') {
    const want = values.suite.split(',').map((x) => x.trim());
    for (const w of want) if (w !== 'write' && w !== 'replication') throw new Error(`unknown suite ${w} (write, replication, all)`);
    suites = suites.filter((x) => want.includes(x));
  }
  const rounds = values.rounds !== undefined ? Number(values.rounds) : quick ? 1 : 3;
  const runtimeS = values.runtime !== undefined ? Number(values.runtime) : quick ? 5 : 20;
  const sizeBytes = values.size !== undefined ? parseSize(values.size) : quick ? 256 * MiB : GiB;
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds must be a positive integer');
  if (!Number.isFinite(runtimeS) || runtimeS < 1) throw new Error('--runtime must be at least 1 second');
  if (sizeBytes < 16 * MiB || sizeBytes % MiB !== 0) throw new Error('--size must be a multiple of 1 MiB and at least 16 MiB');
  let jobs: JobId[] = [...JOB_ORDER];
  if (values.jobs) {
    const want = values.jobs.split(',').map((j) => j.trim().toUpperCase()).map((j) => (j === 'NBDCOPY' ? 'COPY' : j));
    for (const j of want) if (!JOB_ORDER.includes(j as JobId)) throw new Error(`unknown job ${j} (jobs: ${JOB_ORDER.join(',')})`);
    jobs = JOB_ORDER.filter((j) => want.includes(j));
  }
  let benches: ReplBenchId[] = [...REPL_ORDER];
  if (values.repl) {
    const want = values.repl.split(',').map((j) => j.trim().toLowerCase());
    for (const j of want) if (!REPL_ORDER.includes(j as ReplBenchId)) throw new Error(`unknown replication benchmark ${j} (${REPL_ORDER.join(',')})`);
    benches = REPL_ORDER.filter((j) => want.includes(j));
  }
  const size = (v: string | undefined, dflt: number, quickDflt: number, name: string): number => {
    const x = v !== undefined ? parseSize(v) : quick ? quickDflt : dflt;
    if (x < 16 * MiB || x % MiB !== 0) throw new Error(`--${name} must be a multiple of 1 MiB and at least 16 MiB`);
    return x;
  };
  const lagSeconds = values['lag-seconds'] !== undefined ? Number(values['lag-seconds']) : quick ? 8 : 30;
  if (!Number.isFinite(lagSeconds) || lagSeconds < 1 || lagSeconds > 600) throw new Error('--lag-seconds must be between 1 and 600');
  const lagRateBps = values['lag-rate'] !== undefined ? parseSize(values['lag-rate']) : undefined;
  if (lagRateBps !== undefined && lagRateBps < 64 * 1024) throw new Error('--lag-rate must be at least 64K (bytes/s)');
  const repl: ReplOptions = {
    rounds, benches, quick, dir: '',
    throughputBytes: size(values['repl-size'], 2 * GiB, 256 * MiB, 'repl-size'),
    lagSeconds, lagChunkBytes: 256 * 1024, lagRateBps,
    distanceBytes: size(values['distance-size'], 256 * MiB, 32 * MiB, 'distance-size'),
    linkBps: 12_500_000, linkDelayMs: 25,
    syncBytes: size(values['sync-size'], GiB, 256 * MiB, 'sync-size'),
    syncDiffFraction: 0.01,
    cpuProfDir: values['cpu-prof'] !== undefined ? resolve(values['cpu-prof']) : undefined,
  };
  return {
    suites,
    write: { rounds, runtimeS, sizeBytes, jobs, quick, dir: '' },
    repl,
    writeDocs: !values['no-write-docs'],
    parent: resolve(values.dir ?? tmpdir()),
  };
}

/** Both suites' data as stored in docs/benchmarks.json (format 2). */
interface DocsData {
  format: 2;
  write?: BenchData;
  replication?: ReplData & { machine?: Machine };
}

/** Reads a benchmarks.json of either format (format 1: the write suite at the top level). */
function readDocsData(jsonPath: string): DocsData {
  const raw = JSON.parse(readFileSync(jsonPath, 'utf8')) as Record<string, unknown>;
  if (raw.format === 2) {
    const d = raw as unknown as DocsData;
    if (d.write) delete (d.write as BenchData & { summary?: unknown }).summary;
    if (d.replication) delete (d.replication as ReplData & { summary?: unknown }).summary;
    return d;
  }
  delete raw.summary;
  return { format: 2, write: raw as unknown as BenchData };
}

/** Regenerates the report from the raw data of an earlier run. */
function renderFrom(jsonPath: string): void {
  writeDocs(readDocsData(jsonPath));
}

function renderAll(d: DocsData): string {
  const lines: string[] = ['# Benchmarks', ''];
  lines.push(
    'Generated by `npm run bench` (test_suite/bench/run.ts). Two suites, each with medians over rounds and ratios against a peer measured in the same run on the same machine:',
    '',
  );
  const ws = d.write ? summarize(d.write) : undefined;
  const scaleData = readScaleData();
  const scaleRuns = scaleData.sessions.reduce((n, x) => n + x.runs.length, 0);
  const rs = d.replication ? summarizeRepl(d.replication) : undefined;
  lines.push(
    `- [Write path](#write-path-marsd-primary-against-nbdkits-file-plugin): marsd as primary against nbdkit's file plugin (fio, nbdcopy)${d.write ? ` — run on ${d.write.startedAt.slice(0, 10)}, ${ws!.met.length} targets met, ${ws!.missed.length} missed` : ' — not run yet'}.`,
    `- [Replication](#replication-two-marsd-hosts-on-one-machine): two marsd hosts on loopback addresses (throughput, lag, long distance, fast sync)${d.replication ? ` — run on ${d.replication.startedAt.slice(0, 10)}, ${rs!.met.length} targets met, ${rs!.missed.length} missed` : ' — not run yet'}.`,
    `- [Scale](#scale-idle-cost-of-many-resources-and-logfiles): two idle marsd with many resources and logfiles (\`--suite scale\`, run on its own)${scaleRuns > 0 ? '' : ' — not run yet'}.`,
    '',
    '```sh',
    'npm run bench                          # both suites, 3 rounds each',
    'npm run bench -- --quick               # smoke check of both (1 round, small sizes; a few minutes)',
    'npm run bench -- --suite replication   # or --suite write: only one suite (the other section is kept from benchmarks.json)',
    '```',
    '',
  );
  if (d.write) lines.push(renderMarkdown(d.write, ws!).trimEnd(), '');
  if (d.replication) lines.push(renderReplMarkdown(d.replication, rs!).trimEnd(), '');
  // The scale section (scale-report.ts) is measured on its own (--suite scale) and kept in its own record.
  const scale = renderScaleSection(scaleData);
  if (scale) lines.push(scale.trimEnd(), '');
  // The scrape-cost section (scrape-cost.ts) is measured on its own and kept between runs.
  const scrape = join(DOCS_DIR, SCRAPE_SECTION_FILE);
  if (existsSync(scrape)) lines.push(readFileSync(scrape, 'utf8').trimEnd(), '');
  return `${lines.join('\n')}\n`;
}

function renderJsonAll(d: DocsData): string {
  const out: Record<string, unknown> = { format: 2 };
  if (d.write) {
    const s = summarize(d.write);
    out.write = {
      ...d.write,
      summary: {
        met: s.met, missed: s.missed, errors: s.errors,
        figures: s.figures.map((f) => ({
          job: f.job, figure: f.figure.key, label: f.figure.label, unit: f.figure.unit, higherBetter: f.figure.higherBetter,
          target: f.figure.target, nbdkit: f.nbdkit, marsd: f.marsd, nbdkitMedian: f.nbdkitMedian, marsdMedian: f.marsdMedian,
          roundRatios: f.roundRatios, ratio: f.ratio, status: f.status,
        })),
        resources: s.resources,
      },
    };
  }
  if (d.replication) out.replication = { ...d.replication, summary: summarizeRepl(d.replication) };
  return `${JSON.stringify(out, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v), 2)}\n`;
}

/**
 * Writes docs/benchmarks.md and .json. No path of this machine goes in: the run's temporary
 * directory becomes $BENCHDIR and paths inside the checkout become relative to its root.
 */
function writeDocs(data: DocsData, benchDir?: string): void {
  const d = scrubPaths(data, benchDir);
  writeFileSync(join(DOCS_DIR, 'benchmarks.md'), renderAll(d));
  writeFileSync(join(DOCS_DIR, 'benchmarks.json'), renderJsonAll(d));
  say(`wrote ${join(DOCS_DIR, 'benchmarks.md')} and ${join(DOCS_DIR, 'benchmarks.json')}`);
}

/** The run's temporary directory once it exists: printed once in full, then as $BENCHDIR. */
let runBenchDir: string | undefined;

/** A line of console output, with paths as the reports show them. */
function say(text: string): void {
  console.log(reportPath(text, runBenchDir));
}

function log(msg: string): void {
  process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${reportPath(msg, runBenchDir)}\n`);
}

/** Tools of the selected suites (root installs what is missing); notes for optional ones. */
function checkPreconditions(suites: Suite[], benches: ReplBenchId[]): string[] {
  const notes: string[] = [];
  const need = suites.includes('write') ? ['fio', 'nbdkit', 'nbdcopy'] : ['nbdkit', 'nbdcopy'];
  const err = ensureTools(need);
  if (err) throw new Error(`bench preconditions: ${err}`);
  const probes: [string, string[], string][] = [['nbdkit', ['file', '--version'], 'nbdkit has no file plugin']];
  if (suites.includes('write')) probes.push(['fio', ['--enghelp=nbd'], 'fio has no nbd ioengine (Debian\'s fio package has it)']);
  for (const [cmd, args, what] of probes) {
    // synchronous probes, before anything is started
    if (spawnSync(cmd, args, { stdio: 'ignore', env: toolEnv(), timeout: 30_000 }).status !== 0) throw new Error(`bench preconditions: ${what}`);
  }
  if (suites.includes('replication') && benches.includes('sync')) {
    // Only the rsync baseline needs these; without them the fast sync runs without its peer.
    const sshErr = ensureTools(['rsync', 'ssh', 'ssh-keygen', 'sshd']);
    if (sshErr) notes.push(`fast sync: the rsync-over-ssh baseline cannot run: ${sshErr}`);
  }
  return notes;
}

// ---------------------------------------------------------------------------------------------

class Bench {
  readonly runs: RunRecord[] = [];
  readonly notes: string[] = [];
  readonly diskRates: number[] = [];
  readonly rounds: RoundInfo[] = [];
  diskRateCommand = '';
  setup: Record<TargetName, string[]> = { nbdkit: [], marsd: [] };
  private targets: Target[] = [];
  private filled = new Set<Target>();
  private restarts = 0;

  constructor(readonly opts: BenchOptions, readonly randomPath: string) {}

  get diskRateBps(): number {
    return median(this.diskRates) ?? 0;
  }

  async stopTargets(): Promise<void> {
    await Promise.all(this.targets.map((t) => t.stop().catch(() => undefined)));
    this.targets = [];
  }

  private async newTarget(name: TargetName, roundDir: string): Promise<Target> {
    const suffix = this.restarts ? `-${this.restarts}` : '';
    const t = name === 'nbdkit'
      ? new NbdkitTarget(join(roundDir, `nbdkit${suffix}`), this.opts.sizeBytes)
      : new MarsdTarget(join(roundDir, `marsd${suffix}`), this.opts.sizeBytes);
    this.targets.push(t);
    await t.start();
    this.setup[name] = t.setupCommands();
    return t;
  }

  async round(round: number): Promise<void> {
    const roundDir = join(this.opts.dir, `round-${round}`);
    mkdirSync(roundDir, { recursive: true });
    try {
      const info: RoundInfo = { round, loadAvgStart: loadavg().map(round2), diskRatesBps: [] };
      this.rounds.push(info);
      await this.diskRate(roundDir, info);
      log(`round ${round}/${this.opts.rounds}: disk sequential write ${fmtRate(info.diskRatesBps[0])}, load average ${info.loadAvgStart.join(' ')}`);
      this.checkSpace(info.diskRatesBps[0]!);

      const order: TargetName[] = round % 2 === 1 ? ['nbdkit', 'marsd'] : ['marsd', 'nbdkit'];
      const byName = new Map<TargetName, Target>();
      for (const name of order) byName.set(name, await this.newTarget(name, roundDir));
      const mpid = byName.get('marsd')!.pid;
      info.marsdIdleRssBytes = mpid ? memStatus(mpid)?.rss : undefined;

      // The nbdcopy job first: it also fills the device (needed by J5; later jobs overwrite).
      for (const job of ['COPY', ...this.opts.jobs.filter((j) => j !== 'COPY')] as JobId[]) {
        const measured = this.opts.jobs.includes(job);
        for (const [i, name] of order.entries()) {
          let t = byName.get(name)!;
          if (!t.alive) {
            this.notes.push(`round ${round}: ${name} was not running before ${job}; started afresh (${t.logTail().split('\n').slice(-3).join(' | ')})`);
            log(`round ${round}: ${name} died; restarting it`);
            this.restarts++;
            await t.stop().catch(() => undefined);
            this.filled.delete(t);
            t = await this.newTarget(name, roundDir);
            byName.set(name, t);
          }
          if (!this.filled.has(t) && job !== 'COPY') await this.runOne(round, 'COPY', t, i + 1, false);
          if (job === 'COPY' && !measured) {
            await this.runOne(round, 'COPY', t, i + 1, false);
          } else {
            await this.runOne(round, job, t, i + 1, true);
          }
        }
      }
      await this.stopTargets();
      await this.diskRate(roundDir, info);
      info.loadAvgEnd = loadavg().map(round2);
      log(`round ${round}/${this.opts.rounds} done: disk sequential write ${fmtRate(info.diskRatesBps[1])}, load average ${info.loadAvgEnd.join(' ')}`);
    } finally {
      await this.stopTargets();
      this.filled.clear();
      rmSync(roundDir, { recursive: true, force: true });
    }
  }

  /** Measures the disk's sequential write rate (recorded for the round and overall). */
  private async diskRate(dir: string, info: RoundInfo): Promise<void> {
    const rate = await measureDiskRate(dir);
    this.diskRates.push(rate.bps);
    info.diskRatesBps.push(rate.bps);
    this.diskRateCommand = rate.command;
  }

  private checkSpace(diskRateBps: number): void {
    // Data files are rewritten each round; marsd's logs of one job cannot grow faster than
    // the disk takes them for long, and are deleted after each job.
    const need = 2 * this.opts.sizeBytes + this.opts.runtimeS * Math.min(diskRateBps, 4 * GiB) * 1.2 + GiB;
    const free = freeBytes(this.opts.dir);
    if (free < need) {
      throw new Error(`not enough free space in ${this.opts.dir}: ${fmtBytes(free)} free, need about ${fmtBytes(need)} (2 data files + marsd logs of one job at the disk rate)`);
    }
  }

  private async runOne(round: number, job: JobId, t: Target, position: number, measured: boolean): Promise<void> {
    const def = JOBS[job];
    const cmd = def.kind === 'fio'
      ? fioCommand(def, t.uri, this.opts.sizeBytes, this.opts.runtimeS)
      : nbdcopyCommand(this.randomPath, t.uri);
    if (def.kind === 'nbdcopy') await warmCache(this.randomPath);
    await syncFs(this.opts.dir);
    const pid = t.pid!;
    const sampler = new LoadSampler([pid], t.statusLink);
    sampler.start();
    t.beforeLoad();
    let outcome: JobOutcome;
    try {
      outcome = def.kind === 'fio'
        ? await runFio(cmd, this.opts.runtimeS)
        : await runNbdcopy(cmd, Math.max(300, this.opts.sizeBytes / (4 * MiB)));
    } catch (err) {
      outcome = { metrics: {}, error: (err as Error).message, clientWallS: 0 };
    }
    const load = sampler.stop();
    const after = await t.afterLoad({ diskRateBps: this.diskRateBps });
    this.filled.add(t);
    if (outcome.error && !t.alive) outcome.error += ` (${t.name} exited: ${t.logTail().split('\n').slice(-3).join(' | ')})`;
    const rec: RunRecord = {
      round, job, target: t.name, position, command: cmd, metrics: outcome.metrics, error: outcome.error,
      loadWallS: outcome.clientWallS,
      serverCpuPct: load.cpuPct.get(pid),
      serverMainThreadCpuPct: load.mainThreadCpuPct.get(pid),
      serverKernelCpuPct: load.kernelCpuPct.get(pid),
      sysBusyPct: load.sysBusyPct,
      sysIowaitPct: load.sysIowaitPct,
      otherCpuPct: outcome.metrics.fioCpuPct !== undefined && load.cpuPct.get(pid) !== undefined
        ? Math.max(0, (load.sysBusyPct * cpus().length) - load.cpuPct.get(pid)! - outcome.metrics.fioCpuPct)
        : undefined,
      peakRssBytes: sampler.peakRss(pid),
      maxWritebackRestBytes: t.statusLink ? sampler.maxLink : undefined,
      after,
    };
    const label = `round ${round} ${job === 'COPY' ? 'nbdcopy' : job} ${t.name.padEnd(6)}`;
    if (!measured) {
      log(`${label} (fill, not measured) ${outcome.error ?? fmtS(outcome.clientWallS)}`);
      return;
    }
    this.runs.push(rec);
    log(`${label} ${describeRun(rec)}`);
  }
}

function describeRun(r: RunRecord): string {
  if (r.error) return `ERROR ${r.error}`;
  const f = JOBS[r.job].figures[0]!;
  const parts = [`${f.label} ${fmtNum(r.metrics[f.key], f.decimals)} ${f.unit}`];
  if (r.job === 'J3') parts.push(`p99 ${fmtNum(r.metrics.latP99Us)} µs`);
  parts.push(`cpu ${fmtPct(r.serverCpuPct)} (main thread ${fmtPct(r.serverMainThreadCpuPct)}, kernel ${fmtPct(r.serverKernelCpuPct)})`, `other cpu ${fmtPct(r.otherCpuPct)}`, `rss ${fmtMiB(r.peakRssBytes)}`);
  if (r.target === 'marsd' && JOBS[r.job].writes) {
    parts.push(`logged ${fmtBytes(r.after.loggedBytes)}`, `rest at end ${fmtBytes(r.after.restAtEndBytes)} (max ${fmtBytes(r.maxWritebackRestBytes)})`, `writeback ${fmtS(r.after.writebackS)}`);
  }
  if (r.after.error) parts.push(`AFTER-LOAD ERROR ${r.after.error}`);
  return parts.join(', ');
}

// ---------------------------------------------------------------------------------------------

/** `--suite reliability` and `--suite scale` are suites of their own with their own options. */
function wantsSuite(argv: string[], name: 'reliability' | 'scale'): boolean {
  const i = argv.indexOf('--suite');
  const v = i >= 0 ? argv[i + 1] : argv.find((a) => a.startsWith('--suite='))?.slice('--suite='.length);
  return v === name;
}

/** Rewrites docs/benchmarks.md from the records (benchmarks.json, benchmarks-scale.json, the scrape section). */
function rewriteMarkdown(): void {
  const jsonPath = join(DOCS_DIR, 'benchmarks.json');
  const d: DocsData = existsSync(jsonPath) ? readDocsData(jsonPath) : { format: 2 };
  writeFileSync(join(DOCS_DIR, 'benchmarks.md'), renderAll(scrubPaths(d)));
  say(`wrote ${join(DOCS_DIR, 'benchmarks.md')}`);
}

async function main(): Promise<number> {
  if (wantsSuite(process.argv.slice(2), 'reliability')) {
    if (process.argv.includes('--help') || process.argv.includes('-h')) {
      console.log(reliabilityUsage());
      return 0;
    }
    return runReliabilitySuite(process.argv.slice(2), say);
  }
  if (wantsSuite(process.argv.slice(2), 'scale')) {
    if (process.argv.includes('--help') || process.argv.includes('-h')) {
      console.log(scaleUsage());
      return 0;
    }
    const r = await runScaleSuite(process.argv.slice(2), say);
    if (r.wroteJson) rewriteMarkdown();
    return r.ok ? 0 : 1;
  }
  const opts = parseOptions(process.argv.slice(2));
  const invocation = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  const preNotes = checkPreconditions(opts.suites, opts.repl.benches);
  mkdirSync(opts.parent, { recursive: true });
  const benchDir = mkdtempSync(join(opts.parent, BENCH_DIR_PREFIX));
  // The one place the real directory is printed; from here on output and reports say $BENCHDIR.
  log(`bench directory: BENCHDIR=${benchDir}`);
  runBenchDir = benchDir;
  opts.write.dir = benchDir;
  opts.repl.dir = benchDir;
  let bench: Bench | undefined;
  let repl: ReplicationSuite | undefined;
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    await bench?.stopTargets().catch(() => undefined);
    await repl?.cleanup().catch(() => undefined);
    killAllTracked();
    rmSync(benchDir, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: stopping the servers and removing $BENCHDIR`);
    void cleanup().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('SIGHUP', onSignal);
  process.once('exit', () => {
    if (!cleaned) {
      killAllTracked();
      rmSync(benchDir, { recursive: true, force: true });
    }
  });

  try {
    const machine = describeMachine(benchDir);
    const docs: DocsData = { format: 2 };
    let errors = 0;
    if (opts.suites.includes('write')) {
      const o = opts.write;
      const started = Date.now();
      const minFree = 3 * o.sizeBytes + 2 * GiB;
      const free = freeBytes(benchDir);
      if (free < minFree) throw new Error(`not enough free space in ${benchDir}: ${fmtBytes(free)} free, need at least ${fmtBytes(minFree)}`);
      log(`write suite: bench directory ${benchDir} (${machine.filesystem}); ${o.rounds} round(s), ${o.runtimeS} s per job, device ${fmtBytes(o.sizeBytes)}, jobs ${o.jobs.join(',')}`);
      const randomPath = join(benchDir, 'random.bin');
      writeRandomFile(randomPath, o.sizeBytes);
      bench = new Bench(o, randomPath);
      for (let r = 1; r <= o.rounds; r++) await bench.round(r);
      rmSync(randomPath, { force: true });
      const data: BenchData = {
        startedAt: new Date(started).toISOString(),
        finishedAt: new Date().toISOString(),
        durationS: (Date.now() - started) / 1000,
        invocation,
        options: o,
        machine,
        diskRate: { command: bench.diskRateCommand, samplesBps: bench.diskRates, medianBps: bench.diskRateBps },
        rounds: bench.rounds,
        setup: bench.setup,
        randomSource: `${fmtBytes(o.sizeBytes)} from node:crypto randomFillSync into ${randomPath}`,
        runs: bench.runs,
        notes: bench.notes,
      };
      docs.write = data;
      const summary = summarize(data);
      say('');
      say(resultsTable(summary));
      say('');
      say(cpuTable(summary));
      say('');
      say(memoryTable(summary));
      say('');
      say(`disk sequential write: ${data.diskRate.samplesBps.map(fmtRate).join(' / ')} (median ${fmtRate(data.diskRate.medianBps)})`);
      say(`write suite targets: ${summary.met.length} met, ${summary.missed.length} missed`);
      for (const m of summary.missed) say(`  missed: ${m}`);
      for (const e of summary.errors) say(`  error: ${e}`);
      say(`write suite took ${(data.durationS / 60).toFixed(1)} min`);
      errors += summary.errors.length;
    }
    if (opts.suites.includes('replication')) {
      const o = opts.repl;
      const started = Date.now();
      const loadAtStart = loadavg().map(round2);
      const t = o.benches.some((b) => b === 'throughput' || b === 'lag') ? o.throughputBytes : 0;
      const minFree = 9 * t + 4 * o.syncBytes + 4 * o.distanceBytes + 2 * GiB;
      const free = freeBytes(benchDir);
      if (free < minFree) throw new Error(`not enough free space in ${benchDir}: ${fmtBytes(free)} free, need at least ${fmtBytes(minFree)}`);
      log(`replication suite: bench directory ${benchDir}; ${o.rounds} round(s), ${o.benches.join(',')}; throughput ${fmtBytes(o.throughputBytes)}, lag ${o.lagSeconds} s, distance ${fmtBytes(o.distanceBytes)}, sync ${fmtBytes(o.syncBytes)}`);
      repl = new ReplicationSuite(o);
      repl.data.notes.push(...preNotes);
      await repl.run();
      const data: ReplData & { machine: Machine } = {
        ...repl.data,
        startedAt: new Date(started).toISOString(),
        finishedAt: new Date().toISOString(),
        durationS: (Date.now() - started) / 1000,
        invocation,
        tools: await toolVersions(),
        machine: { ...machine, loadAvgAtStart: loadAtStart, freeBytesAtStart: free },
      };
      docs.replication = data;
      const s = summarizeRepl(data);
      say('');
      say(replResultsTable(s));
      say(`replication suite targets: ${s.met.length} met, ${s.missed.length} missed`);
      for (const m of s.missed) say(`  missed: ${m}`);
      for (const e of s.errors) say(`  error: ${e}`);
      say(`replication suite took ${(data.durationS / 60).toFixed(1)} min`);
      errors += s.errors.length;
    }
    if (opts.writeDocs) {
      // A suite that did not run keeps its section from the existing benchmarks.json.
      const jsonPath = join(DOCS_DIR, 'benchmarks.json');
      if ((!docs.write || !docs.replication) && existsSync(jsonPath)) {
        try {
          const old = readDocsData(jsonPath);
          docs.write ??= old.write;
          docs.replication ??= old.replication;
        } catch (err) {
          say(`note: cannot read the earlier ${jsonPath}: ${(err as Error).message}`);
        }
      }
      writeDocs(docs, benchDir);
    }
    return errors ? 1 : 0;
  } finally {
    await cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(reportPath(`bench failed: ${err instanceof Error ? err.message : String(err)}`, runBenchDir));
    process.exit(2);
  },
);
