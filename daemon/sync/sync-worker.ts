// The fast full sync of a joining secondary (the MARS user manual: sync): compare per-block
// digests of the primary's disk and ours, copy only the blocks that differ, persist progress
// in syncstatus-HOST (only over blocks that are durable on our disk) so an interrupted sync
// resumes there, and at the end record syncpos-HOST = the primary's durable log position:
// the copy is a mix of times, and becomes consistent once replay passes that point.
// The primary is reached through SyncPeers (marsd: its PeerManager's links); waits and the
// rate figure use the injected clock.
import type { TreeStore } from '../../common/tree/store.js';
import { resPaths } from '../../common/tree/paths.js';
import { readSyncLimit, throttleWaitMs } from './sync-limit.js';
import { formatReplayLink } from '../../common/log/links.js';
import type { DataDisk } from '../../common/disk/data-disk.js';
import type { PeerManager } from '../propagate/peer-manager.js';
import type { PeerConnection } from '../net/connection.js';
import type { Clock } from '../../common/util/clock.js';
import { failStopOnInvariant } from '../../common/util/assert.js';
import { diskDigests, differingRanges, keyedDigestAvailable } from './digests.js';
import { randomBytes } from 'node:crypto';
import { DIGEST_KEY_BYTES, KEYED_DIGEST, PREFERRED_DIGEST, SYNC_BLOCK_BYTES, type DigestAlgorithm } from '../../common/resource/sync-blocks.js';
import { primaryPosition, syncDigests, syncRead } from '../propagate/peer-calls.js';
import { clearResyncRanges, loadResyncRanges } from '../../common/resource/resync.js';
import type { LogFn } from '../../common/util/log.js';

/** What the sync needs of the other members: the connection to the primary, while there is one. */
export interface SyncPeers {
  connection(peer: string): PeerConnection | undefined;
}

/** SyncPeers of a running marsd: the links of its PeerManager. */
export function peerManagerSyncPeers(peers: PeerManager): SyncPeers {
  return { connection: (peer) => peers.link(peer)?.conn };
}

/** an interrupted sync resumes after this pause (a stop ends the pause at once) */
const RETRY_MS = 1000;

export interface SyncOptions {
  tree: TreeStore;
  res: string;
  host: string;
  primary: string;
  disk: DataDisk;
  sizeBytes: number;
  peers: SyncPeers;
  log: LogFn;
  clock: Clock;
  onProgress: () => void;
  /** bytes of the disk compared or copied, as each batch completes (mars_synced_bytes_total) */
  onSynced?: (bytes: number) => void;
}

const CHUNK_BYTES = 16 << 20;
const MAX_READ_BYTES = 1 << 20;
/** sync-reads of differing blocks in flight at once (a sliding window, not batches) */
const READS_IN_FLIGHT = 16;
/**
 * Chunks whose digests are asked for (and made here) while an earlier chunk's blocks are still
 * copied: the primary's hashing, ours and the copying overlap instead of taking turns.
 */
const CHUNKS_AHEAD = 2;
const PERSIST_EVERY_BYTES = 64 << 20;

type Range = { pos: number; lengthBytes: number };

export class SyncWorker {
  private running = false;
  private loopDone: Promise<void> | undefined;
  private stopSignal = new AbortController();
  /** bytes of block data received in this run (what crossed the network, digests aside) */
  receivedBytes = 0;
  comparedBytes = 0;
  differingBlocks = 0;
  rateBytesPerS = 0;
  state = 'idle';
  done = false;
  /**
   * Every block below this disk offset is equal to the primary's or was copied and written (not
   * necessarily durable yet): an interrupted run persists it (after a datasync) and the next
   * run resumes here, so a dropped connection never restarts the sync from its last persisted
   * point (issue 11: "resuming at 0 bytes" with every 8 MiB disk).
   */
  private verifiedPos = 0;
  /**
   * The key of the keyed block digest (gmac-aes128), new for every run: content written before
   * it existed cannot have been made to collide, and what is written after it is in the
   * primary's log, which replay applies after the sync. None where we cannot make that digest.
   */
  private digestKey: Buffer | undefined;

  constructor(private readonly o: SyncOptions) {}

  /** How far this run got (not necessarily durable: syncstatus is the durable mark), for sync-pos. */
  get positionBytes(): number {
    return this.verifiedPos;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.stopSignal = new AbortController();
    this.loopDone = this.loop();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.stopSignal.abort();
    await this.loopDone;
    this.loopDone = undefined;
  }

  private syncstatus(): number {
    const v = Number(this.o.tree.value(resPaths.syncstatus(this.o.res, this.o.host)) ?? '0');
    return Number.isSafeInteger(v) && v >= 0 ? v - (v % SYNC_BLOCK_BYTES) : 0;
  }

