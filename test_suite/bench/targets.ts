// The two NBD servers under comparison, each on a sparse data file in the bench directory and
// exported on a Unix socket:
//   - nbdkit's file plugin (default thread model), the baseline;
//   - our marsd as primary of resource r0, with its /mars tree and data file side by side.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { MARSADM_BIN, MARSADM_REL, MARSD_BIN, MARSD_REL } from './paths.js';
import { readLink, runCommand, sleep, toolEnv, trackChild } from './proc.js';
import { nbdGreets } from '../../kernel-shim/nbd-client.js';

export type TargetName = 'nbdkit' | 'marsd';

/** What happened after the load stopped (marsd: writeback). */
export interface AfterLoad {
  /** bytes appended to the transaction logs during the job */
  loggedBytes?: number;
  /** writeback-rest when the load stopped (first reading after the client exited) */
  restAtEndBytes?: number;
  /** seconds from the end of the load until writeback-rest reads 0 */
  writebackS?: number;
  error?: string;
}

export interface Target {
  readonly name: TargetName;
  readonly uri: string;
  readonly pid: number | undefined;
  readonly alive: boolean;
  /** path of the status link sampled during the load (marsd: writeback-rest) */
  readonly statusLink?: string;
  start(): Promise<void>;
  /** called right before the load starts */
  beforeLoad(): void;
  /** called right after the load stopped */
  afterLoad(opts: { diskRateBps: number }): Promise<AfterLoad>;
  stop(): Promise<void>;
  /** shell commands that set the target up, for the report */
  setupCommands(): string[];
  /** the last lines of the server's log */
  logTail(): string;
}

function tail(path: string, lines = 20): string {
  try {
    const text = readFileSync(path, 'utf8');
    return text.trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** A free TCP port on 127.0.0.1 (the OS picks it; tiny race until marsd binds it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}


function makeSparse(path: string, size: number): void {
  writeFileSync(path, '');
  truncateSync(path, size);
}

async function waitGreeting(sock: string, isAlive: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await nbdGreets(sock, 1_000)) return;
    if (!isAlive()) throw new Error(`${what} exited before serving ${sock}`);
    await sleep(50);
  }
  throw new Error(`${what} does not answer on ${sock} after ${timeoutMs} ms`);
}

export class NbdkitTarget implements Target {
  readonly name = 'nbdkit' as const;
  readonly dataPath: string;
  readonly sockPath: string;
  readonly logPath: string;
  private child: ChildProcess | undefined;

  constructor(readonly dir: string, readonly sizeBytes: number) {
    this.dataPath = join(dir, 'data.img');
    this.sockPath = join(dir, 'nbdkit.sock');
    this.logPath = join(dir, 'nbdkit.log');
  }

  get uri(): string {
    return `nbd+unix:///?socket=${this.sockPath}`;
  }

  get pid(): number | undefined {
    return this.alive ? this.child?.pid : undefined;
  }

  get alive(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  private args(): string[] {
    return ['--unix', this.sockPath, '--foreground', '--exit-with-parent', 'file', this.dataPath];
  }

  setupCommands(): string[] {
    return [`truncate -s ${this.sizeBytes} ${this.dataPath}`, `nbdkit ${this.args().join(' ')} &`];
  }

  async start(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    makeSparse(this.dataPath, this.sizeBytes);
    const fd = openSync(this.logPath, 'a');
    try {
      this.child = spawn('nbdkit', this.args(), { env: toolEnv(), stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    trackChild(this.child);
    this.child.once('error', () => undefined);
    await waitGreeting(this.sockPath, () => this.alive, 'nbdkit');
  }

  beforeLoad(): void {}

  async afterLoad(): Promise<AfterLoad> {
    return {};
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || !this.alive) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const t = setTimeout(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } }, 5_000);
    await exited;
    clearTimeout(t);
  }

  logTail(): string {
    return tail(this.logPath);
  }
}

/** Sum of the sizes of the resource's logfiles (regular files; deleted ones are symlinks). */
export function logBytes(resDir: string): number {
  let sum = 0;
  let names: string[] = [];
  try {
    names = readdirSync(resDir);
  } catch {
    return 0;
  }
  for (const n of names) {
    if (!/^log-\d+-/.test(n)) continue;
    try {
      const st = lstatSync(join(resDir, n));
      if (st.isFile()) sum += st.size;
    } catch { /* raced with deletion */ }
  }
  return sum;
}

export const RESOURCE = 'r0';

/** Environment for marsd/marsadm: options are passed explicitly, stray MARS_* must not leak in. */
export function marsEnv(): NodeJS.ProcessEnv {
  const env = toolEnv();
  delete env.MARS_DIR;
  delete env.MARS_HOST;
  delete env.MARS_RUN_DIR;
  return env;
}

export class MarsdTarget implements Target {
  readonly name = 'marsd' as const;
  readonly host = 'alpha';
  readonly marsDir: string;
  readonly runDir: string;
  readonly dataPath: string;
  readonly logPath: string;
  readonly extraArgs: string[];
  private child: ChildProcess | undefined;
  private port = 0;
  private logBytesBefore = 0;

  constructor(readonly dir: string, readonly sizeBytes: number, extraArgs: string[] = []) {
    this.marsDir = join(dir, 'mars');
    this.runDir = join(dir, 'run');
    this.dataPath = join(dir, 'data.img');
    this.logPath = join(dir, 'marsd.log');
    this.extraArgs = ['--quiet', ...extraArgs];
  }

