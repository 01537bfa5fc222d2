// Acting for a dead host (the MARS user manual: dead node removal): `marsadm --host DEAD down |
// leave-resource | leave-cluster --force` and `lowlevel-delete-host DEAD`, run on a survivor.
// The survivor writes a removal marker and tombstones DEAD's links; every host honours the
// marker (common/tree/removal.ts, docs/tree.md), so the removal reaches every survivor although
// DEAD can never confirm it, and nothing DEAD sends later is accepted.
import { AdmError, type Adm } from '../context.js';
import type { TreeStore } from '../../common/tree/store.js';
import { globalPaths, localPaths, resPaths, resourceDir } from '../../common/tree/paths.js';
import { LOG_NAME, VERSION_NAME } from '../../common/tree/log-names.js';
import { ownerOf } from '../../common/tree/ownership.js';
import { listResources } from '../../common/resource/snapshot.js';
import { validHost } from '../../common/tree/names.js';

/** Heartbeat age of a host in seconds (actual-HOST/time, written by its marsd every round); undefined: never seen. */
export function heartbeatAgeS(tree: TreeStore, host: string): number | undefined {
  const t = tree.read(globalPaths.actual(host, 'time'));
  return t === undefined ? undefined : Math.max(0, (tree.clock.now() - t.stampUs) / 1e6);
}

/** Alive: a heartbeat of its marsd arrived within the window. */
export function isAlive(tree: TreeStore, host: string, windowS: number): boolean {
  const age = heartbeatAgeS(tree, host);
  return age !== undefined && age <= windowS;
}

/** The host this /mars belongs to, when it is recorded (userspace/host). */
export function localHost(adm: Adm): string | undefined {
  return adm.tree.value(localPaths.host);
}

/** `--host OTHER` on this host's /mars: acting for another (dead) host. */
export function actingForOther(adm: Adm): boolean {
  const local = localHost(adm);
  return local !== undefined && local !== adm.host;
}

/** Refused unless DEAD is another host, without a heartbeat within --window, and --force is given. */
export function requireDead(adm: Adm, dead: string, what: string, needForce = true): void {
  const local = localHost(adm) ?? '(unknown)';
  if (dead === local) throw new AdmError(`${what}: ${dead} is this host; run the command without --host (or on a survivor for a dead host). Nothing was changed`);
  const age = heartbeatAgeS(adm.tree, dead);
  if (age !== undefined && age <= adm.windowS) {
    throw new AdmError(`${what}: ${dead} is alive (its heartbeat is ${age.toFixed(1)} s old, within --window ${adm.windowS} s): `
      + `run the command on ${dead} itself. A host is treated as dead only when nothing was heard of it for --window seconds. Nothing was changed`);
  }
  if (needForce && !adm.force) throw new AdmError(`${what}: acting for ${dead}, which is not connected, needs --force (read "Removing a dead host" in the manual). Nothing was changed`);
}

/** Refused while DEAD is the designated primary of res: fail over first. */
export function requireNotPrimary(adm: Adm, res: string, dead: string): void {
  if (adm.tree.value(resPaths.primary(res)) === dead) {
    throw new AdmError(`${dead} is still the designated primary of ${res}: fail over first ("marsadm primary --force ${res}" on the survivor that should take over). Nothing was changed`);
  }
}

/**
 * Removes `dead` from res on this survivor: the marker first, then tombstones of its links.
 * Its versionlinks stay: they describe logfiles other members may still replay, and log-delete
 * removes them in time.
 */
export function removeFromResource(adm: Adm, res: string, dead: string): number {
  const { tree } = adm;
  const dir = resourceDir(res);
  tree.write(resPaths.removed(res, dead), `by ${localHost(adm) ?? adm.host}`, { durable: true });
  let removed = 0;
  for (const n of tree.list(dir)) {
    const path = `${dir}/${n}`;
    if (n === `todo-${dead}` || n === `actual-${dead}`) {
      for (const k of tree.list(path)) if (tree.remove(`${path}/${k}`)) removed++;
      continue;
    }
    if (VERSION_NAME.test(n) || LOG_NAME.test(n)) continue;
    const owner = ownerOf(path);
    if (owner.kind === 'host' && owner.host === dead && tree.remove(path)) removed++;
  }
  tree.fsyncDir(dir);
  return removed;
}

