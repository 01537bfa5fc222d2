// The checks a transmission-phase request must pass before the backend sees it, as one pure
// function: the request header and what the connection knows in, an NBD error value (or 0) out.
// The order is the one proto.md suggests (flags, shutdown, alignment and range, permission);
// the backend relies on it (backend.ts: offsets and lengths are validated by the server).
import * as P from './nbd-protocol.js';
import { MAX_PAYLOAD_BYTES, MIN_BLOCK_SIZE } from './nbd-export.js';

/**
 * Returns the NBD error value to reply with, or 0 if the request may go to the backend.
 * `writable` is asked last and only for writes (it may log: the backend's isWritable()).
 */
export function checkRequest(req: P.RequestHeader, exportSizeBytes: number, shuttingDown: boolean, writable: () => boolean): number {
  const { type, flags, offset, length } = req;
  let allowedFlags = P.NBD_CMD_FLAG_FUA; // valid (and ignorable) on every command
  if (type === P.NBD_CMD_WRITE_ZEROES) allowedFlags |= P.NBD_CMD_FLAG_NO_HOLE | P.NBD_CMD_FLAG_FAST_ZERO;
  if ((flags & ~allowedFlags) !== 0) return P.NBD_EINVAL;
  if (shuttingDown) return P.NBD_ESHUTDOWN;
  if (type === P.NBD_CMD_FLUSH) return 0; // offset and length are reserved; not checked
  if (length === 0 || offset % MIN_BLOCK_SIZE !== 0 || length % MIN_BLOCK_SIZE !== 0) return P.NBD_EINVAL;
  const isWrite = type === P.NBD_CMD_WRITE || type === P.NBD_CMD_WRITE_ZEROES;
  if (type === P.NBD_CMD_READ && length > MAX_PAYLOAD_BYTES) return P.NBD_EINVAL;
  if (offset + length > exportSizeBytes) return isWrite ? P.NBD_ENOSPC : P.NBD_EINVAL;
  if (type === P.NBD_CMD_READ) return 0;
  if (!writable()) return P.NBD_EPERM;
  if (type === P.NBD_CMD_WRITE_ZEROES && (flags & P.NBD_CMD_FLAG_FAST_ZERO) !== 0) return P.NBD_ENOTSUP;
  return 0;
}
