// The sink of a log-read on the serving side (service.ts runs the request, a handler in
// daemon/serve/peer-service.ts reads the logfile): bytes in order from the requested position,
// rate limited, split into log-data frames, and each chunk counted in the reply memory budget
// (budget.ts) from before it is read until the socket took it (docs/protocol.md §6).
import { assert } from '../../common/util/assert.js';
import type { Clock } from '../../common/util/clock.js';
import { MAX_LOG_DATA_BYTES, type LogReadRequest, type Message } from './messages.js';
import { chunkBytesForRate, DEFAULT_BURST_BYTES, throttle, TokenBucket } from './rate-limit.js';
import { PeerRequestError } from './errors.js';
import type { ConnectionBudget } from './budget.js';

/**
 * Where a log-read handler writes the logfile bytes: contiguous, from the requested fromPos.
 * Memory: call reserve() before reading a chunk (of at most MAX_LOG_DATA_BYTES) into memory;
 * it waits while the reply budget is full. send() gives the reservation back once the chunk
 * is handed to the socket (and takes one itself when none is held); release() gives it back
 * without sending (nothing was read). The server releases whatever is held when the request ends.
 */
export interface LogSink {
  reserve(): Promise<void>;
  release(): void;
  send(pos: number, data: Buffer): Promise<void>;
}

export interface LogSinkDeps {
  clock: Clock;
  /** the connection's reply budget; none (test pairs): nothing is counted */
  budget: ConnectionBudget | undefined;
  /** hand a frame to the connection; resolves once the socket took it */
  send(message: Message, payload: Buffer): Promise<void>;
}

/** Take `bytes` of the reply budget, waiting while it is full; throws when the request is aborted. */
export async function takeBudget(budget: ConnectionBudget, bytes: number, signal: AbortSignal): Promise<void> {
  while (!budget.tryTake(bytes)) {
    if (signal.aborted) throw abortReason(signal);
    await new Promise<void>((resolve) => {
      const done = () => { unsubscribe(); signal.removeEventListener('abort', done); resolve(); };
      const unsubscribe = budget.total.subscribe(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }
}

/** The sink a log-read handler writes to: contiguous, rate limited, split into frames, its chunks counted in the reply budget. */
export function createLogSink(req: LogReadRequest, signal: AbortSignal, sent: (pos: number) => void, deps: LogSinkDeps): LogSink {
  const { clock, budget } = deps;
  const bucket = new TokenBucket(req.rateBytesPerS, DEFAULT_BURST_BYTES, () => clock.monotonicMs());
  const chunkBytes = chunkBytesForRate(req.rateBytesPerS, MAX_LOG_DATA_BYTES);
  let nextPos = req.fromPos;
  let busy = false;
  /** budget bytes this stream holds for the chunk being read or sent (0 or MAX_LOG_DATA_BYTES) */
  let heldBytes = 0;
  const reserve = async (): Promise<void> => {
    if (heldBytes > 0 || budget === undefined) return;
    await takeBudget(budget, MAX_LOG_DATA_BYTES, signal);
    heldBytes = MAX_LOG_DATA_BYTES;
  };
  const release = (): void => {
    if (heldBytes === 0) return;
    budget!.give(heldBytes);
    heldBytes = 0;
  };
  return {
    reserve,
    release,
    send: async (pos: number, data: Buffer) => {
      assert(!busy, 'log-read sink.send called again before the previous send finished');
      assert(pos === nextPos, `log-read sink.send at ${pos}, the stream is at ${nextPos}`);
      assert(data.length <= MAX_LOG_DATA_BYTES || budget === undefined, `log-read sink.send of ${data.length} bytes, more than a reservation holds`);
      busy = true;
      try {
        await reserve();
        for (let offset = 0; offset < data.length; offset += chunkBytes) {
          if (signal.aborted) throw abortReason(signal);
          const piece = data.subarray(offset, offset + chunkBytes);
          await throttle(bucket, piece.length, signal, clock);
          await deps.send({ t: 'log-data', id: req.id, pos: nextPos }, piece);
          nextPos += piece.length;
          sent(nextPos);
        }
      } finally {
        busy = false;
        release();
      }
    },
  };
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new PeerRequestError('ECANCELED', 'cancelled');
}
