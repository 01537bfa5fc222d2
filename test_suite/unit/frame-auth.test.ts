// Per-frame authentication (frame-auth.ts) on real encoded frames through the real decoder:
// every kind of tampering a relay could do is detected, in both cipher modes, and the session
// keys differ per direction and per session.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { encodeFrame, FrameDecoder, ProtocolError, type Frame } from '../../daemon/net/frame.js';
import { FRAME_CIPHERS, FrameAuthError, sessionCodec, type FrameCipher } from '../../daemon/net/frame-auth.js';
import { deriveSessionKeys, newNonce, type HandshakeTranscript } from '../../daemon/net/auth.js';
import { decideAdmission } from '../../daemon/net/admission.js';
import { HandshakeSlots } from '../../daemon/net/handshake-slots.js';
import { RefusalLog } from '../../daemon/net/refusal-log.js';
import { SimClock } from '../helpers/sim-clock.js';

const SECRET = randomBytes(32);

function transcript(cipher: FrameCipher): HandshakeTranscript {
  return { serverNonce: newNonce(), clientNonce: newNonce(), serverHost: 'alpha', clientHost: 'beta', serverUuid: 'u_1.2', clientUuid: 'u_1.2', cipher };
}

function pair(cipher: FrameCipher) {
  const tr = transcript(cipher);
  const client = sessionCodec(deriveSessionKeys(SECRET, tr, 'client'));
  const server = sessionCodec(deriveSessionKeys(SECRET, tr, 'server'));
  const serverDecoder = new FrameDecoder();
  serverDecoder.setOpener(server.opener);
  const clientDecoder = new FrameDecoder();
  clientDecoder.setOpener(client.opener);
  return { client, server, serverDecoder, clientDecoder };
}

const frameOf = (header: object, payload?: Buffer) => encodeFrame(header, payload);
const wire = (bufs: Buffer[]) => Buffer.concat(bufs);

function decodeAll(decoder: FrameDecoder, bytes: Buffer): Frame[] {
  decoder.push(bytes);
  return [...decoder];
}

for (const cipher of FRAME_CIPHERS) {
  t.test(`${cipher}: honest frames pass, in order, with payloads`, async (t) => {
    const p = pair(cipher);
    const payload = randomBytes(300_000);
    const bytes = wire([...p.client.sealer.seal(frameOf({ t: 'getents', id: 1 })), ...p.client.sealer.seal(frameOf({ t: 'ping', id: 2 }, payload))]);
    const frames = decodeAll(p.serverDecoder, bytes);
    t.same(frames.map((f) => f.header), [{ t: 'getents', id: 1 }, { t: 'ping', id: 2 }]);
    t.ok(frames[1]!.payload.equals(payload), 'the payload arrives intact');
    if (cipher === 'chacha20-poly1305') t.notOk(bytes.includes(Buffer.from('getents')), 'the header is not in clear on the wire');
    else t.ok(bytes.includes(Buffer.from('getents')), 'authenticated only: the header is in clear');
  });

  t.test(`${cipher}: injection, replay, reordering, reflection, splicing and flipped bits fail`, async (t) => {
    const attacks: Array<[string, (p: ReturnType<typeof pair>) => { decoder: FrameDecoder; bytes: Buffer }]> = [
      ['an injected frame with a random tag', (p) => ({ decoder: p.serverDecoder, bytes: wire([...frameOf({ t: 'getents', id: 9 }), randomBytes(16)]) })],
      ['an unsealed frame', (p) => ({ decoder: p.serverDecoder, bytes: wire([...frameOf({ t: 'getents', id: 9 }), ...frameOf({ t: 'ping', id: 1 })]) })],
      ['a replayed frame', (p) => {
        const f = wire(p.client.sealer.seal(frameOf({ t: 'getents', id: 1 })));
        return { decoder: p.serverDecoder, bytes: wire([f, f]) };
      }],
      ['two frames swapped', (p) => {
        const a = wire(p.client.sealer.seal(frameOf({ t: 'getents', id: 1 })));
        const b = wire(p.client.sealer.seal(frameOf({ t: 'ping', id: 2 })));
        return { decoder: p.serverDecoder, bytes: wire([b, a]) };
      }],
      ['a dropped frame', (p) => {
        p.client.sealer.seal(frameOf({ t: 'getents', id: 1 }));
        return { decoder: p.serverDecoder, bytes: wire(p.client.sealer.seal(frameOf({ t: 'ping', id: 2 }))) };
      }],
      ['a frame reflected to its sender', (p) => ({ decoder: p.clientDecoder, bytes: wire(p.client.sealer.seal(frameOf({ t: 'ping', id: 1 }))) })],
      ['a frame from another session', (p) => {
        const other = pair(cipher);
        return { decoder: p.serverDecoder, bytes: wire(other.client.sealer.seal(frameOf({ t: 'getents', id: 1 }))) };
      }],
    ];
    for (const [what, make] of attacks) {
      const { decoder, bytes } = make(pair(cipher));
      t.throws(() => decodeAll(decoder, bytes), FrameAuthError, what);
    }
    // Every single bit of a sealed frame matters (prefix lengths aside, which may also just
    // leave the frame incomplete).
    const sealed = wire(pair(cipher).client.sealer.seal(frameOf({ t: 'ping', id: 7 }, randomBytes(64))));
    let detected = 0;
    for (let i = 8; i < sealed.length; i++) {
      const p = pair(cipher);
      const good = wire(p.client.sealer.seal(frameOf({ t: 'ping', id: 7 }, randomBytes(64))));
      const bad = Buffer.from(good);
      bad[i]! ^= 1 << (i % 8);
      try {
        decodeAll(p.serverDecoder, bad);
      } catch (err) {
        if (err instanceof FrameAuthError) detected++;
      }
    }
    t.equal(detected, sealed.length - 8, `all ${sealed.length - 8} single-bit flips after the prefix are detected`);
  });
}

