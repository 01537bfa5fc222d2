// The native I/O helper (native/mars_io.c, common/disk/native-io.ts): cached reads on the
// event loop with a pool fallback for what is not cached, batched writes in one pool task, and
// the same bytes on disk with and without the helper. Real files, real page cache.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { openSync, closeSync, readFileSync, writeFileSync, fsyncSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.js';
import { mulberry32 } from '../helpers/prng.js';
import { inspectAddon, nativeIoAvailable, nativeIoStatus, setNativeIoEnabled, writeBatch, NOWAIT_MAX_BYTES } from '../../common/disk/native-io.js';
import { DataDisk } from '../../common/disk/data-disk.js';
import { writePages } from '../../daemon/logger/writeback.js';
import { FULL_MASK, PAGE_BYTES, type PageEntry } from '../../daemon/logger/pending-index.js';

const MiB = 1024 * 1024;
// npm install builds the helper; CI counts a skip as a failure, so a missing build shows there.
const skip = nativeIoAvailable() ? false : `native helper unavailable: ${nativeIoStatus()}`;

/** Evict a file's clean pages from the page cache (GNU dd: posix_fadvise DONTNEED). */
function dropCache(path: string): void {
  const fd = openSync(path, 'r+');
  fsyncSync(fd); // dirty pages cannot be dropped
  closeSync(fd);
  execFileSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
}

t.test('the helper is built and loaded', { skip }, async (t) => {
  t.match(nativeIoStatus(), /^loaded from .*mars_io\.node; sync digests by the OpenSSL in this process$/);
});

t.test('reads return the file bytes, cached ones on the event loop, the rest through the pool', { skip }, async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'disk.img');
  const content = randomBytes(4 * MiB);
  writeFileSync(path, content);
  const disk = await DataDisk.open(path);
  t.teardown(() => disk.close());

  const cached = Buffer.alloc(64 * 1024);
  await disk.read(cached, 12345 * 7);
  t.same(cached, content.subarray(12345 * 7, 12345 * 7 + cached.length), 'cached read');
  t.equal(disk.nowait.hits, 1, 'answered without the pool');

  dropCache(path);
  const cold = Buffer.alloc(64 * 1024);
  await disk.read(cold, MiB);
  t.same(cold, content.subarray(MiB, MiB + cold.length), 'uncached read, through the pool');
  t.ok(disk.nowait.misses >= 1, 'the uncached read fell back');

  const tail = Buffer.alloc(8192, 0xee); // half past the end of the file: zeroes
  await disk.read(tail, content.length - 4096);
  t.same(tail.subarray(0, 4096), content.subarray(content.length - 4096));
  t.same(tail.subarray(4096), Buffer.alloc(4096));

  const big = Buffer.alloc(NOWAIT_MAX_BYTES + 4096);
  const hits = disk.nowait.hits;
  await disk.read(big, 0);
  t.same(big, content.subarray(0, big.length), 'a large read');
  t.equal(disk.nowait.hits, hits, 'a read above NOWAIT_MAX_BYTES goes to the pool');
});

t.test('writeBatch writes every buffer at its offset, coalescing runs longer than IOV_MAX', { skip }, async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'disk.img');
  const sizeBytes = 16 * MiB;
  writeFileSync(path, Buffer.alloc(sizeBytes));
  const expected = Buffer.alloc(sizeBytes);
  const rand = mulberry32(7);
  const buffers: Buffer[] = [];
  const offsets: number[] = [];
  // 3000 adjacent 4 KiB pages (three pwritev calls of at most 1024), then scattered sectors.
  for (let i = 0; i < 3000; i++) offsets.push(i * 4096);
  for (let i = 0; i < 500; i++) offsets.push(12 * MiB + Math.floor(rand() * 8000) * 512);
  for (const off of offsets) {
    const b = randomBytes(off < 12 * MiB ? 4096 : 512);
    buffers.push(b);
  }
  const order = offsets.map((_, i) => i).sort((a, b) => offsets[a]! - offsets[b]!);
  const sortedBuffers = order.map((i) => buffers[i]!);
  const sortedOffsets = order.map((i) => offsets[i]!);
  for (let i = 0; i < sortedBuffers.length; i++) sortedBuffers[i]!.copy(expected, sortedOffsets[i]!);
  const fd = openSync(path, 'r+');
  try {
    await writeBatch(fd, sortedBuffers, sortedOffsets, path);
  } finally {
    closeSync(fd);
  }
  t.ok(readFileSync(path).equals(expected), 'file content as written');
});

