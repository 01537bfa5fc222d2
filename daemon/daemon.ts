// marsd: one process per host and /mars. It watches the tree (tree-watcher.ts, plus a periodic scan)
// and runs control rounds: per resource, read the snapshot and let the resource's runner plan
// (the pure plan.ts) and execute the round. It also publishes the host's heartbeat in
// actual-HOST/, measures the /mars space level and runs the peers. Every decision about a
// resource is in plan.ts; this file only schedules rounds (through the injected clock).
import { tightenTreeModes } from '../common/tree/modes.js';
import { RefusalLog } from './propagate/refusal-log.js';
import { logfileCount } from '../common/resource/links.js';
import { MarsMetrics } from './metrics/registry.js';
import { PeerTraffic } from './net/peer-traffic.js';
import { MetricsServer } from './metrics/metrics-server.js';
import { newResourceCounters, type ResourceCounters } from '../common/util/metrics-recorder.js';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { TreeWatcher } from './tree-watcher.js';
import { HeapTrimmer } from './heap-trimmer.js';
import { TreeStore } from '../common/tree/store.js';
import { TrackedRead } from '../common/tree/tracked-read.js';
import { MARSD_VERSION, TREE_VERSION } from '../common/version.js';
import { LamportClock } from '../common/tree/lamport.js';
import { Heartbeat } from './heartbeat.js';
import { globalPaths, localPaths, resPaths } from '../common/tree/paths.js';
import { NbdServer } from '../kernel-shim/nbd-server.js';
import { acquireDaemonLock } from '../common/lock.js';
import { clusterHosts } from '../common/cluster/members.js';
import { listResources } from '../common/resource/snapshot.js';
import { ResourceRunner } from './control/resource-runner.js';
import { peerManagerPeers, type SecondaryPeers } from './control/secondary-runner.js';
import type { CommonOptions } from '../common/config.js';
import { PeerManager } from './propagate/peer-manager.js';
import { TombstoneKeeper, tombstoneScanIntervalMs } from './propagate/tombstones.js';
import { NotifyPacer } from './propagate/notify-pacer.js';
import { PeerService } from './serve/peer-service.js';
import { PeerServer } from './net/server.js';
import { decideAdmission } from './net/admission.js';
import { SecretKeeper } from './secret-keeper.js';
import { ringKeyText, type SecretRing } from '../common/cluster/secret-ring.js';
import { peerSocketPath } from './net/stdio-relay.js';
import { SpaceMonitor } from './control/space-monitor.js';
import { decideStartupGate } from './control/decide-startup.js';
import type { ThresholdSpec } from './control/decide-emergency.js';
import type { LogFn } from '../common/util/log.js';
import type { Clock, Timer } from '../common/util/clock.js';
import { failStopOnInvariant } from '../common/util/assert.js';
import { DirWatch } from '../common/disk/dir-watch.js';
import type { DeviceMode } from './control/device-runner.js';

export const DEFAULT_TOMBSTONE_MIN_AGE_MS = 60_000;
export const DEFAULT_STARTUP_GRACE_MS = 20_000;
/** a round asked for (tree change, action done) runs this soon, so a burst of requests makes one round */
const TICK_DELAY_MS = 5;

export interface DaemonOptions extends CommonOptions {
  /** serve Prometheus metrics on ADDR:PORT (daemon/metrics); off when absent */
  metrics?: string;
  /** /metrics: the primary's state known here older than this marks rests and lags stale (default 60) */
  metricsWindowS?: number;
  memLimitBytes: number;
  logRotateBytes: number;
  scanIntervalMs: number;
  /** how often each peer's tree is pulled when nothing notifies us */
  pullIntervalMs: number;
  /** logfile transfer limit per fetch, 0 = unlimited */
  fetchRateBytesPerS: number;
  /** listen here instead of on the address in ips/ip-HOST (behind NAT or a proxy) */
  bindAddress?: string;
  /** keep a tombstone at least this long before purging it once every member has seen it */
  tombstoneMinAgeMs?: number;
  /** the start-up gate waits this long at most for a peer's tree before the primary role (decide-startup.ts) */
  startupGraceMs?: number;
  /** resource directories peers may create here (--max-resources; default link-rules.ts) */
  maxResources?: number;
  /** present this certificate: the TCP listener speaks TLS only (checked by net/tls-files.ts) */
  tls?: { certFile: string; keyFile: string };
  /** verify the servers of `tls` links against this CA (system CAs otherwise) */
  tlsCaFile?: string;
  /** free-space thresholds of /mars for space levels 1..4 (--space-levels); default decide-emergency.ts */
  spaceLevels?: ThresholdSpec[];
  /** the kernel block device marsd makes while primary (--device-mode, --device-dir); default none */
  device?: { mode: DeviceMode; dir: string };
  log: LogFn;
  /** time and timers of the daemon and its runners (marsd: systemClock) */
  clock: Clock;
}

