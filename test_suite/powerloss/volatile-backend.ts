// A disk with a volatile write cache, for power-loss tests: a BlockBackend (kernel-shim/backend.ts)
// over a durable image file plus an in-memory cache of 4 KiB blocks.
//
// - read: the cached block if there is one, else the durable file;
// - write / WRITE_ZEROES: into the cache only (a partial block is merged with its current
//   content first); the durable file is not touched;
// - FLUSH, and a FUA write: every cached block is written to the file, then fdatasync, then the
//   reply (a FLUSH covers everything acknowledged before it; writing out more than that, as a
//   FUA write does here, is allowed: a real disk may write any unflushed block at any time);
// - TRIM: a hint, ignored (the data stays).
//
// powerCut(rng) is the power loss: a seeded random subset of the cached blocks reaches the
// durable file (a real disk may have written any unflushed block before the power went), the
// rest is dropped. armCut(rng, n) does the same at a precise moment: right after the n-th write
// from now has gone into the cache (so the cut hits unflushed data). After a cut the disk is
// frozen: no request gets a reply (so nothing above can learn of a completion after the power
// went: a writer blocked in fdatasync stays blocked) until release(). From then on the disk is
// "off": every write, WRITE_ZEROES, TRIM and FLUSH is acknowledged WITHOUT storing anything (so
// whatever sits above - loop device, ext4 - can be unmounted without errors or hangs), and
// reads come from the durable file.
//
// All operations run one at a time (a promise chain): simple, and the cache never sees two
// read-modify-writes of one block interleave.
import { open, type FileHandle } from 'node:fs/promises';
import type { BlockBackend } from '../../kernel-shim/backend.js';

export const VOLATILE_BLOCK = 4096;
const ZERO_BLOCK = Buffer.alloc(VOLATILE_BLOCK);

export interface CutResult {
  applied: number;
  dropped: number;
}

export interface VolatileStats {
  /** blocks in the write cache now (written, not yet flushed) */
  cachedBlocks: number;
  writes: number;
  flushes: number;
  /** blocks written to the durable file by FLUSH/FUA */
  blocksFlushed: number;
  /** true after powerCut() */
  cut: boolean;
  /** at the cut: cached blocks written to the durable file / dropped */
  appliedAtCut: number;
  droppedAtCut: number;
  /** requests acknowledged and discarded after the cut */
  discardedAfterCut: number;
}

export class VolatileBackend implements BlockBackend {
  /** block number -> content (ZERO_BLOCK shared for zeroed blocks) */
  private readonly cache = new Map<number, Buffer>();
  private chain: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** after a cut: resolved by release(); every request waits for it */
  private gate: Promise<void> = Promise.resolve();
  private openGate: (() => void) | undefined;
  private armed: { rng: () => number; writesLeft: number; done: (r: CutResult) => void } | undefined;
  private readonly st: VolatileStats = {
    cachedBlocks: 0, writes: 0, flushes: 0, blocksFlushed: 0, cut: false, appliedAtCut: 0, droppedAtCut: 0, discardedAfterCut: 0,
  };

  private constructor(private readonly fh: FileHandle, readonly sizeBytes: number, readonly path: string) {}

  /** Opens (creating and extending, sparse, if needed) the durable image. */
  static async open(path: string, sizeBytes: number): Promise<VolatileBackend> {
    if (!(Number.isSafeInteger(sizeBytes) && sizeBytes > 0 && sizeBytes % VOLATILE_BLOCK === 0)) {
      throw new Error(`VolatileBackend: size ${sizeBytes} is not a positive multiple of ${VOLATILE_BLOCK}`);
    }
    const fh = await open(path, 'a+');
    await fh.close();
    const rw = await open(path, 'r+');
    const st = await rw.stat();
    if (st.size < sizeBytes) await rw.truncate(sizeBytes);
    return new VolatileBackend(rw, sizeBytes, path);
  }

  stats(): VolatileStats {
    return { ...this.st, cachedBlocks: this.cache.size };
  }

  get isCut(): boolean {
    return this.st.cut;
  }

  isWritable(): boolean {
    return !this.closed;
  }

