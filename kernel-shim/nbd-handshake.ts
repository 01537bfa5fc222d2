// The handshake phase of one NBD connection: fixed newstyle negotiation only (proto.md,
// "Fixed newstyle negotiation"). The server greets, the client sends its flags, then options
// until one of them selects an export (NBD_OPT_GO, or the old NBD_OPT_EXPORT_NAME) or ends the
// session (NBD_OPT_ABORT). INFO and LIST are answered; every other option gets ERR_UNSUP.
//
// Order on the wire: greeting -> client flags (fixed newstyle required, unknown bits refused)
// -> options, each answered in arrival order. Requests pipelined right behind NBD_OPT_GO in the
// same chunk are handed to the transmission phase unchanged (onData returns them).
//
// Limits against hostile clients: a deadline for the whole handshake (started with the
// greeting), an option payload limit (MAX_OPTION_BYTES) and a limit on option replies the
// client leaves unread. Garbage ends the connection through host.protocolError (one log line).
import type net from 'node:net';
import type { Timer } from '../common/util/clock.js';
import * as P from './nbd-protocol.js';
import {
  HANDSHAKE_FLAGS, MAX_OPTION_BYTES, MAX_PAYLOAD_BYTES, MAX_UNREAD_OPTION_REPLY_BYTES, MIN_BLOCK_SIZE,
  PREFERRED_BLOCK_SIZE, TRANSMISSION_FLAGS, type ExportEntry, type ServerContext,
} from './nbd-export.js';

/** What the handshake needs of its connection (nbd-connection.ts). */
export interface HandshakeHost {
  readonly socket: net.Socket;
  /** the export whose socket the client came in on; null for TCP */
  readonly homeExport: ExportEntry | null;
  /** garbage or a limit: log one line and close (countAsGarbage: count it in protocolErrors) */
  protocolError(msg: string, countAsGarbage?: boolean): void;
  /** NBD_OPT_ABORT was acknowledged: end the connection politely */
  abort(): void;
  /** an export was selected: the connection enters transmission on it */
  enterTransmission(entry: ExportEntry): void;
}

type Step = 'flags' | 'options' | 'done';

const EMPTY = Buffer.alloc(0);

export class Handshake {
  private step: Step = 'flags';
  private noZeroes = false;
  private entered = false;
  /** bytes of an incomplete flags field or option, kept until the rest arrives */
  private buf: Buffer = EMPTY;
  private deadline: Timer | null = null;

  constructor(
    private readonly server: ServerContext,
    private readonly host: HandshakeHost,
  ) {}

  /** Arms the handshake deadline and sends the greeting. */
  start(): void {
    const timeoutMs = this.server.handshakeTimeoutMs;
    this.deadline = this.server.clock.setTimeout(() => {
      this.deadline = null;
      this.fail(`handshake not completed within ${timeoutMs} ms`);
    }, timeoutMs);
    this.host.socket.write(P.encodeServerGreeting(HANDSHAKE_FLAGS));
  }

  /** The handshake is over (done, or the connection closed): no deadline, no buffered bytes. */
  dispose(): void {
    this.step = 'done';
    this.cancelDeadline();
    this.buf = EMPTY;
  }

  /**
   * Consumes handshake bytes. Returns the bytes after the option that entered transmission
   * (possibly empty: pipelined requests), or null while the handshake goes on or failed.
   */
  onData(chunk: Buffer): Buffer | null {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    let pos = 0;
    while (this.step !== 'done') {
      const buf = this.buf;
      if (this.step === 'flags') {
        if (buf.length - pos < P.CLIENT_FLAGS_BYTES) break;
        this.onClientFlags(P.decodeClientFlags(buf, pos));
        pos += P.CLIENT_FLAGS_BYTES;
        continue;
      }
      if (buf.length - pos < P.OPTION_HEADER_BYTES) break;
      const h = P.decodeOptionHeader(buf, pos);
      if (!h.magicOk) return this.fail('bad option magic');
      if (h.length > MAX_OPTION_BYTES) return this.fail(`${P.optionName(h.option)} with ${h.length} bytes of data (limit ${MAX_OPTION_BYTES})`);
      if (buf.length - pos < P.OPTION_HEADER_BYTES + h.length) break;
      const data = buf.subarray(pos + P.OPTION_HEADER_BYTES, pos + P.OPTION_HEADER_BYTES + h.length);
      pos += P.OPTION_HEADER_BYTES + h.length;
      this.handleOption(h.option, data);
      if (this.host.socket.writableLength > MAX_UNREAD_OPTION_REPLY_BYTES) return this.fail('client does not read option replies');
    }
    const rest = this.buf.subarray(pos);
    this.buf = EMPTY;
    if (this.step !== 'done') {
      this.buf = Buffer.from(rest); // copy: do not pin a large chunk for a few bytes
      return null;
    }
    return this.entered ? rest : null;
  }

