// The cluster secret rotation's pure parts: the two-line secret file, the phases of a rotation,
// the member's decision on a secret-ring `set`, and the handshake that accepts two secrets.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { duplexPair } from 'node:stream';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  formatSecretRing, keyId, parseSecretRing, phaseIndex, readSecretRing, ringOfPhase, writeSecretRing,
} from '../../common/cluster/secret-ring.js';
import { readSecretFile } from '../../common/cluster/secret.js';
import { decideSecretSet } from '../../daemon/net/decide-secret-ring.js';
import { clientHandshake, HandshakeError, serverHandshake } from '../../daemon/net/handshake.js';

const OLD = randomBytes(32);
const NEW = randomBytes(32);
const OTHER = randomBytes(32);
const OLD_ID = keyId(OLD);
const NEW_ID = keyId(NEW);

t.test('secret file: one line, or two during a rotation; anything else is refused', async (t) => {
  for (let i = 0; i <= 3; i++) {
    const ring = ringOfPhase(i, OLD, NEW);
    const back = parseSecretRing(formatSecretRing(ring));
    t.ok(back.dial.equals(ring.dial) && back.other?.role === ring.other?.role, `phase ${i} survives format and parse`);
    t.equal(phaseIndex(back, OLD_ID, NEW_ID), i, `phase ${i} is recognised`);
  }
  t.equal(phaseIndex({ dial: OLD, other: { role: 'next', secret: OTHER } }, OLD_ID, NEW_ID), undefined, 'another rotation is not this one');
  t.equal(phaseIndex({ dial: OTHER }, OLD_ID, NEW_ID), undefined, 'an unrelated secret is not this rotation');
  const hex = OLD.toString('hex');
  const bad: Array<[string, RegExp]> = [
    ['', /empty/],
    [`${hex}\nnext ${hex}\n`, /same secret/],
    [`${hex}\nlater ${NEW.toString('hex')}\n`, /"next HEX" or "previous HEX"/],
    [`${hex}\nnext ${NEW.toString('hex')}\nprevious ${OTHER.toString('hex')}\n`, /3 lines/],
    [`${hex}\nnext abc\n`, /line 2/],
    [`zz${hex.slice(2)}\n`, /hex/],
  ];
  for (const [text, re] of bad) t.throws(() => parseSecretRing(text), re, `refused: ${JSON.stringify(text.slice(0, 20))}`);
  t.not(keyId(OLD), keyId(NEW), 'different secrets, different key ids');
  t.match(keyId(OLD), /^[0-9a-f]{16}$/, 'a key id is 16 hex characters');
});

t.test('writeSecretRing replaces the file with mode 0600; readSecretFile reads line 1', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ring-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'cluster-secret');
  writeFileSync(path, `${OLD.toString('hex')}\n`, { mode: 0o600 });
  writeFileSync(`${path}.tmp`, 'left by a crash');
  writeSecretRing(path, ringOfPhase(2, OLD, NEW));
  t.equal(statSync(path).mode & 0o777, 0o600, 'mode 0600');
  t.equal(readFileSync(path, 'utf8'), `${NEW.toString('hex')}\nprevious ${OLD.toString('hex')}\n`, 'new secret first, the previous one named');
  t.ok(readSecretFile(path).equals(NEW), 'join-cluster and others read the secret to dial with');
  t.ok(readSecretRing(path).other?.secret.equals(OLD), 'the ring holds both');
});

t.test('decideSecretSet: forward only, encrypted only, never retiring its own session key', async (t) => {
  const set = (phase: 'prepared' | 'switched' | 'finished', secret = NEW) => ({ phase, oldId: OLD_ID, newId: NEW_ID, secret });
  const viaOld = { keyId: OLD_ID, encrypted: true };
  const viaNew = { keyId: NEW_ID, encrypted: true };
  const stable = { dial: OLD };

  const prepared = decideSecretSet(stable, set('prepared'), viaOld);
  t.same('ring' in prepared && phaseIndex(prepared.ring, OLD_ID, NEW_ID), 1, 'stable -> prepared');
  const jump = decideSecretSet(stable, set('switched'), viaOld);
  t.same('ring' in jump && phaseIndex(jump.ring, OLD_ID, NEW_ID), 2, 'a member that missed prepared may jump to switched');
  const finished = decideSecretSet(ringOfPhase(2, OLD, NEW), set('finished'), viaNew);
  t.same('ring' in finished && [phaseIndex(finished.ring, OLD_ID, NEW_ID), finished.changed], [3, true], 'switched -> finished with the new key');
  const again = decideSecretSet(ringOfPhase(3, OLD, NEW), set('switched'), viaNew);
  t.same('ring' in again && [phaseIndex(again.ring, OLD_ID, NEW_ID), again.changed], [3, false], 'a late request moves nothing back');

  const refusals: Array<[string, ReturnType<typeof decideSecretSet>, RegExp]> = [
    ['plain session', decideSecretSet(stable, set('prepared'), { keyId: OLD_ID, encrypted: false }), /encrypted/],
    ['secret not matching its id', decideSecretSet(stable, set('prepared', OTHER), viaOld), /not key/],
    ['finish over the old key', decideSecretSet(ringOfPhase(2, OLD, NEW), set('finished'), viaOld), /may not retire/],
    ['another rotation in progress', decideSecretSet({ dial: OLD, other: { role: 'next', secret: OTHER } }, set('prepared'), viaOld), /neither side/],
    ['unrelated secret', decideSecretSet({ dial: OTHER }, set('prepared'), viaOld), /neither side/],
  ];
  for (const [what, d, re] of refusals) t.match('refuse' in d ? d.refuse : '(accepted)', re, `refused: ${what}`);
});

async function handshake(clientSecret: Buffer, accept: Buffer[]) {
  const [a, b] = duplexPair();
  const server = serverHandshake(a, { host: 'alpha', uuid: 'u1', secret: accept[0]!, acceptSecrets: accept });
  const client = clientHandshake(b, { host: 'beta', uuid: 'u1', secret: clientSecret });
  const [s, c] = await Promise.allSettled([server, client]);
  a.destroy();
  b.destroy();
  return { s, c };
}

t.test('handshake: a server in a rotation accepts either secret and says which was used', async (t) => {
  for (const secret of [OLD, NEW]) {
    const { s, c } = await handshake(secret, [OLD, NEW]);
    t.equal(s.status === 'fulfilled' && s.value.keyId, keyId(secret), `server authenticated key ${keyId(secret)}`);
    t.equal(c.status === 'fulfilled' && c.value.keyId, keyId(secret), 'and the client verified the server with it');
  }
  const { s, c } = await handshake(OLD, [NEW]);
  t.ok(s.status === 'rejected' && s.reason instanceof HandshakeError, 'a retired secret is refused');
  t.match(s.status === 'rejected' ? (s.reason as Error).message : '', new RegExp(`uses cluster secret key ${OLD_ID}, this host accepts ${NEW_ID}`), 'the server log names both keys');
  t.match(c.status === 'rejected' ? (c.reason as Error).message : '', new RegExp(`authentication failed \\(we use cluster secret key ${OLD_ID}.*copy /mars/cluster-secret`), 'the client is told what to do');
});
