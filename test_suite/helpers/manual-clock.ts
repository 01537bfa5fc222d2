// A Clock whose time moves only when the test says so (advance), for the kernel-shim and
// logger shells: timers fire in due order, including timers they schedule that fall due
// within the same advance. No real time passes; I/O still runs on the real event loop.
import { sleepWith, type Clock, type Timer } from '../../common/util/clock.js';

interface Scheduled {
  dueMs: number;
  fn: () => void;
  everyMs: number | undefined;
  cancelled: boolean;
}

export class ManualClock implements Clock {
  private now: number;
  private scheduled: Scheduled[] = [];

  constructor(startMs = 1_700_000_000_000) {
    this.now = startMs;
  }

  nowMs(): number {
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

  /** Timers not yet fired nor cancelled. */
  get pendingTimers(): number {
    return this.scheduled.filter((s) => !s.cancelled).length;
  }

  /** Moves time forward by ms, firing every timer that falls due on the way, in order. */
  advance(ms: number): void {
    const targetMs = this.now + ms;
    for (;;) {
      this.scheduled = this.scheduled.filter((s) => !s.cancelled);
      const next = this.scheduled.reduce<Scheduled | undefined>((a, s) => (a === undefined || s.dueMs < a.dueMs ? s : a), undefined);
      if (next === undefined || next.dueMs > targetMs) break;
      this.now = next.dueMs;
      if (next.everyMs === undefined) next.cancelled = true;
      else next.dueMs += next.everyMs;
      next.fn();
    }
    this.now = targetMs;
  }

  private schedule(fn: () => void, delayMs: number, everyMs: number | undefined): Timer {
    const s: Scheduled = { dueMs: this.now + Math.max(0, delayMs), fn, everyMs, cancelled: false };
    this.scheduled.push(s);
    return { cancel: () => { s.cancelled = true; } };
  }
}