  read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    return this.serial(async () => {
      const out = Buffer.allocUnsafe(lengthBytes);
      await this.readDurable(out, 0, lengthBytes, offsetBytes);
      if (this.st.cut) return out;
      const first = Math.floor(offsetBytes / VOLATILE_BLOCK);
      const last = Math.floor((offsetBytes + lengthBytes - 1) / VOLATILE_BLOCK);
      for (let b = first; b <= last; b++) {
        const cached = this.cache.get(b);
        if (!cached) continue;
        const blockStart = b * VOLATILE_BLOCK;
        const from = Math.max(offsetBytes, blockStart);
        const to = Math.min(offsetBytes + lengthBytes, blockStart + VOLATILE_BLOCK);
        cached.copy(out, from - offsetBytes, from - blockStart, to - blockStart);
      }
      return out;
    });
  }

  write(offsetBytes: number, data: Buffer, fua: boolean): Promise<void> {
    const copy = Buffer.from(data); // data may be a connection buffer
    return this.serial(async () => {
      if (this.st.cut) {
        this.st.discardedAfterCut++;
        return;
      }
      this.st.writes++;
      await this.store(offsetBytes, copy.length, (blockStart, from, to, block) => {
        copy.copy(block, from - blockStart, from - offsetBytes, to - offsetBytes);
      });
      if (await this.armedCutDue()) return;
      if (fua) await this.writeBack();
    });
  }

  writeZeroes(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    return this.serial(async () => {
      if (this.st.cut) {
        this.st.discardedAfterCut++;
        return;
      }
      this.st.writes++;
      await this.store(offsetBytes, lengthBytes, (blockStart, from, to, block) => {
        block.fill(0, from - blockStart, to - blockStart);
      });
      if (await this.armedCutDue()) return;
      if (fua) await this.writeBack();
    });
  }

  trim(_offsetBytes: number, _lengthBytes: number, _fua: boolean): Promise<void> {
    return this.serial(async () => {
      if (this.st.cut) this.st.discardedAfterCut++;
    });
  }

  flush(): Promise<void> {
    return this.serial(async () => {
      if (this.st.cut) {
        this.st.discardedAfterCut++;
        return;
      }
      this.st.flushes++;
      await this.writeBack();
    });
  }

  /**
   * The power goes now: each cached block reaches the durable file with probability 1/2 (drawn
   * from rng in block order), the rest is lost; the disk freezes until release().
   */
  powerCut(rng: () => number): Promise<CutResult> {
    return this.serial(() => this.cutNow(rng));
  }

  /** The power goes right after the `afterWrites`-th write (>= 1) from now went into the cache. */
  armCut(rng: () => number, afterWrites: number): Promise<CutResult> {
    if (this.armed || this.st.cut) return Promise.reject(new Error('VolatileBackend: a cut is already armed or done'));
    if (!(Number.isSafeInteger(afterWrites) && afterWrites >= 1)) return Promise.reject(new Error(`VolatileBackend: bad afterWrites ${afterWrites}`));
    return new Promise((done) => (this.armed = { rng, writesLeft: afterWrites, done }));
  }

  /**
   * Ends the freeze after a cut: held and later requests are acknowledged and discarded. Before
   * a cut it disarms an armed cut (whose promise then never settles): teardown after a failure.
   */
  release(): void {
    this.armed = undefined;
    this.openGate?.();
    this.openGate = undefined;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.release();
    await this.chain.catch(() => undefined);
    await this.fh.close();
  }

  // ---- internals ----------------------------------------------------------------------------

  /** Inside a serial op, after a write went into the cache: cut if the armed cut is due. */
  private async armedCutDue(): Promise<boolean> {
    const a = this.armed;
    if (!a || --a.writesLeft > 0) return false;
    this.armed = undefined;
    a.done(await this.cutNow(a.rng));
    await this.gate; // this write's reply waits for release() too
    return true;
  }

  private async cutNow(rng: () => number): Promise<CutResult> {
    if (this.st.cut) return { applied: 0, dropped: 0 };
    const blocks = [...this.cache.keys()].sort((a, b) => a - b);
    let applied = 0;
    for (const b of blocks) {
      if (rng() < 0.5) {
        await this.writeDurable(this.cache.get(b)!, b * VOLATILE_BLOCK);
        applied++;
      }
    }
    await this.fh.datasync();
    this.cache.clear();
    this.st.cut = true;
    this.st.appliedAtCut = applied;
    this.st.droppedAtCut = blocks.length - applied;
    this.gate = new Promise((r) => (this.openGate = r));
    return { applied, dropped: blocks.length - applied };
  }

  private serial<T>(op: () => Promise<T>): Promise<T> {
    const gated = async () => {
      await this.gate;
      return op();
    };
    const run = this.chain.then(gated, gated);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Puts [offset, offset+length) into the cache; `fill` writes the new bytes into a block. */
  private async store(offsetBytes: number, lengthBytes: number, fill: (blockStart: number, from: number, to: number, block: Buffer) => void): Promise<void> {
    const end = offsetBytes + lengthBytes;
    for (let b = Math.floor(offsetBytes / VOLATILE_BLOCK); b * VOLATILE_BLOCK < end; b++) {
      const blockStart = b * VOLATILE_BLOCK;
      const from = Math.max(offsetBytes, blockStart);
      const to = Math.min(end, blockStart + VOLATILE_BLOCK);
      const whole = from === blockStart && to === blockStart + VOLATILE_BLOCK;
      let block: Buffer;
      if (whole) {
        block = Buffer.allocUnsafe(VOLATILE_BLOCK);
      } else {
        // merge with the current content (the cached block, else the durable one)
        const cached = this.cache.get(b);
        block = cached === undefined ? await this.durableBlock(b) : cached === ZERO_BLOCK ? Buffer.alloc(VOLATILE_BLOCK) : cached;
      }
      fill(blockStart, from, to, block);
      this.cache.set(b, block.equals(ZERO_BLOCK) ? ZERO_BLOCK : block);
    }
  }

  private async durableBlock(b: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(VOLATILE_BLOCK);
    await this.readDurable(buf, 0, VOLATILE_BLOCK, b * VOLATILE_BLOCK);
    return buf;
  }

  /** Writes every cached block to the durable file (contiguous runs at once), then fdatasync. */
  private async writeBack(): Promise<void> {
    const blocks = [...this.cache.keys()].sort((a, b) => a - b);
    for (let i = 0; i < blocks.length;) {
      let j = i + 1;
      while (j < blocks.length && blocks[j] === blocks[j - 1]! + 1 && j - i < 256) j++;
      const run = Buffer.concat(blocks.slice(i, j).map((b) => this.cache.get(b)!));
      await this.writeDurable(run, blocks[i]! * VOLATILE_BLOCK);
      i = j;
    }
    await this.fh.datasync();
    this.st.blocksFlushed += blocks.length;
    // Only now is the content durable: until the fdatasync returned, a cut could still lose it.
    for (const b of blocks) this.cache.delete(b);
  }

  private async writeDurable(data: Buffer, position: number): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, position + done);
      done += bytesWritten;
    }
  }

  private async readDurable(out: Buffer, at: number, length: number, position: number): Promise<void> {
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(out, at + done, length - done, position + done);
      if (bytesRead === 0) {
        out.fill(0, at + done, at + length);
        return;
      }
      done += bytesRead;
    }
  }
}
