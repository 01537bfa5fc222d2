// leave-resource removes this host's requests (todo-HOST) before their answers (actual-HOST):
// marsd reads the tree while marsadm removes links, and a request seen without its answer is a
// new request. An invalidate carried out that way, in the middle of a leave, wrote this host's
// versionlinks again, and the next join-resource refused them (the torture runner, mars-full
// with 2 resources, seeds 22 and 23).
import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Adm } from '../../marsadm/context.js';
import { leaveResource } from '../../marsadm/commands/membership.js';
import { globalPaths, resPaths } from '../../common/tree/paths.js';
import { readResourceSnapshot } from '../../common/resource/snapshot.js';

t.test('no moment of leave-resource shows marsd an unanswered invalidate request', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'leave-order-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const adm = new Adm({ marsDir: join(dir, 'mars'), host: 'beta' }, () => undefined);
  const tree = adm.tree;
  mkdirSync(join(dir, 'mars'), { recursive: true });
  tree.write(globalPaths.uuid, 'c0ffee');
  tree.ensureDir('resource-r0');
  tree.write(resPaths.size('r0'), String(16 << 20));
  tree.write(resPaths.primary('r0'), 'alpha');
  tree.write(resPaths.data('r0', 'beta'), '/dev/null');
  tree.write(resPaths.syncstatus('r0', 'beta'), String(16 << 20));
  tree.write(resPaths.version('r0', 2, 'beta'), '0123456789abcdef0123456789abcdef,log-000000002-alpha,0:');
  tree.ensureDir(resPaths.todoDir('r0', 'beta'));
  tree.ensureDir(resPaths.actualDir('r0', 'beta'));
  for (const key of ['attach', 'connect', 'sync', 'allow-replay'] as const) tree.write(resPaths.todo('r0', 'beta', key), '0');
  // An invalidate that was asked for and carried out long ago (pause-sync, kill-during-sync).
  tree.write(resPaths.invalidate('r0', 'beta'), '1796573046.798000000');
  tree.write(resPaths.actual('r0', 'beta', 'invalidate'), '1796573046.798000000 OK full sync of 16777216 bytes');
  t.equal(readResourceSnapshot(tree, 'r0', 'beta').invalidateRequest, undefined, 'answered before the leave');

  const seen: string[] = [];
  const remove = tree.remove.bind(tree);
  tree.remove = (rel, opts) => {
    const r = remove(rel, opts);
    const pending = readResourceSnapshot(tree, 'r0', 'beta').invalidateRequest;
    if (pending !== undefined) seen.push(`${rel}: request ${pending} pending`);
    return r;
  };
  await leaveResource(adm, 'r0');
  t.same(seen, [], 'after every removal the request is answered or gone');
  t.equal(tree.value(resPaths.invalidate('r0', 'beta')), undefined, 'the request is gone');
  t.equal(tree.value(resPaths.version('r0', 2, 'beta')), undefined, 'the versionlinks are gone');
});
