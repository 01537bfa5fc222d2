// Who may write which link of the /mars tree (docs/design.md §4; the MARS user manual: /mars naming): names
// ending in `-HOST` belong to HOST and only HOST writes them; a few links are shared
// (last writer by Lamport stamp wins). Tree propagation accepts an entry from a peer only if
// that peer may write it, so no member can overwrite another member's replay link, todo
// switches or status, however confused or malicious it is.
//
// Membership links (`ips/ip-HOST`) are shared, as in MARS (`lowlevel-set-host-ip`,
// `leave-cluster --host=dead`): a joining host learns every member's address from the one
// peer it joined through, and every pair of members then talks directly, so all owned links
// travel straight from their owner.
import { LOG_NAME, VERSION_NAME } from './log-names.js';
import { isValidIdentifier } from './names.js';
import { clusterMarkerPath, markerInForce, removedBy, REMOVED_PREFIX, resourceMarkerPath, type LinkLookup } from './removal.js';

export type Owner =
  | { kind: 'host'; host: string }
  | { kind: 'shared' }
  /** a logfile path: only its deletion (a tombstone) propagates, written by anybody (cron) */
  | { kind: 'log-deletion' }
  /** a removal marker naming HOST (removal.ts): any member but HOST writes it */
  | { kind: 'removal'; host: string }
  | { kind: 'local' };

