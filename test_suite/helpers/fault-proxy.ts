// A fault-injecting TCP proxy for multi-host tests (docs/design.md §7): there is no `tc netem` on the
// test machines, so latency, bandwidth limits, cuts and silent partitions between two daemons
// come from this userspace proxy sitting between them on loopback.
//
// Every accepted client connection gets its own connection to the target and two pipes, 'up'
// (client → target) and 'down' (target → client). A pipe is a FIFO of chunks stamped with the
// time they may leave (arrival + delay), so latency does not serialise throughput: a 50 ms
// delay behaves like a long pipe, not like a sleep per chunk. Bandwidth and drip limits are
// shared by all connections in one direction, like a real link. Faults can change at any time
// while connections are open. Memory stays bounded: a pipe stops reading its source socket when
// too much is queued for the destination, so the sender feels TCP backpressure.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { FrameSplitter, HANDSHAKE_FRAMES, type FrameEdit } from './frame-tamper.js';
import { mulberry32 } from './prng.js';

export type Direction = 'up' | 'down';
/** Which direction(s) a fault applies to; 'both' unless stated. */
export type Directions = Direction | 'both';

export interface FaultProxyOptions {
  /** Must be a 127.0.0.0/8 address: tests never touch real networks. */
  listenHost?: string;
  /** 0 (default): the OS picks a free port; read it from `port`. */
  listenPort?: number;
  targetHost: string;
  targetPort: number;
  log?: (msg: string) => void;
  /**
   * A pipe pauses its source once more than this is queued for the destination (default 4 MiB),
   * so one pipe holds at most this plus a socket read or two (64 KiB each).
   */
  maxQueuedBytes?: number;
}

const DEFAULT_MAX_QUEUED_BYTES = 4 * 1024 * 1024;
/** Token bucket burst: small, so pacing is visible within a fraction of a second. */
const MIN_BURST_BYTES = 4 * 1024;
const MAX_BURST_BYTES = 64 * 1024;
/**
 * With a bandwidth limit, wait until a quarter burst (at least 1 KiB) may be sent: no 1-byte
 * dribbles, and few timer wake-ups (a late timer loses nothing while the bucket is not full).
 */
const MIN_GRANT_BYTES = 1024;

export function isLoopbackIPv4(host: string): boolean {
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  return m !== null && m.slice(1).every((octet) => Number(octet) <= 255);
}

function directionsOf(dir: Directions): Direction[] {
  return dir === 'both' ? ['up', 'down'] : [dir];
}

/** Continuous token bucket: `bytesPerS` on average, at most `burstBytes` at once. */
class TokenBucket {
  private tokens: number;
  private lastMs: number;

  readonly minGrantBytes: number;

  constructor(readonly bytesPerS: number, readonly burstBytes: number, nowMs: number) {
    this.tokens = burstBytes;
    this.lastMs = nowMs;
    this.minGrantBytes = Math.min(burstBytes, Math.max(MIN_GRANT_BYTES, Math.floor(burstBytes / 4)));
  }

  available(nowMs: number): number {
    if (nowMs > this.lastMs) {
      this.tokens = Math.min(this.burstBytes, this.tokens + ((nowMs - this.lastMs) * this.bytesPerS) / 1000);
      this.lastMs = nowMs;
    }
    return Math.floor(this.tokens);
  }

  consume(bytes: number): void {
    this.tokens -= bytes;
  }

  msUntil(bytes: number, nowMs: number): number {
    const missing = bytes - this.available(nowMs);
    return missing <= 0 ? 0 : (missing * 1000) / this.bytesPerS;
  }
}

/** Slow drip: at most `bytesPerInterval` in each window of `intervalMs` (a window opens on demand). */
class DripWindow {
  private windowStartMs = Number.NEGATIVE_INFINITY;
  private usedBytes = 0;

  constructor(readonly bytesPerInterval: number, readonly intervalMs: number) {}

