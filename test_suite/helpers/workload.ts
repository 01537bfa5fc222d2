// A write workload for replication tests: random whole-block writes of oracle-tagged data through
// an NBD export (kernel-shim/nbd-client.ts), pipelined up to a queue depth, with periodic
// FLUSHes, every write recorded in a WriteOrderOracle so any replica's disk can be checked
// against the history afterwards (or while the workload runs on a paused replica).
//
// Always bounded: it stops at a write count or a duration, whichever comes first, or when
// aborted, or when the server goes away or answers a write with an error. Requests in flight
// then get a bounded time to settle; whatever does not settle is failed by destroying the
// connection. So a run takes at most connectTimeoutMs + durationMs + 2 x settleTimeoutMs. Every write ends acknowledged (oracle.markAcked) or "maybe written"
// (oracle.markFailed): a failed write may or may not have reached the primary's history, and
// the oracle accepts replicas with or without it.
//
// Deterministic for a seed: the same options give the same sequence of block ranges (and so
// the same data), whatever the timing of replies (a range that overlaps a write in flight
// waits for it instead of being re-drawn).
import { NbdClient, NbdConnectionClosed } from '../../kernel-shim/nbd-client.js';
import type { BlockRange, WriteOrderOracle } from './oracle.js';

/** A small seeded PRNG (mulberry32): reproducible workloads without a dependency. */
export class Prng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  nextU32(): number {
    this.state = (this.state + 0x6d2b_79f5) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return (z ^ (z >>> 14)) >>> 0;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return Math.floor((this.nextU32() / 0x1_0000_0000) * n);
  }

  /** An integer in [min, max]. */
  between(min: number, max: number): number {
    return min + this.below(max - min + 1);
  }
}

export interface WorkloadOptions {
  socketPath: string;
  exportName: string;
  oracle: WriteOrderOracle;
  /** Stop after submitting this many writes. */
  writes: number;
  /** Stop submitting after this long. */
  durationMs: number;
  /** Blocks per write, both ends included. Default 1..8. */
  blocksPerWrite?: { min: number; max: number };
  /** Blocks the workload may write. Default: the whole device. */
  region?: BlockRange;
  /** Writes in flight at once (no two overlap). Default 8. */
  queueDepth?: number;
  /** FLUSH after every this many writes (in-flight writes settle first); 0: never. Default 0. */
  flushEvery?: number;
  /** Set FUA on every this-many-th write; 0: never. Default 0. */
  fuaEvery?: number;
  /** FLUSH once when the workload stops normally (count, time, aborted). Default true. */
  finalFlush?: boolean;
  signal?: AbortSignal;
  /** PRNG seed. Default 1. */
  seed?: number;
  /** Time in-flight requests (and the final FLUSH) get to settle after stopping. Default 5 s. */
  settleTimeoutMs?: number;
  /** NBD handshake deadline. Default 10 s. */
  connectTimeoutMs?: number;
}

export type StopReason = 'count' | 'time' | 'aborted' | 'connection-lost' | 'write-error' | 'connect-failed';

export interface WorkloadResult {
  stopReason: StopReason;
  submitted: number;
  acknowledged: number;
  /** Writes that errored or were cut off: maybe written. */
  failed: number;
  /** FLUSHes that completed (the final one included). */
  flushes: number;
  /** FLUSHes that failed, the final one included: a failed final FLUSH also makes stopReason 'write-error'. */
  flushesFailed: number;
  /** The seqs this run used (0 and 0 when it wrote nothing). */
  firstSeq: number;
  lastSeq: number;
  /** oracle.durableSeq after the run. */
  durableSeq: number;
  bytesAcknowledged: number;
  elapsedMs: number;
  /** The first error that ended or marred the run. */
  error?: string;
}

const MAX_QUEUE_DEPTH = 256;

/** Wakes the driver loop when anything it waits for happens (a reply, the deadline, an abort). */
class Waker {
  private resolve: (() => void) | null = null;
  private pending = false;

  wake(): void {
    this.pending = true;
    const r = this.resolve;
    this.resolve = null;
    r?.();
  }

  wait(): Promise<void> {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((r) => {
      this.resolve = () => {
        this.pending = false;
        r();
      };
    });
  }
}

