// Issue 17 item 6 against a real marsd: an unprivileged local user (nobody, via setpriv) can
// neither read a logfile, nor run log-dump on it, nor connect to the export socket, even with
// every directory above /mars open to it; a tree left with old modes (0755, logfiles 0644) is
// tightened when marsd starts.
import t from 'tap';
import { chmodSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { startHost, MARSADM_BIN } from '../helpers/cluster.js';
import { NbdClient } from '../../kernel-shim/nbd-client.js';

/** Run a command as nobody with a clean environment; its stdout, stderr and exit code. */
function asNobody(cmd: string, args: string[]): { code: number | null; out: string } {
  const r = spawnSync('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', cmd, ...args], {
    encoding: 'utf8', timeout: 30_000, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
  });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const mode = (p: string) => statSync(p).mode & 0o777;

t.test('an unprivileged local user gets nothing out of /mars or the export', async (t) => {
  const h = await startHost(t, { host: 'alpha', sizeBytes: 16 << 20 });
  // Open every directory above /mars: only the tree's own modes may protect it.
  for (let d = h.dir; d !== '/'; d = dirname(d)) if ((mode(d) & 0o005) !== 0o005) chmodSync(d, mode(d) | 0o005);
  await h.createResource('r0');
  await h.waitPrimary('r0');
  const nbd = await NbdClient.connect(h.socketPath('r0'), 'r0');
  t.teardown(() => nbd.destroy());
  await nbd.write(0, Buffer.concat([Buffer.from('SECRET-PAYLOAD'), randomBytes(4082)]), { fua: true });
  const resDir = join(h.marsDir, 'resource-r0');
  const logs = readdirSync(resDir).filter((n) => n.startsWith('log-'));
  t.ok(logs.length > 0, 'the resource has a logfile');
  t.equal(mode(h.marsDir), 0o700, '/mars is 0700');
  t.equal(mode(resDir), 0o700, 'resource directories are 0700');
  for (const n of logs) t.equal(mode(join(resDir, n)), 0o600, `${n} is 0600`);
  const logfile = join(resDir, logs[logs.length - 1]!);

  const cat = asNobody('cat', [logfile]);
  t.not(cat.code, 0, 'cat fails');
  t.match(cat.out, /Permission denied/);
  t.notMatch(cat.out, /SECRET-PAYLOAD/);
  const dump = asNobody(process.execPath, [MARSADM_BIN, 'log-dump', logfile]);
  t.not(dump.code, 0, `log-dump fails: ${dump.out.trim().split('\n')[0]}`);
  t.notMatch(dump.out, /SECRET-PAYLOAD|53 45 43 52/);
  const sock = asNobody(process.execPath, ['-e', `require('net').connect(${JSON.stringify(h.socketPath('r0'))}).on('connect',()=>{console.log('CONNECTED');process.exit(0)}).on('error',(e)=>{console.log(e.code);process.exit(1)})`]);
  t.match(sock.out, /^EACCES/, 'the export socket refuses nobody');

  // A tree from an older version: loose modes, then a restart.
  await nbd.flush();
  nbd.destroy();
  await h.stop();
  chmodSync(h.marsDir, 0o755);
  chmodSync(resDir, 0o755);
  for (const n of logs) chmodSync(join(resDir, n), 0o644);
  t.equal(asNobody('cat', [logfile]).code, 0, 'with the old modes nobody could read it (the test can fail)');
  await h.start();
  t.equal(mode(h.marsDir), 0o700, 'marsd start tightened /mars');
  t.equal(mode(resDir), 0o700);
  for (const n of logs) t.equal(mode(join(resDir, n)), 0o600, `${n} back to 0600`);
  t.match(h.logTail(200), /removed group\/other permissions from \d+ entries/);
  t.not(asNobody('cat', [logfile]).code, 0, 'nobody is locked out again');
});
