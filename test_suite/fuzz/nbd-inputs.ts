// Inputs for the NBD server fuzzer (nbd-fuzz.ts), drawn from a seeded PRNG so that any failing
// input replays exactly. Pure: bytes in, no I/O. Three kinds, in the order a client meets the
// server's parsers:
//   garbage       random bytes instead of the client's part of the handshake;
//   handshake     a greeting reply and a run of options (known and unknown codes, right and
//                 wrong export names, lengths that lie), without a GO naming the export unless
//                 the input says so;
//   transmission  a correct handshake (NBD_OPT_GO) and a run of requests with every command,
//                 flags, offsets and lengths at and beyond the edges, payloads cut short.
// Any kind may have bytes flipped. The bytes are sent in random chunks.
import * as P from '../../kernel-shim/nbd-protocol.js';

export type NbdInputKind = 'garbage' | 'handshake' | 'transmission';

export interface NbdFuzzInput {
  kind: NbdInputKind;
  bytes: Buffer;
  /** sizes of the writes the bytes are sent in (the last one takes the rest) */
  chunks: number[];
  /** no request can reach the backend: no correct GO/EXPORT_NAME naming the export was sent */
  expectsNoIo: boolean;
}

export const MAX_WRITE_PAYLOAD_BYTES = 256 * 1024;

type Rand = () => number;

const int = (r: Rand, n: number) => Math.floor(r() * n);
const pick = <T>(r: Rand, a: readonly T[]): T => a[int(r, a.length)]!;
const u32 = (r: Rand) => int(r, 0x1_0000_0000);

function randomBuf(r: Rand, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = int(r, 256);
  return b;
}

function clientFlags(r: Rand): Buffer {
  const b = Buffer.alloc(4);
  const valid = P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES;
  b.writeUInt32BE(r() < 0.8 ? valid : r() < 0.5 ? P.NBD_FLAG_C_FIXED_NEWSTYLE : u32(r));
  return b;
}

const OPTION_CODES = [
  P.NBD_OPT_GO, P.NBD_OPT_INFO, P.NBD_OPT_LIST, P.NBD_OPT_EXPORT_NAME, P.NBD_OPT_STRUCTURED_REPLY, P.NBD_OPT_ABORT,
  P.NBD_OPT_STARTTLS, P.NBD_OPT_LIST_META_CONTEXT, P.NBD_OPT_SET_META_CONTEXT, P.NBD_OPT_EXTENDED_HEADERS, P.NBD_OPT_PEEK_EXPORT,
];

/** One option; `exportName` is named only when `mayOpen` (a correct GO would start transmission). */
function option(r: Rand, exportName: string, mayOpen: boolean): { bytes: Buffer; opens: boolean } {
  const code = r() < 0.9 ? pick(r, OPTION_CODES) : u32(r);
  const name = mayOpen && r() < 0.3 ? exportName : pick(r, ['nope', '', `${exportName}x`, randomBuf(r, int(r, 40)).toString('latin1')]);
  let data: Buffer;
  if (code === P.NBD_OPT_GO || code === P.NBD_OPT_INFO) {
    data = r() < 0.8 ? P.encodeInfoRequest(name, Array.from({ length: int(r, 4) }, () => (r() < 0.8 ? int(r, 4) : int(r, 0x10000)))) : randomBuf(r, int(r, 64));
  } else if (code === P.NBD_OPT_EXPORT_NAME) {
    data = Buffer.from(name, 'utf8');
  } else {
    data = randomBuf(r, r() < 0.7 ? int(r, 16) : int(r, 600));
  }
  const bytes = P.encodeOptionRequest(code, data);
  // The length field lies now and then (shorter, longer, huge).
  const lies = r() < 0.15;
  if (lies) bytes.writeUInt32BE(pick(r, [0, int(r, data.length + 1), data.length + 1 + int(r, 64), u32(r)]) >>> 0, 12);
  const opens = !lies && name === exportName && (code === P.NBD_OPT_GO || code === P.NBD_OPT_EXPORT_NAME);
  return { bytes, opens };
}

const COMMANDS = [
  P.NBD_CMD_READ, P.NBD_CMD_WRITE, P.NBD_CMD_FLUSH, P.NBD_CMD_TRIM, P.NBD_CMD_WRITE_ZEROES, P.NBD_CMD_BLOCK_STATUS,
  P.NBD_CMD_CACHE, P.NBD_CMD_RESIZE, P.NBD_CMD_DISC,
];

