// The initial fast sync sends only what differs: a secondary whose disk already equals the
// primary's except in 1 % of its 4 KiB blocks receives at most 2 % of the disk's bytes
// (digests plus the differing blocks), counted by the fault proxy in front of the primary,
// which carries every byte between the two daemons.
import t from 'tap';
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { fileDigest, startCluster } from '../helpers/multi-host.js';
import { Prng } from '../helpers/workload.js';

const RES = 'r0';
const SIZE = 128 << 20;
const BLOCK = 4096;
const BLOCKS = SIZE / BLOCK;

/** Deterministic pseudo-random content for the whole disk, written in 1 MiB pieces. */
function fillDisk(path: string, seed: number): void {
  const rng = new Prng(seed);
  const buf = Buffer.alloc(1 << 20);
  const fd = openSync(path, 'r+');
  try {
    for (let pos = 0; pos < SIZE; pos += buf.length) {
      for (let i = 0; i < buf.length; i += 4) buf.writeUInt32LE(rng.nextU32(), i);
      writeSync(fd, buf, 0, buf.length, pos);
    }
  } finally {
    closeSync(fd);
  }
}

/** Invert one byte in each of `count` distinct blocks; returns the block numbers. */
function damageBlocks(path: string, count: number, seed: number): Set<number> {
  const rng = new Prng(seed);
  const chosen = new Set<number>();
  while (chosen.size < count) chosen.add(rng.below(BLOCKS));
  const fd = openSync(path, 'r+');
  try {
    const b = Buffer.alloc(1);
    for (const block of chosen) {
      const at = block * BLOCK + rng.below(BLOCK);
      readSync(fd, b, 0, 1, at);
      b[0] = ~b[0]! & 0xff;
      writeSync(fd, b, 0, 1, at);
    }
  } finally {
    closeSync(fd);
  }
  return chosen;
}

t.test('fast sync of a disk differing in 1 % of its blocks sends at most 2 % of the disk', async (t) => {
  const differing = Math.round(BLOCKS / 100);
  let damaged = new Set<number>();
  const c = await startCluster(t, {
    hosts: ['alpha', 'beta'],
    sizeBytes: SIZE,
    res: RES,
    proxied: true,
    joinResource: false,
    initData: (h) => {
      fillDisk(h.dataPath, 42); // both disks start equal ...
      if (h.name === 'beta') damaged = damageBlocks(h.dataPath, differing, 7); // ... but for 1 % of beta's blocks
    },
  });
  const beta = c.host('beta');
  t.equal(damaged.size, differing);
  t.not(fileDigest(beta.dataPath, SIZE), fileDigest(c.primary.dataPath, SIZE), 'the disks differ before the sync');
  await beta.until('beta learned the resource', () => beta.link(`resource-${RES}/replay-alpha`) !== undefined, 30_000);

  // Count only the sync: the proxy's counters from here on carry the tree pulls (small) and
  // the sync's digests and blocks. The primary logged nothing, so no logfile bytes move.
  const proxy = c.proxy('alpha');
  const before = proxy.bytesForwarded;
  await beta.marsadmOk(['join-resource', RES, beta.dataPath]);
  await beta.until('beta synced', () => beta.link(`resource-${RES}/syncstatus-beta`) === String(SIZE), 120_000, 50);
  const after = proxy.bytesForwarded;
  const sentBytes = after.up - before.up + after.down - before.down;
  t.ok(sentBytes <= SIZE * 0.02, `${sentBytes} bytes crossed the link for the sync (limit ${SIZE * 0.02}, ${(100 * sentBytes / SIZE).toFixed(2)} % of the disk)`);
  t.ok(sentBytes >= differing * BLOCK, 'at least the differing blocks were sent');
  t.equal(beta.actual(RES, 'verifystatus'), `${BLOCKS - differing},${differing}`, 'verifystatus counts exactly the damaged blocks as different');
  t.equal(fileDigest(beta.dataPath, SIZE), fileDigest(c.primary.dataPath, SIZE), 'equal checksums after the sync');
  await beta.until('beta consistent', async () => (await beta.view('is-consistent', RES)) === '1', 30_000, 100);
});
