// The network attacks of issue 17 against real marsd processes (docs/security.md, "Network"):
// a relay between two members that passes the genuine handshake and then injects, replays or
// alters frames is detected (the connection ends with a log line, nothing changes), a host
// with the cluster secret that is not a member ("mallory") is refused, a joining host gets the
// join requests only, and refusals do not grow the log one line each. Every wait has a deadline.
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileDigest, startCluster, waitWritebackDone, writeWorkload } from '../helpers/multi-host.js';
import { HANDSHAKE_FRAMES, type TamperedFrame } from '../helpers/frame-tamper.js';
import { encodeFrame } from '../../daemon/net/frame.js';
import { dialPeer } from '../../daemon/net/dial.js';
import { PeerRequestError } from '../../daemon/net/connection.js';
import { HandshakeError } from '../../daemon/net/handshake.js';
import { ANY_UUID } from '../../common/cluster/secret.js';
import type { MarsHost } from '../helpers/cluster.js';

const RES = 'r0';
const SIZE = 16 << 20;

/** `p` must fail with an error that `check` accepts. */
async function failsWith(t: Test, p: Promise<unknown>, check: (err: Error) => boolean, what: string): Promise<void> {
  const outcome = await p.then((v) => ({ ok: true as const, v }), (err: Error) => ({ ok: false as const, err }));
  if (outcome.ok) {
    if (outcome.v && typeof (outcome.v as { close?: unknown }).close === 'function') (outcome.v as { close(r: string): void }).close('test done');
    t.fail(`${what}: it succeeded`);
    return;
  }
  t.ok(check(outcome.err), `${what}: ${outcome.err.message}`);
}

const logText = (h: MarsHost) => readFileSync(h.logPath, 'utf8');
const countMatches = (h: MarsHost, re: RegExp) => logText(h).split('\n').filter((l) => re.test(l)).length;

t.test('a relay that injects, replays or alters frames is detected; a non-member is refused', async (t) => {
  const c = await startCluster(t, { hosts: ['alpha', 'beta'], sizeBytes: SIZE, res: RES, proxied: true });
  const alpha = c.primary;
  const beta = c.host('beta');
  const proxy = c.proxy('alpha'); // beta's connections to alpha: up = beta's requests, down = alpha's replies
  const ipBeta = alpha.link('ips/ip-beta');
  const authFailures = () => countMatches(alpha, /failed authentication/);

  /** Install an edit for new connections, drop the current ones, wait for `detected`. */
  const attack = async (what: string, dir: 'up' | 'down', edit: (f: TamperedFrame) => Buffer[] | undefined, detected: () => boolean) => {
    proxy.setFrameTamper(dir, (f) => edit(f) ?? [f.bytes]);
    proxy.cut();
    proxy.heal();
    await alpha.until(`${what} detected`, detected, 30_000);
    proxy.setFrameTamper(dir, null);
    t.pass(`${what}: detected and the connection ended`);
  };

  // 1. Injection: right after beta's first authenticated frame, a push-link that moves beta's
  // address, as if beta had sent it (before protocol 2 it was applied).
  let injected = false;
  const forged = Buffer.concat([...encodeFrame({ t: 'push-link', id: 4242, entry: { p: 'ips/ip-beta', v: '127.0.0.1:9', s: Date.now() * 1000 + 1_000_000 } }), randomBytes(16)]);
  const before1 = authFailures();
  await attack('an injected push-link', 'up', (f) => {
    if (injected || f.index !== HANDSHAKE_FRAMES.up) return undefined;
    injected = true;
    return [f.bytes, forged];
  }, () => authFailures() > before1);
  t.equal(alpha.link('ips/ip-beta'), ipBeta, 'the injected push-link changed nothing');

  // 2. Replay: one of beta's authenticated frames sent twice.
  let replayed = false;
  const before2 = authFailures();
  await attack('a replayed frame', 'up', (f) => {
    if (replayed || f.index !== HANDSHAKE_FRAMES.up + 1) return undefined;
    replayed = true;
    return [f.bytes, f.bytes];
  }, () => authFailures() > before2);

  // 3. One byte flipped in the payload of one of alpha's replies (its first with a payload).
  let flipped = false;
  const betaBefore = countMatches(beta, /failed authentication/);
  await attack('a flipped byte in a reply', 'down', (f) => {
    if (flipped || f.index < HANDSHAKE_FRAMES.down || f.payloadBytes === 0) return undefined;
    flipped = true;
    const bytes = Buffer.from(f.bytes);
    bytes[8 + f.headerBytes + Math.floor(f.payloadBytes / 2)]! ^= 0x01;
    return [bytes];
  }, () => countMatches(beta, /failed authentication/) > betaBefore);

  // Replication goes on over honest connections, to equal disks.
  await writeWorkload(alpha, RES, SIZE, 200, 17);
  await c.waitCaughtUp(beta);
  // alpha's own disk is written back after the log: compare once it holds everything logged.
  await waitWritebackDone(alpha, RES);
  t.equal(fileDigest(beta.dataPath, SIZE), fileDigest(alpha.dataPath, SIZE), 'the disks are equal after the attacks');

  // 4. Mallory knows the secret but is not in ips/: refused as a member.
  const secret = readFileSync(join(alpha.marsDir, 'cluster-secret'), 'utf8');
  const address = alpha.link('ips/ip-alpha')!;
  const uuid = alpha.link('uuid')!;
  await failsWith(t, dialPeer({ address, host: 'mallory', uuid, secret, timeoutMs: 5000 }),
    (err) => err instanceof HandshakeError && /not admitted/.test(err.message), 'mallory is not admitted');
  // Nor may anybody claim to be alpha itself.
  await failsWith(t, dialPeer({ address, host: 'alpha', uuid, secret, timeoutMs: 5000 }), (err) => err instanceof HandshakeError, 'nobody is admitted as alpha itself');

  // 5. Joining (what join-cluster does) is allowed, but only the join requests.
  const joiner = await dialPeer({ address, host: 'mallory', uuid: ANY_UUID, secret, timeoutMs: 5000 });
  try {
    const ents = await joiner.getents();
    t.ok(ents.entries.some((e) => e.p === 'uuid'), 'a joining host reads the tree');
    await failsWith(t, joiner.request({ t: 'sync-read', res: RES, fromPos: 0, lengthBytes: 4096 }),
      (err) => err instanceof PeerRequestError && err.code === 'EACCES', 'a joining host reads no blocks');
    await failsWith(t, joiner.request({ t: 'push-link', entry: { p: 'ips/ip-beta', v: '127.0.0.1:9', s: Date.now() * 1000 } }),
      (err) => err instanceof PeerRequestError && err.code === 'EACCES', 'a joining host pushes no other link');
  } finally {
    joiner.close('test done');
  }
  t.equal(alpha.link('ips/ip-beta'), ipBeta, 'beta\'s address is unchanged');
  t.equal(alpha.link('ips/ip-mallory'), undefined, 'mallory pushed nothing');

  // 6. A flood of refusals does not grow the log one line each.
  const linesBefore = logText(alpha).split('\n').length;
  for (let i = 0; i < 60; i++) {
    await dialPeer({ address, host: 'mallory', uuid, secret, timeoutMs: 5000 }).then((conn) => conn.close('unexpected'), () => undefined);
  }
  const grown = logText(alpha).split('\n').length - linesBefore;
  t.ok(grown <= 3, `60 refusals added ${grown} log line(s)`);
});
