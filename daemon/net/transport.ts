// The transport of one authenticated peer connection (docs/protocol.md §2, §6): frames over a
// single Duplex (a TCP or TLS socket, or the stdin/stdout of `marsd --stdio` over SSH), with
// backpressure, read pausing and keepalive. It knows nothing of what the frames ask for: every
// message it receives has passed the schema and payload checks of messages.ts and goes to the
// receiver (connection.ts routes it to service.ts or outgoing.ts).
//
// Failure rules: anything the peer sends that breaks the protocol closes the connection with a
// reason (the owner logs it); nothing throws out of an event handler; an InvariantError found
// while receiving stops marsd (failStopOnInvariant) before the connection closes. Network
// trouble only ever closes connections; the owner reconnects (docs/design.md §3.9).
//
// Memory is bounded. Sending waits for 'drain': a send resolves only once its frame is
// accepted below the stream's high-water mark, which throttles a producer (a log-read
// handler's sink), and a peer that lets MAX_QUEUED_SENDS frames pile up is dropped. Reading
// can be paused by the owner (a slow consumer of a log-read stream, or the reply budget of
// service.ts), so the sender's TCP window closes instead of our heap growing; frames already
// received wait in the decoder until reading resumes; silence while we do not read is not the
// peer's.
//
// Authenticity: after the handshake every frame we send is sealed (frame-auth.ts) and every
// frame received is checked by the decoder's opener; a frame that fails ends the connection
// with a warning in the log.
import type { Duplex } from 'node:stream';
import { assert, failStopOnInvariant } from '../../common/util/assert.js';
import { systemClock, type Clock, type Timer } from '../../common/util/clock.js';
import type { LogFn } from '../../common/util/log.js';
import { encodeFrame, ProtocolError, type FrameDecoder } from './frame.js';
import { FrameAuthError, type FrameSealer } from './frame-auth.js';
import { checkPayload, parseMessage, validateOutgoing, type Message } from './messages.js';
import { ConnectionClosedError } from './errors.js';

export const DEFAULT_KEEPALIVE_MS = 5_000;
export const DEFAULT_IDLE_TIMEOUT_MS = 15_000;
/** A peer that lets this many of our frames pile up unsent is not reading: give up on it. */
const MAX_QUEUED_SENDS = 1024;

export interface ConnectionStats {
  framesSent: number;
  framesReceived: number;
  bytesSent: number;
  bytesReceived: number;
  readPauses: number;
}

export interface TransportOptions {
  stream: Duplex;
  /** The decoder the handshake used; it may already hold frames. */
  decoder: FrameDecoder;
  peerHost: string;
  /** "HOST (where)": for messages only. */
  label: string;
  log: LogFn;
  keepaliveMs: number;
  idleTimeoutMs: number;
  clock?: Clock;
  /** Seals every frame we send (from the handshake); absent only on test pairs without one. */
  sealer?: FrameSealer;
}

/**
 * Why reading is paused: each owner pauses and resumes for its own reason. Only a slow consumer
 * of a log-read stream does now; the reply budget no longer stops reading (service.ts).
 */
export type PauseReason = 'stream';

/** What the transport hands up. Called from event handlers; a ProtocolError thrown closes the connection. */
export interface TransportReceiver {
  /** A message from the peer: its header validated, its payload checked against it. */
  onMessage(m: Message, payload: Buffer): void;
  /** We sent nothing for keepaliveMs and are not blocked on the peer: send something (a ping). */
  onKeepalive(): void;
  /** The connection closed (exactly once); every send fails from now on. */
  onClose(reason: string): void;
}

export class FrameTransport {
  readonly stats: ConnectionStats = { framesSent: 0, framesReceived: 0, bytesSent: 0, bytesReceived: 0, readPauses: 0 };
  private readonly io: Duplex;
  private readonly decoder: FrameDecoder;
  private readonly clock: Clock;
  private closeReason: string | undefined;
  private lastReceivedMs: number;
  private lastSentMs: number;
  private readonly keepaliveTimer: Timer;
  /** Set while the stream's buffer is above its high-water mark. */
  private drained: Promise<void> | undefined;
  private releaseDrain: (() => void) | undefined;
  private queuedSends = 0;
  private readonly pauses = new Set<PauseReason>();

  constructor(private readonly o: TransportOptions, private readonly receiver: TransportReceiver) {
    assert(o.keepaliveMs > 0 && o.idleTimeoutMs > o.keepaliveMs, 'idleTimeoutMs must exceed keepaliveMs (the peer pings when idle)');
    this.io = o.stream;
    this.decoder = o.decoder;
    this.clock = o.clock ?? systemClock;
    this.lastReceivedMs = this.lastSentMs = this.clock.nowMs();
    const tickMs = Math.max(10, Math.floor(Math.min(o.keepaliveMs, o.idleTimeoutMs) / 4));
    this.keepaliveTimer = this.clock.setInterval(() => this.tick(), tickMs);
    this.io.on('data', this.onData);
    this.io.on('end', this.onEnd);
    this.io.on('close', this.onStreamClose);
    this.io.on('error', this.onError);
    this.io.on('drain', this.onDrain);
    // Frames that arrived together with the last handshake frame; by then the owner is built.
    queueMicrotask(() => {
      this.processFrames();
      if (this.io.destroyed) this.close('connection closed');
      else if (!this.closeReason && !this.readingPaused) this.io.resume();
    });
  }

  get closeReasonText(): string | undefined {
    return this.closeReason;
  }

  private get readingPaused(): boolean {
    return this.pauses.size > 0;
  }

