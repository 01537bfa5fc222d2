// The sizes of a resource directory's logfiles without an lstat of every logfile at every read
// (issue 11: a control round and a peer listing ran one lstat per logfile of every resource,
// O(resources x logfiles) per round and per pull).
//
// Why a cached size is sound:
//   - Only the newest logfiles grow. The logger appends to the newest logfile of its own
//     numbers; the fetcher copies one logfile at a time in ascending order (daemon/fetch/
//     plan.ts), so the copy that grows is the newest here. The files with the two highest
//     numbers (every origin, so both sides of a split brain) are always stat'ed: the one just
//     rotated away from gets its last bytes stat'ed too. The one exception is a re-fetch of a
//     damaged copy (daemon/fetch/fetcher.ts truncates it in place and copies it again): it
//     only ever concerns a logfile at or above this host's replay link, so a caller that knows
//     the replay link passes its number (`statFromSeq`) and every logfile from there on is
//     stat'ed at every call (while idle that is the newest logfile anyway).
//   - A logfile created, deleted or replaced changes its directory, so the DirCache hands out
//     a new listing object (dir-cache.ts). Cached sizes belong to the listing they were read
//     under (a WeakMap keyed by it), so a directory change drops them all.
//   - Anything else (a tool that appends to an old logfile behind marsd's back) is seen within
//     RESTAT_MS plus the interval between two calls: the older logfiles are stat'ed again in a
//     rotation spread over the calls, as many per call as are due (older count x elapsed /
//     RESTAT_MS), so no call pays an O(logfiles) burst and an idle directory of L logfiles
//     costs L / RESTAT_MS lstats per second in all, not L per call.
//
// The names are parsed once per listing object (listing-index.ts), so a call on an unchanged
// directory costs a few lstats and no work per logfile. With a contents watch (marsd: inotify
// reports every write and truncation of a file in the directory, TreeStore.takeFileSizes), not
// even those: the newest logfiles are stat'ed again only once a file of the directory was
// written since they last were.
//
// Identity guarantee (callers rely on it to skip unchanged resources cheaply): while the
// listing object is the same and every size stat'ed meanwhile is unchanged, a call returns the
// SAME array object as the previous call for that directory; any change of the listing, of a
// size or of the set of logfiles gives a new array. The array and its elements must not be
// mutated.
import { lstatSync } from 'node:fs';
import type { TreeStore } from './store.js';
import type { CachedEntry } from './dir-cache.js';
import { firstAtOrAbove, listingIndex, type IndexedLog } from './listing-index.js';

/**
 * How old a cached size of an older logfile may get before it is stat'ed again. Only a tool
 * acting behind marsd's back changes such a size (marsd's own in-place rewrites are at or
 * above the replay link, see the header). The rotation costs logfiles / RESTAT_MS lstats a
 * second: with 100 resources x 1,000 logfiles and 10 minutes, about 170 a second (2 minutes
 * gave 830, measured at about 1 % of a core on a loaded machine; 30 s would be 3,300).
 */
export const RESTAT_MS = 600_000;

export interface LogfileSize {
  /** log-SEQ-ORIGIN */
  name: string;
  seq: number;
  origin: string;
  sizeBytes: number;
}

/** The state of one listing object: a size per indexed logfile and the last array returned. */
interface SizesState {
  logs: readonly IndexedLog[];
  /** size of logs[i]; -1 when it vanished or is no regular file (left out of the result) */
  sizes: number[];
  /** logs[i] with i >= this have one of the two highest numbers (stat'ed at every call) */
  newestFrom: number;
  /** the next older logfile the rotation stats */
  cursor: number;
  /** the rotation has stat'ed everything due up to this time */
  rotatedToMs: number;
  out: readonly LogfileSize[];
  /** taken before the newest sizes were last stat'ed (TreeStore.takeFileSizes) */
  writesToken: number | undefined;
  /** the lowest index stat'ed after writesToken was taken: the token vouches for logs[i >= this] */
  writesFrom: number;
}

