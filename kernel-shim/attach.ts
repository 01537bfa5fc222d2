// The attach helper: binds a resource's NBD export to a kernel block device and maintains the
// device link (/dev/mars/NAME, or RUNDIR/dev/NAME where /dev is not writable). This file is
// the API and the order of the steps; the steps live with what they touch:
//
//   attach-nbd-client.ts  nbd.ko + nbd-client: `nbd-client -unix SOCKET /dev/nbdX -N NAME`
//   attach-nbdfuse.ts     otherwise nbdfuse (the export as RUNDIR/attach/NAME.fuse/disk) + losetup
//   attach-link.ts        the NAME link, replaced atomically
//   attach-state.ts       RUNDIR/attach/NAME.json, the record of what exists
//   attach-system.ts      tools, mounts, /sys and /proc probes, waiting with a deadline
//
// Every step is recorded in the attach state before the next one starts, so detachDevice() can
// undo whatever exists, also after a half-failed attach or a daemon restart. Detach goes
// backwards (device binding, loop, FUSE mount, nbdfuse, link) and removes the record only when
// every step succeeded; it refuses while a device is mounted. Nothing sleeps a fixed time: each
// step waits for the state it needs, with a deadline, on the injected Clock. An InvariantError
// is escalated (failStopOnInvariant) before any cleanup or error message.
import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { failStopOnInvariant } from '../common/util/assert.js';
import { systemClock, type Clock } from '../common/util/clock.js';
import type { LogFn } from '../common/util/log.js';
import { defaultLinkDir, linkCandidates, makeLink, removeLinks } from './attach-link.js';
import { attachNbdClient, detachNbdClient } from './attach-nbd-client.js';
import { attachNbdfuse, detachLoops, fusePaths, loopsBacking, removeFuseFiles, stopNbdfuse, unmountFuse } from './attach-nbdfuse.js';
import { AttachError, attachStatePath, checkName, loadState, saveState, type AttachMethod, type AttachState } from './attach-state.js';
import { hasCommand, readMounts } from './attach-system.js';

export { AttachError, attachStatePath, type AttachMethod } from './attach-state.js';

const DEFAULT_TIMEOUT_MS = 20_000;

export interface AttachOptions {
  /** resource (= export) name */
  name: string;
  /** the export's Unix socket, normally RUNDIR/NAME.sock */
  socketPath: string;
  runDir: string;
  /** default 'auto': nbd-client where nbd.ko and the tool exist, else nbdfuse + losetup */
  method?: 'auto' | AttachMethod;
  /** where the NAME link goes; default /dev/mars if /dev is writable, else RUNDIR/dev */
  linkDir?: string;
  /** deadline for each waiting step; default 20 s */
  timeoutMs?: number;
  log?: LogFn;
  /** time for the deadlines and polling; default systemClock */
  clock?: Clock;
}

export interface DetachOptions {
  name: string;
  runDir: string;
  /** as given to attachDevice (only needed when the attach state file is lost) */
  linkDir?: string;
  timeoutMs?: number;
  log?: LogFn;
  clock?: Clock;
}

export interface AttachedDevice {
  name: string;
  method: AttachMethod;
  /** the block device: /dev/nbdX or /dev/loopN */
  devicePath: string;
  /** the symlink to it */
  linkPath: string;
  detach(): Promise<void>;
}

/** Attaches the export `name` served on `socketPath` as a block device and links it. */
export async function attachDevice(opts: AttachOptions): Promise<AttachedDevice> {
  checkName(opts.name);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const log = opts.log ?? (() => undefined);
  const clock = opts.clock ?? systemClock;
  const detachOpts: DetachOptions = { name: opts.name, runDir: opts.runDir, linkDir: opts.linkDir, timeoutMs, log, clock };
  const statePath = attachStatePath(opts.runDir, opts.name);
  if (existsSync(statePath)) {
    log('warn', `attach ${opts.name}: leftover attach state ${statePath}; detaching it first`);
    await detachDevice(detachOpts);
  }
  if (!existsSync(opts.socketPath)) {
    throw new AttachError(`attach ${opts.name}: the export socket ${opts.socketPath} does not exist; is this host primary and marsd running?`);
  }
  const method = opts.method === undefined || opts.method === 'auto' ? await chooseMethod() : opts.method;
  await mkdir(join(opts.runDir, 'attach'), { recursive: true });
  const state: AttachState = { name: opts.name, method, socketPath: opts.socketPath };
  await saveState(statePath, state);
  try {
    const devicePath = method === 'nbd-client'
      ? await attachNbdClient(state, statePath, timeoutMs, clock)
      : await attachNbdfuse(state, statePath, opts.runDir, timeoutMs, clock);
    const linkPath = join(opts.linkDir ?? (await defaultLinkDir(opts.runDir)), opts.name);
    state.linkPath = linkPath;
    await saveState(statePath, state);
    await makeLink(linkPath, devicePath);
    log('info', `attach ${opts.name}: ${linkPath} -> ${devicePath} (${method})`);
    return { name: opts.name, method, devicePath, linkPath, detach: () => detachDevice(detachOpts) };
  } catch (err) {
    failStopOnInvariant(err);
    let cleanup = 'cleaned up';
    try {
      await detachDevice(detachOpts);
    } catch (cleanupErr) {
      failStopOnInvariant(cleanupErr);
      cleanup = `cleanup failed too: ${(cleanupErr as Error).message}`;
    }
    throw new AttachError(`attach ${opts.name} (${method}) failed: ${(err as Error).message} (${cleanup})`);
  }
}

