// The worst day (issue 12): three hosts under a write load, the primary killed for good (its
// /mars deleted), a forced failover to the most advanced secondary, the dead host removed on a
// survivor; log-delete deletes again, nobody reports a split brain because of the dead host,
// view no longer lists it; bad input (this host, a live host) is refused and changes nothing.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { NbdClient } from '../../kernel-shim/nbd-client.js';
import { caughtUpWith, startCluster, writeWorkload } from '../helpers/multi-host.js';
import type { MarsHost } from '../helpers/cluster.js';

const RES = 'r0';
const SIZE = 16 << 20;
const HALF = SIZE / 2;

/** replay-HOST as a comparable number (seq, pos). */
function replayed(h: MarsHost): [number, number] {
  const [name, pos] = (h.link(`resource-${RES}/replay-${h.name}`) ?? 'log-000000000-x,0').split(',');
  return [Number(name!.slice(4, 13)), Number(pos)];
}

t.test('primary lost for good: forced failover, dead host removed, log-delete again', async (t) => {
  const c = await startCluster(t, { hosts: ['wa', 'wb', 'wc'], sizeBytes: SIZE, res: RES });
  const [a, b, cc] = c.hosts as [MarsHost, MarsHost, MarsHost];
  // Known data in the first half, replayed everywhere.
  const known = randomBytes(HALF);
  const client = await NbdClient.connect(a.socketPath(RES), RES);
  for (let off = 0; off < HALF; off += 1 << 20) await client.write(off, known.subarray(off, off + (1 << 20)));
  await client.flush();
  await b.until('wb caught up', () => caughtUpWith(b, a, RES), 60_000, 50);
  await cc.until('wc caught up', () => caughtUpWith(cc, a, RES), 60_000, 50);
  // A write load into the second half while the primary dies.
  let acked = 0;
  const load = (async () => {
    for (let i = 0; i < 2000; i++) {
      await client.write(HALF + (i % 1000) * 4096, randomBytes(4096));
      acked++;
    }
  })().catch(() => undefined);
  await a.until('some load written', () => acked >= 50, 30_000, 10);
  a.kill('SIGKILL');
  await a.waitExit();
  await load;
  await client.disconnect(1000).catch(() => undefined);
  rmSync(a.marsDir, { recursive: true, force: true });

  // Choose the most advanced survivor once both replayed all they fetched (the manual's step 1).
  // (their replay links stay the same for 3 s: what was fetched of wa's logfile is replayed).
  let last = '';
  let stableSince = Date.now();
  await b.until('both survivors settled', () => {
    const now = JSON.stringify([replayed(b), replayed(cc)]);
    if (now !== last) stableSince = Date.now();
    last = now;
    return Date.now() - stableSince >= 3000;
  }, 30_000, 200);
  const [rb, rc] = [replayed(b), replayed(cc)];
  const [winner, other] = rb[0] > rc[0] || (rb[0] === rc[0] && rb[1] >= rc[1]) ? [b, cc] : [cc, b];
  const forced = await winner.marsadm(['primary', RES, '--force', '--timeout', '60']);
  t.equal(forced.code, 0, `forced failover to ${winner.name}${forced.code ? `: ${forced.stderr}` : ''}`);
  await winner.waitPrimary(RES);
  const w = await NbdClient.connect(winner.socketPath(RES), RES);
  t.ok((await w.readRange(0, HALF)).equals(known), 'every write the new primary had replayed is there');
  await w.disconnect();

  // Bad input first: this host, a live host; nothing changes.
  const self = await winner.marsadm(['lowlevel-delete-host', winner.name]);
  t.equal(self.code, 1);
  t.match(self.stderr, /is this host/);
  const live = await winner.marsadm(['lowlevel-delete-host', other.name]);
  t.equal(live.code, 1);
  t.match(live.stderr, /is alive \(its heartbeat is/);
  const tooEarly = await winner.marsadm(['--host', a.name, 'leave-resource', RES, '--force']);
  t.equal(tooEarly.code, 1, 'wa\'s last heartbeat is within the default window');
  t.match(tooEarly.stderr, /wa is alive/);
  t.ok(winner.link(`resource-${RES}/data-${a.name}`), 'nothing changed');

  // wa is dead once nothing was heard of it for --window seconds.
  await winner.until('wa silent for 2 s', () => {
    const stamp = Number(winner.link(`actual-${a.name}/time`));
    return Date.now() / 1000 - stamp > 3;
  }, 30_000, 100);
  const down = await winner.marsadmOk(['--host', a.name, '--window', '2', 'down', RES, '--force']);
  t.match(down, /recorded off here/);
  await winner.marsadmOk(['--host', a.name, '--window', '2', 'leave-resource', RES, '--force']);
  await winner.marsadmOk(['--host', a.name, '--window', '2', 'leave-cluster', '--force']);
  const gone = (h: MarsHost, rel: string) => [undefined, '.deleted'].includes(h.link(rel));
  t.ok(gone(winner, `ips/ip-${a.name}`), 'wa is gone from ips/');
  await other.until(`${other.name} honours the removal`, () => gone(other, `resource-${RES}/replay-${a.name}`)
    && gone(other, `resource-${RES}/data-${a.name}`) && gone(other, `ips/ip-${a.name}`), 30_000, 50);

  t.equal(await winner.view('is-split-brain', RES), '0', `${winner.name}: no split brain because of wa`);
  t.notMatch(await winner.marsadmOk(['view', RES]), /\bwa\b/, `${winner.name}'s view no longer lists wa`);
  // The other survivor follows the new primary: the history goes on from where it ended wa's
  // last logfile (fetch plan and switchover take the new primary's versionlink of it).
  await t.test('log-delete deletes again, the other survivor follows', async (t) => {
    // log-delete deletes again: wa's logfiles go once the survivors replayed past them.
    await writeWorkload(winner, RES, SIZE, 50, 3);
    await winner.marsadmOk(['log-rotate', RES]);
    await writeWorkload(winner, RES, SIZE, 20, 4);
    await other.until(`${other.name} caught up with ${winner.name}`, () => caughtUpWith(other, winner, RES), 20_000, 50);
    const waLogs = () => readdirSync(`${winner.marsDir}/resource-${RES}`).filter((n) => /^log-\d{9}-wa$/.test(n) && existsSync(`${winner.marsDir}/resource-${RES}/${n}`));
    t.ok(waLogs().length > 0, 'wa\'s logfiles are still here before log-delete');
    await winner.until('log-delete deletes wa\'s logfiles', async () => {
      await winner.marsadm(['log-delete-all', RES, '--force']);
      return waLogs().every((n) => winner.link(`resource-${RES}/${n}`) === '.deleted' || !existsSync(`${winner.marsDir}/resource-${RES}/${n}`));
    }, 30_000, 500);
    for (const h of [winner, other]) {
      t.equal(await h.view('is-split-brain', RES), '0', `${h.name}: no split brain`);
      const view = await h.marsadmOk(['view', RES]);
      t.notMatch(view, /\bwa\b/, `${h.name}'s view no longer lists wa`);
    }
  });
});
