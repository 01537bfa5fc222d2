// Who waits for a logfile's durable end to move: a peer's follow of the logfile our logger
// writes (daemon/serve/peer-service.ts). It used to look at the end every 10 ms per follow,
// 100 timer wake-ups a second per replicated resource on an idle primary (issue 11); now it
// sleeps until the writer says the end moved, the writer ended, or the follow gives up.
//
// Nothing here allocates per append: moved() costs one size check while nobody waits.

interface GrowthWaiter {
  mark: number;
  wake: () => void;
}

export class GrowthWaiters {
  private readonly waiting = new Set<GrowthWaiter>();
  private ended = false;

  /** Waits of this writer are over for good (closed, finished, failed): none can start. */
  get isEnded(): boolean {
    return this.ended;
  }

  /**
   * Resolves once the position passed to moved() is beyond mark, at end(), or when signal
   * aborts. The caller checks isEnded first: an ended writer's wait resolves at once.
   */
  wait(mark: number, signal: AbortSignal): Promise<void> {
    if (this.ended || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const waiter: GrowthWaiter = {
        mark,
        wake: () => {
          this.waiting.delete(waiter);
          signal.removeEventListener('abort', waiter.wake);
          resolve();
        },
      };
      this.waiting.add(waiter);
      signal.addEventListener('abort', waiter.wake, { once: true });
    });
  }

  /** The durable end is now pos. */
  moved(pos: number): void {
    if (this.waiting.size === 0) return;
    for (const w of [...this.waiting]) if (pos > w.mark) w.wake();
  }

  /** No more growth: wake everyone, and every later wait returns at once. */
  end(): void {
    this.ended = true;
    for (const w of [...this.waiting]) w.wake();
  }
}
