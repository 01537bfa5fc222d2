// Reading and writing the per-resource links that carry replication state: the replay link,
// versionlinks (hash chain), logfile numbering. Shared by the daemon and marsadm so both parse
// and format these values in exactly one place.
import type { TreeStore } from '../tree/store.js';
import { resPaths, resourceDir } from '../tree/paths.js';
import { LOG_NAME } from '../tree/log-names.js';
import { listingIndex } from '../tree/listing-index.js';
import { formatReplayLink, nextVersionLink, parseReplayLink } from '../log/links.js';
import { logDigests } from '../log/content-digest.js';

export interface ReplayLinkValue {
  seq: number;
  origin: string;
  minPos: number;
  len: number;
}

export function readReplayLink(tree: TreeStore, res: string, host: string): ReplayLinkValue | undefined {
  const raw = tree.value(resPaths.replay(res, host));
  if (raw === undefined) return undefined;
  return parseReplayLink(raw);
}

export function writeReplayLink(tree: TreeStore, res: string, host: string, v: ReplayLinkValue, durable: boolean): boolean {
  return tree.write(resPaths.replay(res, host), formatReplayLink(v), { durable, onlyIfChanged: true });
}

/**
 * Write version-SEQ-HOST as the successor of version-(SEQ-1)-HOST with the given LOGPOS, over
 * the content of the local log-SEQ-ORIGIN up to LOGPOS (which must be here, unless LOGPOS is 0).
 */
export function writeVersionLink(tree: TreeStore, res: string, host: string, seq: number, origin: string, logPos: number, durable: boolean): string {
  const prev = tree.value(resPaths.version(res, seq - 1, host)) ?? '';
  const value = nextVersionLink(prev, seq, origin, logPos, logDigests.digestAt(tree.abs(resPaths.log(res, seq, origin)), logPos));
  tree.write(resPaths.version(res, seq, host), value, { durable, onlyIfChanged: true });
  return value;
}

/** Regular logfiles of a resource, ascending by number. */
export function listLogfiles(tree: TreeStore, res: string): { seq: number; origin: string; name: string }[] {
  const out: { seq: number; origin: string; name: string }[] = [];
  // One look at the directory's listing, not two lookups per name (each a stat of the
  // directory outside a read batch: the metrics scrape at 100 x 1000 made 300,000 of them).
  // Names first: a lazy listing (marsadm) reads a link only when get() asks for it.
  const listing = tree.listing(resourceDir(res));
  if (listing === undefined) return out;
  for (const name of listing.keys()) {
    const m = LOG_NAME.exec(name);
    const e = m ? listing.get(name) : undefined;
    // A link with a logfile's name (a tombstone of a deleted logfile) is not a logfile.
    if (m && e !== undefined && e.kind !== 'link') out.push({ seq: Number(m[1]), origin: m[2]!, name });
  }
  return out.sort((a, b) => a.seq - b.seq || a.origin.localeCompare(b.origin));
}

/** How many logfiles the resource has here (metrics): from the listing's index, built once per listing. */
export function logfileCount(tree: TreeStore, res: string): number {
  const listing = tree.listing(resourceDir(res));
  return listing === undefined ? 0 : listingIndex(listing).logs.length;
}

/** Raise `maxnr` (highest logfile number ever used) when `seq` exceeds it. */
export function raiseMaxnr(tree: TreeStore, res: string, seq: number): void {
  const cur = Number(tree.value(resPaths.maxnr(res)) ?? '0');
  if (!(cur >= seq)) tree.write(resPaths.maxnr(res), String(seq));
}

/** primary-mode-HOST: how the next takeover of this host may go (marsadm primary [--force|--ignore-sync]). */
export type PrimaryMode = 'planned' | 'ignore-sync' | 'force';

export const PRIMARY_MODES: readonly PrimaryMode[] = ['planned', 'ignore-sync', 'force'];
