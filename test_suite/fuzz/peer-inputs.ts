// Inputs for the peer protocol fuzzer (peer-fuzz.ts), drawn from a seeded PRNG. Pure. Kinds:
//   garbage     random bytes where the client's handshake belongs (no secret);
//   handshake   a genuine handshake with one byte of the client's part flipped;
//   session     a genuine handshake with the secret (a member gone rogue), then frames sealed
//               with the session's keys: requests of every type with fields at and beyond
//               their limits, replies and handshake messages where requests belong, unknown
//               types, repeated and out-of-order ids, pushed links of every owner and kind;
//               now and then one byte of one sealed frame flipped (a relay).
export type PeerInputKind = 'garbage' | 'handshake' | 'session';

export interface PeerFrame {
  header: Record<string, unknown>;
  payload?: Buffer;
}

export interface PeerFuzzInput {
  kind: PeerInputKind;
  /** garbage: the bytes to send */
  bytes?: Buffer;
  /** handshake: which byte of the client's handshake bytes to flip (modulo their length) */
  flipHandshakeAt?: number;
  /** session: the frames to seal and send */
  frames?: PeerFrame[];
  /** session: flip one byte of this frame after sealing (its offset modulo the frame's length) */
  tamper?: { frame: number; at: number };
}

type Rand = () => number;
const int = (r: Rand, n: number) => Math.floor(r() * n);
const pick = <T>(r: Rand, a: readonly T[]): T => a[int(r, a.length)]!;

function randomBuf(r: Rand, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = int(r, 256);
  return b;
}

const REQUESTS = ['getents', 'log-read', 'sync-digests', 'sync-read', 'position', 'push-link', 'ping', 'cancel', 'notify', 'secret-ring'];
const OTHERS = ['hello', 'auth', 'welcome', 'refused', 'ents', 'log-data', 'log-end', 'digests', 'blocks', 'position-reply', 'ok', 'secret-state', 'pong', 'error', 'x', ''];

function num(r: Rand): unknown {
  return pick(r, [0, 1, 4096, int(r, 1 << 20), -1, 2 ** 31, 2 ** 53, Number.MAX_SAFE_INTEGER, 1.5, '7', null, 1e300]);
}

function resName(r: Rand): unknown {
  return pick(r, ['r0', 'r0', 'r1', '', '../r0', 'r0/x', 'a'.repeat(200), 7]);
}

/** A link path a member might push: its own, the victim's, shared ones, logfiles, nonsense. */
function linkPath(r: Rand): string {
  return pick(r, [
    'resource-r0/actual-beta/is-primary', 'resource-r0/replay-beta', 'resource-r0/data-beta',
    'resource-r0/replay-alpha', 'resource-r0/data-alpha', 'resource-r0/version-000000001-alpha', 'actual-alpha/time',
    'resource-r0/primary', 'resource-r0/size', 'resource-r0/maxnr', 'ips/ip-mallory', 'ips/removed-alpha',
    'resource-r0/log-000000001-alpha', 'resource-r0/log-000000002-beta', 'resource-r9/primary', '../../etc/passwd',
    'resource-r0/.tmp', 'uuid', `resource-${'x'.repeat(80)}/size`,
  ]);
}

function linkValue(r: Rand): string {
  return pick(r, ['.deleted', 'beta', 'alpha', 'mallory', '(none)', '1', '0', String(2 ** 40), 'log-000000001-alpha,0,0', '', 'x'.repeat(5000)]);
}

