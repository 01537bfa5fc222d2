// The fetcher of one resource on a secondary (the MARS user manual: fetching logfiles): asks planFetch
// what to copy, streams it from the chosen peer (pipelined: one request, many data frames,
// following the logfile while it grows) and appends it to the local copy at exactly the
// position it expects. The copy is byte-identical to the origin's: every frame must start
// where the local file ends. A copy the replayer found damaged is fetched again from 0.
//
// The other members are reached through the narrow FetchPeers interface (their logfile offers
// and a byte stream); marsd backs it by its PeerManager (peerManagerFetchPeers), a test may
// back it by a PeerService in the same process. Waits use the injected clock.
import { TREE_FILE_MODE } from '../../common/tree/modes.js';
import { open, truncate, type FileHandle } from 'node:fs/promises';
import { logDigests } from '../../common/log/content-digest.js';
import { constants as fsc, statSync } from 'node:fs';
import type { TreeStore } from '../../common/tree/store.js';
import { resPaths, resourceDir } from '../../common/tree/paths.js';
import { firstAtOrAbove, listingIndex } from '../../common/tree/listing-index.js';
import { parseVersionLink } from '../../common/log/links.js';
import { readReplayLink } from '../../common/resource/links.js';
import type { PeerManager } from '../propagate/peer-manager.js';
import { planFetch, type FetchPlan, type PeerListing } from './plan.js';
import { logRead, type LogReadParams } from '../propagate/peer-calls.js';
import type { LogFn } from '../../common/util/log.js';
import type { Clock, Timer } from '../../common/util/clock.js';
import { failStopOnInvariant } from '../../common/util/assert.js';

/** What the fetcher needs of the other members. */
export interface FetchPeers {
  /** every member's offer of res's logfiles (log name → bytes it serves), connected or not */
  listings(res: string): PeerListing[];
  /** stream a logfile's bytes from a member; onData is awaited for every chunk, in order */
  logRead(peer: string, p: LogReadParams, onData: (pos: number, data: Buffer) => Promise<void>, signal: AbortSignal): Promise<{ pos: number; durableEnd: number }>;
}

/** FetchPeers of a running marsd: the links of its PeerManager. */
export function peerManagerFetchPeers(peers: PeerManager): FetchPeers {
  return {
    listings: (res) => peers.all().map((l) => ({ host: l.peer, connected: l.connected, logs: l.logs.get(res) ?? new Map() })),
    logRead: async (peer, p, onData, signal) => {
      const conn = peers.link(peer)?.conn;
      if (!conn) throw new Error(`no connection to ${peer}`);
      return logRead(conn, p, onData, signal);
    },
  };
}

export interface FetcherOptions {
  tree: TreeStore;
  res: string;
  host: string;
  peers: FetchPeers;
  /** bandwidth limit for logfile transfer, 0 = unlimited */
  rateBytesPerS: number;
  log: LogFn;
  clock: Clock;
  /** bytes were appended to a local copy (wake the replayer) */
  onAppended: (bytes: number) => void;
}

const FOLLOW_WAIT_MS = 1_000;
/**
 * A follow that ended early without bytes: the origin finished the logfile, and our tree may
 * not know its successor yet. Plan again after this long, or when a tree change nudges us.
 */
const FOLLOW_ENDED_EARLY_MS = 100;
/**
 * An idle fetcher is woken by nudge() (every control round of its resource, every new peer
 * listing), so this poll is only a safety net; it is long because each plan lists the
 * resource directory (idle cost, docs/design.md).
 */
const IDLE_POLL_MS = 5_000;
/** after a failed copy: try again this soon */
const RETRY_MS = 500;
/**
 * Parking: after this many follows in a row that waited FOLLOW_WAIT_MS and brought nothing,
 * the fetcher stops following an idle logfile (issue 11: a long poll a second per idle
 * resource was most of an idle secondary's network work, and at most 32 are open per peer,
 * so with many resources an idle one's follow also held a slot a resuming one waited for).
 * It follows again as soon as a member's listing offers more than the local copy (it is
 * nudged by every new listing; the origin notifies its peers when its log resumes after a
 * quiet second, daemon/logger/log-resume.ts), and after PARKED_FOLLOW_MS at the latest.
 */
const EMPTY_FOLLOWS_BEFORE_PARK = 2;
export const PARKED_FOLLOW_MS = 30_000;

