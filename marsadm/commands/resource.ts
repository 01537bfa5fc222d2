// create-resource and delete-resource (the MARS user manual: create-resource; marsadm commands).
import { TREE_FILE_MODE } from '../../common/tree/modes.js';
import { closeSync, constants as fsc, openSync } from 'node:fs';
import { resolve } from 'node:path';
import { AdmError, type Adm } from '../context.js';
import { checkDataDevice } from './common.js';
import { resPaths, resourceDir, TODO_KEYS } from '../../common/tree/paths.js';
import { validResource } from '../../common/tree/names.js';
import { resourceMembers } from '../../common/cluster/members.js';
import { diskSizeBytes } from '../../common/disk/data-disk.js';
import { initialVersionLinks, formatReplayLink } from '../../common/log/links.js';
import { parseSize } from '../../common/config.js';
import { rethrowInvariant } from '../../common/util/assert.js';

const MIN_SIZE_BYTES = 64 * 1024;
const SIZE_ALIGN_BYTES = 4096;

export async function createResource(adm: Adm, name: string, device: string, opts: { size?: string }): Promise<void> {
  const res = validResource(name);
  adm.requireCluster();
  const { tree, host } = adm;
  if (tree.value(resPaths.size(res)) !== undefined) {
    throw new AdmError(`resource ${res} already exists; choose another name or "marsadm delete-resource ${res}" first`);
  }
  checkDataDevice(adm, device);
  const diskBytes = diskSizeBytes(device);
  let sizeBytes: number;
  if (opts.size !== undefined) {
    try {
      sizeBytes = parseSize(opts.size, '--size');
    } catch (err) {
      rethrowInvariant(err);
      throw new AdmError((err as Error).message, 2);
    }
    if (sizeBytes % SIZE_ALIGN_BYTES !== 0) throw new AdmError(`--size must be a multiple of ${SIZE_ALIGN_BYTES} bytes`, 2);
    if (sizeBytes > diskBytes) {
      throw new AdmError(`device ${device} has ${diskBytes} bytes, smaller than the requested size ${sizeBytes}; give a larger device or a smaller --size`);
    }
  } else {
    sizeBytes = diskBytes - (diskBytes % SIZE_ALIGN_BYTES);
  }
  if (sizeBytes < MIN_SIZE_BYTES) throw new AdmError(`the resource would have ${sizeBytes} bytes; at least ${MIN_SIZE_BYTES} are needed`);

  // A re-created resource continues the numbering so old logfiles can never be mistaken for new ones.
  const maxnr = Number(tree.value(resPaths.maxnr(res)) ?? '0');
  const seq = (Number.isSafeInteger(maxnr) ? maxnr : 0) + 1;
  const dir = resourceDir(res);
  tree.ensureDir(dir);
  tree.ensureDir(resPaths.todoDir(res, host));
  tree.ensureDir(resPaths.actualDir(res, host));
  tree.write(resPaths.data(res, host), resolve(device));
  tree.write(resPaths.device(res, host), res);
  tree.write(resPaths.primary(res), host);
  tree.write(resPaths.syncstatus(res, host), String(sizeBytes));
  const versions = initialVersionLinks(seq, host);
  tree.write(resPaths.version(res, versions.previous.seq, host), versions.previous.value);
  tree.write(resPaths.version(res, versions.current.seq, host), versions.current.value);
  closeSync(openSync(tree.abs(resPaths.log(res, seq, host)), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, TREE_FILE_MODE));
  tree.write(resPaths.replay(res, host), formatReplayLink({ seq, origin: host, minPos: 0, len: 0 }));
  tree.write(resPaths.maxnr(res), String(seq));
  for (const key of TODO_KEYS) tree.write(resPaths.todo(res, host, key), '1');
  // The size link last: it is what makes the resource visible to marsd.
  tree.write(resPaths.size(res), String(sizeBytes));
  tree.fsyncDir(dir);
  tree.fsyncDir(resPaths.todoDir(res, host));
  tree.fsyncDir('');
  adm.trigger();
  const up = await adm.waitFor(`resource ${res} is primary here`, () => adm.actual(res, 'is-primary') === '1' || (adm.actual(res, 'replay-code') ?? '0').startsWith('-'));
  const error = adm.actual(res, 'msg-err-replay-stop');
  if (up && error && error !== 'OK') throw new AdmError(`resource ${res} was created but cannot start: ${error}`);
  const socket = adm.actual(res, 'socket');
  adm.result(`created resource ${res} (${sizeBytes} bytes on ${device}); this host ${host} is primary${up && socket ? `; the block device is exported on ${socket}` : ''}`, {
    resource: res, sizeBytes, device, primary: host, socket: up ? socket ?? null : null,
  });
}

export async function deleteResource(adm: Adm, name: string): Promise<void> {
  const res = adm.requireResource(name);
  const { tree, host } = adm;
  const dir = resourceDir(res);
  const others = resourceMembers(tree, res).filter((m) => m !== host);
  if (others.length > 0 && !adm.force) {
    throw new AdmError(`resource ${res} still has other members (${others.join(', ')}): they must leave-resource first, or use --force`);
  }
  const open = Number(adm.actual(res, 'open-count') ?? '0');
  if (open > 0 && !adm.force) {
    throw new AdmError(`the device of ${res} is in use (${open} NBD connection${open > 1 ? 's' : ''}): unmount and disconnect it first, or use --force`);
  }
  tree.write(resPaths.todo(res, host, 'attach'), '0');
  adm.trigger();
  await adm.waitFor(`resource ${res} is stopped`, () => adm.actual(res, 'is-attached') !== '1' && adm.actual(res, 'is-primary') !== '1');
  // Tombstone everything but maxnr: numbering continues if the name is reused.
  let removed = 0;
  const walk = (rel: string) => {
    for (const n of tree.list(rel)) {
      const path = `${rel}/${n}`;
      if (n === 'maxnr') continue;
      const raw = tree.readRaw(path);
      if (raw === undefined && tree.exists(path) && !/^log-/.test(n)) {
        walk(path); // a subdirectory (todo-HOST, actual-HOST)
        continue;
      }
      if (tree.remove(path)) removed++;
    }
  };
  walk(dir);
  tree.fsyncDir(dir);
  adm.trigger();
  adm.result(`deleted resource ${res} (${removed} entries tombstoned); the data device was not touched`, { resource: res, removedEntries: removed });
}
