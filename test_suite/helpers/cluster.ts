// Run one real marsd host for a test: its own /mars directory, run directory and sparse data
// file, `marsadm create-cluster`, the daemon as a child process (stderr and stdout appended to
// a log file), marsadm bound to the host's options, and waits on the host's state with
// deadlines. A host is identified by its name and its directories only, so a multi-host harness
// can create several MarsHost objects (own listen address each) and join them.
//
// Cleanup: every marsd this module starts is SIGKILLed by pid in the test's teardown, and as a
// last resort when the test process exits.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readlinkSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import net from 'node:net';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import { tempDir } from './tmp.js';
import { nbdGreets } from '../../kernel-shim/nbd-client.js';

export { nbdGreets };

/** The checkout, whether this runs from source (tsx) or compiled in dist/ (npm run torture). */
const HERE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const REPO_ROOT = basename(HERE_ROOT) === 'dist' ? dirname(HERE_ROOT) : HERE_ROOT;
export const MARSD_BIN = join(REPO_ROOT, 'bin', 'marsd.js');
export const MARSADM_BIN = join(REPO_ROOT, 'bin', 'marsadm.js');

export interface HostSpec {
  /** host name in the cluster (also the name of the status dirs actual-HOST) */
  host: string;
  /** size of the sparse data file created as `DIR/data.img` (0: do not create one) */
  sizeBytes: number;
  /** extra marsd arguments, e.g. ['--mem-limit', '8M'] */
  extraArgs?: string[];
  /** address for create-cluster --listen (default 127.0.0.1 and a free port) */
  listen?: string;
  /** base directory (default: a fresh temporary directory removed in teardown) */
  dir?: string;
  /** run create-cluster (default true; a joining host of a later harness passes false) */
  createCluster?: boolean;
  /** spawn marsd right away (default true) */
  start?: boolean;
}

export interface AdmResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** waitPrimary: marsd reported that the resource cannot start. */
export class StartFailed extends Error {
  override name = 'StartFailed';
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Every marsd started here that has not exited yet: killed by pid if the test process exits. */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of live) {
        try { c.kill('SIGKILL'); } catch { /* gone */ }
      }
    });
  }
}

/** A free TCP port on 127.0.0.1 (the OS picks it; tiny race until the daemon binds it). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolvePort(addr.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * Extra node options for every marsd a test starts, e.g. MARS_MARSD_NODE_ARGS="--cpu-prof
 * --cpu-prof-dir=/tmp/prof" to profile the daemons (node refuses --cpu-prof in NODE_OPTIONS).
 */
function marsdNodeArgs(): string[] {
  return (process.env['MARS_MARSD_NODE_ARGS'] ?? '').split(' ').filter((a) => a !== '');
}

function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  // Options are passed explicitly; a stray MARS_* in the caller's environment must not leak in.
  delete env.MARS_DIR;
  delete env.MARS_HOST;
  delete env.MARS_RUN_DIR;
  return env;
}

export class MarsHost {
  readonly name: string;
  readonly dir: string;
  readonly marsDir: string;
  readonly runDir: string;
  readonly dataPath: string;
  /** marsd's stderr and stdout, all runs appended, each started by a marker line */
  readonly logPath: string;
  readonly sizeBytes: number;
  extraArgs: string[];
  private child: ChildProcess | undefined;
  private exited: Promise<ExitInfo> | undefined;
  private lastExit: ExitInfo | undefined;
  private starts = 0;

  constructor(spec: HostSpec & { dir: string }) {
    this.name = spec.host;
    this.dir = spec.dir;
    this.marsDir = join(spec.dir, 'mars');
    this.runDir = join(spec.dir, 'run');
    this.dataPath = join(spec.dir, 'data.img');
    this.logPath = join(spec.dir, 'marsd.log');
    this.sizeBytes = spec.sizeBytes;
    this.extraArgs = [...(spec.extraArgs ?? [])];
  }

  /** --mars-dir, --host, --run-dir for marsd and marsadm. */
  commonArgs(): string[] {
    return ['--mars-dir', this.marsDir, '--host', this.name, '--run-dir', this.runDir];
  }

