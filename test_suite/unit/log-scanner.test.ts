// Scanner: every corruption class is detected and classified, torn tails are tolerated only
// at the end, and the streaming reader agrees with the in-memory scanner on any chunking.
import t from 'tap';
import { writeFileSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { RecordCode, computeMetaChecksum, encodeRecord, encodeZeroRangePayload, recordBytes } from '../../common/log/record.js';
import { type LogRecord, type LogStop, type StopKind, readLogBatches, readLogRecords, scanBuffer } from '../../common/log/scanner.js';
import { tempDir } from '../helpers/tmp.js';

interface Log {
  file: Buffer;
  offsets: number[]; // start of each record, plus the end of the file as the last entry
}

function payloadFor(index: number, lengthBytes: number): Buffer {
  const b = Buffer.alloc(lengthBytes);
  for (let i = 0; i < lengthBytes; i++) b[i] = (index * 13 + i * 7 + 1) & 0xff;
  return b;
}

function buildLog(payloadSizes: number[], seqNrs?: number[]): Log {
  const file = Buffer.alloc(payloadSizes.reduce((s, l) => s + recordBytes(l), 0));
  const offsets: number[] = [];
  let at = 0;
  payloadSizes.forEach((len, i) => {
    offsets.push(at);
    at += encodeRecord(file, at, {
      devicePos: i * 8192,
      code: RecordCode.WriteNew,
      stampSec: 1_700_000_000 + i,
      stampNsec: 500 + i,
      seqNr: seqNrs?.[i] ?? i + 1,
      payload: payloadFor(i, len),
    });
  });
  offsets.push(at);
  return { file, offsets };
}

async function readAll(path: string, fromPos: number, opts: Parameters<typeof readLogRecords>[2] = {}): Promise<{ records: LogRecord[]; stop: LogStop }> {
  const records: LogRecord[] = [];
  let stop: LogStop | undefined;
  for await (const item of readLogRecords(path, fromPos, opts)) {
    if (item.type === 'record') records.push(item.record);
    else {
      if (stop !== undefined) throw new Error('two end items');
      stop = item.stop;
    }
  }
  if (stop === undefined) throw new Error('no end item');
  return { records, stop };
}

const SIZES = [512, 4096, 0, 512, 1000, 8, 4095];
const MIDDLE = 3; // payload 512 bytes, not 8: a code flip 1 -> 3 (ZeroRange) is a length error

// The class a flipped bit at record byte `rel` must produce (payload of `payloadBytes`).
function expectedClass(rel: number, payloadBytes: number, flippedCode: number): StopKind {
  const tr = 48 + payloadBytes;
  if (rel < 8) return 'bad-start-magic';
  if (rel === 8) return 'bad-version';
  if (rel === 9) return 'invalid-record';
  if (rel < 12) return 'bad-length'; // total_len
  if (rel < 36) return 'bad-meta-checksum'; // stamp sec/nsec, l_pos
  if (rel < 38) return 'bad-length'; // l_len
  if (rel < 40) return 'bad-flags'; // decompress_len
  if (rel < 44) return 'bad-meta-checksum'; // the meta CRC itself
  if (rel < 46) return flippedCode === RecordCode.ZeroRange ? 'bad-length' : 'bad-code';
  if (rel < 48) return 'bad-meta-checksum'; // spare
  if (rel < tr) return 'bad-checksum'; // payload
  const t = rel - tr;
  if (t < 8) return 'bad-end-magic';
  if (t < 12) return 'bad-meta-checksum'; // crc_old
  if (t === 12) return 'bad-valid-copy';
  if (t === 13) return 'bad-meta-checksum'; // spare
  if (t < 16) return 'bad-flags';
  if (t < 20) return 'seq-mismatch';
  return 'bad-checksum'; // the folded digest
}

t.test('a clean log scans completely', async (t) => {
  const log = buildLog(SIZES);
  const res = scanBuffer(log.file, 0, { expectedSeqNr: 1, atEof: true });
  t.equal(res.records.length, SIZES.length);
  t.same(res.stop, { kind: 'clean-end', torn: false, defect: false, offset: log.file.length, detail: res.stop.detail });
  t.equal(res.endOffset, log.file.length);
  t.equal(res.nextSeqNr, SIZES.length + 1);
  t.same(res.records.map((r) => r.fileOffset), log.offsets.slice(0, -1));
  // Empty file: clean end at 0.
  const empty = scanBuffer(Buffer.alloc(0), 0, { expectedSeqNr: 1, atEof: true });
  t.equal(empty.stop.kind, 'clean-end');
  t.equal(empty.records.length, 0);
});

t.test('a bit flip at every bit of a middle record is a defect of the right class', async (t) => {
  const log = buildLog(SIZES);
  const start = log.offsets[MIDDLE]!;
  const lengthBytes = recordBytes(SIZES[MIDDLE]!);
  const counts: Record<string, number> = {};
  let failures = 0;
  for (let rel = 0; rel < lengthBytes; rel++) {
    for (let bit = 0; bit < 8; bit++) {
      const file = Buffer.from(log.file);
      file[start + rel]! ^= 1 << bit;
      const flippedCode = file.readInt16LE(start + 44);
      const want = expectedClass(rel, SIZES[MIDDLE]!, flippedCode);
      const res = scanBuffer(file, 0, { expectedSeqNr: 1, atEof: true });
      const ok = res.stop.kind === want && res.stop.defect && !res.stop.torn && res.stop.offset === start && res.records.length === MIDDLE;
      counts[res.stop.kind] = (counts[res.stop.kind] ?? 0) + 1;
      if (!ok) {
        failures++;
        if (failures <= 10) t.fail(`byte ${rel} bit ${bit}: got ${res.stop.kind} at ${res.stop.offset} with ${res.records.length} records (${res.stop.detail}), want ${want} at ${start}`);
      }
    }
  }
  t.equal(failures, 0, 'every flipped bit classified as expected');
  // Every class reachable by a bit flip was actually seen.
  for (const k of ['bad-start-magic', 'bad-version', 'invalid-record', 'bad-length', 'bad-meta-checksum', 'bad-flags', 'bad-code', 'bad-checksum', 'bad-end-magic', 'bad-valid-copy', 'seq-mismatch']) {
    t.ok((counts[k] ?? 0) > 0, `class ${k} occurred`);
  }
});

t.test('a length bit flip in the LAST record is a defect, never a truncated torn tail', async (t) => {
  const log = buildLog(SIZES);
  const last = log.offsets[SIZES.length - 1]!;
  for (const fieldAt of [10, 36]) {
    for (let bit = 0; bit < 16; bit++) {
      const file = Buffer.from(log.file);
      file[last + fieldAt + (bit >> 3)]! ^= 1 << (bit & 7);
      const res = scanBuffer(file, 0, { expectedSeqNr: 1, atEof: true });
      t.match(res.stop, { kind: 'bad-length', defect: true, offset: last }, `field ${fieldAt} bit ${bit}`);
    }
  }
});

t.test('without a seq expectation (mid-file start) a seq_nr flip is still caught', async (t) => {
  const log = buildLog(SIZES);
  const start = log.offsets[MIDDLE]!;
  const seqAt = start + 48 + SIZES[MIDDLE]! + 16;
  for (let bit = 0; bit < 32; bit++) {
    const file = Buffer.from(log.file);
    file[seqAt + (bit >> 3)]! ^= 1 << (bit & 7);
    const res = scanBuffer(file.subarray(start), start, { atEof: true });
    t.equal(res.stop.kind, 'bad-meta-checksum', `seq bit ${bit}`);
    t.equal(res.records.length, 0);
  }
});

t.test('truncation at every byte of the last record is a torn tail (real files)', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'log-000000001-a');
  const log = buildLog([512, 0, 1000]);
  const lastStart = log.offsets[2]!;
  writeFileSync(path, log.file);
  let failures = 0;
  for (let cut = log.file.length - 1; cut >= lastStart; cut--) {
    truncateSync(path, cut);
    const { records, stop } = await readAll(path, 0);
    const kept = cut - lastStart;
    const want = kept === 0 ? 'clean-end' : kept < 48 ? 'incomplete-header' : 'truncated-record';
    const ok = stop.kind === want && stop.torn === (kept > 0) && !stop.defect && stop.offset === lastStart && records.length === 2;
    // The in-memory scanner must agree.
    const mem = scanBuffer(log.file.subarray(0, cut), 0, { expectedSeqNr: 1, atEof: true });
    if (!ok || mem.stop.kind !== want || mem.records.length !== 2) {
      failures++;
      if (failures <= 10) t.fail(`cut at ${cut}: got ${stop.kind}/${mem.stop.kind} at ${stop.offset} with ${records.length} records, want ${want}`);
    }
  }
  t.equal(failures, 0, 'every truncation is a tolerated torn tail');
});

