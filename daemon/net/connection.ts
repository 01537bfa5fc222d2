// One authenticated peer connection (docs/protocol.md §5-6), multiplexing many requests by id
// over a single Duplex: a TCP or TLS socket, or the stdin/stdout of `marsd --stdio` over SSH.
//
// The same class serves both ends. The client sends requests and matches replies to them;
// the server dispatches requests to PeerHandlers and sends their replies. Either end sends
// keepalive pings and answers the other's.
//
// Failure rules: anything the peer sends that breaks the protocol closes the connection with
// a reason (the owner logs it); nothing throws out of an event handler; every open request is
// settled when the connection closes. Network trouble only ever closes connections; the owner
// reconnects (docs/design.md §3.9).
//
// Memory is bounded at both ends. Sending waits for 'drain', so a handler's sink.send() blocks
// while the peer does not read. Receiving log-data queues frames per stream and pauses reading
// from the socket while more than maxBufferedStreamBytes wait for a slow onFrame, so the
// sender's TCP window closes instead of our heap growing.
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { assert } from '../../common/util/assert.js';
import { encodeFrame, FrameDecoder, MAX_PAYLOAD_BYTES, ProtocolError, type Frame } from './frame.js';
import {
  checkPayload, encodeEntsPayload, MAX_ERROR_MESSAGE_CHARS, MAX_LOG_DATA_BYTES, MAX_REQUEST_ID, parseEntsPayload, parseMessage,
  validateOutgoing, PROTOCOL_VERSION,
  type BlocksReply, type DigestsReply, type Entry, type EntsPayload, type EntsReply, type LogDataMessage, type LogEndMessage,
  type LogInfo, type LogReadRequest, type Message, type OkReply, type PongMessage, type PositionReply, type PositionRequest,
  type Reply, type SingleReplyRequest, type SyncDigestsRequest, type SyncReadRequest,
} from './messages.js';
import { DIGEST_BYTES } from '../../common/resource/sync-blocks.js';
import { chunkBytesForRate, throttle, TokenBucket } from './rate-limit.js';
import type { LogLevel } from '../../common/util/log.js';

export type PeerRole = 'client' | 'server';

export const DEFAULT_KEEPALIVE_MS = 5_000;
export const DEFAULT_IDLE_TIMEOUT_MS = 15_000;
export const DEFAULT_MAX_CONCURRENT_REQUESTS = 64;
export const DEFAULT_MAX_BUFFERED_STREAM_BYTES = 4 * 1024 * 1024;
/** A peer that lets this many of our frames pile up unsent is not reading: give up on it. */
const MAX_QUEUED_SENDS = 1024;

/** What a server does for its peers. Handlers may throw PeerRequestError for an `error` reply. */
export interface PeerHandlers {
  getents(peerHost: string): Promise<{ clockUs: number; entries: Entry[]; logs: LogInfo[] }>;
  logRead(
    peerHost: string,
    req: LogReadRequest,
    sink: { send(pos: number, data: Buffer): Promise<void> },
    signal: AbortSignal,
  ): Promise<{ pos: number; durableEnd: number }>;
  syncDigests(peerHost: string, req: SyncDigestsRequest): Promise<Buffer>;
  syncRead(peerHost: string, req: SyncReadRequest): Promise<Buffer>;
  position(peerHost: string, req: PositionRequest): Promise<{ seq: number; origin: string; pos: number }>;
  pushLink(peerHost: string, entry: Entry): Promise<void>;
  notify(peerHost: string): void;
}

/** A request the peer answered with `error` (or a handler refusing a request). */
export class PeerRequestError extends Error {
  override name = 'PeerRequestError';
  constructor(readonly code: string, message: string) {
    super(message);
    assert(/^E[A-Z0-9]{1,31}$/.test(code), `bad error code ${JSON.stringify(code)}`);
  }
}

/** The connection closed before the request was answered. */
export class ConnectionClosedError extends Error {
  override name = 'ConnectionClosedError';
  constructor(readonly reason: string) {
    super(`peer connection closed: ${reason}`);
  }
}

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
}

