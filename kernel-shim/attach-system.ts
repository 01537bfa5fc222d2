// What attaching needs of the host system, in one place: running the tools (nbd-client,
// nbdfuse, losetup, fusermount3) with sbin on the PATH, finding them, reading the mount table,
// probing /sys and /proc, and waiting for a state with a deadline.
//
// Errors: probes of the system (a file in /sys or /proc that may not exist, a pid that may be
// gone) answer with a fallback value instead of throwing; that is what `probe` is for, and it
// lets an InvariantError through to failStopOnInvariant like every other catch here. Waiting
// takes its time from the injected Clock: it polls, it never sleeps a fixed time.
import { execFile } from 'node:child_process';
import { constants as fsConstants, readFileSync } from 'node:fs';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { failStopOnInvariant } from '../common/util/assert.js';
import type { Clock } from '../common/util/clock.js';

export const TOOL_ENV_PATH = `/usr/sbin:/sbin:/usr/bin:/bin:${process.env.PATH ?? ''}`;

/** The result of reading the system, or `fallback` if it cannot be read (absent is an answer). */
export function probe<T>(read: () => T, fallback: T): T {
  try {
    return read();
  } catch (err) {
    failStopOnInvariant(err);
    return fallback;
  }
}

/** probe() for asynchronous reads. */
export async function probeAsync<T>(read: () => Promise<T>, fallback: T): Promise<T> {
  try {
    return await read();
  } catch (err) {
    failStopOnInvariant(err);
    return fallback;
  }
}

/** Runs a tool; resolves to its stdout, rejects with its stderr (or the error) in the message. */
export function run(cmd: string, args: string[], timeoutMs: number): Promise<string> {
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

export async function hasCommand(cmd: string): Promise<boolean> {
  for (const dir of TOOL_ENV_PATH.split(':')) {
    if (!dir) continue;
    const found = await probeAsync(async () => {
      await access(join(dir, cmd), fsConstants.X_OK);
      return true;
    }, false);
    if (found) return true;
  }
  return false;
}

/** Polls `check` every intervalMs until it holds; throws after timeoutMs saying what it waited for. */
export async function waitUntil(clock: Clock, what: string, check: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = 20): Promise<void> {
  const deadlineMs = clock.nowMs() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (clock.nowMs() > deadlineMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await clock.sleep(intervalMs);
  }
}

export interface MountEntry {
  source: string;
  mountPoint: string;
}

/** /proc/self/mountinfo, with octal escapes (\040 for space) decoded. */
export function readMounts(): MountEntry[] {
  const text = probe(() => readFileSync('/proc/self/mountinfo', 'utf8'), '');
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

export function isMountPoint(dir: string): boolean {
  return readMounts().some((m) => m.mountPoint === dir);
}
