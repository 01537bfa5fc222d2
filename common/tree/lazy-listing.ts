// A directory listing whose links are read only when asked for: for short-lived processes
// (marsadm) that look at a few links of a directory holding thousands (issue 11: `marsadm view
// all` at 100 resources x 1000 logfiles spent a quarter of its time in an lstat and a readlink
// of every versionlink, of which the view reads a handful).
//
// The names and their kinds come from one readdir. A symlink's value and stamp are read (lstat +
// readlink) at its first get() and kept with the listing, which DirCache drops when the
// directory's mtime changes, as it drops a full listing. Differences from a full listing
// (dir-cache.ts load), both harmless for a reader that asks for a value and copes with none:
//   - a link that vanished between the readdir and its read still shows in keys(); get() and
//     has() then say it is absent;
//   - a link is read later than the directory: its value may be newer than the names beside it
//     (no older than a full listing would have given).
// Iterating entries or values reads every link (there is no cheaper answer to that question).
import type { Dirent } from 'node:fs';
import { join } from 'node:path';
import type { CachedEntry } from './cached-entry.js';

/** Not read yet: a symlink as readdir reported it. */
const PENDING = Symbol('pending');

export class LazyListing implements ReadonlyMap<string, CachedEntry> {
  private readonly slots = new Map<string, CachedEntry | typeof PENDING | undefined>();
  /** links read so far (for tests and the cost model) */
  linksRead = 0;

  constructor(
    private readonly absDir: string,
    dirents: readonly Dirent[],
    kindOf: (d: Dirent) => CachedEntry,
    private readonly readLink: (path: string) => CachedEntry | undefined,
  ) {
    for (const d of dirents) {
      if (d.name.startsWith('.tmp')) continue;
      this.slots.set(d.name, d.isSymbolicLink() ? PENDING : kindOf(d));
    }
  }

  get(name: string): CachedEntry | undefined {
    const slot = this.slots.get(name);
    if (slot !== PENDING) return slot;
    this.linksRead++;
    const entry = this.readLink(join(this.absDir, name));
    this.slots.set(name, entry);
    return entry;
  }

  has(name: string): boolean {
    return this.get(name) !== undefined;
  }

  /** The names readdir gave (links not read: see the header). */
  keys(): MapIterator<string> {
    return this.slots.keys();
  }

  /** Names readdir gave. */
  get size(): number {
    return this.slots.size;
  }

  *entries(): MapIterator<[string, CachedEntry]> {
    for (const name of [...this.slots.keys()]) {
      const e = this.get(name);
      if (e !== undefined) yield [name, e];
    }
  }

  *values(): MapIterator<CachedEntry> {
    for (const [, e] of this.entries()) yield e;
  }

  [Symbol.iterator](): MapIterator<[string, CachedEntry]> {
    return this.entries();
  }

  forEach(fn: (value: CachedEntry, key: string, map: ReadonlyMap<string, CachedEntry>) => void): void {
    for (const [k, v] of this.entries()) fn(v, k, this);
  }
}
