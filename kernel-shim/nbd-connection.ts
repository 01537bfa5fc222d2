// One client connection of the NBD server: owns the socket and moves it through its phases,
//
//   handshake (nbd-handshake.ts) -> transmission (nbd-transmission.ts) -> closed
//
// routing socket input to the phase it belongs to. It is the only place that closes the socket:
// politely (finish: end, then destroy after FINISH_GRACE_MS if the client does not read its last
// replies), on a protocol error (one log line, counted) or on an internal error.
//
// Invariant policy (common/util/assert.ts): a bug costs this connection, never the process; a
// broken invariant costs the process. Every catch-all here calls failStopOnInvariant first, so
// an InvariantError thrown while parsing or by the backend ends marsd (exit 70) instead of
// being logged and served.
import type net from 'node:net';
import { failStopOnInvariant } from '../common/util/assert.js';
import type { Timer } from '../common/util/clock.js';
import type { ConnectionHandle, ExportEntry, ServerContext } from './nbd-export.js';
import { Handshake } from './nbd-handshake.js';
import { Transmission } from './nbd-transmission.js';

/** After the server ended the socket, a client that does not read its last replies is cut off. */
const FINISH_GRACE_MS = 5_000;

type Phase = 'handshake' | 'transmission' | 'closed';

export class Connection implements ConnectionHandle {
  export: ExportEntry | null = null;
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private phase: Phase = 'handshake';
  private handshake: Handshake | null;
  private transmission: Transmission | null = null;
  private finishTimer: Timer | null = null;

  constructor(
    private readonly server: ServerContext,
    readonly socket: net.Socket,
    readonly homeExport: ExportEntry | null,
    readonly label: string,
  ) {
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    this.handshake = new Handshake(server, this);
  }

  get isClosed(): boolean {
    return this.phase === 'closed';
  }

  start(): void {
    const s = this.socket;
    s.on('data', (chunk: Buffer) => this.onData(chunk));
    s.on('end', () => this.onEnd());
    s.on('drain', () => {
      this.transmission?.maybeResume();
      this.server.limits.wakeAll(); // reply bytes left the process: room for the others
    });
    s.on('error', (err: NodeJS.ErrnoException) => {
      if (this.phase !== 'closed') this.server.log('info', `nbd ${this.label}: ${err.code ?? err.message}; closing`);
      this.destroy();
    });
    s.on('close', () => this.onClose());
    this.handshake!.start();
  }

  /** The export is being removed: answer in-flight requests, then close. */
  beginShutdown(): void {
    this.transmission?.beginShutdown();
  }

  destroy(reason?: string): void {
    if (reason && this.phase !== 'closed') this.server.log('info', `nbd ${this.label}: ${reason}; closing`);
    this.phase = 'closed';
    this.handshake?.dispose();
    this.socket.destroy();
  }

  // ---- called by the phases ------------------------------------------------------------------

  /** @internal (HandshakeHost) */
  enterTransmission(entry: ExportEntry): void {
    this.phase = 'transmission';
    this.export = entry;
    this.transmission = new Transmission(this.server, this, entry);
    this.server.connectionEntered(this, entry);
  }

  /** @internal (HandshakeHost) NBD_OPT_ABORT was acknowledged: end as after transmission. */
  abort(): void {
    this.finish();
  }

  /** @internal (TransmissionHost) nothing in flight after draining or shutdown. */
  finish(): void {
    this.phase = 'closed';
    this.socket.end();
    // A client that does not read its last replies must not keep the socket forever.
    this.finishTimer = this.server.clock.setTimeout(() => this.socket.destroy(), FINISH_GRACE_MS);
  }

  /** @internal */
  protocolError(msg: string, countAsGarbage = true): void {
    if (this.phase === 'closed') return;
    if (countAsGarbage) this.server.counters.protocolErrors++;
    this.server.log('warn', `nbd ${this.label}: ${msg}; closing the connection`);
    this.destroy();
  }

  /** @internal A bug costs this connection; a broken invariant is escalated first. */
  internalError(err: unknown, where: string): void {
    failStopOnInvariant(err);
    this.server.log('error', `nbd ${this.label}: ${where}: ${err instanceof Error ? err.stack ?? err.message : String(err)}; closing the connection`);
    this.destroy();
  }

  // ---- socket events -------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    try {
      this.route(chunk);
    } catch (err) {
      this.internalError(err, 'internal error');
    }
  }

  private route(chunk: Buffer): void {
    if (this.phase === 'handshake') {
      const rest = this.handshake!.onData(chunk);
      const now = this.phase as Phase; // onData may have moved it on
      if (now !== 'handshake') this.handshake = null; // done: its buffers can go
      // requests pipelined right behind NBD_OPT_GO
      if (rest !== null && rest.length > 0 && now === 'transmission') this.transmission!.onData(rest);
    } else if (this.phase === 'transmission') {
      this.transmission!.onData(chunk);
    }
    // closed: the client must not send more; ignore it
  }

  private onEnd(): void {
    // The client half-closed: answer what is in flight, then close.
    if (this.phase === 'transmission') {
      this.transmission!.drain(); // idempotent: already draining after DISC
    } else {
      this.destroy();
    }
  }

  private onClose(): void {
    this.phase = 'closed';
    this.handshake?.dispose();
    this.handshake = null;
    this.finishTimer?.cancel();
    this.finishTimer = null;
    this.transmission?.release();
    this.server.connectionClosed(this);
    this.resolveClosed();
  }
}
