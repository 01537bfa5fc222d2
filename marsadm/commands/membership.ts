// join-resource and leave-resource (the MARS user manual: join-resource; marsadm commands): a host becomes a replica
// of a resource (full sync from the primary, then fetch and replay from the primary's
// current logfile), or stops being one.
import { unlinkSync } from 'node:fs';
import { resolve } from 'node:path';

import { AdmError, type Adm } from '../context.js';
import { checkDataDevice } from './common.js';
import { clearResyncRanges } from '../../common/resource/resync.js';
import { globalPaths, resPaths, resourceDir, TODO_KEYS } from '../../common/tree/paths.js';
import { LOG_NAME, VERSION_NAME } from '../../common/tree/log-names.js';
import { diskSizeBytes } from '../../common/disk/data-disk.js';
import { formatReplayLink } from '../../common/log/links.js';
import { readReplayLink } from '../../common/resource/links.js';
import { syncProgressText } from '../status/progress.js';
import { actingForOther, leaveResourceFor } from './hosts.js';
import { logName, versionName } from '../../common/tree/log-names.js';

export async function joinResource(adm: Adm, name: string, device: string, opts: { wait?: boolean } = {}): Promise<void> {
  const res = adm.requireResource(name);
  const { tree, host } = adm;
  if (tree.value(resPaths.data(res, host)) !== undefined) {
    throw new AdmError(`host ${host} is already a member of ${res}; see "marsadm view ${res}"`);
  }
  if (tree.value(globalPaths.ip(host)) === undefined) {
    throw new AdmError(`host ${host} has no ips/ip-${host} link: run "marsadm join-cluster" first`);
  }
  const primaryHost = tree.value(resPaths.primary(res));
  if (primaryHost === undefined || primaryHost === '(none)') {
    throw new AdmError(`${res} has no designated primary to sync from: run "marsadm primary ${res}" on the host that holds the data first`);
  }
  if (primaryHost === host) throw new AdmError(`${host} is the designated primary of ${res}; it cannot join its own resource`);
  const primaryReplay = readReplayLink(tree, res, primaryHost);
  if (!primaryReplay) {
    throw new AdmError(`the replay link of the primary ${primaryHost} has not arrived here yet: check "marsadm wait-cluster" and try again`);
  }
  const seq = primaryReplay.seq;
  const currentVersion = tree.value(resPaths.version(res, seq, primaryHost));
  if (currentVersion === undefined) {
    throw new AdmError(`${versionName(seq, primaryHost)} has not arrived here yet: check "marsadm wait-cluster" and try again`);
  }
  checkDataDevice(adm, device);
  const sizeBytes = Number(tree.value(resPaths.size(res)));
  const diskBytes = diskSizeBytes(device);
  if (diskBytes < sizeBytes) throw new AdmError(`device ${device} has ${diskBytes} bytes; ${res} needs ${sizeBytes}`);
  const stale = tree.list(resourceDir(res)).filter((n) => (VERSION_NAME.exec(n)?.[2] === host) && Number(VERSION_NAME.exec(n)![1]) >= seq && tree.value(`${resourceDir(res)}/${n}`) !== undefined);
  if (stale.length > 0 && !adm.force) {
    throw new AdmError(`old versionlinks of ${host} remain (${stale.slice(0, 3).join(', ')}...): run "marsadm leave-resource ${res}" to clean up first, or use --force`);
  }

  const dir = resourceDir(res);
  tree.ensureDir(resPaths.todoDir(res, host));
  tree.ensureDir(resPaths.actualDir(res, host));
  tree.write(resPaths.todo(res, host, 'attach'), '0');
  tree.write(resPaths.data(res, host), resolve(device));
  tree.write(resPaths.device(res, host), res);
  // Replay starts at the primary's writeback logfile: everything before it is on the
  // primary's disk, which the sync copies; replaying from its start makes the copy consistent.
  const previousVersion = tree.value(resPaths.version(res, seq - 1, primaryHost));
  if (previousVersion !== undefined) tree.write(resPaths.version(res, seq - 1, host), previousVersion, { durable: true });
  tree.write(resPaths.version(res, seq, host), currentVersion, { durable: true });
  tree.write(resPaths.skipCheck(res, host), String(seq));
  clearResyncRanges(tree, res); // a leftover incremental range list must not narrow this full sync
  tree.write(resPaths.syncstatus(res, host), '0', { durable: true });
  tree.write(resPaths.replay(res, host), formatReplayLink({ seq, origin: primaryHost, minPos: 0, len: 0 }), { durable: true });
  for (const key of TODO_KEYS) if (key !== 'attach') tree.write(resPaths.todo(res, host, key), '1');
  tree.write(resPaths.todo(res, host, 'attach'), '1');
  tree.fsyncDir(dir);
  tree.fsyncDir(resPaths.todoDir(res, host));
  adm.trigger();
  if (opts.wait) {
    await adm.waitFor(`${res} is synced on ${host}`, () => Number(tree.value(resPaths.syncstatus(res, host)) ?? '0') >= sizeBytes,
      () => syncProgressText(adm, res));
  }
  adm.result(`${host} joined ${res} (${sizeBytes} bytes on ${device}); a full sync from ${primaryHost} starts, then replay from ${logName(seq, primaryHost)}. Watch it with "marsadm view ${res}"`, {
    resource: res, host, device, sizeBytes, primary: primaryHost, joinSeq: seq,
  });
}

