// What an export promises and what a connection may see of the server. The NBD server is three
// layers, each in its own file, and this module is the only thing they share:
//
//   nbd-server.ts        the export registry: listeners (Unix per export, TCP for all), accept,
//                        stopListening / removeExport / close, stats
//   nbd-connection.ts    one client socket through its phases: handshake -> transmission -> closed
//   nbd-handshake.ts     fixed newstyle negotiation: client flags, options, export selection
//   nbd-transmission.ts  requests: parsing, pipelining, replies, limits against hostile clients,
//                        with nbd-request-checks.ts (pure request validation) and nbd-budget.ts
//                        (in-flight requests and bytes per connection)
//
// Connections reach the server only through ServerContext, so the layers import downwards
// (server -> connection -> handshake/transmission -> this file -> nbd-protocol.ts) and never in
// a circle. Storage sits behind BlockBackend (backend.ts), nothing else of it is known here.
import type { NbdRecorder } from '../common/util/metrics-recorder.js';
import type { Clock } from '../common/util/clock.js';
import type { LogLevel } from '../common/util/log.js';
import type { BlockBackend } from './backend.js';
import type { ServerLimits } from './nbd-limits.js';
import * as P from './nbd-protocol.js';
import type { PayloadPool } from './payload-pool.js';

/** Advertised block size constraints (NBD_INFO_BLOCK_SIZE) and enforced limits. */
export const MIN_BLOCK_SIZE = 512;
export const PREFERRED_BLOCK_SIZE = 4096;
export const MAX_PAYLOAD_BYTES = 32 * 1024 * 1024;
/** Longest option payload accepted during the handshake; longer ones close the connection. */
export const MAX_OPTION_BYTES = 64 * 1024;
/** Option replies a client leaves unread before the handshake gives up on it. */
export const MAX_UNREAD_OPTION_REPLY_BYTES = 1024 * 1024;

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

export type NbdCounters = Omit<NbdServerStats, 'connections'>;

/** What the server needs of a connection (implemented by nbd-connection.ts). */
export interface ConnectionHandle {
  /** the export it entered transmission on; null during the handshake */
  readonly export: ExportEntry | null;
  /** the export whose Unix socket it came in on; null for TCP (any export by name) */
  readonly homeExport: ExportEntry | null;
  /** settles when the socket is closed */
  readonly closed: Promise<void>;
  /** answer what is in flight (later requests get ESHUTDOWN), then close */
  beginShutdown(): void;
  destroy(reason?: string): void;
}

export interface ExportEntry {
  name: string;
  backend: BlockBackend;
  description: string | undefined;
  socketPath: string;
  /** connections in transmission phase on this export (Unix or TCP) */
  connections: Set<ConnectionHandle>;
  removing: boolean;
  /** stopListening(): no new connections, the open ones keep being served */
  listenerClosed: boolean;
}

/** The server as its connections see it: limits, counters, export lookup, bookkeeping. */
export interface ServerContext {
  readonly clock: Clock;
  /** metrics of answered requests (optional) */
  readonly recorder?: NbdRecorder | undefined;
  readonly handshakeTimeoutMs: number;
  readonly maxInFlightRequests: number;
  readonly maxBufferedBytes: number;
  /** limits across all connections (nbd-limits.ts) */
  readonly limits: ServerLimits;
  readonly counters: NbdCounters;
  /** buffers for WRITE payloads split across socket chunks, shared by all connections */
  readonly payloads: PayloadPool;
  /** never throws (a failing log hook is ignored) */
  log(level: LogLevel, msg: string): void;
  /** exports a connection may open: its socket's export, or all of them over TCP */
  visibleExports(home: ExportEntry | null): ExportEntry[];
  /** '' means the socket's own export; null if not offered (any more) */
  lookupExport(home: ExportEntry | null, name: string): ExportEntry | null;
  connectionEntered(conn: ConnectionHandle, entry: ExportEntry): void;
  connectionClosed(conn: ConnectionHandle): void;
}
