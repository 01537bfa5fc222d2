// The power-loss stack: an ext4 filesystem on a disk with a volatile write cache.
//
//   test_suite/fixtures/volatile-nbd-server.mjs (VolatileBackend on DIR/disk.img, own process)
//     -> nbdfuse DIR/fuse/nbd (a FUSE file; fsync becomes an NBD FLUSH)
//     -> losetup (a loop device on that file)
//     -> ext4 mounted at DIR/mnt
//
// powerOn() builds it (mkfs.ext4 the first time; later mounts replay the journal on whatever
// the last cut left in DIR/disk.img), cut(seed) is the power loss, powerOff() takes the dead
// stack down: the cut disk acknowledges and discards every write and flush, so umount cannot
// hang or fail on I/O errors; every step still has a deadline (umount -l, fusermount3 -uz and
// SIGKILL by pid as fallbacks). cleanup() is powerOff() for the test's teardown.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { REPO_ROOT } from '../helpers/cluster.js';
import { TOOL_PATH } from '../helpers/prereqs.js';
import { waitFor, withDeadline } from '../helpers/wait.js';
import type { CutResult, VolatileStats } from './volatile-backend.js';

const SERVER = join(REPO_ROOT, 'test_suite', 'fixtures', 'volatile-nbd-server.mjs');
const STEP_MS = 20_000;

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a tool with a deadline (killed after it); never throws for a non-zero exit. */
export function run(cmd: string, args: string[], timeoutMs = STEP_MS): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', env: { ...process.env, PATH: TOOL_PATH } }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) || (err && code === null ? String(err.message) : '') });
    });
  });
}