const SHARED_ROOT = new Set(['uuid']);
const SHARED_RESOURCE = new Set(['size', 'primary', 'maxnr']);
/** per-resource links named `KEY-HOST` (others, e.g. `content-mismatch-HOST`, are local: never propagated) */
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
  if (first === 'ips' && parts.length === 2) {
    const removed = suffixHost(second!, REMOVED_PREFIX);
    if (removed) return { kind: 'removal', host: removed };
    return suffixHost(second!, 'ip-') ? { kind: 'shared' } : { kind: 'local' };
  }
  for (const prefix of ['actual-', 'defaults-']) {
    const host = suffixHost(first, prefix);
    if (host && parts.length === 2) return { kind: 'host', host };
  }
  const res = suffixHost(first, 'resource-');
  if (!res) return { kind: 'local' };
  if (parts.length === 2) {
    const name = second!;
    if (SHARED_RESOURCE.has(name)) return { kind: 'shared' };
    const removed = suffixHost(name, REMOVED_PREFIX);
    if (removed) return { kind: 'removal', host: removed };
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

export type Acceptance = { ok: true } | { ok: false; reason: string; quiet?: boolean };

/** `resource-RES/version-SEQ-HOST` or `resource-RES/log-SEQ-ORIGIN` → its resource and number. */
function numberedOf(path: string, pattern: RegExp): { res: string; seq: number } | undefined {
  const parts = path.split('/');
  if (parts.length !== 2) return undefined;
  const res = suffixHost(parts[0]!, 'resource-');
  const v = pattern.exec(parts[1]!);
  return res && v ? { res, seq: Number(v[1]) } : undefined;
}

/**
 * May `sender` write `path` on `receiver`'s tree? Owned links only from their owner, never a
 * link the receiver owns; shared links from any member; log paths only as tombstones;
 * local-only names (userspace/, the secret, unknown names) never.
 *
 * `replayFloor(res)` is the logfile number the receiver replays (or writes back) in res:
 * Infinity when it has no replay link there, -Infinity when that link is unparsable. With it,
 * - a logfile's deletion is refused for a logfile the receiver still needs (numbered at or
 *   above its replay logfile): whatever a confused peer decided, a host never loses a logfile
 *   it is reading;
 * - as in MARS (tombstones are written by anybody, e.g. cron), the deletion of a versionlink
 *   is accepted from any member when its number lies below the receiver's replay logfile minus
 *   one, so one `log-delete` cleans the old versionlinks of every host everywhere, and no host
 *   loses a versionlink its own chain check needs. Without replayFloor it is not accepted.
 *
 * A peer's listing also carries the receiver's own links (so the receiver can tell whether the
 * peer has seen its tombstones): those are refused quietly.
 */
export function mayWrite(path: string, value: string, sender: string, receiver: string, tombstone: string, replayFloor?: (res: string) => number): Acceptance {
  const owner = ownerOf(path);
  switch (owner.kind) {
    case 'local':
      return { ok: false, reason: `${path} is not a replicated link` };
    case 'shared':
      return { ok: true };
    case 'removal':
      // A removed host must not undo its own removal; it rejoins with a fresh membership link.
      if (owner.host === sender) return { ok: false, reason: `${path} is the removal marker of ${sender}; ${sender} may not write it` };
      return { ok: true };
    case 'log-deletion': {
      if (value !== tombstone) return { ok: false, reason: `${path} names a logfile; only its deletion propagates as a link` };
      const l = replayFloor ? numberedOf(path, LOG_NAME) : undefined;
      if (l && !(l.seq < replayFloor!(l.res))) return { ok: false, reason: `${receiver} still needs ${path} (it replays from logfile ${replayFloor!(l.res)}); refusing its deletion` };
      return { ok: true };
    }
    case 'host': {
      if (value === tombstone && owner.host !== sender && replayFloor) {
        const v = numberedOf(path, VERSION_NAME);
        if (v && v.seq < replayFloor(v.res) - 1) return { ok: true };
      }
      if (owner.host === receiver) return { ok: false, reason: `${path} belongs to this host (${receiver}); ${sender} may not write it`, quiet: true };
      // A third host's links come along in every listing (the purge of tombstones compares
      // whole listings); they travel from their owner, so refusing them here is routine.
      if (owner.host !== sender) return { ok: false, reason: `${path} belongs to ${owner.host}; ${sender} may not write it`, quiet: true };
      return { ok: true };
    }
  }
}

/**
 * The removal rule (removal.ts) for one entry: a verdict that overrides mayWrite, or undefined
 * when no removal marker concerns it. `lookup` reads the receiver's tree; `newer(path, stampUs)`
 * says whether the same batch carries a link at path newer than stampUs (a rejoin).
 */
export function removalVerdict(path: string, value: string, sender: string, receiver: string, tombstone: string, lookup: LinkLookup,
  newer: (path: string, stampUs: number) => boolean): Acceptance | undefined {
  const senderOut = markerInForce(lookup, clusterMarkerPath(sender), `ips/ip-${sender}`, newer);
  // A rejoin's fresh membership link (newer than the marker, in this batch) ends the marker's
  // force above; a membership link still in force here is the zombie's old one, stamped before
  // its removal: taking it for a rejoin would bring it back once its tombstone is purged.
  if (senderOut) return { ok: false, reason: `${sender} was removed from the cluster by ${removedBy(senderOut)}; nothing it sends is accepted until it rejoins (join-cluster)`, quiet: true };
  const parts = path.split('/');
  const resDir = parts.length >= 2 && parts[0]!.startsWith('resource-') ? parts[0]! : undefined;
  const senderOutOfRes = resDir ? markerInForce(lookup, resourceMarkerPath(resDir, sender), `${resDir}/data-${sender}`, newer) : undefined;
  if (senderOutOfRes) return { ok: false, reason: `${sender} was removed from ${resDir} by ${removedBy(senderOutOfRes)}; nothing it sends there is accepted until it rejoins`, quiet: true };
  const owner = ownerOf(path);
  if (owner.kind !== 'host' || owner.host === receiver) return undefined;
  const marker = markerInForce(lookup, clusterMarkerPath(owner.host), `ips/ip-${owner.host}`, newer)
    ?? (resDir ? markerInForce(lookup, resourceMarkerPath(resDir, owner.host), `${resDir}/data-${owner.host}`, newer) : undefined);
  if (!marker) return undefined;
  // Versionlinks describe logfiles other members may still replay: their deletion keeps the
  // log-delete rule (mayWrite's replayFloor).
  if (value === tombstone) return VERSION_NAME.test(parts[1] ?? '') ? undefined : { ok: true };
  return { ok: false, reason: `${path}: ${owner.host} was removed by ${removedBy(marker)}; only the deletion of its links is accepted`, quiet: true };
}