  available(nowMs: number): number {
    if (nowMs >= this.windowStartMs + this.intervalMs) {
      this.windowStartMs = nowMs;
      this.usedBytes = 0;
    }
    return this.bytesPerInterval - this.usedBytes;
  }

  consume(bytes: number): void {
    this.usedBytes += bytes;
  }

  msUntil(nowMs: number): number {
    return this.available(nowMs) > 0 ? 0 : this.windowStartMs + this.intervalMs - nowMs;
  }
}

/** The state of one direction of the link, shared by every connection's pipe in that direction. */
class Link {
  delayMs = 0;
  /**
   * Jitter (setJitter): each chunk waits an extra 0..maxMs drawn from a seeded sequence. One
   * pipe still releases its chunks in order (a TCP stream cannot reorder its bytes), so what
   * varies is the order in which chunks of different connections arrive.
   */
  jitter: { maxMs: number; next: () => number } | null = null;
  bucket: TokenBucket | null = null;
  drip: DripWindow | null = null;
  blackholed = false;
  bytesForwarded = 0;
  /** What went through, when capturing (FaultProxy.startCapture): bounded by captureLimitBytes. */
  captured: Buffer[] | null = null;
  /** Frame tampering (setFrameTamper): applies to connections accepted after it was set. */
  frameEdit: FrameEdit | null = null;
  capturedBytes = 0;
  captureLimitBytes = 0;

  record(part: Buffer): void {
    this.bytesForwarded += part.length;
    if (this.captured === null || this.capturedBytes >= this.captureLimitBytes) return;
    const keep = part.subarray(0, this.captureLimitBytes - this.capturedBytes);
    this.captured.push(Buffer.from(keep));
    this.capturedBytes += keep.length;
  }

  /** How many of `wantBytes` may leave now (0: wait msUntilGrant). Consumes what it grants. */
  grant(wantBytes: number, nowMs: number): number {
    let n = wantBytes;
    if (this.bucket) {
      const avail = this.bucket.available(nowMs);
      if (avail < Math.min(wantBytes, this.bucket.minGrantBytes)) return 0;
      n = Math.min(n, avail);
    }
    if (this.drip) n = Math.min(n, this.drip.available(nowMs));
    if (n <= 0) return 0;
    this.bucket?.consume(n);
    this.drip?.consume(n);
    return n;
  }

  msUntilGrant(wantBytes: number, nowMs: number): number {
    let ms = 0;
    if (this.bucket) ms = Math.max(ms, this.bucket.msUntil(Math.min(wantBytes, this.bucket.minGrantBytes), nowMs));
    if (this.drip) ms = Math.max(ms, this.drip.msUntil(nowMs));
    return ms;
  }
}

interface Chunk {
  buf: Buffer;
  dueMs: number;
}

/** One direction of one connection: source socket → delayed, paced FIFO → destination socket. */
class Pipe {
  private readonly queue: Chunk[] = [];
  private head = 0;
  private lastDueMs = 0;
  queuedBytes = 0;
  private timer: NodeJS.Timeout | null = null;
  private waitingDrain = false;
  private pausedForQueue = false;
  sourceEnded = false;
  /** Set when the link had a frame edit at accept time. */
  private readonly splitter: FrameSplitter | null;
  /** dest.end() was called: everything the source sent has been handed to the destination. */
  finished = false;
  stopped = false;

  constructor(
    private readonly proxy: FaultProxy,
    private readonly link: Link,
    private readonly source: net.Socket,
    private readonly dest: net.Socket,
    tamper?: { connection: number; untaggedFrames: number },
  ) {
    this.splitter = link.frameEdit && tamper ? new FrameSplitter(tamper.connection, tamper.untaggedFrames, link.frameEdit) : null;
    source.on('data', (chunk: Buffer) => {
      if (!this.splitter) return this.onData(chunk);
      for (const frame of this.splitter.push(chunk)) this.onData(frame);
    });
    source.on('end', () => {
      this.sourceEnded = true;
      this.pump();
    });
    dest.on('drain', () => {
      if (!this.waitingDrain) return;
      this.waitingDrain = false;
      this.pump();
    });
  }

