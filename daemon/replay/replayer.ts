// The secondary's replayer (the MARS user manual: replay; replaying in order): applies the local copies of the
// origin's logfiles to the data disk in log order, following the replay link, while a fetcher
// appends to those copies. The decisions (apply, wait, switch, stop) come from the pure
// decideReplayStep (switchover.ts); this file only gathers its input and executes the steps.
//
// Crash safety, per batch [MINPOS, END) of logfile SEQ from ORIGIN:
//   1. replay-HOST = log-SEQ-ORIGIN,MINPOS,END-MINPOS (durable): the window that may be half
//      applied after a crash;
//   2. apply the verified records (applyLog stops in front of the first bad one);
//   3. fdatasync the data disk;
//   4. replay-HOST = log-SEQ-ORIGIN,E,0 and version-SEQ-HOST for E (both durable), E = end of
//      the last applied record.
// So the replay link only advances over writes that are durable on the disk (docs/design.md §3.5),
// and after a crash in step 2 or 3 the window is re-applied (idempotent) before anything else,
// which brings the disk back to a prefix state of the origin's history (§3.3).
//
// A content mismatch (content-check.ts) is kept in the local link content-mismatch-HOST, written
// durably before the stop is published, so the stop holds across a crash and a restart until
// invalidate moves the replay link back and removes the link.
//
// An invariant failure (a step repeated without effect, an apply outside its batch) stops the
// worker for good and then the daemon (failStopOnInvariant); I/O errors are retried. Time (the
// batch limit, the poll interval) comes from the injected clock.
import { statSync } from 'node:fs';
import type { TreeStore } from '../../common/tree/store.js';
import { resPaths } from '../../common/tree/paths.js';
import type { DataDisk } from '../../common/disk/data-disk.js';
import { logName } from '../../common/tree/log-names.js';
import { writeReplayLink, writeVersionLink } from '../../common/resource/links.js';
import { logDigests } from '../../common/log/content-digest.js';
import { MAX_WHOLE_WRITE_LOG_BYTES } from '../../common/log/record.js';
import { assert, failStopOnInvariant, rethrowInvariant } from '../../common/util/assert.js';
import type { Clock, Timer } from '../../common/util/clock.js';
import { applyLog } from './apply-log.js';
import { ContentMismatchGuard, dropStaleMismatch, keepMismatch, rehashOwnVersion } from './mismatch-guard.js';
import {
  REPLAY_CODE_FINISHED, REPLAY_CODE_RUNNING, REPLAY_STOP_CODE,
  decideReplayStep, type ReplayInput, type ReplayStep, type ScanOutcome,
} from './switchover.js';
import { statusForStep, type ReplayStatus } from './status.js';
import { readReplayTreeView, type ReplayTreeView } from './tree-view.js';
import type { LogFn } from '../../common/util/log.js';

export type { ReplayStatus } from './status.js';
export { readReplayTreeView, type ReplayTreeView } from './tree-view.js';

export interface RefetchRequest {
  seq: number;
  origin: string;
  /** the logfile name, log-SEQ-ORIGIN */
  file: string;
  /** where replay stopped in the damaged copy (undefined: the copy is missing) */
  offset: number | undefined;
  reason: string;
}

export interface ReplayerOptions {
  tree: TreeStore;
  res: string;
  host: string;
  disk: DataDisk;
  /** the resource size when replay started: a record beyond it, the grown size link and the disk is a defect */
  sizeBytes: number;
  log: LogFn;
  clock: Clock;
  /** the tree input of the decision; default readReplayTreeView(tree, res, host) */
  readTreeView?: () => ReplayTreeView;
  /** the local copy of a logfile is damaged or missing: fetch it again from offset 0 */
  onRefetch?: (req: RefetchRequest) => void;
  /** the status changed (the owner publishes it in actual-HOST/*) */
  onStatus?: (status: ReplayStatus) => void;
  /** bytes of a batch applied to the disk (metrics counter; must not throw) */
  onReplayed?: (bytes: number) => void;
  /** an invariant broke: the replayer has stopped for good */
  onFatal?: (err: Error) => void;
  /** fallback re-check when nobody nudges (fetch progress, tree changes) */
  pollIntervalMs?: number;
  /** a batch reads at most this many logfile bytes ... */
  maxBatchBytes?: number;
  /** ... and stops after this much time at the next chunk boundary, so pause reacts quickly */
  maxBatchMs?: number;
}

