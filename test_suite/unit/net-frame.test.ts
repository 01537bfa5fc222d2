// The codecs of the peer protocol without any I/O: framing, message validation, and the
// token bucket of the log-read rate limit (with an injected clock).
import t, { type Test } from 'tap';
import {
  encodeFrame, FrameDecoder, ProtocolError, FRAME_PREFIX_BYTES, MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES, type Frame,
} from '../../daemon/net/frame.js';
import {
  checkPayload, encodeEntsPayload, parseEntsPayload, parseMessage, MAX_LOG_DATA_BYTES, type Message,
} from '../../daemon/net/messages.js';
import { chunkBytesForRate, TokenBucket } from '../../daemon/net/rate-limit.js';

function concat(buffers: Buffer[]): Buffer {
  return Buffer.concat(buffers);
}

function drain(decoder: FrameDecoder): Frame[] {
  return [...decoder];
}

function prefix(headerBytes: number, payloadBytes: number): Buffer {
  const b = Buffer.alloc(FRAME_PREFIX_BYTES);
  b.writeUInt32BE(headerBytes, 0);
  b.writeUInt32BE(payloadBytes, 4);
  return b;
}

function rawFrame(headerText: string | Buffer, payload = Buffer.alloc(0)): Buffer {
  const header = typeof headerText === 'string' ? Buffer.from(headerText, 'utf8') : headerText;
  return Buffer.concat([prefix(header.length, payload.length), header, payload]);
}