/**
 * Undoes an attachment, whatever part of it exists: loop device, FUSE mount, nbdfuse process,
 * nbd-client binding, link. Refuses (with a message saying so) while the device is mounted.
 */
export async function detachDevice(opts: DetachOptions): Promise<void> {
  checkName(opts.name);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? (() => undefined);
  const warn = (msg: string) => log('warn', `detach ${opts.name}: ${msg}`);
  const statePath = attachStatePath(opts.runDir, opts.name);
  const saved = await loadState(statePath);
  const state = saved ?? unrecordedState(opts.runDir, opts.name);
  await refuseWhileMounted(opts.name, state);

  const errors: string[] = [];
  const step = async (what: string, fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (err) {
      failStopOnInvariant(err);
      errors.push(`${what}: ${(err as Error).message}`);
    }
  };
  const { nbdDevice, fuseFile, fuseDir } = state;
  if (state.method === 'nbd-client' && nbdDevice) await step(`nbd-client -d ${nbdDevice}`, () => detachNbdClient(nbdDevice, timeoutMs, clock));
  if (fuseFile) await step('losetup -d', () => detachLoops(fuseFile, state.loopDevice, timeoutMs, clock));
  if (fuseDir) await step(`unmount ${fuseDir}`, () => unmountFuse(fuseDir, timeoutMs, clock, warn));
  await step('stop nbdfuse', () => stopNbdfuse(state, timeoutMs, clock, warn));
  await step('remove link', () => removeLinks(linkCandidates(opts.name, opts.runDir, state.linkPath, opts.linkDir, saved !== null)));
  if (errors.length > 0) {
    throw new AttachError(`detach ${opts.name} incomplete: ${errors.join('; ')}. Fix the cause and run detach again; state is kept in ${statePath}`);
  }
  await step('remove run files', async () => {
    await removeFuseFiles(state);
    await rm(statePath, { force: true });
  });
  if (errors.length > 0) throw new AttachError(`detach ${opts.name}: ${errors.join('; ')}`);
  log('info', `detach ${opts.name}: done`);
}

/** Without a state file, look where an nbdfuse attachment would be. */
function unrecordedState(runDir: string, name: string): AttachState {
  const fuse = fusePaths(runDir, name);
  return { name, method: 'nbdfuse', socketPath: '', fuseDir: fuse.dir, fuseFile: fuse.file, fusePidFile: fuse.pidFile, fuseLog: fuse.log };
}

/** Devices that are still mounted must be unmounted by whoever mounted them. */
async function refuseWhileMounted(name: string, state: AttachState): Promise<void> {
  const mounts = readMounts();
  for (const dev of [state.loopDevice, state.nbdDevice, ...(state.fuseFile ? await loopsBacking(state.fuseFile) : [])]) {
    const where = dev ? mounts.filter((m) => m.source === dev).map((m) => m.mountPoint) : [];
    if (dev && where.length > 0) {
      throw new AttachError(`detach ${name}: ${dev} is mounted on ${where.join(', ')}; unmount it first (umount ${where[0]})`);
    }
  }
}

async function chooseMethod(): Promise<AttachMethod> {
  const hasNbd = existsSync('/sys/module/nbd') || existsSync('/dev/nbd0');
  if (hasNbd && (await hasCommand('nbd-client'))) return 'nbd-client';
  if (!(await hasCommand('nbdfuse'))) {
    throw new AttachError(
      hasNbd
        ? 'neither nbd-client nor nbdfuse is installed: apt-get install nbd-client (or libnbd-bin fuse3)'
        : 'the kernel has no nbd module and nbdfuse is not installed: apt-get install libnbd-bin fuse3 (or load nbd.ko and install nbd-client)',
    );
  }
  for (const tool of ['losetup', 'fusermount3']) {
    if (!(await hasCommand(tool))) throw new AttachError(`${tool} is not installed: apt-get install ${tool === 'losetup' ? 'mount' : 'fuse3'}`);
  }
  return 'nbdfuse';
}
