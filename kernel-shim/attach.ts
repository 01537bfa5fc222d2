// The attach helper: binds a resource's NBD export to a kernel block device and maintains the
// device link (/dev/mars/NAME, or RUNDIR/dev/NAME where /dev is not writable).
//
// Two ways to get a block device:
// - nbd-client, where the kernel has nbd.ko (/sys/module/nbd or /dev/nbd0 exists) and the
//   nbd-client tool is installed: `nbd-client -unix SOCKET /dev/nbdX -N NAME`;
// - otherwise nbdfuse + a loop device: nbdfuse presents the export as the file
//   RUNDIR/attach/NAME.fuse/disk, and `losetup --show -f` turns that file into /dev/loopN.
//
// Every step is recorded in RUNDIR/attach/NAME.json before the next one starts, so
// detachDevice() can undo whatever exists, also after a half-failed attach or a daemon restart.
// Nothing sleeps a fixed time: each step waits for the state it needs, with a deadline.
import { execFile, spawn } from 'node:child_process';
import { constants as fsConstants, openSync, closeSync, readFileSync, existsSync, lstatSync, readlinkSync } from 'node:fs';
import { access, mkdir, readFile, rename, rm, rmdir, symlink, unlink, writeFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { LogFn } from '../common/util/log.js';

export type AttachMethod = 'nbd-client' | 'nbdfuse';

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
}

