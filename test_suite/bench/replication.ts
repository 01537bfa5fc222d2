// The replication benchmarks (`npm run bench -- --suite replication`): two marsd hosts on this
// machine, each on its own loopback address, against peers measured in the same round:
//   throughput  nbdcopy of N bytes into the primary; time until the secondary replayed all of
//               it, against nbdcopy of the same file to nbdkit's file plugin over TCP loopback;
//   lag         a paced writer at half the measured replication throughput; per write the time
//               from its acknowledgement on the primary until the secondary replayed it;
//   distance    a large logfile fetched through a FaultProxy with 25 ms each way and
//               100 Mbit/s, against nbdcopy through an identical proxy;
//   sync        join-resource of a secondary whose disk differs from the primary's in 1 % of
//               its 4 KiB blocks, against rsync --inplace --no-whole-file over a real sshd.
// Every load and wait is bounded in count and time; every process is ended by its pid.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, mkdirSync, openSync, readFileSync, readSync, rmSync, writeFileSync, truncateSync, writeSync } from 'node:fs';
import { randomBytes, randomFillSync } from 'node:crypto';
import net from 'node:net';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { NbdClient } from '../../kernel-shim/nbd-client.js';
import { readLogBatches } from '../../common/log/scanner.js';
import { BenchCluster, freePortOn, RES, type BenchHost } from './cluster.js';
import { fileDigest, measureDiskRate, syncFs, warmCache, writeRandomFile } from './files.js';
import { diskDeviceOf, LoadSampler, readDiskCounters, runCommand, sleep, toolEnv, trackChild, type DiskCounters } from './proc.js';
import { sshMissing, TempSshd } from './sshd.js';
import { reportPath } from './paths.js';

const MiB = 2 ** 20;
const round2 = (x: number): number => Math.round(x * 100) / 100;
const now = (): number => performance.now();

export type ReplBenchId = 'throughput' | 'lag' | 'distance' | 'sync';
export const REPL_ORDER: ReplBenchId[] = ['throughput', 'lag', 'distance', 'sync'];

export interface ReplOptions {
  rounds: number;
  benches: ReplBenchId[];
  /** bytes nbdcopy writes into the primary (and into nbdkit) in the throughput benchmark */
  throughputBytes: number;
  /** seconds the paced writer runs in the lag benchmark */
  lagSeconds: number;
  lagChunkBytes: number;
  /** paced writer rate; default half the median replication throughput of this run */
  lagRateBps?: number;
  /** size of the logfile fetched over the slow link */
  distanceBytes: number;
  /** the slow link: bytes/s in each direction, one-way delay */
  linkBps: number;
  linkDelayMs: number;
  /** disk size of the fast-sync benchmark and the share of differing 4 KiB blocks */
  syncBytes: number;
  syncDiffFraction: number;
  quick: boolean;
  dir: string;
  /** write CPU profiles of every marsd (node --cpu-prof) into this directory */
  cpuProfDir?: string;
}

export interface CpuFigures {
  /** bytes written to the bench directory's disk and its busy time (io_ticks) share, whole device */
  diskWrittenBytes?: number;
  diskBusyPct?: number;
  primaryCpuPct?: number;
  primaryMainThreadCpuPct?: number;
  /** the main thread was runnable but waited for a CPU (/proc/PID/schedstat), % of the interval */
  primaryMainRunqPct?: number;
  secondaryCpuPct?: number;
  secondaryMainThreadCpuPct?: number;
  secondaryMainRunqPct?: number;
  sysBusyPct?: number;
  sysIowaitPct?: number;
}

export interface ThroughputRun {
  round: number;
  /** 'ours-first' or 'peer-first' */
  order: string;
  bytes: number;
  /** nbdcopy into nbdkit over TCP loopback */
  peerS?: number;
  peerError?: string;
  /** from the start of nbdcopy into the primary until the secondary's versionlink equals the primary's */
  oursS?: number;
  /** nbdcopy into the primary (all writes acknowledged and flushed) */
  ingestS?: number;
  /** until the secondary had a copy of every logged byte */
  fetchedS?: number;
  loggedBytes?: number;
  /** at the moment nbdcopy finished: logged bytes not yet fetched, and fetched not yet replayed */
  fetchBehindAtIngestEnd?: number;
  replayBehindAtIngestEnd?: number;
  cpu?: CpuFigures;
  error?: string;
}

export interface Percentiles {
  p50?: number;
  p90?: number;
  p99?: number;
  max?: number;
  mean?: number;
}

export interface LagRun {
  round: number;
  rateBps: number;
  chunkBytes: number;
  chunks: number;
  /** achieved write rate (bytes / time from the first to the last issue) */
  achievedBps?: number;
  /** ms from acknowledgement on the primary until the secondary's replay link passed the write */
  replayLagMs?: Percentiles;
  /** ms from acknowledgement until the data could be read from the secondary's data file */
  visibleLagMs?: Percentiles;
  /** ms from issue to acknowledgement on the primary */
  ackMs?: Percentiles;
  /** writes whose replay was not seen within the deadline (counted as infinite lag) */
  notReplayed?: number;
  /** how many of the primary's logfiles the writes went into (2 or more: a rotation happened) */
  logfiles?: number;
  /** the largest replay lag among the writes issued in each second of the run, ms */
  maxLagPerSecondMs?: number[];
  /** how late the writer issued its last write against its schedule, ms */
  writerLateMs?: number;
  cpu?: CpuFigures;
  error?: string;
}

export interface DistanceRun {
  round: number;
  order: string;
  logBytes?: number;
  /** from resume-fetch until the first fetched byte */
  firstByteS?: number;
  /** from resume-fetch until the copy was complete */
  totalS?: number;
  /** fetched bytes / time between 10 % and 90 % of the logfile (the steady rate) */
  steadyBps?: number;
  /** fetched bytes / time from the first to the last byte */
  averageBps?: number;
  /** bytes the proxy in front of the primary forwarded towards the secondary meanwhile */
  proxyDownBytes?: number;
  /** nbdcopy through an identical proxy into nbdkit over TCP */
  peerBytes?: number;
  peerS?: number;
  peerBps?: number;
  peerError?: string;
  /** a plain TCP stream (node net) through an identical proxy: what the emulated link delivers */
  rawBps?: number;
  /** bytes over time, [s since resume-fetch, bytes], thinned */
  samples?: [number, number][];
  error?: string;
}

