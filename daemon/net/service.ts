// The service side of a peer connection: everything a peer may send after the handshake, who
// may send it, how each request is checked, and how it is dispatched to the PeerHandlers
// (daemon/serve/peer-service.ts implements them) and answered (docs/protocol.md §5-6).
//
// Every frame has already passed its schema in messages.ts (the limits in the second column)
// and its payload check before it gets here; ids are u32, names follow the /mars rules.
//
//   frame         sent by   schema limits (messages.ts)                 checked here / by the handler
//   getents       client    since: epoch 16 hex, generation              our entries must pass the schema too (PeerService.getents, encodeEntsPayload);
//                                                                       a delta (since in the reply) only on a request that named its base
//   log-read      client    res; name log-SEQ-ORIGIN; fromPos;          handler: the logfile exists (ENOENT), fromPos <= its durable end
//                           follow; waitMs <= 60 s; rateBytesPerS       (ERANGE); the sink takes contiguous bytes only; log-end pos =
//                                                                       bytes sent; rate limited here (rateBytesPerS, 0 = unlimited)
//   sync-digests  client    range <= 256 MiB, 4 KiB aligned             handler: range inside the resource (EINVAL), not in emergency
//                                                                       (EAGAIN), a disk (ENOENT); here: one digest per block at most
//   sync-read     client    lengthBytes <= 1 MiB                        handler: as sync-digests; here: no more bytes than asked
//   position      client    res                                         handler: actual primary here (EAGAIN), not in emergency
//   push-link     client    entry: path of 1-3 names, value, stamp      handler: the merge rules of a pull, refusals are EACCES
//   ping          either    -                                           answered at once with pong (not counted as a request)
//   cancel        client    id                                          aborts a running request; an id that already finished: ignored
//   notify        either    -                                           server: the handler (pull the client soon); client: 'notify'
//   secret-ring   client    op status|set; key ids; secret 32 bytes     handler: the rotation rules (decide-secret-ring.ts), the
//                                                                       session's key id and cipher are passed along; ENOTSUP without
//   replies       server    (pong: either)                              outgoing.ts: must answer an open request of ours, in type/order
//   hello, auth, welcome, refused: only in the handshake; afterwards a protocol error.
//
// Admission: a request id already running or waiting here is a protocol error; beyond
// maxConcurrentRequests running or waiting at once the request gets EBUSY. A host that is
// joining the cluster (handshake admission 'joining') may only read the tree and push its own
// ips/ip-HOST (what marsadm join-cluster does); anything else gets EACCES. A request whose
// reply would not fit into the connection's or the total memory budget (budget.ts) waits
// (holding no reply memory) while the connection goes on being read: notify, ping, cancel and
// control requests (getents, push-link, position, secret-ring) are never stuck behind bulk ones
// (log-read, sync-digests, sync-read). Control requests that fit run at once, past waiting bulk
// ones; bulk ones run in their order. A log-read holds budget only while it has data in hand
// (LogSink.reserve before reading a chunk, given back once the chunk is handed to the socket),
// so a following log-read that waits for its logfile to grow holds none: a secondary with a
// hundred resources follows all of them at once (issue 11). A handler refuses a request by
// throwing PeerRequestError (an `error` reply with its code); any other exception becomes EIO
// and is logged with its stack. An InvariantError is neither: it is our own bug, so marsd stops
// (failStopOnInvariant) and the connection closes without a reply the peer could retry around.
import { failStopOnInvariant, InvariantError, assert } from '../../common/util/assert.js';
import type { Clock } from '../../common/util/clock.js';
import type { LogFn } from '../../common/util/log.js';
import { DIGEST_BYTES, type DigestAlgorithm } from '../../common/resource/sync-blocks.js';
import { MAX_PAYLOAD_BYTES, ProtocolError } from './frame.js';
import {
  encodeEntsPayload, maybeDeflateEnts, validateOutgoing,
  type Entry, type ListingSince, type LogInfo, type LogReadRequest, type Message, type MessageOf, type PositionRequest, type Reply, type SingleReplyRequest,
  type SecretRingRequest, type SyncDigestsRequest, type SyncReadRequest,
} from './messages.js';
import type { FrameCipher } from './frame-auth.js';
import { PeerRequestError, truncateMessage } from './errors.js';
import { reserveBytesFor, type ConnectionBudget } from './budget.js';
import { createLogSink, type LogSink } from './log-sink.js';