const byListing = new WeakMap<ReadonlyMap<string, CachedEntry>, SizesState>();
/** lstat calls made and result arrays built (for tests and the cost model) */
export const logSizeStats = { lstats: 0, arrays: 0 };

/**
 * The regular logfiles of tree directory `relDir` with their sizes, ascending by number (then
 * origin). Every logfile numbered `statFromSeq` or higher is stat'ed at this call (see the
 * header: the re-fetch of a damaged copy); the two highest numbers always are. With a contents
 * watch, not when no file of the directory was written since they last were.
 */
export function logfileSizes(tree: TreeStore, relDir: string, nowMs: number = Date.now(), statFromSeq: number = Infinity): readonly LogfileSize[] {
  const listing = tree.listing(relDir);
  if (listing === undefined) return [];
  const known = byListing.get(listing);
  if (known === undefined) {
    const state = fresh(tree, relDir, listing, nowMs);
    byListing.set(listing, state);
    return state.out;
  }
  const { logs, sizes, newestFrom } = known;
  let changed = false;
  const restat = (i: number) => {
    const size = sizeOf(tree, relDir, logs[i]!.name);
    if (size !== sizes[i]) { sizes[i] = size; changed = true; }
  };
  const from = Math.min(newestFrom, firstAtOrAbove(logs, statFromSeq));
  // No file written since the stats of every logfile asked for here: their sizes still hold.
  const vouched = known.writesToken !== undefined && from >= known.writesFrom && tree.filesUnwrittenSince(relDir, known.writesToken);
  if (!vouched) {
    known.writesToken = tree.takeFileSizes(relDir);
    known.writesFrom = from;
    for (let i = from; i < logs.length; i++) restat(i);
  }
  // The rotation over the older logfiles (those below `from` are the ones not stat'ed above).
  const older = newestFrom;
  if (older > 0) {
    const elapsedMs = Math.max(0, nowMs - known.rotatedToMs);
    const due = Math.min(older, Math.floor((elapsedMs * older) / RESTAT_MS));
    if (due === older) known.rotatedToMs = nowMs;
    else known.rotatedToMs += (due * RESTAT_MS) / older;
    for (let n = 0; n < due; n++) {
      const i = known.cursor;
      known.cursor = (i + 1) % older;
      if (i < from) restat(i);
    }
  }
  if (changed) known.out = build(logs, sizes);
  return known.out;
}

function fresh(tree: TreeStore, relDir: string, listing: ReadonlyMap<string, CachedEntry>, nowMs: number): SizesState {
  const writesToken = tree.takeFileSizes(relDir);
  const logs = listingIndex(listing).logs;
  const sizes = logs.map((l) => sizeOf(tree, relDir, l.name));
  const top = logs.length > 0 ? logs[logs.length - 1]!.seq : 0;
  // The first index of the second-highest number (or of the highest when there is one number).
  const topFrom = firstAtOrAbove(logs, top);
  const second = topFrom > 0 ? logs[topFrom - 1]!.seq : top;
  return { logs, sizes, newestFrom: firstAtOrAbove(logs, second), cursor: 0, rotatedToMs: nowMs, out: build(logs, sizes), writesToken, writesFrom: 0 };
}

function sizeOf(tree: TreeStore, relDir: string, name: string): number {
  logSizeStats.lstats++;
  try {
    const st = lstatSync(tree.abs(`${relDir}/${name}`));
    return st.isFile() ? st.size : -1;
  } catch {
    return -1; // deleted concurrently
  }
}

function build(logs: readonly IndexedLog[], sizes: readonly number[]): readonly LogfileSize[] {
  logSizeStats.arrays++;
  const out: LogfileSize[] = [];
  for (let i = 0; i < logs.length; i++) {
    const l = logs[i]!;
    if (sizes[i]! >= 0) out.push({ name: l.name, seq: l.seq, origin: l.origin, sizeBytes: sizes[i]! });
  }
  return out;
}
