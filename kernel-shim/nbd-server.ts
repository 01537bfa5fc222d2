// The NBD server: exports BlockBackends over Unix sockets (one socket per export) and optionally
// TCP (every export, by name). This file is the export registry: it listens, accepts, and adds,
// stops and removes exports; what happens on a connection is nbd-connection.ts (handshake, then
// transmission; nbd-export.ts has the map of the files). docs/nbd.md describes the export as
// built: fixed newstyle handshake only, simple replies only, requests processed concurrently
// (pipelined) with replies sent as each completes.
//
// Robustness rules: a hostile or broken client can only lose its own connection. Every backend
// promise is handled (no unhandled rejections); per-connection memory is bounded (in-flight
// requests, buffered payload and reply bytes: the socket is paused above the limits); the
// handshake has a deadline; garbage closes the connection with one log line. A broken invariant
// (InvariantError) is the exception: it is never logged and served, it stops the process
// (failStopOnInvariant).
//
// Ordering: stopListening() unlinks the socket synchronously (the path may be reused at once);
// removeExport() starts no backend call for the export after it returns. Time (handshake
// deadline, shutdown grace) comes from the injected Clock.
import { unlinkSync } from 'node:fs';
import net from 'node:net';
import { assert, failStopOnInvariant } from '../common/util/assert.js';
import { systemClock, type Clock } from '../common/util/clock.js';
import { listenPrivateUnix } from '../common/util/unix-socket.js';
import { ServerLimits } from './nbd-limits.js';
import type { LogLevel } from '../common/util/log.js';
import type { NbdRecorder } from '../common/util/metrics-recorder.js';
import type { BlockBackend } from './backend.js';
import * as P from './nbd-protocol.js';
import { Connection } from './nbd-connection.js';
import {
  MIN_BLOCK_SIZE, type ConnectionHandle, type ExportEntry, type NbdCounters, type NbdServerStats, type ServerContext,
} from './nbd-export.js';

// The export's promises and limits, defined with the rest of what the connection layers share.
export {
  MIN_BLOCK_SIZE, PREFERRED_BLOCK_SIZE, MAX_PAYLOAD_BYTES, MAX_OPTION_BYTES, HANDSHAKE_FLAGS, TRANSMISSION_FLAGS,
  type NbdServerStats,
} from './nbd-export.js';
import { PayloadPool, SERVER_POOL_BYTES } from './payload-pool.js';

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
  /** Open connections of all exports together (handshakes included); more are closed at once. Default 128. */
  maxConnections?: number;
  /** Reading pauses on every connection while their buffered bytes together reach this. Default 256 MiB. */
  maxTotalBufferedBytes?: number;
  /** A connection whose unsent replies the client does not read for this long is closed. Default 30 s. */
  replyStallMs?: number;
  /** removeExport()/close() destroy connections whose requests take longer. Default 30 s. */
  shutdownGraceMs?: number;
  /** Time and timers (handshake deadline, shutdown grace). Default systemClock. */
  clock?: Clock;
  /** told of every answered request (metrics); must be synchronous and cheap */
  recorder?: NbdRecorder;
}

/** An export as the registry keeps it: what connections see, plus its Unix listener. */
interface ListenedExport extends ExportEntry {
  listener: net.Server;
}

export interface ExportOptions {
  socketPath: string;
  description?: string;
}

