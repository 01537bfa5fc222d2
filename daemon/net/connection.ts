// One authenticated peer connection (docs/protocol.md §5-6), multiplexing many requests by id
// over a single Duplex. The same class serves both ends: a client sends requests and receives
// their replies, a server runs the peer's requests on its PeerHandlers; either end pings when
// idle and answers the other's pings. It is assembled from three parts:
//
//   transport.ts  frames over the Duplex: backpressure, read pausing, keepalive, close
//   service.ts    what a peer may ask, who may send which frame, how each request is checked,
//                 dispatched to the handlers and answered
//   outgoing.ts   our requests to the peer by id, replies matched to them, log-read streams
//
// Failure rules (the parts keep them): anything the peer sends that breaks the protocol closes
// the connection with a reason (the owner logs it); nothing throws out of an event handler;
// every open request is settled when the connection closes; an InvariantError stops marsd
// instead of becoming a log line or an error reply. Network trouble only ever closes
// connections; the owner reconnects (docs/design.md §3.9).
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { assert, failStopOnInvariant } from '../../common/util/assert.js';
import { systemClock, type Clock } from '../../common/util/clock.js';
import type { LogLevel } from '../../common/util/log.js';
import { MAX_HEADER_BYTES, type FrameDecoder } from './frame.js';
import type { FrameSealer } from './frame-auth.js';
import type { ConnectionBudget } from './budget.js';
import { MAX_LOG_DATA_BYTES, PROTOCOL_VERSION, type EntsPayload, type ListingSince, type LogDataMessage, type LogEndMessage, type Message } from './messages.js';
import { ConnectionClosedError } from './errors.js';
import { DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_KEEPALIVE_MS, FrameTransport, type ConnectionStats } from './transport.js';
import { OutgoingRequests, type LogReadBody, type PeerReply, type ReplyMap, type RequestBody } from './outgoing.js';
import { IncomingRequests, routeMessage, type PeerHandlers, type PeerRole, type SessionInfo } from './service.js';

export { ConnectionClosedError, PeerRequestError } from './errors.js';
export { DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_KEEPALIVE_MS, type ConnectionStats } from './transport.js';
export type { LogReadBody, PeerReply, RequestBody } from './outgoing.js';
export type { LogSink, PeerHandlers, PeerRole } from './service.js';

export const DEFAULT_MAX_CONCURRENT_REQUESTS = 64;
export const DEFAULT_MAX_BUFFERED_STREAM_BYTES = 4 * 1024 * 1024;

export interface PeerConnectionOptions {
  stream: Duplex;
  /** The decoder the handshake used; it may already hold frames. */
  decoder: FrameDecoder;
  role: PeerRole;
  peerHost: string;
  peerUuid: string;
  /** Where the peer is (address, "stdio", "ssh host"): for messages only. */
  label?: string;
  /** Required for the server role. */
  handlers?: PeerHandlers;
  log?: (level: LogLevel, msg: string) => void;
  keepaliveMs?: number;
  idleTimeoutMs?: number;
  maxConcurrentRequests?: number;
  maxBufferedStreamBytes?: number;
  /** Time and timers of the keepalive and the rate limit (default: the system clock). */
  clock?: Clock;
  /** Seals our frames (from the handshake, which also set the decoder's opener). */
  sealer?: FrameSealer;
  /** Server role: the memory budget for the replies we owe this peer. */
  budget?: ConnectionBudget;
  /** Server role: the peer is joining (the join requests only) or removed (tree reads only). */
  restricted?: 'joining' | 'removed';
  /** Server role: the key and cipher the handshake established (the secret-ring handler needs them). */
  session?: SessionInfo;
}

export class PeerConnection extends EventEmitter {
  readonly role: PeerRole;
  readonly peerHost: string;
  readonly peerUuid: string;
  readonly label: string;
  readonly closed: Promise<string>;
  readonly stats: ConnectionStats;

  private readonly transport: FrameTransport;
  private readonly outgoing: OutgoingRequests;
  /** Only on the server side. */
  private readonly incoming: IncomingRequests | undefined;
  private resolveClosed!: (reason: string) => void;

