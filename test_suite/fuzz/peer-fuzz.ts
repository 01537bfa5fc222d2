// The peer protocol fuzzer (docs/reliability.md, "Fuzzing"): marsd's real PeerServer and
// PeerService on a real tree (a resource with a logfile, a versionlink and a data disk) on
// loopback TCP, fed inputs from peer-inputs.ts, one connection each. What must hold:
//   - no uncaught exception or unhandled rejection;
//   - nothing is served without authentication: a connection whose handshake is garbage or
//     was altered reaches no handler;
//   - a frame altered after sealing ends the connection: no handler runs for it or after it;
//   - a member with the secret sending malformed or out-of-order messages changes nothing of
//     the victim's: its own links, its logfile and its data disk stay byte for byte (pushed
//     links of the sender's own are the protocol working, not an attack);
//   - the server closes every connection once the client half-closed, and every
//     `probeEvery` inputs a well-behaved member still pulls the victim's listing.
import net from 'node:net';
import { Duplex } from 'node:stream';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { ownerOf } from '../../common/tree/ownership.js';
import { PeerServer } from '../../daemon/net/server.js';
import { PeerService } from '../../daemon/serve/peer-service.js';
import type { PeerHandlers } from '../../daemon/net/service.js';
import { clientHandshake } from '../../daemon/net/handshake.js';
import { connectOverDuplex } from '../../daemon/net/dial.js';
import { encodeFrame } from '../../daemon/net/frame.js';
import { mulberry32 } from '../helpers/prng.js';
import { peerInput, type PeerInputKind } from './peer-inputs.js';

const UUID = 'alpha_1700000000.000000001';
const CLOSE_DEADLINE_MS = 10_000;
const HANDSHAKE_DEADLINE_MS = 3_000;

export interface PeerFuzzReport {
  inputs: number;
  byKind: Record<PeerInputKind, number>;
  handlerCalls: number;
  tampered: number;
  probes: number;
  violations: string[];
  elapsedMs: number;
}

/** The victim alpha's state a rogue member must not change: its own links, logfile and disk. */
export function victimDigest(tree: TreeStore, dir: string): string {
  const h = createHash('sha256');
  const visit = (rel: string) => {
    for (const name of tree.list(rel).sort()) {
      const path = rel === '' ? name : `${rel}/${name}`;
      const e = tree.entry(path);
      if (e?.kind === 'dir') visit(path);
      else if (e?.kind === 'link') {
        const owner = ownerOf(path);
        if (owner.kind === 'host' && owner.host === 'alpha') h.update(`${path}=${e.value}@${e.stampUs}\n`);
      } else if (e?.kind === 'file') h.update(`${path}:`).update(readFileSync(tree.abs(path)));
    }
  };
  visit('');
  h.update(readFileSync(join(dir, 'disk')));
  return h.digest('hex');
}

/** The real handlers, each call counted. */
function counting(inner: PeerHandlers, count: { calls: number }): PeerHandlers {
  return new Proxy(inner, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        count.calls++;
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

/**
 * A socket as a Duplex whose outgoing byte number `flipAt` (if any) is altered. With `endAfter`,
 * the socket is half-closed once that many bytes went out: a flipped length field would
 * otherwise leave server and client each waiting for the other until the handshake deadline
 * (3 s for about one handshake input in fifty, most of a long run's time).
 */
function flippingDuplex(sock: net.Socket, flipAt: () => number | undefined, endAfter = Number.POSITIVE_INFINITY): { duplex: Duplex; sent: () => number } {
  let sent = 0;
  const duplex = new Duplex({
    write(chunk: Buffer, _enc, cb) {
      const at = flipAt();
      let out = chunk;
      if (at !== undefined && at >= sent && at < sent + chunk.length) {
        out = Buffer.from(chunk);
        out[at - sent] ^= 0x5a;
      }
      sent += chunk.length;
      sock.write(out, cb);
      if (sent >= endAfter) sock.end();
    },
    read() { /* pushed from the socket */ },
    final(cb) { sock.end(); cb(); },
    destroy(err, cb) { sock.destroy(); cb(err); },
  });
  sock.on('data', (d: Buffer) => duplex.push(d));
  sock.on('end', () => duplex.push(null));
  sock.on('error', (e) => duplex.destroy(e));
  return { duplex, sent: () => sent };
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

function closed(sock: net.Socket): Promise<boolean> {
  if (sock.destroyed && sock.readableEnded) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => { sock.destroy(); resolve(false); }, CLOSE_DEADLINE_MS);
    sock.once('close', () => { clearTimeout(timer); resolve(true); });
  });
}