export interface SyncRun {
  round: number;
  order: string;
  diskBytes: number;
  differingBlocks: number;
  /** from the start of marsadm join-resource until syncstatus equals the size */
  oursS?: number;
  /** wall time of `marsadm join-resource --wait` */
  commandS?: number;
  /** bytes through both proxies (both directions) during the sync */
  oursBytes?: number;
  oursUpBytes?: number;
  oursDownBytes?: number;
  /** verifystatus EQUAL,DIFFERENT reported by the secondary */
  verifyStatus?: string;
  oursEqual?: boolean;
  rsyncS?: number;
  rsyncSentBytes?: number;
  rsyncReceivedBytes?: number;
  rsyncLiteralBytes?: number;
  rsyncEqual?: boolean;
  rsyncError?: string;
  cpu?: CpuFigures;
  error?: string;
}

export interface ReplRoundInfo {
  round: number;
  loadAvgStart: number[];
  loadAvgEnd?: number[];
  diskRateBps?: number;
}

export interface ReplData {
  startedAt: string;
  finishedAt: string;
  durationS: number;
  invocation: string;
  options: ReplOptions;
  rounds: ReplRoundInfo[];
  diskRateCommand: string;
  throughput: ThroughputRun[];
  lag: LagRun[];
  distance: DistanceRun[];
  sync: SyncRun[];
  /** setup and load commands as they ran in the last round, per benchmark */
  commands: Partial<Record<ReplBenchId, string[]>>;
  tools: Record<string, string>;
  notes: string[];
}

export function percentiles(values: number[]): Percentiles {
  const v = [...values].sort((a, b) => a - b);
  if (v.length === 0) return {};
  const at = (q: number) => v[Math.min(v.length - 1, Math.max(0, Math.ceil(q * v.length) - 1))]!;
  const finite = v.filter(Number.isFinite);
  return {
    p50: at(0.5), p90: at(0.9), p99: at(0.99), max: v[v.length - 1],
    mean: finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : undefined,
  };
}

function log(msg: string): void {
  process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${msg}\n`);
}

const fmtMiBs = (bps: number | undefined): string => (bps === undefined ? '–' : `${(bps / MiB).toFixed(1)} MiB/s`);
const fmtSec = (s: number | undefined): string => (s === undefined ? '–' : `${s.toFixed(2)} s`);

/** CPU and disk figures of a measured interval (start with measureStart, end with cpuOf). */
class Measure {
  readonly sampler: LoadSampler;
  private readonly disk0: DiskCounters | undefined;
  private readonly runq0 = new Map<number, number>();
  private readonly t0 = Date.now();
  constructor(pids: number[], private readonly device: string | undefined) {
    this.sampler = new LoadSampler(pids);
    this.sampler.start();
    this.disk0 = device ? readDiskCounters(device) : undefined;
    for (const pid of pids) this.runq0.set(pid, runqWaitMs(pid) ?? NaN);
  }

  stop(primary?: number, secondary?: number): CpuFigures {
    const c = cpuOf(this.sampler.stop(), primary, secondary);
    const wall = Date.now() - this.t0;
    const runq = (pid: number | undefined) => {
      if (pid === undefined || wall <= 0) return undefined;
      const v = (100 * ((runqWaitMs(pid) ?? NaN) - (this.runq0.get(pid) ?? NaN))) / wall;
      return Number.isFinite(v) ? v : undefined;
    };
    c.primaryMainRunqPct = runq(primary);
    c.secondaryMainRunqPct = runq(secondary);
    const d1 = this.device ? readDiskCounters(this.device) : undefined;
    if (this.disk0 && d1 && d1.atMs > this.disk0.atMs) {
      c.diskWrittenBytes = d1.writtenBytes - this.disk0.writtenBytes;
      c.diskBusyPct = (100 * (d1.busyMs - this.disk0.busyMs)) / (d1.atMs - this.disk0.atMs);
    }
    return c;
  }
}

/** Time the main thread of pid spent runnable but waiting for a CPU, ms (schedstat field 2). */
function runqWaitMs(pid: number): number | undefined {
  try {
    return Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').trim().split(/\s+/)[1]) / 1e6;
  } catch {
    return undefined;
  }
}

function cpuOf(load: ReturnType<LoadSampler['stop']>, primary?: number, secondary?: number): CpuFigures {
  return {
    primaryCpuPct: primary === undefined ? undefined : load.cpuPct.get(primary),
    primaryMainThreadCpuPct: primary === undefined ? undefined : load.mainThreadCpuPct.get(primary),
    secondaryCpuPct: secondary === undefined ? undefined : load.cpuPct.get(secondary),
    secondaryMainThreadCpuPct: secondary === undefined ? undefined : load.mainThreadCpuPct.get(secondary),
    sysBusyPct: load.sysBusyPct,
    sysIowaitPct: load.sysIowaitPct,
  };
}

/** nbdkit's file plugin on TCP ADDR:PORT, a tracked child. */
class NbdkitTcp {
  private child: ChildProcess | undefined;
  readonly args: string[];

  constructor(readonly dataPath: string, readonly sizeBytes: number, readonly ip: string, readonly port: number, readonly logPath: string) {
    this.args = ['--ipaddr', ip, '--port', String(port), '--foreground', '--exit-with-parent', 'file', dataPath];
  }

  get command(): string {
    return `nbdkit ${this.args.join(' ')} &`;
  }

  async start(): Promise<void> {
    writeFileSync(this.dataPath, '');
    truncateSync(this.dataPath, this.sizeBytes);
    const fd = openSync(this.logPath, 'a');
    try {
      this.child = spawn('nbdkit', this.args, { env: toolEnv(), stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    trackChild(this.child);
    this.child.once('error', () => undefined);
    const deadline = Date.now() + 20_000;
    for (let i = 0; i < 400 && Date.now() < deadline; i++) {
      if (await tcpGreets(this.ip, this.port, 1_000)) return;
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`nbdkit exited before serving ${this.ip}:${this.port}`);
      await sleep(50);
    }
    throw new Error(`nbdkit does not answer on ${this.ip}:${this.port}`);
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const t = setTimeout(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } }, 5_000);
    await exited;
    clearTimeout(t);
  }
}

/** True if an NBD server greets on TCP host:port ("NBDMAGIC") within timeoutMs. */
function tcpGreets(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.createConnection({ host, port });
    let got = Buffer.alloc(0);
    const done = (ok: boolean) => { clearTimeout(timer); sock.destroy(); resolve(ok); };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 8) done(got.subarray(0, 8).toString('latin1') === 'NBDMAGIC');
    });
    sock.on('error', () => done(false));
    sock.on('close', () => done(false));
  });
}

async function nbdcopy(src: string, uri: string, timeoutS: number): Promise<{ wallS: number; command: string[] }> {
  const cmd = ['nbdcopy', '--flush', src, uri];
  const r = await runCommand(cmd[0]!, cmd.slice(1), timeoutS * 1000);
  if (r.timedOut) throw new Error(`nbdcopy did not finish within ${timeoutS} s (killed)`);
  if (r.code !== 0) throw new Error(`nbdcopy exited ${r.code ?? r.signal}: ${(r.stderr.trim() || r.stdout.trim()).split('\n').slice(-3).join(' | ')}`);
  return { wallS: r.wallS, command: cmd };
}

/** Polls probe every intervalMs until it is true; false after timeoutMs (bounded in count). */
async function pollUntil(probe: () => boolean, timeoutMs: number, intervalMs: number, alive?: () => string | undefined): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  const maxPolls = Math.ceil(timeoutMs / intervalMs) + 10;
  for (let i = 0; i < maxPolls; i++) {
    if (probe()) return true;
    const dead = alive?.();
    if (dead) throw new Error(dead);
    if (Date.now() > deadline) return false;
    await sleep(intervalMs);
  }
  return false;
}

function clusterDead(c: BenchCluster): () => string | undefined {
  return () => {
    const h = c.hosts.find((x) => !x.alive);
    return h ? `marsd of ${h.name} exited: ${h.logTail()}` : undefined;
  };
}

/** p, or a rejection after ms (the bench never waits unboundedly on a server). */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms / 1000} s`)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

