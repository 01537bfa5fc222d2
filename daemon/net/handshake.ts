// The mutual authentication handshake (docs/protocol.md §4), run on a fresh Duplex before a
// PeerConnection is built on it:
//
//   server -> client   hello   {proto, host, uuid, nonce}
//   client -> server   auth    {proto, host, uuid, nonce, mac}
//   server -> client   welcome {mac, clockUs}        or refused {reason}
//
// Each proof is keyed with the prover's per-host key, so a connection claiming host H proves
// hostKey(H); the server then admits H only as its admitPeer hook says (the daemon: members in
// ips/ that were not removed, and joining hosts for the join requests only). Once welcome is
// sent (server) or verified (client), both sides switch to authenticated frames with session
// keys derived from the secret, both nonces and both hosts (frame-auth.ts).
//
// Until the server has verified `auth`, it looks at exactly one frame, of at most
// HANDSHAKE_MAX_HEADER_BYTES and without payload; anything else is refused and the stream
// closed, so an unauthenticated peer can never reach a request handler. The reason given to
// the peer is generic; the real one is returned in the HandshakeError for the log.
//
// Both functions stop reading when they are done and hand over the FrameDecoder, which may
// already hold bytes the peer sent right after the handshake. Every failure is a
// HandshakeError, except a broken invariant of ours, which stays an InvariantError so that the
// caller's catch stops marsd (failStopOnInvariant). The deadline and the linger after a
// refusal run on the injected Clock.
import type { Duplex } from 'node:stream';
import { assert, InvariantError } from '../../common/util/assert.js';
import { systemClock, type Clock, type Timer } from '../../common/util/clock.js';
import { MIN_SECRET_BYTES } from '../../common/cluster/secret.js';
import { keyId } from '../../common/cluster/secret-ring.js';
import { clientMac, deriveSessionKeys, macMatches, newNonce, serverMac, uuidsCompatible, type HandshakeTranscript } from './auth.js';
import { sessionCodec, type FrameCipher, type FrameSealer } from './frame-auth.js';
import { DEFAULT_FRAME_LIMITS, encodeFrame, FrameDecoder, ProtocolError, type Frame } from './frame.js';
import { parseMessage, PROTOCOL_VERSION, uuidSchema, validateOutgoing, type Message, type WelcomeMessage } from './messages.js';
import { hostNameSchema } from '../../common/tree/names.js';

export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 5_000;
/** Handshake frames are small; a pre-auth peer gets no room for more. */
export const HANDSHAKE_MAX_HEADER_BYTES = 4096;
/** After a refusal, the stream is destroyed this long after end() if the peer does not close. */
const REFUSAL_LINGER_MS = 1_000;

export type RefusalReason = 'authentication failed' | 'not admitted' | 'encryption required' | 'uuid mismatch' | 'protocol version' | 'protocol error';

/**
 * What the server's admission hook decides about an authenticated peer: a member, a host that
 * is joining (ANY_UUID: served only the join requests, service.ts), or a refusal with a reason.
 */
export type PeerAdmission = { admit: 'member' | 'joining' | 'removed'; detail?: string } | { refuse: string };

export class HandshakeError extends Error {
  override name = 'HandshakeError';
  constructor(
    message: string,
    /** On the client: the reason the server gave in `refused`. On the server: what it sent. */
    readonly refusal?: string,
  ) {
    super(message);
  }
}

export interface HandshakeOptions {
  /** This host's name. */
  host: string;
  /** This host's cluster uuid, or ANY_UUID while joining a cluster. */
  uuid: string;
  /** The cluster secret (raw key bytes, see auth.normalizeSecret). */
  secret: Buffer;
  handshakeTimeoutMs?: number;
  /** The deadline's timer and the default `welcome` clock (default: the system clock). */
  clock?: Clock;
}

export interface ServerHandshakeOptions extends HandshakeOptions {
  /** The Lamport clock value sent in `welcome` (µs); default: the clock's wall time. */
  clockUs?: () => number;
  /** Admission of an authenticated peer by host name and uuid (default: every one as a member). */
  admitPeer?: (host: string, uuid: string) => PeerAdmission;
  /** Refuse clients that do not encrypt their frames. */
  requireEncryption?: boolean;
  /**
   * Every secret a client may prove (default: just `secret`). During a rotation of the cluster
   * secret there are two (secret-ring.ts); the one the client proved keys our proof and the session.
   */
  acceptSecrets?: readonly Buffer[];
}

