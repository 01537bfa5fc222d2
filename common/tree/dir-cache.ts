// A read cache of the /mars tree's directories (issue 11: a control round and a peer listing
// must not cost two syscalls per link of every resource when nothing changed).
//
// What it may cache, and why that is sound: every change of a link's value or stamp is a
// rename over it (TreeStore.write), every deletion of a link or logfile an unlink, every new
// entry a create; each of these updates the directory's mtime. So a directory whose mtime is
// unchanged since it was read still holds the same names, kinds and link values and stamps.
// Nothing else may be taken from the cache: a regular file's size changes with appends, which
// do not touch the directory (callers stat logfiles themselves).
//
// The kernel stamps the mtime from a coarse clock (one tick, up to 10 ms; one second on some
// filesystems), so two changes within one tick may leave the same mtime. A listing is
// therefore trusted only when the directory's mtime was at least RACY_WINDOW_MS older than the
// wall clock before the directory was read: any later change then gets a later mtime. A
// directory that changed more recently is read again in every event-loop turn that asks for it
// (within one synchronous turn, a listing is read once: reading it again a moment later gives
// no fresher view of other processes' changes than reading it once). The store's own changes
// drop the directory's listing at once (forget), so a read always sees this process's writes.
// The wall clock here is the real one (Date.now), not an injected clock: it is compared with
// timestamps the kernel wrote.
//
// With opts.watch (marsd: inotify, common/disk/dir-watch.ts), a directory is watched from
// before its listing is read, and while no event came for it the listing is answered without
// a stat: one non-blocking read of the event queue per check, or per batch, instead of a
// syscall per directory. When events may have been lost, the checks fall back to the stat
// above, listing by listing.
import type { CachedEntry } from './cached-entry.js';
import { lstatSync, readdirSync, readlinkSync, statSync, type BigIntStats, type Dirent } from 'node:fs';
import { join } from 'node:path';
import { LazyListing } from './lazy-listing.js';

/** Longer than the coarsest mtime granularity of a filesystem /mars may live on (1 s). */
export const RACY_WINDOW_MS = 2_000;

export type { CachedEntry } from './cached-entry.js';

/**
 * The directory listings some reads saw (DirCache.trace): each directory asked for, with the
 * listing object (or the absence) its first read got. While every one of them is still the
 * same object, the same reads give the same answers (a listing object is never changed).
 */
export type ListingReads = ReadonlyMap<string, ReadonlyMap<string, CachedEntry> | undefined>;

interface DirListing {
  mtimeNs: bigint;
  /** the directory's inode: one made anew at the same path may have the same mtime */
  ino: bigint;
  /** false while the mtime is too recent to tell a later change from this state */
  trusted: boolean;
  /** the event-loop turn it was read in (an untrusted listing serves only that turn) */
  turn: number;
  entries: ReadonlyMap<string, CachedEntry>;
  /** the watch's token from before the listing was read: vouches for it while since() says unchanged */
  watchToken: number | undefined;
}

const FILE: CachedEntry = { kind: 'file' };
const DIR: CachedEntry = { kind: 'dir' };
const OTHER: CachedEntry = { kind: 'other' };

/** The Lamport stamp a link's mtime stores (store.ts): nanoseconds rounded to microseconds. */
export function stampOfStats(st: BigIntStats): number {
  return Number((st.mtimeNs + 500n) / 1000n);
}

export interface DirCacheOptions {
  /**
   * Read a link only when it is asked for (lazy-listing.ts), not every link at each load: for
   * short-lived processes (marsadm) that read a few links of large directories. marsd keeps
   * full listings: its peer listings and merges read every link anyway.
   */
  lazyLinks?: boolean;
  /**
   * Learn of changes from this source instead of a stat per directory at each check (marsd:
   * inotify, common/disk/dir-watch.ts): for a long-lived process that checks the same
   * directories over and over. The cache closes it with close().
   */
  watch?: DirChanges;
}

/**
 * Which directories changed since a point in time (common/disk/dir-watch.ts). take() is called
 * before a directory is read; since() answers for a token take() gave, as of the last sync().
 */