export class Daemon {
  readonly tree: TreeStore;
  private readonly heartbeat: Heartbeat;
  private readonly nbd: NbdServer;
  private readonly runners = new Map<string, ResourceRunner>();
  /** the resources of the tree, read again only when their directories changed */
  private readonly resources: TrackedRead<ReadonlySet<string>>;
  private watcher: TreeWatcher | undefined;
  private interval: Timer | undefined;
  private readonly heapTrimmer: HeapTrimmer;
  private tickScheduled = false;
  private lock: { release(): void } | undefined;
  private stopping = false;
  private readonly peers: PeerManager;
  private readonly refusals: RefusalLog;
  private readonly tombstones: TombstoneKeeper;
  private peerServer: PeerServer | undefined;
  private listenAddress: string | undefined;
  /** The cluster secret(s); none: this host runs alone. */
  private secrets: SecretKeeper | undefined;
  /** tells the peers our tree changed (paced, never dropped: notify-pacer.ts); they pull us soon */
  private readonly notifier: NotifyPacer;
  private readonly space: SpaceMonitor;
  private readonly secondaryPeers: SecondaryPeers;
  /** byte counters per resource (metrics); kept across runner restarts */
  private readonly counters = new Map<string, ResourceCounters>();
  private readonly metrics: MarsMetrics;
  private readonly peerTraffic = new PeerTraffic();
  /** when start() ran, and the start-up gate once it opened (latched: decide-startup.ts) */
  private startedMs = 0;
  private startupGateOpen = false;
  private metricsServer: MetricsServer | undefined;

  constructor(private readonly opts: DaemonOptions) {
    // The Lamport clock's real-time part is the injected clock too.
    // Changes told by inotify, not a stat per directory and check, nor per logfile size
    // (common/disk/dir-watch.ts); without the native helper, the stats.
    const watch = DirWatch.open('entries');
    const contents = watch && DirWatch.open('contents');
    this.tree = new TreeStore(opts.marsDir, new LamportClock(() => opts.clock.nowMs() * 1000), { ...(watch ? { watch } : {}), ...(contents ? { contents } : {}) });
    this.heartbeat = new Heartbeat(this.tree, opts.host, opts.clock);
    this.resources = new TrackedRead<ReadonlySet<string>>(this.tree, () => new Set(listResources(this.tree)));
    this.metrics = new MarsMetrics({
      tree: this.tree, host: opts.host, windowS: opts.metricsWindowS ?? 60, nowMs: () => opts.clock.nowMs(),
      resources: () => [...this.runners.keys()], counters: (res) => this.counters.get(res),
      peers: () => this.peers.all().map((l) => ({ peer: l.peer, connected: l.connected })),
      peerTraffic: () => this.peerTraffic.totals(),
      logfileCount: (res) => logfileCount(this.tree, res),
    });
    this.nbd = new NbdServer({
      log: opts.log, clock: opts.clock, recorder: this.metrics.nbd,
      // Per connection; nbdcopy opens four. Bounded so the daemon stays small (issue 3: RSS).
      maxBufferedBytes: 16 << 20,
      onOpenCountChange: (name: string, count: number) => this.runners.get(name)?.setOpenCount(count),
    });
    this.refusals = new RefusalLog({ log: opts.log, nowMs: () => opts.clock.monotonicMs() });
    this.notifier = new NotifyPacer(opts.clock, () => this.peers.notifyAll());
    this.peers = new PeerManager({
      tree: this.tree, host: opts.host, pullIntervalMs: opts.pullIntervalMs, log: opts.log, clock: opts.clock,
      refusals: this.refusals, mergeLimits: mergeLimits(this.opts),
      onTreeChanged: () => this.requestTick(),
      onConnection: (conn) => this.peerTraffic.track(conn),
      onListing: () => {
        for (const r of this.runners.values()) r.secondary.nudge();
        if (!this.startupGateOpen) this.requestTick(); // a first pull may open the start-up gate
      },
      ...(opts.tlsCaFile !== undefined ? { tlsCaFile: opts.tlsCaFile } : {}),
    });
    const tombstoneMinAgeMs = opts.tombstoneMinAgeMs ?? DEFAULT_TOMBSTONE_MIN_AGE_MS;
    this.tombstones = new TombstoneKeeper({
      tree: this.tree,
      minAgeMs: tombstoneMinAgeMs,
      intervalMs: tombstoneScanIntervalMs(tombstoneMinAgeMs),
      members: () => clusterHosts(this.tree).filter((h) => h !== opts.host),
      listing: (member) => this.peers.link(member)?.listing,
      log: opts.log, clock: opts.clock,
    });
    this.space = new SpaceMonitor({ tree: this.tree, host: opts.host, spec: opts.spaceLevels, log: opts.log, clock: opts.clock });
    this.secondaryPeers = peerManagerPeers(this.peers);
    this.heapTrimmer = new HeapTrimmer(opts.clock);
  }

