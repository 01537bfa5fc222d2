// Reading a transaction logfile: parse records strictly one after the other and classify
// exactly why reading stopped (docs/logfile-format.md, "Scanner stop classes").
//
// The scanner never resynchronises by searching for the next magic: a record that does not
// start exactly where the previous one ended is a hole, and a hole is never skipped
// (docs/design.md invariant 4). The only tolerated irregularity is a torn tail: the last write
// before a crash that reached the disk only partly (a strict prefix of the file as written,
// or a zero-filled remainder). Everything else is a defect that stops replay for good.
import { open } from 'node:fs/promises';
import { assert } from '../util/assert.js';
import {
  CRC_FLAG_CRC32C,
  FORMAT_VERSION,
  MAX_RECORD_BYTES,
  MAX_RECORD_PAYLOAD_BYTES,
  NSEC_PER_SEC,
  RECORD_HEADER_BYTES,
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
} from './record.js';

export interface LogRecord {
  fileOffset: number; // where the record starts in the logfile
  totalBytes: number; // header + payload + trailer; the next record starts at fileOffset + totalBytes
  devicePos: number; // byte offset on the block device (l_pos)
  code: RecordCode;
  stampSec: number; // Lamport stamp of the write request
  stampNsec: number;
  seqNr: number; // record number within this logfile, 1-based
  payload: Buffer; // zero-copy view into the scanned buffer
  deviceBytes: number; // bytes of the device the record covers: payload length, or the ZeroRange length
}

// Tolerable: the file ends inside the last record, as after a crash during its write.
export type TornKind = 'incomplete-header' | 'truncated-record' | 'zero-tail';
// Never tolerated: replay must stop before the record and report it.
export type DefectKind =
  | 'bad-start-magic'
  | 'repeated-byte'
  | 'zeroed-region'
  | 'bad-version'
  | 'invalid-record'
  | 'bad-length'
  | 'bad-flags'
  | 'bad-code'
  | 'bad-end-magic'
  | 'bad-valid-copy'
  | 'seq-mismatch'
  | 'bad-meta-checksum'
  | 'bad-field'
  | 'bad-checksum';
export type StopKind = 'clean-end' | TornKind | DefectKind;

// offset: file offset where reading stopped = end of the last good record = start of the
// torn or defective one. Everything before it is verified and may be applied.
export type LogStop =
  | { kind: 'clean-end'; torn: false; defect: false; offset: number; detail: string }
  | { kind: TornKind; torn: true; defect: false; offset: number; detail: string }
  | { kind: DefectKind; torn: false; defect: true; offset: number; detail: string };

// Only while not at EOF: the record at `offset` continues beyond the buffer.
export interface NeedMoreStop {
  kind: 'need-more';
  offset: number;
}
// Only while not at EOF: zeros run from zeroFromOffset to the end of the buffer where a
// record (or its end magic) should be. If the rest of the file is zero too, it is a
// zero-filled tail; if anything non-zero follows, it is a zeroed hole (a defect).
export interface ZeroPendingStop {
  kind: 'zero-pending';
  offset: number;
  zeroFromOffset: number;
}
export type ScanStop = LogStop | NeedMoreStop | ZeroPendingStop;

export interface ScanResult<S extends ScanStop = ScanStop> {
  records: LogRecord[];
  endOffset: number; // file offset after the last good record
  nextSeqNr: number | undefined; // seq_nr the record at endOffset must carry (undefined: unknown)
  stop: S;
}

export interface ScanOptions {
  // seq_nr the first record must carry; leave undefined when starting mid-file at an
  // unknown record number (then the first record sets the expectation).
  expectedSeqNr?: number;
  // true when buf extends to the end of the file (or the planned end of reading).
  atEof: boolean;
}

