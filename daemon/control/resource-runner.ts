// The imperative shell for one resource on this host: it executes the control loop's decisions
// (start as primary after recovery, rotate, stop) and publishes what really happens in
// `actual-HOST/*`, the replay link and the versionlinks.
import { closeSync, constants as fsc, openSync } from 'node:fs';
import { join } from 'node:path';
import type { TreeStore } from '../../common/tree/store.js';
import { resPaths, resourceDir } from '../../common/tree/paths.js';
import type { NbdServer } from '../../kernel-shim/nbd-server.js';
import { DataDisk } from '../../common/disk/data-disk.js';
import { LogWriter } from '../logger/log-writer.js';
import { TransactionLogger } from '../logger/transaction-logger.js';
import { recoverPrimary, RecoveryError } from '../replay/recover-primary.js';
import { raiseMaxnr, readReplayLink, writeReplayLink, writeVersionLink } from '../../common/resource/links.js';
import type { Action, Phase, RuntimeState } from './decide.js';
import type { ResourceSnapshot } from '../../common/resource/snapshot.js';
import { SecondaryRunner } from './secondary-runner.js';
import { SplitBrainMonitor } from './split-brain-monitor.js';
import { executeInvalidate } from './invalidate.js';
import { readHook, type HookKind } from '../../common/resource/app-hooks.js';
import { runHook } from './app-hook-runner.js';
import type { PeerManager } from '../propagate/peer-manager.js';
import { EmergencyBackend, type LogEnded } from '../logger/emergency-backend.js';
import { planHole, writeHole, type Hole } from './emergency-hole.js';
import { decidePrimaryEmergency } from './decide-emergency.js';
import type { LogFn } from '../../common/util/log.js';
import { logName } from '../../common/tree/log-names.js';
import { assert, failStopOnInvariant } from '../../common/util/assert.js';

export interface RunnerContext {
  tree: TreeStore;
  host: string;
  runDir: string;
  nbd: NbdServer;
  memLimitBytes: number;
  log: LogFn;
  /** ask the daemon for a control tick soon (state changed underneath) */
  requestTick: () => void;
  peers: PeerManager;
  fetchRateBytesPerS: number;
  /** a log append hit ENOSPC: /mars is full whatever the last space check said */
  onOutOfSpace?: () => void;
}

export interface FailureInfo {
  /** negative, MARS-style replay-code */
  code: number;
  message: string;
}

const PUBLISH_MIN_INTERVAL_MS = 200;
/** how long a stepping-down primary waits for its application to close the device after the stop hook */
const APP_CLOSE_WAIT_MS = 30_000;

export class ResourceRunner {
  phase: Phase = 'down';
  private disk: DataDisk | undefined;
  private logger: TransactionLogger | undefined;
  /** what the export talks to: the logger, or the data disk directly in emergency mode */
  private backend: EmergencyBackend | undefined;
  /** the hole of the current emergency (until logging resumes) */
  private hole: Hole | undefined;
  /** its links are all written (else reconcileSpace tries again) */
  private holeWritten = false;
  private leaving = false;
  private failure: FailureInfo | undefined;
  private failedSignature: string | undefined;
  private openCount = 0;
  private lastPublishMs = 0;
  private publishTimer: NodeJS.Timeout | undefined;
  private recoveryRestBytes = 0;
  private busy: Promise<void> = Promise.resolve();
  /** operations queued or running on `busy` (actions, leaving emergency, invalidate) */
  private inFlight = 0;
  /** stopping: writes refused, writeback not yet complete */
  private draining = false;
  private shuttingDown = false;
  private connectionsGone: (() => void) | undefined;

  /** what the takeover of the primary role waits for (the control loop's blockedBy) */
  primaryWait: string | undefined;

  /** fetch, sync and replay while this host is a secondary of the resource */
  readonly secondary: SecondaryRunner;
  /** publishes actual-HOST/split-brain */
  readonly splitBrain: SplitBrainMonitor;

