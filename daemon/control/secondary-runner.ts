// The imperative shell for the secondary side of one resource on this host: it opens the
// data disk and starts or stops the fetcher, the sync and the replayer as the round's plan
// says (decideSecondary, via plan.ts), and reports their state for `actual-HOST/*`.
// Invariant: replay and sync stop before the disk closes, and reconcile calls never overlap.
import { countInto, RateWindow } from './rate-window.js';
import { newResourceCounters, type ResourceCounters } from '../../common/util/metrics-recorder.js';
import type { TreeStore } from '../../common/tree/store.js';
import { DataDisk } from '../../common/disk/data-disk.js';
import { Fetcher, peerManagerFetchPeers, type FetchPeers } from '../fetch/fetcher.js';
import { peerManagerSyncPeers, SyncWorker, type SyncPeers } from '../sync/sync-worker.js';
import { Replayer } from '../replay/replayer.js';
import type { PeerManager } from '../propagate/peer-manager.js';
import type { SecondaryPlan } from './decide-secondary.js';
import type { SecondaryStatus } from './status-links.js';
import type { ResourceSnapshot } from '../../common/resource/snapshot.js';
import type { LogFn } from '../../common/util/log.js';
import type { Clock } from '../../common/util/clock.js';
import { failStopOnInvariant } from '../../common/util/assert.js';

/**
 * The replayer's own re-check when nobody nudges it. In marsd every control round (each scan
 * interval, 1 s by default), every peer listing and every fetched chunk nudge it, so its
 * default of 500 ms only added two looks at the tree a second per idle resource (issue 11).
 */
const REPLAY_SAFETY_POLL_MS = 5_000;

/** What the secondary side needs of the other members: logfiles to fetch, the primary to sync from. */
export type SecondaryPeers = FetchPeers & SyncPeers;

/** SecondaryPeers of a running marsd: the links of its PeerManager. */
export function peerManagerPeers(peers: PeerManager): SecondaryPeers {
  return { ...peerManagerFetchPeers(peers), ...peerManagerSyncPeers(peers) };
}

export interface SecondaryContext {
  tree: TreeStore;
  host: string;
  peers: SecondaryPeers;
  fetchRateBytesPerS: number;
  log: LogFn;
  clock: Clock;
  /** state changed: publish status soon */
  onStatus: () => void;
  /** metrics: bytes fetched, replayed, synced (counter increments only) */
  counters?: ResourceCounters;
}

export class SecondaryRunner {
  private disk: DataDisk | undefined;
  private fetcher: Fetcher | undefined;
  private sync: SyncWorker | undefined;
  private replayer: Replayer | undefined;
  private busy: Promise<void> = Promise.resolve();
  private why = '';
  private openError = '';
  private readonly counters: ResourceCounters;
  private readonly fetchRate = new RateWindow();
  private readonly replayRate = new RateWindow();

  constructor(readonly res: string, private readonly ctx: SecondaryContext) {
    this.counters = ctx.counters ?? newResourceCounters();
  }

  get active(): boolean {
    return this.disk !== undefined || this.fetcher !== undefined;
  }

  /** A sync is running: its progress (position, rate) moves without a tree change. */
  get syncing(): boolean {
    return this.sync !== undefined && !this.sync.done;
  }

  /** Bring running work in line with the plan; calls never overlap. */
  reconcile(plan: SecondaryPlan, s: ResourceSnapshot): Promise<void> {
    this.busy = this.busy.then(() => this.apply(plan, s)).catch((err) => {
      failStopOnInvariant(err);
      this.ctx.log('error', `${this.res}: secondary work failed: ${(err as Error).stack ?? err}`);
    });
    return this.busy;
  }

  /** A tree change or new fetched bytes: let the workers look again. */
  nudge(): void {
    this.fetcher?.nudge();
    this.replayer?.nudge();
  }

