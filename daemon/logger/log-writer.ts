// Appends records to one logfile `log-SEQ-HOST` with group commit: records of all requests that
// arrive while a write or an fdatasync is in progress go out together in the next single
// vectored write, and every durable waiter of that write shares one fdatasync (docs/design.md §3.1).
// The write itself runs on the event loop while such writes are fast (inline-append.ts); the
// fdatasync always runs on libuv's pool.
//
// Per request the writer calls `onWritten` in log order right after the write() returns: the
// logger inserts the data into its pending index there, so the index never holds data that is
// not in the logfile, and writeback can never get ahead of the log.
//
// Failure: the first I/O error breaks the writer for good (every waiter and every later append
// gets the LogWriterError). An InvariantError inside the loops (an onWritten callback, an
// assertion) breaks it the same way and is escalated (failStopOnInvariant): it stops marsd
// instead of reaching clients as EIO. The writer has no timers: it waits for events only.
import { TREE_FILE_MODE } from '../../common/tree/modes.js';
import { promises as fsp, constants as fsc, writevSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { inlineAppends } from './inline-append.js';
import { GrowthWaiters } from './growth-waiters.js';
import { assert, failStopOnInvariant } from '../../common/util/assert.js';
import {
  encodeRecord, encodeZeroRangePayload, recordBytes, RecordCode, MAX_RECORD_PAYLOAD_BYTES, MAX_WHOLE_WRITE_BYTES, RECORD_FLAG_MORE,
} from '../../common/log/record.js';

const BATCH_CAPACITY_BYTES = 1 << 20;
/** Batch buffers kept for reuse instead of allocating a new 1 MiB buffer per batch. */
const SPARE_BATCHES = 8;
const MAX_IOVECS = 512;
/** A ZeroRange record covers at most this much, so replay work per record stays bounded. */
export const MAX_ZERO_RECORD_BYTES = 1 << 20;

interface Waiter {
  endPos: number;
  durable: boolean;
  onWritten: (() => void) | undefined;
  resolve: () => void;
  reject: (err: Error) => void;
}

interface Batch {
  buf: Buffer;
  used: number;
  waiters: Waiter[];
}

export class LogWriterError extends Error {
  override name = 'LogWriterError';
  /** errno code of the I/O error that broke the writer (ENOSPC, EIO, ...), if there was one */
  constructor(message: string, readonly causeCode?: string) {
    super(message);
  }
}

/** Error codes that mean "the filesystem of /mars is full": emergency mode, never a client error. */
export function isSpaceErrorCode(code: string | undefined): boolean {
  return code === 'ENOSPC' || code === 'EDQUOT';
}

export class LogWriter {
  private batches: Batch[] = [];
  private spare: Buffer[] = [];
  private nextSeqNr = 1;
  /** end of everything encoded so far (queued, maybe not yet written) */
  private appendedEnd: number;
  private writtenEnd: number;
  private durableEnd: number;
  private flushWaiters: { target: number; resolve: () => void; reject: (e: Error) => void }[] = [];
  private syncWaiters: Waiter[] = [];
  private writing = false;
  private syncing = false;
  /** finish() waiting for the write and sync loops to settle */
  private loopsIdleWaiters: (() => void)[] = [];
  private failure: Error | undefined;
  private closed = false;
  private readonly growth = new GrowthWaiters();
  /** Called each time an fdatasync moved the durable end (the transaction logger watches for a resumed log). */
  onDurableMoved: (() => void) | undefined;

  private constructor(readonly path: string, readonly seq: number, private readonly handle: fsp.FileHandle, startPos: number) {
    this.appendedEnd = this.writtenEnd = this.durableEnd = startPos;
  }

  /** Open a fresh, empty logfile (created here or by `marsadm log-rotate`). */
  static async openFresh(path: string, seq: number): Promise<LogWriter> {
    const handle = await fsp.open(path, fsc.O_WRONLY | fsc.O_CREAT, TREE_FILE_MODE);
    const st = await handle.stat();
    if (st.size !== 0) {
      await handle.close();
      throw new LogWriterError(`${path} is not empty: a primary never appends to an existing logfile`);
    }
    return new LogWriter(path, seq, handle, 0);
  }

  /** Byte offset where the next record will start. */
  get nextPos(): number {
    return this.appendedEnd;
  }

  get durablePos(): number {
    return this.durableEnd;
  }

  /**
   * Resolves once the durable end is beyond mark, the writer ended (closed, finished, failed),
   * or signal aborted. False at once when the writer has ended: there is nothing to wait for.
   */
  async durableBeyond(mark: number, signal: AbortSignal): Promise<boolean> {
    if (this.growth.isEnded) return false;
    if (this.durableEnd <= mark) await this.growth.wait(mark, signal);
    return true;
  }

  get writtenPos(): number {
    return this.writtenEnd;
  }

  get failed(): Error | undefined {
    return this.failure;
  }

  /** The writer broke because /mars is full (not because of an I/O error). */
  get outOfSpace(): boolean {
    return this.failure instanceof LogWriterError && isSpaceErrorCode(this.failure.causeCode);
  }

  /**
   * Log a write of `data` at `devicePos`, split into records of at most 4 KiB. Every record
   * but the last carries RECORD_FLAG_MORE, so a replica applies the write whole or not at all
   * (a write beyond MAX_WHOLE_WRITE_BYTES, which the NBD server never passes, in such parts).
   */
  appendWrite(devicePos: number, data: Buffer, stampUs: number, durable: boolean, onWritten?: () => void): Promise<void> {
    this.checkUsable();
    const sec = Math.floor(stampUs / 1_000_000);
    const nsec = (stampUs % 1_000_000) * 1000;
    for (let done = 0; done < data.length || (data.length === 0 && done === 0); done += MAX_RECORD_PAYLOAD_BYTES) {
      const end = Math.min(done + MAX_RECORD_PAYLOAD_BYTES, data.length);
      const more = end < data.length && end % MAX_WHOLE_WRITE_BYTES !== 0;
      this.encode(devicePos + done, RecordCode.WriteNew, sec, nsec, data.subarray(done, end), more ? RECORD_FLAG_MORE : 0);
      if (data.length === 0) break;
    }
    return this.enqueueWaiter(durable, onWritten);
  }

  /** Log that [devicePos, +lengthBytes) reads as zeros (our ZeroRange record). */
  appendZeroes(devicePos: number, lengthBytes: number, stampUs: number, durable: boolean, onWritten?: () => void): Promise<void> {
    this.checkUsable();
    const sec = Math.floor(stampUs / 1_000_000);
    const nsec = (stampUs % 1_000_000) * 1000;
    for (let done = 0; done < lengthBytes; done += MAX_ZERO_RECORD_BYTES) {
      const n = Math.min(MAX_ZERO_RECORD_BYTES, lengthBytes - done);
      this.encode(devicePos + done, RecordCode.ZeroRange, sec, nsec, encodeZeroRangePayload(n), 0);
    }
    return this.enqueueWaiter(durable, onWritten);
  }

  /** Resolves when every record appended before the call is durable. */
  flush(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.durableEnd >= this.appendedEnd) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.flushWaiters.push({ target: this.appendedEnd, resolve, reject });
      this.kick();
    });
  }

  /** Flush, then close the file. The writer cannot be used afterwards. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (!this.failure) await this.flush();
    this.closed = true;
    this.growth.end();
    await this.handle.close();
  }

  /**
   * Emergency mode: end this logfile at the last record that was written completely, whether
   * or not the writer failed (ENOSPC). That part is made durable; bytes of a partly written
   * batch after it are cut off, so the file ends cleanly for fetchers and for a later recovery.
   * Returns the final length (the versionlink's LOGPOS). Never throws: with the disk full, the
   * best possible end is still the answer.
   */
  async finish(): Promise<number> {
    // A failed flush broke the writer; the end is decided below all the same.
    if (!this.failure && !this.closed) await this.flush().catch(failStopOnInvariant);
    // A write or sync that is still running settles first (they end quickly after a failure).
    while (this.writing || this.syncing) await new Promise<void>((r) => this.loopsIdleWaiters.push(r));
    if (this.closed) return this.durableEnd;
    let end = this.writtenEnd;
    try {
      await this.handle.datasync();
    } catch (err) {
      failStopOnInvariant(err);
      end = this.durableEnd; // what the last successful fdatasync covered
    }
    try {
      const st = await this.handle.stat();
      if (st.size > end) {
        await this.handle.truncate(end);
        await this.handle.datasync();
      }
    } catch (err) {
      failStopOnInvariant(err); // else: the bytes after LOGPOS are never served nor replayed
    }
    this.durableEnd = end;
    this.closed = true;
    this.growth.end();
    await this.handle.close().catch(failStopOnInvariant); // the end is durable; nothing to lose
    return end;
  }

  private checkUsable(): void {
    if (this.failure) throw this.failure;
    if (this.closed) throw new LogWriterError(`${this.path} is closed`);
  }

  private encode(devicePos: number, code: RecordCode, sec: number, nsec: number, payload: Buffer, flags: number): void {
    const size = recordBytes(payload.length);
    let batch = this.batches[this.batches.length - 1];
    if (!batch || batch.used + size > batch.buf.length) {
      batch = { buf: this.spare.pop() ?? Buffer.allocUnsafeSlow(BATCH_CAPACITY_BYTES), used: 0, waiters: [] };
      this.batches.push(batch);
    }
    const written = encodeRecord(batch.buf, batch.used, {
      devicePos, code, stampSec: sec, stampNsec: nsec, seqNr: this.nextSeqNr++, payload, flags,
    });
    assert(written === size, 'encodeRecord wrote an unexpected length');
    batch.used += size;
    this.appendedEnd += size;
  }

  private enqueueWaiter(durable: boolean, onWritten: (() => void) | undefined): Promise<void> {
    const batch = this.batches[this.batches.length - 1];
    assert(batch !== undefined, 'a waiter needs the batch holding its records');
    return new Promise((resolve, reject) => {
      batch.waiters.push({ endPos: this.appendedEnd, durable, onWritten, resolve, reject });
      this.kick();
    });
  }

  private kick(): void {
    if (!this.writing && this.batches.length > 0) {
      this.writing = true;
      // Defer to the end of this turn so requests arriving together share one write.
      setImmediate(() => void this.writeLoop());
    }
    if (!this.syncing && this.needsSync()) {
      this.syncing = true;
      setImmediate(() => void this.syncLoop());
    }
  }

  private needsSync(): boolean {
    return this.syncWaiters.length > 0 || this.flushWaiters.some((w) => w.target > this.durableEnd);
  }

  /**
   * Writes and fdatasyncs run concurrently: appends never wait for a sync. A sync covers what
   * was written when it started; waiters whose records were written later wait for the next
   * one (group commit: everyone who queued up during a sync shares the next).
   */
  private async writeLoop(): Promise<void> {
    try {
      while (this.batches.length > 0 && !this.failure) await this.writeQueued();
    } catch (err) {
      failStopOnInvariant(err);
      this.fail(err as Error);
    } finally {
      this.writing = false;
      if (!this.failure) this.kick();
      this.wakeIfIdle();
    }
  }

  private async syncLoop(): Promise<void> {
    try {
      while (this.needsSync() && !this.failure) {
        const target = this.writtenEnd;
        if (target <= this.durableEnd) {
          // Everything waiting is not written yet: the write loop kicks us again.
          break;
        }
        await this.handle.datasync();
        this.durableEnd = target;
        this.growth.moved(target);
        this.onDurableMoved?.();
        const stillWaiting: Waiter[] = [];
        for (const w of this.syncWaiters) (w.endPos <= target ? w.resolve() : stillWaiting.push(w));
        this.syncWaiters = stillWaiting;
        this.flushWaiters = this.flushWaiters.filter((w) => (w.target <= target ? (w.resolve(), false) : true));
      }
    } catch (err) {
      failStopOnInvariant(err);
      this.fail(err as Error);
    } finally {
      this.syncing = false;
      if (!this.failure && this.needsSync() && this.writtenEnd > this.durableEnd) this.kick();
      this.wakeIfIdle();
    }
  }

  private wakeIfIdle(): void {
    if (this.writing || this.syncing || this.loopsIdleWaiters.length === 0) return;
    for (const w of this.loopsIdleWaiters.splice(0)) w();
  }

  private async writeQueued(): Promise<void> {
    const taken = this.batches.splice(0, this.batchesPerWrite());
    const buffers = taken.map((b) => b.buf.subarray(0, b.used));
    const total = buffers.reduce((n, b) => n + b.length, 0);
    let done = 0;
    try {
      while (done < total) {
        const rest = done === 0 ? buffers : [Buffer.concat(buffers).subarray(done)];
        const bytesWritten = await this.writeAt(rest, total - done, this.writtenEnd + done);
        if (bytesWritten === 0) throw new LogWriterError(`${this.path}: write made no progress`);
        done += bytesWritten;
      }
    } catch (err) {
      // Not written (or only partly): these waiters fail with everything queued after them.
      this.batches.unshift(...taken);
      throw err;
    }
    this.writtenEnd += total;
    for (const batch of taken) if (this.spare.length < SPARE_BATCHES) this.spare.push(batch.buf);
    try {
      for (const batch of taken) {
        for (const w of batch.waiters) {
          w.onWritten?.();
          if (w.durable) this.syncWaiters.push(w);
          else w.resolve();
        }
      }
    } catch (err) {
      // An onWritten callback failed (a bug): the writer breaks, and fail() must reach the
      // waiters of this write not yet settled too (for settled ones the rejection is a no-op).
      this.batches.unshift(...taken);
      throw err;
    }
    if (!this.syncing && this.needsSync()) this.kick();
  }

  /**
   * How many queued batches one write takes: at most MAX_IOVECS, and ending with a batch that
   * ends a write request (it holds that request's waiter). So writtenEnd, every durable end and
   * the end a peer may copy fall between write requests, never between their records.
   */
  private batchesPerWrite(): number {
    let n = Math.min(MAX_IOVECS, this.batches.length);
    while (n > 1 && this.batches[n - 1]!.waiters.length === 0) n--;
    return n;
  }

  /** One vectored write, on the event loop while that is fast (inline-append.ts), else the pool. */
  private async writeAt(buffers: Buffer[], bytes: number, pos: number): Promise<number> {
    const startMs = performance.now();
    if (!inlineAppends.inline(bytes, startMs)) return (await this.handle.writev(buffers, pos)).bytesWritten;
    const written = writevSync(this.handle.fd, buffers, pos);
    inlineAppends.took(startMs, performance.now());
    return written;
  }

  private fail(err: Error): void {
    this.failure = new LogWriterError(`logfile ${this.path} failed: ${err.message}`, (err as NodeJS.ErrnoException).code);
    for (const batch of this.batches) for (const w of batch.waiters) w.reject(this.failure);
    for (const w of this.syncWaiters) w.reject(this.failure);
    for (const w of this.flushWaiters) w.reject(this.failure);
    this.batches = [];
    this.syncWaiters = [];
    this.flushWaiters = [];
    this.growth.end();
  }
}
