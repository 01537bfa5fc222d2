// Bytes exchanged with each peer since marsd started, over all its connections (the links we
// dial and the connections peers dial to us), for the metrics (mars_peer_bytes_total).
//
// Nothing is counted here: every connection's FrameTransport already adds each frame it writes
// or reads to its own ConnectionStats (one addition per frame, no allocation). This tally only
// sums, when read, the stats of the open connections and the final stats of the closed ones,
// so the send and receive paths do not change at all. Counted are the frame bytes after the
// handshake as they go to and come from the stream (sealed frames with their tags; inside TLS
// or ssh, their overhead not included).
//
// Monotonic per peer while marsd runs: a connection is counted live until it closes, then its
// stats, which no longer change, move to the closed total in the same step.
import { assert } from '../../common/util/assert.js';
import type { ConnectionStats } from './transport.js';

/** What the tally needs of a connection (PeerConnection has it). */
export interface TrackedConnection {
  readonly peerHost: string;
  readonly stats: ConnectionStats;
  readonly isClosed: boolean;
  once(event: 'close', listener: (reason: string) => void): unknown;
}

export interface PeerBytes {
  sentBytes: number;
  receivedBytes: number;
}

export class PeerTraffic {
  private readonly closed = new Map<string, PeerBytes>();
  private readonly open = new Set<TrackedConnection>();
  /** every connection ever tracked: counting one twice would inflate the totals */
  private readonly seen = new WeakSet<TrackedConnection>();

  /** Count a connection from now on; call it when the connection is made (before it can close). */
  track(conn: TrackedConnection): void {
    assert(!this.seen.has(conn), `connection to ${conn.peerHost} tracked twice`);
    this.seen.add(conn);
    if (conn.isClosed) { this.fold(conn); return; }
    this.open.add(conn);
    conn.once('close', () => {
      this.open.delete(conn);
      this.fold(conn);
    });
  }

  /** Bytes per peer: closed connections plus the open ones as they are now. */
  totals(): Map<string, PeerBytes> {
    const out = new Map<string, PeerBytes>();
    for (const [peer, b] of this.closed) out.set(peer, { ...b });
    for (const conn of this.open) add(out, conn.peerHost, conn.stats);
    return out;
  }

  private fold(conn: TrackedConnection): void {
    add(this.closed, conn.peerHost, conn.stats);
  }
}

function add(into: Map<string, PeerBytes>, peer: string, stats: ConnectionStats): void {
  const b = into.get(peer) ?? { sentBytes: 0, receivedBytes: 0 };
  b.sentBytes += stats.bytesSent;
  b.receivedBytes += stats.bytesReceived;
  into.set(peer, b);
}