export interface DirChanges {
  /** Start (or go on) watching dir and forget its past changes; a token, undefined: cannot */
  take(dir: string): number | undefined;
  /** 'unknown': changes may have gone unseen (the caller checks by stat) */
  since(dir: string, token: number): 'unchanged' | 'changed' | 'unknown';
  /** Take in every change made until now. */
  sync(): void;
  readonly watchedDirs: number;
  close(): void;
}

export class DirCache {
  private readonly watch: DirChanges | undefined;

  constructor(private readonly opts: DirCacheOptions = {}) {
    this.watch = opts.watch;
  }

  private readonly dirs = new Map<string, DirListing>();
  /**
   * Inside batch(): each directory's answer, checked once. A batch is synchronous code that
   * reads many links (the merge of a peer's listing asks for every path it lists): re-checking
   * a directory's mtime for each of them shows no fresher state of other processes' changes,
   * and this process's own writes drop the answer (forget).
   */
  private memo: Map<string, ReadonlyMap<string, CachedEntry> | undefined> | undefined;
  /** the watch's queue was read in this batch (it is read once per batch, as a stat is made once per directory) */
  private syncedInBatch = false;
  /** listings read from disk (for tests and the cost model) */
  loads = 0;
  /** directory stats made to validate a listing (for tests and the cost model) */
  checks = 0;
  /** listings vouched for by the watch, without a stat (for tests and the cost model) */
  watchedHits = 0;
  private turn = 0;
  private turnEnding = false;
  /** inside trace(): each directory asked for, with the first answer given */
  private traced: Map<string, ReadonlyMap<string, CachedEntry> | undefined> | undefined;

  /**
   * The entries of directory `absDir` (names starting with `.tmp` left out: links being
   * written); undefined when the directory does not exist.
   */
  entries(absDir: string): ReadonlyMap<string, CachedEntry> | undefined {
    let found;
    if (this.memo === undefined) found = this.check(absDir);
    else if (this.memo.has(absDir)) found = this.memo.get(absDir);
    else this.memo.set(absDir, (found = this.check(absDir)));
    if (this.traced !== undefined && !this.traced.has(absDir)) this.traced.set(absDir, found);
    return found;
  }

  /**
   * Run fn and note every directory listing it read. unchangedSince(reads) then tells, for one
   * check per directory, whether the same reads would give the same answers now (issue 11: an
   * idle resource's snapshot is not read again link by link). A trace inside a trace adds its
   * reads to the outer one.
   */
  trace<T>(fn: () => T): { value: T; reads: ListingReads } {
    const outer = this.traced;
    const reads = new Map<string, ReadonlyMap<string, CachedEntry> | undefined>();
    this.traced = reads;
    try {
      return { value: fn(), reads };
    } finally {
      this.traced = outer;
      if (outer !== undefined) for (const [dir, listing] of reads) if (!outer.has(dir)) outer.set(dir, listing);
    }
  }

  /** True when every directory of `reads` has the listing it had then (a change gives a new object). */
  unchangedSince(reads: ListingReads): boolean {
    for (const [dir, listing] of reads) if (this.entries(dir) !== listing) return false;
    return true;
  }

  /** Run synchronous reads with each directory checked once (see memo). */
  /** Inside batch(). */
  get inBatch(): boolean {
    return this.memo !== undefined;
  }

  batch<T>(fn: () => T): T {
    if (this.memo !== undefined) return fn();
    this.memo = new Map();
    this.syncedInBatch = false;
    try {
      return fn();
    } finally {
      this.memo = undefined;
      // Outside a batch every check reads the queue again.
      this.syncedInBatch = false;
    }
  }

