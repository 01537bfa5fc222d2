// The merge of a peer's listing, directory by directory, passing over the directories that
// cannot change anything (issue 11: an idle pull merged the whole rebuilt listing, O(resources
// x logfiles) lookups per pull and peer, though nothing had changed on either side).
//
// Why skipping a directory gives the very plan planMerge gives for the whole listing:
//   1. planMerge (merge.ts) passes over every entry whose effect is 'none' before it looks at
//      anything else: such an entry adds no write, no rejection, nothing to `created`, and is
//      never handed to the ownership, removal or value rules. The cross-directory rules
//      (removal markers, `newer`, the value rules' facts, withRemovedLinksDeleted) are only
//      asked about the entries with an effect, and they see the whole listing through `batch`
//      (here: every directory, skipped or not) and our tree through `local`, exactly as in a
//      full merge. So leaving out entries whose effect is 'none' changes nothing in the plan,
//      nor the order of the others.
//   2. An entry's effect (effectOf) is a function of the entry and our link, file or directory
//      at its path, and that is in the DirCache listing of the entry's directory (localState
//      reads TreeStore.entry, which is that listing's entry for the name; a missing directory
//      means every path in it is absent).
//   3. A directory is skipped only when both its remote content and our listing of it are the
//      very objects a previous merge saw when none of its entries had an effect. The remote
//      content is the same object only if the peer's delta named it unchanged
//      (listing-delta.ts: then it is the content it had), and our listing only while our
//      directory is unchanged (dir-cache.ts hands out a new object at every re-read and never an
//      old one back, and never changes one). Same entries against the same local state: every
//      effect is 'none' again.
//   4. The Lamport clock: a full merge observes the stamp of each of our links it reads; those
//      of a skipped directory were observed at the merge that recorded it, and the clock only
//      moves forward, so observing them again does nothing.
// Anything that breaks an identity (a full listing every 5 minutes, a reconnect, our own write to the
// directory, a re-read inside the racy window) only makes the directory be merged again.
// test_suite/unit/incremental-merge-property.test.ts compares the plans after random
// operations on a real tree.
import type { CachedEntry } from '../../common/tree/dir-cache.js';
import type { TreeStore } from '../../common/tree/store.js';
import type { Entry } from '../net/messages.js';
import { listingDirOf } from '../net/messages.js';
import type { BatchView } from './link-rules.js';
import type { DirContent } from './listing-delta.js';
import { planMergeDirs, type LocalState, type MergeOptions, type MergePlan } from './merge.js';
import type { PeerListing } from './tombstones.js';
import { failStopOnInvariant } from '../../common/util/assert.js';

type Listing = ReadonlyMap<string, CachedEntry> | undefined;

/** A directory's entries by name (the last one of a name wins, as in a Map of the whole
 *  listing): built once per content object, and only for directories a rule looks into. */
const byNameOf = new WeakMap<DirContent, Map<string, Entry>>();
function byName(content: DirContent): Map<string, Entry> {
  let m = byNameOf.get(content);
  if (m === undefined) {
    m = new Map();
    for (const e of content.entries) m.set(e.p, e);
    byNameOf.set(content, m);
  }
  return m;
}

/** The logfiles of a directory as paths resource-RES/NAME, once per content object. */
const filesOf = new WeakMap<DirContent, Set<string>>();
function files(content: DirContent): Set<string> {
  let s = filesOf.get(content);
  if (s === undefined) filesOf.set(content, (s = new Set(content.logs.map((l) => `resource-${l.res}/${l.name}`))));
  return s;
}

/** The whole listing as the merge's batch: looked up by directory. */
export function batchOfDirs(dirs: ReadonlyMap<string, DirContent>): BatchView {
  return {
    get(path) {
      const content = dirs.get(listingDirOf(path));
      return content === undefined ? undefined : byName(content).get(path);
    },
    inDir(rel) {
      const content = dirs.get(rel);
      return content === undefined ? [] : byName(content).values();
    },
  };
}

/**
 * The peer's listing for the tombstone rules (tombstones.ts), answered by directory: a logfile
 * resource-RES/NAME can only be in the directory resource-RES, an entry only in the directory
 * of its path (parseEntsPayload and applyListing hold every entry to it).
 */