// What each stop class means for recovery; shown by `marsadm log-dump` and the docs.
export const STOP_MEANING: Readonly<Record<StopKind, string>> = {
  'clean-end': 'the file ends exactly after a complete, verified record',
  'incomplete-header': 'torn tail: the file ends inside a record header (a write cut short by a crash); everything before is valid',
  'truncated-record': 'torn tail: the header is intact but the record is longer than the rest of the file (a write cut short); everything before is valid',
  'zero-tail': 'torn tail: the rest of the file is zero bytes where a record should be (space allocated but never written); everything before is valid',
  'bad-start-magic': 'defect: non-zero bytes that are not a record start where a record must begin (overwritten or misplaced data)',
  'repeated-byte': 'defect: the same byte repeated over a magic number, typical of uninitialised or defective storage (RAID/disk cache)',
  'zeroed-region': 'defect: zero bytes where a record must be, but non-zero data follows later: a hole in the log, never a torn tail',
  'bad-version': 'defect: record format version is not 1',
  'invalid-record': 'defect: the record is marked invalid (valid flag not 1)',
  'bad-length': 'defect: record lengths are inconsistent or out of range',
  'bad-flags': 'defect: unknown checksum flags or a compressed record, which this implementation does not write or read',
  'bad-code': 'defect: unknown record code',
  'bad-end-magic': 'defect: the end magic after the payload is wrong (the record is overwritten or its length is wrong)',
  'bad-valid-copy': 'defect: the trailer copy of the valid flag is not 1',
  'seq-mismatch': 'defect: record sequence number out of order (a lost, duplicated or foreign record)',
  'bad-meta-checksum': 'defect: a header or trailer field fails its checksum (bit flip in device position, stamp or another field)',
  'bad-field': 'defect: a field holds an impossible value (negative position, nanoseconds >= 1e9, non-zero spare, ...)',
  'bad-checksum': 'defect: the payload does not match its CRC32C digest',
};

type RecordStep = { record: LogRecord } | { stop: ScanStop };

export function scanBuffer(buf: Buffer, baseOffset: number, opts: { expectedSeqNr?: number; atEof: true }): ScanResult<LogStop>;
export function scanBuffer(buf: Buffer, baseOffset: number, opts: ScanOptions): ScanResult;
export function scanBuffer(buf: Buffer, baseOffset: number, opts: ScanOptions): ScanResult {
  assert(Number.isSafeInteger(baseOffset) && baseOffset >= 0, `bad baseOffset ${baseOffset}`);
  const records: LogRecord[] = [];
  let expected = opts.expectedSeqNr;
  let at = 0;
  for (;;) {
    const step = scanOne(buf, at, baseOffset, expected, opts.atEof);
    if ('stop' in step) {
      return { records, endOffset: baseOffset + at, nextSeqNr: expected, stop: step.stop };
    }
    records.push(step.record);
    at += step.record.totalBytes;
    expected = step.record.seqNr + 1;
  }
}

// Decides a zero-pending stop once the caller knows the first non-zero byte at or after
// the end of the scanned buffer (undefined: none up to EOF).
export function resolveZeroPending(p: ZeroPendingStop, nonZeroAtOffset: number | undefined): LogStop {
  if (nonZeroAtOffset === undefined) {
    return torn('zero-tail', p.offset, `zero bytes from offset ${p.zeroFromOffset} to the end of the file`);
  }
  assert(nonZeroAtOffset >= p.zeroFromOffset, 'non-zero byte must follow the zero run');
  return zeroedRegion(p.offset, p.zeroFromOffset, nonZeroAtOffset);
}

export function isPending(stop: ScanStop): stop is NeedMoreStop | ZeroPendingStop {
  return stop.kind === 'need-more' || stop.kind === 'zero-pending';
}

