// Logfile housekeeping (the MARS user manual: logrotate, logdelete, cron): log-rotate, log-delete(-one|-all), cron.
import { TREE_FILE_MODE } from '../../common/tree/modes.js';
import { closeSync, constants as fsc, openSync, statSync } from 'node:fs';
import { AdmError, type Adm } from '../context.js';
import { resPaths, resourceDir } from '../../common/tree/paths.js';
import { VERSION_NAME } from '../../common/tree/log-names.js';
import { listLogfiles } from '../../common/resource/links.js';
import { ownerOf } from '../../common/tree/ownership.js';
import { formatBytesShort, planLogRetention, retentionJson, type RetentionPlan } from '../status/log-retention.js';
import { readRetentionInput } from '../status/read-retention.js';
import { TOMBSTONE } from '../../common/tree/store.js';
import { validTreePath } from '../../common/tree/names.js';

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
    closeSync(openSync(tree.abs(resPaths.log(res, next, host)), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, TREE_FILE_MODE));
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

/**
 * What log-delete may delete here: the shared retention plan (marsadm/status/log-retention.ts)
 * over this host's tree. Every member of the resource must have told us how far it replayed.
 */
export function deletableLogfiles(adm: Adm, res: string): RetentionPlan {
  return planLogRetention(readRetentionInput(adm.tree, res, adm.host, adm.windowS, adm.force));
}

export function logDelete(adm: Adm, spec: string, mode: 'one' | 'all', quiet = false): number {
  let total = 0;
  for (const res of expandResources(adm, spec)) {
    const { tree } = adm;
    const dir = resourceDir(res);
    const plan = deletableLogfiles(adm, res);
    const chosen = mode === 'one' ? plan.deletable.slice(0, 1) : plan.deletable;
    let freed = 0;
    for (const d of chosen) {
      // The tombstone replaces the file here and, once propagated, every copy on the peers.
      if (tree.remove(`${dir}/${d.name}`)) freed += d.sizeBytes;
    }
    // Versionlinks below (lowest needed logfile - 1) are no longer needed for chain checks.
    let versions = 0;
    if (plan.versionsBelow !== undefined) {
      for (const n of tree.list(dir)) {
        const m = VERSION_NAME.exec(n);
        if (m && Number(m[1]) < plan.versionsBelow && tree.remove(`${dir}/${n}`)) versions++;
      }
    }
    if (chosen.length > 0 || versions > 0) {
      tree.fsyncDir(dir);
      adm.trigger();
    }
    total += chosen.length;
    if (!quiet) {
      const held = plan.heldBack ? `; ${plan.heldBack.text}` : '';
      adm.result(chosen.length > 0
        ? `${res}: ${adm.dryRun ? 'would delete' : 'deleted'} ${chosen.map((d) => d.name).join(', ')} (${formatBytesShort(freed)}) here and, as they propagate, on every peer${held}`
        : `${res}: no logfile can be deleted yet: ${plan.reason}`,
      {
        resource: res, deleted: chosen.map((d) => d.name), freedBytes: freed, versionlinksDeleted: versions,
        ...(chosen.length === 0 ? { reason: plan.reason } : {}),
        retention: retentionJson(plan),
      });
    }
  }
  return total;
}

/** Tombstones older than this are purged by cron even if a peer never confirmed them. */
export const TOMBSTONE_FALLBACK_AGE_S = 7 * 24 * 3600;

export interface TombstoneAgeInput {
  path: string;
  stampUs: number;
  /** propagates to peers (ownerOf(path).kind !== 'local') */
  replicated: boolean;
}

/**
 * cron's share of tombstone purging (pure). marsd purges a replicated tombstone as soon as
 * every cluster member has seen it (daemon/propagate/tombstones.ts); cron only removes
 * - tombstones of links that never leave this host, after 2 x window, and
 * - any tombstone older than TOMBSTONE_FALLBACK_AGE_S: a member that has been silent that
 *   long (dead, or gone without leave-cluster) must not keep them forever; if it ever comes
 *   back, its own cron deletes what it still holds (the retention rule gives the same answer
 *   there).
 * --force purges every tombstone now.
 */
export function cronPurgeDecision(tombstones: readonly TombstoneAgeInput[], nowUs: number, windowS: number, force: boolean): string[] {
  return tombstones.filter((t) => force
    || nowUs - t.stampUs > TOMBSTONE_FALLBACK_AGE_S * 1_000_000
    || (!t.replicated && nowUs - t.stampUs > 2 * windowS * 1_000_000)).map((t) => t.path);
}

