// The write-order oracle (docs/design.md §3 invariant 3, §7): a secondary's disk must equal the
// primary's disk after some prefix of the primary's write order.
//
// Every block a workload writes is self-describing: a header (magic, the global write sequence
// number, the block index, the block size, a CRC32C) and filler derived from (seq, block index).
// So a block read back from any replica says which write put it there, and a torn, misplaced or
// corrupted block is caught on its own.
//
// The oracle keeps the history as compact typed arrays (one entry per write, not per block) and
// checks an image in one streaming pass over the device plus one pass over the history.
//
// Ordering model. Writes are numbered in submission order (seq 1, 2, ...). Two writes are
// ordered when the first was acknowledged before the second was submitted ("happens before");
// pipelined writes in flight together are not ordered, and the primary may log them either way.
// A write that failed (connection lost, error reply) is "maybe written": it may or may not be in
// the primary's history, and nothing is required to follow it (it is assumed settled, applied or
// dropped, before anything submitted after its failure was seen). Writes to the same block are
// never in flight together (nextWrite refuses that), so per block, seq order is write order.
// An image is consistent iff some set S of writes, closed under "happens before", explains it:
// every block holds the last write of S to that block (or zeros if S has none). In a purely
// sequential history that is exactly "the history applied up to some prefix".
import { closeSync, openSync, readSync } from 'node:fs';
import { crc32c } from '@node-rs/crc32';
import { endianness } from 'node:os';

export const ORACLE_MAGIC = Buffer.from('MARSWOO1', 'latin1');
const OFF_SEQ = 8;
const OFF_BLOCK = 16;
const OFF_BLOCK_BYTES = 24;
const OFF_CRC = 28;
export const ORACLE_HEADER_BYTES = 32;
/** Sequence numbers and block indexes are stored in 32 bits in the history arrays. */
const MAX_U32 = 0xffff_ffff;
const DEFAULT_CHUNK_BYTES = 1024 * 1024;
const LITTLE_ENDIAN_HOST = endianness() === 'LE';

// ---- block codec --------------------------------------------------------------------------------

function fillerSeed(seq: number, blockIndex: number): number {
  let h = Math.imul((seq >>> 0) ^ 0x9e37_79b9, 0x85eb_ca6b) ^ Math.imul((blockIndex >>> 0) + 0x632b_e5ab, 0xc2b2_ae35);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb_352d);
  h ^= h >>> 15;
  return h === 0 ? 1 : h;
}

/** Filler words (little-endian u32) as a Uint32Array view when aligned, else null. */
function wordView(buf: Buffer, from: number, to: number): Uint32Array | null {
  const at = buf.byteOffset + from;
  return LITTLE_ENDIAN_HOST && at % 4 === 0 ? new Uint32Array(buf.buffer, at, (to - from) / 4) : null;
}

function writeFiller(buf: Buffer, at: number, blockBytes: number, seq: number, blockIndex: number): void {
  let x = fillerSeed(seq, blockIndex);
  const from = at + ORACLE_HEADER_BYTES;
  const to = at + blockBytes;
  const view = wordView(buf, from, to);
  if (view) {
    for (let i = 0; i < view.length; i++) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
      view[i] = x >>> 0;
    }
  } else {
    for (let o = from; o < to; o += 4) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
      buf.writeUInt32LE(x >>> 0, o);
    }
  }
}

function fillerMatches(buf: Buffer, at: number, blockBytes: number, seq: number, blockIndex: number): boolean {
  let x = fillerSeed(seq, blockIndex);
  const from = at + ORACLE_HEADER_BYTES;
  const to = at + blockBytes;
  const view = wordView(buf, from, to);
  if (view) {
    for (let i = 0; i < view.length; i++) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
      if (view[i] !== x >>> 0) return false;
    }
  } else {
    for (let o = from; o < to; o += 4) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
      if (buf.readUInt32LE(o) !== x >>> 0) return false;
    }
  }
  return true;
}

function blockCrc(buf: Buffer, at: number, blockBytes: number): number {
  const head = crc32c(buf.subarray(at, at + OFF_CRC));
  return crc32c(buf.subarray(at + ORACLE_HEADER_BYTES, at + blockBytes), head) >>> 0;
}

function checkBlockBytes(blockBytes: number): void {
  if (!(Number.isInteger(blockBytes) && blockBytes >= 512 && blockBytes % 512 === 0)) {
    throw new Error(`oracle: block size ${blockBytes} is not a positive multiple of 512`);
  }
}

