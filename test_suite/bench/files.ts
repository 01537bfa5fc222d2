// File helpers shared by the write-path and the replication benchmarks: random source files,
// page-cache warming, filesystem sync, the disk's sequential write rate, file digests.
import { closeSync, createReadStream, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { createHash, randomFillSync } from 'node:crypto';
import { dirname, join } from 'node:path';
import { runCommand } from './proc.js';

const MiB = 2 ** 20;

/** Writes SIZE bytes of random data (an nbdcopy source, a data disk). */
export function writeRandomFile(path: string, size: number): void {
  const fd = openSync(path, 'w');
  try {
    const buf = Buffer.alloc(8 * MiB);
    for (let off = 0; off < size; off += buf.length) {
      randomFillSync(buf);
      writeSync(fd, buf, 0, Math.min(buf.length, size - off));
    }
  } finally {
    closeSync(fd);
  }
}

/** Reads a file once so that it sits in the page cache. */
export function warmCache(path: string): Promise<void> {
  return new Promise((res, rej) => {
    createReadStream(path, { highWaterMark: 4 * MiB }).on('data', () => undefined).on('end', () => res()).on('error', rej);
  });
}

export async function syncFs(dir: string): Promise<void> {
  await runCommand('sync', ['-f', dir], 300_000);
}

/** Disk sequential write rate: dd of 1 GiB with fdatasync into the bench directory. */
export async function measureDiskRate(dir: string): Promise<{ bps: number; command: string }> {
  const file = join(dir, 'ddtest.tmp');
  const args = ['if=/dev/zero', `of=${file}`, 'bs=1M', 'count=1024', 'conv=fdatasync'];
  await syncFs(dir);
  const r = await runCommand('dd', args, 300_000);
  rmSync(file, { force: true });
  const m = /(\d+) bytes .* copied, ([\d.]+) s/.exec(r.stderr);
  if (r.code !== 0 || !m) throw new Error(`dd failed: ${r.stderr.trim()}`);
  return { bps: Number(m[1]) / Number(m[2]), command: `dd ${args.join(' ').replace(dir, `${dirname(dir)}/round-N`)}` };
}

/** SHA-256 of the first sizeBytes of a file (a shorter file counts as zero-padded). */
export function fileDigest(path: string, sizeBytes: number): string {
  const h = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(4 * MiB);
    for (let pos = 0; pos < sizeBytes; pos += buf.length) {
      const want = Math.min(buf.length, sizeBytes - pos);
      const n = readSync(fd, buf, 0, want, pos);
      if (n < want) buf.fill(0, n, want);
      h.update(buf.subarray(0, want));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}
