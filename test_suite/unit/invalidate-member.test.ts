// An invalidate request carried out at its turn in marsd's queue (daemon/control/invalidate.ts)
// is not carried out when the host left the resource meanwhile or the request is gone: writing
// syncstatus and versionlinks then would bring the host's links back after leave-resource, and
// the next join-resource refused them (the torture runner, mars-full with 2 resources).
import t, { type Test } from 'tap';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { carryOutInvalidate } from '../../daemon/control/invalidate.js';
import { TreeStore } from '../../common/tree/store.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { resPaths } from '../../common/tree/paths.js';

const REQUEST = '1796573046.798000000';

function setup(t: Test): TreeStore {
  const dir = mkdtempSync(join(tmpdir(), 'inval-member-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'mars'));
  const tree = new TreeStore(join(dir, 'mars'), new LamportClock());
  tree.ensureDir('resource-r0');
  tree.write(resPaths.size('r0'), String(16 << 20));
  tree.write(resPaths.primary('r0'), 'alpha');
  tree.ensureDir(resPaths.todoDir('r0', 'beta'));
  tree.ensureDir(resPaths.actualDir('r0', 'beta'));
  return tree;
}

async function carryOut(tree: TreeStore, request = REQUEST): Promise<string[]> {
  const logs: string[] = [];
  let stopped = 0;
  await carryOutInvalidate({
    tree, res: 'r0', host: 'beta', request, sizeBytes: 16 << 20, log: (_level, msg) => logs.push(msg),
    isPrimary: () => false, stopSecondary: async () => { stopped++; },
  });
  logs.push(`stopped ${stopped}`);
  return logs;
}

t.test('the host left the resource before the request\'s turn: nothing is written', async (t) => {
  const tree = setup(t);
  // leave-resource ran meanwhile: data-beta and the request are tombstones.
  tree.write(resPaths.invalidate('r0', 'beta'), REQUEST);
  tree.remove(resPaths.invalidate('r0', 'beta'));
  const logs = await carryOut(tree);
  t.match(logs.join('\n'), /not carried out/, 'the request is dropped, and says so');
  t.equal(tree.value(resPaths.syncstatus('r0', 'beta')), undefined, 'no syncstatus written');
  t.equal(tree.value(resPaths.actual('r0', 'beta', 'invalidate')), undefined, 'no answer written');
});

t.test('still a member, but the request was replaced: the old one is dropped', async (t) => {
  const tree = setup(t);
  tree.write(resPaths.data('r0', 'beta'), '/dev/null');
  tree.write(resPaths.invalidate('r0', 'beta'), '1796573099.000000001');
  const logs = await carryOut(tree);
  t.match(logs.join('\n'), /not carried out/);
  t.equal(tree.value(resPaths.syncstatus('r0', 'beta')), undefined, 'no syncstatus written');
});
