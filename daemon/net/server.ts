// The listening side of the peer protocol: accepts TCP (optionally TLS) connections, Unix
// socket connections (the relays of `marsd --stdio` behind SSH) and duplexes handed to it,
// authenticates each with the handshake and serves it with a server-role PeerConnection.
//
// Isolation: every connection has its own handshake deadline, limits and error handling, so a
// bad or hostile peer only ever loses its own connection. Unauthenticated connections are
// capped in total and per source address (handshake-slots.ts), separately from the members'
// authenticated connections, and the TCP listener and the Unix socket have separate pools, so
// idle sockets cannot lock members out. Refusals are logged rate-limited (refusal-log.ts).
// The replies owed to all peers share one memory budget (budget.ts).
// A failure on the accept path is logged and costs only that connection, unless it is a broken
// invariant of ours: that stops marsd (failStopOnInvariant).
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { assert, failStopOnInvariant } from '../../common/util/assert.js';
import type { Clock } from '../../common/util/clock.js';
import { hostNameSchema } from '../../common/tree/names.js';
import { normalizeSecret } from './auth.js';
import { acceptedSecrets, keyId, type SecretRing } from '../../common/cluster/secret-ring.js';
import { PeerConnection, type PeerHandlers } from './connection.js';
import type { LogLevel } from '../../common/util/log.js';
import { DEFAULT_HANDSHAKE_TIMEOUT_MS, HandshakeError, serverHandshake, type PeerAdmission } from './handshake.js';
import { DEFAULT_MAX_HANDSHAKES, DEFAULT_MAX_HANDSHAKES_PER_ADDRESS, HandshakeSlots, type Slot } from './handshake-slots.js';
import { RefusalLog } from './refusal-log.js';
import { ByteBudget, ConnectionBudget, DEFAULT_CONNECTION_BUDGET_BYTES, DEFAULT_TOTAL_BUDGET_BYTES } from './budget.js';
import { systemClock } from '../../common/util/clock.js';
import { formatAddress, parseAddress } from './dial.js';
import { listenPrivateUnix, type PrivateSocket } from '../../common/util/unix-socket.js';

/** Authenticated connections per listener kind (TCP, Unix socket). */
export const DEFAULT_MAX_CONNECTIONS = 64;

type ListenerKind = 'tcp' | 'unix';

export interface PeerServerOptions {
  host: string;
  /** This host's cluster uuid, or ANY_UUID while joining (see setUuid). */
  uuid: string;
  /** The cluster secret: hex text as in the secret file, or the raw key bytes. */
  secret: Buffer | string;
  handlers: PeerHandlers;
  log: (level: LogLevel, msg: string) => void;
  tls?: { certFile: string; keyFile: string };
  /** Authenticated connections per listener kind. */
  maxConnections?: number;
  /** Connections in the handshake per listener kind, and per source address. */
  maxHandshakes?: number;
  maxHandshakesPerAddress?: number;
  /** Memory for the replies owed to all peers together, and to one connection. */
  totalReplyBudgetBytes?: number;
  connectionReplyBudgetBytes?: number;
  /** The interval of the refusal summary lines. */
  refusalLogIntervalMs?: number;
  /** Refuse clients that do not encrypt their frames. */
  requireEncryption?: boolean;
  handshakeTimeoutMs?: number;
  keepaliveMs?: number;
  idleTimeoutMs?: number;
  maxConcurrentRequests?: number;
  /** The Lamport clock sent in `welcome`. */
  clockUs?: () => number;
  /** Admission of authenticated peers by host name and uuid (the daemon: daemon/net/admission.ts). */
  admitPeer?: (host: string, uuid: string) => PeerAdmission;
  /** Called for every authenticated connection (the daemon tracks who is connected). */
  onConnection?: (conn: PeerConnection) => void;
  /** Time and timers of the handshakes and connections (default: the system clock). */
  clock?: Clock;
}

export class PeerServer {
  private secret: Buffer;
  /** Every secret a client may prove: the secret alone, or two during a rotation (setSecretRing). */
  private accepted: Buffer[];
  /** The key id each connection was authenticated with. */
  private readonly connectionKeys = new Map<PeerConnection, string>();
  private uuid: string;
  private readonly listeners = new Set<net.Server>();
  /** Socket files of listenUnix, removed on close. */
  private readonly unixSockets: PrivateSocket[] = [];
  /** Streams in the handshake. */
  private readonly handshaking = new Set<Duplex>();
  private readonly connections = new Set<PeerConnection>();
  private readonly maxConnections: number;
  private readonly slots: Record<ListenerKind, HandshakeSlots>;
  private readonly members: Record<ListenerKind, number> = { tcp: 0, unix: 0 };
  private readonly refusals: RefusalLog;
  private readonly replyBudget: ByteBudget;
  private closing = false;

