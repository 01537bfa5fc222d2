// The vocabulary of the replay decision: its input (what the replayer knows), its steps and the
// MARS-style codes it publishes. Split from switchover.ts so the deciders it is made of
// (switchover.ts, content-check.ts) share one set of types without importing each other.
import type { ReplayLink } from '../../common/log/links.js';
import type { StopKind } from '../../common/log/scanner.js';
/** MARS replay-code values: 0 = replay running, 1 = finished (caught up / waiting). */
export const REPLAY_CODE_RUNNING = 0;
export const REPLAY_CODE_FINISHED = 1;

/**
 * Negative errno-style codes of a stopped replay, published as replay-code: the one table for
 * the secondary's replayer and for the primary's start (recover-primary.ts, primary-runner.ts).
 */
export const REPLAY_STOP_CODE = {
  /** a logfile the replay link needs is missing */
  ENOENT: -2,
  /** an I/O error while applying (the replayer retries), or that took the primary down */
  EIO: -5,
  /** split brain: two logfiles with the same number */
  EEXIST: -17,
  /** the replay link or an own versionlink is unusable */
  EINVAL: -22,
  /** the data device is smaller than the resource (a primary cannot start) */
  ENOSPC: -28,
  /** hole in the logfile numbering (emergency mode, deleted logfile) */
  ENODATA: -61,
  /** the version chain or the origin's lengths contradict what was replayed */
  EPROTO: -71,
  /** defective logfile copy (checksum, magic, bad field, record beyond the device) */
  EBADMSG: -74,
} as const;

export interface LocalLogfile {
  seq: number;
  origin: string;
  sizeBytes: number;
}

/** One `version-SEQ-HOST` link as seen in the local tree (own, the origins', other hosts'). */
export interface VersionLinkEntry {
  seq: number;
  host: string;
  value: string;
}

/**
 * 'incomplete-write': reading ended cleanly, but after the last whole write request the copy
 * holds only the first records of the next one (held back until the rest is fetched).
 */
export type ScanStopClass = 'clean' | 'incomplete-write' | 'torn' | 'defect';

/** How the last apply in the current logfile ended. */
export interface ScanOutcome {
  /** end of the last good record: where reading stopped */
  endPos: number;
  /** how far the scan was allowed to read (the local size, or the origin's final length) */
  limitBytes: number;
  stopClass: ScanStopClass;
  stopKind: StopKind;
  detail: string;
}

export interface ReplayInput {
  host: string;
  /** own replay link; undefined when missing or malformed */
  replay: ReplayLink | undefined;
  /**
   * the logfiles present locally, at least those numbered from the replay link's SEQ on (any
   * order); the decision looks at no lower number (tree-view.ts reads only those)
   */
  logfiles: readonly LocalLogfile[];
  /** versionlinks in the tree with numbers from the replay link's SEQ-1 on (any order) */
  versionLinks: readonly VersionLinkEntry[];
  /** the last apply's outcome in the replay link's logfile; undefined when nothing is known */
  scan: ScanOutcome | undefined;
  designatedPrimary: string | undefined;
  isDesignatedPrimary: boolean;
  /**
   * The content mismatch this host found earlier and kept in `content-mismatch-HOST` (local,
   * survives a restart); 'malformed' when that link is unusable; undefined when there is none.
   */
  keptMismatch?: ContentMismatch | 'malformed';
}

export interface DefectInfo {
  seq: number;
  origin: string;
  file: string;
  offset: number;
  kind: StopKind;
  detail: string;
}

export type ReplayStep =
  /**
   * apply the records in [fromPos, toPos) of logfile seq; repair = re-apply a dirty window;
   * final = toPos is where the origin finished the logfile (a write request it cut off there
   * is applied as it stands)
   */
  | { kind: 'apply'; seq: number; origin: string; fromPos: number; toPos: number; repair: boolean; final: boolean }
  /** own version-SEQ-HOST does not describe the replay link yet (a crash between the two writes) */
  | { kind: 'record-version'; seq: number; origin: string; logPos: number }
  | { kind: 'wait'; reason: string; caughtUp: boolean }
  | { kind: 'switch'; from: { seq: number; origin: string; endPos: number }; to: { seq: number; origin: string } }
  /** refetch: the local copy of defect.file (or the named file) should be fetched again from offset 0 */
  | { kind: 'stop'; code: number; reason: string; refetch: boolean; defect?: DefectInfo; file?: string; contentMismatch?: ContentMismatch };

/** The local copy of logfile seq differs from the origin's in its bytes before pos. */
export interface ContentMismatch {
  seq: number;
  origin: string;
  pos: number;
}
