// `npm run bench -- --suite scale` (issue 11): what two idle marsd cost when they hold many
// resources and logfiles. For each configuration (R resources x L logfiles) the trees are
// generated offline (scale-tree.ts), both marsd start at once on loopback addresses (as
// cluster.ts runs them), and once every resource is UpToDate and replicated on both hosts
// the suite measures, over a window: each marsd's CPU (utime+stime from /proc/PID/stat, % of
// one core) and RSS (sampled every second), the wall time of `marsadm view all` (3 runs per
// host, median), the warning and error lines in each daemon's log, and optionally the time of
// a planned handover of one resource.
//
// The measuring window is a deliberate wait (an idle daemon is what is measured); every other
// wait polls a state with a deadline.
import { readFileSync, rmSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { BenchHost, freePortOn } from './cluster.js';
import { cpuSeconds, memStatus, sleep } from './proc.js';
import { median } from './report.js';
import { DEFAULT_SCALE_TREE, generateScaleTrees, type ScaleTreeResult } from './scale-tree.js';
import { runScaleJoin, type ScaleJoinRun } from './scale-join.js';
import { boundText } from './scale-report.js';
import { CONTROL_ROUND_METRIC, histogramOf, histogramSince, quantileBound, type HistogramCounts } from './round-quantile.js';

export interface ScaleConfig {
  resources: number;
  logfiles: number;
}

export interface ScaleOptions {
  configs: ScaleConfig[];
  /** idle measuring window in seconds */
  windowS: number;
  /** quiet time after both hosts look settled, before the window (startup work tails off) */
  graceS: number;
  /** how long starting and settling may take */
  settleTimeoutS: number;
  /** time a planned handover of r0 to the secondary after the measurements */
  handover: boolean;
  /** the join part (scale-join.ts): resources to create and join; 0 skips it */
  joinResources: number;
  joinDeviceBytes: number;
  dir: string;
}

export interface ScaleHostFigures {
  name: string;
  /** % of one core over the window */
  cpuPct: number;
  /** RSS at the end of the window and the highest sample in it */
  rssBytes: number;
  maxRssBytes: number;
  /** `marsadm view all` on this host: wall seconds of each run */
  viewAllS: number[];
  viewAllMedianS: number;
  /** warning and error lines of marsd from its start until the measurements ended */
  warnLines: number;
  errorLines: number;
  /** of those, the ones written in the window and the view runs (after settling) */
  warnLinesAfterSettle: number;
  errorLinesAfterSettle: number;
  /** the first few distinct problem lines, without their time stamps */
  sampleLines: string[];
  /**
   * p99 of marsd's control rounds (mars_control_round_duration_seconds), ms, as the upper bound
   * of its bucket, in the window and from the start to the window's end; null: above the
   * largest bucket (2.5 s); absent: not measured (older runs).
   */
  roundP99WindowMs?: number | null | undefined;
  roundP99AllMs?: number | null | undefined;
  /** control rounds in the window */
  roundsInWindow?: number;
  /** resources this host's view shows UpToDate and replicated (primary: Replicating; secondary: Replaying, nothing to fetch or replay) */
  resourcesOk: number;
}

export interface ScaleRun {
  config: ScaleConfig;
  generation: { elapsedS: number; files: number; links: number; logfileBytes: number };
  /** from spawning both marsd until each had published its pid */
  startS: number;
  /** from spawning until both views showed every resource settled */
  settleS: number;
  windowS: number;
  loadAvgStart: number[];
  loadAvgEnd: number[];
  hosts: ScaleHostFigures[];
  /** `marsadm --version` on the same machine just after the view runs (median of 3): what node's start alone costs a view */
  marsadmStartS: number;
  /** planned handover of r0 to the secondary: wall seconds of `marsadm primary r0` */
  handoverS?: number;
  error?: string;
  commands: string[];
}

const round2 = (x: number): number => Math.round(x * 100) / 100;
const PROBLEM = / (warn|error): /;

/** One resource as `marsadm view all --json` shows it (the fields judged here). */
interface ViewEntry {
  resource: string;
  diskstate: string;
  replstate: string;
  isPrimary: boolean;
  fetchRest: number;
  replayRest: number;
  splitBrain: unknown;
  error: unknown;
  daemonRunning: boolean;
}

/** The resources a host's view shows settled: UpToDate, no error, no split brain, replicated in its role. */
export function settledResources(entries: readonly ViewEntry[], primary: boolean): number {
  return entries.filter((e) => e.daemonRunning && e.diskstate === 'UpToDate' && e.error === null && e.splitBrain === null
    && (primary ? e.isPrimary && e.replstate === 'Replicating' : !e.isPrimary && e.replstate === 'Replaying' && e.fetchRest === 0 && e.replayRest === 0)).length;
}

async function viewJson(h: BenchHost): Promise<ViewEntry[]> {
  return JSON.parse((await h.marsadm(['view', 'all', '--json'], 300_000)).stdout) as ViewEntry[];
}

async function scrapeRounds(metricsAddress: string): Promise<HistogramCounts> {
  const res = await fetch(`http://${metricsAddress}/metrics`, { signal: AbortSignal.timeout(30_000) });
  if (!res.ok) throw new Error(`GET http://${metricsAddress}/metrics: HTTP ${res.status}`);
  return histogramOf(await res.text(), CONTROL_ROUND_METRIC);
}

/** ms; null: above the largest finite bucket (JSON has no Infinity); undefined: no samples */
const msBound = (s: number | undefined): number | null | undefined => (s === undefined ? undefined : Number.isFinite(s) ? Math.round(s * 1e6) / 1000 : null);

/** Problem lines of a marsd log from byte `from` on. */
function problemLines(logPath: string, from: number, to: number): string[] {
  const text = readFileSync(logPath).subarray(from, to).toString('utf8');
  return text.split('\n').filter((l) => PROBLEM.test(l));
}

function fileSize(path: string): number {
  try { return statSync(path).size; } catch { return 0; }
}

export class ScaleSuite {
  readonly runs: ScaleRun[] = [];
  join: ScaleJoinRun | undefined;

  constructor(readonly opts: ScaleOptions, private readonly log: (msg: string) => void) {}

  private hosts: BenchHost[] = [];

  async run(): Promise<void> {
    for (const c of this.opts.configs) {
      const run = await this.runConfig(c).catch((err: Error) => this.failed(c, err));
      this.runs.push(run);
    }
    if (this.opts.joinResources > 0) {
      const dir = join(this.opts.dir, `join-${this.opts.joinResources}`);
      this.join = await runScaleJoin({
        dir, resources: this.opts.joinResources, deviceBytes: this.opts.joinDeviceBytes, timeoutS: this.opts.settleTimeoutS,
        log: this.log, loadavg: () => loadavg().map(round2),
      });
      rmSync(dir, { recursive: true, force: true });
    }
  }

  private failed(config: ScaleConfig, err: Error): ScaleRun {
    this.log(`${config.resources} x ${config.logfiles}: ERROR ${err.message}`);
    return {
      config, generation: { elapsedS: 0, files: 0, links: 0, logfileBytes: 0 }, startS: 0, settleS: 0, windowS: 0,
      loadAvgStart: [], loadAvgEnd: [], marsadmStartS: 0, hosts: [], error: err.message, commands: [],
    };
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.hosts.map((h) => h.stop().catch(() => undefined)));
    this.hosts = [];
  }

  private async runConfig(c: ScaleConfig): Promise<ScaleRun> {
    const dir = join(this.opts.dir, `scale-${c.resources}x${c.logfiles}`);
    const names = DEFAULT_SCALE_TREE.hosts;
    const addresses = new Map<string, string>();
    const metricsAt = new Map<string, string>();
    for (const [i, h] of names.entries()) {
      const ip = `127.0.0.${i + 2}`;
      addresses.set(h, `${ip}:${await freePortOn(ip)}`);
      metricsAt.set(h, `${ip}:${await freePortOn(ip)}`);
    }
    this.log(`${c.resources} x ${c.logfiles}: generating the trees in ${dir}`);
    let gen: ScaleTreeResult;
    try {
      gen = generateScaleTrees({ ...DEFAULT_SCALE_TREE, dir, addresses, resources: c.resources, logfilesPerResource: c.logfiles });
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    this.log(`${c.resources} x ${c.logfiles}: ${gen.filesWritten} files and ${gen.linksWritten} links in ${(gen.elapsedMs / 1000).toFixed(1)} s`);
    const commands = [
      `# trees: test_suite/bench/scale-tree.ts generateScaleTrees({ resources: ${c.resources}, logfilesPerResource: ${c.logfiles}, recordsPerLogfile: ${DEFAULT_SCALE_TREE.recordsPerLogfile}, payloadBytes: ${DEFAULT_SCALE_TREE.payloadBytes}, deviceSizeBytes: ${DEFAULT_SCALE_TREE.deviceSizeBytes} })`,
    ];
    try {
      this.hosts = gen.hosts.map((p) => new BenchHost(p.name, p.dir, DEFAULT_SCALE_TREE.deviceSizeBytes, ['--bind', addresses.get(p.name)!, '--metrics', metricsAt.get(p.name)!]));
      const [primary, secondary] = this.hosts as [BenchHost, BenchHost];
      const timeoutMs = this.opts.settleTimeoutS * 1000;
      const spawned = Date.now();
      // Both at once: neither waits long for the other's listener.
      await Promise.all(this.hosts.map((h) => h.start(timeoutMs)));
      const startS = (Date.now() - spawned) / 1000;
      this.log(`${c.resources} x ${c.logfiles}: both marsd running after ${startS.toFixed(1)} s; waiting until every resource is settled`);
      await primary.until('every resource UpToDate and replicated on both hosts', async () => {
        const [p, s] = await Promise.all([viewJson(primary), viewJson(secondary)]);
        return settledResources(p, true) === c.resources && settledResources(s, false) === c.resources;
      }, timeoutMs, 3000);
      const settleS = (Date.now() - spawned) / 1000;
      this.log(`${c.resources} x ${c.logfiles}: settled after ${settleS.toFixed(1)} s; ${this.opts.graceS} s grace, then a ${this.opts.windowS} s window`);
      await sleep(this.opts.graceS * 1000);

      const logFrom = this.hosts.map((h) => fileSize(h.logPath));
      const pids = this.hosts.map((h) => h.pid!);
      const loadAvgStart = loadavg().map(round2);
      const rounds0 = await Promise.all(this.hosts.map((h) => scrapeRounds(metricsAt.get(h.name)!)));
      const cpu0 = pids.map((p) => cpuSeconds(p)!);
      const t0 = process.hrtime.bigint();
      const maxRss = pids.map(() => 0);
      const windowEnd = Date.now() + this.opts.windowS * 1000;
      while (Date.now() < windowEnd) {
        for (const [i, p] of pids.entries()) maxRss[i] = Math.max(maxRss[i]!, memStatus(p)?.rss ?? 0);
        await sleep(Math.min(1000, Math.max(0, windowEnd - Date.now())));
      }
      const cpu1 = pids.map((p) => cpuSeconds(p));
      const elapsedS = Number(process.hrtime.bigint() - t0) / 1e9;
      const rssEnd = pids.map((p) => memStatus(p)?.rss ?? NaN);
      const loadAvgEnd = loadavg().map(round2);
      const rounds1 = await Promise.all(this.hosts.map((h) => scrapeRounds(metricsAt.get(h.name)!)));
      for (const [i, h] of this.hosts.entries()) {
        if (cpu1[i] === undefined || !h.alive) throw new Error(`marsd of ${h.name} exited during the window: ${h.logTail()}`);
      }

      const viewAllS = this.hosts.map((): number[] => []);
      for (let k = 0; k < 3; k++) {
        for (const [i, h] of this.hosts.entries()) viewAllS[i]!.push((await h.marsadm(['view', 'all'], 300_000)).wallS);
      }
      const startRuns: number[] = [];
      for (let k = 0; k < 3; k++) startRuns.push((await primary.marsadm(['--version'])).wallS);
      const views = await Promise.all([viewJson(primary), viewJson(secondary)]);
      let handoverS: number | undefined;
      const logTo = this.hosts.map((h) => fileSize(h.logPath));
      if (this.opts.handover) {
        handoverS = (await secondary.marsadm(['primary', 'r0'], timeoutMs)).wallS;
        this.log(`${c.resources} x ${c.logfiles}: planned handover of r0 to ${secondary.name}: ${handoverS.toFixed(2)} s`);
      }

      const hostFigures = this.hosts.map((h, i): ScaleHostFigures => {
        const all = problemLines(h.logPath, 0, logTo[i]!);
        const after = problemLines(h.logPath, logFrom[i]!, logTo[i]!);
        const count = (lines: string[], level: string) => lines.filter((l) => l.includes(` ${level}: `)).length;
        const samples = [...new Set(all.map((l) => l.replace(/^\S+ marsd\[\d+\] /, '')))].slice(0, 5);
        return {
          name: h.name,
          cpuPct: round2(((cpu1[i]! - cpu0[i]!) / elapsedS) * 100),
          rssBytes: rssEnd[i]!,
          maxRssBytes: Math.max(maxRss[i]!, rssEnd[i]!),
          viewAllS: viewAllS[i]!.map((x) => Math.round(x * 1000) / 1000),
          viewAllMedianS: Math.round(median(viewAllS[i]!)! * 1000) / 1000,
          warnLines: count(all, 'warn'),
          errorLines: count(all, 'error'),
          warnLinesAfterSettle: count(after, 'warn'),
          errorLinesAfterSettle: count(after, 'error'),
          sampleLines: samples,
          roundP99WindowMs: msBound(quantileBound(histogramSince(rounds0[i]!, rounds1[i]!), 0.99)),
          roundP99AllMs: msBound(quantileBound(rounds1[i]!, 0.99)),
          roundsInWindow: rounds1[i]!.count - rounds0[i]!.count,
          resourcesOk: settledResources(views[i]!, i === 0),
        };
      });
      for (const f of hostFigures) {
        this.log(`${c.resources} x ${c.logfiles}: ${f.name}: idle CPU ${f.cpuPct} % of a core, RSS ${(f.rssBytes / 2 ** 20).toFixed(0)} MiB (max ${(f.maxRssBytes / 2 ** 20).toFixed(0)}), view all ${f.viewAllMedianS} s, control round p99 ${boundText(f.roundP99WindowMs)} ms in the window (${f.roundsInWindow} rounds; ${boundText(f.roundP99AllMs)} ms since start), ${f.warnLines} warning / ${f.errorLines} error lines (${f.warnLinesAfterSettle} / ${f.errorLinesAfterSettle} after settling), ${f.resourcesOk}/${c.resources} resources settled${f.sampleLines.length ? `; first: ${f.sampleLines[0]}` : ''}`);
      }
      // Each distinct command once: the settling polls repeat `view all --json` many times.
      commands.push(...this.hosts.flatMap((h) => [`# ${h.name}`, ...new Set(h.commands)]));
      return {
        config: c,
        generation: { elapsedS: round2(gen.elapsedMs / 1000), files: gen.filesWritten, links: gen.linksWritten, logfileBytes: gen.logfileBytes },
        startS: round2(startS), settleS: round2(settleS), windowS: round2(elapsedS), loadAvgStart, loadAvgEnd,
        marsadmStartS: Math.round(median(startRuns)! * 1000) / 1000,
        hosts: hostFigures, handoverS: handoverS === undefined ? undefined : round2(handoverS), commands,
      };
    } finally {
      await this.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  }
}
