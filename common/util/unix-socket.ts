// Unix socket files that only their owner may use: a stale socket of a killed daemon is
// replaced, a live one (another process serving it) or a non-socket file is never touched, and
// the socket is never reachable with looser permissions than 0600, not even for a moment.
import net from 'node:net';
import { chmodSync, lstatSync, mkdtempSync, renameSync, rmdirSync, unlinkSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { assert } from './assert.js';

/** sun_path holds 108 bytes on Linux, the terminating NUL included. */
export const MAX_UNIX_PATH_BYTES = 107;

/** Remove `path` if it is a socket nobody listens on; throw if it is served or not a socket. */
export async function removeStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!isSocket) throw new Error(`${path} exists and is not a socket; remove it or choose another run directory`);
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new Error(`${path} is served by another process (is a second daemon running with the same run directory?)`);
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

export interface PrivateSocket {
  /** The socket file's inode, to remove it later only if it is still ours. */
  ino: number;
  /** Remove the socket file unless another process has replaced it meanwhile. */
  unlink(): void;
}

/**
 * Make `server` listen on the Unix socket `path` with mode 0600. The socket is bound in a
 * fresh 0700 directory next to `path`, chmod'ed, then renamed into place, so there is no
 * window in which it has the umask's permissions (changing the process umask instead would
 * race with file creation elsewhere in the daemon).
 */
export async function listenPrivateUnix(server: net.Server, path: string): Promise<PrivateSocket> {
  assert(isAbsolute(path), `socket path ${path} must be absolute`);
  if (Buffer.byteLength(path) > MAX_UNIX_PATH_BYTES) {
    throw new Error(`socket path ${path} is longer than ${MAX_UNIX_PATH_BYTES} bytes; use a shorter run directory`);
  }
  await removeStaleSocket(path);
  const tmpDir = mkdtempSync(join(dirname(path), '.sock-'));
  const tmpPath = join(tmpDir, 's');
  try {
    if (Buffer.byteLength(tmpPath) > MAX_UNIX_PATH_BYTES) {
      throw new Error(`socket path ${path} is too long to be created safely (${tmpPath} exceeds ${MAX_UNIX_PATH_BYTES} bytes); use a shorter run directory`);
    }
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(new Error(`cannot listen on ${path}: ${err.message}`));
      server.once('error', onError);
      server.listen(tmpPath, () => {
        server.off('error', onError);
        resolve();
      });
    });
    try {
      chmodSync(tmpPath, 0o600);
      renameSync(tmpPath, path);
    } catch (err) {
      server.close();
      throw new Error(`cannot put the socket in place at ${path}: ${(err as Error).message}`);
    }
  } finally {
    try { unlinkSync(tmpPath); } catch { /* renamed into place, or never created */ }
    try { rmdirSync(tmpDir); } catch { /* best effort: an empty private directory */ }
  }
  const ino = lstatSync(path).ino;
  return {
    ino,
    unlink() {
      try {
        if (lstatSync(path).ino === ino) unlinkSync(path);
      } catch { /* already gone */ }
    },
  };
}
