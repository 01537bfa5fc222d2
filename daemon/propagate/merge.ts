// Merging a peer's tree entries into ours (the MARS user manual: tree propagation), as a pure function: the
// caller reads the local state and executes the plan. A remote link replaces the local one
// only if its Lamport stamp is strictly newer; the local copy keeps the writer's stamp, so
// stamps only move forward and the last writer wins everywhere. A tombstone is never created
// where nothing exists, except that it replaces a local logfile (so log deletion propagates).
import { mayWrite, removalVerdict } from '../../common/tree/ownership.js';
import { MAX_LAMPORT_FUTURE_US } from '../../common/tree/lamport.js';

export const TOMBSTONE_VALUE = '.deleted';

export interface TreeEntry {
  /** path relative to the tree root, 1-3 plain components */
  p: string;
  /** link value; TOMBSTONE_VALUE for a deletion */
  v: string;
  /** Lamport stamp, microseconds */
  s: number;
}

export type LocalState =
  | { kind: 'absent' }
  | { kind: 'link'; value: string; stampUs: number }
  | { kind: 'file' }
  | { kind: 'other' };

export interface MergeOptions {
  sender: string;
  receiver: string;
  nowUs: number;
  /** the logfile number the receiver replays per resource (see mayWrite) */
  replayFloor?: (res: string) => number;
}

export interface MergePlan {
  /** links to write with the remote stamp (replaceFile: a logfile is deleted by it) */
  writes: (TreeEntry & { replaceFile: boolean })[];
  /** entries a peer may not write here: logged, never applied */
  rejected: { path: string; reason: string }[];
  /** entries refused without a word: the receiver's own links, which every listing carries */
  ignored: number;
}

export function planMerge(remote: readonly TreeEntry[], local: (path: string) => LocalState, o: MergeOptions): MergePlan {
  const plan: MergePlan = { writes: [], rejected: [], ignored: 0 };
  // Removal markers (common/tree/removal.ts) are read from our tree; a rejoin's fresh
  // membership link may arrive in this very batch.
  const lookup = (path: string) => {
    const l = local(path);
    return l.kind === 'link' ? { value: l.value, stampUs: l.stampUs, deleted: l.value === TOMBSTONE_VALUE } : undefined;
  };
  const batch = new Map(remote.map((e) => [e.p, e]));
  const newer = (path: string, stampUs: number) => {
    const e = batch.get(path);
    return e !== undefined && e.v !== TOMBSTONE_VALUE && e.s > stampUs;
  };
  for (const e of remote) {
    const allowed = removalVerdict(e.p, e.v, o.sender, o.receiver, TOMBSTONE_VALUE, lookup, newer)
      ?? mayWrite(e.p, e.v, o.sender, o.receiver, TOMBSTONE_VALUE, o.replayFloor);
    if (!allowed.ok) {
      if (allowed.quiet) plan.ignored++;
      else plan.rejected.push({ path: e.p, reason: allowed.reason });
      continue;
    }
    if (e.s > o.nowUs + MAX_LAMPORT_FUTURE_US) {
      plan.rejected.push({ path: e.p, reason: `stamp ${e.s} lies more than 30 days in the future` });
      continue;
    }
    const mine = local(e.p);
    const deletion = e.v === TOMBSTONE_VALUE;
    switch (mine.kind) {
      case 'absent':
        if (!deletion) plan.writes.push({ ...e, replaceFile: false });
        break;
      case 'link':
        // A newer stamp wins even with the same value: stamps must keep moving forward.
        if (e.s > mine.stampUs) plan.writes.push({ ...e, replaceFile: false });
        break;
      case 'file':
        if (deletion) plan.writes.push({ ...e, replaceFile: true });
        else plan.rejected.push({ path: e.p, reason: 'a regular file exists here; only a deletion may replace it' });
        break;
      case 'other':
        plan.rejected.push({ path: e.p, reason: 'a directory exists at this path' });
        break;
    }
  }
  return plan;
}