  get sockPath(): string {
    return join(this.runDir, `${RESOURCE}.sock`);
  }

  get uri(): string {
    return `nbd+unix:///${RESOURCE}?socket=${this.sockPath}`;
  }

  get pid(): number | undefined {
    return this.alive ? this.child?.pid : undefined;
  }

  get alive(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  get resDir(): string {
    return join(this.marsDir, `resource-${RESOURCE}`);
  }

  get statusLink(): string {
    return join(this.resDir, `actual-${this.host}`, 'writeback-rest');
  }

  private commonArgs(): string[] {
    return ['--mars-dir', this.marsDir, '--host', this.host, '--run-dir', this.runDir];
  }

  setupCommands(): string[] {
    const common = this.commonArgs().join(' ');
    return [
      `truncate -s ${this.sizeBytes} ${this.dataPath}`,
      `node ${MARSADM_REL} ${common} create-cluster --listen 127.0.0.1:${this.port}`,
      `node ${MARSD_REL} ${common} ${this.extraArgs.join(' ')} &`,
      `node ${MARSADM_REL} ${common} create-resource ${RESOURCE} ${this.dataPath}`,
      `# after each job: wait until ${this.statusLink} reads 0, then`,
      `node ${MARSADM_REL} ${common} log-rotate ${RESOURCE} && node ${MARSADM_REL} ${common} log-delete --force ${RESOURCE}`,
    ];
  }

  /** Runs marsadm with this host's options; throws with its output if it fails. */
  async marsadm(args: string[], timeoutMs = 90_000): Promise<string> {
    const r = await runCommand(process.execPath, [MARSADM_BIN, ...this.commonArgs(), ...args], timeoutMs, { env: marsEnv() });
    if (r.code !== 0) {
      throw new Error(`marsadm ${args.join(' ')} exited ${r.timedOut ? 'by timeout' : r.code ?? r.signal}: ${(r.stderr.trim() || r.stdout.trim()).split('\n').slice(-3).join(' | ')}`);
    }
    return r.stdout.trim();
  }

  private link(rel: string): string | undefined {
    return readLink(join(this.marsDir, rel));
  }

  async start(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    makeSparse(this.dataPath, this.sizeBytes);
    this.port = await freePort();
    await this.marsadm(['create-cluster', '--listen', `127.0.0.1:${this.port}`]);
    const fd = openSync(this.logPath, 'a');
    try {
      this.child = spawn(process.execPath, [MARSD_BIN, ...this.commonArgs(), ...this.extraArgs], { env: marsEnv(), stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    trackChild(this.child);
    this.child.once('error', () => undefined);
    const pid = String(this.child.pid);
    await this.until('marsd running', () => this.link(`actual-${this.host}/pid`) === pid, 30_000);
    await this.marsadm(['create-resource', RESOURCE, this.dataPath]);
    const act = (key: string) => this.link(`resource-${RESOURCE}/actual-${this.host}/${key}`);
    await this.until(`marsd primary of ${RESOURCE}`, async () => {
      const code = Number(act('replay-code') ?? '1');
      if (code < 0) throw new Error(`marsd cannot start ${RESOURCE}: replay-code ${code}: ${act('msg-err-replay-stop') ?? ''}`);
      return act('is-primary') === '1' && act('is-recovering') !== '1' && nbdGreets(this.sockPath, 2_000);
    }, 60_000);
  }

  private async until(what: string, probe: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (await probe()) return;
      if (!this.alive) throw new Error(`marsd exited while waiting for ${what}: ${this.logTail()}`);
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${this.logTail()}`);
      await sleep(25);
    }
  }

  beforeLoad(): void {
    this.logBytesBefore = logBytes(this.resDir);
  }

  async afterLoad(opts: { diskRateBps: number }): Promise<AfterLoad> {
    const t0 = process.hrtime.bigint();
    const out: AfterLoad = {};
    const rest0 = Number(readLink(this.statusLink));
    out.restAtEndBytes = Number.isFinite(rest0) ? rest0 : undefined;
    const logged = () => Math.max(0, logBytes(this.resDir) - this.logBytesBefore);
    // Generous limit: 10x the time the disk needs for everything logged, at least 2 minutes.
    const limitS = Math.max(120, (10 * logged()) / Math.max(opts.diskRateBps, 1e6));
    for (;;) {
      const v = readLink(this.statusLink);
      const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
      if (v === '0') {
        out.writebackS = elapsed;
        break;
      }
      if (!this.alive) {
        out.error = `marsd exited during writeback: ${this.logTail()}`;
        break;
      }
      if (elapsed > limitS) {
        out.error = `writeback-rest still ${v} after ${limitS.toFixed(0)} s`;
        break;
      }
      await sleep(20);
    }
    out.loggedBytes = logged();
    if (!out.error) {
      // Keep logfiles from piling up across jobs: start a new one and delete the written-back ones.
      try {
        await this.marsadm(['log-rotate', RESOURCE]);
        await this.marsadm(['log-delete', '--force', RESOURCE]);
      } catch (err) {
        out.error = `log-rotate/log-delete: ${(err as Error).message}`;
      }
    }
    return out;
  }

  /** SIGTERM by pid, SIGKILL after 30 s. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || !this.alive) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const t = setTimeout(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } }, 30_000);
    await exited;
    clearTimeout(t);
  }

  logTail(): string {
    return tail(this.logPath);
  }
}
