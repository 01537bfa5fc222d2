// Reading and writing the per-resource links that carry replication state: the replay link,
// versionlinks (hash chain), logfile numbering. Shared by the daemon and marsadm so both parse
// and format these values in exactly one place.
import type { TreeStore } from '../tree/store.js';
import { resPaths, resourceDir } from '../tree/paths.js';
import { LOG_NAME } from '../tree/log-names.js';
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
  for (const name of tree.list(resourceDir(res))) {
    const m = LOG_NAME.exec(name);
    if (m && tree.readRaw(`${resourceDir(res)}/${name}`) === undefined && tree.exists(`${resourceDir(res)}/${name}`)) {
      out.push({ seq: Number(m[1]), origin: m[2]!, name });
    }
  }
  return out.sort((a, b) => a.seq - b.seq || a.origin.localeCompare(b.origin));
}

/** Raise `maxnr` (highest logfile number ever used) when `seq` exceeds it. */
export function raiseMaxnr(tree: TreeStore, res: string, seq: number): void {
  const cur = Number(tree.value(resPaths.maxnr(res)) ?? '0');
  if (!(cur >= seq)) tree.write(resPaths.maxnr(res), String(seq));
}

/** primary-mode-HOST: how the next takeover of this host may go (marsadm primary [--force|--ignore-sync]). */
export type PrimaryMode = 'planned' | 'ignore-sync' | 'force';

export const PRIMARY_MODES: readonly PrimaryMode[] = ['planned', 'ignore-sync', 'force'];
