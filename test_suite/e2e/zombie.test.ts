// Zombies (issue 12): a host removed on a survivor whose marsd starts again on its old /mars,
// and an old primary that comes back after a forced failover without having been removed.
// Neither may take the primary role (not even for a moment: its log shows no start of it, its
// socket never greets), and nothing a removed host sends is applied anywhere, although the
// survivors still pull it (removed from the resource only) or it still pulls them.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { caughtUpWith, fileDigest, startCluster, waitWritebackDone, writeWorkload } from '../helpers/multi-host.js';
import { nbdGreets, type MarsHost } from '../helpers/cluster.js';
import { TreeStore } from '../../common/tree/store.js';
import { ownerOf } from '../../common/tree/ownership.js';

const RES = 'r0';
const SIZE = 8 << 20;

/** What marsd logged since its last start (the harness marks every start). */
function logSinceStart(h: MarsHost): string {
  const text = readFileSync(h.logPath, 'utf8');
  return text.slice(text.lastIndexOf('=== harness: marsd start #'));
}

/** Links of `owner` on `h` that are not tombstones (what `h` accepted of it). */
function liveLinksOf(h: MarsHost, owner: string): string[] {
  const tree = new TreeStore(h.marsDir);
  const out: string[] = [];
  const walk = (dir: string, depth: number) => {
    for (const n of tree.list(dir)) {
      const p = dir === '' ? n : `${dir}/${n}`;
      const o = ownerOf(p);
      if (o.kind === 'host' && o.host === owner && tree.value(p) !== undefined) out.push(p);
      if (depth < 2 && (n.startsWith('resource-') || n.startsWith('actual-') || n.startsWith('todo-') || n === 'ips')) walk(p, depth + 1);
    }
  };
  walk('', 0);
  return out.sort();
}

/** The status line of `view` (role, disk, flags, primary), which must not change. */
async function statusLine(h: MarsHost): Promise<string> {
  return (await h.marsadmOk(['view', RES])).split('\n')[0]!;
}

async function waitSilent(by: MarsHost, dead: string): Promise<void> {
  await by.until(`${dead} silent for 3 s`, () => Date.now() / 1000 - Number(by.link(`actual-${dead}/time`)) > 3, 30_000, 100);
}

t.test('a removed host restarted on its old /mars: no role, no export, nothing of it applied anywhere', async (t) => {
  const c = await startCluster(t, { hosts: ['za', 'zb', 'zc'], sizeBytes: SIZE, res: RES });
  const [za, zb, zc] = c.hosts as [MarsHost, MarsHost, MarsHost];
  const t0 = Date.now();
  const lap = (what: string) => t.comment(`${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  await writeWorkload(za, RES, SIZE, 40, 1);
  for (const h of [zb, zc]) await h.until(`${h.name} caught up`, () => caughtUpWith(h, za, RES), 60_000, 50);
  za.kill('SIGKILL');
  await za.waitExit();
  await zb.marsadmOk(['primary', RES, '--force', '--timeout', '60']);
  await zb.waitPrimary(RES);
  await waitSilent(zb, 'za');
  lap('failed over, za silent');

  // Step 1: removed from the resource only: the survivors still pull za (it stays a cluster member).
  await zb.marsadmOk(['--host', 'za', '--window', '2', 'down', RES, '--force']);
  await zb.marsadmOk(['--host', 'za', '--window', '2', 'leave-resource', RES, '--force']);
  await zc.until('zc honours the removal', () => [undefined, '.deleted'].includes(zc.link(`resource-${RES}/data-za`)), 30_000, 50);
  lap('removed from r0');
  const before = { zb: await statusLine(zb), zc: await statusLine(zc) };
  await za.start();
  lap('za restarted');
  await za.until('za logs its removal', () => /r0: za was removed from r0 by zb: it takes no role there\. To rejoin/.test(logSinceStart(za)), 30_000, 100);
  t.equal(za.actual(RES, 'is-primary'), '0', 'za takes no role');
  t.notOk(await nbdGreets(za.socketPath(RES), 1_000), 'za serves no export');
  t.match(await za.marsadmOk(['view', RES]), /REMOVED: za was removed from r0 by zb/, 'za\'s view says so, and how to rejoin');

  // za's tree claims the primary role and a newer replay position: the survivors pull it, refuse it.
  const tree = new TreeStore(za.marsDir);
  tree.write(`resource-${RES}/primary`, 'za');
  tree.write(`resource-${RES}/replay-za`, 'log-000000009-za,0,0');
  tree.write(`resource-${RES}/todo-za/attach`, '1');
  lap('za checked');
  const tamperedS = Date.now() / 1000;
  for (const h of [zb, zc]) {
    // za's heartbeat (a cluster link, still accepted) proves that h pulled za after the change.
    await h.until(`${h.name} pulled za after its change`, () => Number(h.link('actual-za/time')) > tamperedS + 1, 30_000, 100);
    t.equal(h.link(`resource-${RES}/primary`), 'zb', `${h.name}: the primary is still zb`);
    t.same(liveLinksOf(h, 'za').filter((p) => p.startsWith(`resource-${RES}/`) && !/\/version-/.test(p)), [], `${h.name} holds no link of za in ${RES} but its versionlinks`);
    t.equal(await statusLine(h), before[h.name as 'zb' | 'zc'], `${h.name}'s view is unchanged`);
  }
  t.notMatch(logSinceStart(za), /primary; logging to/, 'za never started the primary role');

  lap('survivors checked');
  // Step 2: removed from the cluster: nobody listens to za any more; it still pulls the survivors.
  await za.stop();
  await waitSilent(zb, 'za');
  await zb.marsadmOk(['--host', 'za', '--window', '2', 'leave-cluster', '--force']);
  await zc.until('zc honours the cluster removal', () => [undefined, '.deleted'].includes(zc.link('ips/ip-za'))
    && [undefined, '.deleted'].includes(zc.link('actual-za/time')), 30_000, 50);
  lap('removed from the cluster');
  const before2 = { zb: await statusLine(zb), zc: await statusLine(zc) };
  await za.start();
  await za.until('za logs its removal from the cluster', () => /za was removed from the cluster by zb: it takes no role and serves nothing\. To rejoin: stop marsd, move this \/mars away/.test(logSinceStart(za)), 30_000, 100);
  t.match(await za.marsadmOk(['view', RES]), /REMOVED: za was removed from the cluster by zb/);
  t.notOk(await nbdGreets(za.socketPath(RES), 1_000), 'za serves no export');
  lap('za restarted again');
  // zc keeps running rounds; za's heartbeat, written every second, never arrives.
  const zcBeat = Number(zc.link('actual-zc/time'));
  await zc.until('zc ran 3 s more', () => Number(zc.link('actual-zc/time')) > zcBeat + 3, 30_000, 100);
  for (const h of [zb, zc]) {
    t.same(liveLinksOf(h, 'za').filter((p) => !/\/version-/.test(p)), [], `${h.name} holds no link of za`);
    t.equal(await statusLine(h), before2[h.name as 'zb' | 'zc'], `${h.name}'s view is unchanged`);
    t.notMatch(await h.marsadmOk(['view', RES]), /\bza\b/, `${h.name}'s view does not list za`);
  }
  t.ok([undefined, '.deleted'].includes(zc.link('actual-za/time')), 'za\'s heartbeat is not accepted');
  t.notMatch(logSinceStart(za), /primary; logging to/, 'za never started the primary role');
});

