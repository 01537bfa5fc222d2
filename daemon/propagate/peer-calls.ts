// Typed requests the daemon makes over an authenticated peer connection (docs/protocol.md),
// in one place so the fetcher, the sync and join-cluster agree on them.
import type { PeerConnection } from '../net/connection.js';
import type { Entry } from '../net/messages.js';
import { DIGEST_BYTES, KEYED_DIGEST, PREFERRED_DIGEST, SYNC_BLOCK_BYTES, type DigestAlgorithm } from '../../common/resource/sync-blocks.js';

export interface LogReadParams {
  res: string;
  name: string;
  fromPos: number;
  follow: boolean;
  waitMs: number;
  rateBytesPerS: number;
}

/** Stream a logfile's bytes from fromPos; onData is awaited for every chunk, in order. */
export async function logRead(conn: PeerConnection, p: LogReadParams, onData: (pos: number, data: Buffer) => Promise<void>, signal?: AbortSignal): Promise<{ pos: number; durableEnd: number }> {
  const end = await conn.stream({ t: 'log-read', ...p }, (header, payload) => onData(header.pos, payload), signal);
  return { pos: end.pos, durableEnd: end.durableEnd };
}

/** The primary's block digests, and how it made them (a peer that ignores `digest` uses md5). */
/**
 * The primary's digests of [fromPos, +lengthBytes): keyed under `key` (gmac-aes128) where the
 * primary can make them, else PREFERRED_DIGEST; an older primary answers md5 without naming it.
 * The reply says which: the caller compares digests made the same way.
 */
export async function syncDigests(conn: PeerConnection, res: string, fromPos: number, lengthBytes: number, key?: Buffer): Promise<{ digests: Buffer; algorithm: DigestAlgorithm }> {
  const keyed = key ? { keyed: KEYED_DIGEST, key: key.toString('hex') } : {};
  const reply = await conn.request({ t: 'sync-digests', res, fromPos, lengthBytes, blockBytes: SYNC_BLOCK_BYTES, digest: PREFERRED_DIGEST, ...keyed });
  const expected = (lengthBytes / SYNC_BLOCK_BYTES) * DIGEST_BYTES;
  if (reply.header.fromPos !== fromPos || reply.payload.length !== expected) {
    throw new Error(`digest reply for ${fromPos}+${lengthBytes} has ${reply.payload.length} bytes at ${reply.header.fromPos}, expected ${expected}`);
  }
  const algorithm = reply.header.digest ?? 'md5';
  if (algorithm === KEYED_DIGEST && !key) throw new Error(`digest reply for ${fromPos}+${lengthBytes} is keyed, but no key was sent`);
  return { digests: reply.payload, algorithm };
}

export async function syncRead(conn: PeerConnection, res: string, fromPos: number, lengthBytes: number): Promise<Buffer> {
  const reply = await conn.request({ t: 'sync-read', res, fromPos, lengthBytes });
  if (reply.header.fromPos !== fromPos || reply.payload.length !== lengthBytes) {
    throw new Error(`block reply for ${fromPos}+${lengthBytes} has ${reply.payload.length} bytes at ${reply.header.fromPos}`);
  }
  return reply.payload;
}

export async function primaryPosition(conn: PeerConnection, res: string): Promise<{ seq: number; origin: string; pos: number }> {
  const reply = await conn.request({ t: 'position', res });
  return { seq: reply.header.seq, origin: reply.header.origin, pos: reply.header.pos };
}

export async function pushLink(conn: PeerConnection, entry: Entry): Promise<void> {
  await conn.request({ t: 'push-link', entry });
}