  private async loop(): Promise<void> {
    while (this.running && !this.done) {
      try {
        await this.runOnce();
      } catch (err) {
        failStopOnInvariant(err);
        await this.persistVerified();
        this.state = `sync interrupted: ${(err as Error).message}`;
        this.o.log('warn', `${this.o.res}: ${this.state}; resuming at ${this.syncstatus()} bytes`);
        await this.o.clock.sleep(RETRY_MS, this.stopSignal.signal).catch(() => undefined); // aborted: stopping
      }
    }
  }

  /** After an interruption: make what was verified durable and record it in syncstatus. */
  private async persistVerified(): Promise<void> {
    const pos = this.verifiedPos - (this.verifiedPos % SYNC_BLOCK_BYTES);
    if (pos <= this.syncstatus() || pos >= this.o.sizeBytes) return; // the final syncstatus only with syncpos
    try {
      await this.o.disk.datasync(); // syncstatus may only cover blocks that are on the disk
      this.o.tree.write(resPaths.syncstatus(this.o.res, this.o.host), String(pos), { durable: true });
    } catch (err) {
      failStopOnInvariant(err);
      this.o.log('warn', `${this.o.res}: sync progress not saved: ${(err as Error).message}`);
    }
  }

  /** The ranges of one chunk whose block digests differ from the primary's. */
  private async differing(pos: number, len: number): Promise<Range[]> {
    const conn = this.connection();
    const key = this.digestKey;
    // Ours are made the way we ask for while the primary makes its own; a primary that cannot
    // make the keyed digest answers with sha1 (an older one with md5), and ours are made again.
    const mine = (algorithm: DigestAlgorithm) => diskDigests(this.o.disk.fd, this.o.disk, pos, len, algorithm, algorithm === KEYED_DIGEST ? key : undefined);
    const asked = key ? KEYED_DIGEST : PREFERRED_DIGEST;
    // Both settle before this returns, even when one fails: our digests read the disk's
    // descriptor, which a stop closes once every chunk's promise has settled.
    const [theirsR, preferredR] = await Promise.allSettled([syncDigests(conn, this.o.res, pos, len, key), mine(asked)]);
    if (theirsR.status === 'rejected') throw theirsR.reason;
    if (preferredR.status === 'rejected') throw preferredR.reason;
    const theirs = theirsR.value;
    const ours = theirs.algorithm === asked ? preferredR.value : await mine(theirs.algorithm);
    return differingRanges(pos, ours, theirs.digests, MAX_READ_BYTES);
  }

