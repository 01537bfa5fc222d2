// Per-frame authentication after the handshake (docs/protocol.md §2.1). Each direction of a
// connection has its own session key (auth.deriveSessionKeys) and an implicit sequence number
// that starts at 0 and counts the frames sent in that direction. Every frame carries a 16-byte
// tag after its payload:
//
//   hmac-sha256        tag = HMAC-SHA256(key, u64 BE seq | prefix | header | payload)[0..16)
//                      header and payload travel in clear
//   chacha20-poly1305  header and payload are encrypted as one stream with nonce
//                      u32 0 | u64 BE seq and the 8-byte prefix as additional data; tag = the
//                      Poly1305 tag
//
// Because the sequence number is implicit and the keys differ per direction and per session,
// a frame injected, dropped, replayed, reordered, reflected back to its sender, spliced from
// another connection or altered in any byte fails the check; the connection then ends (the
// decoder throws FrameAuthError, a ProtocolError). The MAC is computed incrementally over the
// buffers as they are (a MiB payload of log data is never copied for it).
import { createCipheriv, createDecipheriv, createHmac, timingSafeEqual } from 'node:crypto';
import { assert } from '../../common/util/assert.js';
import { ProtocolError } from './frame.js';

export const FRAME_CIPHERS = ['hmac-sha256', 'chacha20-poly1305'] as const;
export type FrameCipher = (typeof FRAME_CIPHERS)[number];
export const FRAME_TAG_BYTES = 16;
export const SESSION_KEY_BYTES = 32;
const PREFIX_BYTES = 8;

/** A frame that fails its tag: forged, replayed, reordered or altered on the wire. */
export class FrameAuthError extends ProtocolError {
  override name = 'FrameAuthError';
}

/** What seals our frames and opens the peer's, one direction each. */
export interface SessionKeys {
  cipher: FrameCipher;
  sendKey: Buffer;
  receiveKey: Buffer;
}

function seqBytes(seq: number): Buffer {
  // 2^53 frames cannot be reached; the assertion keeps the u64 encoding exact.
  assert(Number.isSafeInteger(seq) && seq >= 0, `frame sequence number ${seq} out of range`);
  const b = Buffer.alloc(8);
  b.writeUInt32BE(Math.floor(seq / 0x1_0000_0000), 0);
  b.writeUInt32BE(seq % 0x1_0000_0000, 4);
  return b;
}

function nonceFor(seq: number): Buffer {
  return Buffer.concat([Buffer.alloc(4), seqBytes(seq)]);
}

function checkKey(cipher: FrameCipher, key: Buffer): void {
  assert(FRAME_CIPHERS.includes(cipher), `unknown frame cipher ${String(cipher)}`);
  assert(Buffer.isBuffer(key) && key.length === SESSION_KEY_BYTES, 'a session key must be 32 bytes');
}

/** Seals the frames we send, in the order they are written. */
export class FrameSealer {
  private seq = 0;

  constructor(readonly cipher: FrameCipher, private readonly key: Buffer) {
    checkKey(cipher, key);
  }

  /**
   * `buffers` is what encodeFrame returned ([prefix + header, payload?]); returns the buffers
   * to write, in order. Must be called exactly once per frame, in write order.
   */
  seal(buffers: Buffer[]): Buffer[] {
    assert(buffers.length >= 1 && buffers[0]!.length > PREFIX_BYTES, 'seal() needs an encoded frame');
    const seq = this.seq++;
    if (this.cipher === 'hmac-sha256') {
      const mac = createHmac('sha256', this.key).update(seqBytes(seq));
      for (const b of buffers) mac.update(b);
      return [...buffers, mac.digest().subarray(0, FRAME_TAG_BYTES)];
    }
    const head = buffers[0]!;
    const enc = createCipheriv('chacha20-poly1305', this.key, nonceFor(seq), { authTagLength: FRAME_TAG_BYTES });
    enc.setAAD(head.subarray(0, PREFIX_BYTES), { plaintextLength: head.length - PREFIX_BYTES + (buffers[1]?.length ?? 0) });
    const out = [head.subarray(0, PREFIX_BYTES), enc.update(head.subarray(PREFIX_BYTES))];
    for (const b of buffers.slice(1)) out.push(enc.update(b));
    enc.final();
    out.push(enc.getAuthTag());
    return out;
  }
}

/** Checks (and decrypts) the frames the peer sends, in the order they arrive. */
export class FrameOpener {
  readonly tagBytes = FRAME_TAG_BYTES;
  private seq = 0;

  constructor(readonly cipher: FrameCipher, private readonly key: Buffer) {
    checkKey(cipher, key);
  }

  /** The frame's header and payload in clear; throws FrameAuthError when the tag does not match. */
  open(prefix: Buffer, header: Buffer, payload: Buffer, tag: Buffer): { header: Buffer; payload: Buffer } {
    assert(prefix.length === PREFIX_BYTES && tag.length === FRAME_TAG_BYTES, 'open() with a malformed frame');
    const seq = this.seq++;
    if (this.cipher === 'hmac-sha256') {
      const expected = createHmac('sha256', this.key).update(seqBytes(seq)).update(prefix).update(header).update(payload).digest();
      if (!timingSafeEqual(expected.subarray(0, FRAME_TAG_BYTES), tag)) throw this.failure(seq);
      return { header, payload };
    }
    const dec = createDecipheriv('chacha20-poly1305', this.key, nonceFor(seq), { authTagLength: FRAME_TAG_BYTES });
    dec.setAAD(prefix, { plaintextLength: header.length + payload.length });
    dec.setAuthTag(tag);
    const clearHeader = dec.update(header);
    const clearPayload = payload.length > 0 ? dec.update(payload) : payload;
    try {
      dec.final(); // verifies the tag: nothing decrypted is used before this
    } catch {
      throw this.failure(seq);
    }
    return { header: clearHeader, payload: clearPayload };
  }

  private failure(seq: number): FrameAuthError {
    return new FrameAuthError(`frame ${seq} failed authentication (forged, injected, replayed, reordered or altered on the wire)`);
  }
}

/** A sealer and an opener for one side of a session. */
export function sessionCodec(keys: SessionKeys): { sealer: FrameSealer; opener: FrameOpener } {
  return { sealer: new FrameSealer(keys.cipher, keys.sendKey), opener: new FrameOpener(keys.cipher, keys.receiveKey) };
}
