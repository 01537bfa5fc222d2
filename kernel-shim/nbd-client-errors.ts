// The errors an NbdClient request can end with: the server's error reply (NbdError, with the
// NBD errno) or the end of the connection before the reply (NbdConnectionClosed).
import * as P from './nbd-protocol.js';

export class NbdError extends Error {
  override name = 'NbdError';
  constructor(readonly errno: number, readonly command: string, message?: string) {
    super(message ?? `${command} failed with NBD error ${errnoName(errno)} (${errno})`);
  }

  get code(): string {
    return errnoName(this.errno);
  }
}

/** The connection ended (EOF, reset, destroy) before this request was answered. */
export class NbdConnectionClosed extends Error {
  override name = 'NbdConnectionClosed';
}

export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(P.NBD_ERRNO)) if (value === errno) return name;
  return `errno ${errno}`;
}
