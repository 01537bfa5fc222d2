// leave-resource against a running marsd's invalidate (found by the torture runner: seed 777,
// 3 hosts, --only force-failover; join-resource right after leave-resource refused "old
// versionlinks of beta remain"). marsd reads a pending invalidate as "todo-HOST/invalidate
// holds a request that actual-HOST/invalidate does not answer"; it may take that snapshot
// between any two of leave-resource's removals, and it carries out a request some time after
// the snapshot (secondary work is stopped first).
import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Adm } from '../../marsadm/context.js';
import { leaveResource } from '../../marsadm/commands/membership.js';
import { readResourceSnapshot } from '../../common/resource/snapshot.js';
import { carryOutInvalidate } from '../../daemon/control/invalidate.js';
import { resPaths } from '../../common/tree/paths.js';
import type { TreeStore } from '../../common/tree/store.js';

const REQUEST = '1796573406.353000000';
const V5 = '6cdb1f1633d37c39858641a90a2090fe,log-000000005-gamma,2792240:98d4c2bd19c274003b7af5b2b320d415,log-000000004-alpha,2884200';

/** A cluster tree as beta sees it after an answered invalidate; beta's resource is down. */
function betaAfterInvalidate(t: { teardown: (f: () => void) => void }): Adm {
  const dir = mkdtempSync(join(tmpdir(), 'leave-inv-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const disk = join(dir, 'disk');
  writeFileSync(disk, '');
  truncateSync(disk, 1 << 20);
  const adm = new Adm({ marsDir: join(dir, 'mars'), host: 'beta' }, () => undefined);
  mkdirSync(join(dir, 'mars'), { mode: 0o700 });
  const tree = adm.tree;
  tree.write('uuid', 'u-1');
  tree.ensureDir('ips');
  for (const h of ['alpha', 'beta', 'gamma']) tree.write(`ips/ip-${h}`, '127.0.0.1:7000');
  tree.ensureDir('resource-r0');
  tree.write(resPaths.size('r0'), String(1 << 20));
  tree.write(resPaths.primary('r0'), 'gamma');
  for (const h of ['alpha', 'beta', 'gamma']) tree.write(resPaths.data('r0', h), disk);
  tree.write(resPaths.version('r0', 5, 'gamma'), V5);
  tree.write(resPaths.version('r0', 5, 'beta'), V5);
  tree.write(resPaths.replay('r0', 'beta'), 'log-000000005-gamma,0,0');
  tree.ensureDir(resPaths.todoDir('r0', 'beta'));
  tree.ensureDir(resPaths.actualDir('r0', 'beta'));
  for (const k of ['attach', 'allow-replay', 'sync', 'connect']) tree.write(resPaths.todo('r0', 'beta', k as 'attach'), '0');
  tree.write(resPaths.invalidate('r0', 'beta'), REQUEST);
  for (const k of ['is-primary', 'is-attached', 'is-copying', 'is-replaying', 'is-syncing']) tree.write(resPaths.actual('r0', 'beta', k), '0');
  tree.write(resPaths.actual('r0', 'beta', 'invalidate'), `${REQUEST} OK incremental resync of 204800 bytes`);
  return adm;
}

t.test('leave-resource never leaves an answered invalidate looking pending, not even between two removals', async (t) => {
  const adm = betaAfterInvalidate(t);
  t.equal(readResourceSnapshot(adm.tree, 'r0', 'beta').invalidateRequest, undefined, 'answered: nothing pending before');
  const tree = adm.tree as TreeStore & { write: TreeStore['write'] };
  const write = tree.write.bind(tree);
  const seenPending: string[] = [];
  tree.write = ((rel: string, value: string, opts?: Parameters<TreeStore['write']>[2]) => {
    const r = write(rel, value, opts);
    // What a marsd snapshot taken right now would see.
    if (readResourceSnapshot(tree, 'r0', 'beta').invalidateRequest !== undefined) seenPending.push(rel);
    return r;
  }) as TreeStore['write'];
  await leaveResource(adm, 'r0');
  t.same(seenPending, [], 'no intermediate state shows the old request as pending');
  t.equal(tree.value(resPaths.version('r0', 5, 'beta')), undefined, 'own versionlink tombstoned');
  t.equal(tree.value(resPaths.invalidate('r0', 'beta')), undefined, 'request gone');
});

t.test('marsd does not carry out an invalidate request withdrawn while it stopped the secondary work', async (t) => {
  const adm = betaAfterInvalidate(t);
  const tree = adm.tree;
  tree.write(resPaths.actual('r0', 'beta', 'invalidate'), 'older answer'); // the request is pending
  const logs: string[] = [];
  await carryOutInvalidate({
    tree, res: 'r0', host: 'beta', request: REQUEST, sizeBytes: 1 << 20, log: (_l, m) => logs.push(m),
    isPrimary: () => false,
    // leave-resource ran while the secondary work stopped
    stopSecondary: async () => { await leaveResource(adm, 'r0'); },
  });
  t.equal(tree.value(resPaths.version('r0', 5, 'beta')), undefined, 'no versionlink of beta written again');
  t.equal(tree.value(resPaths.replay('r0', 'beta')), undefined, 'no replay link of beta written again');
  t.equal(tree.value(resPaths.actual('r0', 'beta', 'invalidate')), undefined, 'no answer written');
  t.match(logs.join('\n'), /withdrawn before its turn/, 'says why');
});
