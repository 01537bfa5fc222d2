// Gather ProgressFacts (replication-progress.ts) for one resource on this host: the tree's
// replay link, versionlinks and heartbeats with their stamps, the local logfile copies' sizes
// and mtimes, and the stamp of the first record not yet replayed (one 48-byte header read).
// Shared by marsadm view and marsd's /metrics.
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import type { TreeStore } from '../tree/store.js';
import { globalPaths, resPaths, resourceDir } from '../tree/paths.js';
import { LOG_NAME, tryParseLogName } from '../tree/log-names.js';
import { versionNames, type VersionNames } from '../tree/version-names.js';
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

type Origin = { origin: string; logPos: number; stampS: number };

/**
 * The origins' own versionlinks (version-SEQ-ORIGIN naming log-SEQ-ORIGIN: only the origin's
 * own link says how long its logfile is), read only where asked for (issue 11: the view parsed
 * every versionlink of every resource and used those from the replay link's number on, and the
 * primary's newest). The names come from the listing; at a number with several own links (two
 * origins: a split brain), the one listed last counts, as when they were all read in order.
 */
class OriginLinks {
  private readonly namesBySeq: VersionNames['bySeq'];
  private readonly read = new Map<number, Origin | undefined>();

  constructor(private readonly tree: TreeStore, private readonly dir: string) {
    this.namesBySeq = versionNames(tree, dir).bySeq;
  }

  seqs(): IterableIterator<number> {
    return this.namesBySeq.keys();
  }

  get(seq: number): Origin | undefined {
    if (this.read.has(seq)) return this.read.get(seq);
    let found: Origin | undefined;
    const names = this.namesBySeq.get(seq) ?? [];
    for (let i = names.length - 1; i >= 0 && found === undefined; i--) {
      const vn = names[i]!;
      const entry = this.tree.read(`${this.dir}/${vn.name}`);
      const link = entry && parseVersionLink(entry.value);
      if (link && link.seq === seq && link.origin === vn.host) found = { origin: link.origin, logPos: link.logPos, stampS: entry.stampUs / US_PER_S };
    }
    this.read.set(seq, found);
    return found;
  }

  /** The highest number whose link counts (get) is `origin`'s own. */
  newestOf(origin: string): { seq: number; origin: string; pos: number; stampS: number } | undefined {
    const seqs = [...this.namesBySeq].filter(([, names]) => names.some((n) => n.host === origin)).map(([seq]) => seq);
    for (const seq of seqs.sort((a, b) => b - a)) {
      const o = this.get(seq);
      if (o?.origin === origin) return { seq, origin, pos: o.logPos, stampS: o.stampS };
    }
    return undefined;
  }
}

/** Local logfiles numbered fromSeq or higher (at one number, the one listed last), with sizes and mtimes. */
function localLogs(tree: TreeStore, dir: string, names: readonly string[], fromSeq: number): Map<number, { origin: string; bytes: number; mtimeS: number }> {
  const out = new Map<number, { origin: string; bytes: number; mtimeS: number }>();
  for (const name of names) {
    // Numbers below fromSeq are passed over before the name is parsed (SEQ: 9 digits after "log-").
    if (!name.startsWith('log-') || Number(name.slice(4, 13)) < fromSeq || !LOG_NAME.test(name)) continue;
    const parsed = tryParseLogName(name);
    if (!parsed.ok || parsed.value.seq < fromSeq) continue;
    const st = statSync(tree.abs(`${dir}/${name}`), { throwIfNoEntry: false });
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
  const dir = resourceDir(res);
  const names = tree.list(dir);
  const origins = new OriginLinks(tree, dir);
  const primaryEnd: ProgressFacts['primaryEnd'] = primary === undefined ? undefined : origins.newestOf(primary);
  // The logfiles that count start at the replay link; without one, at the oldest origin link.
  const fromSeq = replayLink?.seq ?? Math.min(...[...origins.seqs()].filter((seq) => origins.get(seq) !== undefined));
  // Logfiles below fromSeq change nothing: they are neither listed nor can they raise toSeq past it.
  const local = localLogs(tree, dir, names, fromSeq);
  const logs: LogFact[] = [];
  let lastFetchS: number | undefined;
  let newest: { seq: number; origin: string; bytes: number } | undefined;
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