  constructor(private readonly opts: PeerServerOptions) {
    assert(hostNameSchema.safeParse(opts.host).success, `invalid host name ${JSON.stringify(opts.host)}`);
    this.secret = normalizeSecret(opts.secret);
    this.accepted = [this.secret];
    this.uuid = opts.uuid;
    this.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    assert(this.maxConnections >= 1, 'maxConnections must be at least 1');
    const newSlots = () => new HandshakeSlots(opts.maxHandshakes ?? DEFAULT_MAX_HANDSHAKES, opts.maxHandshakesPerAddress ?? DEFAULT_MAX_HANDSHAKES_PER_ADDRESS);
    this.slots = { tcp: newSlots(), unix: newSlots() };
    this.refusals = new RefusalLog(opts.log, opts.clock ?? systemClock, opts.refusalLogIntervalMs);
    this.replyBudget = new ByteBudget(opts.totalReplyBudgetBytes ?? DEFAULT_TOTAL_BUDGET_BYTES);
  }

  /**
   * Take the secrets of a rotation phase (secret-ring.ts): new handshakes prove one of them,
   * and connections authenticated with a secret no longer accepted are closed (their peer
   * reconnects with its current secret, or is refused).
   */
  setSecretRing(ring: SecretRing): void {
    this.secret = Buffer.from(ring.dial);
    this.accepted = acceptedSecrets(ring).map((s) => Buffer.from(s));
    const ids = new Set(this.accepted.map(keyId));
    for (const [conn, id] of this.connectionKeys) {
      if (!ids.has(id)) conn.close(`its cluster secret (key ${id}) was retired by a rotation`);
    }
  }

  /** Refused connections so far (each is logged rate-limited, not one line per refusal). */
  get refusalCount(): number {
    return this.refusals.total;
  }

  /** Bytes of replies currently reserved, over all connections. */
  get replyBytesReserved(): number {
    return this.replyBudget.used;
  }

  /** Authenticated connections. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Connections still in the handshake. */
  get handshakeCount(): number {
    return this.slots.tcp.size + this.slots.unix.size;
  }

  /** A snapshot of the authenticated connections. */
  openConnections(): PeerConnection[] {
    return [...this.connections];
  }

  /** Change the uuid answered in new handshakes (a joining host learns the cluster's). */
  setUuid(uuid: string): void {
    this.uuid = uuid;
  }