/** A request the server must carry out: a known command inside the export, aligned. */
function validRequest(r: Rand, sizeBytes: number): { type: number; offset: number; length: number; flags: number } {
  const type = pick(r, [P.NBD_CMD_READ, P.NBD_CMD_WRITE, P.NBD_CMD_WRITE, P.NBD_CMD_FLUSH, P.NBD_CMD_TRIM, P.NBD_CMD_WRITE_ZEROES]);
  if (type === P.NBD_CMD_FLUSH) return { type, offset: 0, length: 0, flags: 0 };
  const length = 512 * (1 + int(r, 128));
  return { type, offset: 512 * int(r, (sizeBytes - length) / 512 + 1), length, flags: r() < 0.2 ? 1 /* FUA */ : 0 };
}

function request(r: Rand, sizeBytes: number): Buffer {
  if (r() < 0.5) {
    const v = validRequest(r, sizeBytes);
    const head = P.encodeRequestHeader({ ...v, handleHi: u32(r), handleLo: u32(r) });
    return v.type === P.NBD_CMD_WRITE ? Buffer.concat([head, randomBuf(r, Math.min(v.length, 1024)), Buffer.alloc(Math.max(0, v.length - 1024), int(r, 256))]) : head;
  }
  const type = r() < 0.92 ? pick(r, [...COMMANDS, P.NBD_CMD_READ, P.NBD_CMD_WRITE, P.NBD_CMD_WRITE]) : int(r, 0x10000);
  const length = pick(r, [0, 512, 4096, 512 * (1 + int(r, 256)), 1 + int(r, 8192), MAX_WRITE_PAYLOAD_BYTES, 0xffff_ffff, 512 * int(r, 1 << 17)]);
  const offset = pick(r, [
    512 * int(r, sizeBytes / 512), 1 + int(r, sizeBytes), Math.max(0, sizeBytes - length), sizeBytes, sizeBytes + 512,
    512 * int(r, 2 ** 40), Number.MAX_SAFE_INTEGER - int(r, 1024),
  ]);
  const flags = pick(r, [0, 0, 1 /* FUA */, 2 /* NO_HOLE */, 4 /* DF */, 8 /* REQ_ONE */, 16 /* FAST_ZERO */, int(r, 0x10000)]);
  const head = P.encodeRequestHeader({ type, flags, offset, length, handleHi: u32(r), handleLo: u32(r), ...(r() < 0.03 ? { magic: u32(r) } : {}) });
  if (type !== P.NBD_CMD_WRITE) return head;
  // A write's payload: all of it when small enough, else a part (the connection ends first).
  const sent = length <= MAX_WRITE_PAYLOAD_BYTES && r() < 0.9 ? length : int(r, Math.min(length, MAX_WRITE_PAYLOAD_BYTES) + 1);
  return Buffer.concat([head, randomBuf(r, Math.min(sent, 4096)), Buffer.alloc(Math.max(0, sent - 4096), int(r, 256))]);
}

function flipBytes(r: Rand, b: Buffer, from: number): void {
  const n = 1 + int(r, 3);
  for (let i = 0; i < n && b.length > from; i++) b[from + int(r, b.length - from)] ^= 1 + int(r, 255);
}

function chunking(r: Rand, total: number): number[] {
  return Array.from({ length: int(r, 5) }, () => 1 + int(r, Math.max(1, total)));
}

export function nbdInput(r: Rand, exportName: string, sizeBytes: number): NbdFuzzInput {
  const kind: NbdInputKind = pick(r, ['garbage', 'handshake', 'transmission', 'transmission']);
  if (kind === 'garbage') {
    const bytes = randomBuf(r, int(r, 400));
    return { kind, bytes, chunks: chunking(r, bytes.length), expectsNoIo: true };
  }
  if (kind === 'handshake') {
    const parts = [clientFlags(r)];
    let opens = false;
    for (let i = 0, n = 1 + int(r, 6); i < n; i++) {
      const o = option(r, exportName, r() < 0.2);
      parts.push(o.bytes);
      opens ||= o.opens;
    }
    if (opens) for (let i = 0, n = int(r, 4); i < n; i++) parts.push(request(r, sizeBytes));
    const bytes = Buffer.concat(parts);
    const flipped = r() < 0.3;
    if (flipped) flipBytes(r, bytes, 0);
    // A flipped byte may spoil a GO, never make one out of a wrong name.
    return { kind, bytes, chunks: chunking(r, bytes.length), expectsNoIo: !opens };
  }
  const go = P.encodeOptionRequest(P.NBD_OPT_GO, P.encodeInfoRequest(exportName, r() < 0.5 ? [P.NBD_INFO_BLOCK_SIZE] : []));
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES);
  const head = Buffer.concat([flags, go]);
  const reqs = Array.from({ length: 1 + int(r, 20) }, () => request(r, sizeBytes));
  const bytes = Buffer.concat([head, ...reqs]);
  if (r() < 0.2) flipBytes(r, bytes, head.length);
  return { kind, bytes, chunks: chunking(r, bytes.length), expectsNoIo: false };
}
