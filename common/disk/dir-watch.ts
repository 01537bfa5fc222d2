// Tells the listing cache (common/tree/dir-cache.ts) which directories changed since it read
// them, from one inotify instance read without blocking (native/mars_inotify.c), instead of a
// stat of every directory at every check: at 100 resources those stats were a quarter of an
// idle marsd's time.
//
// Why it is as sound as the stat: the kernel queues a directory's event before the syscall that
// changed it (a create, unlink, rename, or a link's lutimes) returns. take(dir) watches dir
// before the caller reads the directory; sync() reads the queue, and then since(dir) knows of
// every change made in dir by any process before that sync. The caller syncs where it would
// have stat'ed (the listing cache: once per check, or once per batch of synchronous reads, as
// it stats each directory once per batch). Events are never trusted to say *what* changed,
// only *that* something did: the caller reads again. An event queued before a take() and read
// after it only costs one read too many.
//
// What makes every listing suspect (the epoch moves on, and callers stat again as before): the
// queue overflowed (events were lost), or a watched directory or one of its ancestors was
// deleted, moved or unmounted. A directory below a moved one keeps its watch but no longer has
// its path, so every watch below a moved path is dropped. The ancestors of each watched
// directory, up to /, are watched too: their own deletion or move, and a subdirectory made,
// removed or renamed in them, which marks the watched directories right below them changed (a
// directory's own deletion event waits until nobody holds it open any more; its parent's
// comes at once).
// A take() of a directory whose listing is not vouched for adds its watch again, so a path
// whose directory was replaced behind lost events gets the new directory's watch; after the
// epoch moved, its ancestors' too. A root reached through a symlink is not watched (the link
// could change without an event here): its checks stat as before. Not seen: a filesystem
// mounted over a watched directory, or lazily unmounted under it, while marsd runs.
//
// A second instance, open('contents'), reports writes and truncations of the files in each
// watched directory instead (IN_MODIFY): the logfile sizes (common/tree/log-sizes.ts) are
// stat'ed again only where a file was written. It watches no ancestors: a take() adds the
// directory's watch again, so a directory moved away or made anew at the path gets a watch of
// its own before its sizes are stat'ed.
//
// Where the native helper is missing, open() returns undefined and the cache stats as before.
import { closeSync, realpathSync } from 'node:fs';
import { dirname } from 'node:path';
import { nativeInotify, type InotifyMode, type NativeInotify } from './native-io.js';
import type { DirChanges } from '../tree/dir-cache.js';

const IN_DELETE_SELF = 0x400;
const IN_MOVE_SELF = 0x800;
const IN_UNMOUNT = 0x2000;
const IN_IGNORED = 0x8000;
const IN_ISDIR = 0x40000000;
/** an entry of the watched directory made, removed or renamed */
const ENTRY_EVENTS = 0x100 /* IN_CREATE */ | 0x200 /* IN_DELETE */ | 0x40 /* IN_MOVED_FROM */ | 0x80 /* IN_MOVED_TO */;
/** events after which no watched path can be taken for the directory it named */
const PATHS_MOVED = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED;
const ENOENT = 2;
const ENOTDIR = 20;

const ENTRIES: InotifyMode = 0;
const CONTENTS: InotifyMode = 2;

export type DirWatchKind = 'entries' | 'contents';

/** (wd, mask) pairs read per call; more queued events than that count as lost */
const DRAIN_PAIRS = 16_384;

export class DirWatch implements DirChanges {
  /** Moves on whenever events may have been lost: a listing taken before is no longer vouched for. */
  private epoch = 0;
  private readonly dirsOfWd = new Map<number, Set<string>>();
  private readonly wdOfDir = new Map<string, number>();
  /** ancestors of watched directories (not read as listings themselves): their own deletion or
   *  move, and subdirectories made or removed in them */
  private readonly wdOfAncestor = new Map<string, number>();
  /** watched directories with an event since their last take() */
  private readonly changed = new Set<string>();
  /** the epoch at which each directory and its ancestors were last watched anew */
  private readonly addedEpoch = new Map<string, number>();
  /** directories reached through a symlink: never watched */
  private readonly behindLinks = new Set<string>();
  private readonly pairs = new Int32Array(2 * DRAIN_PAIRS);
  private closed = false;
  /** directories that could not be watched for another reason than being absent (out of watches) */
  unwatchable = 0;
  /** times every listing became suspect (overflow, a watched directory gone or moved) */
  epochs = 0;

  private constructor(private readonly native: NativeInotify, private readonly fd: number, private readonly kind: DirWatchKind) {}

  /**
   * An inotify instance, or undefined where the native helper cannot give one. 'entries': the
   * directories' entries (the listing cache); 'contents': writes to the files in them.
   */
  static open(kind: DirWatchKind = 'entries'): DirWatch | undefined {
    const native = nativeInotify();
    if (native === undefined) return undefined;
    const fd = native.open();
    return fd < 0 ? undefined : new DirWatch(native, fd, kind);
  }

  get watchedDirs(): number {
    return this.wdOfDir.size;
  }

  /**
   * Watch dir (if it is not yet) and forget its past events, before the caller reads it: what the
   * caller reads afterwards is current until since() says otherwise. Returns the token to
   * pass to since(), or undefined when dir cannot be watched (absent, out of watches).
   */
  take(dir: string): number | undefined {
    if (this.closed) return undefined;
    if (this.addedEpoch.get(dir) !== this.epoch) {
      if (!this.add(dir)) return undefined;
      this.addedEpoch.set(dir, this.epoch);
    } else if (this.addWatch(dir, this.kind === 'contents' ? CONTENTS : ENTRIES, this.wdOfDir) === undefined) {
      return undefined; // gone; its inode may be another one now: the watch follows the path
    }
    this.changed.delete(dir);
    return this.epoch;
  }