  /** Listen on `ADDR:PORT` (IPv4, or [IPv6]:PORT); port 0 picks a free one. Returns the bound address. */
  async listen(address: string): Promise<{ address: string; port: number }> {
    assert(!this.closing, 'PeerServer.listen after close()');
    const { host, port } = parseAddress(address, { allowPortZero: true, allowHostName: false });
    const server = this.opts.tls ? this.createTlsServer(this.opts.tls) : net.createServer((socket) => this.accept(socket, 'tcp'));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.opts.log('error', `peer listener ${address}: ${err.message}`));
    this.listeners.add(server);
    const bound = server.address() as net.AddressInfo;
    this.opts.log('info', `peer server listening on ${formatAddress(bound.address, bound.port)}${this.opts.tls ? ' (TLS)' : ''}`);
    return { address: bound.address, port: bound.port };
  }

  /**
   * Listen on a Unix socket (mode 0600) for `marsd --stdio` relays, i.e. peers that come in
   * through SSH: the protocol state stays in this one server. Always plain (SSH encrypts, and
   * TLS on a local socket would add nothing); the same handshake admits every peer. A stale
   * socket of a killed daemon is replaced; one that another process serves is an error.
   */
  async listenUnix(path: string): Promise<void> {
    assert(!this.closing, 'PeerServer.listenUnix after close()');
    const server = net.createServer((socket) => this.accept(socket, 'unix', 'stdio relay'));
    const socketFile = await listenPrivateUnix(server, path);
    if (this.closing) {
      // close() ran while we were binding: it cannot have seen this listener.
      server.close();
      socketFile.unlink();
      throw new Error('the peer server closed while listening on its socket');
    }
    server.on('error', (err) => this.opts.log('error', `peer listener ${path}: ${err.message}`));
    this.listeners.add(server);
    this.unixSockets.push(socketFile);
    this.opts.log('info', `peer server listening on ${path} (for marsd --stdio)`);
  }

  /**
   * Serve one peer over an already connected duplex, e.g. stdin/stdout of `marsd --stdio`
   * (see dial.duplexFromPair). Resolves with the connection once authenticated; rejects with
   * the handshake error (which is also logged).
   */
  async serveDuplex(duplex: Duplex, label: string): Promise<PeerConnection> {
    assert(!this.closing, 'PeerServer.serveDuplex after close()');
    const slot: Slot = { address: label, evict: () => duplex.destroy() };
    const decision = this.slots.unix.acquire(slot);
    if (!decision.ok) {
      duplex.destroy();
      throw new HandshakeError(`refused: ${decision.why}`);
    }
    return this.handle(duplex, label, 'unix', slot);
  }

  /** Stop listening and close every connection. */
  async close(): Promise<void> {
    this.closing = true;
    this.refusals.close();
    const closes = [...this.listeners].map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
    this.listeners.clear();
    for (const stream of this.handshaking) stream.destroy();
    for (const conn of this.connections) conn.close('server shutting down');
    // Before awaiting: a relay started now must find no socket rather than a dying server.
    for (const socketFile of this.unixSockets.splice(0)) socketFile.unlink();
    await Promise.all(closes);
  }

  private createTlsServer(files: { certFile: string; keyFile: string }): tls.Server {
    const server = tls.createServer(
      {
        cert: readFileSync(files.certFile),
        key: readFileSync(files.keyFile),
        handshakeTimeout: this.opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
        minVersion: 'TLSv1.2',
      },
      (socket) => this.accept(socket, 'tcp'),
    );
    server.on('tlsClientError', (err, socket) => {
      this.refusals.note('failed TLS handshake', `peer ${remoteLabel(socket)}: TLS handshake failed: ${err.message}`);
    });
    return server;
  }

  private accept(socket: net.Socket, kind: ListenerKind, localLabel?: string): void {
    const label = localLabel ?? remoteLabel(socket);
    if (this.closing) {
      socket.destroy();
      return;
    }
    const slot: Slot = { address: kind === 'unix' ? 'peer.sock' : socket.remoteAddress ?? 'unknown address', evict: () => socket.destroy() };
    const decision = this.slots[kind].acquire(slot);
    if (!decision.ok) {
      this.refusals.note('over the handshake cap', `peer ${label}: refused: ${decision.why}`);
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    this.handle(socket, label, kind, slot).catch((err: Error) => {
      // A failed handshake is logged in handle(); anything else is unexpected, an invariant fatal.
      failStopOnInvariant(err);
      if (!(err instanceof HandshakeError)) this.opts.log('error', `peer ${label}: ${err.stack ?? err.message}`);
    });
  }

  /** Handshake and serve. A failed handshake is logged (rate-limited) and rethrown as HandshakeError. */
  private async handle(stream: Duplex, label: string, kind: ListenerKind, slot: Slot): Promise<PeerConnection> {
    this.handshaking.add(stream);
    let result;
    try {
      result = await serverHandshake(stream, {
        host: this.opts.host,
        uuid: this.uuid,
        secret: this.secret,
        acceptSecrets: this.accepted,
        handshakeTimeoutMs: this.opts.handshakeTimeoutMs,
        clockUs: this.opts.clockUs,
        // The member cap is checked before welcome, so the peer hears a refusal, not a close.
        admitPeer: (peerHost, peerUuid) => (this.members[kind] >= this.maxConnections
          ? { refuse: `refused, already ${this.maxConnections} connections` }
          : this.opts.admitPeer?.(peerHost, peerUuid) ?? { admit: 'member' }),
        ...(this.opts.requireEncryption ? { requireEncryption: true } : {}),
        ...(this.opts.clock !== undefined ? { clock: this.opts.clock } : {}),
      });
    } catch (err) {
      const refusal = err instanceof HandshakeError && err.refusal ? ` (refused: ${err.refusal})` : '';
      this.refusals.note(err instanceof HandshakeError && err.refusal ? err.refusal : 'failed handshake', `peer ${label}: handshake failed: ${(err as Error).message}${refusal}`);
      throw err;
    } finally {
      this.handshaking.delete(stream);
      this.slots[kind].release(slot);
    }
    if (this.closing) {
      stream.destroy();
      throw new HandshakeError('the server is shutting down');
    }
    return this.serve(stream, label, kind, result);
  }

  private serve(stream: Duplex, label: string, kind: ListenerKind, result: Awaited<ReturnType<typeof serverHandshake>>): PeerConnection {
    const conn = new PeerConnection({
      stream,
      decoder: result.decoder,
      sealer: result.sealer,
      role: 'server',
      peerHost: result.peerHost,
      peerUuid: result.peerUuid,
      label,
      handlers: this.opts.handlers,
      log: this.opts.log,
      keepaliveMs: this.opts.keepaliveMs,
      idleTimeoutMs: this.opts.idleTimeoutMs,
      maxConcurrentRequests: this.opts.maxConcurrentRequests,
      budget: new ConnectionBudget(this.replyBudget, this.opts.connectionReplyBudgetBytes ?? DEFAULT_CONNECTION_BUDGET_BYTES),
      ...(result.admission !== 'member' ? { restricted: result.admission } : {}),
      session: { keyId: result.keyId, cipher: result.cipher },
      ...(this.opts.clock !== undefined ? { clock: this.opts.clock } : {}),
    });
    this.connections.add(conn);
    this.connectionKeys.set(conn, result.keyId);
    this.members[kind] += 1;
    conn.once('close', (reason: string) => {
      this.connections.delete(conn);
      this.connectionKeys.delete(conn);
      this.members[kind] -= 1;
      this.opts.log('info', `peer ${conn.label} disconnected: ${reason}`);
    });
    this.opts.log('info', `peer ${result.peerHost} connected from ${label}${result.admission === 'joining' ? ' (joining the cluster)' : result.admission === 'removed' ? ' (removed from the cluster: served tree reads only)' : ''}`);
    this.opts.onConnection?.(conn);
    return conn;
  }
}

function remoteLabel(socket: net.Socket): string {
  return socket.remoteAddress !== undefined && socket.remotePort !== undefined
    ? formatAddress(socket.remoteAddress, socket.remotePort)
    : 'unknown address';
}
