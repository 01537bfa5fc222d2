// Keeps marsd's resident memory close to the memory it uses. Buffers live in the C heap; a
// burst of large ones (NBD payloads of a sequential writer, log batches, fetched chunks) grows
// glibc's main arena, and after the burst its free chunks stay resident unless they sit at the
// top of the heap. Measured with nbdcopy and then fio against marsd under writeback pressure:
// 144 MiB of heap, 69 MiB of it in use, peak RSS 305-334 MiB (docs/benchmarks.md, write path).
// Once a second, when the heap holds more than HEAP_TRIM_MIN_FREE_BYTES free, its free pages
// go back to the kernel (native/mars_memory.c). Without the native helper this does nothing.
// Cost, measured with 76 MiB free in the heap: the first trim after a burst blocks the event
// loop for about 13 ms; each later one finds those pages gone and takes 0.15 ms, so trimming
// again every second while the free figure stays high (glibc still counts the released
// chunks as free) costs about 0.02 % of a core; under load it hands back what the load freed
// again since the last second.
import { trimCHeap } from '../common/disk/native-io.js';
import type { Clock, Timer } from '../common/util/clock.js';

export const HEAP_TRIM_INTERVAL_MS = 1000;
/** Below this much free heap a trim gains too little to pay for the page faults that refill it. */
export const HEAP_TRIM_MIN_FREE_BYTES = 16 << 20;

export class HeapTrimmer {
  private timer: Timer | undefined;
  /** free bytes the C heap held at the last look (undefined: unknown here) */
  lastFreeBytes: number | undefined;

  constructor(private readonly clock: Clock, private readonly trim: (minFreeBytes: number) => number | undefined = trimCHeap) {}

  start(): void {
    if (this.timer) return;
    this.timer = this.clock.setInterval(() => {
      this.lastFreeBytes = this.trim(HEAP_TRIM_MIN_FREE_BYTES);
    }, HEAP_TRIM_INTERVAL_MS);
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }
}
