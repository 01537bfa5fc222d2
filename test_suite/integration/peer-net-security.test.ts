// The peer server's security features over real sockets: encrypted frames end to end
// (tcp,encrypt), a server that requires encryption, admission wired to the tree rules
// (decideAdmission: a removed host and a non-member are refused), and the Unix socket's
// handshake pool kept apart from the TCP listener's. Every wait has a deadline.
import t, { type Test } from 'tap';
import net from 'node:net';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { PeerServer, type PeerServerOptions } from '../../daemon/net/server.js';
import { connectOverDuplex, dialPeer } from '../../daemon/net/dial.js';
import { HandshakeError } from '../../daemon/net/handshake.js';
import { decideAdmission } from '../../daemon/net/admission.js';
import type { PeerHandlers } from '../../daemon/net/connection.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

const SECRET = randomBytes(32);
const UUID = 'alpha_1700000000.000000001';
const BLOCK = randomBytes(64 * 1024);

const handlers: PeerHandlers = {
  async getents() { return { clockUs: 1, entries: [{ p: 'uuid', v: UUID, s: 1 }], logs: [] }; },
  async logRead(_peer, req, sink) {
    await sink.send(req.fromPos, BLOCK);
    return { pos: req.fromPos + BLOCK.length, durableEnd: req.fromPos + BLOCK.length };
  },
  async syncDigests() { return { digests: Buffer.alloc(0), algorithm: 'md5' as const }; },
  async syncRead(_peer, req) { return BLOCK.subarray(0, req.lengthBytes); },
  async position() { return { seq: 1, origin: 'alpha', pos: 0 }; },
  async pushLink() { /* accepted */ },
  notify() { /* nothing */ },
};

async function start(t: Test, opts: Partial<PeerServerOptions> = {}) {
  const logs: string[] = [];
  const server = new PeerServer({ host: 'alpha', uuid: UUID, secret: SECRET, handlers, log: (_l, m) => logs.push(m), handshakeTimeoutMs: 3000, ...opts });
  const { port } = await server.listen('127.0.0.1:0');
  t.teardown(() => server.close());
  return { server, address: `127.0.0.1:${port}`, port, logs };
}

async function failsWith(t: Test, p: Promise<unknown>, re: RegExp, what: string): Promise<void> {
  const r = await p.then((c) => ({ ok: true as const, c }), (err: Error) => ({ ok: false as const, err }));
  if (r.ok) {
    (r.c as { close(reason: string): void }).close('test done');
    t.fail(`${what}: it succeeded`);
    return;
  }
  t.ok(r.err instanceof HandshakeError && re.test(r.err.message), `${what}: ${r.err.message}`);
}

t.test('tcp,encrypt: every request works over encrypted frames; a server can require it', async (t) => {
  const s = await start(t, { requireEncryption: true });
  const conn = await dialPeer({ address: s.address, host: 'beta', uuid: UUID, secret: SECRET, encrypt: true, timeoutMs: 5000 });
  t.teardown(() => conn.close('test done'));
  t.equal((await conn.getents()).entries.length, 1);
  const blocks = await conn.request({ t: 'sync-read', res: 'r1', fromPos: 0, lengthBytes: 4096 });
  t.ok(blocks.payload.equals(BLOCK.subarray(0, 4096)), 'sync-read data intact');
  const got: Buffer[] = [];
  await conn.stream({ t: 'log-read', res: 'r1', name: 'log-000000001-alpha', fromPos: 0, follow: false, waitMs: 0, rateBytesPerS: 0 }, (_h, p) => void got.push(Buffer.from(p)));
  t.ok(Buffer.concat(got).equals(BLOCK), 'log-read stream intact');
  await failsWith(t, dialPeer({ address: s.address, host: 'beta', uuid: UUID, secret: SECRET, timeoutMs: 5000 }), /encryption required/, 'a plain client');
});

t.test('admission by the tree: members in, non-members out, removed hosts read the tree only', async (t) => {
  const links = new Map([
    ['ips/ip-beta', { value: '127.0.0.1:2', stampUs: 10, deleted: false }],
    ['ips/ip-gamma', { value: '.deleted', stampUs: 30, deleted: true }],
    ['ips/removed-gamma', { value: 'by alpha', stampUs: 20, deleted: false }],
  ]);
  const s = await start(t, { admitPeer: (host, uuid) => decideAdmission((p) => links.get(p), 'alpha', host, uuid) });
  const beta = await dialPeer({ address: s.address, host: 'beta', uuid: UUID, secret: SECRET, timeoutMs: 5000 });
  await beta.ping();
  beta.close('test done');
  // A removed host reads the tree (so that it learns of its removal and says so), nothing else.
  const gamma = await dialPeer({ address: s.address, host: 'gamma', uuid: UUID, secret: SECRET, timeoutMs: 5000 });
  t.teardown(() => gamma.close('test done'));
  t.equal((await gamma.getents()).entries.length, 1, 'the removed gamma reads the tree');
  await t.rejects(gamma.request({ t: 'sync-read', res: 'r1', fromPos: 0, lengthBytes: 4096 }), /gamma was removed from the cluster: only getents/, 'the removed gamma reads no data');
  await t.rejects(gamma.request({ t: 'push-link', entry: { p: 'ips/ip-gamma', v: '127.0.0.1:9', s: 40 } }), /gamma was removed from the cluster: only getents/, 'the removed gamma pushes nothing');
  t.match(s.logs.join('\n'), /peer gamma connected from .*\(removed from the cluster: served tree reads only\)/, 'logged as removed');
  await failsWith(t, dialPeer({ address: s.address, host: 'mallory', uuid: UUID, secret: SECRET, timeoutMs: 5000 }), /not admitted/, 'mallory');
  t.equal(s.server.refusalCount, 1, 'the refusal counted');
  t.match(s.logs.join('\n'), /mallory is not a member of the cluster/, 'the refusal is logged with its reason');
});

t.test('the Unix socket has its own handshake pool', async (t) => {
  const dir = tempDir(t, 'mars-peersock-');
  const s = await start(t, { maxHandshakes: 4, maxHandshakesPerAddress: 4 });
  const sock = join(dir, 'peer.sock');
  await s.server.listenUnix(sock);
  const idle: net.Socket[] = [];
  t.teardown(() => idle.forEach((x) => x.destroy()));
  for (let i = 0; i < 4; i++) {
    const x = net.connect({ host: '127.0.0.1', port: s.port });
    x.on('error', () => undefined);
    idle.push(x);
    await once(x, 'connect');
  }
  await waitFor('the TCP handshake pool is full', () => s.server.handshakeCount === 4, 5000);
  await t.resolves(async () => {
    const u = net.connect(sock);
    await once(u, 'connect');
    const conn = await connectOverDuplex(u, 'peer.sock', { host: 'beta', uuid: UUID, secret: SECRET, timeoutMs: 5000 });
    await conn.ping();
    conn.close('test done');
  }, 'a relay on peer.sock is served while the TCP handshake pool is full');
  t.equal(s.server.handshakeCount, 4, 'and it evicted none of the TCP handshakes: the pools are separate');
  t.ok(idle.every((x) => !x.destroyed), 'the idle TCP sockets are all still open');
});
