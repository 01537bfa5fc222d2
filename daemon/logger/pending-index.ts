// The in-memory index of logged but not yet written-back data (the "shadow" buffer of MARS's
// transaction logger). Keyed by 4 KiB page; each entry holds the newest bytes of the sectors it
// covers. Overwrites of a page coalesce into one entry, so writeback writes each page once.
//
// Ordering invariant: the Map's insertion order equals the order of `firstUnapplied`, the log
// location of the oldest record whose data this entry carries and that is not yet on disk.
// An entry keeps its place when overwritten (its oldest record is still unapplied) and moves to
// the end when it is overwritten while a writeback of it is in flight (the in-flight copy will
// apply the older records; the new entry starts with the new record). So the first entry tells
// how far the disk is known to be complete: the replay link's MINPOS.
import { assert } from '../../common/util/assert.js';
import type { LogLocation } from './log-location.js';
import { PagePool } from './page-pool.js';

export const PAGE_BYTES = 4096;
export const SECTOR_BYTES = 512;
const SECTORS_PER_PAGE = PAGE_BYTES / SECTOR_BYTES;
export const FULL_MASK = (1 << SECTORS_PER_PAGE) - 1;
/** Zero-filled pages share one buffer and cost only their bookkeeping. */
const ZERO_PAGE = Buffer.alloc(PAGE_BYTES);
const ENTRY_OVERHEAD_BYTES = 96;

export interface PageEntry {
  readonly pageNo: number;
  /** PAGE_BYTES of data; only the sectors in `mask` are meaningful. May be ZERO_PAGE (shared). */
  data: Buffer;
  /** bit i set = sector i of the page holds pending data */
  mask: number;
  readonly firstUnapplied: LogLocation;
  /** a writeback of this entry is in progress: it must not be modified in place */
  inFlight: boolean;
}

function sectorMask(fromByte: number, toByte: number): number {
  const first = fromByte / SECTOR_BYTES;
  const last = toByte / SECTOR_BYTES; // exclusive
  return ((1 << last) - 1) & ~((1 << first) - 1);
}

export class PendingIndex {
  private readonly pages = new Map<number, PageEntry>();
  private heldBytes = 0;
  private readonly pool = new PagePool(PAGE_BYTES);
  /**
   * Buffers a reader may still be copying from (collect() handed them out before its disk read
   * finished): they go back to the pool only when no read is in progress.
   */
  private readsInProgress = 0;
  private retired: Buffer[] = [];

  get entryCount(): number {
    return this.pages.size;
  }

  /** Memory held by pending data, the figure the memory limit applies to. */
  get bytesHeld(): number {
    return this.heldBytes;
  }

  /** The log location of the oldest unapplied record, or undefined when everything is applied. */
  firstUnapplied(): LogLocation | undefined {
    for (const entry of this.pages.values()) return entry.firstUnapplied;
    return undefined;
  }

  /**
   * Record data written by the log record at `at`. offset and length are sector aligned.
   * `data` undefined means zeros (a ZeroRange record).
   */
  put(offsetBytes: number, lengthBytes: number, data: Buffer | undefined, at: LogLocation): void {
    assert(offsetBytes % SECTOR_BYTES === 0 && lengthBytes % SECTOR_BYTES === 0, 'pending index needs sector-aligned ranges');
    let done = 0;
    while (done < lengthBytes) {
      const pos = offsetBytes + done;
      const pageNo = Math.floor(pos / PAGE_BYTES);
      const inPage = pos - pageNo * PAGE_BYTES;
      const n = Math.min(PAGE_BYTES - inPage, lengthBytes - done);
      this.putInPage(pageNo, inPage, n, data, done, at); // offsets, not a view per page: no garbage per 4 KiB
      done += n;
    }
  }

  /** data[dataAt, dataAt + n) goes to the page at inPage; data undefined: zeros */
  private putInPage(pageNo: number, inPage: number, n: number, data: Buffer | undefined, dataAt: number, at: LogLocation): void {
    const bits = sectorMask(inPage, inPage + n);
    const old = this.pages.get(pageNo);
    const wholePageZero = data === undefined && n === PAGE_BYTES;
    if (old && !old.inFlight) {
      if (wholePageZero) {
        this.setData(old, ZERO_PAGE);
      } else {
        if (old.data === ZERO_PAGE) this.setData(old, this.pool.take().fill(0));
        if (data) data.copy(old.data, inPage, dataAt, dataAt + n); else old.data.fill(0, inPage, inPage + n);
      }
      old.mask |= bits;
      return;
    }
    let buf: Buffer;
    if (wholePageZero) {
      buf = ZERO_PAGE;
    } else {
      buf = this.pool.take();
      if (old) old.data.copy(buf);
      if (data) data.copy(buf, inPage, dataAt, dataAt + n); else buf.fill(0, inPage, inPage + n);
    }
    const entry: PageEntry = { pageNo, data: buf, mask: (old?.mask ?? 0) | bits, firstUnapplied: at, inFlight: false };
    if (old) this.dropEntry(old); // moves the page to the end: see the ordering invariant
    this.pages.set(pageNo, entry);
    this.heldBytes += this.costOf(buf);
  }