  constructor(readonly name: string, private readonly ctx: RunnerContext) {
    this.secondary = new SecondaryRunner(name, {
      tree: ctx.tree, host: ctx.host, peers: ctx.peers, fetchRateBytesPerS: ctx.fetchRateBytesPerS, log: ctx.log,
      onStatus: () => this.publish(false),
    });
    this.splitBrain = new SplitBrainMonitor(ctx.tree, name, ctx.host, ctx.log);
  }

  get socketPath(): string {
    return join(this.ctx.runDir, `${this.name}.sock`);
  }

  runtime(): RuntimeState {
    const rt: RuntimeState = { phase: this.phase };
    if (this.backend && this.backend.mode !== 'logging') {
      // Emergency mode: the logfile after the hole is the current one, empty until logging
      // resumes, so neither rotation nor log-rotate starts another one meanwhile.
      if (this.hole) {
        rt.currentSeq = this.hole.nextSeq;
        rt.currentLogBytes = 0;
      }
    } else if (this.logger) {
      rt.currentSeq = this.logger.currentSeq;
      rt.currentLogBytes = this.logger.durablePos;
    }
    if (this.failedSignature !== undefined) rt.failedSignature = this.failedSignature;
    if (this.inFlight > 0) rt.actionInFlight = true;
    return rt;
  }

  /** The logger, while this host is actual primary (tests and the control socket use it). */
  get activeLogger(): TransactionLogger | undefined {
    return this.phase === 'primary' ? this.logger : undefined;
  }

  /** Emergency mode (has-emergency): logging stops, stopped, or is about to resume. */
  get inEmergency(): boolean {
    return this.backend !== undefined && this.backend.mode !== 'logging';
  }

