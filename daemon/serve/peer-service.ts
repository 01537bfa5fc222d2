// What this host serves to its authenticated peers (docs/protocol.md): its tree entries and
// logfile sizes, logfile bytes up to their durable end (streamed, following growth), and
// the digests and blocks of its data disk for a fast sync. Nothing here decides anything;
// it reads the tree and files, and hands pushed links to the same merge rules as pulls.
import { open, stat, type FileHandle } from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import type { TreeStore } from '../../common/tree/store.js';
import { resPaths, resourceDir } from '../../common/tree/paths.js';
import { parseVersionLink } from '../../common/log/links.js';
import { parseLogName } from '../../common/tree/log-names.js';
import { collectDirs, localState, applyMergePlan, mergeFacts, linksOfHost } from '../propagate/tree-io.js';
import { RefusalLog } from '../propagate/refusal-log.js';
import { ListingGenerations } from '../propagate/listing-delta.js';
import { ServedLogs, type DurableEnd } from './served-logs.js';
import { planMerge } from '../propagate/merge.js';
import { replayFloor } from '../propagate/peer-manager.js';
import { ownerOf } from '../../common/tree/ownership.js';
import { diskDigests, handleReader, keyedDigestAvailable } from '../sync/digests.js';
import { SharedReadHandles } from './shared-handles.js';
import { PeerRequestError } from '../net/errors.js';
import { KEYED_DIGEST, type DigestAlgorithm } from '../../common/resource/sync-blocks.js';
import type { ListingAnswer, LogSink, PeerHandlers, SessionInfo } from '../net/service.js';
import { entrySchema, MAX_LISTING_DIRS, type Entry, type ListingSince, type LogInfo, type LogReadRequest, type PositionRequest, type SecretRingRequest, type SyncDigestsRequest, type SyncReadRequest } from '../net/messages.js';
import type { LogFn } from '../../common/util/log.js';
import { systemClock, type Clock } from '../../common/util/clock.js';

const LOG_CHUNK_BYTES = 1 << 20;
const FOLLOW_POLL_MS = 10;
/** The longest pause between two looks at a followed file that does not grow (grownEnd). */
const FOLLOW_POLL_MAX_MS = 160;

export interface ServiceContext {
  tree: TreeStore;
  host: string;
  /** the logger's durable end when this host is writing that logfile right now */
  activeLogEnd(res: string, seq: number): number | undefined;
  /**
   * Wait until the logger's logfile seq of res is durable beyond mark, ended, or signal aborts;
   * false at once when no logger writes it. Without it a follow looks every FOLLOW_POLL_MS.
   */
  waitActiveLog?(res: string, seq: number, mark: number, signal: AbortSignal): Promise<boolean>;
  /** every logfile number of res for which activeLogEnd may be defined (the logger's current
   *  and retired logfiles); without it every logfile of ours is asked at every listing */
  activeLogSeqs?(res: string): Iterable<number>;
  /** the current logfile and durable end while this host is actual primary of res */
  primaryPosition(res: string): { seq: number; origin: string; pos: number } | undefined;
  /** res is in emergency mode here: its disk changes without a log */
  inEmergency?(res: string): boolean;
  /** a peer pushed or notified: the tree changed or should be pulled */
  onTreeChanged(): void;
  onNotify(peerHost: string): void;
  /** a peer asked for our listing (getents), before it is built: the tombstone purge needs
   *  to know that the peer is done with our older answers (daemon/propagate/tombstones.ts) */
  onPulled?(peerHost: string): void;
  log: LogFn;
  /** refused links are logged here, rate-limited */
  refusals?: RefusalLog;
  /** limits of the value rules (link-rules.ts) */
  mergeLimits?: { maxResources?: number };
  /** Time of a following log-read's wait for new bytes (default: the system clock). */
  clock?: Clock;
  /** The cluster secret rotation (daemon/secret-keeper.ts); without it secret-ring gets ENOTSUP. */
  secretRing?: PeerHandlers['secretRing'];
}

export class PeerService implements PeerHandlers {
  private readonly clock: Clock;