export async function leaveResource(adm: Adm, name: string): Promise<void> {
  const res = adm.requireResource(name);
  if (actingForOther(adm)) {
    leaveResourceFor(adm, res);
    return;
  }
  adm.requireMember(res);
  const { tree, host } = adm;
  if (tree.value(resPaths.primary(res)) === host && !adm.force) {
    throw new AdmError(`${host} is the designated primary of ${res}: hand the role to another member ("marsadm primary ${res}" there) or "marsadm secondary ${res}" first`);
  }
  if (adm.actual(res, 'is-primary') === '1') throw new AdmError(`${host} is still actual primary of ${res}; wait until it stopped ("marsadm wait-resource ${res} primary-off")`);
  const busy = ['is-attached', 'is-copying', 'is-replaying', 'is-syncing'].filter((k) => adm.actual(res, k) === '1');
  if ((busy.length > 0 || tree.value(resPaths.todo(res, host, 'attach')) === '1') && !adm.force) {
    throw new AdmError(`${res} is still active here (${busy.join(', ') || 'attach on'}): run "marsadm down ${res}" first`);
  }
  const dir = resourceDir(res);
  let removed = 0;
  const mine = (n: string) => n.endsWith(`-${host}`) && !LOG_NAME.test(n);
  // The requests (todo-HOST) go first: marsd reads the tree while we remove, and a request
  // whose answer (actual-HOST) is gone but which is still there is a new request to it. An
  // invalidate carried out that way rewrote this host's versionlinks after the leave, and the
  // next join-resource refused them (found by the torture runner, mars-full with 2 resources).
  const names = tree.list(dir).sort((a, b) => Number(b === `todo-${host}`) - Number(a === `todo-${host}`));
  for (const n of names) {
    const path = `${dir}/${n}`;
    if (n === `todo-${host}` || n === `actual-${host}`) {
      for (const k of tree.list(path)) if (tree.remove(`${path}/${k}`)) removed++;
      continue;
    }
    if (mine(n) && tree.remove(path)) removed++;
  }
  // Local copies of other hosts' logfiles are only copies: unlink them here (a tombstone
  // would delete the logfile everywhere).
  let purged = 0;
  for (const n of tree.list(dir)) {
    const m = LOG_NAME.exec(n);
    if (!m || m[2] === host || tree.readRaw(`${dir}/${n}`) !== undefined) continue;
    try { unlinkSync(tree.abs(`${dir}/${n}`)); purged++; } catch { /* gone */ }
  }
  tree.fsyncDir(dir);
  adm.trigger();
  adm.result(`${host} left ${res} (${removed} links tombstoned, ${purged} logfile copies removed); the disk content was not touched`, { resource: res, host, removedLinks: removed, purgedLogfiles: purged });
}