function scanOne(buf: Buffer, at: number, base: number, expected: number | undefined, atEof: boolean): RecordStep {
  const availBytes = buf.length - at;
  const offset = base + at;
  if (availBytes === 0) {
    return { stop: atEof ? { kind: 'clean-end', torn: false, defect: false, offset, detail: `end of data at offset ${offset}` } : { kind: 'need-more', offset } };
  }

  // Start magic (possibly cut short by EOF).
  const magicBytes = Math.min(availBytes, 8);
  if (firstNonZeroByte(buf, at, at + magicBytes) < 0) return zeroSuspect(buf, at, at, base, atEof);
  if (magicBytes < 8) {
    if (isStartMagicPrefix(buf, at, magicBytes)) return needMoreOr(atEof, 'incomplete-header', offset, `only ${availBytes} bytes of a record header before the end of the file`);
    return { stop: badMagic('start', buf, at, magicBytes, offset) };
  }
  if (!startMagicAt(buf, at)) return { stop: badMagic('start', buf, at, 8, offset) };

  // Header fields that are present even when the header is cut short: a torn write leaves
  // a prefix of correct bytes, so a wrong byte here is a defect, not a tear.
  if (availBytes > 8 && buf[at + 8] !== FORMAT_VERSION) return defectStep('bad-version', offset, `format version ${buf[at + 8]} (expected ${FORMAT_VERSION})`);
  if (availBytes > 9 && buf[at + 9] !== 1) return defectStep('invalid-record', offset, `valid flag ${buf[at + 9]} (expected 1)`);
  if (availBytes < RECORD_HEADER_BYTES) return needMoreOr(atEof, 'incomplete-header', offset, `only ${availBytes} bytes of a record header before the end of the file`);

  const h = decodeHeader(buf, at);
  // Lengths are checked for consistency before comparing with the bytes available, so a
  // bit flip in total_len or l_len is a defect rather than a "truncated" torn tail.
  if (h.payloadBytes < 0 || h.payloadBytes > MAX_RECORD_PAYLOAD_BYTES) {
    return defectStep('bad-length', offset, `payload length ${h.payloadBytes} outside 0..${MAX_RECORD_PAYLOAD_BYTES}`);
  }
  if (h.totalBytes !== RECORD_OVERHEAD_BYTES + h.payloadBytes) {
    return defectStep('bad-length', offset, `total length ${h.totalBytes} != ${RECORD_OVERHEAD_BYTES} + payload length ${h.payloadBytes}`);
  }
  if (h.decompressBytes !== 0) return defectStep('bad-flags', offset, `compressed record (decompress_len ${h.decompressBytes}): compression is not supported`);
  if (!isKnownRecordCode(h.code)) return defectStep('bad-code', offset, `unknown record code ${h.code}`);
  if (h.code === RecordCode.ZeroRange && h.payloadBytes !== ZERO_RANGE_PAYLOAD_BYTES) {
    return defectStep('bad-length', offset, `ZeroRange record with payload length ${h.payloadBytes} (expected ${ZERO_RANGE_PAYLOAD_BYTES})`);
  }
  if (h.totalBytes > availBytes) {
    return needMoreOr(atEof, 'truncated-record', offset, `record of ${h.totalBytes} bytes but only ${availBytes} bytes before the end of the file`);
  }

  const payloadAt = at + RECORD_HEADER_BYTES;
  const trailerAt = payloadAt + h.payloadBytes;
  const trailerOffset = base + trailerAt;
  if (firstNonZeroByte(buf, trailerAt, trailerAt + 8) < 0) return zeroSuspect(buf, at, trailerAt, base, atEof);
  if (!endMagicAt(buf, trailerAt)) return { stop: badMagic('end', buf, trailerAt, 8, offset, trailerOffset) };

  const t = decodeTrailer(buf, trailerAt);
  if (t.validCopy !== 1) return defectStep('bad-valid-copy', offset, `valid copy ${t.validCopy} (expected 1)`);
  if (t.crcFlags !== CRC_FLAG_CRC32C) {
    return defectStep('bad-flags', offset, `crc flags 0x${t.crcFlags.toString(16).padStart(4, '0')} (only 0x${CRC_FLAG_CRC32C.toString(16).padStart(4, '0')} = CRC32C is supported)`);
  }
  if (expected !== undefined && t.seqNr !== expected) return defectStep('seq-mismatch', offset, `record sequence number ${t.seqNr}, expected ${expected}`);
  const metaCrc = computeMetaChecksum(buf, at, h.payloadBytes);
  if (metaCrc !== h.metaCrc) {
    return defectStep('bad-meta-checksum', offset, `header/trailer checksum 0x${hex32(h.metaCrc)} stored, 0x${hex32(metaCrc)} computed`);
  }

  // Only reachable for records whose fields were stored that way (a writer bug or a
  // crafted file), since the meta checksum matched.
  const payload = buf.subarray(payloadAt, trailerAt);
  let deviceBytes = h.payloadBytes;
  if (h.code === RecordCode.ZeroRange) deviceBytes = decodeZeroRangePayload(payload);
  const fieldProblem = implausibleField(h.devicePos, h.stampSec, h.stampNsec, deviceBytes, t.seqNr, h.spare2 | t.spare, t.crcOld);
  if (fieldProblem !== undefined) return defectStep('bad-field', offset, fieldProblem);

  if (!payloadDigestMatches(buf, payloadAt, h.payloadBytes, trailerAt + TRL_DIGEST)) {
    return defectStep('bad-checksum', offset, `payload of ${h.payloadBytes} bytes does not match its CRC32C digest`);
  }
  return {
    record: {
      fileOffset: offset,
      totalBytes: h.totalBytes,
      devicePos: h.devicePos,
      code: h.code,
      stampSec: h.stampSec,
      stampNsec: h.stampNsec,
      seqNr: t.seqNr,
      payload,
      deviceBytes,
    },
  };
}