async function runOk(cmd: string, args: string[], timeoutMs = STEP_MS): Promise<string> {
  const r = await run(cmd, args, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout.trim();
}

function exited(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((r) => p.once('exit', () => r()));
}

async function isMounted(path: string): Promise<boolean> {
  return (await run('mountpoint', ['-q', path], 5_000)).code === 0;
}

export class PowerStack {
  readonly imagePath: string;
  readonly socketPath: string;
  readonly fuseDir: string;
  readonly fuseFile: string;
  readonly mnt: string;
  private server: ChildProcess | undefined;
  private lines: Interface | undefined;
  private readonly replies: string[] = [];
  private waiter: (() => void) | undefined;
  private nbdfuse: ChildProcess | undefined;
  private loop: string | undefined;
  private formatted = false;
  /** stderr of the server process and nbdfuse, for failure reports */
  log = '';

  constructor(readonly dir: string, readonly sizeBytes: number) {
    this.imagePath = join(dir, 'disk.img');
    this.socketPath = join(dir, 'vol.sock');
    this.fuseDir = join(dir, 'fuse');
    this.fuseFile = join(this.fuseDir, 'nbd');
    this.mnt = join(dir, 'mnt');
  }

  get loopDevice(): string | undefined {
    return this.loop;
  }

  /** Server (empty cache) -> nbdfuse -> loop device -> (mkfs.ext4 the first time) -> mount. */
  async powerOn(): Promise<void> {
    mkdirSync(this.fuseDir, { recursive: true });
    mkdirSync(this.mnt, { recursive: true });
    const server = spawn(process.execPath, [SERVER], {
      env: { ...process.env, VOL_DISK: this.imagePath, VOL_SIZE: String(this.sizeBytes), NBD_SOCKET: this.socketPath },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.server = server;
    server.stderr!.setEncoding('utf8').on('data', (s: string) => (this.log = (this.log + s).slice(-20_000)));
    this.replies.length = 0;
    this.lines = createInterface({ input: server.stdout! });
    this.lines.on('line', (l) => {
      this.replies.push(l);
      const w = this.waiter;
      this.waiter = undefined;
      w?.();
    });
    const ready = await this.nextLine('the volatile NBD server to start');
    if (ready !== 'ready') throw new Error(`volatile NBD server said ${ready}; log: ${this.log}`);

    const nbdfuse = spawn('nbdfuse', [this.fuseFile, `nbd+unix:///disk?socket=${this.socketPath}`], {
      env: { ...process.env, PATH: TOOL_PATH }, stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.nbdfuse = nbdfuse;
    nbdfuse.stderr!.setEncoding('utf8').on('data', (s: string) => (this.log = (this.log + `nbdfuse: ${s}`).slice(-20_000)));
    await waitFor('nbdfuse to expose its file', () => {
      if (nbdfuse.exitCode !== null) throw new Error(`nbdfuse exited ${nbdfuse.exitCode}: ${this.log}`);
      try {
        return statSync(this.fuseFile).size === this.sizeBytes;
      } catch {
        return false;
      }
    }, STEP_MS);
    this.loop = await runOk('losetup', ['--find', '--show', this.fuseFile]);
    if (!this.formatted) {
      await runOk('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', this.loop], 60_000);
      this.formatted = true;
    }
    await runOk('mount', ['-t', 'ext4', this.loop, this.mnt]);
  }

  /** One command to the server, its one-line JSON reply. */
  async command<T>(line: string, timeoutMs = STEP_MS): Promise<T> {
    if (!this.server?.stdin?.writable) throw new Error('the volatile NBD server is not running');
    this.server.stdin.write(`${line}\n`);
    const reply = JSON.parse(await this.nextLine(`the server's reply to ${line}`, timeoutMs)) as T & { error?: string };
    if (reply.error) throw new Error(`server: ${line}: ${reply.error}`);
    return reply;
  }

  stats(): Promise<VolatileStats> {
    return this.command<VolatileStats>('stats');
  }

  /** The power loss now: a seeded subset of the cached blocks reaches the disk, the rest is lost. */
  cut(seed: number): Promise<CutResult> {
    return this.command(`cut ${seed}`);
  }

  /**
   * The same cut right after the n-th write from now reaches the disk; resolves at the cut.
   * Until release() the disk answers nothing (a process blocked in fdatasync stays blocked).
   */
  armCut(seed: number, afterWrites: number, timeoutMs: number): Promise<CutResult> {
    return this.command(`arm ${seed} ${afterWrites}`, timeoutMs);
  }

  async release(): Promise<void> {
    await this.command('release');
  }

  /** Takes the stack down (after a cut: nothing more reaches the disk). Never throws. */
  async powerOff(): Promise<string[]> {
    const problems: string[] = [];
    // A frozen disk (a cut not yet released) would hang umount; an armed cut would freeze it.
    if (this.server && this.server.exitCode === null) await this.release().catch(() => undefined);
    if (await isMounted(this.mnt)) {
      const r = await run('umount', [this.mnt]);
      if (r.code !== 0) {
        problems.push(`umount: ${r.stderr.trim()}`);
        await run('umount', ['-l', this.mnt]);
      }
    }
    if (this.loop) {
      const r = await run('losetup', ['-d', this.loop]);
      if (r.code !== 0) problems.push(`losetup -d ${this.loop}: ${r.stderr.trim()}`);
      this.loop = undefined;
    }
    if (this.nbdfuse) {
      const p = this.nbdfuse;
      if (await isMounted(this.fuseDir)) {
        const r = await run('fusermount3', ['-u', this.fuseDir]);
        if (r.code !== 0) {
          problems.push(`fusermount3 -u: ${r.stderr.trim()}`);
          await run('fusermount3', ['-uz', this.fuseDir]);
        }
      }
      try {
        await withDeadline(exited(p), 10_000, 'nbdfuse to exit');
      } catch (err) {
        problems.push(String(err));
        p.kill('SIGKILL');
        await withDeadline(exited(p), 10_000, 'nbdfuse to die').catch((e) => problems.push(String(e)));
      }
      this.nbdfuse = undefined;
    }
    if (this.server) {
      const p = this.server;
      p.stdin?.end();
      try {
        await withDeadline(exited(p), 10_000, 'the volatile NBD server to exit');
      } catch (err) {
        problems.push(String(err));
        p.kill('SIGKILL');
        await withDeadline(exited(p), 10_000, 'the volatile NBD server to die').catch((e) => problems.push(String(e)));
      }
      this.lines?.close();
      this.server = undefined;
    }
    return problems;
  }

  private async nextLine(what: string, timeoutMs = STEP_MS): Promise<string> {
    return withDeadline((async () => {
      for (;;) {
        const l = this.replies.shift();
        if (l !== undefined) return l;
        const server = this.server;
        if (!server || server.exitCode !== null) throw new Error(`the volatile NBD server exited; log: ${this.log}`);
        await new Promise<void>((r) => (this.waiter = r));
      }
    })(), timeoutMs, what);
  }
}
