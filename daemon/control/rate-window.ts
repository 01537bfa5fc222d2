import type { ResourceCounters } from '../../common/util/metrics-recorder.js';

// Bytes per second over a sliding window, from samples of a monotonic byte counter taken
// whenever status is published (no timer of its own). Pure apart from the numbers fed in.
export const RATE_WINDOW_MS = 10_000;

export class RateWindow {
  private readonly samples: { atMs: number; total: number }[] = [];

  constructor(private readonly windowMs = RATE_WINDOW_MS) {}

  /** Record the counter's value at `atMs` and return the rate over the window (bytes/s, rounded). */
  sample(atMs: number, total: number): number {
    this.samples.push({ atMs, total });
    while (this.samples.length > 2 && this.samples[1]!.atMs <= atMs - this.windowMs) this.samples.shift();
    const first = this.samples[0]!;
    const spanMs = atMs - first.atMs;
    return spanMs > 0 ? Math.round(((total - first.total) * 1000) / spanMs) : 0;
  }
}

/** A hook that adds to one counter (the write, fetch and replay paths call it per chunk). */
export function countInto(c: ResourceCounters, key: keyof ResourceCounters): (bytes: number) => void {
  return (bytes) => { c[key] += bytes; };
}
