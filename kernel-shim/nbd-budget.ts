// The memory budget of one NBD connection in transmission: requests in flight and the bytes they
// hold (WRITE payloads arriving or at the backend, READ results) plus reply bytes the client has
// not read yet (the socket's writableLength). The transmission phase stops reading at either
// limit (over()) and reads again below half of both (belowResumeMark()): the gap keeps a client
// at the limit from toggling pause/resume per request. Peaks go to the server's counters.
//
// The server's total budget (nbd-limits.ts) counts every connection's budget: over() is also
// true while the sum over all connections is above it.
//
// Plain counters, no allocation: this runs for every request.
import type net from 'node:net';
import type { ServerContext } from './nbd-export.js';
import type { LimitedConnection } from './nbd-limits.js';

/** What the budget may do to its connection when the server's limits say so. */
export interface BudgetOwner {
  readonly label: string;
  resume(): void;
  destroy(reason: string): void;
}

export class ConnectionBudget implements LimitedConnection {
  inFlight = 0;
  inFlightBytes = 0;

  constructor(
    private readonly server: ServerContext,
    private readonly socket: net.Socket,
    private readonly owner: BudgetOwner,
  ) {
    server.limits.add(this);
  }

  get label(): string {
    return this.owner.label;
  }

  /** The connection closed: its memory no longer counts. */
  release(): void {
    this.server.limits.remove(this);
  }

  bufferedBytes(): number {
    return this.inFlightBytes + this.socket.writableLength;
  }

  unsentReplyBytes(): number {
    return this.socket.writableLength;
  }

  flushedBytes(): number {
    return this.socket.bytesWritten - this.socket.writableLength;
  }

  resumeIfBelow(): void {
    this.owner.resume();
  }

  destroy(reason: string): void {
    this.owner.destroy(reason);
  }

  /** A request was handed to the backend, holding heldBytes until it settles. */
  start(heldBytes: number): void {
    this.inFlight++;
    this.inFlightBytes += heldBytes;
    this.notePeaks();
  }

  settled(heldBytes: number): void {
    this.inFlight--;
    this.inFlightBytes -= heldBytes;
  }

  /** At a limit: read no further. */
  over(): boolean {
    return (
      this.inFlight >= this.server.maxInFlightRequests ||
      this.inFlightBytes + this.socket.writableLength >= this.server.maxBufferedBytes ||
      this.server.limits.overTotal()
    );
  }

  belowResumeMark(): boolean {
    return (
      this.inFlight <= this.server.maxInFlightRequests / 2 &&
      this.inFlightBytes + this.socket.writableLength <= this.server.maxBufferedBytes / 2 &&
      this.server.limits.belowTotalResumeMark()
    );
  }

  notePeaks(): void {
    const c = this.server.counters;
    if (this.inFlight > c.peakInFlightRequests) c.peakInFlightRequests = this.inFlight;
    const buffered = this.inFlightBytes + this.socket.writableLength;
    if (buffered > c.peakBufferedBytes) c.peakBufferedBytes = buffered;
  }
}
