// The fast sync's block digests on libuv's pool (native/mars_digests.c through
// common/disk/native-io.ts and daemon/sync/digests.ts): md5 and sha1 equal what JavaScript
// makes, gmac-aes128 equals the AES-128-GCM tag that docs/protocol.md defines (computed here
// with node:crypto), bytes beyond the end of a file digest as zeros, and bad arguments and
// read errors are reported, never a crash. Real files.
import t from 'tap';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.js';
import { nativeBlockDigests, nativeDigestsAvailable, nativeIoStatus } from '../../common/disk/native-io.js';
import { blockDigests, diskDigests, handleReader, keyedDigestAvailable } from '../../daemon/sync/digests.js';

// npm install builds the helper; CI counts a skip as a failure, so a missing build shows there.
const skip = nativeDigestsAvailable() ? false : `native digests unavailable: ${nativeIoStatus()}`;
const BLOCK = 4096;

/** The keyed digest as docs/protocol.md defines it. */
function gmacReference(key: Buffer, blockNumber: number, block: Buffer): Buffer {
  const iv = Buffer.alloc(12);
  iv.writeBigUInt64LE(BigInt(blockNumber), 0);
  const c = createCipheriv('aes-128-gcm', key, iv);
  c.setAAD(block);
  c.final();
  return c.getAuthTag();
}

t.test('md5, sha1 and gmac-aes128 of every block, the same as node:crypto makes them', { skip }, async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'disk.img');
  const content = randomBytes(300 * BLOCK); // more than one of the helper's 128 KiB reads
  writeFileSync(path, content);
  const fd = openSync(path, 'r');
  t.teardown(() => closeSync(fd));
  const from = 3 * BLOCK;
  const length = 290 * BLOCK;
  const key = randomBytes(16);
  const [md5, sha1, gmac] = await Promise.all([
    nativeBlockDigests(fd, from, length, 'md5'),
    nativeBlockDigests(fd, from, length, 'sha1'),
    nativeBlockDigests(fd, from, length, 'gmac-aes128', key),
  ]);
  t.equal(gmac.length, 290 * 16);
  let wrong = 0;
  for (let i = 0; i < 290; i++) {
    const pos = from + i * BLOCK;
    const block = content.subarray(pos, pos + BLOCK);
    const at = (b: Buffer) => b.subarray(16 * i, 16 * (i + 1));
    if (!at(md5).equals(createHash('md5').update(block).digest())) wrong++;
    if (!at(sha1).equals(createHash('sha1').update(block).digest().subarray(0, 16))) wrong++;
    if (!at(gmac).equals(gmacReference(key, pos / BLOCK, block))) wrong++;
  }
  t.equal(wrong, 0, 'every digest equals the reference');
  const reader = { async read(into: Buffer, off: number) { content.copy(into, 0, off, off + into.length); } };
  t.same(await blockDigests(reader, from, length, 'sha1'), sha1, 'the JavaScript path makes the same sha1 digests');
});

t.test('the keyed digest depends on the key and on the block number', { skip }, async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'disk.img');
  writeFileSync(path, Buffer.alloc(2 * BLOCK, 7)); // two equal blocks
  const fd = openSync(path, 'r');
  t.teardown(() => closeSync(fd));
  const key = randomBytes(16);
  const a = await nativeBlockDigests(fd, 0, 2 * BLOCK, 'gmac-aes128', key);
  const b = await nativeBlockDigests(fd, 0, 2 * BLOCK, 'gmac-aes128', randomBytes(16));
  t.notSame(a.subarray(0, 16), a.subarray(16, 32), 'equal blocks at different places differ');
  t.notSame(a, b, 'another key, other digests');
  t.same(await nativeBlockDigests(fd, 0, 2 * BLOCK, 'gmac-aes128', key), a, 'the same key, the same digests');
});

t.test('bytes beyond the end of a file digest as zeros', { skip }, async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'short.img');
  writeFileSync(path, Buffer.alloc(BLOCK + 100, 1));
  const fd = openSync(path, 'r');
  t.teardown(() => closeSync(fd));
  const got = await nativeBlockDigests(fd, 0, 3 * BLOCK, 'sha1');
  const second = Buffer.concat([Buffer.alloc(100, 1), Buffer.alloc(BLOCK - 100)]);
  t.same(got.subarray(16, 32), createHash('sha1').update(second).digest().subarray(0, 16), 'a partial block is padded with zeros');
  t.same(got.subarray(32, 48), createHash('sha1').update(Buffer.alloc(BLOCK)).digest().subarray(0, 16), 'a block past the end is zeros');
});

t.test('a read error rejects with its errno; bad arguments throw', { skip }, async (t) => {
  const dir = tempDir(t);
  const fd = openSync(dir, 'r'); // a directory: pread fails with EISDIR
  t.teardown(() => closeSync(fd));
  await t.rejects(nativeBlockDigests(fd, 0, BLOCK, 'md5'), { code: 'EISDIR' });
  const file = join(dir, 'f.img');
  writeFileSync(file, Buffer.alloc(BLOCK));
  const h = await open(file, 'r');
  t.teardown(() => h.close());
  await t.rejects(nativeBlockDigests(h.fd, 100, BLOCK, 'md5'), /blockDigests/, 'an offset that is not block aligned');
  await t.rejects(nativeBlockDigests(h.fd, 0, BLOCK, 'gmac-aes128'), /16-byte key/, 'gmac without a key');
  await t.rejects(nativeBlockDigests(h.fd, 0, BLOCK, 'gmac-aes128', Buffer.alloc(8)), /16-byte key/, 'a short key');
  t.throws(() => diskDigests(h.fd, handleReader(h), 0, BLOCK, 'sha1', randomBytes(16)), /take no key/, 'an unkeyed digest with a key is a caller bug');
  t.ok(keyedDigestAvailable(), 'the keyed digest is offered where the helper is');
});
