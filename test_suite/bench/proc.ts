// Child processes and /proc sampling for the benchmark.
//
// Every process the bench starts is registered here and ended by its pid (never by name): on
// normal cleanup, on SIGINT/SIGTERM and, as a last resort, when the bench process exits.
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { TOOL_PATH } from '../helpers/prereqs.js';

const live = new Set<ChildProcess>();
let exitHook = false;

/** Registers a child so that it is SIGKILLed by pid if the bench exits while it still runs. */
export function trackChild(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  child.once('error', () => live.delete(child));
  if (!exitHook) {
    exitHook = true;
    process.once('exit', killAllTracked);
  }
}

/** SIGKILLs every tracked child that still runs (each by its own pid). */
export function killAllTracked(): void {
  for (const c of live) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** wall time from spawn to exit, seconds */
  wallS: number;
  timedOut: boolean;
}

/** Environment for tools: Debian's binaries first. */
export function toolEnv(): NodeJS.ProcessEnv {
  return { ...process.env, PATH: TOOL_PATH, LC_ALL: 'C' };
}

/**
 * Runs a command to completion with a hard time limit (SIGKILL by pid when it is exceeded).
 * Never throws for a non-zero exit; throws only if the command cannot be spawned.
 */
export function runCommand(cmd: string, args: string[], timeoutMs: number, opts: SpawnOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(cmd, args, { env: toolEnv(), ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
    trackChild(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.setEncoding('utf8').on('data', (s: string) => { if (stdout.length < 64 << 20) stdout += s; });
    child.stderr!.setEncoding('utf8').on('data', (s: string) => { if (stderr.length < 1 << 20) stderr += s; });
    const timer = setTimeout(() => {
      timedOut = true;
      try { child.kill('SIGKILL'); } catch { /* gone */ }
    }, timeoutMs);
    child.once('error', (err) => { clearTimeout(timer); reject(err); });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const wallS = Number(process.hrtime.bigint() - started) / 1e9;
      resolve({ code, signal, stdout, stderr, wallS, timedOut });
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------------------------------------
// /proc readings

const CLK_TCK = 100; // USER_HZ on Linux

/**
 * utime+stime in seconds of a process (all its threads) or, with tid, of one of its threads;
 * undefined if it is gone.
 */
export function cpuSeconds(pid: number, tid?: number): number | undefined {
  try {
    const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); utime is field 14, stime field 15
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/** stime of a process (all threads) in seconds: the CPU time spent in the kernel for it. */
export function sysCpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[12]) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/** VmRSS / VmHWM in bytes, undefined if the process is gone. */
export function memStatus(pid: number): { rss: number; hwm: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024;
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
  } catch {
    return undefined;
  }
}

/** Resets the peak RSS (VmHWM) of a process to its current RSS (Linux >= 4.0). */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

export interface SystemCpu {
  total: number;
  idle: number;
  iowait: number;
}

/** Aggregate CPU counters of the machine from /proc/stat (in ticks). */
export function systemCpu(): SystemCpu {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest fields are included in user/nice)
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  return { total, idle: v[3] ?? 0, iowait: v[4] ?? 0 };
}

export function readLink(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
}

/**
 * Samples server processes while a load runs: CPU time of each pid, the machine's CPU
 * counters, the peak RSS (polled VmRSS and VmHWM after a reset), and optionally a numeric
 * status link (marsd's writeback-rest).
 */
export class LoadSampler {
  private timer: NodeJS.Timeout | undefined;
  private readonly cpu0 = new Map<number, number>();
  private readonly main0 = new Map<number, number>();
  private readonly sys0 = new Map<number, number>();
  private machine0: SystemCpu = systemCpu();
  private t0 = 0;
  maxRss = new Map<number, number>();
  maxLink = 0;
  linkSamples = 0;

  constructor(private readonly pids: number[], private readonly link?: string, private readonly intervalMs = 100) {}

  start(): void {
    this.t0 = Date.now();
    this.machine0 = systemCpu();
    for (const pid of this.pids) {
      resetPeakRss(pid);
      this.cpu0.set(pid, cpuSeconds(pid) ?? 0);
      this.main0.set(pid, cpuSeconds(pid, pid) ?? 0);
      this.sys0.set(pid, sysCpuSeconds(pid) ?? 0);
    }
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
  }

  private sample(): void {
    for (const pid of this.pids) {
      const m = memStatus(pid);
      if (m) this.maxRss.set(pid, Math.max(this.maxRss.get(pid) ?? 0, m.rss, m.hwm));
    }
    if (this.link) {
      const v = Number(readLink(this.link));
      if (Number.isFinite(v)) {
        this.maxLink = Math.max(this.maxLink, v);
        this.linkSamples++;
      }
    }
  }

  /** Stops sampling; CPU % per pid (100 % = one core) and the machine's busy/iowait %. */
  stop(): { wallS: number; cpuPct: Map<number, number>; mainThreadCpuPct: Map<number, number>; kernelCpuPct: Map<number, number>; sysBusyPct: number; sysIowaitPct: number } {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sample();
    const wallS = (Date.now() - this.t0) / 1000;
    const cpuPct = new Map<number, number>();
    const mainThreadCpuPct = new Map<number, number>();
    const kernelCpuPct = new Map<number, number>();
    for (const pid of this.pids) {
      const c = cpuSeconds(pid);
      if (c !== undefined && wallS > 0) cpuPct.set(pid, (100 * (c - (this.cpu0.get(pid) ?? 0))) / wallS);
      const m = cpuSeconds(pid, pid);
      if (m !== undefined && wallS > 0) mainThreadCpuPct.set(pid, (100 * (m - (this.main0.get(pid) ?? 0))) / wallS);
      const k = sysCpuSeconds(pid);
      if (k !== undefined && wallS > 0) kernelCpuPct.set(pid, (100 * (k - (this.sys0.get(pid) ?? 0))) / wallS);
    }
    const s = systemCpu();
    const dt = s.total - this.machine0.total || 1;
    return {
      wallS,
      cpuPct,
      mainThreadCpuPct,
      kernelCpuPct,
      sysBusyPct: (100 * (dt - (s.idle - this.machine0.idle) - (s.iowait - this.machine0.iowait))) / dt,
      sysIowaitPct: (100 * (s.iowait - this.machine0.iowait)) / dt,
    };
  }

  /** Peak RSS since start(): the larger of the polled VmRSS and VmHWM (reset at start). */
  peakRss(pid: number): number | undefined {
    const m = memStatus(pid);
    const polled = this.maxRss.get(pid);
    if (m === undefined) return polled;
    return Math.max(polled ?? 0, m.hwm, m.rss);
  }
}

// ---------------------------------------------------------------------------------------------
// Disk activity from /proc/diskstats (the whole device: other processes' I/O included)

export interface DiskCounters {
  writtenBytes: number;
  /** time the device had I/O in flight (io_ticks), ms */
  busyMs: number;
  atMs: number;
}

/** The block device (name in /proc/diskstats) a directory lives on, undefined if unknown. */
export function diskDeviceOf(dir: string): string | undefined {
  try {
    const out = execFileSync('findmnt', ['-n', '-o', 'SOURCE', '--target', dir], { encoding: 'utf8', env: toolEnv(), timeout: 10_000 }).trim();
    const name = out.replace(/^\/dev\//, '').replace(/\[.*$/, '');
    return readDiskCounters(name) ? name : undefined;
  } catch {
    return undefined;
  }
}

export function readDiskCounters(device: string): DiskCounters | undefined {
  try {
    for (const line of readFileSync('/proc/diskstats', 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f[2] === device) return { writtenBytes: Number(f[9]) * 512, busyMs: Number(f[12]), atMs: Date.now() };
    }
  } catch { /* no diskstats */ }
  return undefined;
}
