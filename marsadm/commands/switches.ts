// The todo switches of a resource (the MARS user manual: marsadm commands): attach/detach, fetch, replay and
// sync on/off, and up/down which set them all.
import { AdmError, type Adm } from '../context.js';
import { resPaths, type TodoKey } from '../../common/tree/paths.js';
import { actingForOther, downFor } from './hosts.js';

function setSwitch(adm: Adm, res: string, key: TodoKey, on: boolean): boolean {
  return adm.tree.write(resPaths.todo(res, adm.host, key), on ? '1' : '0', { onlyIfChanged: true });
}

export async function attach(adm: Adm, name: string): Promise<void> {
  const res = adm.requireResource(name);
  adm.requireMember(res);
  setSwitch(adm, res, 'attach', true);
  adm.trigger();
  const designated = adm.tree.value(resPaths.primary(res)) === adm.host;
  if (designated) await adm.waitFor(`${res} is attached`, () => adm.actual(res, 'is-attached') === '1' || (adm.actual(res, 'replay-code') ?? '').startsWith('-'));
  adm.result(`${res}: attach on`, { resource: res, attach: true });
}

export async function detach(adm: Adm, name: string): Promise<void> {
  const res = adm.requireResource(name);
  adm.requireMember(res);
  const open = Number(adm.actual(res, 'open-count') ?? '0');
  if (open > 0 && !adm.force) {
    throw new AdmError(`the device of ${res} is in use (${open} NBD connection${open > 1 ? 's' : ''}): unmount it first, or use --force`);
  }
  setSwitch(adm, res, 'attach', false);
  adm.trigger();
  await adm.waitFor(`${res} is detached`, () => adm.actual(res, 'is-attached') !== '1',
    () => `writeback: ${adm.actual(res, 'writeback-rest') ?? '?'} bytes left`);
  adm.result(`${res}: detached`, { resource: res, attach: false });
}

export function setTodo(adm: Adm, name: string, key: TodoKey, on: boolean): void {
  const res = adm.requireResource(name);
  adm.requireMember(res);
  setSwitch(adm, res, key, on);
  adm.trigger();
  adm.result(`${res}: ${key} ${on ? 'on' : 'off'}`, { resource: res, [key]: on });
}

export async function up(adm: Adm, name: string): Promise<void> {
  const res = adm.requireResource(name);
  adm.requireMember(res);
  for (const key of ['connect', 'sync', 'allow-replay'] as const) setSwitch(adm, res, key, true);
  await attach(adm, res);
}

export async function down(adm: Adm, name: string): Promise<void> {
  const res = adm.requireResource(name);
  adm.requireMember(res);
  if (actingForOther(adm)) {
    downFor(adm, res);
    return;
  }
  const open = Number(adm.actual(res, 'open-count') ?? '0');
  if (open > 0 && !adm.force) {
    throw new AdmError(`the device of ${res} is in use (${open} NBD connection${open > 1 ? 's' : ''}): unmount it first, or use --force`);
  }
  for (const key of ['allow-replay', 'sync', 'connect'] as const) setSwitch(adm, res, key, false);
  await detach(adm, res);
}
