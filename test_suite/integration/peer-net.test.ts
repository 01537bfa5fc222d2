// The peer protocol over real transports: TCP on 127.0.0.1 (port 0), TLS, and a child
// process's stdin/stdout (the `marsd --stdio` / SSH transport, with a local stand-in for ssh).
// Hostile and broken peers are simulated with raw sockets speaking the framing by hand.
// Nothing sleeps a fixed time: every wait is for an event or a condition, with a deadline.
import { withDeadline } from '../helpers/wait.js';
import t, { type Test } from 'tap';
import net from 'node:net';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PeerServer, type PeerServerOptions } from '../../daemon/net/server.js';
import { connectOverDuplex, dialPeer, dialSsh, formatAddress, parseAddress, shellQuote, spawnDuplex, sshArgs, type DialOptions } from '../../daemon/net/dial.js';
import { PeerConnection, PeerRequestError, ConnectionClosedError, type PeerHandlers } from '../../daemon/net/connection.js';
import { clientHandshake, HandshakeError, serverHandshake } from '../../daemon/net/handshake.js';
import { clientMac, newNonce } from '../../daemon/net/auth.js';
import { ANY_UUID } from '../../common/cluster/secret.js';
import { encodeFrame, FrameDecoder, type Frame } from '../../daemon/net/frame.js';
import type { FrameSealer } from '../../daemon/net/frame-auth.js';
import { PROTOCOL_VERSION, type Entry, type LogReadRequest } from '../../daemon/net/messages.js';
import { waitFor } from '../helpers/wait.js';
import { tempDir } from '../helpers/tmp.js';
import { FaultProxy } from '../helpers/fault-proxy.js';

const SECRET = randomBytes(32);
const UUID = 'alpha_1700000000.000000001';
const MiB = 1024 * 1024;
const ENTRIES: Entry[] = [
  { p: 'uuid', v: UUID, s: 1_700_000_000_000_001 },
  { p: 'resource-r1/primary', v: 'alpha', s: 1_700_000_000_000_002 },
  { p: 'resource-r1/data-beta', v: '.deleted', s: 1_700_000_000_000_003 },
];
const LOG_NAME = 'log-000000001-alpha';

// ---- helpers ---------------------------------------------------------------------------------


/** A deterministic byte pattern, so any reordering or loss shows. */
function pattern(pos: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) b[i] = ((pos + i) * 31 + ((pos + i) >>> 12)) & 0xff;
  return b;
}

interface Fixture {
  handlers: PeerHandlers;
  calls: Record<string, number>;
  pushed: Entry[];
}

/** Handlers backed by fixed data; every call is counted so tests can prove none happened. */
function makeHandlers(over: Partial<PeerHandlers> = {}): Fixture {
  const calls: Record<string, number> = {};
  const pushed: Entry[] = [];
  const count = (name: string) => (calls[name] = (calls[name] ?? 0) + 1);
  const log = pattern(0, 3 * MiB);
  const base: PeerHandlers = {
    async getents() {
      return { clockUs: 42, entries: ENTRIES, logs: [{ res: 'r1', name: LOG_NAME, sizeBytes: log.length }] };
    },
    async logRead(_peer, req, sink) {
      let pos = req.fromPos;
      while (pos < log.length) {
        const n = Math.min(256 * 1024, log.length - pos);
        await sink.send(pos, log.subarray(pos, pos + n));
        pos += n;
      }
      return { pos, durableEnd: log.length };
    },
    async syncDigests(_peer, req) {
      const parts: Buffer[] = [];
      const algorithm = req.digest ?? 'md5';
      for (let off = 0; off < req.lengthBytes; off += req.blockBytes) parts.push(createHash(algorithm).update(pattern(req.fromPos + off, req.blockBytes)).digest().subarray(0, 16));
      return { digests: Buffer.concat(parts), algorithm };
    },
    async syncRead(_peer, req) {
      return pattern(req.fromPos, req.lengthBytes);
    },
    async position() {
      return { seq: 1, origin: 'alpha', pos: 12345 };
    },
    async pushLink(_peer, entry) {
      pushed.push(entry);
    },
    notify() {},
  };
  const handlers = {} as PeerHandlers;
  for (const key of Object.keys(base) as Array<keyof PeerHandlers>) {
    const impl = (over[key] ?? base[key]) as (...args: unknown[]) => unknown;
    (handlers as unknown as Record<string, unknown>)[key] = (...args: unknown[]) => {
      count(key);
      return impl(...args);
    };
  }
  return { handlers, calls, pushed };
}

function totalCalls(calls: Record<string, number>): number {
  return Object.values(calls).reduce((a, b) => a + b, 0);
}

interface ServerFixture extends Fixture {
  server: PeerServer;
  port: number;
  address: string;
  logs: string[];
}

async function startServer(t: Test, opts: Partial<PeerServerOptions> = {}, handlerOverrides: Partial<PeerHandlers> = {}): Promise<ServerFixture> {
  const fixture = makeHandlers(handlerOverrides);
  const logs: string[] = [];
  const server = new PeerServer({
    host: 'alpha',
    uuid: UUID,
    secret: SECRET,
    handlers: fixture.handlers,
    log: (level, msg) => logs.push(`${level}: ${msg}`),
    handshakeTimeoutMs: 3000,
    ...opts,
  });
  const { port } = await server.listen('127.0.0.1:0');
  t.teardown(() => server.close());
  return { ...fixture, server, port, address: `127.0.0.1:${port}`, logs };
}

async function dial(t: Test, address: string, opts: Partial<DialOptions> = {}): Promise<PeerConnection> {
  const conn = await dialPeer({ address, host: 'beta', uuid: UUID, secret: SECRET, timeoutMs: 5000, ...opts });
  t.teardown(() => conn.close('test done'));
  return conn;
}

/** A raw TCP connection that decodes what the server sends. */
class RawPeer {
  readonly decoder = new FrameDecoder();
  readonly frames: Frame[] = [];
  readonly closed: Promise<void>;
  decodeError: Error | undefined;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      try {
        this.decoder.push(chunk);
        for (const f of this.decoder) this.frames.push(f);
      } catch (err) {
        this.decodeError = err as Error;
      }
    });
    socket.on('error', () => undefined);
    this.closed = once(socket, 'close').then(() => undefined);
  }

  static async connect(t: Test, port: number): Promise<RawPeer> {
    const socket = net.connect({ host: '127.0.0.1', port });
    await once(socket, 'connect');
    t.teardown(() => socket.destroy());
    return new RawPeer(socket);
  }

  async frame(index: number, what: string): Promise<Frame> {
    await waitFor(what, () => this.frames.length > index, 5000);
    return this.frames[index]!;
  }

  send(header: object, payload?: Buffer): void {
    for (const b of encodeFrame(header, payload)) this.socket.write(b);
  }

  async waitClosed(what: string): Promise<void> {
    await withDeadline(this.closed, 5000, what);
  }
}