/** The content of block `blockIndex` as written by write `seq` (into `out` at `at`, or a new buffer). */
export function encodeBlock(seq: number, blockIndex: number, blockBytes: number, out?: Buffer, at = 0): Buffer {
  checkBlockBytes(blockBytes);
  if (!(Number.isInteger(seq) && seq >= 1 && seq <= MAX_U32)) throw new Error(`oracle: bad seq ${seq}`);
  if (!(Number.isInteger(blockIndex) && blockIndex >= 0 && blockIndex <= MAX_U32)) throw new Error(`oracle: bad block index ${blockIndex}`);
  const buf = out ?? Buffer.allocUnsafe(blockBytes);
  ORACLE_MAGIC.copy(buf, at);
  buf.writeUInt32LE(seq, at + OFF_SEQ);
  buf.writeUInt32LE(0, at + OFF_SEQ + 4);
  buf.writeUInt32LE(blockIndex, at + OFF_BLOCK);
  buf.writeUInt32LE(0, at + OFF_BLOCK + 4);
  buf.writeUInt32LE(blockBytes, at + OFF_BLOCK_BYTES);
  writeFiller(buf, at, blockBytes, seq, blockIndex);
  buf.writeUInt32LE(blockCrc(buf, at, blockBytes), at + OFF_CRC);
  return buf;
}

export type DecodedBlock =
  | { kind: 'zero' }
  | { kind: 'tag'; seq: number; blockIndex: number }
  | { kind: 'bad'; why: string };

const zeroBlocks = new Map<number, Buffer>();
function zeroBlock(blockBytes: number): Buffer {
  let z = zeroBlocks.get(blockBytes);
  if (!z) zeroBlocks.set(blockBytes, (z = Buffer.alloc(blockBytes)));
  return z;
}

/** What one block of an image holds (`verifyFiller`: regenerate and compare the filler too). */
export function decodeBlock(buf: Buffer, at: number, blockBytes: number, verifyFiller = true): DecodedBlock {
  const block = buf.subarray(at, at + blockBytes);
  if (block.length !== blockBytes) return { kind: 'bad', why: `short block (${block.length} bytes)` };
  if (block.equals(zeroBlock(blockBytes))) return { kind: 'zero' };
  if (!block.subarray(0, ORACLE_MAGIC.length).equals(ORACLE_MAGIC)) return { kind: 'bad', why: 'neither zeros nor a tagged block (no magic)' };
  const taggedBytes = block.readUInt32LE(OFF_BLOCK_BYTES);
  if (taggedBytes !== blockBytes) return { kind: 'bad', why: `tagged for ${taggedBytes}-byte blocks, not ${blockBytes}` };
  if (block.readUInt32LE(OFF_CRC) !== blockCrc(block, 0, blockBytes)) return { kind: 'bad', why: 'checksum mismatch (torn or corrupted block)' };
  if (block.readUInt32LE(OFF_SEQ + 4) !== 0 || block.readUInt32LE(OFF_BLOCK + 4) !== 0) return { kind: 'bad', why: 'sequence number or block index beyond 32 bits' };
  const seq = block.readUInt32LE(OFF_SEQ);
  const blockIndex = block.readUInt32LE(OFF_BLOCK);
  if (seq === 0) return { kind: 'bad', why: 'tag with sequence number 0' };
  if (verifyFiller && !fillerMatches(block, 0, blockBytes, seq, blockIndex)) return { kind: 'bad', why: `filler does not belong to write #${seq}` };
  return { kind: 'tag', seq, blockIndex };
}

// ---- history and check --------------------------------------------------------------------------

export interface OracleOptions {
  deviceBytes: number;
  /** Default 4096; a positive multiple of 512 dividing deviceBytes. */
  blockBytes?: number;
}

export interface BlockRange {
  start: number;
  count: number;
}

export interface OracleWrite {
  seq: number;
  /** byte offset of the write on the device */
  pos: number;
  /** whole tagged blocks, every one carrying `seq` */
  data: Buffer;
  start: number;
  count: number;
}

export interface CheckOptions {
  /** Bytes per read() call. Default 1 MiB (rounded down to whole blocks). */
  chunkBytes?: number;
  /** Regenerate and compare every block's filler (the CRC already covers it). Default true. */
  verifyFiller?: boolean;
  /** Problems listed in the reason. Default 8. */
  maxProblems?: number;
}

export type CheckResult =
  | {
      ok: true;
      /** The newest write the image shows (0: none). */
      prefixMin: number;
      /**
       * One less than the oldest write the image provably lacks (lastSeq: lacks none). For a
       * sequential history the image equals the history applied through any N in
       * [prefixMin, prefixMax]; with pipelined writes prefixMin may exceed prefixMax.
       */
      prefixMax: number;
      /** The history's length when the check started. */
      lastSeq: number;
      /** The oldest acknowledged write the image lacks, where, and what that block holds. */
      firstMissingAcked: { seq: number; block: number; holds: number } | null;
    }
  | { ok: false; reason: string; problems: string[] };

