// `npm run bench`: marsd (primary, NBD export on a Unix socket) against nbdkit's file plugin on
// the same filesystem, with fio's nbd engine and nbdcopy; medians over rounds, ratios, targets;
// writes docs/benchmarks.md and docs/benchmarks.json.
//
// Options: --rounds N (3)  --runtime S (20)  --size BYTES (1 GiB; K/M/G suffixes allowed)
//          --jobs COPY,J1,... (all)  --quick (1 round, 5 s, 256 MiB)  --dir DIR (a temporary
//          directory is created inside it; default the system temp dir)  --no-write-docs
//          --render FILE (only regenerate the docs from an earlier benchmarks.json)
import { spawnSync } from 'node:child_process';
import { closeSync, createReadStream, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DOCS_DIR } from './paths.js';
import { ensureTools } from '../helpers/prereqs.js';
import { fioCommand, JOB_ORDER, JOBS, nbdcopyCommand, runFio, runNbdcopy, type JobId, type JobOutcome } from './fio.js';
import { describeMachine, freeBytes } from './machine.js';
import { killAllTracked, LoadSampler, memStatus, runCommand, toolEnv } from './proc.js';
import { fmtBytes, fmtMiB, fmtNum, fmtPct, fmtRate, fmtS, median, renderJson, renderMarkdown, cpuTable, memoryTable, resultsTable, summarize, type BenchData, type BenchOptions, type RoundInfo, type RunRecord } from './report.js';
import { MarsdTarget, NbdkitTarget, type Target, type TargetName } from './targets.js';

const GiB = 2 ** 30;
const MiB = 2 ** 20;
const round2 = (x: number): number => Math.round(x * 100) / 100;

function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]i?b?)?$/i.exec(s.trim());
  if (!m) throw new Error(`bad size ${s}`);
  const mult = { k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[(m[2] ?? '').charAt(0).toLowerCase() as 'k'] ?? 1;
  return Math.floor(Number(m[1]) * mult);
}

function usage(): string {
  return [
    'usage: npm run bench -- [--rounds N] [--runtime S] [--size BYTES] [--jobs COPY,J1,...,J6] [--quick] [--dir DIR] [--no-write-docs]',
    '  --rounds N       rounds per job and server (default 3)',
    '  --runtime S      seconds per fio job (default 20)',
    '  --size BYTES     device size (default 1G); also the amount nbdcopy copies',
    `  --jobs LIST      subset of ${JOB_ORDER.join(',')} (default all; COPY is the nbdcopy job)`,
    '  --quick          smoke check: 1 round, 5 s, 256 MiB (explicit options still win)',
    '  --dir DIR        where the temporary bench directory is created (default the system temp dir)',
    '  --no-write-docs  do not write docs/benchmarks.md and docs/benchmarks.json',
    '  --render FILE    only rewrite docs/benchmarks.md (and .json) from the data in a benchmarks.json',
  ].join('\n');
}

