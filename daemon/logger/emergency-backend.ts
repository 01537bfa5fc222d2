// The primary's BlockBackend: normally every request goes through the TransactionLogger; in
// emergency mode (the MARS user manual: space levels and emergency mode, /mars is full) writes go straight to the data disk
// and nothing is logged. A client never gets an error because /mars is full: a write whose log
// append hits ENOSPC, or that arrives while logging stops, is written to the disk instead.
//
// Ordering. Entering: the logger ends its logfile at the last complete record and writes back
// everything it logged (fdatasync'ed) before the first unlogged write touches the disk, so a
// logged write can never overwrite a newer unlogged one. Writes arriving meanwhile wait.
// Resuming: unlogged writes in flight finish and the disk is fdatasync'ed before logging
// starts again, so every FLUSH from then on (which syncs only the log) also covers them.
//
// Durability in emergency mode: FUA = pwrite + fdatasync of the data disk; FLUSH = fdatasync
// of the data disk. The same promise as with the log, kept on the disk instead.
//
// Failures: a failed enter() is kept (every later request gets EIO) and its promise, shared by
// whoever waits for the transition, may be dropped by them; so an InvariantError is escalated
// where it happens (failStopOnInvariant), not left to the waiters. The caller of resume() gets
// its error.
import { assert, failStopOnInvariant } from '../../common/util/assert.js';
import { systemClock, type Clock } from '../../common/util/clock.js';
import { BackendError, type BlockBackend } from '../../kernel-shim/backend.js';
import type { DataDisk } from '../../common/disk/data-disk.js';
import { DivertedError, type TransactionLogger } from './transaction-logger.js';
import { SECTOR_BYTES } from './pending-index.js';
import type { LogFn } from '../../common/util/log.js';

const ZERO_CHUNK_BYTES = 1 << 20;

/**
 * For those who only wait for a transition to end: its failure is handled where it happens
 * (enter() keeps it for every later request and escalates an InvariantError, resume() rejects
 * to its caller), so the waiters drop it.
 */
const transitionEnded = (): void => undefined;

/** The primary's write path: logging, or emergency mode and the transitions between them. */
export type LoggingMode = 'logging' | 'entering' | 'direct' | 'resuming';

export interface LogEnded {
  /** the logfile that ended */
  seq: number;
  /** its final length: the versionlink's LOGPOS */
  endPos: number;
  reason: string;
}

export interface EmergencyBackendOptions {
  disk: DataDisk;
  logger: TransactionLogger;
  /**
   * Called while entering emergency mode, after the logfile ended and everything logged is
   * durable on the disk, before the first unlogged write reaches it: the owner writes the
   * final versionlink, the hole and the replay link. A failure is logged, never sent to a client.
   */
  onEnter: (ended: LogEnded) => Promise<void>;
  log: LogFn;
  /** time for sinceMs; default systemClock */
  clock?: Clock;
}

export class EmergencyBackend implements BlockBackend {
  private sizeNow: number;
  private modeNow: LoggingMode = 'logging';
  private current: TransactionLogger;
  private transition: Promise<void> | undefined;
  private writable = true;
  private failure: Error | undefined;
  private directInFlight = 0;
  private directIdleWaiters: (() => void)[] = [];
  /** why emergency mode started (undefined while logging) */
  reason: string | undefined;
  sinceMs: number | undefined;

  constructor(private readonly opts: EmergencyBackendOptions) {
    this.current = opts.logger;
    this.sizeNow = opts.logger.sizeBytes;
  }

  /** The export size: grows with resize (new NBD connections see it), never shrinks. */
  get sizeBytes(): number {
    return this.sizeNow;
  }

  /** resize: the bound of direct writes and of the current logger (a resumed one gets it too). */
  grow(toSizeBytes: number): void {
    assert(Number.isSafeInteger(toSizeBytes) && toSizeBytes >= this.sizeNow, `the export cannot shrink from ${this.sizeNow} to ${toSizeBytes} bytes`);
    this.sizeNow = toSizeBytes;
    this.current.grow(toSizeBytes);
  }

