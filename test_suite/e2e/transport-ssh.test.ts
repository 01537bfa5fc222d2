// The SSH transport end to end: `marsd --stdio` relays to the running daemon's peer socket,
// and a secondary reaches its primary through a real sshd on loopback with key login (issue
// 4). Real processes only; every wait has a deadline; the teardown ends every process the
// test started (marsd by pid, sshd and its sessions by pid through /proc).
import { withDeadline } from '../helpers/wait.js';
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connectOverDuplex, spawnDuplex } from '../../daemon/net/dial.js';
import { HandshakeError } from '../../daemon/net/handshake.js';
import { PEER_SOCKET_NAME } from '../../daemon/net/stdio-relay.js';
import { freePort, MARSD_BIN, MarsHost, startHost } from '../helpers/cluster.js';
import { sshdUnavailable, startSshd } from '../helpers/sshd.js';
import { expectEqualDisks, joinAndSync, randomLoopbackHost, writeRandomBlocks } from '../helpers/replicate.js';
import { tempDir } from '../helpers/tmp.js';
import { TreeStore } from '../../common/tree/store.js';

const RES = 'r0';
const SIZE = 16 << 20;


/** `marsd --stdio` with nothing on stdin: how it exits and what it says. */
function runStdio(runDir: string, marsDir: string): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MARSD_BIN, '--stdio', '--run-dir', runDir, '--mars-dir', marsDir], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, stdout });
    });
  });
}

t.test('marsd --stdio relays to the running daemon; a stopped or killed one is a clear error', async (t) => {
  const alpha = await startHost(t, { host: 'alpha', sizeBytes: 0 });
  const socketPath = join(alpha.runDir, PEER_SOCKET_NAME);
  const socketUp = () => alpha.until('the peer socket', () => existsSync(socketPath), 10_000);
  await socketUp();
  t.equal(lstatSync(socketPath).mode & 0o777, 0o600, 'the peer socket is private to its owner');
  const secret = readFileSync(join(alpha.marsDir, 'cluster-secret'), 'utf8');
  const uuid = alpha.link('uuid')!;

  t.equal(alpha.link('userspace/run-dir'), alpha.runDir, 'marsd records its run dir for marsd --stdio --mars-dir');
  // The relay's client speaks as beta: only members are admitted (docs/security.md, "Network").
  new TreeStore(alpha.marsDir).write('ips/ip-beta', '127.0.0.1:9');
  const relayTo = async (how: string[]) => {
    const spawned = spawnDuplex(process.execPath, [MARSD_BIN, '--stdio', ...how]);
    const conn = await connectOverDuplex(spawned.duplex, 'relay', { host: 'beta', uuid, secret, expectHost: 'alpha', timeoutMs: 20_000 });
    t.equal(conn.peerHost, 'alpha', 'the handshake ran end to end with the daemon');
    const { entries } = await conn.getents();
    t.ok(entries.some((e) => e.p === 'uuid' && e.v === uuid), 'requests are served by the daemon');
    conn.close('test done');
    const exit = await withDeadline(spawned.exited, 10_000, 'the relay to exit');
    t.ok(exit.code === 0 || exit.signal === 'SIGTERM', `the relay ended when the connection closed (${JSON.stringify(exit)})`);
  };
  await relayTo(['--run-dir', alpha.runDir]);

  const wrong = spawnDuplex(process.execPath, [MARSD_BIN, '--stdio', '--run-dir', alpha.runDir]);
  await t.rejects(connectOverDuplex(wrong.duplex, 'relay', { host: 'beta', uuid, secret: 'ab'.repeat(32), timeoutMs: 20_000 }),
    HandshakeError, 'a wrong secret is refused by the daemon behind the relay');
  await withDeadline(wrong.exited, 10_000, 'the refused relay to exit');
  await alpha.until('the daemon logged the refusal', () => /peer stdio relay: handshake failed/.test(readFileSync(alpha.logPath, 'utf8')), 10_000);

  // SIGKILL leaves the socket file behind: the relay calls it stale, a new marsd replaces it.
  alpha.kill('SIGKILL');
  await alpha.waitExit();
  t.ok(existsSync(socketPath), 'a killed daemon leaves its socket file');
  const stale = await runStdio(alpha.runDir, alpha.marsDir);
  t.equal(stale.code, 1, 'exit code 1 without a daemon');
  t.match(stale.stderr, /marsd --stdio: marsd is not running here: .*peer\.sock is a stale socket/, `says so: ${stale.stderr.trim()}`);
  t.equal(stale.stdout, '', 'nothing on stdout but protocol bytes');
  await alpha.start();
  await socketUp();
  await relayTo(['--mars-dir', alpha.marsDir]); // finds the run dir marsd recorded

  await alpha.stop();
  t.notOk(existsSync(socketPath), 'a clean stop removes the socket');
  const none = await runStdio(alpha.runDir, alpha.marsDir);
  t.equal(none.code, 1);
  t.match(none.stderr, /marsd is not running here, or serves no peers: .*peer\.sock does not exist; start marsd/, `says so: ${none.stderr.trim()}`);
});

const unavailable = sshdUnavailable();

