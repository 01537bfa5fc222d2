// Deflated ents payloads (docs/protocol.md getents): a client that asks with `deflate` gets a
// large listing's JSON compressed with raw deflate, and inflates it within a bound.
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { ProtocolError } from './frame.js';

/**
 * A listing's JSON above this size is sent deflated to a client that takes it (docs/protocol.md
 * getents): at 100 resources x 1000 logfiles a full listing is 41 MB of JSON, 4.6 MB deflated
 * (level 1, ~0.2 s), and a frame holds 8 MiB.
 */
export const DEFLATE_ENTS_FROM_BYTES = 64 * 1024;
/** The most an ents payload may inflate to (a full listing of about 600,000 entries). */
export const MAX_ENTS_INFLATED_BYTES = 128 * 1024 * 1024;

/** The payload as sent: deflated when the client takes it and it is large. */
export function maybeDeflateEnts(json: Buffer, clientTakesDeflate: boolean): { payload: Buffer; deflated: boolean } {
  if (!clientTakesDeflate || json.length < DEFLATE_ENTS_FROM_BYTES) return { payload: json, deflated: false };
  return { payload: deflateRawSync(json, { level: 1 }), deflated: true };
}

/** The JSON of a deflated ents payload; a payload that does not inflate, or inflates beyond the bound, is a protocol error. */
export function inflateEnts(payload: Buffer): Buffer {
  try {
    // Bounded: a small frame must not inflate into the whole heap.
    return inflateRawSync(payload, { maxOutputLength: MAX_ENTS_INFLATED_BYTES });
  } catch (err) {
    throw new ProtocolError(`ents payload does not inflate within ${MAX_ENTS_INFLATED_BYTES} bytes: ${(err as Error).message}`);
  }
}
