// One transaction-logfile record, MARS format version 1 (docs/logfile-format.md).
//
// Layout (little-endian, no file header, no padding between records):
//   header  48 bytes  start magic, version, valid flag, total_len, stamp, l_pos, l_len, ... l_code
//   payload l_len bytes (never compressed here)
//   trailer 36 bytes  end magic, crc_old, valid copy, crc_flags, seq_nr, folded payload digest
//
// Two extensions inside the format, both in header spares that MARS writes as 0:
// - the 4 bytes at offset 40 hold a CRC32C over every header and trailer field except the
//   payload digest ("meta checksum"). MARS only checksums the payload, so a bit flip in l_pos
//   or in the stamp would otherwise go unnoticed and a replica would write good data to the
//   wrong place. MARS readers still accept our records because they never look at that spare.
// - the 2 bytes at offset 46 are a flag word. Bit 0 (RECORD_FLAG_MORE) says that the next
//   record belongs to the same write request: a write larger than one page becomes several
//   WriteNew records, and a replica applies them all or none (docs/design.md §3.3).
//
// This module only encodes and decodes bytes; judging a record (torn? defect?) is the
// scanner's job (scanner.ts).
import { crc32cChunks, crc32cRange } from './crc32c.js';
import { assert, InvariantError } from '../util/assert.js';

export const RECORD_HEADER_BYTES = 48;
export const RECORD_TRAILER_BYTES = 36;
export const RECORD_OVERHEAD_BYTES = RECORD_HEADER_BYTES + RECORD_TRAILER_BYTES; // 84
// One record carries at most one page, as in MARS; larger writes are split by the logger.
export const MAX_RECORD_PAYLOAD_BYTES = 4096;
export const MAX_RECORD_BYTES = RECORD_OVERHEAD_BYTES + MAX_RECORD_PAYLOAD_BYTES;

export const FORMAT_VERSION = 1;
export const START_MAGIC = 0xa8f7e908d9177957n;
export const END_MAGIC = 0x74941fb74ab5726dn;

// crc_flags is MARS's internal flag word shifted right by 16; bit 2 = CRC32C.
export const CRC_FLAG_CRC32C = 0x0004;
export const PAYLOAD_DIGEST_CHUNKS = 8;
export const PAYLOAD_DIGEST_BYTES = 16;
// Record sequence numbers start at 1 in every logfile and are stored as u32.
export const FIRST_SEQ_NR = 1;
export const MAX_SEQ_NR = 0xffffffff;
export const NSEC_PER_SEC = 1_000_000_000;

export enum RecordCode {
  // Data to apply at devicePos.
  WriteNew = 1,
  // Pre-image of a write; MARS replay ignores it, so do we. We never write it.
  WriteOld = 2,
  // OUR extension (not in MARS): the payload is exactly 8 bytes, a u64 LE length in bytes;
  // the device range [devicePos, devicePos + length) reads as zeros after this record.
  // Used for NBD WRITE_ZEROES so that zeroing a large range costs one small record.
  // Real MARS would skip this record during replay (it applies only WriteNew).
  ZeroRange = 3,
}
export const ZERO_RANGE_PAYLOAD_BYTES = 8;

export function isKnownRecordCode(code: number): code is RecordCode {
  return code === RecordCode.WriteNew || code === RecordCode.WriteOld || code === RecordCode.ZeroRange;
}

// Header field offsets, relative to the record start.
export const HDR_START_MAGIC = 0; // u64
export const HDR_VERSION = 8; // u8
export const HDR_VALID_FLAG = 9; // u8
export const HDR_TOTAL_LEN = 10; // s16
export const HDR_STAMP_SEC = 12; // s64
export const HDR_STAMP_NSEC = 20; // s64
export const HDR_DEVICE_POS = 28; // s64 (l_pos)
export const HDR_PAYLOAD_LEN = 36; // s16 (l_len)
export const HDR_DECOMPRESS_LEN = 38; // s16
export const HDR_META_CRC = 40; // u32, MARS spare: our meta checksum
export const HDR_CODE = 44; // s16 (l_code)
export const HDR_FLAGS = 46; // u16, MARS spare: our record flags (RECORD_FLAG_*)

