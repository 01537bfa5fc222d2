// Merging a peer's tree entries into ours (the MARS user manual: tree propagation), as a pure function: the
// caller reads the local state and executes the plan. A remote link replaces the local one
// only if its Lamport stamp is strictly newer; the local copy keeps the writer's stamp, so
// stamps only move forward and the last writer wins everywhere. A tombstone is never created
// where nothing exists, except that it replaces a local logfile (so log deletion propagates).
import { mayWrite, removalVerdict } from '../../common/tree/ownership.js';
import { checkLinkValue, type BatchView, type LinkFacts } from './link-rules.js';
import { listingDirOf } from '../net/messages.js';
import type { LinkLookup } from '../../common/tree/removal.js';
import { withRemovedLinksDeleted, type LinksOfHost } from './removed-links.js';

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
  /** the receiver's real clock (stamps beyond it + stampWindowUs are refused) */
  nowUs: number;
  stampWindowUs?: number;
  maxResources?: number;
  /** what the value rules (link-rules.ts) need beyond the stored links */
  facts?: Pick<LinkFacts, 'knownSeqs' | 'resources'>;
  /** the logfile number the receiver replays per resource (see mayWrite) */
  replayFloor?: (res: string) => number;
  /** the receiver's live links of a host (removed-links.ts): a marker this merge brings into force deletes them */
  linksOf?: LinksOfHost;
}

export interface MergePlan {
  /** links to write with the remote stamp (replaceFile: a logfile is deleted by it) */
  writes: (TreeEntry & { replaceFile: boolean })[];
  /** entries a peer may not write here: logged, never applied */
  rejected: { path: string; reason: string }[];
  /** entries refused without a word: the receiver's own links, which every listing carries */
  ignored: number;
}

function refuse(plan: MergePlan, path: string, a: { reason: string; quiet?: boolean }): void {
  if (a.quiet) plan.ignored++;
  else plan.rejected.push({ path, reason: a.reason });
}

/** What applying e would do to the local state: nothing, write a link, replace a logfile, or refuse. */
export function effectOf(e: TreeEntry, mine: LocalState): 'none' | 'write' | 'replace-file' | { reason: string } {
  const deletion = e.v === TOMBSTONE_VALUE;
  switch (mine.kind) {
    case 'absent':
      return deletion ? 'none' : 'write';
    case 'link':
      // A newer stamp wins even with the same value: stamps must keep moving forward.
      return e.s > mine.stampUs ? 'write' : 'none';
    case 'file':
      return deletion ? 'replace-file' : { reason: 'a regular file exists here; only a deletion may replace it' };
    case 'other':
      return { reason: 'a directory exists at this path' };
  }
}

export function planMerge(remote: readonly TreeEntry[], local: (path: string) => LocalState, o: MergeOptions): MergePlan {
  return planMergeDirs([remote], batchOf(remote), local, o).plan;
}

/** A flat batch as a BatchView: a Map by path (the last entry of a path wins), by directory on demand. */
export function batchOf(remote: readonly TreeEntry[]): BatchView {
  const byPath = new Map(remote.map((e) => [e.p, e]));
  return {
    get: (path) => byPath.get(path),
    inDir: (rel) => [...byPath.values()].filter((e) => listingDirOf(e.p) === rel),
  };
}

/**
 * planMerge of a listing given as groups of entries (its directories, in listing order: the
 * listing is their concatenation), `batch` the whole listing. `skip(i)`: the caller knows that
 * every entry of group i has the effect 'none' here (incremental-merge.ts), so it is not
 * looked at; that changes nothing in the plan, since an entry whose effect is 'none' is
 * passed over below before it touches anything. Also says, per group, whether any of its
 * entries had an effect (a skipped group: false).
 */
export function planMergeDirs(groups: readonly (readonly TreeEntry[])[], batch: BatchView, local: (path: string) => LocalState, o: MergeOptions,
  skip: (group: number) => boolean = () => false): { plan: MergePlan; hadEffect: boolean[] } {
  const plan: MergePlan = { writes: [], rejected: [], ignored: 0 };
  // Removal markers (common/tree/removal.ts) are read from our tree; a rejoin's fresh
  // membership link may arrive in this very batch.
  // The same few marker and membership links are asked for every entry: read each once.
  const looked = new Map<string, ReturnType<LinkLookup>>();
  const lookup: LinkLookup = (path) => {
    if (looked.has(path)) return looked.get(path);
    const l = local(path);
    const found = l.kind === 'link' ? { value: l.value, stampUs: l.stampUs, deleted: l.value === TOMBSTONE_VALUE } : undefined;
    looked.set(path, found);
    return found;
  };
  const newer = (path: string, stampUs: number) => {
    const e = batch.get(path);
    return e !== undefined && e.v !== TOMBSTONE_VALUE && e.s > stampUs;
  };
  const facts: LinkFacts = { lookup, batch, ...o.facts };
  const limits = { nowUs: o.nowUs, ...(o.stampWindowUs !== undefined ? { stampWindowUs: o.stampWindowUs } : {}), ...(o.maxResources !== undefined ? { maxResources: o.maxResources } : {}) };
  const created = new Set<string>();
  const hadEffect = groups.map(() => false);
  groups.forEach((group, i) => {
    if (skip(i)) return;
    for (const e of group) {
      // What we hold already (the same or a newer stamp) changes nothing whoever sends it, so it
      // is not judged: in a steady state that is nearly every entry of every listing, and the
      // rules below cost a dozen lookups each. A stale copy is routine, not an attack.
      const effect = effectOf(e, local(e.p));
      if (effect === 'none') continue;
      hadEffect[i] = true;
      const owned = removalVerdict(e.p, e.v, o.sender, o.receiver, TOMBSTONE_VALUE, lookup, newer)
        ?? mayWrite(e.p, e.v, o.sender, o.receiver, TOMBSTONE_VALUE, o.replayFloor);
      if (!owned.ok) {
        refuse(plan, e.p, owned);
        continue;
      }
      if (typeof effect === 'object') {
        plan.rejected.push({ path: e.p, reason: effect.reason });
        continue;
      }
      // The value rules judge only what would change here: a peer still listing an older value
      // (a stale copy with an older stamp) is routine, not an attack.
      const sane = checkLinkValue(e, o.sender, facts, limits, TOMBSTONE_VALUE, created);
      if (!sane.ok) refuse(plan, e.p, sane);
      else plan.writes.push({ ...e, replaceFile: effect === 'replace-file' });
    }
  });
  if (o.linksOf) plan.writes = withRemovedLinksDeleted(plan.writes, o.receiver, lookup, o.linksOf, TOMBSTONE_VALUE, (e) => ({ ...e, replaceFile: false }));
  return { plan, hadEffect };
}
