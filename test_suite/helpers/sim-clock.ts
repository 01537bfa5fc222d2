// A Clock (common/util/clock.ts) whose time moves only when the test moves it: timers run in
// order of their due time (then of their creation) as advance() passes them, and between two
// timers the real I/O the code under test started is given the chance to complete by turning the
// event loop with setImmediate (never a real timer, never a real sleep). A shell driven by it
// runs as fast as its I/O allows, and a test can make hours of polling pass in a moment.
import { sleepWith, type Clock, type Timer } from '../../common/util/clock.js';

interface Scheduled {
  dueMs: number;
  /** creation order: timers due at the same time run in the order they were set */
  order: number;
  fn: () => void;
  intervalMs: number | undefined;
}

/** Event-loop turns per flush: enough for a chain of promise-based fs calls to come back. */
const FLUSH_TURNS = 20;

export class SimClock implements Clock {
  private now: number;
  private nextOrder = 0;
  private readonly timers = new Set<Scheduled>();

  constructor(startMs = 1_700_000_000_000) {
    this.now = startMs;
  }

  nowMs(): number {
    return this.now;
  }

  /** Simulated time only moves forward, so it is monotonic too. */
  monotonicMs(): number {
    return this.now;
  }

  setTimeout(fn: () => void, delayMs: number): Timer {
    return this.schedule(fn, delayMs, undefined);
  }

  setInterval(fn: () => void, intervalMs: number): Timer {
    return this.schedule(fn, intervalMs, Math.max(1, intervalMs));
  }

  sleep(delayMs: number, signal?: AbortSignal): Promise<void> {
    return sleepWith(this, delayMs, signal);
  }

  /** Timers not yet run (or intervals not cancelled). */
  get pendingTimers(): number {
    return this.timers.size;
  }

  /** Let real I/O that is under way complete: turn the event loop, no time passes. */
  async flush(turns = FLUSH_TURNS): Promise<void> {
    for (let i = 0; i < turns; i++) await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /** Move time forward by ms, running every timer that falls due on the way, in order. */
  async advance(ms: number): Promise<void> {
    const target = this.now + ms;
    while (this.runNextDue(target)) await this.flush();
    this.now = target;
    await this.flush();
  }

  /**
   * Move time forward by ms synchronously, running every due timer in order without turning the
   * event loop: for code whose timers only start synchronous work (deadlines, keepalives).
   */
  advanceSync(ms: number): void {
    const target = this.now + ms;
    while (this.runNextDue(target)) { /* the next one */ }
    this.now = target;
  }

  /**
   * Advance in steps of stepMs until cond() holds; fails after maxMs of simulated time, naming
   * what was awaited (a test that cannot progress ends instead of hanging).
   */
  async until(what: string, cond: () => boolean, opts: { stepMs?: number; maxMs?: number } = {}): Promise<void> {
    const stepMs = opts.stepMs ?? 10;
    const deadline = this.now + (opts.maxMs ?? 600_000);
    await this.flush();
    while (!cond()) {
      if (this.now >= deadline) throw new Error(`simulated time: ${what} did not happen within ${opts.maxMs ?? 600_000} ms`);
      await this.advance(stepMs);
    }
  }

  private schedule(fn: () => void, delayMs: number, intervalMs: number | undefined): Timer {
    const entry: Scheduled = { dueMs: this.now + Math.max(0, delayMs), order: this.nextOrder++, fn, intervalMs };
    this.timers.add(entry);
    return { cancel: () => { this.timers.delete(entry); } };
  }

  /** Run the earliest timer due at or before target (time moves to it); false if none is. */
  private runNextDue(target: number): boolean {
    const next = this.earliest();
    if (next === undefined || next.dueMs > target) return false;
    this.now = Math.max(this.now, next.dueMs);
    if (next.intervalMs === undefined) this.timers.delete(next);
    else { next.dueMs += next.intervalMs; next.order = this.nextOrder++; }
    next.fn();
    return true;
  }

  private earliest(): Scheduled | undefined {
    let best: Scheduled | undefined;
    for (const t of this.timers) {
      if (!best || t.dueMs < best.dueMs || (t.dueMs === best.dueMs && t.order < best.order)) best = t;
    }
    return best;
  }
}
