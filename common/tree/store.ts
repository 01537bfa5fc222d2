// The /mars symlink tree (docs/design.md §4): each link's target string is its value and its mtime
// is a Lamport stamp. Writes are atomic (temporary link, lutimes, rename over) and ordered (an
// older stamp never replaces a newer one); deletion writes a `.deleted` tombstone that
// propagates like any value. Directory fsync is done when a value must survive a crash.
//
// The store is synchronous on purpose: a link update is a handful of metadata syscalls, and a
// synchronous store keeps the control loop's reads of a snapshot consistent and simple.
import {
  closeSync, fsyncSync, lstatSync, lutimesSync, mkdirSync, openSync, readlinkSync,
  renameSync, symlinkSync, unlinkSync, type BigIntStats,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { LamportClock, stampToSeconds } from './lamport.js';
import { validTreePath } from './names.js';
import { TREE_DIR_MODE } from './modes.js';
import { DirCache, stampOfStats, type CachedEntry, type DirCacheOptions, type DirChanges, type ListingReads } from './dir-cache.js';

export const TOMBSTONE = '.deleted';
const MAX_VALUE_BYTES = 1023;

export interface LinkEntry {
  value: string;
  stampUs: number;
}

export interface WriteOptions {
  /** Use this stamp instead of a fresh tick (tree propagation keeps the writer's stamp). */
  stampUs?: number;
  /** fsync the directory afterwards: the value must survive a crash. */
  durable?: boolean;
  /** Skip the write when the current value is already this one (status links). */
  onlyIfChanged?: boolean;
}

interface ResolvedPath {
  abs: string;
  /** abs's directory and name, as the listing cache keys them */
  dir: string;
  name: string;
}
/** Enough for the paths a round reads at 1000 resources (about 20 each); about 250 bytes each. */
const RESOLVED_PATHS_MAX = 20_000;

export interface TreeStoreOptions extends DirCacheOptions {
  /**
   * Writes to the files of the tree's directories (marsd: inotify, common/disk/dir-watch.ts):
   * logfile sizes are stat'ed again only where a file was written. The store closes it.
   */
  contents?: DirChanges;
}

export class TreeError extends Error {
  override name = 'TreeError';
}

// lutimes stores a double; lstat's nanoseconds round back to the microsecond we wrote.
const stampOf = stampOfStats;

export class TreeStore {
  /** Reads go through a cache of directory listings, valid while a directory's mtime holds (dir-cache.ts). */
  private readonly cache: DirCache;
  /** the root as path.dirname spells directories (no trailing slash): the cache's key for it */
  private readonly rootDir: string;
  /** valid relative paths read so far, resolved (bounded: cleared when full) */
  private readonly resolved = new Map<string, ResolvedPath>();

  /** writes to the files of the tree's directories (log-sizes.ts), where a watch is given */
  private readonly contents: DirChanges | undefined;
  /** the contents watch's queue was read in this read batch */
  private contentsSynced = false;

  /**
   * opts.lazyLinks: read links only when asked for (short-lived processes: dir-cache.ts,
   * lazy-listing.ts); opts.watch, opts.contents: changes told by inotify (marsd).
   */
  constructor(readonly root: string, readonly clock: LamportClock = new LamportClock(), opts: TreeStoreOptions = {}) {
    this.rootDir = dirname(join(root, 'x'));
    this.cache = new DirCache(opts);
    this.contents = opts.contents;
  }

  /**
   * Before the sizes of relDir's files are stat'ed (log-sizes.ts): a token for
   * filesUnwrittenSince, undefined without a contents watch (stat every time).
   */
  takeFileSizes(relDir: string): number | undefined {
    return this.contents?.take(this.dirPath(relDir));
  }

  /** True when no file of relDir was written or truncated since takeFileSizes gave `token`. */
  filesUnwrittenSince(relDir: string, token: number): boolean {
    if (this.contents === undefined) return false;
    // Once per read batch, as the directories' own checks (a round asks for every resource).
    if (!this.contentsSynced) this.contents.sync();
    this.contentsSynced = this.cache.inBatch;
    return this.contents.since(this.dirPath(relDir), token) === 'unchanged';
  }

  private dirPath(relDir: string): string {
    return relDir === '' ? this.rootDir : this.resolve(relDir).abs;
  }

  /** The absolute path of rel (checked). Not remembered: callers like log-sizes.ts pass every logfile. */
  abs(rel: string): string {
    return this.resolved.get(rel)?.abs ?? join(this.root, validTreePath(rel));
  }

  /** What is at `rel` (a link with its value and stamp, a file, a directory); undefined when absent. */
  entry(rel: string): CachedEntry | undefined {
    const path = this.resolve(rel);
    return this.cache.entries(path.dir)?.get(path.name);
  }

  /**
   * rel checked, joined and split once, not at every read: marsd reads the same few paths of
   * every resource each round, and the check and the joins were a tenth of an idle daemon's
   * time. Only link reads and directories are remembered (readers of every link of a directory
   * take its listing instead).
   */
  private resolve(rel: string): ResolvedPath {
    let path = this.resolved.get(rel);
    if (path === undefined) {
      const abs = join(this.root, validTreePath(rel));
      path = { abs, dir: dirname(abs), name: basename(abs) };
      if (this.resolved.size >= RESOLVED_PATHS_MAX) this.resolved.clear();
      this.resolved.set(rel, path);
    }
    return path;
  }

  /**
   * Run synchronous reads (no awaits inside) checking each directory's listing once instead of
   * at every read: for code that reads many links in one go, e.g. the merge of a peer listing.
   */
  readBatch<T>(fn: () => T): T {
    if (this.cache.inBatch) return fn();
    this.contentsSynced = false;
    try {
      return this.cache.batch(fn);
    } finally {
      this.contentsSynced = false;
    }
  }

  /**
   * Run synchronous reads and note the directory listings they saw: unchangedSince(reads) tells
   * later, for one check per directory, whether reading the same paths again would give the
   * same answers (dir-cache.ts, trace).
   */
  readTracked<T>(fn: () => T): { value: T; reads: ListingReads } {
    return this.cache.trace(fn);
  }

  /** True when no directory that `reads` saw changed since (see readTracked). */
  unchangedSince(reads: ListingReads): boolean {
    return this.cache.unchangedSince(reads);
  }

  /** How many directory stats validated a cached listing so far. */
  get listingChecks(): number {
    return this.cache.checks;
  }

  /** How many listings the cache's inotify watch vouched for without a stat (common/disk/dir-watch.ts). */
  get listingsWatched(): number {
    return this.cache.watchedHits;
  }

  /** Directories the cache watches; undefined when it has no watch. */
  get watchedDirs(): number | undefined {
    return this.cache.watchedDirs;
  }

  /** Release the cache's watch (reads go on, checked by stat). */
  close(): void {
    this.cache.close();
    this.contents?.close();
  }

  /** How many directory listings were read from disk so far (the cache's misses). */
  get listingsRead(): number {
    return this.cache.loads;
  }

  /** The value and stamp of a link, including tombstones; undefined when absent. */
  readRaw(rel: string): (LinkEntry & { deleted: boolean }) | undefined {
    const e = this.entry(rel);
    if (e?.kind !== 'link') return undefined;
    this.clock.observe(e.stampUs);
    return { value: e.value, stampUs: e.stampUs, deleted: e.value === TOMBSTONE };
  }

  /** The live value of a link; tombstones read as absent. */
  read(rel: string): LinkEntry | undefined {
    const raw = this.readRaw(rel);
    return raw && !raw.deleted ? { value: raw.value, stampUs: raw.stampUs } : undefined;
  }

  value(rel: string): string | undefined {
    return this.read(rel)?.value;
  }

  /**
   * Atomically set a link. Returns false when the write was skipped because the existing link
   * carries a newer stamp (ordered writes) or, with onlyIfChanged, already holds the value.
   */
  write(rel: string, value: string, opts: WriteOptions = {}): boolean {
    if (value.length === 0 || value.length > MAX_VALUE_BYTES || value.includes('\0')) {
      throw new TreeError(`invalid value for ${rel}: must be 1-${MAX_VALUE_BYTES} characters without NUL`);
    }
    const path = this.abs(rel);
    let existing: BigIntStats | undefined;
    try {
      existing = lstatSync(path, { bigint: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (existing?.isDirectory()) throw new TreeError(`${rel} is a directory, not a link`);
    if (existing) {
      const existingUs = stampOf(existing);
      this.clock.observe(existingUs);
      if (existing.isSymbolicLink()) {
        if (opts.onlyIfChanged && readlinkSync(path) === value) return false;
        if (opts.stampUs !== undefined && existingUs >= opts.stampUs) return false;
      }
    }
    const stampUs = opts.stampUs ?? this.clock.tick();
    if (opts.stampUs !== undefined) this.clock.observe(stampUs);
    const dir = dirname(path);
    const tmp = join(dir, `.tmp.${process.pid}.${randomBytes(4).toString('hex')}`);
    symlinkSync(value, tmp);
    try {
      const seconds = stampToSeconds(stampUs);
      lutimesSync(tmp, seconds, seconds);
      renameSync(tmp, path);
    } catch (err) {
      try { unlinkSync(tmp); } catch { /* already gone */ }
      throw err;
    } finally {
      this.cache.forget(dir);
    }
    if (opts.durable) fsyncDirectory(dir);
    return true;
  }

  /** Delete by tombstone (propagates to peers; cron purges it later). */
  remove(rel: string, opts: WriteOptions = {}): boolean {
    const raw = this.readRaw(rel);
    const isFile = !raw && this.exists(rel);
    if (!raw && !isFile) return false;
    if (raw?.deleted) return false;
    return this.write(rel, TOMBSTONE, opts);
  }

  /** Physically remove a link or tombstone (cron's purge of old tombstones). */
  purge(rel: string): void {
    const path = this.abs(rel);
    try {
      unlinkSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    } finally {
      this.cache.forget(dirname(path));
    }
  }

  /** Drop the cached listing of a directory this process changed without the store (a logfile created or unlinked). */
  changed(relDir: string): void {
    this.cache.forget(relDir === '' ? this.rootDir : this.abs(relDir));
  }

  exists(rel: string): boolean {
    return this.entry(rel) !== undefined;
  }

  ensureDir(rel: string): void {
    const path = this.abs(rel);
    if (mkdirSync(path, { recursive: true, mode: TREE_DIR_MODE }) !== undefined) {
      for (let dir = dirname(path); dir.length >= this.rootDir.length; dir = dirname(dir)) this.cache.forget(dir);
    }
  }

  /**
   * A directory's cached listing (name → entry), the same object for as long as the directory
   * is unchanged (log-sizes.ts keys its cache by it); undefined when it does not exist.
   */
  listing(rel: string): ReadonlyMap<string, CachedEntry> | undefined {
    return this.cache.entries(rel === '' ? this.rootDir : this.resolve(rel).abs);
  }

  /** Names in a tree directory, without temporary links; empty when it does not exist. */
  list(rel: string): string[] {
    const entries = this.cache.entries(rel === '' ? this.rootDir : this.resolve(rel).abs);
    return entries ? [...entries.keys()] : [];
  }

  fsyncDir(rel: string): void {
    fsyncDirectory(rel === '' ? this.root : this.abs(rel));
  }
}

export function fsyncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
