// Classifying the bytes of a logfile buffer record by record (docs/logfile-format.md,
// "Scanner stop classes"): each record is either verified completely or the scan stops with
// the exact reason. Pure: no I/O; scanner.ts feeds it a file chunk by chunk.
//
// The scanner never resynchronises by searching for the next magic: a record that does not
// start exactly where the previous one ended is a hole, and a hole is never skipped
// (docs/design.md invariant 4). The checks run from the record start outwards, in the order
// the bytes were written, so that a write cut short by a crash (a correct prefix) is told
// apart from a defect: a wrong byte in the part that is present is always a defect, a
// missing rest is a tear only at the end of the file.
import { assert } from '../util/assert.js';
import {
  CRC_FLAG_CRC32C,
  FORMAT_VERSION,
  KNOWN_RECORD_FLAGS,
  MAX_RECORD_PAYLOAD_BYTES,
  NSEC_PER_SEC,
  RECORD_HEADER_BYTES,
  RECORD_FLAG_MORE,
  RECORD_OVERHEAD_BYTES,
  RecordCode,
  START_MAGIC_BYTES,
  TRL_DIGEST,
  ZERO_RANGE_PAYLOAD_BYTES,
  computeMetaChecksum,
  decodeHeader,
  decodeTrailer,
  decodeZeroRangePayload,
  endMagicAt,
  isKnownRecordCode,
  payloadDigestMatches,
  startMagicAt,
  type RawHeader,
  type RawTrailer,
} from './record.js';
import {
  defect, torn, zeroedRegion,
  type DefectKind, type LogRecord, type LogStop, type ScanOptions, type ScanResult, type ScanStop, type TornKind,
} from './scan-stops.js';

const MAGIC_BYTES = 8;

export function scanBuffer(buf: Buffer, baseOffset: number, opts: { expectedSeqNr?: number; atEof: true }): ScanResult<LogStop>;
export function scanBuffer(buf: Buffer, baseOffset: number, opts: ScanOptions): ScanResult;
export function scanBuffer(buf: Buffer, baseOffset: number, opts: ScanOptions): ScanResult {
  assert(Number.isSafeInteger(baseOffset) && baseOffset >= 0, `bad baseOffset ${baseOffset}`);
  const records: LogRecord[] = [];
  let expected = opts.expectedSeqNr;
  let at = 0;
  for (;;) {
    const step = scanOne({ buf, at, base: baseOffset, offset: baseOffset + at, atEof: opts.atEof }, expected);
    if ('stop' in step) {
      return { records, endOffset: baseOffset + at, nextSeqNr: expected, stop: step.stop };
    }
    records.push(step.record);
    at += step.record.totalBytes;
    expected = step.record.seqNr + 1;
  }
}

type RecordStep = { record: LogRecord } | { stop: ScanStop };

/** Where one record is looked for: buf[at] is file offset `offset` (= base + at). */
interface Cursor {
  buf: Buffer;
  at: number;
  base: number;
  offset: number;
  atEof: boolean;
}

/** The record at cursor.at, verified, or why there is none. */
function scanOne(c: Cursor, expected: number | undefined): RecordStep {
  if (c.buf.length === c.at) {
    return { stop: c.atEof ? { kind: 'clean-end', torn: false, defect: false, offset: c.offset, detail: `end of data at offset ${c.offset}` } : { kind: 'need-more', offset: c.offset } };
  }
  const startStop = checkStart(c);
  if (startStop) return { stop: startStop };
  const h = decodeHeader(c.buf, c.at);
  const headerStop = checkHeader(c, h);
  if (headerStop) return { stop: headerStop };
  const trailerAt = c.at + RECORD_HEADER_BYTES + h.payloadBytes;
  const endStop = checkEndMagic(c, trailerAt);
  if (endStop) return { stop: endStop };
  const t = decodeTrailer(c.buf, trailerAt);
  const trailerStop = checkTrailer(c, h, t, expected);
  return trailerStop ? { stop: trailerStop } : verifyContent(c, h, t, trailerAt);
}

/**
 * The start magic and the header bytes before the lengths. Fields that are present even when
 * the header is cut short are checked first: a torn write leaves a prefix of correct bytes,
 * so a wrong byte here is a defect, not a tear.
 */
