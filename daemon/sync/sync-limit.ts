// The sync bandwidth limit of this host (`marsadm set-sync-limit-value`, the link
// defaults-HOST/sync-limit in bytes/s, 0 = unlimited): the sync worker reads it before every
// chunk, so a change applies to a running sync, and waits as long as the pure throttleWaitMs
// says to keep its average rate at or below the limit.
import type { TreeStore } from '../../common/tree/store.js';
import { globalPaths } from '../../common/tree/paths.js';

/** The limit in bytes/s; 0 (unlimited) for a missing or malformed link. */
export function readSyncLimit(tree: TreeStore, host: string): number {
  const v = Number(tree.value(`${globalPaths.defaultsDir(host)}/sync-limit`) ?? '0');
  return Number.isSafeInteger(v) && v > 0 ? v : 0;
}

/** How long to wait so that doneBytes over the elapsed time stays at or below the limit. */
export function throttleWaitMs(doneBytes: number, elapsedMs: number, limitBytesPerS: number): number {
  if (limitBytesPerS <= 0) return 0;
  const dueMs = (doneBytes / limitBytesPerS) * 1000;
  return Math.max(0, Math.ceil(dueMs - elapsedMs));
}
