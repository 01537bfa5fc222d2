import t from 'tap';
import { PendingIndex, PAGE_BYTES, FULL_MASK } from '../../daemon/logger/pending-index.js';

const fill = (n: number, byte: number) => Buffer.alloc(n, byte);

t.test('reads overlay pending sectors onto disk bytes', async (t) => {
  const idx = new PendingIndex();
  idx.put(512, 1024, fill(1024, 0xaa), { seq: 1, pos: 0 });
  const out = fill(PAGE_BYTES, 0x11); // what the disk holds
  idx.applyCollected(idx.collect(0, PAGE_BYTES), out, 0);
  t.equal(out[0], 0x11);
  t.equal(out[511], 0x11);
  t.equal(out[512], 0xaa);
  t.equal(out[1535], 0xaa);
  t.equal(out[1536], 0x11);
});

t.test('overwrites coalesce into one entry and keep the oldest unapplied location', async (t) => {
  const idx = new PendingIndex();
  idx.put(0, PAGE_BYTES, fill(PAGE_BYTES, 1), { seq: 1, pos: 0 });
  idx.put(8192, PAGE_BYTES, fill(PAGE_BYTES, 2), { seq: 1, pos: 100 });
  idx.put(0, 512, fill(512, 3), { seq: 1, pos: 200 });
  t.equal(idx.entryCount, 2);
  t.same(idx.firstUnapplied(), { seq: 1, pos: 0 });
  const out = Buffer.alloc(PAGE_BYTES);
  idx.applyCollected(idx.collect(0, PAGE_BYTES), out, 0);
  t.equal(out[0], 3);
  t.equal(out[600], 1);
});

t.test('an entry overwritten during writeback moves to the end with the new location', async (t) => {
  const idx = new PendingIndex();
  idx.put(0, PAGE_BYTES, fill(PAGE_BYTES, 1), { seq: 1, pos: 0 });
  idx.put(4096, PAGE_BYTES, fill(PAGE_BYTES, 2), { seq: 1, pos: 100 });
  const batch = idx.takeBatch(PAGE_BYTES); // only page 0
  t.equal(batch.length, 1);
  idx.put(0, 512, fill(512, 9), { seq: 1, pos: 300 });
  t.equal(batch[0]!.data[0], 1, 'the in-flight copy is not modified');
  idx.completeBatch(batch);
  t.equal(idx.entryCount, 2, 'the overwritten page stays pending');
  t.same(idx.firstUnapplied(), { seq: 1, pos: 100 }, 'MINPOS passes the applied record only');
  const out = Buffer.alloc(PAGE_BYTES);
  idx.applyCollected(idx.collect(0, PAGE_BYTES), out, 0);
  t.equal(out[0], 9);
  t.equal(out[512], 1, 'the rest of the page keeps the older pending data');
  const rest = idx.takeBatch(1 << 30);
  idx.completeBatch(rest);
  t.equal(idx.entryCount, 0);
  t.equal(idx.bytesHeld, 0, 'memory accounting returns to zero');
});

t.test('zero ranges share one buffer and still read as zeros', async (t) => {
  const idx = new PendingIndex();
  idx.put(0, 64 * PAGE_BYTES, fill(64 * PAGE_BYTES, 7), { seq: 1, pos: 0 });
  const held = idx.bytesHeld;
  idx.put(0, 64 * PAGE_BYTES, undefined, { seq: 1, pos: 10 });
  t.ok(idx.bytesHeld < held / 10, 'whole zero pages cost only bookkeeping');
  const out = fill(64 * PAGE_BYTES, 0x55);
  idx.applyCollected(idx.collect(0, out.length), out, 0);
  t.ok(out.every((b) => b === 0));
  const batch = idx.takeBatch(1 << 30);
  t.ok(batch.every((e) => e.mask === FULL_MASK));
});

t.test('collect keeps data visible even if the entry completes during the disk read', async (t) => {
  const idx = new PendingIndex();
  idx.put(0, PAGE_BYTES, fill(PAGE_BYTES, 4), { seq: 1, pos: 0 });
  const found = idx.collect(0, PAGE_BYTES);
  idx.completeBatch(idx.takeBatch(1 << 30)); // writeback finished meanwhile
  const out = Buffer.alloc(PAGE_BYTES);
  idx.applyCollected(found, out, 0);
  t.equal(out[100], 4);
});

t.test('unaligned ranges are an invariant violation', async (t) => {
  const idx = new PendingIndex();
  t.throws(() => idx.put(100, 512, fill(512, 1), { seq: 1, pos: 0 }));
});