export type { LogSink } from './log-sink.js';

export type PeerRole = 'client' | 'server';

/** What a server does for its peers. Handlers may throw PeerRequestError for an `error` reply. */
export interface PeerHandlers {
  /** since: the listing of ours the peer holds (a delta may answer); see ListingAnswer */
  getents(peerHost: string, since?: ListingSince): Promise<ListingAnswer>;
  logRead(peerHost: string, req: LogReadRequest, sink: LogSink, signal: AbortSignal): Promise<{ pos: number; durableEnd: number }>;
  /** the digests, and the algorithm that made them (what the request asked for, or md5/sha1 when the keyed one cannot be made here) */
  syncDigests(peerHost: string, req: SyncDigestsRequest): Promise<{ digests: Buffer; algorithm: DigestAlgorithm }>;
  syncRead(peerHost: string, req: SyncReadRequest): Promise<Buffer>;
  position(peerHost: string, req: PositionRequest): Promise<{ seq: number; origin: string; pos: number }>;
  pushLink(peerHost: string, entry: Entry): Promise<void>;
  notify(peerHost: string): void;
  /** The cluster secret rotation; without it, secret-ring gets ENOTSUP. */
  secretRing?(peerHost: string, req: SecretRingRequest, session: SessionInfo): Promise<{ dial: string; next?: string; previous?: string }>;
}

/**
 * A listing for a peer. Without `listing`: full, in the form of an older server. With it: named
 * by epoch and generation, its directories in order; with `since` and `changed` a delta that
 * holds only the changed directories' entries and logfiles (daemon/propagate/listing-delta.ts).
 */
export interface ListingAnswer {
  clockUs: number;
  entries: Entry[];
  logs: LogInfo[];
  listing?: { epoch: string; generation: number; dirs: string[]; since?: number; changed?: string[] };
}

/** The `ents` reply (header and payload) to a getents request that the handler answered with `r`. */
export function entsReply(req: Pick<MessageOf<'getents'>, 'id' | 'since' | 'deflate'>, r: ListingAnswer): { message: MessageOf<'ents'>; payload: Buffer } {
  const l = r.listing;
  assert(l === undefined || l.since === undefined || (req.since !== undefined && l.since === req.since.generation && l.epoch === req.since.epoch),
    'a delta listing answers only a request that named its base');
  assert(l === undefined || (l.since === undefined) === (l.changed === undefined), 'a delta listing names its base and its changed directories');
  const doc = { entries: r.entries, logs: r.logs, ...(l ? { dirs: l.dirs } : {}), ...(l?.changed ? { changed: l.changed } : {}) };
  const { payload, deflated } = maybeDeflateEnts(encodeEntsPayload(doc, 'each-checked-with-entrySchema'), req.deflate === true);
  const named = l ? { epoch: l.epoch, generation: l.generation, ...(l.since !== undefined ? { since: l.since } : {}) } : {};
  return { message: { t: 'ents', id: req.id, clockUs: r.clockUs, count: r.entries.length, ...named, ...(deflated ? { deflated: true as const } : {}) }, payload };
}

/** What the handshake established about a connection, for the handlers that care. */
export interface SessionInfo {
  /** Key id of the cluster secret the peer proved (secret-ring.keyId). */
  keyId: string;
  cipher: FrameCipher;
}

/** A request a server runs: every request but ping, which the connection answers itself. */
export type ServedRequest = Exclude<SingleReplyRequest, { t: 'ping' }> | LogReadRequest;