  /** links already reported as not sendable */
  private readonly unsendable = new Set<string>();
  /** a directory's entries → those that passed entrySchema (offered) */
  private readonly offeredOf = new WeakMap<readonly Entry[], readonly Entry[]>();
  /** the generation of each directory of our listing, for deltas */
  private readonly generations = new ListingGenerations();
  /** the disks' read handles of the sync requests in flight */
  private readonly diskHandles = new SharedReadHandles();
  /** each resource directory's offered logfiles, kept from one walk to the next */
  readonly servedLogs: ServedLogs;

  constructor(private readonly ctx: ServiceContext) {
    this.clock = ctx.clock ?? systemClock;
    const activeLogSeqs = ctx.activeLogSeqs;
    this.servedLogs = new ServedLogs({
      host: ctx.host,
      durableEnd: (res, name, bytes) => this.durableEndOf(res, name, bytes),
      ...(activeLogSeqs !== undefined ? { activeLogSeqs: (res: string) => activeLogSeqs(res) } : {}),
    });
  }

  /**
   * Bytes of a logfile a peer may copy. Our own logfiles: the logger's durable end while it
   * writes the file, else the LOGPOS of our versionlink (written from the durable end; after
   * a crash the unsynced tail beyond it may vanish in recovery). Copies of other hosts'
   * logfiles hold only bytes that were durable at their origin: all of them.
   */
  durableEnd(res: string, name: string, fileBytes: number): number {
    return this.durableEndOf(res, name, fileBytes).bytes;
  }

  /** durableEnd, and whether the logger's memory gave it (served-logs.ts). */
  durableEndOf(res: string, name: string, fileBytes: number): DurableEnd {
    const parsed = parseLogName(name);
    if (!parsed || parsed.origin !== this.ctx.host) return { bytes: fileBytes, fromLogger: false };
    const active = this.ctx.activeLogEnd(res, parsed.seq);
    if (active !== undefined) return { bytes: Math.min(active, fileBytes), fromLogger: true };
    const version = this.ctx.tree.value(resPaths.version(res, parsed.seq, this.ctx.host));
    const logPos = version === undefined ? undefined : parseVersionLink(version)?.logPos;
    return { bytes: logPos === undefined ? 0 : Math.min(logPos, fileBytes), fromLogger: false };
  }

  async secretRing(peer: string, req: SecretRingRequest, session: SessionInfo): Promise<{ dial: string; next?: string; previous?: string }> {
    if (!this.ctx.secretRing) throw new PeerRequestError('ENOTSUP', 'this host does not rotate its cluster secret');
    return this.ctx.secretRing(peer, req, session);
  }

  /**
   * Our listing for a peer: every directory of the tree with its links and logfiles, or, when
   * the peer names a listing of ours it holds (`since`, of this process), only the directories
   * changed after it, in full, and the names of all (daemon/propagate/listing-delta.ts).
   */
  async getents(peer: string, since?: ListingSince): Promise<ListingAnswer> {
    this.ctx.onPulled?.(peer);
    // Everything, the peer's own links included: the peer ignores those (except the deletion
    // of an old versionlink, mayWrite), but needs them to see whether we have seen its
    // tombstones before it purges them (daemon/propagate/tombstones.ts).
    const walk = collectDirs(this.ctx.tree, this.servedLogs);
    this.servedLogs.keepOnly(new Set(walk.filter((d) => d.logs !== undefined).map((d) => d.rel)));
    if (walk.length > MAX_LISTING_DIRS) throw new PeerRequestError('EFBIG', `the tree has ${walk.length} directories, more than a listing names (${MAX_LISTING_DIRS})`);
    const generations = this.generations.stamp(walk);
    const delta = this.generations.canBuildOn(since);
    const entries: Entry[] = [];
    const logs: LogInfo[] = [];
    const dirs: string[] = [];
    const changed: string[] = [];
    walk.forEach((d, i) => {
      dirs.push(d.rel);
      if (delta && generations[i]! <= since.generation) return;
      changed.push(d.rel);
      for (const e of this.offered(d.entries)) entries.push(e);
      if (d.logs) for (const l of d.logs) logs.push(l);
    });
    const named = { epoch: this.generations.epoch, generation: this.generations.generation, dirs };
    return { clockUs: this.ctx.tree.clock.now(), entries, logs, listing: delta ? { ...named, since: since.generation, changed } : named };
  }

