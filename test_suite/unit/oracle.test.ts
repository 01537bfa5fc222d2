// The write-order oracle on synthetic in-memory images: prefixes pass, images no prefix explains
// fail with a reason naming the blocks and writes, damaged blocks are caught, pipelined and
// failed writes are judged by what the client could know, and a large image checks quickly.
import t, { type Test } from 'tap';
import { performance } from 'node:perf_hooks';
import { decodeBlock, encodeBlock, WriteOrderOracle, type CheckResult } from '../helpers/oracle.js';

const BS = 4096;

/** Reads from an in-memory image (optionally async, to exercise both forms). */
function reader(image: Buffer, async = false) {
  return (pos: number, len: number) => {
    const out = Buffer.from(image.subarray(pos, pos + len)); // a copy, like a real read
    return async ? Promise.resolve(out) : out;
  };
}

function putBlock(image: Buffer, block: number, seq: number): void {
  encodeBlock(seq, block, BS, image, block * BS);
}

function assertOk(t: Test, r: CheckResult, what: string): asserts r is Extract<CheckResult, { ok: true }> {
  if (!r.ok) t.fail(`${what}: ${r.reason}`);
  else t.pass(what);
}

/** A history on 16 blocks with overwrites and multi-block writes. */
function sampleHistory(): WriteOrderOracle {
  const o = new WriteOrderOracle({ deviceBytes: 16 * BS, blockBytes: BS });
  o.nextWrite([0]); // 1
  o.nextWrite({ start: 2, count: 3 }); // 2: blocks 2-4
  o.nextWrite([3]); // 3
  o.nextWrite([0, 1]); // 4
  o.nextWrite({ start: 10, count: 6 }); // 5: blocks 10-15
  o.nextWrite([4]); // 6
  o.nextWrite([12, 13]); // 7
  o.nextWrite([0]); // 8
  return o;
}

t.test('block codec: round trip, and damage is detected', async (t) => {
  const b = encodeBlock(42, 7, BS);
  t.same(decodeBlock(b, 0, BS), { kind: 'tag', seq: 42, blockIndex: 7 });
  t.same(decodeBlock(Buffer.alloc(BS), 0, BS), { kind: 'zero' });
  t.notOk(b.equals(encodeBlock(42, 8, BS)), 'filler depends on the block index');
  t.notOk(b.equals(encodeBlock(43, 7, BS)), 'filler depends on the write');

  const flippedFiller = Buffer.from(b);
  flippedFiller[3000]! ^= 1;
  t.match(decodeBlock(flippedFiller, 0, BS), { kind: 'bad', why: /checksum/ });
  const flippedSeq = Buffer.from(b);
  flippedSeq[8]! ^= 1;
  t.match(decodeBlock(flippedSeq, 0, BS), { kind: 'bad', why: /checksum/ });
  const noMagic = Buffer.from(b);
  noMagic[0] = 0x41;
  t.match(decodeBlock(noMagic, 0, BS), { kind: 'bad', why: /magic/ });
  t.match(decodeBlock(encodeBlock(1, 0, 512), 0, BS), { kind: 'bad' }, 'short block');
  const halfTorn = Buffer.concat([b.subarray(0, 2048), encodeBlock(41, 7, BS).subarray(2048)]);
  t.match(decodeBlock(halfTorn, 0, BS), { kind: 'bad', why: /checksum/ }, 'half of one write, half of another');

  // A block at an unaligned offset in a larger buffer decodes the same.
  const odd = Buffer.alloc(BS + 3);
  encodeBlock(9, 1, BS, odd, 3);
  t.same(decodeBlock(odd, 3, BS), { kind: 'tag', seq: 9, blockIndex: 1 });
  t.throws(() => encodeBlock(0, 0, BS), /bad seq/);
  t.throws(() => encodeBlock(1, 0, 1000), /multiple of 512/);
});

