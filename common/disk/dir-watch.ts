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
// its path, so every watch below a moved path is dropped; the ancestors of each watched
// directory, up to /, are watched for their own deletion or move only. Not seen: a filesystem
// mounted over a watched directory or one above it while marsd runs (unmounting one is seen).
//
// A second instance, open('contents'), reports writes and truncations of the files in each
// watched directory instead (IN_MODIFY): the logfile sizes (common/tree/log-sizes.ts) are
// stat'ed again only where a file was written. It watches no ancestors: sizes belong to a
// listing object, and a directory moved or made anew gives a new listing (the entries watch).
//
// Where the native helper is missing, open() returns undefined and the cache stats as before.
import { closeSync } from 'node:fs';
import { dirname } from 'node:path';
import { nativeInotify, type InotifyMode, type NativeInotify } from './native-io.js';
import type { DirChanges } from '../tree/dir-cache.js';

const IN_DELETE_SELF = 0x400;
const IN_MOVE_SELF = 0x800;
const IN_UNMOUNT = 0x2000;
const IN_IGNORED = 0x8000;
/** events after which no watched path can be taken for the directory it named */
const PATHS_MOVED = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED;
const ENOENT = 2;
const ENOTDIR = 20;

const ENTRIES: InotifyMode = 0;
const SELF_ONLY: InotifyMode = 1;
const CONTENTS: InotifyMode = 2;

export type DirWatchKind = 'entries' | 'contents';

/** (wd, mask) pairs read per call; more queued events than that count as lost */
const DRAIN_PAIRS = 16_384;

export class DirWatch implements DirChanges {
  /** Moves on whenever events may have been lost: a listing taken before is no longer vouched for. */
  private epoch = 0;
  private readonly dirsOfWd = new Map<number, Set<string>>();
  private readonly wdOfDir = new Map<string, number>();
  /** ancestors of watched directories, watched for their own deletion or move only */
  private readonly wdOfAncestor = new Map<string, number>();
  /** watched directories with an event since their last take() */
  private readonly changed = new Set<string>();
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
    if (!this.wdOfDir.has(dir) && !this.add(dir)) return undefined;
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
  }

  /** Watch dir, after its ancestors (a move of one of them must be seen too). */
  private add(dir: string): boolean {
    if (this.kind === 'contents') {
      const wd = this.addWatch(dir, CONTENTS);
      if (wd !== undefined) this.wdOfDir.set(dir, wd);
      return wd !== undefined;
    }
    for (let a = dirname(dir); ; a = dirname(a)) {
      if (!this.wdOfDir.has(a) && !this.wdOfAncestor.has(a)) {
        const wd = this.addWatch(a, SELF_ONLY);
        if (wd === undefined) return false;
        this.wdOfAncestor.set(a, wd);
      }
      if (dirname(a) === a) break;
    }
    const wd = this.addWatch(dir, ENTRIES);
    if (wd === undefined) return false;
    this.wdOfAncestor.delete(dir); // an ancestor of another directory before: the full mask now
    this.wdOfDir.set(dir, wd);
    return true;
  }

  private addWatch(path: string, mode: InotifyMode): number | undefined {
    const wd = this.native.add(this.fd, path, mode);
    if (wd < 0) {
      if (-wd !== ENOENT && -wd !== ENOTDIR) this.unwatchable++;
      return undefined;
    }
    // Another path to the same directory (a symlinked root) shares the watch.
    let paths = this.dirsOfWd.get(wd);
    if (paths === undefined) this.dirsOfWd.set(wd, (paths = new Set()));
    paths.add(path);
    return wd;
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
      } else for (const dir of dirs) this.changed.add(dir);
    }
  }

  /** Drop the watches of path and of every path below it: their inodes are elsewhere or gone. */
  private dropBelow(path: string): void {
    const prefix = path.endsWith('/') ? path : `${path}/`;
    for (const watches of [this.wdOfDir, this.wdOfAncestor]) {
      for (const [p, wd] of watches) {
        if (p !== path && !p.startsWith(prefix)) continue;
        watches.delete(p);
        const paths = this.dirsOfWd.get(wd);
        paths?.delete(p);
        if (paths?.size === 0) {
          this.dirsOfWd.delete(wd);
          this.native.remove(this.fd, wd); // EINVAL when the kernel dropped it already (deleted)
        }
      }
    }
  }

  private lostAll(): void {
    this.epoch++;
    this.epochs++;
    this.changed.clear();
  }
}
