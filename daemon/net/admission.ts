// Who may connect to this host's peer server, as what (docs/security.md, "Network"). Pure: the
// tree is read through a lookup. The handshake already proved that the peer knows the key of the
// host it claims to be (secret.hostKey); this decides whether that host is let in:
//   - a host that is joining (uuid ANY_UUID, marsadm join-cluster) is admitted for the join
//     requests only (service.ts restrictedRefusal): reading the tree and pushing its own ips/ip-HOST;
//   - a host removed from the cluster (ips/removed-HOST in force, removal.ts) may read the tree
//     only (getents), so that it learns of its removal and says so; nothing else is served;
//   - otherwise only members are admitted: hosts with a live ips/ip-HOST in this host's tree;
//   - nobody may claim to be this host.
import { ANY_UUID } from '../../common/cluster/secret.js';
import { clusterMarkerPath, markerInForce, removedBy, type LinkLookup } from '../../common/tree/removal.js';
import type { PeerAdmission } from './handshake.js';

export function decideAdmission(lookup: LinkLookup, ownHost: string, peerHost: string, peerUuid: string): PeerAdmission {
  if (peerHost === ownHost) return { refuse: `it claims to be this host (${ownHost})` };
  if (peerUuid === ANY_UUID) return { admit: 'joining' };
  const memberPath = `ips/ip-${peerHost}`;
  const marker = markerInForce(lookup, clusterMarkerPath(peerHost), memberPath);
  if (marker) return { admit: 'removed', detail: `${peerHost} was removed from the cluster by ${removedBy(marker)}` };
  const member = lookup(memberPath);
  if (member === undefined || member.deleted) return { refuse: `${peerHost} is not a member of the cluster (no ${memberPath} here); join it with marsadm join-cluster` };
  return { admit: 'member' };
}