/** Proof that a raw client knows the secret, for the hello it received. */
function authFor(hello: Record<string, unknown>, opts: { host?: string; uuid?: string; secret?: Buffer } = {}): Record<string, unknown> {
  const clientNonce = newNonce();
  const host = opts.host ?? 'beta';
  const uuid = opts.uuid ?? UUID;
  const mac = clientMac(opts.secret ?? SECRET, {
    serverNonce: hello.nonce as string, clientNonce, serverHost: hello.host as string, clientHost: host, serverUuid: hello.uuid as string, clientUuid: uuid, cipher: 'hmac-sha256',
  });
  return { t: 'auth', proto: PROTOCOL_VERSION, host, uuid, nonce: clientNonce, cipher: 'hmac-sha256', mac };
}

async function rejectsWith(t: Test, p: Promise<unknown>, check: (err: Error) => boolean, what: string): Promise<Error | undefined> {
  try {
    await p;
    t.fail(`${what}: expected a failure, it succeeded`);
    return undefined;
  } catch (err) {
    t.ok(check(err as Error), `${what}: ${(err as Error).message}`);
    return err as Error;
  }
}

const readRequest = (over: Partial<LogReadRequest> = {}): Omit<LogReadRequest, 'id'> => ({
  t: 'log-read', res: 'r1', name: LOG_NAME, fromPos: 0, follow: false, waitMs: 0, rateBytesPerS: 0, ...over,
});

// ---- addresses ----------------------------------------------------------------------------------

t.test('addresses: ADDR:PORT and [IPv6]:PORT', async (t) => {
  t.same(parseAddress('10.1.2.3:7777'), { host: '10.1.2.3', port: 7777 });
  t.same(parseAddress('[fe80::1]:7777'), { host: 'fe80::1', port: 7777 });
  t.same(parseAddress('127.0.0.1:0', { allowPortZero: true }), { host: '127.0.0.1', port: 0 });
  t.same(parseAddress('alpha.example:7777', { allowHostName: true }), { host: 'alpha.example', port: 7777 });
  for (const bad of ['10.1.2.3', '10.1.2.3:', '10.1.2.3:65536', '10.1.2.3:0', 'fe80::1:7777', '[10.1.2.3]:7777', '[::1]7777', '999.1.2.3:1', 'alpha:7777', ':7777', '10.1.2.3:77a']) {
    t.throws(() => parseAddress(bad), { name: 'AddressError' }, bad);
  }
  t.throws(() => parseAddress('-oProxy:22', { allowHostName: true }), { name: 'AddressError' });
  t.equal(formatAddress('::1', 7), '[::1]:7');
  t.equal(formatAddress('10.0.0.1', 7), '10.0.0.1:7');

  const s = new PeerServer({ host: 'alpha', uuid: UUID, secret: SECRET, handlers: makeHandlers().handlers, log: () => undefined });
  t.teardown(() => s.close());
  let bound: { address: string; port: number };
  try {
    bound = await s.listen('[::1]:0');
  } catch (err) {
    t.pass('an IPv6 loopback listener', { skip: `no IPv6 loopback here: ${(err as Error).message}` });
    return;
  }
  const conn = await dial(t, formatAddress('::1', bound.port));
  await conn.ping();
});

// ---- authentication ---------------------------------------------------------------------------

t.test('a correct secret authenticates both ways and every request works', async (t) => {
  const s = await startServer(t);
  const notified: string[] = [];
  s.handlers.notify = (peer) => void notified.push(peer);
  const conn = await dial(t, s.address, { expectHost: 'alpha' });
  t.equal(conn.peerHost, 'alpha');
  t.equal(conn.peerUuid, UUID);
  await waitFor('the server to count the connection', () => s.server.connectionCount === 1);
  t.equal(s.server.openConnections()[0]!.peerHost, 'beta', 'the server knows who we are');

  const ents = await conn.getents();
  t.same(ents, { clockUs: 42, entries: ENTRIES, logs: [{ res: 'r1', name: LOG_NAME, sizeBytes: 3 * MiB }] });

  const digests = await conn.request({ t: 'sync-digests', res: 'r1', fromPos: 8192, lengthBytes: 3 * 4096, blockBytes: 4096 });
  t.equal(digests.header.count, 3);
  t.ok(digests.payload.subarray(16, 32).equals(createHash('md5').update(pattern(8192 + 4096, 4096)).digest()), 'digest of the second block');
  t.equal(digests.header.digest, undefined, 'asked without naming a digest: none named in the reply (md5, what older peers expect)');
  const named = await conn.request({ t: 'sync-digests', res: 'r1', fromPos: 8192, lengthBytes: 4096, blockBytes: 4096, digest: 'sha1' });
  t.equal(named.header.digest, 'sha1', 'the digest asked for is named in the reply');
  const keyed = await conn.request({ t: 'sync-digests', res: 'r1', fromPos: 8192, lengthBytes: 4096, blockBytes: 4096, digest: 'sha1', keyed: 'gmac-aes128', key: '0f'.repeat(16) });
  t.equal(keyed.header.digest, 'sha1', 'a server that does not make the keyed digest names the one it made');

  const blocks = await conn.request({ t: 'sync-read', res: 'r1', fromPos: 4096, lengthBytes: 65536 });
  t.ok(blocks.payload.equals(pattern(4096, 65536)));

  const position = await conn.request({ t: 'position', res: 'r1' });
  t.same(position.header, { t: 'position-reply', id: position.header.id, seq: 1, origin: 'alpha', pos: 12345 });

  await conn.request({ t: 'push-link', entry: ENTRIES[1]! });
  t.same(s.pushed, [ENTRIES[1]]);
  await conn.ping();

  conn.notify();
  await waitFor('the notify to reach the handler', () => notified.length === 1);
  t.same(notified, ['beta']);

  const chunks: Buffer[] = [];
  const end = await conn.stream(readRequest({ fromPos: 1000 }), (h, payload) => void chunks.push(payload));
  t.equal(end.pos, 3 * MiB);
  t.ok(Buffer.concat(chunks).equals(pattern(0, 3 * MiB).subarray(1000)), 'the logfile bytes arrive in order');

  conn.close('done');
  t.equal(await conn.closed, 'done');
  await waitFor('the server to see the close', () => s.server.connectionCount === 0);
  t.ok(s.logs.some((l) => /peer beta connected from 127\.0\.0\.1:\d+/.test(l)), 'the server logged the connection');
});

t.test('a wrong secret is refused; the server logs why and calls no handler', async (t) => {
  const s = await startServer(t);
  const err = await rejectsWith(t, dial(t, s.address, { secret: randomBytes(32) }), (e) => e instanceof HandshakeError && e.refusal === 'authentication failed', 'wrong secret');
  t.match(err?.message ?? '', /refused the connection: authentication failed/);
  await waitFor('the server to log the failure', () => s.logs.find((l) => /peer 127\.0\.0\.1:\d+: handshake failed: client claiming to be beta failed authentication/.test(l)));
  t.equal(totalCalls(s.calls), 0, 'no handler ran');
  t.equal(s.server.connectionCount, 0);
});

