// Small helpers several commands share.
import { closeSync, constants as fsc, openSync, statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { AdmError, type Adm } from '../context.js';
import { listResources } from '../../common/resource/snapshot.js';
import { resPaths } from '../../common/tree/paths.js';

/**
 * A data device a resource may use on this host: an absolute path of a block device or
 * regular file, not the disk of another resource here, openable for writing.
 */
export function checkDataDevice(adm: Adm, device: string): void {
  if (!isAbsolute(device)) throw new AdmError(`the device must be an absolute path, got ${JSON.stringify(device)}`, 2);
  let st;
  try {
    st = statSync(device);
  } catch {
    throw new AdmError(`device ${device} does not exist`);
  }
  if (!st.isBlockDevice() && !st.isFile()) throw new AdmError(`device ${device} is neither a block device nor a regular file`);
  for (const other of listResources(adm.tree)) {
    const used = adm.tree.value(resPaths.data(other, adm.host));
    if (used !== undefined && resolve(used) === resolve(device)) throw new AdmError(`device ${device} is already the disk of resource ${other} on this host`);
  }
  try {
    closeSync(openSync(device, fsc.O_RDWR));
  } catch (err) {
    throw new AdmError(`cannot open ${device} for writing: ${(err as Error).message}`);
  }
}

/** `NAME`, `all`, or `a,b,c` -> resource names. */
export function expandResources(adm: Adm, spec: string): string[] {
  if (spec === 'all') return listResources(adm.tree);
  return spec.split(',').map((r) => adm.requireResource(r));
}
