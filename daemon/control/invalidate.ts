// Executes `marsadm invalidate` on this host (the plan is invalidate-plan.ts): finds the
// device ranges our own writes since a split brain touched, stores them for the sync worker,
// and rewrites our replay link, versionlinks and discarded logfiles so that replay continues
// in the primary's history. Runs only while no secondary work runs (the caller stops it).
import { closeSync, fsyncSync, openSync, truncateSync, unlinkSync } from 'node:fs';
import type { TreeStore } from '../../common/tree/store.js';
import { resPaths, resourceDir } from '../../common/tree/paths.js';
import { writeReplayLink } from '../../common/resource/links.js';
import { clearResyncRanges, previewInvalidate, storeResyncRanges, type InvalidateResult } from '../../common/resource/resync.js';

export async function executeInvalidate(tree: TreeStore, res: string, host: string, sizeBytes: number): Promise<InvalidateResult> {
  const { plan, resyncBytes, ranges } = await previewInvalidate(tree, res, host, sizeBytes);
  const dir = resourceDir(res);
  if (ranges) storeResyncRanges(tree, res, ranges);
  else clearResyncRanges(tree, res);
  // From here on the replica is inconsistent until the sync is done and replay passed syncpos.
  tree.write(resPaths.syncstatus(res, host), '0', { durable: true });
  tree.remove(resPaths.syncpos(res, host));
  if (plan.truncate) {
    const path = tree.abs(`${dir}/${plan.truncate.name}`);
    truncateSync(path, plan.truncate.toBytes);
    const fd = openSync(path, 'r+');
    try { fsyncSync(fd); } finally { closeSync(fd); }
  }
  for (const name of plan.deleteOwnLogs) tree.remove(`${dir}/${name}`);
  for (const name of plan.unlinkLocalLogs) {
    try { unlinkSync(tree.abs(`${dir}/${name}`)); } catch { /* gone */ }
  }
  for (const seq of plan.deleteVersions) tree.remove(resPaths.version(res, seq, host));
  for (const [seq, value] of [...plan.writeVersions].sort((a, b) => a[0] - b[0])) tree.write(resPaths.version(res, seq, host), value, { durable: true });
  writeReplayLink(tree, res, host, plan.replay, true);
  tree.fsyncDir(dir);
  return { plan, resyncBytes };
}
