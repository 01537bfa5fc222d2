// Who may write which link of the /mars tree (DESIGN.md §4, reference/mars.md §1.1): names
// ending in `-HOST` belong to HOST and only HOST writes them; a few links are shared
// (last writer by Lamport stamp wins). Tree propagation accepts an entry from a peer only if
// that peer may write it, so no member can overwrite another member's replay link, todo
// switches or status, however confused or malicious it is.
//
// Membership links (`ips/ip-HOST`) are shared, as in MARS (`lowlevel-set-host-ip`,
// `leave-cluster --host=dead`): a joining host learns every member's address from the one
// peer it joined through, and every pair of members then talks directly, so all owned links
// travel straight from their owner.
import { LOG_NAME, VERSION_NAME } from '../tree/paths.js';
import { isValidIdentifier } from '../tree/names.js';

export type Owner =
  | { kind: 'host'; host: string }
  | { kind: 'shared' }
  /** a logfile path: only its deletion (a tombstone) propagates, written by anybody (cron) */
  | { kind: 'log-deletion' }
  | { kind: 'local' };

const SHARED_ROOT = new Set(['uuid']);
const SHARED_RESOURCE = new Set(['size', 'primary', 'maxnr']);
/** per-resource links named `KEY-HOST` */
const OWNED_RESOURCE_PREFIXES = ['data-', 'device-', 'replay-', 'syncstatus-', 'syncpos-', 'actsize-', 'skip-check-', 'verifystatus-'];

function suffixHost(name: string, prefix: string): string | undefined {
  if (!name.startsWith(prefix)) return undefined;
  const host = name.slice(prefix.length);
  return isValidIdentifier(host) ? host : undefined;
}

/** The owner of a tree path (relative, already validated as 1-3 plain components). */
export function ownerOf(path: string): Owner {
  const parts = path.split('/');
  const [first, second, third] = parts;
  if (first === undefined) return { kind: 'local' };
  if (parts.length === 1) return SHARED_ROOT.has(first) ? { kind: 'shared' } : { kind: 'local' };
  if (first === 'ips' && parts.length === 2) return suffixHost(second!, 'ip-') ? { kind: 'shared' } : { kind: 'local' };
  for (const prefix of ['actual-', 'defaults-']) {
    const host = suffixHost(first, prefix);
    if (host && parts.length === 2) return { kind: 'host', host };
  }
  const res = suffixHost(first, 'resource-');
  if (!res) return { kind: 'local' };
  if (parts.length === 2) {
    const name = second!;
    if (SHARED_RESOURCE.has(name)) return { kind: 'shared' };
    if (LOG_NAME.test(name)) return { kind: 'log-deletion' };
    const v = VERSION_NAME.exec(name);
    if (v) return { kind: 'host', host: v[2]! };
    for (const prefix of OWNED_RESOURCE_PREFIXES) {
      const host = suffixHost(name, prefix);
      if (host) return { kind: 'host', host };
    }
    return { kind: 'local' };
  }
  if (parts.length === 3 && third !== undefined) {
    for (const prefix of ['todo-', 'actual-']) {
      const host = suffixHost(second!, prefix);
      if (host) return { kind: 'host', host };
    }
  }
  return { kind: 'local' };
}

export type Acceptance = { ok: true } | { ok: false; reason: string };

/**
 * May `sender` write `path` on `receiver`'s tree? Owned links only from their owner, never a
 * link the receiver owns; shared links from any member; log paths only as tombstones;
 * local-only names (userspace/, the secret, unknown names) never.
 */
export function mayWrite(path: string, value: string, sender: string, receiver: string, tombstone: string): Acceptance {
  const owner = ownerOf(path);
  switch (owner.kind) {
    case 'local':
      return { ok: false, reason: `${path} is not a replicated link` };
    case 'shared':
      return { ok: true };
    case 'log-deletion':
      return value === tombstone ? { ok: true } : { ok: false, reason: `${path} names a logfile; only its deletion propagates as a link` };
    case 'host':
      if (owner.host === receiver) return { ok: false, reason: `${path} belongs to this host (${receiver}); ${sender} may not write it` };
      if (owner.host !== sender) return { ok: false, reason: `${path} belongs to ${owner.host}; ${sender} may not write it` };
      return { ok: true };
  }
}
