// One link per other cluster member (every `ips/ip-HOST` but our own): connect, authenticate,
// pull the peer's tree entries periodically or when it notifies us, merge them, and keep the
// peer's logfile listing for the fetcher. Connections retry forever with backoff (DESIGN.md
// §3.9: network trouble never changes roles or replication state by itself); each link's
// state is published as `actual-ME/peer-PEER`.
import type { TreeStore } from '../tree/store.js';
import { globalPaths, resPaths } from '../tree/paths.js';
import { isValidIdentifier } from '../tree/names.js';
import { dialPeer } from '../net/dial.js';
import type { PeerConnection } from '../net/connection.js';
import type { Entry, LogInfo } from '../net/messages.js';
import { planMerge } from './merge.js';
import { applyMergePlan, localState } from './tree-io.js';
import { listingOf, type PeerListing } from './tombstones.js';
import { performance } from 'node:perf_hooks';
import { readReplayLink } from '../control/resource-links.js';

export interface PeerManagerOptions {
  tree: TreeStore;
  host: string;
  pullIntervalMs: number;
  log: (level: 'info' | 'warn' | 'error', msg: string) => void;
  /** merged entries changed the local tree */
  onTreeChanged: () => void;
  /** a peer's logfile listing changed (the fetcher may have work) */
  onListing: () => void;
}

const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5_000;
const DIAL_TIMEOUT_MS = 5_000;

export class PeerLink {
  conn: PeerConnection | undefined;
  /** res → (log name → bytes the peer offers) */
  logs = new Map<string, Map<string, number>>();
  /** the peer's whole listing of the last successful pull (tombstone purging) */
  listing: PeerListing | undefined;
  lastError = '';
  private stopped = false;
  private wake: (() => void) | undefined;
  private pullWanted = false;
  private backoffMs = BACKOFF_MIN_MS;
  private readonly loopDone: Promise<void>;

  constructor(readonly peer: string, public address: string, private readonly m: PeerManagerOptions, private readonly secret: Buffer) {
    this.loopDone = this.loop();
  }

  get connected(): boolean {
    return this.conn !== undefined;
  }

  /** Pull soon (the peer notified us, or we want fresh state). */
  pullSoon(): void {
    this.pullWanted = true;
    this.wake?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.wake = undefined; resolve(); }, ms);
      this.wake = () => { clearTimeout(timer); this.wake = undefined; resolve(); };
    });
  }

  private setStatus(value: string): void {
    const { tree, host } = this.m;
    try {
      tree.write(globalPaths.actual(host, `peer-${this.peer}`), value, { onlyIfChanged: true });
    } catch { /* status is best effort */ }
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      let conn: PeerConnection;
      try {
        const uuid = this.m.tree.value(globalPaths.uuid) ?? '(any)';
        conn = await dialPeer({ address: this.address, host: this.m.host, uuid, secret: this.secret, expectHost: this.peer, timeoutMs: DIAL_TIMEOUT_MS });
      } catch (err) {
        this.noteDown(`cannot connect to ${this.address}: ${(err as Error).message}`);
        await this.sleep(this.backoffMs);
        this.backoffMs = Math.min(BACKOFF_MAX_MS, this.backoffMs * 2);
        continue;
      }
      if (this.stopped) { conn.close('stopping'); break; }
      this.conn = conn;
      this.backoffMs = BACKOFF_MIN_MS;
      this.lastError = '';
      this.setStatus(`connected ${this.address} since ${new Date().toISOString()}`);
      this.m.log('info', `peer ${this.peer}: connected to ${this.address}`);
      let closedReason: string | undefined;
      void conn.closed.then((reason: string) => { closedReason = reason; this.wake?.(); });
      while (!this.stopped && closedReason === undefined) {
        try {
          await this.pull(conn);
        } catch (err) {
          if (closedReason === undefined) conn.close(`pull failed: ${(err as Error).message}`);
          break;
        }
        if (!this.pullWanted) await this.sleep(this.m.pullIntervalMs);
      }
      const reason = closedReason ?? (await conn.closed.catch(() => 'closed'));
      this.conn = undefined;
      this.m.onListing();
      if (!this.stopped) {
        this.noteDown(`connection lost: ${reason}`);
        await this.sleep(this.backoffMs);
      }
    }
  }

  private noteDown(reason: string): void {
    if (reason !== this.lastError) this.m.log('warn', `peer ${this.peer}: ${reason}`);
    this.lastError = reason;
    this.setStatus(`down ${reason}`.slice(0, 1000));
  }

  private async pull(conn: PeerConnection): Promise<void> {
    this.pullWanted = false;
    const requestedAtMs = performance.now();
    const { entries, logs } = await fetchEntries(conn);
    const { tree, host } = this.m;
    const plan = planMerge(entries, (p) => localState(tree, p), {
      sender: this.peer, receiver: host, nowUs: tree.clock.now(), replayFloor: (res) => replayFloor(tree, res, host),
    });
    for (const r of plan.rejected.slice(0, 3)) this.m.log('warn', `peer ${this.peer}: refused entry ${r.path}: ${r.reason}`);
    const changed = applyMergePlan(tree, plan);
    this.listing = listingOf(requestedAtMs, entries, logs);
    const next = new Map<string, Map<string, number>>();
    for (const l of logs) {
      let perRes = next.get(l.res);
      if (!perRes) next.set(l.res, (perRes = new Map()));
      perRes.set(l.name, l.sizeBytes);
    }
    const listingChanged = !sameListing(this.logs, next);
    this.logs = next;
    if (changed > 0) this.m.onTreeChanged();
    if (listingChanged) this.m.onListing();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.conn?.close('stopping');
    this.wake?.();
    await this.loopDone;
  }
}