function parseOptions(argv: string[]): BenchOptions & { writeDocs: boolean; parent: string } {
  const { values } = parseArgs({
    args: argv,
    options: {
      rounds: { type: 'string' },
      runtime: { type: 'string' },
      size: { type: 'string' },
      jobs: { type: 'string' },
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
  return { rounds, runtimeS, sizeBytes, jobs, quick, dir: '', writeDocs: !values['no-write-docs'], parent: resolve(values.dir ?? tmpdir()) };
}

/** Regenerates the report from the raw data of an earlier run. */
function renderFrom(jsonPath: string): void {
  const raw = JSON.parse(readFileSync(jsonPath, 'utf8')) as BenchData & { summary?: unknown };
  delete raw.summary;
  writeDocs(raw);
}

function writeDocs(data: BenchData): void {
  const summary = summarize(data);
  writeFileSync(join(DOCS_DIR, 'benchmarks.md'), renderMarkdown(data, summary));
  writeFileSync(join(DOCS_DIR, 'benchmarks.json'), renderJson(data, summary));
  console.log(`wrote ${join(DOCS_DIR, 'benchmarks.md')} and benchmarks.json`);
}

function log(msg: string): void {
  process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${msg}\n`);
}

/** Writes SIZE bytes of random data (the nbdcopy source). */
function writeRandomFile(path: string, size: number): void {
  const fd = openSync(path, 'w');
  try {
    const buf = Buffer.alloc(8 * MiB);
    for (let off = 0; off < size; off += buf.length) {
      randomFillSync(buf);
      writeSync(fd, buf, 0, Math.min(buf.length, size - off));
    }
  } finally {
    closeSync(fd);
  }
}

/** Reads a file once so that it sits in the page cache. */
function warmCache(path: string): Promise<void> {
  return new Promise((res, rej) => {
    createReadStream(path, { highWaterMark: 4 * MiB }).on('data', () => undefined).on('end', () => res()).on('error', rej);
  });
}

async function syncFs(dir: string): Promise<void> {
  await runCommand('sync', ['-f', dir], 300_000);
}

/** Disk sequential write rate: dd of 1 GiB with fdatasync into the bench directory. */
async function measureDiskRate(dir: string): Promise<{ bps: number; command: string }> {
  const file = join(dir, 'ddtest.tmp');
  const args = ['if=/dev/zero', `of=${file}`, 'bs=1M', 'count=1024', 'conv=fdatasync'];
  await syncFs(dir);
  const r = await runCommand('dd', args, 300_000);
  rmSync(file, { force: true });
  const m = /(\d+) bytes .* copied, ([\d.]+) s/.exec(r.stderr);
  if (r.code !== 0 || !m) throw new Error(`dd failed: ${r.stderr.trim()}`);
  return { bps: Number(m[1]) / Number(m[2]), command: `dd ${args.join(' ').replace(dir, `${dirname(dir)}/round-N`)}` };
}

function checkPreconditions(): void {
  const err = ensureTools(['fio', 'nbdkit', 'nbdcopy']);
  if (err) throw new Error(`bench preconditions: ${err}`);
  for (const [cmd, args, what] of [
    ['fio', ['--enghelp=nbd'], 'fio has no nbd ioengine (Debian\'s fio package has it)'],
    ['nbdkit', ['file', '--version'], 'nbdkit has no file plugin'],
  ] as [string, string[], string][]) {
    // synchronous probes, before anything is started
    if (spawnSync(cmd, args, { stdio: 'ignore', env: toolEnv(), timeout: 30_000 }).status !== 0) throw new Error(`bench preconditions: ${what}`);
  }
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

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  const invocation = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  checkPreconditions();
  mkdirSync(opts.parent, { recursive: true });
  const benchDir = mkdtempSync(join(opts.parent, 'mars-bench-'));
  opts.dir = benchDir;
  let bench: Bench | undefined;
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    await bench?.stopTargets().catch(() => undefined);
    killAllTracked();
    rmSync(benchDir, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: stopping the servers and removing ${benchDir}`);
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
    const started = Date.now();
    const machine = describeMachine(benchDir);
    const minFree = 3 * opts.sizeBytes + 2 * GiB;
    if (machine.freeBytesAtStart < minFree) {
      throw new Error(`not enough free space in ${benchDir}: ${fmtBytes(machine.freeBytesAtStart)} free, need at least ${fmtBytes(minFree)}`);
    }
    log(`bench directory ${benchDir} (${machine.filesystem}); ${opts.rounds} round(s), ${opts.runtimeS} s per job, device ${fmtBytes(opts.sizeBytes)}, jobs ${opts.jobs.join(',')}`);
    const randomPath = join(benchDir, 'random.bin');
    writeRandomFile(randomPath, opts.sizeBytes);
    bench = new Bench(opts, randomPath);
    for (let r = 1; r <= opts.rounds; r++) await bench.round(r);

    const data: BenchData = {
      startedAt: new Date(started).toISOString(),
      finishedAt: new Date().toISOString(),
      durationS: (Date.now() - started) / 1000,
      invocation,
      options: opts,
      machine,
      diskRate: { command: bench.diskRateCommand, samplesBps: bench.diskRates, medianBps: bench.diskRateBps },
      rounds: bench.rounds,
      setup: bench.setup,
      randomSource: `${fmtBytes(opts.sizeBytes)} from node:crypto randomFillSync into ${randomPath}`,
      runs: bench.runs,
      notes: bench.notes,
    };
    const summary = summarize(data);
    console.log('');
    console.log(resultsTable(summary));
    console.log('');
    console.log(cpuTable(summary));
    console.log('');
    console.log(memoryTable(summary));
    console.log('');
    console.log(`disk sequential write: ${data.diskRate.samplesBps.map(fmtRate).join(' / ')} (median ${fmtRate(data.diskRate.medianBps)})`);
    console.log(`targets: ${summary.met.length} met, ${summary.missed.length} missed`);
    for (const m of summary.missed) console.log(`  missed: ${m}`);
    for (const e of summary.errors) console.log(`  error: ${e}`);
    console.log(`bench took ${(data.durationS / 60).toFixed(1)} min`);
    if (opts.writeDocs) writeDocs(data);
    return summary.errors.length ? 1 : 0;
  } finally {
    await cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`bench failed: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(2);
  },
);
