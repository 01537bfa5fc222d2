// The transmission phase of one NBD connection: request parsing, pipelining, simple replies and
// the limits that keep a hostile client from costing more than its own connection.
//
// Requests are parsed straight from the socket chunks (a WRITE payload that arrived whole goes
// to the backend without a copy) and run concurrently; each reply goes out when its backend call
// settles, so replies may overtake each other (the handle says which is which). Replies of one
// tick leave in one writev (the socket is corked until nextTick).
//
// Invariants:
// - every request gets exactly one reply, unless the connection closes first;
// - a write is replied to only after backend.write() resolved (backend.ts relies on it);
// - memory is bounded: at maxInFlightRequests or maxBufferedBytes (payloads held + reply bytes
//   unsent) reading pauses and unparsed input waits in `stash`, until below half of both;
// - a backend error becomes an error reply (BackendError's errno, else EIO, logged); an
//   InvariantError is no answer to give: the connection closes without a reply and the error
//   is escalated (host.internalError -> failStopOnInvariant), so marsd stops, naming it.
// Ending: DISC or the client's half-close drain (input is ignored), removeExport shuts down
// (later requests get ESHUTDOWN); host.finish() follows once nothing is in flight.
import type { NbdRequestType } from '../common/util/metrics-recorder.js';
import type net from 'node:net';
import { InvariantError, rethrowInvariant } from '../common/util/assert.js';
import { BackendError } from './backend.js';
import * as P from './nbd-protocol.js';
import { MAX_PAYLOAD_BYTES, type ExportEntry, type ServerContext } from './nbd-export.js';
import { checkRequest } from './nbd-request-checks.js';
import { ConnectionBudget } from './nbd-budget.js';

/** What the transmission phase needs of its connection (nbd-connection.ts). */
export interface TransmissionHost {
  readonly socket: net.Socket;
  readonly label: string;
  /** the connection is closed (or ending): nothing is read or sent any more */
  readonly isClosed: boolean;
  /** the client broke the protocol: log one line and close */
  protocolError(msg: string): void;
  /** a bug or a broken invariant: escalate an InvariantError, log, close */
  internalError(err: unknown, where: string): void;
  /** draining is complete: end the socket */
  finish(): void;
  /** the server's limits close the connection (one log line) */
  destroy(reason: string): void;
}

interface PendingWrite {
  handleHi: number;
  handleLo: number;
  offsetBytes: number;
  fua: boolean;
}

const MAX_LOGGED_BACKEND_ERRORS = 10;

export class Transmission {
  private readonly header = Buffer.allocUnsafe(P.REQUEST_HEADER_BYTES);
  private headerFillBytes = 0;
  /** a WRITE payload split across chunks, and what to do with it once complete */
  private payload: Buffer | null = null;
  private payloadFillBytes = 0;
  private pendingWrite: PendingWrite | null = null;
  /** payload of a refused WRITE still to be read past */
  private skipBytes = 0;
  /** input read but not parsed because the connection is over its limits */
  private stash: Buffer | null = null;
  private pausedForLimits = false;
  private readonly budget: ConnectionBudget;
  private corked = false;
  private draining = false;
  private shuttingDown = false;
  private backendErrorsLogged = 0;
  private loggedBadCommand = false;

  constructor(
    private readonly server: ServerContext,
    private readonly host: TransmissionHost,
    private readonly entry: ExportEntry,
  ) {
    this.budget = new ConnectionBudget(server, host.socket, {
      label: host.label,
      resume: () => this.maybeResume(),
      destroy: (reason) => host.destroy(reason),
    });
  }

  /** Reading requests (neither draining nor closed). */
  private get open(): boolean {
    return !this.draining && !this.host.isClosed;
  }

  onData(chunk: Buffer): void {
    if (this.draining) return; // the client must not send more; ignore it
    if (this.stash) {
      // pause() took effect after this chunk was read; keep it behind the stash
      this.stash = Buffer.concat([this.stash, chunk]);
      return;
    }
    this.processRequests(chunk, 0);
  }

  /** The client half-closed or sent DISC: answer what is in flight, then close. */
  drain(): void {
    if (this.draining) return;
    this.draining = true;
    this.maybeFinish();
  }