  /**
   * The entries of a directory that a peer accepts. The array comes from the directory's
   * cached listing (tree-io.ts), the same one while the directory is unchanged: its links
   * are checked against the schema once, not at every pull.
   */
  private offered(entries: readonly Entry[]): readonly Entry[] {
    let ok = this.offeredOf.get(entries);
    if (ok === undefined) this.offeredOf.set(entries, (ok = entries.filter((e) => this.sendable(e))));
    return ok;
  }

  /**
   * A link made by hand in /mars may hold what no peer accepts (a value over the wire limit,
   * say): it stays here and is not offered (said once per link), instead of failing every
   * listing we send (encodeEntsPayload asserts that ours are valid).
   */
  private sendable(e: Entry): boolean {
    if (entrySchema.safeParse(e).success) return true;
    if (!this.unsendable.has(e.p)) {
      this.unsendable.add(e.p);
      this.ctx.log('warn', `${e.p} is not offered to peers: its value is not a valid link value (${e.v.length} characters)`);
    }
    return false;
  }

  async logRead(_peer: string, req: LogReadRequest, sink: LogSink, signal: AbortSignal): Promise<{ pos: number; durableEnd: number }> {
    const path = this.ctx.tree.abs(`${resourceDir(req.res)}/${req.name}`);
    // Opened when bytes are to be read or the file's size is needed: the logfile our logger
    // writes has its durable end in memory, so an idle follow of it (one per secondary
    // resource and second) costs no open, fstat and close.
    let handle: FileHandle | undefined;
    const file = async (): Promise<FileHandle> => (handle ??= await openLog(path, req));
    const sizeBytes = async () => (await (await file()).stat()).size;
    try {
      let pos = req.fromPos;
      let end = await this.endNow(req, sizeBytes);
      if (pos > end) {
        throw new PeerRequestError('ERANGE', `${req.name} of ${req.res} ends at ${end} bytes here (durable), before the requested ${pos}`);
      }
      let idleSinceMs = this.clock.nowMs();
      for (;;) {
        while (pos < end && !signal.aborted) {
          const want = Math.min(LOG_CHUNK_BYTES, end - pos);
          const source = await file();
          // A chunk in memory is counted in the reply budget from before it is read until the
          // socket took it (LogSink); a follow waiting for more data holds no buffer.
          await sink.reserve();
          const buf = Buffer.allocUnsafe(want);
          const { bytesRead } = await source.read(buf, 0, want, pos);
          if (bytesRead === 0) {
            sink.release();
            break;
          }
          await sink.send(pos, buf.subarray(0, bytesRead));
          pos += bytesRead;
          idleSinceMs = this.clock.nowMs();
        }
        if (!req.follow || signal.aborted || this.clock.nowMs() - idleSinceMs >= req.waitMs) break;
        if (this.finishedHere(req.res, req.name)) {
          // Rotated away from (or from an earlier primary period): the end is final, so the
          // follow ends there and the fetcher moves on at once instead of after waitMs.
          const last = await this.endNow(req, sizeBytes);
          if (pos >= last) break;
          end = last;
          continue;
        }
        end = await this.grownEnd(req, end, sizeBytes, signal);
      }
      return { pos, durableEnd: Math.max(end, pos) };
    } finally {
      await handle?.close();
    }
  }

  /**
   * The durable end of the requested logfile now: from our logger's memory while it writes
   * that logfile (never beyond the file's size: the logger makes bytes durable after writing
   * them), otherwise from the file's size and our versionlink (durableEnd).
   */
  private async endNow(req: LogReadRequest, fileBytes: () => Promise<number>): Promise<number> {
    const parsed = parseLogName(req.name);
    const active = parsed !== undefined && parsed.origin === this.ctx.host ? this.ctx.activeLogEnd(req.res, parsed.seq) : undefined;
    return active ?? this.durableEnd(req.res, req.name, await fileBytes());
  }

