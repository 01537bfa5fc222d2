// Attaching without nbd.ko: nbdfuse presents the export as the file RUNDIR/attach/NAME.fuse/disk
// on a FUSE mount, and `losetup --show -f` turns that file into /dev/loopN.
//
// Order. Attach: directory, then nbdfuse (detached: the device must outlive a daemon restart,
// like a kernel nbd binding does; its pid is recorded at once and again from its pid file),
// wait for the pid file and the virtual file, then losetup. Detach undoes it backwards: loop
// devices on the file, the FUSE mount (lazily if it stays busy), then nbdfuse itself, which
// exits after the unmount or is signalled (TERM, then KILL). Each step is recorded in the attach
// state before the next one starts; each wait has a deadline.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rm, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { failStopOnInvariant } from '../common/util/assert.js';
import type { Clock } from '../common/util/clock.js';
import { saveState, type AttachState } from './attach-state.js';
import { TOOL_ENV_PATH, isMountPoint, probe, probeAsync, run, waitUntil } from './attach-system.js';

/** nbdfuse gets this long to exit after the unmount, and again after SIGTERM. */
const NBDFUSE_EXIT_WAIT_MS = 5_000;

export function fusePaths(runDir: string, name: string) {
  const dir = join(runDir, 'attach', `${name}.fuse`);
  return { dir, file: join(dir, 'disk'), pidFile: join(runDir, 'attach', `${name}.nbdfuse.pid`), log: join(runDir, 'attach', `${name}.nbdfuse.log`) };
}

export async function attachNbdfuse(state: AttachState, statePath: string, runDir: string, timeoutMs: number, clock: Clock): Promise<string> {
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
  await waitUntil(clock, 'nbdfuse to write its pid file', () => {
    failIfExited();
    return readPidFile(paths.pidFile) !== undefined;
  }, timeoutMs);
  const servingPid = readPidFile(paths.pidFile);
  if (servingPid !== undefined && servingPid !== state.fusePid) {
    state.fusePid = servingPid;
    await saveState(statePath, state);
  }
  await waitUntil(clock, `${paths.file} to appear`, async () => {
    failIfExited();
    return (await probeAsync(() => stat(paths.file), null))?.isFile() === true;
  }, timeoutMs);

  const out = await run('losetup', ['--show', '-f', paths.file], timeoutMs);
  const loop = out.trim();
  if (!/^\/dev\/loop\d+$/.test(loop)) throw new Error(`losetup printed ${JSON.stringify(out)} instead of a loop device`);
  state.loopDevice = loop;
  await saveState(statePath, state);
  return loop;
}

/** Detaches every loop device backed by the virtual file (the recorded one and any other). */
export async function detachLoops(file: string, recordedLoop: string | undefined, timeoutMs: number, clock: Clock): Promise<void> {
  const loops = new Set(await loopsBacking(file));
  if (recordedLoop && loopBackingFile(recordedLoop) === file) loops.add(recordedLoop);
  for (const loop of loops) {
    await run('losetup', ['-d', loop], timeoutMs);
    await waitUntil(clock, `${loop} to release ${file}`, () => loopBackingFile(loop) !== file, timeoutMs);
  }
}

/** Unmounts the FUSE directory; if it stays busy until the deadline, lazily. */
export async function unmountFuse(dir: string, timeoutMs: number, clock: Clock, warn: (msg: string) => void): Promise<void> {
  if (!isMountPoint(dir)) return;
  let lastError = '';
  const unmounted = async (): Promise<boolean> => {
    try {
      await run('fusermount3', ['-u', dir], timeoutMs);
      return true;
    } catch (err) {
      failStopOnInvariant(err);
      lastError = (err as Error).message;
      return !isMountPoint(dir);
    }
  };
  try {
    await waitUntil(clock, `fusermount3 -u ${dir} to succeed`, unmounted, timeoutMs, 100);
  } catch (err) {
    failStopOnInvariant(err); // otherwise waitUntil's timeout: unmounted() does not throw
    warn(`fusermount3 -u ${dir} keeps failing (${lastError}); detaching lazily`);
    await run('fusermount3', ['-u', '-z', dir], timeoutMs);
  }
}

/** Makes sure the recorded nbdfuse is gone: it should exit after the unmount; else TERM, then KILL. */
export async function stopNbdfuse(state: AttachState, timeoutMs: number, clock: Clock, warn: (msg: string) => void): Promise<void> {
  const pid = state.fusePid ?? readPidFile(state.fusePidFile);
  if (pid === undefined || !isNbdfuse(pid)) return;
  const gone = (after: string, waitMs: number) => waitUntil(clock, `nbdfuse (pid ${pid}) to exit${after}`, () => !isNbdfuse(pid), waitMs);
  const waitMs = Math.min(timeoutMs, NBDFUSE_EXIT_WAIT_MS);
  if (await exitsWithin(gone('', waitMs))) return;
  warn(`nbdfuse pid ${pid} did not exit after the unmount; sending SIGTERM`);
  signal(pid, 'SIGTERM');
  if (await exitsWithin(gone(' after SIGTERM', waitMs))) return;
  signal(pid, 'SIGKILL');
  await gone(' after SIGKILL', timeoutMs);
}

/** true if the wait succeeded, false if it timed out (the only way waitUntil fails here). */
async function exitsWithin(wait: Promise<void>): Promise<boolean> {
  return probeAsync(async () => {
    await wait;
    return true;
  }, false);
}

/** The run files of an nbdfuse attachment (the directory only when it is no mount point). */
export async function removeFuseFiles(state: AttachState): Promise<void> {
  const dir = state.fuseDir;
  if (dir && existsSync(dir) && !isMountPoint(dir)) await probeAsync(() => rmdir(dir), undefined);
  if (state.fusePidFile) await rm(state.fusePidFile, { force: true });
  if (state.fuseLog) await rm(state.fuseLog, { force: true });
}

/** Loop devices whose backing file is `file` (from sysfs; no losetup -j parsing). */
export async function loopsBacking(file: string): Promise<string[]> {
  const names = (await probeAsync(() => readdir('/sys/block'), [] as string[])).filter((n) => /^loop\d+$/.test(n));
  return names.map((n) => `/dev/${n}`).filter((dev) => loopBackingFile(dev) === file);
}

function loopBackingFile(dev: string): string | undefined {
  return probe(() => readFileSync(`/sys/block/${dev.replace(/^\/dev\//, '')}/loop/backing_file`, 'utf8').trim(), undefined);
}

function readPidFile(path: string | undefined): number | undefined {
  if (!path) return undefined;
  const pid = probe(() => Number(readFileSync(path, 'utf8').trim()), NaN);
  return Number.isInteger(pid) && pid > 1 ? pid : undefined;
}

/** Alive and really nbdfuse (a recycled pid is left alone). Zombies count as gone. */
function isNbdfuse(pid: number): boolean {
  return probe(() => {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    const statLine = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const procState = statLine.slice(statLine.lastIndexOf(')') + 2, statLine.lastIndexOf(')') + 3);
    return cmdline.split('\0')[0]?.endsWith('nbdfuse') === true && procState !== 'Z';
  }, false);
}

/** Sends sig unless the process is already gone. */
function signal(pid: number, sig: NodeJS.Signals): void {
  probe(() => process.kill(pid, sig), false);
}

function tail(path: string): string {
  const text = probe(() => readFileSync(path, 'utf8').trim(), '');
  return text ? text.split('\n').slice(-5).join(' | ') : 'no output';
}