export type ReadImage = (pos: number, length: number) => Promise<Buffer> | Buffer;

/** A growable typed array. */
class Column<T extends Uint32Array | Float64Array> {
  data: T;
  constructor(private readonly make: (n: number) => T) {
    this.data = make(1024);
  }
  set(i: number, v: number): void {
    if (i >= this.data.length) {
      const bigger = this.make(Math.max(i + 1, this.data.length * 2));
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[i] = v;
  }
}

function describeBlocks(start: number, count: number): string {
  return count === 1 ? `block ${start}` : `blocks ${start}-${start + count - 1}`;
}

function describeHolds(seq: number): string {
  return seq === 0 ? 'was never written' : `holds write #${seq}`;
}

export class WriteOrderOracle {
  readonly deviceBytes: number;
  readonly blockBytes: number;
  readonly blockCount: number;
  private seqs = 0;
  /** History by seq (index 0 unused): first block, block count, and the two event ticks. */
  private readonly starts = new Column((n) => new Uint32Array(n));
  private readonly counts = new Column((n) => new Uint32Array(n));
  private readonly submitTick = new Column((n) => new Float64Array(n));
  /** Infinity while unacknowledged (in flight, or failed = maybe written). */
  private readonly ackTick = new Column((n) => new Float64Array(n));
  private clock = 0;
  private readonly pending = new Map<number, BlockRange>();
  private failedCount = 0;
  private durable = 0;

  constructor(opts: OracleOptions) {
    const blockBytes = opts.blockBytes ?? 4096;
    checkBlockBytes(blockBytes);
    if (!(Number.isSafeInteger(opts.deviceBytes) && opts.deviceBytes > 0 && opts.deviceBytes % blockBytes === 0)) {
      throw new Error(`oracle: device size ${opts.deviceBytes} is not a positive multiple of ${blockBytes}`);
    }
    this.deviceBytes = opts.deviceBytes;
    this.blockBytes = blockBytes;
    this.blockCount = opts.deviceBytes / blockBytes;
    if (this.blockCount > 2 ** 31) throw new Error('oracle: too many blocks');
  }

  /** The newest write's seq (the history's length). */
  get lastSeq(): number {
    return this.seqs;
  }

  /** Writes submitted and neither acknowledged nor failed. */
  get pendingCount(): number {
    return this.pending.size;
  }

  get failedWrites(): number {
    return this.failedCount;
  }

  /** markDurable's highest argument: acknowledged writes up to it were flushed. */
  get durableSeq(): number {
    return this.durable;
  }

  blockRangeOf(seq: number): BlockRange {
    this.requireSeq(seq);
    return { start: this.starts.data[seq]!, count: this.counts.data[seq]! };
  }

  isAcked(seq: number): boolean {
    this.requireSeq(seq);
    return Number.isFinite(this.ackTick.data[seq]!);
  }

  /** Does [start, start+count) overlap a write still in flight? (Such a write is refused.) */
  overlapsPending(start: number, count: number): boolean {
    for (const p of this.pending.values()) {
      if (start < p.start + p.count && p.start < start + count) return true;
    }
    return false;
  }

  /**
   * Records the next write (contiguous whole blocks) and returns its tagged data. By default the
   * write counts as acknowledged at once (a sequential writer); `pending: true` leaves it in
   * flight until markAcked() or markFailed().
   */
  nextWrite(blocks: number[] | BlockRange, opts: { pending?: boolean } = {}): OracleWrite {
    const { start, count } = Array.isArray(blocks) ? this.rangeOf(blocks) : blocks;
    if (!(Number.isInteger(start) && Number.isInteger(count) && count >= 1 && start >= 0 && start + count <= this.blockCount)) {
      throw new Error(`oracle: ${count} block(s) at ${start} do not fit a device of ${this.blockCount} blocks`);
    }
    if (this.overlapsPending(start, count)) {
      throw new Error(`oracle: ${describeBlocks(start, count)} overlap a write still in flight (their order would be undefined)`);
    }
    if (this.seqs >= MAX_U32) throw new Error('oracle: history full');
    const seq = ++this.seqs;
    this.starts.set(seq, start);
    this.counts.set(seq, count);
    this.submitTick.set(seq, ++this.clock);
    if (opts.pending) {
      this.ackTick.set(seq, Infinity);
      this.pending.set(seq, { start, count });
    } else {
      this.ackTick.set(seq, ++this.clock);
    }
    const data = Buffer.allocUnsafe(count * this.blockBytes);
    for (let i = 0; i < count; i++) encodeBlock(seq, start + i, this.blockBytes, data, i * this.blockBytes);
    return { seq, pos: start * this.blockBytes, data, start, count };
  }

