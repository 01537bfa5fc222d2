// Property tests (fast-check) of the logfile codec and the link parsers (docs/reliability.md):
// what the logger writes, the scanner reads back exactly; bytes altered anywhere are never
// read as a record that was not written; random bytes and random link values never throw
// anything but the parsers' own verdicts; formatted links parse back to themselves.
import t from 'tap';
import fc from 'fast-check';
import { encodeRecord, encodeZeroRangePayload, MAX_RECORD_BYTES, MAX_RECORD_PAYLOAD_BYTES, RecordCode } from '../../common/log/record.js';
import { scanBuffer } from '../../common/log/scan-record.js';
import { formatReplayLink, formatVersionLink, tryParseReplayLink, tryParseVersionLink } from '../../common/log/links.js';

const RUNS = 300;

const recordArb = fc.record({
  devicePos: fc.nat({ max: 2 ** 40 }).map((n) => n * 512),
  zero: fc.boolean(),
  stampSec: fc.nat({ max: 2 ** 40 }),
  stampNsec: fc.nat({ max: 999_999_999 }),
  payload: fc.uint8Array({ minLength: 0, maxLength: MAX_RECORD_PAYLOAD_BYTES }),
  zeroBytes: fc.integer({ min: 1, max: 2 ** 40 }),
});

type Rec = typeof recordArb extends fc.Arbitrary<infer R> ? R : never;

function encodeAll(recs: Rec[]): { buf: Buffer; offsets: number[] } {
  const buf = Buffer.alloc(recs.length * MAX_RECORD_BYTES);
  let at = 0;
  const offsets: number[] = [];
  recs.forEach((r, i) => {
    offsets.push(at);
    at += encodeRecord(buf, at, {
      devicePos: r.devicePos, code: r.zero ? RecordCode.ZeroRange : RecordCode.WriteNew, stampSec: r.stampSec, stampNsec: r.stampNsec, seqNr: i + 1,
      payload: r.zero ? encodeZeroRangePayload(r.zeroBytes) : Buffer.from(r.payload),
    });
  });
  return { buf: buf.subarray(0, at), offsets };
}

t.test('what is encoded scans back exactly, and the scan ends cleanly', async (t) => {
  fc.assert(fc.property(fc.array(recordArb, { minLength: 0, maxLength: 8 }), (recs) => {
    const { buf, offsets } = encodeAll(recs);
    const r = scanBuffer(buf, 0, { atEof: true, expectedSeqNr: 1 });
    if (r.stop.kind !== 'clean-end' || r.records.length !== recs.length) return false;
    return r.records.every((rec, i) => {
      const w = recs[i]!;
      return rec.fileOffset === offsets[i] && rec.seqNr === i + 1 && rec.devicePos === w.devicePos && rec.stampSec === w.stampSec
        && rec.stampNsec === w.stampNsec && rec.code === (w.zero ? RecordCode.ZeroRange : RecordCode.WriteNew)
        && (w.zero ? rec.deviceBytes === w.zeroBytes : rec.payload.equals(Buffer.from(w.payload)));
    });
  }), { numRuns: RUNS });
  t.pass(`${RUNS} runs`);
});

t.test('an altered byte is never read as a record that was not written', async (t) => {
  fc.assert(fc.property(fc.array(recordArb, { minLength: 1, maxLength: 6 }), fc.nat(), fc.integer({ min: 1, max: 255 }), (recs, where, xor) => {
    const { buf } = encodeAll(recs);
    const original = scanBuffer(Buffer.from(buf), 0, { atEof: true, expectedSeqNr: 1 }).records;
    const bad = Buffer.from(buf);
    bad[where % bad.length] ^= xor;
    const r = scanBuffer(bad, 0, { atEof: true, expectedSeqNr: 1 });
    // Every record read is one that was written, byte for byte, at its place.
    return r.records.every((rec, i) => {
      const o = original[i]!;
      return rec.fileOffset === o.fileOffset && rec.totalBytes === o.totalBytes && bad.subarray(rec.fileOffset, rec.fileOffset + rec.totalBytes).equals(buf.subarray(o.fileOffset, o.fileOffset + o.totalBytes));
    }) && r.records.length < recs.length;
  }), { numRuns: RUNS });
  t.pass(`${RUNS} runs`);
});

t.test('random bytes: the scanner returns a verdict, never throws', async (t) => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 3 * MAX_RECORD_BYTES }), fc.boolean(), (bytes, atEof) => {
    const r = scanBuffer(Buffer.from(bytes), 0, { atEof });
    return r.endOffset <= bytes.length && typeof r.stop.kind === 'string';
  }), { numRuns: RUNS });
  t.pass(`${RUNS} runs`);
});

const hostArb = fc.stringMatching(/^[A-Za-z0-9_][-A-Za-z0-9_]{0,20}$/);

t.test('links: formatted values parse back to themselves; any string gets a verdict', async (t) => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 999_999_999 }), hostArb, fc.nat({ max: Number.MAX_SAFE_INTEGER }), fc.nat({ max: 2 ** 40 }), (seq, origin, minPos, len) => {
    const link = { seq, origin, minPos, len };
    const back = tryParseReplayLink(formatReplayLink(link));
    return back.ok && back.value.seq === seq && back.value.origin === origin && back.value.minPos === minPos && back.value.len === len;
  }), { numRuns: RUNS });
  fc.assert(fc.property(fc.stringMatching(/^[0-9a-f]{32}$/), fc.integer({ min: 1, max: 999_999_999 }), hostArb, fc.nat({ max: Number.MAX_SAFE_INTEGER }), (digest, seq, origin, logPos) => {
    const first = formatVersionLink({ digest, seq, origin, logPos, prev: '' });
    const p1 = tryParseVersionLink(first);
    if (!p1.ok || formatVersionLink(p1.value) !== first) return false;
    const prev = first.slice(0, first.indexOf(':'));
    const second = formatVersionLink({ digest, seq: seq + 1 > 999_999_999 ? seq : seq + 1, origin, logPos, prev });
    const p2 = tryParseVersionLink(second);
    return p2.ok && formatVersionLink(p2.value) === second;
  }), { numRuns: RUNS });
  fc.assert(fc.property(fc.string({ maxLength: 300 }), (s) => {
    const a = tryParseReplayLink(s);
    const b = tryParseVersionLink(s);
    // A verdict, and an accepted value is the canonical form of what it parsed.
    return (!a.ok || formatReplayLink(a.value) === s) && (!b.ok || formatVersionLink(b.value) === s);
  }), { numRuns: RUNS * 10 });
  t.pass('replay and version links');
});