function implausibleField(devicePos: number, stampSec: number, stampNsec: number, deviceBytes: number, seqNr: number, spares: number, crcOld: number): string | undefined {
  if (!(devicePos >= 0)) return `device position ${devicePos} is negative or not a safe integer`;
  if (!(stampSec >= 0)) return `stamp seconds ${stampSec} negative or not a safe integer`;
  if (!(stampNsec >= 0 && stampNsec < NSEC_PER_SEC)) return `stamp nanoseconds ${stampNsec} outside 0..999999999`;
  if (!(deviceBytes >= 0) || !Number.isSafeInteger(devicePos + deviceBytes)) return `device range ${devicePos}+${deviceBytes} is not representable`;
  if (seqNr === 0) return 'record sequence number 0';
  if (spares !== 0) return 'non-zero spare bytes';
  if (crcOld !== 0) return `legacy crc ${crcOld} set together with CRC32C`;
  return undefined;
}

function needMoreOr(atEof: boolean, kind: TornKind, offset: number, detail: string): RecordStep {
  return { stop: atEof ? torn(kind, offset, detail) : { kind: 'need-more', offset } };
}

// Zero bytes where a start or end magic belongs. Only a zero run that reaches EOF is a tear.
function zeroSuspect(buf: Buffer, at: number, zeroFrom: number, base: number, atEof: boolean): RecordStep {
  const nonZero = firstNonZeroByte(buf, zeroFrom, buf.length);
  if (nonZero >= 0) return { stop: zeroedRegion(base + at, base + zeroFrom, base + nonZero) };
  if (atEof) return { stop: torn('zero-tail', base + at, `zero bytes from offset ${base + zeroFrom} to the end of the file`) };
  return { stop: { kind: 'zero-pending', offset: base + at, zeroFromOffset: base + zeroFrom } };
}

