// Attaching through the kernel's NBD driver: `nbd-client -unix SOCKET /dev/nbdX -N NAME` binds a
// free /dev/nbdX to the export. Used where the kernel has nbd.ko and nbd-client is installed.
//
// Order: the device is recorded in the attach state before nbd-client runs (so a detach after
// a crash finds it); attach returns once sysfs shows the device connected (/sys/block/nbdX/pid),
// detach once it shows it disconnected.
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import type { Clock } from '../common/util/clock.js';
import { AttachError, saveState, type AttachState } from './attach-state.js';
import { probeAsync, run, waitUntil } from './attach-system.js';

export async function attachNbdClient(state: AttachState, statePath: string, timeoutMs: number, clock: Clock): Promise<string> {
  const dev = await freeNbdDevice();
  state.nbdDevice = dev;
  await saveState(statePath, state);
  await run('nbd-client', ['-unix', state.socketPath, dev, '-N', state.name], timeoutMs);
  await waitUntil(clock, `${dev} to connect`, () => nbdDeviceConnected(dev), timeoutMs);
  return dev;
}

/** Undoes the binding if it still exists. */
export async function detachNbdClient(dev: string, timeoutMs: number, clock: Clock): Promise<void> {
  if (!nbdDeviceConnected(dev)) return;
  await run('nbd-client', ['-d', dev], timeoutMs);
  await waitUntil(clock, `${dev} to disconnect`, () => !nbdDeviceConnected(dev), timeoutMs);
}

/** The lowest-numbered /dev/nbdX that is not connected. */
async function freeNbdDevice(): Promise<string> {
  const names = (await probeAsync(() => readdir('/sys/block'), [] as string[])).filter((n) => /^nbd\d+$/.test(n));
  names.sort((a, b) => Number(a.slice(3)) - Number(b.slice(3)));
  for (const n of names) {
    if (!existsSync(`/sys/block/${n}/pid`) && existsSync(`/dev/${n}`)) return `/dev/${n}`;
  }
  throw new AttachError(`no free /dev/nbdX device (${names.length} exist); load nbd.ko with more devices (modprobe nbd nbds_max=64)`);
}

function nbdDeviceConnected(dev: string): boolean {
  return existsSync(`/sys/block/${dev.replace(/^\/dev\//, '')}/pid`);
}