  /**
   * The durable end once it may have grown, for a follow. Our logger's own logfile: its durable
   * end is in memory; the follow sleeps until the logger says it moved or ended (waitActiveLog;
   * it looked every FOLLOW_POLL_MS before, 100 wake-ups a second per idle follow), and the file
   * is stat'ed only when it moved. Any other file: stat'ed with a backoff from FOLLOW_POLL_MS
   * to FOLLOW_POLL_MAX_MS while it does not grow (an idle follow used to cost 100 stats a
   * second per resource).
   */
  private async grownEnd(req: LogReadRequest, end: number, fileBytes: () => Promise<number>, signal: AbortSignal): Promise<number> {
    const parsed = parseLogName(req.name);
    const own = parsed !== undefined && parsed.origin === this.ctx.host;
    const activeAt = own ? this.ctx.activeLogEnd(req.res, parsed.seq) : undefined;
    // The logger moved on since `end` was taken: no need to wait for it.
    if (activeAt !== undefined && activeAt > end) return this.endNow(req, fileBytes);
    let pollMs = FOLLOW_POLL_MS;
    const startedMs = this.clock.nowMs();
    for (;;) {
      // A cancel is seen after the wait, and the caller gets the real durable end.
      const waited = activeAt !== undefined && await this.waitOwnGrowth(req.res, parsed!.seq, activeAt, req.waitMs - (this.clock.nowMs() - startedMs), signal);
      if (!waited) await this.clock.sleep(pollMs);
      if (signal.aborted) return this.endNow(req, fileBytes);
      // Rotated away from meanwhile: the end is final now, the caller ends the follow there.
      const rotated = activeAt !== undefined && this.finishedHere(req.res, req.name);
      if (activeAt !== undefined && !rotated) {
        const active = this.ctx.activeLogEnd(req.res, parsed!.seq);
        if (active === activeAt && this.clock.nowMs() - startedMs < req.waitMs) continue;
      }
      const next = await this.endNow(req, fileBytes);
      if (next !== end || rotated || this.clock.nowMs() - startedMs >= req.waitMs) return next;
      if (activeAt === undefined) pollMs = Math.min(FOLLOW_POLL_MAX_MS, pollMs * 2);
    }
  }

  /**
   * Sleep until our logger's logfile seq is durable beyond mark, ends, the follow's time is up
   * or it is cancelled; false at once where nothing can be waited for (the caller polls).
   */
  private async waitOwnGrowth(res: string, seq: number, mark: number, remainingMs: number, signal: AbortSignal): Promise<boolean> {
    if (this.ctx.waitActiveLog === undefined || remainingMs <= 0 || signal.aborted) return false;
    const stop = new AbortController();
    const timer = this.clock.setTimeout(() => stop.abort(), remainingMs);
    const onCancel = () => stop.abort();
    signal.addEventListener('abort', onCancel, { once: true });
    try {
      return await this.ctx.waitActiveLog(res, seq, mark, stop.signal);
    } finally {
      timer.cancel();
      signal.removeEventListener('abort', onCancel);
    }
  }

  /**
   * Our own logfile that our logger does not append to: a primary appends only to its current
   * logfile, and each start opens a fresh one (docs/design.md §3.6), so its end is final.
   */
  private finishedHere(res: string, name: string): boolean {
    const parsed = parseLogName(name);
    if (!parsed || parsed.origin !== this.ctx.host) return false;
    return this.ctx.primaryPosition(res)?.seq !== parsed.seq;
  }

  /** Run use() with a read-only handle of res's disk, shared by the sync requests in flight. */
  private async withDisk<T>(res: string, use: (handle: FileHandle) => Promise<T>): Promise<T> {
    const path = this.ctx.tree.value(resPaths.data(res, this.ctx.host));
    if (path === undefined) throw new PeerRequestError('ENOENT', `${this.ctx.host} has no disk for ${res}`);
    let opened = false;
    try {
      return await this.diskHandles.with(path, (handle) => {
        opened = true;
        return use(handle);
      });
    } catch (err) {
      if (opened) throw err;
      throw new PeerRequestError('EIO', `cannot open the disk of ${res}: ${(err as Error).message}`);
    }
  }

