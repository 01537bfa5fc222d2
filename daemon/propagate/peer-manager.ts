// One link per other cluster member (every `ips/ip-HOST` but our own): connect, authenticate,
// pull the peer's tree entries periodically or when it notifies us, merge them, and keep the
// peer's logfile listing for the fetcher. Connections retry forever with backoff (docs/design.md
// §3.9: network trouble never changes roles or replication state by itself); each link's
// state is published as `actual-ME/peer-PEER`, naming the transport it uses.
//
// How a peer is reached is this host's own choice, `userspace/transport-PEER` (tcp when absent,
// tls, or ssh; net/transport-spec.ts). A change of it or of the peer's address replaces the
// link: the old connection is closed and the new transport dialled.
//
// A link survives every expected failure (a refused dial, a lost connection, a failed pull:
// it logs, backs off and tries again); an InvariantError is not one of them and stops marsd
// (failStopOnInvariant) wherever a catch would otherwise carry on.
import { pullDelayMs } from './pull-pacing.js';
import type { TreeStore } from '../../common/tree/store.js';
import { globalPaths, isHeartbeatPath, localPaths, resPaths } from '../../common/tree/paths.js';
import { isValidIdentifier } from '../../common/tree/names.js';
import { dialTransport } from '../net/dial-transport.js';
import { describeTransport, formatTransportSpec, parseTransportSpec, type TransportSpec } from '../../common/cluster/transport-spec.js';
import type { PeerConnection } from '../net/connection.js';
import { planMerge } from './merge.js';
import { applyMergePlan, linksOfHost, localState, mergeFacts } from './tree-io.js';
import { RefusalLog } from './refusal-log.js';
import { listingOf, type PeerListing } from './tombstones.js';
import { IncrementalMerge, logsOfDirs, peerListingOfDirs } from './incremental-merge.js';
import { applyListing, FULL_LISTING_EVERY_MS, type HeldListing } from './listing-delta.js';
import { readReplayLink } from '../../common/resource/links.js';
import type { LogFn } from '../../common/util/log.js';
import { failStopOnInvariant, rethrowInvariant } from '../../common/util/assert.js';
import { systemClock, type Clock } from '../../common/util/clock.js';

export interface PeerManagerOptions {
  tree: TreeStore;
  host: string;
  pullIntervalMs: number;
  log: LogFn;
  /** refused links are logged here, rate-limited */
  refusals?: RefusalLog;
  /** limits of the value rules (link-rules.ts) */
  mergeLimits?: { maxResources?: number };
  /** merged entries changed the local tree */
  onTreeChanged: () => void;
  /** a peer's logfile listing changed (the fetcher may have work) */
  onListing: () => void;
  /** CA file verifying the servers of `tls` links (marsd --tls-ca); the system CAs otherwise */
  tlsCaFile?: string;
  /** each connection a link made, as soon as it is made (traffic accounting) */
  onConnection?: (conn: PeerConnection) => void;
  /** backoff, pull interval, connections; give the TombstoneKeeper the same one (default: the system clock) */
  clock?: Clock;
}

/** Where and how a link connects; a link is replaced when any of this changes. */
export interface LinkTarget {
  /** ips/ip-PEER */
  address: string;
  /** the canonical transport spec (an invalid value as it is), undefined for tcp */
  specText: string | undefined;
  /** the parsed spec, or why the value is unusable */
  transport: TransportSpec | { invalid: string };
}

/** The target for a peer, from its address and the value of userspace/transport-PEER. */
export function linkTarget(address: string, value: string | undefined): LinkTarget {
  if (value === undefined) return { address, specText: undefined, transport: { kind: 'tcp' } };
  try {
    const transport = parseTransportSpec(value);
    // Canonical, so that rewriting an equivalent spec (or tcp for none) does not reconnect.
    return { address, specText: transport.kind === 'tcp' ? undefined : formatTransportSpec(transport), transport };
  } catch (err) {
    rethrowInvariant(err);
    return { address, specText: value, transport: { invalid: (err as Error).message } };
  }
}

function sameTarget(a: LinkTarget, b: LinkTarget): boolean {
  return a.address === b.address && a.specText === b.specText;
}

