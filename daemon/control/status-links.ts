// What this host publishes about one resource in `actual-HOST/*` (docs/tree.md), as a pure
// function of the runners' state: statusLinks(state) → { key: value }. The publisher
// (status-publisher.ts) writes them; marsadm view and the other members read them.
//
// Two shapes: while the primary side is down and the secondary side runs, the secondary's
// figures (copying, replaying, fetch and replay rest); otherwise the primary's (attached,
// recovering, writeback rest, emergency). A stepping-down primary counts as actual primary until
// its writeback is complete (`draining`): its successor waits for is-primary 0.
import type { LoggingMode } from '../logger/emergency-backend.js';
import type { Phase } from './decide.js';
import type { Hole } from './emergency-hole.js';
import { logName } from '../../common/tree/log-names.js';

/** What the secondary side reports while it runs (SecondaryRunner.status()). */
export interface SecondaryStatus {
  attached: boolean;
  copying: boolean;
  syncing: boolean;
  replaying: boolean;
  replayCode: string;
  message: string;
  fetchRestBytes: number;
  replayRestBytes: number;
  syncRateBytesPerS: number;
  /** where the running sync is (0 when none runs): syncstatus moves only every 64 MiB */
  syncPosBytes: number;
  /** bytes/s fetched and replayed over the last 10 s (rate-window.ts) */
  fetchRateBytesPerS: number;
  replayRateBytesPerS: number;
  /** why replay waits ('' while it applies) */
  replayWait: string;
  fetchState: string;
  why: string;
}

/** Why the primary role failed, as published in replay-code and msg-err-replay-stop. */
export interface FailureInfo {
  /** negative, MARS-style replay-code (REPLAY_STOP_CODE) */
  code: number;
  message: string;
}

export interface StatusState {
  host: string;
  phase: Phase;
  /** stepping down: writes refused, writeback not complete yet */
  draining: boolean;
  /** the secondary side's report, when it is active */
  secondary: SecondaryStatus | undefined;
  /** the primary side holds the data disk open */
  diskOpen: boolean;
  openCount: number;
  recoveryRestBytes: number;
  writebackRestBytes: number;
  failure: FailureInfo | undefined;
  socketPath: string;
  primaryWait: string | undefined;
  appState: string;
  stopHookConfigured: boolean;
  /** the primary's write path; 'logging' when it does not run */
  loggingMode: LoggingMode;
  emergency: { sinceMs: number | undefined; reason: string | undefined; hole: Hole | undefined };
  /** the size new NBD connections are told (resize grows it); undefined while no export runs */
  exportSizeBytes?: number | undefined;
}

export function statusLinks(s: StatusState): Record<string, string> {
  if (s.phase === 'down' && s.secondary !== undefined) return secondaryLinks(s, s.secondary);
  // Until writeback after a step-down is complete the host still counts as actual primary.
  const primary = s.phase === 'primary' || s.draining;
  const mode = s.loggingMode;
  return {
    'is-copying': '0', 'is-syncing': '0', 'is-replaying': '0',
    'fetch-rest': '0', 'replay-rest': '0', 'sync-rate': '0', 'sync-pos': '0', 'fetch-rate': '0', 'replay-rate': '0',
    'msg-inf-fetch': 'OK', 'msg-inf-replay': 'OK',
    'is-attached': s.diskOpen ? '1' : '0',
    'is-primary': primary ? '1' : '0',
    'if-on': primary ? '1' : '0',
    'open-count': String(s.diskOpen ? s.openCount : 0),
    'is-recovering': s.phase === 'starting' ? '1' : '0',
    'recovery-rest': String(s.recoveryRestBytes),
    'writeback-rest': String(s.writebackRestBytes),
    'replay-code': s.failure ? `${s.failure.code}` : s.phase === 'primary' ? '0' : '1',
    'msg-err-replay-stop': s.failure ? s.failure.message : 'OK',
    socket: primary ? s.socketPath : '(none)',
    'export-size': String(s.exportSizeBytes ?? 0),
    'primary-wait': s.primaryWait ?? 'OK',
    'app-state': s.appState,
    'has-app-stop': s.stopHookConfigured ? '1' : '0',
    // has-emergency: emergency mode decided (entering, on, or resuming); is-emergency: logging
    // has actually stopped and writes go straight to the disk (MARS's two links).
    'has-emergency': mode !== 'logging' ? '1' : '0',
    'is-emergency': mode === 'direct' || mode === 'resuming' ? '1' : '0',
    'msg-err-emergency': mode === 'logging' ? 'OK' : emergencyMessage(s.emergency, s.host),
  };
}

function secondaryLinks(s: StatusState, st: SecondaryStatus): Record<string, string> {
  return {
    'is-attached': st.attached ? '1' : '0',
    'is-primary': '0',
    'if-on': '0',
    'open-count': '0',
    'is-copying': st.copying ? '1' : '0',
    'is-syncing': st.syncing ? '1' : '0',
    'is-replaying': st.replaying ? '1' : '0',
    'fetch-rest': String(st.fetchRestBytes),
    'replay-rest': String(st.replayRestBytes),
    'sync-rate': String(st.syncRateBytesPerS),
    'sync-pos': String(st.syncPosBytes),
    'fetch-rate': String(st.fetchRateBytesPerS),
    'replay-rate': String(st.replayRateBytesPerS),
    // MARS's msg-inf-KEY links: what fetch and replay are doing, for view-msg-inf.
    'msg-inf-fetch': st.copying && st.fetchState ? st.fetchState.slice(0, 500) : 'OK',
    'msg-inf-replay': st.replayWait ? st.replayWait.slice(0, 500) : 'OK',
    'fetch-state': st.fetchState.slice(0, 500) || 'off',
    'secondary-why': st.why || 'OK',
    'primary-wait': s.primaryWait ?? 'OK',
    'app-state': s.appState,
    'has-app-stop': s.stopHookConfigured ? '1' : '0',
    'replay-code': st.replayCode,
    'msg-err-replay-stop': st.message.slice(0, 1000),
    socket: '(none)',
    'export-size': '0',
    'writeback-rest': '0',
    'is-emergency': '0',
    'has-emergency': '0',
    'msg-err-emergency': 'OK',
  };
}

/** msg-err-emergency: since when, why, where the hole is, and what the admin does about it. */
export function emergencyMessage(e: StatusState['emergency'], host: string): string {
  const since = e.sinceMs !== undefined ? new Date(e.sinceMs).toISOString() : '?';
  const hole = e.hole;
  const where = hole
    ? `${logName(hole.endedSeq, host)} ended at ${hole.endPos} bytes, hole at ${hole.holeSeq}, logging resumes in ${logName(hole.nextSeq, host)}`
    : 'ending the logfile';
  return `emergency mode since ${since} (${e.reason ?? '?'}): writes go straight to the data disk, not logged; ${where}. `
    + 'Free space in /mars (log-delete, or a larger /mars), then re-sync every secondary (docs/manual.md, "Emergency mode")';
}