  /** True while our sends wait for the peer to read (the stream is above its high-water mark). */
  get awaitingDrain(): boolean {
    return this.drained !== undefined;
  }

  /** Close the connection; the receiver hears of it once, with this reason. */
  close(reason: string): void {
    if (this.closeReason !== undefined) return;
    this.closeReason = reason;
    this.keepaliveTimer.cancel();
    this.io.off('data', this.onData);
    this.io.off('drain', this.onDrain);
    this.releaseDrain?.();
    this.io.destroy();
    this.receiver.onClose(reason);
  }

  /**
   * Write one frame. Frames are never interleaved (each is written in one go); when the stream
   * is above its high-water mark, senders queue until 'drain', and a send resolves only once
   * its frame is accepted below the mark, which is what throttles a producer.
   */
  async send(message: Message, payload?: Buffer): Promise<void> {
    if (this.closeReason !== undefined) throw new ConnectionClosedError(this.closeReason);
    validateOutgoing(message);
    if (this.drained) await this.waitForDrain();
    const encoded = encodeFrame(message, payload);
    // Sealed right before the write: the implicit sequence number follows the write order.
    const buffers = this.o.sealer ? this.o.sealer.seal(encoded) : encoded;
    let belowMark = true;
    for (const buf of buffers) {
      belowMark = this.io.write(buf) && belowMark;
      this.stats.bytesSent += buf.length;
    }
    this.stats.framesSent += 1;
    this.lastSentMs = this.clock.nowMs();
    if (!belowMark) {
      this.drained ??= new Promise((resolve) => (this.releaseDrain = resolve));
      await this.drained;
      if (this.closeReason !== undefined) throw new ConnectionClosedError(this.closeReason);
    }
  }

  /** Stop reading from the stream (the owner holds too many received bytes). */
  pauseReading(reason: PauseReason = 'stream'): void {
    if (this.pauses.has(reason)) return;
    if (!this.readingPaused) this.stats.readPauses += 1;
    this.pauses.add(reason);
    this.io.pause();
  }

  resumeReading(reason: PauseReason = 'stream'): void {
    if (!this.pauses.delete(reason) || this.readingPaused || this.closeReason !== undefined) return;
    this.lastReceivedMs = this.clock.nowMs(); // the silence while we did not read was ours
    this.io.resume();
    // Frames that arrived before the pause took effect; not from inside the caller's handler.
    queueMicrotask(() => this.processFrames());
  }

  // ---- sending -------------------------------------------------------------------------------

  private async waitForDrain(): Promise<void> {
    this.queuedSends += 1;
    if (this.queuedSends > MAX_QUEUED_SENDS) {
      this.close(`${this.o.peerHost} does not read what we send (${MAX_QUEUED_SENDS} frames waiting)`);
    }
    try {
      while (this.closeReason === undefined) {
        const wait = this.currentDrain(); // re-read after every await: 'drain' replaces it
        if (!wait) break;
        await wait;
      }
    } finally {
      this.queuedSends -= 1;
    }
    if (this.closeReason !== undefined) throw new ConnectionClosedError(this.closeReason);
  }

  private currentDrain(): Promise<void> | undefined {
    return this.drained;
  }

  private readonly onDrain = () => {
    const release = this.releaseDrain;
    this.drained = undefined;
    this.releaseDrain = undefined;
    release?.();
  };

  // ---- receiving ----------------------------------------------------------------------------

  private readonly onData = (chunk: Buffer | string) => {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.lastReceivedMs = this.clock.nowMs();
    this.stats.bytesReceived += bytes.length;
    try {
      this.decoder.push(bytes);
    } catch (err) {
      this.closeOnError(err);
      return;
    }
    this.processFrames();
  };

  private readonly onEnd = () => this.close(`${this.o.peerHost} closed the connection`);
  private readonly onStreamClose = () => this.close('connection closed');
  private readonly onError = (err: Error) => this.close(`connection error: ${err.message}`);

  private processFrames(): void {
    try {
      for (;;) {
        if (this.closeReason !== undefined || this.readingPaused) return;
        const frame = this.decoder.next();
        if (!frame) return;
        this.stats.framesReceived += 1;
        const m = parseMessage(frame.header);
        checkPayload(m, frame.payload);
        this.receiver.onMessage(m, frame.payload);
      }
    } catch (err) {
      this.closeOnError(err);
    }
  }

  private closeOnError(err: unknown): void {
    if (err instanceof FrameAuthError) {
      this.o.log('warn', `peer ${this.o.label}: ${err.message}; closing the connection`);
      this.close(`frame authentication failed from ${this.o.label}: ${err.message}`);
      return;
    }
    if (err instanceof ProtocolError) {
      this.close(`protocol error from ${this.o.label}: ${err.message}`);
      return;
    }
    failStopOnInvariant(err);
    this.o.log('error', `peer connection ${this.o.label}: internal error: ${(err as Error)?.stack ?? String(err)}`);
    this.close(`internal error: ${(err as Error)?.message ?? String(err)}`);
  }

  // ---- keepalive -----------------------------------------------------------------------------

  private tick(): void {
    if (this.closeReason !== undefined) return;
    const now = this.clock.nowMs();
    // While we are not reading (a slow consumer of ours), silence is our own doing.
    if (this.readingPaused) this.lastReceivedMs = now;
    const silentMs = now - this.lastReceivedMs;
    if (silentMs >= this.o.idleTimeoutMs) {
      this.close(`peer silent for ${silentMs} ms`);
      return;
    }
    if (now - this.lastSentMs >= this.o.keepaliveMs && !this.drained) this.receiver.onKeepalive();
  }
}