  /** The export is being removed: answer in-flight requests, then close. */
  beginShutdown(): void {
    this.shuttingDown = true;
    this.maybeFinish();
  }

  /** The connection closed: drop buffered input. */
  release(): void {
    this.payload = null;
    this.stash = null;
    this.budget.release();
  }

  // ---- parsing -------------------------------------------------------------------------------

  /** Parses requests from chunk starting at pos; stops (stashing the rest) above the limits. */
  private processRequests(chunk: Buffer, pos: number): void {
    while (pos < chunk.length && this.open) {
      if (this.skipBytes > 0) {
        const n = Math.min(this.skipBytes, chunk.length - pos);
        this.skipBytes -= n;
        pos += n;
        continue;
      }
      if (this.payload) {
        pos = this.fillPayload(chunk, pos);
        continue;
      }
      if (this.budget.over()) {
        this.stash = chunk.subarray(pos);
        this.pauseForLimits();
        return;
      }
      let hb: Buffer;
      let ho: number;
      if (this.headerFillBytes > 0 || chunk.length - pos < P.REQUEST_HEADER_BYTES) {
        const n = Math.min(P.REQUEST_HEADER_BYTES - this.headerFillBytes, chunk.length - pos);
        chunk.copy(this.header, this.headerFillBytes, pos, pos + n);
        this.headerFillBytes += n;
        pos += n;
        if (this.headerFillBytes < P.REQUEST_HEADER_BYTES) return;
        this.headerFillBytes = 0;
        hb = this.header;
        ho = 0;
      } else {
        hb = chunk;
        ho = pos;
        pos += P.REQUEST_HEADER_BYTES;
      }
      pos = this.handleRequest(P.decodeRequestHeader(hb, ho), chunk, pos);
    }
  }

  /** Copies payload bytes of a split WRITE; starts the write when complete. */
  private fillPayload(chunk: Buffer, pos: number): number {
    const payload = this.payload!;
    const n = Math.min(payload.length - this.payloadFillBytes, chunk.length - pos);
    chunk.copy(payload, this.payloadFillBytes, pos, pos + n);
    this.payloadFillBytes += n;
    if (this.payloadFillBytes === payload.length) {
      const w = this.pendingWrite!;
      this.payload = null;
      this.pendingWrite = null;
      this.budget.inFlightBytes -= payload.length; // startWrite counts it again
      this.startWrite(w, payload, true);
    }
    return pos + n;
  }

  /** Returns the position in chunk after whatever this request consumed from it. */
  private handleRequest(req: P.RequestHeader, chunk: Buffer, pos: number): number {
    if (req.magic !== P.NBD_REQUEST_MAGIC) {
      this.host.protocolError(`bad request magic 0x${req.magic.toString(16)}`);
      return chunk.length;
    }
    this.server.counters.requests++;
    const backend = this.entry.backend;
    const fua = (req.flags & P.NBD_CMD_FLAG_FUA) !== 0;
    switch (req.type) {
      case P.NBD_CMD_READ:
        return this.validateAndDispatch(req, pos, req.length, () => backend.read(req.offset, req.length), req.length, 'read');
      case P.NBD_CMD_WRITE:
        return this.handleWrite(req, fua, chunk, pos);
      case P.NBD_CMD_DISC:
        this.drain();
        return chunk.length;
      case P.NBD_CMD_FLUSH:
        return this.validateAndDispatch(req, pos, 0, () => backend.flush(), 0, 'flush');
      case P.NBD_CMD_TRIM:
        return this.validateAndDispatch(req, pos, 0, () => backend.trim(req.offset, req.length, fua), 0, 'trim');
      case P.NBD_CMD_WRITE_ZEROES:
        return this.validateAndDispatch(req, pos, 0, () => backend.writeZeroes(req.offset, req.length, fua), 0, 'write_zeroes');
      default:
        // CACHE and BLOCK_STATUS are not advertised; proto.md: unknown commands get EINVAL.
        if (!this.loggedBadCommand) {
          this.loggedBadCommand = true;
          this.server.log('warn', `nbd ${this.host.label}: unsupported ${P.commandName(req.type)}, replying EINVAL (logged once per connection)`);
        }
        return this.replyNow(P.NBD_EINVAL, req, pos);
    }
  }