/** Deterministic PRNG (xorshift32) for the choice of differing blocks. */
function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x / 2 ** 32;
  };
}

// ---------------------------------------------------------------------------------------------

export class ReplicationSuite {
  readonly data: Omit<ReplData, 'startedAt' | 'finishedAt' | 'durationS' | 'invocation'>;
  private sshd: TempSshd | undefined;
  private sshdFailed: string | undefined;
  private throughputSrc = '';
  private distanceSrc = '';
  private active: { stop(): Promise<void> }[] = [];
  private readonly device: string | undefined;

  constructor(readonly opts: ReplOptions) {
    this.data = {
      options: opts, rounds: [], diskRateCommand: '', throughput: [], lag: [], distance: [], sync: [], commands: {}, tools: {}, notes: [],
    };
    this.device = diskDeviceOf(opts.dir);
    if (!this.device) this.data.notes.push(`no /proc/diskstats entry for the disk of ${opts.dir}: disk figures left out`);
  }

  private nodeArgs(bench: string, round: number): string[] {
    if (!this.opts.cpuProfDir) return [];
    const dir = join(this.opts.cpuProfDir, `${bench}-round-${round}`);
    mkdirSync(dir, { recursive: true });
    return ['--cpu-prof', `--cpu-prof-dir=${dir}`];
  }

  private has(b: ReplBenchId): boolean {
    return this.opts.benches.includes(b);
  }

  /** Stops whatever a round left running (clusters, proxies, nbdkit). */
  private async cleanupRound(): Promise<void> {
    const list = this.active.splice(0);
    await Promise.all(list.map((x) => x.stop().catch(() => undefined)));
  }

  /** Stops whatever still runs, the sshd of the rsync baseline included; safe to call twice. */
  async cleanup(): Promise<void> {
    await this.cleanupRound();
    await this.sshd?.stop().catch(() => undefined);
    this.sshd = undefined;
  }

  private track<T extends { stop(): Promise<void> }>(x: T): T {
    this.active.push(x);
    return x;
  }

  private async untrack(x: { stop(): Promise<void> }): Promise<void> {
    this.active = this.active.filter((y) => y !== x);
    await x.stop().catch(() => undefined);
  }

  async run(): Promise<void> {
    const o = this.opts;
    if (this.has('throughput') || (this.has('lag') && o.lagRateBps === undefined)) {
      this.throughputSrc = join(o.dir, 'repl-source.bin');
      writeRandomFile(this.throughputSrc, o.throughputBytes);
    }
    if (this.has('distance')) {
      this.distanceSrc = join(o.dir, 'distance-source.bin');
      writeRandomFile(this.distanceSrc, o.distanceBytes);
    }
    for (let r = 1; r <= o.rounds; r++) await this.round(r);
    await this.cleanup();
  }

  private async round(round: number): Promise<void> {
    const o = this.opts;
    const roundDir = join(o.dir, `repl-round-${round}`);
    mkdirSync(roundDir, { recursive: true });
    const info: ReplRoundInfo = { round, loadAvgStart: loadavg().map(round2) };
    this.data.rounds.push(info);
    try {
      const rate = await measureDiskRate(roundDir);
      info.diskRateBps = rate.bps;
      this.data.diskRateCommand = rate.command.replace(/round-N/, 'repl-round-N');
      log(`replication round ${round}/${o.rounds}: disk sequential write ${fmtMiBs(rate.bps)}, load average ${info.loadAvgStart.join(' ')}`);
      if (this.has('throughput') || this.has('lag')) await this.throughputAndLag(round, join(roundDir, 'tl'));
      if (this.has('distance')) await this.distance(round, join(roundDir, 'distance'));
      if (this.has('sync')) await this.fastSync(round, join(roundDir, 'sync'));
    } finally {
      await this.cleanupRound();
      info.loadAvgEnd = loadavg().map(round2);
      rmSync(roundDir, { recursive: true, force: true });
    }
  }

  // -- 1 and 2: throughput, then lag on the same cluster ----------------------------------------

  private async throughputAndLag(round: number, dir: string): Promise<void> {
    const o = this.opts;
    const cluster = this.track(await BenchCluster.create({ dir, hosts: ['alpha', 'beta'], sizeBytes: o.throughputBytes, nodeArgs: this.nodeArgs('tl', round) }));
    try {
      await cluster.start();
      const commands = cluster.commands();
      // The lag benchmark's rate comes from the throughput measured in this run.
      const needRate = this.has('lag') && o.lagRateBps === undefined && this.replRates.length === 0;
      if (this.has('throughput') || needRate) {
        const run = await this.throughput(round, cluster, join(dir, 'nbdkit'));
        if (run.oursS) this.replRates.push(run.bytes / run.oursS);
        if (this.has('throughput')) this.data.throughput.push(run);
        else this.data.notes.push(`round ${round}: replication throughput measured for the lag rate only: ${fmtMiBs(run.oursS ? run.bytes / run.oursS : undefined)}`);
        commands.push(...(this.lastThroughputCommands ?? []));
        this.data.commands.throughput = commands.map((c) => reportPath(c, o.dir));
      }
      if (this.has('lag')) this.data.lag.push(await this.lag(round, cluster));
    } finally {
      await this.untrack(cluster);
    }
  }