export interface PeerFuzzOptions {
  dir: string;
  seed: number;
  inputs: number;
  probeEvery?: number;
  maxMs?: number;
  onProgress?: (done: number) => void;
}

export function victimTree(dir: string): TreeStore {
  const root = join(dir, 'mars');
  mkdirSync(root, { recursive: true, mode: 0o700 });
  const tree = new TreeStore(root, new LamportClock());
  tree.write('uuid', UUID);
  tree.ensureDir('ips');
  tree.write('ips/ip-alpha', '127.0.0.1');
  tree.write('ips/ip-beta', '127.0.0.2');
  tree.ensureDir('resource-r0');
  tree.write('resource-r0/size', String(1 << 20));
  tree.write('resource-r0/primary', 'alpha');
  tree.write('resource-r0/data-alpha', join(dir, 'disk'));
  tree.write('resource-r0/data-beta', '/dev/null');
  tree.write('resource-r0/replay-alpha', 'log-000000001-alpha,0,0');
  tree.write('resource-r0/version-000000001-alpha', `${'0'.repeat(32)},log-000000001-alpha,0:`);
  writeFileSync(join(dir, 'disk'), randomBytes(1 << 20));
  writeFileSync(tree.abs('resource-r0/log-000000001-alpha'), randomBytes(8192), { mode: 0o600 });
  return tree;
}

