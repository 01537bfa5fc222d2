// A minimal NBD client (used by the demo, the tests and the benchmarks): fixed newstyle handshake, NBD_OPT_GO with the export name,
// then pipelined READ / WRITE / FLUSH / TRIM / WRITE_ZEROES with 64-bit cookies, replies matched
// by cookie (simple replies only: we never ask for structured replies). Each request returns a
// promise that settles exactly when its reply has been read from the socket, so a test knows
// precisely which requests the server acknowledged; a failed request rejects with NbdError
// carrying the NBD errno, and requests still in flight when the connection ends reject with
// NbdConnectionClosed. Deadlines (handshake, disconnect, nbdGreets) run on the injected Clock.
import net from 'node:net';
import { failStopOnInvariant } from '../common/util/assert.js';
import { systemClock, type Clock, type Timer } from '../common/util/clock.js';
import * as P from './nbd-protocol.js';

export class NbdError extends Error {
  override name = 'NbdError';
  constructor(readonly errno: number, readonly command: string, message?: string) {
    super(message ?? `${command} failed with NBD error ${errnoName(errno)} (${errno})`);
  }

  get code(): string {
    return errnoName(this.errno);
  }
}

/** The connection ended (EOF, reset, destroy) before this request was answered. */
export class NbdConnectionClosed extends Error {
  override name = 'NbdConnectionClosed';
}

export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(P.NBD_ERRNO)) if (value === errno) return name;
  return `errno ${errno}`;
}

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

export interface BlockSizeInfo {
  minimum: number;
  preferred: number;
  maximum: number;
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
      const init = await withTimeout(clock, handshake(socket, exportName, opts.requestInfo ?? true), timeoutMs, `NBD handshake with ${socketPath} (export ${exportName})`);
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

// ---- handshake --------------------------------------------------------------------------------

/** Buffered reader over a socket during the handshake. */
class HandshakeReader {
  private buf = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private error: Error | null = null;

  constructor(private readonly socket: net.Socket) {
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
  }

  private readonly onData = (chunk: Buffer) => {
    this.buf = Buffer.concat([this.buf, chunk]);
    this.wake();
  };

  private readonly onError = (err: Error) => {
    this.error = new NbdConnectionClosed(`connection error during handshake: ${err.message}`);
    this.wake();
  };

  private readonly onClose = () => {
    this.error ??= new NbdConnectionClosed('server closed the connection during the handshake');
    this.wake();
  };

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.error) throw this.error;
      await new Promise<void>((r) => (this.waiter = r));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Stop listening; returns bytes read past the handshake. */
  detach(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.off('error', this.onError);
    this.socket.off('close', this.onClose);
    return Buffer.from(this.buf);
  }
}