  async start(): Promise<void> {
    const { marsDir, host, runDir } = this.opts;
    this.lock = acquireDaemonLock(marsDir);
    if (this.tree.value(globalPaths.uuid) === undefined) {
      this.lock.release();
      this.tree.close();
      throw new Error(`${marsDir} holds no cluster (no uuid link): run "marsadm create-cluster" first`);
    }
    mkdirSync(runDir, { recursive: true, mode: 0o755 });
    // Trees made by older versions (0755, logfiles 0644): other local users read replicated data.
    const tightened = tightenTreeModes(marsDir);
    if (tightened > 0) this.opts.log('info', `${marsDir}: removed group/other permissions from ${tightened} entries (docs/security.md, "Local users")`);
    this.tree.ensureDir(globalPaths.actualDir(host));
    this.tree.write(globalPaths.actual(host, 'tree'), TREE_VERSION, { onlyIfChanged: true });
    this.tree.write(globalPaths.actual(host, 'marsd-version'), MARSD_VERSION, { onlyIfChanged: true });
    this.tree.write(globalPaths.actual(host, 'pid'), String(process.pid));
    this.startedMs = this.opts.clock.nowMs();
    this.heartbeat.beat(true);
    if (this.opts.metrics !== undefined) {
      this.metricsServer = new MetricsServer(this.metrics, this.opts.log);
      await this.metricsServer.listen(this.opts.metrics);
    }
    this.tree.ensureDir('userspace');
    this.tree.write(localPaths.runDir, runDir, { onlyIfChanged: true });
    // Which host this /mars belongs to: `marsadm --host DEAD ...` on it acts for another host.
    this.tree.write(localPaths.host, host, { onlyIfChanged: true });
    try {
      await this.startPeers();
    } catch (err) {
      await this.peerServer?.close();
      this.lock.release();
      this.tree.close();
      throw err;
    }
    // A change an admin made (marsadm writes, then triggers): act now and tell the peers.
    this.watcher = new TreeWatcher(() => { this.requestTick(); this.notifier.changed(); }, this.opts.log);
    for (const dir of [marsDir, this.tree.abs('userspace'), this.tree.abs('ips')]) this.watcher.add(dir);
    this.interval = this.opts.clock.setInterval(() => this.requestTick(), this.opts.scanIntervalMs);
    this.heapTrimmer.start();
    this.opts.log('info', `marsd ${MARSD_VERSION} running: host ${host}, tree ${marsDir}, run dir ${runDir}, pid ${process.pid}`);
    this.tick();
  }