  private onData(chunk: Buffer): void {
    // During a blackhole the source is paused; anything still delivered is lost on the "wire".
    if (this.stopped || this.link.blackholed) return;
    const jitterMs = this.link.jitter ? this.link.jitter.next() * this.link.jitter.maxMs : 0;
    // Never before the chunk ahead of it: the FIFO keeps the order anyway, this keeps dueMs honest.
    this.lastDueMs = Math.max(this.lastDueMs, performance.now() + this.link.delayMs + jitterMs);
    this.queue.push({ buf: chunk, dueMs: this.lastDueMs });
    this.queuedBytes += chunk.length;
    this.proxy.notePeakQueued(this.queuedBytes);
    this.updateFlow();
    this.pump();
  }

  /** Pause the source while blackholed or while the queue is over its limit (with hysteresis). */
  updateFlow(): void {
    if (this.stopped) return;
    const max = this.proxy.maxQueuedBytes;
    if (this.queuedBytes > max) this.pausedForQueue = true;
    else if (this.queuedBytes <= max / 2) this.pausedForQueue = false;
    if (this.pausedForQueue || this.link.blackholed) this.source.pause();
    else this.source.resume();
  }

  /** Blackhole: what was queued is lost. */
  dropQueued(): void {
    this.queue.length = 0;
    this.head = 0;
    this.queuedBytes = 0;
    this.updateFlow();
  }

  stop(): void {
    this.stopped = true;
    this.clearTimer();
    this.queue.length = 0;
    this.head = 0;
    this.queuedBytes = 0;
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private arm(ms: number): void {
    // Re-checked on wake-up: a timer may fire a fraction of a millisecond early.
    this.timer = setTimeout(() => {
      this.timer = null;
      this.pump();
    }, Math.max(1, Math.ceil(ms)));
  }

  /** Release every chunk whose time has come, as far as the limits and the destination allow. */
  pump(): void {
    this.clearTimer();
    if (this.stopped || this.waitingDrain || this.link.blackholed) return;
    for (;;) {
      if (this.head >= this.queue.length) {
        if (this.head > 0) {
          this.queue.length = 0;
          this.head = 0;
        }
        if (this.sourceEnded && !this.finished) {
          this.finished = true;
          this.dest.end();
        }
        return;
      }
      const chunk = this.queue[this.head]!;
      const nowMs = performance.now();
      if (chunk.dueMs > nowMs) {
        this.arm(chunk.dueMs - nowMs);
        return;
      }
      const granted = this.link.grant(chunk.buf.length, nowMs);
      if (granted === 0) {
        this.arm(this.link.msUntilGrant(chunk.buf.length, nowMs));
        return;
      }
      let part: Buffer;
      if (granted >= chunk.buf.length) {
        part = chunk.buf;
        this.head++;
        if (this.head > 1024 && this.head * 2 > this.queue.length) {
          this.queue.splice(0, this.head);
          this.head = 0;
        }
      } else {
        part = chunk.buf.subarray(0, granted);
        chunk.buf = chunk.buf.subarray(granted);
      }
      this.queuedBytes -= part.length;
      this.link.record(part);
      const writable = this.dest.write(part);
      this.updateFlow();
      if (!writable) {
        this.waitingDrain = true;
        return;
      }
    }
  }
}

/** One proxied connection: the accepted client socket, its target socket and the two pipes. */
class ProxiedConnection {
  readonly up: Pipe;
  readonly down: Pipe;
  /** Was open during a blackhole: its streams lost bytes, so heal() destroys it. */
  tainted = false;
  private aborted = false;
  private openSockets = 2;