  private setData(entry: PageEntry, buf: Buffer): void {
    this.heldBytes += this.costOf(buf) - this.costOf(entry.data);
    this.release(entry.data);
    entry.data = buf;
  }

  /** A page buffer nobody references any more (in-flight writeback copies are not released here). */
  private release(buf: Buffer): void {
    if (buf === ZERO_PAGE) return;
    if (this.readsInProgress > 0) this.retired.push(buf);
    else this.pool.give(buf);
  }

  private costOf(buf: Buffer): number {
    return (buf === ZERO_PAGE ? 0 : PAGE_BYTES) + ENTRY_OVERHEAD_BYTES;
  }

  /** Forget an entry; its buffer is recycled unless a writeback still needs it. */
  private dropEntry(entry: PageEntry, recycle = !entry.inFlight): void {
    this.pages.delete(entry.pageNo);
    this.heldBytes -= this.costOf(entry.data);
    if (recycle) this.release(entry.data);
  }

  /**
   * Overlay pending data onto `out`, which holds the disk's bytes of [offsetBytes, +length).
   * Call `collect` before reading the disk and `apply` after: the collected entries are the
   * state at request time, so a writeback completing during the disk read cannot hide them.
   */
  collect(offsetBytes: number, lengthBytes: number): PageEntry[] {
    const found: PageEntry[] = [];
    if (this.pages.size === 0) return found;
    this.readsInProgress++;
    const firstPage = Math.floor(offsetBytes / PAGE_BYTES);
    const lastPage = Math.floor((offsetBytes + lengthBytes - 1) / PAGE_BYTES);
    for (let p = firstPage; p <= lastPage; p++) {
      const entry = this.pages.get(p);
      if (entry) found.push({ ...entry });
    }
    if (found.length === 0) this.endRead();
    return found;
  }

  /** Overlay collected entries and end the read started by collect(). */
  applyCollected(found: PageEntry[], out: Buffer, offsetBytes: number): void {
    if (found.length === 0) return;
    PendingIndex.apply(found, out, offsetBytes);
    this.endRead();
  }

  /** A read whose collect() found entries ended without applying them (I/O error). */
  abandonCollected(found: PageEntry[]): void {
    if (found.length > 0) this.endRead();
  }

  private endRead(): void {
    this.readsInProgress--;
    if (this.readsInProgress === 0 && this.retired.length > 0) {
      for (const buf of this.retired) this.pool.give(buf);
      this.retired = [];
    }
  }

  static apply(found: PageEntry[], out: Buffer, offsetBytes: number): void {
    const end = offsetBytes + out.length;
    for (const entry of found) {
      const pageStart = entry.pageNo * PAGE_BYTES;
      for (let s = 0; s < SECTORS_PER_PAGE; s++) {
        if ((entry.mask & (1 << s)) === 0) continue;
        const from = Math.max(pageStart + s * SECTOR_BYTES, offsetBytes);
        const to = Math.min(pageStart + (s + 1) * SECTOR_BYTES, end);
        if (from >= to) continue;
        entry.data.copy(out, from - offsetBytes, from - pageStart, to - pageStart);
      }
    }
  }

  /** The oldest entries, up to `maxBytes` of data, marked in flight for writeback. */
  takeBatch(maxBytes: number): PageEntry[] {
    const batch: PageEntry[] = [];
    let bytes = 0;
    for (const entry of this.pages.values()) {
      if (bytes >= maxBytes) break;
      assert(!entry.inFlight, 'only one writeback batch may be in flight');
      entry.inFlight = true;
      batch.push(entry);
      bytes += PAGE_BYTES;
    }
    return batch;
  }

  /** After the batch is durable on disk: forget the entries that were not overwritten since. */
  completeBatch(batch: PageEntry[]): void {
    for (const entry of batch) {
      if (this.pages.get(entry.pageNo) === entry) this.dropEntry(entry, true);
      else this.release(entry.data); // replaced while in flight: only the batch held it
    }
  }
  // There is no abortBatch: an entry replaced while in flight no longer marks its older
  // records as unapplied, so a failed writeback must stop the resource (disk error) instead of
  // retrying with a MINPOS that could pass unapplied data.
}