  /**
   * Since the take() that returned `token`: 'unchanged' (no event for dir), 'changed' (an event
   * for dir), or 'unknown' (events may have been lost, or dir is no longer watched).
   */
  since(dir: string, token: number): 'unchanged' | 'changed' | 'unknown' {
    if (this.closed || token !== this.epoch || !this.wdOfDir.has(dir)) return 'unknown';
    return this.changed.has(dir) ? 'changed' : 'unchanged';
  }

  /** Read every queued event (one non-blocking read when there is none). */
  sync(): void {
    if (!this.closed) this.drain();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
    this.dirsOfWd.clear();
    this.wdOfDir.clear();
    this.wdOfAncestor.clear();
    this.changed.clear();
    this.addedEpoch.clear();
  }

  /** Watch dir, after its ancestors (a move of one of them must be seen too). */
  private add(dir: string): boolean {
    if (this.kind === 'contents') return this.addWatch(dir, CONTENTS, this.wdOfDir) !== undefined;
    if (!this.unlinked(dir)) return false;
    for (let a = dirname(dir); ; a = dirname(a)) {
      if (!this.wdOfDir.has(a) && this.addWatch(a, ENTRIES, this.wdOfAncestor) === undefined) return false;
      if (dirname(a) === a) break;
    }
    if (this.addWatch(dir, ENTRIES, this.wdOfDir) === undefined) return false;
    this.wdOfAncestor.delete(dir); // an ancestor of another directory before: its own listing now
    return true;
  }

  /** No symlink on the way to dir: a changed link would go unseen (its checks stat instead). */
  private unlinked(dir: string): boolean {
    if (this.behindLinks.has(dir)) return false;
    try {
      if (realpathSync(dir) === dir) return true;
    } catch {
      return false; // gone meanwhile
    }
    this.behindLinks.add(dir); // not asked again: a path through a symlink stays one
    return false;
  }

  /** Watch path (again): a new inode at the path gets a new watch, the old one is dropped. */
  private addWatch(path: string, mode: InotifyMode, watches: Map<string, number>): number | undefined {
    const wd = this.native.add(this.fd, path, mode);
    if (wd < 0) {
      if (-wd !== ENOENT && -wd !== ENOTDIR) this.unwatchable++;
      this.unmap(path, watches);
      return undefined;
    }
    if (watches.get(path) !== wd) {
      this.unmap(path, watches);
      let paths = this.dirsOfWd.get(wd);
      if (paths === undefined) this.dirsOfWd.set(wd, (paths = new Set()));
      paths.add(path);
      watches.set(path, wd);
    }
    return wd;
  }

  /** Forget path's watch in `watches`; the kernel's watch goes when no other path uses it. */
  private unmap(path: string, watches: Map<string, number>): void {
    const wd = watches.get(path);
    if (wd === undefined) return;
    watches.delete(path);
    const paths = this.dirsOfWd.get(wd);
    paths?.delete(path);
    if (paths?.size === 0) {
      this.dirsOfWd.delete(wd);
      this.native.remove(this.fd, wd); // EINVAL when the kernel dropped it already (deleted)
    }
  }

  private drain(): void {
    const n = this.native.drain(this.fd, this.pairs);
    if (n === -1) return this.lostAll(); // the queue overflowed
    if (n < 0) {
      this.lostAll(); // the instance broke (it should not): stat from now on
      return this.close();
    }
    for (let i = 0; i < n; i++) {
      const wd = this.pairs[2 * i]!;
      const mask = this.pairs[2 * i + 1]!;
      const dirs = this.dirsOfWd.get(wd);
      if (dirs === undefined) continue; // a watch dropped before
      if ((mask & PATHS_MOVED) !== 0) {
        for (const path of [...dirs]) this.dropBelow(path);
        this.lostAll();
        continue;
      }
      for (const dir of dirs) this.changed.add(dir);
      // A subdirectory made, removed or renamed here: a watched one is checked and watched anew
      // at its next take (its own deletion event may come much later). Deeper ones need no
      // mark: a directory is removed only once empty (its subdirectories' removal is an event
      // in it), and one moved away reports its own move at once.
      if ((mask & IN_ISDIR) !== 0 && (mask & ENTRY_EVENTS) !== 0) for (const dir of dirs) this.suspectChildren(dir);
    }
  }

  /** Drop the watches of path and of every path below it: their inodes are elsewhere or gone. */
  private dropBelow(path: string): void {
    const prefix = path.endsWith('/') ? path : `${path}/`;
    for (const watches of [this.wdOfDir, this.wdOfAncestor]) {
      for (const p of [...watches.keys()]) if (p === path || p.startsWith(prefix)) this.unmap(p, watches);
    }
  }

  /** Every watched directory right below dir: changed, and watched anew (with its ancestors) at its next take. */
  private suspectChildren(dir: string): void {
    for (const p of this.wdOfDir.keys()) {
      if (dirname(p) !== dir) continue;
      this.changed.add(p);
      this.addedEpoch.delete(p);
    }
  }

  private lostAll(): void {
    this.epoch++;
    this.epochs++;
    this.changed.clear();
  }
}
