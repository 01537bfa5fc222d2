// Record codec: exact byte layout (docs/logfile-format.md §2), the CRC32C fold, and round trips.
import t from 'tap';
import {
  END_MAGIC,
  MAX_RECORD_PAYLOAD_BYTES,
  RECORD_FLAG_MORE,
  RECORD_HEADER_BYTES,
  RECORD_OVERHEAD_BYTES,
  RECORD_TRAILER_BYTES,
  RecordCode,
  START_MAGIC,
  computeMetaChecksum,
  decodeHeader,
  decodeTrailer,
  decodeZeroRangePayload,
  encodeRecord,
  encodeZeroRangePayload,
  payloadDigestMatches,
  readS64Safe,
  recordBytes,
} from '../../common/log/record.js';
import { scanBuffer } from '../../common/log/scanner.js';
import { InvariantError } from '../../common/util/assert.js';

// Bitwise CRC32C (Castagnoli, reflected polynomial 0x82f63b78), independent of the library.
function refCrc32c(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

// The MARS digest spelled out literally: 8 chunks -> 32 bytes -> fold to 16 bytes.
function refDigest(payload: Buffer): Buffer {
  const d = Buffer.alloc(32);
  const chunk = Math.floor(payload.length / 8);
  for (let i = 0; i < 8; i++) {
    const start = i * chunk;
    const end = i === 7 ? payload.length : start + chunk;
    d.writeUInt32LE(refCrc32c(payload.subarray(start, end)), 4 * i);
  }
  const out = Buffer.alloc(16);
  for (let i = 0; i < 8; i++) out[i] = d[i]! ^ d[16 + i]!;
  for (let i = 0; i < 8; i++) out[8 + i] = d[8 + i]! ^ d[24 + i]!;
  return out;
}

function patterned(lengthBytes: number, seed: number): Buffer {
  const b = Buffer.alloc(lengthBytes);
  for (let i = 0; i < lengthBytes; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}

t.test('reference CRC32C matches the standard check value', async (t) => {
  t.equal(refCrc32c(Buffer.from('123456789')), 0xe3069283);
});

t.test('constants', async (t) => {
  t.equal(RECORD_HEADER_BYTES, 48);
  t.equal(RECORD_TRAILER_BYTES, 36);
  t.equal(RECORD_OVERHEAD_BYTES, 84);
  t.equal(MAX_RECORD_PAYLOAD_BYTES, 4096);
  t.equal(START_MAGIC, 0xa8f7e908d9177957n);
  t.equal(END_MAGIC, 0x74941fb74ab5726dn);
  t.equal(recordBytes(0), 84);
  t.equal(recordBytes(4096), 4180);
});

t.test('exact byte layout of a record', async (t) => {
  const payload = patterned(512, 3);
  const out = Buffer.alloc(1000, 0xee);
  const at = 13; // records may start at odd offsets
  const stampSec = 0x1_2345_6789; // needs more than 32 bits
  const devicePos = 0x3_0000_0200;
  const n = encodeRecord(out, at, { devicePos, code: RecordCode.WriteNew, stampSec, stampNsec: 987654321, seqNr: 42, payload });
  t.equal(n, 84 + 512);
  t.equal(out[at - 1], 0xee, 'nothing written before the record');
  t.equal(out[at + n], 0xee, 'nothing written after the record');

  t.equal(out.readBigUInt64LE(at + 0), START_MAGIC, 'start magic at 0');
  t.equal(out[at + 8], 1, 'format version at 8');
  t.equal(out[at + 9], 1, 'valid flag at 9');
  t.equal(out.readInt16LE(at + 10), 84 + 512, 'total_len at 10');
  t.equal(out.readBigInt64LE(at + 12), BigInt(stampSec), 'stamp sec at 12');
  t.equal(out.readBigInt64LE(at + 20), 987654321n, 'stamp nsec at 20');
  t.equal(out.readBigInt64LE(at + 28), BigInt(devicePos), 'l_pos at 28');
  t.equal(out.readInt16LE(at + 36), 512, 'l_len at 36');
  t.equal(out.readInt16LE(at + 38), 0, 'decompress_len at 38');
  t.equal(out.readInt16LE(at + 44), 1, 'l_code at 44');
  t.equal(out.readUInt16LE(at + 46), 0, 'record flags at 46: 0 for the last (or only) record of a write request');
  t.same(out.subarray(at + 48, at + 48 + 512), payload, 'payload at 48');

  const tr = at + 48 + 512;
  t.equal(out.readBigUInt64LE(tr + 0), END_MAGIC, 'end magic at trailer+0');
  t.equal(out.readUInt32LE(tr + 8), 0, 'crc_old at trailer+8');
  t.equal(out[tr + 12], 1, 'valid copy at trailer+12');
  t.equal(out[tr + 13], 0, 'spare at trailer+13');
  t.equal(out.readUInt16LE(tr + 14), 0x0004, 'crc flags CRC32C at trailer+14');
  t.equal(out.readUInt32LE(tr + 16), 42, 'seq_nr at trailer+16');
  t.same(out.subarray(tr + 20, tr + 36), refDigest(payload), 'folded CRC32C digest at trailer+20');

  // Meta checksum in the header spare at 40: CRC32C of header minus bytes 40..43, then the
  // trailer up to the digest, computed independently here.
  const metaInput = Buffer.concat([out.subarray(at, at + 40), out.subarray(at + 44, at + 48), out.subarray(tr, tr + 20)]);
  t.equal(out.readUInt32LE(at + 40), refCrc32c(metaInput), 'meta CRC32C at 40');
  t.equal(computeMetaChecksum(out, at, 512), refCrc32c(metaInput));
});

t.test('digest of short payloads: the last chunk takes everything', async (t) => {
  for (const len of [0, 1, 7, 8, 9, 15, 17, 4095]) {
    const payload = patterned(len, len);
    const out = Buffer.alloc(recordBytes(len));
    encodeRecord(out, 0, { devicePos: 0, code: RecordCode.WriteNew, stampSec: 1, stampNsec: 2, seqNr: 1, payload });
    t.same(out.subarray(48 + len + 20, 48 + len + 36), refDigest(payload), `digest for ${len} bytes`);
    t.ok(payloadDigestMatches(out, 48, len, 48 + len + 20));
  }
  // The empty payload: all chunk CRCs are 0, so is the digest.
  t.same(refDigest(Buffer.alloc(0)), Buffer.alloc(16));
});

t.test('round trip through the scanner for every payload size of interest', async (t) => {
  const lengths = [0, 1, 7, 8, 512, 4095, 4096];
  const total = lengths.reduce((s, l) => s + recordBytes(l), 0) + recordBytes(8);
  const file = Buffer.alloc(total);
  let at = 0;
  let seqNr = 1;
  const inputs = lengths.map((len, i) => ({
    devicePos: i * 4096 + (i === 6 ? 2 ** 40 : 0),
    code: RecordCode.WriteNew,
    stampSec: 1_700_000_000 + i,
    stampNsec: i * 1000,
    seqNr: seqNr++,
    payload: patterned(len, i),
  }));
  inputs.push({ devicePos: 1 << 20, code: RecordCode.ZeroRange, stampSec: 1_700_000_100, stampNsec: 999_999_999, seqNr: seqNr++, payload: encodeZeroRangePayload(3 * 2 ** 33) });
  for (const r of inputs) at += encodeRecord(file, at, r);
  t.equal(at, total);

  const res = scanBuffer(file, 0, { expectedSeqNr: 1, atEof: true });
  t.equal(res.stop.kind, 'clean-end');
  t.equal(res.records.length, inputs.length);
  let offset = 0;
  res.records.forEach((rec, i) => {
    const inp = inputs[i]!;
    t.equal(rec.fileOffset, offset);
    t.equal(rec.totalBytes, recordBytes(inp.payload.length));
    t.equal(rec.devicePos, inp.devicePos);
    t.equal(rec.code, inp.code);
    t.equal(rec.stampSec, inp.stampSec);
    t.equal(rec.stampNsec, inp.stampNsec);
    t.equal(rec.seqNr, inp.seqNr);
    t.same(rec.payload, inp.payload);
    t.equal(rec.payload.buffer, file.buffer, 'payload is a view, not a copy');
    offset += rec.totalBytes;
  });
  const zr = res.records[res.records.length - 1]!;
  t.equal(decodeZeroRangePayload(zr.payload), 3 * 2 ** 33);
  t.equal(zr.deviceBytes, 3 * 2 ** 33);
  t.equal(zr.payload.length, 8);
  t.equal(zr.payload.readBigUInt64LE(0), 3n * 2n ** 33n, 'ZeroRange length is u64 LE');

  const h = decodeHeader(file, 0);
  t.equal(h.totalBytes, 84);
  t.equal(h.payloadBytes, 0);
  const tr = decodeTrailer(file, 48);
  t.equal(tr.seqNr, 1);
  t.equal(tr.crcFlags, 4);
  t.equal(tr.validCopy, 1);
});

t.test('RECORD_FLAG_MORE: stored at header offset 46, covered by the meta checksum, read back by the scanner', async (t) => {
  const file = Buffer.alloc(2 * recordBytes(4096));
  const base = { code: RecordCode.WriteNew, stampSec: 7, stampNsec: 0, payload: patterned(4096, 1) };
  let at = encodeRecord(file, 0, { ...base, devicePos: 0, seqNr: 1, flags: RECORD_FLAG_MORE });
  at += encodeRecord(file, at, { ...base, devicePos: 4096, seqNr: 2 });
  t.equal(file.readUInt16LE(46), 1, 'bit 0 set on the first record');
  t.equal(decodeHeader(file, 0).flags, RECORD_FLAG_MORE);
  const res = scanBuffer(file, 0, { expectedSeqNr: 1, atEof: true });
  t.equal(res.stop.kind, 'clean-end');
  t.same(res.records.map((r) => r.more), [true, false], 'the scanner reports which record has another one after it');

  // A flipped flag bit is caught by the meta checksum; an unknown bit stored with a matching
  // checksum (a writer bug or a newer format) is a bad-field defect.
  const flipped = Buffer.from(file);
  flipped[46] ^= RECORD_FLAG_MORE;
  t.match(scanBuffer(flipped, 0, { expectedSeqNr: 1, atEof: true }).stop, { kind: 'bad-meta-checksum', offset: 0 });
  const unknown = Buffer.from(file);
  unknown.writeUInt16LE(0x0002, 46);
  unknown.writeUInt32LE(computeMetaChecksum(unknown, 0, 4096), 40);
  t.match(scanBuffer(unknown, 0, { expectedSeqNr: 1, atEof: true }).stop, { kind: 'bad-field', offset: 0, detail: /unknown record flags 0x2/ });
  t.throws(() => encodeRecord(Buffer.alloc(recordBytes(0)), 0, { ...base, payload: Buffer.alloc(0), devicePos: 0, seqNr: 1, flags: 0x8000 }), InvariantError, 'the encoder refuses unknown flags');
});

t.test('encodeRecord refuses values the format cannot carry', async (t) => {
  const out = Buffer.alloc(8192);
  const base = { devicePos: 0, code: RecordCode.WriteNew, stampSec: 1, stampNsec: 0, seqNr: 1, payload: Buffer.alloc(512) };
  t.throws(() => encodeRecord(out, 0, { ...base, payload: Buffer.alloc(4097) }), InvariantError);
  t.throws(() => encodeRecord(out, 0, { ...base, devicePos: -1 }), InvariantError);
  t.throws(() => encodeRecord(out, 0, { ...base, devicePos: 2 ** 53 }), InvariantError);
  t.throws(() => encodeRecord(out, 0, { ...base, stampNsec: 1e9 }), InvariantError);
  t.throws(() => encodeRecord(out, 0, { ...base, seqNr: 0 }), InvariantError);
  t.throws(() => encodeRecord(out, 0, { ...base, seqNr: 2 ** 32 }), InvariantError);
  t.throws(() => encodeRecord(out, 0, { ...base, code: 7 as RecordCode }), InvariantError);
  t.throws(() => encodeRecord(out, 0, { ...base, code: RecordCode.ZeroRange }), InvariantError, 'ZeroRange needs 8 bytes');
  t.throws(() => encodeRecord(out, 8192 - 100, base), InvariantError, 'does not fit');
  t.throws(() => encodeZeroRangePayload(0), InvariantError);
});

t.test('readS64Safe guards precision', async (t) => {
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(2n ** 53n - 1n);
  t.equal(readS64Safe(b, 0), 2 ** 53 - 1);
  b.writeBigInt64LE(2n ** 53n);
  t.ok(Number.isNaN(readS64Safe(b, 0)));
  b.writeBigInt64LE(-(2n ** 53n) + 1n);
  t.equal(readS64Safe(b, 0), -(2 ** 53) + 1);
  b.writeBigInt64LE(-(2n ** 53n));
  t.ok(Number.isNaN(readS64Safe(b, 0)));
  b.writeBigInt64LE(-5n);
  t.equal(readS64Safe(b, 0), -5);
});
