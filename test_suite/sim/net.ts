// The simulated world's clock and network (docs/reliability.md, "Simulation"). Time is an
// integer of milliseconds that moves only from event to event; events due at the same time run
// in the order they were scheduled, so one seed gives one schedule. Every random choice comes
// from the seeded PRNG the caller passes: a failing seed replays exactly.
//
// The network carries messages between hosts and may lose, delay and reorder them (each message
// draws its own delay, so a later one may overtake an earlier one) and cut pairs of hosts
// (partitions). A cut drops what it carries, as a broken TCP connection does.
import { assert } from '../../common/util/assert.js';

export interface NetFaults {
  /** probability that a message is lost */
  lossRate: number;
  /** delay of a message, uniform in [minDelayMs, maxDelayMs] */
  minDelayMs: number;
  maxDelayMs: number;
}

export const HEALTHY: NetFaults = { lossRate: 0, minDelayMs: 1, maxDelayMs: 5 };

interface Timed {
  atMs: number;
  order: number;
  run: () => void;
}

/** The event queue: a binary heap ordered by (due time, scheduling order). */
export class SimClock {
  private heap: Timed[] = [];
  private nextOrder = 0;
  nowMs = 0;

  at(delayMs: number, run: () => void): void {
    assert(Number.isInteger(delayMs) && delayMs >= 0, `sim: event delay ${delayMs} ms`);
    this.push({ atMs: this.nowMs + delayMs, order: this.nextOrder++, run });
  }

  get pending(): number {
    return this.heap.length;
  }

  /** Run the next event; false when none is due up to untilMs. */
  step(untilMs: number): boolean {
    const top = this.heap[0];
    if (!top || top.atMs > untilMs) return false;
    this.pop();
    assert(top.atMs >= this.nowMs, `sim: time ran backwards (${top.atMs} < ${this.nowMs})`);
    this.nowMs = top.atMs;
    top.run();
    return true;
  }

  private less(a: Timed, b: Timed): boolean {
    return a.atMs < b.atMs || (a.atMs === b.atMs && a.order < b.order);
  }

  private push(e: Timed): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const up = (i - 1) >> 1;
      if (!this.less(h[i]!, h[up]!)) break;
      [h[i], h[up]] = [h[up]!, h[i]!];
      i = up;
    }
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop()!;
    if (h.length === 0) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && this.less(h[l]!, h[m]!)) m = l;
      if (r < h.length && this.less(h[r]!, h[m]!)) m = r;
      if (m === i) return;
      [h[i], h[m]] = [h[m]!, h[i]!];
      i = m;
    }
  }
}

export class SimNetwork {
  faults: NetFaults = HEALTHY;
  private readonly cut = new Set<string>();
  sent = 0;
  lost = 0;

  constructor(private readonly clock: SimClock, private readonly random: () => number) {}

  private key(a: string, b: string): string {
    return a < b ? `${a}|${b}` : `${b}|${a}`;
  }

  partition(a: string, b: string): void {
    this.cut.add(this.key(a, b));
  }

  isCut(a: string, b: string): boolean {
    return this.cut.has(this.key(a, b));
  }

  heal(): void {
    this.cut.clear();
    this.faults = HEALTHY;
  }

  /** Send: `deliver` runs later unless the message is lost or the pair is cut meanwhile. */
  send(from: string, to: string, deliver: () => void): void {
    this.sent++;
    if (this.isCut(from, to) || this.random() < this.faults.lossRate) {
      this.lost++;
      return;
    }
    const f = this.faults;
    const delayMs = f.minDelayMs + Math.floor(this.random() * (f.maxDelayMs - f.minDelayMs + 1));
    this.clock.at(delayMs, () => {
      if (this.isCut(from, to)) {
        this.lost++;
        return;
      }
      deliver();
    });
  }
}
