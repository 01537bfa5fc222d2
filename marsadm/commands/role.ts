// primary and secondary (reference/mars.md §6.3, §6.4): the designated primary link and
// waiting until this host's marsd really changed its role.
import { AdmError, type Adm } from '../context.js';
import { resPaths } from '../../daemon/tree/paths.js';

export async function primary(adm: Adm, name: string): Promise<void> {
  const res = adm.requireResource(name);
  adm.requireMember(res);
  const { tree, host } = adm;
  const current = tree.value(resPaths.primary(res));
  if (current !== undefined && current !== '(none)' && current !== host && !adm.force) {
    throw new AdmError(`${current} is the designated primary of ${res}; a planned handover from another host is not available in this version. `
      + `Use "marsadm primary --force ${res}" only if ${current} is lost (it will cause a split brain if ${current} still writes)`);
  }
  if (current !== host) tree.write(resPaths.primary(res), host, { durable: true });
  if (tree.value(resPaths.todo(res, host, 'attach')) !== '1') tree.write(resPaths.todo(res, host, 'attach'), '1');
  adm.trigger();
  const failed = () => (adm.actual(res, 'replay-code') ?? '0').startsWith('-');
  const up = await adm.waitFor(`${host} is primary of ${res}`, () => adm.actual(res, 'is-primary') === '1' || failed(), () => {
    const rest = Number(adm.actual(res, 'recovery-rest') ?? '0');
    return rest > 0 ? `recovery: ${rest} bytes left to replay` : 'waiting for marsd to start the resource';
  });
  if (up && failed()) {
    throw new AdmError(`${host} is designated primary of ${res} but cannot start it: ${adm.actual(res, 'msg-err-replay-stop')}`);
  }
  const socket = adm.actual(res, 'socket');
  adm.result(up ? `${host} is primary of ${res}; block device on ${socket}` : `${host} is designated primary of ${res}`, {
    resource: res, primary: host, active: up, socket: up ? socket ?? null : null,
  });
}

export async function secondary(adm: Adm, name: string): Promise<void> {
  const res = adm.requireResource(name);
  adm.requireMember(res);
  const { tree, host } = adm;
  const open = Number(adm.actual(res, 'open-count') ?? '0');
  if (open > 0 && !adm.force) {
    throw new AdmError(`the device of ${res} is in use (${open} NBD connection${open > 1 ? 's' : ''}): unmount it first; with --force its writers get EPERM`);
  }
  tree.write(resPaths.primary(res), '(none)', { durable: true });
  adm.trigger();
  const done = await adm.waitFor(`${host} left the primary role of ${res}`, () => adm.actual(res, 'is-primary') !== '1',
    () => `writeback: ${adm.actual(res, 'writeback-rest') ?? '?'} bytes left`);
  adm.result(`${res} has no designated primary now${done ? '; the export is closed and everything is written back' : ''}`, { resource: res, primary: null, stopped: done });
}