  private lastThroughputCommands: string[] | undefined;
  /** replication throughput (bytes/s) of every throughput run so far */
  private readonly replRates: number[] = [];

  private async throughput(round: number, cluster: BenchCluster, peerDir: string): Promise<ThroughputRun> {
    const o = this.opts;
    const bytes = o.throughputBytes;
    const oursFirst = round % 2 === 0;
    const run: ThroughputRun = { round, order: oursFirst ? 'ours-first' : 'peer-first', bytes };
    const timeoutS = Math.max(300, bytes / (2 * MiB));
    const commands: string[] = [];

    const peer = async () => {
      mkdirSync(peerDir, { recursive: true });
      const port = await freePortOn('127.0.0.4');
      const nbdkit = this.track(new NbdkitTcp(join(peerDir, 'data.img'), bytes, '127.0.0.4', port, join(peerDir, 'nbdkit.log')));
      try {
        await nbdkit.start();
        await syncFs(o.dir);
        await warmCache(this.throughputSrc);
        const r = await nbdcopy(this.throughputSrc, `nbd://127.0.0.4:${port}`, timeoutS);
        run.peerS = r.wallS;
        commands.push('# peer: nbdkit file plugin over TCP loopback', `truncate -s ${bytes} ${nbdkit.dataPath}`, nbdkit.command, r.command.join(' '));
      } catch (err) {
        run.peerError = (err as Error).message;
      } finally {
        await this.untrack(nbdkit);
        rmSync(peerDir, { recursive: true, force: true });
      }
    };

    const ours = async () => {
      const [p, s] = [cluster.primary, cluster.secondary];
      try {
        await syncFs(o.dir);
        await warmCache(this.throughputSrc);
        const logged0 = p.logBytes();
        const fetched0 = s.logBytes();
        const replayed0 = cluster.replayedBytes(s) ?? 0;
        const timeline: { t: number; logged: number; fetched: number; replayed: number }[] = [];
        const sample = (t0: number) => timeline.push({
          t: (now() - t0) / 1000, logged: p.logBytes() - logged0, fetched: s.logBytes() - fetched0, replayed: (cluster.replayedBytes(s) ?? replayed0) - replayed0,
        });
        const measure = new Measure([p.pid!, s.pid!], this.device);
        const t0 = now();
        const timer = setInterval(() => sample(t0), 100);
        try {
          const copy = await nbdcopy(this.throughputSrc, p.uri, timeoutS);
          commands.push('# ours: nbdcopy into the primary; done when the secondary\'s versionlink equals the primary\'s', copy.command.join(' '));
          run.ingestS = (now() - t0) / 1000;
          sample(t0);
          const atIngest = timeline[timeline.length - 1]!;
          run.fetchBehindAtIngestEnd = atIngest.logged - atIngest.fetched;
          run.replayBehindAtIngestEnd = atIngest.fetched - atIngest.replayed;
          const ok = await pollUntil(() => cluster.caughtUp(s), timeoutS * 1000, 20, clusterDead(cluster));
          if (!ok) throw new Error(`the secondary did not catch up within ${timeoutS} s (fetch-state ${s.actual('fetch-state')}, replay ${s.link(`resource-${RES}/replay-${s.name}`)})`);
          run.oursS = (now() - t0) / 1000;
        } finally {
          clearInterval(timer);
          sample(t0);
          run.cpu = measure.stop(p.pid, s.pid);
        }
        const final = timeline[timeline.length - 1]!;
        run.loggedBytes = final.logged;
        run.fetchedS = timeline.find((x) => x.logged === final.logged && x.fetched >= final.logged)?.t;
      } catch (err) {
        run.error = (err as Error).message;
      }
    };

    if (oursFirst) { await ours(); await peer(); } else { await peer(); await ours(); }
    this.lastThroughputCommands = commands;
    log(`replication round ${round} throughput: ours ${fmtSec(run.oursS)} (nbdcopy into the primary ${fmtSec(run.ingestS)}, fetched ${fmtSec(run.fetchedS)}), `
      + `peer nbdcopy to nbdkit over TCP ${fmtSec(run.peerS)}, ratio ${run.oursS && run.peerS ? (run.oursS / run.peerS).toFixed(2) : '–'}`
      + `; cpu primary ${run.cpu?.primaryCpuPct?.toFixed(0)} % (main ${run.cpu?.primaryMainThreadCpuPct?.toFixed(0)} %, waiting for a CPU ${run.cpu?.primaryMainRunqPct?.toFixed(0)} %), secondary ${run.cpu?.secondaryCpuPct?.toFixed(0)} % (main ${run.cpu?.secondaryMainThreadCpuPct?.toFixed(0)} %, waiting ${run.cpu?.secondaryMainRunqPct?.toFixed(0)} %), `
      + `machine busy ${run.cpu?.sysBusyPct?.toFixed(0)} % iowait ${run.cpu?.sysIowaitPct?.toFixed(0)} %, disk written ${((run.cpu?.diskWrittenBytes ?? 0) / MiB).toFixed(0)} MiB busy ${run.cpu?.diskBusyPct?.toFixed(0)} %${run.error ? `; ERROR ${run.error}` : ''}${run.peerError ? `; PEER ERROR ${run.peerError}` : ''}`);
    return run;
  }

  /** Half the median replication throughput measured so far (or --lag-rate). */
  private lagRate(): number | undefined {
    if (this.opts.lagRateBps !== undefined) return this.opts.lagRateBps;
    const rates = [...this.replRates].sort((a, b) => a - b);
    if (rates.length === 0) return undefined;
    const mid = Math.floor(rates.length / 2);
    return (rates.length % 2 ? rates[mid]! : (rates[mid - 1]! + rates[mid]!) / 2) / 2;
  }

