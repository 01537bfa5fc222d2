// When marsd makes or removes the kernel block device of a resource (/dev/mars/NAME), as a pure
// function of the device runner's state, the primary phase and the round's primary action: one
// part of the round's plan (plan.ts); the I/O is in device-runner.ts.
//
// Rules. The device exists only while the primary role runs here: it is made once the role is
// up, and before the role is given up (stop-primary) it is removed first: the stop of the role
// is held back until the device is gone, which is after its last opener closed it (the runner
// reports that it waits for openers, and the plan asks again next round). A failed attach is
// tried again after DEVICE_RETRY_MS, not every round.
import type { Action, Phase } from './decide.js';

/** A failed attach is retried this long after the failure. */
export const DEVICE_RETRY_MS = 30_000;

/** What the device runner reports about itself (DeviceRunner.runtime()). */
export interface DeviceRuntime {
  /** marsd makes devices at all (--device-mode other than none) */
  enabled: boolean;
  /** the device (or part of it) exists */
  attached: boolean;
  /** an attach or detach is running */
  busy: boolean;
  /** the clock's time of the last failed attach; undefined: none since the last success */
  failedAtMs: number | undefined;
}

export type DeviceAction = 'attach' | 'detach' | 'none';

export interface DevicePlan {
  action: DeviceAction;
  /** the round's stop-primary waits until the device is gone */
  holdPrimary: boolean;
}

export const NO_DEVICE: DeviceRuntime = { enabled: false, attached: false, busy: false, failedAtMs: undefined };

export function planDevice(dev: DeviceRuntime, phase: Phase, primary: Action, nowMs: number): DevicePlan {
  if (!dev.enabled) return { action: 'none', holdPrimary: false };
  const leaving = primary.kind === 'stop-primary' || phase === 'stopping' || phase === 'failed' || phase === 'down';
  if (leaving) {
    const present = dev.attached || dev.busy;
    return { action: present && !dev.busy ? 'detach' : 'none', holdPrimary: present && primary.kind === 'stop-primary' };
  }
  const retryDue = dev.failedAtMs === undefined || nowMs - dev.failedAtMs >= DEVICE_RETRY_MS;
  const attach = phase === 'primary' && !dev.attached && !dev.busy && retryDue;
  return { action: attach ? 'attach' : 'none', holdPrimary: false };
}
