// Logfile housekeeping (reference/mars.md §3): log-rotate, log-delete(-one|-all), cron.
import { closeSync, constants as fsc, openSync, statSync } from 'node:fs';
import { AdmError, type Adm } from '../context.js';
import { resPaths, resourceDir, VERSION_NAME } from '../../daemon/tree/paths.js';
import { listLogfiles } from '../../daemon/control/resource-links.js';
import { parseReplayLink } from '../../daemon/log/links.js';
import { TOMBSTONE } from '../../daemon/tree/store.js';
import { validTreePath } from '../../daemon/tree/names.js';

function isValidTreeName(path: string): boolean {
  try {
    validTreePath(path);
    return true;
  } catch {
    return false;
  }
}
import { expandResources } from './common.js';

/** Create the next, empty logfile; the primary's marsd switches to it. */
export async function logRotate(adm: Adm, name: string, quiet = false): Promise<boolean> {
  const res = adm.requireResource(name);
  const { tree, host } = adm;
  if (adm.actual(res, 'is-primary') !== '1') {
    if (quiet) return false;
    throw new AdmError(`log-rotate ${res}: this host is not the actual primary (only the primary writes logfiles)`);
  }
  const own = listLogfiles(tree, res).filter((l) => l.origin === host);
  const current = own[own.length - 1];
  if (!current) throw new AdmError(`log-rotate ${res}: no logfile of ${host} found`);
  if (statSync(tree.abs(`${resourceDir(res)}/${current.name}`)).size === 0) {
    if (!quiet) adm.result(`${res}: the current logfile ${current.name} is empty; nothing to rotate`, { resource: res, rotated: false, logfile: current.name });
    return false;
  }
  const next = current.seq + 1;
  try {
    closeSync(openSync(tree.abs(resPaths.log(res, next, host)), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  adm.trigger();
  const nextName = resPaths.log(res, next, host).split('/')[1]!;
  await adm.waitFor(`marsd switched to ${nextName}`, () => tree.value(resPaths.version(res, next, host)) !== undefined
    && tree.value(resPaths.version(res, next, host))!.includes(`,${nextName},`));
  if (!quiet) adm.result(`${res}: rotated from ${current.name} to ${nextName}`, { resource: res, rotated: true, from: current.name, to: nextName });
  return true;
}

interface Deletable { name: string; sizeBytes: number }

/**
 * Logfiles every replica has replayed past: numbers below the lowest logfile number of all
 * replay links, never the newest one, never one modified within 2 x window (unless --force).
 */
export function deletableLogfiles(adm: Adm, res: string): { deletable: Deletable[]; minReplaySeq: number | undefined; heldBy: string | undefined } {
  const { tree } = adm;
  const dir = resourceDir(res);
  let minReplaySeq: number | undefined;
  let heldBy: string | undefined;
  for (const n of tree.list(dir)) {
    if (!n.startsWith('replay-')) continue;
    const value = tree.value(`${dir}/${n}`);
    if (value === undefined) continue;
    const link = parseReplayLink(value);
    if (!link) continue;
    if (minReplaySeq === undefined || link.seq < minReplaySeq) {
      minReplaySeq = link.seq;
      heldBy = n.slice('replay-'.length);
    }
  }
  const logs = listLogfiles(tree, res);
  const newest = logs[logs.length - 1]?.seq;
  const recentMs = Date.now() - 2 * adm.windowS * 1000;
  const deletable: Deletable[] = [];
  for (const l of logs) {
    if (minReplaySeq === undefined || l.seq >= minReplaySeq || l.seq === newest) continue;
    const st = statSync(tree.abs(`${dir}/${l.name}`));
    if (!adm.force && st.mtimeMs > recentMs) continue;
    deletable.push({ name: l.name, sizeBytes: st.size });
  }
  return { deletable, minReplaySeq, heldBy };
}

export function logDelete(adm: Adm, spec: string, mode: 'one' | 'all', quiet = false): number {
  let total = 0;
  for (const res of expandResources(adm, spec)) {
    const { tree } = adm;
    const dir = resourceDir(res);
    const { deletable, minReplaySeq, heldBy } = deletableLogfiles(adm, res);
    const chosen = mode === 'one' ? deletable.slice(0, 1) : deletable;
    let freed = 0;
    for (const d of chosen) {
      tree.remove(`${dir}/${d.name}`);
      freed += d.sizeBytes;
    }
    // Versionlinks below (lowest replayed logfile - 1) are no longer needed for chain checks.
    let versions = 0;
    if (minReplaySeq !== undefined) {
      for (const n of tree.list(dir)) {
        const m = VERSION_NAME.exec(n);
        if (m && Number(m[1]) < minReplaySeq - 1 && tree.remove(`${dir}/${n}`)) versions++;
      }
    }
    if (chosen.length > 0 || versions > 0) tree.fsyncDir(dir);
    total += chosen.length;
    if (!quiet) {
      adm.result(chosen.length > 0
        ? `${res}: deleted ${chosen.map((d) => d.name).join(', ')} (${freed} bytes)`
        : `${res}: no logfile can be deleted yet${heldBy ? ` (replay-${heldBy} still needs logfile ${minReplaySeq}; recent ones are kept for ${2 * adm.windowS} s unless --force)` : ''}`,
      { resource: res, deleted: chosen.map((d) => d.name), freedBytes: freed, versionlinksDeleted: versions });
    }
  }
  return total;
}

/** Physically remove tombstones older than 2 x window (every peer has seen them). */
export function purgeTombstones(adm: Adm): number {
  const { tree } = adm;
  const limitUs = (Date.now() - 2 * adm.windowS * 1000) * 1000;
  let purged = 0;
  const walk = (rel: string, depth: number) => {
    for (const n of tree.list(rel)) {
      const path = rel === '' ? n : `${rel}/${n}`;
      if (!isValidTreeName(path)) continue; // lost+found of an ext4 /mars, and such
      const raw = tree.readRaw(path);
      if (raw?.value === TOMBSTONE) {
        if (adm.force || raw.stampUs < limitUs) {
          tree.purge(path);
          purged++;
        }
      } else if (raw === undefined && depth < 2 && !n.startsWith('log-') && !n.startsWith('.')) {
        try {
          if (statSync(tree.abs(path)).isDirectory()) walk(path, depth + 1);
        } catch { /* vanished */ }
      }
    }
  };
  walk('', 0);
  return purged;
}

/** What the shipped cron job runs every 10 minutes. */
export async function cron(adm: Adm): Promise<void> {
  adm.requireCluster();
  const purged = purgeTombstones(adm);
  const rotated: string[] = [];
  let deleted = 0;
  for (const res of expandResources(adm, 'all')) {
    if (await logRotate(adm, res, true)) rotated.push(res);
    deleted += logDelete(adm, res, 'all', true);
  }
  adm.result(`cron: rotated ${rotated.length ? rotated.join(', ') : 'nothing'}; deleted ${deleted} logfile(s); purged ${purged} old tombstone(s)`,
    { rotated, deletedLogfiles: deleted, purgedTombstones: purged });
}