  constructor(opts: PeerConnectionOptions) {
    super();
    this.role = opts.role;
    this.peerHost = opts.peerHost;
    this.peerUuid = opts.peerUuid;
    this.label = opts.label ? `${opts.peerHost} (${opts.label})` : opts.peerHost;
    const log = opts.log ?? (() => undefined);
    const clock = opts.clock ?? systemClock;
    const keepaliveMs = opts.keepaliveMs ?? DEFAULT_KEEPALIVE_MS;
    const idleTimeoutMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    const maxConcurrentRequests = opts.maxConcurrentRequests ?? DEFAULT_MAX_CONCURRENT_REQUESTS;
    const maxBufferedStreamBytes = opts.maxBufferedStreamBytes ?? DEFAULT_MAX_BUFFERED_STREAM_BYTES;
    // Checked before any timer or listener exists.
    assert(this.role === 'client' || opts.handlers !== undefined, 'a server-side PeerConnection needs handlers');
    assert(keepaliveMs > 0 && idleTimeoutMs > keepaliveMs, 'idleTimeoutMs must exceed keepaliveMs (the peer pings when idle)');
    assert(maxConcurrentRequests >= 1, 'maxConcurrentRequests must be at least 1');
    assert(maxBufferedStreamBytes >= MAX_LOG_DATA_BYTES, `maxBufferedStreamBytes must hold at least one log-data frame (${MAX_LOG_DATA_BYTES})`);
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    // No frame a client sends carries a payload: a server buffers at most one header per frame.
    if (this.role === 'server') opts.decoder.setLimits({ maxHeaderBytes: MAX_HEADER_BYTES, maxPayloadBytes: 0 });

    this.transport = new FrameTransport({
      stream: opts.stream, decoder: opts.decoder, peerHost: this.peerHost, label: this.label, log, clock, keepaliveMs, idleTimeoutMs,
      ...(opts.sealer !== undefined ? { sealer: opts.sealer } : {}),
    }, {
      onMessage: (m, payload) => this.onMessage(m, payload),
      // The reply is not awaited: any frame from the peer proves it is alive.
      onKeepalive: () => this.outgoing.request({ t: 'ping' }, undefined, undefined).catch(failStopOnInvariant),
      onClose: (reason) => this.onClose(reason),
    });
    this.stats = this.transport.stats;
    this.outgoing = new OutgoingRequests(this.transport, { peerHost: this.peerHost, maxBufferedStreamBytes });
    this.incoming = opts.handlers && this.role === 'server'
      ? new IncomingRequests(this.transport, {
        handlers: opts.handlers, peerHost: this.peerHost, label: this.label, log, clock, maxConcurrentRequests,
        ...(opts.budget !== undefined ? { budget: opts.budget } : {}),
        ...(opts.restricted !== undefined ? { restricted: opts.restricted } : {}),
        ...(opts.session !== undefined ? { session: opts.session } : {}),
      })
      : undefined;
  }

  get isClosed(): boolean {
    return this.transport.closeReasonText !== undefined;
  }

  get closeReasonText(): string | undefined {
    return this.transport.closeReasonText;
  }

  /** True while our sends wait for the peer to read (the stream is above its high-water mark). */
  get awaitingDrain(): boolean {
    return this.transport.awaitingDrain;
  }

  /** Requests from the peer currently running here. */
  get activeIncomingRequests(): number {
    return this.incoming?.active ?? 0;
  }

  // ---- client API --------------------------------------------------------------------------

  /**
   * Send a request that has exactly one reply. Rejects with PeerRequestError on `error`, with
   * ConnectionClosedError when the connection closes first, or with the abort reason. No request
   * of protocol version 1 carries a payload; the parameter is there for later versions.
   */
  request<B extends RequestBody>(body: B, payload?: Buffer, signal?: AbortSignal): Promise<PeerReply<ReplyMap[B['t']]>> {
    assert(this.role === 'client' || body.t === 'ping', `a server does not send ${body.t} requests`);
    assert(payload === undefined || payload.length === 0, `a ${body.t} request carries no payload in protocol version ${PROTOCOL_VERSION}`);
    return this.outgoing.request(body, payload, signal);
  }

  /**
   * Send a log-read and deliver its log-data frames to onFrame, in order, one at a time
   * (onFrame is awaited). Resolves with the final log-end; rejects with PeerRequestError on
   * `error`, with onFrame's error (the read is then cancelled), or with the abort reason.
   */
  stream(
    body: LogReadBody,
    onFrame: (header: LogDataMessage, payload: Buffer) => void | Promise<void>,
    signal?: AbortSignal,
  ): Promise<LogEndMessage> {
    assert(this.role === 'client', 'a server does not send log-read requests');
    return this.outgoing.stream(body, onFrame, signal);
  }

  // Typed conveniences over request().

  /**
   * The peer's listing; with `since` (a listing of the peer's we hold) maybe a delta
   * (daemon/propagate/listing-delta.ts applies it). epoch and generation name the listing;
   * since is set only in a delta.
   */
  async getents(signal?: AbortSignal, since?: ListingSince): Promise<{ clockUs: number; epoch?: string; generation?: number; since?: number } & EntsPayload> {
    // deflate: a large listing comes deflated from a server that knows how (messages.ts).
    const reply = await this.request(since ? { t: 'getents', since, deflate: true } : { t: 'getents', deflate: true }, undefined, signal);
    assert(reply.ents !== undefined, 'ents reply without its parsed payload');
    const h = reply.header;
    return { clockUs: h.clockUs, ...reply.ents, ...(h.epoch !== undefined ? { epoch: h.epoch } : {}), ...(h.generation !== undefined ? { generation: h.generation } : {}), ...(h.since !== undefined ? { since: h.since } : {}) };
  }

  async ping(signal?: AbortSignal): Promise<void> {
    await this.request({ t: 'ping' }, undefined, signal);
  }

  /** "My tree changed, pull me soon." Fire and forget. */
  notify(): void {
    this.transport.send({ t: 'notify' }).catch(failStopOnInvariant);
  }

  /** Close the connection; every open request fails with ConnectionClosedError(reason). */
  close(reason: string): void {
    this.transport.close(reason);
  }

  // ---- from the transport ----------------------------------------------------------------------

  private onMessage(m: Message, payload: Buffer): void {
    routeMessage(this.role, m, payload, {
      reply: (reply, replyPayload) => this.outgoing.handleReply(reply, replyPayload),
      pong: (id) => void this.transport.send({ t: 'pong', id }).catch(failStopOnInvariant),
      notify: () => (this.incoming ? this.incoming.notify() : this.emit('notify')),
      serve: (req) => this.incoming!.start(req),
      cancel: (id) => this.incoming!.cancel(id),
    });
  }

  private onClose(reason: string): void {
    this.outgoing.closeAll(reason);
    this.incoming?.abortAll(new ConnectionClosedError(reason));
    this.resolveClosed(reason);
    this.emit('close', reason);
  }
}
