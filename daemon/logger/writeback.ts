// Background writeback of pending data to the data disk: oldest entries first (so MINPOS can
// advance), written sorted by position with adjacent full pages coalesced into one vectored
// write, then fdatasync'ed before anyone is told the data is applied (DESIGN.md §3.5).
import { PAGE_BYTES, SECTOR_BYTES, FULL_MASK, PendingIndex, type PageEntry } from './pending-index.js';
import type { DataDisk } from '../disk/data-disk.js';

const MAX_RUN_PAGES = 256; // 1 MiB per vectored write
const PARALLEL_WRITES = 8;

export interface WritebackOptions {
  index: PendingIndex;
  disk: DataDisk;
  /** make the log durable up to everything in the index before the disk gets newer data */
  syncLog: () => Promise<void>;
  /** called after each batch is durable on the disk */
  onApplied: () => void;
  /** a writeback failure is fatal for the resource */
  onError: (err: Error) => void;
  maxBatchBytes: number;
  /**
   * Writeback waits this long after new data arrives, so overwrites coalesce and small writes
   * do not each cost a log sync and a disk sync, unless `startBytes` are pending.
   */
  delayMs: number;
  startBytes: number;
}

/** Write a set of page entries to the disk: sorted, coalesced, in parallel; no fdatasync. */
export async function writePages(disk: DataDisk, entries: PageEntry[]): Promise<void> {
  const sorted = [...entries].sort((a, b) => a.pageNo - b.pageNo);
  const jobs: { buffers: Buffer[]; offset: number }[] = [];
  let run: { buffers: Buffer[]; offset: number; nextPage: number } | undefined;
  for (const e of sorted) {
    if (e.mask === FULL_MASK) {
      if (run && run.nextPage === e.pageNo && run.buffers.length < MAX_RUN_PAGES) {
        run.buffers.push(e.data);
        run.nextPage++;
        continue;
      }
      run = { buffers: [e.data], offset: e.pageNo * PAGE_BYTES, nextPage: e.pageNo + 1 };
      jobs.push(run);
      continue;
    }
    run = undefined;
    // A partially valid page: write each run of valid sectors on its own.
    let s = 0;
    while (s < PAGE_BYTES / SECTOR_BYTES) {
      if ((e.mask & (1 << s)) === 0) { s++; continue; }
      let t = s;
      while (t < PAGE_BYTES / SECTOR_BYTES && (e.mask & (1 << t)) !== 0) t++;
      jobs.push({ buffers: [e.data.subarray(s * SECTOR_BYTES, t * SECTOR_BYTES)], offset: e.pageNo * PAGE_BYTES + s * SECTOR_BYTES });
      s = t;
    }
  }
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const job = jobs[next++]!;
      await disk.writev(job.buffers, job.offset);
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL_WRITES, jobs.length) }, worker));
}

export class Writeback {
  private running = false;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];
  private progressWaiters: (() => void)[] = [];
  private failure: Error | undefined;

  constructor(private readonly opts: WritebackOptions) {}

  get error(): Error | undefined {
    return this.failure;
  }

  private timer: NodeJS.Timeout | undefined;

  /** Something was added to the index: write it back soon (now, if a lot is pending). */
  kick(): void {
    if (this.running || this.stopped || this.failure) return;
    if (this.opts.index.bytesHeld >= this.opts.startBytes) {
      this.startNow();
    } else if (!this.timer) {
      this.timer = setTimeout(() => this.startNow(), this.opts.delayMs);
    }
  }

  private startNow(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.running || this.stopped || this.failure) return;
    this.running = true;
    setImmediate(() => void this.loop());
  }

  /** Resolves after the next batch completes (memory backpressure waits on this). */
  progress(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve) => this.progressWaiters.push(resolve));
  }

  /** Resolves when the index is empty (everything written back and fdatasync'ed). */
  async drain(): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.opts.index.entryCount === 0 && !this.running) return;
    this.startNow();
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    if (this.failure) throw this.failure;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async loop(): Promise<void> {
    const { index, disk } = this.opts;
    try {
      while (!this.stopped && index.entryCount > 0) {
        const batch = index.takeBatch(this.opts.maxBatchBytes);
        await this.opts.syncLog();
        await writePages(disk, batch);
        await disk.datasync();
        index.completeBatch(batch);
        this.opts.onApplied();
        this.wake(this.progressWaiters.splice(0));
      }
    } catch (err) {
      this.failure = err as Error;
      this.opts.onError(this.failure);
    } finally {
      this.running = false;
      this.wake(this.progressWaiters.splice(0));
      if (index.entryCount === 0 || this.failure || this.stopped) this.wake(this.idleWaiters.splice(0));
      else if (this.idleWaiters.length > 0) this.startNow();
      else this.kick();
    }
  }

  private wake(list: (() => void)[]): void {
    for (const w of list) w();
  }
}
