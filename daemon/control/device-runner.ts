// The kernel block device of a resource on this host (/dev/mars/NAME), as an imperative shell:
// it carries out the plan's device action (decide-device.ts) with kernel-shim/attach.ts: nbd-client
// where nbd.ko can be loaded, nbdfuse + a loop device otherwise. The device is an NBD client of
// the resource's own export, so its connections are not "openers": what opens the device is a
// mount or a process holding it (found in the mount table, /sys/block/X/holders and /proc/*/fd).
//
// Removal happens only after the last opener closed the device: an application with a stop hook
// is asked once (the hook unmounts), then the runner reports that it waits, and the plan asks
// again next round. The start hook runs once the device exists, so it can mount it.
import { readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { attachDevice, detachDevice, type AttachedDevice } from '../../kernel-shim/attach.js';
import { failStopOnInvariant } from '../../common/util/assert.js';
import type { Clock } from '../../common/util/clock.js';
import type { LogFn } from '../../common/util/log.js';
import type { AppHookRunner } from './app-hook-runner.js';
import type { DeviceAction, DeviceRuntime } from './decide-device.js';

/** How marsd makes devices: nbd = nbd-client, fuse = nbdfuse + loop, auto = nbd where nbd.ko loads. */
export type DeviceMode = 'auto' | 'nbd' | 'fuse' | 'none';
export const DEVICE_MODES: readonly DeviceMode[] = ['auto', 'nbd', 'fuse', 'none'];
export const DEFAULT_DEVICE_DIR = '/dev/mars';

export interface DeviceRunnerOptions {
  res: string;
  mode: DeviceMode;
  /** where the NAME link goes */
  deviceDir: string;
  runDir: string;
  socketPath: string;
  hooks: AppHookRunner;
  clock: Clock;
  log: LogFn;
  /** the state changed: publish and plan again soon */
  onChange: () => void;
}

export class DeviceRunner {
  private device: AttachedDevice | undefined;
  private busy = false;
  private failedAtMs: number | undefined;
  /** NBD connections the device itself holds on the export (not openers) */
  private ownConnections = 0;
  /** the stop hook was run for the removal going on */
  private stopAsked = false;
  /** what the device-state link says */
  private stateText = 'off';
  private usersNow: string[] = [];

  constructor(private readonly o: DeviceRunnerOptions) {
    if (o.mode === 'none') this.stateText = 'off (marsd --device-mode none)';
  }

  get enabled(): boolean {
    return this.o.mode !== 'none';
  }

  runtime(): DeviceRuntime {
    return { enabled: this.enabled, attached: this.device !== undefined, busy: this.busy, failedAtMs: this.failedAtMs };
  }

  /** The openers of the device as the publisher counts them, plus NBD clients other than the device. */
  openCount(nbdConnections: number): number {
    if (!this.device) return nbdConnections;
    this.usersNow = deviceUsers(this.device.devicePath, false);
    return Math.max(0, nbdConnections - this.ownConnections) + this.usersNow.length;
  }

  /** The status links: device (the link, or "(none)") and device-state (what happens). */
  links(): Record<string, string> {
    const d = this.device;
    return {
      device: d ? d.linkPath : '(none)',
      'device-state': this.stateText.slice(0, 500),
      'device-users': d && this.usersNow.length > 0 ? this.usersNow.join(', ').slice(0, 500) : '(none)',
    };
  }

  apply(action: DeviceAction): void {
    if (action === 'none' || this.busy) return;
    this.busy = true;
    const op = action === 'attach' ? this.attach() : this.detach();
    void op.catch(failStopOnInvariant).finally(() => {
      this.busy = false;
      this.o.onChange();
    });
  }

  private async attach(): Promise<void> {
    const { res, log, hooks } = this.o;
    this.stateText = 'attaching';
    this.o.onChange();
    const before = hooks.openCount;
    try {
      this.device = await attachDevice({
        name: res, socketPath: this.o.socketPath, runDir: this.o.runDir, linkDir: this.o.deviceDir,
        method: this.o.mode === 'nbd' ? 'nbd-client' : this.o.mode === 'fuse' ? 'nbdfuse' : 'auto',
        clock: this.o.clock, log: (level, msg) => log(level, msg),
      });
    } catch (err) {
      failStopOnInvariant(err);
      this.failedAtMs = this.o.clock.nowMs();
      this.stateText = `attach failed: ${(err as Error).message}`;
      log('error', `${res}: cannot make the block device: ${(err as Error).message}`);
      return;
    }
    this.ownConnections = Math.max(0, hooks.openCount - before);
    this.failedAtMs = undefined;
    this.stopAsked = false;
    this.stateText = `${this.device.linkPath} -> ${this.device.devicePath} (${this.device.method})`;
    log('info', `${res}: block device ${this.stateText}`);
    if (hooks.configured('start')) void hooks.run('start');
  }

  /** Remove the device once nothing opens it; ask the application (stop hook) once. */
  private async detach(): Promise<void> {
    const { res, log, hooks } = this.o;
    const d = this.device;
    let users = d ? deviceUsers(d.devicePath, true) : [];
    if (users.length > 0 && hooks.configured('stop') && !this.stopAsked) {
      this.stopAsked = true;
      await hooks.run('stop');
      users = d ? deviceUsers(d.devicePath, true) : [];
    }
    if (users.length > 0) {
      this.usersNow = users;
      const text = `waiting for the last opener to close the device before leaving the primary role: ${users.join(', ')}`;
      if (this.stateText !== text) log('warn', `${res}: ${text}`);
      this.stateText = text;
      return;
    }
    this.stateText = 'detaching';
    this.o.onChange();
    try {
      await detachDevice({ name: res, runDir: this.o.runDir, linkDir: this.o.deviceDir, clock: this.o.clock, log });
      this.device = undefined;
      this.ownConnections = 0;
      this.usersNow = [];
      this.stateText = 'off';
    } catch (err) {
      failStopOnInvariant(err);
      this.stateText = `detach failed: ${(err as Error).message}`;
      log('error', `${res}: cannot remove the block device: ${(err as Error).message}`);
    }
  }

  /** Daemon shutdown: remove the device unless something still opens it (then it stays, and says so). */
  async shutdown(): Promise<void> {
    const d = this.device;
    if (!d) return;
    const users = deviceUsers(d.devicePath, true);
    if (users.length > 0) {
      this.o.log('warn', `${this.o.res}: ${d.linkPath} stays (in use: ${users.join(', ')}); its I/O fails until marsd runs again and it is made anew`);
      return;
    }
    await detachDevice({ name: this.o.res, runDir: this.o.runDir, linkDir: this.o.deviceDir, clock: this.o.clock, log: this.o.log })
      .then(() => { this.device = undefined; }, (err: Error) => {
        failStopOnInvariant(err);
        this.o.log('error', `${this.o.res}: cannot remove the block device: ${err.message}`);
      });
  }
}

/**
 * Who opens the block device: mounts of it, holders in sysfs (device mapper, md) and, with
 * `processes`, every process with an open descriptor on it (a scan of /proc: only when removing).
 */
export function deviceUsers(devicePath: string, processes: boolean): string[] {
  const users: string[] = [];
  const real = safe(() => realpathSync(devicePath), devicePath);
  const mounts = safe(() => readFileSync('/proc/self/mountinfo', 'utf8'), '');
  for (const line of mounts.split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    const source = sep >= 0 ? f[sep + 2] : undefined;
    if (source !== undefined && (source === real || safe(() => realpathSync(source), '') === real)) users.push(`mounted on ${f[4]}`);
  }
  const base = real.replace(/^\/dev\//, '');
  for (const h of safe(() => readdirSync(`/sys/block/${base}/holders`), [] as string[])) users.push(`held by ${h}`);
  if (processes) {
    for (const pid of safe(() => readdirSync('/proc'), [] as string[]).filter((p) => /^\d+$/.test(p))) {
      const fds = safe(() => readdirSync(`/proc/${pid}/fd`), [] as string[]);
      if (fds.some((fd) => safe(() => readlinkSync(`/proc/${pid}/fd/${fd}`), '') === real)) users.push(`open by pid ${pid}`);
    }
  }
  return users;
}

function safe<T>(read: () => T, fallback: T): T {
  try {
    return read();
  } catch (err) {
    failStopOnInvariant(err);
    return fallback;
  }
}
