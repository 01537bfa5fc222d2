// The cluster secret (mars/cluster-secret, written by marsadm create-cluster): hex text in a
// file only its owner may read. Everything that authenticates peers starts from it; marsadm
// join-cluster copies it; during a rotation it has a second line (secret-ring.ts). Also the placeholder uuid of a host that is joining.
import { closeSync, fstatSync, openSync, readFileSync, constants as fsConstants } from 'node:fs';
import { hkdfSync } from 'node:crypto';

/** The uuid a host uses while it joins a cluster: it accepts whatever uuid the peer has. */
export const ANY_UUID = '(any)';
/** The secret must carry at least this much entropy (64 hex characters). */
export const MIN_SECRET_BYTES = 32;
/** Longest secret file read (a secret is hex text; anything longer is not a secret file). */
const MAX_SECRET_FILE_BYTES = 4096;

export class SecretError extends Error {
  override name = 'SecretError';
}

/** Decode the hex text of a secret file (surrounding whitespace is ignored). */
export function parseSecret(text: string, source = 'the cluster secret'): Buffer {
  const hex = text.trim();
  if (!/^[0-9a-fA-F]*$/.test(hex) || hex.length % 2 !== 0) {
    throw new SecretError(`${source} must be hex text (an even number of 0-9, a-f characters)`);
  }
  if (hex.length < MIN_SECRET_BYTES * 2) {
    throw new SecretError(`${source} is too short: ${hex.length} hex characters, at least ${MIN_SECRET_BYTES * 2} needed (marsadm create-cluster writes a good one)`);
  }
  return Buffer.from(hex, 'hex');
}

/**
 * Read the secret this host dials with: line 1 of the file (a second line exists during a
 * rotation; secret-ring.ts reads both).
 */
export function readSecretFile(path: string): Buffer {
  const first = readSecretText(path).split('\n').map((l) => l.trim()).find((l) => l !== '') ?? '';
  return parseSecret(first, `secret file ${path}`);
}

/**
 * The text of the secret file. It must be a regular file that only its owner can access:
 * anyone who can read it can join the cluster and read every replicated block.
 */
export function readSecretText(path: string): string {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new SecretError(`secret file ${path} is a symlink; use the file itself`);
    throw new SecretError(`cannot read the secret file ${path}: ${(err as Error).message}`);
  }
  try {
    // fstat on the open descriptor: the checked file is the one read, even if the path changes.
    const st = fstatSync(fd);
    if (!st.isFile()) throw new SecretError(`secret file ${path} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(3, '0');
      throw new SecretError(`secret file ${path} is accessible by group or others (mode ${mode}); run chmod 600 ${path}`);
    }
    if (st.size > MAX_SECRET_FILE_BYTES) throw new SecretError(`secret file ${path} is ${st.size} bytes; a secret is a line of hex text`);
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/** Bytes of a per-host key (hostKey). */
export const HOST_KEY_BYTES = 32;

/**
 * The key a host proves in the peer handshake: HKDF-SHA256(secret, info "marsd host key:" +
 * HOST). A connection that claims to be HOST must know this key, so a proof made by one host
 * can never pass as another's; whoever holds the cluster secret itself can derive every host's
 * key (docs/security.md, "Network").
 */
export function hostKey(secret: Buffer, host: string): Buffer {
  if (secret.length < MIN_SECRET_BYTES) throw new SecretError(`the cluster secret is ${secret.length} bytes; at least ${MIN_SECRET_BYTES} needed`);
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), Buffer.from(`marsd host key:${host}`, 'utf8'), HOST_KEY_BYTES));
}
