// The secrets a host holds while the cluster secret is rotated (marsadm rotate-secret,
// docs/security.md "Rotating the cluster secret"). /mars/cluster-secret holds one line, the
// secret this host dials with, and during a rotation a second line naming the other secret it
// also accepts:
//
//   HEX                 stable: dial and accept this secret only
//   OLD + "next NEW"    prepared: dial with OLD, accept NEW too (members may still dial OLD)
//   NEW + "previous OLD" switched: dial with NEW, accept OLD too (members not switched yet)
//
// The word on line 2 makes the file say which secret is the new one, so an interrupted
// rotation can be continued from any member. A key id names a secret in messages and logs
// without revealing it.
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync, constants as fsConstants } from 'node:fs';
import { dirname } from 'node:path';
import { hkdfSync } from 'node:crypto';
import { assert } from '../util/assert.js';
import { SecretError, parseSecret, readSecretText } from './secret.js';

export type OtherRole = 'next' | 'previous';

export interface SecretRing {
  /** The secret this host proves in the handshakes it starts. */
  dial: Buffer;
  /** A second secret it accepts during a rotation, and which one of the two is new. */
  other?: { role: OtherRole; secret: Buffer };
}

/** Bytes of a key id (shown as 16 hex characters). */
const KEY_ID_BYTES = 8;

/** A public name of a secret: HKDF-SHA256(secret, info "marsd key id"), 8 bytes as hex. */
export function keyId(secret: Buffer): string {
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), Buffer.from('marsd key id', 'utf8'), KEY_ID_BYTES)).toString('hex');
}

/** Every secret the ring accepts, the dial secret first. */
export function acceptedSecrets(ring: SecretRing): Buffer[] {
  return ring.other ? [ring.dial, ring.other.secret] : [ring.dial];
}

/** The key ids of a ring, for status replies and logs. */
export function ringIds(ring: SecretRing): { dial: string; next?: string; previous?: string } {
  const ids: { dial: string; next?: string; previous?: string } = { dial: keyId(ring.dial) };
  if (ring.other) ids[ring.other.role] = keyId(ring.other.secret);
  return ids;
}

/**
 * What marsd publishes in actual-HOST/cluster-key once it uses a ring: key ids only ("K",
 * "K next N", "K previous P"), so marsadm rotate-secret can wait until its own marsd took a phase.
 */
export function ringKeyText(ring: SecretRing): string {
  const ids = ringIds(ring);
  return `${ids.dial}${ids.next ? ` next ${ids.next}` : ''}${ids.previous ? ` previous ${ids.previous}` : ''}`;
}

/** One line for logs: "key K" or "key K, next N" / "key K, previous P". */
export function describeRing(ring: SecretRing): string {
  const ids = ringIds(ring);
  return `key ${ids.dial}${ids.next ? `, next ${ids.next}` : ''}${ids.previous ? `, previous ${ids.previous}` : ''}`;
}

/**
 * The phase of a ring in the rotation from key OLD to key NEW: 0 OLD only, 1 prepared (dial OLD,
 * accept NEW), 2 switched (dial NEW, accept OLD), 3 NEW only; undefined: the ring is not part of the rotation OLD -> NEW. */
export function phaseIndex(ring: SecretRing, oldId: string, newId: string): number | undefined {
  const ids = ringIds(ring);
  if (ids.dial === oldId) {
    if (!ring.other) return 0;
    return ids.next === newId ? 1 : undefined;
  }
  if (ids.dial === newId) {
    if (!ring.other) return 3;
    return ids.previous === oldId ? 2 : undefined;
  }
  return undefined;
}

/** The ring of phase `index` (1-3) of the rotation from `oldSecret` to `newSecret`. */
export function ringOfPhase(index: number, oldSecret: Buffer, newSecret: Buffer): SecretRing {
  switch (index) {
    case 0: return { dial: oldSecret };
    case 1: return { dial: oldSecret, other: { role: 'next', secret: newSecret } };
    case 2: return { dial: newSecret, other: { role: 'previous', secret: oldSecret } };
    default: return { dial: newSecret };
  }
}

/** Parse the text of a secret file (one or two lines, see the top of this file). */
export function parseSecretRing(text: string, source = 'the cluster secret'): SecretRing {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  if (lines.length === 0) throw new SecretError(`${source} is empty`);
  if (lines.length > 2) throw new SecretError(`${source} has ${lines.length} lines; it holds one secret, or two during a rotation`);
  const dial = parseSecret(lines[0]!, `${source} (line 1)`);
  if (lines.length === 1) return { dial };
  const m = /^(next|previous)\s+(\S+)$/.exec(lines[1]!);
  if (!m) throw new SecretError(`${source} line 2 must be "next HEX" or "previous HEX" (a rotation in progress)`);
  const secret = parseSecret(m[2]!, `${source} (line 2)`);
  if (secret.equals(dial)) throw new SecretError(`${source} names the same secret on both lines`);
  return { dial, other: { role: m[1] as OtherRole, secret } };
}

/** Read the whole secret file (mode and type checked as secret.readSecretFile). */
export function readSecretRing(path: string): SecretRing {
  return parseSecretRing(readSecretText(path), `secret file ${path}`);
}

export function formatSecretRing(ring: SecretRing): string {
  const first = `${ring.dial.toString('hex')}\n`;
  return ring.other ? `${first}${ring.other.role} ${ring.other.secret.toString('hex')}\n` : first;
}

export function sameRing(a: SecretRing, b: SecretRing): boolean {
  if (!a.dial.equals(b.dial)) return false;
  if (!a.other || !b.other) return a.other === b.other;
  return a.other.role === b.other.role && a.other.secret.equals(b.other.secret);
}

/**
 * Replace the secret file atomically (a crash leaves the old or the new file, never half of
 * one): write a 0600 temporary file next to it, fsync, rename, fsync the directory.
 */
export function writeSecretRing(path: string, ring: SecretRing): void {
  assert(ring.other === undefined || !ring.other.secret.equals(ring.dial), 'a ring with the same secret twice');
  const tmp = `${path}.tmp`;
  try {
    unlinkSync(tmp); // left by a crash; O_EXCL below must not fail on it
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const fd = openSync(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
  try {
    writeSync(fd, formatSecretRing(ring));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const dirFd = openSync(dirname(path), fsConstants.O_RDONLY);
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}