  /** Run one action; actions of a resource never overlap. */
  execute(action: Action, snapshot: ResourceSnapshot): Promise<void> {
    if (action.kind === 'none') return Promise.resolve();
    return this.enqueue(() => this.run(action, snapshot), (err) => {
      this.ctx.log('error', `${this.name}: ${action.kind} failed: ${(err as Error).stack ?? err}`);
    });
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

  private async run(action: Action, snapshot: ResourceSnapshot): Promise<void> {
    switch (action.kind) {
      case 'start-primary': return this.startPrimary(snapshot);
      case 'stop-primary': return this.stopPrimary(action.reason);
      case 'rotate': return this.rotate(action.toSeq);
      case 'create-next-logfile': return this.createLogfile(action.seq);
      case 'none': return;
    }
  }

  private async startPrimary(s: ResourceSnapshot): Promise<void> {
    const { tree, host, log } = this.ctx;
    this.phase = 'starting';
    this.failure = undefined;
    this.failedSignature = undefined;
    this.publish(true);
    try {
      await this.secondary.stop(); // the disk is the primary's from now on
      const sizeBytes = s.sizeBytes!;
      this.disk = await DataDisk.open(s.dataPath!);
      if (this.disk.sizeBytes < sizeBytes) {
        throw new RecoveryError(-28, `data device ${s.dataPath} has ${this.disk.sizeBytes} bytes, less than the resource size ${sizeBytes}; give a larger device`);
      }
      const recovered = await recoverPrimary({
        tree, res: this.name, host, disk: this.disk, sizeBytes,
        onProgress: (restBytes) => { this.recoveryRestBytes = restBytes; this.publish(false); },
        log: (msg) => log('info', `${this.name}: ${msg}`),
      });
      this.recoveryRestBytes = 0;
      tree.write(resPaths.actual(this.name, host, 'last-recovery'),
        `${recovered.replayedRecords} records in ${recovered.replayedFiles} logfile(s), ${recovered.replayedBytes} bytes, at ${new Date().toISOString()}`);
      const writer = await LogWriter.openFresh(tree.abs(resPaths.log(this.name, recovered.nextSeq, host)), recovered.nextSeq);
      tree.fsyncDir(resourceDir(this.name));
      writeVersionLink(tree, this.name, host, recovered.nextSeq, host, 0, true);
      writeReplayLink(tree, this.name, host, { seq: recovered.nextSeq, origin: host, minPos: 0, len: 0 }, true);
      raiseMaxnr(tree, this.name, recovered.nextSeq);
      this.logger = this.newLogger(writer, sizeBytes);
      this.hole = undefined;
      this.backend = new EmergencyBackend({
        disk: this.disk, logger: this.logger,
        onEnter: (ended) => this.writeHoleLinks(ended),
        log: (level, msg) => log(level, `${this.name}: ${msg}`),
      });
      await this.ctx.nbd.addExport(this.name, this.backend, { socketPath: this.socketPath, description: `MARS resource ${this.name}` });
      this.phase = 'primary';
      this.primarySinceUs = tree.clock.now();
      if (readHook(tree, 'start', this.name)) void this.runAppHook('start');
      // A forced or sync-ignoring takeover was a one-time permission: the next one is planned.
      if ((tree.value(resPaths.primaryMode(this.name, host)) ?? 'planned') !== 'planned') tree.write(resPaths.primaryMode(this.name, host), 'planned');
      log('info', `${this.name}: primary; logging to ${logName(recovered.nextSeq, host)}, export on ${this.socketPath}`);
    } catch (err) {
      await this.failStart(err as Error, s.signature);
    }
    this.publish(true);
  }

  private newLogger(writer: LogWriter, sizeBytes: number): TransactionLogger {
    return new TransactionLogger({
      disk: this.disk!, sizeBytes, clock: this.ctx.tree.clock, writer,
      memLimitBytes: this.ctx.memLimitBytes,
      onFatal: (err) => void this.onFatal(err),
      onApplied: () => this.publish(false),
      onOutOfSpace: () => this.outOfSpace(),
    });
  }

  /** A log append hit ENOSPC: emergency mode now (the backend re-routes that very write). */
  private outOfSpace(): void {
    this.ctx.onOutOfSpace?.();
    if (this.backend?.mode === 'logging') void this.backend.enter('/mars is full (ENOSPC on the logfile)').catch(() => undefined);
  }

  /**
   * The control loop's space level for this host: enter emergency mode at the last level,
   * leave it when the space is back (decide-emergency.ts).
   */
  reconcileSpace(level: number): void {
    const backend = this.backend;
    if (!backend || this.phase !== 'primary') return;
    if (backend.mode === 'direct' && this.hole && !this.holeWritten) this.tryWriteHole(this.hole);
    const action = decidePrimaryEmergency(level, backend.mode);
    if (action === 'enter') {
      void backend.enter(`/mars space level ${level}: free space below the last threshold`).catch(() => undefined);
    } else if (action === 'leave' && !this.leaving) {
      // Through the action queue: never concurrently with a rotation or a stop.
      this.leaving = true;
      void this.enqueue(() => this.leaveEmergency(), (err) => {
        this.ctx.log('warn', `${this.name}: cannot leave emergency mode yet: ${(err as Error).message}`);
      }).finally(() => { this.leaving = false; });
    }
  }

  /**
   * EmergencyBackend.onEnter: the logfile ended and everything logged is on the disk; no
   * unlogged write has reached it yet. A /mars too full even for a link gets a few more tries;
   * then unlogged writes go ahead anyway (clients never wait on /mars) and the control loop
   * keeps trying.
   */
  private async writeHoleLinks(ended: LogEnded): Promise<void> {
    const { host, log } = this.ctx;
    const hole = planHole(this.ctx.tree, this.name, ended);
    this.hole = hole;
    this.holeWritten = false;
    for (let attempt = 1; attempt <= 10 && !this.tryWriteHole(hole, attempt === 10); attempt++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    log('warn', `${this.name}: EMERGENCY MODE (${ended.reason}): ${logName(ended.seq, host)} ended at ${ended.endPos} bytes; `
      + `hole at ${hole.holeSeq}, logging resumes in ${logName(hole.nextSeq, host)} once /mars has space again. `
      + `Secondaries stop at the hole; re-sync them afterwards (docs/manual.md, "Emergency mode")`);
    this.publish(true);
  }

  private tryWriteHole(hole: Hole, complain = true): boolean {
    try {
      writeHole(this.ctx.tree, this.name, this.ctx.host, hole);
      this.holeWritten = true;
      return true;
    } catch (err) {
      if (complain) this.ctx.log('error', `${this.name}: emergency mode: cannot write the hole links yet: ${(err as Error).message}`);
      return false;
    }
  }

  /** Space is back: log again, into the empty logfile after the hole. */
  private async leaveEmergency(): Promise<void> {
    const backend = this.backend;
    const hole = this.hole;
    if (!backend || backend.mode !== 'direct' || this.phase !== 'primary') return;
    if (!hole || !this.holeWritten) throw new Error('the hole links are not written yet; emergency mode stays on');
    const { tree, host, log } = this.ctx;
    const writer = await LogWriter.openFresh(tree.abs(resPaths.log(this.name, hole.nextSeq, host)), hole.nextSeq);
    try {
      await backend.resume(async () => {
        const logger = this.newLogger(writer, backend.sizeBytes);
        this.logger = logger;
        return logger;
      });
    } catch (err) {
      await writer.close().catch(() => undefined);
      throw err;
    }
    this.hole = undefined;
    log('info', `${this.name}: emergency mode left: logging again into ${logName(hole.nextSeq, host)}; secondaries that stopped at the hole need a re-sync`);
    this.publish(true);
  }

  private async failStart(err: Error, signature: string): Promise<void> {
    this.failure = err instanceof RecoveryError ? { code: err.code, message: err.message } : { code: -5, message: err.message };
    this.failedSignature = signature;
    this.phase = 'failed';
    this.ctx.log('error', `${this.name}: cannot become primary: ${err.message}`);
    this.logger = undefined;
    await this.closeDisk();
  }

  private async onFatal(err: Error): Promise<void> {
    this.ctx.log('error', `${this.name}: I/O failure, the device goes down: ${err.message}`);
    this.failure = { code: -5, message: `I/O error: ${err.message}` };
    try { await this.ctx.nbd.removeExport(this.name); } catch { /* already gone */ }
    this.phase = 'failed';
    this.failedSignature = '(io-error)';
    this.publish(true);
  }

  /**
   * Leave the primary role: refuse writes (EPERM) at once, offer the export to no new client,
   * write everything back, then keep answering the connections that are still open (reads
   * from the disk, EPERM for writes: never a silent discard) until their clients close them,
   * as MARS's RemainsPrimary. Daemon shutdown cuts them off.
   */
  private async stopPrimary(reason: string): Promise<void> {
    const backend = this.backend;
    // The application on top closes the device itself if it has a stop hook: better than
    // EPERM for its writes (which is what remains for a device that stays open).
    if (this.openCount > 0 && readHook(this.ctx.tree, 'stop', this.name) && !this.shuttingDown) {
      await this.runAppHook('stop');
      await this.waitConnectionsClosed(APP_CLOSE_WAIT_MS);
    }
    this.phase = 'stopping';
    this.draining = true;
    this.ctx.log('info', `${this.name}: leaving primary role: ${reason}`);
    if (backend) {
      backend.refuseWrites();
      this.ctx.nbd.stopListening(this.name);
      this.publish(true);
      await backend.stop();
      // In emergency mode the links were written with the hole; the ended logger has none.
      if (backend.mode === 'logging') this.publishLinks(backend.logger, true);
      this.draining = false;
      this.publish(true);
      if (this.openCount > 0 && !this.shuttingDown) {
        this.ctx.log('info', `${this.name}: ${this.openCount} connection(s) still open; their writes get EPERM until they disconnect`);
        await new Promise<void>((resolve) => { this.connectionsGone = resolve; if (this.openCount === 0) resolve(); });
        this.connectionsGone = undefined;
      }
      await this.ctx.nbd.removeExport(this.name);
    }
    this.draining = false;
    this.logger = undefined;
    this.backend = undefined;
    this.hole = undefined;
    await this.closeDisk();
    this.phase = 'down';
    this.publish(true);
  }

  private async rotate(toSeq: number): Promise<void> {
    const { tree, host } = this.ctx;
    const logger = this.logger;
    if (!logger || this.phase !== 'primary') return;
    if (this.inEmergency) return; // the logfile after the hole is current and stays empty
    // Checked before the fresh logfile is opened: a repeated rotation must not touch the file
    // the logger appends to now.
    assert(toSeq === logger.currentSeq + 1, `rotation decided for logfile ${toSeq} while ${logger.currentSeq} is current`);
    const next = await LogWriter.openFresh(tree.abs(resPaths.log(this.name, toSeq, host)), toSeq);
    let rotated: { oldSeq: number; oldEnd: number };
    try {
      rotated = await logger.rotate(next);
    } catch (err) {
      // e.g. ENOSPC: emergency mode takes over, and its hole must be the next number seen.
      await next.close().catch(() => undefined);
      if (this.inEmergency) tree.remove(resPaths.log(this.name, toSeq, host));
      throw err;
    }
    const { oldSeq, oldEnd } = rotated;
    // The old logfile is complete: its final versionlink, then the new one, both durable
    // (a versionlink lost in a crash after a rotation makes peers see a false split brain).
    writeVersionLink(tree, this.name, host, oldSeq, host, oldEnd, true);
    writeVersionLink(tree, this.name, host, toSeq, host, 0, true);
    raiseMaxnr(tree, this.name, toSeq);
    this.ctx.log('info', `${this.name}: rotated to ${logName(toSeq, host)} (previous ended at ${oldEnd} bytes)`);
    this.publish(true);
  }

  private async createLogfile(seq: number): Promise<void> {
    if (this.inEmergency) return; // decided before emergency mode began: the hole comes next
    const path = this.ctx.tree.abs(resPaths.log(this.name, seq, this.ctx.host));
    try {
      closeSync(openSync(path, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    this.ctx.requestTick();
  }

  /** an invalidate request is being carried out: no secondary work may start meanwhile */
  invalidating = false;

  /**
   * Carry out `marsadm invalidate` (request = its stamp): stop fetch, sync and replay, rewrite
   * the links (invalidate.ts), and answer in actual-HOST/invalidate with the stamp first.
   */
  invalidate(request: string, sizeBytes: number): void {
    if (this.invalidating) return;
    this.invalidating = true;
    const { tree, host, log } = this.ctx;
    const answer = (text: string) => tree.write(resPaths.actual(this.name, host, 'invalidate'), `${request} ${text}`.slice(0, 1000), { durable: true });
    void this.enqueue(async () => {
      if (this.phase !== 'down' && this.phase !== 'failed') {
        answer('refused: this host is primary of the resource');
        return;
      }
      await this.secondary.stop();
      try {
        const { plan, resyncBytes } = await executeInvalidate(tree, this.name, host, sizeBytes);
        const what = plan.kind === 'incremental'
          ? `incremental resync of ${resyncBytes} bytes this host wrote to since the split at ${logName(plan.common.seq, plan.common.origin)}:${plan.common.pos}, then replay of ${plan.primaryBytesSince} logged bytes of the primary`
          : `full sync of ${resyncBytes} bytes (${plan.reason})`;
        log('warn', `${this.name}: invalidated: ${what}`);
        answer(`OK ${what}`);
      } catch (err) {
        failStopOnInvariant(err);
        log('error', `${this.name}: invalidate failed: ${(err as Error).message}`);
        answer(`failed: ${(err as Error).message}`);
      }
    }, (err) => {
      this.ctx.log('error', `${this.name}: invalidate failed: ${(err as Error).stack ?? err}`);
    }).finally(() => {
      this.invalidating = false;
      this.ctx.requestTick();
    });
  }

  /** app-state published in actual-HOST: none, running start/stop hook, or its last result */
  private appState = 'none';
  private wantHandled: string | undefined;
  private primarySinceUs = Number.MAX_SAFE_INTEGER;
  private closeWaiters: (() => void)[] = [];

  private async runAppHook(kind: HookKind): Promise<void> {
    const cmd = readHook(this.ctx.tree, kind, this.name);
    if (!cmd) return;
    this.appState = `${kind} hook running`;
    this.publish(true);
    this.ctx.log('info', `${this.name}: running the application ${kind} hook: ${cmd}`);
    const r = await runHook(cmd, { res: this.name, host: this.ctx.host, socket: this.socketPath });
    this.appState = `${kind} hook ${r.ok ? 'done' : 'FAILED'} (${r.detail})`.slice(0, 500);
    this.ctx.log(r.ok ? 'info' : 'error', `${this.name}: application ${kind} hook ${r.ok ? 'done' : 'failed'}: ${r.detail}`);
    this.publish(true);
  }

  private waitConnectionsClosed(timeoutMs: number): Promise<void> {
    if (this.openCount === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      function done() { clearTimeout(timer); resolve(); }
      this.closeWaiters.push(done);
    });
  }

  /**
   * Another member asked for a planned handover (`STAMP HOST` of its want-primary link) while
   * our device is open: stop the application here, once per request, so the handover can go on.
   */
  onWantPrimary(request: string | undefined): void {
    if (request === undefined || request === this.wantHandled) return;
    this.wantHandled = request;
    // A request from before this host became primary belongs to an earlier handover.
    if (Number(request.split(' ')[0]) * 1_000_000 < this.primarySinceUs) return;
    if (this.phase !== 'primary' || this.openCount === 0 || !readHook(this.ctx.tree, 'stop', this.name)) return;
    this.ctx.log('info', `${this.name}: ${request.split(' ')[1]} asks for the primary role: stopping the application`);
    void this.runAppHook('stop');
  }

  setOpenCount(count: number): void {
    this.openCount = count;
    if (count === 0) {
      this.connectionsGone?.();
      for (const w of this.closeWaiters.splice(0)) w();
    }
    this.publish(true);
  }

  /** Publish status links; rate-limited unless forced. */
  publish(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.lastPublishMs < PUBLISH_MIN_INTERVAL_MS) {
      if (!this.publishTimer) {
        this.publishTimer = setTimeout(() => { this.publishTimer = undefined; this.publish(true); }, PUBLISH_MIN_INTERVAL_MS);
      }
      return;
    }
    this.lastPublishMs = now;
    try {
      this.publishStatus();
      if (this.logger && this.phase === 'primary' && !this.inEmergency) this.publishLinks(this.logger, false);
    } catch (err) {
      this.ctx.log('warn', `${this.name}: status update failed: ${(err as Error).message}`);
    }
  }

  private publishLinks(logger: TransactionLogger, durable: boolean): void {
    const { tree, host } = this.ctx;
    const pos = logger.replayPosition();
    const seqChanged = readReplayLink(tree, this.name, host)?.seq !== pos.seq;
    writeReplayLink(tree, this.name, host, { seq: pos.seq, origin: host, minPos: pos.minPos, len: pos.lenBytes }, durable || seqChanged);
    writeVersionLink(tree, this.name, host, logger.currentSeq, host, logger.durablePos, durable);
  }

  private publishStatus(): void {
    const { tree, host } = this.ctx;
    const set = (key: string, value: string) => tree.write(resPaths.actual(this.name, host, key), value, { onlyIfChanged: true });
    tree.ensureDir(resPaths.actualDir(this.name, host));
    if (this.phase === 'down' && this.secondary.active) {
      const st = this.secondary.status();
      set('is-attached', st.attached ? '1' : '0');
      set('is-primary', '0');
      set('if-on', '0');
      set('open-count', '0');
      set('is-copying', st.copying ? '1' : '0');
      set('is-syncing', st.syncing ? '1' : '0');
      set('is-replaying', st.replaying ? '1' : '0');
      set('fetch-rest', String(st.fetchRestBytes));
      set('replay-rest', String(st.replayRestBytes));
      set('sync-rate', String(st.syncRateBytesPerS));
      set('fetch-state', st.fetchState.slice(0, 500) || 'off');
      set('secondary-why', st.why || 'OK');
      set('primary-wait', this.primaryWait ?? 'OK');
      set('app-state', this.appState);
      set('has-app-stop', readHook(this.ctx.tree, 'stop', this.name) ? '1' : '0');
      set('replay-code', st.replayCode);
      set('msg-err-replay-stop', st.message.slice(0, 1000));
      set('socket', '(none)');
      set('writeback-rest', '0');
      set('is-emergency', '0');
      set('has-emergency', '0');
      set('msg-err-emergency', 'OK');
      return;
    }
    for (const key of ['is-copying', 'is-syncing', 'is-replaying']) set(key, '0');
    for (const key of ['fetch-rest', 'replay-rest', 'sync-rate']) set(key, '0');
    // Until writeback after a step-down is complete the host still counts as actual primary.
    const primary = this.phase === 'primary' || this.draining;
    set('is-attached', this.disk ? '1' : '0');
    set('is-primary', primary ? '1' : '0');
    set('if-on', primary ? '1' : '0');
    set('open-count', String(this.disk ? this.openCount : 0));
    set('is-recovering', this.phase === 'starting' ? '1' : '0');
    set('recovery-rest', String(this.recoveryRestBytes));
    set('writeback-rest', String(this.logger?.writebackRestBytes() ?? 0));
    set('replay-code', this.failure ? `${this.failure.code}` : this.phase === 'primary' ? '0' : '1');
    set('msg-err-replay-stop', this.failure ? this.failure.message : 'OK');
    set('socket', primary ? this.socketPath : '(none)');
    set('primary-wait', this.primaryWait ?? 'OK');
    set('app-state', this.appState);
    set('has-app-stop', readHook(this.ctx.tree, 'stop', this.name) ? '1' : '0');
    // has-emergency: emergency mode decided (entering, on, or resuming); is-emergency: logging
    // has actually stopped and writes go straight to the disk (MARS's two links).
    const mode = this.backend?.mode ?? 'logging';
    set('has-emergency', mode !== 'logging' ? '1' : '0');
    set('is-emergency', mode === 'direct' || mode === 'resuming' ? '1' : '0');
    set('msg-err-emergency', mode === 'logging' ? 'OK' : emergencyMessage(this.backend!, this.hole, this.ctx.host));
  }

  private async closeDisk(): Promise<void> {
    const disk = this.disk;
    this.disk = undefined;
    if (disk) await disk.close().catch(() => undefined);
  }

  /** Daemon shutdown (SIGTERM): stop cleanly like a detach, but keep the todo switches. */
  async shutdown(): Promise<void> {
    this.shuttingDown = true;
    this.connectionsGone?.();
    await this.busy;
    if (this.phase === 'primary') await this.stopPrimary('daemon shutting down');
    await this.secondary.stop();
    if (this.publishTimer) clearTimeout(this.publishTimer);
  }
}

function emergencyMessage(backend: EmergencyBackend, hole: Hole | undefined, host: string): string {
  const since = backend.sinceMs !== undefined ? new Date(backend.sinceMs).toISOString() : '?';
  const where = hole
    ? `${logName(hole.endedSeq, host)} ended at ${hole.endPos} bytes, hole at ${hole.holeSeq}, logging resumes in ${logName(hole.nextSeq, host)}`
    : 'ending the logfile';
  return `emergency mode since ${since} (${backend.reason ?? '?'}): writes go straight to the data disk, not logged; ${where}. `
    + 'Free space in /mars (log-delete, or a larger /mars), then re-sync every secondary (docs/manual.md, "Emergency mode")';
}