export function peerListingOfDirs(requestedAtMs: number, dirs: ReadonlyMap<string, DirContent>, peerPulledAtMs?: number): PeerListing {
  return {
    requestedAtMs,
    peerPulledAtMs,
    entries: { get: (path) => { const content = dirs.get(listingDirOf(path)); return content === undefined ? undefined : byName(content).get(path); } },
    files: { has: (path) => { const content = dirs.get(listingDirOf(path)); return content !== undefined && files(content).has(path); } },
  };
}

/** The logfiles of a directory by name (the last one of a name wins), once per content object. */
const logSizesOf = new WeakMap<DirContent, Map<string, number>>();
function logSizes(content: DirContent): Map<string, number> {
  let m = logSizesOf.get(content);
  if (m === undefined) {
    m = new Map();
    for (const l of content.logs) m.set(l.name, l.sizeBytes);
    logSizesOf.set(content, m);
  }
  return m;
}

/**
 * The peer's logfiles, res → (name → bytes), as PeerLink.logs holds them, and whether they
 * differ from `before`. The map of a resource whose directory content is the object of the
 * last pull is taken over (the same Map), so an idle pull costs O(resources); only a changed
 * directory's logfiles are compared.
 */
export function logsOfDirs(dirs: ReadonlyMap<string, DirContent>, before: ReadonlyMap<string, ReadonlyMap<string, number>>): { logs: Map<string, Map<string, number>>; changed: boolean } {
  const logs = new Map<string, Map<string, number>>();
  let changed = false;
  for (const content of dirs.values()) {
    if (content.logs.length === 0) continue;
    // Every logfile of a directory is of its resource (applyListing grouped them so).
    const res = content.logs[0]!.res;
    const m = logSizes(content);
    logs.set(res, m);
    const old = before.get(res);
    if (old !== m && !sameSizes(old, m)) changed = true;
  }
  if (logs.size !== before.size) changed = true;
  return { logs, changed };
}

function sameSizes(a: ReadonlyMap<string, number> | undefined, b: ReadonlyMap<string, number>): boolean {
  if (a === undefined || a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

/** The merge state one peer link keeps: which directories the last merges found quiet. */
export class IncrementalMerge {
  /** rel → the remote content and our listing under which no entry of it had an effect */
  private quiet = new Map<string, { content: DirContent; local: Listing }>();
  /** directories passed over at the last plan (tests and the cost model) */
  skipped = 0;

  /** Forget what was found quiet (the next plan merges everything). */
  reset(): void {
    this.quiet = new Map();
  }

  /**
   * planMerge of the listing `dirs` (in listing order), passing over the quiet directories.
   * Call inside TreeStore.readBatch, with `local` reading the same store: our listing of each
   * directory is then the one `local` reads its entries from.
   */
  plan(tree: TreeStore, dirs: ReadonlyMap<string, DirContent>, local: (path: string) => LocalState, o: MergeOptions): MergePlan {
    const rels = [...dirs.keys()];
    const contents = [...dirs.values()];
    const locals = rels.map((rel) => localListing(tree, rel));
    const skip = (i: number) => {
      const q = this.quiet.get(rels[i]!);
      const l = locals[i]!;
      return q !== undefined && l.ok && q.content === contents[i] && q.local === l.listing;
    };
    const { plan, hadEffect } = planMergeDirs(contents.map((c) => c.entries), batchOfDirs(dirs), local, o, skip);
    const quiet = new Map<string, { content: DirContent; local: Listing }>();
    let skipped = 0;
    rels.forEach((rel, i) => {
      const l = locals[i]!;
      if (skip(i)) skipped++;
      if (!hadEffect[i] && l.ok) quiet.set(rel, { content: contents[i]!, local: l.listing });
    });
    this.quiet = quiet;
    this.skipped = skipped;
    return plan;
  }
}

/** Our listing of a directory; not ok when it cannot be told (then it is never skipped). */
function localListing(tree: TreeStore, rel: string): { ok: true; listing: Listing } | { ok: false } {
  try {
    return { ok: true, listing: tree.listing(rel) };
  } catch (err) {
    failStopOnInvariant(err);
    return { ok: false };
  }
}
