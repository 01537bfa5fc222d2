// Limits of the NBD server as a whole (issue 17: many clients together), next to the
// per-connection budget of nbd-budget.ts:
//   - a total connection cap (handshakes included): the connection over it is closed at once,
//     with one rate-limited log line;
//   - a total buffer budget: in-flight payload + unsent reply bytes summed over all
//     connections; above it no connection reads requests, below half of it they read again;
//   - a reply stall deadline: a connection with unsent replies whose socket has taken none of
//     them for replyStallMs (two watchdog rounds, on the injected clock) is closed, so a client
//     that stops reading (and perhaps sent DISC behind its unread replies) releases its memory
//     and its connection.
import type { Clock, Timer } from '../common/util/clock.js';
import type { LogLevel } from '../common/util/log.js';

/** What the limits need of one connection in transmission (its ConnectionBudget). */
export interface LimitedConnection {
  readonly label: string;
  /** in-flight payload + unsent reply bytes */
  bufferedBytes(): number;
  /** reply bytes not yet taken by the socket */
  unsentReplyBytes(): number;
  /** bytes the socket has taken so far (grows while the client reads) */
  flushedBytes(): number;
  /** read requests again if the limits allow it */
  resumeIfBelow(): void;
  destroy(reason: string): void;
}

export interface ServerLimitOptions {
  clock: Clock;
  log: (level: LogLevel, msg: string) => void;
  maxConnections: number;
  maxTotalBufferedBytes: number;
  replyStallMs: number;
}

const REFUSAL_LOG_INTERVAL_MS = 10_000;

export class ServerLimits {
  private readonly conns = new Map<LimitedConnection, { flushed: number; strikes: number }>();
  private watchdog: Timer | null = null;
  private refusedSinceLog = 0;
  private lastRefusalLogMs = Number.NEGATIVE_INFINITY;
  private waking = false;

  constructor(readonly o: ServerLimitOptions) {}

  /** May one more connection be accepted, with `open` open now? Logs refusals, rate-limited. */
  admit(open: number): boolean {
    if (open < this.o.maxConnections) return true;
    this.refusedSinceLog++;
    const now = this.o.clock.monotonicMs();
    if (now - this.lastRefusalLogMs >= REFUSAL_LOG_INTERVAL_MS) {
      this.o.log('warn', `nbd: ${open} connections open (limit ${this.o.maxConnections}); refused ${this.refusedSinceLog} connection(s)`);
      this.refusedSinceLog = 0;
      this.lastRefusalLogMs = now;
    }
    return false;
  }

  add(c: LimitedConnection): void {
    this.conns.set(c, { flushed: c.flushedBytes(), strikes: 0 });
    this.watchdog ??= this.o.clock.setInterval(() => this.checkStalls(), this.o.replyStallMs / 2);
  }

  remove(c: LimitedConnection): void {
    if (!this.conns.delete(c)) return;
    if (this.conns.size === 0) {
      this.watchdog?.cancel();
      this.watchdog = null;
    }
    this.wakeAll();
  }

  totalBufferedBytes(): number {
    let sum = 0;
    for (const c of this.conns.keys()) sum += c.bufferedBytes();
    return sum;
  }

  overTotal(): boolean {
    return this.totalBufferedBytes() >= this.o.maxTotalBufferedBytes;
  }

  belowTotalResumeMark(): boolean {
    return this.totalBufferedBytes() <= this.o.maxTotalBufferedBytes / 2;
  }

  /** Memory was released somewhere: connections paused by the total budget may read again. */
  wakeAll(): void {
    if (this.waking) return; // a resume that releases memory calls back here
    this.waking = true;
    try {
      for (const c of [...this.conns.keys()]) c.resumeIfBelow();
    } finally {
      this.waking = false;
    }
  }

  private checkStalls(): void {
    for (const [c, s] of [...this.conns]) {
      const flushed = c.flushedBytes();
      const unsent = c.unsentReplyBytes();
      s.strikes = unsent > 0 && flushed === s.flushed ? s.strikes + 1 : 0;
      s.flushed = flushed;
      if (s.strikes >= 2) c.destroy(`the client read none of its ${unsent} bytes of replies for ${this.o.replyStallMs} ms`);
    }
  }
}
