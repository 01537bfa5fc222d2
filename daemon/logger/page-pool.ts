// Fixed-size 4 KiB page buffers carved from 1 MiB slabs and recycled through a free list, so
// the write path allocates no ArrayBuffer per page (a fresh 4 KiB Buffer is not pooled by Node
// and each one costs the garbage collector). Slabs are kept once allocated: their number is
// bounded by the memory limit the logger enforces.
import { assert } from '../../common/util/assert.js';

const SLAB_BYTES = 1 << 20;

export class PagePool {
  private readonly free: Buffer[] = [];
  private slabs = 0;

  constructor(readonly pageBytes: number) {
    assert(SLAB_BYTES % pageBytes === 0, 'page size must divide the slab size');
  }

  get allocatedBytes(): number {
    return this.slabs * SLAB_BYTES;
  }

  take(): Buffer {
    const page = this.free.pop();
    if (page) return page;
    const slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    this.slabs++;
    for (let at = this.pageBytes; at < SLAB_BYTES; at += this.pageBytes) this.free.push(slab.subarray(at, at + this.pageBytes));
    return slab.subarray(0, this.pageBytes);
  }

  give(page: Buffer): void {
    assert(page.length === this.pageBytes, 'foreign buffer returned to the page pool');
    this.free.push(page);
  }
}