t.test('the client verifies the server: a fake server without the secret, or the wrong host, is rejected', async (t) => {
  const fake = net.createServer((socket) => {
    socket.on('error', () => undefined);
    const decoder = new FrameDecoder();
    for (const b of encodeFrame({ t: 'hello', proto: PROTOCOL_VERSION, host: 'alpha', uuid: UUID, nonce: newNonce() })) socket.write(b);
    socket.on('data', (chunk: Buffer) => {
      decoder.push(chunk);
      for (const f of decoder) {
        if ((f.header as { t: string }).t === 'auth') {
          for (const b of encodeFrame({ t: 'welcome', mac: randomBytes(32).toString('hex'), clockUs: 1 })) socket.write(b);
        }
      }
    });
  });
  fake.listen(0, '127.0.0.1');
  await once(fake, 'listening');
  t.teardown(() => fake.close());
  const address = `127.0.0.1:${(fake.address() as net.AddressInfo).port}`;
  await rejectsWith(t, dialPeer({ address, host: 'beta', uuid: UUID, secret: SECRET }), (e) => /failed to prove it knows the cluster secret/.test(e.message), 'bogus welcome MAC');
  await rejectsWith(t, dialPeer({ address, host: 'beta', uuid: UUID, secret: SECRET, expectHost: 'gamma' }), (e) => /says it is host alpha, expected gamma/.test(e.message), 'unexpected host');
});

t.test('no frame is processed before authentication', async (t) => {
  const s = await startServer(t);

  const garbage = await RawPeer.connect(t, s.port);
  await garbage.frame(0, 'hello');
  garbage.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await garbage.waitClosed('the server to drop a client sending garbage');

  const early = await RawPeer.connect(t, s.port);
  const hello = await early.frame(0, 'hello');
  t.match(hello.header, { t: 'hello', proto: PROTOCOL_VERSION, host: 'alpha', uuid: UUID });
  early.send({ t: 'getents', id: 1 });
  early.send({ t: 'sync-read', id: 2, res: 'r1', fromPos: 0, lengthBytes: 4096 });
  const refused = await early.frame(1, 'refused');
  t.same(refused.header, { t: 'refused', reason: 'protocol error' });
  await early.waitClosed('the server to drop a client that skipped auth');
  t.equal(early.frames.length, 2, 'nothing but hello and refused was sent');

  const oversized = await RawPeer.connect(t, s.port);
  await oversized.frame(0, 'hello');
  const prefix = Buffer.alloc(8);
  prefix.writeUInt32BE(60_000, 0); // legal after auth, too big before
  oversized.socket.write(prefix);
  await oversized.waitClosed('the server to drop a huge pre-auth frame');

  const payload = await RawPeer.connect(t, s.port);
  const hello2 = await payload.frame(0, 'hello');
  payload.send(authFor(hello2.header as Record<string, unknown>), Buffer.alloc(16)); // auth with a payload
  await payload.waitClosed('the server to drop an auth frame with a payload');

  const version = await RawPeer.connect(t, s.port);
  const hello3 = await version.frame(0, 'hello');
  version.send({ ...authFor(hello3.header as Record<string, unknown>), proto: PROTOCOL_VERSION - 1 });
  t.same((await version.frame(1, 'refused')).header, { t: 'refused', reason: 'protocol version' });
  await version.waitClosed('the server to drop a client of another protocol version');

  t.equal(totalCalls(s.calls), 0, 'no handler ran');
  t.equal(s.server.connectionCount, 0);
  await waitFor('all pre-auth failures counted', () => s.server.refusalCount >= 5);
  // Refusals are logged rate-limited: the first in full, the rest in one summary line later.
  t.equal(s.logs.filter((l) => /handshake failed/.test(l)).length, 1, 'one detailed line for five refusals');
  t.ok(s.logs.some((l) => /handshake failed: .*(JSON|UTF-8|header)/.test(l)), `the log says what the first client did: ${s.logs.join(' | ')}`);
});

t.test('a recorded auth frame replayed on a new connection is refused', async (t) => {
  const s = await startServer(t);
  const first = await RawPeer.connect(t, s.port);
  const hello = await first.frame(0, 'hello');
  const auth = authFor(hello.header as Record<string, unknown>);
  first.send(auth);
  t.match((await first.frame(1, 'welcome')).header, { t: 'welcome' }, 'the original auth is accepted');

  const replay = await RawPeer.connect(t, s.port);
  const hello2 = await replay.frame(0, 'hello');
  t.not((hello2.header as { nonce: string }).nonce, (hello.header as { nonce: string }).nonce, 'every hello has a fresh nonce');
  replay.send(auth);
  t.same((await replay.frame(1, 'refused')).header, { t: 'refused', reason: 'authentication failed' });
  await replay.waitClosed('the replayed connection to be dropped');
  t.equal(totalCalls(s.calls), 0);
});

t.test('cluster uuids must match, unless one side is joining', async (t) => {
  const s = await startServer(t);
  await rejectsWith(t, dial(t, s.address, { uuid: 'gamma_1.2' }), (e) => e instanceof HandshakeError && /uuid mismatch/.test(e.message), 'client checks the uuid');

  // A client that lies about nothing but its uuid (valid MAC) is refused by the server.
  const raw = await RawPeer.connect(t, s.port);
  const hello = await raw.frame(0, 'hello');
  raw.send(authFor(hello.header as Record<string, unknown>, { uuid: 'gamma_1.2' }));
  t.same((await raw.frame(1, 'refused')).header, { t: 'refused', reason: 'uuid mismatch' });
  await raw.waitClosed('the mismatched client to be dropped');

  const joining = await dial(t, s.address, { uuid: ANY_UUID });
  t.equal(joining.peerUuid, UUID, 'a joining host learns the cluster uuid');
  await joining.ping();

  const joiningServer = await startServer(t, { uuid: ANY_UUID });
  const member = await dial(t, joiningServer.address);
  t.equal(member.peerUuid, ANY_UUID);
  await member.ping();
  t.equal(totalCalls(s.calls), 0);
});

t.test('the handshake times out on a silent client', async (t) => {
  const s = await startServer(t, { handshakeTimeoutMs: 300 });
  const silent = await RawPeer.connect(t, s.port);
  await silent.waitClosed('the server to drop a silent client');
  await waitFor('the timeout logged', () => s.logs.find((l) => /handshake timed out after 300 ms/.test(l)));
  t.equal(s.server.handshakeCount, 0);
});

