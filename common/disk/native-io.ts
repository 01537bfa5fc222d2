// Disk I/O without a thread-pool round trip per request (native/mars_io.c). Every positional
// read or write through libuv is a hand-off to its pool and back: measured here at 15-20 us of
// main-thread time each (a futex wake-up of a pool thread on a VM), more than a cached 4 KiB
// copy costs. Two helpers avoid it:
// - NowaitReader: preadv2 with RWF_NOWAIT copies data that is in the page cache on the calling
//   thread and never waits for the disk (it answers EAGAIN; the caller reads the rest through
//   the pool);
// - writeBatch: many buffers at their own offsets in one pool task (writeback of random pages);
// - nativeBlockDigests: a fast sync's block digests in one pool task per range, with the
//   OpenSSL of the running node (no JavaScript call per 4 KiB block);
// - trimCHeap: the C heap's free pages back to the kernel (daemon/heap-trimmer.ts);
// - nativeInotify: directory change events read on demand (common/disk/dir-watch.ts).
// (The same helper computes the log records' CRC32C: common/log/crc32c.ts.)
//
// The helper is built by `npm install` (scripts/build-native.mjs). Where it is missing (no
// compiler, another OS) or the kernel or filesystem refuses RWF_NOWAIT, I/O takes the pool path
// as before: same results, only slower. `nativeIoStatus()` says which.
import { getSystemErrorName } from 'node:util';
import { hasNativeFunction, nativeAddon } from '../util/native-addon.js';

interface NativeIo {
  preadNoWait(fd: number, buffer: Buffer, offsetBytes: number): number;
  pwriteBatch(fd: number, buffers: Buffer[], offsets: number[], done: (result: number) => void): void;
  blockDigests(fd: number, fromPos: number, lengthBytes: number, algorithm: number, key: Buffer | null, out: Buffer, done: (result: number) => void): void;
  digestsAvailable(): boolean;
  /** mars_memory.c; missing in builds older than it */
  heapTrim?(minFreeBytes: number): number;
  /** mars_inotify.c; missing in builds older than it */
  inotifyOpen?(): number;
  inotifyAdd?(fd: number, path: string, mode: InotifyMode): number;
  inotifyRemove?(fd: number, wd: number): number;
  inotifyDrain?(fd: number, out: Int32Array): number;
}

/**
 * What a watch of a directory reports (mars_inotify.c), besides its own deletion or move:
 * 0 its entries (created, deleted, renamed, their attributes), 1 nothing else (an ancestor),
 * 2 writes and truncations of the files in it.
 */
export type InotifyMode = 0 | 1 | 2;

/** mars_inotify.c: an inotify instance read without blocking (negative results are -errno). */
export interface NativeInotify {
  /** an instance's fd, or -errno */
  open(): number;
  /** a watch descriptor for the directory, or -errno */
  add(fd: number, path: string, mode: InotifyMode): number;
  remove(fd: number, wd: number): number;
  /** n (wd, mask) pairs queued, written to out; -1 when events were lost (overflow); -errno */
  drain(fd: number, out: Int32Array): number;
}

const EAGAIN = 11;
/** errnos meaning "this file or kernel cannot do RWF_NOWAIT at all": stop trying for it */
const UNSUPPORTED_ERRNOS = new Set([95 /* EOPNOTSUPP */, 38 /* ENOSYS */, 22 /* EINVAL */]);

/**
 * Larger reads go to the pool: a copy of this size costs the event loop ~100 us; bigger ones
 * would delay every other connection, and for them the pool's hand-off is a small part.
 */
export const NOWAIT_MAX_BYTES = 1024 * 1024;

let addon: NativeIo | null = null;
let status = 'not loaded';
/** the helper has blockDigests and found the crypto library */
let digestsFound = false;

function load(): void {
  const found = nativeAddon();
  if (!found.ok) {
    status = found.why;
    return;
  }
  const inspected = inspectAddon(found.loaded, found.path);
  addon = inspected.addon;
  digestsFound = inspected.digests;
  status = inspected.status;
}

/**
 * What a loaded helper offers. A build older than the JavaScript (a checkout updated without
 * `npm install`) lacks the newer functions: it is used for what it has, and the status says
 * to rebuild, instead of failing at the first call of a missing function.
 */
export function inspectAddon(loaded: unknown, path: string): { addon: NativeIo | null; digests: boolean; status: string } {
  const has = (name: string) => hasNativeFunction(loaded, name);
  const rebuild = 'an older build: npm install builds it again';
  if (!has('preadNoWait') || !has('pwriteBatch')) return { addon: null, digests: false, status: `${path} is not usable (${rebuild})` };
  const a = loaded as NativeIo;
  if (!has('blockDigests') || !has('digestsAvailable')) return { addon: a, digests: false, status: `loaded from ${path}; sync digests in JavaScript (${rebuild})` };
  const digests = a.digestsAvailable() === true;
  return { addon: a, digests, status: `loaded from ${path}; ${digests ? 'sync digests by the OpenSSL in this process' : 'sync digests in JavaScript (no OpenSSL found in this process)'}` };
}
load();

