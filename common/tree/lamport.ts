// The "physical" Lamport clock of MARS (the MARS user manual: the Lamport clock): a stamp is
// max(real time, highest stamp seen), so a link written after reading another always carries
// a newer stamp, even across hosts with skewed clocks. Stamps are integer microseconds since
// the epoch: they fit a double exactly and survive the round trip through a symlink's mtime
// (lutimes takes seconds as a double; we round what lstat reports to whole microseconds).

/** Stamps more than this far ahead of real time are treated as corrupt, not adopted. */
export const MAX_LAMPORT_FUTURE_US = 30 * 24 * 3600 * 1_000_000;

export class LamportClock {
  private highestUs = 0;

  constructor(private readonly realTimeUs: () => number = () => Date.now() * 1000) {}

  /** A fresh stamp, strictly greater than every stamp returned or observed before. */
  tick(): number {
    const real = this.realTimeUs();
    this.highestUs = real > this.highestUs ? real : this.highestUs + 1;
    return this.highestUs;
  }

  /** Real time alone: the bound for a peer's stamps (the Lamport value is what they could move). */
  realNowUs(): number {
    return this.realTimeUs();
  }

  /** The current clock value without advancing it. */
  now(): number {
    return Math.max(this.realTimeUs(), this.highestUs);
  }

  /** Advance past a stamp seen on disk or from a peer (absurd future stamps are ignored). */
  observe(stampUs: number): void {
    if (!Number.isSafeInteger(stampUs) || stampUs <= 0) return;
    if (stampUs > this.realTimeUs() + MAX_LAMPORT_FUTURE_US) return;
    if (stampUs > this.highestUs) this.highestUs = stampUs;
  }
}

/**
 * The seconds to give lutimes for a stamp. Node hands lutimes a double, which libuv truncates
 * to the microsecond; stampUs / 1e6 is often a hair below the exact value (a double near 1.8e9
 * s resolves about 0.24 µs), so half of all stamps read back 1 µs lower, and a propagated link
 * looked older than the peer's on every pull and was written again, forever. Half a microsecond
 * more truncates to exactly stampUs.
 */
export function stampToSeconds(stampUs: number): number {
  return (stampUs + 0.5) / 1_000_000;
}

/** `sec.nsec` as MARS prints times in status links. */
export function formatStamp(stampUs: number): string {
  const sec = Math.floor(stampUs / 1_000_000);
  const ns = (stampUs % 1_000_000) * 1000;
  return `${sec}.${String(ns).padStart(9, '0')}`;
}