const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5_000;
const DIAL_TIMEOUT_MS = 5_000;
/** ssh, its login and the remote `marsd --stdio` start take longer than a TCP connect. */
const SSH_DIAL_TIMEOUT_MS = 20_000;

export class PeerLink {
  conn: PeerConnection | undefined;
  /** res → (log name → bytes the peer offers); a resource's Map is never changed once here (an
   *  unchanged directory's is handed on to the next pull: incremental-merge.ts logsOfDirs) */
  logs: ReadonlyMap<string, ReadonlyMap<string, number>> = new Map();
  /** the peer's whole listing of the last successful pull (tombstone purging) */
  listing: PeerListing | undefined;
  /** the peer's listing as held for its next delta (listing-delta.ts); only for this connection */
  private held: HeldListing | undefined;
  /** which directories of the peer's listing the last merges found quiet */
  readonly merger = new IncrementalMerge();
  /** when (Clock.monotonicMs) the held listing was last requested in full */
  private heldFullAtMs = -Infinity;
  lastError = '';
  private stopped = false;
  private wake: (() => void) | undefined;
  private pullWanted = false;
  /** pulls in a row that brought no news (pull-pacing.ts) */
  private quietPulls = 0;
  private backoffMs = BACKOFF_MIN_MS;
  private readonly loopDone: Promise<void>;
  private readonly clock: Clock;

  /** `tcp ADDR`, `tls ADDR`, `ssh USER@HOST`: how this link connects (status and logs). */
  readonly via: string;

  /** `peerPulledAt()`: when the peer's newest pull of our tree reached us (PeerManager.notePulledBy) */
  constructor(readonly peer: string, readonly target: LinkTarget, private readonly m: PeerManagerOptions, private readonly secret: () => Buffer,
    private readonly peerPulledAt: () => number | undefined = () => undefined) {
    this.clock = m.clock ?? systemClock;
    const transport = target.transport;
    if ('invalid' in transport) {
      // A hand-edited value marsadm would have refused: say so and wait for a fix (the link
      // is replaced when the value changes); never guess a transport.
      this.via = 'invalid transport';
      this.lastError = `userspace/transport-${peer}: ${transport.invalid}`;
      m.log('error', `peer ${peer}: not connecting: ${this.lastError}; fix it with "marsadm set-transport ${peer} SPEC"`);
      this.setStatus(`down ${this.via}: ${this.lastError}`.slice(0, 1000));
      this.loopDone = Promise.resolve();
      return;
    }
    this.via = describeTransport(transport, target.address);
    this.setStatus(`connecting ${this.via}`);
    this.loopDone = this.loop(transport);
  }

  get address(): string {
    return this.target.address;
  }

  get connected(): boolean {
    return this.conn !== undefined;
  }

  /** Pull soon (the peer notified us, or we want fresh state). */
  pullSoon(): void {
    this.pullWanted = true;
    this.quietPulls = 0;
    this.wake?.();
  }

