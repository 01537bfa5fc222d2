// Memory backpressure of the primary's write path, first come first served. A write reserves
// its bytes before it is logged and releases them once its data is in the pending index (which
// then holds them until writeback); the limit covers both. A write is admitted at once only
// when nothing waits before it and its bytes fit under the limit; otherwise it queues until
// writeback frees memory. A single request larger than the limit is admitted when nothing else
// is held, so it cannot wait forever.
//
// The logger's state decides what queued writes meet (gate): 'hold' while a rotation runs (it
// pumps when done), an error factory once writes are refused or diverted (every queued write
// is rejected with its own error), else 'open'.
import { assert } from '../../common/util/assert.js';

export type AdmissionGate = 'open' | 'hold' | (() => Error);

export interface AdmissionOptions {
  memLimitBytes: number;
  /** bytes of logged data waiting for writeback (the pending index) */
  indexedBytes: () => number;
  gate: () => AdmissionGate;
  /** memory is short and writes wait: writeback should run */
  onShort: () => void;
}

interface Waiting {
  lengthBytes: number;
  resolve: (cost: number) => void;
  reject: (err: Error) => void;
}

export class Admission {
  /** bytes of admitted writes not yet entered into the index (queued in the log writer) */
  private admittedBytes = 0;
  /** writes waiting for memory (or for a rotation), in arrival order */
  private queue: Waiting[] = [];

  constructor(private readonly opts: AdmissionOptions) {}

  /** Memory held for writes: pending writeback data plus admitted, not yet indexed writes. */
  get pendingBytes(): number {
    return this.opts.indexedBytes() + this.admittedBytes;
  }

  /** Reserves lengthBytes; returns the reserved bytes (release them once indexed). */
  admit(lengthBytes: number): number | Promise<number> {
    if (this.opts.gate() !== 'hold' && this.queue.length === 0 && this.fits(lengthBytes)) {
      this.admittedBytes += lengthBytes;
      return lengthBytes;
    }
    return new Promise<number>((resolve, reject) => {
      this.queue.push({ lengthBytes, resolve, reject });
      this.pump();
    });
  }

  /** A release function for a reservation that may be called more than once. */
  releaseOnce(cost: number): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.release(cost);
    };
  }

  /** Admit queued writes in arrival order while they fit (call when the gate or memory changed). */
  pump(): void {
    const gate = this.opts.gate();
    if (gate === 'hold') return;
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      if (gate !== 'open') {
        for (const w of this.queue.splice(0)) w.reject(gate());
        return;
      }
      if (!this.fits(head.lengthBytes)) {
        this.opts.onShort();
        return;
      }
      this.queue.shift();
      this.admittedBytes += head.lengthBytes;
      head.resolve(head.lengthBytes);
    }
  }

  private fits(lengthBytes: number): boolean {
    const held = this.pendingBytes;
    return held + lengthBytes <= this.opts.memLimitBytes || held === 0;
  }

  private release(lengthBytes: number): void {
    this.admittedBytes -= lengthBytes;
    assert(this.admittedBytes >= 0, 'admitted bytes went negative');
    this.pump();
  }
}