type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;
export type RequestBody = WithoutId<SingleReplyRequest>;
export type LogReadBody = Omit<LogReadRequest, 'id'>;

interface ReplyMap {
  getents: EntsReply;
  'sync-digests': DigestsReply;
  'sync-read': BlocksReply;
  position: PositionReply;
  'push-link': OkReply;
  ping: PongMessage;
}
const REPLY_TYPE: { [K in keyof ReplyMap]: ReplyMap[K]['t'] } = {
  getents: 'ents',
  'sync-digests': 'digests',
  'sync-read': 'blocks',
  position: 'position-reply',
  'push-link': 'ok',
  ping: 'pong',
};

export interface PeerReply<H> {
  header: H;
  payload: Buffer;
  /** For `ents`: the validated payload. */
  ents?: EntsPayload;
}

export interface ConnectionStats {
  framesSent: number;
  framesReceived: number;
  bytesSent: number;
  bytesReceived: number;
  readPauses: number;
}

interface SingleRequest {
  kind: 'single';
  requestType: keyof ReplyMap;
  /** The caller gave up (abort): the reply is dropped when it comes. */
  abandoned: boolean;
  resolve(reply: PeerReply<Reply>): void;
  reject(err: Error): void;
}

interface StreamRequest {
  kind: 'stream';
  abandoned: boolean;
  /** Where the next log-data must start: the stream is contiguous. */
  expectPos: number;
  queue: Array<{ message: LogDataMessage | LogEndMessage | Extract<Message, { t: 'error' }>; payload: Buffer }>;
  running: boolean;
  onFrame(header: LogDataMessage, payload: Buffer): void | Promise<void>;
  resolve(end: LogEndMessage): void;
  reject(err: Error): void;
}

type OutgoingRequest = SingleRequest | StreamRequest;

export class PeerConnection extends EventEmitter {
  readonly role: PeerRole;
  readonly peerHost: string;
  readonly peerUuid: string;
  readonly label: string;
  readonly closed: Promise<string>;
  readonly stats: ConnectionStats = { framesSent: 0, framesReceived: 0, bytesSent: 0, bytesReceived: 0, readPauses: 0 };

  private readonly io: Duplex;
  private readonly decoder: FrameDecoder;
  private readonly handlers: PeerHandlers | undefined;
  private readonly log: (level: LogLevel, msg: string) => void;
  private readonly keepaliveMs: number;
  private readonly idleTimeoutMs: number;
  private readonly maxConcurrentRequests: number;
  private readonly maxBufferedStreamBytes: number;

  private closeReason: string | undefined;
  private resolveClosed!: (reason: string) => void;
  /** Requests we sent, by id, until their final reply arrives. */
  private readonly outgoing = new Map<number, OutgoingRequest>();
  private nextId = 1;
  /** Requests the peer sent that are running here, by id. */
  private readonly incoming = new Map<number, AbortController>();
  private lastReceivedMs: number;
  private lastSentMs: number;
  private readonly timer: NodeJS.Timeout;
  /** Set while the stream's buffer is above its high-water mark. */
  private drained: Promise<void> | undefined;
  private releaseDrain: (() => void) | undefined;
  private queuedSends = 0;
  private streamBufferedBytes = 0;
  private readingPaused = false;

