// Issue 17 item 3 against real daemons: an authenticated member (the test, dialling as beta with
// beta's secret, as a member gone rogue would) pushes hostile links to the primary alpha. Each is
// refused with a log line and changes nothing on either host: maxnr=999999999, size=1 TiB, a
// primary link stamped 59 days ahead (which must not move alpha's Lamport clock either), a
// tombstone for the primary's current logfile, and 271 resource directories (the cap holds,
// the log stays short and alpha's CPU time stays low, measured from /proc/PID/stat).
import t from 'tap';
import { lstatSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster } from '../helpers/multi-host.js';
import type { MarsHost } from '../helpers/cluster.js';
import { readSecretFile } from '../../common/cluster/secret.js';
import { dialTransport } from '../../daemon/net/dial-transport.js';
import { pushLink } from '../../daemon/propagate/peer-calls.js';

const DAY_US = 24 * 3600 * 1_000_000;

/** utime + stime of a process in clock ticks (/proc/PID/stat fields 14 and 15). */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** What must not change: the shared links, the logfiles and the resource directories. */
function snapshot(h: MarsHost): string {
  const res = join(h.marsDir, 'resource-r0');
  return JSON.stringify({
    maxnr: h.link('resource-r0/maxnr'), size: h.link('resource-r0/size'), primary: h.link('resource-r0/primary'),
    logs: readdirSync(res).filter((n) => n.startsWith('log-')).map((n) => [n, lstatSync(join(res, n)).isFile()]),
    resources: readdirSync(h.marsDir).filter((n) => n.startsWith('resource-')),
  });
}

t.test('hostile links from an authenticated member are refused and change nothing', async (t) => {
  const c = await startCluster(t, { hosts: ['alpha', 'beta'], sizeBytes: 16 << 20, res: 'r0', extraArgs: ['--max-resources', '1'] });
  const [alpha, beta] = [c.host('alpha'), c.host('beta')];
  await c.waitCaughtUp(beta);
  const before = { alpha: snapshot(alpha), beta: snapshot(beta) };
  const address = alpha.link('ips/ip-alpha')!;
  // As the member beta (its cluster uuid): a joining client (uuid (any)) gets the join requests only.
  const conn = await dialTransport({ kind: 'tcp' }, {
    address, host: 'beta', uuid: alpha.link('uuid')!, secret: readSecretFile(join(beta.marsDir, 'cluster-secret')), timeoutMs: 10_000,
  });
  t.teardown(() => conn.close('test done'));
  const nowUs = Date.now() * 1000;
  const current = readdirSync(join(alpha.marsDir, 'resource-r0')).filter((n) => n.startsWith('log-')).sort().pop()!;
  const attacks: [string, { p: string; v: string; s: number }, RegExp][] = [
    ['maxnr=999999999', { p: 'resource-r0/maxnr', v: '999999999', s: nowUs }, /may only be raised by the designated primary alpha/],
    ['size=1 TiB', { p: 'resource-r0/size', v: String(2 ** 40), s: nowUs }, /may only be grown by the designated primary alpha/],
    ['primary stamped 59 days ahead', { p: 'resource-r0/primary', v: 'beta', s: nowUs + 59 * DAY_US }, /ahead of this host's clock/],
    ['a tombstone for the primary\'s logfile', { p: `resource-r0/${current}`, v: '.deleted', s: nowUs }, /still needs|only alpha deletes/],
  ];
  for (const [what, entry, reason] of attacks) {
    await t.rejects(pushLink(conn, entry), reason, `${what} is refused`);
    await alpha.until(`alpha logs the refusal of ${what}`, () => alpha.logTail(400).includes(`refused link pushed by beta: ${entry.p}`), 10_000);
  }

  const pid = alpha.pid!;
  const cpuBefore = cpuTicks(pid);
  const startMs = Date.now();
  let refused = 0;
  for (let i = 0; i < 271; i++) {
    await pushLink(conn, { p: `resource-x${i}/size`, v: '4096', s: nowUs + i }).catch(() => refused++);
  }
  t.equal(refused, 271, 'every resource over the cap is refused');
  // Let both daemons run a few pull rounds (200 ms each) with whatever they accepted.
  const tick = alpha.link('actual-alpha/time');
  await alpha.until('alpha ran on for a while', () => Date.now() - startMs > 3000 && alpha.link('actual-alpha/time') !== tick, 20_000, 100);
  const cpuS = (cpuTicks(pid) - cpuBefore) / 100;
  const wallS = (Date.now() - startMs) / 1000;
  t.comment(`alpha used ${cpuS.toFixed(2)} s CPU in ${wallS.toFixed(1)} s`);
  t.ok(cpuS / wallS < 0.3, `alpha's CPU stays low (${Math.round((100 * cpuS) / wallS)} %)`);
  const lines = alpha.logTail(2000).split('\n').filter((l) => l.includes('refused link pushed by beta: resource-x'));
  t.ok(lines.length <= 25, `refusals are rate-limited (${lines.length} lines for 271 pushes)`);
  t.match(lines[0] ?? '', /already holds 1 resources \(limit 1, marsd --max-resources\)/);

  // No state change anywhere, and alpha's Lamport clock did not jump.
  await beta.until('beta pulled alpha again', () => beta.link('actual-alpha/time') === alpha.link('actual-alpha/time'), 20_000);
  t.equal(snapshot(alpha), before.alpha, 'alpha unchanged');
  t.equal(snapshot(beta), before.beta, 'beta unchanged');
  const heartbeat = alpha.link('actual-alpha/time');
  await alpha.until('alpha writes a fresh heartbeat link', () => alpha.link('actual-alpha/time') !== heartbeat, 20_000);
  const stampUs = Number(lstatSync(join(alpha.marsDir, 'actual-alpha/time'), { bigint: true }).mtimeNs / 1000n);
  t.ok(stampUs < Date.now() * 1000 + 60_000_000, `alpha's new stamps stay at real time (${((stampUs - Date.now() * 1000) / 1e6).toFixed(1)} s ahead)`);
});