t.test('a good client keeps being served while others fail', async (t) => {
  // All from 127.0.0.1: room for them all (the per-address cap has its own test).
  const s = await startServer(t, { handshakeTimeoutMs: 500, maxHandshakesPerAddress: 16 });
  const good = await dial(t, s.address);
  const bad: Array<Promise<unknown>> = [];
  for (let i = 0; i < 4; i++) {
    bad.push((async () => {
      const raw = await RawPeer.connect(t, s.port);
      raw.socket.write(randomBytes(64));
      await raw.waitClosed('garbage client dropped');
    })());
    bad.push(dialPeer({ address: s.address, host: 'mallory', uuid: UUID, secret: randomBytes(32) }).then(
      () => { throw new Error('a wrong secret was accepted'); },
      () => undefined,
    ));
    bad.push((async () => {
      const raw = await RawPeer.connect(t, s.port);
      await raw.waitClosed('silent client dropped');
    })());
  }
  let rounds = 0;
  let wrong = 0;
  const settled = Promise.all(bad);
  let done = false;
  void settled.finally(() => (done = true));
  while (!done || rounds < 5) {
    const ents = await good.getents();
    if (ents.entries.length !== ENTRIES.length) wrong++;
    rounds++;
  }
  t.equal(wrong, 0, 'every answer to the good client was right');
  await settled;
  t.pass(`the good client made ${rounds} getents rounds while 12 bad connections failed`);
  await good.ping();
  t.equal(s.server.connectionCount, 1);
  await waitFor('no handshake left', () => s.server.handshakeCount === 0);
  t.equal(s.calls.getents, rounds, 'only the good client reached a handler');
});

t.test('connections beyond maxConnections are refused at once', async (t) => {
  const s = await startServer(t, { maxConnections: 2 });
  await dial(t, s.address);
  await dial(t, s.address);
  await rejectsWith(t, dial(t, s.address), (e) => e instanceof HandshakeError, 'third connection');
  t.ok(s.logs.some((l) => /refused, already 2 connections/.test(l)));
});

// ---- connections --------------------------------------------------------------------------------

t.test('log-read streams many frames with backpressure end to end', async (t) => {
  const CHUNK = MiB;
  const TOTAL = 128 * MiB;
  const data = pattern(0, CHUNK);
  let sentBytes = 0;
  let handlerDone = false;
  const s = await startServer(t, {}, {
    async logRead(_peer, req, sink) {
      let pos = req.fromPos;
      while (pos < TOTAL) {
        await sink.send(pos, data); // resolves only when the socket takes more
        pos += CHUNK;
        sentBytes = pos;
      }
      handlerDone = true;
      return { pos, durableEnd: pos };
    },
  });
  const conn = await dial(t, s.address, { maxBufferedStreamBytes: MiB });
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let received = 0;
  let frames = 0;
  let mismatches = 0;
  const done = conn.stream(readRequest(), async (h, payload) => {
    if (frames === 0) await gate; // a consumer stuck on its disk
    if (h.pos !== received || !payload.equals(data)) mismatches++;
    received += payload.length;
    frames++;
  });
  // Wait until the server is stuck: waiting for 'drain' with no progress for a while.
  let last = -1;
  let stableSince = Date.now();
  await waitFor('the server to block on the slow reader', () => {
    const serverConn = s.server.openConnections()[0];
    if (sentBytes !== last || !serverConn?.awaitingDrain) {
      last = sentBytes;
      stableSince = Date.now();
      return false;
    }
    return Date.now() - stableSince > 500;
  }, 30_000, 50);
  t.notOk(handlerDone, 'the handler is held back');
  t.ok(sentBytes < TOTAL / 2, `the server sent ${sentBytes / MiB} MiB of ${TOTAL / MiB} MiB while the reader was stuck (socket buffers, not heap)`);
  t.ok(conn.stats.readPauses >= 1, 'the client paused reading');
  release();
  const end = await withDeadline(done, 60_000, 'the stream to finish');
  t.equal(end.pos, TOTAL);
  t.equal(received, TOTAL);
  t.equal(frames, TOTAL / CHUNK);
  t.equal(mismatches, 0, 'every frame in order with the right bytes');
  t.ok(handlerDone);
  await conn.ping();
});

t.test('many following log-reads waiting for data hold no reply budget: listings and notify still pass (issue 11)', async (t) => {
  // Before: each admitted log-read reserved a 1 MiB frame for its whole life, 8 filled the
  // connection's 8 MiB, and the server stopped reading the connection: a getents or notify
  // waited until a follow ended (a 1 s long-poll each), and a handover with 30 resources took
  // seconds per hop.
  const FOLLOWS = 20;
  let releaseFollows!: () => void;
  const followsGate = new Promise<void>((resolve) => (releaseFollows = resolve));
  let followsEnded = 0;
  const s = await startServer(t, {}, {
    async logRead(_peer, req) {
      await followsGate; // the logfile does not grow
      followsEnded++;
      return { pos: req.fromPos, durableEnd: req.fromPos };
    },
  });
  const conn = await dial(t, s.address);
  const follows = Array.from({ length: FOLLOWS }, (_, i) => conn.stream(readRequest({ follow: true, waitMs: 60_000, res: `r${i}` }), () => undefined));
  await waitFor(`${FOLLOWS} follows sent`, () => conn.stats.framesSent >= FOLLOWS);
  const ents = await withDeadline(conn.getents(), 5000, 'a listing while every follow waits');
  t.same(ents.entries, ENTRIES);
  t.equal(s.calls['logRead'], FOLLOWS, 'every follow runs on the server');
  t.ok(s.server.replyBytesReserved <= FOLLOWS * 4096, `idle follows reserve ${s.server.replyBytesReserved} bytes, no data frames`);
  conn.notify();
  await waitFor('the notify to reach the handler', () => (s.calls['notify'] ?? 0) === 1, 5000);
  t.equal(followsEnded, 0, 'both were served while every follow was still waiting');
  releaseFollows();
  await withDeadline(Promise.all(follows), 10_000, 'the follows to end');
  t.equal(s.server.replyBytesReserved, 0, 'every reservation given back');
});

t.test('a full reply budget: a listing passes waiting bulk requests, which keep their order', async (t) => {
  // 1.5 MiB: one 1 MiB sync-read runs, the next waits; a getents (256 KiB) still fits.
  let releaseReads!: () => void;
  const readsGate = new Promise<void>((resolve) => (releaseReads = resolve));
  const order: number[] = [];
  const s = await startServer(t, { connectionReplyBudgetBytes: 1.5 * MiB }, {
    async syncRead(_peer, req) {
      order.push(req.fromPos);
      await readsGate;
      return pattern(req.fromPos, req.lengthBytes);
    },
  });
  const conn = await dial(t, s.address);
  const reads = [0, MiB, 2 * MiB].map((fromPos, i) => conn.request({ t: 'sync-read', res: 'r1', fromPos, lengthBytes: i === 2 ? 4096 : MiB }));
  await waitFor('the first sync-read running', () => order.length === 1);
  const ents = await withDeadline(conn.getents(), 5000, 'a listing while a bulk request waits for the budget');
  t.same(ents.entries, ENTRIES);
  t.same(order, [0], 'the second 1 MiB read waits, and the small third one does not pass it');
  releaseReads();
  const replies = await withDeadline(Promise.all(reads), 10_000, 'the reads to finish');
  t.same(order, [0, MiB, 2 * MiB], 'bulk requests ran in their order');
  t.same(replies.map((r) => r.payload.length), [MiB, MiB, 4096]);
  t.equal(s.server.replyBytesReserved, 0, 'every reservation given back');
});