const DEFAULT_POLL_INTERVAL_MS = 500;
const DEFAULT_MAX_BATCH_BYTES = 64 << 20;
const DEFAULT_MAX_BATCH_MS = 1000;

interface FileIdentity {
  seq: number;
  origin: string;
  ino: number;
  sizeBytes: number;
  mtimeMs: number;
}

export class Replayer {
  private readonly pollIntervalMs: number;
  private readonly maxBatchBytes: number;
  private readonly maxBatchMs: number;
  private loop: Promise<void> | undefined;
  private paused = false;
  private stopping = false;
  private stopped = false;
  private failure: Error | undefined;
  /** set by nudge() while the loop is busy: re-check at once instead of sleeping */
  private nudged = false;
  private wake: (() => void) | undefined;
  private parked = false;
  private idleWaiters: (() => void)[] = [];
  /** outcome of the last apply in the replay link's logfile */
  private scan: (ScanOutcome & { seq: number; origin: string }) | undefined;
  /** seq_nr of the record at pos in logfile seq, when known from the previous batch */
  private seqNr: { seq: number; origin: string; pos: number; next: number } | undefined;
  private fileSeen: FileIdentity | undefined;
  private refetchAsked = new Set<string>();
  private readonly mismatchGuard = new ContentMismatchGuard();
  /** the last executed step, to detect a step that does not change what it acts on */
  private lastExecuted: string | undefined;
  private state: ReplayStatus = {
    replayCode: REPLAY_CODE_FINISHED, message: 'OK', waitReason: 'not started', position: undefined, replayedPos: 0,
    restBytes: 0, isReplaying: false, applying: false, consistent: true, caughtUp: false,
  };

  constructor(private readonly o: ReplayerOptions) {
    this.pollIntervalMs = o.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;
    this.maxBatchBytes = o.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES;
    this.maxBatchMs = o.maxBatchMs ?? DEFAULT_MAX_BATCH_MS;
    assert(Number.isSafeInteger(this.maxBatchBytes) && this.maxBatchBytes > 0, `bad maxBatchBytes ${this.maxBatchBytes}`);
    assert(Number.isSafeInteger(o.sizeBytes) && o.sizeBytes >= 0, `bad sizeBytes ${o.sizeBytes}`);
  }

  /**
   * Start the worker, or resume it after pause(). With paused: true only a half-applied window
   * left by a crash is re-applied (so the disk is consistent), nothing else.
   */
  start(opts: { paused?: boolean } = {}): void {
    assert(!this.stopping && !this.stopped, 'a stopped replayer cannot be started again');
    this.paused = opts.paused ?? false;
    if (this.loop === undefined) this.loop = this.run();
    else this.nudge();
    this.setState({ isReplaying: !this.paused });
  }

  /**
   * Stop applying. Resolves once the current batch is finished: its records are on the disk,
   * fdatasync'ed, and the replay link is written (always at a record boundary).
   */
  async pause(): Promise<void> {
    this.paused = true;
    this.setState({ isReplaying: false });
    await this.idle();
  }

  /** Like pause(), then the worker ends for good. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.paused = true;
    this.setState({ isReplaying: false });
    this.nudge();
    await this.loop;
    this.stopped = true;
  }

  /** Something changed (the fetcher appended bytes, the tree changed): re-check now. */
  nudge(): void {
    if (this.wake) this.wake();
    else this.nudged = true;
  }

  get status(): ReplayStatus {
    return { ...this.state, position: this.state.position && { ...this.state.position } };
  }