  get pid(): number | undefined {
    return this.running ? this.child?.pid : undefined;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** How the last marsd run ended (undefined while running or never started). */
  get exitInfo(): ExitInfo | undefined {
    return this.running ? undefined : this.lastExit;
  }

  /** Runs marsadm with this host's options; never throws for a non-zero exit. */
  marsadm(args: string[], opts: { timeoutMs?: number } = {}): Promise<AdmResult> {
    const timeoutMs = opts.timeoutMs ?? 90_000;
    return new Promise((resolveRun, reject) => {
      const child = spawn(process.execPath, [MARSADM_BIN, ...this.commonArgs(), ...args], {
        env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
      child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
      const timer = setTimeout(() => {
        stderr += `\n[harness] marsadm ${args.join(' ')} killed after ${timeoutMs} ms`;
        child.kill('SIGKILL');
      }, timeoutMs);
      child.once('error', (err) => { clearTimeout(timer); reject(err); });
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        resolveRun({ code, signal, stdout, stderr });
      });
    });
  }

  /** marsadm that must succeed: returns trimmed stdout, throws with stderr otherwise. */
  async marsadmOk(args: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
    const r = await this.marsadm(args, opts);
    if (r.code !== 0) {
      throw new Error(`marsadm ${args.join(' ')} (host ${this.name}) exited ${r.code ?? r.signal}: ${r.stderr.trim() || r.stdout.trim()}`);
    }
    return r.stdout.trim();
  }

  /** Creates the directories and the sparse data file (idempotent). */
  prepare(): void {
    mkdirSync(this.dir, { recursive: true });
    if (this.sizeBytes > 0 && !existsSync(this.dataPath)) {
      writeFileSync(this.dataPath, '');
      truncateSync(this.dataPath, this.sizeBytes);
    }
  }

  async createCluster(listen: string): Promise<void> {
    await this.marsadmOk(['create-cluster', '--listen', listen]);
  }

  /** create-resource on this host's data file (or another device); waits for the export. */
  async createResource(res: string, opts: { device?: string; size?: number } = {}): Promise<void> {
    const args = ['create-resource', res, opts.device ?? this.dataPath];
    if (opts.size !== undefined) args.push('--size', String(opts.size));
    await this.marsadmOk(args);
  }

  /** Spawns marsd and waits until it runs (its pid in actual-HOST/pid). */
  async start(timeoutMs = 20_000): Promise<void> {
    if (this.running) throw new Error(`marsd of ${this.name} is already running (pid ${this.child!.pid})`);
    this.starts++;
    mkdirSync(dirname(this.logPath), { recursive: true });
    const fd = openSync(this.logPath, 'a');
    let child: ChildProcess;
    try {
      writeSync(fd, `=== harness: marsd start #${this.starts} at ${new Date().toISOString()} ===\n`);
      child = spawn(process.execPath, [...marsdNodeArgs(), MARSD_BIN, ...this.commonArgs(), ...this.extraArgs], {
        env: childEnv(), stdio: ['ignore', fd, fd],
      });
    } finally {
      closeSync(fd);
    }
    this.child = child;
    this.lastExit = undefined;
    track(child);
    this.exited = new Promise<ExitInfo>((r) => {
      child.once('exit', (code, signal) => {
        this.lastExit = { code, signal };
        r(this.lastExit);
      });
      child.once('error', () => {
        this.lastExit = { code: null, signal: null };
        r(this.lastExit);
      });
    });
    const pid = String(child.pid);
    await this.until(`marsd of ${this.name} running (pid ${pid})`, () => this.link(`actual-${this.name}/pid`) === pid, timeoutMs);
  }

  /** Sends a signal to the running marsd (by its pid). Returns false if it is not running. */
  kill(signal: NodeJS.Signals = 'SIGKILL'): boolean {
    if (!this.running) return false;
    return this.child!.kill(signal);
  }

  /** Waits until the current (or last) marsd has exited. */
  async waitExit(timeoutMs = 20_000): Promise<ExitInfo> {
    if (!this.exited) throw new Error(`marsd of ${this.name} was never started`);
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        this.exited,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`marsd of ${this.name} (pid ${this.child?.pid}) did not exit within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGKILL (if running), wait for the exit, start again. */
  async restart(): Promise<void> {
    if (this.running) {
      this.kill('SIGKILL');
      await this.waitExit();
    }
    await this.start();
  }

  /** SIGTERM and wait; SIGKILL if it does not stop in time. */
  async stop(timeoutMs = 30_000): Promise<ExitInfo | undefined> {
    if (!this.running) return this.lastExit;
    this.kill('SIGTERM');
    try {
      return await this.waitExit(timeoutMs);
    } catch {
      this.kill('SIGKILL');
      return this.waitExit();
    }
  }

  /** Teardown: SIGKILL whatever still runs and reap it. */
  async cleanup(): Promise<void> {
    if (this.running) {
      this.kill('SIGKILL');
      await this.waitExit(10_000).catch(() => undefined);
    }
  }

  socketPath(res: string): string {
    return join(this.runDir, `${res}.sock`);
  }

  nbdUri(res: string): string {
    return `nbd+unix:///${res}?socket=${this.socketPath(res)}`;
  }

  /** Value of a symlink in the /mars tree (path relative to it), undefined if absent. */
  link(rel: string): string | undefined {
    try {
      return readlinkSync(join(this.marsDir, rel));
    } catch {
      return undefined;
    }
  }

  /** resource-RES/actual-HOST/KEY */
  actual(res: string, key: string): string | undefined {
    return this.link(`resource-${res}/actual-${this.name}/${key}`);
  }

  /** The last lines of marsd's log, for failure messages. */
  logTail(lines = 30): string {
    try {
      return readFileSync(this.logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no marsd log)';
    }
  }

  /**
   * Waits until the running marsd is actual primary of `res` and serves its export: the pid
   * link names this marsd (so status links are not stale ones of a killed predecessor),
   * is-primary is 1, recovery is over, and the socket answers with an NBD greeting.
   */
  async waitPrimary(res: string, timeoutMs = 30_000): Promise<void> {
    const pid = String(this.child?.pid);
    let failingSince: number | undefined;
    await this.until(`${this.name} primary of ${res}`, async () => {
      if (this.link(`actual-${this.name}/pid`) !== pid) return false;
      // A start that failed (DefectiveLog, missing device, ...) publishes a negative
      // replay-code: give up early, once it is clearly not a stale link of a predecessor.
      const code = Number(this.actual(res, 'replay-code') ?? '1');
      if (code < 0) {
        failingSince ??= Date.now();
        if (Date.now() - failingSince > 1_000) {
          throw new StartFailed(`marsd of ${this.name} cannot start ${res}: replay-code ${code}: ${this.actual(res, 'msg-err-replay-stop') ?? '(no message)'}`);
        }
      } else {
        failingSince = undefined;
      }
      if (this.actual(res, 'is-primary') !== '1' || this.actual(res, 'is-recovering') === '1') return false;
      return nbdGreets(this.socketPath(res), 2_000);
    }, timeoutMs);
  }

  /** `marsadm view-MACRO res`, trimmed. */
  async view(macro: string, res: string): Promise<string> {
    return this.marsadmOk([`view-${macro}`, res]);
  }

  /**
   * Polls `probe` until it returns true; fails at once (with the log tail) if marsd exits,
   * and after timeoutMs with the log tail.
   */
  async until(what: string, probe: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = 25): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const maxPolls = Math.ceil(timeoutMs / intervalMs) + 10;
    for (let polls = 0; polls < maxPolls; polls++) {
      if (await probe()) return;
      if (!this.running) {
        throw new Error(`marsd of ${this.name} exited (${JSON.stringify(this.lastExit)}) while waiting for ${what}; log:\n${this.logTail()}`);
      }
      if (Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, intervalMs));
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; marsd log:\n${this.logTail()}`);
  }
}


/**
 * One host for a test: temp dirs, sparse data file, create-cluster, marsd running. Teardown
 * SIGKILLs marsd (before the temporary directory is removed: tap runs teardowns last-in
 * first-out).
 */
export async function startHost(t: Test, spec: HostSpec): Promise<MarsHost> {
  const dir = spec.dir ?? tempDir(t, `mars-${spec.host}-`);
  const host = new MarsHost({ ...spec, dir });
  t.teardown(() => host.cleanup());
  host.prepare();
  if (spec.createCluster ?? true) {
    await host.createCluster(spec.listen ?? `127.0.0.1:${await freePort()}`);
  }
  if (spec.start ?? true) await host.start();
  return host;
}
