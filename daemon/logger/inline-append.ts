// Whether a log append runs on the event loop (a synchronous writev) or on libuv's pool.
//
// An append copies a batch into the page cache: tens of microseconds. Through the pool it costs
// two thread hand-offs on top (measured here: 4k writes at queue depth 1 took 141 us through
// the pool and 96 us inline; at depth 32, 27k against 30k IOPS). But a buffered write can
// block: when the machine has too much dirty data, the kernel pauses the writer (up to ~200 ms),
// and on the event loop that pause would stall every connection of this daemon. So appends
// run inline while they are fast; one slow append (SLOW_INLINE_MS) sends the next
// POOL_AFTER_SLOW_MS of appends to the pool, where a pause only delays the log. Large batches
// always go to the pool: their copy alone would hold the loop too long.
//
// One policy for the process: the kernel throttles all of this process's writes to /mars
// together, so what one logfile learned holds for the others. Pure except for the time the
// caller passes in.
export const INLINE_MAX_BYTES = 1024 * 1024;
export const SLOW_INLINE_MS = 2;
export const POOL_AFTER_SLOW_MS = 1000;

export class InlineAppendPolicy {
  private poolUntilMs = Number.NEGATIVE_INFINITY;
  /** appends that took longer than SLOW_INLINE_MS (for tests and diagnostics) */
  slowAppends = 0;

  /** Should an append of `bytes` starting at `nowMs` run on the event loop? */
  inline(bytes: number, nowMs: number): boolean {
    return bytes <= INLINE_MAX_BYTES && nowMs >= this.poolUntilMs;
  }

  /** An inline append from startMs took until endMs. */
  took(startMs: number, endMs: number): void {
    if (endMs - startMs > SLOW_INLINE_MS) {
      this.slowAppends++;
      this.poolUntilMs = endMs + POOL_AFTER_SLOW_MS;
    }
  }
}

export const inlineAppends = new InlineAppendPolicy();