t.test('nextWrite: data, positions, argument checks', async (t) => {
  const o = new WriteOrderOracle({ deviceBytes: 8 * BS });
  const w = o.nextWrite([2, 3, 4]);
  t.equal(w.seq, 1);
  t.equal(w.pos, 2 * BS);
  t.equal(w.data.length, 3 * BS);
  for (let i = 0; i < 3; i++) t.same(decodeBlock(w.data, i * BS, BS), { kind: 'tag', seq: 1, blockIndex: 2 + i });
  t.throws(() => o.nextWrite([1, 3]), /contiguous/);
  t.throws(() => o.nextWrite({ start: 7, count: 2 }), /do not fit/);
  t.throws(() => o.nextWrite([]), /no blocks/);
  t.throws(() => new WriteOrderOracle({ deviceBytes: 5000 }), /multiple/);
  t.equal(o.lastSeq, 1);
});

t.test('every prefix of a sequential history passes, with the right prefix range', async (t) => {
  const o = sampleHistory();
  for (let k = 0; k <= o.lastSeq; k++) {
    const r = await o.checkImage(reader(o.renderPrefix(k), k % 2 === 0), { chunkBytes: 3 * BS });
    assertOk(t, r, `prefix ${k}`);
    t.ok(r.prefixMin <= k && k <= r.prefixMax, `prefix ${k} within [${r.prefixMin}, ${r.prefixMax}]`);
  }
  // Exact ranges: after #3, write #4 (blocks 0-1) is the next one missing: [3, 3].
  const r3 = await o.checkImage(reader(o.renderPrefix(3)));
  assertOk(t, r3, 'prefix 3');
  t.equal(r3.prefixMin, 3);
  t.equal(r3.prefixMax, 3);
  // After #6, write #7 (blocks 12-13) is the next one missing: [6, 6].
  const r6 = await o.checkImage(reader(o.renderPrefix(6)));
  assertOk(t, r6, 'prefix 6');
  t.same([r6.prefixMin, r6.prefixMax], [6, 6]);
  const all = await o.checkImage(reader(o.renderPrefix(8)));
  assertOk(t, all, 'full history');
  t.same([all.prefixMin, all.prefixMax, all.lastSeq], [8, 8, 8]);
  t.equal(all.firstMissingAcked, null);
});

