// Rate-limited logging of refused connections. A flood of refusals (idle sockets, a wrong
// secret, a host that is not a member, frames that fail authentication) must not grow the log
// per refusal: the first refusal after a quiet interval is logged with its detail, and every
// further one in that interval is only counted, by kind, into one summary line at its end.
import { assert } from '../../common/util/assert.js';
import type { Clock, Timer } from '../../common/util/clock.js';
import type { LogLevel } from '../../common/util/log.js';

export const DEFAULT_REFUSAL_LOG_INTERVAL_MS = 10_000;

export class RefusalLog {
  private readonly counts = new Map<string, number>();
  private timer: Timer | undefined;
  private closed = false;
  /** Every refusal noted so far (for status and tests). */
  total = 0;

  constructor(
    private readonly log: (level: LogLevel, msg: string) => void,
    private readonly clock: Clock,
    private readonly intervalMs: number = DEFAULT_REFUSAL_LOG_INTERVAL_MS,
  ) {
    assert(Number.isSafeInteger(intervalMs) && intervalMs > 0, `bad refusal log interval ${intervalMs}`);
  }

  /** A connection was refused; `kind` groups the summary, `detail` is logged for the first one. */
  note(kind: string, detail: string): void {
    this.total += 1;
    if (this.closed) return;
    if (this.timer === undefined) {
      this.log('warn', `${detail} (further refusals within ${this.intervalMs / 1000} s are summarised)`);
      this.timer = this.clock.setTimeout(() => this.flush(), this.intervalMs);
      return;
    }
    this.counts.set(kind, (this.counts.get(kind) ?? 0) + 1);
  }

  private flush(): void {
    this.timer = undefined;
    if (this.counts.size === 0) return;
    const parts = [...this.counts].map(([kind, n]) => `${n} ${kind}`);
    const sum = [...this.counts.values()].reduce((a, b) => a + b, 0);
    this.counts.clear();
    this.log('warn', `refused ${sum} more peer connection(s) in the last ${this.intervalMs / 1000} s: ${parts.join(', ')}`);
    // The next refusal opens a new interval (and is logged in full).
  }

  close(): void {
    this.closed = true;
    this.timer?.cancel();
    this.timer = undefined;
  }
}