  get mode(): LoggingMode {
    return this.modeNow;
  }

  /** The logger in use (in emergency mode: the one whose logfile ended; it holds nothing). */
  get logger(): TransactionLogger {
    return this.current;
  }

  isWritable(): boolean {
    return this.writable;
  }

  refuseWrites(): void {
    this.writable = false;
    this.current.refuseWrites();
  }

  read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    // In emergency mode the logger's index is empty: its read is a plain disk read.
    return this.current.read(offsetBytes, lengthBytes);
  }

  write(offsetBytes: number, data: Buffer, fua: boolean): Promise<void> {
    return this.route(offsetBytes, data.length,
      (l) => l.write(offsetBytes, data, fua),
      () => this.direct(() => this.opts.disk.write(data, offsetBytes), fua));
  }

  writeZeroes(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    return this.route(offsetBytes, lengthBytes,
      (l) => l.writeZeroes(offsetBytes, lengthBytes, fua),
      () => this.direct(async () => {
        const zeros = Buffer.alloc(Math.min(ZERO_CHUNK_BYTES, lengthBytes));
        for (let done = 0; done < lengthBytes; done += zeros.length) {
          await this.opts.disk.write(zeros.subarray(0, Math.min(zeros.length, lengthBytes - done)), offsetBytes + done);
        }
      }, fua));
  }

  trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    // Advisory: nothing changes on any replica, only FUA's durability is owed.
    return this.route(offsetBytes, lengthBytes,
      (l) => l.trim(offsetBytes, lengthBytes, fua),
      () => (fua ? this.opts.disk.datasync() : Promise.resolve()));
  }

  async flush(): Promise<void> {
    for (;;) {
      this.checkFailed();
      if (this.modeNow === 'logging') {
        const logger = this.current;
        try {
          return await logger.flush();
        } catch (err) {
          this.divertedOrThrow(err as Error, logger);
          continue;
        }
      }
      if (this.modeNow === 'direct') return this.opts.disk.datasync();
      await this.waitTransition();
    }
  }

  /**
   * Start emergency mode (idempotent): end the logfile, write back what was logged, let the
   * owner write the hole, then write to the disk directly.
   */
  enter(reason: string): Promise<void> {
    if (this.modeNow !== 'logging') return this.transition ?? Promise.resolve();
    this.modeNow = 'entering';
    this.reason = reason;
    this.sinceMs = (this.opts.clock ?? systemClock).nowMs();
    this.opts.log('warn', `emergency mode: ${reason}; logging stops, writes go straight to the data disk`);
    const logger = this.current;
    this.transition = (async () => {
      try {
        const ended = await logger.stopLogging();
        try {
          await this.opts.onEnter({ ...ended, reason });
        } catch (err) {
          failStopOnInvariant(err);
          this.opts.log('error', `emergency mode: writing the hole after log ${ended.seq} failed: ${(err as Error).message}`);
        }
        this.modeNow = 'direct';
      } catch (err) {
        failStopOnInvariant(err);
        // The data disk failed while writing back: a real I/O error, the resource goes down.
        this.failure = err as Error;
        throw err;
      }
    })().finally(() => { this.transition = undefined; });
    return this.transition;
  }

  /**
   * Leave emergency mode: wait for unlogged writes in flight, make them durable, then log
   * again through `makeLogger` (a fresh logger on the logfile after the hole).
   */
  resume(makeLogger: () => Promise<TransactionLogger>): Promise<void> {
    if (this.modeNow !== 'direct') return Promise.reject(new Error(`cannot leave emergency mode while ${this.modeNow}`));
    this.modeNow = 'resuming';
    this.transition = (async () => {
      try {
        await this.directIdle();
        await this.opts.disk.datasync();
        const logger = await makeLogger();
        if (!this.writable) logger.refuseWrites();
        this.current = logger;
        this.reason = undefined;
        this.sinceMs = undefined;
        this.modeNow = 'logging';
      } catch (err) {
        this.modeNow = 'direct';
        throw err;
      }
    })().finally(() => { this.transition = undefined; });
    return this.transition;
  }

  /** Role change or shutdown (after refuseWrites): everything durable, the logger stopped. */
  async stop(): Promise<void> {
    this.refuseWrites();
    if (this.modeNow === 'logging' && this.current.outOfSpace) void this.enter('/mars is full (ENOSPC on the logfile) while stopping').catch(transitionEnded);
    if (this.transition) await this.transition.catch(transitionEnded);
    if (this.modeNow === 'logging') {
      try {
        await this.current.stop();
        return;
      } catch (err) {
        if (!this.current.outOfSpace) throw err;
        await this.enter('/mars is full (ENOSPC on the logfile) while stopping');
      }
    }
    await this.directIdle();
    await this.opts.disk.datasync();
    await this.current.stop();
  }

  /** Send a request to the logger, or to the disk in emergency mode; re-route diverted ones. */
  private async route(offsetBytes: number, lengthBytes: number, logged: (l: TransactionLogger) => Promise<void>, direct: () => Promise<void>): Promise<void> {
    for (;;) {
      this.checkFailed();
      if (this.modeNow === 'logging') {
        const logger = this.current;
        try {
          return await logged(logger);
        } catch (err) {
          this.divertedOrThrow(err as Error, logger);
          continue;
        }
      }
      if (this.modeNow === 'direct') {
        this.checkWrite(offsetBytes, lengthBytes);
        return direct();
      }
      await this.waitTransition();
    }
  }

  /**
   * A request failed in the logger. DivertedError means "not logged, write it elsewhere": when
   * it came from the logger in use, /mars is full (or logging is stopping), so emergency mode
   * starts; from an older logger it is simply retried in the current mode. Everything else is
   * the client's answer.
   */
  private divertedOrThrow(err: Error, logger: TransactionLogger): void {
    if (!(err instanceof DivertedError)) throw err;
    if (!this.writable) throw new BackendError('EPERM', 'this host is no longer primary');
    if (logger === this.current && this.modeNow === 'logging') {
      void this.enter(`/mars is full: ${err.message}`).catch(transitionEnded);
    }
  }

  private async waitTransition(): Promise<void> {
    const t = this.transition;
    if (!t) throw new BackendError('EIO', `the write path is ${this.modeNow} without a transition`);
    await t.catch(transitionEnded);
  }

  private async direct(io: () => Promise<void>, fua: boolean): Promise<void> {
    this.directInFlight++;
    try {
      await io();
      if (fua) await this.opts.disk.datasync();
    } finally {
      if (--this.directInFlight === 0) for (const w of this.directIdleWaiters.splice(0)) w();
    }
  }

  private directIdle(): Promise<void> {
    if (this.directInFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.directIdleWaiters.push(resolve));
  }

  private checkFailed(): void {
    if (this.failure) throw new BackendError('EIO', `data disk failed: ${this.failure.message}`);
  }

  private checkWrite(offsetBytes: number, lengthBytes: number): void {
    if (!this.writable) throw new BackendError('EPERM', 'this host is not primary for the resource');
    if (offsetBytes < 0 || lengthBytes < 0 || offsetBytes + lengthBytes > this.sizeBytes) {
      throw new BackendError('EINVAL', `request [${offsetBytes}, +${lengthBytes}) outside the device of ${this.sizeBytes} bytes`);
    }
    if (offsetBytes % SECTOR_BYTES !== 0 || lengthBytes % SECTOR_BYTES !== 0) {
      throw new BackendError('EINVAL', `writes must be aligned to ${SECTOR_BYTES} bytes`);
    }
  }
}