  private checkRange(res: string, fromPos: number, lengthBytes: number): void {
    const size = Number(this.ctx.tree.value(resPaths.size(res)) ?? 'NaN');
    if (!(fromPos + lengthBytes <= size)) throw new PeerRequestError('EINVAL', `[${fromPos}, +${lengthBytes}) is outside ${res} (${size} bytes)`);
  }

  /**
   * No sync from a disk that changes without a log: the blocks copied early would miss later
   * unlogged writes, and no replay could bring them. The syncing replica waits and retries;
   * a sync that started before the emergency stops at its hole anyway (its join point is
   * before it), so it is reported, never silently inconsistent.
   */
  private checkNotEmergency(res: string): void {
    if (this.ctx.inEmergency?.(res)) {
      throw new PeerRequestError('EAGAIN', `${res} is in emergency mode on ${this.ctx.host} (writes are not logged): the sync waits until it logs again`);
    }
  }

  async syncDigests(_peer: string, req: SyncDigestsRequest): Promise<{ digests: Buffer; algorithm: DigestAlgorithm }> {
    this.checkNotEmergency(req.res);
    this.checkRange(req.res, req.fromPos, req.lengthBytes);
    // The keyed digest where this process can make it; else the unkeyed one, and the reply says so.
    const key = req.key !== undefined && keyedDigestAvailable() ? Buffer.from(req.key, 'hex') : undefined;
    const algorithm = key ? KEYED_DIGEST : (req.digest ?? 'md5');
    const digests = await this.withDisk(req.res, (handle) => diskDigests(handle.fd, handleReader(handle), req.fromPos, req.lengthBytes, algorithm, key));
    return { digests, algorithm };
  }

  async syncRead(_peer: string, req: SyncReadRequest): Promise<Buffer> {
    this.checkNotEmergency(req.res);
    this.checkRange(req.res, req.fromPos, req.lengthBytes);
    return this.withDisk(req.res, async (handle) => {
      const buf = Buffer.alloc(req.lengthBytes);
      await handleReader(handle).read(buf, req.fromPos);
      return buf;
    });
  }

  async position(_peer: string, req: PositionRequest): Promise<{ seq: number; origin: string; pos: number }> {
    this.checkNotEmergency(req.res);
    const p = this.ctx.primaryPosition(req.res);
    if (!p) throw new PeerRequestError('EAGAIN', `${this.ctx.host} is not actual primary of ${req.res}`);
    return p;
  }

  async pushLink(peer: string, entry: Entry): Promise<void> {
    const { tree, host } = this.ctx;
    const plan = planMerge([entry], (p) => localState(tree, p), { ...this.ctx.mergeLimits, sender: peer, receiver: host, nowUs: tree.clock.realNowUs(), facts: mergeFacts(tree), replayFloor: (res) => replayFloor(tree, res, host), linksOf: (h, dir) => linksOfHost(tree, h, dir) });
    const own = ownerOf(entry.p);
    if (plan.ignored > 0 && own.kind === 'host') plan.rejected.push({ path: entry.p, reason: `it belongs to ${own.host}, which only takes it from itself` });
    if (plan.rejected.length > 0) {
      const r = plan.rejected[0]!;
      (this.ctx.refusals ??= new RefusalLog({ log: this.ctx.log, nowMs: () => (this.ctx.clock ?? systemClock).monotonicMs() })).note(peer, 'pushed', r.path, r.reason);
      throw new PeerRequestError('EACCES', `${r.path}: ${r.reason}`);
    }
    if (applyMergePlan(this.ctx.tree, plan) > 0) this.ctx.onTreeChanged();
  }

  notify(peer: string): void {
    this.ctx.onNotify(peer);
  }
}

/** Size of a file, 0 when it does not exist. */
export async function fileBytes(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

/** A logfile opened for a log-read; a failure is the peer's error to read. */
async function openLog(path: string, req: LogReadRequest): Promise<FileHandle> {
  try {
    return await open(path, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new PeerRequestError(code === 'ENOENT' ? 'ENOENT' : 'EIO', `${req.name} of ${req.res}: ${code === 'ENOENT' ? 'no such logfile here' : (err as Error).message}`);
  }
}