  private async lag(round: number, cluster: BenchCluster): Promise<LagRun> {
    const o = this.opts;
    const [p, s] = [cluster.primary, cluster.secondary];
    const rate = this.lagRate();
    const chunk = o.lagChunkBytes;
    const run: LagRun = { round, rateBps: rate ?? 0, chunkBytes: chunk, chunks: 0 };
    if (rate === undefined) {
      run.error = 'no replication throughput measured (and no --lag-rate): no rate for the paced writer';
      return run;
    }
    const deviceChunks = Math.floor(o.throughputBytes / chunk);
    let n = Math.max(10, Math.floor((rate * o.lagSeconds) / chunk));
    if (n > deviceChunks) {
      this.data.notes.push(`round ${round} lag: ${n} writes would wrap around the ${o.throughputBytes} byte device; limited to ${deviceChunks} (${((deviceChunks * chunk) / rate).toFixed(1)} s)`);
      n = deviceChunks;
    }
    run.chunks = n;
    const intervalMs = (chunk / rate) * 1000;
    const runId = randomBytes(8);
    const template = Buffer.alloc(chunk);
    randomFillSync(template);
    const issued = new Float64Array(n).fill(NaN);
    const acked = new Float64Array(n).fill(NaN);
    const visible = new Float64Array(n).fill(NaN);
    // Where each write ends in the primary's log: found after the run by scanning the logfiles.
    const startSizes = p.logSizes();
    const replayTimeline: { t: number; seq: string; pos: number }[] = [];
    let client: NbdClient | undefined;
    const fd = openSync(s.dataPath, 'r');
    let measure: Measure | undefined;
    let stopPolling = false;
    let lowestUnseen = 0;
    let issuedCount = 0;
    const header = Buffer.alloc(20);
    const prefix = Buffer.concat([Buffer.from('MARSLAG1', 'latin1'), runId]);
    const tagOf = (i: number): Buffer => {
      const b = Buffer.alloc(20);
      prefix.copy(b, 0);
      b.writeUInt32LE(i, 16);
      return b;
    };
    const poller = (async () => {
      let lastReplay = '';
      const maxPolls = Math.ceil(((n * intervalMs) + 120_000) / 2) + 1000;
      for (let k = 0; k < maxPolls && !stopPolling; k++) {
        const t = now();
        const rl = s.link(`resource-${RES}/replay-${s.name}`) ?? '';
        if (rl !== lastReplay) {
          lastReplay = rl;
          const m = /^log-(\d{9})-[^,]+,(\d+),/.exec(rl);
          if (m) replayTimeline.push({ t, seq: m[1]!, pos: Number(m[2]) });
        }
        for (let i = lowestUnseen; i < issuedCount; i++) {
          if (!Number.isNaN(visible[i]!)) continue;
          readSync(fd, header, 0, 20, i * chunk);
          if (header.readUInt32LE(16) === i && header.compare(prefix, 0, 16, 0, 16) === 0) visible[i] = t;
        }
        while (lowestUnseen < issuedCount && !Number.isNaN(visible[lowestUnseen]!)) lowestUnseen++;
        await sleep(2);
      }
    })();
    try {
      client = await NbdClient.connect(p.sockPath, RES);
      measure = new Measure([p.pid!, s.pid!], this.device);
      const t0 = now();
      const inflight = new Set<Promise<void>>();
      let failure: Error | undefined;
      for (let i = 0; i < n && !failure; i++) {
        const due = t0 + i * intervalMs;
        const wait = due - now();
        if (wait > 1) await sleep(Math.floor(wait));
        while (inflight.size >= 64 && !failure) await within(Promise.race(inflight), 60_000, 'a write to the primary');
        const buf = Buffer.from(template);
        tagOf(i).copy(buf, 0);
        issued[i] = now();
        issuedCount = i + 1;
        const pr = client.write(i * chunk, buf).then(() => { acked[i] = now(); }, (err: Error) => { failure ??= err; });
        inflight.add(pr);
        void pr.finally(() => inflight.delete(pr));
      }
      await within(Promise.all(inflight), 60_000, 'the last writes to the primary');
      if (failure) throw failure;
      run.writerLateMs = Math.max(0, issued[n - 1]! - (t0 + (n - 1) * intervalMs));
      run.achievedBps = n > 1 ? ((n - 1) * chunk) / ((issued[n - 1]! - issued[0]!) / 1000) : undefined;
      // Replayed: the data of every write visible on the secondary and its replay link past the
      // primary's log end (bounded: 60 s after the last write).
      await pollUntil(() => {
        if (lowestUnseen < n) return false;
        const end = this.primaryLogEnd(p);
        const last = replayTimeline[replayTimeline.length - 1];
        return end !== undefined && last !== undefined && (last.seq > end.seq || (last.seq === end.seq && last.pos >= end.pos));
      }, 60_000, 20, clusterDead(cluster));
      run.cpu = measure.stop(p.pid, s.pid);
      stopPolling = true;
      await poller;
      // Map each write to the end of its last record in the primary's log, then to the first
      // replay link value at or past it.
      const ends = await this.recordEnds(p, startSizes, chunk, n);
      const replayLag: number[] = [];
      const visibleLag: number[] = [];
      const ack: number[] = [];
      let notReplayed = 0;
      let ti = 0;
      const order = [...Array(n).keys()].filter((i) => ends[i] !== undefined).sort((a, b) => cmpPos(ends[a]!, ends[b]!));
      const replayAt = new Float64Array(n).fill(NaN);
      for (const i of order) {
        const e = ends[i]!;
        while (ti < replayTimeline.length && cmpPos(replayTimeline[ti]!, e) < 0) ti++;
        if (ti < replayTimeline.length) replayAt[i] = replayTimeline[ti]!.t;
      }
      for (let i = 0; i < n; i++) {
        const a = acked[i]!;
        ack.push(a - issued[i]!);
        visibleLag.push(Number.isNaN(visible[i]!) ? Infinity : Math.max(0, visible[i]! - a));
        if (Number.isNaN(replayAt[i]!)) { notReplayed++; replayLag.push(Infinity); } else replayLag.push(Math.max(0, replayAt[i]! - a));
      }
      run.logfiles = new Set(ends.filter((e) => e !== undefined).map((e) => e!.seq)).size;
      const perSecond: number[] = [];
      for (let i = 0; i < n; i++) {
        const sec = Math.floor((issued[i]! - issued[0]!) / 1000);
        perSecond[sec] = Math.max(perSecond[sec] ?? 0, replayLag[i]!);
      }
      run.maxLagPerSecondMs = Array.from(perSecond, (v) => (v === undefined ? 0 : Number.isFinite(v) ? Math.round(v) : -1));
      run.replayLagMs = percentiles(replayLag);
      run.visibleLagMs = percentiles(visibleLag);
      run.ackMs = percentiles(ack);
      run.notReplayed = notReplayed;
      if (ends.filter((x) => x === undefined).length > 0) {
        this.data.notes.push(`round ${round} lag: ${ends.filter((x) => x === undefined).length} writes not found in the primary's logfiles`);
      }
    } catch (err) {
      run.error = (err as Error).message;
      try { run.cpu ??= measure?.stop(p.pid, s.pid); } catch { /* not started */ }
    } finally {
      stopPolling = true;
      await poller.catch(() => undefined);
      closeSync(fd);
      await client?.disconnect().catch(() => client?.destroy());
    }
    log(`replication round ${round} lag at ${fmtMiBs(rate)} (${n} writes of ${chunk / 1024} KiB, achieved ${fmtMiBs(run.achievedBps)}): replay lag p50 ${run.replayLagMs?.p50?.toFixed(0)} ms, p99 ${run.replayLagMs?.p99?.toFixed(0)} ms, max ${run.replayLagMs?.max?.toFixed(0)} ms; `
      + `visible on the secondary p50 ${run.visibleLagMs?.p50?.toFixed(0)} ms, p99 ${run.visibleLagMs?.p99?.toFixed(0)} ms; ack p99 ${run.ackMs?.p99?.toFixed(1)} ms; logfiles ${run.logfiles}; max lag per second ${run.maxLagPerSecondMs?.join(' ')}${run.error ? `; ERROR ${run.error}` : ''}`);
    this.data.commands.lag = [
      `# a paced writer in the bench process (kernel-shim/nbd-client.ts) on nbd+unix:///${RES}?socket=$BENCHDIR/repl-round-N/tl/alpha/run/${RES}.sock:`,
      `# ${n} writes of ${chunk} bytes at ${(rate / MiB).toFixed(1)} MiB/s (one every ${intervalMs.toFixed(2)} ms, at most 64 in flight), each tagged in its first 20 bytes;`,
      `# every 2 ms: readlink $BENCHDIR/repl-round-N/tl/beta/mars/resource-${RES}/replay-beta, and pread of the tags on $BENCHDIR/repl-round-N/tl/beta/data.img`,
    ];
    return run;
  }