t.test('log-read data chunks are bounded by the reply budget while the reader is slow', async (t) => {
  const STREAMS = 6;
  const TOTAL = 4 * MiB;
  let inHand = 0;
  let maxInHand = 0;
  const s = await startServer(t, { connectionReplyBudgetBytes: 2 * MiB }, {
    async logRead(_peer, req, sink) {
      let pos = req.fromPos;
      while (pos < TOTAL) {
        await sink.reserve(); // before the chunk is read into memory
        inHand++;
        maxInHand = Math.max(maxInHand, inHand);
        const chunk = pattern(pos, MiB);
        await sink.send(pos, chunk);
        inHand--;
        pos += MiB;
      }
      return { pos, durableEnd: TOTAL };
    },
  });
  const conn = await dial(t, s.address, { maxBufferedStreamBytes: MiB });
  let mismatches = 0;
  const streams = Array.from({ length: STREAMS }, (_, i) => {
    let at = 0;
    return conn.stream(readRequest({ res: `r${i}` }), (h, payload) => {
      if (h.pos !== at || !payload.equals(pattern(at, payload.length))) mismatches++;
      at += payload.length;
    });
  });
  const ends = await withDeadline(Promise.all(streams), 60_000, 'every stream to finish');
  t.same(ends.map((e) => e.pos), Array(STREAMS).fill(TOTAL));
  t.equal(mismatches, 0, 'every stream in order with the right bytes');
  t.ok(maxInHand <= 2, `at most ${maxInHand} chunks of 1 MiB in hand at once with a 2 MiB budget`);
  t.equal(s.server.replyBytesReserved, 0, 'every reservation given back');
});

t.test('a listing larger than a frame arrives deflated (100 resources x 1000 logfiles: 41 MB of JSON)', async (t) => {
  // Before: the server refused to send a listing over 8 MiB (EFBIG) and the client's every
  // pull failed, so two hosts with 100 x 1000 logfiles never exchanged their trees.
  const entries: Entry[] = [];
  const logs: { res: string; name: string; sizeBytes: number }[] = [];
  for (let r = 0; r < 80; r++) {
    for (let seq = 1; seq <= 500; seq++) {
      const name = `log-${String(seq).padStart(9, '0')}-alpha`;
      const digest = createHash('md5').update(`${r}/${seq}`).digest('hex');
      entries.push({ p: `resource-r${r}/version-${String(seq).padStart(9, '0')}-alpha`, v: `${digest},${name},596:${digest},log-${String(seq - 1).padStart(9, '0')}-alpha,596`, s: 1_700_000_000_000_000 + seq });
      logs.push({ res: `r${r}`, name, sizeBytes: 596 });
    }
  }
  const rawBytes = Buffer.byteLength(JSON.stringify({ entries, logs }));
  t.ok(rawBytes > 8 * MiB, `the listing's JSON is ${(rawBytes / MiB).toFixed(1)} MiB, more than a frame`);
  const s = await startServer(t, {}, { async getents() { return { clockUs: 7, entries, logs }; } });
  const conn = await dial(t, s.address);
  const got = await withDeadline(conn.getents(), 30_000, 'the large listing');
  t.equal(got.entries.length, entries.length);
  t.same(got.entries[12345], entries[12345]);
  t.equal(got.logs.length, logs.length);
  t.ok(conn.stats.bytesReceived < 8 * MiB, `${(conn.stats.bytesReceived / MiB).toFixed(1)} MiB on the wire`);
  t.notOk(s.logs.some((l) => l.startsWith('error')), 'nothing went wrong on the server');
});

t.test('cancel stops a following log-read; abandoned requests do not break the connection', async (t) => {
  let handlerAborted = false;
  let releaseGetents!: () => void;
  const getentsGate = new Promise<void>((resolve) => (releaseGetents = resolve));
  const s = await startServer(t, {}, {
    async logRead(_peer, req, sink, signal) {
      await sink.send(req.fromPos, pattern(req.fromPos, 4096));
      // follow: wait for the file to grow until cancelled
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
      handlerAborted = true;
      return { pos: req.fromPos + 4096, durableEnd: req.fromPos + 8192 };
    },
    async getents() {
      await getentsGate;
      return { clockUs: 1, entries: [], logs: [] };
    },
  });
  const conn = await dial(t, s.address);
  const ac = new AbortController();
  const p = conn.stream(readRequest({ follow: true, waitMs: 60_000 }), () => ac.abort(new Error('enough')), ac.signal);
  await rejectsWith(t, p, (e) => e.message === 'enough', 'the aborted stream rejects with the reason');
  await waitFor('the handler to see the cancel', () => handlerAborted);
  await waitFor('the server to finish the request', () => s.server.openConnections()[0]?.activeIncomingRequests === 0);

  const ac2 = new AbortController();
  const slow = conn.request({ t: 'getents' }, undefined, ac2.signal);
  ac2.abort();
  await rejectsWith(t, slow, (e) => e.name === 'AbortError', 'an aborted request rejects at once');
  releaseGetents();
  await conn.ping(); // the late ents reply was dropped quietly
  const full = await conn.getents();
  t.same(full.entries, []);
  t.notOk(conn.isClosed);
  t.notOk(s.logs.some((l) => l.startsWith('error')), 'nothing went wrong on the server');
});

