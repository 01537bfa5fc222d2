// What the replayer reports about itself (actual-HOST/replay-code and friends, marsadm view), as
// a pure function of the step decideReplayStep chose and its input: the replayer only stores
// and forwards it.
import {
  REPLAY_CODE_FINISHED, REPLAY_CODE_RUNNING, replayRestBytes, type ReplayInput, type ReplayStep,
} from './switchover.js';

export interface ReplayStatus {
  /** 0 = applying, 1 = finished what is available (waiting, caught up, or paused), < 0 = stopped */
  replayCode: number;
  /** 'OK', or why replay is stopped */
  message: string;
  /** why replay is waiting (undefined while applying or stopped) */
  waitReason: string | undefined;
  /** the durable replay position: logfile and MINPOS of the replay link */
  position: { seq: number; origin: string; pos: number } | undefined;
  replayedPos: number;
  /** known length of the origin's logfiles (from the current one on) minus what is replayed */
  restBytes: number;
  /** the worker is started and not paused or stopped */
  isReplaying: boolean;
  /** a batch is being applied right now */
  applying: boolean;
  /** false while a half-applied window from a crash is not yet re-applied */
  consistent: boolean;
  /** everything fetched so far is replayed and nothing blocks */
  caughtUp: boolean;
}

/**
 * The status after deciding `step` on `input`. While paused, only a repair and recording a
 * versionlink still run; anything else is reported as paused (code 1, finished).
 */
export function statusForStep(step: ReplayStep, input: ReplayInput, paused: boolean): Partial<ReplayStatus> {
  const link = input.replay;
  const base = {
    position: link && { seq: link.seq, origin: link.origin, pos: link.minPos },
    replayedPos: link?.minPos ?? 0,
    restBytes: replayRestBytes(input),
    // A window of a normal batch is always closed before the next decision, so a window
    // seen here was left by a crash (or an I/O error) and is not yet re-applied.
    consistent: link === undefined || link.len === 0,
  };
  switch (step.kind) {
    case 'apply':
    case 'record-version':
    case 'switch':
      if (paused && !(step.kind === 'apply' && step.repair) && step.kind !== 'record-version') {
        return { ...base, replayCode: REPLAY_CODE_FINISHED, message: 'OK', waitReason: 'replay paused', caughtUp: false };
      }
      return { ...base, replayCode: REPLAY_CODE_RUNNING, message: 'OK', waitReason: undefined, caughtUp: false };
    case 'wait':
      return { ...base, replayCode: REPLAY_CODE_FINISHED, message: 'OK', waitReason: paused ? `replay paused; ${step.reason}` : step.reason, caughtUp: step.caughtUp };
    case 'stop':
      return { ...base, replayCode: step.code, message: step.reason, waitReason: undefined, caughtUp: false };
  }
}