t.test('writeBatch reports the errno with the path; bad arguments are refused', { skip }, async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'ro.img');
  writeFileSync(path, Buffer.alloc(8192));
  const fd = openSync(path, 'r');
  t.teardown(() => closeSync(fd));
  await t.rejects(writeBatch(fd, [Buffer.alloc(4096, 1)], [0], path), { code: 'EBADF', message: `EBADF: pwrite ${path}` });
  t.same(readFileSync(path), Buffer.alloc(8192), 'nothing written');
  await t.rejects(writeBatch(fd, [Buffer.alloc(4096)], [], path), TypeError);
  await t.rejects(writeBatch(fd, [Buffer.alloc(4096)], [-512], path), TypeError);
  await t.rejects(writeBatch(fd, [Buffer.alloc(0)], [0], path), TypeError);
  await t.rejects(writeBatch(fd, ['x' as unknown as Buffer], [0], path), TypeError);
});

t.test('writeback writes the same bytes with and without the helper', { skip }, async (t) => {
  const dir = tempDir(t);
  const rand = mulberry32(11);
  const entries: PageEntry[] = [];
  const pages = new Set<number>();
  while (pages.size < 2500) pages.add(Math.floor(rand() * 4096));
  for (const pageNo of pages) {
    // Mostly full pages, some with only a few valid sectors (partial writes).
    const mask = rand() < 0.8 ? FULL_MASK : (Math.floor(rand() * 255) + 1) & FULL_MASK;
    entries.push({ pageNo, mask, data: randomBytes(PAGE_BYTES) } as PageEntry);
  }
  const contents: Buffer[] = [];
  for (const native of [true, false]) {
    setNativeIoEnabled(native);
    t.teardown(() => setNativeIoEnabled(true));
    const path = join(dir, `disk-${native}.img`);
    writeFileSync(path, Buffer.alloc(4096 * PAGE_BYTES, 0x5a));
    const disk = await DataDisk.open(path);
    await writePages(disk, entries);
    await disk.close();
    contents.push(readFileSync(path));
  }
  setNativeIoEnabled(true);
  t.ok(contents[0]!.equals(contents[1]!), 'identical data files');
  const sample = entries.find((e) => e.mask === FULL_MASK)!;
  t.same(contents[0]!.subarray(sample.pageNo * PAGE_BYTES, (sample.pageNo + 1) * PAGE_BYTES), sample.data, 'a full page landed');
});

t.test('a helper built before the JavaScript is used for what it has, and the status says to rebuild', async (t) => {
  const fn = () => 0;
  const old = inspectAddon({ preadNoWait: fn, pwriteBatch: fn }, '/x/mars_io.node');
  t.ok(old.addon, 'reads and writes still use it');
  t.equal(old.digests, false, 'no native digests from a build without them');
  t.match(old.status, /sync digests in JavaScript \(an older build: npm install builds it again\)/);
  const none = inspectAddon({ preadNoWait: fn }, '/x/mars_io.node');
  t.equal(none.addon, null, 'a build without the write helper is not used at all');
  t.match(none.status, /not usable/);
  t.equal(inspectAddon(null, '/x').addon, null);
  const noSsl = inspectAddon({ preadNoWait: fn, pwriteBatch: fn, blockDigests: fn, digestsAvailable: () => false }, '/x/mars_io.node');
  t.equal(noSsl.digests, false);
  t.match(noSsl.status, /no OpenSSL found/);
  const full = inspectAddon({ preadNoWait: fn, pwriteBatch: fn, blockDigests: fn, digestsAvailable: () => true }, '/x/mars_io.node');
  t.equal(full.digests, true);
});
