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
import type { CachedEntry } from './cached-entry.js';
import { lstatSync, readdirSync, readlinkSync, statSync, type BigIntStats, type Dirent } from 'node:fs';
import { join } from 'node:path';
import { LazyListing } from './lazy-listing.js';

/** Longer than the coarsest mtime granularity of a filesystem /mars may live on (1 s). */
export const RACY_WINDOW_MS = 2_000;

export type { CachedEntry } from './cached-entry.js';

interface DirListing {
  mtimeNs: bigint;
  /** false while the mtime is too recent to tell a later change from this state */
  trusted: boolean;
  /** the event-loop turn it was read in (an untrusted listing serves only that turn) */
  turn: number;
  entries: ReadonlyMap<string, CachedEntry>;
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
}

export class DirCache {
  constructor(private readonly opts: DirCacheOptions = {}) {}

  private readonly dirs = new Map<string, DirListing>();
  /**
   * Inside batch(): each directory's answer, checked once. A batch is synchronous code that
   * reads many links (the merge of a peer's listing asks for every path it lists): re-checking
   * a directory's mtime for each of them shows no fresher state of other processes' changes,
   * and this process's own writes drop the answer (forget).
   */
  private memo: Map<string, ReadonlyMap<string, CachedEntry> | undefined> | undefined;
  /** listings read from disk (for tests and the cost model) */
  loads = 0;
  /** directory stats made to validate a listing (for tests and the cost model) */
  checks = 0;
  private turn = 0;
  private turnEnding = false;

  /**
   * The entries of directory `absDir` (names starting with `.tmp` left out: links being
   * written); undefined when the directory does not exist.
   */
  entries(absDir: string): ReadonlyMap<string, CachedEntry> | undefined {
    if (this.memo === undefined) return this.check(absDir);
    if (this.memo.has(absDir)) return this.memo.get(absDir);
    const found = this.check(absDir);
    this.memo.set(absDir, found);
    return found;
  }

  /** Run synchronous reads with each directory checked once (see memo). */
  batch<T>(fn: () => T): T {
    if (this.memo !== undefined) return fn();
    this.memo = new Map();
    try {
      return fn();
    } finally {
      this.memo = undefined;
    }
  }

  private check(absDir: string): ReadonlyMap<string, CachedEntry> | undefined {
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
    const cached = this.dirs.get(absDir);
    const turn = this.currentTurn();
    if (cached !== undefined && cached.mtimeNs === st.mtimeNs && (cached.trusted || cached.turn === turn)) return cached.entries;
    return this.load(absDir, st, turn);
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

  /** A number that changes when the current synchronous run of the event loop ends. */
  private currentTurn(): number {
    if (!this.turnEnding) {
      this.turnEnding = true;
      setImmediate(() => { this.turn++; this.turnEnding = false; }).unref();
    }
    return this.turn;
  }

  private load(absDir: string, st: BigIntStats, turn: number): ReadonlyMap<string, CachedEntry> | undefined {
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
    this.dirs.set(absDir, { mtimeNs: st.mtimeNs, trusted, turn, entries });
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
