// Buffers for WRITE payloads that arrive split across socket chunks (nbd-transmission.ts),
// reused once the write settled instead of allocated per request.
//
// Why: a payload of 4 KiB or more does not come from Node's shared Buffer pool: it is an
// ArrayBuffer of its own, memory V8 counts as external. nbdcopy writes 256 KiB per request, so a copy of 1 GiB made 4,096 of them,
// and their external bytes made V8 run a full garbage collection every few tens of MiB (the
// profile of that copy: 7 % of the main thread, and four GC helper threads busy beside it).
//
// Contract: give() takes back a buffer only after the backend's write settled (backend.ts:
// the backend copies what it keeps beyond that). Buffers are kept by capacity, a power of two
// between 4 KiB and MAX_POOLED_BYTES; at most maxHeldBytes are kept, the rest is left to GC.
import { assert } from '../common/util/assert.js';

/** Larger payloads are rare (nbdcopy's are 256 KiB; the kernel's at most 128 KiB-1 MiB) */
export const MAX_POOLED_BYTES = 1 << 20;
const MIN_CAPACITY_BYTES = 4096;
/**
 * What an NBD server keeps for reuse over all its connections: 64 of nbdcopy's 256 KiB
 * payloads. Shared, so the memory kept does not grow with the number of connections.
 */
export const SERVER_POOL_BYTES = 16 << 20;

export class PayloadPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  private heldBytes = 0;
  /** handed out and not given back: a second give() of one would hand its memory out twice */
  private readonly out = new WeakSet<ArrayBuffer>();

  constructor(private readonly maxHeldBytes: number) {}

  /** A Buffer of exactly lengthBytes (contents undefined). */
  take(lengthBytes: number): Buffer {
    assert(Number.isSafeInteger(lengthBytes) && lengthBytes > 0, `payload length ${lengthBytes}`);
    if (lengthBytes > MAX_POOLED_BYTES) return Buffer.allocUnsafe(lengthBytes);
    const capacity = Math.max(MIN_CAPACITY_BYTES, 2 ** Math.ceil(Math.log2(lengthBytes)));
    let ab = this.free.get(capacity)?.pop();
    if (ab !== undefined) this.heldBytes -= capacity;
    else ab = Buffer.allocUnsafeSlow(capacity).buffer as ArrayBuffer;
    this.out.add(ab);
    return Buffer.from(ab, 0, lengthBytes);
  }

  /** Take back a buffer take() handed out, once nothing uses it any more. */
  give(buf: Buffer): void {
    const ab = buf.buffer as ArrayBuffer;
    if (!this.out.delete(ab)) {
      assert(buf.length > MAX_POOLED_BYTES, 'a payload buffer given back twice, or one the pool did not hand out');
      return;
    }
    const capacity = ab.byteLength;
    if (this.heldBytes + capacity > this.maxHeldBytes) return;
    let list = this.free.get(capacity);
    if (list === undefined) this.free.set(capacity, (list = []));
    list.push(ab);
    this.heldBytes += capacity;
  }

  /** Bytes kept for reuse. */
  get keptBytes(): number {
    return this.heldBytes;
  }
}