/** Resources where `host` still has links (data, replay, ...). */
export function resourcesOf(tree: TreeStore, host: string): string[] {
  return listResources(tree).filter((r) => tree.value(resPaths.data(r, host)) !== undefined || tree.value(resPaths.replay(r, host)) !== undefined);
}

/** Removes `dead` from the cluster on this survivor: every resource, its ips/ link, its global status. */
export function removeFromCluster(adm: Adm, dead: string): { resources: string[]; links: number } {
  const { tree } = adm;
  const resources = resourcesOf(tree, dead);
  let links = 0;
  for (const res of resources) links += removeFromResource(adm, res, dead);
  tree.write(globalPaths.removed(dead), `by ${localHost(adm) ?? adm.host}`, { durable: true });
  if (tree.remove(globalPaths.ip(dead), { durable: true })) links++;
  for (const dir of [globalPaths.actualDir(dead), globalPaths.defaultsDir(dead)]) {
    for (const k of tree.list(dir)) if (tree.remove(`${dir}/${k}`)) links++;
  }
  tree.fsyncDir('');
  return { resources, links };
}

/** lowlevel-delete-host DEAD: DEAD is gone from ips/ and from every resource. */
export function lowlevelDeleteHost(adm: Adm, name: string): void {
  adm.requireCluster();
  const dead = validHost(name);
  const what = `cannot delete host ${dead}`;
  if (dead === adm.host) throw new AdmError(`${what}: ${dead} is this host; run it on a survivor. Nothing was changed`);
  if (adm.tree.read(globalPaths.ip(dead)) === undefined && resourcesOf(adm.tree, dead).length === 0) {
    throw new AdmError(`${what}: no such host in this cluster (no ips/ip-${dead}, member of no resource)`);
  }
  requireDead(adm, dead, what, false);
  for (const res of listResources(adm.tree)) requireNotPrimary(adm, res, dead);
  const { resources, links } = removeFromCluster(adm, dead);
  adm.trigger();
  adm.result(`${dead} deleted from the cluster${resources.length > 0 ? ` and from ${resources.join(', ')}` : ''} (${links} links tombstoned); `
    + `the other members follow once they see the removal marker. Never start marsd on ${dead}'s old /mars again; to bring it back, join it anew`, { host: dead, resources, removedLinks: links });
}

/** `--host DEAD down NAME --force`: record DEAD's switches off here, without waiting for a detach that cannot happen. */
export function downFor(adm: Adm, res: string): void {
  requireDead(adm, adm.host, `cannot switch ${res} down for ${adm.host}`);
  for (const key of ['allow-replay', 'sync', 'connect', 'attach'] as const) adm.tree.write(resPaths.todo(res, adm.host, key), '0', { onlyIfChanged: true });
  adm.result(`${res}: switches of ${adm.host} recorded off here (${adm.host} is not connected, so nothing is waited for); next: "marsadm --host ${adm.host} leave-resource ${res} --force"`,
    { resource: res, host: adm.host, down: true, waited: false });
}

/** `--host DEAD leave-resource NAME --force`: remove DEAD from res on this survivor. */
export function leaveResourceFor(adm: Adm, res: string): void {
  const dead = adm.host;
  requireDead(adm, dead, `cannot remove ${dead} from ${res}`);
  requireNotPrimary(adm, res, dead);
  const removed = removeFromResource(adm, res, dead);
  adm.trigger();
  adm.result(`${dead} removed from ${res} by ${localHost(adm)} (${removed} links tombstoned; every member honours the marker removed-${dead}); `
    + 'log-delete no longer waits for it', { resource: res, host: dead, removedLinks: removed, forced: true });
}

/** `--host DEAD leave-cluster --force`: DEAD leaves every resource and the cluster. */
export function leaveClusterFor(adm: Adm): void {
  const dead = adm.host;
  requireDead(adm, dead, `cannot remove ${dead} from the cluster`);
  for (const res of listResources(adm.tree)) requireNotPrimary(adm, res, dead);
  const { resources, links } = removeFromCluster(adm, dead);
  adm.trigger();
  adm.result(`${dead} removed from the cluster${resources.length > 0 ? ` and from ${resources.join(', ')}` : ''} (${links} links tombstoned)`, { host: dead, resources, removedLinks: links, left: true });
}
