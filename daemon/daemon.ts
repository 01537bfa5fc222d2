// marsd: one process per host and /mars. It watches the tree (chokidar, plus a periodic scan),
// asks the pure decision function what each resource needs, and lets each resource's runner
// execute it. It also publishes the host's heartbeat in actual-HOST/.
import { mkdirSync } from 'node:fs';
import { watch, type FSWatcher } from 'chokidar';
import { basename } from 'node:path';
import { TreeStore } from './tree/store.js';
import { LamportClock, formatStamp } from './tree/lamport.js';
import { globalPaths, resPaths } from './tree/paths.js';
import { NbdServer } from '../kernel-shim/nbd-server.js';
import { acquireDaemonLock } from './lock.js';
import { decide } from './control/decide.js';
import { listResources, readResourceSnapshot } from './control/snapshot.js';
import { ResourceRunner } from './control/resource-runner.js';
import type { CommonOptions } from './config.js';

export const TREE_VERSION = '0.1';
export const MARSD_VERSION = '0.1.0';

export interface DaemonOptions extends CommonOptions {
  memLimitBytes: number;
  logRotateBytes: number;
  scanIntervalMs: number;
  log: (level: 'info' | 'warn' | 'error', msg: string) => void;
}

/**
 * The watcher covers the directories that admins and marsadm write to (the root, userspace/
 * with marsadm's trigger links, ips/, each resource's todo-HOST/), not the resource directories
 * themselves: those change with every logfile append, and marsadm triggers after changing
 * them anyway. The periodic scan catches everything else.
 */
function isInteresting(path: string): boolean {
  return !basename(path).startsWith('.');
}

export class Daemon {
  readonly tree: TreeStore;
  private readonly nbd: NbdServer;
  private readonly runners = new Map<string, ResourceRunner>();
  private watcher: FSWatcher | undefined;
  private interval: NodeJS.Timeout | undefined;
  private tickScheduled = false;
  private lock: { release(): void } | undefined;
  private stopping = false;

  constructor(private readonly opts: DaemonOptions) {
    this.tree = new TreeStore(opts.marsDir, new LamportClock());
    this.nbd = new NbdServer({
      log: opts.log,
      // Per connection; nbdcopy opens four. Bounded so the daemon stays small (issue 3: RSS).
      maxBufferedBytes: 16 << 20,
      onOpenCountChange: (name: string, count: number) => this.runners.get(name)?.setOpenCount(count),
    });
  }

  async start(): Promise<void> {
    const { marsDir, host, runDir } = this.opts;
    this.lock = acquireDaemonLock(marsDir);
    if (this.tree.value(globalPaths.uuid) === undefined) {
      this.lock.release();
      throw new Error(`${marsDir} holds no cluster (no uuid link): run "marsadm create-cluster" first`);
    }
    mkdirSync(runDir, { recursive: true, mode: 0o755 });
    this.tree.ensureDir(globalPaths.actualDir(host));
    this.tree.write(globalPaths.actual(host, 'tree'), TREE_VERSION, { onlyIfChanged: true });
    this.tree.write(globalPaths.actual(host, 'marsd-version'), MARSD_VERSION, { onlyIfChanged: true });
    this.tree.write(globalPaths.actual(host, 'pid'), String(process.pid));
    this.heartbeat(true);
    this.tree.ensureDir('userspace');
    this.watcher = watch([marsDir, this.tree.abs('userspace'), this.tree.abs('ips')], {
      depth: 0,
      ignoreInitial: true,
      followSymlinks: false,
      ignored: (p: string) => p !== marsDir && !isInteresting(p),
    });
    // Values are dangling symlinks ("1", "alpha", ...), for which chokidar emits no add/change
    // events (it cannot stat their targets); its raw inotify events do arrive.
    this.watcher.on('all', () => this.requestTick());
    this.watcher.on('raw', (_event: string, name: string) => {
      if (typeof name === 'string' && isInteresting(name)) this.requestTick();
    });
    this.watcher.on('error', (err) => this.opts.log('warn', `tree watcher: ${(err as Error).message}`));
    this.interval = setInterval(() => this.requestTick(), this.opts.scanIntervalMs);
    this.opts.log('info', `marsd ${MARSD_VERSION} running: host ${host}, tree ${marsDir}, run dir ${runDir}, pid ${process.pid}`);
    this.tick();
  }

  requestTick(): void {
    if (this.tickScheduled || this.stopping) return;
    this.tickScheduled = true;
    setTimeout(() => {
      this.tickScheduled = false;
      this.tick();
    }, 5);
  }

  private heartbeat(alive: boolean): void {
    const { host } = this.opts;
    this.tree.write(globalPaths.actual(host, 'time'), formatStamp(this.tree.clock.now()));
    this.tree.write(globalPaths.actual(host, 'alive'), alive ? '1' : '0', { onlyIfChanged: true });
  }

  /** One control round: read the tree, decide per resource, execute. */
  private tick(): void {
    if (this.stopping) return;
    try {
      this.heartbeat(true);
      const present = new Set(listResources(this.tree));
      for (const res of present) {
        let runner = this.runners.get(res);
        if (!runner) {
          this.watcher?.add(this.tree.abs(resPaths.todoDir(res, this.opts.host)));
          runner = new ResourceRunner(res, {
            tree: this.tree, host: this.opts.host, runDir: this.opts.runDir, nbd: this.nbd,
            memLimitBytes: this.opts.memLimitBytes, log: this.opts.log, requestTick: () => this.requestTick(),
          });
          this.runners.set(res, runner);
        }
        const snapshot = readResourceSnapshot(this.tree, res, this.opts.host);
        const decision = decide(snapshot, runner.runtime(), { host: this.opts.host, logRotateBytes: this.opts.logRotateBytes });
        if (decision.action.kind !== 'none') {
          void runner.execute(decision.action, snapshot).then(() => this.requestTick());
        }
        runner.publish(false);
      }
      for (const [res, runner] of this.runners) {
        if (present.has(res)) continue;
        // The resource was deleted underneath a running runner (delete-resource --force).
        if (runner.phase === 'down' || runner.phase === 'failed') {
          this.runners.delete(res);
        } else if (runner.phase === 'primary') {
          void runner.execute({ kind: 'stop-primary', reason: 'resource deleted' }, readResourceSnapshot(this.tree, res, this.opts.host));
        }
      }
    } catch (err) {
      this.opts.log('error', `control round failed: ${(err as Error).stack ?? err}`);
    }
  }

  /** Stop every resource cleanly (SIGTERM). */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.interval) clearInterval(this.interval);
    await this.watcher?.close();
    for (const runner of this.runners.values()) await runner.shutdown();
    await this.nbd.close();
    try { this.heartbeat(false); } catch { /* tree gone */ }
    this.lock?.release();
    this.opts.log('info', 'marsd stopped');
  }

  /** For tests and diagnostics. */
  runner(res: string): ResourceRunner | undefined {
    return this.runners.get(res);
  }
}

