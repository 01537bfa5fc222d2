// The primary's write path (the MARS user manual: architecture; writing the log): every write is appended to the current
// logfile, entered into the pending index (which serves reads), acknowledged per NBD semantics,
// and written back to the data disk in the background. This class is the BlockBackend the NBD
// export talks to; the control loop owns its lifecycle (start after recovery, rotate, stop).
//
// Order per write: admission (memory, admission.ts) -> log append (log-writer.ts) -> index
// (in log order, in the writer's onWritten) -> reply -> writeback (writeback.ts) after the log
// is durable. An InvariantError is never diverted nor mapped to a client error: it passes up
// unchanged (the NBD server escalates it). Writeback's timers run on opts.timeClock.
import { BackendError, type BlockBackend } from '../../kernel-shim/backend.js';
import { assert, InvariantError } from '../../common/util/assert.js';
import { systemClock, type Clock } from '../../common/util/clock.js';
import { LogResumeEdge } from './log-resume.js';
import { allocTransient } from '../../common/util/slab.js';
import type { LamportClock } from '../../common/tree/lamport.js';
import type { DataDisk } from '../../common/disk/data-disk.js';
import { LogWriter } from './log-writer.js';
import { PendingIndex, SECTOR_BYTES } from './pending-index.js';
import { Writeback } from './writeback.js';
import { Admission } from './admission.js';
import type { LogLocation } from './log-location.js';

/** How long writeback lets data collect before it starts (unless a quarter of the limit is pending). */
export const WRITEBACK_DELAY_MS = 200;
/**
 * A plain write (no FLUSH, no FUA) is made durable in the log this long after it arrived, so
 * secondaries can fetch it without waiting for writeback's delay (replication lag).
 */
export const LOG_SYNC_FOR_PEERS_MS = 50;
/**
 * Under continuous writeback the data disk is fdatasync'ed (and MINPOS moved) this often; in
 * between, pages overwritten again coalesce in the page cache instead of being forced to disk.
 */
export const DATA_SYNC_INTERVAL_MS = 5000;

/**
 * The logger does not take this request: it stopped logging (emergency mode) or /mars is full.
 * The caller (EmergencyBackend) writes it straight to the data disk instead; a client never
 * sees this error.
 */
export class DivertedError extends Error {
  override name = 'DivertedError';
}

const notPrimary = () => new BackendError('EPERM', 'this host is no longer primary');
const notLogging = () => new DivertedError('emergency mode: not logging');

export interface TransactionLoggerOptions {
  disk: DataDisk;
  sizeBytes: number;
  /** stamps of the log records */
  clock: LamportClock;
  /** time for writeback's delay and data-sync interval; default systemClock */
  timeClock?: Clock;
  /** pending (not yet written back) data above this makes new writes wait */
  memLimitBytes: number;
  /** first logfile to append to (fresh and empty) */
  writer: LogWriter;
  /** a fatal error (log or disk I/O): the resource must go down and say why */
  onFatal: (err: Error) => void;
  /** bytes of a write about to be logged (metrics counter; must not throw) */
  onLogged?: (bytes: number) => void;
  /** writeback made progress: the replay link may advance */
  onApplied?: () => void;
  /** a log append failed because /mars is full: emergency mode must start */
  onOutOfSpace?: () => void;
  /** the durable end moved after a quiet time: tell the peers (log-resume.ts) */
  onLogResumed?: () => void;
}

export interface ReplayPosition {
  seq: number;
  minPos: number;
  lenBytes: number;
}

export class TransactionLogger implements BlockBackend {
  private sizeNow: number;
  private readonly index = new PendingIndex();
  private readonly writeback: Writeback;
  private writer: LogWriter;
  /** logfiles rotated away from whose data is not yet all written back: seq -> end */
  private readonly retiredEnds = new Map<number, number>();
  private rotating: Promise<void> | undefined;
  private writable = true;
  /** emergency mode: new writes are not logged but diverted to the caller */
  private diverted = false;
  /** stopLogging() ended the logfile at this length */
  private logEnd: Promise<number> | undefined;
  private readonly admission: Admission;
  private readonly resume: LogResumeEdge;