  private validateAndDispatch(req: P.RequestHeader, pos: number, readLengthBytes: number, op: () => Promise<Buffer | void>, heldBytes: number, type: NbdRequestType): number {
    const err = this.validate(req);
    if (err) return this.replyNow(err, req, pos);
    this.dispatch(req.handleHi, req.handleLo, readLengthBytes, op, heldBytes, type);
    return pos;
  }

  private handleWrite(req: P.RequestHeader, fua: boolean, chunk: Buffer, pos: number): number {
    if (req.length > MAX_PAYLOAD_BYTES) {
      // We cannot sanely skip an arbitrary payload of up to 4 GiB: treat as denial of service.
      this.host.protocolError(`WRITE of ${req.length} bytes (limit ${MAX_PAYLOAD_BYTES})`);
      return chunk.length;
    }
    const err = this.validate(req);
    if (err) {
      this.reply(err, req.handleHi, req.handleLo);
      this.skipBytes = req.length; // the payload still follows on the stream
      return pos;
    }
    const w: PendingWrite = { handleHi: req.handleHi, handleLo: req.handleLo, offsetBytes: req.offset, fua };
    if (chunk.length - pos >= req.length) {
      this.startWrite(w, chunk.subarray(pos, pos + req.length)); // zero copy
      return pos + req.length;
    }
    this.payload = this.server.payloads.take(req.length);
    this.payloadFillBytes = chunk.length - pos;
    chunk.copy(this.payload, 0, pos);
    this.pendingWrite = w;
    this.budget.inFlightBytes += req.length; // held while it arrives
    this.budget.notePeaks();
    return chunk.length;
  }

  private validate(req: P.RequestHeader): number {
    return checkRequest(req, this.entry.backend.sizeBytes, this.shuttingDown, this.writableCheck);
  }

  /** pooled: data came from server.payloads, to be given back once the write settled */
  private startWrite(w: PendingWrite, data: Buffer, pooled = false): void {
    // Re-checked here: the backend may have lost writability while the payload arrived.
    const err = this.shuttingDown ? P.NBD_ESHUTDOWN : this.backendWritable() ? 0 : P.NBD_EPERM;
    if (err) {
      if (pooled) this.server.payloads.give(data);
      return this.reply(err, w.handleHi, w.handleLo);
    }
    const backend = this.entry.backend;
    this.dispatch(w.handleHi, w.handleLo, 0, () => backend.write(w.offsetBytes, data, w.fua), data.length, 'write', pooled ? data : undefined);
  }

  /** bound once: a closure per request would be garbage on the hot path */
  private readonly writableCheck = (): boolean => this.backendWritable();

  /** isWritable() that fails closed: a throwing check counts as not writable (EPERM). */
  private backendWritable(): boolean {
    try {
      return this.entry.backend.isWritable() === true;
    } catch (err) {
      // Not an answer to the client: up to the guard that called the parser (internalError).
      rethrowInvariant(err);
      this.logBackendError(`backend isWritable() threw: ${(err as Error).message}; replying EPERM`);
      return false;
    }
  }

  // ---- backend calls and replies -------------------------------------------------------------

