// The device link of an attachment: /dev/mars/NAME (or RUNDIR/dev/NAME where /dev is not
// writable) pointing at the block device. It is replaced atomically (a temporary link renamed
// over it), so a reader sees the old target or the new one, never no link; only symlinks are
// ever replaced or removed, a file someone put there is left alone.
import { constants as fsConstants, existsSync, lstatSync, readlinkSync } from 'node:fs';
import { access, mkdir, rename, rm, symlink, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { probe, probeAsync } from './attach-system.js';

export function isSymlink(path: string): boolean {
  return probe(() => lstatSync(path).isSymbolicLink(), false);
}

/** /dev/mars if it can be created and written, else RUNDIR/dev. */
export async function defaultLinkDir(runDir: string): Promise<string> {
  const devMars = await probeAsync(async () => {
    await mkdir('/dev/mars', { recursive: true });
    await access('/dev/mars', fsConstants.W_OK);
    return true;
  }, false);
  return devMars ? '/dev/mars' : join(runDir, 'dev');
}

/** Points linkPath at target atomically (temporary link renamed over it). */
export async function makeLink(linkPath: string, target: string): Promise<void> {
  const dir = join(linkPath, '..');
  await mkdir(dir, { recursive: true });
  if (existsSync(linkPath) && !isSymlink(linkPath)) throw new Error(`${linkPath} exists and is not a symlink; remove it`);
  if (isSymlink(linkPath) && readlinkSync(linkPath) === target) return;
  const tmp = `${linkPath}.tmp-${process.pid}`;
  await rm(tmp, { force: true });
  await symlink(target, tmp);
  await rename(tmp, linkPath);
}

/**
 * Where the link of `name` may be: the recorded one, the one in linkDir, and without a record
 * both default places.
 */
export function linkCandidates(name: string, runDir: string, recorded: string | undefined, linkDir: string | undefined, haveRecord: boolean): Set<string> {
  const candidates = new Set<string>();
  if (recorded) candidates.add(recorded);
  if (linkDir) candidates.add(join(linkDir, name));
  if (!haveRecord) {
    candidates.add(join('/dev/mars', name));
    candidates.add(join(runDir, 'dev', name));
  }
  return candidates;
}

export async function removeLinks(candidates: Iterable<string>): Promise<void> {
  for (const link of candidates) {
    if (isSymlink(link)) await unlink(link);
  }
}