export async function fuzzPeer(o: PeerFuzzOptions): Promise<PeerFuzzReport> {
  const started = Date.now();
  const violations: string[] = [];
  const onUncaught = (err: unknown) => violations.push(`uncaught exception: ${String(err)}`);
  const onRejection = (err: unknown) => violations.push(`unhandled rejection: ${String(err)}`);
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onRejection);
  const secret = randomBytes(32);
  const tree = victimTree(o.dir);
  const count = { calls: 0 };
  const service = new PeerService({
    tree, host: 'alpha', activeLogEnd: () => undefined, primaryPosition: () => undefined,
    onTreeChanged: () => undefined, onNotify: () => undefined, log: () => undefined,
  });
  const server = new PeerServer({ host: 'alpha', uuid: UUID, secret, handlers: counting(service, count), log: () => undefined, handshakeTimeoutMs: HANDSHAKE_DEADLINE_MS });
  const { port } = await server.listen('127.0.0.1:0');
  const before = victimDigest(tree, o.dir);
  const rand = mulberry32(o.seed);
  const byKind: Record<PeerInputKind, number> = { garbage: 0, handshake: 0, session: 0 };
  let tampered = 0;
  let probes = 0;
  let n = 0;
  const opts = { host: 'beta', uuid: UUID, secret, handshakeTimeoutMs: HANDSHAKE_DEADLINE_MS };
  // The client's part of the handshake (its auth frame), taken from a genuine one. Its `kid`
  // member is a hint for the server's log, never trusted (docs/protocol.md): a byte altered
  // there may be accepted; anywhere else the handshake must fail.
  const auth = await (async () => {
    const sock = await connect(port);
    const bytes: Buffer[] = [];
    sock.on('data', () => undefined);
    const origWrite = sock.write.bind(sock) as (b: Buffer, cb?: () => void) => boolean;
    (sock as unknown as { write: typeof origWrite }).write = (b: Buffer, cb?: () => void) => { bytes.push(Buffer.from(b)); return origWrite(b, cb); };
    const { duplex } = flippingDuplex(sock, () => undefined);
    await clientHandshake(duplex, opts);
    duplex.destroy();
    const all = Buffer.concat(bytes);
    const kidFrom = all.indexOf(',"kid":"');
    return { bytes: all.length, kidFrom: kidFrom < 0 ? all.length : kidFrom, kidTo: all.lastIndexOf('"}') };
  })();
  try {
    for (; n < o.inputs && violations.length === 0; n++) {
      if (o.maxMs !== undefined && Date.now() - started > o.maxMs) break;
      const input = peerInput(rand);
      byKind[input.kind]++;
      const where = `seed ${o.seed}, input ${n} (${input.kind})`;
      const callsBefore = count.calls;
      const sock = await connect(port);
      sock.on('error', () => undefined);
      let framesBeforeTamper = Number.POSITIVE_INFINITY;
      if (input.kind === 'garbage') {
        sock.on('data', () => undefined);
        sock.end(input.bytes!);
      } else {
        let flip: number | undefined;
        // A handshake input is over once the client's auth frame is out: half-close right then.
        const { duplex, sent } = flippingDuplex(sock, () => flip, input.kind === 'handshake' ? auth.bytes : undefined);
        duplex.on('error', () => undefined);
        if (input.kind === 'handshake') {
          // The client's part of the handshake is its one auth frame, sent after the hello.
          flip = input.flipHandshakeAt! % auth.bytes;
          const inHint = flip >= auth.kidFrom && flip < auth.kidTo;
          await clientHandshake(duplex, opts).then(() => {
            if (!inHint) violations.push(`${where}: a handshake with byte ${flip} of ${auth.bytes} altered was accepted`);
          }, () => undefined);
          duplex.end();
        } else {
          const hs = await clientHandshake(duplex, opts).catch((e: Error) => e);
          if (hs instanceof Error) {
            violations.push(`${where}: a genuine handshake failed: ${hs.message}`);
          } else {
            duplex.resume();
            for (let i = 0; i < input.frames!.length; i++) {
              const f = input.frames![i]!;
              let bufs: Buffer[];
              try {
                bufs = hs.sealer.seal(encodeFrame(f.header, f.payload));
              } catch {
                continue; // a header the encoder refuses (too long): a client cannot send it either
              }
              const frameBytes = bufs.reduce((a, b) => a + b.length, 0);
              if (input.tamper?.frame === i) {
                flip = sent() + (input.tamper.at % frameBytes);
                framesBeforeTamper = i;
                tampered++;
              }
              for (const b of bufs) duplex.write(b);
            }
            duplex.end();
          }
        }
      }
      if (!(await closed(sock))) violations.push(`${where}: the server did not close the connection after the client half-closed`);
      // Handlers of the last frames may still be running: give them the turns they need.
      await new Promise((r) => setTimeout(r, 0));
      const calls = count.calls - callsBefore;
      if (input.kind !== 'session' && calls > 0) violations.push(`${where}: ${calls} handler call(s) without authentication`);
      if (calls > framesBeforeTamper) violations.push(`${where}: ${calls} handler call(s), but frame ${framesBeforeTamper} was altered`);
      if ((n + 1) % (o.probeEvery ?? 100) === 0 || n + 1 === o.inputs) {
        const after = victimDigest(tree, o.dir);
        if (after !== before) violations.push(`${where}: the victim's own links, logfile or disk changed`);
        const conn = await connectOverDuplex(await connect(port), 'probe', { ...opts, timeoutMs: HANDSHAKE_DEADLINE_MS }).catch((e: Error) => e);
        if (conn instanceof Error) violations.push(`${where}: afterwards a member cannot connect: ${conn.message}`);
        else {
          const ents = await conn.getents().catch((e: Error) => e);
          if (ents instanceof Error || !ents.entries.some((e) => e.p === 'resource-r0/primary')) violations.push(`${where}: afterwards getents fails`);
          conn.close('probe done');
        }
        probes++;
      }
      o.onProgress?.(n + 1);
    }
  } finally {
    await server.close();
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onRejection);
  }
  return { inputs: n, byKind, handlerCalls: count.calls, tampered, probes, violations, elapsedMs: Date.now() - started };
}
