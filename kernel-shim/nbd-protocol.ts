// NBD protocol constants and pure encoders/decoders (fixed newstyle handshake, simple replies).
// Source: NetworkBlockDevice/nbd doc/proto.md. All integers are big-endian on the wire.
// No I/O here: nbd-server.ts does the sockets.

// ---- magics -------------------------------------------------------------------------------
/** 'NBDMAGIC', first 8 bytes the server sends. */
export const NBD_MAGIC = Buffer.from('NBDMAGIC', 'latin1');
/** 'IHAVEOPT', sent by the server after NBDMAGIC and by the client before every option. */
export const NBD_OPTS_MAGIC = Buffer.from('IHAVEOPT', 'latin1');
/** 0x0003e889045565a9, the magic of every option reply. */
export const NBD_REP_MAGIC = Buffer.from([0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9]);
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// ---- handshake flags (server, 16 bits) and client flags (32 bits) --------------------------
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// ---- transmission flags (16 bits) ---------------------------------------------------------
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// ---- option types -------------------------------------------------------------------------
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_PEEK_EXPORT = 4;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// ---- option reply types -------------------------------------------------------------------
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
/** Bit 31 marks an error reply. */
export const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
export const NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR + 4;
export const NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5;
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
export const NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR + 8;
export const NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;

// ---- info types (NBD_OPT_INFO / NBD_OPT_GO) -----------------------------------------------
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// ---- command types ------------------------------------------------------------------------
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;
export const NBD_CMD_RESIZE = 8;

// ---- command flags ------------------------------------------------------------------------
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

// ---- error values (simple reply "error" field) --------------------------------------------
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

export const NBD_ERRNO: Readonly<Record<'EPERM' | 'EIO' | 'ENOMEM' | 'EINVAL' | 'ENOSPC' | 'EOVERFLOW' | 'ENOTSUP' | 'ESHUTDOWN', number>> = {
  EPERM: NBD_EPERM,
  EIO: NBD_EIO,
  ENOMEM: NBD_ENOMEM,
  EINVAL: NBD_EINVAL,
  ENOSPC: NBD_ENOSPC,
  EOVERFLOW: NBD_EOVERFLOW,
  ENOTSUP: NBD_ENOTSUP,
  ESHUTDOWN: NBD_ESHUTDOWN,
};

// ---- sizes --------------------------------------------------------------------------------
/** NBDMAGIC + IHAVEOPT + 16-bit handshake flags. */
export const SERVER_GREETING_BYTES = 18;
export const CLIENT_FLAGS_BYTES = 4;
/** IHAVEOPT + 32-bit option + 32-bit length. */
export const OPTION_HEADER_BYTES = 16;
/** Reply magic + option + reply type + length. */
export const OPTION_REPLY_HEADER_BYTES = 20;
export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_HEADER_BYTES = 16;
/** Trailing zeroes after the NBD_OPT_EXPORT_NAME reply unless NO_ZEROES was negotiated. */
export const EXPORT_NAME_ZERO_PAD_BYTES = 124;
/** proto.md: strings (export names, descriptions) MUST be no longer than 4096 bytes. */
export const MAX_STRING_BYTES = 4096;

// ---- names for log lines ------------------------------------------------------------------
const OPTION_NAMES: Record<number, string> = {
  [NBD_OPT_EXPORT_NAME]: 'EXPORT_NAME',
  [NBD_OPT_ABORT]: 'ABORT',
  [NBD_OPT_LIST]: 'LIST',
  [NBD_OPT_PEEK_EXPORT]: 'PEEK_EXPORT',
  [NBD_OPT_STARTTLS]: 'STARTTLS',
  [NBD_OPT_INFO]: 'INFO',
  [NBD_OPT_GO]: 'GO',
  [NBD_OPT_STRUCTURED_REPLY]: 'STRUCTURED_REPLY',
  [NBD_OPT_LIST_META_CONTEXT]: 'LIST_META_CONTEXT',
  [NBD_OPT_SET_META_CONTEXT]: 'SET_META_CONTEXT',
  [NBD_OPT_EXTENDED_HEADERS]: 'EXTENDED_HEADERS',
};
const COMMAND_NAMES: Record<number, string> = {
  [NBD_CMD_READ]: 'READ',
  [NBD_CMD_WRITE]: 'WRITE',
  [NBD_CMD_DISC]: 'DISC',
  [NBD_CMD_FLUSH]: 'FLUSH',
  [NBD_CMD_TRIM]: 'TRIM',
  [NBD_CMD_CACHE]: 'CACHE',
  [NBD_CMD_WRITE_ZEROES]: 'WRITE_ZEROES',
  [NBD_CMD_BLOCK_STATUS]: 'BLOCK_STATUS',
  [NBD_CMD_RESIZE]: 'RESIZE',
};
export function optionName(option: number): string {
  return OPTION_NAMES[option] ?? `option ${option}`;
}
export function commandName(type: number): string {
  return COMMAND_NAMES[type] ?? `command ${type}`;
}

