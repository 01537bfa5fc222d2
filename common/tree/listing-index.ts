// What a resource directory's listing says about its numbered entries, derived once per listing
// object (issue 11: the replayer's tick and the control round's snapshot ran a regex over every
// name of the directory, O(logfiles), at every tick and round of an idle resource).
//
// Why deriving once per listing object is sound: the DirCache (dir-cache.ts) hands out the same
// listing object only while the directory is unchanged, and that object is never mutated; any
// change (a logfile or link created, replaced or deleted) gives a new object. The index is kept
// in a WeakMap keyed by that object, so it lives exactly as long as the listing it describes.
// Nothing here is a file size: those change with appends, which leave the directory alone
// (log-sizes.ts stats them).
import type { CachedEntry } from './dir-cache.js';
import { LOG_NAME, VERSION_NAME } from './log-names.js';

import { TOMBSTONE } from './store.js';

export interface IndexedLog {
  /** log-SEQ-ORIGIN */
  name: string;
  seq: number;
  origin: string;
}

export interface IndexedVersion {
  seq: number;
  host: string;
  value: string;
  stampUs: number;
}

export interface ListingIndex {
  /** the regular logfiles, ascending by number, then by origin (localeCompare) */
  logs: readonly IndexedLog[];
  /** the live (not deleted) version-SEQ-HOST links, ascending by number, then in listing order */
  versions: readonly IndexedVersion[];
  /** the HOST of every data-HOST entry, in listing order */
  members: readonly string[];
}

const byListing = new WeakMap<ReadonlyMap<string, CachedEntry>, ListingIndex>();
/** indexes built (for tests and the cost model: one per listing object) */
export const listingIndexStats = { built: 0 };

export function compareLogs(a: { seq: number; origin: string }, b: { seq: number; origin: string }): number {
  return a.seq - b.seq || a.origin.localeCompare(b.origin);
}

/** The index of a listing; built on the first call for that listing object, then returned as is. */
export function listingIndex(listing: ReadonlyMap<string, CachedEntry>): ListingIndex {
  const known = byListing.get(listing);
  if (known !== undefined) return known;
  const logs: IndexedLog[] = [];
  const versions: IndexedVersion[] = [];
  const members: string[] = [];
  for (const [name, e] of listing) {
    if (name.startsWith('data-')) members.push(name.slice('data-'.length));
    if (e.kind === 'file') {
      const m = LOG_NAME.exec(name);
      if (m) logs.push({ name, seq: Number(m[1]), origin: m[2]! });
      continue;
    }
    if (e.kind !== 'link' || e.value === TOMBSTONE) continue;
    const v = VERSION_NAME.exec(name);
    if (v) versions.push({ seq: Number(v[1]), host: v[2]!, value: e.value, stampUs: e.stampUs });
  }
  logs.sort(compareLogs);
  versions.sort((a, b) => a.seq - b.seq); // stable: listing order within a number
  const index: ListingIndex = { logs, versions, members };
  listingIndexStats.built++;
  byListing.set(listing, index);
  return index;
}

/** The position of the first element whose seq is >= `seq` in an array ascending by seq. */
export function firstAtOrAbove(sorted: readonly { seq: number }[], seq: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]!.seq < seq) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