  private onClientFlags(flags: number): void {
    if ((flags & P.NBD_FLAG_C_FIXED_NEWSTYLE) === 0 || (flags & ~HANDSHAKE_FLAGS) !== 0) {
      this.fail(`bad client flags 0x${flags.toString(16)} (fixed newstyle is required)`);
      return;
    }
    this.noZeroes = (flags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
    this.step = 'options';
  }

  private handleOption(option: number, data: Buffer): void {
    switch (option) {
      case P.NBD_OPT_EXPORT_NAME: {
        const name = data.toString('utf8');
        const entry = this.server.lookupExport(this.host.homeExport, name);
        if (!entry) {
          // The protocol has no error reply for EXPORT_NAME: the session must end.
          this.fail(`NBD_OPT_EXPORT_NAME for unknown export ${JSON.stringify(name)}`, false);
          return;
        }
        this.host.socket.write(P.encodeExportNameReply(entry.backend.sizeBytes, TRANSMISSION_FLAGS, this.noZeroes));
        this.enter(entry);
        return;
      }
      case P.NBD_OPT_ABORT:
        this.host.socket.write(P.encodeOptionReply(option, P.NBD_REP_ACK));
        this.dispose();
        this.host.abort();
        return;
      case P.NBD_OPT_LIST:
        this.list(option, data);
        return;
      case P.NBD_OPT_INFO:
      case P.NBD_OPT_GO:
        this.infoOrGo(option, data);
        return;
      default:
        // STARTTLS (we run NOTLS), STRUCTURED_REPLY, meta contexts, extended headers, unknown.
        this.optionError(option, P.NBD_REP_ERR_UNSUP, `${P.optionName(option)} is not supported`);
        return;
    }
  }

  private list(option: number, data: Buffer): void {
    if (data.length !== 0) {
      this.optionError(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
      return;
    }
    for (const e of this.server.visibleExports(this.host.homeExport)) {
      this.host.socket.write(P.encodeOptionReply(option, P.NBD_REP_SERVER, P.encodeRepServer(e.name, e.description)));
    }
    this.host.socket.write(P.encodeOptionReply(option, P.NBD_REP_ACK));
  }

  private infoOrGo(option: number, data: Buffer): void {
    const req = P.decodeInfoRequest(data);
    if ('error' in req) {
      this.optionError(option, P.NBD_REP_ERR_INVALID, req.error);
      return;
    }
    const entry = this.server.lookupExport(this.host.homeExport, req.name);
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
    this.host.socket.write(Buffer.concat(replies));
    if (option === P.NBD_OPT_GO) this.enter(entry);
  }

  private optionError(option: number, replyType: number, message: string): void {
    this.host.socket.write(P.encodeOptionReply(option, replyType, Buffer.from(message, 'utf8')));
  }

  private enter(entry: ExportEntry): void {
    this.cancelDeadline();
    this.step = 'done';
    this.entered = true;
    this.host.enterTransmission(entry);
  }

  private fail(msg: string, countAsGarbage = true): null {
    this.dispose();
    this.host.protocolError(msg, countAsGarbage);
    return null;
  }

  private cancelDeadline(): void {
    this.deadline?.cancel();
    this.deadline = null;
  }
}
