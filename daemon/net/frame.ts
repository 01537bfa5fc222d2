// Framing of the peer protocol (docs/protocol.md §2). A frame is
//   u32 BE headerBytes | u32 BE payloadBytes | header (UTF-8 JSON object) | payload (raw bytes)
// The header carries the message; the payload carries bulk bytes (logfile data, blocks,
// digests) so they never pass through JSON.
//
// The decoder is the first thing that touches bytes from the network, so it is strict: the
// lengths are checked against the limits as soon as the 8-byte prefix is complete, before a
// single byte of the body is buffered, and a peer cannot make us allocate more than one
// frame's worth of memory. Chunks are kept in a list and copied once, when a frame is complete
// (never concatenated chunk by chunk, which would be quadratic for large frames).
import { assert } from '../../common/util/assert.js';

export const FRAME_PREFIX_BYTES = 8;
export const MAX_HEADER_BYTES = 64 * 1024;
export const MAX_PAYLOAD_BYTES = 8 * 1024 * 1024;

/** A peer broke the protocol: the connection it arrived on must be closed. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

export interface Frame {
  /** The parsed JSON header: an object, not yet validated as a message (messages.ts does that). */
  header: unknown;
  payload: Buffer;
}

export interface FrameLimits {
  maxHeaderBytes: number;
  maxPayloadBytes: number;
}

/**
 * Checks the tag that follows each frame's payload once the handshake set session keys
 * (frame-auth.ts); returns the header and payload in clear, throws a ProtocolError on mismatch.
 */
export interface FrameOpenerLike {
  readonly tagBytes: number;
  open(prefix: Buffer, header: Buffer, payload: Buffer, tag: Buffer): { header: Buffer; payload: Buffer };
}

export const DEFAULT_FRAME_LIMITS: FrameLimits = { maxHeaderBytes: MAX_HEADER_BYTES, maxPayloadBytes: MAX_PAYLOAD_BYTES };

/**
 * Encode one frame. Returns [prefix + header, payload] so the payload, which may be a large
 * buffer read from a file, is written as is and never copied.
 */