  /**
   * The peer side: the server on ips/ip-HOST for our peers (TLS only when we have a
   * certificate) and on RUN_DIR/peer.sock for `marsd --stdio` relays (peers that come in over
   * SSH), and one link to each peer. Without a cluster secret (a tree made by hand) the host
   * runs alone, and says so.
   */
  private async startPeers(): Promise<void> {
    const { marsDir, host, log, runDir } = this.opts;
    const secretPath = join(marsDir, 'cluster-secret');
    try {
      this.secrets = new SecretKeeper(secretPath, log);
    } catch (err) {
      failStopOnInvariant(err);
      log('warn', `no usable cluster secret (${(err as Error).message}): this host neither serves nor contacts peers`);
      return;
    }
    const keeper = this.secrets;
    const service = new PeerService({
      tree: this.tree, host, log, clock: this.opts.clock, refusals: this.refusals, mergeLimits: mergeLimits(this.opts),
      activeLogEnd: (res, seq) => {
        const logger = this.runners.get(res)?.activeLogger;
        if (!logger) return undefined;
        // A logfile just rotated away from: its final versionlink may not be written yet.
        return logger.currentSeq === seq ? logger.durablePos : logger.retiredEnd(seq);
      },
      waitActiveLog: (res, seq, mark, signal) => this.runners.get(res)?.activeLogger?.durableBeyond(seq, mark, signal) ?? Promise.resolve(false),
      activeLogSeqs: (res) => { const l = this.runners.get(res)?.activeLogger; return l ? [l.currentSeq, ...l.retiredSeqs()] : []; },
      primaryPosition: (res) => {
        const logger = this.runners.get(res)?.activeLogger;
        return logger ? { seq: logger.currentSeq, origin: host, pos: logger.durablePos } : undefined;
      },
      inEmergency: (res) => this.runners.get(res)?.inEmergency ?? false,
      onTreeChanged: () => this.requestTick(),
      onNotify: (peer) => this.peers.pullSoon(peer),
      onPulled: (peer) => this.peers.notePulledBy(peer),
      secretRing: (peer, req, session) => keeper.handle(peer, req, session),
    });
    this.peerServer = new PeerServer({
      host, secret: keeper.dialSecret(), handlers: service, log, clock: this.opts.clock,
      uuid: this.tree.value(globalPaths.uuid) ?? '(any)',
      clockUs: () => this.tree.clock.now(),
      onConnection: (conn) => this.peerTraffic.track(conn),
      admitPeer: (peerHost, peerUuid) => decideAdmission((p) => this.tree.readRaw(p), host, peerHost, peerUuid),
      ...(this.opts.tls !== undefined ? { tls: this.opts.tls } : {}),
    });
    const server = this.peerServer;
    const useRing = (ring: SecretRing) => {
      server.setSecretRing(ring);
      this.tree.write(globalPaths.actual(host, 'cluster-key'), ringKeyText(ring), { onlyIfChanged: true });
    };
    useRing(keeper.ring);
    keeper.onChange = useRing;
    await server.listenUnix(peerSocketPath(runDir));
    this.peers.enable(() => keeper.dialSecret());
  }

  /** Listen on our ips/ip-HOST address (again, when it changed) and follow the member list. */
  private reconcilePeers(): void {
    if (!this.peerServer) return;
    this.secrets?.reloadIfChanged(); // a rotation, or a current secret copied here by hand
    const address = this.opts.bindAddress ?? this.tree.value(globalPaths.ip(this.opts.host));
    if (address !== undefined && address !== this.listenAddress) {
      const server = this.peerServer;
      this.listenAddress = address;
      server.listen(address).then(
        () => this.opts.log('info', `peer protocol listening on ${address}`),
        (err: Error) => {
          failStopOnInvariant(err);
          this.opts.log('error', `cannot listen on ${address} (ips/ip-${this.opts.host}): ${err.message}`);
          this.listenAddress = undefined;
        });
    }
    this.peerServer.setUuid(this.tree.value(globalPaths.uuid) ?? '(any)');
    this.peers.reconcile();
  }

  requestTick(): void {
    if (this.tickScheduled || this.stopping) return;
    this.tickScheduled = true;
    this.opts.clock.setTimeout(() => {
      this.tickScheduled = false;
      this.tick();
    }, TICK_DELAY_MS);
  }

