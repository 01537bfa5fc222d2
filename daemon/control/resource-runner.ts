// The shell of one resource on this host: each control round it gathers what the resource's
// runners report (runtime()), asks the pure planner for the round's plan (plan.ts) and executes
// it, by role: the primary side (primary-runner.ts), the secondary side (secondary-runner.ts),
// the application hooks (app-hook-runner.ts), invalidate (invalidate.ts), the split-brain check
// (split-brain-monitor.ts) and the status links (status-links.ts, written by status-publisher.ts).
//
// Invariant: operations that change the role or the logfile (the plan's primary action, leaving
// emergency mode, invalidate) run one after the other on one queue, and while one is queued or
// running runtime() says so (actionInFlight): the planner then plans no other, because the
// state it would decide from does not show the effect of the queued one yet.
import { statSync } from 'node:fs';
import { join } from 'node:path';
import type { TreeStore } from '../../common/tree/store.js';
import { snapshotReader, type ReadSnapshot, type ResourceSnapshot } from '../../common/resource/snapshot.js';
import type { TrackedRead } from '../../common/tree/tracked-read.js';
import type { TransactionLogger } from '../logger/transaction-logger.js';
import { failStopOnInvariant } from '../../common/util/assert.js';
import type { Clock } from '../../common/util/clock.js';
import type { LogFn } from '../../common/util/log.js';
import type { Action } from './decide.js';
import { planResource, type ResourcePlan, type RunnerState } from './plan.js';
import { PrimaryRunner, type ExportHost } from './primary-runner.js';
import { SecondaryRunner, type SecondaryPeers } from './secondary-runner.js';
import { SplitBrainMonitor } from './split-brain-monitor.js';
import { AppHookRunner } from './app-hook-runner.js';
import { carryOutInvalidate } from './invalidate.js';
import { deleteReplayedCopies } from './space-reclaim.js';
import { MAX_SPACE_LEVEL } from './decide-emergency.js';
import { statusLinks, type StatusState } from './status-links.js';
import { StatusPublisher } from './status-publisher.js';
import type { ResourceCounters } from '../../common/util/metrics-recorder.js';
import { DeviceRunner, type DeviceMode } from './device-runner.js';
import { diskSizeBytes } from '../../common/disk/data-disk.js';

/** The data disk's size now (actsize-HOST), undefined when it cannot be measured (missing device). */
function measureDisk(path: string | undefined): number | undefined {
  if (path === undefined) return undefined;
  try {
    // A regular file's size is one stat; only a block device is opened to seek to its end
    // (this runs at every status update of every resource, issue 11).
    const st = statSync(path);
    return st.isFile() ? st.size : diskSizeBytes(path);
  } catch (err) {
    failStopOnInvariant(err);
    return undefined;
  }
}

/**
 * An unchanged resource's status is checked every this many rounds (disk size, state that did
 * not publish itself). A running sync's progress is published every round (apply()).
 */
export const STATUS_REFRESH_ROUNDS = 5;

export interface RunnerContext {
  tree: TreeStore;
  host: string;
  runDir: string;
  nbd: ExportHost;
  memLimitBytes: number;
  /** rotate automatically once the current logfile reaches this size (0 = never) */
  logRotateBytes: number;
  log: LogFn;
  clock: Clock;
  /** ask the daemon for a control round soon (state changed underneath) */
  requestTick: () => void;
  /** tell the peers our tree changed, so they pull us soon (a resumed log: log-resume.ts) */
  notifyPeers?: () => void;
  peers: SecondaryPeers;
  fetchRateBytesPerS: number;
  /** a log append hit ENOSPC: /mars is full whatever the last space check said */
  onOutOfSpace?: () => void;
  /** metrics: this resource's byte counters (daemon/metrics reads them) */
  counters?: ResourceCounters;
  /** the kernel block device marsd makes while primary (device-runner.ts); default none */
  device?: { mode: DeviceMode; dir: string };
}