function zeroedRegion(offset: number, zeroFromOffset: number, nonZeroAtOffset: number): LogStop {
  return defect('zeroed-region', offset, `zero bytes from offset ${zeroFromOffset} where a ${zeroFromOffset === offset ? 'record' : 'record end magic'} must be, but non-zero data at offset ${nonZeroAtOffset}`);
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

function torn(kind: TornKind, offset: number, detail: string): LogStop {
  return { kind, torn: true, defect: false, offset, detail };
}

function defect(kind: DefectKind, offset: number, detail: string): LogStop {
  return { kind, torn: false, defect: true, offset, detail };
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

// ---------------------------------------------------------------------------------------
// Streaming over a file of any size.

export const DEFAULT_READ_CHUNK_BYTES = 1024 * 1024;

export interface ReadLogOptions {
  chunkBytes?: number; // read size; records straddling chunks are carried over
  // seq_nr of the first record; default 1 when starting at offset 0, else unknown.
  expectedSeqNr?: number;
  // Treat this offset as the end of the file (e.g. the durable length a fetcher knows).
  // Default and upper bound: the file size when reading starts.
  endPos?: number;
}

export type LogBatchItem = { type: 'batch'; records: LogRecord[] } | { type: 'end'; stop: LogStop };
export type LogRecordItem = { type: 'record'; record: LogRecord } | { type: 'end'; stop: LogStop };

// Yields the verified records chunk by chunk, then exactly one 'end' item with the stop
// reason; stop.offset is the exact end of the last good record. Payload views stay valid
// for as long as the caller keeps them (every chunk gets its own buffer).
// Throws on I/O errors and when fromPos lies beyond the end of the file.
export async function* readLogBatches(path: string, fromPos: number, opts: ReadLogOptions = {}): AsyncGenerator<LogBatchItem, void, undefined> {
  const chunkBytes = opts.chunkBytes ?? DEFAULT_READ_CHUNK_BYTES;
  assert(Number.isSafeInteger(chunkBytes) && chunkBytes > 0, `bad chunkBytes ${chunkBytes}`);
  assert(Number.isSafeInteger(fromPos) && fromPos >= 0, `bad fromPos ${fromPos}`);
  const fh = await open(path, 'r');
  try {
    const fileBytes = (await fh.stat()).size;
    const limit = opts.endPos === undefined ? fileBytes : Math.min(opts.endPos, fileBytes);
    if (fromPos > limit) throw new RangeError(`${path}: start offset ${fromPos} is beyond the end of the log (${limit} bytes)`);

    let expected = opts.expectedSeqNr ?? (fromPos === 0 ? 1 : undefined);
    let carryPos = fromPos; // file offset of carry[0]
    let carry = Buffer.alloc(0); // an incomplete record from the previous chunk
    for (;;) {
      const readPos = carryPos + carry.length;
      const wantBytes = Math.min(chunkBytes, limit - readPos);
      const buf = Buffer.allocUnsafe(carry.length + wantBytes);
      carry.copy(buf, 0);
      const gotBytes = await readFully(fh, buf, carry.length, wantBytes, readPos);
      const data = buf.subarray(0, carry.length + gotBytes);
      // A short read means the file shrank under us: its current end is the end.
      const atEof = gotBytes < wantBytes || readPos + gotBytes >= limit;

      const result = scanBuffer(data, carryPos, { expectedSeqNr: expected, atEof });
      if (result.records.length > 0) yield { type: 'batch', records: result.records };
      expected = result.nextSeqNr;
      const stop = result.stop;
      if (stop.kind === 'need-more') {
        assert(!atEof, 'scanner asked for more data at EOF');
        carry = data.subarray(result.endOffset - carryPos);
        assert(carry.length < MAX_RECORD_BYTES, `carry of ${carry.length} bytes exceeds one record`);
        carryPos = result.endOffset;
        continue;
      }
      if (stop.kind === 'zero-pending') {
        const nonZeroAt = await findNonZero(fh, readPos + gotBytes, limit, chunkBytes);
        yield { type: 'end', stop: resolveZeroPending(stop, nonZeroAt) };
        return;
      }
      yield { type: 'end', stop };
      return;
    }
  } finally {
    await fh.close();
  }
}

// The same stream, one record at a time.
export async function* readLogRecords(path: string, fromPos: number, opts: ReadLogOptions = {}): AsyncGenerator<LogRecordItem, void, undefined> {
  for await (const item of readLogBatches(path, fromPos, opts)) {
    if (item.type === 'end') {
      yield item;
      return;
    }
    for (const record of item.records) yield { type: 'record', record };
  }
}

type FileHandle = Awaited<ReturnType<typeof open>>;

async function readFully(fh: FileHandle, buf: Buffer, at: number, lengthBytes: number, filePos: number): Promise<number> {
  let gotBytes = 0;
  while (gotBytes < lengthBytes) {
    const { bytesRead } = await fh.read(buf, at + gotBytes, lengthBytes - gotBytes, filePos + gotBytes);
    if (bytesRead === 0) break;
    gotBytes += bytesRead;
  }
  return gotBytes;
}

// File offset of the first non-zero byte in [from, to), or undefined.
async function findNonZero(fh: FileHandle, from: number, to: number, chunkBytes: number): Promise<number | undefined> {
  const buf = Buffer.allocUnsafe(Math.max(1, Math.min(chunkBytes, to - from)));
  let pos = from;
  while (pos < to) {
    const gotBytes = await readFully(fh, buf, 0, Math.min(buf.length, to - pos), pos);
    if (gotBytes === 0) break;
    const i = firstNonZeroByte(buf, 0, gotBytes);
    if (i >= 0) return pos + i;
    pos += gotBytes;
  }
  return undefined;
}
