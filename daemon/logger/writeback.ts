// Background writeback of pending data to the data disk: oldest entries first (so MINPOS can
// advance), written sorted by position with adjacent full pages coalesced into one vectored
// write. The log is made durable before any of its data reaches the disk, so the disk never
// holds a write the durable log lacks (a power loss cannot make the primary's disk diverge from
// what secondaries can fetch).
//
// Two steps with different costs are decoupled: once a batch's pwrites complete, its entries
// leave the index (memory is free again; reads now hit the page cache), and the position they
// reached becomes a candidate. An fdatasync of the data disk, at most every syncIntervalMs or
// as soon as the index runs empty, turns the candidate into the applied position, the replay
// link's MINPOS (docs/design.md §3.5: MINPOS only passes data durable on the disk).
//
// Time: the start delay and the sync interval are timers of the injected Clock (one per
// writeback cycle, never one per write). A failure is fatal for the resource (onError); an
// InvariantError is escalated first (failStopOnInvariant), so it stops marsd.
import { failStopOnInvariant } from '../../common/util/assert.js';
import { systemClock, type Clock, type Timer } from '../../common/util/clock.js';
import { PAGE_BYTES, SECTOR_BYTES, FULL_MASK, PendingIndex, type PageEntry } from './pending-index.js';
import type { DataDisk } from '../../common/disk/data-disk.js';
import { compareLocations, type LogLocation } from './log-location.js';

/** pool tasks (native batches, or vectored writes without the helper) running at once */
const PARALLEL_WRITES = 8;
/** a native batch is split into parallel tasks only when each gets at least this many buffers */
const MIN_BUFFERS_PER_TASK = 512;

export interface WritebackOptions {
  index: PendingIndex;
  disk: DataDisk;
  /** make the log durable up to everything in the index before the disk gets newer data */
  syncLog: () => Promise<void>;
  /** called when the applied position moved (after a data fdatasync) */
  onApplied: () => void;
  /** called when a batch left the index (memory was freed) */
  onWritten: () => void;
  /** the end of everything the logger has written so far (applied once the index is empty) */
  logEnd: () => LogLocation;
  /** where the disk is complete at start */
  appliedAtStart: LogLocation;
  /** the data disk is fdatasync'ed at most this often while writeback keeps running */
  syncIntervalMs: number;
  /** a writeback failure is fatal for the resource */
  onError: (err: Error) => void;
  maxBatchBytes: number;
  /**
   * Writeback waits this long after new data arrives, so overwrites coalesce and small writes
   * do not each cost a log sync and a disk sync, unless `startBytes` are pending.
   */
  delayMs: number;
  startBytes: number;
  /** time for delayMs and syncIntervalMs; default systemClock */
  clock?: Clock;
  /**
   * Make the log durable this long after new data arrived, without waiting for writeback:
   * secondaries may only fetch durable bytes, so this bounds the lag a write without FLUSH
   * adds before it can be fetched. Undefined: only writeback and clients sync the log.
   */
  logSyncDelayMs?: number;
}

/** Write a set of page entries to the disk: sorted, coalesced, in parallel; no fdatasync. */
export async function writePages(disk: DataDisk, entries: PageEntry[]): Promise<void> {
  const sorted = [...entries].sort((a, b) => a.pageNo - b.pageNo);
  const buffers: Buffer[] = [];
  const offsets: number[] = [];
  for (const e of sorted) {
    if (e.mask === FULL_MASK) {
      buffers.push(e.data);
      offsets.push(e.pageNo * PAGE_BYTES);
      continue;
    }
    // A partially valid page: each run of valid sectors on its own.
    let s = 0;
    while (s < PAGE_BYTES / SECTOR_BYTES) {
      if ((e.mask & (1 << s)) === 0) { s++; continue; }
      let t = s;
      while (t < PAGE_BYTES / SECTOR_BYTES && (e.mask & (1 << t)) !== 0) t++;
      buffers.push(e.data.subarray(s * SECTOR_BYTES, t * SECTOR_BYTES));
      offsets.push(e.pageNo * PAGE_BYTES + s * SECTOR_BYTES);
      s = t;
    }
  }
  // Split into sorted slices written in parallel (a disk serves several at once); within a
  // slice the helper writes in order and coalesces neighbours.
  const tasks = Math.max(1, Math.min(PARALLEL_WRITES, Math.floor(buffers.length / MIN_BUFFERS_PER_TASK)));
  const per = Math.ceil(buffers.length / tasks);
  const slices: Promise<void>[] = [];
  for (let i = 0; i < buffers.length; i += per) {
    slices.push(disk.writeMany(buffers.slice(i, i + per), offsets.slice(i, i + per), tasks === 1 ? PARALLEL_WRITES : 1));
  }
  await Promise.all(slices);
}