t.test('framing', async (t) => {
  t.test('round trip of header and payload', async (t) => {
    const payload = Buffer.from('some logfile bytes \u0000\u00ff', 'latin1');
    const header = { t: 'log-data', id: 7, pos: 4096, text: 'ünïcødé' };
    const parts = encodeFrame(header, payload);
    t.equal(parts.length, 2, 'the payload is a separate buffer');
    t.equal(parts[1], payload, 'the payload is not copied');
    const decoder = new FrameDecoder();
    decoder.push(concat(parts));
    const frames = drain(decoder);
    t.equal(frames.length, 1);
    t.same(frames[0]!.header, header);
    t.ok(frames[0]!.payload.equals(payload));
    t.equal(decoder.bufferedBytes, 0);

    const noPayload = encodeFrame({ t: 'ping', id: 1 });
    t.equal(noPayload.length, 1);
    decoder.push(noPayload[0]!);
    const [ping] = drain(decoder);
    t.same(ping!.header, { t: 'ping', id: 1 });
    t.equal(ping!.payload.length, 0);
  });

  t.test('frames split at every byte boundary, and fed byte by byte', async (t) => {
    const stream = concat([
      ...encodeFrame({ t: 'a', n: 1 }, Buffer.from('first payload')),
      ...encodeFrame({ t: 'b', n: 2 }),
      ...encodeFrame({ t: 'c', n: 3 }, Buffer.alloc(300, 7)),
    ]);
    const check = (frames: Frame[], what: string) => {
      t.same(frames.map((f) => f.header), [{ t: 'a', n: 1 }, { t: 'b', n: 2 }, { t: 'c', n: 3 }], what);
      t.equal(frames[0]!.payload.toString(), 'first payload', what);
      t.ok(frames[2]!.payload.equals(Buffer.alloc(300, 7)), what);
    };
    let failures = 0;
    for (let split = 0; split <= stream.length; split++) {
      const decoder = new FrameDecoder();
      decoder.push(stream.subarray(0, split));
      const frames = drain(decoder);
      decoder.push(stream.subarray(split));
      frames.push(...drain(decoder));
      if (frames.length !== 3 || decoder.bufferedBytes !== 0) failures++;
      else if (split % 37 === 0) check(frames, `split at ${split}`);
    }
    t.equal(failures, 0, `all ${stream.length + 1} split points decode to the same three frames`);
    const decoder = new FrameDecoder();
    const frames: Frame[] = [];
    for (let i = 0; i < stream.length; i++) {
      decoder.push(stream.subarray(i, i + 1));
      frames.push(...drain(decoder));
    }
    check(frames, 'byte by byte');
  });

  t.test('a large payload in many chunks is decoded in linear time', async (t) => {
    const payload = Buffer.alloc(4 * 1024 * 1024, 0x5a);
    const stream = concat(encodeFrame({ t: 'blocks' }, payload));
    const decoder = new FrameDecoder();
    const started = process.hrtime.bigint();
    for (let off = 0; off < stream.length; off += 100) decoder.push(stream.subarray(off, off + 100));
    const frames = drain(decoder);
    const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
    t.equal(frames.length, 1);
    t.ok(frames[0]!.payload.equals(payload));
    // 42k chunks: quadratic concatenation would copy ~90 GB; linear is milliseconds.
    t.comment(`decoded in ${elapsedMs.toFixed(0)} ms`); // a figure, not a bound: speed belongs to the bench
  });

  t.test('oversize lengths are rejected from the prefix alone, before buffering the body', async (t) => {
    for (const [headerBytes, payloadBytes, what] of [
      [MAX_HEADER_BYTES + 1, 0, 'header'],
      [0xffff_ffff, 0, 'header'],
      [10, MAX_PAYLOAD_BYTES + 1, 'payload'],
      [10, 0xffff_ffff, 'payload'],
    ] as const) {
      const decoder = new FrameDecoder();
      decoder.push(prefix(headerBytes, payloadBytes));
      t.throws(() => decoder.next(), { name: 'ProtocolError', message: new RegExp(`${what} of ${headerBytes === 10 ? payloadBytes : headerBytes} bytes exceeds`) });
      t.equal(decoder.bufferedBytes, 0, 'nothing beyond the prefix was buffered');
      t.throws(() => decoder.push(Buffer.alloc(1)), ProtocolError, 'a failed decoder stays failed');
    }
    const atLimit = new FrameDecoder();
    atLimit.push(prefix(MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES));
    t.equal(atLimit.next(), undefined, 'lengths at the limits are accepted (and wait for the body)');
  });

  t.test('tighter limits (the handshake) are enforced the same way', async (t) => {
    const decoder = new FrameDecoder({ maxHeaderBytes: 4096, maxPayloadBytes: 0 });
    decoder.push(concat(encodeFrame({ t: 'auth' }, Buffer.from('x'))));
    t.throws(() => decoder.next(), /payload of 1 bytes exceeds the limit of 0/);
  });

  t.test('an empty header is invalid', async (t) => {
    const decoder = new FrameDecoder();
    decoder.push(prefix(0, 0));
    t.throws(() => decoder.next(), /empty header/);
  });

  t.test('bad JSON, bad UTF-8 and non-object headers are protocol errors', async (t) => {
    const cases: Array<[Buffer, RegExp]> = [
      [rawFrame('{"t": "ping",'), /not valid JSON/],
      [rawFrame('hello'), /not valid JSON/],
      [rawFrame(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), /not valid UTF-8/],
      [rawFrame('[1,2,3]'), /not a JSON object/],
      [rawFrame('42'), /not a JSON object/],
      [rawFrame('null'), /not a JSON object/],
      [rawFrame('"text"'), /not a JSON object/],
    ];
    for (const [bytes, message] of cases) {
      const decoder = new FrameDecoder();
      decoder.push(bytes);
      t.throws(() => decoder.next(), { name: 'ProtocolError', message });
    }
  });

  t.test('encodeFrame refuses what the decoder would refuse', async (t) => {
    t.throws(() => encodeFrame({ big: 'x'.repeat(MAX_HEADER_BYTES) }), /exceeds/);
    t.throws(() => encodeFrame({}, Buffer.alloc(MAX_PAYLOAD_BYTES + 1)), /exceeds/);
    t.throws(() => encodeFrame([] as unknown as object), /JSON object/);
  });
});

// ---- messages --------------------------------------------------------------------------------