/** Where each kind of frame goes once routeMessage allowed it. */
export interface MessageTargets {
  /** A reply to one of our requests (outgoing.ts). */
  reply(m: Reply, payload: Buffer): void;
  pong(id: number): void;
  notify(): void;
  serve(req: ServedRequest): void;
  cancel(id: number): void;
}

/** The role rules of the table above. Throws ProtocolError for a frame this side may not receive. */
export function routeMessage(role: PeerRole, m: Message, payload: Buffer, to: MessageTargets): void {
  switch (m.t) {
    case 'ping':
      return to.pong(m.id);
    case 'notify':
      return to.notify();
    case 'pong':
    case 'ents':
    case 'log-data':
    case 'log-end':
    case 'digests':
    case 'blocks':
    case 'position-reply':
    case 'ok':
    case 'error':
    case 'secret-state':
      if (role === 'server' && m.t !== 'pong') throw new ProtocolError(`a client sent ${m.t}`);
      return to.reply(m, payload);
    case 'cancel':
      if (role !== 'server') throw new ProtocolError('a server sent cancel');
      return to.cancel(m.id);
    case 'getents':
    case 'log-read':
    case 'sync-digests':
    case 'sync-read':
    case 'position':
    case 'push-link':
    case 'secret-ring':
      if (role !== 'server') throw new ProtocolError(`a server sent the request ${m.t}`);
      return to.serve(m);
    case 'hello':
    case 'auth':
    case 'welcome':
    case 'refused':
      throw new ProtocolError(`handshake message ${m.t} after the handshake`);
  }
}

/** What the service needs of the connection. */
export interface ServiceLink {
  readonly closeReasonText: string | undefined;
  send(message: Message, payload?: Buffer): Promise<void>;
  close(reason: string): void;
}

export interface ServiceOptions {
  handlers: PeerHandlers;
  peerHost: string;
  /** "HOST (where)": for messages only. */
  label: string;
  log: LogFn;
  maxConcurrentRequests: number;
  clock: Clock;
  /** The memory budget for replies; without one (test pairs) nothing is counted. */
  budget?: ConnectionBudget;
  /** joining: only getents and a push of its own ips/ip-HOST; removed: only getents (it learns of its removal). */
  restricted?: 'joining' | 'removed';
  /** The key and cipher of the session (secret-ring needs them); none: secret-ring is refused. */
  session?: SessionInfo;
}

interface FinalReply {
  message: Message;
  payload?: Buffer;
}

/** The requests a peer sent that run here, by id, each until its final reply is sent. */
export class IncomingRequests {
  private readonly running = new Map<number, AbortController>();
  /** Requests waiting for budget (reading is paused meanwhile, so at most a frame's worth). */
  private readonly waiting: ServedRequest[] = [];
  private unsubscribe: (() => void) | undefined;

  constructor(private readonly link: ServiceLink, private readonly o: ServiceOptions) {
    assert(o.maxConcurrentRequests >= 1, 'maxConcurrentRequests must be at least 1');
  }

  get active(): number {
    return this.running.size;
  }

  /** Admit a request and run it; its reply is sent when the handler is done. */
  start(req: ServedRequest): void {
    if (this.running.has(req.id) || this.waiting.some((w) => w.id === req.id)) throw new ProtocolError(`request id ${req.id} is already in use`);
    // Waiting requests count: they are what a peer could pile up here while the budget is full.
    if (this.running.size + this.waiting.length >= this.o.maxConcurrentRequests) {
      this.link.send({ t: 'error', id: req.id, code: 'EBUSY', message: `more than ${this.o.maxConcurrentRequests} requests at once` }).catch(failStopOnInvariant);
      return;
    }
    const refusal = this.o.restricted !== undefined ? restrictedRefusal(req, this.o.peerHost, this.o.restricted) : undefined;
    if (refusal !== undefined) {
      this.link.send({ t: 'error', id: req.id, code: 'EACCES', message: refusal }).catch(failStopOnInvariant);
      return;
    }
    this.waiting.push(req);
    this.admitWaiting();
  }