function checkOptions(o: WorkloadOptions): void {
  const positiveInt = (v: number, what: string) => {
    if (!(Number.isSafeInteger(v) && v >= 1)) throw new Error(`workload: ${what} must be a positive integer, not ${v}`);
  };
  positiveInt(o.writes, 'writes');
  if (!(Number.isFinite(o.durationMs) && o.durationMs > 0)) throw new Error(`workload: durationMs must be positive, not ${o.durationMs}`);
  const depth = o.queueDepth ?? 8;
  positiveInt(depth, 'queueDepth');
  if (depth > MAX_QUEUE_DEPTH) throw new Error(`workload: queueDepth ${depth} over ${MAX_QUEUE_DEPTH}`);
  const { min, max } = o.blocksPerWrite ?? { min: 1, max: 8 };
  positiveInt(min, 'blocksPerWrite.min');
  positiveInt(max, 'blocksPerWrite.max');
  if (min > max) throw new Error('workload: blocksPerWrite.min > max');
  const region = o.region ?? { start: 0, count: o.oracle.blockCount };
  if (!(Number.isInteger(region.start) && region.start >= 0 && Number.isInteger(region.count) && region.count >= 1 && region.start + region.count <= o.oracle.blockCount)) {
    throw new Error(`workload: region ${region.start}+${region.count} outside the device (${o.oracle.blockCount} blocks)`);
  }
  if (min > region.count) throw new Error('workload: blocksPerWrite.min larger than the region');
}

