// Per-block digests for the fast full sync (the MARS user manual: sync): both sides hash each
// 4 KiB block of their disk; only blocks whose digests differ travel. The algorithms
// (common/resource/sync-blocks.ts: DIGEST_ALGORITHMS): md5 as in MARS, the first 16 bytes of
// sha1, or gmac-aes128 under a key of the sync run. With the native helper a whole range is
// digested in one task on libuv's pool (native/mars_digests.c); without it md5 and sha1 are
// made here, one JavaScript call per block.
import * as crypto from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { nativeBlockDigests, nativeDigestsAvailable } from '../../common/disk/native-io.js';
import { assert } from '../../common/util/assert.js';
import { DIGEST_BYTES, DIGEST_KEY_BYTES, KEYED_DIGEST, SYNC_BLOCK_BYTES, type DigestAlgorithm, type UnkeyedDigest } from '../../common/resource/sync-blocks.js';

const READ_CHUNK_BYTES = 1 << 20;

export interface BlockReader {
  read(into: Buffer, offsetBytes: number): Promise<void>;
}

/** A BlockReader over a read-only file handle; bytes beyond the end read as zeros. */
export function handleReader(handle: FileHandle): BlockReader {
  return {
    async read(into, offsetBytes) {
      let done = 0;
      while (done < into.length) {
        const { bytesRead } = await handle.read(into, done, into.length - done, offsetBytes + done);
        if (bytesRead === 0) { into.fill(0, done); return; }
        done += bytesRead;
      }
    },
  };
}

/** crypto.hash (one call, no Hash object: Node >= 20.12) where there is one. */
const oneShot = (crypto as { hash?: (algorithm: string, data: Buffer, encoding: 'buffer') => Buffer }).hash;

/** The digest of one block: DIGEST_BYTES bytes written into out at outPos. */
function digestInto(algorithm: UnkeyedDigest, block: Buffer, out: Buffer, outPos: number): void {
  const full = oneShot ? oneShot(algorithm, block, 'buffer') : crypto.createHash(algorithm).update(block).digest();
  full.copy(out, outPos, 0, DIGEST_BYTES); // sha1's 20 bytes are cut to 16
}

/** The digests of the whole blocks in data, written into out from outPos on; returns the next outPos. */
export function digestBlocksInto(algorithm: UnkeyedDigest, data: Buffer, out: Buffer, outPos: number): number {
  assert(data.length % SYNC_BLOCK_BYTES === 0, 'digested data must be whole blocks');
  for (let b = 0; b < data.length; b += SYNC_BLOCK_BYTES) {
    digestInto(algorithm, data.subarray(b, b + SYNC_BLOCK_BYTES), out, outPos);
    outPos += DIGEST_BYTES;
  }
  return outPos;
}

function checkRange(fromPos: number, lengthBytes: number): void {
  assert(fromPos % SYNC_BLOCK_BYTES === 0 && lengthBytes % SYNC_BLOCK_BYTES === 0, 'digest range must be block aligned');
}

/** The digest of every SYNC_BLOCK_BYTES block in [fromPos, fromPos + lengthBytes), concatenated. */
export async function blockDigests(disk: BlockReader, fromPos: number, lengthBytes: number, algorithm: UnkeyedDigest = 'md5'): Promise<Buffer> {
  checkRange(fromPos, lengthBytes);
  const out = Buffer.allocUnsafe((lengthBytes / SYNC_BLOCK_BYTES) * DIGEST_BYTES);
  const chunk = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, Math.max(lengthBytes, SYNC_BLOCK_BYTES)));
  let outPos = 0;
  for (let done = 0; done < lengthBytes; done += chunk.length) {
    const view = chunk.subarray(0, Math.min(chunk.length, lengthBytes - done));
    await disk.read(view, fromPos + done);
    outPos = digestBlocksInto(algorithm, view, out, outPos);
  }
  return out;
}

/** Whether this process can make the keyed digest (it needs the native helper's crypto). */
export function keyedDigestAvailable(): boolean {
  return nativeDigestsAvailable();
}

/**
 * The block digests of an open disk: on libuv's pool in one task with the native helper (no
 * JavaScript call per block; the only way to make the keyed one), else read through `reader`
 * and hashed here. fd must stay open until the promise settles.
 */
export function diskDigests(fd: number, reader: BlockReader, fromPos: number, lengthBytes: number, algorithm: DigestAlgorithm, key?: Buffer): Promise<Buffer> {
  checkRange(fromPos, lengthBytes);
  assert((algorithm === KEYED_DIGEST) === (key?.length === DIGEST_KEY_BYTES), `${algorithm} digests ${key ? 'take no key' : 'need a key'}`);
  if (nativeDigestsAvailable()) return nativeBlockDigests(fd, fromPos, lengthBytes, algorithm, key);
  assert(algorithm !== KEYED_DIGEST, 'keyed digests need the native helper (keyedDigestAvailable)');
  return blockDigests(reader, fromPos, lengthBytes, algorithm);
}

/**
 * Ranges [pos, len) whose blocks differ between two digest lists of the same range,
 * adjacent blocks merged up to maxRangeBytes.
 */
export function differingRanges(fromPos: number, mine: Buffer, theirs: Buffer, maxRangeBytes: number): { pos: number; lengthBytes: number }[] {
  assert(mine.length === theirs.length && mine.length % DIGEST_BYTES === 0, 'digest lists differ in length');
  const ranges: { pos: number; lengthBytes: number }[] = [];
  const blocks = mine.length / DIGEST_BYTES;
  for (let i = 0; i < blocks; i++) {
    const o = i * DIGEST_BYTES;
    if (mine.compare(theirs, o, o + DIGEST_BYTES, o, o + DIGEST_BYTES) === 0) continue;
    const pos = fromPos + i * SYNC_BLOCK_BYTES;
    const last = ranges[ranges.length - 1];
    if (last && last.pos + last.lengthBytes === pos && last.lengthBytes + SYNC_BLOCK_BYTES <= maxRangeBytes) last.lengthBytes += SYNC_BLOCK_BYTES;
    else ranges.push({ pos, lengthBytes: SYNC_BLOCK_BYTES });
  }
  return ranges;
}