  /**
   * Run the waiting requests whose replies fit the budget: control requests as soon as they
   * fit, bulk ones in their order (the first bulk one that does not fit holds back the later
   * ones, so a large sync-read is not starved by smaller reads).
   */
  private admitWaiting(): void {
    let bulkHeld = false;
    for (let i = 0; i < this.waiting.length && this.link.closeReasonText === undefined;) {
      const req = this.waiting[i]!;
      const bulk = BULK_REQUESTS.has(req.t);
      const costBytes = this.o.budget ? reserveBytesFor(req) : 0;
      if ((bulk && bulkHeld) || (this.o.budget && !this.o.budget.tryTake(costBytes))) {
        if (bulk) bulkHeld = true;
        i++;
        continue;
      }
      this.waiting.splice(i, 1);
      const controller = new AbortController();
      this.running.set(req.id, controller);
      void this.serve(req, controller).finally(() => {
        this.o.budget?.give(costBytes);
        if (this.waiting.length > 0) this.admitWaiting();
      });
    }
    if (this.waiting.length > 0 && this.link.closeReasonText === undefined) {
      // Bytes freed by another connection wake us too.
      this.unsubscribe ??= this.o.budget?.total.subscribe(() => queueMicrotask(() => this.admitWaiting()));
    } else {
      this.unsubscribe?.();
      this.unsubscribe = undefined;
    }
  }

  /** The client cancelled: a cancel that crossed the request's final reply finds nothing. */
  cancel(id: number): void {
    this.running.get(id)?.abort(new PeerRequestError('ECANCELED', 'cancelled by the client'));
  }

