// The underlying data disk of a resource (`data-HOST`): a block device or a plain file.
// Positional I/O only; durability via fdatasync. Size of a block device comes from seeking
// to its end, since fstat reports 0 for devices.
import { promises as fsp, constants as fsc, openSync, closeSync, fstatSync } from 'node:fs';
import { createRequire } from 'node:module';
import { NowaitReader, nativeIoAvailable, writeBatch } from './native-io.js';

const require = createRequire(import.meta.url);
const fsExt = require('fs-ext') as { seekSync(fd: number, offset: number, whence: number): number };
const SEEK_END = 2;

export function diskSizeBytes(path: string): number {
  const fd = openSync(path, fsc.O_RDONLY);
  try {
    const st = fstatSync(fd);
    if (st.isFile()) return st.size;
    if (st.isBlockDevice()) return fsExt.seekSync(fd, 0, SEEK_END);
    throw new Error(`${path} is neither a block device nor a regular file`);
  } finally {
    closeSync(fd);
  }
}

/** writeMany's fallback: at most this many buffers per vectored write (1 MiB of pages) */
const MAX_RUN_BUFFERS = 256;

export class DataDisk {
  /** cached data is read on the event loop, the rest on libuv's pool (native-io.ts) */
  readonly nowait = new NowaitReader();

  private constructor(readonly path: string, private readonly handle: fsp.FileHandle, private sizeNow: number) {}

  /** The open descriptor, for a thread that reads it while this disk stays open (sync digests). */
  get fd(): number {
    return this.handle.fd;
  }

  /** The size when opened or last refreshed. */
  get sizeBytes(): number {
    return this.sizeNow;
  }

  /** Read the size again: the disk may have been grown underneath (resize). */
  refreshSize(): number {
    this.sizeNow = diskSizeBytes(this.path);
    return this.sizeNow;
  }

  static async open(path: string): Promise<DataDisk> {
    const sizeBytes = diskSizeBytes(path);
    const handle = await fsp.open(path, fsc.O_RDWR);
    return new DataDisk(path, handle, sizeBytes);
  }

  async read(into: Buffer, offsetBytes: number): Promise<void> {
    let done = this.nowait.read(this.handle.fd, into, offsetBytes);
    while (done < into.length) {
      const { bytesRead } = await this.handle.read(into, done, into.length - done, offsetBytes + done);
      if (bytesRead === 0) {
        into.fill(0, done); // a sparse file shorter than the resource reads as zeros
        return;
      }
      done += bytesRead;
    }
  }

  async write(data: Buffer, offsetBytes: number): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.handle.write(data, done, data.length - done, offsetBytes + done);
      done += bytesWritten;
    }
  }

  async writev(buffers: Buffer[], offsetBytes: number): Promise<void> {
    const total = buffers.reduce((n, b) => n + b.length, 0);
    const { bytesWritten } = await this.handle.writev(buffers, offsetBytes);
    if (bytesWritten < total) {
      // Short vectored write (rare): finish the rest piece by piece.
      await this.write(Buffer.concat(buffers).subarray(bytesWritten), offsetBytes + bytesWritten);
    }
  }

  /**
   * Write buffers[i] at offsets[i] (sorted by offset; adjacent ones coalesce into one vectored
   * write of at most MAX_RUN_BUFFERS). With the native helper it is one pool task; without it,
   * one pool task per coalesced run, `parallel` at a time.
   */
  async writeMany(buffers: Buffer[], offsets: number[], parallel: number): Promise<void> {
    if (buffers.length === 0) return;
    if (nativeIoAvailable()) return writeBatch(this.handle.fd, buffers, offsets, this.path);
    const runs: { buffers: Buffer[]; offset: number }[] = [];
    let end = -1;
    for (let i = 0; i < buffers.length; i++) {
      const last = runs[runs.length - 1];
      if (last && offsets[i] === end && last.buffers.length < MAX_RUN_BUFFERS) last.buffers.push(buffers[i]!);
      else runs.push({ buffers: [buffers[i]!], offset: offsets[i]! });
      end = offsets[i]! + buffers[i]!.length;
    }
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < runs.length) {
        const run = runs[next++]!;
        await this.writev(run.buffers, run.offset);
      }
    };
    await Promise.all(Array.from({ length: Math.min(parallel, runs.length) }, worker));
  }

  async datasync(): Promise<void> {
    await this.handle.datasync();
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