t.test('zero-filled tails', async (t) => {
  const log = buildLog(SIZES);
  const n = SIZES.length;

  const zeros = Buffer.concat([log.file, Buffer.alloc(10_000)]);
  let res = scanBuffer(zeros, 0, { expectedSeqNr: 1, atEof: true });
  t.match(res.stop, { kind: 'zero-tail', torn: true, defect: false, offset: log.file.length });
  t.equal(res.records.length, n);

  // Fewer zero bytes than a magic.
  res = scanBuffer(Buffer.concat([log.file, Buffer.alloc(3)]), 0, { expectedSeqNr: 1, atEof: true });
  t.match(res.stop, { kind: 'zero-tail', offset: log.file.length });

  // Header written, payload partly written, end magic and everything after zero.
  const last = log.offsets[n - 1]!;
  const partial = Buffer.concat([log.file, Buffer.alloc(500)]);
  partial.fill(0, last + 48 + 100);
  res = scanBuffer(partial, 0, { expectedSeqNr: 1, atEof: true });
  t.match(res.stop, { kind: 'zero-tail', torn: true, offset: last });
  t.equal(res.records.length, n - 1);

  // ... but the same with non-zero data after the zeroed end magic is a hole.
  partial[partial.length - 1] = 7;
  res = scanBuffer(partial, 0, { expectedSeqNr: 1, atEof: true });
  t.match(res.stop, { kind: 'zeroed-region', defect: true, offset: last });
  t.equal(res.records.length, n - 1);
});

