// When may a tombstone be purged (physically unlinked)? Only when every cluster member has
// seen it: otherwise a member that still holds the deleted object keeps it forever (a logfile
// copy filling its /mars, a stale data-HOST making it believe a host is still a member), or
// hands it back to us (a shared link resurrected). docs/tree.md "Deletion".
//
// The rule works with pull-based propagation and needs no clock comparison between hosts or
// processes: every pull of a peer's tree returns the peer's complete listing (its links,
// tombstones included, even the ones we own, and its logfiles; a pull answered with a delta
// is first applied to the listing we hold, listing-delta.ts, which gives exactly the complete
// listing the peer would have sent at that moment). A peer P has seen our
// tombstone T at path p when a listing of P that we requested *after this daemon first saw T*
// shows, at p,
//   - no logfile, and
//   - no link, a tombstone, or a link newer than T (someone wrote p again after the deletion).
// "No link" is enough: P either never had the object or already purged its own tombstone
// (which it does only when everybody, including us, had it). P cannot get the old object back
// later: every other member is checked the same way, owned links travel only from their owner
// (who holds T), and a logfile is fetched only from the replica's replay position on, which is
// past every deleted logfile.
//
// That holds only if P merges no answer of ours built before T after it built the listing we
// judge. Pulls run on separate connections in each direction, so our answer to an older pull
// of P (built before T, showing the live link) can still be on its way to P while P answers
// our pull with "no link"; P then takes the old link after we purged T, and keeps it for good
// (docs/reliability.md "Found by the simulation", seed 21376). So a listing of P counts only
// if P's newest pull of *our* tree reached us after T was first seen here and before we
// requested that listing (PeerListing.peerPulledAtMs): a host pulls a peer one request at a
// time (PeerLink.pull merges an answer, or drops it with its connection, before it asks
// again, and a new connection's request comes after the old one's), so by then P is done
// with every answer of ours built before T, and the answer it waits for was built after T.
// Another member's old answer to P (a shared link) is covered by that member's own copy of
// T, which it keeps by the same rule until P is past it.
//
// Members are the hosts with a live ips/ip-HOST link; a host that left the cluster is not
// waited for. A member that never answers (or never pulls us) keeps our tombstones until
// `marsadm cron`'s fallback age (7 days) purges them. A tombstone is also kept for minAgeMs
// after we first saw it, so admins and scripts can see what was deleted.
//
// The times of the rule (when a listing was requested, when the peer's pull of us came in,
// when a tombstone was first seen) all come from the injected Clock's monotonic time (it never
// runs backwards, whatever the wall clock does).
import { linkSync, lstatSync, readlinkSync, renameSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { TreeStore } from '../../common/tree/store.js';
import { TOMBSTONE_VALUE, type TreeEntry } from './merge.js';
import { collectEntries } from './tree-io.js';
import type { LogFn } from '../../common/util/log.js';
import { systemClock, type Clock } from '../../common/util/clock.js';

/** What one pull of a peer returned, and when (Clock.monotonicMs) we asked. */
export interface PeerListing {
  requestedAtMs: number;
  /** path → value and stamp (a Map, or a lookup into the listing held by directory:
   *  incremental-merge.ts peerListingOfDirs, indexed only where a tombstone is asked about) */
  entries: { get(path: string): { v: string; s: number } | undefined };
  /** paths of the logfiles the peer holds: resource-RES/log-... */
  files: { has(path: string): boolean };
  /** when (Clock.monotonicMs) the peer's newest pull of our tree had reached us as we asked
   *  for this listing; undefined: it had not pulled us yet */
  peerPulledAtMs?: number | undefined;
}

export interface LocalTombstone {
  path: string;
  stampUs: number;
  /** when this daemon first saw it (Clock.monotonicMs) */
  firstSeenMs: number;
}

export interface PurgeInput {
  tombstones: readonly LocalTombstone[];
  /** cluster members other than this host */
  members: readonly string[];
  /** the newest listing of each member, if any */
  listings: ReadonlyMap<string, PeerListing | undefined>;
  nowMs: number;
  minAgeMs: number;
}

export interface PurgeDecision {
  purge: string[];
  /** tombstones kept, with the members that have not confirmed them yet */
  waiting: { path: string; members: string[] }[];
}

/** When each tombstone was first seen here, kept across scans: updated with the tombstones
 *  of this scan (path -> stamp); a tombstone rewritten with a new stamp (deleted again) counts
 *  as new, and the ones gone are forgotten. Returns this scan's tombstones with their times. */
export function trackFirstSeen(firstSeen: Map<string, { stampUs: number; seenMs: number }>, current: ReadonlyMap<string, number>, nowMs: number): LocalTombstone[] {
  const tombstones: LocalTombstone[] = [];
  for (const [path, stampUs] of current) {
    let seen = firstSeen.get(path);
    if (!seen || seen.stampUs !== stampUs) firstSeen.set(path, (seen = { stampUs, seenMs: nowMs }));
    tombstones.push({ path, stampUs, firstSeenMs: seen.seenMs });
  }
  for (const path of firstSeen.keys()) if (!current.has(path)) firstSeen.delete(path);
  return tombstones;
}

export function peerHasSeen(t: LocalTombstone, listing: PeerListing | undefined): boolean {
  if (!listing || listing.requestedAtMs <= t.firstSeenMs) return false;
  // The peer may still merge an answer of ours built before t (see the top of this file).
  if (listing.peerPulledAtMs === undefined || listing.peerPulledAtMs <= t.firstSeenMs) return false;
  if (listing.files.has(t.path)) return false;
  const e = listing.entries.get(t.path);
  return e === undefined || e.v === TOMBSTONE_VALUE || e.s > t.stampUs;
}

export function decideTombstonePurge(i: PurgeInput): PurgeDecision {
  const d: PurgeDecision = { purge: [], waiting: [] };
  for (const t of i.tombstones) {
    if (i.nowMs - t.firstSeenMs < i.minAgeMs) continue;
    const missing = i.members.filter((m) => !peerHasSeen(t, i.listings.get(m)));
    if (missing.length === 0) d.purge.push(t.path);
    else d.waiting.push({ path: t.path, members: missing });
  }
  return d;
}

/** A PeerListing held as a whole (an older peer's listing, the simulation): Map and Set. */
export interface FlatPeerListing extends PeerListing {
  entries: ReadonlyMap<string, { v: string; s: number }>;
  files: ReadonlySet<string>;
}

export function listingOf(requestedAtMs: number, entries: readonly TreeEntry[], logs: readonly { res: string; name: string }[], peerPulledAtMs?: number): FlatPeerListing {
  return {
    requestedAtMs,
    peerPulledAtMs,
    entries: new Map(entries.map((e) => [e.p, { v: e.v, s: e.s }])),
    files: new Set(logs.map((l) => `resource-${l.res}/${l.name}`)),
  };
}

/**
 * How often the daemon scans its tree for tombstones. A scan lists every link of the tree
 * (issue 11: once a second it was a twentieth of an idle daemon's time at 100 resources); a
 * tombstone waits minAgeMs before its purge anyway, so a scan every sixth of that, between 1
 * and 10 s, delays a purge by at most a sixth.
 */
export function tombstoneScanIntervalMs(minAgeMs: number): number {
  return Math.min(10_000, Math.max(1_000, Math.floor(minAgeMs / 6)));
}

/** The I/O side: remembers when each tombstone was first seen and purges the confirmed ones. */
export class TombstoneKeeper {
  private readonly firstSeen = new Map<string, { stampUs: number; seenMs: number }>();
  private lastRunMs = -Infinity;
  private readonly clock: Clock;
  waiting: PurgeDecision['waiting'] = [];

  constructor(private readonly o: {
    tree: TreeStore;
    minAgeMs: number;
    /** at most one scan per this many ms */
    intervalMs: number;
    members: () => string[];
    listing: (member: string) => PeerListing | undefined;
    log: LogFn;
    /** the PeerManager's clock: listings and tombstones are timed alike (default: the system clock) */
    clock?: Clock;
  }) {
    this.clock = o.clock ?? systemClock;
  }

  /** Scan and purge, unless the last scan was less than intervalMs ago. Returns the purged paths. */
  run(nowMs = this.clock.monotonicMs()): string[] {
    if (nowMs - this.lastRunMs < this.o.intervalMs) return [];
    this.lastRunMs = nowMs;
    const { tree } = this.o;
    const { entries } = collectEntries(tree); // links only: no logfile is stat'ed
    const current = new Map<string, number>();
    for (const e of entries) if (e.v === TOMBSTONE_VALUE) current.set(e.p, e.s);
    const tombstones = trackFirstSeen(this.firstSeen, current, nowMs);
    const members = this.o.members();
    const listings = new Map(members.map((m) => [m, this.o.listing(m)]));
    const decision = decideTombstonePurge({ tombstones, members, listings, nowMs, minAgeMs: this.o.minAgeMs });
    this.waiting = decision.waiting;
    const purged: string[] = [];
    for (const path of decision.purge) {
      if (purgeIfUnchanged(tree, path, current.get(path)!)) purged.push(path);
      this.firstSeen.delete(path);
    }
    if (purged.length > 0) this.o.log('info', `purged ${purged.length} tombstone(s) every member has seen${purged.length <= 3 ? `: ${purged.join(', ')}` : ''}`);
    return purged;
  }
}

/**
 * Unlink the tombstone at `path` only if it is still the one we judged (same stamp): marsadm
 * may write the path concurrently. The link is first renamed aside (atomic), checked, and put
 * back with link() if it changed, which fails harmlessly when a newer write took the name.
 */
export function purgeIfUnchanged(tree: TreeStore, path: string, stampUs: number): boolean {
  const abs = tree.abs(path);
  const aside = join(dirname(abs), `.tmp.purge.${process.pid}.${randomBytes(4).toString('hex')}`);
  try {
    renameSync(abs, aside);
  } catch {
    return false; // gone already
  }
  let ours = false;
  try {
    const st = lstatSync(aside, { bigint: true });
    ours = st.isSymbolicLink() && readlinkSync(aside) === TOMBSTONE_VALUE && Number((st.mtimeNs + 500n) / 1000n) === stampUs;
  } catch { /* vanished */ }
  if (!ours) {
    try { linkSync(aside, abs); } catch { /* a newer write took the name: it wins */ }
  }
  try { unlinkSync(aside); } catch { /* gone */ }
  return ours;
}