export class ResourceRunner {
  readonly primary: PrimaryRunner;
  /** fetch, sync and replay while this host is a secondary of the resource */
  readonly secondary: SecondaryRunner;
  /** publishes actual-HOST/split-brain */
  readonly splitBrain: SplitBrainMonitor;
  readonly hooks: AppHookRunner;
  /** /dev/mars/NAME while this host is primary */
  readonly device: DeviceRunner;
  /** the resource's snapshot for each round, read again only when its inputs changed (issue 11) */
  readonly snapshots: TrackedRead<ReadSnapshot>;
  private readonly status: StatusPublisher;
  private busy: Promise<void> = Promise.resolve();
  /** operations queued or running on `busy` */
  private inFlight = 0;
  private invalidating = false;
  /** what the takeover of the primary role waits for (the plan's primaryWait) */
  private primaryWait: string | undefined;
  /** data-HOST as the last round saw it (actsize-HOST measures it) */
  private dataPath: string | undefined;
  /** the snapshot the last round applied */
  private lastSnapshot: ResourceSnapshot | undefined;
  /** rounds since the last status update a round asked for */
  private quietRounds = 0;
  /** the removal of this host last logged (snapshot.removed) */
  private removalReported: string | undefined;

  constructor(readonly name: string, private readonly ctx: RunnerContext) {
    const { tree, host, clock, log } = ctx;
    this.snapshots = snapshotReader(tree, name, host);
    const publish = (force: boolean) => this.publish(force);
    this.secondary = new SecondaryRunner(name, {
      tree, host, peers: ctx.peers, fetchRateBytesPerS: ctx.fetchRateBytesPerS, log, clock, onStatus: () => publish(false),
      ...(ctx.counters ? { counters: ctx.counters } : {}),
    });
    this.hooks = new AppHookRunner({ tree, res: name, host, socketPath: this.socketPath, clock, log, onChange: () => publish(true) });
    this.device = new DeviceRunner({
      res: name, mode: ctx.device?.mode ?? 'none', deviceDir: ctx.device?.dir ?? '/dev/mars', runDir: ctx.runDir,
      socketPath: this.socketPath, hooks: this.hooks, clock, log, onChange: () => { publish(true); ctx.requestTick(); },
    });
    this.primary = new PrimaryRunner({
      deferStartHook: this.device.enabled, tree, res: name, host, clock, log, nbd: ctx.nbd, socketPath: this.socketPath, memLimitBytes: ctx.memLimitBytes,
      hooks: this.hooks, stopSecondary: () => this.secondary.stop(), publish, requestTick: ctx.requestTick,
      ...(ctx.onOutOfSpace ? { onOutOfSpace: ctx.onOutOfSpace } : {}),
      ...(ctx.counters ? { counters: ctx.counters } : {}),
      ...(ctx.notifyPeers ? { notifyPeers: ctx.notifyPeers } : {}),
    });
    this.splitBrain = new SplitBrainMonitor(tree, name, host, log, clock);
    this.status = new StatusPublisher({
      tree, res: name, host, clock, log, links: () => ({ ...statusLinks(this.statusState()), ...this.device.links() }), also: () => this.primary.publishCurrentLinks(),
      actsizeBytes: () => measureDisk(this.dataPath),
    });
  }

  get socketPath(): string {
    return join(this.ctx.runDir, `${this.name}.sock`);
  }

  get phase(): RunnerState['phase'] {
    return this.primary.phase;
  }

  /** The logger, while this host is actual primary (tests and the peer service use it). */
  get activeLogger(): TransactionLogger | undefined {
    return this.primary.activeLogger;
  }

  get inEmergency(): boolean {
    return this.primary.inEmergency;
  }