  /**
   * Runs one backend operation and replies when it settles. readLengthBytes > 0 marks a READ
   * whose result must be exactly that long; heldBytes are counted against the buffer limit.
   */
  private dispatch(handleHi: number, handleLo: number, readLengthBytes: number, op: () => Promise<Buffer | void>, heldBytes: number, type: NbdRequestType, pooled?: Buffer): void {
    this.budget.start(heldBytes);
    const recorder = this.server.recorder;
    const startMs = recorder ? this.server.clock.monotonicMs() : 0;
    let promise: Promise<Buffer | void>;
    try {
      promise = op();
    } catch (err) {
      promise = Promise.reject(err); // a synchronous throw is answered like a rejection
    }
    promise.then(
      (result) => {
        if (pooled) this.server.payloads.give(pooled);
        this.budget.settled(heldBytes);
        if (readLengthBytes > 0 && (!Buffer.isBuffer(result) || result.length !== readLengthBytes)) {
          this.logBackendError(`backend read returned ${Buffer.isBuffer(result) ? result.length : typeof result} bytes, expected ${readLengthBytes}; replying EIO`);
          this.reply(P.NBD_EIO, handleHi, handleLo);
        } else {
          this.reply(0, handleHi, handleLo, readLengthBytes > 0 ? (result as Buffer) : undefined);
        }
        if (recorder) recorder.request(this.entry.name, type, (this.server.clock.monotonicMs() - startMs) / 1000, false);
        this.afterCompletion();
      },
      (err: unknown) => {
        if (pooled) this.server.payloads.give(pooled);
        this.budget.settled(heldBytes);
        if (err instanceof InvariantError) {
          // No reply: the client sees the connection end, as after a crash, and marsd stops.
          this.host.internalError(err, 'the backend broke an invariant');
          return;
        }
        this.reply(this.errnoOf(err), handleHi, handleLo);
        if (recorder) recorder.request(this.entry.name, type, (this.server.clock.monotonicMs() - startMs) / 1000, true);
        this.afterCompletion();
      },
    );
  }

  private errnoOf(err: unknown): number {
    if (err instanceof BackendError) {
      const value = P.NBD_ERRNO[err.errno];
      if (value !== undefined) return value;
    }
    this.logBackendError(`backend failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}; replying EIO`);
    return P.NBD_EIO;
  }

  private logBackendError(msg: string): void {
    this.backendErrorsLogged++;
    if (this.backendErrorsLogged <= MAX_LOGGED_BACKEND_ERRORS) {
      const suffix = this.backendErrorsLogged === MAX_LOGGED_BACKEND_ERRORS ? ' (further backend errors on this connection are not logged)' : '';
      this.server.log('error', `nbd ${this.host.label}: ${msg}${suffix}`);
    }
  }

  private afterCompletion(): void {
    if (this.host.isClosed) return;
    this.maybeResume();
    this.server.limits.wakeAll(); // memory held for this request is free for the others too
    this.maybeFinish();
  }

  private replyNow(error: number, req: P.RequestHeader, pos: number): number {
    this.reply(error, req.handleHi, req.handleLo);
    return pos;
  }

  /** Sends a simple reply; replies of one tick go out in one writev (cork until nextTick). */
  private reply(error: number, handleHi: number, handleLo: number, data?: Buffer): void {
    const s = this.host.socket;
    if (this.host.isClosed || s.destroyed || !s.writable) return;
    const header = P.encodeSimpleReplyHeader(error, handleHi, handleLo);
    if (!this.corked) {
      this.corked = true;
      s.cork();
      process.nextTick(() => this.uncork());
    }
    s.write(header);
    if (data) s.write(data);
    this.budget.notePeaks();
  }

  private uncork(): void {
    this.corked = false;
    if (!this.host.socket.destroyed) this.host.socket.uncork();
  }

  // ---- limits --------------------------------------------------------------------------------

  private pauseForLimits(): void {
    if (this.pausedForLimits) return;
    this.pausedForLimits = true;
    this.server.counters.backpressurePauses++;
    this.host.socket.pause();
  }

  /** Below the resume mark (after a completion or a socket 'drain'): parse the stash, read on. */
  maybeResume(): void {
    if (!this.pausedForLimits || this.host.isClosed || !this.budget.belowResumeMark()) return;
    this.pausedForLimits = false;
    const stash = this.stash;
    this.stash = null;
    if (stash && this.open) {
      try {
        this.processRequests(stash, 0);
      } catch (err) {
        this.host.internalError(err, 'internal error'); // as in the connection's data handler
        return;
      }
    }
    if (!this.pausedForLimits && !this.host.isClosed) this.host.socket.resume();
  }

  /** After DISC, a half-close or removeExport: finish once nothing is in flight. */
  private maybeFinish(): void {
    if (this.host.isClosed || this.budget.inFlight > 0) return;
    if (!this.draining && !this.shuttingDown) return;
    if (this.corked) this.uncork();
    this.host.finish();
  }
}