  constructor(private readonly opts: TransactionLoggerOptions) {
    this.sizeNow = opts.sizeBytes;
    this.writer = opts.writer;
    this.resume = new LogResumeEdge(opts.timeClock ?? systemClock, opts.onLogResumed);
    this.writer.onDurableMoved = () => this.resume.moved();
    this.admission = new Admission({
      memLimitBytes: opts.memLimitBytes,
      indexedBytes: () => this.index.bytesHeld,
      gate: () => (this.rotating ? 'hold' : !this.writable ? notPrimary : this.diverted ? notLogging : 'open'),
      onShort: () => this.writeback.kick(),
    });
    this.writeback = new Writeback({
      index: this.index,
      disk: opts.disk,
      syncLog: () => this.syncLog(),
      onWritten: () => this.admission.pump(),
      onApplied: () => {
        this.pruneRetired();
        opts.onApplied?.();
      },
      logEnd: () => ({ seq: this.writer.seq, pos: this.writer.writtenPos }),
      appliedAtStart: { seq: opts.writer.seq, pos: opts.writer.nextPos },
      syncIntervalMs: DATA_SYNC_INTERVAL_MS,
      onError: (err) => this.fatal(err),
      maxBatchBytes: Math.max(4 << 20, Math.min(64 << 20, Math.floor(opts.memLimitBytes / 4))),
      delayMs: WRITEBACK_DELAY_MS,
      logSyncDelayMs: LOG_SYNC_FOR_PEERS_MS,
      startBytes: Math.floor(opts.memLimitBytes / 4),
      clock: opts.timeClock,
    });
  }

  get currentSeq(): number {
    return this.writer.seq;
  }

  /**
   * End of a logfile this logger rotated away from and still remembers (its data is not all
   * written back yet), else undefined. Between a rotation and the final versionlink of the old
   * logfile this is the only place that knows its length (peers are offered it from here).
   */
  retiredEnd(seq: number): number | undefined {
    return this.retiredEnds.get(seq);
  }

  /** The logfile numbers retiredEnd knows (the listing asks only these and currentSeq). */
  retiredSeqs(): IterableIterator<number> {
    return this.retiredEnds.keys();
  }

  /** End of the durable part of the current logfile (versionlink LOGPOS, fetch limit). */
  get durablePos(): number {
    return this.writer.durablePos;
  }

  /**
   * Wait until logfile seq is durable beyond mark, has ended, or signal aborts; false at once
   * when this logger does not write seq (any more): then there is nothing to wait for.
   */
  durableBeyond(seq: number, mark: number, signal: AbortSignal): Promise<boolean> {
    return seq === this.writer.seq ? this.writer.durableBeyond(mark, signal) : Promise.resolve(false);
  }

  /** Memory held for writes: pending writeback data plus admitted, not yet logged writes. */
  get pendingBytes(): number {
    return this.admission.pendingBytes;
  }

  /** Logged bytes not yet written back to the disk (marsadm view-writeback-rest). */
  writebackRestBytes(): number {
    const from = this.replayPosition();
    let rest = 0;
    for (const [seq, end] of this.retiredEnds) if (seq >= from.seq) rest += seq === from.seq ? end - from.minPos : end;
    rest += this.writer.seq === from.seq ? this.writer.writtenPos - from.minPos : this.writer.writtenPos;
    return Math.max(0, rest);
  }

  /** Where the replay link points: everything before MINPOS is durable on the disk. */
  replayPosition(): ReplayPosition {
    const first = this.writeback.applied;
    const end = first.seq === this.writer.seq ? this.writer.writtenPos : this.retiredEnds.get(first.seq) ?? first.pos;
    return { seq: first.seq, minPos: first.pos, lenBytes: Math.max(0, end - first.pos) };
  }

  /** Forget rotated-away logfiles whose data is now durable on the disk. */
  private pruneRetired(): void {
    const from = this.writeback.applied.seq;
    for (const seq of this.retiredEnds.keys()) if (seq < from) this.retiredEnds.delete(seq);
  }