export function encodeFrame(header: object, payload?: Buffer): Buffer[] {
  assert(header !== null && typeof header === 'object' && !Array.isArray(header), 'a frame header must be a JSON object');
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const payloadBytes = payload?.length ?? 0;
  assert(json.length > 0 && json.length <= MAX_HEADER_BYTES, `frame header of ${json.length} bytes exceeds ${MAX_HEADER_BYTES}`);
  assert(payloadBytes <= MAX_PAYLOAD_BYTES, `frame payload of ${payloadBytes} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
  const head = Buffer.allocUnsafe(FRAME_PREFIX_BYTES + json.length);
  head.writeUInt32BE(json.length, 0);
  head.writeUInt32BE(payloadBytes, 4);
  json.copy(head, FRAME_PREFIX_BYTES);
  return payload && payload.length > 0 ? [head, payload] : [head];
}

const EMPTY = Buffer.alloc(0);
const utf8 = new TextDecoder('utf-8', { fatal: true });

export class FrameDecoder implements Iterable<Frame> {
  // Queue of received chunks: chunks[headIndex] is the oldest with unread bytes. An index
  // instead of shift() keeps many tiny chunks linear too.
  private chunks: Buffer[] = [];
  private headIndex = 0;
  /** bytes of chunks[headIndex] already consumed */
  private headOffset = 0;
  private buffered = 0;
  /** lengths of the frame whose prefix has been read, while its body is incomplete */
  private pending: { prefix: Buffer; headerBytes: number; payloadBytes: number } | undefined;
  private opener: FrameOpenerLike | undefined;
  private failed: ProtocolError | undefined;
  private limits: FrameLimits;

  constructor(limits: FrameLimits = DEFAULT_FRAME_LIMITS) {
    this.limits = checkLimits(limits);
  }

  /** Bytes received but not yet returned as frames. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /**
   * Change the limits (the handshake uses tight ones, the authenticated connection the normal
   * ones). A frame whose prefix was already accepted keeps being decoded.
   */
  setLimits(limits: FrameLimits): void {
    this.limits = checkLimits(limits);
  }

  /**
   * From now on every frame must carry a tag that `opener` accepts (set once, when the
   * handshake is done; a frame whose prefix was already read is still checked).
   */
  setOpener(opener: FrameOpenerLike): void {
    assert(this.opener === undefined, 'the frame opener is set once per connection');
    assert(Number.isSafeInteger(opener.tagBytes) && opener.tagBytes > 0, 'a frame tag has a length');
    this.opener = opener;
  }

  push(chunk: Buffer): void {
    if (this.failed) throw this.failed;
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** The next complete frame, or undefined when more bytes are needed. Throws ProtocolError. */
  next(): Frame | undefined {
    if (this.failed) throw this.failed;
    try {
      return this.decodeOne();
    } catch (err) {
      if (err instanceof ProtocolError) this.failed = err;
      throw err;
    }
  }

  *[Symbol.iterator](): Iterator<Frame> {
    for (;;) {
      const frame = this.next();
      if (!frame) return;
      yield frame;
    }
  }

  private decodeOne(): Frame | undefined {
    if (!this.pending) {
      if (this.buffered < FRAME_PREFIX_BYTES) return undefined;
      const prefix = this.take(FRAME_PREFIX_BYTES);
      const headerBytes = prefix.readUInt32BE(0);
      const payloadBytes = prefix.readUInt32BE(4);
      if (headerBytes === 0) throw new ProtocolError('frame with an empty header');
      if (headerBytes > this.limits.maxHeaderBytes) {
        throw new ProtocolError(`frame header of ${headerBytes} bytes exceeds the limit of ${this.limits.maxHeaderBytes}`);
      }
      if (payloadBytes > this.limits.maxPayloadBytes) {
        throw new ProtocolError(`frame payload of ${payloadBytes} bytes exceeds the limit of ${this.limits.maxPayloadBytes}`);
      }
      this.pending = { prefix, headerBytes, payloadBytes };
    }
    const { prefix, headerBytes, payloadBytes } = this.pending;
    const tagBytes = this.opener?.tagBytes ?? 0;
    if (this.buffered < headerBytes + payloadBytes + tagBytes) return undefined;
    this.pending = undefined;
    const headerRaw = this.take(headerBytes);
    const payload = payloadBytes > 0 ? this.take(payloadBytes) : Buffer.alloc(0);
    if (!this.opener) return { header: parseHeader(headerRaw), payload };
    // The tag is checked before a byte of the header is parsed.
    const opened = this.opener.open(prefix, headerRaw, payload, this.take(tagBytes));
    return { header: parseHeader(opened.header), payload: opened.payload };
  }

  /** Remove exactly n buffered bytes: a view when they lie in one chunk, else one copy. */
  private take(n: number): Buffer {
    assert(n > 0 && n <= this.buffered, `take(${n}) with ${this.buffered} bytes buffered`);
    this.buffered -= n;
    const first = this.chunks[this.headIndex]!;
    const available = first.length - this.headOffset;
    if (available >= n) {
      const out = first.subarray(this.headOffset, this.headOffset + n);
      this.headOffset += n;
      if (this.headOffset === first.length) this.dropFirst();
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[this.headIndex]!;
      const count = Math.min(chunk.length - this.headOffset, n - filled);
      chunk.copy(out, filled, this.headOffset, this.headOffset + count);
      filled += count;
      this.headOffset += count;
      if (this.headOffset === chunk.length) this.dropFirst();
    }
    return out;
  }

  private dropFirst(): void {
    this.chunks[this.headIndex] = EMPTY; // release the memory now, not at compaction
    this.headIndex += 1;
    this.headOffset = 0;
    if (this.headIndex === this.chunks.length) {
      this.chunks = [];
      this.headIndex = 0;
    } else if (this.headIndex >= 1024 && this.headIndex * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.headIndex);
      this.headIndex = 0;
    }
  }
}

function parseHeader(raw: Buffer): unknown {
  let text: string;
  try {
    text = utf8.decode(raw);
  } catch {
    throw new ProtocolError('frame header is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ProtocolError(`frame header is not valid JSON: ${(err as Error).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ProtocolError('frame header is not a JSON object');
  }
  return value;
}

function checkLimits(limits: FrameLimits): FrameLimits {
  assert(Number.isSafeInteger(limits.maxHeaderBytes) && limits.maxHeaderBytes >= 1 && limits.maxHeaderBytes <= MAX_HEADER_BYTES, `bad maxHeaderBytes ${limits.maxHeaderBytes}`);
  assert(Number.isSafeInteger(limits.maxPayloadBytes) && limits.maxPayloadBytes >= 0 && limits.maxPayloadBytes <= MAX_PAYLOAD_BYTES, `bad maxPayloadBytes ${limits.maxPayloadBytes}`);
  return { ...limits };
}
