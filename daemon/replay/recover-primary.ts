// Start of a designated primary (the MARS user manual: primary start): replay everything the replay link
// says is not yet known to be on the disk, from its MINPOS through every following logfile,
// tolerating a torn tail in the last one and refusing on any defect; then the caller starts a
// fresh logfile (never appending to an old one).
//
// Whole write requests (docs/design.md §3.3): the crash may have cut the last logfile between
// the records of a write request (a SIGKILL during a short write, a power cut that kept part
// of the page cache). That request was never acknowledged; none of its records is applied,
// and the logfile is cut back to the end of the last whole request before the versionlink
// records its end. The primary serves only its durable end, which always ends a whole
// request, so no secondary holds bytes of the cut one.
import { truncate } from 'node:fs/promises';
import { logDigests } from '../../common/log/content-digest.js';
import { statSync } from 'node:fs';
import type { TreeStore } from '../../common/tree/store.js';
import { resPaths } from '../../common/tree/paths.js';
import type { DataDisk } from '../../common/disk/data-disk.js';
import { listLogfiles, readReplayLink, writeVersionLink } from '../../common/resource/links.js';
import { STOP_MEANING } from '../../common/log/scanner.js';
import { applyLog, type ApplyResult } from './apply-log.js';
import type { ReplayLink } from '../../common/log/links.js';
import { REPLAY_STOP_CODE } from './switchover.js';
import { logName } from '../../common/tree/log-names.js';
import { assert } from '../../common/util/assert.js';

