// Rate-limited log lines for links refused from peers. A hostile or confused member resends the
// same refused links with every listing (each pull) or pushes hundreds of them: each distinct
// refusal (peer, path, reason) is logged once per interval, and at most `maxLinesPerInterval`
// lines per interval in total; what was held back is counted in the next line that goes out.
import type { LogFn } from '../../common/util/log.js';

export interface RefusalLogOptions {
  log: LogFn;
  /** monotonic milliseconds (the injected clock) */
  nowMs: () => number;
  intervalMs?: number;
  maxLinesPerInterval?: number;
}

/** Distinct refusals remembered; beyond this the memory is cleared (a flood of new paths). */
const MAX_REMEMBERED = 4096;

export class RefusalLog {
  private readonly seen = new Map<string, number>();
  private windowStartMs = Number.NEGATIVE_INFINITY;
  private linesInWindow = 0;
  private heldBack = 0;
  private readonly intervalMs: number;
  private readonly maxLines: number;

  constructor(private readonly o: RefusalLogOptions) {
    this.intervalMs = o.intervalMs ?? 60_000;
    this.maxLines = o.maxLinesPerInterval ?? 20;
  }

  /** One refused link; logs a line unless the same refusal or too many lines went out lately. */
  note(peer: string, how: 'pushed' | 'listed', path: string, reason: string): void {
    const now = this.o.nowMs();
    if (now - this.windowStartMs >= this.intervalMs) {
      this.windowStartMs = now;
      this.linesInWindow = 0;
    }
    const key = `${peer}\0${path}\0${reason}`;
    const last = this.seen.get(key);
    if (last !== undefined && now - last < this.intervalMs) return;
    if (this.linesInWindow >= this.maxLines) {
      this.heldBack++;
      return;
    }
    if (this.seen.size >= MAX_REMEMBERED) this.seen.clear();
    this.seen.set(key, now);
    this.linesInWindow++;
    const more = this.heldBack > 0 ? ` (${this.heldBack} more refusals not logged)` : '';
    this.heldBack = 0;
    this.o.log('warn', `refused link ${how} by ${peer}: ${path}: ${reason}${more}`);
  }
}