  /** Sleep until ms passed or wake() (pullSoon, the connection closed, stop). */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.clock.setTimeout(() => { this.wake = undefined; resolve(); }, ms);
      this.wake = () => { timer.cancel(); this.wake = undefined; resolve(); };
    });
  }

  private setStatus(value: string): void {
    // A replaced link must not overwrite the status of its successor.
    if (this.stopped) return;
    const { tree, host } = this.m;
    try {
      tree.write(globalPaths.actual(host, `peer-${this.peer}`), value, { onlyIfChanged: true });
    } catch (err) {
      failStopOnInvariant(err); // otherwise: status is best effort
    }
  }

  private async loop(transport: TransportSpec): Promise<void> {
    while (!this.stopped) {
      let conn: PeerConnection;
      try {
        const uuid = this.m.tree.value(globalPaths.uuid) ?? '(any)';
        conn = await dialTransport(transport, {
          address: this.address, host: this.m.host, uuid, secret: this.secret, expectHost: this.peer,
          timeoutMs: transport.kind === 'ssh' ? SSH_DIAL_TIMEOUT_MS : DIAL_TIMEOUT_MS,
          ...(this.m.tlsCaFile !== undefined ? { tlsCaFile: this.m.tlsCaFile } : {}),
          clock: this.clock,
        });
      } catch (err) {
        failStopOnInvariant(err);
        this.noteDown((err as Error).message);
        await this.sleep(this.backoffMs);
        this.backoffMs = Math.min(BACKOFF_MAX_MS, this.backoffMs * 2);
        continue;
      }
      this.m.onConnection?.(conn);
      if (this.stopped) { conn.close('stopping'); break; }
      this.conn = conn;
      // A new connection starts with a full listing (the peer may have restarted, or a reply
      // of the old connection been lost).
      this.held = undefined;
      this.quietPulls = 0;
      this.lastError = '';
      this.setStatus(`connected ${this.via} since ${new Date(this.clock.nowMs()).toISOString()}`);
      this.m.log('info', `peer ${this.peer}: connected (${this.via})`);
      let closedReason: string | undefined;
      void conn.closed.then((reason: string) => { closedReason = reason; this.wake?.(); });
      while (!this.stopped && closedReason === undefined) {
        try {
          await this.pull(conn);
          // Only a connection that did its work resets the backoff: one whose pulls keep
          // failing (a full /mars, a peer refusing us) must not reconnect ten times a second.
          this.backoffMs = BACKOFF_MIN_MS;
        } catch (err) {
          failStopOnInvariant(err);
          this.held = undefined;
          if (closedReason === undefined) conn.close(`pull failed: ${(err as Error).message}`);
          break;
        }
        if (!this.pullWanted) await this.sleep(pullDelayMs(this.m.pullIntervalMs, this.quietPulls));
      }
      const reason = closedReason ?? (await conn.closed.catch(() => 'closed'));
      this.conn = undefined;
      this.m.onListing();
      if (!this.stopped) {
        this.noteDown(`connection lost: ${reason}`);
        await this.sleep(this.backoffMs);
        this.backoffMs = Math.min(BACKOFF_MAX_MS, this.backoffMs * 2);
      }
    }
  }

  private noteDown(reason: string): void {
    if (this.stopped) return;
    if (reason !== this.lastError) this.m.log('warn', `peer ${this.peer} (${this.via}): ${reason}`);
    this.lastError = reason;
    this.setStatus(`down ${this.via}: ${reason}`.slice(0, 1000));
  }

  private async pull(conn: PeerConnection): Promise<void> {
    this.pullWanted = false;
    const requestedAtMs = this.clock.monotonicMs();
    // Read before asking: the tombstone purge needs the peer's last pull of us that reached us
    // before it built this listing (tombstones.ts).
    const peerPulledAtMs = this.peerPulledAt();
    // A delta since the listing we hold, unless a full one is due (listing-delta.ts).
    const asked = this.held !== undefined && requestedAtMs - this.heldFullAtMs < FULL_LISTING_EVERY_MS
      ? { epoch: this.held.epoch, generation: this.held.generation } : undefined;
    const reply = await conn.getents(undefined, asked);
    // The peer's whole listing, as a full pull would have brought it (or ListingDeltaError:
    // the pull fails, nothing is merged, and the next connection starts in full).
    const applied = applyListing(this.held, asked, reply);
    this.held = applied.held;
    if (reply.since === undefined) this.heldFullAtMs = requestedAtMs;
    const { tree, host } = this.m;
    const dirs = applied.dirs;
    const options = {
      ...this.m.mergeLimits, sender: this.peer, receiver: host, nowUs: tree.clock.realNowUs(), facts: mergeFacts(tree), replayFloor: (res: string) => replayFloor(tree, res, host),
      linksOf: (h: string, dir: string | undefined) => linksOfHost(tree, h, dir),
    };
    // By directory, passing over those that cannot change anything (incremental-merge.ts);
    // the whole listing when the peer gives none (an older peer).
    if (dirs === undefined) this.merger.reset();
    const plan = tree.readBatch(() => dirs !== undefined
      ? this.merger.plan(tree, dirs, (p) => localState(tree, p), options)
      : planMerge(applied.entries, (p) => localState(tree, p), options));
    for (const r of plan.rejected) (this.m.refusals ??= new RefusalLog({ log: this.m.log, nowMs: () => (this.m.clock ?? systemClock).monotonicMs() })).note(this.peer, 'listed', r.path, r.reason);
    const changed = applyMergePlan(tree, plan);
    let listingChanged: boolean;
    if (dirs !== undefined) {
      this.listing = peerListingOfDirs(requestedAtMs, dirs, peerPulledAtMs);
      const next = logsOfDirs(dirs, this.logs);
      listingChanged = next.changed;
      this.logs = next.logs;
    } else {
      this.listing = listingOf(requestedAtMs, applied.entries, applied.logs, peerPulledAtMs);
      const next = new Map<string, Map<string, number>>();
      for (const l of applied.logs) {
        let perRes = next.get(l.res);
        if (!perRes) next.set(l.res, (perRes = new Map()));
        perRes.set(l.name, l.sizeBytes);
      }
      listingChanged = !sameListing(this.logs, next);
      this.logs = next;
    }
    // A peer's heartbeat alone changes no decision (view and metrics read it when asked): a
    // round for it would run every resource's round once per pull, and write our heartbeat,
    // which the peer pulls and answers in kind.
    const treeNews = changed > 0 && plan.writes.some((w) => !isHeartbeatPath(w.p));
    if (treeNews) this.m.onTreeChanged();
    if (listingChanged) this.m.onListing();
    this.quietPulls = treeNews || listingChanged ? 0 : this.quietPulls + 1;
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
  } catch (err) {
    failStopOnInvariant(err);
    return -Infinity; // an invalid resource name: accept no deletion
  }
}

