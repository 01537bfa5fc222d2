// The sizes of a resource directory's logfiles without an lstat of every logfile at every read
// (issue 11: a control round and a peer listing ran one lstat per logfile of every resource,
// O(resources x logfiles) per round and per pull).
//
// Why a cached size is sound:
//   - Only the newest logfiles grow. The logger appends to the newest logfile of its own
//     numbers; the fetcher copies one logfile at a time in ascending order (daemon/fetch/
//     plan.ts), so the copy that grows is the newest here. The files with the two highest
//     numbers (every origin, so both sides of a split brain) are always stat'ed: the one just
//     rotated away from gets its last bytes stat'ed too.
//   - A logfile created, deleted or replaced changes its directory, so the DirCache hands out
//     a new listing object (dir-cache.ts). Cached sizes belong to the listing they were read
//     under (a WeakMap keyed by it), so a directory change drops them all.
//   - Anything else (a tool that appends to an old logfile behind marsd's back) is seen within
//     RESTAT_MS: a size older than that is stat'ed again.
import { lstatSync } from 'node:fs';
import type { TreeStore } from './store.js';
import type { CachedEntry } from './dir-cache.js';
import { LOG_NAME } from './log-names.js';

/** How old a cached size of an older logfile may get before it is stat'ed again. */
export const RESTAT_MS = 30_000;

export interface LogfileSize {
  /** log-SEQ-ORIGIN */
  name: string;
  seq: number;
  origin: string;
  sizeBytes: number;
}

interface Known { sizeBytes: number; atMs: number }

const byListing = new WeakMap<ReadonlyMap<string, CachedEntry>, Map<string, Known>>();
/** lstat calls made (for tests and the cost model) */
export const logSizeStats = { lstats: 0 };

/** The regular logfiles of tree directory `relDir` with their sizes, in listing order. */
export function logfileSizes(tree: TreeStore, relDir: string, nowMs: number = Date.now()): LogfileSize[] {
  const listing = tree.listing(relDir);
  if (listing === undefined) return [];
  let known = byListing.get(listing);
  if (known === undefined) byListing.set(listing, (known = new Map()));
  const logs: { name: string; seq: number; origin: string }[] = [];
  let top = -1;
  let second = -1;
  for (const [name, e] of listing) {
    if (e.kind !== 'file') continue;
    const m = LOG_NAME.exec(name);
    if (!m) continue;
    const seq = Number(m[1]);
    logs.push({ name, seq, origin: m[2]! });
    if (seq > top) { second = top; top = seq; } else if (seq < top && seq > second) second = seq;
  }
  const out: LogfileSize[] = [];
  for (const l of logs) {
    const k = known.get(l.name);
    if (k !== undefined && l.seq < second && nowMs - k.atMs < RESTAT_MS) {
      out.push({ ...l, sizeBytes: k.sizeBytes });
      continue;
    }
    logSizeStats.lstats++;
    try {
      const st = lstatSync(tree.abs(`${relDir}/${l.name}`));
      if (!st.isFile()) continue;
      known.set(l.name, { sizeBytes: st.size, atMs: nowMs });
      out.push({ ...l, sizeBytes: st.size });
    } catch {
      known.delete(l.name); // deleted concurrently
    }
  }
  return out;
}
