// One simulated host: its tree (link path → value and Lamport stamp, logfiles as a set of
// paths), its Lamport clock on the simulated time plus its own clock skew, and the real pure
// deciders of marsd's propagation: planMerge (daemon/propagate/merge.ts, with the ownership,
// removal and value rules it applies) for every pulled listing, and decideTombstonePurge
// (daemon/propagate/tombstones.ts) for the purge. What marsd's shells do with the plans (write
// the links, unlink a logfile, observe the stamps) is done here on the in-memory tree.
import { LamportClock } from '../../common/tree/lamport.js';
import { LOG_NAME, VERSION_NAME } from '../../common/tree/log-names.js';
import { parseReplayLink } from '../../common/log/links.js';
import { planMerge, TOMBSTONE_VALUE, type LocalState, type MergePlan, type TreeEntry } from '../../daemon/propagate/merge.js';
import { decideTombstonePurge, listingOf, trackFirstSeen, type FlatPeerListing } from '../../daemon/propagate/tombstones.js';

export interface Stamped {
  v: string;
  s: number;
}

export interface Listing {
  entries: TreeEntry[];
  logs: { res: string; name: string }[];
}

/** What the world checks while a host changes (invariants.ts). */
export interface HostObserver {
  beforeApply(host: SimHost, sender: string, plan: MergePlan): void;
  afterWrite(host: SimHost, path: string, before: Stamped | undefined, after: Stamped): void;
}

export class SimHost {
  readonly tree = new Map<string, Stamped>();
  readonly files = new Set<string>();
  readonly lamport: LamportClock;
  /** the newest listing of each peer and when (this host's monotonic ms) it was requested */
  readonly listings = new Map<string, FlatPeerListing>();
  /** the pull in flight to each peer (one per connection, as PeerLink.pull) */
  readonly inFlight = new Map<string, number>();
  /** peer → when its newest pull of this host's tree reached it (PeerManager.notePulledBy) */
  readonly pulledBy = new Map<string, number>();
  private readonly firstSeen = new Map<string, { stampUs: number; seenMs: number }>();
  merges = 0;
  refused = 0;
  purged = 0;

  constructor(readonly name: string, private readonly nowMs: () => number, skewUs: number, private readonly observer: HostObserver) {
    this.lamport = new LamportClock(() => this.nowMs() * 1000 + skewUs);
  }

  /** The live value at path (undefined: absent or a tombstone). */
  value(path: string): string | undefined {
    const e = this.tree.get(path);
    return e === undefined || e.v === TOMBSTONE_VALUE ? undefined : e.v;
  }

  /** A local write (marsadm or a runner of this host): a fresh Lamport stamp. */
  write(path: string, v: string): void {
    this.set(path, { v, s: this.lamport.tick() });
  }

  private set(path: string, e: Stamped): void {
    const before = this.tree.get(path);
    this.tree.set(path, e);
    this.observer.afterWrite(this, path, before, e);
  }

  /** A logfile created here (a primary's new logfile, or a fetched copy). */
  addFile(path: string): void {
    this.files.add(path);
  }

  /** Deleting a logfile: the file goes and its tombstone propagates (marsadm log-delete). */
  deleteLog(path: string): void {
    this.files.delete(path);
    this.write(path, TOMBSTONE_VALUE);
  }

  listing(): Listing {
    const entries = [...this.tree].map(([p, e]) => ({ p, v: e.v, s: e.s }));
    const logs = [...this.files].map((f) => {
      const [dir, name] = f.split('/');
      return { res: dir!.slice('resource-'.length), name: name! };
    });
    return { entries, logs };
  }

  private localState(path: string): LocalState {
    if (this.files.has(path)) return { kind: 'file' };
    const e = this.tree.get(path);
    if (e === undefined) return { kind: 'absent' };
    this.lamport.observe(e.s);
    return { kind: 'link', value: e.v, stampUs: e.s };
  }

  /** The logfile number this host replays in res (peer-manager.ts replayFloor). */
  replayFloor(res: string): number {
    const v = this.value(`resource-${res}/replay-${this.name}`);
    if (v === undefined) return Infinity;
    return parseReplayLink(v)?.seq ?? -Infinity;
  }

  private knownSeqs(res: string): { seq: number; host: string }[] {
    const out: { seq: number; host: string }[] = [];
    const prefix = `resource-${res}/`;
    for (const p of [...this.files, ...this.tree.keys()]) {
      if (!p.startsWith(prefix)) continue;
      const m = LOG_NAME.exec(p.slice(prefix.length)) ?? VERSION_NAME.exec(p.slice(prefix.length));
      if (m) out.push({ seq: Number(m[1]), host: m[2]! });
    }
    return out;
  }

  private resourceDirs(): Set<string> {
    const dirs = new Set<string>();
    for (const p of [...this.tree.keys(), ...this.files]) {
      if (p.startsWith('resource-') && p.includes('/')) dirs.add(p.split('/')[0]!.slice('resource-'.length));
    }
    return dirs;
  }

  /** A pulled listing of `sender`, requested at requestedAtMs (when sender's newest pull of us
   *  had reached us at peerPulledAtMs): plan the merge, check it, apply it. */
  merge(sender: string, l: Listing, requestedAtMs: number, peerPulledAtMs?: number): number {
    const dirs = this.resourceDirs();
    const plan = planMerge(l.entries, (p) => this.localState(p), {
      sender, receiver: this.name, nowUs: this.lamport.realNowUs(),
      facts: { knownSeqs: (res) => this.knownSeqs(res), resources: { exists: (res) => dirs.has(res), count: dirs.size } },
      replayFloor: (res) => this.replayFloor(res),
      linksOf: (_host, resDir) => [...this.tree].filter(([p, e]) => e.v !== TOMBSTONE_VALUE && (resDir === undefined || p.startsWith(`${resDir}/`))).map(([p, e]) => ({ p, v: e.v, s: e.s })),
    });
    this.observer.beforeApply(this, sender, plan);
    for (const w of plan.writes) {
      if (w.replaceFile) this.files.delete(w.p);
      this.lamport.observe(w.s);
      this.set(w.p, { v: w.v, s: w.s });
    }
    this.merges++;
    this.refused += plan.rejected.length;
    this.listings.set(sender, listingOf(requestedAtMs, l.entries, l.logs, peerPulledAtMs));
    return plan.writes.length;
  }

  /** Members other than this host: live ips/ip-HOST links (as TombstoneKeeper's members()). */
  members(): string[] {
    const out: string[] = [];
    for (const [p, e] of this.tree) {
      const m = /^ips\/ip-(.+)$/.exec(p);
      if (m && e.v !== TOMBSTONE_VALUE && m[1] !== this.name) out.push(m[1]!);
    }
    return out.sort();
  }

  /** One scan of the tombstone keeper: purge what every member has seen. */
  purge(minAgeMs: number): string[] {
    const nowMs = this.nowMs();
    const current = new Map<string, number>();
    for (const [p, e] of this.tree) if (e.v === TOMBSTONE_VALUE) current.set(p, e.s);
    const tombstones = trackFirstSeen(this.firstSeen, current, nowMs);
    const members = this.members();
    const decision = decideTombstonePurge({ tombstones, members, listings: new Map(members.map((m) => [m, this.listings.get(m)])), nowMs, minAgeMs });
    for (const path of decision.purge) {
      this.tree.delete(path);
      this.firstSeen.delete(path);
    }
    this.purged += decision.purge.length;
    return decision.purge;
  }
}
