// The primary side of one resource on this host (an imperative shell): it carries out what the
// plan says (plan.ts): start the primary role after crash recovery, rotate the logfile, make the
// next one, step down; enter and leave emergency mode with its hole in the logfile numbering.
// It owns the data disk, the transaction logger and the NBD export while the role runs, and
// keeps the replay link and versionlink of its own logfile current.
//
// Invariants: the phase moves down → starting → primary → stopping → down (or → failed, which
// a later start leaves); a logfile is never appended to once another one started (rotate opens
// a fresh, empty file and asserts that it is the next number); in emergency mode no rotation and
// no new logfile happens: the logfile after the hole is current and stays empty until logging
// resumes. The caller (ResourceRunner) never runs two of these operations at a time.
import { TREE_FILE_MODE } from '../../common/tree/modes.js';
import { countInto } from './rate-window.js';
import type { ResourceCounters } from '../../common/util/metrics-recorder.js';
import { closeSync, constants as fsc, openSync } from 'node:fs';
import type { TreeStore } from '../../common/tree/store.js';
import { resPaths, resourceDir } from '../../common/tree/paths.js';
import type { NbdServer } from '../../kernel-shim/nbd-server.js';
import { DataDisk } from '../../common/disk/data-disk.js';
import { LogWriter } from '../logger/log-writer.js';
import { TransactionLogger } from '../logger/transaction-logger.js';
import { EmergencyBackend, type LogEnded, type LoggingMode } from '../logger/emergency-backend.js';
import { recoverPrimary, RecoveryError } from '../replay/recover-primary.js';
import { REPLAY_STOP_CODE } from '../replay/switchover.js';
import { raiseMaxnr, writeReplayLink, writeVersionLink } from '../../common/resource/links.js';
import { PrimaryLinks } from './primary-links.js';
import type { ResourceSnapshot } from '../../common/resource/snapshot.js';
import { logName } from '../../common/tree/log-names.js';
import { assert, failStopOnInvariant } from '../../common/util/assert.js';
import type { Clock } from '../../common/util/clock.js';
import type { LogFn } from '../../common/util/log.js';
import type { Phase } from './decide.js';
import type { AppHookRunner } from './app-hook-runner.js';
import { planHole, writeHole, type Hole } from './emergency-hole.js';
import type { FailureInfo } from './status-links.js';
import { ExportGrowth } from './export-growth.js';

/** What the primary needs of the NBD server: its export of this resource. */
export type ExportHost = Pick<NbdServer, 'addExport' | 'removeExport' | 'stopListening'>;

/** how long a stepping-down primary waits for its application to close the device after the stop hook */
const APP_CLOSE_WAIT_MS = 30_000;
/** a /mars too full even for the hole links gets this many tries this far apart, then the control loop retries */
const HOLE_TRIES = 10;
const HOLE_RETRY_MS = 100;

export interface PrimaryContext {
  /** metrics: bytes logged (counter increments only) */
  counters?: ResourceCounters;
  tree: TreeStore;
  res: string;
  host: string;
  clock: Clock;
  log: LogFn;
  nbd: ExportHost;
  socketPath: string;
  memLimitBytes: number;
  hooks: AppHookRunner;
  /** stop fetch, sync and replay: the disk is the primary's from now on */
  stopSecondary: () => Promise<void>;
  /** the state changed: publish the status links (force: at once) */
  publish: (force: boolean) => void;
  /** a log append hit ENOSPC: /mars is full whatever the last space check said */
  onOutOfSpace?: () => void;
  requestTick: () => void;
  /** the log resumed after a quiet time: tell the peers (daemon/logger/log-resume.ts) */
  notifyPeers?: () => void;
  /** the start hook runs once the block device exists (device-runner.ts), not here */
  deferStartHook?: boolean;
}