// Trailer field offsets, relative to the trailer start (= record start + 48 + l_len).
export const TRL_END_MAGIC = 0; // u64
export const TRL_CRC_OLD = 8; // u32, legacy MD5 prefix; 0 with CRC32C
export const TRL_VALID_COPY = 12; // u8
export const TRL_SPARE = 13; // u8, always 0
export const TRL_CRC_FLAGS = 14; // u16
export const TRL_SEQ_NR = 16; // u32
export const TRL_DIGEST = 20; // 16 bytes, folded payload digest

const TWO_POW_32 = 0x1_0000_0000;
const START_MAGIC_LO = Number(START_MAGIC & 0xffffffffn);
const START_MAGIC_HI = Number(START_MAGIC >> 32n);
const END_MAGIC_LO = Number(END_MAGIC & 0xffffffffn);
const END_MAGIC_HI = Number(END_MAGIC >> 32n);

/** Another record of the same write request follows this one (a write split into pages). */
export const RECORD_FLAG_MORE = 0x0001;
/**
 * The logger marks at most this many payload bytes as one write request (the NBD server's
 * largest write); a larger write would be logged as several requests of this size. A ZeroRange
 * record is never marked: a zeroing request may cover the whole device, and each record of it
 * is applied on its own.
 */
export const MAX_WHOLE_WRITE_BYTES = 32 << 20;
/** Log bytes of the longest run of records that a replica must apply together. */
export const MAX_WHOLE_WRITE_LOG_BYTES = (MAX_WHOLE_WRITE_BYTES / MAX_RECORD_PAYLOAD_BYTES) * (RECORD_OVERHEAD_BYTES + MAX_RECORD_PAYLOAD_BYTES);
/** Every flag a reader knows; any other bit set is a defect (bad-field). */
export const KNOWN_RECORD_FLAGS = RECORD_FLAG_MORE;

export function recordBytes(payloadLength: number): number {
  return RECORD_OVERHEAD_BYTES + payloadLength;
}

export interface RecordInput {
  devicePos: number;
  code: RecordCode;
  stampSec: number;
  stampNsec: number;
  seqNr: number;
  payload: Buffer;
  /** RECORD_FLAG_* bits; 0 when absent (the last or only record of its write request) */
  flags?: number;
}

// Writes one complete record into out[at ..] and returns its length in bytes.
// Hot path of the logger: no allocation (the CRCs take offsets, common/log/crc32c.ts).
export function encodeRecord(out: Buffer, at: number, r: RecordInput): number {
  const payloadBytes = r.payload.length;
  const totalBytes = RECORD_OVERHEAD_BYTES + payloadBytes;
  const flags = r.flags ?? 0;
  // Hot path (a write of 1 GiB is 262,144 records): each message is built only when its
  // check fails, which assert(cond, `...`) would build on every call.
  if (payloadBytes > MAX_RECORD_PAYLOAD_BYTES) throw new InvariantError(`record payload ${payloadBytes} bytes > ${MAX_RECORD_PAYLOAD_BYTES}`);
  if (!(Number.isSafeInteger(at) && at >= 0 && at + totalBytes <= out.length)) throw new InvariantError(`record of ${totalBytes} bytes does not fit at ${at} in a ${out.length}-byte buffer`);
  if (!(Number.isSafeInteger(r.devicePos) && r.devicePos >= 0)) throw new InvariantError(`bad devicePos ${r.devicePos}`);
  if (!isKnownRecordCode(r.code)) throw new InvariantError(`unknown record code ${r.code}`);
  if (r.code === RecordCode.ZeroRange && payloadBytes !== ZERO_RANGE_PAYLOAD_BYTES) throw new InvariantError('ZeroRange payload must be 8 bytes');
  if (!(Number.isSafeInteger(r.stampSec) && r.stampSec >= 0)) throw new InvariantError(`bad stampSec ${r.stampSec}`);
  if (!(Number.isInteger(r.stampNsec) && r.stampNsec >= 0 && r.stampNsec < NSEC_PER_SEC)) throw new InvariantError(`bad stampNsec ${r.stampNsec}`);
  if (!(Number.isInteger(r.seqNr) && r.seqNr >= FIRST_SEQ_NR && r.seqNr <= MAX_SEQ_NR)) throw new InvariantError(`bad seqNr ${r.seqNr}`);
  if ((flags & ~KNOWN_RECORD_FLAGS) !== 0) throw new InvariantError(`unknown record flags 0x${flags.toString(16)}`);

  // Payload first: if the caller built it in place at out[at+48], this copy is a no-op move.
  const payloadAt = at + RECORD_HEADER_BYTES;
  r.payload.copy(out, payloadAt);

  out.writeUInt32LE(START_MAGIC_LO, at + HDR_START_MAGIC);
  out.writeUInt32LE(START_MAGIC_HI, at + HDR_START_MAGIC + 4);
  out[at + HDR_VERSION] = FORMAT_VERSION;
  out[at + HDR_VALID_FLAG] = 1;
  out.writeInt16LE(totalBytes, at + HDR_TOTAL_LEN);
  writeU64(out, at + HDR_STAMP_SEC, r.stampSec);
  writeU64(out, at + HDR_STAMP_NSEC, r.stampNsec);
  writeU64(out, at + HDR_DEVICE_POS, r.devicePos);
  out.writeInt16LE(payloadBytes, at + HDR_PAYLOAD_LEN);
  out.writeInt16LE(0, at + HDR_DECOMPRESS_LEN);
  out.writeUInt32LE(0, at + HDR_META_CRC); // filled in below
  out.writeInt16LE(r.code, at + HDR_CODE);
  out.writeUInt16LE(flags, at + HDR_FLAGS);

  const trailerAt = payloadAt + payloadBytes;
  out.writeUInt32LE(END_MAGIC_LO, trailerAt + TRL_END_MAGIC);
  out.writeUInt32LE(END_MAGIC_HI, trailerAt + TRL_END_MAGIC + 4);
  out.writeUInt32LE(0, trailerAt + TRL_CRC_OLD);
  out[trailerAt + TRL_VALID_COPY] = 1;
  out[trailerAt + TRL_SPARE] = 0;
  out.writeUInt16LE(CRC_FLAG_CRC32C, trailerAt + TRL_CRC_FLAGS);
  out.writeUInt32LE(r.seqNr, trailerAt + TRL_SEQ_NR);
  writePayloadDigest(out, payloadAt, payloadBytes, out, trailerAt + TRL_DIGEST);

  out.writeUInt32LE(computeMetaChecksum(out, at, payloadBytes), at + HDR_META_CRC);
  return totalBytes;
}

