// What `marsadm invalidate` would do on this host, read from the tree without changing it:
// the plan (invalidate-plan.ts decides), and the device ranges our own writes since a split
// brain touched, which an incremental resync compares (kept in the local
// userspace/resync-RES.json for the sync worker). marsadm previews it; marsd executes it
// (daemon/control/invalidate.ts).
import { TREE_FILE_MODE } from '../tree/modes.js';
import { closeSync, existsSync, fsyncSync, lstatSync, openSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import type { TreeStore } from '../tree/store.js';
import { resPaths, resourceDir } from '../tree/paths.js';
import { LOG_NAME } from '../tree/log-names.js';
import { readLogBatches } from '../log/scanner.js';
import { RecordCode } from '../log/record.js';
import { readReplayLink } from './links.js';
import { readSplitBrainView } from './split-brain-view.js';
import { planInvalidate, type InvalidatePlan } from './invalidate-plan.js';
import type { LogPart } from './split-brain.js';
import { SYNC_BLOCK_BYTES } from './sync-blocks.js';

export interface ByteRange {
  pos: number;
  lengthBytes: number;
}

/** Where the ranges of an incremental resync are kept (local, never propagated). */
function rangesPath(tree: TreeStore, res: string): string {
  return tree.abs(`userspace/resync-${res}.json`);
}

/** The ranges an incremental resync must compare, or undefined for the whole disk. */
export function loadResyncRanges(tree: TreeStore, res: string, sizeBytes: number): ByteRange[] | undefined {
  const path = rangesPath(tree, res);
  if (!existsSync(path)) return undefined;
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as { ranges?: unknown };
    if (!Array.isArray(parsed.ranges)) return undefined;
    const out: ByteRange[] = [];
    let end = 0;
    for (const r of parsed.ranges) {
      if (!Array.isArray(r) || r.length !== 2 || !Number.isSafeInteger(r[0]) || !Number.isSafeInteger(r[1])) return undefined;
      const [pos, len] = r as [number, number];
      // Sorted, disjoint, inside the device: anything else means the file is not ours.
      if (pos < end || len <= 0 || pos + len > sizeBytes) return undefined;
      out.push({ pos, lengthBytes: len });
      end = pos + len;
    }
    return out;
  } catch {
    return undefined; // unreadable: compare the whole disk, which is always correct
  }
}

export function clearResyncRanges(tree: TreeStore, res: string): void {
  try { unlinkSync(rangesPath(tree, res)); } catch { /* not there */ }
}

export function storeResyncRanges(tree: TreeStore, res: string, ranges: readonly ByteRange[]): void {
  tree.ensureDir('userspace');
  const path = rangesPath(tree, res);
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, JSON.stringify({ ranges: ranges.map((r) => [r.pos, r.lengthBytes]) }), { mode: TREE_FILE_MODE });
  const fd = openSync(tmp, 'r');
  try { fsyncSync(fd); } finally { closeSync(fd); }
  renameSync(tmp, path);
  tree.fsyncDir('userspace');
}

/** Sort, align to sync blocks and merge overlapping or touching ranges. */
export function mergeRanges(ranges: readonly ByteRange[], sizeBytes: number): ByteRange[] {
  const aligned = ranges.map((r) => {
    const start = r.pos - (r.pos % SYNC_BLOCK_BYTES);
    const end = Math.min(sizeBytes, Math.ceil((r.pos + r.lengthBytes) / SYNC_BLOCK_BYTES) * SYNC_BLOCK_BYTES);
    return { start, end };
  }).filter((r) => r.end > r.start).sort((a, b) => a.start - b.start);
  const out: ByteRange[] = [];
  for (const r of aligned) {
    const last = out[out.length - 1];
    if (last && r.start <= last.pos + last.lengthBytes) {
      last.lengthBytes = Math.max(last.lengthBytes, r.end - last.pos);
    } else {
      out.push({ pos: r.start, lengthBytes: r.end - r.start });
    }
  }
  return out;
}

/** Device ranges written by the records in these logfile parts. */
async function touchedRanges(tree: TreeStore, res: string, parts: readonly LogPart[]): Promise<ByteRange[]> {
  const ranges: ByteRange[] = [];
  for (const p of parts) {
    const path = tree.abs(resPaths.log(res, p.seq, p.origin));
    for await (const item of readLogBatches(path, p.fromPos, { endPos: p.toPos })) {
      if (item.type !== 'batch') continue;
      for (const r of item.records) {
        if (r.code !== RecordCode.WriteOld && r.deviceBytes > 0) ranges.push({ pos: r.devicePos, lengthBytes: r.deviceBytes });
      }
    }
  }
  return ranges;
}

/** Read what planInvalidate needs from the tree and the resource directory. */
export function readInvalidatePlan(tree: TreeStore, res: string, host: string): ReturnType<typeof planInvalidate> {
  const dir = resourceDir(res);
  const localLogBytes = new Map<string, number>();
  const deletedLogs = new Set<string>();
  for (const name of tree.list(dir)) {
    if (!LOG_NAME.test(name)) continue;
    const raw = tree.readRaw(`${dir}/${name}`);
    if (raw?.deleted) { deletedLogs.add(name); continue; }
    try {
      const st = lstatSync(tree.abs(`${dir}/${name}`));
      if (st.isFile()) localLogBytes.set(name, st.size);
    } catch { /* vanished */ }
  }
  const primary = tree.value(resPaths.primary(res));
  const primaryReplay = primary && primary !== '(none)' ? readReplayLink(tree, res, primary) : undefined;
  return planInvalidate({
    host, primary: primary && primary !== '(none)' ? primary : '',
    chains: readSplitBrainView(tree, res).chains, localLogBytes, deletedLogs,
    primaryReplay: primaryReplay ? { seq: primaryReplay.seq, origin: primaryReplay.origin } : undefined,
  });
}

export interface InvalidateResult {
  plan: InvalidatePlan;
  /** bytes the sync will compare: the touched ranges, or the whole disk */
  resyncBytes: number;
}

/** The plan and the ranges an invalidate would resync, without changing anything (marsadm shows it first). */
export async function previewInvalidate(tree: TreeStore, res: string, host: string, sizeBytes: number): Promise<InvalidateResult & { ranges: ByteRange[] | undefined }> {
  const plan = readInvalidatePlan(tree, res, host);
  if (plan.kind === 'refused') throw new Error(plan.reason);
  if (plan.kind === 'full') return { plan, resyncBytes: sizeBytes, ranges: undefined };
  const ranges = mergeRanges(await touchedRanges(tree, res, plan.ourParts), sizeBytes);
  return { plan, resyncBytes: ranges.reduce((n, r) => n + r.lengthBytes, 0), ranges };
}