export class PrimaryRunner {
  phase: Phase = 'down';
  failure: FailureInfo | undefined;
  failedSignature: string | undefined;
  recoveryRestBytes = 0;
  /** stopping: writes refused, writeback not yet complete */
  draining = false;
  /** Lamport stamp (µs) of the last start of the role; a want-primary request before it is old */
  primarySinceUs: number | undefined;
  private disk: DataDisk | undefined;
  private logger: TransactionLogger | undefined;
  /** what the export talks to: the logger, or the data disk directly in emergency mode */
  private backend: EmergencyBackend | undefined;
  /** the hole of the current emergency (until logging resumes) */
  private holeNow: Hole | undefined;
  /** its links are all written (else the plan retries them) */
  private holeWritten = false;
  /** replay-HOST and version-SEQ-HOST while logging, written only when they changed */
  private readonly links: PrimaryLinks;
  private shuttingDown = false;
  private readonly growth: ExportGrowth;

  constructor(private readonly ctx: PrimaryContext) { this.growth = new ExportGrowth(ctx.res, ctx.log); this.links = new PrimaryLinks(ctx.tree, ctx.res, ctx.host); }

  /** The export's size while the role runs; every round it follows a grown size link (marsadm resize, export-growth.ts). */
  get exportSizeBytes(): number | undefined { return this.phase === 'primary' ? this.backend?.sizeBytes : undefined; }
  followSize(sizeLinkBytes: number | undefined): void {
    if (this.phase === 'primary' && this.backend && this.disk && this.growth.follow(this.backend, this.disk, sizeLinkBytes)) this.ctx.publish(true);
  }

  /** The logger while the role runs (tests, the peer service's durable ends). */
  get activeLogger(): TransactionLogger | undefined {
    return this.phase === 'primary' ? this.logger : undefined;
  }

  get diskOpen(): boolean { return this.disk !== undefined; }

  /** The write path's mode while the export runs (undefined: no write path). */
  get loggingMode(): LoggingMode | undefined {
    return this.backend?.mode;
  }

  /** Emergency mode (has-emergency): logging stops, stopped, or is about to resume. */
  get inEmergency(): boolean {
    return this.backend !== undefined && this.backend.mode !== 'logging';
  }

  get hole(): Hole | undefined { return this.holeNow; }

  get holeUnwritten(): boolean {
    return this.backend?.mode === 'direct' && this.holeNow !== undefined && !this.holeWritten;
  }

  get emergencySince(): { sinceMs: number | undefined; reason: string | undefined } {
    return { sinceMs: this.backend?.sinceMs, reason: this.backend?.reason };
  }

  writebackRestBytes(): number { return this.logger?.writebackRestBytes() ?? 0; }

  /** The current logfile and how much of it is durable, as the control loop sees it. */
  position(): { currentSeq: number; currentLogBytes: number } | undefined {
    if (this.inEmergency) {
      // The logfile after the hole is the current one, empty until logging resumes, so neither
      // rotation nor log-rotate starts another one meanwhile.
      return this.holeNow ? { currentSeq: this.holeNow.nextSeq, currentLogBytes: 0 } : undefined;
    }
    return this.logger ? { currentSeq: this.logger.currentSeq, currentLogBytes: this.logger.durablePos } : undefined;
  }

