// Time as the shells see it: the current time and timers, behind one small interface so that
// a test can drive a shell with simulated time (test_suite/helpers/sim-clock.ts) instead of
// real sleeps. Production code takes a Clock from its caller (marsd passes systemClock) and
// never calls Date.now, setTimeout or setInterval itself.
//
// Pure deciders take the time as a number in their input (nowMs), never a Clock.

/** A scheduled callback; cancel() is idempotent and safe after it ran. */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since the epoch (wall-clock, as Date.now): for stamps and messages. */
  nowMs(): number;
  /** Milliseconds from an arbitrary origin that never run backwards: for intervals and order. */
  monotonicMs(): number;
  /** Run fn once after delayMs. */
  setTimeout(fn: () => void, delayMs: number): Timer;
  /** Run fn every intervalMs until cancelled. */
  setInterval(fn: () => void, intervalMs: number): Timer;
  /** Resolves after delayMs; rejects with the signal's reason when it aborts first. */
  sleep(delayMs: number, signal?: AbortSignal): Promise<void>;
}

/** The real clock of a running marsd. */
export const systemClock: Clock = {
  nowMs: () => Date.now(),
  monotonicMs: () => performance.now(),
  setTimeout(fn, delayMs) {
    const t = setTimeout(fn, delayMs);
    return { cancel: () => clearTimeout(t) };
  },
  setInterval(fn, intervalMs) {
    const t = setInterval(fn, intervalMs);
    return { cancel: () => clearInterval(t) };
  },
  sleep(delayMs, signal) {
    return sleepWith(systemClock, delayMs, signal);
  },
};

/** sleep() in terms of a clock's setTimeout, with abort support (shared by every Clock). */
export function sleepWith(clock: Pick<Clock, 'setTimeout'>, delayMs: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) { reject(signal.reason); return; }
    const onAbort = () => { timer.cancel(); reject(signal!.reason); };
    const timer = clock.setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(); }, delayMs);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