const NONCE = 'a'.repeat(64);
const MAC = '0123456789abcdef'.repeat(4);
const ENTRY = { p: 'resource-r1/primary', v: 'alpha', s: 1_700_000_000_000_000 };
const VALID: Message[] = [
  { t: 'hello', proto: 2, host: 'alpha', uuid: 'alpha_1700000000.123456789', nonce: NONCE },
  { t: 'auth', proto: 2, host: 'beta', uuid: '(any)', nonce: NONCE, cipher: 'hmac-sha256', mac: MAC },
  { t: 'welcome', mac: MAC, clockUs: 5 },
  { t: 'refused', reason: 'authentication failed' },
  { t: 'getents', id: 0 },
  { t: 'log-read', id: 0xffff_ffff, res: 'r1', name: 'log-000000001-alpha', fromPos: 0, follow: true, waitMs: 60_000, rateBytesPerS: 0 },
  { t: 'sync-digests', id: 2, res: 'r1', fromPos: 8192, lengthBytes: 256 * 1024 * 1024, blockBytes: 4096 },
  { t: 'sync-read', id: 3, res: 'r1', fromPos: 4096, lengthBytes: 1024 * 1024 },
  { t: 'position', id: 4, res: 'r1' },
  { t: 'push-link', id: 5, entry: ENTRY },
  { t: 'ping', id: 6 },
  { t: 'cancel', id: 6 },
  { t: 'notify' },
  { t: 'ents', id: 7, clockUs: 9, count: 0 },
  { t: 'log-data', id: 8, pos: 100 },
  { t: 'log-end', id: 8, pos: 100, durableEnd: 100 },
  { t: 'digests', id: 9, fromPos: 0, count: 3 },
  { t: 'blocks', id: 10, fromPos: 0 },
  { t: 'position-reply', id: 11, seq: 3, origin: 'alpha', pos: 12345 },
  { t: 'ok', id: 12 },
  { t: 'pong', id: 13 },
  { t: 'error', id: 14, code: 'ENOENT', message: 'no such logfile' },
];

function rejects(t: Test, header: unknown, pattern: RegExp, what: string): void {
  t.throws(() => parseMessage(header), { name: 'ProtocolError', message: pattern }, what);
}