  get replayCode(): number { return this.state.replayCode; }
  get message(): string { return this.state.message; }
  get replayedPos(): number { return this.state.replayedPos; }
  get restBytes(): number { return this.state.restBytes; }
  get isReplaying(): boolean { return this.state.isReplaying; }
  get consistent(): boolean { return this.state.consistent; }
  get caughtUp(): boolean { return this.state.caughtUp; }
  /** the error that ended the worker, if an invariant broke */
  get failed(): Error | undefined { return this.failure; }

  private idle(): Promise<void> {
    if (this.loop === undefined || this.parked || this.failure !== undefined) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async run(): Promise<void> {
    try {
      while (!this.stopping) {
        let executed = false;
        try {
          executed = await this.tick();
        } catch (err) {
          rethrowInvariant(err);
          this.lastExecuted = undefined;
          const msg = `replay of ${this.o.res} failed: ${(err as Error).message}; retrying`;
          if (this.state.message !== msg) this.o.log('error', msg);
          this.setState({ replayCode: REPLAY_STOP_CODE.EIO, message: msg, waitReason: undefined, applying: false, caughtUp: false });
        }
        if (!executed) {
          this.lastExecuted = undefined;
          await this.sleep();
        }
      }
    } catch (err) {
      failStopOnInvariant(err);
      this.failure = err as Error;
      this.o.log('error', `replay of ${this.o.res} stopped: ${(err as Error).message}`);
      this.setState({ replayCode: REPLAY_STOP_CODE.EINVAL, message: (err as Error).message, waitReason: undefined, applying: false, isReplaying: false, caughtUp: false });
      this.o.onFatal?.(err as Error);
    } finally {
      this.parked = true;
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  /** One decision and its execution. Returns true when it changed something (decide again). */
  private async tick(): Promise<boolean> {
    const { tree, res, host } = this.o;
    const view = dropStaleMismatch(tree, res, host, this.o.readTreeView ? this.o.readTreeView() : readReplayTreeView(tree, res, host));
    const link = view.replay;
    if (link) this.checkFileIdentity(link.seq, link.origin);
    const scan = link && this.scan && this.scan.seq === link.seq && this.scan.origin === link.origin ? this.scan : undefined;
    const input: ReplayInput = { ...view, scan };
    const verdict = this.mismatchGuard.filter(decideReplayStep(input), input.keptMismatch, (m) => rehashOwnVersion(tree, res, host, m));
    if (verdict === 'again') return true;
    const step = verdict.step;
    if (verdict.keep) keepMismatch(tree, res, host, verdict.keep, this.o.log);
    this.publish(step, input);

    // Asked even while paused: a damaged copy may be what keeps the disk inconsistent.
    if (step.kind === 'stop' && step.refetch) this.askRefetch(step);
    const mayRun = !this.paused || (step.kind === 'apply' && step.repair) || step.kind === 'record-version';
    if (!mayRun || this.stopping) return false;
    if (step.kind !== 'apply' && step.kind !== 'record-version' && step.kind !== 'switch') return false;

    // A step that leaves its own input unchanged would repeat forever: that is a bug.
    const key = JSON.stringify([step, link, this.fileSeen]);
    assert(key !== this.lastExecuted, `replay step repeated without effect: ${key}`);
    this.lastExecuted = key;
    if (step.kind === 'apply') await this.applyBatch(step);
    else if (step.kind === 'record-version') this.recordVersion(step);
    else await this.switchLogfile(step);
    return true;
  }

  private async applyBatch(step: Extract<ReplayStep, { kind: 'apply' }>): Promise<void> {
    const { tree, res, host, disk } = this.o;
    const { seq, origin, fromPos, repair } = step;
    // The batch ends at a write request's end (§3.3): after maxBatchBytes it goes on to the end
    // of the request under way, so the window it records reaches one whole request further.
    const batchEnd = repair ? step.toPos : Math.min(step.toPos, fromPos + this.maxBatchBytes);
    const toPos = repair ? step.toPos : Math.min(step.toPos, batchEnd + MAX_WHOLE_WRITE_LOG_BYTES);
    const windowEnd = toPos;
    if (!repair) writeReplayLink(tree, res, host, { seq, origin, minPos: fromPos, len: toPos - fromPos }, true);
    else this.o.log('warn', `${res}: re-applying the half-applied window [${fromPos}, ${windowEnd}) of ${logName(seq, origin)} left by a crash`);

    const expectedSeqNr = this.seqNr && this.seqNr.seq === seq && this.seqNr.origin === origin && this.seqNr.pos === fromPos ? this.seqNr.next : fromPos === 0 ? 1 : undefined;
    const startedMs = this.o.clock.nowMs();
    this.setState({ applying: true, replayCode: REPLAY_CODE_RUNNING, message: 'OK', waitReason: undefined });
    let result;
    try {
      result = await applyLog({
        path: tree.abs(resPaths.log(res, seq, origin)), seq, fromPos, endPos: toPos, batchEndPos: batchEnd, disk, sizeBytes: this.recordLimitBytes(),
        ...(expectedSeqNr === undefined ? {} : { expectedSeqNr }),
        // Asked between write requests only. A repair is not given up for a pause: the disk
        // must reach a prefix state.
        shouldStop: () => this.stopping || (this.paused && !repair) || this.o.clock.nowMs() - startedMs >= this.maxBatchMs,
        // Whole write requests only (§3.3); the origin's final end is known only for the whole step.
        wholeWrites: { finalEndPos: step.final && toPos === step.toPos ? toPos : undefined },
      });
      await disk.datasync();
    } finally {
      this.setState({ applying: false });
    }
    const endPos = result.endPos;
    assert(endPos >= fromPos && endPos <= toPos, `applied up to ${endPos} outside the batch [${fromPos}, ${toPos})`);
    // What may still be half applied: beyond a defect found only now, and beyond an
    // interruption, the rest of a crash window was possibly applied before the crash.
    const stillDirty = repair && (result.stop.defect || result.interrupted) ? windowEnd - endPos : 0;
    writeReplayLink(tree, res, host, { seq, origin, minPos: endPos, len: stillDirty }, true);
    if (!repair) this.o.onReplayed?.(endPos - fromPos);
    if (stillDirty === 0 && origin !== host) writeVersionLink(tree, res, host, seq, origin, endPos, true);

    this.seqNr = result.nextSeqNr === undefined ? undefined : { seq, origin, pos: endPos, next: result.nextSeqNr };
    const stop = result.stop;
    // The decision reports a defect (and asks for a re-fetch) from this scan outcome.
    this.scan = result.interrupted ? undefined : {
      seq, origin, endPos, limitBytes: toPos,
      stopClass: stop.defect ? 'defect' : stop.torn ? 'torn' : result.heldBytes > 0 ? 'incomplete-write' : 'clean', stopKind: stop.kind, detail: stop.detail,
    };
  }

  /**
   * A record beyond this is a defect. A resize grows the size link, and the log bytes written
   * after it may arrive here before the grown link does (links and logfiles travel separately),
   * so a record that fits this host's disk is applied too: the primary logged it within the
   * size it had, which marsadm resize checked against every member's disk.
   */
  private recordLimitBytes(): number {
    const link = Number(this.o.tree.value(resPaths.size(this.o.res)));
    return Math.max(this.o.sizeBytes, Number.isSafeInteger(link) ? link : 0, this.o.disk.refreshSize());
  }

  private recordVersion(step: Extract<ReplayStep, { kind: 'record-version' }>): void {
    writeVersionLink(this.o.tree, this.o.res, this.o.host, step.seq, step.origin, step.logPos, true);
  }

  private async switchLogfile(step: Extract<ReplayStep, { kind: 'switch' }>): Promise<void> {
    const { tree, res, host } = this.o;
    const { from, to } = step;
    // Order: the final versionlink of the old logfile, then the replay link, then the new
    // versionlink. A crash in between leaves a replay link whose versionlink the next start
    // writes ('record-version'); nothing is applied in between.
    if (from.origin !== host) writeVersionLink(tree, res, host, from.seq, from.origin, from.endPos, true);
    writeReplayLink(tree, res, host, { seq: to.seq, origin: to.origin, minPos: 0, len: 0 }, true);
    if (to.origin !== host) writeVersionLink(tree, res, host, to.seq, to.origin, 0, true);
    this.scan = undefined;
    this.seqNr = { seq: to.seq, origin: to.origin, pos: 0, next: 1 };
    this.fileSeen = undefined;
    this.o.log('info', `${res}: replayed ${logName(from.seq, from.origin)} completely (${from.endPos} bytes); continuing with ${logName(to.seq, to.origin)}`);
  }

  // A copy that was replaced or shrank (a re-fetch) may differ from what was scanned: forget
  // the last scan, and ask again if the new copy is damaged too. A defect is looked at again
  // whenever the copy changed at all (a re-fetch may rewrite it in place); reading one record
  // again costs little.
  private checkFileIdentity(seq: number, origin: string): void {
    let st: { ino: number; size: number; mtimeMs: number } | undefined;
    try {
      st = statSync(this.o.tree.abs(resPaths.log(this.o.res, seq, origin)));
    } catch {
      st = undefined;
    }
    const seen = this.fileSeen;
    if (seen !== undefined && seen.seq === seq && seen.origin === origin) {
      const replaced = st === undefined || st.ino !== seen.ino || st.size < seen.sizeBytes;
      const changed = replaced || st!.size !== seen.sizeBytes || st!.mtimeMs !== seen.mtimeMs;
      if (replaced) {
        logDigests.forget(this.o.tree.abs(resPaths.log(this.o.res, seq, origin)));
        this.scan = undefined;
        this.seqNr = undefined;
        this.refetchAsked.clear();
      } else if (changed && this.scan?.stopClass === 'defect') {
        this.scan = undefined;
      }
    }
    this.fileSeen = st === undefined ? undefined : { seq, origin, ino: st.ino, sizeBytes: st.size, mtimeMs: st.mtimeMs };
  }

  private askRefetch(step: Extract<ReplayStep, { kind: 'stop' }>): void {
    const file = step.defect?.file ?? step.file;
    const link = this.state.position;
    if (file === undefined || link === undefined) return;
    const key = `${file}@${step.defect?.offset ?? 'missing'}`;
    if (this.refetchAsked.has(key)) return;
    this.refetchAsked.add(key);
    const seq = step.defect?.seq ?? link.seq;
    const origin = step.defect?.origin ?? link.origin;
    this.o.log('warn', `${this.o.res}: asking for a new copy of ${file} from offset 0`);
    this.o.onRefetch?.({ seq, origin, file, offset: step.defect?.offset, reason: step.reason });
  }

  private publish(step: ReplayStep, input: ReplayInput): void {
    if (step.kind === 'stop' && this.state.message !== step.reason) this.o.log('error', `${this.o.res}: replay stopped: ${step.reason}`);
    this.setState(statusForStep(step, input, this.paused));
  }

  private setState(patch: Partial<ReplayStatus>): void {
    const next = { ...this.state, ...patch };
    if (JSON.stringify(next) === JSON.stringify(this.state)) return;
    this.state = next;
    this.o.onStatus?.(this.status);
  }

  private sleep(): Promise<void> {
    if (this.nudged || this.stopping) {
      this.nudged = false;
      return Promise.resolve();
    }
    this.parked = true;
    for (const w of this.idleWaiters.splice(0)) w();
    return new Promise<void>((resolve) => {
      const timer: Timer = this.o.clock.setTimeout(done, this.pollIntervalMs);
      const self = this;
      function done(): void {
        timer.cancel();
        self.wake = undefined;
        self.parked = false;
        resolve();
      }
      this.wake = done;
    });
  }
}
