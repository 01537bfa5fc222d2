// The client side of the NBD handshake (fixed newstyle, NBD_OPT_GO only), for NbdClient, and
// nbdGreets, the probe whether a socket is served by an NBD server at all. The handshake reads
// the greeting, sends the client flags and NBD_OPT_GO, and collects the NBD_REP_INFO replies
// until the ACK; bytes the server sent after it belong to the transmission phase and are
// returned (rest). Deadlines are the caller's (NbdClient.connect) or the injected Clock's.
import net from 'node:net';
import { systemClock, type Clock } from '../common/util/clock.js';
import * as P from './nbd-protocol.js';
import { NbdConnectionClosed } from './nbd-client-errors.js';

export interface BlockSizeInfo {
  minimum: number;
  preferred: number;
  maximum: number;
}

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

export async function clientHandshake(socket: net.Socket, exportName: string, requestInfo: boolean) {
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