t.test('handlers fail with error replies; the connection survives', async (t) => {
  let releaseBusy!: () => void;
  const busyGate = new Promise<void>((resolve) => (releaseBusy = resolve));
  const s = await startServer(t, { maxConcurrentRequests: 2 }, {
    async position(_peer, req) {
      throw new PeerRequestError('ENOENT', `no resource ${req.res}`);
    },
    async syncRead() {
      throw new Error('disk on fire');
    },
    async logRead(_peer, req, sink) {
      await sink.send(0, pattern(0, 1000));
      await sink.send(1000, pattern(1000, 1000));
      throw new PeerRequestError('EIO', 'bad sector in the logfile');
    },
    async getents() {
      await busyGate;
      return { clockUs: 1, entries: [], logs: [] };
    },
  });
  const conn = await dial(t, s.address);
  await rejectsWith(t, conn.request({ t: 'position', res: 'r9' }), (e) => e instanceof PeerRequestError && e.code === 'ENOENT' && /no resource r9/.test(e.message), 'ENOENT');
  await rejectsWith(t, conn.request({ t: 'sync-read', res: 'r1', fromPos: 0, lengthBytes: 4096 }), (e) => e instanceof PeerRequestError && e.code === 'EIO' && /disk on fire/.test(e.message), 'unexpected exception');
  t.ok(s.logs.some((l) => /^error: sync-read from beta .* failed: Error: disk on fire/.test(l)), 'the unexpected exception is logged with its stack');
  let got = 0;
  await rejectsWith(t, conn.stream(readRequest(), (_h, payload) => void (got += payload.length)), (e) => e instanceof PeerRequestError && e.code === 'EIO', 'error in the middle of a stream');
  t.equal(got, 2000, 'the data before the error was delivered');

  const a = conn.getents();
  const b = conn.getents();
  await waitFor('two requests running', () => s.server.openConnections()[0]?.activeIncomingRequests === 2);
  await rejectsWith(t, conn.getents(), (e) => e instanceof PeerRequestError && e.code === 'EBUSY', 'over the concurrency limit');
  releaseBusy();
  await Promise.all([a, b]);
  await conn.ping();
  t.notOk(conn.isClosed);
});

t.test('a reply too large for a frame becomes an EFBIG error', async (t) => {
  // Random values: a listing of 64 KiB or more goes deflated (docs/protocol.md), so only one
  // that stays over 8 MiB deflated is too large (about 12.5 MB of base64, 9.4 MB deflated).
  const huge: Entry[] = [];
  for (let i = 0; i < 50_000; i++) huge.push({ p: `resource-r1/x${i}`, v: randomBytes(188).toString('base64'), s: i + 1 });
  const s = await startServer(t, {}, { async getents() { return { clockUs: 1, entries: huge, logs: [] }; } });
  const conn = await dial(t, s.address);
  await rejectsWith(t, conn.getents(), (e) => e instanceof PeerRequestError && e.code === 'EFBIG', 'tree larger than a frame');
  await conn.ping();
});

t.test('keepalive: a peer that stops responding is detected', async (t) => {
  // A server that authenticates with our code, then neither reads nor writes.
  const held: net.Socket[] = [];
  const mute = net.createServer((socket) => {
    socket.on('error', () => undefined);
    held.push(socket);
    serverHandshake(socket, { host: 'alpha', uuid: UUID, secret: SECRET }).catch(() => undefined);
  });
  mute.listen(0, '127.0.0.1');
  await once(mute, 'listening');
  t.teardown(() => {
    for (const s of held) s.destroy();
    mute.close();
  });
  const conn = await dialPeer({ address: `127.0.0.1:${(mute.address() as net.AddressInfo).port}`, host: 'beta', uuid: UUID, secret: SECRET, keepaliveMs: 100, idleTimeoutMs: 600 });
  const started = Date.now();
  const pending = conn.getents();
  const reason = await withDeadline(conn.closed, 10_000, 'the client to give up on the silent server');
  t.match(reason, /^peer silent for \d+ ms$/);
  t.ok(Date.now() - started >= 500, 'not before the idle timeout');
  await rejectsWith(t, pending, (e) => e instanceof ConnectionClosedError && /peer silent/.test(e.message), 'the open request fails with the reason');
  t.ok(conn.stats.framesSent >= 3, `the client pinged (${conn.stats.framesSent} frames sent)`);

  // And the other way: a client that authenticates, then goes silent.
  const s = await startServer(t, { keepaliveMs: 100, idleTimeoutMs: 600 });
  const socket = net.connect({ host: '127.0.0.1', port: s.port });
  socket.on('error', () => undefined);
  t.teardown(() => socket.destroy());
  await once(socket, 'connect');
  await clientHandshake(socket, { host: 'beta', uuid: UUID, secret: SECRET });
  await waitFor('the server to accept the client', () => s.server.connectionCount === 1);
  await waitFor('the server to drop the silent client', () => s.server.connectionCount === 0, 10_000);
  t.ok(s.logs.some((l) => /peer beta \(127\.0\.0\.1:\d+\) disconnected: peer silent for \d+ ms/.test(l)), 'logged with the reason');
});

t.test('an idle but healthy connection stays up', async (t) => {
  const s = await startServer(t, { keepaliveMs: 50, idleTimeoutMs: 300 });
  const conn = await dial(t, s.address, { keepaliveMs: 50, idleTimeoutMs: 300 });
  const serverConn = await waitFor('the server side', () => s.server.openConnections()[0]);
  // Both sides exchange pings while nothing else happens; wait for several rounds of them.
  // 30 pings at 50 ms each take several idle timeouts (300 ms): only the pings keep it open.
  await waitFor('many keepalive rounds', () => conn.stats.framesReceived >= 30 && serverConn.stats.framesReceived >= 30, 10_000);
  t.notOk(conn.isClosed);
  await conn.ping();
});

t.test('the log-read rate limit is honoured', async (t) => {
  const s = await startServer(t);
  const conn = await dial(t, s.address);
  const rate = 2 * MiB;
  let bytes = 0;
  let frames = 0;
  const started = process.hrtime.bigint();
  const end = await conn.stream(readRequest({ rateBytesPerS: rate }), (_h, payload) => {
    bytes += payload.length;
    frames++;
  });
  const elapsedS = Number(process.hrtime.bigint() - started) / 1e9;
  t.equal(end.pos, 3 * MiB);
  t.equal(bytes, 3 * MiB);
  const minS = (3 * MiB - 256 * 1024) / rate; // the first burst is free
  t.ok(elapsedS >= minS * 0.95, `took ${elapsedS.toFixed(2)} s, at least ${minS.toFixed(2)} s expected`);
  // The upper bound only catches a limiter that stalls (a loaded machine adds seconds, not tens).
  t.ok(elapsedS <= minS + 10, `took ${elapsedS.toFixed(2)} s, not far above ${minS.toFixed(2)} s`);
  t.ok(frames >= 15, `sent in small frames (${frames}), not 1 MiB bursts`);
});