  private check(absDir: string): ReadonlyMap<string, CachedEntry> | undefined {
    const cached = this.dirs.get(absDir);
    if (cached?.watchToken !== undefined && !this.syncedInBatch) {
      this.watch!.sync();
      this.syncedInBatch = this.memo !== undefined;
    }
    const since = cached?.watchToken === undefined ? 'unknown' : this.watch!.since(absDir, cached.watchToken);
    if (since === 'unchanged') {
      this.watchedHits++;
      return cached!.entries;
    }
    // Taken before the stat and the read: any change from here on is an event.
    const watchToken = this.watch?.take(absDir);
    // take() forgot the events that may have told against the listing: it needs a new token.
    if (cached !== undefined) cached.watchToken = undefined;
    this.checks++;
    let st: BigIntStats;
    try {
      st = statSync(absDir, { bigint: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') {
        this.dirs.delete(absDir);
        return undefined;
      }
      throw err;
    }
    if (!st.isDirectory()) return undefined;
    const turn = this.currentTurn();
    // An event proves a change the mtime may not show (a link's stamp set in place, a change
    // within the mtime's tick); without one (no watch, events lost) the mtime decides.
    if (since !== 'changed' && cached !== undefined && cached.mtimeNs === st.mtimeNs && cached.ino === st.ino && (cached.trusted || cached.turn === turn)) {
      // A trusted listing is what the directory held until this stat, and the watch covers
      // every change after its take: watched again. An untrusted one may predate the take.
      if (cached.trusted) cached.watchToken = watchToken;
      return cached.entries;
    }
    return this.load(absDir, st, turn, watchToken);
  }

  /** Drop a directory's listing: this process changed it. */
  forget(absDir: string): void {
    this.dirs.delete(absDir);
    this.memo?.delete(absDir);
  }

  /** Forget everything (a test that edits the tree behind the store's back). */
  clear(): void {
    this.dirs.clear();
    this.memo?.clear();
  }

  /** Directories watched now; undefined without a watch (for tests and the cost model). */
  get watchedDirs(): number | undefined {
    return this.watch?.watchedDirs;
  }

  /** Stop watching (the listings stay, checked by stat from now on). */
  close(): void {
    this.watch?.close();
    for (const listing of this.dirs.values()) listing.watchToken = undefined;
  }

  /** A number that changes when the current synchronous run of the event loop ends. */
  private currentTurn(): number {
    if (!this.turnEnding) {
      this.turnEnding = true;
      setImmediate(() => { this.turn++; this.turnEnding = false; }).unref();
    }
    return this.turn;
  }

  private load(absDir: string, st: BigIntStats, turn: number, watchToken: number | undefined): ReadonlyMap<string, CachedEntry> | undefined {
    // The wall clock before the directory is read (see the header).
    const readStartNs = BigInt(Date.now()) * 1_000_000n;
    let names;
    try {
      names = readdirSync(absDir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    const entries = this.opts.lazyLinks ? new LazyListing(absDir, names, kindOf, readLink) : fullListing(absDir, names);
    this.loads++;
    const trusted = readStartNs - st.mtimeNs > BigInt(RACY_WINDOW_MS) * 1_000_000n;
    this.dirs.set(absDir, { mtimeNs: st.mtimeNs, ino: st.ino, trusted, turn, entries, watchToken });
    return entries;
  }
}

function kindOf(d: Dirent): CachedEntry {
  return d.isFile() ? FILE : d.isDirectory() ? DIR : OTHER;
}

/** Every entry with every link read now. */
function fullListing(absDir: string, names: readonly Dirent[]): Map<string, CachedEntry> {
  const entries = new Map<string, CachedEntry>();
  for (const d of names) {
    if (d.name.startsWith('.tmp')) continue;
    if (d.isSymbolicLink()) {
      const link = readLink(join(absDir, d.name));
      if (link !== undefined) entries.set(d.name, link);
    } else entries.set(d.name, kindOf(d));
  }
  return entries;
}

/** A link's value and stamp; undefined when it vanished meanwhile (replaced by a rename). */
function readLink(path: string): CachedEntry | undefined {
  try {
    const st = lstatSync(path, { bigint: true });
    if (!st.isSymbolicLink()) return st.isFile() ? FILE : st.isDirectory() ? DIR : OTHER;
    return { kind: 'link', value: readlinkSync(path), stampUs: stampOfStats(st) };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