/**
 * The logfile number this host replays (or writes back) in `res`, which bounds the deletions
 * it accepts from peers (mayWrite): Infinity without a replay link there (it reads no
 * logfile), -Infinity when the link is unparsable (keep everything).
 */
export function replayFloor(tree: TreeStore, res: string, host: string): number {
  try {
    if (tree.value(resPaths.replay(res, host)) === undefined) return Infinity;
    const replay = readReplayLink(tree, res, host);
    return replay ? replay.seq : -Infinity;
  } catch {
    return -Infinity; // an invalid resource name: accept no deletion
  }
}

function sameListing(a: Map<string, Map<string, number>>, b: Map<string, Map<string, number>>): boolean {
  if (a.size !== b.size) return false;
  for (const [res, m] of a) {
    const o = b.get(res);
    if (!o || o.size !== m.size) return false;
    for (const [k, v] of m) if (o.get(k) !== v) return false;
  }
  return true;
}

async function fetchEntries(conn: PeerConnection): Promise<{ clockUs: number; entries: Entry[]; logs: LogInfo[] }> {
  return conn.getents();
}

export class PeerManager {
  private readonly links = new Map<string, PeerLink>();
  private secret: Buffer | undefined;

  constructor(private readonly o: PeerManagerOptions) {}

  /** Start talking to peers (a host without a cluster secret runs alone). */
  enable(secret: Buffer): void {
    this.secret = secret;
  }

  /** Follow ips/: start links to new members, retarget moved ones, stop removed ones. */
  reconcile(): void {
    const { tree, host } = this.o;
    const secret = this.secret;
    if (!secret) return;
    const wanted = new Map<string, string>();
    for (const name of tree.list(globalPaths.ipsDir)) {
      if (!name.startsWith('ip-')) continue;
      const peer = name.slice(3);
      if (!isValidIdentifier(peer) || peer === host) continue;
      const address = tree.value(`${globalPaths.ipsDir}/${name}`);
      if (address !== undefined) wanted.set(peer, address);
    }
    for (const [peer, address] of wanted) {
      const link = this.links.get(peer);
      if (link && link.address === address) continue;
      if (link) void link.stop();
      this.links.set(peer, new PeerLink(peer, address, this.o, secret));
    }
    for (const [peer, link] of this.links) {
      if (!wanted.has(peer)) {
        this.links.delete(peer);
        void link.stop();
      }
    }
  }

  link(peer: string): PeerLink | undefined {
    return this.links.get(peer);
  }

  all(): PeerLink[] {
    return [...this.links.values()];
  }

  pullSoon(peer: string): void {
    this.links.get(peer)?.pullSoon();
  }

  /** Tell every connected peer that our tree changed (they pull us soon). */
  notifyAll(): void {
    for (const l of this.links.values()) {
      try { l.conn?.notify(); } catch { /* a dying connection */ }
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.links.values()].map((l) => l.stop()));
    this.links.clear();
  }
}