/** One line for logs and --version: whether the native helper is in use, and if not why. */
export function nativeIoStatus(): string {
  return status;
}

export function nativeIoAvailable(): boolean {
  return addon !== null && enabled;
}

let enabled = true;
/** Tests and A/B measurements compare both paths in one process; marsd never calls this. */
export function setNativeIoEnabled(on: boolean): void {
  enabled = on;
}

/**
 * Write buffers[i] at offsets[i], every one completely, in one pool task (adjacent ones in one
 * pwritev). Needs nativeIoAvailable(). The arrays must not change until the promise settles.
 * Rejects with an errno error naming `path` on the first failure (what was written before it
 * stays written, as with separate writes).
 */
export function writeBatch(fd: number, buffers: Buffer[], offsets: number[], path: string): Promise<void> {
  if (!nativeIoAvailable()) throw new Error('writeBatch: the native I/O helper is not loaded');
  const expected = buffers.reduce((n, b) => n + b.length, 0);
  return new Promise((resolve, reject) => {
    addon!.pwriteBatch(fd, buffers, offsets, (result) => {
      if (result === expected) return resolve();
      if (result >= 0) return reject(new Error(`pwrite ${path}: wrote ${result} of ${expected} bytes`));
      const code = getSystemErrorName(result);
      reject(Object.assign(new Error(`${code}: pwrite ${path}`), { code, errno: result, syscall: 'pwrite', path }));
    });
  });
}

/**
 * When the C heap holds at least minFreeBytes of free memory, give its free pages back to the
 * kernel (glibc's malloc_trim). Returns the free bytes the heap held, or undefined where the
 * helper cannot tell (not loaded, an older build, not glibc).
 */
export function trimCHeap(minFreeBytes: number): number | undefined {
  if (!nativeIoAvailable() || typeof addon!.heapTrim !== 'function') return undefined;
  const free = addon!.heapTrim(minFreeBytes);
  return free >= 0 ? free : undefined;
}

/** The helper's inotify functions, or undefined where it is not loaded or too old. */
export function nativeInotify(): NativeInotify | undefined {
  const a = addon;
  if (a === null || !enabled || a.inotifyOpen === undefined || a.inotifyAdd === undefined || a.inotifyRemove === undefined || a.inotifyDrain === undefined) return undefined;
  return {
    open: a.inotifyOpen.bind(a),
    add: a.inotifyAdd.bind(a),
    remove: a.inotifyRemove.bind(a),
    drain: a.inotifyDrain.bind(a),
  };
}

/** The algorithms of nativeBlockDigests, by their number in mars_digests.c. */
const NATIVE_DIGESTS = { md5: 0, sha1: 1, 'gmac-aes128': 2 } as const;
export type NativeDigest = keyof typeof NATIVE_DIGESTS;

/** Whether nativeBlockDigests can run: the helper is loaded and found the crypto library. */
export function nativeDigestsAvailable(): boolean {
  return nativeIoAvailable() && digestsFound;
}

/**
 * The 16-byte digest of every 4 KiB block of fd in [fromPos, fromPos + lengthBytes), in one
 * task on libuv's pool (mars_digests.c: md5, sha1 cut to 16 bytes, or gmac-aes128 under `key`).
 * Needs nativeDigestsAvailable(); fd must stay open until the promise settles.
 */
export function nativeBlockDigests(fd: number, fromPos: number, lengthBytes: number, algorithm: NativeDigest, key?: Buffer): Promise<Buffer> {
  if (!nativeDigestsAvailable()) throw new Error('nativeBlockDigests: the native helper or its crypto library is not there');
  const out = Buffer.allocUnsafeSlow((lengthBytes / 4096) * 16);
  return new Promise((resolve, reject) => {
    addon!.blockDigests(fd, fromPos, lengthBytes, NATIVE_DIGESTS[algorithm], key ?? null, out, (result) => {
      if (result === 0) return resolve(out);
      const code = getSystemErrorName(result);
      reject(Object.assign(new Error(`${code}: block digests of [${fromPos}, +${lengthBytes})`), { code, errno: result }));
    });
  });
}

/**
 * Per open file: try the cached read first, remember when the file cannot do it at all.
 * `read` returns the bytes read on this thread: 0..buffer.length (fewer when only a part is
 * cached or at end of file); the caller reads the rest through the pool.
 */
export class NowaitReader {
  private supported = true;

  /** reads answered on this thread / fallbacks to the pool: for tests and metrics */
  hits = 0;
  misses = 0;

  read(fd: number, into: Buffer, offsetBytes: number): number {
    if (!this.supported || !nativeIoAvailable() || fd < 0 || into.length > NOWAIT_MAX_BYTES) return 0;
    const n = addon!.preadNoWait(fd, into, offsetBytes);
    if (n >= 0) {
      if (n === into.length) this.hits++;
      else this.misses++;
      return n;
    }
    this.misses++;
    if (-n !== EAGAIN && UNSUPPORTED_ERRNOS.has(-n)) this.supported = false;
    // Any other error (EBADF after a close, EIO) is the pool read's to report, with its message.
    return 0;
  }
}