  constructor(opts: PeerConnectionOptions) {
    super();
    this.role = opts.role;
    this.peerHost = opts.peerHost;
    this.peerUuid = opts.peerUuid;
    this.label = opts.label ? `${opts.peerHost} (${opts.label})` : opts.peerHost;
    this.io = opts.stream;
    this.decoder = opts.decoder;
    this.handlers = opts.handlers;
    this.log = opts.log ?? (() => undefined);
    this.keepaliveMs = opts.keepaliveMs ?? DEFAULT_KEEPALIVE_MS;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.maxConcurrentRequests = opts.maxConcurrentRequests ?? DEFAULT_MAX_CONCURRENT_REQUESTS;
    this.maxBufferedStreamBytes = opts.maxBufferedStreamBytes ?? DEFAULT_MAX_BUFFERED_STREAM_BYTES;
    assert(this.role === 'client' || this.handlers !== undefined, 'a server-side PeerConnection needs handlers');
    assert(this.keepaliveMs > 0 && this.idleTimeoutMs > this.keepaliveMs, 'idleTimeoutMs must exceed keepaliveMs (the peer pings when idle)');
    assert(this.maxConcurrentRequests >= 1, 'maxConcurrentRequests must be at least 1');
    assert(this.maxBufferedStreamBytes >= MAX_LOG_DATA_BYTES, `maxBufferedStreamBytes must hold at least one log-data frame (${MAX_LOG_DATA_BYTES})`);

    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.lastReceivedMs = this.lastSentMs = Date.now();
    this.timer = setInterval(() => this.tick(), Math.max(10, Math.floor(Math.min(this.keepaliveMs, this.idleTimeoutMs) / 4)));
    this.timer.unref();

    this.io.on('data', this.onData);
    this.io.on('end', this.onEnd);
    this.io.on('close', this.onStreamClose);
    this.io.on('error', this.onError);
    this.io.on('drain', this.onDrain);
    // Frames that arrived together with the last handshake frame.
    queueMicrotask(() => {
      this.processFrames();
      if (this.io.destroyed) this.close('connection closed');
      else if (!this.closeReason && !this.readingPaused) this.io.resume();
    });
  }

  get isClosed(): boolean {
    return this.closeReason !== undefined;
  }

  get closeReasonText(): string | undefined {
    return this.closeReason;
  }

  /** True while our sends wait for the peer to read (the stream is above its high-water mark). */
  get awaitingDrain(): boolean {
    return this.drained !== undefined;
  }

