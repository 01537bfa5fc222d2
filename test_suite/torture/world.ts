// The torture runner's world: a proxied cluster of real marsd processes (test_suite/helpers/
// multi-host.ts) with K resources r0..r(K-1), all primary on the same host (role changes move
// them together), the host that is primary now, the write-order oracle of everything written to
// each resource, and the cleanups that run even when a step fails.
import type { Test } from 'tap';
import { existsSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { joinCluster, joinResource, prepareHost, startCluster, waitSynced, type HostOptions, type TestCluster } from '../helpers/multi-host.js';
import type { MarsHost } from '../helpers/cluster.js';
import { WriteOrderOracle } from '../helpers/oracle.js';
import { drain, mountSmallMars } from '../helpers/small-mars.js';
import { tempDir } from '../helpers/tmp.js';
import { runWorkload, type WorkloadResult } from '../helpers/workload.js';

/** The first resource (the only one unless --resources); its data file is the host's dataPath. */
export const RES = 'r0';

/** Where `h` keeps the disk of `res`: r0 on its dataPath, the others beside it. */
export function dataOf(h: MarsHost, res: string): string {
  return res === RES ? h.dataPath : join(h.dir, `data-${res}.img`);
}

/** A sparse data file for every resource but r0 (prepare() made that one). */
function prepareData(h: MarsHost, resources: readonly string[]): void {
  for (const res of resources) {
    const path = dataOf(h, res);
    if (existsSync(path)) continue;
    writeFileSync(path, '');
    truncateSync(path, SIZE);
  }
}
export const SIZE = 16 << 20;
/** One write burst: at most this many writes or this long, whichever comes first. */
const BURST = { writes: 150, durationMs: 1_500 };
/** Each host's own /mars filesystem when the world runs on small ones (the mars-full fault). */
export const SMALL_MARS_BYTES = 1 << 30;
/** Host names in the order they are used: the first H start, replacements take the next. */
const NAMES = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta', 'iota', 'kappa', 'lambda', 'mu'];

export interface WorldOptions {
  /** Every host's /mars on a small loop-mounted ext4 of its own (root only; see small-mars.ts). */
  smallMars?: boolean;
  /** How many resources (r0..r(K-1)), default 1. */
  resources?: number;
}

export class World {
  primary: MarsHost;
  readonly resources: readonly string[];
  /** The write history of each resource. */
  readonly oracles = new Map<string, WriteOrderOracle>();
  writes = 0;
  /** What the current step did, for its progress line (taken by takeNotes). */
  private notes: string[] = [];
  /** Filler files of a host's /mars (mars-full), deleted by drainMars. */
  private readonly fillers = new Map<string, string[]>();
  private usedNames: number;

  /** `releases`: each host's small /mars release (unmount, detach), filled by hostOptions.initData. */
  private constructor(readonly cluster: TestCluster, private readonly cleanups: (() => unknown)[], private readonly t: Test,
    private readonly hostOptions: HostOptions, private readonly releases: Map<string, () => Promise<void>>, resources: string[]) {
    this.primary = cluster.primary;
    this.usedNames = cluster.hosts.length;
    this.resources = resources;
    for (const res of resources) this.oracles.set(res, new WriteOrderOracle({ deviceBytes: SIZE }));
  }

  /** Remember what the current step did (which host it hit, how), for its progress line. */
  note(text: string): void {
    this.notes.push(text);
  }

  takeNotes(): string[] {
    const n = this.notes;
    this.notes = [];
    return n;
  }

  /** The history of r0 (the only resource unless --resources). */
  get oracle(): WriteOrderOracle {
    return this.oracles.get(RES)!;
  }

  /** Every resource, as one marsadm argument ("r0,r1,..."): commands run for each in turn. */
  get resList(): string {
    return this.resources.join(',');
  }

  /** The resource a step (by its write seed) works on. */
  resOf(seed: number): string {
    return this.resources[seed % this.resources.length]!;
  }

  /** Starts `hosts` marsd processes, each behind its fault proxy. */
  static async start(hosts: number, opts: WorldOptions = {}): Promise<World> {
    const cleanups: (() => unknown)[] = [];
    // startCluster registers its cleanups (marsd, proxies, temp dirs) on a tap Test: collect them.
    const t = { teardown: (fn: () => unknown) => { cleanups.push(fn); } } as unknown as Test;
    const releases = new Map<string, () => Promise<void>>();
    const resources = Array.from({ length: opts.resources ?? 1 }, (_, i) => `r${i}`);
    const hostOptions: HostOptions = { sizeBytes: SIZE, proxied: true };
    if (opts.smallMars) {
      const imageDir = tempDir(t, 'mars-torture-img-');
      hostOptions.initData = (h) => {
        const release = mountSmallMars(h, imageDir, SMALL_MARS_BYTES);
        releases.set(h.name, release);
        t.teardown(release);
      };
    }
    try {
      const cluster = await startCluster(t, { hosts: NAMES.slice(0, hosts), res: RES, ...hostOptions });
      const [first, ...rest] = cluster.hosts;
      for (const res of resources.slice(1)) {
        for (const h of cluster.hosts) prepareData(h, [res]);
        await first!.createResource(res, { device: dataOf(first!, res) });
        await first!.waitPrimary(res);
        for (const h of rest) await joinResource(h, res, first!, dataOf(h, res));
        for (const h of rest) await waitSynced(h, res, SIZE);
      }
      return new World(cluster, cleanups, t, hostOptions, releases, resources);
    } catch (err) {
      await runCleanups(cleanups);
      throw err;
    }
  }

  get smallMars(): boolean {
    return this.releases.size > 0;
  }

  /** Remember `h`'s filler files (fillUntilFull) so that drainMars, or the final heal, deletes them. */
  noteFillers(h: MarsHost, files: string[]): void {
    this.fillers.set(h.name, [...(this.fillers.get(h.name) ?? []), ...files]);
  }

  /** Delete the filler files of `h` (all hosts: undefined). */
  drainMars(h?: MarsHost): void {
    for (const [name, files] of [...this.fillers]) {
      if (h && name !== h.name) continue;
      drain(files);
      this.fillers.delete(name);
    }
  }

  /**
   * Takes `gone` out of the world (after it left the resource and the cluster): marsd stopped,
   * its proxy closed, its /mars unmounted, its directories removed.
   */
  async removeHost(gone: MarsHost): Promise<void> {
    if (gone === this.primary) throw new Error(`${gone.name} is the primary`);
    this.drainMars(gone);
    await gone.stop();
    const i = this.cluster.hosts.indexOf(gone);
    if (i >= 0) this.cluster.hosts.splice(i, 1);
    await this.cluster.proxies.get(gone.name)?.close();
    this.cluster.proxies.delete(gone.name);
    this.cluster.addresses.delete(gone.name);
    await this.releases.get(gone.name)?.();
    this.releases.delete(gone.name);
    rmSync(gone.dir, { recursive: true, force: true });
  }

  /**
   * A fresh host (a name never used in this world, a fresh /mars and data file, a proxy in
   * front) joins the cluster through the primary and the resource, and syncs.
   */
  async addHost(): Promise<MarsHost> {
    const name = NAMES[this.usedNames] ?? `host${this.usedNames}`;
    this.usedNames++;
    const { host, address } = await prepareHost(this.t, name, this.hostOptions, this.cluster.proxies);
    this.cluster.addresses.set(name, address);
    const p = this.primary;
    await joinCluster(host, address, { address: this.cluster.addresses.get(p.name)!, secretFile: `${p.marsDir}/cluster-secret` });
    this.cluster.hosts.push(host);
    prepareData(host, this.resources);
    for (const res of this.resources) await joinResource(host, res, p, dataOf(host, res));
    for (const res of this.resources) await waitSynced(host, res, SIZE, 90_000);
    return host;
  }

  get hosts(): MarsHost[] {
    return this.cluster.hosts;
  }

  get secondaries(): MarsHost[] {
    return this.hosts.filter((h) => h !== this.primary);
  }

  /**
   * A tagged write burst with FLUSHes on the primary (FUA on every write: `fua`), on one
   * resource: `res`, else the one the seed draws (resOf).
   */
  async burst(seed: number, opts: { fua?: boolean; durationMs?: number; res?: string } = {}): Promise<WorkloadResult> {
    const res = opts.res ?? this.resOf(seed);
    const r = await runWorkload({
      socketPath: this.primary.socketPath(res), exportName: res, oracle: this.oracles.get(res)!, seed,
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
