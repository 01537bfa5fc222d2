// Read-only handles of data disks shared by the requests in flight: a fast sync keeps a
// dozen sync-reads and two sync-digests of one disk in flight, and opening and closing the
// disk for each of them cost two pool round trips per request. A handle is opened by the
// first request of a path and closed when the last one in flight has ended, so nothing stays
// open between syncs and no timer is involved.
import { constants as fsc } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { assert } from '../../common/util/assert.js';

interface Shared {
  opened: Promise<FileHandle>;
  users: number;
}

export class SharedReadHandles {
  private readonly byPath = new Map<string, Shared>();

  /** Run use(handle) with a read-only handle of path, shared with the other users in flight. */
  async with<T>(path: string, use: (handle: FileHandle) => Promise<T>): Promise<T> {
    let shared = this.byPath.get(path);
    if (!shared) {
      shared = { opened: open(path, fsc.O_RDONLY), users: 0 };
      this.byPath.set(path, shared);
    }
    shared.users++;
    try {
      return await use(await shared.opened);
    } finally {
      await this.release(path, shared);
    }
  }

  /** how many paths have a handle now (for tests) */
  get openCount(): number {
    return this.byPath.size;
  }

  private async release(path: string, shared: Shared): Promise<void> {
    assert(shared.users > 0, `release of ${path} without a user`);
    shared.users--;
    if (shared.users > 0) return;
    this.byPath.delete(path);
    const handle = await shared.opened.catch(() => undefined); // a failed open has nothing to close
    await handle?.close();
  }
}