  private async apply(plan: SecondaryPlan, s: ResourceSnapshot): Promise<void> {
    const { tree, host, log, clock } = this.ctx;
    this.why = plan.why;
    // Stop what must not run first: replay and sync before the disk closes.
    if (!plan.replay && !plan.repairOnly && this.replayer) { await this.replayer.stop(); this.replayer = undefined; }
    if (!plan.replay && plan.repairOnly && this.replayer?.isReplaying) await this.replayer.pause();
    if (!plan.sync && this.sync) { await this.sync.stop(); this.sync = undefined; }
    if (!plan.fetch && this.fetcher) { await this.fetcher.stop(); this.fetcher = undefined; }
    if (!plan.disk && this.disk) {
      await this.disk.close().catch(failStopOnInvariant);
      this.disk = undefined;
      log('info', `${this.res}: secondary detached`);
    }
    if (plan.disk && !this.disk) {
      try {
        this.disk = await DataDisk.open(s.dataPath!);
        this.openError = '';
        log('info', `${this.res}: secondary attached to ${s.dataPath}`);
      } catch (err) {
        failStopOnInvariant(err);
        this.openError = `cannot open ${s.dataPath}: ${(err as Error).message}`;
        return;
      }
    }
    if (plan.fetch && !this.fetcher) {
      this.fetcher = new Fetcher({
        tree, res: this.res, host, peers: this.ctx.peers, rateBytesPerS: this.ctx.fetchRateBytesPerS, log, clock,
        onAppended: (bytes) => { this.counters.fetchedBytes += bytes; this.replayer?.nudge(); },
      });
      this.fetcher.start();
    }
    if (plan.sync && !this.sync && this.disk && s.designatedPrimary && s.sizeBytes !== undefined) {
      this.sync = new SyncWorker({
        tree, res: this.res, host, primary: s.designatedPrimary, disk: this.disk, sizeBytes: s.sizeBytes,
        peers: this.ctx.peers, log, clock, onProgress: () => this.ctx.onStatus(),
        onSynced: countInto(this.counters, 'syncedBytes'),
      });
      this.sync.start();
    }
    if (plan.replay && this.replayer && !this.replayer.isReplaying) this.replayer.start();
    if ((plan.replay || plan.repairOnly) && !this.replayer && this.disk && s.sizeBytes !== undefined) {
      this.replayer = new Replayer({
        tree, res: this.res, host, disk: this.disk, sizeBytes: s.sizeBytes, clock, log: (level, msg) => log(level, `${this.res}: ${msg}`),
        onRefetch: (req) => this.fetcher?.requestRefetch(req.file),
        onStatus: () => this.ctx.onStatus(),
        onReplayed: countInto(this.counters, 'replayedBytes'),
        pollIntervalMs: REPLAY_SAFETY_POLL_MS,
      });
      this.replayer.start({ paused: !plan.replay });
    }
  }

  status(): SecondaryStatus {
    const r = this.replayer?.status;
    const nowMs = this.ctx.clock.monotonicMs();
    return {
      attached: this.disk !== undefined,
      copying: this.fetcher?.active ?? false,
      syncing: this.sync !== undefined && !this.sync.done,
      replaying: r?.isReplaying ?? false,
      replayCode: r ? String(r.replayCode) : '1',
      message: this.openError || (r && r.message !== 'OK' ? r.message : 'OK'),
      fetchRestBytes: this.fetcher?.restBytes() ?? 0,
      replayRestBytes: r?.restBytes ?? 0,
      syncRateBytesPerS: this.sync?.rateBytesPerS ?? 0,
      syncPosBytes: this.sync && !this.sync.done ? this.sync.positionBytes : 0,
      fetchRateBytesPerS: this.fetchRate.sample(nowMs, this.counters.fetchedBytes),
      replayRateBytesPerS: this.replayRate.sample(nowMs, this.counters.replayedBytes),
      replayWait: r?.waitReason ?? '',
      fetchState: this.fetcher?.state ?? 'off',
      why: this.why,
    };
  }

  async stop(): Promise<void> {
    await this.busy;
    await this.apply({ disk: false, fetch: false, sync: false, replay: false, repairOnly: false, why: 'stopping' }, undefined as unknown as ResourceSnapshot);
  }
}