export class NbdServer implements ServerContext {
  private readonly exports = new Map<string, ListenedExport>();
  private readonly allConnections = new Set<ConnectionHandle>();
  private tcpListener: net.Server | null = null;
  private nextConnectionId = 1;
  private closing = false;
  readonly handshakeTimeoutMs: number;
  readonly maxInFlightRequests: number;
  readonly maxBufferedBytes: number;
  readonly limits: ServerLimits;
  readonly shutdownGraceMs: number;
  readonly clock: Clock;
  readonly recorder: NbdRecorder | undefined;
  readonly payloads = new PayloadPool(SERVER_POOL_BYTES);
  /** @internal counters updated by connections */
  readonly counters: NbdCounters = {
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
    this.clock = options.clock ?? systemClock;
    this.recorder = options.recorder;
    assert(this.maxInFlightRequests >= 1, 'maxInFlightRequests must be at least 1');
    assert(this.maxBufferedBytes >= MIN_BLOCK_SIZE, 'maxBufferedBytes too small');
    this.limits = new ServerLimits({
      clock: this.clock, log: (level, msg) => this.log(level, msg),
      maxConnections: options.maxConnections ?? 128,
      maxTotalBufferedBytes: options.maxTotalBufferedBytes ?? 256 * 1024 * 1024,
      replyStallMs: options.replyStallMs ?? 30_000,
    });
    assert(this.limits.o.maxConnections >= 1 && this.limits.o.maxTotalBufferedBytes >= this.maxBufferedBytes, 'NBD server limits out of range');
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

    const listener = net.createServer({ allowHalfOpen: true, pauseOnConnect: false });
    const entry: ListenedExport = {
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
    // 0600 from the first moment (bound privately, then renamed into place): the block device
    // is root's business, and a chmod after listen() would leave a window open to everybody.
    try {
      await listenPrivateUnix(listener, opts.socketPath);
    } catch (err) {
      throw new Error(`export ${name}: ${(err as Error).message}`);
    }
    listener.on('error', (err) => this.log('error', `export ${name}: listener error: ${err.message}`));
    if (this.closing || this.exports.has(name)) {
      listener.close();
      throw new Error(`export ${name}: server closed or export added twice while listening`);
    }
    this.exports.set(name, entry);
    this.log('info', `export ${name}: serving ${backend.sizeBytes} bytes on ${opts.socketPath}`);
  }

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
      failStopOnInvariant(err);
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log('warn', `export ${name}: cannot remove ${entry.socketPath}: ${(err as Error).message}`);
    }
    for (const conn of this.allConnections) {
      if (conn.homeExport === entry && conn.export === null) conn.destroy('export closed during handshake');
    }
    this.log('info', `export ${name}: no longer accepting connections (${entry.connections.size} still open)`);
  }

  /**
   * Stops offering the export: the listener closes and the socket file is removed at once,
   * connections still in handshake are dropped, requests already in flight are answered,
   * later requests get ESHUTDOWN, and each connection is closed once it has nothing in flight.
   * Resolves when every connection of the export is closed (forcibly after shutdownGraceMs).
   * No backend call is started for this export after removeExport() returns.
   */
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

  // ---- ServerContext: used by the connections ----------------------------------------------

  /** @internal */
  log(level: LogLevel, msg: string): void {
    try {
      this.options.log(level, msg);
    } catch (err) {
      failStopOnInvariant(err);
      // any other failure of the log hook must not take the server down
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
  connectionEntered(conn: ConnectionHandle, entry: ExportEntry): void {
    entry.connections.add(conn);
    this.notifyOpenCount(entry);
  }

  /** @internal */
  connectionClosed(conn: ConnectionHandle): void {
    this.allConnections.delete(conn);
    const entry = conn.export;
    if (entry && entry.connections.delete(conn)) this.notifyOpenCount(entry);
  }

  private notifyOpenCount(entry: ExportEntry): void {
    try {
      this.options.onOpenCountChange?.(entry.name, entry.connections.size);
    } catch (err) {
      failStopOnInvariant(err);
      this.log('error', `export ${entry.name}: onOpenCountChange failed: ${(err as Error).message}`);
    }
  }

  private accept(socket: net.Socket, home: ExportEntry | null): void {
    if (this.closing || home?.removing || home?.listenerClosed) {
      socket.destroy();
      return;
    }
    if (!this.limits.admit(this.allConnections.size)) {
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
    let timer: { cancel(): void } | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = this.clock.setTimeout(() => resolve('timeout'), this.shutdownGraceMs);
    });
    const result = await Promise.race([done.then(() => 'done' as const), timeout]);
    timer?.cancel();
    if (result === 'timeout') {
      onTimeout();
      await done;
    }
  }
}
