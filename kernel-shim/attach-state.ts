// The record of one attachment, RUNDIR/attach/NAME.json: what exists of it, written after every
// step and before the next one starts (atomically: temporary file renamed over it), so that
// detach can undo whatever exists, also after a half-failed attach or a daemon restart. The
// record is removed last, once everything it names is gone.
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { failStopOnInvariant } from '../common/util/assert.js';

export type AttachMethod = 'nbd-client' | 'nbdfuse';

/** What exists of an attachment; written after every step. */
export interface AttachState {
  name: string;
  method: AttachMethod;
  socketPath: string;
  linkPath?: string;
  /** nbd-client: /dev/nbdX */
  nbdDevice?: string;
  /** nbdfuse: mount directory, virtual file, pid file, log, process id, loop device */
  fuseDir?: string;
  fuseFile?: string;
  fusePidFile?: string;
  fuseLog?: string;
  fusePid?: number;
  loopDevice?: string;
}

export class AttachError extends Error {
  override name = 'AttachError';
}

export function attachStatePath(runDir: string, name: string): string {
  return join(runDir, 'attach', `${name}.json`);
}

/** Resource names are file names here (state, FUSE directory, link): no path characters. */
export function checkName(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(name)) {
    throw new AttachError(`invalid resource name ${JSON.stringify(name)}: letters, digits, '_', '.', '-' only`);
  }
}

export async function saveState(path: string, state: AttachState): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, `${JSON.stringify(state, null, 2)}\n`);
  await rename(tmp, path);
}

/** The saved record, null if there is none; an unreadable one is an error to be looked at. */
export async function loadState(path: string): Promise<AttachState | null> {
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as AttachState;
    if (typeof parsed !== 'object' || parsed === null || (parsed.method !== 'nbd-client' && parsed.method !== 'nbdfuse')) {
      throw new Error('not an attach state');
    }
    return parsed;
  } catch (err) {
    failStopOnInvariant(err);
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new AttachError(`cannot read attach state ${path}: ${(err as Error).message}; remove it after checking losetup -a and mount`);
  }
}
