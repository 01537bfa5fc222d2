// Executes `marsadm invalidate` on this host (the plan is invalidate-plan.ts): finds the
// device ranges our own writes since a split brain touched, stores them for the sync worker,
// and rewrites our replay link, versionlinks and discarded logfiles so that replay continues
// in the primary's history. Runs only while no secondary work runs (carryOutInvalidate stops
// it first) and never on an actual primary; the answer goes to actual-HOST/invalidate, the
// request's stamp first, so marsadm knows which request it answers.
import { closeSync, fsyncSync, openSync, truncateSync, unlinkSync } from 'node:fs';
import type { TreeStore } from '../../common/tree/store.js';
import { resPaths, resourceDir } from '../../common/tree/paths.js';
import { writeReplayLink } from '../../common/resource/links.js';
import { nextVersionLink } from '../../common/log/links.js';
import { logDigests } from '../../common/log/content-digest.js';
import { clearResyncRanges, previewInvalidate, storeResyncRanges, type InvalidateResult } from '../../common/resource/resync.js';
import { logName } from '../../common/tree/log-names.js';
import { failStopOnInvariant } from '../../common/util/assert.js';
import type { LogFn } from '../../common/util/log.js';

export interface InvalidateRequest {
  tree: TreeStore;
  res: string;
  host: string;
  /** the stamp of todo-HOST/invalidate */
  request: string;
  sizeBytes: number;
  log: LogFn;
  /** the primary side is running here (checked when the request's turn comes) */
  isPrimary: () => boolean;
  /** stop fetch, sync and replay */
  stopSecondary: () => Promise<void>;
}

/** Carry out one request and answer it; an expected failure is answered, not thrown. */
export async function carryOutInvalidate(o: InvalidateRequest): Promise<void> {
  const { tree, res, host, log } = o;
  const answer = (text: string) => tree.write(resPaths.actual(res, host, 'invalidate'), `${o.request} ${text}`.slice(0, 1000), { durable: true });
  if (o.isPrimary()) {
    answer('refused: this host is primary of the resource');
    return;
  }
  await o.stopSecondary();
  // Queued behind other work: by its turn the host may have left the resource (leave-resource
  // removes the request and its answer): writing syncstatus and versionlinks then would bring
  // this host's links back after the leave.
  if (tree.value(resPaths.data(res, host)) === undefined || tree.value(resPaths.invalidate(res, host)) !== o.request) {
    log('info', `${res}: invalidate request ${o.request} dropped: ${host} is no member any more or the request is gone`);
    return;
  }
  try {
    const { plan, resyncBytes } = await executeInvalidate(tree, res, host, o.sizeBytes);
    const what = plan.kind === 'incremental'
      ? `incremental resync of ${resyncBytes} bytes this host wrote to since the split at ${logName(plan.common.seq, plan.common.origin)}:${plan.common.pos}, then replay of ${plan.primaryBytesSince} logged bytes of the primary`
      : `full sync of ${resyncBytes} bytes (${plan.reason})`;
    log('warn', `${res}: invalidated: ${what}`);
    answer(`OK ${what}`);
  } catch (err) {
    failStopOnInvariant(err);
    log('error', `${res}: invalidate failed: ${(err as Error).message}`);
    answer(`failed: ${(err as Error).message}`);
  }
}

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
    logDigests.forget(path);
    const fd = openSync(path, 'r+');
    try { fsyncSync(fd); } finally { closeSync(fd); }
  }
  for (const name of plan.deleteOwnLogs) {
    tree.remove(`${dir}/${name}`);
    logDigests.forget(tree.abs(`${dir}/${name}`));
  }
  for (const name of plan.unlinkLocalLogs) {
    try { unlinkSync(tree.abs(`${dir}/${name}`)); } catch { /* gone */ }
    logDigests.forget(tree.abs(`${dir}/${name}`));
  }
  for (const seq of plan.deleteVersions) tree.remove(resPaths.version(res, seq, host));
  for (const [seq, value] of [...plan.writeVersions].sort((a, b) => a[0] - b[0])) tree.write(resPaths.version(res, seq, host), value, { durable: true });
  const ext = plan.extendVersion;
  if (ext) {
    const digest = logDigests.digestAt(tree.abs(resPaths.log(res, ext.seq, ext.origin)), ext.logPos);
    tree.write(resPaths.version(res, ext.seq, host), nextVersionLink(ext.prev, ext.seq, ext.origin, ext.logPos, digest), { durable: true });
  }
  writeReplayLink(tree, res, host, plan.replay, true);
  // After the replay link moved back: a crash in between leaves a kept mismatch that no longer
  // holds, which the replayer removes.
  tree.remove(resPaths.contentMismatch(res, host));
  tree.fsyncDir(dir);
  return { plan, resyncBytes };
}
