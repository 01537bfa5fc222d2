// Fuzzing of the first code that touches bytes from the network (docs/security.md, "Network"):
// the frame decoder, the per-frame authentication and the message parser, with fast-check and
// a bounded budget (a few hundred runs each, well under a few seconds). The properties: any
// input either decodes or fails with ProtocolError (never another exception, never more memory
// than one frame's limits), and a sealed frame altered anywhere never decodes as a frame.
import t from 'tap';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { encodeFrame, FrameDecoder, FRAME_PREFIX_BYTES, MAX_HEADER_BYTES, ProtocolError } from '../../daemon/net/frame.js';
import { FrameAuthError, sessionCodec } from '../../daemon/net/frame-auth.js';
import { deriveSessionKeys, newNonce } from '../../daemon/net/auth.js';
import { parseMessage, validateOutgoing } from '../../daemon/net/messages.js';

const NUM_RUNS = 300;
const SECRET = randomBytes(32);
const LIMITS = { maxHeaderBytes: 1024, maxPayloadBytes: 4096 };

function codec() {
  const tr = { serverNonce: newNonce(), clientNonce: newNonce(), serverHost: 'alpha', clientHost: 'beta', serverUuid: 'u_1.2', clientUuid: 'u_1.2', cipher: 'hmac-sha256' as const };
  return { client: sessionCodec(deriveSessionKeys(SECRET, tr, 'client')), server: sessionCodec(deriveSessionKeys(SECRET, tr, 'server')) };
}

/** Push `bytes` in the given chunk sizes; returns the frames or the ProtocolError. Anything else is thrown. */
function feed(decoder: FrameDecoder, bytes: Buffer, cuts: number[]): { frames: unknown[]; error?: ProtocolError } {
  const frames: unknown[] = [];
  let pos = 0;
  try {
    for (const cut of [...cuts, bytes.length]) {
      const end = Math.min(bytes.length, pos + cut);
      decoder.push(bytes.subarray(pos, end));
      pos = end;
      for (const f of decoder) frames.push(f.header);
      // Never more buffered than one frame at the limits (plus the next prefix).
      if (decoder.bufferedBytes > FRAME_PREFIX_BYTES * 2 + LIMITS.maxHeaderBytes + LIMITS.maxPayloadBytes + 16 + cut) throw new Error(`decoder holds ${decoder.bufferedBytes} bytes`);
      if (pos >= bytes.length) break;
    }
  } catch (err) {
    if (err instanceof ProtocolError) return { frames, error: err };
    throw err;
  }
  return { frames };
}

const chunking = fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 16 });

t.test('the decoder takes any bytes: frames or ProtocolError, bounded memory', async (t) => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 2048 }), chunking, fc.boolean(), (bytes, cuts, sealed) => {
    const decoder = new FrameDecoder(LIMITS);
    if (sealed) decoder.setOpener(codec().server.opener);
    feed(decoder, Buffer.from(bytes), cuts);
  }), { numRuns: NUM_RUNS });
  t.pass(`${NUM_RUNS} random byte streams, plain and sealed`);
});

t.test('plausible frames with random lengths and JSON-ish headers never break the decoder', async (t) => {
  const frame = fc.record({
    headerBytes: fc.integer({ min: 0, max: MAX_HEADER_BYTES * 2 }),
    payloadBytes: fc.integer({ min: 0, max: 10_000 }),
    header: fc.oneof(fc.json(), fc.string({ maxLength: 200 })),
  });
  fc.assert(fc.property(fc.array(frame, { maxLength: 4 }), chunking, (frames, cuts) => {
    const parts = frames.map((f) => {
      const h = Buffer.from(f.header, 'utf8');
      const prefix = Buffer.alloc(8);
      prefix.writeUInt32BE(f.headerBytes % 3 === 0 ? h.length : f.headerBytes, 0);
      prefix.writeUInt32BE(f.payloadBytes, 4);
      return Buffer.concat([prefix, h, Buffer.alloc(Math.min(f.payloadBytes, 64))]);
    });
    feed(new FrameDecoder(LIMITS), Buffer.concat(parts), cuts);
  }), { numRuns: NUM_RUNS });
  t.pass(`${NUM_RUNS} streams of plausible frames`);
});

t.test('the message parser takes any JSON object: a valid message or ProtocolError', async (t) => {
  const types = ['hello', 'auth', 'welcome', 'refused', 'getents', 'log-read', 'sync-digests', 'sync-read', 'position', 'push-link', 'ping', 'pong', 'cancel', 'notify', 'ents', 'log-data', 'log-end', 'digests', 'blocks', 'position-reply', 'ok', 'error'];
  const header = fc.record({ t: fc.oneof(fc.constantFrom(...types), fc.string({ maxLength: 12 })) }).chain((base) =>
    fc.dictionary(fc.constantFrom('id', 'res', 'name', 'fromPos', 'lengthBytes', 'blockBytes', 'entry', 'p', 'v', 's', 'host', 'uuid', 'nonce', 'mac', 'cipher', 'proto', 'code', 'message', 'pos', 'count', 'clockUs', 'follow', 'waitMs', 'rateBytesPerS', 'reason'),
      fc.oneof(fc.jsonValue(), fc.integer(), fc.constant('r0'), fc.constant('a'.repeat(64)), fc.constant('log-000000001-alpha'))).map((d) => ({ ...d, ...base })));
  let valid = 0;
  fc.assert(fc.property(header, (h) => {
    try {
      const m = parseMessage(h);
      validateOutgoing(m); // what passed the schema is a message we could send ourselves
      valid += 1;
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
    }
  }), { numRuns: NUM_RUNS * 3 });
  t.pass(`${NUM_RUNS * 3} random headers (${valid} valid)`);
});

t.test('a sealed frame altered in any byte never decodes', async (t) => {
  fc.assert(fc.property(fc.integer({ min: 0, max: 10_000 }), fc.integer({ min: 1, max: 255 }), fc.uint8Array({ maxLength: 300 }), chunking, (at, xor, payload, cuts) => {
    const { client, server } = codec();
    const sealed = Buffer.concat(client.sealer.seal(encodeFrame({ t: 'ping', id: 3 }, Buffer.from(payload))));
    const i = FRAME_PREFIX_BYTES + (at % (sealed.length - FRAME_PREFIX_BYTES));
    sealed[i]! ^= xor;
    const decoder = new FrameDecoder(LIMITS);
    decoder.setOpener(server.opener);
    const r = feed(decoder, sealed, cuts);
    if (r.frames.length !== 0) throw new Error(`an altered frame decoded: ${JSON.stringify(r.frames)}`);
    if (!(r.error instanceof FrameAuthError)) throw new Error(`not detected as forged: ${r.error?.message}`);
  }), { numRuns: NUM_RUNS });
  t.pass(`${NUM_RUNS} altered frames, all refused`);
});
