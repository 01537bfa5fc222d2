// The cluster's hosts as this tree knows them: every live ips/ip-HOST link (a tombstone there
// is a host that left or was removed).
import type { TreeStore } from '../tree/store.js';
import { globalPaths } from '../tree/paths.js';

export function clusterHosts(tree: TreeStore): string[] {
  return tree.list(globalPaths.ipsDir)
    .filter((n) => n.startsWith('ip-') && tree.value(`${globalPaths.ipsDir}/${n}`) !== undefined)
    .map((n) => n.slice(3));
}
