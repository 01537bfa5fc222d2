// A minimal NBD client (used by the demo, the tests and the benchmarks): fixed newstyle
// handshake with NBD_OPT_GO for the export name (nbd-client-handshake.ts), then pipelined
// READ / WRITE / FLUSH / TRIM / WRITE_ZEROES with 64-bit cookies, replies matched
// by cookie (simple replies only: we never ask for structured replies). Each request returns a
// promise that settles exactly when its reply has been read from the socket, so a test knows
// precisely which requests the server acknowledged; a failed request rejects with NbdError
// carrying the NBD errno, and requests still in flight when the connection ends reject with
// NbdConnectionClosed. Deadlines (handshake, disconnect, nbdGreets) run on the injected Clock.
import net from 'node:net';
import { failStopOnInvariant } from '../common/util/assert.js';
import { systemClock, type Clock, type Timer } from '../common/util/clock.js';
import * as P from './nbd-protocol.js';
import { NbdConnectionClosed, NbdError } from './nbd-client-errors.js';
import { clientHandshake, type BlockSizeInfo } from './nbd-client-handshake.js';

export { NbdError, NbdConnectionClosed, errnoName } from './nbd-client-errors.js';
export { nbdGreets, type BlockSizeInfo } from './nbd-client-handshake.js';

export interface NbdConnectOptions {
  /** Handshake deadline (connect + options). Default 10 s. */
  timeoutMs?: number;
  /** Ask for NBD_INFO_BLOCK_SIZE (and NAME/DESCRIPTION) in NBD_OPT_GO. Default true. */
  requestInfo?: boolean;
  /** Time for the handshake and disconnect deadlines. Default systemClock. */
  clock?: Clock;
}

export interface RequestOptions {
  fua?: boolean;
}

interface Pending {
  command: string;
  /** READ: bytes of payload that follow a successful reply */
  readLength: number;
  resolve: (data: Buffer | undefined) => void;
  reject: (err: Error) => void;
}

export class NbdClient {
  readonly exportName: string;
  readonly sizeBytes: number;
  readonly transmissionFlags: number;
  readonly blockSize: BlockSizeInfo | undefined;
  readonly description: string | undefined;
  /** Settles (never rejects) when the connection is gone; the value says why. */
  readonly closed: Promise<Error | undefined>;

  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  private buf: Buffer;
  /** a READ reply whose payload is still arriving */
  private reading: { pending: Pending; data: Buffer; fill: number } | null = null;
  private closeReason: Error | undefined;
  private isClosed = false;
  private resolveClosed!: (why: Error | undefined) => void;