async function handshake(socket: net.Socket, exportName: string, requestInfo: boolean) {
  const reader = new HandshakeReader(socket);
  const greeting = await reader.read(P.SERVER_GREETING_BYTES);
  if (!greeting.subarray(0, 8).equals(P.NBD_MAGIC)) throw new Error('not an NBD server (no NBDMAGIC)');
  if (!greeting.subarray(8, 16).equals(P.NBD_OPTS_MAGIC)) throw new Error('server does not speak the newstyle protocol (no IHAVEOPT)');
  const serverFlags = greeting.readUInt16BE(16);
  if ((serverFlags & P.NBD_FLAG_FIXED_NEWSTYLE) === 0) throw new Error('server does not offer fixed newstyle');
  const clientFlags = P.NBD_FLAG_C_FIXED_NEWSTYLE | (serverFlags & P.NBD_FLAG_NO_ZEROES ? P.NBD_FLAG_C_NO_ZEROES : 0);
  const flagsBuf = Buffer.alloc(4);
  flagsBuf.writeUInt32BE(clientFlags, 0);
  socket.write(flagsBuf);
  const infos = requestInfo ? [P.NBD_INFO_BLOCK_SIZE, P.NBD_INFO_NAME, P.NBD_INFO_DESCRIPTION] : [];
  socket.write(P.encodeOptionRequest(P.NBD_OPT_GO, P.encodeInfoRequest(exportName, infos)));

  let size: number | undefined;
  let flags: number | undefined;
  let blockSize: BlockSizeInfo | undefined;
  let description: string | undefined;
  let name = exportName;
  for (let replies = 0; replies < 64; replies++) {
    const head = await reader.read(P.OPTION_REPLY_HEADER_BYTES);
    const length = head.readUInt32BE(16);
    if (length > 1 << 20) throw new Error(`option reply of ${length} bytes`);
    const data = length > 0 ? Buffer.from(await reader.read(length)) : Buffer.alloc(0);
    const decoded = P.decodeOptionReply(Buffer.concat([head, data]));
    if (!decoded) throw new Error('truncated option reply');
    const { reply } = decoded;
    if (reply.option !== P.NBD_OPT_GO) throw new Error(`reply for option ${P.optionName(reply.option)} while waiting for GO`);
    if (reply.replyType & P.NBD_REP_FLAG_ERROR) {
      const kind = Object.entries(P).find(([k, v]) => k.startsWith('NBD_REP_ERR_') && v === reply.replyType)?.[0] ?? `0x${reply.replyType.toString(16)}`;
      throw new Error(`NBD_OPT_GO for export ${JSON.stringify(exportName)} refused: ${kind}${reply.data.length ? `: ${reply.data.toString('utf8')}` : ''}`);
    }
    if (reply.replyType === P.NBD_REP_ACK) {
      if (size === undefined || flags === undefined) throw new Error('server acknowledged GO without NBD_INFO_EXPORT');
      const rest = reader.detach();
      return { name, size, flags, ...(blockSize ? { blockSize } : {}), ...(description !== undefined ? { description } : {}), rest };
    }
    if (reply.replyType !== P.NBD_REP_INFO) continue; // unknown reply types are ignored (spec)
    if (reply.data.length < 2) throw new Error('NBD_REP_INFO without a type');
    const infoType = reply.data.readUInt16BE(0);
    if (infoType === P.NBD_INFO_EXPORT) {
      if (reply.data.length !== 12) throw new Error(`NBD_INFO_EXPORT of ${reply.data.length} bytes`);
      size = reply.data.readUInt32BE(2) * 0x1_0000_0000 + reply.data.readUInt32BE(6);
      flags = reply.data.readUInt16BE(10);
    } else if (infoType === P.NBD_INFO_BLOCK_SIZE && reply.data.length === 14) {
      blockSize = { minimum: reply.data.readUInt32BE(2), preferred: reply.data.readUInt32BE(6), maximum: reply.data.readUInt32BE(10) };
    } else if (infoType === P.NBD_INFO_NAME) {
      name = reply.data.toString('utf8', 2);
    } else if (infoType === P.NBD_INFO_DESCRIPTION) {
      description = reply.data.toString('utf8', 2);
    }
  }
  throw new Error('too many option replies to NBD_OPT_GO');
}

function withTimeout<T>(clock: Clock, p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: Timer | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = clock.setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => timer?.cancel());
}

/** True if a Unix socket accepts a connection and sends the NBD greeting within timeoutMs. */
export function nbdGreets(socketPath: string, timeoutMs: number, clock: Clock = systemClock): Promise<boolean> {
  return new Promise((resolveProbe) => {
    const sock = net.createConnection({ path: socketPath });
    let got = Buffer.alloc(0);
    const done = (ok: boolean) => {
      timer.cancel();
      sock.destroy();
      resolveProbe(ok);
    };
    const timer = clock.setTimeout(() => done(false), timeoutMs);
    sock.on('error', () => done(false));
    sock.on('close', () => done(false));
    sock.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= 8) done(got.subarray(0, 8).toString('latin1') === 'NBDMAGIC');
    });
  });
}