// ---- handshake ----------------------------------------------------------------------------
export function encodeServerGreeting(handshakeFlags: number): Buffer {
  const buf = Buffer.allocUnsafe(SERVER_GREETING_BYTES);
  NBD_MAGIC.copy(buf, 0);
  NBD_OPTS_MAGIC.copy(buf, 8);
  buf.writeUInt16BE(handshakeFlags, 16);
  return buf;
}

export function decodeClientFlags(buf: Buffer, offset = 0): number {
  return buf.readUInt32BE(offset);
}

export interface OptionHeader {
  magicOk: boolean;
  option: number;
  length: number;
}

/** Needs OPTION_HEADER_BYTES at offset. */
export function decodeOptionHeader(buf: Buffer, offset = 0): OptionHeader {
  return {
    magicOk: buf.compare(NBD_OPTS_MAGIC, 0, 8, offset, offset + 8) === 0,
    option: buf.readUInt32BE(offset + 8),
    length: buf.readUInt32BE(offset + 12),
  };
}

/** An option request as a client sends it (used by tests and tools). */
export function encodeOptionRequest(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.allocUnsafe(OPTION_HEADER_BYTES + data.length);
  NBD_OPTS_MAGIC.copy(buf, 0);
  buf.writeUInt32BE(option >>> 0, 8);
  buf.writeUInt32BE(data.length, 12);
  data.copy(buf, OPTION_HEADER_BYTES);
  return buf;
}

export function encodeOptionReply(option: number, replyType: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.allocUnsafe(OPTION_REPLY_HEADER_BYTES + data.length);
  NBD_REP_MAGIC.copy(buf, 0);
  buf.writeUInt32BE(option >>> 0, 8);
  buf.writeUInt32BE(replyType >>> 0, 12);
  buf.writeUInt32BE(data.length, 16);
  data.copy(buf, OPTION_REPLY_HEADER_BYTES);
  return buf;
}

export interface OptionReply {
  option: number;
  replyType: number;
  data: Buffer;
}

/** Decodes one option reply at offset; null if the buffer does not yet hold all of it. */
export function decodeOptionReply(buf: Buffer, offset = 0): { reply: OptionReply; bytes: number } | null {
  if (buf.length - offset < OPTION_REPLY_HEADER_BYTES) return null;
  if (buf.compare(NBD_REP_MAGIC, 0, 8, offset, offset + 8) !== 0) throw new Error('bad option reply magic');
  const length = buf.readUInt32BE(offset + 16);
  if (buf.length - offset < OPTION_REPLY_HEADER_BYTES + length) return null;
  return {
    reply: {
      option: buf.readUInt32BE(offset + 8),
      replyType: buf.readUInt32BE(offset + 12),
      data: buf.subarray(offset + OPTION_REPLY_HEADER_BYTES, offset + OPTION_REPLY_HEADER_BYTES + length),
    },
    bytes: OPTION_REPLY_HEADER_BYTES + length,
  };
}

/** Payload of NBD_REP_SERVER: 32-bit name length, name, optional description. */
export function encodeRepServer(name: string, description?: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const descBytes = Buffer.from(description ?? '', 'utf8');
  const buf = Buffer.allocUnsafe(4 + nameBytes.length + descBytes.length);
  buf.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(buf, 4);
  descBytes.copy(buf, 4 + nameBytes.length);
  return buf;
}

/** Payload of NBD_REP_INFO / NBD_INFO_EXPORT. */
export function encodeInfoExport(sizeBytes: number, transmissionFlags: number): Buffer {
  const buf = Buffer.allocUnsafe(12);
  buf.writeUInt16BE(NBD_INFO_EXPORT, 0);
  writeUInt64(buf, 2, sizeBytes);
  buf.writeUInt16BE(transmissionFlags, 10);
  return buf;
}

/** Payload of NBD_REP_INFO / NBD_INFO_BLOCK_SIZE. */
export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  const buf = Buffer.allocUnsafe(14);
  buf.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  buf.writeUInt32BE(minimum, 2);
  buf.writeUInt32BE(preferred, 6);
  buf.writeUInt32BE(maximum, 10);
  return buf;
}

/** Payload of NBD_REP_INFO / NBD_INFO_NAME or NBD_INFO_DESCRIPTION. */
export function encodeInfoString(infoType: typeof NBD_INFO_NAME | typeof NBD_INFO_DESCRIPTION, text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  const buf = Buffer.allocUnsafe(2 + bytes.length);
  buf.writeUInt16BE(infoType, 0);
  bytes.copy(buf, 2);
  return buf;
}

/** The reply to NBD_OPT_EXPORT_NAME: size, transmission flags, 124 zeroes unless NO_ZEROES. */
export function encodeExportNameReply(sizeBytes: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const buf = Buffer.alloc(10 + (noZeroes ? 0 : EXPORT_NAME_ZERO_PAD_BYTES));
  writeUInt64(buf, 0, sizeBytes);
  buf.writeUInt16BE(transmissionFlags, 8);
  return buf;
}