  /** What the runners report about themselves: the planner's runtime input. */
  runtime(): RunnerState {
    const p = this.primary;
    const rt: RunnerState = {
      phase: p.phase,
      actionInFlight: this.inFlight > 0,
      loggingMode: p.phase === 'primary' ? p.loggingMode : undefined,
      holeUnwritten: p.holeUnwritten,
      invalidating: this.invalidating,
      openCount: this.device.openCount(this.hooks.openCount),
      primarySinceUs: p.primarySinceUs,
      wantHandled: this.hooks.wantHandled,
      stopHookConfigured: this.hooks.configured('stop'),
      splitBrainChecking: this.splitBrain.checking,
      splitBrainCheckedMs: this.splitBrain.lastCheckMs,
      device: this.device.runtime(),
    };
    const pos = p.position();
    if (pos) { rt.currentSeq = pos.currentSeq; rt.currentLogBytes = pos.currentLogBytes; }
    if (p.failedSignature !== undefined) rt.failedSignature = p.failedSignature;
    return rt;
  }

  /**
   * One control round: plan from the snapshot and the runners' state, then execute. Resolves
   * when the round's primary action (if any) is done.
   */
  round(snapshot: ResourceSnapshot, o: { present: boolean; spaceLevel: number; spaceTotalBytes?: number; startupHold?: string | undefined }): { plan: ResourcePlan; done: Promise<void> } {
    const plan = planResource({
      snapshot, runtime: this.runtime(), present: o.present, spaceLevel: o.spaceLevel, spaceTotalBytes: o.spaceTotalBytes ?? 0, nowMs: this.ctx.clock.nowMs(),
      config: { host: this.ctx.host, logRotateBytes: this.ctx.logRotateBytes }, startupHold: o.startupHold,
    });
    this.reportRemoval(snapshot.removed);
    return { plan, done: this.apply(plan, snapshot) };
  }

  /** Execute a plan; the order is the one the parts depend on (see plan.ts). */
  apply(plan: ResourcePlan, snapshot: ResourceSnapshot): Promise<void> {
    const done = this.execute(plan.primary, snapshot);
    this.dataPath = snapshot.dataPath;
    this.primary.followSize(snapshot.sizeBytes);
    this.device.apply(plan.device);
    if (plan.retryHoleLinks) this.primary.retryHoleLinks();
    if (plan.emergency === 'enter') this.primary.enterEmergency(plan.emergencyReason);
    if (plan.emergency === 'leave') {
      void this.enqueue(() => this.primary.leaveEmergency(), (err) => {
        this.ctx.log('warn', `${this.name}: cannot leave emergency mode yet: ${(err as Error).message}`);
      });
    }
    if (plan.invalidate) this.invalidate(plan.invalidate.request, plan.invalidate.sizeBytes);
    // A round's status update is a safety net: state changes publish themselves (publish()).
    // So it runs when the tree changed (a new snapshot, also for our actual-HOST/ changed
    // behind our back) or the plan's primaryWait did, and otherwise every
    // STATUS_REFRESH_ROUNDS-th round (issue 11: 15 % of an idle daemon's time at 100 resources).
    // A running sync's progress moves without a tree change: every round then, so view and
    // monitoring see it at most a round old (e2e/monitoring-states saw it 5 s old).
    const tellStatus = snapshot !== this.lastSnapshot || plan.primaryWait !== this.primaryWait || this.secondary.syncing
      || ++this.quietRounds >= STATUS_REFRESH_ROUNDS;
    this.primaryWait = plan.primaryWait;
    if (plan.deleteReplayedCopies) deleteReplayedCopies(this.ctx.tree, this.name, this.ctx.host, this.ctx.log);
    void this.secondary.reconcile(plan.secondary, snapshot);
    // A new snapshot object means the tree changed (snapshotReader): news for fetch and replay.
    // An unchanged one is none; their own news wakes them (fetched bytes, peer listings).
    if (snapshot !== this.lastSnapshot) this.secondary.nudge();
    this.lastSnapshot = snapshot;
    if (plan.checkSplitBrain) this.splitBrain.check();
    if (plan.wantPrimary) {
      this.hooks.wantHandled = plan.wantPrimary.request;
      if (plan.wantPrimary.stopApp) {
        this.ctx.log('info', `${this.name}: ${plan.wantPrimary.requester} asks for the primary role: stopping the application`);
        void this.hooks.run('stop');
      }
    }
    if (plan.publishStatus && tellStatus) {
      this.quietRounds = 0;
      this.publish(false);
    }
    return done;
  }