export interface ClientHandshakeOptions extends HandshakeOptions {
  /** Refuse to authenticate unless the server says it is this host. */
  expectHost?: string;
  /** Encrypt every frame (chacha20-poly1305) instead of only authenticating it. */
  encrypt?: boolean;
}

export interface HandshakeResult {
  peerHost: string;
  peerUuid: string;
  /** Holds any bytes the peer sent after its last handshake frame; normal limits and the session's opener are set. */
  decoder: FrameDecoder;
  /** Seals every frame we send from now on (transport.ts). */
  sealer: FrameSealer;
  /** How the server admitted the peer ('member' on the client side). */
  admission: 'member' | 'joining' | 'removed';
  /** Key id of the secret this connection was authenticated with (secret-ring.keyId). */
  keyId: string;
  /** The frame cipher of the session. */
  cipher: FrameCipher;
}

export interface ClientHandshakeResult extends HandshakeResult {
  /** The server's Lamport clock when it accepted us. */
  peerClockUs: number;
}

export async function serverHandshake(stream: Duplex, opts: ServerHandshakeOptions): Promise<HandshakeResult> {
  checkOptions(opts);
  const clock = opts.clock ?? systemClock;
  const reader = new HandshakeReader(stream, opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS, clock);
  const serverNonce = newNonce();
  const refuse = (reason: RefusalReason, detail: string) => refuseAndClose(stream, reader, clock, reason, detail);
  try {
    writeFrame(stream, { t: 'hello', proto: PROTOCOL_VERSION, host: opts.host, uuid: opts.uuid, nonce: serverNonce });
    let frame: Frame;
    try {
      frame = await reader.next();
    } catch (err) {
      if (err instanceof ProtocolError) throw refuse('protocol error', err.message);
      throw err;
    }
    const raw = frame.header as { t?: unknown; proto?: unknown };
    if (raw.t === 'auth' && raw.proto !== PROTOCOL_VERSION) {
      throw refuse('protocol version', `client speaks protocol version ${JSON.stringify(raw.proto)}, we speak ${PROTOCOL_VERSION}`);
    }
    let auth: Message;
    try {
      auth = parseMessage(frame.header);
    } catch (err) {
      throw refuse('protocol error', `expected auth: ${(err as Error).message}`);
    }
    if (auth.t !== 'auth') throw refuse('protocol error', `expected auth, got ${auth.t} before authentication`);
    const tr: HandshakeTranscript = {
      serverNonce, clientNonce: auth.nonce, serverHost: opts.host, clientHost: auth.host, serverUuid: opts.uuid, clientUuid: auth.uuid, cipher: auth.cipher,
    };
    const { admission, secret } = checkAuth(opts, tr, auth.mac, auth.kid, refuse);
    const clockUs = opts.clockUs?.() ?? clock.nowMs() * 1000;
    writeFrame(stream, { t: 'welcome', mac: serverMac(secret, tr), clockUs });
    const { sealer, opener } = sessionCodec(deriveSessionKeys(secret, tr, 'server'));
    const decoder = reader.handOver();
    decoder.setOpener(opener);
    return { peerHost: auth.host, peerUuid: auth.uuid, decoder, sealer, admission, keyId: keyId(secret), cipher: tr.cipher };
  } catch (err) {
    reader.detach();
    // A refusal lingers so `refused` reaches the peer; every other failure closes at once.
    if (!(err instanceof HandshakeError && err.refusal !== undefined)) stream.destroy();
    throw asHandshakeError(err);
  }
}

export async function clientHandshake(stream: Duplex, opts: ClientHandshakeOptions): Promise<ClientHandshakeResult> {
  checkOptions(opts);
  const reader = new HandshakeReader(stream, opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS, opts.clock ?? systemClock);
  try {
    const hello = await reader.nextMessage('hello');
    if (opts.expectHost !== undefined && hello.host !== opts.expectHost) {
      throw new HandshakeError(`the server says it is host ${hello.host}, expected ${opts.expectHost}`);
    }
    if (!uuidsCompatible(opts.uuid, hello.uuid)) {
      throw new HandshakeError(`uuid mismatch: server ${hello.host} belongs to cluster ${JSON.stringify(hello.uuid)}, we to ${JSON.stringify(opts.uuid)}`);
    }
    const clientNonce = newNonce();
    const cipher: FrameCipher = opts.encrypt ? 'chacha20-poly1305' : 'hmac-sha256';
    const tr: HandshakeTranscript = {
      serverNonce: hello.nonce, clientNonce, serverHost: hello.host, clientHost: opts.host, serverUuid: hello.uuid, clientUuid: opts.uuid, cipher,
    };
    const kid = keyId(opts.secret);
    writeFrame(stream, { t: 'auth', proto: PROTOCOL_VERSION, host: opts.host, uuid: opts.uuid, nonce: clientNonce, cipher, mac: clientMac(opts.secret, tr), kid });
    const welcome: WelcomeMessage = await reader.nextMessage('welcome', kid);
    if (!macMatches(serverMac(opts.secret, tr), welcome.mac)) {
      throw new HandshakeError(`server ${hello.host} failed to prove it knows the cluster secret (wrong secret, or not the peer we meant to reach)`);
    }
    const { sealer, opener } = sessionCodec(deriveSessionKeys(opts.secret, tr, 'client'));
    const decoder = reader.handOver();
    decoder.setOpener(opener);
    return { peerHost: hello.host, peerUuid: hello.uuid, peerClockUs: welcome.clockUs, decoder, sealer, admission: 'member', keyId: kid, cipher };
  } catch (err) {
    reader.detach();
    stream.destroy();
    throw asHandshakeError(err);
  }
}