export function encodeZeroRangePayload(lengthBytes: number): Buffer {
  assert(Number.isSafeInteger(lengthBytes) && lengthBytes > 0, `bad zero range length ${lengthBytes}`);
  const payload = Buffer.alloc(ZERO_RANGE_PAYLOAD_BYTES);
  writeU64(payload, 0, lengthBytes);
  return payload;
}

// Returns the range length in bytes, or NaN when it is not a safe integer (corrupt record).
export function decodeZeroRangePayload(payload: Buffer): number {
  assert(payload.length === ZERO_RANGE_PAYLOAD_BYTES, 'ZeroRange payload must be 8 bytes');
  return readS64Safe(payload, 0);
}

// The raw header fields, without any judgement. 64-bit values outside the safe integer
// range decode as NaN so that callers cannot silently lose precision.
export interface RawHeader {
  version: number;
  validFlag: number;
  totalBytes: number;
  stampSec: number;
  stampNsec: number;
  devicePos: number;
  payloadBytes: number;
  decompressBytes: number;
  metaCrc: number;
  code: number;
  flags: number;
}

export function decodeHeader(buf: Buffer, at: number): RawHeader {
  assert(at >= 0 && at + RECORD_HEADER_BYTES <= buf.length, 'decodeHeader needs 48 bytes');
  return {
    version: buf[at + HDR_VERSION]!,
    validFlag: buf[at + HDR_VALID_FLAG]!,
    totalBytes: buf.readInt16LE(at + HDR_TOTAL_LEN),
    stampSec: readS64Safe(buf, at + HDR_STAMP_SEC),
    stampNsec: readS64Safe(buf, at + HDR_STAMP_NSEC),
    devicePos: readS64Safe(buf, at + HDR_DEVICE_POS),
    payloadBytes: buf.readInt16LE(at + HDR_PAYLOAD_LEN),
    decompressBytes: buf.readInt16LE(at + HDR_DECOMPRESS_LEN),
    metaCrc: buf.readUInt32LE(at + HDR_META_CRC),
    code: buf.readInt16LE(at + HDR_CODE),
    flags: buf.readUInt16LE(at + HDR_FLAGS),
  };
}

export interface RawTrailer {
  crcOld: number;
  validCopy: number;
  spare: number;
  crcFlags: number;
  seqNr: number;
}