function sameListing(a: ReadonlyMap<string, ReadonlyMap<string, number>>, b: ReadonlyMap<string, ReadonlyMap<string, number>>): boolean {
  if (a.size !== b.size) return false;
  for (const [res, m] of a) {
    const o = b.get(res);
    if (!o || o.size !== m.size) return false;
    for (const [k, v] of m) if (o.get(k) !== v) return false;
  }
  return true;
}

export class PeerManager {
  private readonly links = new Map<string, PeerLink>();
  /** peer → when (Clock.monotonicMs) its newest getents reached us (tombstones.ts) */
  private readonly pulledBy = new Map<string, number>();
  /** The secret to dial with: read at each dial, it changes when the cluster secret is rotated. */
  private secret: (() => Buffer) | undefined;

  constructor(private readonly o: PeerManagerOptions) {}

  /** Start talking to peers (a host without a cluster secret runs alone). */
  enable(secret: () => Buffer): void {
    this.secret = secret;
  }

  /**
   * Follow ips/ and userspace/transport-*: start links to new members, replace those whose
   * address or transport changed, stop removed ones.
   */
  reconcile(): void {
    const { tree, host } = this.o;
    const secret = this.secret;
    if (!secret) return;
    const wanted = new Map<string, LinkTarget>();
    for (const name of tree.list(globalPaths.ipsDir)) {
      if (!name.startsWith('ip-')) continue;
      const peer = name.slice(3);
      if (!isValidIdentifier(peer) || peer === host) continue;
      const address = tree.value(`${globalPaths.ipsDir}/${name}`);
      if (address !== undefined) wanted.set(peer, linkTarget(address, tree.value(localPaths.transport(peer))));
    }
    for (const [peer, target] of wanted) {
      const link = this.links.get(peer);
      if (link && sameTarget(link.target, target)) continue;
      if (link) {
        this.o.log('info', `peer ${peer}: ${link.target.address !== target.address ? `address now ${target.address}` : `transport now ${target.specText ?? 'tcp (default)'}`}; reconnecting`);
        void link.stop();
      }
      this.links.set(peer, new PeerLink(peer, target, this.o, secret, () => this.pulledBy.get(peer)));
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

  /** An authenticated peer asked for our listing (PeerService.getents), now. */
  notePulledBy(peer: string): void {
    this.pulledBy.set(peer, (this.o.clock ?? systemClock).monotonicMs());
  }

  /** Tell every connected peer that our tree changed (they pull us soon). */
  notifyAll(): void {
    for (const l of this.links.values()) {
      try {
        l.conn?.notify();
      } catch (err) {
        failStopOnInvariant(err); // otherwise a dying connection
      }
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.links.values()].map((l) => l.stop()));
    this.links.clear();
  }
}
