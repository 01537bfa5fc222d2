// The TLS transport end to end: marsd checks its certificate files at startup, two hosts
// replicate over TLS (one link verifying the certificate by IP address, the other by
// servername) to equal checksums, and a client trusting the wrong CA is refused. Real marsd
// processes and openssl-made certificates; every wait has a deadline.
import t from 'tap';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, MARSD_BIN, MarsHost } from '../helpers/cluster.js';
import { makeCa, makeHostCert, opensslUnavailable, type CertFiles } from '../helpers/tls-certs.js';
import { expectEqualDisks, joinAndSync, randomLoopbackHost, writeRandomBlocks } from '../helpers/replicate.js';
import { tempDir } from '../helpers/tmp.js';

const RES = 'r0';
const SIZE = 16 << 20;
const unavailable = opensslUnavailable();

/** marsd with these arguments, expected to refuse to start: exit code and stderr. */
function marsdRefuses(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MARSD_BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

t.test('marsd checks its TLS files at startup', { skip: unavailable ?? false }, async (t) => {
  const dir = tempDir(t, 'mars-tlsfiles-');
  const ca = makeCa(dir, 'mars-test-ca');
  const alpha = makeHostCert(dir, ca, 'alpha');
  const beta = makeHostCert(dir, ca, 'beta');
  const common = ['--mars-dir', join(dir, 'mars'), '--host', 'alpha', '--run-dir', join(dir, 'run')];
  const cases: Array<[string, string[], RegExp]> = [
    ['a certificate without its key', ['--tls-cert', alpha.certFile], /--tls-cert and --tls-key go together/],
    ['a key of another certificate', ['--tls-cert', alpha.certFile, '--tls-key', beta.keyFile], /--tls-key .*beta\.key does not belong to the certificate/],
    ['a missing file', ['--tls-cert', join(dir, 'nope.pem'), '--tls-key', alpha.keyFile], /cannot read --tls-cert .*nope\.pem: no such file/],
    ['a key where the certificate belongs', ['--tls-cert', alpha.keyFile, '--tls-key', alpha.keyFile], /--tls-cert .*alpha\.key is not a PEM certificate/],
    ['a CA file that is no certificate', ['--tls-ca', beta.keyFile], /--tls-ca .*beta\.key is not a PEM certificate/],
  ];
  for (const [what, args, why] of cases) {
    const r = await marsdRefuses([...common, ...args]);
    t.equal(r.code, 2, `${what}: exit code 2`);
    t.match(r.stderr, why, `${what}: ${r.stderr.trim()}`);
  }
});

t.test('the TLS transport: two hosts replicate over TLS; a client with the wrong CA is refused', { skip: unavailable ?? false }, async (t) => {
  const certDir = tempDir(t, 'mars-tls-');
  const ca = makeCa(certDir, 'mars-test-ca');
  const wrongCa = makeCa(certDir, 'other-ca');
  const tlsArgs = (cert: CertFiles, caFile = ca.certFile) => ['--tls-cert', cert.certFile, '--tls-key', cert.keyFile, '--tls-ca', caFile, '--pull-interval-ms', '200'];
  const ip = randomLoopbackHost(); // this test's own address: no daemon of another test meets ours
  const alphaCert = makeHostCert(certDir, ca, 'alpha', ip);
  const betaCert = makeHostCert(certDir, ca, 'beta', ip);
  const alpha = new MarsHost({ host: 'alpha', sizeBytes: SIZE, dir: tempDir(t, 'mars-alpha-'), extraArgs: tlsArgs(alphaCert) });
  const beta = new MarsHost({ host: 'beta', sizeBytes: SIZE, dir: tempDir(t, 'mars-beta-'), extraArgs: tlsArgs(betaCert) });
  const gamma = new MarsHost({ host: 'gamma', sizeBytes: 0, dir: tempDir(t, 'mars-gamma-') });
  for (const h of [alpha, beta, gamma]) {
    t.teardown(() => h.cleanup());
    h.prepare();
  }
  const alphaAddress = `${ip}:${await freePort(ip)}`;
  const betaAddress = `${ip}:${await freePort(ip)}`;
  const secretFile = join(alpha.marsDir, 'cluster-secret');
  await alpha.createCluster(alphaAddress);
  await alpha.start();
  await alpha.createResource(RES);
  await alpha.waitPrimary(RES);

  // A client that trusts another CA: refused before any secret is involved, nothing changes.
  const refused = await gamma.marsadm(['join-cluster', alphaAddress, '--listen', `${ip}:${await freePort(ip)}`, '--secret-file', secretFile,
    '--transport', 'tls', '--tls-ca', wrongCa.certFile, '--timeout', '20']);
  t.equal(refused.code, 1, 'join-cluster with the wrong CA fails');
  t.match(refused.stderr, /cannot join through .*(self[- ]signed|unable to (verify|get)|certificate)/i, `with the TLS reason: ${refused.stderr.trim()}`);
  t.equal(gamma.link('uuid'), undefined, 'and changes nothing');
  await alpha.until('alpha logged the failed TLS handshake', () => /TLS handshake failed/.test(readFileSync(alpha.logPath, 'utf8')), 10_000);

  // beta verifies alpha by name (servername), alpha verifies beta by its IP address.
  const joined = await beta.marsadmOk(['join-cluster', alphaAddress, '--listen', betaAddress, '--secret-file', secretFile,
    '--transport', 'tls,servername=alpha', '--tls-ca', ca.certFile]);
  t.match(joined, /joined cluster .* \(tls,servername=alpha\)/);
  t.equal(beta.link('userspace/transport-alpha'), 'tls,servername=alpha');
  await alpha.marsadmOk(['set-transport', 'beta', 'tls']);
  t.equal(alpha.link('userspace/transport-beta'), 'tls');
  await beta.start();
  await beta.until('beta connected to alpha over TLS', () => beta.link('actual-beta/peer-alpha')?.startsWith(`connected tls ${alphaAddress} (servername alpha) since `) === true, 30_000);
  await alpha.until('alpha connected to beta over TLS', () => alpha.link('actual-alpha/peer-beta')?.startsWith(`connected tls ${betaAddress} since `) === true, 30_000);

  await joinAndSync(beta, alpha, RES, SIZE);
  await writeRandomBlocks(alpha, RES, SIZE, 300, 3);
  await expectEqualDisks(t, alpha, [beta], RES, SIZE);
  t.match(readFileSync(alpha.logPath, 'utf8'), /peer server listening on [\d.]+:\d+ \(TLS\)/, 'alpha\'s listener speaks TLS');

  // The daemon as a client with the wrong CA: its link to alpha goes down saying why, and it keeps running.
  await beta.stop();
  beta.extraArgs = tlsArgs(betaCert, wrongCa.certFile);
  await beta.start();
  await beta.until('beta refuses alpha\'s certificate', () => /^down tls .*(self[- ]signed|unable to (verify|get)|certificate)/i.test(beta.link('actual-beta/peer-alpha') ?? ''), 30_000);
  t.ok(beta.running, 'marsd keeps running');
  t.pass(`status: ${beta.link('actual-beta/peer-alpha')}`);
});
