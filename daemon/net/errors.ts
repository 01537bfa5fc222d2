// The errors a peer connection hands to its callers, shared by the transport (transport.ts),
// our requests to the peer (outgoing.ts) and what we serve it (service.ts). A ProtocolError
// (frame.ts) is different: it never reaches a caller, it closes the connection.
import { assert } from '../../common/util/assert.js';
import { MAX_ERROR_MESSAGE_CHARS } from './messages.js';

/** A request the peer answered with `error` (or a handler refusing a request). */
export class PeerRequestError extends Error {
  override name = 'PeerRequestError';
  constructor(readonly code: string, message: string) {
    super(message);
    assert(/^E[A-Z0-9]{1,31}$/.test(code), `bad error code ${JSON.stringify(code)}`);
  }
}

/** The connection closed before the request was answered. */
export class ConnectionClosedError extends Error {
  override name = 'ConnectionClosedError';
  constructor(readonly reason: string) {
    super(`peer connection closed: ${reason}`);
  }
}

/** The error a request rejects with when its AbortSignal fires. */
export function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return reason;
  const err = new Error(reason === undefined ? 'aborted' : String(reason));
  err.name = 'AbortError';
  return err;
}

export function truncateMessage(text: string): string {
  return text.length > MAX_ERROR_MESSAGE_CHARS ? `${text.slice(0, MAX_ERROR_MESSAGE_CHARS - 3)}...` : text;
}
