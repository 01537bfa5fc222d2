// The torture runner's world: a proxied cluster of real marsd processes (test_suite/helpers/
// multi-host.ts), the host that is primary now, the write-order oracle of everything written to
// the primary, and the cleanups that run even when a step fails.
import type { Test } from 'tap';
import { startCluster, type TestCluster } from '../helpers/multi-host.js';
import type { MarsHost } from '../helpers/cluster.js';
import { WriteOrderOracle } from '../helpers/oracle.js';
import { runWorkload, type WorkloadResult } from '../helpers/workload.js';

export const RES = 'r0';
export const SIZE = 16 << 20;
/** One write burst: at most this many writes or this long, whichever comes first. */
const BURST = { writes: 150, durationMs: 1_500 };

export class World {
  primary: MarsHost;
  readonly oracle = new WriteOrderOracle({ deviceBytes: SIZE });
  writes = 0;
  private constructor(readonly cluster: TestCluster, private readonly cleanups: (() => unknown)[]) {
    this.primary = cluster.primary;
  }

  /** Starts `hosts` marsd processes, each behind its fault proxy. */
  static async start(hosts: number): Promise<World> {
    const cleanups: (() => unknown)[] = [];
    // startCluster registers its cleanups (marsd, proxies, temp dirs) on a tap Test: collect them.
    const t = { teardown: (fn: () => unknown) => { cleanups.push(fn); } } as unknown as Test;
    const names = ['alpha', 'beta', 'gamma', 'delta', 'epsilon'].slice(0, hosts);
    try {
      const cluster = await startCluster(t, { hosts: names, sizeBytes: SIZE, res: RES, proxied: true });
      return new World(cluster, cleanups);
    } catch (err) {
      await runCleanups(cleanups);
      throw err;
    }
  }

  get hosts(): MarsHost[] {
    return this.cluster.hosts;
  }

  get secondaries(): MarsHost[] {
    return this.hosts.filter((h) => h !== this.primary);
  }

  /** A tagged write burst with FLUSHes on the primary (FUA on every write: `fua`). */
  async burst(seed: number, opts: { fua?: boolean; durationMs?: number } = {}): Promise<WorkloadResult> {
    const r = await runWorkload({
      socketPath: this.primary.socketPath(RES), exportName: RES, oracle: this.oracle, seed,
      writes: BURST.writes, durationMs: opts.durationMs ?? BURST.durationMs, flushEvery: 16,
      fuaEvery: opts.fua ? 1 : 0, settleTimeoutMs: 10_000,
    });
    this.writes += r.acknowledged;
    return r;
  }

  async close(): Promise<void> {
    await runCleanups(this.cleanups);
  }
}

async function runCleanups(cleanups: (() => unknown)[]): Promise<void> {
  for (const fn of cleanups.reverse()) {
    try {
      await fn();
    } catch {
      // keep cleaning up
    }
  }
  cleanups.length = 0;
}
