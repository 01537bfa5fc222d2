// The narrow storage interface behind an NBD export. The daemon implements it on top of the
// transaction logger (a write is in the /mars logfile before it resolves, a flush waits for the
// logfile fdatasync); FileBackend (file-backend.ts) implements it on a plain file as a baseline.
//
// Contract the NBD server relies on:
// - offsets and lengths are validated by the server (inside the export, aligned to 512 bytes,
//   lengths > 0) before a backend method is called;
// - a method either resolves or rejects; a BackendError's errno is sent to the client as is,
//   any other rejection is sent as EIO (and logged);
// - the server replies to a write only after write() resolved, so every write the client saw
//   acknowledged has completed in the backend when a later flush() starts.

/** Error numbers a backend may report; they map 1:1 onto NBD error values. */
export type BackendErrno = 'EPERM' | 'EIO' | 'ENOSPC' | 'EINVAL' | 'ESHUTDOWN';

export interface BlockBackend {
  /**
   * Export size in bytes; should be a multiple of 512 (the advertised minimum block size). It
   * may grow while exported (resize), never shrink: read at every handshake and request check,
   * so new connections see the new size and open ones keep the size they were told.
   */
  readonly sizeBytes: number;
  /**
   * false when this host is not (or no longer) actual primary: every write gets EPERM, never a
   * silent discard. The server checks this before each WRITE/WRITE_ZEROES/TRIM; a backend that
   * can lose writability while a write is in flight must also reject that write itself with
   * BackendError('EPERM').
   */
  isWritable(): boolean;
  /** Resolves to exactly lengthBytes bytes; the buffer must not change after it resolved. */
  read(offsetBytes: number, lengthBytes: number): Promise<Buffer>;
  /**
   * data may be a subarray of a connection buffer: the backend copies it if it keeps it after
   * the returned promise settles. With fua the data must be durable when the promise resolves.
   */
  write(offsetBytes: number, data: Buffer, fua: boolean): Promise<void>;
  /** Afterwards the range reads back as zeroes. Lengths can be large (up to 4 GiB - 512). */
  writeZeroes(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void>;
  /** A hint: the range is no longer needed. May do nothing. */
  trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void>;
  /** every write replied to before this call is durable when it resolves */
  flush(): Promise<void>;
}

export class BackendError extends Error {
  override name = 'BackendError';
  constructor(readonly errno: BackendErrno, message: string) {
    super(message);
  }
}
