// When a merge brings a removal marker into force here (common/tree/removal.ts), the removed
// host's links that reached this host before the marker did are deleted here too.
//
// Why (docs/reliability.md, "Found by the simulation"): a zombie writes a link after its
// removal; a survivor that has not learned the marker yet takes it. The remover's tombstones
// are older than that link, and once the marker is here nothing newer from the zombie is
// accepted, so without this step the survivor would keep the link for good and the members'
// trees would never agree. The same race leaves `primary` naming the removed host on the
// survivors that took a forced failover to it before they learned of the removal.
//
// The deletions are deterministic: a link is replaced by a tombstone (`primary` by NO_PRIMARY)
// stamped one microsecond after the value it replaces, so every survivor that held the same
// value writes the same entry and the trees converge without another round of writes.
// Versionlinks stay: they describe logfiles other members may still replay (their deletion
// keeps the log-delete rule, as in removalVerdict).
import { ownerOf } from '../../common/tree/ownership.js';
import { markerInForce, type LinkLookup } from '../../common/tree/removal.js';
import { VERSION_NAME } from '../../common/tree/log-names.js';
import { NO_PRIMARY } from './link-rules.js';

interface Entry {
  p: string;
  v: string;
  s: number;
}

/**
 * The live links this host holds that belong to `host` or name it as `primary`, in `resDir`
 * only when given (a resource marker), else anywhere (a cluster marker). Other links may come
 * along: they are filtered here.
 */
export type LinksOfHost = (host: string, resDir: string | undefined) => readonly Entry[];

const PRIMARY_PATH = /^(resource-[^/]+)\/primary$/;

/** The removed host and the scope of a live marker write; undefined for any other entry. */
function markerOf(e: Entry, tombstone: string): { host: string; resDir: string | undefined; memberPath: string } | undefined {
  const owner = ownerOf(e.p);
  if (owner.kind !== 'removal' || e.v === tombstone) return undefined;
  const resDir = e.p.startsWith('ips/') ? undefined : e.p.split('/')[0]!;
  return { host: owner.host, resDir, memberPath: resDir === undefined ? `ips/ip-${owner.host}` : `${resDir}/data-${owner.host}` };
}

function inScope(path: string, resDir: string | undefined): boolean {
  return resDir === undefined || path.startsWith(`${resDir}/`);
}

/** What replaces `e` once `host` is removed, or undefined when it stays. */
function deletionOf(e: Entry, host: string, tombstone: string): Entry | undefined {
  if (e.v === tombstone) return undefined;
  if (PRIMARY_PATH.test(e.p)) return e.v === host ? { p: e.p, v: NO_PRIMARY, s: e.s + 1 } : undefined;
  const owner = ownerOf(e.p);
  if (owner.kind !== 'host' || owner.host !== host) return undefined;
  if (VERSION_NAME.test(e.p.split('/')[1] ?? '')) return undefined;
  return { p: e.p, v: tombstone, s: e.s + 1 };
}

/**
 * The merge's writes with the removed hosts' links dropped or deleted: `writes` are the
 * entries the merge will write on `receiver`, `lookup` reads its tree as it is before them.
 */
export function withRemovedLinksDeleted<W extends Entry>(writes: readonly W[], receiver: string, lookup: LinkLookup, linksOf: LinksOfHost, tombstone: string,
  asWrite: (e: Entry) => W): W[] {
  const byPath = new Map(writes.map((w) => [w.p, w]));
  const after: LinkLookup = (path) => {
    const w = byPath.get(path);
    return w ? { value: w.v, stampUs: w.s, deleted: w.v === tombstone } : lookup(path);
  };
  const out = new Map<string, W>(byPath);
  for (const w of writes) {
    const m = markerOf(w, tombstone);
    // The removed host itself keeps its links: it stops on its own (a zombie is told so).
    if (!m || m.host === receiver || !markerInForce(after, w.p, m.memberPath)) continue;
    const local = linksOf(m.host, m.resDir).filter((e) => !byPath.has(e.p));
    for (const e of [...local, ...writes.filter((x) => inScope(x.p, m.resDir))]) {
      // The newest value: this batch's (always newer than the local one) or the local one.
      const d = deletionOf(byPath.get(e.p) ?? e, m.host, tombstone);
      if (!d) continue;
      const held = lookup(e.p);
      // A link only this batch brings is not written at all; one held here is replaced.
      if (d.v === tombstone && (held === undefined || held.deleted)) out.delete(e.p);
      else out.set(e.p, asWrite(d));
    }
  }
  return [...out.values()];
}
