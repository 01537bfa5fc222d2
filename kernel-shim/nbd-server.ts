// The NBD server: exports BlockBackends over Unix sockets (one socket per export) and optionally
// TCP. Fixed newstyle handshake only, simple replies only, requests processed concurrently
// (pipelined) with replies sent as each completes. docs/nbd.md describes the export as built.
//
// Robustness rules: a hostile or broken client can only lose its own connection. Every backend
// promise is handled (no unhandled rejections); per-connection memory is bounded (in-flight
// requests, buffered payload and reply bytes: the socket is paused above the limits); the
// handshake has a deadline; garbage closes the connection with one log line.
import { unlinkSync, chmodSync } from 'node:fs';
import net from 'node:net';
import { assert } from '../common/util/assert.js';
import { removeStaleSocket } from '../common/util/unix-socket.js';
import { BackendError, type BlockBackend } from './backend.js';
import * as P from './nbd-protocol.js';
import type { LogLevel } from '../common/util/log.js';


/** Advertised block size constraints (NBD_INFO_BLOCK_SIZE) and enforced limits. */
export const MIN_BLOCK_SIZE = 512;
export const PREFERRED_BLOCK_SIZE = 4096;
export const MAX_PAYLOAD_BYTES = 32 * 1024 * 1024;
/** Longest option payload accepted during the handshake; longer ones close the connection. */
export const MAX_OPTION_BYTES = 64 * 1024;

export const HANDSHAKE_FLAGS = P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES;
/**
 * Sent for every export. FLUSH/FUA: durability is the backend's. FAST_ZERO: a WRITE_ZEROES
 * with NBD_CMD_FLAG_FAST_ZERO fails at once with ENOTSUP (allowed by the spec; our zeroing is
 * not faster than writing). CAN_MULTI_CONN: backend flush is global, so a FLUSH on one
 * connection covers writes acknowledged on every connection.
 */
export const TRANSMISSION_FLAGS =
  P.NBD_FLAG_HAS_FLAGS |
  P.NBD_FLAG_SEND_FLUSH |
  P.NBD_FLAG_SEND_FUA |
  P.NBD_FLAG_SEND_TRIM |
  P.NBD_FLAG_SEND_WRITE_ZEROES |
  P.NBD_FLAG_CAN_MULTI_CONN |
  P.NBD_FLAG_SEND_FAST_ZERO;

export interface NbdServerOptions {
  log: (level: LogLevel, msg: string) => void;
  /** Called when the number of connections in transmission phase on an export changes. */
  onOpenCountChange?: (name: string, count: number) => void;
  /** A connection that has not entered transmission phase by then is closed. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** Reading from a connection pauses at this many requests in flight. Default 256. */
  maxInFlightRequests?: number;
  /** Reading pauses when in-flight payload + unsent reply bytes reach this. Default 64 MiB. */
  maxBufferedBytes?: number;
  /** removeExport()/close() destroy connections whose requests take longer. Default 30 s. */
  shutdownGraceMs?: number;
}

export interface ExportOptions {
  socketPath: string;
  description?: string;
}

export interface NbdServerStats {
  /** open connections, handshake phase included */
  connections: number;
  requests: number;
  peakInFlightRequests: number;
  peakBufferedBytes: number;
  backpressurePauses: number;
  /** connections closed because of a protocol violation */
  protocolErrors: number;
}

interface ExportEntry {
  name: string;
  backend: BlockBackend;
  description: string | undefined;
  socketPath: string;
  listener: net.Server;
  /** connections in transmission phase on this export (Unix or TCP) */
  connections: Set<Connection>;
  removing: boolean;
  /** stopListening(): no new connections, the open ones keep being served */
  listenerClosed: boolean;
}

const MAX_LOGGED_BACKEND_ERRORS = 10;

export class NbdServer {
  private readonly exports = new Map<string, ExportEntry>();
  private readonly allConnections = new Set<Connection>();
  private tcpListener: net.Server | null = null;
  private nextConnectionId = 1;
  private closing = false;
  readonly handshakeTimeoutMs: number;
  readonly maxInFlightRequests: number;
  readonly maxBufferedBytes: number;
  readonly shutdownGraceMs: number;
  /** @internal counters updated by connections */
  readonly counters: Omit<NbdServerStats, 'connections'> = {
    requests: 0,
    peakInFlightRequests: 0,
    peakBufferedBytes: 0,
    backpressurePauses: 0,
    protocolErrors: 0,
  };

