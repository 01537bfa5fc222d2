// The application on top of a resource, as this host's runner sees it: runs its hooks
// (common/resource/app-hooks.ts says where they are configured) through /bin/sh with the
// resource's environment, in its own process group, with a timeout and the output tail; keeps
// the app-state it publishes; counts the NBD connections open on the export and lets the primary
// wait until the application closed them. Time (the hook timeout, the wait for the close) comes
// from the injected clock.
import { spawn } from 'node:child_process';
import type { TreeStore } from '../../common/tree/store.js';
import { readHook, type HookKind } from '../../common/resource/app-hooks.js';
import type { Clock } from '../../common/util/clock.js';
import type { LogFn } from '../../common/util/log.js';

export const HOOK_TIMEOUT_MS = 120_000;
const OUTPUT_TAIL_BYTES = 2_000;

export interface HookResult {
  ok: boolean;
  /** exit code, signal, or why it could not run; with the tail of its output */
  detail: string;
}

/**
 * Run a hook through /bin/sh with MARS_RESOURCE, MARS_HOST and MARS_SOCKET set. Never throws;
 * a hook that outlives timeoutMs is killed (its process group) and reported as failed.
 */
export function runHook(cmd: string, env: { res: string; host: string; socket: string }, clock: Clock, timeoutMs = HOOK_TIMEOUT_MS): Promise<HookResult> {
  return new Promise((resolve) => {
    let output = '';
    const child = spawn('/bin/sh', ['-c', cmd], {
      env: { ...process.env, MARS_RESOURCE: env.res, MARS_HOST: env.host, MARS_SOCKET: env.socket },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group: a timeout kills the whole hook
    });
    const keep = (chunk: Buffer) => { output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_BYTES); };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const timer = clock.setTimeout(() => {
      try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ }
    }, timeoutMs);
    child.on('error', (err) => { timer.cancel(); resolve({ ok: false, detail: `cannot run: ${err.message}` }); });
    child.on('close', (code, signal) => {
      timer.cancel();
      const tail = output.trim().split('\n').slice(-3).join(' | ');
      const how = code === 0 ? 'exit 0' : code !== null ? `exit ${code}` : `killed by ${signal}${signal === 'SIGKILL' ? ` (timeout ${timeoutMs} ms?)` : ''}`;
      resolve({ ok: code === 0, detail: tail ? `${how}: ${tail}` : how });
    });
  });
}

export interface AppHookRunnerOptions {
  tree: TreeStore;
  res: string;
  host: string;
  /** the export's socket, handed to hooks as MARS_SOCKET */
  socketPath: string;
  clock: Clock;
  log: LogFn;
  /** app-state or the open count changed: publish now */
  onChange: () => void;
}

interface CloseWaiter {
  resolve: () => void;
  /** released by shutdown (a bounded wait runs out by itself) */
  unbounded: boolean;
}

export class AppHookRunner {
  /** app-state published in actual-HOST: none, running start/stop hook, or its last result */
  state = 'none';
  /** the want-primary request handled last (plan.ts planWantPrimary) */
  wantHandled: string | undefined;
  private open = 0;
  private waiters: CloseWaiter[] = [];

  constructor(private readonly o: AppHookRunnerOptions) {}

  get openCount(): number {
    return this.open;
  }

  configured(kind: HookKind): boolean {
    return readHook(this.o.tree, kind, this.o.res) !== undefined;
  }

  async run(kind: HookKind): Promise<void> {
    const { res, host, log } = this.o;
    const cmd = readHook(this.o.tree, kind, res);
    if (!cmd) return;
    this.state = `${kind} hook running`;
    this.o.onChange();
    log('info', `${res}: running the application ${kind} hook: ${cmd}`);
    const r = await runHook(cmd, { res, host, socket: this.o.socketPath }, this.o.clock);
    this.state = `${kind} hook ${r.ok ? 'done' : 'FAILED'} (${r.detail})`.slice(0, 500);
    log(r.ok ? 'info' : 'error', `${res}: application ${kind} hook ${r.ok ? 'done' : 'failed'}: ${r.detail}`);
    this.o.onChange();
  }

  setOpenCount(count: number): void {
    this.open = count;
    if (count === 0) for (const w of this.waiters.splice(0)) w.resolve();
    this.o.onChange();
  }

  /** Resolves once no connection is open, after timeoutMs at the latest (undefined: no limit but release()). */
  waitClosed(timeoutMs: number | undefined): Promise<void> {
    if (this.open === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = timeoutMs === undefined ? undefined : this.o.clock.setTimeout(done, timeoutMs);
      const waiter: CloseWaiter = { resolve: done, unbounded: timeoutMs === undefined };
      const waiters = this.waiters;
      function done(): void {
        timer?.cancel();
        const i = waiters.indexOf(waiter);
        if (i >= 0) waiters.splice(i, 1);
        resolve();
      }
      this.waiters.push(waiter);
    });
  }

  /** Daemon shutdown: stop waiting for clients that do not disconnect by themselves. */
  release(): void {
    for (const w of this.waiters.filter((x) => x.unbounded)) w.resolve();
  }
}