  /** The server acknowledged write `seq`: every write submitted from now on follows it. */
  markAcked(seq: number): void {
    this.takePending(seq, 'markAcked');
    this.ackTick.set(seq, ++this.clock);
  }

  /** Write `seq` got an error or its connection died: it may or may not have been applied. */
  markFailed(seq: number): void {
    this.takePending(seq, 'markFailed');
    this.failedCount++;
  }

  /** Acknowledged writes up to `seq` are durable (a FLUSH completed after them). */
  markDurable(seq: number): void {
    this.requireSeq(seq);
    if (seq > this.durable) this.durable = seq;
  }

  /** The device after writes 1..throughSeq, in seq order (for tests on small images). */
  renderPrefix(throughSeq: number): Buffer {
    if (!(Number.isInteger(throughSeq) && throughSeq >= 0 && throughSeq <= this.seqs)) throw new Error(`oracle: no prefix ${throughSeq}`);
    const last = new Uint32Array(this.blockCount);
    for (let s = 1; s <= throughSeq; s++) last.fill(s, this.starts.data[s]!, this.starts.data[s]! + this.counts.data[s]!);
    const image = Buffer.alloc(this.deviceBytes);
    for (let b = 0; b < this.blockCount; b++) {
      if (last[b] !== 0) encodeBlock(last[b]!, b, this.blockBytes, image, b * this.blockBytes);
    }
    return image;
  }

  /** Is the image some consistent state of the history? (See the ordering model above.) */
  async checkImage(read: ReadImage, opts: CheckOptions = {}): Promise<CheckResult> {
    const n = this.seqs; // writes recorded while the image is read are not considered
    const maxProblems = opts.maxProblems ?? 8;
    const problems: string[] = [];
    let problemCount = 0;
    const problem = (msg: string) => {
      problemCount++;
      if (problems.length < maxProblems) problems.push(msg);
    };
    const bs = this.blockBytes;
    const chunkBytes = Math.max(bs, Math.floor((opts.chunkBytes ?? DEFAULT_CHUNK_BYTES) / bs) * bs);
    const verifyFiller = opts.verifyFiller ?? true;
    const starts = this.starts.data;
    const counts = this.counts.data;

    // Pass 1 (device): which write each block holds; where each write is visible.
    const imageSeq = new Uint32Array(this.blockCount);
    const shownAt = new Int32Array(n + 1).fill(-1);
    for (let pos = 0; pos < this.deviceBytes; pos += chunkBytes) {
      const len = Math.min(chunkBytes, this.deviceBytes - pos);
      const chunk = await read(pos, len);
      if (chunk.length !== len) throw new Error(`oracle: read(${pos}, ${len}) returned ${chunk.length} bytes`);
      for (let off = 0; off < len; off += bs) {
        const b = (pos + off) / bs;
        const d = decodeBlock(chunk, off, bs, verifyFiller);
        if (d.kind === 'zero') continue;
        if (d.kind === 'bad') {
          problem(`block ${b}: ${d.why}`);
          continue;
        }
        if (d.blockIndex !== b) {
          problem(`block ${b}: holds the content of block ${d.blockIndex} (write #${d.seq}), misplaced`);
        } else if (d.seq > n) {
          problem(`block ${b}: holds write #${d.seq}, which is not in the history (${n} writes)`);
        } else if (b < starts[d.seq]! || b >= starts[d.seq]! + counts[d.seq]!) {
          problem(`block ${b}: holds write #${d.seq}, which wrote ${describeBlocks(starts[d.seq]!, counts[d.seq]!)}, not block ${b}`);
        } else {
          imageSeq[b] = d.seq;
          if (shownAt[d.seq] === -1) shownAt[d.seq] = b;
        }
      }
    }
    if (problemCount > 0) return this.failure(problems, problemCount);

    // Pass 2 (history): a write s is "lacking" at block c when c holds something older than s.
    // A lacking write must not be visible anywhere (else it is torn) and must not happen
    // before any visible write (else the image is no closed prefix).
    let newestShown = 0;
    let newestShownSubmit = -Infinity;
    let oldestLacking = 0;
    let earliestAckLacking = Infinity;
    let earliestAckLackingSeq = 0;
    let earliestAckLackingBlock = -1;
    let firstMissingAcked: { seq: number; block: number; holds: number } | null = null;
    for (let s = 1; s <= n; s++) {
      if (shownAt[s]! >= 0) {
        newestShown = s;
        const submit = this.submitTick.data[s]!;
        if (submit > newestShownSubmit) newestShownSubmit = submit;
      }
      const end = starts[s]! + counts[s]!;
      for (let c = starts[s]!; c < end; c++) {
        if (imageSeq[c]! >= s) continue;
        if (shownAt[s]! >= 0) {
          const before = imageSeq[c] === 0 ? 'never written' : `holds write #${imageSeq[c]}`;
          problem(`write #${s} (${describeBlocks(starts[s]!, counts[s]!)}) is visible at block ${shownAt[s]}, but block ${c} is still as before #${s} (${before}): a torn write`);
          break;
        }
        if (oldestLacking === 0) oldestLacking = s;
        const ack = this.ackTick.data[s]!;
        if (ack < earliestAckLacking) {
          earliestAckLacking = ack;
          earliestAckLackingSeq = s;
          earliestAckLackingBlock = c;
        }
        if (firstMissingAcked === null && Number.isFinite(ack)) firstMissingAcked = { seq: s, block: c, holds: imageSeq[c]! };
        break;
      }
    }
    if (problemCount > 0) return this.failure(problems, problemCount);

    if (earliestAckLacking < newestShownSubmit) {
      // Name the visible write submitted last after the lacking write's acknowledgement.
      let w = 0;
      for (let s = n; s >= 1; s--) {
        if (shownAt[s]! >= 0 && this.submitTick.data[s]! > earliestAckLacking) {
          w = s;
          break;
        }
      }
      const f = earliestAckLackingSeq;
      const fb = earliestAckLackingBlock;
      problem(
        `block ${fb} ${describeHolds(imageSeq[fb]!)} and lacks write #${f}, but block ${shownAt[w]} holds write #${w}, ` +
          `submitted after #${f} was acknowledged: no prefix of the write order gives this image`,
      );
      return this.failure(problems, problemCount);
    }
    return {
      ok: true,
      prefixMin: newestShown,
      prefixMax: oldestLacking === 0 ? n : oldestLacking - 1,
      lastSeq: n,
      firstMissingAcked,
    };
  }