t.test('an old primary back after a forced failover without removal: no writes served, split brain until invalidate', async (t) => {
  const c = await startCluster(t, { hosts: ['alpha', 'beta'], sizeBytes: SIZE, res: RES, proxied: true });
  const [alpha, beta] = [c.host('alpha'), c.host('beta')];
  await writeWorkload(alpha, RES, SIZE, 30, 1);
  await beta.until('beta caught up', () => caughtUpWith(beta, alpha, RES), 60_000, 50);
  // alpha is cut off, beta takes over, both write: the histories diverge.
  for (const p of c.proxies.values()) p.cut();
  await beta.until('beta lost alpha', () => (beta.link('actual-beta/peer-alpha') ?? '').startsWith('down'), 30_000);
  await beta.marsadmOk(['primary', RES, '--force', '--timeout', '60']);
  await beta.waitPrimary(RES);
  await writeWorkload(alpha, RES, SIZE, 20, 2);
  await writeWorkload(beta, RES, SIZE, 20, 3);
  // alpha dies and comes back on its old tree, which still names it primary.
  alpha.kill('SIGKILL');
  await alpha.waitExit();
  t.equal(alpha.link(`resource-${RES}/primary`), 'alpha', 'alpha\'s tree still names alpha primary');
  for (const p of c.proxies.values()) p.heal();
  await alpha.start();
  for (const h of [alpha, beta]) {
    await h.until(`${h.name} reports the split brain`, async () => (await h.view('is-split-brain', RES)) === '1', 30_000, 200);
  }
  t.equal(alpha.link(`resource-${RES}/primary`), 'beta', 'alpha learned the new primary');
  t.equal(alpha.actual(RES, 'is-primary'), '0');
  t.notOk(await nbdGreets(alpha.socketPath(RES), 1_000), 'alpha serves no writes');
  t.notMatch(logSinceStart(alpha), /primary; logging to/, 'alpha never took the primary role after its restart');
  t.match(await alpha.marsadmOk(['view', RES]), /SPLIT BRAIN/);

  await alpha.marsadmOk(['invalidate', RES]);
  await alpha.until('alpha synced and caught up', () => alpha.link(`resource-${RES}/syncstatus-alpha`) === String(SIZE) && caughtUpWith(alpha, beta, RES), 90_000, 50);
  for (const h of [alpha, beta]) {
    await h.until(`${h.name} no longer reports a split brain`, async () => (await h.view('is-split-brain', RES)) === '0', 30_000, 200);
  }
  await waitWritebackDone(beta, RES);
  t.equal(fileDigest(alpha.dataPath, SIZE), fileDigest(beta.dataPath, SIZE), 'alpha\'s disk equals beta\'s');
});
