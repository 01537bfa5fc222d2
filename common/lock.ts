// One marsd per /mars: an exclusive flock on /mars/.marsd.lock, which also records the pid of
// the daemon holding it so a second one can say which process to stop.
import { TREE_FILE_MODE } from './tree/modes.js';
import { closeSync, ftruncateSync, openSync, readFileSync, writeSync, constants as fsc } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const fsExt = require('fs-ext') as { flockSync(fd: number, flags: 'exnb' | 'un'): void };

export class LockError extends Error {
  override name = 'LockError';
}

export function lockFile(marsDir: string): string {
  return join(marsDir, '.marsd.lock');
}

/** Read the pid recorded in the lock file (whether or not it is still locked). */
export function lockHolderPid(marsDir: string): number | undefined {
  try {
    const pid = Number(readFileSync(lockFile(marsDir), 'utf8').trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Is a marsd holding the lock right now? */
export function isLocked(marsDir: string): boolean {
  let fd: number;
  try {
    fd = openSync(lockFile(marsDir), fsc.O_RDONLY);
  } catch {
    return false;
  }
  try {
    fsExt.flockSync(fd, 'exnb');
    fsExt.flockSync(fd, 'un');
    return false;
  } catch {
    return true;
  } finally {
    closeSync(fd);
  }
}

export function acquireDaemonLock(marsDir: string): { release(): void } {
  const fd = openSync(lockFile(marsDir), fsc.O_RDWR | fsc.O_CREAT, TREE_FILE_MODE);
  try {
    fsExt.flockSync(fd, 'exnb');
  } catch (err) {
    closeSync(fd);
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EWOULDBLOCK' || code === 'EAGAIN') {
      const pid = lockHolderPid(marsDir);
      throw new LockError(`another marsd${pid ? ` (pid ${pid})` : ''} is already running on ${marsDir}; stop it first${pid ? ` (kill -TERM ${pid})` : ''} or use another --mars-dir`);
    }
    throw err;
  }
  ftruncateSync(fd, 0);
  writeSync(fd, `${process.pid}\n`, 0);
  return { release: () => closeSync(fd) };
}