  /**
   * checkImage, and the image must include every acknowledged write up to `atLeastSeq` (a
   * replica that caught up: checkReached(read, oracle.lastSeq) after the workload stopped).
   */
  async checkReached(read: ReadImage, atLeastSeq: number, opts: CheckOptions = {}): Promise<CheckResult> {
    if (!(Number.isInteger(atLeastSeq) && atLeastSeq >= 0 && atLeastSeq <= this.seqs)) throw new Error(`oracle: no write #${atLeastSeq}`);
    const r = await this.checkImage(read, opts);
    if (!r.ok) return r;
    const m = r.firstMissingAcked;
    if (m !== null && m.seq <= atLeastSeq) {
      const why = `the image lacks acknowledged write #${m.seq} (block ${m.block} ${describeHolds(m.holds)}), so it has not reached #${atLeastSeq}`;
      return { ok: false, reason: why, problems: [why] };
    }
    return r;
  }

  private failure(problems: string[], total: number): CheckResult {
    const more = total > problems.length ? ` (and ${total - problems.length} more)` : '';
    return { ok: false, reason: `${problems.join('; ')}${more}`, problems };
  }

  private rangeOf(blocks: number[]): BlockRange {
    if (blocks.length === 0) throw new Error('oracle: a write of no blocks');
    for (let i = 1; i < blocks.length; i++) {
      if (blocks[i] !== blocks[0]! + i) throw new Error(`oracle: blocks ${blocks.join(',')} are not one contiguous ascending range`);
    }
    return { start: blocks[0]!, count: blocks.length };
  }

  private requireSeq(seq: number): void {
    if (!(Number.isInteger(seq) && seq >= 1 && seq <= this.seqs)) throw new Error(`oracle: no write #${seq}`);
  }

  private takePending(seq: number, what: string): void {
    this.requireSeq(seq);
    if (!this.pending.delete(seq)) throw new Error(`oracle.${what}(${seq}): write #${seq} is not in flight`);
  }
}

/** The image reader checkImage wants, over a file (a data disk). */
export function readImage(path: string): (pos: number, len: number) => Buffer {
  return (pos: number, len: number) => {
    const fd = openSync(path, 'r');
    try {
      const buf = Buffer.alloc(len);
      readSync(fd, buf, 0, len, pos);
      return buf;
    } finally {
      closeSync(fd);
    }
  };
}
