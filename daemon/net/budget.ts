// Memory budgets for the replies a server owes its peers (docs/protocol.md §6.3). A request is
// admitted only when the bytes its reply may hold (reserveBytesFor) fit into both its
// connection's budget and the total one shared by every connection; they are released once the
// reply was handed to the socket below its high-water mark. A request that does not fit waits,
// and its connection stops reading meanwhile (backpressure): a peer that sends requests but
// does not read the replies fills its own TCP window, not our heap.
import { assert } from '../../common/util/assert.js';
import { DIGEST_BYTES } from '../../common/resource/sync-blocks.js';
import { MAX_LOG_DATA_BYTES } from './messages.js';

/** Per connection: a few MiB keeps a link busy without letting one peer hold much. */
export const DEFAULT_CONNECTION_BUDGET_BYTES = 8 * 1024 * 1024;
/** For all connections together. */
export const DEFAULT_TOTAL_BUDGET_BYTES = 64 * 1024 * 1024;
/** What a reply without bulk data (ok, error, position-reply) is counted as. */
const SMALL_REPLY_BYTES = 4 * 1024;
/** An ents reply: the tree's entries; counted at a typical size, they are not bulk data. */
const ENTS_REPLY_BYTES = 256 * 1024;

export class ByteBudget {
  private usedBytes = 0;
  private readonly waiters = new Set<() => void>();

  constructor(readonly capacityBytes: number) {
    assert(Number.isSafeInteger(capacityBytes) && capacityBytes >= MAX_LOG_DATA_BYTES, `a budget of ${capacityBytes} bytes cannot hold one reply`);
  }

  get used(): number {
    return this.usedBytes;
  }

  fits(bytes: number): boolean {
    return this.usedBytes + bytes <= this.capacityBytes;
  }

  take(bytes: number): void {
    assert(this.fits(bytes), `budget overdrawn: ${this.usedBytes} + ${bytes} > ${this.capacityBytes}`);
    this.usedBytes += bytes;
  }

  give(bytes: number): void {
    assert(bytes >= 0 && bytes <= this.usedBytes, `budget released ${bytes} bytes of ${this.usedBytes} taken`);
    this.usedBytes -= bytes;
    for (const wake of [...this.waiters]) wake();
  }

  /** Call `wake` whenever bytes are released (until unsubscribed). */
  subscribe(wake: () => void): () => void {
    this.waiters.add(wake);
    return () => this.waiters.delete(wake);
  }
}

/** The bytes a request's reply may hold in memory at once. */
export function reserveBytesFor(req: { t: string; lengthBytes?: number; blockBytes?: number }): number {
  switch (req.t) {
    case 'sync-read':
      return Math.max(SMALL_REPLY_BYTES, req.lengthBytes ?? 0);
    case 'sync-digests':
      return SMALL_REPLY_BYTES + Math.ceil((req.lengthBytes ?? 0) / Math.max(1, req.blockBytes ?? 1)) * DIGEST_BYTES;
    case 'log-read':
      // Its data chunks are reserved one at a time by its sink (service.ts LogSink.reserve),
      // only while it has data in hand: a follow waiting for its logfile to grow holds none.
      return SMALL_REPLY_BYTES;
    case 'getents':
      return ENTS_REPLY_BYTES;
    default:
      return SMALL_REPLY_BYTES;
  }
}

/** A connection's share: its own budget and the shared total. */
export class ConnectionBudget {
  readonly own: ByteBudget;

  constructor(readonly total: ByteBudget, ownBytes: number = DEFAULT_CONNECTION_BUDGET_BYTES) {
    this.own = new ByteBudget(Math.min(ownBytes, total.capacityBytes));
  }

  tryTake(bytes: number): boolean {
    if (!this.own.fits(bytes) || !this.total.fits(bytes)) return false;
    this.own.take(bytes);
    this.total.take(bytes);
    return true;
  }

  give(bytes: number): void {
    this.own.give(bytes);
    this.total.give(bytes);
  }
}
