// A value read from the tree, read again only when a directory it was read from changed
// (issue 11: what an idle daemon reads every second it mostly read the second before). The
// check costs one listing check per directory the read saw (TreeStore.readTracked), instead
// of the read's path lookups. The value handed out again is the same object: callers must
// not change it.
import type { TreeStore } from './store.js';
import type { ListingReads } from './dir-cache.js';

export class TrackedRead<T> {
  private last: { value: T; reads: ListingReads } | undefined;
  /** reads answered with the last value (tests and the cost model) */
  reused = 0;

  /**
   * `read` must read the tree only through `tree`, synchronously, and depend on nothing else
   * but what `stillValid` checks (called, after the directories, with the last value).
   */
  constructor(private readonly tree: TreeStore, private readonly read: () => T, private readonly stillValid?: (last: T) => boolean) {}

  get(): T {
    return this.tree.readBatch(() => {
      const last = this.last;
      if (last !== undefined && this.tree.unchangedSince(last.reads) && (this.stillValid?.(last.value) ?? true)) {
        this.reused++;
        return last.value;
      }
      this.last = this.tree.readTracked(this.read);
      return this.last.value;
    });
  }
}