  constructor(private readonly options: NbdServerOptions) {
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? 10_000;
    this.maxInFlightRequests = options.maxInFlightRequests ?? 256;
    this.maxBufferedBytes = options.maxBufferedBytes ?? 64 * 1024 * 1024;
    this.shutdownGraceMs = options.shutdownGraceMs ?? 30_000;
    assert(this.maxInFlightRequests >= 1, 'maxInFlightRequests must be at least 1');
    assert(this.maxBufferedBytes >= MIN_BLOCK_SIZE, 'maxBufferedBytes too small');
  }

  /** Starts serving `backend` as export `name` on a Unix socket (a stale socket file is removed). */
  async addExport(name: string, backend: BlockBackend, opts: ExportOptions): Promise<void> {
    assert(!this.closing, 'NbdServer.addExport after close()');
    const nameBytes = Buffer.byteLength(name, 'utf8');
    assert(nameBytes > 0 && nameBytes <= P.MAX_STRING_BYTES && !name.includes('\0'), `invalid export name ${JSON.stringify(name)}`);
    assert(!this.exports.has(name), `export ${name} already exists`);
    assert(Number.isSafeInteger(backend.sizeBytes) && backend.sizeBytes >= 0, `export ${name}: bad size ${backend.sizeBytes}`);
    if (opts.description !== undefined) {
      assert(Buffer.byteLength(opts.description, 'utf8') <= P.MAX_STRING_BYTES, `export ${name}: description too long`);
    }
    if (backend.sizeBytes % MIN_BLOCK_SIZE !== 0) {
      this.log('warn', `export ${name}: size ${backend.sizeBytes} is not a multiple of ${MIN_BLOCK_SIZE}; the last ${backend.sizeBytes % MIN_BLOCK_SIZE} bytes are not accessible`);
    }
    await removeStaleSocket(opts.socketPath);

    const listener = net.createServer({ allowHalfOpen: true, pauseOnConnect: false });
    const entry: ExportEntry = {
      name,
      backend,
      description: opts.description,
      socketPath: opts.socketPath,
      listener,
      connections: new Set(),
      removing: false,
      listenerClosed: false,
    };
    listener.on('connection', (socket) => this.accept(socket, entry));
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(new Error(`export ${name}: cannot listen on ${opts.socketPath}: ${err.message}`));
      listener.once('error', onError);
      listener.listen(opts.socketPath, () => {
        listener.off('error', onError);
        resolve();
      });
    });
    listener.on('error', (err) => this.log('error', `export ${name}: listener error: ${err.message}`));
    try {
      chmodSync(opts.socketPath, 0o600); // the block device is root's business
    } catch (err) {
      this.log('warn', `export ${name}: cannot chmod ${opts.socketPath}: ${(err as Error).message}`);
    }
    if (this.closing || this.exports.has(name)) {
      listener.close();
      throw new Error(`export ${name}: server closed or export added twice while listening`);
    }
    this.exports.set(name, entry);
    this.log('info', `export ${name}: serving ${backend.sizeBytes} bytes on ${opts.socketPath}`);
  }

  /**
   * Stops offering the export: the listener closes and the socket file is removed at once,
   * connections still in handshake are dropped, requests already in flight are answered,
   * later requests get ESHUTDOWN, and each connection is closed once it has nothing in flight.
   * Resolves when every connection of the export is closed (forcibly after shutdownGraceMs).
   * No backend call is started for this export after removeExport() returns.
   */
  /**
   * Stop offering the export to new clients (socket removed, handshakes in progress dropped)
   * while connections already open keep being served: a primary that steps down answers their
   * writes with EPERM instead of cutting them off. removeExport() finishes the job.
   */
  stopListening(name: string): void {
    const entry = this.exports.get(name);
    if (!entry || entry.listenerClosed) return;
    entry.listenerClosed = true;
    entry.listener.close();
    try {
      unlinkSync(entry.socketPath); // synchronously: a new export may reuse the path right after
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log('warn', `export ${name}: cannot remove ${entry.socketPath}: ${(err as Error).message}`);
    }
    for (const conn of this.allConnections) {
      if (conn.homeExport === entry && conn.export === null) conn.destroy('export closed during handshake');
    }
    this.log('info', `export ${name}: no longer accepting connections (${entry.connections.size} still open)`);
  }

  async removeExport(name: string): Promise<void> {
    const entry = this.exports.get(name);
    if (!entry) return;
    this.stopListening(name);
    this.exports.delete(name);
    entry.removing = true;
    const closed = [...entry.connections].map((conn) => {
      conn.beginShutdown();
      return conn.closed;
    });
    if (closed.length > 0) {
      this.log('info', `export ${name}: removed; waiting for ${closed.length} connection(s) to finish their requests`);
      await this.withGrace(Promise.all(closed), () => {
        for (const conn of entry.connections) conn.destroy(`requests still running ${this.shutdownGraceMs} ms after removeExport`);
      });
    }
    this.log('info', `export ${name}: removed`);
  }

  hasExport(name: string): boolean {
    return this.exports.has(name);
  }

  /** Connections of the export in transmission phase (the open count). */
  connectionCount(name: string): number {
    return this.exports.get(name)?.connections.size ?? 0;
  }

  stats(): NbdServerStats {
    return { ...this.counters, connections: this.allConnections.size };
  }

  /** Additionally serves all exports by name over TCP. Resolves to the bound port. */
  async listenTcp(port: number, host = '127.0.0.1'): Promise<number> {
    assert(!this.closing, 'NbdServer.listenTcp after close()');
    assert(this.tcpListener === null, 'NbdServer.listenTcp called twice');
    const listener = net.createServer({ allowHalfOpen: true, noDelay: true });
    listener.on('connection', (socket) => this.accept(socket, null));
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(new Error(`cannot listen on TCP ${host}:${port}: ${err.message}`));
      listener.once('error', onError);
      listener.listen(port, host, () => {
        listener.off('error', onError);
        resolve();
      });
    });
    listener.on('error', (err) => this.log('error', `TCP listener error: ${err.message}`));
    this.tcpListener = listener;
    const address = listener.address();
    assert(address !== null && typeof address === 'object', 'TCP listener has no address');
    this.log('info', `serving all exports on TCP ${host}:${address.port}`);
    return address.port;
  }

  /** Removes every export (see removeExport) and stops the TCP listener. */
  async close(): Promise<void> {
    this.closing = true;
    this.tcpListener?.close();
    this.tcpListener = null;
    for (const conn of this.allConnections) {
      if (conn.export === null) conn.destroy('server closing');
    }
    await Promise.all([...this.exports.keys()].map((name) => this.removeExport(name)));
    const rest = [...this.allConnections].map((c) => c.closed);
    await this.withGrace(Promise.all(rest), () => {
      for (const conn of this.allConnections) conn.destroy('server closing');
    });
  }

  // ---- internal, used by Connection --------------------------------------------------------

  /** @internal */
  log(level: LogLevel, msg: string): void {
    try {
      this.options.log(level, msg);
    } catch {
      // a broken log hook must not take the server down
    }
  }

  /** @internal exports a connection may open: its socket's export, or all of them over TCP */
  visibleExports(home: ExportEntry | null): ExportEntry[] {
    if (home) return home.removing || home.listenerClosed ? [] : [home];
    return [...this.exports.values()].filter((e) => !e.listenerClosed);
  }

  /** @internal '' means the socket's own export */
  lookupExport(home: ExportEntry | null, name: string): ExportEntry | null {
    if (home) return !home.removing && !home.listenerClosed && (name === '' || name === home.name) ? home : null;
    const entry = this.exports.get(name);
    return entry && !entry.listenerClosed ? entry : null;
  }

  /** @internal */
  connectionEntered(conn: Connection, entry: ExportEntry): void {
    entry.connections.add(conn);
    this.notifyOpenCount(entry);
  }

  /** @internal */
  connectionClosed(conn: Connection): void {
    this.allConnections.delete(conn);
    const entry = conn.export;
    if (entry && entry.connections.delete(conn)) this.notifyOpenCount(entry);
  }

  private notifyOpenCount(entry: ExportEntry): void {
    try {
      this.options.onOpenCountChange?.(entry.name, entry.connections.size);
    } catch (err) {
      this.log('error', `export ${entry.name}: onOpenCountChange failed: ${(err as Error).message}`);
    }
  }

  private accept(socket: net.Socket, home: ExportEntry | null): void {
    if (this.closing || home?.removing || home?.listenerClosed) {
      socket.destroy();
      return;
    }
    if (!home) socket.setNoDelay(true);
    const id = this.nextConnectionId++;
    const label = home ? `export ${home.name} connection #${id}` : `TCP ${socket.remoteAddress}:${socket.remotePort} connection #${id}`;
    const conn = new Connection(this, socket, home, label);
    this.allConnections.add(conn);
    conn.start();
  }

  private async withGrace(done: Promise<unknown>, onTimeout: () => void): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.shutdownGraceMs);
    });
    const result = await Promise.race([done.then(() => 'done' as const), timeout]);
    clearTimeout(timer);
    if (result === 'timeout') {
      onTimeout();
      await done;
    }
  }
}