t.test('session keys: one per direction, new per session, bound to the cipher', async (t) => {
  const tr = transcript('hmac-sha256');
  const c = deriveSessionKeys(SECRET, tr, 'client');
  const s = deriveSessionKeys(SECRET, tr, 'server');
  t.ok(c.sendKey.equals(s.receiveKey) && c.receiveKey.equals(s.sendKey), 'each side opens what the other seals');
  t.notOk(c.sendKey.equals(c.receiveKey), 'the two directions have different keys');
  t.notOk(deriveSessionKeys(SECRET, { ...tr, clientNonce: newNonce() }, 'client').sendKey.equals(c.sendKey), 'another nonce, another key');
  t.notOk(deriveSessionKeys(SECRET, { ...tr, cipher: 'chacha20-poly1305' }, 'client').sendKey.equals(c.sendKey), 'the cipher is bound');
  t.notOk(deriveSessionKeys(SECRET, { ...tr, clientHost: 'mallory' }, 'client').sendKey.equals(c.sendKey), 'the hosts are bound');
});

t.test('the decoder fails closed after an authentication failure', async (t) => {
  const p = pair('hmac-sha256');
  const isProtocolError = (fn: () => unknown) => {
    try {
      fn();
      return false;
    } catch (err) {
      return err instanceof ProtocolError;
    }
  };
  t.ok(isProtocolError(() => decodeAll(p.serverDecoder, wire([...frameOf({ t: 'getents', id: 9 }), randomBytes(16)]))), 'a forged frame fails');
  t.ok(isProtocolError(() => p.serverDecoder.push(wire(p.client.sealer.seal(frameOf({ t: 'ping', id: 1 }))))), 'nothing is accepted afterwards');
});

t.test('admission: members only; removed hosts read the tree only; joining hosts for the join; nobody as us', async (t) => {
  const links = new Map<string, { value: string; stampUs: number; deleted: boolean }>([
    ['ips/ip-alpha', { value: '127.0.0.1:1', stampUs: 10, deleted: false }],
    ['ips/ip-beta', { value: '127.0.0.1:2', stampUs: 10, deleted: false }],
    ['ips/ip-gamma', { value: '.deleted', stampUs: 30, deleted: true }],
    ['ips/removed-gamma', { value: 'by alpha', stampUs: 20, deleted: false }],
    ['ips/ip-delta', { value: '127.0.0.1:4', stampUs: 40, deleted: false }],
    ['ips/removed-delta', { value: 'by alpha', stampUs: 20, deleted: false }],
  ]);
  const lookup = (p: string) => links.get(p);
  t.same(decideAdmission(lookup, 'alpha', 'beta', 'u'), { admit: 'member' });
  t.match(decideAdmission(lookup, 'alpha', 'mallory', 'u'), { refuse: /not a member/ });
  t.match(decideAdmission(lookup, 'alpha', 'gamma', 'u'), { admit: 'removed', detail: /removed from the cluster by alpha/ }, 'a removed host: tree reads only');
  t.same(decideAdmission(lookup, 'alpha', 'delta', 'u'), { admit: 'member' }, 'a rejoin newer than the marker ends it');
  t.same(decideAdmission(lookup, 'alpha', 'mallory', '(any)'), { admit: 'joining' });
  t.match(decideAdmission(lookup, 'alpha', 'alpha', 'u'), { refuse: /this host/ });
});

t.test('handshake slots: per-address cap, eviction of the busiest address when full', async (t) => {
  const slots = new HandshakeSlots(4, 2);
  const evicted: string[] = [];
  const slot = (address: string, name: string) => ({ address, evict: () => evicted.push(name) });
  const a1 = slot('10.0.0.1', 'a1');
  t.ok(slots.acquire(a1).ok);
  t.ok(slots.acquire(slot('10.0.0.1', 'a2')).ok);
  t.match(slots.acquire(slot('10.0.0.1', 'a3')), { ok: false, why: /already 2 unauthenticated connections from 10.0.0.1/ });
  t.ok(slots.acquire(slot('10.0.0.2', 'b1')).ok);
  t.ok(slots.acquire(slot('10.0.0.3', 'c1')).ok);
  t.ok(slots.acquire(slot('10.0.0.4', 'd1')).ok, 'a full pool makes room');
  t.same(evicted, ['a1'], 'the oldest of the busiest address went');
  t.equal(slots.size, 4);
  slots.release(a1);
  t.equal(slots.size, 4, 'releasing an evicted slot again changes nothing');
});

t.test('refusal log: the first in full, the rest in one summary line per interval', async (t) => {
  const clock = new SimClock();
  const lines: string[] = [];
  const log = new RefusalLog((_level, msg) => lines.push(msg), clock, 10_000);
  for (let i = 0; i < 500; i++) log.note(i % 2 ? 'not admitted' : 'authentication failed', `refusal ${i}`);
  t.equal(lines.length, 1, 'one line at once');
  t.match(lines[0], /refusal 0/);
  await clock.advance(10_000);
  t.equal(lines.length, 2, 'one summary at the end of the interval');
  t.match(lines[1], /refused 499 more .*250 not admitted, 249 authentication failed/);
  t.equal(log.total, 500);
  log.close();
});
