// Our requests to the peer (docs/protocol.md §5-6), by id, until their final reply: id
// allocation, matching each reply to the request it answers, and delivering a log-read's
// stream of log-data frames to its consumer one at a time.
//
// Invariants: an id stays reserved until the final reply to it arrived, also for a request the
// caller gave up on (abort, or a failing onFrame), so a late reply is dropped quietly instead of
// answering a new request; a reply of the wrong type, to an id that is not open, or a log-data
// frame that does not continue its stream exactly is a ProtocolError (the connection closes).
// Received stream bytes are bounded: above maxBufferedStreamBytes waiting for a slow onFrame,
// reading from the peer pauses until half of them are consumed.
import { assert, failStopOnInvariant } from '../../common/util/assert.js';
import { ProtocolError } from './frame.js';
import {
  MAX_REQUEST_ID, parseEntsPayload,
  type BlocksReply, type DigestsReply, type EntsPayload, type EntsReply, type ErrorReply, type LogDataMessage, type LogEndMessage,
  type LogReadRequest, type Message, type OkReply, type PongMessage, type PositionReply, type Reply, type SecretStateReply, type SingleReplyRequest,
} from './messages.js';
import { abortError, ConnectionClosedError, PeerRequestError } from './errors.js';
import { RequestScheduler, type RequestClass, type SchedulerLimits, type Ticket } from './scheduler.js';

type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;
export type RequestBody = WithoutId<SingleReplyRequest>;
export type LogReadBody = Omit<LogReadRequest, 'id'>;

export interface ReplyMap {
  getents: EntsReply;
  'sync-digests': DigestsReply;
  'sync-read': BlocksReply;
  position: PositionReply;
  'push-link': OkReply;
  ping: PongMessage;
  'secret-ring': SecretStateReply;
}
/** The one reply type that answers each single-reply request (besides `error`). */
const REPLY_TYPE: { [K in keyof ReplyMap]: ReplyMap[K]['t'] } = {
  getents: 'ents',
  'sync-digests': 'digests',
  'sync-read': 'blocks',
  position: 'position-reply',
  'push-link': 'ok',
  ping: 'pong',
  'secret-ring': 'secret-state',
};

export interface PeerReply<H> {
  header: H;
  payload: Buffer;
  /** For `ents`: the validated payload. */
  ents?: EntsPayload;
}

/** What the requests need of the transport. */
export interface RequestLink {
  readonly closeReasonText: string | undefined;
  send(message: Message, payload?: Buffer): Promise<void>;
  pauseReading(): void;
  resumeReading(): void;
}

interface SingleRequest {
  kind: 'single';
  ticket: Ticket;
  requestType: keyof ReplyMap;
  /** The caller gave up (abort): the reply is dropped when it comes. */
  abandoned: boolean;
  resolve(reply: PeerReply<Reply>): void;
  reject(err: Error): void;
}

type StreamItem = { message: LogDataMessage | LogEndMessage | ErrorReply; payload: Buffer };

interface StreamRequest {
  kind: 'stream';
  ticket: Ticket;
  abandoned: boolean;
  /** Where the next log-data must start: the stream is contiguous. */
  expectPos: number;
  queue: StreamItem[];
  running: boolean;
  onFrame(header: LogDataMessage, payload: Buffer): void | Promise<void>;
  resolve(end: LogEndMessage): void;
  reject(err: Error): void;
}

type OutgoingRequest = SingleRequest | StreamRequest;

/** Bulk requests move many bytes or hold their slot long (a following log-read); the rest is control. */
const BULK: ReadonlySet<string> = new Set(['log-read', 'sync-read', 'sync-digests']);

function classOf(t: string): RequestClass {
  return BULK.has(t) ? 'bulk' : 'control';
}

/** The resource a request is about (fairness between resources); '' for the tree. */
function keyOf(body: object): string {
  return 'res' in body && typeof body.res === 'string' ? body.res : '';
}

export class OutgoingRequests {
  /** Requests we sent, by id, until their final reply arrives. */
  private readonly open = new Map<number, OutgoingRequest>();
  private nextId = 1;
  /** Requests waiting for a slot of the scheduler (not sent yet, no id). */
  private readonly waiting = new Set<OutgoingRequest>();
  private streamBufferedBytes = 0;
  private readonly scheduler: RequestScheduler;

  constructor(private readonly link: RequestLink, private readonly o: { peerHost: string; maxBufferedStreamBytes: number; limits?: SchedulerLimits }) {
    this.scheduler = new RequestScheduler(o.limits);
  }

  /** Requests sent and not finished / waiting to be sent: for status and tests. */
  get load(): { inFlight: number; queued: number } {
    return { inFlight: this.scheduler.inFlight, queued: this.scheduler.queued };
  }

  /** Queue entry behind the scheduler; once granted it gets an id and is sent. */
  private submit(entry: OutgoingRequest, t: string, key: string, send: (id: number) => Promise<void>): void {
    this.waiting.add(entry);
    // The grant may run at once, inside submit: it sets the ticket itself.
    entry.ticket = this.scheduler.submit(classOf(t), key, (ticket) => {
      entry.ticket = ticket;
      this.waiting.delete(entry);
      const id = this.allocateId();
      this.open.set(id, entry);
      send(id).catch((err: Error) => this.failRequest(id, err));
    });
  }

  /** The caller gave up before its request was sent: it leaves the queue. */
  private unqueue(entry: OutgoingRequest): void {
    if (!this.waiting.delete(entry)) return;
    this.scheduler.release(entry.ticket);
  }

  /** The request's id is free again (final reply, failure): its slot too. */
  private finish(id: number, entry: OutgoingRequest): void {
    this.open.delete(id);
    this.scheduler.release(entry.ticket);
  }