export interface InfoRequest {
  name: string;
  infoTypes: number[];
}

/** Data of NBD_OPT_INFO / NBD_OPT_GO: 32-bit name length, name, 16-bit count, 16-bit types. */
export function decodeInfoRequest(data: Buffer): InfoRequest | { error: string } {
  if (data.length < 6) return { error: `option data too short (${data.length} bytes)` };
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6) return { error: `name length ${nameLength} exceeds option data` };
  if (nameLength > MAX_STRING_BYTES) return { error: `export name longer than ${MAX_STRING_BYTES} bytes` };
  const name = data.toString('utf8', 4, 4 + nameLength);
  const count = data.readUInt16BE(4 + nameLength);
  const rest = data.length - 6 - nameLength;
  if (rest !== count * 2) return { error: `${count} information requests need ${count * 2} bytes, got ${rest}` };
  const infoTypes: number[] = [];
  for (let i = 0; i < count; i++) infoTypes.push(data.readUInt16BE(6 + nameLength + 2 * i));
  return { name, infoTypes };
}

export function encodeInfoRequest(name: string, infoTypes: number[] = []): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const buf = Buffer.allocUnsafe(6 + nameBytes.length + 2 * infoTypes.length);
  buf.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(buf, 4);
  buf.writeUInt16BE(infoTypes.length, 4 + nameBytes.length);
  infoTypes.forEach((t, i) => buf.writeUInt16BE(t, 6 + nameBytes.length + 2 * i));
  return buf;
}

// ---- transmission -------------------------------------------------------------------------
export interface RequestHeader {
  magic: number;
  flags: number;
  type: number;
  /** The 64-bit handle (cookie) as two 32-bit halves: echoed back unchanged, never interpreted. */
  handleHi: number;
  handleLo: number;
  /** Exact below 2^53; larger offsets are beyond any export and are reported as they round. */
  offset: number;
  length: number;
}

/** Decodes a 28-byte request header in place (no copy). */
export function decodeRequestHeader(buf: Buffer, offset = 0): RequestHeader {
  return {
    magic: buf.readUInt32BE(offset),
    flags: buf.readUInt16BE(offset + 4),
    type: buf.readUInt16BE(offset + 6),
    handleHi: buf.readUInt32BE(offset + 8),
    handleLo: buf.readUInt32BE(offset + 12),
    offset: buf.readUInt32BE(offset + 16) * 0x1_0000_0000 + buf.readUInt32BE(offset + 20),
    length: buf.readUInt32BE(offset + 24),
  };
}

export interface RequestFields {
  flags?: number;
  type: number;
  handleHi?: number;
  handleLo?: number;
  offset?: number;
  length?: number;
  magic?: number;
}

/** A request header as a client sends it (tests and tools). */
export function encodeRequestHeader(req: RequestFields): Buffer {
  const buf = Buffer.allocUnsafe(REQUEST_HEADER_BYTES);
  buf.writeUInt32BE((req.magic ?? NBD_REQUEST_MAGIC) >>> 0, 0);
  buf.writeUInt16BE(req.flags ?? 0, 4);
  buf.writeUInt16BE(req.type, 6);
  buf.writeUInt32BE((req.handleHi ?? 0) >>> 0, 8);
  buf.writeUInt32BE((req.handleLo ?? 0) >>> 0, 12);
  writeUInt64(buf, 16, req.offset ?? 0);
  buf.writeUInt32BE((req.length ?? 0) >>> 0, 24);
  return buf;
}

/** Writes a simple reply header into target at offset (16 bytes). */
export function writeSimpleReplyHeader(target: Buffer, offset: number, error: number, handleHi: number, handleLo: number): void {
  target.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, offset);
  target.writeUInt32BE(error, offset + 4);
  target.writeUInt32BE(handleHi, offset + 8);
  target.writeUInt32BE(handleLo, offset + 12);
}

export function encodeSimpleReplyHeader(error: number, handleHi: number, handleLo: number): Buffer {
  const buf = Buffer.allocUnsafe(SIMPLE_REPLY_HEADER_BYTES);
  writeSimpleReplyHeader(buf, 0, error, handleHi, handleLo);
  return buf;
}

export interface SimpleReplyHeader {
  magic: number;
  error: number;
  handleHi: number;
  handleLo: number;
}

export function decodeSimpleReplyHeader(buf: Buffer, offset = 0): SimpleReplyHeader {
  return {
    magic: buf.readUInt32BE(offset),
    error: buf.readUInt32BE(offset + 4),
    handleHi: buf.readUInt32BE(offset + 8),
    handleLo: buf.readUInt32BE(offset + 12),
  };
}

// ---- helpers ------------------------------------------------------------------------------
function writeUInt64(buf: Buffer, offset: number, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`not a safe unsigned integer: ${value}`);
  buf.writeUInt32BE(Math.floor(value / 0x1_0000_0000), offset);
  buf.writeUInt32BE(value % 0x1_0000_0000, offset + 4);
}