  /** The primary's newest logfile and its size (the end of what it logged). */
  private primaryLogEnd(p: BenchHost): { seq: string; pos: number } | undefined {
    let best: { seq: string; pos: number } | undefined;
    for (const [name, size] of p.logSizes()) {
      const seq = name.slice(4, 13);
      if (!best || seq > best.seq) best = { seq, pos: size };
    }
    return best;
  }

  /**
   * For each of the n chunks, where its last record ends in the primary's log (logfile number
   * and offset); only records after startSizes (what the logfiles held before the lag run).
   */
  private async recordEnds(p: BenchHost, startSizes: Map<string, number>, chunk: number, n: number): Promise<({ seq: string; pos: number } | undefined)[]> {
    const ends: ({ seq: string; pos: number } | undefined)[] = new Array(n).fill(undefined);
    const names = [...p.logSizes().keys()].sort();
    for (const name of names) {
      const seq = name.slice(4, 13);
      const from = startSizes.get(name) ?? 0;
      for await (const item of readLogBatches(join(p.resDir, name), from)) {
        if (item.type === 'end') break;
        for (const r of item.records) {
          const first = Math.floor(r.devicePos / chunk);
          const last = Math.floor((r.devicePos + Math.max(1, r.deviceBytes) - 1) / chunk);
          for (let i = first; i <= last && i < n; i++) ends[i] = { seq, pos: r.fileOffset + r.totalBytes };
        }
      }
    }
    return ends;
  }

  // -- 3: long distance --------------------------------------------------------------------------

