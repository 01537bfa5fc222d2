// The cryptographic pieces of the peer handshake: the secret file, the exact MAC input bytes
// (docs/protocol.md §4 documents them; a third-party implementation must get the same MACs),
// constant-time comparison and the uuid rule.
import t from 'tap';
import { chmodSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs';
import { createHmac, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import {
  clientMac, macInput, macMatches, newNonce, normalizeSecret, serverMac, uuidsCompatible,
  type HandshakeTranscript,
} from '../../daemon/net/auth.js';
import { ANY_UUID, hostKey, parseSecret, readSecretFile } from '../../common/cluster/secret.js';
import { tempDir } from '../helpers/tmp.js';

const SECRET_HEX = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';

t.test('secret file', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'cluster-secret');

  writeFileSync(path, `${SECRET_HEX}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
  t.same(readSecretFile(path), Buffer.from(SECRET_HEX, 'hex'), 'hex text with a newline, mode 0600');

  for (const mode of [0o640, 0o604, 0o644, 0o660, 0o620]) {
    chmodSync(path, mode);
    t.throws(() => readSecretFile(path), { name: 'SecretError', message: /accessible by group or others .*chmod 600/ }, `mode ${mode.toString(8)} refused`);
  }
  chmodSync(path, 0o400);
  t.ok(readSecretFile(path), 'read-only for the owner is fine');

  const short = join(dir, 'short');
  writeFileSync(short, 'abcdef\n', { mode: 0o600 });
  t.throws(() => readSecretFile(short), /too short: 6 hex characters, at least 64/);

  const notHex = join(dir, 'nothex');
  writeFileSync(notHex, `${'z'.repeat(64)}\n`, { mode: 0o600 });
  t.throws(() => readSecretFile(notHex), /must be hex text/);

  const link = join(dir, 'link');
  symlinkSync(path, link);
  t.throws(() => readSecretFile(link), /is a symlink/);

  const sub = join(dir, 'sub');
  mkdirSync(sub, { mode: 0o700 });
  t.throws(() => readSecretFile(sub), /not a regular file/);
  t.throws(() => readSecretFile(join(dir, 'missing')), /cannot read the secret file/);
});

t.test('secret normalization', async (t) => {
  t.same(parseSecret(`  ${SECRET_HEX.toUpperCase()}\t\n`), Buffer.from(SECRET_HEX, 'hex'), 'whitespace trimmed, case ignored');
  t.throws(() => parseSecret(`${SECRET_HEX}0`), /even number/);
  t.same(normalizeSecret(SECRET_HEX), Buffer.from(SECRET_HEX, 'hex'), 'a string is hex text');
  const raw = randomBytes(32);
  t.same(normalizeSecret(raw), raw, 'a buffer is the key itself');
  t.throws(() => normalizeSecret(randomBytes(31)), /at least 32/);
});

t.test('MAC input encoding and values', async (t) => {
  t.same(macInput(['ab', '', 'é']), Buffer.from([0, 0, 0, 2, 0x61, 0x62, 0, 0, 0, 0, 0, 0, 0, 2, 0xc3, 0xa9]), 'u32 BE length + UTF-8 bytes per field');
  t.notSame(macInput(['ab', 'c']), macInput(['a', 'bc']), 'field boundaries are unambiguous');

  const secret = Buffer.from(SECRET_HEX, 'hex');
  const tr: HandshakeTranscript = {
    serverNonce: 'a'.repeat(64), clientNonce: 'b'.repeat(64), serverHost: 'alpha', clientHost: 'beta', serverUuid: 'alpha_1.5', clientUuid: 'alpha_1.5', cipher: 'hmac-sha256',
  };
  const expectedClient = createHmac('sha256', hostKey(secret, 'beta'))
    .update(macInput(['marsd-v2 client', tr.serverNonce, tr.clientNonce, 'beta', 'alpha', 'alpha_1.5', 'alpha_1.5', 'hmac-sha256']))
    .digest('hex');
  t.equal(clientMac(secret, tr), expectedClient, 'client MAC as documented');
  const expectedServer = createHmac('sha256', hostKey(secret, 'alpha'))
    .update(macInput(['marsd-v2 server', tr.clientNonce, tr.serverNonce, 'alpha', 'beta', 'alpha_1.5', 'alpha_1.5', 'hmac-sha256']))
    .digest('hex');
  t.equal(serverMac(secret, tr), expectedServer, 'server MAC as documented');
  t.not(clientMac(secret, tr), serverMac(secret, tr), 'the two proofs differ (no reflection)');
  t.match(clientMac(secret, tr), /^[0-9a-f]{64}$/);

  // Every field matters.
  for (const key of Object.keys(tr) as Array<keyof HandshakeTranscript>) {
    const changed = { ...tr, [key]: key.endsWith('Nonce') ? 'c'.repeat(64) : 'gamma' };
    t.not(clientMac(secret, changed), clientMac(secret, tr), `client MAC covers ${key}`);
    t.not(serverMac(secret, changed), serverMac(secret, tr), `server MAC covers ${key}`);
  }
  t.not(clientMac(randomBytes(32), tr), clientMac(secret, tr), 'and the secret');
});

t.test('MAC comparison', async (t) => {
  const a = 'ab'.repeat(32);
  t.ok(macMatches(a, a));
  t.notOk(macMatches(a, `${'ab'.repeat(31)}ac`));
  t.notOk(macMatches(a, 'ab'.repeat(31)), 'different lengths do not throw');
  t.notOk(macMatches('', ''), 'empty never matches');
});

t.test('nonces are fresh', async (t) => {
  const seen = new Set<string>();
  for (let i = 0; i < 100; i++) seen.add(newNonce());
  t.equal(seen.size, 100);
  t.match(newNonce(), /^[0-9a-f]{64}$/);
});

t.test('uuid compatibility', async (t) => {
  t.ok(uuidsCompatible('u1', 'u1'));
  t.notOk(uuidsCompatible('u1', 'u2'));
  t.ok(uuidsCompatible(ANY_UUID, 'u2'), 'a joining host accepts any cluster');
  t.ok(uuidsCompatible('u1', ANY_UUID), 'a member accepts a joining host');
});