  constructor(
    private readonly proxy: FaultProxy,
    readonly id: number,
    readonly client: net.Socket,
    readonly target: net.Socket,
  ) {
    this.up = new Pipe(proxy, proxy.links.up, client, target, { connection: id, untaggedFrames: HANDSHAKE_FRAMES.up });
    this.down = new Pipe(proxy, proxy.links.down, target, client, { connection: id, untaggedFrames: HANDSHAKE_FRAMES.down });
    for (const [name, sock] of [['client', client], ['target', target]] as const) {
      sock.on('error', (err) => proxy.log(`connection ${id}: ${name} socket error: ${err.message}`));
      sock.on('close', () => this.onSocketClose());
    }
  }

  private onSocketClose(): void {
    this.openSockets--;
    const orderly = this.up.finished && this.down.finished;
    // A partition hides a close from the other side: keep it open until heal() destroys it.
    if (!orderly && !(this.tainted && this.proxy.isBlackholed)) this.abort(false);
    if (this.openSockets === 0) this.forget();
  }

  /** Destroy both sides; `reset` sends RST (a cut), otherwise a plain close (propagating one). */
  abort(reset: boolean): void {
    if (this.aborted) return;
    this.aborted = true;
    this.up.stop();
    this.down.stop();
    destroySocket(this.client, reset);
    destroySocket(this.target, reset);
    this.forget();
  }

  private forget(): void {
    this.up.stop();
    this.down.stop();
    this.proxy.connections.delete(this);
  }
}

function destroySocket(sock: net.Socket, reset: boolean): void {
  if (sock.destroyed) return;
  try {
    if (reset && !sock.connecting) sock.resetAndDestroy();
    else sock.destroy();
  } catch {
    sock.destroy();
  }
}

export class FaultProxy {
  readonly links: Record<Direction, Link> = { up: new Link(), down: new Link() };
  /** @internal */
  readonly connections = new Set<ProxiedConnection>();
  /** Accepted while blackholed: never connected to the target, destroyed by heal(). */
  private readonly held = new Set<net.Socket>();
  readonly maxQueuedBytes: number;
  private cutActive = false;
  private closed = false;
  private nextId = 1;
  connectionsAccepted = 0;
  /** Accepted during a cut and destroyed at once. */
  connectionsRefused = 0;
  /**
   * Split every later connection's `dir` traffic into peer-protocol frames and let `edit`
   * decide what is sent instead of each (frame-tamper.ts); null stops for new connections.
   */
  setFrameTamper(dir: Direction, edit: FrameEdit | null): void {
    this.links[dir].frameEdit = edit;
  }

  /** Highest number of bytes one pipe has had queued (bounded by maxQueuedBytes + one chunk). */
  peakQueuedBytes = 0;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    readonly host: string,
    private readonly target: { host: string; port: number },
    private readonly logFn: ((msg: string) => void) | undefined,
    maxQueuedBytes: number,
  ) {
    this.maxQueuedBytes = maxQueuedBytes;
    server.on('connection', (sock) => this.accept(sock));
    server.on('error', (err) => this.log(`listener error: ${err.message}`));
  }