  /** One control round: the host's heartbeat, peers and space level, then every resource. */
  private tick(): void {
    if (this.stopping) return;
    // Real time, not the injected clock: the metric is what a round costs on this machine.
    const startedNs = process.hrtime.bigint();
    try {
      try {
        this.heartbeat.beat(true);
      } catch (err) {
        // A full /mars must not stop the control round: it is what leaves emergency mode.
        failStopOnInvariant(err);
        this.opts.log('warn', `heartbeat not written: ${(err as Error).message}`);
      }
      this.reconcilePeers();
      this.watcher?.retry();
      const space = this.space.check();
      const hold = this.startupHold();
      // One read batch: a directory every snapshot reads is checked once per round (issue 11).
      const present = this.tree.readBatch(() => {
        const resources = this.resources.get();
        for (const res of resources) this.round(this.runnerFor(res), true, space.level, space.totalBytes, hold);
        return resources;
      });
      // Only with a cluster secret: a host that talks to no peer cannot know what they saw.
      if (this.secrets) this.tombstones.run();
      // Resources deleted underneath a running runner (delete-resource --force).
      for (const [res, runner] of this.runners) if (!present.has(res)) this.round(runner, false, space.level, space.totalBytes);
    } catch (err) {
      failStopOnInvariant(err);
      this.opts.log('error', `control round failed: ${(err as Error).stack ?? err}`);
    }
    this.metrics.controlRound(Number(process.hrtime.bigint() - startedNs) / 1e9);
  }

  /** Why the primary role may not start yet (the start-up gate, latched once open); undefined: it may. */
  private startupHold(): string | undefined {
    if (this.startupGateOpen) return undefined;
    const links = this.peers.all();
    const gate = decideStartupGate({
      nowMs: this.opts.clock.nowMs(), startedMs: this.startedMs, graceMs: this.opts.startupGraceMs ?? DEFAULT_STARTUP_GRACE_MS,
      // Without a cluster secret this host contacts nobody: there is nobody to wait for.
      peerCount: this.secrets ? links.length : 0, pulledFrom: links.filter((l) => l.listing !== undefined).map((l) => l.peer),
    });
    if (!gate.open) return gate.why;
    this.startupGateOpen = true;
    this.opts.log('info', `start-up gate open: ${gate.why}`);
    return undefined;
  }

  /** Gather the resource's snapshot and let its runner plan and execute the round. */
  private round(runner: ResourceRunner, present: boolean, spaceLevel: number, spaceTotalBytes: number, startupHold?: string): void {
    const { snapshot } = runner.snapshots.get();
    const { plan, done } = runner.round(snapshot, { present, spaceLevel, spaceTotalBytes, startupHold });
    // The state an action leaves is what the next round decides from: ask for one at once.
    if (plan.primary.kind !== 'none') void done.then(() => { this.requestTick(); this.notifier.changed(); });
    if (plan.forget) {
      this.runners.delete(runner.name);
      this.watcher?.remove(this.tree.abs(resPaths.todoDir(runner.name, this.opts.host)));
      void runner.shutdown();
    }
  }

  private runnerFor(res: string): ResourceRunner {
    const existing = this.runners.get(res);
    if (existing) return existing;
    this.watcher?.add(this.tree.abs(resPaths.todoDir(res, this.opts.host)));
    const runner = new ResourceRunner(res, {
      tree: this.tree, host: this.opts.host, runDir: this.opts.runDir, nbd: this.nbd,
      memLimitBytes: this.opts.memLimitBytes, logRotateBytes: this.opts.logRotateBytes,
      log: this.opts.log, clock: this.opts.clock, requestTick: () => this.requestTick(), notifyPeers: () => this.notifier.changed(),
      peers: this.secondaryPeers, fetchRateBytesPerS: this.opts.fetchRateBytesPerS,
      onOutOfSpace: () => { this.space.reportFull(); this.requestTick(); },
      counters: ((c) => c ?? this.counters.set(res, newResourceCounters()).get(res)!)(this.counters.get(res)),
      ...(this.opts.device ? { device: this.opts.device } : {}),
    });
    this.runners.set(res, runner);
    return runner;
  }

  /** Stop every resource cleanly (SIGTERM). */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.interval?.cancel();
    this.heapTrimmer.stop();
    this.notifier.stop();
    this.watcher?.close();
    await this.metricsServer?.close();
    for (const runner of this.runners.values()) await runner.shutdown();
    await this.peers.close();
    await this.peerServer?.close();
    await this.nbd.close();
    try { this.heartbeat.beat(false); } catch (err) { failStopOnInvariant(err); /* tree gone */ }
    this.tree.close();
    this.lock?.release();
    this.opts.log('info', 'marsd stopped');
  }

  /** For tests and diagnostics. */
  runner(res: string): ResourceRunner | undefined {
    return this.runners.get(res);
  }
}

const mergeLimits = (o: DaemonOptions): { maxResources?: number } => (o.maxResources !== undefined ? { maxResources: o.maxResources } : {}); // link-rules.ts