type Phase = 'flags' | 'options' | 'transmission' | 'draining' | 'closed';

interface PendingWrite {
  handleHi: number;
  handleLo: number;
  offset: number;
  fua: boolean;
}

class Connection {
  export: ExportEntry | null = null;
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private phase: Phase = 'flags';
  private noZeroes = false;
  private handshakeTimer: NodeJS.Timeout | null = null;
  private hsBuf: Buffer = Buffer.alloc(0);
  // transmission parsing state
  private readonly hdr = Buffer.allocUnsafe(P.REQUEST_HEADER_BYTES);
  private hdrFill = 0;
  private payload: Buffer | null = null;
  private payloadFill = 0;
  private pendingWrite: PendingWrite | null = null;
  private skipBytes = 0;
  private stash: Buffer | null = null;
  private pausedForLimits = false;
  private inFlight = 0;
  private inFlightBytes = 0;
  private corked = false;
  private shuttingDown = false;
  private backendErrorsLogged = 0;
  private loggedBadCommand = false;

  constructor(
    private readonly server: NbdServer,
    private readonly socket: net.Socket,
    readonly homeExport: ExportEntry | null,
    private readonly label: string,
  ) {
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
  }

  start(): void {
    const s = this.socket;
    s.on('data', (chunk: Buffer) => this.onData(chunk));
    s.on('end', () => this.onEnd());
    s.on('drain', () => this.maybeResume());
    s.on('error', (err: NodeJS.ErrnoException) => {
      if (this.phase !== 'closed') this.server.log('info', `nbd ${this.label}: ${err.code ?? err.message}; closing`);
      this.destroy();
    });
    s.on('close', () => this.onClose());
    this.handshakeTimer = setTimeout(() => {
      this.protocolError(`handshake not completed within ${this.server.handshakeTimeoutMs} ms`);
    }, this.server.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    s.write(P.encodeServerGreeting(HANDSHAKE_FLAGS));
  }

  /** The export is being removed: answer in-flight requests, then close. */
  beginShutdown(): void {
    this.shuttingDown = true;
    this.maybeFinish();
  }

  destroy(reason?: string): void {
    if (reason && this.phase !== 'closed') this.server.log('info', `nbd ${this.label}: ${reason}; closing`);
    this.phase = 'closed';
    this.clearHandshakeTimer();
    this.socket.destroy();
  }

  // ---- input ---------------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    try {
      this.onDataUnguarded(chunk);
    } catch (err) {
      // A bug (or a throwing backend getter) costs this connection, never the process.
      this.server.log('error', `nbd ${this.label}: internal error: ${err instanceof Error ? err.stack ?? err.message : String(err)}; closing the connection`);
      this.destroy();
    }
  }

  private onDataUnguarded(chunk: Buffer): void {
    switch (this.phase) {
      case 'flags':
      case 'options':
        this.onHandshakeData(chunk);
        return;
      case 'transmission':
        if (this.stash) {
          // pause() took effect after this chunk was read; keep it behind the stash
          this.stash = Buffer.concat([this.stash, chunk]);
          return;
        }
        this.processRequests(chunk, 0);
        return;
      default:
        return; // draining or closed: the client must not send more; ignore it
    }
  }

  private onEnd(): void {
    // The client half-closed: answer what is in flight, then close.
    if (this.phase === 'transmission') {
      this.phase = 'draining';
      this.maybeFinish();
    } else if (this.phase !== 'draining') {
      this.destroy();
    }
  }

  private onClose(): void {
    this.phase = 'closed';
    this.clearHandshakeTimer();
    this.payload = null;
    this.stash = null;
    this.server.connectionClosed(this);
    this.resolveClosed();
  }

  // ---- handshake -----------------------------------------------------------------------------

  private onHandshakeData(chunk: Buffer): void {
    this.hsBuf = this.hsBuf.length === 0 ? chunk : Buffer.concat([this.hsBuf, chunk]);
    let pos = 0;
    while (this.phase === 'flags' || this.phase === 'options') {
      const buf = this.hsBuf;
      if (this.phase === 'flags') {
        if (buf.length - pos < P.CLIENT_FLAGS_BYTES) break;
        const flags = P.decodeClientFlags(buf, pos);
        pos += P.CLIENT_FLAGS_BYTES;
        if ((flags & P.NBD_FLAG_C_FIXED_NEWSTYLE) === 0 || (flags & ~HANDSHAKE_FLAGS) !== 0) {
          this.protocolError(`bad client flags 0x${flags.toString(16)} (fixed newstyle is required)`);
          return;
        }
        this.noZeroes = (flags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
        this.phase = 'options';
        continue;
      }
      if (buf.length - pos < P.OPTION_HEADER_BYTES) break;
      const h = P.decodeOptionHeader(buf, pos);
      if (!h.magicOk) {
        this.protocolError('bad option magic');
        return;
      }
      if (h.length > MAX_OPTION_BYTES) {
        this.protocolError(`${P.optionName(h.option)} with ${h.length} bytes of data (limit ${MAX_OPTION_BYTES})`);
        return;
      }
      if (buf.length - pos < P.OPTION_HEADER_BYTES + h.length) break;
      const data = buf.subarray(pos + P.OPTION_HEADER_BYTES, pos + P.OPTION_HEADER_BYTES + h.length);
      pos += P.OPTION_HEADER_BYTES + h.length;
      this.handleOption(h.option, data);
      if (this.socket.writableLength > 1024 * 1024) {
        this.protocolError('client does not read option replies');
        return;
      }
    }
    const rest = this.hsBuf.subarray(pos);
    this.hsBuf = Buffer.alloc(0);
    if (this.phase === 'flags' || this.phase === 'options') {
      this.hsBuf = Buffer.from(rest); // copy: do not pin a large chunk for a few bytes
    } else if (this.phase === 'transmission' && rest.length > 0) {
      this.processRequests(rest, 0); // requests pipelined right behind NBD_OPT_GO
    }
  }

  private handleOption(option: number, data: Buffer): void {
    switch (option) {
      case P.NBD_OPT_EXPORT_NAME: {
        const name = data.toString('utf8');
        const entry = this.server.lookupExport(this.homeExport, name);
        if (!entry) {
          // The protocol has no error reply for EXPORT_NAME: the session must end.
          this.protocolError(`NBD_OPT_EXPORT_NAME for unknown export ${JSON.stringify(name)}`, false);
          return;
        }
        this.socket.write(P.encodeExportNameReply(entry.backend.sizeBytes, TRANSMISSION_FLAGS, this.noZeroes));
        this.enterTransmission(entry);
        return;
      }
      case P.NBD_OPT_ABORT:
        this.socket.write(P.encodeOptionReply(option, P.NBD_REP_ACK));
        this.phase = 'closed';
        this.clearHandshakeTimer();
        this.socket.end();
        return;
      case P.NBD_OPT_LIST:
        if (data.length !== 0) {
          this.optionError(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
          return;
        }
        for (const e of this.server.visibleExports(this.homeExport)) {
          this.socket.write(P.encodeOptionReply(option, P.NBD_REP_SERVER, P.encodeRepServer(e.name, e.description)));
        }
        this.socket.write(P.encodeOptionReply(option, P.NBD_REP_ACK));
        return;
      case P.NBD_OPT_INFO:
      case P.NBD_OPT_GO: {
        const req = P.decodeInfoRequest(data);
        if ('error' in req) {
          this.optionError(option, P.NBD_REP_ERR_INVALID, req.error);
          return;
        }
        const entry = this.server.lookupExport(this.homeExport, req.name);
        if (!entry) {
          this.optionError(option, P.NBD_REP_ERR_UNKNOWN, `no export named ${JSON.stringify(req.name)} here`);
          return;
        }
        const replies = [
          P.encodeOptionReply(option, P.NBD_REP_INFO, P.encodeInfoExport(entry.backend.sizeBytes, TRANSMISSION_FLAGS)),
          // Always sent: we enforce a minimum block size above the protocol default of 1.
          P.encodeOptionReply(option, P.NBD_REP_INFO, P.encodeInfoBlockSize(MIN_BLOCK_SIZE, PREFERRED_BLOCK_SIZE, MAX_PAYLOAD_BYTES)),
        ];
        if (req.infoTypes.includes(P.NBD_INFO_NAME)) {
          replies.push(P.encodeOptionReply(option, P.NBD_REP_INFO, P.encodeInfoString(P.NBD_INFO_NAME, entry.name)));
        }
        if (req.infoTypes.includes(P.NBD_INFO_DESCRIPTION) && entry.description !== undefined) {
          replies.push(P.encodeOptionReply(option, P.NBD_REP_INFO, P.encodeInfoString(P.NBD_INFO_DESCRIPTION, entry.description)));
        }
        replies.push(P.encodeOptionReply(option, P.NBD_REP_ACK));
        this.socket.write(Buffer.concat(replies));
        if (option === P.NBD_OPT_GO) this.enterTransmission(entry);
        return;
      }
      default:
        // STARTTLS (we run NOTLS), STRUCTURED_REPLY, meta contexts, extended headers, unknown.
        this.optionError(option, P.NBD_REP_ERR_UNSUP, `${P.optionName(option)} is not supported`);
        return;
    }
  }

  private optionError(option: number, replyType: number, message: string): void {
    this.socket.write(P.encodeOptionReply(option, replyType, Buffer.from(message, 'utf8')));
  }

  private enterTransmission(entry: ExportEntry): void {
    this.clearHandshakeTimer();
    this.phase = 'transmission';
    this.export = entry;
    this.server.connectionEntered(this, entry);
  }

  // ---- transmission --------------------------------------------------------------------------

  /** Parses requests from chunk starting at pos; stops (stashing the rest) above the limits. */
  private processRequests(chunk: Buffer, pos: number): void {
    while (pos < chunk.length && this.phase === 'transmission') {
      if (this.skipBytes > 0) {
        const n = Math.min(this.skipBytes, chunk.length - pos);
        this.skipBytes -= n;
        pos += n;
        continue;
      }
      if (this.payload) {
        const n = Math.min(this.payload.length - this.payloadFill, chunk.length - pos);
        chunk.copy(this.payload, this.payloadFill, pos, pos + n);
        this.payloadFill += n;
        pos += n;
        if (this.payloadFill === this.payload.length) {
          const data = this.payload;
          const w = this.pendingWrite!;
          this.payload = null;
          this.pendingWrite = null;
          this.inFlightBytes -= data.length; // startWrite counts it again
          this.startWrite(w, data);
        }
        continue;
      }
      if (this.overLimits()) {
        this.stash = chunk.subarray(pos);
        this.pauseForLimits();
        return;
      }
      let hb: Buffer;
      let ho: number;
      if (this.hdrFill > 0 || chunk.length - pos < P.REQUEST_HEADER_BYTES) {
        const n = Math.min(P.REQUEST_HEADER_BYTES - this.hdrFill, chunk.length - pos);
        chunk.copy(this.hdr, this.hdrFill, pos, pos + n);
        this.hdrFill += n;
        pos += n;
        if (this.hdrFill < P.REQUEST_HEADER_BYTES) return;
        this.hdrFill = 0;
        hb = this.hdr;
        ho = 0;
      } else {
        hb = chunk;
        ho = pos;
        pos += P.REQUEST_HEADER_BYTES;
      }
      pos = this.handleRequest(P.decodeRequestHeader(hb, ho), chunk, pos);
    }
  }

  /** Returns the position in chunk after whatever this request consumed from it. */
  private handleRequest(req: P.RequestHeader, chunk: Buffer, pos: number): number {
    const entry = this.export!;
    if (req.magic !== P.NBD_REQUEST_MAGIC) {
      this.protocolError(`bad request magic 0x${req.magic.toString(16)}`);
      return chunk.length;
    }
    this.server.counters.requests++;
    const { type, flags, handleHi, handleLo } = req;
    switch (type) {
      case P.NBD_CMD_READ: {
        const err = this.validate(req, entry);
        if (err) return this.replyNow(err, req, pos);
        this.dispatch(handleHi, handleLo, req.length, () => entry.backend.read(req.offset, req.length), req.length);
        return pos;
      }
      case P.NBD_CMD_WRITE: {
        if (req.length > MAX_PAYLOAD_BYTES) {
          // We cannot sanely skip an arbitrary payload of up to 4 GiB: treat as denial of service.
          this.protocolError(`WRITE of ${req.length} bytes (limit ${MAX_PAYLOAD_BYTES})`);
          return chunk.length;
        }
        const err = this.validate(req, entry);
        if (err) {
          this.reply(err, handleHi, handleLo);
          this.skipBytes = req.length; // the payload still follows on the stream
          return pos;
        }
        const w: PendingWrite = { handleHi, handleLo, offset: req.offset, fua: (flags & P.NBD_CMD_FLAG_FUA) !== 0 };
        if (chunk.length - pos >= req.length) {
          this.startWrite(w, chunk.subarray(pos, pos + req.length)); // zero copy
          return pos + req.length;
        }
        this.payload = Buffer.allocUnsafe(req.length);
        this.payloadFill = chunk.length - pos;
        chunk.copy(this.payload, 0, pos);
        this.pendingWrite = w;
        this.inFlightBytes += req.length; // held while it arrives
        this.notePeaks();
        return chunk.length;
      }
      case P.NBD_CMD_DISC:
        this.phase = 'draining';
        this.maybeFinish();
        return chunk.length;
      case P.NBD_CMD_FLUSH: {
        const err = this.validate(req, entry);
        if (err) return this.replyNow(err, req, pos);
        this.dispatch(handleHi, handleLo, 0, () => entry.backend.flush(), 0);
        return pos;
      }
      case P.NBD_CMD_TRIM: {
        const err = this.validate(req, entry);
        if (err) return this.replyNow(err, req, pos);
        const fua = (flags & P.NBD_CMD_FLAG_FUA) !== 0;
        this.dispatch(handleHi, handleLo, 0, () => entry.backend.trim(req.offset, req.length, fua), 0);
        return pos;
      }
      case P.NBD_CMD_WRITE_ZEROES: {
        const err = this.validate(req, entry);
        if (err) return this.replyNow(err, req, pos);
        const fua = (flags & P.NBD_CMD_FLAG_FUA) !== 0;
        this.dispatch(handleHi, handleLo, 0, () => entry.backend.writeZeroes(req.offset, req.length, fua), 0);
        return pos;
      }
      default:
        // CACHE and BLOCK_STATUS are not advertised; proto.md: unknown commands get EINVAL.
        if (!this.loggedBadCommand) {
          this.loggedBadCommand = true;
          this.server.log('warn', `nbd ${this.label}: unsupported ${P.commandName(type)}, replying EINVAL (logged once per connection)`);
        }
        return this.replyNow(P.NBD_EINVAL, req, pos);
    }
  }

  /** Request checks in the order the spec suggests; returns an NBD error value or 0. */
  private validate(req: P.RequestHeader, entry: ExportEntry): number {
    const { type, flags, offset, length } = req;
    let allowedFlags = P.NBD_CMD_FLAG_FUA; // valid (and ignorable) on every command
    if (type === P.NBD_CMD_WRITE_ZEROES) allowedFlags |= P.NBD_CMD_FLAG_NO_HOLE | P.NBD_CMD_FLAG_FAST_ZERO;
    if ((flags & ~allowedFlags) !== 0) return P.NBD_EINVAL;
    if (this.shuttingDown) return P.NBD_ESHUTDOWN;
    if (type === P.NBD_CMD_FLUSH) return 0; // offset and length are reserved; not checked
    if (length === 0 || offset % MIN_BLOCK_SIZE !== 0 || length % MIN_BLOCK_SIZE !== 0) return P.NBD_EINVAL;
    const isWrite = type === P.NBD_CMD_WRITE || type === P.NBD_CMD_WRITE_ZEROES;
    if (type === P.NBD_CMD_READ && length > MAX_PAYLOAD_BYTES) return P.NBD_EINVAL;
    if (offset + length > entry.backend.sizeBytes) return isWrite ? P.NBD_ENOSPC : P.NBD_EINVAL;
    if (type === P.NBD_CMD_READ) return 0;
    if (!this.backendWritable(entry)) return P.NBD_EPERM;
    if (type === P.NBD_CMD_WRITE_ZEROES && (flags & P.NBD_CMD_FLAG_FAST_ZERO) !== 0) return P.NBD_ENOTSUP;
    return 0;
  }

  private startWrite(w: PendingWrite, data: Buffer): void {
    const entry = this.export!;
    // Re-checked here: the backend may have lost writability while the payload arrived.
    const err = this.shuttingDown ? P.NBD_ESHUTDOWN : this.backendWritable(entry) ? 0 : P.NBD_EPERM;
    if (err) {
      this.reply(err, w.handleHi, w.handleLo);
      return;
    }
    this.dispatch(w.handleHi, w.handleLo, 0, () => entry.backend.write(w.offset, data, w.fua), data.length);
  }

  /** isWritable() that cannot throw: a failing check counts as not writable. */
  private backendWritable(entry: ExportEntry): boolean {
    try {
      return entry.backend.isWritable() === true;
    } catch (err) {
      this.logBackendError(`backend isWritable() threw: ${(err as Error).message}; replying EPERM`);
      return false;
    }
  }

  private replyNow(error: number, req: P.RequestHeader, pos: number): number {
    this.reply(error, req.handleHi, req.handleLo);
    return pos;
  }

  /**
   * Runs one backend operation and replies when it settles. readLength > 0 marks a READ
   * whose result must be exactly that long; heldBytes are counted against the buffer limit.
   */
  private dispatch(handleHi: number, handleLo: number, readLength: number, op: () => Promise<Buffer | void>, heldBytes: number): void {
    const bytes = heldBytes;
    this.inFlight++;
    this.inFlightBytes += bytes;
    this.notePeaks();
    let promise: Promise<Buffer | void>;
    try {
      promise = op();
    } catch (err) {
      promise = Promise.reject(err);
    }
    promise.then(
      (result) => {
        this.inFlight--;
        this.inFlightBytes -= bytes;
        if (readLength > 0) {
          if (!Buffer.isBuffer(result) || result.length !== readLength) {
            this.logBackendError(`backend read returned ${Buffer.isBuffer(result) ? result.length : typeof result} bytes, expected ${readLength}; replying EIO`);
            this.reply(P.NBD_EIO, handleHi, handleLo);
          } else {
            this.reply(0, handleHi, handleLo, result);
          }
        } else {
          this.reply(0, handleHi, handleLo);
        }
        this.afterCompletion();
      },
      (err: unknown) => {
        this.inFlight--;
        this.inFlightBytes -= bytes;
        this.reply(this.errnoOf(err), handleHi, handleLo);
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
      this.server.log('error', `nbd ${this.label}: ${msg}${suffix}`);
    }
  }

  private afterCompletion(): void {
    if (this.phase === 'closed') return;
    this.maybeResume();
    this.maybeFinish();
  }

  /** Sends a simple reply; replies of one tick go out in one writev (cork until nextTick). */
  private reply(error: number, handleHi: number, handleLo: number, data?: Buffer): void {
    const s = this.socket;
    if (this.phase === 'closed' || s.destroyed || !s.writable) return;
    const header = P.encodeSimpleReplyHeader(error, handleHi, handleLo);
    if (!this.corked) {
      this.corked = true;
      s.cork();
      process.nextTick(() => this.uncork());
    }
    s.write(header);
    if (data) s.write(data);
    this.notePeaks();
  }

  private uncork(): void {
    this.corked = false;
    if (!this.socket.destroyed) this.socket.uncork();
  }

  private overLimits(): boolean {
    return (
      this.inFlight >= this.server.maxInFlightRequests ||
      this.inFlightBytes + this.socket.writableLength >= this.server.maxBufferedBytes
    );
  }

  private belowResumeMark(): boolean {
    return (
      this.inFlight <= this.server.maxInFlightRequests / 2 &&
      this.inFlightBytes + this.socket.writableLength <= this.server.maxBufferedBytes / 2
    );
  }

  private pauseForLimits(): void {
    if (this.pausedForLimits) return;
    this.pausedForLimits = true;
    this.server.counters.backpressurePauses++;
    this.socket.pause();
  }

  private maybeResume(): void {
    if (!this.pausedForLimits || this.phase === 'closed' || !this.belowResumeMark()) return;
    this.pausedForLimits = false;
    const stash = this.stash;
    this.stash = null;
    if (stash && this.phase === 'transmission') this.processRequests(stash, 0);
    if (!this.pausedForLimits && (this.phase as Phase) !== 'closed') this.socket.resume();
  }

  /** After DISC, a half-close or removeExport: close once nothing is in flight. */
  private maybeFinish(): void {
    if (this.phase === 'closed' || this.inFlight > 0) return;
    if (this.phase !== 'draining' && !this.shuttingDown) return;
    this.phase = 'closed';
    if (this.corked) this.uncork();
    this.socket.end();
    // A client that does not read its last replies must not keep the socket forever.
    setTimeout(() => this.socket.destroy(), 5_000).unref();
  }

  private notePeaks(): void {
    const c = this.server.counters;
    if (this.inFlight > c.peakInFlightRequests) c.peakInFlightRequests = this.inFlight;
    const buffered = this.inFlightBytes + this.socket.writableLength;
    if (buffered > c.peakBufferedBytes) c.peakBufferedBytes = buffered;
  }

  private protocolError(msg: string, countAsGarbage = true): void {
    if (this.phase === 'closed') return;
    if (countAsGarbage) this.server.counters.protocolErrors++;
    this.server.log('warn', `nbd ${this.label}: ${msg}; closing the connection`);
    this.destroy();
  }

  private clearHandshakeTimer(): void {
    if (this.handshakeTimer) {
      clearTimeout(this.handshakeTimer);
      this.handshakeTimer = null;
    }
  }
}