  /** The connection closed: every handler still running is aborted with that error. */
  abortAll(err: Error): void {
    for (const controller of this.running.values()) controller.abort(err);
    this.running.clear();
    this.waiting.length = 0;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  notify(): void {
    try {
      this.o.handlers.notify(this.o.peerHost);
    } catch (err) {
      failStopOnInvariant(err);
      this.o.log('error', `notify handler for ${this.o.label} threw: ${(err as Error)?.stack ?? String(err)}`);
    }
  }

  private async serve(req: ServedRequest, controller: AbortController): Promise<void> {
    // Where a log-read's data ended so far: its log-end after a cancel.
    const progress = { logPos: req.t === 'log-read' ? req.fromPos : 0 };
    let final: FinalReply | undefined;
    try {
      final = await this.answer(req, controller.signal, progress);
      validateOutgoing(final.message);
      if (final.payload && final.payload.length > MAX_PAYLOAD_BYTES) {
        throw new PeerRequestError('EFBIG', `the ${final.message.t} reply would be ${final.payload.length} bytes, more than a frame holds (${MAX_PAYLOAD_BYTES})`);
      }
    } catch (err) {
      final = this.failureReply(req, err, controller.signal, progress.logPos);
    }
    // Free the id before the final frame goes out: the client may reuse it as soon as it sees it.
    this.running.delete(req.id);
    if (final === undefined || this.link.closeReasonText !== undefined) return;
    await this.link.send(final.message, final.payload).catch(failStopOnInvariant);
  }

  /** Dispatch to the handler, check what it returns against the request, build the reply. */
  private async answer(req: ServedRequest, signal: AbortSignal, progress: { logPos: number }): Promise<FinalReply> {
    const { handlers: h, peerHost: peer } = this.o;
    switch (req.t) {
      case 'getents': {
        return entsReply(req, await h.getents(peer, req.since));
      }
      case 'log-read': {
        const sink = createLogSink(req, signal, (pos) => (progress.logPos = pos), { clock: this.o.clock, budget: this.o.budget, send: (m, payload) => this.link.send(m, payload) });
        let r;
        try {
          r = await h.logRead(peer, req, sink, signal);
        } finally {
          sink.release();
        }
        assert(r.pos === progress.logPos, `log-read handler says the data ended at ${r.pos}, it sent up to ${progress.logPos}`);
        return { message: { t: 'log-end', id: req.id, pos: r.pos, durableEnd: r.durableEnd } };
      }
      case 'sync-digests': {
        const { digests, algorithm } = await h.syncDigests(peer, req);
        const count = digests.length / DIGEST_BYTES;
        assert(Number.isInteger(count) && count <= req.lengthBytes / req.blockBytes, `syncDigests returned ${digests.length} bytes for ${req.lengthBytes / req.blockBytes} blocks`);
        assert(algorithm === (req.digest ?? 'md5') || (algorithm === req.keyed && req.key !== undefined), `syncDigests answered ${algorithm}, which was not asked for`);
        // Named only when asked for: a peer that asked without a name gets md5 as before.
        const named = req.digest !== undefined || req.keyed !== undefined;
        return { message: { t: 'digests', id: req.id, fromPos: req.fromPos, count, ...(named ? { digest: algorithm } : {}) }, payload: digests };
      }
      case 'sync-read': {
        const data = await h.syncRead(peer, req);
        assert(data.length <= req.lengthBytes, `syncRead returned ${data.length} bytes for a read of ${req.lengthBytes}`);
        return { message: { t: 'blocks', id: req.id, fromPos: req.fromPos }, payload: data };
      }
      case 'position': {
        const r = await h.position(peer, req);
        return { message: { t: 'position-reply', id: req.id, seq: r.seq, origin: r.origin, pos: r.pos } };
      }
      case 'push-link':
        await h.pushLink(peer, req.entry);
        return { message: { t: 'ok', id: req.id } };
      case 'secret-ring': {
        if (!h.secretRing || !this.o.session) throw new PeerRequestError('ENOTSUP', 'this server does not rotate its cluster secret');
        const r = await h.secretRing(peer, req, this.o.session);
        return { message: { t: 'secret-state', id: req.id, dial: r.dial, ...(r.next ? { next: r.next } : {}), ...(r.previous ? { previous: r.previous } : {}) } };
      }
    }
  }

  /** The final frame of a request whose handler (or reply) failed; undefined: send none. */
  private failureReply(req: ServedRequest, err: unknown, signal: AbortSignal, logPos: number): FinalReply | undefined {
    failStopOnInvariant(err);
    if (err instanceof InvariantError) {
      // marsd stops at the next microtask; until then, no reply the peer would take as an answer.
      this.link.close(`invariant failed serving ${req.t} of ${this.o.label}: ${err.message}`);
      return undefined;
    }
    if (this.link.closeReasonText !== undefined) return undefined;
    if (req.t === 'log-read' && signal.aborted) {
      // Cancelled: the handler stopped by throwing; the data it sent ends at logPos.
      return { message: { t: 'log-end', id: req.id, pos: logPos, durableEnd: logPos } };
    }
    if (err instanceof PeerRequestError) {
      return { message: { t: 'error', id: req.id, code: err.code, message: truncateMessage(err.message) } };
    }
    this.o.log('error', `${req.t} from ${this.o.label} failed: ${(err as Error)?.stack ?? String(err)}`);
    return { message: { t: 'error', id: req.id, code: 'EIO', message: truncateMessage(`${req.t} failed: ${(err as Error)?.message ?? String(err)}`) } };
  }

}

/** Requests that move bulk data; the others are control requests (see the header). */
const BULK_REQUESTS: ReadonlySet<ServedRequest['t']> = new Set(['log-read', 'sync-digests', 'sync-read']);

/** Why a joining or removed host may not send this request; undefined: it may (what join-cluster needs; a removed host only reads). */
export function restrictedRefusal(req: ServedRequest, peerHost: string, how: 'joining' | 'removed'): string | undefined {
  if (req.t === 'getents') return undefined;
  if (how === 'removed') return `${peerHost} was removed from the cluster: only getents is served (rejoin with marsadm join-cluster on a fresh /mars)`;
  if (req.t === 'push-link' && req.entry.p === `ips/ip-${peerHost}`) return undefined;
  return `${peerHost} is joining the cluster: only getents and a push of ips/ip-${peerHost} are served until it is a member`;
}
