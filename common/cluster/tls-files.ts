// marsd's TLS files (--tls-cert, --tls-key, --tls-ca), checked once at startup so that a typo
// or a mismatched key is a clear error when marsd starts, not a TLS failure on every
// connection later. The server presents cert + key; the CA verifies the servers we dial with
// transport `tls` (docs/protocol.md §8).
import { readFileSync, statSync } from 'node:fs';
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import tls from 'node:tls';

export class TlsConfigError extends Error {
  override name = 'TlsConfigError';
}

export interface TlsFiles {
  certFile?: string;
  keyFile?: string;
  caFile?: string;
}

function readPem(option: string, path: string): Buffer {
  try {
    const st = statSync(path);
    if (!st.isFile()) throw new TlsConfigError(`${option} ${path} is not a regular file`);
    return readFileSync(path);
  } catch (err) {
    if (err instanceof TlsConfigError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new TlsConfigError(`cannot read ${option} ${path}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
}

function parseCertificate(option: string, path: string, pem: Buffer, nowMs: number): X509Certificate {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pem);
  } catch (err) {
    throw new TlsConfigError(`${option} ${path} is not a PEM certificate: ${(err as Error).message}`);
  }
  if (Date.parse(cert.validTo) < nowMs) throw new TlsConfigError(`${option} ${path} expired on ${cert.validTo}`);
  if (Date.parse(cert.validFrom) > nowMs) throw new TlsConfigError(`${option} ${path} is not valid before ${cert.validFrom}`);
  return cert;
}

/**
 * Check the files: cert and key come together, every file is readable PEM, the key belongs to
 * the certificate, no certificate is expired, and the CA file is usable as a trust store.
 * Returns warnings (a key readable by others); throws TlsConfigError with what to fix.
 */
export function checkTlsFiles(files: TlsFiles, nowMs = Date.now()): { warnings: string[] } {
  const warnings: string[] = [];
  if ((files.certFile === undefined) !== (files.keyFile === undefined)) {
    throw new TlsConfigError('--tls-cert and --tls-key go together: give both (the certificate this marsd presents and its private key) or neither');
  }
  if (files.certFile !== undefined && files.keyFile !== undefined) {
    const cert = parseCertificate('--tls-cert', files.certFile, readPem('--tls-cert', files.certFile), nowMs);
    const keyPem = readPem('--tls-key', files.keyFile);
    let key: KeyObject;
    try {
      key = createPrivateKey(keyPem);
    } catch (err) {
      throw new TlsConfigError(`--tls-key ${files.keyFile} is not an unencrypted PEM private key: ${(err as Error).message}`);
    }
    if (!cert.checkPrivateKey(key)) throw new TlsConfigError(`--tls-key ${files.keyFile} does not belong to the certificate in --tls-cert ${files.certFile}`);
    if ((statSync(files.keyFile).mode & 0o077) !== 0) warnings.push(`--tls-key ${files.keyFile} is readable by group or others; chmod 600 it`);
  }
  if (files.caFile !== undefined) {
    const pem = readPem('--tls-ca', files.caFile);
    parseCertificate('--tls-ca', files.caFile, pem, nowMs);
    try {
      tls.createSecureContext({ ca: pem });
    } catch (err) {
      throw new TlsConfigError(`--tls-ca ${files.caFile} cannot be used as a CA: ${(err as Error).message}`);
    }
  }
  return { warnings };
}