  private async distance(round: number, dir: string): Promise<void> {
    const o = this.opts;
    const run: DistanceRun = { round, order: round % 2 === 0 ? 'ours-first' : 'peer-first' };
    const commands: string[] = [];
    const sizeBytes = o.distanceBytes;
    // Token bucket burst: 50 ms of the link rate. The proxy's default (64 KiB = 5 ms here) loses
    // rate whenever its timers fire late, which on this busy 2-core machine happens often
    // (measured with a plain TCP stream at load average 11: 78 % of the rate with 64 KiB, 83-91 %
    // with 20 ms, 97-98 % with 50 ms). Over a long transfer the burst adds at most
    // burst / size to the average rate.
    const burst = Math.round(o.linkBps * 0.05);
    const faults = (px: FaultProxy) => { px.setDelay(o.linkDelayMs); px.setBandwidth(o.linkBps, 'both', burst); };

    // What the emulated link delivers to a plain TCP stream (in the bench process, like the proxy).
    const raw = async () => {
      const bytes = Math.min(o.distanceBytes, 64 * MiB);
      let got = 0;
      const sink = net.createServer((sock) => { sock.on('data', (d: Buffer) => { got += d.length; }); sock.on('error', () => undefined); });
      await new Promise<void>((r) => sink.listen(0, '127.0.0.5', () => r()));
      let proxy: FaultProxy | undefined;
      let client: net.Socket | undefined;
      try {
        proxy = await FaultProxy.start({ listenHost: '127.0.0.5', targetHost: '127.0.0.5', targetPort: (sink.address() as net.AddressInfo).port });
        faults(proxy);
        const t0 = now();
        client = net.connect({ host: '127.0.0.5', port: proxy.port });
        client.on('error', () => undefined);
        await new Promise<void>((r, j) => { client!.once('connect', () => r()); client!.once('error', j); });
        const buf = Buffer.alloc(MiB);
        for (let sent = 0; sent < bytes; sent += buf.length) {
          if (!client.write(buf)) await new Promise<void>((r) => client!.once('drain', () => r()));
        }
        if (!await pollUntil(() => got >= bytes, Math.max(60_000, (4 * bytes * 1000) / o.linkBps), 5)) throw new Error(`plain TCP stream: only ${got} of ${bytes} bytes arrived`);
        run.rawBps = bytes / ((now() - t0) / 1000);
        commands.push(`# link check: a plain TCP stream of ${bytes} bytes (node net) through an identical FaultProxy`);
      } catch (err) {
        run.peerError = `${run.peerError ? `${run.peerError}; ` : ''}plain TCP stream: ${(err as Error).message}`;
      } finally {
        client?.destroy();
        await proxy?.close().catch(() => undefined);
        await new Promise<void>((r) => sink.close(() => r()));
      }
    };

    const peer = async () => {
      const pdir = join(dir, 'peer');
      mkdirSync(pdir, { recursive: true });
      const port = await freePortOn('127.0.0.4');
      const nbdkit = this.track(new NbdkitTcp(join(pdir, 'data.img'), sizeBytes, '127.0.0.4', port, join(pdir, 'nbdkit.log')));
      let proxy: FaultProxy | undefined;
      try {
        await nbdkit.start();
        proxy = await FaultProxy.start({ listenHost: '127.0.0.4', targetHost: '127.0.0.4', targetPort: port });
        faults(proxy);
        await syncFs(o.dir);
        await warmCache(this.distanceSrc);
        const r = await nbdcopy(this.distanceSrc, `nbd://${proxy.address}`, Math.max(300, (4 * sizeBytes) / o.linkBps));
        run.peerS = r.wallS;
        run.peerBytes = proxy.bytesForwarded.up;
        run.peerBps = sizeBytes / r.wallS;
        commands.push('# peer: nbdcopy into nbdkit (TCP) through an identical FaultProxy', nbdkit.command,
          `# FaultProxy ${proxy.address} -> 127.0.0.4:${port}, setDelay(${o.linkDelayMs}), setBandwidth(${o.linkBps}, 'both', ${burst})`, r.command.join(' '));
      } catch (err) {
        run.peerError = (err as Error).message;
      } finally {
        await proxy?.close().catch(() => undefined);
        await this.untrack(nbdkit);
        rmSync(pdir, { recursive: true, force: true });
      }
    };

    const ours = async () => {
      const cluster = this.track(await BenchCluster.create({ dir: join(dir, 'cluster'), hosts: ['alpha', 'beta'], sizeBytes, proxied: true, nodeArgs: this.nodeArgs('distance', round) }));
      try {
        await cluster.start();
        const [p, s] = [cluster.primary, cluster.secondary];
        await s.marsadm(['pause-fetch', RES]);
        if (!await pollUntil(() => s.actual('fetch-state') === 'off', 30_000, 20, clusterDead(cluster))) throw new Error(`fetch on ${s.name} did not stop: ${s.actual('fetch-state')}`);
        await syncFs(o.dir);
        const copy = await nbdcopy(this.distanceSrc, p.uri, 300);
        // Everything logged is durable (fetchable): the primary's versionlink covers its logfile.
        const durable = () => {
          const end = this.primaryLogEnd(p);
          if (!end) return false;
          const v = p.link(`resource-${RES}/version-${end.seq}-${p.name}`);
          return v !== undefined && Number(v.split(':')[0]!.split(',')[2]) === end.pos;
        };
        if (!await pollUntil(durable, 60_000, 20, clusterDead(cluster))) throw new Error('the primary\'s versionlink does not cover its logfile');
        const target = p.logBytes();
        const before = s.logBytes();
        run.logBytes = target - before;
        for (const px of cluster.proxies.values()) faults(px);
        const down0 = cluster.proxies.get(p.name)!.bytesForwarded.down;
        const samples: [number, number][] = [];
        const t0 = now();
        await s.marsadm(['resume-fetch', RES]);
        const limitMs = Math.max(120_000, (4 * run.logBytes * 1000) / o.linkBps + 60_000);
        const ok = await pollUntil(() => {
          const b = s.logBytes() - before;
          samples.push([(now() - t0) / 1000, b]);
          return b >= run.logBytes!;
        }, limitMs, 50, clusterDead(cluster));
        if (!ok) throw new Error(`the secondary fetched only ${s.logBytes() - before} of ${run.logBytes} bytes within ${limitMs / 1000} s`);
        run.proxyDownBytes = cluster.proxies.get(p.name)!.bytesForwarded.down - down0;
        const total = run.logBytes;
        const tAt = (frac: number) => {
          const want = frac * total;
          const k = samples.findIndex((x) => x[1] >= want);
          if (k <= 0) return samples[Math.max(0, k)]![0];
          const [ta, ba] = samples[k - 1]!;
          const [tb, bb] = samples[k]!;
          return ta + ((tb - ta) * (want - ba)) / Math.max(1, bb - ba);
        };
        const first = samples.find((x) => x[1] > 0);
        run.firstByteS = first?.[0];
        run.totalS = samples[samples.length - 1]![0];
        run.steadyBps = (0.8 * total) / (tAt(0.9) - tAt(0.1));
        run.averageBps = first && run.totalS > first[0] ? total / (run.totalS - first[0]) : undefined;
        const step = Math.max(1, Math.ceil(samples.length / 24));
        run.samples = samples.filter((_, i) => i % step === 0 || i === samples.length - 1).map(([t, b]) => [round2(t), b]);
        for (const px of cluster.proxies.values()) { px.setDelay(0); px.setBandwidth(0); }
        commands.push(...cluster.commands(),
          `# FaultProxy in front of every host (ips/ip-HOST names the proxy, marsd --bind the real address)`,
          `# ours: with fetch paused on beta, ${copy.command.join(' ')}`,
          `# then on both proxies setDelay(${o.linkDelayMs}) and setBandwidth(${o.linkBps}, 'both', ${burst}), and on beta: marsadm resume-fetch ${RES}; the size of beta's copy is sampled every 50 ms`);
      } catch (err) {
        run.error = (err as Error).message;
      } finally {
        await this.untrack(cluster);
        rmSync(join(dir, 'cluster'), { recursive: true, force: true });
      }
    };

    mkdirSync(dir, { recursive: true });
    if (run.order === 'ours-first') { await ours(); await peer(); await raw(); } else { await raw(); await peer(); await ours(); }
    this.data.distance.push(run);
    this.data.commands.distance = commands.map((c) => reportPath(c, o.dir));
    log(`replication round ${round} distance: ${run.logBytes ?? '–'} bytes, first byte after ${fmtSec(run.firstByteS)}, steady ${fmtMiBs(run.steadyBps)} `
      + `(${run.steadyBps ? ((100 * run.steadyBps) / o.linkBps).toFixed(1) : '–'} % of the link), average ${fmtMiBs(run.averageBps)}, total ${fmtSec(run.totalS)}; `
      + `peer nbdcopy ${fmtMiBs(run.peerBps)}, plain TCP stream ${fmtMiBs(run.rawBps)}${run.error ? `; ERROR ${run.error}` : ''}${run.peerError ? `; PEER ERROR ${run.peerError}` : ''}`);
  }

  // -- 4: fast sync --------------------------------------------------------------------------

