// A cluster of real marsd processes on this machine for the replication benchmarks: each host
// has its own /mars tree, run directory and data file under the round's directory and listens
// for peers on its own loopback address (127.0.0.2, 127.0.0.3, ...). Optionally a FaultProxy
// (test_suite/helpers/fault-proxy.ts, no tap dependency) sits in front of every host: the
// host's ips/ip-HOST names the proxy, marsd --bind listens behind it, so every connection
// into a host crosses that host's proxy (delay, bandwidth, byte counts).
//
// Like the rest of the bench this does not use the tap harness: every process is started
// through proc.ts (tracked, ended by pid) and every wait has a deadline.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { MARSADM_BIN, MARSADM_REL, MARSD_BIN, MARSD_REL } from './paths.js';
import { readLink, runCommand, sleep, trackChild } from './proc.js';
import { marsEnv } from './targets.js';
import { nbdGreets } from '../../kernel-shim/nbd-client.js';

export const RES = 'r0';

/** A free TCP port on a loopback address (the OS picks it; tiny race until it is bound). */
export function freePortOn(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

export class BenchHost {
  readonly marsDir: string;
  readonly runDir: string;
  readonly logPath: string;
  dataPath: string;
  readonly extraArgs: string[];
  /** the commands that set this host up, as they ran (for the report) */
  readonly commands: string[] = [];
  private child: ChildProcess | undefined;

  /** node options for marsd (e.g. --cpu-prof) */
  nodeArgs: string[] = [];

  constructor(readonly name: string, readonly dir: string, readonly sizeBytes: number, extraArgs: string[] = []) {
    this.marsDir = join(dir, 'mars');
    this.runDir = join(dir, 'run');
    this.dataPath = join(dir, 'data.img');
    this.logPath = join(dir, 'marsd.log');
    this.extraArgs = ['--quiet', ...extraArgs];
  }

  commonArgs(): string[] {
    return ['--mars-dir', this.marsDir, '--host', this.name, '--run-dir', this.runDir];
  }

  get pid(): number | undefined {
    return this.alive ? this.child?.pid : undefined;
  }

  get alive(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  get resDir(): string {
    return join(this.marsDir, `resource-${RES}`);
  }

  get sockPath(): string {
    return join(this.runDir, `${RES}.sock`);
  }

  get uri(): string {
    return `nbd+unix:///${RES}?socket=${this.sockPath}`;
  }

  /** Creates the directories and, unless a data file exists already, a sparse one. */
  prepare(): void {
    mkdirSync(this.dir, { recursive: true });
    if (!existsSync(this.dataPath)) {
      writeFileSync(this.dataPath, '');
      truncateSync(this.dataPath, this.sizeBytes);
      this.commands.push(`truncate -s ${this.sizeBytes} ${this.dataPath}`);
    }
  }

  /** marsadm with this host's options; throws with its output if it fails. */
  async marsadm(args: string[], timeoutMs = 120_000): Promise<{ stdout: string; wallS: number }> {
    const r = await runCommand(process.execPath, [MARSADM_BIN, ...this.commonArgs(), ...args], timeoutMs, { env: marsEnv() });
    this.commands.push(`node ${MARSADM_REL} ${this.commonArgs().join(' ')} ${args.join(' ')}`);
    if (r.code !== 0) {
      throw new Error(`marsadm ${args.join(' ')} on ${this.name} exited ${r.timedOut ? 'by timeout' : r.code ?? r.signal}: ${(r.stderr.trim() || r.stdout.trim()).split('\n').slice(-3).join(' | ')}`);
    }
    return { stdout: r.stdout.trim(), wallS: r.wallS };
  }

  link(rel: string): string | undefined {
    return readLink(join(this.marsDir, rel));
  }

  actual(key: string): string | undefined {
    return this.link(`resource-${RES}/actual-${this.name}/${key}`);
  }

  /** Starts marsd and waits (startTimeoutMs) until it published its pid: a tree of many resources takes longer. */
  async start(startTimeoutMs = 30_000): Promise<void> {
    if (this.alive) throw new Error(`marsd of ${this.name} already runs`);
    mkdirSync(this.dir, { recursive: true });
    const fd = openSync(this.logPath, 'a');
    try {
      writeSync(fd, `=== bench: marsd start at ${new Date().toISOString()} ===\n`);
      this.child = spawn(process.execPath, [...this.nodeArgs, MARSD_BIN, ...this.commonArgs(), ...this.extraArgs], { env: marsEnv(), stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    trackChild(this.child);
    this.child.once('error', () => undefined);
    this.commands.push(`node ${MARSD_REL} ${this.commonArgs().join(' ')} ${this.extraArgs.join(' ')} &`);
    const pid = String(this.child.pid);
    await this.until(`marsd of ${this.name} running`, () => this.link(`actual-${this.name}/pid`) === pid, startTimeoutMs);
  }

  async waitPrimary(): Promise<void> {
    await this.until(`${this.name} primary of ${RES}`, async () => {
      const code = Number(this.actual('replay-code') ?? '1');
      if (code < 0) throw new Error(`marsd of ${this.name} cannot start ${RES}: replay-code ${code}: ${this.actual('msg-err-replay-stop') ?? ''}`);
      return this.actual('is-primary') === '1' && this.actual('is-recovering') !== '1' && nbdGreets(this.sockPath, 2_000);
    }, 60_000);
  }

  /** Polls probe (bounded in count and time); fails early if marsd exits. */
  async until(what: string, probe: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = 25): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const maxPolls = Math.ceil(timeoutMs / intervalMs) + 10;
    for (let i = 0; i < maxPolls; i++) {
      if (await probe()) return;
      if (!this.alive) throw new Error(`marsd of ${this.name} exited while waiting for ${what}: ${this.logTail()}`);
      if (Date.now() > deadline) break;
      await sleep(intervalMs);
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${this.logTail()}`);
  }

  /** SIGTERM by pid, SIGKILL after timeoutMs. */
  async stop(timeoutMs = 30_000): Promise<void> {
    const child = this.child;
    if (!child || !this.alive) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const t = setTimeout(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } }, timeoutMs);
    await exited;
    clearTimeout(t);
  }

  logTail(lines = 8): string {
    try {
      return readFileSync(this.logPath, 'utf8').trimEnd().split('\n').slice(-lines).join(' | ');
    } catch {
      return '(no marsd log)';
    }
  }

  /** Logfiles of the resource (regular files; deleted ones are symlinks): name → size. */
  logSizes(): Map<string, number> {
    const out = new Map<string, number>();
    let names: string[] = [];
    try { names = readdirSync(this.resDir); } catch { return out; }
    for (const n of names) {
      if (!/^log-\d{9}-/.test(n)) continue;
      try {
        const st = statSync(join(this.resDir, n), { throwIfNoEntry: false });
        if (st?.isFile()) out.set(n, st.size);
      } catch { /* raced with deletion */ }
    }
    return out;
  }

  logBytes(): number {
    let sum = 0;
    for (const v of this.logSizes().values()) sum += v;
    return sum;
  }
}

export interface ClusterSpec {
  dir: string;
  /** host names; the first one is the primary */
  hosts: string[];
  sizeBytes: number;
  /** a FaultProxy in front of every host */
  proxied?: boolean;
  extraArgs?: string[];
  /** node options for every marsd, e.g. ['--cpu-prof', '--cpu-prof-dir=DIR'] */
  nodeArgs?: string[];
  /** join-resource on the secondaries and wait for the sync (default true) */
  join?: boolean;
}

export class BenchCluster {
  readonly hosts: BenchHost[] = [];
  readonly proxies = new Map<string, FaultProxy>();
  readonly addresses = new Map<string, string>();

  private constructor(readonly spec: ClusterSpec) {}

  get primary(): BenchHost {
    return this.hosts[0]!;
  }

  get secondary(): BenchHost {
    return this.hosts[1]!;
  }

  /** Sets up hosts, proxies, directories and data files; nothing runs yet. */
  static async create(spec: ClusterSpec): Promise<BenchCluster> {
    const c = new BenchCluster(spec);
    for (const [i, name] of spec.hosts.entries()) {
      const ip = `127.0.0.${i + 2}`;
      const h = new BenchHost(name, join(spec.dir, name), spec.sizeBytes, spec.extraArgs);
      h.nodeArgs = spec.nodeArgs ?? [];
      const realPort = await freePortOn(ip);
      let advertised = `${ip}:${realPort}`;
      if (spec.proxied) {
        const proxy = await FaultProxy.start({ listenHost: ip, targetHost: ip, targetPort: realPort });
        c.proxies.set(name, proxy);
        advertised = proxy.address;
      }
      h.extraArgs.push('--bind', `${ip}:${realPort}`);
      c.addresses.set(name, advertised);
      c.hosts.push(h);
    }
    return c;
  }

  /**
   * create-cluster and create-resource on the primary (its data file as it is: existing
   * content is the initial content), join-cluster and marsd on the others, and unless
   * spec.join is false, join-resource and the initial sync.
   */
  async start(): Promise<void> {
    const [first, ...rest] = this.hosts;
    for (const h of this.hosts) h.prepare();
    await first!.marsadm(['create-cluster', '--listen', this.addresses.get(first!.name)!]);
    await first!.start();
    await first!.marsadm(['create-resource', RES, first!.dataPath]);
    await first!.waitPrimary();
    const secret = join(first!.marsDir, 'cluster-secret');
    for (const h of rest) {
      await h.marsadm(['join-cluster', this.addresses.get(first!.name)!, '--listen', this.addresses.get(h.name)!, '--secret-file', secret]);
      await h.start();
    }
    if (this.spec.join ?? true) for (const h of rest) await this.join(h);
  }

  /** Waits until h knows the resource and the primary's current links. */
  async waitResourceKnown(h: BenchHost): Promise<void> {
    const p = this.primary.name;
    await h.until(`${h.name} learned ${RES} and ${p}'s links`, () => {
      const replay = h.link(`resource-${RES}/replay-${p}`);
      if (!replay) return false;
      const seq = replay.slice(4, 13);
      return h.link(`resource-${RES}/version-${seq}-${p}`) !== undefined;
    }, 60_000);
  }

  /** join-resource and wait (bounded) until the initial sync is done. */
  async join(h: BenchHost): Promise<void> {
    await this.waitResourceKnown(h);
    await h.marsadm(['join-resource', RES, h.dataPath]);
    await this.waitSynced(h, 300_000);
  }

  synced(h: BenchHost): boolean {
    return h.link(`resource-${RES}/syncstatus-${h.name}`) === String(this.spec.sizeBytes);
  }

  async waitSynced(h: BenchHost, timeoutMs: number): Promise<void> {
    await h.until(`${h.name} synced ${RES}`, () => this.synced(h), timeoutMs, 20);
  }

  /** The primary's newest logfile number (9 digits) that has a versionlink. */
  private newestVersionSeq(): string | undefined {
    const p = this.primary;
    let best: string | undefined;
    let names: string[] = [];
    try { names = readdirSync(p.resDir); } catch { return undefined; }
    for (const n of names) {
      const m = /^version-(\d{9})-(.+)$/.exec(n);
      if (m && m[2] === p.name && (best === undefined || m[1]! > best)) best = m[1]!;
    }
    return best;
  }

  /**
   * h replayed everything the primary logged: the primary's versionlink of its newest logfile
   * covers the whole file (so call this after the writes were flushed) and h's versionlink
   * of that logfile equals it (equal versionlinks prove equal history). h writes its
   * versionlink only after the replayed data was fdatasync'ed and its replay link moved.
   */
  caughtUp(h: BenchHost): boolean {
    const p = this.primary;
    const seq = this.newestVersionSeq();
    if (seq === undefined) return false;
    const mine = p.link(`resource-${RES}/version-${seq}-${p.name}`);
    if (mine === undefined) return false;
    const logPos = Number(mine.split(':')[0]!.split(',')[2]);
    let fileBytes = -1;
    try { fileBytes = statSync(join(p.resDir, `log-${seq}-${p.name}`)).size; } catch { /* not yet */ }
    return logPos === fileBytes && h.link(`resource-${RES}/version-${seq}-${h.name}`) === mine;
  }

  /**
   * Replay progress of h in logfile bytes, comparable with the sum of the primary's logfile
   * sizes: the sizes of the logfiles before the one h's replay link is in, plus MINPOS.
   */
  replayedBytes(h: BenchHost): number | undefined {
    const m = /^log-(\d{9})-[^,]+,(\d+),/.exec(h.link(`resource-${RES}/replay-${h.name}`) ?? '');
    if (!m) return undefined;
    let sum = Number(m[2]);
    for (const [name, size] of this.primary.logSizes()) if (name.slice(4, 13) < m[1]!) sum += size;
    return sum;
  }

  /** Stops every marsd (SIGTERM, SIGKILL after 30 s) and closes the proxies. */
  async stop(): Promise<void> {
    await Promise.all(this.hosts.map((h) => h.stop().catch(() => undefined)));
    await Promise.all([...this.proxies.values()].map((p) => p.close().catch(() => undefined)));
  }

  /** Every command that set the hosts up, in order per host. */
  commands(): string[] {
    return this.hosts.flatMap((h) => [`# ${h.name}`, ...h.commands]);
  }
}
