// Small helpers several commands share.
import type { Adm } from '../context.js';
import { listResources } from '../../daemon/control/snapshot.js';

/** `NAME`, `all`, or `a,b,c` -> resource names. */
export function expandResources(adm: Adm, spec: string): string[] {
  if (spec === 'all') return listResources(adm.tree);
  return spec.split(',').map((r) => adm.requireResource(r));
}