  private async fastSync(round: number, dir: string): Promise<void> {
    const o = this.opts;
    const size = o.syncBytes;
    const blocks = size / 4096;
    const differing = Math.round(blocks * o.syncDiffFraction);
    const run: SyncRun = { round, order: round % 2 === 0 ? 'ours-first' : 'rsync-first', diskBytes: size, differingBlocks: differing };
    const commands: string[] = [];
    mkdirSync(dir, { recursive: true });
    const cluster = this.track(await BenchCluster.create({ dir: join(dir, 'cluster'), hosts: ['alpha', 'beta'], sizeBytes: size, proxied: true, join: false, nodeArgs: this.nodeArgs('sync', round) }));
    try {
      const [p, s] = [cluster.primary, cluster.secondary];
      mkdirSync(p.dir, { recursive: true });
      mkdirSync(s.dir, { recursive: true });
      // The primary's disk: random data. The secondary's: a copy with `differing` random blocks
      // replaced. The rsync destination: another copy of the secondary's disk.
      writeRandomFile(p.dataPath, size);
      copyFileSync(p.dataPath, s.dataPath);
      const rnd = xorshift(0x9e3779b9 ^ round);
      const chosen = new Set<number>();
      for (let k = 0; chosen.size < differing && k < differing * 100; k++) chosen.add(Math.floor(rnd() * blocks));
      const fd = openSync(s.dataPath, 'r+');
      try {
        const blk = Buffer.alloc(4096);
        for (const b of chosen) { randomFillSync(blk); writeSync(fd, blk, 0, 4096, b * 4096); }
      } finally {
        closeSync(fd);
      }
      const rsyncDst = join(dir, 'rsync-dst.img');
      copyFileSync(s.dataPath, rsyncDst);
      const expected = fileDigest(p.dataPath, size);
      commands.push(`# alpha/data.img: ${size} random bytes; beta/data.img and rsync-dst.img: copies of it with ${differing} random 4 KiB blocks overwritten with random data`);

      const rsync = async () => {
        const why = this.sshdFailed ?? sshMissing();
        if (why) { run.rsyncError = why; return; }
        try {
          this.sshd ??= await TempSshd.start(join(o.dir, 'sshd'));
        } catch (err) {
          this.sshdFailed = `sshd: ${(err as Error).message}`;
          run.rsyncError = this.sshdFailed;
          return;
        }
        try {
          await syncFs(o.dir);
          await warmCache(p.dataPath);
          await warmCache(rsyncDst);
          const r = await this.sshd.rsync(p.dataPath, rsyncDst, 600_000);
          run.rsyncS = r.wallS;
          run.rsyncSentBytes = r.sentBytes;
          run.rsyncReceivedBytes = r.receivedBytes;
          run.rsyncLiteralBytes = r.literalBytes;
          run.rsyncEqual = fileDigest(rsyncDst, size) === expected;
          commands.push('# rsync over ssh to a temporary sshd on 127.0.0.1', ...this.sshd.commands, r.command.map((a) => (/\s/.test(a) ? `"${a}"` : a)).join(' '));
        } catch (err) {
          run.rsyncError = (err as Error).message;
        }
      };

      const ours = async () => {
        try {
          await cluster.start();
          await cluster.waitResourceKnown(s);
          await syncFs(o.dir);
          await warmCache(p.dataPath);
          await warmCache(s.dataPath);
          const bytes = () => {
            let up = 0; let down = 0;
            for (const px of cluster.proxies.values()) { up += px.bytesForwarded.up; down += px.bytesForwarded.down; }
            return { up, down };
          };
          const b0 = bytes();
          const measure = new Measure([p.pid!, s.pid!], this.device);
          const t0 = now();
          let tSynced: number | undefined;
          let stop = false;
          const watch = (async () => {
            for (let k = 0; k < 60_000 && !stop; k++) {
              if (cluster.synced(s)) { tSynced = now(); return; }
              await sleep(10);
            }
          })();
          try {
            const r = await s.marsadm(['--timeout', '600', 'join-resource', RES, s.dataPath, '--wait'], 660_000);
            run.commandS = r.wallS;
            await pollUntil(() => tSynced !== undefined, 10_000, 10, clusterDead(cluster));
          } finally {
            stop = true;
            await watch;
            run.cpu = measure.stop(p.pid, s.pid);
          }
          if (tSynced === undefined) throw new Error('syncstatus did not reach the size');
          run.oursS = (tSynced - t0) / 1000;
          const b1 = bytes();
          run.oursUpBytes = b1.up - b0.up;
          run.oursDownBytes = b1.down - b0.down;
          run.oursBytes = run.oursUpBytes + run.oursDownBytes;
          // The sync worker writes verifystatus right after syncstatus.
          await pollUntil(() => s.actual('verifystatus') !== undefined, 5_000, 20);
          run.verifyStatus = s.actual('verifystatus');
          await cluster.stop();
          run.oursEqual = fileDigest(s.dataPath, size) === expected;
          commands.push(...cluster.commands().filter((c) => !c.includes('truncate')),
            '# FaultProxy (no faults) in front of every host: bytes counted in both directions');
        } catch (err) {
          run.error = (err as Error).message;
        }
      };

      if (run.order === 'ours-first') { await ours(); await this.untrack(cluster); await rsync(); } else { await rsync(); await ours(); }
    } catch (err) {
      run.error ??= (err as Error).message;
    } finally {
      await this.untrack(cluster);
      rmSync(dir, { recursive: true, force: true });
    }
    this.data.sync.push(run);
    this.data.commands.sync = commands.map((c) => reportPath(c, o.dir));
    const pct = (b: number | undefined) => (b === undefined ? '–' : `${((100 * b) / size).toFixed(2)} %`);
    log(`replication round ${round} fast sync of ${size} bytes, ${differing} differing blocks: ours ${fmtSec(run.oursS)} (join-resource --wait ${fmtSec(run.commandS)}), `
      + `${run.oursBytes ?? '–'} bytes on the wire (${pct(run.oursBytes)}), verifystatus ${run.verifyStatus ?? '–'}, equal ${run.oursEqual}; `
      + `rsync ${fmtSec(run.rsyncS)}, sent+received ${(run.rsyncSentBytes ?? 0) + (run.rsyncReceivedBytes ?? 0)} (${pct(run.rsyncSentBytes !== undefined ? run.rsyncSentBytes + (run.rsyncReceivedBytes ?? 0) : undefined)}), equal ${run.rsyncEqual}`
      + `${run.error ? `; ERROR ${run.error}` : ''}${run.rsyncError ? `; RSYNC ERROR ${run.rsyncError}` : ''}`);
  }
}

function cmpPos(a: { seq: string; pos: number }, b: { seq: string; pos: number }): number {
  return a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : a.pos - b.pos;
}

/** Tool versions for the report. */
export async function toolVersions(): Promise<Record<string, string>> {
  const first = async (cmd: string, args: string[]) => {
    try {
      const r = await runCommand(cmd, args, 10_000);
      return (r.stdout.trim() || r.stderr.trim()).split('\n')[0] ?? '';
    } catch {
      return '(missing)';
    }
  };
  return {
    rsync: await first('rsync', ['--version']),
    ssh: await first('ssh', ['-V']),
    sshd: (await first('/usr/sbin/sshd', ['-V'])).replace(/^unknown option -- V\s*/, ''),
  };
}