t.test('messages', async (t) => {
  t.test('every message type validates', async (t) => {
    t.equal(new Set(VALID.map((m) => m.t)).size, 22, 'all 22 types are covered');
    for (const m of VALID) t.same(parseMessage(JSON.parse(JSON.stringify(m))), m, m.t);
  });

  t.test('sync-digests: the keyed digest comes with its key, the key is 32 hex characters', async (t) => {
    const base = { t: 'sync-digests', id: 2, res: 'r1', fromPos: 0, lengthBytes: 4096, blockBytes: 4096, digest: 'sha1' };
    const key = '0f'.repeat(16);
    t.same(parseMessage({ ...base, keyed: 'gmac-aes128', key }), { ...base, keyed: 'gmac-aes128', key });
    rejects(t, { ...base, keyed: 'gmac-aes128' }, /keyed and key come together/, 'keyed without a key');
    rejects(t, { ...base, key }, /keyed and key come together/, 'a key without keyed');
    for (const bad of ['0F'.repeat(16), '0f'.repeat(15), '0f'.repeat(17), 'zz'.repeat(16)]) rejects(t, { ...base, keyed: 'gmac-aes128', key: bad }, /key/, `key ${bad}`);
    rejects(t, { ...base, digest: 'gmac-aes128' }, /digest/, 'the keyed digest is not asked for as `digest`');
    rejects(t, { ...base, keyed: 'sha1', key }, /keyed/, 'keyed names the keyed digest only');
    t.same(parseMessage({ t: 'digests', id: 9, fromPos: 0, count: 1, digest: 'gmac-aes128' }), { t: 'digests', id: 9, fromPos: 0, count: 1, digest: 'gmac-aes128' }, 'a reply names it');
  });

  t.test('unknown fields are dropped, unknown types rejected', async (t) => {
    t.same(parseMessage({ t: 'ping', id: 1, future: true }), { t: 'ping', id: 1 });
    rejects(t, { t: 'shutdown' }, /unknown message type "shutdown"/, 'unknown type');
    rejects(t, { id: 1 }, /unknown message type \(missing t\)/, 'missing t');
    rejects(t, { t: 5 }, /unknown message type number/, 't not a string');
  });

  t.test('host and resource names are validated like the tree', async (t) => {
    const bad = ['', 'a/b', '..', '.', '../etc', '-x', 'a'.repeat(64), 'a b', 'a\u0000b', 'é'];
    for (const name of bad) {
      rejects(t, { t: 'hello', proto: 2, host: name, uuid: 'u', nonce: NONCE }, /invalid hello message: host/, `host ${JSON.stringify(name)}`);
      rejects(t, { t: 'position', id: 1, res: name }, /invalid position message: res/, `resource ${JSON.stringify(name)}`);
      rejects(t, { ...VALID[5], name: `log-000000001-${name}` }, /invalid log-read message: name/, `log origin ${JSON.stringify(name)}`);
      rejects(t, { t: 'position-reply', id: 1, seq: 1, origin: name, pos: 0 }, /origin/, `origin ${JSON.stringify(name)}`);
    }
    t.ok(parseMessage({ t: 'position', id: 1, res: 'a'.repeat(63) }), '63 characters are fine');
    for (const name of ['log-00000001-alpha', 'log-0000000001-alpha', 'log-000000001', 'log-000000001-', 'version-000000001-alpha', 'log-00000000a-alpha']) {
      rejects(t, { ...VALID[5], name }, /invalid log-read message: name/, name);
    }
  });

  t.test('tree paths stay inside the tree', async (t) => {
    for (const p of ['', '/etc/passwd', '../x', 'resource-r1/../../x', 'a/b/c/d', 'a//b', '.', '..', 'resource-r1/.', 'a/', '.hidden']) {
      rejects(t, { t: 'push-link', id: 1, entry: { ...ENTRY, p } }, /entry\.p/, `path ${JSON.stringify(p)}`);
    }
    for (const p of ['uuid', 'ips/ip-alpha', 'resource-r1/todo-alpha/attach']) t.ok(parseMessage({ t: 'push-link', id: 1, entry: { ...ENTRY, p } }), p);
    rejects(t, { t: 'push-link', id: 1, entry: { ...ENTRY, v: '' } }, /entry\.v/, 'empty value');
    rejects(t, { t: 'push-link', id: 1, entry: { ...ENTRY, v: 'x'.repeat(1024) } }, /entry\.v/, 'value too long');
    rejects(t, { t: 'push-link', id: 1, entry: { ...ENTRY, v: 'a\u0000b' } }, /entry\.v/, 'value with NUL');
  });

  t.test('numbers are non-negative safe integers within the limits', async (t) => {
    const numberCases: Array<[object, RegExp]> = [
      [{ t: 'ping', id: -1 }, /id/],
      [{ t: 'ping', id: 2 ** 32 }, /id/],
      [{ t: 'ping', id: 1.5 }, /id/],
      [{ t: 'ping', id: '1' }, /id/],
      [{ ...VALID[5], fromPos: -1 }, /fromPos/],
      [{ ...VALID[5], fromPos: 2 ** 53 }, /fromPos/],
      [{ ...VALID[5], fromPos: 1e300 }, /fromPos/],
      [{ ...VALID[5], waitMs: 60_001 }, /waitMs/],
      [{ ...VALID[5], rateBytesPerS: -5 }, /rateBytesPerS/],
      [{ ...VALID[5], follow: 'yes' }, /follow/],
      [{ ...VALID[6], lengthBytes: 256 * 1024 * 1024 + 4096 }, /lengthBytes/],
      [{ ...VALID[6], blockBytes: 512 }, /blockBytes/],
      [{ ...VALID[6], fromPos: 100 }, /multiples of blockBytes/],
      [{ ...VALID[7], lengthBytes: 1024 * 1024 + 1 }, /lengthBytes/],
      [{ t: 'log-end', id: 1, pos: 10, durableEnd: 9 }, /durableEnd/],
      [{ t: 'position-reply', id: 1, seq: 1_000_000_000, origin: 'a', pos: 0 }, /seq/],
      [{ t: 'welcome', mac: MAC, clockUs: -1 }, /clockUs/],
      [{ t: 'push-link', id: 1, entry: { ...ENTRY, s: -1 } }, /entry\.s/],
    ];
    for (const [header, pattern] of numberCases) rejects(t, header, pattern, JSON.stringify(header));
  });

  t.test('nonces, MACs, uuids, codes and texts', async (t) => {
    rejects(t, { ...VALID[0], nonce: 'A'.repeat(64) }, /nonce/, 'uppercase nonce');
    rejects(t, { ...VALID[0], nonce: 'a'.repeat(63) }, /nonce/, 'short nonce');
    rejects(t, { ...VALID[1], mac: 'g'.repeat(64) }, /mac/, 'non-hex mac');
    rejects(t, { ...VALID[0], uuid: '' }, /uuid/, 'empty uuid');
    rejects(t, { ...VALID[0], uuid: 'u'.repeat(201) }, /uuid/, 'long uuid');
    rejects(t, { ...VALID[0], uuid: 'a\nb' }, /uuid/, 'uuid with a newline');
    rejects(t, { ...VALID[0], proto: 1 }, /proto/, 'older protocol version');
    rejects(t, { t: 'refused', reason: 'x'.repeat(501) }, /reason/, 'long reason');
    rejects(t, { t: 'error', id: 1, code: 'eio', message: '' }, /code/, 'lowercase code');
  });

  t.test('payload rules', async (t) => {
    const m = (h: object) => parseMessage(h);
    t.doesNotThrow(() => checkPayload(m({ t: 'digests', id: 1, fromPos: 0, count: 2 }), Buffer.alloc(32)));
    t.throws(() => checkPayload(m({ t: 'digests', id: 1, fromPos: 0, count: 2 }), Buffer.alloc(31)), /does not hold 2 digests/);
    t.throws(() => checkPayload(m({ t: 'log-data', id: 1, pos: 0 }), Buffer.alloc(0)), /log-data payload/);
    t.throws(() => checkPayload(m({ t: 'log-data', id: 1, pos: 0 }), Buffer.alloc(MAX_LOG_DATA_BYTES + 1)), /log-data payload/);
    t.throws(() => checkPayload(m({ t: 'ping', id: 1 }), Buffer.alloc(1)), /carries no payload/);
    t.throws(() => checkPayload(m({ t: 'blocks', id: 1, fromPos: 0 }), Buffer.alloc(1024 * 1024 + 1)), /blocks payload/);
  });

  t.test('ents payload', async (t) => {
    const doc = { entries: [ENTRY, { p: 'resource-r1/data-beta', v: '.deleted', s: 3 }], logs: [{ res: 'r1', name: 'log-000000002-alpha', sizeBytes: 4096 }] };
    const bytes = encodeEntsPayload(doc, 'each-checked-with-entrySchema');
    t.same(parseEntsPayload(bytes, 2), doc);
    t.throws(() => parseEntsPayload(bytes, 3), /says 3 entries, the payload holds 2/);
    t.throws(() => parseEntsPayload(Buffer.from('{"entries":'), 0), /not valid UTF-8 JSON/);
    t.throws(() => parseEntsPayload(Buffer.from(JSON.stringify({ entries: [{ ...ENTRY, p: '../x' }], logs: [] })), 1), /entries\.0\.p/);
    t.throws(() => parseEntsPayload(Buffer.from(JSON.stringify({ entries: [], logs: [{ res: 'r1', name: 'log-1-a', sizeBytes: 0 }] })), 0), /logs\.0\.name/);
    t.throws(() => parseEntsPayload(Buffer.from('[]'), 0), /invalid ents payload/);
    t.throws(() => encodeEntsPayload({ entries: [], logs: [{ res: 'r1', name: 'log-1-a', sizeBytes: 0 }] }, 'each-checked-with-entrySchema'), /refusing to send an invalid logfile listing/);
  });
});

