// Tells when a log comes back to life: its durable end moves after at least quietMs without a
// move. The primary then notifies its peers, whose fetchers parked their follows of this
// logfile while it was quiet (daemon/fetch/fetcher.ts): they pull our listing at once and see
// the new durable end, instead of at their next paced pull (up to 4 s). Only the edge is told:
// a log under steady load moves every few milliseconds and is followed, not parked on, so a
// notification per move would only make every peer pull ten times a second.
import type { Clock } from '../../common/util/clock.js';

/** A durable end that moves after this long without moving is a resumed log. */
export const LOG_RESUME_QUIET_MS = 1_000;

export class LogResumeEdge {
  private lastMoveMs = Number.NEGATIVE_INFINITY;

  constructor(private readonly clock: Clock, private readonly onResumed: (() => void) | undefined, private readonly quietMs = LOG_RESUME_QUIET_MS) {}

  /** The durable end moved now. */
  moved(): void {
    const nowMs = this.clock.monotonicMs();
    if (nowMs - this.lastMoveMs >= this.quietMs) this.onResumed?.();
    this.lastMoveMs = nowMs;
  }
}
