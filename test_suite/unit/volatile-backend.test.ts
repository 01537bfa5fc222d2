// The volatile-cache disk of the power-loss tests (test_suite/powerloss/volatile-backend.ts) on
// real files: writes stay in memory until FLUSH/FUA, a cut keeps a seeded subset of the cached
// blocks and drops the rest, and after the cut everything is acknowledged and nothing stored.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VolatileBackend, VOLATILE_BLOCK } from '../powerloss/volatile-backend.js';
import { mulberry32 } from '../helpers/prng.js';
import { tempDir } from '../helpers/tmp.js';

const B = VOLATILE_BLOCK;
const SIZE = 64 * B;
const fill = (v: number, n = B) => Buffer.alloc(n, v);
const durable = (path: string, block: number) => readFileSync(path).subarray(block * B, (block + 1) * B);

t.test('writes are cached until FLUSH; reads see the cache', async (t) => {
  const path = join(tempDir(t), 'disk.img');
  const d = await VolatileBackend.open(path, SIZE);
  t.teardown(() => d.close());
  await d.write(2 * B, fill(0xaa, 2 * B), false);
  t.equal(d.stats().cachedBlocks, 2, 'two blocks cached');
  t.ok(durable(path, 2).equals(fill(0)), 'the durable file does not have them yet');
  t.ok((await d.read(2 * B, 2 * B)).equals(fill(0xaa, 2 * B)), 'reads see the cached blocks');
  // a partial (512-byte) write merges with the cached block
  await d.write(2 * B + 512, fill(0x11, 512), false);
  const merged = await d.read(2 * B, B);
  t.ok(merged.subarray(0, 512).equals(fill(0xaa, 512)) && merged.subarray(512, 1024).equals(fill(0x11, 512)) && merged.subarray(1024).equals(fill(0xaa, B - 1024)), 'partial write merged into the cached block');
  // a partial write on an uncached block merges with the durable content
  await d.write(10 * B, fill(0x55), false);
  await d.flush();
  await d.write(10 * B + 1024, fill(0x66, 512), false);
  const m2 = await d.read(10 * B, B);
  t.ok(m2.subarray(0, 1024).equals(fill(0x55, 1024)) && m2.subarray(1024, 1536).equals(fill(0x66, 512)), 'partial write merged with the durable block');
  await d.flush();
  t.equal(d.stats().cachedBlocks, 0, 'FLUSH empties the cache');
  t.ok(durable(path, 2).equals(merged), 'FLUSH wrote block 2 to the file');
  t.ok(durable(path, 10).equals(m2), 'FLUSH wrote block 10 to the file');
  // WRITE_ZEROES is cached too
  await d.writeZeroes(2 * B, B, false);
  t.ok((await d.read(2 * B, B)).equals(fill(0)), 'zeroes read back');
  t.ok(durable(path, 2).equals(merged), 'zeroes not durable before FLUSH');
  // FUA makes the write (and the rest of the cache) durable
  await d.write(5 * B, fill(0x77), true);
  t.ok(durable(path, 5).equals(fill(0x77)), 'FUA write is durable on its reply');
  t.equal(d.stats().cachedBlocks, 0, 'FUA wrote the cache back');
});

t.test('power cut keeps a seeded subset of the cache, then stores nothing', async (t) => {
  const dir = tempDir(t);
  const results: string[] = [];
  for (const run of [1, 2]) {
    const path = join(dir, `disk${run}.img`);
    const d = await VolatileBackend.open(path, SIZE);
    t.teardown(() => d.close());
    await d.write(0, fill(0x01, 4 * B), false);
    await d.flush();
    for (let b = 0; b < 40; b++) await d.write(b * B, fill(0x80 + (b % 64)), false);
    t.equal(d.stats().cachedBlocks, 40);
    const cut = await d.powerCut(mulberry32(7));
    t.equal(cut.applied + cut.dropped, 40, 'every cached block is either applied or dropped');
    t.ok(cut.applied > 0 && cut.dropped > 0, `a subset reached the disk (${cut.applied} applied, ${cut.dropped} dropped)`);
    const st = d.stats();
    t.same([st.cut, st.cachedBlocks, st.droppedAtCut], [true, 0, cut.dropped], 'stats after the cut');
    let applied = 0;
    let bits = '';
    for (let b = 0; b < 40; b++) {
      const blk = durable(path, b);
      const before = b < 4 ? fill(0x01) : fill(0);
      if (blk.equals(fill(0x80 + (b % 64)))) { applied++; bits += '1'; } else { t.ok(blk.equals(before), `block ${b} is old or new, nothing else`); bits += '0'; }
    }
    t.equal(applied, cut.applied, 'the file shows exactly the applied blocks');
    results.push(bits);
    // frozen until release(): no reply
    const snapshot = readFileSync(path);
    let held = true;
    const heldWrite = d.write(50 * B, fill(0xee), true).then(() => (held = false));
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    t.ok(held, 'a write after the cut gets no reply before release()');
    d.release();
    await heldWrite;
    // after the release: acknowledged, not stored; reads from the durable file
    await d.writeZeroes(0, 8 * B, false);
    await d.flush();
    t.ok(readFileSync(path).equals(snapshot), 'nothing stored after the cut');
    t.ok((await d.read(0, 40 * B)).equals(snapshot.subarray(0, 40 * B)), 'reads come from the durable file');
    t.equal(d.stats().discardedAfterCut, 3, 'three requests discarded');
  }
  t.equal(results[0], results[1], 'the same seed cuts the same blocks');
});

t.test('a power cut right after FLUSH loses nothing', async (t) => {
  const path = join(tempDir(t), 'disk.img');
  const d = await VolatileBackend.open(path, SIZE);
  t.teardown(() => d.close());
  await d.write(3 * B, fill(0x42), false);
  await d.flush();
  const cut = await d.powerCut(mulberry32(1));
  d.release();
  t.same(cut, { applied: 0, dropped: 0 }, 'nothing was cached');
  t.ok(durable(path, 3).equals(fill(0x42)), 'the flushed block survived');
});

t.test('an armed cut happens right after the n-th write, which is held until release()', async (t) => {
  const path = join(tempDir(t), 'disk.img');
  const d = await VolatileBackend.open(path, SIZE);
  t.teardown(() => d.close());
  await d.write(0, fill(0x01), false);
  await d.flush();
  const cutP = d.armCut(mulberry32(3), 3);
  await d.write(1 * B, fill(0x02), false);
  await d.write(2 * B, fill(0x03), false);
  t.equal(d.stats().cut, false, 'not cut after two writes');
  let replied = false;
  const third = d.write(3 * B, fill(0x04), false).then(() => (replied = true));
  const cut = await cutP;
  t.equal(cut.applied + cut.dropped, 3, 'the three cached writes were applied or dropped');
  t.ok(d.stats().cut, 'cut after the third write');
  t.notOk(replied, 'the third write has no reply yet');
  await t.rejects(d.armCut(mulberry32(1), 1), /already/, 'no second cut');
  d.release();
  await third;
  t.ok(replied, 'replied after release()');
  t.ok(durable(path, 0).equals(fill(0x01)), 'the flushed block is intact');
});

t.test('release() before an armed cut disarms it', async (t) => {
  const path = join(tempDir(t), 'disk.img');
  const d = await VolatileBackend.open(path, SIZE);
  t.teardown(() => d.close());
  void d.armCut(mulberry32(3), 1);
  d.release();
  await d.write(0, fill(0x09), false);
  t.notOk(d.stats().cut, 'no cut after the write');
  await d.flush();
  t.ok(durable(path, 0).equals(fill(0x09)), 'the disk works normally');
});