  async start(s: ResourceSnapshot): Promise<void> {
    const { tree, host, res, log } = this.ctx;
    this.phase = 'starting';
    this.failure = undefined;
    this.failedSignature = undefined;
    this.ctx.publish(true);
    try {
      await this.ctx.stopSecondary();
      const sizeBytes = s.sizeBytes!;
      this.disk = await DataDisk.open(s.dataPath!);
      if (this.disk.sizeBytes < sizeBytes) {
        throw new RecoveryError(REPLAY_STOP_CODE.ENOSPC, `data device ${s.dataPath} has ${this.disk.sizeBytes} bytes, less than the resource size ${sizeBytes}; give a larger device`);
      }
      const recovered = await recoverPrimary({
        tree, res, host, disk: this.disk, sizeBytes,
        onProgress: (restBytes) => { this.recoveryRestBytes = restBytes; this.ctx.publish(false); },
        log: (msg) => log('info', `${res}: ${msg}`),
      });
      this.recoveryRestBytes = 0;
      tree.write(resPaths.actual(res, host, 'last-recovery'),
        `${recovered.replayedRecords} records in ${recovered.replayedFiles} logfile(s), ${recovered.replayedBytes} bytes, at ${new Date(this.ctx.clock.nowMs()).toISOString()}`);
      await this.openLog(recovered.nextSeq, sizeBytes);
      this.phase = 'primary';
      this.primarySinceUs = tree.clock.now();
      if (this.ctx.hooks.configured('start') && !this.ctx.deferStartHook) void this.ctx.hooks.run('start');
      // A forced or sync-ignoring takeover was a one-time permission: the next one is planned.
      if ((tree.value(resPaths.primaryMode(res, host)) ?? 'planned') !== 'planned') tree.write(resPaths.primaryMode(res, host), 'planned');
      log('info', `${res}: primary; logging to ${logName(recovered.nextSeq, host)}, export on ${this.ctx.socketPath}`);
    } catch (err) {
      failStopOnInvariant(err);
      await this.failStart(err as Error, s.signature);
    }
    this.ctx.publish(true);
  }

  /** A fresh logfile after recovery, its links, the logger and the export. */
  private async openLog(seq: number, sizeBytes: number): Promise<void> {
    const { tree, host, res, log } = this.ctx;
    const writer = await LogWriter.openFresh(tree.abs(resPaths.log(res, seq, host)), seq);
    tree.fsyncDir(resourceDir(res));
    writeVersionLink(tree, res, host, seq, host, 0, true);
    writeReplayLink(tree, res, host, { seq, origin: host, minPos: 0, len: 0 }, true);
    raiseMaxnr(tree, res, seq);
    this.logger = this.newLogger(writer, sizeBytes);
    this.holeNow = undefined;
    this.backend = new EmergencyBackend({
      disk: this.disk!, logger: this.logger,
      onEnter: (ended) => this.writeHoleLinks(ended), clock: this.ctx.clock,
      log: (level, msg) => log(level, `${res}: ${msg}`),
    });
    await this.ctx.nbd.addExport(res, this.backend, { socketPath: this.ctx.socketPath, description: `MARS resource ${res}` });
  }

  private newLogger(writer: LogWriter, sizeBytes: number): TransactionLogger {
    return new TransactionLogger({
      disk: this.disk!, sizeBytes, clock: this.ctx.tree.clock, timeClock: this.ctx.clock, writer,
      memLimitBytes: this.ctx.memLimitBytes,
      onFatal: (err) => void this.onFatal(err),
      onApplied: () => this.ctx.publish(false),
      ...(this.ctx.counters ? { onLogged: countInto(this.ctx.counters, 'loggedBytes') } : {}),
      onOutOfSpace: () => this.outOfSpace(), ...(this.ctx.notifyPeers ? { onLogResumed: this.ctx.notifyPeers } : {}),
    });
  }

  private async failStart(err: Error, signature: string): Promise<void> {
    this.failure = err instanceof RecoveryError ? { code: err.code, message: err.message } : { code: REPLAY_STOP_CODE.EIO, message: err.message };
    this.failedSignature = signature;
    this.phase = 'failed';
    this.ctx.log('error', `${this.ctx.res}: cannot become primary: ${err.message}`);
    this.logger = undefined;
    await this.closeDisk();
  }

  private async onFatal(err: Error): Promise<void> {
    this.ctx.log('error', `${this.ctx.res}: I/O failure, the device goes down: ${err.message}`);
    this.failure = { code: REPLAY_STOP_CODE.EIO, message: `I/O error: ${err.message}` };
    try { await this.ctx.nbd.removeExport(this.ctx.res); } catch (e) { failStopOnInvariant(e); /* already gone */ }
    this.phase = 'failed';
    this.failedSignature = '(io-error)';
    this.ctx.publish(true);
  }