export class Fetcher {
  private running = false;
  private loopDone: Promise<void> | undefined;
  private abort: AbortController | undefined;
  private wake: (() => void) | undefined;
  private readonly refetch = new Set<string>();
  /** what the fetcher is doing, for status */
  state = 'idle';
  active = false;
  fetchedBytes = 0;
  lastPlan: FetchPlan = { kind: 'idle', reason: 'not started' };

  /** the local copies (name → bytes) the last plan saw */
  private localSeen: ReadonlyMap<string, number> = new Map();
  /** follows in a row that waited their whole time without a byte (parking) */
  private emptyFollows = 0;
  /** parked: no follow of an idle logfile before this time (clock ms), unless a listing offers more */
  private parkedUntilMs: number | undefined;

  constructor(private readonly o: FetcherOptions) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loopDone = this.loop();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.abort?.abort();
    this.wake?.();
    await this.loopDone;
    this.loopDone = undefined;
    this.active = false;
  }

  /** Something changed (tree, peer listing): plan again now. */
  nudge(): void {
    this.wake?.();
  }

  /** The replayer found the local copy of `name` damaged: copy it again from offset 0. */
  requestRefetch(name: string): void {
    this.refetch.add(name);
    this.abort?.abort();
    this.wake?.();
  }

  /** Bytes known to exist at their source and not yet copied here (fetch-rest). */
  restBytes(): number {
    const p = this.lastPlan;
    return p.kind === 'fetch' ? Math.max(0, p.knownEnd - p.fromPos) : 0;
  }

  /**
   * Sizes of the local logfiles from replaySeq on (older ones are never fetched: no stat for
   * them). The names come from the listing's index (built once per listing object,
   * common/tree/listing-index.ts), so a plan costs no work per older logfile (issue 11).
   */
  private localSizes(replaySeq: number): Map<string, number> {
    const { tree, res } = this.o;
    const out = new Map<string, number>();
    const dir = resourceDir(res);
    const listing = tree.listing(dir);
    if (listing === undefined) return out;
    const logs = listingIndex(listing).logs;
    for (let i = firstAtOrAbove(logs, replaySeq); i < logs.length; i++) {
      const name = logs[i]!.name;
      try {
        const st = statSync(tree.abs(`${dir}/${name}`), { throwIfNoEntry: false });
        if (st?.isFile()) out.set(name, st.size);
      } catch { /* vanished */ }
    }
    return out;
  }

  plan(): FetchPlan {
    const { tree, res, host, peers } = this.o;
    const replay = readReplayLink(tree, res, host);
    if (!replay) return { kind: 'idle', reason: 'no replay link' };
    return planFetch({
      self: host,
      replaySeq: replay.seq,
      local: (this.localSeen = this.localSizes(replay.seq)),
      peers: peers.listings(res),
      finalLength: (seq, origin, successor) => {
        if (tree.value(resPaths.version(res, seq + 1, successor)) === undefined) return undefined;
        const v = tree.value(resPaths.version(res, seq, successor));
        const link = v === undefined ? undefined : parseVersionLink(v);
        // The successor's link must be about this very logfile (it replayed log-SEQ-origin).
        return link === undefined || link.origin !== origin ? undefined : link.logPos;
      },
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer: Timer = this.o.clock.setTimeout(() => { this.wake = undefined; resolve(); }, ms);
      this.wake = () => { timer.cancel(); this.wake = undefined; resolve(); };
    });
  }

  private async loop(): Promise<void> {
    while (this.running) {
      for (const name of this.refetch) {
        this.refetch.delete(name);
        this.o.log('warn', `${this.o.res}: local copy of ${name} is damaged; fetching it again from offset 0`);
        const path = this.o.tree.abs(`${resourceDir(this.o.res)}/${name}`);
        await truncate(path, 0).catch(() => undefined);
        logDigests.forget(path); // rewritten in place: the hash state of the old bytes is void
      }
      const plan = this.plan();
      this.lastPlan = plan;
      if (plan.kind !== 'fetch') {
        this.active = false;
        if (this.state !== plan.reason) {
          if (plan.kind === 'stop') this.o.log('warn', `${this.o.res}: fetch stopped: ${plan.reason}`);
          this.state = plan.reason;
        }
        await this.sleep(IDLE_POLL_MS);
        continue;
      }
      // Parked or following, the status is the same (is-copying, msg-inf-fetch): a parking
      // that comes and goes must not rewrite status links every few seconds.
      this.active = true;
      this.state = `fetching ${plan.name} from ${plan.source} at ${plan.fromPos}`;
      const parkedMs = this.parkedFor(plan);
      if (parkedMs !== undefined) {
        await this.sleep(parkedMs);
        continue;
      }
      try {
        const startedMs = this.o.clock.nowMs();
        const copied = await this.copy(plan);
        const waitedOut = this.o.clock.nowMs() - startedMs >= FOLLOW_WAIT_MS;
        if (plan.follow) this.emptyFollows = copied === 0 && waitedOut ? this.emptyFollows + 1 : 0;
        if (this.running && plan.follow && copied === 0 && !waitedOut) await this.sleep(FOLLOW_ENDED_EARLY_MS);
      } catch (err) {
        failStopOnInvariant(err);
        if (this.running) {
          this.o.log('warn', `${this.o.res}: fetching ${plan.name} from ${plan.source} failed: ${(err as Error).message}`);
          await this.sleep(RETRY_MS);
        }
      }
    }
  }

  /**
   * How long to stay parked before following plan's logfile (see PARKED_FOLLOW_MS), or
   * undefined: fetch now. A plan with bytes to copy ends the parking; a parking that ran
   * out gives one follow, and the fetcher parks again if that brings nothing.
   */
  private parkedFor(plan: Extract<FetchPlan, { kind: 'fetch' }>): number | undefined {
    const idleFollow = plan.follow && plan.knownEnd <= plan.fromPos;
    if (!idleFollow || this.emptyFollows < EMPTY_FOLLOWS_BEFORE_PARK) {
      if (!idleFollow) this.emptyFollows = 0;
      this.parkedUntilMs = undefined;
      return undefined;
    }
    const nowMs = this.o.clock.nowMs();
    this.parkedUntilMs ??= nowMs + PARKED_FOLLOW_MS;
    if (nowMs < this.parkedUntilMs) return this.parkedUntilMs - nowMs;
    this.parkedUntilMs = undefined;
    this.emptyFollows = EMPTY_FOLLOWS_BEFORE_PARK - 1;
    return undefined;
  }

  /** Copy what the plan says; returns the number of bytes that arrived. */
  private async copy(plan: Extract<FetchPlan, { kind: 'fetch' }>): Promise<number> {
    const { tree, res, peers, rateBytesPerS } = this.o;
    const path = tree.abs(`${resourceDir(res)}/${plan.name}`);
    // Following a copy that exists, empty or not (an idle secondary: one long poll a second per
    // resource that nearly always brings no bytes), opens the file when the first bytes arrive,
    // not at every poll (issue 11: an open, fstat and close per resource and second); its size
    // is checked then. A new copy is created at once: the replayer waits for the file, and a
    // logfile finished empty is only created.
    let handle = plan.follow && this.localSeen.has(plan.name) ? undefined : await openCopy(path, plan);
    const abort = new AbortController();
    this.abort = abort;
    try {
      let expected = plan.fromPos;
      // A logfile finished empty: creating it is the whole copy.
      if (!plan.follow && plan.knownEnd === 0) { await handle!.datasync(); return 0; }
      await peers.logRead(plan.source, {
        res, name: plan.name, fromPos: plan.fromPos, follow: plan.follow, waitMs: plan.follow ? FOLLOW_WAIT_MS : 0, rateBytesPerS,
      }, async (pos: number, data: Buffer) => {
        if (pos !== expected) throw new Error(`${plan.name}: data for offset ${pos} arrived, expected ${expected}`);
        handle ??= await openCopy(path, plan);
        let done = 0;
        while (done < data.length) {
          const { bytesWritten } = await handle.write(data, done, data.length - done, pos + done);
          done += bytesWritten;
        }
        expected += data.length;
        this.fetchedBytes += data.length;
        this.o.onAppended(data.length);
      }, abort.signal);
      // A finished logfile is made durable once; a growing one is synced when it finishes.
      if (!plan.follow && expected >= plan.knownEnd) await handle?.datasync();
      return expected - plan.fromPos;
    } finally {
      this.abort = undefined;
      await handle?.close();
    }
  }
}

/** Open (create) the local copy for writing at plan.fromPos; it must have exactly that size. */
async function openCopy(path: string, plan: { name: string; fromPos: number }): Promise<FileHandle> {
  const handle = await open(path, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_NOFOLLOW, TREE_FILE_MODE);
  try {
    const sizeBytes = (await handle.stat()).size;
    if (sizeBytes !== plan.fromPos) throw new Error(`${plan.name} changed size underneath (${sizeBytes} instead of ${plan.fromPos})`);
    return handle;
  } catch (err) {
    await handle.close();
    throw err;
  }
}
