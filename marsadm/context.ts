// What every marsadm command works with: the validated common options, the /mars tree, output
// in text or JSON, the trigger that wakes the local marsd, and waiting with a deadline.
import { existsSync } from 'node:fs';
import { resolveCommon } from '../common/config.js';
import { TreeStore } from '../common/tree/store.js';
import { LamportClock, formatStamp } from '../common/tree/lamport.js';
import { globalPaths, resPaths } from '../common/tree/paths.js';
import { validResource } from '../common/tree/names.js';
import { isLocked, lockHolderPid } from '../common/lock.js';

export class AdmError extends Error {
  override name = 'AdmError';
  constructor(message: string, readonly exitCode = 1) {
    super(message);
  }
}

export interface GlobalOptions {
  marsDir?: string;
  host?: string;
  runDir?: string;
  json?: boolean;
  timeout?: string;
  window?: string;
  force?: boolean;
  /** print what would change, change nothing */
  dryRun?: boolean;
}

export const DEFAULT_TIMEOUT_S = 60;
export const DEFAULT_WINDOW_S = 60;

function seconds(text: string | undefined, fallback: number, what: string): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n < -1) throw new AdmError(`invalid ${what} ${JSON.stringify(text)}: give seconds (-1 = forever, 0 = do not wait)`, 2);
  return n;
}

export class Adm {
  readonly tree: TreeStore;
  readonly host: string;
  readonly marsDir: string;
  readonly runDir: string;
  readonly json: boolean;
  readonly timeoutS: number;
  readonly windowS: number;
  readonly force: boolean;
  readonly dryRun: boolean;

  constructor(g: GlobalOptions, private readonly stdout: (s: string) => void = (s) => process.stdout.write(s)) {
    const common = resolveCommon(g);
    this.host = common.host;
    this.marsDir = common.marsDir;
    this.runDir = common.runDir;
    this.json = g.json ?? false;
    this.timeoutS = seconds(g.timeout, DEFAULT_TIMEOUT_S, '--timeout');
    this.windowS = seconds(g.window, DEFAULT_WINDOW_S, '--window');
    this.force = g.force ?? false;
    this.dryRun = g.dryRun ?? false;
    // A short-lived process reads a few links of directories holding thousands (issue 11).
    const tree = new TreeStore(this.marsDir, new LamportClock(), { lazyLinks: true });
    this.tree = this.dryRun ? dryRunTree(tree, (line) => this.print(`dry-run: would ${line}`)) : tree;
  }

  print(line = ''): void {
    this.stdout(`${line}\n`);
  }

  printJson(value: unknown): void {
    this.stdout(`${JSON.stringify(value, null, 2)}\n`);
  }

  /** Text for humans, or the object with --json. */
  result(text: string, json: Record<string, unknown>): void {
    // --dry-run: the command ran against a tree that changed nothing; its report says so.
    if (this.json) this.printJson(this.dryRun ? { ...json, dryRun: true } : json);
    else if (text) this.print(this.dryRun ? `dry-run, nothing changed; it would report: ${text}` : text);
  }

  requireCluster(): void {
    if (!existsSync(this.marsDir) || this.tree.value(globalPaths.uuid) === undefined) {
      throw new AdmError(`${this.marsDir} holds no cluster: run "marsadm create-cluster" first (or pass --mars-dir)`);
    }
  }

  requireResource(name: string): string {
    const res = validResource(name);
    this.requireCluster();
    if (this.tree.value(resPaths.size(res)) === undefined) {
      throw new AdmError(`resource ${res} does not exist here: see "marsadm view all", or create it with "marsadm create-resource ${res} DEVICE"`);
    }
    return res;
  }

  requireMember(res: string): void {
    if (this.tree.value(resPaths.data(res, this.host)) === undefined) {
      throw new AdmError(`host ${this.host} is not a member of resource ${res} (no data-${this.host} link)`);
    }
  }

  daemonRunning(): boolean {
    return isLocked(this.marsDir);
  }

  daemonPid(): number | undefined {
    return this.daemonRunning() ? lockHolderPid(this.marsDir) : undefined;
  }

  /** Wake the local marsd now instead of at its next periodic scan. */
  trigger(): void {
    if (this.dryRun) return;
    this.tree.ensureDir('userspace');
    this.tree.write(`userspace/trigger-${this.host}`, formatStamp(this.tree.clock.tick()));
  }

  actual(res: string, key: string): string | undefined {
    return this.tree.value(resPaths.actual(res, this.host, key));
  }

  /**
   * Poll until `probe` returns true, printing progress now and then; throws on timeout.
   * Returns false without waiting when marsd is not running (the change is persistent and
   * takes effect when marsd starts).
   */
  async waitFor(what: string, probe: () => boolean, progress?: () => string | undefined): Promise<boolean> {
    if (probe()) return true;
    if (this.dryRun) {
      this.print(`dry-run: would wait until ${what}`);
      return false;
    }
    if (!this.daemonRunning()) {
      if (!this.json) this.print(`note: marsd is not running on ${this.marsDir}; ${what} happens when it starts`);
      return false;
    }
    if (this.timeoutS === 0) return false;
    const deadline = this.timeoutS < 0 ? Infinity : Date.now() + this.timeoutS * 1000;
    let lastProgressMs = Date.now();
    this.trigger();
    for (;;) {
      await new Promise((r) => setTimeout(r, 100));
      if (probe()) return true;
      if (Date.now() > deadline) {
        throw new AdmError(`timed out after ${this.timeoutS} s waiting until ${what}; see "marsadm view" for the state, or raise --timeout`);
      }
      if (progress && Date.now() - lastProgressMs > 2000 && !this.json) {
        const text = progress();
        if (text) process.stderr.write(`  ${text}\n`);
        lastProgressMs = Date.now();
      }
    }
  }
}

/** The tree methods that change something; with --dry-run they print instead. */
const TREE_CHANGES: Record<string, (tree: TreeStore, args: unknown[]) => { line: string; result: unknown }> = {
  write: (tree, [rel, value]) => ({ line: `write ${rel as string} -> ${value as string}${tree.value(rel as string) !== undefined ? ` (now ${tree.value(rel as string)})` : ''}`, result: tree.value(rel as string) !== value }),
  remove: (tree, [rel]) => ({ line: `remove ${rel as string}`, result: tree.exists(rel as string) }),
  purge: (_tree, [rel]) => ({ line: `purge ${rel as string}`, result: undefined }),
  ensureDir: (tree, [rel]) => ({ line: tree.exists(rel as string) ? '' : `create directory ${rel as string}`, result: undefined }),
  fsyncDir: () => ({ line: '', result: undefined }),
};

/**
 * --dry-run: the same tree for reading; every change is printed ("would write ...") and not
 * made. Commands run unchanged on it, so what they print is what they would do.
 */
export function dryRunTree(tree: TreeStore, print: (line: string) => void): TreeStore {
  return new Proxy(tree, {
    get(target, prop, receiver) {
      const change = typeof prop === 'string' ? TREE_CHANGES[prop] : undefined;
      if (!change) {
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      }
      return (...args: unknown[]) => {
        const { line, result } = change(target, args);
        if (line) print(line);
        return result;
      };
    },
  });
}