  /** See PeerConnection.request. */
  request<B extends RequestBody>(body: B, payload: Buffer | undefined, signal: AbortSignal | undefined): Promise<PeerReply<ReplyMap[B['t']]>> {
    return new Promise((resolve, reject) => {
      const refused = this.refusal(signal);
      if (refused) return reject(refused);
      const entry: SingleRequest = {
        kind: 'single',
        ticket: undefined as unknown as Ticket, // set by submit before anything can use it
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
        entry.abandoned = true; // once sent, the id stays reserved until the reply arrives
        this.unqueue(entry);
        entry.reject(abortError(signal!));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.submit(entry, body.t, keyOf(body), (id) => this.link.send({ ...body, id } as Message, payload));
    });
  }

  /** See PeerConnection.stream. */
  stream(body: LogReadBody, onFrame: StreamRequest['onFrame'], signal: AbortSignal | undefined): Promise<LogEndMessage> {
    return new Promise((resolve, reject) => {
      const refused = this.refusal(signal);
      if (refused) return reject(refused);
      const entry: StreamRequest = {
        kind: 'stream',
        ticket: undefined as unknown as Ticket, // set by submit before anything can use it
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
      let sentId: number | undefined;
      const onAbort = () => {
        if (sentId === undefined) {
          if (entry.abandoned) return;
          entry.abandoned = true;
          this.unqueue(entry);
          entry.reject(abortError(signal!));
        } else this.abandonStream(sentId, entry, abortError(signal!));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.submit(entry, body.t, keyOf(body), (id) => { sentId = id; return this.link.send({ ...body, id } as Message); });
    });
  }

  /** A reply from the peer (any of REPLY_TYPES). Throws ProtocolError when it answers nothing we asked. */
  handleReply(m: Reply, payload: Buffer): void {
    const entry = this.open.get(m.id);
    if (!entry) throw new ProtocolError(`${m.t} for request ${m.id}, which is not open`);
    if (entry.kind === 'single') this.settleSingle(m, payload, entry);
    else this.queueStreamFrame(m, payload, entry);
  }

  /** The connection closed: every open request fails with ConnectionClosedError(reason). */
  closeAll(reason: string): void {
    const queued = [...this.waiting];
    this.waiting.clear();
    this.scheduler.clear();
    for (const entry of queued) {
      if (entry.abandoned) continue;
      entry.abandoned = true;
      entry.reject(new ConnectionClosedError(reason));
    }
    for (const [id, entry] of this.open) {
      this.open.delete(id);
      if (entry.kind === 'stream') this.dropQueue(entry);
      if (!entry.abandoned) {
        entry.abandoned = true;
        entry.reject(new ConnectionClosedError(reason));
      }
    }
  }

  private refusal(signal: AbortSignal | undefined): Error | undefined {
    const closed = this.link.closeReasonText;
    if (closed !== undefined) return new ConnectionClosedError(closed);
    return signal?.aborted ? abortError(signal) : undefined;
  }

  private settleSingle(m: Reply, payload: Buffer, entry: SingleRequest): void {
    if (m.t !== 'error' && m.t !== REPLY_TYPE[entry.requestType]) {
      throw new ProtocolError(`${m.t} in answer to ${entry.requestType} request ${m.id}`);
    }
    const ents = m.t === 'ents' ? parseEntsPayload(payload, m.count, m) : undefined; // may throw: before the delete
    this.finish(m.id, entry);
    if (entry.abandoned) return;
    entry.abandoned = true;
    if (m.t === 'error') entry.reject(new PeerRequestError(m.code, `${this.o.peerHost}: ${m.message}`));
    else entry.resolve(ents ? { header: m, payload, ents } : { header: m, payload });
  }

  private queueStreamFrame(m: Reply, payload: Buffer, entry: StreamRequest): void {
    if (m.t !== 'log-data' && m.t !== 'log-end' && m.t !== 'error') throw new ProtocolError(`${m.t} in answer to log-read request ${m.id}`);
    if (m.t === 'log-data') {
      if (m.pos !== entry.expectPos) throw new ProtocolError(`log-data for request ${m.id} at ${m.pos}, expected ${entry.expectPos}`);
      entry.expectPos += payload.length;
    } else {
      if (m.t === 'log-end' && m.pos !== entry.expectPos) throw new ProtocolError(`log-end for request ${m.id} at ${m.pos}, the data ended at ${entry.expectPos}`);
      this.finish(m.id, entry); // the final frame: the id is free again
    }
    if (entry.abandoned) return;
    entry.queue.push({ message: m, payload });
    this.streamBufferedBytes += payload.length;
    if (this.streamBufferedBytes >= this.o.maxBufferedStreamBytes) this.link.pauseReading();
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
            // Not swallowed: the caller's stream() rejects with this very error.
            this.abandonStream(message.id, entry, err as Error);
            return;
          }
        } else {
          entry.abandoned = true;
          if (message.t === 'log-end') entry.resolve(message);
          else entry.reject(new PeerRequestError(message.code, `${this.o.peerHost}: ${message.message}`));
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
    // Until log-end (or error) arrives, the id stays open and late frames are dropped.
    if (this.open.get(id) === entry && this.link.closeReasonText === undefined) {
      this.link.send({ t: 'cancel', id }).catch(failStopOnInvariant);
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
    if (this.streamBufferedBytes <= this.o.maxBufferedStreamBytes / 2) this.link.resumeReading();
  }

  private failRequest(id: number, err: Error): void {
    const entry = this.open.get(id);
    if (!entry) return;
    this.finish(id, entry);
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
      if (!this.open.has(id)) return id;
    }
  }
}