t.test('repeated-byte garbage tails are defects', async (t) => {
  const log = buildLog(SIZES);
  for (const byte of [0xff, 0xaa]) {
    const file = Buffer.concat([log.file, Buffer.alloc(300, byte)]);
    const res = scanBuffer(file, 0, { expectedSeqNr: 1, atEof: true });
    t.match(res.stop, { kind: 'repeated-byte', defect: true, torn: false, offset: log.file.length });
    t.match(res.stop.detail, `0x${byte.toString(16)}`);
    t.equal(res.records.length, SIZES.length);
  }
  // A repeated byte over the end magic of a middle record.
  const file = Buffer.from(log.file);
  const tr = log.offsets[MIDDLE]! + 48 + SIZES[MIDDLE]!;
  file.fill(0xff, tr, tr + 8);
  const res = scanBuffer(file, 0, { expectedSeqNr: 1, atEof: true });
  t.match(res.stop, { kind: 'repeated-byte', offset: log.offsets[MIDDLE] });
  // Non-zero, non-repeated garbage at the end.
  const garbage = Buffer.concat([log.file, Buffer.from('this is not a record, just text that got appended')]);
  t.match(scanBuffer(garbage, 0, { expectedSeqNr: 1, atEof: true }).stop, { kind: 'bad-start-magic', defect: true, offset: log.file.length });
  // Short garbage that is not a prefix of the start magic.
  t.match(scanBuffer(Buffer.concat([log.file, Buffer.from([0x57, 0x79, 0x18])]), 0, { expectedSeqNr: 1, atEof: true }).stop, { kind: 'bad-start-magic' });
});