  /**
   * Leave the primary role: refuse writes (EPERM) at once, offer the export to no new client,
   * write everything back, then keep answering the connections that are still open (reads
   * from the disk, EPERM for writes: never a silent discard) until their clients close them,
   * as MARS's RemainsPrimary. Daemon shutdown cuts them off.
   */
  async stop(reason: string): Promise<void> {
    const { hooks, nbd, res, log } = this.ctx;
    const backend = this.backend;
    // The application on top closes the device itself if it has a stop hook: better than
    // EPERM for its writes (which is what remains for a device that stays open).
    if (hooks.openCount > 0 && hooks.configured('stop') && !this.shuttingDown) {
      await hooks.run('stop');
      await hooks.waitClosed(APP_CLOSE_WAIT_MS);
    }
    this.phase = 'stopping';
    this.draining = true;
    log('info', `${res}: leaving primary role: ${reason}`);
    if (backend) {
      backend.refuseWrites();
      nbd.stopListening(res);
      this.ctx.publish(true);
      await backend.stop();
      // In emergency mode the links were written with the hole; the ended logger has none.
      if (backend.mode === 'logging') this.publishLinks(backend.logger, true);
      this.draining = false;
      this.ctx.publish(true);
      if (hooks.openCount > 0 && !this.shuttingDown) {
        log('info', `${res}: ${hooks.openCount} connection(s) still open; their writes get EPERM until they disconnect`);
        await hooks.waitClosed(undefined);
      }
      await nbd.removeExport(res);
    }
    this.draining = false;
    this.logger = undefined;
    this.backend = undefined;
    this.holeNow = undefined;
    await this.closeDisk();
    this.phase = 'down';
    this.ctx.publish(true);
  }

  async rotate(toSeq: number): Promise<void> {
    const { tree, host, res } = this.ctx;
    const logger = this.logger;
    if (!logger || this.phase !== 'primary') return;
    if (this.inEmergency) return; // the logfile after the hole is current and stays empty
    // Checked before the fresh logfile is opened: a repeated rotation must not touch the file
    // the logger appends to now (plan.ts never plans one while another action is in flight).
    assert(toSeq === logger.currentSeq + 1, `rotation decided for logfile ${toSeq} while ${logger.currentSeq} is current`);
    const next = await LogWriter.openFresh(tree.abs(resPaths.log(res, toSeq, host)), toSeq);
    let rotated: { oldSeq: number; oldEnd: number };
    try {
      rotated = await logger.rotate(next);
    } catch (err) {
      // e.g. ENOSPC: emergency mode takes over, and its hole must be the next number seen.
      await next.close().catch(failStopOnInvariant);
      if (this.inEmergency) tree.remove(resPaths.log(res, toSeq, host));
      throw err;
    }
    const { oldSeq, oldEnd } = rotated;
    // The old logfile is complete: its final versionlink, then the new one, both durable
    // (a versionlink lost in a crash after a rotation makes peers see a false split brain).
    writeVersionLink(tree, res, host, oldSeq, host, oldEnd, true);
    writeVersionLink(tree, res, host, toSeq, host, 0, true);
    raiseMaxnr(tree, res, toSeq);
    this.ctx.log('info', `${res}: rotated to ${logName(toSeq, host)} (previous ended at ${oldEnd} bytes)`);
    this.ctx.publish(true);
  }