function checkStart(c: Cursor): ScanStop | undefined {
  const { buf, at, offset } = c;
  const availBytes = buf.length - at;
  const magicBytes = Math.min(availBytes, MAGIC_BYTES);
  if (firstNonZeroByte(buf, at, at + magicBytes) < 0) return zeroSuspect(c, at);
  if (magicBytes < MAGIC_BYTES) {
    if (isStartMagicPrefix(buf, at, magicBytes)) return needMoreOr(c, 'incomplete-header', `only ${availBytes} bytes of a record header before the end of the file`);
    return badMagic('start', buf, at, magicBytes, offset);
  }
  if (!startMagicAt(buf, at)) return badMagic('start', buf, at, MAGIC_BYTES, offset);
  if (availBytes > 8 && buf[at + 8] !== FORMAT_VERSION) return defect('bad-version', offset, `format version ${buf[at + 8]} (expected ${FORMAT_VERSION})`);
  if (availBytes > 9 && buf[at + 9] !== 1) return defect('invalid-record', offset, `valid flag ${buf[at + 9]} (expected 1)`);
  if (availBytes < RECORD_HEADER_BYTES) return needMoreOr(c, 'incomplete-header', `only ${availBytes} bytes of a record header before the end of the file`);
  return undefined;
}

/**
 * The lengths, flags and code of a complete header. Lengths are checked for consistency
 * before comparing with the bytes available, so a bit flip in total_len or l_len is a
 * defect rather than a "truncated" torn tail.
 */
function checkHeader(c: Cursor, h: RawHeader): ScanStop | undefined {
  const { offset } = c;
  if (h.payloadBytes < 0 || h.payloadBytes > MAX_RECORD_PAYLOAD_BYTES) {
    return defect('bad-length', offset, `payload length ${h.payloadBytes} outside 0..${MAX_RECORD_PAYLOAD_BYTES}`);
  }
  if (h.totalBytes !== RECORD_OVERHEAD_BYTES + h.payloadBytes) {
    return defect('bad-length', offset, `total length ${h.totalBytes} != ${RECORD_OVERHEAD_BYTES} + payload length ${h.payloadBytes}`);
  }
  if (h.decompressBytes !== 0) return defect('bad-flags', offset, `compressed record (decompress_len ${h.decompressBytes}): compression is not supported`);
  if (!isKnownRecordCode(h.code)) return defect('bad-code', offset, `unknown record code ${h.code}`);
  if (h.code === RecordCode.ZeroRange && h.payloadBytes !== ZERO_RANGE_PAYLOAD_BYTES) {
    return defect('bad-length', offset, `ZeroRange record with payload length ${h.payloadBytes} (expected ${ZERO_RANGE_PAYLOAD_BYTES})`);
  }
  const availBytes = c.buf.length - c.at;
  if (h.totalBytes > availBytes) {
    return needMoreOr(c, 'truncated-record', `record of ${h.totalBytes} bytes but only ${availBytes} bytes before the end of the file`);
  }
  return undefined;
}

/** The end magic right after the payload: zeros there may still be a zero-filled tail. */
function checkEndMagic(c: Cursor, trailerAt: number): ScanStop | undefined {
  if (firstNonZeroByte(c.buf, trailerAt, trailerAt + MAGIC_BYTES) < 0) return zeroSuspect(c, trailerAt);
  if (!endMagicAt(c.buf, trailerAt)) return badMagic('end', c.buf, trailerAt, MAGIC_BYTES, c.offset, c.base + trailerAt);
  return undefined;
}

/** The trailer's flags and record number, and the meta checksum over header and trailer. */
function checkTrailer(c: Cursor, h: RawHeader, t: RawTrailer, expected: number | undefined): LogStop | undefined {
  const { offset } = c;
  if (t.validCopy !== 1) return defect('bad-valid-copy', offset, `valid copy ${t.validCopy} (expected 1)`);
  if (t.crcFlags !== CRC_FLAG_CRC32C) {
    return defect('bad-flags', offset, `crc flags 0x${t.crcFlags.toString(16).padStart(4, '0')} (only 0x${CRC_FLAG_CRC32C.toString(16).padStart(4, '0')} = CRC32C is supported)`);
  }
  if (expected !== undefined && t.seqNr !== expected) return defect('seq-mismatch', offset, `record sequence number ${t.seqNr}, expected ${expected}`);
  const metaCrc = computeMetaChecksum(c.buf, c.at, h.payloadBytes);
  if (metaCrc !== h.metaCrc) {
    return defect('bad-meta-checksum', offset, `header/trailer checksum 0x${hex32(h.metaCrc)} stored, 0x${hex32(metaCrc)} computed`);
  }
  return undefined;
}