t.test('a zeroed region in the middle followed by valid records is a defect', async (t) => {
  const log = buildLog(SIZES);
  const file = Buffer.from(log.file);
  file.fill(0, log.offsets[MIDDLE]!, log.offsets[MIDDLE + 1]!);
  const res = scanBuffer(file, 0, { expectedSeqNr: 1, atEof: true });
  t.match(res.stop, { kind: 'zeroed-region', defect: true, torn: false, offset: log.offsets[MIDDLE] });
  t.match(res.stop.detail, `non-zero data at offset ${log.offsets[MIDDLE + 1]}`);
  t.equal(res.records.length, MIDDLE);
});

t.test('other defects', async (t) => {
  // Sequence numbers: a skip, and a log not starting at 1.
  let res = scanBuffer(buildLog([8, 8, 8], [1, 2, 4]).file, 0, { expectedSeqNr: 1, atEof: true });
  t.match(res.stop, { kind: 'seq-mismatch', offset: 2 * recordBytes(8) });
  t.equal(res.records.length, 2);
  res = scanBuffer(buildLog([8], [2]).file, 0, { expectedSeqNr: 1, atEof: true });
  t.match(res.stop, { kind: 'seq-mismatch', offset: 0 });

  // A field with an impossible value but a matching meta checksum (a writer bug).
  const log = buildLog([16, 16]);
  const file = Buffer.from(log.file);
  const second = log.offsets[1]!;
  file.writeBigInt64LE(-4096n, second + 28);
  file.writeUInt32LE(computeMetaChecksum(file, second, 16), second + 40);
  res = scanBuffer(file, 0, { expectedSeqNr: 1, atEof: true });
  t.match(res.stop, { kind: 'bad-field', offset: second });
  t.equal(res.records.length, 1);

  // A ZeroRange record whose payload is not 8 bytes.
  const zr = Buffer.from(buildLog([16]).file);
  zr.writeInt16LE(RecordCode.ZeroRange, 44);
  t.match(scanBuffer(zr, 0, { expectedSeqNr: 1, atEof: true }).stop, { kind: 'bad-length' });

  // A well-formed ZeroRange record scans, and reports its range length.
  const z = Buffer.alloc(recordBytes(8));
  encodeRecord(z, 0, { devicePos: 4096, code: RecordCode.ZeroRange, stampSec: 5, stampNsec: 6, seqNr: 1, payload: encodeZeroRangePayload(1 << 20) });
  res = scanBuffer(z, 0, { expectedSeqNr: 1, atEof: true });
  t.equal(res.stop.kind, 'clean-end');
  t.equal(res.records[0]!.deviceBytes, 1 << 20);

  // A complete header with a wrong field is a defect even when the record is cut short.
  const cut = Buffer.from(buildLog([512]).file.subarray(0, 100));
  cut[8] = 2;
  t.match(scanBuffer(cut, 0, { expectedSeqNr: 1, atEof: true }).stop, { kind: 'bad-version', defect: true });
});

t.test('not at EOF the scanner asks for more instead of calling a tear', async (t) => {
  const log = buildLog(SIZES);
  const partial = log.file.subarray(0, log.offsets[2]! + 30);
  const res = scanBuffer(partial, 0, { expectedSeqNr: 1, atEof: false });
  t.same(res.stop, { kind: 'need-more', offset: log.offsets[2] });
  t.equal(res.records.length, 2);
  t.equal(res.nextSeqNr, 3);
  const zeros = Buffer.concat([log.file, Buffer.alloc(100)]);
  const z = scanBuffer(zeros, 1000, { expectedSeqNr: 1, atEof: false });
  t.same(z.stop, { kind: 'zero-pending', offset: 1000 + log.file.length, zeroFromOffset: 1000 + log.file.length });
});