t.test('a broken frame after authentication drops that connection only', async (t) => {
  const s = await startServer(t);
  const good = await dial(t, s.address);
  // Each frame is sealed with the session's key: what is tested is the layer behind the tag.
  const attempts: Array<[string, (socket: net.Socket, sealer: FrameSealer) => void]> = [
    ['invalid JSON', (socket, sealer) => {
      const header = Buffer.from('{"t":"getents",');
      const prefix = Buffer.alloc(8);
      prefix.writeUInt32BE(header.length, 0);
      for (const b of sealer.seal([Buffer.concat([prefix, header])])) socket.write(b);
    }],
    ['an unknown message', (socket, sealer) => { for (const b of sealer.seal(encodeFrame({ t: 'format-disk', id: 1 }))) socket.write(b); }],
    ['a handshake message', (socket, sealer) => { for (const b of sealer.seal(encodeFrame({ t: 'welcome', mac: 'a'.repeat(64), clockUs: 1 }))) socket.write(b); }],
    ['a reply to nothing', (socket, sealer) => { for (const b of sealer.seal(encodeFrame({ t: 'ok', id: 5 }))) socket.write(b); }],
    ['a bad path', (socket, sealer) => { for (const b of sealer.seal(encodeFrame({ t: 'push-link', id: 1, entry: { p: '../../etc/passwd', v: 'x', s: 1 } }))) socket.write(b); }],
  ];
  for (const [what, misbehave] of attempts) {
    const socket = net.connect({ host: '127.0.0.1', port: s.port });
    socket.on('error', () => undefined);
    t.teardown(() => socket.destroy());
    await once(socket, 'connect');
    const { sealer } = await clientHandshake(socket, { host: 'beta', uuid: UUID, secret: SECRET });
    socket.resume(); // read, so the close is seen
    const closed = once(socket, 'close');
    misbehave(socket, sealer);
    await withDeadline(closed, 5000, `the server to drop a client sending ${what}`);
    t.pass(`dropped after ${what}`);
  }
  await waitFor('all protocol errors logged', () => s.logs.filter((l) => /disconnected: protocol error from beta/.test(l)).length === attempts.length);
  t.equal(s.pushed.length, 0, 'the bad path never reached the handler');
  await good.ping();
  const again = await dial(t, s.address);
  await again.ping();
  t.equal(s.server.connectionCount, 2);
});

t.test('TLS transport', async (t) => {
  const dir = tempDir(t);
  const keyFile = join(dir, 'key.pem');
  const certFile = join(dir, 'cert.pem');
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile,
      '-days', '1', '-subj', '/CN=marsd-test', '-addext', 'subjectAltName=IP:127.0.0.1',
    ], { stdio: 'ignore' });
  } catch {
    t.pass('a test certificate', { skip: 'openssl is not available to make one' });
    return;
  }
  const s = await startServer(t, { tls: { certFile, keyFile } });
  const conn = await dial(t, s.address, { tls: { caFile: certFile } });
  t.same((await conn.getents()).entries, ENTRIES);
  const chunks: Buffer[] = [];
  await conn.stream(readRequest(), (_h, p) => void chunks.push(p));
  t.ok(Buffer.concat(chunks).equals(pattern(0, 3 * MiB)));

  // On the wire: a capture of a TLS session carries no plaintext of the logfile it streamed,
  // while the same capture of a plain TCP session does (the check can fail).
  const known = pattern(MiB, 4096); // one block from the middle of the streamed logfile
  const wire = async (address: string, opts: Partial<DialOptions>): Promise<Buffer> => {
    const proxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: Number(address.split(':')[1]) });
    t.teardown(() => proxy.close());
    proxy.startCapture();
    const c = await dial(t, proxy.address, opts);
    const got: Buffer[] = [];
    await c.stream(readRequest(), (_h, p) => void got.push(p));
    t.ok(Buffer.concat(got).equals(pattern(0, 3 * MiB)), 'the logfile arrived intact through the capture');
    await c.close('captured');
    return proxy.captured('down');
  };
  const tlsWire = await wire(s.address, { tls: { caFile: certFile } });
  t.ok(tlsWire.length >= 3 * MiB, `the TLS capture holds the session (${tlsWire.length} bytes)`);
  t.equal(tlsWire.indexOf(known.subarray(0, 64)), -1, 'no 64 bytes of a known block in plaintext on the TLS wire');
  const plain = await startServer(t);
  const plainWire = await wire(plain.address, {});
  t.not(plainWire.indexOf(known.subarray(0, 64)), -1, 'the same capture of plain TCP shows the block');
  await rejectsWith(t, dial(t, s.address, { tls: {} }), (e) => /self[- ]signed|unable to verify|certificate/i.test(e.message), 'an unknown CA is rejected');
  await rejectsWith(t, dial(t, s.address, { timeoutMs: 1500 }), () => true, 'plain TCP to a TLS listener fails');
  await rejectsWith(t, dial(t, s.address, { tls: { caFile: certFile }, secret: randomBytes(32) }), (e) => e instanceof HandshakeError, 'TLS does not replace the secret');
});

// ---- stdio / SSH transport --------------------------------------------------------------------

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const TSX = import.meta.resolve('tsx');

/** A `marsd --stdio` stand-in: serves one peer on stdin/stdout with fixed handlers. */
function writeStdioServer(dir: string): string {
  const path = join(dir, 'stdio-server.mts'); // .mts: ESM wherever it lies
  writeFileSync(path, `
import { PeerServer } from ${JSON.stringify(join(REPO, 'daemon/net/server.ts'))};
import { duplexFromPair } from ${JSON.stringify(join(REPO, 'daemon/net/dial.ts'))};
const [secret, uuid, ...rest] = process.argv.slice(2);
const log = Buffer.alloc(2 * 1024 * 1024, 7);
const server = new PeerServer({
  host: 'alpha', uuid, secret,
  log: (level, msg) => process.stderr.write(level + ': ' + msg + '\\n'),
  handlers: {
    async getents() { return { clockUs: 1, entries: [{ p: 'argv', v: JSON.stringify(rest), s: 1 }], logs: [] }; },
    async logRead(_peer, req, sink) {
      for (let pos = req.fromPos; pos < log.length; pos += 65536) await sink.send(pos, log.subarray(pos, pos + 65536));
      return { pos: log.length, durableEnd: log.length };
    },
    async syncDigests() { return { digests: Buffer.alloc(0), algorithm: 'md5' as const }; },
    async syncRead(_peer, req) { return Buffer.alloc(req.lengthBytes, 1); },
    async position() { return { seq: 1, origin: 'alpha', pos: 0 }; },
    async pushLink() {},
    notify() {},
  },
});
try {
  const conn = await server.serveDuplex(duplexFromPair(process.stdin, process.stdout), 'stdio');
  process.stderr.write('closed: ' + (await conn.closed) + '\\n');
  process.exit(0);
} catch (err) {
  process.stderr.write('stdio server: ' + err.message + '\\n');
  process.exit(3);
}
`);
  return path;
}

/** An `ssh` stand-in: runs the remote command through sh -c, exactly as sshd would. */
function writeFakeSsh(dir: string, name: string, body: string): string {
  const path = join(dir, name);
  writeFileSync(path, `#!${process.execPath}\n${body}`);
  chmodSync(path, 0o755);
  return path;
}