/** The plausibility of the fields and the payload digest; then the record is verified. */
function verifyContent(c: Cursor, h: RawHeader, t: RawTrailer, trailerAt: number): RecordStep {
  const payloadAt = c.at + RECORD_HEADER_BYTES;
  const payload = c.buf.subarray(payloadAt, trailerAt);
  // Only reachable for records whose fields were stored that way (a writer bug or a
  // crafted file), since the meta checksum matched.
  const deviceBytes = h.code === RecordCode.ZeroRange ? decodeZeroRangePayload(payload) : h.payloadBytes;
  const fieldProblem = implausibleField(h.devicePos, h.stampSec, h.stampNsec, deviceBytes, t.seqNr, h.flags, t.spare, t.crcOld);
  if (fieldProblem !== undefined) return defectStep('bad-field', c.offset, fieldProblem);
  if (!payloadDigestMatches(c.buf, payloadAt, h.payloadBytes, trailerAt + TRL_DIGEST)) {
    return defectStep('bad-checksum', c.offset, `payload of ${h.payloadBytes} bytes does not match its CRC32C digest`);
  }
  return {
    record: {
      fileOffset: c.offset,
      totalBytes: h.totalBytes,
      devicePos: h.devicePos,
      code: h.code,
      stampSec: h.stampSec,
      stampNsec: h.stampNsec,
      seqNr: t.seqNr,
      payload,
      deviceBytes,
      more: (h.flags & RECORD_FLAG_MORE) !== 0,
    },
  };
}

function implausibleField(devicePos: number, stampSec: number, stampNsec: number, deviceBytes: number, seqNr: number, flags: number, spare: number, crcOld: number): string | undefined {
  if (!(devicePos >= 0)) return `device position ${devicePos} is negative or not a safe integer`;
  if (!(stampSec >= 0)) return `stamp seconds ${stampSec} negative or not a safe integer`;
  if (!(stampNsec >= 0 && stampNsec < NSEC_PER_SEC)) return `stamp nanoseconds ${stampNsec} outside 0..999999999`;
  if (!(deviceBytes >= 0) || !Number.isSafeInteger(devicePos + deviceBytes)) return `device range ${devicePos}+${deviceBytes} is not representable`;
  if (seqNr === 0) return 'record sequence number 0';
  if ((flags & ~KNOWN_RECORD_FLAGS) !== 0) return `unknown record flags 0x${flags.toString(16)}`;
  if (spare !== 0) return 'non-zero spare byte in the trailer';
  if (crcOld !== 0) return `legacy crc ${crcOld} set together with CRC32C`;
  return undefined;
}

function needMoreOr(c: Cursor, kind: TornKind, detail: string): ScanStop {
  return c.atEof ? torn(kind, c.offset, detail) : { kind: 'need-more', offset: c.offset };
}

// Zero bytes where a start or end magic belongs (buf[zeroFrom]). Only a zero run that
// reaches EOF is a tear.
function zeroSuspect(c: Cursor, zeroFrom: number): ScanStop {
  const { buf, base, offset } = c;
  const nonZero = firstNonZeroByte(buf, zeroFrom, buf.length);
  if (nonZero >= 0) return zeroedRegion(offset, base + zeroFrom, base + nonZero);
  if (c.atEof) return torn('zero-tail', offset, `zero bytes from offset ${base + zeroFrom} to the end of the file`);
  return { kind: 'zero-pending', offset, zeroFromOffset: base + zeroFrom };
}

function badMagic(which: 'start' | 'end', buf: Buffer, at: number, lengthBytes: number, offset: number, magicOffset = offset): LogStop {
  const bytes = buf.subarray(at, at + lengthBytes);
  const shown = bytes.toString('hex');
  if (lengthBytes >= 2 && bytes.every((b) => b === bytes[0])) {
    return defect('repeated-byte', offset, `byte 0x${bytes[0]!.toString(16).padStart(2, '0')} repeated over the ${which} magic at offset ${magicOffset}`);
  }
  return defect(which === 'start' ? 'bad-start-magic' : 'bad-end-magic', offset, `bytes ${shown} at offset ${magicOffset} are not the ${which} magic`);
}

function isStartMagicPrefix(buf: Buffer, at: number, lengthBytes: number): boolean {
  for (let i = 0; i < lengthBytes; i++) if (buf[at + i] !== START_MAGIC_BYTES[i]) return false;
  return true;
}

function defectStep(kind: DefectKind, offset: number, detail: string): RecordStep {
  return { stop: defect(kind, offset, detail) };
}

function hex32(value: number): string {
  return value.toString(16).padStart(8, '0');
}

const ZEROS = Buffer.alloc(64 * 1024);

// Index of the first non-zero byte in buf[from, to), or -1. Compares whole blocks natively
// (memcmp) so that multi-GiB zero tails are checked quickly.
export function firstNonZeroByte(buf: Buffer, from: number, to: number): number {
  let at = from;
  while (at < to) {
    const blockBytes = Math.min(ZEROS.length, to - at);
    if (buf.compare(ZEROS, 0, blockBytes, at, at + blockBytes) !== 0) {
      for (let i = at; i < at + blockBytes; i++) if (buf[i] !== 0) return i;
    }
    at += blockBytes;
  }
  return -1;
}