  static async start(opts: FaultProxyOptions): Promise<FaultProxy> {
    const listenHost = opts.listenHost ?? '127.0.0.1';
    if (!isLoopbackIPv4(listenHost)) throw new Error(`FaultProxy: listen address ${listenHost} is not in 127.0.0.0/8`);
    if (!isLoopbackIPv4(opts.targetHost)) throw new Error(`FaultProxy: target address ${opts.targetHost} is not in 127.0.0.0/8`);
    if (!Number.isInteger(opts.targetPort) || opts.targetPort <= 0 || opts.targetPort > 65535) throw new Error(`FaultProxy: bad target port ${opts.targetPort}`);
    const maxQueuedBytes = opts.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    if (!(maxQueuedBytes >= 64 * 1024)) throw new Error('FaultProxy: maxQueuedBytes must be at least 64 KiB');
    // allowHalfOpen: a FIN travels through the pipe (after the delayed data) like any byte.
    const server = net.createServer({ allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.listenPort ?? 0, listenHost, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const port = (server.address() as net.AddressInfo).port;
    return new FaultProxy(server, port, listenHost, { host: opts.targetHost, port: opts.targetPort }, opts.log, maxQueuedBytes);
  }

  /** 'HOST:PORT' to give the client instead of the target's address. */
  get address(): string {
    return `${this.host}:${this.port}`;
  }

  /** Keep a copy of the bytes forwarded from now on, at most `limitBytes` per direction (a wire capture). */
  startCapture(limitBytes = 64 * 1024 * 1024): void {
    for (const link of Object.values(this.links)) {
      link.captured = [];
      link.capturedBytes = 0;
      link.captureLimitBytes = limitBytes;
    }
  }

  /** The bytes captured in one direction since startCapture(). */
  captured(dir: Direction): Buffer {
    return Buffer.concat(this.links[dir].captured ?? []);
  }

  get bytesForwarded(): { up: number; down: number } {
    return { up: this.links.up.bytesForwarded, down: this.links.down.bytesForwarded };
  }

  get activeConnections(): number {
    return this.connections.size + this.held.size;
  }

  /** Bytes accepted from sources and not yet handed to destinations, all pipes together. */
  get queuedBytes(): number {
    let sum = 0;
    for (const c of this.connections) sum += c.up.queuedBytes + c.down.queuedBytes;
    return sum;
  }

  /** @internal */
  get isBlackholed(): boolean {
    return this.links.up.blackholed || this.links.down.blackholed;
  }

  /** @internal */
  notePeakQueued(bytes: number): void {
    if (bytes > this.peakQueuedBytes) this.peakQueuedBytes = bytes;
  }

  /** @internal */
  log(msg: string): void {
    this.logFn?.(`fault-proxy ${this.address}: ${msg}`);
  }

  /** One-way latency added to every byte (chunks already queued keep their release time). */
  setDelay(delayMs: number, dir: Directions = 'both'): void {
    if (!(Number.isFinite(delayMs) && delayMs >= 0)) throw new Error(`FaultProxy.setDelay: bad delay ${delayMs}`);
    for (const d of directionsOf(dir)) this.links[d].delayMs = delayMs;
    this.log(`delay ${dir} ${delayMs} ms`);
  }

  /**
   * Per-chunk jitter: every chunk waits an extra 0..maxMs (on top of setDelay), drawn from a
   * sequence seeded by `seed` (each direction its own). Order within a connection is kept (a
   * TCP stream cannot reorder bytes); chunks of different connections overtake each other.
   * 0 ends it; reset() too.
   */
  setJitter(maxMs: number, seed: number, dir: Directions = 'both'): void {
    if (!(Number.isFinite(maxMs) && maxMs >= 0)) throw new Error(`FaultProxy.setJitter: bad jitter ${maxMs}`);
    for (const d of directionsOf(dir)) {
      this.links[d].jitter = maxMs === 0 ? null : { maxMs, next: mulberry32(d === 'up' ? seed : seed ^ 0x5bd1e995) };
    }
    this.log(`jitter ${dir} 0-${maxMs} ms (seed ${seed})`);
  }

  /** Token-bucket pacing shared by all connections in a direction; 0 = unlimited. */
  setBandwidth(bytesPerS: number, dir: Directions = 'both', burstBytes?: number): void {
    if (!(Number.isFinite(bytesPerS) && bytesPerS >= 0)) throw new Error(`FaultProxy.setBandwidth: bad rate ${bytesPerS}`);
    const burst = burstBytes ?? Math.min(MAX_BURST_BYTES, Math.max(MIN_BURST_BYTES, Math.round(bytesPerS / 20)));
    if (!(burst >= 1)) throw new Error(`FaultProxy.setBandwidth: bad burst ${burst}`);
    for (const d of directionsOf(dir)) this.links[d].bucket = bytesPerS === 0 ? null : new TokenBucket(bytesPerS, burst, performance.now());
    this.log(`bandwidth ${dir} ${bytesPerS === 0 ? 'unlimited' : `${bytesPerS} B/s, burst ${burst} B`}`);
    this.kick();
  }

  /** Slow drip: at most `bytesPerInterval` bytes per `intervalMs` (until heal()). */
  drip(bytesPerInterval: number, intervalMs: number, dir: Directions = 'both'): void {
    if (!(Number.isInteger(bytesPerInterval) && bytesPerInterval >= 1)) throw new Error(`FaultProxy.drip: bad byte count ${bytesPerInterval}`);
    if (!(Number.isFinite(intervalMs) && intervalMs >= 1)) throw new Error(`FaultProxy.drip: bad interval ${intervalMs}`);
    for (const d of directionsOf(dir)) this.links[d].drip = new DripWindow(bytesPerInterval, intervalMs);
    this.log(`drip ${dir} ${bytesPerInterval} B per ${intervalMs} ms`);
    this.kick();
  }

  /** Destroy every connection (both sides see a reset) and refuse new ones until heal(). */
  cut(): void {
    this.cutActive = true;
    const n = this.activeConnections;
    for (const conn of [...this.connections]) conn.abort(true);
    for (const sock of [...this.held]) destroySocket(sock, true);
    this.held.clear();
    this.log(`cut: ${n} connection(s) reset, refusing new ones`);
  }

  /**
   * Silent partition: no byte is forwarded and nothing is closed; sources stop being read (so
   * senders feel a stalled link) and queued bytes are lost. Connections open meanwhile are
   * destroyed by heal(), since their streams lost data.
   */
  blackhole(dir: Directions = 'both'): void {
    for (const d of directionsOf(dir)) this.links[d].blackholed = true;
    for (const conn of this.connections) {
      conn.tainted = true;
      for (const d of directionsOf(dir)) (d === 'up' ? conn.up : conn.down).dropQueued();
    }
    this.log(`blackhole ${dir}: ${this.connections.size} connection(s) frozen`);
  }

  /** End cut, blackhole and drip (delay, jitter and bandwidth stay; reset() clears them too). */
  heal(): void {
    this.cutActive = false;
    for (const d of ['up', 'down'] as const) {
      this.links[d].blackholed = false;
      this.links[d].drip = null;
    }
    let destroyed = 0;
    for (const conn of [...this.connections]) {
      if (conn.tainted) {
        conn.abort(false);
        destroyed++;
      }
    }
    for (const sock of this.held) destroySocket(sock, false);
    destroyed += this.held.size;
    this.held.clear();
    this.kick();
    this.log(`heal: ${destroyed} partitioned connection(s) destroyed`);
  }

  /** heal() and no delay, no jitter, no bandwidth limit. */
  reset(): void {
    for (const d of ['up', 'down'] as const) {
      this.links[d].delayMs = 0;
      this.links[d].jitter = null;
      this.links[d].bucket = null;
    }
    this.heal();
  }

  /** Stop listening and destroy everything. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const closedListener = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const conn of [...this.connections]) conn.abort(false);
    for (const sock of this.held) sock.destroy();
    this.held.clear();
    await closedListener;
  }

  /** Limits changed: let every pipe re-evaluate now rather than at its old timer. */
  private kick(): void {
    for (const conn of this.connections) {
      conn.up.updateFlow();
      conn.down.updateFlow();
      conn.up.pump();
      conn.down.pump();
    }
  }

  private accept(client: net.Socket): void {
    this.connectionsAccepted++;
    if (this.closed || this.cutActive || this.isBlackholed) {
      client.on('error', (err) => this.log(`refused/held client socket error: ${err.message}`));
    }
    if (this.closed || this.cutActive) {
      this.connectionsRefused++;
      destroySocket(client, true);
      return;
    }
    if (this.isBlackholed) {
      // The SYN never reaches the target in a real partition: hold the client, read nothing.
      client.pause();
      this.held.add(client);
      client.once('close', () => this.held.delete(client));
      return;
    }
    const id = this.nextId++;
    const target = net.connect({ host: this.target.host, port: this.target.port, allowHalfOpen: true });
    client.setNoDelay(true);
    target.setNoDelay(true);
    this.connections.add(new ProxiedConnection(this, id, client, target));
  }
}
