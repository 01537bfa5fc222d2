// Gather ProgressFacts (replication-progress.ts) for one resource on this host: the tree's
// replay link, versionlinks and heartbeats with their stamps, the local logfile copies' sizes
// and mtimes, and the stamp of the first record not yet replayed (one 48-byte header read).
// Shared by marsadm view and marsd's /metrics.
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import type { TreeStore } from '../tree/store.js';
import { globalPaths, resPaths, resourceDir } from '../tree/paths.js';
import { LOG_NAME, parseVersionName, tryParseLogName } from '../tree/log-names.js';
import { parseReplayLink, parseVersionLink } from '../log/links.js';
import { decodeHeader, MAX_RECORD_BYTES, NSEC_PER_SEC, RECORD_HEADER_BYTES, RECORD_OVERHEAD_BYTES, START_MAGIC, startMagicAt } from '../log/record.js';
import { scanBuffer } from '../log/scan-record.js';
import { isValidIdentifier } from '../tree/names.js';
import type { LogFact, ProgressFacts } from './replication-progress.js';

const US_PER_S = 1_000_000;

function num(text: string | undefined): number | undefined {
  if (text === undefined || !/^-?\d+(\.\d+)?$/.test(text)) return undefined;
  return Number(text);
}

/** Stamp (seconds) of the record starting at `pos` of a local logfile; undefined when none is there. */
export function recordStampAt(path: string, pos: number): number | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const buf = Buffer.alloc(RECORD_HEADER_BYTES);
    if (readSync(fd, buf, 0, RECORD_HEADER_BYTES, pos) !== RECORD_HEADER_BYTES) return undefined;
    if (buf.readBigUInt64LE(0) !== START_MAGIC) return undefined;
    const h = decodeHeader(buf, 0);
    if (!Number.isFinite(h.stampSec) || !Number.isFinite(h.stampNsec)) return undefined;
    return h.stampSec + h.stampNsec / NSEC_PER_SEC;
  } catch {
    return undefined; // absent or vanished: the lag falls back to the fetch lag
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Stamp (seconds) of the last complete record in the first `endBytes` of a local logfile copy:
 * the newest write the fetcher has copied. A copy ends anywhere (chunks split records), so the
 * last complete record starts within the last two record lengths; the candidate with the
 * highest offset whose record verifies completely (magics, lengths, checksums: scan-record.ts)
 * is taken. One read of at most 8 KiB. Undefined when none verifies there.
 */
export function lastRecordStampIn(path: string, endBytes: number): number | undefined {
  const from = Math.max(0, endBytes - 2 * MAX_RECORD_BYTES);
  if (endBytes - from < RECORD_OVERHEAD_BYTES) return undefined;
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const buf = Buffer.alloc(endBytes - from);
    const got = readSync(fd, buf, 0, buf.length, from);
    for (let at = got - RECORD_OVERHEAD_BYTES; at >= 0; at--) {
      if (!startMagicAt(buf, at)) continue;
      const rec = scanBuffer(buf.subarray(at, got), from + at, { atEof: true }).records[0];
      if (rec) return rec.stampSec + rec.stampNsec / NSEC_PER_SEC;
    }
    return undefined;
  } catch {
    return undefined; // absent or vanished: the lag falls back to when the copies last grew
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

interface Origins {
  /** seq → origin and the origin's own LOGPOS */
  bySeq: Map<number, { origin: string; logPos: number; stampS: number }>;
}

function originLinks(tree: TreeStore, res: string): Origins {
  const bySeq: Origins['bySeq'] = new Map();
  for (const name of tree.list(resourceDir(res))) {
    const vn = parseVersionName(name);
    if (!vn) continue;
    const entry = tree.read(`${resourceDir(res)}/${name}`);
    const link = entry && parseVersionLink(entry.value);
    // Only the origin's own versionlink says how long the origin's logfile is.
    if (!link || link.seq !== vn.seq || link.origin !== vn.host) continue;
    bySeq.set(vn.seq, { origin: link.origin, logPos: link.logPos, stampS: entry.stampUs / US_PER_S });
  }
  return { bySeq };
}

function localLogs(tree: TreeStore, res: string): Map<number, { origin: string; bytes: number; mtimeS: number }> {
  const out = new Map<number, { origin: string; bytes: number; mtimeS: number }>();
  for (const name of tree.list(resourceDir(res))) {
    if (!LOG_NAME.test(name)) continue;
    const parsed = tryParseLogName(name);
    if (!parsed.ok) continue;
    const st = statSync(tree.abs(`${resourceDir(res)}/${name}`), { throwIfNoEntry: false });
    if (st?.isFile()) out.set(parsed.value.seq, { origin: parsed.value.origin, bytes: st.size, mtimeS: st.mtimeMs / 1000 });
  }
  return out;
}

/** The first record after the replay position: in its logfile, or at the start of the next local one. */
function nextRecordStamp(tree: TreeStore, res: string, r: { seq: number; origin: string; minPos: number }, local: Map<number, { origin: string }>): number | undefined {
  const here = recordStampAt(tree.abs(resPaths.log(res, r.seq, r.origin)), r.minPos);
  if (here !== undefined) return here;
  const next = local.get(r.seq + 1);
  return next ? recordStampAt(tree.abs(resPaths.log(res, r.seq + 1, next.origin)), 0) : undefined;
}

/**
 * How far the sync got and when it last moved: syncstatus is durable but moves every 64 MiB
 * only; while a sync runs, its worker's position (actual-HOST/sync-pos, rewritten only when it
 * changes, so its stamp is the last progress) is further and newer. Without it sync-age and
 * sync-lag grew for the whole time between two syncstatus updates of a healthy sync.
 */
function syncDone(tree: TreeStore, res: string, host: string): { doneBytes: number; stampS: number | undefined } {
  const status = tree.read(resPaths.syncstatus(res, host));
  const doneBytes = num(status?.value) ?? 0;
  const pos = tree.read(resPaths.actual(res, host, 'sync-pos'));
  const posBytes = num(pos?.value) ?? 0;
  if (tree.value(resPaths.actual(res, host, 'is-syncing')) === '1' && pos && posBytes > doneBytes) {
    return { doneBytes: posBytes, stampS: pos.stampUs / US_PER_S };
  }
  return { doneBytes, stampS: status && status.stampUs / US_PER_S };
}

export function readProgressFacts(tree: TreeStore, res: string, host: string, windowS: number, nowS: number): ProgressFacts {
  const primary = ((p) => (p !== undefined && isValidIdentifier(p) ? p : undefined))(tree.value(resPaths.primary(res)));
  const replayEntry = tree.read(resPaths.replay(res, host));
  const replayLink = replayEntry && parseReplayLink(replayEntry.value);
  const origins = originLinks(tree, res).bySeq;
  const local = localLogs(tree, res);
  let primaryEnd: ProgressFacts['primaryEnd'];
  for (const [seq, o] of origins) {
    if (o.origin === primary && (!primaryEnd || seq > primaryEnd.seq)) primaryEnd = { seq, origin: o.origin, pos: o.logPos, stampS: o.stampS };
  }
  const logs: LogFact[] = [];
  let lastFetchS: number | undefined;
  let newest: { seq: number; origin: string; bytes: number } | undefined;
  const fromSeq = replayLink?.seq ?? Math.min(...origins.keys());
  const toSeq = Math.max(primaryEnd?.seq ?? 0, ...local.keys());
  for (let seq = fromSeq; Number.isFinite(seq) && seq <= toSeq; seq++) {
    const o = origins.get(seq);
    const l = local.get(seq);
    const origin = o?.origin ?? l?.origin ?? (seq === replayLink?.seq ? replayLink.origin : undefined);
    if (origin === undefined) continue;
    const mine = l && l.origin === origin ? l : undefined;
    if (mine && origin !== host) lastFetchS = Math.max(lastFetchS ?? 0, mine.mtimeS);
    if (mine && origin !== host && mine.bytes > 0) newest = { seq, origin, bytes: mine.bytes };
    logs.push({ seq, origin, localBytes: mine?.bytes, originBytes: o?.logPos });
  }
  const hb = num(primary ? tree.value(globalPaths.actual(primary, 'time')) : undefined);
  const a = (k: string) => num(tree.value(resPaths.actual(res, host, k))) ?? 0;
  return {
    nowS, windowS,
    isPrimaryHere: primary === host,
    primaryEnd,
    primaryHeartbeatS: primary === host ? nowS : hb,
    logs,
    replay: replayLink && { seq: replayLink.seq, origin: replayLink.origin, pos: replayLink.minPos, stampS: replayEntry!.stampUs / US_PER_S },
    nextRecordStampS: replayLink ? nextRecordStamp(tree, res, replayLink, local) : undefined,
    lastFetchS,
    newestFetchedStampS: newest && ((n) => () => lastRecordStampIn(tree.abs(resPaths.log(res, n.seq, n.origin)), n.bytes))(newest),
    sync: { ...syncDone(tree, res, host), sizeBytes: num(tree.value(resPaths.size(res))) ?? 0, rateBytesPerS: a('sync-rate') },
    fetchRateBytesPerS: a('fetch-rate'),
    replayRateBytesPerS: a('replay-rate'),
  };
}