t.test('streaming reader: records straddling chunk boundaries', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'log-000000001-a');
  const log = buildLog([...SIZES, ...SIZES, ...SIZES]);
  writeFileSync(path, log.file);
  const mem = scanBuffer(log.file, 0, { expectedSeqNr: 1, atEof: true });
  for (const chunkBytes of [1, 7, 47, 48, 49, 100, 1000, 4179, 4180, 4181, 65536]) {
    const { records, stop } = await readAll(path, 0, { chunkBytes });
    t.equal(stop.kind, 'clean-end', `chunk ${chunkBytes}: clean end`);
    t.equal(stop.offset, log.file.length);
    t.equal(records.length, mem.records.length, `chunk ${chunkBytes}: all records`);
    const mismatch = records.findIndex((r, i) => r.fileOffset !== mem.records[i]!.fileOffset || !r.payload.equals(mem.records[i]!.payload) || r.seqNr !== i + 1);
    t.equal(mismatch, -1, `chunk ${chunkBytes}: identical records and payloads`);
  }
  // Batches keep their payloads valid after later chunks were read.
  const kept: LogRecord[] = [];
  for await (const item of readLogBatches(path, 0, { chunkBytes: 3000 })) if (item.type === 'batch') kept.push(...item.records);
  t.ok(kept.every((r, i) => r.payload.equals(payloadFor(i, r.payload.length))), 'retained payloads intact');
});

t.test('streaming reader: zero tails and holes across chunks', async (t) => {
  const dir = tempDir(t);
  const log = buildLog(SIZES);
  const tail = join(dir, 'zero-tail');
  writeFileSync(tail, Buffer.concat([log.file, Buffer.alloc(50_000)]));
  let r = await readAll(tail, 0, { chunkBytes: 4096 });
  t.match(r.stop, { kind: 'zero-tail', torn: true, offset: log.file.length });
  t.equal(r.records.length, SIZES.length);

  const hole = join(dir, 'hole');
  const holeBuf = Buffer.concat([log.file, Buffer.alloc(50_000)]);
  holeBuf[holeBuf.length - 10] = 1;
  writeFileSync(hole, holeBuf);
  r = await readAll(hole, 0, { chunkBytes: 4096 });
  t.match(r.stop, { kind: 'zeroed-region', defect: true, offset: log.file.length });
  t.match(r.stop.detail, `non-zero data at offset ${holeBuf.length - 10}`);

  // A corrupt record is classified the same by the streaming reader.
  const bad = join(dir, 'bad');
  const badBuf = Buffer.from(log.file);
  badBuf[log.offsets[MIDDLE]! + 100]! ^= 0x10;
  writeFileSync(bad, badBuf);
  r = await readAll(bad, 0, { chunkBytes: 777 });
  t.match(r.stop, { kind: 'bad-checksum', offset: log.offsets[MIDDLE] });
  t.equal(r.records.length, MIDDLE);
});

t.test('streaming reader: mid-file start, end position, bad start offset', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'log-000000001-a');
  const log = buildLog(SIZES);
  writeFileSync(path, log.file);

  let r = await readAll(path, log.offsets[2]!);
  t.equal(r.stop.kind, 'clean-end');
  t.same(r.records.map((x) => x.seqNr), [3, 4, 5, 6, 7]);
  t.equal(r.records[0]!.fileOffset, log.offsets[2]);

  r = await readAll(path, log.offsets[2]!, { expectedSeqNr: 3, chunkBytes: 100 });
  t.equal(r.stop.kind, 'clean-end');
  r = await readAll(path, log.offsets[2]!, { expectedSeqNr: 4 });
  t.match(r.stop, { kind: 'seq-mismatch', offset: log.offsets[2] });

  // Starting inside a record is caught, never resynchronised.
  r = await readAll(path, log.offsets[2]! + 8);
  t.ok(r.stop.defect, `inside a record: ${r.stop.kind}`);
  t.equal(r.records.length, 0);

  // endPos inside a record: the reader treats it as the end of the file.
  r = await readAll(path, 0, { endPos: log.offsets[4]! + 200 });
  t.match(r.stop, { kind: 'truncated-record', torn: true, offset: log.offsets[4] });
  t.equal(r.records.length, 4);

  r = await readAll(path, log.file.length);
  t.match(r.stop, { kind: 'clean-end', offset: log.file.length });
  t.equal(r.records.length, 0);
  await t.rejects(readAll(path, log.file.length + 1), RangeError);
  await t.rejects(readAll(join(dir, 'missing'), 0), { code: 'ENOENT' });
});
