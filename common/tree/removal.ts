// Removal markers (docs/tree.md, "Removing a dead host"): the one narrow exception to "only a
// link's owner writes it". A survivor that removes a dead host writes a shared marker
// (`ips/removed-HOST` for the cluster, `resource-RES/removed-HOST` for one resource, value
// `by SURVIVOR`) and then tombstones the dead host's links. Every host honours the marker while
// it is in force:
//   - tombstones of the removed host's links are accepted from any authenticated member (so the
//     removal reaches every survivor although the owner can never confirm it);
//   - nothing else of the removed host is accepted, from anybody, not even from the host
//     itself (a zombie restarting on its old /mars changes nothing anywhere);
//   - a host removed from the cluster is not listened to at all.
// A marker is in force while the host's membership link (`ips/ip-HOST`, `resource-RES/data-HOST`)
// is absent, a tombstone, or older than the marker. Rejoining (join-cluster, join-resource)
// writes a fresh membership link, which ends the marker's force without anybody deleting it.
// The removed host itself can neither write nor delete a marker naming it.
import { validHost } from './names.js';

export const REMOVED_PREFIX = 'removed-';

export interface StampedValue {
  value: string;
  stampUs: number;
}

/** A link's value and stamp as stored, tombstones included (`deleted`); undefined: absent. */
export type LinkLookup = (path: string) => (StampedValue & { deleted: boolean }) | undefined;

export function clusterMarkerPath(host: string): string {
  return `ips/${REMOVED_PREFIX}${validHost(host)}`;
}

export function resourceMarkerPath(resDir: string, host: string): string {
  return `${resDir}/${REMOVED_PREFIX}${validHost(host)}`;
}

/**
 * Is the marker at `markerPath` in force against the membership link at `memberPath`?
 * `newer(path, stampUs)`: a link at `path` newer than `stampUs` arrives in the same batch (a
 * rejoin whose membership link comes together with its other links).
 */
export function markerInForce(lookup: LinkLookup, markerPath: string, memberPath: string, newer?: (path: string, stampUs: number) => boolean): StampedValue | undefined {
  const marker = lookup(markerPath);
  if (marker === undefined || marker.deleted) return undefined;
  const member = lookup(memberPath);
  if (member !== undefined && !member.deleted && member.stampUs > marker.stampUs) return undefined;
  if (newer?.(memberPath, marker.stampUs)) return undefined;
  return marker;
}

/** The survivor named in a marker's value (`by HOST`), for messages. */
export function removedBy(marker: StampedValue): string {
  return /^by (\S+)$/.exec(marker.value)?.[1] ?? 'another member';
}