t.test('the SSH transport: a peer reached through sshd on loopback with key login', { skip: unavailable ?? false }, async (t) => {
  const ip = randomLoopbackHost(); // this test's own address: no daemon of another test meets ours
  const sshd = await startSshd(t, tempDir(t, 'mars-sshd-'), ip);
  const alpha = new MarsHost({ host: 'alpha', sizeBytes: SIZE, dir: tempDir(t, 'mars-alpha-'), extraArgs: ['--pull-interval-ms', '200'] });
  const beta = new MarsHost({ host: 'beta', sizeBytes: SIZE, dir: tempDir(t, 'mars-beta-'), extraArgs: ['--pull-interval-ms', '200'] });
  for (const h of [alpha, beta]) {
    t.teardown(() => h.cleanup());
    h.prepare();
  }
  const alphaAddress = `${ip}:${await freePort(ip)}`;
  const betaAddress = `${ip}:${await freePort(ip)}`;
  await alpha.createCluster(alphaAddress);
  await alpha.start();
  await alpha.createResource(RES);
  await alpha.waitPrimary(RES);

  // beta reaches alpha only through ssh: sshd logs in with the key and runs alpha's
  // `marsd --stdio` (absolute paths: sshd's PATH need not contain node).
  const target = `${sshd.user}@${ip}:${sshd.port}`;
  const command = `${process.execPath} ${MARSD_BIN} --stdio --run-dir ${alpha.runDir}`;
  const spec = (identity: string) => `ssh:${target},identity=${identity},known-hosts=${sshd.knownHosts},command=${command}`;
  const joined = await beta.marsadmOk(['join-cluster', alphaAddress, '--listen', betaAddress, '--secret-file', join(alpha.marsDir, 'cluster-secret'), '--transport', spec(sshd.identity)]);
  t.match(joined, /joined cluster .* \(ssh:/, 'join-cluster went through ssh');
  t.equal(beta.link('userspace/transport-alpha'), spec(sshd.identity), 'and kept the transport for alpha');
  t.equal(alpha.link('userspace/transport-beta'), undefined, 'transports are never propagated');
  await beta.start();
  await beta.until('beta connected to alpha over ssh', () => beta.link('actual-beta/peer-alpha')?.startsWith(`connected ssh ${target} since `) === true, 30_000);
  await alpha.until('alpha connected to beta by tcp (its own choice)', () => alpha.link('actual-alpha/peer-beta')?.startsWith(`connected tcp ${betaAddress} since `) === true, 30_000);

  await joinAndSync(beta, alpha, RES, SIZE);
  await writeRandomBlocks(alpha, RES, SIZE, 300, 1);
  await expectEqualDisks(t, alpha, [beta], RES, SIZE);
  const alphaLog = readFileSync(alpha.logPath, 'utf8');
  t.match(alphaLog, /peer beta connected from stdio relay/, 'alpha served beta through its peer socket');
  t.notMatch(alphaLog, /peer beta connected from \d/, 'beta never used alpha\'s TCP listener');
  t.match(sshd.log(), /Accepted publickey for \S+ from /, 'sshd logged the key login');

  // A key sshd does not know: refused, with ssh's own words in the status; marsd keeps running.
  const refused = await beta.marsadm(['set-transport', 'alpha', spec(sshd.wrongIdentity), '--timeout', '60']);
  t.equal(refused.code, 0, `set-transport stores the spec and reports the result: ${refused.stderr}`);
  t.match(refused.stdout, /status: down ssh .*Permission denied \(publickey/, 'it shows ssh\'s refusal');
  t.match(beta.link('actual-beta/peer-alpha') ?? '', /^down ssh .*Permission denied \(publickey/, 'the status link says why');
  await beta.until('the refusal in marsd\'s log', () => /peer alpha \(ssh .*Permission denied \(publickey/.test(readFileSync(beta.logPath, 'utf8')), 20_000);
  t.ok(beta.running, 'marsd keeps running');
  const before = beta.link('actual-beta/time');
  await beta.until('beta\'s heartbeat moves on', () => beta.link('actual-beta/time') !== before, 10_000);
  t.match(sshd.log(), /Failed publickey|Connection closed by authenticating user|userauth/i, 'sshd refused the key');

  // Back to the right key: the link reconnects and replication continues.
  const restored = JSON.parse(await beta.marsadmOk(['set-transport', 'alpha', spec(sshd.identity), '--json'])) as { changed: boolean; status: string; transport: string };
  t.equal(restored.changed, true);
  t.equal(restored.transport, spec(sshd.identity));
  t.match(restored.status, new RegExp(`^connected ssh ${target.replace(/\./g, '\\.')} since `), '--json reports the new status');
  await writeRandomBlocks(alpha, RES, SIZE, 100, 2);
  await expectEqualDisks(t, alpha, [beta], RES, SIZE);
  const shown = await beta.marsadmOk(['get-transport', 'alpha']);
  t.match(shown, new RegExp(`^ssh:${target.replace(/\./g, '\\.')},identity=`), 'get-transport prints the spec');
  t.match(shown, /status: connected ssh /);
});