/** A start that cannot go on; code: the replay-code it publishes (REPLAY_STOP_CODE). */
export class RecoveryError extends Error {
  override name = 'RecoveryError';
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

export interface RecoverOptions {
  tree: TreeStore;
  res: string;
  host: string;
  disk: DataDisk;
  sizeBytes: number;
  onProgress: (restBytes: number) => void;
  log: (msg: string) => void;
}

export interface RecoverResult {
  /** the number of the fresh logfile the logger must start */
  nextSeq: number;
  replayedFiles: number;
  replayedRecords: number;
  /** device bytes written by the replayed records */
  replayedBytes: number;
}

interface PlannedFile { seq: number; origin: string; path: string; sizeBytes: number }

export async function recoverPrimary(o: RecoverOptions): Promise<RecoverResult> {
  const { tree, res, host } = o;
  const link = readReplayLink(tree, res, host);
  if (!link) {
    throw new RecoveryError(REPLAY_STOP_CODE.EINVAL, `replay-${host} is missing or malformed in resource ${res}; the resource cannot start (recreate it, or restore the link)`);
  }
  const { nextSeq, plan } = planFiles(o, link);
  let rest = plan.reduce((n, p, i) => n + p.sizeBytes - (i === 0 ? link.minPos : 0), 0);
  let records = 0;
  let bytes = 0;
  for (let i = 0; i < plan.length; i++) {
    const p = plan[i]!;
    const fromPos = i === 0 ? link.minPos : 0;
    const startRest = rest;
    const laterData = plan.slice(i + 1).some((q) => q.sizeBytes > 0);
    const result = await recoverFile(o, p, fromPos, laterData, (pos) => o.onProgress(startRest - (pos - fromPos)));
    records += result.records;
    bytes += result.appliedBytes;
    rest = startRest - (p.sizeBytes - fromPos);
  }
  await o.disk.datasync();
  return { nextSeq, replayedFiles: plan.length, replayedRecords: records, replayedBytes: bytes };
}

/** The files to replay: the replay link's, then the next numbers while they exist, one origin per number. */
function planFiles(o: RecoverOptions, link: ReplayLink): { nextSeq: number; plan: PlannedFile[] } {
  const { tree, res, host } = o;
  const logs = listLogfiles(tree, res);
  const highest = logs.reduce((m, l) => Math.max(m, l.seq), 0);
  const maxnr = Number(tree.value(resPaths.maxnr(res)) ?? '0');
  const nextSeq = Math.max(highest, Number.isSafeInteger(maxnr) ? maxnr : 0, link.seq) + 1;
  const plan: PlannedFile[] = [];
  for (let seq = link.seq; ; seq++) {
    const here = logs.filter((l) => l.seq === seq);
    if (here.length === 0) break;
    if (here.length > 1) {
      throw new RecoveryError(REPLAY_STOP_CODE.EBADMSG, `two logfiles with number ${seq} (${here.map((l) => l.name).join(', ')}): split brain; see "marsadm view ${res}"`);
    }
    const path = tree.abs(resPaths.log(res, seq, here[0]!.origin));
    plan.push({ seq, origin: here[0]!.origin, path, sizeBytes: statSync(path).size });
  }
  if (plan.length === 0 && link.minPos > 0) {
    throw new RecoveryError(REPLAY_STOP_CODE.ENOENT, `logfile ${logName(link.seq, link.origin)} named by replay-${host} is missing, but ${link.minPos} bytes of it were to be applied; the disk may lack data (restore the logfile, or accept the loss with "marsadm invalidate"/a new resource)`);
  }
  if (plan.length > 0 && plan[0]!.origin !== link.origin) {
    throw new RecoveryError(REPLAY_STOP_CODE.EBADMSG, `replay-${host} names origin ${link.origin} but the logfile ${plan[0]!.seq} comes from ${plan[0]!.origin}: split brain`);
  }
  if (plan.length > 0 && plan[0]!.sizeBytes < link.minPos) {
    throw new RecoveryError(REPLAY_STOP_CODE.ENOENT, `logfile ${plan[0]!.path} has ${plan[0]!.sizeBytes} bytes, less than the ${link.minPos} bytes replay-${host} says were applied: the logfile was truncated`);
  }
  return { nextSeq, plan };
}

/**
 * Apply one logfile from fromPos, whole write requests only (§3.3), cut it back after the last
 * whole request when it is the end of the history, and record its end in our versionlink.
 * laterData: a later logfile holds data, so this one ends where it ends.
 */
async function recoverFile(o: RecoverOptions, p: PlannedFile, fromPos: number, laterData: boolean, onProgress: (pos: number) => void): Promise<ApplyResult> {
  const result = await applyLog({
    path: p.path, seq: p.seq, fromPos, disk: o.disk, sizeBytes: o.sizeBytes, onProgress,
    // A request cut at the end of a logfile that history goes on from (left by a recovery
    // before whole-request recovery) is history as it stands, as the secondaries' replayers
    // applied it.
    wholeWrites: { finalEndPos: laterData ? p.sizeBytes : undefined },
  });
  if (result.stop.defect || (result.stop.torn && laterData)) {
    await o.disk.datasync();
    const what = result.stop.defect ? STOP_MEANING[result.stop.kind] : 'torn record in a logfile that is followed by more logged data';
    throw new RecoveryError(REPLAY_STOP_CODE.EBADMSG,
      `defective logfile ${p.path} at offset ${result.stop.offset}: ${result.stop.kind} (${result.stop.detail}); ${what}. `
      + `The device stays down; everything before offset ${result.stop.offset} is applied. Inspect with "marsadm log-dump ${p.path}"; `
      + `to give up the records from that offset on and start anyway, run "marsadm log-truncate ${o.res}"`);
  }
  if (result.stop.torn) {
    o.log(`logfile ${p.path}: torn tail at offset ${result.stop.offset} (${result.stop.kind}), tolerated after a crash; the incomplete record was never acknowledged as durable`);
  }
  if (result.heldBytes > 0) {
    o.log(`logfile ${p.path}: the write request at offset ${result.endPos} is incomplete (a write request cut off by the crash, never acknowledged); none of its records is applied`);
  }
  // The logfile ends after the last whole write request: a second recovery, the versionlink
  // and every fetcher see the same end.
  if (result.endPos < p.sizeBytes) {
    assert(!laterData && !result.stop.defect, `recovery cuts ${p.path} only at the end of the history`);
    await truncate(p.path, result.endPos);
    logDigests.forget(p.path);
  }
  if (result.records > 0) o.log(`recovery: applied ${result.records} records of ${p.path} from offset ${fromPos}`);
  await o.disk.datasync();
  writeVersionLink(o.tree, o.res, o.host, p.seq, p.origin, result.endPos, true);
  return result;
}