  private execute(action: Action, snapshot: ResourceSnapshot): Promise<void> {
    if (action.kind === 'none') return Promise.resolve();
    return this.enqueue(() => this.run(action, snapshot), (err) => {
      this.ctx.log('error', `${this.name}: ${action.kind} failed: ${(err as Error).stack ?? err}`);
    });
  }

  private async run(action: Action, snapshot: ResourceSnapshot): Promise<void> {
    switch (action.kind) {
      case 'start-primary': return this.primary.start(snapshot);
      case 'stop-primary': return this.primary.stop(action.reason);
      case 'rotate': return this.primary.rotate(action.toSeq);
      case 'create-next-logfile': return this.primary.createLogfile(action.seq);
      case 'none': return;
    }
  }

  /** A zombie says once in its log that it was removed and how to rejoin (snapshot.removed). */
  private reportRemoval(removed: string | undefined): void {
    if (removed === this.removalReported) return;
    this.removalReported = removed;
    if (removed !== undefined) this.ctx.log('warn', `${this.name}: ${removed}`);
    else this.ctx.log('info', `${this.name}: this host is a member again (no removal marker in force)`);
  }

  /** Queue an operation behind the others; runtime() says one is in flight until it ended. */
  private enqueue(op: () => Promise<void>, onError: (err: unknown) => void): Promise<void> {
    this.inFlight++;
    this.busy = this.busy.then(op).catch((err) => {
      failStopOnInvariant(err);
      onError(err);
    }).finally(() => { this.inFlight--; });
    return this.busy;
  }

  /** Carry out `marsadm invalidate` (request = its stamp) on the queue; no secondary work meanwhile. */
  private invalidate(request: string, sizeBytes: number): void {
    this.invalidating = true;
    const { tree, host, log } = this.ctx;
    void this.enqueue(() => carryOutInvalidate({
      tree, res: this.name, host, request, sizeBytes, log,
      isPrimary: () => this.primary.phase !== 'down' && this.primary.phase !== 'failed',
      stopSecondary: () => this.secondary.stop(),
    }), (err) => {
      log('error', `${this.name}: invalidate failed: ${(err as Error).stack ?? err}`);
    }).finally(() => {
      this.invalidating = false;
      this.ctx.requestTick();
    });
  }

  setOpenCount(count: number): void {
    this.hooks.setOpenCount(count);
  }

  /** Publish the status links; rate-limited unless forced. */
  publish(force: boolean): void {
    this.status.publish(force);
  }

  private statusState(): StatusState {
    const p = this.primary;
    return {
      host: this.ctx.host,
      phase: p.phase,
      draining: p.draining,
      secondary: this.secondary.active ? this.secondary.status() : undefined,
      diskOpen: p.diskOpen,
      openCount: this.device.openCount(this.hooks.openCount),
      recoveryRestBytes: p.recoveryRestBytes,
      writebackRestBytes: p.writebackRestBytes(),
      failure: p.failure,
      socketPath: this.socketPath,
      primaryWait: this.primaryWait,
      appState: this.hooks.state,
      stopHookConfigured: this.hooks.configured('stop'),
      loggingMode: p.loggingMode ?? 'logging',
      exportSizeBytes: p.exportSizeBytes,
      emergency: { ...p.emergencySince, hole: p.hole },
    };
  }

  /** Daemon shutdown (SIGTERM): stop cleanly like a detach, but keep the todo switches. */
  async shutdown(): Promise<void> {
    this.primary.beginShutdown();
    this.hooks.release();
    await this.device.shutdown();
    await this.busy;
    await this.primary.shutdown();
    await this.secondary.stop();
    this.status.cancel();
  }
}