// ---- rate limit ---------------------------------------------------------------------------------

t.test('token bucket', async (t) => {
  t.test('unlimited never waits', async (t) => {
    const bucket = new TokenBucket(0, 1024, () => 0);
    t.equal(bucket.reserve(100 * 1024 * 1024), 0);
  });

  t.test('burst, then debt paid in time', async (t) => {
    let now = 1000;
    const bucket = new TokenBucket(1000, 500, () => now);
    t.equal(bucket.reserve(500), 0, 'the burst goes at once');
    t.equal(bucket.reserve(250), 250, '250 bytes at 1000 B/s: 250 ms');
    now += 250;
    t.equal(bucket.reserve(0), 0, 'the debt is paid after waiting it out');
    now += 10_000;
    t.equal(bucket.reserve(500), 0, 'tokens never exceed the burst...');
    t.equal(bucket.reserve(1), 1, '...so the next byte waits');
    now -= 5000;
    t.equal(bucket.reserve(0), 1, 'a clock going backwards adds no tokens');
  });

  t.test('a long stream at the limit takes (bytes - burst) / rate', async (t) => {
    let now = 0;
    const rate = 4 * 1024 * 1024;
    const burst = 256 * 1024;
    const bucket = new TokenBucket(rate, burst, () => now);
    const chunk = chunkBytesForRate(rate, MAX_LOG_DATA_BYTES);
    t.equal(chunk, Math.floor(rate / 10));
    let sent = 0;
    const total = 64 * 1024 * 1024;
    while (sent < total) {
      now += bucket.reserve(chunk); // wait as told, then send
      sent += chunk;
    }
    const expectedMs = ((sent - burst) / rate) * 1000;
    t.ok(Math.abs(now - expectedMs) < 1, `took ${now.toFixed(1)} ms, expected ${expectedMs.toFixed(1)} ms`);
  });

  t.test('frame size under a limit', async (t) => {
    t.equal(chunkBytesForRate(0, MAX_LOG_DATA_BYTES), MAX_LOG_DATA_BYTES);
    t.equal(chunkBytesForRate(1000, MAX_LOG_DATA_BYTES), 4096, 'at least 4 KiB');
    t.equal(chunkBytesForRate(1e9, MAX_LOG_DATA_BYTES), MAX_LOG_DATA_BYTES, 'at most the frame limit');
  });
});