  async createLogfile(seq: number): Promise<void> {
    if (this.inEmergency) return; // decided before emergency mode began: the hole comes next
    const path = this.ctx.tree.abs(resPaths.log(this.ctx.res, seq, this.ctx.host));
    try {
      closeSync(openSync(path, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, TREE_FILE_MODE));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    this.ctx.tree.changed(resourceDir(this.ctx.res)); // created behind the store: drop the cached listing
    this.ctx.requestTick();
  }

  /** Emergency mode at the last space level (the backend re-routes writes at once). */
  enterEmergency(reason: string): void {
    if (this.backend?.mode === 'logging') void this.backend.enter(reason).catch(failStopOnInvariant);
  }

  /** A log append hit ENOSPC: emergency mode now (the backend re-routes that very write). */
  private outOfSpace(): void {
    this.ctx.onOutOfSpace?.();
    this.enterEmergency('/mars is full (ENOSPC on the logfile)');
  }

  /**
   * EmergencyBackend.onEnter: the logfile ended and everything logged is on the disk; no
   * unlogged write has reached it yet. A /mars too full even for a link gets a few more tries;
   * then unlogged writes go ahead anyway (clients never wait on /mars) and the control loop
   * keeps trying (plan.retryHoleLinks).
   */
  private async writeHoleLinks(ended: LogEnded): Promise<void> {
    const { host, res, log } = this.ctx;
    const hole = planHole(this.ctx.tree, res, ended);
    this.holeNow = hole;
    this.holeWritten = false;
    for (let attempt = 1; attempt <= HOLE_TRIES && !this.tryWriteHole(hole, attempt === HOLE_TRIES); attempt++) {
      await this.ctx.clock.sleep(HOLE_RETRY_MS);
    }
    log('warn', `${res}: EMERGENCY MODE (${ended.reason}): ${logName(ended.seq, host)} ended at ${ended.endPos} bytes; `
      + `hole at ${hole.holeSeq}, logging resumes in ${logName(hole.nextSeq, host)} once /mars has space again. `
      + `Secondaries stop at the hole; re-sync them afterwards (docs/manual.md, "Emergency mode")`);
    this.ctx.publish(true);
  }

  retryHoleLinks(): void {
    if (this.holeNow && this.holeUnwritten) this.tryWriteHole(this.holeNow);
  }

  private tryWriteHole(hole: Hole, complain = true): boolean {
    try {
      writeHole(this.ctx.tree, this.ctx.res, this.ctx.host, hole);
      this.holeWritten = true;
      return true;
    } catch (err) {
      failStopOnInvariant(err);
      if (complain) this.ctx.log('error', `${this.ctx.res}: emergency mode: cannot write the hole links yet: ${(err as Error).message}`);
      return false;
    }
  }

  /** Space is back: log again, into the empty logfile after the hole. */
  async leaveEmergency(): Promise<void> {
    const backend = this.backend;
    const hole = this.holeNow;
    if (!backend || backend.mode !== 'direct' || this.phase !== 'primary') return;
    if (!hole || !this.holeWritten) throw new Error('the hole links are not written yet; emergency mode stays on');
    const { tree, host, res, log } = this.ctx;
    const writer = await LogWriter.openFresh(tree.abs(resPaths.log(res, hole.nextSeq, host)), hole.nextSeq);
    try {
      await backend.resume(async () => {
        const logger = this.newLogger(writer, backend.sizeBytes);
        this.logger = logger;
        return logger;
      });
    } catch (err) {
      await writer.close().catch(failStopOnInvariant);
      throw err;
    }
    this.holeNow = undefined;
    log('info', `${res}: emergency mode left: logging again into ${logName(hole.nextSeq, host)}; secondaries that stopped at the hole need a re-sync`);
    this.ctx.publish(true);
  }

  /** The replay link and versionlink of the logfile being written (with every status update). */
  publishCurrentLinks(): void {
    if (this.logger && this.phase === 'primary' && !this.inEmergency) this.publishLinks(this.logger, false);
  }

  private publishLinks(logger: TransactionLogger, durable: boolean): void {
    this.links.publish(logger.replayPosition(), logger.currentSeq, logger.durablePos, durable);
  }

  private async closeDisk(): Promise<void> {
    const disk = this.disk;
    this.disk = undefined;
    if (disk) await disk.close().catch(failStopOnInvariant);
  }

  /** Daemon shutdown: step down like a detach (the caller waited for queued actions). */
  async shutdown(): Promise<void> {
    this.shuttingDown = true;
    if (this.phase === 'primary') await this.stop('daemon shutting down');
  }

  /** Set before the queue is drained: no new wait for clients from now on. */
  beginShutdown(): void {
    this.shuttingDown = true;
  }
}