export class Writeback {
  private running = false;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];
  private failure: Error | undefined;
  /** everything before this is durable on the data disk */
  private appliedLoc: LogLocation;
  /** everything before this is written to the data disk, not yet fdatasync'ed */
  private candidate: LogLocation | undefined;
  private syncTimer: Timer | undefined;
  private syncing: Promise<void> | undefined;
  /** the log sync for peers after new data (see WritebackOptions.logSyncDelayMs) */
  private logSyncTimer: Timer | undefined;
  /** the start delay after new data (see WritebackOptions.delayMs) */
  private timer: Timer | undefined;
  private readonly clock: Clock;

  constructor(private readonly opts: WritebackOptions) {
    this.appliedLoc = opts.appliedAtStart;
    this.clock = opts.clock ?? systemClock;
  }

  get error(): Error | undefined {
    return this.failure;
  }

  /** The replay link's MINPOS: everything before it is durable on the data disk. */
  get applied(): LogLocation {
    return this.appliedLoc;
  }

  /** fdatasync the data disk and move the applied position to what was written before. */
  syncData(): Promise<void> {
    this.syncTimer?.cancel();
    this.syncTimer = undefined;
    if (this.syncing) return this.syncing.then(() => (this.candidate ? this.syncData() : undefined));
    const target = this.candidate;
    if (!target) return Promise.resolve();
    this.candidate = undefined;
    this.syncing = this.opts.disk.datasync().then(() => {
      if (compareLocations(target, this.appliedLoc) > 0) this.appliedLoc = target;
      this.opts.onApplied();
    }, (err) => {
      failStopOnInvariant(err);
      this.failure ??= err as Error;
      this.opts.onError(this.failure);
    }).finally(() => {
      this.syncing = undefined;
    });
    return this.syncing;
  }

  private scheduleSync(now: boolean): void {
    if (now) {
      void this.syncData();
    } else if (!this.syncTimer) {
      this.syncTimer = this.clock.setTimeout(() => {
        this.syncTimer = undefined;
        void this.syncData();
      }, this.opts.syncIntervalMs);
    }
  }

  /** Something was added to the index: write it back soon (now, if a lot is pending). */
  kick(): void {
    this.scheduleLogSync();
    if (this.running || this.stopped || this.failure) return;
    if (this.opts.index.bytesHeld >= this.opts.startBytes) {
      this.startNow();
    } else if (!this.timer) {
      this.timer = this.clock.setTimeout(() => this.startNow(), this.opts.delayMs);
    }
  }

  private scheduleLogSync(): void {
    const delayMs = this.opts.logSyncDelayMs;
    if (delayMs === undefined || this.logSyncTimer || this.stopped || this.failure) return;
    this.logSyncTimer = this.clock.setTimeout(() => {
      this.logSyncTimer = undefined;
      // A failed log sync breaks the log writer: the next write, FLUSH and writeback batch
      // report it. Only an InvariantError must not be lost here.
      this.opts.syncLog().catch(failStopOnInvariant);
    }, delayMs);
  }

  private startNow(): void {
    this.timer?.cancel();
    this.timer = undefined;
    if (this.running || this.stopped || this.failure) return;
    this.running = true;
    setImmediate(() => void this.loop());
  }

  /** Resolves when the index is empty (everything written back and fdatasync'ed). */
  async drain(): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.opts.index.entryCount > 0 || this.running) {
      this.startNow();
      await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    }
    await this.syncData();
    if (this.failure) throw this.failure;
  }

  stop(): void {
    this.stopped = true;
    this.logSyncTimer?.cancel();
    this.logSyncTimer = undefined;
    this.timer?.cancel();
    this.timer = undefined;
    this.syncTimer?.cancel();
    this.syncTimer = undefined;
  }

  private async loop(): Promise<void> {
    const { index, disk } = this.opts;
    try {
      while (!this.stopped && index.entryCount > 0) {
        const batch = index.takeBatch(this.opts.maxBatchBytes);
        await this.opts.syncLog();
        await writePages(disk, batch);
        index.completeBatch(batch);
        this.candidate = index.firstUnapplied() ?? this.opts.logEnd();
        this.scheduleSync(index.entryCount === 0);
        this.opts.onWritten();
      }
    } catch (err) {
      failStopOnInvariant(err);
      this.failure = err as Error;
      this.opts.onError(this.failure);
    } finally {
      this.running = false;
      if (index.entryCount === 0 || this.failure || this.stopped) this.wake(this.idleWaiters.splice(0));
      else if (this.idleWaiters.length > 0) this.startNow();
      else this.kick();
    }
  }

  private wake(list: (() => void)[]): void {
    for (const w of list) w();
  }
}