/**
 * The server's checks of a parsed auth: the proof of the claimed host's key, the nonce, the
 * uuid, the cipher policy and admission. Returns how the peer is admitted and the secret it
 * proved; throws the refusal.
 */
function checkAuth(
  opts: ServerHandshakeOptions, tr: HandshakeTranscript, mac: string, kid: string | undefined, refuse: (reason: RefusalReason, detail: string) => HandshakeError,
): { admission: 'member' | 'joining' | 'removed'; secret: Buffer } {
  const accepted = opts.acceptSecrets ?? [opts.secret];
  // At most two secrets (a rotation): trying each costs one HMAC more, and the key id the
  // client names is only a hint for the log, never trusted.
  const secret = accepted.find((s) => macMatches(clientMac(s, tr), mac));
  if (secret === undefined) {
    const ids = accepted.map(keyId);
    const rotated = kid !== undefined && !ids.includes(kid)
      ? `: it uses cluster secret key ${kid}, this host accepts ${ids.join(' and ')}; if the secret was rotated (marsadm rotate-secret) while ${tr.clientHost} was away, give it the current /mars/cluster-secret (docs/security.md)`
      : ' (wrong cluster secret or tampered handshake)';
    throw refuse('authentication failed', `client claiming to be ${tr.clientHost} failed authentication${rotated}`);
  }
  if (tr.clientNonce === tr.serverNonce) {
    // Only a reflection of our own hello can produce this; the labels already prevent it
    // from verifying, but a nonce must never be accepted twice in one handshake.
    throw refuse('authentication failed', 'client echoed the server nonce');
  }
  if (!uuidsCompatible(opts.uuid, tr.clientUuid)) {
    throw refuse('uuid mismatch', `client ${tr.clientHost} belongs to cluster ${JSON.stringify(tr.clientUuid)}, we to ${JSON.stringify(opts.uuid)}`);
  }
  if (opts.requireEncryption && tr.cipher !== 'chacha20-poly1305') {
    throw refuse('encryption required', `client ${tr.clientHost} does not encrypt its frames (cipher ${tr.cipher}) and this server requires it`);
  }
  const admission = opts.admitPeer?.(tr.clientHost, tr.clientUuid) ?? { admit: 'member' as const };
  if ('refuse' in admission) throw refuse('not admitted', `client ${tr.clientHost} not admitted: ${admission.refuse}`);
  return { admission: admission.admit, secret };
}

/** What a failed handshake throws: a HandshakeError, except that our own broken invariant stays what it is. */
function asHandshakeError(err: unknown): Error {
  if (err instanceof HandshakeError || err instanceof InvariantError) return err;
  return new HandshakeError(`handshake failed: ${(err as Error).message}`);
}

function checkOptions(opts: HandshakeOptions): void {
  assert(hostNameSchema.safeParse(opts.host).success, `invalid own host name ${JSON.stringify(opts.host)}`);
  assert(uuidSchema.safeParse(opts.uuid).success, `invalid own cluster uuid ${JSON.stringify(opts.uuid)}`);
  assert(Buffer.isBuffer(opts.secret) && opts.secret.length >= MIN_SECRET_BYTES, 'cluster secret missing or too short');
  const accepted = (opts as ServerHandshakeOptions).acceptSecrets;
  assert(accepted === undefined || (accepted.length >= 1 && accepted.length <= 2 && accepted.every((s) => s.length >= MIN_SECRET_BYTES)), 'one or two accepted secrets, each long enough');
}

function writeFrame(stream: Duplex, message: Message): void {
  for (const buf of encodeFrame(validateOutgoing(message))) stream.write(buf);
}

