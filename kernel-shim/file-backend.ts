// A BlockBackend on a plain file: pread/pwrite, fdatasync on flush and FUA (concurrent syncs
// share one fdatasync), WRITE_ZEROES by writing zeroes in chunks, TRIM ignored. Used by the
// NBD tests and as the baseline in the benchmarks; it has no replication. Errors of a sync
// reach the requests that waited for it; where a sync is only awaited to settle (close, the
// next group commit) its error is dropped, unless it is an InvariantError (failStopOnInvariant).
import { open, type FileHandle } from 'node:fs/promises';
import { assert, failStopOnInvariant } from '../common/util/assert.js';
import { BackendError, type BlockBackend } from './backend.js';

const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

export interface FileBackendOptions {
  /** Export size; default: the file's current size. The file is extended (sparse) if shorter. */
  sizeBytes?: number;
  /** Create the file if it does not exist (needs sizeBytes). */
  create?: boolean;
  /** Start read-only: writes get EPERM until setWritable(true). */
  writable?: boolean;
}

export class FileBackend implements BlockBackend {
  private writable: boolean;
  private closed = false;
  // Group commit: at most one fdatasync runs; callers arriving meanwhile share the next one.
  private syncRunning: Promise<void> | null = null;
  private syncNext: Promise<void> | null = null;

  private constructor(
    private readonly fh: FileHandle,
    readonly sizeBytes: number,
    readonly path: string,
    writable: boolean,
  ) {
    this.writable = writable;
  }

  static async open(path: string, options: FileBackendOptions = {}): Promise<FileBackend> {
    if (options.create) assert(options.sizeBytes !== undefined, 'FileBackend.open: create needs sizeBytes');
    let fh: FileHandle;
    try {
      fh = await open(path, options.create ? 'a+' : 'r+');
      if (options.create) {
        // 'a+' would append on write; reopen read-write now that the file exists.
        await fh.close();
        fh = await open(path, 'r+');
      }
    } catch (err) {
      failStopOnInvariant(err);
      throw new Error(`cannot open backing file ${path}: ${(err as Error).message}`);
    }
    try {
      const st = await fh.stat();
      const sizeBytes = options.sizeBytes ?? st.size;
      assert(Number.isSafeInteger(sizeBytes) && sizeBytes >= 0, `FileBackend.open: bad size ${sizeBytes}`);
      if (st.size < sizeBytes) await fh.truncate(sizeBytes);
      return new FileBackend(fh, sizeBytes, path, options.writable ?? true);
    } catch (err) {
      await fh.close().catch(failStopOnInvariant); // the error that matters is err
      throw err;
    }
  }

  isWritable(): boolean {
    return this.writable && !this.closed;
  }

  setWritable(writable: boolean): void {
    this.writable = writable;
  }

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    this.checkOpen();
    const buf = Buffer.allocUnsafe(lengthBytes);
    let done = 0;
    while (done < lengthBytes) {
      const { bytesRead } = await this.fh.read(buf, done, lengthBytes - done, offsetBytes + done);
      if (bytesRead === 0) {
        buf.fill(0, done); // past the end of a file shorter than the export: reads as zeroes
        break;
      }
      done += bytesRead;
    }
    return buf;
  }

  async write(offsetBytes: number, data: Buffer, fua: boolean): Promise<void> {
    this.checkWritable();
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, offsetBytes + done);
      done += bytesWritten;
    }
    if (fua) await this.sync();
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    this.checkWritable();
    let done = 0;
    while (done < lengthBytes) {
      const n = Math.min(ZERO_CHUNK.length, lengthBytes - done);
      const { bytesWritten } = await this.fh.write(ZERO_CHUNK, 0, n, offsetBytes + done);
      done += bytesWritten;
    }
    if (fua) await this.sync();
  }

  async trim(_offsetBytes: number, _lengthBytes: number, _fua: boolean): Promise<void> {
    this.checkWritable();
    // A hint only; nothing is discarded, so FUA has nothing to persist either.
  }

  async flush(): Promise<void> {
    this.checkOpen();
    await this.sync();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await (this.syncNext ?? this.syncRunning)?.catch(failStopOnInvariant); // its callers got the error
    await this.fh.close();
  }

  private sync(): Promise<void> {
    if (!this.syncRunning) {
      this.syncRunning = this.fh.datasync().finally(() => {
        this.syncRunning = null;
      });
      return this.syncRunning;
    }
    // A sync is running, but it may have started before our write completed: wait for the next.
    if (!this.syncNext) {
      const running = this.syncRunning;
      this.syncNext = running
        .catch(failStopOnInvariant) // its own callers got the error; the next sync runs anyway
        .then(() => {
          this.syncNext = null;
          return this.sync();
        });
    }
    return this.syncNext;
  }

  private checkOpen(): void {
    if (this.closed) throw new BackendError('ESHUTDOWN', `backing file ${this.path} is closed`);
  }

  private checkWritable(): void {
    this.checkOpen();
    if (!this.writable) throw new BackendError('EPERM', `backing file ${this.path} is not writable now`);
  }
}
