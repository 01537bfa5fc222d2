// The version-SEQ-HOST names of a directory, parsed once per listing (issue 11: `marsadm view`
// parsed the thousand versionlink names of each resource directory in the split-brain check and
// again in the progress facts). Names only: no link is read here.
import type { TreeStore } from './store.js';
import type { CachedEntry } from './dir-cache.js';
import { VERSION_NAME } from './log-names.js';

export interface VersionNames {
  /** number -> the names at that number, { name, host }, in listing order */
  bySeq: ReadonlyMap<number, readonly { name: string; host: string }[]>;
  /** host -> its numbers, in listing order */
  byHost: ReadonlyMap<string, readonly number[]>;
}

/** Kept with the listing object it was parsed from: a changed directory gives another listing (dir-cache.ts). */
const byListing = new WeakMap<ReadonlyMap<string, CachedEntry>, VersionNames>();

export function versionNames(tree: TreeStore, relDir: string): VersionNames {
  const listing = tree.listing(relDir);
  const known = listing && byListing.get(listing);
  if (known) return known;
  const bySeq = new Map<number, { name: string; host: string }[]>();
  const byHost = new Map<string, number[]>();
  for (const name of listing?.keys() ?? []) {
    const v = name.startsWith('version-') ? VERSION_NAME.exec(name) : null;
    if (!v) continue;
    const seq = Number(v[1]);
    const host = v[2]!;
    const atSeq = bySeq.get(seq);
    if (atSeq) atSeq.push({ name, host });
    else bySeq.set(seq, [{ name, host }]);
    const ofHost = byHost.get(host);
    if (ofHost) ofHost.push(seq);
    else byHost.set(host, [seq]);
  }
  const parsed = { bySeq, byHost };
  if (listing) byListing.set(listing, parsed);
  return parsed;
}
