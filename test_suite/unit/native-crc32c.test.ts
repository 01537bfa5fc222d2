// The helper's CRC32C (native/mars_crc32c.c, common/log/crc32c.ts) gives what the @node-rs/crc32
// package gives, for every length around the 8-byte steps of its loop, at any offset, continued
// from a previous CRC, and in chunks as the log records' payload digest cuts them; bad
// arguments throw instead of reading outside the Buffer.
import t from 'tap';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { crc32c as packageCrc32c } from '@node-rs/crc32';
import { nativeIoStatus } from '../../common/disk/native-io.js';
import { CRC32C_IMPLEMENTATION, crc32cChunks, crc32cRange, nativeCrc32c } from '../../common/log/crc32c.js';

const native = nativeCrc32c();
// npm install builds the helper; CI counts a skip as a failure, so a missing build shows there.
const skip = native ? false : `native CRC32C unavailable (no helper or no SSE4.2): ${nativeIoStatus()}`;

t.test('the known CRC32C check value, through the module the records use', async (t) => {
  // CRC-32C of the ASCII digits 1..9 (the standard check value of the Castagnoli polynomial).
  const digits = Buffer.from('123456789');
  t.equal(crc32cRange(digits, 0, 9), 0xe3069283);
  t.equal(crc32cRange(digits, 0, 0), 0, 'no bytes');
  t.equal(crc32cRange(digits, 5, 9, crc32cRange(digits, 0, 5)), 0xe3069283, 'continued from the CRC of the first part');
  t.equal(CRC32C_IMPLEMENTATION, native ? 'native' : 'package');
});

t.test('every length 0..100 at offsets 0..8, and continued, the same as the package', { skip }, async (t) => {
  const buf = randomBytes(256);
  let mismatches = 0;
  for (let start = 0; start <= 8; start++) {
    for (let n = 0; n <= 100; n++) {
      const want = packageCrc32c(buf.subarray(start, start + n));
      if (native!.range(buf, start, start + n, 0) !== want) mismatches++;
      const prev = packageCrc32c(buf.subarray(0, start));
      if (native!.range(buf, start, start + n, prev) !== packageCrc32c(buf.subarray(start, start + n), prev)) mismatches++;
    }
  }
  t.equal(mismatches, 0);
});

t.test('random ranges and chunkings (property)', { skip }, async (t) => {
  fc.assert(fc.property(
    fc.uint8Array({ minLength: 0, maxLength: 9000 }), fc.nat(), fc.nat(), fc.integer({ min: 1, max: 16 }),
    (bytes, a, b, count) => {
      const buf = Buffer.from(bytes);
      const start = buf.length === 0 ? 0 : a % (buf.length + 1);
      const end = start + (buf.length - start === 0 ? 0 : b % (buf.length - start + 1));
      if (native!.range(buf, start, end, 0) !== packageCrc32c(buf.subarray(start, end))) return false;
      const got = new Uint32Array(count);
      native!.chunks(buf, start, end - start, got);
      const chunk = Math.floor((end - start) / count);
      for (let k = 0; k < count; k++) {
        const s = start + k * chunk;
        const e = k === count - 1 ? end : s + chunk;
        if (got[k] !== (e === s ? 0 : packageCrc32c(buf.subarray(s, e)))) return false;
      }
      return true;
    },
  ), { numRuns: 300 });
  t.pass('300 random cases agree');
});

t.test('crc32cChunks of the module matches the package path for a record-sized payload', async (t) => {
  const buf = randomBytes(4096 + 100);
  const out = new Uint32Array(8);
  crc32cChunks(buf, 48, 4096, out);
  t.same([...out], Array.from({ length: 8 }, (_, k) => packageCrc32c(buf.subarray(48 + k * 512, 48 + (k + 1) * 512))));
  const odd = new Uint32Array(8);
  crc32cChunks(buf, 3, 13, odd); // 1-byte chunks, the last takes 6
  t.equal(odd[7], packageCrc32c(buf.subarray(3 + 7, 3 + 13)));
});

t.test('ranges outside the Buffer and bad arguments throw', { skip }, async (t) => {
  const buf = Buffer.alloc(16);
  t.throws(() => native!.range(buf, 0, 17, 0), /crc32cRange/);
  t.throws(() => native!.range(buf, 9, 8, 0), /crc32cRange/);
  t.throws(() => native!.range(buf, -1, 4, 0), /crc32cRange/);
  t.throws(() => native!.chunks(buf, 8, 9, new Uint32Array(8)), /crc32cChunks/);
  t.throws(() => native!.chunks(buf, 0, 8, new Uint32Array(0)), /crc32cChunks/);
  t.throws(() => native!.chunks(buf, 0, 8, new Int32Array(8) as unknown as Uint32Array), /crc32cChunks/);
});
