// Paces "our tree changed" notifications to the peers (each pulls us soon after one): at most
// one per interval, and never a change left untold. A change inside the interval is told once
// the interval is over (a trailing notification): dropping it would leave the peers to learn
// it at their next regular pull, up to a pull interval later; during a handover, where each
// step is a change one host makes and the other waits for, that was most of a second per step.
import type { Clock, Timer } from '../../common/util/clock.js';

export const NOTIFY_MIN_INTERVAL_MS = 100;

export class NotifyPacer {
  private lastMs = Number.NEGATIVE_INFINITY;
  private trailing: Timer | undefined;

  constructor(private readonly clock: Clock, private readonly notify: () => void, private readonly intervalMs = NOTIFY_MIN_INTERVAL_MS) {}

  /** Something changed: notify now, or once the interval since the last notification is over. */
  changed(): void {
    if (this.trailing !== undefined) return; // already due: it tells this change too
    const waitMs = this.lastMs + this.intervalMs - this.clock.monotonicMs();
    if (waitMs > 0) {
      this.trailing = this.clock.setTimeout(() => { this.trailing = undefined; this.fire(); }, waitMs);
      return;
    }
    this.fire();
  }

  stop(): void {
    this.trailing?.cancel();
    this.trailing = undefined;
  }

  private fire(): void {
    this.lastMs = this.clock.monotonicMs();
    this.notify();
  }
}
