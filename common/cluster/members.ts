// The cluster's hosts as this tree knows them: every live ips/ip-HOST link (a tombstone there
// is a host that left or was removed).
import type { TreeStore } from '../tree/store.js';
import { globalPaths, resourceDir } from '../tree/paths.js';
import { isValidIdentifier } from '../tree/names.js';

export function clusterHosts(tree: TreeStore): string[] {
  return tree.list(globalPaths.ipsDir)
    .filter((n) => n.startsWith('ip-') && tree.value(`${globalPaths.ipsDir}/${n}`) !== undefined)
    .map((n) => n.slice(3));
}

/**
 * The members of a resource as this tree knows them: every live data-HOST link, sorted. A
 * tombstone there is a host that left (leave-resource) or was removed: no member.
 */
export function resourceMembers(tree: TreeStore, res: string): string[] {
  const dir = resourceDir(res);
  return tree.list(dir)
    .map((n) => /^data-(.+)$/.exec(n)?.[1])
    .filter((m): m is string => m !== undefined && isValidIdentifier(m) && tree.value(`${dir}/data-${m}`) !== undefined)
    .sort();
}
