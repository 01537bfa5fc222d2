// Small helpers several commands share.
import type { Adm } from '../context.js';
import { listResources } from '../../daemon/control/snapshot.js';

/** Resources that exist (have a size link), sorted. */
export function listResourcesAnyState(adm: Adm): string[] {
  return listResources(adm.tree);
}

/** `NAME`, `all`, or `a,b,c` -> resource names. */
export function expandResources(adm: Adm, spec: string): string[] {
  if (spec === 'all') return listResourcesAnyState(adm);
  return spec.split(',').map((r) => adm.requireResource(r));
}