  /** Requests from the peer currently running here. */
  get activeIncomingRequests(): number {
    return this.incoming.size;
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
    return new Promise((resolve, reject) => {
      if (this.closeReason !== undefined) return reject(new ConnectionClosedError(this.closeReason));
      if (signal?.aborted) return reject(abortError(signal));
      const id = this.allocateId();
      const entry: SingleRequest = {
        kind: 'single',
        requestType: body.t,
        abandoned: false,
        resolve: (reply) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(reply as PeerReply<ReplyMap[B['t']]>);
        },
        reject: (err) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      const onAbort = () => {
        if (entry.abandoned) return;
        entry.abandoned = true; // the id stays reserved until the reply arrives
        entry.reject(abortError(signal!));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.outgoing.set(id, entry);
      this.send({ ...body, id } as Message, payload).catch((err: Error) => this.failRequest(id, err));
    });
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
    return new Promise((resolve, reject) => {
      if (this.closeReason !== undefined) return reject(new ConnectionClosedError(this.closeReason));
      if (signal?.aborted) return reject(abortError(signal));
      const id = this.allocateId();
      const entry: StreamRequest = {
        kind: 'stream',
        abandoned: false,
        expectPos: body.fromPos,
        queue: [],
        running: false,
        onFrame,
        resolve: (end) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(end);
        },
        reject: (err) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      const onAbort = () => this.abandonStream(id, entry, abortError(signal!));
      signal?.addEventListener('abort', onAbort, { once: true });
      this.outgoing.set(id, entry);
      this.send({ ...body, id } as Message).catch((err: Error) => this.failRequest(id, err));
    });
  }

  // Typed conveniences over request().

  async getents(signal?: AbortSignal): Promise<{ clockUs: number } & EntsPayload> {
    const reply = await this.request({ t: 'getents' }, undefined, signal);
    assert(reply.ents !== undefined, 'ents reply without its parsed payload');
    return { clockUs: reply.header.clockUs, ...reply.ents };
  }

  async ping(signal?: AbortSignal): Promise<void> {
    await this.request({ t: 'ping' }, undefined, signal);
  }

  /** "My tree changed, pull me soon." Fire and forget. */
  notify(): void {
    this.send({ t: 'notify' }).catch(() => undefined);
  }

  /** Close the connection; every open request fails with ConnectionClosedError(reason). */
  close(reason: string): void {
    if (this.closeReason !== undefined) return;
    this.closeReason = reason;
    clearInterval(this.timer);
    this.io.off('data', this.onData);
    this.io.off('drain', this.onDrain);
    for (const [id, entry] of this.outgoing) {
      this.outgoing.delete(id);
      if (entry.kind === 'stream') this.dropQueue(entry);
      if (!entry.abandoned) {
        entry.abandoned = true;
        entry.reject(new ConnectionClosedError(reason));
      }
    }
    for (const controller of this.incoming.values()) controller.abort(new ConnectionClosedError(reason));
    this.incoming.clear();
    this.releaseDrain?.();
    this.io.destroy();
    this.resolveClosed(reason);
    this.emit('close', reason);
  }

  // ---- receiving ----------------------------------------------------------------------------

  private readonly onData = (chunk: Buffer | string) => {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.lastReceivedMs = Date.now();
    this.stats.bytesReceived += bytes.length;
    try {
      this.decoder.push(bytes);
    } catch (err) {
      this.closeOnError(err);
      return;
    }
    this.processFrames();
  };

  private readonly onEnd = () => this.close(`${this.peerHost} closed the connection`);
  private readonly onStreamClose = () => this.close('connection closed');
  private readonly onError = (err: Error) => this.close(`connection error: ${err.message}`);

  private processFrames(): void {
    try {
      for (const frame of this.decoder) {
        if (this.closeReason !== undefined) return;
        this.stats.framesReceived += 1;
        this.handleFrame(frame);
      }
    } catch (err) {
      this.closeOnError(err);
    }
  }

  private closeOnError(err: unknown): void {
    if (err instanceof ProtocolError) {
      this.close(`protocol error from ${this.label}: ${err.message}`);
    } else {
      this.log('error', `peer connection ${this.label}: internal error: ${(err as Error).stack ?? String(err)}`);
      this.close(`internal error: ${(err as Error).message}`);
    }
  }

  private handleFrame(frame: Frame): void {
    const m = parseMessage(frame.header);
    checkPayload(m, frame.payload);
    switch (m.t) {
      case 'ping':
        this.send({ t: 'pong', id: m.id }).catch(() => undefined);
        return;
      case 'notify':
        if (this.role === 'server') this.safely(() => this.handlers!.notify(this.peerHost), 'notify');
        else this.emit('notify');
        return;
      case 'pong':
      case 'ents':
      case 'log-data':
      case 'log-end':
      case 'digests':
      case 'blocks':
      case 'position-reply':
      case 'ok':
      case 'error':
        if (this.role === 'server' && m.t !== 'pong') throw new ProtocolError(`a client sent ${m.t}`);
        this.handleReply(m, frame.payload);
        return;
      case 'cancel':
        if (this.role !== 'server') throw new ProtocolError('a server sent cancel');
        // A cancel for a request that already finished crossed its reply: nothing to do.
        this.incoming.get(m.id)?.abort(new PeerRequestError('ECANCELED', 'cancelled by the client'));
        return;
      case 'getents':
      case 'log-read':
      case 'sync-digests':
      case 'sync-read':
      case 'position':
      case 'push-link':
        if (this.role !== 'server') throw new ProtocolError(`a server sent the request ${m.t}`);
        this.startIncoming(m);
        return;
      case 'hello':
      case 'auth':
      case 'welcome':
      case 'refused':
        throw new ProtocolError(`handshake message ${m.t} after the handshake`);
    }
  }

  private handleReply(m: Reply, payload: Buffer): void {
    const entry = this.outgoing.get(m.id);
    if (!entry) throw new ProtocolError(`${m.t} for request ${m.id}, which is not open`);
    if (entry.kind === 'single') {
      if (m.t !== 'error' && m.t !== REPLY_TYPE[entry.requestType]) {
        throw new ProtocolError(`${m.t} in answer to ${entry.requestType} request ${m.id}`);
      }
      const ents = m.t === 'ents' ? parseEntsPayload(payload, m.count) : undefined; // may throw: before the delete
      this.outgoing.delete(m.id);
      if (entry.abandoned) return;
      entry.abandoned = true;
      if (m.t === 'error') entry.reject(new PeerRequestError(m.code, `${this.peerHost}: ${m.message}`));
      else entry.resolve(ents ? { header: m, payload, ents } : { header: m, payload });
      return;
    }
    if (m.t !== 'log-data' && m.t !== 'log-end' && m.t !== 'error') throw new ProtocolError(`${m.t} in answer to log-read request ${m.id}`);
    if (m.t === 'log-data') {
      if (m.pos !== entry.expectPos) throw new ProtocolError(`log-data for request ${m.id} at ${m.pos}, expected ${entry.expectPos}`);
      entry.expectPos += payload.length;
    } else {
      if (m.t === 'log-end' && m.pos !== entry.expectPos) throw new ProtocolError(`log-end for request ${m.id} at ${m.pos}, the data ended at ${entry.expectPos}`);
      this.outgoing.delete(m.id); // the final frame: the id is free again
    }
    if (entry.abandoned) return;
    entry.queue.push({ message: m, payload });
    this.streamBufferedBytes += payload.length;
    if (this.streamBufferedBytes >= this.maxBufferedStreamBytes) this.pauseReading();
    void this.runStream(entry);
  }

  /** Deliver a stream's queued frames one at a time; awaiting onFrame is the backpressure. */
  private async runStream(entry: StreamRequest): Promise<void> {
    if (entry.running) return;
    entry.running = true;
    try {
      while (entry.queue.length > 0 && !entry.abandoned) {
        const { message, payload } = entry.queue[0]!;
        if (message.t === 'log-data') {
          try {
            await entry.onFrame(message, payload);
          } catch (err) {
            this.abandonStream(message.id, entry, err as Error);
            return;
          }
        } else {
          entry.abandoned = true;
          if (message.t === 'log-end') entry.resolve(message);
          else entry.reject(new PeerRequestError(message.code, `${this.peerHost}: ${message.message}`));
        }
        if (entry.queue.length > 0 && entry.queue[0]!.message === message) {
          entry.queue.shift();
          this.releaseStreamBytes(payload.length);
        }
      }
    } finally {
      entry.running = false;
    }
  }

  /** The caller gave up on a stream: reject it, drop what is queued, ask the server to stop. */
  private abandonStream(id: number, entry: StreamRequest, err: Error): void {
    if (entry.abandoned) return;
    entry.abandoned = true;
    this.dropQueue(entry);
    entry.reject(err);
    // Until log-end (or error) arrives, the id stays in `outgoing` and late frames are dropped.
    if (this.outgoing.get(id) === entry && this.closeReason === undefined) {
      this.send({ t: 'cancel', id }).catch(() => undefined);
    }
  }

  private dropQueue(entry: StreamRequest): void {
    let bytes = 0;
    for (const item of entry.queue) bytes += item.payload.length;
    entry.queue.length = 0;
    this.releaseStreamBytes(bytes);
  }

  private releaseStreamBytes(bytes: number): void {
    this.streamBufferedBytes -= bytes;
    assert(this.streamBufferedBytes >= 0, 'stream buffer accounting went negative');
    if (this.readingPaused && this.streamBufferedBytes <= this.maxBufferedStreamBytes / 2) this.resumeReading();
  }

  private pauseReading(): void {
    if (this.readingPaused) return;
    this.readingPaused = true;
    this.stats.readPauses += 1;
    this.io.pause();
  }

  private resumeReading(): void {
    if (!this.readingPaused || this.closeReason !== undefined) return;
    this.readingPaused = false;
    this.lastReceivedMs = Date.now(); // the silence while we did not read was ours
    this.io.resume();
  }

  private failRequest(id: number, err: Error): void {
    const entry = this.outgoing.get(id);
    if (!entry) return;
    this.outgoing.delete(id);
    if (entry.kind === 'stream') this.dropQueue(entry);
    if (!entry.abandoned) {
      entry.abandoned = true;
      entry.reject(err);
    }
  }

  private allocateId(): number {
    // Ids wrap around; one still open (including abandoned ones awaiting their reply) is skipped.
    for (;;) {
      const id = this.nextId;
      this.nextId = id === MAX_REQUEST_ID ? 0 : id + 1;
      if (!this.outgoing.has(id)) return id;
    }
  }

  // ---- serving -------------------------------------------------------------------------------

  private startIncoming(req: Exclude<SingleReplyRequest, { t: 'ping' }> | LogReadRequest): void {
    if (this.incoming.has(req.id)) throw new ProtocolError(`request id ${req.id} is already in use`);
    if (this.incoming.size >= this.maxConcurrentRequests) {
      this.send({ t: 'error', id: req.id, code: 'EBUSY', message: `more than ${this.maxConcurrentRequests} requests at once` }).catch(() => undefined);
      return;
    }
    const controller = new AbortController();
    this.incoming.set(req.id, controller);
    void this.serve(req, controller);
  }

  private async serve(req: Exclude<SingleReplyRequest, { t: 'ping' }> | LogReadRequest, controller: AbortController): Promise<void> {
    const handlers = this.handlers!;
    const peer = this.peerHost;
    let final: { message: Message; payload?: Buffer };
    // Where a log-read's data ended so far: its log-end after a cancel.
    let logPos = req.t === 'log-read' ? req.fromPos : 0;
    try {
      switch (req.t) {
        case 'getents': {
          const r = await handlers.getents(peer);
          const payload = encodeEntsPayload({ entries: r.entries, logs: r.logs });
          final = { message: { t: 'ents', id: req.id, clockUs: r.clockUs, count: r.entries.length }, payload };
          break;
        }
        case 'log-read': {
          const sink = this.logSink(req, controller.signal, (pos) => (logPos = pos));
          const r = await handlers.logRead(peer, req, sink, controller.signal);
          assert(r.pos === logPos, `log-read handler says the data ended at ${r.pos}, it sent up to ${logPos}`);
          final = { message: { t: 'log-end', id: req.id, pos: r.pos, durableEnd: r.durableEnd } };
          break;
        }
        case 'sync-digests': {
          const digests = await handlers.syncDigests(peer, req);
          const count = digests.length / DIGEST_BYTES;
          assert(Number.isInteger(count) && count <= req.lengthBytes / req.blockBytes, `syncDigests returned ${digests.length} bytes for ${req.lengthBytes / req.blockBytes} blocks`);
          final = { message: { t: 'digests', id: req.id, fromPos: req.fromPos, count }, payload: digests };
          break;
        }
        case 'sync-read': {
          const data = await handlers.syncRead(peer, req);
          assert(data.length <= req.lengthBytes, `syncRead returned ${data.length} bytes for a read of ${req.lengthBytes}`);
          final = { message: { t: 'blocks', id: req.id, fromPos: req.fromPos }, payload: data };
          break;
        }
        case 'position': {
          const r = await handlers.position(peer, req);
          final = { message: { t: 'position-reply', id: req.id, seq: r.seq, origin: r.origin, pos: r.pos } };
          break;
        }
        case 'push-link':
          await handlers.pushLink(peer, req.entry);
          final = { message: { t: 'ok', id: req.id } };
          break;
      }
      validateOutgoing(final.message);
      if (final.payload && final.payload.length > MAX_PAYLOAD_BYTES) {
        throw new PeerRequestError('EFBIG', `the ${final.message.t} reply would be ${final.payload.length} bytes, more than a frame holds (${MAX_PAYLOAD_BYTES})`);
      }
    } catch (err) {
      if (this.closeReason !== undefined) return;
      if (req.t === 'log-read' && controller.signal.aborted) {
        // Cancelled: the handler stopped by throwing; the data it sent ends at logPos.
        final = { message: { t: 'log-end', id: req.id, pos: logPos, durableEnd: logPos } };
      } else {
        final = { message: this.errorReply(req, err) };
      }
    }
    // Free the id before the final frame goes out: the client may reuse it as soon as it sees it.
    this.incoming.delete(req.id);
    if (this.closeReason !== undefined) return;
    await this.send(final.message, final.payload).catch(() => undefined);
  }

  private errorReply(req: { t: string; id: number }, err: unknown): Message {
    if (err instanceof PeerRequestError) {
      return { t: 'error', id: req.id, code: err.code, message: truncate(err.message) };
    }
    this.log('error', `${req.t} from ${this.label} failed: ${(err as Error)?.stack ?? String(err)}`);
    return { t: 'error', id: req.id, code: 'EIO', message: truncate(`${req.t} failed: ${(err as Error)?.message ?? String(err)}`) };
  }

  /** The sink a log-read handler writes to: contiguous, rate limited, split into frames. */
  private logSink(req: LogReadRequest, signal: AbortSignal, sent: (pos: number) => void): { send(pos: number, data: Buffer): Promise<void> } {
    const bucket = new TokenBucket(req.rateBytesPerS);
    const chunkBytes = chunkBytesForRate(req.rateBytesPerS, MAX_LOG_DATA_BYTES);
    let nextPos = req.fromPos;
    let busy = false;
    return {
      send: async (pos: number, data: Buffer) => {
        assert(!busy, 'log-read sink.send called again before the previous send finished');
        assert(pos === nextPos, `log-read sink.send at ${pos}, the stream is at ${nextPos}`);
        busy = true;
        try {
          for (let offset = 0; offset < data.length; offset += chunkBytes) {
            if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new PeerRequestError('ECANCELED', 'cancelled');
            const piece = data.subarray(offset, offset + chunkBytes);
            await throttle(bucket, piece.length, signal);
            await this.send({ t: 'log-data', id: req.id, pos: nextPos }, piece);
            nextPos += piece.length;
            sent(nextPos);
          }
        } finally {
          busy = false;
        }
      },
    };
  }

  private safely(fn: () => void, what: string): void {
    try {
      fn();
    } catch (err) {
      this.log('error', `${what} handler for ${this.label} threw: ${(err as Error)?.stack ?? String(err)}`);
    }
  }

  // ---- sending -------------------------------------------------------------------------------

  /**
   * Write one frame. Frames are never interleaved (each is written in one go); when the stream
   * is above its high-water mark, senders queue until 'drain', and a send resolves only once
   * its frame is accepted below the mark, which is what throttles a producer.
   */
  private async send(message: Message, payload?: Buffer): Promise<void> {
    if (this.closeReason !== undefined) throw new ConnectionClosedError(this.closeReason);
    validateOutgoing(message);
    if (this.drained) {
      this.queuedSends += 1;
      if (this.queuedSends > MAX_QUEUED_SENDS) {
        this.close(`${this.peerHost} does not read what we send (${MAX_QUEUED_SENDS} frames waiting)`);
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
    const buffers = encodeFrame(message, payload);
    let belowMark = true;
    for (const buf of buffers) {
      belowMark = this.io.write(buf) && belowMark;
      this.stats.bytesSent += buf.length;
    }
    this.stats.framesSent += 1;
    this.lastSentMs = Date.now();
    if (!belowMark) {
      this.drained ??= new Promise((resolve) => (this.releaseDrain = resolve));
      await this.drained;
      if (this.closeReason !== undefined) throw new ConnectionClosedError(this.closeReason);
    }
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

  // ---- keepalive -----------------------------------------------------------------------------

  private tick(): void {
    if (this.closeReason !== undefined) return;
    const now = Date.now();
    // While we are not reading (a slow consumer of ours), silence is our own doing.
    if (this.readingPaused) this.lastReceivedMs = now;
    const silentMs = now - this.lastReceivedMs;
    if (silentMs >= this.idleTimeoutMs) {
      this.close(`peer silent for ${silentMs} ms`);
      return;
    }
    if (now - this.lastSentMs >= this.keepaliveMs && !this.drained) {
      // The reply is not awaited: any frame from the peer proves it is alive.
      this.request({ t: 'ping' }).catch(() => undefined);
    }
  }
}

function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return reason;
  const err = new Error(reason === undefined ? 'aborted' : String(reason));
  err.name = 'AbortError';
  return err;
}

function truncate(text: string): string {
  return text.length > MAX_ERROR_MESSAGE_CHARS ? `${text.slice(0, MAX_ERROR_MESSAGE_CHARS - 3)}...` : text;
}
