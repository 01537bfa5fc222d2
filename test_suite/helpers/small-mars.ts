// A host's /mars on a small ext4 of its own (a sparse image, loop-mounted), so that a test can
// fill it up (docs/manual.md, "Emergency mode: /mars is full") without touching the machine's
// real filesystems. Needs root, losetup and mkfs.ext4. The mount and the loop device are
// released by the returned function (idempotent), in a tap teardown, and as a last resort when
// the process exits.
import type { Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, rmSync, statfsSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { MarsHost } from './cluster.js';
import { ensureTools } from './prereqs.js';

const PATH_ENV = { ...process.env, PATH: `/usr/sbin:/sbin:${process.env.PATH ?? ''}` };

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { env: PATH_ENV, stdio: ['ignore', 'pipe', 'pipe'] }).toString().trim();
}

/** Why small /mars filesystems cannot be made here (null: they can). */
export function smallMarsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'needs root (mkfs.ext4 on an image, losetup, mount)';
  return ensureTools(['mkfs.ext4', 'losetup']);
}

/**
 * Put host's /mars on a fresh ext4 of `sizeBytes` in a sparse image in `imageDir` (before
 * create-cluster or join-cluster). The returned release stops that marsd first (a mounted
 * filesystem with open files cannot be unmounted), then unmounts and detaches.
 */
export function mountSmallMars(h: MarsHost, imageDir: string, sizeBytes: number): () => Promise<void> {
  const image = join(imageDir, `${h.name}-mars.img`);
  writeFileSync(image, '');
  truncateSync(image, sizeBytes);
  const loop = run('losetup', ['--show', '-f', image]);
  let mounted = false;
  let released = false;
  // Last resort when the process dies without its teardown (marsd is SIGKILLed then too).
  const lastResort = () => {
    if (released) return;
    try { if (mounted) run('umount', ['-l', h.marsDir]); } catch { /* not mounted */ }
    try { run('losetup', ['-d', loop]); } catch { /* already detached */ }
  };
  process.once('exit', lastResort);
  const release = async () => {
    if (released) return;
    await h.cleanup();
    if (mounted) {
      for (let i = 0; ; i++) {
        try { run('umount', [h.marsDir]); break; } catch {
          if (i >= 20) { run('umount', ['-l', h.marsDir]); break; }
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      mounted = false;
    }
    try { run('losetup', ['-d', loop]); } catch { /* already detached */ }
    try { rmSync(image, { force: true }); } catch { /* keep going */ }
    released = true;
    process.off('exit', lastResort);
  };
  try {
    // -m 0: no blocks reserved for root, so ENOSPC comes when the free space shown is gone.
    run('mkfs.ext4', ['-q', '-F', '-m', '0', loop]);
    mkdirSync(h.marsDir, { recursive: true });
    run('mount', [loop, h.marsDir]);
    mounted = true;
  } catch (err) {
    void release();
    throw err;
  }
  return release;
}

/** mountSmallMars, released in the test's teardown (which tap runs before the host's own). */
export function smallMars(t: Test, h: MarsHost, imageDir: string, sizeBytes: number): void {
  t.teardown(mountSmallMars(h, imageDir, sizeBytes));
}

/**
 * Fill the filesystem of `dir` until a write fails with ENOSPC: one preallocated file of nearly
 * all the free space, then 64 KiB appends to a second one. Returns the filler files (delete
 * them to drain).
 */
export function fillUntilFull(dir: string): string[] {
  const big = join(dir, '.filler-0');
  const small = join(dir, '.filler-1');
  const st = statfsSync(dir);
  const freeBytes = st.bavail * st.bsize;
  // Leave 1 MiB for the extent tree of the big file; the appends take the rest.
  if (freeBytes > 2 << 20) run('fallocate', ['-l', String(freeBytes - (1 << 20)), big]);
  const fd = openSync(small, 'a');
  try {
    const chunk = Buffer.alloc(64 * 1024, 0xf1);
    for (let i = 0; i < 1_000_000; i++) {
      try {
        writeSync(fd, chunk);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') return [big, small];
        throw err;
      }
    }
  } finally {
    closeSync(fd);
  }
  throw new Error(`${dir} never reported ENOSPC`);
}

/** Delete what fillUntilFull wrote. */
export function drain(fillers: string[]): void {
  for (const f of fillers) rmSync(f, { force: true });
}
