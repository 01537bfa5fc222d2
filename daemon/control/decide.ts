// The primary side's decision for one resource on this host, as a pure function of the tree
// snapshot and what is running (docs/design.md §2, "functional core"): start, stop, rotate, make
// the next logfile, or nothing, and what a takeover waits for. It is one part of the round's
// plan (plan.ts), which the runner executes; nothing here touches the filesystem or the clock.
// At most one action is in flight: while one is (rt.actionInFlight) no other is decided.
import type { ResourceSnapshot } from '../../common/resource/snapshot.js';
import { handoverBlock } from './decide-handover.js';

export type Phase =
  | 'down' // nothing runs
  | 'starting' // recovery replay and logger start in progress
  | 'primary' // logger runs, export offered
  | 'stopping' // flushing, writeback, closing the export
  | 'failed'; // start or run failed; waits for the inputs to change

export interface RuntimeState {
  phase: Phase;
  /** logfile the logger appends to (phase primary) */
  currentSeq?: number;
  /** bytes appended to it so far */
  currentLogBytes?: number;
  /** snapshot signature when the failure happened */
  failedSignature?: string;
  /**
   * an action of this resource is queued or running on its runner: its effect is not in this
   * state yet, so deciding again from it would repeat it (the rotation race of issue 10)
   */
  actionInFlight?: boolean;
}

export interface DecideConfig {
  host: string;
  /** rotate automatically once the current logfile reaches this size (0 = never) */
  logRotateBytes: number;
}

export type Action =
  | { kind: 'start-primary' }
  | { kind: 'stop-primary'; reason: string }
  | { kind: 'rotate'; toSeq: number }
  | { kind: 'create-next-logfile'; seq: number }
  | { kind: 'none' };

export interface Decision {
  action: Action;
  /** designated primary here and attach wanted */
  wantPrimary: boolean;
  /** why the resource is not running although it is wanted, for status */
  blockedBy?: string;
  /**
   * designated primary here, but the previous primary's history is not complete here yet:
   * the secondary side keeps fetching and replaying until it is
   */
  handover?: boolean;
}

/** Start the primary role now, or say what the takeover still waits for. */
function startOrWait(s: ResourceSnapshot, cfg: DecideConfig, wantPrimary: boolean): Decision {
  const block = handoverBlock({
    host: cfg.host, mode: s.primaryMode, sizeBytes: s.sizeBytes!, syncstatusBytes: s.syncstatusBytes,
    replayLink: s.replayLink, activePrimaries: s.activePrimaries, logfiles: s.logfiles, versionLinks: s.versionLinks, maxnr: s.maxnr,
  });
  if (block !== undefined) return { action: { kind: 'none' }, wantPrimary, blockedBy: block, handover: true };
  return { action: { kind: 'start-primary' }, wantPrimary };
}

export function decide(s: ResourceSnapshot, rt: RuntimeState, cfg: DecideConfig): Decision {
  const d = decideAction(s, rt, cfg);
  // One action at a time: the next is decided from the state the previous one left.
  return rt.actionInFlight && d.action.kind !== 'none' ? { ...d, action: { kind: 'none' } } : d;
}

function decideAction(s: ResourceSnapshot, rt: RuntimeState, cfg: DecideConfig): Decision {
  const missing = s.removed !== undefined ? s.removed
    : s.dataPath === undefined ? 'no data-HOST link (not a member here)'
    : s.sizeBytes === undefined ? 'no valid size link'
    : undefined;
  const wantPrimary = missing === undefined && s.todo.attach && s.designatedPrimary === cfg.host;

  switch (rt.phase) {
    case 'starting':
    case 'stopping':
      return { action: { kind: 'none' }, wantPrimary };
    case 'failed':
      if (!wantPrimary) return { action: { kind: 'none' }, wantPrimary };
      if (rt.failedSignature === s.signature) return { action: { kind: 'none' }, wantPrimary, blockedBy: 'start failed; waiting for a change' };
      return startOrWait(s, cfg, wantPrimary);
    case 'down':
      if (wantPrimary) return startOrWait(s, cfg, wantPrimary);
      return { action: { kind: 'none' }, wantPrimary, ...(missing ? { blockedBy: missing } : {}) };
    case 'primary': {
      if (!wantPrimary) {
        const reason = !s.todo.attach ? 'detach requested' : missing ?? `designated primary is now ${s.designatedPrimary ?? '(none)'}`;
        return { action: { kind: 'stop-primary', reason }, wantPrimary };
      }
      const cur = rt.currentSeq;
      if (cur === undefined) return { action: { kind: 'none' }, wantPrimary };
      const next = s.logfiles.find((l) => l.seq === cur + 1 && l.origin === cfg.host);
      if (next && next.sizeBytes === 0) return { action: { kind: 'rotate', toSeq: cur + 1 }, wantPrimary };
      if (!next && cfg.logRotateBytes > 0 && (rt.currentLogBytes ?? 0) >= cfg.logRotateBytes) {
        return { action: { kind: 'create-next-logfile', seq: cur + 1 }, wantPrimary };
      }
      return { action: { kind: 'none' }, wantPrimary };
    }
  }
}
