// Test certificates made with the openssl command line (node:crypto cannot issue
// certificates): a CA, host certificates it signs (naming an IP address and the host name), and
// an unrelated second CA for "wrong CA" tests. EC P-256 keys, valid for two days.
import { execFileSync } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Why certificates cannot be made here, or null. */
export function opensslUnavailable(): string | null {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return null;
  } catch {
    return 'the openssl command is not installed (node:crypto cannot make certificates)';
  }
}

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

export interface CertFiles {
  certFile: string;
  keyFile: string;
}

/** A self-signed CA in DIR/NAME.pem with its key DIR/NAME.key. */
export function makeCa(dir: string, name: string): CertFiles {
  const certFile = join(dir, `${name}.pem`);
  const keyFile = join(dir, `${name}.key`);
  openssl(['req', '-x509', ...EC_KEY, '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  chmodSync(keyFile, 0o600);
  return { certFile, keyFile };
}

/** A server certificate for `host` signed by `ca`, naming DNS:host and IP:ip. */
export function makeHostCert(dir: string, ca: CertFiles, host: string, ip = '127.0.0.1'): CertFiles {
  const certFile = join(dir, `${host}.pem`);
  const keyFile = join(dir, `${host}.key`);
  const csr = join(dir, `${host}.csr`);
  const ext = join(dir, `${host}.ext`);
  openssl(['req', '-new', ...EC_KEY, '-keyout', keyFile, '-out', csr, '-subj', `/CN=${host}`]);
  writeFileSync(ext, `subjectAltName=DNS:${host},IP:${ip}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n`);
  openssl(['x509', '-req', '-in', csr, '-CA', ca.certFile, '-CAkey', ca.keyFile, '-CAcreateserial', '-out', certFile, '-days', '2', '-extfile', ext]);
  chmodSync(keyFile, 0o600);
  return { certFile, keyFile };
}
