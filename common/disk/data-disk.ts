// The underlying data disk of a resource (`data-HOST`): a block device or a plain file.
// Positional I/O only; durability via fdatasync. Size of a block device comes from seeking
// to its end, since fstat reports 0 for devices.
import { promises as fsp, constants as fsc, openSync, closeSync, fstatSync } from 'node:fs';
import { createRequire } from 'node:module';

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

export class DataDisk {
  private constructor(readonly path: string, private readonly handle: fsp.FileHandle, private sizeNow: number) {}

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
    let done = 0;
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

  async datasync(): Promise<void> {
    await this.handle.datasync();
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
