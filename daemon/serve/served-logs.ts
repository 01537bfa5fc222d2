// What a listing (getents) offers of a resource directory's logfiles, kept per directory from
// one walk to the next (issue 11: every pull worked out the durable end of every logfile of
// every resource, a versionlink read and parse each, O(resources x logfiles) per pull and
// peer, though nothing had changed).
//
// A logfile's offered size is its durable end (PeerService.durableEnd), a function of
//   - its name and its file size (log-sizes.ts: the two newest stat'ed at every walk, the
//     others cached with the directory's listing),
//   - our versionlink of it, which lies in the same directory, so it is in the DirCache
//     listing object: the same object means the same versionlink (dir-cache.ts),
//   - and, only for our own logfiles the logger is writing or has just rotated away from, the
//     logger's durable end in memory (activeLogEnd), which moves without any change on disk.
// So while the listing object is the same and the names and sizes are those of the last walk,
// every offered size is the last walk's except those the logger's memory gives: the logfiles
// it gave last time and those it may give now (activeLogSeqs; without it, every one of our
// own logfiles is asked). The array is then the last walk's, the same object, and the
// listing generations (listing-delta.ts) see the directory unchanged at once.
import type { TreeStore } from '../../common/tree/store.js';
import { logfileSizes, type LogfileSize } from '../../common/tree/log-sizes.js';
import { resPaths } from '../../common/tree/paths.js';
import { logName } from '../../common/tree/log-names.js';
import type { LogListing } from '../propagate/tree-io.js';

/** The durable end of one logfile, and whether the logger's memory gave it. */
export interface DurableEnd {
  bytes: number;
  fromLogger: boolean;
}

export interface ServedLogsOptions {
  host: string;
  /** PeerService.durableEndOf */
  durableEnd(res: string, name: string, fileBytes: number): DurableEnd;
  /** every logfile number of res whose durable end the logger may know (its current and
   *  retired logfiles); undefined: not known, every logfile of ours is asked */
  activeLogSeqs?(res: string): Iterable<number>;
}

interface Walked {
  listing: ReadonlyMap<string, unknown> | undefined;
  sizes: readonly LogfileSize[];
  logs: LogListing[];
  /** index in logs by name */
  indexOf: Map<string, number>;
  /** names whose durable end the logger's memory gave */
  fromLogger: Set<string>;
}

export class ServedLogs {
  private readonly byDir = new Map<string, Walked>();
  /** logfiles whose durable end was worked out (tests and the cost model) */
  computed = 0;

  constructor(private readonly o: ServedLogsOptions) {}

  /** The logfiles of resource directory `rel` (resource `res`) with the bytes a peer may fetch.
   *  Call inside TreeStore.readBatch (collectDirs does), so the listing checked here is the
   *  one logfileSizes and the versionlink reads see. The array must not be changed. */
  logs(tree: TreeStore, rel: string, res: string): LogListing[] {
    const listing = tree.listing(rel);
    // From the logfile this host replays on, sizes are stat'ed at every call (log-sizes.ts): a
    // re-fetch truncates a copy in place there, and a peer must not be offered its old size.
    const replaySeq = Number(/^log-(\d{9})-/.exec(tree.value(resPaths.replay(res, this.o.host)) ?? '')?.[1] ?? NaN);
    const sizes = logfileSizes(tree, rel, Date.now(), Number.isFinite(replaySeq) ? replaySeq : Infinity);
    const last = this.byDir.get(rel);
    if (last === undefined || last.listing !== listing || !sameSizes(last.sizes, sizes)) return this.walk(rel, res, listing, sizes);
    // Names, sizes and versionlinks as at the last walk: only the logger's memory may differ.
    const ask = new Set(last.fromLogger);
    const active = this.o.activeLogSeqs?.(res);
    if (active === undefined) {
      for (const l of sizes) if (l.origin === this.o.host) ask.add(l.name);
    } else {
      for (const seq of active) ask.add(logName(seq, this.o.host));
    }
    let logs = last.logs;
    const fromLogger = new Set<string>();
    for (const name of ask) {
      const i = last.indexOf.get(name);
      if (i === undefined) continue; // not a logfile of this directory
      this.computed++;
      const end = this.o.durableEnd(res, name, sizes[i]!.sizeBytes);
      if (end.fromLogger) fromLogger.add(name);
      if (end.bytes !== logs[i]!.sizeBytes) {
        if (logs === last.logs) logs = logs.slice();
        logs[i] = { res, name, sizeBytes: end.bytes };
      }
    }
    this.byDir.set(rel, { ...last, sizes, logs, fromLogger });
    return logs;
  }

  /** Forget the directories not in this walk (called after each walk with its resource dirs). */
  keepOnly(rels: ReadonlySet<string>): void {
    for (const rel of this.byDir.keys()) if (!rels.has(rel)) this.byDir.delete(rel);
  }

  private walk(rel: string, res: string, listing: Walked['listing'], sizes: readonly LogfileSize[]): LogListing[] {
    const logs: LogListing[] = [];
    const indexOf = new Map<string, number>();
    const fromLogger = new Set<string>();
    for (const l of sizes) {
      this.computed++;
      const end = this.o.durableEnd(res, l.name, l.sizeBytes);
      if (end.fromLogger) fromLogger.add(l.name);
      indexOf.set(l.name, logs.length);
      logs.push({ res, name: l.name, sizeBytes: end.bytes });
    }
    this.byDir.set(rel, { listing, sizes, logs, indexOf, fromLogger });
    return logs;
  }
}

/** The same logfiles in the same order with the same file sizes (the same array: at once). */
function sameSizes(a: readonly LogfileSize[], b: readonly LogfileSize[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i]!.name !== b[i]!.name || a[i]!.sizeBytes !== b[i]!.sizeBytes) return false;
  return true;
}
