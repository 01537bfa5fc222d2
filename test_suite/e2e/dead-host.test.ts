// The worst day (issue 12): three hosts under a write load, the primary killed for good (its
// /mars deleted), a forced failover to the most advanced secondary, the dead host removed on a
// survivor; log-delete deletes again, nobody reports a split brain because of the dead host,
// view no longer lists it; bad input (this host, a live host) is refused and changes nothing.
// Then a replacement host joins through a survivor and syncs from the new primary while it
// keeps writing (view shows the sync's rate and ETA), ends byte-equal, and takes over in a
// planned handover.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { NbdClient } from '../../kernel-shim/nbd-client.js';
import { caughtUpWith, fileDigest, startCluster, waitWritebackDone, writeWorkload } from '../helpers/multi-host.js';
import { freePort, MarsHost } from '../helpers/cluster.js';
import { tempDir } from '../helpers/tmp.js';
import { WriteOrderOracle } from '../helpers/oracle.js';
import { runWorkload } from '../helpers/workload.js';

const RES = 'r0';
/** large enough that a sync limited to SYNC_LIMIT lasts a few seconds (the first 16 MiB chunk goes at once) */
const SIZE = 48 << 20;
/** the known data every replica had replayed before the primary died */
const HALF = 8 << 20;
const SYNC_LIMIT = 8 << 20;

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
  const unknown = await winner.marsadm(['lowlevel-delete-host', 'nosuchhost']);
  t.equal(unknown.code, 1);
  t.match(unknown.stderr, /no such host in this cluster/);
  const invalid = await winner.marsadm(['lowlevel-delete-host', '../ips']);
  t.not(invalid.code, 0, 'an invalid host name is refused');
  t.ok(winner.link(`resource-${RES}/data-${a.name}`), 'nothing changed: wa is still a member');
  for (const h of [winner.name, other.name, a.name, 'nosuchhost']) {
    t.equal(winner.link(`ips/removed-${h}`), undefined, `nothing changed: no removal marker for ${h}`);
    t.equal(winner.link(`resource-${RES}/removed-${h}`), undefined);
  }
  t.ok(winner.link(`ips/ip-${other.name}`) && winner.link(`resource-${RES}/data-${other.name}`), `nothing changed: ${other.name} is still a member`);

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
  await t.test('a replacement joins through a survivor, syncs while the primary writes, takes over', async (t) => {
    const wd = new MarsHost({ host: 'wd', sizeBytes: SIZE, dir: tempDir(t, 'mars-wd-'), extraArgs: ['--pull-interval-ms', '200'] });
    t.teardown(() => wd.cleanup());
    wd.prepare();
    const port = await freePort();
    wd.extraArgs.push('--bind', `127.0.0.1:${port}`);
    const through = winner.link(`ips/ip-${winner.name}`)!;
    await wd.marsadmOk(['join-cluster', through, '--listen', `127.0.0.1:${port}`, '--secret-file', `${winner.marsDir}/cluster-secret`]);
    await wd.start();
    await wd.until(`wd learned ${RES}`, () => wd.link(`resource-${RES}/replay-${winner.name}`) !== undefined, 30_000, 50);
    t.ok([undefined, '.deleted'].includes(wd.link('ips/ip-wa')), 'the dead host is no member for wd');
    await wd.marsadmOk(['set-sync-limit-value', String(SYNC_LIMIT)]);
    // The new primary keeps writing during the whole sync.
    const oracle = new WriteOrderOracle({ deviceBytes: SIZE, blockBytes: 4096 });
    const stop = new AbortController();
    const load = runWorkload({
      socketPath: winner.socketPath(RES), exportName: RES, oracle, writes: 1_000_000, durationMs: 120_000, queueDepth: 4, flushEvery: 16, seed: 7, signal: stop.signal,
    });
    await wd.marsadmOk(['join-resource', RES, wd.dataPath]);
    let progress = '';
    await wd.until('view shows the sync with rate and ETA', async () => {
      progress = (await wd.marsadmOk(['view', RES])).split('\n').find((l) => /sync: \d+ of \d+ bytes, \d+ bytes\/s, ETA \d+ s/.test(l)) ?? '';
      return progress !== '';
    }, 60_000, 200);
    t.comment(`wd's view during the sync: ${progress.trim()}`);
    await wd.until('wd synced', () => wd.link(`resource-${RES}/syncstatus-wd`) === String(SIZE), 120_000, 100);
    stop.abort();
    const r = await load;
    t.equal(r.failed, 0, `the load went on during the sync: ${r.acknowledged} writes acknowledged, none failed${r.error ? ` (${r.error})` : ''}`);
    t.ok(r.acknowledged > 0);
    await waitWritebackDone(winner, RES);
    await wd.until('wd caught up', () => caughtUpWith(wd, winner, RES), 60_000, 50);
    t.equal(fileDigest(wd.dataPath, SIZE), fileDigest(winner.dataPath, SIZE), 'wd\'s disk equals the new primary\'s');

    // A planned handover to the replacement.
    await wd.marsadmOk(['primary', RES, '--timeout', '60']);
    await wd.waitPrimary(RES);
    await winner.until(`${winner.name} stepped down`, () => winner.actual(RES, 'is-primary') === '0', 30_000, 50);
    await writeWorkload(wd, RES, SIZE, 20, 9);
    for (const h of [winner, other]) await h.until(`${h.name} follows wd`, () => caughtUpWith(h, wd, RES), 60_000, 50);
    await waitWritebackDone(wd, RES);
    for (const h of [winner, other]) t.equal(fileDigest(h.dataPath, SIZE), fileDigest(wd.dataPath, SIZE), `${h.name}'s disk equals wd's after the handover`);
  });
});