  isWritable(): boolean {
    return this.writable;
  }

  /** The logfile cannot take more records because /mars is full. */
  get outOfSpace(): boolean {
    return this.writer.outOfSpace;
  }

  /** Stop accepting writes (role change, shutdown): they get EPERM from now on. */
  refuseWrites(): void {
    this.writable = false;
    this.admission.pump();
  }

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    this.checkRange(offsetBytes, lengthBytes);
    const found = this.index.collect(offsetBytes, lengthBytes);
    const out = allocTransient(lengthBytes);
    try {
      await this.opts.disk.read(out, offsetBytes);
    } catch (err) {
      this.index.abandonCollected(found);
      throw err;
    }
    this.index.applyCollected(found, out, offsetBytes);
    return out;
  }

  async write(offsetBytes: number, data: Buffer, fua: boolean): Promise<void> {
    this.checkWrite(offsetBytes, data.length);
    if (data.length === 0) return fua ? this.flush() : undefined;
    const admitted = this.admission.admit(data.length);
    const release = this.admission.releaseOnce(typeof admitted === 'number' ? admitted : await admitted);
    this.checkDiverted(release);
    const writer = this.writer;
    const at: LogLocation = { seq: writer.seq, pos: writer.nextPos };
    try {
      await writer.appendWrite(offsetBytes, data, this.opts.clock.now(), fua, () => {
        this.index.put(offsetBytes, data.length, data, at);
        release();
      });
    } catch (err) {
      release();
      throw this.appendFailure(err as Error);
    }
    this.opts.onLogged?.(data.length);
    this.writeback.kick();
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    this.checkWrite(offsetBytes, lengthBytes);
    if (lengthBytes === 0) return fua ? this.flush() : undefined;
    const admitted = this.admission.admit(0);
    const release = this.admission.releaseOnce(typeof admitted === 'number' ? admitted : await admitted);
    this.checkDiverted(release);
    const writer = this.writer;
    const at: LogLocation = { seq: writer.seq, pos: writer.nextPos };
    try {
      await writer.appendZeroes(offsetBytes, lengthBytes, this.opts.clock.now(), fua, () => {
        this.index.put(offsetBytes, lengthBytes, undefined, at);
        release();
      });
    } catch (err) {
      release();
      throw this.appendFailure(err as Error);
    }
    this.opts.onLogged?.(lengthBytes);
    this.writeback.kick();
  }

  /** TRIM is advisory in NBD: we accept it and change nothing, so all replicas stay identical. */
  async trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    this.checkWrite(offsetBytes, lengthBytes);
    if (fua) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.rotating) await this.rotating;
    try {
      await this.writer.flush();
    } catch (err) {
      throw this.appendFailure(err as Error);
    }
  }

  /**
   * Emergency mode: stop logging without refusing writes. Writes not yet logged are diverted
   * (DivertedError: the caller writes them to the disk), the logfile ends at its last complete
   * record (durable; see LogWriter.finish), and everything logged is written back and
   * fdatasync'ed, so the disk holds every logged write before the first unlogged one reaches
   * it. Works whether or not the logfile broke with ENOSPC. Returns where the logfile ended.
   */
  async stopLogging(): Promise<{ seq: number; endPos: number }> {
    this.diverted = true;
    this.admission.pump();
    if (this.rotating) await this.rotating;
    this.logEnd ??= this.writer.finish();
    const endPos = await this.logEnd;
    await this.writeback.drain();
    this.writeback.stop();
    return { seq: this.writer.seq, endPos };
  }

  /** Switch appends to a fresh logfile; the old one is flushed first so it ends complete. */
  async rotate(next: LogWriter): Promise<{ oldSeq: number; oldEnd: number }> {
    assert(next.seq === this.writer.seq + 1, `rotation must go to the next logfile number (${this.writer.seq} -> ${next.seq})`);
    assert(this.rotating === undefined, 'one rotation at a time');
    assert(!this.diverted, 'no rotation in emergency mode (the logfile has ended)');
    const old = this.writer;
    let release!: () => void;
    this.rotating = new Promise((r) => (release = r));
    try {
      await old.close();
      this.retiredEnds.set(old.seq, old.writtenPos);
      this.writer = next;
      next.onDurableMoved = () => this.resume.moved();
      return { oldSeq: old.seq, oldEnd: old.writtenPos };
    } finally {
      this.rotating = undefined;
      release();
      this.admission.pump();
    }
  }

  /** Refuse new writes, make everything durable and written back, close the logfile. */
  async stop(): Promise<void> {
    this.writable = false;
    this.admission.pump();
    if (this.diverted) return; // stopLogging() already wrote everything back and ended the logfile
    if (this.rotating) await this.rotating;
    await this.writer.flush();
    await this.writeback.drain();
    this.writeback.stop();
    await this.writer.close();
  }

  /** Wait for writeback to finish everything pending (tests, log-rotate, handover). */
  async drain(): Promise<void> {
    await this.flush();
    await this.writeback.drain();
  }

  /**
   * Writeback makes the log durable before the disk gets the data. When /mars is full the
   * writer is broken, but every record whose data is in the index was written completely:
   * stopLogging() (started via onOutOfSpace) makes that part durable, and writeback goes on.
   */
  private async syncLog(): Promise<void> {
    if (this.rotating) await this.rotating;
    if (this.logEnd) {
      await this.logEnd;
      return;
    }
    try {
      await this.writer.flush();
    } catch (err) {
      if (!this.writer.outOfSpace || err instanceof InvariantError) throw err;
      this.opts.onOutOfSpace?.();
      this.logEnd ??= this.writer.finish();
      await this.logEnd;
    }
  }

  /** An append or log flush failed: because /mars is full, the request is diverted. */
  private appendFailure(err: Error): Error {
    if (err instanceof DivertedError || err instanceof InvariantError) return err;
    if (this.writer.outOfSpace) {
      this.opts.onOutOfSpace?.();
      return new DivertedError(`/mars is full: ${err.message}`);
    }
    return err;
  }

  /** After waiting for admission: emergency mode may have started meanwhile. */
  private checkDiverted(release: () => void): void {
    if (!this.diverted && !this.writer.outOfSpace) return;
    release();
    throw new DivertedError('emergency mode: not logging');
  }

  /** The device size; it only grows (resize), so a request once inside stays inside. */
  get sizeBytes(): number {
    return this.sizeNow;
  }

  grow(toSizeBytes: number): void {
    assert(Number.isSafeInteger(toSizeBytes) && toSizeBytes >= this.sizeNow, `the logger cannot shrink from ${this.sizeNow} to ${toSizeBytes} bytes`);
    this.sizeNow = toSizeBytes;
  }

  private checkRange(offsetBytes: number, lengthBytes: number): void {
    if (offsetBytes < 0 || lengthBytes < 0 || offsetBytes + lengthBytes > this.sizeBytes) {
      throw new BackendError('EINVAL', `request [${offsetBytes}, +${lengthBytes}) outside the device of ${this.sizeBytes} bytes`);
    }
  }

  private checkWrite(offsetBytes: number, lengthBytes: number): void {
    if (!this.writable) throw new BackendError('EPERM', 'this host is not primary for the resource');
    this.checkRange(offsetBytes, lengthBytes);
    if (offsetBytes % SECTOR_BYTES !== 0 || lengthBytes % SECTOR_BYTES !== 0) {
      throw new BackendError('EINVAL', `writes must be aligned to ${SECTOR_BYTES} bytes`);
    }
    if (this.diverted || this.writer.outOfSpace) throw new DivertedError('emergency mode: not logging');
    const failure = this.writer.failed ?? this.writeback.error;
    if (failure) throw new BackendError('EIO', failure.message);
  }

  private fatal(err: Error): void {
    this.writable = false;
    this.admission.pump();
    this.opts.onFatal(err);
  }
}