  /**
   * Copy a chunk's differing ranges from the primary, READS_IN_FLIGHT at a time; the verified
   * position follows the first range not yet written. After a failure no further read starts,
   * and the error is thrown once the reads in flight have ended (none writes behind the caller's back).
   */
  private async copy(ranges: Range[], pos: number, len: number): Promise<void> {
    this.differingBlocks += ranges.reduce((n, r) => n + r.lengthBytes / SYNC_BLOCK_BYTES, 0);
    const conn = this.connection();
    const written = new Array<boolean>(ranges.length).fill(false);
    let next = 0;
    let firstUnwritten = 0;
    let failed = false;
    let counted = pos;
    const lane = async (): Promise<void> => {
      while (next < ranges.length && !failed && this.running) {
        const i = next++;
        const r = ranges[i]!;
        try {
          const data = await syncRead(conn, this.o.res, r.pos, r.lengthBytes);
          if (data.length !== r.lengthBytes) throw new Error(`sync-read of ${r.lengthBytes} bytes at ${r.pos} returned ${data.length}`);
          await this.o.disk.write(data, r.pos);
          this.receivedBytes += data.length;
        } catch (err) {
          failed = true;
          throw err;
        }
        written[i] = true;
        while (firstUnwritten < ranges.length && written[firstUnwritten]) firstUnwritten++;
        // Everything before the first range still to copy is equal or written now.
        this.verifiedPos = ranges[firstUnwritten]?.pos ?? pos + len;
        this.o.onSynced?.(this.verifiedPos - counted);
        counted = this.verifiedPos;
      }
    };
    const results = await Promise.allSettled(Array.from({ length: Math.min(READS_IN_FLIGHT, ranges.length) }, lane));
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure) throw failure.reason;
    if (!this.running) return; // stopped: the verified position stays where the copies got
    this.verifiedPos = pos + len;
    if (counted < pos + len) this.o.onSynced?.(pos + len - counted);
    this.comparedBytes += len;
  }

  private connection() {
    const conn = this.o.peers.connection(this.o.primary);
    if (!conn) throw new Error(`no connection to the primary ${this.o.primary}`);
    return conn;
  }

  private async runOnce(): Promise<void> {
    const start = this.syncstatus();
    this.verifiedPos = start;
    this.digestKey = keyedDigestAvailable() ? randomBytes(DIGEST_KEY_BYTES) : undefined;
    this.state = `syncing from ${this.o.primary} at ${start}`;
    const chunks = this.chunksFrom(start);
    const ahead: Promise<Range[]>[] = [];
    const ask = (i: number): void => {
      const c = chunks[i];
      if (!c) return;
      const p = this.differing(c.pos, c.lengthBytes);
      p.catch(() => undefined); // awaited in its turn; one abandoned by a stop or failure is not unhandled
      ahead.push(p);
    };
    try {
      for (let i = 0; i < CHUNKS_AHEAD; i++) ask(i);
      await this.copyChunks(chunks, start, (i) => {
        ask(i + CHUNKS_AHEAD);
        return ahead.shift()!;
      });
    } finally {
      await Promise.allSettled(ahead); // digests in the pool read our disk's descriptor until they end
    }
    if (this.running) await this.finish();
  }

  /**
   * The chunks from `start` on, in disk order. After an invalidate only the ranges this host
   * wrote to since a split brain are compared (invalidate.ts); otherwise the whole disk.
   * syncstatus is a disk offset either way: every range below it is done.
   */
  private chunksFrom(start: number): Range[] {
    const segments = loadResyncRanges(this.o.tree, this.o.res, this.o.sizeBytes) ?? [{ pos: 0, lengthBytes: this.o.sizeBytes }];
    const chunks: Range[] = [];
    for (const seg of segments) {
      const segEnd = seg.pos + seg.lengthBytes;
      for (let p = Math.max(start, seg.pos); p < segEnd; p += CHUNK_BYTES) chunks.push({ pos: p, lengthBytes: Math.min(CHUNK_BYTES, segEnd - p) });
    }
    return chunks;
  }

  /** Copy the differing blocks of every chunk in turn (rangesOf(i): chunk i's, asked for ahead). */
  private async copyChunks(chunks: Range[], start: number, rangesOf: (i: number) => Promise<Range[]>): Promise<void> {
    const { tree, res, host, disk, sizeBytes } = this.o;
    const startedMs = this.o.clock.nowMs();
    let persisted = start;
    let doneBytes = 0;
    for (let i = 0; i < chunks.length && this.running; i++) {
      const { pos, lengthBytes } = chunks[i]!;
      await this.copy(await rangesOf(i), pos, lengthBytes);
      if (!this.running) break;
      doneBytes += lengthBytes;
      // set-sync-limit-value: read every chunk, so a change applies to this run too.
      const waitMs = throttleWaitMs(doneBytes, this.o.clock.nowMs() - startedMs, readSyncLimit(tree, host));
      if (waitMs > 0) await this.o.clock.sleep(waitMs, this.stopSignal.signal).catch(() => undefined); // aborted: stopping
      const elapsedS = (this.o.clock.nowMs() - startedMs) / 1000;
      this.rateBytesPerS = elapsedS > 0 ? Math.round(doneBytes / elapsedS) : 0;
      // The final syncstatus (= size) is written by finish(), after syncpos: a complete
      // syncstatus without its syncpos would let a crash leave a mixed-time copy that looks consistent.
      const end = pos + lengthBytes;
      if (end - persisted >= PERSIST_EVERY_BYTES && end < sizeBytes) {
        await disk.datasync(); // syncstatus may only cover blocks that are on the disk
        tree.write(resPaths.syncstatus(res, host), String(end), { durable: true });
        persisted = end;
        this.o.onProgress();
      }
    }
  }

  /**
   * Everything on the primary's disk is in its log before its durable end, so replaying up to
   * that position (from the join point) makes our mixed-time copy consistent.
   */
  private async finish(): Promise<void> {
    const { tree, res, host, disk, sizeBytes } = this.o;
    await disk.datasync();
    const p = await primaryPosition(this.connection(), res);
    tree.ensureDir(resPaths.actualDir(res, host)); // not made yet when the sync finishes before the first status update
    tree.write(resPaths.actual(res, host, 'verifystatus'), `${this.comparedBytes / SYNC_BLOCK_BYTES - this.differingBlocks},${this.differingBlocks}`, { onlyIfChanged: true });
    tree.write(resPaths.syncpos(res, host), formatReplayLink({ seq: p.seq, origin: p.origin, minPos: p.pos, len: 0 }), { durable: true });
    clearResyncRanges(tree, res); // before syncstatus: a crash in between resyncs the whole disk, never too little
    tree.write(resPaths.syncstatus(res, host), String(sizeBytes), { durable: true });
    this.done = true;
    this.state = `sync done: ${this.differingBlocks} differing blocks copied (${this.receivedBytes} bytes)`;
    this.o.log('info', `${res}: ${this.state}; consistent once replay passes ${p.seq}:${p.pos}`);
    this.o.onProgress();
  }
}
