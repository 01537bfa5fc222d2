// The bandwidth limit of a log-read (rateBytesPerS): a token bucket. Tokens accrue at the rate
// up to a burst; sending takes tokens and may run into debt, and the debt is the time to wait
// before sending. Debt rather than "wait until enough tokens" lets a frame larger than the
// burst go out while the long-run rate still holds.
//
// The time source is injected so the arithmetic is tested deterministically (nowMs), and
// `throttle`, the only part that actually waits, sleeps on an injected Clock.
import { assert } from '../../common/util/assert.js';
import { systemClock, type Clock } from '../../common/util/clock.js';

export const DEFAULT_BURST_BYTES = 256 * 1024;
/** Smallest log-data frame while a rate limit is on (see chunkBytesForRate). */
const MIN_LIMITED_CHUNK_BYTES = 4 * 1024;

export class TokenBucket {
  private tokens: number;
  private lastMs: number;

  /** rateBytesPerS 0 means unlimited. */
  constructor(
    readonly rateBytesPerS: number,
    readonly burstBytes: number = DEFAULT_BURST_BYTES,
    private readonly nowMs: () => number = () => performance.now(),
  ) {
    assert(Number.isSafeInteger(rateBytesPerS) && rateBytesPerS >= 0, `bad rate ${rateBytesPerS}`);
    assert(Number.isSafeInteger(burstBytes) && burstBytes > 0, `bad burst ${burstBytes}`);
    this.tokens = burstBytes;
    this.lastMs = nowMs();
  }

  get unlimited(): boolean {
    return this.rateBytesPerS === 0;
  }

  /** Take `bytes` now and return how many milliseconds to wait before sending them. */
  reserve(bytes: number): number {
    assert(Number.isSafeInteger(bytes) && bytes >= 0, `bad byte count ${bytes}`);
    if (this.unlimited) return 0;
    const now = this.nowMs();
    const elapsedMs = Math.max(0, now - this.lastMs); // a clock going backwards adds nothing
    this.lastMs = now;
    this.tokens = Math.min(this.burstBytes, this.tokens + (elapsedMs * this.rateBytesPerS) / 1000);
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.rateBytesPerS;
  }
}

/** Wait as the bucket says before sending `bytes`; rejects with the signal's reason when it aborts. */
export async function throttle(bucket: TokenBucket, bytes: number, signal?: AbortSignal, clock: Clock = systemClock): Promise<void> {
  const delayMs = bucket.reserve(bytes);
  if (delayMs > 0) await clock.sleep(Math.ceil(delayMs), signal);
}

/**
 * Size of the log-data frames under a rate limit: about a tenth of a second's worth, so the
 * stream flows smoothly instead of in large bursts with long pauses.
 */
export function chunkBytesForRate(rateBytesPerS: number, maxChunkBytes: number): number {
  if (rateBytesPerS === 0) return maxChunkBytes;
  return Math.min(maxChunkBytes, Math.max(MIN_LIMITED_CHUNK_BYTES, Math.floor(rateBytesPerS / 10)));
}