  private constructor(private readonly socket: net.Socket, private readonly clock: Clock, init: { name: string; size: number; flags: number; blockSize?: BlockSizeInfo; description?: string; rest: Buffer }) {
    this.exportName = init.name;
    this.sizeBytes = init.size;
    this.transmissionFlags = init.flags;
    this.blockSize = init.blockSize;
    this.description = init.description;
    this.buf = init.rest;
    this.closed = new Promise((r) => (this.resolveClosed = r));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail(new NbdConnectionClosed(`connection error: ${err.message}`)));
    socket.on('close', () => this.fail(new NbdConnectionClosed('connection closed by the server')));
    socket.on('end', () => this.fail(new NbdConnectionClosed('server ended the connection')));
    if (this.buf.length > 0) this.parse();
    if (socket.destroyed) this.fail(new NbdConnectionClosed('connection closed right after the handshake'));
  }

  /** Connects to a Unix socket and negotiates `exportName` with NBD_OPT_GO. */
  static async connect(socketPath: string, exportName: string, opts: NbdConnectOptions = {}): Promise<NbdClient> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const clock = opts.clock ?? systemClock;
    const socket = net.createConnection({ path: socketPath });
    // Never an unhandled 'error' event (it would kill the test process): 'close' follows it.
    socket.on('error', () => undefined);
    try {
      const init = await withTimeout(clock, clientHandshake(socket, exportName, opts.requestInfo ?? true), timeoutMs, `NBD handshake with ${socketPath} (export ${exportName})`);
      return new NbdClient(socket, clock, init);
    } catch (err) {
      socket.destroy();
      throw err;
    }
  }

  get inFlight(): number {
    return this.pending.size;
  }

  get isOpen(): boolean {
    return !this.isClosed;
  }

  can(flag: number): boolean {
    return (this.transmissionFlags & flag) !== 0;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.submit(P.NBD_CMD_READ, 0, offset, length, undefined, 'READ') as Promise<Buffer>;
  }

  async write(offset: number, data: Buffer, opts: RequestOptions = {}): Promise<void> {
    await this.submit(P.NBD_CMD_WRITE, opts.fua ? P.NBD_CMD_FLAG_FUA : 0, offset, data.length, data, opts.fua ? 'WRITE+FUA' : 'WRITE');
  }

  async flush(): Promise<void> {
    await this.submit(P.NBD_CMD_FLUSH, 0, 0, 0, undefined, 'FLUSH');
  }

  async trim(offset: number, length: number, opts: RequestOptions = {}): Promise<void> {
    await this.submit(P.NBD_CMD_TRIM, opts.fua ? P.NBD_CMD_FLAG_FUA : 0, offset, length, undefined, 'TRIM');
  }

  async writeZeroes(offset: number, length: number, opts: RequestOptions & { noHole?: boolean } = {}): Promise<void> {
    const flags = (opts.fua ? P.NBD_CMD_FLAG_FUA : 0) | (opts.noHole ? P.NBD_CMD_FLAG_NO_HOLE : 0);
    await this.submit(P.NBD_CMD_WRITE_ZEROES, flags, offset, length, undefined, opts.fua ? 'WRITE_ZEROES+FUA' : 'WRITE_ZEROES');
  }

  /** Reads [offset, offset+length) in pipelined chunks of at most chunkBytes. */
  async readRange(offset: number, length: number, chunkBytes = 4 << 20, depth = 4): Promise<Buffer> {
    const out = Buffer.allocUnsafe(length);
    let next = 0;
    const worker = async () => {
      while (next < length) {
        const at = next;
        const n = Math.min(chunkBytes, length - at);
        next += n;
        const data = await this.read(offset + at, n);
        data.copy(out, at);
      }
    };
    await Promise.all(Array.from({ length: depth }, worker));
    return out;
  }

  /** Polite close: NBD_CMD_DISC after the requests in flight are answered, then end. */
  async disconnect(timeoutMs = 10_000): Promise<void> {
    if (this.isClosed) return;
    const inFlight = [...this.pending.values()].map((p) => new Promise<void>((r) => {
      const { resolve, reject } = p;
      p.resolve = (d) => { resolve(d); r(); };
      p.reject = (e) => { reject(e); r(); };
    }));
    // Not answered in time: disconnect anyway (they reject with NbdConnectionClosed).
    await withTimeout(this.clock, Promise.all(inFlight), timeoutMs, 'requests in flight before NBD_CMD_DISC').catch(failStopOnInvariant);
    if (!this.isClosed) {
      this.socket.write(P.encodeRequestHeader({ type: P.NBD_CMD_DISC, handleLo: 0 }));
      this.socket.end();
    }
    await withTimeout(this.clock, this.closed, timeoutMs, 'server closing after NBD_CMD_DISC').catch((err: unknown) => {
      failStopOnInvariant(err);
      this.destroy();
    });
  }

  /** Hard close: every request in flight rejects with NbdConnectionClosed. */
  destroy(): void {
    this.fail(new NbdConnectionClosed('connection destroyed by the client'));
  }

  private submit(type: number, flags: number, offset: number, length: number, payload: Buffer | undefined, command: string): Promise<Buffer | undefined> {
    if (this.isClosed) return Promise.reject(this.closeReason ?? new NbdConnectionClosed('connection is closed'));
    const cookie = this.nextCookie++;
    const header = P.encodeRequestHeader({
      type, flags, offset, length,
      handleHi: Number(cookie >> 32n), handleLo: Number(cookie & 0xffff_ffffn),
    });
    return new Promise<Buffer | undefined>((resolve, reject) => {
      this.pending.set(cookie, { command, readLength: type === P.NBD_CMD_READ ? length : 0, resolve, reject });
      if (payload && payload.length > 0) {
        this.socket.cork();
        this.socket.write(header);
        this.socket.write(payload);
        this.socket.uncork();
      } else {
        this.socket.write(header);
      }
    });
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    this.parse();
  }

  private parse(): void {
    let pos = 0;
    const buf = this.buf;
    while (!this.isClosed) {
      if (this.reading) {
        const r = this.reading;
        const n = Math.min(buf.length - pos, r.data.length - r.fill);
        buf.copy(r.data, r.fill, pos, pos + n);
        r.fill += n;
        pos += n;
        if (r.fill < r.data.length) break;
        this.reading = null;
        r.pending.resolve(r.data);
        continue;
      }
      if (buf.length - pos < P.SIMPLE_REPLY_HEADER_BYTES) break;
      const h = P.decodeSimpleReplyHeader(buf, pos);
      if (h.magic !== P.NBD_SIMPLE_REPLY_MAGIC) {
        this.protocolError(`unexpected reply magic 0x${h.magic.toString(16)} (only simple replies were negotiated)`);
        return;
      }
      pos += P.SIMPLE_REPLY_HEADER_BYTES;
      const cookie = (BigInt(h.handleHi) << 32n) | BigInt(h.handleLo);
      const p = this.pending.get(cookie);
      if (!p) {
        this.protocolError(`reply for unknown cookie ${cookie}`);
        return;
      }
      this.pending.delete(cookie);
      if (h.error !== 0) {
        p.reject(new NbdError(h.error, p.command));
      } else if (p.readLength > 0) {
        this.reading = { pending: p, data: Buffer.allocUnsafe(p.readLength), fill: 0 };
      } else {
        p.resolve(undefined);
      }
    }
    this.buf = pos >= buf.length ? Buffer.alloc(0) : buf.subarray(pos);
  }

  private protocolError(msg: string): void {
    this.fail(new Error(`NBD protocol error: ${msg}`));
  }

  private fail(reason: Error): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.closeReason = reason;
    const pending = [...this.pending.values()];
    this.pending.clear();
    if (this.reading) pending.push(this.reading.pending);
    this.reading = null;
    for (const p of pending) p.reject(reason instanceof NbdConnectionClosed ? reason : new NbdConnectionClosed(reason.message));
    this.socket.destroy();
    this.resolveClosed(reason);
  }
}

function withTimeout<T>(clock: Clock, p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: Timer | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = clock.setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => timer?.cancel());
}