/** Physically remove the tombstones cronPurgeDecision picks. */
export function purgeTombstones(adm: Adm): number {
  const { tree } = adm;
  const found: TombstoneAgeInput[] = [];
  const walk = (rel: string, depth: number) => {
    for (const n of tree.list(rel)) {
      const path = rel === '' ? n : `${rel}/${n}`;
      if (n.startsWith('.')) continue;
      if (!isValidTreeName(path)) continue; // lost+found of an ext4 /mars, and such
      const raw = tree.readRaw(path);
      if (raw?.value === TOMBSTONE) {
        found.push({ path, stampUs: raw.stampUs, replicated: ownerOf(path).kind !== 'local' });
      } else if (raw === undefined && depth < 2 && !n.startsWith('log-')) {
        try {
          if (statSync(tree.abs(path)).isDirectory()) walk(path, depth + 1);
        } catch { /* vanished */ }
      }
    }
  };
  walk('', 0);
  let purged = 0;
  for (const path of cronPurgeDecision(found, tree.clock.now(), adm.windowS, adm.force)) {
    tree.purge(path);
    purged++;
  }
  return purged;
}

/** MARS's cron thresholds: with this many logfiles present, rotate only once the current one is this large. */
export const DEFAULT_THRESH_LOGFILES = 10;
export const DEFAULT_THRESH_LOGSIZE_BYTES = 5 * 1024 ** 3;

export interface CronThresholds { logfiles: number; logsizeBytes: number }

/**
 * Whether cron's rotation is worthwhile (pure): never for an empty current logfile; with at
 * least thresh-logfiles logfiles present only once the current one reached thresh-logsize
 * (many small logfiles cost more than they free). Returns the reason when not.
 */
export function rotationWorthwhile(logfileCount: number, currentBytes: number, th: CronThresholds): string | undefined {
  if (currentBytes === 0) return 'the current logfile is empty';
  if (logfileCount >= th.logfiles && currentBytes < th.logsizeBytes) {
    return `${logfileCount} logfiles (thresh-logfiles ${th.logfiles}) and the current one has ${currentBytes} bytes (< thresh-logsize ${th.logsizeBytes})`;
  }
  return undefined;
}

function cronRotationSkip(adm: Adm, res: string, th: CronThresholds): string | undefined {
  const all = listLogfiles(adm.tree, res);
  const own = all.filter((l) => l.origin === adm.host);
  const current = own[own.length - 1];
  if (!current) return undefined; // logRotate says why
  let size = 0;
  try { size = statSync(adm.tree.abs(`${resourceDir(res)}/${current.name}`)).size; } catch { return undefined; }
  return rotationWorthwhile(all.length, size, th);
}

/** What the shipped cron job runs every 10 minutes. */
export async function cron(adm: Adm, th: CronThresholds = { logfiles: DEFAULT_THRESH_LOGFILES, logsizeBytes: DEFAULT_THRESH_LOGSIZE_BYTES }): Promise<void> {
  adm.requireCluster();
  const purged = purgeTombstones(adm);
  const rotated: string[] = [];
  const skipped: Record<string, string> = {};
  let deleted = 0;
  const held: Record<string, unknown>[] = [];
  for (const res of expandResources(adm, 'all')) {
    const skip = adm.actual(res, 'is-primary') === '1' ? cronRotationSkip(adm, res, th) : undefined;
    if (skip !== undefined) skipped[res] = skip;
    else if (await logRotate(adm, res, true)) rotated.push(res);
    deleted += logDelete(adm, res, 'all', true);
    const plan = deletableLogfiles(adm, res);
    if (plan.heldBack) held.push({ resource: res, hosts: plan.heldBack.hosts, bytes: plan.heldBack.bytes, text: plan.heldBack.text });
  }
  const heldText = held.map((h) => `; ${h.resource as string}: ${h.text as string}`).join('');
  adm.result(`cron: rotated ${rotated.length ? rotated.join(', ') : 'nothing'}; deleted ${deleted} logfile(s); purged ${purged} old tombstone(s)${heldText}`,
    { rotated, rotationSkipped: skipped, deletedLogfiles: deleted, purgedTombstones: purged, heldBack: held });
}
