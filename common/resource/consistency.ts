// Is a replica's disk consistent, i.e. a state the primary's disk really had at some moment? A
// pure function of the replica's links (the MARS user manual: "Refusing to switch inconsistent
// host"). A full or partial sync copies blocks of different ages: the copy becomes consistent
// only when the sync is complete AND replay has passed the primary's log position recorded when
// the sync ended (syncpos-HOST). Before that the disk is a mix of old and new blocks, and no
// flag makes such a disk a primary: `primary --force` refuses it too (docs/manual.md).
import { compareReplayLinks, parseReplayLink, parseVersionLink } from '../log/links.js';

export interface ReplicaLinks {
  sizeBytes: number;
  /** syncstatus-HOST (undefined: missing) */
  syncstatusBytes: number | undefined;
  /** syncpos-HOST value (undefined: no sync since join, nothing to pass) */
  syncpos: string | undefined;
  /** replay-HOST value */
  replayLink: string | undefined;
}

/** Why the replica's disk is not consistent, or undefined when it is. */
export function inconsistency(v: ReplicaLinks): string | undefined {
  const synced = v.syncstatusBytes ?? 0;
  if (synced < v.sizeBytes) return `its sync is not complete (${synced} of ${v.sizeBytes} bytes)`;
  if (v.syncpos !== undefined) {
    const pos = parseReplayLink(v.syncpos);
    const replay = v.replayLink === undefined ? undefined : parseReplayLink(v.replayLink);
    if (pos === undefined) return `its syncpos link is unreadable (${JSON.stringify(v.syncpos)})`;
    if (replay === undefined || compareReplayLinks(replay, pos) < 0) {
      return `a hole in its history: replay (${v.replayLink ?? 'none'}) has not yet reached the end of its sync (${v.syncpos})`;
    }
  }
  return undefined;
}

/**
 * How many bytes of logged history a replica at `replayLink` has not replayed, as far as the
 * versionlinks known here say (`versions`: every version-SEQ-HOST value). Per logfile number
 * the longest known length counts.
 */
export function bytesBehind(replayLink: string | undefined, versions: readonly string[]): number | undefined {
  const replay = replayLink === undefined ? undefined : parseReplayLink(replayLink);
  if (!replay) return undefined;
  const longest = new Map<number, number>();
  for (const text of versions) {
    const v = parseVersionLink(text);
    if (v && v.seq >= replay.seq) longest.set(v.seq, Math.max(longest.get(v.seq) ?? 0, v.logPos));
  }
  let behind = 0;
  for (const [seq, logPos] of longest) behind += seq === replay.seq ? Math.max(0, logPos - replay.minPos) : logPos;
  return behind;
}
