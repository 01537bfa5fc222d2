// May this host, now the designated primary of a resource, start its primary role? A pure
// function of the tree snapshot (the MARS user manual: primary start; planned handover): a designated primary first
// replays everything the previous primary logged, and only then starts its own logfile.
//
// Planned handover (mode 'planned'): the previous primary must have left its role (its
// actual-HOST/is-primary is 0, so its versionlinks are final), the sync must be complete, and
// every logfile from the replay link on must be here completely (local size >= its origin's
// LOGPOS, no gap, no two logfiles with one number, nothing numbered up to `maxnr` missing).
// Starting earlier would begin a new logfile in the middle of the old primary's history: a
// split brain made by ourselves.
//
// Forced failover (mode 'force'): none of that is waited for, except the complete sync. What is here is replayed (a torn
// last record is tolerated) and the history continues from there; what the old primary logged
// beyond it is lost to this host, and if the old primary still writes, the two histories
// diverge: a split brain that every host detects (switchover.ts) and `invalidate` repairs.
import { parseReplayLink, parseVersionLink } from '../../common/log/links.js';
import type { PrimaryMode } from '../../common/resource/links.js';
import { logName, versionName } from '../../common/tree/log-names.js';


export interface HandoverInput {
  host: string;
  mode: PrimaryMode;
  sizeBytes: number;
  syncstatusBytes: number | undefined;
  /** the replay link's value (undefined: missing) */
  replayLink: string | undefined;
  /** other members whose actual-HOST/is-primary is 1 in our tree */
  activePrimaries: readonly string[];
  /** logfiles present here */
  logfiles: readonly { seq: number; origin: string; sizeBytes: number }[];
  /** version-SEQ-HOST links present here (at least from the replay link's number on) */
  versionLinks: readonly { seq: number; host: string; value: string }[];
  /** the highest logfile number ever used (`maxnr`), 0 when unknown */
  maxnr: number;
}

/** Undefined when the primary role may start now; otherwise what it waits for. */
export function handoverBlock(v: HandoverInput): string | undefined {
  // Whatever the mode: an inconsistent disk never becomes a primary (marsadm refuses it first;
  // this holds for a primary link written by hand or by an older marsadm too).
  const syncDone = v.syncstatusBytes !== undefined && v.syncstatusBytes >= v.sizeBytes;
  if (!syncDone) {
    return `the sync of this replica is not complete (${v.syncstatusBytes ?? 0} of ${v.sizeBytes} bytes): its disk is not consistent and cannot become primary, `
      + 'not even by "marsadm primary --force". Wait for the sync, or make a consistent member primary';
  }
  if (v.mode === 'force') return undefined;
  if (v.activePrimaries.length > 0) {
    return `waiting for ${v.activePrimaries.join(', ')} to leave the primary role (its device must be closed: unmount it there)`;
  }
  return missingHistory(v);
}

/**
 * What of the previous primary's history is not here yet; undefined when everything logged
 * from the replay link on (as far as the origins' versionlinks say) is present locally.
 */
export function missingHistory(v: Pick<HandoverInput, 'host' | 'replayLink' | 'logfiles' | 'versionLinks' | 'maxnr'>): string | undefined {
  const link = v.replayLink === undefined ? undefined : parseReplayLink(v.replayLink);
  if (!link) return undefined; // starting reports the unusable replay link with its remedy
  let highest = link.seq - 1;
  for (let seq = link.seq; ; seq++) {
    const here = v.logfiles.filter((l) => l.seq === seq);
    if (here.length === 0) break;
    if (here.length > 1) {
      return `split brain: two logfiles numbered ${seq} (from ${here.map((l) => l.origin).join(' and ')}); see "marsadm view"`;
    }
    const file = here[0]!;
    highest = seq;
    if (file.origin === v.host) continue; // our own logfiles are complete here by definition
    const own = v.versionLinks.find((e) => e.seq === seq && e.host === file.origin);
    const parsed = own === undefined ? undefined : parseVersionLink(own.value);
    if (!parsed) return `waiting for ${versionName(seq, file.origin)}, the length of ${logName(seq, file.origin)}`;
    if (file.sizeBytes < parsed.logPos) {
      return `fetching ${logName(seq, file.origin)}: ${file.sizeBytes} of ${parsed.logPos} bytes here`;
    }
  }
  if (v.logfiles.some((l) => l.seq > highest + 1)) {
    return `hole in the logfile numbers after ${highest}: the history cannot be completed (use "marsadm primary --force" to start from here)`;
  }
  if (highest < v.maxnr) return `waiting for logfile ${v.maxnr} (the newest one; not fetched yet)`;
  return undefined;
}