export async function runWorkload(opts: WorkloadOptions): Promise<WorkloadResult> {
  checkOptions(opts);
  const { oracle } = opts;
  const startMs = Date.now();
  const queueDepth = opts.queueDepth ?? 8;
  const { min, max } = opts.blocksPerWrite ?? { min: 1, max: 8 };
  const region = opts.region ?? { start: 0, count: oracle.blockCount };
  const maxBlocks = Math.min(max, region.count);
  const flushEvery = opts.flushEvery ?? 0;
  const fuaEvery = opts.fuaEvery ?? 0;
  const settleTimeoutMs = opts.settleTimeoutMs ?? 5_000;
  const rng = new Prng(opts.seed ?? 1);

  const r: WorkloadResult = {
    stopReason: 'count', submitted: 0, acknowledged: 0, failed: 0, flushes: 0, flushesFailed: 0,
    firstSeq: 0, lastSeq: 0, durableSeq: oracle.durableSeq, bytesAcknowledged: 0, elapsedMs: 0,
  };
  let stop: StopReason | null = null;
  const stopWith = (why: StopReason, err?: unknown) => {
    stop ??= why;
    if (err !== undefined && r.error === undefined) r.error = err instanceof Error ? err.message : String(err);
  };
  const finish = (): WorkloadResult => {
    r.stopReason = stop ?? 'count';
    r.durableSeq = oracle.durableSeq;
    r.elapsedMs = Date.now() - startMs;
    return r;
  };

  if (opts.signal?.aborted) {
    stopWith('aborted');
    return finish();
  }
  let client: NbdClient;
  try {
    client = await NbdClient.connect(opts.socketPath, opts.exportName, { timeoutMs: opts.connectTimeoutMs ?? 10_000 });
  } catch (err) {
    stopWith('connect-failed', err);
    return finish();
  }

  const waker = new Waker();
  const onAbort = () => {
    stopWith('aborted');
    waker.wake();
  };
  opts.signal?.addEventListener('abort', onAbort);
  const deadline = setTimeout(() => {
    stopWith('time');
    waker.wake();
  }, opts.durationMs);
  void client.closed.then((why) => {
    if (stop === null) stopWith('connection-lost', why);
    waker.wake();
  });
  /** Requests in flight (writes and a FLUSH), each settling exactly once. */
  const inFlight = new Set<Promise<void>>();
  const track = (p: Promise<void>) => {
    inFlight.add(p);
    void p.finally(() => {
      inFlight.delete(p);
      waker.wake();
    });
  };

  // The ranges come from the seed alone: a range that overlaps a write in flight waits for it
  // rather than being re-drawn, so reply timing never changes the sequence.
  const drawRange = (): BlockRange => {
    const count = rng.between(Math.min(min, maxBlocks), maxBlocks);
    return { start: region.start + rng.below(region.count - count + 1), count };
  };
  let nextRange: BlockRange | null = null;

  const submitWrite = (range: BlockRange) => {
    const w = oracle.nextWrite(range, { pending: true });
    r.submitted++;
    if (r.firstSeq === 0) r.firstSeq = w.seq;
    r.lastSeq = w.seq;
    const fua = fuaEvery > 0 && r.submitted % fuaEvery === 0;
    track(client.write(w.pos, w.data, { fua }).then(
      () => {
        oracle.markAcked(w.seq);
        r.acknowledged++;
        r.bytesAcknowledged += w.data.length;
      },
      (err: unknown) => {
        oracle.markFailed(w.seq);
        r.failed++;
        stopWith(err instanceof NbdConnectionClosed ? 'connection-lost' : 'write-error', err);
      },
    ));
  };

  /** FLUSH once nothing is in flight: every write acknowledged so far becomes durable. */
  const flush = async (): Promise<void> => {
    const coveredSeq = r.lastSeq;
    const p = client.flush().then(
      () => {
        r.flushes++;
        if (coveredSeq > 0) oracle.markDurable(coveredSeq);
      },
      (err: unknown) => {
        r.flushesFailed++;
        stopWith(err instanceof NbdConnectionClosed ? 'connection-lost' : 'write-error', err);
      },
    );
    track(p);
    while (inFlight.has(p) && stop === null) await waker.wait();
  };

  const drain = async (untilMs: number): Promise<void> => {
    while (inFlight.size > 0 && Date.now() < untilMs) {
      const timer = setTimeout(() => waker.wake(), Math.max(1, untilMs - Date.now()));
      await waker.wait();
      clearTimeout(timer);
    }
  };

  try {
    let sinceFlush = 0;
    while (stop === null) {
      if (r.submitted >= opts.writes) {
        stopWith('count');
        break;
      }
      if (flushEvery > 0 && sinceFlush >= flushEvery) {
        while (inFlight.size > 0 && stop === null) await waker.wait();
        if (stop !== null) break;
        await flush();
        sinceFlush = 0;
        continue;
      }
      if (inFlight.size >= queueDepth) {
        await waker.wait();
        continue;
      }
      nextRange ??= drawRange();
      if (oracle.overlapsPending(nextRange.start, nextRange.count)) {
        await waker.wait();
        continue;
      }
      submitWrite(nextRange);
      nextRange = null;
      sinceFlush++;
    }

    const settleUntil = Date.now() + settleTimeoutMs;
    await drain(settleUntil);
    const normal = stop === 'count' || stop === 'time' || stop === 'aborted';
    // A FLUSH covers only completed writes: skip it if some are still unanswered.
    if (normal && (opts.finalFlush ?? true) && client.isOpen && r.submitted > 0 && inFlight.size === 0) {
      const coveredSeq = r.lastSeq;
      const p = client.flush().then(
        () => {
          r.flushes++;
          oracle.markDurable(coveredSeq);
        },
        (err: unknown) => {
          // The writes it covers were acknowledged but are not known durable: the run failed.
          r.flushesFailed++;
          stop = err instanceof NbdConnectionClosed ? 'connection-lost' : 'write-error';
          if (r.error === undefined) r.error = `final FLUSH: ${err instanceof Error ? err.message : String(err)}`;
        },
      );
      track(p);
      await drain(settleUntil);
    }
    if (inFlight.size > 0) {
      // Still unanswered after the grace time (a partitioned or hung server): cut them off,
      // which fails them (maybe written) rather than leaving them pending forever.
      if (r.error === undefined) r.error = `${inFlight.size} request(s) unanswered after ${settleTimeoutMs} ms`;
      client.destroy();
      await Promise.allSettled([...inFlight]);
    }
    if (client.isOpen) await client.disconnect(settleTimeoutMs).catch(() => client.destroy());
  } finally {
    clearTimeout(deadline);
    opts.signal?.removeEventListener('abort', onAbort);
    client.destroy(); // no-op when already closed; never leaves a socket behind
  }
  return finish();
}