t.test('never-written blocks: zeros are the state before the first write', async (t) => {
  const o = new WriteOrderOracle({ deviceBytes: 8 * BS });
  const empty = Buffer.alloc(8 * BS);
  const r0 = await o.checkImage(reader(empty));
  assertOk(t, r0, 'empty history, empty image');
  t.same([r0.prefixMin, r0.prefixMax], [0, 0]);
  o.nextWrite([5]); // 1
  o.nextWrite([6]); // 2
  const r = await o.checkImage(reader(empty));
  assertOk(t, r, 'nothing replicated yet');
  t.same([r.prefixMin, r.prefixMax], [0, 0]);
  const onlySecond = Buffer.alloc(8 * BS);
  putBlock(onlySecond, 6, 2);
  const bad = await o.checkImage(reader(onlySecond));
  t.notOk(bad.ok, 'write #2 without write #1');
  if (!bad.ok) t.match(bad.reason, /block 5 was never written and lacks write #1, but block 6 holds write #2/);
});

t.test('a newer write to one block with an older state of another fails, naming both', async (t) => {
  const o = sampleHistory();
  // Block 0 holds #8 (the last write), but block 3 holds #2: #3 overwrote it before #8.
  const image = o.renderPrefix(8);
  putBlock(image, 3, 2);
  const r = await o.checkImage(reader(image));
  t.notOk(r.ok);
  if (!r.ok) {
    t.match(r.reason, /block 3 holds write #2 and lacks write #3/);
    t.match(r.reason, /block 0 holds write #8/);
    t.match(r.reason, /no prefix/);
  }
  // The same stale block with everything after #3 rolled back is a fine prefix (#2).
  const ok = await o.checkImage(reader(o.renderPrefix(2)));
  assertOk(t, ok, 'prefix 2');
});

t.test('a torn multi-block write fails', async (t) => {
  const o = sampleHistory();
  // Write #5 covers blocks 10-15; show it on 10-12 only, older zeros on 13-15.
  const image = o.renderPrefix(4);
  for (const b of [10, 11, 12]) putBlock(image, b, 5);
  const r = await o.checkImage(reader(image));
  t.notOk(r.ok);
  if (!r.ok) t.match(r.reason, /write #5 \(blocks 10-15\) is visible at block 10, but block 13 is still as before #5 \(never written\): a torn write/);
});

t.test('damaged, misplaced and foreign blocks fail with their block number', async (t) => {
  const o = sampleHistory();
  const good = o.renderPrefix(8);

  const corrupt = Buffer.from(good);
  corrupt[3 * BS + 100]! ^= 0xff;
  let r = await o.checkImage(reader(corrupt));
  t.notOk(r.ok);
  if (!r.ok) t.match(r.reason, /block 3: checksum mismatch/);

  // Filler damaged but the CRC recomputed: only the filler check can see it.
  const forged = Buffer.from(good);
  forged[4 * BS + 200]! ^= 0xff;
  const { crc32c } = await import('@node-rs/crc32');
  const blk = forged.subarray(4 * BS, 5 * BS);
  blk.writeUInt32LE(crc32c(blk.subarray(32), crc32c(blk.subarray(0, 28))) >>> 0, 28);
  r = await o.checkImage(reader(forged));
  t.notOk(r.ok);
  if (!r.ok) t.match(r.reason, /block 4: filler does not belong to write #6/);
  const lax = await o.checkImage(reader(forged), { verifyFiller: false });
  t.ok(lax.ok, 'without the filler check a re-checksummed block passes (so the check is what caught it)');

  const misplaced = Buffer.from(good);
  good.copy(misplaced, 11 * BS, 12 * BS, 13 * BS);
  r = await o.checkImage(reader(misplaced));
  t.notOk(r.ok);
  if (!r.ok) t.match(r.reason, /block 11: holds the content of block 12 \(write #7\), misplaced/);

  const unknown = Buffer.from(good);
  putBlock(unknown, 9, 99);
  r = await o.checkImage(reader(unknown));
  t.notOk(r.ok);
  if (!r.ok) t.match(r.reason, /block 9: holds write #99, which is not in the history \(8 writes\)/);

  const wrongBlock = Buffer.from(good);
  putBlock(wrongBlock, 9, 5); // #5 wrote 10-15, never block 9
  r = await o.checkImage(reader(wrongBlock));
  t.notOk(r.ok);
  if (!r.ok) t.match(r.reason, /block 9: holds write #5, which wrote blocks 10-15, not block 9/);

  const garbage = Buffer.from(good);
  garbage.fill(0x5a, 6 * BS, 7 * BS);
  r = await o.checkImage(reader(garbage));
  t.notOk(r.ok);
  if (!r.ok) t.match(r.reason, /block 6: neither zeros nor a tagged block/);

  const several = Buffer.from(good);
  for (let b = 0; b < 16; b++) several[b * BS + 50]! ^= 1;
  r = await o.checkImage(reader(several), { maxProblems: 3 });
  t.notOk(r.ok);
  if (!r.ok) {
    t.equal(r.problems.length, 3);
    t.match(r.reason, /and 13 more/);
  }
});

t.test('checkReached: a caught-up replica must hold every acknowledged write', async (t) => {
  const o = sampleHistory();
  const full = o.renderPrefix(8);
  assertOk(t, await o.checkReached(reader(full), 8), 'the full history reached #8');
  const behind = o.renderPrefix(7);
  assertOk(t, await o.checkReached(reader(behind), 7), 'prefix 7 reached #7');
  const r = await o.checkReached(reader(behind), 8);
  t.notOk(r.ok, 'prefix 7 has not reached #8');
  if (!r.ok) t.match(r.reason, /lacks acknowledged write #8 \(block 0 holds write #4\)/);
  // A write fully overwritten later is implied by its successors.
  const o2 = new WriteOrderOracle({ deviceBytes: 2 * BS });
  o2.nextWrite([0]);
  o2.nextWrite([0]);
  assertOk(t, await o2.checkReached(reader(o2.renderPrefix(2)), 2), 'overwritten write is implied');
  await t.rejects(o2.checkReached(reader(o2.renderPrefix(2)), 3), /no write #3/);
});

t.test('pipelined writes: concurrent ones may land in either order, ordered ones may not', async (t) => {
  const o = new WriteOrderOracle({ deviceBytes: 8 * BS });
  o.nextWrite([0]); // 1, acknowledged at once
  const a = o.nextWrite([1], { pending: true }); // 2
  const b = o.nextWrite([2], { pending: true }); // 3, in flight together with #2
  t.throws(() => o.nextWrite([2, 3], { pending: true }), /in flight/, 'overlapping in-flight writes are refused');
  t.ok(o.overlapsPending(1, 1));
  t.notOk(o.overlapsPending(3, 5));
  o.markAcked(b.seq); // acknowledged out of order
  o.markAcked(a.seq);
  t.throws(() => o.markAcked(a.seq), /not in flight/);
  o.nextWrite([3]); // 4, submitted after both were acknowledged

  const img = Buffer.alloc(8 * BS);
  putBlock(img, 0, 1);
  putBlock(img, 2, 3); // #3 without #2: the primary may have logged #3 first
  const r = await o.checkImage(reader(img));
  assertOk(t, r, '#3 without #2 (concurrent)');
  t.same([r.prefixMin, r.prefixMax], [3, 1], 'the two bounds cross for an out-of-order prefix');

  putBlock(img, 3, 4); // #4 without #2: #2 was acknowledged before #4 was submitted
  const bad = await o.checkImage(reader(img));
  t.notOk(bad.ok);
  if (!bad.ok) t.match(bad.reason, /block 1 was never written and lacks write #2, but block 3 holds write #4/);
});

t.test('failed writes are maybe-written: with or without them is fine, torn is not', async (t) => {
  const o = new WriteOrderOracle({ deviceBytes: 8 * BS });
  o.nextWrite([0]); // 1
  const f = o.nextWrite([1, 2], { pending: true }); // 2, the connection dies
  o.markFailed(f.seq);
  t.equal(o.failedWrites, 1);
  o.nextWrite([2, 3]); // 3, after a reconnect, overwrites half of #2
  o.nextWrite([1]); // 4

  const without = Buffer.alloc(8 * BS);
  putBlock(without, 0, 1);
  putBlock(without, 2, 3);
  putBlock(without, 3, 3);
  assertOk(t, await o.checkImage(reader(without)), '#3 without the failed #2');
  assertOk(t, await o.checkReached(reader(without), 3), 'and it reached #3: #2 is not required');

  const withIt = Buffer.from(without);
  putBlock(withIt, 1, 2);
  assertOk(t, await o.checkImage(reader(withIt)), '#3 with the failed #2');

  const only2 = Buffer.alloc(8 * BS);
  putBlock(only2, 0, 1);
  putBlock(only2, 1, 2);
  putBlock(only2, 2, 2);
  assertOk(t, await o.checkImage(reader(only2)), 'the failed #2 and nothing after');

  const torn = Buffer.alloc(8 * BS);
  putBlock(torn, 0, 1);
  putBlock(torn, 1, 2); // #2 on block 1 but not on block 2, which is zeros
  const r = await o.checkImage(reader(torn));
  t.notOk(r.ok);
  if (!r.ok) t.match(r.reason, /torn/);
});

t.test('a 64 MiB image with 50 000 writes checks in seconds', async (t) => {
  const blocks = (64 * 1024 * 1024) / BS;
  const o = new WriteOrderOracle({ deviceBytes: blocks * BS });
  let x = 12345;
  const rand = (n: number) => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    return x % n;
  };
  for (let i = 0; i < 50_000; i++) {
    const count = 1 + rand(8);
    o.nextWrite({ start: rand(blocks - count + 1), count });
  }
  const image = o.renderPrefix(30_000);
  const start = performance.now();
  const r = await o.checkImage(reader(image));
  const ms = performance.now() - start;
  assertOk(t, r, 'prefix 30000 of 50000');
  t.ok(r.prefixMin <= 30_000 && 30_000 <= r.prefixMax);
  t.comment(`checked in ${ms.toFixed(0)} ms`); // speed belongs to the bench, not to a unit test
  // One block rolled back to zeros among 16384 is still found.
  const w = o.blockRangeOf(29_990);
  image.fill(0, w.start * BS, (w.start + 1) * BS);
  const bad = await o.checkImage(reader(image));
  t.notOk(bad.ok, 'a single stale block is found');
});