export interface DetachOptions {
  name: string;
  runDir: string;
  /** as given to attachDevice (only needed when the attach state file is lost) */
  linkDir?: string;
  timeoutMs?: number;
  log?: LogFn;
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

/** What exists of an attachment; written after every step. */
interface AttachState {
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

const TOOL_ENV_PATH = `/usr/sbin:/sbin:/usr/bin:/bin:${process.env.PATH ?? ''}`;

export class AttachError extends Error {
  override name = 'AttachError';
}

export function attachStatePath(runDir: string, name: string): string {
  return join(runDir, 'attach', `${name}.json`);
}

/** Attaches the export `name` served on `socketPath` as a block device and links it. */
export async function attachDevice(opts: AttachOptions): Promise<AttachedDevice> {
  checkName(opts.name);
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const log = opts.log ?? (() => undefined);
  const statePath = attachStatePath(opts.runDir, opts.name);
  if (existsSync(statePath)) {
    log('warn', `attach ${opts.name}: leftover attach state ${statePath}; detaching it first`);
    await detachDevice({ name: opts.name, runDir: opts.runDir, linkDir: opts.linkDir, timeoutMs, log });
  }
  if (!existsSync(opts.socketPath)) {
    throw new AttachError(`attach ${opts.name}: the export socket ${opts.socketPath} does not exist; is this host primary and marsd running?`);
  }
  const method = opts.method === undefined || opts.method === 'auto' ? await chooseMethod() : opts.method;
  await mkdir(join(opts.runDir, 'attach'), { recursive: true });
  const state: AttachState = { name: opts.name, method, socketPath: opts.socketPath };
  await saveState(statePath, state);
  try {
    const devicePath = method === 'nbd-client' ? await attachNbdClient(state, statePath, timeoutMs) : await attachNbdfuse(state, statePath, opts.runDir, timeoutMs);
    const linkDir = opts.linkDir ?? (await defaultLinkDir(opts.runDir));
    const linkPath = join(linkDir, opts.name);
    state.linkPath = linkPath;
    await saveState(statePath, state);
    await makeLink(linkPath, devicePath);
    log('info', `attach ${opts.name}: ${linkPath} -> ${devicePath} (${method})`);
    return {
      name: opts.name,
      method,
      devicePath,
      linkPath,
      detach: () => detachDevice({ name: opts.name, runDir: opts.runDir, linkDir: opts.linkDir, timeoutMs, log }),
    };
  } catch (err) {
    let cleanup = 'cleaned up';
    try {
      await detachDevice({ name: opts.name, runDir: opts.runDir, linkDir: opts.linkDir, timeoutMs, log });
    } catch (cleanupErr) {
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
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const log = opts.log ?? (() => undefined);
  const statePath = attachStatePath(opts.runDir, opts.name);
  const saved = await loadState(statePath);
  const fuse = fusePaths(opts.runDir, opts.name);
  // Without a state file, look where an nbdfuse attachment would be.
  const state: AttachState = saved ?? { name: opts.name, method: 'nbdfuse', socketPath: '', fuseDir: fuse.dir, fuseFile: fuse.file, fusePidFile: fuse.pidFile, fuseLog: fuse.log };
  const errors: string[] = [];
  const step = async (what: string, fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (err) {
      errors.push(`${what}: ${(err as Error).message}`);
    }
  };

  // Devices that are still mounted must be unmounted by whoever mounted them.
  const mounts = readMounts();
  for (const dev of [state.loopDevice, state.nbdDevice, ...(state.fuseFile ? await loopsBacking(state.fuseFile) : [])]) {
    const where = dev ? mounts.filter((m) => m.source === dev).map((m) => m.mountPoint) : [];
    if (dev && where.length > 0) {
      throw new AttachError(`detach ${opts.name}: ${dev} is mounted on ${where.join(', ')}; unmount it first (umount ${where[0]})`);
    }
  }

  if (state.method === 'nbd-client' && state.nbdDevice) {
    const dev = state.nbdDevice;
    await step(`nbd-client -d ${dev}`, async () => {
      if (!nbdDeviceConnected(dev)) return;
      await run('nbd-client', ['-d', dev], timeoutMs);
      await waitUntil(`${dev} to disconnect`, () => !nbdDeviceConnected(dev), timeoutMs);
    });
  }

  if (state.fuseFile) {
    const file = state.fuseFile;
    await step('losetup -d', async () => {
      const loops = new Set(await loopsBacking(file));
      if (state.loopDevice && loopBackingFile(state.loopDevice) === file) loops.add(state.loopDevice);
      for (const loop of loops) {
        await run('losetup', ['-d', loop], timeoutMs);
        await waitUntil(`${loop} to release ${file}`, () => loopBackingFile(loop) !== file, timeoutMs);
      }
    });
  }

  if (state.fuseDir) {
    const dir = state.fuseDir;
    await step(`unmount ${dir}`, async () => {
      if (!isMountPoint(dir)) return;
      let lastError = '';
      try {
        await waitUntil(`fusermount3 -u ${dir} to succeed`, async () => {
          try {
            await run('fusermount3', ['-u', dir], timeoutMs);
            return true;
          } catch (err) {
            lastError = (err as Error).message;
            return !isMountPoint(dir);
          }
        }, timeoutMs, 100);
      } catch {
        log('warn', `detach ${opts.name}: fusermount3 -u ${dir} keeps failing (${lastError}); detaching lazily`);
        await run('fusermount3', ['-u', '-z', dir], timeoutMs);
      }
    });
  }

  await step('stop nbdfuse', async () => {
    const pid = state.fusePid ?? readPidFile(state.fusePidFile);
    if (pid === undefined || !isNbdfuse(pid)) return;
    // After the unmount nbdfuse exits by itself; give it the deadline, then insist.
    try {
      await waitUntil(`nbdfuse (pid ${pid}) to exit`, () => !isNbdfuse(pid), Math.min(timeoutMs, 5_000));
    } catch {
      log('warn', `detach ${opts.name}: nbdfuse pid ${pid} did not exit after the unmount; sending SIGTERM`);
      signal(pid, 'SIGTERM');
      try {
        await waitUntil(`nbdfuse (pid ${pid}) to exit after SIGTERM`, () => !isNbdfuse(pid), Math.min(timeoutMs, 5_000));
      } catch {
        signal(pid, 'SIGKILL');
        await waitUntil(`nbdfuse (pid ${pid}) to exit after SIGKILL`, () => !isNbdfuse(pid), timeoutMs);
      }
    }
  });

  await step('remove link', async () => {
    const candidates = new Set<string>();
    if (state.linkPath) candidates.add(state.linkPath);
    if (opts.linkDir) candidates.add(join(opts.linkDir, opts.name));
    if (!saved) {
      candidates.add(join('/dev/mars', opts.name));
      candidates.add(join(opts.runDir, 'dev', opts.name));
    }
    for (const link of candidates) {
      if (isSymlink(link)) await unlink(link);
    }
  });

  if (errors.length > 0) {
    throw new AttachError(`detach ${opts.name} incomplete: ${errors.join('; ')}. Fix the cause and run detach again; state is kept in ${statePath}`);
  }
  await step('remove run files', async () => {
    if (state.fuseDir && existsSync(state.fuseDir) && !isMountPoint(state.fuseDir)) await rmdir(state.fuseDir).catch(() => undefined);
    if (state.fusePidFile) await rm(state.fusePidFile, { force: true });
    if (state.fuseLog) await rm(state.fuseLog, { force: true });
    await rm(statePath, { force: true });
  });
  if (errors.length > 0) throw new AttachError(`detach ${opts.name}: ${errors.join('; ')}`);
  log('info', `detach ${opts.name}: done`);
}

// ---- nbd-client -----------------------------------------------------------------------------

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

async function attachNbdClient(state: AttachState, statePath: string, timeoutMs: number): Promise<string> {
  const dev = await freeNbdDevice();
  state.nbdDevice = dev;
  await saveState(statePath, state);
  await run('nbd-client', ['-unix', state.socketPath, dev, '-N', state.name], timeoutMs);
  await waitUntil(`${dev} to connect`, () => nbdDeviceConnected(dev), timeoutMs);
  return dev;
}

async function freeNbdDevice(): Promise<string> {
  let names: string[];
  try {
    names = (await readdir('/sys/block')).filter((n) => /^nbd\d+$/.test(n));
  } catch {
    names = [];
  }
  names.sort((a, b) => Number(a.slice(3)) - Number(b.slice(3)));
  for (const n of names) {
    if (!existsSync(`/sys/block/${n}/pid`) && existsSync(`/dev/${n}`)) return `/dev/${n}`;
  }
  throw new AttachError(`no free /dev/nbdX device (${names.length} exist); load nbd.ko with more devices (modprobe nbd nbds_max=64)`);
}

function nbdDeviceConnected(dev: string): boolean {
  return existsSync(`/sys/block/${dev.replace(/^\/dev\//, '')}/pid`);
}

// ---- nbdfuse + loop -------------------------------------------------------------------------

function fusePaths(runDir: string, name: string) {
  const dir = join(runDir, 'attach', `${name}.fuse`);
  return { dir, file: join(dir, 'disk'), pidFile: join(runDir, 'attach', `${name}.nbdfuse.pid`), log: join(runDir, 'attach', `${name}.nbdfuse.log`) };
}

async function attachNbdfuse(state: AttachState, statePath: string, runDir: string, timeoutMs: number): Promise<string> {
  const paths = fusePaths(runDir, state.name);
  if (isMountPoint(paths.dir)) throw new Error(`${paths.dir} is already mounted (run detach first)`);
  await mkdir(paths.dir, { recursive: true });
  await rm(paths.pidFile, { force: true });
  Object.assign(state, { fuseDir: paths.dir, fuseFile: paths.file, fusePidFile: paths.pidFile, fuseLog: paths.log });
  await saveState(statePath, state);

  const uri = `nbd+unix:///${encodeURIComponent(state.name)}?socket=${encodeURIComponent(state.socketPath).replace(/%2F/g, '/')}`;
  const logFd = openSync(paths.log, 'w');
  let exited: string | null = null;
  try {
    // Detached: the device must outlive a daemon restart, like a kernel nbd binding does.
    const child = spawn('nbdfuse', ['-P', paths.pidFile, paths.file, uri], {
      detached: true,
      stdio: ['ignore', logFd, logFd],
      env: { ...process.env, PATH: TOOL_ENV_PATH },
    });
    child.on('error', (err) => {
      exited = `cannot run nbdfuse: ${err.message}`;
    });
    child.on('exit', (code, sig) => {
      exited = `nbdfuse exited (${sig ?? `code ${code}`})`;
    });
    child.unref();
    if (child.pid !== undefined) {
      state.fusePid = child.pid;
      await saveState(statePath, state);
    }
  } finally {
    closeSync(logFd);
  }
  const failIfExited = () => {
    // (an nbdfuse that forked into the background leaves a live pid in its pid file)
    const pid = readPidFile(paths.pidFile);
    if (exited && !(pid !== undefined && isNbdfuse(pid))) throw new Error(`${exited}: ${tail(paths.log)}`);
  };
  await waitUntil('nbdfuse to write its pid file', () => {
    failIfExited();
    return readPidFile(paths.pidFile) !== undefined;
  }, timeoutMs);
  const servingPid = readPidFile(paths.pidFile);
  if (servingPid !== undefined && servingPid !== state.fusePid) {
    state.fusePid = servingPid;
    await saveState(statePath, state);
  }
  await waitUntil(`${paths.file} to appear`, async () => {
    failIfExited();
    return (await stat(paths.file).catch(() => null))?.isFile() === true;
  }, timeoutMs);

  const out = await run('losetup', ['--show', '-f', paths.file], timeoutMs);
  const loop = out.trim();
  if (!/^\/dev\/loop\d+$/.test(loop)) throw new Error(`losetup printed ${JSON.stringify(out)} instead of a loop device`);
  state.loopDevice = loop;
  await saveState(statePath, state);
  return loop;
}

/** Loop devices whose backing file is `file` (from sysfs; no losetup -j parsing). */
async function loopsBacking(file: string): Promise<string[]> {
  let names: string[];
  try {
    names = (await readdir('/sys/block')).filter((n) => /^loop\d+$/.test(n));
  } catch {
    return [];
  }
  return names.map((n) => `/dev/${n}`).filter((dev) => loopBackingFile(dev) === file);
}

function loopBackingFile(dev: string): string | undefined {
  try {
    return readFileSync(`/sys/block/${dev.replace(/^\/dev\//, '')}/loop/backing_file`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function readPidFile(path: string | undefined): number | undefined {
  if (!path) return undefined;
  try {
    const pid = Number(readFileSync(path, 'utf8').trim());
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Alive and really nbdfuse (a recycled pid is left alone). Zombies count as gone. */
function isNbdfuse(pid: number): boolean {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    const statLine = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const procState = statLine.slice(statLine.lastIndexOf(')') + 2, statLine.lastIndexOf(')') + 3);
    return cmdline.split('\0')[0]?.endsWith('nbdfuse') === true && procState !== 'Z';
  } catch {
    return false;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

function tail(path: string): string {
  try {
    const text = readFileSync(path, 'utf8').trim();
    return text ? text.split('\n').slice(-5).join(' | ') : 'no output';
  } catch {
    return 'no output';
  }
}

// ---- mounts, links, state -------------------------------------------------------------------

interface MountEntry {
  source: string;
  mountPoint: string;
}

/** /proc/self/mountinfo, with octal escapes (\040 for space) decoded. */
function readMounts(): MountEntry[] {
  let text: string;
  try {
    text = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const fields = line.split(' ');
    const sep = fields.indexOf('-');
    if (sep < 0 || fields.length < sep + 3) continue;
    out.push({ mountPoint: unescape(fields[4] ?? ''), source: unescape(fields[sep + 2] ?? '') });
  }
  return out;
}

function isMountPoint(dir: string): boolean {
  return readMounts().some((m) => m.mountPoint === dir);
}

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

async function defaultLinkDir(runDir: string): Promise<string> {
  try {
    await mkdir('/dev/mars', { recursive: true });
    await access('/dev/mars', fsConstants.W_OK);
    return '/dev/mars';
  } catch {
    return join(runDir, 'dev');
  }
}

/** Points linkPath at target atomically (temporary link renamed over it). */
async function makeLink(linkPath: string, target: string): Promise<void> {
  const dir = join(linkPath, '..');
  await mkdir(dir, { recursive: true });
  if (existsSync(linkPath) && !isSymlink(linkPath)) throw new Error(`${linkPath} exists and is not a symlink; remove it`);
  if (isSymlink(linkPath) && readlinkSync(linkPath) === target) return;
  const tmp = `${linkPath}.tmp-${process.pid}`;
  await rm(tmp, { force: true });
  await symlink(target, tmp);
  await rename(tmp, linkPath);
}

async function saveState(path: string, state: AttachState): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, `${JSON.stringify(state, null, 2)}\n`);
  await rename(tmp, path);
}

async function loadState(path: string): Promise<AttachState | null> {
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as AttachState;
    if (typeof parsed !== 'object' || parsed === null || (parsed.method !== 'nbd-client' && parsed.method !== 'nbdfuse')) {
      throw new Error('not an attach state');
    }
    return parsed;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new AttachError(`cannot read attach state ${path}: ${(err as Error).message}; remove it after checking losetup -a and mount`);
  }
}

function checkName(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(name)) {
    throw new AttachError(`invalid resource name ${JSON.stringify(name)}: letters, digits, '_', '.', '-' only`);
  }
}

// ---- processes and waiting ------------------------------------------------------------------

function run(cmd: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env: { ...process.env, PATH: TOOL_ENV_PATH }, timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) {
        const detail = String(stderr).trim() || err.message;
        reject(new Error(`${cmd} ${args.join(' ')} failed: ${detail}`));
      } else {
        resolve(String(stdout));
      }
    });
  });
}

async function hasCommand(cmd: string): Promise<boolean> {
  for (const dir of TOOL_ENV_PATH.split(':')) {
    if (!dir) continue;
    try {
      await access(join(dir, cmd), fsConstants.X_OK);
      return true;
    } catch {
      // next
    }
  }
  return false;
}

async function waitUntil(what: string, probe: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