t.test('the protocol over a child process stdin/stdout', async (t) => {
  const dir = tempDir(t);
  const script = writeStdioServer(dir);
  const spawned = spawnDuplex(process.execPath, ['--import', TSX, script, SECRET.toString('hex'), UUID, 'direct']);
  const conn = await connectOverDuplex(spawned.duplex, 'child', { host: 'beta', uuid: UUID, secret: SECRET, timeoutMs: 20_000 });
  t.equal(conn.peerHost, 'alpha');
  t.same((await conn.getents()).entries[0], { p: 'argv', v: '["direct"]', s: 1 });
  let bytes = 0;
  const end = await conn.stream(readRequest(), (_h, p) => {
    if (!p.equals(Buffer.alloc(p.length, 7))) throw new Error('wrong bytes');
    bytes += p.length;
  });
  t.equal(end.pos, 2 * MiB);
  t.equal(bytes, 2 * MiB);
  conn.close('test done');
  const exit = await withDeadline(spawned.exited, 10_000, 'the child to exit');
  t.ok(exit.code === 0 || exit.signal === 'SIGTERM', `the child ended (${JSON.stringify(exit)})`);

  const wrong = spawnDuplex(process.execPath, ['--import', TSX, script, randomBytes(32).toString('hex'), UUID]);
  await rejectsWith(t, connectOverDuplex(wrong.duplex, 'child', { host: 'beta', uuid: UUID, secret: SECRET, timeoutMs: 20_000 }), (e) => e instanceof HandshakeError && e.refusal === 'authentication failed', 'wrong secret over stdio');
  const exit2 = await withDeadline(wrong.exited, 10_000, 'the refused child to exit');
  t.ok(exit2.code === 3 || exit2.signal === 'SIGTERM', 'the refusing child exits');
});

t.test('dialSsh runs the remote command behind ssh with safe quoting', async (t) => {
  const dir = tempDir(t);
  const script = writeStdioServer(dir);
  const argsLog = join(dir, 'ssh-args.json');
  const fakeSsh = writeFakeSsh(dir, 'ssh.mjs', `
const { spawn } = await import('node:child_process');
const { writeFileSync } = await import('node:fs');
const args = process.argv.slice(2);
writeFileSync(${JSON.stringify(argsLog)}, JSON.stringify(args));
const command = args.slice(args.indexOf('--') + 1).join(' ');
const child = spawn('/bin/sh', ['-c', command], { stdio: 'inherit' });
process.on('SIGTERM', () => child.kill('SIGTERM'));
child.on('exit', (code) => process.exit(code ?? 1));
`);
  const tricky = `it's a "test" $HOME; rm -rf / \`id\``;
  const conn = await dialSsh({
    target: 'mars@alpha.example', port: 2222, identityFile: '/nonexistent/id_ed25519', sshOptions: ['-o', 'StrictHostKeyChecking=yes'],
    remoteCommand: [process.execPath, '--import', TSX, script, SECRET.toString('hex'), UUID, tricky, ''],
    sshCommand: fakeSsh, host: 'beta', uuid: UUID, secret: SECRET, expectHost: 'alpha', timeoutMs: 20_000,
  });
  const args = JSON.parse(readFileSync(argsLog, 'utf8')) as string[];
  t.same(args.slice(0, 10), ['-o', 'BatchMode=yes', '-T', '-p', '2222', '-i', '/nonexistent/id_ed25519', '-o', 'StrictHostKeyChecking=yes', 'mars@alpha.example']);
  t.equal(args[10], '--', 'the remote command cannot be taken for ssh options');
  t.same((await conn.getents()).entries[0]!.v, JSON.stringify([tricky, '']), 'the remote side got the arguments exactly, no shell expansion');
  await conn.ping();
  conn.close('test done');

  const failing = writeFakeSsh(dir, 'ssh-fail.mjs', `process.stderr.write('mars@alpha: Permission denied (publickey).\\n'); process.exit(255);\n`);
  await rejectsWith(t, dialSsh({ target: 'mars@alpha', remoteCommand: ['marsd', '--stdio'], sshCommand: failing, host: 'beta', uuid: UUID, secret: SECRET, timeoutMs: 10_000 }),
    (e) => /ssh mars@alpha: .*Permission denied \(publickey\)/.test(e.message), 'ssh errors are reported with its stderr');
  await rejectsWith(t, dialSsh({ target: 'nosuchdir/ssh', remoteCommand: ['x'], host: 'beta', uuid: UUID, secret: SECRET }), (e) => /invalid ssh target/.test(e.message), 'bad target');
  t.throws(() => sshArgs({ target: '-oProxyCommand=evil', remoteCommand: ['x'] }), /invalid ssh target/, 'a target cannot be an option');
  t.equal(shellQuote('--mars-dir'), '--mars-dir');
  t.equal(shellQuote("a'b"), `'a'\\''b'`);
  t.equal(shellQuote(''), "''");
});

// ---- the listing as a delta (daemon/propagate/listing-delta.ts) -------------------------------

t.test('getents with since over a real connection: a delta of the changed directories, applied to the full listing', async (t) => {
  const { TreeStore } = await import('../../common/tree/store.js');
  const { LamportClock } = await import('../../common/tree/lamport.js');
  const { PeerService } = await import('../../daemon/serve/peer-service.js');
  const { applyListing } = await import('../../daemon/propagate/listing-delta.js');
  const { utimesSync } = await import('node:fs');
  const root = tempDir(t);
  const tree = new TreeStore(root, new LamportClock());
  tree.write('uuid', UUID);
  for (const r of ['r1', 'r2', 'r3']) { tree.ensureDir(`resource-${r}`); tree.write(`resource-${r}/size`, '4096'); tree.write(`resource-${r}/primary`, 'alpha'); }
  const past = new Date(Date.now() - 10_000);
  for (const d of ['', 'resource-r1', 'resource-r2', 'resource-r3']) utimesSync(join(root, d), past, past);
  const svc = new PeerService({ tree, host: 'alpha', activeLogEnd: () => undefined, primaryPosition: () => undefined, onTreeChanged: () => undefined, onNotify: () => undefined, log: () => undefined });
  const s = await startServer(t);
  s.handlers.getents = (peer, since) => svc.getents(peer, since);
  const conn = await dial(t, s.address, { expectHost: 'alpha' });
  const full = await conn.getents();
  t.equal(full.since, undefined, 'the first listing is full');
  t.equal(full.entries.length, 7);
  const held = applyListing(undefined, undefined, full).held!;
  const since = { epoch: full.epoch!, generation: full.generation! };
  const idle = await conn.getents(undefined, since);
  t.equal(idle.since, full.generation, 'a delta');
  t.equal(idle.entries.length, 0, 'nothing changed: no entry travels');
  t.same(applyListing(held, since, idle).entries, full.entries, 'the same listing');
  tree.write('resource-r2/primary', 'beta');
  const changed = await conn.getents(undefined, { epoch: idle.epoch!, generation: idle.generation! });
  t.same(changed.changed, ['resource-r2']);
  const applied = applyListing(applyListing(held, since, idle).held, { epoch: idle.epoch!, generation: idle.generation! }, changed);
  t.same(applied.entries, (await conn.getents()).entries, 'equal to a full listing now');
});