t.test('ents payloads: deflated only when the client takes it and it is large; inflating is bounded', async (t) => {
  const { maybeDeflateEnts, DEFLATE_ENTS_FROM_BYTES, MAX_ENTS_INFLATED_BYTES } = await import('../../daemon/net/messages.js');
  const { deflateRawSync } = await import('node:zlib');
  const entries = Array.from({ length: 2000 }, (_, i) => ({ p: `resource-r1/version-${String(i).padStart(9, '0')}-alpha`, v: `log-${String(i).padStart(9, '0')}-alpha,0,0`, s: 1_700_000_000_000_000 + i }));
  const json = encodeEntsPayload({ entries, logs: [] }, 'each-checked-with-entrySchema');
  t.ok(json.length > DEFLATE_ENTS_FROM_BYTES, 'large enough to deflate');
  t.same(maybeDeflateEnts(json, false), { payload: json, deflated: false }, 'a client that did not ask gets plain JSON');
  const small = encodeEntsPayload({ entries: entries.slice(0, 2), logs: [] }, 'each-checked-with-entrySchema');
  t.equal(maybeDeflateEnts(small, true).deflated, false, 'a small listing goes as it is');
  const d = maybeDeflateEnts(json, true);
  t.ok(d.deflated && d.payload.length < json.length / 4, `deflated to ${d.payload.length} of ${json.length} bytes`);
  t.same(parseEntsPayload(d.payload, entries.length, { deflated: true }).entries, entries, 'inflated and parsed');
  t.throws(() => parseEntsPayload(Buffer.from('not deflate data at all'), 0, { deflated: true }), /does not inflate/, 'garbage is a protocol error');
  // 8 MiB of zeros deflate to a few KiB; the limit is what keeps a hostile peer's bomb small.
  const bomb = deflateRawSync(Buffer.alloc(MAX_ENTS_INFLATED_BYTES + 1024, 0x20));
  t.ok(bomb.length < 1 << 20, `a bomb of ${bomb.length} bytes`);
  t.throws(() => parseEntsPayload(bomb, 0, { deflated: true }), /does not inflate within/, 'inflating beyond the limit is refused');
  t.throws(() => parseEntsPayload(d.payload, entries.length), /not valid UTF-8 JSON/, 'deflated bytes without the header flag are not JSON');
});