/**
 * Send `refused`, stop reading, and close the stream; returns the error for the caller to throw.
 * Nothing else the peer sent is looked at.
 */
function refuseAndClose(stream: Duplex, reader: HandshakeReader, clock: Clock, reason: RefusalReason, detail: string): HandshakeError {
  reader.detach();
  if (!stream.destroyed && stream.writable) {
    writeFrame(stream, { t: 'refused', reason });
    stream.end();
    const linger = clock.setTimeout(() => stream.destroy(), REFUSAL_LINGER_MS);
    stream.once('close', () => linger.cancel()); // a peer that closes promptly leaves no timer behind
  } else {
    stream.destroy();
  }
  return new HandshakeError(detail, reason);
}

/** Reads handshake frames one at a time with a deadline for the whole handshake. */
class HandshakeReader {
  private readonly decoder = new FrameDecoder({ maxHeaderBytes: HANDSHAKE_MAX_HEADER_BYTES, maxPayloadBytes: 0 });
  private failure: Error | undefined;
  private wake: (() => void) | undefined;
  private readonly timer: Timer;
  private attached = true;

  private readonly onData = (chunk: Buffer | string) => {
    try {
      this.decoder.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    } catch (err) {
      this.fail(err as Error);
    }
    this.wake?.();
  };
  private readonly onEnd = () => this.fail(new HandshakeError('the peer closed the connection during the handshake'));
  private readonly onError = (err: Error) => this.fail(new HandshakeError(`connection error during the handshake: ${err.message}`));

  constructor(private readonly stream: Duplex, timeoutMs: number, clock: Clock) {
    assert(Number.isSafeInteger(timeoutMs) && timeoutMs > 0, `bad handshake timeout ${timeoutMs}`);
    // Cancelled in detach(), which every end of a handshake reaches.
    this.timer = clock.setTimeout(() => {
      this.fail(new HandshakeError(`handshake timed out after ${timeoutMs} ms`));
      stream.destroy();
    }, timeoutMs);
    stream.on('data', this.onData);
    stream.on('end', this.onEnd);
    stream.on('close', this.onEnd);
    stream.on('error', this.onError);
    if (stream.destroyed) this.onEnd();
  }

  async next(): Promise<Frame> {
    for (;;) {
      // Frames already received come first: a `refused` is usually followed at once by the end
      // of the stream, and the reason is worth more than "connection closed".
      const frame = this.decoder.next(); // throws ProtocolError on garbage
      if (frame) return frame;
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }

  /** The next frame, which must be a valid message of type `t`; `refused` becomes an error. */
  async nextMessage<T extends 'hello' | 'welcome'>(t: T, kid?: string): Promise<Extract<Message, { t: T }>> {
    const frame = await this.next();
    const raw = frame.header as { t?: unknown; proto?: unknown };
    if (t === 'hello' && raw.t === 'hello' && raw.proto !== PROTOCOL_VERSION) {
      throw new HandshakeError(`the server speaks protocol version ${JSON.stringify(raw.proto)}, we speak ${PROTOCOL_VERSION}`);
    }
    const message = parseMessage(frame.header);
    if (message.t === 'refused') {
      // The one refusal an operator fixes by hand after a rotation missed this host: name the key.
      const hint = message.reason === 'authentication failed' && kid !== undefined
        ? ` (we use cluster secret key ${kid}; if the secret was rotated while this host was away, copy /mars/cluster-secret from a current member, docs/security.md)`
        : '';
      throw new HandshakeError(`the server refused the connection: ${message.reason}${hint}`, message.reason);
    }
    if (message.t !== t) throw new HandshakeError(`expected ${t} from the server, got ${message.t}`);
    return message as Extract<Message, { t: T }>;
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.wake?.();
  }

  /** Stop reading; the decoder keeps what was already received. */
  detach(): void {
    if (!this.attached) return;
    this.attached = false;
    this.timer.cancel();
    this.stream.off('data', this.onData);
    this.stream.off('end', this.onEnd);
    this.stream.off('close', this.onEnd);
    this.stream.off('error', this.onError);
    this.stream.pause();
    // A late error must not become an uncaught exception before the next owner listens.
    if (this.stream.listenerCount('error') === 0) this.stream.on('error', ignoreError);
  }

  handOver(): FrameDecoder {
    this.detach();
    this.decoder.setLimits(DEFAULT_FRAME_LIMITS);
    return this.decoder;
  }
}

function ignoreError(): void {
  // Errors after a handover or refusal surface as 'close' to whoever owns the stream next.
}