export function decodeTrailer(buf: Buffer, trailerAt: number): RawTrailer {
  assert(trailerAt >= 0 && trailerAt + RECORD_TRAILER_BYTES <= buf.length, 'decodeTrailer needs 36 bytes');
  return {
    crcOld: buf.readUInt32LE(trailerAt + TRL_CRC_OLD),
    validCopy: buf[trailerAt + TRL_VALID_COPY]!,
    spare: buf[trailerAt + TRL_SPARE]!,
    crcFlags: buf.readUInt16LE(trailerAt + TRL_CRC_FLAGS),
    seqNr: buf.readUInt32LE(trailerAt + TRL_SEQ_NR),
  };
}

export function startMagicAt(buf: Buffer, at: number): boolean {
  return buf.readUInt32LE(at) === START_MAGIC_LO && buf.readUInt32LE(at + 4) === START_MAGIC_HI;
}

export function endMagicAt(buf: Buffer, at: number): boolean {
  return buf.readUInt32LE(at) === END_MAGIC_LO && buf.readUInt32LE(at + 4) === END_MAGIC_HI;
}

// Little-endian bytes of the start magic, for judging a torn (short) prefix of it.
export const START_MAGIC_BYTES: readonly number[] = Array.from({ length: 8 }, (_, i) => Number((START_MAGIC >> BigInt(8 * i)) & 0xffn));

// CRC32C over all header and trailer fields except the meta CRC itself (header bytes
// 40..43) and the payload digest (which the payload check compares directly).
export function computeMetaChecksum(buf: Buffer, recordAt: number, payloadBytes: number): number {
  const trailerAt = recordAt + RECORD_HEADER_BYTES + payloadBytes;
  let crc = crc32cRange(buf, recordAt, recordAt + HDR_META_CRC);
  crc = crc32cRange(buf, recordAt + HDR_META_CRC + 4, recordAt + RECORD_HEADER_BYTES, crc);
  return crc32cRange(buf, trailerAt, trailerAt + TRL_DIGEST, crc);
}

// MARS CRC32C digest: the payload in 8 chunks (floor(len/8) bytes each, the last one takes
// the remainder), each chunk's CRC32C as u32 LE => 32 bytes, XOR-folded to 16 bytes:
// out[0..7] = d[0..7] ^ d[16..23], out[8..15] = d[8..15] ^ d[24..31]. In u32 words that is
// word k = crc(k) ^ crc(k + 4) for k = 0..3, since XOR works bytewise.
// The chunks' CRCs go into one array, reused: the main thread runs one digest at a time.
const chunkCrcs = new Uint32Array(PAYLOAD_DIGEST_CHUNKS);

export function writePayloadDigest(src: Buffer, payloadAt: number, payloadBytes: number, out: Buffer, digestAt: number): void {
  crc32cChunks(src, payloadAt, payloadBytes, chunkCrcs);
  for (let k = 0; k < 4; k++) out.writeUInt32LE((chunkCrcs[k]! ^ chunkCrcs[k + 4]!) >>> 0, digestAt + 4 * k);
}

export function payloadDigestMatches(buf: Buffer, payloadAt: number, payloadBytes: number, digestAt: number): boolean {
  crc32cChunks(buf, payloadAt, payloadBytes, chunkCrcs);
  for (let k = 0; k < 4; k++) {
    if (buf.readUInt32LE(digestAt + 4 * k) !== (chunkCrcs[k]! ^ chunkCrcs[k + 4]!) >>> 0) return false;
  }
  return true;
}

function writeU64(out: Buffer, at: number, value: number): void {
  const hi = Math.floor(value / TWO_POW_32);
  out.writeUInt32LE(value - hi * TWO_POW_32, at);
  out.writeUInt32LE(hi, at + 4);
}

// Signed 64-bit little-endian read; NaN when the value is not a safe integer.
export function readS64Safe(buf: Buffer, at: number): number {
  const lo = buf.readUInt32LE(at);
  const hi = buf.readInt32LE(at + 4);
  // |value| <= 2^53 - 1 needs -2^21 <= hi < 2^21 (hi = -2^21 only with lo > 0).
  if (hi >= 0x20_0000 || hi < -0x20_0000 || (hi === -0x20_0000 && lo === 0)) return NaN;
  return hi * TWO_POW_32 + lo;
}
