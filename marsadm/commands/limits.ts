// Limits as in MARS: the sync bandwidth of this host (defaults-HOST/sync-limit, read by the sync
// worker before every chunk; 0 = unlimited) and the emergency limit of a resource on this host
// (todo-HOST/emergency-limit, percent of /mars; 0 = off).
import { AdmError, type Adm } from '../context.js';
import { globalPaths, resPaths } from '../../common/tree/paths.js';
import { parseSize } from '../../common/config.js';

/** todo-HOST/emergency-limit: not a switch (TODO_KEYS), a percentage. */
export const emergencyLimitPath = resPaths.emergencyLimit;
export const syncLimitPath = (host: string): string => `${globalPaths.defaultsDir(host)}/sync-limit`;

/** Bytes per second with k/M/G suffixes, 0 = unlimited. */
export function parseSyncLimit(text: string): number {
  try {
    return parseSize(text, 'sync limit');
  } catch (err) {
    throw new AdmError(`${(err as Error).message} (bytes per second, 0 = unlimited)`, 2);
  }
}

export function setSyncLimit(adm: Adm, value: string): void {
  adm.requireCluster();
  const bytesPerS = parseSyncLimit(value);
  adm.tree.ensureDir(globalPaths.defaultsDir(adm.host));
  adm.tree.write(syncLimitPath(adm.host), String(bytesPerS));
  adm.trigger();
  adm.result(`sync limit of ${adm.host}: ${bytesPerS === 0 ? 'unlimited' : `${bytesPerS} bytes/s`}`, { host: adm.host, syncLimitBytesPerS: bytesPerS });
}

export function getSyncLimit(adm: Adm): void {
  adm.requireCluster();
  const v = Number(adm.tree.value(syncLimitPath(adm.host)) ?? '0');
  const bytesPerS = Number.isSafeInteger(v) && v > 0 ? v : 0;
  adm.result(String(bytesPerS), { host: adm.host, syncLimitBytesPerS: bytesPerS });
}

export function setEmergencyLimit(adm: Adm, name: string, value: string): void {
  const res = adm.requireResource(name);
  adm.requireMember(res);
  const percent = Number(value.replace(/%$/, ''));
  if (!Number.isInteger(percent) || percent < 0 || percent > 100) throw new AdmError(`invalid emergency limit ${JSON.stringify(value)}: a percentage 0..100 (0 = off)`, 2);
  adm.tree.write(emergencyLimitPath(res, adm.host), String(percent));
  adm.trigger();
  adm.result(`emergency limit of ${res} on ${adm.host}: ${percent === 0 ? 'off' : `${percent} %`}`, { resource: res, host: adm.host, emergencyLimitPercent: percent });
}

export function getEmergencyLimit(adm: Adm, name: string): void {
  const res = adm.requireResource(name);
  const v = Number(adm.tree.value(emergencyLimitPath(res, adm.host)) ?? '0');
  const percent = Number.isInteger(v) && v >= 0 && v <= 100 ? v : 0;
  adm.result(String(percent), { resource: res, host: adm.host, emergencyLimitPercent: percent });
}