function requestHeader(r: Rand, t: string, id: unknown): Record<string, unknown> {
  switch (t) {
    case 'log-read':
      return { t, id, res: resName(r), name: pick(r, ['log-000000001-alpha', 'log-000000002-alpha', 'x', '../disk']), fromPos: num(r), follow: r() < 0.3, waitMs: num(r), rateBytesPerS: num(r) };
    case 'sync-digests':
      return { t, id, res: resName(r), fromPos: num(r), lengthBytes: num(r), blockBytes: pick(r, [4096, 65536, 0, 1]) };
    case 'sync-read':
      return { t, id, res: resName(r), fromPos: num(r), lengthBytes: num(r) };
    case 'position':
      return { t, id, res: resName(r) };
    case 'push-link':
      return { t, id, entry: r() < 0.9 ? { p: linkPath(r), v: linkValue(r), s: num(r) } : pick(r, [null, 'x', {}, { p: 1 }]) };
    case 'secret-ring':
      return { t, id, op: pick(r, ['state', 'offer', 'x']), secret: randomBuf(r, 32).toString('hex') };
    case 'notify':
      return { t };
    case 'getents':
      // since: the base of a delta listing (daemon/propagate/listing-delta.ts), well or badly formed.
      return r() < 0.5 ? { t, id } : { t, id, since: pick(r, [{ epoch: '0123456789abcdef', generation: num(r) }, { epoch: 'x', generation: 1 }, { epoch: '0123456789abcdef', generation: -1 }, { epoch: '0123456789abcdef' }, null, 'x', []]) };
    default:
      return { t, id };
  }
}

/** A request a member may send: right fields, right limits (what it asks may still be refused). */
function validRequest(r: Rand, id: number): Record<string, unknown> {
  switch (pick(r, ['getents', 'position', 'sync-read', 'sync-digests', 'log-read', 'push-link', 'ping'])) {
    case 'getents': return r() < 0.5 ? { t: 'getents', id } : { t: 'getents', id, since: { epoch: randomBuf(r, 8).toString('hex'), generation: int(r, 1000) } };
    case 'position': return { t: 'position', id, res: 'r0' };
    case 'sync-read': return { t: 'sync-read', id, res: 'r0', fromPos: 4096 * int(r, 256), lengthBytes: 4096 * (1 + int(r, 16)) };
    case 'sync-digests': return { t: 'sync-digests', id, res: 'r0', fromPos: 4096 * int(r, 256), lengthBytes: 4096 * int(r, 64), blockBytes: 4096 };
    case 'log-read': return { t: 'log-read', id, res: 'r0', name: 'log-000000001-alpha', fromPos: int(r, 8192), follow: false, waitMs: 0, rateBytesPerS: 0 };
    case 'push-link': return { t: 'push-link', id, entry: { p: linkPath(r), v: linkValue(r).slice(0, 100), s: Date.now() * 1000 + int(r, 1e6) } };
    default: return { t: 'ping', id };
  }
}

function frame(r: Rand, ids: number[]): PeerFrame {
  if (r() < 0.5) {
    ids.push(ids.length + 1);
    return { header: validRequest(r, ids.length) };
  }
  const id = r() < 0.7 ? (ids.push(ids.length + 1), ids.length) : pick(r, [0, -1, ids[0] ?? 1, 2 ** 40, 'a', null]);
  const t = r() < 0.8 ? pick(r, REQUESTS) : pick(r, OTHERS);
  const header = requestHeader(r, t, id);
  if (r() < 0.1) header[pick(r, ['extra', 't', 'id', 'res'])] = pick(r, [{}, [], 'x'.repeat(100), -5]);
  const payload = r() < 0.1 ? randomBuf(r, int(r, 2048)) : undefined;
  return payload ? { header, payload } : { header };
}

export function peerInput(r: Rand): PeerFuzzInput {
  const kind: PeerInputKind = pick(r, ['garbage', 'handshake', 'session', 'session', 'session']);
  if (kind === 'garbage') return { kind, bytes: randomBuf(r, int(r, 600)) };
  if (kind === 'handshake') return { kind, flipHandshakeAt: int(r, 1 << 16) };
  const ids: number[] = [];
  const frames = Array.from({ length: 1 + int(r, 12) }, () => frame(r, ids));
  return r() < 0.25 ? { kind, frames, tamper: { frame: int(r, frames.length), at: int(r, 1 << 16) } } : { kind, frames };
}
